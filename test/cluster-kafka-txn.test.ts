/**
 * Kafka transactions on a replicated partition, across a failover: every
 * replica reads what its own log holds of transactions (txn-index.ts), so
 * the follower that takes over serves read_committed readers and NATS
 * readers as the old leader did: aborted records dropped, markers hidden.
 * The coordinator's state is replicated too (`__transaction_state`,
 * txn-state-log.ts): when its broker goes, another takes it over and
 * aborts the transaction left open, and the transactional id goes on. Judged by kcat (librdkafka),
 * raw ListOffsets and the NATS JetStream client. A transaction whose
 * partitions are led by different brokers: its coordinator writes each
 * marker at the partition's leader (JetStream.appendAt).
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { ask, findCoordinator, flexibleBody, flexibleFrame, frame, RawKafka } from "./helpers/kafka-raw.js";
import { offsetFetch } from "./helpers/kafka-group-requests.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";
import { partitionOfKey } from "../src/protocols/kafka/coordinator-topic.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("kafkatxn");
});
after(() => cluster.stop());

const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);

/** The broker coordinating a transactional id, as broker `n` answers FindCoordinator (-1: none up, or the state topic being made). */
async function transactionCoordinator(n: NagareServer, transactionalId: string): Promise<number> {
  const c = await findCoordinator(n.kafkaPort!, transactionalId, 1);
  return c.error === 0 ? c.id : -1;
}

/** A transactional producer and a plain idempotent one, connected; `close` disconnects both. */
async function producers(kafka: InstanceType<typeof Kafka>, transactionalId: string) {
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  const plain = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  await plain.connect();
  return { producer, plain, close: async () => void (await Promise.all([plain.disconnect(), producer.disconnect()])) };
}

/** Partition 0's leader as broker `n`'s Metadata v1 says (-1: none). */
async function leaderOf(n: NagareServer, topic: string): Promise<number> {
  const k = await RawKafka.open(n.kafkaPort!);
  try {
    k.send(frame(3, 1, (w) => w.arrayLength(1).string(topic)));
    const r = await k.response(0);
    for (let b = r.i32(), i = 0; i < b; i++) {
      r.i32();
      r.string();
      r.i32();
      r.nullableString();
    }
    r.i32(); // controller
    assert.equal(r.i32(), 1);
    assert.equal(r.i16(), 0);
    r.string();
    r.bool();
    assert.equal(r.i32(), 1);
    r.i16();
    r.i32();
    return r.i32();
  } finally {
    k.destroy();
  }
}

/** ListOffsets v2 latest of a partition at an isolation level (1: read_committed, the last stable offset), asked of broker `n`. */
async function latest(n: NagareServer, topic: string, isolation: 0 | 1, partition = 0): Promise<{ error: number; offset: number }> {
  const k = await RawKafka.open(n.kafkaPort!);
  try {
    k.send(frame(2, 2, (w) => w.i32(-1).i8(isolation).arrayLength(1).string(topic).arrayLength(1).i32(partition).i64(-1)));
    const r = await k.response(0);
    r.i32(); // throttle
    assert.equal(r.i32(), 1);
    r.string();
    assert.equal(r.i32(), 1);
    r.i32();
    const error = r.i16();
    r.i64(); // timestamp
    return { error, offset: Number(r.i64()) };
  } finally {
    k.destroy();
  }
}

/** A transactional id whose coordinator is broker `id`, as broker `n` answers FindCoordinator (the state topic may still be being made). */
async function coordinatedBy(n: NagareServer, id: number, prefix: string): Promise<string> {
  let found = "";
  await waitUntilAsync(async () => {
    for (let i = 0; found === "" && i < 100; i++) if ((await transactionCoordinator(n, `${prefix}-${i}`)) === id) found = `${prefix}-${i}`;
    return found !== "";
  }, `a transactional id coordinated by broker ${id}`, 20_000);
  return found;
}

