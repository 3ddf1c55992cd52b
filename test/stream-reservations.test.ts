/**
 * Stream creates, updates and growths reserve what they take (the name, the
 * subjects, the stream count, the bytes against the account's and the
 * server's limits) in memory before their disk work, which runs side by side:
 * 50 at once hold every limit, and a create whose disk stalls holds no other
 * stream's create, in its account or another.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import type { JetStream } from "../src/streams/jetstream.js";
import type { StreamConfig } from "../src/streams/config.js";
import { waitUntil } from "./helpers/clients.js";

type Answer = { error?: { err_code: number } };
const codes = (answers: Answer[]): (number | "ok")[] => answers.map((a) => a.error?.err_code ?? "ok");
const count = (answers: Answer[], code: number | "ok"): number => codes(answers).filter((c) => c === code).length;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const AT_ONCE = 50;

describe("50 stream changes at once within the limits", () => {
  let dir: string;
  let srv: NagareServer;
  const ncs = new Map<string, NatsConnection>();
  const api = async (account: string, subject: string, body: unknown): Promise<Answer> =>
    (await ncs.get(account)!.request(subject, JSON.stringify(body), { timeout: 20_000 })).json<Answer>();
  const create = (account: string, name: string, config: object): Promise<Answer> => api(account, `$JS.API.STREAM.CREATE.${name}`, { name, ...config });
  const update = (account: string, name: string, config: object): Promise<Answer> => api(account, `$JS.API.STREAM.UPDATE.${name}`, { name, ...config });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-reservations-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      jetstreamMaxStorage: 30_000,
      accounts: {
        N: { users: [{ user: "n", password: "n" }], jetstream: { maxStreams: 5 } },
        S: { users: [{ user: "s", password: "s" }], jetstream: { maxStorage: 20_000 } },
        O: { users: [{ user: "o", password: "o" }], jetstream: true },
        P: { users: [{ user: "p", password: "p" }], jetstream: true },
      },
    });
    for (const a of ["n", "s", "o", "p"]) ncs.set(a.toUpperCase(), await connect({ servers: srv.url, user: a, pass: a }));
  });
  after(async () => {
    for (const nc of ncs.values()) await nc.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("creates past max_streams: exactly max_streams made", async () => {
    const answers = await Promise.all(range(AT_ONCE).map((i) => create("N", `M${i}`, { subjects: [`m${i}`], storage: i % 2 === 0 ? "file" : "memory" })));
    assert.equal(count(answers, "ok"), 5, JSON.stringify(codes(answers)));
    assert.equal(count(answers, 10027), AT_ONCE - 5, JSON.stringify(codes(answers)));
    assert.equal(srv.jetstreams!.get("N")!.streams.size, 5);
  });

  test("creates of one subject: one made; creates of one name: one made, the same config answered with it", async () => {
    const overlapping = await Promise.all(range(AT_ONCE).map((i) => create("O", `OV${i}`, { subjects: ["ov.>"], storage: i % 2 === 0 ? "file" : "memory" })));
    assert.equal(count(overlapping, "ok"), 1, JSON.stringify(codes(overlapping)));
    assert.equal(count(overlapping, 10065), AT_ONCE - 1, JSON.stringify(codes(overlapping)));

    const differing = await Promise.all(range(AT_ONCE).map((i) => create("O", "ONE", { subjects: [`one${i}`], storage: "file" })));
    assert.equal(count(differing, "ok"), 1, JSON.stringify(codes(differing)));
    assert.equal(count(differing, 10058), AT_ONCE - 1, JSON.stringify(codes(differing)));
    const same = await Promise.all(range(AT_ONCE).map(() => create("O", "SAME", { subjects: ["same"], storage: "file" })));
    assert.equal(count(same, "ok"), AT_ONCE, JSON.stringify(codes(same)));
  });

  test("updates taking subjects and creates of them at once: every create refused", async () => {
    for (const i of range(AT_ONCE)) assert.equal((await create("O", `U${i}`, { subjects: [`u${i}`], storage: "file" })).error, undefined);
    const answers = await Promise.all(range(AT_ONCE).flatMap((i) => [update("O", `U${i}`, { subjects: [`t${i}.>`], storage: "file" }), create("O", `V${i}`, { subjects: [`t${i}.>`], storage: "file" })]));
    const updates = answers.filter((_, i) => i % 2 === 0);
    const creates = answers.filter((_, i) => i % 2 === 1);
    assert.equal(count(updates, "ok"), AT_ONCE, JSON.stringify(codes(updates)));
    assert.equal(count(creates, 10065), AT_ONCE, JSON.stringify(codes(creates)));
  });

  test("creates, updates and growths against the account's max_file: what fits, no more", async () => {
    const js = srv.jetstreams!.get("S")!;
    // 100 streams of 50 bytes: 5,000 of 20,000 reserved.
    const made = await Promise.all(range(2 * AT_ONCE).map((i) => create("S", `G${i}`, { subjects: [`g${i}`], storage: "file", max_bytes: 50 })));
    assert.equal(count(made, "ok"), 2 * AT_ONCE, JSON.stringify(codes(made)));
    // At once: 50 growths to 2 partitions (+50 each), 50 updates of the others to 200 bytes (+150 each), 50 creates of 1,000.
    const growths = range(AT_ONCE).map((i) => js.addPartitions(`G${i}`, 2).then(() => "ok" as const, (err: { errCode?: number }) => err.errCode ?? -1));
    const updates = range(AT_ONCE).map((i) => update("S", `G${AT_ONCE + i}`, { subjects: [`g${AT_ONCE + i}`], storage: "file", max_bytes: 200 }));
    const creates = range(AT_ONCE).map((i) => create("S", `C${i}`, { subjects: [`c${i}`], storage: "file", max_bytes: 1_000 }));
    const [grown, updated, created] = await Promise.all([Promise.all(growths), Promise.all(updates), Promise.all(creates)]);
    const okGrown = grown.filter((c) => c === "ok").length;
    const [okUpdated, okCreated] = [count(updated, "ok"), count(created, "ok")];
    assert.ok([...grown, ...codes(updated), ...codes(created)].every((c) => c === "ok" || c === 10047), JSON.stringify([grown, codes(updated), codes(created)]));
    // What succeeded is what is reserved, within the limit; and each refusal came when less than it asked was left.
    const total = reserved(js);
    assert.equal(total, 5_000 + 50 * okGrown + 150 * okUpdated + 1_000 * okCreated);
    assert.ok(total <= 20_000, `${total} reserved`);
    if (okGrown < AT_ONCE) assert.ok(total > 20_000 - 50, `${total} reserved, a growth refused`);
    if (okUpdated < AT_ONCE) assert.ok(total > 20_000 - 150, `${total} reserved, an update refused`);
    if (okCreated < AT_ONCE) assert.ok(total > 20_000 - 1_000, `${total} reserved, a create refused`);
    assert.ok(okCreated > 0 && okCreated < AT_ONCE, JSON.stringify(codes(created)));
  });

  test("two accounts' creates at once against the server's max_file: what fits, no more", async () => {
    const accounts = ["S", "O", "P"].map((name) => srv.jetstreams!.get(name)!);
    const room = 30_000 - accounts.reduce((sum, js) => sum + reserved(js), 0);
    const [fromO, fromP] = await Promise.all(
      ["O", "P"].map((account) => Promise.all(range(AT_ONCE).map((i) => create(account, `X${i}`, { subjects: [`x${i}`], storage: "file", max_bytes: 1_000 })))),
    );
    assert.ok([...codes(fromO), ...codes(fromP)].every((c) => c === "ok" || c === 10047), JSON.stringify([codes(fromO), codes(fromP)]));
    assert.equal(count(fromO, "ok") + count(fromP, "ok"), Math.floor(room / 1_000), JSON.stringify([codes(fromO), codes(fromP)]));
    assert.ok(accounts.reduce((sum, js) => sum + reserved(js), 0) <= 30_000);
  });
});

/** What an account's file streams reserve, from their configurations. */
function reserved(js: JetStream): number {
  let n = 0;
  for (const s of js.streams.values()) if (s.config.storage === "file" && s.config.max_bytes > 0) n += s.config.max_bytes * s.partitions.length;
  return n;
}

