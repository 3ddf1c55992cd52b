/**
 * Damage found in a stream's files, as the official clients see it: bit rot
 * in the middle of the newest segment after a crash (no index file), and in
 * a batch found on read. Intact messages after the damage are kept, the loss
 * is reported in stream info, sequences are never reused, a durable
 * consumer keeps its place, and a get of a lost message answers at once.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager, AckPolicy, type JetStreamManager } from "@nats-io/jetstream";
import { api, startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";
import type { FaultInjector } from "../src/store/file-log.js";
import { flipByte } from "./helpers/damage.js";
import { createTopic, startKafka } from "./helpers/kafka.js";

const MS = 1_000_000;

function partitionDir(h: JsHarness, stream: string): string {
  return join(h.storeDir, "streams", stream, "p0");
}


/** Publishes `n` messages in windows of concurrent publishes (each its own batch, mostly). */
async function publish(h: JsHarness, n: number): Promise<void> {
  const js = jetstream(h.nc);
  for (let i = 1; i <= n; i += 50) {
    const window: Promise<unknown>[] = [];
    for (let k = i; k < i + 50 && k <= n; k++) window.push(js.publish(`d.${k % 7}`, `message ${k}`));
    await Promise.all(window);
  }
}

async function ackFirst(h: JsHarness, stream: string, durable: string, n: number): Promise<void> {
  const c = await jetstream(h.nc).consumers.get(stream, durable);
  let acked = 0;
  while (acked < n) {
    for await (const m of await c.fetch({ max_messages: Math.min(500, n - acked), expires: 5000 })) {
      // Acks are handled in order: confirming the last one confirms them all.
      if (++acked === n) await m.ackAck();
      else m.ack();
    }
  }
}

/**
 * Stream `name` (subjects `<lowercase name>.>`): messages 1..100, a clean close (its marker after 100), 101..200, a
 * clean close; then its segment cut right after that marker, at a batch boundary, and the server started again.
 */
async function cutTailAfterRestart(h: JsHarness, name: string): Promise<void> {
  const subject = `${name.toLowerCase()}.x`;
  await (await jetstreamManager(h.nc)).streams.add({ name, subjects: [`${name.toLowerCase()}.>`] });
  for (let i = 1; i <= 100; i++) await jetstream(h.nc).publish(subject, `m${i}`);
  await h.restart();
  for (let i = 101; i <= 200; i++) await jetstream(h.nc).publish(subject, `m${i}`);
  await h.restart({
    whileStopped: () => {
      const dir = partitionDir(h, name);
      const seg = join(dir, readdirSync(dir).filter((n) => n.endsWith(".seg")).sort().pop()!);
      const bytes = readFileSync(seg);
      // Batch headers: u32 length (after the crc), u32 crc, version, flags, reserved, u64 first sequence, u64 time, u32 count.
      let cut = 0;
      while (cut < bytes.length) {
        const tombstones = (bytes[cut + 9] & 2) !== 0;
        const last = bytes.readUInt32LE(cut + 12) + bytes.readUInt32LE(cut + 28) - 1;
        cut += bytes.readUInt32LE(cut) + 8;
        if (tombstones && last >= 100) break;
      }
      assert.ok(cut < bytes.length, "a marker follows message 100");
      truncateSync(seg, cut);
    },
  });
}

async function lostOf(jsm: JetStreamManager, stream: string): Promise<{ msgs: number[]; bytes: number } | undefined> {
  const si = await jsm.streams.info(stream);
  return (si.state as unknown as { lost?: { msgs: number[]; bytes: number } }).lost;
}