const byFirst = (a: readonly number[], b: readonly number[]): number => a[0] - b[0];

/** DescribeProducers v0 of partition 0 of `topic`, asked of `n`: the error and each producer's [last sequence, coordinator epoch, open transaction's first offset], by producer id. */
async function producersAt(n: NagareServer, topic: string): Promise<{ error: number; producers: Map<number, [number, number, number]> }> {
  return ask(n.kafkaPort!, flexibleFrame(61, 0, (w) => w.array([topic], (w, t) => w.string(t).array([0], (w, i) => w.i32(i)).taggedFields()).taggedFields()), (r) => {
    flexibleBody(r);
    r.i32(); // throttle
    const [[partition]] = r.array((r) => {
      r.string();
      const partitions = r.array((r) => {
        const index = r.i32();
        const error = r.i16();
        r.nullableString();
        const producers = new Map(
          r.array((r) => {
            const id = r.i64();
            r.i32(); // epoch
            const entry: [number, number, number] = [r.i32(), (r.i64(), r.i32()), r.i64()];
            r.taggedFields();
            return [id, entry] as const;
          }),
        );
        r.taggedFields();
        return { index, error, producers };
      });
      r.taggedFields();
      return partitions;
    });
    return { error: partition.error, producers: partition.producers };
  });
}

