/**
 * The interface every message log implements (file-backed and memory-only):
 * one append-only, densely sequenced log per stream partition. Streams and
 * doors depend on this, never on a concrete store.
 */

export interface AppendInput {
  subject: string;
  data: Uint8Array;
  headers?: Uint8Array | null;
  key?: Uint8Array | null;
}

/**
 * Records that lie in one buffer, described by offsets: what a door whose wire
 * format already holds the bytes (Kafka's record batches) hands the log, so
 * that no object or view is made per record. A length below 0 means absent.
 */
export interface RecordRun {
  readonly count: number;
  readonly source: Buffer;
  /** Every record's subject, unless `subjects` gives them one by one. */
  readonly subject: string;
  readonly subjects: readonly string[] | null;
  readonly keyAt: Int32Array;
  readonly keyLen: Int32Array;
  readonly valueAt: Int32Array;
  readonly valueLen: Int32Array;
  /** Per record its NATS header block or null; null when no record has one. */
  readonly headers: ReadonlyArray<Uint8Array | null> | null;
}

export function subjectAt(run: Pick<RecordRun, "subject" | "subjects">, i: number): string {
  return run.subjects === null ? run.subject : run.subjects[i];
}

/** Payload plus headers of record i: what message size limits count. */
export function payloadSizeAt(run: RecordRun, i: number): number {
  return Math.max(0, run.valueLen[i]) + (run.headers?.[i]?.length ?? 0);
}

/** One record of a run as an AppendInput (views of the source). */
export function inputAt(run: RecordRun, i: number): AppendInput {
  const src = run.source;
  return {
    subject: subjectAt(run, i),
    key: run.keyLen[i] < 0 ? null : src.subarray(run.keyAt[i], run.keyAt[i] + run.keyLen[i]),
    headers: run.headers?.[i] ?? null,
    data: run.valueLen[i] < 0 ? src.subarray(0, 0) : src.subarray(run.valueAt[i], run.valueAt[i] + run.valueLen[i]),
  };
}

/** A run made of separate inputs (their bytes copied into one source): for callers off the hot path. */
export function runOf(inputs: readonly AppendInput[]): RecordRun {
  const n = inputs.length;
  const keyAt = new Int32Array(n);
  const keyLen = new Int32Array(n);
  const valueAt = new Int32Array(n);
  const valueLen = new Int32Array(n);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const { key, data } = inputs[i];
    keyAt[i] = at;
    keyLen[i] = key ? key.length : -1;
    if (key) {
      parts.push(key);
      at += key.length;
    }
    valueAt[i] = at;
    valueLen[i] = data.length;
    parts.push(data);
    at += data.length;
  }
  const headers = inputs.some((x) => x.headers) ? inputs.map((x) => x.headers ?? null) : null;
  return { count: n, source: Buffer.concat(parts), subject: "", subjects: inputs.map((x) => x.subject), keyAt, keyLen, valueAt, valueLen, headers };
}

/**
 * A batch kept whole in a client's own record format (a Kafka RecordBatch
 * as produced, compressed or not): its records take `count` consecutive
 * sequences under one subject, and a reader that speaks the format gets
 * the bytes back as they came (scanStored). Other readers get messages
 * from the log's ForeignRecords decoder.
 */
export interface ForeignBatch {
  /** Which format (FOREIGN_KAFKA). */
  readonly format: number;
  readonly subject: string;
  readonly count: number;
  readonly bytes: Uint8Array;
  /**
   * The CRC-32C of bytes[from..] as the caller has checked it (a Kafka
   * batch's own CRC): the log derives its batch checksum from it instead of
   * reading those bytes a second time. The caller vouches for it; a wrong
   * value makes the stored batch read back as damaged, never as other data.
   */
  readonly tailCrc?: { readonly from: number; readonly crc: number };
  /**
   * Called once the log reads `bytes` no more (they are written, or the
   * append failed or was refused), at the latest just before the append's
   * callback: from then on the caller may reuse them.
   */
  readonly bytesDone?: () => void;
  /**
   * appendCopy only: the batch's sequences its source no longer stores, as
   * flat inclusive [from, to] pairs, ascending, within the batch (a batch
   * that compaction or a log start moved inside it cut spans them, and may
   * still hold their records). They are removed as the batch lands, in
   * the same write, so that the copy never takes one as stored; a reader
   * of the format then gets the batch cut as its source hands it.
   */
  readonly gone?: readonly number[];
}

