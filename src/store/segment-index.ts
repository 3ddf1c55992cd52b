/**
 * The index file beside each segment (`<segment>.idx`), in two parts so that
 * opening a log reads little: a summary (counts, time range, tombstones,
 * per-subject count, first and last) read on open, and a detail (per batch:
 * first sequence, position, time, length, count; per sequence: subject and
 * size) read only when a query needs it. Each part has its own checksum.
 * Layout in docs/ARCHITECTURE.md, "Storage". An index is trusted only if its
 * checksums hold and the batch it names as the segment's last is really there.
 */

import { crc32c } from "../util/crc32c.js";
import { readU64, writeU64 } from "./format.js";
import { DEAD, SegmentDetail, type Segment } from "./paged-index.js";

const MAGIC = 0x5849474e; // "NGIX"
/**
 * 3 added each batch's newest record time (and the segment's); an index of 2 is rebuilt from its segment. 4 added
 * keptDead at the summary's end; an index of 3 is read as keeping none. 5 added followedBy after it; an index of 3 or 4
 * is read as not saying (-1). (Code before 5 rebuilds a 5 from its segment, with a warning: a downgrade costs a scan.)
 */
const VERSION = 5;
const KEPT_DEAD_SINCE = 4;
const FOLLOWED_SINCE = 5;
const OLDEST_READ = 3;
export const INDEX_HEADER = 144;
const BATCH_ENTRY = 40;
const TOMB_ENTRY = 24;
/** Where the header's own checksum is: it covers the bytes before it. */
const HEADER_CRC = 140;
const RECORD_ENTRY = 8;

/** What the summary part holds; subject ids are the file's own (0..m-1). */
export interface IndexSummary {
  firstSeq: number;
  size: number;
  lastBatchPos: number;
  lastBatchCrc: number;
  batches: number;
  span: number;
  live: number;
  lastSeq: number;
  firstLive: number;
  liveBytes: number;
  recordBytes: number;
  /** Of recordBytes, dead records a compaction kept inside foreign batches it kept (0 in files of versions before it was written). */
  keptDead: number;
  firstTime: number;
  lastTime: number;
  newestRecordTime: number;
  horizon: number;
  /** The highest next sequence a tombstone batch of the segment names (0 if none). */
  tombNext: number;
  /**
   * The name (first sequence) of the segment that followed this one when the index was written: no other file held
   * sequences from this one's name up to it. 0 if none did (it was the newest), -1 if the file predates the field.
   */
  followedBy: number;
  subjects: string[];
  subjectCount: number[];
  subjectFirst: number[];
  subjectLast: number[];
  tombs: number[];
  tombStamps: number[];
  /** Where the detail part starts, its length and checksum. */
  detailAt: number;
  detailLen: number;
  detailCrc: number;
}

/** An encoded index file, and what a later load of its detail needs to know. */
export interface EncodedIndex {
  buf: Buffer;
  names: string[];
  detailAt: number;
  detailLen: number;
  detailCrc: number;
}

/**
 * The index file of `seg`, from its summary and loaded detail; `nameOf` names a subject id, `followedBy` the segment
 * that follows it (0: none, it is the newest).
 */
