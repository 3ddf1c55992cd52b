/**
 * Buffers reused instead of allocated afresh: the Kafka door's large request
 * frames, the NATS door's outbound buffers. A fresh megabyte-sized buffer
 * costs page faults on memory the kernel has not touched lately (on this
 * project's VM, 5x dearer than memory in use), and every fresh buffer's size
 * counts towards the external memory that makes V8 run mark-compacts: at
 * tens of thousands of flushes a second, a new outbound buffer per flush
 * kept a mark-compact running every few hundred milliseconds.
 */

export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;

  /** At most `maxFreeBytes` are kept while unused; new buffers are whole multiples of `round` bytes. */
  constructor(
    private readonly maxFreeBytes: number,
    private readonly round = 64 * 1024,
  ) {}

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
    return Buffer.allocUnsafeSlow(Math.ceil(size / this.round) * this.round).subarray(0, size);
  }

  /** Takes back a buffer from `take`; nothing may read or write it afterwards. */
  give(buf: Buffer): void {
    // allocUnsafeSlow gives every buffer an ArrayBuffer of its own, so this is the whole of it.
    const ab = buf.buffer as ArrayBuffer;
    if (this.freeBytes + ab.byteLength > this.maxFreeBytes) return;
    this.free.push(ab);
    this.freeBytes += ab.byteLength;
  }

  /** Unused bytes held. */
  get held(): number {
    return this.freeBytes;
  }
}
