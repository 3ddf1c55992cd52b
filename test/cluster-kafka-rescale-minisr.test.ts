/**
 * A Kafka topic of one replica scaled up through the JetStream API
 * (STREAM.UPDATE's `num_replicas`, which the cluster allows for a topic's
 * stream of one partition) keeps its `min.insync.replicas`: with its
 * followers gone, an acks=all produce is taken as the topic's config
 * (DescribeConfigs) says, not refused under JetStream's majority.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { streamNameOf } from "../src/protocols/kafka/topics.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("krescale");
});
after(() => cluster.stop());

test("a topic of one replica scaled to three through JetStream keeps min.insync.replicas 1: acks=all is taken with its followers gone", async () => {
  const topic = "rescaled";
  const stream = streamNameOf(topic);
  const kafka = new Kafka({ clientId: "rescale", brokers: cluster.nodes.map((n) => cluster.address(n)), logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 500 } });
  const admin = kafka.admin();
  await admin.connect();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
    const placement = () => cluster.live()[0].cluster!.placements.get("$G", stream)!.placement;
    const leader = cluster.nodes.find((n) => n.cluster!.placements.self === placement().leaders[0])!;
    const nc = await connect({ servers: leader.url });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(stream);
      await jsm.streams.update(stream, { ...info.config, num_replicas: 3 });
    } finally {
      await nc.close();
    }
    await waitUntil(() => cluster.nodes.every((n) => n.cluster!.placements.get("$G", stream)?.placement.isr?.[0].length === 3), "three replicas in sync", 20_000);
    const [config] = (await admin.describeConfigs({ resources: [{ type: 2, name: topic }], includeSynonyms: false })).resources;
    assert.equal(config.configEntries.find((e) => e.configName === "min.insync.replicas")?.configValue, "1");

    // Its followers go: the ISR shrinks to the leader, which min.insync.replicas 1 allows.
    for (const n of cluster.nodes.filter((x) => x !== leader)) await cluster.close(n);
    await waitUntil(() => leader.cluster!.placements.get("$G", stream)!.placement.isr![0].length === 1, "the ISR down to the leader", 20_000);
    const kafkaLeader = new Kafka({ clientId: "rescale-leader", brokers: [cluster.address(leader)], logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 500 } });
    const p = kafkaLeader.producer({ idempotent: true, maxInFlightRequests: 1 });
    await p.connect();
    try {
      const [r] = await p.send({ topic, acks: -1, messages: [{ value: "alone" }] });
      assert.equal(r.errorCode, 0);
    } finally {
      await p.disconnect();
    }
  } finally {
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  }
});
