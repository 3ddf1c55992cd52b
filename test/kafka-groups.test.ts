/**
 * Consumer groups as Apache Kafka's classic coordinator runs them, where it
 * matters for work done twice or lost: which offset commits are accepted in
 * which group state (by hand, on the wire, against GroupCoordinator's rules),
 * and what real clients do with that around a rebalance (KafkaJS and kcat
 * commit what they processed right before they rejoin), up to a KafkaJS
 * group whose members come and go under a continuous producer.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import type { Consumer } from "kafkajs";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { GroupCoordinator } from "../src/protocols/kafka/groups.js";
import { parseStateFile, stateFileText } from "../src/util/persist.js";
import { join as joinPath } from "node:path";
import { createTopic as createKafkaTopic, kcat, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { frame, RawKafka } from "./helpers/kafka-raw.js";
import { call, heartbeat, joinGroup, syncAssignment, type JoinOptions, type Joined } from "./helpers/kafka-group-requests.js";

const NONE = 0;
const NOT_COORDINATOR = 16;
const INCONSISTENT_GROUP_PROTOCOL = 23;
const INVALID_GROUP_ID = 24;
const UNKNOWN_TOPIC_OR_PARTITION = 3;
const OFFSET_METADATA_TOO_LARGE = 12;
const ILLEGAL_GENERATION = 22;
const UNKNOWN_MEMBER_ID = 25;
const REBALANCE_IN_PROGRESS = 27;
const MEMBER_ID_REQUIRED = 79;
const FENCED_INSTANCE_ID = 82;

/** A member in a group: the KIP-394 round trip for its id, then the join itself. */
async function join(k: RawKafka, group: string, instanceId: string | null = null): Promise<Joined> {
  const first = await joinGroup(k, group, "", instanceId);
  if (instanceId !== null) return first; // KIP-345: a static member is never asked to come back with an id
  assert.equal(first.error, MEMBER_ID_REQUIRED);
  return joinGroup(k, group, first.memberId, instanceId);
}

async function syncGroup(k: RawKafka, group: string, generation: number, memberId: string, assignments: string[] = [], instanceId: string | null = null): Promise<number> {
  return (await syncAssignment(k, group, generation, memberId, assignments, instanceId)).error;
}

interface Commit {
  generation: number;
  memberId: string;
  instanceId?: string | null;
  /** [topic, partition, offset, metadata, committed leader epoch (-1 when absent)] */
  offsets: Array<[string, number, number, string | null, number?]>;
}

/** OffsetCommit v7: the error of each partition, in request order. */
async function commit(k: RawKafka, group: string, c: Commit): Promise<number[]> {
  const r = await call(k, 8, 7, (w) => {
    w.string(group).i32(c.generation).string(c.memberId).nullableString(c.instanceId ?? null);
    w.arrayLength(c.offsets.length);
    for (const [topic, partition, offset, metadata, epoch = -1] of c.offsets) w.string(topic).arrayLength(1).i32(partition).i64(offset).i32(epoch).nullableString(metadata);
  });
  r.i32();
  return r.array((r) => {
    r.string();
    return r.array((r) => {
      r.i32();
      return r.i16();
    });
  }).flat();
}

/** OffsetFetch v5 of one partition: the committed offset, -1 when none. */
async function committed(k: RawKafka, group: string, topic: string, partition: number): Promise<number> {
  return (await committedWithEpoch(k, group, topic, partition))[0];
}

/** OffsetFetch v5: the committed offset and its leader epoch (KIP-320). */
async function committedWithEpoch(k: RawKafka, group: string, topic: string, partition: number): Promise<[number, number]> {
  const r = await call(k, 9, 5, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(partition));
  r.i32();
  r.i32(); // topics
  r.string();
  r.i32(); // partitions
  r.i32();
  return [r.i64(), r.i32()];
}

interface DescribedGroup {
  state: string;
  protocol: string;
  members: Array<{ id: string; host: string; metadata: string; assignment: string }>;
}

/** The group as DescribeGroups v4 reports it. */
async function describeGroup(k: RawKafka, group: string): Promise<DescribedGroup> {
  const r = await call(k, 15, 4, (w) => w.arrayLength(1).string(group).i8(0));
  r.i32();
  r.i32(); // groups
  r.i16();
  r.string();
  const state = r.string();
  r.string(); // protocol type
  const protocol = r.string();
  const members = r.array((r) => {
    const id = r.string();
    r.nullableString(); // instance id
    r.string(); // client id
    const host = r.string();
    return { id, host, metadata: r.nullableBytes()?.toString() ?? "", assignment: r.nullableBytes()?.toString() ?? "" };
  });
  return { state, protocol, members };
}

/** The group's state as DescribeGroups v4 reports it ("Dead" for a group the broker does not know). */
async function groupState(k: RawKafka, group: string): Promise<string> {
  return (await describeGroup(k, group)).state;
}

/** The hosts of the group's members as DescribeGroups v4 reports them. */
async function memberHosts(k: RawKafka, group: string): Promise<string[]> {
  return (await describeGroup(k, group)).members.map((m) => m.host);
}

/** A long-running kcat whose output lines are collected as they come. */
interface KcatProcess {
  child: ChildProcess;
  lines: string[];
  stderr: string;
  stop(): Promise<void>;
}

function kcatRunning(args: string[]): KcatProcess {
  const child = spawn("kcat", args, { stdio: ["ignore", "pipe", "pipe"] });
  let partial = "";
  const p: KcatProcess = {
    child,
    lines: [],
    stderr: "",
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("close", () => resolve());
        // SIGTERM: kcat closes its consumer, which commits and leaves the group.
        child.kill("SIGTERM");
      }),
  };
  child.stdout!.on("data", (d: Buffer) => {
    const parts = (partial + d.toString()).split("\n");
    partial = parts.pop()!;
    p.lines.push(...parts);
  });
  child.stderr!.on("data", (d: Buffer) => (p.stderr += d.toString()));
  return p;
}