test("the partition's leader and the transaction's coordinator go together: a follower leads the partition as its leader did, and another broker takes the transaction state over with the transaction still open, which its producer then commits", async () => {
  const topic = "txn.replicated";
  const stream = "txn_replicated";
  const bootstrap = cluster.nodes.map(address);
  const kafka = new Kafka({ clientId: "txn-failover", brokers: bootstrap, logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 3 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const leaderId = await leaderOf(cluster.nodes[0], topic);
  const transactionalId = await coordinatedBy(cluster.nodes[0], leaderId, "tx");
  const leader = cluster.nodes.find((n) => brokerId(n) === leaderId)!;

  const { producer, plain, close } = await producers(kafka, transactionalId);
  let now: NagareServer;
  try {
    const committed = await producer.transaction();
    await committed.send({ topic, messages: [{ value: "c1" }] });
    await committed.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [{ value: "a1" }, { value: "a2" }] });
    await aborted.abort();
    await plain.send({ topic, acks: -1, messages: [{ value: "p1" }] });
    // Open as its coordinator goes with the leader.
    const open = await producer.transaction();
    await open.send({ topic, messages: [{ value: "o1" }] });
    await plain.send({ topic, acks: -1, messages: [{ value: "p2" }] });
    // Offsets: c1 0, commit 1, a1 2, a2 3, abort 4, p1 5, o1 6, p2 7.
    assert.deepEqual(await latest(leader, topic, 1), { error: 0, offset: 6 }, "the leader's last stable offset: o1's");
    await waitUntil(() => cluster.nodes.every((n) => n.jetstream!.streams.get(stream)?.partitions[0].state().lastSeq === 8), "every replica to hold the 8 records");
    // DescribeProducers at the leader: the plain producer's last sequence 1 (p1, p2) and no marker; the transactional one's 3
    // (c1, a1, a2, o1: one epoch), the markers of its two earlier transactions, and o1's open from offset 6. Each follower
    // answers the same from its own copy, as Kafka's do.
    for (const n of cluster.nodes) {
      const described = await producersAt(n, topic);
      assert.equal(described.error, 0, `broker ${brokerId(n)}`);
      assert.deepEqual([...described.producers.values()].sort(byFirst), [[1, -1, -1], [3, 0, 6]], `broker ${brokerId(n)}`);
    }

    await cluster.close(leader);
    const others = cluster.live();
    await waitUntilAsync(async () => ![-1, leaderId].includes(await leaderOf(others[0], topic)), "a follower to lead the partition", 20_000);
    const newId = await leaderOf(others[0], topic);
    now = others.find((n) => brokerId(n) === newId)!;
    // The new leader holds the open transaction back as its predecessor did, and its new coordinator keeps it open, as
    // Kafka's does: the producer adds to it and commits it there.
    await waitUntilAsync(async () => (await latest(now, topic, 1)).error === 0, "the new leader to answer", 20_000);
    assert.deepEqual(await latest(now, topic, 1), { error: 0, offset: 6 }, "still open at the new leader");
    await open.send({ topic, messages: [{ value: "o2" }] });
    // KafkaJS does not retry EndTxn: its coordinator must have loaded the transaction (COORDINATOR_LOAD_IN_PROGRESS
    // before, as Kafka's answers), which a loaded machine may not have done by now.
    await waitUntilAsync(async () => {
      for (const n of cluster.live()) if ((await describedTxn(n, transactionalId)).error === 0) return true;
      return false;
    }, "the transaction's new coordinator to have loaded it", 20_000);
    await open.commit();
  } finally {
    await close();
  }
  // o2 8, the commit marker 9.
  await waitUntilAsync(async () => (await latest(now, topic, 1)).offset === 10, "the commit to close the transaction", 30_000);
  assert.deepEqual(await latest(now, topic, 0), { error: 0, offset: 10 });
  const rebuilt = await producersAt(now, topic);
  assert.equal(rebuilt.error, 0);
  assert.deepEqual([...rebuilt.producers.values()].sort(byFirst), [[1, -1, -1], [4, 0, -1]], "the transactional producer's sequence went on at the new leader (o2: 4), nothing open");
  // read_committed: the aborted transaction dropped (librdkafka filters it by the aborted list the new leader sends).
  const readCommitted = await kcat(["-b", address(now), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%s\n"]);
  assert.equal(readCommitted.code, 0, readCommitted.stderr);
  assert.deepEqual(readCommitted.stdout.trim().split("\n"), ["c1", "p1", "o1", "p2", "o2"]);
  const uncommitted = await kcat(["-b", address(now), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_uncommitted", "-f", "%s\n"]);
  assert.equal(uncommitted.code, 0, uncommitted.stderr);
  assert.deepEqual(uncommitted.stdout.trim().split("\n"), ["c1", "a1", "a2", "p1", "o1", "p2", "o2"]);

  // NATS readers of the new leader: neither markers nor aborted records; the committed transaction's, both sides of the failover.
  const nc = await connect({ port: now.port });
  try {
    const jsm = await jetstreamManager(nc);
    const get = (seq: number): Promise<string> =>
      jsm.streams.getMessage(stream, { seq }).then(
        (m) => (m === null ? "none" : m.string()),
        (err: Error) => `error: ${err.message}`,
      );
    const seen: string[] = [];
    for (let seq = 1; seq <= 10; seq++) seen.push(await get(seq));
    // Hidden: not found, as nats-server answers a sequence it does not have.
    assert.deepEqual(seen, ["c1", "none", "none", "none", "none", "p1", "o1", "p2", "o2", "none"]);
  } finally {
    await nc.close();
  }

  // A new producer with the same transactional id fences the old one and goes on with the new coordinator.
  const again = new Kafka({ clientId: "txn-again", brokers: cluster.live().map(address), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } }).producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await again.connect();
  try {
    const t = await again.transaction();
    await t.send({ topic, messages: [{ value: "n1" }] });
    await t.commit();
  } finally {
    await again.disconnect();
  }
  const after = await kcat(["-b", address(now), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", "6", "-q", "-X", "isolation.level=read_committed", "-f", "%s\n"]);
  assert.equal(after.code, 0, after.stderr);
  assert.deepEqual(after.stdout.trim().split("\n"), ["c1", "p1", "o1", "p2", "o2", "n1"]);
});

test("a transaction spans partitions led by different brokers: its coordinator writes each marker at the partition's leader, and readers there see its commit and nothing of its abort; only the coordinator lists and describes it", async () => {
  const topic = "txn.spread";
  const live = cluster.live();
  const kafka = new Kafka({ clientId: "txn-spread", brokers: live.map(address), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  await admin.connect();
  let leaders: number[];
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    leaders = meta.topics[0].partitions.sort((a, b) => a.partitionId - b.partitionId).map((p) => p.leader);
  } finally {
    await admin.disconnect();
  }
  // Two partitions led by two brokers; the transaction coordinated by the first one's.
  const home = 0;
  const away = leaders.findIndex((l) => l !== leaders[home]);
  assert.ok(away > 0, `the partitions are spread: ${leaders.join(", ")}`);
  const transactionalId = await coordinatedBy(live[0], leaders[home], "spread");

  const { producer, plain, close } = await producers(kafka, transactionalId);
  try {
    const committed = await producer.transaction();
    await committed.send({ topic, messages: [home, away].map((partition) => ({ value: `committed-${partition}`, partition })) });
    await committed.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [home, away].map((partition) => ({ value: `aborted-${partition}`, partition })) });
    await aborted.abort();
    await plain.send({ topic, acks: -1, messages: [home, away].map((partition) => ({ value: `after-${partition}`, partition })) });
  } finally {
    await close();
  }
  for (const partition of [home, away]) {
    const leader = live.find((n) => brokerId(n) === leaders[partition])!;
    // Offsets: committed 0, its commit marker 1, aborted 2, its abort marker 3, after 4.
    assert.deepEqual(await latest(leader, topic, 1, partition), { error: 0, offset: 5 }, `partition ${partition}: nothing open`);
    const read = await kcat(["-b", address(leader), "-C", "-t", topic, "-p", String(partition), "-o", "beginning", "-c", "2", "-q", "-X", "isolation.level=read_committed", "-f", "%o %s\n"]);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(read.stdout.trim().split("\n"), [`0 committed-${partition}`, `4 after-${partition}`], `partition ${partition}`);
  }
  // The admin's view (KIP-664): only its coordinator lists the id and describes it (its last transaction aborted); the
  // other brokers answer NOT_COORDINATOR.
  for (const n of live) {
    const here = brokerId(n) === leaders[home];
    const listed = await ask(n.kafkaPort!, flexibleFrame(66, 0, (w) => w.arrayLength(0).arrayLength(0).taggedFields()), (r) => {
      flexibleBody(r);
      r.i32(); // throttle
      assert.equal(r.i16(), 0);
      assert.deepEqual(r.array((r) => r.string()), []);
      return r.array((r) => [r.string(), r.i64(), r.string(), r.taggedFields()][0]);
    });
    assert.equal(listed.includes(transactionalId), here, `broker ${brokerId(n)} lists ${listed.join(", ")}`);
    const [described] = await ask(n.kafkaPort!, flexibleFrame(65, 0, (w) => w.array([transactionalId], (w, id) => w.string(id)).taggedFields()), (r) => {
      flexibleBody(r);
      r.i32(); // throttle
      return r.array((r) => ({ error: r.i16(), id: r.string(), state: r.string() }));
    });
    assert.deepEqual(described, { error: here ? 0 : ErrorCode.NOT_COORDINATOR, id: transactionalId, state: here ? "CompleteAbort" : "" }, `broker ${brokerId(n)}`);
  }
});

/** DescribeTransactions of one id at broker `n`: its error (NOT_COORDINATOR elsewhere, COORDINATOR_LOAD_IN_PROGRESS while loading) and state. */
function describedTxn(n: NagareServer, transactionalId: string): Promise<{ error: number; state: string }> {
  return ask(n.kafkaPort!, flexibleFrame(65, 0, (w) => w.array([transactionalId], (w, id) => w.string(id)).taggedFields()), (r) => {
    flexibleBody(r);
    r.i32(); // throttle
    const [described] = r.array((r) => ({ error: r.i16(), state: (r.string(), r.string()) }));
    return described;
  });
}

/** A group id whose coordinator is not broker `not`, as broker `n` answers FindCoordinator. */
async function groupNotCoordinatedBy(n: NagareServer, not: number, prefix: string): Promise<{ groupId: string; coordinator: number }> {
  let found: { groupId: string; coordinator: number } | null = null;
  await waitUntilAsync(async () => {
    for (let i = 0; found === null && i < 100; i++) {
      const c = await findCoordinator(n.kafkaPort!, `${prefix}-${i}`, 0);
      if (c.error === 0 && c.id !== not) found = { groupId: `${prefix}-${i}`, coordinator: c.id };
    }
    return found !== null;
  }, `a group not coordinated by broker ${not}`, 20_000);
  return found!;
}

test("a transaction's offsets of a group another broker coordinates are committed there with it, and dropped with its abort; meanwhile they are unstable there", async (t) => {
  const input = "txn.offsets.in";
  const output = "txn.offsets.out";
  const live = cluster.live();
  const kafka = new Kafka({ clientId: "txn-offsets", brokers: live.map(address), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic: input }, { topic: output }], waitForLeaders: true });
    const transactionalId = await coordinatedBy(live[0], brokerId(live[0]), "offsets");
    const { groupId, coordinator } = await groupNotCoordinatedBy(live[0], brokerId(live[0]), "offsets-group");
    assert.notEqual(coordinator, brokerId(live[0]));
    const committedOffset = async (): Promise<string> => (await admin.fetchOffsets({ groupId, topics: [input] }))[0].partitions[0].offset;
    const raw = await RawKafka.open(live.find((n) => brokerId(n) === coordinator)!.kafkaPort!);
    t.after(() => raw.socket.destroy());
    const stable = async (): Promise<number[][]> => (await offsetFetch(raw, groupId, input, [0], 7, true)).partitions;

    const { producer, close } = await producers(kafka, transactionalId);
    try {
      const committed = await producer.transaction();
      await committed.send({ topic: output, messages: [{ value: "out-1" }] });
      await committed.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: 0, offset: "5" }] }] });
      // The group's coordinator holds the offset for the transaction another broker coordinates (KIP-447).
      assert.deepEqual(await stable(), [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], "held while the transaction is open");
      await committed.commit();
      assert.equal(await committedOffset(), "5", "the offsets committed with the transaction, at the group's coordinator");
      assert.deepEqual(await stable(), [[0, 5, ErrorCode.NONE]], "stable once committed");

      const aborted = await producer.transaction();
      await aborted.send({ topic: output, messages: [{ value: "out-2" }] });
      await aborted.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: 0, offset: "9" }] }] });
      assert.deepEqual(await stable(), [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], "held again");
      await aborted.abort();
      assert.equal(await committedOffset(), "5", "an aborted transaction's offsets are not committed");
      // EndTxn answers once the group's coordinator dropped the hold: the producer's next transaction may hold them again.
      assert.deepEqual(await stable(), [[0, 5, ErrorCode.NONE]], "stable once aborted");
    } finally {
      await close();
    }
  } finally {
    await admin.disconnect();
  }
});

