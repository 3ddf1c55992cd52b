/**
 * A Kafka Fetch waiting for data at a partition's leader when the
 * leadership is handed over (a step-down, a drain, ElectLeaders) is
 * answered NOT_LEADER_OR_FOLLOWER at once, as Kafka completes a delayed
 * fetch when its broker stops leading, so the client goes to the new
 * leader. Before, it waited out its max_wait_ms and came back empty
 * without an error: KafkaJS went on fetching there and a consumer with a
 * long max wait saw nothing of what the new leader took for 30 s and more.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { connect } from "@nats-io/transport-node";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { fetchFrame, fetchResult, RawKafka } from "./helpers/kafka-raw.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("kfetchsd");
});
after(() => cluster.stop());

test("a fetch waiting at the leader when it steps down is answered NOT_LEADER_OR_FOLLOWER at once, not at its max wait", async () => {
  const topic = "fetchsd";
  const stream = streamNameOf(topic);
  const kafka = new Kafka({ clientId: "fetchsd", brokers: cluster.nodes.map((n) => cluster.address(n)), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const producer = kafka.producer();
  await producer.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 3 }], waitForLeaders: true });
    await producer.send({ topic, acks: -1, messages: [{ value: "first" }] });
    await waitUntil(() => cluster.nodes.every((n) => n.cluster!.placements.get("$G", stream)?.placement.isr?.[0].length === 3), "three replicas in sync");
    const before = cluster.nodes[0].cluster!.placements.get("$G", stream)!.placement.leaders[0];
    const leader = cluster.nodes.find((n) => n.cluster!.placements.self === before)!;

    // Waits at the leader for the record after the first: nothing comes for MAX_WAIT_MS unless told otherwise.
    const MAX_WAIT_MS = 15_000;
    const k = await RawKafka.open(leader.kafkaPort!);
    try {
      k.send(fetchFrame(topic, 0, 1, { maxWaitMs: MAX_WAIT_MS }));
      const nc = await connect({ servers: leader.url });
      try {
        const r = JSON.parse(new TextDecoder().decode((await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, "", { timeout: 10_000 })).data)) as { success?: boolean };
        assert.equal(r.success, true, JSON.stringify(r));
      } finally {
        await nc.close();
      }
      const handedOver = performance.now();
      const answer = fetchResult(await k.response(0, MAX_WAIT_MS + 5000));
      const waited = performance.now() - handedOver;
      assert.equal(answer.error, ErrorCode.NOT_LEADER_OR_FOLLOWER, "the old leader sends the client elsewhere");
      assert.ok(waited < MAX_WAIT_MS / 2, `answered ${Math.round(waited)} ms after the hand-over, not at the max wait`);
    } finally {
      k.destroy();
    }
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
});
