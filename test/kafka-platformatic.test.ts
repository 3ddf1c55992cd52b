/**
 * The Kafka door through @platformatic/kafka, a client that speaks only the
 * flexible versions of Kafka 3.5+ (Metadata v12, Produce v9, Fetch v15 by
 * topic id, ListOffsets, FindCoordinator v4, InitProducerId v4 and the group
 * APIs) and has no fallback to older ones: before nagare answered them it
 * could not even read the metadata. Its DescribeLogDirs v4, and its raw
 * ListTransactions v1, DescribeTransactions v0, DescribeProducers v0 and OffsetForLeaderEpoch v4. Plus raw frames for what the client
 * cannot be made to send: topics named by an id nobody has.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { Admin, Connection, Consumer, Producer, describeProducersV0, describeTransactionsV0, listTransactionsV1, offsetForLeaderEpochV4, type Message } from "@platformatic/kafka";
import { connect, headers as natsHeaders } from "nats";
import { startKafka, createTopic, type KafkaHarness } from "./helpers/kafka.js";
import { ask, flexibleFrame, frame, metadataTopics } from "./helpers/kafka-raw.js";
import type { Reader } from "../src/protocols/kafka/codec.js";

const ZERO_ID = "0".repeat(32);
const UNKNOWN_TOPIC_ID = 100;
const INVALID_REQUEST = 42;

/** Reads `count` messages from `topic` as a member of `groupId`, from where the group left off (the earliest when it has no offset), committing as it goes. */
async function consumeGroup(broker: string, groupId: string, topic: string, count: number): Promise<Array<Message<Buffer, Buffer, Buffer, Buffer>>> {
  const consumer = new Consumer({ groupId, clientId: "platformatic-test", bootstrapBrokers: [broker], maxWaitTime: 200, sessionTimeout: 10_000, heartbeatInterval: 500 });
  const got: Array<Message<Buffer, Buffer, Buffer, Buffer>> = [];
  try {
    const stream = await consumer.consume({ topics: [topic], mode: "committed", fallbackMode: "earliest", autocommit: false });
    for await (const m of stream) {
      got.push(m);
      await m.commit();
      if (got.length >= count) break;
    }
    await stream.close();
  } finally {
    await consumer.close(true);
  }
  return got;
}

