/**
 * The log scan behind a producer's recovery and DescribeProducers
 * (stored-batches.ts scanProducers), on a stand-in log that counts its
 * reads: the scan stops at its end, not one sequence at a time. And when
 * a producer's recovery is worth that scan (producers.ts).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { PRODUCER_SCAN, scanProducers } from "../src/protocols/kafka/stored-batches.js";
import { ProducerStates } from "../src/protocols/kafka/producers.js";
import type { MessageLog, StoredItem } from "../src/store/log.js";

test("a scan whose end falls in a gap stops at the first item past it, even one appended while it ran", async () => {
  // Sequences 1-10 stored, 11-20 deleted, and a batch of another format at 21 (appended after the scan took its end, 20).
  const items: StoredItem[] = [];
  for (let seq = 1; seq <= 10; seq++) items.push({ seq, time: seq, subject: "t", headers: null, key: null, data: Buffer.alloc(0) });
  items.push({ format: 99, firstSeq: 21, count: 1, time: 21, subject: "t", bytes: Buffer.alloc(0) });
  let reads = 0;
  const log = {
    state: () => ({ firstSeq: 1, lastSeq: 21 }),
    scanStored: (from: number, opts?: { maxMessages?: number }) => {
      reads++;
      const out = items.filter((m) => ("seq" in m ? m.seq : m.firstSeq + m.count - 1) >= from);
      return Promise.resolve(out.slice(0, opts?.maxMessages ?? 256));
    },
  } as unknown as MessageLog;
  let visited = 0;
  await scanProducers(log, 11, 20, () => visited++);
  assert.equal(visited, 0);
  assert.equal(reads, 1, "one read: the item past the end ends the scan");
  reads = 0;
  await scanProducers(log, 1, 20, () => visited++);
  assert.equal(reads, 1);
});

test("after the producer-state bound evicts an entry, unknown producers of that partition are recovered from the log until it has moved past what a recovery reads", () => {
  const states = new ProducerStates(2);
  let lastSeq = 0;
  const log = { state: () => ({ lastSeq }) };
  const stored = (offset: number): Promise<number> => Promise.resolve(offset);
  // Three producers' first batches, at offsets 0, 10 and 20 (ten records each): the third evicts the first's entry.
  const ids = [states.allocate(), states.allocate(), states.allocate()];
  ids.forEach((id, i) => assert.equal(states.check(id, 0, "t", 0, 0, 0, 10, stored(10 * i), 0).kind, "append"));
  lastSeq = 30;
  const newcomer = states.allocate();
  assert.equal(states.mayNeedRecovery(newcomer, "t", 0, 0, log), true, "the evicted entry's batch in flight: noted once stored");
  return Promise.resolve().then(() => {
    // Stored at offset 0 (sequences 1-10); a fourth producer evicts the second, whose batch ends at sequence 20.
    assert.equal(states.check(newcomer, 0, "t", 0, 0, 0, 10, stored(30), 0).kind, "append");
    lastSeq = 40;
    const later = states.allocate();
    assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), true, "an unknown producer may be one evicted");
    assert.equal(states.mayNeedRecovery(later, "t", 1, 0, log), false, "another partition lost nothing");
    lastSeq = 20 + PRODUCER_SCAN - 1;
    assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), true, "the evicted batch's last record still within reach");
    lastSeq = 20 + PRODUCER_SCAN;
    assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), false, "all of it below what a recovery reads");
    lastSeq = 40;
    assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), false, "the mark is gone");
  });
});

test("an evicted producer whose batch is still in flight is recovered from the log however far the partition has moved, until that batch settles", async () => {
  const states = new ProducerStates(1);
  let lastSeq = 0;
  const log = { state: () => ({ lastSeq }) };
  let store!: (offset: number) => void;
  const inFlight = new Promise<number>((resolve) => (store = resolve));
  const evicted = states.allocate();
  assert.equal(states.check(evicted, 0, "t", 0, 0, 0, 10, inFlight, 0).kind, "append");
  // A second producer takes the only entry: the first's batch is not stored yet, so how far it goes is not known.
  assert.equal(states.check(states.allocate(), 0, "t", 0, 0, 0, 10, Promise.resolve(0), 0).kind, "append");
  lastSeq = 10 * PRODUCER_SCAN;
  const later = states.allocate();
  assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), true, "the evicted batch may land anywhere up to the log's end");
  assert.equal(states.mayNeedRecovery(evicted, "t", 0, 0, log), true, "the evicted producer's retry is recovered");
  store(lastSeq);
  await inFlight;
  assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), true, "stored at the log's end: within what a recovery reads");
  lastSeq += 10 + PRODUCER_SCAN;
  assert.equal(states.mayNeedRecovery(later, "t", 0, 0, log), false, "and once below it, no longer");
});

test("the bound evicts an entry with no batch in flight before one with a batch still to be stored", async () => {
  const states = new ProducerStates(2);
  const log = { state: () => ({ lastSeq: 20 }) };
  const inFlight = new Promise<number>(() => undefined);
  const [busy, idle, third] = [states.allocate(), states.allocate(), states.allocate()];
  assert.equal(states.check(busy, 0, "t", 0, 0, 0, 10, inFlight, 0).kind, "append");
  const stored = Promise.resolve(10);
  assert.equal(states.check(idle, 0, "t", 0, 0, 0, 10, stored, 0).kind, "append");
  await stored;
  // The least recently used entry (busy) has a batch not yet stored, whose retry a recovery might not find in the log.
  assert.equal(states.check(third, 0, "t", 0, 0, 0, 10, Promise.resolve(20), 0).kind, "append");
  assert.equal(states.mayNeedRecovery(busy, "t", 0, 0, log), false, "the producer with a batch in flight is still known");
  assert.equal(states.mayNeedRecovery(idle, "t", 0, 0, log), true, "the idle one went, to be recovered from the log");
  assert.deepEqual(states.check(busy, 0, "t", 0, 0, 0, 10, Promise.resolve(0), 0).kind, "duplicate", "a retry of the batch in flight is known as one");
});

test("a batch past a producer's first, checked after its partition arrived here again since its recovery was decided, is refused once (retriably), so that its retry reads the log", () => {
  const states = new ProducerStates(10);
  const id = states.allocate();
  const stored = (offset: number): Promise<number> => Promise.resolve(offset);
  assert.equal(states.check(id, 0, "t", 0, 0, 0, 5, stored(0), 0).kind, "append");
  // The partition arrives again (a move back, a leadership taken up again) between the batch's recovery and its check.
  assert.deepEqual(states.check(id, 0, "t", 0, 1, 5, 5, stored(5), 0), { kind: "refuse", error: 6 }, "NOT_LEADER_OR_FOLLOWER");
  assert.equal(states.check(id, 0, "t", 0, 1, 5, 5, stored(5), 0).kind, "append", "the retry, its recovery done (here: nothing found)");
});
