/**
 * The transaction coordinator (KIP-98). A transactional producer's records
 * are appended to the log at once, marked with its producer id; EndTxn then
 * writes a control marker (commit or abort) to every partition the
 * transaction touched. What readers may see of them (the last stable
 * offset, aborted ranges, what NATS readers never see) each replica reads
 * from its own log (txn-index.ts).
 *
 * What must survive a crash is written before it is relied upon:
 * `transactions.json` holds each transactional id's producer id and epoch,
 * the partitions and group offsets of its open transaction and when it
 * began. A decision to commit or abort is written before the first marker. On a
 * restart, or in a cluster on taking an id over, a prepared commit is
 * finished, a prepared abort finished, and an open transaction goes on as
 * Kafka's coordinator keeps it: its producer may carry on, and its timeout
 * runs from when it began.
 */

import { join } from "node:path";
import type { JetStream } from "../../streams/jetstream.js";
import { ApiError, Errors } from "../../streams/errors.js";
import { readJson, writeJsonDurably } from "../../util/persist.js";
import { withinMs } from "../../util/settle.js";
import { ThrottledLog } from "../../util/throttled-log.js";
import { ErrorCode } from "./errors.js";
import type { CommittedOffset, GroupCoordinator } from "./groups.js";
import { FAILURE_LOG_MS, offsetKey } from "./groups.js";
import { streamNameOf } from "./topics.js";
import { CoordinatorMoved } from "./coordinator-topic.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, txnHeaders } from "./messages.js";
import type { TxnIndexes } from "./txn-index.js";

/** Kafka's transaction.max.timeout.ms default. */
export const MAX_TRANSACTION_TIMEOUT_MS = 15 * 60 * 1000;
/** Transactional ids remembered; beyond this the least recently used idle ones are forgotten. */
const MAX_TRANSACTIONAL_IDS = 10_000;
/** Partitions (and, separately, group offsets) one transaction may touch. */
const MAX_TXN_PARTITIONS = 10_000;
/** Room kept beside a transaction's record in its message (the record's subject). */
const RECORD_ROOM = 1024;
/** Epochs are int16; past this a producer gets a new id, as in Kafka. */
const MAX_EPOCH = 32_767;
/** A marker that could not be stored is tried again after this, doubling up to the maximum. */
const MARKER_RETRY_MIN_MS = 100;
const MARKER_RETRY_MAX_MS = 5_000;
/** Markers of one transaction written at once. */
const MARKERS_IN_FLIGHT = 64;
/** How long an ended transaction waits for the partitions' indexes to read its markers. */
const INDEX_WAIT_MS = 5_000;

type TxnState = "Empty" | "Ongoing" | "PrepareCommit" | "PrepareAbort";

interface TxnPartition {
  topic: string;
  index: number;
  /** The stream behind the topic, wherever its partition is led. */
  stream: string;
}

/** A marker stored: at `offset`, on this node (`here`) or at the partition's leader elsewhere. */
interface Marker {
  part: TxnPartition;
  offset: number;
  here: boolean;
}

interface Txn {
  id: string;
  producerId: number;
  epoch: number;
  timeoutMs: number;
  state: TxnState;
  partitions: Map<string, TxnPartition>;
  /** Group → offsets committed in the transaction, applied on commit. */
  offsets: Map<string, Map<string, CommittedOffset>>;
  timer: NodeJS.Timeout | null;
  lastUsed: number;
  /** How the last transaction of this epoch ended (saved), so that a retried EndTxn is answered as the first was. */
  ended: "commit" | "abort" | null;
  /** Operations on one transaction run one at a time. */
  queue: Promise<unknown>;
  /** Another broker coordinates it now (cluster): what is under way stops, and writes nothing more. */
  dropped: boolean;
  /** Operations queued or running: one with any is not evicted to make room. */
  busy: number;
  /** When its current or last transaction began (ms); -1: none since this node took the id up. */
  startedAt: number;
  /**
   * The producer id and epoch that the last InitProducerId bumped from, when
   * the producer named them (KIP-360): a retry naming them is answered with
   * the current epoch. Null after a fence, as Kafka's lastProducerEpoch, so
   * a fenced producer cannot claim the epoch its fence took. In memory only.
   */
  bumpedFrom: { producerId: number; epoch: number } | null;
  /**
   * The producer id and epoch an InitProducerId named when it fenced its own
   * open transaction and then could not save the new epoch: its retry may
   * bump from the fence's epoch, as it would have. In memory only.
   */
  fencedFrom: { producerId: number; epoch: number } | null;
  /**
   * What a request is saving, not yet in force (Kafka's pending transition):
   * saves write this instead of the state in memory, which changes only
   * once it is written, so nothing acts on a state that may never be.
   */
  pending: SavedTxn | null;
}

/** A transactional id as ListTransactions and DescribeTransactions show it. */
export interface TxnDescription {
  transactionalId: string;
  /** Kafka's name of its state: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit or CompleteAbort. */
  state: string;
  producerId: number;
  epoch: number;
  timeoutMs: number;
  /** When its current or last transaction began (ms); -1: not known. */
  startedAt: number;
  /** The partitions of its open transaction, as topic and index. */
  partitions: Array<[string, number]>;
}

/** A transactional id's state as written: in `transactions.json` on a single node, one record each in a cluster (txn-state-log.ts). */
export interface SavedTxn {
  producerId: number;
  epoch: number;
  timeoutMs: number;
  state: TxnState;
  partitions: Array<[string, number, number]>;
  offsets?: Array<[string, Array<[string, CommittedOffset]>]>;
  ended?: "commit" | "abort";
  /** When the open transaction began (ms), for its timeout after a restart. */
  startedAt?: number;
}

export type TxnRequest = { transactionalId: string; producerId: number; epoch: number };

