/**
 * Streams through the JetStream API with the official v3 clients: lifecycle,
 * listings, purges, message get/delete, direct get, publishing with
 * de-duplication and expectations, and JetStream's errors for bad requests.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError, DiscardPolicy, StorageType, type JetStreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { api, apiErrorCode, startJs, type JsHarness } from "./helpers/js.js";

const SEC = 1_000_000_000;

describe("JetStream streams", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  before(async () => {
    h = await startJs();
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => h.close());

  test("create fills nats-server's defaults, is idempotent, and refuses a different config under the same name", async () => {
    const si = await jsm.streams.add({ name: "LIFE", subjects: ["life.>"] });
    assert.equal(si.config.max_msgs, -1);
    assert.equal(si.config.duplicate_window, 120 * SEC);
    assert.equal(si.config.storage, StorageType.File);
    assert.equal(si.config.num_replicas, 1);
    assert.equal(si.state.messages, 0);
    const again = await jsm.streams.add({ name: "LIFE", subjects: ["life.>"] });
    assert.equal(again.created, si.created);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "LIFE", subjects: ["other.>"] })), 10058);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "OVER", subjects: ["life.x"] })), 10065);
    const upd = await jsm.streams.update("LIFE", { subjects: ["life.>", "more.*"], max_msgs: 2 });
    assert.deepEqual(upd.config.subjects, ["life.>", "more.*"]);
    for (let i = 0; i < 4; i++) await js.publish("more.x", `m${i}`);
    const info = await jsm.streams.info("LIFE");
    assert.equal(info.state.messages, 2, "max_msgs applied by the update");
    assert.equal(info.state.first_seq, 3);
    assert.equal(await jsm.streams.delete("LIFE"), true);
    assert.equal(await apiErrorCode(jsm.streams.info("LIFE")), 10059);
  });

  test("names and lists, with a subject filter and paging", async () => {
    for (const n of ["PA", "PB", "PC"]) await jsm.streams.add({ name: n, subjects: [`page.${n}.>`] });
    const names: string[] = [];
    for await (const n of jsm.streams.names()) names.push(n);
    assert.deepEqual(names.filter((n) => n.startsWith("P")).sort(), ["PA", "PB", "PC"]);
    const filtered: string[] = [];
    for await (const n of jsm.streams.names("page.PB.x")) filtered.push(n);
    assert.deepEqual(filtered, ["PB"]);
    const page = await api(h.nc, "$JS.API.STREAM.NAMES", { offset: 1 });
    assert.equal(page.type, "io.nats.jetstream.api.v1.stream_names_response");
    assert.equal(page.offset, 1);
    assert.equal(page.limit, 1024);
    assert.equal((page.streams as string[]).length, (page.total as number) - 1);
    // Past the end, as nats-server 2.9 answers: the offset is the end, the names null (a LIST page and consumers: []).
    const past = await api(h.nc, "$JS.API.STREAM.NAMES", { offset: 10_000 });
    assert.deepEqual([past.offset, past.streams], [past.total, null]);
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.NAMES", { subject: "nothing.captures.this" })).streams, null);
    const pastList = await api(h.nc, "$JS.API.STREAM.LIST", { offset: 10_000 });
    assert.deepEqual([pastList.offset, pastList.streams], [pastList.total, []]);
    const pastConsumers = await api(h.nc, "$JS.API.CONSUMER.NAMES.PA", { offset: 3 });
    assert.deepEqual([pastConsumers.total, pastConsumers.offset, pastConsumers.consumers], [0, 0, []]);
    const listed: string[] = [];
    for await (const si of jsm.streams.list()) listed.push(si.config.name);
    assert.ok(["PA", "PB", "PC"].every((n) => listed.includes(n)));
    for (const n of ["PA", "PB", "PC"]) await jsm.streams.delete(n);
  });

  test("purge by filter, by sequence and keeping the newest", async () => {
    await jsm.streams.add({ name: "PURGE", subjects: ["purge.*"] });
    for (let i = 1; i <= 10; i++) await js.publish(i % 2 === 0 ? "purge.even" : "purge.odd", `${i}`);
    assert.equal((await jsm.streams.purge("PURGE", { filter: "purge.even" })).purged, 5);
    assert.equal((await jsm.streams.purge("PURGE", { seq: 5 })).purged, 2, "odd 1 and 3 are below 5");
    const r = await jsm.streams.purge("PURGE", { keep: 1 });
    assert.equal(r.purged, 2);
    const st = (await jsm.streams.info("PURGE")).state;
    assert.equal(st.messages, 1);
    assert.equal(st.first_seq, 9);
    assert.equal((await jsm.streams.purge("PURGE")).purged, 1);
    await jsm.streams.delete("PURGE");
  });

  test("message get by sequence, last and next by subject; delete; direct get", async () => {
    await jsm.streams.add({ name: "GET", subjects: ["get.>"], allow_direct: true });
    const hdrs = natsHeaders();
    hdrs.set("X-Trace", "abc");
    await js.publish("get.a", "a1", { headers: hdrs });
    await js.publish("get.b", "b1");
    await js.publish("get.a", "a2");
    const m1 = await jsm.streams.getMessage("GET", { seq: 1 });
    assert.equal(m1?.subject, "get.a");
    assert.equal(m1?.string(), "a1");
    assert.equal(m1?.header.get("X-Trace"), "abc");
    assert.equal((await jsm.streams.getMessage("GET", { last_by_subj: "get.a" }))?.seq, 3);
    assert.equal((await jsm.streams.getMessage("GET", { next_by_subj: "get.b", seq: 1 } as never))?.seq, 2);
    assert.equal(await jsm.streams.deleteMessage("GET", 2), true);
    assert.equal(await jsm.streams.getMessage("GET", { seq: 2 }), null);
    assert.equal(await apiErrorCode(jsm.streams.deleteMessage("GET", 2)), 10043);
    const d = await jsm.direct.getMessage("GET", { last_by_subj: "get.a" });
    assert.equal(d?.seq, 3);
    assert.equal(d?.string(), "a2");
    assert.equal((await jsm.direct.getMessage("GET", { seq: 1 }))?.header.get("X-Trace"), "abc");
    assert.equal(await jsm.direct.getMessage("GET", { last_by_subj: "get.none" }), null);
    const raw = await h.nc.request("$JS.API.DIRECT.GET.GET.get.a", "", { timeout: 2000 });
    assert.equal(raw.headers?.get("Nats-Sequence"), "3");
    assert.equal(raw.headers?.get("Nats-Subject"), "get.a");
    assert.equal(raw.headers?.get("Nats-Stream"), "GET");
    await jsm.streams.delete("GET");
  });

  test("message get requests are read as nats-server reads them: seq 0 is no seq, conflicting fields are a bad request", async () => {
    await jsm.streams.add({ name: "GETQ", subjects: ["getq.>"], allow_direct: true });
    await js.publish("getq.a", "a1");
    await js.publish("getq.b", "b1");
    const code = async (body: unknown) => ((await api(h.nc, "$JS.API.STREAM.MSG.GET.GETQ", body)).error as { err_code?: number } | undefined)?.err_code;
    assert.equal(await code({ seq: 0 }), 10003);
    assert.equal(await code({ seq: 1, last_by_subj: "getq.a" }), 10003);
    assert.equal(await code({ last_by_subj: "getq.a", next_by_subj: "getq.a" }), 10003);
    assert.equal(await code({ seq: 0, last_by_subj: "getq.a" }), undefined, "a zero seq beside last_by_subj is no seq");
    const status = async (subject: string, body: string) => {
      const m = await h.nc.request(subject, body, { timeout: 2000 });
      return `${m.headers?.code || 200} ${m.headers?.description || m.headers?.get("Nats-Sequence")}`;
    };
    assert.equal(await status("$JS.API.DIRECT.GET.GETQ", ""), "408 Empty Request");
    assert.equal(await status("$JS.API.DIRECT.GET.GETQ", JSON.stringify({ seq: 0 })), "408 Empty Request");
    assert.equal(await status("$JS.API.DIRECT.GET.GETQ", "{nope"), "408 Malformed Request");
    assert.equal(await status("$JS.API.DIRECT.GET.GETQ", JSON.stringify({ seq: 1, last_by_subj: "getq.a" })), "408 Bad Request");
    // The subject form takes a wildcard as the JSON form does: the newest message of any matching subject.
    assert.equal(await status("$JS.API.DIRECT.GET.GETQ.getq.*", ""), "200 2");
    await jsm.streams.delete("GETQ");
  });

  test("publish acks, de-duplication by Nats-Msg-Id, and every expectation header", async () => {
    await jsm.streams.add({ name: "PUB", subjects: ["pub.>"], duplicate_window: 2 * SEC });
    const a = await js.publish("pub.a", "1", { msgID: "m-1" });
    assert.deepEqual([a.stream, a.seq, a.duplicate], ["PUB", 1, false]);
    const dup = await js.publish("pub.a", "1 again", { msgID: "m-1" });
    assert.deepEqual([dup.seq, dup.duplicate], [1, true]);
    assert.equal(await apiErrorCode(js.publish("pub.a", "x", { expect: { streamName: "OTHER" } })), 10060);
    assert.equal(await apiErrorCode(js.publish("pub.a", "x", { expect: { lastSequence: 7 } })), 10071);
    assert.equal((await js.publish("pub.a", "2", { expect: { lastSequence: 1 } })).seq, 2);
    assert.equal(await apiErrorCode(js.publish("pub.b", "x", { expect: { lastSubjectSequence: 1 } })), 10071);
    assert.equal((await js.publish("pub.b", "3", { expect: { lastSubjectSequence: 0 } })).seq, 3);
    assert.equal(await apiErrorCode(js.publish("pub.a", "x", { expect: { lastMsgID: "nope" } })), 10070);
    // The last message (3) has no id: m-1 is no longer the last id.
    assert.equal(await apiErrorCode(js.publish("pub.a", "x", { expect: { lastMsgID: "m-1" } })), 10070);
    assert.equal((await js.publish("pub.a", "4", { msgID: "m-4" })).seq, 4);
    assert.equal((await js.publish("pub.a", "5", { expect: { lastMsgID: "m-4" } })).seq, 5);
    // As nats-server reads an expected sequence: empty is none; only digits are a number (0x0 is not 0, nor 5e0 5).
    const expecting = (name: string, value: string) => {
      const h = natsHeaders();
      h.set(name, value);
      return { headers: h };
    };
    assert.equal((await js.publish("pub.d", "6", expecting("Nats-Expected-Last-Sequence", ""))).seq, 6);
    assert.equal((await js.publish("pub.d", "7", expecting("Nats-Expected-Last-Subject-Sequence", ""))).seq, 7);
    for (const [name, value] of [["Nats-Expected-Last-Sequence", "7e0"], ["Nats-Expected-Last-Sequence", "0x7"], ["Nats-Expected-Last-Subject-Sequence", "0x0"]]) {
      assert.equal(await apiErrorCode(js.publish("pub.e", "x", expecting(name, value))), 10071, `${name}: ${value}`);
    }
    // Many concurrent publishes with ids: each id stored once, in order.
    const acks = await Promise.all(Array.from({ length: 200 }, (_, i) => js.publish("pub.c", `${i}`, { msgID: `c-${i % 100}` })));
    assert.equal(new Set(acks.map((x) => x.seq)).size, 100);
    assert.equal(acks.filter((x) => x.duplicate).length, 100);
    assert.equal((await jsm.streams.info("PUB")).state.messages, 107);
    await jsm.streams.delete("PUB");
  });

  test("a retried publish is a duplicate before its expectations are checked; the subject's expectation comes first", async () => {
    await jsm.streams.add({ name: "RETRY", subjects: ["retry.>"] });
    const first = await js.publish("retry.a", "v1", { msgID: "r-1", expect: { lastSubjectSequence: 0 } });
    assert.equal(first.seq, 1);
    // The same publish again (its ack was lost, say): its expectations no longer hold, but it was stored.
    const retry = await js.publish("retry.a", "v1", { msgID: "r-1", expect: { lastSubjectSequence: 0, lastSequence: 0 } });
    assert.deepEqual([retry.seq, retry.duplicate], [1, true]);
    // Both expectations wrong: nats-server names the subject's last sequence (none: 0), not the stream's (1).
    const err = await js.publish("retry.b", "x", { expect: { lastSubjectSequence: 6, lastSequence: 14 } }).then(
      () => assert.fail("the publish should have been refused"),
      (e: unknown) => (e instanceof JetStreamApiError ? e : (e as { cause?: JetStreamApiError }).cause),
    );
    assert.equal(err?.code, 10071);
    assert.match(String(err?.message), /wrong last sequence: 0$/);
    // A refused publish with an id does not hold the id: the next one with it is stored.
    assert.equal(await apiErrorCode(js.publish("retry.c", "x", { msgID: "r-2", expect: { lastSequence: 9 } })), 10071);
    const stored = await js.publish("retry.c", "y", { msgID: "r-2" });
    assert.deepEqual([stored.seq, stored.duplicate], [2, false]);
    await jsm.streams.delete("RETRY");
  });

  test("Nats-Expected-Last-Msg-Id compares with the last message's id, empty when it had none, as nats-server 2.9.10", async () => {
    await jsm.streams.add({ name: "LASTID", subjects: ["lastid.>"] });
    const refusal = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (e) {
        const err = e instanceof JetStreamApiError ? e : (e as { cause?: JetStreamApiError }).cause;
        return `${err?.code} ${err?.message}`;
      }
      return "stored";
    };
    await js.publish("lastid.a", "1", { msgID: "A" });
    await js.publish("lastid.a", "2");
    // The last message had no id: A is not the last id any more, and the error names the empty one.
    assert.equal(await refusal(js.publish("lastid.a", "x", { expect: { lastMsgID: "A" } })), "10070 wrong last msg ID: ");
    const h2 = natsHeaders();
    h2.set("Nats-Expected-Last-Msg-Id", "");
    // An empty expectation is none (nats-server checks only a non-empty one).
    assert.equal((await js.publish("lastid.a", "3", { headers: h2 })).seq, 3);
    await js.publish("lastid.a", "4", { msgID: "B" });
    assert.equal(await refusal(js.publish("lastid.a", "x", { expect: { lastMsgID: "A" } })), "10070 wrong last msg ID: B");
    // Deleting the last message leaves its id the last one, as on nats-server.
    await js.publish("lastid.a", "5", { msgID: "C" });
    assert.equal(await jsm.streams.deleteMessage("LASTID", 5), true);
    assert.equal((await js.publish("lastid.a", "6", { expect: { lastMsgID: "C" } })).seq, 6);
    assert.equal(await refusal(js.publish("lastid.a", "x", { expect: { lastMsgID: "C" } })), "10070 wrong last msg ID: ");
    await jsm.streams.delete("LASTID");
  });

  test("limits: max message size, discard new, and no responders when no stream captures a subject", async () => {
    await jsm.streams.add({ name: "LIM", subjects: ["lim.>"], max_msg_size: 16, max_msgs: 2, discard: DiscardPolicy.New });
    assert.equal(await apiErrorCode(js.publish("lim.a", "x".repeat(17))), 10054);
    await js.publish("lim.a", "1");
    await js.publish("lim.a", "2");
    try {
      await js.publish("lim.a", "3");
      assert.fail("third publish accepted");
    } catch (err) {
      assert.match(String((err as Error).message), /maximum messages exceeded/);
    }
    // The v3 client reports the no-responders status of a publish as "jetstream is not enabled".
    await assert.rejects(js.publish("nowhere.captured", "x"), /no responders|not enabled/i);
    await jsm.streams.delete("LIM");
  });

  test("rollup replaces a subject's history; refused where the stream does not allow it", async () => {
    await jsm.streams.add({ name: "ROLL", subjects: ["roll.*"], allow_rollup_hdrs: true });
    await js.publish("roll.a", "1");
    await js.publish("roll.a", "2");
    await js.publish("roll.b", "keep");
    const hd = natsHeaders();
    hd.set("Nats-Rollup", "sub");
    const r = await js.publish("roll.a", "sum", { headers: hd });
    const st = (await jsm.streams.info("ROLL")).state;
    assert.equal(st.messages, 2);
    assert.equal((await jsm.streams.getMessage("ROLL", { last_by_subj: "roll.a" }))?.seq, r.seq);
    await jsm.streams.add({ name: "NOROLL", subjects: ["noroll.*"] });
    assert.equal(await apiErrorCode(js.publish("noroll.a", "x", { headers: hd })), 10111);
    await jsm.streams.delete("ROLL");
    await jsm.streams.delete("NOROLL");
  });

  test("a rollup of the whole stream moves its consumers past what it removed, as a purge does", async () => {
    await jsm.streams.add({ name: "ROLLC", subjects: ["rollc.*"], allow_rollup_hdrs: true });
    await js.publish("rollc.a", "1");
    await jsm.consumers.add("ROLLC", { durable_name: "C", ack_policy: "explicit" });
    await js.publish("rollc.a", "2");
    const c = await js.consumers.get("ROLLC", "C");
    assert.equal((await c.next({ expires: 1000 }))?.seq, 1, "delivered, left unacked");
    const hd = natsHeaders();
    hd.set("Nats-Rollup", "all");
    assert.equal((await js.publish("rollc.b", "sum", { headers: hd })).seq, 3);
    const ci = await jsm.consumers.info("ROLLC", "C");
    assert.equal(ci.delivered.stream_seq, 2);
    assert.equal(ci.ack_floor.stream_seq, 2);
    assert.equal(ci.num_ack_pending, 0);
    assert.equal(ci.num_pending, 1);
    assert.equal((await c.next({ expires: 1000 }))?.seq, 3);
    await jsm.streams.delete("ROLLC");
  });

  // nats-server 2.10 starts such a stream by purging its empty store up to first_seq; nagare does the same.
  test("first_seq: the stream's first message gets that sequence", async () => {
    for (const storage of [StorageType.File, StorageType.Memory]) {
      const name = `FIRST_${storage}`;
      const si = await jsm.streams.add({ name, subjects: [`first.${storage}.>`], storage, first_seq: 100 });
      assert.equal(si.config.first_seq, 100);
      assert.equal(si.state.first_seq, 100);
      assert.equal((await js.publish(`first.${storage}.a`, "x")).seq, 100);
      await jsm.streams.delete(name);
    }
  });

  test("deleted_details lists the sequences gone between the first and the last", async () => {
    for (const storage of [StorageType.File, StorageType.Memory]) {
      const name = `DD_${storage}`;
      await jsm.streams.add({ name, subjects: [`dd.${storage}.>`], storage });
      for (let i = 1; i <= 8; i++) await js.publish(`dd.${storage}.x`, `${i}`);
      for (const seq of [3, 4, 6]) assert.equal(await jsm.streams.deleteMessage(name, seq), true);
      const si = await jsm.streams.info(name, { deleted_details: true });
      assert.deepEqual(si.state.deleted, [3, 4, 6]);
      assert.equal(si.state.num_deleted, 3);
      assert.equal((await jsm.streams.info(name)).state.deleted, undefined, "only when asked for");
      await jsm.streams.delete(name);
    }
  });

  test("bad requests get JetStream errors and the server keeps serving", async () => {
    const malformed = await api(h.nc, "$JS.API.STREAM.CREATE.BAD", "{not json");
    assert.equal((malformed.error as { err_code: number }).err_code, 10025);
    // A value of the wrong type does not decode in nats-server: "invalid JSON", as for broken JSON.
    const wrongType = await api(h.nc, "$JS.API.STREAM.CREATE.BAD", { name: "BAD", max_msgs: "lots" });
    assert.equal((wrongType.error as { err_code: number }).err_code, 10025);
    const badName = await api(h.nc, "$JS.API.STREAM.CREATE.a.b", { name: "a.b" });
    assert.ok(badName.error, "a dotted name is refused");
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "BAD", max_age: -5 })), 10052);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "BAD", subjects: ["foo..bar"] })), 10052);
    const mismatch = await api(h.nc, "$JS.API.STREAM.CREATE.ONE", { name: "TWO" });
    assert.equal((mismatch.error as { err_code: number }).err_code, 10056);
    const consumerBad = await api(h.nc, "$JS.API.CONSUMER.CREATE.NOPE", { stream_name: "NOPE", config: {} });
    assert.equal((consumerBad.error as { err_code: number }).err_code, 10059);
    const info = await jsm.getAccountInfo();
    assert.ok(info.api.errors >= 5);
    assert.equal(info.streams, 0);
  });
});
