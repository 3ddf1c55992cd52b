/**
 * Memory that does not grow with the number of messages: a segment's
 * per-message detail lives in its index file and is read back when a query
 * needs it. A clean reopen reads summaries only; deletes survive whether or
 * not the index files caught up with them.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog } from "../src/store/file-log.js";
import { detailCache } from "../src/store/paged-index.js";
import { appendAsync, runOf } from "../src/store/log.js";

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-paged-"));
}

const SUBJECTS = ["p.a", "p.b", "p.c", "q.x", "q.y"];
const N = 3000;

/** N messages in ~8 KiB segments, appended in runs; message i (1-based) has subject SUBJECTS[i % 5]. */
async function filled(dir: string): Promise<void> {
  const log = await FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
  for (let i = 1; i <= N; i += 50) {
    const inputs = Array.from({ length: 50 }, (_, k) => ({ subject: SUBJECTS[(i + k) % 5], data: body(i + k) }));
    await new Promise<number>((resolve, reject) => log.appendMany(runOf(inputs), (err, seq) => (err ? reject(err) : resolve(seq))));
  }
  await log.close();
}

function body(seq: number): Buffer {
  return Buffer.from(`m${seq}`.padEnd(100, "."));
}

async function withBudget<T>(bytes: number, f: () => Promise<T>): Promise<T> {
  const was = detailCache.budget;
  detailCache.budget = bytes;
  try {
    return await f();
  } finally {
    detailCache.budget = was;
  }
}

test("a clean reopen reads each segment's summary, not its detail, and answers counts from it", async () => {
  const dir = tempDir();
  try {
    await filled(dir);
    const log = await FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
    try {
      const { segments, detailsInMemory } = log.segmentCounts;
      assert.ok(segments > 20, `${segments} segments`);
      assert.equal(log.io.segmentsScanned, 0);
      assert.ok(log.io.detailsLoaded <= 1, `only the newest segment's detail is read (${log.io.detailsLoaded})`);
      assert.ok(detailsInMemory <= 1);
      const st = log.state();
      assert.deepEqual([st.firstSeq, st.lastSeq, st.messages, st.subjects], [1, N, N, 5]);
      assert.equal(log.subjectCount("p.a"), N / 5);
      assert.deepEqual(log.lastPerSubject("q.*"), [N - 2, N - 1]);
      assert.equal(log.pendingAfter(0, "p.*"), (N * 3) / 5);
      assert.equal(log.io.detailsLoaded <= 1, true, "counts come from summaries");
    } finally {
      await log.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("with no memory to spare, queries read details back and let them go again; answers stay exact", async () => {
  const dir = tempDir();
  try {
    await filled(dir);
    await withBudget(0, async () => {
      const log = await FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
      try {
        for (const seq of [1, 777, 1500, 2222, N]) {
          assert.equal((await log.get(seq))?.data.toString(), body(seq).toString());
          assert.ok(log.segmentCounts.detailsInMemory <= 2, "the newest segment's detail, and at most the one just read");
        }
        assert.equal(log.pendingAfter(1000, "q.x"), (N - 1000) / 5);
        assert.equal((await log.next(1000, "q.y"))?.seq, 1004);
        const scanned = await log.scan(2990, { filter: "p.*", maxMessages: 100 });
        assert.deepEqual(scanned.map((m) => m.seq), [2990, 2991, 2992, 2995, 2996, 2997, 3000]);
        // Deletes in segments whose detail is not in memory: read, changed, kept until written.
        for (const seq of [5, 1001, 1002, 2500]) assert.equal(await log.delete(seq), true);
        assert.equal(await log.purge({ upTo: 400 }), 398, "a purge over whole segments empties them from their summaries");
        assert.equal(log.state().firstSeq, 400);
        await log.settle();
        assert.ok(log.segmentCounts.detailsInMemory <= 2, "written back, then let go");
        assert.ok(log.io.detailsLoaded > 5);
      } finally {
        await log.close();
      }
      const again = await FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
      try {
        assert.ok(again.io.detailsLoaded <= 1, "the deletes are in the index files: nothing to replay");
        for (const seq of [5, 399, 1001, 1002, 2500]) assert.equal(await again.get(seq), null);
        for (const seq of [400, 1000, 1003, 2501]) assert.equal((await again.get(seq))?.data.toString(), body(seq).toString());
        assert.equal(again.state().messages, N - 399 - 3);
      } finally {
        await again.close();
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("after a crash, a tombstone newer than a segment's index file is applied to it on open", async () => {
  const dir = tempDir();
  const copy = tempDir();
  try {
    await filled(dir);
    const log = await FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
    try {
      assert.equal(await log.delete(10), true);
      // kill -9 now: the tombstone is durable, the index file of seq 10's segment still says it lives.
      cpSync(dir, copy, { recursive: true });
    } finally {
      await log.close();
    }
    const crashed = await FileLog.open({ dir: copy, maxSegmentBytes: 8 * 1024 });
    try {
      assert.equal(await crashed.get(10), null, "the delete stays");
      assert.equal(crashed.state().messages, N - 1);
      assert.ok(crashed.io.detailsLoaded >= 2, "the segment's detail was read to apply the tombstone");
      assert.equal(await appendAsync(crashed, { subject: "p.a", data: Buffer.from("next") }), N + 1);
    } finally {
      await crashed.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(copy, { recursive: true, force: true });
  }
});
