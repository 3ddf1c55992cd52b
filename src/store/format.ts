/**
 * The on-disk batch format (see docs/ARCHITECTURE.md, "Storage"). All
 * integers little-endian; 64-bit values are written as two 32-bit halves and
 * must stay below 2^53.
 *
 * batch:  u32 length (bytes after the crc field) | u32 crc32c (of those bytes)
 *         | u8 version (1) | u8 flags | u16 reserved (0)
 *         | u64 firstSeq | u64 time ms | u32 count | record × count
 * record: u32 length (bytes after this field) | u16 subjectLen | u32 keyLen
 *         (0xffffffff: no key) | u32 hdrLen | subject | key | headers | payload
 * tombstone batch (flags & TOMBSTONES): count entries of u64 from | u64 to,
 *         each deleting the sequences from..to (inclusive); firstSeq is the
 *         next sequence at the time it was written and is not consumed.
 *
 * foreign batch (flags & FOREIGN): u8 format | u8 reserved (0) | u16 subjectLen
 *         | subject | the batch as a client sent it, in its own record format
 *         (format 1: a Kafka RecordBatch v2, compressed or not), holding
 *         `count` records, all under `subject`. The store does not read inside
 *         it: a ForeignRecords decoder from above turns it into messages.
 *
 * Every record of a batch shares the batch's time; sequences are firstSeq + i.
 * A batch flagged GAP may start above the sequence that follows the previous
 * batch of its segment: compaction removed the sequences in between, or a
 * copy (appendCopy) skipped those its source no longer held.
 */

import { crc32c, crc32cCombine } from "../util/crc32c.js";
import type { AppendInput, RecordRun, StoredMessage } from "./log.js";

export const BATCH_HEADER = 32; // bytes, including length and crc
export const RECORD_HEADER = 14; // bytes, including length
export const FORMAT_VERSION = 1;
const NO_KEY = 0xffffffff;
export const FLAG_GAP = 1;
export const FLAG_TOMBSTONES = 2;
export const FLAG_FOREIGN = 4;
const KNOWN_FLAGS = FLAG_GAP | FLAG_TOMBSTONES | FLAG_FOREIGN;
/** Bytes of a foreign batch before its subject: format, reserved, subject length. */
export const FOREIGN_HEADER = 4;
export const TOMBSTONE_BYTES = 16;
/** A batch larger than this is taken for corruption, not a reason to allocate. */
export const MAX_BATCH_BYTES = 64 * 1024 * 1024;

/**
 * The last subject encoded and its UTF-8 bytes: a run of appends usually
 * shares one subject (a Kafka batch always does), and short copies in JS beat
 * a native string encode per record.
 */
let lastSubject = "";
let lastSubjectLen = 0;
let lastSubjectBytes: Buffer | null = null;

function subjectLength(subject: string): number {
  return subject === lastSubject ? lastSubjectLen : Buffer.byteLength(subject);
}

/** Writes `subject` at `at`; returns its length in bytes. */
function writeSubject(buf: Buffer, at: number, subject: string): number {
  if (subject !== lastSubject) {
    lastSubject = subject;
    lastSubjectLen = buf.write(subject, at, "utf8");
    lastSubjectBytes = null; // made on the next repeat only
    return lastSubjectLen;
  }
  const bytes = (lastSubjectBytes ??= Buffer.from(subject, "utf8"));
  for (let i = 0; i < bytes.length; i++) buf[at + i] = bytes[i];
  return bytes.length;
}

export function recordSize(input: AppendInput): number {
  return (
    RECORD_HEADER +
    subjectLength(input.subject) +
    (input.key ? input.key.length : 0) +
    (input.headers ? input.headers.length : 0) +
    input.data.length
  );
}

export function writeU64(buf: Buffer, v: number, at: number): void {
  buf.writeUInt32LE(v >>> 0, at);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), at + 4);
}

export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * 0x100000000;
}

/** recordSize of record i of a run. */
export function runRecordSize(run: RecordRun, i: number): number {
  return (
    RECORD_HEADER +
    subjectLength(run.subjects === null ? run.subject : run.subjects[i]) +
    Math.max(0, run.keyLen[i]) +
    (run.headers?.[i]?.length ?? 0) +
    Math.max(0, run.valueLen[i])
  );
}

