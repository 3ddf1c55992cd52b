/**
 * Which partitions a clustered stream takes publishes for while the cluster
 * settles it (cluster-streams.ts): a replicated partition without its gate
 * would acknowledge a write stored on this node alone. The node-level tests
 * use a stream directory of their own (no etcd): a node's streams found on
 * disk, opened before the node has joined its cluster.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Account } from "../src/core/account.js";
import { UNLIMITED_JETSTREAM } from "../src/core/accounts.js";
import { JetStreams } from "../src/streams/jetstreams.js";
import { ClusterStreams, keptLeading, type PlacedStream, type StreamDirectory } from "../src/streams/cluster-streams.js";
import type { Stream } from "../src/streams/stream.js";
import { Message } from "../src/subjects/message.js";
import { Subscription } from "../src/subjects/subscription.js";
import { memoryLog } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

test("a replicated partition takes publishes only once its gate is in place; one given up stops at once", () => {
  const led = [true, true, true, false];
  // A node just started (nothing excluded before): partitions 1 and 2 are replicated, only 1 has its gate yet.
  const gated = new Set([0, 1]);
  assert.deepEqual(keptLeading(led, null, (p) => gated.has(p)), [true, true, false, false]);
  // A stream grown from 2 to 4 partitions, both old ones led and gated: the new ones wait for their roles.
  assert.deepEqual(keptLeading([true, true, true, true], null, (p) => p < 2), [true, true, false, false]);
  // A partition this node stopped leading is not kept, gated or not.
  assert.deepEqual(keptLeading([true, true], [true, false], () => true), [true, false]);
  // Nothing replicated (every partition "gated"): what is led is kept.
  assert.deepEqual(keptLeading(led, null, () => true), led);
});

const CONFIG = { name: "s", subjects: ["s.>"], storage: "file" };

/** A directory of placements held in memory, this node "A" the only one; `adoptFailures` adopts fail first (etcd refusing). */
function directory(placements: Map<string, PlacedStream>, adoptFailures = 0): StreamDirectory & { adopts: number; fire(stream: string): void } {
  const listeners: Array<(account: string, stream: string, placement: PlacedStream | undefined, resync: boolean) => void> = [];
  const d = {
    adopts: 0,
    /** Tells the cluster's streams that `stream`'s placement changed (as the metadata watch does). */
    fire: (stream: string) => listeners.forEach((l) => l("$G", stream, placements.get(stream), false)),
    self: "A",
    clusterName: "c",
    get: (_account: string, stream: string) => (placements.has(stream) ? { placement: placements.get(stream)!, revision: 1 } : undefined),
    list: () => [...placements.values()],
    isLive: () => true,
    onMembers: () => () => {},
    nodes: () => [{ name: "A", tags: [] }],
    moreReplicas: () => [],
    choose: () => ["A"],
    place: () => Promise.reject(new Error("not in this test")),
    adopt: async (account: string, stream: string, partitions: number, subjects: string[], origin: PlacedStream["origin"], config: unknown) => {
      if (d.adopts++ < adoptFailures) throw new Error("etcd: deadline exceeded");
      const p: PlacedStream = { account, stream, leaders: Array<string>(partitions).fill("A"), tags: [], cluster: "c", subjects, origin, config: config as PlacedStream["config"] };
      placements.set(stream, p);
      queueMicrotask(() => d.fire(stream));
      return p;
    },
    remove: () => Promise.resolve(),
    update: () => Promise.resolve(),
    waitForRevision: () => Promise.resolve(true),
    onChange: (l: (typeof listeners)[number]) => void listeners.push(l),
  };
  return d;
}

/** A node's JetStream over `dir`, clustered or not, with a stream `s` made on its first start. */
async function node(dir: string, clustered: boolean, account = new Account("$G")): Promise<JetStreams> {
  return JetStreams.start({ storeDir: dir, maxPayload: 1 << 20, log: memoryLog(), clustered }, [account], new Map([["$G", { ...UNLIMITED_JETSTREAM }]]));
}

