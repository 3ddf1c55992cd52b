/**
 * A node named leader of a replicated partition by a placement older than
 * its process, whose copy is in memory (so lost everything at the
 * restart), does not lead it again in that epoch: it names a live in-sync
 * replica leader in the next one and leaves the ISR; as the only in-sync
 * replica, it names the replica whose copy is most up to date (latest
 * leader epoch, then end) once every replica has said, or leads if that is
 * itself. Without a candidate it waits, without a role, and is settled
 * again until one comes. A copy that lost nothing (on disk; a placement
 * newer than the node; a stream scaled up on a running node) leads.
 *
 * The host is a stand-in (as stream-replicas-checkpoint.test.ts): this node
 * is "b"; the placement's changes are recorded, not applied; other
 * replicas answer what their copies hold from `ends`.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { StreamReplicas, type ReplicaHost } from "../src/streams/stream-replicas.js";
import type { ClusterStreams, PlacedStream } from "../src/streams/cluster-streams.js";
import type { Stream } from "../src/streams/stream.js";
import { startJs } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";

type Hook = (account: string, stream: string, local: Stream | undefined, placed: PlacedStream | undefined) => Promise<void>;

interface StandIn {
  host: ReplicaHost;
  hooks: Set<Hook>;
  /** Placements written, in order. */
  updates: PlacedStream[];
  /** Settles asked for by the replicas (a waiting partition's). */
  settles: string[];
  live: string[];
}

function standIn(js: ReplicaHost["js"], live: string[], ends: Record<string, { epoch: number; end: number }>, current: () => PlacedStream): StandIn {
  const hooks = new Set<Hook>();
  const updates: PlacedStream[] = [];
  const settles: string[] = [];
  const directory = {
    isLive: (n: string) => live.includes(n),
    onMembers: () => () => {},
    nodes: () => live.map((name) => ({ name, tags: [] })),
    get: () => undefined,
    update: async (_account: string, _stream: string, change: (p: PlacedStream) => PlacedStream) => {
      updates.push(change(current()));
    },
  };
  const cluster = { self: "b", replicaHooks: hooks, directory, settle: async (_account: string, name: string) => void settles.push(name) } as unknown as ClusterStreams;
  // A replica that does not say what it holds: the request times out (null), as the cluster API's does.
  const request = (node: string, subject: string): Promise<Buffer | null> =>
    subject.endsWith(".ends") ? Promise.resolve(ends[node] !== undefined && live.includes(node) ? Buffer.from(JSON.stringify(ends[node])) : null) : new Promise<Buffer | null>(() => {});
  const host: ReplicaHost = { js, cluster, request, answer: () => {}, holdsLease: () => true };
  return { host, hooks, updates, settles, live };
}

/** Led by "b" in epoch 3 with `replicas`; made a minute ago (before the StreamReplicas that takes it up began). */
function placement(account: string, isr: string[], replicas = ["b", "a", "c"], created = new Date(Date.now() - 60_000)): PlacedStream {
  return { account, stream: "R", leaders: ["b"], tags: [], cluster: "c", subjects: ["r"], origin: "jetstream", config: {}, replicas: [replicas], epochs: [3], isr: [isr], created: created.toISOString() };
}

interface TakeUp {
  /** Memory storage (the default here), or file. */
  file?: boolean;
  placed: (account: string) => PlacedStream;
  live?: string[];
  ends?: Record<string, { epoch: number; end: number }>;
}

/** A node with a stream R of ten messages, taking up partition 0 of `placed` with a fresh StreamReplicas (a node just started). */
async function takeUp(o: TakeUp) {
  const h = await startJs();
  await (await jetstreamManager(h.nc)).streams.add({ name: "R", subjects: ["r"], ...(o.file === true ? {} : { storage: StorageType.Memory }) });
  const js = jetstream(h.nc);
  for (let i = 0; i < 10; i++) await js.publish("r", `m${i}`);
  const jss = h.srv.jetstream!;
  let current = o.placed(jss.account.name);
  const s = standIn(jss, o.live ?? ["a", "b", "c"], o.ends ?? {}, () => current);
  const replicas = new StreamReplicas(s.host);
  const [settle] = s.hooks;
  const run = (next?: PlacedStream): Promise<Error | null> => {
    if (next !== undefined) current = next;
    return settle(jss.account.name, "R", jss.streams.get("R"), current).then(
      () => null,
      (err: Error) => err,
    );
  };
  const settled = await run();
  const stream = jss.streams.get("R")!;
  const close = async (): Promise<void> => {
    await replicas.close();
    await h.close();
  };
  return { ...s, replicas, settled, stream, run, close, account: jss.account.name };
}

