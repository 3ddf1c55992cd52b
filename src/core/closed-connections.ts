/**
 * The last closed client connections, for `/connz?state=closed` (nats-server's
 * closed-client ring, `max_closed_clients`). A connection adds its record once,
 * when it closes: the cost is one ConnectionInfo and one small object per
 * subscription it still held, about what the close spends unsubscribing them;
 * nothing is kept or counted per message. The ring never holds more than its
 * capacity: the oldest record makes room for the newest.
 */

import type { ConnectionInfo } from "./broker.js";

/** A subscription the connection held when it closed, as /connz's subscription detail shows it. */
export interface ClosedSubscription {
  readonly subject: string;
  readonly queue: string | null;
  readonly sid: string;
  readonly msgs: number;
  readonly max: number;
}

export interface ClosedConnection {
  /** The connection's last /connz entry, with `stop` and `reason`. */
  readonly info: ConnectionInfo;
  /** Its account's name (the filters compare it whether or not the entry shows it). */
  readonly account: string;
  readonly subscriptions: readonly ClosedSubscription[];
  /** Round-trip time in nanoseconds; 0 when never measured. */
  readonly rttNs: number;
  readonly stopMs: number;
}

/** Subscriptions one record lists at most (the first this many; its `subscriptions` count is all of them). */
export const MAX_CLOSED_RECORD_SUBSCRIPTIONS = 1000;

/** Subscriptions the whole ring lists at most: a record that would pass it lists what is left (its count stays whole). */
export const MAX_CLOSED_SUBSCRIPTIONS_KEPT = 100_000;

export class ClosedConnections {
  private readonly ring: ClosedConnection[] = [];
  /** Where the next record goes once the ring is full (its oldest). */
  private next = 0;
  /** Subscriptions the records list, together. */
  private listed = 0;

  constructor(readonly capacity: number) {}

  add(c: ClosedConnection): void {
    if (this.capacity === 0) return;
    const replaced = this.ring.length < this.capacity ? undefined : this.ring[this.next];
    if (replaced !== undefined) this.listed -= replaced.subscriptions.length;
    const room = Math.max(0, MAX_CLOSED_SUBSCRIPTIONS_KEPT - this.listed);
    if (c.subscriptions.length > room) c = { ...c, subscriptions: c.subscriptions.slice(0, room) };
    this.listed += c.subscriptions.length;
    if (replaced === undefined) {
      this.ring.push(c);
      return;
    }
    this.ring[this.next] = c;
    this.next = (this.next + 1) % this.capacity;
  }

  get size(): number {
    return this.ring.length;
  }

  /** Oldest first. */
  list(): ClosedConnection[] {
    return this.ring.length < this.capacity ? this.ring.slice() : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }
}

/** `info` with nats-server's `stop` and `reason` placed after `last_activity`, where its ConnInfo has them. */
export function withStop(info: ConnectionInfo, stop: string, reason: string): ConnectionInfo {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(info)) {
    out[k] = v;
    if (k === "last_activity") {
      out.stop = stop;
      out.reason = reason;
    }
  }
  return out as unknown as ConnectionInfo;
}
