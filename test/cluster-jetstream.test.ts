/**
 * JetStream in a three-node cluster against a real etcd: streams placed in
 * etcd and created on the node placed (the reconciler, cluster-streams.ts),
 * removed with their placement.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { uniqueCluster } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { apiErrorCode } from "./helpers/js.js";

let etcd: EtcdHarness;
let dir: string;
const nodes: NagareServer[] = [];
let clusterName: string;

function node(name: string, routes: string[]): Promise<NagareServer> {
  return startServer({
    host: "127.0.0.1",
    port: -1,
    httpPort: -1,
    jetstream: true,
    storeDir: join(dir, name),
    serverName: name,
    serverTags: [`node:${name}`],
    cluster: { name: clusterName, host: "127.0.0.1", port: -1, ...(routes.length > 0 ? { routes } : {}) },
    etcd: { endpoints: [etcd.endpoint], leaseTtl: 2000, dialTimeout: 1000, requestTimeout: 1000 },
  });
}

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-jsc-"));
  clusterName = uniqueCluster("js");
  const a = await node("a", []);
  nodes.push(a);
  const seed = [`nats://127.0.0.1:${a.routes!.port}`];
  nodes.push(await node("b", seed), await node("c", seed));
  await waitUntil(() => nodes.every((n) => n.cluster!.membership.members().length === 3), "every node to see the others");
});

const conns: NatsConnection[] = [];
async function client(n: NagareServer): Promise<NatsConnection> {
  const nc = await connect({ servers: n.url });
  conns.push(nc);
  return nc;
}

/** The node leading a stream, and the two others. */
function roles(stream: string): { leader: NagareServer; others: NagareServer[] } {
  const name = nodes[0].cluster!.placements.leaderOf("$G", stream);
  const leader = nodes.find((n) => n.broker.serverName === name)!;
  return { leader, others: nodes.filter((n) => n !== leader) };
}

/** Waits until every node's copy of the metadata has the stream's placement. */
async function placedEverywhere(stream: string): Promise<void> {
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", stream) !== undefined), `${stream} placed on every node's copy`);
}

after(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined);
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a placement naming a node creates the stream there; removing it deletes it", async () => {
  const [a, b, c] = nodes;
  const config = { name: "placed", subjects: ["placed.>"], storage: "file", retention: "limits", discard: "old" };
  const r = await a.cluster!.placements.place("$G", "placed", { partitions: 1, tags: ["node:b"], spread: false, subjects: ["placed.>"], origin: "jetstream", config });
  assert.deepEqual(r.placement.leaders, ["b"]);
  await waitUntil(() => b.jetstream!.streams.has("placed"), "b to create the stream");
  assert.equal(a.jetstream!.streams.has("placed"), false);
  assert.equal(c.jetstream!.streams.has("placed"), false);
  const topic = { name: "topic", subjects: ["topic"], storage: "file", retention: "limits", discard: "old" };
  const t = await c.cluster!.placements.place("$G", "topic", { partitions: 3, spread: true, subjects: ["topic"], origin: "kafka", config: topic });
  const hosts = nodes.filter((n) => t.placement.leaders.includes(n.broker.serverName));
  assert.ok(hosts.length >= 2, `spread: ${t.placement.leaders.join(",")}`);
  await waitUntil(() => hosts.every((n) => n.jetstream!.streams.get("topic")?.partitions.length === 3), "every leading node to host the topic");
  for (const n of hosts) assert.deepEqual(n.jetstream!.streams.get("topic")!.ledHere, t.placement.leaders.map((l) => l === n.broker.serverName));
  for (const n of nodes) if (!hosts.includes(n)) assert.equal(n.jetstream!.streams.has("topic"), false);
  await a.cluster!.placements.remove("$G", "placed");
  await waitUntil(() => !b.jetstream!.streams.has("placed"), "b to delete the stream");
});

test("a stream created through one node is placed and served through every node: publish, pull with acks, ordered, info, names, list, delete", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  const info = await jsm.streams.add({ name: "orders", subjects: ["orders.>"] });
  const placed = a.cluster!.placements.get("$G", "orders")!.placement;
  assert.equal(placed.leaders.length, 1);
  assert.deepEqual(info.cluster, { name: clusterName, leader: placed.leaders[0] });
  await placedEverywhere("orders");
  const { leader, others } = roles("orders");
  assert.ok(leader.jetstream!.streams.has("orders"));
  for (const o of others) assert.equal(o.jetstream!.streams.has("orders"), false, "only the leader has the stream");

  // Publish through one node that does not lead it, consume through the other.
  const [pubNode, subNode] = others;
  const jsPub = jetstream(await client(pubNode));
  for (let i = 0; i < 5; i++) {
    const ack = await jsPub.publish(`orders.${i}`, `o${i}`);
    assert.equal(ack.seq, i + 1);
    assert.equal(ack.stream, "orders");
  }
  const subNc = await client(subNode);
  const jsmSub = await jetstreamManager(subNc);
  await jsmSub.consumers.add("orders", { durable_name: "work", ack_policy: AckPolicy.Explicit });
  const js = jetstream(subNc);
  const c = await js.consumers.get("orders", "work");
  const got: string[] = [];
  const batch = await c.fetch({ max_messages: 5, expires: 5000 });
  for await (const m of batch) {
    got.push(m.string());
    assert.ok(await m.ackAck(), "acked through a node that does not lead the stream");
  }
  assert.deepEqual(got, ["o0", "o1", "o2", "o3", "o4"]);
  const ci = await jsmSub.consumers.info("orders", "work");
  assert.equal(ci.num_ack_pending, 0);
  assert.equal(ci.delivered.stream_seq, 5);

  // An ordered (push-less, ephemeral) consumer through the third node.
  const oc = await js.consumers.get("orders", { deliver_policy: DeliverPolicy.All });
  const ordered: string[] = [];
  const it = await oc.consume();
  for await (const m of it) {
    ordered.push(m.subject);
    if (ordered.length === 5) break;
  }
  assert.deepEqual(ordered, ["orders.0", "orders.1", "orders.2", "orders.3", "orders.4"]);

  // INFO, NAMES, LIST from a node that does not lead it.
  const si = await jsmSub.streams.info("orders");
  assert.equal(si.state.messages, 5);
  assert.deepEqual(si.cluster, { name: clusterName, leader: leader.broker.serverName });
  const names: string[] = [];
  for await (const n of jsmSub.streams.names()) names.push(n);
  assert.ok(names.includes("orders"), names.join(","));
  const listed: string[] = [];
  for await (const s of jsmSub.streams.list()) listed.push(s.config.name);
  assert.ok(listed.includes("orders"));
  const m = await jsmSub.streams.getMessage("orders", { seq: 2 });
  assert.equal(m?.subject, "orders.1");

  // Subjects overlap with a stream placed on another node: nats-server's error, from any node.
  assert.equal(await apiErrorCode(jsmSub.streams.add({ name: "overlap", subjects: ["orders.eu"] })), 10065);

  // DELETE from a node that does not lead it: gone everywhere.
  assert.equal(await jsmSub.streams.delete("orders"), true);
  await waitUntil(() => !leader.jetstream!.streams.has("orders") && nodes.every((n) => n.cluster!.placements.get("$G", "orders") === undefined), "the stream and its placement gone");
  assert.equal(await apiErrorCode(jsmSub.streams.info("orders")), 10059);
});

