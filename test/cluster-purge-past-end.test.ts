/**
 * A purge with `seq` past a replicated stream's end moves every replica on
 * (nats-server's purge does): the leader's log end moves with it, so the
 * log start its fetch answers carry never lies past the end they name.
 * Before, a follower purged to that start, found itself beyond the
 * leader's end, cut back and tried again: nothing published after the
 * purge was acknowledged (1 in-sync replica, 2 needed), and a stream purged
 * while empty was moved on at its leader alone, so a failover went back
 * to the old sequences. A stream started near 2^52 goes on past it: a purge
 * within what it reached (a follower's to its leader's log start) is taken.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetStreamClusterPerFile } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("purge-past-end", {}, () => clients.closeAll());

test("after a purge past the end of an R3 stream, a publish is acknowledged at the purge's sequence and every replica holds it", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "FARR", subjects: ["farr.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("FARR")), "a copy on every node");
  for (let i = 0; i < 3; i++) await js.publish("farr.x", `${i}`, { timeout: 10_000 });
  assert.equal((await jsm.streams.purge("FARR", { seq: 1_000_000 })).purged, 3);
  assert.equal((await js.publish("farr.x", "after", { timeout: 10_000 })).seq, 1_000_000);
  for (const n of nodes) {
    const log = n.jetstream!.streams.get("FARR")!.partitions[0];
    await waitUntil(() => log.state().lastSeq === 1_000_000, `${n.cluster!.options.serverName} to hold the publish`);
    assert.equal((await log.get(1_000_000))?.data.toString(), "after");
    assert.deepEqual([log.state().firstSeq, log.state().messages], [1_000_000, 1]);
  }
});

test("a purge past the end of an empty R3 stream moves every replica on before it is answered", async () => {
  const nc = await clients.open(nodes[1].url);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "EMPTYR", subjects: ["emptyr.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("EMPTYR")), "a copy on every node");
  assert.equal((await jsm.streams.purge("EMPTYR", { seq: 500_000 })).purged, 0);
  for (const n of nodes) assert.equal(n.jetstream!.streams.get("EMPTYR")!.partitions[0].state().lastSeq, 499_999, `${n.cluster!.options.serverName} moved on`);
  assert.equal((await jetstream(nc).publish("emptyr.x", "first", { timeout: 10_000 })).seq, 500_000);
});

test("an R3 stream past 2^52 whose limits move its front: the followers purge to the leader's log start and publishes are acknowledged", async () => {
  const nc = await clients.open(nodes[2].url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const TOP = 2 ** 52;
  await jsm.streams.add({ name: "TOPR", subjects: ["topr.>"], num_replicas: 3, first_seq: TOP - 2, max_msgs: 2 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("TOPR")), "a copy on every node");
  const seqs: number[] = [];
  for (let i = 0; i < 6; i++) seqs.push((await js.publish("topr.x", `${i}`, { timeout: 10_000 })).seq);
  assert.deepEqual(seqs, [0, 1, 2, 3, 4, 5].map((i) => TOP - 2 + i));
  for (const n of nodes) {
    const log = n.jetstream!.streams.get("TOPR")!.partitions[0];
    await waitUntil(() => log.state().firstSeq === TOP + 2 && log.state().messages === 2, `${n.cluster!.options.serverName} to keep the newest 2 (${JSON.stringify(log.state())})`);
  }
  // A purge inside the stored range past 2^52 moves nothing past it: taken.
  assert.equal((await jsm.streams.purge("TOPR", { seq: TOP + 3 })).purged, 1);
});

test("a purge past the end with the filter '>' (every subject, as none) moves every replica on as one without a filter does", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "FARALL", subjects: ["farall.>"], num_replicas: 3 });
  await jsm.streams.add({ name: "EMPTYALL", subjects: ["emptyall.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("FARALL") && n.jetstream!.streams.has("EMPTYALL")), "a copy on every node");
  for (let i = 0; i < 3; i++) await js.publish("farall.x", `${i}`, { timeout: 10_000 });
  assert.equal((await jsm.streams.purge("FARALL", { filter: ">", seq: 1_000_000 })).purged, 3);
  assert.equal((await js.publish("farall.x", "after", { timeout: 10_000 })).seq, 1_000_000);
  for (const n of nodes) {
    const log = n.jetstream!.streams.get("FARALL")!.partitions[0];
    await waitUntil(() => log.state().lastSeq === 1_000_000, `${n.cluster!.options.serverName} to hold the publish (${JSON.stringify(log.state())})`);
    assert.deepEqual([log.state().firstSeq, log.state().messages], [1_000_000, 1]);
  }
  // Empty: nothing removed, the log only moves on; every replica before the answer.
  assert.equal((await jsm.streams.purge("EMPTYALL", { filter: ">", seq: 500_000 })).purged, 0);
  for (const n of nodes) assert.equal(n.jetstream!.streams.get("EMPTYALL")!.partitions[0].state().lastSeq, 499_999, `${n.cluster!.options.serverName} moved on`);
  assert.equal((await js.publish("emptyall.x", "first", { timeout: 10_000 })).seq, 500_000);
});
