/**
 * Moving a Kafka partition to another broker (AlterPartitionReassignments,
 * streams/stream-move.ts) in a three-node cluster with one real etcd, under
 * a running idempotent KafkaJS producer (acks -1) and a consumer group:
 * every acknowledged record is stored exactly once, in order, at the offset
 * it was acknowledged at (read back by kcat), and the group reads every one
 * at that offset (KafkaJS rejoins its group when a fetch meets
 * NOT_LEADER_OR_FOLLOWER, as after any leader change, and so may be handed
 * again what it had not committed: at least once, never anything else);
 * the new leader serves the same batch bytes
 * the old one did; the other partitions keep taking records while the
 * moving one is frozen. Neither of Debian's Python clients (confluent-kafka
 * 1.7, kafka-python 2.0.2) has the reassignment calls, so the requests are
 * sent with nagare's own CLI client (the last resort the task allows), and
 * `nagare topic move` is exercised too.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { nodeLog, startJetStreamCluster, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { fetchFrame, RawKafka } from "./helpers/kafka-raw.js";
import { KafkaClient } from "../src/cli/kafka-client.js";
import { alterPartitionReassignment, listPartitionReassignments } from "../src/cli/kafka-requests.js";
import { runKafkaCommand } from "../src/cli/kafka-commands.js";
import { captured } from "./helpers/cli.js";
import { kcat } from "./helpers/kafka.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";

const { Kafka, logLevel } = kafkajs;
const INVALID_REPLICA_ASSIGNMENT = 39;
const REASSIGNMENT_IN_PROGRESS = 60;
const NO_REASSIGNMENT_IN_PROGRESS = 85;

let etcd: EtcdHarness;
let dir: string;
let site: JetStreamClusterSite;
const nodes: NagareServer[] = [];

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-kmove-"));
  site = { etcd: etcd.endpoint, dir, cluster: uniqueCluster("kmove") };
  // Each node's log in a file: a move cancelled says why there (read into the failure below).
  nodes.push(...(await startJetStreamCluster(site, { kafka: true, log: true })));
});

after(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

const brokerId = (n: NagareServer): number => n.kafka!.cluster!.nodeId;
const byName = (name: string): NagareServer => nodes.find((n) => n.cluster!.placements.self === name)!;
const address = (n: NagareServer): string => `127.0.0.1:${n.kafkaPort!}`;

function kafka(): InstanceType<typeof Kafka> {
  return new Kafka({ clientId: "move-test", brokers: [address(nodes[0])], logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 100, maxRetryTime: 1000 } });
}

async function withClient<T>(n: NagareServer, f: (c: KafkaClient) => Promise<T>): Promise<T> {
  const c = await KafkaClient.connect(address(n));
  try {
    return await f(c);
  } finally {
    c.close();
  }
}

/** The record batches of a partition from `offset` as broker `n` returns them to a Fetch v4: the bytes clients check CRCs of. */
async function fetchedBytes(n: NagareServer, topic: string, partition: number, offset: number): Promise<{ error: number; records: Buffer }> {
  const k = await RawKafka.open(n.kafkaPort!);
  try {
    k.send(fetchFrame(topic, partition, offset, { maxBytes: 64 * 1024 * 1024, partitionMaxBytes: 64 * 1024 * 1024 }));
    const r = await k.response(0);
    r.i32(); // throttle
    assert.equal(r.i32(), 1);
    r.string();
    assert.equal(r.i32(), 1);
    r.i32(); // partition
    const error = r.i16();
    r.i64(); // high watermark
    r.i64(); // last stable offset
    const aborted = r.i32(); // aborted transactions: a nullable array (-1 when none are asked for)
    for (let i = 0; i < aborted; i++) (r.i64(), r.i64());
    return { error, records: Buffer.from(r.nullableBytes() ?? Buffer.alloc(0)) };
  } finally {
    k.destroy();
  }
}

