/**
 * AlterPartitionReassignments (45) and ListPartitionReassignments (46), v0
 * (flexible). A partition of one replica moves to the one broker named: the
 * cluster records the move and the target copies the partition and takes
 * it over (streams/stream-move.ts); a topic moves one partition at a time
 * (REASSIGNMENT_IN_PROGRESS for another). A replicated partition gets the
 * replicas named, as Kafka reassigns: the new ones copy it and join the
 * ISR, then the others are dropped (streams/stream-replicas.ts); the
 * replication factor may change, but not to or from one
 * (INVALID_REPLICA_ASSIGNMENT). Either way the answer goes as soon as the
 * change is recorded, as Kafka's does, and null replicas cancel one under
 * way. On a single node the only broker is this one: a reassignment to it
 * changes nothing, and none is ever under way.
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { KafkaClusterError } from "./cluster.js";
import { ErrorCode } from "./errors.js";
import { decodeAlterPartitionReassignments, decodeListPartitionReassignments } from "./requests.js";
import { findTopic, mayManageTopic, streamNameOf, mayDescribeTopic } from "./topics.js";

interface Outcome {
  index: number;
  error: number;
  message: string | null;
}

export async function handleAlterPartitionReassignments(door: AccountDoor, { conn, r, w }: RequestContext): Promise<boolean> {
  const { topics } = decodeAlterPartitionReassignments(r);
  const results: Array<{ name: string; partitions: Outcome[] }> = [];
  for (const t of topics) {
    const partitions: Outcome[] = [];
    for (const p of t.partitions) partitions.push({ index: p.index, ...(await reassign(door, conn.permissions, t.name, p.index, p.replicas)) });
    results.push({ name: t.name, partitions });
  }
  w.i32(0).i16(ErrorCode.NONE).compactNullableString(null); // throttle_time_ms, error_code, error_message
  w.arrayLength(results.length, true);
  for (const t of results) {
    w.compactString(t.name).arrayLength(t.partitions.length, true);
    for (const p of t.partitions) w.i32(p.index).i16(p.error).compactNullableString(p.message).tags();
    w.tags();
  }
  w.tags();
  return true;
}

async function reassign(door: AccountDoor, perms: Parameters<typeof mayManageTopic>[0], topic: string, index: number, replicas: number[] | null): Promise<{ error: number; message: string | null }> {
  const fail = (error: number, message: string): { error: number; message: string } => ({ error, message });
  if (!mayManageTopic(perms, "UPDATE", topic)) return fail(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.");
  if (replicas !== null) {
    if (replicas.length === 0) return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "The manual partition assignment includes an empty replica list.");
    if (new Set(replicas).size !== replicas.length) return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `The manual partition assignment includes the broker ${replicas.find((b, i) => replicas.indexOf(b) !== i)} more than once.`);
  }
  const cluster = door.door.cluster;
  if (cluster === null) {
    const stream = findTopic(door.js, topic);
    if (stream === undefined || index < 0 || index >= stream.partitions.length) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `Unable to find partition ${topic}-${index}.`);
    if (replicas === null) return fail(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, "No partition reassignment is in progress.");
    if (replicas.length > 1) return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `The manual partition assignment includes ${replicas.length} replicas, and this broker is the only one.`);
    if (replicas[0] !== door.nodeId) return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `The manual partition assignment includes broker ${replicas[0]}, but no such broker is registered.`);
    return { error: ErrorCode.NONE, message: null };
  }
  const placed = cluster.topic(door.account, streamNameOf(topic));
  if (placed === undefined || placed.topic !== topic) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `Unable to find a topic named ${topic}.`);
  try {
    await cluster.reassign(door.account, placed.stream, index, replicas, door.js.limits);
    return { error: ErrorCode.NONE, message: null };
  } catch (err) {
    if (err instanceof KafkaClusterError) {
      return fail(err.code ?? (err.retriable ? ErrorCode.REQUEST_TIMED_OUT : ErrorCode.INVALID_REQUEST), err.message);
    }
    throw err;
  }
}

/**
 * Each partition being moved: replicas [target, leader], adding [target],
 * removing [leader], as Kafka lists a reassignment from one broker to
 * another while both hold the partition; each replicated partition being
 * reassigned: its replicas now (original and target), those added and those
 * to go.
 */
export function handleListPartitionReassignments(door: AccountDoor, { conn, r, w }: RequestContext): boolean {
  const { topics } = decodeListPartitionReassignments(r);
  const cluster = door.door.cluster;
  const out: Array<{ name: string; partitions: Array<{ index: number; replicas: number[]; adding: number[]; removing: number[] }> }> = [];
  if (cluster !== null) {
    const asked = topics === null ? null : new Map(topics.map((t) => [t.name, new Set(t.partitions)]));
    for (const t of cluster.topics(door.account)) {
      const partitions: Array<{ index: number; replicas: number[]; adding: number[]; removing: number[] }> = [];
      const m = t.moving;
      if (m !== null) partitions.push({ index: m.partition, replicas: [m.to, t.leaders[m.partition]], adding: [m.to], removing: [t.leaders[m.partition]] });
      t.reassigning.forEach((re, index) => {
        if (re !== null) partitions.push({ index, ...re });
      });
      const listed = partitions.filter((p) => asked === null || asked.get(t.topic)?.has(p.index) === true);
      if (listed.length === 0) continue;
      const local = door.js.streams.get(t.stream);
      // Only what the client may see: a topic it may not describe is not listed.
      if (local !== undefined && !mayDescribeTopic(conn.permissions, local)) continue;
      out.push({ name: t.topic, partitions: listed.sort((a, b) => a.index - b.index) });
    }
  }
  w.i32(0).i16(ErrorCode.NONE).compactNullableString(null); // throttle_time_ms, error_code, error_message
  w.arrayLength(out.length, true);
  for (const t of out) {
    w.compactString(t.name).arrayLength(t.partitions.length, true);
    for (const p of t.partitions) {
      w.i32(p.index);
      for (const list of [p.replicas, p.adding, p.removing]) {
        w.arrayLength(list.length, true);
        for (const id of list) w.i32(id);
      }
      w.tags();
    }
    w.tags();
  }
  w.tags();
  return true;
}