const changed = (p: PlacedStream) => ({ leaders: p.leaders, epochs: p.epochs, isr: p.isr });

/** A node that leads R at once ("b", with "a" in sync): its placement is newer than the node, so nothing was lost. */
const ledHere = () => takeUp({ placed: (acc) => placement(acc, ["b", "a"], ["b", "a"], new Date(Date.now() + 1000)) });

/** What the hand-over tests read of partition 0's gate and its replication leader. */
interface GateView {
  handingOver: number;
  refusal(leaderOnly: boolean): { message: string } | null;
  leader: { run: string; removalEnd: number; logEnd: number; lagging(ms: number): string[]; serve(b: Buffer, answer: (b: Buffer) => void): void };
}

test("a memory copy named leader by a placement older than its node hands the partition to a live in-sync replica in the next epoch", async () => {
  const t = await takeUp({ placed: (acc) => placement(acc, ["b", "c", "a"]), live: ["a", "b"] });
  try {
    assert.equal(t.settled, null);
    assert.equal(t.replicas.leads("R"), false);
    // "c" is first in the ISR but not live: "a" is named, and "b" leaves the ISR (it lost what it acknowledged).
    assert.deepEqual(t.updates.map(changed), [{ leaders: ["a"], epochs: [4], isr: [["c", "a"]] }]);
    // Nothing taken as led here meanwhile: no gate (publishes not taken; Kafka answers LEADER_NOT_AVAILABLE).
    assert.equal(t.stream.replicaGate(0), undefined);
  } finally {
    await t.close();
  }
});

test("with no other in-sync replica live it waits without a role, and is settled again until one is", async () => {
  const t = await takeUp({ placed: (acc) => placement(acc, ["b", "a"]), live: ["b"] });
  try {
    assert.equal(t.settled, null);
    assert.equal(t.replicas.leads("R"), false);
    assert.equal(t.updates.length, 0);
    assert.equal(t.stream.replicaGate(0), undefined);
    // "a" comes back: the next check settles the stream again, and that settle hands it over (the copy is still the lost one).
    t.live.push("a");
    await waitUntil(() => t.settles.includes("R"), "the waiting stream settled again");
    assert.equal(await t.run(), null);
    assert.deepEqual(t.updates.map(changed), [{ leaders: ["a"], epochs: [4], isr: [["a"]] }]);
  } finally {
    await t.close();
  }
});

test("as the only in-sync replica, it gives the partition to the most up-to-date copy: latest leader epoch first, then end", async () => {
  // c holds more records, but of epoch 1 only (an old leader's tail); a holds epoch 3's: a is the one.
  const t = await takeUp({ placed: (acc) => placement(acc, ["b"]), ends: { a: { epoch: 3, end: 9 }, c: { epoch: 1, end: 20 } } });
  try {
    assert.deepEqual(t.updates.map(changed), [{ leaders: ["a"], epochs: [4], isr: [["a"]] }]);
    assert.equal(t.replicas.leads("R"), false);
  } finally {
    await t.close();
  }
});

test("as the only in-sync replica, with the same epoch everywhere, the longest copy leads", async () => {
  const t = await takeUp({ placed: (acc) => placement(acc, ["b"]), ends: { a: { epoch: 3, end: 5 }, c: { epoch: 3, end: 20 } } });
  try {
    assert.deepEqual(t.updates.map(changed), [{ leaders: ["c"], epochs: [4], isr: [["c"]] }]);
  } finally {
    await t.close();
  }
});

