/**
 * The Prometheus text writer on its own: escapes, values, and the rules a
 * scraper enforces (one HELP/TYPE per family, samples grouped under it),
 * checked by reading the output back with the strict test reader.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { Exposition } from "../src/monitor/exposition.js";
import { parseExposition } from "./helpers/prometheus.js";

test("label values and HELP text round-trip through their escapes", () => {
  const e = new Exposition();
  const awkward = 'back\\slash "quoted"\nnext line';
  e.family("demo_total", "counter", "Help with a \\ and a\nnewline");
  e.sample([["name", awkward], ["plain", "x"]], 3);
  const text = e.text();
  assert.ok(text.includes('name="back\\\\slash \\"quoted\\"\\nnext line"'));
  assert.ok(text.includes("# HELP demo_total Help with a \\\\ and a\\nnewline\n"));
  const f = parseExposition(text).get("demo_total")!;
  assert.equal(f.help, "Help with a \\ and a\nnewline");
  assert.deepEqual(f.samples, [{ labels: { name: awkward, plain: "x" }, value: 3 }]);
});

test("values: integers exactly, NaN and infinities by name, and no labels at all", () => {
  const e = new Exposition();
  e.family("demo_values", "gauge", "values");
  e.sample([["v", "big"]], 2 ** 53 - 1);
  e.sample([["v", "nan"]], NaN);
  e.sample([["v", "inf"]], Infinity);
  e.sample([["v", "-inf"]], -Infinity);
  e.single("demo_bare", "gauge", "no labels", [], -1.5);
  const text = e.text();
  assert.ok(text.includes('demo_values{v="big"} 9007199254740991\n'));
  assert.ok(text.includes('demo_values{v="inf"} +Inf\n'));
  assert.ok(text.includes("demo_bare -1.5\n"));
  const read = parseExposition(text);
  assert.deepEqual(
    read.get("demo_values")!.samples.map((s) => s.value),
    [2 ** 53 - 1, NaN, Infinity, -Infinity],
  );
});

test("what a scraper would refuse is refused at the source", () => {
  const e = new Exposition();
  assert.throws(() => e.sample([], 1), /before any family/);
  assert.throws(() => e.family("bad-name", "gauge", "x"), /invalid metric name/);
  e.family("ok_metric", "gauge", "x");
  assert.throws(() => e.sample([["bad-label", "v"]], 1), /invalid label name/);
  assert.throws(() => e.sample([["__reserved", "v"]], 1), /invalid label name/);
  e.family("other", "gauge", "y");
  assert.throws(() => e.family("ok_metric", "gauge", "x"), /written twice/);
  assert.equal(new Exposition().text(), "");
});
