/**
 * Moving a JetStream stream to another node (streams/stream-move.ts) in a
 * three-node cluster with one real etcd, judged by the official v3 client:
 * a STREAM.UPDATE whose placement the leader no longer satisfies moves the
 * stream while a publisher keeps publishing with acks; every acknowledged
 * message is on the new leader exactly once at its sequence, deleted
 * sequences stay deleted, the old copy is gone and every node keeps serving.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startJetStreamCluster, uniqueCluster } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError } from "@nats-io/jetstream";
import { header, parseHeaders } from "../src/streams/headers.js";
import { decodeBatch, encodeBatch } from "../src/streams/copy-batch.js";
import { runJsCommand } from "../src/cli/js-commands.js";
import { captured } from "./helpers/cli.js";

let etcd: EtcdHarness;
let dir: string;
const nodes: NagareServer[] = [];
let clusterName: string;

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-move-"));
  clusterName = uniqueCluster("move");
  nodes.push(...(await startJetStreamCluster({ etcd: etcd.endpoint, dir, cluster: clusterName })));
});

const clients = v3Clients();
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

after(async () => {
  await clients.closeAll();
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a stream moved by STREAM.UPDATE with a new placement while a publisher keeps publishing loses nothing", async (t) => {
  const [a, b, c] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  const cfg = { name: "moved", subjects: ["moved.>"], placement: { cluster: "", tags: ["node:a"] } };
  await jsmA.streams.add(cfg);
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.leaderOf("$G", "moved") === "a"), "the placement on every node");

  // Publishes through b (neither leader nor target), each with a msg id, retried until acknowledged: id -> sequence acknowledged.
  const jsB = jetstream(await client(b), { timeout: 2000 });
  const acked = new Map<string, number>();
  let refusedWhileMoving = 0;
  let n = 0;
  let stopped = false;
  const publishOne = async (): Promise<void> => {
    const id = `m${n}`;
    const subject = `moved.${n++ % 7}`;
    // A move that never finishes must fail the test, not spin: each message gets a deadline.
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (stopped || Date.now() > deadline) throw new Error(`${id} was not acknowledged`);
      try {
        const ack = await jsB.publish(subject, id, { msgID: id });
        acked.set(id, ack.seq);
        return;
      } catch (err) {
        if (err instanceof JetStreamApiError && /moving/.test(err.message)) refusedWhileMoving++;
        // Refused while frozen, or dropped by the target in the instant of the flip: the same id again.
      }
    }
  };
  for (let i = 0; i < 300; i++) await publishOne();
  // Gaps the copy must reproduce: a leading one and interior ones.
  await jsmA.streams.purge("moved", { seq: 11 });
  for (const seq of [50, 51, 52, 200]) assert.equal(await jsmA.streams.deleteMessage("moved", seq), true);
  const deleted = new Set([...Array.from({ length: 10 }, (_, i) => i + 1), 50, 51, 52, 200]);

  let publishing = true;
  const publisher = (async () => {
    while (publishing) await publishOne();
  })();
  t.after(() => {
    stopped = true;
    return publisher.catch(() => undefined);
  });

  // Moved through c (the target), by the NATS way: an update whose placement the leader lacks.
  const jsmC = await jetstreamManager(await client(c));
  const info = await jsmC.streams.info("moved");
  await jsmC.streams.update("moved", { ...info.config, placement: { cluster: "", tags: ["node:c"] } });
  await waitUntil(() => nodes.every((x) => x.cluster!.placements.get("$G", "moved")?.placement.leaders[0] === "c"), "the placement to name c everywhere", 30_000);
  await waitUntil(() => !a.jetstream!.streams.has("moved"), "a to delete its copy");
  // Keep publishing for a while after the flip.
  const afterFlip = n + 100;
  await waitUntil(() => n >= afterFlip, "publishes after the flip", 30_000);
  publishing = false;
  await publisher;

  const p = c.cluster!.placements.get("$G", "moved")!.placement;
  assert.deepEqual(p.leaders, ["c"]);
  assert.equal(p.moving, undefined);
  assert.equal(b.jetstream!.streams.has("moved"), false);
  const s = c.jetstream!.streams.get("moved")!;
  assert.equal(s.frozen, false);
  assert.equal(s.ledHere, null);

  // Every acknowledged message is on c, at its sequence, exactly once; deleted sequences stay deleted.
  const log = s.partitions[0];
  const seen = new Map<string, number>();
  for (let from = 1; ; ) {
    const batch = await log.scan(from, { maxMessages: 1000 });
    if (batch.length === 0) break;
    for (const m of batch) {
      const id = header(parseHeaders(m.headers!, 0, m.headers!.length), "Nats-Msg-Id")!;
      assert.equal(seen.has(id), false, `${id} stored twice`);
      seen.set(id, m.seq);
      assert.equal(m.data.toString(), id);
    }
    from = batch[batch.length - 1].seq + 1;
  }
  for (const [id, seq] of acked) {
    if (deleted.has(seq)) {
      assert.equal(seen.has(id), false, `deleted ${id} at ${seq} came back`);
      continue;
    }
    assert.equal(seen.get(id), seq, `${id} acknowledged at ${seq}`);
  }
  assert.equal(seen.size, acked.size - deleted.size, "nothing stored that was not acknowledged");
  const st = log.state();
  assert.equal(st.firstSeq, 11);
  assert.equal(st.lastSeq, Math.max(...acked.values()));

  // Through every node: info names c, publishes and gets work.
  let more = 0;
  for (const x of nodes) {
    const jsm = await jetstreamManager(await client(x));
    const i = await jsm.streams.info("moved");
    assert.equal(i.cluster?.leader, "c");
    assert.equal(i.state.messages, seen.size + more++);
    const ack = await jetstream(await client(x)).publish("moved.x", "after");
    assert.equal((await jsm.streams.getMessage("moved", { seq: ack.seq }))!.string(), "after");
  }
  t.diagnostic(`publishes refused while the stream was frozen: ${refusedWhileMoving}`);

  // Moved again, through a: the same messages at the same sequences on b, with the same times (the copy keeps its
  // source's: these are from before the first move, and max_age and start times count from them).
  const source = c.jetstream!.streams.get("moved")!.partitions[0];
  const before = source.state();
  const snapshot = (await source.scan(1, { maxMessages: 10_000 })).map((m) => [m.seq, m.time, m.subject, m.data.toString()]);
  assert.ok((snapshot[0][1] as number) < Date.now() - 50, "the first messages are older than the second move");
  const again = await jsmA.streams.info("moved");
  await jsmA.streams.update("moved", { ...again.config, placement: { cluster: "", tags: ["node:b"] } });
  await waitUntil(() => nodes.every((x) => x.cluster!.placements.get("$G", "moved")?.placement.leaders[0] === "b") && !c.jetstream!.streams.has("moved"), "the second move", 30_000);
  const moved = b.jetstream!.streams.get("moved")!.partitions[0].state();
  assert.deepEqual([moved.firstSeq, moved.lastSeq, moved.messages, moved.deleted], [before.firstSeq, before.lastSeq, before.messages, before.deleted]);
  const copied = b.jetstream!.streams.get("moved")!.partitions[0];
  assert.deepEqual((await copied.scan(1, { maxMessages: 10_000 })).map((m) => [m.seq, m.time, m.subject, m.data.toString()]), snapshot);
  assert.deepEqual(copied.deletedSequences(1000), source.deletedSequences(1000));
  assert.equal((await jsmA.streams.getMessage("moved", { seq: 49 }))!.string(), "m48");
});

test("a move to a node that cannot be placed is refused and changes nothing", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "stay", subjects: ["stay.>"], placement: { cluster: "", tags: ["node:a"] } });
  const info = await jsm.streams.info("stay");
  await assert.rejects(jsm.streams.update("stay", { ...info.config, placement: { cluster: "", tags: ["node:nowhere"] } }), (err: Error) => /no suitable peers/.test(err.message));
  assert.deepEqual(a.cluster!.placements.get("$G", "stay")!.placement.leaders, ["a"]);
  assert.equal(a.cluster!.placements.get("$G", "stay")!.placement.moving, undefined);
});

test("a copy answer carries each message's sequence, time, subject, headers, key and data, and a Kafka batch whole; an error answer throws", () => {
  const msgs = [
    { seq: 7, time: 1700000000123, subject: "a.b", headers: Buffer.from("NATS/1.0\r\nX: 1\r\n\r\n"), key: null, data: Buffer.from("one") },
    { seq: 9, time: 1700000000456, subject: "c", headers: null, key: Buffer.from("k"), data: Buffer.alloc(0) },
    { format: 1, firstSeq: 10, count: 3, time: 1700000000789, subject: "k.t", bytes: Buffer.from("a kafka batch") },
  ];
  assert.deepEqual(decodeBatch(encodeBatch(msgs)), msgs);
  assert.deepEqual(decodeBatch(encodeBatch([])), []);
  assert.throws(() => decodeBatch(Buffer.from(JSON.stringify({ error: "not being moved" }))), /not being moved/);
  assert.throws(() => decodeBatch(encodeBatch(msgs).subarray(0, 30)), /short copy answer/);
});

test("nagare stream move --tag moves a stream through any node", async () => {
  const [a, , c] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "bycli", subjects: ["bycli.>"], placement: { cluster: "", tags: ["node:a"] } });
  const js = jetstream(await client(a));
  for (let i = 0; i < 20; i++) await js.publish(`bycli.${i}`, `v${i}`);
  const usage = await captured((io) => runJsCommand("stream", ["move", "bycli", "-s", c.url], io));
  assert.equal(usage.code, 2, usage.err);
  const r = await captured((io) => runJsCommand("stream", ["move", "bycli", "--tag", "node:b", "-s", c.url], io));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /placed on nodes tagged node:b: led by a/);
  await waitUntil(() => nodes.every((x) => x.cluster!.placements.get("$G", "bycli")?.placement.leaders[0] === "b") && !a.jetstream!.streams.has("bycli"), "the move to b", 30_000);
  const info = await jsm.streams.info("bycli");
  assert.equal(info.cluster?.leader, "b");
  assert.equal(info.state.messages, 20);
  assert.equal((await jsm.streams.getMessage("bycli", { seq: 20 }))!.string(), "v19");
});

/**
 * Moves stream `name` from a to b (`nagare stream move` through c) while b's requests to other nodes for which `lose`
 * says so are answered null, as a timeout is (a loaded leader's answer missing its time); resolves once the move flipped.
 */
