/**
 * Kafka's log compaction (cleanup.policy=compact): in a compacted topic a
 * record goes once a later record of its partition has its key, and a
 * tombstone (a null value) goes too, delete.retention.ms after compaction
 * first passed it, so that a consumer that read the key's older value has
 * that long to see the delete (KIP-534). Offsets stay: the records left
 * keep theirs, and readers step over the gaps, as they do in Kafka.
 *
 * Records go as MSG.DELETE removes one (Stream.retire: a replicated
 * partition's followers are told), and the store's own compaction gives
 * the space back once a segment is mostly dead. Every round (each
 * log.cleaner.backoff.ms) looks at each compacted partition this node
 * leads, one at a time, and compacts one when enough of it came since its
 * last pass (min.cleanable.dirty.ratio, by records where Kafka counts
 * bytes), when its oldest uncompacted record is older than
 * max.compaction.lag.ms, or when a tombstone it keeps comes due.
 *
 * A pass, as Kafka's cleaner: the newest sequence of each key is mapped
 * over the dirty part (from where the last pass stopped, at most MAX_KEYS
 * keys: past them the pass stops there and the next goes on), then every
 * record from the log's start to the end of that map is looked at. Nothing
 * past the high watermark, the last stable offset (an open transaction's
 * records, and what came after them) or min.compaction.lag.ms is touched.
 *
 * Records go one by one, out of the batches producers framed: a reader
 * gets what is left of a batch as a batch of those records with the
 * batch's own header (offsets, timestamps, producer id, epoch, base
 * sequence, transaction), and the store's compaction keeps the batch so
 * once it rewrites the segment (ForeignRecords.cut: cutStoredBatch), as
 * Kafka's cleaner rewrites a batch. What stays, where Kafka's cleaner
 * would remove:
 * - each idempotent producer's newest batch among the log's last
 *   PRODUCER_SCAN messages, whole, where its recovery looks: a copy to a
 *   replica that catches up takes a cut batch as records, without the
 *   header the producer's state is read from (Kafka's cleaner keeps each
 *   producer's last batch, emptied);
 * - records of aborted transactions (hidden from every reader, and never
 *   their key's newest), and their abort markers;
 * - a transaction's marker while any record of the transaction is left
 *   (the transaction index reads the log back after a start: a record
 *   without its marker would be an open transaction, holding every
 *   read_committed reader at it). Once a pass finds none left, the marker
 *   goes delete.retention.ms after compaction first passed it, as a
 *   tombstone does (Kafka's cleaner removes markers so too), unless it is
 *   its producer's newest (whose epoch fences the producer's zombies once
 *   the transaction index reads the log again) or among the log's last
 *   PRODUCER_SCAN messages (producer recovery and DescribeProducers read
 *   markers there). Under exactly-once (Kafka
 *   Streams' changelogs), a marker every commit would otherwise pile up
 *   for ever;
 * - a record without a key (a NATS publish, or one from before the topic
 *   was compacted);
 * - the partition's last record, as Kafka never compacts the active
 *   segment;
 * - the partition's first record: Kafka's compaction never moves a log's
 *   start offset, and here the first stored record is the start (a
 *   consumer at an offset below it would be told OFFSET_OUT_OF_RANGE and
 *   reset). When a later record has its key, that key's tombstone stays
 *   with it, so no reader from the start sees the old value without the
 *   delete after it.
 * A tombstone stays while an older record of its key does (kept by a rule
 * above), and its retention runs from when the last of those
 * went: a reader from the start never ends with a value its key's delete
 * followed, and one that read the value has delete.retention.ms to see the
 * delete. Kafka's guarantees allow each rule: a reader from the start sees
 * at least each key's final value, in order.
 *
 * What a pass knows lives in memory: after a start, or where this node
 * comes to lead a partition, the first pass maps the whole log again, and
 * a tombstone counts as first passed by it (kept longer, never less long).
 */

import { createHash } from "node:crypto";
import { FOREIGN_KAFKA, isForeign, type MessageLog, type StoredMessage } from "../../store/log.js";
import { itemEnd } from "../../streams/copy-batch.js";
import type { Stream } from "../../streams/stream.js";
import type { AccountDoor } from "./account-door.js";
import { compactionPolicy, type CompactionPolicy } from "./configs.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, isNullValue, readTxnMark, type TxnMark } from "./messages.js";
import { kafkaRecords, PRODUCER_SCAN, scanProducers, transactionalProducer } from "./stored-batches.js";

