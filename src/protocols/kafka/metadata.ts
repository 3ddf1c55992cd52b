/** ApiVersions, Metadata and DescribeCluster: what a Kafka client asks before anything else. */

import { API_VERSIONS, type RequestContext } from "./api.js";
import type { Writer } from "./codec.js";
import { decodeApiVersions, decodeDescribeCluster, decodeMetadata } from "./requests.js";
import type { KafkaDoor } from "./door.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { createTopic } from "./admin.js";
import { findTopic, isInternalTopic, mayManageTopic, streamNameOf, topicNameError, topicOf } from "./topics.js";
import type { PlacedTopic } from "./cluster.js";
import type { Stream } from "../../streams/stream.js";
import { creationOf, topicById, topicIdOf } from "./topic-ids.js";
import { ZERO_UUID } from "./codec.js";

const API_KEY_API_VERSIONS = 18;

/** A client software name or version of ApiVersions v3+ (Kafka's SOFTWARE_NAME_VERSION_PATTERN). */
const SOFTWARE_NAME = /^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$/;

export function handleApiVersions(_door: KafkaDoor, { conn, version, supported, r, w }: RequestContext): boolean {
  if (!supported) {
    // A version we do not know: answer in v0's format, which every client reads, with the ApiVersions versions we do
    // (Kafka's KIP-511 answer: the client asks again with one of them, and learns the rest from that answer).
    w.i16(ErrorCode.UNSUPPORTED_VERSION);
    w.array([...API_VERSIONS].filter(([key]) => key === API_KEY_API_VERSIONS), (w, [key, [min, max]]) => w.i16(key).i16(min).i16(max));
    return true;
  }
  const flexible = version >= 3;
  const req = decodeApiVersions(r, version);
  // As Kafka (ApiVersionsRequest.isValid): v3+ names the client software in letters, digits, '-' and '.', else
  // INVALID_REQUEST with no versions; the connection stays.
  const valid = version < 3 || (SOFTWARE_NAME.test(req.clientSoftwareName ?? "") && SOFTWARE_NAME.test(req.clientSoftwareVersion ?? ""));
  if (valid && req.clientSoftwareName !== null) conn.clientSoftware = { name: req.clientSoftwareName, version: req.clientSoftwareVersion ?? "" };
  w.i16(valid ? ErrorCode.NONE : ErrorCode.INVALID_REQUEST);
  w.array(
    valid ? [...API_VERSIONS] : [],
    (w, [key, [min, max]]) => {
      w.i16(key).i16(min).i16(max);
      if (flexible) w.tags();
    },
    flexible,
  );
  if (version >= 1) w.i32(0); // throttle_time_ms
  if (flexible) w.tags();
  return true;
}

export async function handleMetadata(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { topics: names, topicIds, refused, allowAutoTopicCreation: allowCreate } = decodeMetadata(r, version);
  const ids = door.topicIds;

  const topics: TopicEntry[] = [];
  if (names === null) {
    const placed = door.door.cluster?.topics(door.account) ?? [];
    const seen = new Set<string>();
    for (const p of placed) {
      seen.add(p.stream);
      topics.push({ name: p.topic, id: ids.idOf(p.stream, p.created, p.topic), error: ErrorCode.NONE, partitions: placedPartitions(p) });
    }
    for (const s of door.js.streams.values()) {
      if (seen.has(s.config.name)) continue;
      const name = topicOf(s);
      topics.push({ name, id: ids.idOf(s.config.name, creationOf(s), name), error: ErrorCode.NONE, partitions: localPartitions(door, s) });
    }
    topics.sort((a, b) => (a.name! < b.name! ? -1 : 1));
  } else {
    // v10–11 may not name topics by id (Kafka refuses them); v12+ may, and an id no topic has is UNKNOWN_TOPIC_ID.
    for (const name of refused) topics.push({ name, id: ZERO_UUID, error: ErrorCode.INVALID_REQUEST, partitions: [] });
    for (const id of topicIds) {
      const name = topicById(door, id);
      const partitions = name === undefined ? undefined : partitionsOf(door, name);
      if (name === undefined || partitions === undefined) topics.push({ name: null, id, error: ErrorCode.UNKNOWN_TOPIC_ID, partitions: [] });
      else topics.push({ name, id, error: ErrorCode.NONE, partitions });
    }
    for (const name of names) {
      let partitions = partitionsOf(door, name);
      let error: number = ErrorCode.NONE;
      if (partitions === undefined) {
        if (topicNameError(name) !== null) error = ErrorCode.INVALID_TOPIC_EXCEPTION;
        // The coordinators' own topics exist only where they make them (a cluster's); a client's Metadata never does.
        else if (isInternalTopic(name)) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        else if (allowCreate && door.options.autoCreateTopics && !mayManageTopic(conn.permissions, "CREATE", name)) error = ErrorCode.TOPIC_AUTHORIZATION_FAILED;
        else if (allowCreate && door.options.autoCreateTopics) {
          const made = await createTopic(door, name, door.options.defaultPartitions, new Map(), false, door.options.defaultReplicationFactor);
          if (made.error === ErrorCode.NONE || made.error === ErrorCode.TOPIC_ALREADY_EXISTS) partitions = partitionsOf(door, name);
          else error = made.error;
          if (partitions === undefined && error === ErrorCode.NONE) error = ErrorCode.LEADER_NOT_AVAILABLE;
        } else error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      }
      topics.push({ name, id: (partitions !== undefined ? topicIdOf(door, name) : undefined) ?? ZERO_UUID, error, partitions: partitions ?? [] });
    }
  }

  if (version >= 3) w.i32(0); // throttle_time_ms
  const self = door.options.advertisedHost ?? conn.localHost;
  const cluster = door.door.cluster;
  const brokers = cluster === null ? [{ id: door.nodeId, host: self, port: door.port }] : cluster.brokers().map((b) => (b.id === door.nodeId ? { id: b.id, host: self, port: door.port } : b));
  w.array(brokers, (w, b) => {
    w.i32(b.id).string(b.host).i32(b.port);
    if (version >= 1) w.nullableString(null); // rack
    w.taggedFields();
  });
  if (version >= 2) w.nullableString(door.clusterId);
  if (version >= 1) w.i32(cluster === null ? door.nodeId : cluster.controllerId());
  w.array(topics, (w, t) => {
    w.i16(t.error).nullableString(t.name);
    if (version >= 10) w.uuid(t.id);
    if (version >= 1) w.bool(t.name !== null && isInternalTopic(t.name)); // is_internal
    w.arrayLength(t.partitions.length);
    t.partitions.forEach((p, index) => {
      // A leader that is down: no leader (until an in-sync replica takes over, when the partition is replicated).
      w.i16(p.live ? ErrorCode.NONE : ErrorCode.LEADER_NOT_AVAILABLE).i32(index).i32(p.live ? p.leader : -1);
      if (version >= 7) w.i32(p.epoch);
      writeIds(w, p.replicas);
      writeIds(w, p.isr);
      if (version >= 5) writeIds(w, p.offline);
      w.taggedFields();
    });
    if (version >= 8) w.i32(AUTHORIZED_OPERATIONS_NOT_COMPUTED); // topic_authorized_operations
    w.taggedFields();
  });
  if (version >= 8 && version <= 10) w.i32(AUTHORIZED_OPERATIONS_NOT_COMPUTED); // cluster_authorized_operations
  w.taggedFields();
  return true;
}

