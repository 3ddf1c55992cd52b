/**
 * Every Kafka decoder, in process: the request header, each API's request
 * body and RecordBatch v2 with each codec. First on golden bytes, frames
 * KafkaJS 2.2.4 and kcat (librdkafka 2.0) sent to nagare
 * (fixtures/kafka-requests.json), and for the admin APIs also kafka-python
 * 2.0.2 and confluent-kafka 1.7 (fixtures/kafka-admin-requests.json, with
 * frames built by hand for the three APIs no client here sends), all
 * captured by fixtures/capture-frames.ts, which must decode to what those
 * clients were asked to send; then on
 * seeded mutations of them (bit flips, truncation, length fields set to
 * extremes, random bytes), which must decode or fail with the protocol's
 * own error (KafkaDecodeError, BatchError): never another exception, a
 * hang, an allocation sized by an untrusted length, or budget left taken.
 *
 * NAGARE_FUZZ_SEED=<n> replays a failure (the seed is in its message);
 * NAGARE_FUZZ_MS sets how long each fuzz loop runs (default 700 ms).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { gunzipSync, gzipSync } from "node:zlib";
import { KafkaDecodeError, Reader } from "../src/protocols/kafka/codec.js";
import { API_VERSIONS } from "../src/protocols/kafka/api.js";
import { decodeRequestHeader, REQUEST_DECODERS, type ProduceRequest } from "../src/protocols/kafka/requests.js";
import { decodeProduceBatch, headersOf, BATCH_OVERHEAD, type DecodedBatch, type DecompressionGate } from "../src/protocols/kafka/records.js";
import { BatchError } from "../src/protocols/kafka/errors.js";
import { ByteBudget } from "../src/protocols/kafka/budget.js";
import { crc32c } from "../src/util/crc32c.js";
import { rng } from "./helpers/random.js";
import { mutate, pick, watchAllocations, type LengthField } from "./helpers/mutate.js";

const SEED = Number(process.env.NAGARE_FUZZ_SEED ?? Date.now() % 2 ** 31);
const FUZZ_MS = Number(process.env.NAGARE_FUZZ_MS ?? 700);

interface Fixture {
  client: string;
  apiKey: number;
  version: number;
  codec?: number;
  hex: string;
}

const readFixtures = (name: string): Fixture[] => JSON.parse(readFileSync(new URL(`../../test/fixtures/${name}`, import.meta.url), "utf8")) as Fixture[];
/** The admin APIs' frames (kafka-admin-requests.json) come from more clients, and by hand for APIs none of them sends. */
const fixtures = [...readFixtures("kafka-requests.json"), ...readFixtures("kafka-admin-requests.json")];
/** The flexible versions, as @platformatic/kafka (which sends nothing else) sent them: decoded whole and fuzzed like the rest. */
const flexibleFixtures = readFixtures("kafka-flexible-requests.json");

/** A frame as the connection hands it on: without its size prefix. */
const frameOf = (f: Fixture): Buffer => Buffer.from(f.hex, "hex").subarray(4);
const isKafkaJs = (f: Fixture): boolean => f.client.startsWith("kafkajs");
/** The client id each capture gave its client. */
const clientIdOf = (f: Fixture): string =>
  f.client.startsWith("kafka-python") ? "golden-py" : f.client.includes("confluent-kafka") ? "golden-ck" : f.client.startsWith("librdkafka") ? "golden-kcat" : "golden";

/** A Reader that notes where each length or count it reads sits, for the mutations that set them to extremes. */
class TracingReader extends Reader {
  readonly lengths: LengthField[] = [];
  override nullableString(): string | null {
    // A flexible version's strings are compact (their length a varint, read by compactNullableString's trace below).
    if (this.flexible) return super.nullableString();
    this.lengths.push({ at: this.pos, width: 2 });
    return super.nullableString();
  }
  override compactNullableString(): string | null {
    this.lengths.push({ at: this.pos, width: 1 });
    return super.compactNullableString();
  }
  override nullableBytes(): Buffer | null {
    this.lengths.push({ at: this.pos, width: this.flexible ? 1 : 4 });
    return super.nullableBytes();
  }
  override arrayLength(flexible = this.flexible): number {
    this.lengths.push({ at: this.pos, width: flexible ? 1 : 4 });
    return super.arrayLength(flexible);
  }
}

