/**
 * Moving a JetStream stream with consumers (streams/stream-move.ts) in a
 * three-node cluster with one real etcd, judged by the official clients:
 * consumers move with the stream at their exact state (delivered and ack
 * floors, pending deliveries with their counts); after the move nothing
 * acknowledged is delivered again, what was delivered and not acknowledged
 * is redelivered by the new leader once its ack wait runs out, with its
 * delivery count carried on, and clients that keep consuming through
 * another node during the move see every message exactly once.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NagareServer } from "../src/server/server.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startJetStreamCluster, uniqueCluster } from "./helpers/cluster.js";
import { v3Clients, waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, JetStreamApiError, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import * as v2 from "nats";
import { BATCH_BYTES, consumersAnswer, readConsumers, type ConsumerCopy } from "../src/streams/stream-move.js";

let etcd: EtcdHarness;
let dir: string;
const nodes: NagareServer[] = [];

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-move-consumers-"));
  nodes.push(...(await startJetStreamCluster({ etcd: etcd.endpoint, dir, cluster: uniqueCluster("movec") })));
});

const clients = v3Clients();
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

after(async () => {
  await clients.closeAll();
  await Promise.all(nodes.map((n) => n.close()));
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

const MS = 1_000_000;

function node(name: string): NagareServer {
  return nodes["abc".indexOf(name)];
}

async function place(jsm: JetStreamManager, cfg: Record<string, unknown> & { name: string }, on: string): Promise<void> {
  await jsm.streams.add({ ...cfg, placement: { cluster: "", tags: [`node:${on}`] } });
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.leaderOf("$G", cfg.name) === on), `${cfg.name} placed on ${on} everywhere`);
}

/** Moves `stream` from `from` to `to` (STREAM.UPDATE with new tags) and waits until every node names `to` and `from` dropped its copy. */
async function move(jsm: JetStreamManager, stream: string, from: string, to: string): Promise<void> {
  const info = await jsm.streams.info(stream);
  await jsm.streams.update(stream, { ...info.config, placement: { cluster: "", tags: [`node:${to}`] } });
  await waitUntil(
    () => nodes.every((x) => x.cluster!.placements.get("$G", stream)?.placement.leaders[0] === to && x.cluster!.placements.get("$G", stream)?.placement.moving === undefined),
    `${stream} to be led by ${to} everywhere`,
    30_000,
  );
  await waitUntil(() => !node(from).jetstream!.streams.has(stream), `${from} to drop its copy of ${stream}`, 30_000);
}

/** Consumer info without what changes by itself (the time of the answer, requests waiting now). */
function stateOf(info: object): Record<string, unknown> {
  const out = { ...(info as Record<string, unknown>) };
  delete out.ts;
  delete out.num_waiting;
  return out;
}

