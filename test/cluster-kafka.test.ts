/**
 * The Kafka door across three nagare processes and one etcd, all on
 * loopback: KafkaJS and kcat bootstrap from ONE broker, learn the other two
 * from Metadata, and produce to and consume from a topic whose partitions
 * are led by each of the three; a consumer group finds its coordinator
 * wherever it is. A broker that does not lead a partition answers
 * NOT_LEADER_OR_FOLLOWER, one that does not coordinate a group
 * NOT_COORDINATOR; when leaders change under running KafkaJS and
 * librdkafka producers, they recover by themselves. Admin requests to any broker go through the
 * placements (partitions added spread, configs described from the
 * placement, topics deleted everywhere). A transaction commits when its
 * partitions are led by its coordinator's node; these nodes have no
 * routes, so one led elsewhere is refused.
 * A node killed: its partitions show leader -1 and
 * LEADER_NOT_AVAILABLE, clients get clear errors for them while the others
 * keep working; restarted, it comes back under the same broker id with its
 * records. etcd killed: every partition keeps being served from what each
 * node last read, and topic changes are refused until etcd returns.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import kafkajs from "kafkajs";
import { Consumer, Producer } from "@platformatic/kafka";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { respawnNode, spawnNode, uniqueCluster, type NodeProcess } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { findCoordinator, flexibleFrame, frame, metadataTopics, RawKafka } from "./helpers/kafka-raw.js";
import type { Reader } from "../src/protocols/kafka/codec.js";
import { EtcdClient } from "../src/cluster/etcd-client.js";

const { Kafka, logLevel } = kafkajs;
const NOT_LEADER_OR_FOLLOWER = 6;
const LEADER_NOT_AVAILABLE = 5;
const NOT_COORDINATOR = 16;

let etcd: EtcdHarness;
let dir: string;
let clusterName: string;
const names = ["a", "b", "c"];
const nodes = new Map<string, NodeProcess>();

function conf(name: string): string {
  const file = join(dir, `${name}.conf`);
  writeFileSync(
    file,
    `server_name: ${name}
cluster { name: ${clusterName} }
etcd { endpoints: "${etcd.endpoint}", dial_timeout: 1s, request_timeout: 1s, lease_ttl: 2s }
jetstream { store_dir: "${join(dir, name)}" }
kafka { port: -1, group_initial_rebalance_delay: 100ms }
`,
  );
  return file;
}

function kafkaPort(n: NodeProcess): number {
  // The last start's listener (a restarted node's log is its own process's).
  const all = [...n.output().matchAll(/Listening for Kafka clients on [\d.]+:(\d+)/g)];
  return Number(all[all.length - 1][1]);
}

const bootstrap = (): string => `127.0.0.1:${kafkaPort(nodes.get("a")!)}`;

function client(): InstanceType<typeof Kafka> {
  return new Kafka({ clientId: "cluster-test", brokers: [bootstrap()], logLevel: logLevel.NOTHING, retry: { retries: 4, initialRetryTime: 100, maxRetryTime: 1000 } });
}

async function withAdmin<T>(f: (admin: ReturnType<InstanceType<typeof Kafka>["admin"]>) => Promise<T>): Promise<T> {
  const admin = client().admin();
  await admin.connect();
  try {
    return await f(admin);
  } finally {
    await admin.disconnect();
  }
}

/** The topic id a broker's Metadata v12 gives `topic` (32 hex digits). */
async function topicIdFrom(port: number, topic: string): Promise<string> {
  const k = await RawKafka.open(port);
  try {
    k.send(flexibleFrame(3, 12, (w) => w.arrayLength(1).uuid("0".repeat(32)).string(topic).taggedFields().bool(false).bool(false).taggedFields()));
    const topics = metadataTopics(await k.response(0));
    assert.deepEqual(
      topics.map((t) => [t.error, t.name, t.partitions]),
      [[0, topic, 3]],
    );
    return topics[0].id;
  } finally {
    k.destroy();
  }
}

