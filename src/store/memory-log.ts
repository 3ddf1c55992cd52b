/**
 * The memory-only log (`storage: memory`): the same interface and the same
 * ordering, acknowledgement and retention semantics as the file log, nothing
 * on disk.
 */

import { ageTimer, DEAD, LiveIndex } from "./live-index.js";
import { IndexedLog } from "./log-index.js";
import {
  limitRefusal,
  refusal,
  runRefusal,
  purgeRefusal,
  sequenceRefusal,
  inputAt,
  type AppendCallback,
  type AppendInput,
  type Limits,
  type LogState,
  type MessageLog,
  type PurgeOptions,
  type RecordRun,
  type ScanOptions,
  type StoredMessage,
  noForeignRecords,
  copyMisfit,
  goneMisfit,
  isForeignBatch,
  type ForeignBatch,
  type ForeignRecords,
  type StoredItem,
  type LostRange,
} from "./log.js";
import { foreignBodySize, foreignShare, recordSize, runRecordSize } from "./format.js";

export interface MemoryLogOptions {
  maxRecordBytes?: number;
  limits?: Limits;
  /** Reads foreign batches (appendBatch) as messages. */
  foreign?: ForeignRecords;
}

/** A foreign batch kept whole, decoded when read. */
interface HeldBatch {
  format: number;
  subject: string;
  firstSeq: number;
  count: number;
  time: number;
  /** The newest time a record of it carries (ForeignRecords.newestRecordTime), else `time`. */
  newest: number;
  /** As stored, or kept cut (`shrink`) once records went from inside it. */
  bytes: Buffer;
  /** Records `bytes` holds, and how many of those were removed since: at half gone it is cut. */
  present: number;
  dead: number;
  shrinking: boolean;
}

/** A batch smaller than this is not cut to free memory: what it would free is less than the cut costs. */
const SHRINK_MIN_BYTES = 512;

export class MemoryLog extends IndexedLog<LiveIndex> implements MessageLog {
  protected index = new LiveIndex();
  /** Appends complete at once: nothing waits. */
  readonly backlogMessages = 0;
  readonly backlogBytes = 0;
  /**
   * The live messages by sequence. Maps, not arrays from the first live
   * sequence: a message that stays (a compacted topic's first record, a KV
   * key never written again) would keep a slot for every sequence after it,
   * a memory growing with every message ever stored.
   */
  private readonly msgs = new Map<number, StoredMessage>();
  /** Per live sequence, the foreign batch holding it (then msgs has nothing for it). */
  private readonly held = new Map<number, HeldBatch>();
  private readonly foreign: ForeignRecords;
  private lastDecoded: { batch: HeldBatch; messages: Promise<StoredMessage[]> } | null = null;
  private readonly maxRecordBytes: number;
  private limits: Limits;
  private ageTimer: NodeJS.Timeout | null = null;
  private lastSeq = 0;
  private lastTime = 0;
  private closed = false;

  constructor(opts: MemoryLogOptions = {}) {
    super();
    this.maxRecordBytes = opts.maxRecordBytes ?? 8 * 1024 * 1024;
    this.limits = { ...opts.limits };
    this.foreign = opts.foreign ?? noForeignRecords;
    this.index.onRemove = (seq) => {
      if (this.msgs.delete(seq)) return;
      const h = this.held.get(seq);
      if (h === undefined) return;
      this.held.delete(seq);
      if (++h.dead * 2 >= h.present && h.dead < h.present) this.shrinkLater(h);
    };
    this.setLimits(this.limits);
  }

  append(input: AppendInput, done: AppendCallback): void {
    const size = recordSize(input);
    const refused =
      refusal(this.closed ? new Error("log is closed") : null, size, this.maxRecordBytes) ??
      sequenceRefusal(this.lastSeq, 1) ??
      limitRefusal(this.limits, this.index.messages, this.index.bytes, size, this.limits.discardNewPerSubject ? this.index.table.countOf(input.subject) : 0);
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    this.lastTime = Math.max(Date.now(), this.lastTime);
    this.store(input, size);
    const seq = this.lastSeq;
    // Acknowledge asynchronously, like the file log, so callers cannot come to rely on a synchronous ack.
    queueMicrotask(() => done(null, seq));
  }

