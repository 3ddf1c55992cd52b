/**
 * Kafka log compaction (cleanup.policy=compact) through real clients: each
 * key's newest record stays at its offset, older ones go, tombstones (null
 * values) stay delete.retention.ms after compaction first passed them and
 * then go, records go one by one out of batches of many keys (what stays
 * keeps the batch's header and the producer's timestamps), records of
 * aborted transactions never stand for their key and stay hidden across a
 * restart, a commit marker goes once its transaction has no record left,
 * an idempotent producer's newest batch stays so that it goes on after a
 * restart, the log's start
 * offset never moves, and a record without a key is refused as Kafka
 * refuses it. kcat, KafkaJS and confluent-kafka read the compacted
 * partitions.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs, { type Producer } from "kafkajs";
import { createTopic, kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntilAsync } from "./helpers/clients.js";
import { limitsFrom } from "../src/protocols/kafka/configs.js";

const { ConfigResourceTypes, CompressionTypes } = kafkajs;

type Message = { key: string; value: string | null; timestamp?: string };

/** Sends each message as a batch of its own (a batch goes whole or not at all). */
async function sendEach(p: Producer, topic: string, messages: Message[], compression = CompressionTypes.None): Promise<void> {
  for (const m of messages) await p.send({ topic, compression, messages: [m] });
}

