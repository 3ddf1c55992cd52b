/**
 * A stream: the subjects it captures, its limits and retention, and the
 * partitions (one log each) that hold its messages. Publishing goes through
 * here so that de-duplication, expectations and rollups are decided in
 * sequence order, and an acknowledgement is given only once the log says the
 * message is durable.
 */

import { EventEmitter } from "node:events";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { subjectMatches } from "../subjects/subject.js";
import { RECORD_HEADER, recordSize } from "../store/format.js";
import { isForeign, payloadSizeAt, type AppendInput, type ForeignBatch, type Limits, type LogState, type MessageLog, type RecordRun, type StoredItem, type StoredMessage } from "../store/log.js";
import type { EpochEntry } from "../store/leader-epochs.js";
import { ApiError, Errors, LeaseLostError, OutcomeUnknownError, storeFailure } from "./errors.js";
import { damageFields } from "./damage.js";
import { parseStateFile, removeFileDurably, stateFileText } from "../util/persist.js";
import { appendHeaders, header, KEY_HEADER, parseHeaders, withKeyHeader, withoutHeader, type HeaderMap } from "./headers.js";
import { SubjectTransform } from "../subjects/transform.js";
import { partitionForKey } from "./partitioner.js";
import { NS_PER_MS, type StreamConfig } from "./config.js";
import type { Consumer } from "./consumer.js";
import type { ConsumerCopy } from "./stream-move.js";
import { CappedVisibility, type Visibility } from "./visibility.js";
import type { MergedLog, StreamOrder } from "./stream-order.js";

export type PublishDone = (err: ApiError | null, seq: number, duplicate: boolean) => void;

/**
 * An account's bound on what its streams hold (limits.ts): asked before
 * each message or door append is handed to a log, only when the account
 * has a memory or storage limit.
 */
export interface StorageQuota {
  /** The refusal of `bytes` more in a stream of this storage type, or null. */
  refusal(storage: StreamConfig["storage"], bytes: number): ApiError | null;
}

/** Where a stream sends what it republishes (the account's routing). */
export type Republisher = (subject: string, headers: Buffer, data: Buffer) => void;

/** A replicated stream's leader: calls `done` once the in-sync followers copied the consumers as they are now, `failed` if its leadership ends first; false: refused (too many wait, or it ended). */
export type ConsumerCopyGate = (done: () => void, failed?: () => void) => boolean;

/** The gate of a replicated stream's consumers where nothing may be confirmed: this node does not lead it, or not yet (stream-replicas.ts). */
export const REFUSE_CONSUMER_COPIES: ConsumerCopyGate = () => false;

/**
 * An append of a door that picks its partition itself (Kafka), waiting
 * behind a queued publish: one ordering point per stream, so an
 * expectation header never races a produce.
 */
interface QueuedAppend {
  direct: true;
  partition: number;
  bytes: number;
  go: () => void;
}

interface Queued {
  direct?: undefined;
  subject: string;
  /** For republish: the subject's last sequence when this publish was processed (see `republished`). */
  lastOfSubject: number;
  headers: Buffer | null;
  parsed: HeaderMap | null;
  /** Carries headers that depend on the state left by earlier publishes. */
  orderSensitive: boolean;
  data: Buffer;
  done: PublishDone;
}

interface DedupEntry {
  seq: number;
  time: number;
}

/** Headers that make a publish depend on the state left by the ones before it. */
const ORDER_SENSITIVE = [
  "Nats-Expected-Last-Sequence",
  "Nats-Expected-Last-Subject-Sequence",
  "Nats-Expected-Last-Msg-Id",
  "Nats-Rollup",
];

/**
 * What JetStream readers read a stream through, in stream sequences: the
 * partition's log when there is one partition, the merged view of every
 * partition when there are several (stream-order.ts).
 */
export type ReaderLog = Pick<
  MessageLog,
  "get" | "scan" | "next" | "firstAtOrAfter" | "lastBySubject" | "lastPerSubject" | "lastSeqOf" | "subjectCounts" | "subjectCount" | "has" | "removals" | "pendingAfter" | "deletedSequences" | "delete" | "purge" | "state" | "newestTime"
>;

export const ZERO_TIME = "0001-01-01T00:00:00Z";

/** The de-duplication ids a clean stop leaves for the next start (see Stream.saveDedup). */
const DEDUP_FILE = "dedup.json";
/** Headers are parsed for a de-duplication id only if they hold this (names are trimmed: `Nats-Msg-Id :` counts). */
const MSG_ID_NAME = Buffer.from("Nats-Msg-Id");
/** Deletes a door's retirement (Stream.retire) keeps under way at once: one tombstone batch's worth, not one per record. */
const RETIRE_CHUNK = 1024;

/** A stored message's de-duplication id, if its headers name one. */
function msgIdOf(headers: Buffer | null): string | undefined {
  if (headers === null || !headers.includes(MSG_ID_NAME)) return undefined;
  return header(parseHeaders(headers, 0, headers.length), "Nats-Msg-Id");
}

/** What dedup.json holds. */
interface SavedDedup {
  lastSeq: number;
  /** Written for older versions; not read: the last message's id is read from the log (see readLastMsgId). */
  lastMsgId: string;
  entries: Array<[string, number, number]>;
}

/** At most this many sequences in stream info's `deleted` list (deleted_details). */
export const DELETED_DETAILS_MAX = 100_000;

/**
 * What a stream may hold in memory for writes (publishes queued behind
 * others, plus appends its logs have not made durable yet) before it pushes
 * back. Past the soft mark the publishing connection is paused until the
 * backlog drains; past the hard mark publishes are refused. A publisher that
 * never waits for its acks meets one or the other instead of growing the
 * server's memory. 8 MiB keeps several 2 MiB group commits in flight.
 */
export const INGEST_SOFT = { messages: 16_384, bytes: 8 * 1024 * 1024 };
export const INGEST_MAX = { messages: 131_072, bytes: 64 * 1024 * 1024 };

export function isoTime(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString() : ZERO_TIME;
}

/** The sequences of flat [from, to] ranges at or above `first` (those below are gone from the front, which the log start tells). */
function insideOf(ranges: readonly number[], first: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < ranges.length; i += 2) for (let seq = Math.max(ranges[i], first); seq <= ranges[i + 1]; seq++) out.push(seq);
  return out;
}

/**
 * A replicated partition's leader side, as the stream sees it
 * (stream-replicas.ts): writes are refused while it says so, acknowledged
 * once every in-sync replica has them, and readers see nothing past its
 * high watermark (an unreplicated write may be lost in a failover).
 */
export interface ReplicaGate {
  /** The first sequence not yet on every in-sync replica. */
  readonly highWatermark: number;
  /** False while a new leadership's high watermark is below the log's end it began with (Kafka's leader epoch start offset): it may be below one readers saw before. */
  readonly highWatermarkCurrent: boolean;
  /** A leader's: whether this node holds its cluster lease now (a clock comparison; no allocation). Absent: not a leader's gate. */
  holdsLease?(): boolean;
  /**
   * Why writes are refused now, or null. `leaderOnly`: a write acknowledged
   * once this node has it (Kafka's acks=1 and 0), which too few in-sync
   * replicas do not refuse (TooFewReplicasError), only a lost lease.
   */
  refusal(leaderOnly: boolean): ApiError | null;
  /** Writes up to `lastSeq` are durable here: ships them, and calls `done` once every in-sync replica has them (an error if this leadership ends first). */
  replicate(lastSeq: number, done: (err: ApiError | null) => void): void;
  /**
   * Sequences removed inside the partition's log (deletes, retention,
   * per-subject limits), once applied here: followers remove them too.
   * `cause`: for the limits' evictions, the log's last sequence then (the
   * records that made them), which a follower gets first.
   */
  removed(seqs: ArrayLike<number>, cause?: number): void;
  /** The limits took the log's front from `lowest` on because of the records up to `cause`. */
  frontMoved(lowest: number, cause: number): void;
  /** Removals applied here that cannot be listed (a purge by subject or `keep`): followers compare their logs with the leader's. */
  removedUnlisted(): void;
  /** A purge from the front applied here (it ships as the log's first sequence): only so that it can be waited for. */
  removedBelow(): void;
  /** Calls `done` once every in-sync replica has applied every removal told so far. */
  removalsReplicated(done: (err: ApiError | null) => void): void;
  /** Writes up to `lastSeq` are durable here: ships them, waiting for no one (a write acknowledged by the leader alone); an error when this node may not acknowledge it (no lease, no longer leading). */
  ship(lastSeq: number): ApiError | null;
  /** Which leader epoch wrote which sequences (the leader's checkpoint), where this node leads; absent: not known here. */
  readonly epochEntries?: readonly EpochEntry[];
}

/**
 * How a door's write to a replicated partition is acknowledged: once every
 * in-sync replica has it ("all", what JetStream always does), or once this
 * node has it ("leader": Kafka's acks=1, which a failover may lose).
 */
export type ReplicaAck = "all" | "leader";

