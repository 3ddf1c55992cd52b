/**
 * The Kafka door over a replicated partition's leader side, on one node: a
 * stand-in ReplicaGate (what stream-replicas.ts installs on a leader) whose
 * high watermark the test moves. Judged by KafkaJS: acks=1 is answered once
 * the leader has the batch, not waiting for the high watermark, and never
 * refused for too few in-sync replicas; acks=all is answered only once the
 * high watermark passes the batch, and refused NOT_ENOUGH_REPLICAS while the
 * ISR is too small; consumers see nothing past the high watermark (records,
 * ListOffsets latest), and a consumer waiting at it gets the records as soon
 * as it moves, not at the end of its fetch wait. An idempotent producer's
 * batch stored here whose replication then failed is, retried, a duplicate:
 * answered with its first offset once replicated, never stored twice.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { createTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntil } from "./helpers/clients.js";
import { ask, frame } from "./helpers/kafka-raw.js";
import { spawn } from "node:child_process";

/** kcat run in the background: its stdout once it exits, its stderr so far. */
function kcatRunning(args: string[]): { exited: Promise<string>; stdout: () => string; stderr: () => string; kill: () => void } {
  const child = spawn("kcat", args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<string>((resolve) => child.on("close", () => resolve(out)));
  return { exited, stdout: () => out, stderr: () => err, kill: () => child.kill() };
}
import type { Stream } from "../src/streams/stream.js";
import { HeldGate } from "./helpers/held-gate.js";
import { OutcomeUnknownError, TooFewReplicasError, type ApiError } from "../src/streams/errors.js";

const { Kafka, logLevel } = kafkajs;

/** A leader's gate whose high watermark and ISR the test decides (the held gate's, replicated up to `advance`). */
class TestGate extends HeldGate {
  tooFew = false;
  /** The last sequence shipped to the (absent) followers. */
  shipped = 0;
  /** The next replication to fail with this after its append (the leader's lease lost while the batch waited). */
  failNext: ApiError | null = null;
  /** A leader's history: epoch 0 from the start, the epoch a single broker's Metadata shows. */
  readonly epochEntries = [{ epoch: 0, start: 1 }];

  constructor(private readonly stream: Stream) {
    super();
  }

  override refusal(leaderOnly: boolean): ApiError | null {
    return !leaderOnly && this.tooFew ? new TooFewReplicasError(1, 2) : null;
  }

  override replicate(lastSeq: number, done: (err: ApiError | null) => void): void {
    this.ship(lastSeq);
    const fail = this.failNext;
    this.failNext = null;
    if (fail !== null) done(fail);
    else if (lastSeq < this.highWatermark) done(null);
    else this.waiting.push({ seq: lastSeq, done });
  }

  override ship(lastSeq: number): ApiError | null {
    this.shipped = Math.max(this.shipped, lastSeq);
    return null;
  }

  /** Every in-sync replica has everything below `hw` now. */
  advance(hw: number): void {
    this.highWatermark = hw;
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i].seq < hw) this.waiting.splice(i, 1)[0].done(null);
    }
    this.stream.replicaAdvanced(0);
  }
}

let h: KafkaHarness;

before(async () => {
  h = await startKafka();
});

after(async () => {
  await h.close();
});

const client = (retries = 3): InstanceType<typeof Kafka> =>
  new Kafka({ clientId: "gate-test", brokers: [h.broker], logLevel: logLevel.NOTHING, retry: { retries, initialRetryTime: 100 } });

async function latest(topic: string): Promise<string> {
  const admin = client().admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic))[0].high;
  } finally {
    await admin.disconnect();
  }
}

