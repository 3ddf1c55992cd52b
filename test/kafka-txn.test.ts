/**
 * Kafka transactions with real clients: KafkaJS transactional producers
 * (commit, abort, offsets in a transaction, fencing, timeouts) read by
 * read_committed and read_uncommitted consumers (KafkaJS and kcat), and a
 * transaction left open by a restart.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { findFile } from "./helpers/damage.js";
import { jetstreamManager } from "@nats-io/jetstream";
import { createTopic as createKafkaTopic, kcat, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import type { FaultInjector } from "../src/store/file-log.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { ask, fetchFrame, fetchResult, flexibleBody, flexibleFrame, frame, produceResult, RawKafka, recordBatches, topicPartitionErrors } from "./helpers/kafka-raw.js";
import { Writer } from "../src/protocols/kafka/codec.js";
import { encodeBatch } from "../src/protocols/kafka/records.js";
import { parseStateFile } from "../src/util/persist.js";
import { offsetFetch } from "./helpers/kafka-group-requests.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

type Producer = ReturnType<InstanceType<typeof kafkajs.Kafka>["producer"]>;

/** The values of a whole topic, read by kcat (librdkafka) to the end of every partition. */
async function values(broker: string, topic: string, isolation: "read_committed" | "read_uncommitted"): Promise<string[]> {
  const r = await kcat(["-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", `isolation.level=${isolation}`, "-f", "%s\n"]);
  assert.equal(r.code, 0, `kcat -C failed: ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => l !== "");
}

/** InitProducerId v0 for a transactional id. */
function initProducerId(port: number, transactionalId: string, timeoutMs = 60_000): Promise<{ error: number; producerId: number; epoch: number }> {
  return ask(port, frame(22, 0, (w) => w.nullableString(transactionalId).i32(timeoutMs)), (r) => (r.i32(), { error: r.i16(), producerId: r.i64(), epoch: r.i16() }));
}

/** AddPartitionsToTxn v1 of one partition: its error code. */
function addPartition(port: number, txn: { id: string; producerId: number; epoch: number }, topic: string, partition: number): Promise<number> {
  const request = frame(24, 1, (w) => w.string(txn.id).i64(txn.producerId).i16(txn.epoch).arrayLength(1).string(topic).arrayLength(1).i32(partition));
  return ask(port, request, (r) => (r.i32(), topicPartitionErrors(r)[0].partitions[0][1]));
}

/** EndTxn v0. */
function endTxnFrame(txn: { id: string; producerId: number; epoch: number }, commit: boolean): Buffer {
  return frame(26, 0, (w) => w.string(txn.id).i64(txn.producerId).i16(txn.epoch).bool(commit));
}

function errorType(err: unknown): string {
  const e = err as { type?: string; originalError?: { type?: string }; cause?: { type?: string } };
  return e.type ?? e.originalError?.type ?? e.cause?.type ?? String(err);
}

describe("Kafka transactions", () => {
  let h: KafkaHarness;
  const producers: Producer[] = [];

  const transactional = async (transactionalId: string, transactionTimeout = 60_000): Promise<Producer> => {
    const p = h.kafka().producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, transactionTimeout });
    await p.connect();
    producers.push(p);
    return p;
  };

  /** A non-transactional producer, disconnected after the suite like the others. */
  const plainProducer = async (): Promise<Producer> => {
    const p = h.kafka().producer();
    await p.connect();
    producers.push(p);
    return p;
  };

  const createTopic = (topic: string, numPartitions = 1): Promise<void> => createKafkaTopic(h, topic, numPartitions);

  /** The values a read_committed KafkaJS consumer of a new group reads from the beginning of `topic`, once `last` is among them. */
  const readCommitted = async (groupId: string, topic: string, last: string[]): Promise<string[]> => {
    const seen: string[] = [];
    const consumer = h.kafka().consumer({ groupId, readUncommitted: false });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ eachMessage: async ({ message }) => void seen.push(message.value!.toString()) });
      await waitUntil(() => last.every((v) => seen.includes(v)), `${last.join(", ")} read`, 20_000);
    } finally {
      await consumer.disconnect();
    }
    return seen;
  };

  before(async () => {
    h = await startKafka();
  });
  after(async () => {
    for (const p of producers) await p.disconnect().catch(() => undefined);
    await h.close();
  });

  test("commit and abort: a read_committed KafkaJS consumer and kcat see only committed records; read_uncommitted sees all", async () => {
    const topic = "txn.basic";
    await createTopic(topic, 2);
    const producer = await transactional("tx-basic");

    const first = await producer.transaction();
    await first.send({ topic, messages: [{ value: "c1", partition: 0 }, { value: "c2", partition: 1 }, { value: "c3", partition: 0 }] });
    await first.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [{ value: "a1", partition: 0 }, { value: "a2", partition: 1 }] });
    await aborted.abort();
    const last = await producer.transaction();
    await last.send({ topic, messages: [{ value: "c4", partition: 0 }, { value: "c5", partition: 1 }] });
    await last.commit();

    // Reading to c4 and c5, each after the aborted record of its partition, shows whether those were dropped.
    assert.deepEqual((await readCommitted("txn-reader", topic, ["c4", "c5"])).sort(), ["c1", "c2", "c3", "c4", "c5"]);

    assert.deepEqual((await values(h.broker, topic, "read_committed")).sort(), ["c1", "c2", "c3", "c4", "c5"]);
    assert.deepEqual((await values(h.broker, topic, "read_uncommitted")).sort(), ["a1", "a2", "c1", "c2", "c3", "c4", "c5"]);
  });

  test("transactions aborted in another order than they began: a read_committed KafkaJS consumer sees none of their records", async () => {
    const topic = "txn.interleaved";
    await createTopic(topic);
    const [early, late] = [await transactional("tx-began-first"), await transactional("tx-began-second")];
    const plain = await plainProducer();
    // The first to begin is the last to abort: Kafka lists aborted transactions in abort order, which KafkaJS reads as
    // if by first offset.
    const first = await early.transaction();
    await first.send({ topic, messages: [{ value: "x1" }] });
    const second = await late.transaction();
    await second.send({ topic, messages: [{ value: "y1" }] });
    await first.send({ topic, messages: [{ value: "x2" }] });
    await second.abort();
    await first.abort();
    await plain.send({ topic, acks: -1, messages: [{ value: "after" }] });
    assert.deepEqual(await readCommitted("txn-interleaved", topic, ["after"]), ["after"]);
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after"]);
  });

  test("an open transaction holds read_committed readers back; its timeout aborts it and fences the producer", async () => {
    const topic = "txn.open";
    await createTopic(topic);
    const producer = await transactional("tx-slow", 1500);
    const plain = await plainProducer();

    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "pending" }] });
    await plain.send({ topic, acks: -1, messages: [{ value: "plain" }] });
    // The last stable offset is the open transaction's first record: nothing past it is committed yet.
    assert.deepEqual(await values(h.broker, topic, "read_committed"), []);
    assert.deepEqual(await values(h.broker, topic, "read_uncommitted"), ["pending", "plain"]);

    let committed: string[] = [];
    await waitUntilAsync(
      async () => (committed = await values(h.broker, topic, "read_committed")).length > 0,
      "the coordinator to abort the timed-out transaction",
      15_000,
    );
    assert.deepEqual(committed, ["plain"]);
    await assert.rejects(open.commit(), (err) => {
      assert.equal(errorType(err), "INVALID_PRODUCER_EPOCH");
      return true;
    });
  });

  test("a new producer with the same transactional id aborts the old one's transaction and fences it", async () => {
    const topic = "txn.fence";
    await createTopic(topic);
    const zombie = await transactional("tx-fence");
    const old = await zombie.transaction();
    await old.send({ topic, messages: [{ value: "zombie-1" }] });

    // KafkaJS initialises its transactional producer id on the first transaction.
    const successor = await transactional("tx-fence");
    const txn = await successor.transaction();
    await assert.rejects(old.send({ topic, messages: [{ value: "zombie-2" }] }), (err) => {
      assert.equal(errorType(err), "INVALID_PRODUCER_EPOCH");
      return true;
    });
    await txn.send({ topic, messages: [{ value: "successor" }] });
    await txn.commit();

    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["successor"]);
    assert.deepEqual(await values(h.broker, topic, "read_uncommitted"), ["zombie-1", "successor"]);
    // As Kafka's coordinator fences (prepareFenceProducerEpoch): the abort marker carries the epoch after the zombie's,
    // so no partition takes the zombie's batches after it, and the successor gets the epoch after that.
    const raw = await RawKafka.open(h.srv.kafkaPort!);
    try {
      raw.send(fetchFrame(topic, 0, 0));
      const r = await raw.response(0);
      const { error, recordBytes } = fetchResult(r);
      assert.equal(error, 0);
      const batches = recordBatches(r, recordBytes).map((b) => [b.attributes & 0x30, b.producerEpoch]);
      const zombieEpoch = batches[0][1];
      assert.deepEqual(batches, [
        [0x10, zombieEpoch],
        [0x30, zombieEpoch + 1],
        [0x10, zombieEpoch + 2],
        [0x30, zombieEpoch + 2],
      ], "the zombie's batch, the abort marker fencing it, the successor's batch and its commit marker");
    } finally {
      raw.destroy();
    }
  });

  test("offsets sent in a transaction are committed with it, and dropped when it aborts", async () => {
    const source = "txn.source";
    const sink = "txn.sink";
    await createTopic(source);
    await createTopic(sink);
    const producer = await transactional("tx-etl");
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      const committedOffset = async (): Promise<string> => (await admin.fetchOffsets({ groupId: "etl", topics: [source] }))[0].partitions[0].offset;

      const txn = await producer.transaction();
      await txn.send({ topic: sink, messages: [{ value: "derived-0..2" }] });
      await txn.sendOffsets({ consumerGroupId: "etl", topics: [{ topic: source, partitions: [{ partition: 0, offset: "3" }] }] });
      assert.equal(await committedOffset(), "-1", "not visible before the commit");
      await txn.commit();
      assert.equal(await committedOffset(), "3");

      const dropped = await producer.transaction();
      await dropped.send({ topic: sink, messages: [{ value: "derived-3..8" }] });
      await dropped.sendOffsets({ consumerGroupId: "etl", topics: [{ topic: source, partitions: [{ partition: 0, offset: "9" }] }] });
      await dropped.abort();
      assert.equal(await committedOffset(), "3");
    } finally {
      await admin.disconnect();
    }
    assert.deepEqual(await values(h.broker, sink, "read_committed"), ["derived-0..2"]);
  });

  test("a transaction open at a restart goes on, as Kafka's coordinator keeps it: its producer adds to it and commits it, offsets and all", async () => {
    const topic = "txn.restart";
    const source = "txn.restart.source";
    await createTopic(topic);
    await createTopic(source);
    const producer = await transactional("tx-crash");
    const committed = await producer.transaction();
    await committed.send({ topic, messages: [{ value: "before" }] });
    await committed.commit();
    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "in-flight" }] });
    await open.sendOffsets({ consumerGroupId: "etl-crash", topics: [{ topic: source, partitions: [{ partition: 0, offset: "5" }] }] });

    await h.restart({ keepKafkaPort: true });
    // Still open: read_committed readers stop at its first record.
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["before"]);
    await open.send({ topic, messages: [{ value: "after the restart" }] });
    await open.commit();
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["before", "in-flight", "after the restart"]);
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      assert.equal((await admin.fetchOffsets({ groupId: "etl-crash", topics: [source] }))[0].partitions[0].offset, "5", "the offsets sent before the restart commit with it");
    } finally {
      await admin.disconnect();
    }
  });

  test("librdkafka (confluent-kafka) carries its open transaction across a broker restart and commits it, where a fenced producer would fail fatally", async () => {
    const topic = "txn.restart.librdkafka";
    await createTopic(topic);
    // The script stops with its transaction open until told to go on (a line on stdin), after the restart.
    const script = `
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": "${h.broker}", "transactional.id": "tx-rdkafka", "transaction.timeout.ms": 60000})
p.init_transactions(10)
p.begin_transaction()
p.produce("${topic}", b"before the restart")
p.flush(10)
print("open", flush=True)
sys.stdin.readline()
p.produce("${topic}", b"after the restart")
p.commit_transaction(30)
print("committed", flush=True)
`;
    const child = spawn("/usr/bin/python3", ["-c", script], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      await waitUntil(() => out.includes("open") || child.exitCode !== null, "the script's transaction to be open", 30_000);
      assert.match(out, /open/, err);
      await h.restart({ keepKafkaPort: true });
      child.stdin.write("go\n");
      assert.equal(await exited, 0, err);
    } finally {
      clearTimeout(timer);
      child.kill("SIGKILL");
    }
    assert.match(out, /committed/);
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["before the restart", "after the restart"]);
  });

  test("a transaction open at a restart is still aborted at its timeout, counted from when it began, and its producer fenced", async () => {
    const topic = "txn.restart.timeout";
    await createTopic(topic);
    const producer = await transactional("tx-crash-slow", 4000);
    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "abandoned" }] });
    await h.restart({ keepKafkaPort: true });
    const plain = await plainProducer();
    await plain.send({ topic, acks: -1, messages: [{ value: "after" }] });
    let committed: string[] = [];
    await waitUntilAsync(
      async () => (committed = await values(h.broker, topic, "read_committed")).length > 0,
      "the restarted coordinator to abort the timed-out transaction",
      20_000,
    );
    assert.deepEqual(committed, ["after"]);
    assert.deepEqual(await values(h.broker, topic, "read_uncommitted"), ["abandoned", "after"]);
    await assert.rejects(open.commit(), (err) => {
      assert.equal(errorType(err), "INVALID_PRODUCER_EPOCH");
      return true;
    });
    // A new producer with its id carries on.
    const successor = await transactional("tx-crash-slow");
    const txn = await successor.transaction();
    await txn.send({ topic, messages: [{ value: "resumed" }] });
    await txn.commit();
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after", "resumed"]);
  });

  test("aborted transactions are read from the log again at a restart: purged ones are gone, those still in the log keep filtering", async () => {
    const topic = "txn.prune";
    await createTopic(topic);
    const producer = await transactional("tx-prune");
    const plain = await plainProducer();
    for (const value of ["gone-1", "gone-2"]) {
      const t = await producer.transaction();
      await t.send({ topic, messages: [{ value }] });
      await t.abort();
    }
    await plain.send({ topic, acks: -1, messages: [{ value: "purged" }] });
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.purge("txn_prune");
    const kept = await producer.transaction();
    await kept.send({ topic, messages: [{ value: "aborted" }] });
    await kept.abort();
    await plain.send({ topic, acks: -1, messages: [{ value: "after" }] });
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after"]);
    await h.restart();
    // Nothing of it is kept beside the log: the restarted broker reads the markers and records again.
    assert.ok(!existsSync(join(h.storeDir, "kafka", "aborted")) && !existsSync(join(h.storeDir, "kafka", "hidden")));
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after"]);
    assert.deepEqual(await values(h.broker, topic, "read_uncommitted"), ["aborted", "after"]);
  });

  test("an open transaction's records that a purge removed hold no read_committed reader back", async () => {
    const topic = "txn.purged";
    await createTopic(topic);
    const producer = await transactional("tx-purged");
    const plain = await plainProducer();
    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "open" }] });
    await plain.send({ topic, acks: -1, messages: [{ value: "before" }] });
    assert.deepEqual(await values(h.broker, topic, "read_committed"), []);
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.purge("txn_purged");
    await plain.send({ topic, acks: -1, messages: [{ value: "after" }] });
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after"]);
    await open.abort();
    await plain.send({ topic, acks: -1, messages: [{ value: "later" }] });
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after", "later"]);
  });

  test("a commit marker the disk refuses is retried until stored: the commit completes once, and readers see the record", async () => {
    const topic = "txn.fault";
    await createTopic(topic);
    const producer = await transactional("tx-fault");
    const txn = await producer.transaction();
    await txn.send({ topic, messages: [{ value: "kept" }] });
    // The partition's file log, whose fault hook the store's own tests use: its next three fdatasyncs fail.
    const log = h.srv.jetstream!.streams.get("txn_fault")!.partitions[0] as unknown as { faults: FaultInjector | null };
    let failures = 3;
    log.faults = { sync: () => (failures > 0 ? (failures--, new Error("injected EIO")) : null) };
    await txn.commit();
    assert.equal(failures, 0, "the marker's first attempts met the failing disk");
    log.faults = null;

    const plain = await plainProducer();
    const [ack] = await plain.send({ topic, acks: -1, messages: [{ value: "next" }] });
    // kept (0), one commit marker (1): the failed attempts left nothing behind.
    assert.equal(ack.baseOffset, "2");
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["kept", "next"]);
    const again = await producer.transaction();
    await again.send({ topic, messages: [{ value: "later" }] });
    await again.commit();
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["kept", "next", "later"]);
  });

  test("an abort a restart interrupts, one partition closed by its marker and another not, is finished at the restart, not resumed as open", async () => {
    const topic = "txn.halfaborted";
    await createTopic(topic, 2);
    const producer = await transactional("tx-half");
    const txn = await producer.transaction();
    await txn.send({ topic, messages: [{ value: "p0", partition: 0 }, { value: "p1", partition: 1 }] });
    const partitions = h.srv.jetstream!.streams.get("txn_halfaborted")!.partitions;
    const stuck = partitions[1] as unknown as { faults: FaultInjector | null };
    stuck.faults = { sync: () => new Error("injected EIO") };
    const aborting = txn.abort().catch(() => undefined);
    // Partition 0's abort marker is stored (its record, then the marker); partition 1's keeps failing.
    await waitUntil(() => partitions[0].state().lastSeq === 2, "partition 0's abort marker");
    await h.restart();
    await aborting;
    const plain = await plainProducer();
    for (const partition of [0, 1]) await plain.send({ topic, acks: -1, messages: [{ value: `after${partition}`, partition }] });
    // Both partitions closed once the saved decision is finished (in the background): nothing holds read_committed readers back.
    let committed: string[] = [];
    await waitUntilAsync(async () => (committed = (await values(h.broker, topic, "read_committed")).sort()).length === 2, "the abort to be finished");
    assert.deepEqual(committed, ["after0", "after1"]);
    assert.deepEqual((await values(h.broker, topic, "read_uncommitted")).sort(), ["after0", "after1", "p0", "p1"]);
  });
  test("a stream whose record of holding transactions is gone is indexed again at the start: aborted records stay hidden", async () => {
    // An outside test removed kafka/txn-streams/* of a stopped server: the stream was not indexed at the next start, and a
    // read_committed consumer got the aborted records (NATS readers the markers), with nothing said.
    const topic = "txn.unrecorded";
    await createTopic(topic);
    const producer = await transactional("tx-unrecorded");
    for (const [value, commit] of [["c1", true], ["ab1", false], ["c2", true]] as const) {
      const txn = await producer.transaction();
      await txn.send({ topic, messages: [{ value }] });
      await (commit ? txn.commit() : txn.abort());
    }
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["c1", "c2"]);
    let removed = 0;
    await h.restart({
      whileStopped: () => {
        const find = (dir: string): void => {
          for (const e of readdirSync(dir, { withFileTypes: true })) {
            if (!e.isDirectory()) continue;
            const at = join(dir, e.name);
            if (e.name !== "txn-streams") find(at);
            else for (const f of readdirSync(at)) (rmSync(join(at, f)), removed++);
          }
        };
        find(h.storeDir);
      },
    });
    assert.ok(removed > 0, "the records were there to remove");
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["c1", "c2"]);
  });

  test("InitProducerId naming its producer (KIP-360): a retry gets the epoch it was given; a producer its timeout fenced is PRODUCER_FENCED, never handed the fence's epoch", async () => {
    const topic = "txn.kip360";
    await createTopic(topic);
    const port = h.srv.kafkaPort!;
    const id = "tx-kip360";
    const init = (producerId: number, epoch: number): Promise<{ error: number; producerId: number; epoch: number }> =>
      ask(port, flexibleFrame(22, 4, (w) => w.nullableString(id).i32(1000).i64(producerId).i16(epoch).taggedFields()), (r) => {
        flexibleBody(r);
        r.i32();
        return { error: r.i16(), producerId: r.i64(), epoch: r.i16() };
      });
    const first = await init(-1, -1);
    assert.equal(first.error, 0);
    const { producerId, epoch } = first;
    const bumped = { error: 0, producerId, epoch: epoch + 1 };
    assert.deepEqual(await init(producerId, epoch), bumped, "the producer's own bump");
    assert.deepEqual(await init(producerId, epoch), bumped, "its retry: the epoch it was given, not another");
    // A transaction its 1 s timeout aborts, fencing the producer (the epoch after its own).
    const txn = { id, producerId, epoch: epoch + 1 };
    assert.equal(await addPartition(port, txn, topic, 0), 0);
    await waitUntilAsync(async () => (await addPartition(port, txn, topic, 0)) === 47, "the timeout to fence the producer (INVALID_PRODUCER_EPOCH)", 15_000);
    // Kafka clears the last epoch on a fence: the fenced producer may not take the fence's epoch as its own.
    assert.equal((await init(producerId, epoch + 1)).error, 90, "PRODUCER_FENCED (v4: KIP-588)");
    assert.equal((await init(producerId, epoch)).error, 90, "PRODUCER_FENCED: an older epoch still");
    // The abort that fenced it may still be writing its markers: CONCURRENT_TRANSACTIONS meanwhile, which clients retry.
    let fresh = { error: -1, producerId: -1, epoch: -1 };
    await waitUntilAsync(async () => (fresh = await init(-1, -1)).error !== 51, "the fencing abort to finish");
    assert.deepEqual(fresh, { error: 0, producerId, epoch: epoch + 3 }, "a new producer: the epoch after the fence's");
  });

  test("a commit a restart interrupts after its decision is finished at its own epoch: the producer's retried EndTxn is answered as the first would have been", async () => {
    const topic = "txn.retried.end";
    await createTopic(topic);
    const id = "tx-retried-end";
    const port = h.srv.kafkaPort!;
    const init = await initProducerId(port, id);
    assert.equal(init.error, 0);
    const txn = { id, producerId: init.producerId, epoch: init.epoch };
    assert.equal(await addPartition(port, txn, topic, 0), 0);
    const w = new Writer();
    encodeBatch(w, [{ offset: 0, timestamp: Date.now(), key: null, value: Buffer.from("decided"), headers: null }], 0x10, txn.producerId, txn.epoch, 0);
    const set = Buffer.from(w.result());
    const produced = await ask(port, frame(0, 3, (f) => f.nullableString(id).i16(-1).i32(5000).arrayLength(1).string(topic).arrayLength(1).i32(0).nullableBytes(set)), produceResult);
    assert.equal(produced.error, 0);
    // The commit's marker meets a failing disk: the decision is saved, the marker retried until the restart.
    const log = h.srv.jetstream!.streams.get("txn_retried_end")!.partitions[0] as unknown as { faults: FaultInjector | null };
    let attempts = 0;
    log.faults = { sync: () => (attempts++, new Error("injected EIO")) };
    const ending = await RawKafka.open(port);
    try {
      ending.send(endTxnFrame(txn, true));
      await waitUntil(() => attempts > 0, "the commit marker's first attempt");
      await h.restart();
    } finally {
      ending.destroy();
    }
    // Kafka's coordinator finishes a loaded PrepareCommit at its epoch; a bumped one would make this INVALID_PRODUCER_EPOCH.
    // Until it is finished (in the background, as Kafka's), CONCURRENT_TRANSACTIONS, which clients retry.
    let answer = -1;
    await waitUntilAsync(async () => (answer = await ask(h.srv.kafkaPort!, endTxnFrame(txn, true), (r) => (r.i32(), r.i16()))) !== 51, "the loaded commit to finish");
    assert.equal(answer, 0, "the retried EndTxn: NONE");
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["decided"]);
    const raw = await RawKafka.open(h.srv.kafkaPort!);
    try {
      raw.send(fetchFrame(topic, 0, 0));
      const r = await raw.response(0);
      const { recordBytes } = fetchResult(r);
      assert.deepEqual(recordBatches(r, recordBytes).map((b) => [b.attributes & 0x30, b.producerEpoch]), [
        [0x10, txn.epoch],
        [0x30, txn.epoch],
      ], "the record and its commit marker, at the producer's epoch");
    } finally {
      raw.destroy();
    }
  });

  test("transactions saved together: every AddPartitionsToTxn answered is in the file, whichever write took it", async () => {
    const topic = "txn.together";
    await createTopic(topic);
    const port = h.srv.kafkaPort!;
    const ids = Array.from({ length: 12 }, (_, i) => `tx-together-${i}`);
    const txns = await Promise.all(ids.map(async (id) => ({ id, ...(await initProducerId(port, id)) })));
    // At once, so that writes of the file overlap: one in flight while the next gathers the others.
    assert.deepEqual(await Promise.all(txns.map((t) => addPartition(port, t, topic, 0))), ids.map(() => 0));
    const saved = parseStateFile(readFileSync(findFile(h.storeDir, "transactions.json")!, "utf8")) as Record<string, { state: string; partitions: unknown[] }>;
    for (const id of ids) assert.deepEqual([saved[id].state, saved[id].partitions], ["Ongoing", [[topic, 0, 0]]], id);
    await Promise.all(txns.map((t) => ask(port, endTxnFrame(t, false), (r) => (r.i32(), r.i16()))));
  });

  test("a commit a restart interrupts holds its group offsets unstable (require_stable) until it is finished, as Kafka's coordinator reads pending offsets back", async () => {
    const topic = "txn.held.restart";
    await createTopic(topic);
    const id = "tx-held-restart";
    const group = "held-restart";
    const port = h.srv.kafkaPort!;
    const init = await initProducerId(port, id);
    const txn = { id, producerId: init.producerId, epoch: init.epoch };
    assert.equal(await addPartition(port, txn, topic, 0), 0);
    assert.equal(await ask(port, frame(25, 0, (w) => w.string(id).i64(txn.producerId).i16(txn.epoch).string(group)), (r) => (r.i32(), r.i16())), 0);
    const committed = await ask(port, frame(28, 2, (w) => w.string(id).string(group).i64(txn.producerId).i16(txn.epoch).i32(1).string(topic).i32(1).i32(0).i64(5).i32(-1).nullableString(null)), (r) => (r.i32(), topicPartitionErrors(r)));
    assert.deepEqual(committed, [{ name: topic, partitions: [[0, 0]] }]);
    const w = new Writer();
    encodeBatch(w, [{ offset: 0, timestamp: Date.now(), key: null, value: Buffer.from("out"), headers: null }], 0x10, txn.producerId, txn.epoch, 0);
    const set = Buffer.from(w.result());
    assert.equal((await ask(port, frame(0, 3, (f) => f.nullableString(id).i16(-1).i32(5000).arrayLength(1).string(topic).arrayLength(1).i32(0).nullableBytes(set)), produceResult)).error, 0);
    // The commit is decided (saved PrepareCommit), its marker held back by a failing disk until the restart.
    const log = h.srv.jetstream!.streams.get("txn_held_restart")!.partitions[0] as unknown as { faults: FaultInjector | null };
    let attempts = 0;
    log.faults = { sync: () => (attempts++, new Error("injected EIO")) };
    const ending = await RawKafka.open(port);
    const file = findFile(h.storeDir, "transactions.json")!;
    try {
      ending.send(endTxnFrame(txn, true));
      await waitUntil(() => attempts > 0, "the commit marker's first attempt");
      // After the restart its finish cannot save its state either (a directory in the way of the file's replacement).
      await h.restart({ whileStopped: () => void mkdirSync(join(`${file}.tmp`, "in-the-way"), { recursive: true }) });
    } finally {
      ending.destroy();
    }
    const reader = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const fetch = () => offsetFetch(reader, group, topic, [0], 7, true);
      assert.deepEqual(await fetch(), { partitions: [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], error: ErrorCode.NONE }, "held until the commit is finished");
      rmSync(`${file}.tmp`, { recursive: true });
      await waitUntilAsync(async () => (await fetch()).partitions[0][2] === ErrorCode.NONE, "the commit to be finished");
      assert.deepEqual(await fetch(), { partitions: [[0, 5, ErrorCode.NONE]], error: ErrorCode.NONE }, "committed with the transaction");
    } finally {
      reader.destroy();
    }
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["out"]);
  });

  test("a transaction saved open by an older version (no start time, so no offsets) is aborted and fenced at the restart, not resumed without its offsets", async () => {
    const topic = "txn.upgrade";
    await createTopic(topic);
    const producer = await transactional("tx-upgrade");
    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "before the upgrade" }] });
    await h.restart({
      keepKafkaPort: true,
      whileStopped: () => {
        const file = findFile(h.storeDir, "transactions.json");
        assert.ok(file !== undefined, "transactions.json");
        const saved = parseStateFile(readFileSync(file, "utf8")) as Record<string, { state: string; startedAt?: number; offsets?: unknown }>;
        assert.equal(saved["tx-upgrade"].state, "Ongoing");
        // As the version before 2026-12 wrote it (no checksum line either).
        delete saved["tx-upgrade"].startedAt;
        delete saved["tx-upgrade"].offsets;
        writeFileSync(file, JSON.stringify(saved));
      },
    });
    await assert.rejects(open.commit(), (err) => {
      assert.equal(errorType(err), "INVALID_PRODUCER_EPOCH");
      return true;
    });
    const plain = await plainProducer();
    await plain.send({ topic, acks: -1, messages: [{ value: "after" }] });
    assert.deepEqual(await values(h.broker, topic, "read_committed"), ["after"]);
    assert.deepEqual(await values(h.broker, topic, "read_uncommitted"), ["before the upgrade", "after"]);
  });
  test("a transaction's state the disk refuses to save is not acted on: InitProducerId, AddPartitionsToTxn and AddOffsetsToTxn answer NOT_COORDINATOR, and their retries save it", async () => {
    const topic = "txn.unsaved";
    await createTopic(topic);
    const id = "tx-unsaved";
    const init = (port: number, producerId: number, epoch: number): Promise<{ error: number; producerId: number; epoch: number }> =>
      ask(port, flexibleFrame(22, 4, (w) => w.nullableString(id).i32(60_000).i64(producerId).i16(epoch).taggedFields()), (r) => {
        flexibleBody(r);
        r.i32();
        return { error: r.i16(), producerId: r.i64(), epoch: r.i16() };
      });
    const first = await init(h.srv.kafkaPort!, -1, -1);
    assert.equal(first.error, 0);
    const file = findFile(h.storeDir, "transactions.json");
    assert.ok(file !== undefined, "transactions.json");
    // The file is replaced through `transactions.json.tmp`: a directory there fails every save, as a broken disk would.
    const breakDisk = (): void => void mkdirSync(join(`${file}.tmp`, "in-the-way"), { recursive: true });
    const healDisk = (): void => rmSync(`${file}.tmp`, { recursive: true });
    const saved = (): { epoch: number; state: string; partitions: unknown[]; offsets?: unknown[] } =>
      (parseStateFile(readFileSync(file, "utf8")) as Record<string, { epoch: number; state: string; partitions: unknown[]; offsets?: unknown[] }>)[id];

    breakDisk();
    const port = h.srv.kafkaPort!;
    assert.equal((await init(port, first.producerId, first.epoch)).error, 16, "the bump not saved: NOT_COORDINATOR, which clients retry");
    healDisk();
    const bumped = await init(port, first.producerId, first.epoch);
    assert.deepEqual(bumped, { error: 0, producerId: first.producerId, epoch: first.epoch + 1 }, "the retry bumps, once");
    assert.equal(saved().epoch, first.epoch + 1, "and the epoch it was given is saved before it was given");

    const txn = { id, producerId: bumped.producerId, epoch: bumped.epoch };
    const addOffsets = (group: string): Promise<number> => ask(port, frame(25, 0, (w) => w.string(id).i64(txn.producerId).i16(txn.epoch).string(group)), (r) => (r.i32(), r.i16()));
    breakDisk();
    assert.equal(await addPartition(port, txn, topic, 0), 16, "the partition not saved: NOT_COORDINATOR");
    assert.equal(await addOffsets("g-unsaved"), 16, "the group not saved: NOT_COORDINATOR");
    healDisk();
    assert.equal(saved().state, "Empty", "nothing begun on disk");
    assert.equal(await addPartition(port, txn, topic, 0), 0);
    assert.deepEqual(saved().partitions, [[topic, 0, 0]], "the retry saved the partition (a restart writes its marker)");
    assert.equal(await addOffsets("g-unsaved"), 0);
    assert.deepEqual(saved().offsets, [["g-unsaved", []]], "and the group");

    // The epoch handed out survives a restart: the next producer gets the one after it, never the same.
    await h.restart();
    assert.deepEqual(await init(h.srv.kafkaPort!, -1, -1), { error: 0, producerId: first.producerId, epoch: first.epoch + 3 }, "its open transaction aborted fenced, then the next epoch");
  });

  test("AddOffsetsToTxn past what the transaction's saved record can hold is INVALID_REQUEST, and the transaction still commits", async () => {
    const port = h.srv.kafkaPort!;
    const id = "tx-many-groups";
    const init = await initProducerId(port, id);
    const txn = { id, producerId: init.producerId, epoch: init.epoch };
    const addOffsets = (group: string): Promise<number> => ask(port, frame(25, 0, (w) => w.string(id).i64(txn.producerId).i16(txn.epoch).string(group)), (r) => (r.i32(), r.i16()));
    // Group ids of 30,000 bytes: a 1 MiB record (the default max_payload) holds about 34 of them.
    const answers: number[] = [];
    for (let i = 0; i < 40 && !answers.includes(42); i++) answers.push(await addOffsets(`${i}`.padEnd(30_000, "g")));
    assert.ok(answers.length > 30, `groups added before the bound: ${answers.length - 1}`);
    assert.deepEqual(answers, [...new Array(answers.length - 1).fill(0), 42], "INVALID_REQUEST once the record would not fit");
    assert.equal(await ask(port, endTxnFrame(txn, true), (r) => (r.i32(), r.i16())), 0);
  });
});
