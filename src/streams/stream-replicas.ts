/**
 * Replicated stream partitions on this node (docs/CLUSTER.md,
 * "Replication"): for each partition of an account's streams whose
 * placement names several replicas, this node is its leader or one of its
 * followers, and replication.ts does the work:
 *
 * - the leader's ReplicaLeader answers its followers' fetches, which come
 *   over the routes on `$NG.REPL.<stream>.<partition>` (forwarded to this
 *   node as the cluster API forwards any internal request); the stream's
 *   writes wait for the high watermark through a ReplicaGate
 *   (stream.ts), readers see nothing past it, and writes are refused
 *   while the ISR is smaller than the minimum or this node does not hold
 *   its lease (a leader cut off from etcd stops acknowledging before
 *   anyone can be elected in its place);
 * - a follower's ReplicaFollower truncates to where its log agrees with
 *   the leader's, then fetches and appends; its limits are off (the
 *   leader's decide what stays).
 *
 * Roles follow the placement, in each stream's settle (cluster-streams.ts),
 * before the stream takes publishes for a partition it now leads. The
 * placement changes, always by fenced revision-compared writes of the
 * stream's key: the leader removes from the ISR a follower that is not
 * live or has not caught up within the lag bound and adds back one that
 * has; when a leader's node key is gone, an ISR member takes over
 * (`leaders[p]` itself, the epoch bumped, the old leader out of the ISR),
 * waiting by its rank in the ISR so the first usually wins. No live ISR
 * member: the partition stays offline (no unclean election).
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import { settled } from "../util/settle.js";
import { readJson, writeJsonDurably } from "../util/persist.js";
import { LEADER_EPOCHS_FILE, LeaderEpochs, type EpochEntry } from "../store/leader-epochs.js";
import type { MessageLog } from "../store/log.js";
import { ApiError, HandedOverError, LeaseLostError, OutcomeUnknownError, TooFewReplicasError } from "./errors.js";
import { encodeError, encodeFailure, FETCH_BYTES, ReplicaFollower, ReplicaLeader } from "./replication.js";
import { reassignmentEnded, replicasOf, type ClusterStreams, type PlacedStream } from "./cluster-streams.js";
import type { JetStream } from "./jetstream.js";
import { limitsOf, REFUSE_CONSUMER_COPIES, type ReplicaGate, type Stream } from "./stream.js";
import { ConsumerCopies } from "./consumer-copies.js";
import { ConsumerCopyFile, type HeldCopy } from "./consumer-copy-file.js";
import { answerLimit, BATCH_BYTES, consumersAnswer, readConsumers, takeConsumers, type ConsumerCopy, type ConsumersCursor } from "./stream-move.js";

export const REPL_PREFIX = `${CLUSTER_INTERNAL_PREFIX}REPL.`;
/** How long an in-sync follower may go without catching up before its leader removes it from the ISR (Kafka's replica.lag.time.max.ms, shorter: JetStream publishers wait for it). */
export const LAG_MAX_MS = 10_000;
/** A hand-over etcd did not answer is made again after this, doubling up to the most (writes refused meanwhile). */
const AMBIGUOUS_RETRY_MS = 100;
const AMBIGUOUS_RETRY_MAX_MS = 1000;
/** How long a leader that a reassignment takes out waits for its writes in flight to reach the ISR before it hands over (tried again at the next check). */
const REASSIGN_HANDOVER_MS = 5000;
/** How recently every in-sync replica must have caught up for that hand-over to be tried. */
const REASSIGN_CAUGHT_UP_MS = 1000;
/** How often a leader looks at its ISR, and a follower at its leader. */
const CHECK_MS = 500;
/**
 * How long a leader's log may stay failed (a full disk, a write error) before
 * the leader hands the partition to a live in-sync replica. A failed log is
 * reopened after 1 s, so a moment's failure keeps its leader; one that lasts
 * would keep the partition refusing writes while its followers could take them.
 */
const FAILED_LEADER_MS = 2000;
/**
 * How long a leader's reopened log must take writes, with one landed, before
 * its failure is forgotten. A reopen that succeeds says only that the disk
 * took the reopen's 8-byte probe: a nearly full disk lets every reopen
 * through and refuses the next batch, so the log fails a second at a time
 * and, counted from each reopen, never for FAILED_LEADER_MS in a row.
 */
const FAILED_CLEARED_MS = 10_000;
/** A follower's wait per rank in the ISR before it proposes itself as leader. */
const RANK_DELAY_MS = 500;
/** How long a partition given up as leader waits for its writes in flight before its follower starts. */
const QUIET_MS = 5000;
/**
 * How soon a follower of a stream's first partition asks again for the
 * leader's consumers after a failed round. Rounds that succeed follow one
 * another; an unchanged set is answered in a few bytes, after up to
 * CONSUMERS_PARK_MS (what a failover may redeliver: acks of that interval,
 * never a confirmed one).
 */
const CONSUMERS_MS = 200;
/** How long a leader holds a follower's request for consumers that have not changed (a confirmed ack answers it at once). */
const CONSUMERS_PARK_MS = 500;
/**
 * The least time between two copies of changed consumers to one follower,
 * unless a confirmed ack waits for it: a follower writes each copy to disk,
 * and a busy consumer changes all the time.
 */
const COPY_MIN_MS = 200;
/** A follower's wait for an answer about consumers (held up to CONSUMERS_PARK_MS). */
const CONSUMERS_REQUEST_MS = 2000;
/** A follower's request for the leader's consumers: `<stream>.consumers`. */
const CONSUMERS = "consumers";
/**
 * How often the high watermarks of the partitions replicated here are
 * written down (Kafka's replica.high.watermark.checkpoint.interval.ms): a
 * node that starts again leading a partition starts its readers from it,
 * not from nothing, while its followers fetch again.
 */
const CHECKPOINT_MS = 5000;
/** The checkpoint, in the account's store directory: per stream, its creation time (a stream made again under the name is another) and each partition's high watermark. */
const CHECKPOINT_FILE = "replica-checkpoint.json";
type Checkpoint = Record<string, { created: string; hw: number[] }>;
/** A replica's request for what another's copy of a partition holds: `<stream>.ends`, `{ partition, created }` (the placement asked about). */
const ENDS = "ends";
const ENDS_REQUEST_MS = 2000;
/** How often partitions waiting for a replica to take them are settled again. */
const WAIT_SETTLE_MS = 1000;
/**
 * How long a follower's request waits for this node to take up a
 * leadership the placement already gives it (a new stream, a failover:
 * each node settles the placement on its own, and the followers' first
 * fetch often comes first). Refused, the follower would pause its backoff
 * (100 ms at first) before asking again, and the first acknowledgement of
 * the new leadership with it.
 */
const PARK_MS = 1000;
/** Requests held per partition that way (its followers', a retry each at most): past it, refused at once. */
const PARK_MAX = 16;
/** A follower's bar on leading (ReplicaFollower's `bar`), in its partition's directory: `{ epoch, bar }`. */
const FOLLOWER_BAR_FILE = "follower-bar.json";

/** What the replicas need of the account's cluster API. */
export interface ReplicaHost {
  readonly js: JetStream;
  readonly cluster: ClusterStreams;
  request(node: string, subject: string, body: Uint8Array, ms: number): Promise<Buffer | null>;
  /** Sends an answer. `body` may be lent (a leader's fetch answer): it is valid only during the call, and copied if kept. */
  answer(reply: string, body: Buffer): void;
  /** Takes back an answer `request` gave, once nothing reads it (ReplicaTransport.release); one it did not lend is ignored. */
  releaseAnswer?(answer: Buffer): void;
  /** Whether this node may act on its lease now. */
  holdsLease(): boolean;
  /** Sends a client's request to `node` to serve (and never forward again): a former leader's waiting pull requests. */
  handOver?(node: string, subject: string, reply: string, body: Buffer): void;
}

const unavailable = (why: string): ApiError => new ApiError(503, 10008, `JetStream system temporarily unavailable: ${why}`);

/** The leader's side of a partition, as its stream sees it. */
class LeaderGate implements ReplicaGate {
  /** The ISR's size as last agreed: below `minIsr`, writes that wait for the ISR are refused. */
  isrSize: number;
  /** The placement's minimum ISR (it may change with the stream's configuration). */
  minIsr: number;
  private readonly onReplicated: (err: Error | null, done: (err: ApiError | null) => void) => void;

  constructor(
    readonly leader: ReplicaLeader,
    minIsr: number,
    isrSize: number,
    readonly holdsLease: () => boolean,
  ) {
    this.isrSize = isrSize;
    this.minIsr = minIsr;
    // One function for every write: each write's callback rides as the context.
    this.onReplicated = (err, done) => {
      if (err !== null) return done(new OutcomeUnknownError(err.message));
      // Acknowledged only under the lease: past it, another node may lead already.
      if (!this.holdsLease()) return done(new OutcomeUnknownError("this node lost its cluster lease"));
      // The ISR shrank below the minimum while it waited (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND): on too few copies to acknowledge.
      if (this.isrSize < this.minIsr) return done(new TooFewReplicasError(this.isrSize, this.minIsr, true));
      done(null);
    };
  }

  get highWatermark(): number {
    return this.leader.highWatermark;
  }

  get highWatermarkCurrent(): boolean {
    return this.leader.highWatermarkCurrent;
  }

  get epochEntries(): readonly EpochEntry[] {
    return this.leader.epochEntries;
  }

  /** Hand-overs of this leadership to another replica under way (a drain, a step-down, an election): writes wait for the new leader. */
  handingOver = 0;
  /** The successor a hand-over named in etcd: it takes writes once it has settled, maybe before this node has. */
  handedTo: string | null = null;

  refusal(leaderOnly: boolean): ApiError | null {
    if (!this.holdsLease()) return new LeaseLostError();
    if (this.handingOver > 0) return this.handedTo !== null ? new HandedOverError(this.handedTo) : unavailable("the partition's leadership is moving to another replica");
    if (!leaderOnly && this.isrSize < this.minIsr) return new TooFewReplicasError(this.isrSize, this.minIsr);
    return null;
  }

  ship(lastSeq: number): ApiError | null {
    this.leader.appended(lastSeq);
    return this.holdsLease() ? null : new OutcomeUnknownError("this node lost its cluster lease");
  }

  replicate(lastSeq: number, done: (err: ApiError | null) => void): void {
    this.leader.appended(lastSeq);
    if (!this.leader.whenReplicated(lastSeq, this.onReplicated, done)) done(new OutcomeUnknownError("too many writes wait for their replicas"));
  }

  removed(seqs: ArrayLike<number>, cause?: number): void {
    if (seqs.length > 0) this.leader.removed(seqs, cause);
  }

  frontMoved(lowest: number, cause: number): void {
    this.leader.frontMoved(lowest, cause);
  }

