/**
 * Moving streams off a node by name, and draining a node in lame duck, in a
 * three-node cluster with one real etcd, judged by the official v3 client
 * and the CLI: nats-server's `$JS.API.ACCOUNT.STREAM.MOVE.<account>.<stream>`
 * (with nagare's `to`) and `CANCEL_MOVE`; a node in lame duck is placed on
 * no more and moves every stream and Kafka partition it leads to the others
 * before it goes, losing nothing, and leaves in place (with a warning)
 * what cannot move.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { nodeLog, startJetStreamCluster, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { publishRetrying, v3Clients, waitUntil } from "./helpers/clients.js";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kafka, logLevel } from "kafkajs";
import { runJsCommand } from "../src/cli/js-commands.js";
import { runKafkaCommand } from "../src/cli/kafka-commands.js";
import { captured } from "./helpers/cli.js";

let etcd: EtcdHarness;
let dir: string;
let site: JetStreamClusterSite;
const nodes: NagareServer[] = [];

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-drain-"));
  site = { etcd: etcd.endpoint, dir, cluster: uniqueCluster("drain") };
  nodes.push(...(await startJetStreamCluster(site, { kafka: true, lameDuck: { duration: 12_000, grace: 100 }, log: true })));
});

const clients = v3Clients();
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

after(async () => {
  await clients.closeAll();
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Retries a metadata change refused with 10008 (etcd slow to confirm, on a loaded machine: the server says it may
 * or may not have applied it, and a client tries again, as nats-server's retryable 503 asks).
 */
async function retrying<T>(what: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await what();
    } catch (err) {
      if ((err as { code?: unknown }).code !== 10008 || Date.now() > deadline) throw err;
    }
  }
}

const leaderOf = (n: NagareServer, stream: string): string | undefined => n.cluster!.placements.get("$G", stream)?.placement.leaders[0];

async function request(nc: NatsConnection, subject: string, body: unknown): Promise<Record<string, unknown>> {
  const m = await nc.request(subject, JSON.stringify(body), { timeout: 5000 });
  return JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
}

/** Moves `stream` to `to` by name through the CLI on `via`, and waits until every node sees it there and the old copy is gone. */
async function moveTo(stream: string, to: NagareServer, via: NagareServer): Promise<void> {
  const r = await captured((io) => runJsCommand("stream", ["move", stream, "--to", to.cluster!.options.serverName, "-s", via.url], io));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, new RegExp(`${stream} is moving from \\w+ to ${to.cluster!.options.serverName}`));
  await waitUntil(() => nodes.every((x) => x.cluster === undefined || leaderOf(x, stream) === to.cluster!.options.serverName), `${stream} on ${to.cluster!.options.serverName}`, 30_000);
  await waitUntil(() => nodes.every((x) => x === to || !x.jetstream!.streams.has(stream)), `the old copy of ${stream} deleted`, 30_000);
}

test("ACCOUNT.STREAM.MOVE moves a stream to a named node, checks the node it evacuates, and CANCEL_MOVE refuses when nothing moves", async () => {
  const [a, b, c] = nodes;
  const nc = await client(c);
  const jsm = await jetstreamManager(nc);
  // No placement tags: placed on the least loaded node, then moved by name whatever its tags.
  await retrying(() => jsm.streams.add({ name: "named", subjects: ["named.>"] }));
  const js = jetstream(nc);
  for (let i = 0; i < 50; i++) await js.publish(`named.${i % 3}`, `v${i}`);
  const first = leaderOf(c, "named")!;
  const target = first === "a" ? b : a;
  await moveTo("named", target, c);
  const info = await jsm.streams.info("named");
  assert.equal(info.cluster?.leader, target.cluster!.options.serverName);
  // The CLI's table names the leader too, as `stream move` tells the user to look there.
  const shown = await captured((io) => runJsCommand("stream", ["info", "named", "-s", c.url], io));
  assert.match(shown.out, new RegExp(`cluster leader\\s+${target.cluster!.options.serverName} \\(cluster `));
  assert.equal(info.state.messages, 50);
  assert.equal((await jsm.streams.getMessage("named", { seq: 50 }))!.string(), "v49");
  // The placement is unchanged apart from its leader: no tags were added.
  assert.deepEqual(c.cluster!.placements.get("$G", "named")!.placement.tags, []);

  const leader = target.cluster!.options.serverName;
  const other = ["a", "b", "c"].find((x) => x !== leader)!;
  const err = (r: Record<string, unknown>): unknown => (r.error as { err_code?: number } | undefined)?.err_code;
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.named", { server: "nowhere" })), 10044, "a server that is not a member");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.named", { server: other })), 10040, "a server that does not lead it");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.named", { to: "nowhere" })), 10044, "a target that is not a member");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.named", { to: leader })), 10051, "a target that leads it already");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.named", { tags: ["node:nowhere"] })), 10005, "tags no node has");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.CANCEL_MOVE.$G.named", {})), 10051, "no move to cancel");
  assert.equal(err(await request(nc, "$JS.API.ACCOUNT.STREAM.MOVE.$G.none", {})), 10059, "no such stream");
  const usage = await captured((io) => runJsCommand("stream", ["move", "named", "--to", "a", "--cancel", "-s", c.url], io));
  assert.equal(usage.code, 2, usage.err);
  assert.equal(leaderOf(c, "named"), leader, "nothing refused moved it");
});

