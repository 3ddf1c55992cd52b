/**
 * The log scan behind a producer's recovery and DescribeProducers
 * (stored-batches.ts scanProducers), on a stand-in log that counts its
 * reads: the scan stops at its end, not one sequence at a time.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { scanProducers } from "../src/protocols/kafka/stored-batches.js";
import type { MessageLog, StoredItem } from "../src/store/log.js";

test("a scan whose end falls in a gap stops at the first item past it, even one appended while it ran", async () => {
  // Sequences 1-10 stored, 11-20 deleted, and a batch of another format at 21 (appended after the scan took its end, 20).
  const items: StoredItem[] = [];
  for (let seq = 1; seq <= 10; seq++) items.push({ seq, time: seq, subject: "t", headers: null, key: null, data: Buffer.alloc(0) });
  items.push({ format: 99, firstSeq: 21, count: 1, time: 21, subject: "t", bytes: Buffer.alloc(0) });
  let reads = 0;
  const log = {
    state: () => ({ firstSeq: 1, lastSeq: 21 }),
    scanStored: (from: number, opts?: { maxMessages?: number }) => {
      reads++;
      const out = items.filter((m) => ("seq" in m ? m.seq : m.firstSeq + m.count - 1) >= from);
      return Promise.resolve(out.slice(0, opts?.maxMessages ?? 256));
    },
  } as unknown as MessageLog;
  let visited = 0;
  await scanProducers(log, 11, 20, () => visited++);
  assert.equal(visited, 0);
  assert.equal(reads, 1, "one read: the item past the end ends the scan");
  reads = 0;
  await scanProducers(log, 1, 20, () => visited++);
  assert.equal(reads, 1);
});
