/**
 * The replication core of one partition (src/streams/replication.ts), in
 * process: a leader and followers on memory and file logs, joined by a fake
 * transport that drops, delays and hands back late answers. Replicas end
 * identical (sequences, gaps, times, Kafka batch bytes, epochs), the high
 * watermark only passes what every ISR member has, a follower from an older
 * epoch truncates what was never acknowledged (KIP-101), removals inside the
 * log reach every follower (shipped, or by reconciliation), and the limits
 * hold.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { nodeFs, type StoreFs } from "../src/util/fs.js";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { FileLog } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { LeaderEpochs } from "../src/store/leader-epochs.js";
import { appendAsync, isForeign, runOf, type MessageLog, type StoredItem } from "../src/store/log.js";
import { appendItems, itemEnd, readCopy } from "../src/streams/copy-batch.js";
import {
  AnswerBudget,
  decodeEndOfAnswer,
  decodeFetchAnswer,
  decodeGapsAnswer,
  encodeRequest,
  FETCH_BYTES,
  MAX_GAP_RANGES,
  MAX_PARKED,
  MAX_REMOVALS,
  MAX_WAITERS,
  REMOVALS_PER_ANSWER,
  ReplicaError,
  ReplicaFollower,
  ReplicaLeader,
  type FetchAnswer,
  type FollowerLog,
  type Removed,
  type ReplicaTransport,
} from "../src/streams/replication.js";
import { rng } from "./helpers/random.js";
import { TOY_FORMAT, toy } from "./helpers/toy-foreign.js";


async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Whether `p` settles within a few event-loop turns (a held fetch does not). */
async function soon(p: Promise<unknown>): Promise<"answered" | "held"> {
  return Promise.race([p.then(() => "answered" as const, () => "answered" as const), turns(50).then(() => "held" as const)]);
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/**
 * A log whose truncateFrom rebuilds it from its prefix in a fresh log (the
 * store's own truncateFrom is built separately): what a follower needs,
 * faithful in what it keeps (sequences, gaps, times, batches whole).
 */
function truncatable(first: MessageLog, fresh: () => Promise<MessageLog>): FollowerLog {
  let cur = first;
  const truncateFrom = async (seq: number): Promise<void> => {
    const old = cur;
    if (old.state().lastSeq < seq) return;
    const copy = await fresh();
    let next = 1;
    for (;;) {
      const items = await readCopy(old, next, 256, 1 << 20);
      const kept = items.filter((it) => (isForeign(it) ? it.firstSeq : it.seq) < seq);
      for (const it of kept) assert.ok(itemEnd(it) <= seq, "truncation inside a batch kept whole");
      if (kept.length === 0) break;
      next = await appendItems(copy, kept, next);
      if (kept.length < items.length) break;
    }
    await old.close();
    cur = copy;
  };
  return new Proxy({} as FollowerLog, {
    get(_, key) {
      if (key === "truncateFrom") return truncateFrom;
      const v = (cur as unknown as Record<string | symbol, unknown>)[key];
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(cur) : v;
    },
  });
}

interface Node {
  name: string;
  log: FollowerLog;
  epochs: LeaderEpochs;
}

/** Temp dirs of the test, removed at its end. */
function scratch(t: { after(fn: () => void): void }): () => string {
  const root = mkdtempSync(join(tmpdir(), "nagare-repl-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return () => join(root, `d${n++}`);
}

async function node(name: string, kind: "file" | "memory", dir: () => string, nodes: Node[]): Promise<Node> {
  const make = async (): Promise<MessageLog> => (kind === "file" ? FileLog.open({ dir: dir(), foreign: toy }) : new MemoryLog({ foreign: toy }));
  const epochs = kind === "file" ? await LeaderEpochs.open(join(dir(), "epochs.json")) : LeaderEpochs.inMemory();
  const n = { name, log: truncatable(await make(), make), epochs };
  nodes.push(n);
  return n;
}

/** A transport to whichever leader it is pointed at, with seeded faults: requests whose answer is lost, answers late by a few turns, and a late answer to an earlier request handed back instead of the right one. */
class Link implements ReplicaTransport {
  private last: Buffer | null = null;
  constructor(
    public leader: ReplicaLeader | null,
    private readonly faults: { drop: number; stale: number; delayTurns: number; seed: number } = { drop: 0, stale: 0, delayTurns: 0, seed: 1 },
    private readonly rand = rng(faults.seed),
  ) {}

  request(body: Buffer): Promise<Buffer | null> {
    const leader = this.leader;
    if (leader === null) return Promise.resolve(null);
    return new Promise((resolve) => {
      if (this.rand() < this.faults.drop) {
        leader.serve(body, () => undefined);
        resolve(null);
        return;
      }
      leader.serve(body, (answer) => {
        const out = this.last !== null && this.rand() < this.faults.stale ? this.last : answer;
        this.last = answer;
        void turns(Math.floor(this.rand() * (this.faults.delayTurns + 1))).then(() => resolve(out));
      });
    });
  }
}

function follow(n: Node, epoch: number, link: ReplicaTransport, errors: Error[] = [], removed: Removed[] = []): ReplicaFollower {
  const f = new ReplicaFollower({ self: n.name, log: n.log, epochs: n.epochs, epoch, transport: link, maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, onError: (e) => errors.push(e), onRemoved: (r) => removed.push(r) });
  f.start();
  return f;
}

const end = (n: Node): number => n.log.state().lastSeq + 1;

/** Appends a message (or a Kafka-like batch) on the leader and tells it: the store's callback is where a stream would. */
async function write(leader: ReplicaLeader, n: Node, i: number, tag = ""): Promise<number> {
  let last: number;
  if (i % 17 === 0) {
    const values = [`${tag}b${i}a`, `${tag}b${i}b`, `${tag}b${i}c`];
    const first = await new Promise<number>((resolve, reject) =>
      n.log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: values.length, bytes: Buffer.from(JSON.stringify(values)) }, (err, seq) => (err ? reject(err) : resolve(seq))),
    );
    last = first + values.length - 1;
  } else {
    last = await appendAsync(n.log, {
      subject: `s.${i % 3}`,
      data: Buffer.from(`${tag}m${i}`),
      key: i % 2 === 0 ? Buffer.from(`k${i}`) : null,
      headers: i % 5 === 0 ? Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${tag}${i}\r\n\r\n`) : null,
    });
  }
  leader.appended(last);
  return last;
}

/** Appends one message on the leader's log and tells the leader, as the stream's callback would: its sequence. */
async function told(leader: ReplicaLeader, n: Node, subject: string): Promise<number> {
  const seq = await appendAsync(n.log, { subject, data: Buffer.from(subject) });
  leader.appended(seq);
  return seq;
}

/** Everything a reader can tell of a log: state, gaps, each stored item with its time and bytes, and its epochs. */
async function picture(n: Node): Promise<unknown> {
  const st = n.log.state();
  const items = await n.log.scanStored(1, { maxMessages: 100_000, maxBytes: 1 << 30 });
  return {
    first: st.firstSeq,
    last: st.lastSeq,
    messages: st.messages,
    deleted: n.log.deletedSequences(10_000),
    epochs: n.epochs.list(),
    items: items.map((m: StoredItem) =>
      isForeign(m)
        ? `batch ${m.firstSeq}+${m.count} @${m.time} ${m.bytes.toString()}`
        : `${m.seq} @${m.time} ${m.subject} k=${m.key?.toString() ?? "-"} h=${m.headers?.toString() ?? "-"} ${m.data.toString()}`,
    ),
  };
}

/** A leader's log as a moved-in one looks: explicit old times, a purged front, gaps inside and at its end, a batch kept whole. */
async function history(n: Node): Promise<void> {
  const copy = (seq: number, time: number, values: string[]): Promise<number> =>
    new Promise((resolve, reject) =>
      n.log.appendCopy(seq, time, runOf(values.map((v) => ({ subject: "h.x", data: Buffer.from(v) }))), (err, s) => (err ? reject(err) : resolve(s))),
    );
  await copy(1, 1_000, ["h1", "h2", "h3"]);
  await copy(4, 2_000, ["h4", "h5", "h6", "h7"]);
  await copy(20, 3_000, ["h20", "h21"]); // 8..19 skipped
  await new Promise<number>((resolve, reject) =>
    n.log.appendCopy(22, 3_000, { format: TOY_FORMAT, subject: "k.t", count: 2, bytes: Buffer.from(JSON.stringify(["x", "y"])) }, (err, s) => (err ? reject(err) : resolve(s))),
  );
  await copy(24, 4_000, ["h24", "h25", "h26"]);
  await n.log.purge({ upTo: 3 });
  assert.equal(await n.log.delete(5), true);
  assert.equal(await n.log.delete(26), true); // the end is a gap: followers must move past it
}

/** A fetch straight to the leader, answered (decoded) or thrown as its ReplicaError. */
function fetchFrom(
  leader: ReplicaLeader,
  follower: string,
  from: number,
  opts: { epoch?: number; maxBytes?: number; maxWaitMs?: number; run?: string; ops?: number } = {},
): Promise<FetchAnswer> {
  const req = encodeRequest({
    op: "fetch",
    follower,
    from,
    epoch: opts.epoch ?? leader.epoch,
    run: opts.run ?? leader.run,
    ops: opts.ops ?? leader.removalEnd,
    maxBytes: opts.maxBytes ?? FETCH_BYTES,
    maxWaitMs: opts.maxWaitMs ?? 0,
  });
  return new Promise((resolve, reject) =>
    leader.serve(req, (b) => {
      try {
        resolve(decodeFetchAnswer(b));
      } catch (err) {
        reject(err);
      }
    }),
  );
}

test("a leader and two followers converge to identical logs through a faulty transport", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "file", dir, nodes);
  const b = await node("b", "memory", dir, nodes);
  const c = await node("c", "file", dir, nodes);
  await history(a);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b", "c"], isr: ["a", "b", "c"] });
  assert.deepEqual(a.epochs.list(), [{ epoch: 1, start: 27 }]);
  const errors: Error[] = [];
  const fb = follow(b, 1, new Link(leader, { drop: 0.15, stale: 0.15, delayTurns: 3, seed: 11 }), errors);
  const fc = follow(c, 1, new Link(leader, { drop: 0.15, stale: 0.15, delayTurns: 3, seed: 12 }), errors);
  // The history first: its last sequence (26) is deleted, so the followers' logs must move past it without a record.
  await until(() => end(b) === 27 && end(c) === 27, "the followers past the leader's deleted tail");
  const early = (x: unknown): unknown => ({ ...(x as object), epochs: undefined });
  assert.deepEqual(early(await picture(b)), early(await picture(a)));
  assert.deepEqual(b.epochs.list(), [], "epoch 1 wrote nothing yet: followers record it with its first write");
  const acked: number[] = [];
  let last = 0;
  for (let i = 1; i <= 150; i++) {
    last = await write(leader, a, i);
    if (i % 10 === 0) assert.equal(leader.whenReplicated(last, (err) => (assert.equal(err, null), acked.push(last))), true);
  }
  await until(() => leader.highWatermark === end(a) && end(b) === end(a) && end(c) === end(a), "both followers at the leader's end");
  await fb.close();
  await fc.close();
  assert.equal(acked.length, 15);
  assert.deepEqual(acked, [...acked].sort((x, y) => x - y));
  assert.ok(errors.some((e) => /late answer/.test(e.message)), "the fault schedule handed back a late answer");
  const want = await picture(a);
  assert.deepEqual(await picture(b), want);
  assert.deepEqual(await picture(c), want);
  assert.equal((want as { first: number }).first, 3);
  leader.close();
  for (const n of nodes) await n.log.close();
});

test("the high watermark passes a sequence only once every ISR member has it; whenReplicated fires in order", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 0, replicas: ["a", "b", "c"], isr: ["a", "b", "c"] });
  for (let i = 1; i <= 5; i++) await write(leader, a, i);
  const fired: number[] = [];
  // Registered out of order: still called in order of sequence. One function for all, each write's context handed to it.
  const onReplicated = (err: Error | null, seq: number): void => {
    assert.equal(err, null);
    fired.push(seq);
  };
  for (const seq of [5, 4, 1, 2, 3]) leader.whenReplicated(seq, onReplicated, seq);
  assert.equal(leader.highWatermark, 1);
  const got = await fetchFrom(leader, "b", 1);
  assert.deepEqual(got.items.map((m) => (isForeign(m) ? m.firstSeq : m.seq)), [1, 2, 3, 4, 5]);
  assert.equal(got.highWatermark, 1);
  await fetchFrom(leader, "b", 6); // b has 1..5
  assert.equal(leader.highWatermark, 1, "c has nothing yet");
  assert.deepEqual(fired, []);
  await fetchFrom(leader, "c", 4); // c has 1..3
  assert.equal(leader.highWatermark, 4);
  assert.deepEqual(fired, [1, 2, 3]);
  // A late copy of c's first fetch acknowledges nothing less.
  await fetchFrom(leader, "c", 1);
  assert.equal(leader.highWatermark, 4);
  await fetchFrom(leader, "c", 6);
  assert.equal(leader.highWatermark, 6);
  assert.deepEqual(fired, [1, 2, 3, 4, 5]);
  // Already replicated: called at once.
  let now = false;
  leader.whenReplicated(3, () => (now = true));
  assert.equal(now, true);
  // Leadership ends: waiters are told.
  const errs: Array<Error | null> = [];
  await write(leader, a, 6);
  leader.whenReplicated(6, (err) => errs.push(err));
  leader.close("a new leader");
  assert.equal(errs.length, 1);
  assert.match(errs[0]!.message, /a new leader/);
  await assert.rejects(fetchFrom(leader, "b", 6), (e: ReplicaError) => e.code === "not_leader");
});

test("a follower that falls behind is reported lagging, leaves the ISR, catches up and is ready to join again", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "memory", dir, nodes);
  const b = await node("b", "memory", dir, nodes);
  const c = await node("c", "file", dir, nodes);
  let now = 1_000_000;
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 3, replicas: ["a", "b", "c"], isr: ["a", "b", "c"], now: () => now });
  const fb = follow(b, 3, new Link(leader));
  let fc = follow(c, 3, new Link(leader));
  for (let i = 1; i <= 20; i++) await write(leader, a, i);
  await until(() => leader.highWatermark === end(a), "HW at the end");
  await fc.close();
  const stuck = end(a);
  let last = 0;
  for (let i = 21; i <= 40; i++) last = await write(leader, a, i);
  let replicated = false;
  leader.whenReplicated(last, () => (replicated = true));
  await until(() => end(b) === end(a), "b caught up");
  assert.equal(leader.highWatermark, stuck, "c holds the high watermark");
  assert.deepEqual(leader.lagging(30_000), []);
  now += 31_000;
  assert.deepEqual(leader.lagging(30_000), ["c"], "b is caught up (at the end), c is not");
  const st = leader.status().find((s) => s.name === "c")!;
  assert.equal(st.lag, end(a) - stuck);
  assert.ok(st.behindMs > 30_000);
  leader.setIsr(["a", "b"]);
  assert.equal(leader.highWatermark, end(a));
  assert.equal(replicated, true);
  assert.deepEqual(leader.readyToJoin(), []);
  fc = follow(c, 3, new Link(leader));
  await until(() => leader.readyToJoin().includes("c"), "c ready to join");
  leader.setIsr(["a", "b", "c"]);
  assert.deepEqual(leader.status().map((s) => s.inSync), [true, true]);
  assert.deepEqual(await picture(c), await picture(a));
  await fb.close();
  await fc.close();
  leader.close();
  for (const n of nodes) await n.log.close();
});

/** A leader (a) of epoch 2 with b following in its ISR and c, a replica out of it that a test drives by hand; five writes replicated. */
async function leaderOfAB(t: { after(fn: () => void): void }): Promise<{ a: Node; b: Node; leader: ReplicaLeader; stop: () => Promise<void> }> {
  const nodes: Node[] = [];
  const dir = scratch(t);
  const a = await node("a", "memory", dir, nodes);
  const b = await node("b", "memory", dir, nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["a", "b"] });
  const fb = follow(b, 2, new Link(leader));
  for (let i = 1; i <= 5; i++) await write(leader, a, i);
  await until(() => leader.highWatermark === end(a), "HW at the end");
  const stop = async (): Promise<void> => {
    await fb.close();
    leader.close();
    for (const n of nodes) await n.log.close();
  };
  return { a, b, leader, stop };
}

test("a follower joining the ISR holds the high watermark from the moment its joining is proposed, not only once etcd agrees (KIP-497)", async (t) => {
  const { a, b, leader, stop } = await leaderOfAB(t);
  // c, out of the ISR, has caught up (a fetch straight to the leader, standing in for one whose next fetch is slow).
  const caughtUp = end(a);
  await fetchFrom(leader, "c", 1);
  await fetchFrom(leader, "c", caughtUp);
  assert.deepEqual(leader.readyToJoin(), ["c"]);
  leader.joining(["c"]);
  // The change is in etcd's hands; meanwhile more is written and b has it.
  let replicated = false;
  const last = await write(leader, a, 6);
  leader.whenReplicated(last, () => (replicated = true));
  await until(() => end(b) === end(a), "b has it");
  await turns(5);
  assert.equal(leader.highWatermark, caughtUp, "c, joining, holds the high watermark where it is");
  assert.equal(replicated, false);
  // Agreed: c is a member, and the watermark moves once c has it.
  leader.setIsr(["a", "b", "c"]);
  assert.equal(leader.highWatermark, caughtUp);
  await fetchFrom(leader, "c", end(a));
  assert.equal(leader.highWatermark, end(a));
  assert.equal(replicated, true);
  // A joining no longer proposed (refused, or no longer ready at the next check) stops counting.
  leader.setIsr(["a", "b"]);
  await fetchFrom(leader, "c", end(a));
  leader.joining(["c"]);
  const more = await write(leader, a, 7);
  await until(() => end(b) === end(a), "b has the next");
  assert.equal(leader.highWatermark, more, "held by c");
  leader.joining([]);
  assert.equal(leader.highWatermark, end(a));
  await stop();
});

test("a follower of a leader alone in its ISR is ready to join once a fetch finds it at the high watermark, though the next write moves the end before any check looks", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "memory", dir, nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 2, replicas: ["a", "b"], isr: ["a"] });
  for (let i = 1; i <= 5; i++) await write(leader, a, i);
  await until(() => leader.highWatermark === end(a), "HW at the end");
  // b fetches at the end (the watermark, the leader being alone), then a write comes before the next check: under steady
  // writes that is every check. Counted from that fetch, b holds the watermark and is found ready.
  await fetchFrom(leader, "b", end(a));
  const at = end(a);
  await write(leader, a, 6);
  assert.deepEqual(leader.readyToJoin(10_000), ["b"]);
  assert.equal(leader.highWatermark, at, "the write waits for b, counted from its fetch at the watermark");
  await fetchFrom(leader, "b", end(a));
  assert.equal(leader.highWatermark, end(a));
  leader.close();
  for (const n of nodes) await n.log.close();
});

test("a joiner that stops fetching is lagging and no longer ready: it cannot hold the high watermark for good", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "memory", dir, nodes);
  const b = await node("b", "memory", dir, nodes);
  let now = 1_000_000;
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["a", "b"], now: () => now });
  const fb = follow(b, 2, new Link(leader));
  for (let i = 1; i <= 5; i++) await write(leader, a, i);
  await until(() => leader.highWatermark === end(a), "HW at the end");
  await fetchFrom(leader, "c", end(a));
  assert.deepEqual(leader.readyToJoin(10_000), ["c"]);
  leader.joining(["c"]);
  await write(leader, a, 6);
  await until(() => end(b) === end(a), "b has it");
  assert.equal(leader.highWatermark, end(a) - 1, "held by c");
  assert.deepEqual(leader.lagging(10_000), []);
  now += 10_001;
  assert.deepEqual(leader.readyToJoin(10_000), [], "held there by itself, c is not ready");
  assert.deepEqual(leader.lagging(10_000), ["c"], "a joiner behind is lagging as a member is");
  leader.joining(leader.readyToJoin(10_000));
  assert.equal(leader.highWatermark, end(a));
  await fb.close();
  leader.close();
  for (const n of nodes) await n.log.close();
});

test("a follower that starts over (a restart) counts as having nothing until it fetches: its last incarnation's position does not let it join", async (t) => {
  const { a, leader, stop } = await leaderOfAB(t);
  await fetchFrom(leader, "c", end(a));
  assert.deepEqual(leader.readyToJoin(), ["c"]);
  // c comes back from a restart with less than it had fetched (a torn tail cut on recovery): its first request starts over.
  await gapsFrom(leader, "c", 1, 3);
  assert.deepEqual(leader.readyToJoin(), [], "not ready on what its last incarnation said");
  assert.equal(leader.status().find((s) => s.name === "c")!.acked, 0);
  await fetchFrom(leader, "c", end(a));
  assert.deepEqual(leader.readyToJoin(), ["c"]);
  // The same for a start with a truncation (endOf).
  leader.serve(encodeRequest({ op: "endOf", follower: "c", epoch: 2, of: 2 }), () => undefined);
  assert.deepEqual(leader.readyToJoin(), []);
  await stop();
});

/** Leader a (file) and followers b (file) and c (memory) in epoch 1, all in sync, with 1..`count` written and replicated; the followers closed. */
async function writtenToThree(t: { after(fn: () => void): void }, count: number): Promise<{ nodes: Node[]; a: Node; b: Node; c: Node; la: ReplicaLeader }> {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "file", dir, nodes);
  const b = await node("b", "file", dir, nodes);
  const c = await node("c", "memory", dir, nodes);
  const la = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b", "c"], isr: ["a", "b", "c"] });
  const fb = follow(b, 1, new Link(la));
  const fc = follow(c, 1, new Link(la));
  let last = 0;
  for (let i = 1; i <= count; i++) last = await write(la, a, i);
  await until(() => la.highWatermark === last + 1, `1..${count} on b and c`);
  await fb.close();
  await fc.close();
  return { nodes, a, b, c, la };
}

test("KIP-101: a returning replica truncates what an older epoch wrote and nobody acknowledged, and ends identical to the new leader", async (t) => {
  const { nodes, a, b, c, la } = await writtenToThree(t, 10);
  // a goes on alone: 11..15 are never on the other replicas, so never acknowledged.
  const lost: Array<Error | null> = [];
  for (let i = 11; i <= 15; i++) la.whenReplicated(await write(la, a, i, "old-"), (err) => lost.push(err));
  assert.equal(end(a), 16);
  // a dies; b leads in epoch 2 with c; its writes take 11.. again.
  la.close("leader a lost its lease");
  assert.equal(lost.length, 5);
  assert.ok(lost.every((e) => e !== null));
  const lb = await ReplicaLeader.create({ self: "b", log: b.log, epochs: b.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["b", "c"], highWatermark: 11 });
  const fc2 = follow(c, 2, new Link(lb));
  for (let i = 11; i <= 13; i++) await write(lb, b, i, "new-");
  await until(() => lb.highWatermark === end(b), "c follows b");
  // a returns as b's follower: asks where epoch 1 ends at b (11), cuts 11..15, fetches epoch 2's writes.
  const removed: Removed[] = [];
  const fa = follow(a, 2, new Link(lb), [], removed);
  await until(() => end(a) === end(b) && fa.rounds > 0, "a follows b");
  // The cut is told (the node logs it): five messages of 11..15.
  assert.deepEqual(removed.map((r) => [r.how, r.from, r.to, r.messages]), [["truncated", 11, 15, 5]]);
  await fa.close();
  await fc2.close();
  const want = await picture(b);
  assert.deepEqual((want as { epochs: unknown }).epochs, [
    { epoch: 1, start: 1 },
    { epoch: 2, start: 11 },
  ]);
  assert.deepEqual(await picture(a), want);
  assert.deepEqual(await picture(c), want);
  assert.ok(!JSON.stringify(await picture(a)).includes("old-"));
  lb.close();
  for (const n of nodes) await n.log.close();
});

test("a follower tells what it is about to cut before it cuts: a cut that fails is still told, so what was to go is forgotten (a stream's dedup ids)", async (t) => {
  const { nodes, a, b, c, la } = await writtenToThree(t, 10);
  for (let i = 11; i <= 15; i++) await write(la, a, i, "old-");
  la.close("leader a lost its lease");
  const lb = await ReplicaLeader.create({ self: "b", log: b.log, epochs: b.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["b", "c"], highWatermark: 11 });
  const fc2 = follow(c, 2, new Link(lb));
  for (let i = 11; i <= 13; i++) await write(lb, b, i, "new-");
  await until(() => lb.highWatermark === end(b), "c follows b");
  // a returns; its disk refuses its first cut (a failed truncation that a reopen may finish later, unseen).
  const told: string[] = [];
  let refuse = true;
  const log = new Proxy(a.log, {
    get(target, key) {
      if (key === "truncateFrom" && refuse) {
        return async () => {
          refuse = false;
          told.push("the cut failed");
          throw new Error("EIO: i/o error (injected)");
        };
      }
      const v = (target as unknown as Record<string | symbol, unknown>)[key];
      return typeof v === "function" ? (v as (...args: unknown[]) => unknown).bind(target) : v;
    },
  });
  const fa = new ReplicaFollower({
    self: "a",
    log,
    epochs: a.epochs,
    epoch: 2,
    transport: new Link(lb),
    maxWaitMs: 200,
    backoffMs: { min: 1, max: 10 },
    onCutting: (from) => void told.push(`cutting from ${from}`),
    onCut: (from) => void told.push(`cut from ${from}`),
  });
  fa.start();
  await until(() => end(a) === end(b) && fa.rounds > 0, "a follows b");
  assert.deepEqual(told, ["cutting from 11", "the cut failed", "cutting from 11", "cut from 11"]);
  await fa.close();
  await fc2.close();
  lb.close();
  for (const n of nodes) await n.log.close();
});

test("KIP-207: a new leader's high watermark counts as current only once it reaches the log end its leadership began with", async (t) => {
  const { nodes, b, c, la } = await writtenToThree(t, 10);
  la.close("leader a lost its lease");
  // b takes over with an older watermark than a showed (its last checkpoint): readers could see it go back.
  const lb = await ReplicaLeader.create({ self: "b", log: b.log, epochs: b.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["b", "c"], highWatermark: 5 });
  assert.equal(lb.highWatermark, 5);
  assert.equal(lb.highWatermarkCurrent, false);
  const fc = follow(c, 2, new Link(lb));
  await until(() => lb.highWatermarkCurrent, "c to fetch from b");
  assert.equal(lb.highWatermark, end(b));
  await fc.close();
  lb.close();
  // Alone in its ISR, a leader's watermark is its log end at once.
  const alone = await ReplicaLeader.create({ self: "b", log: b.log, epochs: b.epochs, epoch: 3, replicas: ["a", "b", "c"], isr: ["b"], highWatermark: 5 });
  assert.equal(alone.highWatermarkCurrent, true);
  alone.close();
  for (const n of nodes) await n.log.close();
});

test("KIP-279: a replica that never saw the leader's epoch asks again about an older one and cuts where they agree", async () => {
  const nodes: Node[] = [];
  const l = await node("l", "memory", () => "", nodes);
  const f = await node("f", "memory", () => "", nodes);
  const copy = (n: Node, seq: number, time: number, data: string): Promise<number> =>
    new Promise((resolve, reject) => n.log.appendCopy(seq, time, runOf([{ subject: "x", data: Buffer.from(data) }]), (err, s) => (err ? reject(err) : resolve(s))));
  // The leader: epoch 1 wrote 1..39, epoch 2 40..59, epoch 4 60..70.
  for (let seq = 1; seq <= 70; seq++) await copy(l, seq, 1000 + seq, `L${seq}`);
  for (const [epoch, start] of [[1, 1], [2, 40], [4, 60]]) await l.epochs.assign(epoch, start);
  // The replica: the same 1..39 in epoch 1, then 40..49 of its own in epoch 1 and 50..55 in epoch 3, which the leader never had.
  for (let seq = 1; seq <= 39; seq++) await copy(f, seq, 1000 + seq, `L${seq}`);
  for (let seq = 40; seq <= 55; seq++) await copy(f, seq, 5000 + seq, `F${seq}`);
  for (const [epoch, start] of [[1, 1], [3, 50]]) await f.epochs.assign(epoch, start);
  const leader = await ReplicaLeader.create({ self: "l", log: l.log, epochs: l.epochs, epoch: 4, replicas: ["l", "f"], isr: ["l"] });
  const asked: number[] = [];
  const link = new Link(leader);
  const transport: ReplicaTransport = {
    request(body) {
      const req = JSON.parse(body.toString()) as { op: string; of?: number };
      if (req.op === "endOf") asked.push(req.of!);
      return link.request(body);
    },
  };
  const errors: Error[] = [];
  const fol = new ReplicaFollower({ self: "f", log: f.log, epochs: f.epochs, epoch: 4, transport, maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, onError: (e) => errors.push(e) });
  fol.start();
  await until(() => end(f) === end(l) && fol.rounds > 0, "the replica at the leader's end");
  await fol.close();
  // endOf(3) at the leader is epoch 2 (ends at 60), which the replica lacks: it asks about epoch 1 (ends at 40) and cuts there.
  assert.deepEqual(asked, [3, 1]);
  assert.deepEqual(errors, []);
  assert.deepEqual(await picture(f), await picture(l));
  leader.close();
});

test("leaders change under writes and faults: every acknowledged write survives and the replicas end identical", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const all = [await node("a", "file", dir, nodes), await node("b", "memory", dir, nodes), await node("c", "file", dir, nodes)];
  const names = all.map((n) => n.name);
  const rand = rng(7);
  const acknowledged = new Map<number, string>();
  let leaderNode = all[0];
  let hw = 1;
  let i = 0;
  for (let epoch = 1; epoch <= 4; epoch++) {
    const leader = await ReplicaLeader.create({ self: leaderNode.name, log: leaderNode.log, epochs: leaderNode.epochs, epoch, replicas: names, isr: names, highWatermark: hw });
    const followers = all
      .filter((n) => n !== leaderNode)
      .map((n, k) => ({ n, f: follow(n, epoch, new Link(leader, { drop: 0.1, stale: 0.1, delayTurns: 2, seed: epoch * 10 + k })) }));
    const acks: Array<Promise<void>> = [];
    for (let k = 0; k < 30; k++) {
      const tag = `e${epoch}-`;
      const seq = await write(leader, leaderNode, ++i, tag);
      const item = (await leaderNode.log.get(seq))!;
      acks.push(new Promise((resolve) => leader.whenReplicated(seq, (err) => (err === null && acknowledged.set(seq, `${item.time} ${item.data.toString()}`), resolve()))));
    }
    await until(() => leader.highWatermark >= end(leaderNode) - 5, "most of this epoch replicated");
    // The followers stop at different points, the leader writes a tail nobody may have, then it is gone.
    await followers[0].f.close();
    for (let k = 0; k < 4; k++) await write(leader, leaderNode, ++i, `tail${epoch}-`);
    await turns(Math.floor(rand() * 20));
    await followers[1].f.close();
    hw = leader.highWatermark;
    leader.close("leadership moves");
    await Promise.all(acks);
    // Any ISR member has everything acknowledged: the next leader is one of the followers.
    leaderNode = followers[Math.floor(rand() * 2)].n;
  }
  const last = await ReplicaLeader.create({ self: leaderNode.name, log: leaderNode.log, epochs: leaderNode.epochs, epoch: 5, replicas: names, isr: names, highWatermark: hw });
  const fs = all.filter((n) => n !== leaderNode).map((n) => follow(n, 5, new Link(last)));
  for (let k = 0; k < 5; k++) await write(last, leaderNode, ++i, "e5-");
  await until(() => last.highWatermark === end(leaderNode) && all.every((n) => end(n) === end(leaderNode)), "all at the last leader's end");
  for (const f of fs) await f.close();
  const want = await picture(leaderNode);
  for (const n of all) assert.deepEqual(await picture(n), want, `${n.name} equals leader ${leaderNode.name}`);
  assert.ok(acknowledged.size > 100);
  for (const [seq, what] of acknowledged) {
    const m = (await leaderNode.log.get(seq))!;
    assert.equal(`${m.time} ${m.data.toString()}`, what, `acknowledged ${seq} kept`);
  }
  last.close();
  for (const n of nodes) await n.log.close();
});

test("a fetch with nothing new waits and is answered as soon as an append lands; held fetches are bounded", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const many = Array.from({ length: MAX_PARKED + 2 }, (_, k) => `f${k}`);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", ...many], isr: ["a"] });
  await write(leader, a, 1);
  const held = fetchFrom(leader, "f0", 2, { maxWaitMs: 60_000 });
  assert.equal(await soon(held), "held", "held while there is nothing new");
  const seq = await write(leader, a, 2);
  assert.equal(await soon(held), "answered", "answered when the append lands, not at max wait");
  assert.deepEqual((await held).items.map((m) => (isForeign(m) ? m.firstSeq : m.seq)), [seq]);
  // MAX_PARKED held at once; the next is answered at once, empty.
  const parked = many.slice(0, MAX_PARKED).map((f) => fetchFrom(leader, f, 3, { maxWaitMs: 60_000 }));
  assert.equal(await soon(parked[1]), "held");
  const extra = fetchFrom(leader, many[MAX_PARKED], 3, { maxWaitMs: 60_000 });
  assert.equal(await soon(extra), "answered");
  assert.equal((await extra).items.length, 0);
  // A follower's newer fetch answers its older held one at once.
  void fetchFrom(leader, many[0], 3, { maxWaitMs: 0 });
  assert.equal(await soon(parked[0]), "answered");
  assert.equal((await parked[0]).items.length, 0);
  leader.close("closing");
  for (const p of parked.slice(1)) await assert.rejects(p, (e: ReplicaError) => e.code === "not_leader");
  await a.log.close();
});

test("answers in flight to one follower node are bounded across its leaders: past the budget a fetch waits until an earlier answer is fetched past", async () => {
  const nodes: Node[] = [];
  let now = 1_000_000;
  const budget = new AnswerBudget(100_000);
  const leaders: ReplicaLeader[] = [];
  for (const name of ["a0", "a1", "a2", "a3"]) {
    const n = await node(name, "memory", () => "", nodes);
    const leader = await ReplicaLeader.create({ self: name, log: n.log, epochs: n.epochs, epoch: 1, replicas: [name, "b"], isr: [name, "b"], answerBudget: budget, now: () => now });
    for (let i = 0; i < 30; i++) leader.appended(await appendAsync(n.log, { subject: "s", data: Buffer.alloc(10_000, 0x61 + i) }));
    leaders.push(leader);
  }
  const raw = (leader: ReplicaLeader, from: number): Promise<Buffer> =>
    // Behind: a wait as a follower's (a fetch waiting for room is answered empty at it); at the end: none (not held).
    new Promise((resolve) => leader.serve(encodeRequest({ op: "fetch", follower: "b", from, epoch: 1, run: leader.run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs: from < leader.logEnd ? 5000 : 0 }), resolve));
  // The first answer is cut to the budget, not FETCH_BYTES; it counts until b fetches past it.
  const first = await raw(leaders[0], 1);
  assert.ok(first.length <= 100_000, `answer of ${first.length} bytes`);
  assert.equal(budget.inFlight("b"), first.length);
  // An answer is whole items: one past the room left waits while anything else is counted.
  const second = raw(leaders[1], 1);
  let third = raw(leaders[2], 1);
  const fourth = raw(leaders[3], 1);
  assert.equal(await soon(second), "held", "an item past the room waits");
  assert.equal(await soon(third), "held");
  assert.equal(await soon(fourth), "held");
  assert.equal(budget.inFlight("b"), first.length, "nothing counted for what waits");
  // b asking again and again (its requests timing out) keeps one place per partition in the queue, not one per request.
  // (A fetch replaced by a newer one of its follower is never answered: that follower gave it up.)
  for (let k = 0; k < 100; k++) third = raw(leaders[2], 1);
  await turns(5);
  assert.equal(budget.waitingFor("b"), 3);
  // A leadership that ends answers its waiting fetch not_leader.
  leaders[3].close("closing");
  await assert.rejects(fourth.then((x) => decodeFetchAnswer(x)), (e: ReplicaError) => e.code === "not_leader");
  // b fetches past the first answer (at a0's end: its answer is empty, nothing to wait for): the first waiting fetch goes,
  // the next waits again behind it.
  assert.equal(decodeFetchAnswer(await raw(leaders[0], 31)).items.length, 0);
  assert.equal(await soon(second), "answered", "answered when room is given back");
  const secondLength = (await second).length;
  assert.ok(decodeFetchAnswer(await second).items.length > 0);
  assert.equal(await soon(third), "held");
  assert.equal(budget.inFlight("b"), secondLength);
  // Answers b never fetches past (its copy stuck) stop counting once older than a follower waits for one: the waiting
  // fetch goes then.
  now += 7_001;
  for (const l of leaders) l.forgetStaleAnswers();
  assert.equal(await soon(third), "answered");
  assert.equal(budget.inFlight("b"), (await third).length, "only the answer just sent is counted");
  for (const l of leaders) l.close();
  for (const n of nodes) await n.log.close();
});

test("a leader that lends its answers encodes each into one reused buffer, with the bytes and the budget count a fresh answer has", async () => {
  const nodes: Node[] = [];
  const budget = new AnswerBudget(1024 * 1024);
  const n = await node("a", "memory", () => "", nodes);
  const opts = { self: "a", log: n.log, epochs: n.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] };
  const lending = await ReplicaLeader.create({ ...opts, answerBudget: budget, lendAnswers: true });
  const fresh = await ReplicaLeader.create(opts);
  for (let i = 0; i < 20; i++) {
    const seq = await appendAsync(n.log, { subject: `s.${i}`, data: Buffer.alloc(3000 + i, 0x61 + i) });
    lending.appended(seq);
    fresh.appended(seq);
  }
  // A lent buffer is valid only during the callback: what a follower (or route) keeps, it copies there.
  const ask = (leader: ReplicaLeader, from: number): Promise<{ copy: Buffer; lent: Buffer }> =>
    new Promise((resolve) =>
      leader.serve(encodeRequest({ op: "fetch", follower: "b", from, epoch: 1, run: leader.run, ops: 0, maxBytes: 16 * 1024, maxWaitMs: 0 }), (b) => resolve({ copy: Buffer.from(b), lent: b })),
    );
  const first = await ask(lending, 1);
  const second = await ask(lending, decodeFetchAnswer(first.copy).next);
  assert.equal(first.lent.buffer, second.lent.buffer, "one buffer for every answer");
  assert.notDeepEqual(first.lent, first.copy, "the first answer's bytes were overwritten by the second");
  for (const [from, got] of [[1, first.copy], [decodeFetchAnswer(first.copy).next, second.copy]] as const) {
    const want = (await ask(fresh, from)).copy;
    const a = decodeFetchAnswer(got);
    const w = decodeFetchAnswer(want);
    assert.deepEqual(a.items.map((m) => ["seq" in m ? m.seq : -1, m.subject]), w.items.map((m) => ["seq" in m ? m.seq : -1, m.subject]));
    assert.deepEqual({ ...a, items: [], run: "" }, { ...w, items: [], run: "" });
    assert.equal(got.length, want.length);
  }
  // Counted in the budget at its encoded size, as a fresh buffer's length was.
  assert.equal(budget.inFlight("b"), second.copy.length);
  lending.close();
  fresh.close();
  for (const x of nodes) await x.log.close();
});

test("a follower gives an answer back only once its file log has stored it: an answer poisoned when given back never reaches the copy", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const l = await node("l", "file", dir, nodes);
  const f = await node("f", "file", dir, nodes);
  const leader = await ReplicaLeader.create({ self: "l", log: l.log, epochs: l.epochs, epoch: 1, replicas: ["l", "f"], isr: ["l", "f"] });
  const link = new Link(leader);
  const given = new Set<Buffer>();
  let released = 0;
  const transport: ReplicaTransport = {
    request: async (body, ms) => {
      const b = await link.request(body);
      if (b === null) return null;
      const own = Buffer.from(b);
      given.add(own);
      return own;
    },
    release: (b) => {
      assert.ok(given.delete(b), "only an answer the transport gave, once");
      // Reused at once, as a pool would: a log still reading it would store these bytes.
      b.fill(0xff);
      released++;
    },
  };
  const errors: Error[] = [];
  const fol = new ReplicaFollower({ self: "f", log: f.log, epochs: f.epochs, epoch: 1, transport, maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, onError: (e) => errors.push(e) });
  fol.start();
  for (let i = 1; i <= 120; i++) await write(leader, l, i);
  await until(() => end(f) === end(l), "the copy at the leader's end");
  await fol.close();
  assert.deepEqual(errors, []);
  assert.ok(released > 0, "answers given back");
  assert.deepEqual(await picture(f), await picture(l));
  leader.close();
});

test("whole items cannot break the answer budget: with one large message in each of 8 partitions, one answer at a time goes to the follower", async () => {
  const nodes: Node[] = [];
  const budget = new AnswerBudget(1024 * 1024);
  const leaders: ReplicaLeader[] = [];
  for (let i = 0; i < 8; i++) {
    const n = await node(`L${i}`, "memory", () => "", nodes);
    const leader = await ReplicaLeader.create({ self: `L${i}`, log: n.log, epochs: n.epochs, epoch: 1, replicas: [`L${i}`, "b"], isr: [`L${i}`, "b"], answerBudget: budget });
    leader.appended(await appendAsync(n.log, { subject: "s", data: Buffer.alloc(900_000, i) }));
    leaders.push(leader);
  }
  const asked = leaders.map((l) => new Promise<Buffer>((resolve) => l.serve(encodeRequest({ op: "fetch", follower: "b", from: 1, epoch: 1, run: l.run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs: 5000 }), resolve)));
  const states = await Promise.all(asked.map((p) => soon(p)));
  assert.equal(states.filter((x) => x === "answered").length, 1, "one 900 KB answer fits a 1 MiB budget, the others wait");
  assert.ok(budget.inFlight("b") <= 1024 * 1024, `${budget.inFlight("b")} bytes in flight`);
  // b fetches past each answer in turn: every partition is answered, one at a time.
  const done = new Set<number>();
  for (let round = 0; round < 8; round++) {
    const i = (await Promise.all(asked.map((p) => soon(p)))).findIndex((x, k) => x === "answered" && !done.has(k));
    assert.ok(i >= 0, `round ${round}: an answer went`);
    done.add(i);
    assert.ok(budget.inFlight("b") <= 1024 * 1024);
    await new Promise<Buffer>((resolve) => leaders[i].serve(encodeRequest({ op: "fetch", follower: "b", from: 2, epoch: 1, run: leaders[i].run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs: 0 }), resolve));
  }
  assert.equal(done.size, 8);
  for (const l of leaders) l.close();
  for (const n of nodes) await n.log.close();
});

test("a fetch waiting for room in the answer budget is answered empty at its wait, before its follower would give it up", async () => {
  const nodes: Node[] = [];
  const budget = new AnswerBudget(64 * 1024);
  const made = await Promise.all(["p", "q"].map(async (name) => {
    const n = await node(name, "memory", () => "", nodes);
    const leader = await ReplicaLeader.create({ self: name, log: n.log, epochs: n.epochs, epoch: 1, replicas: [name, "b"], isr: [name, "b"], answerBudget: budget });
    for (let i = 0; i < 10; i++) leader.appended(await appendAsync(n.log, { subject: "s", data: Buffer.alloc(10_000, 1) }));
    return leader;
  }));
  const ask = (leader: ReplicaLeader, maxWaitMs: number) =>
    new Promise<Buffer>((resolve) => leader.serve(encodeRequest({ op: "fetch", follower: "b", from: 1, epoch: 1, run: leader.run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs }), resolve)).then((b) => decodeFetchAnswer(b));
  assert.ok((await ask(made[0], 5000)).items.length > 0, "the first answer fills the budget");
  const started = Date.now();
  // The leader's timers do not hold a process open (a server's sockets do): this test's interval does.
  const keep = setInterval(() => undefined, 1000);
  const waited = await ask(made[1], 200);
  clearInterval(keep);
  assert.deepEqual([waited.items.length, waited.next], [0, 1], "answered empty: the follower asks again from where it was");
  assert.ok(Date.now() - started >= 150, "after its wait, not at once");
  for (const l of made) l.close();
  for (const n of nodes) await n.log.close();
});

test("the answer budget neither cuts answers short (a log of small messages, then large ones) nor passes a large answer for good", async () => {
  const nodes: Node[] = [];
  const fetchOf = (leader: ReplicaLeader, from: number): Promise<Buffer> =>
    // Behind: a wait as a follower's (a fetch waiting for room is answered empty at it); at the end: none (not held).
    new Promise((resolve) => leader.serve(encodeRequest({ op: "fetch", follower: "b", from, epoch: 1, run: leader.run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs: from < leader.logEnd ? 5000 : 0 }), resolve));
  const leaderWith = async (name: string, budget: AnswerBudget): Promise<{ leader: ReplicaLeader; log: MessageLog }> => {
    const n = await node(name, "memory", () => "", nodes);
    return { leader: await ReplicaLeader.create({ self: name, log: n.log, epochs: n.epochs, epoch: 1, replicas: [name, "b"], isr: [name, "b"], answerBudget: budget }), log: n.log };
  };
  const put = async (l: { leader: ReplicaLeader; log: MessageLog }, count: number, size: number): Promise<void> => {
    for (let i = 0; i < count; i++) l.leader.appended(await appendAsync(l.log, { subject: "s", data: Buffer.alloc(size, 0x61) }));
  };
  // 2,000 messages of 50 bytes, then 64 of 8 KB: the log's mean size says little of what is asked for; two answers carry it.
  const s = await leaderWith("s", new AnswerBudget(16 * 1024 * 1024));
  await put(s, 2000, 50);
  let from = s.leader.logEnd;
  await put(s, 64, 8000);
  let answers = 0;
  while (from < s.leader.logEnd) {
    from = decodeFetchAnswer(await fetchOf(s.leader, from)).next;
    answers++;
  }
  assert.ok(answers <= 3, `${answers} answers for 512 KB`);
  // A 900 KB answer waiting in a 1 MiB budget while four partitions catch up 2 MB each: it goes within a few of their answers.
  const budget = new AnswerBudget(1024 * 1024);
  const others = await Promise.all([0, 1, 2, 3].map((i) => leaderWith(`o${i}`, budget)));
  for (const o of others) await put(o, 200, 10_000);
  const big = await leaderWith("big", budget);
  await put(big, 1, 900_000);
  let othersAnswered = 0;
  let bigAfter = -1;
  const catchingUp = others.map(async ({ leader }) => {
    let at = 1;
    while (at < leader.logEnd) {
      at = decodeFetchAnswer(await fetchOf(leader, at)).next;
      othersAnswered++;
      await turns(1);
    }
    await fetchOf(leader, at); // b has the last answer
  });
  await turns(3);
  const bigAnswered = fetchOf(big.leader, 1).then(() => (bigAfter = othersAnswered));
  await Promise.all([bigAnswered, ...catchingUp]);
  assert.ok(bigAfter >= 0 && bigAfter < 20, `the large answer went after ${bigAfter} of ${othersAnswered} others`);
  for (const l of [s, big, ...others]) l.leader.close();
  for (const n of nodes) await n.log.close();
});

test("an item larger than the follower's route takes (its max_payload below the leader's) is refused with a clear error, not sent", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  leader.appended(await appendAsync(a.log, { subject: "s", data: Buffer.alloc(200_000, 1) }));
  const ask = (maxPayload?: number) =>
    new Promise<Buffer>((resolve) =>
      leader.serve(encodeRequest({ op: "fetch", follower: "b", from: 1, epoch: 1, run: leader.run, ops: 0, maxBytes: 16 * 1024, maxWaitMs: 0, ...(maxPayload !== undefined ? { maxPayload } : {}) }), resolve),
    ).then((b) => decodeFetchAnswer(b));
  // 200 KB past a 16 KiB max_payload and the route's 64 KiB of slack: its route would close on it.
  await assert.rejects(ask(16 * 1024), (e: ReplicaError) => e.code === "storage" && /max_payload \(16384\)/.test(e.message));
  // Within what the route takes, or from a follower that names none (an older version): sent whole, as before.
  assert.equal((await ask(1024 * 1024)).items.length, 1);
  assert.equal((await ask()).items.length, 1);
  leader.close();
  await a.log.close();
});

test("an answer cut before a large item is judged by what it carries: the item left out does not count against the follower's max_payload", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  // A small item, then one near max_payload (a whole Kafka batch of 1 MB): together past FETCH_BYTES, so the answer stops
  // after the first. Counted with the second, it was "past the follower's max_payload", and the follower never got either.
  await appendAsync(a.log, { subject: "s", data: Buffer.alloc(200_000, 1) });
  leader.appended(await appendAsync(a.log, { subject: "s", data: Buffer.alloc(1_000_000, 2) }));
  const ask = (from: number) =>
    new Promise<Buffer>((resolve) =>
      leader.serve(encodeRequest({ op: "fetch", follower: "b", from, epoch: 1, run: leader.run, ops: 0, maxBytes: FETCH_BYTES, maxWaitMs: 0, maxPayload: 1024 * 1024 }), resolve),
    ).then((b) => decodeFetchAnswer(b));
  const first = await ask(1);
  assert.deepEqual([first.items.length, first.next], [1, 2]);
  const second = await ask(2);
  assert.deepEqual([second.items.length, second.next], [1, 3]);
  leader.close();
  await a.log.close();
});

test("limits: an answer stays within FETCH_BYTES however much is asked; waiters are bounded; bad requests get errors", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  const big = Buffer.alloc(10_000, 0x61);
  for (let i = 0; i < 100; i++) leader.appended(await appendAsync(a.log, { subject: "s", data: big }));
  let from = 1;
  let rounds = 0;
  while (from < end(a)) {
    const req = encodeRequest({ op: "fetch", follower: "b", from, epoch: 1, run: leader.run, ops: 0, maxBytes: 1e12, maxWaitMs: 0 });
    const raw = await new Promise<Buffer>((resolve) => leader.serve(req, resolve));
    assert.ok(raw.length <= FETCH_BYTES, `answer of ${raw.length} bytes`);
    const got = decodeFetchAnswer(raw);
    assert.ok(got.items.length > 0);
    from = got.next;
    rounds++;
  }
  assert.ok(rounds >= 4);
  const one = await fetchFrom(leader, "b", 1, { maxBytes: 1 });
  assert.equal(one.items.length, 1, "at least one item, however small the bound");
  // Waiters: MAX_WAITERS at most (b never acknowledges).
  let refused = 0;
  for (let k = 0; k <= MAX_WAITERS; k++) if (!leader.whenReplicated(100, () => undefined)) refused++;
  assert.equal(refused, 1);
  // Bad requests: each its error, nothing thrown.
  const ask = (body: Buffer): Promise<unknown> =>
    new Promise((resolve, reject) =>
      leader.serve(body, (b) => {
        try {
          resolve(decodeFetchAnswer(b));
        } catch (err) {
          reject(err);
        }
      }),
    );
  const code = (c: string) => (e: ReplicaError) => e instanceof ReplicaError && e.code === c;
  await assert.rejects(ask(Buffer.from("\x00garbage")), code("bad_request"));
  await assert.rejects(ask(encodeRequest({ op: "fetch", follower: "zz", from: 1, epoch: 1, run: leader.run, ops: 0, maxBytes: 1, maxWaitMs: 0 })), code("bad_request"));
  await assert.rejects(fetchFrom(leader, "b", 1, { epoch: 0 }), code("fenced"));
  await assert.rejects(fetchFrom(leader, "b", 1, { epoch: 2 }), code("unknown_epoch"));
  await assert.rejects(fetchFrom(leader, "b", end(a) + 1), code("out_of_range"));
  // Malformed answers are errors, not crashes.
  const good = await new Promise<Buffer>((resolve) => leader.serve(encodeRequest({ op: "fetch", follower: "b", from: 1, epoch: 1, run: leader.run, ops: 0, maxBytes: 100, maxWaitMs: 0 }), resolve));
  for (const cut of [1, 4, 20, good.length - 3]) assert.throws(() => decodeFetchAnswer(good.subarray(0, cut)), ReplicaError);
  assert.throws(() => decodeEndOfAnswer(Buffer.from("{}")), ReplicaError);
  leader.close();
  await a.log.close();
});

// ---- removals: deletes and purges inside the log, shipped to followers; reconciliation ----

/** Deletes `seqs` from the leader's log as a stream does (each delete applied, then the leader told): the removal position. */
async function del(leader: ReplicaLeader, n: Node, seqs: readonly number[]): Promise<number> {
  const gone: number[] = [];
  for (const seq of seqs) if (await n.log.delete(seq)) gone.push(seq);
  return leader.removed(gone);
}

/** A purge with a filter (and `keep`) on the leader, its sequences listed first as a stream would: the removal position. */
async function purgeSome(leader: ReplicaLeader, n: Node, filter: string, keep = 0): Promise<number> {
  const matching: number[] = [];
  for (let from = 1; ; ) {
    const page = await n.log.scan(from, { filter, maxMessages: 1000 });
    if (page.length === 0) break;
    for (const m of page) matching.push(m.seq);
    from = page[page.length - 1].seq + 1;
  }
  const seqs = keep > 0 ? matching.slice(0, Math.max(0, matching.length - keep)) : matching;
  assert.equal(await n.log.purge(keep > 0 ? { filter, keep } : { filter }), seqs.length);
  return leader.removed(seqs);
}

/** A follower's log that counts its deletes per sequence, and the deletes that found nothing. */
function counting(n: Node): { node: Node; deletes: Map<number, number>; misses: number[] } {
  const deletes = new Map<number, number>();
  const misses: number[] = [];
  const log = new Proxy(n.log, {
    get(target, key) {
      if (key === "delete") {
        return async (seq: number): Promise<boolean> => {
          deletes.set(seq, (deletes.get(seq) ?? 0) + 1);
          const done = await target.delete(seq);
          if (!done) misses.push(seq);
          return done;
        };
      }
      const v = (target as unknown as Record<string | symbol, unknown>)[key];
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { node: { ...n, log }, deletes, misses };
}

function gapsFrom(leader: ReplicaLeader, follower: string, from: number, to: number, maxBytes?: number): Promise<{ raw: Buffer; answer: ReturnType<typeof decodeGapsAnswer> }> {
  const req = encodeRequest({ op: "gaps", follower, epoch: leader.epoch, from, to, run: null, ops: null, ...(maxBytes !== undefined ? { maxBytes } : {}) });
  return new Promise((resolve, reject) =>
    leader.serve(req, (raw) => {
      try {
        resolve({ raw, answer: decodeGapsAnswer(raw) });
      } catch (err) {
        reject(err);
      }
    }),
  );
}

test("removals inside the log reach every follower among the appends, and the removal watermark waits for every ISR member", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "file", dir, nodes);
  const b = await node("b", "memory", dir, nodes);
  const c = await node("c", "file", dir, nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b", "c"], isr: ["a", "b", "c"] });
  const errors: Error[] = [];
  const fb = follow(b, 1, new Link(leader, { drop: 0.1, stale: 0.2, delayTurns: 3, seed: 21 }), errors);
  let fc = follow(c, 1, new Link(leader, { drop: 0.1, stale: 0.2, delayTurns: 3, seed: 22 }), errors);
  const fired: number[] = [];
  const onReplicated = (err: Error | null, op: number): void => {
    assert.equal(err, null);
    fired.push(op);
  };
  const waited: number[] = [];
  const wait = (op: number): void => {
    waited.push(op);
    assert.equal(leader.whenRemovalReplicated(op, onReplicated, op), true);
  };
  const rand = rng(5);
  let i = 0;
  while (i < 60) await write(leader, a, ++i);
  await until(() => end(b) === end(a) && end(c) === end(a), "the followers at the leader's end");
  // A record inside a Kafka-like batch the followers hold whole: they delete it too, and read the rest as messages.
  const [batch] = await a.log.scanStored(17, { maxMessages: 1 });
  assert.ok(isForeign(batch) && batch.firstSeq === 17 && batch.count === 3);
  wait(await del(leader, a, [18]));
  for (let round = 0; round < 12; round++) {
    for (let k = 0; k < 10; k++) await write(leader, a, ++i);
    // Old sequences (inside Kafka-like batches too) and the newest, which a follower may not have fetched yet.
    const first = a.log.state().firstSeq;
    const last = end(a) - 1;
    const picks = [first + Math.floor(rand() * (last - first)), first + Math.floor(rand() * (last - first)), last];
    wait(await del(leader, a, picks));
    if (round % 4 === 1) wait(await purgeSome(leader, a, "s.1"));
    if (round % 4 === 2) wait(await purgeSome(leader, a, "s.2", 2));
    if (round === 6) {
      assert.ok((await a.log.purge({ upTo: 20 })) > 0);
      wait(leader.removedBelow());
    }
    // The leader's epoch checkpoint follows its log start, as a follower's does when it purges below it.
    await a.epochs.trimBelow(a.log.state().firstSeq);
  }
  await until(() => leader.removalWatermark === leader.removalEnd, "every removal applied by both followers");
  assert.deepEqual(fired, waited, "each waiter called once, in order");
  // c away: a removal waits for it, b's having it is not enough.
  await fc.close();
  const pending = await del(leader, a, [a.log.state().firstSeq + 5, end(a) - 3]);
  wait(pending);
  await until(() => fb.removalsApplied >= pending, "b applied the removal");
  assert.ok(leader.removalWatermark < pending);
  assert.ok(!fired.includes(pending));
  // c back, a new follower: it reconciles, then fetches, and the waiter is called.
  fc = follow(c, 1, new Link(leader, { drop: 0.1, stale: 0.2, delayTurns: 3, seed: 23 }), errors);
  await until(() => fired.includes(pending), "the removal on c too");
  assert.equal(fc.reconciliations, 1);
  for (let k = 0; k < 5; k++) await write(leader, a, ++i);
  await until(() => leader.highWatermark === end(a) && end(b) === end(a) && end(c) === end(a), "both followers at the end");
  await fb.close();
  await fc.close();
  assert.deepEqual(fired, waited);
  assert.ok(errors.some((e) => /late answer/.test(e.message)), "the fault schedule handed back a late answer");
  const want = await picture(a);
  assert.ok((want as { deleted: number[] }).deleted.length > 20, "the leader's log has gaps inside");
  assert.deepEqual(await picture(b), want);
  assert.deepEqual(await picture(c), want);
  leader.close();
  for (const n of nodes) await n.log.close();
});

test("a follower that restarts, joins late, or applied a removal the new leader never had reconciles to the leader's log", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "file", dir, nodes);
  const b = await node("b", "file", dir, nodes);
  const c = await node("c", "memory", dir, nodes);
  const d = await node("d", "memory", dir, nodes);
  const replicas = ["a", "b", "c", "d"];
  const la = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas, isr: ["a", "b", "c"] });
  const fb = follow(b, 1, new Link(la));
  const fc = follow(c, 1, new Link(la));
  for (let i = 1; i <= 80; i++) await write(la, a, i);
  await until(() => la.highWatermark === end(a), "1..80 on b and c");
  await fb.close();
  // While b is away: deletes (a run of them among them), and a filtered purge told only as unlisted.
  await del(la, a, [3, 4, 5, 6, 7, 40, 41, 79]);
  assert.ok((await a.log.purge({ filter: "s.2" })) > 0);
  const before = fc.reconciliations;
  const unlisted = la.removedUnlisted();
  la.setIsr(["a", "c"]);
  let done = false;
  la.whenRemovalReplicated(unlisted, (err) => {
    assert.equal(err, null);
    done = true;
  });
  await until(() => done, "c reconciled past the unlisted removal");
  assert.equal(fc.reconciliations, before + 1);
  assert.deepEqual(await picture(c), await picture(a));
  // b restarts: a new follower on the same log reconciles before it fetches, then may join the ISR again.
  const hadB = b.log.state().messages;
  const removedB: Removed[] = [];
  const fb2 = follow(b, 1, new Link(la), [], removedB);
  await until(() => la.readyToJoin().includes("b"), "b ready to join");
  assert.equal(fb2.reconciliations, 1);
  // What the reconciliation deleted is told, all of it.
  assert.deepEqual(removedB.map((r) => [r.how, r.messages]), [["deleted", hadB - a.log.state().messages]]);
  assert.deepEqual(await picture(b), await picture(a));
  la.setIsr(["a", "b", "c"]);
  // d joins late with an empty log: its copy has the gaps without a removal shipped.
  const fd = follow(d, 1, new Link(la));
  await until(() => end(d) === end(a) && fd.rounds > 0, "d at the leader's end");
  await fd.close();
  assert.deepEqual(await picture(d), await picture(a));
  // a deletes 60 and only b applies it; a is gone before c has it: the delete was never acknowledged.
  await fc.close();
  const lost = await del(la, a, [60]);
  await until(() => fb2.removalsApplied >= lost, "b applied the delete");
  assert.equal(b.log.has(60), false);
  await fb2.close();
  const hw = la.highWatermark;
  la.close("a is gone");
  // c leads epoch 2; b follows and finds that c has 60, which it lacks: it truncates there and fetches it again.
  const lc = await ReplicaLeader.create({ self: "c", log: c.log, epochs: c.epochs, epoch: 2, replicas, isr: ["b", "c"], highWatermark: hw });
  assert.equal(c.log.has(60), true);
  const removedB3: Removed[] = [];
  const fb3 = follow(b, 2, new Link(lc), [], removedB3);
  for (let i = 81; i <= 85; i++) await write(lc, c, i, "e2-");
  await until(() => lc.highWatermark === end(c) && end(b) === end(c), "b follows c");
  await fb3.close();
  assert.equal(b.log.has(60), true);
  assert.deepEqual(removedB3.map((r) => [r.how, r.from]), [["truncated", 60]]);
  assert.deepEqual(await picture(b), await picture(c));
  lc.close();
  for (const n of nodes) await n.log.close();
});

/** A follower of `leader` whose log must hold the leader's whole log (wholeLog), quick to retry: what the tests of a cut copy vary on. */
function wholeLogFollower(n: Node, transport: ReplicaTransport, epoch = 1) {
  return { self: n.name, log: n.log, epochs: n.epochs, epoch, transport, maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, wholeLog: true };
}

test("a copy that lost a prefix its leader holds fetches it again when no limits drop the leader's front (wholeLog), and keeps the hole otherwise", async (t) => {
  const { nodes, a, b, c, la } = await writtenToThree(t, 30);
  // Both lose their first ten (damage, a bug): the leader still holds them.
  assert.equal(await b.log.purge({ upTo: 11 }), 10);
  assert.equal(await c.log.purge({ upTo: 11 }), 10);
  const removed: Removed[] = [];
  // Until b has its whole log back, it may not lead: asked the moment it has cut.
  let mayLeadWhileCut: boolean | null = null;
  const fb2: ReplicaFollower = new ReplicaFollower({
    ...wholeLogFollower(b, new Link(la)),
    onRemoved: (r) => {
      removed.push(r);
      mayLeadWhileCut = fb2.mayLead;
    },
  });
  fb2.start();
  const fc2 = follow(c, 1, new Link(la));
  for (let i = 31; i <= 35; i++) await write(la, a, i);
  await until(() => end(b) === end(a) && end(c) === end(a) && fb2.rounds > 0 && fc2.rounds > 0, "b and c at the leader's end");
  await fb2.close();
  await fc2.close();
  // b cut where the leader holds what it lacks (its whole log), told it, and fetched everything again.
  assert.deepEqual(removed.map((r) => [r.how, r.from]), [["truncated", 1]]);
  assert.equal(mayLeadWhileCut, false, "a copy cut to refill a hole may not lead before it has");
  assert.equal(fb2.mayLead, true);
  assert.deepEqual(await picture(b), await picture(a));
  // c, whose leader's limits would drop such a prefix in time, keeps it as it is, and may not lead while the leader holds it.
  assert.equal(c.log.state().firstSeq, 11);
  assert.equal(fc2.mayLead, false, "a copy lacking what the leader holds below its first sequence may not lead");
  la.close();
  for (const n of nodes) await n.log.close();
});

test("a leader whose log failed answers no follower until it has reopened from disk: its memory may not say what is there", async (t) => {
  const dir = scratch(t);
  let failing = false;
  const faults = { write: () => (failing ? { error: Object.assign(new Error("ENOSPC: injected"), { code: "ENOSPC" }) } : null) };
  const leaderLog = await FileLog.open({ dir: dir(), foreign: toy, faults, reopenDelayMs: 20 });
  const a = { name: "a", log: truncatable(leaderLog, () => FileLog.open({ dir: dir(), foreign: toy })), epochs: LeaderEpochs.inMemory() };
  const b = { name: "b", log: truncatable(new MemoryLog({ foreign: toy }), async () => new MemoryLog({ foreign: toy })), epochs: LeaderEpochs.inMemory() };
  const la = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  const errors: Error[] = [];
  const fb = follow(b, 1, new Link(la), errors);
  for (let i = 1; i <= 10; i++) await write(la, a, i);
  await until(() => la.highWatermark === 11, "1..10 on b");
  // The disk fails: the leader's log sticks, and until it has reopened a fetch is refused, not answered from memory.
  failing = true;
  await assert.rejects(appendAsync(a.log, { subject: "s.1", data: Buffer.from("lost") }));
  assert.notEqual(a.log.state().error, null);
  const gapsAnswer = await new Promise<Buffer>((resolve) => la.serve(encodeRequest({ op: "gaps", follower: "b", epoch: 1, from: 1, to: 11, run: null, ops: null }), resolve));
  assert.throws(() => decodeGapsAnswer(gapsAnswer), (err: ReplicaError) => err.code === "storage");
  await until(() => errors.some((e) => /the leader's log failed/.test(e.message)), "b told the leader's log failed");
  // The disk is back: the reopen reads the files, and b goes on.
  failing = false;
  await until(() => a.log.state().error === null, "the leader's log reopened");
  for (let i = 11; i <= 12; i++) await write(la, a, i);
  await until(() => la.highWatermark === end(a) && end(b) === end(a), "b follows again");
  await fb.close();
  assert.deepEqual(await picture(b), await picture(a));
  la.close();
  await a.log.close();
});

test("a follower whose log failed fetches nothing until it has reopened: at the leader's end in memory, it would be counted in sync and hold every acknowledgement", async (t) => {
  const dir = scratch(t);
  const nodes: Node[] = [];
  const a = await node("a", "memory", dir, nodes);
  let failing = false;
  const faults = { write: () => (failing ? { error: Object.assign(new Error("ENOSPC: injected"), { code: "ENOSPC" }) } : null) };
  const bLog = await FileLog.open({ dir: dir(), foreign: toy, faults, reopenDelayMs: 60_000 });
  const b = { name: "b", log: truncatable(bLog, () => FileLog.open({ dir: dir(), foreign: toy })), epochs: LeaderEpochs.inMemory() };
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 2, replicas: ["a", "b"], isr: ["a"] });
  let asked = 0;
  const link = new Link(leader);
  const fb = follow(b, 2, { request: (body: Buffer) => (asked++, link.request(body)) });
  for (let i = 1; i <= 5; i++) await write(leader, a, i);
  await until(() => end(b) === end(a), "b has 1..5");
  // b's disk fails on a write of its own (a consumer's file, say): its log sticks, its memory still at the leader's end.
  failing = true;
  await assert.rejects(appendAsync(b.log, { subject: "s.1", data: Buffer.from("lost") }));
  assert.equal(end(b), end(a));
  const state = bLog.state.bind(bLog);
  let looked = 0;
  bLog.state = () => (looked++, state());
  // One fetch may be on its way (parked at the leader, sent before the failure); none follows it.
  const before = asked;
  await until(() => looked >= 20 || asked > before + 1, "b looked at its log a few times, or asked again");
  assert.ok(asked <= before + 1, `b asked ${asked - before} more times with its log failed`);
  await fb.close();
  leader.close();
  for (const n of [...nodes, b]) await n.log.close();
});

test("a leader whose log fails while it answers a reconciliation page (a segment it cannot read) answers an error, not the segment as gone", async (t) => {
  const dir = scratch(t)();
  const first = await FileLog.open({ dir, maxSegmentBytes: 4096 });
  for (let i = 1; i <= 200; i++) await appendAsync(first, { subject: "s", data: Buffer.from(`m${i}`.padEnd(40, ".")) });
  await first.close();
  // Reopened: sealed segments are known by their index files' summaries; a segment's detail is read when first needed.
  const names = readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
  const victim = names[1];
  const failing: StoreFs = {
    ...nodeFs,
    readSync: (path, position, length) => {
      if ((path.endsWith(`${victim}.idx`) && position > 0) || path.endsWith(victim)) throw new Error("EIO: injected read failure");
      return nodeFs.readSync(path, position, length);
    },
  };
  const log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs: failing, reopenDelayMs: 60_000 });
  t.after(() => log.close());
  const leader = await ReplicaLeader.create({ self: "a", log, epochs: LeaderEpochs.inMemory(), epoch: 1, replicas: ["a", "b"], isr: ["a"] });
  t.after(() => leader.close());
  assert.equal(log.state().error, null);
  const raw = await new Promise<Buffer>((resolve) => leader.serve(encodeRequest({ op: "gaps", follower: "b", epoch: 1, from: 1, to: 201, run: null, ops: null }), resolve));
  // Answered from the failed log, the page would list the unreadable segment as gone, and the follower would delete it.
  assert.notEqual(log.state().error, null, "the page's reads failed the log");
  assert.throws(() => decodeGapsAnswer(raw), (err: ReplicaError) => err.code === "storage");
});

test("a late or repeated answer applies nothing twice and skips nothing; removals a follower cannot need are not shipped", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b", "c"], isr: ["a", "b"] });
  for (let i = 1; i <= 30; i++) await write(leader, a, i);
  // b has 1..20 and fetches from this leadership (else it reconciles first, and the leader keeps nothing for it).
  await fetchFrom(leader, "b", 21, { ops: 0 });
  // A removal below its end is shipped, one at or above it is not (the copy skips it).
  const p1 = await del(leader, a, [3, 25]);
  const first = await fetchFrom(leader, "b", 21, { ops: 0 });
  assert.deepEqual(first.removals, [3]);
  assert.deepEqual([first.ops, first.opsTo], [0, p1]);
  assert.ok(first.items.every((m) => (isForeign(m) ? m.firstSeq + m.count <= 25 || m.firstSeq > 25 : m.seq !== 25)));
  // A retry of the same fetch gets the same removals from the same position; nothing is acknowledged until the next fetch says so.
  const again = await fetchFrom(leader, "b", 21, { ops: 0 });
  assert.deepEqual([again.removals, again.ops, again.opsTo], [[3], 0, p1]);
  assert.equal(leader.removalWatermark, 0);
  await fetchFrom(leader, "b", 31, { ops: p1 });
  assert.equal(leader.removalWatermark, p1);
  // A late copy of the first fetch: b's position moved on and the leader forgot what was before it; refused, nothing goes back.
  await assert.rejects(fetchFrom(leader, "b", 21, { ops: 0 }), (e: ReplicaError) => e.code === "reconcile");
  assert.equal(leader.removalWatermark, p1);
  // Below the log start nothing is shipped (the follower purges there); a front purge takes a position all the same.
  assert.ok((await a.log.purge({ upTo: 6 })) > 0);
  const p2 = leader.removedBelow();
  const p3 = await del(leader, a, [5, 8]);
  assert.equal(p3, p2 + 1, "5 was purged already: only 8 is a removal");
  const next = await fetchFrom(leader, "b", 31, { ops: p1 });
  assert.deepEqual([next.removals, next.logStart, next.opsTo], [[8], 6, p3]);
  // Positions this leadership does not hold, or another leadership's: reconcile.
  const code = (c: string) => (e: ReplicaError) => e instanceof ReplicaError && e.code === c;
  await assert.rejects(fetchFrom(leader, "b", 31, { ops: p3 + 1 }), code("reconcile"));
  await assert.rejects(fetchFrom(leader, "b", 31, { ops: p3, run: "another" }), code("reconcile"));
  // Through a faulty link, a follower whose deletes are counted: each sequence deleted once, and only those the leader removed.
  const cNode = await node("c", "memory", () => "", nodes);
  const counted = counting(cNode);
  const errors: Error[] = [];
  const fc = follow(counted.node, 1, new Link(leader, { drop: 0.2, stale: 0.3, delayTurns: 3, seed: 31 }), errors);
  const rand = rng(9);
  const removed = new Set<number>();
  for (let i = 31; i <= 330; i++) {
    await write(leader, a, i);
    await turns(Math.floor(rand() * 8)); // the memory log acknowledges in microtasks: let the follower's rounds interleave
    if (i % 3 !== 0) continue;
    const seq = a.log.state().firstSeq + Math.floor(rand() * (end(a) - a.log.state().firstSeq));
    if (a.log.has(seq)) {
      await del(leader, a, [seq]);
      removed.add(seq);
    }
  }
  await until(() => end(cNode) === end(a) && fc.removalsApplied === leader.removalEnd, "c at the leader's end, every removal applied");
  await fc.close();
  assert.ok(errors.some((e) => /late answer/.test(e.message)), "the fault schedule handed back a late answer");
  assert.ok(counted.deletes.size > 10, "c deleted what it had fetched before the leader removed it");
  for (const [seq, n] of counted.deletes) {
    assert.equal(n, 1, `${seq} deleted once`);
    assert.ok(removed.has(seq), `${seq} was removed by the leader`);
  }
  assert.deepEqual(counted.misses, []);
  await a.epochs.trimBelow(a.log.state().firstSeq); // as c's follows the log start
  assert.deepEqual(await picture(cNode), await picture(a));
  leader.close();
});

test("what the limits evict reaches a follower only with the records that caused it: a key's old value is never gone on a replica that lacks its new one", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  const put = (): Promise<number> => told(leader, a, "s.0");
  for (let i = 1; i <= 30; i++) await put();
  await fetchFrom(leader, "b", 31, { ops: 0 });
  // A new value of a key lands (31) and the per-subject limit evicts the old one (5) before the leader is told of the append,
  // as the store does: the eviction waits for the record that made it; b's fetch at the end gets neither yet.
  const next = await appendAsync(a.log, { subject: "s.1", data: Buffer.from("new value") });
  assert.equal(next, 31);
  assert.equal(await a.log.delete(5), true);
  const p1 = leader.removed([5], next);
  const early = await fetchFrom(leader, "b", 31, { ops: 0 });
  assert.deepEqual([early.removals, early.opsTo, early.items.length], [[], 0, 0]);
  leader.appended(next);
  const both = await fetchFrom(leader, "b", 31, { ops: 0 });
  assert.deepEqual([both.removals, both.opsTo, both.next], [[5], p1, 32]);
  // A follower behind gets the eviction only in the answer that reaches its cause; removals after it wait too (in order).
  for (let i = 32; i <= 60; i++) await put();
  assert.equal(await a.log.delete(7), true);
  const p2 = leader.removed([7], 60);
  const p3 = await del(leader, a, [3]);
  const part = await fetchFrom(leader, "b", 32, { ops: p1, maxBytes: 200 });
  assert.ok(part.next < 61, `a short answer (next ${part.next})`);
  assert.deepEqual([part.removals, part.opsTo], [[], p1]);
  const rest = await fetchFrom(leader, "b", 32, { ops: p1 });
  assert.deepEqual([rest.removals, rest.opsTo], [[7, 3], p3]);
  assert.ok(p3 > p2);
  // The front: the limits took the log start to 10 because of record 60; an answer that stops short of 60 keeps the old start.
  await a.log.purge({ upTo: 10 });
  leader.frontMoved(1, 60);
  assert.equal((await fetchFrom(leader, "b", 32, { ops: p3, maxBytes: 200 })).logStart, 1);
  assert.equal((await fetchFrom(leader, "b", 32, { ops: p3 })).logStart, 10);
  // Once b has fetched past the cause, every answer carries it; a purge asked for goes at once.
  await fetchFrom(leader, "b", 61, { ops: p3 });
  await a.log.purge({ upTo: 12 });
  leader.frontMoved(10, 62);
  await put();
  await put();
  assert.equal((await fetchFrom(leader, "b", 61, { ops: p3, maxBytes: 1 })).logStart, 10, "its cause, 62, is not below what this answer covers");
  assert.equal((await fetchFrom(leader, "b", 61, { ops: p3 })).logStart, 12);
  await a.log.purge({ upTo: 15 });
  const p4 = leader.removedBelow();
  assert.equal((await fetchFrom(leader, "b", 40, { ops: p3, maxBytes: 1 })).logStart, 15);
  assert.ok(p4 > p3);
  leader.close();
});

test("a key written three times: the eviction whose cause was evicted in turn waits for the record that evicted it", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  const put = (subject: string): Promise<number> => told(leader, a, subject);
  for (let i = 1; i <= 10; i++) await put("s");
  const v1 = await put("kv.k");
  await fetchFrom(leader, "b", v1 + 1, { ops: 0 }); // b holds v1
  const v2 = await appendAsync(a.log, { subject: "kv.k", data: Buffer.from("v2") });
  assert.equal(await a.log.delete(v1), true);
  leader.removed([v1], v2);
  leader.appended(v2);
  for (let i = 0; i < 8; i++) await put("s");
  const v3 = await appendAsync(a.log, { subject: "kv.k", data: Buffer.from("v3") });
  assert.equal(await a.log.delete(v2), true);
  const p2 = leader.removed([v2], v3);
  leader.appended(v3);
  // b, from v2 on, gets an answer short of v3: v2 is gone, so removing v1 would leave b without any value of k.
  const short = await fetchFrom(leader, "b", v2, { ops: 0, maxBytes: 100 });
  assert.ok(short.next > v2 && short.next <= v3, `an answer past v2, short of v3 (next ${short.next})`);
  assert.deepEqual([short.removals, short.opsTo], [[], 0]);
  const whole = await fetchFrom(leader, "b", v2, { ops: 0 });
  assert.equal(whole.next, v3 + 1);
  assert.deepEqual([whole.removals, whole.opsTo], [[v1], p2]);
  leader.close();
});

test("a follower that reconciled may lead only once caught up to the leader's end: it may have deleted a key's old value before fetching the new one", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const b = await node("b", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  const put = (subject: string): Promise<number> => told(leader, a, subject);
  for (let i = 1; i <= 4; i++) await put("s");
  const v1 = await put("kv.k");
  for (let i = 6; i <= 10; i++) await put("s");
  const first = follow(b, 1, new Link(leader));
  await until(() => end(b) === end(a) && first.mayLead, "b caught up");
  await first.close();
  // b away: the key gets a new value and the old one is evicted for it.
  for (let i = 11; i <= 19; i++) await put("s");
  const v2 = await appendAsync(a.log, { subject: "kv.k", data: Buffer.from("v2") });
  assert.equal(await a.log.delete(v1), true);
  leader.removed([v1], v2);
  leader.appended(v2);
  // b back (a restart): it reconciles, deleting v1, but its fetches do not get through yet.
  let fetching = false;
  const link = new Link(leader);
  const gated: ReplicaTransport = { request: (body, ms) => (!fetching && body.toString().includes('"op":"fetch"') ? Promise.resolve(null) : link.request(body)) };
  const again = new ReplicaFollower({ self: "b", log: b.log, epochs: b.epochs, epoch: 1, transport: gated, maxWaitMs: 200, backoffMs: { min: 1, max: 10 } });
  assert.equal(again.mayLead, true, "before it has deleted anything, b is as it was under this leader");
  again.start();
  try {
    await until(() => again.reconciliations === 1, "b to reconcile");
    assert.equal(b.log.has(v1), false, "the old value deleted as the leader did");
    assert.equal(again.mayLead, false, "without the new value, b must not lead");
    fetching = true;
    await until(() => end(b) === end(a), "b to catch up");
    assert.equal(again.mayLead, true);
  } finally {
    await again.close();
    leader.close();
  }
});

test("a follower whose append fails (a full disk) keeps the old value: removals and the log start are applied after the records that caused them", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const b = await node("b", "memory", () => "", nodes);
  let full = false;
  const failing = new Proxy(b.log, {
    get(target, key) {
      if (key === "appendCopy" && full) return (_seq: number, _time: number, _what: unknown, cb: (err: Error | null, seq: number) => void) => cb(new Error("ENOSPC: no space left on device"), 0);
      const v = (target as unknown as Record<string | symbol, unknown>)[key];
      return typeof v === "function" ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b"], isr: ["a", "b"] });
  for (let i = 1; i <= 5; i++) leader.appended(await appendAsync(a.log, { subject: "s", data: Buffer.from(`m${i}`) }));
  const old = await appendAsync(a.log, { subject: "kv.k", data: Buffer.from("v1") });
  leader.appended(old);
  const errors: Error[] = [];
  const f = follow({ ...b, log: failing }, 1, new Link(leader), errors);
  try {
    await until(() => end(b) === end(a), "b at the leader's end");
    full = true;
    // The key's new value evicts the old one, and the oldest record goes from the front, both for the limits.
    const fresh = await appendAsync(a.log, { subject: "kv.k", data: Buffer.from("v2") });
    assert.equal(await a.log.delete(old), true);
    leader.removed([old], fresh);
    await a.log.purge({ upTo: 2 });
    leader.frontMoved(1, fresh);
    leader.appended(fresh);
    await until(() => errors.length > 0, "b's copy of the new value to fail");
    assert.equal(b.log.has(old), true, "the old value is kept while the new one is not stored");
    assert.equal(b.log.state().firstSeq, 1, "nor is the front moved");
    full = false;
    await until(() => end(b) === end(a) && !b.log.has(old) && b.log.state().firstSeq === 2, "b with the new value, without the old");
  } finally {
    await f.close();
    leader.close();
  }
});

test("bounds: a flood of removals past MAX_REMOVALS makes a follower behind reconcile, the leader keeps no more; pages and answers stay within FETCH_BYTES", async () => {
  const nodes: Node[] = [];
  const a = await node("a", "memory", () => "", nodes);
  const b = await node("b", "memory", () => "", nodes);
  const c = await node("c", "memory", () => "", nodes);
  const leader = await ReplicaLeader.create({ self: "a", log: a.log, epochs: a.epochs, epoch: 1, replicas: ["a", "b", "c"], isr: ["a", "b", "c"] });
  // Every other sequence of the first 4 * MAX_GAP_RANGES is removed (the worst case for a reconciliation page), then a run.
  const alternate = 4 * MAX_GAP_RANGES;
  const flood: number[] = [];
  for (let seq = 2; flood.length < MAX_REMOVALS + 1000; seq += seq < alternate ? 2 : 1) flood.push(seq);
  const total = flood[flood.length - 1] + 4 * REMOVALS_PER_ANSWER;
  for (let at = 0; at < total; at += 4096) {
    const run = runOf(Array.from({ length: 4096 }, (_, k) => ({ subject: `f.${k % 7}`, data: Buffer.from(`m${at + k}`) })));
    const firstSeq = await new Promise<number>((resolve, reject) => a.log.appendMany(run, (err, seq) => (err ? reject(err) : resolve(seq))));
    leader.appended(firstSeq + run.count - 1);
  }
  const linkB = new Link(leader);
  const errorsB: Error[] = [];
  const fb = follow(b, 1, linkB, errorsB);
  const fc = follow(c, 1, new Link(leader));
  await until(() => leader.highWatermark === end(a), "both followers at the end");
  // b cut off (its fetch held now is answered, no request after it is); more removals than the leader keeps. c keeps up, b does not.
  linkB.leader = null;
  leader.appended(await appendAsync(a.log, { subject: "f.0", data: Buffer.from("last before the flood") }));
  await until(() => end(b) === end(a), "b's held fetch answered");
  const removeAll = async (seqs: number[]): Promise<void> => {
    for (let k = 0; k < seqs.length; k += 1000) {
      const chunk = seqs.slice(k, k + 1000);
      for (const seq of chunk) assert.equal(await a.log.delete(seq), true);
      leader.removed(chunk);
      assert.ok(leader.heldRemovals <= MAX_REMOVALS, `${leader.heldRemovals} removals held`);
    }
  };
  await removeAll(flood.slice(0, MAX_REMOVALS / 2));
  await until(() => fc.removalsApplied === leader.removalEnd, "c applied the first half");
  assert.equal(leader.heldRemovals, MAX_REMOVALS / 2, "kept for b");
  await removeAll(flood.slice(MAX_REMOVALS / 2));
  assert.equal(leader.heldRemovals, MAX_REMOVALS, "b's position is forgotten: the newest MAX_REMOVALS are kept");
  leader.setIsr(["a", "c"]);
  await until(() => leader.removalWatermark === leader.removalEnd, "c applied them all");
  assert.equal(fc.reconciliations, 1, "c kept up: no reconciliation");
  // A reconciliation page where every other sequence is gone: at most MAX_GAP_RANGES ranges, far below FETCH_BYTES.
  const page = await gapsFrom(leader, "c", 1, end(a));
  assert.ok(page.raw.length < FETCH_BYTES / 2, `page of ${page.raw.length} bytes`);
  assert.equal(page.answer.gaps.length, 2 * MAX_GAP_RANGES);
  assert.ok(page.answer.next < end(a));
  // Asked by a follower whose max_payload is 16 KiB: the page fits it, and goes on where it stopped.
  const small = await gapsFrom(leader, "c", 1, end(a), 16 * 1024);
  assert.ok(small.raw.length <= 16 * 1024, `page of ${small.raw.length} bytes`);
  assert.ok(small.answer.gaps.length > 0 && small.answer.gaps.length < page.answer.gaps.length);
  assert.equal(small.answer.next, small.answer.gaps[small.answer.gaps.length - 1] + 2, "the next page starts after the last range it listed");
  // A fetch answer carrying REMOVALS_PER_ANSWER removals and large records together: within FETCH_BYTES.
  const big = Buffer.alloc(20_000, 0x62);
  const bigFrom = end(a);
  for (let k = 0; k < 20; k++) leader.appended(await appendAsync(a.log, { subject: "big", data: big }));
  const raw = await new Promise<Buffer>((resolve) =>
    leader.serve(
      encodeRequest({ op: "fetch", follower: "c", from: bigFrom, epoch: 1, run: leader.run, ops: leader.removalEnd - REMOVALS_PER_ANSWER, maxBytes: 1e12, maxWaitMs: 0 }),
      resolve,
    ),
  );
  assert.ok(raw.length <= FETCH_BYTES, `answer of ${raw.length} bytes`);
  const answer = decodeFetchAnswer(raw);
  assert.equal(answer.removals.length, REMOVALS_PER_ANSWER);
  assert.ok(answer.items.length > 0);
  // b back: its position was forgotten, so it reconciles (the leader tells it) and ends identical.
  const before = fb.reconciliations;
  linkB.leader = leader;
  await until(() => end(b) === end(a) && fb.removalsApplied === leader.removalEnd && fb.reconciliations > before, "b reconciled and at the end");
  assert.ok(errorsB.some((e) => e instanceof ReplicaError && e.code === "reconcile"), "the leader told b to reconcile");
  assert.ok(leader.heldRemovals <= MAX_REMOVALS);
  await fb.close();
  await fc.close();
  const want = await picture(a);
  assert.deepEqual(await picture(b), want);
  assert.deepEqual(await picture(c), want);
  leader.close();
});

test("the bar on leading a reconciliation raised is saved before anything goes, and a copy started again in the epoch keeps it", async (t) => {
  const { nodes, a, b, la } = await writtenToThree(t, 30);
  // b loses its first ten (damage, a bug) while the leader holds them: it cuts its log to fetch them again.
  assert.equal(await b.log.purge({ upTo: 11 }), 10);
  const saves: Array<{ bar: number; removedBefore: number }> = [];
  const removed: Removed[] = [];
  const options = { ...wholeLogFollower(b, new Link(la)), onRemoved: (r: Removed) => void removed.push(r) };
  // Stopped the moment it has cut (close() marks it closed at once): it fetches nothing back.
  let closing: Promise<void> | undefined;
  const fb: ReplicaFollower = new ReplicaFollower({
    ...options,
    onRemoved: (r) => {
      removed.push(r);
      closing ??= fb.close();
    },
    bar: { initial: 0, save: async (bar) => void saves.push({ bar, removedBefore: removed.length }) },
  });
  fb.start();
  await until(() => closing !== undefined, "b cut its log");
  await closing;
  // Saved once, before the cut, at the leader's end as the reconciliation saw it.
  assert.deepEqual(saves, [{ bar: end(a), removedBefore: 0 }]);
  // Started again in the same epoch before it fetched back what it cut: it may not lead.
  const again = new ReplicaFollower({ ...options, bar: { initial: saves[0].bar, save: async () => {} } });
  assert.ok(end(b) < saves[0].bar);
  assert.equal(again.mayLead, false, "a copy started again below its saved bar may not lead");
  // Without the saved bar (before this change), it could.
  assert.equal(new ReplicaFollower(options).mayLead, true);
  la.close();
  for (const n of nodes) await n.log.close();
});

test("a bar raised in one leadership holds in the next: a copy that cut acknowledged records may not lead for a new leader either", async (t) => {
  const { nodes, a, b, c, la } = await writtenToThree(t, 30);
  // b loses its first ten and reconciles with a in epoch 1: it cuts its log, and its bar is saved.
  assert.equal(await b.log.purge({ upTo: 11 }), 10);
  let saved = 0;
  let closing: Promise<void> | undefined;
  const fb: ReplicaFollower = new ReplicaFollower({
    ...wholeLogFollower(b, new Link(la)),
    onRemoved: () => void (closing ??= fb.close()),
    bar: { initial: 0, save: async (bar) => void (saved = bar) },
  });
  fb.start();
  await until(() => closing !== undefined, "b cut its log");
  await closing;
  const acked = la.highWatermark;
  assert.ok(end(b) < acked, `b ends at ${end(b)}, below what was acknowledged (${acked})`);
  // a goes; c, which holds everything, leads epoch 2 with b still in the ISR.
  la.close("a lost its lease");
  const lc = await ReplicaLeader.create({ self: "c", log: c.log, epochs: c.epochs, epoch: 2, replicas: ["a", "b", "c"], isr: ["b", "c"], highWatermark: acked });
  // b follows c with the bar it left; c's fetches are held, so b reconciles and waits there.
  const link = new Link(lc);
  const held: ReplicaTransport = { request: (body) => ((JSON.parse(body.toString()) as { op: string }).op === "fetch" ? new Promise<Buffer | null>(() => {}) : link.request(body)) };
  const fb2 = new ReplicaFollower({ ...wholeLogFollower(b, held, 2), bar: { initial: saved, save: async (bar) => void (saved = bar) } });
  fb2.start();
  await until(() => fb2.reconciliations > 0, "b reconciled with c");
  assert.equal(fb2.mayLead, false, "b lacks acknowledged records: it may not take the partition over from c");
  await fb2.close();
  lc.close();
  for (const n of nodes) await n.log.close();
});

test("a bar past everything (its file unreadable, or left by an older leadership) is lowered to the leader's end by the reconciliation", async (t) => {
  const { nodes, a, b, la } = await writtenToThree(t, 30);
  const saves: number[] = [];
  const fb = new ReplicaFollower({ self: "b", log: b.log, epochs: b.epochs, epoch: 1, transport: new Link(la), maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, bar: { initial: Number.MAX_SAFE_INTEGER, save: async (bar) => void saves.push(bar) } });
  assert.equal(fb.mayLead, false);
  fb.start();
  await until(() => fb.reconciliations > 0 && fb.rounds > 0, "b reconciled and fetched");
  await fb.close();
  assert.deepEqual(saves, [end(a)]);
  assert.equal(fb.mayLead, true);
  la.close();
  for (const n of nodes) await n.log.close();
});

for (const initial of [Number.MAX_SAFE_INTEGER, 41]) {
  test(`a bar of ${initial} (not known, or an earlier leadership's past this leader's end) is set to the leader's end by a reconciliation that deletes`, async (t) => {
    const { nodes, a, b, la } = await writtenToThree(t, 30);
    // The leader removes 5, which b holds: b's reconciliation page deletes it.
    assert.equal(await a.log.delete(5), true);
    la.removedUnlisted();
    const saves: number[] = [];
    const fb = new ReplicaFollower({ self: "b", log: b.log, epochs: b.epochs, epoch: 1, transport: new Link(la), maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, bar: { initial, save: async (bar) => void saves.push(bar) } });
    fb.start();
    await until(() => fb.reconciliations > 0 && fb.rounds > 2, "b reconciled and fetched");
    await fb.close();
    assert.equal(end(b), end(a));
    assert.deepEqual(saves, [end(a)]);
    assert.equal(fb.mayLead, true, "b holds everything the leader has, and may lead");
    la.close();
    for (const n of nodes) await n.log.close();
  });
}

test("a copy started again empty (in memory, or its unsynced tail lost) with its bar not known may not lead until it holds the leader's end", async (t) => {
  const { nodes, la } = await writtenToThree(t, 30);
  const c2 = await node("c2", "memory", () => "", nodes);
  // Its fetches are held: it reconciles (nothing to remove in an empty log) and waits there, still in the ISR.
  const link = new Link(la);
  const held: ReplicaTransport = { request: (body) => ((JSON.parse(body.toString()) as { op: string }).op === "fetch" ? new Promise<Buffer | null>(() => {}) : link.request(Buffer.from(body.toString().replace('"c2"', '"c"')))) };
  const fc = new ReplicaFollower({ self: "c2", log: c2.log, epochs: c2.epochs, epoch: 1, transport: held, maxWaitMs: 200, backoffMs: { min: 1, max: 10 }, bar: { initial: Number.MAX_SAFE_INTEGER, save: async () => {} } });
  fc.start();
  await until(() => fc.reconciliations > 0, "c reconciled");
  assert.ok(la.inSync.includes("c"), "c is still listed in sync");
  assert.equal(fc.mayLead, false, "c holds nothing of what was acknowledged");
  await fc.close();
  la.close();
  for (const n of nodes) await n.log.close();
});