/** Writes record i of a run at `at` (room for runRecordSize bytes); returns where it ends. */
export function encodeRunRecord(buf: Buffer, at: number, run: RecordRun, i: number): number {
  let p = at + 4;
  const keyLen = run.keyLen[i];
  const hdr = run.headers === null ? null : run.headers[i];
  const subjLen = writeSubject(buf, p + 10, run.subjects === null ? run.subject : run.subjects[i]);
  buf.writeUInt16LE(subjLen, p);
  buf.writeUInt32LE(keyLen < 0 ? NO_KEY : keyLen, p + 2);
  buf.writeUInt32LE(hdr ? hdr.length : 0, p + 6);
  p += 10 + subjLen;
  if (keyLen > 0) p = copyBytes(run.source, run.keyAt[i], keyLen, buf, p);
  if (hdr) {
    buf.set(hdr, p);
    p += hdr.length;
  }
  const valueLen = run.valueLen[i];
  if (valueLen > 0) p = copyBytes(run.source, run.valueAt[i], valueLen, buf, p);
  buf.writeUInt32LE(p - at - 4, at);
  return p;
}

/** Copies src[from, from+len) to dst at `to`; returns the end. Short runs in JS, which beats a native call. */
function copyBytes(src: Buffer, from: number, len: number, dst: Buffer, to: number): number {
  if (len <= 32) {
    for (let k = 0; k < len; k++) dst[to + k] = src[from + k];
  } else {
    src.copy(dst, to, from, from + len);
  }
  return to + len;
}

/** Writes one record at `at` (room for recordSize(input) bytes); returns where it ends. */
export function encodeRecord(buf: Buffer, at: number, r: AppendInput): number {
  let p = at + 4;
  const subjLen = writeSubject(buf, p + 10, r.subject);
  buf.writeUInt16LE(subjLen, p);
  buf.writeUInt32LE(r.key ? r.key.length : NO_KEY, p + 2);
  buf.writeUInt32LE(r.headers ? r.headers.length : 0, p + 6);
  p += 10 + subjLen;
  if (r.key) {
    buf.set(r.key, p);
    p += r.key.length;
  }
  if (r.headers) {
    buf.set(r.headers, p);
    p += r.headers.length;
  }
  buf.set(r.data, p);
  p += r.data.length;
  buf.writeUInt32LE(p - at - 4, at);
  return p;
}

/**
 * Completes a data batch whose `count` records fill buf[BATCH_HEADER, end):
 * writes its header and checksum, and returns the batch's bytes.
 */
export function sealBatch(buf: Buffer, end: number, firstSeq: number, time: number, count: number, flags = 0): Buffer {
  const batch = end === buf.length ? buf : buf.subarray(0, end);
  writeHeader(batch, flags, firstSeq, time, count, batch.length);
  batch.writeUInt32LE(crc32c(batch, 8, end), 4);
  return batch;
}

/**
 * Completes a foreign batch stored as two parts, written back to back: `head`
 * (from foreignHead) and the client's `bytes`, which are not copied. With
 * `tail` (the CRC-32C of bytes[tail.from..], which the appender checked), the
 * checksum reads only the head and bytes[0, tail.from).
 */
export function sealForeign(head: Buffer, bytes: Buffer, firstSeq: number, time: number, count: number, tail: KnownTail | null, flags = 0): void {
  writeHeader(head, FLAG_FOREIGN | flags, firstSeq, time, count, head.length + bytes.length);
  const headCrc = crc32c(head, 8, head.length);
  const crc = tail === null ? crc32c(bytes, 0, bytes.length, headCrc) : crc32cCombine(crc32c(bytes, 0, tail.from, headCrc), tail.crc, bytes.length - tail.from);
  head.writeUInt32LE(crc, 4);
}

/** The bytes from `from` to a foreign batch's end, whose CRC-32C the appender already knows (ForeignBatch.tailCrc). */
export interface KnownTail {
  from: number;
  crc: number;
}

/** A tombstone batch deleting the inclusive ranges [a0, b0, a1, b1, ...]. */
/**
 * The first `count` records of a batch of the log's own records (not a
 * foreign one) at `at` in `buf`, as a batch of their own with its sequence,
 * time and flags: what a truncation inside the batch keeps. Null if the
 * batch does not hold that many records.
 */
export function batchPrefix(buf: Buffer, at: number, count: number): Buffer | null {
  let end = -1;
  const fits = forEachRecord(buf, at, (i, _subject, recordAt, size) => {
    if (i === count - 1) {
      end = recordAt + size;
      return true;
    }
  });
  if (!fits || end < 0) return null;
  const out = Buffer.from(buf.subarray(at, end));
  const hdr = readBatchHeader(buf, at);
  return sealBatch(out, out.length, hdr.firstSeq, hdr.time, count, hdr.flags);
}

