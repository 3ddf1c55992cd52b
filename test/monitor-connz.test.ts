/**
 * /connz's options, each as nats-server 2.10 reads it (or refused): filters
 * by cid, user, account and MQTT client, every sort option and its 400s,
 * and the ring of closed connections (`state=closed|all`, `reason`, `stop`,
 * `max_closed_clients`). Over HTTP and the system account's CONNZ request,
 * which share one implementation. With real clients (`nats` v2).
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect as rawConnect } from "node:net";
import { connect, type NatsConnection } from "nats";
import { startServer, type NagareServer } from "../src/index.js";
import { optionsFromConf } from "../src/server/conf-options.js";
import { parseConf } from "../src/server/conf-parser.js";
import { dec, enc, waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClosedConnections, MAX_CLOSED_SUBSCRIPTIONS_KEPT, type ClosedConnection } from "../src/core/closed-connections.js";
import type { ConnectionInfo } from "../src/core/broker.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe("/connz options", () => {
  let srv: NagareServer;
  let bob: NatsConnection;
  let alice: NatsConnection;
  let other: NatsConnection;
  let sys: NatsConnection;

  const get = async (path: string): Promise<{ status: number; text: string; body: Json }> => {
    const res = await fetch(`http://127.0.0.1:${srv.httpPort}${path}`);
    const text = await res.text();
    return { status: res.status, text, body: res.status === 200 ? (JSON.parse(text) as Json) : {} };
  };
  const cids = (body: Json): number[] => (body.connections as Json[]).map((c) => c.cid as number);
  /** The server's id for a client: the one its INFO gave it. */
  const cidOf = async (nc: NatsConnection): Promise<number> => nc.info!.client_id;
  const closed = async (): Promise<Json[]> => (await get("/connz?state=closed")).body.connections as Json[];

  before(async () => {
    srv = await startServer({
      port: 0,
      httpPort: 0,
      maxClosedClients: 3,
      authTimeout: 300,
      serverTags: ["Region:Tokyo", "ssd"],
      accounts: {
        A: { users: [{ user: "bob", password: "b" }, { user: "alice", password: "a" }] },
        B: { users: [{ user: "carol", password: "c" }] },
        $SYS: { users: [{ user: "sys", password: "s" }] },
      },
    });
    bob = await connect({ servers: srv.url, user: "bob", pass: "b", name: "bob" });
    alice = await connect({ servers: srv.url, user: "alice", pass: "a", name: "alice" });
    other = await connect({ servers: srv.url, user: "carol", pass: "c", name: "carol" });
    sys = await connect({ servers: srv.url, user: "sys", pass: "s", name: "sys" });
    bob.subscribe("orders.>");
    alice.subscribe("stock.*", { queue: "q" });
    await Promise.all([bob.flush(), alice.flush()]);
  });

  after(async () => {
    for (const nc of [bob, alice, other, sys]) if (!nc.isClosed()) await nc.close();
    await srv.close();
  });

  test("cid, user and acc select the matching connections; an unknown cid none", async () => {
    const bobCid = await cidOf(bob);
    const one = await get(`/connz?cid=${bobCid}`);
    assert.equal(one.status, 200);
    assert.deepEqual(cids(one.body), [bobCid]);
    assert.equal(one.body.limit, 1);
    const none = await get("/connz?cid=99999");
    assert.equal(none.status, 200);
    assert.deepEqual(none.body.connections, []);
    assert.equal(none.body.num_connections, 0);
    const byUser = await get("/connz?user=alice&auth=1");
    assert.deepEqual(cids(byUser.body), [await cidOf(alice)]);
    assert.equal(byUser.body.connections[0].authorized_user, "alice");
    assert.deepEqual((await get("/connz?user=nobody")).body.connections, []);
    assert.deepEqual(cids((await get("/connz?acc=B")).body), [await cidOf(other)]);
    assert.deepEqual(cids((await get("/connz?acc=A")).body).sort(), [bobCid, await cidOf(alice)].sort());
    // nagare has no MQTT door: no connection has an MQTT client id.
    const mqtt = await get("/connz?mqtt_client=dev1");
    assert.equal(mqtt.status, 200);
    assert.deepEqual(mqtt.body.connections, []);
  });

  test("values and sort options nats-server refuses are a 400 with its text", async () => {
    const cases: Array<[string, string]> = [
      ["/connz?sort=bogus", "invalid sorting option: bogus"],
      ["/connz?sort=stop", "sort by stop only valid on closed connections"],
      ["/connz?sort=reason", "sort by reason only valid on closed connections"],
      ["/connz?cid=abc", `Error decoding uint64 for 'cid': strconv.ParseUint: parsing "abc": invalid syntax`],
      ["/connz?cid=-1", `Error decoding uint64 for 'cid': strconv.ParseUint: parsing "-1": invalid syntax`],
      ["/connz?state=bogus", "Error decoding state for bogus"],
      ["/connz?auth=maybe", `Error decoding boolean for 'auth': strconv.ParseBool: parsing "maybe": invalid syntax`],
      ["/connz?filter_subject=orders.*", "filter by subject only valid with account filtering"],
    ];
    for (const [path, text] of cases) {
      const r = await get(path);
      assert.equal(r.status, 400, path);
      assert.equal(r.text, text, path);
    }
  });

  test("every sort option nats-server 2.10 has sorts; entries carry rtt", async () => {
    for (const sort of ["cid", "start", "subs", "pending", "msgs_to", "msgs_from", "bytes_to", "bytes_from", "last", "idle", "uptime", "rtt"]) {
      const r = await get(`/connz?sort=${sort}`);
      assert.equal(r.status, 200, sort);
      assert.equal(r.body.num_connections, 4, sort);
    }
    const subs = (await get("/connz?sort=subs")).body.connections as Json[];
    assert.ok(subs[0].subscriptions >= subs[subs.length - 1].subscriptions);
    for (const c of (await get("/connz")).body.connections as Json[]) assert.match(c.rtt, /^\d+(\.\d+)?(ns|µs|ms|s)$/, `cid ${c.cid}`);
    const rtts = (await get("/connz?sort=rtt")).body.connections as Json[];
    const ns = (s: string): number => parseFloat(s) * { ns: 1, µs: 1e3, ms: 1e6, s: 1e9 }[s.replace(/^[\d.]+/, "") as "ns"];
    for (let i = 1; i < rtts.length; i++) assert.ok(ns(rtts[i - 1].rtt) >= ns(rtts[i].rtt), "rtt descending");
  });

  test("filter_subject (with acc) keeps connections whose interest overlaps it", async () => {
    const r = await get("/connz?acc=A&filter_subject=orders.new");
    assert.deepEqual(cids(r.body), [await cidOf(bob)]);
  });

  test("closed connections are kept with reason and stop, filtered, sorted and bounded by max_closed_clients", async () => {
    const gone = await connect({ servers: srv.url, user: "carol", pass: "c", name: "gone" });
    gone.subscribe("bye.*", { queue: "g" });
    await gone.flush();
    const goneCid = await cidOf(gone);
    await gone.close();
    await waitUntilAsync(async () => (await closed()).some((c) => c.cid === goneCid), "the closed connection in /connz?state=closed");
    const r = await get(`/connz?state=closed&cid=${goneCid}&subs=detail&auth=1`);
    assert.equal(r.status, 200);
    const [c] = r.body.connections as Json[];
    assert.equal(c.reason, "Client Closed");
    assert.equal(c.name, "gone");
    assert.equal(c.authorized_user, "carol");
    assert.ok(Date.parse(c.stop) >= Date.parse(c.start));
    assert.deepEqual(Object.keys(c).slice(Object.keys(c).indexOf("last_activity"), Object.keys(c).indexOf("last_activity") + 3), ["last_activity", "stop", "reason"]);
    assert.deepEqual(c.subscriptions_list_detail, [{ account: "B", subject: "bye.*", qgroup: "g", sid: "1", msgs: 0, cid: goneCid }]);
    assert.deepEqual((await get(`/connz?state=closed&subs=1&cid=${goneCid}`)).body.connections[0].subscriptions_list, ["bye.*"]);
    // Open ones are not closed ones; all is both.
    assert.ok(!cids((await get("/connz")).body).includes(goneCid));
    const all = await get("/connz?state=all");
    assert.ok(cids(all.body).includes(goneCid) && cids(all.body).includes(await cidOf(bob)));
    assert.deepEqual(cids((await get("/connz?state=closed&acc=A")).body).includes(goneCid), false);
    assert.equal((await get("/connz?state=closed&sort=stop")).status, 200);
    assert.equal((await get("/connz?state=closed&sort=reason")).status, 200);

    // A client that never sends CONNECT is closed by the auth timer, and says so.
    const sock = rawConnect(srv.port, "127.0.0.1");
    sock.on("error", () => {});
    await waitUntilAsync(async () => (await closed()).some((c) => c.reason === "Authentication Timeout"), "the auth timeout in the closed list");
    sock.destroy();
    const timedOut = ((await get("/connz?state=closed&auth=1")).body.connections as Json[]).find((c) => c.reason === "Authentication Timeout")!;
    assert.equal(timedOut.account, undefined, "never in an account");

    // A failed login is listed with the user it claimed and no account, as nats-server lists it.
    await assert.rejects(connect({ servers: srv.url, user: "carol", pass: "wrong", name: "refused", reconnect: false }));
    await waitUntilAsync(async () => (await closed()).some((c) => c.name === "refused"), "the failed login in the closed list");
    const refused = ((await get("/connz?state=closed&auth=1")).body.connections as Json[]).find((c) => c.name === "refused")!;
    assert.equal(refused.reason, "Authentication Failure");
    assert.equal(refused.authorized_user, "carol");
    assert.equal(refused.account, undefined, "never in an account");
    assert.equal(((await get("/connz?state=closed")).body.connections as Json[]).find((c) => c.name === "refused")!.authorized_user, undefined, "users only with auth=1");

    // The ring holds max_closed_clients (3 here): the oldest go first.
    for (let i = 0; i < 3; i++) {
      const nc = await connect({ servers: srv.url, user: "carol", pass: "c", name: `churn-${i}` });
      await nc.close();
    }
    await waitUntilAsync(async () => (await closed()).some((c) => c.name === "churn-2"), "the last churned connection closed");
    const kept = await get("/connz?state=closed");
    assert.deepEqual((kept.body.connections as Json[]).map((c) => c.name), ["churn-0", "churn-1", "churn-2"]);
    assert.equal(kept.body.total, 3);
    const newest = await get("/connz?state=closed&sort=stop&limit=1");
    assert.equal(newest.body.connections[0].name, "churn-2");
  });

  test("the system account's CONNZ request takes the same options, as nats-server's ConnzOptions", async () => {
    const ask = async (body: unknown): Promise<Json> => JSON.parse(dec((await sys.request("$SYS.REQ.SERVER.PING.CONNZ", enc(JSON.stringify(body)), { timeout: 5000 })).data)) as Json;
    const bobCid = await cidOf(bob);
    assert.deepEqual(cids((await ask({ cid: bobCid })).data), [bobCid]);
    assert.deepEqual((await ask({ cid: 99999 })).data.connections, []);
    assert.deepEqual(cids((await ask({ user: "alice" })).data), [await cidOf(alice)]);
    assert.deepEqual(cids((await ask({ acc: "A", filter_subject: "orders.x" })).data), [bobCid]);
    const closedOnes = (await ask({ state: 1 })).data.connections as Json[];
    assert.ok(closedOnes.length > 0 && closedOnes.every((c) => typeof c.reason === "string" && typeof c.stop === "string"));
    assert.deepEqual((await ask({ sort: "bogus" })).error, { code: 400, description: "invalid sorting option: bogus" });
    assert.deepEqual((await ask({ sort: "stop" })).error, { code: 400, description: "sort by stop only valid on closed connections" });
    assert.equal((await ask({ state: 7 })).error.code, 400);
    // Zero values (what Go clients send for every field) are fine.
    assert.equal((await ask({ state: 0, cid: 0, user: "", mqtt_client: "", filter_subject: "", sort: "" })).error, undefined);
  });

  test("/varz says auth_required and the server's tags", async () => {
    const v = (await get("/varz")).body;
    assert.equal(v.auth_required, true);
    assert.deepEqual(v.tags, ["region:tokyo", "ssd"]);
  });
});