/** The storage engine's retention limits for a stream configuration. */
export function limitsOf(c: StreamConfig): Limits {
  const pos = (v: number): number => (v > 0 ? v : 0);
  return {
    maxMsgs: pos(c.max_msgs),
    maxBytes: pos(c.max_bytes),
    maxAgeMs: c.max_age > 0 ? Math.max(1, Math.floor(c.max_age / NS_PER_MS)) : 0,
    maxMsgsPerSubject: pos(c.max_msgs_per_subject),
    discard: c.discard,
    discardNewPerSubject: c.discard_new_per_subject === true,
  };
}

/** What stream info may add to a stream's state. */
export interface StateOptions {
  subjectsFilter?: string;
  deletedDetails?: boolean;
}

/**
 * An expected-sequence header as nats-server reads it: empty is none; only
 * decimal digits are a number (its parseInt64); anything else (`0x0`,
 * `1e3`, ` 5`) matches no sequence.
 */
function expectedSequence(v: string | undefined): number | undefined {
  if (v === undefined || v === "") return undefined;
  return /^[0-9]{1,19}$/.test(v) ? Number(v) : NaN;
}

export class Stream {
  readonly consumers = new Map<string, Consumer>();
  /** Appends handed to the log and not yet acknowledged by it (with several partitions: until their stream sequence is durable). */
  private inflight = 0;
  /**
   * With several partitions: a publish with an expectation (or rollup) is
   * in flight, and everything else waits behind it, so that no record can
   * take a stream sequence between the one it checked and its own.
   */
  private holding = false;
  /** Publishes (and door appends behind them) waiting for the ones in flight, to keep expectations exact and order intact. */
  private readonly queue: Array<Queued | QueuedAppend> = [];
  private readonly dedup = new Map<string, DedupEntry>();
  /** Message ids whose append is in flight, with the duplicates waiting for its outcome. */
  private readonly dedupInflight = new Map<string, PublishDone[]>();
  /**
   * Nats-Expected-Last-Msg-Id compares with the id of the last message stored ("" if it had none), as nats-server's
   * `lmsgId`: `lastMsgId` is that of the message at `lastMsgIdSeq`, and holds only while that is still the stream's
   * last sequence (a door's append stored after it has no id). A deletion of the last message leaves it, as there.
   */
  private lastMsgId = "";
  private lastMsgIdSeq = 0;
  /** Deletes decided by work-queue or interest retention still under way (see removing()). */
  private retentionDeletes = 0;
  /** Consumer creates and updates under way (jetstream.ts): a freeze for a move waits for them, or the consumers it takes would change after. */
  consumerChanges = 0;
  deleted = false;
  /**
   * In a cluster, for a stream whose partitions are led by several nodes (a
   * Kafka topic): which partitions this node leads. Every hosting node
   * captures the stream's subjects; each stores only what its partitions
   * get. null: this node leads them all.
   */
  ledHere: readonly boolean[] | null = null;
  /** In a cluster, the node leading each partition, as this node last settled the placement (null: not placed, or a single node). */
  leaderNodes: readonly string[] | null = null;
  /**
   * Frozen for a move to another node (stream-move.ts): every change is
   * refused, retryably, until the move flips the placement or is cancelled,
   * so that the copy the target takes is final.
   */
  frozen = false;
  /**
   * Partitions frozen for a move of one partition (a Kafka topic spread
   * over nodes): appends to them are refused as to a frozen stream, the
   * others keep working. See partitionFrozen.
   */
  private readonly frozenParts = new Set<number>();
  /**
   * Per partition, how many times a move made this node its leader (its
   * log copied in from another node) since the stream was opened: a door
   * keeping per-partition state in memory (Kafka's idempotent producers)
   * knows that state is stale, or missing, when this changed.
   */
  readonly arrivals: number[] = [];
  /**
   * This copy is one side of a move: the leader's once the target has been
   * told its final state, or the target's until the move flips. Such a copy
   * is deleted when the placement stops naming this node; any other is set
   * aside (kept on disk).
   */
  movedOut = false;
  /** This copy follows a replicated stream's leader (stream-replicas.ts): deleted, not set aside, when the placement drops it. */
  followerCopy = false;
  /**
   * In a cluster: the creation time of the placement this copy was made
   * for (or adopted into), which tells it apart from a stream deleted and
   * made again under its name while this node was away; undefined: made
   * before clustering (or by an older version), not yet recorded.
   */
  placed: string | undefined = undefined;
  /**
   * In a cluster (cluster-streams.ts): whether this node may take writes for the copy's partitions that no replica gate
   * guards (a stream of one replica) now: it holds its lease, and the placement the copy was made for has not gone. A
   * stream whose nodes are not live may be deleted by any node (placement.ts, remove), and made again elsewhere: a node
   * paused past its lease, resumed, acknowledged a publish on its deleted copy before it noticed. null: no cluster.
   */
  leaseHeld: (() => boolean) | null = null;
  /** Set at once when the placement this copy was made for is removed or replaced (before the settle that deletes it). */
  unplaced = false;
  /**
   * On a follower of a replicated stream: the leader's consumers as last
   * copied (stream-replicas.ts), which it takes over if it becomes leader;
   * null: none copied.
   */
  replicaConsumers: readonly ConsumerCopy[] | null = null;
  /**
   * On the leader of a replicated stream: holds a confirmed ack's reply
   * until the in-sync followers have copied the consumers with it
   * (consumer-copies.ts); false: not confirmed. null: replied at once.
   */
  consumerCopyGate: ConsumerCopyGate | null = null;

  /**
   * Whether its partition 0 was replicated on this node when it was opened
   * (its leader-epoch checkpoint is there): its placement may still replicate
   * it whatever its stored `num_replicas` says (a Kafka topic's says 1).
   */
  replicatedBefore = false;

  /**
   * In a cluster, whether this copy's consumers may not deliver now: this node does not lead the replicated stream's
   * partition 0 (a follower's copy, or one not yet placed: the leader runs the consumers, and this copy's pending
   * deliveries are acked there, never here), or leads it without its lease (another node may lead by now). Without
   * this a leader paused past its lease and resumed as a follower redelivered its pending messages for ever.
   */
  consumersHeld(): boolean {
    const gate = this.consumerCopyGate;
    if (gate === null) return false;
    if (gate === REFUSE_CONSUMER_COPIES) return true;
    const leader = this.replicaGates[0];
    return leader?.holdsLease !== undefined && !leader.holdsLease();
  }

