/**
 * MessageLog.appendCopy: what a move uses to copy a stream partition. A copy
 * of a log with leading and interior gaps, foreign batches and old times is
 * the same log: the same sequences, gaps, times and bytes (a foreign batch
 * comes back whole), in both logs, and the file log's copy survives
 * reopening, a rebuilt index and a torn tail.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { FileLog } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, isForeign, runOf, type ForeignBatch, type MessageLog, type RecordRun, type StoredItem } from "../src/store/log.js";
import { TOY_FORMAT, toy } from "./helpers/toy-foreign.js";
import { nodeFs, type StoreFs } from "../src/util/fs.js";


function copy(log: MessageLog, firstSeq: number, time: number, what: RecordRun | ForeignBatch): Promise<number> {
  return new Promise((resolve, reject) => log.appendCopy(firstSeq, time, what, (err, seq) => (err ? reject(err) : resolve(seq))));
}

function appendBatch(log: MessageLog, values: string[]): Promise<number> {
  return new Promise((resolve, reject) =>
    log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: values.length, bytes: Buffer.from(JSON.stringify(values)) }, (err, seq) => (err ? reject(err) : resolve(seq))),
  );
}

/** Everything a reader can tell of a log: its state, its gaps and each stored item with its time and bytes. */
async function picture(log: MessageLog): Promise<unknown> {
  const st = log.state();
  const items = await log.scanStored(1, { maxMessages: 10_000 });
  return {
    first: st.firstSeq,
    last: st.lastSeq,
    messages: st.messages,
    bytes: st.bytes,
    deleted: log.deletedSequences(1000),
    items: items.map((m: StoredItem) =>
      isForeign(m)
        ? `batch ${m.firstSeq}+${m.count} @${m.time} ${m.bytes.toString()}`
        : `${m.seq} @${m.time} ${m.subject} k=${m.key?.toString() ?? "-"} h=${m.headers?.toString() ?? "-"} ${m.data.toString()}`,
    ),
  };
}