describe("a create whose disk work stalls", () => {
  let dir: string;
  let srv: NagareServer;
  let a: NatsConnection;
  let b: NatsConnection;
  // The stalled create waits on this until released; the failing one throws.
  let release: () => void = () => undefined;
  let stalledEntered = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-stalled-create-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      // A server limit: every account's streams are checked together.
      jetstreamMaxStorage: 1_000_000_000,
      accounts: {
        A: { users: [{ user: "a", password: "a" }], jetstream: { maxStreams: 3 } },
        B: { users: [{ user: "b", password: "b" }], jetstream: true },
      },
    });
    const gate = new Promise<void>((r) => (release = r));
    // The method that opens a new stream's files: STALLED's hangs (a stalled disk), FAILS's fails.
    const js = srv.jetstreams!.get("A")! as unknown as { openStream: (config: StreamConfig, ...rest: unknown[]) => Promise<unknown> };
    const openStream = js.openStream.bind(js);
    js.openStream = async (config, ...rest) => {
      if (config.name === "STALLED") {
        stalledEntered = true;
        await gate;
      }
      if (config.name === "FAILS") throw new Error("EIO: simulated");
      return openStream(config, ...rest);
    };
    a = await connect({ servers: srv.url, user: "a", pass: "a" });
    b = await connect({ servers: srv.url, user: "b", pass: "b" });
  });
  after(async () => {
    release();
    await a.close();
    await b.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Each create but the stalled one is answered within 5 s, or the test fails (with the stall held, it would never be).
  const api = async (nc: NatsConnection, name: string, config: object, timeout = 5_000): Promise<Answer> =>
    (await nc.request(`$JS.API.STREAM.CREATE.${name}`, JSON.stringify({ name, ...config }), { timeout })).json<Answer>();

  test("holds no create of another stream of its account or of another account; its reservation holds meanwhile", async () => {
    let stalledAnswer: Answer | null = null;
    const stalled = api(a, "STALLED", { subjects: ["stalled.>"], storage: "file", max_bytes: 1_000 }, 60_000).then((x) => (stalledAnswer = x));
    await waitUntil(() => stalledEntered, "the stalled create reaches its disk work");
    // Its subjects are taken while it stalls, in its account only.
    assert.equal((await api(a, "OVER", { subjects: ["stalled.x"], storage: "memory" })).error?.err_code, 10065);

    assert.equal((await api(a, "MEM", { subjects: ["mem"], storage: "memory" })).error, undefined);
    assert.equal((await api(a, "FILE", { subjects: ["file"], storage: "file" })).error, undefined);
    assert.equal((await api(b, "OTHER", { subjects: ["other"], storage: "file" })).error, undefined);
    assert.equal((await api(b, "STALLED2", { subjects: ["stalled.x"], storage: "file" })).error, undefined, "another account's subjects are its own");
    // And its place among max_streams (3: it, MEM and FILE).
    assert.equal((await api(a, "THIRD", { subjects: ["third"], storage: "memory" })).error?.err_code, 10027);
    assert.equal(stalledAnswer, null);

    release();
    await stalled;
    assert.equal(stalledAnswer!.error, undefined, JSON.stringify(stalledAnswer));
    assert.equal(srv.jetstreams!.get("A")!.streams.size, 3);
  });

  test("a create whose disk work fails releases what it reserved", async () => {
    for (const n of ["MEM", "FILE"]) await a.request(`$JS.API.STREAM.DELETE.${n}`, "");
    const failed = await api(a, "FAILS", { subjects: ["fails.>"], storage: "file" });
    assert.notEqual(failed.error, undefined, JSON.stringify(failed));
    // Its subjects and its place among max_streams (3: STALLED and these two) are free again.
    assert.equal((await api(a, "TAKES", { subjects: ["fails.>"], storage: "memory" })).error, undefined);
    assert.equal((await api(a, "LAST", { subjects: ["last"], storage: "memory" })).error, undefined);
  });
});
