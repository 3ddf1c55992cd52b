/**
 * Monitoring of streams and consumers over real HTTP, with the official v3
 * clients publishing, consuming and acknowledging: /jsz in nats-server's
 * shapes and parameters, /varz's jetstream object, /healthz's stream checks,
 * and the JetStream families of /metrics, including storage damage.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, StorageType, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { startJs, type JsHarness } from "./helpers/js.js";
import { parseExposition, sampleOf, type Family } from "./helpers/prometheus.js";
import type { LogState, MessageLog } from "../src/store/log.js";

type Json = Record<string, any>;

describe("monitoring with JetStream", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  before(async () => {
    h = await startJs({ server: { httpPort: 0, serverName: "js-mon" } });
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => h.close());

  async function fetchHttp(path: string): Promise<Response> {
    return fetch(`http://127.0.0.1:${h.srv.httpPort}${path}`);
  }
  async function get(path: string, status = 200): Promise<Json> {
    const res = await fetchHttp(path);
    assert.equal(res.status, status, path);
    return (await res.json()) as Json;
  }
  async function scrape(): Promise<Map<string, Family>> {
    return parseExposition(await (await fetchHttp("/metrics")).text());
  }
  function streamDetail(jsz: Json, name: string): Json {
    const d = jsz.account_details[0].stream_detail.find((s: Json) => s.name === name);
    assert.ok(d, `stream ${name} in /jsz`);
    return d;
  }

  // First, so that the server-wide totals are exactly these two streams.
  test("/jsz reports config and usage, and per-account, stream and consumer detail only when asked", async () => {
    await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
    await jsm.streams.add({ name: "MEM", subjects: ["mem.>"], storage: StorageType.Memory });
    for (let i = 0; i < 10; i++) await js.publish("orders.new", `order ${i}`);
    for (let i = 0; i < 3; i++) await js.publish("mem.x", `m${i}`);
    await jsm.streams.deleteMessage("ORDERS", 3);
    await jsm.consumers.add("ORDERS", { durable_name: "proc", ack_policy: AckPolicy.Explicit });
    const orders = await jsm.streams.info("ORDERS");
    const mem = await jsm.streams.info("MEM");

    const top = await get("/jsz");
    assert.match(top.server_id, /^N[A-Z0-9]{55}$/);
    assert.deepEqual(top.config, { max_memory: -1, max_storage: -1, store_dir: h.storeDir, sync_always: true });
    assert.equal(top.streams, 2);
    assert.equal(top.consumers, 1);
    assert.equal(top.messages, 12);
    assert.equal(top.memory, mem.state.bytes);
    assert.equal(top.storage, orders.state.bytes);
    assert.equal(top.bytes, top.memory + top.storage);
    assert.equal(top.accounts, 1);
    assert.equal(top.api.errors, 0);
    assert.ok(top.api.total >= 5, "stream adds, a delete, a consumer add and the info calls");
    assert.equal(top.account_details, undefined);
    assert.equal(top.num_lost, undefined);
    assert.equal(top.storage_errors, undefined);

    const accounts = await get("/jsz?accounts=true");
    assert.deepEqual(Object.keys(accounts.account_details[0]), ["name", "id", "memory", "storage", "reserved_memory", "reserved_storage", "accounts", "ha_assets", "api"]);
    assert.equal(accounts.account_details[0].name, "$G");
    assert.equal(accounts.account_details[0].storage, top.storage);

    const streams = await get("/jsz?streams=1");
    assert.deepEqual(
      streams.account_details[0].stream_detail.map((s: Json) => s.name),
      ["MEM", "ORDERS"],
    );
    const o = streamDetail(streams, "ORDERS");
    assert.deepEqual(o.cluster, { leader: "js-mon" });
    assert.equal(o.config, undefined);
    assert.equal(o.consumer_detail, undefined);
    assert.equal(o.partitions, undefined);
    assert.deepEqual(Object.keys(o.state), ["messages", "bytes", "first_seq", "first_ts", "last_seq", "last_ts", "num_subjects", "num_deleted", "consumer_count"]);
    assert.deepEqual(
      { ...o.state, first_ts: undefined, last_ts: undefined },
      { messages: 9, bytes: orders.state.bytes, first_seq: 1, first_ts: undefined, last_seq: 10, last_ts: undefined, num_subjects: 1, num_deleted: 1, consumer_count: 1 },
    );
    assert.ok(Date.parse(o.state.first_ts) <= Date.parse(o.state.last_ts));
    assert.equal(o.state.last_ts, orders.state.last_ts);

    const consumers = await get("/jsz?consumers=1");
    const proc = streamDetail(consumers, "ORDERS").consumer_detail;
    assert.equal(proc.length, 1);
    assert.equal(proc[0].name, "proc");
    assert.equal(proc[0].num_pending, 9);
    assert.equal(proc[0].config, undefined, "config only with config=1, as nats-server");
    assert.equal(streamDetail(consumers, "MEM").consumer_detail, undefined);

    const withConfig = await get("/jsz?consumers=1&config=1");
    assert.equal(streamDetail(withConfig, "ORDERS").config.subjects[0], "orders.>");
    assert.equal(streamDetail(withConfig, "ORDERS").consumer_detail[0].config.durable_name, "proc");

    // acc= names an account whatever else is asked; an unknown one falls back to the other options (nats-server 2.9).
    const acc = await get("/jsz?acc=$G");
    assert.equal(acc.account_details[0].name, "$G");
    assert.equal(acc.account_details[0].stream_detail, undefined);
    assert.equal((await get("/jsz?acc=nobody")).account_details, undefined);
    assert.equal((await get("/jsz?acc=nobody&streams=1")).account_details[0].stream_detail.length, 2);
    // offset and limit page accounts, not streams.
    assert.equal((await get("/jsz?streams=1&offset=1")).account_details, undefined);
    assert.equal((await get("/jsz?streams=1&limit=1")).account_details[0].stream_detail.length, 2);
    assert.equal((await get("/jsz?streams=1&offset=-1")).account_details.length, 1, "a negative offset is 0, not a crash");

    const bad = await fetchHttp("/jsz?consumers=sure");
    assert.equal(bad.status, 400);
    assert.equal(await bad.text(), `Error decoding boolean for 'consumers': strconv.ParseBool: parsing "sure": invalid syntax`);

    // An API error is counted.
    await assert.rejects(jsm.streams.info("NOPE"));
    const after = await get("/jsz");
    assert.equal(after.api.errors, 1);
    assert.ok(after.api.total > top.api.total);
  });

  test("/varz's jetstream object carries /jsz's config and stats", async () => {
    const varz = await get("/varz");
    const jsz = await get("/jsz");
    assert.deepEqual(varz.jetstream.config, jsz.config);
    assert.deepEqual(Object.keys(varz.jetstream.stats), ["memory", "storage", "reserved_memory", "reserved_storage", "accounts", "ha_assets", "api"]);
    assert.equal(varz.jetstream.stats.memory, jsz.memory);
    assert.equal(varz.jetstream.stats.storage, jsz.storage);
    assert.deepEqual(varz.jetstream.stats.api, jsz.api);
  });

  test("/metrics shows stream totals and consumer lag following fetches and acks", async () => {
    await jsm.streams.add({ name: "LAG", subjects: ["lag.>"] });
    for (let i = 0; i < 6; i++) await js.publish("lag.x", `m${i}`);
    await jsm.consumers.add("LAG", { durable_name: "worker", ack_policy: AckPolicy.Explicit });
    const stream = { stream_name: "LAG", account: "$G", server_name: "js-mon" };
    const consumer = { ...stream, consumer_name: "worker" };

    const m0 = await scrape();
    assert.equal(m0.get("jetstream_consumer_num_pending")!.type, "gauge");
    assert.equal(sampleOf(m0, "jetstream_stream_total_messages", stream), 6);
    assert.equal(sampleOf(m0, "jetstream_stream_last_seq", stream), 6);
    assert.equal(sampleOf(m0, "jetstream_stream_consumer_count", stream), 1);
    assert.equal(sampleOf(m0, "jetstream_consumer_num_pending", consumer), 6);
    assert.equal(sampleOf(m0, "jetstream_consumer_num_ack_pending", consumer), 0);
    assert.equal(sampleOf(m0, "nagare_stream_storage_error", { ...stream, partition: "0" }), 0);

    const c = await js.consumers.get("LAG", "worker");
    const got = [];
    for await (const m of await c.fetch({ max_messages: 4, expires: 2000 })) got.push(m);
    assert.equal(got.length, 4);
    const m1 = await scrape();
    assert.equal(sampleOf(m1, "jetstream_consumer_num_pending", consumer), 2);
    assert.equal(sampleOf(m1, "jetstream_consumer_num_ack_pending", consumer), 4);
    assert.equal(sampleOf(m1, "jetstream_consumer_delivered_stream_seq", consumer), 4);
    assert.equal(sampleOf(m1, "jetstream_consumer_ack_floor_stream_seq", consumer), 0);

    for (const m of got) await m.ackAck();
    const m2 = await scrape();
    assert.equal(sampleOf(m2, "jetstream_consumer_num_ack_pending", consumer), 0);
    assert.equal(sampleOf(m2, "jetstream_consumer_ack_floor_stream_seq", consumer), 4);
    assert.equal(sampleOf(m2, "jetstream_consumer_ack_floor_consumer_seq", consumer), 4);
    assert.ok(sampleOf(m2, "nagare_jetstream_api_requests_total", { server_name: "js-mon" }) > 0);
    assert.equal(m2.get("nagare_jetstream_api_requests_total")!.type, "counter");
    assert.equal(sampleOf(m2, "jetstream_server_jetstream_disabled"), 0);
  });

  test("/metrics escapes a stream name with a quote in it", async () => {
    await h.srv.jetstream!.createStream({ name: 'say"hi', subjects: ["quote.>"] });
    await js.publish("quote.x", "q");
    const text = await (await fetchHttp("/metrics")).text();
    assert.ok(text.includes('stream_name="say\\"hi"'));
    assert.equal(sampleOf(parseExposition(text), "jetstream_stream_total_messages", { stream_name: 'say"hi' }), 1);
  });

  test("a stream with several partitions: totals over all of them, and each partition in /jsz", async () => {
    await h.srv.jetstream!.createStream({ name: "TOPIC", subjects: ["topic.>"] }, 3);
    for (let i = 0; i < 12; i++) {
      const hdrs = natsHeaders();
      hdrs.set("Nats-Key", `key-${i}`);
      await js.publish("topic.x", `v${i}`, { headers: hdrs });
    }
    const t = streamDetail(await get("/jsz?streams=1"), "TOPIC");
    assert.equal(t.partitions.length, 3);
    assert.deepEqual(
      t.partitions.map((p: Json) => p.partition),
      [0, 1, 2],
    );
    assert.equal(
      t.partitions.reduce((n: number, p: Json) => n + p.messages, 0),
      12,
    );
    assert.ok(t.partitions.filter((p: Json) => p.messages > 0).length >= 2, "keys spread over partitions");
    assert.equal(t.state.messages, 12, "state totals every partition, as stream info shows it");
    const m = await scrape();
    assert.equal(sampleOf(m, "jetstream_stream_total_messages", { stream_name: "TOPIC" }), 12);
    for (const partition of ["0", "1", "2"]) assert.equal(sampleOf(m, "nagare_stream_storage_error", { stream_name: "TOPIC", partition }), 0);
  });

  /**
   * What the store reports about damage, substituted into one partition's
   * state: the store's own tests make real damage; here the question is how
   * monitoring shows what the store says.
   */
  function reportDamage(log: MessageLog, damage: Partial<LogState>): () => void {
    const real = log.state.bind(log);
    log.state = () => ({ ...real(), ...damage });
    return () => {
      delete (log as Partial<MessageLog>).state;
    };
  }

  test("lost sequences: nats-server's lost, bounded to 1000 listed, counted in /jsz and /metrics; /healthz stays ok", async () => {
    await jsm.streams.add({ name: "DMG", subjects: ["dmg.>"] });
    for (let i = 0; i < 5; i++) await js.publish("dmg.x", `d${i}`);
    const log = h.srv.jetstream!.streams.get("DMG")!.partitions[0];
    const restore = reportDamage(log, {
      lost: [
        { from: 10, to: 5009, bytes: 500_000 },
        { from: 2, to: 3, bytes: 100 },
      ],
    });
    try {
      const jsz = await get("/jsz?streams=1");
      assert.equal(jsz.num_lost, 5002);
      const st = streamDetail(jsz, "DMG").state;
      assert.equal(st.num_lost, 5002);
      assert.equal(st.lost.bytes, 500_100);
      assert.equal(st.lost.msgs.length, 1000);
      assert.deepEqual(st.lost.msgs.slice(0, 4), [2, 3, 10, 11]);
      assert.equal(st.lost.msgs[999], 1007);
      assert.deepEqual(Object.keys(st).slice(-3), ["lost", "num_lost", "consumer_count"]);
      assert.equal((await fetchHttp("/healthz")).status, 200, "lost data is history; the stream still serves");
      const m = await scrape();
      assert.equal(sampleOf(m, "nagare_stream_lost_messages", { stream_name: "DMG", partition: "0" }), 5002);
      assert.equal(sampleOf(m, "nagare_stream_lost_bytes", { stream_name: "DMG", partition: "0" }), 500_100);
    } finally {
      restore();
    }
    assert.equal(streamDetail(await get("/jsz?streams=1"), "DMG").state.lost, undefined);
  });

  test("a partition refusing appends after a storage error makes /healthz unavailable, and shows in /jsz and /metrics", async () => {
    const log = h.srv.jetstream!.streams.get("DMG")!.partitions[0];
    const restore = reportDamage(log, { error: "fdatasync: EIO: i/o error" });
    try {
      const res = await fetchHttp("/healthz");
      assert.equal(res.status, 503);
      assert.equal(
        await res.text(),
        JSON.stringify({ status: "unavailable", error: "JetStream stream '$G > DMG' partition 0 refuses appends after a storage error: fdatasync: EIO: i/o error" }),
      );
      assert.equal((await fetchHttp("/healthz?js-enabled-only=1")).status, 200, "JetStream is on");
      assert.equal((await fetchHttp("/healthz?js-server-only=true")).status, 200, "the server is up; streams are not asked");
      const jsz = await get("/jsz?streams=1");
      assert.equal(jsz.storage_errors, 1);
      assert.equal(streamDetail(jsz, "DMG").state.storage_error, "fdatasync: EIO: i/o error");
      assert.equal(sampleOf(await scrape(), "nagare_stream_storage_error", { stream_name: "DMG", partition: "0" }), 1);
    } finally {
      restore();
    }
    assert.equal((await fetchHttp("/healthz")).status, 200);
    assert.equal((await get("/jsz")).storage_errors, undefined);
  });
});

test("/jsz shows sync_interval when acks do not wait for an fsync", async () => {
  const h = await startJs({ server: { httpPort: 0, syncInterval: 5000 } });
  try {
    const res = await fetch(`http://127.0.0.1:${h.srv.httpPort}/jsz`);
    const jsz = (await res.json()) as Json;
    assert.deepEqual(jsz.config, { max_memory: -1, max_storage: -1, store_dir: h.storeDir, sync_interval: 5_000_000_000 });
  } finally {
    await h.close();
  }
});
