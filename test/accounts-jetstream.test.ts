/**
 * JetStream per account (issue 18): each account with JetStream has its own
 * streams, KV buckets and object stores under the same names as another's,
 * its own limits with nats-server's errors, and its own store directory;
 * an account without it gets "JetStream not enabled for account"; a
 * service import of another account's JetStream API reaches that account's
 * streams. With the official v3 clients and the v2 `nats` client; the
 * answers were compared with nats-server 2.9.10 on the same configuration.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError, AckPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import * as v2 from "nats";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";
import { UNLIMITED_JETSTREAM } from "../src/core/accounts.js";
import { runNagare } from "./helpers/cli.js";
import { apiErrorCode } from "./helpers/js.js";

const ACCOUNTS: ServerOptions["accounts"] = {
  A: {
    users: [{ user: "a", password: "a" }],
    jetstream: true,
    exports: [{ service: "$JS.API.>", responseType: "stream" }, { service: "$JS.ACK.>" }],
  },
  B: { users: [{ user: "b", password: "b" }], jetstream: true },
  N: { users: [{ user: "n", password: "n" }] },
  L: { users: [{ user: "l", password: "l" }], jetstream: { maxMemory: 1024, maxStorage: 4096, maxStreams: 2, maxConsumers: 1, maxAckPending: 10 } },
  I: {
    users: [{ user: "i", password: "i" }],
    imports: [{ service: { account: "A", subject: "$JS.API.>" } }, { service: { account: "A", subject: "$JS.ACK.>" } }],
  },
  // A's API under a prefix of its own, as a client names it with apiPrefix.
  P: { users: [{ user: "p", password: "p" }], imports: [{ service: { account: "A", subject: "$JS.API.>" }, to: "JSA.API.>" }] },
};

describe("JetStream per account", () => {
  let dir: string;
  let srv: NagareServer;
  const conns: NatsConnection[] = [];
  const as = async (user: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: srv.url, user, pass: user });
    conns.push(nc);
    return nc;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-accjs-"));
    srv = await startServer({ port: 0, httpPort: 0, jetstream: true, storeDir: dir, authorization: { users: [{ user: "g", password: "g" }] }, accounts: ACCOUNTS });
  });
  after(async () => {
    for (const nc of conns) await nc.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("two accounts (and the default one) keep KV buckets of the same name apart", async () => {
    const a = await as("a");
    const g = await as("g");
    const b2 = await v2.connect({ servers: srv.url, user: "b", pass: "b" });
    try {
      const kvA = await new Kvm(a).create("settings");
      const kvG = await new Kvm(g).create("settings");
      const kvB = await b2.jetstream().views.kv("settings");
      await kvA.put("color", "red");
      await kvA.put("only.a", "1");
      await kvB.put("color", "blue");
      await kvG.put("color", "green");
      assert.equal((await kvA.get("color"))?.string(), "red");
      assert.equal((await kvB.get("color"))?.string(), "blue");
      assert.equal((await kvG.get("color"))?.string(), "green");
      assert.equal(await kvB.get("only.a"), null, "B never sees A's key");
      const keysB: string[] = [];
      for await (const k of await kvB.keys()) keysB.push(k);
      assert.deepEqual(keysB, ["color"]);
      const keysA: string[] = [];
      for await (const k of await kvA.keys()) keysA.push(k);
      assert.deepEqual(keysA.sort(), ["color", "only.a"]);
      // Each account's revision counts its own writes only.
      assert.equal((await kvB.get("color"))?.revision, 1);
    } finally {
      await b2.close();
    }
  });

  test("two accounts keep object stores of the same name apart", async () => {
    const a = await as("a");
    const b2 = await v2.connect({ servers: srv.url, user: "b", pass: "b" });
    try {
      const osA = await new Objm(a).create("files");
      const osB = await b2.jetstream().views.os("files");
      await osA.putBlob({ name: "doc" }, new TextEncoder().encode("from A"));
      await osB.putBlob({ name: "doc" }, new TextEncoder().encode("from B, longer"));
      assert.equal(new TextDecoder().decode((await osA.getBlob("doc"))!), "from A");
      assert.equal(new TextDecoder().decode((await osB.getBlob("doc"))!), "from B, longer");
      const streamsA = await (await jetstreamManager(a)).streams.names().next();
      assert.ok(streamsA.includes("OBJ_files") && streamsA.includes("KV_settings"));
      assert.ok(!streamsA.some((s) => s.startsWith("KV_") && s !== "KV_settings"));
    } finally {
      await b2.close();
    }
  });

  test("an account without JetStream gets nats-server's error through both client generations", async () => {
    const n = await as("n");
    await assert.rejects(jetstreamManager(n), (err: Error) => err.name === "JetStreamNotEnabled" && err.message === "JetStream not enabled for account");
    await assert.rejects(new Kvm(n).create("settings"), /JetStream not enabled for account/);
    await assert.rejects(new Objm(n).create("files"), /JetStream not enabled for account/);
    const n2 = await v2.connect({ servers: srv.url, user: "n", pass: "n" });
    try {
      await assert.rejects(n2.jetstreamManager(), (err: v2.NatsError) => err.api_error?.err_code === 10039 && err.api_error.code === 503);
      // Acks and pulls have nobody to answer them, as in nats-server.
      await assert.rejects(n2.request("$JS.ACK.S.C.1.1.1.1.0", new Uint8Array(), { timeout: 2000 }), (err: v2.NatsError) => err.code === v2.ErrorCode.NoResponders);
    } finally {
      await n2.close();
    }
  });

  test("limits: nats-server's errors through the real client, and $JS.API.INFO reports them and the usage", async () => {
    const l = await as("l");
    const jsm = await jetstreamManager(l);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "BIGMEM", subjects: ["bigmem"], storage: StorageType.Memory, max_bytes: 2000 })), 10028);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "BIGFILE", subjects: ["bigfile"], max_bytes: 5000 })), 10047);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "MANYC", subjects: ["manyc"], max_consumers: 5 })), 10026);
    await jsm.streams.add({ name: "MEM", subjects: ["mem"], storage: StorageType.Memory });
    await jsm.streams.add({ name: "FILE", subjects: ["file"], max_bytes: 2000 });
    await assert.rejects(jsm.streams.add({ name: "THIRD", subjects: ["third"] }), (err: JetStreamApiError) => err.code === 10027 && err.message === "maximum number of streams reached");
    // At max_streams, KV and object store creates meet the same limit.
    assert.equal(await apiErrorCode(new Kvm(l).create("kv")), 10027);
    await jsm.consumers.add("MEM", { durable_name: "one", ack_policy: AckPolicy.Explicit });
    assert.equal((await jsm.consumers.info("MEM", "one")).config.max_ack_pending, 10, "the account's max_ack_pending is the default below 1,000");
    await assert.rejects(jsm.consumers.add("MEM", { durable_name: "two", ack_policy: AckPolicy.Explicit }), (err: JetStreamApiError) => err.code === 10026);
    assert.equal(await apiErrorCode(jsm.consumers.add("FILE", { durable_name: "greedy", ack_policy: AckPolicy.Explicit, max_ack_pending: 50 })), 10121);
    // Memory fills up to 1,024 bytes; the message that would pass it is refused, and nothing of it is kept.
    const js = jetstream(l);
    let stored = 0;
    let refused: JetStreamApiError | undefined;
    for (let i = 0; i < 20 && refused === undefined; i++) {
      try {
        await js.publish("mem", "x".repeat(100));
        stored++;
      } catch (err) {
        refused = err as JetStreamApiError;
      }
    }
    assert.ok(refused instanceof JetStreamApiError, "a publish past max_memory is refused");
    assert.equal(refused.code, 10002);
    assert.equal(refused.message, "resource limits exceeded for account");
    const info = await jsm.getAccountInfo();
    assert.deepEqual(info.limits, {
      max_memory: 1024,
      max_storage: 4096,
      max_streams: 2,
      max_consumers: 1,
      max_ack_pending: 10,
      memory_max_stream_bytes: -1,
      storage_max_stream_bytes: -1,
      max_bytes_required: false,
    });
    assert.equal(info.streams, 2);
    assert.equal(info.consumers, 1);
    assert.equal((await jsm.streams.info("MEM")).state.messages, stored);
    assert.ok(info.memory <= 1024 && info.memory + 2 * 117 > 1024, `memory ${info.memory} after ${stored} messages is at the limit`);
    // Deleting makes room again.
    await jsm.streams.purge("MEM");
    await js.publish("mem", "x".repeat(100));
  });

  test("a service import of another account's JetStream API reaches that account's streams, consumers and acks", async () => {
    const a = await as("a");
    const i = await as("i");
    const jsA = await jetstreamManager(a);
    await jsA.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
    await jetstream(a).publish("orders.1", "one");
    const jsI = await jetstreamManager(i);
    assert.equal((await jsI.streams.info("ORDERS")).state.messages, 1);
    assert.equal((await jsI.getAccountInfo()).streams, (await jsA.getAccountInfo()).streams, "INFO answers for A");
    await jsI.streams.add({ name: "MADE_BY_I", subjects: ["made.by.i"] });
    assert.ok((await jsA.streams.names().next()).includes("MADE_BY_I"), "created in A");
    await jsI.consumers.add("ORDERS", { durable_name: "via_i", ack_policy: AckPolicy.Explicit });
    const m = await (await jetstream(i).consumers.get("ORDERS", "via_i")).next({ expires: 5000 });
    assert.equal(m?.subject, "orders.1", "a delivery crosses back under its stored subject");
    assert.equal(m?.string(), "one");
    assert.equal(await m!.ackAck(), true, "the ack reaches A through the $JS.ACK import");
    assert.equal((await jsA.consumers.info("ORDERS", "via_i")).num_ack_pending, 0);
    const p = await as("p");
    const viaPrefix = await jetstreamManager(p, { apiPrefix: "JSA.API" });
    assert.equal((await viaPrefix.streams.info("ORDERS")).state.messages, 1, "JSA.API.STREAM.INFO.ORDERS maps onto $JS.API.STREAM.INFO.ORDERS in A");
    // P has no JetStream and answers nothing on $JS.API itself but "not enabled".
    await assert.rejects(jetstreamManager(p), /JetStream not enabled for account/);
  });

  test("/jsz shows each JetStream account's figures; /accountz says which accounts have JetStream", async () => {
    const b = await as("b");
    await (await jetstreamManager(b)).streams.add({ name: "ONLY_B", subjects: ["only.b"] });
    await jetstream(b).publish("only.b", "x");
    const get = async (path: string): Promise<Record<string, unknown>> => (await (await fetch(`http://127.0.0.1:${srv.httpPort}${path}`)).json()) as Record<string, unknown>;
    const all = await get("/jsz?accounts=true");
    const details = all.account_details as Array<{ name: string; memory: number; storage: number }>;
    assert.deepEqual(
      details.map((d) => d.name),
      ["$G", "A", "B", "L"],
    );
    assert.equal(all.accounts, 4);
    const one = await get("/jsz?acc=B&streams=true");
    const [bDetail] = one.account_details as Array<{ name: string; stream_detail: Array<{ name: string; state: { messages: number } }> }>;
    assert.equal(bDetail.name, "B");
    assert.ok(bDetail.stream_detail.some((s) => s.name === "ONLY_B" && s.state.messages === 1));
    assert.ok(!bDetail.stream_detail.some((s) => s.name === "ORDERS"), "A's streams are not B's");
    const total = all.streams as number;
    const streamsOf = (d: { name: string }): number => srv.jetstreams!.get(d.name)!.streams.size;
    assert.equal(total, details.map(streamsOf).reduce((x, y) => x + y, 0), "totals add every account up");
    const accountz = async (acc: string): Promise<boolean> => ((await get(`/accountz?acc=${acc}`)).account_detail as { jetstream_enabled: boolean }).jetstream_enabled;
    assert.equal(await accountz("A"), true);
    assert.equal(await accountz("N"), false);
    assert.equal(await accountz("$G"), true);
  });

  test("an account's JetStream turned on, limited and off while running (what an account update applies)", async () => {
    const n = await as("n");
    const account = srv.broker.accounts.get("N")!;
    await srv.jetstreams!.setLimits(account, { ...UNLIMITED_JETSTREAM, maxStreams: 1 });
    const jsm = await jetstreamManager(n);
    await jsm.streams.add({ name: "LATE", subjects: ["late"] });
    await jetstream(n).publish("late", "x");
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "LATE2", subjects: ["late2"] })), 10027);
    await srv.jetstreams!.setLimits(account, { ...UNLIMITED_JETSTREAM });
    await jsm.streams.add({ name: "LATE2", subjects: ["late2"] });
    await srv.jetstreams!.setLimits(account, null);
    await assert.rejects(jsm.getAccountInfo(), /JetStream not enabled for account/);
    // On again: its streams come back from its directory.
    await srv.jetstreams!.setLimits(account, { ...UNLIMITED_JETSTREAM });
    assert.equal((await jsm.streams.info("LATE")).state.messages, 1);
  });
});

test("each account's streams live in its own directory; the default account's where a single-account server kept them", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-accjs-dir-"));
  const options: ServerOptions = { port: 0, jetstream: true, storeDir: dir, authorization: { users: [{ user: "g", password: "g" }] }, accounts: { A: ACCOUNTS!.A, B: ACCOUNTS!.B } };
  try {
    // A store written before accounts had JetStream: the default account's streams at <store>/streams.
    let srv = await startServer({ port: 0, jetstream: true, storeDir: dir });
    let nc = await connect({ servers: srv.url });
    await (await jetstreamManager(nc)).streams.add({ name: "OLD", subjects: ["old"] });
    await jetstream(nc).publish("old", "kept");
    await nc.close();
    await srv.close();
    assert.ok(existsSync(join(dir, "streams", "OLD", "meta.json")));

    srv = await startServer(options);
    const g = await connect({ servers: srv.url, user: "g", pass: "g" });
    const a = await connect({ servers: srv.url, user: "a", pass: "a" });
    const b = await connect({ servers: srv.url, user: "b", pass: "b" });
    assert.equal((await (await jetstreamManager(g)).streams.info("OLD")).state.messages, 1, "the old store opens as the default account's");
    await (await jetstreamManager(a)).streams.add({ name: "SAME", subjects: ["same"] });
    await (await jetstreamManager(b)).streams.add({ name: "SAME", subjects: ["same"] });
    await jetstream(a).publish("same", "a1");
    await jetstream(b).publish("same", "b1");
    await jetstream(b).publish("same", "b2");
    assert.ok(existsSync(join(dir, "accounts", "A", "streams", "SAME", "meta.json")));
    assert.ok(existsSync(join(dir, "accounts", "B", "streams", "SAME", "meta.json")));
    for (const c of [g, a, b]) await c.close();
    await srv.close();

    srv = await startServer(options);
    nc = await connect({ servers: srv.url, user: "b", pass: "b" });
    const m = await (await jetstreamManager(nc)).streams.getMessage("SAME", { seq: 2 });
    assert.equal(m?.string(), "b2", "B's stream comes back as B's after a restart");
    assert.equal(await apiErrorCode((await jetstreamManager(nc)).streams.info("OLD")), 10059, "the default account's stream is not B's");
    await nc.close();
    await srv.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("configuration: an account's jetstream block with nats-server's keys; what cannot be honoured does not start", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-accjs-conf-"));
  try {
    const good = join(dir, "good.conf");
    writeFileSync(
      good,
      `port: -1
jetstream { store_dir: "${join(dir, "js")}" }
accounts {
  A: { users: [ { user: a, password: a } ], jetstream: enabled }
  B: { users: [ { user: b, password: b } ], jetstream: { max_mem: 1MB, max_file: -1, max_streams: 10, max_consumers: 5, max_ack_pending: 100, max_bytes_required: true } }
  C: { users: [ { user: c, password: c } ], jetstream: disabled }
}
`,
    );
    const ok = await runNagare(["server", "-c", good, "-t"]);
    assert.equal(ok.code, 0, ok.stderr);
    const r = await runNagare(["server", "-c", good], { until: /Server is ready/ });
    assert.match(r.stderr, /JetStream enabled for account B/);
    const bad = join(dir, "bad.conf");
    writeFileSync(
      bad,
      `port: -1
jetstream: enabled
accounts {
  A: { users: [ { user: a, password: a } ], jetstream: { max_memory: 1GB, max_sterams: 2 } }
  B: { users: [ { user: b, password: b } ], jetstream: sometimes }
}
`,
    );
    const refused = await runNagare(["server", "-c", bad, "-t"]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /bad\.conf:4:\d+: unknown field "accounts\.A\.jetstream\.max_sterams"/);
    assert.match(refused.stderr, /bad\.conf:5:\d+: accounts\.B\.jetstream: expected enabled or disabled/);
    const noServerJs = join(dir, "nojs.conf");
    writeFileSync(noServerJs, `port: -1\naccounts {\n  A: { users: [ { user: a, password: a } ], jetstream: enabled }\n}\n`);
    const off = await runNagare(["server", "-c", noServerJs, "-t"]);
    assert.notEqual(off.code, 0);
    assert.match(off.stderr, /accounts\.A\.jetstream needs JetStream on the server/);
    await assert.rejects(
      startServer({ port: 0, accounts: { A: { exports: [{ service: "svc.*" }] }, B: { imports: [{ service: { account: "A", subject: "svc.*" }, to: "local" }] } } }),
      /a service import's to \(local\) must have the wildcards of its subject \(svc\.\*\)/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