describe("Kafka door: @platformatic/kafka (flexible versions only)", () => {
  let h: KafkaHarness;
  before(async () => {
    h = await startKafka({ autoCreateTopics: true });
  });
  after(async () => {
    await h.close();
  });

  test("an idempotent producer's records, a tombstone, headers and a NATS publish come back to a group member as sent, in order", async () => {
    const topic = "plt.roundtrip";
    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker], idempotent: true, acks: -1, autocreateTopics: true });
    try {
      const sent = await producer.send({
        messages: [
          { topic, key: Buffer.from("k0"), value: Buffer.from("v0"), headers: new Map([[Buffer.from("h"), Buffer.from("1")]]) },
          { topic, key: Buffer.from("k1"), value: Buffer.from("") },
          { topic, key: Buffer.from("k2"), value: null as unknown as Buffer },
        ],
      });
      assert.deepEqual(
        sent.offsets?.map((o) => [o.topic, o.partition, Number(o.offset)]),
        [[topic, 0, 0]],
      );
    } finally {
      await producer.close();
    }
    // A message published over NATS is framed as a batch when fetched (not stored as one): the other way of writing a record set.
    const nc = await connect({ servers: h.srv.url });
    try {
      await nc.jetstream().publish(topic, Buffer.from("from-nats"));
    } finally {
      await nc.close();
    }
    const got = await consumeGroup(h.broker, "plt-g1", topic, 4);
    assert.deepEqual(
      // The client reads a null value (and key) as undefined, an empty one as an empty buffer: the two stay apart.
      got.map((m) => [Number(m.offset), m.key == null ? null : m.key.toString(), m.value == null ? null : m.value.toString()]),
      [
        [0, "k0", "v0"],
        [1, "k1", ""],
        [2, "k2", null],
        [3, null, "from-nats"],
      ],
    );
    assert.deepEqual([...got[0].headers].map(([k, v]) => [k.toString(), v.toString()]), [["h", "1"]]);
  });

  test("a group's commits carry over: the next member resumes after what the last committed", async () => {
    const topic = "plt.resume";
    await createTopic(h, topic);
    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    const send = (from: number, n: number) =>
      producer.send({ messages: Array.from({ length: n }, (_, i) => ({ topic, partition: 0, value: Buffer.from(`m${from + i}`) })) });
    try {
      await send(0, 5);
      assert.deepEqual((await consumeGroup(h.broker, "plt-g2", topic, 5)).map((m) => m.value.toString()), ["m0", "m1", "m2", "m3", "m4"]);
      await send(5, 3);
      assert.deepEqual((await consumeGroup(h.broker, "plt-g2", topic, 3)).map((m) => m.value.toString()), ["m5", "m6", "m7"]);
    } finally {
      await producer.close();
    }
  });

  test("admin and transactions: a topic made with configs, altered and grown; a transaction committed, one aborted, and a read_committed member sees the committed records only", async () => {
    const topic = "plt.admin";
    const admin = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    try {
      const [made] = await admin.createTopics({ topics: [topic], partitions: 2, replicas: 1, configs: [{ name: "retention.ms", value: "3600000" }] });
      assert.deepEqual([made.name, made.partitions, made.replicas, made.configuration["retention.ms"]], [topic, 2, 1, "3600000"]);
      assert.equal(made.id, (await admin.metadata({ topics: [topic] })).topics.get(topic)!.id, "CreateTopics v7 answers the id Metadata gives");
      await admin.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: topic, configs: [{ name: "retention.ms", value: "7200000", configOperation: 0 }] }] });
      const [described] = await admin.describeConfigs({ resources: [{ resourceType: 2, resourceName: topic }] });
      assert.equal(described.configs.find((c) => c.name === "retention.ms")?.value, "7200000");
      await admin.createPartitions({ topics: [{ name: topic, count: 3 }] });
      assert.equal((await admin.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)!.partitionsCount, 3);
    } finally {
      await admin.close();
    }

    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker], idempotent: true, transactionalId: "plt-tx" });
    try {
      for (const [value, commit] of [
        ["committed", true],
        ["aborted", false],
        ["after", true],
      ] as const) {
        const tx = await producer.beginTransaction();
        await tx.send({ messages: [{ topic, partition: 0, value: Buffer.from(value) }] });
        if (commit) await tx.commit();
        else await tx.abort();
      }
    } finally {
      await producer.close();
    }
    // Each transaction's records, then its marker: offsets 0 and 4 are the committed ones.
    const got = await consumeGroup(h.broker, "plt-g4", topic, 2);
    assert.deepEqual(
      got.map((m) => [m.partition, Number(m.offset), m.value.toString()]),
      [
        [0, 0, "committed"],
        [0, 4, "after"],
      ],
    );
  });

  test("topic ids: Metadata gives each topic one that stays, a topic made again gets another, and Metadata and Fetch by an unknown id say UNKNOWN_TOPIC_ID", async () => {
    const topic = "plt.ids";
    await createTopic(h, topic);
    let admin = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    try {
      // The client shows an id as a UUID string; the wire carries its 16 bytes.
      const idOf = async (): Promise<string> => {
        const id = (await admin.metadata({ topics: [topic], forceUpdate: true })).topics.get(topic)!.id;
        assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        return id.replace(/-/g, "");
      };
      const first = await idOf();
      assert.notEqual(first, ZERO_ID);
      assert.equal(await idOf(), first, "the same id every time");
      // Derived from what the store keeps, not from the process: the same after a restart.
      await admin.close();
      await h.restart();
      admin = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
      assert.equal(await idOf(), first, "the same id after a restart");

      // Fetch v13+ names the topic by that id: a record produced is read back through it.
      const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
      await producer.send({ messages: [{ topic, partition: 0, value: Buffer.from("by-id") }] });
      await producer.close();
      assert.deepEqual((await consumeGroup(h.broker, "plt-g3", topic, 1)).map((m) => m.value.toString()), ["by-id"]);

      const kafkaAdmin = h.kafka().admin();
      await kafkaAdmin.connect();
      await kafkaAdmin.deleteTopics({ topics: [topic] });
      await kafkaAdmin.disconnect();
      await createTopic(h, topic);
      const second = await idOf();
      assert.notEqual(second, first, "a new topic of the same name: a new id");

      // The old id names nothing now.
      const port = Number(h.broker.split(":")[1]);
      /** Metadata of `version` asking for one topic by id alone. */
      const byId = (version: number, id: string) =>
        ask(
          port,
          flexibleFrame(3, version, (w) => {
            w.arrayLength(1).uuid(id).nullableString(null).taggedFields();
            w.bool(false).bool(false).taggedFields();
          }),
          metadataTopics,
        );
      assert.deepEqual(await byId(12, first), [{ error: UNKNOWN_TOPIC_ID, name: null, id: first, partitions: 0 }]);
      // v10–11 may not name a topic by id (their answer's name cannot be null): INVALID_REQUEST, as Kafka refuses it.
      assert.deepEqual(await byId(11, second), [{ error: INVALID_REQUEST, name: "", id: ZERO_ID, partitions: 0 }]);

      const fetched = await ask(
        port,
        flexibleFrame(1, 15, (w) => {
          w.i32(0).i32(1).i32(1 << 20).i8(0).i32(0).i32(-1);
          w.arrayLength(1).uuid(first);
          w.arrayLength(1).i32(0).i32(-1).i64(0).i32(-1).i64(-1).i32(1 << 20).taggedFields();
          w.taggedFields();
          w.arrayLength(0).string("").taggedFields();
        }),
        (r: Reader) => {
          r.flexible = true;
          r.taggedFields();
          r.i32(); // throttle
          const error = r.i16();
          r.i32(); // session
          const topics = r.array((r) => ({ id: r.uuid(), partitions: r.array((r) => ({ index: r.i32(), error: r.i16() })) }));
          return { error, topics };
        },
      );
      assert.deepEqual(fetched, { error: 0, topics: [{ id: first, partitions: [{ index: 0, error: UNKNOWN_TOPIC_ID }] }] });
    } finally {
      await admin.close();
    }
  });

  test("admin.describeLogDirs: the broker's copy of each partition asked for, its stored bytes, in the store's directory, with the file system's size and free space", async () => {
    const topic = "plt.sized";
    await createTopic(h, topic, 2);
    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    await producer.send({ messages: ["a", "b", "c"].map((v) => ({ topic, partition: 1, value: Buffer.from(v) })) });
    await producer.close();
    const admin = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    try {
      const [broker] = await admin.describeLogDirs({ topics: [{ name: topic, partitions: [0, 1] }] });
      assert.equal(broker.broker, 0);
      const [dir] = broker.results;
      assert.equal(dir.logDir, resolve(h.storeDir));
      const stored = h.srv.jetstream!.streams.get("plt_sized")!.partitions[1].state().bytes;
      assert.ok(stored > 3, "three records' bytes");
      assert.deepEqual(
        dir.topics.map((t) => [t.name, t.partitions.map((p) => [p.partitionIndex, Number(p.partitionSize), Number(p.offsetLag), p.isFutureKey])]),
        [[topic, [[0, 0, 0, false], [1, stored, 0, false]]]],
      );
      assert.ok(dir.totalBytes > 0n && dir.usableBytes > 0n && dir.usableBytes <= dir.totalBytes);
    } finally {
      await admin.close();
    }
  });

  test("admin.describeClientQuotas: no quotas (nagare keeps none); a filter Kafka refuses is INVALID_REQUEST", async () => {
    const admin = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    try {
      assert.deepEqual(await admin.describeClientQuotas({ components: [{ entityType: "user", matchType: 2 }] }), []);
      assert.deepEqual(await admin.describeClientQuotas({ components: [{ entityType: "client-id", matchType: 0, match: "app" }], strict: true }), []);
      // An exact match that names nothing (the client's type forbids it; its encoder sends a null match).
      await assert.rejects(admin.describeClientQuotas({ components: [{ entityType: "user", matchType: 0 } as never] }), (err: Error & { errors?: Array<{ errors?: Array<{ apiCode?: number; apiId?: string }> }> }) => {
        assert.deepEqual(
          err.errors?.flatMap((e) => e.errors?.map((x) => [x.apiCode, x.apiId]) ?? []),
          [[42, "INVALID_REQUEST"]],
        );
        return true;
      });
    } finally {
      await admin.close();
    }
  });

  test("ListTransactions v1 and DescribeTransactions v0 through the client's own encoders and decoders: an open transaction's state, producer, start and partitions; then CompleteCommit; filters; unknown ids and states", async () => {
    const topic = "plt.txn-admin";
    await createTopic(h, topic, 2);
    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker], idempotent: true, transactionalId: "plt-listed" });
    const [host, port] = h.broker.split(":");
    const conn = new Connection("platformatic-test");
    await conn.connect(host, Number(port));
    const list = async (states: string[] = [], producerIds: bigint[] = [], durationMs = -1n) => {
      // Kafka's state names on the wire ("Ongoing"): the client's type names others (its admin's enumeration).
      const a = await listTransactionsV1.api.async(conn, states as never, producerIds, durationMs, null);
      return { unknown: a.unknownStateFilters, listed: a.transactionStates.filter((t) => t.transactionalId === "plt-listed").map((t) => [t.transactionState, t.producerId]) };
    };
    // The client throws on an error code in the answer, with the answer decoded beside it.
    const describeAnswer = (ids: string[]) =>
      describeTransactionsV0.api.async(conn, ids).catch((err: { response?: Awaited<ReturnType<typeof describeTransactionsV0.api.async>> }) => {
        if (err.response === undefined) throw err;
        return err.response;
      });
    const describe = async (ids: string[]) =>
      (await describeAnswer(ids)).transactionStates.map((t) => ({
        error: t.errorCode,
        id: t.transactionalId,
        state: t.transactionState,
        timeoutMs: t.transactionTimeoutMs,
        startedAt: Number(t.transactionStartTimeMs),
        producerId: t.producerId,
        epoch: t.producerEpoch,
        topics: t.topics.map((p) => [p.topic, [...p.partitions].sort()]),
      }));
    try {
      const before = Date.now();
      const tx = await producer.beginTransaction();
      await tx.send({ messages: [0, 1].map((partition) => ({ topic, partition, value: Buffer.from(`p${partition}`) })) });
      const [open] = await describe(["plt-listed"]);
      assert.equal(open.error, 0);
      assert.equal(open.state, "Ongoing");
      assert.ok(open.startedAt >= before && open.startedAt <= Date.now(), `started at ${open.startedAt}`);
      assert.ok(open.timeoutMs > 0);
      assert.deepEqual(open.topics, [[topic, [0, 1]]]);
      assert.deepEqual(await list(), { unknown: [], listed: [["Ongoing", open.producerId]] });
      assert.deepEqual(await list(["Ongoing"], [open.producerId]), { unknown: [], listed: [["Ongoing", open.producerId]] });
      assert.deepEqual(await list(["Empty", "Bogus"]), { unknown: ["Bogus"], listed: [] }, "a state filter it does not match; a state Kafka does not have");
      assert.deepEqual(await list([], [open.producerId + 1n]), { unknown: [], listed: [] });
      assert.deepEqual(await list([], [], 3_600_000n), { unknown: [], listed: [] }, "not running an hour yet");
      await tx.commit();
      const [done] = await describe(["plt-listed"]);
      assert.deepEqual([done.state, done.producerId, done.epoch, done.startedAt, done.topics], ["CompleteCommit", open.producerId, open.epoch, open.startedAt, []]);
      assert.deepEqual(await list(), { unknown: [], listed: [["CompleteCommit", open.producerId]] });
      const [unknown, empty] = await describe(["plt-nobody", ""]);
      assert.deepEqual([unknown.error, unknown.id, unknown.state], [105, "plt-nobody", ""], "TRANSACTIONAL_ID_NOT_FOUND");
      assert.equal(empty.error, 42, "an empty id: INVALID_REQUEST");
      // A new session of the id (InitProducerId): a new epoch, no transaction begun (its start -1 again, as Kafka resets it).
      await producer.close();
      const init = await ask(Number(port), frame(22, 0, (w) => w.nullableString("plt-listed").i32(60_000)), (r) => (r.i32(), { error: r.i16(), producerId: r.i64(), epoch: r.i16() }));
      assert.equal(init.error, 0);
      const [fresh] = await describe(["plt-listed"]);
      assert.deepEqual([fresh.state, fresh.epoch, fresh.startedAt], ["Empty", init.epoch, -1]);
    } finally {
      await conn.close();
      await producer.close();
    }
  });

  test("DescribeProducers v0 through the client's own encoder and decoder: idempotent and transactional producers, an open transaction's first offset, then its marker; a non-idempotent producer is not listed; unknown partitions", async () => {
    const topic = "plt.producers";
    await createTopic(h, topic, 2);
    const [host, port] = h.broker.split(":");
    const conn = new Connection("platformatic-test");
    await conn.connect(host, Number(port));
    const describeAnswer = (topics: Array<{ name: string; partitionIndexes: number[] }>) =>
      describeProducersV0.api.async(conn, topics).catch((err: { response?: Awaited<ReturnType<typeof describeProducersV0.api.async>> }) => {
        if (err.response === undefined) throw err;
        return err.response;
      });
    const producersOf = (partition: number) => producersOfTopic(topic, partition);
    const producersOfTopic = async (topic: string, partition = 0) => {
      const [t] = (await describeAnswer([{ name: topic, partitionIndexes: [partition] }])).topics;
      const [p] = t.partitions;
      assert.deepEqual([t.name, p.partitionIndex, p.errorCode, p.errorMessage], [topic, partition, 0, null]);
      return new Map(
        p.activeProducers.map((a) => [
          a.producerId,
          { epoch: a.producerEpoch, lastSequence: a.lastSequence, lastTimestamp: Number(a.lastTimestamp), coordinatorEpoch: a.coordinatorEpoch, txnStart: Number(a.currentTxnStartOffset) },
        ]),
      );
    };
    const plain = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    const idempotent = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker], idempotent: true, acks: -1 });
    const txnal = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker], idempotent: true, transactionalId: "plt-producers" });
    try {
      const before = Date.now();
      await plain.send({ messages: [{ topic, partition: 0, value: Buffer.from("not idempotent") }] });
      // Two sends of 3 and 2 records: sequences 0-2 and 3-4.
      await idempotent.send({ messages: ["a", "b", "c"].map((v) => ({ topic, partition: 0, value: Buffer.from(v) })) });
      await idempotent.send({ messages: ["d", "e"].map((v) => ({ topic, partition: 0, value: Buffer.from(v) })) });
      const after = Date.now();
      const first = await producersOf(0);
      assert.equal(first.size, 1, "only the idempotent producer: the plain one has no producer id");
      const [[idemId, idem]] = [...first];
      assert.deepEqual([idem.epoch, idem.lastSequence, idem.coordinatorEpoch, idem.txnStart], [0, 4, -1, -1]);
      assert.ok(idem.lastTimestamp >= before && idem.lastTimestamp <= after, `last timestamp ${idem.lastTimestamp}: the producer's own (CreateTime)`);

      // A NATS publish may not carry the header that marks an idempotent batch: it could pass for a producer's (a forged one
      // would be listed here, and trusted when the producer's state is rebuilt after a restart). The name in a value is fine.
      const nc = await connect({ servers: h.srv.url });
      try {
        const js = nc.jetstream();
        const forged = natsHeaders();
        forged.set("Kafka-Batch", `${idemId} 0 5 1`);
        await assert.rejects(js.publish(topic, Buffer.from("forged"), { headers: forged }), (err: Error & { api_error?: { err_code: number; description: string } }) => {
          assert.match(err.message, /header kafka-batch is reserved for the kafka door/i);
          return true;
        });
        const mention = natsHeaders();
        mention.set("Note", "Kafka-Batch: 1 0 0 1");
        assert.equal((await js.publish(topic, Buffer.from("fine"), { headers: mention })).seq, 7, "offsets 0-5 above, this one at 6");
      } finally {
        await nc.close();
      }
      assert.deepEqual(await producersOf(0), first, "nothing forged, nothing more");

      // A transaction left open: its first record's offset (7, after the 7 records above) shows, as find-hanging looks for.
      const tx = await txnal.beginTransaction();
      await tx.send({ messages: [0, 1].map((partition) => ({ topic, partition, value: Buffer.from(`t${partition}`) })) });
      const open = await producersOf(0);
      assert.deepEqual(open.get(idemId), idem, "the idempotent producer as before");
      const txnEntries = [...open].filter(([id]) => id !== idemId);
      assert.equal(txnEntries.length, 1);
      const [txnId, txn] = txnEntries[0];
      assert.deepEqual([txn.lastSequence, txn.coordinatorEpoch, txn.txnStart], [0, -1, 7]);
      assert.deepEqual([...(await producersOf(1))].map(([id, a]) => [id, a.txnStart]), [[txnId, 0]], "partition 1: the transaction from its first offset");
      await tx.commit();
      const committed = (await producersOf(0)).get(txnId)!;
      assert.deepEqual([committed.epoch, committed.lastSequence, committed.coordinatorEpoch, committed.txnStart], [txn.epoch, 0, 0, -1], "the marker closed it: a coordinator epoch, no transaction open");

      // A transaction left open whose first records are deleted (DeleteRecords): still listed, from where it began, while it
      // holds readers back; its batch stays as produced (Kafka keeps it), so its last sequence is still known.
      const cut = "plt.producers-cut";
      await createTopic(h, cut);
      const tx2 = await txnal.beginTransaction();
      await tx2.send({ messages: ["0", "1", "2", "3", "4"].map((v) => ({ topic: cut, partition: 0, value: Buffer.from(v) })) });
      const [cutOpen] = [...(await producersOfTopic(cut))];
      assert.deepEqual([cutOpen[1].lastSequence, cutOpen[1].txnStart], [4, 0], "the open batch: sequences 0-4, from offset 0");
      const deleter = new Admin({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
      try {
        await deleter.deleteRecords({ topics: [{ name: cut, partitions: [{ partition: 0, offset: 2n }] }] });
      } finally {
        await deleter.close();
      }
      const [cutAfter] = [...(await producersOfTopic(cut))];
      assert.deepEqual([cutAfter[0], cutAfter[1].epoch, cutAfter[1].lastSequence, cutAfter[1].txnStart], [cutOpen[0], cutOpen[1].epoch, 4, 0]);
      // Its last stable offset is the log start, not below it (Kafka's): read_committed ListOffsets v2 for the latest.
      const latestCommitted = await ask(Number(port), frame(2, 2, (w) => w.i32(-1).i8(1).arrayLength(1).string(cut).arrayLength(1).i32(0).i64(-1)), (r) => {
        r.i32(); // throttle
        r.arrayLength();
        r.string();
        r.arrayLength();
        return { index: r.i32(), error: r.i16(), timestamp: r.i64(), offset: r.i64() };
      });
      assert.deepEqual(latestCommitted, { index: 0, error: 0, timestamp: -1, offset: 2 });
      await tx2.abort();

      // A partition named twice is answered twice; unknown partitions and topics per partition.
      const answer = await describeAnswer([
        { name: topic, partitionIndexes: [1, 1, 7] },
        { name: "plt.nobody", partitionIndexes: [0] },
      ]);
      assert.deepEqual(
        answer.topics.map((t) => [t.name, t.partitions.map((p) => [p.partitionIndex, p.errorCode, p.activeProducers.length])]),
        [
          [topic, [[1, 0, 1], [1, 0, 1], [7, 3, 0]]],
          ["plt.nobody", [[0, 3, 0]]],
        ],
        "UNKNOWN_TOPIC_OR_PARTITION (3)",
      );
      // Past 10,000 partitions named, each is INVALID_REQUEST (42): every one would be read, and the answer has no bound.
      const many = await describeAnswer([{ name: topic, partitionIndexes: new Array<number>(10_001).fill(0) }]);
      assert.deepEqual([...new Set(many.topics[0].partitions.map((p) => `${p.errorCode} ${p.activeProducers.length}`))], ["42 0"]);
      assert.equal(many.topics[0].partitions.length, 10_001);
    } finally {
      await conn.close();
      await Promise.all([plain.close(), idempotent.close(), txnal.close()]);
    }
  });

  test("OffsetForLeaderEpoch v4 through the client's own encoder and decoder: epoch 0 ends at the log end, a later epoch is unknown", async () => {
    const topic = "plt.epochs";
    await createTopic(h, topic);
    const producer = new Producer({ clientId: "platformatic-test", bootstrapBrokers: [h.broker] });
    await producer.send({ messages: ["a", "b", "c"].map((v) => ({ topic, partition: 0, value: Buffer.from(v) })) });
    await producer.close();
    const [host, port] = h.broker.split(":");
    const conn = new Connection("platformatic-test");
    await conn.connect(host, Number(port));
    try {
      // Partition 0 only: this client reads an answer's partition index before its error code (Kafka's schema has the error
      // first), which for partition 0 and no error reads the same.
      const ask23 = async (leaderEpoch: number) => {
        const answer = await offsetForLeaderEpochV4.api.async(conn, -1, [{ name: topic, partitions: [{ partitionIndex: 0, currentLeaderEpoch: 0, leaderEpoch }] }]);
        const p = answer.topics[0].partitions[0];
        return { errorCode: p.errorCode, leaderEpoch: p.leaderEpoch, endOffset: Number(p.endOffset) };
      };
      assert.deepEqual(await ask23(0), { errorCode: 0, leaderEpoch: 0, endOffset: 3 });
      assert.deepEqual(await ask23(5), { errorCode: 0, leaderEpoch: -1, endOffset: -1 });
    } finally {
      await conn.close();
    }
  });
});
