/**
 * What the file log knows of its messages without reading them, kept per
 * segment so that memory does not grow with the number of messages stored
 * (Kafka keeps a sparse index on disk; nats-server's filestore loads per
 * block what it needs). Two levels:
 *
 * - a summary of every segment, always in memory: live count and bytes, the
 *   first live sequence, the time range, its tombstones, and its live count
 *   per subject. Log-wide per subject: count, first and last.
 * - a segment's detail (per batch: first sequence, count, position, length,
 *   time; per sequence: subject and size), loaded from its index file when a
 *   query needs it and dropped again, least recently used first, when the
 *   details loaded in the process pass their budget. The newest segment's
 *   detail stays (appends land there), and so does one whose index file is
 *   not up to date yet, until maintenance writes it.
 *
 * Loading is synchronous (a positional read of the index file): queries
 * such as a consumer's pending count are answered at once.
 */

import { BATCH_HEADER, foreignShare } from "./format.js";
import type { CorruptRange, Limits, LogState, LostRange, PurgeOptions } from "./log.js";
import { DEAD, evictOverLimits, liveSubjectIds, SubjectTable, toRanges } from "./log-index.js";

export { DEAD };

function grownF64(a: Float64Array, min: number): Float64Array {
  const b = new Float64Array(Math.max(min, a.length * 2));
  b.set(a);
  return b;
}

function grownU32(a: Uint32Array, min: number): Uint32Array {
  const b = new Uint32Array(Math.max(min, a.length * 2));
  b.set(a);
  return b;
}

/** Per batch and per sequence: what one segment holds, in typed arrays. */
export class SegmentDetail {
  nb = 0;
  bSeq: Float64Array;
  bCount: Uint32Array;
  bPos: Float64Array;
  bLen: Uint32Array;
  bTime: Float64Array;
  /** Per batch, the newest time a record of it carries (its own, for a foreign batch; else bTime). */
  bNewest: Float64Array;
  /** Sequences firstSeq .. firstSeq + span - 1 have entries. */
  span = 0;
  sid: Int32Array;
  size: Uint32Array;

  constructor(
    readonly firstSeq: number,
    batches = 4,
    seqs = 16,
  ) {
    this.bSeq = new Float64Array(batches);
    this.bCount = new Uint32Array(batches);
    this.bPos = new Float64Array(batches);
    this.bLen = new Uint32Array(batches);
    this.bTime = new Float64Array(batches);
    this.bNewest = new Float64Array(batches);
    this.sid = new Int32Array(seqs).fill(DEAD);
    this.size = new Uint32Array(seqs);
  }

  /** Memory held, in bytes. */
  get bytes(): number {
    return this.bSeq.length * 40 + this.sid.length * 8 + 128;
  }

  addBatch(seq: number, count: number, pos: number, len: number, time: number, newest: number): void {
    const i = this.nb;
    if (i === this.bSeq.length) {
      this.bSeq = grownF64(this.bSeq, i + 1);
      this.bCount = grownU32(this.bCount, i + 1);
      this.bPos = grownF64(this.bPos, i + 1);
      this.bLen = grownU32(this.bLen, i + 1);
      this.bTime = grownF64(this.bTime, i + 1);
      this.bNewest = grownF64(this.bNewest, i + 1);
    }
    this.bSeq[i] = seq;
    this.bCount[i] = count;
    this.bPos[i] = pos;
    this.bLen[i] = len;
    this.bTime[i] = time;
    this.bNewest[i] = newest;
    this.nb = i + 1;
  }

  /** Records a stored sequence; sequences are put in ascending order. */
  put(seq: number, id: number, size: number): void {
    const k = seq - this.firstSeq;
    if (k >= this.sid.length) {
      const sid = new Int32Array(Math.max(k + 1, this.sid.length * 2)).fill(DEAD);
      sid.set(this.sid);
      this.sid = sid;
      this.size = grownU32(this.size, k + 1);
    }
    this.sid[k] = id;
    this.size[k] = size;
    if (k >= this.span) this.span = k + 1;
  }

