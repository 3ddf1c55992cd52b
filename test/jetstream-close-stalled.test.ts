/**
 * JetStream.close() waited for the stream creates under way without bound:
 * one stalled on the disk held the server's stop for good. And a create
 * that ended after the close served a stream nobody would close: its files
 * stayed open and its subjects bound. Now the close waits a bounded time,
 * and a create that ends after it closes what it opened and fails.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { startServer } from "../src/index.js";
import { nodeFs, type StoreFile } from "../src/util/fs.js";
import { ORDER_FILE } from "../src/streams/stream-order.js";
import { waitUntil } from "./helpers/clients.js";

test("a close does not wait for good on a stream create stalled on the disk, and the create, once the disk answers, closes what it opened and fails", { timeout: 60_000 }, async () => {
  const storeDir = mkdtempSync(join(tmpdir(), "nagare-close-stalled-"));
  const srv = await startServer({ port: 0, jetstream: true, storeDir });
  const js = srv.jetstream!;
  js.options.closeWaitMs = 200;
  const open = nodeFs.open;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  // Every file the create opens, and whether it was closed.
  const files = new Map<StoreFile, string>();
  const closed = new Set<StoreFile>();
  let stalled = false;
  nodeFs.open = async (path, mode) => {
    if (!path.includes(`${sep}STALLED${sep}`)) return open.call(nodeFs, path, mode);
    // The disk stops answering once the partitions are open: at the creation of the stream's order file.
    if (path.endsWith(`${sep}${ORDER_FILE}`) && mode === "create") {
      stalled = true;
      await gate;
    }
    const file = await open.call(nodeFs, path, mode);
    files.set(file, path);
    const close = file.close.bind(file);
    file.close = () => (closed.add(file), close());
    return file;
  };
  let closing: Promise<void> | null = null;
  try {
    const creating = js.createStream({ name: "STALLED", subjects: ["stalled.>"], storage: "file" }, 2);
    const failed = creating.then(
      () => null,
      (err: Error) => err,
    );
    await waitUntil(() => stalled, "the create stalled");
    assert.ok(files.size > 0, "the create opened its partitions' files");

    // Before: the close waited for the create, for as long as the disk stalled.
    closing = srv.close();
    let done = false;
    void closing.then(() => (done = true));
    await waitUntil(() => done, "the server closed while the create stalled", 15_000);

    release();
    const err = await failed;
    assert.ok(err !== null, "the create ended after the close fails");
    assert.match(err.message, /JetStream is shutting down: stream STALLED was not changed/);
    const left = [...files].filter(([f]) => !closed.has(f)).map(([, p]) => p);
    assert.deepEqual(left, [], "every file the create opened is closed");
    assert.equal(js.streams.has("STALLED"), false, "not served");
  } finally {
    nodeFs.open = open;
    release();
    await (closing ?? srv.close());
    rmSync(storeDir, { recursive: true, force: true });
  }
});