export function encodeSegmentIndex(seg: Segment, d: SegmentDetail, horizon: number, nameOf: (id: number) => string, followedBy: number): EncodedIndex {
  const { local, ids, count, first, last } = localSubjects(d);
  const names = ids.map((id) => Buffer.from(nameOf(id)));
  const t = seg.tombs.length / 2;
  let summaryLen = t * TOMB_ENTRY + 16;
  for (const n of names) summaryLen += 2 + n.length + 20;
  const detailLen = d.nb * BATCH_ENTRY + d.span * RECORD_ENTRY;
  const buf = Buffer.alloc(INDEX_HEADER + summaryLen + detailLen);
  let p = INDEX_HEADER;
  for (let l = 0; l < names.length; l++) {
    buf.writeUInt16LE(names[l].length, p);
    names[l].copy(buf, p + 2);
    p += 2 + names[l].length;
    buf.writeUInt32LE(count[l], p);
    writeU64(buf, first[l], p + 4);
    writeU64(buf, last[l], p + 12);
    p += 20;
  }
  for (let i = 0; i < t; i++, p += TOMB_ENTRY) {
    writeU64(buf, seg.tombs[2 * i], p);
    writeU64(buf, seg.tombs[2 * i + 1], p + 8);
    writeU64(buf, seg.tombStamps[i], p + 16);
  }
  writeU64(buf, seg.keptDead, p);
  writeU64(buf, followedBy, p + 8);
  p += 16;
  const detailAt = p;
  for (let i = 0; i < d.nb; i++, p += BATCH_ENTRY) {
    writeU64(buf, d.bSeq[i], p);
    writeU64(buf, d.bPos[i], p + 8);
    writeU64(buf, d.bTime[i], p + 16);
    buf.writeUInt32LE(d.bLen[i], p + 24);
    buf.writeUInt32LE(d.bCount[i], p + 28);
    buf.writeDoubleLE(d.bNewest[i], p + 32); // a record's own time may be negative (Kafka's -1)
  }
  p = writeRecordEntries(buf, p, d, local);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(VERSION, 4);
  writeU64(buf, seg.firstSeq, 8);
  writeU64(buf, seg.size, 16);
  writeU64(buf, seg.lastBatchPos, 24);
  buf.writeUInt32LE(seg.lastBatchCrc >>> 0, 32);
  buf.writeUInt32LE(d.nb, 36);
  buf.writeUInt32LE(t, 40);
  buf.writeUInt32LE(d.span, 44);
  buf.writeUInt32LE(names.length, 48);
  buf.writeUInt32LE(seg.live, 52);
  writeU64(buf, seg.lastSeq, 56);
  writeU64(buf, seg.firstLive, 64);
  writeU64(buf, seg.liveBytes, 72);
  writeU64(buf, seg.recordBytes, 80);
  writeU64(buf, seg.firstTime, 88);
  writeU64(buf, seg.lastTime, 96);
  writeU64(buf, horizon, 104);
  writeU64(buf, seg.tombNext, 112);
  buf.writeUInt32LE(summaryLen, 120);
  buf.writeUInt32LE(crc32c(buf, INDEX_HEADER, detailAt), 124);
  buf.writeUInt32LE(crc32c(buf, detailAt, detailAt + detailLen), 128);
  buf.writeDoubleLE(seg.newestRecordTime, 132);
  buf.writeUInt32LE(crc32c(buf, 0, HEADER_CRC), HEADER_CRC);
  return { buf, names: names.map((n) => n.toString("utf8")), detailAt, detailLen, detailCrc: buf.readUInt32LE(128) };
}

/*
 * The two walks over every record of a segment live in functions of their
 * own: called once per segment roll, a single large function kept being
 * compiled for its loop and thrown away at code its first run had not
 * reached (seven TurboFan compiles of it in 4 GB of produce).
 */

/** The live subjects of a detail in order of first use (numbered for the file by `local`), with their live count, first and last sequence. */
function localSubjects(d: SegmentDetail): { local: Map<number, number>; ids: number[]; count: number[]; first: number[]; last: number[] } {
  const local = new Map<number, number>();
  const ids: number[] = [];
  const count: number[] = [];
  const first: number[] = [];
  const last: number[] = [];
  // Records of one subject usually come in runs (a Kafka batch always is one).
  let prevId = DEAD;
  let l = -1;
  for (let k = 0; k < d.span; k++) {
    const id = d.sid[k];
    if (id === DEAD) continue;
    if (id !== prevId) {
      prevId = id;
      const known = local.get(id);
      if (known === undefined) {
        l = ids.length;
        local.set(id, l);
        ids.push(id);
        count.push(0);
        first.push(d.firstSeq + k);
        last.push(0);
      } else l = known;
    }
    count[l]++;
    last[l] = d.firstSeq + k;
  }
  return { local, ids, count, first, last };
}

/** Each sequence's entry (the file's subject number, -1 if deleted, and its size) from `p`; returns where they end. */
function writeRecordEntries(buf: Buffer, p: number, d: SegmentDetail, local: Map<number, number>): number {
  let prevId = DEAD;
  let l = -1;
  for (let k = 0; k < d.span; k++, p += RECORD_ENTRY) {
    const id = d.sid[k];
    if (id === DEAD) {
      buf.writeInt32LE(-1, p);
      buf.writeUInt32LE(0, p + 4);
      continue;
    }
    if (id !== prevId) {
      prevId = id;
      l = local.get(id)!;
    }
    buf.writeInt32LE(l, p);
    buf.writeUInt32LE(d.size[k], p + 4);
  }
  return p;
}

/** Length of the summary part that follows the header, or why the header cannot be used. */
export function summaryLength(header: Buffer): number | string {
  if (header.length < INDEX_HEADER) return "short";
  if (header.readUInt32LE(0) !== MAGIC) return "not an index";
  const version = header.readUInt32LE(4);
  if (version < OLDEST_READ || version > VERSION) return version < OLDEST_READ && version >= 1 ? `written in index version ${version}, before ${OLDEST_READ}` : "unknown version";
  if (crc32c(header, 0, HEADER_CRC) !== header.readUInt32LE(HEADER_CRC)) return "checksum mismatch";
  return header.readUInt32LE(120);
}

