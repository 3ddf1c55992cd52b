/**
 * A node is live (its key in etcd) before the others' routes reach it and
 * before its subscriptions cross them. A request forwarded to such a node
 * waits for its route (cluster-api.ts's waitForRoute) instead of being
 * answered "stream is offline" at once, and is answered offline once the
 * wait ends without one. Here the route between the two nodes goes through
 * proxies held partitioned, so the node is live and unreachable for as long
 * as the test says.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startJetStreamNode, uniqueCluster, type JetStreamClusterSite } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { apiErrorCode } from "./helpers/js.js";
import { FaultNet } from "./helpers/tcp-proxy.js";

let etcd: EtcdHarness;
let dir: string;
let net: FaultNet;
let a: NagareServer;
let k: NagareServer;
let nc: NatsConnection;
let jsm: JetStreamManager;

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-rwait-"));
  const site: JetStreamClusterSite = { etcd: etcd.endpoint, dir, cluster: uniqueCluster("rwait") };
  net = new FaultNet();
  // Each node advertises a proxy in front of its route listener (pointed at it once it listens); the link starts cut.
  const toA = await net.proxy("a", 1, { from: "k" });
  const toK = await net.proxy("k", 1, { from: "a" });
  net.partition("a", "k");
  a = await startJetStreamNode(site, "a", { advertise: `127.0.0.1:${toA.port}` });
  toA.retarget(a.routes!.port);
  k = await startJetStreamNode(site, "k", { advertise: `127.0.0.1:${toK.port}` });
  toK.retarget(k.routes!.port);
  await waitUntil(() => a.cluster!.membership.members().length === 2, "a to see k live in etcd");
  assert.equal(a.routes!.peers().length, 0, "no route between them yet");
  nc = await connect({ servers: a.url });
  jsm = await jetstreamManager(nc, { timeout: 15_000 });
});

after(async () => {
  await nc?.close().catch(() => undefined);
  await Promise.all([a?.close(), k?.close()]);
  await net?.close();
  await etcd?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a create for a live node no route reaches is answered offline once the wait ends, and leaves nothing placed", async () => {
  const t0 = Date.now();
  assert.equal(await apiErrorCode(jsm.streams.add({ name: "never", subjects: ["never"], placement: { cluster: "", tags: ["node:k"] } })), 10118);
  assert.ok(Date.now() - t0 >= 1900, `it waited for a route first (${Date.now() - t0} ms)`);
  await waitUntil(() => a.cluster!.placements.get("$G", "never") === undefined, "the placement the create made to be removed");
});

test("a create for a live node whose route comes while it waits is created there", async () => {
  const created = jsm.streams.add({ name: "onk", subjects: ["onk"], placement: { cluster: "", tags: ["node:k"] } });
  // Placed (in etcd, seen by a): the create is at its forward, which finds no route to k.
  await waitUntil(() => a.cluster!.placements.get("$G", "onk") !== undefined, "the stream to be placed on k");
  net.heal("a", "k");
  const info = await created;
  assert.equal(info.cluster?.leader, "k");
  assert.equal(a.routes!.peers().length, 1);
  assert.equal((await jsm.streams.info("onk")).cluster?.leader, "k", "an INFO forwarded over the route");
});
