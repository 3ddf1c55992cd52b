/**
 * A pull request waiting at a replicated stream's leader when the
 * leadership is handed over (STREAM.LEADER.STEPDOWN, a drain) goes on to
 * the new leader, as a move hands them over: a client's fetch or consume()
 * gets what is published afterwards at once, instead of waiting on the
 * old leader, whose consumers deliver no more, until its request expires
 * (30 s for consume() by default).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetStreamClusterPerFile, within } from "./helpers/cluster.js";
import { publishRetrying, v3Clients, waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";

const clients = v3Clients();
const cluster = jetStreamClusterPerFile("sdpulls", {}, () => clients.closeAll());
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

test("a fetch waiting at the leader when it steps down is served by the new leader as soon as messages come, not at its expiry", async () => {
  const nodes = cluster.nodes;
  const leaderOf = (n: NagareServer): string | undefined => n.cluster!.placements.get("$G", "sdp")?.placement.leaders[0];
  const nc = await client(nodes[0]);
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "sdp", subjects: ["sdp.>"], num_replicas: 3 });
  await jsm.consumers.add("sdp", { durable_name: "d", ack_policy: "explicit" as never });
  await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", "sdp")?.placement.isr?.[0].length === 3), "three replicas in sync");
  const before = leaderOf(nodes[0])!;

  // The fetch waits at the leader (through a node that does not lead, as any client's may).
  const via = nodes.find((n) => n.cluster!.options.serverName !== before)!;
  const consumer = await jetstream(await client(via)).consumers.get("sdp", "d");
  const started = performance.now();
  const EXPIRES_MS = 20_000;
  const fetched = (async () => {
    const got: string[] = [];
    for await (const m of await consumer.fetch({ max_messages: 3, expires: EXPIRES_MS })) {
      got.push(m.string());
      m.ack();
      if (got.length === 3) break;
    }
    return got;
  })();
  await waitUntilAsync(async () => (await jsm.consumers.info("sdp", "d")).num_waiting === 1, "the pull request waiting at the leader");

  const r = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.sdp", "", { timeout: 10_000 })).data)) as { success?: boolean };
  assert.equal(r.success, true, JSON.stringify(r));
  await waitUntil(() => nodes.every((n) => leaderOf(n) !== undefined && leaderOf(n) !== before), "every node to see the new leader");

  const js = jetstream(nc, { timeout: 2000 });
  for (let i = 0; i < 3; i++) await publishRetrying(js, "sdp.x", `after${i}`);
  const got = await within(fetched, EXPIRES_MS + 5000, "the fetch");
  assert.deepEqual(got, ["after0", "after1", "after2"], "the waiting fetch got what was published after the step-down");
  assert.ok(performance.now() - started < EXPIRES_MS - 5000, `served at once, not at the request's expiry (${Math.round(performance.now() - started)} ms)`);
});
