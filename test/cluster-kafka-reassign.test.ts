/**
 * Reassigning a replicated Kafka partition's replicas
 * (AlterPartitionReassignments with several brokers, issue 20's "replicas
 * can be reassigned") in a three-node cluster with a real etcd: the new
 * replicas copy the partition and join the ISR, then the others are dropped
 * and delete their copies; a leader that is not among the target hands its
 * leadership over first. Every record acknowledged before, during and after
 * is read back by kcat (librdkafka) in order; KafkaJS's Metadata shows the
 * new replicas and ISR. Neither of Debian's Python clients has the call, so
 * it goes through `nagare topic move --replicas` and nagare's own client.
 * A JetStream stream's replicas change the same way through
 * `$JS.API.STREAM.PEER.REMOVE` (nats-server's peer remap), seen with the
 * NATS JetStream client. CreatePartitions grows a replicated topic with
 * replicated partitions.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { captured } from "./helpers/cli.js";
import { runKafkaCommand } from "../src/cli/kafka-commands.js";
import { runJsCommand } from "../src/cli/js-commands.js";
import { KafkaClient } from "../src/cli/kafka-client.js";
import { alterPartitionReassignment } from "../src/cli/kafka-requests.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("kreassign");
});
after(() => cluster.stop());

const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);
const nameOf = (n: NagareServer): string => n.cluster!.placements.self;
const byName = (name: string): NagareServer => cluster.nodes.find((n) => nameOf(n) === name)!;

type Admin = ReturnType<InstanceType<typeof Kafka>["admin"]>;
type Producer = ReturnType<InstanceType<typeof Kafka>["producer"]>;

/** A KafkaJS admin and idempotent producer on every broker, with `topic` made with one partition of two replicas; both disconnected after `body`. */
async function withReplicatedTopic(clientId: string, topic: string, body: (admin: Admin, producer: Producer) => Promise<void>): Promise<void> {
  const kafka = new Kafka({ clientId, brokers: cluster.nodes.map(address), logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await admin.connect();
  await producer.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 2 }], waitForLeaders: true });
    await body(admin, producer);
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
}

test("a replicated partition's replicas are reassigned under acknowledged writes: the new ones copy it, the leader hands over when it is not among them, the old ones drop their copies, nothing is lost", async () => {
  const topic = "reassigned";
  const stream = streamNameOf(topic);
  await withReplicatedTopic("reassign", topic, async (admin, producer) => {
    const placement = () => cluster.nodes[0].cluster!.placements.get("$G", stream)!.placement;
    await waitUntil(() => cluster.nodes.every((n) => n.cluster!.placements.get("$G", stream)?.placement.isr?.[0].length === 2), "both replicas in sync");
    const [leaderName, followerName] = [placement().leaders[0], placement().replicas![0].find((n) => n !== placement().leaders[0])!];
    const leader = byName(leaderName);
    const follower = byName(followerName);
    const spare = cluster.nodes.find((n) => n !== leader && n !== follower)!;

    const sent: string[] = [];
    const send = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const value = `r${sent.length}`;
        await producer.send({ topic, acks: -1, messages: [{ value }] });
        sent.push(value);
      }
    };
    await send(20);

    // Refusals first, in Kafka's words: a replicated partition keeps at least two replicas; live brokers only.
    const c = await KafkaClient.connect(address(spare));
    try {
      assert.equal((await alterPartitionReassignment(c, topic, 0, [brokerId(spare)])).error, ErrorCode.INVALID_REPLICA_ASSIGNMENT);
      assert.equal((await alterPartitionReassignment(c, topic, 0, [brokerId(spare), 999])).error, ErrorCode.INVALID_REPLICA_ASSIGNMENT);
      assert.equal((await alterPartitionReassignment(c, topic, 0, null)).error, ErrorCode.NO_REASSIGNMENT_IN_PROGRESS);
    } finally {
      c.close();
    }

    // The leader is not among the target: the spare copies the partition, the leader hands over, then it drops its copy.
    const target = [brokerId(spare), brokerId(follower)];
    const moved = await captured((io) => runKafkaCommand("topic", ["move", topic, "--partition", "0", "--replicas", target.join(","), "-b", address(spare)], io));
    assert.equal(moved.code, 0, moved.err);
    assert.match(moved.out, new RegExp(`Reassigning ${topic}-0 to brokers ${target.join(",")}`));
    await send(20); // acknowledged while the reassignment runs
    const done = (names: string[]) => (n: NagareServer): boolean => {
      const p = n.cluster!.placements.get("$G", stream)?.placement;
      return p !== undefined && p.reassigning === undefined && [...p.replicas![0]].sort().join() === [...names].sort().join() && [...p.isr![0]].sort().join() === [...names].sort().join();
    };
    await waitUntil(() => cluster.nodes.every(done([nameOf(spare), nameOf(follower)])), "the reassignment to end on every node", 60_000);
    assert.notEqual(placement().leaders[0], leaderName, "the old leader handed its leadership over");
    await waitUntil(() => leader.jetstream!.streams.get(stream) === undefined, "the old leader to delete its copy", 20_000);
    await send(20);

    const metadata = async (): Promise<{ replicas: number[]; isr: number[] }> => {
      const [p] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions;
      return { replicas: [...p.replicas].sort(), isr: [...p.isr].sort() };
    };
    assert.deepEqual(await metadata(), { replicas: [...target].sort(), isr: [...target].sort() });

    // Back to three replicas, the leader among them: the old one copies the partition again, nothing is handed over.
    const leaderBefore = placement().leaders[0];
    const all = [brokerId(follower), brokerId(spare), brokerId(leader)];
    const c2 = await KafkaClient.connect(address(leader));
    try {
      assert.equal((await alterPartitionReassignment(c2, topic, 0, all)).error, ErrorCode.NONE);
    } finally {
      c2.close();
    }
    await waitUntil(() => cluster.nodes.every(done(cluster.nodes.map(nameOf))), "the second reassignment to end on every node", 60_000);
    assert.equal(placement().leaders[0], leaderBefore);
    assert.deepEqual(placement().replicas![0], [nameOf(follower), nameOf(spare), nameOf(leader)], "the replicas in the order asked (preferred leader first)");
    await send(20);
    assert.deepEqual(await metadata(), { replicas: [...all].sort(), isr: [...all].sort() });

    // Every acknowledged record, once, in order.
    const read = await kcat(["-b", cluster.nodes.map(address).join(","), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(read.stdout.trim().split("\n"), sent);
    const moves = await captured((io) => runKafkaCommand("topic", ["moves", "-b", address(spare)], io));
    assert.equal(moves.code, 0, moves.err);
    assert.match(moves.out, /No partition moves under way/);
  });
});