/** Where a cluster keeps each transactional id's state (txn-state-log.ts); throws CoordinatorMoved when this node may not write it now. */
export interface TxnStateStore {
  write(id: string, saved: SavedTxn): Promise<void>;
}

export class TransactionCoordinator {
  private readonly txns = new Map<string, Txn>();
  /** In a cluster: the replicated `__transaction_state`, which says which ids are coordinated here (adopt, drop); null: `transactions.json`. */
  store: TxnStateStore | null = null;
  /**
   * In a cluster: gives a committed transaction's offsets of a group to the
   * group's coordinator when that is another broker (coordinator-calls.ts);
   * null when the group is coordinated here.
   */
  commitAway: ((groupId: string, entries: Array<[string, CommittedOffset]>, producerId: number) => Promise<string | null> | null) | null = null;
  /**
   * In a cluster: asks the group's coordinator, when that is another broker,
   * to hold a decided commit's offsets until they are stored, or `until`; resolves to
   * null once it did, or why not. Null when the group is coordinated here.
   */
  holdAway: ((groupId: string, producerId: number, until: number) => Promise<string | null> | null) | null = null;
  /** Saves run one after another, each writing the state as it is when it starts. */
  private saves: Promise<void> = Promise.resolve();
  /** The save queued behind the one being written: later saves join it, as it will write what they changed too. */
  private nextSave: Promise<void> | null = null;
  private closed = false;
  /**
   * Per transactional id and kind of write, a failed save being told: its
   * producer retries NOT_COORDINATOR at once, and each retry on a full disk
   * was a line (InitProducerId's "its new epoch not saved" without limit).
   */
  private readonly failuresTold = new ThrottledLog(FAILURE_LOG_MS, MAX_TRANSACTIONAL_IDS * 2);

  constructor(
    private readonly js: JetStream,
    private readonly groups: GroupCoordinator,
    private readonly indexes: TxnIndexes,
    /** A topic's partition count, in the cluster (its partitions may be led anywhere) or here; undefined: no such topic. */
    private readonly partitionsOf: (topic: string) => number | undefined,
    private readonly dir: string,
    private readonly allocateId: () => number,
    private readonly log: (line: string) => void,
    /** For what an operator should see: a write that failed and is tried again. */
    private readonly warn: (line: string) => void = log,
  ) {}

  // ---- startup ----

  /**
   * Single node: reads what was saved, resumes the open transactions and
   * starts finishing those a crash left decided. These finish in the
   * background, each in turn with the requests for it (its producer gets
   * CONCURRENT_TRANSACTIONS meanwhile, read_committed readers wait at its
   * start), as Kafka's coordinator finishes what it loads: a partition that
   * cannot take its marker now delays that transaction, not the broker.
   */
  async load(): Promise<void> {
    const saved = (await readJson(join(this.dir, "transactions.json"))) as Record<string, SavedTxn> | undefined;
    if (saved === undefined) return;
    this.adopt(Object.entries(saved), "the broker restarted");
  }

  /**
   * Whether an open transaction as saved can go on: one saved by a nagare
   * before 2026-12 (no start time) was saved without its TxnOffsetCommit
   * offsets, so a commit would lose them; it is aborted, fenced, as then.
   */
  private resumable(txn: Txn): boolean {
    return txn.state === "Ongoing" && txn.startedAt >= 0;
  }

  /**
   * Finishes a transaction found decided (or open but not resumable) after a
   * restart or a change of coordinator. A decided one is finished at its own
   * epoch, as Kafka's coordinator does on loading it: its producer's
   * retried EndTxn is then answered as the first would have been.
   */
  private finish(txn: Txn, why: string): Promise<void> {
    const open = txn.state === "Ongoing";
    const commit = txn.state === "PrepareCommit";
    this.log(`transaction ${txn.id}: ${commit ? "finishing its commit" : open ? "open, saved without its offsets by an older version: aborting it" : "finishing its abort"}: ${why}`);
    return this.complete(txn, commit, open);
  }

  /**
   * The ids as saved: on a single node after a restart; in a cluster those
   * of a partition of `__transaction_state` this node has come to lead, as
   * its log holds them. An open transaction goes on, a prepared commit or
   * abort is finished; each in turn with the requests for it.
   */
  adopt(saved: Array<[string, SavedTxn]>, why: string): void {
    for (const [id, s] of saved) {
      const old = this.txns.get(id);
      if (old !== undefined) this.forget(old);
      const txn = this.restore(id, s);
      if (txn.state === "Empty") continue;
      if (this.resumable(txn)) {
        this.resume(txn, why);
        continue;
      }
      // (A commit's offsets are held from complete()'s first step: before any request can be served.)
      this.serialise(txn, () => this.finish(txn, why)).catch((err: Error) => this.log(`transaction ${id}: ${err.message}`));
    }
  }

  /** In a cluster: forgets the ids another broker coordinates now; how many. */
  drop(which: (id: string) => boolean): number {
    let n = 0;
    for (const t of [...this.txns.values()]) {
      if (!which(t.id)) continue;
      this.forget(t);
      n++;
    }
    return n;
  }

  private forget(t: Txn): void {
    if (t.timer !== null) clearTimeout(t.timer);
    t.timer = null;
    t.dropped = true;
    if (this.txns.get(t.id) === t) this.txns.delete(t.id);
  }

  /** A transaction as saved, in memory (not yet finished if it was open). */
  private restore(id: string, s: SavedTxn): Txn {
    const txn = this.newTxn(id, s.producerId, s.epoch, s.timeoutMs);
    txn.state = s.state;
    txn.ended = s.ended ?? null;
    for (const [topic, index] of s.partitions) txn.partitions.set(offsetKey(topic, index), { topic, index, stream: streamNameOf(topic) });
    for (const [group, entries] of s.offsets ?? []) txn.offsets.set(group, new Map(entries));
    if (s.startedAt !== undefined) txn.startedAt = s.startedAt;
    this.txns.set(id, txn);
    return txn;
  }

