/**
 * Byte writers for the wire formatters (the NATS door's MSG lines, routes'
 * RMSG lines): no strings built per message.
 */

/** Copies src[s, e) to dst at p and returns the end; short runs byte by byte, cheaper than a native copy's call. */
export function copyInto(src: Buffer, s: number, e: number, dst: Buffer, p: number): number {
  const n = e - s;
  if (n < 64) {
    for (let k = 0; k < n; k++) dst[p + k] = src[s + k];
  } else {
    src.copy(dst, p, s, e);
  }
  return p + n;
}

/** Writes a non-negative integer's decimal digits at p and returns the end. */
export function writeUint(dst: Buffer, p: number, v: number): number {
  if (v < 10) {
    dst[p] = 48 + v;
    return p + 1;
  }
  let digits = 0;
  for (let t = v; t > 0; t = Math.floor(t / 10)) digits++;
  let q = p + digits - 1;
  for (let t = v; t > 0; t = Math.floor(t / 10)) dst[q--] = 48 + (t % 10);
  return p + digits;
}
