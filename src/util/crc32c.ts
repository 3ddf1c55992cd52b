/**
 * CRC-32C (Castagnoli), the checksum Kafka puts on record batches. Large
 * ranges go to the CPU's CRC32 instruction through @node-rs/crc32 (about 4x
 * the table-driven code here, and every stored byte is checksummed on append
 * and on read); small ones, and platforms without that binary, use slicing
 * by eight tables: eight bytes per step, no allocation.
 */

import { createRequire } from "node:module";

type NativeCrc = (input: Buffer, initial?: number) => number;
/** Below this many bytes the subarray a native call needs costs more than it saves. */
const NATIVE_FROM = 512;

const native: NativeCrc | null = (() => {
  try {
    return (createRequire(import.meta.url)("@node-rs/crc32") as { crc32c: NativeCrc }).crc32c;
  } catch {
    return null;
  }
})();

const POLY = 0x82f63b78; // reflected Castagnoli polynomial
const T = new Int32Array(8 * 256);

for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[n] = c;
}
for (let n = 0; n < 256; n++) {
  for (let t = 1; t < 8; t++) T[t * 256 + n] = (T[(t - 1) * 256 + n] >>> 8) ^ T[T[(t - 1) * 256 + n] & 0xff];
}

/** CRC-32C of buf[start, end), continuing from `crc` (pass 0 to start). Unsigned result. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length, crc = 0): number {
  if (native !== null && end - start >= NATIVE_FROM) {
    const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    return native(start === 0 && end === b.length ? b : b.subarray(start, end), crc) >>> 0;
  }
  return crc32cTables(buf, start, end, crc);
}

/** The table-driven CRC-32C (exported so tests can check both paths agree). */
export function crc32cTables(buf: Uint8Array, start = 0, end = buf.length, crc = 0): number {
  let c = ~crc;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = (c ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24))) | 0;
    c =
      T[7 * 256 + (lo & 0xff)] ^
      T[6 * 256 + ((lo >>> 8) & 0xff)] ^
      T[5 * 256 + ((lo >>> 16) & 0xff)] ^
      T[4 * 256 + (lo >>> 24)] ^
      T[3 * 256 + buf[i + 4]] ^
      T[2 * 256 + buf[i + 5]] ^
      T[256 + buf[i + 6]] ^
      T[buf[i + 7]];
  }
  for (; i < end; i++) c = T[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * CRC-32C of A followed by B, from the CRC-32C of each and B's length,
 * without reading either (zlib's crc32_combine, for this polynomial). It
 * lets the log checksum a batch whose largest part a caller has already
 * checksummed (a Kafka batch under its own CRC-32C), instead of reading
 * every byte again. Costs a few hundred shifts, whatever the lengths.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  return (multiplyModP(xPow8n(lengthB), crcA >>> 0) ^ crcB) >>> 0;
}

/** a(x)·b(x) modulo the polynomial, both reflected (bit 31 is x^0). */
function multiplyModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X_POW_2K[k] = x^(2^k) modulo the polynomial. */
const X_POW_2K = new Uint32Array(32);
{
  let p = 0x40000000; // x^1
  X_POW_2K[0] = p;
  for (let k = 1; k < 32; k++) X_POW_2K[k] = p = multiplyModP(p, p);
}

/** x^(8n) modulo the polynomial: the factor that shifts a CRC past n zero bytes. */
function xPow8n(n: number): number {
  let p = 0x80000000; // x^0
  let k = 3;
  while (n > 0) {
    if (n & 1) p = multiplyModP(X_POW_2K[k & 31], p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}
