/**
 * Tester's finding: a segment file that disappears (operator error, a lost
 * file after fsck, a bad restore) is neither reported nor remembered. Its
 * sequences come back as ordinary deletes (a middle segment), as a moved log
 * start (the first) or are handed out again (the last), with no warning and
 * nothing in `state().lost`, although the index file beside it (or the
 * names of the segments around it) say which sequences were there.
 * ARCHITECTURE.md: "Damage is reported, never papered over", "no sequence is
 * ever handed out twice", "The last sequence is the highest of: ... what an
 * index claimed".
 *
 * And one gone with its index: a middle one read as deletes. Each index now
 * names the segment that followed its own (followedBy), which tells a gone
 * file from the layouts nagare leaves itself (compaction removing emptied
 * files, an empty newest file a copy passes, truncation), at a clean close
 * and at each point a crash may interrupt them.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, readdirSync, truncateSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog } from "../src/store/file-log.js";
import { appendAsync, runOf, type MessageLog } from "../src/store/log.js";
import { expectedRecord } from "./helpers/store-model.js";
import { nodeFs, type StoreFs } from "../src/util/fs.js";

function segs(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
}

function copyAt(log: MessageLog, seq: number): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    log.appendCopy(seq, Date.now(), runOf([{ subject: "x", data: Buffer.from("x") }]), (err, got) => (err ? reject(err) : resolve(got))),
  );
}

/** Opens `dir`, hands the log to `check` with the warnings of its open, and closes it. */
async function reopened(dir: string, check: (log: FileLog, warnings: string[]) => Promise<void> | void): Promise<void> {
  const warnings: string[] = [];
  const log = await FileLog.open({ dir, maxSegmentBytes: 4096, onWarning: (w) => warnings.push(w) });
  try {
    await check(log, warnings);
  } finally {
    await log.close();
  }
}

/** A copy of `dir` as it is now, with the log still open in it: what a kill -9 leaves on disk. */
function crashCopy(dir: string): string {
  const to = mkdtempSync(join(tmpdir(), "nagare-missing-crash-"));
  cpSync(dir, to, { recursive: true });
  return to;
}

/** The real disk, with a crashCopy of `dir` taken right after each segment file it removes, into `copies`. */
function copyingAfterRemovals(dir: string, copies: string[]): StoreFs {
  return {
    ...nodeFs,
    async remove(path: string): Promise<void> {
      await nodeFs.remove(path);
      if (path.endsWith(".seg")) copies.push(crashCopy(dir));
    },
  };
}

async function written(dir: string, n = 200): Promise<void> {
  const log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
  for (let seq = 1; seq <= n; seq++) await appendAsync(log, expectedRecord(seq));
  await log.close();
}