describe("damage in stream files", () => {
  for (const [where, offset] of [
    ["in the middle of the newest segment", (size: number) => Math.floor(size / 2)],
    ["2,000 bytes into the newest segment", () => 2000],
  ] as const) {
    test(`a flipped byte ${where}, found at start after a crash: only the damaged batch is lost, the rest is served, nothing is reused`, async () => {
      const h = await startJs();
      try {
        const jsm = await jetstreamManager(h.nc);
        await jsm.streams.add({ name: "D", subjects: ["d.>"], allow_direct: true });
        await jsm.consumers.add("D", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 60_000 * MS });
        await publish(h, 3000);
        await ackFirst(h, "D", "C", 1485);
        await h.srv.close();
        await h.nc.close().catch(() => undefined);
        // As a crash leaves it: no index file for the newest segment.
        const dir = partitionDir(h, "D");
        for (const n of readdirSync(dir)) if (n.endsWith(".idx")) unlinkSync(join(dir, n));
        const seg = join(dir, readdirSync(dir).filter((n) => n.endsWith(".seg")).sort().pop()!);
        flipByte(seg, offset(statSync(seg).size), 0x5a);
        await h.restart();

        const jsm2 = await jetstreamManager(h.nc);
        const si = await jsm2.streams.info("D");
        const lost = await lostOf(jsm2, "D");
        assert.ok(lost !== undefined && lost.msgs.length >= 1 && lost.msgs.length <= 60, `a few messages are lost, not the rest: ${JSON.stringify(lost)}`);
        assert.ok(lost.bytes > 0);
        assert.equal(si.state.messages, 3000 - lost.msgs.length, "every intact message after the damage is kept");
        assert.equal(si.state.last_seq, 3000);
        const pub = await jetstream(h.nc).publish("d.x", "after");
        assert.equal(pub.seq, 3001, "the next publish continues the sequence");
        const ci = await jsm2.consumers.info("D", "C");
        assert.equal(ci.ack_floor.stream_seq, 1485, "the durable consumer keeps its place");

        // Gets of a lost message answer at once; the next intact one is served.
        const gone = lost.msgs[0];
        assert.equal(await jsm2.streams.getMessage("D", { seq: gone }), null);
        assert.equal(((await api(h.nc, "$JS.API.STREAM.MSG.GET.D", { seq: gone })).error as { err_code?: number } | undefined)?.err_code, 10037);
        const direct = await h.nc.request(`$JS.API.DIRECT.GET.D`, JSON.stringify({ seq: gone }), { timeout: 2000 });
        assert.equal(direct.headers?.code, 404);
        const after = lost.msgs[lost.msgs.length - 1] + 1;
        assert.equal((await jsm2.streams.getMessage("D", { seq: after }))?.seq, after);

        // A consumer reading across the damage steps over it.
        await jsm2.consumers.add("D", { durable_name: "ALL", ack_policy: AckPolicy.None });
        const c = await jetstream(h.nc).consumers.get("D", "ALL");
        let seen = 0;
        for await (const m of await c.fetch({ max_messages: 3001, expires: 5000 })) {
          assert.ok(!lost.msgs.includes(m.seq));
          seen++;
          if (seen === 3001 - lost.msgs.length) break;
        }
        assert.equal(seen, 3001 - lost.msgs.length);

        // The loss stays reported after another restart.
        await h.restart();
        assert.deepEqual(await lostOf(await jetstreamManager(h.nc), "D"), lost);
      } finally {
        await h.close();
      }
    });
  }

  test("a stream or consumer whose meta.json is gone is refused and reported, not dropped; an interrupted delete is finished", async () => {
    // An outside test deleted meta.json files: the stream, or the consumer, vanished with nothing logged, and a create
    // of the same name then took over the old messages under a new config.
    const logDir = mkdtempSync(join(tmpdir(), "nagare-meta-log-"));
    const logFile = join(logDir, "server.log");
    const logged = (re: RegExp): boolean => existsSync(logFile) && re.test(readFileSync(logFile, "utf8"));
    const h = await startJs({ server: { noLog: false, logFile, httpPort: 0 } });
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "GONE", subjects: ["gone.>"] });
      await jsm.streams.add({ name: "KEPT", subjects: ["kept.>"] });
      await jsm.consumers.add("KEPT", { durable_name: "C", ack_policy: AckPolicy.Explicit });
      await jetstream(h.nc).publish("gone.a", "1");
      await jetstream(h.nc).publish("kept.a", "1");
      const c = await jetstream(h.nc).consumers.get("KEPT", "C");
      const m = await c.next({ expires: 2000 });
      assert.ok(await m!.ackAck());
      await h.srv.close();
      await h.nc.close().catch(() => undefined);
      const streams = join(h.storeDir, "streams");
      unlinkSync(join(streams, "GONE", "meta.json"));
      unlinkSync(join(streams, "KEPT", "obs", "C", "meta.json"));
      // What a crash in the middle of a delete leaves.
      mkdirSync(join(streams, ".removing-OLD", "p0"), { recursive: true });
      await h.restart();
      const jsm2 = await jetstreamManager(h.nc);
      await assert.rejects(jsm2.streams.add({ name: "GONE", subjects: ["other.>"] }), /could not be restored \(its meta\.json is gone/);
      await waitUntil(() => logged(/Could not restore stream GONE .*its meta\.json is gone/), "the stream's loss to be logged");
      await waitUntil(() => logged(/Could not restore consumer C of stream KEPT: its meta\.json is gone/), "the consumer's loss to be logged");
      assert.equal((await jsm2.streams.info("KEPT")).state.messages, 1, "the other stream is served");
      assert.ok(!existsSync(join(streams, ".removing-OLD")), "the interrupted delete was finished");
      const health = await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`);
      assert.equal(health.status, 503, "a stream whose files are not served is not healthy");
      assert.match(((await health.json()) as { error: string }).error, /stream '\$G > GONE' could not be restored from its files: its meta\.json is gone/);
      // A delete goes through the same renaming, and leaves nothing.
      await jsm2.streams.delete("KEPT");
      assert.deepEqual(readdirSync(streams).sort(), ["GONE"]);
    } finally {
      await h.close();
      rmSync(logDir, { recursive: true, force: true });
    }
  });

  for (const [floor, keepDedup, keepMark, next] of [
    ["what its clean close recorded", true, true, 201],
    ["what its end mark recorded (no record of a clean close)", false, true, 201],
    ["what a consumer delivered (no record of a clean close or of its end)", false, false, 151],
  ] as const) {
    test(`a log cut below ${floor} goes on past it: no sequence a client saw is handed out again`, async () => {
      // An outside test cut a segment whose index it had removed: the cut was taken for a torn tail, the last sequence
      // went back, and sequences PubAcks and deliveries had named were handed out again to new messages.
      const h = await startJs();
      try {
        const jsm = await jetstreamManager(h.nc);
        await jsm.streams.add({ name: "CUT", subjects: ["cut.>"] });
        await jsm.consumers.add("CUT", { durable_name: "C", ack_policy: AckPolicy.Explicit });
        for (let i = 1; i <= 200; i++) await jetstream(h.nc).publish("cut.a", `m${i}`);
        await ackFirst(h, "CUT", "C", 150);
        await h.srv.close();
        await h.nc.close().catch(() => undefined);
        const dir = partitionDir(h, "CUT");
        for (const n of readdirSync(dir)) if (n.endsWith(".idx")) unlinkSync(join(dir, n));
        const seg = join(dir, readdirSync(dir).filter((n) => n.endsWith(".seg")).sort().pop()!);
        truncateSync(seg, Math.floor(statSync(seg).size / 3));
        if (!keepDedup) rmSync(join(h.storeDir, "streams", "CUT", "dedup.json"), { force: true });
        if (!keepMark) rmSync(join(dir, "end.mark"), { force: true });
        await h.restart();
        const si = await (await jetstreamManager(h.nc)).streams.info("CUT");
        assert.equal(si.state.last_seq, next - 1, "the stream goes on past it");
        // The cut is reported as lost (stream info, and lost.json across the next restart), not read as never written.
        const lostOf = (state: unknown): number[] => ((state as { lost?: { msgs: number[] } }).lost?.msgs ?? []);
        const kept = si.state.messages;
        assert.deepEqual(lostOf(si.state), Array.from({ length: next - 1 - kept }, (_, i) => kept + 1 + i), "the sequences cut are lost");
        const pub = await jetstream(h.nc).publish("cut.a", "after");
        assert.equal(pub.seq, next, "the next publish is not given a sequence a PubAck or a delivery named");
        const got = await (await jetstream(h.nc).consumers.get("CUT", "C")).next({ expires: 2000 });
        assert.equal(got?.string(), "after");
        await h.restart();
        const again = await (await jetstreamManager(h.nc)).streams.info("CUT");
        assert.deepEqual(lostOf(again.state), lostOf(si.state), "still reported after a restart");
        assert.equal(again.state.last_seq, next);
      } finally {
        await h.close();
      }
    });
  }

  test("a newest segment cut at a batch boundary below what its index claimed reports the cut sequences lost", async () => {
    // An outside test truncated a cleanly closed stream's only segment at a batch boundary: every batch left was whole,
    // so the index was rebuilt from the file and the 100 acknowledged messages after the cut were gone, unreported.
    const h = await startJs();
    try {
      await cutTailAfterRestart(h, "B");
      const si = await (await jetstreamManager(h.nc)).streams.info("B");
      const lost = (si.state as unknown as { lost?: { msgs: number[] } }).lost?.msgs ?? [];
      assert.deepEqual(lost, Array.from({ length: 100 }, (_, i) => 101 + i), "the cut sequences are reported lost");
      assert.equal(si.state.messages, 100);
      // Closed again with nothing published: the next sequence must be in the segment too, not only in lost.json and the
      // clean close's dedup.json (a second test deleted both, and the next publish was given 101 again).
      await h.restart({ whileStopped: () => ["p0/lost.json", "dedup.json"].forEach((f) => unlinkSync(join(h.storeDir, "streams", "B", f))) });
      assert.equal((await jetstream(h.nc).publish("b.x", "after")).seq, 201, "no sequence is handed out again");
    } finally {
      await h.close();
    }
  });

  test("a flipped digit in lost.json is found, not read as a smaller loss", async () => {
    // An outside test flipped one bit of lost.json ("to":300 became "to":200): still JSON, it was read as it was, and 100
    // lost messages left the report with nothing logged. lost.json is now checksummed as the other state files are.
    const logDir = mkdtempSync(join(tmpdir(), "nagare-lost-log-"));
    const logFile = join(logDir, "server.log");
    const h = await startJs({ server: { noLog: false, logFile } });
    try {
      await cutTailAfterRestart(h, "L");
      assert.equal((await lostOf(await jetstreamManager(h.nc), "L"))?.msgs.length, 100, "101..200 are lost");
      const file = join(partitionDir(h, "L"), "lost.json");
      await h.restart({
        whileStopped: () => {
          const text = readFileSync(file, "utf8");
          assert.ok(text.includes('"from":101'), text);
          // One bit: 0x30 ('0') to 0x31 ('1').
          writeFileSync(file, text.replace('"from":101', '"from":111'));
        },
      });
      const lostAfter = (await lostOf(await jetstreamManager(h.nc), "L"))?.msgs ?? [];
      assert.notEqual(lostAfter.length, 90, "the changed range is not taken as it reads");
      assert.match(readFileSync(logFile, "utf8"), /lost\.json is unreadable \(its checksum does not match/, "the damage is logged");
    } finally {
      await h.close();
      rmSync(logDir, { recursive: true, force: true });
    }
  });

  test("damage in one partition of a Kafka topic is reported lost in stream sequences, the ones a JetStream client reads", async () => {
    // An outside test flipped a bit in partition 1 of a three-partition topic: stream info's lost named 41..50 (partition
    // 1's own sequences; stream sequences 41..50 were other, intact records) while stream sequences 131..140 were gone.
    const h = await startKafka();
    try {
      await createTopic(h, "T3", 3);
      const producer = h.kafka().producer();
      await producer.connect();
      for (let b = 0; b < 9; b++) {
        for (let p = 0; p < 3; p++) {
          await producer.send({ topic: "T3", acks: -1, messages: Array.from({ length: 10 }, (_, i) => ({ partition: p, value: `p${p}-${b * 10 + i}` })) });
        }
      }
      await producer.disconnect();
      await h.restart({
        keepKafkaPort: true,
        whileStopped: () => {
          // Each produce request above is one batch kept whole: the fifth of partition 1 holds its sequences 41..50.
          const dir = join(h.storeDir, "streams", "T3", "p1");
          const seg = join(dir, readdirSync(dir).filter((n) => n.endsWith(".seg")).sort()[0]);
          let at = 0;
          for (let k = 0; k < 4; k++) at += readFileSync(seg).readUInt32LE(at) + 8;
          flipByte(seg, at + 60, 0x10);
        },
      });
      const jsm = await jetstreamManager(h.nc);
      const gone: number[] = [];
      for (let seq = 1; seq <= 270; seq++) if ((await jsm.streams.getMessage("T3", { seq }).catch(() => null)) === null) gone.push(seq);
      assert.equal(gone.length, 10, `one batch is gone: ${JSON.stringify(gone)}`);
      assert.deepEqual((await lostOf(jsm, "T3"))?.msgs, gone, "the lost stream sequences are those no get finds");
    } finally {
      await h.close();
    }
  });

  test("a changed dedup.json is not taken: a retry is answered with its own message's sequence", async () => {
    // An outside test changed one entry's sequence in the clean close's de-duplication file (still valid JSON): a retry of
    // that id was answered "duplicate" naming another message's sequence.
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "DD", subjects: ["dd.>"] });
      const js = jetstream(h.nc);
      for (let i = 1; i <= 200; i++) await js.publish("dd.x", `m${i}`, { msgID: `id-${i}` });
      await h.srv.close();
      await h.nc.close().catch(() => undefined);
      const file = join(h.storeDir, "streams", "DD", "dedup.json");
      const text = readFileSync(file, "utf8");
      const changed = text.replace('["id-150",150,', '["id-150",15,');
      assert.notEqual(changed, text);
      writeFileSync(file, changed);
      await h.restart();
      const again = await jetstream(h.nc).publish("dd.x", "m150 again", { msgID: "id-150" });
      assert.deepEqual([again.seq, again.duplicate], [150, true]);
      assert.equal((await jetstream(h.nc).publish("dd.x", "new", { msgID: "id-201" })).seq, 201);
    } finally {
      await h.close();
    }
  });

  test("a batch found damaged on read (the index is intact) is reported lost, and gets answer rather than hang", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "R", subjects: ["r.>"], allow_direct: true });
      const js = jetstream(h.nc);
      for (let i = 1; i <= 20; i++) await js.publish("r.x", `message ${i}`);
      await h.srv.close();
      await h.nc.close().catch(() => undefined);
      const dir = partitionDir(h, "R");
      const seg = join(dir, readdirSync(dir).filter((n) => n.endsWith(".seg")).sort()[0]);
      // Sequential publishes: one batch each. The header's checksum field stays, the payload of message 1 rots.
      flipByte(seg, 52, 0x5a);
      await h.restart();
      const jsm2 = await jetstreamManager(h.nc);
      assert.equal(((await api(h.nc, "$JS.API.STREAM.MSG.GET.R", { seq: 1 })).error as { err_code?: number } | undefined)?.err_code, 10037);
      const direct = await h.nc.request(`$JS.API.DIRECT.GET.R`, JSON.stringify({ seq: 1 }), { timeout: 2000 });
      assert.equal(direct.headers?.code, 404);
      const si = await jsm2.streams.info("R");
      assert.deepEqual((si.state as unknown as { lost?: { msgs: number[] } }).lost?.msgs, [1]);
      assert.equal(si.state.messages, 19);
      assert.equal((await jsm2.streams.getMessage("R", { seq: 2 }))?.seq, 2);
      assert.equal((await jetstream(h.nc).publish("r.x", "after")).seq, 21);
    } finally {
      await h.close();
    }
  });

  test("a disk that fails a sync: publishers get JetStream's error, /healthz says 503, and both recover once the stream reopens from disk", async () => {
    const h = await startJs({ server: { httpPort: 0 } });
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "F", subjects: ["f.>"] });
      const js = jetstream(h.nc);
      assert.equal((await js.publish("f.x", "before")).seq, 1);
      let failing = true;
      const log = h.srv.jetstream!.streams.get("F")!.partitions[0] as unknown as { faults: FaultInjector | null };
      log.faults = { sync: () => (failing ? Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }) : null) };
      const health = async (): Promise<number> => (await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`)).status;
      await assert.rejects(js.publish("f.x", "lost"), (err: Error) => /storage failed \(EIO/.test(err.message));
      assert.equal(await health(), 503);
      const info = await jsm.streams.info("F");
      assert.match((info.state as unknown as { storage_error?: string }).storage_error ?? "", /EIO/);
      await assert.rejects(js.publish("f.x", "refused"), /storage failed/, "sticky: refused without touching the disk");
      failing = false;
      await waitUntil(() => h.srv.jetstream!.streams.get("F")!.log.state().error === null, "the stream reopens from disk", 20_000);
      assert.equal(await health(), 200);
      assert.equal((await js.publish("f.x", "after")).seq, 2, "no sequence was used by the failed publishes");
      assert.equal((await jsm.streams.getMessage("F", { seq: 1 }))?.string(), "before");
    } finally {
      await h.close();
    }
  });
});
