/**
 * Lines about a failure that clients retry at once (a write a full disk
 * refused, answered with a retriable error): at most one per key in each
 * window, the ones held back counted, so that a retry loop cannot flood
 * the log. Keys past their window are forgotten once `maxKeys` are
 * remembered (a count held back with them is not told).
 */
export class ThrottledLog {
  private readonly told = new Map<string, { at: number; heldBack: number }>();

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number,
  ) {}

  /**
   * A failure of `key`: null when a line of it went less than the window
   * ago (this one held back), else how many were held back since the last
   * line and how long ago that was (the caller logs now).
   */
  failed(key: string): { heldBack: number; sinceMs: number } | null {
    const now = performance.now();
    const told = this.told.get(key);
    if (told !== undefined && now - told.at < this.windowMs) {
      told.heldBack++;
      return null;
    }
    if (this.told.size >= this.maxKeys) for (const [k, t] of this.told) if (now - t.at >= this.windowMs) this.told.delete(k);
    this.told.set(key, { at: now, heldBack: 0 });
    return told === undefined ? { heldBack: 0, sinceMs: 0 } : { heldBack: told.heldBack, sinceMs: now - told.at };
  }

  /** The failure of `key` is over: the next is logged at once. How many were held back since its last line. */
  over(key: string): number {
    if (this.told.size === 0) return 0;
    const told = this.told.get(key);
    if (told === undefined) return 0;
    this.told.delete(key);
    return told.heldBack;
  }
}