describe("a segment file that is gone", () => {
  for (const which of ["first", "middle", "last"] as const) {
    test(`the ${which} segment removed (its index left): reported lost, never reused`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
      try {
        await written(dir);
        // The newest file may be an empty one named after the next sequence: leave it out.
        const names = segs(dir).filter((n) => Number(n.slice(0, 20)) <= 200);
        assert.ok(names.length >= 3);
        const i = which === "first" ? 0 : which === "last" ? names.length - 1 : 1;
        const from = Number(names[i].slice(0, 20));
        const to = i + 1 < names.length ? Number(names[i + 1].slice(0, 20)) - 1 : 200;
        if (which === "last") for (const n of segs(dir).filter((n) => Number(n.slice(0, 20)) > 200)) unlinkSync(join(dir, n));
        unlinkSync(join(dir, names[i]));
        const warnings: string[] = [];
        const log = await FileLog.open({ dir, maxSegmentBytes: 4096, onWarning: (w) => warnings.push(w) });
        try {
          const st = log.state();
          assert.ok(warnings.some((w) => w.includes(names[i])), `a warning names ${names[i]}; got ${JSON.stringify(warnings)}`);
          assert.deepEqual(st.lost.map((l) => [l.from, l.to]), [[from, to]], "its sequences are reported lost");
          assert.equal(st.lastSeq, 200, "the last sequence does not go back");
          assert.equal(await appendAsync(log, expectedRecord(201)), 201, "the next append is not given a sequence already used");
        } finally {
          await log.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
  for (const which of ["first", "middle", "last"] as const) {
    for (const cut of ["emptied", "cut after its first batch"] as const) {
      test(`the ${which} segment ${cut} (its index left): what its index claimed past the cut is reported lost`, async () => {
        // An outside test emptied or cut a sealed segment at a batch boundary: every batch left was whole, the index
        // was rebuilt from the file, and the acknowledged sequences after the cut were gone with nothing reported.
        const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
        try {
          await written(dir);
          const names = segs(dir).filter((n) => Number(n.slice(0, 20)) <= 200);
          assert.ok(names.length >= 3);
          const i = which === "first" ? 0 : which === "last" ? names.length - 1 : 1;
          const path = join(dir, names[i]);
          const first = Number(names[i].slice(0, 20));
          const to = i + 1 < names.length ? Number(names[i + 1].slice(0, 20)) - 1 : 200;
          // A batch's length field counts the bytes after its crc; its count is at 28 (one record per append here).
          const keep = cut === "emptied" ? 0 : readFileSync(path).readUInt32LE(0) + 8;
          truncateSync(path, keep);
          await reopened(dir, async (log, warnings) => {
            assert.ok(warnings.some((w) => w.includes(names[i]) && w.includes("reported lost")), JSON.stringify(warnings));
            assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[keep === 0 ? first : first + 1, to]]);
            assert.equal(log.state().lastSeq, 200);
            assert.equal(await appendAsync(log, expectedRecord(201)), 201);
          });
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  }
  test("the only segment removed: the next append still follows what its index held", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    try {
      const log = await FileLog.open({ dir });
      for (let seq = 1; seq <= 50; seq++) await appendAsync(log, expectedRecord(seq));
      await log.close();
      for (const n of segs(dir)) unlinkSync(join(dir, n));
      const warnings: string[] = [];
      const again = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      try {
        assert.ok(warnings.some((w) => w.includes("is gone")), JSON.stringify(warnings));
        assert.deepEqual(again.state().lost.map((l) => [l.from, l.to]), [[1, 50]]);
        assert.equal(await appendAsync(again, expectedRecord(51)), 51, "sequence 1 is not handed out again");
      } finally {
        await again.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("an empty segment that a copy far ahead replaces leaves no index behind (no loss reported)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    try {
      await (await FileLog.open({ dir })).close();
      const log = await FileLog.open({ dir });
      await new Promise<number>((resolve, reject) =>
        log.appendCopy(100_000, Date.now(), runOf([{ subject: "x", data: Buffer.from("x") }]), (err, seq) => (err ? reject(err) : resolve(seq))),
      );
      await log.close();
      const warnings: string[] = [];
      const again = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      try {
        assert.deepEqual(warnings, []);
        assert.deepEqual(again.state().lost, []);
        assert.equal(again.state().lastSeq, 100_000);
      } finally {
        await again.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  for (const gone of [1, 2] as const) {
    test(`${gone} middle segment(s) removed with their index: the names around them tell, and the loss is reported`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
      try {
        await written(dir);
        const names = segs(dir).filter((n) => Number(n.slice(0, 20)) <= 200);
        assert.ok(names.length >= 5);
        const from = Number(names[2].slice(0, 20));
        const to = Number(names[2 + gone].slice(0, 20)) - 1;
        for (let k = 2; k < 2 + gone; k++) {
          unlinkSync(join(dir, names[k]));
          unlinkSync(join(dir, names[k] + ".idx"));
        }
        await reopened(dir, async (log, warnings) => {
          assert.ok(warnings.some((w) => w.includes(names[2]) && w.includes("is gone")), `a warning names ${names[2]}; got ${JSON.stringify(warnings)}`);
          assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[from, to]], "its sequences are reported lost, not read as deleted");
          assert.equal(log.state().lastSeq, 200);
          assert.equal(await appendAsync(log, expectedRecord(201)), 201);
        });
        // Reported once and kept: lost.json holds it, and the index before the gap now names the file after it.
        await reopened(dir, (log, warnings) => {
          assert.deepEqual(log.state().lost.map((l) => [l.from, l.to]), [[from, to]]);
          assert.ok(!warnings.some((w) => w.includes("is gone")), JSON.stringify(warnings));
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
  test("the newest data segment removed with its index and the file after it: reported, its name never handed out again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    try {
      await written(dir);
      const names = segs(dir).filter((n) => Number(n.slice(0, 20)) <= 200);
      const lastName = names[names.length - 1];
      for (const n of readdirSync(dir).filter((n) => n >= lastName && /^\d{20}\.seg/.test(n))) unlinkSync(join(dir, n));
      await reopened(dir, async (log, warnings) => {
        assert.ok(warnings.some((w) => w.includes(lastName) && w.includes("cannot be told")), JSON.stringify(warnings));
        assert.ok(log.state().lastSeq >= Number(lastName.slice(0, 20)) - 1);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("segments that compaction empties and removes from the middle are not taken for lost, after a close or a crash", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    const crashed: string[] = [];
    try {
      await written(dir);
      // Every moment a segment file has just gone is a moment a crash may leave.
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096, fs: copyingAfterRemovals(dir, crashed) });
      const before = segs(dir);
      // Whole segments and the ends of the ones around them: files go, and the ones left end before the next name.
      for (let seq = 30; seq <= 120; seq++) assert.equal(await log.delete(seq), true);
      await log.settle();
      crashed.push(crashCopy(dir));
      // More: the file before a removed one loses its tail too, and another goes after the first was removed.
      for (let seq = 121; seq <= 140; seq++) assert.equal(await log.delete(seq), true);
      await log.settle();
      crashed.push(crashCopy(dir));
      assert.ok(segs(dir).length < before.length - 4, `compaction removed emptied segments: ${before.length} -> ${segs(dir).length}`);
      assert.ok(crashed.length > 4, "a copy after each removal");
      await log.close();
      for (const d of [dir, ...crashed]) {
        await reopened(d, (again, warnings) => {
          assert.deepEqual(again.state().lost, [], d);
          assert.deepEqual(warnings.filter((w) => w.includes("is gone") || w.includes("lost")), [], d);
          assert.equal(again.state().lastSeq, 200);
        });
      }
    } finally {
      for (const d of [dir, ...crashed]) rmSync(d, { recursive: true, force: true });
    }
  });
  test("an empty newest segment after others (a crash between a roll and its write) that a copy far on leaves behind is not taken for lost", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    const crashed: string[] = [];
    try {
      await written(dir);
      // The newest file holds only the close's marker, and the index before it names it: as a crash leaves it, empty.
      const newest = segs(dir)[segs(dir).length - 1];
      assert.ok(Number(newest.slice(0, 20)) > 200);
      unlinkSync(join(dir, newest + ".idx"));
      truncateSync(join(dir, newest), 0);
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      assert.equal(await copyAt(log, 100_000), 100_000);
      crashed.push(crashCopy(dir));
      await log.settle();
      crashed.push(crashCopy(dir));
      await log.close();
      for (const d of [dir, ...crashed]) {
        await reopened(d, async (again, warnings) => {
          assert.deepEqual(again.state().lost, [], d);
          assert.deepEqual(warnings.filter((w) => w.includes("is gone") || w.includes("lost")), [], d);
          assert.equal(again.state().lastSeq, 100_000);
          await again.settle();
        });
      }
      // Compaction removed the empty file (after the index before it was made to name the next one): still nothing lost.
      assert.ok(!segs(dir).includes(newest), `${newest} is removed`);
      await reopened(dir, (again, warnings) => {
        assert.deepEqual(again.state().lost, []);
        assert.deepEqual(warnings.filter((w) => w.includes("is gone") || w.includes("lost")), []);
      });
    } finally {
      for (const d of [dir, ...crashed]) rmSync(d, { recursive: true, force: true });
    }
  });
  test("a truncation that removes segments, and appends after it, are not taken for lost", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-missing-"));
    try {
      await written(dir);
      const log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      assert.equal(await log.truncateFrom(100), 100);
      for (let seq = 100; seq <= 150; seq++) assert.equal(await appendAsync(log, expectedRecord(seq)), seq);
      await log.settle();
      await log.close();
      await reopened(dir, (again, warnings) => {
        assert.deepEqual(again.state().lost, []);
        assert.deepEqual(warnings.filter((w) => w.includes("is gone") || w.includes("lost")), []);
        assert.equal(again.state().lastSeq, 150);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
