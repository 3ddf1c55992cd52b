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
import { nodeFs, writeFileDurably, writeFully, type StoreFile, type StoreFs } from "./io.js";
import {
  AppendRun,
  limitRefusal,
  refusal,
  runRefusal,
  subjectAt,
  type AppendCallback,
  type AppendInput,
  StorageError,
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
  /** An error fails the sync; a promise holds it until it settles (a slow disk). */
  sync?(file: string): Error | Promise<void> | null;
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
  /** Where recovery reports what it repaired or found unreadable, and where storage failures are reported. */
  onWarning?: (text: string) => void;
  /** First wait before a failed log is reopened from disk (doubling to 30 s while it keeps failing). Default 1 s. */
  reopenDelayMs?: number;
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
/**
 * A log quiet this long after a data batch gets a marker batch after it (an
 * empty tombstone batch, which names the next sequence): if the data batch
 * rots later, recovery finds a valid batch after the damage, so it reports
 * the loss instead of taking it for a torn tail and reusing its sequences.
 */
const MARKER_DELAY_MS = 200;
const REOPEN_MAX_DELAY_MS = 30_000;
const QUARANTINE_DIR = "quarantine";
const LOST_FILE = "lost.json";
/** Written and synced by a reopen to see that the disk takes writes; a leftover is removed on open (.tmp). */
const PROBE_FILE = "probe.tmp";

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

/** Why a read of stored bytes returned none: the file ends first (damage), or the read failed (may pass). */
type ReadFailure = "short" | "error";

interface ScanWindow {
  seg: Segment;
  b0: number;
  b1: number;
  /** File position of batch b0. */
  start: number;
  /** Empty if the read failed, and why. */
  buf: Buffer;
  failure: ReadFailure | null;
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
  private readonly opts: FileLogOptions;
  private readonly reopenDelayMs: number;
  private reopenTimer: NodeJS.Timeout | null = null;
  private reopenAttempts = 0;
  private reopening = false;
  private reopenRun: Promise<void> | null = null;
  /** The newest batch of the log is a data batch with nothing written after it: a marker is due once it is quiet. */
  private markerDue = false;
  private markerWanted = false;
  private markerTimer: NodeJS.Timeout | null = null;
  /** The sequence recovery found assigned beyond what the segments still hold (an index file's claim), or 0. */
  private claimedLast = 0;
  /** Damaged places already copied to the quarantine directory, by "segment@position". */
  private readonly quarantined = new Set<string>();
  private lostSaving: Promise<void> | null = null;
  private lostDirty = false;
  /** Since open: batches written, fdatasyncs, compactions, index files written and found damaged, segments read whole on open. */
  readonly io = { batches: 0, syncs: 0, compactions: 0, indexesWritten: 0, indexesRebuilt: 0, segmentsScanned: 0, reopens: 0, markers: 0 };

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
    this.opts = opts;
    this.reopenDelayMs = opts.reopenDelayMs ?? 1000;
    this.limits = { ...opts.limits };
    this.index.onRemove = (seq, size) => this.noteRemoved(seq, size);
  }

  /** Opens (creating if needed) the log in `dir`, recovering what a crash left. */
  static async open(opts: FileLogOptions): Promise<FileLog> {
    const log = new FileLog(opts.dir, opts);
    await log.fs.mkdirp(opts.dir);
    await log.recover();
    await log.saveLost();
    if (log.sync === "interval") {
      log.syncTimer = setInterval(() => void log.syncNow(), log.syncIntervalMs);
      log.syncTimer.unref();
    }
    log.applyLimits();
    log.scheduleMaintenance();
    return log;
  }

  // ---- appends, deletes and the write loop ----

  get backlogMessages(): number {
    return this.pendingCount;
  }

  get backlogBytes(): number {
    return this.pendingBytes;
  }

  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const perSubject = this.limits.discardNewPerSubject === true;
    const refused =
      refusal(this.unusable(), size, this.maxRecordBytes) ??
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
      this.unusable(),
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
      const refused = this.unusable();
      if (refused !== null) return reject(refused);
      this.ops.push({ kind: "delete", seq, done: (err, n) => (err ? reject(err) : resolve(n > 0)) });
      this.kick();
    });
  }

  purge(opts: PurgeOptions = {}): Promise<number> {
    return new Promise((resolve, reject) => {
      const refused = this.unusable();
      if (refused !== null) return reject(refused);
      this.ops.push({ kind: "purge", opts, done: (err, n) => (err ? reject(err) : resolve(n)) });
      this.kick();
    });
  }

  setLimits(limits: Limits): void {
    this.limits = { ...limits };
    this.applyLimits();
  }

  /** Why the log takes no changes now (closed, or failed and not yet reopened), or null. */
  private unusable(): Error | null {
    if (this.closed) return new Error("log is closed");
    return this.writeError;
  }

  private kick(): void {
    if (this.reopening) return; // the reopened log kicks again once it has taken over
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
      if (this.writeError === null && (this.staged.length > 0 || this.ops.length > 0 || (this.flushTombstones && this.evicted.length > 0) || this.markerWanted)) this.kick();
      else {
        this.dropSparesLater();
        if (this.evicted.length > 0 && this.writeError === null) this.armTombstoneFlush();
        if (this.markerDue && this.writeError === null) this.armMarker();
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

  private armMarker(): void {
    if (this.markerTimer !== null || this.closed) return;
    this.markerTimer = setTimeout(() => {
      this.markerTimer = null;
      // Busy again: the writer arms this anew when it next goes idle.
      if (!this.markerDue || this.closed || this.writeError !== null || this.writing || this.scheduled || this.staged.length > 0) return;
      this.markerWanted = true;
      this.kick();
    }, MARKER_DELAY_MS);
    this.markerTimer.unref();
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
      if (this.writeError !== null) {
        // Nothing more is written or synced. The sync in flight decides its own rounds; every other one fails.
        if (syncing !== null) {
          await syncing.done;
          continue;
        }
        if (written.length > 0) {
          await written[0].seg.fh.truncate(written[0].pos).catch(() => {});
          for (const r of written.splice(0)) this.failRound(r, this.writeError);
        }
        this.failQueued(this.writeError);
        return;
      }
      if (syncing === null && written.length > 0) {
        syncing = this.startSync(written.splice(0));
        continue;
      }
      const newest = written.length > 0 ? written[written.length - 1] : syncing !== null ? syncing.rounds[syncing.rounds.length - 1] : null;
      const work = this.staged.length > 0 || this.ops.length > 0 || (this.flushTombstones && this.evicted.length > 0) || this.markerWanted;
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
    this.stick(err);
    await s.rounds[0].seg.fh.truncate(s.rounds[0].pos).catch(() => {});
    for (const r of s.rounds) this.failRound(r, this.writeError ?? err);
    for (const r of written.splice(0)) this.failRound(r, this.writeError ?? err);
  }

  /** Fails every append and operation still queued: the log took a storage error. */
  private failQueued(err: Error): void {
    for (const b of this.staged.splice(0)) this.settleStaged(b, err, 0);
    for (const op of this.ops.splice(0)) op.done(err, 0);
    this.markerWanted = false;
  }

  /** A write or sync failed: every change is refused from now on, and the log is reopened from disk later. */
  private stick(cause: Error): void {
    if (this.writeError !== null) return;
    const err = new StorageError(this.dir, cause);
    this.writeError = err;
    this.warn(err.message);
    this.scheduleReopen();
  }

  private scheduleReopen(): void {
    if (this.closed || this.reopenTimer !== null) return;
    const delay = Math.min(REOPEN_MAX_DELAY_MS, this.reopenDelayMs * 2 ** Math.min(this.reopenAttempts, 5));
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      this.reopenRun = this.reopen().finally(() => (this.reopenRun = null));
    }, delay);
    this.reopenTimer.unref();
  }

  /**
   * Recovers a failed log from what is known to be on disk. Under sync
   * `always` the last segment is first cut back to the end of the last round
   * that landed: what was written after it may exist in the page cache only.
   * A fresh recovery then reads the files, and its result replaces this
   * log's state in one synchronous step, so no reader sees a half-built one.
   */
  private async reopen(): Promise<void> {
    if (this.closed || this.writeError === null) return;
    if (this.writing || this.scheduled || this.maintenance !== null) return this.scheduleReopen();
    this.reopening = true;
    this.reopenAttempts++;
    try {
      const last = this.segments[this.segments.length - 1];
      if (last !== undefined && this.sync === "always") {
        const fh = await this.fs.open(join(this.dir, last.name), "existing");
        try {
          if ((await fh.size()) > last.size) {
            await fh.truncate(last.size);
            await fh.datasync();
          }
        } finally {
          await fh.close();
        }
      }
      await this.probeDisk();
      const fresh = new FileLog(this.dir, this.opts);
      await fresh.recover();
      if (this.closed) {
        for (const seg of fresh.segments) await seg.fh.close();
        return;
      }
      this.takeOver(fresh);
      this.writeError = null;
      this.reopenAttempts = 0;
      this.io.reopens++;
      this.warn(`${this.dir}: reopened from what is on disk after the storage failure; taking writes again`);
    } catch (err) {
      this.warn(`reopening ${this.dir} failed: ${(err as Error).message}`);
    } finally {
      this.reopening = false;
    }
    if (this.writeError !== null) return this.scheduleReopen();
    this.applyLimits();
    this.scheduleMaintenance();
    if (this.markerDue) this.armMarker();
    this.kick();
  }

  /** Writes and syncs a scratch file: a reopen takes writes again only when the disk does. */
  private async probeDisk(): Promise<void> {
    const name = PROBE_FILE;
    const fh = await this.fs.open(join(this.dir, name), "replace");
    try {
      const fault = this.faults?.write?.(name, 8) ?? null;
      if (fault !== null) throw fault.error;
      await writeFully(fh, Buffer.alloc(8), 0);
      const syncFault = this.faults?.sync?.(name) ?? null;
      if (syncFault instanceof Promise) await syncFault;
      else if (syncFault !== null) throw syncFault;
      await fh.datasync();
    } finally {
      await fh.close();
      await this.fs.remove(join(this.dir, name));
    }
  }

  /** Adopts the state a fresh recovery built (see reopen). */
  private takeOver(fresh: FileLog): void {
    for (const seg of this.segments) this.retire(seg);
    this.segments.length = 0;
    this.segments.push(...fresh.segments);
    this.corrupt.length = 0;
    this.corrupt.push(...fresh.corrupt);
    this.lost.length = 0;
    this.lost.push(...fresh.lost);
    this.index = fresh.index;
    this.index.onRemove = (seq, size) => this.noteRemoved(seq, size);
    this.lastSeq = fresh.lastSeq;
    this.lastTime = fresh.lastTime;
    this.tombNextSeq = fresh.tombNextSeq;
    this.claimedLast = fresh.claimedLast;
    this.markerDue = fresh.markerDue;
    // Evicted messages not yet tombstoned are back on disk; limits are applied again.
    this.evicted = [];
    this.windows = [];
    this.cached = null;
    this.removalSeg = null;
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
      this.stick(err instanceof Error ? err : new Error(String(err)));
      this.failRound(round, this.writeError!);
      return null;
    }
    round.seg = seg;
    round.pos = inflight !== null ? inflight.end : seg.size;
    round.data = batch !== null ? sealBatch(batch.buf, batch.used, firstSeq, time, n) : null;
    // A round of tombstones names the next sequence, so it serves as the marker too.
    const marker = this.markerWanted && tombs.length === 0;
    this.markerWanted = false;
    round.tomb = tombs.length > 0 || marker ? encodeTombstones(tombs, firstSeq + n, time) : null;
    if (marker) this.io.markers++;
    round.end = round.pos + (round.data?.length ?? 0) + (round.tomb?.length ?? 0);
    try {
      if (round.data !== null) await this.write(seg, round.data, round.pos);
      if (round.tomb !== null) await this.write(seg, round.tomb, round.pos + (round.data?.length ?? 0));
      this.io.batches++;
    } catch (err) {
      this.stick(err instanceof Error ? err : new Error(String(err)));
      // Leave no partial batch behind.
      await seg.fh.truncate(round.pos).catch(() => {});
      this.failRound(round, this.writeError!);
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
      this.markerDue = true;
    }
    if (tomb !== null) {
      for (const t of tombs) seg.tombs.push(t);
      seg.endBatch(pos + (data?.length ?? 0), tomb.length, tomb.readUInt32LE(4));
      this.markerDue = false;
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
    if (fault instanceof Promise) await fault;
    else if (fault !== null) throw fault;
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
    if (!this.unsynced || this.writeError !== null) return;
    this.unsynced = false;
    const seg = this.segments[this.segments.length - 1];
    try {
      await seg?.fh.datasync();
    } catch (err) {
      // Never retried on the same file: what it covered may be gone although a second try would succeed.
      this.stick(err instanceof Error ? err : new Error(String(err)));
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
          const problem = w.failure ?? checkBatch(buf, at, at + seg.batchLen[b]);
          if (problem !== null) {
            // Skipped either way; only a batch that is there and wrong is damage (an I/O error may pass).
            if (problem !== "error") this.damagedBatch(seg, b, `${problem} on read`);
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
    const got = await this.readRange(seg, start, end - start);
    const failure = typeof got === "string" ? got : null;
    const w: ScanWindow = { seg, b0, b1, start, buf: typeof got === "string" ? Buffer.alloc(0) : got, failure, verified: new Uint8Array(b1 - b0 + 1) };
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

  /** `len` bytes at `pos`: "short" if the file ends first (damage), "error" if the read failed (perhaps passing). */
  private async readRange(seg: Segment, pos: number, len: number): Promise<Buffer | ReadFailure> {
    const buf = Buffer.allocUnsafe(len);
    seg.users++;
    try {
      let off = 0;
      while (off < len) {
        const n = await seg.fh.read(buf, off, len - off, pos + off);
        if (n <= 0) return "short";
        off += n;
      }
      return buf;
    } catch (err) {
      this.warn(`${join(this.dir, seg.name)}: read at ${pos} failed: ${(err as Error).message}`);
      return "error";
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
    if (buf === "error") return null;
    const problem = buf === "short" ? "short" : checkBatch(buf, 0, len);
    if (problem !== null || typeof buf === "string") {
      this.damagedBatch(seg, b, `${problem} on read`);
      return null;
    }
    this.cached = { seg, b, buf };
    return buf;
  }

  // ---- damage: reported, quarantined, its sequences lost (never reused) ----

  /**
   * A batch the index knows failed its check on read: reported, its bytes
   * copied to the quarantine directory, and its messages reported lost and
   * taken out of the index, so that reads step over them from now on.
   */
  private damagedBatch(seg: Segment, b: number, reason: string): void {
    const pos = seg.batchPos[b];
    if (seg.retired || this.corrupt.some((c) => c.segment === seg.name && c.position === pos)) return;
    this.reportCorrupt(seg, pos, reason);
    void this.quarantine(seg, pos, seg.batchLen[b]).catch((err) => this.warn(`quarantine of ${seg.name}@${pos} failed: ${(err as Error).message}`));
    const first = seg.batchSeq[b];
    const removed = this.index.removeRange(first, first + seg.batchCount[b] - 1);
    let bytes = seg.batchLen[b];
    for (let i = 0; i < removed.length; ) {
      let j = i;
      while (j + 1 < removed.length && removed[j + 1] === removed[j] + 1) j++;
      this.noteLost(removed[i], removed[j], bytes);
      bytes = 0;
      i = j + 1;
    }
    this.saveLostLater();
  }

  /** Copies damaged bytes to \`quarantine/<segment>@<position>.bad\` (once), for whoever investigates. */
  private async quarantine(seg: Segment, position: number, length: number): Promise<void> {
    const key = `${seg.name}@${position}`;
    if (length <= 0 || this.quarantined.has(key)) return;
    this.quarantined.add(key);
    const bytes = await this.readRange(seg, position, length);
    if (typeof bytes === "string") return;
    const dir = join(this.dir, QUARANTINE_DIR);
    await this.fs.mkdirp(dir);
    let fh: StoreFile;
    try {
      fh = await this.fs.open(join(dir, `${key}.bad`), "create");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return; // found and kept at an earlier open
      throw err;
    }
    try {
      await writeFully(fh, bytes, 0);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await this.fs.syncDir(dir);
  }

  /** Sequences from..to are gone for good; recorded (once) and reported. */
  private noteLost(from: number, to: number, bytes: number): void {
    if (to < from) return;
    if (this.lost.some((l) => l.from === from && l.to === to)) return;
    this.lost.push({ from, to, bytes });
    this.lost.sort((x, y) => x.from - y.from);
    this.lostDirty = true;
    this.warn(`${this.dir}: sequences ${from}..${to} are lost to damage${bytes > 0 ? ` (${bytes} bytes quarantined)` : ""}`);
  }

  /** Writes lost.json if it changed, so a loss stays reported after the damaged bytes are gone (compacted away). */
  private async saveLost(): Promise<void> {
    while (this.lostDirty) {
      this.lostDirty = false;
      await writeFileDurably(this.fs, join(this.dir, LOST_FILE), Buffer.from(JSON.stringify(this.lost)));
    }
  }

  private saveLostLater(): void {
    if (this.lostSaving !== null || !this.lostDirty) return;
    this.lostSaving = this.saveLost()
      .catch((err) => this.warn(`${join(this.dir, LOST_FILE)}: ${(err as Error).message}`))
      .finally(() => {
        this.lostSaving = null;
        if (this.lostDirty && !this.closed) this.saveLostLater();
      });
  }

  private async loadLost(): Promise<void> {
    let text: Buffer;
    try {
      text = await this.fs.readFile(join(this.dir, LOST_FILE));
    } catch {
      return; // none: nothing was ever lost
    }
    try {
      const list = JSON.parse(text.toString("utf8")) as LostRange[];
      for (const l of list) {
        if (Number.isSafeInteger(l.from) && Number.isSafeInteger(l.to) && l.from <= l.to) this.lost.push({ from: l.from, to: l.to, bytes: Number(l.bytes) || 0 });
      }
    } catch (err) {
      this.warn(`${join(this.dir, LOST_FILE)} is unreadable (${(err as Error).message}); it is rewritten from what this open finds`);
      this.lostDirty = true;
    }
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
    await this.loadLost();
    const entries = await this.fs.readdir(this.dir);
    for (const n of entries) {
      // Leftovers of a compaction or index write that a crash interrupted.
      if (n.endsWith(".tmp")) await this.fs.remove(join(this.dir, n));
    }
    const names = entries.filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    const indexes = new Set(entries.filter((n) => n.endsWith(INDEX_SUFFIX)));
    // Damage found by this open: sequences destroyed, before tombstones are taken into account.
    const found: LostRange[] = [];
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
      const size = await fh.size();
      seg.createdAt = await this.fs.mtime(join(this.dir, name));
      const isLast = i === names.length - 1;
      let from = 0;
      if (indexes.has(name + INDEX_SUFFIX)) {
        from = await this.loadIndex(seg, size, isLast);
      }
      const nextFirst = isLast ? 0 : Number(names[i + 1].slice(0, 20));
      if (from < size || size === 0) await this.scanSegment(seg, from, size, isLast, nextFirst, found);
      else seg.indexed = !seg.damaged;
      this.segments.push(seg);
      nextSeq = Math.max(nextSeq, seg.lastSeq + 1);
    }
    // Tombstones record the next sequence when written: a log whose newest messages were all deleted keeps counting.
    const tombs: number[] = [];
    for (const seg of this.segments) {
      this.lastSeq = Math.max(this.lastSeq, seg.lastSeq);
      for (let i = 0; i < seg.tombs.length; i += 2) {
        this.index.kill(seg.tombs[i], seg.tombs[i + 1]);
        tombs.push(seg.tombs[i], seg.tombs[i + 1]);
      }
    }
    // Sequences a tombstone deleted were not lost, whatever happened to their bytes.
    for (const l of withoutRanges(found, tombs)) this.noteLost(l.from, l.to, l.bytes);
    const last = this.segments[this.segments.length - 1];
    if (last === undefined) await this.createSegment(1);
    else {
      // Never hand out a sequence again: not one a later segment is named after, a tombstone or marker
      // names as next, an index claimed, or that was lost.
      this.lastSeq = Math.max(this.lastSeq, last.firstSeq - 1, this.tombNextSeq - 1, this.claimedLast);
      if (last.batchTime.length > 0) this.lastTime = last.batchTime[last.batchTime.length - 1];
      this.markerDue = last.batchPos.length > 0 && last.lastBatchPos === last.batchPos[last.batchPos.length - 1];
    }
    for (const l of this.lost) this.lastSeq = Math.max(this.lastSeq, l.to);
    this.index.finishLoad();
    for (const seg of this.segments) {
      seg.liveBytes = 0;
      for (let b = 0; b < seg.batchSeq.length; b++) {
        for (let s = seg.batchSeq[b], e = s + seg.batchCount[b]; s < e; s++) seg.liveBytes += this.index.sizeAt(s);
      }
    }
  }

  private tombNextSeq = 0;

  /**
   * Takes a segment's index if it matches the file; the offset up to which it
   * did (0: not used). An index that is intact but does not match the last
   * segment (damage at its end, say) still tells which sequences were
   * assigned: they are never handed out again.
   */
  private async loadIndex(seg: Segment, fileSize: number, isLast: boolean): Promise<number> {
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
      if (isLast && typeof d !== "string" && d.firstSeq === seg.firstSeq && d.span > 0) this.claimedLast = Math.max(this.claimedLast, d.firstSeq + d.span - 1);
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
   * Reads a segment batch by batch from `from`, rebuilding its index. A batch
   * that fails its check is either a torn tail or damage:
   * - damage, when a valid batch follows it (or the segment is sealed): its
   *   bytes are quarantined and kept out of reads, the sequences it held are
   *   lost (from what was expected up to the next valid batch or segment),
   *   and the scan goes on from the next valid batch; every intact batch
   *   after it is kept;
   * - a torn tail, when nothing valid follows it in the last segment: what a
   *   crash left of writes never acknowledged. It is cut off, unless an index
   *   claimed those sequences: then they are lost, not forgotten.
   */
  private async scanSegment(seg: Segment, from: number, fileSize: number, isLast: boolean, nextFirst: number, found: LostRange[]): Promise<void> {
    const reader = new WindowReader(seg.fh, fileSize);
    if (from === 0) this.io.segmentsScanned++;
    let pos = from;
    let expect = seg.batchSeq.length > 0 ? seg.lastSeq + 1 : seg.firstSeq;
    let afterDamage = false;
    while (pos < fileSize) {
      const got = await this.readBatchAt(reader, pos, expect, afterDamage);
      afterDamage = false;
      if (typeof got === "string") {
        const resume = await this.resync(reader, pos + 1, fileSize, expect);
        if (resume < 0 && isLast) {
          if (this.claimedLast >= expect) {
            this.reportCorrupt(seg, pos, got);
            await this.quarantine(seg, pos, fileSize - pos);
            found.push({ from: expect, to: this.claimedLast, bytes: fileSize - pos });
          }
          this.warn(`${join(this.dir, seg.name)}: cut ${fileSize - pos} bytes of torn tail at ${pos} (${got})`);
          await seg.fh.truncate(pos);
          await seg.fh.datasync();
          fileSize = pos;
          break;
        }
        const end = resume < 0 ? fileSize : resume;
        this.reportCorrupt(seg, pos, got);
        await this.quarantine(seg, pos, end - pos);
        let next = nextFirst;
        if (resume >= 0 && (await reader.ensure(resume, BATCH_HEADER))) next = readBatchHeader(reader.buf, resume - reader.start).firstSeq;
        if (next > expect) found.push({ from: expect, to: next - 1, bytes: end - pos });
        if (resume < 0) break;
        pos = resume;
        afterDamage = true; // the damaged batch's sequences are skipped
        continue;
      }
      const { hdr, subjects, sizes } = got;
      if ((hdr.flags & FLAG_TOMBSTONES) !== 0) {
        readTombstones(reader.buf, pos - reader.start, seg.tombs);
        this.tombNextSeq = Math.max(this.tombNextSeq, hdr.firstSeq);
        // It names the next sequence: after damage, that is where the next data batch starts.
        expect = Math.max(expect, hdr.firstSeq);
      } else {
        seg.addBatch(hdr.firstSeq, hdr.count, pos, hdr.length, hdr.time);
        for (let i = 0; i < hdr.count; i++) this.index.load(hdr.firstSeq + i, this.index.intern(subjects[i]), sizes[i]);
        expect = hdr.firstSeq + hdr.count;
      }
      seg.endBatch(pos, hdr.length, reader.buf.readUInt32LE(pos - reader.start + 4));
      pos += hdr.length;
    }
    seg.size = isLast ? fileSize : pos;
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
      // A failed log writes nothing until it is reopened.
      if (this.closed || this.writeError !== null) return;
      const victim = this.compactionCandidate();
      if (victim === null) break;
      await this.compact(victim);
    }
    for (let i = 0; i < this.segments.length - 1 && !this.closed && this.writeError === null; i++) {
      const seg = this.segments[i];
      if (!seg.indexed && !seg.damaged) await this.writeIndex(seg);
    }
  }

  /** A sealed segment that is damaged, mostly dead, or holding only tombstones nothing needs any more. */
  private compactionCandidate(): Segment | null {
    let best: Segment | null = null;
    let bestRatio = this.compactBelow;
    for (let i = 0; i < this.segments.length - 1; i++) {
      const seg = this.segments[i];
      // Its damage is quarantined and its loss recorded: rewriting it leaves a clean file that gets an index again.
      if (seg.damaged) return seg;
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
        if (buf === "error") return; // tried again at the next maintenance
        const problem = buf === "short" ? "short" : checkBatch(buf, 0, buf.length);
        if (problem !== null || typeof buf === "string") {
          // Damage found here is handled as on any read; the rewritten segment is clean.
          this.damagedBatch(seg, b, `${problem} on read (compaction)`);
          if (seg.retired) return;
          continue;
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
    await writeFileDurably(this.fs, join(this.dir, seg.name + INDEX_SUFFIX), buf);
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
    if (this.markerTimer) clearTimeout(this.markerTimer);
    this.markerTimer = null;
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    this.flushTombstones = true;
    this.closed = true;
    if (this.reopenRun !== null) await this.reopenRun;
    // A clean stop leaves a batch after the last data batch too (see MARKER_DELAY_MS).
    this.markerWanted = this.markerDue && this.writeError === null;
    if (this.writing || this.scheduled || this.staged.length > 0 || this.ops.length > 0 || this.evicted.length > 0 || this.markerWanted) {
      await new Promise<void>((resolve) => {
        this.idle.push(resolve);
        if (!this.writing && !this.scheduled) this.writeLoop();
      });
    }
    if (this.maintenance) await this.maintenance;
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.sync !== "always") await this.syncNow();
    if (this.lostSaving !== null) await this.lostSaving;
    for (const s of this.segments) {
      // A failed log writes nothing more: the next open reads the segments themselves.
      if (!s.indexed && !s.damaged && this.writeError === null) await this.writeIndex(s).catch((err) => this.warn(`index of ${s.name}: ${(err as Error).message}`));
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

/**
 * `ranges` without the sequences in `remove` (flat inclusive pairs, any
 * order); a range's bytes stay with its first surviving piece.
 */
export function withoutRanges(ranges: readonly LostRange[], remove: readonly number[]): LostRange[] {
  const cuts: Array<[number, number]> = [];
  for (let i = 0; i < remove.length; i += 2) cuts.push([remove[i], remove[i + 1]]);
  cuts.sort((a, b) => a[0] - b[0]);
  const out: LostRange[] = [];
  for (const r of ranges) {
    let from = r.from;
    let bytes = r.bytes;
    for (const [a, b] of cuts) {
      if (b < from || a > r.to) continue;
      if (a > from) {
        out.push({ from, to: a - 1, bytes });
        bytes = 0;
      }
      from = Math.max(from, b + 1);
      if (from > r.to) break;
    }
    if (from <= r.to) out.push({ from, to: r.to, bytes });
  }
  return out;
}
