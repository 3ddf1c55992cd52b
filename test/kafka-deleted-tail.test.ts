/**
 * A Kafka partition whose newest records were deleted over JetStream
 * (MSG.DELETE): nothing is stored from a reader's offset up to the high
 * watermark, which Kafka itself never leaves. Each client must still read
 * on to the high watermark (and to what is produced later) rather than
 * wait at its offset for ever: kcat and confluent-kafka (librdkafka),
 * kafka-python, KafkaJS.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createTopic, kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { api } from "./helpers/js.js";

describe("Kafka readers past deleted newest records", () => {
  let h: KafkaHarness;
  before(async () => {
    h = await startKafka();
  });
  after(async () => h.close());

  /** A topic of `total` records (one kcat batch) whose records from `keep` + 1 on were deleted over JetStream. */
  const topicWithDeletedTail = async (topic: string, total: number, keep: number): Promise<void> => {
    await createTopic(h, topic);
    const lines = Array.from({ length: total }, (_, i) => `v${i}`).join("\n") + "\n";
    const p = await kcat(["-b", h.broker, "-P", "-t", topic, "-p", "0"], lines);
    assert.equal(p.code, 0, p.stderr);
    for (let seq = keep + 1; seq <= total; seq++) {
      const r = await api(h.nc, `$JS.API.STREAM.MSG.DELETE.${topic}`, { seq });
      assert.equal(r.success, true, JSON.stringify(r));
    }
  };

  test("kcat, confluent-kafka and kafka-python reach the high watermark and read what is produced after", async () => {
    await topicWithDeletedTail("tail_c", 30, 10);
    const eof = await kcat(["-b", h.broker, "-C", "-t", "tail_c", "-p", "0", "-o", "beginning", "-e", "-f", "%o:%s\\n"], "", 15_000);
    assert.equal(eof.code, 0, `kcat -e did not end: ${eof.stderr}`);
    assert.deepEqual(eof.stdout.trim().split("\n"), Array.from({ length: 10 }, (_, i) => `${i}:v${i}`));
    assert.match(eof.stderr, /Reached end of topic tail_c \[0\] at offset 30/);

    const r = await python(`
import json, time
import confluent_kafka, kafka
out = {}
c = confluent_kafka.Consumer({"bootstrap.servers": "${h.broker}", "group.id": "tail-ck", "auto.offset.reset": "earliest", "enable.partition.eof": True})
c.subscribe(["tail_c"])
seen, deadline = [], time.time() + 20
while time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        seen.append("eof@%d" % m.offset())
        break
    seen.append(m.offset())
out["confluent"] = seen
c.close()
k = kafka.KafkaConsumer(bootstrap_servers="${h.broker}", auto_offset_reset="earliest", enable_auto_commit=False)
tp = kafka.TopicPartition("tail_c", 0)
k.assign([tp])
seen, deadline = [], time.time() + 20
while k.position(tp) < 30 and time.time() < deadline:
    for recs in k.poll(timeout_ms=500).values():
        seen.extend(r.offset for r in recs)
out["kafka-python"] = {"offsets": seen, "position": k.position(tp)}
p = kafka.KafkaProducer(bootstrap_servers="${h.broker}")
p.send("tail_c", b"after", partition=0).get(timeout=10)
p.close()
got, deadline = [], time.time() + 20
while not got and time.time() < deadline:
    for recs in k.poll(timeout_ms=500).values():
        got.extend([r.offset, r.value.decode()] for r in recs)
out["after"] = got
k.close()
print(json.dumps(out))
`);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    const first10 = Array.from({ length: 10 }, (_, i) => i);
    assert.deepEqual(out.confluent, [...first10, "eof@30"]);
    assert.deepEqual(out["kafka-python"], { offsets: first10, position: 30 });
    assert.deepEqual(out.after, [[30, "after"]]);
  });

  test("a KafkaJS group reads past them to what is produced after", async () => {
    await topicWithDeletedTail("tail_j", 25, 5);
    const kafka = h.kafka();
    const consumer = kafka.consumer({ groupId: "tail-j", maxWaitTimeInMs: 200 });
    const producer = kafka.producer();
    await Promise.all([consumer.connect(), producer.connect()]);
    try {
      await consumer.subscribe({ topic: "tail_j", fromBeginning: true });
      const seen: string[] = [];
      let resolveAfter!: () => void;
      const after = new Promise<void>((resolve) => (resolveAfter = resolve));
      // KafkaJS moves one offset per answer whose records all lie before the offset it fetched; once it has moved to the
      // last deleted one, a record is produced after them (sooner, it would be found by a fetch of the deleted offsets).
      let sent = false;
      consumer.on(consumer.events.START_BATCH_PROCESS, (e) => {
        if (e.payload.lastOffset !== "24" || sent) return;
        sent = true;
        void producer.send({ topic: "tail_j", messages: [{ value: "after" }] });
      });
      await consumer.run({
        eachMessage: async ({ message }) => {
          seen.push(`${message.offset}:${message.value}`);
          if (String(message.value) === "after") resolveAfter();
        },
      });
      // Before the fix the group waited at offset 5 for ever: bounded here so the test fails rather than hangs.
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`stuck after ${seen.join(" ")}`)), 30_000)));
      try {
        await Promise.race([after, stuck]);
      } finally {
        clearTimeout(timer);
      }
      assert.deepEqual(seen, ["0:v0", "1:v1", "2:v2", "3:v3", "4:v4", "25:after"]);
    } finally {
      await Promise.all([consumer.disconnect(), producer.disconnect()]);
    }
  });
});