interface PartitionEntry {
  leader: number;
  live: boolean;
  /** The leader epoch (0: never replicated). */
  epoch: number;
  /** Broker ids: the replicas (the leader alone when not replicated), those in sync, those not up. */
  replicas: readonly number[];
  isr: readonly number[];
  offline: readonly number[];
}

function writeIds(w: Writer, ids: readonly number[]): void {
  w.arrayLength(ids.length);
  for (const id of ids) w.i32(id);
}

/** Kafka's value for authorized operations not asked for; nagare computes none (Kafka ACLs are not kept: acls.ts). */
const AUTHORIZED_OPERATIONS_NOT_COMPUTED = -2147483648;

interface TopicEntry {
  /** Null only for a topic asked for by an id nobody has. */
  name: string | null;
  /** The topic id (v10+; topic-ids.ts), ZERO_UUID for a topic that does not exist. */
  id: string;
  error: number;
  partitions: PartitionEntry[];
}

function placedPartitions(p: PlacedTopic): PartitionEntry[] {
  return p.leaders.map((leader, i) => ({ leader, live: p.live[i], epoch: p.epochs[i], replicas: p.replicas[i], isr: p.isr[i], offline: p.offline[i] }));
}

function localPartitions(door: AccountDoor, s: Stream): PartitionEntry[] {
  const self = [door.nodeId];
  return s.partitions.map(() => ({ leader: door.nodeId, live: true, epoch: 0, replicas: self, isr: self, offline: [] }));
}

/** A topic's partitions as Metadata gives them: placed in the cluster, else this node's stream; undefined when it exists nowhere. */
function partitionsOf(door: AccountDoor, name: string): PartitionEntry[] | undefined {
  const placed = door.door.cluster?.topic(door.account, streamNameOf(name));
  if (placed !== undefined && placed.topic === name) return placedPartitions(placed);
  const stream = findTopic(door.js, name);
  return stream === undefined ? undefined : localPartitions(door, stream);
}

/**
 * DescribeCluster v0 (flexible: compact strings, tagged fields): the
 * brokers and the controller, with the cluster id Metadata gives.
 */
export function handleDescribeCluster(door: AccountDoor, { conn, r, w }: RequestContext): boolean {
  decodeDescribeCluster(r); // include_cluster_authorized_operations: not computed
  w.i32(0).i16(ErrorCode.NONE).compactNullableString(null); // throttle_time_ms, error_code, error_message
  const cluster = door.door.cluster;
  w.compactString(door.clusterId).i32(cluster === null ? door.nodeId : cluster.controllerId());
  const self = door.options.advertisedHost ?? conn.localHost;
  const brokers = cluster === null ? [{ id: door.nodeId, host: self, port: door.port }] : cluster.brokers().map((b) => (b.id === door.nodeId ? { id: b.id, host: self, port: door.port } : b));
  w.arrayLength(brokers.length, true);
  for (const b of brokers) {
    w.i32(b.id).compactString(b.host).i32(b.port).compactNullableString(null); // rack
    w.tags();
  }
  w.i32(AUTHORIZED_OPERATIONS_NOT_COMPUTED); // cluster_authorized_operations
  w.tags();
  return true;
}
