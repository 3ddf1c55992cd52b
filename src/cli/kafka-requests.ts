/**
 * The admin requests the Kafka CLI commands send, and their answers decoded.
 * Each API is pinned to its highest non-flexible version that nagare
 * answers (src/protocols/kafka/api.ts), which Kafka brokers from 2.4 on
 * answer too. Error codes in answers are returned, not thrown: what an
 * error means depends on the command.
 */

import { Reader } from "../protocols/kafka/codec.js";
import { ApiKey } from "../protocols/kafka/api.js";
import { ErrorCode } from "../protocols/kafka/errors.js";
import { KafkaClientError, type KafkaClient } from "./kafka-client.js";

const V = {
  metadata: 6, // v4+ lets us turn topic auto-creation off
  createTopics: 4, // v4: -1 partitions/replication mean the broker's defaults (KIP-464)
  deleteTopics: 3,
  describeConfigs: 2,
  listOffsets: 3,
  listGroups: 2,
  describeGroups: 4,
  offsetFetch: 5, // v2+: a null topic list fetches every committed offset
  offsetCommit: 7,
  createPartitions: 1,
  incrementalAlterConfigs: 0,
  deleteGroups: 1,
  offsetDelete: 0,
  // Flexible from v0, their only version (Kafka 2.4 on; DescribeProducers 2.8).
  alterPartitionReassignments: 0,
  listPartitionReassignments: 0,
  describeProducers: 0,
} as const;

const ADMIN_TIMEOUT_MS = 30_000;
const RESOURCE_TOPIC = 2;
/** IncrementalAlterConfigs operations. */
const CONFIG_SET = 0;
const CONFIG_DELETE = 1;
export const EARLIEST = -2;
export const LATEST = -1;

const ERROR_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

export function errorName(code: number): string {
  return ERROR_NAMES.get(code) ?? `error ${code}`;
}

/** An error code the broker answered with. */
export class KafkaResponseError extends Error {
  constructor(
    readonly code: number,
    message?: string | null,
  ) {
    super(message ? `${message} (${errorName(code)})` : errorName(code));
  }
}

/** Partition numbers by topic, in first-seen order. */
function byTopic(partitions: Array<{ topic: string; partition: number }>): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const p of partitions) {
    const list = out.get(p.topic);
    if (list === undefined) out.set(p.topic, [p.partition]);
    else list.push(p.partition);
  }
  return out;
}

// ---- topics ----

export interface TopicMetadata {
  name: string;
  error: number;
  /** Each partition's leader, replicas and in-sync replicas, as broker ids. */
  partitions: Array<{ partition: number; error: number; leader: number; replicas: number[]; isr: number[] }>;
}

/** Metadata of `topics` (null: every topic), never creating one. */
export async function metadata(c: KafkaClient, topics: string[] | null): Promise<TopicMetadata[]> {
  const r = await c.request(ApiKey.Metadata, V.metadata, (w) => {
    if (topics === null) w.arrayLength(-1);
    else w.array(topics, (w, t) => w.string(t));
    w.bool(false); // allow_auto_topic_creation
  });
  r.i32(); // throttle_time_ms
  r.array((r) => (r.i32(), r.string(), r.i32(), r.nullableString())); // brokers: node_id, host, port, rack
  r.nullableString(); // cluster_id
  r.i32(); // controller_id
  return r.array((r) => {
    const error = r.i16();
    const name = r.string();
    r.bool(); // is_internal
    const partitions = r.array((r) => {
      const error = r.i16();
      const partition = r.i32();
      const leader = r.i32();
      const replicas = r.array((r) => r.i32());
      const isr = r.array((r) => r.i32());
      r.array((r) => r.i32()); // offline_replicas
      return { partition, error, leader, replicas, isr };
    });
    partitions.sort((a, b) => a.partition - b.partition);
    return { name, error, partitions };
  });
}

export interface Outcome {
  error: number;
  message: string | null;
}