test("a node in lame duck moves the streams it leads to the others before it leaves, losing nothing", async (t) => {
  const [a, b, c] = nodes;
  const ncB = await client(b);
  const jsmB = await jetstreamManager(ncB);
  const jsB = jetstream(ncB, { timeout: 2000 });
  // Four streams led by a, with messages (d0's every move is withdrawn, below); one more only a can hold (its tag), which must stay.
  for (const name of ["d0", "d1", "d2", "d3"]) {
    await retrying(() => jsmB.streams.add({ name, subjects: [`${name}.>`] }));
    if (leaderOf(b, name) !== "a") await moveTo(name, a, b);
    for (let i = 0; i < 100; i++) await jsB.publish(`${name}.x`, `${name}-${i}`, { msgID: `${name}-${i}` });
  }
  // A replicated stream led by a: its leadership goes to an in-sync replica, no copy needed.
  await retrying(() => jsmB.streams.add({ name: "drep", subjects: ["drep.>"], num_replicas: 3 }));
  await waitUntil(() => b.cluster!.placements.get("$G", "drep")?.placement.isr?.[0].length === 3, "drep's replicas in sync");
  if (leaderOf(b, "drep") !== "a") {
    const sd = await request(await client(b), "$JS.API.STREAM.LEADER.STEPDOWN.drep", { placement: { preferred: "a" } });
    assert.equal(sd.success, true, JSON.stringify(sd));
    await waitUntil(() => leaderOf(b, "drep") === "a", "drep led by a");
  }
  // Right after a change of leader a publish may go unanswered (no node leads it for a moment): retried, by id.
  const publishRetried = (subject: string, data: string): Promise<number> => publishRetrying(jsB, subject, data, 30_000);
  for (let i = 0; i < 10; i++) await publishRetried("drep.x", `r${i}`);
  await retrying(() => jsmB.streams.add({ name: "pinned", subjects: ["pinned.>"], placement: { cluster: "", tags: ["node:a"] } }));
  await waitUntil(() => leaderOf(b, "pinned") === "a", "pinned placed on a");

  // A Kafka topic spread over the three brokers, with records in every partition.
  const kafka = new Kafka({ clientId: "drain", brokers: [`127.0.0.1:${b.kafkaPort!}`], logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 100, maxRetryTime: 1000 } });
  const admin = kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic: "spread", numPartitions: 3 }], waitForLeaders: true });
  const topicLeaders = (): string[] => b.cluster!.placements.get("$G", "spread")!.placement.leaders;
  if (topicLeaders()[0] !== "a") {
    // Placed by load, which a's streams weigh on: partition 0 goes to a the Kafka way.
    const r = await captured((io) => runKafkaCommand("topic", ["move", "spread", "--partition", "0", "--to-broker", String(a.kafka!.cluster!.nodeId), "-b", `127.0.0.1:${b.kafkaPort!}`], io));
    assert.equal(r.code, 0, r.err);
    await waitUntil(() => topicLeaders()[0] === "a" && b.cluster!.placements.get("$G", "spread")!.placement.moving === undefined, "partition 0 of the topic on a", 30_000);
  }
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  t.after(() => producer.disconnect());
  for (let i = 0; i < 30; i++) await producer.send({ topic: "spread", acks: -1, messages: [{ partition: i % 3, value: `r${i}` }] });

  // A publisher through b keeps publishing to d1 with ids, retrying until acknowledged, throughout the drain.
  const acked = new Map<string, number>();
  let n = 100;
  let publishing = true;
  let stopped = false;
  const publisher = (async () => {
    while (publishing) {
      const id = `d1-${n++}`;
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (stopped || Date.now() > deadline) throw new Error(`${id} was not acknowledged`);
        try {
          acked.set(id, (await jsB.publish("d1.x", id, { msgID: id })).seq);
          break;
        } catch {
          // refused while frozen or the leader changing: the same id again
        }
      }
    }
  })();
  t.after(() => {
    stopped = true;
    return publisher.catch(() => undefined);
  });
  await waitUntil(() => acked.size >= 20, "publishes before the drain");

  // d2's first move is withdrawn as it starts (as an etcd request timing out or a target's copy failing ends one): the drain moves it all the same.
  let withdrawn: Promise<boolean> | undefined;
  // d0's every move is withdrawn as it starts: it fails again and again, and must not take the others' time.
  let d0Withdrawn = 0;
  a.cluster!.placements.onChange((account, stream, placed) => {
    if (account !== "$G" || stream !== "d0" || placed?.moving === undefined) return;
    d0Withdrawn++;
    a.cluster!.placements
      .update("$G", "d0", (q) => {
        delete q.moving;
        return q;
      })
      .catch(() => undefined); // the move flipped first
  });
  a.cluster!.placements.onChange((account, stream, placed) => {
    if (withdrawn !== undefined || account !== "$G" || stream !== "d2" || placed?.moving === undefined) return;
    withdrawn = a
      .cluster!.placements.update("$G", "d2", (q) => {
        delete q.moving;
        return q;
      })
      .then(
        () => true,
        () => false, // the move flipped first: nothing withdrawn
      );
  });
  // Another partition of the topic has a move under way that goes nowhere (its target's copy requests stay unanswered;
  // a target that is not live would have the move cancelled): the drain waits for it to end before it moves partition 0
  // (one move per topic at a time).
  const stuck = topicLeaders().findIndex((l) => l !== "a");
  assert.ok(stuck > 0, "the topic spread over the nodes");
  const stuckTarget: NagareServer = [b, c].find((n) => n.cluster!.options.serverName !== topicLeaders()[stuck])!;
  const stuckTo = stuckTarget.cluster!.options.serverName;
  type Request = (node: string, subject: string, body: Uint8Array, ms: number) => Promise<Buffer | null>;
  const targetApi: { request: Request } = (stuckTarget.jetstreams as unknown as { served: Map<string, { api: { clusterApi: { request: Request } } }> }).served.get("$G")!.api.clusterApi;
  const copyRequest = targetApi.request.bind(targetApi);
  let unstick: () => void = () => {};
  const unstuck = new Promise<null>((resolve) => (unstick = () => resolve(null)));
  targetApi.request = (node, subject, body, ms) => (subject === "$NG.MOVE.COPY.spread" ? unstuck : copyRequest(node, subject, body, ms));
  t.after(() => {
    targetApi.request = copyRequest;
    unstick();
  });
  await b.cluster!.placements.update("$G", "spread", (q) => ({ ...q, moving: { partition: stuck, to: stuckTo } }));
  const drepEpoch = b.cluster!.placements.get("$G", "drep")!.placement.epochs![0];
  const drainStart = performance.now();
  const drained = a.lameDuck();
  await waitUntil(() => nodeLog(site, "a").some((l) => l.line.includes(`lame duck: spread partition 0 waits for the move of partition ${stuck} of stream spread to ${stuckTo}`)), "the drain to wait for the topic's move under way");
  await b.cluster!.placements.update("$G", "spread", (q) => {
    delete q.moving;
    return q;
  });
  targetApi.request = copyRequest;
  unstick();
  await waitUntil(() => ["d1", "d2", "d3", "drep"].every((s) => leaderOf(b, s) !== undefined && leaderOf(b, s) !== "a") && !topicLeaders().includes("a"), "every movable stream and partition off a", 60_000).catch((err: Error) => {
    // What the nodes said of the drain and its moves, and why: the failure's whole story.
    const said = ["a", "b", "c"].flatMap((n) => nodeLog(site, n).map((l) => `${n}: ${l.line}`)).filter((l) => /lame duck|mov|leav|lease|cancel/.test(l));
    const where = ["d1", "d2", "d3", "drep"].map((s) => `${s} led by ${leaderOf(b, s)}`).join(", ") + `; spread led by ${topicLeaders().join(",")}`;
    throw new Error(`${err.message} (${where}); the nodes' log:\n${said.join("\n")}`);
  });
  // Handed over, not failed over: the same epoch's successor, and a still in sync until it goes.
  assert.deepEqual(b.cluster!.placements.get("$G", "drep")!.placement.epochs, [drepEpoch + 1]);
  // While draining, a is placed on no more.
  await waitUntil(() => b.cluster!.membership.members().find((m) => m.name === "a")?.record?.state === "draining" || !b.cluster!.placements.isLive("a"), "a draining");
  // Drained, a leaves etcd, then spends what is left of the duration closing its clients: not waited for here.
  await waitUntil(() => !b.cluster!.placements.isLive("a"), "a gone", 60_000);
  t.diagnostic(`drained and gone in ${Math.round(performance.now() - drainStart)} ms`);
  assert.notEqual(withdrawn, undefined, "d2 was moved");
  if (await withdrawn) assert.ok(nodeLog(site, "a").some((l) => /lame duck: moving d2 failed \(the move to \w+ was cancelled\); trying again/.test(l.line)), "d2's move tried again");
  assert.ok(d0Withdrawn > 1, `d0's move was tried ${d0Withdrawn} time(s)`);
  t.after(() => drained);
  const after = n + 20;
  await waitUntil(() => n >= after, "publishes after the drain", 30_000);
  publishing = false;
  await publisher;

  for (const name of ["d1", "d2", "d3"]) {
    const info = await jsmB.streams.info(name);
    assert.notEqual(info.cluster?.leader, "a");
    assert.equal((await jsmB.streams.getMessage(name, { seq: 1 }))!.string(), `${name}-0`);
  }
  // Every acknowledged publish is there once, at its sequence.
  const info = await jsmB.streams.info("d1");
  assert.equal(info.state.messages, 100 + acked.size);
  for (const [id, seq] of acked) assert.equal((await jsmB.streams.getMessage("d1", { seq }))!.string(), id);
  // The topic's partitions, led by b and c now, kept every record at its offset, and take more.
  const offsets = await admin.fetchTopicOffsets("spread");
  assert.deepEqual(offsets.map((o) => [o.partition, o.high]).sort(), [[0, "10"], [1, "10"], [2, "10"]]);
  // One send per partition: KafkaJS 2.2.4 resolves a send() spanning partitions without sending the records of a
  // partition whose leader moved to a broker that already answered for another partition of that send (its retry
  // skips brokers with an answer); seen here, see docs/KAFKA.md.
  for (const partition of [0, 1, 2]) await producer.send({ topic: "spread", acks: -1, messages: [{ partition, value: "after" }] });
  assert.deepEqual((await admin.fetchTopicOffsets("spread")).map((o) => o.high).sort(), ["11", "11", "11"]);
  // The replicated stream goes on with its other two copies.
  assert.equal(await publishRetried("drep.x", "after"), 11);
  assert.equal((await jsmB.streams.getMessage("drep", { seq: 10 }))!.string(), "r9");
  // What only a could hold stayed there: unavailable while a is down, not lost.
  assert.equal(leaderOf(b, "pinned"), "a");
  await assert.rejects(jsmB.streams.info("pinned"), /offline/);
  // The others keep placing new streams.
  await retrying(() => jsmB.streams.add({ name: "fresh", subjects: ["fresh.>"] }));
  assert.notEqual(leaderOf(b, "fresh"), "a");
  void c;
});