test("acks=1 is answered without the high watermark, acks=all at it; readers stop at it and wake when it moves; too few in sync refuses acks=all only", async () => {
  const topic = "gated";
  await createTopic(h, topic);
  const stream = h.srv.jetstream!.streams.get(topic)!;
  const gate = new TestGate(stream);
  stream.setReplicaGate(0, gate);
  const producer = client().producer();
  await producer.connect();
  try {
    // acks=1: answered once stored here, while nothing is replicated; shipped to the followers all the same.
    const one = await producer.send({ topic, acks: 1, messages: [{ value: "a" }, { value: "b" }] });
    assert.equal(one[0].baseOffset, "0");
    assert.equal(gate.shipped, 2);
    assert.equal(stream.partitions[0].state().lastSeq, 2);
    // Consumers see nothing past the high watermark: ListOffsets latest is it.
    assert.equal(await latest(topic), "0");

    // A consumer waiting at the high watermark, with a long fetch wait: it must be woken by the watermark, not its timer.
    const consumer = client().consumer({ groupId: "gate-readers", maxWaitTimeInMs: 25_000 });
    const seen: Array<{ offset: string; value: string }> = [];
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void seen.push({ offset: message.offset, value: message.value!.toString() }) });
    try {
      // acks=all: the answer waits for the high watermark to pass the batch.
      let answered = false;
      const all = producer.send({ topic, acks: -1, messages: [{ value: "c" }] }).then((r) => {
        answered = true;
        return r;
      });
      await waitUntil(() => gate.waiting.length === 1, "the acks=all batch to wait for its replicas");
      assert.equal(gate.waiting[0].seq, 3);
      assert.equal(answered, false, "acks=all is not answered before the high watermark passes it");
      assert.deepEqual(seen, [], "nothing past the high watermark is read");
      assert.equal(await latest(topic), "0");

      const movedAt = Date.now();
      gate.advance(3); // a and b replicated
      await waitUntil(() => seen.length === 2, "the consumer to read a and b", 15_000);
      assert.ok(Date.now() - movedAt < 15_000, "woken by the watermark, not by the end of its 25 s fetch wait");
      assert.deepEqual(seen, [
        { offset: "0", value: "a" },
        { offset: "1", value: "b" },
      ]);
      assert.equal(answered, false);
      assert.equal(await latest(topic), "2");
      gate.advance(4);
      const r = await all;
      assert.equal(r[0].baseOffset, "2");
      await waitUntil(() => seen.length === 3, "the consumer to read c");
      assert.equal(await latest(topic), "3");
    } finally {
      await consumer.disconnect();
    }

    // Too few in sync: acks=all refused NOT_ENOUGH_REPLICAS (retriable: KafkaJS would retry it), acks=1 taken.
    gate.tooFew = true;
    const impatient = client(0).producer({ retry: { retries: 0 } });
    await impatient.connect();
    try {
      await assert.rejects(impatient.send({ topic, acks: -1, messages: [{ value: "refused" }] }), (err: Error & { type?: string; cause?: { type?: string } }) => {
        assert.equal(err.type ?? err.cause?.type, "NOT_ENOUGH_REPLICAS", String(err));
        return true;
      });
      const taken = await impatient.send({ topic, acks: 1, messages: [{ value: "d" }] });
      assert.equal(taken[0].baseOffset, "3");
    } finally {
      await impatient.disconnect();
    }
    assert.equal(stream.partitions[0].state().lastSeq, 4, "the refused batch was not stored");
  } finally {
    await producer.disconnect();
    stream.setReplicaGate(0, undefined);
  }
  // Without the gate, everything stored is readable again.
  assert.equal(await latest(topic), "4");
});

test("KIP-207: while a new leader's high watermark is below the log end it began with, ListOffsets latest is OFFSET_NOT_AVAILABLE, and KafkaJS retries", async () => {
  const topic = "gated-settling";
  await createTopic(h, topic);
  const stream = h.srv.jetstream!.streams.get(topic)!;
  const producer = client().producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [{ value: "a" }, { value: "b" }] });
  await producer.disconnect();
  // The new leader's followers have fetched record 0 of its two: the high watermark lags the log end it began with.
  let asked = 0;
  let current = false;
  const gate = Object.defineProperty(new TestGate(stream), "highWatermarkCurrent", { get: () => (asked++, current) });
  gate.highWatermark = 2;
  stream.setReplicaGate(0, gate);
  const listOffsets = (version: number, timestamp: number): Promise<{ error: number; offset: number }> =>
    ask(h.srv.kafkaPort!, frame(2, version, (w) => {
      w.i32(-1);
      if (version >= 2) w.i8(0);
      w.arrayLength(1).string(topic).arrayLength(1).i32(0).i64(timestamp);
      if (version === 0) w.i32(1);
    }), (r) => {
      if (version >= 2) r.i32();
      r.i32();
      r.string();
      r.i32();
      r.i32();
      const error = r.i16();
      if (version === 0) return { error, offset: r.i32() === 1 ? r.i64() : -1 };
      r.i64();
      return { error, offset: r.i64() };
    });
  try {
    const OFFSET_NOT_AVAILABLE = 78;
    assert.deepEqual(await listOffsets(1, -1), { error: OFFSET_NOT_AVAILABLE, offset: -1 }, "latest");
    assert.deepEqual(await listOffsets(2, -1), { error: OFFSET_NOT_AVAILABLE, offset: -1 });
    assert.deepEqual(await listOffsets(2, Date.now() + 60_000), { error: OFFSET_NOT_AVAILABLE, offset: -1 }, "a time past every visible record");
    assert.deepEqual(await listOffsets(2, -2), { error: 0, offset: 0 }, "earliest is known");
    assert.deepEqual(await listOffsets(2, 0), { error: 0, offset: 0 }, "a time found below the high watermark");
    assert.equal((await listOffsets(0, -1)).error, 0, "v0, which Kafka answers without the check");
    // KafkaJS gets it as Kafka's retriable error (its admin gives it to the caller, as against Kafka).
    await assert.rejects(latest(topic), (e: { type?: string; retriable?: boolean }) => e.type === "OFFSET_NOT_AVAILABLE" && e.retriable === true);
    // librdkafka, starting at the end, asks again until the followers have fetched, then starts at the right place.
    const before = asked;
    const reader = kcatRunning(["-b", h.broker, "-C", "-t", topic, "-o", "end", "-c", "1", "-f", "%o %s\n"]);
    try {
      await waitUntil(() => asked >= before + 2, `kcat to ask again after OFFSET_NOT_AVAILABLE (${reader.stderr()})`, 20_000);
      gate.highWatermark = 3;
      current = true;
      const settled = asked;
      await waitUntil(() => asked > settled, "kcat to ask once more, and be answered", 20_000);
      const one = client().producer();
      await one.connect();
      await one.send({ topic, acks: 1, messages: [{ value: "c" }] });
      await one.disconnect();
      gate.advance(4);
      await waitUntil(() => reader.stdout() !== "", "kcat to read the record", 20_000);
      assert.equal(await reader.exited, "2 c\n", "kcat reads from the end the followers have: the record after it, not the ones before");
    } finally {
      reader.kill();
    }
  } finally {
    stream.setReplicaGate(0, undefined);
  }
});

