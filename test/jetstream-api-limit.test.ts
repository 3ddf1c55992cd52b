/**
 * The bound on JetStream API requests served at once (nats-server's
 * `jetstream { request_queue_limit }`): past it a request is dropped
 * unanswered and the drops are announced in the system account; pull
 * requests and direct gets are served beside it; once the requests being
 * served are answered, new ones are served again.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { startServer } from "../src/index.js";
import { stallSyncs } from "./helpers/stall.js";
import { waitUntil } from "./helpers/clients.js";

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
const json = (d: Uint8Array): Record<string, unknown> => JSON.parse(new TextDecoder().decode(d)) as Record<string, unknown>;

test("API requests past request_queue_limit are dropped unanswered and announced; pull requests and direct gets go on", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-api-limit-"));
  const srv = await startServer({
    port: 0,
    jetstream: true,
    storeDir: dir,
    jetstreamRequestQueueLimit: 2,
    accounts: {
      $SYS: { users: [{ user: "sys", password: "sys" }] },
      A: { users: [{ user: "a", password: "a" }], jetstream: true },
    },
  });
  const conns: NatsConnection[] = [];
  // Streams named SLOW* sync on a disk that stops answering from now on.
  const disk = stallSyncs((path) => path.includes(`${sep}SLOW`));
  try {
    const sys = await connect({ servers: srv.url, user: "sys", pass: "sys" });
    const a = await connect({ servers: srv.url, user: "a", pass: "a" });
    conns.push(sys, a);
    const advisories: Array<Record<string, unknown>> = [];
    sys.subscribe("$JS.EVENT.ADVISORY.API.LIMIT_REACHED", { callback: (_err, m) => void advisories.push(json(m.data)) });
    await sys.flush();

    const jsm = await jetstreamManager(a);
    await jsm.streams.add({ name: "FAST", subjects: ["fast"], allow_direct: true });
    await jsm.consumers.add("FAST", { durable_name: "c", ack_policy: "none" });
    await jetstream(a).publish("fast", "m1");

    // Two creates held by the disk: the server serves two requests at once.
    const held = [1, 2].map((i) => a.request(`$JS.API.STREAM.CREATE.SLOW${i}`, enc({ name: `SLOW${i}`, subjects: [`slow.${i}`] }), { timeout: 60_000 }));
    await waitUntil(() => disk.stalled() >= 2, "both creates waiting on the disk");

    await assert.rejects(a.request("$JS.API.STREAM.INFO.FAST", undefined, { timeout: 1000 }), "a third request is dropped unanswered");
    await waitUntil(() => advisories.length > 0, "the advisory in the system account");
    assert.equal(advisories[0].type, "io.nats.jetstream.advisory.v1.api_limit_reached");
    assert.equal(advisories[0].dropped, 1);
    assert.equal(typeof advisories[0].server, "string");

    // Served outside the bound, as nats-server serves them outside its API queue.
    const direct = await a.request("$JS.API.DIRECT.GET.FAST", enc({ seq: 1 }), { timeout: 10_000 });
    assert.equal(new TextDecoder().decode(direct.data), "m1");
    const next = await a.request("$JS.API.CONSUMER.MSG.NEXT.FAST.c", enc({ batch: 1, no_wait: true }), { timeout: 10_000, noMux: true });
    assert.equal(new TextDecoder().decode(next.data), "m1");

    disk.release();
    for (const r of await Promise.all(held)) assert.equal((json(r.data).config as { name: string }).name.startsWith("SLOW"), true, "each held create answered");
    const info = json((await a.request("$JS.API.STREAM.INFO.FAST", undefined, { timeout: 10_000 })).data);
    assert.equal((info.state as { messages: number }).messages, 1, "served again once the held requests were answered");
  } finally {
    disk.release();
    disk.restore();
    for (const c of conns) await c.close();
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
