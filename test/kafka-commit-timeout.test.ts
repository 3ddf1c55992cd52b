/**
 * A connection's group requests wait for its earlier OffsetCommits to be
 * answered (Kafka takes a connection's requests one at a time). A commit
 * whose write stalled (a disk that stops answering a sync) held every later
 * JoinGroup, Heartbeat or OffsetFetch of that connection without end: the
 * member's session ran out while its heartbeats sat behind the commit. As
 * Kafka's offsets.commit.timeout.ms, the commit is answered
 * REQUEST_TIMED_OUT once offsets_commit_timeout passes, and the requests
 * behind it go on.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { sep } from "node:path";
import { createTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { ask, frame, RawKafka, REQUEST_MS, topicPartitionErrors } from "./helpers/kafka-raw.js";
import { call, heartbeat, joinGroup, syncAssignment } from "./helpers/kafka-group-requests.js";
import { stallSyncs, type StalledSyncs } from "./helpers/stall.js";
import { findFile } from "./helpers/damage.js";
import { readJson } from "../src/util/persist.js";
import type { Reader } from "../src/protocols/kafka/codec.js";
import { KAFKA_DEFAULTS } from "../src/protocols/kafka/door.js";
import { parseConf } from "../src/server/conf-parser.js";
import { optionsFromConf } from "../src/server/conf-options.js";

const NONE = 0;
const REQUEST_TIMED_OUT = 7;
const UNKNOWN_MEMBER_ID = 25;
const COORDINATOR_NOT_AVAILABLE = 15;
const REBALANCE_IN_PROGRESS = 27;
const MEMBER_ID_REQUIRED = 79;
const GROUP_ID_NOT_FOUND = 69;

let h: KafkaHarness;
before(async () => (h = await startKafka()));
after(() => h.close());

/** OffsetCommit v2 of a simple consumer (no generation, no member): `offset` of partition 0 of `topic`. */
function commitFrame(group: string, topic: string, offset: number, correlationId: number): Buffer {
  return frame(8, 2, (w) => w.string(group).i32(-1).string("").i64(-1).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(offset).nullableString(null), correlationId);
}

/** An OffsetCommit's partition errors. */
function commitErrors(r: Reader): number[] {
  return r
    .array((r) => {
      r.string();
      return r.array((r) => (r.i32(), r.i16()));
    })
    .flat();
}

/** An OffsetFetch v1's one committed offset. */
function fetchedOffset(r: Reader): number {
  r.i32(); // topics
  r.string();
  r.i32(); // partitions
  r.i32();
  return Number(r.i64());
}

/** Partition 0's committed offset of `group` on `topic`, by OffsetFetch v1. */
async function committed(k: RawKafka, group: string, topic: string): Promise<number> {
  return fetchedOffset(await call(k, 9, 1, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(0)));
}

test("offsets_commit_timeout is read from the configuration file; Kafka's default is 5 s", () => {
  assert.equal(optionsFromConf(parseConf(`kafka { offsets_commit_timeout: "2s" }`)).kafka?.offsetsCommitTimeoutMs, 2000);
  assert.throws(() => optionsFromConf(parseConf(`kafka { offsets_commit_timeout: 0 }`)), /kafka.offsets_commit_timeout: must be more than zero/);
  assert.equal(KAFKA_DEFAULTS.offsetsCommitTimeoutMs, 5000);
});