/** Foreign format 1: Kafka's RecordBatch v2, from its baseOffset field to its end. */
export const FOREIGN_KAFKA = 1;

/**
 * Turns a stored foreign batch into the messages of its records, for
 * readers that want messages (JetStream consumers, gets, compaction). Given
 * to a log by its owner: the store keeps the bytes and never reads inside.
 */
export interface ForeignRecords {
  decode(format: number, bytes: Buffer, firstSeq: number, time: number, subject: string): Promise<StoredMessage[]>;
  /**
   * The newest time any record of the batch carries as its own (a Kafka
   * batch's max timestamp), read from its header without decoding it; null
   * if the format carries none (its records then carry the stored time).
   * Indexed per batch for firstStampedAtOrAfter.
   */
  newestRecordTime?(format: number, bytes: Buffer): number | null;
  /**
   * How many records the batch holds, from its header: fewer than the
   * sequences it spans once `cut` took some out (decode then leaves holes
   * where they were); -1 if the format cannot tell.
   */
  records?(format: number, bytes: Buffer): number;
  /**
   * The batch with only the records at the indexes (sequence - first
   * sequence) `live` marks 1, in its own format, spanning the same
   * sequences; null when none is left. Compaction keeps a foreign batch
   * so (`toStore`: as small as the format makes it), and scanStored hands a
   * reader of the format a batch of only the records still stored.
   */
  cut?(format: number, bytes: Buffer, live: Uint8Array, toStore?: boolean): Promise<Buffer | null>;
}

/**
 * A foreign batch as stored, every record of it from where the read began
 * still there (those before it may be gone: deleted below a log start that
 * fell inside it): what scanStored hands a reader of its format.
 */
export interface StoredForeign {
  readonly format: number;
  readonly firstSeq: number;
  readonly count: number;
  readonly time: number;
  /** The subject its records are stored under. */
  readonly subject: string;
  /** The client's bytes as they were appended (a view: copy to keep). */
  readonly bytes: Buffer;
  /**
   * In a copy (readCopy, with ScanOptions.asStored): the batch's sequences
   * its source no longer stores, as ForeignBatch.gone; absent when none.
   */
  readonly gone?: readonly number[];
}

/** scanStored's items: messages, and foreign batches kept whole. */
export type StoredItem = StoredMessage | StoredForeign;

export function isForeign(item: StoredItem): item is StoredForeign {
  return (item as StoredForeign).format !== undefined;
}

/** Whether appendCopy was given a foreign batch (else a run of records). */
export function isForeignBatch(what: RecordRun | ForeignBatch): what is ForeignBatch {
  return (what as ForeignBatch).format !== undefined;
}

/** Why `gone` is not flat inclusive pairs, ascending and apart, within firstSeq..firstSeq+count-1 (ForeignBatch.gone), or null. */
export function goneMisfit(gone: readonly number[], firstSeq: number, count: number): string | null {
  let after = firstSeq - 1;
  for (let i = 0; i < gone.length; i += 2) {
    const [from, to] = [gone[i], gone[i + 1]];
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from <= after || to < from || to >= firstSeq + count) {
      return `the sequences gone from the copied batch at ${firstSeq} are not ranges within it in order`;
    }
    after = to;
  }
  return null;
}

/** Why a copied batch at `firstSeq` with `time` cannot follow a log whose newest sequence and time are `lastSeq` and `lastTime`, or null. */
export function copyMisfit(firstSeq: number, time: number, lastSeq: number, lastTime: number): string | null {
  if (!Number.isSafeInteger(firstSeq) || firstSeq <= lastSeq) return `copied sequence ${firstSeq} is not after the log's last sequence ${lastSeq}`;
  if (!Number.isSafeInteger(time) || time < lastTime) return `copied time ${time} is before the log's newest time ${lastTime}`;
  return null;
}

