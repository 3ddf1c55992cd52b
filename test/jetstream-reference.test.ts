/**
 * JetStream API answers side by side with Debian's nats-server 2.9 (the
 * reference; those steps are skipped where it is not installed), found by a
 * differential sweep of the same raw `$JS.API` requests against both, and
 * checked on nagare alone through the official clients.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect as connectV2, headers as natsHeaders, type NatsConnection as ConnV2 } from "nats";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import { waitUntilAsync } from "./helpers/clients.js";
import { apiErrorCode, startJs, type JsHarness } from "./helpers/js.js";
import { natsServerPath, startNatsServer, type RunningNatsServer } from "./helpers/nats-server.js";
import { RawClient } from "./helpers/raw.js";

type Json = Record<string, unknown>;

const hasRef = natsServerPath() !== null;

type Delivery = { reply: string; seq: number };

/** `n` deliveries of a pull consumer through the v2 client's fetch, asking again until they came (5 s at most). */
async function take(nc: ConnV2, stream: string, consumer: string, n: number): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const until = Date.now() + 5000;
  while (got.length < n && Date.now() < until) {
    for await (const m of nc.jetstream().fetch(stream, consumer, { batch: n - got.length, expires: 1000 })) got.push(m as unknown as Delivery);
  }
  return got;
}

/** The number of messages a stream holds once it reaches `want` (removals by retention are not synchronous), or the last seen. */
async function settledMessages(nc: ConnV2, stream: string, want: number): Promise<unknown> {
  let seen: unknown;
  await waitUntilAsync(async () => (seen = ((await ask(nc, `$JS.API.STREAM.INFO.${stream}`)).state as Json).messages) === want, `${stream} holds ${want}`, 5000).catch(() => undefined);
  return seen;
}

/** A raw API request through the v2 client: the decoded JSON answer. */
async function ask(nc: ConnV2, subject: string, body: unknown = ""): Promise<Json> {
  const m = await nc.request(subject, typeof body === "string" ? body : JSON.stringify(body), { timeout: 5000 });
  return JSON.parse(m.string()) as Json;
}

