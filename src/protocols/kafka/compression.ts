/**
 * Record-set decompression for Produce. Kafka codecs: 1 gzip, 2 snappy,
 * 3 lz4, 4 zstd.
 *
 * Output is bounded twice. `decompressedBound` reads, from the codec's own
 * framing and without decompressing, the most the input can expand to
 * (gzip's trailer, snappy's length preambles, LZ4's content size or block
 * sizes, zstd's frame and block headers) and refuses input that declares
 * more than the broker accepts; the caller reserves that much of the door's
 * decompression budget (budget.ts) before anything is allocated. Then
 * `decompress` produces at most that bound: output past what the framing
 * declared is corruption.
 *
 * gzip is zlib's; snappy (raw blocks, or the xerial framing Java clients
 * send) and LZ4 (the frame format) are decoded here, their formats being a
 * page each; zstd goes to fzstd, a pure-JS decoder, because Node 20's zlib
 * has no zstd.
 */

import { createGunzip } from "node:zlib";
import { Decompress } from "fzstd";
import { BatchError, ErrorCode } from "./errors.js";

const corrupt = (codec: string, why: string): BatchError => new BatchError(ErrorCode.CORRUPT_MESSAGE, `${codec}: ${why}`);
const tooLarge = (codec: string, max: number): BatchError => new BatchError(ErrorCode.MESSAGE_TOO_LARGE, `${codec}: expands past ${max} bytes`);
const overBound = (codec: string): BatchError => corrupt(codec, "more output than its framing declares");

const GZIP = 1;
const SNAPPY = 2;
const LZ4 = 3;
export const ZSTD = 4;

/**
 * The most `input` decompresses to under `codec`, read from its framing; a
 * BatchError when the framing is broken (CORRUPT_MESSAGE), declares more than
 * `max` (MESSAGE_TOO_LARGE) or the codec is unknown.
 */
export function decompressedBound(codec: number, input: Buffer, max: number): number {
  let bound: number;
  switch (codec) {
    case GZIP:
      bound = gzipBound(input);
      break;
    case SNAPPY:
      bound = snappyBound(input, max);
      break;
    case LZ4:
      bound = lz4Bound(input, max);
      break;
    case ZSTD:
      bound = zstdBound(input, max);
      break;
    default:
      throw new BatchError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, `compression codec ${codec} is not supported`);
  }
  if (bound > max) throw tooLarge(CODEC_NAMES[codec], max);
  return bound;
}

const CODEC_NAMES = ["none", "gzip", "snappy", "lz4", "zstd"];

/** Decompresses `input`, producing at most `bound` bytes (from decompressedBound). */
export function decompress(codec: number, input: Buffer, bound: number): Promise<Buffer> {
  switch (codec) {
    case GZIP:
      return gunzipInto(input, bound);
    case SNAPPY:
      return attempt(() => snappy(input, bound));
    case LZ4:
      return attempt(() => lz4Frame(input, bound));
    case ZSTD:
      return attempt(() => zstd(input, bound));
    default:
      return Promise.reject(new BatchError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, `compression codec ${codec} is not supported`));
  }
}

/**
 * zlib's gunzip, its output copied straight into one buffer of the declared
 * size (zlib.gunzip() gathers chunks and then concatenates them: twice the
 * memory the budget counted). Runs on the thread pool.
 */
function gunzipInto(input: Buffer, bound: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out = Buffer.allocUnsafe(bound);
    let len = 0;
    let failed = false;
    const fail = (err: BatchError): void => {
      if (failed) return;
      failed = true;
      z.destroy();
      reject(err);
    };
    const z = createGunzip({ chunkSize: GZIP_CHUNK });
    z.on("data", (chunk: Buffer) => {
      if (len + chunk.length > bound) return fail(overBound("gzip"));
      chunk.copy(out, len);
      len += chunk.length;
    });
    z.on("error", (err) => fail(corrupt("gzip", err.message)));
    z.on("end", () => {
      if (!failed) resolve(out.subarray(0, len));
    });
    z.end(input);
  });
}

const GZIP_CHUNK = 64 * 1024;

function attempt(run: () => Buffer): Promise<Buffer> {
  try {
    return Promise.resolve(run());
  } catch (err) {
    return Promise.reject(err instanceof BatchError ? err : corrupt("decompress", (err as Error).message));
  }
}

// ---- bounds from framing ----

const GZIP_HEADER_AND_TRAILER = 18;