/** Keys one pass maps at most (Kafka's dedupe buffer bounds the same): some 100 bytes each. */
const MAX_KEYS = 500_000;
/**
 * Keys every partition's `superseded` holds at most together (some 100 bytes
 * each, kept between passes): past it a pass keeps no more, as past its own
 * bound (keptOverflow: tombstones wait for a pass that maps the whole log).
 */
const MAX_KEPT_KEYS = 1_000_000;
/** What one read of the log takes at most. */
const READ_MESSAGES = 1024;
const READ_BYTES = 1024 * 1024;
/** Pass entries per partition (PartitionCleaning.passes): past it the oldest goes, its records counting as the next's. */
const MAX_PASSES = 64;
/** The entries one delete.retention.ms spans at most. */
const PASS_SPANS = 32;
/** Buckets of PartitionCleaning.released: 64 KiB a partition. */
const RELEASE_BUCKETS = 8192;
/**
 * Partitions that hold a table of RELEASE_BUCKETS at once (64 MiB): past
 * it a partition's table has one bucket, every key released at the latest
 * release's time (its tombstones kept longer, never shorter).
 */
const MAX_RELEASE_TABLES = 1024;
/** After a failed pass, a partition is looked at again this many rounds later at the soonest (and mapped whole). */
const FAILED_ROUNDS = 8;
/** Keys this long or shorter are mapped as they are; longer ones by their MD5 (Kafka's cleaner maps every key by it). */
const RAW_KEY_BYTES = 16;

/** What the cleaner knows of one partition it compacts. */
interface PartitionCleaning {
  /** The partition's leader epoch when this was begun (0 on a single node). */
  epoch: number;
  /** The first sequence no pass has mapped yet. */
  dirtyFrom: number;
  /**
   * The passes that moved `dirtyFrom` on, oldest first: where to, when the
   * last of them ended, and when the first did. Passes within
   * delete.retention.ms / PASS_SPANS of an entry's first share it (its
   * records then count as first passed when its last ended: kept that much
   * longer), so that the entries reach back at least twice the retention.
   */
  passes: Array<[upTo: number, at: number, since: number]>;
  /** When the last pass first passed the earliest of the tombstones it kept (Infinity: none kept): their retention runs from then. */
  tombstonesSince: number;
  /**
   * Keys of superseded records a pass kept (the first record, a producer's
   * newest batch), with their newest sequence: the next pass maps them
   * again (only the dirty part is mapped), so that they go once no rule
   * keeps them.
   */
  superseded: Map<string, number>;
  /**
   * When a pass removed older records of a key that an earlier pass had
   * kept (see `superseded`), as the latest such time per bucket of keys
   * (RELEASE_BUCKETS, or one past MAX_RELEASE_TABLES, by a hash of the key;
   * null until the first): a bounded table whose collisions only keep
   * tombstones longer.
   */
  released: Float64Array | null;
  /** A pass kept more such keys than `superseded` holds: no tombstone goes until a pass that maps the whole log (fullMapAt). */
  keptOverflow: boolean;
  /** When a pass last mapped the whole log. */
  fullMapAt: number;
  /** After a failed pass, when the partition may be looked at again (0: at once). */
  retryAt: number;
}

export interface CleanerCounts {
  passes: number;
  retired: number;
  /** Keys the partitions' `superseded` hold together, as counted at the last round's start and passes since. */
  keptKeys: number;
  /** Partitions holding a released table of RELEASE_BUCKETS, as counted at the last round's start and passes since. */
  releaseTables: number;
}

