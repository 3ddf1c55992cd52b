/**
 * The newest segment has no index file until it is sealed or the log closes
 * cleanly: after a kill -9, a newest segment cut at a batch boundary or
 * removed read as a shorter log, and the acknowledged sequences past the cut
 * were dropped without a word and handed out again. The end mark (end.mark,
 * what landed) lets recovery report them lost and never reuse them; a
 * truncation, which cuts on purpose, is not reported.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog } from "../src/store/file-log.js";
import { decodeEndMark, EndMarkWriter } from "../src/store/end-mark.js";
import { nodeFs } from "../src/util/fs.js";
import { appendAsync } from "../src/store/log.js";
import { expectedRecord } from "./helpers/store-model.js";
import { waitUntil } from "./helpers/clients.js";

function segs(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
}

/** The last sequence end.mark in `dir` says landed, or -1 (none, or not readable). */
function markedLast(dir: string): number {
  const path = join(dir, "end.mark");
  if (!existsSync(path)) return -1;
  const m = decodeEndMark(readFileSync(path));
  return typeof m === "string" ? -1 : m.lastSeq;
}

/** Whether this process holds a descriptor on `path`. */
function descriptorOn(path: string): boolean {
  return readdirSync("/proc/self/fd").some((fd) => {
    try {
      return readlinkSync(join("/proc/self/fd", fd)) === path;
    } catch {
      return false;
    }
  });
}

/** A copy of `dir` as it is now, with the log still open in it: what a kill -9 leaves on disk. */
function crashCopy(dir: string): string {
  const to = mkdtempSync(join(tmpdir(), "nagare-end-mark-crash-"));
  cpSync(dir, to, { recursive: true });
  return to;
}

/** Cuts segment file `path` right after the data batch holding sequence `seq` (a batch boundary: what is left reads whole). */
function cutAfter(path: string, seq: number): void {
  const bytes = readFileSync(path);
  // Batch headers: u32 length (after the crc), u32 crc, version, flags, reserved, u64 first sequence, u64 time, u32 count.
  let at = 0;
  while (at < bytes.length) {
    const tombstones = (bytes[at + 9] & 2) !== 0;
    const last = bytes.readUInt32LE(at + 12) + bytes.readUInt32LE(at + 28) - 1;
    at += bytes.readUInt32LE(at) + 8;
    if (!tombstones && last >= seq) break;
  }
  assert.ok(at < bytes.length, `batches follow the one holding ${seq}`);
  truncateSync(path, at);
}

/** A log in a fresh directory with 1..n appended, one batch each, still open, and its end marked at n. */
async function openWith(n: number, maxSegmentBytes = 64 * 1024 * 1024): Promise<{ dir: string; log: FileLog }> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-end-mark-"));
  const log = await FileLog.open({ dir, maxSegmentBytes });
  for (let seq = 1; seq <= n; seq++) await appendAsync(log, expectedRecord(seq));
  await waitUntil(() => markedLast(dir) === n, `the end mark to reach ${n}`);
  return { dir, log };
}

async function opened(dir: string): Promise<{ log: FileLog; warnings: string[] }> {
  const warnings: string[] = [];
  const log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
  return { log, warnings };
}

