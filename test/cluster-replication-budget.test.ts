/**
 * A node back from an absence catches up many replicated partitions at
 * once: each of its followers fetches from its leader, and every answer
 * crosses the one route between the two nodes. Unbounded, the answers
 * pile up past the route's max_pending and the route is closed as a slow
 * consumer (every partition's fetch and the core traffic with it, again
 * at each reconnect). The leaders' answer budget keeps them below it.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { jetStreamClusterPerFile, startJetStreamNode } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

const MAX_PENDING = 1024 * 1024;
const STREAMS = 16;
const PER_STREAM = 24;

const clients = v3Clients();
const { nodes, site } = jetStreamClusterPerFile("repl-budget", { maxPending: MAX_PENDING }, () => clients.closeAll());

test(`a node back from an absence catches up ${STREAMS} replicated streams at once without its routes closing as slow consumers (max_pending 1 MiB)`, async () => {
  const [a, b] = nodes;
  const nc = await clients.open(a.url);
  const jsm = await jetstreamManager(nc);
  for (let i = 0; i < STREAMS; i++) await jsm.streams.add({ name: `B${i}`, subjects: [`b${i}.>`], num_replicas: 3 });
  await waitUntil(() => nodes.every((n) => [...Array(STREAMS).keys()].every((i) => n.jetstream!.streams.has(`B${i}`))), "a copy of every stream on every node");
  await nodes[2].close();
  nodes.pop();
  const placed = (i: number) => a.cluster!.placements.get("$G", `B${i}`)?.placement;
  await waitUntil(() => [...Array(STREAMS).keys()].every((i) => placed(i)?.leaders[0] !== "c" && !placed(i)!.isr![0].includes("c")), "every stream led and in sync without c", 30_000);
  // Written while c is away: a and b have it, c's copies lack all of it. Each with an id, retried until acknowledged (a
  // leadership just taken over drops what arrives before its replication is set up).
  const js = jetstream(nc);
  const body = new Uint8Array(48 * 1024).fill(7);
  for (let i = 0; i < STREAMS; i++) {
    await Promise.all(
      Array.from({ length: PER_STREAM }, async (_, k) => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await js.publish(`b${i}.x`, body, { msgID: `${i}-${k}`, timeout: 5000 });
          } catch (err) {
            if (attempt >= 10) throw err;
          }
        }
      }),
    );
  }
  const slowBefore = a.broker.stats.slowConsumers + b.broker.stats.slowConsumers;
  const c = await startJetStreamNode(site(), "c", { routes: [`nats://127.0.0.1:${a.routes!.port}`], maxPending: MAX_PENDING });
  nodes.push(c);
  await waitUntil(() => [...Array(STREAMS).keys()].every((i) => c.jetstream!.streams.get(`B${i}`)?.partitions[0].state().lastSeq === PER_STREAM), "c to catch up every stream", 60_000);
  assert.equal(a.broker.stats.slowConsumers + b.broker.stats.slowConsumers + c.broker.stats.slowConsumers, slowBefore, "no connection closed as a slow consumer");
});
