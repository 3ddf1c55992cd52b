/**
 * KV and object store with the official v3 clients (@nats-io/kv, @nats-io/obj),
 * and the JetStream API of the v2 `nats` client.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Kvm, type KvEntry } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import * as v2 from "nats";
import { startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";

describe("KV and object store", () => {
  let h: JsHarness;

  before(async () => {
    h = await startJs();
  });
  after(async () => h.close());

  test("KV put, get, create, update, delete, purge, keys and history", async () => {
    const kv = await new Kvm(h.nc).create("cfg", { history: 3 });
    const r1 = await kv.put("app.color", "red");
    const r2 = await kv.put("app.color", "green");
    assert.ok(r2 > r1);
    const e = await kv.get("app.color");
    assert.equal(e?.string(), "green");
    assert.equal(e?.revision, r2);
    await assert.rejects(kv.create("app.color", "blue"), /wrong last sequence/);
    assert.ok((await kv.create("app.size", "L")) > 0);
    await assert.rejects(kv.update("app.color", "x", r1), /wrong last sequence/);
    await kv.update("app.color", "blue", r2);
    await kv.put("app.color", "black");
    const hist: string[] = [];
    for await (const he of await kv.history({ key: "app.color" })) hist.push(he.string());
    assert.deepEqual(hist, ["green", "blue", "black"], "history keeps the last 3");
    await kv.delete("app.size");
    assert.equal((await kv.get("app.size"))?.operation, "DEL");
    await kv.put("tmp.a", "1");
    await kv.put("tmp.a", "2");
    await kv.purge("tmp.a");
    const purged = await kv.get("tmp.a");
    assert.equal(purged?.operation, "PURGE");
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    assert.deepEqual(keys.sort(), ["app.color"]);
    const status = await kv.status();
    assert.equal(status.history, 3);
    assert.equal(status.bucket, "cfg");
    // A recreated client sees the same bucket.
    const again = await new Kvm(h.nc).open("cfg");
    assert.equal((await again.get("app.color"))?.string(), "black");
  });

  test("KV watch: current values first, then live updates and deletes", async () => {
    const kv = await new Kvm(h.nc).create("watched");
    await kv.put("a", "1");
    await kv.put("b", "2");
    await kv.put("a", "3");
    const seen: Array<[string, string, string]> = [];
    const w = await kv.watch();
    void (async () => {
      for await (const e of w) seen.push([e.key, e.operation, e.string()]);
    })();
    await waitUntil(() => seen.length === 2, "initial values");
    assert.deepEqual(seen, [
      ["b", "PUT", "2"],
      ["a", "PUT", "3"],
    ]);
    await kv.put("c", "4");
    await kv.delete("b");
    await waitUntil(() => seen.length === 4, "live updates");
    assert.deepEqual(seen.slice(2), [
      ["c", "PUT", "4"],
      ["b", "DEL", ""],
    ]);
    w.stop();
  });

  test("KV max_value_size: a write whose revision check fails is refused for that, not for its size", async () => {
    // nats-server checks max_msg_size (headers and value) after the expectation headers: a create of an existing key whose
    // revision header takes it past the limit is "wrong last sequence", which the client reads as "the key exists".
    const kv = await new Kvm(h.nc).create("small", { maxValueSize: 60 });
    const rev = await kv.put("k", "v");
    const value = "x".repeat(20);
    await assert.rejects(kv.create("k", value), /wrong last sequence/);
    await assert.rejects(kv.update("k", value, rev + 5), /wrong last sequence/);
    // The same write with the right revision is then refused for its size.
    await assert.rejects(kv.update("k", value, rev), /message size exceeds maximum allowed/);
    assert.equal((await kv.get("k"))?.string(), "v");
  });

  test("KV get from a bucket deleted under an open handle fails, not 'no such key'", async () => {
    // The handle that created the bucket reads it by direct get (allow_direct).
    const kv = await new Kvm(h.nc).create("gone");
    await kv.put("k", "v");
    await kv.destroy();
    // nats-server has no direct-get responder for the stream any more: the client gets an error, never a missing key.
    await assert.rejects(kv.get("k"));
    const v2kv = await v2.connect({ servers: h.srv.url }).then(async (nc) => {
      try {
        const b = await nc.jetstream().views.kv("gone2");
        await b.put("k", v2.StringCodec().encode("v"));
        await (await nc.jetstreamManager()).streams.delete("KV_gone2");
        return await b.get("k").then(
          (e) => `resolved ${e === null ? "null" : e.operation}`,
          () => "rejected",
        );
      } finally {
        await nc.close();
      }
    });
    assert.equal(v2kv, "rejected");
  });

  test("KV TTL: values older than the bucket's ttl are gone", async () => {
    const kv = await new Kvm(h.nc).create("ttl", { ttl: 500 });
    await kv.put("k", "v");
    assert.equal((await kv.get("k"))?.string(), "v");
    const deadline = Date.now() + 5000;
    let e: KvEntry | null = await kv.get("k");
    while (e !== null) {
      if (Date.now() > deadline) assert.fail("value outlived the ttl");
      await new Promise((r) => setTimeout(r, 50));
      e = await kv.get("k");
    }
  });

  test("object store: a 20 MiB object round-trips intact; list, watch, delete", async () => {
    const os = await new Objm(h.nc).create("files");
    const updates: string[] = [];
    const w = await os.watch();
    void (async () => {
      for await (const info of w) if (info) updates.push(`${info.name}:${info.deleted ? "deleted" : "put"}`);
    })();
    const blob = randomBytes(20 * 1024 * 1024);
    const info = await os.putBlob({ name: "big.bin" }, blob);
    assert.equal(info.size, blob.length);
    await os.putBlob({ name: "small.txt" }, Buffer.from("hello"));
    const back = await os.getBlob("big.bin");
    assert.ok(back !== null);
    assert.equal(back.length, blob.length);
    assert.equal(createHash("sha256").update(back).digest("hex"), createHash("sha256").update(blob).digest("hex"));
    const listed = (await os.list()).map((i) => i.name).sort();
    assert.deepEqual(listed, ["big.bin", "small.txt"]);
    await os.delete("small.txt");
    assert.equal(await os.get("small.txt"), null);
    await waitUntil(() => updates.includes("small.txt:deleted"), "watch sees the delete");
    assert.ok(updates.includes("big.bin:put"));
    w.stop();
  });

  test("the v2 nats client: streams, publish, pull, and KV", async () => {
    const nc = await v2.connect({ servers: h.srv.url });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: "V2", subjects: ["v2.>"] });
      const js = nc.jetstream();
      for (let i = 0; i < 5; i++) await js.publish("v2.x", v2.StringCodec().encode(`m${i}`), { msgID: `id-${i}` });
      const dup = await js.publish("v2.x", v2.StringCodec().encode("again"), { msgID: "id-0" });
      assert.equal(dup.duplicate, true);
      await jsm.consumers.add("V2", { durable_name: "C", ack_policy: v2.AckPolicy.Explicit });
      const c = await js.consumers.get("V2", "C");
      const seqs: number[] = [];
      for await (const m of await c.fetch({ max_messages: 5, expires: 2000 })) {
        seqs.push(m.seq);
        m.ack();
      }
      assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
      const kv = await js.views.kv("v2kv");
      await kv.put("k", v2.StringCodec().encode("v"));
      assert.equal(v2.StringCodec().decode((await kv.get("k"))!.value), "v");
      await assert.rejects(jsm.streams.info("MISSING"), (err: unknown) => (err as { api_error?: { err_code: number } }).api_error?.err_code === 10059);
    } finally {
      await nc.close();
    }
  });
});
