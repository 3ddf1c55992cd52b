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
import { startServer } from "../src/index.js";
import type { FaultInjector } from "../src/store/file-log.js";
import { waitUntil } from "./helpers/clients.js";

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