/** Each partition's leader and error, from the Metadata of broker `port` (a raw v5 request: what the broker itself says). */
async function leadersFrom(port: number, topic: string): Promise<Array<{ error: number; leader: number; isr: number[] }>> {
  const k = await RawKafka.open(port);
  try {
    k.send(frame(3, 5, (w) => w.arrayLength(1).string(topic).bool(false)));
    const r = await k.response(0);
    r.i32(); // throttle
    skipBrokers(r);
    r.nullableString(); // cluster id
    r.i32(); // controller
    const topics = r.i32();
    assert.equal(topics, 1);
    r.i16();
    r.string();
    r.bool();
    const out: Array<{ error: number; leader: number; isr: number[] }> = [];
    for (let n = r.i32(), i = 0; i < n; i++) {
      const error = r.i16();
      r.i32(); // index
      const leader = r.i32();
      r.array((r) => r.i32()); // replicas
      const isr = r.array((r) => r.i32());
      r.array((r) => r.i32()); // offline
      out.push({ error, leader, isr });
    }
    return out;
  } finally {
    k.destroy();
  }
}

function skipBrokers(r: Reader): void {
  for (let n = r.i32(), i = 0; i < n; i++) {
    r.i32();
    r.string();
    r.i32();
    r.nullableString();
  }
}

/** Broker id → Kafka port, from DescribeCluster through the bootstrap broker. */
async function brokerPorts(): Promise<Map<number, number>> {
  const c = await withAdmin((a) => a.describeCluster());
  return new Map(c.brokers.map((b) => [b.nodeId, b.port]));
}

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-kafkacluster-"));
  clusterName = uniqueCluster("kafka");
  for (const name of names) nodes.set(name, await spawnNode(["-c", conf(name)]));
  // Every broker knows the other two (each reads the members from its own copy of etcd).
  for (const n of nodes.values()) {
    await waitUntilAsync(async () => {
      const k = await RawKafka.open(kafkaPort(n));
      try {
        k.send(frame(3, 1, (w) => w.arrayLength(0)));
        const r = await k.response(0);
        return r.i32() === 3;
      } finally {
        k.destroy();
      }
    }, "every broker to list three brokers");
  }
});

