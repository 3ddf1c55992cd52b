/**
 * Kafka batches are stored as produced (issue 17, defects 2, 4 and 5): a
 * fetch returns the producer's batches with their boundaries, producer id,
 * sequence and compression; null values and producer timestamps survive;
 * NATS readers get every record of them. Checked with KafkaJS, kcat
 * (librdkafka), confluent-kafka, raw fetches and the nats clients.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createTopic as createKafkaTopic, kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntilAsync } from "./helpers/clients.js";
import { ask, batchAround, fetchFrame, frame, fetchResult, fetchV11Frame, flexibleBody, flexibleFrame, offsetForLeaderEpochFrame, offsetForLeaderEpochResult, produceResult, RawKafka, recordBatches, type FetchedBatch } from "./helpers/kafka-raw.js";
import { Reader, Writer } from "../src/protocols/kafka/codec.js";
import { encodeBatch } from "../src/protocols/kafka/records.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { crc32c } from "../src/util/crc32c.js";

const { CompressionTypes } = kafkajs;

/** The record batches a raw Fetch v4 of partition 0 from `offset` returns, as framed. */
async function fetchBatches(h: KafkaHarness, topic: string, offset: number, opts: Parameters<typeof fetchFrame>[3] = {}): Promise<FetchedBatch[]> {
  const raw = await RawKafka.open(h.srv.kafkaPort!);
  try {
    raw.send(fetchFrame(topic, 0, offset, opts));
    const r = await raw.response(0);
    const { error, recordBytes } = fetchResult(r);
    assert.equal(error, 0);
    return recordBatches(r, recordBytes);
  } finally {
    raw.destroy();
  }
}

/** Stored bytes of a stream's segment files. */
function segmentBytes(storeDir: string, stream: string): number {
  let total = 0;
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".seg")) total += statSync(p).size;
    }
  };
  walk(join(storeDir, "streams", stream));
  return total;
}

