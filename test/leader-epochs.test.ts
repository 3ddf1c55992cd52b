/**
 * The leader epoch checkpoint (store/leader-epochs.ts): the answers a
 * leader gives a returning follower (Kafka's OffsetForLeaderEpoch), the
 * truncations that keep entries ordered, and the file surviving a reopen
 * while a damaged one is refused.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LeaderEpochs, UNDEFINED_EPOCH } from "../src/store/leader-epochs.js";

test("endOf answers where an epoch ends: the next epoch's start, the log's next sequence for the latest, nothing before the first", async () => {
  const e = LeaderEpochs.inMemory();
  await e.assign(0, 1);
  await e.assign(2, 11);
  await e.assign(5, 31);
  assert.deepEqual(e.endOf(0, 41), { epoch: 0, end: 11 });
  assert.deepEqual(e.endOf(1, 41), { epoch: 0, end: 11 }, "an epoch this log never had: the largest below it");
  assert.deepEqual(e.endOf(2, 41), { epoch: 2, end: 31 });
  assert.deepEqual(e.endOf(4, 41), { epoch: 2, end: 31 });
  assert.deepEqual(e.endOf(5, 41), { epoch: 5, end: 41 });
  assert.deepEqual(e.endOf(9, 41), { epoch: 5, end: 41 });
  const late = LeaderEpochs.inMemory([{ epoch: 3, start: 100 }]);
  assert.deepEqual(late.endOf(2, 150), { epoch: UNDEFINED_EPOCH, end: UNDEFINED_EPOCH });
});

test("KIP-101's divergence: a follower truncates to the end of the last epoch it shares with the new leader", async () => {
  // Leader A wrote 1..10 in epoch 0 and 11..12 in epoch 1, of which only 11 reached B; A died, B leads epoch 2 from 12.
  const a = LeaderEpochs.inMemory([{ epoch: 0, start: 1 }, { epoch: 1, start: 11 }]);
  const b = LeaderEpochs.inMemory([{ epoch: 0, start: 1 }, { epoch: 1, start: 11 }]);
  await b.assign(2, 12);
  // A returns as a follower: its latest epoch is 1, which on B ends at 12: A drops its 12 (never acknowledged).
  const { epoch, end } = b.endOf(a.latest(), 20);
  assert.deepEqual({ epoch, end }, { epoch: 1, end: 12 });
  await a.truncateFrom(Math.min(13, end));
  assert.deepEqual(a.list(), [{ epoch: 0, start: 1 }, { epoch: 1, start: 11 }]);
  await a.assign(2, 12);
  assert.deepEqual(a.list(), b.list());
});

test("assign refuses what would disorder the entries; an epoch that wrote nothing is replaced", async () => {
  const e = LeaderEpochs.inMemory();
  await e.assign(1, 5);
  await e.assign(1, 9); // the same epoch again: nothing new
  assert.deepEqual(e.list(), [{ epoch: 1, start: 5 }]);
  await assert.rejects(e.assign(0, 10), /older than the latest/);
  await assert.rejects(e.assign(2, 4), /truncate first/);
  await assert.rejects(e.assign(2, 0), /bad leader epoch/);
  await e.assign(2, 5); // epoch 1 wrote nothing
  assert.deepEqual(e.list(), [{ epoch: 2, start: 5 }]);
  assert.equal(e.latest(), 2);
});

test("truncateFrom drops epochs that began at or after the new end; trimBelow moves the oldest kept epoch's start", async () => {
  const e = LeaderEpochs.inMemory([
    { epoch: 1, start: 1 },
    { epoch: 3, start: 10 },
    { epoch: 5, start: 20 },
  ]);
  await e.trimBelow(15);
  assert.deepEqual(e.list(), [
    { epoch: 3, start: 15 },
    { epoch: 5, start: 20 },
  ]);
  await e.trimBelow(15);
  await e.trimBelow(3);
  assert.deepEqual(e.list(), [
    { epoch: 3, start: 15 },
    { epoch: 5, start: 20 },
  ]);
  await e.truncateFrom(20);
  assert.deepEqual(e.list(), [{ epoch: 3, start: 15 }]);
  await e.truncateFrom(15);
  assert.deepEqual(e.list(), []);
  assert.equal(e.latest(), UNDEFINED_EPOCH);
});

test("the checkpoint survives a reopen; a damaged one is refused with its path", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-epochs-"));
  try {
    const path = join(dir, "p0", "leader-epochs.json");
    const e = await LeaderEpochs.open(path);
    assert.deepEqual(e.list(), []);
    await e.assign(0, 1);
    await e.assign(4, 77);
    assert.deepEqual((await LeaderEpochs.open(path)).list(), [
      { epoch: 0, start: 1 },
      { epoch: 4, start: 77 },
    ]);
    writeFileSync(path, JSON.stringify({ version: 1, entries: [{ epoch: 4, start: 77 }, { epoch: 2, start: 90 }] }));
    await assert.rejects(LeaderEpochs.open(path), (err: Error) => err.message.includes(path) && /damaged/.test(err.message));
    writeFileSync(path, JSON.stringify({ version: 1 }));
    await assert.rejects(LeaderEpochs.open(path), /damaged/);
    writeFileSync(path, "{not json");
    await assert.rejects(LeaderEpochs.open(path), (err: Error) => err.message.includes(path) && /damaged/.test(err.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a write that fails (a full disk) changes nothing in memory either: the retry writes the entry again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-epochs-"));
  try {
    const path = join(dir, "p0", "leader-epochs.json");
    const e = await LeaderEpochs.open(path);
    await e.assign(3, 1);
    // The directory becomes unwritable: a file where it was.
    rmSync(join(dir, "p0"), { recursive: true });
    writeFileSync(join(dir, "p0"), "");
    await assert.rejects(e.assign(5, 40));
    assert.equal(e.latest(), 3, "memory says what the file says");
    await assert.rejects(e.truncateFrom(1));
    await assert.rejects(e.trimBelow(10));
    assert.deepEqual(e.list(), [{ epoch: 3, start: 1 }]);
    rmSync(join(dir, "p0"));
    await e.assign(5, 40);
    assert.deepEqual((await LeaderEpochs.open(path)).list(), [
      { epoch: 3, start: 1 },
      { epoch: 5, start: 40 },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
