/**
 * The HTTP monitoring port, read the way ops tooling reads nats-server's:
 * /healthz, /varz, /connz, /subsz, /jsz and /metrics on a server without
 * JetStream, with traffic from a real client (monitor-jetstream.test.ts has
 * the streams).
 */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "nats";
import { startServer, type NagareServer } from "../src/index.js";
import { enc, waitUntil } from "./helpers/clients.js";
import { parseExposition, sampleOf } from "./helpers/prometheus.js";

let srv: NagareServer;
let nc: NatsConnection;

async function get(path: string): Promise<{ status: number; body: Record<string, any> }> {
  const res = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`);
  assert.equal(res.headers.get("content-type"), "application/json");
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function getText(path: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`);
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

before(async () => {
  srv = await startServer({ port: 0, httpPort: 0, maxPayload: 8192, serverName: "mon-test" });
  nc = await connect({ servers: srv.url, name: "monitor-probe" });
});

after(async () => {
  await nc.close();
  await srv.close();
});

test("/healthz answers ok, compact as nats-server writes it, with or without the JetStream options", async () => {
  for (const path of ["/healthz", "/healthz?js-enabled-only=true", "/healthz?js-server-only=1"]) {
    const { status, text } = await getText(path);
    assert.equal(status, 200, path);
    assert.equal(text, '{"status":"ok"}', path);
  }
});

test("a parameter that does not parse is a 400 with nats-server's text", async () => {
  const bad = await getText("/healthz?js-enabled-only=maybe");
  assert.equal(bad.status, 400);
  assert.equal(bad.text, `Error decoding boolean for 'js-enabled-only': strconv.ParseBool: parsing "maybe": invalid syntax`);
  const badInt = await getText("/connz?limit=ten");
  assert.equal(badInt.status, 400);
  assert.equal(badInt.text, `Error decoding int for 'limit': strconv.Atoi: parsing "ten": invalid syntax`);
  assert.equal((await getText("/jsz?streams=yes")).status, 400);
  assert.equal((await getText("/subsz?subs=2")).status, 400);
});

test("without JetStream, /varz has an empty jetstream object and /jsz says disabled", async () => {
  assert.deepEqual((await get("/varz")).body.jetstream, {});
  const { status, body } = await get("/jsz?streams=1&consumers=1");
  assert.equal(status, 200);
  assert.equal(body.disabled, true);
  assert.deepEqual(body.config, { max_memory: 0, max_storage: 0 });
  assert.equal(body.streams, 0);
  assert.equal(body.account_details, undefined);
});

test("/varz reports identity, limits and counts that follow traffic", async () => {
  const before = (await get("/varz")).body;
  assert.match(before.server_id, /^N[A-Z0-9]{55}$/);
  assert.equal(before.server_name, "mon-test");
  assert.match(before.version, /^\d+\.\d+\.\d+$/);
  assert.equal(before.port, srv.port);
  assert.equal(before.max_payload, 8192);
  assert.equal(typeof before.mem, "number");
  assert.ok(before.mem > 0);
  assert.match(before.uptime, /^\d+/);
  assert.equal(before.connections, 1);

  let got = 0;
  nc.subscribe("varz.count", { callback: () => got++ });
  for (let i = 0; i < 10; i++) nc.publish("varz.count", enc("12345"));
  await nc.flush();
  await waitUntil(() => got === 10, "messages");
  const afterVarz = (await get("/varz")).body;
  assert.ok(afterVarz.in_msgs - before.in_msgs >= 10);
  assert.ok(afterVarz.in_bytes - before.in_bytes >= 50);
  assert.ok(afterVarz.out_msgs - before.out_msgs >= 10);
  assert.ok(afterVarz.subscriptions >= 1);
  assert.ok(Date.parse(afterVarz.now) >= Date.parse(afterVarz.start));
});

test("/connz lists connections with their name and, on request, subscriptions", async () => {
  const sub = nc.subscribe("connz.subject");
  await nc.flush();
  try {
    const { body } = await get("/connz?subs=1");
    assert.equal(body.num_connections, 1);
    const c = body.connections[0];
    assert.equal(c.name, "monitor-probe");
    assert.equal(c.lang, "nats.js"); // as the v2 client announces itself
    assert.ok(c.subscriptions_list.includes("connz.subject"));
    assert.equal(c.ip, "127.0.0.1");

    const other = await connect({ servers: srv.url, name: "second" });
    try {
      const paged = (await get("/connz?limit=1&offset=1")).body;
      assert.equal(paged.total, 2);
      assert.equal(paged.num_connections, 1);
      assert.equal(paged.connections[0].name, "second");
    } finally {
      await other.close();
    }
  } finally {
    sub.unsubscribe();
  }
});