async function withStreamOnDisk(f: (dir: string) => Promise<void>, config: { name: string } = CONFIG, partitions = 1): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-kept-"));
  try {
    const first = await node(dir, false);
    await first.global!.createStream(config, partitions);
    await first.close();
    await f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Publishes over the account as a client would, and resolves with the JetStream ack's body once answered. */
function publish(account: Account, subject: string, inbox: string): Promise<string> {
  return new Promise((resolve) => {
    const receiver = { echo: true, deliver: (_s: Subscription, m: Message) => resolve(Buffer.from(m.data.subarray(m.start + m.hdrLen, m.end)).toString()) };
    account.subscribe(new Subscription(receiver as never, inbox, null));
    account.route(Message.from(subject, inbox, Buffer.from("x")), null);
  });
}

test("a clustered node's stream found on disk takes no publish before the cluster settles it, and takes them after", async () => {
  await withStreamOnDisk(async (dir) => {
    const account = new Account("$G");
    const js = await node(dir, true, account);
    try {
      const early = publish(account, "s.1", "_INBOX.early");
      // Placed here alone (not replicated): once settled, the stream takes publishes again.
      const placed: PlacedStream = { account: "$G", stream: "s", leaders: ["A"], tags: [], cluster: "c", subjects: ["s.>"], origin: "jetstream", config: CONFIG as PlacedStream["config"] };
      const cluster = await ClusterStreams.start(js, directory(new Map([["s", placed]])), memoryLog());
      try {
        // The publish sent before the settle was dropped (never stored, never answered): the first stored is the next one.
        assert.equal(await publish(account, "s.2", "_INBOX.late"), JSON.stringify({ stream: "s", seq: 1 }));
        assert.equal(js.global!.streams.get("s")!.partitions[0].state().messages, 1);
        assert.equal(await Promise.race([early, Promise.resolve("unanswered")]), "unanswered");
      } finally {
        cluster.close();
      }
    } finally {
      await js.close();
    }
  });
});

test("limits a placement changed while the node was down apply once it settles", async () => {
  await withStreamOnDisk(async (dir) => {
    const js = await node(dir, true);
    try {
      const placed: PlacedStream = { account: "$G", stream: "s", leaders: ["A"], tags: [], cluster: "c", subjects: ["s.>"], origin: "jetstream", config: { ...CONFIG, max_msgs: 3 } as PlacedStream["config"] };
      const cluster = await ClusterStreams.start(js, directory(new Map([["s", placed]])), memoryLog());
      try {
        const s: Stream = js.global!.streams.get("s")!;
        for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => s.publish(`s.${i}`, null, Buffer.from("x"), () => resolve()));
        assert.equal(s.partitions[0].state().messages, 3);
      } finally {
        cluster.close();
      }
    } finally {
      await js.close();
    }
  });
});

test("a settle that failed (etcd refusing an adoption at start) is tried again until the stream is placed and takes publishes", async () => {
  await withStreamOnDisk(async (dir) => {
    const account = new Account("$G");
    const js = await node(dir, true, account);
    try {
      const dirOf = directory(new Map(), 2);
      const cluster = await ClusterStreams.start(js, dirOf, memoryLog());
      try {
        const s = js.global!.streams.get("s")!;
        await waitUntil(() => dirOf.adopts === 3 && s.ledHere === null, "the stream adopted on the third try and taken as led here");
        assert.equal(await publish(account, "s.1", "_INBOX.after"), JSON.stringify({ stream: "s", seq: 1 }));
      } finally {
        cluster.close();
      }
    } finally {
      await js.close();
    }
  });
});

test("a retry waiting for a start's adoption is dropped once the stream is placed: a stream removed later is not placed again", async () => {
  await withStreamOnDisk(async (dir) => {
    const js = await node(dir, true);
    const placements = new Map<string, PlacedStream>();
    const dirOf = directory(placements, 1);
    // The start's adoption is refused: a retry of it waits.
    const cluster = await ClusterStreams.start(js, dirOf, memoryLog());
    try {
      assert.equal(dirOf.adopts, 1);
      // Placed by another node meanwhile: settled as placed.
      placements.set("s", { account: "$G", stream: "s", leaders: ["A"], tags: [], cluster: "c", subjects: ["s.>"], origin: "jetstream", config: CONFIG as PlacedStream["config"] });
      dirOf.fire("s");
      await waitUntil(() => js.global!.streams.get("s")?.ledHere === null, "the stream settled as placed");
      // Then removed from the cluster, its first removal failing (a role that would not end): the removal is retried.
      let failOnce = true;
      cluster.replicaHooks.add(async (_account, _name, local) => {
        // A removal ends the roles with no local stream named (the copy is deleted after).
        if (local === undefined && failOnce) {
          failOnce = false;
          throw new Error("a role would not end");
        }
      });
      placements.delete("s");
      dirOf.fire("s");
      await waitUntil(() => !js.global!.streams.has("s"), "the local copy of the removed stream deleted by the retried removal");
      assert.equal(dirOf.adopts, 1, "the start's adoption was not tried again");
      assert.equal(placements.has("s"), false);
    } finally {
      cluster.close();
      await js.close();
    }
  });
});

test("a stream of several partitions whose roles failed to set up takes no publish while its order is held", async () => {
  const config = { name: "k", subjects: ["k.>"], storage: "file" };
  await withStreamOnDisk(
    async (dir) => {
      const js = await node(dir, true);
      const placed: PlacedStream = { account: "$G", stream: "k", leaders: ["A", "A"], tags: [], cluster: "c", subjects: ["k.>"], origin: "jetstream", config: config as PlacedStream["config"] };
      // A role that cannot be set up (a disk refusing its files): the order is never released.
      const attach = js.attachCluster.bind(js);
      js.attachCluster = (c) => {
        c.replicaHooks.add(() => Promise.reject(new Error("role set-up failed")));
        attach(c);
      };
      const cluster = await ClusterStreams.start(js, directory(new Map([["k", placed]])), memoryLog());
      try {
        assert.deepEqual(js.global!.streams.get("k")!.ledHere, [false, false]);
      } finally {
        cluster.close();
        await js.close();
      }
    },
    config,
    2,
  );
});
