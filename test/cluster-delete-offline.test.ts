/**
 * A stream whose only node is down can be deleted, as nats-server's meta
 * leader deletes it: STREAM.DELETE (and Kafka's DeleteTopics) removes the
 * placement in etcd, naming the nodes away (for a stream of one replica,
 * once its node has been gone 10 lease TTLs, past which that node, were it
 * only paused or cut off, takes no write for it); each, back, deletes its copy
 * rather than serve it or set it aside, and a stream made meanwhile under
 * the same name on another node keeps its records. A node paused past its
 * lease while its stream is deleted and made again elsewhere acknowledges
 * no publish on its old copy when it resumes (what made the first attempt
 * at this lose an acknowledged publish). Before, the delete was answered
 * `10118 stream is offline` for as long as the node stayed away.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile, startJetStreamNode, startTwoNodesAndK, stopTwoNodesAndK, type TwoNodesAndK } from "./helpers/cluster.js";
import { v3Clients, waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { python } from "./helpers/kafka.js";
import { apiErrorCode } from "./helpers/js.js";

const { Kafka, logLevel } = kafkajs;
const clients = v3Clients();
const cluster = jetStreamClusterPerFile("deloffline", { kafka: true }, () => clients.closeAll());
const nodes = cluster.nodes;
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

/** A node's copy of `stream` on its disk (its directory under the store). */
function copyOnDisk(node: string, stream: string): boolean {
  return existsSync(join(cluster.site().dir, node, "streams", stream));
}

/**
 * STREAM.DELETE through `jsm`, tried again while it is refused as offline: a stream of one replica on a node whose key
 * went less than 10 lease TTLs (20 s here) ago is not deleted yet, since that node may still take writes. The first
 * answer must be that refusal, naming the wait.
 */
async function deleteOnceGone(jsm: JetStreamManager, stream: string): Promise<void> {
  await assert.rejects(jsm.streams.delete(stream), (err: Error & { code?: number }) => {
    assert.equal(apiCode(err), 10118);
    assert.match(err.message, /may still take writes until it has been gone 20 s/);
    return true;
  });
  await waitUntilAsync(async () => (await jsm.streams.delete(stream).catch((err: Error) => (apiCode(err) === 10118 ? false : Promise.reject(err)))) === true, `${stream} deleted`, 40_000);
}

function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

/** Nodes a test closed and has not started again (a failed test leaves them down for the next to start). */
const down = new Set<number>();

async function takeDown(i: number): Promise<void> {
  down.add(i);
  await nodes[i].close();
}

/** Starts node `name` (nodes[i]) again on its store, once every node up sees the others registered. */
async function restart(i: number, name: string): Promise<NagareServer> {
  down.delete(i);
  const seed = nodes.find((_, j) => j !== i && !down.has(j))!;
  const back = await startJetStreamNode(cluster.site(), name, { routes: [`nats://127.0.0.1:${seed.routes!.port}`], kafka: true });
  nodes[i] = back;
  const up = nodes.filter((_, j) => !down.has(j));
  await waitUntil(() => up.every((n) => n.cluster!.membership.members().length === up.length), `${name} to rejoin`);
  return back;
}

test("a stream whose only node is down is deleted; the node, back, deletes its copy, and the name's new stream on another node keeps its records", async () => {
  const [a, b] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "stranded", subjects: ["stranded.>"], placement: { cluster: "", tags: ["node:c"] } });
  assert.equal((await jetstream(await client(a)).publish("stranded.x", "old")).seq, 1);
  const placed = a.cluster!.placements.get("$G", "stranded")!.placement.created!;
  await takeDown(2);
  await waitUntil(() => !a.cluster!.placements.isLive("c") && !b.cluster!.placements.isLive("c"), "c gone from a and b");

  // Through b, which is not the meta leader of anything: any node serves it.
  await deleteOnceGone(await jetstreamManager(await client(b)), "stranded");
  await waitUntil(() => [a, b].every((n) => n.cluster!.placements.get("$G", "stranded") === undefined), "the placement gone everywhere");
  assert.deepEqual(a.cluster!.placements.deletedAway("$G", "stranded", placed), ["c"], "c named to delete its copy when back");

  // The name and subjects are free: a new stream of that name, on a.
  const again = await jsm.streams.add({ name: "stranded", subjects: ["stranded.>"], placement: { cluster: "", tags: ["node:a"] } });
  assert.equal(again.cluster?.leader, "a");
  assert.equal((await jetstream(await client(a)).publish("stranded.y", "new")).seq, 1);

  assert.equal(copyOnDisk("c", "stranded"), true, "c's copy is still on its disk while it is away");
  const c2 = await restart(2, "c");
  await waitUntil(() => !copyOnDisk("c", "stranded"), "c to delete its copy");
  assert.equal(c2.jetstream!.streams.has("stranded"), false, "not served by c");
  assert.equal(c2.jetstream!.notServed.has("stranded"), false, "deleted, not set aside");
  await waitUntil(() => a.cluster!.placements.deletedAway("$G", "stranded", placed).length === 0, "c's name taken out once it deleted its copy");

  // Through c: the one stream of the name is a's, with its record and not the old one.
  const jsmC = await jetstreamManager(await client(c2));
  const names: string[] = [];
  for await (const n of jsmC.streams.names()) names.push(n);
  assert.deepEqual(names.filter((n) => n.startsWith("stranded")), ["stranded"]);
  const info = await jsmC.streams.info("stranded");
  assert.equal(info.cluster?.leader, "a");
  assert.equal(info.state.messages, 1);
  const m = await jsmC.streams.getMessage("stranded", { seq: 1 });
  assert.deepEqual([m!.subject, m!.string()], ["stranded.y", "new"]);
});