  removedUnlisted(): void {
    this.leader.removedUnlisted();
  }

  removedBelow(): void {
    this.leader.removedBelow();
  }

  removalsReplicated(done: (err: ApiError | null) => void): void {
    if (!this.leader.whenRemovalReplicated(this.leader.removalEnd, this.onReplicated, done)) done(unavailable("too many writes wait for their replicas"));
  }
}

/**
 * A replicated partition not led here, as its stream sees it: writes are
 * refused, a write stored under a leadership that has ended fails (it may
 * or may not be kept: this node's copy is truncated to the new leader's),
 * and readers see only what is known on every in-sync replica. Without it
 * a partition that stops leading would, until its follower has truncated,
 * acknowledge its writes in flight as if unreplicated and show its
 * consumers what the new leader never had.
 */
class NotLeaderGate implements ReplicaGate {
  constructor(
    private readonly hw: () => number,
    private readonly why: string,
  ) {}

  get highWatermark(): number {
    return this.hw();
  }

  readonly highWatermarkCurrent = true;

  refusal(): ApiError {
    return unavailable(this.why);
  }

  replicate(_lastSeq: number, done: (err: ApiError | null) => void): void {
    done(unavailable(`${this.why}; the write may or may not be kept`));
  }

  ship(): ApiError {
    return unavailable(`${this.why}; the write may or may not be kept`);
  }

  // Removals are the leader's to ship: a follower's copy applies the leader's.
  removed(): void {}
  frontMoved(): void {}
  removedUnlisted(): void {}
  removedBelow(): void {}

  removalsReplicated(done: (err: ApiError | null) => void): void {
    done(unavailable(`${this.why}; the removal may or may not reach the leader`));
  }
}

interface LeaderRole {
  kind: "leader";
  stream: Stream;
  epoch: number;
  gate: LeaderGate;
  /** The consumers' copies at the followers (partition 0 only). */
  copies: ConsumerCopies | null;
  /** Followers proposed for the ISR by a change etcd may have applied without saying so: members until a write settles it. */
  uncertain: Set<string>;
  /**
   * Since when (Date.now()) its log has been failing: set when a check first
   * finds it failed, cleared only once a write has landed since and it has
   * taken writes for FAILED_CLEARED_MS (see handFailedLog); 0 meanwhile.
   */
  failedSince: number;
  /** The log's last sequence when failedSince was set: a write landed since once it has grown. */
  failedAtSeq: number;
  /** Since when (Date.now()) a check has found the failing log taking writes again (reopened); 0 when not. */
  healthySince: number;
  /** The log's failure count as the last check saw it: one that grew failed since, even if reopened before the check. */
  failuresSeen: number;
}

interface FollowerRole {
  kind: "follower";
  stream: Stream;
  epoch: number;
  leader: string;
  follower: ReplicaFollower;
  /** When this node may propose itself as leader, once its leader is found gone (0: not found gone). */
  proposeAt: number;
  /** The leader's consumers as last copied (partition 0 only), adopted if this node takes over. */
  consumers: ConsumerCopy[] | null;
  /** The leader's stamp of that copy (unchanged consumers are not sent again). */
  consumersStamp: string | undefined;
  /** Its version and the leadership it was taken in (consumer-copies.ts), told to the leader with the next request. */
  consumersVersion: number;
  consumersRun: string | null;
  /** When they were copied last; a copy under way. */
  consumersAt: number;
  copying: boolean;
}

type Role = LeaderRole | FollowerRole;

interface ParkedRequest {
  body: Buffer;
  reply: string;
  timer: NodeJS.Timeout;
}

/** What changes when a stream's consumers do: their names and how many state changes each has seen. */
function consumersStamp(s: Stream): string {
  const h = createHash("sha1");
  for (const c of s.consumers.values()) h.update(`${c.name}@${c.created.getTime()}:${c.changes};`);
  return h.digest("base64");
}

/** JetStream's default minimum of in-sync replicas: a majority, as nats-server's quorum. */
export function defaultMinIsr(replicas: number): number {
  return Math.floor(replicas / 2) + 1;
}

/** The replicas a default minimum ISR is a majority of: while a reassignment runs, its target's (the union would ask more copies in sync than the partition will have). */
function counted(placed: PlacedStream, p: number, set: readonly string[]): number {
  return placed.reassigning?.[p]?.target.length ?? set.length;
}

/** The minimum ISR of a placement: its own (a Kafka topic's min.insync.replicas), else a majority. */
export function minIsrOf(placed: Pick<PlacedStream, "minIsr">, replicas: number): number {
  const m = placed.minIsr;
  return m !== undefined && Number.isSafeInteger(m) && m >= 1 ? m : defaultMinIsr(replicas);
}

export class StreamReplicas {
  /** By `<stream>/<partition>`. */
  private readonly roles = new Map<string, Role>();
  /** Followers' requests waiting for this node to take up a leadership it is placed in (park), by `<stream>/<partition>`. */
  private readonly parked = new Map<string, ParkedRequest[]>();
  /** Consumers taken for a follower's paged copy, by `<stream>/<follower>`: later pages read the same snapshot. */
  private readonly snapshots = new Map<string, { version: number; taken: ConsumerCopy[] }>();
  /** Per stream kept on disk, its followers' copy of the consumers (consumer-copy-file.ts). */
  private readonly copyFiles = new WeakMap<Stream, ConsumerCopyFile>();
  /** The last failure to keep one, told once. */
  private readonly copyFileErrors = new WeakMap<Stream, string>();
  /** When each follower (`<stream>/<follower>`) was last handed a copy of changed consumers. */
  private readonly copiedAt = new Map<string, number>();
  /** Partitions with an ISR or leader change of this node's on its way to etcd: one at a time each. */
  private readonly changing = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private readonly stopMembers: () => void;
  private closed = false;
  private readonly hook = (account: string, name: string, local: Stream | undefined, placed: PlacedStream | undefined): Promise<void> =>
    account === this.host.js.account.name ? this.settle(name, local, placed) : Promise.resolve();

  /** The high watermarks written down, as last read (at start) or written. */
  private checkpointed: Promise<Checkpoint>;
  private readonly checkpointTimer: NodeJS.Timeout;
  /**
   * The bar on leading of each partition replicated here as this process
   * last knew it, across its roles: a copy that was in sync a moment ago
   * lost nothing by following a new leader (what is read from the file, or
   * taken as not known, is for the first role after its log was opened).
   */
  private readonly bars = new WeakMap<Stream, Map<number, number>>();
  /** Checkpoint writes run one after the other; at most one waits behind the one under way. */
  private checkpointTail: Promise<void> = Promise.resolve();
  private checkpointQueued = false;
  private checkpointError = "";
  /** The checkpoint this process wrote last, as written (null: none yet). */
  private writtenText: string | null = null;
  /** close() is writing the last checkpoint. */
  private closing = false;

  /** When this instance began: a placement made before it names a leadership that, if this node held it, an earlier process held. */
  private readonly startedAt = Date.now();
  /** Per stream (its copy here), the partitions settled at least once by this instance: only the first settle asks restartedCopy. */
  private readonly seen = new WeakMap<Stream, Set<number>>();
  /** Per stream, partitions whose copy was found restarted (restartedCopy) and has taken no role since (stepAside until it has). */
  private readonly lost = new WeakMap<Stream, Set<number>>();
  /** A memory stream's leader-epoch checkpoints, per partition (epochsOf). */
  private readonly memoryEpochs = new WeakMap<Stream, Map<number, LeaderEpochs>>();
  /** Streams with a settle of a waiting partition under way (one at a time). */
  private readonly resettling = new Set<string>();
  /** Partitions led here by the placement that wait, without a role, for a replica to take them (stepAside): their stream's name, by `<stream>/<partition>`. */
  private readonly waiting = new Map<string, string>();
  /** What each waiting partition was last told to wait for (told once). */
  private readonly toldWaiting = new Map<string, string>();
  private lastWaitSettle = 0;

  constructor(private readonly host: ReplicaHost) {
    host.cluster.replicaHooks.add(this.hook);
    this.stopMembers = host.cluster.directory.onMembers(() => this.check());
    this.timer = setInterval(() => this.check(), CHECK_MS);
    this.timer.unref();
    this.checkpointed = readCheckpoint(this.checkpointPath);
    this.checkpointTimer = setInterval(() => void this.writeCheckpoint(), CHECKPOINT_MS);
    this.checkpointTimer.unref();
  }

  private get checkpointPath(): string {
    return join(this.host.js.options.storeDir, CHECKPOINT_FILE);
  }

  /**
   * The high watermark to start leading partition `p` of this very stream
   * (not one made again under its name) with, from the checkpoint; undefined
   * if none. One past the log's end (the log lost what it had not synced) is
   * lowered to it in the file first: left there, it would cover records
   * written after this start that no follower has yet, at the next start.
   */
  private async savedHighWatermark(stream: Stream, p: number): Promise<number | undefined> {
    const saved = (await this.checkpointed)[stream.config.name];
    if (saved === undefined || saved.created !== stream.created.toISOString() || saved.hw[p] === undefined) return undefined;
    const end = logEnd(stream.partitions[p]);
    if (saved.hw[p] > end) {
      // Not by changing the map read (a write under way has copied it, and the map it leaves is the one read next):
      // every write caps each value at its log's end. One that fails leaves the value in the file: no leading on it.
      await this.writeCheckpoint();
      if (this.checkpointError !== "") throw new Error(`the high-watermark checkpoint names ${saved.hw[p]}, past the log's end ${end}, and could not be lowered: ${this.checkpointError}`);
    }
    return Math.min(saved.hw[p], end);
  }

  /** Writes the partitions' high watermarks as they are now, if any changed (every CHECKPOINT_MS, and at close), after any write under way. */
  writeCheckpoint(): Promise<void> {
    if (this.checkpointQueued) return this.checkpointTail;
    this.checkpointQueued = true;
    this.checkpointTail = this.checkpointTail.then(() => {
      this.checkpointQueued = false;
      return this.checkpointOnce();
    });
    return this.checkpointTail;
  }

