/**
 * A connection's outbound bytes, shared by the NATS door's client
 * connections and the routes between nodes: frames are written in place
 * (`buf` from `len` on, after `reserve`), and the whole is handed to the
 * socket once per flush (broker.endRead).
 *
 * Small flushes (up to COPY_OUT_MAX) are copied into a buffer from Node's
 * slab. Larger ones hand the buffer itself to the socket and go on in
 * another from a pool shared by every connection of the process, to which
 * each buffer returns when its write's callback runs (a stream calls them in
 * write order). A fresh buffer per flush counted as external memory and, at
 * 1 KiB messages, kept V8 running a mark-compact every few hundred
 * milliseconds; a copy per flush was, on a route at 1 KiB, the largest
 * single cost of the sending node (docs/PERFORMANCE.md, "Cluster").
 *
 * Limits: the owner asks `fits` before `reserve` (which only makes room)
 * and decides what a connection past max_pending gets.
 */

import type { Writable } from "node:stream";
import { BufferPool } from "./buffer-pool.js";
import { Fifo } from "./fifo.js";

export const OUT_INITIAL = 16 * 1024;
/** Below this, a flush copies into a small buffer (from Node's slab) rather than giving the outbound buffer away. */
const COPY_OUT_MAX = 4 * 1024;
/**
 * Outbound buffers whose writes are done, for any connection's next flush:
 * every buffer is OUT_INITIAL times a power of two. 4 MiB is 256 buffers of
 * the usual size.
 */
const pool = new BufferPool(4 * 1024 * 1024, OUT_INITIAL);
/** The buffer of a released Outbound: nothing is written to it. */
const NO_OUT = Buffer.alloc(0);

export class Outbound {
  /** Frames go here, from `len` on, once `reserve` has made room. */
  buf: Buffer = pool.take(OUT_INITIAL);
  len = 0;
  /**
   * Buffers given to the socket, oldest first: each write's callback returns
   * the oldest to the pool. Null once a write failed: the order is then not
   * known, and the buffers are left to the garbage collector.
   */
  private sent: Fifo<Buffer> | null = new Fifo();

  /**
   * Whether `need` more bytes keep the connection within `maxPending`,
   * counting what the socket still holds: a connection past it is a slow
   * consumer (the owner decides what that means for it).
   */
  fits(need: number, socket: Writable, maxPending: number): boolean {
    return this.len + need + socket.writableLength <= maxPending;
  }

  /** Makes room for `need` more bytes after `len`: `buf` may be another buffer afterwards. */
  reserve(need: number): void {
    const want = this.len + need;
    if (want <= this.buf.length) return;
    let size = Math.max(this.buf.length, OUT_INITIAL) * 2;
    while (size < want) size *= 2;
    const bigger = pool.take(size);
    this.buf.copy(bigger, 0, 0, this.len);
    if (this.buf !== NO_OUT) pool.give(this.buf);
    this.buf = bigger;
  }

  append(b: Buffer): void {
    this.reserve(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }

  /** Writes what is queued to `socket`; returns what `socket.write` said (true when nothing was queued). */
  flushTo(socket: Writable): boolean {
    const len = this.len;
    if (len === 0) return true;
    if (len <= COPY_OUT_MAX || this.sent === null) {
      const chunk = Buffer.allocUnsafe(len);
      this.buf.copy(chunk, 0, 0, len);
      this.len = 0;
      return socket.write(chunk);
    }
    // Hand the filled buffer to the socket (it comes back to the pool once written) and go on in another.
    const full = this.buf;
    this.buf = pool.take(full.length > OUT_INITIAL * 4 && len < full.length / 4 ? OUT_INITIAL * 4 : full.length);
    this.len = 0;
    this.sent.push(full);
    return socket.write(full.subarray(0, len), this.written);
  }

  /** A write of a pooled buffer is done (or failed). */
  private readonly written = (err?: Error | null): void => {
    const sent = this.sent;
    if (sent === null) return;
    if (err != null) {
      this.sent = null;
      return;
    }
    pool.give(sent.shift()!);
  };

  /** Drops what is queued and not yet written (a slow consumer's backlog). */
  discard(): void {
    this.len = 0;
  }

  /** Gives the buffer back to the pool: the owner writes nothing more (flush first what must still go). */
  release(): void {
    if (this.buf !== NO_OUT) pool.give(this.buf);
    this.buf = NO_OUT;
    this.len = 0;
  }
}