/** `partitions` -1 and replication -1: the broker's defaults. */
/** Creates a topic; -1 partitions or replication factor: the broker's default. */
export async function createTopic(c: KafkaClient, name: string, partitions: number, configs: Array<[string, string]>, replicationFactor = -1): Promise<Outcome> {
  const r = await c.request(ApiKey.CreateTopics, V.createTopics, (w) => {
    w.arrayLength(1);
    w.string(name).i32(partitions).i16(replicationFactor);
    w.arrayLength(0); // assignments
    w.array(configs, (w, [k, v]) => w.string(k).nullableString(v));
    w.i32(ADMIN_TIMEOUT_MS);
    w.bool(false); // validate_only
  });
  r.i32(); // throttle_time_ms
  const [result] = r.array((r) => ({ name: r.string(), error: r.i16(), message: r.nullableString() }));
  if (result === undefined) throw new KafkaClientError("the broker answered CreateTopics without a result");
  return { error: result.error, message: result.message };
}

export async function deleteTopic(c: KafkaClient, name: string): Promise<number> {
  const r = await c.request(ApiKey.DeleteTopics, V.deleteTopics, (w) => {
    w.array([name], (w, t) => w.string(t));
    w.i32(ADMIN_TIMEOUT_MS);
  });
  r.i32(); // throttle_time_ms
  const [result] = r.array((r) => ({ name: r.string(), error: r.i16() }));
  if (result === undefined) throw new KafkaClientError("the broker answered DeleteTopics without a result");
  return result.error;
}

export interface ConfigEntry {
  name: string;
  value: string | null;
  readOnly: boolean;
  source: string;
  sensitive: boolean;
}

/** DescribeConfigs v1+ config_source values. */
const CONFIG_SOURCES = ["unknown", "topic", "broker", "broker", "broker", "default", "broker"];

export async function describeTopicConfigs(c: KafkaClient, topic: string): Promise<Outcome & { entries: ConfigEntry[] }> {
  const r = await c.request(ApiKey.DescribeConfigs, V.describeConfigs, (w) => {
    w.arrayLength(1);
    w.i8(RESOURCE_TOPIC).string(topic).arrayLength(-1); // every config key
    w.bool(false); // include_synonyms
  });
  r.i32(); // throttle_time_ms
  const [result] = r.array((r) => {
    const error = r.i16();
    const message = r.nullableString();
    r.i8(); // resource_type
    r.string(); // resource_name
    const entries = r.array((r): ConfigEntry => {
      const name = r.string();
      const value = r.nullableString();
      const readOnly = r.bool();
      const source = CONFIG_SOURCES[r.i8()] ?? "unknown";
      const sensitive = r.bool();
      r.array((r) => (r.string(), r.nullableString(), r.i8())); // synonyms
      return { name, value, readOnly, source, sensitive };
    });
    return { error, message, entries };
  });
  if (result === undefined) throw new KafkaClientError("the broker answered DescribeConfigs without a result");
  result.entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return result;
}

export interface PartitionOffset {
  topic: string;
  partition: number;
  error: number;
  offset: number;
}

/**
 * The earliest (-2) or latest (-1: the high watermark) offset of each
 * partition, or the first offset at or after a time (ms; -1 when no record
 * is that recent).
 */
export async function listOffsets(c: KafkaClient, at: number, partitions: Array<{ topic: string; partition: number }>): Promise<PartitionOffset[]> {
  const topics = byTopic(partitions);
  if (topics.size === 0) return [];
  const r = await c.request(ApiKey.ListOffsets, V.listOffsets, (w) => {
    w.i32(-1); // replica_id: a consumer
    w.i8(0); // isolation_level: read_uncommitted, so latest is the high watermark
    w.array([...topics], (w, [topic, parts]) => {
      w.string(topic);
      w.array(parts, (w, p) => w.i32(p).i64(at));
    });
  });
  r.i32(); // throttle_time_ms
  return r
    .array((r) => {
      const topic = r.string();
      return r.array((r): PartitionOffset => {
        const partition = r.i32();
        const error = r.i16();
        r.i64(); // timestamp
        return { topic, partition, error, offset: r.i64() };
      });
    })
    .flat();
}