/** The decoder of a log that was given none: a foreign batch cannot be read as messages. */
export const noForeignRecords: ForeignRecords = {
  decode: (format) => Promise.reject(new Error(`stored batch in foreign format ${format}, and no decoder for it`)),
};

export interface StoredMessage {
  seq: number;
  /** Milliseconds since the epoch, assigned by the log, never decreasing. */
  time: number;
  subject: string;
  headers: Buffer | null;
  key: Buffer | null;
  data: Buffer;
}

export interface LogState {
  /** First sequence still stored; lastSeq + 1 when empty. */
  firstSeq: number;
  lastSeq: number;
  messages: number;
  /** Stored size of the live messages (record headers included). */
  bytes: number;
  /** Distinct subjects with at least one stored message. */
  subjects: number;
  /** Sequences between firstSeq and lastSeq that are gone (deleted, purged, evicted). */
  deleted: number;
  /** Places found unreadable, kept out of reads and reported. */
  corrupt: CorruptRange[];
  /**
   * Sequences lost to damage found in storage: never readable again, never
   * reused (JetStream's `lost`).
   */
  lost: LostRange[];
  /**
   * Why the log stopped taking appends (a failed write or sync), or null.
   * Sticky: only reopening the log, from what is known to be on disk, clears it.
   */
  error: string | null;
}

/** Sequences from..to (inclusive) that damage destroyed, and the bytes they took on disk. */
export interface LostRange {
  from: number;
  to: number;
  bytes: number;
}

export interface CorruptRange {
  segment: string;
  position: number;
  reason: string;
}

export type SyncPolicy = "always" | "interval" | "never";

/** Retention limits; 0 or absent means unlimited. */
export interface Limits {
  maxMsgs?: number;
  maxBytes?: number;
  maxAgeMs?: number;
  maxMsgsPerSubject?: number;
  /** When maxMsgs or maxBytes is reached: drop the oldest (default) or refuse the new message. */
  discard?: "old" | "new";
  /** With discard "new": also refuse a message whose subject is at maxMsgsPerSubject. */
  discardNewPerSubject?: boolean;
}

/**
 * The furthest sequence a purge may move a log on to (a purge past its end,
 * a stream's first_seq): 2^52 leaves as many sequences again before a
 * double stops holding every integer. nats-server takes any uint64.
 */
export const MAX_START_SEQ = 2 ** 52;

/**
 * An append of `n` records after `last` (the log's last sequence, counting
 * what is queued) that would pass Number.MAX_SAFE_INTEGER (2^53-1), past
 * which two sequences are one double: refused, never stored at a sequence
 * another message holds. Only a log an earlier version moved on past
 * MAX_START_SEQ comes near it. (Compared without adding: past 2^53 a sum
 * rounds.)
 */
export function sequenceRefusal(last: number, n: number): Error | null {
  return last > Number.MAX_SAFE_INTEGER - n ? new Error(`the log is at sequence ${last}: a sequence past 2^53-1 would not be exact`) : null;
}

/**
 * A purge that would move a log, whose last sequence is `lastSeq`, on past
 * MAX_START_SEQ, refused before anything changes. One within what the log
 * has reached is not: a log started near MAX_START_SEQ goes on past it, and
 * its front is purged there (a follower purges to its leader's log start).
 */
export function purgeRefusal(opts: PurgeOptions, lastSeq: number): Error | null {
  const upTo = opts.upTo ?? 0;
  return (upTo > MAX_START_SEQ && upTo > lastSeq + 1) || !Number.isSafeInteger(upTo) ? new Error(`a purge up to sequence ${upTo} would move the log past ${MAX_START_SEQ}, the furthest it can start`) : null;
}

export interface PurgeOptions {
  /** Only messages whose subject matches (NATS wildcards). */
  filter?: string;
  /** Only messages with a sequence below this one (at most MAX_START_SEQ). */
  upTo?: number;
  /** Keep the newest N (of those matching the filter). */
  keep?: number;
}

