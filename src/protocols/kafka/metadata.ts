/** ApiVersions, Metadata and DescribeCluster: what a Kafka client asks before anything else. */

import { API_VERSIONS, type RequestContext } from "./api.js";
import { decodeApiVersions, decodeDescribeCluster, decodeMetadata } from "./requests.js";
import type { KafkaDoor } from "./door.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { createTopic } from "./admin.js";
import { findTopic, mayManageTopic, topicNameError, topicOf } from "./topics.js";
import type { Stream } from "../../streams/stream.js";

export function handleApiVersions(_door: KafkaDoor, { conn, version, supported, r, w }: RequestContext): boolean {
  if (!supported) {
    // A version we do not know: answer in v0's format, which every client reads, with the versions we do.
    w.i16(ErrorCode.UNSUPPORTED_VERSION);
    w.array([...API_VERSIONS], (w, [key, [min, max]]) => w.i16(key).i16(min).i16(max));
    return true;
  }
  const flexible = version >= 3;
  const req = decodeApiVersions(r, version);
  if (req.clientSoftwareName !== null) conn.clientSoftware = { name: req.clientSoftwareName, version: req.clientSoftwareVersion ?? "" };
  w.i16(ErrorCode.NONE);
  w.array(
    [...API_VERSIONS],
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
  const { topics: names, allowAutoTopicCreation: allowCreate } = decodeMetadata(r, version);

  type Entry = { name: string; error: number; stream: Stream | undefined };
  const topics: Entry[] = [];
  if (names === null) {
    for (const s of door.js.streams.values()) topics.push({ name: topicOf(s), error: ErrorCode.NONE, stream: s });
    topics.sort((a, b) => (a.name < b.name ? -1 : 1));
  } else {
    for (const name of names) {
      let stream = findTopic(door.js, name);
      let error: number = ErrorCode.NONE;
      if (stream === undefined) {
        if (topicNameError(name) !== null) error = ErrorCode.INVALID_TOPIC_EXCEPTION;
        else if (allowCreate && door.options.autoCreateTopics && !mayManageTopic(conn.permissions, "CREATE", name)) error = ErrorCode.TOPIC_AUTHORIZATION_FAILED;
        else if (allowCreate && door.options.autoCreateTopics) {
          const made = await createTopic(door, name, door.options.defaultPartitions, new Map());
          if (made.error === ErrorCode.NONE || made.error === ErrorCode.TOPIC_ALREADY_EXISTS) stream = findTopic(door.js, name);
          else error = made.error;
          if (stream === undefined && error === ErrorCode.NONE) error = ErrorCode.LEADER_NOT_AVAILABLE;
        } else error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      }
      topics.push({ name, error, stream });
    }
  }

  if (version >= 3) w.i32(0); // throttle_time_ms
  const host = door.options.advertisedHost ?? conn.localHost;
  w.arrayLength(1);
  w.i32(door.nodeId).string(host).i32(door.port);
  if (version >= 1) w.nullableString(null); // rack
  if (version >= 2) w.nullableString(door.clusterId);
  if (version >= 1) w.i32(door.nodeId); // controller_id
  w.array(topics, (w, t) => {
    w.i16(t.error).string(t.name);
    if (version >= 1) w.bool(false); // is_internal
    const count = t.stream?.partitions.length ?? 0;
    w.arrayLength(count);
    for (let p = 0; p < count; p++) {
      w.i16(ErrorCode.NONE).i32(p).i32(door.nodeId);
      w.arrayLength(1).i32(door.nodeId); // replicas
      w.arrayLength(1).i32(door.nodeId); // in-sync replicas
      if (version >= 5) w.arrayLength(0); // offline replicas
    }
  });
  return true;
}

/**
 * DescribeCluster v0 (flexible: compact strings, tagged fields): this node
 * is the cluster and its controller, with the cluster id Metadata gives.
 */
export function handleDescribeCluster(door: AccountDoor, { conn, r, w }: RequestContext): boolean {
  decodeDescribeCluster(r); // include_cluster_authorized_operations: not computed
  w.i32(0).i16(ErrorCode.NONE).compactNullableString(null); // throttle_time_ms, error_code, error_message
  w.compactString(door.clusterId).i32(door.nodeId);
  w.arrayLength(1, true);
  w.i32(door.nodeId).compactString(door.options.advertisedHost ?? conn.localHost).i32(door.port).compactNullableString(null); // rack
  w.tags();
  w.i32(-2147483648); // cluster_authorized_operations: not computed
  w.tags();
  return true;
}