/** Grows `topic` to `count` partitions (CreatePartitions); `validateOnly`: only says whether it would. */
export async function createPartitions(c: KafkaClient, topic: string, count: number, validateOnly = false): Promise<Outcome> {
  const r = await c.request(ApiKey.CreatePartitions, V.createPartitions, (w) => {
    w.arrayLength(1).string(topic).i32(count).arrayLength(-1); // assignments: the broker's choice
    w.i32(ADMIN_TIMEOUT_MS);
    w.bool(validateOnly);
  });
  r.i32(); // throttle_time_ms
  const [result] = r.array((r) => ({ name: r.string(), error: r.i16(), message: r.nullableString() }));
  if (result === undefined) throw new KafkaClientError("the broker answered CreatePartitions without a result");
  return { error: result.error, message: result.message };
}

/** Moves partition `partition` of `topic` to broker `to` (its one replica), or with null cancels its move (AlterPartitionReassignments). */
/** A partition's replicas become `to` (one broker id, or several, preferred leader first); null cancels a reassignment under way. */
export async function alterPartitionReassignment(c: KafkaClient, topic: string, partition: number, to: number | readonly number[] | null): Promise<Outcome> {
  const replicas = to === null ? null : typeof to === "number" ? [to] : to;
  const r = await c.request(ApiKey.AlterPartitionReassignments, V.alterPartitionReassignments, (w) => {
    w.i32(ADMIN_TIMEOUT_MS);
    w.arrayLength(1, true).compactString(topic);
    w.arrayLength(1, true).i32(partition);
    if (replicas === null) w.arrayLength(-1, true);
    else {
      w.arrayLength(replicas.length, true);
      for (const id of replicas) w.i32(id);
    }
    w.tags().tags().tags();
  });
  r.i32(); // throttle_time_ms
  const error = r.i16();
  const message = r.compactNullableString();
  if (error !== ErrorCode.NONE) return { error, message };
  const topics = r.array((r) => {
    r.compactString();
    const parts = r.array((r) => {
      const p = { index: r.i32(), error: r.i16(), message: r.compactNullableString() };
      r.tags();
      return p;
    }, true);
    r.tags();
    return parts;
  }, true);
  const result = topics.flat()[0];
  if (result === undefined) throw new KafkaClientError("the broker answered AlterPartitionReassignments without a result");
  return { error: result.error, message: result.message };
}

export interface Reassignment {
  topic: string;
  partition: number;
  replicas: number[];
  adding: number[];
  removing: number[];
}

/** The partition reassignments under way, of every topic (ListPartitionReassignments). */
export async function listPartitionReassignments(c: KafkaClient): Promise<{ error: number; message: string | null; reassignments: Reassignment[] }> {
  const r = await c.request(ApiKey.ListPartitionReassignments, V.listPartitionReassignments, (w) => {
    w.i32(ADMIN_TIMEOUT_MS).arrayLength(-1, true).tags();
  });
  r.i32(); // throttle_time_ms
  const error = r.i16();
  const message = r.compactNullableString();
  const ids = (r: Reader): number[] => r.array((r) => r.i32(), true);
  const reassignments = r
    .array((r) => {
      const topic = r.compactString();
      const parts = r.array((r) => {
        const p = { topic, partition: r.i32(), replicas: ids(r), adding: ids(r), removing: ids(r) };
        r.tags();
        return p;
      }, true);
      r.tags();
      return parts;
    }, true)
    .flat();
  return { error, message, reassignments };
}

export interface ActiveProducer {
  partition: number;
  producerId: number;
  epoch: number;
  lastSequence: number;
  /** Milliseconds since the epoch, or -1. */
  lastTimestamp: number;
  coordinatorEpoch: number;
  /** The first offset of its open transaction, or -1. */
  txnStartOffset: number;
}

