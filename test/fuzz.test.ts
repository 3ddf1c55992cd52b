/**
 * Throws random and mutated NATS protocol bytes at a live server for a bounded
 * time, then checks that it still serves a normal client and that every fuzz
 * connection's state (connections, subscriptions) was released.
 *
 * Seeded: a failure prints its seed; NAGARE_FUZZ_SEED=<n> replays it.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { connect } from "nats";
import { startServer } from "../src/index.js";
import { dec, enc, waitUntil, clientSubscriptions } from "./helpers/clients.js";
import { rng } from "./helpers/random.js";

const FUZZ_MS = Number(process.env.NAGARE_FUZZ_MS ?? 4000);
const PARALLEL = 16;

const VALID = [
  'CONNECT {"verbose":true,"pedantic":true,"headers":true,"no_responders":true,"protocol":1}\r\n',
  'CONNECT {"verbose":false,"echo":false}\r\n',
  "PING\r\n",
  "PONG\r\n",
  "SUB foo 1\r\n",
  "SUB foo.* q 2\r\n",
  "SUB > 3\r\n",
  "SUB a.b.> 4\r\n",
  "UNSUB 1\r\n",
  "UNSUB 2 5\r\n",
  "PUB foo 5\r\nhello\r\n",
  "PUB foo.bar _INBOX.x 3\r\nabc\r\n",
  "PUB a.b.c 0\r\n\r\n",
  "HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
  "HPUB foo.bar rep 22 25\r\nNATS/1.0\r\nX-A: b\r\n\r\nxyz\r\n",
  "pub foo 1\r\nx\r\n",
];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

function mutate(r: () => number, input: Buffer): Buffer {
  const b = [...input];
  const edits = 1 + Math.floor(r() * 4);
  for (let e = 0; e < edits && b.length > 0; e++) {
    const at = Math.floor(r() * b.length);
    switch (Math.floor(r() * 6)) {
      case 0: // flip a bit
        b[at] ^= 1 << Math.floor(r() * 8);
        break;
      case 1: // random byte
        b[at] = Math.floor(r() * 256);
        break;
      case 2: // delete a run
        b.splice(at, 1 + Math.floor(r() * 8));
        break;
      case 3: // insert interesting bytes
        b.splice(at, 0, ...Buffer.from(pick(r, ["\r\n", " ", "\t", "*", ">", ".", "\0", "-1", "99999999999", "\r", "\n"])));
        break;
      case 4: // duplicate a run
        b.splice(at, 0, ...b.slice(at, at + 1 + Math.floor(r() * 16)));
        break;
      default: // a digit changed, so sizes lie
        b[at] = 0x30 + Math.floor(r() * 10);
    }
  }
  return Buffer.from(b);
}

function fuzzInput(r: () => number): Buffer {
  const kind = r();
  if (kind < 0.15) {
    const n = Math.floor(r() * 512);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
    return b;
  }
  let script = "";
  const cmds = 1 + Math.floor(r() * 12);
  for (let i = 0; i < cmds; i++) script += pick(r, VALID);
  const base = Buffer.from(script);
  return kind < 0.3 ? base : mutate(r, base);
}

/** Sends one input in a few random-sized writes, then hangs up. */
function throwAt(port: number, input: Buffer, r: () => number): Promise<void> {
  return new Promise((resolve) => {
    const s = netConnect(port, "127.0.0.1");
    s.on("error", () => {});
    s.on("close", () => resolve());
    s.on("data", () => {});
    s.once("connect", () => {
      let at = 0;
      while (at < input.length) {
        const n = 1 + Math.floor(r() * Math.max(1, input.length / 3));
        s.write(input.subarray(at, at + n));
        at += n;
      }
      // Half the time hang up at once, half the time after the server has had its say.
      if (r() < 0.5) s.destroy();
      else s.end(() => setTimeout(() => s.destroy(), 20));
    });
  });
}

test("the NATS door survives random and mutated protocol bytes", async () => {
  const seed = Number(process.env.NAGARE_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const r = rng(seed);
  const srv = await startServer({ port: 0, maxPayload: 64 * 1024, authTimeout: 500 });
  let cases = 0;
  try {
    const until = Date.now() + FUZZ_MS;
    while (Date.now() < until) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < PARALLEL; i++) batch.push(throwAt(srv.port, fuzzInput(r), r));
      await Promise.all(batch);
      cases += PARALLEL;
    }
    await waitUntil(() => srv.broker.connections.size === 0, `fuzz connections to be released (seed ${seed})`);
    assert.equal(clientSubscriptions(srv.broker.globalAccount), 0, `subscriptions left behind (seed ${seed})`);

    const nc = await connect({ servers: srv.url });
    try {
      const sub = nc.subscribe("after.fuzz", { max: 1 });
      nc.publish("after.fuzz", enc("fine"));
      for await (const m of sub) assert.equal(dec(m.data), "fine");
      const reply = nc.subscribe("echo.svc", { callback: (_e, m) => m.respond(m.data) });
      const answer = await nc.request("echo.svc", enc("ping"), { timeout: 2000 });
      assert.equal(dec(answer.data), "ping");
      reply.unsubscribe();
    } finally {
      await nc.close();
    }
    assert.ok(cases >= PARALLEL, "at least one batch ran");
  } catch (err) {
    (err as Error).message += ` (fuzz seed ${seed}, ${cases} cases)`;
    throw err;
  } finally {
    await srv.close();
  }
});
