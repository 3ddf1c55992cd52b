/**
 * A coordinator's state in a cluster, replicated as Kafka replicates it: in
 * an internal topic whose partitions are ordinary replicated stream
 * partitions. A key (a group, a transactional id) belongs to one partition
 * (Kafka's `abs(key.hashCode) % partitions`), and the broker that leads that
 * partition is the key's coordinator. Its state is one record per key (the
 * stream keeps the newest per subject: Kafka's log compaction for these
 * topics), appended and acknowledged once every in-sync replica has it, so
 * what a client was told survives the coordinator's death: an in-sync
 * follower takes the partition over (stream-replicas.ts), becomes the
 * coordinator, and loads the partition's state from its copy of the log.
 *
 * A partition is loaded when this broker comes to lead it (a sweep every
 * 100 ms, or the first request that finds it not loaded:
 * COORDINATOR_LOAD_IN_PROGRESS until then, which clients retry), and
 * dropped as soon as the leadership is gone or changed epoch, so that a
 * coordinator never answers from a state another broker may have moved
 * past. The topics' subjects are under `$NG.`, on which clients may not
 * publish, and Kafka clients may not produce to them.
 *
 * `__consumer_offsets` (offsets-log.ts) and `__transaction_state`
 * (txn-state-log.ts) are the two.
 */

import type { StoredMessage } from "../../store/log.js";
import type { ApiError } from "../../streams/errors.js";
import type { Stream } from "../../streams/stream.js";
import type { AccountDoor } from "./account-door.js";
import type { KafkaBroker } from "./cluster.js";
import { ErrorCode } from "./errors.js";
import { TOPIC_METADATA_KEY } from "./topics.js";
import { settled, withinMs } from "../../util/settle.js";

/** How long a coordinator partition taken up waits for its records to reach its in-sync replicas before it is served (COORDINATOR_LOAD_IN_PROGRESS meanwhile). */
const LOAD_REPLICATED_MS = 60_000;
const LOAD_STEP_MS = 20;

/** How often leadership of the partitions is looked at, to load or drop their state. */
const SWEEP_MS = 100;
/** Longest a request waits for its key's partition to load before it is told COORDINATOR_LOAD_IN_PROGRESS. */
const LOAD_WAIT_MS = 5_000;
/** How often ready() looks again while no load of the partition could start. */
const READY_STEP_MS = 50;
/** After a failed load, how long before the partition is loaded again: doubled at each failure in a row, up to the most. */
const LOAD_RETRY_MIN_MS = 500;
const LOAD_RETRY_MAX_MS = 30_000;
/** A failed placement of the topic is tried again no sooner than this, doubling to the maximum. */
const PLACE_RETRY_MIN_MS = 500;
const PLACE_RETRY_MAX_MS = 30_000;
/** Kafka's *.topic.replication.factor: 3, or every broker of a smaller cluster when the topic is made (those that route to each other). */
const REPLICATION = 3;

/** Kafka's partitionFor: the key's Java hashCode, made non-negative, modulo the partitions. */
export function partitionOfKey(key: string, partitions: number): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0;
  return (h & 0x7fffffff) % partitions;
}

/** A subject token that holds any string (ids and names may hold dots); the prefix keeps the empty string a valid token. */
export function token(s: string): string {
  return `_${Buffer.from(s).toString("base64url")}`;
}

export function untoken(t: string): string {
  return Buffer.from(t.slice(1), "base64url").toString();
}

/** A write that could not be made durable because this broker no longer coordinates the key: NOT_COORDINATOR to the client. */
export class CoordinatorMoved extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "CoordinatorMoved";
  }
}

/** The stream configuration of an internal topic under `subjectPrefix`. */
export function internalStreamConfig(topic: string, subjectPrefix: string): { name: string; subjects: string[]; storage: string; retention: string; discard: string; max_msgs_per_subject: number; metadata: Record<string, string> } {
  return {
    name: topic,
    subjects: [`${subjectPrefix}>`],
    storage: "file",
    retention: "limits",
    discard: "old",
    max_msgs_per_subject: 1,
    metadata: { [TOPIC_METADATA_KEY]: topic },
  };
}

