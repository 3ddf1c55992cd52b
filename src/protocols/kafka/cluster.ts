/**
 * The Kafka door in a cluster: what it needs to know of the other nodes,
 * as a small interface the composition root implements over etcd
 * (server/kafka-cluster.ts), so that the door imports nothing of the
 * cluster. Without one (single-node mode) the door is the whole cluster:
 * broker 0, controller and every coordinator, as before.
 *
 * Per partition, a broker serves only what it leads (`ledPartition`):
 * anything else gets NOT_LEADER_OR_FOLLOWER, on which Kafka clients refresh
 * their metadata and go to the leader by themselves.
 */

import type { Stream } from "../../streams/stream.js";
import type { StreamConfig } from "../../streams/config.js";
import type { ApiError } from "../../streams/errors.js";
import type { AccountLimits } from "../../streams/limits.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { findTopic, streamNameOf, topicOf } from "./topics.js";
import { KEY_TYPE_GROUP } from "./requests.js";

export interface KafkaBroker {
  id: number;
  host: string;
  port: number;
}

/** A topic placed in the cluster, as the door reads it. */
export interface PlacedTopic {
  stream: string;
  topic: string;
  /** Each partition's leader: its broker id (-1 for a node that never had a Kafka listener). */
  leaders: number[];
  /** Whether each partition's leader is up, with a Kafka listener. */
  live: boolean[];
  /** Whether this node leads each partition. */
  local: boolean[];
  /** Each partition's replicas (its leader alone when not replicated), in-sync replicas and replicas not up, as broker ids. */
  replicas: number[][];
  isr: number[][];
  offline: number[][];
  /** Each partition's leader epoch (0 when never replicated). */
  epochs: number[];
  /** The subjects the stream captures, as placed. */
  subjects: string[];
  /** The stream's configuration, as placed. */
  config: unknown;
  /** When the stream was placed (an ISO time): the same on every node, so its topic id is (topic-ids.ts). */
  created: string;
  /** Which door made the stream: a Kafka topic's leadership goes back to its preferred replicas by itself (leader-rebalance.ts), a JetStream stream's stays where it is put, as nats-server keeps it. */
  origin: "kafka" | "jetstream";
  /** The partition being moved to another broker (AlterPartitionReassignments), and that broker's id; null: none. */
  moving: { partition: number; to: number } | null;
  /** Per partition, a reassignment of its replicas under way (replicated topics): every replica now, those being added and those to go; null: none. */
  reassigning: Array<{ replicas: number[]; adding: number[]; removing: number[] } | null>;
}

/** A cluster change that failed; `retriable`: etcd away or no live node (try again), else refused for good. */
export class KafkaClusterError extends Error {
  constructor(
    message: string,
    readonly retriable: boolean,
    /** The Kafka error code the refusal answers with, when the change itself names one (a reassignment's). */
    readonly code: number | null = null,
  ) {
    super(message);
    this.name = "KafkaClusterError";
  }
}

