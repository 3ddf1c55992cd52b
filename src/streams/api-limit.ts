/**
 * The bound on JetStream API requests being served at once on a server
 * (nats-server's `jetstream { request_queue_limit }`, 10,000 by default).
 * A request is counted from its arrival to its answer; those that wait
 * (on etcd, on a stalled disk, on another node) stay counted, so a client
 * sending creates faster than they settle cannot grow the server's memory
 * without end. Past the limit a request is dropped unanswered, as
 * nats-server drops its queue (the client times out and may retry), and
 * the drops are reported once a second: a log warning and the advisory
 * `$JS.EVENT.ADVISORY.API.LIMIT_REACHED` in the system account.
 *
 * Pull requests (CONSUMER.MSG.NEXT) and direct gets are not counted: nats-server
 * serves them outside its API queue too. One object per server, shared by
 * every account's JetStream.
 */

import { eventId } from "../core/system.js";

/** Where the drops are announced, in the system account (nats-server's JSAdvisoryAPILimitReached). */
export const API_LIMIT_REACHED_SUBJECT = "$JS.EVENT.ADVISORY.API.LIMIT_REACHED";

/** nats-server's JSAPILimitReachedAdvisory. */
export function limitReachedAdvisory(server: string, dropped: number): string {
  return JSON.stringify({ type: "io.nats.jetstream.advisory.v1.api_limit_reached", id: eventId(), timestamp: new Date().toISOString(), server, dropped });
}

/** How often, at most, drops are reported. */
const REPORT_MS = 1000;

export class ApiRequestLimit {
  private serving = 0;
  private dropped = 0;
  private reportTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly limit: number,
    /** Told how many requests were dropped since the last report. */
    private readonly report: (dropped: number) => void,
  ) {}

  /** Requests being served now. */
  get inFlight(): number {
    return this.serving;
  }

  /** Counts a request in; false when `limit` are being served (it is dropped: counted for the next report). */
  admit(): boolean {
    if (this.serving < this.limit) {
      this.serving++;
      return true;
    }
    this.dropped++;
    if (this.reportTimer === null) {
      this.reportTimer = setTimeout(() => {
        this.reportTimer = null;
        const n = this.dropped;
        this.dropped = 0;
        this.report(n);
      }, REPORT_MS);
      this.reportTimer.unref();
    }
    return false;
  }

  /** A request admitted has been answered (or failed). */
  release(): void {
    this.serving--;
  }

  close(): void {
    if (this.reportTimer !== null) clearTimeout(this.reportTimer);
    this.reportTimer = null;
  }
}
