/**
 * The monitor port took any number of connections, and one that never sent
 * a request was closed only after Node's 60 s headers timeout (looked at
 * every 30 s): a flood of idle sockets held descriptors and memory without
 * bound. Now the port takes MONITOR_LIMITS.maxConnections at once and
 * closes a connection without its request after 5 s, as nats-server's
 * ReadHeaderTimeout; the port serves again once the flood is gone.
 */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { startServer, type NagareServer } from "../src/index.js";
import { MONITOR_LIMITS } from "../src/monitor/http.js";
import { waitUntil } from "./helpers/clients.js";

let srv: NagareServer;
before(async () => (srv = await startServer({ port: 0, httpPort: 0 })));
after(() => srv.close());

interface Idle {
  socket: Socket;
  /** What the server wrote before closing it. */
  got: string;
  closed: boolean;
}

/** A connection to the monitor port that sends nothing, once connected. */
function idle(port: number): Promise<Idle> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    const c: Idle = { socket: s, got: "", closed: false };
    s.setEncoding("latin1");
    s.on("data", (d: string) => (c.got += d));
    s.on("close", () => (c.closed = true));
    s.once("error", (err) => (c.closed ? undefined : reject(err)));
    s.once("connect", () => {
      s.on("error", () => {});
      resolve(c);
    });
  });
}

test("the monitor holds a bounded number of connections, closes those that send no request, and serves again once they are gone", { timeout: 60_000 }, async () => {
  const port = srv.httpPort!;
  const flood: Idle[] = [];
  try {
    for (let i = 0; i < MONITOR_LIMITS.maxConnections; i++) flood.push(await idle(port));
    const past = await idle(port);
    flood.push(past);
    // Before: held like the others, for a minute or more.
    await waitUntil(() => past.closed, "the connection past the limit closed", 10_000);
    assert.equal(past.got, "", "closed at once, not as a request that timed out");

    // Those within the limit are closed once the headers timeout passes (before: 60 s, looked at every 30 s).
    const started = Date.now();
    await waitUntil(() => flood.every((c) => c.closed), "the idle connections closed by the headers timeout", 20_000);
    assert.ok(Date.now() - started < 15_000, `closed ${Date.now() - started} ms after the flood`);
    assert.ok(flood.slice(0, -1).every((c) => c.got.startsWith("HTTP/1.1 408")), "each told its request timed out");

    const res = await fetch(`http://127.0.0.1:${port}/varz`);
    assert.equal(res.status, 200, "the port serves again");
    assert.equal(((await res.json()) as { port: number }).port, srv.port);
  } finally {
    for (const c of flood) c.socket.destroy();
  }
});
