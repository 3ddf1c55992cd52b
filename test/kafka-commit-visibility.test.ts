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
import { GroupCoordinator, type CommittedOffset, type Group, type OffsetsStore } from "../src/protocols/kafka/groups.js";

/** A store whose writes the test settles. */
class HeldStore implements OffsetsStore {
  readonly writes: Array<{ entries: Array<[string, CommittedOffset | null]>; settle: (err?: Error) => void }> = [];
  write(_group: Group, entries: Array<[string, CommittedOffset | null]>): Promise<void> {
    return new Promise((resolve, reject) => this.writes.push({ entries, settle: (err) => (err === undefined ? resolve() : reject(err)) }));
  }
  writeMembers(): Promise<void> {
    return Promise.resolve();
  }
}

/** A coordinator on a HeldStore, and its group "readers". */
function heldGroup(t: { after(fn: () => void): void }): { coordinator: GroupCoordinator; store: HeldStore; g: Group } {
  const dir = mkdtempSync(join(tmpdir(), "nagare-commits-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const coordinator = new GroupCoordinator(dir, { initialRebalanceDelayMs: 0, minSessionTimeoutMs: 6000, maxSessionTimeoutMs: 1_800_000 }, () => {});
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