/** Decodes a frame's body with its API's decoder, tracing length fields. */
function decodeBody(frame: Buffer): { apiKey: number; version: number; clientId: string | null; body: unknown; remaining: number; lengths: LengthField[] } {
  const h = decodeRequestHeader(frame);
  const r = new TracingReader(frame, h.r.pos);
  r.flexible = h.r.flexible;
  const body = REQUEST_DECODERS.get(h.apiKey)!(r, h.version);
  // The header's client id length sits right after api key, version and correlation id.
  return { apiKey: h.apiKey, version: h.version, clientId: h.clientId, body, remaining: r.remaining, lengths: [{ at: 8, width: 2 }, ...r.lengths] };
}

type Body = Record<string, unknown> & { topics?: unknown };

const GOLDEN_ACL = { resourceType: 2, resourceName: "golden", patternType: 3, principal: "User:golden", host: "*", operation: 4, permissionType: 3 };

/** What each client was asked to send (capture-frames.ts), API by API. */
const EXPECT = new Map<number, (b: Body, f: Fixture) => void>([
  [0, (b) => assert.deepEqual([(b as unknown as ProduceRequest).topics.map((t) => [t.name, t.partitions.map((p) => p.index)]), b.acks], [[["golden", [0]]], -1])],
  [1, (b, f) => assert.deepEqual([b.isolationLevel, b.topics], [1, [{ name: "golden", id: null, partitions: [{ index: 0, currentLeaderEpoch: -1, offset: 0, maxBytes: 1048576 }] }]], f.client)],
  [2, (b) => assert.deepEqual(b.topics, [{ name: "golden", partitions: [{ index: 0, currentLeaderEpoch: -1, timestamp: -2 }] }])],
  [43, (b) => assert.deepEqual(b, { electionType: 0, topics: [{ name: "golden", partitions: [0, 1] }], timeoutMs: 60_000 })],
  [48, (b) => assert.deepEqual(b, { components: [{ entityType: "client-id", matchType: 1, match: null }], strict: true })],
  [61, (b) => assert.deepEqual(b, { topics: [{ name: "golden", partitions: [0, 1] }] })],
  [65, (b) => assert.deepEqual(b, { transactionalIds: ["golden-tx"] })],
  [66, (b) => assert.deepEqual(b, { states: ["Ongoing"], producerIds: [], durationMs: 60_000 })],
  [35, (b) => assert.deepEqual(b, { topics: null })],
  [23, (b) => assert.deepEqual(b, { topics: [{ name: "golden", partitions: [{ index: 0, currentLeaderEpoch: -1, leaderEpoch: 0 }] }] })],
  [3, (b, f) => assert.deepEqual(b, isKafkaJs(f) ? { topics: null, topicIds: [], refused: [], allowAutoTopicCreation: false } : { topics: ["golden"], topicIds: [], refused: [], allowAutoTopicCreation: true })],
  [
    8,
    (b, f) => {
      assert.equal(b.groupId, isKafkaJs(f) ? "golden-group" : "golden-kcat-group");
      assert.match(b.memberId as string, isKafkaJs(f) ? /^golden-/ : /^golden-kcat-/);
      const [t] = b.topics as Array<{ name: string; partitions: Array<{ index: number; offset: number }> }>;
      assert.deepEqual([t.name, t.partitions[0].index, t.partitions[0].offset > 0], ["golden", 0, true]);
    },
  ],
  [9, (b) => assert.deepEqual(b, { groups: [{ groupId: "golden-group", topics: [{ name: "golden", partitions: [0] }] }], requireStable: false })],
  [10, (b, f) => assert.deepEqual(b, { keys: [isKafkaJs(f) ? "golden-group" : "golden-kcat-group"], keyType: 0 })],
  [
    11,
    (b, f) => {
      assert.deepEqual([b.memberId, b.protocolType], ["", "consumer"]);
      assert.deepEqual((b.protocols as Array<[string, Buffer]>).map(([name]) => name), isKafkaJs(f) ? ["RoundRobinAssigner"] : ["range", "roundrobin"]);
      assert.equal(b.sessionTimeoutMs, isKafkaJs(f) ? 30_000 : 45_000);
    },
  ],
  [12, (b) => assert.ok((b.generation as number) >= 1 && /^golden-/.test(b.memberId as string))],
  [13, (b) => assert.match((b.members as Array<{ memberId: string }>)[0].memberId, /^golden-/)],
  [14, (b) => assert.equal((b.assignments as unknown[]).length, 1, "the leader's assignment for its one member")],
  [15, (b) => assert.deepEqual(b, { groupIds: ["golden-group"], includeAuthorizedOperations: false })],
  [16, (b) => assert.deepEqual(b, { statesFilter: [] })],
  [18, (b, f) => assert.deepEqual(b, isKafkaJs(f) ? { clientSoftwareName: null, clientSoftwareVersion: null } : { clientSoftwareName: "librdkafka", clientSoftwareVersion: "2.0.2" })],
  [
    19,
    (b) =>
      assert.deepEqual(
        (b.topics as Array<{ name: string; partitions: number; configs: Map<string, string | null> }>).map((t) => [t.name, t.partitions, [...t.configs]]),
        [
          ["golden", 1, [["retention.ms", "3600000"]]],
          ["golden-tmp", -1, []],
        ],
      ),
  ],
  // Named by name (before v6 there are no topic ids: the all-zero uuid).
  [20, (b) => assert.deepEqual(b.topics, [{ name: "golden-tmp", topicId: "0".repeat(32) }])],
  [22, (b, f) => assert.deepEqual(b, { transactionalId: null, transactionTimeoutMs: isKafkaJs(f) ? 60_000 : -1, producerId: -1, epoch: -1 })],
  [24, (b) => assert.deepEqual([b.transactionalId, b.epoch, b.topics], ["golden-tx", 0, [{ name: "golden", partitions: [0] }]])],
  [25, (b) => assert.deepEqual([b.transactionalId, b.groupId], ["golden-tx", "golden-group"])],
  [26, (b) => assert.deepEqual([b.transactionalId, b.commit], ["golden-tx", true])],
  [28, (b) => assert.deepEqual([b.transactionalId, b.groupId, b.topics], ["golden-tx", "golden-group", [{ name: "golden", partitions: [{ index: 0, offset: 5, leaderEpoch: -1, metadata: null }] }]])],
  // A topic's configs (kafka-requests.json); the broker's from every admin client (librdkafka asks for synonyms).
  [32, (b, f) => assert.deepEqual(b.resources, [isAdmin(f) ? { type: 4, name: "0", keys: null } : { type: 2, name: "golden", keys: null }])],
  // The admin APIs (kafka-admin-requests.json).
  [21, (b) => assert.deepEqual(b, { topics: [{ name: "golden", partitions: [{ index: 0, offset: 1 }] }], timeoutMs: 5000 })],
  [33, (b) => assert.deepEqual(b, { resources: [{ type: 2, name: "golden", configs: [{ name: "retention.ms", op: 0, value: "7200000" }] }], validateOnly: false })],
  [
    37,
    (b, f) => {
      const [count, timeoutMs] = isKafkaJs(f) ? [2, 5000] : f.client.startsWith("kafka-python") ? [3, 30_000] : [4, 60_000];
      assert.deepEqual(b, { topics: [{ name: "golden", count, assignments: null }], timeoutMs, validateOnly: false });
    },
  ],
  [42, (b) => assert.deepEqual(b, { groupIds: ["golden-group"] })],
  [
    44,
    (b) =>
      assert.deepEqual(b.resources, [
        {
          type: 2,
          name: "golden",
          configs: [
            { name: "retention.ms", op: 0, value: "7200000" },
            { name: "retention.bytes", op: 1, value: null },
          ],
        },
      ]),
  ],
  [47, (b) => assert.deepEqual(b, { groupId: "golden-group", topics: [{ name: "golden", partitions: [0, 1] }] })],
  [60, (b) => assert.deepEqual(b, { includeClusterAuthorizedOperations: false })],
  [
    45,
    (b) =>
      assert.deepEqual(b, {
        timeoutMs: 60_000,
        topics: [
          {
            name: "golden",
            partitions: [
              { index: 0, replicas: [2] },
              { index: 1, replicas: null },
            ],
          },
        ],
      }),
  ],
  [46, (b) => assert.ok([null, [{ name: "golden", partitions: [0, 1] }]].some((topics) => isDeepStrictEqual(b, { timeoutMs: 60_000, topics })), JSON.stringify(b))],
  // The ACL APIs: a WRITE, ALLOW binding for User:golden on topic golden (LITERAL), from every client and by hand.
  [29, (b) => assert.deepEqual(b, { filter: GOLDEN_ACL })],
  [30, (b) => assert.deepEqual(b, { creations: [GOLDEN_ACL] })],
  [31, (b) => assert.deepEqual(b, { filters: [GOLDEN_ACL] })],
  [17, (b) => assert.deepEqual(b, { mechanism: "PLAIN" })],
  [36, (b) => assert.equal((b.authBytes as Buffer).toString(), "\u0000golden\u0000secret")],
]);

