/**
 * Committed offsets in a cluster, replicated as Kafka replicates them: in an
 * internal topic, `__consumer_offsets`, whose partitions are ordinary
 * replicated stream partitions. A group belongs to one partition (Kafka's
 * `abs(groupId.hashCode) % partitions`), and the broker that leads that
 * partition is the group's coordinator. A commit is one record per
 * (group, topic, partition) key, appended to the group's partition and
 * acknowledged once every in-sync replica has it, so a commit the client saw
 * succeed survives the coordinator's death: an in-sync follower takes the
 * partition over (stream-replicas.ts), becomes the coordinator, and loads
 * the groups from its copy of the log.
 *
 * The stream keeps one record per key (`max_msgs_per_subject: 1`), which is
 * Kafka's log compaction for this topic; a removed key is an empty record.
 * Its subjects are under `$NG.`, on which clients may not publish, and Kafka
 * clients may not produce to it: only the coordinators write it.
 *
 * A partition is loaded when this broker is first asked about one of its
 * groups after becoming its leader (COORDINATOR_LOAD_IN_PROGRESS until
 * then, which clients retry), and its groups are dropped here as soon as
 * the leadership is gone or changed epoch, so that a coordinator never
 * answers from a state another broker may have moved past.
 */

import type { StoredMessage } from "../../store/log.js";
import type { ApiError } from "../../streams/errors.js";
import type { Stream } from "../../streams/stream.js";
import type { AccountDoor } from "./account-door.js";
import type { KafkaBroker } from "./cluster.js";
import { ErrorCode } from "./errors.js";
import type { CommittedOffset, Group, OffsetsStore } from "./groups.js";
import { OFFSETS_TOPIC, TOPIC_METADATA_KEY } from "./topics.js";

/** Kafka's offsets.topic.num.partitions is 50; a few suffice to spread coordinators over a small cluster. */
export const OFFSETS_PARTITIONS = 6;
/** Kafka's offsets.topic.replication.factor: 3, or every broker of a smaller cluster when the topic is made (those that route to each other). */
const OFFSETS_REPLICATION = 3;
const SUBJECT_PREFIX = "$NG.KAFKA.OFFSETS.";
const SUBJECTS = `${SUBJECT_PREFIX}>`;
/** How often leadership of the offsets partitions is looked at, to load or drop their groups. */
const SWEEP_MS = 100;
/** Longest a request waits for its group's partition to load before it is told COORDINATOR_LOAD_IN_PROGRESS. */
const LOAD_WAIT_MS = 5_000;

/** Kafka's partitionFor: the group id's Java hashCode, made non-negative, modulo the partitions. */
export function offsetsPartitionOf(group: string, partitions: number): number {
  let h = 0;
  for (let i = 0; i < group.length; i++) h = (Math.imul(h, 31) + group.charCodeAt(i)) | 0;
  return (h & 0x7fffffff) % partitions;
}

/** A token that holds any string (ids and names may hold dots); the prefix keeps the empty string a valid token. */
function token(s: string): string {
  return `_${Buffer.from(s).toString("base64url")}`;
}

function untoken(t: string): string {
  return Buffer.from(t.slice(1), "base64url").toString();
}

/** The key of one committed offset: its subject. */
export function offsetSubject(group: string, offsetKey: string): string {
  const at = offsetKey.lastIndexOf("/");
  return `${SUBJECT_PREFIX}${token(group)}.${token(offsetKey.slice(0, at))}.${offsetKey.slice(at + 1)}`;
}

/** The group and offset key a subject names; null for one this version does not know. */
function parseSubject(subject: string): { group: string; key: string } | null {
  const parts = subject.slice(SUBJECT_PREFIX.length).split(".");
  if (!subject.startsWith(SUBJECT_PREFIX) || parts.length !== 3 || !/^\d+$/.test(parts[2])) return null;
  return { group: untoken(parts[0]), key: `${untoken(parts[1])}/${parts[2]}` };
}

interface StoredOffset {
  offset: number;
  metadata: string | null;
  protocolType: string;
}

/** A commit that could not be made durable because this broker no longer coordinates the group: NOT_COORDINATOR to the client. */
export class CoordinatorMoved extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "CoordinatorMoved";
  }
}

/** The stream configuration of the offsets topic. */
export function offsetsStreamConfig(): { name: string; subjects: string[]; storage: string; retention: string; discard: string; max_msgs_per_subject: number; metadata: Record<string, string> } {
  return {
    name: OFFSETS_TOPIC,
    subjects: [SUBJECTS],
    storage: "file",
    retention: "limits",
    discard: "old",
    max_msgs_per_subject: 1,
    metadata: { [TOPIC_METADATA_KEY]: OFFSETS_TOPIC },
  };
}

