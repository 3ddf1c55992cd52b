/**
 * A peer removal (`$JS.API.STREAM.PEER.REMOVE`) whose replacement node
 * leaves the cluster before it has caught up: the operator removes that
 * peer in turn and another live node takes its place in the same
 * reassignment, as nats-server lets an offline peer be removed. Before,
 * every later peer removal and rescale of the stream was refused "stream
 * move already in progress" until the departed node came back.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile, startJetStreamNode } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

const clients = v3Clients();
const cluster = jetStreamClusterPerFile("peeragain", {}, () => clients.closeAll());
const nodes = cluster.nodes;
const client = (n: NagareServer): Promise<NatsConnection> => clients.open(n.url);


type Request = (node: string, subject: string, body: Uint8Array, ms: number) => Promise<Buffer | null>;
const clusterApiOf = (n: NagareServer): { request: Request } =>
  (n.jetstreams as unknown as { served: Map<string, { api: { clusterApi: { request: Request } } }> }).served.get("$G")!.api.clusterApi;
const nameOf = (n: NagareServer): string => n.cluster!.options.serverName;

async function peerRemove(nc: NatsConnection, stream: string, peer: string): Promise<Record<string, unknown>> {
  const m = await nc.request(`$JS.API.STREAM.PEER.REMOVE.${stream}`, JSON.stringify({ peer }), { timeout: 10_000 });
  return JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
}

test("a peer removal whose replacement leaves before catching up can remove that replacement in turn: another node takes its place and the reassignment ends", async () => {
  // A fourth node: the peer's replacement, and a spare to replace it in turn. (Root-level before hooks do not wait for
  // one another, so it is started here, once the cluster's are up.)
  nodes.push(await startJetStreamNode(cluster.site(), "d", { routes: [`nats://127.0.0.1:${nodes[0].routes!.port}`] }));
  await waitUntil(() => nodes.every((n) => n.cluster!.membership.members().length === 4), "every node to see the four");
  const [a] = nodes;
  await (await jetstreamManager(await client(a))).streams.add({ name: "again", subjects: ["again.>"], num_replicas: 2 });
  // Everything through the leader's node, which stays up.
  const leader = a.cluster!.placements.get("$G", "again")!.placement.leaders[0];
  const lead = nodes.find((n) => nameOf(n) === leader)!;
  const placement = () => lead.cluster!.placements.get("$G", "again")!.placement;
  const nc = await client(lead);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  for (let i = 0; i < 20; i++) await js.publish(`again.${i}`, `v${i}`);
  const replicas = placement().replicas![0];
  const peer = replicas.find((n) => n !== leader)!;
  const spares = nodes.filter((n) => !replicas.includes(nameOf(n)));
  assert.equal(spares.length, 2);

  // The spares' fetches stay unanswered until released: whichever replaces the peer cannot catch up.
  const released: Array<() => void> = [];
  const restore: Array<() => void> = [];
  for (const n of spares) {
    const api = clusterApiOf(n);
    const request = api.request.bind(api);
    let release: () => void = () => {};
    const gate = new Promise<null>((resolve) => (release = () => resolve(null)));
    let open = false;
    released.push(() => {
      open = true;
      release();
    });
    api.request = (node, subject, body, ms) => (!open && subject.startsWith("$NG.REPL.") && subject.includes(".again") ? gate : request(node, subject, body, ms));
    restore.push(() => (api.request = request));
  }

  const first = await peerRemove(nc, "again", peer);
  assert.equal(first.error, undefined, JSON.stringify(first));
  const added = placement().reassigning![0]!.target.find((n) => !replicas.includes(n))!;
  const gone = spares.find((n) => nameOf(n) === added)!;
  const other = spares.find((n) => n !== gone)!;
  assert.ok(!placement().isr![0].includes(added));
  await gone.close();
  await waitUntil(() => !lead.cluster!.placements.isLive(added), `${added} gone`);

  // Removing the departed replacement names another node in the same reassignment, which ends once it caught up.
  const again = await peerRemove(nc, "again", added);
  assert.equal(again.error, undefined, JSON.stringify(again));
  assert.deepEqual(placement().reassigning![0]!.original, replicas);
  assert.ok(placement().reassigning![0]!.target.includes(nameOf(other)));
  assert.ok(!placement().replicas![0].includes(added), "the departed replacement dropped at once");
  for (const r of released) r();
  await waitUntil(() => placement().reassigning === undefined, "the reassignment to end", 30_000);
  assert.deepEqual([...placement().replicas![0]].sort(), [leader, nameOf(other)].sort());
  assert.deepEqual([...placement().isr![0]].sort(), [leader, nameOf(other)].sort());
  const info = await jsm.streams.info("again");
  assert.equal(info.state.messages, 20);
  for (const r of restore) r();
});