export interface KafkaCluster {
  /** This broker's id, stable across restarts. */
  readonly nodeId: number;
  /** The Kafka cluster id, one for every node (each node's own store would give each its own). */
  readonly clusterId: string;
  /** The live brokers with a Kafka listener, this one included, by id. */
  brokers(): KafkaBroker[];
  /** How many live brokers could hold a copy of a replicated partition (those the others route to). */
  replicableBrokers(): number;
  /** Whether this node and broker `id` route to each other (a node with no route listener reaches none): what requests between them need. */
  routed(id: number): boolean;
  /** The cluster node that broker `id` is (JetStream.remoteCall names nodes); undefined for an id no node claims. */
  nodeName(id: number): string | undefined;
  /** The controller Metadata names: the live broker with the lowest id. */
  controllerId(): number;
  /** The account's placed topics (every stream placed, whatever door made it), by stream name. */
  topics(account: string): PlacedTopic[];
  topic(account: string, stream: string): PlacedTopic | undefined;
  /**
   * Places a new topic's partitions over the live nodes, `replicas` copies
   * of each (leaders spread, followers too), writes at acks=all needing
   * `minIsr` in sync; false when the stream was placed already. Throws
   * KafkaClusterError (INVALID_REPLICATION_FACTOR: more replicas than live
   * brokers; POLICY_VIOLATION: past the account's `limits` in the cluster,
   * its streams or the storage they reserve (none judged without), or, with
   * `ownSubjects`, another placed stream captures one of `subjects`).
   */
  place(account: string, stream: string, partitions: number, config: unknown, subjects: string[], replicas: number, minIsr: number, limits?: Readonly<AccountLimits>, ownSubjects?: boolean): Promise<boolean>;
  /**
   * Why a new stream of `copies` partition copies in all does not fit the
   * account's limits beside its streams placed in the whole cluster (the
   * storage they reserve, limits.ts's clusterLimitError), or null.
   */
  limitError(account: string, config: StreamConfig, copies: number, limits: Readonly<AccountLimits>): ApiError | null;
  /**
   * Why a change of placed stream `stream` (its `config`, or a growth to
   * `count` partitions) would be refused for the storage it reserves
   * beside the account's streams placed in the whole cluster, judged as
   * `reconfigure` and `grow` judge it but against the placements as this
   * node has them, without a change (Kafka's validate_only), or null.
   */
  changeLimitError(account: string, stream: string, change: { config?: unknown; count?: number }, limits: Readonly<AccountLimits>): ApiError | null;
  /**
   * Grows a placed topic to `count` partitions, the new ones spread too.
   * Throws KafkaClusterError (POLICY_VIOLATION: the storage the new
   * partitions reserve does not fit the account's `limits` in the cluster).
   */
  grow(account: string, stream: string, count: number, limits?: Readonly<AccountLimits>): Promise<void>;
  /**
   * Replaces the configuration a placement carries (topic configs changed),
   * and its minimum ISR. Throws KafkaClusterError (POLICY_VIOLATION: a
   * reservation grown past the account's `limits` in the cluster).
   */
  reconfigure(account: string, stream: string, config: unknown, minIsr: number, limits?: Readonly<AccountLimits>): Promise<void>;
  /** Removes a topic's placement; the nodes leading it delete their copies. Throws KafkaClusterError. */
  remove(account: string, stream: string): Promise<void>;
  /**
   * A partition's replicas become `to` (broker ids, preferred leader
   * first), or with null its reassignment is cancelled; resolves once
   * recorded (the change runs on). A partition of one replica moves to the
   * one broker named (to its leader: nothing to do, a move under way is
   * cancelled); a replicated one gets the target's new brokers, which copy
   * it, and loses the others once they are in sync. Throws
   * KafkaClusterError with a code: UNKNOWN_TOPIC_OR_PARTITION,
   * INVALID_REPLICA_ASSIGNMENT (no such live broker, a replication factor
   * changed to or from one), REASSIGNMENT_IN_PROGRESS (a move of the topic
   * is under way: one at a time), NO_REASSIGNMENT_IN_PROGRESS (nothing to
   * cancel), POLICY_VIOLATION (replicas added past the storage the
   * account's `limits` leave in the cluster).
   */
  reassign(account: string, stream: string, partition: number, to: number[] | null, limits?: Readonly<AccountLimits>): Promise<void>;
}

/**
 * The local stream of a topic when this broker leads partition `index`;
 * else the error code for the partition: UNKNOWN_TOPIC_OR_PARTITION,
 * NOT_LEADER_OR_FOLLOWER (another broker leads it, or its leader is down),
 * or LEADER_NOT_AVAILABLE (this broker leads it but has not created its
 * copy yet). No allocation: it runs for every partition of every produce
 * and fetch.
 */
export function ledPartition(door: AccountDoor, topic: string, index: number): Stream | number {
  const cluster = door.door.cluster;
  if (cluster === null) {
    const stream = findTopic(door.js, topic);
    return stream !== undefined && index >= 0 && index < stream.partitions.length ? stream : ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
  }
  const name = streamNameOf(topic);
  const local = door.js.streams.get(name);
  const stream = local !== undefined && topicOf(local) === topic ? local : undefined;
  const placed = cluster.topic(door.account, name);
  if (placed === undefined || placed.topic !== topic) {
    // A stream this node has and the cluster does not place (yet: one found on disk is adopted at start).
    return stream !== undefined && index >= 0 && index < stream.partitions.length ? stream : ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
  }
  if (index < 0 || index >= placed.leaders.length) return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
  if (!placed.local[index]) return ErrorCode.NOT_LEADER_OR_FOLLOWER;
  if (stream === undefined || index >= stream.partitions.length) return ErrorCode.LEADER_NOT_AVAILABLE;
  // Replicated, but its replication not set up here yet (a partition just added, a role being taken up): an append would be
  // acknowledged with no replica waited for.
  if (placed.replicas[index].length > 1 && stream.replicaGate(index) === undefined) return ErrorCode.LEADER_NOT_AVAILABLE;
  return stream;
}

