/** Aborted transaction ranges as read_committed fetches look them up. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { AbortedRanges } from "../src/protocols/kafka/aborted-ranges.js";

test("a fetch window is told of every aborted range that reaches into it, in whatever order the aborts were recorded", () => {
  const a = new AbortedRanges();
  // Partition 0: short transactions, one long one (first record at 5, aborted at 400), recorded out of marker order.
  for (let i = 0; i < 100; i++) if (i !== 50) a.add({ partition: 0, producerId: i, first: 10 * i + 100, last: 10 * i + 103 });
  a.add({ partition: 0, producerId: 999, first: 5, last: 400 });
  a.add({ partition: 0, producerId: 50, first: 600, last: 603 });
  a.add({ partition: 1, producerId: 7, first: 0, last: 2 });
  const ids = (from: number, to: number, logStart = 0): number[] => a.within(0, from, to, logStart).map((r) => r.producerId).sort((x, y) => x - y);
  // Brute force over the same ranges: what a linear scan answers.
  const all = [...a.all()].filter((r) => r.partition === 0);
  for (const [from, to] of [[0, 4], [0, 10], [100, 100], [101, 125], [400, 400], [401, 599], [598, 610], [1000, 2000], [0, 2000]]) {
    const expected = all.filter((r) => r.last >= from && r.first <= to).map((r) => r.producerId).sort((x, y) => x - y);
    assert.deepEqual(ids(from, to), expected, `window [${from}, ${to}]`);
  }
  assert.deepEqual(ids(0, 4), []);
  assert.deepEqual(ids(0, 10), [999]);
  assert.deepEqual(ids(598, 609), [50]);
  assert.deepEqual(a.within(1, 0, 10, 0), [{ producerId: 7, first: 0 }]);
  assert.deepEqual(a.within(2, 0, 10, 0), []);
});

test("ranges whose marker is before the log's start are dropped as fetches pass them", () => {
  const a = new AbortedRanges();
  for (let i = 0; i < 5000; i++) a.add({ partition: 0, producerId: i, first: 10 * i, last: 10 * i + 3 });
  assert.equal(a.size, 5000);
  assert.deepEqual(a.within(0, 40_000, 40_013, 40_000).map((r) => r.producerId), [4000, 4001]);
  assert.equal(a.size, 1000);
  // Later ranges are still found, and new ones still go in order.
  a.add({ partition: 0, producerId: 9999, first: 49_995, last: 60_000 });
  assert.deepEqual(a.within(0, 49_996, 49_996, 40_000).map((r) => r.producerId), [9999]);
});