  sidAt(seq: number): number {
    const k = seq - this.firstSeq;
    return k >= 0 && k < this.span ? this.sid[k] : DEAD;
  }

  sizeAt(seq: number): number {
    const k = seq - this.firstSeq;
    return k >= 0 && k < this.span && this.sid[k] !== DEAD ? this.size[k] : 0;
  }

  /** Index of the data batch holding `seq`, or -1. */
  batchOf(seq: number): number {
    let lo = 0;
    let hi = this.nb - 1;
    if (hi < 0 || seq < this.bSeq[0]) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.bSeq[mid] <= seq) lo = mid;
      else hi = mid - 1;
    }
    return seq < this.bSeq[lo] + this.bCount[lo] ? lo : -1;
  }

  /** Whether any sequence in [a, b] is physically in this segment. */
  holdsAny(a: number, b: number): boolean {
    if (this.nb === 0) return false;
    let lo = 0;
    let hi = this.nb - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.bSeq[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    for (let i = lo; i < this.nb && this.bSeq[i] <= b; i++) {
      if (this.bSeq[i] + this.bCount[i] - 1 >= a) return true;
    }
    return false;
  }

  /** The first batch stored at or after `time`, or -1. */
  batchAtOrAfter(time: number): number {
    if (this.nb === 0 || this.bTime[this.nb - 1] < time) return -1;
    let lo = 0;
    let hi = this.nb - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.bTime[mid] >= time) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** The first batch ending after `from` whose newest record time is at or after `time`, or -1. */
  batchStampedAtOrAfter(time: number, from: number): number {
    // The first batch ending after `from` (batches are in sequence order), then on to one new enough.
    let lo = 0;
    let hi = this.nb;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.bSeq[mid] + this.bCount[mid] > from) hi = mid;
      else lo = mid + 1;
    }
    for (let b = lo; b < this.nb; b++) if (this.bNewest[b] >= time) return b;
    return -1;
  }
}

/** One segment file: its summary, and its detail when loaded. */
export class Segment {
  /** Highest sequence of a data batch in this file (firstSeq - 1 if none). */
  lastSeq: number;
  /** End of the last good batch: where the next one goes. */
  size = 0;
  /** Record bytes physically present, and of them those still live. */
  recordBytes = 0;
  /** Of the dead record bytes, those its last compaction kept (the first records of a foreign batch kept whole). */
  keptDead = 0;
  liveBytes = 0;
  live = 0;
  /** Lowest live sequence, 0 if none. */
  firstLive = 0;
  /** Data batches in the file, and the times of the first and last. */
  batches = 0;
  firstTime = 0;
  lastTime = 0;
  /** The newest time a record of its batches carries (SegmentDetail.bNewest); an upper bound once records are deleted. */
  newestRecordTime = -Infinity;
  /** Tombstone ranges stored in this file, and per range the stamp of its batch. */
  readonly tombs: number[] = [];
  readonly tombStamps: number[] = [];
  /** The highest next sequence a tombstone batch of this file names (0 if none). */
  tombNext = 0;
  /** Live messages per subject id. */
  readonly subjects = new Map<number, number>();
  detail: SegmentDetail | null;
  lastBatchPos = 0;
  lastBatchCrc = 0;
  createdAt = Date.now();
  /** Its .idx on disk describes exactly this file and which of its messages live. */
  indexed = false;
  /** The highest tombstone stamp whose deletes the liveness on disk (its .idx) reflects. */
  horizon = 0;
  /**
   * What its .idx on disk says followed it (IndexSummary.followedBy): the next segment's first sequence, 0 if none
   * (written while it was the newest, or no index on disk), -1 if the index predates the field.
   */
  followedOnDisk = 0;
  /** Every message was removed while the detail was not loaded: it is applied when it is. */
  allDead = false;
  /** Appends land here: the detail is never dropped. */
  pinned = false;
  /** Unreadable ranges were found: it is rewritten (compacted) without them. */
  damaged = false;
  /** Reads in flight; a retired (replaced) segment's file is closed when they end. */
  users = 0;
  retired = false;
  /** When the detail was last used (the cache's clock). */
  touched = 0;
  /** Counts changes to what the index file describes: an index written across a change is not current. */
  changes = 0;
  /** `changes` when compaction wrote this file: while equal, nothing in it went since, and compacting it again gives the same file. */
  compactedAt = -1;