test("an idempotent batch stored here whose replication failed is a duplicate when retried: answered at its offset once replicated, stored once", async () => {
  const topic = "gated-retry";
  await createTopic(h, topic);
  const stream = h.srv.jetstream!.streams.get(topic)!;
  const gate = new TestGate(stream);
  stream.setReplicaGate(0, gate);
  const producer = client(5).producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    // The leader's lease lost while the stored batch waited for its replicas: REQUEST_TIMED_OUT ("possibly stored"); KafkaJS
    // sends the same batch again.
    gate.failNext = new OutcomeUnknownError("this node lost its cluster lease");
    let answered = false;
    const sent = producer.send({ topic, acks: -1, messages: [{ value: "x" }] }).then((r) => {
      answered = true;
      return r;
    });
    await waitUntil(() => gate.waiting.length === 1, "the retried batch to wait for its replicas");
    assert.equal(gate.failNext, null, "the first attempt's replication failed");
    assert.equal(stream.partitions[0].state().lastSeq, 1, "the retry is not stored again");
    assert.equal(gate.waiting[0].seq, 1, "the retry waits for the first attempt's record");
    assert.equal(answered, false, "a duplicate is answered only once replicated");
    gate.advance(2);
    const r = await sent;
    assert.equal(r[0].baseOffset, "0");
    // The producer goes on from there.
    gate.advance(3);
    const next = await producer.send({ topic, acks: -1, messages: [{ value: "y" }] });
    assert.equal(next[0].baseOffset, "1");
    assert.equal(stream.partitions[0].state().lastSeq, 2);
  } finally {
    await producer.disconnect();
    stream.setReplicaGate(0, undefined);
  }
});

test("a transactional batch stored here whose replication failed, retried as a duplicate, is still the transaction's: aborted, no read_committed reader sees it", async () => {
  const topic = "gated-txn";
  await createTopic(h, topic);
  const stream = h.srv.jetstream!.streams.get(topic)!;
  const gate = new TestGate(stream);
  stream.setReplicaGate(0, gate);
  gate.advance(1_000); // everything replicates at once, but for the failure below
  const producer = client(5).producer({ transactionalId: "gated-tx", idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    const txn = await producer.transaction();
    gate.failNext = new OutcomeUnknownError("this node lost its cluster lease");
    await txn.send({ topic, acks: -1, messages: [{ value: "aborted 1" }] });
    assert.equal(gate.failNext, null, "the first attempt's replication failed and KafkaJS sent the batch again");
    assert.equal(stream.partitions[0].state().lastSeq, 1, "stored once");
    // A later batch of the transaction: the transaction's first offset must still be the retried batch's.
    await txn.send({ topic, acks: -1, messages: [{ value: "aborted 2" }] });
    await txn.abort();
    await producer.send({ topic, acks: -1, messages: [{ value: "kept" }] });
  } finally {
    await producer.disconnect();
  }
  const consumer = client().consumer({ groupId: "gated-txn-readers", readUncommitted: false });
  const seen: string[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void seen.push(message.value!.toString()) });
    await waitUntil(() => seen.includes("kept"), "the committed record");
    assert.deepEqual(seen, ["kept"]);
  } finally {
    await consumer.disconnect();
    stream.setReplicaGate(0, undefined);
  }
});
