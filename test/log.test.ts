/**
 * The server log: nats-server's line format, debug and protocol trace as
 * nats-server prints them (`-D`, `-V`, `-DV`), a queue that never blocks the
 * event loop and never grows past its limit (losses counted and reported),
 * and nothing lost at shutdown.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, LOG_CLOSE_WAIT_MS, type LogSink } from "../src/server/log.js";

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-log-"));
}

/** A sink that keeps every batch, and can be held (writes not completing) and released. */
function heldSink() {
  const written: string[] = [];
  let held = false;
  let parked: Array<() => void> = [];
  const sink: LogSink = (data, done) => {
    const finish = (): void => {
      written.push(data.toString("utf8"));
      done(null);
    };
    if (held) parked.push(finish);
    else setImmediate(finish);
  };
  return {
    sink,
    lines: () => written.join("").split("\n").filter((l) => l !== ""),
    hold: () => (held = true),
    release: () => {
      held = false;
      const p = parked;
      parked = [];
      for (const f of p) f();
    },
  };
}

test("lines: nats-server's format, local or UTC time, or none; debug and trace only when asked", async () => {
  const s = heldSink();
  const log = createLogger({ noLog: false, debug: false, trace: false, sink: s.sink });
  log.info("hello");
  log.warn("careful");
  log.error("broken");
  log.debug("not shown");
  log.trace("not shown either");
  assert.equal(log.debugEnabled, false);
  assert.equal(log.traceEnabled, false);
  await log.close();
  const lines = s.lines();
  assert.equal(lines.length, 3, lines.join("\n"));
  assert.match(lines[0], new RegExp(`^\\[${process.pid}\\] \\d{4}/\\d\\d/\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{6} \\[INF\\] hello$`));
  assert.match(lines[1], /\[WRN\] careful$/);
  assert.match(lines[2], /\[ERR\] broken$/);

  const bare = heldSink();
  const noTime = createLogger({ noLog: false, debug: true, trace: true, logtime: false, sink: bare.sink });
  noTime.debug("d");
  noTime.trace("t");
  await noTime.close();
  assert.deepEqual(bare.lines(), [`[${process.pid}] [DBG] d`, `[${process.pid}] [TRC] t`]);

  // Local and UTC stamps of the same moment differ by the zone's offset.
  const zone = process.env.TZ;
  process.env.TZ = "Asia/Tokyo"; // UTC+9, no daylight saving
  try {
    const local = heldSink();
    const utc = heldSink();
    const a = createLogger({ noLog: false, debug: false, trace: false, sink: local.sink });
    const b = createLogger({ noLog: false, debug: false, trace: false, logtimeUtc: true, sink: utc.sink });
    a.info("x");
    b.info("x");
    await Promise.all([a.close(), b.close()]);
    const when = (line: string): number => {
      const m = /\] (\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})/.exec(line)!;
      return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]);
    };
    const offset = when(local.lines()[0]) - when(utc.lines()[0]);
    assert.ok(Math.abs(offset - 9 * 3_600_000) < 1000, `offset ${offset} ms`);
  } finally {
    if (zone === undefined) delete process.env.TZ;
    else process.env.TZ = zone;
  }

  assert.equal(createLogger({ noLog: true, debug: true, trace: true }).traceEnabled, false, "noLog silences trace too");
});

test("a log that cannot keep up: calls return at once, the queue stays bounded, losses are counted and reported where they happened", async () => {
  const s = heldSink();
  const max = 64 * 1024;
  const log = createLogger({ noLog: false, debug: false, trace: true, logtime: false, maxQueued: max, sink: s.sink });
  log.info("first");
  s.hold();
  const payload = "x".repeat(200);
  const n = 5000; // about 1 MB of lines against a 64 KiB queue
  for (let i = 0; i < n; i++) {
    log.trace(`line ${i} ${payload}`);
    assert.ok(log.queued <= max, `queued ${log.queued} > ${max}`);
  }
  const dropped = log.dropped;
  assert.ok(dropped > n / 2, `dropped ${dropped}`);
  s.release();
  await log.flush(); // the queue drains, and the report of the losses follows what was kept
  log.info("after");
  await log.close();
  const lines = s.lines();
  const traced = lines.filter((l) => l.includes("[TRC] line "));
  assert.equal(traced.length + dropped, n, "every line is written or counted");
  // Whatever was written is in order, and the report sits where the gap is: after the last line kept, before "after".
  const numbers = traced.map((l) => Number(/line (\d+)/.exec(l)![1]));
  assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
  assert.deepEqual(numbers, numbers.map((_, i) => i), "the lines kept are the first ones: the rest found the queue full");
  const note = lines.findIndex((l) => l.includes(`[WRN] logger: ${dropped} lines dropped: the log could not keep up`));
  assert.ok(note > 0, lines.slice(-3).join("\n"));
  assert.equal(lines[note - 1], traced[traced.length - 1]);
  assert.match(lines[note + 1], /\[INF\] after$/);
  assert.equal(lines.length, 1 + traced.length + 1 + 1);
});

test("losses at the very end are reported without waiting for another line", async () => {
  const s = heldSink();
  const log = createLogger({ noLog: false, debug: false, trace: false, logtime: false, maxQueued: 100, sink: s.sink });
  s.hold();
  for (let i = 0; i < 10; i++) log.info(`line ${i} of some length`);
  assert.ok(log.dropped > 0);
  const dropped = log.dropped;
  s.release();
  await log.flush();
  const lines = s.lines();
  assert.match(lines[lines.length - 1], new RegExp(`\\[WRN\\] logger: ${dropped} lines? dropped`));
  await log.close();
});

test("close() writes everything queued to the log file; a sink that never finishes delays close by a bounded time", async () => {
  const dir = tempDir();
  try {
    const file = join(dir, "n.log");
    const log = createLogger({ noLog: false, debug: false, trace: false, logFile: file });
    for (let i = 0; i < 2000; i++) log.info(`line ${i}`);
    log.info("Server Exiting..");
    await log.close();
    const lines = readFileSync(file, "utf8").trimEnd().split("\n");
    assert.equal(lines.length, 2001);
    assert.match(lines[2000], /\[INF\] Server Exiting\.\.$/);
    log.info("after close");
    assert.equal(log.dropped, 1, "a line after close is counted, not written");

    assert.throws(() => createLogger({ noLog: false, debug: false, trace: false, logFile: join(dir, "no", "such", "dir.log") }), /cannot open log file .*: ENOENT/);

    const stuck = createLogger({ noLog: false, debug: false, trace: false, sink: () => {} });
    stuck.info("never written");
    const t0 = Date.now();
    await stuck.close();
    const waited = Date.now() - t0;
    assert.ok(waited >= LOG_CLOSE_WAIT_MS - 50 && waited < LOG_CLOSE_WAIT_MS + 3000, `close waited ${waited} ms`);
    assert.equal(stuck.dropped, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
