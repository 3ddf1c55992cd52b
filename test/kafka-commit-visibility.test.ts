/**
 * A group's committed offsets in a cluster (a replicated OffsetsStore) are
 * shown only once written: a commit still waiting for the in-sync replicas
 * is not what OffsetFetch returns, as in Kafka, where it stays pending
 * until its append is replicated. Otherwise a fetch could see an offset
 * that a failover then takes back (the replicated fault test's
 * commit-backwards, seed 1925167052). A write that fails leaves the offset
 * as it was; a removal (OffsetDelete) is shown once written too; and a
 * group or topic removed while a commit is written removes its key too.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GroupCoordinator, type CommittedOffset, type Group, type OffsetsStore, type TxnHold } from "../src/protocols/kafka/groups.js";
import { KAFKA_DEFAULTS } from "../src/protocols/kafka/door.js";

/** A store whose writes the test settles. */
class HeldStore implements OffsetsStore {
  readonly writes: Array<{ entries: Array<[string, CommittedOffset | null]>; endingHolds: readonly number[]; settle: (err?: Error) => void }> = [];
  /** Each hold written, as it was written (keys sorted). */
  readonly holds: Array<[number, { keys: string[]; until: number }]> = [];
  write(_group: Group, entries: Array<[string, CommittedOffset | null]>, endingHolds: readonly number[] = []): Promise<void> {
    return new Promise((resolve, reject) => this.writes.push({ entries, endingHolds, settle: (err) => (err === undefined ? resolve() : reject(err)) }));
  }
  writeHold(_group: Group, producerId: number, hold: TxnHold): Promise<void> {
    this.holds.push([producerId, { keys: [...hold.keys].sort(), until: hold.until }]);
    return Promise.resolve();
  }
  /** Each members record written, in order (null: the group's deletion). */
  readonly members: Array<unknown> = [];
  writeMembers(_group: Group, saved: unknown): Promise<void> {
    this.members.push(saved);
    return Promise.resolve();
  }
}