/** The idempotent and transactional producers of partitions of `topic`, as the broker's replica of each knows them (DescribeProducers); a partition answered with an error gives its error and no producer. */
export async function describeProducers(c: KafkaClient, topic: string, partitions: number[]): Promise<Array<{ partition: number; error: number; message: string | null; producers: ActiveProducer[] }>> {
  const r = await c.request(ApiKey.DescribeProducers, V.describeProducers, (w) => {
    w.arrayLength(1, true).compactString(topic).arrayLength(partitions.length, true);
    for (const p of partitions) w.i32(p);
    w.tags().tags();
  });
  r.i32(); // throttle_time_ms
  const answered = r.array((r) => {
    r.compactString();
    const parts = r.array((r) => {
      const partition = r.i32();
      const error = r.i16();
      const message = r.compactNullableString();
      const producers = r.array((r): ActiveProducer => {
        const a = { partition, producerId: r.i64(), epoch: r.i32(), lastSequence: r.i32(), lastTimestamp: r.i64(), coordinatorEpoch: r.i32(), txnStartOffset: r.i64() };
        r.tags();
        return a;
      }, true);
      r.tags();
      return { partition, error, message, producers };
    }, true);
    r.tags();
    return parts;
  }, true);
  return answered.flat();
}

/** A topic config set to a value, or (null) back to its default. */
export type ConfigChange = [name: string, value: string | null];

/** Sets or resets the named configs of `topic`, leaving the others (IncrementalAlterConfigs, as kafka-configs.sh); `validateOnly`: only says whether it would. */
export async function alterTopicConfigs(c: KafkaClient, topic: string, changes: ConfigChange[], validateOnly = false): Promise<Outcome> {
  const r = await c.request(ApiKey.IncrementalAlterConfigs, V.incrementalAlterConfigs, (w) => {
    w.arrayLength(1).i8(RESOURCE_TOPIC).string(topic);
    w.array(changes, (w, [name, value]) => w.string(name).i8(value === null ? CONFIG_DELETE : CONFIG_SET).nullableString(value));
    w.bool(validateOnly);
  });
  r.i32(); // throttle_time_ms
  const [result] = r.array((r) => {
    const error = r.i16();
    const message = r.nullableString();
    r.i8(); // resource_type
    r.string(); // resource_name
    return { error, message };
  });
  if (result === undefined) throw new KafkaClientError("the broker answered IncrementalAlterConfigs without a result");
  return result;
}

// ---- groups ----

/** Deletes groups with no members, and their committed offsets (DeleteGroups): the error code of each. */
export async function deleteGroups(c: KafkaClient, groups: string[]): Promise<Array<{ group: string; error: number }>> {
  const r = await c.request(ApiKey.DeleteGroups, V.deleteGroups, (w) => w.array(groups, (w, g) => w.string(g)));
  r.i32(); // throttle_time_ms
  return r.array((r) => ({ group: r.string(), error: r.i16() }));
}

export interface PartitionResult {
  topic: string;
  partition: number;
  error: number;
}

/** Deletes a group's committed offsets of some partitions (OffsetDelete): the group's error code and each partition's. */
export async function deleteCommittedOffsets(c: KafkaClient, group: string, partitions: Array<{ topic: string; partition: number }>): Promise<{ error: number; partitions: PartitionResult[] }> {
  const r = await c.request(ApiKey.OffsetDelete, V.offsetDelete, (w) => {
    w.string(group);
    w.array([...byTopic(partitions)], (w, [topic, parts]) => w.string(topic).array(parts, (w, p) => w.i32(p)));
  });
  const error = r.i16();
  r.i32(); // throttle_time_ms
  const results = r.array((r) => {
    const topic = r.string();
    return r.array((r): PartitionResult => ({ topic, partition: r.i32(), error: r.i16() }));
  });
  return { error, partitions: results.flat() };
}

/**
 * Commits offsets for a group as admin tools do (OffsetCommit with no
 * generation or member): the broker takes it only while the group has no
 * members.
 */
export async function commitOffsets(c: KafkaClient, group: string, offsets: Array<{ topic: string; partition: number; offset: number }>): Promise<PartitionResult[]> {
  const grouped = new Map<string, Array<{ partition: number; offset: number }>>();
  for (const o of offsets) {
    const list = grouped.get(o.topic);
    if (list === undefined) grouped.set(o.topic, [o]);
    else list.push(o);
  }
  const r = await c.request(ApiKey.OffsetCommit, V.offsetCommit, (w) => {
    w.string(group).i32(-1).string("").nullableString(null); // generation_id, member_id, group_instance_id
    w.array([...grouped], (w, [topic, parts]) => {
      w.string(topic);
      w.array(parts, (w, p) => w.i32(p.partition).i64(p.offset).i32(-1).nullableString(null)); // committed_leader_epoch, metadata
    });
  });
  r.i32(); // throttle_time_ms
  return r
    .array((r) => {
      const topic = r.string();
      return r.array((r): PartitionResult => ({ topic, partition: r.i32(), error: r.i16() }));
    })
    .flat();
}