export interface ScanOptions {
  filter?: string;
  /** At most this many messages (default 256). */
  maxMessages?: number;
  /** Stop once this many bytes of records were returned (at least one message is). */
  maxBytes?: number;
  /**
   * A read that fails (an I/O error, which may pass) ends the scan there
   * instead of skipping the batch: what came before it is returned, or, if
   * nothing did, the error is thrown. For a replica's copy, which must not
   * have a hole where its leader has records.
   */
  stopAtReadError?: boolean;
  /**
   * scanStored only: a foreign batch with any record still stored comes as
   * it is stored, never cut, whatever of it is gone (the reader asks `has`
   * which): for a copy, which names what is gone, so that it holds the
   * same bytes as its source.
   */
  asStored?: boolean;
}

/** `seq` of the appended message once it is as durable as the sync policy makes it. */
export type AppendCallback = (err: Error | null, seq: number) => void;

export interface MessageLog {
  /**
   * The time of the newest record appended, kept when that record is
   * removed (0: none known): a stream reports it as its last time after a
   * purge, as nats-server does.
   */
  newestTime?(): number;
  append(input: AppendInput, done: AppendCallback): void;
  /**
   * Appends records at consecutive sequences with one callback: the first
   * sequence once all are durable, or an error. Limits are checked for the
   * run as a whole before any of it is queued.
   */
  appendMany(run: RecordRun, done: AppendCallback): void;
  /**
   * Appends a foreign batch whole, as one stored batch at consecutive
   * sequences (limits and sizes as for appendMany, each record counting an
   * equal share of the batch's bytes). The log may write straight from
   * `batch.bytes` until it calls `batch.bytesDone` (or `done`): until then
   * the caller keeps them unchanged (a Kafka produce holds its request frame).
   */
  appendBatch(batch: ForeignBatch, done: AppendCallback): void;
  /**
   * Appends what another log stored (a move copies a stream partition this
   * way): `what` at sequences `firstSeq`.. with the source's `time`, as one
   * stored batch (a foreign batch kept whole, so a reader of its format gets
   * the same bytes). The sequences between the log's last one and
   * `firstSeq` are skipped: gone, never handed out. Refused when `firstSeq`
   * is not beyond every sequence queued or stored, or `time` is before the
   * log's newest time (times never go backwards), or a foreign batch whose
   * `gone` does not lie within it in order; limits of discard "new"
   * do not refuse a copy (the source's limits shaped it). `done` gets
   * `firstSeq` once the batch is durable. With no records (`what.count`
   * 0) nothing is stored and `time` is not used: the log only moves on, so
   * that its next sequence is `firstSeq` (the source's last ones are gone).
   */
  appendCopy(firstSeq: number, time: number, what: RecordRun | ForeignBatch, done: AppendCallback): void;
  /**
   * What scan returns, except that a foreign batch whose records from
   * `from` on are all still stored comes back whole, as appended (it may
   * begin before `from`, and its records before `from` may be gone: the
   * reader skips what it did not ask for, as Kafka's clients do).
   */
  scanStored(from: number, opts?: ScanOptions): Promise<StoredItem[]>;
  get(seq: number): Promise<StoredMessage | null>;
  /** The first message with seq > `after` whose subject matches `filter` (NATS wildcards), if any. */
  next(after: number, filter?: string): Promise<StoredMessage | null>;
  /**
   * Messages from `from` on, in order, matching the filter: what a consumer
   * reads. Reads a bounded window, never a whole segment; call again from the
   * last seq + 1 to continue.
   */
  scan(from: number, opts?: ScanOptions): Promise<StoredMessage[]>;
  /** The first message stored at or after `time` (ms). */
  firstAtOrAfter(time: number): Promise<StoredMessage | null>;
  /**
   * Where to look for the first record, at or after sequence `from`, that
   * carries a time at or after `time` (ms): its own time for the records of
   * a foreign batch (ForeignRecords.newestRecordTime), else the time it was
   * stored. Answers the larger of `from` and the first sequence of the first
   * batch reaching past `from` whose newest record time is at or after
   * `time`, from the index alone; no record before it qualifies, and the
   * caller reads on from there (the record that qualified may have been
   * deleted, and a foreign batch's records are read through their format).
   * The next sequence when no batch qualifies.
   */
  firstStampedAtOrAfter(time: number, from: number): number;
  /**
   * The batch whose newest record time (as firstStampedAtOrAfter counts it)
   * is the highest of every batch with a record still stored, the first in
   * sequence order among equals, passing over those whose first stored
   * sequence is in `skip`: that sequence and that time, or null if there is
   * none. From the index alone, so the time is that of the batch as
   * appended: a record that carried it may have been deleted since, and the
   * caller reads the batch to see (Kafka's ListOffsets for the max
   * timestamp).
   */
  newestStamped(skip?: ReadonlySet<number>): { seq: number; time: number } | null;
  lastBySubject(subject: string): Promise<StoredMessage | null>;
  /** Number of stored messages per subject. */
  subjectCount(subject: string): number;
  /** The newest stored sequence of `subject`, or 0; from memory. */
  lastSeqOf(subject: string): number;
  /** The newest stored sequence of every subject matching `filter`, ascending; from memory. */
  lastPerSubject(filter?: string): number[];
  /** Stored message count per subject matching `filter`; from memory. */
  subjectCounts(filter?: string): Map<string, number>;
  /** Whether `seq` is stored (not yet appended, deleted, purged, evicted or lost: false); from the index. */
  has(seq: number): boolean;
  /** Messages removed so far (any cause); a change means counts derived from the log are stale. */
  readonly removals: number;
  /**
   * Told of the sequences the log's limits removed, as flat inclusive
   * [from, to] pairs, when they are removed from its index: what a
   * replicated partition's leader ships to its followers (the oldest ones
   * also show as the log's new first sequence). Not told of age expiry,
   * which removes only the oldest.
   */
  onEvicted: ((ranges: readonly number[]) => void) | null;
  /** Stored size of the live messages (state().bytes), read without building a state: what account limits add up per publish. */
  readonly storedBytes: number;
  /** Appends accepted and not yet durable: what the log holds in memory for writes. */
  readonly backlogMessages: number;
  readonly backlogBytes: number;
  /** Stored messages after `after` matching `filter`, from memory. */
  pendingAfter(after: number, filter?: string): number;
  /**
   * The sequences between the first and the last that are gone (deleted,
   * purged, evicted, lost), ascending, at most `max` of them: stream info's
   * `deleted_details`. Reads segment details from index files as needed.
   */
  deletedSequences(max: number): number[];
  /** Deletes one message; true once the delete is durable, false if it was not stored. */
  delete(seq: number): Promise<boolean>;
  /** Removes messages; the number removed, once that is durable. */
  purge(opts?: PurgeOptions): Promise<number>;
  /**
   * Removes every sequence from `seq` on, durably (a follower cuts what it
   * has beyond the log it shares with its leader, KIP-101): afterwards the
   * log is the one that only ever had what it keeps, and the next append of
   * any kind gets the returned sequence. That is `seq`, also when `seq` is
   * below the first stored sequence (the log is then empty and moves back to
   * `seq`, as appendCopy and purge({upTo}) move an empty log on), except when
   * `seq` falls inside a foreign batch with a live record below `seq`: a
   * foreign batch cannot be split, so all of it goes and the result is its
   * first sequence (the caller fetches from there). `seq` at or beyond the
   * next sequence changes nothing. Writes already under way land first;
   * appends still queued are written after the truncation, at the new
   * sequences. A log with a storage error refuses it (sticky, as every change).
   */
  truncateFrom(seq: number): Promise<number>;
  /**
   * Records sequences `from`..`to` as lost (state().lost, and lost.json for a
   * file log), resolved once recorded: a caller that knows more than the log
   * found (a tail cut at open below a sequence a client was told) says so.
   */
  noteLost(from: number, to: number): Promise<void>;
  /** Applies new retention limits (stream update); excess is removed at once. */
  setLimits(limits: Limits): void;
  state(): LogState;
  /**
   * Storage failures since the log was opened (each a write or sync that made
   * it refuse changes until reopened): a reopen clears `state().error`, not
   * this count. Absent: the log never fails so (memory).
   */
  readonly failures?: number;
  close(): Promise<void>;
}

