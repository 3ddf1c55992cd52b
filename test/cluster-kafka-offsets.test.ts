/**
 * Committed offsets survive the group coordinator's node, in a three-node
 * cluster with one real etcd, judged by KafkaJS and kcat: a group's commits
 * go to its partition of the replicated `__consumer_offsets` topic, whose
 * leader is the group's coordinator; when that node goes, an in-sync
 * follower of the partition takes it over and becomes the coordinator with
 * every acknowledged commit, so the group resumes where it was instead of
 * reading everything again. A coordinator cut off from etcd past its
 * lease answers its group requests COORDINATOR_NOT_AVAILABLE, not from
 * what it holds. A coordinator that takes its partition up again serves
 * no commit its copy holds beyond the high watermark until every in-sync
 * replica has it. Clients may read the internal topic but not produce to
 * it, create it or delete it.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { ask as askBroker, findCoordinator, frame } from "./helpers/kafka-raw.js";
import type { Reader } from "../src/protocols/kafka/codec.js";
import { offsetsPartitionOf, offsetSubject } from "../src/protocols/kafka/offsets-log.js";
import { appendAsync } from "../src/store/log.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => (cluster = await startKafkaTestCluster("kafkaoffsets")));
after(() => cluster.stop());

const live = (): NagareServer[] => cluster.live();
const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);

function client(): InstanceType<typeof Kafka> {
  return new Kafka({ clientId: "offsets-test", brokers: live().map(address), logLevel: logLevel.NOTHING, retry: { retries: 15, initialRetryTime: 200, maxRetryTime: 2000 } });
}

/** One request to broker `n` on a connection of its own, its answer read by `read`. */
function ask<T>(n: NagareServer, request: Buffer, read: (r: Reader) => T): Promise<T> {
  return askBroker(n.kafkaPort!, request, read);
}

/** The coordinator every live broker names, once they agree and it is up. */
async function coordinatorOf(group: string): Promise<number> {
  let id = -1;
  await waitUntilAsync(async () => {
    const answers = await Promise.all(live().map((n) => findCoordinator(n.kafkaPort!, group, 0)));
    id = answers[0].id;
    return answers.every((a) => a.error === 0 && a.id === id) && live().some((n) => brokerId(n) === id);
  }, `the live brokers to agree on the coordinator of ${group}`, 20_000);
  return id;
}

test("committed offsets are replicated: the group coordinator's node goes, an in-sync replica of its offsets partition coordinates the group with every commit, and the group resumes where it was", async () => {
  const topic = "orders-offsets";
  const group = "billing";
  const admin = client().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 3 }], waitForLeaders: true });
    const producer = client().producer({ idempotent: true });
    await producer.connect();
    try {
      for (let i = 0; i < 30; i++) await producer.send({ topic, acks: -1, messages: [{ key: `k${i}`, value: `v${i}`, partition: i % 3 }] });
    } finally {
      await producer.disconnect();
    }

    // The group reads everything and commits as it goes (KafkaJS's auto-commit, every message).
    const seen: string[] = [];
    const consumer = client().consumer({ groupId: group, sessionTimeout: 10_000 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ autoCommitThreshold: 1, eachMessage: async ({ message }) => void seen.push(message.value!.toString()) });
      await waitUntil(() => seen.length >= 30, "the group to read the 30 records", 30_000);
    } finally {
      await consumer.disconnect(); // commits what it read, then leaves
    }
    assert.equal(seen.length, 30);
    const committed = async (): Promise<string[]> => {
      const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      return t.partitions.sort((a, b) => a.partition - b.partition).map((p) => p.offset);
    };
    assert.deepEqual(await committed(), ["10", "10", "10"]);

    // The offsets topic: internal, three replicas of every partition, all in sync.
    const meta = await admin.fetchTopicMetadata({ topics: ["__consumer_offsets"] });
    assert.equal(meta.topics[0].partitions.length, 6);
    for (const p of meta.topics[0].partitions) assert.equal(p.replicas.length, 3);
  } finally {
    await admin.disconnect();
  }

  // The coordinator's node goes.
  const coordinator = await coordinatorOf(group);
  await cluster.close(cluster.nodes.find((n) => brokerId(n) === coordinator)!);

  const moved = await coordinatorOf(group);
  assert.notEqual(moved, coordinator, "another broker coordinates the group");

  // The new coordinator has every commit: the group's next member starts after them and reads only what is new.
  const admin2 = client().admin();
  await admin2.connect();
  try {
    const [t] = await admin2.fetchOffsets({ groupId: group, topics: [topic] });
    assert.deepEqual(
      t.partitions.sort((a, b) => a.partition - b.partition).map((p) => p.offset),
      ["10", "10", "10"],
    );
  } finally {
    await admin2.disconnect();
  }
  const producer = client().producer({ idempotent: true });
  await producer.connect();
  try {
    for (let i = 30; i < 36; i++) await producer.send({ topic, acks: -1, messages: [{ key: `k${i}`, value: `v${i}`, partition: i % 3 }] });
  } finally {
    await producer.disconnect();
  }
  const again: string[] = [];
  const consumer = client().consumer({ groupId: group, sessionTimeout: 10_000 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void again.push(message.value!.toString()) });
    await waitUntil(() => again.length >= 6, "the group to read the 6 new records", 30_000);
  } finally {
    await consumer.disconnect();
  }
  assert.deepEqual(again.sort(), ["v30", "v31", "v32", "v33", "v34", "v35"], "nothing committed before the coordinator went is read again");
});

