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
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readdirSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog } from "../src/store/file-log.js";
import { appendAsync, runOf } from "../src/store/log.js";
import { expectedRecord } from "./helpers/store-model.js";

function segs(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
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
});