async function moveToBLosing(name: string, lose: (subject: string) => boolean): Promise<void> {
  const [a, b, c] = nodes;
  const api = (b.jetstreams as unknown as { served: Map<string, { api: { clusterApi: { request: (node: string, subject: string, body: Uint8Array, ms: number) => Promise<Buffer | null> } } }> }).served.get("$G")!.api.clusterApi;
  const request = api.request.bind(api);
  api.request = (node, subject, body, ms) => (lose(subject) ? Promise.resolve(null) : request(node, subject, body, ms));
  try {
    const r = await captured((io) => runJsCommand("stream", ["move", name, "--tag", "node:b", "-s", c.url], io));
    assert.equal(r.code, 0, r.err);
    await waitUntil(() => nodes.every((x) => x.cluster!.placements.get("$G", name)?.placement.leaders[0] === "b") && !a.jetstream!.streams.has(name), "the move to b", 30_000);
  } finally {
    api.request = request;
  }
}

test("a move whose first copy request goes unanswered is tried again and completes, not cancelled", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "retried", subjects: ["retried.>"], placement: { cluster: "", tags: ["node:a"] } });
  const js = jetstream(await client(a));
  for (let i = 0; i < 20; i++) await js.publish(`retried.${i}`, `v${i}`);
  // The target's first copy request is lost (a loaded leader's answer missing its time): answered null, as a timeout is.
  let copies = 0;
  await moveToBLosing("retried", (subject) => subject === "$NG.MOVE.COPY.retried" && copies++ === 0);
  assert.ok(copies >= 2, `${copies} copy requests`);
  const info = await jsm.streams.info("retried");
  assert.equal(info.cluster?.leader, "b");
  assert.equal(info.state.messages, 20);
  assert.equal((await jsm.streams.getMessage("retried", { seq: 20 }))!.string(), "v19");
});

