/**
 * Replication within a small max_payload: a follower's fetch answer travels
 * over a route, and a route refuses a message past its node's max_payload
 * (closing the route, as nats-server does). A cluster configured with
 * max_payload below a fetch answer's size must still replicate: followers
 * ask for answers that fit.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";

const MAX_PAYLOAD = 16 * 1024;

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("repl-payload", { maxPayload: MAX_PAYLOAD }, () => clients.closeAll());

test("with max_payload 16 KiB, a round of 48 publishes of 12 KiB (576 KiB) reaches every replica and is acknowledged", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "SMALL", subjects: ["small.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("SMALL")), "a copy on every node");
  const js = jetstream(nc);
  const body = (i: number): Uint8Array => new Uint8Array(12 * 1024).fill(i);
  // All in flight at once: the leader writes them as one round, and a follower's fetch would carry all of it.
  const acks = await Promise.all(Array.from({ length: 48 }, (_, i) => js.publish(`small.${i}`, body(i + 1), { timeout: 20_000 })));
  assert.deepEqual(acks.map((a) => a.seq).sort((x, y) => x - y), Array.from({ length: 48 }, (_, i) => i + 1));
  for (const n of nodes) {
    const log = n.jetstream!.streams.get("SMALL")!.partitions[0];
    assert.equal(log.state().lastSeq, 48, `${n.cluster!.options.serverName} has every acknowledged message`);
    for (const seq of [1, 24, 48]) {
      const m = (await log.get(seq))!;
      assert.deepEqual(m.data, Buffer.from(body(Number(m.subject.slice("small.".length)) + 1)), `${n.cluster!.options.serverName}'s copy of ${seq}`);
    }
  }
});

test("with max_payload 16 KiB, a stream of 48 messages of 12 KiB moves to another node whole", async () => {
  const nc = await clients.open(nodes[1].url);
  const jsm = await jetstreamManager(nc);
  const cfg = { name: "MOVED", subjects: ["moved.>"], placement: { cluster: "", tags: ["node:a"] } };
  await jsm.streams.add(cfg);
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.leaderOf("$G", "MOVED") === "a"), "the placement on every node");
  const js = jetstream(nc);
  for (let i = 0; i < 48; i++) await js.publish(`moved.${i}`, new Uint8Array(12 * 1024).fill(i + 1));
  const info = await jsm.streams.info("MOVED");
  await jsm.streams.update("MOVED", { ...info.config, placement: { cluster: "", tags: ["node:c"] } });
  const [a, , c] = nodes;
  await waitUntil(() => nodes.every((x) => x.cluster!.placements.get("$G", "MOVED")?.placement.leaders[0] === "c" && x.cluster!.placements.get("$G", "MOVED")?.placement.moving === undefined), "the move to finish everywhere", 30_000);
  await waitUntil(() => !a.jetstream!.streams.has("MOVED"), "a to delete its copy");
  const log = c.jetstream!.streams.get("MOVED")!.partitions[0];
  assert.equal(log.state().messages, 48);
  for (const seq of [1, 24, 48]) assert.deepEqual((await log.get(seq))!.data, Buffer.from(new Uint8Array(12 * 1024).fill(seq)));
});

test("with max_payload 16 KiB, a consumer with 3,000 unacknowledged deliveries is copied whole to every follower (its pages fit the route)", async () => {
  const nc = await clients.open(nodes[2].url);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "PENDING", subjects: ["pending.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("PENDING")), "a copy on every node");
  const js = jetstream(nc);
  for (let i = 0; i < 3000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, k) => js.publish(`pending.${i + k}`, "x")));
  await jsm.consumers.add("PENDING", { durable_name: "slow", ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const consumer = await js.consumers.get("PENDING", "slow");
  let delivered = 0;
  while (delivered < 3000) {
    const batch = await consumer.fetch({ max_messages: 1000, expires: 5000 });
    for await (const _ of batch) delivered++;
  }
  // Nothing acknowledged: 3,000 pending deliveries, about 120 KB as a copy, more than one answer may carry.
  const followers = nodes.filter((n) => n.cluster!.options.serverName !== placedLeader(n, "PENDING"));
  assert.equal(followers.length, 2);
  await waitUntil(
    () => followers.every((f) => f.jetstream!.streams.get("PENDING")!.replicaConsumers?.find((c) => c.name === "slow")?.state.pending.length === 3000),
    "every follower's copy of the consumer to hold 3,000 pending deliveries",
    30_000,
  );
});

function placedLeader(n: NagareServer, stream: string): string | undefined {
  return n.cluster!.placements.get("$G", stream)?.placement.leaders[0];
}

test("with max_payload 16 KiB, a move whose deleted sequences do not fit the target's max_payload is cancelled: the stream stays whole where it was, and works", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  // One message kept per subject: every older one is deleted inside the log, as a KV bucket's updates do.
  const cfg = { name: "GAPPY", subjects: ["gappy.>"], max_msgs_per_subject: 1, placement: { cluster: "", tags: ["node:b"] } };
  await jsm.streams.add(cfg);
  await waitUntil(() => nodes.every((n) => placedLeader(n, "GAPPY") === "b"), "the placement on every node");
  const js = jetstream(nc);
  // The first message stays, so what its subject's updates delete lies inside the log, not below its start.
  await js.publish("gappy.first", "kept");
  for (let i = 0; i < 16_000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, k) => js.publish(`gappy.${(i + k) % 2}`, `v${i + k}`)));
  const info = await jsm.streams.info("GAPPY");
  assert.equal(info.state.messages, 3);
  // The target's routes stay up throughout (before, the freeze answer closed its route to the leader).
  let routeChanges = 0;
  const off = nodes[2].routes!.onChange(() => routeChanges++);
  await jsm.streams.update("GAPPY", { ...info.config, placement: { cluster: "", tags: ["node:c"] } });
  // About 16,000 deleted sequences (some 95 KB as a list, past the 80 KiB the target's route takes): refused by the frozen
  // leader, so the move is cancelled.
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", "GAPPY")?.placement.moving === undefined && placedLeader(n, "GAPPY") === "b"), "the move to be cancelled everywhere", 30_000);
  off();
  assert.equal(routeChanges, 0, "no route of the target closed");
  const after = await jsm.streams.info("GAPPY");
  assert.equal(after.state.messages, 3);
  assert.equal(after.state.last_seq, 16_001);
  assert.equal((await js.publish("gappy.0", "more")).seq, 16_002, "the stream takes writes again");
});

/** Publishes one message on each of `n` subjects `<prefix>.<i>`, then a second on `<prefix>.0`: a last_per_subject consumer starts with `n` sequences to deliver. */
async function onSubjects(js: ReturnType<typeof jetstream>, prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, k) => js.publish(`${prefix}.${i + k}`, `v${i + k}`)));
  await js.publish(`${prefix}.0`, "again");
}