test("a commit still being written when its offsets are forgotten (a deleted topic, OffsetDelete) does not bring them back", async () => {
  const dir = mkdtempSync(joinPath(tmpdir(), "nagare-groups-"));
  try {
    const timing = { initialRebalanceDelayMs: 0, minSessionTimeoutMs: 6000, maxSessionTimeoutMs: 1_800_000 };
    const c = new GroupCoordinator(dir, timing as ConstructorParameters<typeof GroupCoordinator>[1], () => undefined);
    const g = c.group("g", true)!;
    await g.commit([["t/0", { offset: 5, metadata: null, leaderEpoch: -1 }]]);
    const late = g.commit([["t/0", { offset: 10, metadata: null, leaderEpoch: -1 }]]);
    await Promise.all([late, c.forgetTopic("t")]);
    const late2 = g.commit([["u/0", { offset: 3, metadata: null, leaderEpoch: -1 }]]);
    await Promise.all([late2, g.forget(["u/0"])]);
    assert.deepEqual([...g.offsets.keys()], [], "nothing forgotten comes back in memory");
    const again = new GroupCoordinator(dir, timing as ConstructorParameters<typeof GroupCoordinator>[1], () => undefined);
    await again.load();
    assert.deepEqual([...(again.group("g", false)?.offsets.keys() ?? [])], [], "nor in the group's file");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("Kafka consumer groups: offset commits around rebalances", () => {
  let h: KafkaHarness;

  before(async () => {
    h = await startKafka({ initialRebalanceDelayMs: 0 });
  });
  after(async () => h.close());

  const createTopic = (topic: string, numPartitions: number): Promise<void> => createKafkaTopic(h, topic, numPartitions);

  test("an empty group id is INVALID_GROUP_ID to JoinGroup, SyncGroup, Heartbeat and LeaveGroup (top-level, v3+), as Kafka's coordinator answers", async () => {
    const k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      assert.equal((await joinGroup(k, "", "")).error, INVALID_GROUP_ID);
      assert.equal((await syncAssignment(k, "", 1, "m")).error, INVALID_GROUP_ID);
      assert.equal(await heartbeat(k, "", 1, "m"), INVALID_GROUP_ID);
      const r = await call(k, 13, 3, (w) => w.string("").arrayLength(1).string("m").nullableString(null));
      r.i32();
      assert.equal(r.i16(), INVALID_GROUP_ID);
      assert.equal(r.i32(), 0, "no member answered");
    } finally {
      k.destroy();
    }
  });

  test("OffsetCommit is judged as Kafka's coordinator judges it, in every group state", { timeout: 30_000 }, async () => {
    const topic = "commit.states";
    await createTopic(topic, 2);
    const admin = await RawKafka.open(h.srv.kafkaPort!);
    const m1 = await RawKafka.open(h.srv.kafkaPort!);
    const m2 = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const at = (offset: number): Commit["offsets"] => [[topic, 0, offset, null]];

      // No such group: a simple consumer (generation -1, no member) creates it; anyone else is from an older generation.
      assert.deepEqual(await commit(admin, "simple", { generation: -1, memberId: "", offsets: at(5) }), [NONE]);
      assert.equal(await committed(admin, "simple", topic, 0), 5);
      assert.deepEqual(await commit(admin, "nobody", { generation: 3, memberId: "m", offsets: at(1) }), [ILLEGAL_GENERATION]);
      assert.equal(await groupState(admin, "nobody"), "Dead", "a refused commit creates no group");
      // An unknown partition is named as such, whatever the group says; the others are judged by the group.
      assert.deepEqual(await commit(admin, "simple", { generation: -1, memberId: "", offsets: [[topic, 7, 1, null], ["no.such.topic", 0, 1, null], [topic, 1, 2, null]] }), [
        UNKNOWN_TOPIC_OR_PARTITION,
        UNKNOWN_TOPIC_OR_PARTITION,
        NONE,
      ]);
      // offset.metadata.max.bytes (4096): the partition is refused, the rest stored.
      assert.deepEqual(await commit(admin, "simple", { generation: -1, memberId: "", offsets: [[topic, 0, 6, "x".repeat(4097)], [topic, 1, 3, "x".repeat(4096)]] }), [
        OFFSET_METADATA_TOO_LARGE,
        NONE,
      ]);
      assert.equal(await committed(admin, "simple", topic, 0), 5);
      assert.equal(await committed(admin, "simple", topic, 1), 3);

      // Stable, generation 1, one member.
      const g = "states";
      const a = await join(m1, g);
      assert.equal(a.error, NONE);
      assert.equal(a.generation, 1);
      assert.equal(await syncGroup(m1, g, 1, a.memberId, [a.memberId]), NONE);
      assert.equal(await groupState(admin, g), "Stable");
      assert.deepEqual(await commit(admin, g, { generation: -1, memberId: "", offsets: at(1) }), [UNKNOWN_MEMBER_ID], "only members commit to a group that has some");
      assert.deepEqual(await commit(admin, g, { generation: 1, memberId: "stranger", offsets: at(1) }), [UNKNOWN_MEMBER_ID]);
      assert.deepEqual(await commit(m1, g, { generation: 0, memberId: a.memberId, offsets: at(1) }), [ILLEGAL_GENERATION]);
      assert.deepEqual(await commit(m1, g, { generation: -1, memberId: a.memberId, offsets: at(1) }), [ILLEGAL_GENERATION]);
      assert.deepEqual(await commit(m1, g, { generation: 1, memberId: a.memberId, offsets: at(10) }), [NONE]);

      // A second member joins: PreparingRebalance until the first rejoins. Its commits still count.
      const bJoined = join(m2, g);
      await waitUntilState(admin, g, "PreparingRebalance");
      assert.equal(await heartbeat(m1, g, 1, a.memberId), REBALANCE_IN_PROGRESS);
      assert.deepEqual(await commit(m1, g, { generation: 1, memberId: a.memberId, offsets: at(20) }), [NONE], "the commit a client makes right before it rejoins");
      assert.equal(await committed(admin, g, topic, 0), 20);
      assert.equal(await heartbeat(m1, g, 0, a.memberId), ILLEGAL_GENERATION, "the generation is checked before the state, as Kafka does");

      // The first rejoins: CompletingRebalance, generation 2, until the leader's assignment.
      const a2 = await joinGroup(m1, g, a.memberId);
      const b = await bJoined;
      assert.equal(a2.generation, 2);
      assert.equal(b.generation, 2);
      assert.equal(await groupState(admin, g), "CompletingRebalance");
      assert.deepEqual(await commit(m1, g, { generation: 2, memberId: a.memberId, offsets: at(21) }), [REBALANCE_IN_PROGRESS]);
      assert.deepEqual(await commit(m1, g, { generation: 1, memberId: a.memberId, offsets: at(21) }), [ILLEGAL_GENERATION]);
      assert.equal(await heartbeat(m2, g, 2, b.memberId), NONE, "a member of the new generation heartbeats while the assignment is awaited");
      const leader = a2.leader === a.memberId ? m1 : m2;
      const follower = leader === m1 ? m2 : m1;
      const followerSync = syncGroup(follower, g, 2, leader === m1 ? b.memberId : a.memberId);
      assert.equal(await syncGroup(leader, g, 2, a2.leader, [a.memberId, b.memberId]), NONE);
      assert.equal(await followerSync, NONE);
      assert.deepEqual(await commit(m2, g, { generation: 2, memberId: b.memberId, offsets: at(30) }), [NONE]);
      assert.equal(await committed(admin, g, topic, 0), 30);

      // Static membership: the instance id names the member; an older member id of the same instance is fenced.
      const s = "static";
      const s1 = await join(m1, s, "instance-1");
      assert.equal(await syncGroup(m1, s, s1.generation, "an-older-id", [], "instance-1"), FENCED_INSTANCE_ID);
      assert.equal(await syncGroup(m1, s, s1.generation, s1.memberId, [s1.memberId], "instance-1"), NONE);
      assert.deepEqual(await commit(m1, s, { generation: s1.generation, memberId: s1.memberId, instanceId: "instance-1", offsets: at(1) }), [NONE]);
      assert.deepEqual(await commit(m1, s, { generation: s1.generation, memberId: "an-older-id", instanceId: "instance-1", offsets: at(2) }), [FENCED_INSTANCE_ID]);
      assert.deepEqual(await commit(m1, s, { generation: s1.generation, memberId: s1.memberId, instanceId: "instance-2", offsets: at(2) }), [UNKNOWN_MEMBER_ID]);
      assert.equal(await heartbeat(m1, s, s1.generation, "an-older-id", "instance-1"), FENCED_INSTANCE_ID);

      // Once everyone has left the group is Empty, and simple commits are taken again.
      m1.send(frame(13, 3, (w) => w.string(g).arrayLength(2).string(a.memberId).nullableString(null).string(b.memberId).nullableString(null), 99));
      await waitUntilState(admin, g, "Empty");
      assert.deepEqual(await commit(admin, g, { generation: -1, memberId: "", offsets: at(40) }), [NONE]);
      assert.deepEqual(await commit(admin, g, { generation: 2, memberId: a.memberId, offsets: at(41) }), [UNKNOWN_MEMBER_ID]);
      assert.equal(await committed(admin, g, topic, 0), 40);
    } finally {
      for (const k of [admin, m1, m2]) k.destroy();
    }
  });

  /** Polls DescribeGroups on a connection of its own (JoinGroup responses may be outstanding on the others). */
  async function waitUntilState(k: RawKafka, group: string, state: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    let last = "";
    while ((last = await groupState(k, group)) !== state) {
      if (Date.now() > deadline) throw new Error(`group ${group} is ${last}, not ${state}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  test("a committed offset of Long.MAX_VALUE is fetched back as Kafka hands it back, not an answer that fails", async () => {
    await createTopic("commit.max", 1);
    const k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      // 2^63-1 written byte by byte: as a number it is 2^63, which no INT64 writer takes.
      const r = await call(k, 8, 7, (w) => w.string("maxed").i32(-1).string("").nullableString(null).arrayLength(1).string("commit.max").arrayLength(1).i32(0).i32(0x7fffffff).u32(0xffffffff).i32(-1).nullableString(null));
      r.i32();
      assert.deepEqual(r.array((r) => (r.string(), r.array((r) => (r.i32(), r.i16())))).flat(), [NONE]);
      // The OffsetFetch answer used to throw (RangeError) as it was written: the connection closed, for this group's every fetch.
      const f = await call(k, 9, 5, (w) => w.string("maxed").arrayLength(1).string("commit.max").arrayLength(1).i32(0));
      f.i32();
      f.i32(); // topics
      f.string();
      f.i32(); // partitions
      assert.equal(f.i32(), 0);
      assert.deepEqual([f.i32(), f.u32()], [0x7fffffff, 0xffffffff]);
    } finally {
      k.destroy();
    }
  });

  test("a refused JoinGroup makes no group, and a group with nothing to keep (no member, no offset) is gone, as Kafka's coordinator cleans it up", { timeout: 30_000 }, async () => {
    await createTopic("ghost.topic", 1);
    const k = await RawKafka.open(h.srv.kafkaPort!);
    const admin = await RawKafka.open(h.srv.kafkaPort!);
    try {
      // Refused before any group is made: a session timeout out of bounds, and a member id the group cannot know.
      assert.equal((await joinGroup(k, "ghost.timeout", "", null, { sessionMs: 10 })).error, 26, "INVALID_SESSION_TIMEOUT");
      assert.equal((await joinGroup(k, "ghost.timeout", "", null, { sessionMs: 5999 })).error, 26, "below Kafka's group.min.session.timeout.ms");
      assert.equal((await joinGroup(k, "ghost.timeout", "", null, { sessionMs: 1_800_001 })).error, 26, "above Kafka's group.max.session.timeout.ms");
      assert.equal((await joinGroup(k, "ghost.member", "an-id-never-given")).error, UNKNOWN_MEMBER_ID);
      assert.equal(await groupState(admin, "ghost.timeout"), "Dead");
      assert.equal(await groupState(admin, "ghost.member"), "Dead");
      // A member id handed out (KIP-394) and never used: the group goes once it expires, after the session timeout.
      assert.equal((await joinGroup(k, "ghost.pending", "", null, { sessionMs: 6000 })).error, MEMBER_ID_REQUIRED);
      assert.equal(await groupState(admin, "ghost.pending"), "Empty");
      await waitUntilAsync(async () => (await groupState(admin, "ghost.pending")) === "Dead", "the unused group gone", 15_000);
      // A member that joins and leaves without committing: the group goes with it; one with an offset stays, Empty.
      for (const [g, commits] of [["ghost.left", false], ["kept.left", true]] as const) {
        const m = await join(k, g);
        assert.equal(await syncGroup(k, g, m.generation, m.memberId, [m.memberId]), NONE);
        // The member's host as Kafka gives it (Java's InetAddress.toString): what kafka-consumer-groups shows.
        assert.deepEqual(await memberHosts(admin, g), ["/127.0.0.1"]);
        if (commits) assert.deepEqual(await commit(k, g, { generation: m.generation, memberId: m.memberId, offsets: [["ghost.topic", 0, 5, null]] }), [NONE]);
        k.send(frame(13, 3, (w) => w.string(g).arrayLength(1).string(m.memberId).nullableString(null), 98));
        await waitUntilState(admin, g, commits ? "Empty" : "Dead");
      }
    } finally {
      k.destroy();
      admin.destroy();
    }
  });

  test("a restarted broker keeps each group's generation and members, which go on without a rebalance, as Kafka's", { timeout: 30_000 }, async () => {
    let k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const m = await join(k, "kept.members");
      assert.equal(await syncGroup(k, "kept.members", m.generation, m.memberId, [m.memberId]), NONE);
      // Recorded after the members have their assignments: wait until the file says so.
      const found = (): string | undefined => (readdirSync(h.storeDir, { recursive: true }) as string[]).find((f) => f.endsWith(joinPath("groups", "kept.members.json")));
      await waitUntil(() => {
        const f = found();
        return f !== undefined && readFileSync(joinPath(h.storeDir, f), "utf8").includes(m.memberId);
      }, "the generation recorded");
      k.destroy();
      await h.restart();
      k = await RawKafka.open(h.srv.kafkaPort!);
      assert.equal(await heartbeat(k, "kept.members", m.generation, m.memberId), NONE, "the member is still in its generation");
      const kept = await describeGroup(k, "kept.members");
      assert.deepEqual([kept.state, kept.members.map((x) => [x.id, x.assignment])], ["Stable", [[m.memberId, m.memberId]]]);
      assert.deepEqual((await syncAssignment(k, "kept.members", m.generation, m.memberId)).assignment, m.memberId, "its assignment kept");
      // Once it leaves, the group has nothing to keep (no offset): it is gone, and stays gone across a restart.
      await call(k, 13, 3, (w) => w.string("kept.members").arrayLength(1).string(m.memberId).nullableString(null));
      await waitUntilAsync(async () => (await groupState(k, "kept.members")) === "Dead", "the group gone");
      await waitUntil(() => found() === undefined, "its file removed");
      k.destroy();
      await h.restart();
      k = await RawKafka.open(h.srv.kafkaPort!);
      assert.equal(await groupState(k, "kept.members"), "Dead");
    } finally {
      k.destroy();
    }
  });

  test("a JoinGroup without a protocol type or protocols gets Kafka's INCONSISTENT_GROUP_PROTOCOL", async () => {
    const k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const joinError = async (protocolType: string, protocols: string[]): Promise<number> => {
        const r = await call(k, 11, 5, (w) => {
          w.string("no.protocols").i32(10_000).i32(10_000).string("").nullableString(null).string(protocolType);
          w.arrayLength(protocols.length);
          for (const p of protocols) w.string(p).nullableBytes(Buffer.alloc(0));
        });
        r.i32(); // throttle_time_ms
        return r.i16();
      };
      assert.equal(await joinError("consumer", []), INCONSISTENT_GROUP_PROTOCOL);
      assert.equal(await joinError("", ["range"]), INCONSISTENT_GROUP_PROTOCOL);
    } finally {
      k.destroy();
    }
  });

  test("a commit whose group file cannot be written is answered NOT_COORDINATOR, as Kafka answers a failed offsets write", { timeout: 30_000 }, async () => {
    // An outside test filled the disk: the commit failed with ENOSPC and the connection was closed as an internal error.
    await createTopic("unwritable.commits", 1);
    const k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      assert.deepEqual(await commit(k, "unwritable", { generation: -1, memberId: "", offsets: [["unwritable.commits", 0, 5, null]] }), [NONE]);
      const file = (readdirSync(h.storeDir, { recursive: true }) as string[]).find((f) => f.endsWith(joinPath("groups", "unwritable.json")))!;
      // The file's replacement cannot be made: where its temporary file goes, a directory stands.
      mkdirSync(joinPath(h.storeDir, `${file}.tmp`));
      assert.deepEqual(await commit(k, "unwritable", { generation: -1, memberId: "", offsets: [["unwritable.commits", 0, 9, null]] }), [NOT_COORDINATOR]);
      assert.equal(k.closed, false, "the connection stays open");
      assert.equal(await committed(k, "unwritable", "unwritable.commits", 0), 5, "the commit that failed did not count");
      rmSync(joinPath(h.storeDir, `${file}.tmp`), { recursive: true });
      assert.deepEqual(await commit(k, "unwritable", { generation: -1, memberId: "", offsets: [["unwritable.commits", 0, 9, null]] }), [NONE]);
      assert.equal(await committed(k, "unwritable", "unwritable.commits", 0), 9);
    } finally {
      k.destroy();
    }
  });

  test("requests sent back to back on one connection are judged in order, as Kafka takes them: a commit before a LeaveGroup stands, and an OffsetFetch after it sees it", { timeout: 30_000 }, async () => {
    // Kafka reads a connection's next request only once the last is answered. A client that pipelines its final commit
    // and its LeaveGroup (or asks committed() right after an asynchronous commit, as librdkafka does) relies on that: the
    // commit must not be overtaken by the leave (then refused UNKNOWN_MEMBER_ID, the work done again by the next owner),
    // nor the fetch answered before the commit is in.
    await createTopic("pipelined.commits", 1);
    const k = await RawKafka.open(h.srv.kafkaPort!);
    const other = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const g = "pipelined.group";
      const joined = await join(k, g);
      assert.equal(joined.error, NONE);
      assert.equal(await syncGroup(k, g, joined.generation, joined.memberId, [joined.memberId]), NONE);
      const base = k.responses.length;
      k.send(
        Buffer.concat([
          frame(8, 7, (w) => w.string(g).i32(joined.generation).string(joined.memberId).nullableString(null).arrayLength(1).string("pipelined.commits").arrayLength(1).i32(0).i64(42).i32(-1).nullableString("done"), base),
          frame(9, 5, (w) => w.string(g).arrayLength(1).string("pipelined.commits").arrayLength(1).i32(0), base + 1),
          frame(13, 3, (w) => w.string(g).arrayLength(1).string(joined.memberId).nullableString(null), base + 2),
        ]),
      );
      const commitAnswer = await k.response(base, 10_000);
      commitAnswer.i32(); // throttle
      const commitErrors = commitAnswer.array((r) => {
        r.string();
        return r.array((r) => {
          r.i32();
          return r.i16();
        });
      }).flat();
      assert.deepEqual(commitErrors, [NONE], "the commit was sent while the member was in the group");
      const fetchAnswer = await k.response(base + 1, 10_000);
      fetchAnswer.i32(); // throttle
      fetchAnswer.i32(); // topics
      fetchAnswer.string();
      fetchAnswer.i32(); // partitions
      fetchAnswer.i32();
      assert.equal(Number(fetchAnswer.i64()), 42, "the fetch sent after the commit sees it");
      const leaveAnswer = await k.response(base + 2, 10_000);
      leaveAnswer.i32();
      assert.equal(leaveAnswer.i16(), NONE);
      assert.deepEqual(leaveAnswer.array((r) => [r.string(), r.nullableString(), r.i16()]), [[joined.memberId, null, NONE]]);
      assert.equal(await committed(other, g, "pipelined.commits", 0), 42, "the next owner starts after the committed work");
    } finally {
      k.destroy();
      other.destroy();
    }
  });

  test("a rebalance waits for a member that was handed its id (KIP-394) and has not joined yet, which may also leave with it, as Kafka's coordinator", { timeout: 30_000 }, async () => {
    // Kafka's hasAllMembersJoined counts the members asked for MEMBER_ID_REQUIRED: a consumer starting while the group
    // rebalances gets its partitions in that rebalance, not in one more right after it (every member revoking again).
    const admin = await RawKafka.open(h.srv.kafkaPort!);
    const a = await RawKafka.open(h.srv.kafkaPort!);
    const c = await RawKafka.open(h.srv.kafkaPort!);
    const d = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const g = "pending.members";
      const first = await join(a, g);
      assert.equal(await syncGroup(a, g, first.generation, first.memberId, [first.memberId]), NONE);
      const asked = await joinGroup(c, g, "");
      assert.equal(asked.error, MEMBER_ID_REQUIRED);
      // The leader rejoins (a rebalance); the new member comes back with its id only after that.
      const aJoin = joinGroup(a, g, first.memberId);
      await waitUntilAsync(async () => (await groupState(admin, g)) !== "Stable", "the rebalance");
      const cJoin = joinGroup(c, g, asked.memberId);
      const aJoined = await aJoin;
      assert.deepEqual(aJoined.members.sort(), [first.memberId, asked.memberId].sort(), "one rebalance for both");
      const cJoined = await cJoin;
      assert.equal(cJoined.error, NONE);
      assert.equal(aJoined.generation, cJoined.generation);
      const cSync = syncGroup(c, g, cJoined.generation, cJoined.memberId);
      assert.equal(await syncGroup(a, g, aJoined.generation, aJoined.memberId, [aJoined.memberId, cJoined.memberId]), NONE);
      assert.equal(await cSync, NONE);

      // A member handed an id that leaves with it instead (Kafka: NONE) no longer holds the rebalance.
      const askedD = await joinGroup(d, g, "");
      assert.equal(askedD.error, MEMBER_ID_REQUIRED);
      const aAgain = joinGroup(a, g, aJoined.memberId);
      await waitUntilAsync(async () => (await groupState(admin, g)) !== "Stable", "the rebalance");
      const cAgain = joinGroup(c, g, cJoined.memberId);
      const r = await call(d, 13, 3, (w) => w.string(g).arrayLength(1).string(askedD.memberId).nullableString(null));
      r.i32();
      assert.equal(r.i16(), NONE);
      assert.deepEqual(r.array((r) => [r.string(), r.nullableString(), r.i16()]), [[askedD.memberId, null, NONE]]);
      const aDone = await aAgain;
      assert.equal(aDone.error, NONE);
      assert.equal(aDone.generation, (await cAgain).generation);
      assert.deepEqual(aDone.members.sort(), [aJoined.memberId, cJoined.memberId].sort());
    } finally {
      for (const k of [admin, a, c, d]) k.destroy();
    }
  });

  test("a commit's leader epoch (KIP-320) is kept and given back, across a restart", { timeout: 30_000 }, async () => {
    await createTopic("epoch.commits", 2);
    let k = await RawKafka.open(h.srv.kafkaPort!);
    try {
      assert.deepEqual(
        await commit(k, "epoch.group", {
          generation: -1,
          memberId: "",
          offsets: [
            ["epoch.commits", 0, 12, "m", 7],
            ["epoch.commits", 1, 3, null],
          ],
        }),
        [NONE, NONE],
      );
      assert.deepEqual(await committedWithEpoch(k, "epoch.group", "epoch.commits", 0), [12, 7]);
      assert.deepEqual(await committedWithEpoch(k, "epoch.group", "epoch.commits", 1), [3, -1], "none committed: -1");
      k.destroy();
      await h.restart();
      k = await RawKafka.open(h.srv.kafkaPort!);
      assert.deepEqual(await committedWithEpoch(k, "epoch.group", "epoch.commits", 0), [12, 7]);
    } finally {
      k.destroy();
    }
  });

  test("static membership (KIP-345): a restarted static member takes its place and assignment without a rebalance", { timeout: 30_000 }, async () => {
    const admin = await RawKafka.open(h.srv.kafkaPort!);
    const m1 = await RawKafka.open(h.srv.kafkaPort!);
    const m2 = await RawKafka.open(h.srv.kafkaPort!);
    const m3 = await RawKafka.open(h.srv.kafkaPort!);
    try {
      const g = "static.restart";
      // Two members, one static, with an assignment each.
      const first = await join(m1, g, "instance-a");
      assert.equal(first.error, NONE, "a static member joins at once, without MEMBER_ID_REQUIRED");
      assert.equal(await syncGroup(m1, g, first.generation, first.memberId, [first.memberId], "instance-a"), NONE);
      const bJoined = join(m2, g);
      await waitUntilState(admin, g, "PreparingRebalance");
      const a = await joinGroup(m1, g, first.memberId, "instance-a");
      const b = await bJoined;
      assert.equal(a.memberId, first.memberId);
      assert.equal(a.generation, b.generation);
      const generation = a.generation;
      const [leader, follower] = a.leader === a.memberId ? [[m1, a], [m2, b]] as const : [[m2, b], [m1, a]] as const;
      const followerSync = syncAssignment(follower[0], g, generation, follower[1].memberId, [], follower[1] === a ? "instance-a" : null);
      assert.equal((await syncAssignment(leader[0], g, generation, leader[1].memberId, [a.memberId, b.memberId], leader[1] === a ? "instance-a" : null)).error, NONE);
      assert.equal((await followerSync).error, NONE);

      // Instance a restarts: it joins without its member id and gets a new one, in the same generation.
      const a2 = await joinGroup(m3, g, "", "instance-a");
      assert.equal(a2.error, NONE);
      assert.equal(a2.generation, generation, "no rebalance");
      assert.notEqual(a2.memberId, a.memberId);
      assert.equal(a2.leader, a.leader, "the leader as it was: a restarted leader does not assign again in a Stable group");
      assert.deepEqual(a2.members, []);
      assert.equal(await groupState(admin, g), "Stable");
      assert.equal(await heartbeat(m2, g, generation, b.memberId), NONE, "the other member is not disturbed");
      assert.deepEqual(await syncAssignment(m3, g, generation, a2.memberId, [], "instance-a"), { error: NONE, assignment: a.memberId }, "the old member's assignment");
      // The old member id is fenced everywhere.
      assert.equal(await heartbeat(m1, g, generation, a.memberId, "instance-a"), FENCED_INSTANCE_ID);
      assert.equal((await joinGroup(m1, g, a.memberId, "instance-a")).error, FENCED_INSTANCE_ID);
      assert.equal(await heartbeat(m3, g, generation, a2.memberId, "instance-a"), NONE);

      // LeaveGroup v3 by instance id alone (an admin removing a static member); a wrong member id for the instance is fenced.
      const leave = async (memberId: string, instanceId: string): Promise<number[]> => {
        const r = await call(admin, 13, 3, (w) => w.string(g).arrayLength(1).string(memberId).nullableString(instanceId));
        r.i32();
        assert.equal(r.i16(), NONE);
        return r.array((r) => {
          r.string();
          r.nullableString();
          return r.i16();
        });
      };
      assert.deepEqual(await leave(a.memberId, "instance-a"), [FENCED_INSTANCE_ID]);
      assert.deepEqual(await leave("", "instance-unknown"), [UNKNOWN_MEMBER_ID]);
      assert.deepEqual(await leave("", "instance-a"), [NONE]);
      assert.equal(await heartbeat(m2, g, generation, b.memberId), REBALANCE_IN_PROGRESS, "a member that leaves starts a rebalance");
    } finally {
      for (const k of [admin, m1, m2, m3]) k.destroy();
    }
  });

  test("kafkajs: what a member processed before a rebalance is committed as it rejoins, and not processed again", { timeout: 60_000 }, async () => {
    const topic = "commit.rejoin";
    const group = "rejoin";
    await createTopic(topic, 1);
    const producer = h.kafka().producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: Array.from({ length: 10 }, (_, i) => ({ value: `r${i}` })) });

    // Member a holds record 5 until the second member's join has put the group in PreparingRebalance.
    const processed: Array<[string, number]> = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let holding = false;
    const consumer = (name: string) => h.kafka().consumer({ groupId: group, heartbeatInterval: 50, sessionTimeout: 10_000, rebalanceTimeout: 10_000, maxWaitTimeInMs: 100 });
    const a = consumer("a");
    await a.connect();
    await a.subscribe({ topic, fromBeginning: true });
    await a.run({
      eachMessage: async ({ message }) => {
        const offset = Number(message.offset);
        if (offset === 5 && !holding) {
          holding = true;
          await held;
        }
        processed.push(["a", offset]);
      },
    });
    const b = consumer("b");
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await waitUntil(() => holding, "member a to reach record 5");
      await b.connect();
      await b.subscribe({ topic, fromBeginning: true });
      // Not awaited: run() resolves once b has joined, which takes a's rejoin.
      const bRunning = b.run({ eachMessage: async ({ message }) => void processed.push(["b", Number(message.offset)]) });
      await waitUntilAsync(async () => (await admin.describeGroups([group])).groups[0].state === "PreparingRebalance", "member b's join to start a rebalance");
      release();
      await bRunning;
      await waitUntil(() => processed.length >= 10, "all ten records processed");
      await producer.send({ topic, acks: -1, messages: [{ value: "r10" }] });
      await waitUntil(() => processed.some(([, o]) => o === 10), "the record produced after the rebalance");
      assert.deepEqual(
        processed.map(([, o]) => o),
        Array.from({ length: 11 }, (_, i) => i),
        `each record once, in order: ${JSON.stringify(processed)}`,
      );
      await a.disconnect();
      await b.disconnect();
      const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      assert.equal(offsets[0].partitions[0].offset, "11");
    } finally {
      release();
      await admin.disconnect();
      await producer.disconnect();
      await a.disconnect();
      await b.disconnect();
    }
  });

  test("kcat -G: librdkafka's commit on revoke is accepted, so the partition's next owner starts after the records already read", { timeout: 60_000 }, async () => {
    const topic = "commit.kcat";
    const group = "kcat-revoke";
    await createTopic(topic, 1);
    const produce = async (values: string[]): Promise<void> => {
      const r = await kcat(["-b", h.broker, "-P", "-t", topic], values.join("\n") + "\n");
      assert.equal(r.code, 0, r.stderr);
    };
    await produce(Array.from({ length: 10 }, (_, i) => `k${i}`));
    // No periodic commit within the test: only the commit librdkafka makes when the partition is revoked moves the offset.
    const args = ["-b", h.broker, "-G", group, topic, "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=600000", "-X", "heartbeat.interval.ms=100", "-u", "-f", "%o %s\n"];
    const first = kcatRunning(args);
    let second: KcatProcess | null = null;
    try {
      await waitUntil(() => first.lines.length >= 10, `the first kcat to read the ten records (${first.stderr})`, 20_000);
      second = kcatRunning(args);
      const admin = h.kafka().admin();
      await admin.connect();
      try {
        const stableWithTwo = async (): Promise<boolean> => {
          const d = (await admin.describeGroups([group])).groups[0];
          return d.state === "Stable" && d.members.length === 2;
        };
        await waitUntilAsync(stableWithTwo, "a rebalance to two members", 20_000);
        const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
        assert.equal(offsets[0].partitions[0].offset, "10", "the revoke committed what the first kcat had read");
      } finally {
        await admin.disconnect();
      }
      await produce(["k10", "k11"]);
      const both = (): string[] => [...first.lines, ...second!.lines];
      await waitUntil(() => both().some((l) => l.endsWith(" k11")), "the records produced after the rebalance", 20_000);
      assert.deepEqual(both(), Array.from({ length: 12 }, (_, i) => `${i} k${i}`), "each record read once");
    } finally {
      await first.stop();
      await second?.stop();
    }
  });

  test("kcat -G with group.instance.id: a static member restarted within its session gets its partitions back at once, the other member undisturbed", { timeout: 60_000 }, async () => {
    const topic = "static.kcat";
    const group = "kcat-static";
    await createTopic(topic, 2);
    // A session (20 s) far longer than the test waits for the restarted member: before KIP-345 it waited for the old one's session to end.
    const args = (instance: string): string[] => ["-b", h.broker, "-G", group, topic, "-X", `group.instance.id=${instance}`, "-X", `client.id=${instance}`, "-X", "session.timeout.ms=20000", "-X", "heartbeat.interval.ms=100", "-X", "auto.offset.reset=earliest", "-u", "-f", "%p %s\n"];
    const produce = async (values: string[], partition: number): Promise<void> => {
      const r = await kcat(["-b", h.broker, "-P", "-t", topic, "-p", String(partition)], values.join("\n") + "\n");
      assert.equal(r.code, 0, r.stderr);
    };
    const admin = h.kafka().admin();
    await admin.connect();
    const a = kcatRunning(args("a"));
    const b = kcatRunning(args("b"));
    let a2: KcatProcess | null = null;
    try {
      const members = async (): Promise<Map<string, string>> => {
        const d = (await admin.describeGroups([group])).groups[0];
        return d.state === "Stable" ? new Map(d.members.map((m) => [m.clientId, m.memberId])) : new Map();
      };
      await waitUntilAsync(async () => (await members()).size === 2, "both static members in a Stable group", 20_000);
      await produce(["p0-1"], 0);
      await produce(["p1-1"], 1);
      await waitUntil(() => a.lines.length + b.lines.length === 2, "the two records read", 20_000);
      const before = await members();
      const bRebalances = (b.stderr.match(/rebalanced/g) ?? []).length;
      const aPartition = a.lines[0]?.split(" ")[0] ?? String(1 - Number(b.lines[0].split(" ")[0]));

      // librdkafka's static member does not leave the group when it closes, so its place is kept for it.
      await a.stop();
      a2 = kcatRunning(args("a"));
      await produce([`p${aPartition}-2`], Number(aPartition));
      await waitUntil(() => a2!.lines.includes(`${aPartition} p${aPartition}-2`), `the restarted member to read its partition again (${a2.stderr})`, 10_000);
      const after = await members();
      assert.equal(after.get("b"), before.get("b"));
      assert.notEqual(after.get("a"), before.get("a"), "the restarted member has a new member id");
      assert.equal((b.stderr.match(/rebalanced/g) ?? []).length, bRebalances, `the other member saw no rebalance: ${b.stderr}`);
    } finally {
      await admin.disconnect();
      await a.stop();
      await a2?.stop();
      await b.stop();
    }
  });

  /**
   * The end-to-end check of issue 17. What is counted: the processing log,
   * per partition, of every record eachMessage was handed (offset and
   * member), in the order it was handed over. All members live in this one
   * process, so the log is one total order.
   *
   * Why it must read 0, 1, 2, … to the end, once each: a KafkaJS member
   * commits what it processed after every batch, when a heartbeat tells it of
   * a rebalance (before it rejoins), and before it leaves. A partition's next
   * owner starts at the committed offset, and it cannot get the partition
   * before the previous owner has rejoined or left, which is after that
   * commit. So when every departure is graceful and the coordinator takes
   * those commits, each owner's range of offsets begins exactly where the
   * previous one's ended: no record is processed twice and none skipped. At
   * least once allows a duplicate only where a commit was lost (a crash, a
   * session that expired, a refused commit); none of those happens here, so
   * a duplicate is the broker's fault. And nothing is lost: the log reaches
   * each partition's end, and the committed offsets equal it.
   */
  test("a kafkajs group of three under a continuous producer, members leaving and joining: each record processed once, none lost", { timeout: 90_000 }, async (t) => {
    const topic = "churn";
    const group = "churn";
    const PARTITIONS = 6;
    await createTopic(topic, PARTITIONS);

    const log: Array<Array<[number, string]>> = Array.from({ length: PARTITIONS }, () => []);
    const assignment = new Map<string, number[]>(); // member -> its partitions, from its latest GROUP_JOIN
    const members = new Map<string, { consumer: ReturnType<KafkaHarness["kafka"]>["consumer"] extends (...a: never[]) => infer C ? C : never; running: Promise<void> }>();
    const crashes: string[] = [];
    const start = async (name: string): Promise<void> => {
      const consumer = h.kafka().consumer({ groupId: group, heartbeatInterval: 100, sessionTimeout: 30_000, rebalanceTimeout: 30_000, maxWaitTimeInMs: 100 });
      consumer.on(consumer.events.GROUP_JOIN, (e) => assignment.set(name, e.payload.memberAssignment[topic] ?? []));
      consumer.on(consumer.events.CRASH, (e) => crashes.push(`${name}: ${String(e.payload.error)}`));
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      // run() resolves once the member has joined, which waits for the others to rejoin: not awaited here.
      const running = consumer.run({ eachMessage: async ({ partition, message }) => void log[partition].push([Number(message.offset), name]) });
      members.set(name, { consumer, running });
    };
    const stop = async (name: string): Promise<void> => {
      const m = members.get(name)!;
      members.delete(name);
      await m.running;
      await m.consumer.disconnect(); // commits what it processed, then LeaveGroup
    };
    /** The group has rebalanced for its current members: each joined since the change, and together they hold every partition once. */
    const settled = async (): Promise<void> => {
      await waitUntil(() => {
        const held = [...members.keys()].flatMap((n) => assignment.get(n) ?? [-1]);
        return held.length === PARTITIONS && new Set(held).size === PARTITIONS && [...members.keys()].every((n) => assignment.has(n));
      }, `a rebalance among ${[...members.keys()].join(", ")}`, 20_000);
      for (const { running } of members.values()) await running;
    };
    /** Records keep flowing to every partition after a rebalance: at least `n` more each. */
    const progress = async (n: number): Promise<void> => {
      const from = log.map((l) => l.length);
      await waitUntil(() => log.every((l, p) => l.length >= from[p] + n), `${n} more records processed in every partition`, 20_000);
    };
    const change = async (what: () => Promise<void>): Promise<void> => {
      assignment.clear();
      await what();
      await settled();
      await progress(20);
    };

    const producer = h.kafka().producer();
    await producer.connect();
    let producing = true;
    let produced = 0;
    const producerDone = (async () => {
      // One record per partition a send, each acknowledged (acks -1) before the next: a steady stream, bounded in count.
      while (producing && produced < 200_000) {
        await producer.send({ topic, acks: -1, messages: Array.from({ length: PARTITIONS }, (_, p) => ({ partition: p, value: `v${produced + p}` })) });
        produced += PARTITIONS;
      }
    })();

    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await change(async () => {
        for (const n of ["a", "b", "c"]) await start(n);
      });
      await change(() => start("d")); // four
      await change(() => stop("a")); // three
      await change(() => start("e")); // four
      await change(() => stop("b")); // three: c, d, e

      producing = false;
      await producerDone;
      const ends = (await admin.fetchTopicOffsets(topic)).sort((x, y) => x.partition - y.partition).map((p) => Number(p.high));
      assert.equal(ends.reduce((a, b) => a + b, 0), produced);
      await waitUntil(() => log.every((l, p) => l.some(([o]) => o === ends[p] - 1)), "the last record of every partition processed", 20_000);
      for (const name of [...members.keys()]) await stop(name);

      assert.deepEqual(crashes, []);
      for (let p = 0; p < PARTITIONS; p++) {
        const offsets = log[p].map(([o]) => o);
        const twice = offsets.filter((o, i) => offsets.indexOf(o) !== i);
        assert.deepEqual(twice, [], `partition ${p}: records processed twice`);
        assert.deepEqual(offsets, Array.from({ length: ends[p] }, (_, i) => i), `partition ${p}: every record once, in order`);
      }
      const committed = (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0].partitions.sort((x, y) => x.partition - y.partition).map((p) => Number(p.offset));
      assert.deepEqual(committed, ends, "every partition committed to its end");
      // The handovers happened with records flowing: partitions changed hands while being read.
      const handovers = log.reduce((n, l) => n + l.filter(([, m], i) => i > 0 && m !== l[i - 1][1]).length, 0);
      assert.ok(handovers >= 4, `partitions changed owner ${handovers} times`);
      t.diagnostic(`${produced} records, ${handovers} handovers`);
    } finally {
      producing = false;
      await producerDone;
      await producer.disconnect();
      await admin.disconnect();
      for (const { consumer } of members.values()) await consumer.disconnect();
    }
  });
});

describe("Kafka consumer groups: the timing of a rebalance, as Kafka's coordinator keeps it", () => {
  const INITIAL_DELAY_MS = 1500;
  let h: KafkaHarness;

  before(async () => {
    // Sessions down to 1 s (Kafka's least is 6 s), so that a session running out takes little of the test's time.
    h = await startKafka({ initialRebalanceDelayMs: INITIAL_DELAY_MS, minSessionTimeoutMs: 1000 });
  });
  after(async () => h.close());

  /** Two members joining a new group together (one generation): the leader's and the follower's connections and answers. */
  async function joinTwo(group: string, o: JoinOptions): Promise<{ leader: [RawKafka, Joined]; follower: [RawKafka, Joined]; all: RawKafka[] }> {
    const all = [await RawKafka.open(h.srv.kafkaPort!), await RawKafka.open(h.srv.kafkaPort!)];
    const asked = await Promise.all(all.map((k) => joinGroup(k, group, "", null, o)));
    const joined = await Promise.all(all.map((k, i) => joinGroup(k, group, asked[i].memberId, null, o)));
    for (const j of joined) assert.equal(j.error, NONE);
    assert.equal(joined[0].generation, joined[1].generation, "both in the first generation");
    const l = joined[0].memberId === joined[0].leader ? 0 : 1;
    return { leader: [all[l], joined[l]], follower: [all[1 - l], joined[1 - l]], all };
  }

  test("a member waiting in SyncGroup is not expired while the leader takes longer than a session to assign", { timeout: 30_000 }, async () => {
    const g = "slow.leader";
    const { leader, follower, all } = await joinTwo(g, { sessionMs: 1000, rebalanceMs: 20_000 });
    const [lk, l] = leader;
    const [fk, f] = follower;
    try {
      const asked = fk.responses.length;
      const followerSync = syncAssignment(fk, g, f.generation, f.memberId, [], null);
      // The follower does not heartbeat while it waits (no client does); the leader does, for 2.5 sessions before it assigns.
      const until = Date.now() + 2500;
      while (Date.now() < until) {
        assert.equal(await heartbeat(lk, g, l.generation, l.memberId), NONE, "no member expired: no rebalance");
        await new Promise((r) => setTimeout(r, 200)); // the leader's heartbeat interval
      }
      assert.equal(fk.responses.length, asked, "the follower still waits for its assignment");
      assert.equal((await syncAssignment(lk, g, l.generation, l.memberId, [l.memberId, f.memberId])).error, NONE);
      assert.deepEqual(await followerSync, { error: NONE, assignment: f.memberId });
      const described = await describeGroup(lk, g);
      assert.equal(described.state, "Stable");
      assert.deepEqual(described.members.map((m) => m.id).sort(), [l.memberId, f.memberId].sort());
    } finally {
      for (const k of all) k.destroy();
    }
  });

  test("a member that never asks for its assignment is put out after the rebalance timeout, and the group goes on without it", { timeout: 30_000 }, async () => {
    const g = "silent.leader";
    const { leader, follower, all } = await joinTwo(g, { sessionMs: 20_000, rebalanceMs: 3000 });
    const [lk, l] = leader;
    const [fk, f] = follower;
    const admin = await RawKafka.open(h.srv.kafkaPort!);
    try {
      // Until the group is settled, DescribeGroups names no protocol and no member's metadata or assignment, as Kafka's.
      const unsettled = await describeGroup(admin, g);
      assert.equal(unsettled.state, "CompletingRebalance");
      assert.equal(unsettled.protocol, "");
      assert.deepEqual(unsettled.members.map((m) => [m.metadata, m.assignment]), [["", ""], ["", ""]]);
      // The leader joined and heartbeats, but never syncs: the follower is told to rejoin once the rebalance timeout passes,
      // long before the leader's session would end if it stopped heartbeating.
      const followerSync = syncAssignment(fk, g, f.generation, f.memberId, [], null, 15_000);
      let leaderHeard = NONE;
      const deadline = Date.now() + 15_000;
      while (leaderHeard === NONE && Date.now() < deadline) {
        leaderHeard = await heartbeat(lk, g, l.generation, l.memberId);
        if (leaderHeard === NONE) await new Promise((r) => setTimeout(r, 300)); // the leader's heartbeat interval
      }
      assert.equal(leaderHeard, UNKNOWN_MEMBER_ID, "the leader is out");
      assert.equal((await followerSync).error, REBALANCE_IN_PROGRESS);
      const again = await joinGroup(fk, g, f.memberId, null, { sessionMs: 20_000, rebalanceMs: 3000 });
      assert.equal(again.error, NONE);
      assert.equal(again.generation, f.generation + 1);
      assert.equal(again.leader, f.memberId);
      assert.deepEqual(again.members, [f.memberId]);
      assert.equal((await syncAssignment(fk, g, again.generation, f.memberId, [f.memberId])).error, NONE);
      const settled = await describeGroup(admin, g);
      assert.equal(settled.protocol, "range");
      assert.deepEqual(settled.members, [{ id: f.memberId, host: "/127.0.0.1", metadata: "m", assignment: f.memberId }]);
    } finally {
      for (const k of [...all, admin]) k.destroy();
    }
  });

  test("a new group's initial delay waits again while members keep arriving, so that they share the first generation", { timeout: 30_000 }, async () => {
    const g = "late.joiners";
    const ks = await Promise.all([0, 1, 2].map(() => RawKafka.open(h.srv.kafkaPort!)));
    const o: JoinOptions = { sessionMs: 20_000, rebalanceMs: 20_000, ms: 25_000 };
    try {
      const ids = await Promise.all(ks.map(async (k) => (await joinGroup(k, g, "", null, o)).memberId));
      const firstJoined = Date.now();
      const joins = [joinGroup(ks[0], g, ids[0], null, o), joinGroup(ks[1], g, ids[1], null, o)];
      // The third comes once the first delay is over: what Kafka's InitialDelayedJoin waits for, as the second came during it.
      // (A wait on the clock: the delay is the behaviour under test.)
      await new Promise((r) => setTimeout(r, INITIAL_DELAY_MS + 500));
      assert.equal(ks[0].responses.length, 1, "the first member still waits: the second came during the delay");
      joins.push(joinGroup(ks[2], g, ids[2], null, o));
      const joined = await Promise.all(joins);
      assert.deepEqual(joined.map((j) => [j.error, j.generation]), [[NONE, 1], [NONE, 1], [NONE, 1]], "one generation for all three");
      const leader = joined.find((j) => j.memberId === j.leader)!;
      assert.deepEqual([...leader.members].sort(), [...ids].sort());
      assert.ok(Date.now() - firstJoined < 20_000, "within the rebalance timeout");
    } finally {
      for (const k of ks) k.destroy();
    }
  });
});

test("offsets and groups recorded before their times were kept expire by their file's last write, not from each start; a group file with nothing to keep is removed", { timeout: 60_000 }, async () => {
  // A review: stamps missing from files of earlier versions were taken as the time of each start, so a broker restarted
  // more often than offsets_retention never expired the groups it had gathered.
  const h = await startKafka({ offsetsRetentionMs: 120_000, offsetsRetentionCheckIntervalMs: 100, minSessionTimeoutMs: 1000, maxSessionTimeoutMs: 1500 });
  const admin = () => h.kafka().admin();
  try {
    const topic = "legacy.t";
    await createKafkaTopic(h, topic);
    // Standalone commits on the wire (an admin client's setOffsets joins the group, with a session past this broker's).
    const k = await RawKafka.open(h.srv.kafkaPort!);
    for (const groupId of ["legacy.old", "legacy.recent"]) assert.deepEqual(await commit(k, groupId, { generation: -1, memberId: "", offsets: [[topic, 0, 1, null]] }), [NONE]);
    k.destroy();
    const stored = joinPath(h.storeDir, "kafka", "groups");
    await h.restart({
      keepKafkaPort: true,
      whileStopped: () => {
        for (const f of readdirSync(stored)) {
          const path = joinPath(stored, f);
          const saved = parseStateFile(readFileSync(path, "utf8")) as { group: string; offsets: Record<string, { committedAt?: number }> };
          // As an earlier version wrote them: no commit times.
          for (const o of Object.values(saved.offsets)) delete o.committedAt;
          writeFileSync(path, stateFileText(saved));
          if (saved.group === "legacy.old") utimesSync(path, new Date(Date.now() - 86_400_000), new Date(Date.now() - 86_400_000));
        }
        writeFileSync(joinPath(stored, "hollow.json"), stateFileText({ group: "hollow", protocolType: "consumer", offsets: {}, members: { state: "Empty", generation: 3, protocolType: "consumer", protocol: "", leader: "", members: [] } }));
      },
    });
    const a = admin();
    await a.connect();
    try {
      const committed = async (groupId: string): Promise<string> => (await a.fetchOffsets({ groupId, topics: [topic] }))[0].partitions[0].offset;
      await waitUntilAsync(async () => (await committed("legacy.old")) === "-1", "the day-old commit to expire", 20_000);
      assert.equal(await committed("legacy.recent"), "1", "a recent one stays");
      // The files go after the groups (a removal in the background): waited for, and nothing else goes.
      await waitUntil(() => readdirSync(stored).length === 1, "the expired group's file and the hollow one to go", 20_000);
      assert.deepEqual(readdirSync(stored).sort(), ["legacy.recent.json"]);
    } finally {
      await a.disconnect();
    }
  } finally {
    await h.close();
  }
});

describe("Kafka consumer groups: committed offsets expire as Kafka's do (KIP-211)", () => {
  const RETENTION_MS = 3000;
  let h: KafkaHarness;

  before(async () => {
    h = await startKafka({ offsetsRetentionMs: RETENTION_MS, offsetsRetentionCheckIntervalMs: 100 });
  });
  after(async () => h.close());

  test("an Empty group's offsets go offsets_retention after it emptied, and the group with them; a live group's stay; a standalone commit goes offsets_retention after it was made", { timeout: 60_000 }, async () => {
    // An outside test: offsets were kept forever, so short-lived group ids (kcat -G, CI runs) filled the broker's
    // 10,000 groups, after which every new group was refused COORDINATOR_NOT_AVAILABLE and clients retried forever.
    const topic = "retention.t";
    await createKafkaTopic(h, topic);
    const producer = h.kafka().producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ value: "a" }, { value: "b" }, { value: "c" }] });
    await producer.disconnect();
    const admin = h.kafka().admin();
    await admin.connect();
    const committed = async (groupId: string): Promise<string> => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0].partitions[0].offset;
    const groups = async (): Promise<string[]> => (await admin.listGroups()).groups.map((g) => g.groupId).sort();
    const consume = async (groupId: string): Promise<Consumer> => {
      const c = h.kafka().consumer({ groupId, maxWaitTimeInMs: 100, heartbeatInterval: 300 });
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      let seen = 0;
      await c.run({ autoCommitThreshold: 1, eachMessage: async () => void seen++ });
      await waitUntilAsync(async () => seen === 3 && (await committed(groupId)) === "3", `${groupId} to commit what it read`, 20_000);
      return c;
    };
    const live = await consume("retention.live");
    try {
      const gone = await consume("retention.gone");
      const stored = joinPath(h.storeDir, "kafka", "groups");
      const files = (): number => readdirSync(stored).filter((f) => f.endsWith(".json")).length;
      assert.equal(files(), 2, readdirSync(stored).join(" "));
      await gone.disconnect();
      const standaloneAt = Date.now();
      await admin.setOffsets({ groupId: "retention.standalone", topic, partitions: [{ partition: 0, offset: "2" }] });
      const standalone = await committed("retention.standalone");
      // Taken (unless the machine took a whole retention to answer: then it may be gone already).
      assert.ok(standalone === "2" || (standalone === "-1" && Date.now() - standaloneAt >= RETENTION_MS), `standalone commit: ${standalone}`);

      await waitUntilAsync(async () => (await committed("retention.gone")) === "-1", "the Empty group's offsets to expire", 20_000);
      await waitUntilAsync(async () => (await committed("retention.standalone")) === "-1", "the standalone commit to expire", 20_000);
      await waitUntilAsync(async () => !(await groups()).includes("retention.gone"), "the Empty group to be removed", 20_000);
      assert.deepEqual(await groups(), ["retention.live"]);
      assert.equal(await committed("retention.live"), "3", "a group with members keeps its offsets");
      // The group leaves the listing first; its file is then removed durably (after any write queued for it).
      await waitUntil(() => files() === 1, "the expired groups' files to be removed");
    } finally {
      await live.disconnect();
      await admin.disconnect();
    }
  });
});
