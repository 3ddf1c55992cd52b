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
import { headers as natsHeaders } from "@nats-io/transport-node";
import v2 from "nats";
import { createTopic as createKafkaTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { apiErrorCode } from "./helpers/js.js";
import { partitionForKey } from "../src/streams/partitioner.js";

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
    await createKafkaTopic(h, topic, numPartitions);
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
   * `published`: records stored besides the Kafka ones (JetStream publishes).
   */
  const settled = async (topic: string, published = 0): Promise<number> => {
    const n = total(topic) + published;
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
    // The redelivery is seen; the rest is read with acks that a loaded machine may take longer than half a second to confirm.
    await jsm.consumers.update(topic, "slow", { ack_wait: 30_000_000_000 });
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

  test("a JetStream publish is acknowledged with the stream sequence readers use; expectations and duplicates speak it too", async () => {
    const topic = "parts-puback";
    await createTopic(topic, 3);
    await fill(topic, 4);
    const n = await settled(topic);
    const js = jetstream(h.nc);
    const jsm = await jetstreamManager(h.nc);
    /** A key Kafka's partitioner puts in partition `p`, as a Nats-Key header. */
    const keyed = (p: number) => {
      let i = 0;
      while (partitionForKey(Buffer.from(`k${i}`), 3) !== p) i++;
      const hd = natsHeaders();
      hd.set("Nats-Key", `k${i}`);
      return hd;
    };
    const acks: number[] = [];
    for (const [i, p] of [1, 2, 0, 1].entries()) {
      const ack = await js.publish(topic, `js-${i}`, { headers: p === 0 ? undefined : keyed(p), msgID: `id-${i}` });
      // Nothing else is written meanwhile: the next stream sequence, whatever the partition's own.
      assert.equal(ack.seq, n + i + 1, `publish ${i} to partition ${p}`);
      // Acknowledged only once durable in the order: readers find it at once under that sequence.
      assert.equal((await jsm.streams.getMessage(topic, { seq: ack.seq }))?.string(), `js-${i}`);
      acks.push(ack.seq);
    }
    assert.equal((await jsm.streams.info(topic)).state.last_seq, n + 4);

    // A retried publish is a duplicate of the stream sequence it was stored at.
    const dup = await js.publish(topic, "again", { headers: keyed(2), msgID: "id-1" });
    assert.deepEqual([dup.duplicate, dup.seq], [true, acks[1]]);

    // Expectations compare stream sequences, and a refusal names the stream's last one.
    const ok = await js.publish(topic, "expected", { headers: keyed(2), expect: { lastSequence: n + 4, lastSubjectSequence: n + 4 } });
    assert.equal(ok.seq, n + 5);
    assert.equal(await apiErrorCode(js.publish(topic, "stale", { expect: { lastSequence: n + 4 } })), 10071);
    await assert.rejects(js.publish(topic, "stale", { headers: keyed(1), expect: { lastSequence: 3 } }), new RegExp(`wrong last sequence: ${n + 5}`));
    // A Kafka produce in between moves the stream's last sequence, once its run is durable.
    await fill(topic, 1);
    const last = await settled(topic, 5);
    assert.equal((await js.publish(topic, "after-kafka", { headers: keyed(1), expect: { lastSequence: last } })).seq, last + 1);

    // After a restart the ids still answer with stream sequences.
    await producer.disconnect();
    await h.restart();
    producer = h.kafka().producer();
    await producer.connect();
    const js2 = jetstream(h.nc);
    const again = await js2.publish(topic, "again", { headers: keyed(1), msgID: "id-3" });
    assert.deepEqual([again.duplicate, again.seq], [true, acks[3]]);
    const fresh = await js2.publish(topic, "fresh", { msgID: "id-new" });
    assert.equal(fresh.seq, last + 2);

    // A rollup purges the whole stream below its stream sequence, every partition.
    const jsm2 = await jetstreamManager(h.nc);
    const cfg = (await jsm2.streams.info(topic)).config;
    await jsm2.streams.update(topic, { ...cfg, allow_rollup_hdrs: true });
    const roll = natsHeaders();
    roll.set("Nats-Rollup", "all");
    roll.set("Nats-Key", keyed(2).get("Nats-Key"));
    const r = await js2.publish(topic, "rollup", { headers: roll });
    assert.equal(r.seq, last + 3);
    const si = await jsm2.streams.info(topic);
    assert.deepEqual([si.state.messages, si.state.first_seq, si.state.last_seq], [1, r.seq, r.seq]);
  });

  test("stream info's deleted_details lists the stream sequences gone from every partition", async () => {
    const topic = "parts-deleted";
    await createTopic(topic, 3);
    await fill(topic, 6);
    const n = await settled(topic);
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "all", ack_policy: AckPolicy.None });
    const seqOf = new Map((await fetchN(topic, "all", n, false)).map((m) => [dec(m.data), m.seq]));
    // Two deletes by stream sequence, and partition 1 purged below its offset 3 (DeleteRecords).
    const byApi = [seqOf.get("p2-1")!, seqOf.get("p0-3")!];
    for (const seq of byApi) assert.ok(await jsm.streams.deleteMessage(topic, seq));
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      // KafkaJS finds partition leaders in metadata it already has.
      await admin.fetchTopicMetadata({ topics: [topic] });
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 1, offset: "3" }] });
    } finally {
      await admin.disconnect();
    }
    const gone = new Set([...byApi, seqOf.get("p1-0")!, seqOf.get("p1-1")!, seqOf.get("p1-2")!]);
    let first = 1;
    while (gone.has(first)) first++;
    // Gone below the first stored record is not "deleted": the stream starts after it.
    const expected = [...gone].filter((s) => s > first).sort((a, b) => a - b);
    assert.ok(expected.length >= 3);
    const si = await jsm.streams.info(topic, { deleted_details: true });
    assert.equal(si.state.first_seq, first);
    assert.equal(si.state.num_deleted, expected.length);
    assert.deepEqual(si.state.deleted, expected);
    // Without the option, no list.
    assert.equal((await jsm.streams.info(topic)).state.deleted, undefined);
  });
});
