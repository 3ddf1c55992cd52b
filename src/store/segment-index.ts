/**
 * The index file beside each segment (`<segment>.idx`): the segment's batch
 * positions and times, its tombstones, and per sequence the subject and size,
 * so that opening a log reads indexes instead of scanning every segment.
 * Layout in docs/ARCHITECTURE.md, "Storage". An index is trusted only if its
 * checksum holds and the batch it names as the segment's last is really there.
 */

import { endianness } from "node:os";
import { crc32c } from "./crc32c.js";
import { readU64, writeU64 } from "./format.js";

const MAGIC = 0x5849474e; // "NGIX"
const VERSION = 1;
const HEADER = 64;
const BATCH_ENTRY = 32;
const TOMB_ENTRY = 16;
const RECORD_ENTRY = 8;
const LITTLE_ENDIAN = endianness() === "LE";

export interface SegmentIndexData {
  firstSeq: number;
  /** Bytes of the segment the index covers. */
  size: number;
  lastBatchPos: number;
  lastBatchCrc: number;
  batchSeq: readonly number[];
  batchCount: readonly number[];
  batchPos: readonly number[];
  batchLen: readonly number[];
  batchTime: readonly number[];
  tombs: readonly number[];
  /** Sequences firstSeq .. firstSeq + span - 1 have entries below. */
  span: number;
  /** Per sequence: index into `subjects`, or -1 (absent or deleted). */
  sid: Int32Array;
  size_: Uint32Array;
  subjects: readonly string[];
}

export function encodeSegmentIndex(d: SegmentIndexData): Buffer {
  const subjectBytes = d.subjects.map((s) => Buffer.from(s));
  let subjLen = 0;
  for (const b of subjectBytes) subjLen += 2 + b.length;
  const n = d.batchSeq.length;
  const t = d.tombs.length / 2;
  const len = HEADER + n * BATCH_ENTRY + t * TOMB_ENTRY + d.span * RECORD_ENTRY + subjLen + 4;
  const buf = Buffer.alloc(len);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  writeU64(buf, d.firstSeq, 8);
  writeU64(buf, d.size, 16);
  writeU64(buf, d.lastBatchPos, 24);
  buf.writeUInt32LE(d.lastBatchCrc >>> 0, 32);
  buf.writeUInt32LE(n, 36);
  buf.writeUInt32LE(t, 40);
  buf.writeUInt32LE(d.span, 44);
  buf.writeUInt32LE(d.subjects.length, 48);
  let p = HEADER;
  for (let i = 0; i < n; i++, p += BATCH_ENTRY) {
    writeU64(buf, d.batchSeq[i], p);
    writeU64(buf, d.batchPos[i], p + 8);
    writeU64(buf, d.batchTime[i], p + 16);
    buf.writeUInt32LE(d.batchLen[i], p + 24);
    buf.writeUInt32LE(d.batchCount[i], p + 28);
  }
  for (let i = 0; i < t * 2; i++, p += 8) writeU64(buf, d.tombs[i], p);
  if (LITTLE_ENDIAN && (buf.byteOffset + p) % 4 === 0) {
    // The bulk of the file: 32-bit stores into a view rather than two checked writes per sequence.
    const words = new Uint32Array(buf.buffer, buf.byteOffset + p, d.span * 2);
    for (let i = 0; i < d.span; i++) {
      words[2 * i] = d.sid[i];
      words[2 * i + 1] = d.size_[i];
    }
    p += d.span * RECORD_ENTRY;
  } else {
    for (let i = 0; i < d.span; i++, p += RECORD_ENTRY) {
      buf.writeInt32LE(d.sid[i], p);
      buf.writeUInt32LE(d.size_[i], p + 4);
    }
  }
  for (const b of subjectBytes) {
    buf.writeUInt16LE(b.length, p);
    b.copy(buf, p + 2);
    p += 2 + b.length;
  }
  buf.writeUInt32LE(crc32c(buf, 0, p), p);
  return buf;
}

/** The decoded index, or why it cannot be used. */
export function decodeSegmentIndex(buf: Buffer): SegmentIndexData | string {
  if (buf.length < HEADER + 4) return "short";
  if (buf.readUInt32LE(0) !== MAGIC) return "not an index";
  if (buf.readUInt32LE(4) !== VERSION) return "unknown version";
  if (crc32c(buf, 0, buf.length - 4) !== buf.readUInt32LE(buf.length - 4)) return "checksum mismatch";
  const n = buf.readUInt32LE(36);
  const t = buf.readUInt32LE(40);
  const span = buf.readUInt32LE(44);
  const nSubjects = buf.readUInt32LE(48);
  let p = HEADER;
  if (p + n * BATCH_ENTRY + t * TOMB_ENTRY + span * RECORD_ENTRY > buf.length - 4) return "sections do not fit";
  const batchSeq: number[] = [];
  const batchPos: number[] = [];
  const batchTime: number[] = [];
  const batchLen: number[] = [];
  const batchCount: number[] = [];
  for (let i = 0; i < n; i++, p += BATCH_ENTRY) {
    batchSeq.push(readU64(buf, p));
    batchPos.push(readU64(buf, p + 8));
    batchTime.push(readU64(buf, p + 16));
    batchLen.push(buf.readUInt32LE(p + 24));
    batchCount.push(buf.readUInt32LE(p + 28));
  }
  const tombs: number[] = [];
  for (let i = 0; i < t * 2; i++, p += 8) tombs.push(readU64(buf, p));
  const sid = new Int32Array(span);
  const size_ = new Uint32Array(span);
  for (let i = 0; i < span; i++, p += RECORD_ENTRY) {
    sid[i] = buf.readInt32LE(p);
    size_[i] = buf.readUInt32LE(p + 4);
  }
  const subjects: string[] = [];
  for (let i = 0; i < nSubjects; i++) {
    if (p + 2 > buf.length - 4) return "subjects do not fit";
    const l = buf.readUInt16LE(p);
    if (p + 2 + l > buf.length - 4) return "subjects do not fit";
    subjects.push(buf.toString("utf8", p + 2, p + 2 + l));
    p += 2 + l;
  }
  if (p !== buf.length - 4) return "trailing bytes";
  for (let i = 0; i < span; i++) if (sid[i] >= nSubjects) return "subject out of range";
  return {
    firstSeq: readU64(buf, 8),
    size: readU64(buf, 16),
    lastBatchPos: readU64(buf, 24),
    lastBatchCrc: buf.readUInt32LE(32),
    batchSeq,
    batchCount,
    batchPos,
    batchLen,
    batchTime,
    tombs,
    span,
    sid,
    size_,
    subjects,
  };
}
