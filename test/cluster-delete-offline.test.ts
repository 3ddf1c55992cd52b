/**
 * STREAM.DELETE of a stream whose leader is not live (a stream of one
 * replica on a node that is down, maybe for good) removes its placement,
 * as nats-server's meta layer deletes it: the name and subjects are free
 * again, and the node, back, sets its copy aside rather than serve it.
 * Before, the delete was answered "stream is offline" for as long as the
 * node stayed away.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile, startJetStreamNode } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

const clients = v3Clients();
const cluster = jetStreamClusterPerFile("deloffline", {}, () => clients.closeAll());
const nodes = cluster.nodes;
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);

test("a stream whose only node is down can be deleted: its name and subjects are free, and the node back does not serve its copy", async () => {
  const [a, , c] = nodes;
  const jsm = await jetstreamManager(await client(a));
  await jsm.streams.add({ name: "stranded", subjects: ["stranded.>"], placement: { cluster: "", tags: ["node:c"] } });
  await jetstream(await client(a)).publish("stranded.x", "kept on c");
  await c.close();
  await waitUntil(() => !a.cluster!.placements.isLive("c"), "c gone");

  assert.equal(await jsm.streams.delete("stranded"), true);
  await waitUntil(() => nodes.slice(0, 2).every((n) => n.cluster!.placements.get("$G", "stranded") === undefined), "the placement gone everywhere");
  const again = await jsm.streams.add({ name: "stranded2", subjects: ["stranded.>"] });
  assert.equal(again.config.name, "stranded2", "the subjects are free again");

  const c2 = await startJetStreamNode(cluster.site(), "c", { routes: [`nats://127.0.0.1:${a.routes!.port}`] });
  nodes[2] = c2;
  await waitUntil(() => c2.cluster!.membership.members().length === 3, "c to rejoin");
  assert.equal(c2.jetstream!.streams.has("stranded"), false, "the deleted stream not served by the node back");
  const names: string[] = [];
  for await (const n of (await jetstreamManager(await client(c2))).streams.names()) names.push(n);
  assert.deepEqual(names, ["stranded2"]);
});