export class ReplicatedOffsets implements OffsetsStore {
  /** Partitions this broker leads and has loaded (or is loading) the groups of, with the leader epoch they were loaded at. */
  private readonly loaded = new Map<number, { epoch: number; done: boolean; loading: Promise<void> }>();
  private placing: Promise<void> | null = null;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly door: AccountDoor) {
    // As Kafka's coordinator loads a partition's groups when it is elected, not when first asked: by the time clients find it, it is ready.
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  /** Loads the partitions this broker has come to lead, and drops those it no longer leads. */
  private sweep(): void {
    const cluster = this.door.door.cluster;
    const placed = cluster?.topic(this.door.account, OFFSETS_TOPIC);
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
  async ready(group: string, ms = LOAD_WAIT_MS): Promise<number> {
    const error = this.check(group);
    if (error !== ErrorCode.COORDINATOR_LOAD_IN_PROGRESS) return error;
    const p = this.partitionOf(group);
    const state = p === undefined ? undefined : this.loaded.get(p);
    if (state === undefined) return error;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([state.loading, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    return this.check(group);
  }

  private get cluster() {
    return this.door.door.cluster!;
  }

  /**
   * The broker coordinating `group` now (FindCoordinator), or the error
   * that says why there is none: the topic is being made, or its leader is
   * down (COORDINATOR_NOT_AVAILABLE, which clients retry).
   */
  coordinator(group: string): { broker: KafkaBroker; id: number } | { error: number; reason: string } {
    const placed = this.cluster.topic(this.door.account, OFFSETS_TOPIC);
    if (placed === undefined) {
      this.place();
      return { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, reason: `the offsets topic ${OFFSETS_TOPIC} is being created` };
    }
    const p = offsetsPartitionOf(group, placed.leaders.length);
    const id = placed.leaders[p];
    const broker = placed.live[p] ? this.cluster.brokers().find((b) => b.id === id) : undefined;
    if (broker === undefined) return { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, reason: `partition ${p} of ${OFFSETS_TOPIC}, which holds group ${group}, has no leader up` };
    return { broker, id };
  }

  /** NONE when this broker coordinates `group` and has its state loaded; else the Kafka error that sends the client on. */
  check(group: string): number {
    const placed = this.cluster.topic(this.door.account, OFFSETS_TOPIC);
    if (placed === undefined) {
      this.place();
      return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    }
    const p = offsetsPartitionOf(group, placed.leaders.length);
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
    // group by now: what this node holds may be behind it. The clock says so before the 100 ms sweep or etcd's news.
    const refused = this.door.js.streams.get(OFFSETS_TOPIC)?.replicaGate(p)?.refusal(true) ?? null;
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

  /** The partition of the offsets topic `group` lives in, as placed; undefined before the topic exists. */
  private partitionOf(group: string): number | undefined {
    const placed = this.cluster.topic(this.door.account, OFFSETS_TOPIC);
    return placed === undefined ? undefined : offsetsPartitionOf(group, placed.leaders.length);
  }

  /** Makes the offsets topic, once: the first group request of the account in the cluster. */
  private place(): void {
    if (this.placing !== null) return;
    // Nodes without routes between them cannot replicate: one copy then, as Kafka with offsets.topic.replication.factor 1.
    const replicas = Math.max(1, Math.min(OFFSETS_REPLICATION, this.cluster.replicableBrokers()));
    const config = offsetsStreamConfig();
    this.placing = this.cluster
      .place(this.door.account, OFFSETS_TOPIC, OFFSETS_PARTITIONS, config, config.subjects, replicas, 1)
      .then(
        (created) => {
          if (created) this.door.log.info(`kafka: placed ${OFFSETS_TOPIC} for account ${this.door.account}: ${OFFSETS_PARTITIONS} partitions of ${replicas} replica(s)`);
        },
        (err: unknown) => this.door.log.warn(`kafka: could not place ${OFFSETS_TOPIC} (will try again): ${(err as Error).message}`),
      )
      .finally(() => (this.placing = null));
  }

  /** This node's copy of partition `p`, if it may write it now (it leads it, its lease held). */
  private writable(p: number): Stream | null {
    const stream = this.door.js.streams.get(OFFSETS_TOPIC);
    if (stream === undefined || p >= stream.partitions.length) return null;
    const gate = stream.replicaGate(p);
    // A replicated partition without its gate yet: this node has not taken up its role (stream-replicas.ts).
    if (gate === undefined) return (this.cluster.topic(this.door.account, OFFSETS_TOPIC)?.replicas[p]?.length ?? 1) > 1 ? null : stream;
    return gate.refusal(true) === null ? stream : null;
  }

  /** Reads partition `p`'s groups into the coordinator, unless its copy is not ready to lead yet (asked again by the client's retry). */
  private load(p: number, epoch: number): void {
    const stream = this.writable(p);
    if (stream === null) return;
    const state = { epoch, done: false, loading: Promise.resolve() };
    this.loaded.set(p, state);
    const log = stream.partitions[p];
    state.loading = (async () => {
      // The leader's whole log, not only what is below the high watermark: what it holds beyond is what its followers will get.
      const seqs = log.lastPerSubject(SUBJECTS).sort((a, b) => a - b);
      const found = new Map<string, Map<string, StoredOffset>>();
      for (const seq of seqs) {
        const m: StoredMessage | null = await log.get(seq);
        if (m === null || m.data.length === 0) continue;
        const at = parseSubject(m.subject);
        if (at === null) continue;
        const value = JSON.parse(m.data.toString()) as StoredOffset;
        let g = found.get(at.group);
        if (g === undefined) found.set(at.group, (g = new Map()));
        g.set(at.key, value);
      }
      if (this.loaded.get(p) !== state) return;
      // A read that failed the log on the way may have read a segment as empty: its offsets would be missing, not older.
      const failed = log.state().error;
      if (failed !== null) throw new Error(`its log failed while it was read (${failed})`);
      for (const [id, offsets] of found) {
        const g = this.door.groups.group(id, true);
        if (g === null) {
          this.door.log.warn(`kafka: ${OFFSETS_TOPIC} partition ${p}: group ${id} not loaded, too many groups`);
          continue;
        }
        for (const [k, v] of offsets) {
          g.offsets.set(k, { offset: v.offset, metadata: v.metadata });
          if (v.protocolType !== "" && g.members.size === 0) g.protocolType = v.protocolType;
        }
      }
      state.done = true;
      this.door.log.debug(`kafka ${OFFSETS_TOPIC} partition ${p}: loaded ${found.size} group(s) at leader epoch ${epoch}`);
    })().catch((err: unknown) => {
      this.door.log.error(`kafka: ${OFFSETS_TOPIC} partition ${p}: loading its groups failed: ${(err as Error).message}`);
      if (this.loaded.get(p) === state) this.unload(p, "its load failed");
    });
  }

  /** Forgets partition `p`'s groups here; their members waiting on a join or sync are sent to the new coordinator. */
  private unload(p: number, why: string): void {
    this.loaded.delete(p);
    const placedCount = this.cluster.topic(this.door.account, OFFSETS_TOPIC)?.leaders.length ?? OFFSETS_PARTITIONS;
    let dropped = 0;
    for (const g of [...this.door.groups.groups.values()]) {
      if (offsetsPartitionOf(g.id, placedCount) !== p) continue;
      this.door.groups.drop(g, ErrorCode.NOT_COORDINATOR);
      dropped++;
    }
    this.door.log.debug(`kafka ${OFFSETS_TOPIC} partition ${p}: ${dropped} group(s) dropped: ${why}`);
  }

  /**
   * Appends one record per key (null: removed) to the group's partition and
   * resolves once every in-sync replica has them; throws CoordinatorMoved,
   * after dropping the partition's groups here, when this broker cannot
   * write it any more.
   */
  async write(group: Group, entries: Array<[string, CommittedOffset | null]>): Promise<void> {
    if (entries.length === 0) return;
    const p = this.partitionOf(group.id);
    const stream = p === undefined ? null : this.writable(p);
    if (p === undefined || stream === null || !this.loaded.get(p)?.done) throw new CoordinatorMoved(`this broker no longer coordinates group ${group.id}`);
    const appends = entries.map(
      ([key, value]) =>
        new Promise<void>((resolve, reject) => {
          const data = value === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify({ offset: value.offset, metadata: value.metadata, protocolType: group.protocolType } satisfies StoredOffset));
          stream.append(p, { subject: offsetSubject(group.id, key), data, headers: null, key: null }, (err: ApiError | null) => (err === null ? resolve() : reject(err)));
        }),
    );
    const outcomes = await Promise.allSettled(appends);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failed === undefined) return;
    // What the client was told failed may be in memory already (and on some replicas): the log decides, at the next load.
    if (this.loaded.has(p)) this.unload(p, `a write failed: ${(failed.reason as Error).message}`);
    throw new CoordinatorMoved(`committing for group ${group.id}: ${(failed.reason as Error).message}`);
  }
}
