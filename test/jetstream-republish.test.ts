/**
 * Stream `republish` and `subject_transform` (KV `republish` too) with the
 * official v3 clients. Header names, their order and values are those
 * nats-server 2.10 sends (2.9.10 lacks Nats-Time-Stamp).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders, type Msg, type Subscription } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { api, startJs, type JsHarness } from "./helpers/js.js";

/** The next `n` messages of a subscription, failing after `ms`. */
async function take(sub: Subscription, n: number, ms = 5000): Promise<Msg[]> {
  const out: Msg[] = [];
  const timer = setTimeout(() => sub.unsubscribe(), ms);
  for await (const m of sub) {
    out.push(m);
    if (out.length === n) break;
  }
  clearTimeout(timer);
  assert.equal(out.length, n, `${n} republished messages`);
  return out;
}

const headerList = (m: Msg): Array<[string, string]> => (m.headers ? [...m.headers.keys()].map((k) => [k, m.headers!.get(k)]) : []);

describe("JetStream republish and subject transforms", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  before(async () => {
    h = await startJs();
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => h.close());

  test("a stored message is published again with the stream's headers, after the original ones", async () => {
    const si = await jsm.streams.add({ name: "RP", subjects: ["src.>"], republish: { src: "src.*.>", dest: "rp.$1.>" } });
    assert.deepEqual(si.config.republish, { src: "src.*.>", dest: "rp.$1.>" });
    const sub = h.nc.subscribe("rp.>");
    const hd = natsHeaders();
    hd.set("X-A", "1");
    await js.publish("src.a.b", "hello", { headers: hd });
    await js.publish("src.a.c", "hello2");
    await js.publish("src.a.b", "again");
    const [m1, m2, m3] = await take(sub, 3);
    assert.equal(m1.subject, "rp.a.b");
    assert.equal(m1.string(), "hello");
    const h1 = headerList(m1);
    assert.deepEqual(
      h1.map(([k]) => k),
      ["X-A", "Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Last-Sequence"],
    );
    assert.deepEqual(h1.filter(([k]) => k !== "Nats-Time-Stamp"), [
      ["X-A", "1"],
      ["Nats-Stream", "RP"],
      ["Nats-Subject", "src.a.b"],
      ["Nats-Sequence", "1"],
      ["Nats-Last-Sequence", "0"],
    ]);
    assert.ok(Math.abs(Date.parse(m1.headers!.get("Nats-Time-Stamp")) - Date.now()) < 5000);
    assert.equal(m2.subject, "rp.a.c");
    assert.equal(m2.headers!.get("Nats-Last-Sequence"), "0", "the last sequence is per subject");
    assert.equal(m3.headers!.get("Nats-Sequence"), "3");
    assert.equal(m3.headers!.get("Nats-Last-Sequence"), "1");
  });

  test("Nats-Last-Sequence is exact for appends of one subject in flight together", async () => {
    await jsm.streams.add({ name: "RPF", subjects: ["rpf.>"], republish: { src: ">", dest: "out.rpf.>" } });
    const sub = h.nc.subscribe("out.rpf.>");
    await Promise.all(Array.from({ length: 20 }, (_, i) => js.publish(`rpf.${i % 2}`, `${i}`)));
    const got = await take(sub, 20);
    const last = new Map<string, string>();
    for (const m of got) {
      const subject = m.headers!.get("Nats-Subject");
      assert.equal(m.headers!.get("Nats-Last-Sequence"), last.get(subject) ?? "0", `previous of ${m.headers!.get("Nats-Sequence")}`);
      last.set(subject, m.headers!.get("Nats-Sequence"));
    }
  });

  test("headers_only republishes the size instead of the payload", async () => {
    await jsm.streams.add({ name: "RPH", subjects: ["rph.>"], republish: { src: "rph.>", dest: "out.h.>", headers_only: true } });
    const sub = h.nc.subscribe("out.h.>");
    await js.publish("rph.z", "abcdef");
    const [m] = await take(sub, 1);
    assert.equal(m.subject, "out.h.z", "the `>` of the source carries what it covered");
    assert.equal(m.data.length, 0);
    assert.equal(m.headers!.get("Nats-Msg-Size"), "6");
  });

  test("republish configurations nats-server refuses", async () => {
    const cycle = await api(h.nc, "$JS.API.STREAM.CREATE.RPC", { name: "RPC", subjects: ["rpc.>"], republish: { src: "rpc.>", dest: "rpc.x" } });
    assert.deepEqual(cycle.error, { code: 500, err_code: 10052, description: "stream configuration for republish destination forms a cycle" });
    const bad = await api(h.nc, "$JS.API.STREAM.CREATE.RPC", { name: "RPC", subjects: ["rpc.>"], republish: { src: "rpc.*", dest: "out.$2" } });
    assert.deepEqual(bad.error, { code: 500, err_code: 10052, description: "stream configuration for republish with transform from 'rpc.*' to 'out.$2' not valid" });
  });

  test("a KV bucket's republish sends every put to the destination", async () => {
    const kv = await new Kvm(h.nc).create("RB", { republish: { src: ">", dest: "repub.>" } });
    const sub = h.nc.subscribe("repub.>");
    await kv.put("k1", "v1");
    await kv.put("k1", "v2");
    const [a, b] = await take(sub, 2);
    assert.equal(a.subject, "repub.$KV.RB.k1");
    assert.equal(b.string(), "v2");
    assert.equal(b.headers!.get("Nats-Last-Sequence"), "1");
    assert.equal(b.headers!.get("Nats-Stream"), "KV_RB");
  });

  test("subject_transform stores a message under its transformed subject", async () => {
    const si = await jsm.streams.add({ name: "TR", subjects: ["in.>"], subject_transform: { src: "in.*.*", dest: "out.{{wildcard(2)}}.{{wildcard(1)}}" } });
    assert.deepEqual(si.config.subject_transform, { src: "in.*.*", dest: "out.{{wildcard(2)}}.{{wildcard(1)}}" });
    await js.publish("in.a.b", "x");
    await js.publish("in.c", "untouched: the source does not match");
    assert.equal((await jsm.streams.getMessage("TR", { seq: 1 }))?.subject, "out.b.a");
    assert.equal((await jsm.streams.getMessage("TR", { seq: 2 }))?.subject, "in.c");
    const bad = await api(h.nc, "$JS.API.STREAM.CREATE.TRB", { name: "TRB", subjects: ["trb.>"], subject_transform: { src: "trb.*", dest: "x.{{bogus(1)}}" } });
    assert.deepEqual(bad.error, {
      code: 500,
      err_code: 10049,
      description: "stream subject transform from 'trb.*' to 'x.{{bogus(1)}}': invalid mapping destination: unknown function in {{bogus(1)}}",
    });
  });
});