test("a partition moved under an idempotent producer and a consumer group loses nothing and keeps its offsets and bytes", async (t) => {
  const topic = "moving";
  const admin = kafka().admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)?.placement.leaders.length === 3), "the placement on every node");
  const leaders = nodes[0].cluster!.placements.get("$G", topic)!.placement.leaders;
  const P = 0;
  const from = byName(leaders[P]);
  const to = nodes.find((n) => n !== from)!;

  const producer = kafka().producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  t.after(() => producer.disconnect());
  /** Per partition: offset → value acknowledged there. */
  const acked = [new Map<number, string>(), new Map<number, string>(), new Map<number, string>()];
  let sent = 0;
  const send = async (partition: number): Promise<void> => {
    const value = `p${partition}-${sent++}`;
    const [meta] = await producer.send({ topic, acks: -1, messages: [{ partition, value, key: `k${sent}` }] });
    assert.equal(meta.errorCode, 0);
    const offset = Number(meta.baseOffset);
    assert.equal(acked[partition].has(offset), false, `offset ${offset} of partition ${partition} acknowledged twice`);
    acked[partition].set(offset, value);
  };
  for (let i = 0; i < 60; i++) await send(i % 3);

  // The group reads along from the start; every record it is handed is kept with its offset, in the order handed.
  const seen: Array<Array<[number, string]>> = [[], [], []];
  const consumer = kafka().consumer({ groupId: "move-group", maxWaitTimeInMs: 100 });
  await consumer.connect();
  t.after(() => consumer.disconnect());
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      seen[partition].push([Number(message.offset), message.value!.toString()]);
    },
  });

  const before = await fetchedBytes(from, topic, P, 0);
  assert.equal(before.error, 0);
  assert.ok(before.records.length > 0);

  // The producer keeps going on every partition while P moves; a send that fails fails the test.
  let producing = true;
  const during = [0, 0, 0];
  const loop = (async () => {
    for (let i = 0; producing; i++) {
      await send(i % 3);
      during[i % 3]++;
    }
  })();
  t.after(() => {
    producing = false;
    return loop.catch(() => undefined);
  });
  await waitUntil(() => during[P] >= 5, "records before the move");

  // Nothing to cancel yet; then the move, to another broker.
  await withClient(nodes[1], async (c) => {
    assert.equal((await alterPartitionReassignment(c, topic, P, null)).error, NO_REASSIGNMENT_IN_PROGRESS);
    const two = await alterPartitionReassignment(c, topic, P, brokerId(to));
    assert.equal(two.error, 0, two.message ?? "");
  });
  // While the move is under way, ListPartitionReassignments names it (once flipped, nothing is listed). Bounded: a move
  // cancelled instead (its copy or freeze failed) never flips, and the test says so rather than waiting for ever.
  let listed = 0;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const placed = nodes[1].cluster!.placements.get("$G", topic)!.placement;
    if (Date.now() >= deadline) {
      const said = nodes.flatMap((n) => nodeLog(site, n.cluster!.placements.self).filter((l) => /\[(WRN|ERR)\]|moved here|cancel|freez/i.test(l.line)).map((l) => `${n.cluster!.placements.self}: ${l.line}`));
      assert.fail(`the move of partition ${P} did not flip in 60 s: leader ${placed.leaders[P]}, moving ${JSON.stringify(placed.moving ?? null)}, listed ${listed} times; the nodes said:\n${said.join("\n")}`);
    }
    const r = await withClient(nodes[1], (c) => listPartitionReassignments(c));
    assert.equal(r.error, 0);
    if (r.reassignments.length > 0) {
      listed++;
      assert.deepEqual(r.reassignments, [{ topic, partition: P, replicas: [brokerId(to), brokerId(from)], adding: [brokerId(to)], removing: [brokerId(from)] }]);
    }
    if (placed.leaders[P] === to.cluster!.placements.self && placed.moving === undefined && r.reassignments.length === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)!.placement.leaders[P] === to.cluster!.placements.self), "the flip on every node", 30_000);
  const atFlip = [...during];
  await waitUntil(() => during.every((d, i) => d >= atFlip[i] + 10), "records after the flip", 30_000);
  producing = false;
  await loop;

  // Stored: exactly the acknowledged records, once each, in order, at their offsets (kcat reads every partition from its leader).
  const total = acked.reduce((n, m) => n + m.size, 0);
  const read = await kcat(["-b", address(nodes[2]), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n"]);
  assert.equal(read.code, 0, read.stderr);
  const stored: Array<Array<[number, string]>> = [[], [], []];
  for (const line of read.stdout.trim().split("\n")) {
    const [p, o, v] = line.split(" ");
    stored[Number(p)].push([Number(o), v]);
  }
  for (let p = 0; p < 3; p++) {
    const want = [...acked[p]].sort((a, b) => a[0] - b[0]);
    assert.deepEqual(
      want.map(([o]) => o),
      want.map((_, i) => i),
      `partition ${p}: acknowledged offsets are dense from 0`,
    );
    assert.deepEqual(stored[p], want, `partition ${p}: stored once each, at the acknowledged offsets`);
  }
  // The group: every record at its offset, in order; a record handed again is one it was handed before, after a rejoin.
  const distinct = (p: number): number => new Set(seen[p].map(([o]) => o)).size;
  await waitUntil(() => [0, 1, 2].every((p) => distinct(p) >= acked[p].size), "the group to read every record", 30_000);
  let again = 0;
  for (let p = 0; p < 3; p++) {
    let high = -1;
    for (const [offset, value] of seen[p]) {
      assert.equal(value, acked[p].get(offset), `partition ${p} offset ${offset}: the acknowledged value`);
      assert.ok(offset <= high + 1, `partition ${p}: offset ${offset} handed after ${high}: a record skipped`);
      if (offset <= high) again++;
      high = Math.max(high, offset);
    }
    assert.equal(distinct(p), acked[p].size, `partition ${p}: nothing read that was not acknowledged`);
  }

  // The new leader serves the old leader's batches byte for byte (CRCs, producer id, epoch, sequences), then its own.
  const after = await fetchedBytes(to, topic, P, 0);
  assert.equal(after.error, 0);
  assert.ok(after.records.subarray(0, before.records.length).equals(before.records), "the same bytes from the new leader");
  assert.equal((await fetchedBytes(from, topic, P, 0)).error, 6, "the old leader answers NOT_LEADER_OR_FOLLOWER");
  t.diagnostic(`records: ${total}; handed to the group again after a rejoin: ${again}; ListPartitionReassignments saw the move ${listed} times; records per partition during the move: ${during.join(", ")}`);

  // Cancelling when nothing moves; a reassignment to the partition's own leader changes nothing.
  await withClient(nodes[2], async (c) => {
    assert.equal((await alterPartitionReassignment(c, topic, P, null)).error, NO_REASSIGNMENT_IN_PROGRESS);
    assert.equal((await alterPartitionReassignment(c, topic, P, brokerId(to))).error, 0);
  });
  assert.equal(nodes[2].cluster!.placements.get("$G", topic)!.placement.moving, undefined);
});