/** OffsetFetch v1 of one partition, asked of broker `n`: its error and offset. */
function offsetFetch(n: NagareServer, group: string, topic: string): Promise<{ error: number; offset: number }> {
  return ask(n, frame(9, 1, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(0)), (r) => {
    r.arrayLength();
    r.string();
    r.arrayLength();
    r.i32();
    const offset = r.i64();
    r.nullableString();
    return { error: r.i16(), offset };
  });
}

/** The group's other requests, asked of broker `n`: the error each answers with (OffsetCommit v2's for its one partition). */
async function groupErrors(n: NagareServer, group: string, topic: string): Promise<{ commit: number; heartbeat: number; join: number }> {
  const commit = await ask(n, frame(8, 2, (w) => w.string(group).i32(-1).string("").i64(-1).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(9).nullableString(null)), (r) => {
    r.arrayLength();
    r.string();
    r.arrayLength();
    r.i32();
    return r.i16();
  });
  const heartbeat = await ask(n, frame(12, 0, (w) => w.string(group).i32(1).string("member")), (r) => r.i16());
  const join = await ask(n, frame(11, 0, (w) => w.string(group).i32(10_000).string("").string("consumer").arrayLength(1).string("range").nullableBytes(Buffer.alloc(0))), (r) => r.i16());
  return { commit, heartbeat, join };
}

/** A topic of one partition and two replicas (the first test took a broker away) with `group`'s offset 7 committed; the group's coordinator, serving it. */
async function committedSeven(topic: string, group: string): Promise<NagareServer> {
  const admin = client().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 2 }], waitForLeaders: true });
    await admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: "7" }] });
  } finally {
    await admin.disconnect();
  }
  const coordinator = await coordinatorOf(group);
  const node = live().find((n) => brokerId(n) === coordinator)!;
  assert.deepEqual(await offsetFetch(node, group, topic), { error: 0, offset: 7 });
  return node;
}

test("a coordinator that lost its lease answers no offsets from what it holds: another broker may coordinate the group by now", async () => {
  const topic = "fenced-offsets";
  const group = "fenced";
  const node = await committedSeven(topic, group);
  // Cut off from etcd, its lease runs out: a pause or a partition looks the same to it, and the others may have moved on.
  await cluster.etcd.kill();
  try {
    await waitUntil(() => !node.cluster!.membership.holdsLease(), "the coordinator to lose its lease", 15_000);
    // COORDINATOR_NOT_AVAILABLE (15): clients look for the coordinator again.
    assert.deepEqual(await offsetFetch(node, group, topic), { error: 15, offset: -1 });
    assert.deepEqual(await groupErrors(node, group, topic), { commit: 15, heartbeat: 15, join: 15 });
    // Whatever it names, it answers: clients go on asking until etcd is back.
    assert.ok([0, 15].includes((await findCoordinator(node.kafkaPort!, group, 0)).error));
  } finally {
    await cluster.etcd.start();
  }
  await waitUntil(() => live().every((n) => n.cluster!.membership.holdsLease()), "every node to hold a lease again", 30_000);
  // Served again by whichever broker coordinates the group now (asked each time: leaderships may still move), every commit there.
  await waitUntilAsync(async () => {
    const named = await findCoordinator(live()[0].kafkaPort!, group, 0);
    const now = live().find((n) => brokerId(n) === named.id);
    return named.error === 0 && now !== undefined && (await offsetFetch(now, group, topic)).offset === 7;
  }, "the group's offsets served again", 30_000);
});

