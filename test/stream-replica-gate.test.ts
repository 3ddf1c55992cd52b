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
import { AckPolicy, jetstream, jetstreamManager, type JetStreamApiError } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { ApiError, LeaseLostError } from "../src/streams/errors.js";
import { startJs } from "./helpers/js.js";
import { staysFalse, waitUntil } from "./helpers/clients.js";
import { REFUSE_CONSUMER_COPIES } from "../src/streams/stream.js";
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


test("a node that believes it leads but has lost its lease answers a publish late: the leader elsewhere that stores it answers first; with none the refusal still comes", async () => {
  const h = await startJs();
  try {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "L", subjects: ["l"] });
    const gate = new HeldGate();
    h.srv.jetstream!.streams.get("L")!.setReplicaGate(0, gate);
    // Stands for the stream's new leader on another node: every replica's node captures the stream's subjects.
    const other = await connect({ port: h.srv.port });
    const elsewhere = other.subscribe("l", { callback: (_err, m) => void m.respond(JSON.stringify({ stream: "L", seq: 42 })) });
    await other.flush();
    const js = jetstream(h.nc);
    gate.refuseWith = new LeaseLostError();
    const ack = await js.publish("l", "one", { timeout: 5000 });
    assert.equal(ack.seq, 42, "the other leader's acknowledgement, not a 503 from here");
    assert.equal(gate.refused, 1);
    assert.equal((await jsm.streams.info("L")).state.messages, 0, "not stored here");
    // No leader elsewhere: the refusal comes, late, rather than the client's timeout.
    elsewhere.unsubscribe();
    await other.flush();
    await assert.rejects(js.publish("l", "two", { timeout: 10_000 }), /does not hold its cluster lease/);
    // Any other refusal is answered at once, as before.
    gate.refuseWith = new ApiError(503, 10008, "JetStream system temporarily unavailable: the partition's leadership is moving to another replica");
    await assert.rejects(js.publish("l", "three", { timeout: 5000 }), /leadership is moving/);
    await other.close();
  } finally {
    await h.close();
  }
});

test("a replicated stream's consumers deliver nothing, not even redeliveries, where this node does not lead it, and go on once it leads", async () => {
  const h = await startJs();
  try {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "F", subjects: ["f"] });
    await jsm.consumers.add("F", { durable_name: "push", deliver_subject: "to.push", ack_policy: AckPolicy.Explicit, ack_wait: nanos(1000) });
    const got: string[] = [];
    h.nc.subscribe("to.push", { callback: (_err, m) => void got.push(m.string()) });
    await h.nc.flush();
    const js = jetstream(h.nc);
    await js.publish("f", "one");
    await waitUntil(() => got.length === 1, "the first delivery");
    // A follower's copy (a leader paused past its lease and resumed as one): its pending delivery is acked at the
    // leader, never here, so a redelivery from here would go on for ever.
    const stream = h.srv.jetstream!.streams.get("F")!;
    stream.consumerCopyGate = REFUSE_CONSUMER_COPIES;
    await js.publish("f", "two");
    await staysFalse(() => got.length > 1, 2500, "a delivery from a copy that does not lead");
    // Led here again: the redelivery and the new message go out.
    stream.consumerCopyGate = null;
    await waitUntil(() => got.filter((v) => v === "one").length === 2 && got.includes("two"), "delivery once led here", 10_000);
  } finally {
    await h.close();
  }
});

test("a consumer create or delete a copy cannot have confirmed by its followers is answered 503 10008, as a cluster not available", async () => {
  const h = await startJs();
  try {
    const jsm = await jetstreamManager(h.nc);
    await jsm.streams.add({ name: "G", subjects: ["g"] });
    await jsm.consumers.add("G", { durable_name: "kept", ack_policy: AckPolicy.Explicit });
    // A copy whose leadership ended (or was never taken up): no follower will confirm the change.
    h.srv.jetstream!.streams.get("G")!.consumerCopyGate = REFUSE_CONSUMER_COPIES;
    const refused = (err: JetStreamApiError): boolean => {
      assert.deepEqual(err.apiError(), { code: 503, err_code: 10008, description: "JetStream system temporarily unavailable" });
      return true;
    };
    await assert.rejects(jsm.consumers.add("G", { durable_name: "new", ack_policy: AckPolicy.Explicit }), refused);
    await assert.rejects(jsm.consumers.delete("G", "kept"), refused);
  } finally {
    await h.close();
  }
});
