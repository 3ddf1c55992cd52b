/**
 * The leader of a replicated stream killed with SIGKILL, or paused with
 * SIGSTOP past its lease, while a client publishes through another node (a
 * real process as the leader, two embedded nodes, a real etcd): an in-sync
 * follower takes over within a few lease lengths, every acknowledged
 * publish is in the new leader's stream at the sequence its ack named,
 * and the paused leader, resumed, is fenced, follows the new leader,
 * truncates what was never acknowledged and ends with a log identical to
 * the new leader's.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType, type JetStreamClient } from "@nats-io/jetstream";
import type { NagareServer } from "../src/server/server.js";
import { FileLog } from "../src/store/file-log.js";
import { startEtcd, type EtcdHarness } from "./helpers/etcd.js";
import { spawnNodeK, startJetStreamNode, uniqueCluster, type NodeProcess } from "./helpers/cluster.js";
import { publishRetrying, waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { parseStateFile } from "../src/util/persist.js";
import { placementKey } from "../src/cluster/placement.js";

let etcd: EtcdHarness;
let dir: string;
let clusterName: string;
let a: NagareServer;
let b: NagareServer;
let k: NodeProcess;
const conns: NatsConnection[] = [];

/** k as a process; `jetstreamExtra` goes into its `jetstream {}` block (e.g. a sync interval). */
async function spawnK(peers: () => NagareServer[] = () => [a, b], jetstreamExtra = ""): Promise<NodeProcess> {
  const node = await spawnNodeK({ etcd: etcd.endpoint, dir, cluster: clusterName }, jetstreamExtra);
  const live = peers();
  await waitUntil(() => live.every((n) => n.routes!.peers().length === live.length), `a full mesh of ${live.length + 1}`);
  return node;
}

before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), "nagare-replk-"));
  clusterName = uniqueCluster("replkill");
  a = await startJetStreamNode({ etcd: etcd.endpoint, dir, cluster: clusterName }, "a");
  b = await startJetStreamNode({ etcd: etcd.endpoint, dir, cluster: clusterName }, "b");
  k = await spawnK();
});

after(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined);
  if (k !== undefined) {
    k.child.kill("SIGCONT");
    await k.stop("SIGKILL");
  }
  await Promise.all([a?.close(), b?.close()]);
  await etcd.close();
  rmSync(dir, { recursive: true, force: true });
});

async function client(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  conns.push(nc);
  return nc;
}

const placed = (stream: string) => a.cluster!.placements.get("$G", stream)?.placement;

/**
 * Whether the leader `placed` names has taken up its leadership of partition 0 of `stream` in its epoch: seen on a
 * before its successor may have seen it, a request or a publish sent through a could reach the successor first.
 */
function takenUp(stream: string): boolean {
  const pl = placed(stream)!;
  const [leader, epoch] = [pl.leaders[0], pl.epochs![0]];
  if (leader === "k") return k.output().includes(`leading partition 0 of stream "${stream}" of account $G in epoch ${epoch} `);
  const node = leader === "a" ? a : b;
  return node.cluster!.placements.get("$G", stream)?.placement.epochs![0] === epoch && node.jetstream!.streams.get(stream)?.ledHere === null;
}

/**
 * Publishes `count` messages, one at a time, each with its own id (so a
 * retry after a lost ack is stored once), retrying what a failover refuses
 * or leaves unanswered; returns each acknowledged payload by the sequence
 * its ack named. `during` runs once `at` messages are acknowledged.
 */
