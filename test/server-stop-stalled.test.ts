/**
 * A server's stop closes its streams' logs, and a log's close waits for its
 * writes and syncs under way: a disk that stopped answering a sync held the
 * stop (srv.close(), SIGTERM of `nagare server`) for good. The stop now
 * waits for the store a bounded time, names what did not close, and goes on;
 * what was acknowledged is on disk (acks follow the sync), and a restart on
 * the same store, once the old files are let go, reads every message.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import kafkajs from "kafkajs";
import { startServer } from "../src/index.js";
import type { FaultInjector } from "../src/store/file-log.js";
import { stallSyncs, type StalledSyncs } from "./helpers/stall.js";
import type { Reader } from "../src/protocols/kafka/codec.js";
import { waitUntil } from "./helpers/clients.js";
import { frame, RawKafka, REQUEST_MS } from "./helpers/kafka-raw.js";
import { call } from "./helpers/kafka-group-requests.js";

test("a stop with a log's sync stalled returns within its bound, names the log, and a restart reads every acknowledged message", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-stop-stalled-"));
  const storeDir = join(dir, "store");
  const logFile = join(dir, "server.log");
  const srv = await startServer({ port: 0, jetstream: true, storeDir, logFile });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let closing: Promise<void> | null = null;
  try {
    srv.jetstreams!.options.stopWaitMs = 300;
    const nc = await connect({ servers: srv.url });
    const acked: string[] = [];
    try {
      await (await jetstreamManager(nc)).streams.add({ name: "STALLED", subjects: ["stalled.>"] });
      const js = jetstream(nc);
      for (let i = 0; i < 20; i++) {
        await js.publish("stalled.x", `m${i}`);
        acked.push(`m${i}`);
      }
      // The disk stops answering the log's syncs: the next publish is written and never acknowledged.
      let stalled = 0;
      (srv.jetstream!.streams.get("STALLED")!.partitions[0] as unknown as { faults: FaultInjector | null }).faults = {
        sync: () => (stalled++, gate),
      };
      void js.publish("stalled.x", "never-acked").catch(() => undefined);
      await waitUntil(() => stalled > 0, "the log's sync stalled");

      // Before: the stop waited for the sync, for as long as the disk stalled.
      closing = srv.close();
      let done = false;
      void closing.then(() => (done = true));
      await waitUntil(() => done, "the server stopped while the sync stalled", 15_000);
    } finally {
      await nc.close().catch(() => undefined);
    }
    const log = readFileSync(logFile, "utf8");
    assert.match(log, /store not closed within 300 ms .*stream STALLED \(its log\)/, "the stop names the log it did not close");
    assert.ok(existsSync(join(storeDir, "nagare.lock")), "the store stays locked while the old log's sync is under way");

    // The disk answers: the old log closes, and lets the store go.
    release();
    await waitUntil(() => !existsSync(join(storeDir, "nagare.lock")), "the store let go once the old log closed", 15_000);
    const again = await startServer({ port: 0, jetstream: true, storeDir });
    try {
      const nc2 = await connect({ servers: again.url });
      try {
        const jsm = await jetstreamManager(nc2);
        for (let i = 0; i < acked.length; i++) {
          const m = await jsm.streams.getMessage("STALLED", { seq: i + 1 });
          assert.equal(m?.string(), acked[i], `acknowledged message ${i + 1}`);
        }
      } finally {
        await nc2.close();
      }
    } finally {
      await again.close();
    }
  } finally {
    release();
    await (closing ?? srv.close());
    rmSync(dir, { recursive: true, force: true });
  }
});

/** OffsetCommit v2 of a simple consumer: `offset` of partition 0 of `topic`; its one error. */
async function commit(k: RawKafka, group: string, topic: string, offset: number): Promise<number> {
  const r = await call(k, 8, 2, (w) => w.string(group).i32(-1).string("").i64(-1).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(offset).nullableString(null), REQUEST_MS);
  return r.array((r) => (r.string(), r.array((r) => (r.i32(), r.i16()))))[0][0];
}

/** OffsetFetch v1 of partition 0 of `topic`: the committed offset. */
async function fetched(k: RawKafka, group: string, topic: string): Promise<number> {
  const r: Reader = await call(k, 9, 1, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(0), REQUEST_MS);
  r.i32();
  r.string();
  r.i32();
  r.i32();
  return Number(r.i64());
}

test("a stop with a Kafka group's file write stalled returns within its bound and says so; the commit acknowledged before is read after a restart", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-stop-stalled-kafka-"));
  const storeDir = join(dir, "store");
  const logFile = join(dir, "server.log");
  const options = { port: 0, jetstream: true, storeDir, logFile, kafka: { port: 0, initialRebalanceDelayMs: 200 } };
  const srv = await startServer(options);
  const topic = "stop-stalled";
  const group = "g-stop-stalled";
  let disk: StalledSyncs | null = null;
  let closing: Promise<void> | null = null;
  try {
    srv.jetstreams!.options.stopWaitMs = 300;
    srv.kafka!.options.offsetsCommitTimeoutMs = 200;
    const admin = new kafkajs.Kafka({ brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: kafkajs.logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
    const k = await RawKafka.open(srv.kafkaPort!, REQUEST_MS);
    try {
      assert.equal(await commit(k, group, topic, 5), 0, "committed while the disk answers");
      // The disk stops answering the sync of the group's file: the next commit is never stored (answered REQUEST_TIMED_OUT).
      disk = stallSyncs((path) => path.endsWith(`${group}.json.tmp`));
      assert.equal(await commit(k, group, topic, 9), 7, "REQUEST_TIMED_OUT");
      assert.equal(disk.stalled(), 1);

      // Before: the stop waited for the group's file write (GroupCoordinator.close), for as long as the disk stalled.
      closing = srv.close();
      let done = false;
      void closing.then(() => (done = true));
      await waitUntil(() => done, "the server stopped while the write stalled", 15_000);
    } finally {
      k.destroy();
    }
    assert.match(readFileSync(logFile, "utf8"), /store not closed within 300 ms .*stopping without: the Kafka groups' and transactions' state, stream /);

    disk!.restore();
    disk!.release();
    await waitUntil(() => !existsSync(join(storeDir, "nagare.lock")), "the store let go once the write ended", 15_000);
    const again = await startServer({ ...options, logFile: undefined });
    try {
      const k2 = await RawKafka.open(again.kafkaPort!, REQUEST_MS);
      try {
        // The acknowledged commit, or the one timed out, which may land as in Kafka.
        assert.ok([5, 9].includes(await fetched(k2, group, topic)), "the acknowledged commit is kept");
      } finally {
        k2.destroy();
      }
    } finally {
      await again.close();
    }
  } finally {
    disk?.restore();
    disk?.release();
    await (closing ?? srv.close());
    rmSync(dir, { recursive: true, force: true });
  }
});
