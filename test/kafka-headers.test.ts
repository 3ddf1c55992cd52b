/**
 * Kafka record headers are an ordered list that may repeat names; NATS
 * headers are the same list in a header block. Both doors keep the order and
 * every duplicate: kcat (librdkafka), KafkaJS and the official nats client,
 * each way. And the byte-level walkers the hot paths use (HeaderCursor,
 * isUtf8Span) agree with the plain implementations they stand in for.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { isUtf8 } from "node:buffer";
import { connect, headers as natsHeaders, type NatsConnection } from "nats";
import { createTopic as createKafkaTopic, kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { RawClient } from "./helpers/raw.js";
import { rng } from "./helpers/random.js";
import { HeaderCursor, parseHeaders } from "../src/streams/headers.js";
import { isUtf8Span } from "../src/protocols/kafka/messages.js";

/** Every record of a topic as kcat prints it: value and headers (`name=value`, comma-separated, in record order). */
async function kcatRecords(broker: string, topic: string): Promise<Array<[string, string]>> {
  const r = await kcat(["-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\t%h\n"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t") as [string, string]);
}

describe("Kafka headers: order and repeated names, across both doors", () => {
  let h: KafkaHarness;
  let nc: NatsConnection;

  before(async () => {
    h = await startKafka();
    // The v2 client: its raw JetStream API answers carry the header block as stored.
    nc = await connect({ servers: h.srv.url });
  });
  after(async () => {
    await nc.close();
    await h.close();
  });

  const createTopic = (topic: string): Promise<void> => createKafkaTopic(h, topic);

  /** The header block of a stored message exactly as the JetStream API hands it to NATS readers. */
  async function storedBlock(stream: string, seq: number): Promise<string> {
    const m = await nc.request(`$JS.API.STREAM.MSG.GET.${stream}`, JSON.stringify({ seq }), { timeout: 5000 });
    const answer = JSON.parse(new TextDecoder().decode(m.data)) as { message?: { hdrs?: string } };
    return Buffer.from(answer.message?.hdrs ?? "", "base64").toString("latin1");
  }

  test("kcat -H in any order with repeats: kcat, KafkaJS and NATS readers get the list as sent", async () => {
    const topic = "hdr.order";
    await createTopic(topic);
    const sent = ["a=1", "b=2", "a=3", "c=", "b=4"];
    const p = await kcat(["-b", h.broker, "-P", "-t", topic, ...sent.flatMap((x) => ["-H", x])], "v\n");
    assert.equal(p.code, 0, p.stderr);

    assert.deepEqual(await kcatRecords(h.broker, topic), [["v", "a=1,b=2,a=3,c=,b=4"]]);

    // KafkaJS gathers a repeated name's values into an array: each one is there, in order.
    const consumer = h.kafka().consumer({ groupId: "hdr-order", maxWaitTimeInMs: 100 });
    const got: Array<Record<string, unknown>> = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      let done!: () => void;
      const first = new Promise<void>((resolve) => (done = resolve));
      await consumer.run({
        eachMessage: async ({ message }) => {
          const headers: Record<string, unknown> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = Array.isArray(v) ? v.map(String) : String(v);
          got.push(headers);
          done();
        },
      });
      await first;
    } finally {
      await consumer.disconnect();
    }
    assert.deepEqual(got, [{ a: ["1", "3"], b: ["2", "4"], c: "" }]);

    // A NATS reader gets the same list, in the header block.
    assert.equal(await storedBlock("hdr_order", 1), "NATS/1.0\r\na: 1\r\nb: 2\r\na: 3\r\nc: \r\nb: 4\r\n\r\n");
  });

  test("KafkaJS headers with repeated names reach kcat and NATS readers with every value", async () => {
    const topic = "hdr.kafkajs";
    await createTopic(topic);
    const producer = h.kafka().producer();
    await producer.connect();
    try {
      await producer.send({ topic, acks: -1, messages: [{ value: "v", headers: { trace: "t1", tag: ["x", "y", "x"], empty: "" } }] });
    } finally {
      await producer.disconnect();
    }
    assert.deepEqual(await kcatRecords(h.broker, topic), [["v", "trace=t1,tag=x,tag=y,tag=x,empty="]]);
    assert.equal(await storedBlock("hdr_kafkajs", 1), "NATS/1.0\r\ntrace: t1\r\ntag: x\r\ntag: y\r\ntag: x\r\nempty: \r\n\r\n");
  });

  test("NATS publishes with repeated headers are fetched over Kafka in block order: the nats client's and a raw HPUB's", async () => {
    const topic = "hdr.nats";
    await createTopic(topic);
    const js = nc.jetstream();
    const hdrs = natsHeaders();
    hdrs.append("a", "1");
    hdrs.append("b", "2");
    hdrs.append("a", "3");
    await js.publish(topic, "from-client", { headers: hdrs });
    // The client writes a name's values together; a raw HPUB can interleave them as any NATS publisher may.
    const raw = await RawClient.connected(h.srv.port, '{"verbose":false,"pedantic":false,"headers":true}');
    try {
      const block = "NATS/1.0\r\na: 1\r\nb: 2\r\na: 3\r\nc: \r\nb: 4\r\n\r\n";
      raw.send(`HPUB ${topic} ${block.length} ${block.length + 3}\r\n${block}raw\r\nPING\r\n`);
      await raw.waitFor(/PONG\r\n/, "PONG after HPUB");
    } finally {
      raw.destroy();
    }
    const published = await kcatRecords(h.broker, topic);
    assert.equal(published.length, 2, JSON.stringify(published));
    assert.deepEqual(published, [
      ["from-client", [...hdrs.keys()].flatMap((k) => hdrs.values(k).map((v) => `${k}=${v}`)).join(",")],
      ["raw", "a=1,b=2,a=3,c=,b=4"],
    ]);
  });

  test("headers a NATS header line cannot carry are kept byte for byte for Kafka readers, and reach NATS readers as Kafka-Header lines", async () => {
    // An outside test: binary values (a DLT header's offset, 8 bytes), stack traces, null values, names with spaces
    // were refused INVALID_RECORD, which producers report as a lost record; Kafka takes any header.
    const topic = "hdr.binary";
    await createTopic(topic);
    const headers = `[("bin", b"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x0a"), ("hi", b"\\x80\\xff"), ("trace", b"line1\\n\\tat x\\r\\n"), ("sp ace", b"v"), ("col:on", b"v"), ("n\\u00f6n", b"v"), ("", b"no name"), ("nul", None), ("pad", b" x "), ("Kafka-Txn", b"1 2"), ("kafka-header", b"k"), ("plain", b"ok"), ("empty", b"")]`;
    const py = await python(`
from confluent_kafka import Producer
from kafka import KafkaConsumer
headers = ${headers}
p = Producer({"bootstrap.servers": "${h.broker}"})
delivered = []
p.produce("${topic}", b"whole", headers=headers, on_delivery=lambda err, m: delivered.append(err))
p.flush(10)
# A Nats-Subject header stores the batch record by record, through the NATS header block.
p.produce("${topic}", b"one by one", headers=headers + [("Nats-Subject", b"${topic}")], on_delivery=lambda err, m: delivered.append(err))
p.flush(10)
if delivered != [None, None]: raise SystemExit("not delivered: " + repr(delivered))
# kafka-python reads them (confluent-kafka 1.7's consumer frees None once too often for each null header value).
c = KafkaConsumer("${topic}", bootstrap_servers="${h.broker}", auto_offset_reset="earliest", consumer_timeout_ms=10000)
seen = []
for m in c:
    seen.append((m.value, m.headers))
    if len(seen) == 2: break
c.close()
for value, got in seen:
    print(value.decode(), "same" if got == headers else repr(got))
`);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.trim().split("\n").slice(0, 2).join("|"), "whole same|one by one same");

    // NATS readers: what a header line can carry as it is, as it is; the rest as Kafka-Header: <base64 name>,<base64 value>.
    const b64 = (s: string | Buffer): string => Buffer.from(s).toString("base64");
    const want =
      "NATS/1.0\r\n" +
      `Kafka-Header: ${b64("bin")},${b64(Buffer.from([0, 0, 0, 0, 0, 0, 0, 10]))}\r\n` +
      `Kafka-Header: ${b64("hi")},${b64(Buffer.from([0x80, 0xff]))}\r\n` +
      `Kafka-Header: ${b64("trace")},${b64("line1\n\tat x\r\n")}\r\n` +
      `Kafka-Header: ${b64("sp ace")},${b64("v")}\r\n` +
      `Kafka-Header: ${b64("col:on")},${b64("v")}\r\n` +
      `Kafka-Header: ${b64("nön")},${b64("v")}\r\n` +
      `Kafka-Header: ,${b64("no name")}\r\n` +
      `Kafka-Header: ${b64("nul")}\r\n` +
      `Kafka-Header: ${b64("pad")},${b64(" x ")}\r\n` +
      `Kafka-Header: ${b64("Kafka-Txn")},${b64("1 2")}\r\n` +
      `Kafka-Header: ${b64("kafka-header")},${b64("k")}\r\n` +
      "plain: ok\r\nempty: \r\n\r\n";
    const stream = "hdr_binary";
    assert.equal(Buffer.from(await storedBlock(stream, 1), "latin1").toString("utf8"), want, "a batch kept whole, as NATS readers get it");
    assert.equal(Buffer.from(await storedBlock(stream, 2), "latin1").toString("utf8"), want, "a record stored on its own");

    // A NATS publisher can send Kafka readers such a header the same way; a Kafka-Header line that is not base64 is
    // passed on as it is.
    const hdrs = natsHeaders();
    hdrs.append("Kafka-Header", `${b64("bin")},${b64(Buffer.from([0xfe, 0x0a]))}`);
    hdrs.append("Kafka-Header", `${b64("gone")}`);
    hdrs.append("Kafka-Header", "not base64!");
    await nc.jetstream().publish(topic, "from nats", { headers: hdrs });
    const fromNats = await python(`
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers="${h.broker}", consumer_timeout_ms=10000)
c.assign([TopicPartition("${topic}", 0)])
c.seek(TopicPartition("${topic}", 0), 2)
for m in c:
    print(repr(m.headers))
    break
c.close()
`);
    assert.equal(fromNats.code, 0, fromNats.stderr);
    assert.equal(fromNats.stdout.trim(), "[('bin', b'\\xfe\\n'), ('gone', None), ('Kafka-Header', b'not base64!')]");
  });

  test("HeaderCursor walks a block as parseHeaders reads it, in order; isUtf8Span judges as isUtf8", () => {
    const blocks = [
      "NATS/1.0\r\na: 1\r\nb: 2\r\na: 3\r\n\r\n",
      "NATS/1.0 503\r\n\r\n",
      "NATS/1.0\r\n  spaced :  v w \t\r\nno colon\r\n: nameless\r\nx:\r\n\r\n",
      "NATS/1.0\r\nk: v",
      "NATS/1.0",
      "",
    ];
    const cursor = new HeaderCursor();
    for (const text of blocks) {
      const b = Buffer.from(text, "latin1");
      const walked: Array<[string, string]> = [];
      cursor.reset(b);
      while (cursor.next()) walked.push([b.toString("latin1", cursor.nameAt, cursor.nameEnd), b.toString("latin1", cursor.valueAt, cursor.valueEnd)]);
      // parseHeaders groups by name; the cursor's fields, grouped the same way, must match it.
      const grouped = new Map<string, string[]>();
      for (const [k, v] of walked) grouped.set(k, [...(grouped.get(k) ?? []), v]);
      const expected = [...parseHeaders(b, 0, b.length)].filter(([k]) => k !== "");
      assert.deepEqual([...grouped], expected, JSON.stringify(text));
    }
    cursor.reset(Buffer.from(blocks[0], "latin1"));
    const order: string[] = [];
    while (cursor.next()) order.push(String.fromCharCode(cursor.block[cursor.nameAt]));
    assert.deepEqual(order, ["a", "b", "a"]);

    const random = rng(17);
    const interesting = [0x00, 0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xa0, 0x9f, 0xed, 0xef, 0xf0, 0x90, 0x8f, 0xf4, 0xf5, 0xff];
    for (let n = 0; n < 20_000; n++) {
      const len = Math.floor(random() * 8);
      const b = Buffer.alloc(len);
      for (let i = 0; i < len; i++) b[i] = random() < 0.7 ? interesting[Math.floor(random() * interesting.length)] : Math.floor(random() * 256);
      assert.equal(isUtf8Span(b, 0, len), isUtf8(b), b.toString("hex"));
    }
    for (const s of ["", "plain", "é", "日本", "😀", "a😀b"]) {
      const b = Buffer.from(`[${s}]`);
      assert.equal(isUtf8Span(b, 1, b.length - 1), true, s);
    }
  });
});
