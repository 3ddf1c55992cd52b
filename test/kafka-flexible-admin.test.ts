/**
 * The flexible versions of the admin, config, ACL and transaction APIs
 * (compact strings and arrays, tagged fields; what Kafka 3.5+ clients such as
 * @platformatic/kafka send), driven with raw frames and their answers decoded
 * field by field: CreateTopics v7, DescribeConfigs v3–4, AlterConfigs v2,
 * IncrementalAlterConfigs v1, CreatePartitions v3, DeleteRecords v2,
 * DeleteTopics v5–6, DescribeLogDirs v0–4, AddPartitionsToTxn v3, AddOffsetsToTxn v3, EndTxn v3 and
 * the ACL APIs v3. A response is read to its last byte: a field too many or
 * too few fails the test.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { ask, RawKafka, describeLogDirsFrame, describeLogDirsResult, electLeadersFrame, electLeadersResult, fetchFrame, fetchResult, flexibleBody, flexibleFrame, frame, produceFrame, produceResult, topicPartitionErrors } from "./helpers/kafka-raw.js";
import { Writer, type Reader } from "../src/protocols/kafka/codec.js";
import { encodeBatch } from "../src/protocols/kafka/records.js";

const ZERO_UUID = "0".repeat(32);
const RESOURCE_TOPIC = 2;
const RESOURCE_BROKER = 4;
const SOURCE_DYNAMIC_TOPIC = 1;
const SOURCE_DEFAULT = 5;

/** Asserts the whole response was read. */
function end(r: Reader): void {
  r.taggedFields();
  assert.equal(r.remaining, 0, "every byte of the response read");
}

interface ConfigOut {
  name: string;
  value: string | null;
  readOnly: boolean;
  source: number;
  sensitive: boolean;
}

interface CreatedOut {
  name: string;
  topicId: string;
  error: number;
  message: string | null;
  partitions: number;
  replicas: number;
  configs: ConfigOut[] | null;
}

/** CreateTopics v5+ of one topic each: name, partitions and configs. */
function createTopicsV(version: number, topics: Array<{ name: string; partitions: number; configs?: Array<[string, string]> }>, validateOnly = false): Buffer {
  return flexibleFrame(19, version, (w) => {
    w.array(topics, (w, t) => {
      w.string(t.name).i32(t.partitions).i16(-1);
      w.arrayLength(0); // assignments
      w.array(t.configs ?? [], (w, [k, v]) => w.string(k).nullableString(v).taggedFields());
      w.taggedFields();
    });
    w.i32(30_000).bool(validateOnly).taggedFields();
  });
}

function readCreateTopics(r: Reader, version: number): CreatedOut[] {
  flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const topics = r.array((r) => {
    const name = r.string();
    const topicId = version >= 7 ? r.uuid() : ZERO_UUID;
    const error = r.i16();
    const message = r.nullableString();
    const partitions = r.i32();
    const replicas = r.i16();
    const n = r.arrayLength();
    let configs: ConfigOut[] | null = null;
    if (n >= 0) {
      configs = [];
      for (let i = 0; i < n; i++) {
        configs.push({ name: r.string(), value: r.nullableString(), readOnly: r.bool(), source: r.i8(), sensitive: r.bool() });
        r.taggedFields();
      }
    }
    r.taggedFields();
    return { name, topicId, error, message, partitions, replicas, configs };
  });
  end(r);
  return topics;
}

interface DescribedConfig extends ConfigOut {
  synonyms: Array<[string, string | null, number]>;
  type: number;
  doc: string | null;
}

interface DescribedResource {
  error: number;
  message: string | null;
  type: number;
  name: string;
  configs: DescribedConfig[];
}

/** DescribeConfigs v3 (INT16 strings) or v4 (flexible), with synonyms. */
function describeConfigsV(version: 3 | 4, resources: Array<{ type: number; name: string; keys: string[] | null }>, includeDocumentation: boolean): Buffer {
  return (version === 4 ? flexibleFrame : frame)(32, version, (w) => {
    w.array(resources, (w, res) => {
      w.i8(res.type).string(res.name);
      if (res.keys === null) w.arrayLength(-1);
      else w.array(res.keys, (w, k) => w.string(k));
      w.taggedFields();
    });
    w.bool(true).bool(includeDocumentation).taggedFields();
  });
}

