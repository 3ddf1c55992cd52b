/**
 * The fault-test checker on hand-made histories: a clean history passes,
 * and each check fails the history made to break it (a checker that
 * cannot fail proves nothing).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { checkHistory, describeResult, type FinalLogs } from "./helpers/checker.js";
import type { Op, Unstamped } from "./helpers/history.js";
import { rng } from "./helpers/random.js";
import { faultSchedule } from "./helpers/fault-schedule.js";

/** A history written by hand: ops in the order given, one millisecond apart. */
function h(...ops: Unstamped[]): Op[] {
  return ops.map((o, i) => ({ t: i, ...o }) as Op);
}
const send = (client: string, value: string): Unstamped => ({ type: "send", client, value });
const ack = (client: string, value: string, log: string, offset: number): Unstamped => ({ type: "ack", client, value, log, offset });
const read = (client: string, log: string, offset: number, value: string): Unstamped => ({ type: "read", client, log, offset, value });
const logs = (entries: Record<string, Array<[number, string]>>): FinalLogs => new Map(Object.entries(entries).map(([k, v]) => [k, v.map(([offset, value]) => ({ offset, value }))]));

const checks = (ops: Op[], final: FinalLogs, o?: { atLeastOnce?: ReadonlySet<string> }): string[] => [...new Set(checkHistory(ops, final, o).problems.map((p) => p.check))].sort();

test("a clean history passes: acknowledged records stored once, in order, reads and commits consistent", () => {
  const ops = h(
    send("p", "a"),
    send("q", "b"), // concurrent with a: either order is fine
    ack("q", "b", "t/0", 0),
    ack("p", "a", "t/0", 1),
    send("p", "c"),
    { type: "fail", client: "p", value: "c", error: "timeout" }, // failed: may or may not be stored
    read("r", "t/0", 0, "b"),
    { type: "commit", t0: 7, client: "g1", group: "g", log: "t/0", offset: 1 },
    { type: "committed", t0: 9, client: "g2", group: "g", log: "t/0", offset: 1 },
    { type: "commit", t0: 10, client: "g1", group: "g", log: "t/0", offset: 2 },
  );
  const r = checkHistory(ops, logs({ "t/0": [[0, "b"], [1, "a"], [2, "c"]] }));
  assert.deepEqual(r.problems, []);
  assert.equal(r.ok, true);
  assert.deepEqual(r.counts, { sent: 3, acked: 2, failed: 1, stored: 3, reads: 1, commits: 2 });
  assert.match(describeResult(r), /acknowledged 2.*: ok/);
});

test("an acknowledged record missing at the end is acked-lost; found elsewhere, acked-moved", () => {
  const ops = h(send("p", "a"), ack("p", "a", "t/0", 0), send("p", "b"), ack("p", "b", "t/0", 1));
  assert.deepEqual(checks(ops, logs({ "t/0": [[0, "a"]] })), ["acked-lost"]);
  assert.deepEqual(checks(ops, logs({ "t/0": [[0, "a"], [2, "b"]] })), ["acked-moved"]);
  assert.deepEqual(checks(ops, logs({ "t/0": [[0, "a"]], "t/1": [[1, "b"]] })), ["acked-moved"]);
  const r = checkHistory(ops, logs({ "t/0": [[0, "a"]] }));
  assert.equal(r.problems[0].value, "b");
  assert.match(describeResult(r), /acked-lost: b acknowledged to p at t\/0@1 is not in the final logs/);
});

test("a record stored twice is a duplicate, unless its producer is at-least-once; a value never sent is a phantom", () => {
  const ops = h(send("p", "a"), { type: "fail", client: "p", value: "a", error: "timeout" }, send("p", "a2"), ack("p", "a2", "t/0", 1));
  // The failed send was stored after all, and then its retry too: not exactly once.
  const final = logs({ "t/0": [[0, "a"], [1, "a2"], [2, "a"]] });
  assert.deepEqual(checks(ops, final), ["duplicate"]);
  assert.deepEqual(checks(ops, final, { atLeastOnce: new Set(["p"]) }), []);
  assert.deepEqual(checks(ops, logs({ "t/0": [[0, "zz"], [1, "a2"]] })), ["phantom"]);
});