/** InitProducerId v0 for a transactional id, asked of broker `n`: its producer id and epoch once the coordinator is ready. */
async function initProducer(n: NagareServer, transactionalId: string): Promise<{ producerId: number; epoch: number }> {
  let answer = { error: -1, producerId: -1, epoch: -1 };
  await waitUntilAsync(async () => {
    answer = await ask(n.kafkaPort!, frame(22, 0, (w) => w.nullableString(transactionalId).i32(60_000)), (r) => (r.i32(), { error: r.i16(), producerId: r.i64(), epoch: r.i16() }));
    return answer.error === 0;
  }, `a producer id for ${transactionalId}`, 20_000);
  return answer;
}

test("a transaction's group offsets are bounded by what its record can hold: past it TxnOffsetCommit is refused, and no other transaction is touched", async () => {
  const topic = "txn.wide";
  const live = cluster.live();
  const kafka = new Kafka({ clientId: "txn-wide", brokers: live.map(address), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 64 }], waitForLeaders: true });
    const home = live[0];
    const wide = await coordinatedBy(home, brokerId(home), "wide");
    // Another transactional id of the same __transaction_state partition (the same coordinator, one record stream).
    let bystander = "";
    for (let i = 0; bystander === ""; i++) if (partitionOfKey(`bystander-${i}`, 6) === partitionOfKey(wide, 6)) bystander = `bystander-${i}`;
    const { groupId, coordinator } = await groupNotCoordinatedBy(home, brokerId(home), "wide-group");
    const groupCoordinator = live.find((n) => brokerId(n) === coordinator)!;
    let otherGroup = "";
    for (let i = 0; otherGroup === "" && i < 200; i++) if ((await findCoordinator(home.kafkaPort!, `${groupId}-b${i}`, 0)).id === coordinator) otherGroup = `${groupId}-b${i}`;

    const w = await initProducer(home, wide);
    const b = await initProducer(home, bystander);
    const addOffsets = (id: string, p: { producerId: number; epoch: number }, group: string): Promise<number> =>
      ask(home.kafkaPort!, frame(25, 0, (x) => x.string(id).i64(p.producerId).i16(p.epoch).string(group)), (r) => (r.i32(), r.i16()));
    const txnOffsets = (id: string, p: { producerId: number; epoch: number }, group: string, parts: Array<[number, number, string | null]>): Promise<number[]> =>
      ask(
        groupCoordinator.kafkaPort!,
        frame(28, 0, (x) => {
          x.string(id).string(group).i64(p.producerId).i16(p.epoch).arrayLength(1).string(topic).arrayLength(parts.length);
          for (const [partition, offset, metadata] of parts) x.i32(partition).i64(offset).nullableString(metadata);
        }),
        (r) => {
          r.i32();
          const errors: number[] = [];
          for (let t = r.i32(); t > 0; t--) {
            r.string();
            for (let q = r.i32(); q > 0; q--) errors.push((r.i32(), r.i16()));
          }
          return errors;
        },
      );
    const endTxn = (id: string, p: { producerId: number; epoch: number }): Promise<number> =>
      ask(home.kafkaPort!, frame(26, 0, (x) => x.string(id).i64(p.producerId).i16(p.epoch).bool(true)), (r) => (r.i32(), r.i16()));

    assert.equal(await addOffsets(bystander, b, otherGroup), 0);
    assert.equal(await addOffsets(wide, w, groupId), 0);
    assert.deepEqual(await txnOffsets(bystander, b, otherGroup, [[0, 42, null]]).catch(() => [-1]), [0]);
    // Metadata of control characters, six bytes each in the record's JSON: 32 partitions fit, 64 would not.
    const metadata = "\u0001".repeat(4000);
    const parts = Array.from({ length: 64 }, (_, i): [number, number, string] => [i, 1000 + i, metadata]);
    assert.deepEqual(new Set(await txnOffsets(wide, w, groupId, parts.slice(0, 32))), new Set([0]));
    assert.deepEqual(new Set(await txnOffsets(wide, w, groupId, parts.slice(32))), new Set([12]), "past what the record holds: OFFSET_METADATA_TOO_LARGE");

    // Both commit; the wide one with the offsets it was allowed.
    assert.equal(await endTxn(wide, w), 0);
    assert.equal(await endTxn(bystander, b), 0);
    const committed = (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions.filter((p) => p.offset !== "-1");
    assert.equal(committed.length, 32);
    const other = (await admin.fetchOffsets({ groupId: otherGroup, topics: [topic] }))[0].partitions.find((p) => p.partition === 0)!;
    assert.equal(other.offset, "42", "the other transaction of the partition committed its offsets");
  } finally {
    await admin.disconnect();
  }
});