function readDescribeConfigs(r: Reader, version: 3 | 4): DescribedResource[] {
  if (version === 4) flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const results = r.array((r) => {
    const error = r.i16();
    const message = r.nullableString();
    const type = r.i8();
    const name = r.string();
    const configs = r.array((r): DescribedConfig => {
      const c = { name: r.string(), value: r.nullableString(), readOnly: r.bool(), source: r.i8(), sensitive: r.bool() };
      const synonyms = r.array((r): [string, string | null, number] => {
        const s: [string, string | null, number] = [r.string(), r.nullableString(), r.i8()];
        r.taggedFields();
        return s;
      });
      const described = { ...c, synonyms, type: r.i8(), doc: r.nullableString() };
      r.taggedFields();
      return described;
    });
    r.taggedFields();
    return { error, message, type, name, configs };
  });
  end(r);
  return results;
}

/** A topic's configs by name, DescribeConfigs v4. */
async function topicConfigs(port: number, topic: string): Promise<Map<string, DescribedConfig>> {
  const [res] = await ask(port, describeConfigsV(4, [{ type: RESOURCE_TOPIC, name: topic, keys: null }], false), (r) => readDescribeConfigs(r, 4));
  assert.equal(res.error, 0, res.message ?? "");
  return new Map(res.configs.map((c) => [c.name, c]));
}

/** AlterConfigs v2 and IncrementalAlterConfigs v1 answers: [error, message, type, name] per resource. */
function readAlter(r: Reader): Array<[number, string | null, number, string]> {
  flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r): [number, string | null, number, string] => {
    const res: [number, string | null, number, string] = [r.i16(), r.nullableString(), r.i8(), r.string()];
    r.taggedFields();
    return res;
  });
  end(r);
  return out;
}

/** The error, and (v2+) message, of each topic of a CreatePartitions answer. */
function readCreatePartitions(r: Reader): Array<[string, number, string | null]> {
  flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r): [string, number, string | null] => {
    const t: [string, number, string | null] = [r.string(), r.i16(), r.nullableString()];
    r.taggedFields();
    return t;
  });
  end(r);
  return out;
}

function createPartitionsV3(topic: string, count: number): Buffer {
  return flexibleFrame(37, 3, (w) => {
    w.arrayLength(1).string(topic).i32(count);
    w.arrayLength(-1); // assignments: null, the broker places them
    w.taggedFields();
    w.i32(30_000).bool(false).taggedFields();
  });
}

interface DeletedOut {
  name: string | null;
  topicId: string;
  error: number;
  message: string | null;
}

function readDeleteTopics(r: Reader, version: 5 | 6): DeletedOut[] {
  flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r) => {
    const name = r.nullableString();
    const topicId = version >= 6 ? r.uuid() : ZERO_UUID;
    const t = { name, topicId, error: r.i16(), message: r.nullableString() };
    r.taggedFields();
    return t;
  });
  end(r);
  return out;
}

/** The one error code of an AddOffsetsToTxn or EndTxn answer (v3: flexible). */
function readTxnError(r: Reader, version: number): number {
  if (version >= 3) flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const error = r.i16();
  if (version >= 3) end(r);
  else assert.equal(r.remaining, 0);
  return error;
}

/** AddPartitionsToTxn of partitions of one topic: [topic, [partition, error]...] per topic. */
function addPartitionsToTxn(version: 1 | 3, txn: { id: string; producerId: number; epoch: number }, topic: string, partitions: number[]): Buffer {
  return (version === 3 ? flexibleFrame : frame)(24, version, (w) => {
    w.string(txn.id).i64(txn.producerId).i16(txn.epoch);
    w.arrayLength(1).string(topic);
    w.array(partitions, (w, p) => w.i32(p));
    w.taggedFields();
    w.taggedFields();
  });
}

function readAddPartitionsToTxn(r: Reader, version: 1 | 3): Array<[string, Array<[number, number]>]> {
  if (version === 3) flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = topicPartitionErrors(r).map(({ name, partitions }): [string, Array<[number, number]>] => [name, partitions]);
  if (version === 3) end(r);
  else assert.equal(r.remaining, 0);
  return out;
}

/** Produce v3 of `values` to partition 0 (one batch, not transactional); the base offset. */
async function produce(port: number, topic: string, values: string[]): Promise<number> {
  const w = new Writer();
  const now = Date.now();
  encodeBatch(
    w,
    values.map((v, i) => ({ offset: i, timestamp: now, key: null, value: Buffer.from(v), headers: null })),
    0,
  );
  const { error, baseOffset } = await ask(port, produceFrame(topic, 0, Buffer.from(w.result())), produceResult);
  assert.equal(error, 0, "produced");
  return baseOffset;
}

/** The error and high watermark of a Fetch v4 of partition 0 from `offset`. */
function fetchFrom(port: number, topic: string, offset: number): Promise<{ error: number; highWatermark: number }> {
  return ask(port, fetchFrame(topic, 0, offset, { maxBytes: 1 }), (r) => fetchResult(r));
}