export class LogCleaner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly partitions = new WeakMap<Stream, Array<PartitionCleaning | undefined>>();
  /** The time passes are told by (a test's clock may stand in): when tombstones were first passed, when they come due. */
  clock: () => number = Date.now;
  /** What the cleaner did since start: passes made and records retired (tests and the log read them). */
  readonly counts: CleanerCounts = { passes: 0, retired: 0, keptKeys: 0, releaseTables: 0 };
  /** MAX_KEPT_KEYS (a test may lower it). */
  keptKeysBudget = MAX_KEPT_KEYS;
  /** MAX_RELEASE_TABLES (a test may lower it). */
  releaseTablesBudget = MAX_RELEASE_TABLES;

  constructor(
    private readonly doors: () => Iterable<AccountDoor>,
    private readonly backoffMs: number,
    private readonly warn: (line: string) => void,
    private readonly debug: (line: string) => void,
  ) {}

  start(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setInterval(() => void this.round(), this.backoffMs);
    this.timer.unref();
  }

  /** Stops the rounds; resolves once a pass under way has stopped. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One look at every compacted partition led here (a round under way is joined, not doubled). */
  round(): Promise<void> {
    if (this.running !== null) return this.running;
    this.running = this.roundNow().finally(() => (this.running = null));
    return this.running;
  }

  private async roundNow(): Promise<void> {
    // Counted afresh each round: partitions led elsewhere now, or of streams gone, hold nothing any more.
    let kept = 0;
    let tables = 0;
    for (const door of this.doors()) {
      for (const stream of door.js.streams.values()) {
        for (const s of this.partitions.get(stream) ?? []) {
          kept += s?.superseded.size ?? 0;
          if ((s?.released?.length ?? 0) > 1) tables++;
        }
      }
    }
    this.counts.keptKeys = kept;
    this.counts.releaseTables = tables;
    for (const door of [...this.doors()]) {
      for (const stream of [...door.js.streams.values()]) {
        const policy = compactionPolicy(stream.config.metadata);
        if (policy === null) {
          this.partitions.delete(stream);
          continue;
        }
        for (let p = 0; p < stream.partitions.length; p++) {
          if (this.closed) return;
          if (!stream.mayRetire(p)) {
            // Led elsewhere now: whatever it knew may not hold when it leads again.
            const states = this.partitions.get(stream);
            if (states !== undefined) states[p] = undefined;
            continue;
          }
          if ((this.partitions.get(stream)?.[p]?.retryAt ?? 0) > this.clock()) continue;
          try {
            await this.clean(door, stream, p, policy);
          } catch (err) {
            // A leadership lost, a move begun, a storage error: what the pass removed before it stopped is not recorded, so
            // the next one maps the whole log again and takes every tombstone as first passed then (kept longer), a while
            // later (a pass that keeps failing would otherwise read the whole log every round).
            this.warn(`kafka: compacting ${stream.config.name}/${p}: ${(err as Error).message}`);
            this.fresh(door, stream, p).retryAt = this.clock() + FAILED_ROUNDS * this.backoffMs;
          }
        }
      }
    }
  }

  private stateOf(door: AccountDoor, stream: Stream, p: number, log: MessageLog): PartitionCleaning {
    const st = log.state();
    let s = this.partitions.get(stream)?.[p];
    // A log cut back below what was mapped (a replica truncated to its leader's), or led again after another leader (which
    // may have removed what this one kept), is mapped again, as after a start.
    if (s === undefined || s.dirtyFrom > st.lastSeq + 1 || s.epoch !== leaderEpoch(door, stream, p)) s = this.fresh(door, stream, p);
    if (s.dirtyFrom < st.firstSeq) s.dirtyFrom = st.firstSeq;
    return s;
  }

  /** A partition's first released table: RELEASE_BUCKETS while fewer than the budget's partitions hold one, else one bucket. */
  private releaseTable(): Float64Array {
    const full = this.counts.releaseTables < this.releaseTablesBudget;
    if (full) this.counts.releaseTables++;
    return new Float64Array(full ? RELEASE_BUCKETS : 1).fill(-Infinity);
  }

  /** What the cleaner knows of partition `p`, begun again: its next pass maps the whole log, as after a start. */
  private fresh(door: AccountDoor, stream: Stream, p: number): PartitionCleaning {
    let states = this.partitions.get(stream);
    if (states === undefined) this.partitions.set(stream, (states = []));
    const s: PartitionCleaning = {
      epoch: leaderEpoch(door, stream, p),
      dirtyFrom: stream.partitions[p].state().firstSeq,
      passes: [],
      tombstonesSince: Infinity,
      superseded: new Map(),
      released: null,
      keptOverflow: false,
      fullMapAt: -Infinity,
      retryAt: 0,
    };
    states[p] = s;
    return s;
  }

  /** Compacts partition `p` of `stream` if it is due; the records retired. */
  async clean(door: AccountDoor, stream: Stream, p: number, policy: CompactionPolicy, now = this.clock()): Promise<number> {
    const log = stream.partitions[p];
    // A log that failed stays failed until reopened (storage errors are sticky): no pass would get anywhere.
    if (log.state().error !== null) return 0;
    const state = this.stateOf(door, stream, p, log);
    // The last sequence a pass may touch: replicated, stable, and old enough.
    const hwm = stream.replicatedSeq(p);
    let end = Math.min(hwm, door.txnIndexes.lastStableOffset(stream, p, hwm));
    if (policy.minLagMs > 0) {
      const young = await log.firstAtOrAfter(now - policy.minLagMs);
      if (young !== null) end = Math.min(end, young.seq - 1);
    }
    // Below what was mapped (min.compaction.lag.ms raised, a transaction index reading the log again): a pass would judge
    // only part of what the last one did, and forget the keys it kept. Later, then.
    if (end < state.dirtyFrom - 1) return 0;
    // A pass kept more keys than it could carry: now and then the whole log is mapped again, which finds them all.
    if (state.keptOverflow && this.clock() - state.fullMapAt >= Math.max(policy.deleteRetentionMs / PASS_SPANS, FAILED_ROUNDS * this.backoffMs)) {
      state.dirtyFrom = log.state().firstSeq;
    }
    const first = log.state().firstSeq;
    const dirty = state.dirtyFrom <= end ? log.pendingAfter(state.dirtyFrom - 1) - log.pendingAfter(end) : 0;
    const total = first <= end ? log.pendingAfter(first - 1) - log.pendingAfter(end) : 0;
    let due = state.tombstonesSince + policy.deleteRetentionMs <= now || (dirty > 0 && dirty >= total * policy.minDirtyRatio);
    if (!due && dirty > 0 && policy.maxLagMs !== Infinity) {
      const oldest = await log.next(state.dirtyFrom - 1);
      due = oldest !== null && oldest.seq <= end && oldest.time <= now - policy.maxLagMs;
    }
    if (!due) return 0;
    return this.pass(door, stream, p, policy, state, end, now);
  }

  private async pass(door: AccountDoor, stream: Stream, p: number, policy: CompactionPolicy, state: PartitionCleaning, end: number, now: number): Promise<number> {
    const log = stream.partitions[p];
    // 1. The newest sequence of each key in the dirty part, as far as the map holds, and of those the last pass kept.
    const newest = new Map<string, number>(state.superseded);
    // Mapped from the log's first record, this pass finds every superseded record left (see keptOverflow).
    const mapsAll = state.dirtyFrom <= log.state().firstSeq;
    let mapped = state.dirtyFrom - 1;
    const whole = await this.walk(door, stream, p, state.dirtyFrom, end, (m, hidden) => {
      if (m.key !== null && !hidden && !isMarker(m)) {
        const id = keyId(m.key);
        if (newest.size >= MAX_KEYS && !newest.has(id)) return false;
        newest.set(id, m.seq);
      }
      mapped = m.seq;
      return true;
    });
    if (this.closed) return 0;
    if (whole) mapped = Math.max(mapped, end);
    // 2. Every record up to there, a stored batch at a time; what goes is told at the top of this file.
    const bound = Math.min(mapped, end);
    const recoverable = await newestBatches(log);
    const lastStored = newestStored(log);
    let retired = 0;
    let tombstonesSince = Infinity;
    let tombstonesKeptNew = false;
    const front = log.state().firstSeq;
    let frontKey: string | null = null;
    /** The key and newest sequence of the last record retirable() found superseded (0: not superseded). */
    let supersededId = "";
    let supersededBy = 0;
    /** Keys of superseded records that stay (a rule above keeps them), with their newest sequence. */
    const kept = new Map<string, number>();
    // Past its bound, `kept` no longer tells every key with an older record left: no tombstone goes until a pass that maps
    // the whole log finds them all again.
    let keptOverflow = false;
    const keptKnown = mapsAll || !state.keptOverflow;
    /** Keys whose older records kept by the last pass go in this one: their tombstones' retention begins when it ends. */
    const releasedNow = new Set<string>();
    /** Past its bound no tombstone goes in this pass (the next ones find the time in `released`). */
    let releasedFull = false;
    const noteReleased = (id: string): void => {
      if (!state.superseded.has(id)) return;
      if (releasedNow.size < MAX_KEYS / 2) releasedNow.add(id);
      else releasedFull = true;
      const released = (state.released ??= this.releaseTable());
      released[bucketOf(id, released.length)] = Infinity; // until the pass ends (then its end time)
    };
    const keepsAtMost = Math.min(MAX_KEYS / 2, Math.max(0, this.keptKeysBudget - (this.counts.keptKeys - state.superseded.size)));
    const noteKept = (id: string, newer: number): void => {
      if (kept.size < keepsAtMost || kept.has(id)) kept.set(id, newer);
      else keptOverflow = true;
    };
    /** Whether a record that goes delete.retention.ms after `since` (a tombstone, a marker; undefined: first passed now) may go now. */
    const expired = (since: number | undefined): boolean => {
      if (since === undefined || since === Infinity) tombstonesKeptNew = true;
      else if (since + policy.deleteRetentionMs <= now) return true;
      else tombstonesSince = Math.min(tombstonesSince, since);
      return false;
    };
    /**
     * Producers whose transaction (since their last marker) has records still stored, as far as this pass has read: true
     * when one of them stays, false when all go in this pass.
     */
    const txnRecordsLeft = new Map<number, boolean>();
    const noteTxnRecord = (producer: number, stays: boolean): void => {
      if (stays || !txnRecordsLeft.has(producer)) txnRecordsLeft.set(producer, stays);
    };
    /** Per producer, its newest marker seen so far that may go, once a later one of its producer shows it is not the newest. */
    const newestMarkers = new Map<number, number>();
    /** Markers from here on stay: where producer recovery and DescribeProducers look. */
    const markersFrom = log.state().lastSeq - PRODUCER_SCAN + 1;
    /** Whether marker `m` of `producer` may go: none of its transaction's records left, and its retention run out. */
    const markerGoes = (m: StoredMessage, producer: number): boolean => {
      const recordsLeft = txnRecordsLeft.get(producer);
      txnRecordsLeft.delete(producer);
      if (recordsLeft !== undefined || m.seq > bound || m.seq === front || m.seq >= lastStored || m.seq >= markersFrom) {
        // Its last records go now: a later pass (due as for a tombstone kept) finds none, and the marker may go then.
        if (recordsLeft === false) tombstonesKeptNew = true;
        return false;
      }
      return expired(firstPassed(state.passes, m.seq));
    };
    /** Whether record `m` may go: superseded, or a tombstone whose retention ran out since a pass first passed it. */
    const retirable = (m: StoredMessage, hidden: boolean): boolean => {
      supersededBy = 0;
      // An aborted record stays hidden (see the top of this file); a record without a key has nothing to be superseded by.
      if (m.seq > bound || isMarker(m) || hidden || m.key === null) return false;
      const id = keyId(m.key);
      const newer = newest.get(id);
      if (newer !== undefined && newer > m.seq) {
        if (log.has(newer)) {
          supersededId = id;
          supersededBy = newer;
        } else noteKept(id, newer); // removed since (a JetStream delete): it supersedes nothing, and its key's tombstone stays
      }
      // The first record stays (the log's start), the last (as Kafka's active segment), and the first of a producer's
      // newest batch (the rest of it too, when it is a batch kept whole: see the pass).
      if (m.seq === front) frontKey = id;
      if (m.seq === front || m.seq >= lastStored || recoverable.has(m.seq)) return false;
      if (supersededBy > 0) return true;
      // A tombstone stays while an older record of its key does: without it, that record would be its key's last word.
      if (!isNullValue(m.headers, m.data) || id === frontKey || kept.has(id) || keptOverflow || !keptKnown || releasedFull) return false;
      // Its key's older record kept until this pass: from when that went (a reader may have just read it). Else first passed
      // by an earlier pass: from when that pass ended. Passed for the first time now: from when this one ends.
      const since = releasedNow.has(id) ? undefined : Math.max(firstPassed(state.passes, m.seq) ?? Infinity, state.released === null ? -Infinity : state.released[bucketOf(id, state.released.length)]);
      return expired(since);
    };
    for (let from = front; from <= bound && !this.closed; ) {
      const items = await log.scanStored(from, { maxMessages: READ_MESSAGES, maxBytes: READ_BYTES });
      if (items.length === 0) break;
      const isHidden = hiddenCursor(door.txnIndexes.hiddenIn(stream, p, from - 1, itemEnd(items[items.length - 1]) - 1));
      /** What goes, a group per stored batch (or message): a batch's records in one chunk of deletes. */
      const groups: number[][] = [];
      for (const item of items) {
        if (!isForeign(item)) {
          if (isMarker(item)) {
            // A producer's newest marker stays (its epoch fences its zombies once the log is read again): one that may go
            // waits until a later marker of its producer is seen.
            if (!readTxnMark(item.headers, mark)) continue;
            const producer = mark.producerId;
            const goes = markerGoes(item, producer);
            const older = newestMarkers.get(producer);
            if (older !== undefined) groups.push([older]);
            if (goes) newestMarkers.set(producer, item.seq);
            else newestMarkers.delete(producer);
            continue;
          }
          // Left until now: its transaction's marker goes in a later pass at the soonest.
          const producer = readTxnMark(item.headers, mark) ? mark.producerId : -1;
          const goes = retirable(item, isHidden(item.seq));
          if (producer >= 0) noteTxnRecord(producer, !goes);
          if (goes) {
            groups.push([item.seq]);
            if (supersededBy > 0) noteReleased(supersededId);
          } else if (supersededBy > 0) noteKept(supersededId, supersededBy);
          continue;
        }
        // A batch as the producer framed it: the store cuts what goes out of it, as Kafka's cleaner does (see the top).
        if (item.format !== FOREIGN_KAFKA) continue;
        const going: number[] = [];
        let live = 0;
        // An idempotent producer's newest batch stays whole: a copy to a replica that catches up gets a cut batch as
        // records, without the header its producer's state is read back from after a failover.
        const whole = recoverable.has(item.firstSeq);
        const records = await kafkaRecords.decode(item.format, item.bytes, item.firstSeq, item.time, item.subject);
        for (let k = 0; k < records.length; k++) {
          const m = records[k];
          // A hole where a record was cut out, or one gone since.
          if (m === undefined || !log.has(m.seq)) continue;
          live++;
          if (retirable(m, isHidden(m.seq)) && !whole) {
            going.push(m.seq);
            if (supersededBy > 0) noteReleased(supersededId);
          } else if (supersededBy > 0) noteKept(supersededId, supersededBy);
        }
        const producer = transactionalProducer(item.bytes);
        if (producer >= 0 && live > 0) noteTxnRecord(producer, going.length < live);
        if (going.length > 0) groups.push(going);
      }
      from = itemEnd(items[items.length - 1]);
      // A log start moved meanwhile (retention, DeleteRecords) makes another record the first: it stays too.
      const firstNow = log.state().firstSeq;
      const going = groups.filter((group) => group[0] > firstNow);
      if (going.length > 0) retired += await stream.retire(p, going);
    }
    if (this.closed) return retired;
    const ended = this.clock();
    state.dirtyFrom = Math.max(state.dirtyFrom, mapped + 1);
    const last = state.passes[state.passes.length - 1];
    if (last !== undefined && last[0] < state.dirtyFrom && ended - last[2] < policy.deleteRetentionMs / PASS_SPANS) {
      last[0] = state.dirtyFrom;
      last[1] = ended;
    } else if (last === undefined || last[0] < state.dirtyFrom) state.passes.push([state.dirtyFrom, ended, ended]);
    while (state.passes.length > MAX_PASSES) state.passes.shift();
    state.tombstonesSince = tombstonesKeptNew ? Math.min(tombstonesSince, ended) : tombstonesSince;
    this.counts.keptKeys += kept.size - state.superseded.size;
    state.superseded = kept;
    state.keptOverflow = keptOverflow || !keptKnown;
    if (mapsAll) state.fullMapAt = ended;
    // When older records kept by a rule went: a tombstone of their key is kept delete.retention.ms from then.
    if (state.released !== null) for (let b = 0; b < state.released.length; b++) if (state.released[b] === Infinity) state.released[b] = ended;
    this.counts.passes++;
    this.counts.retired += retired;
    this.debug(`kafka: compacted ${stream.config.name}/${p} up to offset ${mapped - 1}: ${newest.size} keys, ${retired} records removed`);
    return retired;
  }

  /**
   * Reads partition `p` from `from` to `to` (sequences, inclusive), each
   * record with whether readers never see it (a marker, an aborted
   * record), until `visit` says stop (false); true when it read to the end.
   */
  private async walk(door: AccountDoor, stream: Stream, p: number, from: number, to: number, visit: (m: StoredMessage, hidden: boolean) => boolean): Promise<boolean> {
    const log = stream.partitions[p];
    while (from <= to) {
      if (this.closed) return false;
      const window = await log.scan(from, { maxMessages: READ_MESSAGES, maxBytes: READ_BYTES });
      if (window.length === 0) return true;
      const isHidden = hiddenCursor(door.txnIndexes.hiddenIn(stream, p, from - 1, window[window.length - 1].seq));
      for (const m of window) {
        if (m.seq > to) return true;
        if (!visit(m, isHidden(m.seq))) return false;
      }
      from = window[window.length - 1].seq + 1;
    }
    return true;
  }
}