/**
 * A write or sync of the log failed. The log refuses every later change with
 * this error until it has been reopened from what is known to be on disk
 * (retrying an fsync after a failure can report success for data the kernel
 * already dropped: PostgreSQL's "fsyncgate").
 */
export class StorageError extends Error {
  constructor(
    readonly dir: string,
    override readonly cause: Error,
  ) {
    super(`storage failed (${cause.message}): ${dir} takes no writes until it is reopened`);
  }
}

/** The error an append is refused with before it is queued, or null. `unusable`: the log's own reason to refuse everything (closed, failed). */
export function refusal(unusable: Error | null, size: number, maxRecordBytes: number): Error | null {
  if (unusable !== null) return unusable;
  if (size > maxRecordBytes) return new Error(`record of ${size} bytes exceeds the limit of ${maxRecordBytes}`);
  return null;
}

/** Errors for appends refused under discard "new", with the texts JetStream uses. */
export class LimitError extends Error {}

/**
 * The refusal under discard "new" for one more message of `size` bytes, given
 * what is stored plus what is already queued, or null.
 */
export function limitRefusal(limits: Limits, messages: number, bytes: number, size: number, subjectCount: number): Error | null {
  if (limits.discard !== "new") return null;
  if ((limits.maxMsgs ?? 0) > 0 && messages + 1 > limits.maxMsgs!) return new LimitError("maximum messages exceeded");
  if ((limits.maxBytes ?? 0) > 0 && bytes + size > limits.maxBytes!) return new LimitError("maximum bytes exceeded");
  if (limits.discardNewPerSubject && (limits.maxMsgsPerSubject ?? 0) > 0 && subjectCount + 1 > limits.maxMsgsPerSubject!) {
    return new LimitError("maximum messages per subject exceeded");
  }
  return null;
}

