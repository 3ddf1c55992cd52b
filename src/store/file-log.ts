/**
 * A message log in segment files, with group commit: appends that arrive
 * while a write is in flight are written together next, as one batch, and
 * made durable with one fdatasync. An append is acknowledged only once its
 * batch is as durable as the sync policy says; readers never see a message
 * before that. Deletes are tombstone batches in the same files; sealed
 * segments that are mostly dead are rewritten in the background.
 */

import { join } from "node:path";
import {
  BATCH_HEADER,
  checkBatch,
  decodeRecord,
  encodeRawBatch,
  encodeRecord,
  encodeRunRecord,
  encodeTombstones,
  FLAG_GAP,
  FLAG_TOMBSTONES,
  forEachRecord,
  MAX_BATCH_BYTES,
  readBatchHeader,
  readTombstones,
  recordSize,
  runRecordSize,
  sealBatch,
  TOMBSTONE_BYTES,
  viewRecord,
  type BatchHeader,
} from "./format.js";
import { ageTimer, DEAD, IndexedLog } from "./live-index.js";
import { decodeSegmentIndex, encodeSegmentIndex } from "./segment-index.js";
import { nodeFs, writeFully, type StoreFile, type StoreFs } from "./io.js";
import {
  AppendRun,
  limitRefusal,
  refusal,
  runRefusal,
  subjectAt,
  type AppendCallback,
  type AppendInput,
  type CorruptRange,
  type LostRange,
  type Limits,
  type LogState,
  type MessageLog,
  type PurgeOptions,
  type RecordRun,
  type ScanOptions,
  type StoredMessage,
  type SyncPolicy,
} from "./log.js";

/**
 * A test seam for the file I/O that can fail: consulted before each segment
 * write and sync. Returning an error makes that call fail with it; with
 * `partial`, that many bytes are written first (a disk filling up mid-write).
 */
export interface FaultInjector {
  write?(file: string, length: number): { error: Error; partial?: number } | null;
  sync?(file: string): Error | null;
}

export interface FileLogOptions {
  dir: string;
  sync?: SyncPolicy;
  /** For `interval`: the longest an acknowledged append stays only in the page cache. */
  syncIntervalMs?: number;
  maxSegmentBytes?: number;
  maxSegmentAgeMs?: number;
  /**
   * A gathered batch closes at this many record bytes (a larger record is a
   * batch of its own). 2 MiB measured best under kcat load on this kind of
   * machine: the kernel copies a batch into the page cache while it is still
   * in the CPU's cache, and with rounds pipelined, small ones lose no sync time.
   */
  maxBatchBytes?: number;
  /** Largest single record accepted. */
  maxRecordBytes?: number;
  limits?: Limits;
  /** A sealed segment whose live records fill less than this share of it is rewritten (default 0.5). */
  compactBelow?: number;
  /** Where recovery reports what it repaired or found unreadable. */
  onWarning?: (text: string) => void;
  faults?: FaultInjector;
  /** The files underneath: the real disk by default, a simulated one in tests. */
  fs?: StoreFs;
}

const SEGMENT_SUFFIX = ".seg";
const INDEX_SUFFIX = ".idx";
const SCAN_CHUNK = 1024 * 1024;
/** Read windows kept for scans: enough for a few consumers reading along. */
const SCAN_WINDOWS = 4;
/** How long tombstones of evicted messages may wait for a write to ride on. */
const TOMBSTONE_DELAY_MS = 50;

/** One segment file and what is known of it: every batch's first seq, count, position, length and time. */
class Segment {
  /** Highest sequence of a data batch in this file (firstSeq - 1 if none). */
  lastSeq: number;
  /** End of the last good batch: where the next one goes. */
  size = 0;
  /** Record bytes physically present, and of them those still live. */
  recordBytes = 0;
  liveBytes = 0;
  readonly batchSeq: number[] = [];
  readonly batchCount: number[] = [];
  readonly batchPos: number[] = [];
  readonly batchLen: number[] = [];
  readonly batchTime: number[] = [];
  /** Tombstone ranges stored in this file. */
  readonly tombs: number[] = [];
  lastBatchPos = 0;
  lastBatchCrc = 0;
  createdAt = Date.now();
  /** Its .idx on disk describes exactly this file. */
  indexed = false;
  /** Unreadable ranges were found: keep scanning (and reporting) it on open. */
  damaged = false;
  /** Reads in flight; a retired (replaced) segment's file is closed when they end. */
  users = 0;
  retired = false;

  constructor(
    readonly name: string,
    readonly firstSeq: number,
    public fh: StoreFile,
  ) {
    this.lastSeq = firstSeq - 1;
  }

  addBatch(firstSeq: number, count: number, pos: number, len: number, time: number): void {
    this.batchSeq.push(firstSeq);
    this.batchCount.push(count);
    this.batchPos.push(pos);
    this.batchLen.push(len);
    this.batchTime.push(time);
    this.lastSeq = Math.max(this.lastSeq, firstSeq + count - 1);
    this.recordBytes += len - BATCH_HEADER;
  }

  endBatch(pos: number, len: number, crc: number): void {
    this.size = pos + len;
    this.lastBatchPos = pos;
    this.lastBatchCrc = crc;
    this.indexed = false;
  }

  /** Index of the data batch holding `seq`, or -1. */
  batchOf(seq: number): number {
    let lo = 0;
    let hi = this.batchSeq.length - 1;
    if (hi < 0 || seq < this.batchSeq[0]) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.batchSeq[mid] <= seq) lo = mid;
      else hi = mid - 1;
    }
    return seq < this.batchSeq[lo] + this.batchCount[lo] ? lo : -1;
  }

  /** Whether any sequence in [a, b] is physically in this file. */
  holdsAny(a: number, b: number): boolean {
    if (b < this.firstSeq || a > this.lastSeq || this.batchSeq.length === 0) return false;
    let lo = 0;
    let hi = this.batchSeq.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.batchSeq[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    for (let i = lo; i < this.batchSeq.length && this.batchSeq[i] <= b; i++) {
      if (this.batchSeq[i] + this.batchCount[i] - 1 >= a) return true;
    }
    return false;
  }
}

interface ScanWindow {
  seg: Segment;
  b0: number;
  b1: number;
  /** File position of batch b0. */
  start: number;
  /** Empty if the read failed. */
  buf: Buffer;
  verified: Uint8Array;
}

/**
 * Appends waiting for the write loop, already encoded: one future data batch.
 * Encoding on arrival means the caller's buffers and objects die young; the
 * queue holds bytes, not a graph of objects the collector must walk.
 */
interface Staged {
  /** The batch header's room, then the records encoded so far. */
  buf: Buffer;
  used: number;
  subjects: string[];
  sizes: number[];
  /** Sum of sizes. */
  bytes: number;
  /** The append calls that fed this batch, in order, and how many of its records each owns. */
  owners: Array<AppendCallback | AppendRun>;
  spans: number[];
}

