/**
 * Publishes refused for a lost lease (or a leader out of reach) are answered
 * LEASE_REFUSAL_DELAY_MS late, so that a new leader's acknowledgement comes
 * first; only past MAX_DEFERRED_REFUSALS waiting at once are they answered
 * at once.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { startJs } from "./helpers/js.js";
import { LEASE_REFUSAL_DELAY_MS } from "../src/streams/jetstream.js";

test("refusals that fall due while others arrive keep being deferred: only those waiting count against the bound", async () => {
  // Refusals counted against the bound once answered too, until none waited: under a steady stream of them (a failover
  // under load) the array never drained, and once 10,000 had come every later one was answered at once.
  const h = await startJs();
  try {
    const js = h.srv.jetstream!;
    const answeredAt = new Map<string, number>();
    const sub = h.nc.subscribe("r.>", {
      callback: (_err, m) => {
        answeredAt.set(m.subject, performance.now());
      },
    });
    await h.nc.flush();
    const body = Buffer.from('{"error":{"code":503}}');
    const sentAt = new Map<string, number>();
    const refuse = (name: string): void => {
      sentAt.set(name, performance.now());
      js.deferRefusal(name, null, body);
    };
    for (let i = 0; i < 5000; i++) refuse(`r.a.${i}`);
    // A second wave before the first falls due (a pause to place it in time, not to wait for anything).
    await new Promise((r) => setTimeout(r, LEASE_REFUSAL_DELAY_MS / 2));
    for (let i = 0; i < 5000; i++) refuse(`r.b.${i}`);
    // Once the first wave is answered, 5,000 wait: one more is deferred as well.
    const until = async (what: string, cond: () => boolean): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until("the first wave's answers", () => answeredAt.has("r.a.4999"));
    const secondWaveWaits = !answeredAt.has("r.b.0");
    refuse("r.c.late");
    await until("the late refusal's answer", () => answeredAt.has("r.c.late"));
    const waited = answeredAt.get("r.c.late")! - sentAt.get("r.c.late")!;
    // Only meaningful while the second wave still waited when it was sent (a stalled machine may have answered both).
    if (secondWaveWaits) assert.ok(waited >= LEASE_REFUSAL_DELAY_MS - 50, `answered after ${waited.toFixed(0)} ms, not deferred`);
    await until("every answer", () => answeredAt.size === 10_001);
    for (const [name, at] of answeredAt) assert.ok(at - sentAt.get(name)! >= LEASE_REFUSAL_DELAY_MS - 50, `${name} answered early`);
    sub.unsubscribe();
  } finally {
    await h.close();
  }
});