async function publishThrough(js: JetStreamClient, stream: string, count: number, at: number, during: () => Promise<void>): Promise<Map<number, string>> {
  const acked = new Map<number, string>();
  let fault: Promise<void> | null = null;
  for (let i = 1; i <= count; i++) {
    if (i === at + 1) fault = during();
    const payload = `${stream}-${i}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        const ack = await js.publish(`${stream.toLowerCase()}.x`, payload, { msgID: payload, timeout: 2000 });
        assert.ok(!acked.has(ack.seq) || acked.get(ack.seq) === payload, `sequence ${ack.seq} acknowledged for two payloads`);
        acked.set(ack.seq, payload);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
    }
  }
  await fault;
  return acked;
}

/** Every acknowledged payload is at its sequence in `node`'s copy, and nothing else is stored twice. */
async function checkAcked(node: NagareServer, stream: string, acked: Map<number, string>): Promise<void> {
  const log = node.jetstream!.streams.get(stream)!.partitions[0];
  for (const [seq, payload] of acked) assert.equal((await log.get(seq))?.data.toString(), payload, `acknowledged sequence ${seq}`);
  const seen = new Set<string>();
  for (const m of await log.scan(1, { maxMessages: 10_000 })) {
    assert.ok(!seen.has(m.data.toString()), `${m.data.toString()} stored twice`);
    seen.add(m.data.toString());
  }
}

/** Places a stream of one replica on a and on b, so that k, leading nothing, leads the next stream placed. */
async function kLeadsNext(jsm: Awaited<ReturnType<typeof jetstreamManager>>, tag: string): Promise<void> {
  for (const n of ["a", "b"]) await jsm.streams.add({ name: `${tag}${n}`, subjects: [`${tag}${n}`], placement: { cluster: "", tags: [`node:${n}`] } });
}

test("SIGKILL of the leader: an in-sync follower takes over and every acknowledged publish is there", async () => {
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  await kLeadsNext(jsm, "ka");
  const info = await jsm.streams.add({ name: "KILL", subjects: ["kill.>"], num_replicas: 3 });
  assert.equal(info.cluster?.leader, "k");
  const t = { killed: 0, led: 0 };
  const acked = await publishThrough(jetstream(nc), "KILL", 300, 100, async () => {
    t.killed = Date.now();
    await k.stop("SIGKILL");
    await waitUntil(() => placed("KILL")?.leaders[0] !== "k", "a new leader", 30_000);
    t.led = Date.now();
  });
  assert.equal(acked.size, 300);
  const leader = placed("KILL")!.leaders[0];
  assert.deepEqual(placed("KILL")!.epochs, [2]);
  const node = leader === "a" ? a : b;
  await checkAcked(node, "KILL", acked);
  // With a 2 s lease the node key goes within about 2 s; the takeover follows within a check or two.
  assert.ok(t.led - t.killed < 10_000, `failover took ${t.led - t.killed} ms`);
});

test("SIGSTOP of the leader past its lease: a follower takes over; resumed, the old leader is fenced, follows and converges", async () => {
  k = await spawnK();
  const nc = await client(b.url);
  const jsm = await jetstreamManager(nc);
  // k leads nothing now (its stream moved on): it is the least loaded node again.
  await kLeadsNext(jsm, "kb");
  const info = await jsm.streams.add({ name: "STOP", subjects: ["stop.>"], num_replicas: 3 });
  assert.equal(info.cluster?.leader, "k");
  const acked = await publishThrough(jetstream(nc), "STOP", 300, 100, async () => {
    k.child.kill("SIGSTOP");
    await waitUntil(() => placed("STOP")?.leaders[0] !== "k", "a new leader", 30_000);
  });
  const leader = placed("STOP")!.leaders[0];
  const node = leader === "a" ? a : b;
  await checkAcked(node, "STOP", acked);

  k.child.kill("SIGCONT");
  // Back in the ISR once it has caught up: then its copy is the leader's.
  await waitUntil(() => placed("STOP")!.isr![0].includes("k"), "k back in the ISR", 30_000);
  const end = node.jetstream!.streams.get("STOP")!.partitions[0].state().lastSeq;
  await k.stop("SIGTERM");
  const where = readdirSync(join(dir, "k"), { recursive: true }).map(String).find((p) => p.endsWith(join("STOP", "p0")));
  assert.ok(where !== undefined, "k's copy of STOP on disk");
  const copy = await FileLog.open({ dir: join(dir, "k", where), limits: {} });
  try {
    const mine = await copy.scan(1, { maxMessages: 10_000 });
    const theirs = await node.jetstream!.streams.get("STOP")!.partitions[0].scan(1, { maxMessages: 10_000 });
    assert.equal(copy.state().lastSeq, end);
    assert.deepEqual(
      mine.map((m) => [m.seq, m.data.toString()]),
      theirs.map((m) => [m.seq, m.data.toString()]),
    );
  } finally {
    await copy.close();
  }
});

/** The streams the cluster has, as node a's JetStream lists them. */
async function streamNames(jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<string[]> {
  const out: string[] = [];
  for await (const s of jsm.streams.names()) out.push(s);
  return out;
}

/**
 * A stream `name` of three replicas holding `records` payloads `<prefix>-<i>`, every replica in sync; then k stopped and
 * the stream led elsewhere, without k in sync: k is away.
 */
async function inSyncThenKAway(jsm: Awaited<ReturnType<typeof jetstreamManager>>, js: JetStreamClient, name: string, prefix: string, records: number): Promise<void> {
  const subject = name.toLowerCase();
  await jsm.streams.add({ name, subjects: [`${subject}.>`], num_replicas: 3 });
  for (let i = 0; i < records; i++) await js.publish(`${subject}.x`, `${prefix}-${i}`);
  await waitUntil(() => placed(name)!.isr![0].length === 3, "every replica in sync", 30_000);
  await k.stop("SIGTERM");
  // Taken up too: a request sent through a before the new leader has seen its own leadership was refused "stream is offline".
  await waitUntil(() => placed(name)!.leaders[0] !== "k" && !placed(name)!.isr![0].includes("k") && takenUp(name), `${name} led elsewhere and taken up, k out of sync`, 30_000);
}

test("a replicated stream deleted while one of its nodes is away stays deleted when the node returns: named away by the delete, it deletes its copy, not adopts it", async () => {
  if (k.child.exitCode === null && k.child.signalCode === null) await k.stop("SIGKILL");
  k = await spawnK();
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  await inSyncThenKAway(jsm, jetstream(nc), "GONE", "old", 10);
  await jsm.streams.delete("GONE");
  // Ready means its streams found on disk are settled: an adoption would be written to etcd by now.
  k = await spawnK();
  assert.match(k.output(), /stream "GONE" of account \$G \(placed [^)]+\) was deleted while this node was away; deleting the local copy/);
  assert.equal(readdirSync(join(dir, "k"), { recursive: true }).map(String).some((p) => p.endsWith(join("streams", "GONE", "meta.json"))), false, "k's copy deleted");
  // A placement made after k was ready: a has seen every change before it, so one k made would show.
  await jsm.streams.add({ name: "AFTERGONE", subjects: ["aftergone.>"] });
  assert.equal(placed("GONE"), undefined);
  assert.ok(!(await streamNames(jsm)).includes("GONE"));
});

test("a stream deleted and made again under its name while a node is away: placed on that node again, it holds the new stream's records only", async () => {
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await inSyncThenKAway(jsm, js, "AGAIN", "old", 10);
  await jsm.streams.delete("AGAIN");
  await jsm.streams.add({ name: "AGAIN", subjects: ["again.>"], num_replicas: 1 });
  for (let i = 0; i < 3; i++) await js.publish("again.x", `new-${i}`);
  // The old copy's placement as a node whose clock ran a minute ahead would have stamped it: placements are told apart, not ordered.
  const meta = parseStateFile(readFileSync(kMeta("AGAIN"), "utf8")) as { placed: string };
  writeFileSync(kMeta("AGAIN"), JSON.stringify({ ...meta, placed: new Date(Date.parse(meta.placed) + 60_000).toISOString() }));
  k = await spawnK();
  // Three replicas again: k hosts the new stream, in place of the old copy it set aside.
  await jsm.streams.update("AGAIN", { subjects: ["again.>"], num_replicas: 3 });
  await waitUntil(() => placed("AGAIN")!.isr?.[0].includes("k") === true, "k in the ISR of the new stream", 30_000);
  assert.match(k.output(), /Stream "AGAIN" is placed here as a stream made at .*are moved to /);
  await k.stop("SIGTERM");
  const where = readdirSync(join(dir, "k"), { recursive: true }).map(String).find((p) => p.endsWith(join("AGAIN", "p0")));
  assert.ok(where !== undefined, "k's copy of AGAIN on disk");
  const copy = await FileLog.open({ dir: join(dir, "k", where), limits: {} });
  try {
    assert.deepEqual(
      (await copy.scan(1, { maxMessages: 100 })).map((m) => m.data.toString()),
      ["new-0", "new-1", "new-2"],
    );
  } finally {
    await copy.close();
  }
  k = await spawnK();
});

/** k's meta.json of `stream`'s copy. */
function kMeta(stream: string): string {
  const where = readdirSync(join(dir, "k"), { recursive: true }).map(String).find((p) => p.endsWith(join("streams", stream, "meta.json")));
  assert.ok(where !== undefined, `k's copy of ${stream}`);
  return join(dir, "k", where);
}

test("a copy set aside because its placement is gone (etcd restored from an older backup) is kept on disk when its stream is made again", async () => {
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const cfg = { name: "RESTORED", subjects: ["restored.>"], placement: { cluster: "", tags: ["node:k"] } };
  await jsm.streams.add(cfg);
  for (let i = 0; i < 5; i++) await js.publish("restored.x", `only-copy-${i}`);
  await k.stop("SIGTERM");
  // etcd restored from a backup taken before RESTORED was made: its key is gone, and nothing says it was deleted (a delete
  // would name k among the nodes away, and k would delete its copy).
  await a.cluster!.metadata.commit([{ key: placementKey("$G", "RESTORED"), expect: null, delete: true }]);
  k = await spawnK();
  assert.match(k.output(), /Stream "RESTORED" is not served here: the cluster no longer has the stream it was placed as/);
  // The application starts and makes its stream, as NATS applications do (create-or-get): a new, empty stream...
  await jsm.streams.add(cfg);
  assert.equal((await jsm.streams.info("RESTORED")).state.messages, 0);
  // ...and the only copy of the old one is kept, out of its way, for the operator.
  assert.match(k.output(), /Stream "RESTORED" is placed here as a stream made at .*; the files of the copy set aside here .* are moved to /);
  const kept = readdirSync(join(dir, "k"), { recursive: true }).map(String).find((p) => p.includes(join("set-aside", "RESTORED.")) && p.endsWith("meta.json"));
  assert.ok(kept !== undefined, "the old copy under set-aside/");
  const log = await FileLog.open({ dir: join(dir, "k", kept.slice(0, -"meta.json".length), "p0"), limits: {} });
  try {
    assert.deepEqual((await log.scan(1, { maxMessages: 10 })).map((m) => m.data.toString()), [0, 1, 2, 3, 4].map((i) => `only-copy-${i}`));
  } finally {
    await log.close();
  }
});

test("a follower dropped by a scale-down while away and chosen again by a scale-up serves its copy again and rejoins", async () => {
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  await inSyncThenKAway(jsm, jetstream(nc), "SHRINK", "m", 5);
  await jsm.streams.update("SHRINK", { subjects: ["shrink.>"], num_replicas: 2 });
  assert.ok(!placed("SHRINK")!.replicas![0].includes("k"));
  k = await spawnK();
  await jsm.streams.update("SHRINK", { subjects: ["shrink.>"], num_replicas: 3 });
  assert.ok(placed("SHRINK")!.replicas![0].includes("k"));
  await waitUntil(() => placed("SHRINK")!.isr?.[0].includes("k") === true, "k in the ISR", 30_000);
  assert.match(k.output(), /Stream "SHRINK" is served here again/);
});

// Started again at once, k re-registers as its old key expires: either it hands the partition on (stepAside) or a follower
// has taken over by then. Either way no acknowledged record may be lost (before the change, k led on with its empty copy).
/**
 * The follower loses its lease for a moment (fenced: it registers again at
 * once) until k has taken it out of the ISR of `stream`. A blip as short as
 * the follower's delete and put of its key may reach k's watch as one
 * change, the follower never seen gone: then it blips again.
 */
async function blipUntilAlone(follower: NagareServer, stream: string): Promise<void> {
  const alone = (): boolean => JSON.stringify(placed(stream)!.isr) === JSON.stringify([["k"]]);
  for (let attempt = 1; ; attempt++) {
    follower.cluster!.membership.fence("a test's etcd blip");
    try {
      await waitUntil(alone, "the ISR k alone", 3000);
      return;
    } catch (err) {
      if (attempt >= 5) throw err;
      // Registered again (its next fence needs a lease to drop) before the next blip.
      await waitUntil(() => follower.cluster!.membership.holdsLease(), "the follower registered again", 10_000);
    }
  }
}

/** A fresh k leading a new memory stream `name` of `replicas`, made through `via`; its client. */
async function kLeadsMemoryStream(via: NagareServer, tag: string, name: string, replicas: number): Promise<JetStreamClient> {
  if (k.child.exitCode === null && k.child.signalCode === null) await k.stop("SIGKILL");
  k = await spawnK();
  const nc = await client(via.url);
  const jsm = await jetstreamManager(nc);
  await kLeadsNext(jsm, tag);
  const info = await jsm.streams.add({ name, subjects: [`${name.toLowerCase()}.>`], num_replicas: replicas, storage: StorageType.Memory });
  assert.equal(info.cluster?.leader, "k");
  return jetstream(nc);
}

test("SIGKILL of the leader of a memory stream, started again within its lease: no acknowledged publish is lost", async () => {
  const js = await kLeadsMemoryStream(a, "kc", "MEM", 3);
  const acked = await publishThrough(js, "MEM", 50, 50, async () => {});
  await k.stop("SIGKILL");
  // At once: its memory copy is empty, and it is named leader until it steps aside or its old lease runs out.
  k = await spawnK();
  await waitUntil(() => placed("MEM")?.leaders[0] !== "k", "another replica leading", 30_000);
  const next = await publishRetrying(js, "mem.x", "after");
  assert.equal(next, 51, "the next publish follows the acknowledged ones");
  const leader = placed("MEM")!.leaders[0];
  assert.deepEqual(placed("MEM")!.epochs, [2]);
  await checkAcked(leader === "a" ? a : b, "MEM", acked);
  // k follows and catches up: back in the ISR.
  await waitUntil(() => placed("MEM")!.isr![0].includes("k"), "k back in the ISR", 30_000);
});

test("SIGKILL of a leader that syncs on an interval, its unsynced tail lost as in a machine crash, started again within its lease: no acknowledged publish is lost", async () => {
  if (k.child.exitCode === null && k.child.signalCode === null) await k.stop("SIGKILL");
  const syncEvery = 'sync_interval: "2m"';
  k = await spawnK(undefined, syncEvery);
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  await kLeadsNext(jsm, "kf");
  const info = await jsm.streams.add({ name: "SYNCI", subjects: ["synci.>"], num_replicas: 3 });
  assert.equal(info.cluster?.leader, "k");
  const js = jetstream(nc);
  const acked = await publishThrough(js, "SYNCI", 50, 50, async () => {});
  await k.stop("SIGKILL");
  // What a machine crash leaves of a copy synced every 2 minutes: its tail gone (a killed process loses nothing it wrote).
  const where = readdirSync(join(dir, "k"), { recursive: true }).map(String).find((p) => p.endsWith(join("SYNCI", "p0")));
  assert.ok(where !== undefined, "k's copy of SYNCI on disk");
  const copy = await FileLog.open({ dir: join(dir, "k", where), limits: {} });
  await copy.truncateFrom(21);
  await copy.close();
  // Named leader until it steps aside or its old lease runs out (then a follower takes over, whichever comes first):
  // leading, it would cut the others back to 20.
  k = await spawnK(undefined, syncEvery);
  const next = await publishRetrying(js, "synci.x", "after");
  // Led on by k, this was 21: the others cut back to its 20.
  assert.equal(next, 51, "the next publish follows the acknowledged ones");
  const leader = placed("SYNCI")!.leaders[0];
  assert.notEqual(leader, "k");
  assert.deepEqual(placed("SYNCI")!.epochs, [2]);
  await checkAcked(leader === "a" ? a : b, "SYNCI", acked);
  // k follows, fetches what it lost and rejoins.
  await waitUntil(() => placed("SYNCI")!.isr![0].includes("k"), "k back in the ISR", 30_000);
});

test("a memory stream's leader alone in the ISR (its follower's lease blipped), killed and started again: the follower with every record leads", async () => {
  const js = await kLeadsMemoryStream(b, "kd", "MEM2", 2);
  const f = placed("MEM2")!.replicas![0].find((n) => n !== "k")!;
  const follower = f === "a" ? a : b;
  const acked = await publishThrough(js, "MEM2", 50, 50, async () => {});
  await waitUntil(() => follower.jetstream!.streams.get("MEM2")!.partitions[0].state().lastSeq === 50, "the follower holds all 50");
  // The follower loses its lease for a moment: k takes it out of the ISR (its copy stays whole; no write is acknowledged meanwhile).
  await blipUntilAlone(follower, "MEM2");
  await k.stop("SIGKILL");
  k = await spawnK();
  // k's copy is empty: it asks both replicas what they hold and gives the partition to the follower, which has every record.
  await waitUntil(() => placed("MEM2")?.leaders[0] === f, `${f} leading`, 30_000);
  assert.deepEqual(placed("MEM2")!.isr, [[f]]);
  await checkAcked(follower, "MEM2", acked);
  assert.equal(follower.jetstream!.streams.get("MEM2")!.partitions[0].state().lastSeq, 50);
  // k follows, catches up and rejoins: two in sync again, writes go on after the acknowledged ones.
  await waitUntil(() => placed("MEM2")!.isr![0].includes("k"), "k back in the ISR", 30_000);
  // The leader acts on the new ISR once its own watch of the placement has it, which may be after this node's (a):
  // until then it refuses the write (503, too few in sync, before storing it; the message id makes a retry safe).
  let next = 0;
  await waitUntilAsync(async () => {
    try {
      next = (await js.publish("mem2.x", "after", { msgID: "after2", timeout: 5000 })).seq;
      return true;
    } catch (err) {
      if (/in-sync replicas, 2 needed$/.test((err as Error).message)) return false;
      throw err;
    }
  }, "the leader to count k in sync", 30_000);
  assert.equal(next, 51);
});

test("a memory stream's follower keeps its copy across a change of leader: it cuts nothing it shares with the new one", async () => {
  const nc = await client(a.url);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "MEMEP", subjects: ["memep.>"], num_replicas: 3, storage: StorageType.Memory });
  for (let i = 0; i < 20; i++) await js.publish("memep.x", `m-${i}`);
  await waitUntil(() => placed("MEMEP")!.isr![0].length === 3, "every replica in sync", 30_000);
  // A new leader, twice, so that k follows a new epoch whatever it was (each leader hands the partition to the next).
  for (let round = 0; round < 2; round++) {
    const before = placed("MEMEP")!.epochs![0];
    const answer = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.MEMEP", "", { timeout: 10_000 })).data)) as { success?: boolean; error?: unknown };
    assert.equal(answer.success, true, JSON.stringify(answer));
    await waitUntil(() => placed("MEMEP")!.epochs![0] > before && placed("MEMEP")!.isr![0].length === 3 && takenUp("MEMEP"), "a new leader, leading, with every replica in sync", 30_000);
  }
  await js.publish("memep.x", "after");
  // With a fresh epoch checkpoint per role, a follower of each new epoch cut its whole copy and fetched it again.
  assert.doesNotMatch(k.output(), /stream "MEMEP": truncated/);
});

