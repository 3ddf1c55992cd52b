/**
 * An account's JetStream limits and a stream's checks hold for requests
 * made side by side, as nats-server holds them: many stream creates at once
 * past max_streams, creates of overlapping subjects or of one name, many
 * consumer creates past max_consumers, work queue consumers of overlapping
 * filters. Each create checked what existed, then wrote its files before it
 * was counted, so every one found room (nats-server 2.9.10, same requests:
 * 2 of 10 streams, 2 of 10 consumers, one of two overlapping streams; of
 * two accounts' streams that do not fit the server's max_file together, one).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";

type Answer = { error?: { err_code: number }; config?: unknown };
const codes = (answers: Answer[]): (number | "ok")[] => answers.map((a) => a.error?.err_code ?? "ok");

describe("account limits under concurrent requests", () => {
  let dir: string;
  let srv: NagareServer;
  let nc: NatsConnection;
  const api = async (subject: string, body: unknown): Promise<Answer> => (await nc.request(subject, JSON.stringify(body), { timeout: 10_000 })).json<Answer>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-acclimits-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      accounts: {
        L: { users: [{ user: "l", password: "l" }], jetstream: { maxStreams: 4, maxConsumers: 2 } },
      },
    });
    nc = await connect({ servers: srv.url, user: "l", pass: "l" });
  });
  after(async () => {
    await nc.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("stream creates at once: one name made once, overlapping subjects refused, no more than max_streams", async () => {
    const same = await Promise.all([0, 1, 2].map((i) => api("$JS.API.STREAM.CREATE.SAME", { name: "SAME", subjects: [`same${i}.>`], storage: "file" })));
    assert.deepEqual(codes(same).sort(), [10058, 10058, "ok"].sort(), JSON.stringify(same));
    const overlap = await Promise.all([0, 1].map((i) => api(`$JS.API.STREAM.CREATE.O${i}`, { name: `O${i}`, subjects: ["shared.>"], storage: "file" })));
    assert.deepEqual(codes(overlap).sort(), [10065, "ok"].sort(), JSON.stringify(overlap));
    const many = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => api(`$JS.API.STREAM.CREATE.M${i}`, { name: `M${i}`, subjects: [`m${i}`], storage: i % 2 === 0 ? "file" : "memory" })));
    assert.equal(codes(many).filter((c) => c === "ok").length, 2, JSON.stringify(codes(many)));
    assert.ok(codes(many).every((c) => c === "ok" || c === 10027));
    const names = (await nc.request("$JS.API.STREAM.NAMES", "")).json<{ total: number }>();
    assert.equal(names.total, 4);
  });

  test("an update and a create at once: the subjects the update takes are refused to the create", async () => {
    for (const n of ["M0", "M1", "M2", "M3", "M4", "M5", "O0", "O1"]) await api(`$JS.API.STREAM.DELETE.${n}`, {});
    for (let round = 0; round < 3; round++) {
      assert.equal((await api(`$JS.API.STREAM.CREATE.U`, { name: "U", subjects: [`u${round}`], storage: "file" })).error, undefined);
      const [updated, created] = await Promise.all([
        api(`$JS.API.STREAM.UPDATE.U`, { name: "U", subjects: [`v${round}.>`], storage: "file" }),
        api(`$JS.API.STREAM.CREATE.V`, { name: "V", subjects: [`v${round}.>`], storage: "file" }),
      ]);
      assert.equal(updated.error, undefined, JSON.stringify(updated));
      assert.equal(created.error?.err_code, 10065, JSON.stringify(created));
      await api("$JS.API.STREAM.DELETE.U", {});
    }
  });

  test("consumer creates at once: no more than max_consumers, work queue filters unique", async () => {
    assert.equal((await api("$JS.API.STREAM.CREATE.C", { name: "C", subjects: ["c.>"], storage: "file" })).error, undefined);
    const cs = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => api(`$JS.API.CONSUMER.CREATE.C.d${i}`, { stream_name: "C", config: { durable_name: `d${i}`, ack_policy: "explicit" } })));
    assert.deepEqual(codes(cs).filter((c) => c === "ok").length, 2, JSON.stringify(codes(cs)));
    assert.ok(codes(cs).every((c) => c === "ok" || c === 10026));

    assert.equal((await api("$JS.API.STREAM.CREATE.W", { name: "W", subjects: ["w.>"], storage: "file", retention: "workqueue" })).error, undefined);
    const wq = await Promise.all([0, 1].map((i) => api(`$JS.API.CONSUMER.CREATE.W.w${i}`, { stream_name: "W", config: { durable_name: `w${i}`, ack_policy: "explicit", filter_subject: "w.>" } })));
    assert.deepEqual(codes(wq).sort(), [10100, "ok"].sort(), JSON.stringify(wq));
  });
});

describe("the server's JetStream limits under creates from two accounts at once", () => {
  let dir: string;
  let srv: NagareServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-srvlimits-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      jetstreamMaxStorage: 100_000,
      accounts: { A: { users: [{ user: "a", password: "a" }], jetstream: true }, B: { users: [{ user: "b", password: "b" }], jetstream: true } },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("two streams whose max_bytes do not fit beside each other: one is refused 10047", async () => {
    const a = await connect({ servers: srv.url, user: "a", pass: "a" });
    const b = await connect({ servers: srv.url, user: "b", pass: "b" });
    try {
      const answers = await Promise.all(
        [a, b].map(async (nc) => (await nc.request("$JS.API.STREAM.CREATE.BIG", JSON.stringify({ name: "BIG", subjects: ["big"], storage: "file", max_bytes: 60_000 }))).json<Answer>()),
      );
      assert.deepEqual(codes(answers).sort(), [10047, "ok"].sort(), JSON.stringify(answers));
    } finally {
      await a.close();
      await b.close();
    }
  });
});