test("as the only in-sync replica, it waits while a replica is down or does not say what it holds", async () => {
  for (const o of [
    { live: ["a", "b"], ends: { a: { epoch: 3, end: 20 } } },
    { live: ["a", "b", "c"], ends: { a: { epoch: 3, end: 20 } } },
  ]) {
    const t = await takeUp({ placed: (acc) => placement(acc, ["b"]), ...o });
    try {
      assert.equal(t.settled, null);
      assert.equal(t.updates.length, 0);
      assert.equal(t.replicas.leads("R"), false);
    } finally {
      await t.close();
    }
  }
});

test("a placement made after the node started (a stream created since) is led at once", async () => {
  const t = await ledHere();
  try {
    assert.equal(t.replicas.leads("R"), true);
    assert.equal(t.updates.length, 0);
  } finally {
    await t.close();
  }
});

test("a memory stream of one replica scaled up on a running node is led: its copy holds everything acknowledged since the node started", async () => {
  const t = await takeUp({ placed: (acc) => ({ ...placement(acc, ["b"], ["b"]), replicas: undefined, isr: undefined, epochs: undefined }) });
  try {
    assert.equal(t.replicas.leads("R"), false);
    assert.equal(await t.run({ ...placement(t.account, ["b"], ["b", "a", "c"]), epochs: [2] }), null);
    assert.equal(t.replicas.leads("R"), true);
    assert.equal(t.updates.length, 0);
  } finally {
    await t.close();
  }
});

test("a copy on disk fsynced before every acknowledgement leads again in its epoch after a restart", async () => {
  const t = await takeUp({ file: true, placed: (acc) => placement(acc, ["b", "a"]) });
  try {
    assert.equal(t.replicas.leads("R"), true);
    assert.equal(t.updates.length, 0);
  } finally {
    await t.close();
  }
});

test("a hand-over that fails while another of the same partition still waits leaves writes refused: only the last one to end takes them again", async () => {
  // Led here at once; "a" never fetches, so neither hand-over finds it caught up: both fail, each at its own deadline.
  const t = await ledHere();
  try {
    assert.equal(t.replicas.leads("R"), true);
    const gate = t.stream.replicaGate(0)!;
    assert.equal(gate.refusal(true), null, "writes taken before");
    // The directory says where the ISR stands (the stand-in's answers nothing otherwise).
    const placed = placement(t.account, ["b", "a"], ["b", "a"]);
    (t.host.cluster.directory as unknown as { get: () => unknown }).get = () => ({ placement: placed, revision: 1 });
    const slow = t.replicas.handOver("R", 0, performance.now() + 1500, "a").then(
      () => null,
      (err: Error) => err,
    );
    const quick = await t.replicas.handOver("R", 0, performance.now() + 50, "a").then(
      () => null,
      (err: Error) => err,
    );
    assert.match(String(quick), /in time/);
    assert.match(String(gate.refusal(true)?.message), /leadership is moving/, "still refused: the other hand-over waits");
    assert.match(String(await slow), /in time/);
    assert.equal(gate.refusal(true), null, "taken again once neither waits");
    assert.equal(t.updates.length, 0, "no successor named");
  } finally {
    await t.close();
  }
});