export function encodeTombstones(ranges: readonly number[], nextSeq: number, time: number, flags = 0): Buffer {
  const count = ranges.length / 2;
  const buf = Buffer.allocUnsafe(BATCH_HEADER + count * TOMBSTONE_BYTES);
  writeHeader(buf, FLAG_TOMBSTONES | flags, nextSeq, time, count, buf.length);
  for (let i = 0; i < ranges.length; i++) writeU64(buf, ranges[i], BATCH_HEADER + i * 8);
  buf.writeUInt32LE(crc32c(buf, 8, buf.length), 4);
  return buf;
}

/** The ranges of a checked tombstone batch, appended to `out`. */
export function readTombstones(buf: Buffer, at: number, out: number[]): void {
  const count = buf.readUInt32LE(at + 28);
  for (let i = 0; i < count * 2; i++) out.push(readU64(buf, at + BATCH_HEADER + i * 8));
}

/** Bytes a foreign batch of `bytes` client bytes under `subject` takes after the batch header. */
export function foreignBodySize(subject: string, bytes: number): number {
  return FOREIGN_HEADER + subjectLength(subject) + bytes;
}

/**
 * The batch header and foreign header of a foreign batch under `subject`,
 * to be sealed (sealForeign) and written just before the client's bytes.
 */
export function foreignHead(format: number, subject: string): Buffer {
  const subjLen = subjectLength(subject);
  const head = Buffer.allocUnsafe(BATCH_HEADER + FOREIGN_HEADER + subjLen);
  const p = BATCH_HEADER;
  head[p] = format;
  head[p + 1] = 0;
  head.writeUInt16LE(subjLen, p + 2);
  writeSubject(head, p + FOREIGN_HEADER, subject);
  return head;
}

/** A checked foreign batch's parts: its format, subject and the client's bytes (a view of `buf`). */
export function foreignParts(buf: Buffer, at: number): { format: number; subject: string; bytes: Buffer } | null {
  const end = at + buf.readUInt32LE(at) + 8;
  const p = at + BATCH_HEADER;
  if (p + FOREIGN_HEADER > end) return null;
  const subjLen = buf.readUInt16LE(p + 2);
  if (p + FOREIGN_HEADER + subjLen > end) return null;
  return { format: buf[p], subject: buf.toString("utf8", p + FOREIGN_HEADER, p + FOREIGN_HEADER + subjLen), bytes: buf.subarray(p + FOREIGN_HEADER + subjLen, end) };
}

/**
 * The stored size counted for record i of a foreign batch of `count`
 * records whose body is `body` bytes: the body shared out, so that the
 * records' sizes add up to what the batch takes.
 */
export function foreignShare(body: number, count: number, i: number): number {
  return Math.floor(body / count) + (i < body % count ? 1 : 0);
}

/** A batch of records copied as they are (compaction): `records` holds `count` encoded records. */
export function encodeRawBatch(records: readonly Buffer[], bytes: number, firstSeq: number, time: number, count: number, flags: number): Buffer {
  const buf = Buffer.allocUnsafe(BATCH_HEADER + bytes);
  writeHeader(buf, flags, firstSeq, time, count, buf.length);
  let p = BATCH_HEADER;
  for (const r of records) {
    r.copy(buf, p);
    p += r.length;
  }
  buf.writeUInt32LE(crc32c(buf, 8, buf.length), 4);
  return buf;
}

/** Writes a batch header at buf[0, BATCH_HEADER) for a batch of `length` bytes in all. */
function writeHeader(buf: Buffer, flags: number, firstSeq: number, time: number, count: number, length: number): void {
  buf.writeUInt32LE(length - 8, 0);
  buf[8] = FORMAT_VERSION;
  buf[9] = flags;
  buf.writeUInt16LE(0, 10);
  writeU64(buf, firstSeq, 12);
  writeU64(buf, time, 20);
  buf.writeUInt32LE(count, 28);
}

export interface BatchHeader {
  length: number; // whole batch, header included
  flags: number;
  firstSeq: number;
  time: number;
  count: number;
}

/**
 * Checks a batch at buf[at, end): the reason it is unusable, or null. A batch
 * running past `end` is reported as "short" so callers can tell a torn tail.
 */