test("Kafka DeleteTopics of a topic of one replica whose broker is down (librdkafka's admin): deleted, and the broker, back, deletes its copy", async () => {
  for (const i of [...down]) await restart(i, ["a", "b", "c"][i]);
  const a = nodes[0];
  const kafka = (n: NagareServer) => new Kafka({ clientId: "deloffline", brokers: [`127.0.0.1:${n.kafkaPort!}`], logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka(a).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic: "lone", numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const leader = a.cluster!.placements.get("$G", "lone")!.placement.leaders[0];
  const i = ["a", "b", "c"].indexOf(leader);
  const gone = nodes[i];
  const up = nodes.filter((n) => n !== gone);
  const created = up[0].cluster!.placements.get("$G", "lone")!.placement.created!;
  const producer = kafka(gone).producer();
  await producer.connect();
  await producer.send({ topic: "lone", messages: [{ value: "kept on the broker that goes" }] });
  await producer.disconnect();
  await takeDown(i);
  await waitUntil(() => up.every((n) => !n.cluster!.placements.isLive(leader)), `${leader} gone`);

  // KafkaJS refuses the Metadata answer naming the topic without a leader before it sends the delete (it fails the same
  // against Apache Kafka): librdkafka's admin sends it. Refused, retriably, until the broker has been gone 20 s.
  const deleteTopic = () =>
    python(`
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": "127.0.0.1:${up[0].kafkaPort!}"})
for t, f in a.delete_topics(["lone"], operation_timeout=5, request_timeout=15).items():
    try:
        f.result()
        print("deleted", t)
    except Exception as e:
        print("failed", t, e)
`);
  const first = await deleteTopic();
  assert.match(first.stdout, /failed lone .*REQUEST_TIMED_OUT/, first.stdout + first.stderr);
  await waitUntilAsync(async () => (await deleteTopic()).stdout.trim() === "deleted lone", "the topic deleted", 40_000);
  await waitUntil(() => up.every((n) => n.cluster!.placements.get("$G", "lone") === undefined), "the topic's placement gone");
  assert.deepEqual(up[0].cluster!.placements.deletedAway("$G", "lone", created), [leader]);

  assert.equal(copyOnDisk(leader, "lone"), true);
  const back = await restart(i, leader);
  await waitUntil(() => !copyOnDisk(leader, "lone"), `${leader} to delete its copy`);
  assert.equal(back.jetstream!.notServed.has("lone"), false, "deleted, not set aside");
  const check = kafka(back).admin();
  await check.connect();
  try {
    assert.equal((await check.listTopics()).includes("lone"), false);
  } finally {
    await check.disconnect();
  }
});

test("a node named at a delete while away and back without its copy (its disk replaced) is no longer named", async () => {
  for (const i of [...down]) await restart(i, ["a", "b", "c"][i]);
  const [a, b] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "wiped", subjects: ["wiped.>"], placement: { cluster: "", tags: ["node:c"] } });
  const placed = a.cluster!.placements.get("$G", "wiped")!.placement.created!;
  await takeDown(2);
  await waitUntil(() => !a.cluster!.placements.isLive("c") && !b.cluster!.placements.isLive("c"), "c gone from a and b");
  await deleteOnceGone(jsm, "wiped");
  assert.deepEqual(a.cluster!.placements.deletedAway("$G", "wiped", placed), ["c"]);

  // c's copy is lost with its disk; back, it has nothing to delete, and must not stay named in etcd for ever.
  rmSync(join(cluster.site().dir, "c", "streams", "wiped"), { recursive: true, force: true });
  await restart(2, "c");
  await waitUntil(() => a.cluster!.placements.deletedAway("$G", "wiped", placed).length === 0, "c's name taken out though it had no copy", 15_000);
});

