/**
 * A message log in segment files, with group commit: appends that arrive
 * while a write is in flight are written together next, as one batch, and
 * made durable with one fdatasync. An append is acknowledged only once its
 * batch is as durable as the sync policy says; readers never see a message
 * before that.
 */

import { promises as fsp, constants as fsc } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { subjectMatches } from "../subjects/subject.js";
import {
  BATCH_HEADER,
  checkBatch,
  decodeRecord,
  encodeBatch,
  forEachRecord,
  MAX_BATCH_BYTES,
  readBatchHeader,
  recordSize,
} from "./format.js";
import { refusal, SubjectIndex, type AppendCallback, type AppendInput, type CorruptRange, type LogState, type MessageLog, type StoredMessage, type SyncPolicy } from "./log.js";

export interface FileLogOptions {
  dir: string;
  sync?: SyncPolicy;
  /** For `interval`: the longest an acknowledged append stays only in the page cache. */
  syncIntervalMs?: number;
  maxSegmentBytes?: number;
  maxSegmentAgeMs?: number;
  /** The most bytes one group commit writes; later appends wait for the next. */
  maxBatchBytes?: number;
  /** Largest single record accepted. */
  maxRecordBytes?: number;
  /** Where recovery reports what it repaired or found unreadable. */
  onWarning?: (text: string) => void;
}

const SEGMENT_SUFFIX = ".seg";
const SCAN_CHUNK = 1024 * 1024;

/** One segment file and its in-memory index: every batch's first seq, position and time. */
class Segment {
  lastSeq: number;
  size = 0;
  bytes = 0; // record bytes, for state()
  readonly batchSeq: number[] = [];
  readonly batchPos: number[] = [];
  readonly batchLen: number[] = [];
  readonly batchTime: number[] = [];
  createdAt = Date.now();

  constructor(
    readonly name: string,
    readonly firstSeq: number,
    readonly fh: FileHandle,
  ) {
    this.lastSeq = firstSeq - 1;
  }

  addBatch(firstSeq: number, count: number, pos: number, len: number, time: number): void {
    this.batchSeq.push(firstSeq);
    this.batchPos.push(pos);
    this.batchLen.push(len);
    this.batchTime.push(time);
    this.lastSeq = firstSeq + count - 1;
    this.size = pos + len;
    this.bytes += len;
  }

  /** Index of the batch holding `seq` (which must be in this segment). */
  batchOf(seq: number): number {
    let lo = 0;
    let hi = this.batchSeq.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.batchSeq[mid] <= seq) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

interface Pending {
  input: AppendInput;
  size: number;
  done: AppendCallback;
}

export class FileLog implements MessageLog {
  private readonly segments: Segment[] = [];
  private readonly subjects = new SubjectIndex();
  private readonly corrupt: CorruptRange[] = [];
  private readonly sync: SyncPolicy;
  private readonly syncIntervalMs: number;
  private readonly maxSegmentBytes: number;
  private readonly maxSegmentAgeMs: number;
  private readonly maxBatchBytes: number;
  private readonly maxRecordBytes: number;
  private readonly warn: (text: string) => void;
  private readonly pending: Pending[] = [];
  private writing = false;
  private scheduled = false;
  private closed = false;
  private lastSeq = 0;
  private lastTime = 0;
  private messages = 0;
  private unsynced = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private idle: Array<() => void> = [];
  /** Batches written and fdatasyncs issued since open: how well group commit groups. */
  readonly io = { batches: 0, syncs: 0 };

  private constructor(readonly dir: string, opts: FileLogOptions) {
    this.sync = opts.sync ?? "always";
    this.syncIntervalMs = opts.syncIntervalMs ?? 1000;
    this.maxSegmentBytes = opts.maxSegmentBytes ?? 64 * 1024 * 1024;
    this.maxSegmentAgeMs = opts.maxSegmentAgeMs ?? 0;
    this.maxBatchBytes = Math.min(opts.maxBatchBytes ?? 4 * 1024 * 1024, MAX_BATCH_BYTES - BATCH_HEADER);
    this.maxRecordBytes = Math.min(opts.maxRecordBytes ?? 8 * 1024 * 1024, this.maxBatchBytes);
    this.warn = opts.onWarning ?? (() => {});
  }

