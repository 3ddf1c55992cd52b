/**
 * The file log under bad conditions: flipped bits and truncation in segments
 * and index files, injected write and sync failures, and readers racing
 * appends that are not yet durable.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readdirSync, statSync, openSync, writeSync, closeSync, truncateSync, unlinkSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog, type FaultInjector } from "../src/store/file-log.js";
import { appendAsync, runOf, StorageError, type StoredMessage } from "../src/store/log.js";
import { readCopy } from "../src/streams/copy-batch.js";
import { expectedRecord, mismatch } from "./helpers/store-model.js";
import { nodeFs, type StoreFile, type StoreFs } from "../src/util/fs.js";
import { flipByte } from "./helpers/damage.js";

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-faults-"));
}

/** `f` with its reads made by `read`. */
function withReads(f: StoreFile, read: StoreFile["read"]): StoreFile {
  return {
    read,
    write: (b, o, l, p) => f.write(b, o, l, p),
    writev: (bs, p) => f.writev(bs, p),
    truncate: (n) => f.truncate(n),
    datasync: () => f.datasync(),
    size: () => f.size(),
    close: () => f.close(),
  };
}

function files(dir: string, suffix: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith(suffix))
    .sort();
}


/** The segment the corruption tests damage: the second, sealed, with a sealed one after it. */
function secondSegment(dir: string): { name: string; victim: string; firstOfVictim: number; firstOfNext: number } {
  const names = files(dir, ".seg");
  return { name: names[1], victim: join(dir, names[1]), firstOfVictim: Number(names[1].slice(0, 20)), firstOfNext: Number(names[2].slice(0, 20)) };
}

/** A log of 200 records in segments of about 4 KiB, closed. */
async function written(dir: string, n = 200): Promise<void> {
  const log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
  for (let seq = 1; seq <= n; seq++) await appendAsync(log, expectedRecord(seq));
  await log.close();
}