  /**
   * A transaction open when its coordinator restarted or changed goes on:
   * its timeout runs from when it began. A single node's groups hold its
   * offsets again (OffsetFetch's require_stable) until it ends; in a cluster
   * they are held where their group is coordinated, which recorded the hold
   * for its successors (OffsetsStore.writeHold).
   */
  private resume(txn: Txn, why: string): void {
    const deadline = txn.startedAt + txn.timeoutMs;
    this.log(`transaction ${txn.id}: open when ${why}; it goes on, aborted in ${Math.max(0, deadline - Date.now())} ms unless it ends before`);
    this.armTimeout(txn, Math.max(0, deadline - Date.now()));
    this.holdOffsets(txn, deadline);
  }

  /**
   * A single node's groups hold the transaction's offsets (OffsetFetch's
   * require_stable) until it ends, or `until`. (In a cluster the groups'
   * coordinators hold them from TxnOffsetCommit, until its timeout, and
   * once it decides to commit until they are stored: holdDecided.)
   */
  private holdOffsets(txn: Txn, until: number): void {
    if (this.store !== null) return;
    for (const [groupId, entries] of txn.offsets) {
      if (entries.size > 0) this.groups.group(groupId, true)?.holdForTxn(txn.producerId, [...entries.keys()], until);
    }
  }

  /** Whether this node coordinates `id` now (on a single node, every id). */
  coordinates(id: string): boolean {
    return this.store === null || this.txns.has(id);
  }

  /** The transactional ids coordinated here (ListTransactions). */
  list(): TxnDescription[] {
    return [...this.txns.values()].map(describeTxn);
  }

  /** A transactional id coordinated here (DescribeTransactions); undefined for one not known. */
  describe(id: string): TxnDescription | undefined {
    const t = this.txns.get(id);
    return t === undefined ? undefined : describeTxn(t);
  }

  close(): void {
    this.closed = true;
    for (const t of this.txns.values()) if (t.timer !== null) clearTimeout(t.timer);
  }

  // ---- the API ----

  /**
   * InitProducerId with a transactional id: fences the previous producer and
   * aborts its open transaction. `expected` (v3+, KIP-360): a producer that
   * names its id and epoch is answered only while it is still the current
   * one (or retries the bump it was given), else PRODUCER_FENCED, so a stale
   * producer cannot fence the one that replaced it.
   */
  initProducerId(transactionalId: string, timeoutMs: number, expected: { producerId: number; epoch: number } | null = null): Promise<{ error: number; producerId: number; epoch: number }> {
    if (timeoutMs <= 0 || timeoutMs > MAX_TRANSACTION_TIMEOUT_MS) return Promise.resolve({ error: ErrorCode.INVALID_TRANSACTION_TIMEOUT, producerId: -1, epoch: -1 });
    let txn = this.txns.get(transactionalId);
    const made = txn === undefined;
    if (txn === undefined) {
      if (!this.makeRoom()) return Promise.resolve({ error: ErrorCode.COORDINATOR_NOT_AVAILABLE, producerId: -1, epoch: -1 });
      txn = this.newTxn(transactionalId, this.allocateId(), -1, timeoutMs);
      this.txns.set(transactionalId, txn);
    }
    txn.lastUsed = Date.now();
    // Its commit or abort is being finished: Kafka answers at once, and the producer retries (else each retry would
    // queue one more bump behind markers that may take long); a producer naming another epoch is fenced first, as there.
    if (txn.state === "PrepareCommit" || txn.state === "PrepareAbort") {
      const fenced = expected !== null && expected.producerId >= 0 && (expected.producerId !== txn.producerId || expected.epoch !== txn.epoch);
      return Promise.resolve({ error: fenced ? ErrorCode.PRODUCER_FENCED : ErrorCode.CONCURRENT_TRANSACTIONS, producerId: -1, epoch: -1 });
    }
    const t = txn;
    const run = this.guardedRun<{ error: number; producerId: number; epoch: number }>(t, { error: ErrorCode.NOT_COORDINATOR, producerId: -1, epoch: -1 }, async () => {
      const named = !made && expected !== null && expected.producerId >= 0;
      const is = (who: { producerId: number; epoch: number } | null): boolean => who !== null && who.producerId === expected!.producerId && who.epoch === expected!.epoch;
      if (named) {
        if (is(t.bumpedFrom) && t.state === "Empty") return { error: ErrorCode.NONE, producerId: t.producerId, epoch: t.epoch };
        const current = t.producerId === expected.producerId && t.epoch === expected.epoch;
        if (!current && !(is(t.fencedFrom) && t.state === "Empty")) return { error: ErrorCode.PRODUCER_FENCED, producerId: -1, epoch: -1 };
      }
      const from = named ? { producerId: expected.producerId, epoch: expected.epoch } : null;
      // An open transaction is aborted fenced, as Kafka's prepareFenceProducerEpoch does: its markers carry the next
      // epoch, so a partition led elsewhere refuses a batch the old producer still sends after them (which would open a
      // transaction there that nothing ends); the new producer then gets the epoch after that.
      const fences = t.state !== "Empty";
      if (fences) await this.complete(t, t.state === "PrepareCommit", t.state !== "PrepareCommit");
      // A new producer session has begun no transaction yet (Kafka's start time goes back to -1).
      const next: Txn = { ...t, bumpedFrom: from, ended: null, startedAt: -1, timeoutMs };
      this.bumpEpoch(next);
      // An epoch is handed out only once saved: another producer must never be given it again after a restart. Not
      // saved, the id is as it was (one no producer was given is not kept), and a retry tries again.
      const apply = (): void => {
        t.producerId = next.producerId;
        t.epoch = next.epoch;
        t.bumpedFrom = from;
        t.fencedFrom = null;
        t.ended = null;
        t.startedAt = -1;
        t.timeoutMs = timeoutMs;
      };
      let saved: boolean;
      try {
        saved = await this.written(t, next, "its new epoch", apply);
      } catch (err) {
        if (made) this.forget(t);
        throw err;
      }
      if (!saved) {
        if (made) this.forget(t);
        else if (fences && from !== null) t.fencedFrom = from;
        return { error: ErrorCode.NOT_COORDINATOR, producerId: -1, epoch: -1 };
      }
      return { error: ErrorCode.NONE, producerId: t.producerId, epoch: t.epoch };
    });
    // Bounded by the timeout the request names, as Kafka's appendTransactionToLog by the new state's txnTimeoutMs.
    return this.withinTxnTimeout(transactionalId, timeoutMs, "InitProducerId", run, { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, producerId: -1, epoch: -1 });
  }

