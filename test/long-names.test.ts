/**
 * Names as long as clients may make them: stream and consumer names up to
 * 255 bytes (nats-server's limit, in bytes: 85 CJK characters fit, 86 do
 * not), Kafka group ids of any length (Kafka sets none). Each is kept in a
 * file or directory named after it; a name whose escaped form does not fit
 * a file name (255 bytes, with room for what is added to it) is stored under
 * its hash instead. Before, a 250-character stream could not be deleted
 * (`.removing-` made its name too long), a CJK stream name of 85 characters
 * could not be created, and a group with a long id never kept an offset
 * (every commit NOT_COORDINATOR, KafkaJS reading the same records again and
 * again). The answers for names over the limit are nats-server 2.9.10's.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { api, startJs } from "./helpers/js.js";
import { storedName } from "../src/util/persist.js";

const { Kafka, logLevel } = kafkajs;

test("a name keeps the file name it had when it fits, else its hash, which no escaped name can be", () => {
  assert.equal(storedName("ORDERS"), "ORDERS");
  assert.equal(storedName("a b/c"), "a%20b%2Fc");
  assert.equal(storedName("S".repeat(255)), "S".repeat(255));
  assert.equal(storedName("S".repeat(250), 9), storedName("S".repeat(250), 9));
  assert.match(storedName("S".repeat(250), 9), /^%~[0-9a-f]{64}$/);
  assert.match(storedName("统".repeat(85)), /^%~[0-9a-f]{64}$/);
  assert.notEqual(storedName("S".repeat(250), 9), storedName("T".repeat(250), 9));
  // An escaped name never starts with `%~`: a name spelling a hash is escaped, not taken for one.
  const hashed = storedName("S".repeat(250), 9);
  assert.notEqual(storedName(hashed), hashed);
});

test("streams and consumers named up to 255 bytes are made, kept across a restart and deleted; longer ones refused as nats-server refuses them", async (t) => {
  const h = await startJs();
  t.after(() => h.close());
  const long = ["S".repeat(255), "统".repeat(85)];
  const consumers = ["C".repeat(255), "统".repeat(85)];
  for (const [i, name] of long.entries()) {
    const made = await api(h.nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: [`long.${i}`] });
    assert.equal(made.error, undefined, JSON.stringify(made.error));
    assert.deepEqual(await api(h.nc, `long.${i}`, "x"), { stream: name, seq: 1 });
    for (const c of consumers) {
      const r = await api(h.nc, `$JS.API.CONSUMER.CREATE.${name}.${c}`, { stream_name: name, config: { name: c, durable_name: c, ack_policy: "explicit" } });
      assert.equal(r.error, undefined, JSON.stringify(r.error));
    }
  }
  for (const [name, want] of [
    ["T".repeat(256), "stream name is too long, maximum allowed is 255"],
    ["统".repeat(86), "stream name is too long, maximum allowed is 255"],
  ]) {
    assert.deepEqual((await api(h.nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: ["refused"] })).error, { code: 500, err_code: 10052, description: want });
  }
  for (const c of ["D".repeat(256), "统".repeat(86)]) {
    const r = await api(h.nc, `$JS.API.CONSUMER.CREATE.${long[0]}.${c}`, { stream_name: long[0], config: { name: c, durable_name: c, ack_policy: "explicit" } });
    assert.deepEqual(r.error, { code: 400, err_code: 10102, description: "consumer name is too long, maximum allowed is 255" });
  }

  await h.restart();
  for (const name of long) {
    const info = (await api(h.nc, `$JS.API.STREAM.INFO.${name}`)) as { state?: { messages: number; consumer_count: number } };
    assert.deepEqual([info.state?.messages, info.state?.consumer_count], [1, 2], `stream ${name.slice(0, 3)}... after the restart`);
  }
  for (const name of long) {
    for (const c of consumers) assert.equal((await api(h.nc, `$JS.API.CONSUMER.DELETE.${name}.${c}`)).success, true);
    assert.equal((await api(h.nc, `$JS.API.STREAM.DELETE.${name}`)).success, true, `deleting stream ${name.slice(0, 3)}...`);
  }
  await h.restart();
  assert.deepEqual((await api(h.nc, "$JS.API.STREAM.NAMES")).total, 0);
  assert.deepEqual(readdirSync(join(h.storeDir, "streams")), []);
});

test("Kafka groups with ids of any length commit offsets, which a restart keeps", { timeout: 120_000 }, async (t) => {
  const h = await startJs({ server: { kafka: { port: 0, initialRebalanceDelayMs: 0 } } });
  t.after(() => h.close());
  const kafka = () => new Kafka({ clientId: "long-names", brokers: [`127.0.0.1:${h.srv.kafkaPort}`], logLevel: logLevel.NOTHING });
  const admin = kafka().admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic: "long-groups", numPartitions: 1 }] });
  const producer = kafka().producer();
  await producer.connect();
  await producer.send({ topic: "long-groups", messages: [{ value: "a" }, { value: "b" }, { value: "c" }] });
  await producer.disconnect();
  const groups = ["g".repeat(300), "统计-".repeat(20)];
  for (const groupId of groups) {
    const consumer = kafka().consumer({ groupId });
    await consumer.connect();
    await consumer.subscribe({ topic: "long-groups", fromBeginning: true });
    let seen = 0;
    const done = new Promise<void>((resolve) => {
      void consumer.run({
        autoCommit: false,
        eachMessage: async ({ message }) => {
          await consumer.commitOffsets([{ topic: "long-groups", partition: 0, offset: (BigInt(message.offset) + 1n).toString() }]);
          if (++seen === 3) resolve();
        },
      });
    });
    await done;
    await consumer.disconnect();
  }
  await admin.disconnect();
  await h.restart({ keepKafkaPort: true });
  const again = kafka().admin();
  await again.connect();
  t.after(() => again.disconnect());
  for (const groupId of groups) {
    const [offsets] = await again.fetchOffsets({ groupId, topics: ["long-groups"] });
    assert.equal(offsets.partitions[0].offset, "3", `group ${groupId.slice(0, 6)}...`);
  }
});

test("a transaction into a topic of the longest name Kafka allows (249 characters) commits, and is read committed after a restart", { timeout: 120_000 }, async (t) => {
  const h = await startJs({ server: { kafka: { port: 0, initialRebalanceDelayMs: 0 } } });
  t.after(() => h.close());
  const kafka = () => new Kafka({ clientId: "long-names", brokers: [`127.0.0.1:${h.srv.kafkaPort}`], logLevel: logLevel.NOTHING });
  const topic = "t".repeat(249);
  const admin = kafka().admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
  await admin.disconnect();
  const producer = kafka().producer({ transactionalId: "long-topic-txn", idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const txn = await producer.transaction();
  await txn.send({ topic, messages: [{ value: "committed" }] });
  await txn.commit();
  await producer.disconnect();
  await h.restart({ keepKafkaPort: true });
  const consumer = kafka().consumer({ groupId: "long-topic-reader", readUncommitted: false });
  await consumer.connect();
  t.after(() => consumer.disconnect());
  await consumer.subscribe({ topic, fromBeginning: true });
  const value = await new Promise<string>((resolve) => {
    void consumer.run({ eachMessage: async ({ message }) => resolve(message.value?.toString() ?? "null") });
  });
  assert.equal(value, "committed");
});

test("a stream stored under its hash that cannot be read back keeps its files: a create of its name is refused, as for any name", async (t) => {
  const h = await startJs();
  t.after(() => h.close());
  const name = "统".repeat(85);
  assert.equal((await api(h.nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: ["hashed"] })).error, undefined);
  assert.deepEqual(await api(h.nc, "hashed", "kept"), { stream: name, seq: 1 });
  const dir = join(h.storeDir, "streams", storedName(name));
  await h.restart({ whileStopped: () => writeFileSync(join(dir, "meta.json"), "{ torn") });
  const made = (await api(h.nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: ["hashed"] })) as { error?: { code: number; err_code: number; description: string } };
  assert.deepEqual([made.error?.code, made.error?.err_code], [503, 10077], JSON.stringify(made));
  assert.match(String(made.error?.description), /exists on disk but could not be restored/);
  assert.equal(readFileSync(join(dir, "meta.json"), "utf8"), "{ torn", "its files left as they were");
});