test("a durable pull consumer moves at its state: acked messages never come again, unacked ones come again after ack_wait with their delivery counts", async () => {
  const [a, b] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  await place(jsmA, { name: "pulled", subjects: ["pulled.>"] }, "a");
  const jsB = jetstream(await client(b), { timeout: 10_000 });
  for (let i = 1; i <= 100; i++) await jsB.publish(`pulled.${i % 5}`, `m${i}`);
  const ackWaitMs = 3000;
  await jsmA.consumers.add("pulled", { durable_name: "d", ack_policy: AckPolicy.Explicit, ack_wait: ackWaitMs * MS });
  const consumer = await jsB.consumers.get("pulled", "d");

  // 1..20 acknowledged (confirmed), 21..30 delivered and not acknowledged; 21..25 twice (a NAK in between).
  // `at`: when the fetch was sent, before the server delivered (the ack wait counts from the delivery).
  const lastDelivered = new Map<number, { count: number; at: number }>();
  const fetchAll = async (n: number): Promise<JsMsg[]> => {
    const out: JsMsg[] = [];
    const at = Date.now();
    for await (const m of await consumer.fetch({ max_messages: n, expires: 5000 })) {
      out.push(m);
      lastDelivered.set(m.seq, { count: m.info.deliveryCount, at });
    }
    assert.equal(out.length, n);
    return out;
  };
  const first = await fetchAll(30);
  assert.deepEqual(
    first.map((m) => m.seq),
    Array.from({ length: 30 }, (_, i) => i + 1),
  );
  for (const m of first.slice(0, 20)) assert.equal(await m.ackAck(), true);
  for (const m of first.slice(20, 25)) m.nak();
  const again = await fetchAll(5);
  assert.deepEqual(
    again.map((m) => [m.seq, m.info.deliveryCount]),
    [21, 22, 23, 24, 25].map((s) => [s, 2]),
  );

  const before = await jsmA.consumers.info("pulled", "d");
  assert.deepEqual([before.num_ack_pending, before.num_redelivered, before.num_pending, before.ack_floor.stream_seq, before.delivered.stream_seq], [10, 5, 70, 20, 30]);

  await move(jsmA, "pulled", "a", "c");
  const c = node("c");
  const moved = c.jetstream!.streams.get("pulled")!;
  assert.equal(moved.frozen, false);
  assert.ok(moved.consumers.has("d"), "the consumer lives on the new leader");
  // The same consumer, through every node: config, created, delivered, ack floor, pending and redelivered counts.
  for (const x of nodes) {
    const after = await (await jetstreamManager(await client(x))).consumers.info("pulled", "d");
    assert.deepEqual(stateOf(after), stateOf(before));
  }

  // What comes now: 21..30 again (after their ack wait, one delivery more than before) and 31..100 once; never 1..20.
  const seen = new Map<number, number>();
  await waitUntilAsync(
    async () => {
      for await (const m of await consumer.fetch({ max_messages: 50, expires: 1000 })) {
        assert.ok(m.seq > 20, `acknowledged ${m.seq} delivered again`);
        assert.equal(seen.has(m.seq), false, `${m.seq} delivered twice after the move`);
        seen.set(m.seq, m.info.deliveryCount);
        const earlier = lastDelivered.get(m.seq);
        if (earlier !== undefined) {
          assert.equal(m.info.deliveryCount, earlier.count + 1, `delivery count of ${m.seq}`);
          // The new leader must not redeliver before the ack wait has run out (not at once, as after a restart).
          assert.ok(Date.now() - earlier.at >= ackWaitMs, `${m.seq} redelivered ${Date.now() - earlier.at} ms after its delivery`);
        } else assert.equal(m.info.deliveryCount, 1);
        assert.equal(await m.ackAck(), true);
      }
      return seen.size === 80;
    },
    "every unacknowledged and new message",
    30_000,
  );
  assert.deepEqual(
    [...seen.keys()].sort((x, y) => x - y),
    Array.from({ length: 80 }, (_, i) => i + 21),
  );
  const done = await jsmA.consumers.info("pulled", "d");
  assert.deepEqual([done.num_ack_pending, done.num_pending, done.ack_floor.stream_seq, done.delivered.stream_seq], [0, 0, 100, 100]);
  // New messages after the move reach the consumer through its new leader.
  await jsB.publish("pulled.new", "after");
  const next = await consumer.next({ expires: 5000 });
  assert.equal(next?.seq, 101);
  assert.equal(next?.string(), "after");

  // Moved on again (the consumer now one a move created), with 101 delivered and not acknowledged: the same state on a.
  const twice = await jsmA.consumers.info("pulled", "d");
  await move(jsmA, "pulled", "c", "a");
  assert.deepEqual(stateOf(await jsmA.consumers.info("pulled", "d")), stateOf(twice));
  const redelivered = await consumer.next({ expires: 10_000 });
  assert.deepEqual([redelivered?.seq, redelivered?.info.deliveryCount], [101, 2]);
  redelivered!.ack();
});

