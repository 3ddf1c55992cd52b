/**
 * Kafka transactions seen from NATS: a KafkaJS transactional producer
 * commits and aborts on a topic, and the official NATS clients (v3
 * `@nats-io/jetstream`, v2 `nats`) read the stream. They see exactly the
 * committed records (and plain ones), never a control marker, never an
 * aborted record, and an open transaction's records only once it commits;
 * MSG.GET of a hidden sequence is "no message found". All of it holds
 * across a restart.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import v2 from "nats";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { createTopic as createKafkaTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { api, rawPull } from "./helpers/js.js";

type Producer = ReturnType<InstanceType<typeof kafkajs.Kafka>["producer"]>;

const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

describe("Kafka transactions seen by NATS readers", () => {
  let h: KafkaHarness;
  const producers: Producer[] = [];

  const producer = async (transactionalId?: string): Promise<Producer> => {
    const p = transactionalId === undefined ? h.kafka().producer() : h.kafka().producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
    await p.connect();
    producers.push(p);
    return p;
  };

  const createTopic = (topic: string): Promise<void> => createKafkaTopic(h, topic);

  /** Fetches (v3 pull consumer) until `n` messages came, acking each: their (seq, value). */
  const fetchN = async (stream: string, durable: string, n: number): Promise<Array<[number, string]>> => {
    const c = await jetstream(h.nc).consumers.get(stream, durable);
    const out: Array<[number, string]> = [];
    const deadline = Date.now() + 10_000;
    while (out.length < n && Date.now() < deadline) {
      for await (const m of await c.fetch({ max_messages: n - out.length, expires: 5000 })) {
        out.push([m.seq, dec(m.data)]);
        await m.ackAck();
      }
    }
    return out;
  };

  /** MSG.GET of `seq` as the raw API answers it: the error, or null when a message came back. */
  const getError = async (stream: string, seq: number): Promise<unknown> => (await api(h.nc, `$JS.API.STREAM.MSG.GET.${stream}`, { seq })).error ?? null;
  const NOT_FOUND = { code: 404, err_code: 10037, description: "no message found" };

  before(async () => {
    h = await startKafka();
  });
  after(async () => {
    for (const p of producers) await p.disconnect().catch(() => undefined);
    await h.close();
  });

  test("committed and plain records reach a NATS consumer; markers and aborted records never do, nor MSG.GET", async () => {
    const topic = "txnnats";
    await createTopic(topic);
    const plain = await producer();
    const tx = await producer("tx-nats");
    await plain.send({ topic, acks: -1, messages: [{ value: "p0" }] }); // seq 1
    const committed = await tx.transaction();
    await committed.send({ topic, messages: [{ value: "c1" }, { value: "c2" }] }); // seqs 2, 3
    await committed.commit(); // marker at 4
    const aborted = await tx.transaction();
    await aborted.send({ topic, messages: [{ value: "a1" }] }); // seq 5
    await aborted.abort(); // marker at 6

    const jsm = await jetstreamManager(h.nc);
    // The aborted record was the subject's last: the last visible one is c2.
    const last = await jsm.streams.getMessage(topic, { last_by_subj: topic });
    assert.equal(last?.seq, 3);
    assert.equal(last?.string(), "c2");
    // next_by_subj steps over what is hidden.
    assert.deepEqual((await api(h.nc, `$JS.API.STREAM.MSG.GET.${topic}`, { seq: 4, next_by_subj: ">" })).error, NOT_FOUND);
    // The official client's answer to a missing message: null.
    assert.equal(await jsm.streams.getMessage(topic, { seq: 5 }), null);

    await plain.send({ topic, acks: -1, messages: [{ value: "p1" }] }); // seq 7
    await jsm.consumers.add(topic, { durable_name: "all", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info(topic, "all")).num_pending, 4, "num_pending counts only what readers may see");
    assert.deepEqual(await fetchN(topic, "all", 4), [[1, "p0"], [2, "c1"], [3, "c2"], [7, "p1"]]);
    const info = await jsm.consumers.info(topic, "all");
    assert.equal(info.num_pending, 0);
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.delivered.stream_seq, 7);
    assert.equal(info.ack_floor.stream_seq, 7);
    // Nothing more to deliver: a no_wait pull ends at once with 404.
    const more = await rawPull(h.nc, topic, "all", JSON.stringify({ batch: 10, no_wait: true }));
    assert.deepEqual(more.map((a) => a.status?.code), [404]);

    // Markers (4, 6) and the aborted record (5) are answered as missing messages, as nats-server answers one.
    for (const seq of [4, 5, 6]) assert.deepEqual(await getError(topic, seq), NOT_FOUND, `seq ${seq}`);
    assert.equal((await jsm.streams.getMessage(topic, { seq: 3 }))?.string(), "c2");

    // The v2 client agrees (its own ordered consumer, deliver all).
    const nc2 = await v2.connect({ servers: h.srv.url });
    try {
      const js2 = nc2.jetstream();
      const sub = await js2.subscribe(topic, v2.consumerOpts().orderedConsumer().deliverAll());
      const seen: Array<[number, string]> = [];
      for await (const m of sub) {
        seen.push([m.seq, dec(m.data)]);
        if (m.info.pending === 0) break;
      }
      assert.deepEqual(seen, [[1, "p0"], [2, "c1"], [3, "c2"], [7, "p1"]]);
      const m2 = await nc2.request(`$JS.API.STREAM.MSG.GET.${topic}`, JSON.stringify({ seq: 5 }), { timeout: 5000 });
      assert.deepEqual((JSON.parse(dec(m2.data)) as { error: unknown }).error, NOT_FOUND);
    } finally {
      await nc2.close();
    }
  });

  test("an open transaction holds NATS consumers back, even for records stored after its own; its commit releases them in order", async () => {
    const topic = "txnopen";
    await createTopic(topic);
    const plain = await producer();
    const tx = await producer("tx-open");
    await plain.send({ topic, acks: -1, messages: [{ value: "before" }] }); // seq 1
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "live", ack_policy: AckPolicy.Explicit });
    assert.deepEqual(await fetchN(topic, "live", 1), [[1, "before"]]);

    const open = await tx.transaction();
    await open.send({ topic, messages: [{ value: "o1" }, { value: "o2" }] }); // seqs 2, 3
    await plain.send({ topic, acks: -1, messages: [{ value: "behind" }] }); // seq 4: stored, but past the stable point
    assert.equal((await jsm.streams.info(topic)).state.last_seq, 4);
    assert.equal((await jsm.consumers.info(topic, "live")).num_pending, 0);
    const held = await rawPull(h.nc, topic, "live", JSON.stringify({ batch: 10, no_wait: true }));
    assert.deepEqual(held.map((a) => a.status?.code), [404], "nothing past the open transaction's first record");
    assert.deepEqual(await getError(topic, 2), NOT_FOUND);
    // A consumer created while the transaction is open, delivering new messages, starts before it.
    await jsm.consumers.add(topic, { durable_name: "fresh", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New });

    // A pull waiting when the commit lands gets the records at once, in order, then what was stored behind them.
    const c = await jetstream(h.nc).consumers.get(topic, "live");
    const waiting = (async () => {
      const out: string[] = [];
      const deadline = Date.now() + 10_000;
      while (out.length < 3 && Date.now() < deadline) {
        for await (const m of await c.fetch({ max_messages: 3 - out.length, expires: 5000 })) {
          out.push(dec(m.data));
          m.ack();
        }
      }
      return out;
    })();
    await open.commit(); // marker at 5
    assert.deepEqual(await waiting, ["o1", "o2", "behind"]);
    assert.deepEqual(await fetchN(topic, "fresh", 3), [[2, "o1"], [3, "o2"], [4, "behind"]]);
    assert.deepEqual(await getError(topic, 5), NOT_FOUND);
    assert.equal(await getError(topic, 2), null);
  });

  test("an abort hides exactly its own records: another producer's records stored among them stay readable", async () => {
    const topic = "txnmix";
    await createTopic(topic);
    const plain = await producer();
    const tx = await producer("tx-mix");
    const t = await tx.transaction();
    await t.send({ topic, messages: [{ value: "a1" }, { value: "a2" }] }); // seqs 1, 2
    await plain.send({ topic, acks: -1, messages: [{ value: "m1" }] }); // seq 3
    await t.send({ topic, messages: [{ value: "a3" }] }); // seq 4
    await plain.send({ topic, acks: -1, messages: [{ value: "m2" }] }); // seq 5
    await t.abort(); // marker at 6
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "mix", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info(topic, "mix")).num_pending, 2);
    assert.deepEqual(await fetchN(topic, "mix", 2), [[3, "m1"], [5, "m2"]]);
    for (const seq of [1, 2, 4, 6]) assert.deepEqual(await getError(topic, seq), NOT_FOUND, `seq ${seq}`);
    assert.equal((await jsm.streams.getMessage(topic, { seq: 3 }))?.string(), "m1");
  });

  test("a NATS publish opens no transaction (a forged Kafka-Txn header holds no reader), MSG.DELETE of a marker finds nothing; a transactional record naming its subject, or one for a stream that removes messages from inside, is refused", async () => {
    const topic = "txnguard";
    await createTopic(topic);
    const tx = await producer("tx-guard");
    const t = await tx.transaction();
    await t.send({ topic, messages: [{ value: "c1" }] }); // seq 1
    await t.commit(); // marker at 2
    const js = jetstream(h.nc);
    const forged = natsHeaders();
    forged.set("Kafka-Txn", "999 0");
    await js.publish(topic, "forged", { headers: forged }); // seq 3: a plain message to every reader
    await js.publish(topic, "after"); // seq 4
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "guard", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info(topic, "guard")).num_pending, 3);
    assert.deepEqual(await fetchN(topic, "guard", 3), [[1, "c1"], [3, "forged"], [4, "after"]]);
    // The marker is not there to delete (as to MSG.GET): the transaction it ended stays ended.
    assert.equal(((await api(h.nc, `$JS.API.STREAM.MSG.DELETE.${topic}`, { seq: 2 })).error as { err_code: number }).err_code, 10043);
    assert.deepEqual(await getError(topic, 2), NOT_FOUND);

    // Records stored one by one could be forged over NATS: a transaction's are kept as the producer's batch.
    const named = await tx.transaction();
    await assert.rejects(named.send({ topic, messages: [{ value: "named", headers: { "Nats-Subject": topic } }] }), (err: Error & { type?: string }) => err.type === "INVALID_RECORD");
    await named.abort();
    // A per-subject limit would take old markers away, and with them what they decided.
    await jsm.streams.add({ name: "txnkv", subjects: ["txnkv"], max_msgs_per_subject: 1 });
    const kv = await tx.transaction();
    await assert.rejects(kv.send({ topic: "txnkv", messages: [{ value: "v" }] }), (err: Error & { type?: string }) => err.type === "INVALID_RECORD");
    await kv.abort();
  });

  test("a NATS publish on a marker's subject is refused whatever stream captures it: a forged commit or abort decides no transaction", async () => {
    const topic = "txnforge";
    await createTopic(topic);
    const jsm = await jetstreamManager(h.nc);
    const config = (await jsm.streams.info(topic)).config;
    await jsm.streams.update(topic, { ...config, subjects: [topic, "$KAFKA.TXN.>"] });
    const tx = await producer("tx-forge");
    const first = await tx.transaction();
    await first.send({ topic, messages: [{ value: "c1" }] }); // seq 1
    await first.commit(); // marker at 2
    // The producer's own id and epoch, as its committed record names them to a NATS reader.
    const mark = (await jsm.streams.getMessage(topic, { seq: 1 }))?.header.get("Kafka-Txn");
    assert.match(mark ?? "", /^\d+ \d+$/);
    const open = await tx.transaction();
    await open.send({ topic, messages: [{ value: "o1" }] }); // seq 3, its transaction left open
    const js = jetstream(h.nc);
    const forged = natsHeaders();
    forged.set("Kafka-Txn", mark!);
    for (const subject of ["$KAFKA.TXN.COMMIT", "$KAFKA.TXN.ABORT"]) {
      await assert.rejects(js.publish(subject, "", { headers: forged }), (err: Error) => {
        assert.match(err.message, new RegExp(`subject \\${subject} is reserved for the kafka door`, "i"));
        return true;
      });
      h.nc.publish(subject, "", { headers: forged }); // no reply asked: dropped all the same
    }
    // Nor as the stream would store it: a transform cutting a prefix makes a marker's subject of another.
    await jsm.streams.update(topic, { ...config, subjects: [topic, "$KAFKA.TXN.>", "in.>"], subject_transform: { src: "in.>", dest: ">" } });
    await assert.rejects(js.publish("in.$KAFKA.TXN.COMMIT", "", { headers: forged }), /subject \$KAFKA\.TXN\.COMMIT is reserved for the kafka door/i);
    // Nor by a Kafka record naming it (it would pass for no marker, but hide its batch where producers are looked for).
    const plain = await producer();
    await assert.rejects(plain.send({ topic, acks: -1, messages: [{ value: "named", headers: { "Nats-Subject": "$KAFKA.TXN.COMMIT" } }] }), (err: Error & { type?: string }) => err.type === "INVALID_RECORD");
    await h.nc.flush();
    assert.equal((await js.publish(topic, "after")).seq, 4, "nothing stored between the open record and this one");
    await jsm.consumers.add(topic, { durable_name: "forge", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info(topic, "forge")).num_pending, 1, "the open transaction still holds readers back");
    await open.abort(); // marker at 5
    assert.deepEqual(await fetchN(topic, "forge", 2), [[1, "c1"], [4, "after"]]);
    assert.deepEqual(await getError(topic, 3), NOT_FOUND, "aborted by its producer, not committed by a forger");
  });

  test("after a restart: markers and aborted records stay hidden, a durable resumes where it was", async () => {
    const topic = "txnrestart";
    await createTopic(topic);
    const plain = await producer();
    const tx = await producer("tx-restart");
    const t1 = await tx.transaction();
    await t1.send({ topic, messages: [{ value: "k1" }] }); // seq 1, marker 2
    await t1.commit();
    const t2 = await tx.transaction();
    await t2.send({ topic, messages: [{ value: "x1" }, { value: "x2" }] }); // seqs 3, 4, marker 5
    await t2.abort();
    await plain.send({ topic, acks: -1, messages: [{ value: "k2" }] }); // seq 6
    const jsm = await jetstreamManager(h.nc);
    await jsm.consumers.add(topic, { durable_name: "d", ack_policy: AckPolicy.Explicit });
    assert.deepEqual(await fetchN(topic, "d", 1), [[1, "k1"]]);

    // A transaction open at the restart goes on there; its producer then aborts it: its record (7) and marker (8) are hidden too.
    const t3 = await tx.transaction();
    await t3.send({ topic, messages: [{ value: "x3" }] });
    await h.restart({ keepKafkaPort: true });
    await t3.abort();
    const plainAfter = await producer();
    await plainAfter.send({ topic, acks: -1, messages: [{ value: "k3" }] }); // seq 9
    const jsmAfter = await jetstreamManager(h.nc);
    assert.equal((await jsmAfter.consumers.info(topic, "d")).num_pending, 2);
    assert.deepEqual(await fetchN(topic, "d", 2), [[6, "k2"], [9, "k3"]]);
    for (const seq of [2, 3, 4, 5, 7, 8]) assert.deepEqual(await getError(topic, seq), NOT_FOUND, `seq ${seq}`);
    await jsmAfter.consumers.add(topic, { durable_name: "again", ack_policy: AckPolicy.None });
    assert.equal((await jsmAfter.consumers.info(topic, "again")).num_pending, 3);
    const all: string[] = [];
    const c = await jetstream(h.nc).consumers.get(topic, "again");
    for await (const m of await c.fetch({ max_messages: 3, expires: 5000 })) all.push(dec((m as JsMsg).data));
    assert.deepEqual(all, ["k1", "k2", "k3"]);
  });
});