  /** Stores one record at the next sequence with the log's last time. */
  private store(input: AppendInput, size: number): void {
    const seq = ++this.lastSeq;
    this.msgs.set(seq, {
      seq,
      time: this.lastTime,
      subject: input.subject,
      headers: input.headers ? Buffer.from(input.headers) : null,
      key: input.key ? Buffer.from(input.key) : null,
      data: Buffer.from(input.data),
    });
    const id = this.index.table.intern(input.subject);
    this.index.add(seq, id, size);
    this.evicted(this.index.evict(this.limits, [id]));
  }

  appendMany(run: RecordRun, done: AppendCallback): void {
    const sizes: number[] = [];
    for (let i = 0; i < run.count; i++) sizes.push(runRecordSize(run, i));
    const refused =
      runRefusal(this.closed ? new Error("log is closed") : null, this.maxRecordBytes, this.limits, this.index.messages, this.index.bytes, run, sizes, (s) => this.index.table.countOf(s)) ??
      sequenceRefusal(this.lastSeq, run.count);
    if (refused !== null) {
      done(refused, 0);
      return;
    }
    const first = this.lastSeq + 1;
    for (let i = 0; i < run.count; i++) this.append(inputAt(run, i), () => {});
    queueMicrotask(() => done(null, run.count > 0 ? first : 0));
  }

  appendBatch(batch: ForeignBatch, done: AppendCallback): void {
    const n = batch.count;
    const body = foreignBodySize(batch.subject, batch.bytes.length);
    const sizes: number[] = [];
    for (let i = 0; i < n; i++) sizes.push(foreignShare(body, n, i));
    const refused = runRefusal(
      this.closed ? new Error("log is closed") : null,
      this.maxRecordBytes,
      this.limits,
      this.index.messages,
      this.index.bytes,
      { count: n, subject: batch.subject, subjects: null },
      sizes,
      (s) => this.index.table.countOf(s),
    ) ?? sequenceRefusal(this.lastSeq, n);
    if (refused !== null || n === 0) {
      done(refused, 0);
      return;
    }
    this.lastTime = Math.max(Date.now(), this.lastTime);
    const first = this.lastSeq + 1;
    this.hold(batch, sizes);
    queueMicrotask(() => done(null, first));
  }

  /** Stores a foreign batch whole at the next sequences with the log's last time; `sizes` are its records' shares; `gone`: a copy's sequences its source no longer stores. */
  private hold(batch: ForeignBatch, sizes: readonly number[], gone: readonly number[] = []): void {
    const n = batch.count;
    const first = this.lastSeq + 1;
    const bytes = Buffer.from(batch.bytes);
    const newest = this.foreign.newestRecordTime?.(batch.format, bytes) ?? null;
    const held: HeldBatch = { format: batch.format, subject: batch.subject, firstSeq: first, count: n, time: this.lastTime, newest: newest !== null && Number.isFinite(newest) ? newest : this.lastTime, bytes, present: n, dead: 0, shrinking: false };
    batch.bytesDone?.();
    const id = this.index.table.intern(batch.subject);
    for (let i = 0; i < n; i++) {
      const seq = ++this.lastSeq;
      this.held.set(seq, held);
      this.index.add(seq, id, sizes[i]);
    }
    // At once, before the limits look: the copy never shows a sequence its source no longer stores.
    for (let i = 0; i < gone.length; i += 2) this.index.removeRange(gone[i], gone[i + 1]);
    this.evicted(this.index.evict(this.limits, [id]));
  }

  appendCopy(firstSeq: number, time: number, what: RecordRun | ForeignBatch, done: AppendCallback): void {
    const foreign = isForeignBatch(what);
    const sizes: number[] = [];
    if (foreign) {
      const body = foreignBodySize(what.subject, what.bytes.length);
      for (let i = 0; i < what.count; i++) sizes.push(foreignShare(body, what.count, i));
    } else for (let i = 0; i < what.count; i++) sizes.push(runRecordSize(what, i));
    let refused: Error | null = this.closed ? new Error("log is closed") : null;
    for (let i = 0; i < sizes.length && refused === null; i++) refused = refusal(null, sizes[i], this.maxRecordBytes);
    // An empty copy's time is not stored.
    const misfit = copyMisfit(firstSeq, what.count === 0 ? this.lastTime : time, this.lastSeq, this.lastTime) ?? (foreign && what.gone !== undefined ? goneMisfit(what.gone, firstSeq, what.count) : null);
    if (refused === null && misfit !== null) refused = new Error(misfit);
    if (refused !== null) {
      if (foreign) what.bytesDone?.();
      done(refused, 0);
      return;
    }
    this.skipTo(firstSeq);
    if (what.count === 0) {
      queueMicrotask(() => done(null, firstSeq));
      return;
    }
    this.lastTime = time;
    if (foreign) this.hold(what, sizes, what.gone);
    else for (let i = 0; i < what.count; i++) this.store(inputAt(what, i), sizes[i]);
    queueMicrotask(() => done(null, firstSeq));
  }