// Last in the file: it closes a broker, and leaves its transaction decided but never finished (a marker's partition
// is on the closed broker).
test("a transaction's hold on a group's offsets outlives the group's coordinator: the broker that takes the group over holds them too, and once the commit is decided until they are stored, past the transaction's timeout", async (t) => {
  const topic = "txn.hold";
  const live = cluster.live();
  const home = live[0];
  const kafka = new Kafka({ clientId: "txn-hold", brokers: live.map(address), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic, numPartitions: 6, replicationFactor: 1 }], waitForLeaders: true });
  const transactionalId = await coordinatedBy(home, brokerId(home), "hold");
  const { groupId, coordinator } = await groupNotCoordinatedBy(home, brokerId(home), "hold-group");
  const groupHome = live.find((n) => brokerId(n) === coordinator)!;
  // A partition only the group's coordinator has: once it is closed, the commit's marker there cannot be written.
  const [{ partitions }] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
  const stuck = partitions.find((p) => p.leader === coordinator)?.partitionId;
  assert.notEqual(stuck, undefined, `a partition of ${topic} led by broker ${coordinator}`);
  const stable = async (n: NagareServer): Promise<number[][]> => {
    const raw = await RawKafka.open(n.kafkaPort!);
    try {
      return (await offsetFetch(raw, groupId, topic, [0], 7, true)).partitions;
    } finally {
      raw.socket.destroy();
    }
  };

  const timeoutMs = 15_000;
  const producer = kafka.producer({ transactionalId, transactionTimeout: timeoutMs, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const heldFrom = Date.now();
  try {
    const txn = await producer.transaction();
    await txn.send({ topic, messages: [{ partition: stuck, value: "stuck" }] });
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic, partitions: [{ partition: 0, offset: "5" }] }] });
  } finally {
    await producer.disconnect(); // the transaction stays open
  }
  assert.deepEqual(await stable(groupHome), [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], "held at the group's coordinator");

  await cluster.close(groupHome);
  // The group's partition of the offsets topic goes to a follower of it, which reads the hold back from its copy.
  let answer: number[][] = [];
  let now = home;
  await waitUntilAsync(async () => {
    const c = await findCoordinator(home.kafkaPort!, groupId, 0);
    const next = cluster.live().find((n) => brokerId(n) === c.id);
    if (c.error !== ErrorCode.NONE || next === undefined) return false;
    now = next;
    answer = await stable(now);
    return !([ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.COORDINATOR_NOT_AVAILABLE] as number[]).includes(answer[0][2]);
  }, "the group's new coordinator to answer", 20_000);
  assert.ok(Date.now() < heldFrom + timeoutMs, "answered within the transaction's timeout (else this test cannot tell)");
  assert.deepEqual(answer, [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], "still held by the group's new coordinator");

  // Commit: decided, but its marker on the closed broker's partition is tried for ever. (EndTxn waits for the markers, so
  // it is sent raw and not waited for.)
  const { producerId, epoch } = await ask(home.kafkaPort!, flexibleFrame(65, 0, (w) => w.array([transactionalId], (w, id) => w.string(id)).taggedFields()), (r) => {
    flexibleBody(r);
    r.i32(); // throttle
    const [described] = r.array((r) => (r.i16(), r.string(), r.string(), r.i32(), r.i64(), { producerId: Number(r.i64()), epoch: r.i16() }));
    return described;
  });
  const ending = await RawKafka.open(home.kafkaPort!);
  t.after(() => ending.socket.destroy());
  ending.send(frame(26, 0, (w) => w.string(transactionalId).i64(producerId).i16(epoch).bool(true)));
  await waitUntilAsync(async () => (await describedTxn(home, transactionalId)).state === "PrepareCommit", "the commit to be decided", 20_000);
  await waitUntil(() => Date.now() > heldFrom + timeoutMs + 1_000, "the transaction's timeout to pass", timeoutMs + 5_000);
  assert.deepEqual(await stable(now), [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], "a decided commit's offsets held until they are stored, past the timeout");
});