test("after the freeze, a tail copy request and a consumers request left unanswered are each tried again within the freeze: the move completes with its consumer", async () => {
  const [a] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "tailretried", subjects: ["tailretried.>"], placement: { cluster: "", tags: ["node:a"] } });
  await jsm.consumers.add("tailretried", { durable_name: "d", ack_policy: "explicit" as never });
  const js = jetstream(await client(a));
  for (let i = 0; i < 20; i++) await js.publish(`tailretried.${i}`, `v${i}`);
  const asked: string[] = [];
  let frozen = false;
  let lostTail = false;
  let lostConsumers = false;
  await moveToBLosing("tailretried", (subject) => {
    if (subject.startsWith("$NG.MOVE.")) asked.push(subject.split(".")[2]);
    if (subject === "$NG.MOVE.FREEZE.tailretried") frozen = true;
    // The first copy request after the freeze, and the first consumers request, are lost.
    if (frozen && !lostTail && subject === "$NG.MOVE.COPY.tailretried") return (lostTail = true);
    if (!lostConsumers && subject === "$NG.MOVE.CONSUMERS.tailretried") return (lostConsumers = true);
    return false;
  });
  assert.ok(lostTail && lostConsumers, `requests: ${asked.join(" ")}`);
  assert.deepEqual(asked.slice(asked.indexOf("FREEZE")), ["FREEZE", "COPY", "COPY", "CONSUMERS", "CONSUMERS"], "each lost request asked again, once");
  const info = await jsm.streams.info("tailretried");
  assert.equal(info.cluster?.leader, "b");
  assert.equal(info.state.messages, 20);
  assert.equal((await jsm.consumers.info("tailretried", "d")).num_pending, 20, "the consumer moved with its state");
});