  /** Moves the next sequence on to `seq` (a copy skipping what its source no longer holds). */
  private skipTo(seq: number): void {
    if (seq > this.lastSeq + 1) this.lastSeq = seq - 1;
  }


  /**
   * Frees what removed records took of a batch held whole: once half of its
   * records went (compaction, deletes from inside it), it is kept cut to
   * those left, as the file log's compaction keeps it on disk. Without this
   * a memory stream's real size grows past its limits, which count only
   * live records. After the removal that called it, so a batch removed
   * whole in one go is not cut first.
   */
  private shrinkLater(h: HeldBatch): void {
    if (h.shrinking || this.foreign.cut === undefined || h.bytes.length < SHRINK_MIN_BYTES) return;
    h.shrinking = true;
    const shrinking = this.shrink(h).finally(() => {
      h.shrinking = false;
      this.shrinks.delete(shrinking);
    });
    this.shrinks.add(shrinking);
  }

  private readonly shrinks = new Set<Promise<void>>();

  private async shrink(h: HeldBatch): Promise<void> {
    await Promise.resolve();
    // Its records still held are those whose sequences still point at it (a removal clears the pointer).
    const live = new Uint8Array(h.count);
    let kept = 0;
    for (let k = 0; k < h.count; k++) {
      if (this.held.get(h.firstSeq + k) === h) {
        live[k] = 1;
        kept++;
      }
    }
    if (kept === 0 || this.closed) return;
    const deadBefore = h.dead;
    let cut: Buffer | null = null;
    try {
      cut = await this.foreign.cut!(h.format, h.bytes, live, true);
    } catch {
      // Kept as it is (its reads decode it as before); tried again once half of what is left goes.
    }
    if (cut !== null && cut.length < h.bytes.length && this.holdsAny(h)) {
      h.bytes = cut;
      if (this.lastDecoded?.batch === h) this.lastDecoded = null;
    }
    // Counted from what was cut (or would have been): removals during the cut are among those kept.
    h.present = kept;
    h.dead -= deadBefore;
  }

  /** Whether a sequence still points at `h` (a truncation may have taken it since). */
  private holdsAny(h: HeldBatch): boolean {
    for (let k = 0; k < h.count; k++) if (this.held.get(h.firstSeq + k) === h) return true;
    return false;
  }

  /** Resolves once every cut under way (`shrinkLater`) is done: for tests. */
  async settled(): Promise<void> {
    while (this.shrinks.size > 0) await Promise.all([...this.shrinks]);
  }

  /** The messages of a foreign batch; only the last one decoded is kept (readers go batch by batch), so memory holds each batch once, as stored. */
  private decoded(h: HeldBatch): Promise<StoredMessage[]> {
    if (this.lastDecoded?.batch !== h) this.lastDecoded = { batch: h, messages: this.foreign.decode(h.format, h.bytes, h.firstSeq, h.time, h.subject) };
    return this.lastDecoded.messages;
  }

  /** The message at `seq` (stored and live), from a foreign batch if need be. */
  private async at(seq: number): Promise<StoredMessage | undefined> {
    const m = this.msgs.get(seq);
    if (m !== undefined) return m;
    const h = this.held.get(seq);
    return h === undefined ? undefined : (await this.decoded(h))[seq - h.firstSeq];
  }

  async get(seq: number): Promise<StoredMessage | null> {
    return this.index.sidAt(seq) !== DEAD ? ((await this.at(seq)) ?? null) : null;
  }

  async next(after: number, filter?: string): Promise<StoredMessage | null> {
    const seq = this.index.nextMatch(after, filter);
    return seq === 0 ? null : this.get(seq);
  }

  scan(from: number, opts: ScanOptions = {}): Promise<StoredMessage[]> {
    return this.read(from, opts, false) as Promise<StoredMessage[]>;
  }

