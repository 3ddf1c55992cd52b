/**
 * The admin APIs beyond creating and deleting topics, through KafkaJS's
 * admin client and kcat, with raw frames where no client here sends the API
 * (IncrementalAlterConfigs, OffsetDelete, DescribeCluster): CreatePartitions,
 * DeleteRecords, DeleteGroups, OffsetDelete, AlterConfigs,
 * IncrementalAlterConfigs, DescribeConfigs of the broker, DescribeCluster.
 * What they change is checked through other clients and across a restart.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { kcat, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntil } from "./helpers/clients.js";
import { RawKafka, ask, fetchFrame, fetchResult, frame, produceFrame, produceResult } from "./helpers/kafka-raw.js";
import { Writer, type Reader } from "../src/protocols/kafka/codec.js";
import { encodeBatch } from "../src/protocols/kafka/records.js";
import { parseStateFile } from "../src/util/persist.js";
import { encodeEndMark } from "../src/store/end-mark.js";
import { reservedBytes } from "../src/streams/limits.js";

const { ConfigResourceTypes } = kafkajs;
type Admin = ReturnType<ReturnType<KafkaHarness["kafka"]>["admin"]>;

/** A KafkaJS error (or aggregate) whose Kafka error type is `type`. */
function kafkaError(type: string): (err: unknown) => boolean {
  return (err) => {
    const e = err as { type?: string; errors?: Array<{ type?: string }>; groups?: Array<{ error?: { type?: string } }> };
    const types = e.groups?.map((g) => g.error?.type) ?? e.errors?.map((x) => x.type) ?? [e.type];
    assert.deepEqual(types, [type], (err as Error).message);
    return true;
  };
}