describe("index files", () => {
  test("a clean reopen reads the indexes instead of scanning; a missing or damaged one is rebuilt", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const segs = files(dir, ".seg");
      assert.deepEqual(files(dir, ".idx"), segs.map((s) => s + ".idx"), "every segment has an index after close");

      let log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      assert.equal(log.io.segmentsScanned, 0);
      for (let seq = 1; seq <= 200; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
      await log.close();

      // One missing, one with a flipped bit, one truncated, one belonging to an older version of its segment.
      unlinkSync(join(dir, segs[0] + ".idx"));
      flipByte(join(dir, segs[1] + ".idx"), 70);
      truncateSync(join(dir, segs[2] + ".idx"), 30);
      const warnings: string[] = [];
      log = await FileLog.open({ dir, maxSegmentBytes: 4096, onWarning: (w) => warnings.push(w) });
      try {
        assert.equal(log.io.segmentsScanned, 3);
        assert.equal(log.io.indexesRebuilt, 2, "the damaged ones are reported as rebuilt");
        assert.match(warnings.join("\n"), /checksum mismatch; rebuilding/);
        const st = log.state();
        assert.deepEqual([st.firstSeq, st.lastSeq, st.messages], [1, 200, 200]);
        assert.deepEqual(st.corrupt, []);
        for (let seq = 1; seq <= 200; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        assert.equal(log.subjectCount("crash.1"), 40);
        await log.settle();
      } finally {
        await log.close();
      }
      // Rebuilt and written again: the next open scans nothing.
      log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      assert.equal(log.io.segmentsScanned, 0);
      await log.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an index that does not match its segment is not trusted", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const seg = files(dir, ".seg")[1];
      // The segment lost its last batch after the index was written (restored from an older copy, say).
      const log0 = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      const first = Number(seg.slice(0, 20));
      const st0 = log0.state();
      await log0.close();
      const size = statSync(join(dir, seg)).size;
      truncateSync(join(dir, seg), size - 10);
      const warnings: string[] = [];
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096, onWarning: (w) => warnings.push(w) });
      try {
        assert.match(warnings.join("\n"), /covers more than the segment holds/);
        assert.equal(log.state().lastSeq, st0.lastSeq);
        assert.equal(log.state().corrupt.length, 1, "the cut batch in a sealed segment is reported");
        assert.equal(mismatch(first, await log.get(first)), null, "what the segment still holds is served");
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("corruption in sealed segments", () => {
  test("a flipped bit found on read is reported and skipped; the rest is served", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { name, victim, firstOfVictim } = secondSegment(dir);
      flipByte(victim, 40);
      const warnings: string[] = [];
      const log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      try {
        // The index is intact, so the open does not read the segment: the checksum catches it on read.
        assert.deepEqual(log.state().corrupt, []);
        assert.equal(await log.get(firstOfVictim), null, "the corrupt record is not served");
        const st = log.state();
        assert.equal(st.corrupt.length, 1);
        assert.equal(st.corrupt[0].segment, name);
        assert.match(st.corrupt[0].reason, /checksum/);
        assert.ok(warnings.length >= 1);
        for (let seq = 1; seq < firstOfVictim; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        for (let seq = firstOfVictim + 1; seq <= 200; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        // A scan steps over it too.
        const scanned = await log.scan(firstOfVictim - 1, { maxMessages: 3 });
        assert.deepEqual(
          scanned.map((m) => m.seq),
          [firstOfVictim - 1, firstOfVictim + 1, firstOfVictim + 2],
        );
        assert.equal(await appendAsync(log, expectedRecord(201)), 201);
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("compaction meets a damaged batch: reports it, quarantines it, records the loss and rewrites the segment without it", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { name, victim, firstOfVictim, firstOfNext } = secondSegment(dir);
      flipByte(victim, 40);
      const sizeBefore = statSync(victim).size;
      let log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      try {
        // Kill most of the victim so compaction picks it.
        for (let seq = firstOfVictim + 1; seq < firstOfNext - 1; seq++) assert.equal(await log.delete(seq), true);
        await log.settle();
        const st = log.state();
        assert.equal(st.corrupt.length, 1);
        assert.match(st.corrupt[0].reason, /compaction/);
        assert.deepEqual(st.lost, [{ from: firstOfVictim, to: firstOfVictim, bytes: st.lost[0]?.bytes }]);
        assert.ok(st.lost[0].bytes > 0);
        assert.deepEqual(readdirSync(join(dir, "quarantine")), [`${name}@0.bad`], "the damaged bytes are kept aside");
        assert.ok(statSync(victim).size < sizeBefore / 2, "the segment was rewritten with its one live record");
        assert.equal(mismatch(firstOfNext - 1, await log.get(firstOfNext - 1)), null);
        assert.equal(await log.get(firstOfVictim), null);
      } finally {
        await log.close();
      }
      // The rewritten segment is clean; the loss stays on record.
      log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      try {
        assert.deepEqual(log.state().corrupt, []);
        assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]]);
        assert.equal(await appendAsync(log, expectedRecord(201)), 201);
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("compaction of a segment whose detail cannot be read (a failing disk) rewrites nothing: the log fails, and every record is there once it reopens", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { name, firstOfVictim, firstOfNext } = secondSegment(dir);
      // Most of the second segment deleted, with compaction off: it stays as it is, its index file current, its detail on disk only.
      let log = await FileLog.open({ dir, maxSegmentBytes: 4096, compactBelow: 0 });
      for (let seq = firstOfVictim + 1; seq < firstOfNext - 1; seq++) assert.equal(await log.delete(seq), true);
      await log.close();
      // Reopened with compaction on: the detail's synchronous read fails, then so does the segment's.
      const failing: StoreFs = {
        ...nodeFs,
        readSync: (path, position, length) => {
          if ((path.endsWith(`${name}.idx`) && position > 0) || path.endsWith(name)) throw new Error("EIO: injected read failure");
          return nodeFs.readSync(path, position, length);
        },
      };
      log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs: failing });
      try {
        await log.settle();
        assert.ok(log.state().error !== null, "the failed read fails the log");
        assert.ok(existsSync(join(dir, name)), "the segment was not removed on an empty stand-in for its detail");
      } finally {
        await log.close().catch(() => undefined);
      }
      log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      try {
        assert.equal(mismatch(firstOfVictim, await log.get(firstOfVictim)), null);
        assert.equal(mismatch(firstOfNext - 1, await log.get(firstOfNext - 1)), null);
        assert.equal(log.state().messages, 200 - (firstOfNext - 2 - firstOfVictim));
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a read that fails (an I/O error) is not remembered, and a copy's read stops there instead of skipping the batch", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { name, firstOfVictim, firstOfNext } = secondSegment(dir);
      let failing = false;
      const fs: StoreFs = {
        ...nodeFs,
        open: async (path, mode) => {
          const f = await nodeFs.open(path, mode);
          if (!path.endsWith(name)) return f;
          return withReads(f, (b, o, l, p) => (failing ? Promise.reject(new Error("EIO: injected read failure")) : f.read(b, o, l, p)));
        },
      };
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs });
      try {
        failing = true;
        // A reader that may skip: what follows the unreadable segment (nothing recorded as damage: the error may pass).
        const skipped = await log.scan(firstOfVictim, { maxMessages: 5 });
        assert.equal((skipped[0] as { seq: number }).seq, firstOfNext);
        // A copy's read: what came before the failure, else the error.
        const before = await log.scanStored(firstOfVictim - 3, { maxMessages: 50, stopAtReadError: true });
        assert.deepEqual(before.map((m) => (m as { seq: number }).seq), [firstOfVictim - 3, firstOfVictim - 2, firstOfVictim - 1]);
        await assert.rejects(readCopy(log, firstOfVictim, 50, 1 << 20), /reading the batch/);
        // The disk recovers: the next read tries it again.
        failing = false;
        const copied = await readCopy(log, firstOfVictim, 1, 1 << 20);
        assert.equal(mismatch(firstOfVictim, copied[0] as StoredMessage), null);
        assert.deepEqual(log.state().corrupt, []);
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("found on open (no index): quarantined, and the scan resumes at the next good batch", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { victim, firstOfVictim, firstOfNext } = secondSegment(dir);
      assert.ok(firstOfNext - firstOfVictim >= 3, "the victim holds several batches");
      for (const n of files(dir, ".idx")) unlinkSync(join(dir, n));
      flipByte(victim, 40); // inside its first batch (one record per batch: sequential appends)
      const warnings: string[] = [];
      let log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      try {
        const st = log.state();
        assert.equal(st.corrupt.length, 1);
        assert.equal(st.corrupt[0].position, 0);
        assert.match(st.corrupt[0].reason, /checksum/);
        assert.equal(st.lastSeq, 200);
        assert.equal(st.messages, 199);
        assert.equal(await log.get(firstOfVictim), null);
        // The rest of the same segment is still served: the scan found the next batch.
        for (let seq = firstOfVictim + 1; seq <= 200; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        assert.equal((await log.next(firstOfVictim - 1))?.seq, firstOfVictim + 1);
        assert.deepEqual(st.lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]]);
        await log.settle();
      } finally {
        await log.close();
      }
      // The damage was quarantined and the segment rewritten without it: the next open finds it clean, and the loss on record.
      assert.equal(existsSync(victim + ".idx"), true);
      assert.equal(readdirSync(join(dir, "quarantine")).length, 1);
      log = await FileLog.open({ dir });
      assert.deepEqual(log.state().corrupt, []);
      assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]]);
      await log.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a torn tail is cut on recovery, and appends continue after it", async () => {
    const dir = tempDir();
    try {
      let log = await FileLog.open({ dir });
      for (let seq = 1; seq <= 50; seq++) await appendAsync(log, expectedRecord(seq));
      await log.close();
      const seg = join(dir, files(dir, ".seg")[0]);
      const size = statSync(seg).size;
      // Half a batch at the end, as a crash between write and sync can leave.
      const fd = openSync(seg, "a");
      const tail = Buffer.alloc(100, 0xab);
      tail.writeUInt32LE(500, 0);
      writeSync(fd, tail);
      closeSync(fd);
      const warnings: string[] = [];
      log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      assert.equal(log.state().lastSeq, 50);
      assert.equal(statSync(seg).size, size);
      assert.match(warnings.join("\n"), /torn tail/);
      for (let seq = 1; seq <= 50; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
      assert.equal(await appendAsync(log, expectedRecord(51)), 51);
      await log.close();
      // A clean close leaves a marker after the last data batch: cutting into it loses nothing.
      truncateSync(seg, statSync(seg).size - 3);
      log = await FileLog.open({ dir });
      assert.equal(log.state().lastSeq, 51);
      assert.deepEqual(log.state().lost, []);
      assert.equal(mismatch(51, await log.get(51)), null);
      await log.close();
      // Cutting into 51 itself, which the index written at the close says was stored: reported lost, and never handed out again.
      const at = statSync(seg).size;
      truncateSync(seg, at - 40);
      log = await FileLog.open({ dir });
      try {
        assert.equal(log.state().lastSeq, 51);
        assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[51, 51]]);
        assert.equal(await log.get(51), null);
        assert.equal(await appendAsync(log, expectedRecord(52)), 52);
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("injected write and sync failures", () => {
  test("a loss found on read whose lost.json write fails stays on record: compaction does not take the damage out first, and the write is tried again", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { victim, firstOfVictim, firstOfNext } = secondSegment(dir);
      flipByte(victim, 40);
      let failing = true;
      let attempts = 0;
      const fs: StoreFs = {
        ...nodeFs,
        open(path, mode) {
          if (path.endsWith("lost.json.tmp") && failing) {
            attempts++;
            return Promise.reject(Object.assign(new Error("EIO: injected"), { code: "EIO" }));
          }
          return nodeFs.open(path, mode);
        },
      };
      const warnings: string[] = [];
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs, onWarning: (w) => warnings.push(w) });
      try {
        // The index is intact: the read finds the damage, records the loss, and its save fails.
        assert.equal(await log.get(firstOfVictim), null);
        assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]]);
        // Most of the segment dies: compaction would rewrite it without the damaged batch.
        for (let seq = firstOfVictim + 1; seq < firstOfNext - 1; seq++) assert.equal(await log.delete(seq), true);
        await log.settle();
        assert.ok(attempts >= 1, "lost.json was tried");
        assert.ok(warnings.some((w) => w.includes("lost.json")), JSON.stringify(warnings));
        failing = false;
      } finally {
        await log.close();
      }
      const again = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      try {
        assert.deepEqual(again.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]], "the loss is still reported after a restart");
      } finally {
        await again.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("damage compaction finds while lost.json cannot be written stays in the file until the loss is on record", async () => {
    const dir = tempDir();
    try {
      await written(dir);
      const { victim, firstOfVictim, firstOfNext } = secondSegment(dir);
      flipByte(victim, 40);
      const fs: StoreFs = {
        ...nodeFs,
        open(path, mode) {
          if (path.endsWith("lost.json.tmp")) return Promise.reject(Object.assign(new Error("EIO: injected"), { code: "EIO" }));
          return nodeFs.open(path, mode);
        },
      };
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs });
      try {
        // Most of the segment dies: compaction reads it, meets the damaged batch, and cannot record the loss.
        for (let seq = firstOfVictim + 1; seq < firstOfNext - 1; seq++) assert.equal(await log.delete(seq), true);
        await log.settle();
        assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]]);
      } finally {
        await log.close(); // lost.json still cannot be written: as a crash, the next open has only the files
      }
      const again = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      try {
        // Either the open reports it, or the damage is still there to be found.
        assert.equal(await again.get(firstOfVictim), null);
        assert.deepEqual(again.state().lost.map((l) => [l.from, l.to]), [[firstOfVictim, firstOfVictim]], "the loss is not papered over");
      } finally {
        await again.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a failed write or sync is sticky: its appends fail, nothing is retried on the file, and only a reopen from disk takes writes again", async () => {
    const dir = tempDir();
    let failing: "none" | "write" | "partial" | "sync" = "none";
    let segmentSyncs = 0;
    let probes = 0;
    const enospc = (): Error => Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    const faults: FaultInjector = {
      write: (file) => {
        if (file === "probe.tmp") probes++;
        if (failing === "write") return { error: enospc() };
        if (failing === "partial") return { error: enospc(), partial: 20 };
        return null;
      },
      sync: (file) => {
        if (file.endsWith(".seg")) segmentSyncs++;
        return failing === "sync" ? Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }) : null;
      },
    };
    const warnings: string[] = [];
    let log = await FileLog.open({ dir, faults, reopenDelayMs: 5, onWarning: (w) => warnings.push(w) });
    try {
      for (let seq = 1; seq <= 10; seq++) await appendAsync(log, expectedRecord(seq));
      const seg = join(dir, files(dir, ".seg")[0]);
      for (const mode of ["write", "partial", "sync"] as const) {
        const last = log.state().lastSeq;
        failing = mode;
        // From here every write fails: whatever it left must be cut off again.
        const sizeAtFailure = statSync(seg).size;
        const cause = mode === "sync" ? /EIO/ : /ENOSPC/;
        const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => appendAsync(log, expectedRecord(11 + i))));
        for (const r of results) {
          assert.equal(r.status, "rejected", `${mode}: append acknowledged while the disk was failing`);
          assert.ok((r as PromiseRejectedResult).reason instanceof StorageError);
          assert.match((r as PromiseRejectedResult).reason.message, cause);
        }
        assert.match(log.state().error ?? "", cause, `${mode}: the failure shows in the log's state`);
        assert.match(warnings.join("\n"), /storage failed/);
        // Sticky: refused at once, and no sync is tried again on the file while the disk is still failing.
        const syncsAtFailure = segmentSyncs;
        const probesAtFailure = probes;
        const reopensAtFailure = log.io.reopens;
        const run = new Promise<number>((resolve, reject) => log.appendMany(runOf([expectedRecord(11), expectedRecord(12)]), (err, seq) => (err ? reject(err) : resolve(seq))));
        await assert.rejects(run, StorageError);
        await assert.rejects(log.delete(3), StorageError);
        await assert.rejects(log.purge({ upTo: 3 }), StorageError);
        await until(() => probes >= probesAtFailure + 2, "reopens have probed the disk twice");
        assert.equal(log.io.reopens, reopensAtFailure, `${mode}: a reopen while the disk fails does not take writes`);
        assert.equal(segmentSyncs, syncsAtFailure, `${mode}: no sync was tried again on the segment`);
        const st = log.state();
        assert.deepEqual([st.lastSeq, st.messages], [last, 10], `${mode}: nothing of the failed batch is visible`);
        assert.equal(statSync(seg).size, sizeAtFailure, `${mode}: the failed batch was cut off the file`);
        assert.equal(await log.get(last + 1), null);
        assert.equal(mismatch(3, await log.get(3)), null, "the failed delete did not happen");
        // The cause goes away: the next reopen reads the files again, and appends continue with the next sequence.
        failing = "none";
        const reopens = log.io.reopens;
        await until(() => log.io.reopens > reopens, "the log is reopened");
        assert.equal(log.state().error, null);
        assert.equal(await appendAsync(log, { subject: "x", data: Buffer.alloc(54) }), last + 1, "no sequence skipped");
        assert.equal(await log.delete(last + 1), true);
        await log.settle();
      }
      log = await reopen(log, dir);
      assert.deepEqual(log.state().corrupt, []);
      assert.deepEqual(log.state().lost, []);
      assert.equal(log.state().lastSeq, 13);
      for (let seq = 1; seq <= 10; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
      for (let seq = 11; seq <= 13; seq++) assert.equal(await log.get(seq), null);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("pipelined rounds", () => {
  test("a failed sync also fails the round written behind it; neither is visible, and after the reopen appends go on from the same sequence", async () => {
    const dir = tempDir();
    let phase: "ok" | "fail" | "done" = "ok";
    let behind: Promise<number> | null = null;
    let log: FileLog;
    const faults: FaultInjector = {
      write: () => {
        // While the first failing round is being written, queue a second one: it is written before that round's sync is known.
        if (phase === "fail" && behind === null) behind = appendAsync(log, expectedRecord(12));
        return null;
      },
      sync: (file) => {
        // Segment syncs only: the reopen's probe of the disk is not the round under test.
        if (phase !== "fail" || !file.endsWith(".seg")) return null;
        failedSyncs++;
        return Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
      },
    };
    let failedSyncs = 0;
    log = await FileLog.open({ dir, faults, reopenDelayMs: 5 });
    try {
      for (let seq = 1; seq <= 10; seq++) await appendAsync(log, expectedRecord(seq));
      const seg = join(dir, files(dir, ".seg")[0]);
      const sizeBefore = statSync(seg).size;
      phase = "fail";
      const first = appendAsync(log, expectedRecord(11));
      await assert.rejects(first, /EIO/);
      assert.ok(behind !== null, "a second round was queued behind the first");
      await assert.rejects(behind, /EIO/, "the round written after a failed sync fails too");
      assert.equal(failedSyncs, 1, "the second round was written while the first one's sync was out, and failed with it");
      phase = "done";
      assert.equal(statSync(seg).size, sizeBefore, "both rounds were cut off the file");
      assert.deepEqual([log.state().lastSeq, log.state().messages], [10, 10]);
      await until(() => log.io.reopens === 1, "the failed log is reopened");
      assert.equal(await appendAsync(log, expectedRecord(11)), 11);
      await log.close();
      log = await FileLog.open({ dir });
      assert.equal(log.state().lastSeq, 11);
      for (let seq = 1; seq <= 11; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("readers during appends", () => {
  test("no reader sees a record before its batch is durable, nor a torn one", async () => {
    const dir = tempDir();
    const checks: Promise<void>[] = [];
    let log: FileLog | null = null;
    const faults: FaultInjector = {
      // Just before each fdatasync the batch is written but not durable: every read path must still say no.
      sync: () => {
        const l = log!;
        const st = l.state();
        const next = st.lastSeq + 1;
        checks.push(
          (async () => {
            assert.equal(await l.get(next), null, `get(${next}) before its sync`);
            assert.equal(await l.next(st.lastSeq), null, `next(${st.lastSeq}) before the sync of ${next}`);
            for (const m of await l.scan(Math.max(1, next - 5), { maxMessages: 100 })) {
              assert.ok(m.seq <= l.state().lastSeq, `scan returned ${m.seq} past lastSeq`);
              assert.equal(mismatch(m.seq, m), null);
            }
          })(),
        );
        return null;
      },
    };
    log = await FileLog.open({ dir, faults, maxSegmentBytes: 32 * 1024 });
    try {
      let next = 1;
      // Several concurrent appenders, and a reader that keeps scanning from the start.
      const appender = async (): Promise<void> => {
        for (let i = 0; i < 100; i++) {
          const seq = next++;
          assert.equal(await appendAsync(log!, expectedRecord(seq)), seq);
        }
      };
      let scanning = true;
      const reader = (async () => {
        let rounds = 0;
        while (scanning) {
          const last = log!.state().lastSeq;
          const got = await log!.scan(1, { maxMessages: 1000 });
          // Dense from 1 and intact, at least up to what was durable when the scan began.
          got.forEach((m, i) => {
            assert.equal(m.seq, i + 1);
            assert.equal(mismatch(m.seq, m), null);
          });
          assert.ok(got.length >= Math.min(last, 1000));
          rounds++;
          // A scan of nothing completes without I/O: yield, or the appenders' writes never get a turn.
          await new Promise((r) => setImmediate(r));
        }
        return rounds;
      })();
      await Promise.all([appender(), appender(), appender(), appender()]);
      scanning = false;
      assert.ok((await reader) > 0);
      await Promise.all(checks);
      assert.ok(checks.length > 0);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the kept tail", () => {
  test("a reader at the end gets the newest batches as they landed, without a read of the file; older ones, and what follows a truncation, come from the file", async () => {
    const dir = tempDir();
    let reads = 0;
    const fs: StoreFs = {
      ...nodeFs,
      open: async (path, mode) => {
        const f = await nodeFs.open(path, mode);
        return withReads(f, (b, o, l, p) => (reads++, f.read(b, o, l, p)));
      },
    };
    const log = await FileLog.open({ dir, fs });
    try {
      // One batch each.
      for (let seq = 1; seq <= 3; seq++) assert.equal(await appendAsync(log, expectedRecord(seq)), seq);
      const before = reads;
      assert.equal(mismatch(3, await log.get(3)), null);
      assert.equal(mismatch(2, await log.get(2)), null);
      assert.deepEqual((await log.scan(2)).map((m) => mismatch(m.seq, m) ?? m.seq), [2, 3]);
      assert.deepEqual((await readCopy(log, 2, 100, 1 << 20)).map((i) => ("seq" in i ? i.seq : -1)), [2, 3]);
      assert.equal(reads, before, "the two newest batches read from memory");
      assert.ok(log.io.tailReads >= 4);
      // The first batch is no longer kept.
      assert.equal(mismatch(1, await log.get(1)), null);
      assert.ok(reads > before, "the oldest read from the file");
      // A follower's truncation, then other bytes where the cut ones were: never the kept ones.
      await log.truncateFrom(2);
      assert.equal(await appendAsync(log, { subject: "after.cut", data: Buffer.from("other bytes at the same place") }), 2);
      assert.equal((await log.get(2))?.subject, "after.cut");
      assert.deepEqual((await log.scan(1)).map((m) => m.subject), [expectedRecord(1).subject, "after.cut"]);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function reopen(log: FileLog, dir: string): Promise<FileLog> {
  await log.close();
  return FileLog.open({ dir });
}

/** Waits for `cond`, checking every few milliseconds, for at most 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