export function checkBatch(buf: Buffer, at: number, end: number): string | null {
  if (end - at < BATCH_HEADER) return "short";
  const len = buf.readUInt32LE(at);
  if (len < BATCH_HEADER - 8 || len > MAX_BATCH_BYTES) return "bad length";
  if (at + 8 + len > end) return "short";
  if (buf[at + 8] !== FORMAT_VERSION) return "unknown version";
  if ((buf[at + 9] & ~KNOWN_FLAGS) !== 0) return "unknown flags";
  if (crc32c(buf, at + 8, at + 8 + len) !== buf.readUInt32LE(at + 4)) return "checksum mismatch";
  return null;
}

export function readBatchHeader(buf: Buffer, at: number): BatchHeader {
  return {
    length: buf.readUInt32LE(at) + 8,
    flags: buf[at + 9],
    firstSeq: readU64(buf, at + 12),
    time: readU64(buf, at + 20),
    count: buf.readUInt32LE(at + 28),
  };
}

/**
 * Calls `each` for every record of a checked batch with its subject, the
 * record's offset and its stored size; stops early when `each` returns
 * true. Returns false if the records do not fit the batch (corruption the
 * crc could not catch). The records of a foreign batch all have the
 * batch's subject and its body's offset.
 */
export function forEachRecord(buf: Buffer, at: number, each: (index: number, subject: string, recordAt: number, size: number) => boolean | void): boolean {
  const end = at + buf.readUInt32LE(at) + 8;
  const count = buf.readUInt32LE(at + 28);
  let p = at + BATCH_HEADER;
  if ((buf[at + 9] & FLAG_FOREIGN) !== 0) {
    const parts = foreignParts(buf, at);
    if (parts === null || count === 0 || parts.bytes.length === 0) return false;
    const body = end - p;
    for (let i = 0; i < count; i++) if (each(i, parts.subject, p, foreignShare(body, count, i)) === true) return true;
    return true;
  }
  for (let i = 0; i < count; i++) {
    if (p + RECORD_HEADER > end) return false;
    const len = buf.readUInt32LE(p);
    if (p + 4 + len > end || len < RECORD_HEADER - 4) return false;
    const subjLen = buf.readUInt16LE(p + 4);
    if (p + RECORD_HEADER + subjLen > p + 4 + len) return false;
    const subject = buf.toString("utf8", p + RECORD_HEADER, p + RECORD_HEADER + subjLen);
    if (each(i, subject, p, 4 + len) === true) return true;
    p += 4 + len;
  }
  return p === end;
}

/** Decodes the record at `recordAt` (copies: the result outlives `buf`). */
export function decodeRecord(buf: Buffer, recordAt: number, seq: number, time: number): StoredMessage {
  const len = buf.readUInt32LE(recordAt);
  const subjLen = buf.readUInt16LE(recordAt + 4);
  const keyLen = buf.readUInt32LE(recordAt + 6);
  const hdrLen = buf.readUInt32LE(recordAt + 10);
  let p = recordAt + RECORD_HEADER;
  const end = recordAt + 4 + len;
  const subject = buf.toString("utf8", p, p + subjLen);
  p += subjLen;
  let key: Buffer | null = null;
  if (keyLen !== NO_KEY) {
    key = Buffer.from(buf.subarray(p, p + keyLen));
    p += keyLen;
  }
  const headers = hdrLen > 0 ? Buffer.from(buf.subarray(p, p + hdrLen)) : null;
  p += hdrLen;
  return { seq, time, subject, key, headers, data: Buffer.from(buf.subarray(p, end)) };
}

/**
 * The record at `recordAt` as views into `buf` (no copies: the result keeps
 * `buf` alive). `subject` comes from the caller's index, saving a decode.
 */
export function viewRecord(buf: Buffer, recordAt: number, seq: number, time: number, subject: string): StoredMessage {
  const end = recordAt + 4 + buf.readUInt32LE(recordAt);
  const subjLen = buf.readUInt16LE(recordAt + 4);
  const keyLen = buf.readUInt32LE(recordAt + 6);
  const hdrLen = buf.readUInt32LE(recordAt + 10);
  let p = recordAt + RECORD_HEADER + subjLen;
  let key: Buffer | null = null;
  if (keyLen !== NO_KEY) {
    key = buf.subarray(p, p + keyLen);
    p += keyLen;
  }
  const headers = hdrLen > 0 ? buf.subarray(p, p + hdrLen) : null;
  p += hdrLen;
  return { seq, time, subject, key, headers, data: buf.subarray(p, end) };
}
