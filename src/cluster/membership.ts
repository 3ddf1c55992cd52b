/**
 * A node's membership of the cluster: one key per node in etcd
 * (`<prefix>/<cluster>/nodes/<server name>`, a JSON `NodeRecord`),
 * attached to a lease the node keeps alive, and the set of all members,
 * followed through a watch.
 *
 * The lease is what makes a node's leadership safe. The node counts on it
 * only until a local deadline: the time it SENT the last keep-alive etcd
 * answered (or the grant), plus the TTL etcd granted, minus a safety margin.
 * etcd refreshed the lease after that send, so it cannot expire the lease
 * (and free the name, or anything fenced by it, for another node) before
 * send + TTL; the node stops counting on it a margin earlier. When the
 * deadline passes without an answer, or etcd says the lease is gone, or the
 * node's key is deleted or taken over, the node is **fenced**: it emits
 * "fenced" at once, and whoever serves what the node leads must stop.
 * `holdsLease()` compares the clock with the deadline on every call, so a
 * process that was paused past its deadline sees it lost before any timer
 * has had the chance to fire.
 *
 * A fenced node registers again: it revokes the lease it gave up (deleting
 * its old key, if etcd still had it), then takes a new lease and creates
 * its key only if the name is free (a transaction comparing the key's
 * revision with 0). If another live node holds the name, it waits for the
 * key to go and tries again.
 */

import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import type { Logger } from "../util/log.js";
import { Backoff } from "./backoff.js";
import { type EtcdClient, type Kv } from "./etcd-client.js";
import { PrefixMirror, type MirrorChange } from "./prefix-mirror.js";

/** What a node publishes about itself (the JSON value of its key). */
export interface NodeRecord {
  /** The server id (changes at every start). */
  id: string;
  name: string;
  cluster: string;
  /** When the process started, ISO 8601. */
  started: string;
  /** Where NATS clients reach it. */
  client_urls: string[];
  /** Where other nodes route to it: none until routes are built. */
  route_url: string | null;
  /** The Kafka listener's advertised host:port, when it has one. */
  kafka: string | null;
  /** Monitoring, when on. */
  http: string | null;
  /** `server_tags`: what placement tags match. Absent in records of older nodes. */
  tags?: string[];
  state: NodeState;
  load: NodeLoad;
}

/** "draining": in lame duck, moving what it leads away; placed on no more. */
export type NodeState = "serving" | "draining";

export interface NodeLoad {
  connections: number;
  subscriptions: number;
  streams: number;
  partitions: number;
  /** Bytes stored by its streams. */
  bytes: number;
}

export interface Member {
  name: string;
  /** Undefined when the value is not a node record (`error` says why). */
  record: NodeRecord | undefined;
  error?: string;
  lease: string;
  modRevision: number;
  self: boolean;
}

export type MembershipState = "starting" | "registered" | "fenced" | "left";

export interface MembershipOptions {
  client: EtcdClient;
  /** The keys of nodes: `<prefix>/<cluster>/nodes/`. */
  nodesPrefix: string;
  name: string;
  /** Lease TTL to ask for, in seconds; etcd may grant more. */
  leaseTtlS: number;
  /** The record to publish, asked at registration and at each refresh. */
  describe: () => NodeRecord;
  /** How often the record (its load) is written again if it changed; default 10 s. */
  refreshMs?: number;
  /** Monotonic milliseconds (tests may drive it); default performance.now. */
  now?: () => number;
  /**
   * Wall-clock milliseconds (tests may drive it); default Date.now. The monotonic clock stands still while the machine
   * is suspended (a VM paused, a laptop asleep) while etcd's lease runs on: the lease is counted on only while neither
   * clock has passed its deadline.
   */
  wallNow?: () => number;
  log: Logger;
  /**
   * A key put with each registration, under the lease, beside the
   * metadata: a copy of the metadata that has it has every change made
   * before the registration (`registeredAt`), so a node back after a fence
   * can tell when its copy says what it still leads.
   */
  markerKey?: string;
}

/**
 * How long before etcd could expire a lease the node stops counting on it:
 * a fifth of the TTL, at least 250 ms. It absorbs a timer that fires late on
 * a loaded event loop; clock rates differ by parts per million, which is
 * nothing at this scale.
 */
export function fenceMarginMs(ttlMs: number): number {
  return Math.max(250, Math.round(ttlMs / 5));
}

/**
 * How many lease TTLs a node without its lease still takes writes for the
 * streams of one replica it leads (`writesInGrace`), and how long another
 * node waits after such a node's key goes before it deletes such a stream
 * (`absentForMs`): 50 s at the default TTL. Through an etcd outage shorter
 * than that those streams take writes as before; and no delete can come
 * while a node that was paused or cut off may still take them.
 */