/** The summary from the file's first INDEX_HEADER + summaryLength bytes, or why it cannot be used. */
export function decodeSummary(buf: Buffer): IndexSummary | string {
  const summaryLen = summaryLength(buf);
  if (typeof summaryLen === "string") return summaryLen;
  const end = INDEX_HEADER + summaryLen;
  if (buf.length < end) return "short";
  if (crc32c(buf, INDEX_HEADER, end) !== buf.readUInt32LE(124)) return "checksum mismatch";
  const nb = buf.readUInt32LE(36);
  const t = buf.readUInt32LE(40);
  const span = buf.readUInt32LE(44);
  const m = buf.readUInt32LE(48);
  const subjects: string[] = [];
  const subjectCount: number[] = [];
  const subjectFirst: number[] = [];
  const subjectLast: number[] = [];
  let p = INDEX_HEADER;
  for (let l = 0; l < m; l++) {
    if (p + 2 > end) return "subjects do not fit";
    const len = buf.readUInt16LE(p);
    if (p + 2 + len + 20 > end) return "subjects do not fit";
    subjects.push(buf.toString("utf8", p + 2, p + 2 + len));
    p += 2 + len;
    subjectCount.push(buf.readUInt32LE(p));
    subjectFirst.push(readU64(buf, p + 4));
    subjectLast.push(readU64(buf, p + 12));
    p += 20;
  }
  const version = buf.readUInt32LE(4);
  const tail = (version >= KEPT_DEAD_SINCE ? 8 : 0) + (version >= FOLLOWED_SINCE ? 8 : 0);
  if (p + t * TOMB_ENTRY + tail !== end) return "sections do not fit";
  const tombs: number[] = [];
  const tombStamps: number[] = [];
  for (let i = 0; i < t; i++, p += TOMB_ENTRY) {
    tombs.push(readU64(buf, p), readU64(buf, p + 8));
    tombStamps.push(readU64(buf, p + 16));
  }
  const keptDead = version >= KEPT_DEAD_SINCE ? readU64(buf, p) : 0;
  const followedBy = version >= FOLLOWED_SINCE ? readU64(buf, p + 8) : -1;
  return {
    firstSeq: readU64(buf, 8),
    size: readU64(buf, 16),
    lastBatchPos: readU64(buf, 24),
    lastBatchCrc: buf.readUInt32LE(32),
    batches: nb,
    span,
    live: buf.readUInt32LE(52),
    lastSeq: readU64(buf, 56),
    firstLive: readU64(buf, 64),
    liveBytes: readU64(buf, 72),
    recordBytes: readU64(buf, 80),
    keptDead,
    firstTime: readU64(buf, 88),
    lastTime: readU64(buf, 96),
    newestRecordTime: buf.readDoubleLE(132),
    horizon: readU64(buf, 104),
    tombNext: readU64(buf, 112),
    followedBy,
    subjects,
    subjectCount,
    subjectFirst,
    subjectLast,
    tombs,
    tombStamps,
    detailAt: end,
    detailLen: nb * BATCH_ENTRY + span * RECORD_ENTRY,
    detailCrc: buf.readUInt32LE(128),
  };
}

/** What reading a detail part takes: where it is, its size and checksum, and its counts. */
export interface DetailPlace {
  firstSeq: number;
  batches: number;
  span: number;
  detailAt: number;
  detailLen: number;
  detailCrc: number;
}

/**
 * The detail part (bytes detailAt .. detailAt + detailLen of the file) as a
 * SegmentDetail, subjects mapped to the log's ids by `ids` (the file's id to
 * the log's), or why it cannot be used.
 */
export function decodeDetail(buf: Buffer, s: DetailPlace, ids: readonly number[]): SegmentDetail | string {
  if (buf.length !== s.detailLen) return "short";
  if (crc32c(buf, 0, buf.length) !== s.detailCrc) return "checksum mismatch";
  const d = new SegmentDetail(s.firstSeq, Math.max(1, s.batches), Math.max(1, s.span));
  let p = 0;
  for (let i = 0; i < s.batches; i++, p += BATCH_ENTRY) {
    d.addBatch(readU64(buf, p), buf.readUInt32LE(p + 28), readU64(buf, p + 8), buf.readUInt32LE(p + 24), readU64(buf, p + 16), buf.readDoubleLE(p + 32));
  }
  for (let k = 0; k < s.span; k++, p += RECORD_ENTRY) {
    const l = buf.readInt32LE(p);
    if (l >= ids.length) return "subject out of range";
    d.sid[k] = l < 0 ? DEAD : ids[l];
    d.size[k] = buf.readUInt32LE(p + 4);
  }
  d.span = s.span;
  return d;
}
