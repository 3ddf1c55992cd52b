/**
 * Stream placement (src/cluster/placement.ts) against a real etcd: leaders
 * chosen by load and tags, a JetStream stream kept on one node and a Kafka
 * topic spread, two nodes placing the same stream at once agreeing on one
 * placement, and nodes that left not chosen.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { NoSuitablePeersError, Placements } from "../src/cluster/placement.js";
import { MetadataStore, REGISTERED_PREFIX } from "../src/cluster/metadata.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { startTestNode, uniqueCluster, type TestNode } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";

let etcd: EtcdHarness;

before(async () => {
  etcd = await startEtcd();
});

after(async () => {
  await etcd.close();
});

async function nodes(cluster: string, specs: Array<[string, string[]]>, routed: readonly string[] = []): Promise<Array<TestNode & { placements: Placements }>> {
  const out: Array<TestNode & { placements: Placements }> = [];
  for (const [name, tags] of specs) {
    const n = await startTestNode(etcd.endpoint, cluster, name, { tags, ...(routed.includes(name) ? { routeUrl: `nats-route://127.0.0.1:${6000 + out.length}` } : {}) });
    out.push({ ...n, placements: new Placements(n.node.metadata, n.node.membership, name, cluster) });
  }
  await waitUntil(() => out.every((n) => n.node.membership.members().length === specs.length), "every node to see the others");
  return out;
}

test("streams go to the least loaded node, kept together; topics spread; tags and clusters are honoured", async () => {
  const cluster = uniqueCluster("place");
  const [a, b, c] = await nodes(cluster, [
    ["a", ["az:1", "ssd"]],
    ["b", ["az:2"]],
    ["c", ["az:3", "ssd"]],
  ]);
  try {
    const js = { spread: false, subjects: ["s.>"], origin: "jetstream" as const, config: {} };
    const first = await a.placements.place("$G", "one", { partitions: 1, ...js });
    assert.equal(first.created, true);
    assert.deepEqual(first.placement.leaders, ["a"], "with no load anywhere, the name decides");
    await waitUntil(() => b.placements.get("$G", "one") !== undefined, "b to see the placement");
    const again = await b.placements.place("$G", "one", { partitions: 1, ...js });
    assert.equal(again.created, false, "a placed stream stays where it is");
    assert.deepEqual(again.placement.leaders, ["a"]);

    const together = await b.placements.place("$G", "two", { partitions: 3, ...js });
    assert.deepEqual(together.placement.leaders, ["b", "b", "b"], "a JetStream stream's partitions stay on one node, the least loaded");

    // Load is read from c's own copy of the metadata: let it see b's placement first.
    await waitUntil(() => c.placements.get("$G", "two") !== undefined && c.placements.get("$G", "one") !== undefined, "c to see both placements");
    const topic = await c.placements.place("$G", "orders", { partitions: 6, spread: true, subjects: ["orders"], origin: "kafka", config: {} });
    // Loads before: a 1, b 3, c 0.
    assert.deepEqual(topic.placement.leaders, ["c", "a", "c", "a", "c", "a"], "partitions go to the least loaded node, one at a time");

    const tagged = await a.placements.place("$G", "fast", { partitions: 1, tags: ["ssd"], ...js });
    assert.ok(["a", "c"].includes(tagged.placement.leaders[0]), "only nodes with every tag");
    await assert.rejects(a.placements.place("$G", "nowhere", { partitions: 1, tags: ["gpu"], ...js }), NoSuitablePeersError);
    await assert.rejects(a.placements.place("$G", "elsewhere", { partitions: 1, cluster: "other", ...js }), /no suitable peers for placement: cluster "other"/);
    assert.equal(a.placements.get("$G", "nowhere"), undefined, "a refused placement records nothing");

    // Accounts are apart: the same name in two accounts is two placements.
    await a.placements.place("ACC", "one", { partitions: 1, ...js });
    assert.deepEqual(a.placements.list("ACC").map((p) => p.stream), ["one"]);
    assert.deepEqual(
      a.placements.list("$G").map((p) => p.stream),
      ["fast", "one", "orders", "two"],
    );

    // A node that leaves is not chosen any more.
    await c.node.leave();
    await waitUntil(() => !a.placements.isLive("c"), "a to see c go");
    const after = await a.placements.place("$G", "later", { partitions: 2, spread: true, subjects: ["later"], origin: "kafka", config: {} });
    assert.ok(after.placement.leaders.every((l) => l !== "c"), `placed on live nodes only: ${after.placement.leaders.join(",")}`);

    await a.placements.remove("$G", "one");
    assert.equal(a.placements.get("$G", "one"), undefined);
  } finally {
    for (const n of [a, b, c]) await n.node.leave();
  }
});

test("two nodes placing the same stream at once agree on one placement", async () => {
  const cluster = uniqueCluster("race");
  const [a, b] = await nodes(cluster, [
    ["a", []],
    ["b", []],
  ]);
  try {
    for (let i = 0; i < 10; i++) {
      const r = { partitions: 2, spread: true, subjects: [`r${i}`], origin: "kafka" as const, config: {} };
      const [pa, pb] = await Promise.all([a.placements.place("$G", `r${i}`, r), b.placements.place("$G", `r${i}`, r)]);
      assert.deepEqual(pa.placement, pb.placement, "both see the placement that won");
      assert.equal(Number(pa.created) + Number(pb.created), 1, "exactly one created it");
    }
  } finally {
    for (const n of [a, b]) await n.node.leave();
  }
});

test("two nodes changing one placement at once both land: the later change is decided again on the earlier", async () => {
  const cluster = uniqueCluster("change");
  const [a, b] = await nodes(cluster, [
    ["a", []],
    ["b", []],
  ]);
  try {
    await a.placements.place("$G", "both", { partitions: 1, spread: false, subjects: ["both"], origin: "jetstream", config: {} });
    await waitUntil(() => b.placements.get("$G", "both") !== undefined, "b to see the placement");
    const seen: string[][] = [];
    const add = (tag: string) => (p: Parameters<Parameters<Placements["update"]>[2]>[0]) => {
      seen.push([...p.tags]);
      return { ...p, tags: [...p.tags, tag] };
    };
    // Both read the same revision: one commit wins, the other meets it in etcd before its own copy has it.
    await Promise.all([a.placements.update("$G", "both", add("from-a")), b.placements.update("$G", "both", add("from-b"))]);
    await waitUntil(() => a.placements.get("$G", "both")!.placement.tags.length === 2, "a to see both changes");
    assert.deepEqual([...a.placements.get("$G", "both")!.placement.tags].sort(), ["from-a", "from-b"], "neither change is lost");
    assert.equal(seen.length, 3, "the loser decided once more, on the winner's placement");
    assert.equal(seen[2].length, 1);
    // A change whose key another node removed is not retried: the stream is gone.
    await a.placements.remove("$G", "both");
    await assert.rejects(b.placements.update("$G", "both", add("late")), /not placed|changed concurrently/);
  } finally {
    for (const n of [a, b]) await n.node.leave();
  }
});

test("a replicated stream's copies go only to nodes with routes (followers fetch over them); one copy goes anywhere", async () => {
  const cluster = uniqueCluster("routes");
  const [a, b, c] = await nodes(cluster, [["a", []], ["b", []], ["c", []]], ["a", "b"]);
  try {
    const js = { spread: false, subjects: ["s.>"], origin: "jetstream" as const, config: {} };
    const two = await c.placements.place("$G", "two", { partitions: 1, replicas: 2, ...js });
    assert.deepEqual([...two.placement.replicas![0]].sort(), ["a", "b"], "c has no routes: it holds no copy");
    await assert.rejects(c.placements.place("$G", "three", { partitions: 1, replicas: 3, ...js }), (err: Error) => {
      assert.ok(err instanceof NoSuitablePeersError);
      assert.match(err.message, /^no suitable peers for placement: .*without routes \(cluster \{ port \}\), c cannot hold copies$/);
      return true;
    });
    const one = await c.placements.place("$G", "one", { partitions: 1, ...js });
    assert.equal(one.placement.leaders.length, 1, "an unreplicated stream needs no routes");
    // Growing a stream's replicas (num_replicas raised) follows the same rule.
    const onA = await c.placements.place("$G", "grow", { partitions: 1, replicas: 2, ...js });
    const [leader] = onA.placement.replicas![0];
    assert.throws(() => c.placements.moreReplicas(2, [], new Set(onA.placement.replicas![0])), /without routes \(cluster \{ port \}\), c cannot hold copies/);
    assert.deepEqual(c.placements.moreReplicas(1, [], new Set([leader])), [leader === "a" ? "b" : "a"]);
  } finally {
    for (const n of [a, b, c]) await n.node.leave();
  }
});

test("a node back from a fence is live to itself only once its copy of the metadata has what changed before it registered again", async () => {
  const cluster = uniqueCluster("back");
  const [a, b] = await nodes(cluster, [["a", []], ["b", []]]);
  const copies: MetadataStore[] = [];
  // A copy of the metadata of a's own, frozen when wanted: a watch that lags behind a's registering again.
  const copyOfA = async (): Promise<Placements> => {
    const m = new MetadataStore({ client: a.node.client, metaPrefix: `/nagare-test/${cluster}/meta/`, membership: a.node.membership });
    copies.push(m);
    await m.start(5000);
    return new Placements(m, a.node.membership, "a", cluster);
  };
  try {
    const js = { spread: false, subjects: ["s.>"], origin: "jetstream" as const, config: {} };
    await a.placements.place("$G", "s", { partitions: 1, ...js });
    const stale = await copyOfA();
    assert.equal(stale.leaderOf("$G", "s"), "a");
    assert.equal(stale.isLive("a"), true);
    copies[0].close();
    await waitUntil(() => b.placements.get("$G", "s") !== undefined, "b to see the placement");
    // b takes the stream over (as it would from a gone), a is fenced and registers again.
    await b.placements.update("$G", "s", (p) => ({ ...p, leaders: ["b"] }));
    const registrations = a.node.membership.registrations;
    a.node.membership.fence("test");
    await waitUntil(() => a.node.membership.registrations > registrations && a.node.membership.holdsLease(), "a to register again");
    assert.equal(stale.leaderOf("$G", "s"), "a", "the frozen copy still says a leads");
    assert.equal(stale.isLive("a"), false, "so a is not live to itself on it: it would serve as the stream's leader");
    const caughtUp = await copyOfA();
    assert.equal(caughtUp.leaderOf("$G", "s"), "b");
    assert.equal(caughtUp.isLive("a"), true);
    const marker = (await a.node.client.range(`/nagare-test/${cluster}/meta/${REGISTERED_PREFIX}a`)).kvs[0];
    assert.equal(marker?.lease, a.node.membership.leaseId, "the registration's marker is put under its lease");
  } finally {
    for (const m of copies) m.close();
    for (const n of [a, b]) await n.node.leave();
  }
});

test("a remove that meets a change made meanwhile removes the changed placement, not nothing", async () => {
  const cluster = uniqueCluster("rmrace");
  const [a, b] = await nodes(cluster, [
    ["a", []],
    ["b", []],
  ]);
  try {
    for (let i = 0; i < 5; i++) {
      const name = `raced${i}`;
      await a.placements.place("$G", name, { partitions: 1, spread: false, subjects: [name], origin: "jetstream", config: {} });
      await waitUntil(() => b.placements.get("$G", name) !== undefined, "b to see the placement");
      // b changes the placement (a failover's, an ISR change's) while a removes it (a STREAM.DELETE) from the same revision.
      const change = b.placements.update("$G", name, (p) => ({ ...p, tags: [...p.tags, "changed"] }));
      await change;
      await a.placements.remove("$G", name);
      assert.equal(a.placements.get("$G", name), undefined, `${name}: removed, as remove() resolved`);
      await waitUntil(() => b.placements.get("$G", name) === undefined, `${name}: removed for b too`);
    }
  } finally {
    for (const n of [a, b]) await n.node.leave();
  }
});

/** Stops a node's copy of the metadata following etcd (its watch down, etcd still answering); returns what resumes it. */
function stallWatch(metadata: MetadataStore): () => void {
  const mirror = metadata.mirror as unknown as { watchOnce(): Promise<"resync" | "ended">; current?: { end(): void } };
  let resume: (() => void) | undefined;
  mirror.watchOnce = () => new Promise((resolve) => (resume = () => resolve("ended")));
  mirror.current?.end();
  return () => {
    delete (mirror as { watchOnce?: unknown }).watchOnce;
    resume?.();
  };
}

