/**
 * Consumer-group requests on a raw Kafka connection, for tests that judge
 * the coordinator on the wire: JoinGroup v5, SyncGroup v3, Heartbeat v3
 * (the versions with group.instance.id), OffsetFetch v6–7 (KIP-447's
 * require_stable), one request at a time per connection.
 */

import { frame, type RawKafka } from "./kafka-raw.js";
import type { Reader, Writer } from "../../src/protocols/kafka/codec.js";

/** One request on a connection, its response (waited for up to `ms`). */
export async function call(k: RawKafka, apiKey: number, version: number, body: (w: Writer) => void, ms?: number): Promise<Reader> {
  const n = k.responses.length;
  k.send(frame(apiKey, version, body, n));
  return k.response(n, ms);
}

export interface Joined {
  error: number;
  generation: number;
  protocol: string;
  leader: string;
  memberId: string;
  /** The members' ids, for the leader only. */
  members: string[];
}

export interface JoinOptions {
  /** The assignors offered, in order of preference (default: "range"). */
  protocols?: string[];
  sessionMs?: number;
  rebalanceMs?: number;
  /** How long to wait for the answer. */
  ms?: number;
}

/** JoinGroup v5 (KIP-394 member ids, group.instance.id) of type "consumer". */
export async function joinGroup(k: RawKafka, group: string, memberId: string, instanceId: string | null = null, o: JoinOptions = {}): Promise<Joined> {
  const { protocols = ["range"], sessionMs = 10_000, rebalanceMs = 10_000, ms } = o;
  const r = await call(
    k,
    11,
    5,
    (w) => {
      w.string(group).i32(sessionMs).i32(rebalanceMs).string(memberId).nullableString(instanceId).string("consumer").arrayLength(protocols.length);
      for (const p of protocols) w.string(p).nullableBytes(Buffer.from("m"));
    },
    ms,
  );
  r.i32(); // throttle
  const error = r.i16();
  const generation = r.i32();
  const protocol = r.string();
  const leader = r.string();
  const id = r.string();
  const members = r.array((r) => {
    const m = r.string();
    r.nullableString();
    r.nullableBytes();
    return m;
  });
  return { error, generation, protocol, leader, memberId: id, members };
}

/** SyncGroup v3, each member named in `assignments` assigned its own id; the error and this member's assignment (waited for up to `ms`). */
export async function syncAssignment(k: RawKafka, group: string, generation: number, memberId: string, assignments: string[] = [], instanceId: string | null = null, ms?: number): Promise<{ error: number; assignment: string }> {
  const r = await call(
    k,
    14,
    3,
    (w) => {
      w.string(group).i32(generation).string(memberId).nullableString(instanceId);
      w.arrayLength(assignments.length);
      for (const m of assignments) w.string(m).nullableBytes(Buffer.from(m));
    },
    ms,
  );
  r.i32();
  const error = r.i16();
  return { error, assignment: r.nullableBytes()?.toString() ?? "" };
}

export async function heartbeat(k: RawKafka, group: string, generation: number, memberId: string, instanceId: string | null = null): Promise<number> {
  const r = await call(k, 12, 3, (w) => w.string(group).i32(generation).string(memberId).nullableString(instanceId));
  r.i32();
  return r.i16();
}

export interface OffsetFetched {
  /** [partition, committed offset, error] each. */
  partitions: number[][];
  error: number;
}

/** OffsetFetch v6 (flexible) or v7 (with require_stable) of partitions of one topic. */
export async function offsetFetch(k: RawKafka, group: string, topic: string, partitions: number[], version: 6 | 7, requireStable = false): Promise<OffsetFetched> {
  const r = await call(k, 9, version, (w) => {
    w.tags(); // request header v2
    w.compactString(group).arrayLength(1, true).compactString(topic).arrayLength(partitions.length, true);
    for (const p of partitions) w.i32(p);
    w.tags();
    if (version === 7) w.bool(requireStable);
    w.tags();
  });
  r.tags(); // response header v1
  r.i32(); // throttle
  const topics = r.array((r) => {
    const name = r.compactString();
    const out = r.array((r) => {
      const p = [r.i32(), Number(r.i64())];
      r.i32(); // committed_leader_epoch
      r.compactNullableString();
      p.push(r.i16());
      r.tags();
      return p;
    }, true);
    r.tags();
    return { name, out };
  }, true);
  const error = r.i16();
  r.tags();
  if (topics.length !== 1 || topics[0].name !== topic) throw new Error(`OffsetFetch answered for ${topics.map((t) => t.name).join(", ")}`);
  return { partitions: topics[0].out, error };
}
