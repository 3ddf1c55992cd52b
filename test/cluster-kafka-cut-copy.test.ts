/**
 * A replica that copies a partition from scratch gets the Kafka batches
 * that compaction and DeleteRecords cut whole, as the leader stores them,
 * with the sequences they no longer hold named (copy-batch.ts): after a
 * failover to it, kcat (librdkafka) reads the same records as from the
 * first leader, producer timestamps (CreateTime), keys, null values and
 * headers included, and the copy holds the leader's bytes.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { isForeign, type MessageLog, type StoredItem } from "../src/store/log.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { KafkaClient } from "../src/cli/kafka-client.js";
import { alterPartitionReassignment } from "../src/cli/kafka-requests.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

const { Kafka, logLevel, CompressionTypes } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("kcutcopy");
});
after(() => cluster.stop());

const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);
const nameOf = (n: NagareServer): string => n.cluster!.placements.self;
const byName = (name: string): NagareServer => cluster.nodes.find((n) => nameOf(n) === name)!;

/** What kcat reads of partition 0 from `broker`: per record its offset, timestamp (type and ms), key and value (with their lengths, -1: null) and headers. */
async function readAll(broker: NagareServer, topic: string): Promise<string[]> {
  const r = await kcat(["-b", address(broker), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%o ts=%T key=%k/%K value=%s/%S headers=%h\n"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split("\n");
}

/** A log's stored items from its start: as a Kafka fetch reads them, and as a copy does (batches as stored); bytes as hex. */
async function stored(log: MessageLog): Promise<string[]> {
  const show = (it: StoredItem): string => (isForeign(it) ? `batch ${it.firstSeq}+${it.count} @${it.time} ${it.bytes.toString("hex")}` : `message ${it.seq} @${it.time}`);
  const read = (await log.scanStored(1, { maxMessages: 1000 })).map(show);
  const asStored = (await log.scanStored(1, { maxMessages: 1000, asStored: true })).map((it) => `stored ${show(it)}`);
  return read.concat(asStored);
}

function pick(log: MessageLog): object {
  const { firstSeq, lastSeq, messages, deleted, bytes } = log.state();
  return { firstSeq, lastSeq, messages, deleted, bytes };
}

type Admin = ReturnType<InstanceType<typeof Kafka>["admin"]>;

/** Producer timestamps far from now, so that a record stamped with the broker's time shows. */
const T0 = 1_600_000_000_000;

/** What kcat reads of the topic `cutTopic` made, from its first leader. */
const CUT_READ = [
  `1 ts=${T0 + 1} key=k8/2 value=eight/5 headers=h=one`,
  `3 ts=${T0 + 3} key=kA/2 value=/0 headers=h=three,g=x`,
  `5 ts=${T0 + 5} key=k1/2 value=new/3 headers=h=five`,
  `6 ts=${T0 + 6} key=k5/2 value=/-1 headers=`,
  `7 ts=${T0 + 7} key=k6/2 value=six/3 headers=`,
  `8 ts=${T0 + 8} key=k7/2 value=seven/5 headers=`,
  `9 ts=${T0 + 9} key=k9/2 value=new/3 headers=`,
];

/**
 * Makes `topic` (compacted, `replicas` copies) with three batches whose first loses records to compaction (offsets 2
 * and 4, its middle) and to DeleteRecords (offset 0, its front); runs `body` with its leader once kcat reads CUT_READ there.
 */
async function withCutTopic(topic: string, replicas: number, body: (leader: NagareServer, admin: Admin) => Promise<void>): Promise<void> {
  const stream = streamNameOf(topic);
  const kafka = new Kafka({ clientId: "cut-copy", brokers: cluster.live().map(address), logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  // Not idempotent: compaction keeps an idempotent producer's newest batch whole.
  const producer = kafka.producer();
  await admin.connect();
  await producer.connect();
  try {
    // "delete" too: DeleteRecords is refused on a topic that is only compacted, as Kafka refuses it.
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: replicas, configEntries: [{ name: "cleanup.policy", value: "compact,delete" }] }], waitForLeaders: true });
    // An unreplicated partition has no ISR.
    const placed = (n: NagareServer): boolean => {
      const p = n.cluster!.placements.get("$G", stream)?.placement;
      return p !== undefined && (replicas === 1 ? p.leaders[0] !== undefined : p.isr?.[0].length === replicas);
    };
    await waitUntil(() => cluster.nodes.every(placed), "the replicas in sync");
    const leader = byName(cluster.nodes[0].cluster!.placements.get("$G", stream)!.placement.leaders[0]);
    const log = logOf(leader, topic);
    const msg = (key: string, value: string | null, i: number, headers?: Record<string, string>) => ({ key, value, timestamp: String(T0 + i), ...(headers ? { headers } : {}) });
    // Offsets 0-4 (gzip), 5-7, 8-9: k1 at 2 and k9 at 4 are superseded later.
    await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages: [msg("k0", "first", 0), msg("k8", "eight", 1, { h: "one" }), msg("k1", "old", 2), msg("kA", "", 3, { h: "three", g: "x" }), msg("k9", "old", 4)] });
    await producer.send({ topic, acks: -1, messages: [msg("k1", "new", 5, { h: "five" }), msg("k5", null, 6), msg("k6", "six", 7)] });
    await producer.send({ topic, acks: -1, messages: [msg("k7", "seven", 8), msg("k9", "new", 9)] });
    await waitUntilAsync(async () => {
      await leader.kafka!.cleaner.round();
      return [1, 2, 4, 6, 7, 8, 9, 10].every((seq) => log()!.has(seq)) && [3, 5].every((seq) => !log()!.has(seq));
    }, "offsets 2 and 4 compacted away");
    // KafkaJS finds the partition's leader among the brokers its metadata names: fetched first.
    await admin.fetchTopicMetadata({ topics: [topic] });
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "1" }] });
    await waitUntil(() => log()!.state().firstSeq === 2, "offset 0 deleted");
    assert.deepEqual(await readAll(leader, topic), CUT_READ);
    await body(leader, admin);
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
}

