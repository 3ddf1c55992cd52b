/**
 * A JetStream consumer on a replicated Kafka topic, on the node that led the
 * topic's partition 0 and restarts after another took over: until its first
 * settle says whether it leads, its copy of the consumer neither delivers
 * nor confirms acks (only the leader's consumers do; the old copy would
 * hand out messages the leader already has pending and confirm acks the
 * leader never sees). The topic's stored config says `num_replicas: 1`
 * whatever its replication factor, so the stored number alone let them
 * loose; the leader-epoch checkpoint the node kept for the partition says
 * it was replicated here.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { StreamReplicas } from "../src/streams/stream-replicas.js";
import type { Stream } from "../src/streams/stream.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { startEtcd } from "./helpers/etcd.js";
import { startJetStreamCluster, startJetStreamNode, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

const { Kafka, logLevel } = kafkajs;

test("a restarted node's consumers of a replicated Kafka topic are held until its first settle", async (t) => {
  const etcd = await startEtcd();
  const site: JetStreamClusterSite = { etcd: etcd.endpoint, dir: mkdtempSync(join(tmpdir(), "nagare-held-")), cluster: uniqueCluster("held") };
  const nodes = await startJetStreamCluster(site, { kafka: true });
  let nc: NatsConnection | undefined;
  const proto = StreamReplicas.prototype as unknown as { settle: (...args: unknown[]) => Promise<void> };
  const settle = proto.settle;
  t.after(async () => {
    proto.settle = settle;
    await nc?.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.close()));
    await etcd.close();
    rmSync(site.dir, { recursive: true, force: true });
  });
  const [a] = nodes;
  const kafka = new Kafka({ clientId: "held-test", brokers: [`127.0.0.1:${a.kafkaPort}`], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    assert.equal(await admin.createTopics({ topics: [{ topic: "held", numPartitions: 1, replicationFactor: 3 }], waitForLeaders: true }), true);
  } finally {
    await admin.disconnect();
  }
  const name = streamNameOf("held");
  const placed = () => a.cluster!.placements.get("$G", name)?.placement;
  await waitUntil(() => placed()?.isr?.[0].length === 3, "the topic's three replicas in sync");
  nc = await connect({ servers: a.url });
  const jsm = await jetstreamManager(nc);
  assert.equal((await jsm.streams.info(name)).config.num_replicas, 3);
  await jsm.consumers.add(name, { durable_name: "C", ack_policy: AckPolicy.Explicit });

  // The leader of partition 0, with the consumer in its store, goes; another takes over; it comes back as a follower.
  const old = nodes.find((n) => n.cluster!.options.serverName === placed()!.leaders[0])!;
  const oldName = old.cluster!.options.serverName!;
  await waitUntil(() => old.jetstream!.streams.get(name)?.consumers.has("C") === true, "consumer C on the leader");
  await nc.close();
  await old.close();
  nodes.splice(nodes.indexOf(old), 1);
  const [seed] = nodes;
  const seedPlaced = () => seed.cluster!.placements.get("$G", name)?.placement;
  await waitUntil(() => seedPlaced() !== undefined && seedPlaced()!.leaders[0] !== oldName, "another node to take over", 30_000);
  const seen: boolean[] = [];
  proto.settle = function (this: unknown, ...args: unknown[]) {
    const local = args[1] as Stream | undefined;
    if (args[0] === name && local !== undefined && seen.length === 0) seen.push(local.consumersHeld());
    return settle.apply(this, args);
  };
  const again = await startJetStreamNode(site, oldName, { kafka: true, routes: [`nats://127.0.0.1:${seed.routes!.port}`] });
  nodes.push(again);
  await waitUntil(() => seen.length > 0, "the restarted follower's first settle of the topic");
  assert.deepEqual(seen, [true], "the old leader's consumers held before its first settle (false: free to deliver and confirm)");
  // Settled, it follows: its consumers stay held, the new leader's deliver.
  await waitUntil(() => seedPlaced()?.isr?.[0].length === 3, "the old leader back in sync", 30_000);
  assert.equal(again.jetstream!.streams.get(name)?.consumersHeld(), true);
});