/**
 * gzip's trailer ends with ISIZE, the member's length mod 2^32; zlib checks
 * it. Every Kafka client sends one member, so it is the exact output size
 * (more members would make it the last member's only, and the batch is then
 * refused as more output than declared).
 */
function gzipBound(input: Buffer): number {
  if (input.length < GZIP_HEADER_AND_TRAILER || input[0] !== 0x1f || input[1] !== 0x8b) throw corrupt("gzip", "not a gzip stream");
  return input.readUInt32LE(input.length - 4);
}

/** A snappy block's length preamble (a varint of at most 5 bytes): [length, where the block data starts]. */
function snappyPreamble(src: Buffer, start: number, end: number): [number, number] {
  let p = start;
  let length = 0;
  for (let shift = 1; ; shift *= 128) {
    if (p >= end || shift > 2 ** 28) throw corrupt("snappy", "bad length preamble");
    const b = src[p++];
    length += (b & 0x7f) * shift;
    if ((b & 0x80) === 0) return [length, p];
  }
}

function snappyBound(input: Buffer, max: number): number {
  if (!isXerial(input)) return snappyPreamble(input, 0, input.length)[0];
  let total = 0;
  for (let p = XERIAL_HEADER; p < input.length; ) {
    const [n, at] = xerialChunk(input, p);
    total += snappyPreamble(input, at, at + n)[0];
    if (total > max) throw tooLarge("snappy", max);
    p = at + n;
  }
  return total;
}

const LZ4_MAGIC = 0x184d2204;
const LZ4_BLOCK_MAX = [0, 0, 0, 0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024];

interface Lz4Header {
  blockChecksum: boolean;
  contentChecksum: boolean;
  /** Declared content size, or -1. */
  contentSize: number;
  blockMax: number;
  /** Where the first block starts. */
  blocksAt: number;
}

function lz4Header(src: Buffer): Lz4Header {
  if (src.length < 7 || src.readUInt32LE(0) !== LZ4_MAGIC) throw corrupt("lz4", "not an LZ4 frame");
  const flg = src[4];
  if (flg >>> 6 !== 1) throw corrupt("lz4", "unknown frame version");
  const blockMax = LZ4_BLOCK_MAX[(src[5] >>> 4) & 7];
  if (blockMax === 0) throw corrupt("lz4", "bad block maximum size");
  const hasSize = (flg & 0x08) !== 0;
  const blocksAt = 6 + (hasSize ? 8 : 0) + ((flg & 0x01) !== 0 ? 4 : 0) + 1; // FLG, BD, options, header checksum
  if (blocksAt > src.length) throw corrupt("lz4", "truncated frame header");
  return {
    blockChecksum: (flg & 0x10) !== 0,
    contentChecksum: (flg & 0x04) !== 0,
    contentSize: hasSize ? src.readUInt32LE(6) + src.readUInt32LE(10) * 2 ** 32 : -1,
    blockMax,
    blocksAt,
  };
}

