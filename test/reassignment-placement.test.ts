/**
 * The placement changes of a replica reassignment (cluster-streams.ts
 * withReassignment, reassignmentEnded), as the Kafka door, the JetStream
 * API and the partition's leader make them: pure functions of the
 * placement, so every case is seen here without a cluster.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { reassignmentEnded, withReassignment, type PlacedStream } from "../src/streams/cluster-streams.js";
import { underReplicated } from "../src/cluster/placement.js";

function placed(replicas: string[][], leaders = replicas.map((r) => r[0])): PlacedStream {
  return { account: "$G", stream: "s", leaders, tags: [], cluster: "c", subjects: ["s"], origin: "kafka", config: null, replicas, epochs: replicas.map(() => 4), isr: replicas.map((r) => [...r]) };
}

test("a reassignment adds the target's new nodes first, in a new epoch, and records where the partition goes; its end keeps the target alone", () => {
  const start = placed([["a", "b", "c"], ["b", "c", "a"]]);
  const going = withReassignment(start, 0, ["d", "b"]);
  assert.deepEqual(going.replicas, [["d", "b", "a", "c"], ["b", "c", "a"]], "the target first (its preferred leader is the target's), then the others");
  assert.deepEqual(going.isr, [["a", "b", "c"], ["b", "c", "a"]], "the new node is not in sync yet");
  assert.deepEqual(going.epochs, [5, 4]);
  assert.deepEqual(going.reassigning, [{ original: ["a", "b", "c"], target: ["d", "b"] }, null]);
  assert.equal(going.leaders[0], "a", "the leader stays until it hands over");
  assert.equal(underReplicated(going), 0, "the replicas being added are not missing (Kafka's count)");
  assert.equal(underReplicated({ ...going, isr: [["a", "b"], ["b", "c", "a"]] }), 1, "one of the original replicas out of sync is");

  const done = reassignmentEnded({ ...going, isr: [["a", "b", "c", "d"], ["b", "c", "a"]] }, 0, ["d", "b"], true);
  assert.deepEqual(done.replicas, [["d", "b"], ["b", "c", "a"]]);
  assert.deepEqual(done.isr, [["b", "d"], ["b", "c", "a"]]);
  assert.deepEqual(done.epochs, [6, 4]);
  assert.equal(done.reassigning, undefined, "none left under way");
});

test("a reassignment that replaces one under way drops at once the nodes only the earlier one added, never the leader, and keeps the original", () => {
  const first = withReassignment(placed([["a", "b", "c"]]), 0, ["d", "e", "f"]);
  assert.deepEqual(first.replicas, [["d", "e", "f", "a", "b", "c"]]);
  const second = withReassignment({ ...first, isr: [["a", "b", "c", "e"]] }, 0, ["a", "b", "d"]);
  assert.deepEqual(second.replicas, [["a", "b", "d", "c"]], "e and f, added by the first only, go");
  assert.deepEqual(second.isr, [["a", "b", "c"]]);
  assert.deepEqual(second.reassigning, [{ original: ["a", "b", "c"], target: ["a", "b", "d"] }]);
  // The leadership went to a node of the first target meanwhile: it stays a replica until it hands over.
  const led = withReassignment({ ...first, leaders: ["e"], isr: [["e", "a", "b", "c"]] }, 0, ["a", "b", "d"]);
  assert.deepEqual(led.replicas, [["a", "b", "d", "e", "c"]]);
  // A cancel goes back to the original replicas, in their order.
  const back = reassignmentEnded(second, 0, second.reassigning![0]!.original, true);
  assert.deepEqual(back.replicas, [["a", "b", "c"]]);
  assert.equal(back.reassigning, undefined);
});
