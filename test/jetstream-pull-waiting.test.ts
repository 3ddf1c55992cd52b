/**
 * Waiting pull requests whose client went away: nats-server lets go of every
 * one whose reply subject lost its interest, not only one at the head of the
 * queue, so they neither hold max_waiting slots nor keep an ephemeral
 * consumer alive.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import { rawPull, startJs, type JsHarness } from "./helpers/js.js";
import { waitUntilAsync } from "./helpers/clients.js";

const MS = 1_000_000;

describe("waiting pull requests of clients gone", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;

  before(async () => {
    h = await startJs();
    jsm = await jetstreamManager(h.nc);
  });
  after(async () => h.close());

  /** Leaves a pull request without expiry waiting on `stream`/`consumer` from a client that then disconnects. */
  async function abandonedPull(stream: string, consumer: string): Promise<void> {
    const gone = await connect({ servers: h.srv.url });
    gone.subscribe("gone.inbox");
    gone.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, JSON.stringify({ batch: 1 }), { reply: "gone.inbox" });
    await gone.flush();
    await gone.close();
  }

  test("a gone request behind a live one frees its max_waiting slot and leaves num_waiting", async () => {
    await jsm.streams.add({ name: "PW1", subjects: ["pw1.>"] });
    await jsm.consumers.add("PW1", { durable_name: "C", ack_policy: AckPolicy.Explicit, max_waiting: 2 });
    // A live request without expiry at the head, then one whose client leaves.
    const live = rawPull(h.nc, "PW1", "C", JSON.stringify({ batch: 1 }), 3000);
    await waitUntilAsync(async () => (await jsm.consumers.info("PW1", "C")).num_waiting === 1, "the live request waiting");
    await abandonedPull("PW1", "C");
    await waitUntilAsync(async () => (await jsm.consumers.info("PW1", "C")).num_waiting === 1, "the gone request no longer counted", 5000);

    // A third request fits: the slot of the gone one is free.
    const third = rawPull(h.nc, "PW1", "C", JSON.stringify({ batch: 1, expires: 5000 * MS }), 3000);
    await waitUntilAsync(async () => (await jsm.consumers.info("PW1", "C")).num_waiting === 2, "the third request waiting");
    const js = jetstream(h.nc);
    await js.publish("pw1.x", "one");
    await js.publish("pw1.x", "two");
    const [a, b] = await Promise.all([live, third]);
    assert.deepEqual(a.map((m) => m.subject), ["pw1.x"]);
    assert.deepEqual(b.map((m) => m.status?.code ?? m.subject), ["pw1.x"], "the third request gets the second message, not 409 Exceeded MaxWaiting");
  });

  test("an ephemeral consumer whose only waiting request's client is gone goes after its inactive threshold", async () => {
    await jsm.streams.add({ name: "PW2", subjects: ["pw2.>"] });
    const ci = await jsm.consumers.add("PW2", { ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, inactive_threshold: 500 * MS });
    await abandonedPull("PW2", ci.name);
    await waitUntilAsync(
      () => jsm.consumers.info("PW2", ci.name).then(() => false, () => true),
      "the ephemeral consumer deleted",
      6000,
    );
  });
});
