/**
 * A count of bytes the Kafka door holds for one purpose across every
 * connection, with a limit: per-connection limits alone let N connections
 * hold N times as much (32 pipelined gzip bombs once took the server to
 * 3.2 GiB, 8 pipelined fetches to 3.0 GiB).
 *
 * Two ways to take bytes:
 * - `take(n)`: exactly n, waiting in first-come order until they fit. Strict
 *   order is what keeps waiting safe: a holder only ever waits for requests
 *   that queued before it (its connection's earlier produce requests), so
 *   the oldest holder always finishes and gives back.
 * - `takeUpTo(n)`: what is free now, up to n, without waiting; with
 *   `released()` to wait for the next give.
 */

export class ByteBudget {
  used = 0;
  /** Highest `used` seen: what tests and monitoring check the limit against. */
  peak = 0;
  /** Takers that gave up for lack of room (a fetch answered without records, a request refused): a sign the limit is too low. */
  shortfalls = 0;
  private readonly queue: Array<{ n: number; grant: (ok: boolean) => void }> = [];
  private readonly onRelease: Array<() => void> = [];

  constructor(readonly limit: number) {}

  get waiting(): number {
    return this.queue.length;
  }

  /** Whether anyone waits for room now (a take queued, or a wait for the next give). */
  get short(): boolean {
    return this.queue.length > 0 || this.onRelease.length > 0;
  }

  /** When a taker last got less than it asked for (`takeUpTo`): -Infinity if never. */
  private clippedAt = -Infinity;

  /**
   * Whether the room is contended: someone waits for it, or a taker got less
   * than it asked within the last `windowMs` (holders that leave a sliver
   * free make nobody wait, yet cut every other taker to that sliver).
   */
  contended(now: number, windowMs: number): boolean {
    return this.short || now - this.clippedAt < windowMs;
  }

  /**
   * Takes n bytes (at most `limit`), at once when they fit and nobody waits
   * (no promise then), else in turn. The promise resolves false if the bytes
   * could not be had within `timeoutMs`.
   */
  take(n: number, timeoutMs: number): true | Promise<boolean> {
    if (n > this.limit) throw new RangeError(`${n} bytes asked of a budget of ${this.limit}`);
    if (this.queue.length === 0 && this.used + n <= this.limit) {
      this.charge(n);
      return true;
    }
    return new Promise<boolean>((resolve) => {
      const waiter = {
        n,
        grant: (ok: boolean): void => {
          clearTimeout(timer);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => {
        const at = this.queue.indexOf(waiter);
        if (at < 0) return;
        this.queue.splice(at, 1);
        this.shortfalls++;
        resolve(false);
        // The head may have been what held the others back.
        if (at === 0) this.grantWaiting();
      }, timeoutMs);
      this.queue.push(waiter);
    });
  }

  /** Takes what is free, up to n, without waiting (nothing while others queue); returns the amount taken. */
  takeUpTo(n: number): number {
    const heldByOthers = this.used;
    const got = this.queue.length > 0 ? 0 : Math.max(0, Math.min(n, this.limit - this.used));
    if (got > 0) this.charge(got);
    // Cut short by what others hold (not by the limit alone: a fetch larger than the whole budget, with nobody else in it).
    if (got < n && heldByOthers > 0) this.clippedAt = Date.now();
    return got;
  }

  /** Counts n bytes that are held already (an answer that must go out whatever the budget says). */
  charge(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  give(n: number): void {
    if (n <= 0) return;
    this.used -= n;
    if (this.used < 0) throw new Error(`byte budget gave back ${-this.used} bytes more than it had`);
    this.grantWaiting();
    if (this.onRelease.length > 0) for (const wake of this.onRelease.splice(0)) wake();
  }

  /** Resolves at the next give, or after `timeoutMs`. */
  released(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        const at = this.onRelease.indexOf(wake);
        if (at >= 0) this.onRelease.splice(at, 1);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, timeoutMs));
      this.onRelease.push(wake);
    });
  }

  private grantWaiting(): void {
    while (this.queue.length > 0 && this.used + this.queue[0].n <= this.limit) {
      const w = this.queue.shift()!;
      this.charge(w.n);
      w.grant(true);
    }
  }
}