  scanStored(from: number, opts: ScanOptions = {}): Promise<StoredItem[]> {
    return this.read(from, opts, true);
  }

  /** scan, or with `whole` scanStored (foreign batches with every record from `from` on live come back as appended). */
  private async read(from: number, opts: ScanOptions, whole: boolean): Promise<StoredItem[]> {
    const filter = opts.filter === ">" ? undefined : opts.filter;
    const max = opts.maxMessages ?? 256;
    const maxBytes = opts.maxBytes ?? Infinity;
    const out: StoredItem[] = [];
    let bytes = 0;
    for (let seq = this.index.nextMatch(from - 1, filter); seq !== 0 && out.length < max && bytes < maxBytes; seq = this.index.nextMatch(seq, filter)) {
      // A message of the log's own (most are): no lookup beyond this one, no await.
      const own = this.msgs.get(seq);
      if (own !== undefined) {
        out.push(own);
        bytes += this.index.sizeAt(seq);
        continue;
      }
      const h = this.held.get(seq);
      if (h === undefined) continue;
      // And for a copy (asStored) always: it names what is gone.
      if (whole && filter === undefined && (opts.asStored === true || this.allLiveFrom(h, from))) {
        out.push({ format: h.format, firstSeq: h.firstSeq, count: h.count, time: h.time, subject: h.subject, bytes: h.bytes });
        for (let s = h.firstSeq; s < h.firstSeq + h.count; s++) bytes += this.index.sizeAt(s);
        seq = h.firstSeq + h.count - 1;
        continue;
      }
      // Records gone from inside it: in a format that can cut a batch, one of only those left (as the file log hands it).
      if (whole && filter === undefined && this.foreign.cut !== undefined) {
        const live = new Uint8Array(h.count);
        for (let k = 0; k < h.count; k++) live[k] = this.index.sidAt(h.firstSeq + k) === DEAD ? 0 : 1;
        const left = await this.foreign.cut(h.format, h.bytes, live);
        if (left !== null) {
          out.push({ format: h.format, firstSeq: h.firstSeq, count: h.count, time: h.time, subject: h.subject, bytes: left });
          bytes += left.length;
        }
        seq = h.firstSeq + h.count - 1;
        continue;
      }
      const m = (await this.decoded(h))[seq - h.firstSeq];
      if (m === undefined) continue;
      out.push(m);
      bytes += this.index.sizeAt(seq);
    }
    return out;
  }

  private allLiveFrom(h: HeldBatch, from: number): boolean {
    for (let s = Math.max(h.firstSeq, from); s < h.firstSeq + h.count; s++) if (this.index.sidAt(s) === DEAD) return false;
    return true;
  }

  /** When the live message at `seq` was stored. */
  private timeOf(seq: number): number {
    return this.msgs.get(seq)?.time ?? this.held.get(seq)!.time;
  }