test("a commit whose write stalls is answered REQUEST_TIMED_OUT after offsets_commit_timeout, and the connection's group requests behind it go on", { timeout: 60_000 }, async () => {
  const topic = "stalled-commits";
  const group = "g-stalled";
  await createTopic(h, topic);
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  const options = h.srv.kafka!.options;
  let disk: StalledSyncs | null = null;
  try {
    k.send(commitFrame(group, topic, 5, 0));
    assert.deepEqual(commitErrors(await k.response(0, REQUEST_MS)), [NONE], "committed while the disk answers");

    // Short while the disk stalls (Kafka's 5 s outside it: a loaded machine's fsync never passes for a stall).
    options.offsetsCommitTimeoutMs = 300;
    // The disk stops answering the sync of the group's file (its temporary copy, before the rename).
    const groupFile = `${sep}groups${sep}${group}.json.tmp`;
    disk = stallSyncs((path) => path.endsWith(groupFile));
    // Back to back, as a client that commits, then asks, then heartbeats: each group request waits for the commit.
    k.send(Buffer.concat([commitFrame(group, topic, 9, 1), frame(9, 1, (w) => w.string(group).arrayLength(1).string(topic).arrayLength(1).i32(0), 2), frame(12, 0, (w) => w.string("g-nobody").i32(1).string("m"), 3)]));
    // Before: no answer to any of the three while the disk stalled.
    assert.deepEqual(commitErrors(await k.response(1, REQUEST_MS)), [REQUEST_TIMED_OUT], "the stalled commit timed out");
    assert.equal(fetchedOffset(await k.response(2, REQUEST_MS)), 5, "the OffsetFetch behind it is answered: the last offset stored");
    const hb = await k.response(3, REQUEST_MS);
    assert.equal(hb.i16(), UNKNOWN_MEMBER_ID, "the Heartbeat behind it is answered");
    assert.equal(disk.stalled(), 1, "answered while the write is still stalled");

    // Once the disk answers, the write lands (as a commit Kafka timed out may), and commits are stored again.
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk.restore();
    disk.release();
    await waitUntilAsync(async () => (await committed(k, group, topic)) === 9, "the stalled write landed");
    const n = k.responses.length;
    k.send(commitFrame(group, topic, 11, n));
    assert.deepEqual(commitErrors(await k.response(n, REQUEST_MS)), [NONE], "committed once the disk answers");
    assert.equal(await committed(k, group, topic), 11);
  } finally {
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk?.restore();
    disk?.release();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});

test("a TxnOffsetCommit whose save stalls is answered REQUEST_TIMED_OUT after offsets_commit_timeout, and the connection's answers behind it go on", { timeout: 60_000 }, async () => {
  const topic = "stalled-txn-commits";
  const group = "g-stalled-txn";
  const id = "tx-stalled-commit";
  await createTopic(h, topic);
  const port = h.srv.kafkaPort!;
  const init = await ask(port, frame(22, 0, (w) => w.nullableString(id).i32(60_000)), (r) => (r.i32(), { error: r.i16(), producerId: r.i64(), epoch: r.i16() }));
  assert.equal(init.error, NONE);
  const { producerId, epoch } = init;
  assert.equal(await ask(port, frame(25, 0, (w) => w.string(id).i64(producerId).i16(epoch).string(group)), (r) => (r.i32(), r.i16())), NONE, "AddOffsetsToTxn");
  /** TxnOffsetCommit v2 of `offset` of partition 0. */
  const txnCommit = (offset: number, correlationId: number): Buffer =>
    frame(28, 2, (w) => w.string(id).string(group).i64(producerId).i16(epoch).i32(1).string(topic).i32(1).i32(0).i64(offset).i32(-1).nullableString(null), correlationId);
  const txnErrors = (r: Reader): number[] => (r.i32(), topicPartitionErrors(r).flatMap((t) => t.partitions.map(([, e]) => e)));
  const k = await RawKafka.open(port, REQUEST_MS);
  const options = h.srv.kafka!.options;
  let disk: StalledSyncs | null = null;
  try {
    options.offsetsCommitTimeoutMs = 300;
    // The disk stops answering the sync of the transactions' file, where the offsets are saved in their transaction.
    const txnFile = `${sep}transactions.json.tmp`;
    disk = stallSyncs((path) => path.endsWith(txnFile));
    // The producer's commit, then any request of its connection (answered in order, behind the commit).
    k.send(Buffer.concat([txnCommit(9, 0), frame(18, 0, () => undefined, 1)]));
    // Before: neither was answered while the disk stalled.
    assert.deepEqual(txnErrors(await k.response(0, REQUEST_MS)), [REQUEST_TIMED_OUT], "the stalled commit timed out");
    assert.equal((await k.response(1, REQUEST_MS)).i16(), NONE, "the ApiVersions behind it is answered");
    assert.equal(disk.stalled(), 1, "answered while the save is still stalled");

    // Once the disk answers, the producer's retry is saved (behind the first), and its commit stores the offsets.
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk.restore();
    disk.release();
    k.send(txnCommit(9, 2));
    assert.deepEqual(txnErrors(await k.response(2, REQUEST_MS)), [NONE], "the retry is saved once the disk answers");
    k.send(frame(26, 0, (w) => w.string(id).i64(producerId).i16(epoch).bool(true), 3));
    const ended = await k.response(3, REQUEST_MS);
    ended.i32();
    assert.equal(ended.i16(), NONE, "EndTxn commits");
    await waitUntilAsync(async () => (await committed(k, group, topic)) === 9, "the transaction's offset is committed");
  } finally {
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk?.restore();
    disk?.release();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});

test("in a cluster, a SyncGroup whose record of the members stalls is answered COORDINATOR_NOT_AVAILABLE after offsets_commit_timeout, and the group rebalances", { timeout: 60_000 }, async () => {
  const group = "g-stalled-sync";
  const groups = h.srv.kafka!.defaultDoor!.groups;
  const options = h.srv.kafka!.options;
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let stalled = 0;
  try {
    const asked = await joinGroup(k, group, "");
    assert.equal(asked.error, MEMBER_ID_REQUIRED);
    const joined = await joinGroup(k, group, asked.memberId);
    assert.equal(joined.error, NONE);
    // The cluster's offsets topic (OffsetsStore) stands in: its record of the members stalls, as on a disk that stopped answering.
    options.offsetsCommitTimeoutMs = 300;
    groups.store = {
      write: () => Promise.resolve(),
      writeHold: () => Promise.resolve(),
      writeMembers: () => (stalled++, gate),
    };
    // Before: the SyncGroup was not answered while the record stalled.
    const synced = await syncAssignment(k, group, joined.generation, joined.memberId, [joined.memberId], null, REQUEST_MS);
    assert.equal(synced.error, COORDINATOR_NOT_AVAILABLE, "answered once offsets_commit_timeout passed");
    assert.equal(stalled, 1, "answered while the record is still stalled");
    assert.equal(await heartbeat(k, group, joined.generation, joined.memberId), REBALANCE_IN_PROGRESS, "the group rebalances, as Kafka's does after a failed store");
  } finally {
    groups.store = null;
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    release();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});

test("a DeleteGroups whose removal waits on a stalled group file is answered COORDINATOR_NOT_AVAILABLE after offsets_commit_timeout, as Kafka's group coordinator; the group is gone once the disk answers", { timeout: 60_000 }, async () => {
  const topic = "stalled-delete-group";
  const group = "g-stalled-delete";
  await createTopic(h, topic);
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  const options = h.srv.kafka!.options;
  const admin = h.kafka().admin();
  await admin.connect();
  let disk: StalledSyncs | null = null;
  try {
    k.send(commitFrame(group, topic, 5, 0));
    assert.deepEqual(commitErrors(await k.response(0, REQUEST_MS)), [NONE], "committed while the disk answers");
    options.offsetsCommitTimeoutMs = 300;
    // The disk stops answering the sync of the group's file: a commit's write stalls, and the group's removal waits
    // for it (a group's file writes and removal stay in order).
    disk = stallSyncs((path) => path.endsWith(`${sep}groups${sep}${group}.json.tmp`));
    k.send(commitFrame(group, topic, 9, 1));
    assert.deepEqual(commitErrors(await k.response(1, REQUEST_MS)), [REQUEST_TIMED_OUT], "the stalled commit timed out");
    // Before: KafkaJS's DeleteGroups was not answered while the disk stalled (it gave up after its request timeout).
    await assert.rejects(admin.deleteGroups([group]), (err: { name?: string; groups?: Array<{ groupId: string; errorCode: number }> }) => {
      assert.equal(err.name, "KafkaJSDeleteGroupsError", String(err));
      assert.deepEqual(err.groups?.map((g) => [g.groupId, g.errorCode]), [[group, COORDINATOR_NOT_AVAILABLE]]);
      return true;
    });
    // The connection's later answers go on: a retried DeleteGroups, with a request behind it.
    k.send(Buffer.concat([frame(42, 0, (w) => w.i32(1).string(group), 2), frame(18, 0, () => undefined, 3)]));
    const again = await k.response(2, REQUEST_MS);
    again.i32();
    // Gone from memory at once, as in Kafka: a retry finds no group.
    assert.deepEqual(again.array((r) => [r.string(), r.i16()]), [[group, GROUP_ID_NOT_FOUND]], "the retry: already deleted");
    assert.equal((await k.response(3, REQUEST_MS)).i16(), NONE, "the ApiVersions behind it is answered");
    assert.equal(disk.stalled(), 1, "answered while the write is still stalled");

    // Once the disk answers, the stalled write lands, then the removal: no file of the group is left to load it again.
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk.restore();
    disk.release();
    disk = null;
    await waitUntil(() => findFile(h.storeDir, `${group}.json`) === undefined, "the group's file removed");
    assert.equal(await committed(k, group, topic), -1, "no offset committed");
  } finally {
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk?.restore();
    disk?.release();
    await admin.disconnect();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});

test("an OffsetDelete whose save stalls is answered COORDINATOR_NOT_AVAILABLE after offsets_commit_timeout, as Kafka's group coordinator, and the connection's answers behind it go on", { timeout: 60_000 }, async () => {
  const topic = "stalled-offset-delete";
  const group = "g-stalled-offset-delete";
  await createTopic(h, topic);
  const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  const options = h.srv.kafka!.options;
  let disk: StalledSyncs | null = null;
  try {
    k.send(commitFrame(group, topic, 5, 0));
    assert.deepEqual(commitErrors(await k.response(0, REQUEST_MS)), [NONE], "committed while the disk answers");
    options.offsetsCommitTimeoutMs = 300;
    disk = stallSyncs((path) => path.endsWith(`${sep}groups${sep}${group}.json.tmp`));
    // OffsetDelete v0 of partition 0, with a request behind it.
    k.send(Buffer.concat([frame(47, 0, (w) => w.string(group).i32(1).string(topic).i32(1).i32(0), 1), frame(18, 0, () => undefined, 2)]));
    // Before: neither answered while the disk stalled.
    assert.equal((await k.response(1, REQUEST_MS)).i16(), COORDINATOR_NOT_AVAILABLE, "the stalled OffsetDelete");
    assert.equal((await k.response(2, REQUEST_MS)).i16(), NONE, "the ApiVersions behind it is answered");
    assert.equal(disk.stalled(), 1, "answered while the write is still stalled");
    assert.equal(await committed(k, group, topic), -1, "the offset is deleted at once, as in Kafka");
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk.restore();
    disk.release();
    disk = null;
    // Once the disk answers, the deletion lands: the file holds no offset to load again, and commits are stored again.
    await waitUntilAsync(async () => {
      const file = findFile(h.storeDir, `${group}.json`);
      const saved = file === undefined ? undefined : ((await readJson(file)) as { offsets?: unknown } | undefined);
      return saved !== undefined && !JSON.stringify(saved.offsets ?? []).includes(topic);
    }, "the deletion saved");
    const n = k.responses.length;
    k.send(commitFrame(group, topic, 11, n));
    assert.deepEqual(commitErrors(await k.response(n, REQUEST_MS)), [NONE], "committed once the disk answers");
  } finally {
    options.offsetsCommitTimeoutMs = KAFKA_DEFAULTS.offsetsCommitTimeoutMs;
    disk?.restore();
    disk?.release();
    k.destroy();
  }
  await waitUntil(() => k.closed, "the connection closed");
});