/** Every record of partition 0 as kcat reads it (read_uncommitted unless told): `offset key=value`, NULL for a null key or value. */
async function records(broker: string, topic: string, isolation = "read_uncommitted"): Promise<string[]> {
  const r = await kcat(["-b", broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-Z", "-X", `isolation.level=${isolation}`, "-f", "%o %k=%s\n"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split("\n").filter((l) => l !== "");
}

describe("Kafka log compaction", () => {
  let h: KafkaHarness;
  const producers: Producer[] = [];

  const producer = async (opts: Parameters<ReturnType<KafkaHarness["kafka"]>["producer"]>[0] = {}): Promise<Producer> => {
    const p = h.kafka().producer(opts);
    await p.connect();
    producers.push(p);
    return p;
  };

  const alter = async (topic: string, entries: Array<{ name: string; value: string }>): Promise<void> => {
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: entries }] });
    } finally {
      await admin.disconnect();
    }
  };

  /** Runs cleaner rounds until `check` holds (each round looks at every compacted partition once). */
  const compactedUntil = (check: () => Promise<boolean>, what: string): Promise<void> =>
    waitUntilAsync(async () => {
      await h.srv.kafka!.cleaner.round();
      return check();
    }, what);

  /** Runs cleaner rounds until kcat reads `topic` as `expected` (its records joined by "|"). */
  const compactedTo = (topic: string, expected: string, what: string): Promise<void> =>
    compactedUntil(async () => (await records(h.broker, topic)).join("|") === expected, what);

  /** Passes made so far, then one more round, which makes a pass wherever one is due: whether one was. */
  const roundPassed = async (): Promise<boolean> => {
    const before = h.srv.kafka!.cleaner.counts.passes;
    await h.srv.kafka!.cleaner.round();
    await h.srv.kafka!.cleaner.round();
    return h.srv.kafka!.cleaner.counts.passes > before;
  };

  /** A compacted topic of one partition, with `configs` besides cleanup.policy=compact. */
  const createCompacted = (topic: string, configs: Record<string, string> = {}): Promise<void> =>
    createTopic(h, topic, 1, [{ name: "cleanup.policy", value: "compact" }, ...Object.entries(configs).map(([name, value]) => ({ name, value }))]);

  before(async () => {
    // Rounds are driven by the tests (cleaner.round()): the timer's would race their counts. The first test has its own.
    h = await startKafka({ logCleanerBackoffMs: 3_600_000 });
  });
  after(async () => {
    for (const p of producers) await p.disconnect().catch(() => undefined);
    await h.close();
  });

  test("each key's newest record stays at its offset; kcat, KafkaJS and confluent-kafka read what is left", async () => {
    const own = await startKafka({ logCleanerBackoffMs: 100 });
    try {
      await compactedByTimer(own);
    } finally {
      await own.close();
    }
  });

  async function compactedByTimer(h: KafkaHarness): Promise<void> {
    const topic = "compact.basic";
    // The timer's passes may fall between any two sends: any record new since the last makes the next one due (under the
    // default ratio, 0.5, one record after a pass over six would wait for more).
    await createTopic(h, topic, 1, [
      { name: "cleanup.policy", value: "compact" },
      { name: "min.cleanable.dirty.ratio", value: "0.01" },
    ]);
    const p = h.kafka().producer();
    await p.connect();
    producers.push(p);
    // gzip: batches kept whole as the producer compressed them go whole.
    await sendEach(
      p,
      topic,
      [
        { key: "k0", value: "first" },
        { key: "k1", value: "a" },
        { key: "k2", value: "b" },
        { key: "k1", value: "c" },
        { key: "k3", value: "d" },
        { key: "k2", value: null },
        { key: "k1", value: "e" },
      ],
      CompressionTypes.GZIP,
    );
    const expected = ["0 k0=first", "4 k3=d", "5 k2=NULL", "6 k1=e"];
    // The cleaner's own timer (log_cleaner_backoff 100ms) compacts it.
    await waitUntilAsync(async () => (await records(h.broker, topic)).join("|") === expected.join("|"), "compaction by the cleaner's timer", 20_000);

    // KafkaJS: the tombstone's value is null, offsets as produced.
    const consumer = h.kafka().consumer({ groupId: "compact-basic", maxWaitTimeInMs: 100 });
    const seen: string[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      let done!: () => void;
      const all = new Promise<void>((resolve) => (done = resolve));
      await consumer.run({
        eachMessage: async ({ message }) => {
          seen.push(`${message.offset} ${String(message.key)}=${message.value === null ? "NULL" : String(message.value)}`);
          if (message.offset === "6") done();
        },
      });
      await all;
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual(seen, expected);

    const py = await python(`
import json
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "compact-py", "enable.auto.commit": False, "auto.offset.reset": "earliest"})
c.assign([TopicPartition("${topic}", 0, 0)])
out = []
while len(out) < 4:
    m = c.poll(10)
    if m is None: break
    if m.error(): raise Exception(m.error())
    out.append([m.offset(), m.key().decode(), None if m.value() is None else m.value().decode()])
low, high = c.get_watermark_offsets(TopicPartition("${topic}", 0))
c.close()
print(json.dumps({"records": out, "low": low, "high": high}))
`);
    assert.equal(py.code, 0, py.stderr);
    assert.deepEqual(JSON.parse(py.stdout), {
      records: [[0, "k0", "first"], [4, "k3", "d"], [5, "k2", null], [6, "k1", "e"]],
      // Compaction never moves the log's start: offset 0 stays the earliest, as in Kafka.
      low: 0,
      high: 7,
    });
    await p.disconnect();
  }

  test("a tombstone goes delete.retention.ms after compaction first passed it; a record without a key stays", async () => {
    const topic = "compact.tombstones";
    // Any new record makes a pass due (min.cleanable.dirty.ratio 0.01, where the default 0.5 would wait for as many as are there).
    await createCompacted(topic, { "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    await sendEach(p, topic, [
      { key: "k0", value: "first" },
      { key: "k1", value: "a" },
      { key: "k1", value: null },
      { key: "k2", value: "b" },
    ]);
    await compactedTo(topic, "0 k0=first|2 k1=NULL|3 k2=b", "k1's old value removed");
    // A day's retention (the default): the tombstone stays, pass after pass.
    await p.send({ topic, messages: [{ key: "k2", value: "c" }] });
    await compactedTo(topic, "0 k0=first|2 k1=NULL|4 k2=c", "k2's old value removed");
    // With a retention already run out since that first pass: the tombstone goes at the next round, nothing else (the
    // default dirty ratio, back with AlterConfigs, would make no pass for what is new: the tombstone's coming due does).
    await alter(topic, [{ name: "cleanup.policy", value: "compact" }, { name: "delete.retention.ms", value: "0" }]);
    await compactedTo(topic, "0 k0=first|4 k2=c", "the tombstone removed");
    assert.ok(!(await roundPassed()), "nothing more is due: no pass");
  });

  test("the first record stays even when superseded, and its key's tombstone with it; a JetStream publish without a key stays", async () => {
    const topic = "compact.front";
    await createCompacted(topic, { "delete.retention.ms": "0", "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    await sendEach(p, topic, [
      { key: "k1", value: "a" },
      { key: "k1", value: "b" },
      { key: "k1", value: null },
    ]);
    await compactedTo(topic, "0 k1=a|2 k1=NULL", "the middle value removed");
    // Were the tombstone removed, a reader from the start would see k1=a and nothing after it: the key back from the dead.
    await h.nc.publish(topic, new TextEncoder().encode("from nats"));
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 3, "the NATS message stored");
    assert.ok(await roundPassed(), "the new record makes a pass due");
    assert.deepEqual(await records(h.broker, topic), ["0 k1=a", "2 k1=NULL", "3 NULL=from nats"]);
  });

  test("the keys passes keep between them (a superseded first record's) are bounded over every partition; compaction still holds", async () => {
    const cleaner = h.srv.kafka!.cleaner;
    await cleaner.round();
    const held = cleaner.counts.keptKeys;
    // Room for one more key: of two partitions whose first record is superseded, only one keeps its key.
    cleaner.keptKeysBudget = held + 1;
    try {
      const p = await producer();
      for (const topic of ["compact.kept.a", "compact.kept.b"]) {
        await createCompacted(topic, { "delete.retention.ms": "0", "min.cleanable.dirty.ratio": "0.01" });
        await sendEach(p, topic, [
          { key: "k1", value: "a" },
          { key: "k1", value: "b" },
          { key: "k1", value: null },
        ]);
        await compactedTo(topic, "0 k1=a|2 k1=NULL", `${topic}: the middle value removed`);
      }
      assert.equal(cleaner.counts.keptKeys, held + 1, "one partition keeps its first record's key; the other none");
      await cleaner.round();
      assert.equal(cleaner.counts.keptKeys, held + 1, "as counted afresh");
      for (const topic of ["compact.kept.a", "compact.kept.b"]) assert.deepEqual(await records(h.broker, topic), ["0 k1=a", "2 k1=NULL"], topic);
    } finally {
      cleaner.keptKeysBudget = 1_000_000;
    }
    // With room, the other keeps its key too once a pass maps its whole log again (a pass that kept too few does so eight
    // rounds of log_cleaner_backoff later: the cleaner's clock moved on past that), due at a new record.
    cleaner.clock = () => Date.now() + 9 * 3_600_000;
    try {
      await sendEach(await producer(), "compact.kept.b", [{ key: "k2", value: "c" }]);
      await compactedUntil(async () => cleaner.counts.keptKeys === held + 2, "both partitions keep their key");
    } finally {
      cleaner.clock = Date.now;
    }
  });

  test("the last record stays, an expired tombstone too, so that readers reach the high watermark; it goes once it is not the last", async () => {
    const topic = "compact.last";
    await createCompacted(topic, { "delete.retention.ms": "0", "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    await sendEach(p, topic, [
      { key: "k0", value: "first" },
      { key: "k1", value: "a" },
      { key: "k1", value: null },
    ]);
    // kcat -e ends at the high watermark: it would wait for ever at offset 2 were the tombstone there gone.
    await compactedTo(topic, "0 k0=first|2 k1=NULL", "k1's value removed");
    await roundPassed();
    assert.deepEqual(await records(h.broker, topic), ["0 k0=first", "2 k1=NULL"], "the expired tombstone, last, stays");
    await sendEach(p, topic, [{ key: "k2", value: "b" }]);
    await compactedTo(topic, "0 k0=first|3 k2=b", "the tombstone gone once a record follows it");
  });

  test("a tombstone goes on time while passes come faster than its retention can be told apart in a fixed number of them", async () => {
    const topic = "compact.busy";
    await createCompacted(topic, { "delete.retention.ms": "3000", "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    await sendEach(p, topic, [
      { key: "k0", value: "first" },
      { key: "gone", value: "x" },
      { key: "gone", value: null },
    ]);
    // A pass every round (a new record of a hot key each time), 20 ms apart by the cleaner's clock: 64 of them span 1.28 s,
    // so a fixed number of passes remembered would forget when the tombstone was first passed, and never let it go.
    const cleaner = h.srv.kafka!.cleaner;
    let now = Date.now();
    cleaner.clock = () => now;
    try {
      let n = 0;
      let passes = 0;
      await waitUntilAsync(async () => {
        for (let i = 0; i < 16; i++) {
          await p.send({ topic, messages: [{ key: "hot", value: String(n++) }] });
          now += 20;
          passes++;
          await cleaner.round();
        }
        return !(await records(h.broker, topic)).some((r) => r.startsWith("2 "));
      }, "the tombstone removed within its retention and a few passes", 60_000);
      assert.ok(passes * 20 >= 3000 && passes * 20 <= 3000 + 2 * 16 * 20 + 3000 / 32, `removed after ${passes * 20} ms of the cleaner's clock`);
    } finally {
      cleaner.clock = Date.now;
    }
  });

  /** A value kept as an idempotent producer's newest batch, deleted: the tombstone stays until a retention after the value went. */
  async function keptThenReleased(topic: string): Promise<void> {
    await createCompacted(topic, { "delete.retention.ms": "1000", "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    const idempotent = await producer({ idempotent: true, maxInFlightRequests: 1 });
    await p.send({ topic, messages: [{ key: "f", value: "f" }] });
    await idempotent.send({ topic, messages: [{ key: "a", value: "1" }] });
    await p.send({ topic, messages: [{ key: "b", value: "1" }] });
    await sendEach(p, topic, [
      { key: "a", value: null },
      { key: "c", value: "1" },
    ]);
    const cleaner = h.srv.kafka!.cleaner;
    let now = Date.now();
    cleaner.clock = () => now;
    try {
      await waitUntilAsync(async () => (await records(h.broker, topic)).length === 5, "every record stored");
      assert.ok(await roundPassed(), "a pass");
      now += 60_000;
      await sendEach(p, topic, [{ key: "d", value: "1" }]);
      assert.ok(await roundPassed(), "a pass a minute later by the cleaner's clock, past the tombstone's retention");
      // a=1 stays as the idempotent producer's newest batch: were the tombstone gone, a reader from the start would end with a=1.
      assert.deepEqual(await records(h.broker, topic), ["0 f=f", "1 a=1", "2 b=1", "3 a=NULL", "4 c=1", "5 d=1"]);
      await idempotent.send({ topic, messages: [{ key: "b", value: "2" }] });
      now += 60_000;
      // a=1 goes; the tombstone stays its retention from then: a reader may have read a=1 just before.
      await compactedTo(topic, "0 f=f|3 a=NULL|4 c=1|5 d=1|6 b=2", "a=1 gone");
      now += 60_000;
      await compactedTo(topic, "0 f=f|4 c=1|5 d=1|6 b=2", "the tombstone gone a retention later");
    } finally {
      cleaner.clock = Date.now;
    }
  }

  test("a tombstone stays while an older record of its key does: a value kept as a producer's newest batch never outlives its delete", async () => {
    await keptThenReleased("compact.pinned");
  });

  test("the times keys were released at are bounded over every partition: past the bound a partition keeps one for all its keys, its tombstones no shorter", async () => {
    const cleaner = h.srv.kafka!.cleaner;
    await cleaner.round();
    const tables = cleaner.counts.releaseTables;
    cleaner.releaseTablesBudget = tables;
    try {
      await keptThenReleased("compact.pinned.bound");
      assert.equal(cleaner.counts.releaseTables, tables, "no table of 8,192 times more");
    } finally {
      cleaner.releaseTablesBudget = 1024;
    }
  });

  test("a pass held back below what was mapped (min.compaction.lag.ms raised) forgets no kept key; a JetStream delete of a key's newest neither", async () => {
    const cleaner = h.srv.kafka!.cleaner;
    let now = Date.now();
    cleaner.clock = () => now;
    const configs = { "delete.retention.ms": "1000", "min.cleanable.dirty.ratio": "0.01" };
    try {
      const topic = "compact.lagged";
      await createCompacted(topic, configs);
      const p = await producer();
      // a=1 is kept as the idempotent producer's newest batch, in each topic.
      const idempotent = await producer({ idempotent: true, maxInFlightRequests: 1 });
      await p.send({ topic, messages: [{ key: "f", value: "f" }] });
      await idempotent.send({ topic, messages: [{ key: "a", value: "1" }] });
      await p.send({ topic, messages: [{ key: "b", value: "1" }] });
      await sendEach(p, topic, [
        { key: "a", value: null },
        { key: "c", value: "1" },
        { key: "c", value: null },
        { key: "z", value: "0" },
      ]);
      await waitUntilAsync(async () => (await records(h.broker, topic)).length === 7, "every record stored");
      assert.ok(await roundPassed(), "a pass");
      // An hour's lag: nothing may be touched, and the c tombstone coming due must not make a pass that judges nothing.
      await alter(topic, [{ name: "cleanup.policy", value: "compact" }, ...Object.entries(configs).map(([name, value]) => ({ name, value })), { name: "min.compaction.lag.ms", value: "3600000" }]);
      now += 60_000;
      await roundPassed();
      await alter(topic, [{ name: "cleanup.policy", value: "compact" }, ...Object.entries(configs).map(([name, value]) => ({ name, value }))]);
      await sendEach(p, topic, [{ key: "y", value: "0" }]);
      now += 60_000;
      await compactedUntil(async () => !(await records(h.broker, topic)).includes("5 c=NULL"), "the c tombstone gone");
      // a=1 is still kept: its tombstone stays.
      assert.deepEqual(await records(h.broker, topic), ["0 f=f", "1 a=1", "2 b=1", "3 a=NULL", "6 z=0", "7 y=0"]);

      // a's newest deleted over JetStream before a pass: the tombstone is a's newest again, and stays while a=1 does.
      const deleted = "compact.deleted";
      await createCompacted(deleted, configs);
      await p.send({ topic: deleted, messages: [{ key: "f", value: "f" }] });
      await idempotent.send({ topic: deleted, messages: [{ key: "a", value: "1" }] });
      await p.send({ topic: deleted, messages: [{ key: "b", value: "1" }] });
      await sendEach(p, deleted, [
        { key: "a", value: null },
        { key: "a", value: "2" },
        { key: "z", value: "0" },
      ]);
      await waitUntilAsync(async () => (await records(h.broker, deleted)).length === 6, "every record stored");
      const stream = [...h.srv.jetstream!.streams.values()].find((st) => st.config.name.includes("deleted"))!;
      assert.ok(await stream.deleteMessage(5), "a=2 deleted");
      assert.ok(await roundPassed(), "a pass");
      now += 60_000;
      await sendEach(p, deleted, [{ key: "y", value: "0" }]);
      assert.ok(await roundPassed(), "a pass past the tombstone's retention");
      assert.deepEqual(await records(h.broker, deleted), ["0 f=f", "1 a=1", "2 b=1", "3 a=NULL", "5 z=0", "6 y=0"]);
    } finally {
      cleaner.clock = Date.now;
    }
  });

  test("records of an aborted transaction never stand for their key, and stay hidden across a restart; markers stay", async () => {
    const topic = "compact.txn";
    await createCompacted(topic);
    await (await producer()).send({ topic, messages: [{ key: "k0", value: "first" }] });
    const t = await producer({ transactionalId: "compact-txn", idempotent: true, maxInFlightRequests: 1 });
    const good = await t.transaction();
    await good.send({ topic, messages: [{ key: "k1", value: "good" }] });
    await good.commit();
    const bad = await t.transaction();
    await bad.send({ topic, messages: [{ key: "k1", value: "bad1" }, { key: "k2", value: "bad2" }] });
    await bad.abort();
    await (await producer()).send({ topic, messages: [{ key: "k2", value: "plain" }] });
    // Offsets: 0 k0, 1 good, 2 its commit marker, 3-4 bad (one batch), 5 its abort marker, 6 k2=plain. Were "bad1" k1's
    // newest, "good" would go; were bad2 retired as superseded by k2=plain, bad1 would be left of its batch, read as a
    // plain record once the transaction index reads the log again.
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 5, "every record stored");
    assert.ok(await roundPassed(), "a pass");
    const committed = ["0 k0=first", "1 k1=good", "6 k2=plain"];
    assert.deepEqual(await records(h.broker, topic, "read_committed"), committed);
    assert.deepEqual(await records(h.broker, topic), ["0 k0=first", "1 k1=good", "3 k1=bad1", "4 k2=bad2", "6 k2=plain"], "the aborted batch stays whole, hidden");
    await t.disconnect();
    await h.restart({ keepKafkaPort: true });
    assert.deepEqual(await records(h.broker, topic, "read_committed"), committed, "still hidden once the log is read again");
  });

  test("a commit marker goes once none of its transaction's records is left and its retention has run out, unless it is its producer's newest; an abort's stays with its records", async () => {
    const topic = "compact_markers";
    await createCompacted(topic, { "delete.retention.ms": "60000" });
    const cleaner = h.srv.kafka!.cleaner;
    let now = Date.now();
    cleaner.clock = () => now;
    try {
      await (await producer()).send({ topic, messages: [{ key: "k0", value: "first" }] });
      const t = await producer({ transactionalId: "compact-markers", idempotent: true, maxInFlightRequests: 1 });
      for (const value of ["t1", "t2", "t3"]) {
        const txn = await t.transaction();
        await txn.send({ topic, messages: [{ key: "k1", value }] });
        await txn.commit();
      }
      const bad = await t.transaction();
      await bad.send({ topic, messages: [{ key: "k2", value: "aborted" }] });
      await bad.abort();
      const u = await producer({ transactionalId: "compact-markers-u", idempotent: true, maxInFlightRequests: 1 });
      const only = await u.transaction();
      await only.send({ topic, messages: [{ key: "k4", value: "u1" }] });
      await only.commit();
      // Sequences: 1 k0, 2 t1, 3 its commit, 4 t2, 5 its commit, 6 t3, 7 its commit, 8 k2=aborted, 9 its abort, 10 u1,
      // 11 its commit. Then more records than producer recovery reads back (PRODUCER_SCAN): markers among those stay.
      const filler = Array.from({ length: 10_001 }, (_, i) => `f${i % 100}:v${i}`).join("\n") + "\nk4:plain\n";
      const put = await kcat(["-b", h.broker, "-P", "-t", topic, "-p", "0", "-K", ":"], filler);
      assert.equal(put.code, 0, put.stderr);
      const log = h.srv.jetstream!.streams.get(topic)!.partitions[0];
      const last = 11 + 10_001 + 1;
      await waitUntilAsync(async () => log.state().lastSeq === last, "every record stored");
      assert.ok(await roundPassed(), "a first pass");
      // t1, t2 and u1 went in it; their markers stay until a pass finds nothing of their transactions left.
      assert.deepEqual(
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((seq) => log.has(seq)),
        [false, true, false, true, true, true, true, true, false, true],
      );
      now += 30_000;
      await cleaner.round();
      assert.deepEqual([3, 5].map((seq) => log.has(seq)), [true, true], "kept delete.retention.ms after a pass first passed them");
      now += 31_000;
      await compactedUntil(async () => !log.has(3) && !log.has(5), "the commit markers of t1 and t2 gone");
      assert.deepEqual([6, 7, 8, 9].map((seq) => log.has(seq)), [true, true, true, true], "t3 and its marker, the aborted record and its marker");
      assert.equal(log.has(11), true, "u's only marker: its producer's newest");
      const k12 = (lines: string[]): string[] => lines.filter((l) => / k[12]=/.test(l));
      assert.deepEqual(k12(await records(h.broker, topic, "read_committed")), ["5 k1=t3"]);
      await t.disconnect();
      await h.restart({ keepKafkaPort: true });
      // Read back from the log, nothing is an open transaction: a read_committed reader gets what comes after.
      await (await producer()).send({ topic, messages: [{ key: "k3", value: "after" }] });
      const after = await records(h.broker, topic, "read_committed");
      assert.deepEqual(k12(after), ["5 k1=t3"]);
      assert.equal(after[after.length - 1], `${last} k3=after`);
    } finally {
      cleaner.clock = Date.now;
    }
  });

  test("nothing from an open transaction's first record on is compacted until it ends", async () => {
    const topic = "compact.open";
    await createCompacted(topic);
    await sendEach(await producer(), topic, [
      { key: "k0", value: "first" },
      { key: "k1", value: "good" },
    ]);
    const t = await producer({ transactionalId: "compact-open", idempotent: true, maxInFlightRequests: 1 });
    const open = await t.transaction();
    await open.send({ topic, messages: [{ key: "k1", value: "pending" }] });
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 3, "the open transaction's record stored");
    assert.ok(await roundPassed(), "a pass over what is stable");
    assert.deepEqual(await records(h.broker, topic), ["0 k0=first", "1 k1=good", "2 k1=pending"], "k1's committed value stays while its newer one may yet be aborted");
    await open.commit();
    await compactedUntil(async () => (await records(h.broker, topic, "read_committed")).join("|") === "0 k0=first|2 k1=pending", "the old value removed once the new one is committed");
  });

  test("records go one by one out of a batch, and what stays keeps the producer's timestamps", async () => {
    const topic = "compact.batches";
    await createCompacted(topic, { "min.cleanable.dirty.ratio": "0.01" });
    const p = await producer();
    await p.send({ topic, messages: [{ key: "k0", value: "first", timestamp: "1000" }] });
    await p.send({ topic, messages: [{ key: "x", value: "1", timestamp: "2000" }, { key: "y", value: "1", timestamp: "3000" }] });
    await p.send({ topic, messages: [{ key: "x", value: "2", timestamp: "4000" }] });
    const withTimes = async (): Promise<string[]> => {
      const r = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %k=%s @%T\n"]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split("\n").filter((l) => l !== "");
    };
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 4, "every record stored");
    assert.ok(await roundPassed(), "a pass");
    // x=1 is superseded, y=1 is not: y=1 is read in what is left of their batch, with its own timestamp.
    assert.deepEqual(await withTimes(), ["0 k0=first @1000", "2 y=1 @3000", "3 x=2 @4000"]);
    await p.send({ topic, messages: [{ key: "y", value: "2", timestamp: "5000" }] });
    await compactedUntil(async () => (await records(h.broker, topic)).length === 3, "the batch gone once all of it is superseded");
    assert.deepEqual(await withTimes(), ["0 k0=first @1000", "3 x=2 @4000", "4 y=2 @5000"]);
  });

  test("batches of many keys shrink to each key's newest, the first batch too, compressed or in a committed transaction; kcat, KafkaJS and confluent-kafka read what is left with its timestamps, after a restart too", async () => {
    const topic = "compact_many";
    await createCompacted(topic, { "min.cleanable.dirty.ratio": "0.01" });
    const keys = 30;
    // 300 records in three batches, 10 records a key, each key's newest in the last: the first batch plain (it holds the
    // partition's first record), the second gzip, the third in a committed transaction. Timestamps as the producer gave.
    const batch = (from: number): Message[] => Array.from({ length: 100 }, (_, i) => ({ key: `k${(from + i) % keys}`, value: `v${from + i}`, timestamp: String(10_000 + from + i) }));
    const p = await producer();
    await p.send({ topic, messages: batch(0) });
    await p.send({ topic, compression: CompressionTypes.GZIP, messages: batch(100) });
    const t = await producer({ transactionalId: "compact-many", idempotent: true, maxInFlightRequests: 1 });
    const txn = await t.transaction();
    await txn.send({ topic, messages: batch(200) });
    await txn.commit();
    // Another transaction, so that the one above is not the producer's newest batch (which stays whole).
    const other = await t.transaction();
    await other.send({ topic, messages: [{ key: "other", value: "x", timestamp: "20000" }] });
    await other.commit();
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 301, "every record stored");
    assert.ok(await roundPassed(), "a pass");
    // The first record stays (the log's start); of the rest only each key's newest, in the transaction's batch (offsets
    // 200..299: 270..299 are the newest of k0..k29), whose marker (300) stays with them, and the other transaction's.
    const expected = ["0 k0=v0 @10000", ...Array.from({ length: keys }, (_, i) => `${270 + i} k${i}=v${270 + i} @${10_270 + i}`), "301 other=x @20000"];
    const withTimes = async (isolation: string): Promise<string[]> => {
      const r = await kcat(["-b", h.broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", `isolation.level=${isolation}`, "-f", "%o %k=%s @%T\n"]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split("\n").filter((l) => l !== "");
    };
    assert.deepEqual(await withTimes("read_uncommitted"), expected);
    assert.deepEqual(await withTimes("read_committed"), expected);
    const stream = h.srv.jetstream!.streams.get(topic)!;
    assert.equal(stream.partitions[0].state().messages, expected.length + 2, "what is read, and the commit markers");

    const consumer = h.kafka().consumer({ groupId: "compact-many", maxWaitTimeInMs: 100, readUncommitted: false });
    const seen: string[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      let done!: () => void;
      const last = new Promise<void>((resolve) => (done = resolve));
      await consumer.run({
        eachMessage: async ({ message }) => {
          seen.push(`${message.offset} ${String(message.key)}=${String(message.value)} @${message.timestamp}`);
          if (message.offset === "301") done();
        },
      });
      await last;
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual(seen, expected, "KafkaJS");

    await t.disconnect();
    await h.restart({ keepKafkaPort: true });
    // Read back from the log after the start: the cut transactional batch is no open transaction.
    assert.deepEqual(await withTimes("read_committed"), expected, "after a restart");
    const py = await python(`
import json
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "compact-many-py", "enable.auto.commit": False, "isolation.level": "read_committed"})
c.assign([TopicPartition("${topic}", 0, 0)])
out = []
while len(out) < ${expected.length}:
    m = c.poll(10)
    if m is None: break
    if m.error(): raise Exception(m.error())
    out.append("%d %s=%s @%d" % (m.offset(), m.key().decode(), m.value().decode(), m.timestamp()[1]))
c.close()
print(json.dumps(out))
`);
    assert.equal(py.code, 0, py.stderr);
    assert.deepEqual(JSON.parse(py.stdout), expected, "confluent-kafka");
    // ListOffsets by time finds records left in a cut batch by their own offsets (librdkafka's offsets_for_times).
    for (const [time, offset] of [
      [10_150, 270],
      [10_275, 275],
    ]) {
      const q = await kcat(["-b", h.broker, "-Q", "-t", `${topic}:0:${time}`]);
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, new RegExp(`\\[0\\] offset ${offset}\\b`), `for ${time}: ${q.stdout}`);
    }
  });

  test("an idempotent producer's newest batch stays, however superseded: after a restart it goes on where it was", async () => {
    const topic = "compact.producer";
    await createCompacted(topic);
    await (await producer()).send({ topic, messages: [{ key: "k0", value: "first" }] });
    const idempotent = await producer({ idempotent: true, maxInFlightRequests: 1 });
    await idempotent.send({ topic, messages: [{ key: "x", value: "1" }] });
    await idempotent.send({ topic, messages: [{ key: "y", value: "a" }, { key: "k1", value: "a" }] });
    await (await producer()).send({ topic, messages: [{ key: "k1", value: "b" }] });
    await waitUntilAsync(async () => (await records(h.broker, topic)).length === 5, "every record stored");
    assert.ok(await roundPassed(), "a pass");
    // k1=a is superseded but is in the producer's newest batch, which stays whole: were it gone, the producer's recovery
    // after the restart would find x=1 as its last batch and refuse its next one (OUT_OF_ORDER_SEQUENCE_NUMBER); were it
    // cut, a replica catching up would take its records without the header its state is read from.
    assert.deepEqual(await records(h.broker, topic), ["0 k0=first", "1 x=1", "2 y=a", "3 k1=a", "4 k1=b"]);
    await h.restart({ keepKafkaPort: true });
    await idempotent.send({ topic, messages: [{ key: "x", value: "2" }] });
    await compactedTo(topic, "0 k0=first|2 y=a|4 k1=b|5 x=2", "its older batches cut once it has a newer one");
  });

  test("DeleteRecords on a topic whose cleanup.policy lacks delete is refused POLICY_VIOLATION, as Kafka does", async () => {
    const topic = "compact.deleterecords";
    await createCompacted(topic);
    await sendEach(await producer(), topic, [
      { key: "a", value: "1" },
      { key: "b", value: "2" },
    ]);
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      assert.equal((await admin.fetchTopicOffsets(topic))[0].low, "0");
      await assert.rejects(admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "1" }] }), (err: Error) => {
        type Failed = { partitions?: Array<{ error?: { type?: string } }> };
        const e = err as Failed & { cause?: Failed; originalError?: Failed };
        const partitions = e.partitions ?? e.cause?.partitions ?? e.originalError?.partitions ?? [];
        assert.deepEqual(partitions.map((p) => p.error?.type), ["POLICY_VIOLATION"], String(err));
        return true;
      });
      assert.equal((await admin.fetchTopicOffsets(topic))[0].low, "0");
      await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "cleanup.policy", value: "compact,delete" }] }] });
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "1" }] });
      assert.equal((await admin.fetchTopicOffsets(topic))[0].low, "1");
    } finally {
      await admin.disconnect();
    }
  });

  test("a record without a key is refused as Kafka refuses it, with the record named; configs are checked as Kafka checks them", async () => {
    const topic = "compact.keys";
    await createTopic(h, topic, 1, [{ name: "cleanup.policy", value: "compact,delete" }]);
    const p = await producer();
    await assert.rejects(p.send({ topic, messages: [{ key: "k", value: "keyed" }, { value: "unkeyed" }] }), (err: Error & { type?: string }) => {
      assert.equal(err.type ?? (err as { cause?: { type?: string } }).cause?.type, "INVALID_RECORD", String(err));
      return true;
    });
    const kc = await kcat(["-b", h.broker, "-P", "-t", topic, "-p", "0", "-X", "message.send.max.retries=0"], "no key\n");
    assert.match(kc.stderr, /Broker failed to validate record/, "librdkafka's words for INVALID_RECORD");
    assert.deepEqual(await records(h.broker, topic), [], "nothing of a refused batch is stored");

    const admin = h.kafka().admin();
    await admin.connect();
    try {
      const describe = async (): Promise<Map<string, string>> => {
        const d = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
        return new Map(d.resources[0].configEntries.map((e) => [e.configName, e.configValue]));
      };
      let c = await describe();
      assert.deepEqual(
        ["cleanup.policy", "delete.retention.ms", "min.compaction.lag.ms", "max.compaction.lag.ms", "min.cleanable.dirty.ratio"].map((k) => c.get(k)),
        ["compact,delete", "86400000", "0", "9223372036854775807", "0.5"],
      );
      // Kafka's texts: a value not a number, a list's first unknown value.
      assert.deepEqual(limitsFrom(new Map([["delete.retention.ms", "abc"]])), { error: 40, message: "Invalid value abc for configuration delete.retention.ms: Not a number of type LONG" });
      assert.deepEqual(limitsFrom(new Map([["cleanup.policy", "compact, foo"]])), { error: 40, message: "Invalid value foo for configuration cleanup.policy: String must be one of: compact, delete" });
      for (const refused of [
        [{ name: "cleanup.policy", value: "compact,archive" }],
        [{ name: "min.cleanable.dirty.ratio", value: "1.5" }],
        [{ name: "min.cleanable.dirty.ratio", value: "half" }],
        [{ name: "delete.retention.ms", value: "-1" }],
        [{ name: "max.compaction.lag.ms", value: "0" }],
        [
          { name: "min.compaction.lag.ms", value: "60000" },
          { name: "max.compaction.lag.ms", value: "1000" },
        ],
      ]) {
        await assert.rejects(
          admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: refused[0].name === "cleanup.policy" ? refused : [{ name: "cleanup.policy", value: "compact" }, ...refused] }] }),
          (err: Error & { type?: string }) => err.type === "INVALID_CONFIG",
          JSON.stringify(refused),
        );
      }
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "cleanup.policy", value: "compact" }, { name: "min.cleanable.dirty.ratio", value: "0.1" }, { name: "min.compaction.lag.ms", value: "5000" }] }],
      });
      c = await describe();
      assert.deepEqual(["cleanup.policy", "min.cleanable.dirty.ratio", "min.compaction.lag.ms", "retention.ms"].map((k) => c.get(k)), ["compact", "0.1", "5000", "-1"]);
      // Back to delete: keyless records are taken again.
      await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "cleanup.policy", value: "delete" }] }] });
      await p.send({ topic, messages: [{ value: "unkeyed" }] });
    } finally {
      await admin.disconnect();
    }
  });

  test("the topics Kafka Streams makes are taken with the configs it gives them: changelogs, windowed changelogs, repartition topics", async () => {
    // Kafka Streams' InternalTopicConfig defaults, as its InternalTopicManager sends them in CreateTopics.
    const made: Record<string, Array<{ name: string; value: string }>> = {
      "app-store-changelog": [
        { name: "cleanup.policy", value: "compact" },
        { name: "message.timestamp.type", value: "CreateTime" },
      ],
      "app-window-changelog": [
        { name: "cleanup.policy", value: "compact,delete" },
        { name: "retention.ms", value: "86400000" },
      ],
      "app-agg-repartition": [
        { name: "cleanup.policy", value: "delete" },
        { name: "segment.bytes", value: "52428800" },
        { name: "segment.ms", value: "600000" },
        { name: "retention.ms", value: "-1" },
      ],
    };
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: Object.entries(made).map(([topic, configEntries]) => ({ topic, numPartitions: 2, configEntries })), waitForLeaders: true });
      const d = await admin.describeConfigs({ resources: Object.keys(made).map((name) => ({ type: ConfigResourceTypes.TOPIC, name })), includeSynonyms: false });
      for (const r of d.resources) {
        const shown = new Map(r.configEntries.map((e) => [e.configName, e.configValue]));
        for (const { name, value } of made[r.resourceName]) assert.equal(shown.get(name), value, `${r.resourceName} ${name}`);
      }
    } finally {
      await admin.disconnect();
    }
    // The windowed changelog is compacted and its retention applies: records older than a day would go.
    const windowed = [...h.srv.jetstream!.streams.values()].find((st) => st.config.name.includes("window"))!;
    assert.equal(windowed.config.max_age, 86_400_000 * 1_000_000);
  });

  test("min.compaction.lag.ms holds young records back; confluent-kafka creates a compacted topic and describes it", async () => {
    const topic = "compact.lag";
    const py = await python(`
import json
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
a = AdminClient({"bootstrap.servers": "${h.broker}"})
for f in a.create_topics([NewTopic("${topic}", 1, 1, config={"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"})]).values(): f.result()
r = ConfigResource("topic", "${topic}")
d = a.describe_configs([r])[r].result()
print(json.dumps({k: d[k].value for k in ["cleanup.policy", "min.compaction.lag.ms"]}))
`);
    assert.equal(py.code, 0, py.stderr);
    assert.deepEqual(JSON.parse(py.stdout), { "cleanup.policy": "compact", "min.compaction.lag.ms": "3600000" });
    const p = await producer();
    await sendEach(p, topic, [
      { key: "k", value: "a" },
      { key: "k", value: "b" },
      { key: "k", value: "c" },
    ]);
    await roundPassed();
    assert.deepEqual(await records(h.broker, topic), ["0 k=a", "1 k=b", "2 k=c"], "an hour's lag: nothing compacted yet");
    await alter(topic, [{ name: "cleanup.policy", value: "compact" }]);
    await compactedTo(topic, "0 k=a|2 k=c", "compacted once the lag is gone");
  });
});