/** kcat's records of one partition, to its end: "offset value" lines. */
async function readPartition(broker: string, topic: string, partition: number): Promise<string[]> {
  const r = await kcat(["-b", broker, "-C", "-t", topic, "-p", String(partition), "-o", "beginning", "-e", "-q", "-f", "%o %s\n"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split("\n").filter((l) => l !== "");
}

describe("Kafka admin APIs", () => {
  let h: KafkaHarness;
  let admin: Admin;

  before(async () => {
    h = await startKafka();
    admin = h.kafka().admin();
    await admin.connect();
  });
  after(async () => {
    await admin.disconnect();
    await h.close();
  });

  /** Restarts the server; the admin client reconnects to the new one. */
  async function restart(): Promise<void> {
    await admin.disconnect();
    await h.restart();
    admin = h.kafka().admin();
    await admin.connect();
  }

  async function raw(): Promise<RawKafka> {
    return RawKafka.open(h.srv.kafkaPort!);
  }

  test("CreatePartitions: KafkaJS grows a topic, kcat writes and reads the new partitions, the count survives a restart and never shrinks", async () => {
    const topic = "grow.orders";
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
    const produce = await kcat(["-b", h.broker, "-P", "-t", topic, "-p", "1"], "before\n");
    assert.equal(produce.code, 0, produce.stderr);

    assert.equal(await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }], validateOnly: true }), undefined);
    assert.equal((await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length, 2, "validate_only changes nothing");

    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.deepEqual(meta.topics[0].partitions.map((p) => p.partitionId).sort(), [0, 1, 2, 3]);
    const list = await kcat(["-b", h.broker, "-L", "-t", topic]);
    assert.match(list.stdout, /topic "grow\.orders" with 4 partitions/);

    // librdkafka learns the new partitions and writes to one; another consumer reads it back.
    assert.equal((await kcat(["-b", h.broker, "-P", "-t", topic, "-p", "3"], "in p3\n")).code, 0);
    const producer = h.kafka().producer();
    await producer.connect();
    try {
      const [r] = await producer.send({ topic, acks: -1, messages: [{ partition: 2, value: "in p2" }] });
      assert.deepEqual([r.partition, r.baseOffset], [2, "0"]);
    } finally {
      await producer.disconnect();
    }
    assert.deepEqual(await readPartition(h.broker, topic, 3), ["0 in p3"]);
    assert.deepEqual(await readPartition(h.broker, topic, 2), ["0 in p2"]);
    assert.deepEqual(await readPartition(h.broker, topic, 1), ["0 before"], "the old partitions keep their records");

    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] }), kafkaError("INVALID_PARTITIONS"), "a topic never shrinks");
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] }), kafkaError("INVALID_PARTITIONS"), "the same count is refused");
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic: "grow.nowhere", count: 4 }] }), kafkaError("UNKNOWN_TOPIC_OR_PARTITION"));
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 6, assignments: [[0]] }] }), kafkaError("INVALID_REPLICA_ASSIGNMENT"), "one assignment per new partition");
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 5, assignments: [[1]] }] }), kafkaError("INVALID_REPLICA_ASSIGNMENT"), "broker 1 does not exist");
    await admin.createPartitions({ topicPartitions: [{ topic, count: 5, assignments: [[0]] }] });

    const streamDir = join(h.storeDir, "streams", "grow_orders");
    assert.equal((parseStateFile(readFileSync(join(streamDir, "meta.json"), "utf8")) as { partitions: number }).partitions, 5, "the count is in meta.json");
    await restart();
    assert.equal((await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length, 5, "the count stands after a restart");
    assert.deepEqual(await readPartition(h.broker, topic, 3), ["0 in p3"]);
  });

  test("CreatePartitions: two clients growing one topic at once: one grows it, the other is told it already has", async () => {
    const topic = "grow.race";
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    const grow = (count: number): Buffer => frame(37, 1, (w) => w.arrayLength(1).string(topic).i32(count).arrayLength(-1).i32(10_000).bool(false));
    const answer = (r: Reader): [number, string | null] => {
      r.i32();
      r.i32();
      r.string();
      return [r.i16(), r.nullableString()];
    };
    const [a, b] = await Promise.all([raw(), raw()]);
    try {
      a.send(grow(3));
      b.send(grow(3));
      const results = [answer(await a.response(0)), answer(await b.response(0))].sort((x, y) => x[0] - y[0]);
      assert.deepEqual(results, [
        [0, null],
        [37, "Topic already has 3 partitions."],
      ]);
      // timeout_ms 0: added, and answered REQUEST_TIMED_OUT as Kafka answers a request that may not wait.
      a.send(frame(37, 1, (w) => w.arrayLength(1).string(topic).i32(4).arrayLength(-1).i32(0).bool(false)));
      assert.equal(answer(await a.response(1))[0], 7);
    } finally {
      a.destroy();
      b.destroy();
    }
    assert.equal((await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length, 4);
  });

  test("CreatePartitions: keyed NATS publishes hash over the new count, as Kafka's partitioner does", async () => {
    const topic = "grow.keys";
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
    const jsm = await jetstreamManager(h.nc);
    const js = jsm.jetstream();
    const producer = h.kafka().producer();
    await producer.connect();
    const kafkaPartition = new Map<string, number>();
    try {
      for (const key of ["a", "b", "c", "d", "e", "f"]) {
        const [r] = await producer.send({ topic, acks: -1, messages: [{ key, value: `kafka ${key}` }] });
        kafkaPartition.set(key, r.partition);
        const hdrs = natsHeaders();
        hdrs.set("Nats-Key", key);
        await js.publish(topic, `nats ${key}`, { headers: hdrs });
      }
    } finally {
      await producer.disconnect();
    }
    assert.ok(new Set(kafkaPartition.values()).size > 1, "the keys spread over the partitions");
    const r = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %s\n"]);
    assert.equal(r.code, 0, r.stderr);
    const natsPartition = new Map(r.stdout.split("\n").filter((l) => l.includes(" nats ")).map((l) => [l.split(" ")[2], Number(l.split(" ")[0])]));
    assert.deepEqual(natsPartition, kafkaPartition, "NATS and KafkaJS put each key in the same partition");
  });

  test("DeleteRecords: the low watermark moves, a fetch below it is OFFSET_OUT_OF_RANGE, readers start at it, and it holds across a restart", async () => {
    const topic = "purge.below";
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
    const producer = h.kafka().producer();
    await producer.connect();
    try {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 6 }, (_, i) => ({ partition: 0, value: `r${i}` })) });
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 3 }, (_, i) => ({ partition: 1, value: `s${i}` })) });
    } finally {
      await producer.disconnect();
    }

    // KafkaJS finds partition leaders in metadata it already has.
    await admin.fetchTopicMetadata({ topics: [topic] });
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "4" }] });
    const offsets = async (): Promise<Array<[number, string, string]>> =>
      (await admin.fetchTopicOffsets(topic)).map((p): [number, string, string] => [p.partition, p.low, p.high]).sort((a, b) => a[0] - b[0]);
    assert.deepEqual(await offsets(), [
      [0, "4", "6"],
      [1, "0", "3"],
    ]);
    assert.deepEqual(await readPartition(h.broker, topic, 0), ["4 r4", "5 r5"]);
    assert.deepEqual(await readPartition(h.broker, topic, 1), ["0 s0", "1 s1", "2 s2"], "another partition is untouched");

    const c = await raw();
    try {
      c.send(fetchFrame(topic, 0, 2));
      const below = fetchResult(await c.response(0));
      assert.deepEqual([below.error, below.highWatermark], [1, -1], "OFFSET_OUT_OF_RANGE below the low watermark, without offsets (-1) as Kafka answers a failed read");
      c.send(fetchFrame(topic, 0, 4));
      assert.equal(fetchResult(await c.response(1)).error, 0);

      // An offset past the high watermark, and one below the low watermark (nothing to do: the low watermark stays).
      const deleteRecords = (partition: number, offset: number): Buffer =>
        frame(21, 1, (w) => w.arrayLength(1).string(topic).arrayLength(1).i32(partition).i64(offset).i32(5000));
      const result = (r: Reader): [number, number, number] => {
        r.i32();
        r.i32();
        r.string();
        r.i32();
        return [r.i32(), r.i64(), r.i16()];
      };
      c.send(deleteRecords(0, 7));
      assert.deepEqual(result(await c.response(2)), [0, -1, 1], "OFFSET_OUT_OF_RANGE past the high watermark");
      c.send(deleteRecords(0, 2));
      assert.deepEqual(result(await c.response(3)), [0, 4, 0]);
      c.send(deleteRecords(9, 0));
      assert.deepEqual(result(await c.response(4)), [9, -1, 3], "UNKNOWN_TOPIC_OR_PARTITION");
      // -1: up to the high watermark.
      c.send(deleteRecords(1, -1));
      assert.deepEqual(result(await c.response(5)), [1, 3, 0]);
    } finally {
      c.destroy();
    }
    assert.deepEqual(await readPartition(h.broker, topic, 1), []);

    // The JetStream view of partition 0 moved too.
    const jsm = await jetstreamManager(h.nc);
    assert.equal((await jsm.streams.info("purge_below")).state.first_seq, 5);

    await restart();
    assert.deepEqual(await offsets(), [
      [0, "4", "6"],
      [1, "3", "3"],
    ]);
  });

  test("DeleteGroups: refused with NON_EMPTY_GROUP while members are in, then deletes the group and its offsets for good", async () => {
    const topic = "groups.gone";
    const groupId = "gone-readers";
    await admin.createTopics({ topics: [{ topic }] });
    const producer = h.kafka().producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ value: "a" }, { value: "b" }] });
    await producer.disconnect();

    const consumer = h.kafka().consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    let seen = 0;
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ eachMessage: async () => void seen++ });
      await waitUntil(() => seen === 2, "the group to read both records", 20_000);
      await consumer.commitOffsets([{ topic, partition: 0, offset: "2" }]);
      await assert.rejects(admin.deleteGroups([groupId]), kafkaError("NON_EMPTY_GROUP"));
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual((await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.map((p) => p.offset), ["2"]);

    const results = await admin.deleteGroups([groupId]);
    assert.deepEqual(results.map((r) => [r.groupId, r.errorCode]), [[groupId, 0]]);
    assert.equal((await admin.describeGroups([groupId])).groups[0].state, "Dead");
    assert.ok(!(await admin.listGroups()).groups.some((g) => g.groupId === groupId));
    assert.deepEqual((await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.map((p) => p.offset), ["-1"], "its offsets went with it");
    await assert.rejects(admin.deleteGroups([groupId]), kafkaError("GROUP_ID_NOT_FOUND"));

    await restart();
    assert.ok(!(await admin.listGroups()).groups.some((g) => g.groupId === groupId), "still gone after a restart");
    assert.deepEqual((await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.map((p) => p.offset), ["-1"]);
  });

  test("OffsetDelete: an empty group's offsets go; a live consumer group keeps those of the topics it subscribes to (GROUP_SUBSCRIBED_TO_TOPIC)", async () => {
    const groupId = "partly";
    const [read, other] = ["partly.read", "partly.other"];
    await admin.createTopics({ topics: [{ topic: read }, { topic: other, numPartitions: 2 }] });
    const c = await raw();
    // Simple commits (OffsetCommit v2, no generation or member), as admin tools make them.
    const commits: Array<[string, number[]]> = [
      [read, [0]],
      [other, [0, 1]],
    ];
    c.send(
      frame(8, 2, (w) => {
        w.string(groupId).i32(-1).string("").i64(-1);
        w.array(commits, (w, [t, ps]) => w.string(t).array(ps, (w, p) => w.i32(p).i64(0).nullableString("")));
      }),
    );
    const committedAll = await c.response(0);
    assert.deepEqual(committedAll.array((r) => [r.string(), r.array((r) => [r.i32(), r.i16()])]), [
      [read, [[0, 0]]],
      [other, [[0, 0], [1, 0]]],
    ]);

    const offsetDelete = (group: string, topics: Array<[string, number[]]>): Buffer =>
      frame(47, 0, (w) => w.string(group).array(topics, (w, [t, ps]) => w.string(t).array(ps, (w, p) => w.i32(p))));
    const answer = (r: Reader): { error: number; topics: Array<[string, Array<[number, number]>]> } => {
      const error = r.i16();
      r.i32();
      return { error, topics: r.array((r) => [r.string(), r.array((r): [number, number] => [r.i32(), r.i16()])]) };
    };

    const consumer = h.kafka().consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: read });
      let joined = false;
      consumer.on(consumer.events.GROUP_JOIN, () => void (joined = true));
      await consumer.run({ eachMessage: async () => undefined });
      await waitUntil(() => joined, "the consumer to join", 20_000);

      // A topic named twice is answered once, its partitions together (each once), as Kafka's keyed answer.
      c.send(offsetDelete(groupId, [[read, [0]], [other, [1]], ["partly.none", [0]], [other, [1, 5]]]));
      assert.deepEqual(answer(await c.response(1)), {
        error: 0,
        topics: [
          [read, [[0, 86]]],
          [other, [[1, 0], [5, 3]]],
          ["partly.none", [[0, 3]]],
        ],
      });
      const committed = async (topic: string): Promise<string[]> => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.sort((a, b) => a.partition - b.partition).map((p) => p.offset);
      assert.deepEqual(await committed(read), ["0"], "the subscribed topic's offset stays");
      assert.deepEqual(await committed(other), ["0", "-1"]);
    } finally {
      await consumer.disconnect();
    }
    try {
      c.send(offsetDelete(groupId, [[read, [0]]]));
      assert.deepEqual(answer(await c.response(2)), { error: 0, topics: [[read, [[0, 0]]]] }, "the group is empty now");
      c.send(offsetDelete("partly.unknown", [[read, [0]]]));
      assert.deepEqual(answer(await c.response(3)), { error: 69, topics: [] }, "GROUP_ID_NOT_FOUND, no topics");
      c.send(offsetDelete("", [[read, [0]]]));
      assert.deepEqual(answer(await c.response(4)), { error: 24, topics: [] }, "INVALID_GROUP_ID");
    } finally {
      c.destroy();
    }
    assert.deepEqual((await admin.fetchOffsets({ groupId, topics: [read] }))[0].partitions.map((p) => p.offset), ["-1"]);
    await restart();
    assert.deepEqual((await admin.fetchOffsets({ groupId, topics: [read, other] })).flatMap((t) => t.partitions.map((p) => `${t.topic}/${p.partition}=${p.offset}`)).sort(), [
      "partly.other/0=0",
      "partly.other/1=-1",
      "partly.read/0=-1",
    ]);
  });

  test("validate_only AlterConfigs and CreatePartitions are refused for the account's storage as the real requests are", async () => {
    const topic = "vo.limits";
    const js = h.srv.jetstream!;
    await admin.createTopics({ topics: [{ topic, configEntries: [{ name: "retention.bytes", value: "1000" }] }] });
    // Room for 2000 bytes more than the account reserves now (the topic's 1000 among them).
    js.setLimits({ ...js.limits, maxStorage: reservedBytes(js.reservations(null), "file") + 2000 });
    const retention = (bytes: number, validateOnly: boolean): Promise<unknown> =>
      admin.alterConfigs({ validateOnly, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "retention.bytes", value: String(bytes) }] }] });
    try {
      // Kafka's validate_only answers what the request would get (its policies applied), changing nothing.
      await assert.rejects(retention(3001, true), kafkaError("POLICY_VIOLATION"));
      await assert.rejects(retention(3001, false), kafkaError("POLICY_VIOLATION"));
      await retention(3000, true);
      await assert.rejects(admin.createPartitions({ validateOnly: true, topicPartitions: [{ topic, count: 4 }] }), kafkaError("POLICY_VIOLATION"));
      await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] }), kafkaError("POLICY_VIOLATION"));
      await admin.createPartitions({ validateOnly: true, topicPartitions: [{ topic, count: 3 }] });
      const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
      assert.equal(d.resources[0].configEntries.find((e) => e.configName === "retention.bytes")?.configValue, "1000", "validate_only changes nothing");
      assert.equal((await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length, 1);
    } finally {
      js.setLimits({ ...js.limits, maxStorage: -1 });
      await admin.deleteTopics({ topics: [topic] });
    }
  });

  test("AlterConfigs (KafkaJS): replaces a topic's configs, as Kafka does; what cannot be honoured is refused and changes nothing", async () => {
    const topic = "alter.all";
    await admin.createTopics({ topics: [{ topic, configEntries: [{ name: "retention.bytes", value: "1048576" }] }] });
    const describe = async (): Promise<Map<string, string>> => {
      const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
      return new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configValue]));
    };
    const alter = (entries: Array<{ name: string; value: string }>, validateOnly = false): Promise<unknown> =>
      admin.alterConfigs({ validateOnly, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: entries }] });

    await alter([{ name: "retention.ms", value: "3600000" }], true);
    assert.equal((await describe()).get("retention.ms"), "-1", "validate_only changes nothing");
    await alter([{ name: "retention.ms", value: "3600000" }, { name: "max.message.bytes", value: "2048" }]);
    let configs = await describe();
    assert.equal(configs.get("retention.ms"), "3600000");
    assert.equal(configs.get("max.message.bytes"), "2048");
    assert.equal(configs.get("retention.bytes"), "-1", "AlterConfigs sets every config: one not named goes back to its default");
    const jsm = await jetstreamManager(h.nc);
    const si = await jsm.streams.info("alter_all");
    assert.deepEqual([si.config.max_age, si.config.max_bytes, si.config.max_msg_size], [3600_000 * 1_000_000, -1, 2048]);

    // The new limit is enforced: a record over 2048 bytes is refused.
    const producer = h.kafka().producer({ retry: { retries: 0 } });
    await producer.connect();
    try {
      await assert.rejects(producer.send({ topic, acks: -1, messages: [{ value: "x".repeat(4096) }] }), /larger than the max message size/);
    } finally {
      await producer.disconnect();
    }

    await assert.rejects(alter([{ name: "cleanup.policy", value: "archive" }]), kafkaError("INVALID_CONFIG"));
    // min.insync.replicas below 1 is refused as Kafka does; above the topic's one replica, acks=all is refused (acks=1 is not).
    await assert.rejects(alter([{ name: "min.insync.replicas", value: "0" }]), kafkaError("INVALID_CONFIG"));
    await alter([{ name: "retention.ms", value: "3600000" }, { name: "max.message.bytes", value: "2048" }, { name: "min.insync.replicas", value: "2" }]);
    await producer.connect();
    try {
      await assert.rejects(producer.send({ topic, acks: -1, messages: [{ value: "needs two replicas" }] }), /fewer in-sync replicas than required/); // NOT_ENOUGH_REPLICAS
      await producer.send({ topic, acks: 1, messages: [{ value: "the leader's copy is enough" }] });
    } finally {
      await producer.disconnect();
    }
    await alter([{ name: "retention.ms", value: "3600000" }, { name: "max.message.bytes", value: "2048" }]);
    await assert.rejects(alter([{ name: "preallocate", value: "true" }]), kafkaError("INVALID_CONFIG"));
    await assert.rejects(alter([{ name: "retention.ms", value: "soon" }]), kafkaError("INVALID_CONFIG"));
    await assert.rejects(alter([{ name: "segment.bytes", value: "10" }]), kafkaError("INVALID_CONFIG"), "below Kafka's least, 14");
    await assert.rejects(alter([{ name: "compression.type", value: "gzip" }]), kafkaError("INVALID_CONFIG"));
    await assert.rejects(alter([{ name: "unclean.leader.election.enable", value: "true" }]), kafkaError("INVALID_CONFIG"));
    configs = await describe();
    assert.deepEqual([configs.get("retention.ms"), configs.get("max.message.bytes")], ["3600000", "2048"], "a refused change leaves the topic as it was");
    // What nagare cannot change is taken at the value it has: Kafka's defaults of compression.type and
    // unclean.leader.election.enable (tools set what they read back; Kafka Streams sends some). segment.bytes reads as
    // the storage engine's segment size until set.
    assert.deepEqual(
      ["segment.bytes", "compression.type", "unclean.leader.election.enable"].map((k) => configs.get(k)),
      ["67108864", "producer", "false"],
    );
    const asShown = [
      { name: "retention.ms", value: "3600000" },
      { name: "max.message.bytes", value: "2048" },
      { name: "segment.bytes", value: "67108864" },
      { name: "compression.type", value: "producer" },
      { name: "unclean.leader.election.enable", value: "FALSE" },
    ];
    await alter(asShown);
    await admin.createTopics({ topics: [{ topic: "alter.as-shown", configEntries: asShown }] });
    assert.ok((await admin.listTopics()).includes("alter.as-shown"));

    await assert.rejects(
      admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: "alter.nowhere", configEntries: [{ name: "retention.ms", value: "1" }] }] }),
      kafkaError("UNKNOWN_TOPIC_OR_PARTITION"),
    );
    await assert.rejects(
      admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.BROKER, name: "0", configEntries: [{ name: "num.partitions", value: "3" }] }] }),
      kafkaError("INVALID_CONFIG"),
      "broker settings come from the configuration file",
    );
  });

  test("retention and size configs at their edges: what a stream cannot keep is refused, not taken as no limit; values past its range mean no limit", async () => {
    const topic = "alter.edges";
    await admin.createTopics({ topics: [{ topic, configEntries: [{ name: "retention.ms", value: "60000" }, { name: "retention.bytes", value: "1048576" }] }] });
    const describe = async (): Promise<string[]> => {
      const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
      const m = new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configValue]));
      return ["retention.ms", "retention.bytes", "max.message.bytes"].map((k) => m.get(k)!);
    };
    const alter = (entries: Array<{ name: string; value: string }>): Promise<unknown> =>
      admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: entries }] });
    const before = await describe();
    // 0 would keep nothing in Kafka; a stream's 0 means no limit at all, so it is refused, as are ages a stream cannot keep.
    for (const refused of [
      [{ name: "retention.ms", value: "0" }],
      [{ name: "retention.ms", value: "99" }],
      [{ name: "retention.bytes", value: "0" }],
      [{ name: "max.message.bytes", value: "3000000000" }],
      // Past the server's message.max.bytes (max_payload and 12 bytes): it was shown and not applied (an outside test).
      [{ name: "max.message.bytes", value: "1048589" }],
      [{ name: "max.message.bytes", value: "10485760" }],
      // Past a Java long: not a number of type LONG, as Kafka says (it was taken as no limit).
      [{ name: "retention.ms", value: "9223372036854775808" }],
      [{ name: "retention.bytes", value: "-9223372036854775809" }],
    ]) {
      await assert.rejects(alter(refused), kafkaError("INVALID_CONFIG"), JSON.stringify(refused));
      await assert.rejects(
        admin.createTopics({ topics: [{ topic: "edges.new", configEntries: refused }] }),
        kafkaError("INVALID_CONFIG"),
        `create with ${JSON.stringify(refused)}`,
      );
    }
    assert.deepEqual(await describe(), before, "nothing refused changed the topic");
    await alter([{ name: "max.message.bytes", value: "1048588" }]);
    assert.equal((await describe())[2], "1048588", "the server's own bound is taken");
    // Long.MAX (what some tools write for "forever") and any negative byte count: no limit, as Kafka reads them, and
    // shown as they were set, the topic's own (DYNAMIC_TOPIC_CONFIG), as Kafka shows them.
    await alter([
      { name: "retention.ms", value: "9223372036854775807" },
      { name: "retention.bytes", value: "-2" },
      { name: "max.message.bytes", value: " 5000" },
    ]);
    assert.deepEqual(await describe(), ["9223372036854775807", "-2", "5000"]);
    const sources = async (): Promise<Array<[string, string, number]>> => {
      const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
      const m = new Map(d.resources[0].configEntries.map((e) => [e.configName, e]));
      return ["retention.ms", "retention.bytes", "max.message.bytes", "cleanup.policy"].map((k) => [k, m.get(k)!.configValue, (m.get(k) as { configSource?: number }).configSource!]);
    };
    assert.deepEqual(await sources(), [
      ["retention.ms", "9223372036854775807", 1],
      ["retention.bytes", "-2", 1],
      ["max.message.bytes", "5000", 1],
      ["cleanup.policy", "delete", 5],
    ]);
    const jsm = await jetstreamManager(h.nc);
    const si = await jsm.streams.info("alter_edges");
    assert.deepEqual([si.config.max_age, si.config.max_bytes, si.config.max_msg_size], [0, -1, 5000]);
    // Configs set to their defaults (what Terraform and kafka-configs write) read back as set, not as defaults.
    await alter([
      { name: "retention.ms", value: "-1" },
      { name: "retention.bytes", value: "-1" },
      { name: "cleanup.policy", value: "delete" },
    ]);
    assert.deepEqual(await sources(), [
      ["retention.ms", "-1", 1],
      ["retention.bytes", "-1", 1],
      ["max.message.bytes", "1048588", 5], // not named: back to the broker's max_payload and its 12 bytes of log overhead
      ["cleanup.policy", "delete", 1],
    ]);
    // A stream changed over JetStream since: what the stream now says wins over what was set.
    await jsm.streams.update("alter_edges", { ...(await jsm.streams.info("alter_edges")).config, max_age: 3_600_000_000_000 });
    assert.deepEqual((await sources())[0], ["retention.ms", "3600000", 1]);
    await alter([{ name: "retention.ms", value: "-1" }]);
    // Java's parseLong takes a sign, and Kafka trims strings too.
    await alter([
      { name: "retention.ms", value: "+5000" },
      { name: "message.timestamp.type", value: " LogAppendTime" },
    ]);
    const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
    const m = new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configValue]));
    assert.deepEqual([m.get("retention.ms"), m.get("message.timestamp.type")], ["5000", "LogAppendTime"]);
  });

  test("IncrementalAlterConfigs: SET and DELETE change only the configs named; APPEND and SUBTRACT apply to list configs only", async () => {
    const topic = "alter.some";
    await admin.createTopics({ topics: [{ topic, configEntries: [{ name: "retention.bytes", value: "1048576" }] }] });
    type Op = [string, number, string | null];
    const incremental = (ops: Op[], validateOnly = false, name = topic, type = 2): Buffer =>
      frame(44, 0, (w) => {
        w.arrayLength(1).i8(type).string(name);
        w.array(ops, (w, [k, op, v]) => w.string(k).i8(op).nullableString(v));
        w.bool(validateOnly);
      });
    const answer = (r: Reader): [number, string | null] => {
      r.i32();
      r.i32();
      const error = r.i16();
      return [error, r.nullableString()];
    };
    const describe = async (): Promise<Map<string, string>> => {
      const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
      return new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configValue]));
    };
    const c = await raw();
    try {
      c.send(incremental([["retention.ms", 0, "60000"]]));
      assert.deepEqual(answer(await c.response(0)), [0, null]);
      let configs = await describe();
      assert.deepEqual([configs.get("retention.ms"), configs.get("retention.bytes")], ["60000", "1048576"], "retention.bytes, not named, stays");

      c.send(incremental([["retention.bytes", 1, null]]));
      assert.equal(answer(await c.response(1))[0], 0);
      configs = await describe();
      assert.deepEqual([configs.get("retention.ms"), configs.get("retention.bytes")], ["60000", "-1"], "DELETE: back to the default");

      c.send(incremental([["cleanup.policy", 2, "delete"]]));
      assert.equal(answer(await c.response(2))[0], 0, "APPEND delete to [delete] is still delete");
      c.send(incremental([["cleanup.policy", 2, "archive"]]));
      assert.equal(answer(await c.response(3))[0], 40, "delete,archive: INVALID_CONFIG");
      // An empty cleanup.policy: nothing is deleted by retention (Kafka 3.x cleans nothing up, 4.x says so); the retention
      // configs stay set, and apply again once delete is back.
      const maxAge = async (): Promise<number> => (await (await jetstreamManager(h.nc)).streams.info("alter_some")).config.max_age;
      c.send(incremental([["cleanup.policy", 3, "delete"]]));
      assert.deepEqual(answer(await c.response(4)), [0, null], "an empty cleanup.policy is taken");
      configs = await describe();
      assert.deepEqual([configs.get("cleanup.policy"), configs.get("retention.ms"), await maxAge()], ["", "60000", 0]);
      const again = await raw();
      try {
        again.send(incremental([["cleanup.policy", 2, "delete"]]));
        assert.deepEqual(answer(await again.response(0)), [0, null]);
      } finally {
        again.destroy();
      }
      assert.deepEqual([(await describe()).get("cleanup.policy"), await maxAge()], ["delete", 60_000_000_000]);
      c.send(incremental([["retention.ms", 2, "5"]]));
      assert.deepEqual(answer(await c.response(5)), [40, "Config value append is not allowed for config key: retention.ms"]);
      c.send(incremental([["retention.ms", 0, null]]));
      assert.deepEqual(answer(await c.response(6)), [42, "Null value not supported for : retention.ms"], "INVALID_REQUEST, as Kafka");
      c.send(incremental([["retention.ms", 0, "1"], ["retention.ms", 0, "2"]]));
      assert.equal(answer(await c.response(7))[0], 42, "a config named twice: INVALID_REQUEST");
      c.send(incremental([["retention.ms", 0, "1000"]], true));
      assert.equal(answer(await c.response(8))[0], 0);
      c.send(incremental([["log.retention.ms", 0, "1"]], false, "0", 4));
      assert.equal(answer(await c.response(9))[0], 40, "the broker's settings: INVALID_CONFIG");
      c.send(incremental([["retention.ms", 0, "50"]], true));
      assert.deepEqual(answer(await c.response(10)), [40, "retention.ms: 50 is below the shortest retention nagare keeps, 100 ms (-1: no limit)"], "what cannot be kept, validate_only refuses too");
      // Deleting a config that is not set changes nothing, whatever its name (Kafka drops it before it validates).
      c.send(incremental([["compression.type", 1, null], ["no.such.config", 1, null]]));
      assert.deepEqual(answer(await c.response(11)), [0, null], "DELETE of configs not set: a no-op");
      c.send(incremental([["compression.type", 0, "gzip"]]));
      assert.equal(answer(await c.response(12))[0], 40, "setting one nagare does not take is still INVALID_CONFIG");
    } finally {
      c.destroy();
    }
    assert.equal((await describe()).get("retention.ms"), "60000", "refused and validate-only requests changed nothing");
    await restart();
    assert.equal((await describe()).get("retention.ms"), "60000", "an altered config is kept across a restart");
  });

  test("a topic or config resource named twice in one request is answered once, refused, and nothing of it applies; so is an assignment beside a count", async () => {
    await admin.createTopics({ topics: [{ topic: "twice.cfg", configEntries: [{ name: "retention.ms", value: "60000" }] }] });
    type Assignment = [number, number[]];
    const createTopics = (topics: Array<[string, number, number, Assignment[]]>): Buffer =>
      frame(19, 3, (w) => {
        w.array(topics, (w, [name, partitions, replication, assignments]) => {
          w.string(name).i32(partitions).i16(replication);
          w.array(assignments, (w, [p, brokers]) => w.i32(p).array(brokers, (w, b) => w.i32(b)));
          w.arrayLength(0);
        });
        w.i32(10_000).bool(false);
      });
    const topicsAnswer = (r: Reader): Array<[string, number, string | null]> => {
      r.i32();
      const n = r.i32();
      return Array.from({ length: n }, () => [r.string(), r.i16(), r.nullableString()]);
    };
    const c = await raw();
    try {
      c.send(createTopics([["twice.new", 1, 1, []], ["twice.other", 1, 1, []], ["twice.new", 2, 1, []]]));
      assert.deepEqual(topicsAnswer(await c.response(0)), [
        ["twice.new", 42, "Found multiple entries for this topic."],
        ["twice.other", 0, null],
      ]);
      c.send(createTopics([["twice.assigned", 2, -1, [[0, [0]], [1, [0]]]]]));
      assert.equal(topicsAnswer(await c.response(1))[0][1], 42, "an assignment beside a partition count: INVALID_REQUEST");
      c.send(createTopics([["twice.assigned", -1, 1, [[0, [0]], [1, [0]]]]]));
      assert.equal(topicsAnswer(await c.response(2))[0][1], 42, "beside a replication factor too");

      c.send(
        frame(33, 0, (w) => {
          w.array([5000, 7000], (w, ms) => w.i8(2).string("twice.cfg").array([["retention.ms", String(ms)]], (w, [k, v]) => w.string(k).nullableString(v)));
          w.bool(false);
        }),
      );
      const r = await c.response(3);
      r.i32();
      assert.equal(r.i32(), 1, "the resource answered once");
      assert.deepEqual([r.i16(), r.nullableString(), r.i8(), r.string()], [42, "Each resource must appear at most once.", 2, "twice.cfg"]);

      c.send(frame(42, 0, (w) => w.array(["twice.group", "twice.group"], (w, g) => w.string(g))));
      const g = await c.response(4);
      g.i32();
      assert.equal(g.i32(), 1, "a group named twice is answered once");
      assert.deepEqual([g.string(), g.i16()], ["twice.group", 69]);
    } finally {
      c.destroy();
    }
    const topics = await admin.listTopics();
    assert.ok(!topics.includes("twice.new") && !topics.includes("twice.assigned"), "neither made");
    assert.ok(topics.includes("twice.other"));
    const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: "twice.cfg" }], includeSynonyms: false });
    assert.equal(d.resources[0].configEntries.find((e) => e.configName === "retention.ms")?.configValue, "60000", "neither entry applied");
  });

  test("DescribeConfigs with synonyms (KafkaJS): a topic's own value first, then the broker setting it falls back to", async () => {
    const topic = "synonyms";
    await admin.createTopics({ topics: [{ topic, configEntries: [{ name: "retention.ms", value: "3600000" }] }] });
    const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ["retention.ms", "max.message.bytes"] }], includeSynonyms: true });
    const synonyms = new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configSynonyms.map((x) => [x.configName, x.configValue, x.configSource])]));
    assert.deepEqual(synonyms.get("retention.ms"), [
      ["retention.ms", "3600000", 1], // DYNAMIC_TOPIC_CONFIG
      ["log.retention.ms", "-1", 5], // DEFAULT_CONFIG
    ]);
    assert.deepEqual(synonyms.get("max.message.bytes"), [["message.max.bytes", "1048588", 5]], "not set on the topic: the broker's alone");
    const broker = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.BROKER, name: "0", configNames: ["group.initial.rebalance.delay.ms"] }], includeSynonyms: true });
    assert.deepEqual(
      broker.resources[0].configEntries[0].configSynonyms.map((x) => [x.configName, x.configValue, x.configSource]),
      [["group.initial.rebalance.delay.ms", "200", 4]], // STATIC_BROKER_CONFIG
    );
    const without = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ["retention.ms"] }], includeSynonyms: false });
    assert.deepEqual(without.resources[0].configEntries[0].configSynonyms, [], "only when asked for, as Kafka");
  });

  test("DescribeConfigs of the broker (KafkaJS): nagare's settings under Kafka's names; another broker id is INVALID_REQUEST", async () => {
    const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.BROKER, name: "0" }], includeSynonyms: false });
    const entries = new Map(d.resources[0].configEntries.map((e) => [e.configName, e]));
    assert.equal(entries.get("broker.id")?.configValue, "0");
    assert.equal(entries.get("listeners")?.configValue, `PLAINTEXT://127.0.0.1:${h.srv.kafkaPort}`);
    assert.equal(entries.get("num.partitions")?.configValue, "1");
    assert.equal(entries.get("auto.create.topics.enable")?.configValue, "true");
    assert.equal(entries.get("group.initial.rebalance.delay.ms")?.configValue, "200");
    assert.equal(entries.get("group.initial.rebalance.delay.ms")?.configSource, 4, "set in the configuration: STATIC_BROKER_CONFIG");
    assert.equal(entries.get("fetch.max.bytes")?.configSource, 5, "left at its default: DEFAULT_CONFIG");
    assert.equal(entries.get("log.retention.ms")?.configValue, "-1");
    assert.ok([...entries.values()].every((e) => e.readOnly), "read-only: changed only in the configuration file");

    const some = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.BROKER, name: "0", configNames: ["message.max.bytes"] }], includeSynonyms: false });
    assert.deepEqual(some.resources[0].configEntries.map((e) => [e.configName, e.configValue]), [["message.max.bytes", "1048588"]]);

    // KafkaJS sends a broker's configs request to that broker: another id, and "" (the cluster-wide dynamic defaults), go raw.
    const c = await raw();
    try {
      const describeBroker = (name: string): Buffer => frame(32, 1, (w) => w.arrayLength(1).i8(4).string(name).arrayLength(-1).bool(false));
      const answer = (r: Reader): [number, string | null, number] => {
        r.i32();
        r.i32();
        const error = r.i16();
        const message = r.nullableString();
        r.i8();
        r.string();
        return [error, message, r.i32()];
      };
      c.send(describeBroker("1"));
      assert.deepEqual(answer(await c.response(0)), [42, "Unexpected broker id, expected 0 or empty string, but received 1", 0]);
      c.send(describeBroker(""));
      assert.deepEqual(answer(await c.response(1)), [0, null, 0], "no dynamic defaults");
    } finally {
      c.destroy();
    }
  });

  test("DescribeCluster v0 (flexible): this node, the controller, and Metadata's cluster id", async () => {
    const { clusterId } = await admin.describeCluster();
    const c = await raw();
    try {
      // Request header v2 ends with tagged fields; the body is one bool and its own tagged fields.
      c.send(frame(60, 0, (w) => w.tags().bool(false).tags()));
      const r = await c.response(0);
      r.tags(); // response header v1
      assert.equal(r.i32(), 0, "throttle_time_ms");
      assert.equal(r.i16(), 0, "error_code");
      assert.equal(r.compactNullableString(), null, "error_message");
      assert.equal(r.compactString(), clusterId);
      assert.equal(r.i32(), 0, "controller_id");
      const brokers = r.array((r) => {
        const b = [r.i32(), r.compactString(), r.i32(), r.compactNullableString()];
        r.tags();
        return b;
      }, true);
      assert.deepEqual(brokers, [[0, "127.0.0.1", h.srv.kafkaPort, null]]);
      assert.equal(r.i32(), -2147483648, "cluster_authorized_operations");
      r.tags();
      assert.equal(r.remaining, 0);
    } finally {
      c.destroy();
    }
  });

  test("the coordinators' internal topics on a single node: Metadata says they do not exist (never an authorization failure), a produce is INVALID_TOPIC_EXCEPTION", async () => {
    const broker = `127.0.0.1:${h.srv.kafkaPort}`;
    for (const topic of ["__consumer_offsets", "__transaction_state"]) {
      // kcat asks with auto-creation allowed (a producer's Metadata): the broker makes neither.
      const listed = await kcat(["-b", broker, "-L", "-t", topic, "-J"]);
      assert.equal(listed.code, 0, listed.stderr);
      const [t] = (JSON.parse(listed.stdout) as { topics: Array<{ topic: string; error?: string }> }).topics;
      assert.deepEqual([t.topic, t.error], [topic, "Broker: Unknown topic or partition"]);
      const w = new Writer();
      encodeBatch(w, [{ offset: 0, timestamp: Date.now(), key: null, value: Buffer.from("forged"), headers: null }], 0);
      const INVALID_TOPIC_EXCEPTION = 17;
      assert.deepEqual(await ask(h.srv.kafkaPort!, produceFrame(topic, 0, Buffer.from(w.result())), produceResult), { error: INVALID_TOPIC_EXCEPTION, baseOffset: -1 });
    }
  });
});