test("reassignments that cannot be done are refused with Kafka's errors; a recorded move is listed and cancelled", async () => {
  const topic = "refusals";
  const admin = kafka().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic) !== undefined), "the placement on every node");
  const leaders = nodes[0].cluster!.placements.get("$G", topic)!.placement.leaders;
  const other = (p: number): NagareServer => nodes.find((n) => n.cluster!.placements.self !== leaders[p])!;
  await withClient(nodes[0], async (c) => {
    const many = await c.request(45, 0, (w) => {
      w.i32(1000).arrayLength(1, true).compactString(topic).arrayLength(1, true).i32(0).arrayLength(2, true).i32(brokerId(nodes[0])).i32(brokerId(nodes[1]));
      w.tags().tags().tags();
    });
    many.i32();
    assert.equal(many.i16(), 0);
    many.compactNullableString();
    assert.equal(many.arrayLength(true), 1);
    many.compactString();
    assert.equal(many.arrayLength(true), 1);
    assert.equal(many.i32(), 0);
    assert.equal(many.i16(), INVALID_REPLICA_ASSIGNMENT);
    assert.equal((await alterPartitionReassignment(c, topic, 0, 999)).error, INVALID_REPLICA_ASSIGNMENT);
    assert.equal((await alterPartitionReassignment(c, topic, 7, brokerId(nodes[0]))).error, 3);
    assert.equal((await alterPartitionReassignment(c, "nope", 0, brokerId(nodes[0]))).error, 3);
  });
  // A move recorded whose target never copies (a node name no broker has): listed until it is cancelled; another move of the topic waits.
  await nodes[0].cluster!.placements.update("$G", topic, (p) => ({ ...p, moving: { partition: 1, to: "nowhere" } }));
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)!.placement.moving !== undefined), "the move on every node");
  await withClient(nodes[1], async (c) => {
    const r = await listPartitionReassignments(c);
    assert.deepEqual(
      r.reassignments.map((m) => [m.topic, m.partition]),
      [[topic, 1]],
    );
    assert.equal((await alterPartitionReassignment(c, topic, 0, brokerId(other(0)))).error, REASSIGNMENT_IN_PROGRESS);
    assert.equal((await alterPartitionReassignment(c, topic, 1, null)).error, 0);
  });
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)!.placement.moving === undefined), "the cancel on every node");
  assert.deepEqual(nodes[0].cluster!.placements.get("$G", topic)!.placement.leaders, leaders);

  // The CLI: a usage error, then a move through it, seen done.
  const usage = await captured((io) => runKafkaCommand("topic", ["move", topic, "--partition", "0", "-b", address(nodes[2])], io));
  assert.equal(usage.code, 2, usage.err);
  const target = other(0);
  const r = await captured((io) => runKafkaCommand("topic", ["move", topic, "--partition", "0", "--to-broker", String(brokerId(target)), "-b", address(nodes[2])], io));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, new RegExp(`Moving ${topic}-0 to broker ${brokerId(target)}`));
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)!.placement.leaders[0] === target.cluster!.placements.self), "the move by the CLI", 30_000);
  const none = await captured((io) => runKafkaCommand("topic", ["moves", "-b", address(nodes[2])], io));
  assert.equal(none.code, 0, none.err);
  assert.match(none.out, /No partition moves under way/);
});

