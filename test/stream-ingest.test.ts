/**
 * A stream's write backlog is bounded: a publisher that outruns the disk is
 * paused (core NATS publishes) once the backlog passes the soft mark, and
 * publishes are refused at the hard mark, so the server's memory does not
 * grow with what a publisher sends. The disk is made slow by holding its
 * fdatasyncs (FileLog's fault seam).
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { FaultInjector } from "../src/store/file-log.js";
import { INGEST_MAX, INGEST_SOFT, type Stream } from "../src/streams/stream.js";
import { apiErrorCode, startJs, type JsHarness } from "./helpers/js.js";
import { runOf } from "../src/store/log.js";
import { RawClient } from "./helpers/raw.js";

/** Holds every fdatasync of the stream's partition until `release()`. */
function holdSyncs(stream: Stream): { release: () => void } {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  (stream.partitions[0] as unknown as { faults: FaultInjector | null }).faults = { sync: () => held };
  return { release };
}

async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function stream(h: JsHarness, name: string, subject: string): Promise<Stream> {
  await (await jetstreamManager(h.nc)).streams.add({ name, subjects: [subject] });
  return h.srv.jetstream!.streams.get(name)!;
}

describe("stream ingest backlog", () => {
  test("at the hard mark publishes are refused with an error; what was accepted is stored once the disk catches up", async () => {
    const h = await startJs();
    try {
      const s = await stream(h, "HARD", "hard.>");
      const disk = holdSyncs(s);
      const payload = Buffer.alloc(1024, 7);
      let acked = 0;
      let refused = 0;
      let other = 0;
      const total = Math.ceil(INGEST_MAX.bytes / payload.length) + 5000;
      for (let i = 0; i < total; i++) {
        s.publish("hard.x", null, payload, (err) => {
          if (err === null) acked++;
          else if (/too busy/.test(err.message) && err.errCode === 10077) refused++;
          else other++;
        });
      }
      assert.ok(refused >= 5000, `the publishes past the mark are refused at once (${refused})`);
      assert.equal(s.ingestRefused, refused);
      const accepted = total - refused;
      assert.ok(s.partitions[0].backlogBytes <= INGEST_MAX.bytes + 64 * 1024, "the backlog stopped at the mark");
      disk.release();
      await until(() => acked === accepted, "every accepted publish is acknowledged");
      assert.equal(other, 0);
      assert.equal(s.log.state().messages, accepted);
      // With the disk back, publishes are taken again.
      const ok = await new Promise<number>((resolve, reject) => s.publish("hard.x", null, payload, (err, seq) => (err ? reject(err) : resolve(seq))));
      assert.equal(ok, accepted + 1);
    } finally {
      await h.close();
    }
  });

  test("past the soft mark a core publisher that never reads its acks is paused, so the backlog stays near the mark", async () => {
    const h = await startJs();
    let raw: RawClient | undefined;
    try {
      const s = await stream(h, "SOFT", "soft.>");
      const disk = holdSyncs(s);
      // The acks go to a subscriber of their own: the publisher never reads anything.
      const acks = await connect({ servers: h.srv.url });
      let ok = 0;
      let errors = 0;
      const sub = acks.subscribe("acks.>", {
        callback: (_e, m) => {
          if (m.string().includes('"error"')) errors++;
          else ok++;
        },
      });
      await acks.flush();
      raw = await RawClient.connected(h.srv.port);
      const payload = "x".repeat(1000);
      const count = 30_000; // ~30 MB, well past the 8 MiB soft mark
      const frame = `PUB soft.x acks.1 ${payload.length}\r\n${payload}\r\n`;
      for (let i = 0; i < count; i += 1000) raw.send(frame.repeat(Math.min(1000, count - i)));
      await until(() => s.ingestBusy(), "the backlog passes the soft mark");
      // Held for a second, the publisher gets a read every 100 ms at most: the backlog barely moves past the mark.
      const start = Date.now();
      let peak = 0;
      while (Date.now() - start < 1000) {
        peak = Math.max(peak, s.partitions[0].backlogBytes);
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(peak < INGEST_SOFT.bytes + 4 * 1024 * 1024, `backlog peaked at ${peak} bytes`);
      assert.equal(s.ingestRefused, 0, "paused, not refused");
      disk.release();
      await until(() => ok === count, `all ${count} publishes are acknowledged (${ok} so far)`, 60_000);
      assert.equal(errors, 0);
      assert.equal(s.log.state().messages, count);
      sub.unsubscribe();
      await acks.close();
    } finally {
      raw?.destroy();
      await h.close();
    }
  });
});

describe("one ordering point per stream", () => {
  test("a publish that expects the last sequence waits for a door's append in flight, and sees it", async () => {
    const h = await startJs();
    try {
      const s = await stream(h, "ORD", "ord.>");
      const disk = holdSyncs(s);
      // A Kafka-style append (the door picks the partition, no publish semantics), held at the disk.
      const kafka = new Promise<number>((resolve, reject) =>
        s.appendMany(0, runOf([{ subject: "ord.k", data: Buffer.from("from kafka") }]), (err, first) => (err ? reject(err) : resolve(first))),
      );
      const js = jetstream(h.nc);
      const expecting = js.publish("ord.x", "expects nothing before it", { expect: { lastSequence: 0 } });
      // Behind the waiting publish, another door append keeps its place in line.
      const after = new Promise<number>((resolve, reject) =>
        s.appendMany(0, runOf([{ subject: "ord.k", data: Buffer.from("after") }]), (err, first) => (err ? reject(err) : resolve(first))),
      );
      disk.release();
      assert.equal(await kafka, 1);
      assert.equal(await apiErrorCode(expecting), 10071, "wrong last sequence: the produce landed first");
      assert.equal(await after, 2);
      assert.equal((await js.publish("ord.x", "now", { expect: { lastSequence: 2 } })).seq, 3);
    } finally {
      await h.close();
    }
  });
});
