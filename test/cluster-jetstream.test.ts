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

after(async () => {
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