  /**
   * Resolves once the in-sync followers hold a copy of the consumers as
   * they are now (at once unreplicated); refused, or the leadership ended
   * first, it throws. `gate`: the stream's as it was when the change was
   * made (read before any await: a leadership that ends meanwhile must not
   * turn into "unreplicated").
   */
  consumersReplicated(gate: ConsumerCopyGate | null): Promise<void> {
    if (gate === null) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const refused = (): void => reject(Errors.clusterNotAvailable());
      if (!gate(resolve, refused)) refused();
    });
  }
  /** Told of every stored message (partition, sequence): what a waiting reader such as a Kafka fetch listens for. */
  readonly appendListeners = new Set<(partition: number, seq: number) => void>();
  /** How often appendListeners were told: a reader that looked before and counts more now knows it may have missed news. */
  readerWakes = 0;
  /** What NATS readers may see: the door's rules, capped at replication's high watermark; null: everything (visibility.ts). */
  visibility: Visibility | null = null;
  /** The rules a door installed (Kafka transactions), before the replication cap. */
  private doorVisibility: Visibility | null = null;
  /**
   * Per partition this node leads with replicas (stream-replicas.ts): what
   * its writes wait for before they are acknowledged, and what readers may
   * see. Empty for a stream that is not replicated.
   */
  private readonly replicaGates: Array<ReplicaGate | undefined> = [];
  /** With several partitions: the stream sequence JetStream readers address (stream-order.ts); null with one. */
  order: StreamOrder | null = null;
  private merged: MergedLog | null = null;
  /** `subject_transform`: applied to a published subject before anything else. */
  private inputTransform: SubjectTransform | null = null;
  /** `republish`: which stored subjects go out again, and where. */
  private republish: SubjectTransform | null = null;
  republishTo: Republisher | null = null;
  /**
   * For republish's Nats-Last-Sequence: per subject with appends in flight,
   * how many and the last sequence stored so far. An append learns the
   * subject's previous sequence from the log when it is processed, unless an
   * earlier append of the same subject, still in flight then, stores later.
   */
  private readonly inflightSubjects = new Map<string, { count: number; last: number }>();
  /** Emits "drain" once the ingest backlog, after passing the soft mark, is back under half of it. */
  readonly ingestDrain = new EventEmitter().setMaxListeners(0);
  private overSoft = false;
  private queuedBytes = 0;
  /** Publishes refused because the ingest backlog was full. */
  ingestRefused = 0;
  /** The account's storage bound, when it has one (set by JetStream). */
  quota: StorageQuota | null = null;

  constructor(
    public config: StreamConfig,
    readonly created: Date,
    /** Partition logs; a JetStream stream has exactly one. Only grows (addPartitions). */
    readonly partitions: MessageLog[],
    readonly dir: string | null,
    /** Largest message the server accepts at all (max_payload). */
    readonly maxPayload: number,
  ) {
    this.compileTransforms();
  }

  private compileTransforms(): void {
    const t = this.config.subject_transform;
    this.inputTransform = t !== undefined && t.dest !== "" ? SubjectTransform.parse(t.src, t.dest) : null;
    const r = this.config.republish;
    this.republish = r !== undefined ? SubjectTransform.parse(r.src, r.dest) : null;
  }

  /** What JetStream readers read: partition 0, or with several partitions all of them in stream order. */
  get log(): ReaderLog {
    return this.merged ?? this.partitions[0];
  }

  /** Serves JetStream readers through `order` from now on (a stream with several partitions). */
  useOrder(order: StreamOrder): void {
    this.order = order;
    this.merged = order.view();
    this.visibilityChanged();
  }

  /** The order made more stream sequences durable: consumers count and read on. */
  orderAdvanced(): void {
    for (const c of this.consumers.values()) c.recount();
    // A publish with an expectation may have waited for these.
    this.drainQueue();
  }

  /** The last sequence the log had when dedup.json was written (a clean close), as recover() found it; 0 if unknown. */
  savedLastSeq = 0;

  /**
   * Rebuilds what publishing needs from the stored tail: de-duplication ids within the window, the last id and time.
   * `logOnly`: from the log itself, not the cache `saveDedup` wrote (a replica's log may have been truncated and
   * refilled to the same last sequence since).
   */
  async recover(o: { logOnly?: boolean; keepRemoved?: boolean } = {}): Promise<void> {
    // `keepRemoved`: the ids remembered of messages removed since (acked off a work queue, evicted) stay, as they
    // would on the leader that stored them; what a truncation took was forgotten then (`forgetFrom`).
    const before = o.keepRemoved === true ? [...this.dedup] : [];
    const last = o.keepRemoved === true ? { id: this.lastMsgId, seq: this.lastMsgIdSeq } : null;
    // What was remembered before goes: a log truncated since (a replica following another leader) no longer has it.
    this.dedup.clear();
    this.lastMsgId = "";
    this.lastMsgIdSeq = 0;
    await this.rebuildDedup(o.logOnly === true);
    if (before.length > 0) this.keepRemovedIds(before);
    if (this.lastMsgIdSeq !== this.log.state().lastSeq) await this.readLastMsgId(last);
  }

  /**
   * The id of the stream's last message, read from the log (outside the
   * de-duplication window too: a restart must not change what an
   * expectation compares with). A last message removed since it was stored
   * has none ("" as on nats-server after a restart), unless `kept` (a
   * replica's leader-to-be) remembers the id it copied at that sequence.
   */
  private async readLastMsgId(kept: { id: string; seq: number } | null): Promise<void> {
    const lastSeq = this.log.state().lastSeq;
    this.lastMsgIdSeq = lastSeq;
    this.lastMsgId = kept !== null && kept.seq === lastSeq ? kept.id : "";
    if (lastSeq === 0) return;
    const [m] = await this.log.scan(lastSeq, { maxMessages: 1 });
    if (m !== undefined && m.seq === lastSeq) this.lastMsgId = msgIdOf(m.headers) ?? "";
  }

  private async rebuildDedup(logOnly: boolean): Promise<void> {
    // Ids are remembered with the sequences PubAcks named: the stream's (with several partitions, every partition in stream order).
    const log = this.log;
    const st = log.state();
    const saved = logOnly ? null : await this.readSavedDedup();
    this.savedLastSeq = saved !== null && Number.isSafeInteger(saved.lastSeq) ? saved.lastSeq : 0;
    if (st.messages === 0) return;
    const windowMs = this.config.duplicate_window / NS_PER_MS;
    if (saved !== null && this.useSavedDedup(saved, st.lastSeq, Date.now() - windowMs)) return;
    const from = await log.firstAtOrAfter(Date.now() - windowMs);
    if (from === null) return;
    for (let seq = from.seq; seq <= st.lastSeq; ) {
      const batch = await log.scan(seq, { maxMessages: 1024 });
      if (batch.length === 0) break;
      for (const m of batch) {
        const id = msgIdOf(m.headers);
        if (id !== undefined) this.dedup.set(id, { seq: m.seq, time: m.time });
        this.lastMsgId = id ?? "";
        this.lastMsgIdSeq = m.seq;
      }
      seq = batch[batch.length - 1].seq + 1;
    }
  }

  /**
   * Adds to the ids rebuilt from the log those remembered before (`before`,
   * oldest first) of messages no longer in it, within the window, keeping
   * the map oldest first (remember() drops expired ids from its front).
   */
  private keepRemovedIds(before: Array<[string, DedupEntry]>): void {
    const cutoff = Date.now() - this.config.duplicate_window / NS_PER_MS;
    const log = this.log;
    const lastSeq = log.state().lastSeq;
    // Only ids whose sequences are empty now: one that holds a message holds another's (its own would be rebuilt).
    const removed = before.filter(([id, e]) => e.time >= cutoff && e.seq <= lastSeq && !this.dedup.has(id) && !log.has(e.seq));
    if (removed.length === 0) return;
    const rebuilt = [...this.dedup];
    this.dedup.clear();
    let i = 0;
    for (const [id, e] of rebuilt) {
      while (i < removed.length && removed[i][1].time <= e.time) this.dedup.set(removed[i][0], removed[i++][1]);
      this.dedup.set(id, e);
    }
    for (; i < removed.length; i++) this.dedup.set(removed[i][0], removed[i][1]);
  }

  /**
   * A follower's copied messages (one partition): their ids remembered as
   * their leader remembered them, at their stored times, so that a message
   * removed later (acked off a work queue, evicted) is still a duplicate
   * within the window once this copy leads, as on nats-server's replicas.
   */
  rememberCopies(items: readonly StoredItem[]): void {
    let any = false;
    for (const m of items) {
      if (isForeign(m)) continue;
      const id = msgIdOf(m.headers);
      // The last id as the leader has it: that of the last message copied, "" for one without.
      this.lastMsgId = id ?? "";
      this.lastMsgIdSeq = m.seq;
      if (id === undefined || id === "") continue;
      this.dedup.delete(id);
      this.dedup.set(id, { seq: m.seq, time: m.time });
      any = true;
    }
    if (any) this.dropExpiredIds(Date.now());
  }

  /** A follower's log is cut from `seq` on (it follows another leader; 0: nothing is known to be shared): the ids of what goes are forgotten. */
  forgetFrom(seq: number): void {
    for (const [id, e] of this.dedup) if (e.seq >= seq) this.dedup.delete(id);
    // The last message's id is read from the log again when this copy leads (recover).
    if (this.lastMsgIdSeq >= seq) {
      this.lastMsgId = "";
      this.lastMsgIdSeq = 0;
    }
  }

  /**
   * Keeps what recover() rebuilds (the ids inside the window; the last
   * message's id is read from the log, whose last message may be gone), so that a clean restart need not read the window's messages back. It is
   * a cache: written without a sync, used only if the log's last sequence
   * is still the one it was written at (no append since), else ignored.
   */
  async saveDedup(): Promise<void> {
    if (this.dir === null) return;
    const cutoff = Date.now() - this.config.duplicate_window / NS_PER_MS;
    const entries: Array<[string, number, number]> = [];
    for (const [id, e] of this.dedup) if (e.time >= cutoff) entries.push([id, e.seq, e.time]);
    const path = join(this.dir, DEDUP_FILE);
    // Checksummed: what it says decides duplicates and where the log's tail was, so a changed copy must not be taken.
    await writeFile(`${path}.tmp`, stateFileText({ lastSeq: this.log.state().lastSeq, lastMsgId: this.lastMsgId, entries }));
    await rename(`${path}.tmp`, path);
  }

  /** Removes what saveDedup wrote (durably): the log it was saved for is about to change other than by appends. */
  async dropSavedDedup(): Promise<void> {
    if (this.dir !== null) await removeFileDurably(join(this.dir, DEDUP_FILE));
  }

  /** What saveDedup last wrote (at a clean close), null if none or torn by a crash. */
  private async readSavedDedup(): Promise<SavedDedup | null> {
    if (this.dir === null) return null;
    try {
      const saved = parseStateFile(await readFile(join(this.dir, DEDUP_FILE), "utf8")) as SavedDedup;
      return typeof saved === "object" && saved !== null ? saved : null;
    } catch {
      return null; // none, torn by a crash (written without a sync) or damaged: read the window back instead
    }
  }

  /** Takes the saved ids if the log is still where they were saved (no append since). */
  private useSavedDedup(saved: SavedDedup, lastSeq: number, cutoff: number): boolean {
    if (saved.lastSeq !== lastSeq || !Array.isArray(saved.entries)) return false;
    for (const [id, seq, time] of saved.entries) if (time >= cutoff) this.dedup.set(id, { seq, time });
    return true;
  }

  captures(subject: string): boolean {
    for (const s of this.config.subjects) if (subjectMatches(s, subject)) return true;
    return false;
  }

  limits(): Limits {
    return limitsOf(this.config);
  }

  updateConfig(next: StreamConfig): void {
    this.config = next;
    this.compileTransforms();
    this.applyLimits();
  }

  /** Sets the configuration's limits on the partitions led here. A partition another node leads keeps its limits off: its removals are its leader's (a follower, a move's target). */
  applyLimits(): void {
    const limits = this.limits();
    for (let p = 0; p < this.partitions.length; p++) if (this.ledHere === null || this.ledHere[p] === true) this.partitions[p].setLimits(limits);
  }

  /** The subject a publish on `subject` is stored under (the stream's `subject_transform` applied). */
  storedSubject(subject: string): string {
    return this.inputTransform === null ? subject : (this.inputTransform.match(subject) ?? subject);
  }

  /**
   * Stores one message. `headers` and `data` must be owned by the caller's
   * copy (they are kept until the log has them).
   */
  publish(subject: string, headers: Buffer | null, data: Buffer, done: PublishDone): void {
    if (this.deleted) return done(Errors.streamNotFound(), 0, false);
    if (this.frozen) return done(Errors.streamMoving(), 0, false);
    subject = this.storedSubject(subject);
    if (this.config.sealed) return done(Errors.sealed(), 0, false);
    const size = (headers?.length ?? 0) + data.length;
    // The stream's max_msg_size is checked in process(), after the headers' checks, as nats-server orders them.
    if (size > this.maxPayload) return done(Errors.messageTooBig(), 0, false);
    const full = this.ingestRefusal();
    if (full !== null) return done(full, 0, false);
    const parsed = headers !== null && headers.length > 0 ? parseHeaders(headers, 0, headers.length) : null;
    const orderSensitive = parsed !== null && ORDER_SENSITIVE.some((h) => parsed.has(h));
    const item: Queued = { subject, lastOfSubject: 0, headers, parsed, orderSensitive, data, done };
    if (this.queue.length > 0 || this.holding || (orderSensitive && this.busy())) {
      this.queue.push(item);
      this.queuedBytes += size;
      return;
    }
    this.process(item);
  }

  /** No publish, append or retention delete is queued or on its way to a log: what a frozen stream waits for before its last copy. */
  quiet(): boolean {
    return this.inflight === 0 && this.queue.length === 0 && this.retentionDeletes === 0;
  }

  /** Whether appends to `partition` are refused for a move (the stream's, or this partition's). */
  partitionFrozen(partition: number): boolean {
    return this.frozen || (this.frozenParts.size > 0 && this.frozenParts.has(partition));
  }

  /**
   * Whether a partition this node leads is frozen on its own for its move
   * (a stream of several partitions; one of one freezes whole, `frozen`):
   * a move under way from here, not one that flipped away, whose partition
   * stays frozen here unled.
   */
  movingOut(): boolean {
    for (const p of this.frozenParts) if (this.ledHere === null || this.ledHere[p] === true) return true;
    return false;
  }

  /** Freezes one partition for its move, or lets it take appends again. */
  freezePartition(partition: number, frozen: boolean): void {
    if (frozen) this.frozenParts.add(partition);
    else this.frozenParts.delete(partition);
  }

  /**
   * Nothing is on its way to `partition`'s log: its log has no append in
   * flight and nothing queued could still reach it (a door's append queued
   * for it, or any publish, which chooses its partition when processed).
   * What a frozen partition waits for before its last copy; unlike quiet(),
   * it holds while other partitions keep taking appends.
   */
  partitionQuiet(partition: number): boolean {
    // An append issued to a log is stored or in its backlog: stored ones are final, so the backlog is what to wait for.
    if (this.partitions[partition].backlogMessages > 0) return false;
    for (const q of this.queue) if (q.direct !== true || q.partition === partition) return false;
    return true;
  }

  /** What the stream holds against its account: stored, on its way to the logs, and queued. */
  get heldBytes(): number {
    let bytes = this.queuedBytes;
    for (let i = 0; i < this.partitions.length; i++) bytes += this.partitions[i].storedBytes + this.partitions[i].backlogBytes;
    return bytes;
  }

  /** Messages and bytes waiting to be stored, over every partition and the publish queue. */
  private backlogOver(limit: { messages: number; bytes: number }): boolean {
    let messages = this.queue.length;
    let bytes = this.queuedBytes;
    for (let i = 0; i < this.partitions.length; i++) {
      messages += this.partitions[i].backlogMessages;
      bytes += this.partitions[i].backlogBytes;
    }
    return messages >= limit.messages || bytes >= limit.bytes;
  }

  /** The error a publish or append gets when the backlog is at the hard mark, or null. */
  private ingestRefusal(): ApiError | null {
    if (!this.backlogOver(INGEST_MAX)) return null;
    this.ingestRefused++;
    return Errors.storeFailed(`stream ${this.config.name} is too busy: its write backlog is full, slow down`);
  }

  /**
   * Past the soft mark: the caller pauses whoever publishes until
   * `ingestDrain` emits "drain".
   */
  ingestBusy(): boolean {
    if (!this.overSoft && this.backlogOver(INGEST_SOFT)) this.overSoft = true;
    return this.overSoft;
  }

  private checkDrain(): void {
    if (!this.overSoft || this.backlogOver({ messages: INGEST_SOFT.messages / 2, bytes: INGEST_SOFT.bytes / 2 })) return;
    this.overSoft = false;
    this.ingestDrain.emit("drain");
  }

  private process(p: Queued): void {
    const h = p.parsed;
    let msgId: string | undefined;
    let rollup: string | undefined;
    if (h !== null) {
      // nats-server's order: the expected stream, then the de-duplication id, then the
      // other expectations, so that a retried publish whose first attempt was stored
      // gets its duplicate PubAck even though its expectations no longer hold.
      const stream = header(h, "Nats-Expected-Stream");
      if (stream !== undefined && stream !== this.config.name) return p.done(Errors.expectedStream(), 0, false);
      msgId = header(h, "Nats-Msg-Id");
      if (msgId === "") msgId = undefined;
      if (msgId !== undefined) {
        const seen = this.dedup.get(msgId);
        if (seen !== undefined && seen.time >= Date.now() - this.config.duplicate_window / NS_PER_MS) {
          // Remembered once stored, before its replicas have it: a retry is acknowledged only as the first would be
          // (on every in-sync replica, under the lease), else a write a failover truncates would be acknowledged.
          if (this.replicaGates.length === 0 || this.partitions.length !== 1) {
            // Unreplicated in a cluster: a duplicate is acknowledged under the lease only, as the first was (the stream
            // may be deleted and made again elsewhere past it).
            if (this.replicaGates.length === 0 && this.leaseHeld !== null && !this.leaseHeld()) return p.done(new OutcomeUnknownError("this node lost its cluster lease"), 0, false);
            return p.done(null, seen.seq, true);
          }
          const seq = seen.seq;
          if (seq <= this.log.state().lastSeq) return this.whenReplicated(0, seq, (err) => (err === null ? p.done(null, seq, true) : p.done(err, 0, false)));
          // Beyond the log: remembered before a truncation took it away; the write is new again.
          this.dedup.delete(msgId);
        }
        const waiting = this.dedupInflight.get(msgId);
        if (waiting !== undefined) {
          waiting.push(p.done);
          return;
        }
        this.dedupInflight.set(msgId, []);
      }
      const err = this.checkExpectations(p.subject, h);
      if (err !== null) return this.fail(p, msgId, err);
      rollup = header(h, "Nats-Rollup");
      if (rollup !== undefined) {
        if (!this.config.allow_rollup_hdrs) return this.fail(p, msgId, Errors.rollupFailed("rollup not permitted"));
        // Quoted as nats-server's %q quotes it (2.10 on; 2.9.10 does not answer).
        if (rollup !== "sub" && rollup !== "all") return this.fail(p, msgId, Errors.rollupFailed(`rollup value invalid: ${JSON.stringify(rollup)}`));
      }
      if (h.has("Nats-TTL") && !this.config.allow_msg_ttl) return this.fail(p, msgId, Errors.ttlDisabled());
    }
    // After de-duplication and the expectations, as nats-server: a KV create of an existing key is "wrong last sequence"
    // (which clients act on) even when its revision header takes it past the limit.
    const max = this.config.max_msg_size;
    if (max > 0 && (p.headers?.length ?? 0) + p.data.length > max) return this.fail(p, msgId, Errors.messageTooBig());
    // A keyed message keeps its key beside the headers and, in a partitioned stream, goes where Kafka's partitioner puts the key.
    let headers = p.headers;
    let key: Buffer | null = null;
    let partition = 0;
    const keyText = header(h, KEY_HEADER);
    if (keyText !== undefined && headers !== null) {
      key = Buffer.from(keyText, "utf8");
      headers = withoutHeader(headers, KEY_HEADER);
      if (this.partitions.length > 1) partition = partitionForKey(key, this.partitions.length);
    }
    if (this.frozenParts.size > 0 && this.frozenParts.has(partition)) return this.fail(p, msgId, Errors.streamMoving());
    if (this.replicaGates.length > 0 || this.leaseHeld !== null) {
      const refused = this.replicaRefusal(partition, false);
      if (refused !== null) return this.fail(p, msgId, refused);
    }
    const log = this.partitions[partition];
    if (this.quota !== null) {
      // After de-duplication and expectations, as nats-server checks it (once the message is stored).
      const over = this.quota.refusal(this.config.storage, RECORD_HEADER + Buffer.byteLength(p.subject) + (key?.length ?? 0) + (headers?.length ?? 0) + p.data.length);
      if (over !== null) return this.fail(p, msgId, over);
    }
    const republish = this.republish !== null && partition === 0 && this.republish.match(p.subject) !== null;
    if (republish) this.trackSubject(p);
    this.inflight++;
    if (this.order !== null && p.orderSensitive) this.holding = true;
    log.append({ subject: p.subject, data: p.data, headers, key }, (err, seq) => {
      this.checkDrain();
      if (republish) this.republished(p, err === null ? seq : 0);
      if (err === null && this.order !== null) return this.storedInOrder(p, msgId, rollup, partition, seq);
      this.inflight--;
      this.holding = false;
      if (err !== null) {
        // Limit refusals (discard new) and storage failures alike: JetStream's "store failed" with the reason.
        this.fail(p, msgId, storeFailure(err));
      } else {
        if (msgId !== undefined) this.remember(msgId, seq);
        this.storedLast(msgId, seq);
        if (rollup !== undefined) {
          const purge = rollup === "all" ? { upTo: seq } : { filter: p.subject, upTo: seq };
          // A rollup is a purge for consumers too: one of the whole stream moves them past what it removed.
          this.purge(purge).then(
            () => this.stored(p, msgId, partition, seq),
            (e: Error) => this.fail(p, msgId, Errors.rollupFailed(e.message)),
          );
        } else {
          this.stored(p, msgId, partition, seq);
        }
      }
      this.drainQueue();
    });
  }

  /**
   * A publish stored in a partition of a stream with several partitions:
   * its PubAck, de-duplication entry and rollup speak the stream sequence,
   * so they wait until the run holding it is durable in the order (a crash
   * cannot renumber it then). It stays in flight until then.
   */
  private storedInOrder(p: Queued, msgId: string | undefined, rollup: string | undefined, partition: number, seq: number): void {
    const order = this.order!;
    const finish = (err: ApiError | null, streamSeq: number): void => {
      this.inflight--;
      this.holding = false;
      if (err !== null) this.fail(p, msgId, err);
      else this.acknowledge(p, msgId, streamSeq);
      this.drainQueue();
    };
    this.afterStore(partition, p.subject, seq, () =>
      this.whenReplicated(partition, seq, (replicaErr) => {
        if (replicaErr !== null) return finish(replicaErr, 0);
        order.whenNumbered(partition, seq, (err, streamSeq) => {
        if (err !== null) return finish(Errors.storeFailed(err.message), 0);
        if (msgId !== undefined) this.remember(msgId, streamSeq);
        this.storedLast(msgId, streamSeq);
        if (rollup === undefined) return finish(null, streamSeq);
        const purge = rollup === "all" ? { upTo: streamSeq } : { filter: p.subject, upTo: streamSeq };
        this.purge(purge).then(
          () => finish(null, streamSeq),
          (e: Error) => finish(Errors.rollupFailed(e.message), 0),
        );
        });
      }),
    );
  }

  /**
   * Whether a publish that depends on the state left by earlier ones must
   * wait: appends in flight, or (several partitions) stored records whose
   * stream sequences are not durable yet (the order says when they are:
   * orderAdvanced).
   */
  private busy(): boolean {
    return this.inflight > 0 || (this.order !== null && !this.order.settle());
  }

  /** Notes a republished subject's append going in flight, and its previous sequence as the log knows it now. */
  private trackSubject(p: Queued): void {
    p.lastOfSubject = this.partitions[0].lastSeqOf(p.subject);
    const t = this.inflightSubjects.get(p.subject);
    if (t === undefined) this.inflightSubjects.set(p.subject, { count: 1, last: 0 });
    else t.count++;
  }

  /**
   * Publishes a stored message again (seq > 0), as nats-server does before
   * the PubAck: to the republish destination, with the original headers plus
   * Nats-Stream, Nats-Subject, Nats-Sequence, Nats-Time-Stamp and
   * Nats-Last-Sequence (and Nats-Msg-Size instead of the payload when
   * headers_only). Appends complete in order, so the previous sequence of
   * the subject is either what the log had when this one was processed or
   * what an earlier in-flight append stored since.
   */
  private republished(p: Queued, seq: number): void {
    const t = this.inflightSubjects.get(p.subject)!;
    const previous = Math.max(p.lastOfSubject, t.last);
    if (seq > 0) t.last = seq;
    if (--t.count === 0) this.inflightSubjects.delete(p.subject);
    if (seq === 0 || this.republishTo === null) return;
    const to = this.republish!.match(p.subject);
    if (to === null) return;
    const headersOnly = this.config.republish?.headers_only === true;
    const pairs: Array<[string, string]> = [
      ["Nats-Stream", this.config.name],
      ["Nats-Subject", p.subject],
      ["Nats-Sequence", String(seq)],
      ["Nats-Time-Stamp", new Date().toISOString()],
      ["Nats-Last-Sequence", String(previous)],
    ];
    if (headersOnly) pairs.push(["Nats-Msg-Size", String(p.data.length)]);
    this.republishTo(to, appendHeaders(p.headers, pairs), headersOnly ? Buffer.alloc(0) : p.data);
  }

  private stored(p: Queued, msgId: string | undefined, partition: number, seq: number): void {
    // Unreplicated outside a cluster: nothing to wait for. In a cluster the lease is asked again once stored (whenReplicated):
    // a store held up (a stalled disk, a paused process) past the lease and its grace may end after the stream was deleted.
    if (this.replicaGates.length === 0 && this.leaseHeld === null) return this.afterStore(partition, p.subject, seq, () => this.acknowledge(p, msgId, seq));
    this.afterStore(partition, p.subject, seq, () => this.whenReplicated(partition, seq, (err) => (err === null ? this.acknowledge(p, msgId, seq) : this.fail(p, msgId, err))));
  }

  /** Tells consumers and listeners of a stored message, applies interest retention, then `ack`s. */
  private afterStore(partition: number, subject: string, seq: number, ack: () => void): void {
    let interested = false;
    if (this.order !== null) {
      // Consumers hear of it once its stream sequence is durable (orderAdvanced); interest is by subject.
      for (const c of this.consumers.values()) if (c.wants(subject)) interested = true;
      this.order.landed();
    } else if (partition === 0) {
      for (const c of this.consumers.values()) {
        if (c.wants(subject)) {
          interested = true;
          c.onStored(seq);
        }
      }
    }
    this.readerWakes++;
    for (const l of this.appendListeners) l(partition, seq);
    // Interest retention keeps a message only while some consumer still has to see it.
    if (this.config.retention === "interest" && !interested) {
      this.deleteIn(partition, seq).then(ack, ack);
      return;
    }
    ack();
  }

  /**
   * Stores one message in a given partition, with no JetStream publish
   * semantics (no de-duplication, expectations or rollups): the path of doors
   * that choose partitions themselves, such as Kafka's produce. `done` runs
   * once the message is durable.
   */
  append(partition: number, input: AppendInput, done: (err: ApiError | null, seq: number) => void): void {
    if (this.deleted) return done(Errors.streamNotFound(), 0);
    if (this.partitionFrozen(partition)) return done(Errors.streamMoving(), 0);
    if (this.config.sealed) return done(Errors.sealed(), 0);
    const refused = this.replicaRefusal(partition, false);
    if (refused !== null) return done(refused, 0);
    const log = this.partitions[partition];
    if (log === undefined) return done(Errors.storeFailed(`no partition ${partition}`), 0);
    const size = (input.headers?.length ?? 0) + input.data.length;
    const max = this.config.max_msg_size;
    if ((max > 0 && size > max) || size > this.maxPayload) return done(Errors.messageTooBig(), 0);
    if (this.quota !== null) {
      const over = this.quota.refusal(this.config.storage, recordSize(input));
      if (over !== null) return done(over, 0);
    }
    const full = this.ingestRefusal();
    if (full !== null) return done(full, 0);
    const go = (inp: AppendInput) => (): void => {
      this.inflight++;
      log.append(inp, (err, seq) => {
        this.inflight--;
        this.checkDrain();
        if (err !== null) done(storeFailure(err), 0);
        else {
          this.afterStore(partition, inp.subject, seq, () => this.whenReplicated(partition, seq, (e) => done(e, e === null ? seq : 0)));
        }
        this.drainQueue();
      });
    };
    const copied = (): AppendInput => ({
      subject: input.subject,
      data: Buffer.from(input.data),
      headers: input.headers ? Buffer.from(input.headers) : null,
      key: input.key ? Buffer.from(input.key) : null,
    });
    this.orderedAppend(partition, size, () => go(copied()), go(input));
  }

  /**
   * Stores messages at consecutive sequences of one partition, as append
   * does, with one callback: the first sequence once all are durable.
   */
  appendMany(partition: number, run: RecordRun, done: (err: ApiError | null, firstSeq: number) => void, ack: ReplicaAck = "all"): void {
    let largest = 0;
    for (let i = 0; i < run.count; i++) largest = Math.max(largest, payloadSizeAt(run, i));
    this.doorAppend(partition, largest, run.count, run.subject, run.subjects, run.source.length, ack, done, (log) => {
      // Only the subjects outlive the append: the run's bytes (a client's request) can go once it is issued.
      return {
        copy: () => {
          const copied = { ...run, source: Buffer.from(run.source) };
          return (cb) => log.appendMany(copied, cb);
        },
        go: (cb) => log.appendMany(run, cb),
      };
    });
  }

  /**
   * Appends a door's batch whole, in its own record format (a Kafka
   * RecordBatch as produced): one stored batch, as appendMany otherwise.
   * `largestPayload` is the largest record's payload plus headers, which the
   * door read while it checked the batch. The batch's bytes are the door's
   * until `done` (see MessageLog.appendBatch), so even a queued append need
   * not copy them. `ack`: see ReplicaAck.
   */
  appendBatch(partition: number, batch: ForeignBatch, largestPayload: number, done: (err: ApiError | null, firstSeq: number) => void, ack: ReplicaAck = "all"): void {
    this.doorAppend(partition, largestPayload, batch.count, batch.subject, null, batch.bytes.length, ack, done, (log) => {
      const go = (cb: (err: Error | null, first: number) => void): void => log.appendBatch(batch, cb);
      return { copy: () => go, go };
    });
  }

  /**
   * A door's append of `count` records: checked, ordered behind queued
   * publishes, issued, and told to consumers once stored. `done` gets the
   * first sequence whenever the records were stored here, with the error
   * of a replication that failed after it too; 0 when they were not stored.
   */
  private doorAppend(
    partition: number,
    largestPayload: number,
    count: number,
    subject: string,
    subjects: readonly string[] | null,
    bytes: number,
    ack: ReplicaAck,
    done: (err: ApiError | null, firstSeq: number) => void,
    appender: (log: MessageLog) => { copy: () => (cb: (err: Error | null, first: number) => void) => void; go: (cb: (err: Error | null, first: number) => void) => void },
  ): void {
    if (this.deleted) return done(Errors.streamNotFound(), 0);
    if (this.partitionFrozen(partition)) return done(Errors.streamMoving(), 0);
    if (this.config.sealed) return done(Errors.sealed(), 0);
    const leaderOnly = ack === "leader";
    const refused = this.replicaRefusal(partition, leaderOnly);
    if (refused !== null) return done(refused, 0);
    const log = this.partitions[partition];
    if (log === undefined) return done(Errors.storeFailed(`no partition ${partition}`), 0);
    const max = this.config.max_msg_size;
    if ((max > 0 && largestPayload > max) || largestPayload > this.maxPayload) return done(Errors.messageTooBig(), 0);
    if (this.quota !== null) {
      // The records' bytes and their headers in the log: what they will hold, near enough to bound the account.
      const over = this.quota.refusal(this.config.storage, bytes + count * RECORD_HEADER);
      if (over !== null) return done(over, 0);
    }
    const full = this.ingestRefusal();
    if (full !== null) return done(full, 0);
    const stored = (err: Error | null, first: number): void => {
      this.checkDrain();
      if (err !== null) return done(storeFailure(err), 0);
      this.order?.landed();
      // Stored here: `first` goes with a replication error too, as the records are in this log (a retry is a duplicate).
      const finish = (): void => this.whenReplicated(partition, first + count - 1, (e) => done(e, first), leaderOnly);
      if (this.config.retention === "interest" || (this.order === null && partition === 0 && this.consumers.size > 0)) {
        let left = count;
        const ack = (): void => {
          if (--left === 0) finish();
        };
        for (let i = 0; i < count; i++) this.afterStore(partition, subjects === null ? subject : subjects[i], first + i, ack);
        return;
      }
      // No consumer to tell and nothing to retain by interest: the listeners hear of the run once.
      this.readerWakes++;
      for (const l of this.appendListeners) l(partition, first + count - 1);
      finish();
    };
    const issue = (append: (cb: (err: Error | null, first: number) => void) => void) => (): void => {
      this.inflight++;
      append((err, first) => {
        this.inflight--;
        stored(err, first);
        this.drainQueue();
      });
    };
    const { copy, go } = appender(log);
    this.orderedAppend(partition, bytes, () => issue(copy()), issue(go));
  }

  private acknowledge(p: Queued, msgId: string | undefined, seq: number): void {
    p.done(null, seq, false);
    if (msgId !== undefined) {
      const waiters = this.dedupInflight.get(msgId);
      this.dedupInflight.delete(msgId);
      if (waiters) for (const w of waiters) w(null, seq, true);
    }
  }

  private fail(p: Queued, msgId: string | undefined, err: ApiError): void {
    p.done(err, 0, false);
    if (msgId === undefined) return;
    const waiters = this.dedupInflight.get(msgId);
    this.dedupInflight.delete(msgId);
    if (waiters) for (const w of waiters) w(err, 0, false);
  }

  private drainQueue(): void {
    const q = this.queue;
    while (q.length > 0 && !this.holding) {
      const next = q[0];
      if (next.direct === true) {
        q.shift();
        this.queuedBytes -= next.bytes;
        next.go();
        continue;
      }
      if (next.orderSensitive && this.busy()) return;
      q.shift();
      this.queuedBytes -= (next.headers?.length ?? 0) + next.data.length;
      this.process(next);
    }
  }

  /** Runs a door's append now, or after the publishes queued before it (its bytes copied: the caller may reuse them). */
  private orderedAppend(partition: number, bytes: number, copy: () => () => void, go: () => void): void {
    if (this.queue.length === 0 && !this.holding) return go();
    this.queue.push({ direct: true, partition, bytes, go: copy() });
    this.queuedBytes += bytes;
  }

  private remember(id: string, seq: number): void {
    const now = Date.now();
    this.dedup.delete(id);
    this.dedup.set(id, { seq, time: now });
    this.dropExpiredIds(now);
  }

  /** A publish was stored at stream sequence `seq`: its id ("" without one) is the last, unless a later one landed first. */
  private storedLast(msgId: string | undefined, seq: number): void {
    if (seq < this.lastMsgIdSeq) return;
    this.lastMsgId = msgId ?? "";
    this.lastMsgIdSeq = seq;
  }

  /** Drops the ids older than the window from the map's front (oldest first). */
  private dropExpiredIds(now: number): void {
    const cutoff = now - this.config.duplicate_window / NS_PER_MS;
    for (const [k, v] of this.dedup) {
      if (v.time >= cutoff) break;
      this.dedup.delete(k);
    }
  }

  /** The expectations after de-duplication, in nats-server's order: the subject's last sequence before the stream's. */
  private checkExpectations(subject: string, h: HeaderMap): ApiError | null {
    const lastSubjSeq = expectedSequence(header(h, "Nats-Expected-Last-Subject-Sequence"));
    if (lastSubjSeq !== undefined) {
      const subj = header(h, "Nats-Expected-Last-Subject-Sequence-Subject") ?? subject;
      const have = this.log.lastSeqOf(subj);
      if (lastSubjSeq !== have) return Errors.wrongLastSequence(have);
    }
    const lastSeq = expectedSequence(header(h, "Nats-Expected-Last-Sequence"));
    if (lastSeq !== undefined) {
      const have = this.log.state().lastSeq;
      if (lastSeq !== have) return Errors.wrongLastSequence(have);
    }
    // An empty expectation is none, as in nats-server.
    const lastId = header(h, "Nats-Expected-Last-Msg-Id");
    if (lastId !== undefined && lastId !== "") {
      const have = this.lastMsgIdSeq === this.log.state().lastSeq ? this.lastMsgId : "";
      if (lastId !== have) return Errors.wrongLastMsgId(have);
    }
    return null;
  }

  /** A message was acknowledged by a consumer: retention may let it go. */
  acked(by: Consumer, seq: number): void {
    const retention = this.config.retention;
    if (retention === "limits") return;
    if (retention === "workqueue") {
      this.removing(this.deleteBySeq(seq));
      return;
    }
    this.removing(
      this.log.get(seq).then((m) => {
        if (m === null) return;
        for (const c of this.consumers.values()) {
          if (c !== by && c.wants(m.subject) && !c.hasAcked(seq)) return;
        }
        return this.deleteBySeq(seq);
      }),
    );
  }

  /** A delete retention decided on, counted until it is done: a freeze for a move waits for it (quiet()), or the copy would keep the message. */
  private removing(p: Promise<unknown>): void {
    this.retentionDeletes++;
    void p.catch(() => undefined).finally(() => this.retentionDeletes--);
  }

  /**
   * Interest retention after a consumer went: every message no remaining
   * consumer still has to see goes (nats-server does the same). Read in
   * windows; the deletes are issued together, so they share tombstone
   * batches and syncs.
   */
  async interestChanged(): Promise<number> {
    if (this.config.retention !== "interest" || this.deleted) return 0;
    this.retentionDeletes++;
    try {
      return await this.interestSweep();
    } finally {
      this.retentionDeletes--;
    }
  }

  private async interestSweep(): Promise<number> {
    if (this.consumers.size === 0) return this.purge({});
    const gone: number[] = [];
    for (let from = this.log.state().firstSeq; ; ) {
      const batch = await this.log.scan(from, { maxMessages: 1024 });
      if (batch.length === 0) break;
      for (const m of batch) {
        let wanted = false;
        for (const c of this.consumers.values()) {
          if (c.wants(m.subject) && !c.hasAcked(m.seq)) {
            wanted = true;
            break;
          }
        }
        if (!wanted) gone.push(m.seq);
      }
      from = batch[batch.length - 1].seq + 1;
    }
    let removed = 0;
    for (let i = 0; i < gone.length; i += 1024) {
      const done = await Promise.all(gone.slice(i, i + 1024).map((seq) => this.deleteBySeq(seq)));
      for (const d of done) if (d) removed++;
    }
    return removed;
  }

  // ---- what NATS readers may see (visibility.ts) ----

  /** Installs a door's visibility rules; readers pick them up at once. */
  setVisibility(v: Visibility): void {
    this.doorVisibility = v;
    this.composeVisibility();
    this.visibilityChanged();
  }

  // ---- replication (stream-replicas.ts) ----

  /**
   * Makes this node's writes to `partition` wait for its replicas (a gate),
   * or not (undefined: not replicated, or not led here). Readers see only
   * what the gate's high watermark covers.
   */
  setReplicaGate(partition: number, gate: ReplicaGate | undefined): void {
    this.replicaGates[partition] = gate;
    const log = this.partitions[partition];
    // What the limits remove inside the log goes to the followers too; what they remove from the front shows as the log start.
    // Either reaches a follower only with the records that caused it (replication.ts, rCause).
    log.onEvicted =
      gate === undefined
        ? null
        : (ranges) => {
            const st = log.state();
            gate.removed(insideOf(ranges, st.firstSeq), st.lastSeq);
            let lowest = Infinity;
            for (let i = 0; i < ranges.length; i += 2) if (ranges[i] < st.firstSeq) lowest = Math.min(lowest, ranges[i]);
            if (lowest !== Infinity) gate.frontMoved(lowest, st.lastSeq);
          };
    while (this.replicaGates.length > 0 && this.replicaGates[this.replicaGates.length - 1] === undefined) this.replicaGates.length--;
    this.composeVisibility();
    this.visibilityChanged();
    // A role began or ended: a reader waiting on the partition (a Kafka fetch) looks again, and one at a node that no longer
    // leads it is told so at once, as Kafka completes a delayed fetch when its broker stops leading, rather than at its
    // max_wait_ms while the client's records wait at the new leader.
    this.readerWakes++;
    for (const l of this.appendListeners) l(partition, this.replicatedSeq(partition));
  }

  replicaGate(partition: number): ReplicaGate | undefined {
    return this.replicaGates[partition];
  }

  private composeVisibility(): void {
    const gates = this.replicaGates;
    this.visibility = gates.length === 0 ? this.doorVisibility : new CappedVisibility(this.doorVisibility, (p) => (gates[p] === undefined ? Infinity : gates[p]!.highWatermark - 1));
  }

  /** Why a write to `partition` is refused by its replication now (too few in-sync replicas unless `leaderOnly`, no lease), or null. */
  private replicaRefusal(partition: number, leaderOnly: boolean): ApiError | null {
    const g = this.replicaGates[partition];
    if (g !== undefined) return g.refusal(leaderOnly);
    // Unreplicated: only the lease (a gate checks its own).
    return this.leaseHeld === null || this.leaseHeld() ? null : new LeaseLostError();
  }

  /** The gate of a stream of one partition, whose removals (by stream sequence) it must be told; undefined otherwise. */
  private get removalGate(): ReplicaGate | undefined {
    return this.order === null ? this.replicaGates[0] : undefined;
  }

  /** Deletes `seq` of `partition` (the stream's sequence with one partition); a replicated partition's followers are told. */
  private async deleteIn(partition: number, seq: number): Promise<boolean> {
    const ok = await this.partitions[partition].delete(seq);
    if (ok) this.replicaGates[partition]?.removed([seq]);
    return ok;
  }

  /** Resolves once every in-sync replica has applied the removals told so far (at once when not replicated). */
  private removalsReplicated(gate: ReplicaGate | undefined): Promise<void> {
    if (gate === undefined) return Promise.resolve();
    return new Promise((resolve, reject) => gate.removalsReplicated((err) => (err === null ? resolve() : reject(err))));
  }

  /** Deletes stream sequence `seq`; a replicated stream's followers are told. */
  private deleteBySeq(seq: number): Promise<boolean> {
    return this.removalGate === undefined ? this.log.delete(seq) : this.deleteIn(0, seq);
  }

  /**
   * Whether this node may remove records of `partition` by a door's own
   * rules (Kafka's log compaction) now: it leads the partition with its
   * lease, and the partition is not moving.
   */
  mayRetire(partition: number): boolean {
    if (this.deleted || partition >= this.partitions.length) return false;
    if (this.ledHere !== null && this.ledHere[partition] !== true) return false;
    return !this.partitionFrozen(partition) && this.replicaRefusal(partition, true) === null;
  }

  /**
   * Removes sequences of `partition` that a door's own rules retire (Kafka's
   * log compaction), each as MSG.DELETE removes one (a replicated
   * partition's followers are told). `groups` are sequences that go
   * together: each in one chunk of deletes issued at once (so they share a
   * tombstone batch), chunks of about RETIRE_CHUNK; refused where mayRetire
   * says no, checked again before each chunk. The number removed, once
   * durable here (a sequence already gone counts for nothing).
   */
  async retire(partition: number, groups: ReadonlyArray<readonly number[]>): Promise<number> {
    let removed = 0;
    for (let g = 0; g < groups.length; ) {
      if (!this.mayRetire(partition)) throw this.partitionFrozen(partition) ? Errors.streamMoving() : Errors.clusterNotAvailable();
      const seqs: number[] = [];
      // A loop, not a spread: one Kafka batch may hold more records than a call takes arguments.
      while (g < groups.length && (seqs.length === 0 || seqs.length + groups[g].length <= RETIRE_CHUNK)) for (const seq of groups[g++]) seqs.push(seq);
      const chunk = Promise.all(seqs.map((seq) => this.deleteIn(partition, seq)));
      // A freeze for a move waits for it (quiet()), as for retention's deletes.
      this.removing(chunk);
      for (const ok of await chunk) if (ok) removed++;
      // Paced by the followers: a chunk at a time reaches them as removals listed, never more than a fetch can carry.
      await this.removalsReplicated(this.replicaGates[partition]);
    }
    return removed;
  }

  /** MSG.DELETE: removes one message, and answers once every in-sync replica has removed it too. */
  async deleteMessage(seq: number): Promise<boolean> {
    const ok = await this.deleteBySeq(seq);
    if (ok) await this.removalsReplicated(this.removalGate);
    return ok;
  }

  /**
   * For a door's retried append that this log already holds (a Kafka
   * idempotent producer's duplicate batch): `done` once `partition` up to
   * `lastSeq` is replicated as `ack` asks, as the first append would have
   * been answered, or with the refusal a new append would get here now.
   */
  whenStored(partition: number, lastSeq: number, done: (err: ApiError | null) => void, ack: ReplicaAck = "all"): void {
    if (this.deleted) return done(Errors.streamNotFound());
    if (this.partitionFrozen(partition)) return done(Errors.streamMoving());
    const refused = this.replicaRefusal(partition, ack === "leader");
    if (refused !== null) return done(refused);
    this.whenReplicated(partition, lastSeq, done, ack === "leader");
  }

  /**
   * Calls `done` once every in-sync replica has `partition` up to `lastSeq`
   * (at once when the partition is not replicated, or, `leaderOnly`, once
   * shipped: the followers still fetch it, nobody waits for them).
   */
  private whenReplicated(partition: number, lastSeq: number, done: (err: ApiError | null) => void, leaderOnly = false): void {
    const g = this.replicaGates[partition];
    // Unreplicated, acknowledged only under the lease as a gate's writes are: past it, the stream may be deleted already.
    if (g === undefined) return done(this.leaseHeld === null || this.leaseHeld() ? null : new OutcomeUnknownError("this node lost its cluster lease"));
    if (!leaderOnly) return g.replicate(lastSeq, done);
    done(g.ship(lastSeq));
  }

  /**
   * The last sequence of `partition` every in-sync replica has (Kafka's
   * high watermark, as an offset): the log's last when the partition is not
   * replicated or not led here.
   */
  replicatedSeq(partition: number): number {
    const last = this.partitions[partition].state().lastSeq;
    const g = this.replicaGates[partition];
    return g === undefined ? last : Math.min(last, g.highWatermark - 1);
  }

  /** Whether replicatedSeq(partition) is at least what readers were shown before (see ReplicaGate.highWatermarkCurrent). */
  replicatedSeqCurrent(partition: number): boolean {
    return this.replicaGates[partition]?.highWatermarkCurrent ?? true;
  }

  /**
   * The high watermark of `partition` moved on (its gate says so): readers
   * waiting at it read again, as after an append. JetStream consumers heard
   * of the append when it was stored, before they could see it: they count
   * and read again now.
   */
  replicaAdvanced(partition: number): void {
    this.readersMayAdvance(partition);
  }

  /** What readers may see of `partition` moved on (the replication cap or the door's rules): those waiting read again. */
  readersMayAdvance(partition: number): void {
    const seq = this.replicatedSeq(partition);
    this.readerWakes++;
    for (const l of this.appendListeners) l(partition, seq);
    if (this.consumers.size > 0 || this.order !== null) this.visibilityChanged();
  }

  /** The door's rules let readers see more (or less): consumers count and read again. */
  visibilityChanged(): void {
    // With several partitions, what became visible gets its stream sequences first; consumers hear of them once durable.
    this.order?.landed();
    for (const c of this.consumers.values()) c.recount();
  }

  // JetStream readers' view: partition 0 under the door's rules, or the order, which holds only what readers may see.

  /** The door's rules as JetStream readers must apply them: none through the order, which applies them itself. */
  get readerVisibility(): Visibility | null {
    return this.order !== null ? null : this.visibility;
  }

  /** The last stream sequence readers may see now. */
  readerStableSeq(): number {
    return this.order !== null ? Infinity : this.stableSeq(0);
  }

  /** MSG.GET by stream sequence. */
  readerGet(seq: number): Promise<StoredMessage | null> {
    return this.merged !== null ? this.merged.get(seq) : this.getVisible(0, seq);
  }

  /** The first message readers may see after stream sequence `after` matching `filter`. */
  readerNext(after: number, filter?: string): Promise<StoredMessage | null> {
    return this.merged !== null ? this.merged.next(after, filter) : this.nextVisible(0, after, filter);
  }

  /** The newest message readers may see matching `filter` (wildcards allowed). */
  async readerLast(filter: string): Promise<StoredMessage | null> {
    if (this.merged !== null) return this.merged.lastBySubject(filter);
    if (this.visibility !== null) return this.lastVisible(0, filter);
    const log = this.partitions[0];
    if (!filter.includes("*") && !filter.includes(">")) return log.lastBySubject(filter);
    const seqs = log.lastPerSubject(filter);
    return seqs.length === 0 ? null : log.get(seqs[seqs.length - 1]);
  }

  /** The last sequence of `partition` readers may see now (Infinity: no limit but the log's end). */
  stableSeq(partition: number): number {
    return this.visibility === null ? Infinity : this.visibility.stableSeq(partition);
  }

  /** Whether readers may see `seq` of `partition`. */
  visible(partition: number, seq: number): boolean {
    const v = this.visibility;
    return v === null || (seq <= v.stableSeq(partition) && !v.hidden(partition, seq));
  }

  /** The stored message `seq` if readers may see it. */
  async getVisible(partition: number, seq: number): Promise<StoredMessage | null> {
    if (!this.visible(partition, seq)) return null;
    return this.partitions[partition].get(seq);
  }

  /** The first visible message after `after` matching `filter`. */
  async nextVisible(partition: number, after: number, filter?: string): Promise<StoredMessage | null> {
    const log = this.partitions[partition];
    for (;;) {
      const m = await log.next(after, filter);
      if (m === null || this.visible(partition, m.seq)) return m;
      if (m.seq > this.stableSeq(partition)) return null;
      after = m.seq;
    }
  }

  /**
   * The newest visible message matching `filter` (wildcards allowed). From
   * the log's per-subject index, unless that message is not visible: then
   * the log is read backwards in windows up to it.
   */
  async lastVisible(partition: number, filter: string): Promise<StoredMessage | null> {
    const log = this.partitions[partition];
    const seqs = log.lastPerSubject(filter);
    if (seqs.length === 0) return null;
    const newest = seqs[seqs.length - 1];
    if (this.visible(partition, newest)) return log.get(newest);
    const first = log.state().firstSeq;
    const WINDOW = 256;
    for (let hi = Math.min(newest, this.stableSeq(partition)); hi >= first; hi -= WINDOW) {
      const from = Math.max(first, hi - WINDOW + 1);
      let best: StoredMessage | null = null;
      for (let at = from; at <= hi; ) {
        const batch = await log.scan(at, { filter, maxMessages: WINDOW });
        if (batch.length === 0) break;
        for (const m of batch) if (m.seq <= hi && this.visible(partition, m.seq)) best = m;
        at = batch[batch.length - 1].seq + 1;
        if (at > hi || batch[batch.length - 1].seq > hi) break;
      }
      if (best !== null) return best;
    }
    return null;
  }

  /** Serves more partitions (JetStream.addPartitions has recorded them): keyed publishes now hash over all of them, as Kafka's partitioner does. */
  addPartitions(logs: MessageLog[]): void {
    for (const log of logs) {
      log.setLimits(this.limits());
      this.partitions.push(log);
    }
  }

  /** Removes a partition's messages below `upTo` (Kafka's DeleteRecords); consumers are told, as by a purge. */
  async purgePartition(partition: number, upTo: number): Promise<number> {
    if (this.partitionFrozen(partition)) throw Errors.streamMoving();
    if (this.order === null) {
      if (partition === 0) return this.purge({ upTo });
      return this.partitions[partition].purge({ upTo });
    }
    const purged = await this.partitions[partition].purge({ upTo });
    // Other partitions keep what lies below in stream order: consumers only count again, and forget a delivery they find gone.
    for (const c of this.consumers.values()) c.purged(0);
    return purged;
  }

  async purge(opts: { filter?: string; upTo?: number; keep?: number }): Promise<number> {
    // A stream purge spans partitions: one moving out from here must not change under its copy.
    if (this.frozen || this.movingOut()) throw Errors.streamMoving();
    // '>' is every subject: a purge from the front, as without a filter (the logs, and nats-server, take it so). Told as
    // a filtered one, a purge past the end moved the leader's log on but neither its replication end nor its replicas.
    if (opts.filter === ">") opts = { ...opts, filter: undefined };
    const lastBefore = this.log.state().lastSeq;
    const purged = await this.log.purge(opts);
    const first = this.log.state().firstSeq;
    const fromFront = opts.filter === undefined && opts.keep === undefined;
    for (const c of this.consumers.values()) c.purged(fromFront ? first : 0);
    const gate = this.removalGate;
    // A purge past the end moves the log on even when it removed nothing: the replicas move on with it before it is answered.
    const movedOn = fromFront && this.log.state().lastSeq > lastBefore;
    if (gate !== undefined && (purged > 0 || movedOn)) {
      // Answered once every in-sync replica has purged too.
      if (fromFront) gate.removedBelow();
      else gate.removedUnlisted();
      await this.removalsReplicated(gate);
    }
    return purged;
  }

  async state(): Promise<LogState & { firstTime: number; lastTime: number }> {
    const st = this.log.state();
    let firstTime = 0;
    let lastTime = 0;
    if (st.messages > 0) {
      firstTime = (await this.log.get(st.firstSeq))?.time ?? 0;
      lastTime = (await this.log.get(st.lastSeq))?.time ?? 0;
    }
    // The last message gone (purged, deleted): nats-server still reports its time.
    if (lastTime === 0 && st.lastSeq > 0) lastTime = this.log.newestTime?.() ?? 0;
    return { ...st, firstTime, lastTime };
  }

  async info(opts: StateOptions = {}): Promise<Record<string, unknown>> {
    return {
      config: this.config,
      created: this.created.toISOString(),
      state: await this.renderState(opts),
      ts: new Date().toISOString(),
    };
  }

  /**
   * nats-server's StreamState for partition 0 (the sequence space JetStream
   * clients address), in its field order and with its omitted empties, plus
   * what the store reports about damage: stream info and /jsz both show this.
   */
  async renderState(opts: StateOptions = {}): Promise<Record<string, unknown>> {
    const st = await this.state();
    const state: Record<string, unknown> = {
      messages: st.messages,
      bytes: st.bytes,
      first_seq: st.firstSeq,
      first_ts: isoTime(st.firstTime),
      last_seq: st.lastSeq,
      last_ts: isoTime(st.lastTime),
    };
    if (st.subjects > 0) state.num_subjects = st.subjects;
    if (opts.subjectsFilter) {
      const counts = this.log.subjectCounts(opts.subjectsFilter);
      if (counts.size > 0) state.subjects = Object.fromEntries(counts);
    }
    // nats-server lists every one; a list that large is cut at DELETED_DETAILS_MAX (num_deleted has the count).
    if (opts.deletedDetails === true && st.deleted > 0) state.deleted = this.log.deletedSequences(DELETED_DETAILS_MAX);
    if (st.deleted > 0) state.num_deleted = st.deleted;
    Object.assign(state, damageFields(st));
    state.consumer_count = this.consumers.size;
    return state;
  }

  /** The message as MSG.GET returns it. */
  static renderMessage(m: StoredMessage): Record<string, unknown> {
    const out: Record<string, unknown> = { subject: m.subject, seq: m.seq, time: isoTime(m.time) };
    const headers = withKeyHeader(m.headers, m.key);
    if (headers !== null && headers.length > 0) out.hdrs = headers.toString("base64");
    if (m.data.length > 0) out.data = m.data.toString("base64");
    return out;
  }
}