/** The declared content size, else the sum over blocks of their size (stored) or the block maximum (compressed). */
function lz4Bound(src: Buffer, max: number): number {
  const h = lz4Header(src);
  if (h.contentSize >= 0) return h.contentSize;
  let total = 0;
  for (let p = h.blocksAt; ; ) {
    if (p + 4 > src.length) throw corrupt("lz4", "truncated block size");
    const word = src.readUInt32LE(p);
    if (word === 0) return total;
    const size = word & 0x7fffffff;
    total += word & 0x80000000 ? size : h.blockMax;
    if (total > max) throw tooLarge("lz4", max);
    p += 4 + size + (h.blockChecksum ? 4 : 0);
  }
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_SKIPPABLE = 0x184d2a50;
const ZSTD_BLOCK_MAX = 128 * 1024;

/**
 * Walks zstd frames and their block headers: a raw or RLE block regenerates
 * exactly its size, a compressed one at most the block maximum (the window,
 * capped at 128 KiB); a frame's declared content size caps its blocks' sum.
 */
function zstdBound(src: Buffer, max: number): number {
  let total = 0;
  let p = 0;
  const need = (n: number): void => {
    if (p + n > src.length) throw corrupt("zstd", "truncated frame");
  };
  if (src.length === 0) throw corrupt("zstd", "empty input");
  while (p < src.length) {
    need(4);
    const magic = src.readUInt32LE(p);
    p += 4;
    if ((magic & 0xfffffff0) === ZSTD_SKIPPABLE) {
      need(4);
      p += 4 + src.readUInt32LE(p);
      if (p > src.length) throw corrupt("zstd", "skippable frame passes the end");
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw corrupt("zstd", "not a zstd frame");
    need(1);
    const fhd = src[p++];
    if (fhd & 0x08) throw corrupt("zstd", "reserved frame header bit set");
    const singleSegment = (fhd & 0x20) !== 0;
    let window = 0;
    if (!singleSegment) {
      need(1);
      const wd = src[p++];
      const base = 2 ** (10 + (wd >>> 3));
      window = base + (base / 8) * (wd & 7);
    }
    p += [0, 1, 2, 4][fhd & 3]; // dictionary id
    const fcsFlag = fhd >>> 6;
    const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
    need(fcsBytes);
    let contentSize = -1;
    if (fcsBytes > 0) {
      contentSize = 0;
      for (let i = 0; i < fcsBytes; i++) contentSize += src[p + i] * 2 ** (8 * i);
      if (fcsBytes === 2) contentSize += 256;
    }
    p += fcsBytes;
    if (singleSegment) window = contentSize;
    const blockMax = Math.min(window, ZSTD_BLOCK_MAX);
    let frame = 0;
    for (let last = false; !last; ) {
      need(3);
      const header = src[p] | (src[p + 1] << 8) | (src[p + 2] << 16);
      p += 3;
      last = (header & 1) !== 0;
      const type = (header >>> 1) & 3;
      const size = header >>> 3;
      if (type === 3) throw corrupt("zstd", "reserved block type");
      frame += type === 2 ? blockMax : size;
      p += type === 1 ? 1 : size;
      if (p > src.length) throw corrupt("zstd", "block passes the end");
      if (total + frame > max) throw tooLarge("zstd", max);
    }
    if (fhd & 0x04) p += 4; // content checksum
    if (p > src.length) throw corrupt("zstd", "truncated checksum");
    total += contentSize >= 0 ? Math.min(frame, contentSize) : frame;
  }
  return total;
}

/** An output buffer that grows up to the bound its framing declared. */
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
    if (this.len + n > this.max) throw overBound(this.codec);
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

const XERIAL_HEADER = 16;

function isXerial(input: Buffer): boolean {
  return input.length >= XERIAL_HEADER && input.subarray(0, 8).equals(XERIAL_MAGIC);
}

/** The xerial chunk at p (an i32 length, then a raw block): [length, where the block starts]. */
function xerialChunk(input: Buffer, p: number): [number, number] {
  if (p + 4 > input.length) throw corrupt("snappy", "truncated xerial chunk length");
  const n = input.readInt32BE(p);
  if (n < 0 || p + 4 + n > input.length) throw corrupt("snappy", "xerial chunk passes the end");
  return [n, p + 4];
}

function snappy(input: Buffer, max: number): Buffer {
  if (isXerial(input)) {
    // xerial framing: magic, version, compatible version, then chunks.
    const out = new Out(input.length * 2, max, "snappy");
    for (let p = XERIAL_HEADER; p < input.length; ) {
      const [n, at] = xerialChunk(input, p);
      snappyBlock(input, at, at + n, out);
      p = at + n;
    }
    return out.result();
  }
  const out = new Out(0, max, "snappy");
  snappyBlock(input, 0, input.length, out);
  return out.result();
}

function snappyBlock(src: Buffer, start: number, end: number, out: Out): void {
  const [length, at] = snappyPreamble(src, start, end);
  let p = at;
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

function lz4Frame(src: Buffer, max: number): Buffer {
  const h = lz4Header(src);
  const out = new Out(src.length * 3, max, "lz4");
  let p = h.blocksAt;
  for (;;) {
    if (p + 4 > src.length) throw corrupt("lz4", "truncated block size");
    const word = src.readUInt32LE(p);
    p += 4;
    if (word === 0) break;
    const size = word & 0x7fffffff;
    if (p + size > src.length) throw corrupt("lz4", "block passes the end");
    if (word & 0x80000000) out.literal(src, p, size);
    else lz4Block(src, p, p + size, out);
    p += size + (h.blockChecksum ? 4 : 0);
  }
  if (h.contentChecksum) p += 4;
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

function zstd(src: Buffer, max: number): Buffer {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const d = new Decompress((chunk) => {
    total += chunk.length;
    if (total > max) throw overBound("zstd");
    chunks.push(chunk);
  });
  d.push(src, true);
  return Buffer.concat(chunks, total);
}