export const UNREPLICATED_GRACE_TTLS = 10;

/** A keep-alive that failed is tried again this soon (or at the normal interval if shorter). */
const KEEPALIVE_RETRY_MS = 250;
const REGISTER_RETRY_MIN_MS = 50;
const REGISTER_RETRY_MAX_MS = 2_000;
export const MEMBERSHIP_DEFAULTS = { refreshMs: 10_000 } as const;

export class Membership extends EventEmitter<{ registered: [lease: string]; fenced: [reason: string]; members: [change: MirrorChange]; left: [] }> {
  readonly key: string;
  readonly mirror: PrefixMirror;
  state: MembershipState = "starting";
  /** The lease held while registered. */
  leaseId: string | undefined;
  /** The TTL etcd granted, in seconds. */
  ttlS: number;
  /** Why the last attempt to reach etcd or to register failed. */
  lastError: Error | undefined;
  /** The key that held this node's name when registering last found it taken. */
  holder: Kv | undefined;
  /** Registrations so far (the first included). */
  registrations = 0;
  private readonly client: EtcdClient;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  /** `deadline` by the wall clock (wallNow): a suspend moves that one on. */
  private wallDeadline = 0;
  /** When the last keep-alive (or grant) etcd answered was sent, by either clock. */
  private answeredSent = -Infinity;
  private answeredSentWall = -Infinity;
  private readonly log: Logger;
  private readonly describe: () => NodeRecord;
  private readonly refreshMs: number;
  private deadline = 0;
  /** Until when (this.now()) writes to streams of one replica led here are still taken without a lease (writesInGrace). */
  private graceEnd = -Infinity;
  /** `graceEnd` by the wall clock (a suspend stops the monotonic one, not etcd's lease nor the others' wait). */
  private graceEndWall = -Infinity;
  /** When each member's key was seen to go (this.now()); a member gone before this node followed them counts from then. */
  private readonly goneAt = new Map<string, number>();
  private readonly followedSince: number;
  private registeredRevision = 0;
  private lastWritten = "";
  /** Leases given up (fenced, or a registration that failed midway), revoked before the next registration. */
  private readonly staleLeases = new Set<string>();
  private readonly backoff = new Backoff(REGISTER_RETRY_MIN_MS, REGISTER_RETRY_MAX_MS);
  private keepTimer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private registering = false;
  private refreshing = false;
  private refreshDone: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly parsed = new Map<string, Member>();
  private readonly onUp = (): void => this.backoff.wake();

  constructor(private readonly o: MembershipOptions) {
    super();
    this.client = o.client;
    this.key = o.nodesPrefix + o.name;
    this.ttlS = o.leaseTtlS;
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
    this.log = o.log;
    this.describe = o.describe;
    this.refreshMs = o.refreshMs ?? MEMBERSHIP_DEFAULTS.refreshMs;
    this.mirror = new PrefixMirror(o.client, o.nodesPrefix, o.log);
    this.mirror.onChange((c) => this.memberChanged(c));
    this.client.on("up", this.onUp);
    this.followedSince = this.now();
  }

  /** UNREPLICATED_GRACE_TTLS lease TTLs, in ms. */
  graceMs(): number {
    return UNREPLICATED_GRACE_TTLS * this.ttlS * 1000;
  }

  /**
   * Whether this node, without its lease, may still take writes for a stream of one replica it leads: within graceMs of
   * the deadline of the lease it lost (etcd cannot have expired it before), unless its key was deleted or taken over.
   * Another node deletes such a stream only after the key has been gone that long (absentForMs).
   */
  writesInGrace(): boolean {
    return this.now() < this.graceEnd && this.wallNow() < this.graceEndWall;
  }

  /** The grace runs graceMs from `from` (monotonic) and from `fromWall` (wall clock), whichever ends first. */
  private setGraceEnd(from: number, fromWall: number): void {
    this.graceEnd = from + this.graceMs();
    this.graceEndWall = fromWall + this.graceMs();
  }

  /** How long `name`'s key has been gone, as this node saw it (0 while it is there). */
  absentForMs(name: string): number {
    const key = this.o.nodesPrefix + name;
    if (this.mirror.entries.has(key)) return 0;
    return this.now() - (this.goneAt.get(key) ?? this.followedSince);
  }

  /** The revision of the last registration (0 before the first). */
  get registeredAt(): number {
    return this.registeredRevision;
  }

