/**
 * What survives a restart and a kill -9: stream and consumer definitions,
 * consumer state, de-duplication ids, and every acknowledged message.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, JetStreamApiError, type JsMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { api, apiErrorCode, spawnServer, startJs } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";
import kafkajs from "kafkajs";
import { FileLog } from "../src/store/file-log.js";
import { kafkaRecords } from "../src/protocols/kafka/stored-batches.js";

const { Kafka, logLevel } = kafkajs;

/** The directory named `name` under `root` (the first found, depth first). */
function findDir(root: string, name: string): string {
  for (const e of readdirSync(root, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    if (e.name === name) return join(root, e.name);
    try {
      return findDir(join(root, e.name), name);
    } catch {
      // not under this one
    }
  }
  throw new Error(`no ${name} under ${root}`);
}
import { startServer } from "../src/index.js";

const MS = 1_000_000;

describe("JetStream durability", () => {
  test("a restart keeps streams, consumers and where each consumer was", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "R", subjects: ["r.>"] });
      await jsm.consumers.add("R", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 30_000 * MS });
      const js = jetstream(h.nc);
      for (let i = 1; i <= 10; i++) await js.publish("r.x", `m${i}`);
      const c = await js.consumers.get("R", "C");
      const first: JsMsg[] = [];
      for await (const m of await c.fetch({ max_messages: 6, expires: 2000 })) first.push(m);
      for (const m of first.slice(0, 4)) await m.ackAck();
      await h.restart();
      const jsm2 = await jetstreamManager(h.nc);
      const ci = await jsm2.consumers.info("R", "C");
      assert.equal(ci.ack_floor.stream_seq, 4);
      assert.equal(ci.num_ack_pending, 2);
      assert.equal(ci.config.ack_wait, 30_000 * MS);
      const si = await jsm2.streams.info("R");
      assert.equal(si.state.messages, 10);
      const c2 = await jetstream(h.nc).consumers.get("R", "C");
      const after: Array<[number, number]> = [];
      for await (const m of await c2.fetch({ max_messages: 6, expires: 2000 })) {
        after.push([m.seq, m.info.deliveryCount]);
        m.ack();
      }
      // 5 and 6 are redelivered once their ack wait (30 s) runs out, as nats-server does: their client may still ack them.
      assert.deepEqual(after, [
        [7, 1],
        [8, 1],
        [9, 1],
        [10, 1],
      ]);
      assert.equal((await jsm2.consumers.info("R", "C")).num_redelivered, 0);
    } finally {
      await h.close();
    }
  });

  test("a NAK's delay holds across a restart: the message is not redelivered at its ack wait", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "ND", subjects: ["nd.>"] });
      await jsm.consumers.add("ND", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 1000 * MS });
      const js = jetstream(h.nc);
      await js.publish("nd.x", "later");
      await js.publish("nd.x", "now");
      const got: JsMsg[] = [];
      for await (const m of await (await js.consumers.get("ND", "C")).fetch({ max_messages: 2, expires: 2000 })) got.push(m);
      assert.deepEqual(got.map((m) => m.seq), [1, 2]);
      // 1 is to come back in 60 s, 2 at once; both written before the restart.
      got[0].nak(60_000);
      got[1].nak();
      await h.nc.flush();
      // The flush's answer follows both NAKs; the stop that restart() makes writes the consumer's state.
      await h.restart();
      const after: Array<[number, number]> = [];
      // Three ack waits: at nats-server, 1 stays away for its 60 s.
      for await (const m of await (await jetstream(h.nc).consumers.get("ND", "C")).fetch({ max_messages: 5, expires: 3000 })) {
        after.push([m.seq, m.info.deliveryCount]);
        m.ack();
      }
      assert.deepEqual(after, [[2, 2]]);
    } finally {
      await h.close();
    }
  });

  test("a double ack whose state the disk refuses is not confirmed; once the disk takes it again, it is written and confirmed", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "RS", subjects: ["rs.>"] });
      await jsm.consumers.add("RS", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 30_000 * MS });
      const js = jetstream(h.nc);
      for (let i = 1; i <= 3; i++) await js.publish("rs.x", `m${i}`);
      const got: JsMsg[] = [];
      for await (const m of await (await js.consumers.get("RS", "C")).fetch({ max_messages: 3, expires: 2000 })) got.push(m);
      assert.equal(got.length, 3);
      assert.equal(await got[0].ackAck(), true);
      // The state file's place taken by a directory: each write of the state fails (its rename), as on a full disk.
      const state = join(h.storeDir, "streams", "RS", "obs", "C", "state.json");
      assert.ok(existsSync(state), state);
      rmSync(state);
      mkdirSync(join(state, "in-the-way"), { recursive: true });
      await assert.rejects(got[1].ackAck({ timeout: 1000 }), "not confirmed: the ack is not on disk");
      rmSync(state, { recursive: true });
      assert.equal(await got[2].ackAck({ timeout: 5000 }), true, "written again, with the ack before it");
      await h.restart();
      const ci = await (await jetstreamManager(h.nc)).consumers.info("RS", "C");
      assert.deepEqual([ci.ack_floor.stream_seq, ci.num_ack_pending], [3, 0]);
    } finally {
      await h.close();
    }
  });

  test("a purge with a sequence past the last moves the stream on to it, and first_seq starts there, across a restart", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "SKIP", subjects: ["skip.>"] });
      for (let i = 0; i < 3; i++) await jetstream(h.nc).publish("skip.x", `${i}`);
      assert.equal((await jsm.streams.purge("SKIP", { seq: 10 })).purged, 3);
      let st = (await jsm.streams.info("SKIP")).state;
      assert.deepEqual([st.first_seq, st.last_seq, st.messages], [10, 9, 0], "as nats-server: first 10, last 9");
      await jsm.streams.add({ name: "FROM", subjects: ["from.>"], first_seq: 1000 });
      await h.restart();
      const jsm2 = await jetstreamManager(h.nc);
      st = (await jsm2.streams.info("SKIP")).state;
      assert.deepEqual([st.first_seq, st.last_seq], [10, 9]);
      assert.equal((await jetstream(h.nc).publish("skip.x", "after")).seq, 10);
      assert.equal((await jsm2.streams.info("FROM")).state.first_seq, 1000);
      assert.equal((await jetstream(h.nc).publish("from.x", "first")).seq, 1000);
    } finally {
      await h.close();
    }
  });

  test("a purge 50 million past the end and a first_seq of 2^52 cost no memory per sequence skipped and hold across a restart; further is refused, never a crash", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      const js = jetstream(h.nc);
      await jsm.streams.add({ name: "FAR", subjects: ["far.>"] });
      for (let i = 0; i < 3; i++) await js.publish("far.x", `${i}`);
      const before = process.memoryUsage().arrayBuffers;
      await jsm.streams.purge("FAR", { seq: 50_000_000 });
      assert.equal((await js.publish("far.x", "after")).seq, 50_000_000);
      // The segment's detail used to keep a slot for every sequence skipped: some 400 MB here.
      const grown = process.memoryUsage().arrayBuffers - before;
      assert.ok(grown < 64 * 1024 * 1024, `${grown} bytes more held after the skip`);
      const TOP = 2 ** 52;
      await jsm.streams.add({ name: "TOP", subjects: ["top.>"], first_seq: TOP });
      assert.equal((await js.publish("top.x", "first")).seq, TOP);
      // As far as a stream can start: past it, sequences would no longer be exact.
      assert.equal(await apiErrorCode(jsm.streams.add({ name: "PAST", subjects: ["past.>"], first_seq: TOP + 2 })), 10052);
      assert.equal(await apiErrorCode(jsm.streams.purge("TOP", { seq: TOP + 2 })), 10003);
      assert.deepEqual((await api(h.nc, "$JS.API.STREAM.PURGE.TOP", '{"seq":1e30}')).error, { code: 400, err_code: 10025, description: "invalid JSON" });
      await h.restart();
      const js2 = jetstream(h.nc);
      assert.equal((await js2.publish("far.x", "again")).seq, 50_000_001);
      assert.equal((await js2.publish("top.x", "second")).seq, TOP + 1);
      const jsm2 = await jetstreamManager(h.nc);
      assert.equal((await jsm2.streams.getMessage("FAR", { seq: 50_000_000 }))?.string(), "after");
      assert.equal((await jsm2.streams.getMessage("TOP", { seq: TOP }))?.string(), "first");
      const st = (await jsm2.streams.info("FAR")).state;
      assert.deepEqual([st.first_seq, st.last_seq, st.messages], [50_000_000, 50_000_001, 2]);
    } finally {
      await h.close();
    }
  });

  test("exactly once: a retry with the same Nats-Msg-Id after a lost ack (server restart) stores one copy", async () => {
    const h = await startJs();
    try {
      await (await jetstreamManager(h.nc)).streams.add({ name: "EO", subjects: ["eo.>"] });
      const first = await jetstream(h.nc).publish("eo.order", "42", { msgID: "order-42" });
      await h.restart();
      const retry = await jetstream(h.nc).publish("eo.order", "42", { msgID: "order-42" });
      assert.equal(retry.duplicate, true);
      assert.equal(retry.seq, first.seq);
      assert.equal((await (await jetstreamManager(h.nc)).streams.info("EO")).state.messages, 1);
    } finally {
      await h.close();
    }
  });

  test("Nats-Expected-Last-Msg-Id after a restart: the last message's id, read back from the log", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      let js = jetstream(h.nc);
      await jsm.streams.add({ name: "LID", subjects: ["lid.>"] });
      await jsm.streams.add({ name: "LID2", subjects: ["lid2.>"] });
      await jsm.streams.add({ name: "LID3", subjects: ["lid3.>"] });
      await js.publish("lid.x", "1", { msgID: "A" });
      await js.publish("lid.x", "2");
      await js.publish("lid2.x", "1");
      await js.publish("lid2.x", "2", { msgID: "B" });
      await js.publish("lid3.x", "1", { msgID: "C" });
      await js.publish("lid3.x", "2", { msgID: "D" });
      // A last message deleted before the restart leaves no id to read back (nats-server: "" after a restart).
      assert.equal(await jsm.streams.deleteMessage("LID3", 2), true);
      await h.restart();
      js = jetstream(h.nc);
      const code = async (subject: string, lastMsgID: string): Promise<number | string> => {
        try {
          return (await js.publish(subject, "next", { expect: { lastMsgID } })).seq;
        } catch (e) {
          const err = e instanceof JetStreamApiError ? e : (e as { cause?: JetStreamApiError }).cause;
          return `${err?.code} ${err?.message}`;
        }
      };
      assert.equal(await code("lid.x", "A"), "10070 wrong last msg ID: ");
      assert.equal(await code("lid2.x", "B"), 3);
      assert.equal(await code("lid3.x", "D"), "10070 wrong last msg ID: ");
    } finally {
      await h.close();
    }
  });

  test("exactly once across a clean stop (ids kept in a cache) and then a kill -9 (the cache is stale: ids read back)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-dedup-"));
    let child: ChildProcess | undefined;
    try {
      let started = await spawnServer(dir);
      child = started.child;
      let nc = await connect({ servers: started.url });
      await (await jetstreamManager(nc)).streams.add({ name: "DD", subjects: ["dd.>"] });
      const a = await jetstream(nc).publish("dd.x", "a", { msgID: "id-a" });
      await nc.close();
      const stopped = new Promise((r) => child!.once("exit", r));
      child.kill("SIGTERM");
      await stopped;
      started = await spawnServer(dir);
      child = started.child;
      nc = await connect({ servers: started.url });
      assert.deepEqual(await jetstream(nc).publish("dd.x", "a", { msgID: "id-a" }), { stream: "DD", seq: a.seq, duplicate: true });
      const b = await jetstream(nc).publish("dd.x", "b", { msgID: "id-b" });
      await nc.close();
      child.kill("SIGKILL");
      await new Promise((r) => child!.once("exit", r));
      started = await spawnServer(dir);
      child = started.child;
      nc = await connect({ servers: started.url });
      for (const [id, seq] of [["id-a", a.seq], ["id-b", b.seq]] as const) {
        const again = await jetstream(nc).publish("dd.x", "again", { msgID: id });
        assert.deepEqual([again.seq, again.duplicate], [seq, true], id);
      }
      assert.equal((await (await jetstreamManager(nc)).streams.info("DD")).state.messages, 2);
      await nc.close();
    } finally {
      child?.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("exactly once: a consumer that double-acks processes each message once across a restart", async () => {
    const h = await startJs();
    try {
      await (await jetstreamManager(h.nc)).streams.add({ name: "DA", subjects: ["da.>"] });
      await (await jetstreamManager(h.nc)).consumers.add("DA", { durable_name: "P", ack_policy: AckPolicy.Explicit, ack_wait: 1000 * MS });
      for (let i = 1; i <= 20; i++) await jetstream(h.nc).publish("da.x", `${i}`);
      const processed = new Map<number, number>();
      const work = async (max: number): Promise<void> => {
        const c = await jetstream(h.nc).consumers.get("DA", "P");
        for await (const m of await c.fetch({ max_messages: max, expires: 3000 })) {
          // Processing counts only once the ack is confirmed durable.
          await m.ackAck();
          processed.set(m.seq, (processed.get(m.seq) ?? 0) + 1);
        }
      };
      await work(8);
      await h.restart();
      await work(12);
      assert.equal(processed.size, 20);
      assert.ok([...processed.values()].every((n) => n === 1));
    } finally {
      await h.close();
    }
  });

  test("a consumer restarted before its first delivery stays where its deliver policy put it", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "NEW", subjects: ["new.>"] });
      for (let i = 1; i <= 3; i++) await jetstream(h.nc).publish("new.x", `old${i}`);
      await jsm.consumers.add("NEW", { durable_name: "N", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New });
      await h.restart();
      await jetstream(h.nc).publish("new.x", "fresh");
      const c = await jetstream(h.nc).consumers.get("NEW", "N");
      const got: string[] = [];
      for await (const m of await c.fetch({ max_messages: 4, expires: 1000 })) {
        got.push(m.string());
        m.ack();
      }
      assert.deepEqual(got, ["fresh"]);
    } finally {
      await h.close();
    }
  });

  test("a KV watcher carries on after a server restart: its consumer is where it was", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-watch-"));
    const options = { port: 0, jetstream: true, storeDir: dir };
    let srv = await startServer(options);
    const nc = await connect({ servers: srv.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
    try {
      const kv = await new Kvm(nc).create("W");
      await kv.put("a", "1");
      const seen: string[] = [];
      const watch = await kv.watch();
      void (async () => {
        for await (const e of watch) seen.push(`${e.key}=${e.string()}`);
      })();
      await waitUntil(() => seen.length === 1, "the initial value");
      const ephemerals = (await (await jetstreamManager(nc)).consumers.list("KV_W").next()).map((c) => c.name);
      // The same port, so that the client reconnects by itself, as it would to a restarted nats-server.
      const port = srv.port;
      const reconnected = (async () => {
        for await (const s of nc.status()) if (s.type === "reconnect") return;
      })();
      await srv.close();
      srv = await startServer({ ...options, port });
      await reconnected;
      assert.deepEqual((await (await jetstreamManager(nc)).consumers.list("KV_W").next()).map((c) => c.name), ephemerals, "the watcher's consumer was restored");
      await kv.put("b", "2");
      // Well inside the two missed heartbeats (60 s) after which the client would recreate its consumer.
      await waitUntil(() => seen.length === 2, "the put after the restart", 10_000);
      assert.deepEqual(seen, ["a=1", "b=2"]);
      watch.stop();
    } finally {
      await nc.close();
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("kill -9 during a publish load loses no acknowledged message; unacknowledged deliveries come back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-kill-"));
    let child: ChildProcess | undefined;
    try {
      let started = await spawnServer(dir);
      child = started.child;
      let nc = await connect({ servers: started.url, maxReconnectAttempts: 0 });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "K", subjects: ["k.>"] });
      // Short: the deliveries not acknowledged come back once it runs out after the restart (a pull consumer redelivers only
      // to a pull, so none does before the kill).
      await jsm.consumers.add("K", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 4000 * MS });
      const js = jetstream(nc);
      const acked = new Map<number, string>();
      let stop = false;
      let sent = 0;
      const publishers = Array.from({ length: 64 }, async () => {
        while (!stop) {
          const body = `payload-${sent++}`;
          try {
            const pa = await js.publish("k.load", body, { timeout: 2000 });
            acked.set(pa.seq, body);
          } catch {
            return;
          }
        }
      });
      // Consume some and ack half of them, durably, before the kill.
      while (acked.size < 200) await new Promise((r) => setTimeout(r, 5));
      const c = await js.consumers.get("K", "C");
      const delivered: JsMsg[] = [];
      for await (const m of await c.fetch({ max_messages: 100, expires: 3000 })) delivered.push(m);
      for (const m of delivered.filter((m) => m.seq % 2 === 0)) await m.ackAck();
      while (acked.size < 2000) await new Promise((r) => setTimeout(r, 5));
      child.kill("SIGKILL");
      stop = true;
      await Promise.all(publishers);
      await nc.close().catch(() => undefined);

      started = await spawnServer(dir);
      child = started.child;
      nc = await connect({ servers: started.url });
      const jsm2 = await jetstreamManager(nc);
      const st = (await jsm2.streams.info("K")).state;
      assert.ok(st.last_seq >= Math.max(...acked.keys()), "every acked sequence is stored");
      for (const [seq, body] of acked) {
        const m = await jsm2.streams.getMessage("K", { seq });
        assert.equal(m?.string(), body, `acked message ${seq}`);
      }
      const c2 = await jetstream(nc).consumers.get("K", "C");
      const redelivered: number[] = [];
      const expected = delivered.filter((m) => m.seq % 2 === 1).map((m) => m.seq);
      for (const until = Date.now() + 30_000; redelivered.length < expected.length && Date.now() < until; ) {
        for await (const m of await c2.fetch({ max_messages: 50, expires: 2000 })) {
          // Meanwhile the messages after the first fetch come, once each.
          if (m.info.deliveryCount === 1) assert.ok(m.seq > delivered[delivered.length - 1].seq, `${m.seq} delivered once before`);
          else {
            assert.equal(m.info.deliveryCount, 2);
            redelivered.push(m.seq);
          }
          m.ack();
        }
      }
      redelivered.sort((a, b) => a - b);
      assert.deepEqual(redelivered, expected, "exactly the unacknowledged deliveries come back");
      await nc.close();
    } finally {
      child?.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("a partition of a multi-partition stream cut back between two starts (a replica's KIP-101 truncation) keeps every record it holds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-short-"));
    const options = { port: 0, jetstream: true, storeDir: dir, kafka: { port: 0 } };
    let srv = await startServer(options);
    const kafka = (): InstanceType<typeof Kafka> => new Kafka({ clientId: "short", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING });
    try {
      const admin = kafka().admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: "short", numPartitions: 3 }], waitForLeaders: true });
      await admin.disconnect();
      const producer = kafka().producer();
      await producer.connect();
      for (let i = 0; i < 10; i++) await producer.send({ topic: "short", acks: -1, messages: [{ value: `v${i}`, partition: 0 }] });
      await producer.disconnect();
      await srv.close();
      // Offsets 5..9 (sequences 6..10) cut, as a follower cuts what its new leader never had; the stream order still names them.
      const p0 = findDir(dir, "p0");
      const log = await FileLog.open({ dir: p0, foreign: kafkaRecords });
      assert.equal(await log.truncateFrom(6), 6);
      await log.close();
      srv = await startServer(options);
      const consumer = kafka().consumer({ groupId: "short-readers" });
      await consumer.connect();
      const seen: string[] = [];
      try {
        await consumer.subscribe({ topic: "short", fromBeginning: true });
        await consumer.run({ eachMessage: async ({ partition, message }) => void seen.push(`${partition}:${message.offset}:${message.value!.toString()}`) });
        await waitUntil(() => seen.length >= 5, "the records partition 0 still holds", 20_000);
      } finally {
        await consumer.disconnect();
      }
      assert.deepEqual(seen, ["0:0:v0", "0:1:v1", "0:2:v2", "0:3:v3", "0:4:v4"]);
      // Its next record does not take an offset the stream order named before.
      const again = kafka().producer();
      await again.connect();
      const [meta] = await again.send({ topic: "short", acks: -1, messages: [{ value: "v10", partition: 0 }] });
      await again.disconnect();
      assert.equal(meta.baseOffset, "10");
    } finally {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
