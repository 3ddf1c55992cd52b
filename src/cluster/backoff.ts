/**
 * Retry pacing for the loops that talk to etcd: waits that double from
 * `minMs` to `maxMs`, each ended early by `wake()` (etcd answered again, or
 * the loop is closing), so a loop neither hammers an etcd that is down nor
 * sleeps through its return.
 */
export class Backoff {
  private delayMs: number;
  private timer: NodeJS.Timeout | undefined;
  private resolve: (() => void) | undefined;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
  ) {
    this.delayMs = minMs;
  }

  reset(): void {
    this.delayMs = this.minMs;
  }

  /** Waits `ms`, or the current delay (which then doubles); at most one wait at a time. */
  wait(ms?: number): Promise<void> {
    this.wake();
    const d = ms ?? this.delayMs;
    if (ms === undefined) this.delayMs = Math.min(this.maxMs, this.delayMs * 2);
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.timer = setTimeout(() => this.wake(), d);
    });
  }

  /** Ends the current wait now. */
  wake(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const r = this.resolve;
    this.resolve = undefined;
    r?.();
  }
}