const adminFixtures = new Set(readFixtures("kafka-admin-requests.json").map((f) => f.hex));
function isAdmin(f: Fixture): boolean {
  return adminFixtures.has(f.hex);
}

/** What each captured batch holds: [key, value prefix, headers] per record. */
function expectedRecords(f: Fixture): Array<[string | null, string, Array<[string, string]>]> {
  if (isKafkaJs(f)) {
    return f.codec === 0
      ? [
          ["k1", "v1", [["h", "x"]]],
          [null, "v2", []],
        ]
      : [
          ["k3", "v3", []],
          ["k4", "v4", []],
        ];
  }
  if (f.codec === 0) return [[null, "idempotent from kcat", []]];
  const codec = ["", "gzip", "snappy", "lz4", "zstd"][f.codec!];
  return [
    ["kk", `${codec} ${"one ".repeat(40)}`, [["hk", "hv"]]],
    ["kk", `${codec} ${"two ".repeat(40)}`, [["hk", "hv"]]],
  ];
}

function recordsOf(b: DecodedBatch): Array<[string | null, string, Array<[string, string]>]> {
  const out: Array<[string | null, string, Array<[string, string]>]> = [];
  for (let i = 0; i < b.count; i++) {
    const key = b.keyLen[i] < 0 ? null : b.body.toString("utf8", b.keyAt[i], b.keyAt[i] + b.keyLen[i]);
    const value = b.body.toString("utf8", b.valueAt[i], b.valueAt[i] + b.valueLen[i]);
    out.push([key, value, headersOf(b, i).map(([k, v]) => [k, v?.toString() ?? ""])]);
  }
  return out;
}