test("max_closed_clients in the config: a count, 0 the default, a negative refused with its position", () => {
  assert.deepEqual(optionsFromConf(parseConf("max_closed_clients: 50", { env: {} })), { maxClosedClients: 50 });
  assert.deepEqual(optionsFromConf(parseConf("max_closed_clients: 0", { env: {} })), {});
  assert.throws(() => optionsFromConf(parseConf("port: 1\nmax_closed_clients: -1", { env: {} })), /line 2, column 1: max_closed_clients: must not be negative/);
});

test("a server without auth or tags has neither in /varz, and keeps no closed connection with maxClosedClients 0", async () => {
  const srv = await startServer({ port: 0, httpPort: 0, maxClosedClients: 0 });
  try {
    const nc = await connect({ servers: srv.url });
    await nc.close();
    const v = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/varz`)).json()) as Json;
    assert.equal(v.auth_required, undefined);
    assert.equal(v.tags, undefined);
    await waitUntilAsync(async () => ((await (await fetch(`http://127.0.0.1:${srv.httpPort}/varz`)).json()) as Json).connections === 0, "the client gone");
    const c = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/connz?state=closed`)).json()) as Json;
    assert.deepEqual(c.connections, []);
  } finally {
    await srv.close();
  }
});

test("closed connections' records list at most MAX_CLOSED_SUBSCRIPTIONS_KEPT subscriptions together, oldest making room", () => {
  // A review: 10,000 records of 1,000 subscriptions each was ten million entries kept for /connz.
  const ring = new ClosedConnections(3);
  const record = (n: number): ClosedConnection => ({
    info: { cid: n } as ConnectionInfo,
    account: "$G",
    subscriptions: Array.from({ length: 60_000 }, (_, i) => ({ subject: `s.${i}`, queue: null, sid: String(i), msgs: 0, max: 0 })),
    rttNs: 0,
    stopMs: 0,
  });
  const listed = (): number[] => ring.list().map((c) => c.subscriptions.length);
  ring.add(record(1));
  ring.add(record(2));
  assert.deepEqual(listed(), [60_000, MAX_CLOSED_SUBSCRIPTIONS_KEPT - 60_000]);
  ring.add(record(3));
  assert.deepEqual(listed(), [60_000, 40_000, 0]);
  ring.add(record(4)); // replaces the first: its 60,000 make room
  assert.deepEqual(listed(), [40_000, 0, 60_000]);
});

test("a Kafka client's closed connection is in /connz?state=closed too, with its address, user and why it went", async () => {
  // A review: Kafka connections were listed while open and vanished once closed, unlike every NATS client.
  const dir = mkdtempSync(join(tmpdir(), "nagare-connz-kafka-"));
  const srv = await startServer({ port: 0, httpPort: 0, storeDir: dir, authorization: { users: [{ user: "k", password: "kp" }] }, kafka: { port: 0 } });
  try {
    const closed = async (): Promise<Json[]> => ((await (await fetch(`http://127.0.0.1:${srv.httpPort}/connz?state=closed&auth=1`)).json()) as Json).connections as Json[];
    const listed = await kcat(["-b", `127.0.0.1:${srv.kafkaPort}`, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=k", "-X", "sasl.password=kp", "-L"]);
    assert.equal(listed.code, 0, listed.stderr);
    await waitUntilAsync(async () => (await closed()).some((c) => c.type === "kafka"), "kcat's connection in the ring");
    const gone = (await closed()).filter((c) => c.type === "kafka");
    for (const c of gone) {
      assert.equal(c.ip, "127.0.0.1");
      assert.ok(c.port > 0);
      assert.equal(c.authorized_user, "k");
      assert.equal(c.account, "$G", "the account, as a NATS client's entry names it where clients authenticate");
      assert.equal(c.reason, "Client Closed");
      assert.match(c.stop, /^\d{4}-\d\d-\d\dT/);
    }
    // One the server closes says why: a frame too short to be a request.
    const bad = rawConnect(srv.kafkaPort!, "127.0.0.1");
    bad.on("error", () => {});
    bad.write(Buffer.from([0, 0, 0, 2, 0, 18]));
    await waitUntilAsync(async () => (await closed()).some((c) => c.type === "kafka" && typeof c.reason === "string" && c.reason.startsWith("frame of 2 bytes")), "the refused connection in the ring");
    bad.destroy();
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
