/**
 * A consumer group's generation and members survive its coordinator's
 * node, in a three-node cluster with one real etcd, as Kafka's coordinator
 * stores group metadata in `__consumer_offsets`: the broker that takes the
 * group over knows its members and their assignments, so a member goes on
 * heartbeating it in the same generation instead of being told it is
 * unknown (and the first member back taking every partition while the
 * others still work theirs). Judged with raw Kafka requests (JoinGroup,
 * SyncGroup, Heartbeat, DescribeGroups) and KafkaJS's admin.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntilAsync } from "./helpers/clients.js";
import { ask as askBroker, findCoordinator, frame } from "./helpers/kafka-raw.js";
import type { Reader } from "../src/protocols/kafka/codec.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => (cluster = await startKafkaTestCluster("kafkagroups")));
after(() => cluster.stop());

const brokerId = (n: NagareServer): number => cluster.brokerId(n);

/** One request to broker `n` on a connection of its own, its answer read by `read`. */
function ask<T>(n: NagareServer, request: Buffer, read: (r: Reader) => T): Promise<T> {
  return askBroker(n.kafkaPort!, request, read);
}

/** The node coordinating `group`, once every live broker names the same one and it serves the group. */
async function coordinatorOf(group: string): Promise<NagareServer> {
  let node: NagareServer | undefined;
  await waitUntilAsync(async () => {
    const answers = await Promise.all(cluster.live().map((n) => findCoordinator(n.kafkaPort!, group, 0)));
    node = cluster.live().find((n) => brokerId(n) === answers[0].id);
    return node !== undefined && answers.every((a) => a.error === 0 && a.id === answers[0].id);
  }, `the live brokers to agree on the coordinator of ${group}`, 30_000);
  return node!;
}

const SESSION_MS = 30_000;
const ASSIGNMENT = Buffer.from("the member's assignment");

/** JoinGroup v0 as a new member of `group`, alone: its member id and generation. */
function join(n: NagareServer, group: string): Promise<{ error: number; generation: number; memberId: string }> {
  const request = frame(11, 0, (w) => w.string(group).i32(SESSION_MS).string("").string("consumer").arrayLength(1).string("range").nullableBytes(Buffer.from("subscription")));
  return ask(n, request, (r) => {
    const error = r.i16();
    const generation = r.i32();
    r.string(); // protocol
    r.string(); // leader
    return { error, generation, memberId: r.string() };
  });
}

function sync(n: NagareServer, group: string, generation: number, memberId: string): Promise<{ error: number; assignment: Buffer | null }> {
  const request = frame(14, 0, (w) => w.string(group).i32(generation).string(memberId).arrayLength(1).string(memberId).nullableBytes(ASSIGNMENT));
  return ask(n, request, (r) => ({ error: r.i16(), assignment: r.nullableBytes() }));
}

function heartbeat(n: NagareServer, group: string, generation: number, memberId: string): Promise<number> {
  return ask(n, frame(12, 0, (w) => w.string(group).i32(generation).string(memberId)), (r) => r.i16());
}

/** JoinGroup v5 as static member `instanceId` (member id "" when it restarts). */
function joinStatic(n: NagareServer, group: string, instanceId: string, memberId = ""): Promise<{ error: number; generation: number; memberId: string }> {
  const request = frame(11, 5, (w) => w.string(group).i32(SESSION_MS).i32(SESSION_MS).string(memberId).nullableString(instanceId).string("consumer").arrayLength(1).string("range").nullableBytes(Buffer.from("subscription")));
  return ask(n, request, (r) => {
    r.i32(); // throttle
    const error = r.i16();
    const generation = r.i32();
    r.string(); // protocol
    r.string(); // leader
    return { error, generation, memberId: r.string() };
  });
}

function syncStatic(n: NagareServer, group: string, generation: number, memberId: string, instanceId: string, assign: boolean): Promise<{ error: number; assignment: Buffer | null }> {
  const request = frame(14, 3, (w) => {
    w.string(group).i32(generation).string(memberId).nullableString(instanceId);
    if (assign) w.arrayLength(1).string(memberId).nullableBytes(ASSIGNMENT);
    else w.arrayLength(0);
  });
  return ask(n, request, (r) => {
    r.i32();
    return { error: r.i16(), assignment: r.nullableBytes() };
  });
}

function heartbeatStatic(n: NagareServer, group: string, generation: number, memberId: string, instanceId: string): Promise<number> {
  return ask(n, frame(12, 3, (w) => w.string(group).i32(generation).string(memberId).nullableString(instanceId)), (r) => {
    r.i32();
    return r.i16();
  });
}