after(async () => {
  await Promise.all([...nodes.values()].map((n) => n.stop()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

test("KafkaJS and kcat bootstrap from one broker; a topic's partitions are led by each of the three, produced to and consumed from, and a group finds its coordinator", async () => {
  const cluster = await withAdmin((a) => a.describeCluster());
  assert.equal(cluster.brokers.length, 3);
  const ids = cluster.brokers.map((b) => b.nodeId).sort();
  assert.deepEqual(ids, [0, 1, 2], "broker ids are claimed lowest first");
  assert.ok(ids.includes(cluster.controller!));
  // One cluster id, whichever broker is asked.
  const other = new Kafka({ clientId: "x", brokers: [`127.0.0.1:${kafkaPort(nodes.get("c")!)}`], logLevel: logLevel.NOTHING }).admin();
  await other.connect();
  assert.equal((await other.describeCluster()).clusterId, cluster.clusterId);
  await other.disconnect();

  const topic = "spread.orders";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }));
  const meta = await withAdmin((a) => a.fetchTopicMetadata({ topics: [topic] }));
  const partitions = meta.topics[0].partitions.sort((x, y) => x.partitionId - y.partitionId);
  assert.deepEqual(partitions.map((p) => p.leader).sort(), [0, 1, 2], "each broker leads one partition");
  for (const p of partitions) {
    assert.deepEqual(p.replicas, [p.leader]);
    assert.deepEqual(p.isr, [p.leader]);
  }
  // Every broker says the same.
  for (const n of nodes.values()) assert.deepEqual((await leadersFrom(kafkaPort(n), topic)).map((p) => p.leader), partitions.map((p) => p.leader));
  // And the same topic id (Metadata v10+), worked out by each from the placement, never written anywhere.
  const topicIds = new Set<string>();
  for (const n of nodes.values()) topicIds.add(await topicIdFrom(kafkaPort(n), topic));
  assert.equal(topicIds.size, 1);
  assert.notEqual([...topicIds][0], "0".repeat(32));

  // KafkaJS: one record to each partition, through the bootstrap broker's metadata.
  const producer = client().producer();
  await producer.connect();
  for (let p = 0; p < 3; p++) await producer.send({ topic, messages: [{ key: `k${p}`, value: `kafkajs-${p}`, partition: p }] });
  await producer.disconnect();
  // kcat (librdkafka): one more to each partition.
  for (let p = 0; p < 3; p++) {
    const r = await kcat(["-b", bootstrap(), "-P", "-t", topic, "-p", String(p)], `kcat-${p}\n`);
    assert.equal(r.code, 0, r.stderr);
  }
  // kcat reads every partition, each from its leader.
  const read = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n"]);
  assert.equal(read.code, 0, read.stderr);
  assert.deepEqual(read.stdout.trim().split("\n").sort(), ["0 0 kafkajs-0", "0 1 kcat-0", "1 0 kafkajs-1", "1 1 kcat-1", "2 0 kafkajs-2", "2 1 kcat-2"]);
  // Each record is stored on its partition's leader only: the broker leading partition p has nothing in the others.
  const ports = await brokerPorts();
  for (const p of partitions) {
    const k = await RawKafka.open(ports.get(p.leader)!);
    try {
      const other = (p.partitionId + 1) % 3;
      k.send(frame(2, 1, (w) => w.i32(-1).arrayLength(1).string(topic).arrayLength(2).i32(p.partitionId).i64(-1).i32(other).i64(-1)));
      const r = await k.response(0);
      r.i32();
      r.string();
      r.i32();
      assert.deepEqual([r.i32(), r.i16(), (r.i64(), r.i64())], [p.partitionId, 0, 2], "its own partition: two records");
      assert.deepEqual([r.i32(), r.i16()], [other, NOT_LEADER_OR_FOLLOWER], "another's: not the leader");
    } finally {
      k.destroy();
    }
  }

  // A KafkaJS consumer group: its coordinator is whichever broker FindCoordinator names.
  const group = "spread-readers";
  const consumer = client().consumer({ groupId: group, sessionTimeout: 10_000, heartbeatInterval: 500 });
  const seen: string[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ partition, message }) => void seen.push(`${partition} ${message.value}`) });
  await waitUntil(() => seen.length >= 6, "the group to read the six records", 30_000);
  assert.deepEqual(seen.sort(), ["0 kafkajs-0", "0 kcat-0", "1 kafkajs-1", "1 kcat-1", "2 kafkajs-2", "2 kcat-2"]);
  await consumer.stop();
  await consumer.disconnect();

  // Every broker names the same coordinator; the others refuse the group's requests.
  const coordinators = new Set<number>();
  for (const n of nodes.values()) {
    const c = await findCoordinator(kafkaPort(n), group, 0);
    assert.equal(c.error, 0);
    coordinators.add(c.id);
  }
  assert.equal(coordinators.size, 1);
  const coordinator = [...coordinators][0];
  for (const [id, port] of ports) {
    const k = await RawKafka.open(port);
    try {
      // OffsetFetch v1 of partition 0: the coordinator has the group's commits, the others send the client away.
      k.send(frame(9, 1, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(0)));
      const r = await k.response(0);
      r.i32();
      r.string();
      r.i32();
      r.i32();
      const offset = r.i64();
      r.nullableString();
      const error = r.i16();
      if (id === coordinator) assert.deepEqual([error, offset], [0, 2], "the coordinator has the committed offset");
      else assert.deepEqual([error, offset], [NOT_COORDINATOR, -1]);
    } finally {
      k.destroy();
    }
  }
});

