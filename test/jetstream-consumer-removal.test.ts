/**
 * A consumer deleted for inactivity whose directory cannot be removed (a
 * read-only or failing disk) was out of its stream, but its files stayed,
 * for good: at the next start the consumer came back. The removal is now
 * tried again with back-off, its failures logged once per window, until it
 * succeeds.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import { join } from "node:path";
import { nanos } from "@nats-io/transport-node";
import { startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";
import { nodeFs } from "../src/util/fs.js";

let h: JsHarness;
before(async () => (h = await startJs()));
after(() => h.close());

test("an inactive consumer whose directory cannot be removed is removed once the disk allows, and does not come back at the next start", async () => {
  const jsm = await jetstreamManager(h.nc);
  await jsm.streams.add({ name: "RMFAIL", subjects: ["rmfail.>"] });
  // Ephemeral, nobody pulling: gone after its inactive threshold.
  const { name } = await jsm.consumers.add("RMFAIL", { ack_policy: AckPolicy.Explicit, inactive_threshold: nanos(300) });
  const stream = h.srv.jetstream!.streams.get("RMFAIL")!;
  const dir = stream.consumers.get(name)!.dir!;
  assert.ok(existsSync(dir), "the ephemeral consumer is kept on disk");

  const log = h.srv.jetstream!.options.log;
  const warn = log.warn;
  const lines: string[] = [];
  log.warn = (line: string) => {
    lines.push(line);
    warn.call(log, line);
  };
  // Its directory cannot be renamed away, as on a read-only disk (as root, file modes do not stop a rename).
  const rename = nodeFs.rename;
  let refused = 0;
  nodeFs.rename = async (from, to) => {
    if (from === dir) {
      refused++;
      throw Object.assign(new Error(`EROFS: read-only file system, rename '${from}'`), { code: "EROFS" });
    }
    return rename.call(nodeFs, from, to);
  };
  try {
    await waitUntil(() => !stream.consumers.has(name), "the inactive consumer deleted", 15_000);
    // Before: one try, and the directory stayed.
    await waitUntil(() => refused >= 3, "its removal tried again", 15_000);
    assert.ok(existsSync(dir), "the directory is still there while the disk refuses");
    const told = lines.filter((l) => l.includes(name) || l.includes("deleted consumer"));
    assert.equal(told.length, 1, `one line for ${refused} failed removals: ${JSON.stringify(told)}`);
  } finally {
    nodeFs.rename = rename;
  }
  await waitUntil(() => lines.some((l) => l.includes("The files of 1 deleted consumer(s) are removed now")), "the directory removed once the disk allows", 15_000);
  assert.ok(!existsSync(dir), "the directory is gone");
  log.warn = warn;

  await h.restart();
  const after = await jetstreamManager(h.nc);
  assert.deepEqual((await after.consumers.list("RMFAIL").next()).map((c) => c.name), [], "no consumer came back at the start");
});

test("a consumer whose state cannot be saved says so, once a window, and says when it is saved again", async () => {
  const jsm = await jetstreamManager(h.nc);
  await jsm.streams.add({ name: "STATEFAIL", subjects: ["statefail.>"] });
  await jsm.consumers.add("STATEFAIL", { durable_name: "D", ack_policy: AckPolicy.Explicit });
  const consumer = h.srv.jetstream!.streams.get("STATEFAIL")!.consumers.get("D")!;
  const statePath = join(consumer.dir!, "state.json");
  const log = h.srv.jetstream!.options.log;
  const [error, warn] = [log.error, log.warn];
  const lines: string[] = [];
  log.error = (line: string) => (lines.push(line), error.call(log, line));
  log.warn = (line: string) => (lines.push(line), warn.call(log, line));
  // The disk refuses the state file's replacement (before: retried each second without a word, acks unsaved).
  const rename = nodeFs.rename;
  let refused = 0;
  nodeFs.rename = async (from, to) => {
    if (to === statePath) {
      refused++;
      throw Object.assign(new Error("ENOSPC: no space left on device (injected)"), { code: "ENOSPC" });
    }
    return rename.call(nodeFs, from, to);
  };
  try {
    const js = jetstream(h.nc);
    await js.publish("statefail.a", "x");
    const c = await js.consumers.get("STATEFAIL", "D");
    const m = await c.next({ expires: 5000 });
    assert.ok(m !== null);
    m.ack();
    await waitUntil(() => refused >= 3, "the state write tried again", 15_000);
    const told = lines.filter((l) => l.includes("Consumer D of stream STATEFAIL"));
    assert.equal(told.length, 1, `one line for ${refused} failed writes: ${JSON.stringify(told)}`);
    assert.match(told[0], /could not be saved \(ENOSPC/);
  } finally {
    nodeFs.rename = rename;
  }
  await waitUntil(() => lines.some((l) => /Consumer D of stream STATEFAIL: its state is saved again/.test(l)), "the state saved once the disk allows", 15_000);
  [log.error, log.warn] = [error, warn];
});
