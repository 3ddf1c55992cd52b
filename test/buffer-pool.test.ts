/** The pool of reused buffers (Kafka produce frames, NATS outbound buffers): reuse, fit and its bound. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { BufferPool } from "../src/util/buffer-pool.js";

test("a frame given back serves the next request that fits it; none is shared, and the pool keeps no more than its bound", () => {
  const pool = new BufferPool(3 * 1024 * 1024);
  const a = pool.take(1_000_000);
  const b = pool.take(1_000_000);
  assert.equal(a.length, 1_000_000);
  assert.notEqual(a.buffer, b.buffer);
  pool.give(a);
  assert.ok(pool.held >= 1_000_000);
  const c = pool.take(900_000);
  assert.equal(c.buffer, a.buffer, "the freed buffer is reused");
  assert.equal(c.length, 900_000);
  assert.equal(pool.held, 0);
  // Too small for the request, or more than twice its size: a new buffer.
  pool.give(c);
  assert.notEqual(pool.take(1_100_000).buffer, a.buffer);
  assert.notEqual(pool.take(100_000).buffer, a.buffer);
  assert.equal(pool.take(600_000).buffer, a.buffer);
  // Past the bound, buffers given back are dropped.
  const big = [pool.take(1_500_000), pool.take(1_500_000), pool.take(1_500_000)];
  for (const f of big) pool.give(f);
  assert.ok(pool.held <= 3 * 1024 * 1024);
  assert.equal(pool.held, big[0].buffer.byteLength * 2);
});
