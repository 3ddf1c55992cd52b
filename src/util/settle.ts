/**
 * Waits, checking every `stepMs`, until `done()` holds or `deadline` (a
 * Date.now() time) passes; resolves whether it held. For conditions no
 * event announces (a stream's writes in flight reaching its log), outside
 * any hot path.
 */
export async function settled(done: () => boolean, deadline: number, stepMs: number): Promise<boolean> {
  while (!done()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
  return true;
}

/** Waits for `p` to settle, or `ms` at most (whichever first); never rejects. */
export function withinMs(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    void p.then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