test("$JS.API.STREAM.PEER.REMOVE gives a replicated stream's peer's place to another node: it copies the stream, the removed peer (its leader here) hands over and drops its copy, every message stays", async () => {
  const name = "PEERS";
  const first = cluster.nodes[0];
  const nc = await connect({ port: first.port });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name, subjects: ["peers.>"], num_replicas: 2 });
    const js = jsm.jetstream();
    for (let i = 0; i < 20; i++) await js.publish("peers.a", `m${i}`);
    const placement = () => first.cluster!.placements.get("$G", name)!.placement;
    const [leaderName] = placement().leaders;
    const others = placement().replicas![0];
    const spare = cluster.nodes.find((n) => !others.includes(nameOf(n)))!;
    const removePeer = async (peer: string): Promise<Record<string, unknown>> =>
      JSON.parse(new TextDecoder().decode((await nc.request(`$JS.API.STREAM.PEER.REMOVE.${name}`, JSON.stringify({ peer }), { timeout: 10_000 })).data)) as Record<string, unknown>;

    const refused = await removePeer(nameOf(spare));
    assert.equal(refused.type, "io.nats.jetstream.api.v1.stream_remove_peer_response");
    assert.deepEqual(refused.error, { code: 400, err_code: 10040, description: "peer not a member" });
    const removed = await captured((io) => runJsCommand("stream", ["peer-remove", name, leaderName, "-s", `nats://127.0.0.1:${cluster.nodes[1].port}`], io));
    assert.equal(removed.code, 0, removed.err);
    assert.match(removed.out, new RegExp(`Stream ${name}: ${leaderName} is being replaced`));
    // Each change of the replicas begins a leader epoch: a publish meeting that moment is refused (503), and retried
    // under its message id, as after a failover.
    const publish = async (i: number): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        try {
          await js.publish("peers.a", `m${i}`, { msgID: `m${i}` });
          return;
        } catch (err) {
          if ((err as { code?: unknown }).code !== 10008 || attempt >= 50) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    for (let i = 20; i < 30; i++) await publish(i);

    const want = [...others.filter((n) => n !== leaderName), nameOf(spare)].sort().join();
    await waitUntil(
      () => cluster.nodes.every((n) => {
        const p = n.cluster!.placements.get("$G", name)?.placement;
        return p !== undefined && p.reassigning === undefined && [...p.replicas![0]].sort().join() === want && [...p.isr![0]].sort().join() === want;
      }),
      "the peer's place taken on every node",
      60_000,
    );
    await waitUntil(() => byName(leaderName).jetstream!.streams.get(name) === undefined, "the removed peer to delete its copy", 20_000);
    for (let i = 30; i < 40; i++) await publish(i);
    const info = await jsm.streams.info(name);
    assert.equal(info.state.messages, 40);
    assert.deepEqual([info.cluster!.leader, ...(info.cluster!.replicas ?? []).map((r) => r.name)].sort().join(), want);
    const consumer = await js.consumers.get(name);
    const seen: string[] = [];
    for (let i = 0; i < 40; i++) seen.push((await consumer.next({ expires: 5000 }))!.string());
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => `m${i}`));
  } finally {
    await nc.close();
  }
});

