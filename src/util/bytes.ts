/**
 * Byte writers for the wire formatters (the NATS door's MSG lines, routes'
 * RMSG lines): no strings built per message.
 */

/**
 * The last source copyInto copied a long run from, with its memory: a
 * payload's source is the read it arrived in, the same for every message of
 * that read. `Buffer.copy` asks each time for the source's `.buffer` (a call
 * into C++) to make a view of the run, and checks its arguments again: for
 * 1 KiB messages that was most of the cost of the copy on the sending and
 * the receiving nodes (docs/PERFORMANCE.md, "Cluster"). Holds one buffer
 * alive until a copy from another.
 */
let lastSource: Uint8Array | null = null;
let lastMemory: ArrayBufferLike = new ArrayBuffer(0);
let lastOffset = 0;

/** Copies src[s, e) to dst at p (dst has the room) and returns the end; short runs byte by byte, cheaper than a native copy's call. */
export function copyInto(src: Uint8Array, s: number, e: number, dst: Uint8Array, p: number): number {
  const n = e - s;
  if (n < 64) {
    for (let k = 0; k < n; k++) dst[p + k] = src[s + k];
    return p + n;
  }
  if (src !== lastSource) {
    lastSource = src;
    lastMemory = src.buffer;
    lastOffset = src.byteOffset;
  }
  dst.set(new Uint8Array(lastMemory, lastOffset + s, n), p);
  return p + n;
}

/**
 * Writes a non-negative integer's decimal digits at p and returns the end.
 * Every frame writes one or two (sizes): up to 2^32 - 1 the digits are
 * counted by comparison and made by integer division, about half the cost
 * of dividing twice in floating point.
 */
export function writeUint(dst: Uint8Array, p: number, v: number): number {
  if (v < 10) {
    dst[p] = 48 + v;
    return p + 1;
  }
  if (v > 0xffffffff) {
    const digits = String(v);
    for (let k = 0; k < digits.length; k++) dst[p + k] = digits.charCodeAt(k);
    return p + digits.length;
  }
  const digits = v < 100 ? 2 : v < 1000 ? 3 : v < 10000 ? 4 : v < 100000 ? 5 : v < 1000000 ? 6 : v < 10000000 ? 7 : v < 100000000 ? 8 : v < 1000000000 ? 9 : 10;
  let q = p + digits - 1;
  let t = v;
  while (t >= 10) {
    const rest = (t / 10) >>> 0;
    dst[q--] = 48 + t - rest * 10;
    t = rest;
  }
  dst[q] = 48 + t;
  return p + digits;
}

/** Strings up to this many bytes are remembered by RepeatedString. */
const REPEATED_MAX = 128;

/**
 * Decodes UTF-8 strings that mostly repeat the previous one (the subject of
 * a publisher's messages, of a route's messages): when the bytes are those
 * decoded last, the same string is returned, found by comparing bytes, so
 * the message costs no decode, no new string and (the string keeps its hash)
 * no rehash in the router's and the permissions' caches.
 */
export class RepeatedString {
  private last = "";
  private readonly lastBytes = Buffer.allocUnsafe(REPEATED_MAX);
  private lastLen = -1;

  of(buf: Buffer, s: number, e: number): string {
    const len = e - s;
    if (len === this.lastLen) {
      const last = this.lastBytes;
      let k = 0;
      while (k < len && buf[s + k] === last[k]) k++;
      if (k === len) return this.last;
    }
    const str = buf.toString("utf8", s, e);
    if (len <= REPEATED_MAX) {
      buf.copy(this.lastBytes, 0, s, e);
      this.lastLen = len;
      this.last = str;
    }
    return str;
  }
}