test("@platformatic/kafka (flexible versions only) across the brokers: a topic's partitions, each led by another broker, written and read by a group through the coordinator FindCoordinator v4 names", async () => {
  const topic = "spread.modern";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }));
  const brokers = [bootstrap()];
  const producer = new Producer({ clientId: "cluster-test", bootstrapBrokers: brokers, idempotent: true });
  try {
    await producer.send({ messages: [0, 1, 2].map((p) => ({ topic, partition: p, key: Buffer.from(`k${p}`), value: Buffer.from(`modern-${p}`) })) });
  } finally {
    await producer.close();
  }
  const consumer = new Consumer({ groupId: "modern-readers", clientId: "cluster-test", bootstrapBrokers: brokers, maxWaitTime: 200, sessionTimeout: 10_000, heartbeatInterval: 500 });
  const seen: string[] = [];
  try {
    const stream = await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false });
    for await (const m of stream) {
      seen.push(`${m.partition} ${m.value.toString()}`);
      await m.commit();
      if (seen.length >= 3) break;
    }
    await stream.close();
  } finally {
    await consumer.close(true);
  }
  assert.deepEqual(seen.sort(), ["0 modern-0", "1 modern-1", "2 modern-2"]);
  // The commits are at the group's coordinator: OffsetFetch v1 there shows each partition read.
  const coordinator = (await findCoordinator(Number(bootstrap().split(":")[1]), "modern-readers", 0)).id;
  const port = (await brokerPorts()).get(coordinator)!;
  const k = await RawKafka.open(port);
  try {
    k.send(frame(9, 1, (w) => w.string("modern-readers").arrayLength(1).string(topic).arrayLength(3).i32(0).i32(1).i32(2)));
    const r = await k.response(0);
    r.i32();
    r.string();
    const offsets = r.array((r) => {
      const p = r.i32();
      const offset = r.i64();
      r.nullableString();
      return [p, offset, r.i16()];
    });
    assert.deepEqual(offsets.sort(), [
      [0, 1, 0],
      [1, 1, 0],
      [2, 1, 0],
    ]);
  } finally {
    k.destroy();
  }
});

test("a produce or fetch sent to a broker that does not lead the partition gets NOT_LEADER_OR_FOLLOWER, at once", async () => {
  const topic = "misdirected";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }));
  const leaders = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  const ports = await brokerPorts();
  const wrong = [...ports].find(([id]) => id !== leaders[0].leader)!;
  const k = await RawKafka.open(wrong[1]);
  try {
    // Produce v3 with an empty record set: the leadership check comes before the records are looked at.
    k.send(frame(0, 3, (w) => w.nullableString(null).i16(-1).i32(5000).arrayLength(1).string(topic).arrayLength(1).i32(0).nullableBytes(Buffer.alloc(0)), 1));
    let r = await k.response(0);
    r.i32();
    r.string();
    r.i32();
    assert.deepEqual([r.i32(), r.i16()], [0, NOT_LEADER_OR_FOLLOWER]);
    // Fetch v4 asking to wait 30 s for a byte: answered at once, not after max_wait (the client must go to the leader).
    const sent = Date.now();
    k.send(frame(1, 4, (w) => w.i32(-1).i32(30_000).i32(1).i32(1 << 20).i8(0).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(0).i32(1 << 20), 2));
    r = await k.response(1);
    assert.ok(Date.now() - sent < 15_000, "answered before max_wait");
    r.i32();
    r.i32();
    r.string();
    r.i32();
    assert.deepEqual([r.i32(), r.i16()], [0, NOT_LEADER_OR_FOLLOWER]);
  } finally {
    k.destroy();
  }
});

