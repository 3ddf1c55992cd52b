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

/** `config` placed on this node "A" alone, leading its `partitions` partitions. */
function placedHere(config: { name: string; subjects: string[] }, partitions = 1): PlacedStream {
  return { account: "$G", stream: config.name, leaders: Array<string>(partitions).fill("A"), tags: [], cluster: "c", subjects: config.subjects, origin: "jetstream", config: config as PlacedStream["config"] };
}

interface SettledNode {
  js: JetStreams;
  account: Account;
  cluster: ClusterStreams;
}

/**
 * A clustered node opened over `dir` (its streams found on disk), joined to
 * a cluster of `placements`: `f` runs once the start's settles are done.
 * `beforeJoin` runs between the two, as a client could while the node starts.
 */
async function settledNode(dir: string, placements: StreamDirectory, f: (n: SettledNode) => Promise<void>, beforeJoin?: (js: JetStreams, account: Account) => void): Promise<void> {
  const account = new Account("$G");
  const js = await node(dir, true, account);
  try {
    beforeJoin?.(js, account);
    const cluster = await ClusterStreams.start(js, placements, memoryLog());
    try {
      await f({ js, account, cluster });
    } finally {
      cluster.close();
    }
  } finally {
    await js.close();
  }
}

test("a clustered node's stream found on disk takes no publish before the cluster settles it, and takes them after", async () => {
  await withStreamOnDisk(async (dir) => {
    let early: Promise<string> | undefined;
    // Placed here alone (not replicated): once settled, the stream takes publishes again.
    await settledNode(
      dir,
      directory(new Map([["s", placedHere(CONFIG)]])),
      async ({ js, account }) => {
        // The publish sent before the settle was dropped (never stored, never answered): the first stored is the next one.
        assert.equal(await publish(account, "s.2", "_INBOX.late"), JSON.stringify({ stream: "s", seq: 1 }));
        assert.equal(js.global!.streams.get("s")!.partitions[0].state().messages, 1);
        assert.equal(await Promise.race([early!, Promise.resolve("unanswered")]), "unanswered");
      },
      (_js, account) => void (early = publish(account, "s.1", "_INBOX.early")),
    );
  });
});

test("limits a placement changed while the node was down apply once it settles", async () => {
  await withStreamOnDisk(async (dir) => {
    await settledNode(dir, directory(new Map([["s", placedHere({ ...CONFIG, max_msgs: 3 } as typeof CONFIG)]])), async ({ js }) => {
      const s: Stream = js.global!.streams.get("s")!;
      for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => s.publish(`s.${i}`, null, Buffer.from("x"), () => resolve()));
      assert.equal(s.partitions[0].state().messages, 3);
    });
  });
});

test("a settle that failed (etcd refusing an adoption at start) is tried again until the stream is placed and takes publishes", async () => {
  await withStreamOnDisk(async (dir) => {
    const placements = directory(new Map(), 2);
    await settledNode(dir, placements, async ({ js, account }) => {
      const s = js.global!.streams.get("s")!;
      await waitUntil(() => placements.adopts === 3 && s.ledHere === null, "the stream adopted on the third try and taken as led here");
      assert.equal(await publish(account, "s.1", "_INBOX.after"), JSON.stringify({ stream: "s", seq: 1 }));
    });
  });
});

test("a settle that keeps failing is tried again less and less often, not every half second", async () => {
  await withStreamOnDisk(async (dir) => {
    const placements = directory(new Map(), Infinity);
    const at: number[] = [];
    const adopt = placements.adopt;
    placements.adopt = (...args) => (at.push(performance.now()), adopt(...args));
    await settledNode(dir, placements, async () => {
      // Tried at start, then after 0.5, 1 and 2 s. Before: every retry counted as the first, each 0.5 s after the last.
      await waitUntil(() => at.length >= 4, "three retries of the adoption", 20_000);
      const gaps = at.slice(1).map((t, i) => Math.round(t - at[i]));
      assert.ok(gaps[2] >= 1500, `the third retry ${gaps[2]} ms after the second (gaps ${gaps.join(", ")} ms)`);
    });
  });
});

test("a retry waiting for a start's adoption is dropped once the stream is placed: a stream removed later is not placed again", async () => {
  await withStreamOnDisk(async (dir) => {
    const placed = new Map<string, PlacedStream>();
    // The start's adoption is refused: a retry of it waits.
    const placements = directory(placed, 1);
    await settledNode(dir, placements, async ({ js, cluster }) => {
      assert.equal(placements.adopts, 1);
      // Placed by another node meanwhile: settled as placed.
      placed.set("s", placedHere(CONFIG));
      placements.fire("s");
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
      placed.delete("s");
      placements.fire("s");
      await waitUntil(() => !js.global!.streams.has("s"), "the local copy of the removed stream deleted by the retried removal");
      assert.equal(placements.adopts, 1, "the start's adoption was not tried again");
      assert.equal(placed.has("s"), false);
    });
  });
});

test("a stream of several partitions whose roles failed to set up takes no publish while its order is held", async () => {
  const config = { name: "k", subjects: ["k.>"], storage: "file" };
  await withStreamOnDisk(
    async (dir) => {
      await settledNode(
        dir,
        directory(new Map([["k", placedHere(config, 2)]])),
        async ({ js }) => assert.deepEqual(js.global!.streams.get("k")!.ledHere, [false, false]),
        // A role that cannot be set up (a disk refusing its files): the order is never released.
        (js) => {
          const attach = js.attachCluster.bind(js);
          js.attachCluster = (c) => {
            c.replicaHooks.add(() => Promise.reject(new Error("role set-up failed")));
            attach(c);
          };
        },
      );
    },
    config,
    2,
  );
});