test("a hand-over etcd did not answer keeps writes refused until it is known: made again it applies once, or the placement says where the leadership is", async () => {
  const t = await ledHere();
  try {
    assert.equal(t.replicas.leads("R"), true);
    const gate = t.stream.replicaGate(0)! as unknown as GateView;
    const directory = t.host.cluster.directory as unknown as { get: () => unknown; update: (a: string, s: string, change: (p: PlacedStream) => PlacedStream) => Promise<void> };
    // This node's copy of the placement, and its revision, moved on by every change the test makes.
    let current = placement(t.account, ["b", "a"], ["b", "a"]);
    let revision = 10;
    const set = (p: PlacedStream): PlacedStream => ((revision += 1), (current = p));
    directory.get = () => ({ placement: current, revision });
    // "a" has everything: its fetch at the leader's end acknowledges it, so a hand-over finds every in-sync replica caught up.
    const caughtUp = () =>
      new Promise<void>((resolve) => gate.leader.serve(Buffer.from(JSON.stringify({ op: "fetch", follower: "a", from: gate.leader.logEnd, epoch: 3, run: gate.leader.run, ops: gate.leader.removalEnd, maxBytes: 1024, maxWaitMs: 0 })), () => resolve()));
    const failure = (maybeApplied: boolean) => Object.assign(new Error(maybeApplied ? "metadata change sent but not confirmed" : "metadata change refused: etcd does not answer"), { maybeApplied });
    /** Each update call in turn: throws the error given, or hands the change to the function given; whether writes were refused at each call. */
    const script = (steps: Array<Error | ((change: (p: PlacedStream) => PlacedStream) => void)>) => {
      let calls = 0;
      const refused: boolean[] = [];
      directory.update = async (_a, _s, change) => {
        refused.push(/leadership is moving/.test(String(gate.refusal(true)?.message)));
        const step = steps[Math.min(calls++, steps.length - 1)];
        if (step instanceof Error) throw step;
        step(change);
      };
      return refused;
    };
    const handOver = () => t.replicas.handOver("R", 0, performance.now() + 2000, "a").catch((e: Error) => e);

    // Unanswered, then made again: "a" left the ISR meanwhile (a newer copy), this node still leads in epoch 3: no attempt
    // can apply any more, and writes are taken again.
    await caughtUp();
    let refused = script([failure(true), (change) => change(set(placement(t.account, ["b"], ["b", "a"])))]);
    assert.match(String(await handOver()), /changed meanwhile/);
    assert.deepEqual(refused, [true, true]);
    assert.equal(gate.handingOver, 0);
    assert.equal(gate.refusal(true), null, "taken again");

    // Unanswered, then refused by etcd before it was sent, with the copy where it was: still unknown, still refused;
    // made a third time, it applies: the successor is named, once.
    set(placement(t.account, ["b", "a"], ["b", "a"]));
    await caughtUp();
    refused = script([failure(true), failure(false), (change) => void t.updates.push(change(current))]);
    assert.equal(await handOver(), "a");
    assert.deepEqual(refused, [true, true, true]);
    assert.deepEqual(t.updates.map(changed), [{ leaders: ["a"], epochs: [4], isr: [["b", "a"]] }]);
    assert.equal(gate.handingOver, 1, "refused: the successor leads");

    // Unanswered twice, and the copy then shows "a" leading in epoch 4 (an attempt applied): never taken again here.
    set(placement(t.account, ["b", "a"], ["b", "a"]));
    await caughtUp();
    refused = script([failure(true), failure(true), (change) => change(set({ ...current, leaders: ["a"], epochs: [4] }))]);
    assert.match(String(await handOver()), /changed meanwhile/);
    assert.deepEqual(refused, [true, true, true]);
    assert.equal(gate.handingOver, 2, "still refused: the successor may be taking writes");
    assert.equal(t.updates.length, 1);
  } finally {
    await t.close();
  }
});

test("a hand-over asked only if every in-sync replica keeps up (the automatic rebalance's) refuses nothing while one is behind", async () => {
  const t = await ledHere();
  try {
    const gate = t.stream.replicaGate(0)! as unknown as GateView;
    (t.host.cluster.directory as unknown as { get: () => unknown }).get = () => ({ placement: placement(t.account, ["b", "a"], ["b", "a"]), revision: 1 });
    // "a" has never fetched what the leader holds: behind by more than 0 ms as soon as the clock moves.
    await waitUntil(() => gate.leader.lagging(0).includes("a"), "a behind");
    const asked = t.replicas.handOver("R", 0, performance.now() + 2000, "a", 0);
    assert.equal(gate.handingOver, 0, "nothing refused to writers");
    assert.match(String(await asked.catch((e: Error) => e)), /in-sync replica a has not caught up within 0 ms/);
    assert.equal(gate.refusal(true), null);
    assert.equal(t.updates.length, 0);
  } finally {
    await t.close();
  }
});