test("a work-queue stream moves while a client consumes through another node and a publisher keeps publishing: every message delivered once, acked ones gone", async () => {
  const [a, b] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  await place(jsmA, { name: "queue", subjects: ["queue.>"], retention: "workqueue" }, "a");
  await jsmA.consumers.add("queue", { durable_name: "worker", ack_policy: AckPolicy.Explicit });

  const ncB = await client(b);
  const jsB = jetstream(ncB, { timeout: 10_000 });
  let published = 0;
  let stopped = false;
  const publishOne = async (): Promise<void> => {
    const id = `q${++published}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (stopped || Date.now() > deadline) throw new Error(`${id} was not acknowledged`);
      try {
        await jsB.publish(`queue.${published % 3}`, id, { msgID: id });
        return;
      } catch (err) {
        // Refused while frozen (retryable), or dropped in the instant of the flip: the same id again.
        if (!(err instanceof JetStreamApiError) && !/timeout|TIMEOUT/i.test((err as Error).message)) throw err;
      }
    }
  };

  // The client consumes through b, confirming every ack; a message delivered twice would be seen.
  const deliveries = new Map<string, number>();
  let duplicates = 0;
  let redelivered = 0;
  const consumer = await jsB.consumers.get("queue", "worker");
  const messages = await consumer.consume({ max_messages: 20, expires: 10_000 });
  const consuming = (async () => {
    for await (const m of messages) {
      const id = m.string();
      if (deliveries.has(id)) duplicates++;
      if (m.info.deliveryCount > 1) redelivered++;
      deliveries.set(id, m.seq);
      // A confirmation lost in a move is retried: the second ack finds the message acknowledged and is confirmed.
      for (let i = 0; ; i++) {
        const ok = await m.ackAck().catch(() => false);
        if (ok) break;
        if (i >= 3) throw new Error(`the ack of ${id} was never confirmed`);
      }
    }
  })();

  for (let i = 0; i < 150; i++) await publishOne();
  await waitUntil(() => deliveries.size >= 100, "the consumer to be under way");
  let publishing = true;
  const publisher = (async () => {
    while (publishing) await publishOne();
  })();
  try {
    await move(jsmA, "queue", "a", "c");
    const afterFlip = published + 100;
    await waitUntil(() => published >= afterFlip, "publishes after the move", 30_000);
    publishing = false;
    await publisher;
    await waitUntil(() => deliveries.size === published, `all ${published} messages consumed (${deliveries.size} so far)`, 30_000);
  } finally {
    stopped = true;
    publishing = false;
    await publisher.catch(() => undefined);
    messages.stop();
    await consuming.catch(() => undefined);
  }
  assert.equal(duplicates, 0, "messages delivered twice");
  assert.equal(redelivered, 0, "redeliveries");
  const jsmB = await jetstreamManager(ncB);
  // Every acknowledged message is gone from the work queue, on the new leader.
  await waitUntilAsync(async () => (await jsmB.streams.info("queue")).state.messages === 0, "the work queue to empty");
  const info = await jsmB.streams.info("queue");
  assert.equal(info.cluster?.leader, "c");
  assert.equal(info.state.last_seq, published);
  const ci = await jsmB.consumers.info("queue", "worker");
  assert.deepEqual([ci.num_ack_pending, ci.num_pending, ci.ack_floor.stream_seq, ci.delivered.stream_seq], [0, 0, published, published]);
});

test("work-queue and interest streams keep their semantics across a move: acked messages stay gone, unacked ones come again", async () => {
  const [a] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  const jsA = jetstream(await client(a), { timeout: 10_000 });
  for (const retention of ["workqueue", "interest"] as const) {
    const name = `kept-${retention}`;
    await place(jsmA, { name, subjects: [`${name}.>`], retention }, "a");
    await jsmA.consumers.add(name, { durable_name: "w", ack_policy: AckPolicy.Explicit, ack_wait: 2000 * MS });
    for (let i = 1; i <= 50; i++) await jsA.publish(`${name}.x`, `v${i}`);
    const consumer = await jsA.consumers.get(name, "w");
    const got: JsMsg[] = [];
    for await (const m of await consumer.fetch({ max_messages: 30, expires: 5000 })) got.push(m);
    assert.equal(got.length, 30);
    for (const m of got.slice(0, 20)) assert.equal(await m.ackAck(), true);
    await waitUntilAsync(async () => (await jsmA.streams.info(name)).state.messages === 30, `${name}: acked messages deleted`);

    await move(jsmA, name, "a", "b");
    const info = await jsmA.streams.info(name);
    assert.deepEqual([info.cluster?.leader, info.state.messages, info.state.first_seq, info.state.last_seq], ["b", 30, 21, 50]);
    const seen: Array<[number, number]> = [];
    await waitUntilAsync(
      async () => {
        for await (const m of await consumer.fetch({ max_messages: 30, expires: 1000 })) {
          seen.push([m.seq, m.info.deliveryCount]);
          assert.equal(await m.ackAck(), true);
        }
        return seen.length >= 30;
      },
      `${name}: the rest`,
      20_000,
    );
    assert.deepEqual(
      seen.sort((x, y) => x[0] - y[0]),
      Array.from({ length: 30 }, (_, i): [number, number] => [i + 21, i + 21 <= 30 ? 2 : 1]),
    );
    await waitUntilAsync(async () => (await jsmA.streams.info(name)).state.messages === 0, `${name}: empty once everything is acked`);
  }
});

test("nats v2: a push consumer moves with its stream and goes on delivering, consumer sequences unbroken; an ordered consumer carries on without being recreated", async () => {
  const [a, b] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  await place(jsmA, { name: "pushed", subjects: ["pushed.>"] }, "a");
  const v2nc = await v2.connect({ servers: b.url });
  try {
    const js = v2nc.jetstream();
    const sc = v2.StringCodec();
    for (let i = 1; i <= 50; i++) await js.publish(`pushed.${i}`, sc.encode(`p${i}`));
    const opts = v2.consumerOpts();
    opts.durable("pusher");
    opts.deliverTo(v2.createInbox());
    opts.ackExplicit();
    opts.manualAck();
    opts.deliverAll();
    const sub = await js.subscribe("pushed.>", opts);
    const got: Array<[number, number, number]> = [];
    const receiving = (async () => {
      for await (const m of sub) {
        got.push([m.info.streamSequence, m.info.deliverySequence, m.info.redeliveryCount]);
        await m.ackAck();
        if (got.length === 100) break;
      }
    })();

    // An ordered consumer (ephemeral, on b) reading the same stream.
    const jsB = jetstream(await client(b));
    const ordered = await jsB.consumers.get("pushed");
    const orderedSeqs: number[] = [];
    let recreated = 0;
    const oc = await ordered.consume();
    void (async () => {
      for await (const s of oc.status()) if (s.type === "ordered_consumer_recreated") recreated++;
    })();
    const orderedDone = (async () => {
      for await (const m of oc) {
        orderedSeqs.push(m.seq);
        if (orderedSeqs.length === 100) break;
      }
    })();

    await waitUntil(() => got.length === 50 && orderedSeqs.length === 50, "the first 50 messages on both");
    await move(jsmA, "pushed", "a", "c");
    for (let i = 51; i <= 100; i++) await js.publish(`pushed.${i}`, sc.encode(`p${i}`));
    await receiving;
    await orderedDone;
    assert.deepEqual(
      got,
      Array.from({ length: 100 }, (_, i): [number, number, number] => [i + 1, i + 1, 1]),
    );
    assert.deepEqual(
      orderedSeqs,
      Array.from({ length: 100 }, (_, i) => i + 1),
    );
    assert.equal(recreated, 0, "the ordered consumer was recreated");
    const ci = await jsmA.consumers.info("pushed", "pusher");
    assert.deepEqual([ci.delivered.consumer_seq, ci.ack_floor.stream_seq, ci.num_ack_pending], [100, 100, 0]);
    oc.stop();
    sub.unsubscribe();
  } finally {
    await v2nc.close();
  }
});

test("a pull request waiting on the old leader during the move is handed to the new leader, and served there", async () => {
  const [a, b] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  await place(jsmA, { name: "waiting", subjects: ["waiting.>"] }, "a");
  await jsmA.consumers.add("waiting", { durable_name: "p", ack_policy: AckPolicy.Explicit });
  const jsB = jetstream(await client(b));
  const consumer = await jsB.consumers.get("waiting", "p");
  // Nothing to deliver yet: the request waits on a, and would wait out its 20 s if a kept it (the client sends it once read from).
  const fetched = await consumer.fetch({ max_messages: 1, expires: 20_000 });
  const got: string[] = [];
  const reading = (async () => {
    for await (const m of fetched) {
      got.push(m.string());
      m.ack();
    }
  })();
  const onA = a.jetstream!.streams.get("waiting")!.consumers.get("p")!;
  await waitUntil(() => onA.info().num_waiting === 1, "the pull request to wait on a");
  await move(jsmA, "waiting", "a", "c");
  const asked = Date.now();
  await jsB.publish("waiting.x", "hello");
  await reading;
  assert.deepEqual(got, ["hello"]);
  assert.ok(Date.now() - asked < 10_000, "served by the new leader, not after the request expired");
});

test("the consumers answer is cut into pages below a route's max payload, however many consumers and pending acks, and nothing is lost in the cut", () => {
  const pending = (n: number, from: number): Array<[number, number, number, number, number]> => Array.from({ length: n }, (_, i) => [from + i, from + i, 1700000000000 + i, 1 + (i % 3), i % 2 === 0 ? 0 : 25_000]);
  const taken: ConsumerCopy[] = [];
  for (let i = 0; i < 300; i++) {
    taken.push({ name: `c${String(i).padStart(3, "0")}`, config: { durable_name: `c${i}`, ack_policy: "explicit" } as never, created: new Date(0).toISOString(), state: { dseq: i, cursor: i, deliveredS: i, ackFloorS: 0, ackFloorC: 0, lastDelivery: 0, pending: pending(i === 7 ? 20_000 : i % 5, 1) } });
  }
  const back = new Map<string, number>();
  let pages = 0;
  let total = 0;
  for (let at: { consumer: number; pending: number } | null = { consumer: 0, pending: 0 }; at !== null; pages++) {
    const r = consumersAnswer(taken, at);
    const size = JSON.stringify(r).length;
    assert.ok(size < 512 * 1024, `a page of ${size} bytes`);
    assert.ok(r.parts.length > 0);
    for (const part of r.parts) {
      if (part.state !== undefined) {
        assert.equal(back.has(part.name), false);
        back.set(part.name, 0);
      }
      back.set(part.name, back.get(part.name)! + part.pending.length);
      total += part.pending.length;
    }
    at = r.next;
  }
  assert.ok(pages > 2, `${pages} pages`);
  assert.equal(back.size, 300);
  for (const c of taken) assert.equal(back.get(c.name), c.state.pending.length, c.name);
  assert.equal(total, taken.reduce((n, c) => n + c.state.pending.length, 0));
  assert.ok(BATCH_BYTES < 512 * 1024);
});

test("a consumer's long initial and max_deliver lists are cut into pages too, and read back whole; an asker of an earlier version gets them whole in the state", async () => {
  const seqs = (n: number, from: number): number[] => Array.from({ length: n }, (_, i) => from + 3 * i);
  const taken: ConsumerCopy[] = [
    // A last_per_subject consumer over 200,000 subjects that delivered nothing yet: its initial list alone is about 1.6 MB.
    { name: "a", config: { durable_name: "a", ack_policy: "explicit" } as never, created: new Date(0).toISOString(), state: { dseq: 0, cursor: 1, deliveredS: 0, ackFloorS: 0, ackFloorC: 0, lastDelivery: 0, pending: [], initial: seqs(200_000, 1_000_000) } },
    { name: "b", config: { durable_name: "b", ack_policy: "explicit" } as never, created: new Date(0).toISOString(), state: { dseq: 9, cursor: 5000, deliveredS: 4999, ackFloorS: 2, ackFloorC: 2, lastDelivery: 7, pending: [[3, 3, 1700000000000, 2, 0]], initial: seqs(5000, 6000), maxedOut: seqs(10_000, 4) } },
    { name: "c", config: { durable_name: "c", ack_policy: "explicit" } as never, created: new Date(0).toISOString(), state: { dseq: 1, cursor: 2, deliveredS: 1, ackFloorS: 1, ackFloorC: 1, lastDelivery: 0, pending: [] } },
  ];
  const limit = 32 * 1024;
  let pages = 0;
  const back = await readConsumers(async (at) => {
    pages++;
    const answer = Buffer.from(JSON.stringify(consumersAnswer(taken, at, limit, true)));
    assert.ok(answer.length <= limit + 1024, `a page of ${answer.length} bytes`);
    return answer;
  });
  assert.deepEqual(back, taken);
  assert.ok(pages > 40, `${pages} pages`);
  // An asker that does not say it reads the lists in parts (a node of an earlier version) gets them in the state, as before.
  const first = consumersAnswer(taken, { consumer: 1, pending: 0 }, BATCH_BYTES, false).parts[0];
  assert.equal(first.state?.initial?.length, 5000);
  assert.equal(first.state?.maxedOut?.length, 10_000);
  assert.deepEqual(await readConsumers(async (at) => Buffer.from(JSON.stringify(consumersAnswer(taken.slice(1), at, BATCH_BYTES, false)))), taken.slice(1));
});

test("many consumers move, one with more pending acks than one page carries: all at their state", async () => {
  const [a, b] = nodes;
  const jsmA = await jetstreamManager(await client(a));
  await place(jsmA, { name: "crowd", subjects: ["crowd.>"] }, "a");
  const jsA = jetstream(await client(a), { timeout: 10_000 });
  // 4500 deliveries left unacknowledged: more than one page (4096) of one consumer's pending acks.
  const N = 5000;
  for (let i = 0; i < N; i += 250) await Promise.all(Array.from({ length: 250 }, (_, j) => jsA.publish("crowd.x", `m${i + j}`)));
  await jsmA.consumers.add("crowd", { durable_name: "big", ack_policy: AckPolicy.Explicit, max_ack_pending: N * 2 });
  for (let i = 0; i < 40; i++) await jsmA.consumers.add("crowd", { durable_name: `small${i}`, ack_policy: AckPolicy.Explicit, deliver_policy: "by_start_sequence" as never, opt_start_seq: i + 1 });
  const big = await jsA.consumers.get("crowd", "big");
  let n = 0;
  for await (const m of await big.fetch({ max_messages: N, expires: 20_000 })) {
    if (++n % 10 === 0) m.ack();
  }
  assert.equal(n, N);
  await waitUntilAsync(async () => (await jsmA.consumers.info("crowd", "big")).num_ack_pending === N - N / 10, "a tenth of the deliveries acked");
  const before = new Map<string, Record<string, unknown>>();
  for await (const ci of jsmA.consumers.list("crowd")) before.set(ci.name, stateOf(ci));
  assert.equal(before.size, 41);

  await move(jsmA, "crowd", "a", "b");
  const jsmB = await jetstreamManager(await client(b));
  const after = new Map<string, Record<string, unknown>>();
  for await (const ci of jsmB.consumers.list("crowd")) after.set(ci.name, stateOf(ci));
  assert.deepEqual(after, before);
  assert.equal(node("b").jetstream!.streams.get("crowd")!.consumers.size, 41);
});