  /** Opens (creating if needed) the log in `dir`, recovering what a crash left. */
  static async open(opts: FileLogOptions): Promise<FileLog> {
    const log = new FileLog(opts.dir, opts);
    await fsp.mkdir(opts.dir, { recursive: true });
    await log.recover();
    if (log.sync === "interval") {
      log.syncTimer = setInterval(() => void log.syncNow(), log.syncIntervalMs);
      log.syncTimer.unref();
    }
    return log;
  }

  // ---- appends ----

  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const refused = refusal(this.closed, size, this.maxRecordBytes);
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    this.pending.push({ input, size, done });
    if (!this.writing && !this.scheduled) {
      // Let the rest of this turn's appends join the batch.
      this.scheduled = true;
      setImmediate(this.writeLoop);
    }
  }

  private readonly writeLoop = (): void => {
    this.scheduled = false;
    if (this.writing) return;
    this.writing = true;
    void this.drain().finally(() => {
      this.writing = false;
      if (this.pending.length > 0 && !this.closed) {
        this.scheduled = true;
        setImmediate(this.writeLoop);
      } else {
        const w = this.idle;
        this.idle = [];
        for (const f of w) f();
      }
    });
  };

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.pending.length && (n === 0 || bytes + this.pending[n].size <= this.maxBatchBytes)) bytes += this.pending[n++].size;
      const batch = this.pending.splice(0, n);
      const firstSeq = this.lastSeq + 1;
      // Time never goes backwards within a log, so time lookups can bisect.
      const time = Math.max(Date.now(), this.lastTime);
      try {
        const seg = await this.segmentFor(firstSeq);
        const buf = encodeBatch(
          batch.map((p) => p.input),
          firstSeq,
          time,
          bytes,
        );
        const pos = seg.size;
        try {
          await writeFully(seg.fh, buf, pos);
          this.io.batches++;
          if (this.sync === "always") {
            await seg.fh.datasync();
            this.io.syncs++;
          } else this.unsynced = true;
        } catch (err) {
          // Leave no partial batch behind: the next one starts where this one did.
          await seg.fh.truncate(pos).catch(() => {});
          throw err;
        }
        seg.addBatch(firstSeq, n, pos, buf.length, time);
        this.lastSeq = firstSeq + n - 1;
        this.lastTime = time;
        this.messages += n;
        for (let i = 0; i < n; i++) this.subjects.note(batch[i].input.subject, firstSeq + i);
        for (let i = 0; i < n; i++) batch[i].done(null, firstSeq + i);
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const p of batch) p.done(e, 0);
      }
    }
  }

  /** The segment the next batch goes to, rolling to a new file when the current one is full or old. */
  private async segmentFor(firstSeq: number): Promise<Segment> {
    const cur = this.segments[this.segments.length - 1];
    if (
      cur !== undefined &&
      cur.size < this.maxSegmentBytes &&
      (this.maxSegmentAgeMs <= 0 || cur.batchSeq.length === 0 || Date.now() - cur.createdAt < this.maxSegmentAgeMs)
    ) {
      return cur;
    }
    if (cur !== undefined && this.sync !== "always") await cur.fh.datasync();
    return this.createSegment(firstSeq);
  }

  private async createSegment(firstSeq: number): Promise<Segment> {
    const name = segmentName(firstSeq);
    const fh = await fsp.open(join(this.dir, name), fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644);
    await syncDir(this.dir);
    const seg = new Segment(name, firstSeq, fh);
    this.segments.push(seg);
    return seg;
  }

  /** Makes everything written so far durable (the `interval` policy's timer calls this). */
  async syncNow(): Promise<void> {
    if (!this.unsynced) return;
    this.unsynced = false;
    const seg = this.segments[this.segments.length - 1];
    try {
      await seg?.fh.datasync();
    } catch (err) {
      this.unsynced = true;
      this.warn(`sync of ${this.dir} failed: ${(err as Error).message}`);
    }
  }

  // ---- reads ----

  state(): LogState {
    let bytes = 0;
    for (const s of this.segments) bytes += s.bytes;
    const first = this.segments.find((s) => s.lastSeq >= s.firstSeq);
    return {
      firstSeq: first ? first.firstSeq : this.lastSeq + 1,
      lastSeq: this.lastSeq,
      messages: this.messages,
      bytes,
      corrupt: [...this.corrupt],
    };
  }

  subjectCount(subject: string): number {
    return this.subjects.count(subject);
  }

  async get(seq: number): Promise<StoredMessage | null> {
    const seg = this.segmentOf(seq);
    if (seg === null) return null;
    const b = seg.batchOf(seq);
    const buf = await this.readBatch(seg, b);
    if (buf === null) return null;
    const hdr = readBatchHeader(buf, 0);
    let found: StoredMessage | null = null;
    forEachRecord(buf, 0, (i, _subject, at) => {
      if (hdr.firstSeq + i !== seq) return false;
      found = decodeRecord(buf, at, seq, hdr.time);
      return true;
    });
    return found;
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    let seq = after + 1;
    while (seq <= this.lastSeq) {
      const seg = this.segmentOf(seq);
      if (seg === null) {
        // A gap (quarantined or purged range): continue at the next segment that has data.
        const nextSeg = this.segments.find((s) => s.firstSeq > seq && s.lastSeq >= s.firstSeq);
        if (nextSeg === undefined) return null;
        seq = nextSeg.firstSeq;
        continue;
      }
      for (let b = seg.batchOf(seq); b < seg.batchSeq.length; b++) {
        const buf = await this.readBatch(seg, b);
        if (buf === null) continue;
        const hdr = readBatchHeader(buf, 0);
        let found: StoredMessage | null = null;
        forEachRecord(buf, 0, (i, subject, at) => {
          const s = hdr.firstSeq + i;
          if (s < seq || (filter !== undefined && !subjectMatches(filter, subject))) return false;
          found = decodeRecord(buf, at, s, hdr.time);
          return true;
        });
        if (found !== null) return found;
      }
      seq = seg.lastSeq + 1;
    }
    return null;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    for (const seg of this.segments) {
      const times = seg.batchTime;
      if (times.length === 0 || times[times.length - 1] < time) continue;
      let lo = 0;
      let hi = times.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (times[mid] >= time) hi = mid;
        else lo = mid + 1;
      }
      return this.get(seg.batchSeq[lo]);
    }
    return null;
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const last = this.subjects.last(subject);
    return last === 0 ? null : this.get(last);
  }

  private segmentOf(seq: number): Segment | null {
    if (seq < 1 || seq > this.lastSeq) return null;
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid].firstSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const seg = this.segments[lo];
    return seg !== undefined && seq >= seg.firstSeq && seq <= seg.lastSeq && seg.batchSeq.length > 0 ? seg : null;
  }

  /** Reads and verifies one batch; a batch that no longer verifies is reported and skipped. */
  private async readBatch(seg: Segment, b: number): Promise<Buffer | null> {
    const len = seg.batchLen[b];
    const buf = Buffer.allocUnsafe(len);
    const { bytesRead } = await seg.fh.read(buf, 0, len, seg.batchPos[b]);
    const problem = bytesRead < len ? "short" : checkBatch(buf, 0, len);
    if (problem !== null) {
      this.reportCorrupt(seg, seg.batchPos[b], `${problem} on read`);
      return null;
    }
    return buf;
  }

  private reportCorrupt(seg: Segment, position: number, reason: string): void {
    if (this.corrupt.some((c) => c.segment === seg.name && c.position === position)) return;
    this.corrupt.push({ segment: seg.name, position, reason });
    this.warn(`${join(this.dir, seg.name)} at ${position}: ${reason}`);
  }

  // ---- recovery ----

  private async recover(): Promise<void> {
    const names = (await fsp.readdir(this.dir)).filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const firstSeq = Number(name.slice(0, 20));
      const fh = await fsp.open(join(this.dir, name), fsc.O_RDWR);
      const seg = new Segment(name, firstSeq, fh);
      seg.createdAt = (await fh.stat()).mtimeMs;
      const isLast = i === names.length - 1;
      if (firstSeq <= this.lastSeq) {
        this.warn(`${name} overlaps sequences already recovered; ignored`);
        await fh.close();
        continue;
      }
      if (this.lastSeq > 0 && firstSeq !== this.lastSeq + 1) this.warn(`gap before ${name}: sequences ${this.lastSeq + 1}..${firstSeq - 1} are missing`);
      await this.scanSegment(seg, isLast);
      this.segments.push(seg);
      this.lastSeq = Math.max(this.lastSeq, seg.lastSeq);
      if (seg.batchTime.length > 0) this.lastTime = Math.max(this.lastTime, seg.batchTime[seg.batchTime.length - 1]);
    }
    if (this.segments.length === 0) await this.createSegment(1);
    else if (this.lastSeq === 0) this.lastSeq = this.segments[this.segments.length - 1].firstSeq - 1;
  }

  /**
   * Reads a segment batch by batch, rebuilding its index. The tail of the last
   * segment may be torn by a crash: it is cut off. Anything else unreadable is
   * quarantined: reported, kept out of reads, the rest served.
   */
  private async scanSegment(seg: Segment, isLast: boolean): Promise<void> {
    const fileSize = (await seg.fh.stat()).size;
    const reader = new WindowReader(seg.fh, fileSize);
    let pos = 0;
    let expect = seg.firstSeq;
    while (pos < fileSize) {
      let problem: string | null = null;
      let hdr: ReturnType<typeof readBatchHeader> | null = null;
      if (!(await reader.ensure(pos, 8))) problem = "short";
      else {
        const len = reader.buf.readUInt32LE(pos - reader.start) + 8;
        if (len < BATCH_HEADER || len > MAX_BATCH_BYTES) problem = "bad length";
        else if (!(await reader.ensure(pos, len))) problem = "short";
        else {
          const at = pos - reader.start;
          problem = checkBatch(reader.buf, at, at + len);
          if (problem === null) {
            hdr = readBatchHeader(reader.buf, at);
            if (hdr.firstSeq !== expect) problem = `sequence ${hdr.firstSeq} where ${expect} was expected`;
            else {
              const subjects: string[] = [];
              const fits = forEachRecord(reader.buf, at, (_i, subject) => {
                subjects.push(subject);
              });
              if (!fits || subjects.length !== hdr.count) problem = "records do not fit their batch";
              else for (let i = 0; i < subjects.length; i++) this.subjects.note(subjects[i], hdr.firstSeq + i);
            }
          }
        }
      }
      if (problem !== null || hdr === null) {
        if (isLast) {
          this.warn(`${join(this.dir, seg.name)}: cut ${fileSize - pos} bytes of torn tail at ${pos} (${problem})`);
          await seg.fh.truncate(pos);
          await seg.fh.datasync();
        } else {
          this.reportCorrupt(seg, pos, problem ?? "unreadable");
        }
        break;
      }
      seg.addBatch(hdr.firstSeq, hdr.count, pos, hdr.length, hdr.time);
      this.messages += hdr.count;
      expect = hdr.firstSeq + hdr.count;
      pos += hdr.length;
    }
    seg.size = isLast ? pos : fileSize;
  }

  // ---- lifecycle ----

  /** Waits for queued appends to be written, then closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.writing || this.scheduled || this.pending.length > 0) {
      await new Promise<void>((resolve) => {
        this.idle.push(resolve);
        if (!this.writing && !this.scheduled) this.writeLoop();
      });
    }
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.sync !== "always") await this.syncNow();
    for (const s of this.segments) await s.fh.close();
  }
}

/** Sequential reads through a file in large windows, so that recovery costs few syscalls. */
class WindowReader {
  buf = Buffer.allocUnsafe(SCAN_CHUNK);
  start = 0;
  len = 0;
  constructor(
    private readonly fh: FileHandle,
    private readonly fileSize: number,
  ) {}

  /** Makes file bytes [pos, pos+n) available in buf at pos - start; false if the file is shorter. */
  async ensure(pos: number, n: number): Promise<boolean> {
    if (pos >= this.start && pos + n <= this.start + this.len) return true;
    if (pos + n > this.fileSize) return false;
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    const { bytesRead } = await this.fh.read(this.buf, 0, Math.min(this.buf.length, this.fileSize - pos), pos);
    this.start = pos;
    this.len = bytesRead;
    return bytesRead >= n;
  }
}

export function segmentName(firstSeq: number): string {
  return String(firstSeq).padStart(20, "0") + SEGMENT_SUFFIX;
}

async function writeFully(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) throw new Error("write made no progress");
    off += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
