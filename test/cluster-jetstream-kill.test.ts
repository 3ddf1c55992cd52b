/**
 * A node of a three-node JetStream cluster killed with SIGKILL (a real
 * process; the two others embedded), against a real etcd: requests for
 * the streams it led get "stream is offline" (10118) within the 2 s a
 * request waits for a route to a node still live in etcd, streams led
 * by the others keep working through any node, core NATS keeps flowing,
 * and the killed node's clients reconnect to another node.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { startTwoNodesAndK, stopTwoNodesAndK, type NodeProcess, type TwoNodesAndK } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { apiErrorCode } from "./helpers/js.js";

let cluster: TwoNodesAndK | undefined;
let a: NagareServer;
let b: NagareServer;
let k: NodeProcess;
const conns: NatsConnection[] = [];

before(async () => {
  cluster = await startTwoNodesAndK("jskill");
  ({ a, b, k } = cluster);
});

after(() => stopTwoNodesAndK(cluster, k, conns));

async function client(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  return nc;
}

test("a killed node's streams are offline at once; the others' keep working; core NATS and its clients carry on", async () => {
  const jsm = await jetstreamManager(await client(a.url));
  // The mesh is up, but k's subscriptions may still be on their way to a over the new route: the create waits for them.
  const onk = await jsm.streams.add({ name: "onk", subjects: ["onk"], placement: { cluster: "", tags: ["node:k"] } });
  assert.equal(onk.cluster?.leader, "k");
  assert.equal((await jsm.streams.add({ name: "ona", subjects: ["ona"], placement: { cluster: "", tags: ["node:a"] } })).cluster?.leader, "a");
  await waitUntil(() => b.cluster!.placements.get("$G", "onk") !== undefined && b.cluster!.placements.get("$G", "ona") !== undefined, "b to see both placements");
  // And k's capture of the stream's subject to reach b over their route (else b's client hears "no responders").
  await waitUntil(() => b.routes!.routez(true).routes.some((r) => ((r.subscriptions_list as string[] | undefined) ?? []).includes("$G onk")), "k's interest in onk to reach b");
  const jsB = jetstream(await client(b.url));
  assert.equal((await jsB.publish("onk", "1")).seq, 1);
  // A client of b listening on the cluster's internal subjects (as a `>` would, without taking the publishes below):
  // that traffic must neither reach it nor count as delivered.
  const wiretap = await client(b.url);
  const tapped: string[] = [];
  for (const subject of ["$NG.>", "$JS.API.>"]) wiretap.subscribe(subject, { callback: (_e, m) => void tapped.push(m.subject) });
  await wiretap.flush();
  assert.equal((await (await jetstreamManager(await client(b.url))).streams.info("onk")).cluster?.leader, "k", "an INFO forwarded from b to k");

  // A client of k, and a core subscription on it fed from b.
  const onK = await client(k.url);
  const got: string[] = [];
  onK.subscribe("core.x", { callback: (_e, m) => void got.push(m.string()) });
  await onK.flush();
  const pubB = await client(b.url);
  await waitUntil(() => {
    pubB.publish("core.x", "before");
    return got.includes("before");
  }, "core traffic from b to k's client");
  let reconnected = false;
  void (async () => {
    for await (const s of onK.status()) if (s.type === "reconnect") reconnected = true;
  })();

  await k.stop("SIGKILL");
  await waitUntil(() => b.routes!.peers().length === 1, "b to see its route to k go");

  const jsmB = await jetstreamManager(await client(b.url));
  const t0 = Date.now();
  assert.equal(await apiErrorCode(jsmB.streams.info("onk")), 10118);
  // Nobody captures its subjects any more: a publish is told at once (no responders), not left to time out.
  await assert.rejects(jsB.publish("onk", "2", { timeout: 5000 }), (err: Error) => /no responders|503/i.test(`${err.message} ${String((err as { cause?: unknown }).cause ?? "")}`));
  assert.ok(Date.now() - t0 < 4500, "answered, not left to the client's 5 s timeout");
  await wiretap.flush();
  assert.ok(tapped.some((x) => x.startsWith("$JS.API.STREAM.INFO")), "the wiretap hears the client requests");
  assert.deepEqual(tapped.filter((x) => x.startsWith("$NG.")), [], "no internal subject reaches a client");

  // LIST names the stream it could not read as missing, as nats-server does; NAMES still has it (it is placed).
  const raw = await client(b.url);
  const list = JSON.parse((await raw.request("$JS.API.STREAM.LIST", "{}", { timeout: 10_000 })).string()) as { total: number; streams: Array<{ config: { name: string } }>; missing?: string[] };
  assert.deepEqual(list.streams.map((x) => x.config.name), ["ona"]);
  assert.deepEqual(list.missing, ["onk"]);
  const names = JSON.parse((await raw.request("$JS.API.STREAM.NAMES", "{}", { timeout: 10_000 })).string()) as { streams: string[] };
  assert.deepEqual(names.streams, ["ona", "onk"]);

  // The stream on a works from b.
  assert.equal((await jsB.publish("ona", "x")).seq, 1);
  assert.equal((await jsmB.streams.info("ona")).state.messages, 1);

  // k's client is on another node now, and core traffic reaches it.
  await waitUntil(() => reconnected, "k's client to reconnect elsewhere", 15_000);
  await waitUntil(() => {
    pubB.publish("core.x", "after");
    return got.includes("after");
  }, "core traffic to the reconnected client");
});