test("a CreatePartitions that failed to record the new count leaves a topic that can still grow after a restart", async () => {
  // An outside review's find: the failed growth's order files outlived it (the order.map went at the next open, its
  // summary stayed), and every later growth was refused as a lost stream order.
  const h = await startKafka({ initialRebalanceDelayMs: 0 });
  try {
    const kafka = (): InstanceType<typeof kafkajs.Kafka> => new kafkajs.Kafka({ brokers: [h.broker], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 1 } });
    const admin = kafka().admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "grow.later", numPartitions: 1 }] });
    const producer = kafka().producer();
    await producer.connect();
    await producer.send({ topic: "grow.later", messages: [{ value: "a" }, { value: "b" }] });
    await producer.disconnect();
    const streams = join(h.storeDir, "streams");
    const dir = join(streams, readdirSync(streams).find((n) => n !== "__consumer_offsets")!);
    // The new count cannot be written: where meta.json's temporary file goes, a directory stands.
    mkdirSync(join(dir, "meta.json.tmp"));
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic: "grow.later", count: 3 }] }));
    await admin.disconnect();
    await h.restart({ keepKafkaPort: true, whileStopped: () => rmSync(join(dir, "meta.json.tmp"), { recursive: true }) });
    // Its end mark too: left alone, it said stream sequences were handed out by an order.map that is gone.
    assert.deepEqual(["order.map", "order.pages", "order.mark"].filter((n) => existsSync(join(dir, n))), []);
    const again = kafka().admin();
    await again.connect();
    await again.createPartitions({ topicPartitions: [{ topic: "grow.later", count: 3 }] });
    assert.equal((await again.fetchTopicMetadata({ topics: ["grow.later"] })).topics[0].partitions.length, 3);
    await again.disconnect();
  } finally {
    await h.close();
  }
});

