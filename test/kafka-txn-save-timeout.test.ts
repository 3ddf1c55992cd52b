/**
 * The transaction coordinator's own saves on a stalled disk. InitProducerId,
 * AddPartitionsToTxn, AddOffsetsToTxn and EndTxn each wait for the
 * transaction's state to be saved (transactions.json on a single node); a
 * disk that stopped answering the sync of that file held the answer without
 * end, and every later answer of the connection (answered in order). Kafka
 * bounds each write of its transaction state log by the transaction's
 * timeout (TransactionStateManager.appendTransactionToLog appends with the
 * new state's txnTimeoutMs) and answers one not done by then
 * COORDINATOR_NOT_AVAILABLE (its REQUEST_TIMED_OUT, mapped), which clients
 * retry. So does nagare now; the save goes on in turn with the
 * transaction's requests, so what comes after finds it made or not, never
 * half.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { sep } from "node:path";
import kafkajs from "kafkajs";
import { createTopic, kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { captureLog, waitUntil } from "./helpers/clients.js";
import { frame, RawKafka, REQUEST_MS, topicPartitionErrors } from "./helpers/kafka-raw.js";
import { stallSyncs, type StalledSyncs } from "./helpers/stall.js";
import type { Reader } from "../src/protocols/kafka/codec.js";

const { Kafka, logLevel } = kafkajs;

const NONE = 0;
const COORDINATOR_NOT_AVAILABLE = 15;
const CONCURRENT_TRANSACTIONS = 51;
let h: KafkaHarness;
before(async () => (h = await startKafka()));
after(() => h.close());

/** The disk stops answering the sync of the transactions' file (its temporary copy, before the rename). */
const stallTxnFile = (): StalledSyncs => stallSyncs((path) => path.endsWith(`${sep}transactions.json.tmp`));

/** A KafkaJS client that retries long enough to outlast a stall (the harness's gives up after 3 tries). */
function patientKafka(): InstanceType<typeof Kafka> {
  return new Kafka({ clientId: "nagare-test", brokers: [h.broker], logLevel: logLevel.NOTHING, requestTimeout: REQUEST_MS, retry: { retries: 50, initialRetryTime: 100, maxRetryTime: 500 } });
}