test("a stream of three replicas whose leader and a follower are down is deleted through the third; both, back, delete their copies", async () => {
  for (const i of [...down]) await restart(i, ["a", "b", "c"][i]);
  const names = ["a", "b", "c"];
  const jsm = await jetstreamManager(await client(nodes[0]));
  const info = await jsm.streams.add({ name: "trio", subjects: ["trio.>"], num_replicas: 3 });
  assert.equal((await jetstream(await client(nodes[0])).publish("trio.x", "1")).seq, 1);
  const leader = info.cluster!.leader!;
  const follower = names.find((n) => n !== leader && n !== "a") ?? names.find((n) => n !== leader)!;
  const left = names.find((n) => n !== leader && n !== follower)!;
  const survivor = nodes[names.indexOf(left)];
  const created = survivor.cluster!.placements.get("$G", "trio")!.placement.created!;
  for (const n of [leader, follower]) await takeDown(names.indexOf(n));
  await waitUntil(() => !survivor.cluster!.placements.isLive(leader) && !survivor.cluster!.placements.isLive(follower), "both gone");

  assert.equal(await (await jetstreamManager(await client(survivor))).streams.delete("trio"), true);
  await waitUntil(() => survivor.cluster!.placements.get("$G", "trio") === undefined && !copyOnDisk(left, "trio"), "the placement and the survivor's copy gone");
  assert.deepEqual(survivor.cluster!.placements.deletedAway("$G", "trio", created), [leader, follower].sort());

  for (const n of [leader, follower]) await restart(names.indexOf(n), n);
  await waitUntil(() => !copyOnDisk(leader, "trio") && !copyOnDisk(follower, "trio"), "both to delete their copies");
  await waitUntil(() => survivor.cluster!.placements.deletedAway("$G", "trio", created).length === 0, "their names taken out");
  assert.equal(await apiErrorCode((await jetstreamManager(await client(nodes[names.indexOf(leader)]))).streams.info("trio")), 10059);
});

test("a node paused past its lease while its stream is deleted and made again elsewhere acknowledges no publish on its old copy", async (t) => {
  let c: TwoNodesAndK | undefined;
  const conns: NatsConnection[] = [];
  const open = async (url: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
    conns.push(nc);
    return nc;
  };
  try {
    c = await startTwoNodesAndK("delpause");
    const { a, k } = c;
    const jsm = await jetstreamManager(await open(a.url));
    assert.equal((await jsm.streams.add({ name: "paused", subjects: ["paused.>"], placement: { cluster: "", tags: ["node:k"] } })).cluster?.leader, "k");
    const onK = await open(k.url);
    const jsK = jetstream(onK, { timeout: 4000 });
    // Three records in k's copy: an acknowledgement from it (seq 4 next) is told from the new stream's (seq 2 next).
    for (let i = 1; i <= 3; i++) assert.equal((await jsK.publish("paused.x", `old ${i}`)).seq, i);

    k.child.kill("SIGSTOP");
    await waitUntil(() => !a.cluster!.placements.isLive("k"), "k's lease to end", 15_000);
    const placed = a.cluster!.placements.get("$G", "paused")!.placement.created!;
    // Deleted once k has been gone 10 lease TTLs: past that k, paused, takes no more writes when it resumes.
    await deleteOnceGone(jsm, "paused");
    assert.deepEqual(a.cluster!.placements.deletedAway("$G", "paused", placed), ["k"]);
    await jsm.streams.add({ name: "paused", subjects: ["paused.>"], placement: { cluster: "", tags: ["node:a"] } });
    const jsA = jetstream(await open(a.url));
    assert.equal((await jsA.publish("paused.y", "new")).seq, 1);

    // Sent to k while it is stopped (written out on the client's next turn): read by k as it resumes, before it can
    // have heard of the delete.
    let refused = "";
    const late = jetstream(onK, { timeout: 20_000 })
      .publish("paused.z", "late")
      .then(
        (ack) => ack,
        (err: Error) => {
          refused = err.message;
          return null;
        },
      );
    await new Promise((resolve) => setImmediate(resolve));
    k.child.kill("SIGCONT");
    const ack = await late;
    t.diagnostic(`the publish sent to k as it resumed: ${ack === null ? `not acknowledged (${refused})` : `acknowledged, seq ${ack.seq}`}`);
    // Acknowledged, it must be in the stream of that name, as acknowledged.
    if (ack !== null) {
      assert.equal(ack.stream, "paused");
      const m = await jsm.streams.getMessage("paused", { seq: ack.seq });
      assert.deepEqual(m === null ? null : [m.subject, m.string()], ["paused.z", "late"], `the acknowledged publish (seq ${ack.seq}) is in the stream`);
    }
    // k, back, serves the new stream's records only.
    await waitUntilAsync(
      async () => {
        const info = await (await jetstreamManager(onK)).streams.info("paused").catch(() => null);
        return info?.cluster?.leader === "a";
      },
      "k to forward to the new stream's leader",
      20_000,
    );
    const m = await (await jetstreamManager(onK)).streams.getMessage("paused", { seq: 1 });
    assert.deepEqual([m!.subject, m!.string()], ["paused.y", "new"]);
    // k deleted its copy (heard through its watch once back) and said so.
    await waitUntil(() => !existsSync(join(c!.site.dir, "k", "streams", "paused")) && a.cluster!.placements.deletedAway("$G", "paused", placed).length === 0, "k to delete its copy");
  } finally {
    await stopTwoNodesAndK(c, c?.k, conns);
  }
});
