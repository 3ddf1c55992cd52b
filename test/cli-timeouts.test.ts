/**
 * The CLI never hangs: pointed at a port that is not NATS (an HTTP server, a
 * socket that accepts and says nothing, one that answers garbage, one that
 * greets like NATS and then goes quiet) or not Kafka, every command exits
 * with status 1 and says what it found, within its --timeout.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { runNagare } from "./helpers/cli.js";
import { startServer, type NagareServer } from "../src/index.js";

/** Generous for a loaded 2-core machine: the point is that the command ends, not how fast Node starts. */
const EXIT_WITHIN_MS = 10_000;

interface Fake {
  port: number;
  close(): Promise<void>;
}

async function listening(server: Server | HttpServer, sockets: Set<Socket>): Promise<Fake> {
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function tcpFake(onSocket: (s: Socket) => void): Promise<Fake> {
  return listening(createServer(onSocket), new Set());
}

let http: Fake;
let silent: Fake;
let garbage: Fake;
let impostor: Fake;
let nats: NagareServer;

before(async () => {
  http = await listening(createHttpServer((_req, res) => res.end("hello")), new Set());
  silent = await tcpFake(() => {});
  garbage = await tcpFake((s) => s.write("220 mail.example.com ESMTP ready\r\n"));
  // Greets as NATS, then never answers the client's PING.
  impostor = await tcpFake((s) => s.write('INFO {"server_id":"fake","version":"2.9.10","proto":1,"max_payload":1048576,"headers":true}\r\n'));
  nats = await startServer({ port: 0 });
});

after(async () => {
  await Promise.all([http.close(), silent.close(), garbage.close(), impostor.close(), nats.close()]);
});

async function fails(args: string[], message: RegExp): Promise<void> {
  const r = await runNagare(args, { limitMs: 30_000 });
  assert.equal(r.code, 1, `nagare ${args.join(" ")}: ${r.stderr}`);
  assert.match(r.stderr, message, `nagare ${args.join(" ")}`);
  assert.ok(r.ms < EXIT_WITHIN_MS, `nagare ${args.join(" ")} took ${r.ms} ms`);
}

/** Runs the checks two at a time: each is mostly waiting. */
async function inPairs(checks: Array<() => Promise<void>>): Promise<void> {
  const queue = [...checks];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) await next();
  };
  await Promise.all([worker(), worker()]);
}

const NATS_COMMANDS = [["pub", "foo", "x"], ["sub", "foo"], ["request", "foo", "x"], ["reply", "foo", "x"], ["stream", "ls"], ["kv", "get", "b", "k"], ["consumer", "next", "S", "c"]];

test("NATS commands against an HTTP server and a silent socket: a timeout that says so", async () => {
  await inPairs(
    [http, silent].flatMap((fake) =>
      NATS_COMMANDS.map((cmd) => () => fails([...cmd, "-s", `nats://127.0.0.1:${fake.port}`, "--timeout", "500ms"], /could not connect to nats:\/\/127\.0\.0\.1:\d+: no NATS greeting within 500 ms: is it a NATS server\?/)),
    ),
  );
});

test("NATS commands against a server that answers something else, or greets and goes quiet", async () => {
  await inPairs(
    [NATS_COMMANDS[0], NATS_COMMANDS[1], NATS_COMMANDS[4]].flatMap((cmd) => [
      () => fails([...cmd, "-s", `127.0.0.1:${garbage.port}`, "--timeout", "500ms"], /it is not a NATS server \(it did not greet with INFO\)/),
      () => fails([...cmd, "-s", `127.0.0.1:${impostor.port}`, "--timeout", "500ms"], /could not connect to 127\.0\.0\.1:\d+: no NATS greeting within 500 ms/),
    ]),
  );
});

test("the default timeout bounds a command too", async () => {
  const r = await runNagare(["pub", "foo", "x", "-s", `nats://127.0.0.1:${silent.port}`], { limitMs: 30_000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no NATS greeting within 5000 ms/);
  assert.ok(r.ms >= 4500 && r.ms < 5000 + EXIT_WITHIN_MS, `took ${r.ms} ms`);
});

test("Kafka commands against an HTTP server, a silent socket and a NATS port", async () => {
  await inPairs(
    [["topic", "ls"], ["group", "ls"], ["topic", "create", "t1"], ["group", "describe", "g"]].flatMap((cmd) => [
      () => fails([...cmd, "-b", `127.0.0.1:${http.port}`, "--timeout", "500ms"], /127\.0\.0\.1:\d+ is not a Kafka listener: it answered "HTTP\/1\.1 400 Bad Request"/),
      () => fails([...cmd, "-b", `127.0.0.1:${silent.port}`, "--timeout", "500ms"], /no answer from 127\.0\.0\.1:\d+ to ApiVersions within 500 ms: is it a Kafka listener\?/),
      () => fails([...cmd, "-b", `127.0.0.1:${nats.port}`, "--timeout", "500ms"], /127\.0\.0\.1:\d+ is not a Kafka listener: it answered "INFO \{/),
    ]),
  );
});

test("a bad --timeout is a usage error, found before connecting", async () => {
  for (const args of [
    ["pub", "foo", "x", "-s", `nats://127.0.0.1:${silent.port}`],
    ["stream", "ls", "-s", `nats://127.0.0.1:${silent.port}`],
    ["topic", "ls", "-b", `127.0.0.1:${silent.port}`],
  ]) {
    const r = await runNagare([...args, "--timeout", "soon"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid --timeout "soon"/);
  }
});