test("a group's generation and members survive its coordinator's node: a member heartbeats the new coordinator in the same generation, with its assignment", async () => {
  const group = "survivors";
  const first = await coordinatorOf(group);
  // A group of the same coordinator whose one member joined and left: empty, with no offsets, it is not brought back.
  let emptied = "";
  for (let i = 0; emptied === ""; i++) if (brokerId(await coordinatorOf(`emptied-${i}`)) === brokerId(first)) emptied = `emptied-${i}`;
  const gone = await join(first, emptied);
  assert.equal(gone.error, 0);
  assert.equal(await ask(first, frame(13, 0, (w) => w.string(emptied).string(gone.memberId)), (r) => r.i16()), 0);
  const joined = await join(first, group);
  assert.equal(joined.error, 0);
  assert.deepEqual(await sync(first, group, joined.generation, joined.memberId), { error: 0, assignment: ASSIGNMENT });
  assert.equal(await heartbeat(first, group, joined.generation, joined.memberId), 0);
  // A static member of a group of the same coordinator restarts (KIP-345): its new member id takes the old one's place, recorded.
  let statics = "";
  for (let i = 0; statics === ""; i++) if (brokerId(await coordinatorOf(`static-${i}`)) === brokerId(first)) statics = `static-${i}`;
  const s1 = await joinStatic(first, statics, "instance-1");
  assert.equal(s1.error, 0);
  assert.equal((await syncStatic(first, statics, s1.generation, s1.memberId, "instance-1", true)).error, 0);
  const s2 = await joinStatic(first, statics, "instance-1");
  assert.deepEqual([s2.error, s2.generation], [0, s1.generation]);
  assert.deepEqual(await syncStatic(first, statics, s2.generation, s2.memberId, "instance-1", false), { error: 0, assignment: ASSIGNMENT });

  // The coordinator's node goes; an in-sync replica of the group's offsets partition takes the group over.
  await cluster.close(first);
  const next = await coordinatorOf(group);
  assert.notEqual(brokerId(next), brokerId(first));

  // The member is known there, in its generation: it goes on as it was (before, UNKNOWN_MEMBER_ID: 25, and a rejoin).
  let error = -1;
  await waitUntilAsync(async () => {
    error = await heartbeat(next, group, joined.generation, joined.memberId);
    return error !== 14 && error !== 15; // the partition still loading, or its leader not up yet
  }, "the new coordinator to serve the group", 30_000);
  assert.equal(error, 0, "the member heartbeats the new coordinator in the same generation");
  const staticsNext = await coordinatorOf(statics);
  await waitUntilAsync(async () => {
    error = await heartbeatStatic(staticsNext, statics, s2.generation, s2.memberId, "instance-1");
    return error !== 14 && error !== 15;
  }, "the new coordinator to serve the static group", 30_000);
  assert.equal(error, 0, "the restarted static member is known to the new coordinator");
  assert.equal(await heartbeatStatic(staticsNext, statics, s1.generation, s1.memberId, "instance-1"), 82, "and its old member id fenced (FENCED_INSTANCE_ID)");

  const kafka = new Kafka({ clientId: "group-failover", brokers: cluster.live().map((n) => cluster.address(n)), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { groups } = await admin.describeGroups([group]);
    assert.equal(groups[0].state, "Stable");
    const listed = (await admin.listGroups()).groups.map((g) => g.groupId);
    assert.ok(listed.includes(group) && !listed.includes(emptied), `listed: ${listed.join(", ")}`);
    assert.deepEqual(
      groups[0].members.map((m) => [m.memberId, m.memberAssignment.toString()]),
      [[joined.memberId, ASSIGNMENT.toString()]],
    );
  } finally {
    await admin.disconnect();
  }

  // The generation goes on from where it was: a member joining now starts the next one, not the first again.
  const newcomer = join(next, group);
  await waitUntilAsync(async () => (await heartbeat(next, group, joined.generation, joined.memberId)) === 27, "the rebalance to start", 10_000);
  const rejoined = await ask(
    next,
    frame(11, 0, (w) => w.string(group).i32(SESSION_MS).string(joined.memberId).string("consumer").arrayLength(1).string("range").nullableBytes(Buffer.from("subscription"))),
    (r) => ({ error: r.i16(), generation: r.i32() }),
  );
  assert.deepEqual(rejoined, { error: 0, generation: joined.generation + 1 });
  assert.equal((await newcomer).generation, joined.generation + 1);
});
