/**
 * The fault harness on today's cluster (issue 20's "Fault tests"; no
 * replication yet): three nodes as processes, a three-member etcd, load
 * from real clients, and a seeded random schedule of the faults that are
 * safe without replication (a node paused shorter than its lease, routes
 * cut, partitioned and delayed, a node cut off from etcd shorter than its
 * lease, the etcd leader killed, a node killed and restarted on its data).
 * Every acknowledged write must survive: acks are sent only after fsync,
 * so a leader killed with -9 and restarted has them all.
 *
 * The seed is printed; `FAULT_SEED=<seed>` replays a run. `npm run soak`
 * runs the same scenario longer (FAULT_SECONDS, default 300);
 * `FAULT_HISTORY=<file>` writes the history of a passing run too.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runFaultScenario } from "./helpers/fault-scenario.js";
import { describeResult } from "./helpers/checker.js";

const soak = process.env.FAULT_SOAK === "1";
const seed = process.env.FAULT_SEED !== undefined ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
const seconds = Number(process.env.FAULT_SECONDS ?? (soak ? 300 : 25));

test(`a seeded random schedule of faults safe without replication loses no acknowledged write (seed ${seed}, ${seconds} s)`, { timeout: (Math.ceil(seconds * 1.5) + 120) * 1000 }, async () => {
  assert.ok(Number.isInteger(seed) && seed >= 0, `FAULT_SEED must be a whole number, got ${process.env.FAULT_SEED}`);
  const run = await runFaultScenario({ seed, durationMs: seconds * 1000, log: (l) => console.log(l) });
  console.log(describeResult(run.result));
  // FAULT_HISTORY=<file>: keep the history of a passing run too (to study one, or to report a soak).
  if (process.env.FAULT_HISTORY !== undefined) writeFileSync(process.env.FAULT_HISTORY, run.history.toJsonLines());
  if (!run.result.ok) {
    // The whole history, for the report: which faults, what each client saw.
    const file = join(tmpdir(), `nagare-faults-${seed}.jsonl`);
    writeFileSync(file, run.history.toJsonLines());
    const first = run.result.problems[0];
    const excerpt = first.value === undefined ? "" : run.history.toJsonLines(run.history.about(first.value));
    assert.fail(`seed ${seed}: ${describeResult(run.result)}\nhistory in ${file}\n${excerpt}`);
  }
  assert.deepEqual(run.crashes, [], `seed ${seed}: a node crashed`);
  // The run must have exercised something: writes acknowledged on every log, and read back.
  const acked = new Set(run.history.ops.filter((o) => o.type === "ack").map((o) => (o as { log: string }).log));
  assert.deepEqual([...acked].sort(), ["js-a/0", "js-b/0", "js-c/0", "kt/0", "kt/1", "kt/2"]);
  assert.ok(run.result.counts.reads > 0);
});
