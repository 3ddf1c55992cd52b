/**
 * JetStream readers of a stream with several partitions (a Kafka topic made
 * with numPartitions > 1, or grown with CreatePartitions): consumers of the
 * official clients (v3 `@nats-io/jetstream`, v2 `nats`) see every
 * partition's records exactly once, each partition in order, under one
 * stream sequence that MSG.GET, acks, num_pending and a restart agree on.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import v2 from "nats";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";

type Producer = ReturnType<ReturnType<KafkaHarness["kafka"]>["producer"]>;

const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** "p<partition>-<i>" → [partition, i] */
const parse = (v: string): [number, number] => {
  const m = /^p(\d+)-(\d+)$/.exec(v);
  assert.ok(m !== null, `unexpected value ${v}`);
  return [Number(m[1]), Number(m[2])];
};

/** Each partition's records in the order they came, and no record twice. */
function checkOrder(values: string[], perPartition: number[]): void {
  const next = perPartition.map(() => 0);
  for (const v of values) {
    const [p, i] = parse(v);
    assert.equal(i, next[p], `partition ${p}: expected record ${next[p]}, got ${i}`);
    next[p]++;
  }
  assert.deepEqual(next, perPartition);
}

describe("JetStream consumers of a stream with several partitions", () => {
  let h: KafkaHarness;
  let producer: Producer;
  /** Records sent so far per topic and partition. */
  const sent = new Map<string, number[]>();

  const createTopic = async (topic: string, numPartitions: number): Promise<void> => {
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
    sent.set(topic, new Array<number>(numPartitions).fill(0));
  };

  /** `rounds` produce requests, each with one or two records for every partition: many interleaved runs. */
  const fill = async (topic: string, rounds: number): Promise<void> => {
    const counts = sent.get(topic)!;
    for (let r = 0; r < rounds; r++) {
      const messages: Array<{ partition: number; value: string }> = [];
      for (let p = 0; p < counts.length; p++) {
        const n = (r + p) % 2 === 0 ? 1 : 2;
        for (let k = 0; k < n; k++) messages.push({ partition: p, value: `p${p}-${counts[p]++}` });
      }
      await producer.send({ topic, acks: -1, messages });
    }
  };

  const total = (topic: string): number => sent.get(topic)!.reduce((a, b) => a + b, 0);

  /**
   * Waits until the stream's last sequence covers every record sent: a
   * produce is acknowledged once its partition has it, and its stream
   * sequence becomes durable (and visible to JetStream readers) a sync later.
   */
  const settled = async (topic: string): Promise<number> => {
    const n = total(topic);
    const jsm = await jetstreamManager(h.nc);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const last = (await jsm.streams.info(topic)).state.last_seq;
      if (last === n) return n;
      assert.ok(last < n && Date.now() < deadline, `stream ${topic}: last_seq ${last}, ${n} records sent`);
      await new Promise((r) => setImmediate(r));
    }
  };

  /** Fetches with a v3 pull consumer until `n` messages came (or the deadline), acking each. */
  const fetchN = async (stream: string, durable: string, n: number, ack = true): Promise<JsMsg[]> => {
    const c = await jetstream(h.nc).consumers.get(stream, durable);
    const out: JsMsg[] = [];
    const deadline = Date.now() + 15_000;
    while (out.length < n && Date.now() < deadline) {
      // expires sets the heartbeat the client expects (half of it): a short one reads a loaded machine's pauses as missed heartbeats.
      for await (const m of await c.fetch({ max_messages: Math.min(100, n - out.length), expires: 5000 })) {
        out.push(m);
        if (ack) await m.ackAck();
      }
    }
    return out;
  };

  before(async () => {
    h = await startKafka();
    producer = h.kafka().producer();
    await producer.connect();
  });
  after(async () => {
    await producer.disconnect().catch(() => undefined);
    await h.close();
  });

  test("a durable pull consumer gets every partition's records once, in order within each, under dense stream sequences", async () => {
    const topic = "parts";
    await createTopic(topic, 3);
    await fill(topic, 20);
    const n = await settled(topic);
    const jsm = await jetstreamManager(h.nc);
    const si = await jsm.streams.info(topic);
    assert.equal(si.state.messages, n);
    assert.equal(si.state.first_seq, 1);
    assert.equal(si.state.last_seq, n);
    await jsm.consumers.add(topic, { durable_name: "pull", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info(topic, "pull")).num_pending, n);

    const got = await fetchN(topic, "pull", n);
    assert.equal(got.length, n);
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: n }, (_, i) => i + 1));
    checkOrder(got.map((m) => dec(m.data)), sent.get(topic)!);
    const info = await jsm.consumers.info(topic, "pull");
    assert.equal(info.num_pending, 0);
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.delivered.stream_seq, n);
    assert.equal(info.ack_floor.stream_seq, n);

    // MSG.GET (and direct get's sibling, the API get) by a sequence the consumer reported: the same record.
    for (const m of [got[0], got[7], got[n - 1]]) {
      const sm = await jsm.streams.getMessage(topic, { seq: m.seq });
      assert.equal(sm?.string(), dec(m.data));
      assert.equal(sm?.seq, m.seq);
    }

    // More records: num_pending counts them, and they come next.
    await fill(topic, 3);
    const more = (await settled(topic)) - n;
    assert.equal((await jsm.consumers.info(topic, "pull")).num_pending, more);
    const next = await fetchN(topic, "pull", more);
    assert.deepEqual(next.map((m) => m.seq), Array.from({ length: more }, (_, i) => n + i + 1));
    checkOrder([...got, ...next].map((m) => dec(m.data)), sent.get(topic)!);

    // by_start_sequence from a sequence a consumer reported: from that record on.
    const from = got[10];
    await jsm.consumers.add(topic, { durable_name: "from", ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.seq });
    const tail = await fetchN(topic, "from", total(topic) - from.seq + 1, false);
    assert.equal(dec(tail[0].data), dec(from.data));
    assert.equal(tail.length, total(topic) - from.seq + 1);
  });

  test("a push consumer (v2 client) gets everything once, each partition in order", async () => {
    const topic = "parts-push";
    await createTopic(topic, 3);
    await fill(topic, 15);
    const n = await settled(topic);
    const nc = await v2.connect({ servers: h.srv.url });
    try {
      const js2 = nc.jetstream();
      const sub = await js2.subscribe(topic, v2.consumerOpts().durable("push").deliverTo(v2.createInbox()).ackExplicit().manualAck().deliverAll());
      const values: string[] = [];
      const seqs: number[] = [];
      for await (const m of sub) {
        values.push(dec(m.data));
        seqs.push(m.seq);
        m.ack();
        if (values.length === n) break;
      }
      assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => i + 1));
      checkOrder(values, sent.get(topic)!);
      // The v2 client's ordered consumer agrees.
      const ordered = await js2.subscribe(topic, v2.consumerOpts().orderedConsumer().deliverAll());
      const again: string[] = [];
      for await (const m of ordered) {
        again.push(dec(m.data));
        if (m.info.pending === 0) break;
      }
      assert.deepEqual(again, values);
    } finally {
      await nc.close();
    }
  });

  test("acks and redelivery after ack_wait; num_ack_pending and num_pending", async () => {
    const topic = "parts-ack";
    await createTopic(topic, 3);
    await fill(topic, 4);
    const n = await settled(topic);
    const jsm = await jetstreamManager(h.nc);
    // Two unacknowledged at most: once they are out, only their redelivery can come.
    await jsm.consumers.add(topic, { durable_name: "slow", ack_policy: AckPolicy.Explicit, ack_wait: 500_000_000, max_ack_pending: 2 });
    const first = await fetchN(topic, "slow", 2, false);
    assert.deepEqual(first.map((m) => m.seq), [1, 2]);
    let info = await jsm.consumers.info(topic, "slow");
    assert.equal(info.num_ack_pending, 2);
    assert.equal(info.num_pending, n - 2);
    const again = await fetchN(topic, "slow", 2, false);
    assert.deepEqual(again.map((m) => [m.seq, dec(m.data), m.redelivered]), first.map((m) => [m.seq, dec(m.data), true]));
    await again[1].ackAck();
    await again[0].ackAck();
    info = await jsm.consumers.info(topic, "slow");
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.ack_floor.stream_seq, 2);
    const rest = await fetchN(topic, "slow", n - 2);
    assert.deepEqual(rest.map((m) => m.seq), Array.from({ length: n - 2 }, (_, i) => i + 3));
    checkOrder([...first, ...rest].map((m) => dec(m.data)), sent.get(topic)!);
  });

  test("a durable resumes after a restart without duplicates or gaps; the order file keeps every sequence", async () => {
    const topic = "parts-restart";
    await createTopic(topic, 3);
    await fill(topic, 10);
    await settled(topic);
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "d", ack_policy: AckPolicy.Explicit });
    const before = await fetchN(topic, "d", 12);
    const seqToValue = new Map(before.map((m) => [m.seq, dec(m.data)]));
    await producer.disconnect();
    await h.restart();
    producer = h.kafka().producer();
    await producer.connect();
    await fill(topic, 5);
    const n = await settled(topic);
    const jsmAfter = await jetstreamManager(h.nc);
    assert.equal((await jsmAfter.consumers.info(topic, "d")).num_pending, n - 12);
    // The sequences delivered before the restart name the same records after it.
    for (const [seq, value] of seqToValue) assert.equal((await jsmAfter.streams.getMessage(topic, { seq }))?.string(), value);
    const after = await fetchN(topic, "d", n - 12);
    assert.equal(after.length, n - 12);
    assert.deepEqual([...before, ...after].map((m) => m.seq), Array.from({ length: n }, (_, i) => i + 1));
    checkOrder([...before, ...after].map((m) => dec(m.data)), sent.get(topic)!);
  });

  test("an ordered consumer reads everything, each partition in order", async () => {
    const topic = "parts-ordered";
    await createTopic(topic, 3);
    await fill(topic, 12);
    const n = await settled(topic);
    const c = await jetstream(h.nc).consumers.get(topic);
    const values: string[] = [];
    const seqs: number[] = [];
    const it = await c.consume();
    for await (const m of it) {
      values.push(dec(m.data));
      seqs.push(m.seq);
      if (values.length === n) break;
    }
    assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => i + 1));
    checkOrder(values, sent.get(topic)!);
  });

  test("an open transaction in one partition holds back only its own records; aborted ones never come", async () => {
    const topic = "parts-txn";
    await createTopic(topic, 2);
    const tx = h.kafka().producer({ transactionalId: "parts-tx", idempotent: true, maxInFlightRequests: 1 });
    await tx.connect();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.consumers.add(topic, { durable_name: "t", ack_policy: AckPolicy.Explicit });
      const open = await tx.transaction();
      await open.send({ topic, messages: [{ partition: 1, value: "open-1" }] });
      await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: "plain-0" }, { partition: 1, value: "plain-1" }] });
      // Partition 0's record comes; partition 1's wait behind the open transaction.
      const early = await fetchN(topic, "t", 1);
      assert.deepEqual(early.map((m) => dec(m.data)), ["plain-0"]);
      assert.equal((await jsm.consumers.info(topic, "t")).num_pending, 0);
      await open.commit();
      const aborted = await tx.transaction();
      await aborted.send({ topic, messages: [{ partition: 0, value: "never" }] });
      await aborted.abort();
      await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: "last-0" }] });
      const rest = await fetchN(topic, "t", 3);
      assert.deepEqual(rest.map((m) => dec(m.data)), ["open-1", "plain-1", "last-0"]);
      assert.equal((await jsm.consumers.info(topic, "t")).num_pending, 0);
    } finally {
      await tx.disconnect();
    }
  });

  test("a stream grown from 1 to 3 partitions keeps its sequences; a consumer reads on into the new partitions", async () => {
    const topic = "parts-grow";
    await createTopic(topic, 1);
    await fill(topic, 5);
    await settled(topic);
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "g", ack_policy: AckPolicy.Explicit });
    const early = await fetchN(topic, "g", 3);
    assert.deepEqual(early.map((m) => [m.seq, dec(m.data)]), [[1, "p0-0"], [2, "p0-1"], [3, "p0-2"]]);
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
    } finally {
      await admin.disconnect();
    }
    // KafkaJS sends nothing to partitions its metadata does not list yet: a new producer learns of them.
    await producer.disconnect();
    producer = h.kafka().producer();
    await producer.connect();
    const counts = sent.get(topic)!;
    counts.push(0, 0);
    await fill(topic, 6);
    const n = await settled(topic);
    assert.equal((await jsm.streams.getMessage(topic, { seq: 2 }))?.string(), "p0-1");
    assert.equal((await jsm.consumers.info(topic, "g")).num_pending, n - 3);
    const rest = await fetchN(topic, "g", n - 3);
    assert.deepEqual([...early, ...rest].map((m) => m.seq), Array.from({ length: n }, (_, i) => i + 1));
    checkOrder([...early, ...rest].map((m) => dec(m.data)), counts);
  });
});