test("leaders change under running clients (the placement rewritten in etcd, as a move will): KafkaJS and librdkafka (confluent-kafka), with the old leaders cached, get NOT_LEADER_OR_FOLLOWER, refresh and deliver to the new leaders", async () => {
  const topic = "moving";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }));
  const before = (await leadersFrom(kafkaPort(nodes.get("a")!), topic)).map((p) => p.leader);
  assert.equal(new Set(before).size, 3, `one partition on each broker: ${before.join(",")}`);

  const producer = client().producer();
  await producer.connect();
  // librdkafka (confluent-kafka in Debian's Python) in one process for the whole test: it keeps its cached leaders.
  const script = [
    "import sys",
    "from confluent_kafka import Producer",
    `p = Producer({"bootstrap.servers": "${bootstrap()}", "linger.ms": 0})`,
    "errors = []",
    "def done(err, msg):",
    "    if err is not None: errors.append(str(err))",
    `p.produce("${topic}", b"rdkafka-first", partition=0, on_delivery=done)`,
    "print('first', p.flush(20), errors, flush=True)",
    "sys.stdin.readline()",
    `p.produce("${topic}", b"rdkafka-second", partition=0, on_delivery=done)`,
    "print('second', p.flush(20), errors, flush=True)",
  ].join("\n");
  const rd = spawn("/usr/bin/python3", ["-c", script], { stdio: ["pipe", "pipe", "pipe"] });
  let rdOut = "";
  let rdErr = "";
  rd.stdout.on("data", (d: Buffer) => (rdOut += d.toString()));
  rd.stderr.on("data", (d: Buffer) => (rdErr += d.toString()));
  const rdExit = new Promise<number | null>((resolve) => rd.once("exit", (code) => resolve(code)));
  try {
    for (let p = 0; p < 3; p++) await producer.send({ topic, messages: [{ value: `first-${p}`, partition: p }] });
    await waitUntil(() => /^first .*\n/m.test(rdOut), "librdkafka's first record to be delivered", 20_000);
    assert.match(rdOut, /^first 0 \[\]$/m, rdErr);

    // Partition p moves to the broker that led p + 1 (all three host the topic, so each has a copy to serve).
    const admin = new EtcdClient({ endpoints: [etcd.endpoint] });
    try {
      const key = `/nagare/${clusterName}/meta/streams/$G/${topic}`;
      const current = (await admin.range(key)).kvs[0];
      const placement = JSON.parse(current.value) as { leaders: string[] };
      placement.leaders = [1, 2, 0].map((i) => placement.leaders[i]);
      assert.ok((await admin.txn([{ key, modRevision: current.modRevision }], [{ put: key, value: JSON.stringify(placement) }])).succeeded);
    } finally {
      admin.close();
    }
    const after = [1, 2, 0].map((i) => before[i]);
    for (const n of nodes.values()) {
      await waitUntilAsync(async () => (await leadersFrom(kafkaPort(n), topic)).every((p, i) => p.leader === after[i]), "every broker to see the new leaders");
    }

    // Sent to the old leaders first, answered NOT_LEADER_OR_FOLLOWER, then to the new ones.
    for (let p = 0; p < 3; p++) await producer.send({ topic, messages: [{ value: `second-${p}`, partition: p }] });
    rd.stdin.end("\n");
    assert.equal(await rdExit, 0, rdErr);
    assert.match(rdOut, /^second 0 \[\]$/m, rdErr);
  } finally {
    rd.kill();
    await producer.disconnect();
  }
  const ports = await brokerPorts();
  for (let p = 0; p < 3; p++) {
    // What the old leader stored stays with it (moving records is not built); the new leader has what came after.
    assert.deepEqual(await latestOffset(ports.get(before[p])!, topic, p), { error: NOT_LEADER_OR_FOLLOWER, offset: -1 });
    const read = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-p", String(p), "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(read.stdout.trim().split("\n").sort(), p === 0 ? ["rdkafka-second", "second-0"] : [`second-${p}`]);
  }
});

/** ListOffsets v1 (latest) of one partition, as broker `port` answers it. */
async function latestOffset(port: number, topic: string, partition: number): Promise<{ error: number; offset: number }> {
  const k = await RawKafka.open(port);
  try {
    k.send(frame(2, 1, (w) => w.i32(-1).arrayLength(1).string(topic).arrayLength(1).i32(partition).i64(-1)));
    const r = await k.response(0);
    r.i32();
    r.string();
    r.i32();
    r.i32();
    const error = r.i16();
    r.i64(); // timestamp
    return { error, offset: r.i64() };
  } finally {
    k.destroy();
  }
}

/** A topic's retention.ms as DescribeConfigs v0 of broker `port` gives it (null: the error code). */
async function retentionFrom(port: number, topic: string): Promise<string | number> {
  const k = await RawKafka.open(port);
  try {
    k.send(frame(32, 0, (w) => w.arrayLength(1).i8(2).string(topic).arrayLength(1).string("retention.ms")));
    const r = await k.response(0);
    r.i32(); // throttle
    r.i32(); // resources
    const error = r.i16();
    r.nullableString();
    r.i8();
    r.string();
    if (error !== 0) return error;
    assert.equal(r.i32(), 1);
    assert.equal(r.string(), "retention.ms");
    return r.nullableString()!;
  } finally {
    k.destroy();
  }
}