test("with max_payload 16 KiB, a last_per_subject consumer over 20,000 subjects (its list to deliver some 120 KB, past the 80 KiB a route takes) moves with its stream at its state, and delivers each subject's last message there", async () => {
  const nc = await clients.open(nodes[0].url);
  const jsm = await jetstreamManager(nc);
  const cfg = { name: "LASTS", subjects: ["lasts.>"], placement: { cluster: "", tags: ["node:a"] } };
  await jsm.streams.add(cfg);
  await waitUntil(() => nodes.every((n) => placedLeader(n, "LASTS") === "a"), "the placement on every node");
  const js = jetstream(nc);
  await onSubjects(js, "lasts", 20_000);
  await jsm.consumers.add("LASTS", { durable_name: "lps", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.LastPerSubject, filter_subject: "lasts.>" });
  const before = await jsm.consumers.info("LASTS", "lps");
  assert.equal(before.num_pending, 20_000);
  const info = await jsm.streams.info("LASTS");
  await jsm.streams.update("LASTS", { ...info.config, placement: { cluster: "", tags: ["node:c"] } });
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", "LASTS")?.placement.moving === undefined && placedLeader(n, "LASTS") === "c"), "the move to finish everywhere", 30_000);
  await waitUntil(() => !nodes[0].jetstream!.streams.has("LASTS"), "a to delete its copy");
  assert.equal((await jsm.consumers.info("LASTS", "lps")).num_pending, 20_000);
  const seen = new Map<string, string>();
  const consumer = await js.consumers.get("LASTS", "lps");
  while (seen.size < 20_000) {
    for await (const m of await consumer.fetch({ max_messages: 1000, expires: 5000 })) {
      assert.equal(seen.has(m.subject), false, `${m.subject} delivered twice`);
      seen.set(m.subject, m.string());
      m.ack();
    }
  }
  assert.equal(seen.get("lasts.0"), "again");
  assert.equal(seen.get("lasts.19999"), "v19999");
});

test("with max_payload 16 KiB, a last_per_subject consumer over 20,000 subjects is copied whole to every follower", async () => {
  const nc = await clients.open(nodes[1].url);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "LASTS3", subjects: ["lasts3.>"], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => n.jetstream!.streams.has("LASTS3")), "a copy on every node");
  await onSubjects(jetstream(nc), "lasts3", 20_000);
  await jsm.consumers.add("LASTS3", { durable_name: "lps", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.LastPerSubject, filter_subject: "lasts3.>" });
  const followers = nodes.filter((n) => n.cluster!.options.serverName !== placedLeader(n, "LASTS3"));
  assert.equal(followers.length, 2);
  await waitUntil(
    () => followers.every((f) => f.jetstream!.streams.get("LASTS3")!.replicaConsumers?.find((c) => c.name === "lps")?.state.initial?.length === 20_000),
    "every follower's copy of the consumer to hold its 20,000 sequences to deliver",
    30_000,
  );
});