/** Written but unacknowledged bytes past which the writer waits for syncs to catch up. */
const MAX_UNLANDED_BYTES = 32 * 1024 * 1024;
/** How long buffers of written batches are kept for reuse once the log has gone quiet. */
const SPARE_IDLE_MS = 1000;
/** A batch buffer grows from this (most group commits are small) up to the batch limit. */
const STAGE_INITIAL = 16 * 1024;

/** One pass of the write loop: a data batch and/or a tombstone batch, written at `pos`..`end` of `seg`. */
interface Round {
  seg: Segment;
  pos: number;
  end: number;
  firstSeq: number;
  n: number;
  time: number;
  batch: Staged | null;
  data: Buffer | null;
  tomb: Buffer | null;
  tombs: number[];
  evicted: number[];
  ops: Op[];
  planned: number[][];
}

/** An fdatasync in flight and the rounds it covers; `error` is undefined until it ends, then its error or null. */
interface SyncInFlight {
  rounds: Round[];
  error: Error | null | undefined;
  done: Promise<void>;
}

type Op = { kind: "delete"; seq: number; done: (err: Error | null, removed: number) => void } | { kind: "purge"; opts: PurgeOptions; done: (err: Error | null, removed: number) => void };

export class FileLog extends IndexedLog implements MessageLog {
  private readonly segments: Segment[] = [];
  private readonly corrupt: CorruptRange[] = [];
  private readonly lost: LostRange[] = [];
  /** The first failed write or sync: appends are refused from then on (see DESIGN.md, "a storage error is sticky"). */
  private writeError: Error | null = null;
  private readonly sync: SyncPolicy;
  private readonly syncIntervalMs: number;
  private readonly maxSegmentBytes: number;
  private readonly maxSegmentAgeMs: number;
  private readonly maxBatchBytes: number;
  private readonly maxRecordBytes: number;
  private readonly compactBelow: number;
  private readonly warn: (text: string) => void;
  private readonly faults: FaultInjector | null;
  private readonly fs: StoreFs;
  private limits: Limits;
  private readonly staged: Staged[] = [];
  /** Buffers of written batches, reused while the write loop stays busy, dropped when it idles. */
  private spare: Buffer[] = [];
  private pendingCount = 0;
  private pendingBytes = 0;
  private readonly pendingPerSubject = new Map<string, number>();
  private readonly ops: Op[] = [];
  /** Tombstone ranges of evicted messages, already gone from memory, not yet on disk. */
  private evicted: number[] = [];
  private flushTombstones = false;
  private tombTimer: NodeJS.Timeout | null = null;
  private spareTimer: NodeJS.Timeout | null = null;
  private writing = false;
  private scheduled = false;
  private closed = false;
  private lastSeq = 0;
  private lastTime = 0;
  private unsynced = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private ageTimer: NodeJS.Timeout | null = null;
  private idle: Array<() => void> = [];
  private maintenance: Promise<void> | null = null;
  private maintenanceAgain = false;
  private windows: ScanWindow[] = [];
  /** One-batch read cache: consecutive get()s of one batch read it once. */
  private cached: { seg: Segment; b: number; buf: Buffer } | null = null;
  private removalSeg: Segment | null = null;
  /** Since open: batches written, fdatasyncs, compactions, index files written and found damaged, segments read whole on open. */
  readonly io = { batches: 0, syncs: 0, compactions: 0, indexesWritten: 0, indexesRebuilt: 0, segmentsScanned: 0 };

  private constructor(readonly dir: string, opts: FileLogOptions) {
    super();
    this.sync = opts.sync ?? "always";
    this.syncIntervalMs = opts.syncIntervalMs ?? 1000;
    this.maxSegmentBytes = opts.maxSegmentBytes ?? 64 * 1024 * 1024;
    this.maxSegmentAgeMs = opts.maxSegmentAgeMs ?? 0;
    this.maxBatchBytes = Math.min(opts.maxBatchBytes ?? 2 * 1024 * 1024, MAX_BATCH_BYTES - BATCH_HEADER);
    this.maxRecordBytes = Math.min(opts.maxRecordBytes ?? 8 * 1024 * 1024, MAX_BATCH_BYTES - BATCH_HEADER);
    this.compactBelow = opts.compactBelow ?? 0.5;
    this.warn = opts.onWarning ?? (() => {});
    this.faults = opts.faults ?? null;
    this.fs = opts.fs ?? nodeFs;
    this.limits = { ...opts.limits };
    this.index.onRemove = (seq, size) => this.noteRemoved(seq, size);
  }

  /** Opens (creating if needed) the log in `dir`, recovering what a crash left. */
  static async open(opts: FileLogOptions): Promise<FileLog> {
    const log = new FileLog(opts.dir, opts);
    await log.fs.mkdirp(opts.dir);
    await log.recover();
    if (log.sync === "interval") {
      log.syncTimer = setInterval(() => void log.syncNow(), log.syncIntervalMs);
      log.syncTimer.unref();
    }
    log.applyLimits();
    log.scheduleMaintenance();
    return log;
  }