  addPartitions(req: TxnRequest, topics: Array<{ name: string; partitions: number[] }>): Promise<Array<{ name: string; partitions: Array<{ index: number; error: number }> }>> {
    const answer = (error: (topic: string, index: number) => number): Array<{ name: string; partitions: Array<{ index: number; error: number }> }> =>
      topics.map((t) => ({ name: t.name, partitions: t.partitions.map((index) => ({ index, error: error(t.name, index) })) }));
    const run = this.guarded(req, (error) => answer(() => error), async (t) => {
      // Unknown partitions fail the whole request, as in Kafka: the others are "not attempted".
      const unknown = new Set<string>();
      for (const tp of topics) {
        const count = this.partitionsOf(tp.name);
        for (const i of tp.partitions) if (count === undefined || i < 0 || i >= count) unknown.add(offsetKey(tp.name, i));
      }
      if (unknown.size > 0) return answer((n, i) => (unknown.has(offsetKey(n, i)) ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION : ErrorCode.OPERATION_NOT_ATTEMPTED));
      let added = 0;
      for (const tp of topics) for (const i of tp.partitions) if (!t.partitions.has(offsetKey(tp.name, i))) added++;
      if (t.partitions.size + added > MAX_TXN_PARTITIONS) return answer(() => ErrorCode.INVALID_REQUEST);
      const next: Txn = { ...t, partitions: new Map(t.partitions) };
      for (const tp of topics) {
        for (const index of tp.partitions) {
          const key = offsetKey(tp.name, index);
          if (!next.partitions.has(key)) next.partitions.set(key, { topic: tp.name, index, stream: streamNameOf(tp.name) });
        }
      }
      if (!this.recordFits(next)) return answer(() => ErrorCode.INVALID_REQUEST);
      const begins = began(next);
      // Saved before any record is produced, so a restart knows where to write the abort markers; until then a batch
      // for them is refused. Not saved: nothing changed, and the retry saves them.
      const apply = (): void => {
        t.partitions = next.partitions;
        if (begins) this.begin(t, next.startedAt);
      };
      if (added === 0 && !begins) apply();
      else if (!(await this.written(t, next, "its new partitions", apply))) return answer(() => ErrorCode.NOT_COORDINATOR);
      return answer(() => ErrorCode.NONE);
    });
    return this.withinTxnTimeout(req.transactionalId, this.timeoutOf(req.transactionalId), "AddPartitionsToTxn", run, answer(() => ErrorCode.COORDINATOR_NOT_AVAILABLE));
  }

  addOffsets(req: TxnRequest, groupId: string): Promise<number> {
    const run = this.guarded(req, (error) => error, async (t) => {
      const added = !t.offsets.has(groupId);
      const next: Txn = { ...t, offsets: new Map(t.offsets) };
      if (added) {
        if (t.offsets.size >= MAX_TXN_PARTITIONS) return ErrorCode.INVALID_REQUEST;
        next.offsets.set(groupId, new Map());
        if (!this.recordFits(next)) return ErrorCode.INVALID_REQUEST;
      }
      const begins = began(next);
      // Saved, so that a restart knows the transaction is open (a single node resumes it) with this group in it.
      const apply = (): void => {
        t.offsets = next.offsets;
        if (begins) this.begin(t, next.startedAt);
      };
      if (!added && !begins) apply();
      else if (!(await this.written(t, next, `group ${groupId}`, apply))) return ErrorCode.NOT_COORDINATOR;
      return ErrorCode.NONE;
    });
    return this.withinTxnTimeout(req.transactionalId, this.timeoutOf(req.transactionalId), "AddOffsetsToTxn", run, ErrorCode.COORDINATOR_NOT_AVAILABLE);
  }

  /**
   * Whether the transaction's record, with its group offsets as a prepared
   * commit writes it, fits one message: in a cluster it is one record of
   * `__transaction_state`, and a commit that could not record its decision
   * could not go on. (The same bound on a single node.)
   */
  private recordFits(txn: Txn): boolean {
    const record = { ...savedOf(txn), offsets: [...txn.offsets].map(([g, m]) => [g, [...m]]) };
    return Buffer.byteLength(JSON.stringify(record)) <= this.js.options.maxPayload - RECORD_ROOM;
  }

  /** The transaction timeout of transactional id `id` held here: its open transaction is aborted within it. */
  timeoutOf(id: string): number | undefined {
    return this.txns.get(id)?.timeoutMs;
  }

  /** Whether this broker holds transactional id `id` (in a cluster: coordinates it, its state loaded). */
  holds(id: string): boolean {
    return this.txns.has(id);
  }

