/**
 * Foreign batches (MessageLog.appendBatch): a client's batch kept whole at
 * consecutive sequences, read as messages through the log's decoder, handed
 * back whole by scanStored while every record of it is stored, and kept
 * right through deletes, reopening and compaction, in both logs.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { crc32c } from "../src/util/crc32c.js";
import { FileLog, type FaultInjector } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, isForeign, StorageError, type MessageLog, type StoredItem } from "../src/store/log.js";
import { TOY_FORMAT, toy } from "./helpers/toy-foreign.js";


function appendBatch(log: MessageLog, subject: string, values: string[]): Promise<number> {
  return new Promise((resolve, reject) =>
    log.appendBatch({ format: TOY_FORMAT, subject, count: values.length, bytes: Buffer.from(JSON.stringify(values)) }, (err, seq) => (err ? reject(err) : resolve(seq))),
  );
}

function describeItems(items: StoredItem[]): string[] {
  return items.map((m) => (isForeign(m) ? `batch ${m.firstSeq}+${m.count} ${m.bytes.toString()}` : `${m.seq} ${m.subject} ${m.data.toString()}`));
}

async function exercise(log: MessageLog, reopen: (() => Promise<MessageLog>) | null): Promise<MessageLog> {
  assert.equal(await appendAsync(log, { subject: "n.a", data: Buffer.from("a") }), 1);
  assert.equal(await appendBatch(log, "k.t", ["r1", "r2", "r3"]), 2);
  assert.equal(await appendAsync(log, { subject: "n.e", data: Buffer.from("e") }), 5);
  const check = async (): Promise<void> => {
    assert.equal((await log.get(3))?.data.toString(), "r2");
    assert.equal((await log.get(3))?.subject, "k.t");
    assert.deepEqual(describeItems(await log.scan(1)), ["1 n.a a", "2 k.t r1", "3 k.t r2", "4 k.t r3", "5 n.e e"]);
    assert.deepEqual(describeItems(await log.scan(1, { filter: "k.*" })), ["2 k.t r1", "3 k.t r2", "4 k.t r3"]);
    assert.deepEqual(describeItems(await log.scanStored(1)), ["1 n.a a", 'batch 2+3 ["r1","r2","r3"]', "5 n.e e"]);
    // From inside the batch: the whole batch, as Kafka fetches return it.
    assert.deepEqual(describeItems(await log.scanStored(3)), ['batch 2+3 ["r1","r2","r3"]', "5 n.e e"]);
    assert.equal(log.subjectCount("k.t"), 3);
    assert.equal(log.state().messages, 5);
  };
  await check();
  if (reopen !== null) {
    log = await reopen();
    await check();
  }
  // One record deleted: the rest come back one by one.
  assert.equal(await log.delete(3), true);
  assert.equal(await log.get(3), null);
  assert.deepEqual(describeItems(await log.scanStored(1)), ["1 n.a a", "2 k.t r1", "4 k.t r3", "5 n.e e"]);
  if (reopen !== null) {
    log = await reopen();
    assert.deepEqual(describeItems(await log.scanStored(1)), ["1 n.a a", "2 k.t r1", "4 k.t r3", "5 n.e e"]);
  }
  return log;
}

test("memory log: foreign batches", async () => {
  const log = new MemoryLog({ foreign: toy });
  await exercise(log, null);
  await log.close();
});

test("file log: foreign batches across reopening", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-"));
  let log: MessageLog = await FileLog.open({ dir, foreign: toy });
  try {
    log = await exercise(log, async () => {
      await log.close();
      return FileLog.open({ dir, foreign: toy });
    });
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: compaction keeps a whole foreign batch as it is and turns a partly deleted one into records", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-compact-"));
  let log = await FileLog.open({ dir, foreign: toy, maxSegmentBytes: 2048 });
  try {
    const big = (tag: string): string[] => Array.from({ length: 4 }, (_, i) => `${tag}${i}-${"x".repeat(60)}`);
    const kept: Array<[number, string]> = [];
    for (let b = 0; b < 40; b++) {
      const values = big(`b${b}.`);
      const first = await appendBatch(log, "k.t", values);
      values.forEach((v, i) => kept.push([first + i, v]));
    }
    // Most of each sealed segment goes, so compaction rewrites them: batch 1 loses one record, the others whole or all.
    const doomed = new Set<number>();
    for (const [seq] of kept) if (seq > 8 && seq <= 140 && (seq - 1) % 4 !== 0) doomed.add(seq);
    doomed.add(6);
    for (const seq of doomed) assert.equal(await log.delete(seq), true);
    await log.settle();
    assert.ok(log.io.compactions > 0, "compaction ran");
    const want = kept.filter(([seq]) => !doomed.has(seq));
    const read = async (): Promise<void> => {
      const got = (await log.scan(1, { maxMessages: 1000 })).map((m) => [m.seq, m.data.toString()]);
      assert.deepEqual(got, want);
      const stored = await log.scanStored(1, { maxMessages: 1000 });
      // Batch 0 (seqs 1-4) is whole; batch 1 (5-8) lost seq 6; the last batches are untouched.
      assert.ok(isForeign(stored[0]) && stored[0].firstSeq === 1 && stored[0].count === 4);
      assert.ok(!isForeign(stored[1]) && stored[1].seq === 5);
      const last = stored[stored.length - 1];
      assert.ok(isForeign(last) && last.firstSeq === 157 && last.count === 4);
    };
    await read();
    await log.close();
    log = await FileLog.open({ dir, foreign: toy, maxSegmentBytes: 2048 });
    await read();
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a log without a decoder refuses to read a foreign batch as messages, and says why", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-none-"));
  let log = await FileLog.open({ dir, foreign: toy });
  try {
    await appendBatch(log, "k.t", ["r1"]);
    await log.close();
    log = await FileLog.open({ dir });
    await assert.rejects(log.get(1), /foreign format 7, and no decoder/);
    assert.equal(describeItems(await log.scanStored(1)).length, 1);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a foreign batch's checksum derived from the CRC its appender gave holds on reopening, and a wrong one reads as damage", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-"));
  const append = (log: MessageLog, values: string[], wrong: boolean): Promise<number> => {
    const bytes = Buffer.from(JSON.stringify(values));
    // The tail from byte 1: what a Kafka batch's CRC covers is a tail of the batch too.
    const tailCrc = { from: 1, crc: (crc32c(bytes, 1) ^ (wrong ? 1 : 0)) >>> 0 };
    return new Promise((resolve, reject) => log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: values.length, bytes, tailCrc }, (err, seq) => (err ? reject(err) : resolve(seq))));
  };
  const warnings: string[] = [];
  const onWarning = (t: string): void => void warnings.push(t);
  let log: MessageLog = await FileLog.open({ dir, foreign: toy, onWarning });
  try {
    assert.equal(await append(log, ["r1", "r2"], false), 1);
    assert.equal(await append(log, ["r3"], false), 3);
    await log.close();
    log = await FileLog.open({ dir, foreign: toy, onWarning });
    assert.deepEqual(describeItems(await log.scanStored(1)), ['batch 1+2 ["r1","r2"]', 'batch 3+1 ["r3"]']);
    assert.deepEqual(warnings, []);
    // A wrong CRC from the appender is stored as it says: the batch fails its check on reading, it is never taken for other bytes.
    assert.equal(await append(log, ["r4"], true), 4);
    await log.close();
    log = await FileLog.open({ dir, foreign: toy, onWarning });
    assert.deepEqual(describeItems(await log.scanStored(1)), ['batch 1+2 ["r1","r2"]', 'batch 3+1 ["r3"]']);
    assert.ok(warnings.some((w) => /checksum|damage|torn|truncat/i.test(w)), warnings.join("\n"));
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The one segment file of a log directory. */
function onlySegment(dir: string): string {
  const segs = readdirSync(dir).filter((n) => n.endsWith(".seg"));
  assert.equal(segs.length, 1);
  return join(dir, segs[0]);
}

