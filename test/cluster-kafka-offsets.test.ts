/**
 * Committed offsets survive the group coordinator's node, in a three-node
 * cluster with one real etcd, judged by KafkaJS and kcat: a group's commits
 * go to its partition of the replicated `__consumer_offsets` topic, whose
 * leader is the group's coordinator; when that node goes, an in-sync
 * follower of the partition takes it over and becomes the coordinator with
 * every acknowledged commit, so the group resumes where it was instead of
 * reading everything again. Clients may read the internal topic but not
 * produce to it, create it or delete it.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { findCoordinator } from "./helpers/kafka-raw.js";

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