/**
 * The first sequence of each idempotent producer's newest batch among the
 * partition's last PRODUCER_SCAN messages: where a producer's recovery
 * looks for its state after a restart or a failover (produce.ts). Found
 * there with an older batch and without its newest, it would be refused
 * OUT_OF_ORDER_SEQUENCE_NUMBER; Kafka's cleaner keeps each producer's last
 * batch for the same reason.
 */
async function newestBatches(log: MessageLog): Promise<Set<number>> {
  const newest = new Map<number, number>();
  const last = log.state().lastSeq;
  await scanProducers(log, last - PRODUCER_SCAN + 1, last, (found) => {
    if (!found.marker) newest.set(found.producerId, found.offset + 1);
  });
  return new Set(newest.values());
}

/** Partition `p`'s leader epoch in a cluster (0 on a single node). */
function leaderEpoch(door: AccountDoor, stream: Stream, p: number): number {
  return door.door.cluster?.topic(door.account, stream.config.name)?.epochs[p] ?? 0;
}

/** The newest sequence the log stores (its last one, unless that was deleted). */
function newestStored(log: MessageLog): number {
  const last = log.state().lastSeq;
  if (log.has(last)) return last;
  const newest = log.lastPerSubject();
  return newest.length === 0 ? 0 : newest[newest.length - 1];
}