  /** The etcd key a node registers under (this node's is `key`). */
  keyOf(name: string): string {
    return this.o.nodesPrefix + name;
  }

  /** Whether this node may act on its lease now: registered, and its local deadline not passed. */
  holdsLease(): boolean {
    return this.state === "registered" && this.now() < this.deadline && this.wallNow() < this.wallDeadline;
  }

  /** Milliseconds left before the node stops counting on its lease; 0 when it does not hold one. */
  leaseRemainingMs(): number {
    return this.holdsLease() ? Math.round(this.deadline - this.now()) : 0;
  }

  /** The members as this node sees them, by name. */
  members(): Member[] {
    const out: Member[] = [];
    for (const kv of this.mirror.entries.values()) {
      const m = this.member(kv);
      out.push({ ...m, self: kv.key === this.key && this.leaseId !== undefined && kv.lease === this.leaseId });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Reads the members (giving up after `readTimeoutMs` if etcd cannot be
   * reached), then registers; resolves once registered, rejects (and stops)
   * when that did not happen within `timeoutMs`, with why.
   */
  async start(timeoutMs: number, readTimeoutMs = timeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    try {
      await this.mirror.start(Math.min(timeoutMs, readTimeoutMs));
    } catch (err) {
      this.stop();
      throw new Error(`cannot read the cluster's members from etcd: ${(err as Error).message}`);
    }
    void this.registerLoop();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("registered", onRegistered);
        const why = this.startFailure();
        this.stop();
        reject(new Error(why));
      }, Math.max(0, deadline - Date.now()));
      const onRegistered = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.once("registered", onRegistered);
    });
    // Its own key in the copy too, so that members() lists this node as soon as start() resolves.
    await this.mirror.waitForRevision(this.registeredRevision, this.client.requestTimeoutMs);
  }

  /**
   * Gives up the lease now (it counts as fenced): for a caller that found
   * the lease no longer holds (a transaction fenced by it failed). With
   * `lease`, only if that is still the lease held: a caller whose request
   * was in flight while the node registered again must not fence the new
   * registration.
   */
  fence(reason: string, lease?: string, grace: boolean | "lastAnswered" = true): void {
    if (this.state !== "registered") return;
    if (lease !== undefined && lease !== this.leaseId) return;
    // The lease's deadline is no later than etcd's expiry of it, which others see the key go at, or after. A lease etcd
    // says it no longer knows may have been revoked, its key deleted, at any time after the last keep-alive it answered
    // was sent (`lastAnswered`): the grace counts from then.
    if (grace === "lastAnswered") this.setGraceEnd(this.answeredSent, this.answeredSentWall);
    else this.setGraceEnd(grace ? this.deadline : -Infinity, grace ? this.wallDeadline : -Infinity);
    this.state = "fenced";
    if (this.leaseId !== undefined) this.staleLeases.add(this.leaseId);
    this.leaseId = undefined;
    this.clearTimers();
    this.log.warn(`cluster: node ${this.o.name} fenced: ${reason}; it leads nothing until it registers again`);
    this.emit("fenced", reason);
    void this.registerLoop();
  }

  /** Writes the record again now if it changed (a state change that should not wait for the next refresh). */
  async refresh(): Promise<void> {
    // One write at a time; a caller that finds one under way waits for it, then writes what it changed.
    while (this.refreshing) await this.refreshDone;
    const lease = this.leaseId;
    if (lease === undefined || !this.holdsLease()) return;
    const value = JSON.stringify(this.describe());
    if (value === this.lastWritten) return;
    this.refreshing = true;
    let done!: () => void;
    this.refreshDone = new Promise((resolve) => (done = resolve));
    try {
      // Only over this node's own key with this node's lease: a key taken over is not written back.
      const r = await this.client.txn([{ key: this.key, lease }], [{ put: this.key, value, lease }]);
      if (lease !== this.leaseId) return;
      // Deleted or taken over, at some time before this: no grace (memberChanged's case, heard here first).
      if (!r.succeeded) this.fence(`its key ${this.key} no longer carries lease ${lease}`, undefined, false);
      else this.lastWritten = value;
    } catch (err) {
      this.lastError = err as Error; // the next refresh tries again; the lease's own checks decide fencing
    } finally {
      this.refreshing = false;
      done();
    }
  }

  /** Leaves the cluster: revokes the lease (deleting the key at once), stops following. */
  async leave(): Promise<void> {
    if (this.state === "left") return;
    const leases = [...(this.leaseId !== undefined ? [this.leaseId] : []), ...this.staleLeases];
    const wasRegistered = this.state === "registered";
    // Revoked from now on: others see the key go after this.
    if (wasRegistered) this.setGraceEnd(Math.min(this.deadline, this.now()), Math.min(this.wallDeadline, this.wallNow()));
    this.stop();
    if (wasRegistered) this.emit("left");
    for (const id of leases) {
      try {
        await this.client.leaseRevoke(id, this.client.dialTimeoutMs);
      } catch (err) {
        this.log.warn(`cluster: could not revoke lease ${id} (${(err as Error).message}): the key ${this.key} goes when etcd expires it, within ${this.ttlS} s`);
      }
    }
  }

  /** Stops without revoking: the key goes when etcd expires the lease (a crash, as etcd sees it). */
  stop(): void {
    this.stopped = true;
    this.state = "left";
    this.leaseId = undefined;
    this.clearTimers();
    this.backoff.wake();
    this.client.off("up", this.onUp);
    this.mirror.close();
  }

  private startFailure(): string {
    const h = this.holder;
    if (h !== undefined) {
      const m = this.member(h);
      const who = m.record !== undefined ? `node id ${m.record.id}${m.record.client_urls.length > 0 ? ` at ${m.record.client_urls.join(", ")}` : ""}` : "another node";
      return `server name ${JSON.stringify(this.o.name)} is registered in etcd by ${who} (key ${this.key}, lease ${h.lease}): is another server running under this name? One that stopped without leaving frees it when its lease expires`;
    }
    return `cannot register in etcd: ${this.lastError?.message ?? "no answer"}`;
  }

  private async registerLoop(): Promise<void> {
    if (this.registering) return;
    this.registering = true;
    let warned = false;
    try {
      while (!this.stopped && this.state !== "registered") {
        try {
          await this.registerOnce();
          break;
        } catch (err) {
          if (this.stopped) break;
          this.lastError = err as Error;
          if (!warned) this.log.warn(`cluster: cannot register node ${this.o.name} yet: ${(err as Error).message}; retrying`);
          warned = true;
        }
        // A name held by another lease frees up when its key goes (the member watch wakes us) or its lease expires.
        await this.backoff.wait(this.holder !== undefined ? this.ttlS * 1000 : undefined);
      }
    } finally {
      this.registering = false;
    }
  }

  private async registerOnce(): Promise<void> {
    for (const id of [...this.staleLeases]) {
      await this.client.leaseRevoke(id); // found or not, it is gone; unreachable: throws, and we try again later
      this.staleLeases.delete(id);
    }
    const sent = this.now();
    const sentWall = this.wallNow();
    const grant = await this.client.leaseGrant(this.o.leaseTtlS);
    let done = false;
    try {
      const value = JSON.stringify(this.describe());
      const marker = this.o.markerKey === undefined ? [] : [{ put: this.o.markerKey, value: this.o.name, lease: grant.id }];
      const r = await this.client.txn([{ key: this.key, modRevision: 0 }], [{ put: this.key, value, lease: grant.id }, ...marker], [{ range: this.key }]);
      if (this.stopped) return;
      if (!r.succeeded) {
        this.holder = r.responses[0]?.kvs[0];
        throw new Error(this.startFailure());
      }
      done = true;
      this.holder = undefined;
      this.leaseId = grant.id;
      this.ttlS = grant.ttl;
      this.registeredRevision = r.revision;
      this.lastWritten = value;
      this.deadline = 0;
      this.wallDeadline = 0;
      this.answeredSent = this.answeredSentWall = -Infinity;
      this.state = "registered";
      this.registrations++;
      this.extend(sent, sentWall, grant.ttl);
      this.backoff.reset();
      this.scheduleKeepAlive();
      this.refreshTimer = setInterval(() => void this.refresh(), this.refreshMs);
      this.log.info(`cluster: node ${this.o.name} registered in etcd (${this.key}, lease ${grant.id}, TTL ${grant.ttl} s)`);
      this.emit("registered", grant.id);
    } finally {
      // Not registered with it (name taken, or no answer: the put may have been applied): revoked before the next try.
      if (!done) this.staleLeases.add(grant.id);
    }
  }

  private intervalMs(): number {
    return Math.max(100, Math.round((this.ttlS * 1000) / 3));
  }

  private scheduleKeepAlive(ms = this.intervalMs()): void {
    clearTimeout(this.keepTimer);
    this.keepTimer = setTimeout(() => void this.keepAlive(), ms);
  }

  private async keepAlive(): Promise<void> {
    const lease = this.leaseId;
    if (lease === undefined || this.state !== "registered") return;
    const sent = this.now();
    const sentWall = this.wallNow();
    if (sent >= this.deadline) {
      // The process was held up past its deadline (paused, or an event loop blocked): no answer can help now.
      this.fence(`the deadline of lease ${lease} passed before its keep-alive was sent (the process was held up ${Math.round(sent - this.deadline)} ms past it)`);
      return;
    }
    // No answer is worth waiting for past the deadline: by then the node is fenced anyway.
    const budget = Math.max(1, Math.min(this.client.requestTimeoutMs, Math.round(this.deadline - sent)));
    let ttl: number;
    try {
      ttl = await this.client.leaseKeepAlive(lease, budget);
    } catch (err) {
      if (lease !== this.leaseId) return;
      this.lastError = err as Error;
      this.log.debug(`cluster: keep-alive of lease ${lease} failed: ${(err as Error).message}`);
      this.scheduleKeepAlive(Math.min(this.intervalMs(), KEEPALIVE_RETRY_MS));
      return;
    }
    if (lease !== this.leaseId || this.state !== "registered") return;
    if (ttl <= 0) {
      // Revoked (its key deleted then, maybe well before the deadline, and the others' wait counts from then), or expired,
      // or an etcd stopping that answers so (the lease comes back with it): the grace counts from the last answered send.
      this.fence(`etcd no longer knows lease ${lease} (expired or revoked)`, undefined, "lastAnswered");
      return;
    }
    this.extend(sent, sentWall, ttl);
    this.scheduleKeepAlive();
  }

  /** A keep-alive sent at `sent` was answered with `ttlS`: etcd cannot expire the lease before sent + TTL. */
  private extend(sent: number, sentWall: number, ttlS: number): void {
    const ttlMs = ttlS * 1000;
    this.deadline = Math.max(this.deadline, sent + ttlMs - fenceMarginMs(ttlMs));
    this.wallDeadline = Math.max(this.wallDeadline, sentWall + ttlMs - fenceMarginMs(ttlMs));
    this.answeredSent = Math.max(this.answeredSent, sent);
    this.answeredSentWall = Math.max(this.answeredSentWall, sentWall);
    this.armFenceTimer();
  }

  private armFenceTimer(): void {
    clearTimeout(this.fenceTimer);
    this.fenceTimer = setTimeout(() => {
      if (this.state !== "registered") return;
      if (this.now() < this.deadline) {
        this.armFenceTimer(); // woke a little early
        return;
      }
      const ttlMs = this.ttlS * 1000;
      this.fence(`etcd answered no keep-alive of lease ${this.leaseId} for ${ttlMs - fenceMarginMs(ttlMs)} ms (TTL ${this.ttlS} s)${this.lastError ? `: ${this.lastError.message}` : ""}`);
    }, Math.max(0, Math.ceil(this.deadline - this.now())));
  }

  private clearTimers(): void {
    clearTimeout(this.keepTimer);
    clearTimeout(this.fenceTimer);
    clearInterval(this.refreshTimer);
    this.keepTimer = this.fenceTimer = this.refreshTimer = undefined;
  }

  private memberChanged(c: MirrorChange): void {
    this.parsed.delete(c.key);
    if (c.type === "delete") this.goneAt.set(c.key, this.now());
    else this.goneAt.delete(c.key);
    if (c.key === this.key) {
      // Changes older than the registration are the previous lease's (its revoke): not news.
      if (this.state === "registered" && c.revision > this.registeredRevision) {
        // Gone when etcd says so, maybe well before: no grace.
        if (c.type === "delete") this.fence(`its key ${this.key} was deleted in etcd`, undefined, false);
        else if (c.kv !== undefined && c.kv.lease !== this.leaseId) this.fence(`its key ${this.key} was taken over by lease ${c.kv.lease}`, undefined, false);
      }
      if (c.type === "delete") this.backoff.wake(); // the name is free: register now, not at the next retry
    }
    this.emit("members", c);
  }

  private member(kv: Kv): Member {
    const cached = this.parsed.get(kv.key);
    if (cached !== undefined && cached.modRevision === kv.modRevision) return cached;
    const name = kv.key.slice(this.o.nodesPrefix.length);
    const m: Member = { name, record: undefined, lease: kv.lease, modRevision: kv.modRevision, self: false };
    try {
      const v = JSON.parse(kv.value) as NodeRecord;
      if (v === null || typeof v !== "object" || typeof v.id !== "string" || !Array.isArray(v.client_urls)) m.error = "not a node record";
      else m.record = v;
    } catch {
      m.error = "not JSON";
    }
    this.parsed.set(kv.key, m);
    return m;
  }
}
