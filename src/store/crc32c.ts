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
