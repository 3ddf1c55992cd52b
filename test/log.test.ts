/**
 * The server log: nats-server's line format, debug and protocol trace as
 * nats-server prints them (`-D`, `-V`, `-DV`), a queue that never blocks the
 * event loop and never grows past its limit (losses counted and reported),
 * and nothing lost at shutdown.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, LOG_CLOSE_WAIT_MS, type LogSink } from "../src/util/log.js";
import { startServer } from "../src/server/server.js";
import { RawClient } from "./helpers/raw.js";
import { waitUntil } from "./helpers/clients.js";
import { MAIN } from "./helpers/cli.js";

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

/** The log lines without `[pid] time ` and with the client's port and cid made constant. */
function normalise(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l.includes("[TRC]") || l.includes("[DBG]"))
    .map((l) => l.replace(/^\[\d+\] (\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d\.\d{6} )?/, "").replace(/127\.0\.0\.1:\d+ - cid:\d+ - /, "C - "));
}

test("-DV: debug and protocol trace read as nats-server 2.9.10's for the same session", async () => {
  const dir = tempDir();
  try {
    const logFile = join(dir, "trace.log");
    const srv = await startServer({ port: 0, noLog: false, debug: true, trace: true, logFile });
    try {
      const c = await RawClient.open(srv.port);
      c.send(
        'CONNECT {"verbose":false,"headers":true,"echo":true,"pass":"s3cret"}\r\nSUB foo 1\r\nSUB bar q 2\r\nPUB foo 5\r\nhello\r\n' +
          "PUB foo r.1 5\r\nhello\r\nHPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\nUNSUB 1\r\nPING\r\n",
      );
      await c.waitFor(/PONG\r\n[\s\S]*PONG\r\n/, "two PONGs");
      c.destroy();
      await waitUntil(() => srv.broker.connections.size === 0, "connection gone");
    } finally {
      await srv.close();
    }
    // What nats-server 2.9.10 -DV printed for these bytes (the server's own startup lines aside).
    assert.deepEqual(normalise(readFileSync(logFile, "utf8")), [
      "[DBG] C - Client connection created",
      '[TRC] C - <<- [CONNECT {"verbose":false,"headers":true,"echo":true,"pass":"[REDACTED]"}]',
      "[TRC] C - <<- [SUB foo 1]",
      "[TRC] C - <<- [SUB bar q 2]",
      "[TRC] C - <<- [PUB foo 5]",
      '[TRC] C - <<- MSG_PAYLOAD: ["hello"]',
      "[TRC] C - ->> [MSG foo 1 5]",
      "[TRC] C - <<- [PUB foo r.1 5]",
      '[TRC] C - <<- MSG_PAYLOAD: ["hello"]',
      "[TRC] C - ->> [MSG foo 1 r.1 5]",
      "[TRC] C - <<- [HPUB foo 12 14]",
      '[TRC] C - <<- MSG_PAYLOAD: ["NATS/1.0\\r\\n\\r\\nhi"]',
      "[TRC] C - ->> [HMSG foo 1 12 14]",
      "[TRC] C - <<- [PING]",
      "[TRC] C - ->> [PONG]",
      "[TRC] C - <<- [UNSUB 1]",
      "[TRC] C - <-> [DELSUB 1]",
      "[TRC] C - <<- [PING]",
      "[TRC] C - ->> [PONG]",
      "[DBG] C - Client connection closed: Client Closed",
      "[TRC] C - <-> [DELSUB 2]",
    ]);
    assert.match(readFileSync(logFile, "utf8"), /\[INF\] Server Exiting\.\.\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("-V with verbose clients, errors and max_traced_msg_len; no [DBG] without -D", async () => {
  const dir = tempDir();
  try {
    const logFile = join(dir, "trace.log");
    const srv = await startServer({ port: 0, noLog: false, trace: true, maxTracedMsgLen: 4, logFile });
    try {
      const c = await RawClient.open(srv.port);
      c.send('CONNECT {"verbose":true,"pedantic":true}\r\nSUB foo 1\r\nPUB foo 5\r\nhello\r\nPUB foo.* 1\r\nx\r\nPUB foo 4\r\nabcd\r\nPING\r\n');
      await c.waitFor(/PONG\r\n/, "PONG");
      c.destroy();
      await waitUntil(() => srv.broker.connections.size === 0, "connection gone");
    } finally {
      await srv.close();
    }
    // nats-server prints the -ERR of an invalid subject before that message's payload line; nagare after it.
    assert.deepEqual(normalise(readFileSync(logFile, "utf8")), [
      '[TRC] C - <<- [CONNECT {"verbose":true,"pedantic":true}]',
      "[TRC] C - ->> [OK]",
      "[TRC] C - <<- [SUB foo 1]",
      "[TRC] C - ->> [OK]",
      "[TRC] C - <<- [PUB foo 5]",
      '[TRC] C - <<- MSG_PAYLOAD: ["hell..."]',
      "[TRC] C - ->> [OK]",
      "[TRC] C - ->> [MSG foo 1 5]",
      "[TRC] C - <<- [PUB foo.* 1]",
      '[TRC] C - <<- MSG_PAYLOAD: ["x"]',
      "[TRC] C - ->> [-ERR Invalid Publish Subject]",
      "[TRC] C - <<- [PUB foo 4]",
      '[TRC] C - <<- MSG_PAYLOAD: ["abcd"]',
      "[TRC] C - ->> [OK]",
      "[TRC] C - ->> [MSG foo 1 4]",
      "[TRC] C - <<- [PING]",
      "[TRC] C - ->> [PONG]",
      "[TRC] C - <-> [DELSUB 1]",
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nagare server -V: a stderr nobody reads neither stalls the server nor grows it; losses are reported and the last line is not lost", async () => {
  const dir = tempDir();
  const child = spawn(process.execPath, [MAIN, "-a", "127.0.0.1", "-p", "-1", "-V", "--ports_file_dir", dir], { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  try {
    // Not reading stderr: once its pipe and Node's buffer are full, every write of the server waits.
    await waitUntil(() => readdirSync(dir).some((f) => f.endsWith(".ports")), "ports file", 20_000);
    const ports = JSON.parse(readFileSync(join(dir, readdirSync(dir).find((f) => f.endsWith(".ports"))!), "utf8")) as { nats: string[] };
    const port = Number(new URL(ports.nats[0]).port);
    const n = 20_000; // two trace lines each, ~5 MB of log
    const c = await RawClient.open(port);
    const pub = `PUB some.subject 100\r\n${"p".repeat(100)}\r\n`;
    c.send('CONNECT {"verbose":false}\r\n' + pub.repeat(n) + "PING\r\n");
    await c.waitFor(/PONG\r\n/, "PONG after the flood", 30_000);
    c.destroy();
    // Still serving while its log is stuck.
    const other = await RawClient.connected(port);
    await other.roundTrip();
    other.destroy();

    let err = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => (err += d));
    // Once stderr is read again the report of the losses arrives; then stop.
    await waitUntil(() => /lines? dropped/.test(err), "the dropped-lines report", 20_000);
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    const lines = err.trimEnd().split("\n");
    assert.match(lines[lines.length - 1], /\[INF\] Server Exiting\.\.$/, "the last line survives the exit");
    const dropped = [...err.matchAll(/\[WRN\] logger: (\d+) lines? dropped/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    const traced = lines.filter((l) => l.includes("[TRC]")).length;
    assert.ok(dropped > 0);
    // CONNECT, n × (PUB + MSG_PAYLOAD), PING, PONG, then the second client's CONNECT, PING, PONG: written or counted.
    assert.equal(traced + dropped, 1 + 2 * n + 2 + 3 + 2, `traced ${traced}, dropped ${dropped}`);
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});


test("embedded: a logFile is written to without also passing noLog: false; noLog with a logFile is refused", async () => {
  const dir = tempDir();
  try {
    const logFile = join(dir, "server.log");
    const srv = await startServer({ port: 0, logFile });
    await srv.close();
    assert.match(readFileSync(logFile, "utf8"), /\[INF\] /, "the log file has the server's lines");
    await assert.rejects(startServer({ port: 0, logFile, noLog: true }), /noLog and logFile/);
    await assert.rejects(startServer({ port: 0, logFile: join(dir, "missing", "x.log") }), /cannot open log file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