  private async checkpointOnce(): Promise<void> {
    // Closed, only close()'s own last write: none after it (the store may be going).
    if (this.closed && !this.closing) return;
    try {
      const before = await this.checkpointed;
      const next: Checkpoint = Object.create(null) as Checkpoint;
      // Streams still here keep what was written of them (one not settled since the start has its roles to come).
      for (const [name, saved] of Object.entries(before)) {
        const stream = this.host.js.streams.get(name);
        if (stream === undefined || stream.created.toISOString() !== saved.created) continue;
        // Never past its log's end (a tail lost unsynced): at the next start, it would cover records no follower has.
        next[name] = { created: saved.created, hw: saved.hw.map((hw, p) => (p < stream.partitions.length ? Math.min(hw, logEnd(stream.partitions[p])) : hw)) };
      }
      for (const [key, role] of this.roles) {
        if (role.stream.dir === null) continue;
        const slash = key.lastIndexOf("/");
        const name = key.slice(0, slash);
        const p = Number(key.slice(slash + 1));
        // As it is now, not the highest written: a value past what the log holds must not stay (savedHighWatermark).
        const hw = Math.min(role.kind === "leader" ? role.gate.highWatermark : role.follower.highWatermark, logEnd(role.stream.partitions[p]));
        const created = role.stream.created.toISOString();
        const entry = next[name]?.created === created ? next[name] : (next[name] = { created, hw: [] });
        entry.hw[p] = hw;
      }
      for (const entry of Object.values(next)) for (let p = 0; p < entry.hw.length; p++) entry.hw[p] ??= 0;
      // Written when it differs from what this process wrote last (at the first write, from what was read).
      const text = JSON.stringify(next);
      if (text === this.writtenText) return;
      await writeJsonDurably(this.checkpointPath, next);
      this.checkpointed = Promise.resolve(next);
      this.writtenText = text;
      this.checkpointError = "";
    } catch (err) {
      // The same failure, time after time (a full disk), is told once.
      const why = (err as Error).message;
      if (why !== this.checkpointError) this.host.js.options.log.warn(`cluster: writing the replicas' high watermarks: ${why}`);
      this.checkpointError = why;
    }
  }

  private get self(): string {
    return this.host.cluster.self;
  }

