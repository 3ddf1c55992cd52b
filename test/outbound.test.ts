/**
 * The NATS door's outbound path: a flush hands the connection's buffer to the
 * socket and takes another from a pool shared by every connection, into
 * which written buffers return. A buffer reused while its write is still in
 * progress would corrupt what a client receives, so long runs of messages of
 * varied sizes to two subscribers are checked byte by byte, in order, over
 * plain TCP, over TLS and across a route between two nodes.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { Writable } from "node:stream";
import { connect as connectV2, type NatsConnection as V2 } from "nats";
import { connect as connectV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { Outbound } from "../src/util/outbound.js";
import { makePki, type Pki } from "./helpers/pki.js";
import { waitUntil } from "./helpers/clients.js";

/** About 30 MB to each subscriber: less than the default max_pending (64 MB), so no subscriber is cut off as slow. */
const COUNT = 20_000;

/** Message i: 1 to 3,000 bytes, its index in the first four, then bytes that depend on the index and position. */
function payload(i: number): Uint8Array {
  const size = Math.max(4, ((i * 7919) % 3000) + 1);
  const b = new Uint8Array(size);
  new DataView(b.buffer).setUint32(0, i);
  for (let k = 4; k < size; k++) b[k] = (i * 31 + k) & 0xff;
  return b;
}

function intact(i: number, b: Uint8Array): boolean {
  const want = payload(i);
  if (b.length !== want.length) return false;
  for (let k = 0; k < b.length; k++) if (b[k] !== want[k]) return false;
  return true;
}

/**
 * Publishes COUNT messages to two subscriber connections, at most `window`
 * ahead of the slower one; resolves with what each subscriber saw out of place.
 */
async function roundTrip(url: string, tls: { caFile: string } | undefined, window: number, across?: { subUrl: string; interestKnown(): Promise<void> }): Promise<{ received: number[]; wrong: number[] }> {
  const subs: V2[] = [];
  const received = [0, 0];
  const wrong = [0, 0];
  let wake: (() => void) | null = null;
  let want = 0;
  const check = (): void => {
    if (wake !== null && received[0] >= want && received[1] >= want) {
      const w = wake;
      wake = null;
      w();
    }
  };
  const until = (n: number): Promise<void> =>
    new Promise((resolve, reject) => {
      want = n;
      const timer = setTimeout(() => reject(new Error(`received ${received.join(" and ")} of ${n}`)), 60_000);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
      check();
    });
  for (const s of [0, 1]) {
    const nc = await connectV2({ servers: across?.subUrl ?? url, tls });
    nc.subscribe("out.check", {
      callback: (_err, m) => {
        if (!intact(received[s], m.data)) wrong[s]++;
        received[s]++;
        check();
      },
    });
    await nc.flush();
    subs.push(nc);
  }
  await across?.interestKnown();
  const pub = await connectV3({ servers: url, tls });
  try {
    for (let i = 0; i < COUNT; i++) {
      pub.publish("out.check", payload(i));
      if (i >= window && i % 500 === 0) await until(i - window);
    }
    await until(COUNT);
  } finally {
    await pub.close();
    for (const nc of subs) await nc.close();
  }
  return { received, wrong };
}

describe("outbound buffers reused across flushes and connections", () => {
  let pki: Pki;
  let plain: NagareServer;
  let secure: NagareServer;
  before(async () => {
    pki = makePki();
    plain = await startServer({ port: 0 });
    secure = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
  });
  after(async () => {
    await plain.close();
    await secure.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  // Unwindowed, the subscribers' sockets fill up and writes wait in libuv with their buffers.
  test("plain TCP: every message reaches both subscribers whole and in order", async () => {
    const r = await roundTrip(plain.url, undefined, COUNT);
    assert.deepEqual(r, { received: [COUNT, COUNT], wrong: [0, 0] });
  });

  // Windowed, writes still queue in the TLS socket behind the one in progress.
  test("TLS: every message reaches both subscribers whole and in order", async () => {
    const r = await roundTrip(secure.url, { caFile: pki.ca }, 2_000);
    assert.deepEqual(r, { received: [COUNT, COUNT], wrong: [0, 0] });
  });
});

describe("outbound buffers of a route", () => {
  // The publisher's node frames RMSGs into a pooled buffer handed to the route's socket; the other node reads them across reads of any cut.
  test("publisher on one node, subscribers on another: every message reaches both whole and in order", async () => {
    const a = await startServer({ host: "127.0.0.1", port: -1, cluster: { name: "outbound", host: "127.0.0.1", port: -1 } });
    const b = await startServer({ host: "127.0.0.1", port: -1, cluster: { name: "outbound", host: "127.0.0.1", port: -1, routes: [`nats://127.0.0.1:${a.routes!.port}`] } });
    try {
      await waitUntil(() => a.routes!.routeCount === 1 && b.routes!.routeCount === 1, "the route");
      const interestKnown = (): Promise<void> => waitUntil(() => a.routes!.routez(true).routes.some((r) => (r.subscriptions_list as string[]).includes("$G out.check")), "the subscribers' interest on the publisher's node");
      const r = await roundTrip(a.url, undefined, COUNT, { subUrl: b.url, interestKnown });
      assert.deepEqual(r, { received: [COUNT, COUNT], wrong: [0, 0] });
    } finally {
      await b.close();
      await a.close();
    }
  });
});

describe("the list of buffers being written", () => {
  test("stays short on a connection that always has a write in progress", async () => {
    // Written buffers left the list only when none was in progress: a busy connection that always had one kept every
    // buffer it had ever sent in the list, one entry per large flush, for as long as it lived.
    const pending: Array<() => void> = [];
    const socket = new Writable({
      write(_chunk, _enc, cb) {
        pending.push(() => cb());
      },
      highWaterMark: 1 << 30,
    });
    const out = new Outbound();
    const frame = Buffer.alloc(8 * 1024, 1);
    const listed = (): number => (out as unknown as { sent: { held: number } }).sent.held;
    let longest = 0;
    for (let i = 0; i < 10_000; i++) {
      out.append(frame);
      out.flushTo(socket);
      // The previous write completes once this one is queued behind it: one is always in progress.
      if (i > 0) pending.shift()!();
      await new Promise((r) => setImmediate(r));
      longest = Math.max(longest, listed());
    }
    while (pending.length > 0) {
      pending.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(longest <= 200, `the list reached ${longest} entries`);
    assert.equal(listed(), 0);
    out.release();
  });
});
