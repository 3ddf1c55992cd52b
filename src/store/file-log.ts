/**
 * A message log in segment files, with group commit: appends that arrive
 * while a write is in flight are written together next, as one batch, and
 * made durable with one fdatasync. An append is acknowledged only once its
 * batch is as durable as the sync policy says; readers never see a message
 * before that. Deletes are tombstone batches in the same files; sealed
 * segments that are mostly dead are rewritten in the background.
 */

import { join } from "node:path";
import { crc32c } from "../util/crc32c.js";
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
  sealForeign,
  TOMBSTONE_BYTES,
  viewRecord,
  type BatchHeader,
  type KnownTail,
  FLAG_FOREIGN,
  foreignBodySize,
  foreignHead,
  foreignParts,
  foreignShare,
  readU64,
  batchPrefix,
} from "./format.js";
import { ageTimer } from "./live-index.js";
import { DEAD, PagedIndex, Segment, SegmentDetail } from "./paged-index.js";
import { IndexedLog } from "./log-index.js";
import { forgetLostFrom, LostRecord, quarantine, withoutRanges } from "./damage.js";
import { END_MARK_FILE, EndMarkWriter, readEndMark, type EndMark } from "./end-mark.js";
import { decodeDetail, decodeSummary, encodeSegmentIndex, INDEX_HEADER, summaryLength, type DetailPlace, type IndexSummary } from "./segment-index.js";
import { nodeFs, readExactly, writeFileDurably, writeFully, writeFullyV, type StoreFile, type StoreFs } from "../util/fs.js";
import {
  AppendRun,
  limitRefusal,
  purgeRefusal,
  refusal,
  sequenceRefusal,
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
  noForeignRecords,
  copyMisfit,
  goneMisfit,
  isForeignBatch,
  type ForeignBatch,
  type ForeignRecords,
  type StoredItem,
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
  /** Reads foreign batches (appendBatch) as messages; without it, such a batch reads as an error. */
  foreign?: ForeignRecords;
}

const SEGMENT_SUFFIX = ".seg";
const INDEX_SUFFIX = ".idx";
const SCAN_CHUNK = 1024 * 1024;
/** Read windows kept for scans: enough for a few consumers reading along. */
const SCAN_WINDOWS = 4;
/**
 * The newest data batches kept in memory as they land, for readers at the
 * log's end (a replica's followers, consumers keeping up): they would read
 * each one from the file right after it was written, through the thread
 * pool. A batch larger than TAIL_BATCH_BYTES is not kept; an idle log
 * drops them with its spare buffers (SPARE_IDLE_MS), so many streams cost
 * nothing at rest.
 */
const TAIL_BATCHES = 2;
const TAIL_BATCH_BYTES = 64 * 1024;
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
/**
 * A data batch starting more sequences than this past the data of the
 * newest segment (a copy, appendCopy, that skips them; an append after a
 * purge moved the log on, or a stream's first_seq) starts a new segment
 * file named after its first sequence: a segment's detail keeps a slot per
 * sequence from the file's first, 8 bytes each, so a gap of millions would
 * cost megabytes (and one of 2^50 more than there is); sequences between
 * two files belong to neither and are gone.
 */
const GAP_ROLL = 4096;

/** Whether queued batch `b`, written after sequence `next` - 1, holds data starting more than GAP_ROLL past `dataEnd` (its file's data). */
function startsFarPast(b: Staged, next: number, dataEnd: number): boolean {
  return b.count > 0 && (b.copySeq !== 0 ? b.copySeq : next) - dataEnd > GAP_ROLL;
}
/** How often, at most, the write path looks up the log's directory to see that it is still the one opened. */
const DIR_CHECK_MS = 1000;
/** Written and synced by a reopen to see that the disk takes writes; a leftover is removed on open (.tmp). */
const PROBE_FILE = "probe.tmp";
/**
 * The most a reopen's probe writes: as much as the write that failed, up to
 * this (a batch the size of the default max_payload).
 */
const PROBE_MAX_BYTES = 1024 * 1024;

/**
 * A truncation decided and not yet known to be complete (see truncateFrom):
 * written durably before any file changes, removed once all have been made;
 * an open that finds it makes them (again) before it reads anything.
 */
const TRUNCATE_FILE = "truncate.json";

interface TruncationIntent {
  /** The log's next sequence once it is done. */
  next: number;
  /** The segment that is cut (every later one goes), or created empty when none starts at or below `next`. */
  segment: string;
  /** Where it is cut. */
  at: number;
  /** Base64 of what is written at `at`: the kept part of a batch the cut splits, then a tombstone batch naming `next`. */
  tail: string;
}

function parseIntent(text: Buffer): TruncationIntent {
  const t = JSON.parse(text.toString("utf8")) as TruncationIntent;
  if (!Number.isSafeInteger(t.next) || t.next < 1 || !/^\d{20}\.seg$/.test(t.segment) || !Number.isSafeInteger(t.at) || t.at < 0 || typeof t.tail !== "string") {
    throw new Error("not a truncation this log wrote");
  }
  return t;
}

/**
 * Makes the file changes of a truncation; each step can be made again after
 * a crash in any of them (removals of what may be gone already, a cut and a
 * write of the same bytes at the same place), so the intent is removed last.
 */