test("while a memory stream's restarted leader waits for a replica to take over, its info, messages and listing are not answered from its empty copy", async () => {
  const js = await kLeadsMemoryStream(b, "ke", "MEM4", 2);
  const f = placed("MEM4")!.replicas![0].find((n) => n !== "k")!;
  const follower = f === "a" ? a : b;
  const other = f === "a" ? b : a;
  await publishThrough(js, "MEM4", 10, 10, async () => {});
  await waitUntil(() => follower.jetstream!.streams.get("MEM4")!.partitions[0].state().lastSeq === 10, "the follower holds all 10");
  await blipUntilAlone(follower, "MEM4");
  // The follower goes down too: k, back with an empty copy and alone in the ISR, has no replica to hand over to, and waits.
  await follower.close();
  // Gone from etcd before k restarts (a registration not revoked lasts out its lease): k must not find it live.
  await waitUntil(() => !other.cluster!.placements.isLive(f), "the follower gone from the cluster, as the other node sees it", 30_000);
  await k.stop("SIGKILL");
  k = await spawnK(() => [other]);
  await waitUntil(() => /stream "MEM4".*wait/i.test(k.output()), "k waiting for a replica to take over", 30_000).catch((err: Error) => {
    // What k did instead, and what it was told: a failure here says why.
    throw new Error(`${err.message}; placement ${JSON.stringify(placed("MEM4"))}; k said:\n${k.output().slice(-4000)}`);
  });
  const nc = await client(k.url);
  const jsm = await jetstreamManager(nc);
  // nats-server's "stream is offline" rather than a stream of 0 messages, or "no message found" for sequence 1; a purge or
  // a delete is not done on the empty copy alone (the follower returning would then lead without them).
  const offline = (err: Error): boolean => /offline/i.test(err.message);
  await Promise.all([
    assert.rejects(jsm.streams.info("MEM4"), offline),
    assert.rejects(jsm.streams.getMessage("MEM4", { seq: 1 }), offline),
    assert.rejects(jsm.streams.purge("MEM4"), offline),
    assert.rejects(jsm.streams.deleteMessage("MEM4", 2), offline),
  ]);
  // Nor listed from it: STREAM.LIST names it missing, on k and through the other node (which asks k); an application's
  // create-or-get with the same config is not answered with an empty stream either.
  for (const via of [nc, await client(other.url)]) {
    const list = JSON.parse(new TextDecoder().decode((await via.request("$JS.API.STREAM.LIST", "{}", { timeout: 10_000 })).data)) as { streams?: Array<{ config: { name: string } }>; missing?: string[] };
    assert.ok(!(list.streams ?? []).some((s) => s.config.name === "MEM4"), "not listed from the empty copy");
    assert.ok(list.missing?.includes("MEM4"), `MEM4 missing (${JSON.stringify(list.missing)})`);
  }
  await assert.rejects(jsm.streams.add({ name: "MEM4", subjects: ["mem4.>"], num_replicas: 2, storage: StorageType.Memory }), offline);
  // Nor rescaled around it: one replica would be this empty copy alone, the follower's records dropped.
  // (Sent as it is: a client's update first asks for the info, now refused itself.)
  const update = { name: "MEM4", subjects: ["mem4.>"], num_replicas: 1, storage: "memory" };
  const answer = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.UPDATE.MEM4", JSON.stringify(update), { timeout: 10_000 })).data)) as { error?: { description?: string } };
  assert.match(answer.error?.description ?? "", /offline/i, JSON.stringify(answer));
  assert.equal(placed("MEM4")!.replicas![0].length, 2);
  assert.equal(placed("MEM4")!.leaders[0], "k");
  // The follower returns for the tests after this one (its memory copy did not survive its close).
  const back = await startJetStreamNode({ etcd: etcd.endpoint, dir, cluster: clusterName }, f);
  if (f === "a") a = back;
  else b = back;
});
