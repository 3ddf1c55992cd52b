/**
 * A stream under a replica gate (stream.ts `setReplicaGate`, driven by
 * stream-replicas.ts) with a fake gate the test controls: a publish retried
 * with its `Nats-Msg-Id` while the first attempt is stored here but not on
 * its replicas is acknowledged only once, and only if, the first would be.
 * The seeded fault schedule over replicated streams found the bug this pins
 * (`fault-replicated.test.ts`): a leader cut off from its followers stored
 * a write, lost its lease, and answered the client's retry from its
 * de-duplication window as a duplicate at a sequence the new leader never
 * had: an acknowledged write lost.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { ApiError } from "../src/streams/errors.js";
import { startJs } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";
import { HeldGate } from "./helpers/held-gate.js";

const lost = new ApiError(503, 10008, "JetStream system temporarily unavailable: leadership ended");

test("a retried publish is not acknowledged from the de-duplication window before its first attempt is replicated", async () => {
  const h = await startJs();
  try {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "G", subjects: ["g"] });
    const gate = new HeldGate();
    h.srv.jetstream!.streams.get("G")!.setReplicaGate(0, gate);
    const js = jetstream(h.nc);

    // The first attempt is stored and waits for its replicas: no answer.
    await assert.rejects(js.publish("g", "one", { msgID: "one", timeout: 500 }));
    assert.equal(gate.waiting.length, 1);
    // The retry waits for the same replication instead of being acknowledged as a duplicate now.
    const retry = js.publish("g", "one", { msgID: "one", timeout: 5000 });
    let settled = false;
    void retry.then(() => (settled = true), () => (settled = true));
    await waitUntil(() => gate.waiting.length === 2 || settled, "the retry at the stream");
    assert.equal(settled, false, "the retry was answered before the first attempt was replicated");
    // Replication fails (the leadership ends): the retry is refused, not acknowledged.
    gate.finish(lost);
    await assert.rejects(retry, /temporarily unavailable|503/);

    // Once the write is on every replica, a retry is a duplicate at its sequence, as before.
    const third = js.publish("g", "one", { msgID: "one", timeout: 5000 });
    await waitUntil(() => gate.waiting.length === 1, "the third attempt at the stream");
    gate.finish(null);
    const ack = await third;
    assert.equal(ack.seq, 1);
    assert.equal(ack.duplicate, true);
  } finally {
    await h.close();
  }
});