/** Every record of `topic`'s partition 0 a read_committed consumer (librdkafka's) sees, in order. */
async function readCommitted(topic: string): Promise<string[]> {
  const run = await kcat(["-b", h.broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%s\n"]);
  assert.equal(run.code, 0, run.stderr);
  return run.stdout.split("\n").filter((l) => l !== "");
}

const single = (r: Reader): number[] => (r.i32(), [r.i16()]);
const partitionErrors = (r: Reader): number[] => (r.i32(), topicPartitionErrors(r).flatMap((t) => t.partitions.map(([, e]) => e)));

/**
 * On a connection of its own, `setup` while the disk answers, then
 * `request` with an ApiVersions behind it while the disk stalls the
 * transactions' file: the request's errors as `read` reads them, answered
 * no sooner than `boundMs` (the transaction's timeout) and while the save is
 * still stalled, and the ApiVersions answered behind it; then `after`, once
 * the disk answers again. `next` gives the connection's next correlation id.
 */
async function stalledRequest<S>(what: string, setup: (k: RawKafka, next: () => number) => Promise<S>, request: (s: S, c: number) => Buffer, read: (r: Reader) => number[], boundMs: number, after?: (k: RawKafka, s: S, next: () => number) => Promise<void>): Promise<number[]> {
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  let n = 0;
  const next = (): number => n++;
  let disk: StalledSyncs | null = null;
  try {
    const s = await setup(k, next);
    disk = stallTxnFile();
    const c = next();
    const behind = next();
    const t0 = performance.now();
    k.send(Buffer.concat([request(s, c), frame(18, 0, () => undefined, behind)]));
    // Before: neither answered while the disk stalled.
    const errors = read(await k.response(c, REQUEST_MS));
    const ms = performance.now() - t0;
    assert.equal((await k.response(behind, REQUEST_MS)).i16(), NONE, `${what}: the ApiVersions behind it is answered`);
    assert.equal(disk.stalled(), 1, `${what}: answered while its save is still stalled`);
    assert.ok(ms >= boundMs - 100, `${what} answered after ${Math.round(ms)} ms, before the transaction's timeout of ${boundMs} ms`);
    disk.restore();
    disk.release();
    disk = null;
    await after?.(k, s, next);
    return errors;
  } finally {
    disk?.restore();
    disk?.release();
    k.destroy();
    await waitUntil(() => k.closed, "the connection closed");
  }
}

/** InitProducerId v0 of `id` with transaction timeout `ms`: its error, producer id and epoch. */
async function init(k: RawKafka, id: string, ms: number, c: number): Promise<{ error: number; producerId: number; epoch: number }> {
  k.send(frame(22, 0, (w) => w.nullableString(id).i32(ms), c));
  const r = await k.response(c, REQUEST_MS);
  r.i32();
  const got = { error: r.i16(), producerId: r.i64(), epoch: r.i16() };
  assert.equal(got.error, NONE, `InitProducerId of ${id}`);
  return got;
}

/** AddPartitionsToTxn v0 of partition 0 of `topic`. */
const addPartitionFrame = (id: string, p: { producerId: number; epoch: number }, topic: string, c: number): Buffer =>
  frame(24, 0, (w) => w.string(id).i64(p.producerId).i16(p.epoch).i32(1).string(topic).i32(1).i32(0), c);

test("an InitProducerId whose new epoch's save stalls is answered COORDINATOR_NOT_AVAILABLE after the timeout it names, and the connection's answers behind it go on", { timeout: 60_000 }, async () => {
  const errors = await stalledRequest("InitProducerId", async () => null, (_, c) => frame(22, 0, (w) => w.nullableString("tx-stall-init").i32(1000), c), single, 1000);
  assert.deepEqual(errors, [COORDINATOR_NOT_AVAILABLE]);
});

test("an AddPartitionsToTxn whose save stalls is answered COORDINATOR_NOT_AVAILABLE after the transaction's timeout, and the connection's answers behind it go on", { timeout: 60_000 }, async () => {
  const topic = "stalled-add-partitions";
  await createTopic(h, topic);
  const id = "tx-stall-partitions";
  const errors = await stalledRequest("AddPartitionsToTxn", (k, next) => init(k, id, 1000, next()), (p, c) => addPartitionFrame(id, p, topic, c), partitionErrors, 1000);
  assert.deepEqual(errors, [COORDINATOR_NOT_AVAILABLE]);
});

test("an AddOffsetsToTxn whose save stalls is answered COORDINATOR_NOT_AVAILABLE after the transaction's timeout, and the connection's answers behind it go on", { timeout: 60_000 }, async () => {
  const id = "tx-stall-offsets";
  const errors = await stalledRequest("AddOffsetsToTxn", (k, next) => init(k, id, 1000, next()), (o, c) => frame(25, 0, (w) => w.string(id).i64(o.producerId).i16(o.epoch).string("g-stall-offsets"), c), single, 1000);
  assert.deepEqual(errors, [COORDINATOR_NOT_AVAILABLE]);
});

test("an EndTxn whose decision's save stalls is answered COORDINATOR_NOT_AVAILABLE after the transaction's timeout, and the connection's answers behind it go on; the commit goes on", { timeout: 60_000 }, async () => {
  const topic = "stalled-end-txn";
  await createTopic(h, topic);
  const id = "tx-stall-end";
  const endFrame = (e: { producerId: number; epoch: number }, c: number): Buffer => frame(26, 0, (w) => w.string(id).i64(e.producerId).i16(e.epoch).bool(true), c);
  const errors = await stalledRequest(
    "EndTxn",
    async (k, next) => {
      // Long enough that the transaction does not time out before its EndTxn on a loaded machine.
      const e = await init(k, id, 3000, next());
      const c = next();
      k.send(addPartitionFrame(id, e, topic, c));
      assert.deepEqual(partitionErrors(await k.response(c, REQUEST_MS)), [NONE]);
      return e;
    },
    (e, c) => endFrame(e, c),
    single,
    3000,
    async (k, e, next) => {
      // The commit went on once the disk answered: the retry is answered NONE, as for a commit that ended so
      // (CONCURRENT_TRANSACTIONS while it is being finished).
      let retried = CONCURRENT_TRANSACTIONS;
      for (const deadline = Date.now() + REQUEST_MS; retried === CONCURRENT_TRANSACTIONS && Date.now() < deadline; ) {
        const c = next();
        k.send(endFrame(e, c));
        retried = single(await k.response(c, REQUEST_MS))[0];
      }
      assert.equal(retried, NONE, "the retried EndTxn: committed");
    },
  );
  assert.deepEqual(errors, [COORDINATOR_NOT_AVAILABLE]);
});

/** The names of the requests `producer` had answered, in order (KafkaJS's instrumentation, one event per answer). */
function answers(producer: ReturnType<InstanceType<typeof Kafka>["producer"]>): string[] {
  const names: string[] = [];
  producer.on(producer.events.REQUEST, (e) => void names.push(e.payload.apiName));
  return names;
}

test("KafkaJS's InitProducerId whose epoch's save stalls is answered COORDINATOR_NOT_AVAILABLE, retried, and once the disk answers its transaction commits exactly once", { timeout: 120_000 }, async () => {
  const topic = "stalled-init-kafkajs";
  await createTopic(h, topic);
  const producer = patientKafka().producer({ transactionalId: "tx-kafkajs-stall-init", transactionTimeout: 5000, maxInFlightRequests: 1, idempotent: true });
  const answered = answers(producer);
  await producer.connect();
  let disk: StalledSyncs | null = stallTxnFile();
  try {
    // (Its connect asked for an idempotent producer id, without a transactional id: nothing saved.)
    answered.length = 0;
    const began = producer.transaction();
    // Before: KafkaJS's InitProducerId was not answered while the disk stalled (its retries sat behind it).
    await waitUntil(() => answered.includes("InitProducerId"), "KafkaJS's InitProducerId answered while the disk stalls", REQUEST_MS);
    assert.equal(disk.stalled(), 1, "answered while the epoch's save is still stalled");
    disk.restore();
    disk.release();
    disk = null;
    const txn = await began;
    await txn.send({ topic, messages: [{ value: "once" }] });
    await txn.commit();
  } finally {
    disk?.restore();
    disk?.release();
    await producer.disconnect();
  }
  assert.deepEqual(await readCommitted(topic), ["once"]);
});

test("KafkaJS's commit whose decision's save stalls is answered COORDINATOR_NOT_AVAILABLE; once the disk answers the commit lands, exactly once, and the id goes on", { timeout: 120_000 }, async () => {
  const topic = "stalled-end-kafkajs";
  const id = "tx-kafkajs-stall-end";
  await createTopic(h, topic);
  // Long enough that the transaction does not time out before its commit on a loaded machine; the commit's answer waits as long.
  const producer = patientKafka().producer({ transactionalId: id, transactionTimeout: 5000, maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  let disk: StalledSyncs | null = null;
  try {
    const txn = await producer.transaction();
    await txn.send({ topic, messages: [{ value: "once" }] });
    disk = stallTxnFile();
    // Before: the commit was not answered while the disk stalled (KafkaJS gave up after its request timeout).
    await assert.rejects(txn.commit(), (err: { type?: string; retriable?: boolean }) => {
      // KafkaJS's name of COORDINATOR_NOT_AVAILABLE (15); retriable, though KafkaJS leaves the retry to the application.
      assert.equal(err.type, "GROUP_COORDINATOR_NOT_AVAILABLE", String(err));
      assert.equal(err.retriable, true);
      return true;
    });
    assert.equal(disk.stalled(), 1, "answered while the decision's save is still stalled");
    assert.deepEqual(await readCommitted(topic), [], "nothing committed while the decision is not saved");
    disk.restore();
    disk.release();
    disk = null;
  } finally {
    disk?.restore();
    disk?.release();
    await producer.disconnect();
  }
  // The commit goes on once the disk answers: a read_committed consumer sees its record, once.
  let seen: string[] = [];
  const deadline = Date.now() + REQUEST_MS;
  while (seen.length === 0 && Date.now() < deadline) seen = await readCommitted(topic);
  assert.deepEqual(seen, ["once"], "the commit landed");
  // A new producer of the id goes on (CONCURRENT_TRANSACTIONS while the commit is finished, which KafkaJS retries).
  const next = patientKafka().producer({ transactionalId: id, transactionTimeout: 60_000, maxInFlightRequests: 1, idempotent: true });
  await next.connect();
  try {
    const txn = await next.transaction();
    await txn.send({ topic, messages: [{ value: "then" }] });
    await txn.commit();
  } finally {
    await next.disconnect();
  }
  assert.deepEqual(await readCommitted(topic), ["once", "then"]);
});

test("KafkaJS's AddPartitionsToTxn whose save stalls is answered COORDINATOR_NOT_AVAILABLE; the transaction, past its timeout once saved, is aborted whole, and the next commits exactly once", { timeout: 120_000 }, async () => {
  const topic = "stalled-partitions-kafkajs";
  const id = "tx-kafkajs-stall-partitions";
  await createTopic(h, topic);
  const producer = patientKafka().producer({ transactionalId: id, transactionTimeout: 2000, maxInFlightRequests: 1, idempotent: true });
  const answered = answers(producer);
  await producer.connect();
  let disk: StalledSyncs | null = null;
  try {
    const txn = await producer.transaction();
    disk = stallTxnFile();
    answered.length = 0;
    // KafkaJS retries the send (AddPartitionsToTxn first) on the retriable error.
    // Its send, then its commit: the error that ends them (none: it committed).
    const sent = txn
      .send({ topic, messages: [{ value: "lost" }] })
      .then(() => txn.commit())
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    // Before: the AddPartitionsToTxn was not answered while the disk stalled.
    await waitUntil(() => answered.includes("AddPartitionsToTxn"), "KafkaJS's AddPartitionsToTxn answered while the disk stalls", REQUEST_MS);
    assert.equal(disk.stalled(), 1, "answered while the save is still stalled");
    disk.restore();
    disk.release();
    disk = null;
    // The partition was added (its save went on, and KafkaJS's retry found it so), when the transaction had already run
    // past its timeout: it is aborted and its producer fenced, as Kafka aborts a transaction past its timeout.
    const outcome = (await sent) as { type?: string } | undefined;
    assert.ok(outcome?.type === "INVALID_PRODUCER_EPOCH" || outcome?.type === "PRODUCER_FENCED", `the producer is fenced: ${String(outcome)}`);
  } finally {
    disk?.restore();
    disk?.release();
    await producer.disconnect();
  }
  const next = patientKafka().producer({ transactionalId: id, transactionTimeout: 60_000, maxInFlightRequests: 1, idempotent: true });
  await next.connect();
  try {
    const txn = await next.transaction();
    await txn.send({ topic, messages: [{ value: "once" }] });
    await txn.commit();
  } finally {
    await next.disconnect();
  }
  assert.deepEqual(await readCommitted(topic), ["once"]);
});

test("librdkafka's commit whose decision's save stalls is answered COORDINATOR_NOT_AVAILABLE, retried by librdkafka until done, and commits exactly once once the disk answers", { timeout: 120_000 }, async () => {
  const topic = "stalled-end-librdkafka";
  const id = "tx-librdkafka-stall-end";
  await createTopic(h, topic);
  const door = h.srv.kafka!.defaultDoor!;
  const { lines, restore } = captureLog(door.log);
  // The disk stops answering the sync of the transactions' file once the commit is decided: the decision's save stalls.
  const disk = stallSyncs((path) => path.endsWith(`${sep}transactions.json.tmp`) && door.transactions.describe(id)?.state === "PrepareCommit");
  let run: ReturnType<typeof python> | null = null;
  try {
    run = python(
      `
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": "${h.broker}", "transactional.id": "${id}", "transaction.timeout.ms": 5000})
p.init_transactions(30)
p.begin_transaction()
p.produce("${topic}", b"once", partition=0)
p.commit_transaction(60)
print("committed")
`,
      90_000,
    );
    // Before: the EndTxn was not answered while the disk stalled.
    await waitUntil(() => lines.some((l) => l.includes(`transaction ${id}: EndTxn not done within`)), "the stalled EndTxn answered COORDINATOR_NOT_AVAILABLE", 30_000);
    assert.equal(disk.stalled(), 1, "answered while the decision's save is still stalled");
    disk.restore();
    disk.release();
    // librdkafka retries the EndTxn (CONCURRENT_TRANSACTIONS while the commit is finished), then it is answered as done.
    const py = await run;
    assert.equal(py.code, 0, py.stderr);
    assert.match(py.stdout, /committed/);
  } finally {
    restore();
    disk.restore();
    disk.release();
    // Its Python ends once the disk answers, whatever failed here.
    await run?.catch(() => undefined);
  }
  assert.deepEqual(await readCommitted(topic), ["once"]);
});

test("in a cluster, an InitProducerId whose record in __transaction_state stalls is answered COORDINATOR_NOT_AVAILABLE after the timeout it names", { timeout: 60_000 }, async () => {
  const transactions = h.srv.kafka!.defaultDoor!.transactions;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let stalled = 0;
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  try {
    // The cluster's transaction state log (ReplicatedTxnState) stands in: its append stalls, as on a replica that stopped answering.
    transactions.store = { write: () => (stalled++, gate) };
    k.send(Buffer.concat([frame(22, 0, (w) => w.nullableString("tx-stall-cluster").i32(1000), 0), frame(18, 0, () => undefined, 1)]));
    // Before: neither answered while the record stalled.
    assert.deepEqual(single(await k.response(0, REQUEST_MS)), [COORDINATOR_NOT_AVAILABLE]);
    assert.equal((await k.response(1, REQUEST_MS)).i16(), NONE, "the ApiVersions behind it is answered");
    assert.equal(stalled, 1, "answered while the record is still stalled");
  } finally {
    transactions.store = null;
    release();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});