test("a partition of a topic whose leader holds JetStream consumers does not move (the move is cancelled); without them it does", async () => {
  const topic = "with-consumer";
  const admin = kafka().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic) !== undefined), "the placement on every node");
  const leaders = nodes[0].cluster!.placements.get("$G", topic)!.placement.leaders;
  const from = byName(leaders[0]);
  const target = nodes.find((n) => !leaders.includes(n.cluster!.placements.self)) ?? nodes.find((n) => n !== from)!;
  // Consumers live with partition 0's leader (the JetStream API's): moving that partition would leave them behind.
  const nc = await connect({ servers: nodes[2].url });
  try {
    const jsm = await jetstreamManager(nc);
    const stream = streamNameOf(topic);
    await jsm.consumers.add(stream, { durable_name: "stays", ack_policy: AckPolicy.Explicit });
    assert.ok(from.jetstream!.streams.get(stream)!.consumers.has("stays"), "the consumer on partition 0's leader");
    const recorded = nodes[0].cluster!.placements.get("$G", topic)!.revision;
    await withClient(nodes[1], async (c) => assert.equal((await alterPartitionReassignment(c, topic, 0, brokerId(target))).error, 0));
    // Changed since (the move recorded) and without a move: cancelled.
    const cancelled = (n: NagareServer): boolean => {
      const e = n.cluster!.placements.get("$G", topic)!;
      return e.revision > recorded && e.placement.moving === undefined;
    };
    await waitUntil(() => nodes.every(cancelled), "the move cancelled on every node", 30_000);
    assert.deepEqual(nodes[0].cluster!.placements.get("$G", topic)!.placement.leaders, leaders, "nothing moved");
    assert.equal((await jsm.consumers.info(stream, "stays")).name, "stays");
    // Once the consumer is gone, the same move is made.
    await jsm.consumers.delete(stream, "stays");
    await withClient(nodes[1], async (c) => assert.equal((await alterPartitionReassignment(c, topic, 0, brokerId(target))).error, 0));
    await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", topic)!.placement.leaders[0] === target.cluster!.placements.self), "partition 0 moved", 30_000);
  } finally {
    await nc.close();
  }
});