  private get account(): string {
    return this.host.js.account.name;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.checkpointTimer);
    this.stopMembers();
    this.host.cluster.replicaHooks.delete(this.hook);
    for (const key of [...this.parked.keys()]) this.unpark(key, undefined);
    // The high watermarks as they are at the end, before the roles go: a clean restart starts its readers from them.
    this.closing = true;
    await this.writeCheckpoint();
    this.closing = false;
    const roles = [...this.roles];
    this.roles.clear();
    await Promise.all(roles.map(([key, r]) => this.end(Number(key.slice(key.lastIndexOf("/") + 1)), r, "the server is shutting down")));
  }

  /** Serves a follower's request (`rest`: `<stream>.<partition>`, `<stream>.consumers`), or a replica's (`<stream>.ends`). */
  serve(rest: string, body: Buffer, reply: string): void {
    if (reply === "") return;
    const dot = rest.lastIndexOf(".");
    if (rest.slice(dot + 1) === CONSUMERS) return this.serveConsumers(rest.slice(0, dot), body, reply);
    if (rest.slice(dot + 1) === ENDS) return this.serveEnds(rest.slice(0, dot), body, reply);
    const key = `${rest.slice(0, dot)}/${rest.slice(dot + 1)}`;
    const role = this.roles.get(key);
    if (role?.kind === "leader") return role.gate.leader.serve(body, (b) => this.host.answer(reply, b));
    if (this.takingUp(rest.slice(0, dot), rest.slice(dot + 1), key) && this.park(key, body, reply)) return;
    this.refuseNotLeader(key, reply);
  }

  private refuseNotLeader(key: string, reply: string): void {
    const slash = key.lastIndexOf("/");
    this.host.answer(reply, encodeError("not_leader", `${this.self} does not lead partition ${key.slice(slash + 1)} of stream ${key.slice(0, slash)}`));
  }

  /**
   * Whether the placement names this node leader of a replicated partition
   * it has not taken up yet (a settle is on its way). The partition as its
   * number is written (a role's key), so that PARK_MAX bounds it.
   */
  private takingUp(name: string, partition: string, key: string): boolean {
    if (this.closed || this.waiting.has(key)) return false;
    const p = Number(partition);
    if (!Number.isSafeInteger(p) || p < 0 || String(p) !== partition) return false;
    const placed = this.host.cluster.directory.get(this.account, name)?.placement;
    return placed !== undefined && placed.leaders[p] === this.self && replicasOf(placed, p).length > 1;
  }

  /** Holds a follower's request until the partition's role is kept here (`unpark`), or PARK_MS; false when PARK_MAX are held. */
  private park(key: string, body: Buffer, reply: string): boolean {
    let held = this.parked.get(key);
    if (held === undefined) this.parked.set(key, (held = []));
    if (held.length >= PARK_MAX) return false;
    const entry: ParkedRequest = {
      body,
      reply,
      timer: setTimeout(() => {
        const now = this.parked.get(key);
        const i = now?.indexOf(entry) ?? -1;
        if (i < 0) return;
        now!.splice(i, 1);
        if (now!.length === 0) this.parked.delete(key);
        this.refuseNotLeader(key, reply);
      }, PARK_MS),
    };
    entry.timer.unref();
    held.push(entry);
    return true;
  }

  /** The requests held for a partition whose role is now `role` (none: refused), in the order they came. */
  private unpark(key: string, role: Role | undefined): void {
    const held = this.parked.get(key);
    if (held === undefined) return;
    this.parked.delete(key);
    for (const r of held) clearTimeout(r.timer);
    for (const r of held) {
      try {
        if (role?.kind === "leader") role.gate.leader.serve(r.body, (b) => this.host.answer(r.reply, b));
        else this.refuseNotLeader(key, r.reply);
      } catch (err) {
        // Each is answered whatever became of the one before (the follower would otherwise wait out its own timeout).
        this.host.answer(r.reply, encodeFailure(err as Error));
      }
    }
  }

  /**
   * A page of the consumers of a stream led here, for a follower (a new
   * snapshot at the first page). A first page says which copy the follower
   * holds; if it is the state as it is now, the answer is "unchanged",
   * held back up to CONSUMERS_PARK_MS for a change unless a confirmed ack
   * waits for it.
   */
  private serveConsumers(name: string, body: Buffer, reply: string, heldSince?: number): void {
    const role = this.roles.get(`${name}/0`);
    let req: { follower?: unknown; cursor?: ConsumersCursor; stamp?: unknown; run?: unknown; held?: unknown; snapshot?: unknown; maxBytes?: unknown; lists?: unknown };
    try {
      req = JSON.parse(body.toString()) as typeof req;
    } catch {
      req = {};
    }
    const c = req.cursor;
    const refuse = (why: string): void => this.host.answer(reply, Buffer.from(JSON.stringify({ error: why })));
    if (role?.kind !== "leader" || role.copies === null || typeof req.follower !== "string" || !Number.isSafeInteger(c?.consumer) || !Number.isSafeInteger(c?.pending) || c!.consumer < 0 || c!.pending < 0) {
      return refuse(`${this.self} does not lead stream ${name}, or a bad request`);
    }
    const follower = req.follower;
    const copies = role.copies;
    if (!role.gate.leader.hasFollower(follower)) return refuse(`${follower} is not a replica of stream ${name}`);
    // Held from before the follower started over: its process is gone.
    if (heldSince !== undefined && copies.generation(follower) !== heldSince) return refuse(`${follower} started over`);
    const key = `${name}/${follower}`;
    let taken = this.snapshots.get(key)?.taken;
    let head: { stamp: string; run: string; version: number } | undefined;
    const first = c!.consumer === 0 && c!.pending === 0;
    // A later page comes from the snapshot its first page took, or not at all (a copy is never put together from two).
    if (!first && (taken === undefined || this.snapshots.get(key)!.version !== req.snapshot)) return refuse(`no copy of the consumers of stream ${name} under way for ${follower}`);
    if (first) {
      copies.holds(follower, req.run, req.held);
      const stamp = consumersStamp(role.stream);
      const same = req.stamp === stamp && req.run === copies.run;
      // Nothing new, or a copy of changes handed out moments ago: held until a confirmation waits, or the time is up. Not a
      // follower without every confirmed ack, which may join the ISR only once it holds them: under steady confirmations a
      // paced copy would be behind again by the time it is told.
      const hold = same ? CONSUMERS_PARK_MS : (this.copiedAt.get(key) ?? 0) + COPY_MIN_MS - Date.now();
      if (heldSince === undefined && hold > 0 && !copies.wanted(follower) && copies.holdsConfirmed(follower)) {
        this.snapshots.delete(key);
        const since = copies.generation(follower);
        const wake = (): void => {
          clearTimeout(timer);
          copies.unpark(follower, wake);
          this.serveConsumers(name, body, reply, since);
        };
        const timer = setTimeout(wake, hold);
        timer.unref();
        copies.park(follower, wake);
        return;
      }
      if (same) {
        this.snapshots.delete(key);
        // The follower's copy is the state as it is now: it holds this version.
        const version = copies.next();
        copies.holds(follower, copies.run, version);
        this.host.answer(reply, Buffer.from(JSON.stringify({ unchanged: true, run: copies.run, version })));
        return;
      }
      taken = takeConsumers(role.stream, Date.now());
      this.copiedAt.set(key, Date.now());
      head = { stamp, run: copies.run, version: copies.next() };
      this.snapshots.set(key, { version: head.version, taken });
    }
    const page = consumersAnswer(taken!, c!, answerLimit(req.maxBytes), req.lists === true);
    if (page.next === null) this.snapshots.delete(key);
    this.host.answer(reply, Buffer.from(JSON.stringify(head === undefined ? page : { ...page, ...head })));
  }

  /**
   * Copies the leader's consumers to this follower of a stream's first
   * partition, round after round while it follows a live leader: the leader
   * holds a round with nothing new (CONSUMERS_PARK_MS), so this is no busy
   * loop. A failed round waits for the next check.
   */
  private copyConsumers(name: string, role: FollowerRole, now: number): void {
    if (role.copying || now - role.consumersAt < CONSUMERS_MS) return;
    role.copying = true;
    const subject = `${REPL_PREFIX}${name}.${CONSUMERS}`;
    let unchanged = false;
    let head: { stamp?: string; run?: string; version?: number } = {};
    let failed = false;
    readConsumers(async (cursor) => {
      const first = cursor.consumer === 0 && cursor.pending === 0;
      const holding = first ? (role.consumers !== null ? { stamp: role.consumersStamp, run: role.consumersRun, held: role.consumersVersion } : {}) : { snapshot: head.version };
      // The answer comes over this node's route, which refuses a message past its max_payload.
      const maxBytes = Math.min(BATCH_BYTES, this.host.js.options.maxPayload);
      const b = await this.host.request(role.leader, subject, Buffer.from(JSON.stringify({ follower: this.self, cursor, maxBytes, lists: true, ...holding })), CONSUMERS_REQUEST_MS);
      if (b === null) throw new Error(`${role.leader} did not answer for the consumers`);
      if (first) {
        const r = JSON.parse(b.toString()) as { unchanged?: boolean; stamp?: string; run?: string; version?: number };
        head = { stamp: r.stamp, run: r.run, version: r.version };
        if (r.unchanged === true) {
          unchanged = true;
          return Buffer.from(JSON.stringify({ parts: [], next: null }));
        }
      }
      return b;
    })
      .then(async (copies) => {
        if (!unchanged) {
          // On disk before the leader hears that this node holds it (the next request says so): a confirmed ack survives a restart here.
          const run = head.run ?? null;
          const version = head.version ?? 0;
          try {
            const current = (): boolean => !this.closed && this.roles.get(`${name}/0`) === role && this.host.js.streams.get(name) === role.stream;
            await this.copyFileOf(role.stream)?.save({ consumers: copies, stamp: head.stamp, run, version }, current);
            this.copyFileErrors.delete(role.stream);
          } catch (err) {
            // Not kept: this node goes on saying it holds the last copy that was, and leaves the ISR if that holds up a confirmation.
            const why = (err as Error).message;
            if (this.copyFileErrors.get(role.stream) !== why) this.host.js.options.log.error(`cluster: the copy of the consumers of stream "${name}" could not be kept: ${why}`);
            this.copyFileErrors.set(role.stream, why);
            throw err;
          }
          role.consumers = copies;
          role.consumersStamp = head.stamp;
          role.stream.replicaConsumers = copies;
        }
        role.consumersRun = head.run ?? null;
        role.consumersVersion = head.version ?? 0;
      })
      .catch(() => {
        failed = true; // the next check tries again; a failover adopts the last copy that came whole (and kept)
      })
      .finally(() => {
        role.copying = false;
        role.consumersAt = failed ? Date.now() : 0;
        if (!failed && !this.closed && this.roles.get(`${name}/0`) === role && this.host.cluster.directory.isLive(role.leader)) this.copyConsumers(name, role, Date.now());
      });
  }

  /** Whether this node has taken up the leadership of a stream's first partition (its consumers adopted, its gate installed). */
  leads(name: string): boolean {
    return this.roles.get(`${name}/0`)?.kind === "leader";
  }

  /** The replicas of a stream's partition led here, as stream info's `cluster.replicas` (nats-server's form), or undefined. */
  replicaInfo(name: string, partition = 0): Array<Record<string, unknown>> | undefined {
    const role = this.roles.get(`${name}/${partition}`);
    if (role?.kind !== "leader") return undefined;
    return role.gate.leader.status().map((r) => ({
      name: r.name,
      current: r.inSync && r.lag === 0,
      ...(r.inSync ? {} : { offline: !this.host.cluster.directory.isLive(r.name) || undefined }),
      active: r.behindMs * 1_000_000,
      lag: r.lag,
    }));
  }

  // ---- roles follow the placement ----

  private async settle(name: string, local: Stream | undefined, placed: PlacedStream | undefined): Promise<void> {
    const partitions = local === undefined || placed === undefined ? 0 : placed.leaders.length;
    for (const key of this.waiting.keys()) {
      const slash = key.lastIndexOf("/");
      if (key.slice(0, slash) === name && Number(key.slice(slash + 1)) >= partitions) {
        this.waiting.delete(key);
        this.toldWaiting.delete(key);
      }
    }
    for (const [key, role] of this.roles) {
      const slash = key.lastIndexOf("/");
      if (key.slice(0, slash) !== name) continue;
      const p = Number(key.slice(slash + 1));
      if (p >= partitions || role.stream !== local) {
        this.roles.delete(key);
        await this.end(p, role, "the stream is no longer hosted here");
        role.stream.setReplicaGate(p, undefined);
        if (p === 0) role.stream.consumerCopyGate = null;
      }
    }
    if (local === undefined || placed === undefined || this.closed) return;
    // One partition's role failing to set up (its checkpoint cannot be written, say) leaves the others theirs; the settle
    // still fails, and is retried.
    let failed: unknown;
    for (let p = 0; p < partitions && !this.closed; p++) {
      try {
        await this.settlePartition(name, local, placed, p);
      } catch (err) {
        failed ??= err;
      }
    }
    if (failed !== undefined) throw failed;
  }

  /**
   * Keeps a role taken up by a settle, unless close() ran while it was
   * being taken up: close() ended the roles it found, not this one, whose
   * follower would fetch (and keep its process alive) and whose leader
   * would take writes after the node is gone.
   */
  private async keep(key: string, p: number, role: Role): Promise<void> {
    this.toldWaiting.delete(key);
    this.lost.get(role.stream)?.delete(p);
    if (!this.closed) {
      this.roles.set(key, role);
      this.unpark(key, role);
      return;
    }
    this.unpark(key, undefined);
    await this.end(p, role, "the server is shutting down");
  }

  private async settlePartition(name: string, stream: Stream, placed: PlacedStream, p: number): Promise<void> {
    const key = `${name}/${p}`;
    const role = this.roles.get(key);
    // Waiting (stepAside) is decided afresh by each settle.
    this.waiting.delete(key);
    const seen = this.partsOf(this.seen, stream);
    const first = !seen.has(p);
    seen.add(p);
    const set = replicasOf(placed, p);
    const self = this.self;
    if (set.length <= 1 || !set.includes(self)) {
      if (role !== undefined) {
        this.roles.delete(key);
        await this.end(p, role, "the partition is no longer replicated here");
        stream.setReplicaGate(p, undefined);
      }
      if (p === 0) {
        stream.consumerCopyGate = null;
        // Not to be read back if the stream is replicated here again: its consumers here are the ones that count now.
        await this.removeCopyFile(name, stream);
      }
      return;
    }
    const epoch = placed.epochs?.[p] ?? 1;
    const isr = placed.isr?.[p] ?? [...set];
    const leader = placed.leaders[p];
    if (leader === self) {
      if (role?.kind === "leader" && role.epoch === epoch) {
        // The size first: what the new ISR lets through is judged by it.
        role.gate.isrSize = isr.length;
        role.gate.minIsr = minIsrOf(placed, counted(placed, p, set));
        role.gate.leader.setIsr(isr);
        role.copies?.release();
        return;
      }
      // A copy that may lack what this leadership acknowledged passes it on to one that has it.
      const lost = this.partsOf(this.lost, stream);
      if (role === undefined && first && this.restartedCopy(stream, placed)) lost.add(p);
      if (role === undefined && lost.has(p) && (await this.stepAside(name, stream, p, epoch, set, isr, placed))) {
        this.unpark(key, undefined);
        return;
      }
      // Readers keep seeing what they saw: the high watermark carries over (a follower's as last heard; a leader's own when its
      // epoch changed; at a start, the one written down last).
      const hw = role?.kind === "follower" ? role.follower.highWatermark : role?.kind === "leader" ? role.gate.leader.highWatermark : await this.savedHighWatermark(stream, p);
      // Without a role (a start, a settle that failed), the copy kept on disk: it is there only while this node has followed since it led.
      const consumers = role?.kind === "follower" ? role.consumers : role === undefined && p === 0 ? ((await this.keptCopy(name, stream))?.consumers ?? null) : null;
      if (role !== undefined) {
        this.roles.delete(key);
        await this.end(p, role, `leader epoch ${epoch} begins`);
      }
      try {
        // The consumers to lead with replace this node's own before it leads: nobody reads its older ones as the leader's.
        if (consumers !== null) await this.adoptConsumers(name, stream, consumers);
        // They are this node's own now, and the copy kept on disk older than they will be: read back at a start, it would be
        // adopted over them.
        if (p === 0) {
          await this.copyFileOf(stream)
            ?.remove()
            .catch((err: Error) => {
              throw new Error(`the kept copy of the consumers of stream "${name}" could not be removed: ${err.message}`);
            });
        }
      } catch (err) {
        // Not leading so (a disk that refuses writes, say): another in-sync replica leads if one is live, else the settle
        // fails and is retried, the partition offline meanwhile.
        if (await this.handAside(name, p, epoch, isr, (err as Error).message)) {
          this.unpark(key, undefined);
          return;
        }
        throw err;
      }
      const led = await this.lead(name, stream, p, set, isr, epoch, hw, minIsrOf(placed, counted(placed, p, set)));
      await this.keep(key, p, led);
      return;
    }
    if (role?.kind === "follower" && role.epoch === epoch && role.leader === leader) return;
    // The consumers last copied stay until the new leader's are: taking over before its first copy, this node
    // adopts them rather than keep consumers of its own from an older leadership (their ack floors far behind).
    const copied = role?.kind === "follower" ? role.consumers : null;
    if (role !== undefined) {
      this.roles.delete(key);
      await this.end(p, role, `${leader} leads in epoch ${epoch}`);
      // Pull requests waiting here (a step-down, a drain's hand-over) would otherwise sit on consumers that no longer
      // deliver until they expire (a client's consume() stalled for its whole expiry, 30 s by default): each goes to the
      // new leader as the MSG.NEXT for what it still wants, as a move hands them over.
      if (role.kind === "leader" && p === 0 && this.host.handOver !== undefined) {
        const now = Date.now();
        for (const c of stream.consumers.values()) {
          for (const r of c.handOverWaiting(now)) this.host.handOver(leader, `$JS.API.CONSUMER.MSG.NEXT.${name}.${c.name}`, r.reply, r.body);
        }
      }
    }
    const next = await this.follow(name, stream, p, leader, epoch);
    // Kept from before a start (or a settle that failed): the leader is told which copy this is, and does not send it again if it is still the state.
    const saved = role === undefined && p === 0 ? await this.keptCopy(name, stream) : null;
    if (copied !== null) {
      next.consumers = copied;
      stream.replicaConsumers = copied;
    } else if (saved !== null) {
      next.consumers = saved.consumers;
      next.consumersStamp = saved.stamp;
      next.consumersRun = saved.run;
      next.consumersVersion = saved.version;
      stream.replicaConsumers = saved.consumers;
    }
    await this.keep(key, p, next);
  }

  /** The file a follower of this stream's first partition keeps its copy of the consumers in; null for a stream in memory. */
  private copyFileOf(stream: Stream): ConsumerCopyFile | null {
    if (stream.dir === null) return null;
    let file = this.copyFiles.get(stream);
    if (file === undefined) this.copyFiles.set(stream, (file = new ConsumerCopyFile(stream.dir, stream.created.toISOString())));
    return file;
  }

  /** The copy kept on disk, if any. One that cannot be read is reported, and this node goes on without (it takes over last). */
  private async keptCopy(name: string, stream: Stream): Promise<HeldCopy | null> {
    try {
      return (await this.copyFileOf(stream)?.load()) ?? null;
    } catch (err) {
      this.host.js.options.log.error(`cluster: the kept copy of the consumers of stream "${name}" cannot be read, and is not used: ${(err as Error).message}`);
      return null;
    }
  }

  /** Where the stream is no longer replicated here; a failure is reported. */
  private async removeCopyFile(name: string, stream: Stream): Promise<void> {
    try {
      await this.copyFileOf(stream)?.remove();
    } catch (err) {
      this.host.js.options.log.error(`cluster: the kept copy of the consumers of stream "${name}" could not be removed: ${(err as Error).message}`);
    }
  }

  /**
   * Whether the leadership the placement gives this node over a copy that
   * may not hold what it acknowledged (unsyncedCopy) was taken before this
   * instance began (a restart): a copy in memory then lost every record
   * it held, one synced on an interval maybe its unsynced tail. Asked at
   * the first settle of the partition here only (a stream scaled up from
   * one replica on a running node holds everything acknowledged since the
   * node started).
   */
  private restartedCopy(stream: Stream, placed: PlacedStream): boolean {
    const made = placed.created === undefined ? NaN : Date.parse(placed.created);
    // A placement without a readable time is taken as older: stepping aside costs a failover, leading may cost acknowledged records.
    return this.unsyncedCopy(stream) !== null && !(made >= this.startedAt);
  }

  /**
   * Why this node's copy of `stream` may lack what it acknowledged before
   * its node restarted, or null when it cannot: it is in memory, or its
   * node syncs on an interval, whose unsynced tail a machine crash loses
   * (a killed process loses nothing it wrote, but a restarted one cannot
   * tell the two apart). The follower's bar treats such copies alike (barOf).
   */
  private unsyncedCopy(stream: Stream): string | null {
    if (stream.dir === null) return "this copy, in memory, lost what it held when its node restarted";
    if (this.madeAfresh(stream)) return "this copy was made afresh at this start for a stream placed before it: what its node held of it is gone (its files removed, its disk replaced)";
    const sync = this.host.js.options.sync ?? "always";
    return sync === "always" ? null : `this copy, synced ${sync === "never" ? "only when the system writes it back" : "on an interval"}, may have lost its unsynced tail when its node restarted`;
  }

  /**
   * Whether this node's copy of `stream` was made by this instance for a
   * placement older than it: a replica that is new here (a stream made or
   * scaled up while it was away), or one whose files were gone at the start
   * (removed, an ephemeral disk replaced). Either may lack what was
   * acknowledged, so it is treated as a copy in memory is: it does not lead
   * at its first settle (restartedCopy), and as a follower it may lead only
   * once it holds its leader's end (barOf). Leading the same epoch empty, it
   * would have cut its followers back to nothing.
   */
  private madeAfresh(stream: Stream): boolean {
    const placed = stream.placed === undefined ? NaN : Date.parse(stream.placed);
    return stream.created.getTime() >= this.startedAt && !(placed >= this.startedAt);
  }

  /**
   * This node is named leader of partition `p` in `epoch`, and its copy
   * may lack what that leadership acknowledged before the node restarted
   * (restartedCopy: in memory it lost everything, synced on an interval
   * maybe its tail). Leading, it would cut its followers back to what it
   * holds: acknowledged records lost to one fault. Instead, in one fenced write,
   * another replica is named leader in the next epoch and this node leaves
   * the ISR (it follows, and rejoins once caught up, as any follower):
   *
   * - a live in-sync replica (not draining, if one is): every ISR member
   *   holds everything acknowledged;
   * - with this node the only in-sync one (its followers fell out, so with
   *   a minimum ISR above one nothing was acknowledged since), the replica
   *   whose copy is the most up to date, once every replica is live and has
   *   said (`<stream>.ends`): the latest leader epoch it holds records of,
   *   then its end, as Raft compares logs; the last to leave the ISR holds
   *   everything acknowledged. If this copy is that, it leads.
   *
   * True when it stepped aside or waits (no role here, the partition
   * offline until a candidate is live: `waiting`, settled again at the
   * checks); false when this node should lead.
   */
  private async stepAside(name: string, stream: Stream, p: number, epoch: number, replicas: readonly string[], isr: readonly string[], placed: PlacedStream): Promise<boolean> {
    const why = this.unsyncedCopy(stream) ?? "this copy may lack what it acknowledged before its node restarted";
    const self = this.self;
    const key = `${name}/${p}`;
    const directory = this.host.cluster.directory;
    const others = isr.filter((n) => n !== self);
    let to: string | undefined;
    if (others.length > 0) {
      to = this.liveOther(isr);
      if (to === undefined) return this.wait(key, name, `partition ${p} of stream "${name}" waits for another in-sync replica (${others.join(", ")}) to lead it: ${why}`);
    } else {
      const rest = replicas.filter((n) => n !== self);
      if (rest.length === 0) return false;
      const down = rest.filter((n) => !directory.isLive(n));
      if (down.length > 0) return this.wait(key, name, `partition ${p} of stream "${name}" waits for its replicas ${down.join(", ")}: this node is its only in-sync replica, ${why}, and the most up-to-date copy is to lead it`);
      const ends = await Promise.all(rest.map((n) => this.copyEnd(n, name, p, placed.created)));
      if (ends.some((e) => e === null)) return this.wait(key, name, `partition ${p} of stream "${name}" waits for every replica to tell what it holds: this node is its only in-sync replica, ${why}`);
      let best = { epoch: (await this.epochsOf(stream, p)).latest(), end: logEnd(stream.partitions[p]) };
      ends.forEach((e, i) => {
        if (e!.epoch > best.epoch || (e!.epoch === best.epoch && e!.end > best.end)) [best, to] = [e!, rest[i]];
      });
      if (to === undefined) return false;
    }
    await this.handTo(name, p, epoch, to, others.length > 0, why);
    return true;
  }

  /** Hands the leadership this node was given over to another live in-sync replica, if there is one (true), because `why`. */
  private async handAside(name: string, p: number, epoch: number, isr: readonly string[], why: string): Promise<boolean> {
    const to = this.liveOther(isr);
    if (to === undefined) return false;
    try {
      await this.handTo(name, p, epoch, to, true, why);
      return true;
    } catch {
      return false; // the placement changed meanwhile, or etcd did not answer: the settle fails, and the next one looks again
    }
  }

  /** A live member of `isr` other than this node to lead in its place, one not draining first; undefined if none. */
  private liveOther(isr: readonly string[]): string | undefined {
    const directory = this.host.cluster.directory;
    const draining = new Set(directory.nodes().filter((n) => n.draining === true).map((n) => n.name));
    const live = isr.filter((n) => n !== this.self && directory.isLive(n));
    return live.find((n) => !draining.has(n)) ?? live[0];
  }

  /** One fenced change: `to` leads partition `p` in the next epoch; this node leaves the ISR (`inIsr`: `to` is in it) or `to` is its only member. */
  private async handTo(name: string, p: number, epoch: number, to: string, inIsr: boolean, why: string): Promise<void> {
    const self = this.self;
    await this.host.cluster.directory.update(this.account, name, (pl) => {
      if (pl.leaders[p] !== self || (pl.epochs?.[p] ?? 1) !== epoch) throw new Error("the partition's leadership changed meanwhile");
      const isrs = pl.isr ?? pl.leaders.map((_, i) => [...replicasOf(pl, i)]);
      if (inIsr ? !isrs[p].includes(to) : isrs[p].length !== 1 || isrs[p][0] !== self) throw new Error("the partition's in-sync replicas changed meanwhile");
      const epochs = [...(pl.epochs ?? pl.leaders.map(() => 1))];
      epochs[p] = epoch + 1;
      isrs[p] = inIsr ? isrs[p].filter((n) => n !== self) : [to];
      return { ...pl, leaders: pl.leaders.map((l, i) => (i === p ? to : l)), epochs, isr: isrs };
    });
    this.host.js.options.log.warn(`cluster: partition ${p} of stream "${name}" of account ${this.account} handed to ${to} in epoch ${epoch + 1}: ${why}`);
  }

  /** Leaves partition `key` without a role until settled again (at the next checks); tells why once. */
  private wait(key: string, name: string, why: string): true {
    if (this.toldWaiting.get(key) !== why) this.host.js.options.log.warn(`cluster: ${why}`);
    this.toldWaiting.set(key, why);
    this.waiting.set(key, name);
    return true;
  }

  /** The latest leader epoch `node`'s copy of partition `p` of `name` holds records of, and the sequence after its last; null when it does not say. */
  private async copyEnd(node: string, name: string, p: number, created: string | undefined): Promise<{ epoch: number; end: number } | null> {
    const b = await this.host.request(node, `${REPL_PREFIX}${name}.${ENDS}`, Buffer.from(JSON.stringify({ partition: p, created })), ENDS_REQUEST_MS);
    if (b === null) return null;
    try {
      const a = JSON.parse(b.toString()) as { end?: unknown; epoch?: unknown };
      return Number.isSafeInteger(a.end) && Number.isSafeInteger(a.epoch) ? { epoch: a.epoch as number, end: a.end as number } : null;
    } catch {
      return null;
    }
  }

  /** Answers what this node's copy of a partition holds (`ends`): the latest leader epoch it has records of, and the sequence after its last. */
  private serveEnds(name: string, body: Buffer, reply: string): void {
    let p = -1;
    let created: unknown;
    try {
      ({ partition: p = -1, created } = JSON.parse(body.toString()) as { partition?: number; created?: unknown });
    } catch {
      // answered below
    }
    const stream = this.host.js.streams.get(name);
    const log = stream !== undefined && Number.isSafeInteger(p) && p >= 0 ? stream.partitions[p] : undefined;
    // A copy made for another stream of the name (Stream.placed) says nothing of this one's records.
    const other = stream?.placed !== undefined && typeof created === "string" && stream.placed !== created;
    if (stream === undefined || log === undefined || other) return this.host.answer(reply, Buffer.from(JSON.stringify({ error: `no copy of partition ${p} of stream ${name} (placed ${String(created)}) here` })));
    // The epochs first, then the end: a record of a newer epoch appended meanwhile makes the copy look older, never newer.
    this.epochsOf(stream, p).then(
      (e) => this.host.answer(reply, Buffer.from(JSON.stringify({ epoch: e.latest(), end: logEnd(log) }))),
      (err: Error) => this.host.answer(reply, Buffer.from(JSON.stringify({ error: err.message }))),
    );
  }

  /**
   * A follower taking over: the consumers the old leader had at the last
   * copy, at that state (acks since then are lost: those deliveries come
   * again). One this node has already is left from an earlier leadership
   * here, older than the copy (made while following a later leader): the
   * copy replaces it, or its ack floor would go back to that leadership's.
   */
  private async adoptConsumers(name: string, stream: Stream, copies: readonly ConsumerCopy[]): Promise<void> {
    const js = this.host.js;
    // Out of sight at once: no reader (consumer info, a pull) meets this node's own older consumers while the copy is adopted.
    const local = [...stream.consumers.values()];
    stream.consumers.clear();
    const kept = new Set(copies.map((c) => c.name));
    for (const c of local) {
      try {
        // One the leader did not have was deleted there (or is this node's own from an older leadership).
        if (kept.has(c.name)) await c.stop();
        else await js.removeConsumer(stream, c, " (not among the consumers of the leader taken over from)");
      } catch (err) {
        js.options.log.warn(`cluster: consumer "${c.name}" of stream "${name}" could not be replaced: ${(err as Error).message}`);
      }
    }
    let adopted = 0;
    let failed: Error | undefined;
    for (const c of copies) {
      try {
        await js.adoptMovedConsumer(stream, c.name, c.config, new Date(c.created), c.state);
        adopted++;
      } catch (err) {
        failed ??= err as Error;
        js.options.log.warn(`cluster: consumer "${c.name}" of stream "${name}" could not be taken over: ${(err as Error).message}`);
      }
    }
    if (adopted > 0) js.options.log.info(`cluster: took over ${adopted} consumers of stream "${name}" of account ${this.account}`);
    // Leading without one would lose its confirmed acks (or bring back an older state of it at the next start): the
    // settle fails and is retried, with the copy still kept.
    if (failed !== undefined) throw new Error(`the consumers of stream "${name}" could not all be taken over: ${failed.message}`);
  }

  /**
   * The leader-epoch checkpoint of partition `p` of `stream`: its file, or
   * for a memory stream one kept in memory across the roles of this
   * process (a fresh one per role would make a follower of each new epoch
   * cut its whole copy and fetch it again while still in the ISR).
   */
  private async epochsOf(stream: Stream, p: number): Promise<LeaderEpochs> {
    if (stream.dir !== null) return LeaderEpochs.open(join(stream.dir, `p${p}`, LEADER_EPOCHS_FILE));
    let kept = this.memoryEpochs.get(stream);
    if (kept === undefined) this.memoryEpochs.set(stream, (kept = new Map()));
    let epochs = kept.get(p);
    if (epochs === undefined) kept.set(p, (epochs = LeaderEpochs.inMemory()));
    return epochs;
  }

  private async lead(name: string, stream: Stream, p: number, replicas: readonly string[], isr: readonly string[], epoch: number, hw: number | undefined, minIsr: number): Promise<LeaderRole> {
    const log = stream.partitions[p];
    const epochs = await this.epochsOf(stream, p);
    let copies: ConsumerCopies | null = null;
    const leader = await ReplicaLeader.create({
      self: this.self,
      log,
      epochs,
      epoch,
      replicas,
      isr,
      ...(hw !== undefined && hw > 0 ? { highWatermark: hw } : {}),
      // Readers that wait for new data (a Kafka fetch) wait for the high watermark, not for the append.
      onAdvance: () => stream.replicaAdvanced(p),
      // A restarted follower's copy of the consumers is gone with its process.
      onStartOver: (follower) => copies?.forget(follower),
      ...(this.host.js.options.answerBudget !== undefined ? { answerBudget: this.host.js.options.answerBudget } : {}),
      lendAnswers: true,
    });
    log.setLimits(limitsOf(stream.config));
    // What the stream derives from its log (the de-duplication window; a door's per-partition state) was not kept while
    // following, except the ids of messages removed since they were copied (rememberCopies).
    if (stream.partitions.length === 1) await stream.recover({ logOnly: true, keepRemoved: true });
    stream.arrivals[p] = (stream.arrivals[p] ?? 0) + 1;
    stream.followerCopy = false;
    const gate = new LeaderGate(leader, minIsr, isr.length, () => this.host.holdsLease());
    stream.setReplicaGate(p, gate);
    this.host.js.options.log.info(`cluster: leading partition ${p} of stream "${name}" of account ${this.account} in epoch ${epoch} (replicas ${replicas.join(", ")}; in sync ${isr.join(", ")}; ${span(stream.partitions[p])})`);
    // The consumers to lead with are in place (adopted before this): acks and consumer changes are confirmed once the followers copied them.
    if (p === 0) {
      const c = (copies = new ConsumerCopies(leader.run, () => leader.counted));
      stream.consumerCopyGate = (done, failed) => c.whenCopied(done, Date.now(), failed);
      // Their delivery was held while this node did not lead (Stream.consumersHeld): it goes on now.
      for (const consumer of stream.consumers.values()) consumer.notify();
    }
    return { kind: "leader", stream, epoch, gate, copies, uncertain: new Set(), failedSince: 0, failedAtSeq: 0, healthySince: 0, failuresSeen: stream.partitions[p].failures ?? 0 };
  }

  private async follow(name: string, stream: Stream, p: number, leader: string, epoch: number): Promise<FollowerRole> {
    const log = stream.partitions[p];
    // Readers see what the follower knows replicated (nothing until its first fetch), and writes are refused, from now on.
    let follower: ReplicaFollower | undefined;
    stream.setReplicaGate(p, new NotLeaderGate(() => follower?.highWatermark ?? 0, `${leader} leads partition ${p} of stream "${name}"`));
    // Writes this node accepted as leader reach the log before the follower may cut it.
    await settled(() => stream.partitionQuiet(p), Date.now() + QUIET_MS, 10);
    // The leader's limits decide what stays; the follower applies what it is sent.
    log.setLimits({});
    const epochs = await this.epochsOf(stream, p);
    const subject = `${REPL_PREFIX}${name}.${p}`;
    const logger = this.host.js.options.log;
    let lastError = "";
    const c = stream.config;
    // No limits take its oldest in time: a prefix this copy lacks and its leader holds would stay lacking (a KV key never written
    // again), so it is fetched again. Acks (work queue, interest) and front limits remove such a prefix at the leader soon.
    const refetchPrefix = c.retention === "limits" && !(c.max_msgs > 0 || c.max_bytes > 0 || c.max_age > 0);
    // Only an append-only stream's front moves by a purge alone: no limits, acks or per-subject evictions take its oldest.
    const appendOnly = refetchPrefix && !(c.max_msgs_per_subject > 0);
    follower = new ReplicaFollower({
      self: this.self,
      log,
      epochs,
      epoch,
      bar: await this.barOf(stream, p, epoch),
      transport: {
        request: (body, ms) => this.host.request(leader, subject, body, ms),
        // A memory log keeps the records it is given, views of the answer: its answers are never taken back.
        ...(stream.dir !== null && this.host.releaseAnswer !== undefined ? { release: this.host.releaseAnswer } : {}),
      },
      // The answer comes over this node's route, which refuses a message past its max_payload.
      maxBytes: Math.min(FETCH_BYTES, this.host.js.options.maxPayload),
      maxPayload: this.host.js.options.maxPayload,
      onError: (err) => {
        // The same failure, round after round, is told once.
        if (err.message === lastError) return;
        lastError = err.message;
        logger.warn(`cluster: following ${leader} for partition ${p} of stream "${name}": ${err.message}`);
      },
      wholeLog: refetchPrefix,
      onFetched: () => {
        lastError = "";
      },
      onCopied: async (items) => {
        if (stream.partitions.length === 1) stream.rememberCopies(items);
        for (const l of this.host.js.copyListeners) await l(stream, p, items);
      },
      onCutting: async (from) => {
        if (stream.partitions.length !== 1) return;
        stream.forgetFrom(from);
        // The ids a clean stop saved may name what goes: not to be read back at a start after the log is refilled.
        await stream.dropSavedDedup();
      },
      onCut: (from) => {
        // Lower than told before when a Kafka batch across the cut went whole.
        if (stream.partitions.length === 1) stream.forgetFrom(from);
        for (const l of this.host.js.cutListeners) l(stream, p, from);
      },
      onRemoved: (r) => {
        // Unless append-only, the leader's log start moves all the time (limits, acks, a key's new value), and each fetch follows it.
        if (r.fetched && r.how === "purged" && !appendOnly) return;
        logger.warn(`cluster: partition ${p} of stream "${name}": ${r.how} ${r.messages} messages of ${r.from}..${r.to}, ${r.why}, following ${leader} in epoch ${epoch}`);
      },
    });
    // Closed while this was set up: the role is ended at once (keep), and its follower never fetches.
    if (!this.closed) follower.start();
    stream.followerCopy = true;
    if (p === 0) {
      stream.consumerCopyGate = REFUSE_CONSUMER_COPIES;
      // A pull still waiting here (not handed over: a leadership that ended without a hand-over, such as a lost lease) gets
      // nothing from a follower, and the heartbeats its consumer would go on sending hide that: its client would wait out
      // the whole expiry. Each ends with its 408 (what it still wanted in its headers) and is asked again, of the new leader.
      for (const consumer of stream.consumers.values()) consumer.endWaiting();
    }
    logger.info(`cluster: following ${leader} for partition ${p} of stream "${name}" of account ${this.account} in epoch ${epoch} (${span(log)})`);
    return { kind: "follower", stream, epoch, leader, follower, proposeAt: 0, consumers: null, consumersStamp: undefined, consumersVersion: 0, consumersRun: null, consumersAt: 0, copying: false };
  }

  /**
   * The bar on leading a new follower of partition `p` starts with: as this
   * process last knew it; else, for the first role since the log was opened,
   * the file's, or not known for a copy that may have lost what it
   * acknowledged across a restart (in memory, or unsynced under a sync
   * interval): it may lead once it holds its leader's end as its first
   * reconciliation saw it.
   */
  private async barOf(stream: Stream, p: number, epoch: number): Promise<{ initial: number; save(bar: number): Promise<void> }> {
    const known = this.barsOf(stream);
    const remembered = known.get(p);
    const stored =
      stream.dir === null
        ? { initial: Number.MAX_SAFE_INTEGER, save: () => Promise.resolve() }
        : await followerBar(join(stream.dir, `p${p}`, FOLLOWER_BAR_FILE), epoch, ((this.host.js.options.sync ?? "always") !== "always" || this.madeAfresh(stream)) && remembered === undefined);
    return {
      initial: remembered ?? stored.initial,
      save: async (bar) => {
        await stored.save(bar);
        known.set(p, bar);
      },
    };
  }

  private partsOf(of: WeakMap<Stream, Set<number>>, stream: Stream): Set<number> {
    let parts = of.get(stream);
    if (parts === undefined) of.set(stream, (parts = new Set()));
    return parts;
  }

  private barsOf(stream: Stream): Map<number, number> {
    let known = this.bars.get(stream);
    if (known === undefined) this.bars.set(stream, (known = new Map()));
    return known;
  }

  /** Ends a role; the partition keeps a gate (writes refused, readers capped) until the next role's, or until its caller removes it. */
  private async end(p: number, role: Role, why: string): Promise<void> {
    // What the next follower of this process starts from: a leader held everything; a follower its bar as it stands.
    this.barsOf(role.stream).set(p, role.kind === "leader" ? 0 : role.follower.bar);
    if (role.kind === "leader") {
      if (role.stream.replicaGate(p) === role.gate) {
        const hw = role.gate.highWatermark;
        role.stream.setReplicaGate(p, new NotLeaderGate(() => hw, `this node no longer leads partition ${p}: ${why}`));
      }
      role.gate.leader.close(why);
      if (role.copies !== null) {
        role.copies.close();
        role.stream.consumerCopyGate = REFUSE_CONSUMER_COPIES;
        const prefix = `${role.stream.config.name}/`;
        for (const key of this.snapshots.keys()) if (key.startsWith(prefix)) this.snapshots.delete(key);
        for (const key of this.copiedAt.keys()) if (key.startsWith(prefix)) this.copiedAt.delete(key);
      }
    } else {
      await role.follower.close();
      role.stream.replicaConsumers = null;
      // A copy being written lands before the next role (or a removal of the stream's directory) goes on.
      if (p === 0) await this.copyFileOf(role.stream)?.idle();
    }
  }

  /** Whether a node may be handed a leadership now: another node, live, not draining. */
  private canTakeOver(): (node: string) => boolean {
    const directory = this.host.cluster.directory;
    const draining = new Set(directory.nodes().filter((n) => n.draining === true).map((n) => n.name));
    return (n) => n !== this.self && directory.isLive(n) && !draining.has(n);
  }

  /** The live, not draining, in-sync replica a partition's leadership would go to (`preferred` if it is one); throws if none. */
  handOverTarget(name: string, p: number, preferred?: string): string {
    const directory = this.host.cluster.directory;
    const isr = directory.get(this.account, name)?.placement.isr?.[p] ?? [];
    const fit = this.canTakeOver();
    const to = preferred !== undefined ? (isr.includes(preferred) && fit(preferred) ? preferred : undefined) : isr.find(fit);
    if (to === undefined) throw new Error(preferred !== undefined ? `${preferred} is not a live in-sync replica` : "no other in-sync replica is live to take over");
    return to;
  }

  /**
   * Hands the leadership of partition `p` of `name` to an in-sync replica
   * (a drain, nats-server's leader stepdown): writes are refused from now,
   * the ones in flight are waited for until every in-sync replica has
   * them, then one fenced write names the other replica leader in a new
   * epoch (this node stays in the ISR, and follows). Nothing acknowledged
   * is lost, nothing is left half written. Resolves with the new leader.
   * With `caughtUpWithinMs`, refused at once (nothing refused to writers)
   * when an in-sync replica has not caught up within that long.
   */
  async handOver(name: string, p: number, deadline: number, preferred?: string, caughtUpWithinMs?: number): Promise<string> {
    const key = `${name}/${p}`;
    const role = this.roles.get(key);
    if (role?.kind !== "leader") throw new Error("not led here");
    const to = this.handOverTarget(name, p, preferred);
    // Asked only if nobody is behind (the automatic rebalance): an in-sync replica slow to fetch would hold writes refused
    // for the whole deadline. Looked at before anything is refused.
    if (caughtUpWithinMs !== undefined) {
      const behind = role.gate.leader.lagging(caughtUpWithinMs);
      if (behind.length > 0) throw new Error(`in-sync replica ${behind.join(", ")} has not caught up within ${caughtUpWithinMs} ms`);
    }
    const directory = this.host.cluster.directory;
    const gate = role.gate;
    // Counted, not a flag: hand-overs may overlap (a step-down, a drain, elections asked of several brokers), and one that
    // fails must not take writes again while another still waits to name the successor.
    gate.handingOver++;
    /** The copy's revision when an unanswered attempt failed (it read none later); 0: every attempt was answered. */
    let unknownUpTo = 0;
    try {
      // Everything written before the refusal reaches every in-sync replica (nothing is left for the new leader to cut).
      const caughtUp = (): boolean => role.stream.partitionQuiet(p) && gate.leader.highWatermark >= gate.leader.logEnd;
      if (!(await settled(caughtUp, Date.now() + (deadline - performance.now()), 20))) throw new Error("writes in flight did not reach the other replicas in time");
      const self = this.self;
      const handedOver = (pl: PlacedStream): PlacedStream => {
        if (pl.leaders[p] !== self || (pl.epochs?.[p] ?? 1) !== role.epoch || !(pl.isr?.[p] ?? []).includes(to)) throw new Error("the partition's leadership or ISR changed meanwhile");
        const epochs = [...(pl.epochs ?? pl.leaders.map(() => 1))];
        epochs[p] = role.epoch + 1;
        return { ...pl, leaders: pl.leaders.map((l, i) => (i === p ? to : l)), epochs };
      };
      // Sent and not answered, a change may have been applied: taking writes again then would acknowledge (at acks=1) what
      // the successor never gets. Writes stay refused until it is known: the change is made again (each attempt compares
      // the revision it read, so at most one applies) until one is answered, or until this node's copy of the placement,
      // newer than any an unanswered attempt read, says where the leadership is. Every failure meanwhile (etcd refusing
      // before sending, a change found that the copy has not caught up with) leaves it unknown. A lost lease ends it:
      // writes are refused without one, no attempt can apply after it (each is fenced by the lease), and the copy holds
      // whatever applied before this node has a lease again.
      for (let backoff = AMBIGUOUS_RETRY_MS; ; backoff = Math.min(2 * backoff, AMBIGUOUS_RETRY_MAX_MS)) {
        try {
          await directory.update(this.account, name, handedOver);
          gate.handedTo = to;
          return to;
        } catch (err) {
          if ((err as { maybeApplied?: unknown }).maybeApplied === true) unknownUpTo = Math.max(unknownUpTo, directory.get(this.account, name)?.revision ?? 0);
          if (unknownUpTo === 0 || this.closed || (err as Error).name === "FencedError" || this.leadershipAfter(name, p, role.epoch, unknownUpTo) !== "unknown") throw err;
          this.host.js.options.log.warn(`cluster: handing partition ${p} of stream "${name}" over to ${to}: ${(err as Error).message}; writes stay refused until it is known whether an earlier attempt applied`);
          await new Promise((resolve) => setTimeout(resolve, backoff));
        }
      }
    } catch (err) {
      // After an unanswered attempt, writes are taken again only where no attempt can have moved the leadership.
      if (unknownUpTo === 0 || (err as Error).name === "FencedError" || this.leadershipAfter(name, p, role.epoch, unknownUpTo) === "here") gate.handingOver--;
      throw err;
    }
  }

  /**
   * After an unanswered hand-over of partition `p`: "moved" when this
   * node's copy of the placement no longer names it leader in `epoch` (that
   * attempt's doing or another change's, writes are not taken again here
   * either way), "here" when a copy newer than revision `after` still does
   * (no attempt can apply any more: each compared a revision at or below
   * it), else "unknown".
   */
  private leadershipAfter(name: string, p: number, epoch: number, after: number): "moved" | "here" | "unknown" {
    const e = this.host.cluster.directory.get(this.account, name);
    if (e === undefined || e.placement.leaders[p] !== this.self || (e.placement.epochs?.[p] ?? 1) !== epoch) return "moved";
    return e.revision > after ? "here" : "unknown";
  }

  // ---- the ISR and failover ----

  /** Looks at every partition replicated here: a leader at its ISR, a follower at its leader. */
  private check(): void {
    if (this.closed) return;
    const now = Date.now();
    // Partitions waiting for a replica to take them are settled again (a member came back, or answers now).
    if (this.waiting.size > 0 && now - this.lastWaitSettle >= WAIT_SETTLE_MS) {
      this.lastWaitSettle = now;
      for (const name of new Set(this.waiting.values())) {
        if (this.resettling.has(name)) continue;
        this.resettling.add(name);
        void this.host.cluster
          .settle(this.account, name)
          .catch(() => undefined)
          .finally(() => this.resettling.delete(name));
      }
    }
    for (const [key, role] of this.roles) {
      // Also while a change is under way (a follower leaving the ISR may be why its answers are stale).
      if (role.kind === "leader") role.gate.leader.forgetStaleAnswers();
      if (this.changing.has(key)) continue;
      const slash = key.lastIndexOf("/");
      const name = key.slice(0, slash);
      const p = Number(key.slice(slash + 1));
      if (role.kind === "leader") {
        if (!this.handFailedLog(key, name, p, role, now)) this.checkIsr(key, name, p, role);
      } else {
        this.checkLeader(key, name, p, role, now);
        if (p === 0 && this.host.cluster.directory.isLive(role.leader)) this.copyConsumers(name, role, now);
      }
    }
  }

  /**
   * A leader whose log has been failing for FAILED_LEADER_MS (failed, or
   * reopened and not yet shown to take writes: see FAILED_CLEARED_MS) and
   * is failed now hands the partition to a live in-sync replica (one that
   * is not draining first):
   * every ISR member holds everything acknowledged, and its followers stay
   * in the ISR meanwhile (a fetch from a failed log is not counted as lag).
   * What this log holds past the high watermark was never acknowledged; as
   * a follower it is cut back to the new leader's log once reopened. True
   * while the hand-over is under way.
   */
  private handFailedLog(key: string, name: string, p: number, role: LeaderRole, now: number): boolean {
    const log = role.stream.partitions[p];
    const state = log.state();
    const failures = log.failures ?? 0;
    // Failed since the last check, though reopened already (a reopen after 1 s takes a moment): the 500 ms checks miss such.
    const failedMeanwhile = failures > role.failuresSeen;
    role.failuresSeen = failures;
    const error = state.error ?? (failedMeanwhile ? "failed again since the last check, reopened since" : null);
    if (error === null) {
      if (role.failedSince === 0) return false;
      if (role.healthySince === 0) role.healthySince = now;
      if (state.lastSeq > role.failedAtSeq && now - role.healthySince >= FAILED_CLEARED_MS) role.failedSince = role.healthySince = 0;
      return false;
    }
    role.healthySince = 0;
    if (role.failedSince === 0) {
      role.failedSince = now;
      role.failedAtSeq = state.lastSeq;
    }
    if (now - role.failedSince < FAILED_LEADER_MS || !this.host.holdsLease()) return false;
    const placed = this.host.cluster.directory.get(this.account, name)?.placement;
    if (placed === undefined || placed.leaders[p] !== this.self || (placed.epochs?.[p] ?? 1) !== role.epoch) return false;
    const isr = placed.isr?.[p] ?? replicasOf(placed, p);
    if (this.liveOther(isr) === undefined) return false;
    this.changing.add(key);
    void this.handAside(name, p, role.epoch, isr, `its log here has been failing for ${Math.round((now - role.failedSince) / 1000)} s (${error})`).finally(() => this.changing.delete(key));
    return true;
  }

  private checkIsr(key: string, name: string, p: number, role: LeaderRole): void {
    if (!this.host.holdsLease()) return;
    const directory = this.host.cluster.directory;
    const placed = directory.get(this.account, name)?.placement;
    if (placed === undefined || placed.leaders[p] !== this.self || (placed.epochs?.[p] ?? 1) !== role.epoch) return;
    const agreed = placed.isr?.[p] ?? replicasOf(placed, p);
    // Joiners of a change etcd may have applied without saying so are members until a write settles it.
    for (const n of role.uncertain) if (agreed.includes(n)) role.uncertain.delete(n);
    const isr = [...agreed, ...role.uncertain];
    const leader = role.gate.leader;
    // Members etcd has that this leader does not count yet (such a joiner, its change seen before the settle that applies
    // it has run): counted from now, or the high watermark could pass what one lacks, and it may take over.
    const counting = leader.inSync;
    if (agreed.some((n) => !counting.includes(n))) leader.setIsr(agreed);
    const copies = role.copies;
    copies?.release();
    // Joiners lag too (they are counted), but leave by no longer being proposed.
    const out = new Set(leader.lagging(LAG_MAX_MS).filter((n) => isr.includes(n)));
    // A follower that holds up confirmed acks by not copying the consumers is as far behind as one that does not fetch.
    if (copies !== null) for (const n of copies.holdingUp(LAG_MAX_MS, Date.now())) if (isr.includes(n)) out.add(n);
    for (const n of isr) if (n !== this.self && !directory.isLive(n)) out.add(n);
    // One that joins holds the consumers with every confirmed ack: it may take over, and adopts its copy then.
    const back = leader.readyToJoin(LAG_MAX_MS).filter((n) => directory.isLive(n) && !isr.includes(n) && (copies === null || copies.holdsConfirmed(n)));
    // Joiners count for the high watermark from now on, not from when etcd has them (KIP-497); one no longer ready
    // after a refused change stops counting, one still ready is proposed again.
    leader.joining([...back, ...role.uncertain]);
    if (out.size === 0 && back.length === 0 && role.uncertain.size === 0) {
      this.finishReassignment(key, name, p, role, placed, isr);
      return;
    }
    const next = [...isr.filter((n) => !out.has(n)), ...back];
    this.change(
      key,
      name,
      p,
      role.epoch,
      (pl) => {
        const isrs = pl.isr ?? pl.leaders.map((_, i) => [...replicasOf(pl, i)]);
        isrs[p] = next;
        return { ...pl, isr: isrs };
      },
      `the in-sync replicas of partition ${p} of stream "${name}" are now ${next.join(", ")}${out.size > 0 ? ` (${[...out].join(", ")} fell behind or left)` : ""}`,
      (ok, maybeApplied) => {
        if (ok) {
          role.uncertain.clear();
          leader.setIsr(next);
        } else if (maybeApplied) for (const n of back) role.uncertain.add(n);
        copies?.release();
      },
    );
  }

  /**
   * A reassignment of this partition's replicas (AlterPartitionReassignments,
   * `placed.reassigning`) ends once every target replica is in sync: here
   * when this node is among the target (the others dropped in a new epoch,
   * their copies deleted as a scale-down's), else by handing the leadership
   * to the first target replica in sync, whose own check then ends it.
   */
  private finishReassignment(key: string, name: string, p: number, role: LeaderRole, placed: PlacedStream, isr: readonly string[]): void {
    const wanted = placed.reassigning?.[p] ?? null;
    if (wanted === null || !wanted.target.every((n) => isr.includes(n))) return;
    const log = this.host.js.options.log;
    if (!wanted.target.includes(this.self)) {
      const fit = this.canTakeOver();
      const to = wanted.target.find((n) => isr.includes(n) && fit(n));
      if (to === undefined) return;
      this.changing.add(key);
      // Refused at once (writes untouched) while a replica is behind: the next check tries again.
      this.handOver(name, p, performance.now() + REASSIGN_HANDOVER_MS, to, REASSIGN_CAUGHT_UP_MS)
        .then(
          () => log.info(`cluster: partition ${p} of stream "${name}" handed over to ${to}, one of the replicas it is reassigned to`),
          // A replica behind is the usual reason, and passes: said quietly; anything else is worth a warning.
          (err: Error) => {
            const line = `cluster: partition ${p} of stream "${name}" could not be handed over to ${to} for its reassignment (tried again): ${err.message}`;
            if (/has not caught up/.test(err.message)) log.debug(line);
            else log.warn(line);
          },
        )
        .finally(() => this.changing.delete(key));
      return;
    }
    const target = wanted.target.join(",");
    this.change(
      key,
      name,
      p,
      role.epoch,
      (pl) => {
        const now = pl.reassigning?.[p] ?? null;
        if (now === null || now.target.join(",") !== target) throw new Error("its reassignment changed meanwhile");
        return reassignmentEnded(pl, p, now.target, true);
      },
      `partition ${p} of stream "${name}" reassigned: its replicas are now ${target} (epoch ${role.epoch + 1})`,
    );
  }

  private checkLeader(key: string, name: string, p: number, role: FollowerRole, now: number): void {
    const directory = this.host.cluster.directory;
    if (!this.host.holdsLease() || directory.isLive(role.leader)) {
      role.proposeAt = 0;
      return;
    }
    const placed = directory.get(this.account, name)?.placement;
    if (placed === undefined || placed.leaders[p] !== role.leader || (placed.epochs?.[p] ?? 1) !== role.epoch) return;
    const isr = (placed.isr?.[p] ?? replicasOf(placed, p)).filter((n) => n !== role.leader);
    const rank = isr.indexOf(this.self);
    // Out of the ISR: this copy may lack acknowledged writes, and must not lead. Nor may one that has not caught up since it
    // reconciled with this leadership: it may have deleted a key's old value without the new one yet (replication.ts, mayLead).
    if (rank < 0 || !role.follower.mayLead) return;
    if (role.proposeAt === 0) {
      // Members ranked before this one propose first; one that is not live gives its turn away. Without a copy of the
      // consumers (a restart since), this one waits behind every member: one with a copy takes over with the confirmed acks.
      const ahead = isr.slice(0, rank).filter((n) => directory.isLive(n)).length;
      const noCopy = p === 0 && role.consumers === null ? isr.length : 0;
      role.proposeAt = now + (ahead + noCopy) * RANK_DELAY_MS;
    }
    if (now < role.proposeAt) return;
    role.proposeAt = now + RANK_DELAY_MS * (isr.length + 1);
    const old = role.leader;
    const epoch = role.epoch + 1;
    // The old leader must still be unregistered when etcd applies the change: this node's view of the members lags, and
    // a leader that registered again meanwhile (back from a blip of etcd's) leads on, answering from its copy.
    this.change(
      key,
      name,
      p,
      role.epoch,
      (pl) => {
        if (pl.leaders[p] !== old || directory.isLive(old)) throw new Error("the leader is back, or another replica took over");
        const epochs = pl.epochs ?? pl.leaders.map(() => 1);
        const isrs = pl.isr ?? pl.leaders.map((_, i) => [...replicasOf(pl, i)]);
        epochs[p] = epoch;
        isrs[p] = isrs[p].filter((n) => n !== old);
        return { ...pl, leaders: pl.leaders.map((l, i) => (i === p ? this.self : l)), epochs, isr: isrs };
      },
      `took over partition ${p} of stream "${name}" from ${old} (not live) in epoch ${epoch}`,
      undefined,
      [old],
    );
  }

  /** One fenced change of the stream's placement, if it is still in `epoch` for partition `p`; refused quietly when it is not. `ended` hears whether it was agreed, or else whether etcd may have applied it without saying so. */
  private change(
    key: string,
    name: string,
    p: number,
    epoch: number,
    edit: (pl: PlacedStream) => PlacedStream,
    what: string,
    ended?: (agreed: boolean, maybeApplied: boolean) => void,
    unregistered: readonly string[] = [],
  ): void {
    this.changing.add(key);
    const log = this.host.js.options.log;
    this.host.cluster.directory
      .update(
        this.account,
        name,
        (pl) => {
          if ((pl.epochs?.[p] ?? 1) !== epoch) throw new Error("the epoch changed");
          return edit(pl);
        },
        unregistered,
      )
      .then(
        () => {
          log.info(`cluster: ${what}`);
          ended?.(true, false);
        },
        (err: Error) => {
          if (err.name !== "ConcurrentChangeError") log.debug(`cluster: partition ${p} of stream "${name}": ${err.message}`);
          ended?.(false, (err as { maybeApplied?: unknown }).maybeApplied === true);
        },
      )
      .finally(() => this.changing.delete(key));
  }
}

