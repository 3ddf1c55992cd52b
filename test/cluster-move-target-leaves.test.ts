/**
 * A stream move whose target leaves the cluster before it has copied the
 * stream (shut down mid-copy, or its lease gone) is cancelled by the
 * leader: the placement is as before, the stream keeps taking writes, and
 * another move of it can be asked for at once rather than being refused
 * "stream move already in progress" until the departed node returns. The
 * target, back, neither serves its partial copy nor finishes the old move.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile, startJetStreamNode } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { moveOf } from "../src/streams/cluster-streams.js";

const clients = v3Clients();
const cluster = jetStreamClusterPerFile("moveleaves", {}, () => clients.closeAll());
const nodes = cluster.nodes;
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

type Request = (node: string, subject: string, body: Uint8Array, ms: number) => Promise<Buffer | null>;
const clusterApiOf = (n: NagareServer): { request: Request } =>
  (n.jetstreams as unknown as { served: Map<string, { api: { clusterApi: { request: Request } } }> }).served.get("$G")!.api.clusterApi;

test("a move whose target shuts down mid-copy is cancelled by the leader: writes go on, another move is taken, the target back serves nothing of it", async () => {
  const [a, b, c] = nodes;
  const placement = (n: NagareServer) => n.cluster!.placements.get("$G", "leaving")?.placement;
  const jsm = await jetstreamManager(await client(a));
  const js = jetstream(await client(a));
  await jsm.streams.add({ name: "leaving", subjects: ["leaving.>"], placement: { cluster: "", tags: ["node:a"] } });
  for (let i = 0; i < 20; i++) await js.publish(`leaving.${i}`, `v${i}`);

  // c's copy requests stay unanswered until c is gone: it is mid-copy when it shuts down.
  const api = clusterApiOf(c);
  let copying = false;
  let release: () => void = () => {};
  const released = new Promise<null>((resolve) => (release = () => resolve(null)));
  const request = api.request.bind(api);
  api.request = (node, subject, body, ms) => {
    if (!subject.startsWith("$NG.MOVE.COPY.leaving")) return request(node, subject, body, ms);
    copying = true;
    return released;
  };

  const info = await jsm.streams.info("leaving");
  await jsm.streams.update("leaving", { ...info.config, placement: { cluster: "", tags: ["node:c"] } });
  await waitUntil(() => copying, "c to start copying");
  assert.equal(moveOf(placement(a)!)?.to, "c");
  await c.close();
  release();

  await waitUntil(() => [a, b].every((n) => placement(n) !== undefined && placement(n)!.moving === undefined), "the move to the departed node cancelled", 15_000);
  assert.deepEqual(placement(a)!.leaders, ["a"]);
  assert.equal((await js.publish("leaving.after", "after")).seq, 21);

  // Another move is taken at once, and completes.
  const now = await jsm.streams.info("leaving");
  await jsm.streams.update("leaving", { ...now.config, placement: { cluster: "", tags: ["node:b"] } });
  await waitUntil(() => [a, b].every((n) => placement(n)?.leaders[0] === "b") && !a.jetstream!.streams.has("leaving"), "the move to b", 30_000);
  assert.equal((await jsm.streams.info("leaving")).state.messages, 21);

  // c back: it finishes nothing and serves nothing of the stream.
  const c2 = await startJetStreamNode(cluster.site(), "c", { routes: [`nats://127.0.0.1:${a.routes!.port}`] });
  nodes[2] = c2;
  await waitUntil(() => c2.cluster!.membership.members().length === 3 && placement(c2) !== undefined, "c to rejoin");
  assert.deepEqual(placement(c2)!.leaders, ["b"]);
  assert.equal(placement(c2)!.moving, undefined);
  assert.equal(c2.jetstream!.streams.has("leaving"), false);
});