test("/connz?subs=detail lists each subscription with its sid, queue group, deliveries and limit", async () => {
  const probe = await connect({ servers: srv.url, name: "detail-probe" });
  const bareConn = await connect({ servers: srv.url, name: "bare" });
  try {
    let got = 0;
    probe.subscribe("detail.plain", { callback: () => got++ });
    probe.subscribe("detail.*", { queue: "workers", callback: () => got++ });
    probe.subscribe("detail.capped", { max: 5, callback: () => got++ });
    await probe.flush(); // the server has the subscriptions before the other connection publishes
    for (let i = 0; i < 3; i++) nc.publish("detail.plain", enc("x"));
    await nc.flush();
    await waitUntil(() => got === 6, "deliveries"); // 3 to the plain subscription, 3 to the queue group
    const { body } = await get("/connz?subs=detail&sort=cid");
    const c = body.connections.find((x: { name?: string }) => x.name === "detail-probe");
    assert.equal(c.subscriptions_list, undefined, "detail replaces the plain list, as in nats-server");
    // The client's own _INBOX subscription is there too; compare ours in sid order.
    const ours = c.subscriptions_list_detail.filter((d: { subject: string }) => d.subject.startsWith("detail."));
    assert.deepEqual(ours, [
      { subject: "detail.plain", sid: ours[0].sid, msgs: 3, cid: c.cid },
      { subject: "detail.*", qgroup: "workers", sid: ours[1].sid, msgs: 3, cid: c.cid },
      { subject: "detail.capped", sid: ours[2].sid, msgs: 0, max: 5, cid: c.cid },
    ]);
    const sids = ours.map((d: { sid: string }) => Number(d.sid));
    assert.ok(sids.every((n: number) => Number.isInteger(n) && n > 0));
    assert.deepEqual([...sids].sort((a, b) => a - b), sids, "in sid order");
    assert.equal(c.subscriptions_list_detail.length, c.subscriptions);
    // A connection without subscriptions has no list at all, as in nats-server (omitempty).
    const bare = (await get("/connz?subs=detail")).body.connections.find((x: { name?: string }) => x.name === "bare");
    assert.equal(bare.subscriptions, 0);
    assert.equal("subscriptions_list_detail" in bare, false);
  } finally {
    await probe.close();
    await bareConn.close();
    await waitUntil(() => srv.broker.connections.size === 1, "the server to see the probe go");
  }
});

test("/metrics is valid exposition whose counters follow traffic", async () => {
  const first = await getText("/metrics");
  assert.equal(first.status, 200);
  assert.equal(first.type, "text/plain; version=0.0.4; charset=utf-8");
  const before = parseExposition(first.text);
  const server = { server_id: (await get("/varz")).body.server_id };
  assert.equal(before.get("gnatsd_varz_in_msgs")!.type, "counter");
  assert.equal(before.get("gnatsd_varz_connections")!.type, "gauge");
  assert.equal(sampleOf(before, "gnatsd_varz_connections", server), 1);
  assert.equal(sampleOf(before, "jetstream_server_jetstream_disabled"), 1);
  assert.equal(before.has("jetstream_stream_total_messages"), false);
  assert.ok(sampleOf(before, "process_resident_memory_bytes") > 0);

  let got = 0;
  const sub = nc.subscribe("metrics.count", { callback: () => got++ });
  for (let i = 0; i < 10; i++) nc.publish("metrics.count", enc("12345"));
  await nc.flush();
  await waitUntil(() => got === 10, "messages");
  const after = parseExposition((await getText("/metrics")).text);
  sub.unsubscribe();
  assert.ok(sampleOf(after, "gnatsd_varz_in_msgs", server) - sampleOf(before, "gnatsd_varz_in_msgs", server) >= 10);
  assert.ok(sampleOf(after, "gnatsd_varz_out_bytes", server) - sampleOf(before, "gnatsd_varz_out_bytes", server) >= 50);
  assert.ok(sampleOf(after, "gnatsd_varz_subscriptions", server) >= 1);
  assert.ok(sampleOf(after, "process_cpu_seconds_total") >= sampleOf(before, "process_cpu_seconds_total"));
});

test("/subsz counts subscriptions and lists them filtered by a subject", async () => {
  const a = nc.subscribe("subsz.a.one");
  const b = nc.subscribe("subsz.*.two", { queue: "workers" });
  await nc.flush();
  try {
    const { body } = await get("/subsz?subs=1&test=subsz.x.two");
    assert.ok(body.num_subscriptions >= 2);
    assert.deepEqual(
      body.subscriptions_list.map((s: { subject: string; qgroup?: string }) => [s.subject, s.qgroup]),
      [["subsz.*.two", "workers"]],
    );
  } finally {
    a.unsubscribe();
    b.unsubscribe();
  }
});

test("an unknown path is a 404, not a crash", async () => {
  const { status } = await get("/nope");
  assert.equal(status, 404);
  assert.equal((await get("/healthz")).status, 200);
});

test("/gatewayz, /leafz and /accstatz answer as nats-server 2.9.10 does on a server without gateways or leaf nodes", async () => {
  // prometheus-nats-exporter and nats-surveyor poll these: a 404 was an error in every scrape.
  const serverId = (await get("/varz")).body.server_id as string;
  const gw = await get("/gatewayz?accs=1");
  assert.equal(gw.status, 200);
  assert.deepEqual({ ...gw.body, now: undefined }, { server_id: serverId, now: undefined, outbound_gateways: {}, inbound_gateways: {} });
  const leaf = await get("/leafz?subs=true");
  assert.deepEqual({ ...leaf.body, now: undefined }, { server_id: serverId, now: undefined, leafnodes: 0, leafs: null });
  assert.equal((await getText("/leafz?subs=maybe")).status, 400);

  // The probe's connection is in $G; a message it publishes is counted as received there.
  const before = (await get("/accstatz")).body.account_statz as Array<Record<string, any>>;
  assert.deepEqual(before.map((a) => a.acc), ["$G"], "only accounts with connections, without unused=1");
  nc.publish("accstatz.x", enc("12345"));
  await nc.flush();
  const g = ((await get("/accstatz")).body.account_statz as Array<Record<string, any>>)[0];
  assert.equal(g.conns, 1);
  assert.equal(g.received.msgs, before[0].received.msgs + 1);
  assert.equal(g.received.bytes, before[0].received.bytes + 5);
  const all = (await get("/accstatz?unused=1")).body.account_statz as Array<Record<string, any>>;
  assert.ok(all.some((a) => a.acc === "$SYS" && a.conns === 0), "unused=1 lists the system account too");
});
