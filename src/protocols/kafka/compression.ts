/**
 * Record-set decompression for Produce. Kafka codecs: 1 gzip, 2 snappy,
 * 3 lz4, 4 zstd. Output is bounded so that a small compressed batch cannot
 * expand past the largest batch the broker accepts.
 *
 * gzip is zlib's; snappy (raw blocks, or the xerial framing Java clients
 * send) and LZ4 (the frame format) are decoded here, their formats being a
 * page each; zstd goes to fzstd, a pure-JS decoder, because Node 20's zlib
 * has no zstd.
 */

import { gunzip } from "node:zlib";
import { Decompress } from "fzstd";
import { BatchError, ErrorCode } from "./errors.js";

const corrupt = (codec: string, why: string): BatchError => new BatchError(ErrorCode.CORRUPT_MESSAGE, `${codec}: ${why}`);
const tooLarge = (codec: string, max: number): BatchError => new BatchError(ErrorCode.MESSAGE_TOO_LARGE, `${codec}: expands past ${max} bytes`);

export function decompress(codec: number, input: Buffer, maxBytes: number): Promise<Buffer> {
  switch (codec) {
    case 1:
      return new Promise((resolve, reject) =>
        gunzip(input, { maxOutputLength: maxBytes }, (err, out) => {
          if (err === null) return resolve(out);
          reject((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" ? tooLarge("gzip", maxBytes) : corrupt("gzip", err.message));
        }),
      );
    case 2:
      return attempt(() => snappy(input, maxBytes));
    case 3:
      return attempt(() => lz4Frame(input, maxBytes));
    case 4:
      return attempt(() => zstd(input, maxBytes));
    default:
      return Promise.reject(new BatchError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, `compression codec ${codec} is not supported`));
  }
}

function attempt(run: () => Buffer): Promise<Buffer> {
  try {
    return Promise.resolve(run());
  } catch (err) {
    return Promise.reject(err instanceof BatchError ? err : corrupt("decompress", (err as Error).message));
  }
}

/** An output buffer that grows up to a limit. */
class Out {
  buf: Buffer;
  len = 0;
  constructor(
    initial: number,
    private readonly max: number,
    private readonly codec: string,
  ) {
    this.buf = Buffer.allocUnsafe(Math.max(64, Math.min(initial, max)));
  }
  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    if (this.len + n > this.max) throw tooLarge(this.codec, this.max);
    const next = Buffer.allocUnsafe(Math.min(this.max, Math.max(this.buf.length * 2, this.len + n)));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  literal(src: Buffer, from: number, n: number): void {
    this.ensure(n);
    src.copy(this.buf, this.len, from, from + n);
    this.len += n;
  }
  /** Copies `n` bytes from `offset` back; the ranges may overlap, which repeats the pattern. */
  match(offset: number, n: number): void {
    if (offset <= 0 || offset > this.len) throw corrupt(this.codec, `match offset ${offset} outside the output`);
    this.ensure(n);
    const b = this.buf;
    let d = this.len;
    let s = d - offset;
    for (let i = 0; i < n; i++) b[d++] = b[s++];
    this.len = d;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

// ---- snappy ----

const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);

function snappy(input: Buffer, max: number): Buffer {
  if (input.length >= 16 && input.subarray(0, 8).equals(XERIAL_MAGIC)) {
    // xerial framing: magic, version, compatible version, then (i32 length, raw block) chunks.
    const out = new Out(input.length * 2, max, "snappy");
    let p = 16;
    while (p < input.length) {
      if (p + 4 > input.length) throw corrupt("snappy", "truncated xerial chunk length");
      const n = input.readInt32BE(p);
      p += 4;
      if (n < 0 || p + n > input.length) throw corrupt("snappy", "xerial chunk passes the end");
      snappyBlock(input, p, p + n, out);
      p += n;
    }
    return out.result();
  }
  const out = new Out(0, max, "snappy");
  snappyBlock(input, 0, input.length, out);
  return out.result();
}

function snappyBlock(src: Buffer, start: number, end: number, out: Out): void {
  let p = start;
  let length = 0;
  for (let shift = 1; ; shift *= 128) {
    if (p >= end || shift > 2 ** 28) throw corrupt("snappy", "bad length preamble");
    const b = src[p++];
    length += (b & 0x7f) * shift;
    if ((b & 0x80) === 0) break;
  }
  const target = out.len + length;
  out.ensure(length);
  while (p < end) {
    const tag = src[p++];
    const kind = tag & 3;
    if (kind === 0) {
      let n = tag >>> 2;
      if (n >= 60) {
        const bytes = n - 59;
        if (p + bytes > end) throw corrupt("snappy", "truncated literal length");
        n = 0;
        for (let i = 0; i < bytes; i++) n += src[p + i] * 2 ** (8 * i);
        p += bytes;
      }
      n += 1;
      if (p + n > end) throw corrupt("snappy", "literal passes the end");
      out.literal(src, p, n);
      p += n;
    } else {
      let n: number;
      let offset: number;
      if (kind === 1) {
        if (p + 1 > end) throw corrupt("snappy", "truncated copy");
        n = ((tag >>> 2) & 7) + 4;
        offset = ((tag >>> 5) << 8) | src[p++];
      } else if (kind === 2) {
        if (p + 2 > end) throw corrupt("snappy", "truncated copy");
        n = (tag >>> 2) + 1;
        offset = src.readUInt16LE(p);
        p += 2;
      } else {
        if (p + 4 > end) throw corrupt("snappy", "truncated copy");
        n = (tag >>> 2) + 1;
        offset = src.readUInt32LE(p);
        p += 4;
      }
      out.match(offset, n);
    }
    if (out.len > target) throw corrupt("snappy", "more output than the preamble said");
  }
  if (out.len !== target) throw corrupt("snappy", "less output than the preamble said");
}

// ---- LZ4 frame ----

const LZ4_MAGIC = 0x184d2204;

function lz4Frame(src: Buffer, max: number): Buffer {
  if (src.length < 7 || src.readUInt32LE(0) !== LZ4_MAGIC) throw corrupt("lz4", "not an LZ4 frame");
  const flg = src[4];
  if (flg >>> 6 !== 1) throw corrupt("lz4", "unknown frame version");
  const blockChecksum = (flg & 0x10) !== 0;
  const contentSize = (flg & 0x08) !== 0;
  const contentChecksum = (flg & 0x04) !== 0;
  const dictId = (flg & 0x01) !== 0;
  let p = 6 + (contentSize ? 8 : 0) + (dictId ? 4 : 0) + 1; // FLG, BD, options, header checksum
  const out = new Out(src.length * 3, max, "lz4");
  for (;;) {
    if (p + 4 > src.length) throw corrupt("lz4", "truncated block size");
    const word = src.readUInt32LE(p);
    p += 4;
    if (word === 0) break;
    const size = word & 0x7fffffff;
    if (p + size > src.length) throw corrupt("lz4", "block passes the end");
    if (word & 0x80000000) out.literal(src, p, size);
    else lz4Block(src, p, p + size, out);
    p += size + (blockChecksum ? 4 : 0);
  }
  if (contentChecksum) p += 4;
  if (p > src.length) throw corrupt("lz4", "truncated frame end");
  return out.result();
}

function lz4Block(src: Buffer, start: number, end: number, out: Out): void {
  let p = start;
  for (;;) {
    if (p >= end) throw corrupt("lz4", "truncated sequence");
    const token = src[p++];
    let n = token >>> 4;
    if (n === 15) {
      let b: number;
      do {
        if (p >= end) throw corrupt("lz4", "truncated literal length");
        b = src[p++];
        n += b;
      } while (b === 255);
    }
    if (p + n > end) throw corrupt("lz4", "literals pass the end");
    out.literal(src, p, n);
    p += n;
    if (p === end) return; // the last sequence has literals only
    if (p + 2 > end) throw corrupt("lz4", "truncated match offset");
    const offset = src.readUInt16LE(p);
    p += 2;
    let m = token & 15;
    if (m === 15) {
      let b: number;
      do {
        if (p >= end) throw corrupt("lz4", "truncated match length");
        b = src[p++];
        m += b;
      } while (b === 255);
    }
    out.match(offset, m + 4);
  }
}

// ---- zstd ----

const ZSTD_MAGIC = 0xfd2fb528;

function zstd(src: Buffer, max: number): Buffer {
  // Refuse a frame that declares more than the limit before the decoder allocates for it.
  if (src.length >= 6 && src.readUInt32LE(0) === ZSTD_MAGIC) {
    const fhd = src[4];
    const fcsFlag = fhd >>> 6;
    const singleSegment = (fhd & 0x20) !== 0;
    const dictBytes = [0, 1, 2, 4][fhd & 3];
    const at = 5 + (singleSegment ? 0 : 1) + dictBytes;
    const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
    if (fcsBytes > 0 && at + fcsBytes <= src.length) {
      let size = 0;
      for (let i = 0; i < fcsBytes; i++) size += src[at + i] * 2 ** (8 * i);
      if (fcsBytes === 2) size += 256;
      if (size > max) throw tooLarge("zstd", max);
    }
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const d = new Decompress((chunk) => {
    total += chunk.length;
    if (total > max) throw tooLarge("zstd", max);
    chunks.push(chunk);
  });
  d.push(src, true);
  return Buffer.concat(chunks, total);
}
