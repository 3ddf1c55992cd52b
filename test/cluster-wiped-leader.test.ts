/**
 * A node whose store is gone when it starts again (its files removed, an
 * ephemeral disk replaced) and which is still named leader of a replicated
 * stream (it came back before its followers took over) must not lead the
 * same epoch from the empty copy it makes: its followers would be cut back
 * to nothing, every acknowledged message lost. It hands the leadership to
 * an in-sync replica, and follows.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { StreamReplicas } from "../src/streams/stream-replicas.js";
import { spawnNodeK, startTwoNodesAndK, stopTwoNodesAndK, type NodeProcess, type TwoNodesAndK } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { api } from "./helpers/js.js";

let cluster: TwoNodesAndK | undefined;
let a: NagareServer;
let b: NagareServer;
let k: NodeProcess;
const conns: NatsConnection[] = [];

before(async () => {
  cluster = await startTwoNodesAndK("wiped");
  ({ a, b, k } = cluster);
});

after(() => stopTwoNodesAndK(cluster, k, conns));

test("a leader back with an empty store hands the stream to an in-sync replica instead of cutting it back to nothing", async () => {
  const nc = await connect({ servers: a.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "WIPED", subjects: ["wiped.>"], num_replicas: 3 });
  const placed = () => a.cluster!.placements.get("$G", "WIPED")?.placement;
  if (placed()?.leaders[0] !== "k") {
    const sd = await api(nc, "$JS.API.STREAM.LEADER.STEPDOWN.WIPED", { placement: { preferred: "k" } });
    assert.equal(sd.success, true, JSON.stringify(sd));
  }
  await waitUntil(() => placed()?.leaders[0] === "k" && placed()?.isr?.[0]?.length === 3, "k leading, all three in sync");
  const js = jetstream(nc);
  // Retried under its message id (stored once): right after the step-down, one publish in some ten runs under load went
  // unanswered (noted as an open question, not what this test is about).
  for (let i = 1; i <= 5; i++) {
    let seq: number | undefined;
    await waitUntilAsync(async () => (seq = (await js.publish("wiped.x", `m${i}`, { msgID: `m${i}`, timeout: 3000 }).catch(() => undefined))?.seq) !== undefined, `m${i} acknowledged`, 30_000);
    assert.equal(seq, i);
  }
  // A stream of one replica, on k: nothing to hand to; its loss is at least said.
  await jsm.streams.add({ name: "ONLYK", subjects: ["onlyk"], placement: { cluster: "", tags: ["node:k"] } });
  assert.equal((await js.publish("onlyk", "gone")).seq, 1);

  // a and b do not take over while k is away (as when k is back before they would): k is named leader when it returns.
  const proto = StreamReplicas.prototype as unknown as { checkLeader: (...args: unknown[]) => void };
  const checkLeader = proto.checkLeader;
  proto.checkLeader = () => undefined;
  try {
    await k.stop("SIGKILL");
    rmSync(join(cluster!.site.dir, "k"), { recursive: true, force: true });
    k = await spawnNodeK(cluster!.site);
    // Leading epoch 1 from its empty copy, k would cut a and b back to nothing; it hands over instead.
    await waitUntil(() => placed()?.leaders[0] !== "k", "the leadership handed by k, back empty, to an in-sync replica", 30_000);
  } finally {
    proto.checkLeader = checkLeader;
  }
  await waitUntilAsync(async () => (await jsm.streams.info("WIPED").catch(() => undefined))?.state.messages === 5, "the stream served with its 5 messages", 30_000);
  for (let i = 1; i <= 5; i++) assert.equal(new TextDecoder().decode((await jsm.streams.getMessage("WIPED", { seq: i }))!.data), `m${i}`);
  await waitUntil(() => /stream "ONLYK" of account \$G is placed here only .* made again empty/.test(k.output()), "k saying ONLYK's copy was made again empty");
  // k catches up as a follower, and the stream takes writes.
  await waitUntil(() => placed()?.isr?.[0]?.includes("k") === true, "k back in sync", 30_000);
  assert.equal((await js.publish("wiped.x", "m6")).seq, 6);
});