/** A coordinator on a HeldStore, and its group "readers". */
function heldGroup(t: { after(fn: () => void): void }): { coordinator: GroupCoordinator; store: HeldStore; g: Group } {
  const dir = mkdtempSync(join(tmpdir(), "nagare-commits-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const coordinator = new GroupCoordinator(dir, { ...KAFKA_DEFAULTS, initialRebalanceDelayMs: 0, minSessionTimeoutMs: 6000, maxSessionTimeoutMs: 1_800_000 }, () => {});
  const store = new HeldStore();
  coordinator.store = store;
  return { coordinator, store, g: coordinator.group("readers", true)! };
}

test("a replicated commit is shown once written, never while pending; a failed one leaves the offset as it was", async (t) => {
  const { store, g } = heldGroup(t);

  const first = g.commit([["t/0", { offset: 7, metadata: null }]]);
  assert.equal(store.writes.length, 1);
  assert.equal(g.offsets.get("t/0"), undefined, "pending: not shown");
  store.writes[0].settle();
  await first;
  assert.deepEqual(g.offsets.get("t/0"), { offset: 7, metadata: null });

  const failing = g.commit([["t/0", { offset: 9, metadata: null }]]);
  assert.equal(g.offsets.get("t/0")?.offset, 7);
  store.writes[1].settle(new Error("the leadership ended"));
  await assert.rejects(failing, /leadership ended/);
  assert.equal(g.offsets.get("t/0")?.offset, 7, "a failed commit is not shown");

  const forgetting = g.forget(["t/0"]);
  assert.equal(g.offsets.get("t/0")?.offset, 7, "a removal pending: the offset still shown");
  store.writes[2].settle();
  await forgetting;
  assert.equal(g.offsets.has("t/0"), false);
});

test("a group or topic removed while a commit is being written writes over that commit's key too", async (t) => {
  const { coordinator, store, g } = heldGroup(t);
  const first = g.commit([["gone/0", { offset: 3, metadata: null }]]);
  // The topic is deleted while the commit is written: its removal names the key although no offset is shown yet.
  const forgetting = coordinator.forgetTopic("gone");
  assert.deepEqual(store.writes[1]?.entries, [["gone/0", null]]);
  store.writes[0].settle();
  store.writes[1].settle();
  await Promise.all([first, forgetting]);
  assert.equal(g.offsets.has("gone/0"), false, "the removal, written after the commit, is what is shown");
  const second = g.commit([["kept/1", { offset: 5, metadata: null }]]);
  const removing = coordinator.remove(g);
  assert.deepEqual(store.writes[3]?.entries, [["kept/1", null]], "DeleteGroups writes over the commit in flight");
  store.writes[2].settle();
  store.writes[3].settle();
  await Promise.all([second, removing]);
});

test("DeleteGroups issues the members tombstone with the offsets' before it waits: a group made again under the id meanwhile writes after both", async (t) => {
  // A review found the members tombstone written only once the offsets' had been replicated: the members record of a
  // group re-created meanwhile (a consumer joining the deleted group's id) could land before it and be erased.
  const { coordinator, store, g } = heldGroup(t);
  const committed = g.commit([["t/0", { offset: 1, metadata: null }]]);
  store.writes[0].settle();
  await committed;
  const removing = coordinator.remove(g);
  assert.deepEqual(store.writes[1]?.entries, [["t/0", null]]);
  assert.deepEqual(store.members, [null], "the members tombstone is issued before the removal waits for anything");
  store.writes[1].settle();
  await removing;
});

test("a transaction's hold on a group's offsets (KIP-447) is written for the next coordinator, lengthened once its commit is decided, and ends in the write that stores its offsets", async (t) => {
  const { store, g } = heldGroup(t);
  const until = Date.now() + 60_000;
  g.holdForTxn(7, ["t/0", "t/1"], until);
  await g.recordHold(7);
  assert.deepEqual(store.holds, [[7, { keys: ["t/0", "t/1"], until }]]);
  assert.equal(g.heldByTxn("t/0"), true);

  // The commit decided: held until stored, past its timeout; written once.
  const decided = Date.now() + 900_000;
  await g.extendTxnHold(7, decided);
  await g.extendTxnHold(7, decided);
  assert.deepEqual(store.holds.slice(1), [[7, { keys: ["t/0", "t/1"], until: decided }]]);
  // No hold, no lengthening: a decision that arrives after the end (or for another producer) starts none.
  await g.extendTxnHold(8, decided);
  assert.equal(store.holds.length, 2);

  // The end fails to be written (the partition moved): still held, as the log says.
  const failed = g.commit([["t/0", { offset: 5, metadata: null }]], 7);
  assert.deepEqual(store.writes[0].endingHolds, [7], "the hold ends in the offsets' write");
  store.writes[0].settle(new Error("the leadership ended"));
  await assert.rejects(failed, /leadership ended/);
  assert.equal(g.heldByTxn("t/0"), true);

  const committing = g.commit([["t/0", { offset: 5, metadata: null }], ["t/1", { offset: 9, metadata: null }]], 7);
  assert.equal(g.heldByTxn("t/1"), true, "held while the end is written");
  await g.extendTxnHold(7, decided + 1);
  assert.equal(store.holds.length, 2, "an ending hold is not written again (it would outlive its end)");
  store.writes[1].settle();
  await committing;
  assert.equal(g.heldByTxn("t/0"), false);
  assert.equal(g.offsets.get("t/1")?.offset, 9);
  await g.extendTxnHold(7, decided + 1);
  assert.equal(store.holds.length, 2, "an ended hold is not started again");

  // As a new coordinator reads the holds back: one run out is not held.
  g.restoreHold(9, ["t/2"], Date.now() - 1);
  g.restoreHold(10, ["t/3"], decided);
  assert.equal(g.heldByTxn("t/2"), false);
  assert.equal(g.heldByTxn("t/3"), true);
});

test("a hold's end is written even where it is not held, and a transaction that holds offsets while its producer's last hold is ending keeps its own", async (t) => {
  const { store, g } = heldGroup(t);
  // Not held here (run out, evicted, or held by an earlier coordinator only): the end is written all the same.
  const ended = g.commit([], 11);
  assert.deepEqual(store.writes[0].endingHolds, [11]);
  store.writes[0].settle();
  await ended;

  // An abort's end is being written when the producer's next transaction holds offsets: the write ends the old hold only.
  g.holdForTxn(12, ["t/0"], Date.now() + 60_000);
  const ending = g.commit([], 12);
  const nextUntil = Date.now() + 60_000;
  g.holdForTxn(12, ["t/1"], nextUntil);
  await g.recordHold(12);
  assert.deepEqual(store.holds.at(-1), [12, { keys: ["t/1"], until: nextUntil }], "the new hold alone");
  store.writes[1].settle();
  await ending;
  assert.equal(g.heldByTxn("t/1"), true, "the next transaction's hold stays");
  assert.equal(g.heldByTxn("t/0"), false);
});

test("a hold whose end is being written is held past its time until the end is stored; one run out is not taken up again by the producer's next transaction", async (t) => {
  const { store, g } = heldGroup(t);
  const now = Date.now();
  g.holdForTxn(21, ["t/0"], now + 60_000);
  const ending = g.commit([["t/0", { offset: 5, metadata: null }]], 21);
  // Its time is up while its end is written: the old offset must not read as stable meanwhile.
  assert.equal(g.heldByTxn("t/0", now + 120_000), true);
  store.writes[0].settle();
  await ending;
  assert.equal(g.heldByTxn("t/0"), false);
  assert.equal(g.offsets.get("t/0")?.offset, 5);

  // A hold that ran out (its transaction aborted by its coordinator, its end never told) is over: the next one is its own.
  g.holdForTxn(22, ["t/1"], Date.now() - 1);
  g.holdForTxn(22, ["t/2"], Date.now() + 60_000);
  assert.equal(g.heldByTxn("t/1"), false, "the old transaction's keys are not held again");
  assert.equal(g.heldByTxn("t/2"), true);
});