test("file log: a foreign batch is stored in the documented layout, the appender's bytes as they came, so data directories of earlier versions and this one read alike", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-layout-"));
  const log = await FileLog.open({ dir, foreign: toy });
  try {
    const before = Date.now();
    const bytes = Buffer.from(JSON.stringify(["r1", "r2", "r3"]));
    const tailCrc = { from: 1, crc: crc32c(bytes, 1) };
    const first = await new Promise<number>((resolve, reject) =>
      log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: 3, bytes, tailCrc }, (err, seq) => (err ? reject(err) : resolve(seq))),
    );
    assert.equal(first, 1);
    // batch: u32 length | u32 crc32c | u8 version 1 | u8 flags (4: foreign) | u16 0 | u64 firstSeq | u64 time | u32 count,
    // then u8 format | u8 0 | u16 subject length | subject | the appender's bytes (format.ts).
    const file = readFileSync(onlySegment(dir));
    const length = 32 + 4 + 3 + bytes.length;
    assert.equal(file.readUInt32LE(0), length - 8);
    assert.equal(file.readUInt32LE(4), crc32c(file, 8, length), "the checksum covers everything after it, head and bytes alike");
    assert.deepEqual([file[8], file[9], file.readUInt16LE(10)], [1, 4, 0]);
    assert.equal(file.readUInt32LE(12) + file.readUInt32LE(16) * 2 ** 32, 1);
    const time = file.readUInt32LE(20) + file.readUInt32LE(24) * 2 ** 32;
    assert.ok(time >= before && time <= Date.now(), `time ${time}`);
    assert.equal(file.readUInt32LE(28), 3);
    assert.deepEqual([file[32], file[33], file.readUInt16LE(34)], [TOY_FORMAT, 0, 3]);
    assert.equal(file.toString("latin1", 36, 39), "k.t");
    assert.ok(file.subarray(39, length).equals(bytes));
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a foreign batch whose write stops inside its head or inside the appender's bytes leaves nothing behind; appends go on once the log is reopened", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-torn-"));
  let partial = 0;
  let probes = 0;
  const faults: FaultInjector = {
    write: (file) => {
      if (file === "probe.tmp") probes++;
      return partial > 0 ? { error: Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" }), partial } : null;
    },
  };
  const append = (log: MessageLog, values: string[]): Promise<number> => {
    const bytes = Buffer.from(JSON.stringify(values));
    return new Promise((resolve, reject) =>
      log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: values.length, bytes, tailCrc: { from: 1, crc: crc32c(bytes, 1) } }, (err, seq) => (err ? reject(err) : resolve(seq))),
    );
  };
  let log = await FileLog.open({ dir, foreign: toy, faults, reopenDelayMs: 5 });
  try {
    assert.equal(await append(log, ["a1", "a2"]), 1);
    const seg = onlySegment(dir);
    let next = 3;
    // 20 bytes: inside the batch header; 45: past the head (39 bytes here), inside the appender's bytes.
    for (const cut of [20, 45]) {
      await log.settle();
      const size = statSync(seg).size;
      partial = cut;
      await assert.rejects(append(log, ["torn", "batch"]), StorageError);
      assert.equal(statSync(seg).size, size, `cut at ${cut}: the torn batch was cut off the file`);
      assert.equal(log.state().lastSeq, next - 1);
      partial = 0;
      const probed = probes;
      await until(() => probes > probed && log.state().error === null, "the log is reopened");
      assert.equal(await append(log, [`b${cut}`]), next, "no sequence skipped");
      next++;
    }
    await log.close();
    log = await FileLog.open({ dir, foreign: toy });
    assert.deepEqual(describeItems(await log.scanStored(1)), ['batch 1+2 ["a1","a2"]', 'batch 3+1 ["b20"]', 'batch 4+1 ["b45"]']);
    assert.deepEqual(log.state().corrupt, []);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Waits for `cond`, checking every few milliseconds, for at most 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test("file log: a foreign batch is refused whole when a record's share passes the record limit, or when discard-new limits would be passed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-limits-"));
  const log = await FileLog.open({ dir, foreign: toy, maxRecordBytes: 100 });
  try {
    const append = (values: string[]): Promise<number> =>
      new Promise((resolve, reject) => {
        const bytes = Buffer.from(JSON.stringify(values));
        log.appendBatch({ format: TOY_FORMAT, subject: "k.t", count: values.length, bytes }, (err, seq) => (err ? reject(err) : resolve(seq)));
      });
    // Two records sharing about 250 bytes: 125 each, over the limit of 100.
    await assert.rejects(append(["a".repeat(120), "b".repeat(120)]), /exceeds the limit of 100/);
    assert.equal(await append(["a".repeat(30), "b".repeat(30)]), 1);
    log.setLimits({ maxMsgs: 3, discard: "new" });
    await assert.rejects(append(["c", "d"]), /maximum messages exceeded/);
    assert.equal(await append(["c"]), 3);
    assert.equal(log.state().messages, 3);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A log with foreign batches whose records carry their own times, older
 * and newer than when they were stored: firstStampedAtOrAfter must find
 * where the first record stamped at or after a time may be, by those times
 * (what Kafka's time index gives ListOffsets), wherever the index came from.
 */
async function stampedLog(log: MessageLog, pad: number): Promise<{ check: (log: MessageLog, padsGone?: boolean) => void; pads: number[] }> {
  const t = Date.now();
  const seqs: Record<string, number> = {};
  seqs.a = await appendBatch(log, "k.t", ["a@1000", "b@3000", "c@2000"]);
  const pads: number[] = [];
  for (let i = 0; i < 3; i++) pads.push(await appendAsync(log, { subject: "n.pad", data: Buffer.alloc(pad, 0x61) }));
  seqs.d = await appendBatch(log, "k.t", ["d@500"]);
  seqs.e = await appendAsync(log, { subject: "n.e", data: Buffer.from("e") });
  seqs.f = await appendBatch(log, "k.t", [`f@${t + 3_600_000}`]);
  seqs.g = await appendAsync(log, { subject: "n.g", data: Buffer.from("g") });
  const check = (log: MessageLog, padsGone = false): void => {
    const next = log.state().lastSeq + 1;
    assert.deepEqual(
      [
        log.firstStampedAtOrAfter(2500, 1),
        // Batch a was stored now, but its records say 3000 at most.
        log.firstStampedAtOrAfter(3500, 1),
        log.firstStampedAtOrAfter(2500, seqs.a + 1),
        // Past batch a, the padding and d are older than 2500 only by their own times: d says 500.
        log.firstStampedAtOrAfter(2500, seqs.d),
        log.firstStampedAtOrAfter(t + 1_800_000, 1),
        log.firstStampedAtOrAfter(t + 7_200_000, 1),
        log.firstStampedAtOrAfter(t + 1_800_000, seqs.f + 1),
      ],
      [seqs.a, padsGone ? seqs.e : pads[0], seqs.a + 1, seqs.e, seqs.f, next, next],
    );
    // Stored times alone would have found nothing for a time the clock has not reached.
    assert.equal(log.state().lastSeq, seqs.g);
    // The newest record time of all is f's, stored before g.
    assert.equal(log.newestStamped()?.seq, seqs.f);
    // f passed over: one of the log's own records (stored now), not a or d (their records say 3000 and 500).
    assert.ok([...pads, seqs.e, seqs.g].includes(log.newestStamped(new Set([seqs.f]))!.seq));
  };
  return { check, pads };
}

/** Once f (the newest record time) is deleted, the newest is the first of the log's own records with the latest stored time. */
async function newestWithoutF(log: MessageLog): Promise<void> {
  const f = log.newestStamped()!.seq;
  assert.equal(await log.delete(f), true);
  const own = (await log.scan(1, { maxMessages: 100 })).filter((m) => !m.subject.startsWith("k."));
  const latest = Math.max(...own.map((m) => m.time));
  assert.deepEqual(log.newestStamped(), { seq: own.find((m) => m.time === latest)!.seq, time: latest });
}

test("memory log: where a record stamped at or after a time may be, by the times foreign records carry", async () => {
  const log = new MemoryLog({ foreign: toy });
  const { check } = await stampedLog(log, 10);
  check(log);
  await newestWithoutF(log);
  assert.equal(new MemoryLog().newestStamped(), null, "none in an empty log");
  await log.close();
});

test("file log: where a record stamped at or after a time may be, by the times foreign records carry, from its index files, a rebuilt index, a reread segment and after compaction", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-stamps-"));
  const warnings: string[] = [];
  const open = (): Promise<FileLog> => FileLog.open({ dir, foreign: toy, maxSegmentBytes: 1024, onWarning: (w) => warnings.push(w) });
  let log = await open();
  try {
    const { check, pads } = await stampedLog(log, 400);
    check(log);
    await log.settle();
    const indexes = (): string[] => readdirSync(dir).filter((n) => n.endsWith(".idx"));
    assert.ok(indexes().length >= 1, `sealed segments have index files: ${readdirSync(dir).join(" ")}`);
    // From the index files: each batch's newest record time is written in them.
    await log.close();
    log = await open();
    check(log);
    assert.deepEqual(warnings, []);
    // The first segment's detail part damaged: the segment itself is read when the detail is needed.
    await log.close();
    const first = join(dir, indexes().sort()[0]);
    const idx = readFileSync(first);
    idx[idx.length - 1] ^= 0xff;
    writeFileSync(first, idx);
    log = await open();
    check(log);
    assert.ok(warnings.some((w) => /reading the segment instead/.test(w)), warnings.join("\n"));
    // An index file of version 2 (before batches had their newest record times): rebuilt from its segment on opening.
    await log.close();
    const v2 = readFileSync(first);
    v2.writeUInt32LE(2, 4);
    writeFileSync(first, v2);
    warnings.length = 0;
    log = await open();
    check(log);
    assert.ok(warnings.some((w) => /written in index version 2, before 3; rebuilding it from the segment/.test(w)), warnings.join("\n"));
    // No index files at all: every segment is read on opening.
    await log.close();
    for (const n of indexes()) rmSync(join(dir, n));
    log = await open();
    assert.equal(log.io.segmentsScanned, readdirSync(dir).filter((n) => n.endsWith(".seg")).length);
    check(log);
    // The padding deleted: its segments are rewritten, the foreign batches kept whole with their times.
    const compactions = log.io.compactions;
    for (const seq of pads) assert.equal(await log.delete(seq), true);
    await log.settle();
    assert.ok(log.io.compactions > compactions, "compaction ran");
    check(log, true);
    await log.close();
    log = await open();
    check(log, true);
    await newestWithoutF(log);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Records gone from the front of a foreign batch (a purge or a limit whose
 * boundary fell inside it, Kafka's DeleteRecords) leave the rest of it as
 * the client framed it: scanStored from there hands it over whole (the
 * reader skips what it did not ask for, as Kafka's clients do), and
 * compaction keeps it whole with the tombstones that keep its first
 * records dead. A record gone from its middle still splits it.
 */
async function purgedFront(log: MessageLog): Promise<{ first: number; check: (log: MessageLog) => Promise<void> }> {
  const before = log.state().messages;
  const values = ["r0", "r1", "r2", "r3", "r4"];
  const first = await appendBatch(log, "k.t", values);
  const whole = `batch ${first}+5 ${JSON.stringify(values)}`;
  const tail = await appendBatch(log, "k.t", ["s0", "s1"]);
  // Most of the batch gone: its records share its bytes, so most of what it takes is dead.
  assert.equal(await log.purge({ upTo: first + 3 }), before + 3);
  const check = async (log: MessageLog): Promise<void> => {
    // Only the batches' records: records appended later are not the point.
    const items = async (from: number): Promise<string[]> => describeItems(await log.scanStored(from)).filter((x) => !x.includes("n.later"));
    assert.equal(log.state().firstSeq, first + 3);
    assert.deepEqual(await items(first + 3), [whole, `batch ${tail}+2 ["s0","s1"]`]);
    assert.deepEqual(await items(first + 4), [whole, `batch ${tail}+2 ["s0","s1"]`]);
    // Asked from below the log start, the gone records would be handed over as if there: the records come one by one.
    assert.deepEqual(await items(first), [`${first + 3} k.t r3`, `${first + 4} k.t r4`, `batch ${tail}+2 ["s0","s1"]`]);
    assert.deepEqual(describeItems(await log.scan(1, { filter: "k.t" })), [`${first + 3} k.t r3`, `${first + 4} k.t r4`, `${tail} k.t s0`, `${tail + 1} k.t s1`]);
    assert.equal(await log.get(first + 2), null);
    assert.equal(log.subjectCount("k.t"), 4);
  };
  await check(log);
  return { first, check };
}

test("memory log: a foreign batch whose first records were purged is handed over whole from the log start", async () => {
  const log = new MemoryLog({ foreign: toy });
  const { first, check } = await purgedFront(log);
  await check(log);
  // One of the rest deleted too: from the log start it now comes record by record.
  assert.equal(await log.delete(first + 3), true);
  assert.deepEqual(describeItems(await log.scanStored(first + 3)).slice(0, 1), [`${first + 4} k.t r4`]);
  await log.close();
});

test("file log: a foreign batch whose first records were purged stays whole through compaction, reopening and rebuilt indexes; its tombstones stay with it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-foreign-front-"));
  const open = (): Promise<FileLog> => FileLog.open({ dir, foreign: toy, maxSegmentBytes: 1024 });
  let log = await open();
  try {
    // Padding first, so that the batch's segment is mostly dead once it goes and is compacted.
    const pads: number[] = [];
    for (let i = 0; i < 2; i++) pads.push(await appendAsync(log, { subject: "n.pad", data: Buffer.alloc(400, 0x61) }));
    const { first, check } = await purgedFront(log);
    // Seal the batch's segment.
    for (let i = 0; i < 3; i++) await appendAsync(log, { subject: "n.later", data: Buffer.alloc(400, 0x62) });
    assert.ok(log.state().firstSeq === first + 3);
    await log.settle();
    await check(log);
    // Compaction runs over the batch's segment (the padding and its first records are dead) and keeps it whole.
    const segments = (): string[] => readdirSync(dir).filter((n) => n.endsWith(".seg"));
    assert.ok(log.io.compactions > 0, "compaction ran");
    await check(log);
    const compactions = log.io.compactions;
    await log.settle();
    assert.equal(log.io.compactions, compactions, "a segment kept as it was is not compacted again");
    await log.close();
    log = await open();
    await check(log);
    // Without index files: liveness comes from the tombstones again, which compaction kept.
    await log.close();
    for (const n of readdirSync(dir).filter((n) => n.endsWith(".idx"))) rmSync(join(dir, n));
    log = await open();
    await check(log);
    assert.ok(segments().length >= 2);
    void pads;
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