test("placement tags choose the node; no node with the tags is nats-server's 10005", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  const info = await jsm.streams.add({ name: "tagged", subjects: ["tagged.>"], placement: { cluster: "", tags: ["node:c"] } });
  assert.equal(info.cluster?.leader, "c");
  assert.equal(await apiErrorCode(jsm.streams.add({ name: "nowhere", subjects: ["nowhere"], placement: { cluster: "", tags: ["gpu"] } })), 10005);
  assert.equal(a.cluster!.placements.get("$G", "nowhere"), undefined);
  await jsm.streams.delete("tagged");
});

test("KV and object store through a node that does not lead the bucket", async () => {
  const [a, b, c] = nodes;
  // Placed on c by its tag, used through a and b.
  const jsm = await jetstreamManager(await client(c));
  await jsm.streams.add({ name: "KV_cfg", subjects: ["$KV.cfg.>"], max_msgs_per_subject: 5, allow_rollup_hdrs: true, deny_delete: true, allow_direct: true, discard: "new" as never, placement: { cluster: "", tags: ["node:c"] } });
  await placedEverywhere("KV_cfg");
  const kvA = await new Kvm(await client(a)).open("cfg");
  const kvB = await new Kvm(await client(b)).open("cfg");
  const seen: string[] = [];
  const watch = await kvB.watch({ key: "color" });
  const watched = (async () => {
    for await (const e of watch) {
      seen.push(`${e.operation} ${e.string()}`);
      if (seen.length === 2) break;
    }
  })();
  await kvA.put("color", "red");
  assert.equal((await kvB.get("color"))?.string(), "red");
  await kvA.put("color", "blue");
  await watched;
  assert.deepEqual(seen, ["PUT red", "PUT blue"]);

  const osA = await new Objm(await client(a)).create("files", { placement: { cluster: "", tags: ["node:c"] } } as never);
  const leader = a.cluster!.placements.leaderOf("$G", "OBJ_files");
  assert.equal(leader, "c");
  const data = new Uint8Array(300_000).map((_, i) => i % 251);
  await osA.putBlob({ name: "blob" }, data);
  const osB = await new Objm(await client(b)).open("files");
  const back = await osB.getBlob("blob");
  assert.deepEqual(back, data);
});

test("etcd killed: placed streams keep working, creates are refused with 10008, and work again when etcd returns", async () => {
  const [a, b] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "steady", subjects: ["steady"], placement: { cluster: "", tags: ["node:a"] } });
  await placedEverywhere("steady");
  await etcd.kill();
  const js = jetstream(await client(b));
  const ack = await js.publish("steady", "1");
  assert.equal(ack.seq, 1);
  const jsmB = await jetstreamManager(await client(b));
  await jsmB.consumers.add("steady", { durable_name: "d", ack_policy: AckPolicy.Explicit });
  const c = await js.consumers.get("steady", "d");
  const m = await c.next({ expires: 5000 });
  assert.equal(m?.string(), "1");
  m!.ack();
  // The client sees etcd gone as soon as its node does: wait for that, not for a time.
  await waitUntil(() => !b.cluster!.client.reachable || !b.cluster!.membership.holdsLease(), "b to notice etcd gone", 15_000);
  const started = Date.now();
  const code = await apiErrorCode(jsmB.streams.add({ name: "later", subjects: ["later"] }));
  assert.equal(code, 10008);
  assert.ok(Date.now() - started < 4000, "refused at once, not after a client timeout");
  await etcd.start();
  await waitUntil(() => b.cluster!.membership.holdsLease() && b.cluster!.client.reachable, "b back in the cluster", 20_000);
  await waitUntil(() => a.cluster!.membership.holdsLease() && a.cluster!.membership.members().length === 3, "a back with every node", 20_000);
  const info = await jsmB.streams.add({ name: "later", subjects: ["later"] });
  assert.equal(info.config.name, "later");
});
