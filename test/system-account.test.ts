/**
 * The system account (issue 18): `$SYS` (made by default, or configured with
 * users, or another account named by `system_account`), the server's status
 * requests answered in nats-server's envelope with the monitoring endpoints'
 * JSON, the account events, and what other accounts may (and may not)
 * reach. Through the `nats` v2 and `@nats-io/transport-node` v3 clients.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as connectV2, type NatsConnection as ConnV2 } from "nats";
import { connect as connectV3, createInbox, type NatsConnection as ConnV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { dec, enc, generations, waitUntil } from "./helpers/clients.js";
import { natsServerPath, startNatsServer } from "./helpers/nats-server.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function ask(nc: ConnV2 | ConnV3, subject: string, body: unknown = undefined): Promise<Json> {
  const m = await nc.request(subject, body === undefined ? new Uint8Array() : enc(typeof body === "string" ? body : JSON.stringify(body)), { timeout: 5000 });
  return JSON.parse(dec(m.data)) as Json;
}

const SERVER_INFO_KEYS = ["name", "host", "id", "ver", "seq", "jetstream", "time"];

describe("the system account's requests", () => {
  let srv: NagareServer;
  let sys: ConnV2;
  let sys3: ConnV3;
  let a: ConnV3;
  before(async () => {
    srv = await startServer({
      port: 0,
      httpPort: 0,
      serverName: "sys-test",
      accounts: {
        $SYS: { users: [{ user: "sys", password: "sys" }] },
        A: { users: [{ user: "a", password: "a" }] },
      },
    });
    sys = await connectV2({ servers: srv.url, user: "sys", pass: "sys", name: "sys-v2" });
    sys3 = await connectV3({ servers: srv.url, user: "sys", pass: "sys", name: "sys-v3" });
    a = await connectV3({ servers: srv.url, user: "a", pass: "a", name: "a-conn" });
    a.subscribe("orders.>", { callback: () => {} });
    await a.flush();
  });
  after(async () => {
    await sys.close();
    await sys3.close();
    await a.close();
    await srv.close();
  });

  test("$SYS.REQ.SERVER.PING.VARZ answers with /varz's JSON in nats-server's envelope, to both client generations", async () => {
    const http = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/varz`)).json()) as Json;
    for (const nc of [sys, sys3]) {
      const r = await ask(nc, "$SYS.REQ.SERVER.PING.VARZ");
      assert.deepEqual(Object.keys(r), ["server", "data"]);
      assert.deepEqual(Object.keys(r.server), SERVER_INFO_KEYS);
      assert.equal(r.server.id, srv.broker.serverId);
      assert.equal(r.server.name, "sys-test");
      assert.equal(r.server.jetstream, false);
      assert.deepEqual(Object.keys(r.data), Object.keys(http), "the same endpoint, the same keys");
      assert.equal(r.data.server_id, srv.broker.serverId);
      assert.equal(r.data.port, srv.port);
      assert.equal(r.data.system_account, "$SYS");
    }
    // The sequence counts every system message: two answers, two numbers.
    const [x, y] = [await ask(sys, "$SYS.REQ.SERVER.PING.HEALTHZ"), await ask(sys, "$SYS.REQ.SERVER.PING.HEALTHZ")];
    assert.ok(y.server.seq > x.server.seq);
    assert.deepEqual(x.data, { status: "ok" });
  });

  test("STATSZ (also the bare PING and the server's own subject) says what nats-server's statsz says", async () => {
    for (const subject of ["$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.STATSZ", `$SYS.REQ.SERVER.${srv.broker.serverId}.STATSZ`]) {
      const r = await ask(sys, subject);
      assert.deepEqual(Object.keys(r), ["server", "statsz"], subject);
      assert.deepEqual(Object.keys(r.statsz), [
        "start",
        "mem",
        "cores",
        "cpu",
        "connections",
        "total_connections",
        "active_accounts",
        "subscriptions",
        "sent",
        "received",
        "slow_consumers",
        "active_servers",
      ]);
      assert.equal(r.statsz.connections, 3);
      assert.equal(r.statsz.active_accounts, 2, "$SYS and A have clients");
    }
    // Without a reply subject the answer goes where the periodic one goes.
    const to = `$SYS.SERVER.${srv.broker.serverId}.STATSZ`;
    const got = new Promise<Json>((resolve) => sys.subscribe(to, { max: 1, callback: (_e, m) => resolve(JSON.parse(dec(m.data)) as Json) }));
    await sys.flush();
    sys.publish("$SYS.REQ.SERVER.PING");
    assert.equal((await got).server.id, srv.broker.serverId);
  });

  test("CONNZ, SUBSZ, ACCOUNTZ and JSZ by the server's id and by PING; options in the body are the endpoint's options", async () => {
    const byId = await ask(sys, `$SYS.REQ.SERVER.${srv.broker.serverId}.CONNZ`, { auth: true });
    const names = (byId.data.connections as Json[]).map((c) => c.name).sort();
    assert.deepEqual(names, ["a-conn", "sys-v2", "sys-v3"]);
    assert.ok((byId.data.connections as Json[]).every((c) => typeof c.authorized_user === "string"), "auth: true shows the users");
    const withSubs = await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", { subscriptions: true, acc: "A" });
    assert.deepEqual(withSubs.data.connections.map((c: Json) => c.subscriptions_list), [["orders.>"]]);
    const detail = await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", { subscriptions_detail: true, acc: "A" });
    assert.equal(detail.data.connections[0].subscriptions_list_detail[0].subject, "orders.>");
    const subsz = await ask(sys, "$SYS.REQ.SERVER.PING.SUBSZ", { subscriptions: true, test: "orders.x" });
    assert.deepEqual(subsz.data.subscriptions_list.map((s: Json) => [s.account, s.subject]), [["A", "orders.>"]]);
    const accountz = await ask(sys, "$SYS.REQ.SERVER.PING.ACCOUNTZ");
    assert.equal(accountz.data.system_account, "$SYS");
    assert.deepEqual([...accountz.data.accounts].sort(), ["$G", "$SYS", "A"]);
    const one = await ask(sys, "$SYS.REQ.SERVER.PING.ACCOUNTZ", { account: "$SYS" });
    assert.equal(one.data.account_detail.is_system, true);
    const jsz = await ask(sys, "$SYS.REQ.SERVER.PING.JSZ");
    assert.equal(jsz.data.disabled, true);
  });

  test("$SYS.REQ.ACCOUNT.<account>.* answer about that account only", async () => {
    const connz = await ask(sys, "$SYS.REQ.ACCOUNT.A.CONNZ", { acc: "$SYS" });
    assert.deepEqual(connz.data.connections.map((c: Json) => c.name), ["a-conn"], "the subject's account, whatever the body says");
    const subsz = await ask(sys, "$SYS.REQ.ACCOUNT.A.SUBSZ");
    assert.ok(subsz.data.subscriptions_list.every((s: Json) => s.account === "A"));
    assert.ok(subsz.data.subscriptions_list.some((s: Json) => s.subject === "orders.>"));
    const info = await ask(sys, "$SYS.REQ.ACCOUNT.A.INFO");
    assert.equal(info.data.account_name, "A");
    assert.equal(info.data.client_connections, 1);
    assert.equal(info.data.is_system, undefined);
    assert.deepEqual(
      info.data.imports.map((i: Json) => [i.subject, i.to]),
      [
        ["$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.A.CONNZ"],
        ["$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.ACCOUNT.A.CONNZ"],
        ["$SYS.REQ.ACCOUNT.PING.STATZ", "$SYS.REQ.ACCOUNT.A.STATZ"],
      ],
    );
    const statz = await ask(sys, "$SYS.REQ.ACCOUNT.A.STATZ");
    assert.deepEqual(Object.keys(statz.data), ["server_id", "now", "account_statz"]);
    assert.deepEqual(Object.keys(statz.data.account_statz[0]), ["acc", "conns", "leafnodes", "total_conns", "sent", "received", "slow_consumers"]);
    assert.equal(statz.data.account_statz[0].conns, 1);
    const all = await ask(sys, "$SYS.REQ.ACCOUNT.PING.STATZ");
    assert.deepEqual(all.data.account_statz.map((s: Json) => s.acc).sort(), ["$SYS", "A"]);
    const conns = await ask(sys, "$SYS.REQ.ACCOUNT.A.CONNS");
    assert.equal(conns.type, "io.nats.server.advisory.v1.account_connections");
    assert.equal(conns.acc, "A");
    assert.equal(conns.conns, 1);
    const jsz = await ask(sys, "$SYS.REQ.ACCOUNT.A.JSZ");
    assert.deepEqual(jsz.error, { code: 500, description: "jetstream not enabled" });
    const nope = await ask(sys, "$SYS.REQ.ACCOUNT.NOPE.INFO");
    assert.deepEqual(nope.error, { code: 500, description: "Account NOPE does not exist" });
  });

  test("bad options get nats-server's errors; a request filtered to other servers gets no answer", async () => {
    const notJson = await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", "{nope");
    assert.equal(notJson.error.code, 400);
    assert.equal(notJson.data, undefined);
    const badState = await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", { state: 3 });
    assert.deepEqual(badState.error, { code: 400, description: "option state must be 0 (open), 1 (closed) or 2 (all), got 3" });
    // Zero values (what Go clients send for every field) are fine.
    assert.equal((await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", { state: 0, cid: 0, user: "", sort: "" })).error, undefined);
    const badInt = await ask(sys, "$SYS.REQ.SERVER.PING.CONNZ", { offset: "x" });
    assert.equal(badInt.error.code, 400);
    // Two requests to one inbox, the first for another server: only the second is answered.
    const inbox = createInbox();
    const answers: Json[] = [];
    sys3.subscribe(inbox, { callback: (_e, m) => void answers.push(JSON.parse(dec(m.data)) as Json) });
    await sys3.flush();
    sys3.publish("$SYS.REQ.SERVER.PING.VARZ", enc(JSON.stringify({ server_name: "elsewhere" })), { reply: inbox });
    sys3.publish("$SYS.REQ.SERVER.PING.VARZ", enc(JSON.stringify({ cluster: "c1" })), { reply: inbox });
    sys3.publish("$SYS.REQ.SERVER.PING.HEALTHZ", enc(JSON.stringify({ server_name: "sys-" })), { reply: inbox });
    await waitUntil(() => answers.length > 0, "the answer to the request for this server");
    await sys3.flush();
    assert.deepEqual(answers.map((x) => x.data), [{ status: "ok" }]);
  });

  test("another account's users reach only its own CONNZ and STATZ; nothing else of the system account", async () => {
    for (const gen of generations) {
      const nc = await gen.connect({ servers: srv.url, user: "a", pass: "a", name: `a-${gen.name}` } as never);
      try {
        const connz = JSON.parse(dec((await nc.request("$SYS.REQ.SERVER.PING.CONNZ", new Uint8Array(), { timeout: 5000 })).data)) as Json;
        // A's connections (the previous generation's may still be closing), never the system account's.
        const names: string[] = connz.data.connections.map((c: Json) => c.name);
        assert.ok(names.includes(`a-${gen.name}`) && names.includes("a-conn"), names.join());
        assert.ok(names.every((n) => n.startsWith("a-")), names.join());
        const viaAccount = JSON.parse(dec((await nc.request("$SYS.REQ.ACCOUNT.PING.CONNZ", enc('{"acc":"$SYS"}'), { timeout: 5000 })).data)) as Json;
        assert.ok(viaAccount.data.connections.every((c: Json) => c.name.startsWith("a-")), "whatever account the body names");
        const statz = JSON.parse(dec((await nc.request("$SYS.REQ.ACCOUNT.PING.STATZ", new Uint8Array(), { timeout: 5000 })).data)) as Json;
        assert.deepEqual(statz.data.account_statz.map((s: Json) => s.acc), ["A"]);
        for (const subject of ["$SYS.REQ.SERVER.PING.VARZ", "$SYS.REQ.SERVER.PING", "$SYS.REQ.ACCOUNT.A.CONNZ", `$SYS.REQ.SERVER.${srv.broker.serverId}.CONNZ`, "$SYS.REQ.ACCOUNT.A.INFO"]) {
          await assert.rejects(nc.request(subject, new Uint8Array(), { timeout: 5000 }), (err) => gen.isNoResponders(err), `${gen.name} ${subject}`);
        }
      } finally {
        await nc.close();
      }
    }
  });

  test("$SYS.ACCOUNT.<account>.CONNECT and DISCONNECT announce an account's clients to the system account", async () => {
    const events: Json[] = [];
    // Only this test's client: those of earlier tests may still be closing.
    const sub = sys.subscribe("$SYS.ACCOUNT.*.*", {
      callback: (_e, m) => {
        const e = JSON.parse(dec(m.data)) as Json;
        if (e.client?.name === "announced") events.push({ subject: m.subject, ...e });
      },
    });
    await sys.flush();
    const nc = await connectV2({ servers: srv.url, user: "a", pass: "a", name: "announced" });
    nc.publish("x", enc("12345"));
    await nc.flush();
    await nc.close();
    await waitUntil(() => events.some((e) => e.subject === "$SYS.ACCOUNT.A.DISCONNECT"), "the disconnect event");
    sub.unsubscribe();
    const [connect, disconnect] = events;
    assert.equal(connect.subject, "$SYS.ACCOUNT.A.CONNECT");
    assert.equal(connect.type, "io.nats.server.advisory.v1.client_connect");
    assert.deepEqual(Object.keys(connect), ["subject", "type", "id", "timestamp", "server", "client"]);
    assert.equal(connect.client.acc, "A");
    assert.equal(connect.client.user, "a");
    assert.equal(connect.client.name, "announced");
    assert.equal(connect.client.lang, "nats.js");
    assert.equal(connect.client.kind, "Client");
    assert.equal(connect.client.client_type, "nats");
    assert.equal(disconnect.type, "io.nats.server.advisory.v1.client_disconnect");
    assert.equal(disconnect.client.id, connect.client.id);
    assert.equal(typeof disconnect.client.stop, "string");
    assert.equal(disconnect.reason, "Client Closed");
    assert.deepEqual(disconnect.sent, { msgs: 1, bytes: 5 });
    assert.equal(events.length, 2);
  });
});

test("$SYS is made by default: a client of the default account may ask for its own CONNZ; no_system_account turns it all off", async () => {
  const srv = await startServer({ port: 0 });
  const off = await startServer({ port: 0, noSystemAccount: true });
  try {
    const nc = await connectV3({ servers: srv.url, name: "plain" });
    const connz = await ask(nc, "$SYS.REQ.SERVER.PING.CONNZ");
    assert.deepEqual(connz.data.connections.map((c: Json) => c.name), ["plain"]);
    await assert.rejects(nc.request("$SYS.REQ.SERVER.PING.VARZ", new Uint8Array(), { timeout: 5000 }), /503|no responders/i);
    await nc.close();
    const none = await connectV3({ servers: off.url });
    await assert.rejects(none.request("$SYS.REQ.SERVER.PING.CONNZ", new Uint8Array(), { timeout: 5000 }), /503|no responders/i);
    assert.equal(off.broker.accounts.has("$SYS"), false);
    await none.close();
  } finally {
    await srv.close();
    await off.close();
  }
});

test("system_account names a configured account: its users ask, and $SYS is not made", async () => {
  const srv = await startServer({ port: 0, systemAccount: "OPS", accounts: { OPS: { users: [{ user: "ops", password: "ops" }] } } });
  try {
    const nc = await connectV2({ servers: srv.url, user: "ops", pass: "ops" });
    const accountz = await ask(nc, "$SYS.REQ.SERVER.PING.ACCOUNTZ");
    assert.equal(accountz.data.system_account, "OPS");
    assert.deepEqual([...accountz.data.accounts].sort(), ["$G", "OPS"]);
    await nc.close();
  } finally {
    await srv.close();
  }
  await assert.rejects(startServer({ port: 0, systemAccount: "NOPE" }), /systemAccount: NOPE is not one of the accounts/);
});

test("side by side with nats-server 2.9: the same requests answer in the same shapes", { skip: natsServerPath() === null ? "nats-server is not installed" : false }, async () => {
  const conf = 'accounts { $SYS { users: [ { user: sys, password: sys } ] }, A { users: [ { user: a, password: a } ] } }\nsystem_account: "$SYS"';
  const ref = await startNatsServer(conf);
  const srv = await startServer({ port: 0, accounts: { $SYS: { users: [{ user: "sys", password: "sys" }] }, A: { users: [{ user: "a", password: "a" }] } } });
  /** The shape of a JSON value: keys (in order) and value types, arrays by their first element. */
  const shape = (v: unknown): unknown =>
    v === null || typeof v !== "object" ? (v === null ? "null" : typeof v) : Array.isArray(v) ? v.slice(0, 1).map(shape) : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]));
  const requests = [
    "$SYS.REQ.SERVER.PING",
    "$SYS.REQ.SERVER.PING.SUBSZ",
    "$SYS.REQ.SERVER.PING.ACCOUNTZ",
    "$SYS.REQ.SERVER.PING.HEALTHZ",
    "$SYS.REQ.SERVER.PING.JSZ",
    "$SYS.REQ.ACCOUNT.A.SUBSZ",
    "$SYS.REQ.ACCOUNT.A.STATZ",
    "$SYS.REQ.ACCOUNT.A.CONNS",
    "$SYS.REQ.ACCOUNT.A.JSZ",
    "$SYS.REQ.ACCOUNT.PING.STATZ",
    "$SYS.REQ.ACCOUNT.NOPE.INFO",
    "$SYS.REQ.SERVER.PING.CONNZ",
    "$SYS.REQ.ACCOUNT.A.CONNZ",
  ];
  const shapes = async (port: number): Promise<Record<string, unknown>> => {
    const a = await connectV2({ port, user: "a", pass: "a", name: "a-conn" });
    a.subscribe("foo.bar");
    await a.flush();
    const nc = await connectV2({ port, user: "sys", pass: "sys" });
    const out: Record<string, unknown> = {};
    for (const subject of requests) {
      const r = await ask(nc, subject);
      // Known difference: nagare names each connection's account (RTTs differ in value, not in shape).
      for (const c of r.data?.connections ?? []) {
        delete c.rtt;
        delete c.account;
      }
      out[subject] = shape(r);
    }
    await nc.close();
    await a.close();
    return out;
  };
  try {
    const [theirs, ours] = [await shapes(ref.port), await shapes(srv.port)];
    for (const subject of requests) assert.deepEqual(ours[subject], theirs[subject], subject);
  } finally {
    await ref.stop();
    await srv.close();
  }
});