const logOf = (n: NagareServer, topic: string) => (): MessageLog | undefined => n.jetstream!.streams.get(streamNameOf(topic))?.partitions[0];

/** Asks `via` to reassign partition 0 of `topic` to `brokers`. */
async function reassign(via: NagareServer, topic: string, brokers: number[]): Promise<void> {
  const c = await KafkaClient.connect(address(via));
  try {
    assert.equal((await alterPartitionReassignment(c, topic, 0, brokers)).error, ErrorCode.NONE);
  } finally {
    c.close();
  }
}

test("a partition moved after compaction and DeleteRecords cut a batch: its new leader holds the batch as stored and serves the same CreateTimes, keys, null values and headers", async () => {
  const topic = "cut.moved";
  await withCutTopic(topic, 1, async (leader) => {
    const before = await stored(logOf(leader, topic)()!);
    const state = pick(logOf(leader, topic)()!);
    const target = cluster.nodes.find((n) => n !== leader)!;
    await reassign(leader, topic, [brokerId(target)]);
    await waitUntil(() => target.cluster!.placements.get("$G", streamNameOf(topic))?.placement.leaders[0] === nameOf(target) && logOf(target, topic)()?.state().lastSeq === 10, "the partition to move", 60_000);
    assert.deepEqual(await readAll(target, topic), CUT_READ);
    assert.deepEqual(await stored(logOf(target, topic)()!), before, "the copy holds the leader's batches, bytes and times");
    assert.deepEqual(pick(logOf(target, topic)()!), state);
  });
});

test("a replica that copies a compacted partition from scratch holds its cut batches as stored: after a failover to it, a client reads the same CreateTimes, keys, null values and headers", async () => {
  const topic = "cut.copied";
  const stream = streamNameOf(topic);
  await withCutTopic(topic, 2, async (leader) => {
    const placement = () => leader.cluster!.placements.get("$G", stream)!.placement;
    const spare = cluster.nodes.find((n) => !placement().replicas![0].includes(nameOf(n)))!;
    // The spare joins the replicas (the leader stays, first): it copies the partition from the leader's log from scratch.
    await reassign(leader, topic, [brokerId(leader), brokerId(spare)]);
    const names = [nameOf(leader), nameOf(spare)].sort().join();
    await waitUntil(() => {
      const p = spare.cluster!.placements.get("$G", stream)?.placement;
      return p !== undefined && p.reassigning === undefined && [...p.isr![0]].sort().join() === names && logOf(spare, topic)()?.state().lastSeq === 10;
    }, "the spare to copy the partition and join the ISR", 60_000);
    const before = await stored(logOf(leader, topic)()!);
    const state = pick(logOf(leader, topic)()!);

    // The leader goes: the spare, alone in the ISR, takes over and serves what the leader served.
    await cluster.close(leader);
    await waitUntil(() => spare.cluster!.placements.get("$G", stream)?.placement.leaders[0] === nameOf(spare), "the spare to lead", 30_000);
    assert.deepEqual(await readAll(spare, topic), CUT_READ);
    assert.deepEqual(await stored(logOf(spare, topic)()!), before, "the copy holds the leader's batches, bytes and times");
    assert.deepEqual(pick(logOf(spare, topic)()!), state);
  });
});
