/**
 * Replicated Kafka topics in a three-node cluster with one real etcd,
 * judged by KafkaJS and kcat (librdkafka): a topic of replication factor 3
 * has a copy of each partition on every node, leaders spread; Metadata shows
 * three replicas in sync; a record produced at acks=all is on every
 * in-sync replica when it is acknowledged; when the leader of a partition
 * goes (its server closed), an in-sync follower takes over in a new epoch,
 * the clients find it by themselves, and every acknowledged record is there
 * at its offset, once (an idempotent KafkaJS producer goes on across the
 * failover). Replication factor 4 on 3 brokers is refused.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { ask as askBroker, describeLogDirsFrame, describeLogDirsResult, fetchResult, fetchV11Frame, frame, offsetForLeaderEpochFrame, offsetForLeaderEpochResult, produceFrame, produceResult, RawKafka, recordBatches } from "./helpers/kafka-raw.js";
import { Writer, type Reader } from "../src/protocols/kafka/codec.js";
import { encodeBatch } from "../src/protocols/kafka/records.js";
import { runKafkaCommand } from "../src/cli/kafka-commands.js";
import { captured } from "./helpers/cli.js";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
let nodes: readonly NagareServer[];
before(async () => {
  // The brokers' defaults (kafka { default_replication_factor, min_insync_replicas }): a topic made without a factor, or by
  // a producer's Metadata, gets three copies, and acks=all needs all three in sync unless the topic says otherwise.
  cluster = await startKafkaTestCluster("kafkarepl", { defaultReplicationFactor: 3, minInsyncReplicas: 3 });
  nodes = cluster.nodes;
});
after(() => cluster.stop());

const live = (): NagareServer[] => cluster.live();
const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);

function client(): InstanceType<typeof Kafka> {
  // Every broker to bootstrap from: the one a client started with may be the one that goes.
  return new Kafka({ clientId: "repl-test", brokers: live().map(address), logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 200, maxRetryTime: 2000 } });
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

interface RawPartition {
  error: number;
  index: number;
  leader: number;
  epoch: number;
  replicas: number[];
  isr: number[];
  offline: number[];
}

/** A topic's partitions from a raw Metadata v7 (with leader epochs), as broker `n` says. */
async function metadataV7(n: NagareServer, topic: string): Promise<RawPartition[]> {
  const k = await RawKafka.open(n.kafkaPort!);
  try {
    k.send(frame(3, 7, (w) => w.arrayLength(1).string(topic).bool(false)));
    const r = await k.response(0);
    r.i32(); // throttle
    for (let b = r.i32(), i = 0; i < b; i++) {
      r.i32();
      r.string();
      r.i32();
      r.nullableString();
    }
    r.nullableString(); // cluster id
    r.i32(); // controller
    assert.equal(r.i32(), 1);
    assert.equal(r.i16(), 0);
    r.string();
    r.bool();
    const out: RawPartition[] = [];
    for (let p = r.i32(), i = 0; i < p; i++) {
      const error = r.i16();
      const index = r.i32();
      const leader = r.i32();
      const epoch = r.i32();
      const replicas = r.array((r) => r.i32());
      const isr = r.array((r) => r.i32());
      const offline = r.array((r) => r.i32());
      out.push({ error, index, leader, epoch, replicas, isr, offline });
    }
    return out.sort((a, b) => a.index - b.index);
  } finally {
    k.destroy();
  }
}

/** ListOffsets v4 of partition 0, one entry per timestamp asked (-2 earliest, -1 latest; more than one is INVALID_REQUEST, as Kafka answers), naming no current epoch. */
function listOffsetsV4Frame(topic: string, timestamps: number[]): Buffer {
  return frame(2, 4, (w) => {
    w.i32(-1).i8(0).arrayLength(1).string(topic).arrayLength(timestamps.length);
    for (const t of timestamps) w.i32(0).i32(-1).i64(t);
  });
}

