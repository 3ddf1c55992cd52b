/**
 * JetStream in a three-node cluster (embedded servers, routes, one real
 * etcd), judged by the official v3 clients: streams placed in etcd and
 * created on the node placed (cluster-streams.ts) and removed with their
 * placement; the JetStream API, publishes, pull and ordered consumers, KV
 * and object store through nodes that do not lead the stream
 * (cluster-api.ts); a spread stream storing each message once; placement
 * tags; streams found on disk adopted or set aside; etcd killed and back.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startJetStreamCluster, startJetStreamNode, uniqueCluster, within } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { apiErrorCode } from "./helpers/js.js";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { partitionForKey } from "../src/streams/partitioner.js";
import * as v2 from "nats";

let etcd: EtcdHarness;
let dir: string;
const nodes: NagareServer[] = [];
let clusterName: string;

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-jsc-"));
  clusterName = uniqueCluster("js");
  nodes.push(...(await startJetStreamCluster({ etcd: etcd.endpoint, dir, cluster: clusterName }, { monitoring: true })));
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

  // UPDATE and PURGE from a node that does not lead it; the placement follows the new subjects.
  const updated = await jsmSub.streams.update("orders", { subjects: ["orders.>", "invoices"] });
  assert.deepEqual(updated.config.subjects, ["orders.>", "invoices"]);
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", "orders")?.placement.subjects.includes("invoices") === true), "the placement's subjects updated everywhere");
  assert.equal(await apiErrorCode(jsmSub.streams.add({ name: "bills", subjects: ["invoices"] })), 10065);
  // An update the stream refuses leaves its placement as it was.
  assert.equal(await apiErrorCode(jsmSub.streams.update("orders", { subjects: ["orders.>"], retention: "workqueue" } as never)), 10052);
  assert.deepEqual(a.cluster!.placements.get("$G", "orders")?.placement.subjects, ["orders.>", "invoices"]);
  const purged = await jsmSub.streams.purge("orders");
  assert.equal(purged.purged, 5);

  // The nodes' own subjects are not for clients: a forged forward is refused (it would bypass permissions on $JS.API).
  const forger = await client(subNode);
  const refused = (async () => {
    for await (const s of forger.status()) if (s.type === "error" && /Permissions Violation/.test(String((s as { error?: unknown }).error ?? (s as { data?: unknown }).data))) return true;
    return false;
  })();
  forger.publish(`$NG.JS.${leader.broker.serverName}.$JS.API.STREAM.DELETE.orders`);
  assert.equal(await within(refused, 10_000, "the permissions violation"), true);
  assert.equal((await jsmSub.streams.info("orders")).config.name, "orders", "still there");
  // Nor through a subject the server sends to for a client: a request's reply subject, a push consumer's deliver subject, a
  // republish destination (each would reach the leader as its own node's request, with what the answer holds).
  const replier = await client(subNode);
  const replyRefused = (async () => {
    for await (const s of replier.status()) if (s.type === "error" && /Permissions Violation for Publish with Reply of "\$NG\./.test(String((s as { error?: unknown }).error ?? (s as { data?: unknown }).data))) return true;
    return false;
  })();
  replier.publish("$JS.API.INFO", "", { reply: `$NG.JS.${leader.broker.serverName}.$JS.API.STREAM.DELETE.orders` });
  assert.equal(await within(replyRefused, 10_000, "the reply's permissions violation"), true);
  assert.equal(await apiErrorCode(jsmSub.consumers.add("orders", { durable_name: "internal", deliver_subject: `$NG.JS.${leader.broker.serverName}.$NG.APPEND.orders.0`, ack_policy: "explicit" } as never)), 10112);
  assert.equal(await apiErrorCode(jsmSub.streams.add({ name: "republisher", subjects: ["rp.>"], republish: { src: ">", dest: `$NG.JS.${leader.broker.serverName}.x` } } as never)), 10052);
  assert.equal((await jsmSub.streams.info("orders")).state.messages, 0, "nothing appended since the purge");
  // And whatever way is left, what the server sends there for a client goes nowhere (a consumer given such a deliver
  // subject before it was refused, say): only the cluster's own requests leave a node on those subjects.
  const forged = Buffer.from(JSON.stringify({ subject: "orders.forged", headers: null, data: Buffer.from("forged").toString("base64") }));
  const appendAtLeader = `$NG.JS.${leader.broker.serverName}.$NG.APPEND.orders.0`;
  subNode.jetstream!.emit(appendAtLeader, appendAtLeader, "", null, forged);
  // The cluster's own append, after it on the same route: had the forged one gone, it would be stored before this one.
  const legit = await subNode.jetstream!.remoteAppend!("orders", 0, { subject: "orders.legit", data: Buffer.from("legit") });
  assert.equal((await jsmSub.streams.info("orders")).state.messages, 1, "only the cluster's own append stored");
  assert.equal((await jsmSub.streams.getMessage("orders", { seq: legit! }))?.subject, "orders.legit");

  // DELETE from a node that does not lead it: gone everywhere.
  assert.equal(await jsmSub.streams.delete("orders"), true);
  await waitUntil(() => !leader.jetstream!.streams.has("orders") && nodes.every((n) => n.cluster!.placements.get("$G", "orders") === undefined), "the stream and its placement gone");
  assert.equal(await apiErrorCode(jsmSub.streams.info("orders")), 10059);
});

test("a stream spread over the nodes (a Kafka topic): each publish is stored and acknowledged once, by the node leading its partition", async () => {
  const [a, b] = nodes;
  const config = { name: "spread", subjects: ["spread"], storage: "file", retention: "limits", discard: "old" };
  // Spread by load: whichever nodes it chose, each stores only the partitions it leads.
  const { placement } = await a.cluster!.placements.place("$G", "spread", { partitions: 3, spread: true, subjects: ["spread"], origin: "kafka", config });
  const hosts = nodes.filter((n) => placement.leaders.includes(n.broker.serverName));
  await waitUntil(() => hosts.every((n) => n.jetstream!.streams.get("spread")?.ledHere !== undefined && n.jetstream!.streams.get("spread")!.partitions.length === 3), "every leading node to host it");
  await waitUntil(() => nodes.every((n) => n.routes!.peers().length === 2), "the mesh");
  const pub = await client(b);
  const acks: string[] = [];
  const inbox = "acks.spread";
  pub.subscribe(inbox, { callback: (_e, m) => void acks.push(m.string()) });
  await pub.flush();
  const keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
  const expected = [0, 0, 0];
  const sent = keys.length + 2;
  // The captures' interest must have reached b from the other hosts.
  await waitUntil(() => hosts.every((h) => h === b) || b.routes!.hasInterest(b.broker.accounts.get("$G")!, "spread"), "interest in the topic's subject on b");
  for (const k of keys) {
    const h = natsHeaders();
    h.set("Nats-Key", k);
    pub.publish("spread", k, { reply: inbox, headers: h });
    expected[partitionForKey(Buffer.from(k), 3)]++;
  }
  pub.publish("spread", "u1", { reply: inbox });
  pub.publish("spread", "u2", { reply: inbox });
  expected[0] += 2;
  await pub.flush();
  const stored = (n: NagareServer, p: number): number => n.jetstream!.streams.get("spread")?.partitions[p].state().messages ?? 0;
  const leaderOf = (p: number): NagareServer => nodes.find((n) => n.broker.serverName === placement.leaders[p])!;
  await waitUntil(() => [0, 1, 2].every((p) => stored(leaderOf(p), p) === expected[p]) && acks.length >= sent, "every message stored by its partition's leader and acknowledged");
  let total = 0;
  for (const n of hosts) for (let p = 0; p < 3; p++) total += stored(n, p);
  assert.equal(total, sent, "no node stored a partition it does not lead");
  assert.equal(acks.length, sent, `one ack per message: ${acks.join(" | ")}`);
  assert.ok(acks.every((x) => !x.includes("error")), acks.join(" | "));
  await a.cluster!.placements.remove("$G", "spread");
});

test("nats v2: a push consumer with explicit acks and a pull fetch through nodes that do not lead the stream", async () => {
  const [a, b, c] = nodes;
  const v2conns: v2.NatsConnection[] = [];
  const open = async (n: NagareServer): Promise<v2.NatsConnection> => {
    const nc = await v2.connect({ servers: n.url });
    v2conns.push(nc);
    return nc;
  };
  try {
    const jsm = await (await open(a)).jetstreamManager();
    await jsm.streams.add({ name: "pushed", subjects: ["pushed.*"], placement: { cluster: "", tags: ["node:a"] } });
    await waitUntil(() => b.cluster!.placements.get("$G", "pushed") !== undefined && c.cluster!.placements.get("$G", "pushed") !== undefined, "the placement on b and c");
    const js = (await open(b)).jetstream();
    for (let i = 0; i < 3; i++) await js.publish(`pushed.${i}`, v2.StringCodec().encode(`p${i}`));
    const cnc = await open(c);
    const opts = v2.consumerOpts();
    opts.durable("pushdur");
    opts.deliverTo(v2.createInbox());
    opts.ackExplicit();
    opts.deliverAll();
    const sub = await cnc.jetstream().subscribe("pushed.*", opts);
    const got: string[] = [];
    for await (const m of sub) {
      got.push(v2.StringCodec().decode(m.data));
      m.ack();
      if (got.length === 3) break;
    }
    assert.deepEqual(got, ["p0", "p1", "p2"]);
    const cjsm = await cnc.jetstreamManager();
    const info = await cjsm.consumers.info("pushed", "pushdur");
    assert.equal(info.delivered.stream_seq, 3);
    await cjsm.consumers.add("pushed", { durable_name: "pulldur", ack_policy: v2.AckPolicy.Explicit });
    const consumer = await cnc.jetstream().consumers.get("pushed", "pulldur");
    const fetched: string[] = [];
    for await (const m of await consumer.fetch({ max_messages: 3, expires: 5000 })) {
      fetched.push(m.subject);
      m.ack();
    }
    assert.deepEqual(fetched, ["pushed.0", "pushed.1", "pushed.2"]);
  } finally {
    for (const nc of v2conns) await nc.close();
  }
});

test("a client header named like the route's own Nagare-Subject crosses a route unchanged, and cannot change the subject shown", async () => {
  const [a, b] = nodes;
  const sub = await client(a);
  const got: Array<{ subject: string; header: string | undefined }> = [];
  sub.subscribe("spoof.>", { callback: (_e, m) => void got.push({ subject: m.subject, header: m.headers?.get("Nagare-Subject") }) });
  await sub.flush();
  const pub = await client(b);
  await waitUntil(() => b.routes!.hasInterest(b.broker.accounts.get("$G")!, "spoof.x"), "b to know a's interest");
  const h = natsHeaders();
  h.set("Nagare-Subject", "elsewhere");
  pub.publish("spoof.x", "1", { headers: h });
  await pub.flush();
  await waitUntil(() => got.length === 1, "the message on a");
  assert.deepEqual(got, [{ subject: "spoof.x", header: "elsewhere" }]);
});

test("placement tags choose the node; no node with the tags is nats-server's 10005", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  const info = await jsm.streams.add({ name: "tagged", subjects: ["tagged.>"], placement: { cluster: "", tags: ["node:c"] } });
  assert.equal(info.cluster?.leader, "c");
  // nats-server 2.9's words: `no suitable peers for placement, tags not matched ['gpu']`.
  await assert.rejects(jsm.streams.add({ name: "nowhere", subjects: ["nowhere"], placement: { cluster: "", tags: ["gpu"] } }), (err: Error) =>
    /no suitable peers for placement, tags not matched \['gpu'\]/.test(err.message),
  );
  assert.equal(await apiErrorCode(jsm.streams.add({ name: "nowhere", subjects: ["nowhere"], placement: { cluster: "other", tags: [] } })), 10005);
  assert.equal(a.cluster!.placements.get("$G", "nowhere"), undefined);
  const here = await jsm.streams.add({ name: "named", subjects: ["named"], placement: { cluster: clusterName, tags: [] } });
  assert.equal(here.cluster?.name, clusterName, "this cluster's name is a placement it honours");
  await jsm.streams.delete("named");
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

test("streams found on disk: adopted when the cluster has no placement, set aside (files kept, shown in /jsz) when placed elsewhere", async () => {
  const [a] = nodes;
  const store = join(dir, "d");
  const single = await startServer({ host: "127.0.0.1", port: -1, jetstream: true, storeDir: store });
  const nc = await connect({ servers: single.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "legacy", subjects: ["legacy.>"] });
  await jsm.streams.add({ name: "foreign", subjects: ["foreign.>"] });
  await nc.close();
  await single.close();
  // Meanwhile the cluster placed a stream of that name on a.
  const config = { name: "foreign", subjects: ["foreign.>"], storage: "file", retention: "limits", discard: "old" };
  await a.cluster!.placements.place("$G", "foreign", { partitions: 1, tags: ["node:a"], spread: false, subjects: ["foreign.>"], origin: "jetstream", config });
  const d = await startJetStreamNode({ etcd: etcd.endpoint, dir, cluster: clusterName }, "d", { monitoring: true, storeDir: store });
  try {
    assert.deepEqual(d.cluster!.placements.get("$G", "legacy")?.placement.leaders, ["d"], "adopted: this node leads it");
    assert.ok(d.jetstream!.streams.has("legacy"));
    assert.equal(d.jetstream!.streams.has("foreign"), false, "placed on a: not served here");
    assert.match(d.jetstream!.notServed.get("foreign") ?? "", /placed it on a/);
    const jsz = (await (await fetch(`http://127.0.0.1:${d.httpPort}/jsz?accounts=1&streams=1`)).json()) as {
      meta_cluster: { name: string; cluster_size: number };
      num_not_served: number;
      account_details: Array<{ not_served?: Array<{ name: string }>; stream_detail?: Array<{ name: string; cluster: { name: string; leader: string } }> }>;
    };
    assert.deepEqual(jsz.meta_cluster, { name: clusterName, cluster_size: 4 });
    assert.equal(jsz.num_not_served, 1);
    assert.deepEqual(jsz.account_details[0].not_served?.map((x) => x.name), ["foreign"]);
    assert.deepEqual(jsz.account_details[0].stream_detail?.find((x) => x.name === "legacy")?.cluster, { name: clusterName, leader: "d" });
  } finally {
    await d.close();
  }
  // legacy, which d alone leads, stays placed: d's key went just now, and until it has been gone 10 lease TTLs d might
  // still take writes for it (were it paused, not stopped).
  await assert.rejects(a.cluster!.placements.remove("$G", "legacy"), { name: "NodeJustGoneError" });
  await a.cluster!.placements.remove("$G", "foreign");
  await waitUntil(() => !a.jetstream!.streams.has("foreign"), "a to delete foreign");
});

test("etcd killed: placed streams keep working (a stream of one replica for 10 lease TTLs after its node is fenced), creates are refused with 10008, and work again when etcd returns", async () => {
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
  // Fenced, a still takes writes for its stream of one replica, for 10 lease TTLs: no node deletes the stream (and
  // makes it again elsewhere) before a's key has been gone that long.
  await waitUntil(() => !a.cluster!.membership.holdsLease(), "a to be fenced", 15_000);
  assert.equal((await js.publish("steady", "fenced")).seq, 2);
  await etcd.start();
  await waitUntil(() => b.cluster!.membership.holdsLease() && b.cluster!.client.reachable, "b back in the cluster", 20_000);
  await waitUntil(() => a.cluster!.membership.holdsLease() && a.cluster!.membership.members().length === 3, "a back with every node", 20_000);
  const info = await jsmB.streams.add({ name: "later", subjects: ["later"] });
  assert.equal(info.config.name, "later");
  await waitUntil(() => a.cluster!.placements.isLive("a"), "a to count on its lease again");
  assert.equal((await js.publish("steady", "3")).seq, 3, "taken under the new lease");
});
