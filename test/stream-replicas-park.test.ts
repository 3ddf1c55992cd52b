/**
 * A follower's request that reaches the node the placement names leader
 * before that node has taken the leadership up waits for the role (parked)
 * instead of being refused. Stand-in host as in
 * stream-replicas-step-aside.test.ts: this node is "b", a file stream R.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { StreamReplicas, type ReplicaHost } from "../src/streams/stream-replicas.js";
import type { ClusterStreams, PlacedStream } from "../src/streams/cluster-streams.js";
import type { Stream } from "../src/streams/stream.js";
import { startJs } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";

type Hook = (account: string, stream: string, local: Stream | undefined, placed: PlacedStream | undefined) => Promise<void>;

function placement(account: string, replicated = true, epoch = 3): PlacedStream {
  return {
    account,
    stream: "R",
    leaders: ["b"],
    tags: [],
    cluster: "c",
    subjects: ["r"],
    origin: "jetstream",
    config: {},
    ...(replicated ? { replicas: [["b", "a", "c"]], epochs: [epoch], isr: [["b", "a", "c"]] } : {}),
    created: new Date().toISOString(),
  };
}

async function setUp(replicated = true) {
  const h = await startJs();
  await (await jetstreamManager(h.nc)).streams.add({ name: "R", subjects: ["r"] });
  const js = jetstream(h.nc);
  for (let i = 0; i < 3; i++) await js.publish("r", `m${i}`);
  const jss = h.srv.jetstream!;
  let current: PlacedStream | undefined = placement(jss.account.name, replicated);
  const hooks = new Set<Hook>();
  const answers: Array<{ reply: string; at: number; body: { code?: string; epoch?: number; end?: number } }> = [];
  const directory = {
    isLive: () => true,
    onMembers: () => () => {},
    nodes: () => ["a", "b", "c"].map((name) => ({ name, tags: [] })),
    get: () => (current === undefined ? undefined : { placement: current }),
    update: async () => {},
  };
  const cluster = { self: "b", replicaHooks: hooks, directory, settle: async () => {} } as unknown as ClusterStreams;
  const host: ReplicaHost = {
    js: jss,
    cluster,
    request: () => new Promise<Buffer | null>(() => {}),
    answer: (reply, b) => void answers.push({ reply, at: Date.now(), body: JSON.parse(b.toString()) as never }),
    holdsLease: () => true,
  };
  const replicas = new StreamReplicas(host);
  const [hook] = hooks;
  const settle = (local: boolean, p?: PlacedStream | undefined): Promise<void> => {
    if (p !== undefined || !local) current = p;
    return hook(jss.account.name, "R", local ? jss.streams.get("R") : undefined, current);
  };
  const parked = (): Map<string, unknown[]> => (replicas as unknown as { parked: Map<string, unknown[]> }).parked;
  return { replicas, answers, settle, parked, close: async () => (await replicas.close(), await h.close()) };
}

const endOf = (follower: string, epoch: number): Buffer => Buffer.from(JSON.stringify({ op: "endOf", follower, epoch, of: 0 }));

test("parked requests are served by the role kept, its epoch and follower checks applied, each answered once", async () => {
  const t = await setUp();
  try {
    t.replicas.serve("R.0", endOf("a", 3), "r-good");
    t.replicas.serve("R.0", endOf("c", 2), "r-stale");
    t.replicas.serve("R.0", endOf("x", 3), "r-stranger");
    assert.equal(t.answers.length, 0, "parked, not refused");
    await t.settle(true);
    const by = Object.fromEntries(t.answers.map((a) => [a.reply, a.body]));
    assert.equal(by["r-good"].code, undefined);
    assert.equal(by["r-stale"].code, "fenced");
    assert.equal(by["r-stranger"].code, "bad_request");
    assert.equal(t.answers.length, 3);
    assert.equal(t.parked().size, 0, "nothing left to answer again");
  } finally {
    await t.close();
  }
});

test("a stream deleted while requests are parked: they are refused not_leader at the park's end, and nothing is left", async () => {
  const t = await setUp();
  try {
    t.replicas.serve("R.0", endOf("a", 3), "r1");
    await t.settle(false); // the stream is gone (local and placement undefined): no role is kept
    assert.equal(t.answers.length, 0);
    await waitUntil(() => t.answers.length === 1, "the parked request refused");
    assert.deepEqual(t.answers.map((a) => a.body.code), ["not_leader"]);
    assert.equal(t.parked().size, 0);
  } finally {
    await t.close();
  }
});

test("only a partition written as a role's key is parked: '00', '+0' or '0x0' are refused at once, so PARK_MAX bounds each partition", async () => {
  const t = await setUp();
  try {
    let n = 0;
    for (const spelling of ["00", "000", "+0", "-0", "0x0", " 0"]) for (let i = 0; i < 20; i++) t.replicas.serve(`R.${spelling}`, endOf("a", 3), `r${n++}`);
    assert.equal(t.answers.length, n, "every one refused at once");
    assert.ok(t.answers.every((a) => a.body.code === "not_leader"));
    for (let i = 0; i < 20; i++) t.replicas.serve("R.0", endOf("a", 3), `p${i}`);
    assert.equal(t.parked().get("R/0")?.length, 16, "PARK_MAX held");
    assert.equal(t.answers.length, n + 4, "the rest refused at once");
    await t.settle(true);
    assert.equal(t.parked().size, 0);
  } finally {
    await t.close();
  }
});

test("an unreplicated partition led here refuses a follower's request at once", async () => {
  const t = await setUp(false);
  try {
    await t.settle(true);
    t.replicas.serve("R.0", endOf("a", 3), "r1");
    assert.equal(t.answers[0]?.body.code, "not_leader");
    assert.equal(t.parked().size, 0);
  } finally {
    await t.close();
  }
});