describe("Kafka batches stored as produced", () => {
  let h: KafkaHarness;

  before(async () => {
    h = await startKafka();
  });
  after(async () => {
    await h.close();
  });

  const createTopic = (topic: string, configs: Array<{ name: string; value: string }> = []): Promise<void> => createKafkaTopic(h, topic, 1, configs);

  async function produce(topic: string, messages: kafkajs.Message[], opts: { idempotent?: boolean; compression?: kafkajs.CompressionTypes } = {}): Promise<void> {
    const producer = h.kafka().producer({ idempotent: opts.idempotent ?? false, maxInFlightRequests: opts.idempotent ? 1 : undefined });
    await producer.connect();
    try {
      await producer.send({ topic, messages, compression: opts.compression, acks: -1 });
    } finally {
      await producer.disconnect();
    }
  }

  /** Every record of partition 0 as KafkaJS's consumer hands it over. */
  async function consumeAll(topic: string, expected: number): Promise<kafkajs.KafkaMessage[]> {
    const consumer = h.kafka().consumer({ groupId: `g-${topic}-${Math.random()}` });
    await consumer.connect();
    const got: kafkajs.KafkaMessage[] = [];
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        consumer
          .run({
            eachMessage: async ({ message }) => {
              got.push(message);
              if (got.length === expected) resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      await consumer.disconnect();
    }
    return got;
  }

  test("three records produced as one batch come back as that batch, with the producer's id and sequence, across a restart", async () => {
    const topic = "batches-kept";
    await createTopic(topic);
    await produce(topic, [{ value: "a" }, { value: "b" }, { value: "c" }], { idempotent: true });
    await produce(topic, [{ value: "d" }, { value: "e" }], { idempotent: true });
    const check = async (): Promise<void> => {
      const batches = await fetchBatches(h, topic, 0);
      assert.deepEqual(
        batches.map((b) => [b.baseOffset, b.count, b.lastOffsetDelta]),
        [
          [0, 3, 2],
          [3, 2, 1],
        ],
      );
      for (const b of batches) {
        assert.ok(b.producerId >= 0, "the producer id is kept");
        assert.equal(b.producerEpoch, 0);
      }
      // Each send is a new producer here: both batches begin its sequence.
      assert.deepEqual(
        batches.map((b) => b.baseSequence),
        [0, 0],
      );
      // A fetch from inside a batch returns the whole batch, as Kafka does; clients skip what they did not ask for.
      assert.deepEqual(
        (await fetchBatches(h, topic, 1)).map((b) => b.baseOffset),
        [0, 3],
      );
      const values = (await consumeAll(topic, 5)).map((m) => `${m.offset}:${m.value?.toString()}`);
      assert.deepEqual(values, ["0:a", "1:b", "2:c", "3:d", "4:e"]);
    };
    await check();
    await h.restart();
    await check();
  });

  test("null values and null keys round-trip as null, distinct from empty, through KafkaJS, kcat, confluent-kafka and NATS", async () => {
    const topic = "batches-nulls";
    await createTopic(topic);
    await produce(topic, [
      { key: "k1", value: null },
      { key: null, value: "" },
      { key: "", value: "x" },
    ]);
    // A NATS publish can send a tombstone too: an empty payload with Kafka-Value: null.
    const hdrs = natsHeaders();
    hdrs.set("Kafka-Value", "null");
    const js = jetstream(h.nc);
    await js.publish(topic, new Uint8Array(0), { headers: hdrs });

    const got = await consumeAll(topic, 4);
    assert.deepEqual(
      got.map((m) => [m.key === null ? null : m.key.toString(), m.value === null ? null : m.value.toString()]),
      [
        ["k1", null],
        [null, ""],
        ["", "x"],
        [null, null],
      ],
    );
    // kcat's %K and %S: key and value lengths, -1 for null (its -Z prints an empty one as NULL too).
    const k = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%K|%S\n"]);
    assert.equal(k.code, 0, k.stderr);
    assert.deepEqual(k.stdout.split("\n").filter((l) => l !== ""), ["2|-1", "-1|0", "0|1", "-1|-1"]);
    const py = await python(`
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "py-nulls", "auto.offset.reset": "earliest"})
c.subscribe(["${topic}"])
seen = []
while len(seen) < 4:
    m = c.poll(10)
    if m is None: break
    if m.error(): raise SystemExit(str(m.error()))
    seen.append((m.key(), m.value()))
c.close()
print(repr(seen))
`);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.trim(), "[(b'k1', None), (None, b''), (b'', b'x'), (None, None)]");

    // NATS readers: a null value is an empty payload with Kafka-Value: null; an empty one has no such header.
    const jsm = await jetstreamManager(h.nc);
    const stream = streamNameOf(topic);
    const first = (await jsm.streams.getMessage(stream, { seq: 1 }))!;
    assert.equal(first.data.length, 0);
    assert.equal(first.header?.get("Kafka-Value"), "null");
    assert.equal(first.header?.get("Nats-Key"), "k1");
    const second = (await jsm.streams.getMessage(stream, { seq: 2 }))!;
    assert.equal(second.data.length, 0);
    assert.equal(second.header?.get("Kafka-Value") ?? "", "");
    assert.equal(second.header?.has("Nats-Key") ?? false, false, "a null key has no Nats-Key header");
  });

  test("a Fetch naming no partition is answered at once, whatever its max_wait_ms, as Kafka answers a fetch that needs no data", async () => {
    // An outside test: it waited the whole max_wait_ms (and the connection's next requests behind it).
    const empty = frame(1, 4, (w) => w.i32(-1).i32(60_000).i32(1).i32(2 ** 31 - 1).i8(0).arrayLength(0));
    const answer = await ask(h.srv.kafkaPort!, empty, (r) => [r.i32(), r.i32()]);
    assert.deepEqual(answer, [0, 0], "throttle 0, no topics: answered within REQUEST_MS, not after 60 s");
  });

  test("a Fetch v11 naming leader epoch 0 (what Metadata shows a single broker's partitions at) or none is served; a later epoch is UNKNOWN_LEADER_EPOCH", async () => {
    const topic = "epochs-named";
    await createTopic(topic);
    await produce(topic, [{ value: "a" }]);
    const fetchNaming = (epoch: number) => ask(h.srv.kafkaPort!, fetchV11Frame(topic, 0, 0, epoch), (r) => fetchResult(r, 11));
    for (const epoch of [0, -1]) {
      const fetched = await fetchNaming(epoch);
      assert.equal(fetched.error, 0, `epoch ${epoch}`);
      assert.equal(fetched.highWatermark, 1);
      assert.ok(fetched.recordBytes > 0, `epoch ${epoch}: the record`);
    }
    const refused = await fetchNaming(1);
    assert.deepEqual([refused.error, refused.recordBytes], [75, 0], "UNKNOWN_LEADER_EPOCH, nothing read");
  });

  test("KIP-320 on one broker: every batch carries leader epoch 0, OffsetForLeaderEpoch (v0–4) ends epoch 0 at the log end, an undefined or later epoch is unknown (-1), a later current epoch UNKNOWN_LEADER_EPOCH, an earlier one FENCED_LEADER_EPOCH", async () => {
    const topic = "epochs-asked";
    await createTopic(topic);
    await produce(topic, [{ value: "a" }, { value: "b" }]);
    await produce(topic, [{ value: "c" }], { idempotent: true });
    const batches = await fetchBatches(h, topic, 0);
    assert.deepEqual(
      batches.map((b) => [b.baseOffset, b.leaderEpoch]),
      [
        [0, 0],
        [2, 0],
      ],
    );
    const ask23 = (version: number, partitions: Array<{ index: number; currentLeaderEpoch: number; leaderEpoch: number }>, name = topic) =>
      ask(h.srv.kafkaPort!, offsetForLeaderEpochFrame(version, name, partitions), (r) => offsetForLeaderEpochResult(r, version));
    for (const version of [0, 1, 2, 3, 4]) {
      const [found] = await ask23(version, [{ index: 0, currentLeaderEpoch: -1, leaderEpoch: 0 }]);
      assert.deepEqual(found, { error: 0, partition: 0, epoch: version >= 1 ? 0 : -1, endOffset: 3 }, `v${version}: epoch 0 ends at the log end`);
    }
    // Kafka's answers: the current epoch named and agreeing; an epoch asked for that is undefined (-1) or never reached.
    assert.deepEqual(await ask23(4, [{ index: 0, currentLeaderEpoch: 0, leaderEpoch: 0 }, { index: 0, currentLeaderEpoch: 0, leaderEpoch: -1 }, { index: 0, currentLeaderEpoch: -1, leaderEpoch: 7 }]), [
      { error: 0, partition: 0, epoch: 0, endOffset: 3 },
      { error: 0, partition: 0, epoch: -1, endOffset: -1 },
      { error: 0, partition: 0, epoch: -1, endOffset: -1 },
    ]);
    assert.deepEqual(await ask23(3, [{ index: 0, currentLeaderEpoch: 1, leaderEpoch: 0 }, { index: 5, currentLeaderEpoch: -1, leaderEpoch: 0 }]), [
      { error: 75, partition: 0, epoch: -1, endOffset: -1 }, // UNKNOWN_LEADER_EPOCH
      { error: 3, partition: 5, epoch: -1, endOffset: -1 }, // UNKNOWN_TOPIC_OR_PARTITION
    ]);
    assert.deepEqual(await ask23(2, [{ index: 0, currentLeaderEpoch: -1, leaderEpoch: 0 }], "no-such-topic"), [{ error: 3, partition: 0, epoch: -1, endOffset: -1 }]);
    // Only -1 is undefined: an epoch below it is older than any (its end the first epoch's start), a current epoch below it fenced.
    assert.deepEqual(await ask23(4, [{ index: 0, currentLeaderEpoch: -1, leaderEpoch: -2 }, { index: 0, currentLeaderEpoch: -2, leaderEpoch: 0 }]), [
      { error: 0, partition: 0, epoch: -2, endOffset: 0 },
      { error: 74, partition: 0, epoch: -1, endOffset: -1 }, // FENCED_LEADER_EPOCH
    ]);
    const fenced = await ask(h.srv.kafkaPort!, fetchV11Frame(topic, 0, 0, -2), (r) => fetchResult(r, 11));
    assert.deepEqual([fenced.error, fenced.recordBytes], [74, 0], "a Fetch naming epoch -2: FENCED_LEADER_EPOCH");
  });

  test("a batch past the topic's max.message.bytes is refused whole (MESSAGE_TOO_LARGE), as Kafka does, though each record is within it; so is a compressed one with a record past it; one within it is stored", async () => {
    const topic = "batches-too-large";
    await createTopic(topic, [{ name: "max.message.bytes", value: "2048" }]);
    const producer = h.kafka().producer({ retry: { retries: 0 } });
    await producer.connect();
    const tooLarge = (err: Error & { type?: string }) => err.type === "MESSAGE_TOO_LARGE";
    try {
      // Kafka bounds the batch as produced: three records of 900 bytes are within the limit each, not together.
      await assert.rejects(producer.send({ topic, acks: -1, messages: [1, 2, 3].map(() => ({ value: "z".repeat(900) })) }), tooLarge);
      // Kept whole (no headers), and stored record by record (a Nats-Subject header names the subject).
      for (const headers of [undefined, { "Nats-Subject": topic }]) {
        await assert.rejects(producer.send({ topic, acks: -1, messages: [{ value: "small" }, { value: "x".repeat(2049), headers }, { value: "small" }] }), tooLarge);
      }
      // Compressed far below the limit, but the record is past it, and the stream's max_msg_size bounds every message its
      // NATS readers see: refused too (Kafka would take it).
      await assert.rejects(producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages: [{ value: "c".repeat(4096) }] }), tooLarge);
      await producer.send({ topic, acks: -1, messages: [{ value: "y".repeat(1900) }] });
      await producer.send({ topic, acks: -1, messages: [{ value: "ok", headers: { "Nats-Subject": topic } }] });
    } finally {
      await producer.disconnect();
    }
    const got = await consumeAll(topic, 2);
    assert.deepEqual(got.map((m) => [Number(m.offset), m.value!.length]), [[0, 1900], [1, 2]], "nothing of the refused batches was stored");
  });

  test("a record batch past message.max.bytes (max_payload, 1 MiB) is refused whole (MESSAGE_TOO_LARGE), as Kafka does; one within it is stored", async () => {
    const topic = "batches-past-max";
    await createTopic(topic);
    const producer = h.kafka().producer({ retry: { retries: 0 } });
    await producer.connect();
    const records = (n: number, fill: number) => Array.from({ length: n }, () => ({ value: Buffer.alloc(1024, fill) }));
    try {
      // About 1.1 MB in one batch: each record is far below the limit, the batch is not.
      await assert.rejects(producer.send({ topic, acks: -1, messages: records(1100, 0xee) }), (err: Error & { type?: string }) => err.type === "MESSAGE_TOO_LARGE");
      await producer.send({ topic, acks: -1, messages: records(900, 0x11) });
    } finally {
      await producer.disconnect();
    }
    const got = await consumeAll(topic, 900);
    assert.deepEqual([Number(got[0].offset), Number(got[899].offset)], [0, 899]);
    assert.ok(got.every((m) => m.value!.length === 1024 && m.value![0] === 0x11), "the batch within the limit is stored, nothing of the refused one");
  });

  test("the producer's timestamps are kept (CreateTime); a LogAppendTime topic stamps the append time; out-of-range timestamps are refused", async () => {
    await createTopic("ts-create");
    await createTopic("ts-append", [{ name: "message.timestamp.type", value: "LogAppendTime" }]);
    await createTopic("ts-bounded", [{ name: "message.timestamp.difference.max.ms", value: "60000" }]);
    const old = "1600000000000";
    await produce("ts-create", [
      { value: "1", timestamp: old },
      { value: "2", timestamp: "1600000000500" },
    ]);
    const before = Date.now();
    await produce("ts-append", [{ value: "1", timestamp: old }]);
    const created = await consumeAll("ts-create", 2);
    assert.deepEqual(
      created.map((m) => m.timestamp),
      [old, "1600000000500"],
    );
    const appended = await consumeAll("ts-append", 1);
    assert.ok(Number(appended[0].timestamp) >= before, `append time ${appended[0].timestamp} is at least ${before}`);
    const [batch] = await fetchBatches(h, "ts-append", 0);
    assert.equal(batch.attributes & 0x08, 0x08, "the batch says LogAppendTime");
    // kcat shows the producer's timestamp for CreateTime.
    const k = await kcat(["-b", h.broker, "-C", "-t", "ts-create", "-o", "beginning", "-e", "-q", "-f", "%T\n"]);
    assert.deepEqual(k.stdout.split("\n").filter((l) => l !== ""), [old, "1600000000500"]);

    // Looking offsets up by time goes by the producer's timestamps under CreateTime, as in Kafka.
    const lookup = h.kafka().admin();
    await lookup.connect();
    try {
      const at = async (ts: number): Promise<string> => (await lookup.fetchTopicOffsetsByTimestamp("ts-create", ts))[0].offset;
      assert.equal(await at(1600000000000), "0");
      assert.equal(await at(1600000000250), "1");
    } finally {
      await lookup.disconnect();
    }
    // librdkafka reports a record of a LogAppendTime topic with the time the produce answer gives (log_append_time_ms),
    // which is the time a consumer then reads; a CreateTime one with its own.
    const delivered = await python(`
from confluent_kafka import Producer
out = []
def report(err, msg):
    if err: raise SystemExit(str(err))
    out.append([msg.topic(), msg.timestamp()[0], msg.timestamp()[1]])
p = Producer({"bootstrap.servers": "${h.broker}", "enable.idempotence": True})
for topic in ["ts-append", "ts-create"]:
    p.produce(topic, b"dr", timestamp=${old}, on_delivery=report)
    p.flush(10)
print(out)
`);
    assert.equal(delivered.code, 0, delivered.stderr);
    const [[, appendType, appendTime], create] = JSON.parse(delivered.stdout.trim().replace(/'/g, '"')) as [string, number, number][];
    assert.equal(appendType, 2, "TIMESTAMP_LOG_APPEND_TIME");
    assert.equal(String(appendTime), (await consumeAll("ts-append", 2))[1].timestamp, "the time the record was stored with");
    assert.deepEqual(create, ["ts-create", 1, Number(old)], "TIMESTAMP_CREATE_TIME, the producer's");

    const q = await kcat(["-b", h.broker, "-Q", "-t", "ts-create:0:1600000000400"]);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, /ts-create \[0\] offset 1\b/);

    await assert.rejects(
      produce("ts-bounded", [{ value: "x", timestamp: old }]),
      (err: Error & { type?: string; cause?: { type?: string } }) => (err.cause?.type ?? err.type) === "INVALID_TIMESTAMP" || /INVALID_TIMESTAMP|timestamp/i.test(String(err.message)),
    );
    await produce("ts-bounded", [{ value: "now" }]);
    // Produce v8+ says why in error_message (Kafka's record_errors stay empty: a batch is refused whole).
    const w = new Writer();
    encodeBatch(w, [{ offset: 0, timestamp: Number(old), key: null, value: Buffer.from("old"), headers: null }], 0);
    const refused = await ask(h.srv.kafkaPort!, frame(0, 8, (f) => f.nullableString(null).i16(-1).i32(5000).arrayLength(1).string("ts-bounded").arrayLength(1).i32(0).nullableBytes(Buffer.from(w.result()))), (r) => {
      r.i32(); // topics
      r.string();
      r.i32(); // partitions
      r.i32(); // index
      const error = r.i16();
      r.i64(); // base_offset
      r.i64(); // log_append_time_ms
      const logStart = r.i64();
      const recordErrors = r.array((e) => [e.i32(), e.nullableString()] as const);
      return [error, r.nullableString(), logStart, recordErrors] as const;
    });
    assert.equal(refused[0], 32, "INVALID_TIMESTAMP");
    assert.match(String(refused[1]), /message\.timestamp\.difference\.max\.ms \(60000\)/);
    // As Kafka's RecordValidationException answers: the partition's log start, and the record that refused the batch.
    assert.equal(refused[2], 0);
    assert.deepEqual(
      refused[3].map(([i]) => i),
      [0],
    );
    assert.match(String(refused[3][0][1]), new RegExp(`^Timestamp ${old} of message with offset 0 is out of range\\. The timestamp should be within \\[\\d+, \\d+\\]$`));

    // The topic configs say so, and can be changed.
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: "ts-append" }, { type: 2, name: "ts-create" }] });
      const value = (i: number, name: string): string | undefined => described.resources[i].configEntries.find((e) => e.configName === name)?.configValue;
      assert.equal(value(0, "message.timestamp.type"), "LogAppendTime");
      assert.equal(value(1, "message.timestamp.type"), "CreateTime");
      assert.equal(value(1, "message.timestamp.difference.max.ms"), "9223372036854775807");
      await admin.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: "ts-create", configEntries: [{ name: "message.timestamp.type", value: "LogAppendTime" }] }] });
      const after = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: "ts-create" }] });
      assert.equal(after.resources[0].configEntries.find((e) => e.configName === "message.timestamp.type")?.configValue, "LogAppendTime");
    } finally {
      await admin.disconnect();
    }
  });

  test("a produced batch is checked as Kafka's broker checks it: the codes for bad sets, zstd before Produce v7, sequences, transactional ids, and timestamps rewritten to the topic's type", async () => {
    await createTopic("checked");
    await createTopic("checked-bounded", [{ name: "message.timestamp.difference.max.ms", value: "60000" }]);
    await createTopic("checked-huge");
    const port = h.srv.kafkaPort!;
    const T = 1_600_000_000_000;
    const records = (values: string[], attributes = 0, producerId = -1, baseSequence = -1, timestamps?: number[]): Buffer => {
      const w = new Writer();
      encodeBatch(w, values.map((v, i) => ({ offset: i, timestamp: timestamps?.[i] ?? Date.now(), key: null, value: Buffer.from(v), headers: null })), attributes, producerId, producerId >= 0 ? 0 : -1, baseSequence);
      return Buffer.from(w.result());
    };
    /** The batch with its header's magic, base or max timestamp changed, its CRC made good again. */
    const altered = (batch: Buffer, change: { magic?: number; baseTimestamp?: bigint; maxTimestamp?: number }): Buffer => {
      const b = Buffer.from(batch);
      if (change.magic !== undefined) b[16] = change.magic;
      if (change.baseTimestamp !== undefined) b.writeBigInt64BE(change.baseTimestamp, 27);
      if (change.maxTimestamp !== undefined) b.writeBigInt64BE(BigInt(change.maxTimestamp), 35);
      b.writeUInt32BE(crc32c(b, 21) >>> 0, 17);
      return b;
    };
    const produceAt = (version: number, topic: string, set: Buffer, transactionalId: string | null = null): Promise<number> =>
      ask(port, frame(0, version, (w) => w.nullableString(transactionalId).i16(-1).i32(5000).arrayLength(1).string(topic).arrayLength(1).i32(0).nullableBytes(set)), (r) => produceResult(r).error);
    const INVALID_RECORD = 87;
    const CORRUPT_MESSAGE = 2;
    assert.equal(await produceAt(3, "checked", Buffer.alloc(0)), INVALID_RECORD, "no batch");
    // Kafka's ByteBufferLogInputStream: a length no batch can have is corrupt as soon as it is read; a set too short
    // to reach the magic byte holds no batch.
    const short = (length: number): Buffer => {
      const b = Buffer.alloc(14);
      b.writeInt32BE(length, 8);
      return b;
    };
    assert.equal(await produceAt(3, "checked", short(5)), CORRUPT_MESSAGE, "a 14-byte set whose length is below a batch's least");
    assert.equal(await produceAt(3, "checked", short(100)), INVALID_RECORD, "a 14-byte set: no batch");
    assert.equal(await produceAt(3, "checked", altered(records(["m1"]), { magic: 1 })), INVALID_RECORD, "a batch that is not v2");
    assert.equal(await produceAt(3, "checked", altered(records(["m5"]), { magic: 5 })), CORRUPT_MESSAGE, "a magic no batch has");
    assert.equal(await produceAt(3, "checked", Buffer.concat([records(["one"]), records(["two"])])), INVALID_RECORD, "two batches");
    // zstd came with v7: refused before it, whatever the bytes; from v7 on the bytes are decoded (these are no zstd frame).
    const zstd = batchAround(Buffer.from("not a zstd frame"), 1, 4);
    assert.equal(await produceAt(3, "checked", zstd), 76, "UNSUPPORTED_COMPRESSION_TYPE");
    assert.equal(await produceAt(7, "checked", zstd), CORRUPT_MESSAGE);
    assert.equal(await produceAt(3, "checked", records(["seq"], 0, 1000, -5)), INVALID_RECORD, "an idempotent batch's negative sequence");
    // A time past 2^53 ms would not be kept exactly: refused before the producer's sequence counts the batch, so its next one goes in.
    assert.equal(await produceAt(3, "checked-huge", altered(records(["huge", "huger"], 0, 4242, 0, [0, 2 ** 62]), { baseTimestamp: 2n ** 62n })), 32, "INVALID_TIMESTAMP");
    assert.equal(await produceAt(3, "checked-huge", records(["after"], 0, 4242, 0)), 0, "the producer's sequence 0 again");
    // Transactional records without a transactional id: the whole request, as Kafka's KafkaApis refuses it.
    const mixed = await ask(
      port,
      frame(0, 3, (w) => w.nullableString(null).i16(-1).i32(5000).arrayLength(1).string("checked").arrayLength(2).i32(0).nullableBytes(records(["plain"])).i32(1).nullableBytes(records(["txn"], 0x10, 1000, 0))),
      (r) => {
        r.i32();
        r.string();
        return r.array((p) => [p.i32(), p.i16(), p.i64(), p.i64()]);
      },
    );
    assert.deepEqual(mixed, [
      [0, 53, -1, -1],
      [1, 53, -1, -1],
    ], "TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition");
    assert.equal(await produceAt(3, "checked", records(["plain in a transactional request"]), "some-txn"), 0, "a plain batch is taken as plain");
    assert.equal(
      await ask(port, frame(22, 1, (w) => w.nullableString("").i32(60_000)), (r) => (r.i32(), r.i16())),
      42,
      "InitProducerId with an empty transactional id: INVALID_REQUEST",
    );
    // A CreateTime topic: a producer's LogAppendTime bit and a max timestamp its records do not have are rewritten, as
    // Kafka's LogValidator does, so readers see each record's own time; records without a time (-1) pass the time check.
    assert.equal(await produceAt(3, "checked", altered(records(["lat1", "lat2"], 0x08, -1, -1, [T, T + 5]), { maxTimestamp: T + 999 })), 0);
    assert.equal(await produceAt(3, "checked-bounded", records(["no time"], 0, -1, -1, [-1])), 0, "NO_TIMESTAMP is not checked against the clock");
    const got = await consumeAll("checked", 3);
    assert.deepEqual(
      got.map((m) => [m.value?.toString(), m.timestamp]),
      [
        ["plain in a transactional request", got[0].timestamp],
        ["lat1", String(T)],
        ["lat2", String(T + 5)],
      ],
    );
    const stamped = (await fetchBatches(h, "checked", 1))[0];
    assert.deepEqual([stamped.attributes & 0x08, stamped.maxTimestamp], [0, T + 5], "CreateTime, and the records' newest time");
    assert.deepEqual((await consumeAll("checked-bounded", 1)).map((m) => m.timestamp), ["-1"]);
    // A producer may not say LogAppendTime but for records with a time on a CreateTime topic (LogValidator.validateTimestamp).
    await createTopic("checked-append", [{ name: "message.timestamp.type", value: "LogAppendTime" }]);
    assert.equal(await produceAt(3, "checked-append", records(["said"], 0x08)), 32, "INVALID_TIMESTAMP: LogAppendTime said by the producer");
    assert.equal(await produceAt(3, "checked", records(["untimed"], 0x08, -1, -1, [-1])), 32, "INVALID_TIMESTAMP: LogAppendTime said of a record without a time");
  });

  test("KIP-937: message.timestamp.before.max.ms and after.max.ms bound each side of the broker's clock; left unset, difference.max.ms bounds them", async () => {
    await createTopic("ts-before", [{ name: "message.timestamp.before.max.ms", value: "60000" }]);
    await createTopic("ts-after", [
      { name: "message.timestamp.after.max.ms", value: "60000" },
      { name: "message.timestamp.difference.max.ms", value: "7200000" },
    ]);
    const port = h.srv.kafkaPort!;
    const produceStamped = (topic: string, timestamp: number): Promise<[number, string | null]> => {
      const w = new Writer();
      // A record within the bounds first: only the second is named in record_errors.
      encodeBatch(w, [{ offset: 0, timestamp: Date.now(), key: null, value: Buffer.from("now"), headers: null }, { offset: 1, timestamp, key: null, value: Buffer.from("v"), headers: null }], 0);
      const set = Buffer.from(w.result());
      return ask(port, frame(0, 8, (f) => f.nullableString(null).i16(-1).i32(5000).arrayLength(1).string(topic).arrayLength(1).i32(0).nullableBytes(set)), (r) => {
        r.i32();
        r.string();
        r.i32();
        r.i32();
        const error = r.i16();
        r.i64();
        r.i64();
        r.i64();
        const named = r.array((e) => {
          const index = e.i32();
          e.nullableString();
          return index;
        });
        const message = r.nullableString();
        assert.deepEqual(named, error === 0 ? [] : [1], "record_errors: the record out of bounds");
        return [error, message];
      });
    };
    const hour = 3_600_000;
    const [old, ahead] = [Date.now() - 10 * hour, Date.now() + 10 * hour];
    assert.deepEqual(await produceStamped("ts-before", ahead), [0, null], "no bound ahead");
    const [behind, why] = await produceStamped("ts-before", old);
    assert.equal(behind, 32, "INVALID_TIMESTAMP");
    assert.match(String(why), /message\.timestamp\.before\.max\.ms \(60000\) behind/);
    const [tooFar, whyAhead] = await produceStamped("ts-after", ahead);
    assert.equal(tooFar, 32);
    assert.match(String(whyAhead), /message\.timestamp\.after\.max\.ms \(60000\) ahead/);
    const [stale, whyStale] = await produceStamped("ts-after", old);
    assert.equal(stale, 32, "behind: message.timestamp.difference.max.ms (2 h) bounds it");
    assert.match(String(whyStale), /message\.timestamp\.difference\.max\.ms \(7200000\) behind/);
    assert.deepEqual(await produceStamped("ts-after", Date.now() - hour), [0, null]);
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: "ts-before" }] });
      const value = (name: string): string | undefined => described.resources[0].configEntries.find((e) => e.configName === name)?.configValue;
      assert.deepEqual(
        ["message.timestamp.before.max.ms", "message.timestamp.after.max.ms", "message.timestamp.difference.max.ms"].map(value),
        ["60000", "9223372036854775807", "9223372036854775807"],
      );
    } finally {
      await admin.disconnect();
    }
  });

  test("offsets by time follow the producer's timestamps through the whole log, as Kafka's time index: a backfill of old timestamps past 10,000 records, one stamped ahead of the clock, across a restart and DeleteRecords", async () => {
    const topic = "ts-index";
    await createTopic(topic);
    const base = 1_500_000_000_000;
    const producer = h.kafka().producer();
    await producer.connect();
    const now = Date.now();
    try {
      // A backfill (MirrorMaker keeps timestamps): 12 batches of 1,000 records stamped a second apart, years ago.
      for (let b = 0; b < 12; b++) {
        const messages = Array.from({ length: 1000 }, (_, i) => ({ value: "x", timestamp: String(base + (b * 1000 + i) * 1000) }));
        await producer.send({ topic, acks: -1, messages });
      }
      // A producer whose clock runs an hour ahead, then one that does not.
      await producer.send({ topic, acks: -1, messages: [{ value: "ahead", timestamp: String(now + 3_600_000) }] });
      await producer.send({ topic, acks: -1, messages: [{ value: "now", timestamp: String(now) }] });
    } finally {
      await producer.disconnect();
    }
    const lookup = async (): Promise<string[]> => {
      const admin = h.kafka().admin();
      await admin.connect();
      try {
        const at = async (ts: number): Promise<string> => (await admin.fetchTopicOffsetsByTimestamp(topic, ts))[0].offset;
        return [await at(base), await at(base + 11_500 * 1000 - 1), await at(now + 1_800_000)];
      } finally {
        await admin.disconnect();
      }
    };
    const kcatAt = async (ts: number): Promise<string> => {
      const q = await kcat(["-b", h.broker, "-Q", "-t", `${topic}:0:${ts}`]);
      assert.equal(q.code, 0, q.stderr);
      return q.stdout.trim();
    };
    assert.deepEqual(await lookup(), ["0", "11500", "12000"]);
    assert.match(await kcatAt(base + 11_999 * 1000), /offset 11999\b/);
    // Past every timestamp: none (kcat shows Kafka's -1 as the end, "offset -1" or "END").
    assert.match(await kcatAt(now + 7_200_000), /offset (-1|END)\b/);
    // The index files written at shutdown say the same.
    await h.restart();
    assert.deepEqual(await lookup(), ["0", "11500", "12000"]);
    // Records below the log start are not found: the first one left is.
    await deleteRecords(topic, 5000);
    assert.deepEqual(await lookup(), ["5000", "11500", "12000"]);
  });

  test("ListOffsets v7 (KIP-734, max timestamp) answers the first record with the highest timestamp among those still stored, as Kafka; none in an empty partition", async () => {
    const topic = "ts-max";
    await createTopic(topic);
    /** ListOffsets v7 for timestamp -3 (max), read_uncommitted: [error, timestamp, offset, leader epoch]. */
    const maxOf = (): Promise<[number, number, number, number]> =>
      ask(
        h.srv.kafkaPort!,
        flexibleFrame(2, 7, (w) => {
          w.i32(-1).i8(0);
          w.array([topic], (w, t) => {
            w.string(t);
            w.array([0], (w, p) => {
              w.i32(p).i32(-1).i64(-3);
              w.taggedFields();
            });
            w.taggedFields();
          });
          w.taggedFields();
        }),
        (r) => {
          flexibleBody(r).i32(); // throttle
          const [[part]] = r.array((r) => {
            r.string();
            const parts = r.array((r): [number, number, number, number] => {
              r.i32(); // partition
              const out: [number, number, number, number] = [r.i16(), r.i64(), r.i64(), r.i32()];
              r.taggedFields();
              return out;
            });
            r.taggedFields();
            return parts;
          });
          return part;
        },
      );
    assert.deepEqual(await maxOf(), [0, -1, -1, -1], "an empty partition: none");
    // The highest timestamp (5000) inside the first batch, not at its end, and again in a later batch: the first one counts.
    await produce(topic, [
      { value: "a", timestamp: "1000" },
      { value: "b", timestamp: "5000" },
      { value: "c", timestamp: "3000" },
    ]);
    await produce(topic, [{ value: "d", timestamp: "4000" }]);
    await produce(topic, [
      { value: "e", timestamp: "5000" },
      { value: "f", timestamp: "2000" },
    ]);
    assert.deepEqual(await maxOf(), [0, 5000, 1, 0]);
    // Deleted below offset 2, b is gone: e is the first of the highest left.
    await deleteRecords(topic, 2);
    assert.deepEqual(await maxOf(), [0, 5000, 4, 0]);
  });

  /** DeleteRecords of partition 0 below `offset`, through KafkaJS. */
  async function deleteRecords(topic: string, offset: number): Promise<void> {
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      // KafkaJS finds partition leaders in metadata it already has.
      await admin.fetchTopicMetadata({ topics: [topic] });
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: String(offset) }] });
    } finally {
      await admin.disconnect();
    }
  }

  /** A fetch that may wait 30 s, on a connection of its own, answered well before (15 s: room for a loaded machine); its result. */
  async function fetchAnsweredSoon(request: Buffer): Promise<ReturnType<typeof fetchResult>> {
    const raw = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const began = Date.now();
      raw.send(request);
      const result = fetchResult(await raw.response(0, 25_000));
      assert.ok(Date.now() - began < 15_000, `answered after ${Date.now() - began} ms`);
      return result;
    } finally {
      raw.destroy();
    }
  }

  test("a fetch keeps within max_bytes and the partition's max bytes but for a first batch larger than both (KIP-74), and answers an error at once rather than after max_wait", async () => {
    const topic = "fetch-limits";
    await createTopic(topic);
    const record = (i: number): kafkajs.Message => ({ value: Buffer.alloc(1000, 0x30 + i) });
    for (let b = 0; b < 3; b++) await produce(topic, [record(0), record(1), record(2), record(3)]);
    const counts = async (opts: Parameters<typeof fetchFrame>[3]): Promise<number[]> => (await fetchBatches(h, topic, 0, opts)).map((b) => b.count);
    assert.deepEqual(await counts({}), [4, 4, 4], "three batches of four records of 1,000 bytes");
    // Room for one and a half batches: one, not two.
    assert.deepEqual(await counts({ partitionMaxBytes: 6000 }), [4]);
    assert.deepEqual(await counts({ maxBytes: 6000 }), [4]);
    assert.deepEqual(await counts({ maxBytes: 9000, partitionMaxBytes: 9000 }), [4, 4]);
    // Less than one batch: the first comes whole all the same.
    assert.deepEqual(await counts({ partitionMaxBytes: 100 }), [4]);
    assert.deepEqual(await counts({ maxBytes: 1 }), [4]);
    // An offset past the end: OFFSET_OUT_OF_RANGE (1) at once, not after the 30 s the fetch would wait for data.
    assert.equal((await fetchAnsweredSoon(fetchFrame(topic, 0, 1000, { maxWaitMs: 30_000, minBytes: 1 }))).error, 1);
  });

  test("a fetch that reads a partition up to its count limit answers at once, though min_bytes is not reached", async () => {
    const topic = "fetch-count";
    await createTopic(topic);
    // 5,000 records stored one by one (published over NATS): more than the 4,096 a fetch reads of a partition.
    for (let i = 0; i < 5000; i++) h.nc.publish(topic, "x");
    await h.nc.flush();
    const jsm = await jetstreamManager(h.nc);
    await waitUntilAsync(async () => (await jsm.streams.info(streamNameOf(topic))).state.messages === 5000, "the 5,000 records stored", 30_000);
    const { error, recordBytes } = await fetchAnsweredSoon(fetchFrame(topic, 0, 0, { maxWaitMs: 30_000, minBytes: 10_000_000 }));
    assert.deepEqual([error, recordBytes > 0], [0, true]);
  });

  test("a read_committed fetch waiting at the last stable offset is answered once the transaction commits, not at its max_wait", async () => {
    const topic = "fetch-txn-wake";
    await createTopic(topic);
    const producer = h.kafka().producer({ transactionalId: "fetch-txn-wake", idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const raw = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const tx = await producer.transaction();
      await tx.send({ topic, messages: [{ value: "a" }, { value: "b" }] });
      // Nothing stable yet: the fetch waits (up to 30 s) for the commit.
      const began = Date.now();
      raw.send(fetchFrame(topic, 0, 0, { maxWaitMs: 30_000, minBytes: 1, isolationLevel: 1 }));
      await tx.commit();
      const r = await raw.response(0, 25_000);
      const { error, recordBytes } = fetchResult(r);
      assert.equal(error, 0);
      assert.ok(recordBytes > 0, "the committed records");
      assert.ok(Date.now() - began < 15_000, `answered ${Date.now() - began} ms after it was sent`);
    } finally {
      raw.destroy();
      await producer.disconnect();
    }
  });

  test("a fetch or ListOffsets with an isolation level Kafka does not know is refused UNKNOWN_SERVER_ERROR, nothing read", async () => {
    const topic = "fetch-isolation-unknown";
    await createTopic(topic);
    await produce(topic, [{ value: "a" }]);
    // Fetch v4: the error in the partition (no top-level error before v7).
    const v4 = await ask(h.srv.kafkaPort!, frame(1, 4, (w) => w.i32(-1).i32(0).i32(1).i32(1 << 20).i8(2).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(0).i32(1 << 20)), (r) => r);
    const { error, highWatermark, recordBytes } = fetchResult(v4);
    assert.deepEqual({ error, highWatermark, recordBytes }, { error: -1, highWatermark: -1, recordBytes: -1 });
    // Fetch v11: at the top too.
    const v11 = await ask(
      h.srv.kafkaPort!,
      frame(1, 11, (w) => w.i32(-1).i32(0).i32(1).i32(1 << 20).i8(-1).i32(0).i32(-1).arrayLength(1).string(topic).arrayLength(1).i32(0).i32(-1).i64(0).i64(-1).i32(1 << 20).arrayLength(0).string("")),
      (r) => {
        r.i32(); // throttle_time_ms
        const top = r.i16();
        r.i32(); // session_id
        r.i32(); // topics
        r.string();
        r.i32(); // partitions
        r.i32(); // index
        return [top, r.i16()];
      },
    );
    assert.deepEqual(v11, [-1, -1]);
    // ListOffsets v2 (latest): each partition refused.
    const listed = await ask(h.srv.kafkaPort!, frame(2, 2, (w) => w.i32(-1).i8(7).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(-1)), (r) => {
      r.i32(); // throttle_time_ms
      r.i32(); // topics
      r.string();
      r.i32(); // partitions
      return { index: r.i32(), error: r.i16(), timestamp: r.i64(), offset: r.i64() };
    });
    assert.deepEqual(listed, { index: 0, error: -1, timestamp: -1, offset: -1 });
    // The same connection's known levels still read.
    assert.equal((await fetchBatches(h, topic, 0, { isolationLevel: 1 })).length, 1);
  });

  test("compressed batches stay compressed on disk; fetches return them compressed; NATS consumers get every record", async () => {
    const topic = "batches-gzip";
    await createTopic(topic);
    const value = "nagare ".repeat(64 * 1024); // 448 KiB, compresses to about 1 KiB
    for (let i = 0; i < 10; i++) {
      await produce(topic, [{ key: `k${i}`, value: `${i}:${value}` }, { value: `${i}:second` }], { compression: CompressionTypes.GZIP });
    }
    const stream = streamNameOf(topic);
    const onDisk = segmentBytes(h.storeDir, stream);
    assert.ok(onDisk < 200 * 1024, `ten batches of ${Math.round((value.length * 10) / 1024)} KiB of records take ${onDisk} bytes on disk`);
    const batches = await fetchBatches(h, topic, 0);
    assert.equal(batches.length, 10);
    for (const b of batches) {
      assert.equal(b.attributes & 0x07, 1, "gzip, as produced");
      assert.equal(b.count, 2);
    }
    const got = await consumeAll(topic, 20);
    assert.equal(got.length, 20);
    assert.equal(got[18].value?.toString(), `9:${value}`);
    assert.equal(got[19].value?.toString(), "9:second");

    // A JetStream consumer reads the records one by one.
    const js = jetstream(h.nc);
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(stream, { durable_name: "reader", ack_policy: "explicit" });
    const consumer = await js.consumers.get(stream, "reader");
    const seen: string[] = [];
    while (seen.length < 20) {
      const batch = await consumer.fetch({ max_messages: 20 - seen.length, expires: 5000 });
      for await (const m of batch) {
        seen.push(`${m.seq}:${m.data.length === value.length + 2 ? "long" : m.string()}:${m.headers?.get("Nats-Key") ?? ""}`);
        m.ack();
      }
    }
    assert.deepEqual(seen.slice(0, 4), ["1:long:k0", "2:0:second:", "3:long:k1", "4:1:second:"]);
    assert.equal(seen.length, 20);
  });

  test("a record deleted from inside a stored batch is gone for Kafka readers too; the rest are read", async () => {
    const topic = "batches-delete";
    await createTopic(topic);
    await produce(topic, [{ value: "one" }, { value: "two" }, { value: "three" }]);
    const jsm = await jetstreamManager(h.nc);
    const stream = streamNameOf(topic);
    assert.equal(await jsm.streams.deleteMessage(stream, 2), true);
    const readAll = async (): Promise<string[]> => {
      const k = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o:%s\n"]);
      assert.equal(k.code, 0, k.stderr);
      return k.stdout.split("\n").filter((l) => l !== "");
    };
    assert.deepEqual(await readAll(), ["0:one", "2:three"]);
    assert.equal(await jsm.streams.getMessage(stream, { seq: 2 }), null);
    await h.restart();
    assert.deepEqual(await readAll(), ["0:one", "2:three"]);
  });

  test("DeleteRecords inside a batch leaves the rest of it as produced (its timestamps, producer id and sequence), as Kafka does, across a restart", async () => {
    const topic = "batches-front";
    await createTopic(topic);
    const stamp = 1_600_000_000_000;
    await produce(topic, Array.from({ length: 5 }, (_, i) => ({ value: `r${i}`, timestamp: String(stamp + i) })), { idempotent: true });
    await deleteRecords(topic, 2);
    const check = async (): Promise<void> => {
      // The batch comes whole, as Kafka sends it: the client skips the records below the offset it asked for.
      const [batch, ...more] = await fetchBatches(h, topic, 2);
      assert.deepEqual(more, []);
      assert.deepEqual([batch.baseOffset, batch.count, batch.baseSequence, batch.maxTimestamp], [0, 5, 0, stamp + 4]);
      assert.ok(batch.producerId >= 0, "the producer id is kept");
      const k = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o:%T:%s\n"]);
      assert.equal(k.code, 0, k.stderr);
      assert.deepEqual(
        k.stdout.split("\n").filter((l) => l !== ""),
        [2, 3, 4].map((i) => `${i}:${stamp + i}:r${i}`),
      );
      const got = await consumeAll(topic, 3);
      assert.deepEqual(
        got.map((m) => [m.offset, m.timestamp, m.value?.toString()]),
        [2, 3, 4].map((i) => [String(i), String(stamp + i), `r${i}`]),
      );
      const q = await kcat(["-b", h.broker, "-Q", "-t", `${topic}:0:${stamp}`]);
      assert.match(q.stdout, /offset 2\b/);
    };
    await check();
    await h.restart();
    await check();
  });

  test("a memory stream keeps Kafka batches whole too", async () => {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "MEMTOPIC", subjects: ["memtopic"], storage: "memory" as never });
    await produce("MEMTOPIC", [{ key: "a", value: "1" }, { key: null, value: null }, { value: "3" }], { compression: CompressionTypes.GZIP });
    const batches = await fetchBatches(h, "MEMTOPIC", 0);
    assert.deepEqual(
      batches.map((b) => [b.baseOffset, b.count, b.attributes & 0x07]),
      [[0, 3, 1]],
    );
    const got = await consumeAll("MEMTOPIC", 3);
    assert.deepEqual(
      got.map((m) => [m.key?.toString() ?? null, m.value?.toString() ?? null]),
      [
        ["a", "1"],
        [null, null],
        [null, "3"],
      ],
    );
    const second = (await jsm.streams.getMessage("MEMTOPIC", { seq: 2 }))!;
    assert.equal(second.header?.get("Kafka-Value"), "null");
    assert.equal(second.subject, "memtopic");
  });
});