describe("JetStream API beside nats-server 2.9", () => {
  let h: JsHarness;
  let ref: RunningNatsServer | undefined;
  let refNc: ConnV2 | undefined;
  let ours: ConnV2;

  before(async () => {
    h = await startJs();
    ours = await connectV2({ servers: h.srv.url });
    if (hasRef) {
      ref = await startNatsServer("jetstream { store_dir: " + JSON.stringify(h.storeDir + "-ref") + " }");
      refNc = await connectV2({ port: ref.port });
    }
  });
  after(async () => {
    await ours.close();
    await refNc?.close();
    await ref?.stop();
    await h.close();
    rmSync(h.storeDir + "-ref", { recursive: true, force: true });
  });

  /** The same raw request to both servers (nagare's answer only when the reference is absent). */
  async function both(subject: string, body: unknown = ""): Promise<{ ours: Json; theirs: Json | undefined }> {
    return { ours: await ask(ours, subject, body), theirs: refNc === undefined ? undefined : await ask(refNc, subject, body) };
  }

  test("stream info pages subjects as nats-server: total, offset, limit and the sorted page from offset", async () => {
    await both("$JS.API.STREAM.CREATE.PAGED", { name: "PAGED", subjects: ["pg.>"] });
    for (const [subject, n] of [["pg.c", 3], ["pg.a", 2], ["pg.b", 1], ["pg.d", 1]] as const) {
      for (let i = 0; i < n; i++) await both(subject, "x");
    }
    const page = (r: Json): Json => {
      const state = r.state as Json;
      return { total: r.total, offset: r.offset, limit: r.limit, subjects: state.subjects };
    };
    const cases: Array<[Json, Json]> = [
      [{ subjects_filter: ">" }, { total: 4, offset: 0, limit: 100_000, subjects: { "pg.a": 2, "pg.b": 1, "pg.c": 3, "pg.d": 1 } }],
      [{ subjects_filter: ">", offset: 1 }, { total: 4, offset: 1, limit: 100_000, subjects: { "pg.b": 1, "pg.c": 3, "pg.d": 1 } }],
      [{ subjects_filter: "pg.c", offset: 0 }, { total: 1, offset: 0, limit: 100_000, subjects: { "pg.c": 3 } }],
      [{ subjects_filter: ">", offset: 9 }, { total: 4, offset: 9, limit: 100_000, subjects: undefined }],
      [{ subjects_filter: "zz" }, { total: 0, offset: 0, limit: 0, subjects: undefined }],
    ];
    for (const [req, want] of cases) {
      const r = await both("$JS.API.STREAM.INFO.PAGED", req);
      assert.deepEqual(page(r.ours), want, JSON.stringify(req));
      // Past the end 2.9 reports the offset cut to the total; 2.10 on (what nagare follows) the offset asked.
      if (r.theirs !== undefined) assert.deepEqual({ ...page(r.ours), offset: Math.min(r.ours.offset as number, r.ours.total as number) }, page(r.theirs), `nats-server: ${JSON.stringify(req)}`);
      // The order too (encoding/json sorts a map's keys).
      if (want.subjects !== undefined) assert.deepEqual(Object.keys((r.ours.state as Json).subjects as Json), Object.keys(want.subjects as Json));
    }
  });

  test("a stream with more subjects than one page: the v3 client pages and gets them all", async () => {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "MANY", subjects: ["many.>"] });
    const n = 100_005;
    for (let i = 0; i < n; i++) ours.publish(`many.${i}`);
    await ours.flush();
    await waitUntilAsync(async () => (await jsm.streams.info("MANY")).state.messages === n, "every message stored", 60_000);
    const first = await ask(ours, "$JS.API.STREAM.INFO.MANY", { subjects_filter: ">" });
    assert.equal(Object.keys((first.state as Json).subjects as Json).length, 100_000);
    assert.deepEqual([first.total, first.offset, first.limit], [n, 0, 100_000]);
    const si = await jsm.streams.info("MANY", { subjects_filter: ">" });
    assert.equal(Object.keys(si.state.subjects ?? {}).length, n);
    assert.equal(si.state.subjects?.["many.100004"], 1);
  });

  test("a double ack to a consumer that is gone gets no responders at once; one with an unknown body is answered", async () => {
    const run = async (nc: ConnV2): Promise<string[]> => {
      const out: string[] = [];
      await ask(nc, "$JS.API.STREAM.CREATE.ACKS", { name: "ACKS", subjects: ["acks"] });
      await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.ACKS.C", { stream_name: "ACKS", config: { durable_name: "C", ack_policy: "explicit" } });
      for (let i = 0; i < 2; i++) await nc.request("acks", "x");
      const got = await take(nc, "ACKS", "C", 2);
      assert.equal(got.length, 2);
      const answer = async (subject: string, body: string): Promise<string> => {
        try {
          const m = await nc.request(subject, body, { timeout: 2000 });
          return `answered ${m.data.length}`;
        } catch (err) {
          return `refused ${(err as { code?: string }).code}`;
        }
      };
      out.push(await answer(got[0].reply, "+BOGUS"));
      await ask(nc, "$JS.API.CONSUMER.DELETE.ACKS.C");
      const started = Date.now();
      out.push(await answer(got[1].reply, "+ACK"));
      out.push(Date.now() - started < 1500 ? "at once" : "late");
      out.push(await answer("$JS.ACK.NOPE.C.1.1.1.0.0", "+ACK"));
      out.push(await answer("$JS.ACK.ACKS.C.x", "+ACK"));
      return out;
    };
    const want = ["answered 0", "refused 503", "at once", "refused 503", "refused 503"];
    assert.deepEqual(await run(ours), want);
    if (refNc !== undefined) assert.deepEqual(await run(refNc), want, "nats-server");
    // A client that did not ask for "no responders" hears nothing, never an empty answer it would take for a confirmation.
    const quiet = await RawClient.connected(h.srv.port);
    try {
      quiet.consume();
      // An answer would be written before the PONG.
      quiet.send("SUB _INBOX.quiet 1\r\nPUB $JS.ACK.ACKS.C.1.1.1.0.0 _INBOX.quiet 4\r\n+ACK\r\nPING\r\n");
      await quiet.waitFor(/PONG\r\n/, "PONG");
      assert.doesNotMatch(quiet.text, /MSG _INBOX\.quiet/);
    } finally {
      quiet.destroy();
    }
  });

  test("refusals carry the empty listing fields nats-server sends beside an error", async () => {
    await both("$JS.API.STREAM.CREATE.SEALED", { name: "SEALED", subjects: ["sealed"] });
    await both("$JS.API.STREAM.UPDATE.SEALED", { name: "SEALED", subjects: ["sealed"], sealed: true });
    const requests: Array<[string, unknown, Json]> = [
      ["$JS.API.STREAM.INFO.NOPE", "", { total: 0, offset: 0, limit: 0 }],
      ["$JS.API.STREAM.INFO.SEALED", "{x", { total: 0, offset: 0, limit: 0 }],
      ["$JS.API.STREAM.LIST", "{x", { total: 0, offset: 0, limit: 0, streams: [] }],
      ["$JS.API.STREAM.NAMES", "{x", { total: 0, offset: 0, limit: 0, streams: null }],
      ["$JS.API.CONSUMER.NAMES.NOPE", "", { total: 0, offset: 0, limit: 0, consumers: [] }],
      ["$JS.API.CONSUMER.LIST.NOPE", "", { total: 0, offset: 0, limit: 0, consumers: [] }],
      ["$JS.API.STREAM.PURGE.SEALED", "", { purged: 0 }],
    ];
    for (const [subject, body, fields] of requests) {
      const r = await both(subject, body);
      assert.ok(r.ours.error !== undefined, subject);
      const { type: _t, error: _e, ...rest } = r.ours;
      assert.deepEqual(rest, fields, subject);
      if (r.theirs !== undefined) {
        const { type: _tt, error: _ee, ...theirs } = r.theirs;
        assert.deepEqual(rest, theirs, `nats-server: ${subject}`);
        assert.deepEqual(r.ours.error, r.theirs.error, `nats-server: ${subject}`);
      }
    }
  });

  test("a last_per_subject consumer reports its delivered stream sequence and ack floor walking its start list", async () => {
    const run = async (nc: ConnV2): Promise<Array<[unknown, unknown]>> => {
      await ask(nc, "$JS.API.STREAM.CREATE.LPS", { name: "LPS", subjects: ["lps.>"] });
      for (const subject of ["lps.a", "lps.b", "lps.a", "lps.c", "lps.c"]) await nc.request(subject, "x");
      const seen: Array<[unknown, unknown]> = [];
      const look = (r: Json): void => {
        seen.push([(r.delivered as Json).stream_seq, (r.ack_floor as Json).stream_seq]);
      };
      // The start list: lps.b at 2, lps.a at 3, lps.c at 5.
      look(await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.LPS.L", { stream_name: "LPS", config: { durable_name: "L", ack_policy: "explicit", deliver_policy: "last_per_subject", filter_subject: "lps.>" } }));
      const js = nc.jetstream();
      for (let i = 0; i < 3; i++) {
        for await (const m of js.fetch("LPS", "L", { batch: 1, expires: 2000 })) {
          look(await ask(nc, "$JS.API.CONSUMER.INFO.LPS.L"));
          await m.ackAck();
        }
        look(await ask(nc, "$JS.API.CONSUMER.INFO.LPS.L"));
      }
      return seen;
    };
    // nagare's ack floor starts at the start position minus one, as nats-server 2.9 holds it in memory (its answer reads 0
    // back from its store before the first ack; ARCHITECTURE.md lists it).
    const want: Array<[unknown, unknown]> = [[1, 1], [2, 1], [2, 2], [3, 2], [3, 3], [5, 3], [5, 5]];
    assert.deepEqual(await run(ours), want);
    if (refNc !== undefined) {
      const theirs = await run(refNc);
      assert.deepEqual(theirs.slice(2), want.slice(2), "nats-server");
      assert.deepEqual(theirs.slice(0, 2), [[1, 0], [2, 0]], "nats-server");
    }
  });

  test("interest retention keeps what a last_per_subject consumer took from its start list until it acks", async () => {
    const run = async (nc: ConnV2): Promise<unknown[]> => {
      await ask(nc, "$JS.API.STREAM.CREATE.INT", { name: "INT", subjects: ["int.>"], retention: "interest" });
      await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.INT.A", { stream_name: "INT", config: { durable_name: "A", ack_policy: "explicit" } });
      for (const subject of ["int.1", "int.2", "int.3"]) await nc.request(subject, "x");
      await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.INT.B", { stream_name: "INT", config: { durable_name: "B", ack_policy: "explicit", deliver_policy: "last_per_subject", filter_subject: "int.>" } });
      const taken = await take(nc, "INT", "B", 1);
      for (const m of await take(nc, "INT", "A", 3)) await nc.request(m.reply, "+ACK");
      const kept = ((await ask(nc, "$JS.API.STREAM.INFO.INT")).state as Json).messages;
      // Answered once the NAK is applied: the fetch below finds the message due again.
      await nc.request(taken[0].reply, "-NAK");
      const again = await take(nc, "INT", "B", 3);
      for (const m of again) await nc.request(m.reply, "+ACK");
      const left = await settledMessages(nc, "INT", 0);
      // Redelivered before or after the rest, as the server schedules it.
      return [taken[0].seq, kept, again.map((m) => m.seq).sort((a, b) => a - b), left];
    };
    const want = [1, 3, [1, 2, 3], 0];
    assert.deepEqual(await run(ours), want);
    if (refNc !== undefined) assert.deepEqual(await run(refNc), want, "nats-server");
  });

  test("under ack all a termination acknowledges everything up to it, as an ack does", async () => {
    const run = async (nc: ConnV2): Promise<unknown[]> => {
      await ask(nc, "$JS.API.STREAM.CREATE.TERM", { name: "TERM", subjects: ["term"], retention: "interest" });
      await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.TERM.C", { stream_name: "TERM", config: { durable_name: "C", ack_policy: "all" } });
      for (let i = 0; i < 4; i++) await nc.request("term", "x");
      const got = await take(nc, "TERM", "C", 3);
      // Answered once applied (a double ack's reply).
      await nc.request(got[2].reply, "+TERM");
      const ci = await ask(nc, "$JS.API.CONSUMER.INFO.TERM.C");
      return [got.map((m) => m.seq), ci.num_ack_pending, (ci.ack_floor as Json).stream_seq, await settledMessages(nc, "TERM", 1)];
    };
    const want = [[1, 2, 3], 0, 3, 1];
    assert.deepEqual(await run(ours), want);
    if (refNc !== undefined) assert.deepEqual(await run(refNc), want, "nats-server");
  });

  test("a negative ack wait is refused with nats-server's own code, 10183 (2.12 on; 2.9 keeps it)", async () => {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "ACKWAIT", subjects: ["ackwait"] });
    assert.equal(await apiErrorCode(jsm.consumers.add("ACKWAIT", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: -1 })), 10183);
  });

  test("a mirror with subjects gets nats-server's refusal (10034) before nagare's 'not supported'", async () => {
    await both("$JS.API.STREAM.CREATE.PLAIN", { name: "PLAIN", subjects: ["plain"] });
    for (const [verb, name] of [["CREATE", "MIRRORED"], ["UPDATE", "PLAIN"]]) {
      const r = await both(`$JS.API.STREAM.${verb}.${name}`, { name, subjects: ["mirrored"], mirror: { name: "ORIGIN" } });
      assert.deepEqual(r.ours.error, { code: 400, err_code: 10034, description: "stream mirrors can not contain subjects" }, verb);
      if (r.theirs !== undefined) assert.deepEqual(r.ours.error, r.theirs.error, `nats-server: ${verb}`);
    }
    const jsm = await jetstreamManager(h.nc);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "MIRRORED", subjects: ["mirrored"], mirror: { name: "ORIGIN" } })), 10034);
  });

  test("a publish with an unknown rollup value is refused with nats-server 2.10's quoted text", async () => {
    await ask(ours, "$JS.API.STREAM.CREATE.ROLL", { name: "ROLL", subjects: ["roll"], allow_rollup_hdrs: true });
    const hdrs = natsHeaders();
    hdrs.set("Nats-Rollup", "bogus");
    const m = await ours.request("roll", "x", { headers: hdrs, timeout: 5000 });
    assert.deepEqual(JSON.parse(m.string()), { error: { code: 500, err_code: 10111, description: 'rollup value invalid: "bogus"' }, stream: "ROLL", seq: 0 });
  });

  test("an update of a sealed stream that leaves out its denies is refused, as nats-server checks before sealing", async () => {
    await both("$JS.API.STREAM.CREATE.SEAL2", { name: "SEAL2", subjects: ["seal2"] });
    const sealing = await both("$JS.API.STREAM.UPDATE.SEAL2", { name: "SEAL2", subjects: ["seal2"], sealed: true });
    assert.equal(((sealing.ours.config as Json).deny_purge), true);
    const cases: Array<[Json, Json | undefined]> = [
      [{ sealed: true }, { code: 500, err_code: 10052, description: "stream configuration update can not cancel deny message deletes" }],
      [{ sealed: true, deny_delete: true }, { code: 500, err_code: 10052, description: "stream configuration update can not cancel deny purge" }],
      [{ sealed: true, deny_delete: true, deny_purge: true, description: "kept" }, undefined],
    ];
    for (const [extra, error] of cases) {
      const r = await both("$JS.API.STREAM.UPDATE.SEAL2", { name: "SEAL2", subjects: ["seal2"], discard: "new", ...extra });
      assert.deepEqual(r.ours.error, error, JSON.stringify(extra));
      if (r.theirs !== undefined) assert.deepEqual(r.ours.error, r.theirs.error, `nats-server: ${JSON.stringify(extra)}`);
    }
  });

  test("a stream whose last message is gone still reports that message's time as last_ts", async () => {
    const run = async (nc: ConnV2, storage: string): Promise<boolean[]> => {
      const name = `LASTTS_${storage}`;
      const subject = `lastts.${storage}`;
      await ask(nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: [subject], storage });
      const timeOf = async (seq: number): Promise<string> => ((await ask(nc, `$JS.API.STREAM.MSG.GET.${name}`, { seq })).message as Json).time as string;
      const lastTs = async (): Promise<string> => ((await ask(nc, `$JS.API.STREAM.INFO.${name}`)).state as Json).last_ts as string;
      for (let i = 0; i < 3; i++) await nc.request(subject, "x");
      const third = await timeOf(3);
      await ask(nc, `$JS.API.STREAM.MSG.DELETE.${name}`, { seq: 3 });
      const afterDelete = (await lastTs()) === third;
      await ask(nc, `$JS.API.STREAM.PURGE.${name}`);
      const afterPurge = await lastTs();
      // The third's time (the newest stored), which nats-server keeps; not the zero time.
      return [afterDelete, afterPurge === third, afterPurge !== "0001-01-01T00:00:00Z"];
    };
    for (const storage of ["file", "memory"]) {
      assert.deepEqual(await run(ours, storage), [true, true, true], storage);
      if (refNc !== undefined) assert.deepEqual(await run(refNc, storage), [true, true, true], `nats-server: ${storage}`);
    }
  });
});