  // ---- appends, deletes and the write loop ----

  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const perSubject = this.limits.discardNewPerSubject === true;
    const refused =
      refusal(this.closed, size, this.maxRecordBytes) ??
      limitRefusal(
        this.limits,
        this.index.messages + this.pendingCount,
        this.index.bytes + this.pendingBytes,
        size,
        perSubject ? this.index.countOf(input.subject) + (this.pendingPerSubject.get(input.subject) ?? 0) : 0,
      );
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    const b = this.room(size);
    b.used = encodeRecord(b.buf, b.used, input);
    this.noteStaged(b, input.subject, size);
    this.addOwner(b, done, 1);
    this.kick();
  }

  appendMany(run: RecordRun, done: AppendCallback): void {
    const n = run.count;
    const sizes = new Array<number>(n);
    for (let i = 0; i < n; i++) sizes[i] = runRecordSize(run, i);
    const refused = runRefusal(
      this.closed,
      this.maxRecordBytes,
      this.limits,
      this.index.messages + this.pendingCount,
      this.index.bytes + this.pendingBytes,
      run,
      sizes,
      (s) => this.index.countOf(s) + (this.pendingPerSubject.get(s) ?? 0),
    );
    if (refused !== null || n === 0) {
      done(refused, 0);
      return;
    }
    const owner = new AppendRun(n, done);
    let batch: Staged | null = null;
    let span = 0;
    for (let i = 0; i < n; i++) {
      const b = this.room(sizes[i]);
      b.used = encodeRunRecord(b.buf, b.used, run, i);
      this.noteStaged(b, subjectAt(run, i), sizes[i]);
      if (b !== batch) {
        if (batch !== null) this.addOwner(batch, owner, span);
        batch = b;
        span = 0;
      }
      span++;
    }
    this.addOwner(batch!, owner, span);
    this.kick();
  }

  /** The batch being gathered, with room for a record of `size` bytes (opening one when it is full). */
  private room(size: number): Staged {
    let b = this.staged.length > 0 ? this.staged[this.staged.length - 1] : undefined;
    if (b === undefined || (b.subjects.length > 0 && b.used + size > BATCH_HEADER + this.maxBatchBytes)) {
      // After a full batch another is likely to fill too: take its full size at once rather than grow by copying.
      const full = b !== undefined;
      b = { buf: this.batchBuffer(full ? BATCH_HEADER + this.maxBatchBytes : BATCH_HEADER + size), used: BATCH_HEADER, subjects: [], sizes: [], bytes: 0, owners: [], spans: [] };
      this.staged.push(b);
    } else if (b.used + size > b.buf.length) {
      const grown = this.batchBuffer(Math.max(b.used + size, Math.min(b.buf.length * 2, BATCH_HEADER + this.maxBatchBytes)));
      b.buf.copy(grown, 0, 0, b.used);
      b.buf = grown;
    }
    return b;
  }

  /** Counts a record just encoded into `b` as queued. */
  private noteStaged(b: Staged, subject: string, size: number): void {
    b.subjects.push(subject);
    b.sizes.push(size);
    b.bytes += size;
    this.pendingCount++;
    this.pendingBytes += size;
    if (this.limits.discardNewPerSubject === true) this.pendingPerSubject.set(subject, (this.pendingPerSubject.get(subject) ?? 0) + 1);
  }

  private addOwner(b: Staged, owner: AppendCallback | AppendRun, span: number): void {
    b.owners.push(owner);
    b.spans.push(span);
  }

  private batchBuffer(min: number): Buffer {
    for (let i = this.spare.length - 1; i >= 0; i--) {
      if (this.spare[i].length >= min) return this.spare.splice(i, 1)[0];
    }
    return Buffer.allocUnsafe(Math.max(min, STAGE_INITIAL));
  }

  delete(seq: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error("log is closed"));
      this.ops.push({ kind: "delete", seq, done: (err, n) => (err ? reject(err) : resolve(n > 0)) });
      this.kick();
    });
  }

  purge(opts: PurgeOptions = {}): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error("log is closed"));
      this.ops.push({ kind: "purge", opts, done: (err, n) => (err ? reject(err) : resolve(n)) });
      this.kick();
    });
  }

  setLimits(limits: Limits): void {
    this.limits = { ...limits };
    this.applyLimits();
  }

  private kick(): void {
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
      if (this.staged.length > 0 || this.ops.length > 0 || (this.flushTombstones && this.evicted.length > 0)) this.kick();
      else {
        this.dropSparesLater();
        if (this.evicted.length > 0) this.armTombstoneFlush();
        const w = this.idle;
        this.idle = [];
        for (const f of w) f();
      }
    });
  };

  /** Batch buffers outlive a short lull (a producer between bursts) but not an idle log. */
  private dropSparesLater(): void {
    if (this.spare.length === 0 || this.spareTimer !== null) return;
    this.spareTimer = setTimeout(() => {
      this.spareTimer = null;
      if (!this.writing && this.staged.length === 0) this.spare = [];
      else this.dropSparesLater();
    }, SPARE_IDLE_MS);
    this.spareTimer.unref();
  }

  private armTombstoneFlush(): void {
    if (this.tombTimer !== null) return;
    this.tombTimer = setTimeout(() => {
      this.tombTimer = null;
      this.flushTombstones = true;
      this.kick();
    }, TOMBSTONE_DELAY_MS);
    this.tombTimer.unref();
  }

  /**
   * The write loop. Each batch is written as soon as the writer is free, while
   * its data is still in the CPU's cache; under sync `always` one fdatasync at
   * a time covers every round written before it started, so syncs group as
   * many rounds as arrived during the last one (few when the disk is quick,
   * many when it is slow). Rounds land (become visible, are acknowledged)
   * strictly in order, each only after a sync that covers it. Deletes, purges
   * and segment rolls wait until everything written has landed, so they see a
   * settled index.
   */
  private async drain(): Promise<void> {
    // Written, not yet covered by a sync, oldest first.
    const written: Round[] = [];
    let syncing: SyncInFlight | null = null;
    for (;;) {
      if (syncing !== null && syncing.error !== undefined) {
        await this.landSynced(syncing, written);
        syncing = null;
        continue;
      }
      if (syncing === null && written.length > 0) {
        syncing = this.startSync(written.splice(0));
        continue;
      }
      const newest = written.length > 0 ? written[written.length - 1] : syncing !== null ? syncing.rounds[syncing.rounds.length - 1] : null;
      const work = this.staged.length > 0 || this.ops.length > 0 || (this.flushTombstones && this.evicted.length > 0);
      const oldest = syncing !== null ? syncing.rounds[0] : written.length > 0 ? written[0] : null;
      const mustSettle =
        newest !== null && oldest !== null && (this.ops.length > 0 || this.rollDue(newest.seg, newest.end) || newest.end - oldest.pos >= MAX_UNLANDED_BYTES);
      if (work && !mustSettle) {
        const round = await this.writeRound(newest);
        if (round === null) continue;
        if (this.sync === "always") written.push(round);
        else {
          this.unsynced = true;
          this.land(round);
        }
        continue;
      }
      if (syncing !== null) {
        await syncing.done;
        continue;
      }
      if (!work) return;
    }
  }

  private startSync(rounds: Round[]): SyncInFlight {
    const s: SyncInFlight = { rounds, error: undefined, done: Promise.resolve() };
    s.done = this.datasync(rounds[0].seg).then(
      () => {
        s.error = null;
      },
      (err: unknown) => {
        s.error = err instanceof Error ? err : new Error(String(err));
      },
    );
    return s;
  }

  /**
   * Lands the rounds a finished sync covers. If it failed, the file is cut
   * back to where the first of them began, which takes every round written
   * after it too: all of them fail.
   */
  private async landSynced(s: SyncInFlight, written: Round[]): Promise<void> {
    if (s.error === null) {
      this.io.syncs++;
      for (const r of s.rounds) this.land(r);
      return;
    }
    const err = s.error!;
    await s.rounds[0].seg.fh.truncate(s.rounds[0].pos).catch(() => {});
    for (const r of s.rounds) this.failRound(r, err);
    for (const r of written.splice(0)) this.failRound(r, err);
  }

  /** Forms the next round from what is queued and writes it after `inflight` (the newest unlanded round, if any); null if the write failed. */
  private async writeRound(inflight: Round | null): Promise<Round | null> {
    // Appends from here on gather into a new batch.
    const batch = this.staged.shift() ?? null;
    const n = batch?.subjects.length ?? 0;
    const ops = this.ops.splice(0);
    // Nothing else changes the stored set meanwhile: every mutation goes through this loop.
    const evicted = this.evicted;
    this.evicted = [];
    this.flushTombstones = this.closed;
    const planned = ops.map((op) =>
      op.kind === "purge" ? this.index.planPurge(op.opts) : this.index.sidAt(op.seq) !== DEAD ? [op.seq, op.seq] : [],
    );
    const tombs = evicted.concat(...planned);
    const firstSeq = inflight !== null ? inflight.firstSeq + inflight.n : this.lastSeq + 1;
    // Time never goes backwards within a log, so time lookups can bisect.
    const time = Math.max(Date.now(), inflight !== null ? inflight.time : this.lastTime);
    const round: Round = { seg: null!, pos: 0, end: 0, firstSeq, n, time, batch, data: null, tomb: null, tombs, evicted, ops, planned };
    let seg: Segment;
    try {
      seg = await this.segmentFor(firstSeq, inflight !== null ? inflight.end : null);
    } catch (err) {
      this.failRound(round, err instanceof Error ? err : new Error(String(err)));
      return null;
    }
    round.seg = seg;
    round.pos = inflight !== null ? inflight.end : seg.size;
    round.data = batch !== null ? sealBatch(batch.buf, batch.used, firstSeq, time, n) : null;
    round.tomb = tombs.length > 0 ? encodeTombstones(tombs, firstSeq + n, time) : null;
    round.end = round.pos + (round.data?.length ?? 0) + (round.tomb?.length ?? 0);
    try {
      if (round.data !== null) await this.write(seg, round.data, round.pos);
      if (round.tomb !== null) await this.write(seg, round.tomb, round.pos + (round.data?.length ?? 0));
      this.io.batches++;
    } catch (err) {
      // Leave no partial batch behind: the next one starts where this one did.
      await seg.fh.truncate(round.pos).catch(() => {});
      this.failRound(round, err instanceof Error ? err : new Error(String(err)));
      return null;
    }
    return round;
  }

  /** Makes a durable round visible and acknowledges it. */
  private land(round: Round): void {
    const { seg, pos, data, tomb, tombs, firstSeq, n, time, batch, ops, planned } = round;
    const limitsPerSubject = (this.limits.maxMsgsPerSubject ?? 0) > 0;
    const touched = new Set<number>();
    if (data !== null && batch !== null) {
      seg.addBatch(firstSeq, n, pos, data.length, time);
      seg.endBatch(pos, data.length, data.readUInt32LE(4));
      seg.liveBytes += data.length - BATCH_HEADER;
      this.lastSeq = firstSeq + n - 1;
      this.lastTime = time;
      for (let i = 0; i < n; i++) {
        const id = this.index.intern(batch.subjects[i]);
        this.index.add(firstSeq + i, id, batch.sizes[i]);
        // Subjects of this batch, for the per-subject limit (the only limit that needs them).
        if (limitsPerSubject) touched.add(id);
      }
    }
    if (tomb !== null) {
      for (const t of tombs) seg.tombs.push(t);
      seg.endBatch(pos + (data?.length ?? 0), tomb.length, tomb.readUInt32LE(4));
    }
    for (let k = 0; k < ops.length; k++) {
      let removed = 0;
      const r = planned[k];
      for (let i = 0; i < r.length; i += 2) removed += this.index.removeRange(r[i], r[i + 1]).length;
      ops[k].done(null, removed);
    }
    if (n > 0) this.evictSeqs(this.index.evict(this.limits, touched));
    if (batch !== null) this.settleStaged(batch, null, firstSeq);
    if (tombs.length > 0 || this.evicted.length > 0) this.scheduleMaintenance();
  }

  private failRound(round: Round, err: Error): void {
    // Evictions are already gone from memory: their tombstones go out with the next write.
    this.evicted = round.evicted.concat(this.evicted);
    if (round.batch !== null) this.settleStaged(round.batch, err, 0);
    for (const op of round.ops) op.done(err, 0);
  }

  /** Takes a written (or failed) batch off the queue's counts, tells its appenders, and keeps its buffer for reuse. */
  private settleStaged(b: Staged, err: Error | null, firstSeq: number): void {
    const n = b.subjects.length;
    this.pendingCount -= n;
    this.pendingBytes -= b.bytes;
    if (this.pendingPerSubject.size > 0) {
      for (let i = 0; i < n; i++) {
        const s = b.subjects[i];
        const c = (this.pendingPerSubject.get(s) ?? 1) - 1;
        if (c <= 0) this.pendingPerSubject.delete(s);
        else this.pendingPerSubject.set(s, c);
      }
    }
    this.spare.push(b.buf);
    let seq = firstSeq;
    for (let k = 0; k < b.owners.length; k++) {
      const owner = b.owners[k];
      const span = b.spans[k];
      if (typeof owner === "function") owner(err, err === null ? seq : 0);
      else owner.settle(err, seq, span);
      if (err === null) seq += span;
    }
  }

  /** Messages removed by limits: gone from memory now, their tombstone written with the next batch. */
  private evictSeqs(removed: number[]): void {
    if (removed.length === 0) return;
    const ranges = this.index.toRanges(removed);
    for (const r of ranges) this.evicted.push(r);
    if (!this.writing) this.armTombstoneFlush();
  }

  private applyLimits(): void {
    if (this.closed) return;
    this.evictSeqs(this.index.enforce(this.limits));
    this.expireByAge();
    this.ageTimer = ageTimer(this.ageTimer, this.limits.maxAgeMs, () => this.expireByAge());
  }

  private expireByAge(): void {
    const maxAge = this.limits.maxAgeMs ?? 0;
    if (maxAge <= 0 || this.closed) return;
    this.evictSeqs(this.index.expireBefore(this.firstSeqAtOrAfter(Date.now() - maxAge)));
  }

  private async write(seg: Segment, buf: Buffer, pos: number): Promise<void> {
    const fault = this.faults?.write?.(seg.name, buf.length) ?? null;
    if (fault !== null) {
      if (fault.partial) await writeFully(seg.fh, buf.subarray(0, Math.min(fault.partial, buf.length)), pos);
      throw fault.error;
    }
    await writeFully(seg.fh, buf, pos);
  }

  private async datasync(seg: Segment): Promise<void> {
    const fault = this.faults?.sync?.(seg.name) ?? null;
    if (fault !== null) throw fault;
    await seg.fh.datasync();
  }

  /**
   * The segment the next batch goes to, rolling to a new file when the
   * current one is full or old. `end` is where the current one's written
   * bytes end when a round is still unsynced there (never rolled past).
   */
  private async segmentFor(firstSeq: number, end: number | null): Promise<Segment> {
    const cur = this.segments[this.segments.length - 1];
    if (cur !== undefined && cur.firstSeq === firstSeq) return cur; // only tombstones so far: a new file would have the same name
    if (cur !== undefined && (end !== null || !this.rollDue(cur, cur.size))) return cur;
    if (cur !== undefined && this.sync !== "always") await cur.fh.datasync();
    const seg = await this.createSegment(firstSeq);
    this.scheduleMaintenance();
    return seg;
  }

  /** Whether the segment, written up to `end`, is full or old enough to be rolled. */
  private rollDue(seg: Segment, end: number): boolean {
    return end >= this.maxSegmentBytes || (this.maxSegmentAgeMs > 0 && seg.batchSeq.length > 0 && Date.now() - seg.createdAt >= this.maxSegmentAgeMs);
  }

  private async createSegment(firstSeq: number): Promise<Segment> {
    const name = segmentName(firstSeq);
    const fh = await this.fs.open(join(this.dir, name), "create");
    await this.fs.syncDir(this.dir);
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
    return this.index.state(this.lastSeq, this.corrupt, this.lost, this.writeError?.message ?? null);
  }

  async get(seq: number): Promise<StoredMessage | null> {
    if (seq > this.lastSeq || this.index.sidAt(seq) === DEAD) return null;
    const seg = this.segmentOf(seq);
    if (seg === null) return null;
    const b = seg.batchOf(seq);
    if (b < 0) return null;
    const buf = await this.readBatch(seg, b);
    if (buf === null) return null;
    const at = recordAt(buf, 0, seq - seg.batchSeq[b]);
    return at < 0 ? null : decodeRecord(buf, at, seq, seg.batchTime[b]);
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    for (let seq = this.index.nextMatch(after, filter); seq !== 0 && seq <= this.lastSeq; seq = this.index.nextMatch(seq, filter)) {
      const m = await this.get(seq);
      if (m !== null) return m;
    }
    return null;
  }

  async scan(from: number, opts: ScanOptions = {}): Promise<StoredMessage[]> {
    const filter = opts.filter === ">" ? undefined : opts.filter;
    const maxMessages = opts.maxMessages ?? 256;
    const maxBytes = opts.maxBytes ?? Infinity;
    const out: StoredMessage[] = [];
    let bytes = 0;
    let seq = this.index.nextMatch(from - 1, filter);
    while (seq !== 0 && seq <= this.lastSeq && out.length < maxMessages && bytes < maxBytes) {
      const seg = this.segmentOf(seq);
      const b0 = seg === null ? -1 : seg.batchOf(seq);
      if (seg === null || b0 < 0) {
        seq = this.index.nextMatch(seq, filter);
        continue;
      }
      const w = await this.window(seg, b0);
      let visited = seq;
      for (let b = b0; b <= w.b1 && out.length < maxMessages && bytes < maxBytes; b++) {
        const at = seg.batchPos[b] - w.start;
        const buf = w.buf;
        if (w.verified[b - w.b0] === 0) {
          if (buf.length === 0 || checkBatch(buf, at, at + seg.batchLen[b]) !== null) {
            this.reportCorrupt(seg, seg.batchPos[b], "checksum mismatch on read");
            visited = seg.batchSeq[b] + seg.batchCount[b] - 1;
            continue;
          }
          w.verified[b - w.b0] = 1;
        }
        const bSeq = seg.batchSeq[b];
        const count = seg.batchCount[b];
        const time = seg.batchTime[b];
        let p = at + BATCH_HEADER;
        for (let i = 0; i < count; i++) {
          const s = bSeq + i;
          const len = buf.readUInt32LE(p) + 4;
          if (s >= seq) {
            visited = s;
            const id = this.index.sidAt(s);
            if (id !== DEAD && (filter === undefined || this.index.matchesId(filter, id))) {
              out.push(viewRecord(buf, p, s, time, this.index.subjectOf(id)));
              bytes += len;
              if (out.length >= maxMessages || bytes >= maxBytes) break;
            }
          }
          p += len;
        }
      }
      seq = this.index.nextMatch(visited, filter);
    }
    return out;
  }

  /**
   * Consecutive batches from b0, about SCAN_CHUNK long, read in one go. A few
   * recent windows are kept, so a consumer that continues where its last scan
   * stopped reads and verifies each batch once.
   */
  private async window(seg: Segment, b0: number): Promise<ScanWindow> {
    for (const w of this.windows) if (w.seg === seg && b0 >= w.b0 && b0 <= w.b1) return w;
    let b1 = b0;
    const start = seg.batchPos[b0];
    while (b1 + 1 < seg.batchSeq.length && seg.batchPos[b1 + 1] + seg.batchLen[b1 + 1] - start <= SCAN_CHUNK) b1++;
    const end = seg.batchPos[b1] + seg.batchLen[b1];
    const buf = (await this.readRange(seg, start, end - start)) ?? Buffer.alloc(0);
    const w: ScanWindow = { seg, b0, b1, start, buf, verified: new Uint8Array(b1 - b0 + 1) };
    this.windows.unshift(w);
    if (this.windows.length > SCAN_WINDOWS) this.windows.pop();
    return w;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    const seq = this.firstSeqAtOrAfter(time);
    return seq > this.lastSeq ? null : this.next(seq - 1);
  }

  /** The first sequence of the first batch stored at or after `time`; lastSeq + 1 if none. */
  private firstSeqAtOrAfter(time: number): number {
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
      return seg.batchSeq[lo];
    }
    return this.lastSeq + 1;
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const last = this.index.lastOf(subject);
    return last === 0 ? null : this.get(last);
  }

  private segmentOf(seq: number): Segment | null {
    if (seq < 1 || seq > this.lastSeq || this.segments.length === 0) return null;
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid].firstSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const seg = this.segments[lo];
    return seq >= seg.firstSeq ? seg : null;
  }

  private async readRange(seg: Segment, pos: number, len: number): Promise<Buffer | null> {
    const buf = Buffer.allocUnsafe(len);
    seg.users++;
    try {
      return (await seg.fh.read(buf, 0, len, pos)) < len ? null : buf;
    } catch {
      return null;
    } finally {
      if (--seg.users === 0 && seg.retired) void seg.fh.close().catch(() => {});
    }
  }

  /** Reads and verifies one batch; a batch that no longer verifies is reported and skipped. */
  private async readBatch(seg: Segment, b: number): Promise<Buffer | null> {
    const c = this.cached;
    if (c !== null && c.seg === seg && c.b === b) return c.buf;
    const len = seg.batchLen[b];
    const buf = await this.readRange(seg, seg.batchPos[b], len);
    const problem = buf === null ? "short" : checkBatch(buf, 0, len);
    if (problem !== null || buf === null) {
      this.reportCorrupt(seg, seg.batchPos[b], `${problem} on read`);
      return null;
    }
    this.cached = { seg, b, buf };
    return buf;
  }

  private reportCorrupt(seg: Segment, position: number, reason: string): void {
    seg.damaged = true;
    if (this.corrupt.some((c) => c.segment === seg.name && c.position === position)) return;
    this.corrupt.push({ segment: seg.name, position, reason });
    this.warn(`${join(this.dir, seg.name)} at ${position}: ${reason}`);
  }

  private noteRemoved(seq: number, size: number): void {
    let seg = this.removalSeg;
    if (seg === null || seq < seg.firstSeq || seq > seg.lastSeq || seg.retired) {
      seg = this.segmentOf(seq);
      this.removalSeg = seg;
    }
    if (seg !== null) seg.liveBytes -= size;
  }

  // ---- recovery ----

  private async recover(): Promise<void> {
    const entries = await this.fs.readdir(this.dir);
    for (const n of entries) {
      // Leftovers of a compaction or index write that a crash interrupted.
      if (n.endsWith(".tmp")) await this.fs.remove(join(this.dir, n));
    }
    const names = entries.filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    const indexes = new Set(entries.filter((n) => n.endsWith(INDEX_SUFFIX)));
    let nextSeq = 1;
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const firstSeq = Number(name.slice(0, 20));
      if (firstSeq < nextSeq) {
        this.warn(`${name} overlaps sequences already recovered; ignored`);
        continue;
      }
      const fh = await this.fs.open(join(this.dir, name), "existing");
      const seg = new Segment(name, firstSeq, fh);
      const st = { size: await fh.size() };
      seg.createdAt = await this.fs.mtime(join(this.dir, name));
      const isLast = i === names.length - 1;
      let from = 0;
      if (indexes.has(name + INDEX_SUFFIX)) {
        from = await this.loadIndex(seg, st.size);
      }
      if (from < st.size || st.size === 0) await this.scanSegment(seg, from, st.size, isLast);
      else seg.indexed = !seg.damaged;
      this.segments.push(seg);
      nextSeq = Math.max(nextSeq, seg.lastSeq + 1);
    }
    // Tombstones record the next sequence when written: a log whose newest messages were all deleted keeps counting.
    for (const seg of this.segments) {
      this.lastSeq = Math.max(this.lastSeq, seg.lastSeq);
      for (let i = 0; i < seg.tombs.length; i += 2) this.index.kill(seg.tombs[i], seg.tombs[i + 1]);
    }
    const last = this.segments[this.segments.length - 1];
    if (last === undefined) await this.createSegment(1);
    else {
      this.lastSeq = Math.max(this.lastSeq, last.firstSeq - 1, this.tombNextSeq - 1);
      if (last.batchTime.length > 0) this.lastTime = last.batchTime[last.batchTime.length - 1];
    }
    this.index.finishLoad();
    for (const seg of this.segments) {
      seg.liveBytes = 0;
      for (let b = 0; b < seg.batchSeq.length; b++) {
        for (let s = seg.batchSeq[b], e = s + seg.batchCount[b]; s < e; s++) seg.liveBytes += this.index.sizeAt(s);
      }
    }
  }

  private tombNextSeq = 0;

  /** Takes a segment's index if it matches the file; the offset up to which it did (0: not used). */
  private async loadIndex(seg: Segment, fileSize: number): Promise<number> {
    const path = join(this.dir, seg.name + INDEX_SUFFIX);
    let why: string | null = null;
    let d: ReturnType<typeof decodeSegmentIndex> = "unreadable";
    try {
      d = decodeSegmentIndex(await this.fs.readFile(path));
    } catch (err) {
      why = (err as Error).message;
    }
    if (typeof d === "string") why ??= d;
    else if (d.firstSeq !== seg.firstSeq) why = "belongs to another segment";
    else if (d.size > fileSize) why = "covers more than the segment holds";
    else if (d.size > 0) {
      const probe = Buffer.alloc(8);
      await seg.fh.read(probe, 0, 8, d.lastBatchPos);
      if (probe.readUInt32LE(0) + 8 !== d.size - d.lastBatchPos || probe.readUInt32LE(4) !== d.lastBatchCrc) why = "does not match the segment's last batch";
    }
    if (why !== null || typeof d === "string") {
      this.warn(`${path}: ${why}; rebuilding it from the segment`);
      this.io.indexesRebuilt++;
      return 0;
    }
    const ids = d.subjects.map((s) => this.index.intern(s));
    for (let b = 0; b < d.batchSeq.length; b++) seg.addBatch(d.batchSeq[b], d.batchCount[b], d.batchPos[b], d.batchLen[b], d.batchTime[b]);
    for (const t of d.tombs) seg.tombs.push(t);
    for (let i = 0; i < d.span; i++) {
      const sid = d.sid[i];
      if (sid >= 0) this.index.load(d.firstSeq + i, ids[sid], d.size_[i]);
    }
    seg.size = d.size;
    seg.lastBatchPos = d.lastBatchPos;
    seg.lastBatchCrc = d.lastBatchCrc;
    return d.size;
  }

  /**
   * Reads a segment batch by batch from `from`, rebuilding its index. The tail
   * of the last segment may be torn by a crash: it is cut off. Anything else
   * unreadable is quarantined (reported, kept out of reads) and the scan
   * resumes at the next batch that verifies.
   */
  private async scanSegment(seg: Segment, from: number, fileSize: number, isLast: boolean): Promise<void> {
    const reader = new WindowReader(seg.fh, fileSize);
    if (from === 0) this.io.segmentsScanned++;
    let pos = from;
    let expect = seg.batchSeq.length > 0 ? seg.lastSeq + 1 : seg.firstSeq;
    let afterQuarantine = false;
    while (pos < fileSize) {
      const found = await this.readBatchAt(reader, pos, expect, afterQuarantine);
      afterQuarantine = false;
      if (typeof found === "string") {
        if (isLast) {
          this.warn(`${join(this.dir, seg.name)}: cut ${fileSize - pos} bytes of torn tail at ${pos} (${found})`);
          await seg.fh.truncate(pos);
          await seg.fh.datasync();
          fileSize = pos;
          break;
        }
        this.reportCorrupt(seg, pos, found);
        const resume = await this.resync(reader, pos + 1, fileSize, expect);
        if (resume < 0) break;
        pos = resume;
        afterQuarantine = true; // the quarantined batch's sequences are skipped
        continue;
      }
      const { hdr, subjects, sizes } = found;
      if ((hdr.flags & FLAG_TOMBSTONES) !== 0) {
        readTombstones(reader.buf, pos - reader.start, seg.tombs);
        this.tombNextSeq = Math.max(this.tombNextSeq, hdr.firstSeq);
      } else {
        seg.addBatch(hdr.firstSeq, hdr.count, pos, hdr.length, hdr.time);
        for (let i = 0; i < hdr.count; i++) this.index.load(hdr.firstSeq + i, this.index.intern(subjects[i]), sizes[i]);
        expect = hdr.firstSeq + hdr.count;
      }
      seg.endBatch(pos, hdr.length, reader.buf.readUInt32LE(pos - reader.start + 4));
      pos += hdr.length;
    }
    seg.size = pos;
    seg.indexed = false;
  }

  /** The verified batch at `pos`, or why there is none. */
  private async readBatchAt(reader: WindowReader, pos: number, expect: number, gapAllowed = false): Promise<{ hdr: BatchHeader; subjects: string[]; sizes: number[] } | string> {
    if (!(await reader.ensure(pos, 8))) return "short";
    const len = reader.buf.readUInt32LE(pos - reader.start) + 8;
    if (len < BATCH_HEADER || len > MAX_BATCH_BYTES) return "bad length";
    if (!(await reader.ensure(pos, len))) return "short";
    const at = pos - reader.start;
    const problem = checkBatch(reader.buf, at, at + len);
    if (problem !== null) return problem;
    const hdr = readBatchHeader(reader.buf, at);
    if (hdr.firstSeq < expect || (hdr.firstSeq > expect && !gapAllowed && (hdr.flags & FLAG_GAP) === 0)) return `sequence ${hdr.firstSeq} where ${expect} was expected`;
    const subjects: string[] = [];
    const sizes: number[] = [];
    if ((hdr.flags & FLAG_TOMBSTONES) !== 0) {
      if (hdr.length !== BATCH_HEADER + hdr.count * TOMBSTONE_BYTES) return "tombstones do not fit their batch";
      return { hdr, subjects, sizes };
    }
    const fits = forEachRecord(reader.buf, at, (_i, subject, p) => {
      subjects.push(subject);
      sizes.push(reader.buf.readUInt32LE(p) + 4);
    });
    if (!fits || subjects.length !== hdr.count) return "records do not fit their batch";
    return { hdr, subjects, sizes };
  }

  /** The position of the next batch at or after `pos` that verifies and continues the sequence, or -1. */
  private async resync(reader: WindowReader, pos: number, fileSize: number, expect: number): Promise<number> {
    for (; pos + BATCH_HEADER <= fileSize; pos++) {
      if (!(await reader.ensure(pos, BATCH_HEADER))) return -1;
      const at = pos - reader.start;
      // Cheap tests first; the checksum only for a plausible header.
      if (reader.buf[at + 8] !== 1 || reader.buf.readUInt16LE(at + 10) !== 0) continue;
      const len = reader.buf.readUInt32LE(at) + 8;
      if (len < BATCH_HEADER || pos + len > fileSize) continue;
      if (typeof (await this.readBatchAt(reader, pos, expect, true)) !== "string") return pos;
      // readBatchAt may have moved the window; keep going from where we are.
      if (!(await reader.ensure(pos, BATCH_HEADER))) return -1;
    }
    return -1;
  }

  // ---- maintenance: index files and compaction, one step at a time, in the background ----

  private scheduleMaintenance(): void {
    if (this.closed) return;
    if (this.maintenance !== null) {
      this.maintenanceAgain = true;
      return;
    }
    this.maintenance = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.maintain())
      .catch((err) => this.warn(`maintenance of ${this.dir} failed: ${(err as Error).message}`))
      .finally(() => {
        this.maintenance = null;
        if (this.maintenanceAgain && !this.closed) {
          this.maintenanceAgain = false;
          this.scheduleMaintenance();
        }
      });
  }

  private async maintain(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const victim = this.compactionCandidate();
      if (victim === null) break;
      await this.compact(victim);
    }
    for (let i = 0; i < this.segments.length - 1 && !this.closed; i++) {
      const seg = this.segments[i];
      if (!seg.indexed && !seg.damaged) await this.writeIndex(seg);
    }
  }

  /** A sealed segment mostly dead, or holding only tombstones nothing needs any more. */
  private compactionCandidate(): Segment | null {
    let best: Segment | null = null;
    let bestRatio = this.compactBelow;
    for (let i = 0; i < this.segments.length - 1; i++) {
      const seg = this.segments[i];
      if (seg.damaged) continue;
      if (seg.recordBytes > 0) {
        const ratio = seg.liveBytes / seg.recordBytes;
        if (ratio < bestRatio || (ratio === 0 && best === null)) {
          best = seg;
          bestRatio = ratio;
        }
      } else if (seg.tombs.length > 0 && best === null && this.neededTombs(i).length < seg.tombs.length) {
        best = seg;
      }
    }
    return best;
  }

  /** Tombstones of segment `i` that still delete something physically present in an earlier file. */
  private neededTombs(i: number): number[] {
    const seg = this.segments[i];
    const keep: number[] = [];
    for (let t = 0; t < seg.tombs.length; t += 2) {
      const a = seg.tombs[t];
      const b = seg.tombs[t + 1];
      for (let j = 0; j < i; j++) {
        if (this.segments[j].holdsAny(a, b)) {
          keep.push(a, b);
          break;
        }
      }
    }
    return keep;
  }

  /**
   * Rewrites a sealed segment with only its live records and needed
   * tombstones: write a temporary file, fsync it, rename it over the
   * segment, fsync the directory. A crash at any point leaves either the old
   * file or the new one; a leftover temporary file is removed on open.
   */
  private async compact(seg: Segment): Promise<void> {
    const i = this.segments.indexOf(seg);
    if (i < 0 || i === this.segments.length - 1) return;
    const tmpPath = join(this.dir, seg.name + ".compact.tmp");
    const path = join(this.dir, seg.name);
    const next = new Segment(seg.name, seg.firstSeq, null as unknown as StoreFile);
    const out = await this.fs.open(tmpPath, "replace");
    let ok = false;
    try {
      let pos = 0;
      let expect = seg.firstSeq;
      const writeBatch = async (buf: Buffer): Promise<void> => {
        await writeFully(out, buf, pos);
        next.endBatch(pos, buf.length, buf.readUInt32LE(4));
        pos += buf.length;
      };
      for (let b = 0; b < seg.batchSeq.length; b++) {
        if (this.closed) return;
        const buf = await this.readRange(seg, seg.batchPos[b], seg.batchLen[b]);
        if (buf === null || checkBatch(buf, 0, buf.length) !== null) {
          // Reported like any corruption found on read; damaged segments are never compacted (nor retried).
          this.reportCorrupt(seg, seg.batchPos[b], "checksum mismatch on read (compaction)");
          return;
        }
        let run: Buffer[] = [];
        let runBytes = 0;
        let runStart = 0;
        const flush = async (): Promise<void> => {
          if (run.length === 0) return;
          const out = encodeRawBatch(run, runBytes, runStart, seg.batchTime[b], run.length, runStart !== expect ? FLAG_GAP : 0);
          next.addBatch(runStart, run.length, pos, out.length, seg.batchTime[b]);
          await writeBatch(out);
          expect = runStart + run.length;
          run = [];
          runBytes = 0;
        };
        let p = BATCH_HEADER;
        for (let k = 0; k < seg.batchCount[b]; k++) {
          const s = seg.batchSeq[b] + k;
          const len = buf.readUInt32LE(p) + 4;
          if (this.index.sidAt(s) !== DEAD) {
            if (run.length === 0) runStart = s;
            run.push(buf.subarray(p, p + len));
            runBytes += len;
          } else await flush();
          p += len;
        }
        await flush();
      }
      const tombs = this.neededTombs(i);
      if (tombs.length > 0) {
        const t = encodeTombstones(tombs, expect, seg.batchTime[seg.batchTime.length - 1] ?? 0);
        for (const x of tombs) next.tombs.push(x);
        await writeBatch(t);
      }
      if (pos === 0) {
        await out.close();
        await this.fs.remove(tmpPath);
        await this.fs.remove(path + INDEX_SUFFIX);
        await this.fs.remove(path);
        await this.fs.syncDir(this.dir);
        this.segments.splice(this.segments.indexOf(seg), 1);
        this.retire(seg);
        ok = true;
        this.io.compactions++;
        return;
      }
      await out.datasync();
      await this.fs.remove(path + INDEX_SUFFIX);
      await this.fs.rename(tmpPath, path);
      await this.fs.syncDir(this.dir);
      next.fh = out;
      next.size = pos;
      next.createdAt = seg.createdAt;
      for (let b = 0; b < next.batchSeq.length; b++) {
        for (let s = next.batchSeq[b], e = s + next.batchCount[b]; s < e; s++) next.liveBytes += this.index.sizeAt(s);
      }
      // Records deleted while we copied are dead in memory; the tombstones that say so live in later files.
      this.segments[this.segments.indexOf(seg)] = next;
      this.retire(seg);
      ok = true;
      this.io.compactions++;
      await this.writeIndex(next);
    } finally {
      if (!ok) {
        await out.close().catch(() => {});
        await this.fs.remove(tmpPath);
      }
    }
  }

  private retire(seg: Segment): void {
    seg.retired = true;
    if (this.cached?.seg === seg) this.cached = null;
    this.windows = this.windows.filter((w) => w.seg !== seg);
    if (this.removalSeg === seg) this.removalSeg = null;
    if (seg.users === 0) void seg.fh.close().catch(() => {});
  }

  /** Writes `<segment>.idx` the crash-safe way; the segment's live set is taken from memory. */
  private async writeIndex(seg: Segment): Promise<void> {
    const span = Math.max(0, seg.lastSeq - seg.firstSeq + 1);
    // Sequences in no batch of this file (compacted away, or in gaps) are DEAD in the live index too.
    const sid = new Int32Array(span);
    const size_ = new Uint32Array(span);
    this.index.exportRange(seg.firstSeq, span, sid, size_);
    // Global subject ids to this file's own, numbered in order of first use.
    const local = new Int32Array(this.index.subjectIds).fill(-1);
    const subjects: string[] = [];
    for (let k = 0; k < span; k++) {
      const id = sid[k];
      if (id === DEAD) {
        size_[k] = 0;
        continue;
      }
      let l = local[id];
      if (l < 0) {
        l = local[id] = subjects.length;
        subjects.push(this.index.subjectOf(id));
      }
      sid[k] = l;
    }
    const buf = encodeSegmentIndex({
      firstSeq: seg.firstSeq,
      size: seg.size,
      lastBatchPos: seg.lastBatchPos,
      lastBatchCrc: seg.lastBatchCrc,
      batchSeq: seg.batchSeq,
      batchCount: seg.batchCount,
      batchPos: seg.batchPos,
      batchLen: seg.batchLen,
      batchTime: seg.batchTime,
      tombs: seg.tombs,
      span: Math.max(0, span),
      sid,
      size_,
      subjects,
    });
    const path = join(this.dir, seg.name + INDEX_SUFFIX);
    const tmp = path + ".tmp";
    const fh = await this.fs.open(tmp, "replace");
    try {
      await writeFully(fh, buf, 0);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await this.fs.rename(tmp, path);
    await this.fs.syncDir(this.dir);
    seg.indexed = true;
    this.io.indexesWritten++;
  }

  /** Waits for background maintenance (tests and benchmarks use it to observe compaction). */
  async settle(): Promise<void> {
    while (this.maintenance !== null || this.writing || this.scheduled || this.tombTimer !== null || this.evicted.length > 0) {
      if (this.tombTimer !== null) {
        clearTimeout(this.tombTimer);
        this.tombTimer = null;
        this.flushTombstones = true;
        this.kick();
      }
      if (this.evicted.length > 0 && !this.writing && !this.scheduled) {
        this.flushTombstones = true;
        this.kick();
      }
      await (this.maintenance ?? new Promise<void>((r) => setImmediate(r)));
    }
  }

  // ---- lifecycle ----

  /** Writes what is queued (and pending tombstones), then indexes and closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.tombTimer) clearTimeout(this.tombTimer);
    this.tombTimer = null;
    if (this.spareTimer) clearTimeout(this.spareTimer);
    this.spareTimer = null;
    if (this.ageTimer) clearInterval(this.ageTimer);
    this.flushTombstones = true;
    this.closed = true;
    if (this.writing || this.scheduled || this.staged.length > 0 || this.ops.length > 0 || this.evicted.length > 0) {
      await new Promise<void>((resolve) => {
        this.idle.push(resolve);
        if (!this.writing && !this.scheduled) this.writeLoop();
      });
    }
    if (this.maintenance) await this.maintenance;
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.sync !== "always") await this.syncNow();
    for (const s of this.segments) {
      if (!s.indexed && !s.damaged) await this.writeIndex(s).catch((err) => this.warn(`index of ${s.name}: ${(err as Error).message}`));
    }
    for (const s of this.segments) await s.fh.close();
  }
}

/** Offset of record `i` of the batch at `at`, or -1 if the records do not reach it. */
function recordAt(buf: Buffer, at: number, i: number): number {
  const end = at + buf.readUInt32LE(at) + 8;
  let p = at + BATCH_HEADER;
  for (let k = 0; k < i; k++) {
    if (p + 4 > end) return -1;
    p += buf.readUInt32LE(p) + 4;
  }
  return p + 4 <= end ? p : -1;
}

/** Sequential reads through a file in large windows, so that recovery costs few syscalls. */
class WindowReader {
  buf = Buffer.allocUnsafe(SCAN_CHUNK);
  start = 0;
  len = 0;
  constructor(
    private readonly fh: StoreFile,
    private readonly fileSize: number,
  ) {}

  /** Makes file bytes [pos, pos+n) available in buf at pos - start; false if the file is shorter. */
  async ensure(pos: number, n: number): Promise<boolean> {
    if (pos >= this.start && pos + n <= this.start + this.len) return true;
    if (pos + n > this.fileSize) return false;
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    const bytesRead = await this.fh.read(this.buf, 0, Math.min(this.buf.length, this.fileSize - pos), pos);
    this.start = pos;
    this.len = bytesRead;
    return bytesRead >= n;
  }
}

export function segmentName(firstSeq: number): string {
  return String(firstSeq).padStart(20, "0") + SEGMENT_SUFFIX;
}