export abstract class CoordinatorTopic {
  /** Partitions this broker leads and has loaded (or is loading), with the leader epoch they were loaded at. */
  private readonly loaded = new Map<number, { epoch: number; done: boolean; loading: Promise<void> }>();
  /**
   * Partitions whose last load failed, in their leader epoch: not loaded
   * again before `at` + `waitMs`. A load of a log whose storage failed
   * fails at once, and every request waiting in ready() (and the sweep)
   * started the next: tens of thousands of loads and log lines a second.
   */
  private readonly loadFailed = new Map<number, { epoch: number; at: number; waitMs: number }>();
  private placing: Promise<void> | null = null;
  /**
   * The last failed placement of the topic: not tried again before `at` +
   * `waitMs`. Each request that needs the topic tries to place it, and
   * clients retry COORDINATOR_NOT_AVAILABLE at once: with etcd refusing,
   * every retry was a placement and a log line.
   */
  private placeFailed: { at: number; waitMs: number } | null = null;
  private readonly sweeper: NodeJS.Timeout;
  private readonly subjects: string;

  constructor(
    protected readonly door: AccountDoor,
    readonly topic: string,
    private readonly partitions: number,
    protected readonly subjectPrefix: string,
    /** What the keys are, in log lines and errors ("group", "transactional id"). */
    private readonly what: string,
  ) {
    this.subjects = `${subjectPrefix}>`;
    // As Kafka's coordinator loads a partition when it is elected, not when first asked: by the time clients find it, it is ready.
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** Takes in the newest record of each key of partition `p` (its log read whole), then the partition is served. */
  protected abstract adopt(p: number, records: StoredMessage[]): void;
  /** Forgets partition `p`'s keys here: another broker coordinates them now, or will. */
  protected abstract drop(p: number, why: string): void;

  close(): void {
    clearInterval(this.sweeper);
  }

  /** Loads the partitions this broker has come to lead, and drops those it no longer leads. */
  private sweep(): void {
    const placed = this.door.door.cluster?.topic(this.door.account, this.topic);
    if (placed === undefined) return;
    for (let p = 0; p < placed.leaders.length; p++) {
      const state = this.loaded.get(p);
      if (placed.local[p] && (state === undefined || state.epoch !== placed.epochs[p])) {
        if (state !== undefined) this.unload(p, `its leader epoch changed from ${state.epoch} to ${placed.epochs[p]}`);
        this.load(p, placed.epochs[p]);
      } else if (!placed.local[p] && state !== undefined) this.unload(p, "its leadership moved");
    }
  }

  /**
   * check(), waiting up to `ms` for a load under way to end: for requests
   * that clients do not all retry on COORDINATOR_LOAD_IN_PROGRESS (KafkaJS's
   * admin offset fetch does not).
   */
  async ready(key: string, ms = LOAD_WAIT_MS): Promise<number> {
    const until = Date.now() + ms;
    for (;;) {
      const error = this.check(key);
      if (error !== ErrorCode.COORDINATOR_LOAD_IN_PROGRESS || Date.now() >= until) return error;
      const p = this.partitionOf(key);
      const state = p === undefined ? undefined : this.loaded.get(p);
      // No load started yet: the partition's copy or its replication is still being set up here (a node just restarted).
      if (state === undefined) await new Promise<void>((resolve) => setTimeout(resolve, READY_STEP_MS).unref());
      else await withinMs(state.loading, until - Date.now());
    }
  }

  protected get cluster() {
    return this.door.door.cluster!;
  }

  /**
   * The broker coordinating `key` now (FindCoordinator), or the error that
   * says why there is none: the topic is being made, or its leader is down
   * (COORDINATOR_NOT_AVAILABLE, which clients retry).
   */
  coordinator(key: string): { broker: KafkaBroker; id: number } | { error: number; reason: string } {
    const placed = this.cluster.topic(this.door.account, this.topic);
    if (placed === undefined) {
      this.place();
      return { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, reason: `the topic ${this.topic} is being created` };
    }
    const p = partitionOfKey(key, placed.leaders.length);
    const id = placed.leaders[p];
    const broker = placed.live[p] ? this.cluster.brokers().find((b) => b.id === id) : undefined;
    if (broker === undefined) return { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, reason: `partition ${p} of ${this.topic}, which holds ${this.what} ${key}, has no leader up` };
    return { broker, id };
  }

  /** NONE when this broker coordinates `key` and has its state loaded; else the Kafka error that sends the client on. */
  check(key: string): number {
    const placed = this.cluster.topic(this.door.account, this.topic);
    if (placed === undefined) {
      this.place();
      return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    }
    const p = partitionOfKey(key, placed.leaders.length);
    let state = this.loaded.get(p);
    if (!placed.local[p]) {
      if (state !== undefined) this.unload(p, "its leadership moved");
      return placed.live[p] ? ErrorCode.NOT_COORDINATOR : ErrorCode.COORDINATOR_NOT_AVAILABLE;
    }
    if (state !== undefined && state.epoch !== placed.epochs[p]) {
      this.unload(p, `its leader epoch changed from ${state.epoch} to ${placed.epochs[p]}`);
      state = undefined;
    }
    // Placed here as this node last heard, but without its lease (a pause, a cut from etcd) another may coordinate the
    // key by now: what this node holds may be behind it. The clock says so before the 100 ms sweep or etcd's news.
    const refused = this.door.js.streams.get(this.topic)?.replicaGate(p)?.refusal(true) ?? null;
    if (refused !== null) {
      if (state !== undefined) this.unload(p, refused.message);
      return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    }
    if (state === undefined) {
      this.load(p, placed.epochs[p]);
      return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS;
    }
    return state.done ? ErrorCode.NONE : ErrorCode.COORDINATOR_LOAD_IN_PROGRESS;
  }

  /** Whether this broker has `key`'s partition loaded, as last it knew: no load started, no topic made. */
  holds(key: string): boolean {
    const p = this.partitionOf(key);
    return p !== undefined && this.loaded.get(p)?.done === true;
  }

  /** The partition `key` lives in, as placed; undefined before the topic exists. */
  protected partitionOf(key: string): number | undefined {
    const placed = this.cluster.topic(this.door.account, this.topic);
    return placed === undefined ? undefined : partitionOfKey(key, placed.leaders.length);
  }

  /** How many partitions the topic has, as placed (as it will be, before it is). */
  protected get partitionCount(): number {
    return this.cluster.topic(this.door.account, this.topic)?.leaders.length ?? this.partitions;
  }

  /** Makes the topic, once: the first request of the account in the cluster that needs it. */
  private place(): void {
    if (this.placing !== null) return;
    const failed = this.placeFailed;
    if (failed !== null && Date.now() < failed.at + failed.waitMs) return;
    // Nodes without routes between them cannot replicate: one copy then, as Kafka with a replication factor of 1.
    const replicas = Math.max(1, Math.min(REPLICATION, this.cluster.replicableBrokers()));
    const config = internalStreamConfig(this.topic, this.subjectPrefix);
    this.placing = this.cluster
      .place(this.door.account, this.topic, this.partitions, config, config.subjects, replicas, 1)
      .then(
        (created) => {
          this.placeFailed = null;
          if (created) this.door.log.info(`kafka: placed ${this.topic} for account ${this.door.account}: ${this.partitions} partitions of ${replicas} replica(s)`);
        },
        (err: unknown) => {
          const waitMs = this.placeFailed === null ? PLACE_RETRY_MIN_MS : Math.min(this.placeFailed.waitMs * 2, PLACE_RETRY_MAX_MS);
          this.placeFailed = { at: Date.now(), waitMs };
          this.door.log.warn(`kafka: could not place ${this.topic} (tried again in ${waitMs} ms at the earliest): ${(err as Error).message}`);
        },
      )
      .finally(() => (this.placing = null));
  }

  /** This node's copy of partition `p`, if it may write it now (it leads it, its lease held). */
  private writable(p: number): Stream | null {
    const stream = this.door.js.streams.get(this.topic);
    if (stream === undefined || p >= stream.partitions.length) return null;
    const gate = stream.replicaGate(p);
    // A replicated partition without its gate yet: this node has not taken up its role (stream-replicas.ts).
    if (gate === undefined) return (this.cluster.topic(this.door.account, this.topic)?.replicas[p]?.length ?? 1) > 1 ? null : stream;
    return gate.refusal(true) === null ? stream : null;
  }

  /** Reads partition `p`'s state into the coordinator, unless its copy is not ready to lead yet (asked again by the client's retry). */
  private load(p: number, epoch: number): void {
    const failed = this.loadFailed.get(p);
    if (failed !== undefined && failed.epoch === epoch && Date.now() < failed.at + failed.waitMs) return;
    const stream = this.writable(p);
    if (stream === null) return;
    const state = { epoch, done: false, loading: Promise.resolve() };
    this.loaded.set(p, state);
    const log = stream.partitions[p];
    state.loading = (async () => {
      // The leader's whole log, not only what is below the high watermark: what it holds beyond is what its followers will get
      // (and it is shown once they have, below).
      const seqs = log.lastPerSubject(this.subjects).sort((a, b) => a - b);
      const records: StoredMessage[] = [];
      for (const seq of seqs) {
        const m = await log.get(seq);
        if (m !== null && m.data.length > 0) records.push(m);
      }
      if (this.loaded.get(p) !== state) return;
      // A read that failed the log on the way may have read a segment as empty: its records would be missing, not older.
      const failed = log.state().error;
      if (failed !== null) throw new Error(`its log failed while it was read (${failed})`);
      // Served only once every in-sync replica has what was read: a record beyond the high watermark (written by this node's
      // earlier leadership, never replicated: a commit never acknowledged) shown now would be taken back by a failover.
      const read = log.state().lastSeq;
      const replicated = (): boolean => this.loaded.get(p) !== state || stream.replicatedSeq(p) >= read;
      if (!(await settled(replicated, Date.now() + LOAD_REPLICATED_MS, LOAD_STEP_MS))) throw new Error(`what it holds did not reach its in-sync replicas within ${LOAD_REPLICATED_MS} ms`);
      if (this.loaded.get(p) !== state) return;
      state.done = true;
      this.loadFailed.delete(p);
      this.adopt(p, records);
      this.door.log.debug(`kafka ${this.topic} partition ${p}: loaded ${records.length} record(s) at leader epoch ${epoch}`);
    })().catch((err: unknown) => {
      if (this.loaded.get(p) !== state) return;
      const last = this.loadFailed.get(p);
      const waitMs = last !== undefined && last.epoch === epoch ? Math.min(last.waitMs * 2, LOAD_RETRY_MAX_MS) : LOAD_RETRY_MIN_MS;
      this.loadFailed.set(p, { epoch, at: Date.now(), waitMs });
      this.door.log.error(`kafka: ${this.topic} partition ${p}: loading it failed (tried again in ${waitMs} ms): ${(err as Error).message}`);
      this.unload(p, "its load failed");
    });
  }

  private unload(p: number, why: string): void {
    this.loaded.delete(p);
    this.drop(p, why);
  }

  /**
   * Appends one record per subject (an empty one: removed) to partition `p`
   * and resolves once every in-sync replica has them; throws
   * CoordinatorMoved, after dropping the partition here, when this broker
   * cannot write it any more.
   */
  protected async append(p: number | undefined, key: string, records: Array<[string, Buffer]>): Promise<void> {
    if (records.length === 0) return;
    // A record the stream would refuse for its size says nothing of who coordinates: refused here, the partition kept.
    const max = this.door.js.options.maxPayload;
    const large = records.find(([, data]) => data.length > max);
    if (large !== undefined) throw new Error(`a record of ${large[1].length} bytes for ${this.what} ${key} is past max_payload (${max})`);
    const stream = p === undefined ? null : this.writable(p);
    if (p === undefined || stream === null || !this.loaded.get(p)?.done) throw new CoordinatorMoved(`this broker no longer coordinates ${this.what} ${key}`);
    const appends = records.map(
      ([subject, data]) =>
        new Promise<void>((resolve, reject) => {
          stream.append(p, { subject, data, headers: null, key: null }, (err: ApiError | null) => (err === null ? resolve() : reject(err)));
        }),
    );
    const outcomes = await Promise.allSettled(appends);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failed === undefined) return;
    // What the client was told failed may be in memory already (and on some replicas): the log decides, at the next load.
    if (this.loaded.has(p)) this.unload(p, `a write failed: ${(failed.reason as Error).message}`);
    throw new CoordinatorMoved(`writing for ${this.what} ${key}: ${(failed.reason as Error).message}`);
  }
}
