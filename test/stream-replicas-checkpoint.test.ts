/**
 * The replicas' high-watermark checkpoint (stream-replicas.ts): a node
 * that starts again as a partition's leader starts its readers from the
 * high watermark it last wrote down (Kafka's replication-offset
 * checkpoint), not from nothing while its followers fetch again; a stream
 * made again under the same name does not inherit its predecessor's.
 * And a follower's bar on leading (`followerBar`), kept across restarts
 * and leaderships.
 *
 * The host is a stand-in (as stream-replicas-close.test.ts): this node
 * "b" leads a partition replicated to "a", which never answers.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { followerBar, StreamReplicas, type ReplicaHost } from "../src/streams/stream-replicas.js";
import type { ClusterStreams, PlacedStream } from "../src/streams/cluster-streams.js";
import type { Stream } from "../src/streams/stream.js";
import { startJs, type JsHarness } from "./helpers/js.js";
import { parseStateFile } from "../src/util/persist.js";

type Hook = (account: string, stream: string, local: Stream | undefined, placed: PlacedStream | undefined) => Promise<void>;

function standIn(js: ReplicaHost["js"]): { host: ReplicaHost; hooks: Set<Hook> } {
  const hooks = new Set<Hook>();
  const cluster = { self: "b", replicaHooks: hooks, directory: { isLive: () => true, onMembers: () => () => {} } } as unknown as ClusterStreams;
  const host: ReplicaHost = { js, cluster, request: () => new Promise<Buffer | null>(() => {}), answer: () => {}, holdsLease: () => true };
  return { host, hooks };
}

/** Led by "b" with "a" as the other replica; `isr` as given; made now (after the StreamReplicas that takes it up began: not a leadership from before a restart). */
function placement(account: string, isr: string[]): PlacedStream {
  return { account, stream: "R", leaders: ["b"], tags: [], cluster: "c", subjects: ["r"], origin: "jetstream", config: {}, replicas: [["b", "a"]], epochs: [1], isr: [isr], created: new Date().toISOString() };
}

/** A stream R of ten messages, on one node. */
async function tenMessages(): Promise<{ h: JsHarness; stream: Stream }> {
  const h = await startJs();
  await (await jetstreamManager(h.nc)).streams.add({ name: "R", subjects: ["r"] });
  const js = jetstream(h.nc);
  for (let i = 0; i < 10; i++) await js.publish("r", `m${i}`);
  return { h, stream: h.srv.jetstream!.streams.get("R")! };
}

/** Takes the leadership of R's partition up with a fresh StreamReplicas (as a node just started does) and returns what readers may read up to. */
async function lead(h: JsHarness, isr: string[]): Promise<{ replicas: StreamReplicas; readable: number }> {
  const js = h.srv.jetstream!;
  const { host, hooks } = standIn(js);
  const replicas = new StreamReplicas(host);
  const [settle] = hooks;
  await settle(js.account.name, "R", js.streams.get("R"), placement(js.account.name, isr));
  assert.equal(replicas.leads("R"), true);
  return { replicas, readable: js.streams.get("R")!.replicatedSeq(0) };
}

const checkpointFile = (h: JsHarness) => join(h.srv.jetstream!.options.storeDir, "replica-checkpoint.json");

/** Partition 0's high watermark in the checkpoint file, or null when it names none (torn, another stream's). */
function readCheckpointFile(h: JsHarness): number | null {
  try {
    const c = parseStateFile(readFileSync(checkpointFile(h), "utf8")) as { R?: { hw?: number[] } };
    return c.R?.hw?.[0] ?? null;
  } catch {
    return null;
  }
}

/** Checkpoints as a node could find them at start, and what readers of the ten messages may read once it leads. */
const FOUND: Array<{ what: string; file: (created: Date) => string; readable: number }> = [
  // Sequences below 8 were on every in-sync replica when it was written: readers see them at once.
  { what: "its own", file: (created) => JSON.stringify({ R: { created: created.toISOString(), hw: [8] } }), readable: 7 },
  // Past the log's end (the log lost what it had not synced): held to the log.
  { what: "one past the log's end", file: (created) => JSON.stringify({ R: { created: created.toISOString(), hw: [50] } }), readable: 10 },
  // Of a stream deleted and made again under the name: nothing until the followers fetch.
  { what: "another stream's of the same name", file: (created) => JSON.stringify({ R: { created: new Date(created.getTime() - 1000).toISOString(), hw: [8] } }), readable: 0 },
  { what: "a torn one", file: () => "{ torn", readable: 0 },
];