export async function listGroups(c: KafkaClient): Promise<Array<{ group: string; protocolType: string }>> {
  const r = await c.request(ApiKey.ListGroups, V.listGroups, () => undefined);
  r.i32(); // throttle_time_ms
  const error = r.i16();
  const groups = r.array((r) => ({ group: r.string(), protocolType: r.string() }));
  if (error !== ErrorCode.NONE) throw new KafkaResponseError(error, "ListGroups failed");
  return groups;
}

export interface GroupMember {
  memberId: string;
  instanceId: string | null;
  clientId: string;
  host: string;
  assignment: Buffer;
}

export interface GroupDescription {
  group: string;
  error: number;
  state: string;
  protocolType: string;
  protocol: string;
  members: GroupMember[];
}

export async function describeGroups(c: KafkaClient, groups: string[]): Promise<GroupDescription[]> {
  if (groups.length === 0) return [];
  const r = await c.request(ApiKey.DescribeGroups, V.describeGroups, (w) => {
    w.array(groups, (w, g) => w.string(g));
    w.bool(false); // include_authorized_operations
  });
  r.i32(); // throttle_time_ms
  return r.array((r): GroupDescription => {
    const error = r.i16();
    const group = r.string();
    const state = r.string();
    const protocolType = r.string();
    const protocol = r.string();
    const members = r.array((r): GroupMember => {
      const memberId = r.string();
      const instanceId = r.nullableString();
      const clientId = r.string();
      const host = r.string();
      r.nullableBytes(); // member_metadata
      // Copied: the reader's buffer is the whole response.
      const assignment = Buffer.from(r.nullableBytes() ?? Buffer.alloc(0));
      return { memberId, instanceId, clientId, host, assignment };
    });
    r.i32(); // authorized_operations
    return { group, error, state, protocolType, protocol, members };
  });
}

export interface CommittedOffset {
  topic: string;
  partition: number;
  offset: number;
}

/** Every offset `group` has committed; -1 offsets (nothing committed) are left out. */
export async function fetchCommittedOffsets(c: KafkaClient, group: string): Promise<CommittedOffset[]> {
  const r = await c.request(ApiKey.OffsetFetch, V.offsetFetch, (w) => {
    w.string(group);
    w.arrayLength(-1); // every topic
  });
  r.i32(); // throttle_time_ms
  const out: CommittedOffset[] = [];
  let partitionError: number = ErrorCode.NONE;
  r.array((r) => {
    const topic = r.string();
    r.array((r) => {
      const partition = r.i32();
      const offset = r.i64();
      r.i32(); // committed_leader_epoch
      r.nullableString(); // metadata
      const error = r.i16();
      if (error !== ErrorCode.NONE) partitionError = error;
      else if (offset >= 0) out.push({ topic, partition, offset });
    });
  });
  const error = r.i16();
  if (error !== ErrorCode.NONE || partitionError !== ErrorCode.NONE) {
    throw new KafkaResponseError(error !== ErrorCode.NONE ? error : partitionError, `fetching the committed offsets of group ${group} failed`);
  }
  return out;
}

/**
 * The partitions of a consumer-protocol assignment (version int16, then
 * topic and partition arrays, then user data), or null when the bytes are
 * not one. Members write these bytes, so nothing in them is trusted.
 */
export function decodeAssignment(bytes: Buffer): Array<{ topic: string; partitions: number[] }> | null {
  if (bytes.length === 0) return []; // not assigned yet (a rebalance is running)
  try {
    const r = new Reader(bytes);
    if (r.i16() < 0) return null;
    return r.array((r) => ({ topic: r.string(), partitions: r.array((r) => r.i32()) }));
    // user_data follows; we have no use for it, and a version 0 assignment may end before it.
  } catch {
    return null;
  }
}