/**
 * KIP-320: a client that names the leader epoch it knows (≥ 0) is told when
 * this broker's differs, as Kafka's partition leader does: an older one is
 * FENCED_LEADER_EPOCH (its metadata is stale), a newer one
 * UNKNOWN_LEADER_EPOCH (this broker's is: a leader replaced while it was
 * cut off serves nothing to a client that has seen its successor). Both make
 * the client refresh its metadata. NONE when they agree or none (-1) is named;
 * the epoch Metadata shows (0 for a partition never replicated).
 */
export function leaderEpochError(door: AccountDoor, topic: string, index: number, clientEpoch: number): number {
  // Only -1 names none (Kafka's rule): any other epoch below the broker's is fenced.
  if (clientEpoch === -1) return ErrorCode.NONE;
  const epoch = leaderEpochOf(door, topic, index);
  return clientEpoch < epoch ? ErrorCode.FENCED_LEADER_EPOCH : clientEpoch > epoch ? ErrorCode.UNKNOWN_LEADER_EPOCH : ErrorCode.NONE;
}

/**
 * ledPartition for a read that names the leader epoch the client knows
 * (Fetch, ListOffsets, OffsetForLeaderEpoch), the epoch checked first as
 * Kafka's replica checks it (Partition.getLocalLog): the leader answers an
 * epoch it does not have FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH, and
 * so does a follower of the partition, before NOT_LEADER_OR_FOLLOWER.
 */
export function readablePartition(door: AccountDoor, topic: string, index: number, clientEpoch: number): Stream | number {
  const led = ledPartition(door, topic, index);
  if (typeof led !== "number") {
    const refused = leaderEpochError(door, topic, index, clientEpoch);
    return refused === ErrorCode.NONE ? led : refused;
  }
  if (led !== ErrorCode.NOT_LEADER_OR_FOLLOWER || clientEpoch === -1 || !hostsReplica(door, topic, index)) return led;
  const refused = leaderEpochError(door, topic, index, clientEpoch);
  return refused === ErrorCode.NONE ? led : refused;
}

/** Whether the cluster places a replica of the partition (its leader or a follower) on this broker. */
export function hostsReplica(door: AccountDoor, topic: string, index: number): boolean {
  const cluster = door.door.cluster;
  const placed = cluster === null ? undefined : cluster.topic(door.account, streamNameOf(topic));
  return placed !== undefined && placed.topic === topic && (placed.replicas[index]?.includes(cluster!.nodeId) ?? false);
}

/** A partition's leader epoch as Metadata shows it: the placement's, 0 for a partition never replicated. */
export function leaderEpochOf(door: AccountDoor, topic: string, index: number): number {
  const cluster = door.door.cluster;
  const placed = cluster === null ? undefined : cluster.topic(door.account, streamNameOf(topic));
  return placed === undefined || placed.topic !== topic ? 0 : (placed.epochs[index] ?? 0);
}

/** How many partitions a topic has, in the cluster or here; undefined when it does not exist. */
export function partitionCount(door: Pick<AccountDoor, "door" | "account" | "js">, topic: string): number | undefined {
  const cluster = door.door.cluster;
  const placed = cluster === null ? undefined : cluster.topic(door.account, streamNameOf(topic));
  if (placed !== undefined && placed.topic === topic) return placed.leaders.length;
  return findTopic(door.js, topic)?.partitions.length;
}

/**
 * NONE when this broker coordinates `key` (always, on a single node); else
 * NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or (a group's partition of the
 * offsets topic still loading here) COORDINATOR_LOAD_IN_PROGRESS.
 */
export function coordinatorError(door: AccountDoor, keyType: number, key: string): number {
  const store = keyType === KEY_TYPE_GROUP ? door.offsets : door.txnState;
  return door.door.cluster === null || store === null ? ErrorCode.NONE : store.check(key);
}

/** coordinatorError, but waiting a while for a group's partition of the offsets topic that is loading here (see ReplicatedOffsets.ready). */
export function coordinatorReady(door: AccountDoor, keyType: number, key: string): Promise<number> {
  const store = keyType === KEY_TYPE_GROUP ? door.offsets : door.txnState;
  return door.door.cluster === null || store === null ? Promise.resolve(ErrorCode.NONE) : store.ready(key);
}
