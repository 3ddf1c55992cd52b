/**
 * A confirmed ack (AckSync, a double ack) across a failover of a replicated
 * stream's leader (a real process, paused with SIGSTOP past its lease; two
 * embedded nodes; a real etcd). The follower that takes over adopts its
 * last copy of the consumers, which may predate the old leader's last
 * deliveries (followers copy a delivery within CONSUMERS_PARK_MS, a
 * confirmed ack at once). A client that asks again for the confirmation of
 * such a delivery (its first ask was lost with the old leader, as the fault
 * harness's reader does) reaches the new leader, whose consumer never made
 * that delivery: the ack changes nothing there, and confirming it would
 * leave the ack floor below an ack the client counts as confirmed
 * (docs/FAULTS.md, "a confirmed ack from a replaced leader"). It is not
 * confirmed; the message comes again, and that delivery's ack is.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { addStreamLedByK, startTwoNodesAndK, stopTwoNodesAndK, type NodeProcess, type TwoNodesAndK } from "./helpers/cluster.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";

let cluster: TwoNodesAndK | undefined;
let a: NagareServer;
let b: NagareServer;
let k: NodeProcess;
const conns: NatsConnection[] = [];

before(async () => {
  cluster = await startTwoNodesAndK("acktakeover");
  ({ a, b, k } = cluster);
});

after(() => stopTwoNodesAndK(cluster, k, conns));

const placed = (stream: string) => a.cluster!.placements.get("$G", stream)?.placement;

test("an ack of a delivery the new leader's adopted consumer never made is not confirmed; the message comes again and is confirmed then", async () => {
  const nc = await connect({ servers: a.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  const jsm = await jetstreamManager(nc);
  await addStreamLedByK(jsm, "TAKE", ["take.>"]);
  // Created means in the followers' copies too (with nothing delivered).
  await jsm.consumers.add("TAKE", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 30_000_000_000 });
  const js = jetstream(nc);
  for (let i = 1; i <= 3; i++) await js.publish("take.x", `m${i}`);

  // k delivers 1 and is paused at once: its followers' copies of the consumer predate the delivery (they take one
  // within CONSUMERS_PARK_MS of it unless an ack is confirmed).
  const consumer = await js.consumers.get("TAKE", "C");
  const first: JsMsg[] = [];
  for await (const m of await consumer.fetch({ max_messages: 1, expires: 5000 })) first.push(m);
  k.child.kill("SIGSTOP");
  assert.equal(first.length, 1);
  const m = first[0];
  assert.equal(m.seq, 1);

  await waitUntil(() => placed("TAKE")?.leaders[0] !== "k", "a new leader", 30_000);
  const leader = placed("TAKE")!.leaders[0] === "a" ? a : b;
  await waitUntil(() => leader.jetstream!.streams.get("TAKE")?.consumers.get("C") !== undefined, "the new leader's consumer adopted", 30_000);
  const adopted = await jsm.consumers.info("TAKE", "C");

  // The client asks again for the confirmation its first ask would have got from k (the fault harness's reader does).
  const confirmed = await m.ackAck({ timeout: 3000 }).catch(() => false);
  const now = await jsm.consumers.info("TAKE", "C");
  assert.ok(
    !confirmed || now.ack_floor.stream_seq >= m.seq,
    `the ack of ${m.seq} was confirmed, but the ack floor is ${now.ack_floor.stream_seq} (the adopted consumer had delivered up to ${adopted.delivered.stream_seq})`,
  );

  // Delivered again by the new leader (unless its copy had the delivery), and that delivery's ack is confirmed.
  if (!confirmed) {
    const again: JsMsg[] = [];
    await waitUntilAsync(async () => {
      for await (const x of await consumer.fetch({ max_messages: 1, expires: 1000 })) again.push(x);
      return again.length > 0;
    }, "the message delivered again", 20_000);
    assert.equal(again[0].seq, 1);
    assert.equal(await again[0].ackAck({ timeout: 5000 }), true);
    assert.ok((await jsm.consumers.info("TAKE", "C")).ack_floor.stream_seq >= 1);
  }
});