  constructor(
    readonly name: string,
    readonly firstSeq: number,
    public fh: import("../util/fs.js").StoreFile,
  ) {
    this.lastSeq = firstSeq - 1;
    this.detail = new SegmentDetail(firstSeq);
  }

  /** A data batch was stored (or found on open): its place in the summary and the detail. */
  addBatch(d: SegmentDetail, firstSeq: number, count: number, pos: number, len: number, time: number, newest: number): void {
    d.addBatch(firstSeq, count, pos, len, time, newest);
    if (this.batches === 0) this.firstTime = time;
    this.batches++;
    this.lastTime = time;
    this.newestRecordTime = Math.max(this.newestRecordTime, newest);
    this.lastSeq = Math.max(this.lastSeq, firstSeq + count - 1);
    this.recordBytes += len - BATCH_HEADER;
    this.markChanged();
  }

  endBatch(pos: number, len: number, crc: number): void {
    this.size = pos + len;
    this.lastBatchPos = pos;
    this.lastBatchCrc = crc;
    this.markChanged();
  }

  /** Its index file no longer describes it. */
  markChanged(): void {
    this.indexed = false;
    this.changes++;
  }
}

/**
 * The details loaded in this process, against one memory budget. Dropping a
 * detail only drops a cached copy of its index file; a detail that differs
 * from its file is kept until maintenance has written it.
 */
class DetailCache {
  budget = Number(process.env.NAGARE_DETAIL_BUDGET ?? 64 * 1024 * 1024);
  bytes = 0;
  clock = 0;
  private readonly loaded = new Map<Segment, number>();
  /** Owners told when only unwritten details are left to drop. */
  private readonly pressure = new Map<Segment, () => void>();

  note(seg: Segment, bytes: number, onPressure: () => void): void {
    const before = this.loaded.get(seg) ?? 0;
    this.loaded.set(seg, bytes);
    this.pressure.set(seg, onPressure);
    this.bytes += bytes - before;
  }

  forget(seg: Segment): void {
    const before = this.loaded.get(seg);
    if (before === undefined) return;
    this.loaded.delete(seg);
    this.pressure.delete(seg);
    this.bytes -= before;
  }

  /** Drops clean details, least recently used first, until within budget (or only pinned and unwritten ones are left). */
  trim(keep: Segment | null): void {
    if (this.bytes <= this.budget) return;
    const victims: Segment[] = [];
    const owners = new Set<() => void>();
    for (const seg of this.loaded.keys()) {
      if (seg === keep || seg.pinned) continue;
      if (seg.indexed && !seg.allDead) victims.push(seg);
      else owners.add(this.pressure.get(seg)!);
    }
    victims.sort((a, b) => a.touched - b.touched);
    for (const seg of victims) {
      if (this.bytes <= this.budget) return;
      seg.detail = null;
      this.forget(seg);
    }
    for (const o of owners) o();
  }
}

export const detailCache = new DetailCache();

/** Reads a segment's detail from its index file (synchronously); throws if it cannot. */
export type DetailLoader = (seg: Segment) => SegmentDetail;

export class PagedIndex {
  messages = 0;
  bytes = 0;
  /** Messages removed so far (any cause): lets readers tell that cached counts went stale. */
  removals = 0;
  readonly table = new SubjectTable();
  /** The segment found by the last lookup: reads and removals move along one at a time. */
  private hint: Segment | null = null;

  constructor(
    public segments: Segment[],
    private loader: DetailLoader,
    /** Told that details wait for their index files to be written before memory can be freed. */
    private onPressure: () => void,
  ) {}

