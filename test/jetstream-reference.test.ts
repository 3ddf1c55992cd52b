/**
 * JetStream API answers side by side with Debian's nats-server 2.9 (the
 * reference; those steps are skipped where it is not installed), found by a
 * differential sweep of the same raw `$JS.API` requests against both, and
 * checked on nagare alone through the official clients.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect as connectV2, type NatsConnection as ConnV2 } from "nats";
import { jetstreamManager } from "@nats-io/jetstream";
import { waitUntilAsync } from "./helpers/clients.js";
import { api, startJs, type JsHarness } from "./helpers/js.js";
import { natsServerPath, startNatsServer, type RunningNatsServer } from "./helpers/nats-server.js";

type Json = Record<string, unknown>;

const hasRef = natsServerPath() !== null;
const refSkip = hasRef ? false : "nats-server is not installed";

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
    return { ours: await api(ours as never, subject, body), theirs: refNc === undefined ? undefined : await api(refNc as never, subject, body) };
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
    const first = await api(ours as never, "$JS.API.STREAM.INFO.MANY", { subjects_filter: ">" });
    assert.equal(Object.keys((first.state as Json).subjects as Json).length, 100_000);
    assert.deepEqual([first.total, first.offset, first.limit], [n, 0, 100_000]);
    const si = await jsm.streams.info("MANY", { subjects_filter: ">" });
    assert.equal(Object.keys(si.state.subjects ?? {}).length, n);
    assert.equal(si.state.subjects?.["many.100004"], 1);
  });
  test("a double ack to a consumer that is gone gets no responders at once; one with an unknown body is answered", async () => {
    const run = async (nc: ConnV2): Promise<string[]> => {
      const out: string[] = [];
      await api(nc as never, "$JS.API.STREAM.CREATE.ACKS", { name: "ACKS", subjects: ["acks"] });
      await api(nc as never, "$JS.API.CONSUMER.DURABLE.CREATE.ACKS.C", { stream_name: "ACKS", config: { durable_name: "C", ack_policy: "explicit" } });
      for (let i = 0; i < 2; i++) await nc.request("acks", "x");
      const js = nc.jetstream();
      const got: Array<{ reply: string }> = [];
      for await (const m of js.fetch("ACKS", "C", { batch: 2, expires: 2000 })) got.push(m as unknown as { reply: string }); // the v2 JsMsg's ack subject
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
      await api(nc as never, "$JS.API.CONSUMER.DELETE.ACKS.C");
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
});