test("admin through the bootstrap broker: a topic's partitions grow spread, its configs read and change the same on every broker, and it is deleted everywhere", async () => {
  const topic = "admin.ops";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 1, configEntries: [{ name: "retention.ms", value: "3600000" }] }], waitForLeaders: true }));
  const one = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  assert.equal(one.length, 1);
  // Every broker describes it, those without a copy from its placement.
  for (const n of nodes.values()) assert.equal(await retentionFrom(kafkaPort(n), topic), "3600000");

  await withAdmin((a) => a.createPartitions({ topicPartitions: [{ topic, count: 3 }] }));
  await waitUntilAsync(async () => (await leadersFrom(kafkaPort(nodes.get("c")!), topic)).length === 3, "c to see three partitions");
  const three = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  assert.equal(three[0].leader, one[0].leader, "the first partition stays where it was");
  assert.equal(new Set(three.map((p) => p.leader)).size, 3, `the new partitions go to the other brokers: ${JSON.stringify(three)}`);
  // Each new partition takes records on its leader.
  for (let p = 1; p < 3; p++) {
    const w = await kcat(["-b", bootstrap(), "-P", "-t", topic, "-p", String(p)], `grown-${p}\n`);
    assert.equal(w.code, 0, w.stderr);
  }
  const read = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %s\n"]);
  assert.deepEqual(read.stdout.trim().split("\n").sort(), ["1 grown-1", "2 grown-2"]);
  const k = await RawKafka.open(kafkaPort(nodes.get("a")!));
  try {
    // IncrementalAlterConfigs v0: SET retention.ms.
    k.send(frame(44, 0, (w) => w.arrayLength(1).i8(2).string(topic).arrayLength(1).string("retention.ms").i8(0).nullableString("7200000").bool(false)));
    const r = await k.response(0);
    r.i32();
    r.i32();
    assert.equal(r.i16(), 0, r.nullableString() ?? "");
  } finally {
    k.destroy();
  }
  for (const n of nodes.values()) await waitUntilAsync(async () => (await retentionFrom(kafkaPort(n), topic)) === "7200000", `broker ${n.url} to describe the new retention`);

  await withAdmin((a) => a.deleteTopics({ topics: [topic] }));
  for (const n of nodes.values()) {
    await waitUntilAsync(async () => (await retentionFrom(kafkaPort(n), topic)) === 3, `broker ${n.url} to forget the topic`);
  }
  const listed = await withAdmin((a) => a.listTopics());
  assert.ok(!listed.includes(topic), listed.join(","));
});

test("transactions without routes: a partition led by its coordinator's node commits; one led by a broker the coordinator has no route to is refused, not half-written", async () => {
  const topic = "spread.orders";
  const transactionalId = "cluster-txn";
  // The coordinator: the leader of the id's partition of __transaction_state, made on this first ask (COORDINATOR_NOT_AVAILABLE meanwhile).
  let coordinator = -1;
  await waitUntilAsync(async () => {
    const c = await findCoordinator(kafkaPort(nodes.get("a")!), transactionalId, 1);
    coordinator = c.error === 0 ? c.id : -1;
    return coordinator >= 0;
  }, "the transaction state topic to be made", 20_000);
  const leaders = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  const home = leaders.findIndex((p) => p.leader === coordinator);
  const away = leaders.findIndex((p) => p.leader !== coordinator);
  assert.ok(home >= 0 && away >= 0, JSON.stringify(leaders));

  const retry = { retries: 2, initialRetryTime: 100, maxRetryTime: 500 };
  const producer = new Kafka({ clientId: "txn", brokers: [bootstrap()], logLevel: logLevel.NOTHING, retry }).producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    const t1 = await producer.transaction();
    await t1.send({ topic, messages: [{ value: "in-txn", partition: home }] });
    await t1.commit();
    const t2 = await producer.transaction();
    await assert.rejects(t2.send({ topic, messages: [{ value: "elsewhere", partition: away }] }), /not the leader/i);
    await t2.abort().catch(() => undefined);
  } finally {
    await producer.disconnect();
  }
  const committed = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-p", String(home), "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%s\n"]);
  assert.equal(committed.code, 0, committed.stderr);
  assert.equal(committed.stdout.trim().split("\n").at(-1), "in-txn");
  const untouched = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-p", String(away), "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_uncommitted", "-f", "%s\n"]);
  assert.ok(!untouched.stdout.includes("elsewhere"), untouched.stdout);
});

