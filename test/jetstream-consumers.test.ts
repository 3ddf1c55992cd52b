/**
 * Consumers with the official v3 client: pull and push, every ack policy and
 * ack kind, redelivery, the pull statuses, deliver policies, filters,
 * retention by interest and work queue, and ephemeral expiry.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createInbox, type Msg } from "@nats-io/transport-node";
import {
  jetstream,
  jetstreamManager,
  AckPolicy,
  DeliverPolicy,
  ReplayPolicy,
  RetentionPolicy,
  type JetStreamManager,
  type JetStreamClient,
  type JsMsg,
} from "@nats-io/jetstream";
import { api, apiErrorCode, rawPull, startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";

const MS = 1_000_000;

describe("JetStream consumers", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;
  let n = 0;

  before(async () => {
    h = await startJs();
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => h.close());

  /** A fresh stream with `count` messages on `<prefix>.<i % subjects>`. */
  async function stream(count: number, subjects = 1, extra: Record<string, unknown> = {}): Promise<{ name: string; prefix: string }> {
    const name = `S${++n}`;
    const prefix = `s${n}`;
    await jsm.streams.add({ name, subjects: [`${prefix}.>`], ...extra });
    for (let i = 0; i < count; i++) await js.publish(`${prefix}.${i % subjects}`, `m${i + 1}`);
    return { name, prefix };
  }

  async function fetchAll(name: string, consumer: string, max: number, expires = 1000): Promise<JsMsg[]> {
    const c = await js.consumers.get(name, consumer);
    const out: JsMsg[] = [];
    for await (const m of await c.fetch({ max_messages: max, expires })) out.push(m);
    return out;
  }

  test("pull with explicit acks: acked messages stay acked, unacked ones come back after ack_wait", async () => {
    const s = await stream(5);
    await jsm.consumers.add(s.name, { durable_name: "W", ack_policy: AckPolicy.Explicit, ack_wait: 500 * MS });
    const first = await fetchAll(s.name, "W", 5);
    assert.deepEqual(first.map((m) => m.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(first.map((m) => m.info.pending), [4, 3, 2, 1, 0], "exact pending on every delivery");
    for (const m of first.slice(0, 3)) await m.ackAck();
    const again = await fetchAll(s.name, "W", 2, 3000);
    assert.deepEqual(again.map((m) => m.seq), [4, 5]);
    assert.ok(again.every((m) => m.redelivered && m.info.deliveryCount === 2));
    for (const m of again) m.ack();
    const settled = await pollInfo(s.name, "W", (i) => i.num_ack_pending === 0);
    assert.equal(settled.ack_floor.stream_seq, 5);
    assert.equal(settled.num_pending, 0);
  });

  async function pollInfo(stream: string, consumer: string, ok: (i: Awaited<ReturnType<JetStreamManager["consumers"]["info"]>>) => boolean) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const i = await jsm.consumers.info(stream, consumer);
      if (ok(i)) return i;
      if (Date.now() > deadline) throw new Error(`consumer state never settled: ${JSON.stringify(i)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  test("nak with a delay, term, and max_deliver", async () => {
    const s = await stream(3);
    await jsm.consumers.add(s.name, { durable_name: "N", ack_policy: AckPolicy.Explicit, ack_wait: 300 * MS, max_deliver: 2 });
    const [m1, m2, m3] = await fetchAll(s.name, "N", 3);
    m1.nak(2500);
    m2.term();
    // m3 is never acked: delivered twice (max_deliver), then left alone.
    void m3;
    const early = await fetchAll(s.name, "N", 3, 1000);
    assert.deepEqual(early.map((m) => m.seq), [3], "m1 waits for its nak delay; m2 is terminated");
    const later = await fetchAll(s.name, "N", 1, 4000);
    assert.deepEqual(later.map((m) => m.seq), [1]);
    assert.equal(later[0].info.deliveryCount, 2);
    const none = await fetchAll(s.name, "N", 3, 1000);
    assert.deepEqual(none.map((m) => m.seq), [], "max_deliver 2 reached for both");
  });

  test("ack all acknowledges everything up to the acked message; ack none tracks nothing", async () => {
    const s = await stream(6);
    await jsm.consumers.add(s.name, { durable_name: "ALL", ack_policy: AckPolicy.All });
    const msgs = await fetchAll(s.name, "ALL", 6);
    assert.equal((await jsm.consumers.info(s.name, "ALL")).num_ack_pending, 6);
    await msgs[3].ackAck();
    const ci = await jsm.consumers.info(s.name, "ALL");
    assert.equal(ci.ack_floor.stream_seq, 4);
    assert.equal(ci.num_ack_pending, 2);
    await jsm.consumers.add(s.name, { durable_name: "NONE", ack_policy: AckPolicy.None });
    assert.equal((await fetchAll(s.name, "NONE", 6)).length, 6);
    const none = await jsm.consumers.info(s.name, "NONE");
    assert.equal(none.num_ack_pending, 0);
    assert.equal(none.ack_floor.stream_seq, 6);
  });

  test("a double ack of a delivery past what the consumer delivered is not confirmed (another leader made it); one of its own is", async () => {
    const s = await stream(3);
    for (const policy of [AckPolicy.Explicit, AckPolicy.All]) {
      const durable = `X_${policy}`;
      await jsm.consumers.add(s.name, { durable_name: durable, ack_policy: policy, ack_wait: 30_000 * MS });
      // Deliveries carry the stored subject, so a muxed request cannot match them: a dedicated inbox.
      const own = await h.nc.request(`$JS.API.CONSUMER.MSG.NEXT.${s.name}.${durable}`, "1", { timeout: 2000, noMux: true });
      assert.equal(own.string(), "m1");
      // 3 delivered by a leader whose delivery this consumer's state lacks (a takeover adopted a copy taken before it): the
      // ack is not applied (under ack all it would ack 2, never delivered), and a confirmation would have the client count
      // 3 acknowledged above the ack floor. A termination of it neither.
      const inbox = createInbox();
      const replies: string[] = [];
      const sub = h.nc.subscribe(`${inbox}.*`, { callback: (_err, m) => void replies.push(m.subject) });
      h.nc.publish(`$JS.ACK.${s.name}.${durable}.1.3.3.${Date.now()}000000.0`, "", { reply: `${inbox}.foreign` });
      h.nc.publish(`$JS.ACK.${s.name}.${durable}.1.3.3.${Date.now()}000000.0`, "+TERM", { reply: `${inbox}.term` });
      h.nc.publish(own.reply!, "", { reply: `${inbox}.own` });
      // All on one connection, answered in the order they came: the first ones' confirmations would be here before it.
      await waitUntil(() => replies.length > 0, "the consumer's own delivery's ack confirmed");
      assert.deepEqual(replies, [`${inbox}.own`], policy);
      sub.unsubscribe();
      const info = await jsm.consumers.info(s.name, durable);
      assert.equal(info.ack_floor.stream_seq, 1, policy);
      assert.equal(info.num_ack_pending, 0, policy);
      assert.deepEqual((await fetchAll(s.name, durable, 2)).map((m) => m.seq), [2, 3], `${policy}: 2 and 3 come`);
    }
  });

  test("max_ack_pending holds back deliveries until acks arrive", async () => {
    const s = await stream(10);
    await jsm.consumers.add(s.name, { durable_name: "MAP", ack_policy: AckPolicy.Explicit, max_ack_pending: 3 });
    const got = await fetchAll(s.name, "MAP", 10, 1000);
    assert.equal(got.length, 3);
    for (const m of got) await m.ackAck();
    assert.deepEqual((await fetchAll(s.name, "MAP", 10, 1000)).map((m) => m.seq), [4, 5, 6]);
  });

  test("a pending delivery whose message left the stream ends: it frees max_ack_pending and the ack floor moves", async () => {
    const s = await stream(4, 4, { max_msgs_per_subject: 1 });
    await jsm.consumers.add(s.name, { durable_name: "GONE", ack_policy: AckPolicy.Explicit, ack_wait: 60_000 * MS, max_ack_pending: 2 });
    const got = await fetchAll(s.name, "GONE", 4, 1000);
    assert.deepEqual(got.map((m) => m.seq), [1, 2], "held at max_ack_pending");
    // Message 1 is deleted, message 2 replaced under its subject's limit: neither can be acknowledged any more.
    assert.equal(await jsm.streams.deleteMessage(s.name, 1), true);
    await js.publish(`${s.prefix}.1`, "replaces 2");
    const ci = await jsm.consumers.info(s.name, "GONE");
    assert.equal(ci.num_ack_pending, 0);
    assert.equal(ci.ack_floor.stream_seq, 2);
    assert.equal(ci.num_pending, 3);
    const next = await fetchAll(s.name, "GONE", 4, 1000);
    assert.deepEqual(next.map((m) => m.seq), [3, 4], "room again under max_ack_pending");
  });

  test("pull statuses: 404 no_wait, 408 with pending counts, 409 max waiting, 400 heartbeat too large", async () => {
    const s = await stream(0);
    await jsm.consumers.add(s.name, { durable_name: "ST", ack_policy: AckPolicy.Explicit, max_waiting: 1 });
    const next = `$JS.API.CONSUMER.MSG.NEXT.${s.name}.ST`;
    const statuses: Msg[] = [];
    const inbox = createInbox();
    h.nc.subscribe(inbox, {
      callback: (_e, m) => {
        statuses.push(m);
      },
    });
    h.nc.publish(next, JSON.stringify({ batch: 1, no_wait: true }), { reply: inbox });
    await waitUntil(() => statuses.length === 1, "404");
    assert.equal(statuses[0].headers?.code, 404);
    assert.equal(statuses[0].headers?.description, "No Messages");
    h.nc.publish(next, JSON.stringify({ batch: 5, expires: 300 * MS, max_bytes: 1000 }), { reply: inbox });
    h.nc.publish(next, JSON.stringify({ batch: 1, expires: 300 * MS }), { reply: inbox });
    await waitUntil(() => statuses.length === 3, "409 and 408");
    assert.equal(statuses[1].headers?.code, 409);
    assert.equal(statuses[1].headers?.description, "Exceeded MaxWaiting");
    assert.equal(statuses[2].headers?.code, 408);
    assert.equal(statuses[2].headers?.get("Nats-Pending-Messages"), "5");
    assert.equal(statuses[2].headers?.get("Nats-Pending-Bytes"), "1000");
    h.nc.publish(next, JSON.stringify({ batch: 1, expires: 100 * MS, idle_heartbeat: 80 * MS }), { reply: inbox });
    await waitUntil(() => statuses.length === 4, "400");
    assert.equal(statuses[3].headers?.code, 400);
    assert.match(statuses[3].headers?.description ?? "", /heartbeat value too large/);
  });

  test("consume() keeps pulling as messages arrive, and +NXT acks and asks for the next", async () => {
    const s = await stream(0);
    await jsm.consumers.add(s.name, { durable_name: "LIVE", ack_policy: AckPolicy.Explicit });
    const c = await js.consumers.get(s.name, "LIVE");
    const seen: number[] = [];
    const iter = await c.consume({ max_messages: 10 });
    const done = (async () => {
      for await (const m of iter) {
        seen.push(m.seq);
        m.ack();
        if (seen.length === 50) break;
      }
    })();
    for (let i = 0; i < 50; i++) await js.publish(`${s.prefix}.x`, `${i}`);
    await done;
    assert.deepEqual(seen, Array.from({ length: 50 }, (_, i) => i + 1));
    await pollInfo(s.name, "LIVE", (i) => i.ack_floor.stream_seq === 50);
    // +NXT: ack this one and receive the next on the ack's reply.
    await js.publish(`${s.prefix}.x`, "51");
    await js.publish(`${s.prefix}.x`, "52");
    await jsm.consumers.add(s.name, { durable_name: "NXT", ack_policy: AckPolicy.Explicit, opt_start_seq: 51, deliver_policy: DeliverPolicy.StartSequence });
    // Deliveries carry the stored subject, so a muxed request cannot match them: use a dedicated inbox.
    const m51 = await h.nc.request(`$JS.API.CONSUMER.MSG.NEXT.${s.name}.NXT`, "1", { timeout: 2000, noMux: true });
    assert.equal(m51.string(), "51");
    const nxt = await h.nc.request(m51.reply!, "+NXT", { timeout: 2000, noMux: true });
    assert.equal(nxt.string(), "52");
  });

  test("deliver policies: last, new, by start sequence, by start time, last per subject", async () => {
    const s = await stream(6, 3);
    const firstSeq = async (cfg: Record<string, unknown>): Promise<number[]> => {
      const ci = await jsm.consumers.add(s.name, { ack_policy: AckPolicy.None, ...cfg });
      const got = await fetchAll(s.name, ci.name, 10, 1000);
      return got.map((m) => m.seq);
    };
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.Last }), [6]);
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.Last, filter_subject: `${s.prefix}.0` }), [4]);
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.New }), []);
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 5 }), [5, 6]);
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.LastPerSubject, filter_subject: `${s.prefix}.>` }), [4, 5, 6]);
    // nats-server 2.9 and 2.10 want a filter with last per subject.
    assert.equal(await apiErrorCode(jsm.consumers.add(s.name, { deliver_policy: DeliverPolicy.LastPerSubject })), 10094);
    // Stored times have millisecond resolution: neighbours may share m5's time, and then start with it.
    const times = await Promise.all([1, 2, 3, 4, 5, 6].map(async (seq) => (await jsm.streams.getMessage(s.name, { seq }))!.time.getTime()));
    const atOrAfter = [1, 2, 3, 4, 5, 6].filter((seq) => times[seq - 1] >= times[4]);
    assert.ok(atOrAfter.includes(5) && !atOrAfter.includes(1));
    assert.deepEqual(await firstSeq({ deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(times[4]).toISOString() }), atOrAfter);
    assert.equal(await apiErrorCode(jsm.consumers.add(s.name, { deliver_policy: DeliverPolicy.StartSequence })), 10094);
  });

  test("a start sequence ahead of the stream: messages before it are not pending, and a no_wait pull answers 404", async () => {
    const s = await stream(0);
    await jsm.consumers.add(s.name, { durable_name: "AHEAD", ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 3 });
    await js.publish(`${s.prefix}.0`, "m1");
    assert.equal((await jsm.consumers.info(s.name, "AHEAD")).num_pending, 0);
    const statuses: Msg[] = [];
    const inbox = createInbox();
    const sub = h.nc.subscribe(inbox, {
      callback: (_e, m) => {
        statuses.push(m);
      },
    });
    h.nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${s.name}.AHEAD`, JSON.stringify({ batch: 5, no_wait: true }), { reply: inbox });
    await waitUntil(() => statuses.length === 1, "the no_wait pull's answer");
    sub.unsubscribe();
    assert.equal(statuses[0].headers?.code, 404);
    await js.publish(`${s.prefix}.0`, "m2");
    await js.publish(`${s.prefix}.0`, "m3");
    assert.equal((await jsm.consumers.info(s.name, "AHEAD")).num_pending, 1);
    assert.deepEqual((await fetchAll(s.name, "AHEAD", 1)).map((m) => m.seq), [3]);
  });

  test("filter_subjects, headers_only and exact num_pending", async () => {
    const s = await stream(9, 3);
    const ci = await jsm.consumers.add(s.name, {
      durable_name: "F",
      ack_policy: AckPolicy.Explicit,
      filter_subjects: [`${s.prefix}.0`, `${s.prefix}.2`],
      headers_only: true,
    });
    assert.equal(ci.num_pending, 6);
    const got = await fetchAll(s.name, "F", 10);
    assert.deepEqual(got.map((m) => m.seq), [1, 3, 4, 6, 7, 9]);
    assert.ok(got.every((m) => m.data.length === 0 && m.headers?.get("Nats-Msg-Size") === "2"));
    assert.deepEqual(got.map((m) => m.info.pending), [5, 4, 3, 2, 1, 0]);
    assert.equal(await apiErrorCode(jsm.consumers.add(s.name, { filter_subjects: [`${s.prefix}.>`, `${s.prefix}.1`] })), 10138);
  });

  test("consumer create is idempotent; create/update actions; names, list, delete", async () => {
    const s = await stream(1);
    const cfg = { durable_name: "D", ack_policy: AckPolicy.Explicit, ack_wait: 5000 * MS };
    const a = await jsm.consumers.add(s.name, cfg);
    const b = await jsm.consumers.add(s.name, cfg);
    assert.equal(a.created, b.created);
    const upd = await jsm.consumers.update(s.name, "D", { ack_wait: 7000 * MS });
    assert.equal(upd.config.ack_wait, 7000 * MS);
    const raw = await api(h.nc, `$JS.API.CONSUMER.CREATE.${s.name}.D`, { stream_name: s.name, config: { ...cfg, name: "D", ack_wait: 9000 * MS }, action: "create" });
    assert.equal((raw.error as { err_code: number }).err_code, 10148);
    const missing = await api(h.nc, `$JS.API.CONSUMER.CREATE.${s.name}.X`, { stream_name: s.name, config: { name: "X", ack_policy: "explicit" }, action: "update" });
    assert.equal((missing.error as { err_code: number }).err_code, 10149);
    // What may not change, named as nats-server names it (the first in its order when several do).
    const fixed = async (config: Record<string, unknown>) => (await api(h.nc, `$JS.API.CONSUMER.DURABLE.CREATE.${s.name}.D`, { stream_name: s.name, config: { ...cfg, ...config } })).error as { err_code: number; description: string };
    assert.deepEqual(await fixed({ ack_policy: "all", deliver_policy: "new" }), { code: 500, err_code: 10012, description: "deliver policy can not be updated" });
    assert.equal((await fixed({ ack_policy: "all" })).description, "ack policy can not be updated");
    assert.equal((await fixed({ opt_start_seq: 1, deliver_policy: "by_start_sequence" })).description, "deliver policy can not be updated");
    await jsm.consumers.add(s.name, { durable_name: "E", ack_policy: AckPolicy.None });
    const names: string[] = [];
    for await (const ci of jsm.consumers.list(s.name)) names.push(ci.name);
    assert.deepEqual(names.sort(), ["D", "E"]);
    assert.equal(await jsm.consumers.delete(s.name, "E"), true);
    assert.equal(await apiErrorCode(jsm.consumers.info(s.name, "E")), 10014);
  });

  test("the same consumer created many times at once is one consumer, and every create is answered with it (as nats-server)", async () => {
    // Queue subscribers started together (js.subscribe with a queue) each create the same durable.
    const s = await stream(3);
    for (const cfg of [
      { durable_name: "P", ack_policy: AckPolicy.Explicit, deliver_subject: createInbox(), deliver_group: "g" },
      { name: "Q", ack_policy: AckPolicy.Explicit },
    ]) {
      const answers = await Promise.allSettled(Array.from({ length: 12 }, () => jsm.consumers.add(s.name, cfg)));
      const refused = answers.flatMap((a) => (a.status === "rejected" ? [(a.reason as Error).message] : []));
      assert.deepEqual(refused, []);
      const created = new Set(answers.map((a) => (a.status === "fulfilled" ? a.value.created : "")));
      assert.equal(created.size, 1, "one consumer, the same for every answer");
    }
  });

  test("push consumer with flow control and idle heartbeats delivers everything in order", async () => {
    const s = await stream(3000);
    const deliver = createInbox();
    await jsm.consumers.add(s.name, {
      durable_name: "P",
      deliver_subject: deliver,
      ack_policy: AckPolicy.Explicit,
      flow_control: true,
      idle_heartbeat: 500 * MS,
      max_ack_pending: 10_000,
    });
    const pc = await js.consumers.getPushConsumer(s.name, "P");
    const seen: number[] = [];
    let heartbeats = 0;
    const iter = await pc.consume();
    void (async () => {
      for await (const st of iter.status()) if (st.type === "heartbeat") heartbeats++;
    })();
    void (async () => {
      for await (const m of iter) {
        seen.push(m.seq);
        m.ack();
      }
    })();
    await waitUntil(() => seen.length >= 3000, "3000 deliveries", 20_000);
    assert.deepEqual(seen, Array.from({ length: 3000 }, (_, i) => i + 1));
    await waitUntil(() => heartbeats > 0, "an idle heartbeat", 5000);
    await iter.close();
  });

  test("push flow control: an unanswered request stalls delivery within the window; answering resumes it", async () => {
    const name = `S${++n}`;
    const subject = `s${n}.x`;
    await jsm.streams.add({ name, subjects: [subject] });
    const body = Buffer.alloc(8 * 1024, 7);
    const total = 800; // 6.4 MiB, several windows
    await Promise.all(Array.from({ length: total }, () => js.publish(subject, body)));
    const deliver = createInbox();
    let data = 0;
    const fcRequests: string[] = [];
    let stalledBeat: string | null = null;
    // A raw subscription sees the protocol: data, flow-control requests, heartbeats.
    const sub = h.nc.subscribe(deliver, {
      callback: (_e, m: Msg) => {
        if (m.headers?.code === 100) {
          if (m.reply) fcRequests.push(m.reply);
          else stalledBeat = m.headers.get("Nats-Consumer-Stalled") || stalledBeat;
          return;
        }
        data++;
      },
    });
    await jsm.consumers.add(name, { durable_name: "F", deliver_subject: deliver, ack_policy: AckPolicy.None, flow_control: true, idle_heartbeat: 200 * MS });
    await waitUntil(() => stalledBeat !== null, "a heartbeat saying the consumer is stalled on flow control", 10_000);
    assert.ok(data > 0 && data < total, `stalled part way: ${data} of ${total}`);
    assert.ok(data * body.length <= 2.5 * 1024 * 1024, `no more than the window unanswered: ${data} messages`);
    assert.equal(stalledBeat, fcRequests[fcRequests.length - 1], "the heartbeat names the outstanding request");
    // Answer every request as it comes, as the client library does.
    let answered = 0;
    const answerAll = (): void => {
      while (answered < fcRequests.length) h.nc.publish(fcRequests[answered++]);
    };
    const timer = setInterval(answerAll, 10);
    answerAll();
    try {
      await waitUntil(() => data === total, `all ${total} deliveries`, 20_000);
    } finally {
      clearInterval(timer);
      sub.unsubscribe();
    }
  });

  test("push flow control: a live feed caught up message by message asks nothing until half the window is unanswered", async () => {
    const name = `S${++n}`;
    const subject = `s${n}.x`;
    await jsm.streams.add({ name, subjects: [subject] });
    const deliver = createInbox();
    let data = 0;
    let fcRequests = 0;
    const sub = h.nc.subscribe(deliver, {
      callback: (_e, m: Msg) => {
        if (m.headers?.code === 100) {
          if (m.reply) fcRequests++;
          return;
        }
        data++;
      },
    });
    await jsm.consumers.add(name, { durable_name: "L", deliver_subject: deliver, ack_policy: AckPolicy.None, flow_control: true, idle_heartbeat: 5000 * MS });
    // Each message is delivered before the next is published: the consumer is caught up after every one. nats-server asks
    // for flow control only once half its window is unanswered; asking at every catch-up cost a round trip per message.
    try {
      for (let i = 1; i <= 50; i++) {
        await js.publish(subject, "x".repeat(100));
        await waitUntil(() => data === i, `delivery ${i}`, 5000);
      }
      await h.nc.flush();
      assert.equal(fcRequests, 0, "no flow-control request for 50 small messages");
    } finally {
      sub.unsubscribe();
    }
  });

  test("replay original: deliveries keep the gaps the messages were stored with", async () => {
    const name = `S${++n}`;
    const subject = `s${n}.x`;
    await jsm.streams.add({ name, subjects: [subject] });
    await js.publish(subject, "a");
    const gapStart = Date.now();
    await waitUntil(() => Date.now() - gapStart >= 400, "a 400 ms gap between stored messages", 2000);
    await js.publish(subject, "b");
    const stored = [(await jsm.streams.getMessage(name, { seq: 1 }))!.time, (await jsm.streams.getMessage(name, { seq: 2 }))!.time];
    const storedGap = stored[1].getTime() - stored[0].getTime();
    assert.ok(storedGap >= 400, `stored ${storedGap} ms apart`);
    await jsm.consumers.add(name, { durable_name: "R", ack_policy: AckPolicy.Explicit, replay_policy: ReplayPolicy.Original });
    const arrivals: number[] = [];
    for await (const m of await (await js.consumers.get(name, "R")).fetch({ max_messages: 2, expires: 5000 })) {
      arrivals.push(Date.now());
      m.ack();
    }
    assert.equal(arrivals.length, 2);
    // A lower bound only: a loaded machine can stretch the gap, never shrink it.
    assert.ok(arrivals[1] - arrivals[0] >= storedGap - 20, `delivered ${arrivals[1] - arrivals[0]} ms apart, stored ${storedGap} ms apart`);
  });

  test("ordered consumer reads the whole stream", async () => {
    const s = await stream(300, 7);
    const oc = await js.consumers.get(s.name);
    const seqs: number[] = [];
    for await (const m of await oc.fetch({ max_messages: 300, expires: 2000 })) seqs.push(m.seq);
    assert.equal(seqs.length, 300);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  });

  test("work queue retention: an ack removes the message; a second unfiltered consumer is refused", async () => {
    const s = await stream(4, 1, { retention: RetentionPolicy.Workqueue });
    await jsm.consumers.add(s.name, { durable_name: "WQ", ack_policy: AckPolicy.Explicit });
    assert.equal(await apiErrorCode(jsm.consumers.add(s.name, { durable_name: "WQ2", ack_policy: AckPolicy.Explicit })), 10099);
    const got = await fetchAll(s.name, "WQ", 4);
    for (const m of got.slice(0, 3)) await m.ackAck();
    const deadline = Date.now() + 5000;
    while ((await jsm.streams.info(s.name)).state.messages !== 1) {
      if (Date.now() > deadline) assert.fail("acked work-queue messages still stored");
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test("interest retention: kept until every interested consumer acked; dropped with no consumer", async () => {
    const s = await stream(0, 1, { retention: RetentionPolicy.Interest });
    await js.publish(`${s.prefix}.x`, "nobody");
    assert.equal((await jsm.streams.info(s.name)).state.messages, 0);
    await jsm.consumers.add(s.name, { durable_name: "A", ack_policy: AckPolicy.Explicit });
    await jsm.consumers.add(s.name, { durable_name: "B", ack_policy: AckPolicy.Explicit });
    await js.publish(`${s.prefix}.x`, "both");
    const [a] = await fetchAll(s.name, "A", 1);
    await a.ackAck();
    assert.equal((await jsm.streams.info(s.name)).state.messages, 1, "B has not acked");
    const [b] = await fetchAll(s.name, "B", 1);
    await b.ackAck();
    const deadline = Date.now() + 5000;
    while ((await jsm.streams.info(s.name)).state.messages !== 0) {
      if (Date.now() > deadline) assert.fail("message kept after both acks");
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test("interest retention: a message delivered to every consumer with ack_policy none goes, as nats-server removes it", async () => {
    const s = await stream(0, 1, { retention: RetentionPolicy.Interest });
    const deliver = createInbox();
    let pushed = 0;
    const sub = h.nc.subscribe(deliver, { callback: () => void pushed++ });
    await h.nc.flush();
    await jsm.consumers.add(s.name, { durable_name: "PUSH", ack_policy: AckPolicy.None, deliver_subject: deliver });
    await jsm.consumers.add(s.name, { durable_name: "PULL", ack_policy: AckPolicy.None });
    for (let i = 0; i < 5; i++) await js.publish(`${s.prefix}.x`, `m${i}`);
    await waitUntil(() => pushed === 5, "the push consumer's deliveries");
    assert.equal((await jsm.streams.info(s.name)).state.messages, 5, "the pull consumer has not had them");
    assert.equal((await fetchAll(s.name, "PULL", 5)).length, 5);
    await waitUntilAsync(async () => (await jsm.streams.info(s.name)).state.messages === 0, "the messages every consumer was given gone", 5000);
    sub.unsubscribe();
  });

  test("interest retention: a last_per_subject consumer's first messages stay until it acks them, whoever else acked them", async () => {
    const s = await stream(0, 1, { retention: RetentionPolicy.Interest });
    await jsm.consumers.add(s.name, { durable_name: "ALL", ack_policy: AckPolicy.Explicit });
    for (let i = 0; i < 6; i++) await js.publish(`${s.prefix}.${i % 2}`, `m${i}`);
    await jsm.consumers.add(s.name, { durable_name: "LAST", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.LastPerSubject, filter_subject: `${s.prefix}.*` });
    for (const m of await fetchAll(s.name, "ALL", 6)) await m.ackAck();
    // 5 and 6, the last of each subject, are LAST's still: ALL's acks take 1 to 4 only.
    await waitUntilAsync(async () => (await jsm.streams.info(s.name)).state.messages === 2, "1 to 4 gone", 5000);
    const last = await fetchAll(s.name, "LAST", 2);
    assert.deepEqual(last.map((m) => m.seq), [5, 6]);
    for (const m of last) await m.ackAck();
    await waitUntilAsync(async () => (await jsm.streams.info(s.name)).state.messages === 0, "5 and 6 gone once LAST acked them", 5000);
  });

  test("interest retention: deleting a consumer drops what only it still had to see, and keeps what another wants", async () => {
    const s = await stream(0, 1, { retention: RetentionPolicy.Interest });
    await jsm.consumers.add(s.name, { durable_name: "X", ack_policy: AckPolicy.Explicit, filter_subject: `${s.prefix}.x` });
    await jsm.consumers.add(s.name, { durable_name: "Y", ack_policy: AckPolicy.Explicit, filter_subject: `${s.prefix}.y` });
    await js.publish(`${s.prefix}.x`, "x1");
    await js.publish(`${s.prefix}.y`, "y1");
    await js.publish(`${s.prefix}.x`, "x2");
    assert.equal((await jsm.streams.info(s.name)).state.messages, 3);
    await jsm.consumers.delete(s.name, "X");
    const deadline = Date.now() + 5000;
    while ((await jsm.streams.info(s.name)).state.messages !== 1) {
      if (Date.now() > deadline) assert.fail("x1 and x2 kept after the only consumer interested in them went");
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await jsm.streams.getMessage(s.name, { seq: 2 }))?.string(), "y1", "Y has not acked it");
    await jsm.consumers.delete(s.name, "Y");
    while ((await jsm.streams.info(s.name)).state.messages !== 0) {
      if (Date.now() > deadline) assert.fail("y1 kept with no consumer left");
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test("an ephemeral consumer goes away after its inactive threshold", async () => {
    const s = await stream(1);
    const ci = await jsm.consumers.add(s.name, { ack_policy: AckPolicy.None, inactive_threshold: 300 * MS });
    assert.equal(ci.config.durable_name, undefined);
    const deadline = Date.now() + 5000;
    for (;;) {
      const code = await apiErrorCode(jsm.consumers.info(s.name, ci.name)).catch(() => 0);
      if (code === 10014) break;
      if (Date.now() > deadline) assert.fail("ephemeral consumer still there");
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test("memory storage: the same stream and consumer behaviour without files", async () => {
    const s = await stream(20, 2, { storage: "memory", max_msgs_per_subject: 5 });
    const st = (await jsm.streams.info(s.name)).state;
    assert.equal(st.messages, 10, "5 per subject kept");
    assert.equal(st.first_seq, 11);
    await jsm.consumers.add(s.name, { durable_name: "M", ack_policy: AckPolicy.Explicit });
    const got = await fetchAll(s.name, "M", 10);
    assert.deepEqual(got.map((m) => m.seq), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    assert.deepEqual(got.map((m) => m.info.pending), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  });

  test("backoff sets each redelivery's wait; +WPI pushes the deadline out", async () => {
    const s = await stream(2);
    // Steps long beside the 100 ms between +WPIs: a loaded machine may delay one by several hundred ms.
    await jsm.consumers.add(s.name, { durable_name: "B", ack_policy: AckPolicy.Explicit, backoff: [1000 * MS, 2000 * MS], max_deliver: 4 });
    const ci = await jsm.consumers.info(s.name, "B");
    assert.equal(ci.config.ack_wait, 1000 * MS, "ack_wait is the first backoff step");
    const [m1, m2] = await fetchAll(s.name, "B", 2);
    const t0 = Date.now();
    // m2 keeps asking for more time: it must not come back while m1 does.
    const keepAlive = setInterval(() => m2.working(), 100);
    try {
      const second = await fetchAll(s.name, "B", 1, 5000);
      assert.deepEqual(second.map((m) => [m.seq, m.info.deliveryCount]), [[1, 2]]);
      const third = await fetchAll(s.name, "B", 1, 6000);
      assert.deepEqual(third.map((m) => [m.seq, m.info.deliveryCount]), [[1, 3]]);
      assert.ok(Date.now() - t0 >= 2000, "the second backoff step (2 s) was waited");
    } finally {
      clearInterval(keepAlive);
    }
    void m1;
    await m2.ackAck();
  });

  test("a waiting pull request gets idle heartbeats", async () => {
    const s = await stream(0);
    await jsm.consumers.add(s.name, { durable_name: "HB", ack_policy: AckPolicy.Explicit });
    const inbox = createInbox();
    const got: Msg[] = [];
    h.nc.subscribe(inbox, {
      callback: (_e, m) => {
        got.push(m);
      },
    });
    h.nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${s.name}.HB`, JSON.stringify({ batch: 1, expires: 2000 * MS, idle_heartbeat: 200 * MS }), { reply: inbox });
    await waitUntil(() => got.length >= 2, "two heartbeats");
    assert.ok(got.slice(0, 2).every((m) => m.headers?.code === 100 && m.headers?.description === "Idle Heartbeat"));
    await js.publish(`${s.prefix}.x`, "late");
    await waitUntil(() => got.some((m) => m.string() === "late"), "the message once it arrives");
  });

  test("push consumer with a deliver group spreads messages over the group", async () => {
    const s = await stream(0);
    const deliver = createInbox();
    const a: number[] = [];
    const b: number[] = [];
    const sa = h.nc.subscribe(deliver, { queue: "g", callback: (_e, m) => void a.push(Number(m.string())) });
    const sb = h.nc.subscribe(deliver, { queue: "g", callback: (_e, m) => void b.push(Number(m.string())) });
    await jsm.consumers.add(s.name, { durable_name: "G", deliver_subject: deliver, deliver_group: "g", ack_policy: AckPolicy.None });
    for (let i = 0; i < 40; i++) await js.publish(`${s.prefix}.x`, `${i}`);
    await waitUntil(() => a.length + b.length === 40, "all 40 delivered once");
    assert.ok(a.length > 0 && b.length > 0, "both members got some");
    assert.deepEqual([...a, ...b].sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i));
    sa.unsubscribe();
    sb.unsubscribe();
  });
  test("a push consumer delivers only when its deliver subject has the interest nats-server counts: its group's members, else plain subscribers on exactly that subject", async () => {
    const s = await stream(0);
    // nats-server 2.9.10 (differential run): a deliver_group with only plain subscribers, or no group with only a queue
    // group or a wildcard subscriber, has no interest: nothing is delivered and push_bound is absent; the first
    // subscriber of the right kind then gets the messages from the start (consumer sequences 1..3).
    const NATS_SERVER = { pushBoundBefore: undefined, firstDeliveries: ["m1", "m2", "m3"], consumerSeq: 3 };
    const cases: Array<{ group?: string; others: Array<{ subject: (d: string) => string; queue?: string }>; right: { queue?: string } }> = [
      { group: "grp", others: [{ subject: (d) => d }], right: { queue: "grp" } },
      { group: "grp", others: [{ subject: (d) => d, queue: "other" }], right: { queue: "grp" } },
      { others: [{ subject: (d) => d, queue: "grp" }, { subject: (d) => `${d.slice(0, d.lastIndexOf("."))}.*` }], right: {} },
    ];
    for (const [i, c] of cases.entries()) {
      const deliver = `${createInbox()}.d${i}`;
      const subs = c.others.map((o) => h.nc.subscribe(o.subject(deliver), { queue: o.queue }));
      await h.nc.flush();
      const durable = `I${i}`;
      await jsm.consumers.add(s.name, { durable_name: durable, deliver_subject: deliver, deliver_group: c.group, deliver_policy: DeliverPolicy.New, ack_policy: AckPolicy.Explicit, ack_wait: 30_000 * MS });
      for (let k = 0; k < 3; k++) await js.publish(`${s.prefix}.x`, `m${i * 3 + k + 1}`);
      assert.equal((await jsm.consumers.info(s.name, durable)).push_bound, NATS_SERVER.pushBoundBefore, `case ${i}`);
      const got: string[] = [];
      const right = h.nc.subscribe(deliver, { queue: c.right.queue, callback: (_e, m) => void got.push(m.string()) });
      await waitUntil(() => got.length >= 3, `case ${i}: the right subscriber gets the stream's messages`);
      assert.deepEqual(got, NATS_SERVER.firstDeliveries.map((_, k) => `m${i * 3 + k + 1}`), `case ${i}`);
      const info = await jsm.consumers.info(s.name, durable);
      assert.equal(info.delivered.consumer_seq, NATS_SERVER.consumerSeq, `case ${i}: nothing went out before`);
      assert.equal(info.push_bound, true);
      right.unsubscribe();
      for (const sub of subs) sub.unsubscribe();
      await jsm.consumers.delete(s.name, durable);
    }
  });
  test("messages let go at max_deliver stay in num_redelivered until acked late or terminated, as nats-server 2.9.10 counts them", async () => {
    const s = await stream(2);
    await jsm.consumers.add(s.name, { durable_name: "MX", ack_policy: AckPolicy.Explicit, max_deliver: 2 });
    // nats-server 2.9.10's consumer info at each step (differential run); its ack floor stays at 0 after max_deliver,
    // nagare's moves past what was let go, as nats-server's main branch does (982db7699), so it is not compared here.
    const NATS_SERVER = { letGo: { num_redelivered: 2, num_ack_pending: 0 }, afterNew: 2, afterLateAck: 1, afterTerm: 0 };
    let first: JsMsg[] = [];
    for (let round = 0; round < 2; round++) {
      const got = await fetchAll(s.name, "MX", 2);
      assert.equal(got.length, 2);
      if (round === 0) first = got;
      for (const m of got) m.nak();
      await h.nc.flush();
    }
    const none = await rawPull(h.nc, s.name, "MX", JSON.stringify({ batch: 2, no_wait: true }));
    assert.deepEqual(none.map((a) => a.status?.code), [404], "both let go after two deliveries");
    let info = await jsm.consumers.info(s.name, "MX");
    assert.deepEqual({ num_redelivered: info.num_redelivered, num_ack_pending: info.num_ack_pending }, NATS_SERVER.letGo);
    await js.publish(`${s.prefix}.x`, "new");
    const [fresh] = await fetchAll(s.name, "MX", 1);
    await fresh.ackAck();
    assert.equal((await jsm.consumers.info(s.name, "MX")).num_redelivered, NATS_SERVER.afterNew);
    // Raw acks on the first deliveries' subjects: the client sends nothing for a message it already NAKed.
    const replyOf = (m: JsMsg): string => (m as unknown as { reply: string }).reply;
    h.nc.publish(replyOf(first[0]), "+ACK");
    await h.nc.flush();
    assert.equal((await jsm.consumers.info(s.name, "MX")).num_redelivered, NATS_SERVER.afterLateAck);
    h.nc.publish(replyOf(first[1]), "+TERM");
    await h.nc.flush();
    info = await jsm.consumers.info(s.name, "MX");
    assert.equal(info.num_redelivered, NATS_SERVER.afterTerm);
  });

  test("a consumer with 40,000 filter_subjects matches each message by index: publishing stays quick, and the right messages are delivered", { timeout: 60_000 }, async () => {
    await jsm.streams.add({ name: "MANYF", subjects: ["mf.>"] });
    // Literal filters and a few wildcards among them; "mf.none.*" and "mf.x" match nothing published.
    const filters = [...Array.from({ length: 40_000 }, (_, i) => `mf.${i}`), "mf.w.*", "mf.g.>", "mf.none.*"];
    const r = await api(h.nc, "$JS.API.CONSUMER.CREATE.MANYF.C", { stream_name: "MANYF", config: { durable_name: "C", ack_policy: "none", filter_subjects: filters } });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    // Trying each filter on every message stored and read took ~14 ms a message, the event loop held all along.
    const t0 = Date.now();
    const acks = [];
    for (let i = 0; i < 500; i++) acks.push(js.publish(["mf.7", "mf.x", "mf.w.q", "mf.g.a.b", "mf.39999"][i % 5], "m"));
    await Promise.all(acks);
    assert.ok(Date.now() - t0 < 5_000, `500 publishes took ${Date.now() - t0} ms`);
    const got = await rawPull(h.nc, "MANYF", "C", JSON.stringify({ batch: 1000, no_wait: true }));
    const subjects = got.filter((a) => a.status === undefined).map((a) => a.subject);
    assert.equal(subjects.length, 400);
    assert.deepEqual([...new Set(subjects)].sort(), ["mf.39999", "mf.7", "mf.g.a.b", "mf.w.q"]);
    assert.equal((await jsm.consumers.info("MANYF", "C")).num_pending, 0);
  });

  test("a message published on a subject with a '*' or '>' token is matched against many filters literally, as against a few", async () => {
    await jsm.streams.add({ name: "WILDF", subjects: ["wf.>"] });
    // Filters tried one by one (up to 16) and through the index (more): the same messages either way.
    for (const n of [3, 17]) {
      const filter_subjects = [...Array.from({ length: n - 1 }, (_, i) => `wf.f${i}`), "wf.g.*"];
      const r = await api(h.nc, `$JS.API.CONSUMER.CREATE.WILDF.C${n}`, { stream_name: "WILDF", config: { durable_name: `C${n}`, ack_policy: "none", filter_subjects } });
      assert.equal(r.error, undefined, JSON.stringify(r.error));
    }
    // A client may publish on such a subject (nats-server stores it, its '*' a token like any other): no filter above
    // matches "wf.*" or "wf.>" but for a wildcard of its own at that token; "wf.g.*" does match "wf.g.*" and "wf.g.>".
    for (const subject of ["wf.f1", "wf.*", "wf.>", "wf.g.*", "wf.g.>", "wf.*.x"]) await h.nc.request(subject, "m");
    for (const n of [3, 17]) {
      const got = await rawPull(h.nc, "WILDF", `C${n}`, JSON.stringify({ batch: 100, no_wait: true }));
      assert.deepEqual(got.filter((a) => a.status === undefined).map((a) => a.subject), ["wf.f1", "wf.g.*", "wf.g.>"], `${n} filters`);
    }
  });
});