test("a record sent after another was acknowledged, stored before it, breaks the order", () => {
  const ops = h(send("p", "a"), ack("p", "a", "t/0", 5), send("q", "b"), ack("q", "b", "t/0", 4));
  assert.deepEqual(checks(ops, logs({ "t/0": [[4, "b"], [5, "a"]] })), ["order"]);
  // Concurrent sends may land in either order; other logs are independent.
  const concurrent = h(send("p", "a"), send("q", "b"), ack("p", "a", "t/0", 5), ack("q", "b", "t/0", 4));
  assert.deepEqual(checks(concurrent, logs({ "t/0": [[4, "b"], [5, "a"]] })), []);
  const otherLog = h(send("p", "a"), ack("p", "a", "t/0", 5), send("q", "b"), ack("q", "b", "t/1", 0));
  assert.deepEqual(checks(otherLog, logs({ "t/0": [[5, "a"]], "t/1": [[0, "b"]] })), []);
  // A final read whose offsets go down is itself wrong.
  assert.deepEqual(checks(h(send("p", "a"), send("p", "b")), logs({ "t/0": [[1, "a"], [0, "b"]] })), ["final-order"]);
});

test("a record a reader saw must still be there at the end, and every read of an offset sees one record", () => {
  const ops = h(send("p", "a"), read("r", "t/0", 0, "a"));
  assert.deepEqual(checks(ops, logs({ "t/0": [] })), ["read-lost"]);
  // Not acknowledged, but seen: it must not be lost either (a truncated unacknowledged tail would be).
  assert.deepEqual(checks(ops, logs({ "t/0": [[0, "a"]] })), []);
  const diverged = h(send("p", "a"), send("p", "b"), read("r", "t/0", 0, "a"), read("s", "t/0", 0, "b"));
  assert.deepEqual(checks(diverged, logs({ "t/0": [[0, "a"], [1, "b"]] })), ["read-diverged"]);
  assert.deepEqual(checks(h(send("p", "a"), send("p", "b"), read("r", "t/0", 0, "a")), logs({ "t/0": [[0, "b"], [1, "a"]] })), ["read-lost"]);
});

test("a committed offset fetched after a commit or a fetch completed may not be lower", () => {
  const commit = (t0: number, t: number, offset: number): Op => ({ type: "commit", t0, t, client: "c", group: "g", log: "t/0", offset });
  const fetched = (t0: number, t: number, offset: number): Op => ({ type: "committed", t0, t, client: "f", group: "g", log: "t/0", offset });
  const none = new Map();
  assert.deepEqual(checks([commit(0, 1, 5), fetched(2, 3, 5), commit(4, 5, 9), fetched(6, 7, 9)], none), []);
  assert.deepEqual(checks([commit(0, 1, 5), fetched(2, 3, 4)], none), ["commit-backwards"]);
  // A fetch that overlapped the commit may see the old value.
  assert.deepEqual(checks([commit(0, 3, 5), fetched(2, 4, 4)], none), []);
  // Two fetches: the later one may not see less (the committed offset went back on the broker).
  assert.deepEqual(checks([commit(0, 1, 5), fetched(2, 3, 7), fetched(4, 5, 6)], none), ["commit-backwards"]);
  // The premise: clients commit in order.
  assert.deepEqual(checks([commit(0, 1, 5), commit(2, 3, 4)], none), ["commit-client-backwards"]);
  // Other groups and logs are independent.
  assert.deepEqual(checks([commit(0, 1, 5), { type: "committed", t0: 2, t: 3, client: "f", group: "h", log: "t/0", offset: 1 }], none), []);
});

test("a fault schedule is a function of its seed", () => {
  const kinds = ["pause", "cut-route", "kill-etcd-leader", "kill-node"] as const;
  const a = faultSchedule(rng(42), { durationMs: 20_000, kinds: [...kinds], nodes: ["a", "b", "c"] });
  const b = faultSchedule(rng(42), { durationMs: 20_000, kinds: [...kinds], nodes: ["a", "b", "c"] });
  const c = faultSchedule(rng(43), { durationMs: 20_000, kinds: [...kinds], nodes: ["a", "b", "c"] });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.ok(a.length > 0);
  // Faults do not overlap, and each ends before the run does.
  for (let i = 0; i < a.length; i++) {
    assert.ok(a[i].at + a[i].holdMs <= 20_000);
    if (i > 0) assert.ok(a[i].at >= a[i - 1].at + a[i - 1].holdMs);
  }
});