  /** Serves another owner (a failed log reopened from disk adopts the index a fresh recovery built). */
  rebind(segments: Segment[], loader: DetailLoader, onPressure: () => void): void {
    this.segments = segments;
    this.loader = loader;
    this.onPressure = onPressure;
    for (const seg of segments) this.noteDetail(seg);
  }

  // ---- segments and details ----

  segmentOf(seq: number): Segment | null {
    const h = this.hint;
    if (h !== null && !h.retired && seq >= h.firstSeq && seq <= h.lastSeq) return h;
    const segs = this.segments;
    if (segs.length === 0 || seq < segs[0].firstSeq) return null;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (segs[mid].firstSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const seg = segs[lo];
    if (seq > seg.lastSeq) return null;
    this.hint = seg;
    return seg;
  }

  private indexOfSegment(seg: Segment): number {
    const segs = this.segments;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (segs[mid].firstSeq <= seg.firstSeq) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The segment's detail, loaded from its index file if it is not in memory. */
  detail(seg: Segment): SegmentDetail {
    seg.touched = ++detailCache.clock;
    let d = seg.detail;
    if (d !== null) return d;
    d = this.loader(seg);
    seg.detail = d;
    if (seg.allDead) {
      d.sid.fill(DEAD);
      seg.allDead = false;
    }
    detailCache.note(seg, d.bytes, this.onPressure);
    detailCache.trim(seg);
    return d;
  }

  /** Tells the cache what a detail now holds (it grew, or was built anew). */
  noteDetail(seg: Segment): void {
    if (seg.detail !== null) detailCache.note(seg, seg.detail.bytes, this.onPressure);
  }

  /** Drops a segment (removed or replaced by compaction). */
  forgetSegment(seg: Segment): void {
    detailCache.forget(seg);
    if (this.hint === seg) this.hint = null;
  }

  /** Frees what memory allows, now that index files were written. */
  trimDetails(): void {
    detailCache.trim(null);
  }

  // ---- per sequence ----

  sidAt(seq: number): number {
    const seg = this.segmentOf(seq);
    if (seg === null || seg.live === 0) return DEAD;
    return this.detail(seg).sidAt(seq);
  }

  sizeAt(seq: number): number {
    const seg = this.segmentOf(seq);
    if (seg === null || seg.live === 0) return 0;
    return this.detail(seg).sizeAt(seq);
  }

  /** Records a message just stored in `seg` (the newest segment); `seq` is above every sequence added before. */
  add(seg: Segment, d: SegmentDetail, seq: number, id: number, size: number): void {
    d.put(seq, id, size);
    if (seg.live++ === 0) seg.firstLive = seq;
    seg.liveBytes += size;
    seg.subjects.set(id, (seg.subjects.get(id) ?? 0) + 1);
    if (this.table.count[id]++ === 0) {
      this.table.first[id] = seq;
      this.table.live++;
    }
    this.table.last[id] = seq;
    this.messages++;
    this.bytes += size;
  }

  /**
   * add() for the `count` records of a foreign batch stored in `bytes` bytes
   * (each its foreignShare of them), all of subject `id`: one update of the
   * subject counts for the run, not one per record.
   */
  addShared(seg: Segment, d: SegmentDetail, firstSeq: number, count: number, id: number, bytes: number): void {
    for (let i = 0; i < count; i++) d.put(firstSeq + i, id, foreignShare(bytes, count, i));
    if (seg.live === 0) seg.firstLive = firstSeq;
    seg.live += count;
    seg.liveBytes += bytes;
    seg.subjects.set(id, (seg.subjects.get(id) ?? 0) + count);
    if (this.table.count[id] === 0) {
      this.table.first[id] = firstSeq;
      this.table.live++;
    }
    this.table.count[id] += count;
    this.table.last[id] = firstSeq + count - 1;
    this.messages += count;
    this.bytes += bytes;
  }

  /** Removes a live message; false if `seq` was not live. */
  remove(seq: number): boolean {
    const seg = this.segmentOf(seq);
    if (seg === null || seg.live === 0) return false;
    const d = this.detail(seg);
    const k = seq - d.firstSeq;
    if (k < 0 || k >= d.span) return false;
    const id = d.sid[k];
    if (id === DEAD) return false;
    const size = d.size[k];
    d.sid[k] = DEAD;
    seg.markChanged();
    seg.live--;
    seg.liveBytes -= size;
    const inSeg = (seg.subjects.get(id) ?? 1) - 1;
    if (inSeg === 0) seg.subjects.delete(id);
    else seg.subjects.set(id, inSeg);
    if (seg.firstLive === seq) seg.firstLive = seg.live === 0 ? 0 : this.nextLiveIn(d, seq + 1, seg.lastSeq);
    this.messages--;
    this.bytes -= size;
    this.removals++;
    const left = --this.table.count[id];
    if (left === 0) {
      this.table.live--;
      this.table.release(id);
    } else if (left === 1) {
      // One left: it is whichever end was not removed.
      if (this.table.first[id] === seq) this.table.first[id] = this.table.last[id];
      else this.table.last[id] = this.table.first[id];
    } else {
      if (this.table.first[id] === seq) this.table.first[id] = this.nextOfSubject(id, seq, seg);
      if (this.table.last[id] === seq) this.table.last[id] = this.prevOfSubject(id, seq, seg);
    }
    return true;
  }

  private nextLiveIn(d: SegmentDetail, from: number, to: number): number {
    const end = Math.min(to, d.firstSeq + d.span - 1);
    for (let s = Math.max(from, d.firstSeq); s <= end; s++) if (d.sid[s - d.firstSeq] !== DEAD) return s;
    return 0;
  }

  /** The first live message of subject `id` after `seq` (which is in `seg`); one exists. */
  private nextOfSubject(id: number, seq: number, seg: Segment): number {
    const segs = this.segments;
    for (let i = this.indexOfSegment(seg); i < segs.length; i++) {
      const s = segs[i];
      if (!s.subjects.has(id)) continue;
      const d = this.detail(s);
      const end = d.firstSeq + d.span;
      for (let q = Math.max(seq + 1, d.firstSeq); q < end; q++) if (d.sid[q - d.firstSeq] === id) return q;
    }
    return this.table.last[id];
  }

  /** The last live message of subject `id` before `seq`; one exists. */
  private prevOfSubject(id: number, seq: number, seg: Segment): number {
    for (let i = this.indexOfSegment(seg); i >= 0; i--) {
      const s = this.segments[i];
      if (!s.subjects.has(id)) continue;
      const d = this.detail(s);
      for (let q = Math.min(seq - 1, d.firstSeq + d.span - 1); q >= d.firstSeq; q--) if (d.sid[q - d.firstSeq] === id) return q;
    }
    return this.table.first[id];
  }

  /**
   * Removes every live message in [from, to]; how many. A segment the range
   * covers whole is emptied from its summary, without loading its detail.
   */
  removeRange(from: number, to: number): number {
    let removed = 0;
    const segs = this.segments;
    if (segs.length === 0) return 0;
    const startSeg = this.segmentOf(from);
    let i = startSeg === null ? (from < segs[0].firstSeq ? 0 : segs.length) : this.indexOfSegment(startSeg);
    if (startSeg === null && from >= segs[0].firstSeq) {
      // `from` is in a gap between segments: start at the first segment after it.
      i = segs.findIndex((s) => s.firstSeq > from);
      if (i < 0) return 0;
    }
    for (; i < segs.length && segs[i].firstSeq <= to; i++) {
      const seg = segs[i];
      if (seg.live === 0) continue;
      if (from <= seg.firstSeq && to >= seg.lastSeq && seg.detail === null) {
        removed += this.emptySegment(seg);
        continue;
      }
      const d = this.detail(seg);
      const a = Math.max(from, seg.firstLive);
      const b = Math.min(to, d.firstSeq + d.span - 1);
      for (let s = a; s <= b && seg.live > 0; s++) {
        if (d.sid[s - d.firstSeq] !== DEAD && this.remove(s)) removed++;
      }
    }
    return removed;
  }

  /** Removes all of a segment whose detail is not loaded, from its summary alone. */
  private emptySegment(seg: Segment): number {
    const n = seg.live;
    const touched: number[] = [];
    for (const [id, c] of seg.subjects) {
      this.table.count[id] -= c;
      touched.push(id);
    }
    seg.subjects.clear();
    this.messages -= n;
    this.bytes -= seg.liveBytes;
    this.removals += n;
    seg.live = 0;
    seg.liveBytes = 0;
    seg.firstLive = 0;
    seg.allDead = true;
    seg.markChanged();
    for (const id of touched) {
      if (this.table.count[id] === 0) {
        this.table.live--;
        this.table.release(id);
        continue;
      }
      // Its first or last may have been in this segment: look again outside it.
      if (this.table.first[id] >= seg.firstSeq && this.table.first[id] <= seg.lastSeq) this.table.first[id] = this.nextOfSubject(id, seg.lastSeq, seg);
      if (this.table.last[id] >= seg.firstSeq && this.table.last[id] <= seg.lastSeq) this.table.last[id] = this.prevOfSubject(id, seg.firstSeq, seg);
    }
    return n;
  }

  /** Lowest live sequence, 0 if none. */
  firstLive(): number {
    for (const seg of this.segments) if (seg.live > 0) return seg.firstLive;
    return 0;
  }

  // ---- queries ----

  /** Whether `seg` holds a live message matching `filter` (undefined: any), from its summary. */
  private segmentMatches(seg: Segment, filter: string | undefined, literal: number): boolean {
    if (seg.live === 0) return false;
    if (filter === undefined) return true;
    if (literal >= 0) return seg.subjects.has(literal);
    for (const id of seg.subjects.keys()) if (this.table.matchesId(filter, id)) return true;
    return false;
  }

  /** The first live sequence after `after` whose subject matches `filter`, or 0. */
  nextMatch(after: number, filter?: string): number {
    if (filter === ">") filter = undefined;
    const literal = this.table.literalId(filter);
    if (literal === -2) return 0;
    if (literal >= 0) {
      if (after >= this.table.last[literal]) return 0;
      if (after < this.table.first[literal]) return this.table.first[literal];
    }
    const segs = this.segments;
    let i = 0;
    const at = this.segmentOf(after + 1);
    if (at !== null) i = this.indexOfSegment(at);
    else while (i < segs.length && segs[i].lastSeq <= after) i++;
    for (; i < segs.length; i++) {
      const seg = segs[i];
      if (!this.segmentMatches(seg, filter, literal)) continue;
      const d = this.detail(seg);
      const end = d.firstSeq + d.span;
      for (let s = Math.max(after + 1, seg.firstLive); s < end; s++) {
        const id = d.sid[s - d.firstSeq];
        if (id === DEAD) continue;
        if (filter === undefined || (literal >= 0 ? id === literal : this.table.matchesId(filter, id))) return s;
      }
    }
    return 0;
  }

  /**
   * Dead sequences in [from, to], ascending, at most `max`: those marked so
   * in a segment's detail, every sequence of a segment with nothing live,
   * and the sequences no segment holds (gaps, the tail a purge skipped).
   */
  deadBetween(from: number, to: number, max: number): number[] {
    const out: number[] = [];
    let s = from;
    for (const seg of this.segments) {
      if (out.length >= max || s > to) break;
      if (seg.lastSeq < s) continue;
      for (; s < seg.firstSeq && s <= to && out.length < max; s++) out.push(s);
      const end = Math.min(seg.lastSeq, to);
      if (seg.live === 0) {
        for (; s <= end && out.length < max; s++) out.push(s);
        continue;
      }
      const d = this.detail(seg);
      for (; s <= end && out.length < max; s++) if (d.sidAt(s) === DEAD) out.push(s);
    }
    for (; s <= to && out.length < max; s++) out.push(s);
    return out;
  }

  /** Live messages after `after` matching `filter`. */
  countAfter(after: number, filter?: string): number {
    if (filter === ">") filter = undefined;
    const literal = this.table.literalId(filter);
    if (literal === -2) return 0;
    const first = this.firstLive();
    if (first === 0) return 0;
    if (after < first) return this.table.countMatching(filter, this.messages);
    let n = 0;
    for (const seg of this.segments) {
      if (seg.lastSeq <= after || seg.live === 0) continue;
      if (seg.firstLive > after) {
        // Wholly after: from the summary.
        if (filter === undefined) n += seg.live;
        else if (literal >= 0) n += seg.subjects.get(literal) ?? 0;
        else for (const [id, c] of seg.subjects) if (this.table.matchesId(filter, id)) n += c;
        continue;
      }
      const d = this.detail(seg);
      const end = d.firstSeq + d.span;
      for (let s = after + 1; s < end; s++) {
        const id = d.sid[s - d.firstSeq];
        if (id !== DEAD && (filter === undefined || (literal >= 0 ? id === literal : this.table.matchesId(filter, id)))) n++;
      }
    }
    return n;
  }

  /**
   * The sequences a purge removes, as inclusive ranges [a0, b0, a1, b1, ...].
   * A range may span dead sequences, never a live one that stays.
   */
  planPurge(opts: PurgeOptions, high: number): number[] {
    const filter = opts.filter === ">" ? undefined : opts.filter;
    const upTo = opts.upTo !== undefined && opts.upTo > 0 ? opts.upTo : Infinity; // exclusive
    const keep = opts.keep !== undefined && opts.keep > 0 ? opts.keep : 0;
    const lo = this.firstLive();
    if (lo === 0) return [];
    if (filter === undefined) {
      let to = Math.min(high, upTo - 1);
      if (keep > 0) {
        const from = this.nthFromEnd(keep, undefined);
        if (from === 0) return [];
        to = Math.min(to, from - 1);
      }
      return to >= lo ? [lo, to] : [];
    }
    // The newest `keep` matching messages stay, whatever `upTo` says.
    let keepFrom = Infinity;
    if (keep > 0) {
      const from = this.nthFromEnd(keep, filter);
      if (from === 0) return [];
      keepFrom = from;
    }
    const bound = Math.min(upTo, keepFrom);
    const seqs: number[] = [];
    for (let s = this.nextMatch(lo - 1, filter); s !== 0 && s < bound; s = this.nextMatch(s, filter)) seqs.push(s);
    return this.toRanges(seqs);
  }

  /** The sequence of the n-th newest live message matching `filter`, or 0 if there are fewer. */
  private nthFromEnd(n: number, filter: string | undefined): number {
    const literal = this.table.literalId(filter);
    if (literal === -2) return 0;
    let left = n;
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const seg = this.segments[i];
      if (!this.segmentMatches(seg, filter, literal)) continue;
      let here = 0;
      if (filter === undefined) here = seg.live;
      else if (literal >= 0) here = seg.subjects.get(literal) ?? 0;
      else for (const [id, c] of seg.subjects) if (this.table.matchesId(filter, id)) here += c;
      if (here < left) {
        left -= here;
        continue;
      }
      const d = this.detail(seg);
      for (let s = d.firstSeq + d.span - 1; s >= d.firstSeq; s--) {
        const id = d.sid[s - d.firstSeq];
        if (id !== DEAD && (filter === undefined || (literal >= 0 ? id === literal : this.table.matchesId(filter, id))) && --left === 0) return s;
      }
    }
    return 0;
  }

  /** Sorted sequences to inclusive ranges, merging across dead sequences. */
  toRanges(seqs: readonly number[]): number[] {
    return toRanges(seqs, (seq) => this.sidAt(seq));
  }

  /**
   * Removes what the limits no longer allow (oldest first) after messages of
   * the subjects `touched` were added; the removed ranges (flat, inclusive).
   */
  evict(limits: Limits, touched: Iterable<number>): number[] {
    return this.toRanges(evictOverLimits(this, limits, touched));
  }

  /** Removes every live message below `cutoff`; the removed range (flat, inclusive), or none. */
  expireBefore(cutoff: number): number[] {
    const first = this.firstLive();
    if (first === 0 || cutoff <= first) return [];
    this.removeRange(first, cutoff - 1);
    return [first, cutoff - 1];
  }

  /** Applies `limits` to everything stored (on open and when limits change); the removed ranges. */
  enforce(limits: Limits): number[] {
    return this.evict(limits, (limits.maxMsgsPerSubject ?? 0) > 0 ? liveSubjectIds(this.table) : []);
  }

  /** The log's state. */
  state(lastSeq: number, corrupt: readonly CorruptRange[], lost: readonly LostRange[], error: string | null): LogState {
    const first = this.firstLive();
    const firstSeq = first === 0 ? lastSeq + 1 : first;
    return {
      firstSeq,
      lastSeq,
      messages: this.messages,
      bytes: this.bytes,
      subjects: this.table.live,
      deleted: first === 0 ? 0 : lastSeq - firstSeq + 1 - this.messages,
      corrupt: [...corrupt],
      lost: [...lost],
      error,
    };
  }

  // ---- recovery ----

  /**
   * After every segment's summary is in place (from index files or scans):
   * the log-wide counts, and each subject's first and last, from the
   * summaries. `bounds` gives a segment's per-subject first and last as its
   * index file recorded them, or null to take them from its detail.
   */
  finishLoad(bounds: (seg: Segment) => Map<number, [number, number]> | null): void {
    this.messages = 0;
    this.bytes = 0;
    this.table.resetCounts();
    for (const seg of this.segments) {
      this.messages += seg.live;
      this.bytes += seg.liveBytes;
      if (seg.live === 0) continue;
      let known = seg.detail === null ? bounds(seg) : null;
      if (known === null) known = this.boundsFromDetail(seg);
      for (const [id, c] of seg.subjects) {
        const b = known.get(id)!;
        if (this.table.count[id] === 0) this.table.first[id] = b[0];
        this.table.last[id] = b[1];
        this.table.count[id] += c;
      }
    }
    for (let id = 0; id < this.table.size; id++) if (this.table.count[id] > 0) this.table.live++;
    this.table.releaseDead();
  }

  private boundsFromDetail(seg: Segment): Map<number, [number, number]> {
    const d = this.detail(seg);
    const out = new Map<number, [number, number]>();
    for (let k = 0; k < d.span; k++) {
      const id = d.sid[k];
      if (id === DEAD) continue;
      const b = out.get(id);
      if (b === undefined) out.set(id, [d.firstSeq + k, d.firstSeq + k]);
      else b[1] = d.firstSeq + k;
    }
    return out;
  }

  /**
   * Recomputes a segment's summary (live count and bytes, first live, per
   * subject counts) from its detail: after a scan, or after tombstones were
   * applied to it on open.
   */
  summarize(seg: Segment): void {
    const d = this.detail(seg);
    seg.live = 0;
    seg.liveBytes = 0;
    seg.firstLive = 0;
    seg.subjects.clear();
    for (let k = 0; k < d.span; k++) {
      const id = d.sid[k];
      if (id === DEAD) continue;
      if (seg.live++ === 0) seg.firstLive = d.firstSeq + k;
      seg.liveBytes += d.size[k];
      seg.subjects.set(id, (seg.subjects.get(id) ?? 0) + 1);
    }
  }

  /** Marks dead, in a loaded detail, the sequences of [from, to] it holds (tombstones on open). */
  kill(seg: Segment, from: number, to: number): boolean {
    const d = this.detail(seg);
    let changed = false;
    const a = Math.max(from, d.firstSeq);
    const b = Math.min(to, d.firstSeq + d.span - 1);
    for (let s = a; s <= b; s++) {
      if (d.sid[s - d.firstSeq] !== DEAD) {
        d.sid[s - d.firstSeq] = DEAD;
        changed = true;
      }
    }
    if (changed) seg.markChanged();
    return changed;
  }
}