/** What a copy holds, for the log lines of leadership changes: a front that moved shows where it happened. */
/** The sequence after a log's last. */
function logEnd(log: MessageLog): number {
  return log.state().lastSeq + 1;
}

function span(log: MessageLog): string {
  const st = log.state();
  return st.messages === 0 ? `empty, next ${st.lastSeq + 1}` : `${st.messages} messages in ${st.firstSeq}..${st.lastSeq}`;
}

/** The checkpoint as written, or nothing when there is none or it cannot be read (the high watermarks then start from the logs). */
async function readCheckpoint(path: string): Promise<Checkpoint> {
  // No prototype: a stream may be named __proto__.
  const out: Checkpoint = Object.create(null) as Checkpoint;
  try {
    const raw = await readJson(path);
    if (raw === undefined || raw === null || typeof raw !== "object") return out;
    for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
      const e = v as { created?: unknown; hw?: unknown };
      if (typeof e?.created === "string" && Array.isArray(e.hw) && e.hw.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) out[name] = { created: e.created, hw: e.hw as number[] };
    }
    return out;
  } catch {
    return Object.create(null) as Checkpoint;
  }
}

/**
 * The bar on leading an earlier follower of this partition left (its
 * reconciliations lower it to the leader's end, replication.ts), and where
 * a changed one is written. One that cannot be read bars leading until the
 * first reconciliation has lowered it: not knowing is no reason to lead.
 * So does `mayHaveLost`, a copy whose log may have lost what it had
 * acknowledged (not fsynced before each acknowledgement).
 */
export async function followerBar(path: string, epoch: number, mayHaveLost = false): Promise<{ initial: number; save(bar: number): Promise<void> }> {
  const save = (bar: number): Promise<void> => writeJsonDurably(path, { epoch, bar });
  if (mayHaveLost) return { initial: Number.MAX_SAFE_INTEGER, save };
  let initial = 0;
  try {
    const saved = (await readJson(path)) as { bar?: unknown } | undefined;
    if (saved !== undefined) initial = Number.isSafeInteger(saved?.bar) && (saved.bar as number) >= 0 ? (saved.bar as number) : Number.MAX_SAFE_INTEGER;
  } catch {
    initial = Number.MAX_SAFE_INTEGER;
  }
  return { initial, save };
}