describe("the newest segment's end after a crash", () => {
  test("cut at a batch boundary: what landed past the cut is reported lost and never handed out again", async () => {
    const { dir, log } = await openWith(200);
    const crashed = crashCopy(dir);
    let second = "";
    try {
      assert.equal(segs(crashed).length, 1);
      assert.ok(!readdirSync(crashed).some((n) => n.endsWith(".idx")), "a crash leaves the newest segment without an index");
      cutAfter(join(crashed, segs(crashed)[0]), 100);
      const { log: after, warnings } = await opened(crashed);
      try {
        assert.deepEqual(after.state().lost.map((l) => [l.from, l.to]), [[101, 200]], "the cut sequences are reported lost");
        assert.ok(warnings.some((w) => /end\.mark says sequences up to 200/.test(w) || /101\.\.200/.test(w)), JSON.stringify(warnings));
        assert.equal(after.state().lastSeq, 200);
        assert.equal(after.state().messages, 100);
        assert.equal(await appendAsync(after, expectedRecord(201)), 201, "no acknowledged sequence is handed out again");
        // Crashed again at once, before a marker names 201 after the cut: the append must say itself that it skips 101..200.
        await waitUntil(() => markedLast(crashed) === 201, "the end mark to reach 201");
        second = crashCopy(crashed);
      } finally {
        await after.close();
      }
      // The loss stays reported, and the append after it is kept, not taken for damage.
      const { log: again } = await opened(second);
      try {
        assert.deepEqual(again.state().lost.map((l) => [l.from, l.to]), [[101, 200]]);
        assert.equal(again.state().messages, 101);
        assert.equal((await again.get(201))?.subject, expectedRecord(201).subject);
      } finally {
        await again.close();
      }
    } finally {
      await log.close();
      for (const d of [dir, crashed, second]) if (d !== "") rmSync(d, { recursive: true, force: true });
    }
  });

  test("removed, with the segments before it left: its sequences are reported lost and never handed out again", async () => {
    const { dir, log } = await openWith(200, 4096);
    const crashed = crashCopy(dir);
    try {
      const names = segs(crashed);
      assert.ok(names.length >= 3);
      const newest = names[names.length - 1];
      const from = Number(newest.slice(0, 20));
      unlinkSync(join(crashed, newest));
      const { log: after } = await opened(crashed);
      try {
        const lost = after.state().lost;
        assert.ok(lost.length >= 1 && lost[0].from <= from && lost[lost.length - 1].to === 200, `the newest file's sequences up to 200 are reported lost: ${JSON.stringify(lost)}`);
        assert.equal(after.state().lastSeq, 200);
        assert.equal(await appendAsync(after, expectedRecord(201)), 201);
      } finally {
        await after.close();
      }
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
      rmSync(crashed, { recursive: true, force: true });
    }
  });

  test("a truncation cuts on purpose: nothing is reported lost, after a clean close or a crash", async () => {
    const { dir, log } = await openWith(200);
    try {
      assert.equal(await log.truncateFrom(101), 101);
      const crashed = crashCopy(dir);
      await log.close();
      for (const d of [dir, crashed]) {
        const { log: after, warnings } = await opened(d);
        try {
          assert.deepEqual(after.state().lost, [], `${d === dir ? "clean close" : "crash"}: ${JSON.stringify(warnings)}`);
          assert.equal(after.state().lastSeq, 100);
          assert.equal(await appendAsync(after, expectedRecord(101)), 101, "the cut sequences are the log's to give again");
        } finally {
          await after.close();
        }
      }
      rmSync(crashed, { recursive: true, force: true });
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a log at rest holds no descriptor for its end mark", async () => {
    // The store's descriptors are a pooled budget: ten thousand streams at rest held one each for their marks.
    const { dir, log } = await openWith(3);
    try {
      await waitUntil(() => !descriptorOn(join(dir, "end.mark")), "the mark's descriptor to be let go");
      await appendAsync(log, expectedRecord(4));
      await waitUntil(() => markedLast(dir) === 4, "the mark written again after it was let go");
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a mark removed by hand is made again once its write has failed, not given up for the log's life", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-end-mark-gone-"));
    const path = join(dir, "end.mark");
    const warnings: string[] = [];
    const writer = new EndMarkWriter(nodeFs, path, false, (w) => warnings.push(w), 200);
    try {
      writer.note(1, 100, 10);
      await waitUntil(() => markedLast(dir) === 10, "the mark written");
      await waitUntil(() => !descriptorOn(path), "the mark's descriptor let go at rest");
      unlinkSync(path);
      writer.note(1, 200, 20);
      await waitUntil(() => warnings.some((w) => w.includes("is not marked for")), "the failed write said");
      // Tried again once the retry delay has passed: made anew under its name.
      await waitUntil(() => {
        writer.note(1, 300, 30);
        return markedLast(dir) === 30;
      }, "the mark made again");
    } finally {
      await writer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an unreadable end mark is said and does not stop the open; the next round that lands writes it again", async () => {
    const { dir, log } = await openWith(20);
    await log.close();
    try {
      writeFileSync(join(dir, "end.mark"), Buffer.alloc(36, 0x5a));
      const { log: after, warnings } = await opened(dir);
      try {
        assert.ok(warnings.some((w) => /end\.mark is unreadable \(not an end mark\)/.test(w)), JSON.stringify(warnings));
        assert.equal(after.state().lastSeq, 20);
        await appendAsync(after, expectedRecord(21));
        await waitUntil(() => markedLast(dir) === 21, "the end mark to be written again");
      } finally {
        await after.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