/** The produce fixture's record set. */
function recordSetOf(f: Fixture): Buffer {
  return (decodeBody(frameOf(f)).body as ProduceRequest).topics[0].partitions[0].records!;
}

/** The batch with another body (records, compressed or not) and its codec bits, length and CRC made right. */
function rebatch(set: Buffer, body: Buffer, codec?: number): Buffer {
  const out = Buffer.concat([set.subarray(0, BATCH_OVERHEAD), body]);
  if (codec !== undefined) out.writeInt16BE((out.readInt16BE(21) & ~7) | codec, 21);
  return fixBatch(out);
}

/** Length and CRC made to match, so that a mutation reaches past the batch header. */
function fixBatch(set: Buffer, length = true): Buffer {
  if (set.length < BATCH_OVERHEAD) return set;
  if (length) set.writeInt32BE(set.length - 12, 8);
  set.writeUInt32BE(crc32c(set, 21) >>> 0, 17);
  return set;
}

/** xerial framing (what Java clients send) around a raw snappy block. */
function xerial(block: Buffer): Buffer {
  const head = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
  const size = Buffer.alloc(4);
  size.writeInt32BE(block.length);
  return Buffer.concat([head, size, block]);
}

/** A gate over a small budget, as a produce request would see the door's. */
function testGate(maxBytes: number): DecompressionGate & { budget: ByteBudget } {
  const budget = new ByteBudget(maxBytes);
  return { budget, maxBytes, take: (n) => budget.take(n, 1000), give: (n) => budget.give(n) };
}

