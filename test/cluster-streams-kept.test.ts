/**
 * Which partitions a clustered stream takes publishes for while its
 * replication roles are being set up (`keptLeading`, cluster-streams.ts):
 * a replicated partition without its gate would acknowledge a write
 * stored on this node alone.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { keptLeading } from "../src/streams/cluster-streams.js";

test("a replicated partition takes publishes only once its gate is in place; one given up stops at once", () => {
  const led = [true, true, true, false];
  // A node just started (nothing excluded before): partitions 1 and 2 are replicated, only 1 has its gate yet.
  const gated = new Set([0, 1]);
  assert.deepEqual(keptLeading(led, null, (p) => gated.has(p)), [true, true, false, false]);
  // A stream grown from 2 to 4 partitions, both old ones led and gated: the new ones wait for their roles.
  assert.deepEqual(keptLeading([true, true, true, true], null, (p) => p < 2), [true, true, false, false]);
  // A partition this node stopped leading is not kept, gated or not.
  assert.deepEqual(keptLeading([true, true], [true, false], () => true), [true, false]);
  // Nothing replicated (every partition "gated"): what is led is kept.
  assert.deepEqual(keptLeading(led, null, () => true), led);
});