test("replication needs routes: in a cluster whose nodes have none, a topic of 2 replicas is refused with the reason, not left to stall", async () => {
  await withAdmin(async (admin) => {
    // (KafkaJS shows the code's text, not the broker's message, which names the routes.)
    await assert.rejects(admin.createTopics({ topics: [{ topic: "spread.replicated", numPartitions: 1, replicationFactor: 2 }] }), (err: Error & { errors?: Array<{ type?: string }> }) => {
      assert.equal(err.errors?.[0]?.type, "INVALID_REPLICATION_FACTOR");
      return true;
    });
    assert.deepEqual((await admin.listTopics()).filter((t) => t === "spread.replicated"), [], "nothing placed");
  });
});

test("a node killed: its partitions have no leader and clients get clear errors for them, the others keep working; restarted, it is the same broker with its records", async () => {
  const topic = "survivors";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }));
  const before = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  const producer = client().producer();
  await producer.connect();
  for (let p = 0; p < 3; p++) await producer.send({ topic, messages: [{ value: `before-${p}`, partition: p }] });
  await producer.disconnect();

  // Kill the node that is not the bootstrap broker and leads a partition of the topic.
  const ports = await brokerPorts();
  const victimName = names.find((n) => n !== "a" && before.some((p) => ports.get(p.leader) === kafkaPort(nodes.get(n)!)))!;
  const victim = nodes.get(victimName)!;
  const victimId = [...ports].find(([, port]) => port === kafkaPort(victim))![0];
  const dead = before.findIndex((p) => p.leader === victimId);
  await victim.stop("SIGKILL");
  // Its lease runs out (2 s): its partitions lose their leader.
  await waitUntilAsync(async () => (await leadersFrom(kafkaPort(nodes.get("a")!), topic))[dead].leader === -1, "the dead node's partition to lose its leader", 15_000);
  const after = await leadersFrom(kafkaPort(nodes.get("a")!), topic);
  for (let p = 0; p < 3; p++) {
    if (p === dead) assert.deepEqual(after[p], { error: LEADER_NOT_AVAILABLE, leader: -1, isr: [] });
    else assert.deepEqual(after[p], before[p]);
  }

  const live = [0, 1, 2].filter((p) => p !== dead);
  // KafkaJS takes Metadata whole: a partition without a leader fails every send to its topic with
  // LEADER_NOT_AVAILABLE's message (its Metadata parser throws on any partition error, as against Kafka).
  const retry = { retries: 2, initialRetryTime: 100, maxRetryTime: 500 };
  const p2 = new Kafka({ clientId: "after", brokers: [bootstrap()], logLevel: logLevel.NOTHING, retry }).producer();
  await p2.connect();
  await assert.rejects(p2.send({ topic, messages: [{ value: "lost", partition: dead }] }), /no leader for this topic-partition/);
  await p2.disconnect();
  // A topic placed now (CreateTopics v0 through the bootstrap broker) is spread over the live brokers only, and serves KafkaJS whole.
  const fresh = "placed.after";
  const k = await RawKafka.open(kafkaPort(nodes.get("a")!));
  try {
    k.send(frame(19, 0, (w) => w.arrayLength(1).string(fresh).i32(2).i16(-1).arrayLength(0).arrayLength(0).i32(10_000)));
    const r = await k.response(0);
    r.i32();
    assert.deepEqual([r.string(), r.i16()], [fresh, 0]);
  } finally {
    k.destroy();
  }
  const freshLeaders = await leadersFrom(kafkaPort(nodes.get("a")!), fresh);
  assert.ok(freshLeaders.every((p) => p.error === 0 && p.leader !== victimId && p.leader >= 0), JSON.stringify(freshLeaders));
  assert.equal(new Set(freshLeaders.map((p) => p.leader)).size, 2, "spread over both live brokers");
  const p3 = new Kafka({ clientId: "fresh", brokers: [bootstrap()], logLevel: logLevel.NOTHING, retry }).producer();
  await p3.connect();
  for (let p = 0; p < 2; p++) await p3.send({ topic: fresh, messages: [{ value: `fresh-${p}`, partition: p }] });
  await p3.disconnect();
  const freshRead = await kcat(["-b", bootstrap(), "-C", "-t", fresh, "-o", "beginning", "-e", "-q", "-f", "%p %s\n"]);
  assert.equal(freshRead.code, 0, freshRead.stderr);
  assert.deepEqual(freshRead.stdout.trim().split("\n").sort(), ["0 fresh-0", "1 fresh-1"]);

  // librdkafka keeps serving the live partitions of the topic; the dead one's records time out with its own error.
  for (const p of live) {
    const w = await kcat(["-b", bootstrap(), "-P", "-t", topic, "-p", String(p)], `after-${p}\n`);
    assert.equal(w.code, 0, w.stderr);
  }
  const refused = await kcat(["-b", bootstrap(), "-P", "-t", topic, "-p", String(dead), "-X", "message.timeout.ms=2000"], "lost\n");
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /Delivery failed for message: Local: Message timed out/);
  for (const p of live) {
    const r = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-p", String(p), "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), [`before-${p}`, `after-${p}`]);
  }

  // Back under its name: the same broker id, leading its partition again, with what it stored.
  nodes.set(victimName, await respawnNode(["-c", conf(victimName)]));
  await waitUntilAsync(async () => (await leadersFrom(kafkaPort(nodes.get("a")!), topic))[dead].leader === victimId, "the restarted node to lead its partition again", 15_000);
  const back = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-p", String(dead), "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
  assert.equal(back.code, 0, back.stderr);
  assert.deepEqual(back.stdout.trim().split("\n"), [`before-${dead}`]);
});

