/**
 * A follower taking over a replicated stream whose consumers it cannot
 * adopt (its disk refuses the consumer's files, say) does not lead without
 * them: it hands the leadership to another live in-sync replica, which
 * leads with the consumers and their confirmed acks. Leading without a
 * consumer would lose it, and never leading would leave the partition
 * without a leader while its node stays live.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { JetStream } from "../src/streams/jetstream.js";
import { jetStreamClusterPerFile, servedAckFloor } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("adoptfail", {}, () => clients.closeAll());

test("a follower that cannot adopt the consumers hands the leadership to another in-sync replica, which leads with them", async () => {
  const [a] = nodes;
  const nc = await clients.open(a.url);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.add({ name: "ADOPT", subjects: ["adopt.>"], num_replicas: 3 });
  const old = nodes.find((n) => n.cluster!.options.serverName === info.cluster?.leader)!;
  const rest = nodes.filter((n) => n !== old);
  await jsm.consumers.add("ADOPT", { durable_name: "C", ack_policy: AckPolicy.Explicit, ack_wait: 60_000_000_000 });
  const js = jetstream(nc);
  for (let i = 1; i <= 3; i++) await js.publish("adopt.x", `m${i}`);
  const got: JsMsg[] = [];
  for await (const m of await (await js.consumers.get("ADOPT", "C")).fetch({ max_messages: 3, expires: 5000 })) got.push(m);
  assert.equal(got.length, 3);
  for (const m of got.slice(0, 2)) assert.equal(await m.ackAck({ timeout: 10_000 }), true, `the ack of ${m.seq} confirmed`);

  // The first of the followers to take the consumers over cannot, for good.
  const proto = JetStream.prototype as unknown as { adoptMovedConsumer: (...args: unknown[]) => Promise<unknown> };
  const adopt = proto.adoptMovedConsumer;
  let refusing: JetStream | undefined;
  proto.adoptMovedConsumer = function (this: JetStream, ...args: unknown[]) {
    refusing ??= this;
    if (this === refusing) return Promise.reject(new Error("ENOSPC: no space left on device (injected)"));
    return adopt.apply(this, args);
  };
  try {
    await nc.close();
    await old.close();
    nodes.splice(nodes.indexOf(old), 1);
    const placed = () => rest[0].cluster!.placements.get("$G", "ADOPT")?.placement;
    const leader = () => rest.find((n) => n.cluster!.options.serverName === placed()?.leaders[0] && n.jetstream !== refusing);
    await waitUntil(() => refusing !== undefined && leader() !== undefined, "a leader other than the follower that could not adopt", 30_000);
    const by = leader()!;
    const jsm2 = await jetstreamManager(await clients.open(by.url));
    assert.equal(await servedAckFloor(jsm2, "ADOPT", "C"), 2, "the ack floor the new leader leads with (-1: no consumer C)");
  } finally {
    proto.adoptMovedConsumer = adopt;
  }
});