function fail(what: string, input: Buffer, err: unknown): never {
  const hex = input.toString("hex");
  throw new Error(`${what} (NAGARE_FUZZ_SEED=${SEED}); input ${hex.length > 400 ? hex.slice(0, 400) + "…" : hex}: ${(err as Error)?.stack ?? err}`);
}

test("golden bytes: every API's request from KafkaJS, kcat and the Python clients decodes to what the client sent, every field read", () => {
  const apis = new Set(fixtures.map((f) => f.apiKey));
  assert.deepEqual([...API_VERSIONS.keys()].filter((k) => !apis.has(k)), [], "a captured frame for every API nagare answers");
  for (const f of fixtures) {
    const d = decodeBody(frameOf(f));
    assert.deepEqual([d.apiKey, d.version], [f.apiKey, f.version]);
    assert.equal(d.clientId, clientIdOf(f));
    assert.equal(d.remaining, 0, `${f.client} API ${f.apiKey} v${f.version}: every byte read`);
    EXPECT.get(f.apiKey)!(d.body as Body, f);
  }
});

test("golden bytes: the flexible versions @platformatic/kafka sends decode, every field read, each at the highest version nagare offers", () => {
  assert.ok(flexibleFixtures.length >= 20, "frames of most APIs");
  for (const f of flexibleFixtures) {
    const d = decodeBody(frameOf(f));
    assert.deepEqual([d.apiKey, d.version], [f.apiKey, f.version]);
    assert.equal(d.clientId, "golden");
    assert.equal(d.remaining, 0, `${f.client} API ${f.apiKey} v${f.version}: every byte read`);
    // The client takes the highest version it knows within the broker's range: nagare's highest, for each of these.
    assert.equal(f.version, API_VERSIONS.get(f.apiKey)![1], `API ${f.apiKey}`);
  }
});

test("golden bytes: RecordBatch v2 with every codec, from KafkaJS and kcat, decodes to the records sent", async () => {
  const produce = fixtures.filter((f) => f.apiKey === 0);
  assert.deepEqual([...new Set(produce.filter((f) => !isKafkaJs(f)).map((f) => f.codec))].sort(), [0, 1, 2, 3, 4], "kcat batches with each codec");
  const gate = testGate(1024 * 1024);
  for (const f of produce) {
    const batch = await decodeProduceBatch(recordSetOf(f), gate);
    const want = expectedRecords(f);
    assert.deepEqual(recordsOf(batch), want, `${f.client} codec ${f.codec}`);
    assert.equal(batch.held, f.codec === 0 ? 0 : batch.body.length, "a compressed batch holds its decompressed bytes");
    gate.give(batch.held);
    if (f.codec === 2) {
      // The same block in xerial framing, as Java clients send snappy.
      const set = recordSetOf(f);
      const x = await decodeProduceBatch(rebatch(set, xerial(set.subarray(BATCH_OVERHEAD))), gate);
      assert.deepEqual(recordsOf(x), want, "xerial snappy");
      gate.give(x.held);
    }
  }
  assert.equal(gate.budget.used, 0);
});

test("fuzz: mutated request frames decode or fail with KafkaDecodeError, reading no further than they go", { timeout: 120_000 }, (t) => {
  const r = rng(SEED);
  const golden = [...fixtures, ...flexibleFixtures].map((f) => {
    const frame = frameOf(f);
    return { frame, lengths: decodeBody(frame).lengths };
  });
  const allocations = watchAllocations();
  let cases = 0;
  let decoded = 0;
  try {
    for (const until = Date.now() + FUZZ_MS; Date.now() < until; ) {
      for (let i = 0; i < 64; i++, cases++) {
        const g = pick(r, golden);
        const input = mutate(r, g.frame, g.lengths);
        allocations.reset();
        try {
          const h = decodeRequestHeader(input);
          // An unknown API or version closes the connection before any body is read.
          if (!h.supported) continue;
          REQUEST_DECODERS.get(h.apiKey)!(h.r, h.version);
          decoded++;
        } catch (err) {
          if (!(err instanceof KafkaDecodeError)) fail("a request decoder threw something other than KafkaDecodeError", input, err);
        }
        if (allocations.largest > input.length + 64) fail(`an allocation of ${allocations.largest} bytes for a ${input.length}-byte frame`, input, "");
      }
    }
  } finally {
    allocations.restore();
  }
  t.diagnostic(`seed ${SEED}: ${cases} mutated frames, ${decoded} decoded, the rest refused`);
  assert.ok(cases > 0 && decoded > 0, `${cases} cases, ${decoded} decoded (seed ${SEED})`);
});