test("an order.mark left without its order.map beside a topic of one partition (what an earlier version left of a failed growth) does not stop the next growth", async () => {
  const h = await startKafka({ initialRebalanceDelayMs: 0 });
  try {
    const kafka = (): InstanceType<typeof kafkajs.Kafka> => new kafkajs.Kafka({ brokers: [h.broker], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 1 } });
    const admin = kafka().admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "grow.marked", numPartitions: 1 }] });
    const producer = kafka().producer();
    await producer.connect();
    await producer.send({ topic: "grow.marked", messages: [{ value: "a" }, { value: "b" }] });
    await producer.disconnect();
    await admin.disconnect();
    const streams = join(h.storeDir, "streams");
    const dir = join(streams, readdirSync(streams).find((n) => n !== "__consumer_offsets")!);
    // The growth's order numbered partition 0's two records, then the count was not written; the order.map went at a start.
    await h.restart({ keepKafkaPort: true, whileStopped: () => writeFileSync(join(dir, "order.mark"), encodeEndMark({ segment: 1, end: 64, lastSeq: 2 })) });
    const again = kafka().admin();
    await again.connect();
    await again.createPartitions({ topicPartitions: [{ topic: "grow.marked", count: 3 }] });
    assert.equal((await again.fetchTopicMetadata({ topics: ["grow.marked"] })).topics[0].partitions.length, 3);
    await again.disconnect();
  } finally {
    await h.close();
  }
});