/** A source log: purged at the front, deleted inside, a foreign batch, and messages whose times differ. */
async function source(log: MessageLog): Promise<void> {
  const put = (i: number): Promise<number> =>
    appendAsync(log, { subject: `s.${i % 3}`, data: Buffer.from(`m${i}`), key: i % 2 === 0 ? Buffer.from(`k${i}`) : null, headers: i % 5 === 0 ? Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${i}\r\n\r\n`) : null });
  for (let i = 1; i <= 10; i++) await put(i);
  await appendBatch(log, ["r1", "r2", "r3"]); // 11..13
  await new Promise((r) => setTimeout(r, 3)); // a later time for what follows (times are per batch)
  for (let i = 14; i <= 30; i++) await put(i);
  await log.purge({ upTo: 4 });
  for (const seq of [6, 7, 15, 20, 21, 22, 30]) assert.equal(await log.delete(seq), true);
}

/** Copies `from` into `to` as a move does: scanStored in small windows, one appendCopy per run of one time. */
async function copyLog(from: MessageLog, to: MessageLog): Promise<void> {
  let next = 1;
  for (;;) {
    const items = await from.scanStored(next, { maxMessages: 4 });
    if (items.length === 0) break;
    let i = 0;
    while (i < items.length) {
      const it = items[i];
      if (isForeign(it)) {
        await copy(to, it.firstSeq, it.time, { format: it.format, subject: it.subject, count: it.count, bytes: Buffer.from(it.bytes) });
        next = it.firstSeq + it.count;
        i++;
        continue;
      }
      // Consecutive sequences with one time: one copied batch.
      let j = i + 1;
      while (j < items.length && !isForeign(items[j]) && (items[j] as typeof it).seq === (items[j - 1] as typeof it).seq + 1 && (items[j] as typeof it).time === it.time) j++;
      const run = items.slice(i, j) as (typeof it)[];
      await copy(to, it.seq, it.time, runOf(run));
      next = run[run.length - 1].seq + 1;
      i = j;
    }
  }
  // The source's last sequences may be gone: an empty copy moves the log on past them.
  await copy(to, from.state().lastSeq + 1, 0, runOf([]));
}

async function exercise(src: MessageLog, dst: MessageLog): Promise<void> {
  await source(src);
  await copyLog(src, dst);
  assert.deepEqual(await picture(dst), await picture(src));
  // The copy refuses what would not follow it: a sequence not after its last, a time before its newest.
  const last = dst.state().lastSeq;
  const newest = (await dst.get(29))!.time;
  await assert.rejects(copy(dst, last, newest, runOf([{ subject: "x", data: Buffer.from("x") }])), /not after the log's last sequence/);
  await assert.rejects(copy(dst, last + 5, newest - 1, runOf([{ subject: "x", data: Buffer.from("x") }])), /before the log's newest time/);
  // Appends go on after the copy, at its next sequence, never back in time.
  const seq = await appendAsync(dst, { subject: "after", data: Buffer.from("a") });
  assert.equal(seq, last + 1);
  assert.ok((await dst.get(seq))!.time >= newest);
}

test("memory log: appendCopy reproduces sequences, gaps, times and foreign batches", async () => {
  const src = new MemoryLog({ foreign: toy });
  const dst = new MemoryLog({ foreign: toy });
  await exercise(src, dst);
  await src.close();
  await dst.close();
});

test("file log: appendCopy reproduces the source, across reopening and a rebuilt index", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-copy-"));
  const src = await FileLog.open({ dir: join(dir, "src"), foreign: toy });
  let dst = await FileLog.open({ dir: join(dir, "dst"), foreign: toy, maxSegmentBytes: 600 });
  try {
    await exercise(src, dst);
    const want = await picture(dst);
    assert.ok(readdirSync(join(dir, "dst")).filter((n) => n.endsWith(".seg")).length > 1, "the copy spans several segments");
    await dst.close();
    dst = await FileLog.open({ dir: join(dir, "dst"), foreign: toy, maxSegmentBytes: 600 });
    assert.deepEqual(await picture(dst), want);
    await dst.close();
    // Without index files every segment is read batch by batch: the gap batches verify and keep their places.
    for (const n of readdirSync(join(dir, "dst"))) if (n.endsWith(".idx")) rmSync(join(dir, "dst", n));
    dst = await FileLog.open({ dir: join(dir, "dst"), foreign: toy, maxSegmentBytes: 600 });
    assert.deepEqual(await picture(dst), want);
    assert.deepEqual(dst.state().corrupt, []);
  } finally {
    await src.close();
    await dst.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a copy far ahead queued behind a copy that does not fit, with a write in flight, still starts a file of its own", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-copy-far-queued-"));
  const log = await FileLog.open({ dir, sync: "always" });
  try {
    const t0 = Date.now() - 60_000;
    const msg = (v: string): RecordRun => runOf([{ subject: "a", data: Buffer.from(v) }]);
    // Queued together: the first is written (in flight until synced) while the second, at a sequence already taken, is
    // dropped and the third, 50 million on, comes up behind it.
    const first = copy(log, 1, t0, msg("1"));
    const misfit = copy(log, 1, t0, msg("again")).then(() => "stored", (err: Error) => err.message);
    const far = copy(log, 50_000_000, t0, msg("far"));
    const before = process.memoryUsage().arrayBuffers;
    assert.equal(await first, 1);
    assert.match(await misfit, /not after the log's last sequence/);
    assert.equal(await far, 50_000_000);
    // Written into the first file, its detail would have held a slot for each sequence skipped: some 400 MB.
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.ok(grown < 64 * 1024 * 1024, `${grown} bytes more held`);
    assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".seg")).sort(), ["00000000000000000001.seg", "00000000000050000000.seg"]);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a copy far ahead starts a file of its own, and recovery keeps the gap", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-copy-far-"));
  let log = await FileLog.open({ dir });
  try {
    const t0 = Date.now() - 60_000;
    assert.equal(await copy(log, 5_000_000, t0, runOf([{ subject: "a", data: Buffer.from("1") }])), 5_000_000);
    assert.equal(await copy(log, 5_000_002, t0 + 1, runOf([{ subject: "a", data: Buffer.from("2") }, { subject: "b", data: Buffer.from("3") }])), 5_000_002);
    assert.equal(await copy(log, 90_000_000, t0 + 2, runOf([{ subject: "c", data: Buffer.from("4") }])), 90_000_000);
    const want = { first: 5_000_000, last: 90_000_000, messages: 4 };
    const check = async (): Promise<void> => {
      const st = log.state();
      assert.deepEqual({ first: st.firstSeq, last: st.lastSeq, messages: st.messages }, want);
      assert.deepEqual(
        (await log.scan(1)).map((m) => [m.seq, m.time, m.data.toString()]),
        [
          [5_000_000, t0, "1"],
          [5_000_002, t0 + 1, "2"],
          [5_000_003, t0 + 1, "3"],
          [90_000_000, t0 + 2, "4"],
        ],
      );
      assert.equal((await log.firstAtOrAfter(t0 + 1))?.seq, 5_000_002);
      assert.equal(log.has(5_000_001), false);
    };
    await check();
    // Neither a file per gap nor the empty first file is left: one file from 5000000, one from 90000000.
    assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".seg")).sort(), ["00000000000005000000.seg", "00000000000090000000.seg"]);
    await log.close();
    log = await FileLog.open({ dir });
    await check();
    assert.equal(await appendAsync(log, { subject: "d", data: Buffer.from("5") }), 90_000_001);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a torn copy at the tail is cut on open, and the gap batch before it is kept", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-copy-torn-"));
  let log = await FileLog.open({ dir });
  try {
    const t0 = Date.now() - 60_000;
    await copy(log, 10, t0, runOf([{ subject: "a", data: Buffer.from("one") }]));
    await copy(log, 20, t0 + 5, runOf([{ subject: "a", data: Buffer.from("two") }]));
    await copy(log, 30, t0 + 9, runOf([{ subject: "a", data: Buffer.from("three".repeat(20)) }]));
    await log.close();
    // The crash: the last batch half written (and no index file, which a crash leaves none of for the newest segment).
    const seg = readdirSync(dir).find((n) => n.endsWith(".seg"))!;
    for (const n of readdirSync(dir)) if (n.endsWith(".idx")) rmSync(join(dir, n));
    // Nor an end mark naming it: a mark is written after its round lands, and a torn round never did.
    rmSync(join(dir, "end.mark"));
    const size = statSync(join(dir, seg)).size;
    // The clean close wrote a marker batch (32 bytes) after the last data batch: cut into that data batch.
    truncateSync(join(dir, seg), size - 32 - 40);
    const warnings: string[] = [];
    log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
    assert.ok(warnings.some((w) => /torn tail/.test(w)), warnings.join("\n"));
    assert.deepEqual(
      (await log.scan(1)).map((m) => [m.seq, m.time, m.data.toString()]),
      [
        [10, t0, "one"],
        [20, t0 + 5, "two"],
      ],
    );
    assert.deepEqual(log.state().lost, []);
    // The torn copy was never acknowledged: copying it again succeeds, at its sequence.
    assert.equal(await copy(log, 30, t0 + 9, runOf([{ subject: "a", data: Buffer.from("three") }])), 30);
    await log.close();
    log = await FileLog.open({ dir });
    assert.deepEqual((await log.scan(1)).map((m) => m.seq), [10, 20, 30]);
    assert.equal(log.deletedSequences(100).length, 30 - 10 + 1 - 3);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a copy queued while a round of tombstones is written is not refused for its time (only data batches carry one)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-copy-"));
  // Segment writes wait while `held` is set: the round under way stays in flight.
  let held: Array<() => void> | null = null;
  const hold = async (): Promise<void> => {
    if (held !== null) await new Promise<void>((resolve) => held!.push(resolve));
  };
  const fs: StoreFs = {
    ...nodeFs,
    open: async (path, mode) => {
      const f = await nodeFs.open(path, mode);
      return { ...f, write: async (...a) => (await hold(), f.write(...a)), writev: async (...a) => (await hold(), f.writev(...a)), read: f.read.bind(f), truncate: f.truncate.bind(f), datasync: f.datasync.bind(f), size: f.size.bind(f), close: f.close.bind(f) };
    },
  };
  const log = await FileLog.open({ dir, limits: {}, fs });
  try {
    // A follower's copy of a leader's records, at the leader's times (older than this log's clock).
    const time = Date.now() - 1000;
    const run = (data: string): RecordRun => runOf([{ subject: "s", headers: null, key: null, data: Buffer.from(data) }]);
    await copy(log, 1, time, run("one"));
    await copy(log, 2, time, run("two"));
    // A removal the leader shipped: its round of tombstones is being written...
    held = [];
    const deleted = log.delete(1);
    while (held.length === 0) await new Promise((r) => setImmediate(r));
    // ...when the next copy, at the leader's next record's time, is queued behind it.
    const copied = copy(log, 3, time, run("three"));
    const waiting = held.splice(0);
    held = null;
    for (const release of waiting) release();
    assert.equal(await deleted, true);
    assert.equal(await copied, 3);
    assert.deepEqual(
      (await log.scan(1, { maxMessages: 10 })).map((m) => [m.seq, m.time, m.data.toString()]),
      [
        [2, time, "two"],
        [3, time, "three"],
      ],
    );
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a log at the last exact sequence (2^53-1) refuses appends past it rather than give two messages one sequence, in both logs and after reopening", async () => {
  // Reached only by a log of an earlier version (it moved a stream on to any first_seq or purge seq): this one refuses that.
  const dir = mkdtempSync(join(tmpdir(), "nagare-seq-end-"));
  const LAST = Number.MAX_SAFE_INTEGER;
  const put = (log: MessageLog, v: string): Promise<number | string> => appendAsync(log, { subject: "a", data: Buffer.from(v) }).then((seq) => seq, (err: Error) => `refused: ${err.message}`);
  const logs: MessageLog[] = [new MemoryLog(), await FileLog.open({ dir })];
  try {
    for (const log of logs) {
      await copy(log, LAST - 1, 0, runOf([]));
      const got = [await put(log, "a"), await put(log, "b")];
      assert.equal(got[0], LAST - 1);
      assert.equal(got[1], LAST);
      assert.match(String(await put(log, "c")), /^refused: .*2\^53/);
      const many = await new Promise<string>((resolve) => log.appendMany(runOf([{ subject: "a", data: Buffer.from("d") }]), (err) => resolve(String(err?.message))));
      assert.match(many, /2\^53/);
      assert.deepEqual([log.state().lastSeq, log.state().messages], [LAST, 2]);
    }
    await logs[1].close();
    logs[1] = await FileLog.open({ dir });
    assert.match(String(await put(logs[1], "e")), /^refused: /);
    assert.deepEqual([logs[1].state().lastSeq, logs[1].state().messages], [LAST, 2]);
  } finally {
    for (const log of logs) await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