test("CreatePartitions grows a replicated topic: each new partition gets as many replicas, all in sync, and takes acknowledged writes", async () => {
  const topic = "grown";
  const stream = streamNameOf(topic);
  await withReplicatedTopic("grow", topic, async (admin, producer) => {
    await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
    await waitUntil(() => cluster.nodes.every((n) => n.cluster!.placements.get("$G", stream)?.placement.leaders.length === 3), "three partitions placed on every node");
    const placement = cluster.nodes[0].cluster!.placements.get("$G", stream)!.placement;
    assert.deepEqual(placement.replicas!.map((set) => new Set(set).size), [2, 2, 2], "two distinct replicas each");
    assert.deepEqual(placement.epochs, [1, 1, 1]);

    for (let p = 0; p < 3; p++) await producer.send({ topic, acks: -1, messages: [0, 1, 2].map((i) => ({ partition: p, value: `p${p}-${i}` })) });
    const [meta] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
    assert.deepEqual(
      meta.partitions.map((p) => [p.partitionId, p.replicas.length, p.isr.length]).sort((a, b) => a[0] - b[0]),
      [[0, 2, 2], [1, 2, 2], [2, 2, 2]],
    );
    for (let p = 0; p < 3; p++) {
      const read = await kcat(["-b", cluster.nodes.map(address).join(","), "-C", "-t", topic, "-p", String(p), "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
      assert.equal(read.code, 0, read.stderr);
      assert.deepEqual(read.stdout.trim().split("\n"), [0, 1, 2].map((i) => `p${p}-${i}`));
    }
  });
});

// Last in the file: it closes a broker.
test("a reassignment ends under steady writes though its leader is alone in the ISR: the new replica is let in once a fetch finds it at the high watermark", async () => {
  const topic = "alone";
  const stream = streamNameOf(topic);
  await withReplicatedTopic("alone", topic, async (_admin, producer) => {
    const placement = (n: NagareServer) => n.cluster!.placements.get("$G", stream)?.placement;
    await waitUntil(() => cluster.nodes.every((n) => placement(n)?.isr?.[0].length === 2), "both replicas in sync");
    const leader = byName(placement(cluster.nodes[0])!.leaders[0]);
    const follower = byName(placement(cluster.nodes[0])!.replicas![0].find((n) => n !== nameOf(leader))!);
    const spare = cluster.nodes.find((n) => n !== leader && n !== follower)!;
    const sent: string[] = [];
    let stop = false;
    // One record per request, acks=all, for the whole test: with the leader alone in its ISR the high watermark moves to
    // the end with every append, between any two of the new replica's fetches.
    const producing = (async () => {
      for (let i = 0; !stop; i++) {
        await producer.send({ topic, acks: -1, messages: [{ value: `s${i}` }] });
        sent.push(`s${i}`);
      }
    })();
    try {
      await cluster.close(follower);
      await waitUntil(() => placement(leader)?.isr?.[0].join() === nameOf(leader), "the ISR down to the leader", 30_000);
      const c = await KafkaClient.connect(address(leader));
      try {
        assert.equal((await alterPartitionReassignment(c, topic, 0, [brokerId(leader), brokerId(spare)])).error, ErrorCode.NONE);
      } finally {
        c.close();
      }
      const want = [nameOf(leader), nameOf(spare)].sort().join();
      await waitUntil(
        () => [leader, spare].every((n) => {
          const p = placement(n);
          return p !== undefined && p.reassigning === undefined && [...p.replicas![0]].sort().join() === want && [...p.isr![0]].sort().join() === want;
        }),
        "the new replica in the ISR and the reassignment ended, writes going on",
        30_000,
      );
      assert.ok(sent.length > 0);
    } finally {
      stop = true;
      await producing;
    }
    const read = await kcat(["-b", [leader, spare].map(address).join(","), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%s\n"]);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(read.stdout.trim().split("\n"), sent, "every acknowledged record, once, in order");
  });
});