test("fuzz: mutated record batches of every codec decode or fail with BatchError, within their budget", { timeout: 120_000 }, async (t) => {
  const r = rng(SEED + 1);
  const maxBytes = 256 * 1024;
  const gate = testGate(maxBytes);
  const sets = fixtures.filter((f) => f.apiKey === 0).map(recordSetOf);
  const snappy = fixtures.find((f) => f.apiKey === 0 && f.codec === 2)!;
  sets.push(rebatch(recordSetOf(snappy), xerial(recordSetOf(snappy).subarray(BATCH_OVERHEAD))));
  const gzipped = sets.filter((s) => (s.readInt16BE(21) & 7) === 1);
  // Batch length, last offset delta and record count; and the codecs' own sizes at the end of the set (gzip's ISIZE).
  const lengths = (set: Buffer): LengthField[] => [
    { at: 8, width: 4 },
    { at: 23, width: 4 },
    { at: 57, width: 4 },
    { at: set.length - 4, width: 4 },
  ];
  const allocations = watchAllocations();
  let cases = 0;
  let decoded = 0;
  const refusals = new Map<string, number>();
  try {
    for (const until = Date.now() + FUZZ_MS; Date.now() < until; cases++) {
      let input: Buffer;
      const kind = r();
      if (kind < 0.2) {
        // Records mutated under a valid gzip stream: the record decoder behind decompression.
        const set = pick(r, gzipped);
        input = rebatch(set, gzipSync(mutate(r, gunzipSync(set.subarray(BATCH_OVERHEAD)))));
      } else {
        const set = pick(r, sets);
        input = mutate(r, set, lengths(set));
        // Mostly with length and CRC made right, so that mutations reach the codecs and records.
        if (kind < 0.8) fixBatch(input, r() < 0.7);
      }
      allocations.reset();
      let batch: DecodedBatch | null = null;
      try {
        batch = await decodeProduceBatch(input, gate);
        decoded++;
      } catch (err) {
        if (!(err instanceof BatchError)) fail("decodeProduceBatch threw something other than BatchError", input, err);
        const why = `${err.code} ${err.message.replace(/\d+/g, "N")}`;
        refusals.set(why, (refusals.get(why) ?? 0) + 1);
      }
      if (batch !== null) gate.give(batch.held);
      if (gate.budget.used !== 0) fail(`${gate.budget.used} budget bytes left taken`, input, "");
      if (allocations.largest > maxBytes + 64 * 1024) fail(`an allocation of ${allocations.largest} bytes (budget ${maxBytes})`, input, "");
    }
  } finally {
    allocations.restore();
  }
  t.diagnostic(`seed ${SEED}: ${cases} mutated batches, ${decoded} decoded; refusals: ${[...refusals].sort((a, b) => b[1] - a[1]).map(([why, n]) => `${n}× ${why}`).join("; ")}`);
  assert.ok(gate.budget.peak <= maxBytes);
  assert.ok(decoded > 0, `${cases} cases, ${decoded} decoded (seed ${SEED})`);
});

test("a record set that declares more than the limit is refused before decompression, for every codec", async () => {
  // Smaller than any captured batch's records.
  const gate = testGate(8);
  for (const f of fixtures.filter((f) => f.apiKey === 0 && f.codec !== 0)) {
    const allocations = watchAllocations();
    try {
      await assert.rejects(decodeProduceBatch(recordSetOf(f), gate), (err: unknown) => err instanceof BatchError && err.code === 10, `${f.client} codec ${f.codec}: MESSAGE_TOO_LARGE`);
      assert.ok(allocations.largest <= 8, `codec ${f.codec}: nothing allocated for the output (${allocations.largest})`);
    } finally {
      allocations.restore();
    }
  }
  assert.equal(gate.budget.peak, 0, "nothing was taken from the budget");
});