/** Whether each sequence, asked in ascending order, lies in one of `ranges` (ascending, disjoint, inclusive). */
function hiddenCursor(ranges: ReadonlyArray<[number, number]>): (seq: number) => boolean {
  let h = 0;
  return (seq) => {
    while (h < ranges.length && ranges[h][1] < seq) h++;
    return h < ranges.length && ranges[h][0] <= seq;
  };
}

/** Where readTxnMark puts what it reads (never across an await). */
const mark: TxnMark = { producerId: -1, epoch: -1 };

function isMarker(m: StoredMessage): boolean {
  return m.subject === CONTROL_SUBJECT_COMMIT || m.subject === CONTROL_SUBJECT_ABORT;
}

/** When the first pass that mapped past `seq` ended; undefined when none did (a later one when the first was forgotten: kept longer). */
function firstPassed(passes: ReadonlyArray<[number, number, number]>, seq: number): number | undefined {
  for (const [upTo, at] of passes) if (upTo > seq) return at;
  return undefined;
}

/** A key's bucket in a PartitionCleaning.released table of `buckets` (FNV-1a over its id). */
function bucketOf(id: string, buckets: number): number {
  if (buckets === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % buckets;
}

/** A key as the map holds it: its bytes when short, else their MD5, marked so that neither can be taken for the other. */
function keyId(key: Buffer): string {
  if (key.length <= RAW_KEY_BYTES) return key.toString("latin1");
  return createHash("md5").update(key).digest().toString("latin1") + "\u0100";
}