  /**
   * TxnOffsetCommit: offsets held in the transaction until it commits;
   * dropped if it aborts. In turn with the transaction's other requests, so
   * an EndTxn behind it commits what it saved.
   */
  commitOffsets(req: TxnRequest, groupId: string, entries: Array<[string, CommittedOffset]>): Promise<number> {
    return this.guarded(req, (error) => error, async (t) => {
      const held = t.offsets.get(groupId);
      if (held === undefined) return ErrorCode.INVALID_TXN_STATE; // AddOffsetsToTxn comes first
      const group = new Map(held);
      for (const [k, v] of entries) {
        if (!group.has(k) && group.size >= MAX_TXN_PARTITIONS) return ErrorCode.INVALID_REQUEST;
        group.set(k, v);
      }
      const next: Txn = { ...t, offsets: new Map(t.offsets).set(groupId, group) };
      if (!this.recordFits(next)) return ErrorCode.OFFSET_METADATA_TOO_LARGE;
      // The open transaction goes on across a restart or a change of coordinator, offsets and all: saved before they
      // are acknowledged, as Kafka writes them to its offsets log. Not saved: NOT_COORDINATOR, which clients retry
      // (Kafka's answer when its offsets log refuses the write, KAFKA_STORAGE_ERROR included).
      const saved = await this.written(t, next, `its offsets of group ${groupId}`, () => (t.offsets = next.offsets));
      return saved ? ErrorCode.NONE : ErrorCode.NOT_COORDINATOR;
    });
  }

  endTxn(req: TxnRequest, commit: boolean): Promise<number> {
    const run = this.guarded(req, (error) => error, async (t) => {
      // A retry of an EndTxn whose answer was lost gets that answer again, as in Kafka; nothing was open otherwise.
      if (t.state !== "Ongoing") return t.state === "Empty" && t.ended === (commit ? "commit" : "abort") ? ErrorCode.NONE : ErrorCode.INVALID_TXN_STATE;
      await this.complete(t, commit, false);
      return ErrorCode.NONE;
    });
    // The commit or abort goes on once its answer timed out: the retry gets CONCURRENT_TRANSACTIONS until it is done,
    // then NONE (the transaction decided, never half).
    return this.withinTxnTimeout(req.transactionalId, this.timeoutOf(req.transactionalId), "EndTxn", run, ErrorCode.COORDINATOR_NOT_AVAILABLE);
  }

  /**
   * The request's answer, or `late` once `ms` (the transaction's timeout)
   * passes first. Kafka bounds each write of its transaction state log by
   * the transaction's timeout (appendTransactionToLog appends with the new
   * state's txnTimeoutMs) and answers one not done by then (REQUEST_TIMED_OUT,
   * as NOT_ENOUGH_REPLICAS) COORDINATOR_NOT_AVAILABLE, which clients retry.
   * A save that stalls (a disk that stops answering the sync of
   * transactions.json, a replica of __transaction_state) held the answer,
   * and every later answer of the connection (answered in order), without
   * end. The request goes on in turn with the transaction's others: a retry
   * behind it finds its save made or not, never half.
   */
  private withinTxnTimeout<T>(id: string, ms: number | undefined, what: string, run: Promise<T>, late: T): Promise<T> {
    const bound = ms ?? MAX_TRANSACTION_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<T>(
      (resolve) =>
        (timer = setTimeout(() => {
          // Logged once per FAILURE_LOG_MS per id: the producer retries, and each retry waits behind the same save.
          const told = this.failuresTold.failed(`answer\0${id}`);
          if (told !== null) {
            const line = `transaction ${id}: ${what} not done within the transaction's timeout (${bound} ms), its state not yet saved: answered COORDINATOR_NOT_AVAILABLE; it goes on`;
            this.warn(told.heldBack > 0 ? `${line} (and ${told.heldBack} more in the last ${Math.round(told.sinceMs / 1000)} s)` : line);
          }
          resolve(late);
        }, bound).unref()),
    );
    return Promise.race([run, timedOut]).finally(() => clearTimeout(timer));
  }

  // ---- the produce and fetch paths ----

  /** Whether a transactional batch may be appended now; a Kafka error code. Synchronous: called at the append turn. */
  checkProduce(req: TxnRequest, topic: string, index: number): number {
    const txn = this.txns.get(req.transactionalId);
    const refused = this.check(txn, req);
    if (refused !== ErrorCode.NONE) return refused;
    if (txn!.state !== "Ongoing") return ErrorCode.INVALID_TXN_STATE;
    // AddPartitionsToTxn comes first.
    return txn!.partitions.has(offsetKey(topic, index)) ? ErrorCode.NONE : ErrorCode.INVALID_TXN_STATE;
  }

  // ---- inside ----

  private newTxn(id: string, producerId: number, epoch: number, timeoutMs: number): Txn {
    return { id, producerId, epoch, timeoutMs, state: "Empty", partitions: new Map(), offsets: new Map(), timer: null, lastUsed: Date.now(), ended: null, queue: Promise.resolve(), dropped: false, busy: 0, startedAt: -1, bumpedFrom: null, fencedFrom: null, pending: null };
  }

  private check(txn: Txn | undefined, req: TxnRequest): number {
    if (txn === undefined || txn.producerId !== req.producerId) return ErrorCode.INVALID_PRODUCER_ID_MAPPING;
    if (req.epoch !== txn.epoch) return ErrorCode.INVALID_PRODUCER_EPOCH;
    if (txn.state === "PrepareCommit" || txn.state === "PrepareAbort") return ErrorCode.CONCURRENT_TRANSACTIONS;
    txn.lastUsed = Date.now();
    return ErrorCode.NONE;
  }

  /**
   * Runs `op` on the request's transaction in turn, once the producer id and
   * epoch check out (checked again in turn: an earlier operation may have
   * fenced the producer); `refused` answers a failed check.
   */
  private guarded<T>(req: TxnRequest, refused: (error: number) => T, op: (txn: Txn) => Promise<T>): Promise<T> {
    const txn = this.txns.get(req.transactionalId);
    const error = this.check(txn, req);
    if (error !== ErrorCode.NONE) return Promise.resolve(refused(error));
    // Its state may go to another broker meanwhile (a cluster): the client then finds the new coordinator.
    return this.guardedRun(txn!, refused(ErrorCode.NOT_COORDINATOR), () => {
      const again = this.check(txn, req);
      return again !== ErrorCode.NONE ? Promise.resolve(refused(again)) : op(txn!);
    });
  }