test("a coordinator that takes its offsets partition up again while it still leads it serves no commit beyond the high watermark: one never replicated (never acknowledged) is served only once every in-sync replica has it", async () => {
  const topic = "unreplicated-offsets";
  const group = "unreplicated";
  const node = await committedSeven(topic, group);
  const door = node.kafka!.defaultDoor!;
  const stream = door.js.streams.get("__consumer_offsets")!;
  const p = offsetsPartitionOf(group, stream.partitions.length);
  const placed = () => node.kafka!.cluster!.topic(door.account, "__consumer_offsets")!;
  const epoch = placed().epochs[p];
  const copyOf = (n: NagareServer) => n.kafka!.defaultDoor!.js.streams.get("__consumer_offsets")!.partitions[p];
  const followers = live().filter((n) => n !== node && placed().isr[p].includes(brokerId(n)));
  assert.ok(followers.length > 0, "the partition has an in-sync follower");

  // What an earlier process of this node wrote as leader and never replicated (nor acknowledged): a commit of 99 in its copy
  // alone, beyond the high watermark, which its followers are not sent (the leader was not told of it).
  const seq = await appendAsync(stream.partitions[p], {
    subject: offsetSubject(group, `${topic}/0`),
    data: Buffer.from(JSON.stringify({ offset: 99, metadata: null, protocolType: "" })),
  });
  assert.ok(stream.replicatedSeq(p) < seq, "the commit of 99 is beyond the high watermark");

  // A moment in which its copy may not be written (asked then, it answers COORDINATOR_NOT_AVAILABLE and drops the partition),
  // as in a lease blip or a restart within the lease, after which it still leads in the same epoch and takes the partition
  // up again from its log. The gate refuses here rather than the lease: a fence's registering again deletes the node's key
  // for a moment, in which a follower often takes the partition over, and then there is nothing to judge.
  const gate = stream.replicaGate(p) as unknown as { handingOver: boolean };
  gate.handingOver = true;
  try {
    assert.equal(door.offsets!.check(group), 15);
  } finally {
    gate.handingOver = false;
  }
  let answer = { error: 15, offset: -1 };
  await waitUntilAsync(async () => (answer = await offsetFetch(node, group, topic)).error !== 15, "the coordinator to answer for its group again", 20_000);
  assert.equal(placed().epochs[p], epoch, "the coordinator still leads the partition in the same epoch");
  for (const f of followers) assert.ok(copyOf(f).state().lastSeq < seq, "no follower has the commit of 99");
  // Served now, 99 would be taken back by a failover to a follower: the partition is not served until they have it.
  assert.notEqual(answer.offset, 99, "a commit on no other in-sync replica is not served");
  assert.deepEqual(answer, { error: 14, offset: -1 }, "COORDINATOR_LOAD_IN_PROGRESS");

  // Once every in-sync replica has it (as when a leadership's log end includes it), the partition is served, 99 with it.
  await new Promise<void>((resolve, reject) => stream.replicaGate(p)!.replicate(seq, (err) => (err === null ? resolve() : reject(err))));
  for (const f of followers) assert.ok(copyOf(f).state().lastSeq >= seq, "every in-sync follower has the commit of 99");
  await waitUntilAsync(async () => (answer = await offsetFetch(node, group, topic)).error === 0, "the partition served", 20_000);
  assert.deepEqual(answer, { error: 0, offset: 99 });
});

test("clients may read __consumer_offsets but not produce to it, create it or delete it", async () => {
  const admin = client().admin();
  await admin.connect();
  const producer = client().producer();
  await producer.connect();
  try {
    const refused = await producer.send({ topic: "__consumer_offsets", acks: -1, messages: [{ value: "forged" }] }).then(
      () => "taken",
      (err: Error & { type?: string; cause?: { type?: string } }) => err.type ?? err.cause?.type ?? err.message,
    );
    assert.equal(refused, "INVALID_TOPIC_EXCEPTION");
    await assert.rejects(admin.deleteTopics({ topics: ["__consumer_offsets"], timeout: 5000 }), (err: Error & { type?: string }) => {
      assert.equal(err.type, "TOPIC_AUTHORIZATION_FAILED");
      return true;
    });
    await assert.rejects(admin.createTopics({ topics: [{ topic: "__consumer_offsets" }] }));
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
  // kcat lists it as a topic like any other and can read it.
  const listed = await kcat(["-b", live().map(address).join(","), "-L", "-t", "__consumer_offsets"], "", 20_000);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /topic "__consumer_offsets" with 6 partitions/);
});