/** The high watermark of partition 0 (fetched from offset `from`). */
async function highWatermark(port: number, topic: string, from = 0): Promise<number> {
  const { error, highWatermark } = await fetchFrom(port, topic, from);
  assert.equal(error, 0);
  return highWatermark;
}

describe("Kafka flexible admin and transaction APIs", () => {
  let h: KafkaHarness;
  let port: number;

  before(async () => {
    h = await startKafka();
    port = h.srv.kafkaPort!;
  });
  after(async () => {
    await h.close();
  });

  test("ApiVersions advertises the flexible versions of the admin, config, ACL and transaction APIs", async () => {
    const ranges = await ask(port, frame(18, 0, () => {}), (r) => {
      assert.equal(r.i16(), 0);
      return new Map(r.array((r): [number, [number, number]] => [r.i16(), [r.i16(), r.i16()]]));
    });
    const want: Array<[number, [number, number]]> = [
      [19, [0, 7]], // CreateTopics
      [20, [0, 6]], // DeleteTopics
      [21, [0, 2]], // DeleteRecords
      [23, [0, 4]], // OffsetForLeaderEpoch
      [24, [0, 3]], // AddPartitionsToTxn (v4, KIP-890, not)
      [25, [0, 3]], // AddOffsetsToTxn
      [26, [0, 3]], // EndTxn (v4, KIP-890, not)
      [29, [0, 3]], // DescribeAcls
      [30, [0, 3]], // CreateAcls
      [31, [0, 3]], // DeleteAcls
      [32, [0, 4]], // DescribeConfigs
      [33, [0, 2]], // AlterConfigs
      [35, [0, 4]], // DescribeLogDirs
      [37, [0, 3]], // CreatePartitions
      [43, [0, 2]], // ElectLeaders
      [44, [0, 1]], // IncrementalAlterConfigs
      [48, [0, 1]], // DescribeClientQuotas (AlterClientQuotas, 49, not)
      [65, [0, 0]], // DescribeTransactions
      [66, [0, 1]], // ListTransactions
    ];
    assert.deepEqual(want.map(([k]) => [k, ranges.get(k)]), want);
  });

  test("ApiVersions in a version the broker does not know: UNSUPPORTED_VERSION in v0's format, naming only ApiVersions' own versions (KIP-511)", async () => {
    const answer = await ask(port, frame(18, 99, () => {}), (r) => {
      const error = r.i16();
      const keys = r.array((r) => [r.i16(), r.i16(), r.i16()]);
      assert.equal(r.remaining, 0, "every byte of the response read");
      return { error, keys };
    });
    const UNSUPPORTED_VERSION = 35;
    assert.deepEqual(answer, { error: UNSUPPORTED_VERSION, keys: [[18, 0, 3]] });
  });

  test("ApiVersions v3 naming its client software outside Kafka's pattern: INVALID_REQUEST and no versions; the connection answers on", async () => {
    // Request header v2 (tags after the client id); the answer's header is v0 whatever the version, its body flexible.
    const v3 = (name: string, version: string, id: number): Buffer =>
      frame(18, 3, (w) => w.tags().uvarint(Buffer.byteLength(name) + 1).raw(Buffer.from(name)).uvarint(Buffer.byteLength(version) + 1).raw(Buffer.from(version)).tags(), id);
    const answer = (r: Reader): { error: number; keys: number } => {
      const error = r.i16();
      const keys = r.arrayLength(true);
      for (let i = 0; i < keys; i++) {
        r.i16();
        r.i16();
        r.i16();
        r.tags();
      }
      r.i32(); // throttle_time_ms
      r.tags();
      assert.equal(r.remaining, 0, "every byte of the response read");
      return { error, keys };
    };
    const k = await RawKafka.open(port);
    try {
      const asked: Array<[string, string]> = [["bad name", "1.0"], ["-lead", "1.0"], ["trail.", "1.0"], ["", "1.0"], ["ok", "1.0 beta"], ["librdkafka", "2.0.2"], ["a", "3.6.0-SNAPSHOT"]];
      asked.forEach(([name, version], i) => k.send(v3(name, version, i)));
      const got = [];
      for (let i = 0; i < asked.length; i++) got.push(answer(await k.response(i)));
      const INVALID_REQUEST = 42;
      assert.deepEqual(
        got.map((g) => g.error),
        [INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST, 0, 0],
      );
      assert.ok(got.slice(0, 5).every((g) => g.keys === 0), "no versions with the error");
      assert.ok(got.slice(5).every((g) => g.keys > 40), "every version otherwise");
    } finally {
      k.destroy();
    }
  });

  test("CreateTopics v7: the created topic's partitions, replication factor, configs and topic id; TOPIC_ALREADY_EXISTS the second time; validate_only describes without creating", async () => {
    const topic = "flex.created";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 3, configs: [["retention.ms", "3600000"]] }]), (r) => readCreateTopics(r, 7));
    assert.deepEqual([made.name, made.error, made.message, made.partitions, made.replicas], [topic, 0, null, 3, 1]);
    assert.match(made.topicId, /^[0-9a-f]{32}$/);
    assert.notEqual(made.topicId, ZERO_UUID, "a made topic has an id");
    const configs = new Map(made.configs!.map((c) => [c.name, c]));
    assert.deepEqual(configs.get("retention.ms"), { name: "retention.ms", value: "3600000", readOnly: false, source: SOURCE_DYNAMIC_TOPIC, sensitive: false });
    // Not read-only: delete, or an empty list, may be set (Kafka's cleanup.policy is not read-only either).
    assert.deepEqual(configs.get("cleanup.policy"), { name: "cleanup.policy", value: "delete", readOnly: false, source: SOURCE_DEFAULT, sensitive: false });
    assert.deepEqual(configs.get("retention.bytes"), { name: "retention.bytes", value: "-1", readOnly: false, source: SOURCE_DEFAULT, sensitive: false });
    // The same configs DescribeConfigs gives.
    const described = await topicConfigs(port, topic);
    assert.deepEqual(
      made.configs!.map((c) => [c.name, c.value, c.source]),
      [...described.values()].map((c) => [c.name, c.value, c.source]),
    );

    const [again] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 3 }]), (r) => readCreateTopics(r, 7));
    assert.deepEqual([again.error, again.message, again.partitions, again.replicas, again.configs], [36, `Topic '${topic}' already exists.`, -1, -1, []]);

    // v5 (no topic id) with validate_only: the configs the topic would have, and no topic.
    const [checked] = await ask(port, createTopicsV(5, [{ name: "flex.checked", partitions: 2, configs: [["max.message.bytes", "65536"]] }], true), (r) => readCreateTopics(r, 5));
    assert.deepEqual([checked.error, checked.partitions, checked.replicas], [0, 2, 1]);
    assert.equal(checked.configs!.find((c) => c.name === "max.message.bytes")?.value, "65536");
    const [absent] = await ask(port, describeConfigsV(4, [{ type: RESOURCE_TOPIC, name: "flex.checked", keys: null }], false), (r) => readDescribeConfigs(r, 4));
    assert.equal(absent.error, 3, "validate_only created nothing");

    // A config nagare cannot honour: INVALID_CONFIG, and nothing described.
    const [refused] = await ask(port, createTopicsV(6, [{ name: "flex.compacted", partitions: 1, configs: [["cleanup.policy", "archive"]] }]), (r) => readCreateTopics(r, 6));
    assert.deepEqual([refused.error, refused.partitions, refused.configs], [40, -1, []]);
  });

  test("DescribeConfigs v3–4: each config's Kafka type, documentation when asked, synonyms", async () => {
    const topic = "flex.described";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 1, configs: [["retention.ms", "600000"]] }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);
    const [t, b] = await ask(
      port,
      describeConfigsV(
        4,
        [
          { type: RESOURCE_TOPIC, name: topic, keys: null },
          { type: RESOURCE_BROKER, name: "0", keys: ["auto.create.topics.enable", "log.retention.ms", "listeners"] },
        ],
        true,
      ),
      (r) => readDescribeConfigs(r, 4),
    );
    assert.deepEqual([t.error, t.type, t.name, b.error, b.type, b.name], [0, RESOURCE_TOPIC, topic, 0, RESOURCE_BROKER, "0"]);
    const types = new Map(t.configs.map((c) => [c.name, c.type]));
    // Kafka's ConfigType: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
    assert.deepEqual(Object.fromEntries(types), {
      "cleanup.policy": 7,
      "compression.type": 2,
      "delete.retention.ms": 5,
      "max.compaction.lag.ms": 5,
      "max.message.bytes": 3,
      "message.timestamp.after.max.ms": 5,
      "message.timestamp.before.max.ms": 5,
      "message.timestamp.difference.max.ms": 5,
      "message.timestamp.type": 2,
      "min.cleanable.dirty.ratio": 6,
      "min.compaction.lag.ms": 5,
      "min.insync.replicas": 3,
      "retention.bytes": 5,
      "retention.ms": 5,
      "segment.bytes": 3,
      "segment.ms": 5,
      "unclean.leader.election.enable": 1,
    });
    for (const c of [...t.configs, ...b.configs]) assert.ok(typeof c.doc === "string" && c.doc.length > 0, `${c.name} documented`);
    const retention = t.configs.find((c) => c.name === "retention.ms")!;
    assert.deepEqual([retention.value, retention.source, retention.synonyms], ["600000", SOURCE_DYNAMIC_TOPIC, [["retention.ms", "600000", SOURCE_DYNAMIC_TOPIC], ["log.retention.ms", "-1", SOURCE_DEFAULT]]]);
    assert.deepEqual(
      b.configs.map((c) => [c.name, c.type]),
      [
        ["auto.create.topics.enable", 1],
        ["listeners", 2],
        ["log.retention.ms", 5],
      ],
    );

    // v3 (not flexible), documentation not asked for: null, the types still given.
    const [v3] = await ask(port, describeConfigsV(3, [{ type: RESOURCE_TOPIC, name: topic, keys: ["retention.ms", "cleanup.policy"] }], false), (r) => readDescribeConfigs(r, 3));
    assert.deepEqual(
      v3.configs.map((c) => [c.name, c.value, c.type, c.doc]),
      [
        ["cleanup.policy", "delete", 7, null],
        ["retention.ms", "600000", 5, null],
      ],
    );
  });

  test("AlterConfigs v2 and IncrementalAlterConfigs v1 change a topic's configs, as DescribeConfigs then shows", async () => {
    const topic = "flex.altered";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 1, configs: [["retention.bytes", "4096"]] }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);

    // AlterConfigs replaces every config: retention.bytes goes back to its default.
    const alter = flexibleFrame(33, 2, (w) => {
      w.arrayLength(1).i8(RESOURCE_TOPIC).string(topic);
      w.array<[string, string]>([["retention.ms", "7200000"]], (w, [k, v]) => w.string(k).nullableString(v).taggedFields());
      w.taggedFields();
      w.bool(false).taggedFields();
    });
    assert.deepEqual(await ask(port, alter, readAlter), [[0, null, RESOURCE_TOPIC, topic]]);
    let configs = await topicConfigs(port, topic);
    assert.deepEqual([configs.get("retention.ms")!.value, configs.get("retention.ms")!.source], ["7200000", SOURCE_DYNAMIC_TOPIC]);
    assert.deepEqual([configs.get("retention.bytes")!.value, configs.get("retention.bytes")!.source], ["-1", SOURCE_DEFAULT]);

    // IncrementalAlterConfigs: SET (0) one, DELETE (1) another, the rest kept.
    const incremental = (changes: Array<[string, number, string | null]>): Buffer =>
      flexibleFrame(44, 1, (w) => {
        w.arrayLength(1).i8(RESOURCE_TOPIC).string(topic);
        w.array(changes, (w, [k, op, v]) => w.string(k).i8(op).nullableString(v).taggedFields());
        w.taggedFields();
        w.bool(false).taggedFields();
      });
    assert.deepEqual(
      await ask(
        port,
        incremental([
          ["max.message.bytes", 0, "32768"],
          ["retention.ms", 1, null],
        ]),
        readAlter,
      ),
      [[0, null, RESOURCE_TOPIC, topic]],
    );
    configs = await topicConfigs(port, topic);
    assert.deepEqual([configs.get("max.message.bytes")!.value, configs.get("max.message.bytes")!.source], ["32768", SOURCE_DYNAMIC_TOPIC]);
    assert.deepEqual([configs.get("retention.ms")!.value, configs.get("retention.ms")!.source], ["-1", SOURCE_DEFAULT]);

    // Refused with its reason, and nothing changed.
    const [[error, message, type, name]] = await ask(port, incremental([["segment.bytes", 0, "10"]]), readAlter);
    assert.deepEqual([error, type, name], [40, RESOURCE_TOPIC, topic]);
    assert.match(message ?? "", /segment\.bytes/);
    assert.equal((await topicConfigs(port, topic)).get("max.message.bytes")!.value, "32768");
  });

  test("CreatePartitions v3 grows a topic; the same count again is INVALID_PARTITIONS in Kafka's words", async () => {
    const topic = "flex.grown";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 2 }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);
    assert.deepEqual(await ask(port, createPartitionsV3(topic, 5), readCreatePartitions), [[topic, 0, null]]);
    assert.deepEqual(await ask(port, createPartitionsV3(topic, 5), readCreatePartitions), [[topic, 37, "Topic already has 5 partitions."]]);
    assert.deepEqual(await ask(port, createPartitionsV3("flex.nowhere", 2), readCreatePartitions), [["flex.nowhere", 3, "The topic 'flex.nowhere' does not exist."]]);
  });

  test("DeleteRecords v2 purges below an offset and answers the new low watermark", async () => {
    const topic = "flex.purged";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 1 }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);
    assert.equal(await produce(port, topic, ["a", "b", "c", "d"]), 0);
    const deleteRecords = (partitions: Array<[number, number]>): Buffer =>
      flexibleFrame(21, 2, (w) => {
        w.arrayLength(1).string(topic);
        w.array(partitions, (w, [p, offset]) => w.i32(p).i64(offset).taggedFields());
        w.taggedFields();
        w.i32(30_000).taggedFields();
      });
    const read = (r: Reader): Array<[string, Array<[number, number, number]>]> => {
      flexibleBody(r);
      assert.equal(r.i32(), 0, "throttle_time_ms");
      const out = r.array((r): [string, Array<[number, number, number]>] => {
        const name = r.string();
        const partitions = r.array((r): [number, number, number] => {
          const p: [number, number, number] = [r.i32(), r.i64(), r.i16()];
          r.taggedFields();
          return p;
        });
        r.taggedFields();
        return [name, partitions];
      });
      end(r);
      return out;
    };
    // Below offset 3: the low watermark is 3. Past the high watermark (4): OFFSET_OUT_OF_RANGE; partition 7: unknown.
    assert.deepEqual(
      await ask(
        port,
        deleteRecords([
          [0, 3],
          [7, 1],
        ]),
        read,
      ),
      [
        [
          topic,
          [
            [0, 3, 0],
            [7, -1, 3],
          ],
        ],
      ],
    );
    assert.deepEqual(await ask(port, deleteRecords([[0, 9]]), read), [[topic, [[0, -1, 1]]]]);
    assert.equal((await fetchFrom(port, topic, 2)).error, 1, "offset 2 is purged: OFFSET_OUT_OF_RANGE");
    assert.equal(await highWatermark(port, topic, 3), 4, "the high watermark stays");
  });

  test("DescribeLogDirs v0–4: this broker's copies of the topics asked for (every one for null) and their stored bytes in the store's directory; v3 adds an error code, v4 the file system's size and free space", async () => {
    const topic = "flex.sized";
    const made = await ask(port, createTopicsV(7, [{ name: topic, partitions: 2 }, { name: "flex.sized.two", partitions: 1 }]), (r) => readCreateTopics(r, 7));
    assert.deepEqual(made.map((t) => t.error), [0, 0]);
    assert.equal(await produce(port, topic, ["a", "b"]), 0);
    const stored = h.srv.jetstream!.streams.get("flex_sized")!.partitions[0].state().bytes;
    assert.ok(stored > 0);
    const sized = [{ name: topic, partitions: [
      { index: 0, size: stored, lag: 0, future: false },
      { index: 1, size: 0, lag: 0, future: false },
    ] }];
    for (const version of [0, 1, 2, 3, 4]) {
      // One partition, one asked for twice and one the topic does not have, and a topic nobody has: only what is held here.
      const [dir] = await ask(port, describeLogDirsFrame(version, [[topic, [1, 0, 1, 7]], ["flex.nobody", [0]]]), (r) => describeLogDirsResult(r, version));
      assert.deepEqual([dir.error, dir.dir, dir.topics], [0, resolve(h.storeDir), sized], `v${version}`);
      if (version >= 4) assert.ok(dir.total > 0 && dir.usable > 0 && dir.usable <= dir.total, `v4: ${dir.total} bytes, ${dir.usable} usable`);
      else assert.deepEqual([dir.total, dir.usable], [-1, -1]);
    }
    // A topic named twice: the partitions of both.
    const [twice] = await ask(port, describeLogDirsFrame(3, [[topic, [0]], [topic, [1]]]), (r) => describeLogDirsResult(r, 3));
    assert.deepEqual(twice.topics, sized);
    // Null: every topic held here.
    const [all] = await ask(port, describeLogDirsFrame(4, null), (r) => describeLogDirsResult(r, 4));
    assert.deepEqual(all.topics.find((t) => t.name === topic), sized[0]);
    assert.deepEqual(all.topics.find((t) => t.name === "flex.sized.two"), { name: "flex.sized.two", partitions: [{ index: 0, size: 0, lag: 0, future: false }] });
  });

  test("DescribeClientQuotas v0–1: no entries for a well-formed filter; Kafka's error (INVALID_REQUEST, UNSUPPORTED_VERSION for an entity type it does not know), entries null, for one it refuses", async () => {
    const quotas = (version: number, components: Array<[string, number, string | null]>): Buffer => {
      const body = (w: Writer): void => {
        w.array(components, (w, [type, match, name]) => w.string(type).i8(match).nullableString(name).taggedFields());
        w.bool(false).taggedFields();
      };
      return version >= 1 ? flexibleFrame(48, version, body) : frame(48, version, body);
    };
    const read = (r: Reader, version: number) => {
      if (version >= 1) flexibleBody(r);
      r.i32(); // throttle
      const out = { error: r.i16(), message: r.nullableString(), entries: r.arrayLength() };
      end(r);
      return out;
    };
    for (const version of [0, 1]) {
      assert.deepEqual(await ask(port, quotas(version, [["user", 2, null], ["client-id", 0, "app"]]), (r) => read(r, version)), { error: 0, message: null, entries: 0 }, `v${version}`);
      for (const [bad, code, why] of [
        [[["user", 0, null]], 42, /MATCH_TYPE_EXACT, but set match string to null/],
        [[["user", 1, "x"]], 42, /set match string to x/],
        [[["user", 3, null]], 42, /Unknown match type 3/],
        [[["user", 2, null], ["user", 1, null]], 42, /user cannot appear more than once/],
        [[["", 2, null]], 42, /empty entity type/],
        [[["ip", 2, null], ["user", 2, null]], 42, /IP filter component should not be used with user or clientId/],
        [[["foo", 2, null]], 35, /Custom entity type foo not supported/], // UNSUPPORTED_VERSION
      ] as Array<[Array<[string, number, string | null]>, number, RegExp]>) {
        const a = await ask(port, quotas(version, bad), (r) => read(r, version));
        assert.deepEqual([a.error, a.entries], [code, -1], `v${version} ${JSON.stringify(bad)}`);
        assert.match(a.message ?? "", why);
      }
    }
  });

  test("ElectLeaders v0–2 on one broker: its one replica leads every partition (ELECTION_NOT_NEEDED); an unknown partition UNKNOWN_TOPIC_OR_PARTITION", async () => {
    const [made] = await ask(port, createTopicsV(7, [{ name: "flex.elected", partitions: 2 }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);
    for (const version of [0, 1, 2]) {
      for (const type of version === 0 ? [0] : [0, 1]) {
        const got = await ask(port, electLeadersFrame(version, type, [["flex.elected", [0, 1, 2]]]), (r) => electLeadersResult(r, version));
        assert.deepEqual([...got.get("flex.elected")!].map(([p, [error]]) => [p, error]), [
          [0, 84],
          [1, 84],
          [2, 3],
        ], `v${version} type ${type}`);
      }
    }
  });

  test("DeleteTopics v6 by name or by id deletes the topic, answered with both; an id no topic has is UNKNOWN_TOPIC_ID; both ways, INVALID_REQUEST", async () => {
    const topic = "flex.deleted";
    const byId = "flex.deleted-by-id";
    const made = await ask(port, createTopicsV(7, [{ name: topic, partitions: 1 }, { name: byId, partitions: 1 }]), (r) => readCreateTopics(r, 7));
    assert.deepEqual(made.map((m) => m.error), [0, 0]);
    const someId = "0123456789abcdef0123456789abcdef";
    const deleteTopics = (topics: Array<[string | null, string]>): Buffer =>
      flexibleFrame(20, 6, (w) => {
        w.array(topics, (w, [name, id]) => w.nullableString(name).uuid(id).taggedFields());
        w.i32(30_000).taggedFields();
      });
    const answers = await ask(
      port,
      deleteTopics([
        [topic, ZERO_UUID],
        [null, made[1].topicId],
        [null, someId],
        ["flex.other", someId],
      ]),
      (r) => readDeleteTopics(r, 6),
    );
    assert.deepEqual(answers[0], { name: topic, topicId: made[0].topicId, error: 0, message: null });
    assert.deepEqual(answers[1], { name: byId, topicId: made[1].topicId, error: 0, message: null });
    assert.deepEqual([answers[2].name, answers[2].topicId, answers[2].error], [null, someId, 100]);
    assert.match(answers[2].message ?? "", /No topic has the id/);
    assert.deepEqual(answers[3], { name: "flex.other", topicId: someId, error: 42, message: "You may not specify both topic name and topic id." });
    // The one deleted by id is gone too, and its id names nothing now.
    assert.deepEqual((await ask(port, deleteTopics([[null, made[1].topicId]]), (r) => readDeleteTopics(r, 6)))[0].error, 100);

    // Gone: v5 (names) answers UNKNOWN_TOPIC_OR_PARTITION with Kafka's message.
    const v5 = flexibleFrame(20, 5, (w) => w.array([topic], (w, n) => w.string(n)).i32(30_000).taggedFields());
    assert.deepEqual(await ask(port, v5, (r) => readDeleteTopics(r, 5)), [{ name: topic, topicId: ZERO_UUID, error: 3, message: `The topic '${topic}' does not exist.` }]);
  });

  test("a transaction through InitProducerId v1, AddPartitionsToTxn v3, AddOffsetsToTxn v3 and EndTxn v3: committed, its marker written; a stale epoch is PRODUCER_FENCED from v2", async () => {
    const topic = "flex.txn";
    const [made] = await ask(port, createTopicsV(7, [{ name: topic, partitions: 2 }]), (r) => readCreateTopics(r, 7));
    assert.equal(made.error, 0);
    const init = await ask(port, frame(22, 1, (w) => w.nullableString("flex-tx").i32(60_000)), (r) => {
      assert.equal(r.i32(), 0, "throttle_time_ms");
      return { error: r.i16(), producerId: r.i64(), epoch: r.i16() };
    });
    assert.equal(init.error, 0);
    const txn = { id: "flex-tx", producerId: init.producerId, epoch: init.epoch };

    assert.deepEqual(await ask(port, addPartitionsToTxn(3, txn, topic, [0]), (r) => readAddPartitionsToTxn(r, 3)), [[topic, [[0, 0]]]]);
    const addOffsets = (version: number, epoch: number): Buffer =>
      (version >= 3 ? flexibleFrame : frame)(25, version, (w) => w.string(txn.id).i64(txn.producerId).i16(epoch).string("flex-group").taggedFields());
    assert.equal(await ask(port, addOffsets(3, txn.epoch), (r) => readTxnError(r, 3)), 0);

    // A stale epoch: PRODUCER_FENCED (90) at v3, INVALID_PRODUCER_EPOCH (47) at v1 and at AddOffsetsToTxn v1.
    const stale = { ...txn, epoch: txn.epoch - 1 };
    assert.deepEqual(await ask(port, addPartitionsToTxn(3, stale, topic, [1]), (r) => readAddPartitionsToTxn(r, 3)), [[topic, [[1, 90]]]]);
    assert.deepEqual(await ask(port, addPartitionsToTxn(1, stale, topic, [1]), (r) => readAddPartitionsToTxn(r, 1)), [[topic, [[1, 47]]]]);
    assert.equal(await ask(port, addOffsets(1, stale.epoch), (r) => readTxnError(r, 1)), 47);

    const endTxn = (epoch: number, commit: boolean): Buffer => flexibleFrame(26, 3, (w) => w.string(txn.id).i64(txn.producerId).i16(epoch).bool(commit).taggedFields());
    assert.equal(await ask(port, endTxn(stale.epoch, true), (r) => readTxnError(r, 3)), 90);
    assert.equal(await highWatermark(port, topic), 0, "nothing written before the commit");
    assert.equal(await ask(port, endTxn(txn.epoch, true), (r) => readTxnError(r, 3)), 0);
    // The commit marker is the partition's one record.
    assert.equal(await highWatermark(port, topic), 1, "the commit marker written");
    // The transaction ended: its partition must be added again before another commit means anything; an abort now is refused.
    assert.equal(await ask(port, endTxn(txn.epoch, false), (r) => readTxnError(r, 3)), 48);
  });

  test("the ACL APIs v3, flexible: answered and refused (no authorizer: SECURITY_DISABLED)", async () => {
    const acl = (w: Writer): Writer => w.i8(2).nullableString("flex").i8(3).nullableString("User:flex").nullableString("*").i8(4).i8(3);
    const describe = await ask(port, flexibleFrame(29, 3, (w) => acl(w).taggedFields()), (r) => {
      flexibleBody(r);
      const out = [r.i32(), r.i16(), r.nullableString() !== null, r.arrayLength()];
      end(r);
      return out;
    });
    assert.deepEqual(describe, [0, 54, true, 0]);
    const create = await ask(port, flexibleFrame(30, 3, (w) => w.array([0], (w) => acl(w).taggedFields()).taggedFields()), (r) => {
      flexibleBody(r);
      assert.equal(r.i32(), 0);
      const out = r.array((r) => {
        const e = [r.i16(), r.nullableString() !== null];
        r.taggedFields();
        return e;
      });
      end(r);
      return out;
    });
    assert.deepEqual(create, [[54, true]]);
    const del = await ask(port, flexibleFrame(31, 3, (w) => w.array([0], (w) => acl(w).taggedFields()).taggedFields()), (r) => {
      flexibleBody(r);
      assert.equal(r.i32(), 0);
      const out = r.array((r) => {
        const e = [r.i16(), r.nullableString() !== null, r.arrayLength()];
        r.taggedFields();
        return e;
      });
      end(r);
      return out;
    });
    assert.deepEqual(del, [[54, true, 0]]);
  });
});
