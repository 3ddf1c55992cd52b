/** The pattern index finds exactly the patterns subjectsIntersect says intersect, against a brute-force check. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { PatternIndex } from "../src/subjects/pattern-index.js";
import { subjectsIntersect } from "../src/subjects/subject.js";
import { rng } from "./helpers/random.js";

function pattern(r: () => number): string {
  const n = 1 + Math.floor(r() * 4);
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = r();
    if (i === n - 1 && x < 0.15) tokens.push(">");
    else tokens.push(x < 0.35 ? "*" : ["a", "b", "c"][Math.floor(r() * 3)]);
  }
  return tokens.join(".");
}

test("intersecting() agrees with subjectsIntersect over random patterns, through adds and removes", () => {
  const r = rng(Number(process.env.NAGARE_FUZZ_SEED ?? 8));
  const index = new PatternIndex<number>();
  const stored = new Map<number, string>();
  for (let step = 0; step < 3000; step++) {
    if (r() < 0.6 || stored.size === 0) {
      const p = pattern(r);
      index.add(p, step);
      stored.set(step, p);
    } else {
      const keys = [...stored.keys()];
      const k = keys[Math.floor(r() * keys.length)];
      index.remove(stored.get(k)!, k);
      stored.delete(k);
    }
    const q = pattern(r);
    const want = [...stored].filter(([, p]) => subjectsIntersect(p, q)).map(([k]) => k).sort((a, b) => a - b);
    assert.deepEqual([...index.intersecting(q)].sort((a, b) => a - b), want, `query ${q}`);
  }
});
