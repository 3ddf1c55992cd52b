/**
 * Buffers for the request frames that arrive across socket chunks and are
 * big enough to be produce requests, reused once the produce handler has
 * issued its appends (the log has copied the records by then). A fresh
 * megabyte-sized buffer per request costs page faults on memory the kernel
 * has not touched lately (on this project's VM, 5x dearer than memory in
 * use), and its size counts towards the external memory that makes V8 run
 * mark-compacts.
 */

/** Frames below this are allocated as they come: small requests are not worth a pooled buffer. */
export const POOLED_FRAME_BYTES = 64 * 1024;
const ROUND = 64 * 1024;

export class FramePool {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;

  /** At most `maxFreeBytes` are kept while unused. */
  constructor(private readonly maxFreeBytes: number) {}

  /** A buffer of exactly `size` bytes, over pooled memory when some is free and not much larger. */
  take(size: number): Buffer {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const ab = this.free[i];
      if (ab.byteLength >= size && ab.byteLength <= size * 2) {
        this.free.splice(i, 1);
        this.freeBytes -= ab.byteLength;
        return Buffer.from(ab, 0, size);
      }
    }
    return Buffer.allocUnsafeSlow(Math.ceil(size / ROUND) * ROUND).subarray(0, size);
  }

  /** Takes back a buffer from `take`; nothing may read or write it afterwards. */
  give(frame: Buffer): void {
    // allocUnsafeSlow gives every buffer an ArrayBuffer of its own, so this is the whole of it.
    const ab = frame.buffer as ArrayBuffer;
    if (this.freeBytes + ab.byteLength > this.maxFreeBytes) return;
    this.free.push(ab);
    this.freeBytes += ab.byteLength;
  }

  /** Unused bytes held. */
  get held(): number {
    return this.freeBytes;
  }
}