for (const found of FOUND) {
  test(`a leader started again with ${found.what} as its checkpoint lets readers read up to ${found.readable}`, async () => {
    const { h, stream } = await tenMessages();
    try {
      writeFileSync(checkpointFile(h), found.file(stream.created));
      const { replicas, readable } = await lead(h, ["b", "a"]);
      assert.equal(readable, found.readable);
      // Whatever was found, the file holds nothing past the log's end once leading: records written from now on
      // (replicated or not) must not be covered by it at the next start.
      const now = readCheckpointFile(h);
      assert.ok(now === null || now <= 11, `the checkpoint says ${now} with the log ending at 11`);
      await replicas.close();
    } finally {
      await h.close();
    }
  });
}

test("the leader writes its high watermark down", async () => {
  const { h, stream } = await tenMessages();
  try {
    // In sync alone: the high watermark is the log's end at once.
    const { replicas, readable } = await lead(h, ["b"]);
    assert.equal(readable, 10);
    await replicas.writeCheckpoint();
    assert.deepEqual(parseStateFile(readFileSync(checkpointFile(h), "utf8")), { R: { created: stream.created.toISOString(), hw: [11] } });
    await replicas.close();
  } finally {
    await h.close();
  }
});

test("a follower's bar on leading outlives its leadership; an unreadable one bars leading until a reconciliation lowers it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-bar-"));
  try {
    const path = join(dir, "follower-bar.json");
    assert.equal((await followerBar(path, 1)).initial, 0, "none written: no bar");
    await (await followerBar(path, 1)).save(32);
    // A follower of the next leadership starts with it: the tail its predecessor cut is not seen again by a reconciliation.
    assert.equal((await followerBar(path, 2)).initial, 32);
    writeFileSync(path, "{ torn");
    assert.equal((await followerBar(path, 2)).initial, Number.MAX_SAFE_INTEGER);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("values past the log's end lowered at one start, by settles that overlap a write under way, all reach the file", async () => {
  const h = await startJs();
  try {
    const jsm = await jetstreamManager(h.nc);
    const js = jetstream(h.nc);
    for (const n of ["R", "S"]) {
      await jsm.streams.add({ name: n, subjects: [n.toLowerCase()] });
      for (let i = 0; i < 10; i++) await js.publish(n.toLowerCase(), `m${i}`);
    }
    const jss = h.srv.jetstream!;
    const created = (n: string) => jss.streams.get(n)!.created.toISOString();
    writeFileSync(checkpointFile(h), JSON.stringify({ R: { created: created("R"), hw: [50] }, S: { created: created("S"), hw: [50] } }));
    const { host, hooks } = standIn(jss);
    const replicas = new StreamReplicas(host);
    const [settle] = hooks;
    // S's settle reaches the checkpoint while R's lowering is being written (another stream's settle, or the 5 s timer).
    let writing!: () => void;
    const started = new Promise<void>((resolve) => (writing = resolve));
    const write = replicas.writeCheckpoint.bind(replicas);
    replicas.writeCheckpoint = () => {
      const done = write();
      writing();
      return done;
    };
    const placed = (name: string): PlacedStream => ({ ...placement(jss.account.name, ["b", "a"]), stream: name, subjects: [name.toLowerCase()] });
    const r = settle(jss.account.name, "R", jss.streams.get("R"), placed("R"));
    await started;
    const s = settle(jss.account.name, "S", jss.streams.get("S"), placed("S"));
    await Promise.all([r, s]);
    const onDisk = parseStateFile(readFileSync(checkpointFile(h), "utf8")) as Record<string, { hw: number[] }>;
    await replicas.close();
    assert.ok(onDisk.R.hw[0] <= 11 && onDisk.S.hw[0] <= 11, `the file once both lead: ${JSON.stringify(onDisk)}`);
  } finally {
    await h.close();
  }
});

for (const syncInterval of ["always", 1000] as const) {
  test(`a node (sync ${syncInterval}) that led a partition with every record, now following in the next epoch, may lead again at once`, async () => {
    const h = await startJs({ server: { syncInterval } });
    try {
      await (await jetstreamManager(h.nc)).streams.add({ name: "R", subjects: ["r"] });
      const js = jetstream(h.nc);
      for (let i = 0; i < 10; i++) await js.publish("r", `m${i}`);
      const jss = h.srv.jetstream!;
      const { host, hooks } = standIn(jss);
      const replicas = new StreamReplicas(host);
      const [settle] = hooks;
      await settle(jss.account.name, "R", jss.streams.get("R"), placement(jss.account.name, ["b", "a"]));
      assert.equal(replicas.leads("R"), true);
      // "a" leads epoch 2 and never answers: this copy lost nothing in this process, so its bar is none, known or not on disk.
      await settle(jss.account.name, "R", jss.streams.get("R"), { ...placement(jss.account.name, ["a", "b"]), leaders: ["a"], replicas: [["a", "b"]], epochs: [2] });
      const role = (replicas as unknown as { roles: Map<string, { kind: string; follower: { mayLead: boolean } }> }).roles.get("R/0")!;
      assert.equal(role.kind, "follower");
      assert.equal(role.follower.mayLead, true);
      await replicas.close();
    } finally {
      await h.close();
    }
  });
}