async function applyTruncation(fs: StoreFs, dir: string, t: TruncationIntent): Promise<void> {
  // The end mark claims what is cut: gone before anything is, or the next open would report the cut sequences lost.
  await fs.remove(join(dir, END_MARK_FILE));
  await fs.syncDir(dir);
  for (const n of await fs.readdir(dir)) {
    // Index files of the cut segment and of later ones describe what is no longer there.
    if (n.endsWith(SEGMENT_SUFFIX + INDEX_SUFFIX) && n.slice(0, -INDEX_SUFFIX.length) >= t.segment) await fs.remove(join(dir, n));
    else if (/^\d{20}\.seg$/.test(n) && n > t.segment) await fs.remove(join(dir, n));
  }
  const fh = await fs.open(join(dir, t.segment), t.at === 0 ? "replace" : "existing");
  try {
    await fh.truncate(t.at);
    await writeFully(fh, Buffer.from(t.tail, "base64"), t.at);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await fs.syncDir(dir);
  await forgetLostFrom(fs, dir, t.next);
  await fs.remove(join(dir, TRUNCATE_FILE));
  await fs.syncDir(dir);
}

/** Why a read of stored bytes returned none: the file ends first (damage), or the read failed (may pass). */
type ReadFailure = "short" | "error";

interface ScanWindow {
  seg: Segment;
  d: SegmentDetail;
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
  /** The batch header's room, then the records encoded so far (a foreign batch: its headers only). */
  buf: Buffer;
  used: number;
  /** Records in the batch. */
  count: number;
  /** Each record's subject and stored size; for a foreign batch its one subject, and no sizes (its records share its bytes: foreignShare). */
  subjects: string[];
  sizes: number[];
  /** Sum of the records' sizes. */
  bytes: number;
  /** The append calls that fed this batch, in order, and how many of its records each owns. */
  owners: Array<AppendCallback | AppendRun>;
  spans: number[];
  /**
   * A foreign batch's client bytes (appendBatch), written after `buf` as they
   * are, not copied: the appender leaves them unchanged until its callback.
   * Nothing is gathered into a foreign batch. Null for the log's own records.
   */
  foreign: Buffer | null;
  /** Of the foreign bytes, the part whose CRC-32C its appender gave (ForeignBatch.tailCrc), or null. */
  tail: KnownTail | null;
  /** Tells the appender its foreign bytes are read no more (ForeignBatch.bytesDone); null once told, or for the log's own records. */
  bytesDone: (() => void) | null;
  /** A copy (appendCopy): the sequence and time it is stored at; nothing is gathered into it. 0 for an append. */
  copySeq: number;
  copyTime: number;
  /** A foreign batch's newest record time (ForeignRecords.newestRecordTime), read while its bytes are still lent; null: the batch's time. */
  newest: number | null;
  /** A copied foreign batch's sequences its source no longer stores (ForeignBatch.gone): removed as it lands, tombstoned in its round. */
  gone: readonly number[] | null;
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
  /** The sequence after this round: firstSeq + n, or further when a purge skipped ahead. */
  nextSeq: number;
  /** The sequence after the last data batch in its segment, as of this round (the segment's first if none). */
  dataEnd: number;
  time: number;
  /** The stamp of its tombstone batch (strictly increasing along the log; see Segment.horizon). */
  stamp: number;
  batch: Staged | null;
  /** The data batch: all of it, or a foreign batch's head, which its client bytes (batch.foreign) follow. */
  data: Buffer | null;
  /** Bytes of the data batch in the file (0: none). */
  dataLength: number;
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

export class FileLog extends IndexedLog<PagedIndex> implements MessageLog {
  private segments: Segment[] = [];
  protected index: PagedIndex;
  /** The stamp of the newest tombstone batch written, and of the newest that landed (is reflected in memory). */
  private lastStamp = 0;
  private landedStamp = 0;
  /** Per indexed segment: where its index file's detail is and the subject names it uses. */
  private idxInfo = new Map<Segment, DetailPlace & { names: string[] }>();
  private readonly corrupt: CorruptRange[] = [];
  private lost: LostRecord;
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
  /** The newest landed data batches of the log's own records (TAIL_BATCHES), oldest first: copies, by file position. */
  private tail: Array<{ seg: Segment; pos: number; buf: Buffer }> = [];
  /** The foreign batch decoded last (foreignMessages). */
  private decoded: { seg: Segment; pos: number; messages: StoredMessage[] } | null = null;
  /** Batches scanStored cut lately, with the records they kept: readers at different places read the same batches again. */
  private cuts: Array<{ seg: Segment; pos: number; live: Uint8Array; bytes: Buffer | null }> = [];
  /** Per segment with records, how many tombstone ranges it had when compactionCandidate last asked which are needed. */
  private readonly tombsLooked = new WeakMap<Segment, number>();
  /** Per segment its tombstone ranges merged (coverOf), with how many bounds they were made from. */
  private readonly covers = new WeakMap<Segment, { n: number; ranges: number[] }>();
  private readonly opts: FileLogOptions;
  private readonly reopenDelayMs: number;
  private reopenTimer: NodeJS.Timeout | null = null;
  private reopenAttempts = 0;
  private reopening = false;
  private reopenRun: Promise<void> | null = null;
  /** The directory the log opened ("device:inode"; undefined where the disk cannot tell), and when it was last compared. */
  private dirIdentity: string | undefined;
  private dirCheckedAt = 0;
  /** The newest batch of the log is a data batch with nothing written after it: a marker is due once it is quiet. */
  private markerDue = false;
  private markerWanted = false;
  private markerTimer: NodeJS.Timeout | null = null;
  /** The sequence recovery found assigned beyond what the segments still hold (an index file's claim), or 0. */
  private claimedLast = 0;
  /** Keeps end.mark current as rounds land (see end-mark.ts); made by recovery. */
  private endMark: EndMarkWriter | null = null;
  /** Damaged places already copied to the quarantine directory, by "segment@position". */
  private readonly quarantined = new Set<string>();
  /** A truncation runs: the write loop and maintenance start nothing new. */
  private truncating = false;
  /** A truncation failed after it may have changed files: memory's picture of them is stale until the reopen. */
  private truncationFailed = false;
  /** The truncations asked for, one after another. */
  private truncations: Promise<unknown> = Promise.resolve();
  /** The size of the last write tried, and of the reopen's probe after a failure (see probeDisk). */
  private lastWriteBytes = 8;
  private probeBytes = 8;
  /** Storage failures since open (MessageLog.failures). */
  failures = 0;
  /** Since open: batches written, fdatasyncs, compactions, index files written and found damaged, segments read whole on open, reopens after a failure, markers, details read from index files, batches read from the kept tail. */
  readonly io = { batches: 0, syncs: 0, compactions: 0, indexesWritten: 0, indexesRebuilt: 0, segmentsScanned: 0, reopens: 0, markers: 0, detailsLoaded: 0, tailReads: 0 };

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
    this.lost = new LostRecord(this.fs, this.dir, this.warn);
    this.limits = { ...opts.limits };
    this.index = this.newIndex(this.segments);
  }

  private newIndex(segments: Segment[]): PagedIndex {
    return new PagedIndex(segments, (seg) => this.loadDetail(seg), () => this.scheduleMaintenance());
  }

  /** Opens (creating if needed) the log in `dir`, recovering what a crash left. */
  static async open(opts: FileLogOptions): Promise<FileLog> {
    const log = new FileLog(opts.dir, opts);
    await log.fs.mkdirp(opts.dir);
    log.dirIdentity = log.fs.identity?.(opts.dir) ?? undefined;
    log.dirCheckedAt = Date.now();
    await log.recover();
    await log.lost.save();
    if (log.sync === "interval") {
      log.syncTimer = setInterval(() => void log.syncNow(), log.syncIntervalMs);
      log.syncTimer.unref();
    }
    log.applyLimits();
    log.scheduleMaintenance();
    if (log.nextOnRecordOnly) log.armMarker();
    return log;
  }

  // ---- appends, deletes and the write loop ----

  get backlogMessages(): number {
    return this.pendingCount;
  }

  get backlogBytes(): number {
    return this.pendingBytes;
  }

  // ---- what the index answers without reading a message ----

  /** Segments, and of them those whose detail is in memory (monitoring and tests). */
  get segmentCounts(): { segments: number; detailsInMemory: number } {
    let loaded = 0;
    for (const seg of this.segments) if (seg.detail !== null) loaded++;
    return { segments: this.segments.length, detailsInMemory: loaded };
  }


  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const perSubject = this.limits.discardNewPerSubject === true;
    const refused =
      refusal(this.unusable(), size, this.maxRecordBytes) ??
      sequenceRefusal(this.lastSeq + this.pendingCount, 1) ??
      limitRefusal(
        this.limits,
        this.index.messages + this.pendingCount,
        this.index.bytes + this.pendingBytes,
        size,
        perSubject ? this.index.table.countOf(input.subject) + (this.pendingPerSubject.get(input.subject) ?? 0) : 0,
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
    const refused =
      runRefusal(
        this.unusable(),
        this.maxRecordBytes,
        this.limits,
        this.index.messages + this.pendingCount,
        this.index.bytes + this.pendingBytes,
        run,
        sizes,
        (s) => this.index.table.countOf(s) + (this.pendingPerSubject.get(s) ?? 0),
      ) ?? sequenceRefusal(this.lastSeq + this.pendingCount, n);
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

  appendBatch(batch: ForeignBatch, done: AppendCallback): void {
    const n = batch.count;
    const body = foreignBodySize(batch.subject, batch.bytes.length);
    const unusable = this.unusable();
    const refused =
      (BATCH_HEADER + body > MAX_BATCH_BYTES ? new Error(`batch of ${body} bytes exceeds the limit of ${MAX_BATCH_BYTES - BATCH_HEADER}`) : null) ??
      // Only discard "new" limits refuse a record for what is stored; else the first, largest share decides alone.
      (this.limits.discard !== "new" && n > 0
        ? refusal(unusable, foreignShare(body, n, 0), this.maxRecordBytes)
        : runRefusal(
            unusable,
            this.maxRecordBytes,
            this.limits,
            this.index.messages + this.pendingCount,
            this.index.bytes + this.pendingBytes,
            { count: n, subject: batch.subject, subjects: null },
            foreignShares(body, n),
            (s) => this.index.table.countOf(s) + (this.pendingPerSubject.get(s) ?? 0),
          )) ??
      sequenceRefusal(this.lastSeq + this.pendingCount, n);
    if (refused !== null || n === 0) {
      batch.bytesDone?.();
      done(refused, 0);
      return;
    }
    this.stageForeign(batch, body, 0, 0, done);
  }

  /** Queues a foreign batch of `body` stored bytes after its checks (at copySeq and copyTime for a copy). */
  private stageForeign(batch: ForeignBatch, body: number, copySeq: number, copyTime: number, done: AppendCallback): void {
    const n = batch.count;
    const bytes = Buffer.isBuffer(batch.bytes) ? batch.bytes : Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength);
    const head = foreignHead(batch.format, batch.subject);
    // Nothing per record: the batch's records share its subject and its bytes.
    const b: Staged = { buf: head, used: head.length, count: n, subjects: [batch.subject], sizes: [], bytes: body, owners: [], spans: [], foreign: bytes, tail: batch.tailCrc ?? null, bytesDone: batch.bytesDone ?? null, copySeq, copyTime, newest: this.newestRecordTime(batch.format, bytes), gone: copySeq !== 0 && batch.gone !== undefined && batch.gone.length > 0 ? batch.gone : null };
    this.staged.push(b);
    this.pendingCount += n;
    this.pendingBytes += body;
    if (this.limits.discardNewPerSubject === true) this.pendingPerSubject.set(batch.subject, (this.pendingPerSubject.get(batch.subject) ?? 0) + n);
    this.addOwner(b, done, n);
    this.kick();
  }

  appendCopy(firstSeq: number, time: number, what: RecordRun | ForeignBatch, done: AppendCallback): void {
    const unusable = this.unusable();
    const n = what.count;
    if (isForeignBatch(what)) {
      const body = foreignBodySize(what.subject, what.bytes.length);
      const misfit = what.gone === undefined ? null : goneMisfit(what.gone, firstSeq, n);
      const refused = unusable ?? (BATCH_HEADER + body > MAX_BATCH_BYTES ? new Error(`batch of ${body} bytes exceeds the limit of ${MAX_BATCH_BYTES - BATCH_HEADER}`) : misfit !== null ? new Error(misfit) : null);
      if (refused !== null) {
        what.bytesDone?.();
        done(refused, 0);
        return;
      }
      this.stageForeign(what, body, firstSeq, time, done);
      return;
    }
    const sizes = new Array<number>(n);
    let total = 0;
    let refused = unusable;
    for (let i = 0; i < n && refused === null; i++) {
      sizes[i] = runRecordSize(what, i);
      total += sizes[i];
      refused = refusal(null, sizes[i], this.maxRecordBytes);
    }
    if (refused === null && BATCH_HEADER + total > MAX_BATCH_BYTES) refused = new Error(`copied run of ${total} bytes exceeds the limit of ${MAX_BATCH_BYTES - BATCH_HEADER}`);
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    // A batch of its own, at its source's sequence and time (the leader batched these records together too).
    const b: Staged = { buf: this.batchBuffer(BATCH_HEADER + total), used: BATCH_HEADER, count: 0, subjects: [], sizes: [], bytes: 0, owners: [], spans: [], foreign: null, tail: null, bytesDone: null, copySeq: firstSeq, copyTime: time, newest: null, gone: null };
    this.staged.push(b);
    for (let i = 0; i < n; i++) {
      b.used = encodeRunRecord(b.buf, b.used, what, i);
      this.noteStaged(b, subjectAt(what, i), sizes[i]);
    }
    this.addOwner(b, done, n);
    this.kick();
  }

  /** The batch being gathered, with room for a record of `size` bytes (opening one when it is full). */
  private room(size: number): Staged {
    let b = this.staged.length > 0 ? this.staged[this.staged.length - 1] : undefined;
    if (b === undefined || b.foreign !== null || b.copySeq !== 0 || (b.count > 0 && b.used + size > BATCH_HEADER + this.maxBatchBytes)) {
      // After a full batch another is likely to fill too: take its full size at once rather than grow by copying.
      // Not after a foreign batch or a copy, which say nothing of how many records will follow.
      const full = b !== undefined && b.foreign === null && b.copySeq === 0;
      b = { buf: this.batchBuffer(full ? BATCH_HEADER + this.maxBatchBytes : BATCH_HEADER + size), used: BATCH_HEADER, count: 0, subjects: [], sizes: [], bytes: 0, owners: [], spans: [], foreign: null, tail: null, bytesDone: null, copySeq: 0, copyTime: 0, newest: null, gone: null };
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
    b.count++;
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
      const refused = this.unusable() ?? purgeRefusal(opts, this.lastSeq);
      if (refused !== null) return reject(refused);
      this.ops.push({ kind: "purge", opts, done: (err, n) => (err ? reject(err) : resolve(n)) });
      this.kick();
    });
  }

  setLimits(limits: Limits): void {
    this.limits = { ...limits };
    this.applyLimits();
  }

  async noteLost(from: number, to: number): Promise<void> {
    this.lost.note(from, to, 0);
    await this.lost.settled();
    await this.lost.save();
  }

  truncateFrom(seq: number): Promise<number> {
    const run = this.truncations.then(() => this.truncateNow(seq));
    this.truncations = run.catch(() => {});
    return run;
  }

  /**
   * The truncation (see MessageLog.truncateFrom and ARCHITECTURE.md,
   * "Truncation"): with the writer and maintenance stopped, it decides the
   * cut from memory, writes that decision durably (TRUNCATE_FILE), makes the
   * file changes, and rebuilds what memory holds from the files, as a reopen
   * after a storage failure does. A crash before the decision is durable
   * leaves the log as it was; after, every open completes the truncation
   * before it reads the log.
   */
  private async truncateNow(seq: number): Promise<number> {
    if (!Number.isSafeInteger(seq) || seq < 1) throw new Error(`cannot truncate from sequence ${seq}`);
    let refused = this.unusable();
    if (refused !== null) throw refused;
    this.truncating = true;
    try {
      // Rounds written already land; maintenance finishes the step it is in; nothing new starts.
      while (this.writing || this.scheduled || this.maintenance !== null || this.reopenRun !== null) {
        await (this.maintenance ?? this.reopenRun ?? new Promise<void>((r) => setImmediate(r)));
      }
      // A background save of lost.json (damage found by a read) would undo the truncation's clip of it.
      await this.lost.settled();
      refused = this.unusable();
      if (refused !== null) throw refused;
      if (seq > this.lastSeq) return this.lastSeq + 1;
      const intent = await this.planTruncation(seq);
      const removals = this.index.removals;
      const messages = this.index.messages;
      try {
        // What the cut keeps is durable before the decision is (sync "interval" and "never" leave it in the page cache).
        const cut = this.segments.find((seg) => seg.name === intent.segment);
        if (this.sync !== "always" && cut !== undefined) await cut.fh.datasync();
        this.truncationFailed = true;
        await this.endMark?.stop();
        await writeFileDurably(this.fs, join(this.dir, TRUNCATE_FILE), Buffer.from(JSON.stringify(intent)));
        await applyTruncation(this.fs, this.dir, intent);
        const fresh = new FileLog(this.dir, this.opts);
        await fresh.recover();
        this.takeOver(fresh);
        this.truncationFailed = false;
      } catch (err) {
        // Half done on disk: memory no longer says what is there. The reopen completes the truncation.
        this.stick(err instanceof Error ? err : new Error(String(err)));
        throw this.writeError!;
      }
      this.index.removals = removals + 1 + Math.max(0, messages - this.index.messages);
      return intent.next;
    } finally {
      this.truncating = false;
      if (!this.closed && this.writeError === null) {
        this.applyLimits();
        this.scheduleMaintenance();
        if (this.markerDue) this.armMarker();
        this.kick();
      }
    }
  }

  /**
   * Where a truncation from `seq` cuts, from what memory knows of the
   * segments: the last segment starting at or below `seq` is cut before the
   * first batch that holds a sequence from `seq` on, or a tombstone batch
   * that names a next sequence past the new end (a purge that moved the log
   * on); every later segment goes. A batch of the log's own records that
   * straddles `seq` keeps its records below `seq`, rewritten as a batch of
   * their own; a foreign batch cannot be split and goes whole (the new end is
   * before it), unless nothing below `seq` in it is live. The deletes that
   * tombstone batches in the cut part recorded, of sequences kept, are
   * written again after the cut, in a tombstone batch that names the new
   * next sequence.
   */
  private async planTruncation(seq: number): Promise<TruncationIntent> {
    let i = this.segments.length - 1;
    while (i >= 0 && this.segments[i].firstSeq > seq) i--;
    let next = seq;
    const parts: Buffer[] = [];
    let segment = segmentName(seq);
    let at = 0;
    if (i >= 0) {
      const seg = this.segments[i];
      segment = seg.name;
      const d = this.index.detail(seg);
      let b = 0;
      while (b < d.nb && d.bSeq[b] + d.bCount[b] - 1 < seq) b++;
      const from = b > 0 ? d.bPos[b - 1] + d.bLen[b - 1] : 0;
      const end = b < d.nb ? d.bPos[b] : seg.size;
      if (b < d.nb && d.bSeq[b] < seq) {
        const buf = await readExactly(seg.fh, d.bLen[b], d.bPos[b]);
        const problem = buf === null ? "short" : checkBatch(buf, 0, buf.length);
        if (problem !== null) throw new Error(`${join(this.dir, seg.name)}: batch at ${d.bPos[b]} unreadable (${problem}); cannot truncate inside it`);
        if ((readBatchHeader(buf!, 0).flags & FLAG_FOREIGN) !== 0) {
          for (let s = d.bSeq[b]; s < seq; s++) if (d.sidAt(s) !== DEAD) next = d.bSeq[b];
        } else {
          const kept = batchPrefix(buf!, 0, seq - d.bSeq[b]);
          if (kept === null) throw new Error(`${join(this.dir, seg.name)}: batch at ${d.bPos[b]} does not hold its records`);
          parts.push(kept);
        }
      }
      // Between the last data batch kept and `end` lie only tombstone batches (or damage): those naming a next
      // sequence past `next` go, and whatever follows them.
      at = end;
      if (end > from) {
        const buf = await readExactly(seg.fh, end - from, from);
        if (buf === null) throw new Error(`${join(this.dir, seg.name)}: shorter than its index says`);
        for (let p = 0; p < buf.length; ) {
          if (checkBatch(buf, p, buf.length) !== null || readBatchHeader(buf, p).firstSeq > next) {
            at = from + p;
            break;
          }
          p += readBatchHeader(buf, p).length;
        }
      }
    }
    const tombs: number[] = [];
    for (let k = Math.max(i, 0); k < this.segments.length; k++) {
      const t = this.segments[k].tombs;
      for (let j = 0; j < t.length; j += 2) if (t[j] < next) tombs.push(t[j], Math.min(t[j + 1], next - 1));
    }
    this.lastStamp = Math.max(Date.now(), this.lastStamp + 1);
    parts.push(encodeTombstones(tombs, next, this.lastStamp));
    return { next, segment, at, tail: Buffer.concat(parts).toString("base64") };
  }

  /** Completes a truncation that a crash interrupted (see truncateNow), before anything is read. */
  private async finishTruncation(): Promise<void> {
    let text: Buffer;
    try {
      text = await this.fs.readFile(join(this.dir, TRUNCATE_FILE));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    let t: TruncationIntent;
    try {
      t = parseIntent(text);
    } catch (err) {
      // Written whole or not at all (writeFileDurably): anything else is not ours to guess at.
      throw new Error(`${join(this.dir, TRUNCATE_FILE)}: ${(err as Error).message}; the log is not opened`);
    }
    this.warn(`${this.dir}: completing a truncation to sequence ${t.next} that was interrupted`);
    await applyTruncation(this.fs, this.dir, t);
  }

  /** Why the log takes no changes now (closed, or failed and not yet reopened), or null. */
  private unusable(): Error | null {
    if (this.closed) return new Error("log is closed");
    return this.writeError;
  }

  private kick(): void {
    if (this.reopening || this.truncating) return; // the reopened (truncated) log kicks again once it has taken over
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
    if ((this.spare.length === 0 && this.tail.length === 0) || this.spareTimer !== null) return;
    this.spareTimer = setTimeout(() => {
      this.spareTimer = null;
      if (!this.writing && this.staged.length === 0) {
        this.spare = [];
        this.tail = [];
      } else this.dropSparesLater();
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
      // A truncation waits for what is written to land; what is queued is written after it.
      const work = !this.truncating && (this.staged.length > 0 || this.ops.length > 0 || (this.flushTombstones && this.evicted.length > 0) || this.markerWanted);
      const oldest = syncing !== null ? syncing.rounds[0] : written.length > 0 ? written[0] : null;
      const mustSettle =
        newest !== null &&
        oldest !== null &&
        (this.ops.length > 0 || this.rollDue(newest.seg, newest.end) || newest.end - oldest.pos >= MAX_UNLANDED_BYTES || this.gapRollsAfter(newest));
      if (work && !mustSettle) {
        const round = await this.writeRound(newest);
        if (round === null) continue;
        if (this.sync === "always") written.push(round);
        else {
          // Acknowledged at once: the check runs per round here, as it runs per sync under `always`.
          const gone = this.filesGone(round.seg);
          if (gone !== null) {
            this.stick(gone);
            this.failRound(round, this.writeError ?? gone);
            continue;
          }
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
        s.error = this.filesGone(rounds[0].seg);
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

  /**
   * Why what was just written would not be there after a restart: the segment
   * was removed while open (rm of it or of the directory; writes and syncs to
   * it still succeed), or, looked at once a second (a path lookup, and a moved
   * directory keeps what it holds), the log's directory is gone or another
   * one. Null when neither. One fstat per sync (per round where acks do not
   * wait for a sync), never per message.
   */
  private filesGone(seg: Segment): Error | null {
    if (seg.fh.linked?.() === false) return new Error(`${join(this.dir, seg.name)} was removed while open: what is written to it would be gone at the next start`);
    if (this.dirIdentity === undefined) return null;
    const now = Date.now();
    if (now - this.dirCheckedAt < DIR_CHECK_MS) return null;
    this.dirCheckedAt = now;
    return this.dirReplaced();
  }

  /** The log's directory is no longer the one it opened (removed, moved away, made anew), or null. */
  private dirReplaced(): Error | null {
    if (this.dirIdentity === undefined) return null;
    const now = this.fs.identity!(this.dir);
    if (now === this.dirIdentity) return null;
    return new Error(`${this.dir} ${now === null ? "was removed" : "is another directory than the one opened (removed or moved and made anew)"} while the log was open`);
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
    this.failures++;
    this.probeBytes = Math.min(PROBE_MAX_BYTES, Math.max(8, this.lastWriteBytes));
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
    if (this.writing || this.scheduled || this.maintenance !== null || this.truncating) return this.scheduleReopen();
    this.reopening = true;
    this.reopenAttempts++;
    try {
      const last = this.segments[this.segments.length - 1];
      // Files removed under the log: a recovery would make a new, empty (or shorter) log over what was acknowledged,
      // and appends would reuse its sequences. It stays failed until the files are back (moved back, restored) or the
      // stream is deleted; the operator decides, the log does not paper over it.
      const replaced = this.dirReplaced();
      if (replaced !== null) throw replaced;
      if (last !== undefined && !this.truncationFailed && !(await this.fs.readdir(this.dir)).includes(last.name)) {
        throw new Error(`${join(this.dir, last.name)} is gone: the log is not made again over what it held`);
      }
      // After a failed truncation the files are not what memory says: the recovery below completes it.
      if (last !== undefined && this.sync === "always" && !this.truncationFailed) {
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
      // Nothing lands meanwhile: the recovery reads the mark as it stands, and the fresh log writes it from then on.
      await this.endMark?.stop();
      const fresh = new FileLog(this.dir, this.opts);
      await fresh.recover();
      if (this.closed) {
        for (const seg of fresh.segments) await seg.fh.close();
        await fresh.endMark?.stop();
        return;
      }
      this.takeOver(fresh);
      this.truncationFailed = false;
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

  /**
   * Writes and syncs a scratch file: a reopen takes writes again only when
   * the disk does. As large as the write that failed (up to PROBE_MAX_BYTES):
   * a nearly full disk takes a few bytes and refuses the next batch, and a
   * reopen it let through failed again at once, a leader's log a moment at a
   * time, a follower's taken back into the ISR with nothing to fetch (and
   * handed the partition, to fail again: leadership went round replicas
   * whose disks were all full, for as long as they stayed so).
   */
  private async probeDisk(): Promise<void> {
    const name = PROBE_FILE;
    const bytes = this.probeBytes;
    const fh = await this.fs.open(join(this.dir, name), "replace");
    try {
      const fault = this.faults?.write?.(name, bytes) ?? null;
      if (fault !== null) throw fault.error;
      await writeFully(fh, Buffer.alloc(bytes), 0);
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
    this.segments = fresh.segments;
    this.idxInfo = fresh.idxInfo;
    this.index = fresh.index;
    this.index.rebind(this.segments, (seg) => this.loadDetail(seg), () => this.scheduleMaintenance());
    this.corrupt.length = 0;
    this.corrupt.push(...fresh.corrupt);
    this.lost = fresh.lost;
    this.lastSeq = fresh.lastSeq;
    this.lastTime = fresh.lastTime;
    this.tombNextSeq = fresh.tombNextSeq;
    this.lastStamp = fresh.lastStamp;
    this.landedStamp = fresh.landedStamp;
    this.claimedLast = fresh.claimedLast;
    this.markerDue = fresh.markerDue;
    this.endMark = fresh.endMark;
    // Evicted messages not yet tombstoned are back on disk; limits are applied again.
    this.evicted = [];
    this.windows = [];
    this.cached = null;
    this.decoded = null;
    this.cuts = [];
    this.tail = [];
  }

  /** Forms the next round from what is queued and writes it after `inflight` (the newest unlanded round, if any); null if the write failed. */
  private async writeRound(inflight: Round | null): Promise<Round | null> {
    // Appends from here on gather into a new batch.
    let batch = this.staged.shift() ?? null;
    // A copy that does not fit after what is written (its sequence or time behind the log's) fails alone.
    for (let why: string | null; batch !== null && batch.copySeq !== 0 && (why = this.copyMisfitAfter(batch, inflight)) !== null; batch = this.staged.shift() ?? null) {
      this.settleStaged(batch, new Error(why), 0);
    }
    const ops = this.ops.splice(0);
    // Nothing else changes the stored set meanwhile: every mutation goes through this loop.
    const evicted = this.evicted;
    this.evicted = [];
    this.flushTombstones = this.closed;
    const planned = ops.map((op) =>
      op.kind === "purge" ? this.index.planPurge(op.opts, this.lastSeq) : this.index.sidAt(op.seq) !== DEAD ? [op.seq, op.seq] : [],
    );
    // A purge of everything up to a sequence beyond the last moves the log on to it (nats-server does):
    // the appends that waited behind it go after it, in the next round.
    let skipTo = 0;
    for (const op of ops) {
      if (op.kind === "purge" && (op.opts.filter === undefined || op.opts.filter === ">") && !((op.opts.keep ?? 0) > 0)) skipTo = Math.max(skipTo, op.opts.upTo ?? 0);
    }
    const expected = inflight !== null ? inflight.nextSeq : this.lastSeq + 1;
    if (skipTo > expected && batch !== null) {
      this.staged.unshift(batch);
      batch = null;
    }
    // A batch far past the data of the file being written waits for the rounds in flight to land, then starts a file of its
    // own (gapRollsAfter sees to it for the first one queued; one behind a copy dropped above comes here unseen).
    if (batch !== null && inflight !== null && startsFarPast(batch, expected, inflight.dataEnd)) {
      this.staged.unshift(batch);
      batch = null;
    }
    // A copy starts at its own sequence: the ones it skips are gone (its batch says so with FLAG_GAP).
    const copied = batch !== null && batch.copySeq !== 0;
    // An empty copy writes no data batch: a tombstone batch naming its sequence as the next one moves the log on.
    const skipOnly = copied && batch!.count === 0;
    if (skipOnly) skipTo = Math.max(skipTo, batch!.copySeq);
    const firstSeq = copied && !skipOnly ? batch!.copySeq : expected;
    const n = batch?.count ?? 0;
    const nextSeq = Math.max(firstSeq + n, skipTo);
    // A copied batch's sequences its source no longer stores are tombstoned right after it, in the same write and sync.
    const tombs = mergedRanges(evicted.concat(...planned, ...(batch !== null && batch.gone !== null && copied && !skipOnly ? [batch.gone as number[]] : [])));
    // Time never goes backwards within a log, so time lookups can bisect (a copy's was checked above). Only a data batch
    // carries one: a round of tombstones or a marker alone keeps the log's, or a copy queued behind it (a follower's, at its
    // leader's older times) would be refused for a time the log never stored.
    const prevTime = inflight !== null ? inflight.time : this.lastTime;
    const now = Math.max(Date.now(), prevTime);
    const time = skipOnly || batch === null ? prevTime : copied ? batch.copyTime : now;
    const round: Round = { seg: null!, pos: 0, end: 0, firstSeq, n, nextSeq, dataEnd: 0, time, stamp: 0, batch, data: null, dataLength: 0, tomb: null, tombs, evicted, ops, planned };
    const hasData = batch !== null && !skipOnly;
    let seg: Segment;
    try {
      // A data batch far past the newest file's data starts a file of its own (see GAP_ROLL and gapRollsAfter, which has
      // the rounds before it land first); else the file is named after the sequence the log was at, and the sequences
      // skipped are dead slots of its detail.
      const rolls = hasData && inflight === null && firstSeq - this.dataEndOf(this.segments[this.segments.length - 1], firstSeq) > GAP_ROLL;
      seg = await this.segmentFor(rolls ? firstSeq : expected, inflight !== null ? inflight.end : null, rolls);
    } catch (err) {
      this.stick(err instanceof Error ? err : new Error(String(err)));
      this.failRound(round, this.writeError!);
      return null;
    }
    round.seg = seg;
    // A data batch starting past what a scan of its file would expect there is flagged as skipping on purpose: a copy
    // that starts on, or an append after an open that found sequences past the file's data (lost, or claimed by an
    // index or the end mark) before the marker naming the next one was written. Unflagged, the next open took it for
    // damage and lost it.
    const scanExpect = inflight !== null && inflight.seg === seg ? inflight.nextSeq : Math.max(this.dataEndOf(seg, seg.firstSeq), seg.tombNext);
    const flags = firstSeq > scanExpect ? FLAG_GAP : 0;
    round.dataEnd = hasData ? firstSeq + n : inflight !== null && inflight.seg === seg ? inflight.dataEnd : this.dataEndOf(seg, firstSeq);
    round.pos = inflight !== null ? inflight.end : seg.size;
    if (skipOnly) {
      // Nothing to write but the tombstone batch below.
    } else if (batch?.foreign != null) {
      sealForeign(batch.buf, batch.foreign, firstSeq, time, n, batch.tail, flags);
      round.data = batch.buf;
      round.dataLength = batch.buf.length + batch.foreign.length;
    } else if (batch !== null) {
      round.data = sealBatch(batch.buf, batch.used, firstSeq, time, n, flags);
      round.dataLength = round.data.length;
    }
    // A round of tombstones names the next sequence, so it serves as the marker too.
    const marker = this.markerWanted && tombs.length === 0;
    this.markerWanted = false;
    if (tombs.length > 0 || marker || nextSeq > firstSeq + n) {
      // Stamps order tombstone batches along the log, so an index file can say which deletes it reflects.
      round.stamp = this.lastStamp = Math.max(skipOnly || batch === null ? now : time, this.lastStamp + 1);
      round.tomb = encodeTombstones(tombs, nextSeq, round.stamp);
    }
    if (marker) this.io.markers++;
    round.end = round.pos + round.dataLength + (round.tomb?.length ?? 0);
    try {
      // A copy's tombstones of the sequences its source no longer stores go in the same write as its batch: written apart,
      // a kill between the two left the batch and not them, and recovery took those sequences as stored.
      const withTombs = round.data !== null && round.tomb !== null && batch !== null && batch.gone !== null;
      if (round.data !== null) {
        try {
          await this.write(seg, round.data, round.pos, batch?.foreign ?? null, withTombs ? round.tomb : null);
        } finally {
          // Written or not, the appender's bytes are not read again (a failed round is never rewritten).
          if (batch !== null) bytesRead(batch);
        }
      }
      if (round.tomb !== null && !withTombs) await this.write(seg, round.tomb, round.pos + round.dataLength);
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

  /**
   * Whether the next queued batch starts so far past the data of `newest`'s
   * file (a copy that skips sequences, an append after a purge moved the
   * log on) that it starts a new file: written once the rounds before it
   * landed.
   */
  private gapRollsAfter(newest: Round): boolean {
    return this.staged.length > 0 && startsFarPast(this.staged[0], newest.nextSeq, newest.dataEnd);
  }

  /** The sequence after the last data batch landed in `seg` (its first sequence if none; `none` without a file). */
  private dataEndOf(seg: Segment | undefined, none: number): number {
    return seg === undefined ? none : Math.max(seg.lastSeq + 1, seg.firstSeq);
  }

  /** Why a queued copy cannot be written after `inflight` (or the log's last batch), or null. */
  private copyMisfitAfter(b: Staged, inflight: Round | null): string | null {
    const lastTime = inflight !== null ? inflight.time : this.lastTime;
    // An empty copy's time is not stored.
    return copyMisfit(b.copySeq, b.count === 0 ? lastTime : b.copyTime, (inflight !== null ? inflight.nextSeq : this.lastSeq + 1) - 1, lastTime);
  }

  /** Makes a durable round visible and acknowledges it. */
  private land(round: Round): void {
    const { seg, pos, data, dataLength, tomb, tombs, firstSeq, n, time, batch, ops, planned } = round;
    const limitsPerSubject = (this.limits.maxMsgsPerSubject ?? 0) > 0;
    const touched = new Set<number>();
    if (data !== null && batch !== null) {
      const d = this.index.detail(seg);
      seg.addBatch(d, firstSeq, n, pos, dataLength, time, batch.newest ?? time);
      seg.endBatch(pos, dataLength, data.readUInt32LE(4));
      if (batch.foreign === null) this.keepTail(seg, pos, data);
      this.lastTime = time;
      if (batch.foreign !== null) {
        const id = this.index.table.intern(batch.subjects[0]);
        this.index.addShared(seg, d, firstSeq, n, id, batch.bytes);
        if (limitsPerSubject) touched.add(id);
      } else {
        let seq = firstSeq;
        for (let i = 0; i < n; i++, seq++) {
          const id = this.index.table.intern(batch.subjects[i]);
          this.index.add(seg, d, seq, id, batch.sizes[i]);
          // Subjects of this batch, for the per-subject limit (the only limit that needs them).
          if (limitsPerSubject) touched.add(id);
        }
      }
      this.index.noteDetail(seg);
      this.markerDue = true;
      // Before anyone reads it (land runs in one go): the copy never shows a sequence its source no longer stores.
      if (batch.gone !== null) for (let i = 0; i < batch.gone.length; i += 2) this.index.removeRange(batch.gone[i], batch.gone[i + 1]);
    }
    this.lastSeq = Math.max(this.lastSeq, round.nextSeq - 1);
    if (tomb !== null) {
      for (let i = 0; i < tombs.length; i += 2) {
        seg.tombs.push(tombs[i], tombs[i + 1]);
        seg.tombStamps.push(round.stamp);
      }
      seg.endBatch(pos + dataLength, tomb.length, tomb.readUInt32LE(4));
      seg.tombNext = Math.max(seg.tombNext, round.nextSeq);
      this.landedStamp = round.stamp;
      this.markerDue = false;
    }
    for (let k = 0; k < ops.length; k++) {
      let removed = 0;
      const r = planned[k];
      for (let i = 0; i < r.length; i += 2) removed += this.index.removeRange(r[i], r[i + 1]);
      ops[k].done(null, removed);
    }
    if (n > 0) this.evictRanges(this.index.evict(this.limits, touched));
    this.endMark?.note(seg.firstSeq, seg.size, this.lastSeq);
    if (batch !== null) this.settleStaged(batch, null, batch.count === 0 ? batch.copySeq : firstSeq);
    if (tombs.length > 0 || this.evicted.length > 0) this.scheduleMaintenance();
  }

  /**
   * Keeps a landed batch for the readers at the end. A copy: the staging
   * buffer is reused, and what a reader decodes may keep views of the bytes.
   */
  private keepTail(seg: Segment, pos: number, data: Buffer): void {
    if (data.length > TAIL_BATCH_BYTES) return;
    if (this.tail.length >= TAIL_BATCHES) this.tail.shift();
    this.tail.push({ seg, pos, buf: Buffer.from(data) });
  }

  /** The kept batch at `pos` of `seg`, if it is `len` bytes. */
  private tailBatch(seg: Segment, pos: number, len: number): Buffer | null {
    for (let i = this.tail.length - 1; i >= 0; i--) {
      const t = this.tail[i];
      if (t.seg !== seg || t.pos !== pos) continue;
      if (t.buf.length !== len) return null;
      this.io.tailReads++;
      return t.buf;
    }
    return null;
  }

  private failRound(round: Round, err: Error): void {
    // Evictions are already gone from memory: their tombstones go out with the next write.
    this.evicted = round.evicted.concat(this.evicted);
    if (round.batch !== null) this.settleStaged(round.batch, err, 0);
    for (const op of round.ops) op.done(err, 0);
  }

  /** Takes a written (or failed) batch off the queue's counts, tells its appenders, and keeps its buffer for reuse. */
  private settleStaged(b: Staged, err: Error | null, firstSeq: number): void {
    bytesRead(b);
    const n = b.count;
    this.pendingCount -= n;
    this.pendingBytes -= b.bytes;
    if (this.pendingPerSubject.size > 0) {
      const foreign = b.foreign !== null;
      for (let i = 0; i < (foreign ? 1 : n); i++) {
        const s = b.subjects[i];
        const c = (this.pendingPerSubject.get(s) ?? 1) - (foreign ? n : 1);
        if (c <= 0) this.pendingPerSubject.delete(s);
        else this.pendingPerSubject.set(s, c);
      }
    }
    // A foreign batch's head is small and its bytes are its appender's: neither is worth keeping.
    if (b.foreign === null) this.spare.push(b.buf);
    let seq = firstSeq;
    for (let k = 0; k < b.owners.length; k++) {
      const owner = b.owners[k];
      const span = b.spans[k];
      if (typeof owner === "function") owner(err, err === null ? seq : 0);
      else owner.settle(err, seq, span);
      if (err === null) seq += span;
    }
  }

  /** Messages removed by limits (inclusive ranges): gone from memory now, their tombstone written with the next batch. */
  onEvicted: ((ranges: readonly number[]) => void) | null = null;

  private evictRanges(ranges: number[], tell = true): void {
    if (ranges.length === 0) return;
    if (tell) this.onEvicted?.(ranges);
    for (const r of ranges) this.evicted.push(r);
    if (!this.writing) this.armTombstoneFlush();
  }

  private applyLimits(): void {
    if (this.closed) return;
    this.evictRanges(this.index.enforce(this.limits));
    this.expireByAge();
    this.ageTimer = ageTimer(this.ageTimer, this.limits.maxAgeMs, () => this.expireByAge());
  }

  private expireByAge(): void {
    const maxAge = this.limits.maxAgeMs ?? 0;
    if (maxAge <= 0 || this.closed) return;
    this.evictRanges(this.index.expireBefore(this.firstSeqAtOrAfter(Date.now() - maxAge)), false);
  }

  /** Writes `buf`, and `then` right after it when given (a foreign batch's bytes: one system call for both). */
  private async write(seg: Segment, buf: Buffer, pos: number, then: Buffer | null = null, last: Buffer | null = null): Promise<void> {
    const parts = [buf];
    if (then !== null) parts.push(then);
    if (last !== null) parts.push(last);
    const length = buf.length + (then?.length ?? 0) + (last?.length ?? 0);
    this.lastWriteBytes = length;
    const fault = this.faults?.write?.(seg.name, length) ?? null;
    if (fault !== null) {
      if (fault.partial) await writeFullyV(seg.fh, prefix(parts, Math.min(fault.partial, length)), pos);
      throw fault.error;
    }
    if (parts.length === 1) await writeFully(seg.fh, buf, pos);
    else await writeFullyV(seg.fh, parts, pos);
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
  private async segmentFor(firstSeq: number, end: number | null, roll = false): Promise<Segment> {
    const cur = this.segments[this.segments.length - 1];
    if (cur !== undefined && cur.firstSeq === firstSeq) return cur; // only tombstones so far: a new file would have the same name
    if (cur !== undefined && (end !== null || (!roll && !this.rollDue(cur, cur.size)))) return cur;
    if (cur !== undefined && cur.size === 0 && end === null && this.segments.length === 1) {
      // An empty file (a fresh log that a copy starts far on): replaced, not left behind empty. One after others (a
      // crash between a roll and its first write) stays for compaction to remove: the index of the one before it may
      // name it as following, and only maintenance rewrites that index before the file goes (see compact).
      this.segments.pop();
      this.retire(cur);
      // Its index first (a clean close may have written one): an index without its segment reads as a lost segment.
      await this.fs.remove(join(this.dir, cur.name + INDEX_SUFFIX));
      await this.fs.remove(join(this.dir, cur.name));
    } else if (cur !== undefined && this.sync !== "always") await cur.fh.datasync();
    const seg = await this.createSegment(firstSeq);
    this.scheduleMaintenance();
    return seg;
  }

  /** Whether the segment, written up to `end`, is full or old enough to be rolled. */
  private rollDue(seg: Segment, end: number): boolean {
    return end >= this.maxSegmentBytes || (this.maxSegmentAgeMs > 0 && seg.batches > 0 && Date.now() - seg.createdAt >= this.maxSegmentAgeMs);
  }

  private async createSegment(firstSeq: number): Promise<Segment> {
    const name = segmentName(firstSeq);
    const fh = await this.fs.open(join(this.dir, name), "create");
    await this.fs.syncDir(this.dir);
    const seg = new Segment(name, firstSeq, fh);
    // Appends land in the newest segment only: its detail stays in memory, the one before may go.
    const prev = this.segments[this.segments.length - 1];
    if (prev !== undefined) prev.pinned = false;
    seg.pinned = true;
    this.segments.push(seg);
    this.index.noteDetail(seg);
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

  newestTime(): number {
    return this.lastTime;
  }

  state(): LogState {
    return this.index.state(this.lastSeq, this.corrupt, this.lost.ranges, this.writeError?.message ?? null);
  }

  async get(seq: number): Promise<StoredMessage | null> {
    if (seq > this.lastSeq) return null;
    const seg = this.index.segmentOf(seq);
    if (seg === null || seg.live === 0) return null;
    const d = this.index.detail(seg);
    if (d.sidAt(seq) === DEAD) return null;
    const b = d.batchOf(seq);
    if (b < 0) return null;
    const buf = await this.readBatch(seg, d, b);
    if (buf === null) return null;
    if ((buf[9] & FLAG_FOREIGN) !== 0) return (await this.foreignMessages(seg, d.bPos[b], buf, 0))[seq - d.bSeq[b]] ?? null;
    const at = recordAt(buf, 0, seq - d.bSeq[b]);
    return at < 0 ? null : decodeRecord(buf, at, seq, d.bTime[b]);
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    for (let seq = this.index.nextMatch(after, filter); seq !== 0 && seq <= this.lastSeq; seq = this.index.nextMatch(seq, filter)) {
      const m = await this.get(seq);
      if (m !== null) return m;
    }
    return null;
  }

  scan(from: number, opts: ScanOptions = {}): Promise<StoredMessage[]> {
    return this.read(from, opts, false) as Promise<StoredMessage[]>;
  }

  scanStored(from: number, opts: ScanOptions = {}): Promise<StoredItem[]> {
    return this.read(from, opts, true);
  }

  /**
   * scan, or with `whole` scanStored: foreign batches with every record from
   * `from` on still stored come back as they are (a Kafka reader skips the
   * records before the offset it asked for, as Kafka hands them whole too).
   */
  private async read(from: number, opts: ScanOptions, whole: boolean): Promise<StoredItem[]> {
    const filter = opts.filter === ">" ? undefined : opts.filter;
    const maxMessages = opts.maxMessages ?? 256;
    const maxBytes = opts.maxBytes ?? Infinity;
    const out: StoredItem[] = [];
    let bytes = 0;
    let seq = this.index.nextMatch(from - 1, filter);
    while (seq !== 0 && seq <= this.lastSeq && out.length < maxMessages && bytes < maxBytes) {
      const seg = this.index.segmentOf(seq);
      const d = seg === null ? null : this.index.detail(seg);
      const b0 = d === null ? -1 : d.batchOf(seq);
      if (seg === null || d === null || b0 < 0) {
        seq = this.index.nextMatch(seq, filter);
        continue;
      }
      const w = await this.window(seg, d, b0);
      let visited = seq;
      for (let b = b0; b <= w.b1 && out.length < maxMessages && bytes < maxBytes; b++) {
        const at = d.bPos[b] - w.start;
        const buf = w.buf;
        if (w.verified[b - w.b0] === 0) {
          const problem = w.failure ?? checkBatch(buf, at, at + d.bLen[b]);
          if (problem !== null) {
            if (problem === "error" && opts.stopAtReadError === true) {
              if (out.length > 0) return out;
              throw new Error(`${join(this.dir, seg.name)}: reading the batch at ${d.bPos[b]} failed`);
            }
            // Skipped either way; only a batch that is there and wrong is damage (an I/O error may pass).
            if (problem !== "error") this.damagedBatch(seg, d, b, `${problem} on read`);
            visited = d.bSeq[b] + d.bCount[b] - 1;
            continue;
          }
          w.verified[b - w.b0] = 1;
        }
        const bSeq = d.bSeq[b];
        const count = d.bCount[b];
        const time = d.bTime[b];
        if ((buf[at + 9] & FLAG_FOREIGN) !== 0) {
          const body = d.bLen[b] - BATCH_HEADER;
          const wholeFrom = Math.max(bSeq, from);
          if (whole && filter === undefined) {
            const parts = foreignParts(buf, at)!;
            // As stored, when every record it holds from `from` on is: all of them, or (a batch compaction cut) exactly those.
            // And for a copy (asStored) always: it names what is gone.
            if (opts.asStored === true || this.allStored(seg, d, wholeFrom, bSeq + count - wholeFrom) || this.holdsOnlyStored(seg, d, bSeq, count, parts.format, parts.bytes)) {
              out.push({ format: parts.format, firstSeq: bSeq, count, time, subject: parts.subject, bytes: parts.bytes });
              bytes += body;
              visited = bSeq + count - 1;
              continue;
            }
            // Else, in a format that can cut a batch, one of only the records still stored (none: nothing to hand).
            const cut = this.opts.foreign?.cut;
            if (cut !== undefined) {
              const live = this.liveMask(seg, d, bSeq, count);
              const pos = d.bPos[b];
              let left: Buffer | null;
              const known = this.cuts.find((c) => c.seg === seg && c.pos === pos && sameMask(c.live, live));
              if (known !== undefined) left = known.bytes;
              else {
                left = await cut(parts.format, parts.bytes, live);
                if (this.cuts.length >= RECENT_CUTS) this.cuts.shift();
                this.cuts.push({ seg, pos, live, bytes: left });
              }
              if (left !== null) {
                out.push({ format: parts.format, firstSeq: bSeq, count, time, subject: parts.subject, bytes: left });
                bytes += left.length;
              }
              visited = bSeq + count - 1;
              continue;
            }
          }
          const msgs = await this.foreignMessages(seg, d.bPos[b], buf, at);
          for (let i = 0; i < count; i++) {
            const s = bSeq + i;
            if (s < seq) continue;
            visited = s;
            const id = (seg.detail ?? d).sidAt(s);
            if (id !== DEAD && (filter === undefined || this.index.table.matchesId(filter, id)) && msgs[i] !== undefined) {
              out.push(msgs[i]);
              bytes += foreignShare(body, count, i);
              if (out.length >= maxMessages || bytes >= maxBytes) break;
            }
          }
          continue;
        }
        let p = at + BATCH_HEADER;
        for (let i = 0; i < count; i++) {
          const s = bSeq + i;
          const len = buf.readUInt32LE(p) + 4;
          if (s >= seq) {
            visited = s;
            // The detail read before the await may be stale: ask the segment's current one.
            const id = (seg.detail ?? d).sidAt(s);
            if (id !== DEAD && (filter === undefined || this.index.table.matchesId(filter, id))) {
              out.push(viewRecord(buf, p, s, time, this.index.table.subjectOf(id)));
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

  /** Per record of the batch at bSeq..bSeq+count-1, 1 if it is still stored. */
  private liveMask(seg: Segment, d: SegmentDetail, bSeq: number, count: number): Uint8Array {
    const live = seg.detail ?? d;
    const mask = new Uint8Array(count);
    for (let k = 0; k < count; k++) mask[k] = live.sidAt(bSeq + k) === DEAD ? 0 : 1;
    return mask;
  }

  /** Whether a foreign batch holds no record that is not stored: as many records as are stored of its sequences (it holds every one stored). */
  private holdsOnlyStored(seg: Segment, d: SegmentDetail, bSeq: number, count: number, format: number, bytes: Buffer): boolean {
    const held = this.opts.foreign?.records?.(format, bytes) ?? -1;
    if (held < 0 || held > count) return false;
    const live = seg.detail ?? d;
    let stored = 0;
    for (let s = bSeq; s < bSeq + count; s++) if (live.sidAt(s) !== DEAD) stored++;
    return stored === held;
  }

  /** Whether every record of the batch at bSeq..bSeq+count-1 is still stored. */
  private allStored(seg: Segment, d: SegmentDetail, bSeq: number, count: number): boolean {
    const live = seg.detail ?? d;
    for (let s = bSeq; s < bSeq + count; s++) if (live.sidAt(s) === DEAD) return false;
    return true;
  }

  /** The newest time a record of a foreign batch carries, as its format says (null if it says none). */
  private newestRecordTime(format: number, bytes: Buffer): number | null {
    const newest = this.opts.foreign?.newestRecordTime?.(format, bytes);
    return newest === undefined || newest === null || !Number.isFinite(newest) ? null : newest;
  }

  /** The newest record time of the checked batch at buf[at...] stored at `time`. */
  private storedNewest(buf: Buffer, at: number, time: number): number {
    if ((buf[at + 9] & FLAG_FOREIGN) === 0) return time;
    const parts = foreignParts(buf, at);
    return (parts === null ? null : this.newestRecordTime(parts.format, parts.bytes)) ?? time;
  }

  /**
   * The messages of the foreign batch at `pos` of `seg` (its bytes at
   * buf[at...)), from the decoder; the last batch decoded is kept, since
   * gets and scans tend to read one batch's records one after another.
   */
  private async foreignMessages(seg: Segment, pos: number, buf: Buffer, at: number): Promise<StoredMessage[]> {
    const c = this.decoded;
    if (c !== null && c.seg === seg && c.pos === pos) return c.messages;
    const parts = foreignParts(buf, at);
    if (parts === null) throw new Error(`${join(this.dir, seg.name)}@${pos}: foreign batch without its parts`);
    const messages = await (this.opts.foreign ?? noForeignRecords).decode(parts.format, parts.bytes, readU64(buf, at + 12), readU64(buf, at + 20), parts.subject);
    this.decoded = { seg, pos, messages };
    return messages;
  }

  /**
   * Consecutive batches from b0, about SCAN_CHUNK long, read in one go. A few
   * recent windows are kept, so a consumer that continues where its last scan
   * stopped reads and verifies each batch once.
   */
  private async window(seg: Segment, d: SegmentDetail, b0: number): Promise<ScanWindow> {
    for (const w of this.windows) if (w.seg === seg && b0 >= w.b0 && b0 <= w.b1) return w;
    // A reader at the end: the batch as it landed, with no read (not kept as a window: it would push out windows read from disk).
    const kept = this.tailBatch(seg, d.bPos[b0], d.bLen[b0]);
    if (kept !== null) return { seg, d, b0, b1: b0, start: d.bPos[b0], buf: kept, failure: null, verified: new Uint8Array(1) };
    let b1 = b0;
    const start = d.bPos[b0];
    while (b1 + 1 < d.nb && d.bPos[b1 + 1] + d.bLen[b1 + 1] - start <= SCAN_CHUNK) b1++;
    const end = d.bPos[b1] + d.bLen[b1];
    const got = await this.readRange(seg, start, end - start);
    const failure = typeof got === "string" ? got : null;
    const w: ScanWindow = { seg, d, b0, b1, start, buf: typeof got === "string" ? Buffer.alloc(0) : got, failure, verified: new Uint8Array(b1 - b0 + 1) };
    // A failed read may pass: the next reader tries the disk again rather than this window's failure.
    if (failure === "error") return w;
    this.windows.unshift(w);
    if (this.windows.length > SCAN_WINDOWS) this.windows.pop();
    return w;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    const seq = this.firstSeqAtOrAfter(time);
    return seq > this.lastSeq ? null : this.next(seq - 1);
  }

  firstStampedAtOrAfter(time: number, from: number): number {
    for (const seg of this.segments) {
      if (seg.batches === 0 || seg.lastSeq < from || seg.newestRecordTime < time) continue;
      const d = this.index.detail(seg);
      const b = d.batchStampedAtOrAfter(time, from);
      if (b >= 0) return Math.max(from, d.bSeq[b]);
    }
    return this.lastSeq + 1;
  }

  newestStamped(skip?: ReadonlySet<number>): { seq: number; time: number } | null {
    // Segments by the newest time they may hold, earlier first among equals: most are never read.
    const order = this.segments.filter((seg) => seg.live > 0).sort((a, b) => b.newestRecordTime - a.newestRecordTime || a.firstSeq - b.firstSeq);
    let best = -Infinity;
    let bestSeq = 0;
    for (const seg of order) {
      if (seg.newestRecordTime < best) break;
      const d = this.index.detail(seg);
      for (let b = 0; b < d.nb; b++) {
        const t = d.bNewest[b];
        if (t < best || (t === best && d.bSeq[b] > bestSeq)) continue;
        for (let s = d.bSeq[b]; s < d.bSeq[b] + d.bCount[b]; s++) {
          if (d.sidAt(s) === DEAD) continue;
          if (skip?.has(s) !== true) {
            best = t;
            bestSeq = s;
          }
          break;
        }
      }
    }
    return bestSeq === 0 ? null : { seq: bestSeq, time: best };
  }

  /** The first sequence of the first batch stored at or after `time`; lastSeq + 1 if none. */
  private firstSeqAtOrAfter(time: number): number {
    for (const seg of this.segments) {
      if (seg.batches === 0 || seg.lastTime < time) continue;
      const d = this.index.detail(seg);
      const b = d.batchAtOrAfter(time);
      if (b >= 0) return d.bSeq[b];
    }
    return this.lastSeq + 1;
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const last = this.index.table.lastOf(subject);
    return last === 0 ? null : this.get(last);
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
  private async readBatch(seg: Segment, d: SegmentDetail, b: number): Promise<Buffer | null> {
    const c = this.cached;
    if (c !== null && c.seg === seg && c.b === b) return c.buf;
    const len = d.bLen[b];
    const kept = this.tailBatch(seg, d.bPos[b], len);
    if (kept !== null) {
      this.cached = { seg, b, buf: kept };
      return kept;
    }
    const buf = await this.readRange(seg, d.bPos[b], len);
    if (buf === "error") return null;
    const problem = buf === "short" ? "short" : checkBatch(buf, 0, len);
    if (problem !== null || typeof buf === "string") {
      this.damagedBatch(seg, d, b, `${problem} on read`);
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
  private damagedBatch(seg: Segment, d: SegmentDetail, b: number, reason: string): void {
    const pos = d.bPos[b];
    if (seg.retired || this.corrupt.some((c) => c.segment === seg.name && c.position === pos)) return;
    this.reportCorrupt(seg, pos, reason);
    void this.quarantine(seg, pos, d.bLen[b]).catch((err) => this.warn(`quarantine of ${seg.name}@${pos} failed: ${(err as Error).message}`));
    // Its live messages, in runs, are what is lost.
    const live = this.index.detail(seg);
    let bytes = d.bLen[b];
    const end = d.bSeq[b] + d.bCount[b] - 1;
    for (let s = d.bSeq[b]; s <= end; s++) {
      if (live.sidAt(s) === DEAD) continue;
      let t = s;
      while (t + 1 <= end && live.sidAt(t + 1) !== DEAD) t++;
      this.index.removeRange(s, t);
      this.lost.note(s, t, bytes);
      bytes = 0;
      s = t;
    }
    this.lost.saveLater(() => this.closed);
  }

  /** Copies damaged bytes of a segment to the quarantine directory (once per place), for whoever investigates. */
  private async quarantine(seg: Segment, position: number, length: number): Promise<void> {
    const key = `${seg.name}@${position}`;
    if (length <= 0 || this.quarantined.has(key)) return;
    this.quarantined.add(key);
    const bytes = await this.readRange(seg, position, length);
    if (typeof bytes !== "string") await quarantine(this.fs, this.dir, key, bytes);
  }

  private reportCorrupt(seg: Segment, position: number, reason: string): void {
    seg.damaged = true;
    if (this.corrupt.some((c) => c.segment === seg.name && c.position === position)) return;
    this.corrupt.push({ segment: seg.name, position, reason });
    this.warn(`${join(this.dir, seg.name)} at ${position}: ${reason}`);
  }

  // ---- recovery ----

  private async recover(): Promise<void> {
    await this.finishTruncation();
    await this.lost.load();
    const entries = await this.fs.readdir(this.dir);
    for (const n of entries) {
      // Leftovers of a compaction or index write that a crash interrupted.
      if (n.endsWith(".tmp")) await this.fs.remove(join(this.dir, n));
    }
    const names = entries.filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    const indexes = new Set(entries.filter((n) => n.endsWith(INDEX_SUFFIX)));
    const mark = await this.readMark(entries.includes(END_MARK_FILE));
    // What landed is claimed as an index's claims are: the newest file cut or torn below it reports the rest lost.
    if (mark !== null) this.claimedLast = Math.max(this.claimedLast, mark.lastSeq);
    // Damage found by this open: sequences destroyed, before tombstones are taken into account.
    const found: LostRange[] = [];
    // Per segment read from its index: each subject's first and last, as the index recorded them.
    const bounds = new Map<Segment, Map<number, [number, number]>>();
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
      this.indexClaimed = 0;
      if (indexes.has(name + INDEX_SUFFIX)) {
        const b = await this.loadIndex(seg, size, isLast);
        if (b !== null) {
          from = seg.size;
          bounds.set(seg, b);
        }
      }
      if (from < size || size === 0) {
        // Appended to after its index was written (the newest segment after a crash), or no usable index.
        // Its detail is being built across awaits: kept in memory meanwhile.
        const nextFirst = isLast ? 0 : Number(names[i + 1].slice(0, 20));
        seg.pinned = true;
        await this.scanSegment(seg, from, size, isLast, nextFirst, found);
        this.index.summarize(seg);
        seg.pinned = false;
        bounds.delete(seg);
      }
      this.segments.push(seg);
      this.index.noteDetail(seg);
      this.tombNextSeq = Math.max(this.tombNextSeq, seg.tombNext);
      nextSeq = Math.max(nextSeq, seg.lastSeq + 1, seg.tombNext);
    }
    // Tombstones newer than what a segment's liveness reflects are applied to it now. After a clean
    // close every index is current and none is; after a crash, those of the last moments are.
    const { tombs, stamps, orphans } = this.orphanIndexes(entries, new Set(names), found);
    this.missingSegments(names, orphans, found);
    if (mark !== null) this.checkMark(mark, found);
    for (let k = 0; k < stamps.length; k++) this.lastStamp = Math.max(this.lastStamp, stamps[k]);
    for (const seg of this.segments) {
      this.lastSeq = Math.max(this.lastSeq, seg.lastSeq);
      this.lastStamp = Math.max(this.lastStamp, seg.horizon);
      for (let k = 0; k < seg.tombStamps.length; k++) {
        tombs.push(seg.tombs[2 * k], seg.tombs[2 * k + 1]);
        stamps.push(seg.tombStamps[k]);
        this.lastStamp = Math.max(this.lastStamp, seg.tombStamps[k]);
      }
    }
    for (const seg of this.segments) {
      let changed = false;
      for (let k = 0; k < stamps.length; k++) {
        if (stamps[k] <= seg.horizon || tombs[2 * k + 1] < seg.firstSeq || tombs[2 * k] > seg.lastSeq) continue;
        if (this.index.kill(seg, tombs[2 * k], tombs[2 * k + 1])) changed = true;
      }
      if (changed) {
        this.index.summarize(seg);
        bounds.delete(seg);
      }
    }
    this.landedStamp = this.lastStamp;
    // Sequences a tombstone deleted were not lost, whatever happened to their bytes.
    for (const l of withoutRanges(found, tombs)) this.lost.note(l.from, l.to, l.bytes);
    const last = this.segments[this.segments.length - 1];
    if (last === undefined) {
      // No segment left: the next sequence is still past every one an index or the damage record knew of.
      const next = Math.max(1, this.claimedLast + 1, this.tombNextSeq, this.lost.highest + 1);
      this.lastSeq = next - 1;
      await this.createSegment(next);
    } else {
      last.pinned = true;
      const d = this.index.detail(last);
      // Never hand out a sequence again: not one a later segment is named after, a tombstone or marker
      // names as next, an index claimed, or that was lost.
      this.lastSeq = Math.max(this.lastSeq, last.firstSeq - 1, this.tombNextSeq - 1);
      const written = this.lastSeq;
      if (d.nb > 0) {
        this.lastTime = d.bTime[d.nb - 1];
        this.markerDue = last.lastBatchPos === d.bPos[d.nb - 1];
      }
      this.lastSeq = Math.max(this.lastSeq, this.claimedLast, this.lost.highest);
      // Past what the segments say, only lost.json or an index file names the next sequence: a marker names it in the
      // newest segment too, so that losing those small files later does not hand acknowledged sequences out again.
      this.nextOnRecordOnly = this.lastSeq > written;
      if (this.nextOnRecordOnly) this.markerDue = true;
    }
    this.lastSeq = Math.max(this.lastSeq, this.lost.highest);
    this.index.finishLoad((seg) => bounds.get(seg) ?? null);
    this.index.trimDetails();
    this.endMark = new EndMarkWriter(this.fs, join(this.dir, END_MARK_FILE), entries.includes(END_MARK_FILE), this.warn);
  }

  /** The end mark recovery checks the newest segment against, or null (none, or unreadable: said). */
  private async readMark(exists: boolean): Promise<EndMark | null> {
    if (!exists) return null;
    const path = join(this.dir, END_MARK_FILE);
    const m = await readEndMark(this.fs, path);
    if (typeof m !== "string") return m;
    this.warn(`${path} is unreadable (${m}): whether the newest segment lost its end cannot be told`);
    return null;
  }

  /**
   * The newest segment file (or the files after the one left) gone below
   * what the end mark says landed, where the scan did not already find it
   * (an index of the last file read whole hides a cut of the files after
   * it): those sequences are reported lost. Deletes in a cut tail are
   * undone, which only a warning can say.
   */
  private checkMark(mark: EndMark, found: LostRange[]): void {
    const last = this.segments[this.segments.length - 1];
    const held = last === undefined ? 0 : Math.max(last.lastSeq, last.tombNext - 1, last.firstSeq - 1);
    const same = last !== undefined && last.firstSeq === mark.segment;
    if (mark.lastSeq > held) {
      const reported: number[] = [];
      for (const l of found) reported.push(l.from, l.to);
      const gone = withoutRanges([{ from: held + 1, to: mark.lastSeq, bytes: 0 }], reported);
      for (const g of gone) {
        this.warn(`${join(this.dir, END_MARK_FILE)} says sequences up to ${mark.lastSeq} landed in ${segmentName(mark.segment)} (${mark.end} bytes); the files hold ${g.from}..${g.to} no more: reported lost, never handed out again`);
        found.push(g);
      }
    } else if (same && last.size < mark.end) {
      this.warn(`${join(this.dir, last.name)} ends at ${last.size} bytes, before the ${mark.end} that landed: deletes recorded in its lost end may be undone`);
    }
  }

  private tombNextSeq = 0;
  /** Recovery found the next sequence in lost.json or an index file only, not in the segments: a marker is written soon. */
  private nextOnRecordOnly = false;
  /** The last sequence the index of the segment being recovered claimed, when that index did not match the file (0: none). */
  private indexClaimed = 0;

  /** An index file's summary, or why it cannot be read. */
  private readIndexSummary(path: string): IndexSummary | string {
    try {
      const header = this.fs.readSync(path, 0, INDEX_HEADER);
      const len = header === null ? "short" : summaryLength(header);
      if (typeof len === "string") return len;
      const buf = this.fs.readSync(path, 0, INDEX_HEADER + len);
      return buf === null ? "short" : decodeSummary(buf);
    } catch (err) {
      return (err as Error).message;
    }
  }

  /**
   * Index files whose segment is gone: nagare removes a segment's index
   * before the segment, so the segment was lost (deleted by hand, lost to
   * a bad restore). Its sequences, as the index recorded them, are reported
   * lost (less those tombstones deleted) and never handed out again, and
   * its own tombstones still apply. Returns those tombstones and their stamps.
   */
  private orphanIndexes(entries: string[], segments: ReadonlySet<string>, found: LostRange[]): { tombs: number[]; stamps: number[]; orphans: IndexSummary[] } {
    const tombs: number[] = [];
    const stamps: number[] = [];
    const orphans: IndexSummary[] = [];
    for (const n of entries) {
      if (!n.endsWith(SEGMENT_SUFFIX + INDEX_SUFFIX)) continue;
      const segName = n.slice(0, -INDEX_SUFFIX.length);
      if (!/^\d{20}\.seg$/.test(segName) || segments.has(segName)) continue;
      const s = this.readIndexSummary(join(this.dir, n));
      if (typeof s === "string" || s.firstSeq !== Number(segName.slice(0, 20))) {
        this.warn(`${segName} is gone and its index ${n} cannot be read (${typeof s === "string" ? s : "belongs to another segment"}): what it held cannot be told`);
        continue;
      }
      this.warn(`${segName} is gone; its index says it held sequences ${s.firstSeq}..${s.lastSeq}: reported lost, never handed out again`);
      orphans.push(s);
      if (s.lastSeq >= s.firstSeq) found.push({ from: s.firstSeq, to: s.lastSeq, bytes: s.size });
      this.claimedLast = Math.max(this.claimedLast, s.lastSeq, s.tombNext - 1);
      this.tombNextSeq = Math.max(this.tombNextSeq, s.tombNext);
      for (let k = 0; k < s.tombStamps.length; k++) {
        tombs.push(s.tombs[2 * k], s.tombs[2 * k + 1]);
        stamps.push(s.tombStamps[k]);
      }
    }
    return { tombs, stamps, orphans };
  }

  /**
   * Segment files gone with their index (deleted by hand, a bad restore). An
   * index names the segment that followed its own when it was written
   * (IndexSummary.followedBy), and nagare never leaves one naming a file it
   * removed (compaction rewrites the index before it removes an emptied
   * segment; an empty newest file is replaced only when it is the only one;
   * a truncation removes the cut segment's index with the files after it).
   * So when the next segment file (or gone file whose index is left) starts
   * past the name an index gives, files between are gone: every sequence
   * from that name to the next file's is reported lost (less those a
   * tombstone deleted), the deleted and compacted away among them included,
   * since nothing left can tell them apart. Past the newest file, what a gone
   * segment held cannot be told (a roll may leave a file with nothing but a
   * marker): it is reported, and sequences below its name are never handed
   * out again. A segment whose index is gone too, or predates the field,
   * says nothing, and neither does anything before the first file
   * (retention removes files from the front).
   */
  private missingSegments(names: string[], orphans: IndexSummary[], found: LostRange[]): void {
    const followed = new Map<number, number>();
    for (const seg of this.segments) followed.set(seg.firstSeq, seg.followedOnDisk);
    for (const o of orphans) followed.set(o.firstSeq, o.followedBy);
    for (const n of names) if (!followed.has(Number(n.slice(0, 20)))) followed.set(Number(n.slice(0, 20)), 0);
    const firsts = [...followed.keys()].sort((a, b) => a - b);
    for (let k = 0; k < firsts.length; k++) {
      const named = followed.get(firsts[k])!;
      if (named <= firsts[k]) continue; // not said (0, -1)
      const next = k + 1 < firsts.length ? firsts[k + 1] : Infinity;
      if (named >= next) continue; // there, or a compaction that removed it was interrupted
      const gone = segmentName(named);
      if (next === Infinity) {
        this.warn(`${gone} is gone (the index of ${segmentName(firsts[k])} says it followed, and no file comes after): what it held cannot be told; sequences below ${named} are never handed out again`);
        this.claimedLast = Math.max(this.claimedLast, named - 1);
        continue;
      }
      this.warn(`${gone} is gone with its index (the index of ${segmentName(firsts[k])} says it followed, the next file is ${segmentName(next)}): sequences ${named}..${next - 1}, less any a tombstone deleted, are reported lost, never handed out again`);
      found.push({ from: named, to: next - 1, bytes: 0 });
    }
  }

  /**
   * Takes a segment's index (its summary; the detail is read when needed) if
   * it matches the file: each subject's first and last as it recorded them,
   * or null if it was not used. An index that is intact but does not match
   * the last segment (damage at its end, say) still tells which sequences
   * were assigned: they are never handed out again.
   */
  private async loadIndex(seg: Segment, fileSize: number, isLast: boolean): Promise<Map<number, [number, number]> | null> {
    const path = join(this.dir, seg.name + INDEX_SUFFIX);
    let why: string | null = null;
    const s = this.readIndexSummary(path);
    if (typeof s === "string") why = s;
    else if (s.firstSeq !== seg.firstSeq) why = "belongs to another segment";
    else if (s.size > fileSize) why = "covers more than the segment holds";
    else if (s.size > 0) {
      const probe = Buffer.alloc(8);
      await seg.fh.read(probe, 0, 8, s.lastBatchPos);
      if (probe.readUInt32LE(0) + 8 !== s.size - s.lastBatchPos || probe.readUInt32LE(4) !== s.lastBatchCrc) why = "does not match the segment's last batch";
    }
    if (why !== null || typeof s === "string") {
      if (typeof s !== "string" && s.firstSeq === seg.firstSeq) {
        this.indexClaimed = Math.max(s.lastSeq, s.tombNext - 1);
        if (isLast) this.claimedLast = Math.max(this.claimedLast, this.indexClaimed);
      }
      this.warn(`${path}: ${why}; rebuilding it from the segment`);
      this.io.indexesRebuilt++;
      return null;
    }
    seg.size = s.size;
    seg.lastBatchPos = s.lastBatchPos;
    seg.lastBatchCrc = s.lastBatchCrc;
    seg.lastSeq = s.lastSeq;
    seg.recordBytes = s.recordBytes;
    seg.keptDead = s.keptDead;
    seg.liveBytes = s.liveBytes;
    seg.live = s.live;
    seg.firstLive = s.firstLive;
    seg.batches = s.batches;
    seg.firstTime = s.firstTime;
    seg.lastTime = s.lastTime;
    seg.newestRecordTime = s.newestRecordTime;
    seg.horizon = s.horizon;
    seg.tombNext = s.tombNext;
    seg.followedOnDisk = s.followedBy;
    for (let k = 0; k < s.tombStamps.length; k++) {
      seg.tombs.push(s.tombs[2 * k], s.tombs[2 * k + 1]);
      seg.tombStamps.push(s.tombStamps[k]);
    }
    const out = new Map<number, [number, number]>();
    for (let l = 0; l < s.subjects.length; l++) {
      const id = this.index.table.intern(s.subjects[l]);
      seg.subjects.set(id, s.subjectCount[l]);
      out.set(id, [s.subjectFirst[l], s.subjectLast[l]]);
    }
    this.idxInfo.set(seg, { firstSeq: s.firstSeq, batches: s.batches, span: s.span, detailAt: s.detailAt, detailLen: s.detailLen, detailCrc: s.detailCrc, names: s.subjects });
    seg.detail = null;
    seg.indexed = true;
    return out;
  }

  /**
   * A segment's detail from its index file, synchronously (the index asks
   * for it in the middle of a query). An index that no longer reads back is
   * reported, and the detail is rebuilt from the segment itself.
   */
  private loadDetail(seg: Segment): SegmentDetail {
    this.io.detailsLoaded++;
    const info = this.idxInfo.get(seg);
    const path = join(this.dir, seg.name + INDEX_SUFFIX);
    let why = "no index file";
    if (info !== undefined) {
      try {
        const buf = this.fs.readSync(path, info.detailAt, info.detailLen);
        const d = buf === null ? "short" : decodeDetail(buf, info, info.names.map((n) => this.index.table.idOf(n)));
        if (typeof d !== "string") return d;
        why = d;
      } catch (err) {
        why = (err as Error).message;
      }
    }
    this.warn(`${path}: ${why}; reading the segment instead`);
    this.io.indexesRebuilt++;
    this.idxInfo.delete(seg);
    seg.markChanged();
    try {
      return this.scanSync(seg);
    } catch (err) {
      // Unreadable now: the log stops taking writes and is reopened from disk, which reads it all again.
      // Until then the segment answers as empty rather than failing the query that asked.
      this.stick(err instanceof Error ? err : new Error(String(err)));
      return new SegmentDetail(seg.firstSeq);
    }
  }

  /**
   * A detail rebuilt by reading the segment synchronously: its batches and
   * records, less everything a tombstone of the log deletes (so what was
   * deleted stays deleted) and what is gone from the summary's subjects.
   */
  private scanSync(seg: Segment): SegmentDetail {
    const d = new SegmentDetail(seg.firstSeq);
    const buf = this.fs.readSync(join(this.dir, seg.name), 0, seg.size) ?? Buffer.alloc(0);
    for (let pos = 0; pos + BATCH_HEADER <= buf.length; ) {
      if (checkBatch(buf, pos, buf.length) !== null) break;
      const hdr = readBatchHeader(buf, pos);
      if ((hdr.flags & FLAG_TOMBSTONES) === 0) {
        d.addBatch(hdr.firstSeq, hdr.count, pos, hdr.length, hdr.time, this.storedNewest(buf, pos, hdr.time));
        forEachRecord(buf, pos, (i, subject, _p, size) => {
          const id = this.index.table.idOf(subject);
          d.put(hdr.firstSeq + i, id >= 0 && seg.subjects.has(id) ? id : DEAD, size);
        });
      }
      pos += hdr.length;
    }
    for (const other of this.segments) {
      for (let i = 0; i < other.tombs.length; i += 2) {
        for (let q = Math.max(other.tombs[i], d.firstSeq); q <= Math.min(other.tombs[i + 1], d.firstSeq + d.span - 1); q++) d.sid[q - d.firstSeq] = DEAD;
      }
    }
    return d;
  }

  /**
   * Reads a segment batch by batch from `from`, adding to its detail. A batch
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
    const d = this.index.detail(seg);
    const reader = new WindowReader(seg.fh, fileSize);
    if (from === 0) this.io.segmentsScanned++;
    let pos = from;
    let expect = Math.max(seg.batches > 0 ? seg.lastSeq + 1 : seg.firstSeq, seg.tombNext);
    let afterDamage = false;
    let endsDamaged = false;
    while (pos < fileSize) {
      const got = await this.readBatchAt(reader, pos, expect, afterDamage);
      afterDamage = false;
      if (typeof got === "string") {
        const resume = await this.resync(reader, pos + 1, fileSize, expect);
        if (resume < 0 && isLast) {
          endsDamaged = true;
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
        endsDamaged = resume < 0;
        if (resume < 0) break;
        pos = resume;
        afterDamage = true; // the damaged batch's sequences are skipped
        continue;
      }
      const { hdr, subjects, sizes } = got;
      if ((hdr.flags & FLAG_TOMBSTONES) !== 0) {
        const k0 = seg.tombs.length;
        readTombstones(reader.buf, pos - reader.start, seg.tombs);
        for (let k = k0; k < seg.tombs.length; k += 2) seg.tombStamps.push(hdr.time);
        seg.tombNext = Math.max(seg.tombNext, hdr.firstSeq);
        // It names the next sequence: after damage, or a purge that moved the log on, the next data batch starts there.
        expect = Math.max(expect, hdr.firstSeq);
      } else {
        seg.addBatch(d, hdr.firstSeq, hdr.count, pos, hdr.length, hdr.time, this.storedNewest(reader.buf, pos - reader.start, hdr.time));
        for (let i = 0; i < hdr.count; i++) d.put(hdr.firstSeq + i, this.index.table.intern(subjects[i]), sizes[i]);
        expect = hdr.firstSeq + hdr.count;
      }
      seg.endBatch(pos, hdr.length, reader.buf.readUInt32LE(pos - reader.start + 4));
      pos += hdr.length;
    }
    // Cut at a batch boundary (truncated, emptied, a bad restore): every batch left is whole, yet its index claimed more.
    const claimed = isLast ? this.claimedLast : Math.min(this.indexClaimed, nextFirst - 1);
    if (!endsDamaged && claimed >= expect) {
      this.warn(`${join(this.dir, seg.name)}: ends at ${fileSize} bytes, before sequences ${expect}..${claimed} its index or end mark claimed: reported lost`);
      found.push({ from: expect, to: claimed, bytes: 0 });
    }
    seg.size = isLast ? fileSize : pos;
    seg.markChanged();
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
    // A tombstone batch names the next sequence, which may lie past the data still in the file (its
    // last records were deleted and compacted away, or a purge moved the log on); data may not skip.
    const skips = hdr.firstSeq > expect && !gapAllowed && (hdr.flags & (FLAG_GAP | FLAG_TOMBSTONES)) === 0;
    if (hdr.firstSeq < expect || skips) return `sequence ${hdr.firstSeq} where ${expect} was expected`;
    const subjects: string[] = [];
    const sizes: number[] = [];
    if ((hdr.flags & FLAG_TOMBSTONES) !== 0) {
      if (hdr.length !== BATCH_HEADER + hdr.count * TOMBSTONE_BYTES) return "tombstones do not fit their batch";
      return { hdr, subjects, sizes };
    }
    const fits = forEachRecord(reader.buf, at, (_i, subject, _p, size) => {
      subjects.push(subject);
      sizes.push(size);
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
    if (this.closed || this.truncating) return; // a truncation schedules it when done
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
    // Sequences an open (or a reopen) found lost go on record first: an index written now names the segment that
    // follows it, and no longer tells that one between them went (missingSegments). Not on record (lost.json could
    // not be written), compaction would take a damaged batch out of its file and an index would stop naming a gone
    // segment: the next open would find nothing lost. Tried again next time.
    if (!(await this.lossesOnRecord())) return;
    for (;;) {
      // A failed log writes nothing until it is reopened; nor does one whose losses are not on record (compact).
      if (this.closed || this.writeError !== null || this.lost.unsaved) return;
      const victim = this.compactionCandidate();
      if (victim === null) break;
      await this.compact(victim);
    }
    // Sealed segments get index files: then their details can leave memory.
    for (let i = 0; i < this.segments.length - 1 && !this.closed && this.writeError === null; i++) {
      if (this.indexDue(i)) await this.writeIndex(this.segments[i]);
    }
    this.index.trimDetails();
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
        // Compacted, and nothing in it went since: another pass would write the same file. (A batch cut to a few records
        // over many sequences can leave them a share of 0 of its bytes: the file looks all dead however often it is cut.)
        if (seg.compactedAt === seg.changes) continue;
        // Dead records that a compaction kept (inside a batch kept whole) are not reclaimed by another.
        const ratio = seg.liveBytes / Math.max(1, seg.recordBytes - seg.keptDead);
        if (ratio < bestRatio || (ratio === 0 && best === null)) {
          best = seg;
          bestRatio = ratio;
        }
      } else if (seg.tombs.length > 0 && best === null && this.neededTombs(i).length < seg.tombStamps.length) {
        best = seg;
      } else if (seg.tombs.length === 0 && best === null && this.namedByNext(i, seg.tombNext)) {
        // Only a next sequence the next file's name already says (left by a compaction before they were removed), or
        // nothing (an empty newest file that a copy far on sealed).
        best = seg;
      }
    }
    if (best !== null) return best;
    // Many tombstone ranges that earlier files no longer need (their compaction wrote their own for what they keep dead):
    // the ranges live in memory for as long as the file does. Looked at again once their number has doubled.
    for (let i = 0; i < this.segments.length - 1; i++) {
      const seg = this.segments[i];
      const n = seg.tombStamps.length;
      if (seg.recordBytes === 0 || n < TOMBS_WORTH_A_REWRITE || n < 2 * (this.tombsLooked.get(seg) ?? 0)) continue;
      this.tombsLooked.set(seg, n);
      if (this.neededTombs(i).length * 2 < n) return seg;
    }
    return null;
  }

  /**
   * Whether the segment after segment `i` (by number) starts at or past `next`: its name then keeps every
   * sequence below it from being handed out again, and segment `i` need not say so (a file with nothing else is removed).
   */
  private namedByNext(i: number, next: number): boolean {
    const following = this.segments[i + 1];
    // Not an empty last segment: a roll may replace it by another (remove, then create), and a crash in between leaves none.
    if (following === undefined || (following.size === 0 && i + 1 === this.segments.length - 1)) return false;
    return following.firstSeq >= next;
  }

  /** Which tombstone ranges of segment `i` (by number) still delete something physically present in an earlier file. */
  private neededTombs(i: number): number[] {
    const seg = this.segments[i];
    const keep: number[] = [];
    for (let k = 0; k < seg.tombStamps.length; k++) {
      const a = seg.tombs[2 * k];
      const b = seg.tombs[2 * k + 1];
      for (let j = 0; j < i; j++) {
        const other = this.segments[j];
        if (other.batches === 0 || b < other.firstSeq || a > other.lastSeq) continue;
        // Not when that file's own tombstones delete them too (compaction writes those for what it keeps dead).
        if (this.index.detail(other).holdsAny(a, b) && !covers(this.coverOf(other), Math.max(a, other.firstSeq), Math.min(b, other.lastSeq))) {
          keep.push(k);
          break;
        }
      }
    }
    return keep;
  }

  /** A segment's tombstone ranges sorted and merged (kept while they stay the same). */
  private coverOf(seg: Segment): number[] {
    const c = this.covers.get(seg);
    if (c !== undefined && c.n === seg.tombs.length) return c.ranges;
    const ranges = mergedRanges(seg.tombs.slice());
    this.covers.set(seg, { n: seg.tombs.length, ranges });
    return ranges;
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
    // The detail stays while records are copied: deletes that land meanwhile are read from it at the end.
    const d = this.index.detail(seg);
    // A detail that could not be read stands in empty and fails the log: copying it would drop every record.
    if (this.writeError !== null) return;
    seg.pinned = true;
    const next = new Segment(seg.name, seg.firstSeq, null as unknown as StoreFile);
    const nd = next.detail!;
    const out = await this.fs.open(tmpPath, "replace");
    let ok = false;
    /** Records went while the file was written that it still holds: a later pass takes them out (compactedAt stays unset). */
    let diedMeanwhile = false;
    try {
      let pos = 0;
      let expect = seg.firstSeq;
      const writeBatch = async (buf: Buffer): Promise<void> => {
        await writeFully(out, buf, pos);
        next.endBatch(pos, buf.length, buf.readUInt32LE(4));
        pos += buf.length;
      };
      for (let b = 0; b < d.nb; b++) {
        if (this.closed) return;
        const buf = await this.readRange(seg, d.bPos[b], d.bLen[b]);
        if (buf === "error") return; // tried again at the next maintenance
        const problem = buf === "short" ? "short" : checkBatch(buf, 0, buf.length);
        if (problem !== null || typeof buf === "string") {
          // Damage found here is handled as on any read; the rewritten segment is clean.
          this.damagedBatch(seg, d, b, `${problem} on read (compaction)`);
          if (seg.retired) return;
          continue;
        }
        const time = d.bTime[b];
        let run: Buffer[] = [];
        let runIds: number[] = [];
        let runBytes = 0;
        let runStart = 0;
        const flush = async (): Promise<void> => {
          if (run.length === 0) return;
          const batch = encodeRawBatch(run, runBytes, runStart, time, run.length, runStart !== expect ? FLAG_GAP : 0);
          next.addBatch(nd, runStart, run.length, pos, batch.length, time, time);
          for (let k = 0; k < run.length; k++) nd.put(runStart + k, runIds[k], run[k].length);
          await writeBatch(batch);
          expect = runStart + run.length;
          run = [];
          runIds = [];
          runBytes = 0;
        };
        if ((buf[9] & FLAG_FOREIGN) !== 0) {
          const bSeq = d.bSeq[b];
          const count = d.bCount[b];
          // Records gone only before the first stored one (a log start, DeleteRecords or a limit, inside the batch): the
          // batch stays as the client framed it (its timestamps, producer and sequence), as Kafka keeps it, the dead ones
          // kept dead by their tombstones.
          let firstStored = 0;
          while (firstStored < count && d.sidAt(bSeq + firstStored) === DEAD) firstStored++;
          // So is a batch compaction cut before that holds only records still stored.
          const parts = foreignParts(buf, 0)!;
          /**
           * Writes `batch` as this one's sequences. Its dead records count as kept (no later compaction takes them
           * back), except, in a batch cut to the records `cutTo` marks live, those that died since the cut.
           */
          const keepForeign = async (batch: Buffer, cutTo: Uint8Array | null): Promise<void> => {
            const body = batch.length - BATCH_HEADER;
            next.addBatch(nd, bSeq, count, pos, batch.length, time, d.bNewest[b]);
            for (let k = 0; k < count; k++) {
              const id = d.sidAt(bSeq + k);
              nd.put(bSeq + k, id, foreignShare(body, count, k));
              if (cutTo === null ? id === DEAD : cutTo[k] === 0) next.keptDead += foreignShare(body, count, k);
              // Live when the batch was cut, gone during the cut: the batch holds it.
              else if (id === DEAD) diedMeanwhile = true;
            }
            await writeBatch(batch);
            expect = bSeq + count;
          };
          if (firstStored < count && (this.allStored(seg, d, bSeq + firstStored, count - firstStored) || this.holdsOnlyStored(seg, d, bSeq, count, parts.format, parts.bytes))) {
            // Kept whole, as appended; only the gap flag may change.
            const flags = buf[9] | (bSeq !== expect ? FLAG_GAP : 0);
            if (flags !== buf[9]) {
              buf[9] = flags;
              buf.writeUInt32LE(crc32c(buf, 8, buf.length), 4);
            }
            await keepForeign(buf, null);
            continue;
          }
          // Some records are gone from inside it: in a format that can cut a batch (a Kafka batch: as Kafka's cleaner
          // does), the batch with only the rest, spanning the same sequences, the gone ones kept dead by their tombstones.
          const cut = this.opts.foreign?.cut;
          if (cut !== undefined) {
            // Records deleted while it is cut stay in it, dead: a later compaction cuts them (the mask says which went).
            const live = this.liveMask(seg, d, bSeq, count);
            const cutLeft = await cut(parts.format, parts.bytes, live, true);
            // Never larger than the batch was (a compressed batch may cut to more bytes): then it stays as it is.
            const whole = cutLeft !== null && cutLeft.length >= parts.bytes.length;
            const left = whole ? parts.bytes : cutLeft;
            if (left !== null) {
              const head = foreignHead(parts.format, parts.subject);
              sealForeign(head, left, bSeq, time, count, null, bSeq !== expect ? FLAG_GAP : 0);
              // Kept as it was, its dead records are kept too: cutting them would only make it larger again.
              await keepForeign(Buffer.concat([head, left]), whole ? null : live);
            }
            continue;
          }
          // Else the rest become records of the log's own format.
          const messages = await this.foreignMessages(seg, d.bPos[b], buf, 0);
          for (let k = 0; k < d.bCount[b]; k++) {
            const s = bSeq + k;
            const id = d.sidAt(s);
            const m = messages[k];
            if (id === DEAD || m === undefined) {
              await flush();
              continue;
            }
            const input = { subject: m.subject, key: m.key, headers: m.headers, data: m.data };
            const record = Buffer.allocUnsafe(recordSize(input));
            encodeRecord(record, 0, input);
            if (run.length === 0) runStart = s;
            run.push(record);
            runIds.push(id);
            runBytes += record.length;
          }
          await flush();
          continue;
        }
        let p = BATCH_HEADER;
        for (let k = 0; k < d.bCount[b]; k++) {
          const s = d.bSeq[b] + k;
          const len = buf.readUInt32LE(p) + 4;
          const id = d.sidAt(s);
          if (id !== DEAD) {
            if (run.length === 0) runStart = s;
            run.push(buf.subarray(p, p + len));
            runIds.push(id);
            runBytes += len;
          } else await flush();
          p += len;
        }
        await flush();
      }
      const kept = this.neededTombs(this.segments.indexOf(seg));
      // And the records the new file still holds dead (a batch kept whole with its first records gone, a batch cut): as
      // few ranges as their runs, whichever tombstones deleted them (here or in later files, which then need not say so).
      const own = deadRuns(nd);
      const names = Math.max(expect, seg.tombNext);
      if (kept.length > 0 || own.length > 0 || (seg.tombNext > expect && !this.namedByNext(this.segments.indexOf(seg), names))) {
        // One batch for the tombstones still needed, stamped with the newest of the file's: an index that
        // reflects an older one applies it again on open, which changes nothing.
        const needed: number[] = [];
        let stamp = 0;
        for (const k of kept) needed.push(seg.tombs[2 * k], seg.tombs[2 * k + 1]);
        for (const t of seg.tombStamps) stamp = Math.max(stamp, t);
        if (stamp === 0) stamp = seg.lastTime;
        const ranges = mergedRanges(needed.concat(own));
        for (let k = 0; k < ranges.length; k += 2) {
          next.tombs.push(ranges[k], ranges[k + 1]);
          next.tombStamps.push(stamp);
        }
        next.tombNext = names;
        await writeBatch(encodeTombstones(ranges, names, stamp));
      }
      // Failed meanwhile (a read of this or another file): memory may not say what is on disk, so no file is replaced.
      if (this.writeError !== null) return;
      // Damage this pass met is on record (lost.json) before a file without it replaces the one with it: else a crash
      // leaves a clean file and nothing that says what was lost. If it cannot be written, the file stays as it is.
      if (!(await this.lossesOnRecord()) || this.closed) return;
      if (pos === 0) {
        await out.close();
        await this.fs.remove(tmpPath);
        // The index of the segment before it must not name this one as following it once it is gone: that is how a
        // segment lost with its index is found (missingSegments). So it names the one after, first.
        const at = this.segments.indexOf(seg);
        const prev = at > 0 ? this.segments[at - 1] : undefined;
        if (prev !== undefined && prev.followedOnDisk > 0 && prev.followedOnDisk <= seg.firstSeq) {
          // A damaged one is compacted first (compactionCandidate), which writes its index anew; until then this file stays.
          if (prev.damaged) return;
          await this.writeIndex(prev, this.segments[at + 1].firstSeq);
          if (this.writeError !== null || seg.retired || this.closed) return;
        }
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
      // Records deleted while we copied are dead in the old detail; the tombstones that say so live in later files.
      for (let k = 0; k < nd.span; k++) {
        if (nd.sid[k] !== DEAD && d.sidAt(nd.firstSeq + k) === DEAD) {
          nd.sid[k] = DEAD;
          diedMeanwhile = true;
        }
      }
      next.fh = out;
      next.size = pos;
      next.createdAt = seg.createdAt;
      this.index.summarize(next);
      this.segments[this.segments.indexOf(seg)] = next;
      this.retire(seg);
      this.index.noteDetail(next);
      if (!diedMeanwhile) next.compactedAt = next.changes;
      ok = true;
      this.io.compactions++;
      await this.writeIndex(next);
    } finally {
      if (!seg.retired) seg.pinned = false;
      if (!ok) {
        await out.close().catch(() => {});
        await this.fs.remove(tmpPath);
      }
    }
  }

  private retire(seg: Segment): void {
    seg.retired = true;
    seg.pinned = false;
    if (this.cached?.seg === seg) this.cached = null;
    if (this.decoded?.seg === seg) this.decoded = null;
    this.cuts = this.cuts.filter((c) => c.seg !== seg);
    this.windows = this.windows.filter((w) => w.seg !== seg);
    this.tail = this.tail.filter((t) => t.seg !== seg);
    this.index.forgetSegment(seg);
    this.idxInfo.delete(seg);
    if (seg.users === 0) void seg.fh.close().catch(() => {});
  }

  /**
   * Writes `<segment>.idx` the crash-safe way, from the segment's detail in
   * memory. It reflects every tombstone that has landed (its horizon). If the
   * segment changed while it was written, it stays not indexed: its detail
   * is kept, and the next maintenance writes it again.
   */
  private async writeIndex(seg: Segment, followedBy = this.followerOf(seg)): Promise<void> {
    const d = this.index.detail(seg);
    const changes = seg.changes;
    const horizon = this.landedStamp;
    const enc = encodeSegmentIndex(seg, d, horizon, (id) => this.index.table.subjectOf(id), followedBy);
    await writeFileDurably(this.fs, join(this.dir, seg.name + INDEX_SUFFIX), enc.buf);
    seg.followedOnDisk = followedBy;
    this.io.indexesWritten++;
    if (seg.retired || seg.changes !== changes) return;
    seg.indexed = true;
    seg.horizon = horizon;
    this.idxInfo.set(seg, { firstSeq: seg.firstSeq, batches: d.nb, span: d.span, detailAt: enc.detailAt, detailLen: enc.detailLen, detailCrc: enc.detailCrc, names: enc.names });
  }

  /** The first sequence of the segment after `seg`, 0 if it is the newest: what its index says followed it. */
  private followerOf(seg: Segment): number {
    const i = this.segments.indexOf(seg);
    return i >= 0 && i + 1 < this.segments.length ? this.segments[i + 1].firstSeq : 0;
  }

  /**
   * Whether segment `i` (sealed) needs its index written: it has none that describes it, or the one it has names
   * another segment as following it (written while it was the newest, or before a segment after it went). One of
   * a version that did not say (-1) is left as it is: rewriting every index of an upgraded log costs a read and a
   * write of each; they say it once they are written for another reason.
   */
  private indexDue(i: number): boolean {
    const seg = this.segments[i];
    if (seg.damaged) return false;
    return !seg.indexed || (seg.followedOnDisk >= 0 && seg.followedOnDisk !== this.segments[i + 1].firstSeq);
  }

  /** Writes lost.json now if a loss is new since it was last written; whether every loss is on record. */
  private async lossesOnRecord(): Promise<boolean> {
    this.lost.saveLater(() => this.closed);
    await this.lost.settled();
    return !this.lost.unsaved;
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
  close(): Promise<void> {
    // A truncation stops the writer: the close waits for it, and a second close for the first.
    this.closing ??= this.truncations.then(() => this.closeNow());
    return this.closing;
  }

  private closing: Promise<void> | null = null;

  private async closeNow(): Promise<void> {
    if (this.closed) return;
    if (this.tombTimer) clearTimeout(this.tombTimer);
    this.tombTimer = null;
    if (this.spareTimer) clearTimeout(this.spareTimer);
    this.spareTimer = null;
    this.tail = [];
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
    // Losses not on record (lost.json could not be written): no index is written that would stop showing a gone
    // segment; the next open reads those segments through instead.
    const unrecorded = !(await this.lossesOnRecord());
    for (let i = 0; i < this.segments.length && !unrecorded; i++) {
      const s = this.segments[i];
      // A failed log writes nothing more: the next open reads the segments themselves.
      const due = i < this.segments.length - 1 ? this.indexDue(i) : !s.indexed && !s.damaged;
      if (due && this.writeError === null) await this.writeIndex(s).catch((err) => this.warn(`index of ${s.name}: ${(err as Error).message}`));
    }
    await this.endMark?.close();
    for (const s of this.segments) await s.fh.close();
  }
}

/**
 * The runs of dead sequences in `d`'s batches, as inclusive [from, to]
 * pairs; a run goes on across sequences no batch of it holds (gone).
 */
function deadRuns(d: SegmentDetail): number[] {
  const runs: number[] = [];
  let from = -1;
  let to = -1;
  for (let b = 0; b < d.nb; b++) {
    for (let s = d.bSeq[b]; s < d.bSeq[b] + d.bCount[b]; s++) {
      if (d.sidAt(s) !== DEAD) {
        if (from >= 0) runs.push(from, to);
        from = -1;
      } else {
        if (from < 0) from = s;
        to = s;
      }
    }
  }
  if (from >= 0) runs.push(from, to);
  return runs;
}

/** Cut batches scanStored keeps (FileLog.cuts). */
const RECENT_CUTS = 8;

function sameMask(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Tombstone ranges of a file with records from which compactionCandidate asks whether most are needed no more. */
const TOMBS_WORTH_A_REWRITE = 1024;

/** Whether sorted, merged inclusive `ranges` cover every sequence of a..b. */
function covers(ranges: number[], a: number, b: number): boolean {
  let lo = 0;
  let hi = ranges.length / 2;
  // The last range beginning at or before a.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[2 * mid] <= a) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && ranges[2 * (lo - 1) + 1] >= b;
}

/**
 * Inclusive [from, to] pairs sorted and merged where they touch or overlap:
 * a round's deletes as few tombstone ranges as they allow (log compaction
 * deletes the records of a batch one by one, mostly in runs).
 */
function mergedRanges(pairs: number[]): number[] {
  if (pairs.length <= 2) return pairs;
  const order: number[] = [];
  for (let i = 0; i < pairs.length; i += 2) order.push(i);
  order.sort((x, y) => pairs[x] - pairs[y]);
  const out: number[] = [];
  for (const i of order) {
    const n = out.length;
    if (n > 0 && pairs[i] <= out[n - 1] + 1) out[n - 1] = Math.max(out[n - 1], pairs[i + 1]);
    else out.push(pairs[i], pairs[i + 1]);
  }
  return out;
}

/** Tells a foreign batch's appender, once, that its bytes are read no more. */
function bytesRead(b: Staged): void {
  const tell = b.bytesDone;
  if (tell === null) return;
  b.bytesDone = null;
  tell();
}

/** Reused by foreignShares for batches of up to this many records; larger ones get an array of their own. */
const SHARES_KEPT = 64 * 1024;
let sharesScratch = new Float64Array(1024);

/**
 * The stored size of each record of a foreign batch (foreignShare), for the
 * limit checks: valid until the next call. Not an array per batch.
 */
function foreignShares(body: number, count: number): Float64Array {
  let out: Float64Array;
  if (count > SHARES_KEPT) out = new Float64Array(count);
  else {
    if (sharesScratch.length < count) sharesScratch = new Float64Array(Math.min(SHARES_KEPT, Math.max(count, sharesScratch.length * 2)));
    out = sharesScratch;
  }
  for (let i = 0; i < count; i++) out[i] = foreignShare(body, count, i);
  return out;
}

/** The first `length` bytes of `parts` laid end to end, as views. */
function prefix(parts: readonly Buffer[], length: number): Buffer[] {
  const out: Buffer[] = [];
  for (const p of parts) {
    if (length <= 0) break;
    out.push(p.length <= length ? p : p.subarray(0, length));
    length -= p.length;
  }
  return out;
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