  /**
   * A sequence below which every live message was stored before `time`, and
   * from which none was: stored times never go back along the log, so the
   * live sequences are bisected (what is dead takes no memory to search).
   */
  private seqAtOrAfter(time: number): number {
    let lo = this.index.firstLive() || this.lastSeq + 1;
    let hi = this.lastSeq + 1;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const s = this.index.nextMatch(mid - 1);
      if (s === 0 || s >= hi || this.timeOf(s) >= time) hi = mid;
      else lo = s + 1;
    }
    return lo;
  }

  async firstAtOrAfter(time: number): Promise<StoredMessage | null> {
    return this.next(this.seqAtOrAfter(time) - 1);
  }

  firstStampedAtOrAfter(time: number, from: number): number {
    // Record by record: a foreign batch's records may carry times older or newer than when they were stored.
    for (let seq = this.index.nextMatch(from - 1); seq !== 0; ) {
      const h = this.held.get(seq);
      if (h !== undefined) {
        if (h.newest >= time) return seq;
        seq = this.index.nextMatch(h.firstSeq + h.count - 1);
        continue;
      }
      if (this.msgs.get(seq)!.time >= time) return seq;
      seq = this.index.nextMatch(seq);
    }
    return this.lastSeq + 1;
  }

  newestStamped(skip?: ReadonlySet<number>): { seq: number; time: number } | null {
    let best = -Infinity;
    let bestSeq = 0;
    for (let seq = this.index.nextMatch(0); seq !== 0; ) {
      const h = this.held.get(seq);
      const t = h !== undefined ? h.newest : this.msgs.get(seq)!.time;
      if (t > best && skip?.has(seq) !== true) {
        best = t;
        bestSeq = seq;
      }
      // A batch counts once, from its first stored record.
      seq = this.index.nextMatch(h !== undefined ? h.firstSeq + h.count - 1 : seq);
    }
    return bestSeq === 0 ? null : { seq: bestSeq, time: best };
  }

  async lastBySubject(subject: string): Promise<StoredMessage | null> {
    const last = this.index.table.lastOf(subject);
    return last === 0 ? null : this.get(last);
  }

  async delete(seq: number): Promise<boolean> {
    if (this.closed) throw new Error("log is closed");
    return this.index.remove(seq);
  }

  async purge(opts: PurgeOptions = {}): Promise<number> {
    if (this.closed) throw new Error("log is closed");
    const refused = purgeRefusal(opts, this.lastSeq);
    if (refused !== null) throw refused;
    const ranges = this.index.planPurge(opts);
    let n = 0;
    for (let i = 0; i < ranges.length; i += 2) n += this.index.removeRange(ranges[i], ranges[i + 1]).length;
    // Everything up to a sequence past the last: the log moves on to it (nats-server does), as the file log does.
    const upTo = opts.upTo ?? 0;
    if ((opts.filter === undefined || opts.filter === ">") && !((opts.keep ?? 0) > 0) && upTo > this.lastSeq + 1) {
      this.lastSeq = upTo - 1;
      return n;
    }
    return n;
  }

  private readonly lost: LostRange[] = [];

  async noteLost(from: number, to: number): Promise<void> {
    if (to >= from) this.lost.push({ from, to, bytes: 0 });
  }

  async truncateFrom(seq: number): Promise<number> {
    if (this.closed) throw new Error("log is closed");
    if (!Number.isSafeInteger(seq) || seq < 1) throw new Error(`cannot truncate from sequence ${seq}`);
    if (seq > this.lastSeq) return this.lastSeq + 1;
    const next = this.unsplitFrom(seq);
    // Its removals take the messages out of the maps (onRemove).
    this.index.truncateFrom(next);
    this.lastDecoded = null;
    this.lastSeq = next - 1;
    // Times go back with the log: the leader's messages that follow may be older than the ones cut.
    const last = this.lastLiveBelow(next);
    this.lastTime = last === 0 ? 0 : this.timeOf(last);
    return next;
  }

  /**
   * Where a truncation from `seq` cuts: `seq`, or the first sequence of a
   * foreign batch that holds `seq` and a live record below it (a batch is
   * kept or cut whole, as the file log stores it).
   */
  private unsplitFrom(seq: number): number {
    const last = this.lastLiveBelow(seq);
    const h = last === 0 ? undefined : this.held.get(last);
    return h !== undefined && h.firstSeq + h.count > seq ? h.firstSeq : seq;
  }

  /** The last live sequence below `seq`, 0 if none. */
  private lastLiveBelow(seq: number): number {
    const stop = this.index.firstLive();
    for (let s = seq - 1; stop !== 0 && s >= stop; s--) if (this.msgs.has(s) || this.held.has(s)) return s;
    return 0;
  }

  onEvicted: ((ranges: readonly number[]) => void) | null = null;

  /** Tells onEvicted of what the limits removed (sequences, as [seq, seq] pairs). */
  private evicted(seqs: readonly number[]): void {
    if (seqs.length === 0 || this.onEvicted === null) return;
    const ranges: number[] = [];
    for (const seq of seqs) ranges.push(seq, seq);
    this.onEvicted(ranges);
  }

  setLimits(limits: Limits): void {
    this.limits = { ...limits };
    this.evicted(this.index.enforce(this.limits));
    this.expireByAge();
    this.ageTimer = ageTimer(this.ageTimer, limits.maxAgeMs, () => this.expireByAge());
  }

  private expireByAge(): void {
    const maxAge = this.limits.maxAgeMs ?? 0;
    if (maxAge <= 0 || this.closed) return;
    this.index.expireBefore(this.seqAtOrAfter(Date.now() - maxAge));
  }

  newestTime(): number {
    return this.lastTime;
  }

  state(): LogState {
    return this.index.state(this.lastSeq, [], this.lost, null);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.ageTimer) clearInterval(this.ageTimer);
  }
}