test("a placement lost to another node while this node's copy of the metadata does not follow etcd fails in bounded time", async () => {
  const cluster = uniqueCluster("stalled");
  const [a, b] = await nodes(cluster, [
    ["a", []],
    ["b", []],
  ]);
  const resume = stallWatch(a.node.metadata);
  try {
    assert.equal(a.node.metadata.live, false);
    const r = { partitions: 1, spread: false, subjects: ["stalled"], origin: "jetstream" as const, config: {} };
    await b.placements.place("$G", "stalled", r);
    // a's copy never learns of b's placement: each commit of a's loses to it. Before, a tried again without end.
    let timer: NodeJS.Timeout | undefined;
    const limit = 10 * a.node.metadata.requestTimeoutMs;
    const outcome = await Promise.race([
      a.placements.place("$G", "stalled", r).then(
        () => "placed",
        (err: Error) => err,
      ),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`still placing after ${limit} ms`), limit))),
    ]);
    clearTimeout(timer);
    assert.ok(outcome instanceof Error, String(outcome));
    assert.equal(outcome.name, "MetadataUnavailableError", outcome.message);
    assert.match(outcome.message, /does not follow etcd/);
  } finally {
    resume();
    for (const n of [a, b]) await n.node.leave();
  }
});

test("an update of a stream deleted meanwhile through another node fails alone: the creates in its round are placed", async () => {
  const cluster = uniqueCluster("gone");
  const [a, b] = await nodes(cluster, [
    ["a", []],
    ["b", []],
  ]);
  const r = (subject: string) => ({ partitions: 1, spread: false, subjects: [subject], origin: "jetstream" as const, config: {}, admit: () => {} });
  await a.placements.place("$G", "gone", r("gone"));
  await waitUntil(() => b.placements.get("$G", "gone") !== undefined, "b to see the stream");
  // a's copy lags behind etcd (here: its watch held): it still has the stream b removes.
  const resume = stallWatch(a.node.metadata);
  try {
    await b.placements.remove("$G", "gone");
    // The first round holds a create of a placed stream only (answered from the copy, nothing committed); the update and
    // a create of another stream wait for the next, together.
    const first = a.placements.place("$G", "gone", r("gone"));
    const update = a.placements.update("$G", "gone", (p) => ({ ...p, subjects: ["gone.new"] }), [], () => {}).then(
      () => "made",
      (err: Error) => err.name,
    );
    const other = a.placements.place("$G", "other", r("other")).then(
      (p) => (p.created ? "placed" : "found"),
      (err: Error) => `${err.name}: ${err.message}`,
    );
    await first;
    // etcd says the updated stream is gone: that update alone fails. Before, the round was committed again and again as
    // fast as etcd answered while the copy lagged, and the create failed with it (ConcurrentChangeError).
    assert.deepEqual(await Promise.all([update, other]), ["StreamNotPlacedError", "placed"]);
  } finally {
    resume();
    for (const n of [a, b]) await n.node.leave();
  }
});