  /** serialise, answering `moved` when the transaction's state went to another broker meanwhile (a cluster). */
  private guardedRun<T>(txn: Txn, moved: T, op: () => Promise<T>): Promise<T> {
    return this.serialise(txn, op).catch((err: unknown) => {
      if (err instanceof CoordinatorMoved) return moved;
      throw err;
    });
  }

  private serialise<T>(txn: Txn, op: () => Promise<T>): Promise<T> {
    const go = (): Promise<T> => (txn.dropped ? Promise.reject(new CoordinatorMoved(`this broker no longer coordinates transactional id ${txn.id}`)) : op());
    txn.busy++;
    const run = txn.queue.then(go, go);
    txn.queue = run.then(
      () => void txn.busy--,
      () => void txn.busy--,
    );
    return run;
  }

  /**
   * Saves `next`, the state a request would put `txn` in, leaving `txn` as it
   * is until written: then `apply` puts it in force, and true. False when the
   * write failed (logged once per FAILURE_LOG_MS), to be answered
   * NOT_COORDINATOR, Kafka's answer when its log refuses the write, which
   * clients retry. Another broker coordinating the transaction now throws
   * CoordinatorMoved.
   */
  private async written(txn: Txn, next: Txn, what: string, apply: () => void): Promise<boolean> {
    txn.pending = savedOf(next);
    try {
      await this.save(txn);
      // In the same turn as the pending state goes: a write queued behind this one snapshots it at its next turn.
      apply();
      const heldBack = this.failuresTold.over(`${what}\0${txn.id}`);
      if (heldBack > 0) this.warn(`transaction ${txn.id}: ${what} saved, after ${heldBack} more failure(s) not logged`);
      return true;
    } catch (err) {
      if (err instanceof CoordinatorMoved) throw err;
      const told = this.failuresTold.failed(`${what}\0${txn.id}`);
      if (told !== null) {
        const line = `transaction ${txn.id}: ${what} not saved: ${(err as Error).message}`;
        this.warn(told.heldBack > 0 ? `${line} (and ${told.heldBack} more such failure(s) in the last ${Math.round(told.sinceMs / 1000)} s)` : line);
      }
      return false;
    } finally {
      txn.pending = null;
    }
  }

  /** The next epoch; at the one before the last a new producer id, so that a fence can always step to a newer epoch (as Kafka's). */
  private bumpEpoch(txn: Txn): void {
    if (txn.epoch >= MAX_EPOCH - 1) {
      txn.producerId = this.allocateId();
      txn.epoch = 0;
    } else txn.epoch++;
  }

  /** The transaction starts (on its first partition or group, saved as begun at `startedAt`): its timeout runs from there. */
  private begin(txn: Txn, startedAt: number): void {
    began(txn);
    txn.startedAt = startedAt;
    this.armTimeout(txn, Math.max(0, startedAt + txn.timeoutMs - Date.now()));
  }

  /** Aborts the open transaction (fencing its producer) in `ms`, unless it has ended or its epoch moved on by then. */
  private armTimeout(txn: Txn, ms: number): void {
    const epoch = txn.epoch;
    txn.timer = setTimeout(() => {
      txn.timer = null;
      void this.serialise(txn, async () => {
        if (this.closed || txn.dropped || txn.state !== "Ongoing" || txn.epoch !== epoch) return;
        this.log(`transaction ${txn.id} timed out after ${txn.timeoutMs} ms: aborting it`);
        await this.complete(txn, false, true);
      }).catch((err: Error) => this.log(`transaction ${txn.id}: abort after timeout failed: ${err.message}`));
    }, ms);
    txn.timer.unref();
  }

