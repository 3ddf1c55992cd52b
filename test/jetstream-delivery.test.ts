/**
 * How deliveries are bounded and timed, against nats-server's behaviour:
 * a pull request's max_bytes (counted as nats-server counts it, ended with
 * `409 Message Size Exceeds MaxBytes`), pulls larger than the connection's
 * max_pending (paced to the client, not cut as a slow consumer), and
 * redelivery timers for NAK delays and backoff.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, RetentionPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { rawPull, spawnServer, startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";

const MS = 1_000_000;

describe("JetStream delivery bounds and timers", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  before(async () => {
    h = await startJs();
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => h.close());

  test("max_bytes counts subject, ack subject, headers and payload; a message that does not fit ends the request with 409 and waits for the next", async () => {
    await jsm.streams.add({ name: "MB", subjects: ["mb.>"] });
    for (let i = 0; i < 5; i++) await js.publish("mb.a", "x".repeat(100));
    await jsm.consumers.add("MB", { durable_name: "C", ack_policy: AckPolicy.Explicit });
    const sizeOf = (a: { subject: string; reply: string; size: number }): number => a.subject.length + a.reply.length + a.size;
    // Room for two and a half messages: two delivered, then the third does not fit.
    const first = await rawPull(h.nc, "MB", "C", JSON.stringify({ batch: 10, max_bytes: 370, expires: 2000 * MS }));
    assert.equal(first.length, 3, JSON.stringify(first));
    const used = sizeOf(first[0]) + sizeOf(first[1]);
    assert.ok(used <= 370 && used + sizeOf(first[1]) > 370);
    assert.deepEqual(first[2].status, {
      code: 409,
      description: "Message Size Exceeds MaxBytes",
      headers: { "Nats-Pending-Messages": "8", "Nats-Pending-Bytes": String(370 - used) },
    });
    // Exactly full: the request ends without a status.
    const exact = await rawPull(h.nc, "MB", "C", JSON.stringify({ batch: 10, max_bytes: sizeOf(first[1]), expires: 500 * MS }), 1000);
    assert.equal(exact.length, 1);
    assert.equal(exact[0].status, undefined);
    assert.equal(exact[0].reply.split(".")[5], "3", "the message that did not fit went to the next request");
    // Too small for any message: 409 at once, nothing taken.
    const tiny = await rawPull(h.nc, "MB", "C", JSON.stringify({ batch: 10, max_bytes: 50, expires: 2000 * MS }));
    assert.deepEqual(tiny.map((a) => a.status?.code), [409]);
    assert.equal((await jsm.consumers.info("MB", "C")).delivered.stream_seq, 3);
  });

  test("fetch with max_bytes yields what fits and ends at once, as against nats-server", async () => {
    await jsm.streams.add({ name: "MBC", subjects: ["mbc.>"] });
    for (let i = 0; i < 20; i++) await js.publish("mbc.a", "y".repeat(1000));
    await jsm.consumers.add("MBC", { durable_name: "F", ack_policy: AckPolicy.Explicit });
    const c = await js.consumers.get("MBC", "F");
    const started = Date.now();
    const got: number[] = [];
    try {
      for await (const m of await c.fetch({ max_bytes: 5000, expires: 20_000 })) {
        got.push(m.seq);
        m.ack();
      }
    } catch (err) {
      // The v3 client turns the 409 that ends the request into an error once it has yielded what fitted (so it does with nats-server).
      assert.equal((err as Error).message, "message size exceeds maxbytes");
    }
    assert.deepEqual(got, [1, 2, 3, 4], "four messages of ~1,060 bytes fit in 5,000");
    assert.ok(Date.now() - started < 5000, `fetch ended after ${Date.now() - started} ms, not at its expiry`);
  });

  test("a pull of batch 0 or less takes one message, as nats-server 2.9.10's does; a 408 counts down from the batch asked", async () => {
    await jsm.streams.add({ name: "BZ", subjects: ["bz.>"] });
    for (let i = 0; i < 3; i++) await js.publish("bz.a", `m${i}`);
    await jsm.consumers.add("BZ", { durable_name: "C", ack_policy: AckPolicy.Explicit });
    // What nats-server 2.9.10 answered (differential run): one message each, then the request is over.
    const ONE_EACH = [1, 2];
    for (const [i, batch] of [0, -1].entries()) {
      const inbox = createInbox();
      const sub = h.nc.subscribe(inbox, { max: 1 });
      h.nc.publish("$JS.API.CONSUMER.MSG.NEXT.BZ.C", JSON.stringify({ batch, expires: 5000 * MS }), { reply: inbox });
      for await (const m of sub) {
        assert.equal(m.headers?.code ?? 0, 0, `batch ${batch}: a message, not a status`);
        assert.equal(m.string(), `m${i}`);
      }
      const info = await jsm.consumers.info("BZ", "C");
      assert.equal(info.delivered.stream_seq, ONE_EACH[i]);
      assert.equal(info.num_waiting, 0, `batch ${batch}: the request ended with its one message`);
    }
    // Nothing to take: nats-server 2.9.10's answers, the pending count being the batch as asked.
    await jsm.consumers.add("BZ", { durable_name: "E", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New });
    const NATS_SERVER: Array<[Record<string, unknown>, number, Record<string, string>]> = [
      [{ batch: 0, expires: 100 * MS }, 408, { "Nats-Pending-Messages": "0", "Nats-Pending-Bytes": "0" }],
      [{ batch: -5, expires: 100 * MS }, 408, { "Nats-Pending-Messages": "-5", "Nats-Pending-Bytes": "0" }],
      [{ batch: 0, expires: 100 * MS, max_bytes: 100 }, 408, { "Nats-Pending-Messages": "0", "Nats-Pending-Bytes": "100" }],
      [{ batch: 0, no_wait: true }, 404, {}],
    ];
    for (const [body, code, headers] of NATS_SERVER) {
      const got = await rawPull(h.nc, "BZ", "E", JSON.stringify(body));
      assert.equal(got.length, 1, JSON.stringify(got));
      assert.equal(got[0].status?.code, code, JSON.stringify(body));
      assert.deepEqual(got[0].status?.headers, headers, JSON.stringify(body));
    }
  });

  test("a pull that expires in 30 days waits quietly: its timer is re-armed, not overflowed", async () => {
    // Node runs a timer of more than 2^31-1 ms at once (with a TimeoutOverflowWarning): re-armed each time, such a
    // request spun the server's CPU for its whole life.
    await jsm.streams.add({ name: "LONG", subjects: ["long.>"] });
    await jsm.consumers.add("LONG", { durable_name: "L", ack_policy: AckPolicy.Explicit });
    let overflows = 0;
    const onWarning = (w: Error): void => {
      if (w.name === "TimeoutOverflowWarning") overflows++;
    };
    process.on("warning", onWarning);
    try {
      const inbox = createInbox();
      const got: string[] = [];
      const sub = h.nc.subscribe(inbox, {
        callback: (_e, m) => {
          got.push(m.string());
        },
      });
      h.nc.publish("$JS.API.CONSUMER.MSG.NEXT.LONG.L", JSON.stringify({ batch: 1, expires: 30 * 24 * 3600 * 1000 * MS }), { reply: inbox });
      await h.nc.flush();
      const before = process.cpuUsage();
      // Not synchronisation: a window in which nothing may happen.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const used = process.cpuUsage(before);
      assert.equal(overflows, 0, "no timer overflowed");
      assert.ok((used.user + used.system) / 1000 < 150, `${((used.user + used.system) / 1000).toFixed(0)} ms of CPU in 300 ms of waiting`);
      await js.publish("long.a", "m");
      await waitUntil(() => got.length === 1, "the waiting request to get the message");
      assert.equal(got[0], "m");
      sub.unsubscribe();
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("a pull of more bytes than max_pending is paced to the client instead of cutting it as a slow consumer", async () => {
    const big = await startJs({ server: { maxPending: 8 * 1024 * 1024 } });
    try {
      const bjsm = await jetstreamManager(big.nc);
      const bjs = jetstream(big.nc);
      await bjsm.streams.add({ name: "BIG", subjects: ["big.>"] });
      const payload = new Uint8Array(500_000).fill(7);
      const acks = [];
      for (let i = 0; i < 40; i++) acks.push(bjs.publish("big.x", payload));
      await Promise.all(acks);
      await bjsm.consumers.add("BIG", { durable_name: "B", ack_policy: AckPolicy.None });
      const c = await bjs.consumers.get("BIG", "B");
      let n = 0;
      let bytes = 0;
      // 40 × 500 KB is 20 MB, 2.5 times the connection's max_pending.
      for await (const m of await c.fetch({ max_messages: 40, expires: 30_000 })) {
        n++;
        bytes += m.data.length;
      }
      assert.equal(n, 40);
      assert.equal(bytes, 40 * 500_000);
      assert.equal(big.nc.isClosed(), false);
      assert.equal(big.srv.broker.stats.slowConsumers, 0);
    } finally {
      await big.close();
    }
  });

  test("an ack_wait or idle_heartbeat past 2^31-1 ms arms no timer that Node runs every millisecond", async () => {
    // Node runs a longer timer after 1 ms (with a TimeoutOverflowWarning): the ack timer found nothing due and
    // re-armed, every millisecond, for as long as the delivery was pending; the heartbeat interval ticked as often.
    const overflows: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
    };
    process.on("warning", onWarning);
    try {
      await jsm.streams.add({ name: "FAR", subjects: ["far.>"] });
      await js.publish("far.a", "1");
      // 2^62 ns is 146 years: a Go duration nats-server takes as it is.
      await jsm.consumers.add("FAR", { durable_name: "P", ack_policy: AckPolicy.Explicit, ack_wait: 2 ** 62 });
      const m = await (await js.consumers.get("FAR", "P")).next({ expires: 5000 });
      assert.ok(m);
      const inbox = createInbox();
      const sub = h.nc.subscribe(inbox);
      await jsm.consumers.add("FAR", { durable_name: "H", deliver_subject: inbox, idle_heartbeat: 2 ** 62 });
      // A round trip after both timers were armed: a warning (emitted on the next tick) has been seen by now.
      assert.equal((await jsm.consumers.info("FAR", "P")).num_ack_pending, 1);
      await h.nc.flush();
      sub.unsubscribe();
      assert.deepEqual(overflows, []);
    } finally {
      process.off("warning", onWarning);
    }
  });

  // Timers are measured against a server in its own process: in this one, the client's callbacks would wait
  // for whatever the server's event loop is doing, and the measurement would be the noise.
  async function timed(run: (nc: NatsConnection) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), "nagare-timers-"));
    const { child, url } = await spawnServer(dir);
    const nc = await connect({ servers: url });
    try {
      await run(nc);
    } finally {
      await nc.close();
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /**
   * The median: the client measures arrival times, and on a loaded machine one
   * of them can be late by a scheduler slice (tens of ms) in either process.
   * A polling timer is late on every step; scheduling noise is not.
   */
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

  test("a NAK with a delay redelivers on time, not up to a second late", () =>
    timed(async (nc) => {
      const tjsm = await jetstreamManager(nc);
      await tjsm.streams.add({ name: "NK", subjects: ["nk.>"] });
      await jetstream(nc).publish("nk.a", "1");
      await tjsm.consumers.add("NK", { durable_name: "N", ack_policy: AckPolicy.Explicit, ack_wait: 30_000 * MS });
      const c = await jetstream(nc).consumers.get("NK", "N");
      let m = await c.next({ expires: 2000 });
      const lateness: number[] = [];
      for (let round = 0; round < 5; round++) {
        assert.ok(m);
        const nakAt = Date.now();
        m.nak(200);
        m = await c.next({ expires: 5000 });
        assert.ok(m);
        assert.equal(m.info.deliveryCount, round + 2);
        lateness.push(Date.now() - nakAt - 200);
      }
      assert.ok(lateness.every((l) => l >= -5), `never early: ${lateness}`);
      assert.ok(median(lateness) < 30, `redeliveries after a 200 ms NAK delay were late by ${lateness} ms`);
    }));

  test("backoff steps are kept to within 50 ms", () =>
    timed(async (nc) => {
      const tjsm = await jetstreamManager(nc);
      await tjsm.streams.add({ name: "BO", subjects: ["bo.>"] });
      await jetstream(nc).publish("bo.a", "1");
      // Short steps after a long first one: a timer that polls at a fraction of the first step (as nagare's
      // used to) rounds the short ones up to its period; nats-server keeps each step.
      const backoff = [1000, 100, 100, 100, 100, 100, 100, 100];
      await tjsm.consumers.add("BO", { durable_name: "B", ack_policy: AckPolicy.Explicit, backoff: backoff.map((ms) => ms * MS), max_deliver: 9 });
      // One waiting request for all the deliveries, timed in the subscription's callback (no client queue in between).
      const inbox = createInbox();
      const times: number[] = [];
      const sub = nc.subscribe(inbox, {
        callback: (_err, m) => {
          if (m.data.length > 0) times.push(Date.now());
        },
      });
      nc.publish("$JS.API.CONSUMER.MSG.NEXT.BO.B", JSON.stringify({ batch: 9, expires: 10_000 * MS }), { reply: inbox });
      await waitUntil(() => times.length === 9, "nine deliveries", 10_000);
      sub.unsubscribe();
      const drift = times.slice(1).map((t, i) => t - times[i] - backoff[i]);
      // One sample: never early, and late by no more than a loaded machine's scheduling (57 ms seen in a CI run beside
      // other work); a timer that polled would be late by a fraction of the step on every step, which the median shows.
      assert.ok(drift[0] > -50 && drift[0] < 150, `first step drifted ${drift[0]} ms`);
      assert.ok(Math.abs(median(drift.slice(1))) < 20, `100 ms steps drifted ${drift.slice(1)} ms`);
    }));
  test("a pull times out when it expires, to the millisecond, and its heartbeats say where the consumer is", () =>
    timed(async (nc) => {
      const tjsm = await jetstreamManager(nc);
      await tjsm.streams.add({ name: "PX", subjects: ["px.>"] });
      await tjsm.consumers.add("PX", { durable_name: "P", ack_policy: AckPolicy.Explicit });
      // Past a second, nagare's timer used to tick once a second and round the expiry up to the next one (1.1 s took 2 s):
      // a message published in between went to a client that had stopped listening.
      const lateness: number[] = [];
      for (let round = 0; round < 3; round++) {
        const sentAt = Date.now();
        const got = await rawPull(nc, "PX", "P", JSON.stringify({ batch: 1, expires: 1100 * MS }), 5000);
        assert.equal(got.length, 1, JSON.stringify(got));
        assert.equal(got[0].status?.code, 408);
        lateness.push(Date.now() - sentAt - 1100);
      }
      assert.ok(lateness.every((l) => l >= -10), `never early: ${lateness}`);
      assert.ok(median(lateness) < 300, `1.1 s pulls timed out late by ${lateness} ms`);
      // nats-server's pull heartbeats carry the last delivery, as its push ones do.
      await jetstream(nc).publish("px.a", "1");
      const [first] = await rawPull(nc, "PX", "P", JSON.stringify({ batch: 1 }), 2000);
      assert.equal(first.subject, "px.a");
      const beats = await rawPull(nc, "PX", "P", JSON.stringify({ batch: 1, expires: 700 * MS, idle_heartbeat: 200 * MS }), 3000);
      assert.equal(beats[beats.length - 1].status?.code, 408);
      const hb = beats.filter((a) => a.status?.code === 100);
      assert.ok(hb.length >= 1, JSON.stringify(beats));
      assert.equal(hb[0].status!.headers["Nats-Last-Consumer"], "1");
      assert.equal(hb[0].status!.headers["Nats-Last-Stream"], "1");
    }));

  test("a push consumer's idle heartbeat comes idle_heartbeat after its last delivery, not up to twice that", async () => {
    await jsm.streams.add({ name: "PHB", subjects: ["phb.>"] });
    const deliver = createInbox();
    const HB = 400;
    const gaps: number[] = [];
    let deliveredAt = 0;
    let beats = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    // Each heartbeat is answered at once by a publish, so that every delivery comes just after a heartbeat went: the
    // moment a ticker that skips ticks too soon after a delivery waits longest.
    const sub = h.nc.subscribe(deliver, {
      callback: (_err, m) => {
        if (m.headers?.code === 100) {
          if (deliveredAt > 0) gaps.push(Date.now() - deliveredAt);
          deliveredAt = 0;
          if (++beats >= 5) return done();
          void js.publish("phb.x", "x");
        } else deliveredAt = Date.now();
      },
    });
    await h.nc.flush();
    await jsm.consumers.add("PHB", { durable_name: "P", deliver_subject: deliver, ack_policy: AckPolicy.None, idle_heartbeat: HB * MS });
    await finished;
    sub.unsubscribe();
    assert.ok(gaps.length >= 3, `gaps ${gaps}`);
    assert.ok(gaps.every((g) => g < HB * 1.5), `heartbeats came ${gaps} ms after the last delivery (idle_heartbeat ${HB} ms)`);
  });
  test("a push consumer's rate_limit_bps paces its deliveries after a burst of the stream's largest message", async () => {
    // 256 KiB/s, bursts of 64 KiB (the stream's max_msg_size, as nats-server sizes the burst): 384 KiB take over a second.
    await jsm.streams.add({ name: "RLB", subjects: ["rlb.>"], max_msg_size: 64 * 1024 });
    const body = "x".repeat(32 * 1024);
    for (let i = 0; i < 12; i++) await js.publish("rlb.x", body);
    const deliver = createInbox();
    const at: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const sub = h.nc.subscribe(deliver, {
      callback: () => {
        at.push(Date.now());
        if (at.length === 12) done();
      },
    });
    await h.nc.flush();
    const created = Date.now();
    await jsm.consumers.add("RLB", { durable_name: "R", deliver_subject: deliver, ack_policy: AckPolicy.None, rate_limit_bps: 8 * 256 * 1024 });
    await all;
    sub.unsubscribe();
    const took = at[11] - created;
    assert.ok(took >= 1000, `12 deliveries of 32 KiB at 256 KiB/s took ${took} ms`);
    assert.ok(took < 5000, `paced, not stalled: ${took} ms`);
  });
  test("a redelivery held back by rate_limit_bps is not sent once the client acked it meanwhile", async () => {
    // Bursts of 128 bytes (max_msg_size) at 100 B/s: each 104-byte delivery after the first waits about a second.
    await jsm.streams.add({ name: "RLA", subjects: ["rla.>"], max_msg_size: 128, retention: RetentionPolicy.Workqueue });
    const deliver = createInbox();
    const replies: string[] = [];
    let done!: () => void;
    const second = new Promise<void>((r) => (done = r));
    const sub = h.nc.subscribe(deliver, {
      callback: (_err, m) => {
        if (m.reply === undefined || m.reply === "") return;
        replies.push(m.reply);
        if (m.subject === "rla.b") done();
      },
    });
    await h.nc.flush();
    await jsm.consumers.add("RLA", { durable_name: "C", deliver_subject: deliver, ack_policy: AckPolicy.Explicit, ack_wait: 300 * MS, rate_limit_bps: 800 });
    await js.publish("rla.a", "a".repeat(100));
    await waitUntil(() => replies.length === 1, "the first delivery");
    // Due again after its ack wait: taken off the redelivery queue, it waits for the rate limit's tokens.
    const c = h.srv.jetstream!.streams.get("RLA")!.consumers.get("C")! as unknown as { deadlines: unknown[]; redeliverQueue: number[] };
    await waitUntil(() => c.deadlines.length === 0 && c.redeliverQueue.length === 0, "the redelivery waiting on the rate limit");
    h.nc.publish(replies[0]);
    await h.nc.flush();
    // Delivered after whatever that wait ends with.
    await js.publish("rla.b", "b".repeat(100));
    await second;
    sub.unsubscribe();
    assert.deepEqual(
      replies.map((r) => r.split(".").slice(4, 6).join(":")),
      ["1:1", "1:2"],
      "message 1 acked (and gone from the work queue) before its redelivery went: not delivered again",
    );
  });
  test("messages purged while deliveries wait out rate_limit_bps are not delivered, as nats-server delivers none", async () => {
    // Bursts of 1 KiB (max_msg_size) at 500 B/s: after the first, each 605-byte delivery waits over a second.
    await jsm.streams.add({ name: "RLP", subjects: ["rlp.>"], max_msg_size: 1024 });
    for (let i = 1; i <= 4; i++) await js.publish("rlp.x", `${i}`.repeat(600));
    const deliver = createInbox();
    const seqs: string[] = [];
    let purged = -1;
    let done!: () => void;
    const after = new Promise<void>((r) => (done = r));
    const sub = h.nc.subscribe(deliver, {
      callback: (_err, m) => {
        if (m.reply === undefined || m.reply === "") return;
        seqs.push(m.reply.split(".")[5]);
        if (m.subject === "rlp.after") done();
      },
    });
    await h.nc.flush();
    await jsm.consumers.add("RLP", { durable_name: "C", deliver_subject: deliver, ack_policy: AckPolicy.None, rate_limit_bps: 8 * 500 });
    await waitUntil(() => seqs.length === 1, "the first delivery");
    // The second now waits for the rate limit's tokens. The purge's answer comes on this connection after any delivery
    // sent before it.
    await jsm.streams.purge("RLP");
    purged = seqs.length;
    await js.publish("rlp.after", "a");
    await after;
    sub.unsubscribe();
    assert.deepEqual(seqs.slice(purged), ["5"], `delivered after the purge: ${seqs.slice(purged)}`);
  });
  test("waiting pull requests take turns, one message each, as nats-server serves them", async () => {
    await jsm.streams.add({ name: "TURN", subjects: ["turn.>"] });
    await jsm.consumers.add("TURN", { durable_name: "C", ack_policy: AckPolicy.Explicit });
    const body = JSON.stringify({ batch: 3, expires: 1500 * MS });
    const a = rawPull(h.nc, "TURN", "C", body, 5000);
    const b = rawPull(h.nc, "TURN", "C", body, 5000);
    await waitUntil(() => h.srv.jetstream!.streams.get("TURN")!.consumers.get("C")!.info().num_waiting === 2, "both pulls waiting");
    for (let i = 1; i <= 4; i++) await js.publish("turn.x", `m${i}`);
    const seqs = (answers: Awaited<typeof a>): string[] => answers.map((m) => (m.status ? String(m.status.code) : m.reply.split(".")[5]));
    assert.deepEqual([seqs(await a), seqs(await b)], [
      ["1", "3", "408"],
      ["2", "4", "408"],
    ]);
  });
  test("a lowered ack_wait applies to deliveries already pending, as in nats-server", async () => {
    await jsm.streams.add({ name: "AWU", subjects: ["awu.>"] });
    await jsm.consumers.add("AWU", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 60_000 * MS });
    await js.publish("awu.x", "stuck");
    const first = await rawPull(h.nc, "AWU", "C", JSON.stringify({ batch: 1, expires: 2000 * MS }));
    assert.equal(first[0].subject, "awu.x");
    await jsm.consumers.update("AWU", "C", { ack_wait: 500 * MS });
    // Redelivered half a second after its delivery, not after the minute it was given then.
    const again = await rawPull(h.nc, "AWU", "C", JSON.stringify({ batch: 1, expires: 5000 * MS }), 8000);
    assert.equal(again[0].status, undefined, JSON.stringify(again));
    assert.equal(again[0].reply.split(".")[4], "2", "its second delivery");
  });
});
