/** HiddenRanges (src/streams/visibility.ts): the sorted, merged ranges a door hides from NATS readers, checked against a plain set. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { HiddenRanges } from "../src/streams/visibility.js";
import { rng } from "./helpers/random.js";

test("hidden ranges added in any order answer has() and within() as a plain set does, merged and clipped", () => {
  const rnd = rng(Number(process.env.NAGARE_FUZZ_SEED ?? 17));
  for (let round = 0; round < 50; round++) {
    const r = new HiddenRanges();
    const set = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const from = 1 + Math.floor(rnd() * 300);
      const to = from + Math.floor(rnd() * 5);
      // Ranges a door adds never overlap (each sequence is hidden once); adjacent ones may.
      let clash = false;
      for (let s = from; s <= to; s++) if (set.has(s)) clash = true;
      if (clash) continue;
      r.add(0, from, to);
      for (let s = from; s <= to; s++) set.add(s);
    }
    const all = [...r.all()];
    for (let i = 1; i < all.length; i++) assert.ok(all[i][1] > all[i - 1][2] + 1, "sorted, disjoint, adjacent ones merged");
    for (let s = 0; s <= 310; s++) assert.equal(r.has(0, s), set.has(s), `has(${s})`);
    const after = Math.floor(rnd() * 200);
    const upTo = after + Math.floor(rnd() * 120);
    const expected: number[] = [];
    for (let s = after + 1; s <= upTo; s++) if (set.has(s)) expected.push(s);
    const got: number[] = [];
    for (const [from, to] of r.within(0, after, upTo)) for (let s = from; s <= to; s++) got.push(s);
    assert.deepEqual(got, expected);
    r.dropBelow(0, after + 1);
    for (const [, , to] of r.all()) assert.ok(to >= after + 1);
    assert.equal(r.has(1, 5), false, "partitions are separate");
  }
});

test("retain keeps only the ranges asked for, in order, and count says how many are left", () => {
  const r = new HiddenRanges();
  for (const s of [3, 5, 7, 9]) r.add(0, s, s);
  r.add(0, 20, 25);
  r.add(1, 3, 3);
  assert.equal(r.count(0), 5);
  const stored = new Set([7, 22]);
  const anyStored = (from: number, to: number): boolean => {
    for (let s = from; s <= to; s++) if (stored.has(s)) return true;
    return false;
  };
  assert.equal(r.retain(0, anyStored), 2);
  assert.deepEqual([...r.all()], [[0, 7, 7], [0, 20, 25], [1, 3, 3]], "partition 1 untouched");
  assert.equal(r.count(0), 2);
  assert.equal(r.has(0, 3), false);
  r.add(0, 8, 8);
  assert.deepEqual([...r.all()].filter(([p]) => p === 0), [[0, 7, 8], [0, 20, 25]], "still merged with a neighbour");
  assert.equal(r.retain(2, () => false), 0, "a partition with none");
});