  /**
   * Writes the decision, then a marker to every partition, then the group
   * offsets, then forgets the transaction. It is done once each partition's
   * index has read its marker, so that a reader who heard of the end sees
   * it. `fence` bumps the epoch, so the producer cannot go on with a
   * transaction decided for it.
   */
  private async complete(txn: Txn, commit: boolean, fence: boolean): Promise<void> {
    if (txn.timer !== null) clearTimeout(txn.timer);
    txn.timer = null;
    txn.state = commit ? "PrepareCommit" : "PrepareAbort";
    // Fenced: the markers carry the next epoch, which refuses the old producer's batches. A producer is never given
    // the last epoch (bumpEpoch), so only a state saved at it by an older version could be there: its markers go under
    // that id and epoch, which close it, and the id changes after them.
    const wrap = fence && txn.epoch >= MAX_EPOCH;
    if (fence && !wrap) txn.epoch++;
    if (fence) {
      txn.bumpedFrom = null;
      txn.fencedFrom = null;
    }
    // The decision is written before any marker, an abort's too: an open transaction goes on after a restart or a
    // change of coordinator, so one whose abort had begun (some partitions closed by a marker) must not look open then.
    // Tried until it is written, as a marker is: the transaction stays prepared meanwhile, never half decided.
    // Decided to commit: its offsets read as unstable until they are stored, however long the decision's save and the
    // markers take (the hold from TxnOffsetCommit runs out at the transaction's timeout), as Kafka keeps pending offsets
    // until the marker.
    if (commit) this.holdOffsets(txn, Infinity);
    await this.untilDone(txn, () => this.save(txn));
    // Once decided (not before: a decision not saved leaves the transaction open for the next coordinator).
    if (commit) this.holdDecided(txn);
    // A few at a time: each may be a request to another node, and those share a bound with replication's (cluster-api.ts).
    const parts = [...txn.partitions.values()];
    const written: Array<Marker | null> = new Array(parts.length).fill(null);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < parts.length; i = next++) {
        this.stillHeld(txn);
        written[i] = await this.untilDone(txn, () => this.writeMarker(txn, parts[i], commit));
      }
    };
    await Promise.all(Array.from({ length: Math.min(MARKERS_IN_FLIGHT, parts.length) }, worker));
    this.stillHeld(txn);
    // Bounded: an index that cannot read its log says so itself, and the markers are stored. (Another node's reads its own.)
    const reads: Array<Promise<void>> = [];
    for (const w of written) {
      const stream = w?.here === true ? this.js.streams.get(w.part.stream) : undefined;
      if (stream !== undefined) reads.push(this.indexes.whenRead(stream, w!.part.index, w!.offset + 1));
    }
    await withinMs(Promise.all(reads), INDEX_WAIT_MS);
    this.stillHeld(txn);
    if (commit) {
      for (const [groupId, entries] of txn.offsets) {
        if (entries.size === 0) continue;
        // Retried as markers are (a disk error passes, a group's coordinator moving or down), here or at the group's coordinator.
        const skipped = await this.untilDone(txn, () => this.commitGroupOffsets(groupId, [...entries], txn.producerId));
        if (skipped !== null) this.log(`transaction ${txn.id}: committed, but the offsets of group ${groupId} were not: ${skipped}`);
        this.stillHeld(txn);
      }
    } else {
      // The groups stop answering the offsets unstable (KIP-447) before the abort is done: the producer's next
      // transaction may hold them again, and a late end must not end its hold (Kafka's next transaction waits for the
      // abort's markers, the offsets log's too). All at once, each tried until its hold would have run out anyway.
      const deadline = Date.now() + txn.timeoutMs;
      const ends = [...txn.offsets].filter(([, entries]) => entries.size > 0).map(async ([groupId]) => {
        try {
          await this.untilDone(txn, () => this.commitGroupOffsets(groupId, [], txn.producerId), deadline);
        } catch (err) {
          if (err instanceof CoordinatorMoved) throw err;
          this.log(`transaction ${txn.id}: aborted, but group ${groupId} was not told: ${(err as Error).message}`);
        }
      });
      const moved = (await Promise.allSettled(ends)).find((o): o is PromiseRejectedResult => o.status === "rejected");
      if (moved !== undefined) throw moved.reason;
      this.stillHeld(txn);
    }
    if (wrap) {
      txn.producerId = this.allocateId();
      txn.epoch = 0;
    }
    txn.partitions.clear();
    txn.offsets.clear();
    txn.state = "Empty";
    txn.ended = commit ? "commit" : "abort";
    // Not written, a restart would finish it again: the same markers, harmless, but the producer waits for this.
    await this.untilDone(txn, () => this.save(txn));
  }

  /**
   * In a cluster: a decided commit's offsets held at each group's
   * coordinator until they are stored, past the transaction's timeout, for
   * at most the longest a transaction may run (Group.extendTxnHold; a
   * single node's are held by holdOffsets, without end). Not
   * waited for: a coordinator that cannot be reached must not hold the
   * commit up, and the hold only ever lengthens one that has not ended.
   */
  private holdDecided(txn: Txn): void {
    if (this.store === null) return;
    // Never for ever: a hold whose end is never told (a coordinator of an older version, a call lost) must still end.
    const until = Date.now() + MAX_TRANSACTION_TIMEOUT_MS;
    for (const [groupId, entries] of txn.offsets) if (entries.size > 0) void this.holdUntilStored(txn, groupId, entries, until);
  }

  /**
   * Asks the group's coordinator to hold a decided commit's offsets, again
   * (backing off as markers do) while it cannot say it does (moving,
   * loading, unreachable), until it does, the offsets are stored (the
   * transaction no longer has them), the transaction goes elsewhere or the
   * server stops.
   */
  private async holdUntilStored(txn: Txn, groupId: string, entries: ReadonlyMap<string, CommittedOffset>, until: number): Promise<void> {
    const producerId = txn.producerId;
    for (let delay = MARKER_RETRY_MIN_MS, told = false; ; delay = Math.min(2 * delay, MARKER_RETRY_MAX_MS)) {
      if (this.closed || txn.dropped || this.txns.get(txn.id) !== txn || txn.offsets.get(groupId) !== entries || Date.now() >= until) return;
      const why = await (this.holdAway?.(groupId, producerId, until) ?? this.holdHere(groupId, producerId, until));
      if (why === null) return;
      if (!told) this.warn(`transaction ${txn.id}: group ${groupId} does not hold its offsets past the transaction's timeout yet (asking again): ${why}`);
      told = true;
      await new Promise<void>((resolve) => setTimeout(resolve, delay).unref());
    }
  }

  /** holdAway for a group coordinated here: null once held (or nothing is held any more), else why not. */
  private async holdHere(groupId: string, producerId: number, until: number): Promise<string | null> {
    const group = this.groups.group(groupId, false);
    // Its partition of __consumer_offsets not loaded (yet): the hold is read back at the load, then lengthened.
    if (group === null) return `group ${groupId} is not loaded here`;
    try {
      await group.extendTxnHold(producerId, until);
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  }

  /**
   * Commits a transaction's offsets of one group (none: it aborted), here or
   * at the group's coordinator on another broker, which then no longer
   * holds them for producer `producerId`: null once stored, or why they
   * never will be; throws to be tried again.
   */
  private async commitGroupOffsets(groupId: string, entries: Array<[string, CommittedOffset]>, producerId: number): Promise<string | null> {
    const away = this.commitAway?.(groupId, entries, producerId) ?? null;
    if (away !== null) return away;
    // Made also to end a hold only (in a cluster its record may be in the log though the group is not here).
    const group = this.groups.group(groupId, entries.length > 0 || this.store !== null);
    if (group === null) return entries.length > 0 ? "too many groups" : null;
    try {
      await group.commit(entries, producerId);
      return null;
    } catch (err) {
      // The group's coordinator moved since it was looked up: the next try finds the new one. (The transaction moving is
      // CoordinatorMoved too, from stillHeld, which ends the tries.)
      if (err instanceof CoordinatorMoved) throw new Error(`the offsets of group ${groupId}: ${err.message}`);
      throw err;
    }
  }

  /**
   * A decided transaction must reach every partition, as Kafka's coordinator
   * sees to: a failed marker (a disk error) is retried until it is stored,
   * the partition is deleted, or the server stops (a restart then finishes
   * the transaction). Meanwhile the transaction stays prepared: its producer
   * gets CONCURRENT_TRANSACTIONS, read_committed readers wait at its start.
   * So each marker (and a commit's group offsets) is written with this: until
   * it succeeds (backing off from 100 ms to 5 s), the server stops, the
   * transaction goes to another broker, or the next try would be past
   * `deadline` (the last error thrown).
   */
  private async untilDone<T>(txn: Txn, write: () => Promise<T>, deadline = Infinity): Promise<T> {
    for (let delay = MARKER_RETRY_MIN_MS; ; delay = Math.min(2 * delay, MARKER_RETRY_MAX_MS)) {
      this.stillHeld(txn);
      try {
        return await write();
      } catch (err) {
        if (this.closed || err instanceof CoordinatorMoved || Date.now() + delay >= deadline) throw err;
        this.warn(`transaction ${txn.id}: ${(err as Error).message}; trying again in ${delay} ms`);
        await new Promise<void>((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  /**
   * Throws CoordinatorMoved once another broker coordinates the transaction,
   * or this one has stopped: nothing more is written for it here (a restart
   * in the same process must not find its file overwritten by the old one).
   */
  private stillHeld(txn: Txn): void {
    if (this.closed) throw new CoordinatorMoved(`this broker has stopped coordinating transactions`);
    if (txn.dropped || this.txns.get(txn.id) !== txn) throw new CoordinatorMoved(`this broker no longer coordinates transactional id ${txn.id}`);
  }

  /** Appends the marker at the partition's leader, here or on another node; null once the stream is gone. */
  private async writeMarker(txn: Txn, part: TxnPartition, commit: boolean): Promise<Marker | null> {
    const input = { subject: commit ? CONTROL_SUBJECT_COMMIT : CONTROL_SUBJECT_ABORT, headers: txnHeaders(txn.producerId, txn.epoch), data: Buffer.alloc(0) };
    try {
      const { seq, here } = await this.js.appendAt(part.stream, part.index, input);
      return { part, offset: seq - 1, here };
    } catch (err) {
      if (err instanceof ApiError && err.errCode === Errors.streamNotFound().errCode) return null;
      throw new Error(`transaction marker for ${part.topic}/${part.index}: ${(err as Error).message}`);
    }
  }

  /** Forgets the least recently used idle transactional id (none of its operations queued or running) when the table is full. */
  private makeRoom(): boolean {
    if (this.txns.size < MAX_TRANSACTIONAL_IDS) return true;
    let oldest: Txn | null = null;
    for (const t of this.txns.values()) if (t.state === "Empty" && t.busy === 0 && (oldest === null || t.lastUsed < oldest.lastUsed)) oldest = t;
    if (oldest === null) return false;
    this.forget(oldest);
    return true;
  }

  /**
   * Writes the transaction's state (its record in a cluster; the whole file
   * on a single node, one write at a time, the saves asked for meanwhile
   * made by the next one together).
   */
  private save(txn: Txn): Promise<void> {
    // Stopped: nothing more is written. In a cluster, a transaction dropped here (its partition led elsewhere now) must
    // not write over what its new coordinator wrote.
    if (this.closed || (this.store !== null && (txn.dropped || this.txns.get(txn.id) !== txn))) {
      return Promise.reject(new CoordinatorMoved(this.closed ? "this broker has stopped coordinating transactions" : `this broker no longer coordinates transactional id ${txn.id}`));
    }
    if (this.store !== null) return this.store.write(txn.id, txn.pending ?? savedOf(txn));
    if (this.nextSave !== null) return this.nextSave;
    const write = (): Promise<void> => {
      this.nextSave = null;
      if (this.closed) return Promise.reject(new CoordinatorMoved("this broker has stopped coordinating transactions"));
      const snapshot: Record<string, SavedTxn> = {};
      for (const t of this.txns.values()) snapshot[t.id] = t.pending ?? savedOf(t);
      return writeJsonDurably(join(this.dir, "transactions.json"), snapshot);
    };
    const run = this.saves.then(write, write);
    this.nextSave = run;
    this.saves = run.catch(() => undefined);
    return run;
  }
}

/** Puts a transaction (a request's draft of one) in the state of one begun now, unless it is open already: whether it began. */
function began(t: Txn): boolean {
  if (t.state === "Ongoing") return false;
  t.state = "Ongoing";
  t.ended = null;
  t.startedAt = Date.now();
  return true;
}

function savedOf(t: Txn): SavedTxn {
  return {
    producerId: t.producerId,
    epoch: t.epoch,
    timeoutMs: t.timeoutMs,
    state: t.state,
    // (The third number, once the partition's offset when added, is no longer read.)
    partitions: [...t.partitions.values()].map((p) => [p.topic, p.index, 0]),
    ...(t.state !== "Empty" ? { offsets: [...t.offsets].map(([g, m]) => [g, [...m]]), startedAt: t.startedAt } : {}),
    ...(t.ended !== null ? { ended: t.ended } : {}),
  };
}

/** Kafka's view of a transactional id: a finished transaction is CompleteCommit or CompleteAbort until the next begins. */
function describeTxn(t: Txn): TxnDescription {
  const state = t.state !== "Empty" || t.ended === null ? t.state : t.ended === "commit" ? "CompleteCommit" : "CompleteAbort";
  return {
    transactionalId: t.id,
    state,
    producerId: t.producerId,
    epoch: t.epoch,
    timeoutMs: t.timeoutMs,
    startedAt: t.startedAt,
    partitions: [...t.partitions.values()].map((p) => [p.topic, p.index]),
  };
}
