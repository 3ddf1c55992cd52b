/**
 * A node's replicated partitions (stream-replicas.ts) closed while a role
 * is being taken up: the settle that was under way must not leave a
 * leader or a follower running behind close(). A follower left so fetched
 * from its leader for ever, with a timer between its retries: the three-
 * node Kafka test that restarts etcd (cluster-kafka-offsets.test.ts) then
 * passed every test and never exited, a node having closed while it
 * settled the leadership changes its peers' closing made.
 *
 * The host is a stand-in: the settle is called as a placement change
 * calls it, and close() follows at once, while the role is set up.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { StreamReplicas, type ReplicaHost } from "../src/streams/stream-replicas.js";
import type { ClusterStreams, PlacedStream } from "../src/streams/cluster-streams.js";
import type { Stream } from "../src/streams/stream.js";
import { startJs } from "./helpers/js.js";

type Hook = (account: string, stream: string, local: Stream | undefined, placed: PlacedStream | undefined) => Promise<void>;

/** Node "b" of a cluster the test makes up; the requests its partitions send (a follower's fetches), which are never answered. */
function standIn(js: ReplicaHost["js"]): { host: ReplicaHost; hooks: Set<Hook>; requests: string[] } {
  const hooks = new Set<Hook>();
  const requests: string[] = [];
  const cluster = { self: "b", replicaHooks: hooks, directory: { isLive: () => true, onMembers: () => () => {} } } as unknown as ClusterStreams;
  const host: ReplicaHost = {
    js,
    cluster,
    // Left pending: a follower that asks waits on it with no timer, and the test's process can end whatever happens.
    request: (node, subject) => {
      requests.push(`${node} ${subject}`);
      return new Promise<Buffer | null>(() => {});
    },
    answer: () => {},
    holdsLease: () => true,
  };
  return { host, hooks, requests };
}

function placement(account: string, leader: string): PlacedStream {
  const replicas = leader === "b" ? ["b", "a"] : ["a", "b"];
  return { account, stream: "R", leaders: [leader], tags: [], cluster: "c", subjects: ["r"], origin: "jetstream", config: {}, replicas: [replicas], epochs: [1], isr: [replicas] };
}

for (const leader of ["b", "a"]) {
  const role = leader === "b" ? "leader" : "follower";
  test(`a ${role} taken up while the node closes is ended, not left running`, async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "R", subjects: ["r"] });
      const js = h.srv.jetstream!;
      const stream = js.streams.get("R")!;
      const { host, hooks, requests } = standIn(js);
      const replicas = new StreamReplicas(host);
      const [settle] = hooks;
      const settling = settle(js.account.name, "R", stream, placement(js.account.name, leader));
      // The settle waits on the log's files to take the role up; close() comes first.
      const closing = replicas.close();
      await settling;
      await closing;
      assert.equal(replicas.leads("R"), false, "no leadership after close");
      // Writes are refused as a partition led nowhere here refuses them, and nobody fetches for it.
      assert.notEqual(stream.replicaGate(0)?.refusal(true) ?? null, null, "the partition takes no writes");
      assert.deepEqual(requests, [], "no follower fetches after close");
    } finally {
      await h.close();
    }
  });
}
