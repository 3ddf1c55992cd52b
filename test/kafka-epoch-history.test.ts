/**
 * The Kafka door's view of a partition's leader epochs (epoch-history.ts)
 * against the answers Kafka's leader-epoch cache gives: a leader whose
 * checkpoint was never trimmed and a follower that trimmed its copy at the
 * same log start answer alike; records from before replication are epoch 0;
 * a leadership that is not the one Metadata shows tells nothing.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { EpochHistory } from "../src/protocols/kafka/epoch-history.js";
import type { EpochEntry } from "../src/store/leader-epochs.js";
import type { Stream } from "../src/streams/stream.js";

/** A stream of one partition holding sequences first..last, led here with `entries` (undefined: not replicated; null: a gate without a history). */
function partition(entries: EpochEntry[] | null | undefined, first: number, last: number): Stream {
  const gate = entries === undefined ? undefined : { epochEntries: entries ?? undefined };
  const messages = last - first + 1;
  return { replicaGate: () => gate, partitions: [{ state: () => ({ messages, firstSeq: messages > 0 ? first : last + 1, lastSeq: last }) }] } as unknown as Stream;
}

const ends = (h: EpochHistory | null, epochs: number[], logEnd: number) => epochs.map((e) => h!.endOffsetFor(e, logEnd));

test("a leader's whole checkpoint and a follower's trimmed one, at the same log start, give Kafka's answers alike", () => {
  // Epoch 1 wrote sequences 1-5 (offsets 0-4), epoch 2 from 6; the log starts at sequence 8 (offset 7) after a purge.
  const leader = EpochHistory.of(partition([{ epoch: 1, start: 1 }, { epoch: 2, start: 6 }], 8, 9), 0, 2);
  const follower = EpochHistory.of(partition([{ epoch: 2, start: 8 }], 8, 9), 0, 2);
  const want = [
    { epoch: 0, endOffset: 7 }, // older than any kept: itself, and where the first kept begins (the log start)
    { epoch: 1, endOffset: 7 },
    { epoch: 2, endOffset: 9 }, // the latest: the log end
    { epoch: -1, endOffset: -1 }, // never reached
  ];
  assert.deepEqual(ends(leader, [0, 1, 2, 3], 9), want);
  assert.deepEqual(ends(follower, [0, 1, 2, 3], 9), want);
  assert.deepEqual([leader!.at(8), leader!.at(9), follower!.at(8)], [2, 2, 2]);
  // Untrimmed, the same leader tells epoch 1's records and end as written.
  const whole = EpochHistory.of(partition([{ epoch: 1, start: 1 }, { epoch: 2, start: 6 }], 1, 9), 0, 2);
  assert.deepEqual(ends(whole, [0, 1, 2], 9), [
    { epoch: 0, endOffset: 0 },
    { epoch: 1, endOffset: 5 },
    { epoch: 2, endOffset: 9 },
  ]);
  assert.deepEqual([1, 5, 6, 9, 3].map((s) => whole!.at(s)), [1, 1, 2, 2, 1], "asked out of order too");
});

test("records from before the stream was replicated are epoch 0; only -1 is the undefined epoch", () => {
  const h = EpochHistory.of(partition([{ epoch: 1, start: 11 }], 1, 20), 0, 1);
  assert.deepEqual([1, 10, 11, 20].map((s) => h!.at(s)), [0, 0, 1, 1]);
  assert.deepEqual(ends(h, [-1, -2, 0, 1], 20), [
    { epoch: -1, endOffset: -1 },
    { epoch: -2, endOffset: 0 },
    { epoch: 0, endOffset: 10 },
    { epoch: 1, endOffset: 20 },
  ]);
});

test("a partition not replicated: every record the epoch Metadata shows, every epoch up to it ending at the log end", () => {
  const never = EpochHistory.of(partition(undefined, 1, 3), 0, 0);
  assert.deepEqual(ends(never, [0, 1, -1, -2], 3), [
    { epoch: 0, endOffset: 3 },
    { epoch: -1, endOffset: -1 },
    { epoch: -1, endOffset: -1 },
    { epoch: -2, endOffset: 0 },
  ]);
  // Scaled down from replicas, it keeps its last epoch: a consumer that read at epoch 2 sees no truncation.
  const scaled = EpochHistory.of(partition(undefined, 1, 30), 0, 3);
  assert.deepEqual(ends(scaled, [2, 3], 30), [
    { epoch: 2, endOffset: 30 },
    { epoch: 3, endOffset: 30 },
  ]);
  assert.equal(scaled!.at(5), 3);
});

test("a replicated partition whose leadership here is not the one Metadata shows tells nothing (LEADER_NOT_AVAILABLE)", () => {
  assert.equal(EpochHistory.of(partition(null, 1, 5), 0, 2), null, "a gate without a history (not leading yet)");
  assert.equal(EpochHistory.of(partition([{ epoch: 1, start: 1 }], 1, 5), 0, 2), null, "an older leadership than Metadata's");
  assert.notEqual(EpochHistory.of(partition([{ epoch: 1, start: 1 }, { epoch: 2, start: 4 }], 1, 5), 0, 2), null);
});