function listOffsetsV4Result(r: Reader): Array<{ error: number; offset: number; epoch: number }> {
  r.i32(); // throttle
  const [parts] = r.array((r) => {
    r.string();
    return r.array((r) => {
      r.i32(); // partition
      const error = r.i16();
      r.i64(); // timestamp
      return { error, offset: r.i64(), epoch: r.i32() };
    });
  });
  return parts;
}

test("a compacted topic of replication factor 3: its leader compacts it, and every follower's copy loses the same records", async () => {
  const topic = "compacted.replicated";
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 3, configEntries: [{ name: "cleanup.policy", value: "compact" }] }], waitForLeaders: true }));
  const producer = client().producer();
  await producer.connect();
  try {
    // Offsets 0 k0, 1 and 2 k1's older values, 3 k2, 4 k1's newest: sequences 2 and 3 go (a batch each: a batch goes whole).
    for (const [key, value] of ["k0=first", "k1=a", "k1=b", "k2=c", "k1=d"].map((kv) => kv.split("="))) await producer.send({ topic, acks: -1, messages: [{ key, value }] });
  } finally {
    await producer.disconnect();
  }
  const leaderId = (await withAdmin((a) => a.fetchTopicMetadata({ topics: [topic] }))).topics[0].partitions[0].leader;
  const leader = nodes.find((n) => brokerId(n) === leaderId)!;
  const copies = (): Array<import("../src/store/log.js").MessageLog | undefined> => nodes.map((n) => n.jetstream!.streams.get("compacted_replicated")?.partitions[0]);
  await waitUntil(() => copies().every((log) => log?.state().lastSeq === 5), "every copy has the records");
  await waitUntilAsync(async () => {
    // Only the leader compacts: a follower's rounds pass its copy by (the leader's removals reach it).
    for (const n of nodes) await n.kafka!.cleaner.round();
    return copies().every((log) => [1, 4, 5].every((seq) => log!.has(seq)) && [2, 3].every((seq) => !log!.has(seq)));
  }, "the older values gone from every copy");
  assert.ok(nodes.filter((n) => n !== leader).every((n) => n.kafka!.cleaner.counts.passes === 0), "no follower compacted its copy itself");
  const read = await kcat(["-b", address(leader), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %k=%s\n"]);
  assert.equal(read.code, 0, read.stderr);
  assert.equal(read.stdout, "0 k0=first\n3 k2=c\n4 k1=d\n");
  // Gone again: the next test counts the leaders each broker has.
  await withAdmin((a) => a.deleteTopics({ topics: [topic] }));
  await waitUntil(() => nodes.every((n) => !n.jetstream!.streams.has("compacted_replicated")), "the topic gone from every node");
});

