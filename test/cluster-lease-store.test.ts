/**
 * A stream of one replica acknowledges a publish only under its node's lease
 * or within its grace (stream.ts, leaseHeld): past it, the stream may have
 * been deleted through another node and made again elsewhere. The lease is
 * asked again once the publish is stored, not only before: a store held up
 * (a stalled disk here; a process paused mid-write alike) past the lease and
 * its grace ended with an acknowledgement.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { sep } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { jetStreamClusterPerFile } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { stallSyncs } from "./helpers/stall.js";
import type { NagareServer } from "../src/server/server.js";

const clients = v3Clients();
const cluster = jetStreamClusterPerFile("leasestore", {}, () => clients.closeAll());
const nodes = cluster.nodes;

/** Fenced (not merely past its deadline, where the fence that starts the grace has yet to come), and past the grace. */
const pastGrace = (n: NagareServer): boolean => n.cluster!.membership.state !== "registered" && !n.cluster!.placements.isLive(n.cluster!.placements.self) && !n.cluster!.placements.writesInGrace();

test("a publish whose store ends past its node's lease and grace (etcd away) is not acknowledged", async () => {
  const [a, , c] = nodes;
  const disk = stallSyncs((path) => path.includes(`${sep}c${sep}streams${sep}stuck${sep}`) && path.endsWith(".seg"));
  try {
    const jsm = await jetstreamManager(await clients.open(a.url));
    assert.equal((await jsm.streams.add({ name: "stuck", subjects: ["stuck.>"], placement: { cluster: "", tags: ["node:c"] } })).cluster?.leader, "c");
    const js = jetstream(await clients.open(c.url), { timeout: 60_000 });
    const outcome = js.publish("stuck.x", "held").then(
      (ack) => `acknowledged, seq ${ack.seq}`,
      (err: Error) => `refused: ${err.message}`,
    );
    await waitUntil(() => disk.stalled() > 0, "the publish's store to stall");

    // etcd away: c's lease ends, then its grace (10 TTLs of 2 s); another node cut off from c could delete the stream now.
    await cluster.etcd().stop();
    await waitUntil(() => pastGrace(c), "c past its lease and grace", 40_000);
    disk.release();
    const seen = await outcome;
    assert.match(seen, /^refused: .*lost its cluster lease/, `the publish stored past the grace: ${seen}`);
  } finally {
    disk.restore();
    disk.release();
    if (!cluster.etcd().running) await cluster.etcd().start();
  }
  await waitUntil(() => nodes.every((n) => n.cluster!.membership.members().length === 3 && n.cluster!.placements.isLive(n.cluster!.placements.self)), "every node registered again", 30_000);
});

test("a publish retried past its node's lease and grace is not acknowledged as a duplicate", async () => {
  const [a, , c] = nodes;
  const jsm = await jetstreamManager(await clients.open(a.url));
  assert.equal((await jsm.streams.add({ name: "dup", subjects: ["dup.>"], placement: { cluster: "", tags: ["node:c"] } })).cluster?.leader, "c");
  const js = jetstream(await clients.open(c.url), { timeout: 10_000 });
  assert.equal((await js.publish("dup.x", "once", { msgID: "m1" })).seq, 1);
  try {
    await cluster.etcd().stop();
    await waitUntil(() => pastGrace(c), "c past its lease and grace", 40_000);
    // As a first attempt would be now: the stream may be deleted and made again elsewhere by now.
    const seen = await js.publish("dup.x", "once", { msgID: "m1" }).then(
      (ack) => `acknowledged, seq ${ack.seq}${ack.duplicate ? " (duplicate)" : ""}`,
      (err: Error) => `refused: ${err.message}`,
    );
    assert.match(seen, /^refused: .*lost its cluster lease/, `the retry past the grace: ${seen}`);
  } finally {
    if (!cluster.etcd().running) await cluster.etcd().start();
  }
  await waitUntil(() => nodes.every((n) => n.cluster!.membership.members().length === 3 && n.cluster!.placements.isLive(n.cluster!.placements.self)), "every node registered again", 30_000);
});