/** CreateTopics v1 of one topic (3 partitions) through the bootstrap broker: its error code and message. */
async function createRaw(topic: string): Promise<{ error: number; message: string | null }> {
  const k = await RawKafka.open(kafkaPort(nodes.get("a")!));
  try {
    k.send(frame(19, 1, (w) => w.arrayLength(1).string(topic).i32(3).i16(-1).arrayLength(0).arrayLength(0).i32(10_000).bool(false)));
    const r = await k.response(0);
    r.i32();
    assert.equal(r.string(), topic);
    return { error: r.i16(), message: r.nullableString() };
  } finally {
    k.destroy();
  }
}

const count = (text: string, re: RegExp): number => text.match(new RegExp(re.source, "g"))?.length ?? 0;

test("etcd killed: every partition keeps taking and serving records, even on nodes whose lease ran out; topic changes are refused with etcd's error until it returns", async () => {
  const topic = "through.outage";
  assert.deepEqual(await createRaw(topic), { error: 0, message: null });
  await waitUntilAsync(async () => (await leadersFrom(kafkaPort(nodes.get("c")!), topic)).every((p) => p.leader >= 0), "c to see the topic");
  const fenced = new Map([...nodes].map(([name, n]) => [name, count(n.output(), /cluster: node \w+ fenced/)]));
  const registered = new Map([...nodes].map(([name, n]) => [name, count(n.output(), /cluster: node \w+ registered in etcd/)]));
  await etcd.kill();
  try {
    // Each node counts its lease lost within the TTL (2 s).
    for (const [name, n] of nodes) await waitUntil(() => count(n.output(), /cluster: node \w+ fenced/) > fenced.get(name)!, `${name} to count its lease lost`, 15_000);
    for (let p = 0; p < 3; p++) {
      const w = await kcat(["-b", bootstrap(), "-P", "-t", topic, "-p", String(p)], `during-${p}\n`);
      assert.equal(w.code, 0, w.stderr);
    }
    const read = await kcat(["-b", bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %s\n"]);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(read.stdout.trim().split("\n").sort(), ["0 during-0", "1 during-1", "2 during-2"]);
    const refused = await createRaw("not.now");
    assert.equal(refused.error, 7, "REQUEST_TIMED_OUT: retriable");
    assert.match(refused.message ?? "", /etcd/);
  } finally {
    await etcd.start();
  }
  // Back: every node registers again, and topics can be created.
  for (const [name, n] of nodes) await waitUntil(() => count(n.output(), /cluster: node \w+ registered in etcd/) > registered.get(name)!, `${name} to register again`, 20_000);
  await waitUntilAsync(async () => (await createRaw("after.outage")).error === 0, "a topic to be created once etcd is back", 20_000);
  const after = await leadersFrom(kafkaPort(nodes.get("a")!), "after.outage");
  assert.ok(after.every((p) => p.error === 0 && p.leader >= 0), JSON.stringify(after));
});