test("replication factor 3: a copy on every node, Metadata shows the replicas in sync, acks=all records on every replica, a failover loses none, and batches and OffsetForLeaderEpoch tell the epochs apart", async () => {
  const topic = "replicated.orders";
  // Its own min.insync.replicas, below the brokers' default: it goes on taking acks=all with one node gone (below).
  await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 3, configEntries: [{ name: "min.insync.replicas", value: "2" }] }], waitForLeaders: true }));
  const ids = nodes.map(brokerId).sort();
  const meta = await withAdmin((a) => a.fetchTopicMetadata({ topics: [topic] }));
  const partitions = meta.topics[0].partitions.sort((x, y) => x.partitionId - y.partitionId);
  assert.deepEqual(partitions.map((p) => p.leader).sort(), ids, "the leaders are spread, one partition each");
  for (const p of partitions) {
    assert.deepEqual([...p.replicas].sort(), ids, `partition ${p.partitionId}: a replica on every broker`);
    assert.equal(p.replicas[0], p.leader, "the leader first");
    assert.deepEqual([...p.isr].sort(), ids, "every replica in sync");
    assert.deepEqual(p.offlineReplicas ?? [], []);
  }
  // The followers spread too: each broker is the second replica of one partition.
  assert.deepEqual(partitions.map((p) => p.replicas[1]).sort(), ids);
  // Every broker says the same, with the leader epoch (Metadata v7).
  for (const n of nodes) {
    const raw = await metadataV7(n, topic);
    assert.deepEqual(
      raw.map((p) => [p.leader, p.epoch]),
      partitions.map((p) => [p.leader, 1]),
    );
  }
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("replicated_orders")), "a copy on every node");
  // The same stream through JetStream: its info says three replicas, and a client that writes that config back
  // (`nats stream edit`) changes no replica and no epoch.
  const nc = await connect({ servers: nodes[2].url });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info("replicated_orders");
    assert.equal(info.config.num_replicas, 3, "the stream info's replicas are the topic's replication factor");
    // An update that leaves num_replicas out (1, as the topic's stored config has it) is no scale-down.
    const { num_replicas: _, ...rest } = info.config;
    const raw = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.UPDATE.replicated_orders", JSON.stringify({ ...rest, description: "no replicas named" }))).data)) as { error?: unknown; config?: { num_replicas: number } };
    assert.equal(raw.error, undefined, JSON.stringify(raw.error));
    assert.equal(raw.config?.num_replicas, 3);
    // Created again as shown (its stored config still says 1): the same stream, not "stream name already in use".
    const shown = (await jsm.streams.info("replicated_orders")).config;
    assert.equal((await jsm.streams.add(shown)).config.num_replicas, 3);
    const updated = await jsm.streams.update("replicated_orders", { ...shown, description: "orders" });
    assert.equal(updated.config.num_replicas, 3);
    assert.equal(updated.config.description, "orders");
  } finally {
    await nc.close();
  }
  for (const n of nodes) {
    assert.deepEqual(
      (await metadataV7(n, topic)).map((p) => [p.leader, p.epoch, p.replicas.length]),
      partitions.map((p) => [p.leader, 1, 3]),
      "the update moved no leader and began no epoch",
    );
  }
  // kcat (librdkafka) reads the same replicas and ISR.
  const listed = await kcat(["-b", address(nodes[0]), "-L", "-t", topic]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(listed.stdout.match(/replicas: \d+,\d+,\d+, isrs: \d+,\d+,\d+/g)?.length, 3, listed.stdout);

  // The CLI shows them too.
  const shown = await captured((io) => runKafkaCommand("topic", ["describe", topic, "--json", "-b", address(nodes[1])], io));
  assert.equal(shown.code, 0, shown.err);
  const described = JSON.parse(shown.out) as { partitions: Array<{ leader: number; replicas: number[]; isr: number[] }> };
  for (const p of described.partitions) {
    assert.deepEqual([...p.replicas].sort(), ids);
    assert.deepEqual([...p.isr].sort(), ids);
  }
  const cli = await captured((io) => runKafkaCommand("topic", ["create", "cli.two", "--replication-factor", "2", "-b", address(nodes[1])], io));
  assert.equal(cli.code, 0, cli.err);
  const two = await withAdmin((a) => a.fetchTopicMetadata({ topics: ["cli.two"] }));
  assert.equal(new Set(two.topics[0].partitions[0].replicas).size, 2, "two replicas, on distinct brokers");
  // DescribeLogDirs: each broker lists the copies it holds, followed or led: every partition of the factor 3 topic, and
  // the factor 2 topic's one partition on its two replicas only.
  await waitUntil(() => two.topics[0].partitions[0].replicas.every((id) => nodes.find((n) => brokerId(n) === id)!.jetstream!.streams.has("cli_two")), "the factor 2 copies made");
  for (const n of nodes) {
    const [dir] = await askBroker(n.kafkaPort!, describeLogDirsFrame(4, [[topic, [0, 1, 2]], ["cli.two", [0]]]), (r) => describeLogDirsResult(r, 4));
    const held = dir.topics.map((t) => [t.name, t.partitions.map((p) => p.index)]);
    const holdsTwo = two.topics[0].partitions[0].replicas.includes(brokerId(n));
    assert.deepEqual(held, holdsTwo ? [["cli.two", [0]], [topic, [0, 1, 2]]] : [[topic, [0, 1, 2]]], `broker ${brokerId(n)}`);
  }

  // Replication factor 4 on three brokers: Kafka's refusal.
  await assert.rejects(
    withAdmin((a) => a.createTopics({ topics: [{ topic: "too.many", numPartitions: 1, replicationFactor: 4 }] })),
    (err: Error & { errors?: Array<{ type?: string }> }) => {
      assert.equal(err.errors?.[0]?.type, "INVALID_REPLICATION_FACTOR", String(err));
      return true;
    },
  );

  // Made with neither a replication factor nor a min.insync.replicas: the brokers' 3 and 3, so every replica must stay in
  // sync for acks=all (tried once a node is gone, below).
  const strict = "replicated.strict";
  const made = await withAdmin((a) => a.createTopics({ topics: [{ topic: strict, numPartitions: 1 }], waitForLeaders: true }));
  assert.equal(made, true);
  const strictMeta = await withAdmin((a) => a.fetchTopicMetadata({ topics: [strict] }));
  assert.deepEqual(strictMeta.topics[0].partitions.map((p) => p.replicas.length), [3], "the default replication factor");
  const strictConfigs = await withAdmin((a) => a.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: strict, configNames: ["min.insync.replicas"] }] }));
  assert.equal(strictConfigs.resources[0].configEntries[0].configValue, "3");
  const ownConfigs = await withAdmin((a) => a.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: topic, configNames: ["min.insync.replicas"] }] }));
  assert.equal(ownConfigs.resources[0].configEntries[0].configValue, "2");
  const brokerConfigs = await withAdmin((a) => a.describeConfigs({ includeSynonyms: false, resources: [{ type: 4, name: String(brokerId(nodes[1])), configNames: ["default.replication.factor", "min.insync.replicas"] }] }));
  assert.deepEqual(
    brokerConfigs.resources[0].configEntries.map((e) => [e.configName, e.configValue]).sort(),
    [
      ["default.replication.factor", "3"],
      ["min.insync.replicas", "3"],
    ],
  );
  // A topic a producer's Metadata makes (librdkafka asks for it): the default factor too.
  const auto = await kcat(["-b", address(nodes[2]), "-P", "-t", "replicated.auto", "-X", "topic.request.required.acks=1"], "made by a producer\n");
  assert.equal(auto.code, 0, auto.stderr);
  // nodes[2] made it (its Metadata answer waits for that): its view has it.
  assert.deepEqual((await metadataV7(nodes[2], "replicated.auto")).map((p) => p.replicas.length), [3], "an auto-created topic's replicas");
  // With all three in sync it takes acks=all (a replicated topic's stream config says one replica: the ISR decides, not that).
  const patient = client().producer();
  await patient.connect();
  try {
    const [taken] = await patient.send({ topic: strict, acks: -1, messages: [{ value: "all three in sync" }] });
    assert.equal(taken.errorCode, 0);
    assert.equal(Number(taken.baseOffset), 0);
  } finally {
    await patient.disconnect();
  }

  // An idempotent producer at acks=all: each record, once acknowledged, is on every in-sync replica.
  const acked = new Map<string, string>(); // `${partition}/${offset}` → value
  const producer = client().producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const stream = (n: NagareServer) => n.jetstream!.streams.get("replicated_orders")!;
  /** Sends record i to partition i % 3; its offset once acknowledged. */
  const send = async (i: number): Promise<number> => {
    const partition = i % 3;
    const [r] = await producer.send({ topic, acks: -1, messages: [{ key: `k${i}`, value: `v${i}`, partition }] });
    assert.equal(r.partition, partition);
    acked.set(`${partition}/${r.baseOffset}`, `v${i}`);
    return Number(r.baseOffset);
  };
  // The leader of partition 0, which goes half way; the first offset its successor writes.
  const leaderId = partitions[0].leader;
  let newEpochStart = -1;

  // An idempotent producer's batch, stored on every replica, whose acknowledgement is taken as lost: the producer retries it
  // after the leader goes, by when other producers have written more than a takeover's scan of the log reads back (10,000).
  // The new leader must know it for the batch it copied, as Kafka's followers do, and not store it twice (an outside attack
  // saw librdkafka's retries stored again, 60 to 1,160 records a run).
  const retryTopic = "replicated.retried";
  await withAdmin((a) => a.createTopics({ topics: [{ topic: retryTopic, numPartitions: 3, replicationFactor: 3, configEntries: [{ name: "min.insync.replicas", value: "2" }] }], waitForLeaders: true }));
  const retryPartition = (await metadataV7(nodes[0], retryTopic)).find((p) => p.leader === leaderId)!.index;
  const leaderNode = nodes.find((n) => brokerId(n) === leaderId)!;
  const producerId = await askBroker(leaderNode.kafkaPort!, frame(22, 1, (w) => w.nullableString(null).i32(60_000)), (r) => (r.i32(), r.i16(), r.i64()));
  const batchOf = (values: string[], pid: number, baseSequence: number): Buffer => {
    const w = new Writer();
    const now = Date.now();
    encodeBatch(w, values.map((v, i) => ({ offset: i, timestamp: now, key: null, value: Buffer.from(v), headers: null })), 0, pid, pid < 0 ? -1 : 0, baseSequence);
    return Buffer.from(w.result());
  };
  const produceTo = (n: NagareServer, records: Buffer) => askBroker(n.kafkaPort!, produceFrame(retryTopic, retryPartition, records), produceResult);
  const retried = batchOf(["p-0", "p-1"], producerId, 0);
  const first = await produceTo(leaderNode, retried);
  assert.deepEqual(first, { error: 0, baseOffset: 0 });
  const others = await produceTo(leaderNode, batchOf(Array.from({ length: 10_001 }, (_, i) => `q-${i}`), -1, -1));
  assert.deepEqual(others, { error: 0, baseOffset: 2 });

  try {
    for (let i = 0; i < 30; i++) {
      const offset = await send(i);
      for (const n of nodes) assert.ok(stream(n).partitions[i % 3].state().lastSeq >= offset + 1, `broker ${brokerId(n)} has ${i % 3}/${offset} when it is acknowledged`);
    }

    // The leader of partition 0 goes: its server is closed (its lease revoked), an in-sync follower takes over.
    await cluster.close(nodes.find((n) => brokerId(n) === leaderId)!);
    // The producer goes on by itself: metadata refreshed, the new leader found; nothing acknowledged twice.
    newEpochStart = await send(30);
    for (let i = 31; i < 60; i++) await send(i);
  } finally {
    await producer.disconnect();
  }

  // The retry reaches the partition's new leader: the batch it copied, answered at its offset, not stored again.
  let retryLeader: NagareServer | undefined;
  let answer = { error: -1, baseOffset: -1 };
  await waitUntilAsync(async () => {
    const leader = (await metadataV7(live()[0], retryTopic))[retryPartition].leader;
    retryLeader = live().find((n) => brokerId(n) === leader);
    if (retryLeader === undefined) return false;
    answer = await produceTo(retryLeader, retried);
    // Before the new leader has taken its role up: NOT_LEADER_OR_FOLLOWER or LEADER_NOT_AVAILABLE; or, on a loaded machine,
    // REQUEST_TIMED_OUT while its followers catch up: clients retry each. A retry stored again would be answered at its
    // new offset, not 0.
    return answer.error !== 6 && answer.error !== 5 && answer.error !== 7;
  }, "the retry to reach the partition's new leader", 30_000);
  assert.deepEqual(answer, { error: 0, baseOffset: 0 }, "a duplicate, at its first offset");
  assert.equal(retryLeader!.jetstream!.streams.get("replicated_retried")!.partitions[retryPartition].state().lastSeq, 10_003, "stored once");

  // Two brokers left: more partitions of three replicas each cannot be placed, refused for good in Kafka's words (it was a
  // retriable REQUEST_TIMED_OUT, which clients retry until they give up).
  await assert.rejects(
    withAdmin((a) => a.createPartitions({ topicPartitions: [{ topic, count: 4 }] })),
    (err: Error & { type?: string; errors?: Array<{ type?: string }> }) => {
      assert.equal(err.type ?? err.errors?.[0]?.type, "INVALID_REPLICATION_FACTOR", String(err));
      return true;
    },
  );

  const after = await metadataV7(live()[0], topic);
  assert.notEqual(after[0].leader, leaderId, "another broker leads partition 0");
  assert.ok(after[0].leader >= 0);
  assert.equal(after[0].epoch, 2, "in a new leader epoch");
  assert.ok(!after[0].isr.includes(leaderId), "the old leader is out of the ISR");
  assert.deepEqual(after[0].offline, [leaderId]);
  assert.deepEqual([...after[0].replicas].sort(), ids, "its replicas stay assigned");
  // KIP-320: the new leader checks the leader epoch a fetch names against its own.
  const newLeader = live().find((n) => brokerId(n) === after[0].leader)!;
  const fetchNaming = (epoch: number) => askBroker(newLeader.kafkaPort!, fetchV11Frame(topic, 0, 0, epoch), (r) => fetchResult(r, 11));
  assert.equal((await fetchNaming(1)).error, 74, "the old epoch: FENCED_LEADER_EPOCH");
  assert.equal((await fetchNaming(3)).error, 75, "an epoch not reached: UNKNOWN_LEADER_EPOCH");
  for (const epoch of [2, -1]) {
    const fetched = await fetchNaming(epoch);
    assert.equal(fetched.error, 0, `epoch ${epoch}`);
    assert.ok(fetched.recordBytes > 0, `epoch ${epoch}: records`);
  }
  // Each batch carries the epoch that wrote it: the first 10 records epoch 1, those after the failover epoch 2 (KIP-101).
  assert.equal(newEpochStart, 10, "partition 0 had 10 records when its leader went");
  const batches = await askBroker(newLeader.kafkaPort!, fetchV11Frame(topic, 0, 0, 2), (r) => recordBatches(r, fetchResult(r, 11).recordBytes));
  assert.equal(batches.reduce((n, b) => n + b.count, 0), 20);
  for (const b of batches) assert.equal(b.leaderEpoch, b.baseOffset < newEpochStart ? 1 : 2, `the batch at ${b.baseOffset}`);
  // OffsetForLeaderEpoch (KIP-320): epoch 1 ends where epoch 2 began, epoch 2 (the latest) at the log end; an epoch older
  // than any ends where the first began; one never reached is unknown; a client naming epoch 1 as current is fenced.
  const ends = await askBroker(
    newLeader.kafkaPort!,
    offsetForLeaderEpochFrame(4, topic, [0, 1, 2, 3].map((leaderEpoch) => ({ index: 0, currentLeaderEpoch: 2, leaderEpoch }))),
    (r) => offsetForLeaderEpochResult(r, 4),
  );
  assert.deepEqual(
    ends.map((e) => [e.error, e.epoch, e.endOffset]),
    [
      [0, 0, 0],
      [0, 1, newEpochStart],
      [0, 2, 20],
      [0, -1, -1],
    ],
  );
  const fenced = await askBroker(newLeader.kafkaPort!, offsetForLeaderEpochFrame(3, topic, [{ index: 0, currentLeaderEpoch: 1, leaderEpoch: 1 }]), (r) => offsetForLeaderEpochResult(r, 3));
  assert.equal(fenced[0].error, 74, "FENCED_LEADER_EPOCH");
  // A follower of the partition checks the epoch named first, as Kafka's replica does: one it knows, or none, is
  // NOT_LEADER_OR_FOLLOWER; an older one FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
  const follower = live().find((n) => n !== newLeader)!;
  await waitUntil(() => follower.cluster!.placements.get("$G", "replicated_orders")!.placement.epochs![0] === 2, "the follower knows epoch 2");
  const misled = await askBroker(
    follower.kafkaPort!,
    offsetForLeaderEpochFrame(4, topic, [-1, 2, 1, 3].map((currentLeaderEpoch) => ({ index: 0, currentLeaderEpoch, leaderEpoch: 1 }))),
    (r) => offsetForLeaderEpochResult(r, 4),
  );
  assert.deepEqual(
    misled.map((p) => p.error),
    [6, 6, 74, 75],
  );
  assert.equal((await askBroker(follower.kafkaPort!, fetchV11Frame(topic, 0, 0, 1), (r) => fetchResult(r, 11))).error, 74, "a Fetch of the old epoch from a follower");
  // ListOffsets v4 gives the epoch of the offset found: the log start's for earliest, the current one for latest.
  // One request each: Kafka refuses a partition named twice in one (INVALID_REQUEST).
  const positions = [
    ...(await askBroker(newLeader.kafkaPort!, listOffsetsV4Frame(topic, [-2]), listOffsetsV4Result)),
    ...(await askBroker(newLeader.kafkaPort!, listOffsetsV4Frame(topic, [-1]), listOffsetsV4Result)),
  ];
  assert.deepEqual(positions, [
    { error: 0, offset: 0, epoch: 1 },
    { error: 0, offset: 20, epoch: 2 },
  ]);

  // The strict topic has two replicas left in sync: acks=all is refused NOT_ENOUGH_REPLICAS (once its leader has seen the ISR shrink), acks=1 taken.
  const impatient = new Kafka({ clientId: "strict", brokers: live().map(address), logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer({ retry: { retries: 0 } });
  await impatient.connect();
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const outcome = await impatient.send({ topic: strict, acks: -1, messages: [{ value: "all" }] }).then(
        () => "taken",
        (err: Error & { type?: string; cause?: { type?: string } }) => err.type ?? err.cause?.type ?? err.message,
      );
      if (outcome === "NOT_ENOUGH_REPLICAS") break;
      // Before the ISR shrinks: taken (the write waits for the ISR change), or the leader not found yet.
      assert.ok(Date.now() < deadline, `acks=all to a topic with 2 of 3 in sync: ${outcome}`);
      await impatient.disconnect();
      await impatient.connect();
    }
    const [one] = await impatient.send({ topic: strict, acks: 1, messages: [{ value: "one" }] });
    assert.ok(Number(one.baseOffset) >= 0);
  } finally {
    await impatient.disconnect();
  }

  // Every acknowledged record is there at its offset, once: kcat reads every partition from its leader.
  const read = await kcat(["-b", live().map(address).join(","), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p/%o %s\n"], "", 30_000);
  assert.equal(read.code, 0, read.stderr);
  const got = new Map(
    read.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(" ") as [string, string]),
  );
  assert.equal(acked.size, 60);
  for (const [at, value] of acked) assert.equal(got.get(at), value, `the record acknowledged at ${at}`);
  assert.equal(got.size, 60, "nothing stored twice: the idempotent producer's retries were recognised");

  // Records deleted below offset 12 of partition 0 (DeleteRecords): the epochs read as Kafka's cache after truncateFromStart,
  // epoch 2 beginning at the log start and epoch 1 gone, so every replica answers alike.
  const purged = await askBroker(newLeader.kafkaPort!, frame(21, 1, (w) => w.arrayLength(1).string(topic).arrayLength(1).i32(0).i64(12).i32(10_000)), (r) => {
    r.i32(); // throttle
    return r.array((r) => (r.string(), r.array((r) => ({ index: r.i32(), low: r.i64(), error: r.i16() }))))[0];
  });
  assert.deepEqual(purged, [{ index: 0, low: 12, error: 0 }]);
  const trimmedEnds = await askBroker(
    newLeader.kafkaPort!,
    offsetForLeaderEpochFrame(4, topic, [0, 1, 2].map((leaderEpoch) => ({ index: 0, currentLeaderEpoch: 2, leaderEpoch }))),
    (r) => offsetForLeaderEpochResult(r, 4),
  );
  assert.deepEqual(
    trimmedEnds.map((e) => [e.error, e.epoch, e.endOffset]),
    [
      [0, 0, 12],
      [0, 1, 12],
      [0, 2, 20],
    ],
  );
  assert.deepEqual(await askBroker(newLeader.kafkaPort!, listOffsetsV4Frame(topic, [-2]), listOffsetsV4Result), [{ error: 0, offset: 12, epoch: 2 }]);
});