/**
 * The refusal of a run of appends as a whole, given what is stored plus
 * queued (`messages`, `bytes`) and each input's record size; null if all fit.
 */
export function runRefusal(
  unusable: Error | null,
  maxRecordBytes: number,
  limits: Limits,
  messages: number,
  bytes: number,
  run: Pick<RecordRun, "count" | "subject" | "subjects">,
  sizes: ArrayLike<number>,
  countOf: (subject: string) => number,
): Error | null {
  const perSubject = limits.discard === "new" && limits.discardNewPerSubject === true ? new Map<string, number>() : null;
  let added = 0;
  for (let i = 0; i < run.count; i++) {
    let subjectCount = 0;
    if (perSubject !== null) {
      const s = subjectAt(run, i);
      const earlier = perSubject.get(s) ?? 0;
      subjectCount = countOf(s) + earlier;
      perSubject.set(s, earlier + 1);
    }
    const refused = refusal(unusable, sizes[i], maxRecordBytes) ?? limitRefusal(limits, messages + i, bytes + added, sizes[i], subjectCount);
    if (refused !== null) return refused;
    added += sizes[i];
  }
  return null;
}

/** Settles one appendMany call from the parts of it that complete: the first error, else the first sequence. */
export class AppendRun {
  private left: number;
  private first = 0;
  private error: Error | null = null;

  constructor(
    count: number,
    private readonly done: AppendCallback,
  ) {
    this.left = count;
  }

  settle(err: Error | null, firstSeq: number, count: number): void {
    if (err !== null) this.error ??= err;
    else if (this.first === 0) this.first = firstSeq;
    this.left -= count;
    if (this.left === 0) this.done(this.error, this.error === null ? this.first : 0);
  }
}

/** Promise form of append, for callers that are not on a hot path. */
export function appendAsync(log: MessageLog, input: AppendInput): Promise<number> {
  return new Promise((resolve, reject) => log.append(input, (err, seq) => (err ? reject(err) : resolve(seq))));
}
