/**
 * Kafka batches with records gone from inside them (log compaction, a
 * JetStream delete): readers of the format get a batch of the records left
 * with the batch's own header (offsets, timestamps, producer id, epoch,
 * base sequence, attributes), as Kafka's cleaner rewrites a batch; the
 * store's compaction keeps the batch so on disk, and it reads the same
 * after reopening, with and without index files. NATS readers get each
 * record left at its sequence. A copy to another log gets the batch as
 * stored with the sequences gone named, and removes them as it lands (an
 * asker of the previous version gets the records left, as messages).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { gzipSync } from "node:zlib";
import { crc32c } from "../src/util/crc32c.js";
import { FileLog } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, FOREIGN_KAFKA, isForeign, type MessageLog, type StoredForeign } from "../src/store/log.js";
import { Writer } from "../src/protocols/kafka/codec.js";
import { ATTR_TRANSACTIONAL, decodeProduceBatch, encodeBatch, recordTimestamps } from "../src/protocols/kafka/records.js";
import { batchProducer, cutStoredBatch, kafkaRecords } from "../src/protocols/kafka/stored-batches.js";
import { appendItems, decodeBatch as decodeCopy, encodeBatch as encodeCopy, MAX_GONE_RANGES, readCopy } from "../src/streams/copy-batch.js";
import { waitUntil } from "./helpers/clients.js";

const gate = { maxBytes: 1 << 26, take: () => true as const, give: () => {} };

/** A RecordBatch v2 of `count` records k<i>=<tag><i>, CreateTime 1000 + i, from producer 7 (epoch 3, base sequence 40). */
function kafkaBatch(tag: string, count: number, attributes = 0): Buffer {
  const w = new Writer(256);
  const records = Array.from({ length: count }, (_, i) => ({ offset: i, timestamp: 1000 + i, key: Buffer.from(`k${i}`), value: Buffer.from(`${tag}${i}-${"x".repeat(80)}`), headers: null }));
  encodeBatch(w, records, attributes, 7, 3, 40);
  return Buffer.from(w.buf.subarray(0, w.pos));
}

function appendKafka(log: MessageLog, bytes: Buffer, count: number): Promise<number> {
  return new Promise((resolve, reject) => log.appendBatch({ format: FOREIGN_KAFKA, subject: "t", count, bytes }, (err, seq) => (err ? reject(err) : resolve(seq))));
}

/** A stored batch as a Kafka reader gets it: its records' offset deltas, keys and CreateTimes, its header's fields. */
async function described(item: StoredForeign): Promise<{ records: string[]; producer: ReturnType<typeof batchProducer>; lastOffsetDelta: number; count: number }> {
  const b = await decodeProduceBatch(item.bytes, gate, true, true);
  const times: number[] = [];
  recordTimestamps(b, (_i, t) => times.push(t));
  const records: string[] = [];
  for (let i = 0; i < b.count; i++) records.push(`${b.offsetDeltas?.[i] ?? i}:${b.body.toString("latin1", b.keyAt[i], b.keyAt[i] + b.keyLen[i])}@${times[i]}`);
  return { records, producer: batchProducer(item.bytes), lastOffsetDelta: b.lastOffsetDelta, count: item.count };
}

test("cutStoredBatch keeps the header and the records named, at their offset deltas; a cut batch can be cut again; none left: null", async () => {
  const whole = kafkaBatch("v", 6, ATTR_TRANSACTIONAL);
  const cut = (await cutStoredBatch(whole, Uint8Array.from([1, 0, 1, 0, 0, 1])))!;
  const item = { format: FOREIGN_KAFKA, firstSeq: 1, count: 6, time: 0, subject: "t", bytes: cut };
  assert.deepEqual(await described(item), {
    records: ["0:k0@1000", "2:k2@1002", "5:k5@1005"],
    producer: { producerId: 7, epoch: 3, baseSequence: 40, transactional: true },
    lastOffsetDelta: 5,
    count: 6,
  });
  assert.equal(kafkaRecords.records!(FOREIGN_KAFKA, cut), 3);
  const again = (await cutStoredBatch(cut, Uint8Array.from([0, 0, 1, 0, 0, 1])))!;
  assert.deepEqual((await described({ ...item, bytes: again })).records, ["2:k2@1002", "5:k5@1005"]);
  assert.equal(await cutStoredBatch(again, new Uint8Array(6)), null);
  // NATS readers: each record left at its own sequence, holes where the others were.
  const messages = await kafkaRecords.decode(FOREIGN_KAFKA, cut, 10, 0, "t");
  assert.equal(messages.length, 6);
  assert.deepEqual(
    Array.from(messages, (m) => (m === undefined ? null : `${m.seq}:${m.key}`)),
    ["10:k0", null, "12:k2", null, null, "15:k5"],
  );
});

test("file log: a Kafka batch with records deleted from inside it reads as a cut batch, is kept cut by compaction, and reads the same after reopening with and without index files", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-"));
  const open = (): Promise<FileLog> => FileLog.open({ dir, foreign: kafkaRecords, maxSegmentBytes: 2048, compactBelow: 0.9 });
  let log = await open();
  try {
    assert.equal(await appendKafka(log, kafkaBatch("a", 6), 6), 1);
    for (const seq of [2, 4, 5]) assert.equal(await log.delete(seq), true);
    const check = async (what: string): Promise<void> => {
      const [item] = await log.scanStored(1, { maxMessages: 10 });
      assert.ok(isForeign(item), `${what}: a batch`);
      assert.deepEqual(
        await described(item),
        { records: ["0:k0@1000", "2:k2@1002", "5:k5@1005"], producer: { producerId: 7, epoch: 3, baseSequence: 40, transactional: false }, lastOffsetDelta: 5, count: 6 },
        what,
      );
      // From inside it, the same batch (the reader skips what it did not ask for).
      const [fromInside] = await log.scanStored(4, { maxMessages: 10 });
      assert.ok(isForeign(fromInside) && fromInside.firstSeq === 1, `${what}: from inside`);
      assert.deepEqual(
        (await log.scan(1, { maxMessages: 3 })).map((m) => `${m.seq}:${m.key}`),
        ["1:k0", "3:k2", "6:k5"],
        `${what}: NATS readers`,
      );
      assert.equal((await log.get(3))?.key?.toString(), "k2");
      assert.equal(await log.get(4), null);
      assert.equal(log.state().messages >= 3, true);
    };
    await check("before compaction");
    // Seal the batch's segment, with enough dead in it that compaction rewrites it.
    for (let i = 0; i < 12; i++) await appendAsync(log, { subject: "pad", data: Buffer.alloc(300, 0x61) });
    await log.settle();
    assert.ok(log.io.compactions > 0, "compaction ran");
    await check("after compaction");
    const [onDisk] = await log.scanStored(1, { maxMessages: 1 });
    assert.ok(isForeign(onDisk) && kafkaRecords.records!(FOREIGN_KAFKA, onDisk.bytes) === 3, "stored cut: three records in the batch on disk");
    await log.close();
    log = await open();
    await check("reopened");
    // What compaction kept dead inside the batch is known after the reopen: the segment is not rewritten again.
    await appendAsync(log, { subject: "pad", data: Buffer.alloc(300, 0x61) });
    await log.settle();
    assert.equal(log.io.compactions, 0, "nothing rewritten after the reopen");
    await log.close();
    for (const n of readdirSync(dir).filter((n) => n.endsWith(".idx"))) rmSync(join(dir, n));
    log = await open();
    await check("reopened without index files");
    // One more record of it deleted: cut again on read, and by the next compaction.
    assert.equal(await log.delete(3), true);
    const [item] = await log.scanStored(1, { maxMessages: 1 });
    assert.ok(isForeign(item));
    assert.deepEqual((await described(item)).records, ["0:k0@1000", "5:k5@1005"]);

    // An asker of the previous version (a follower's catch-up, a move) gets the records left one by one: it would take
    // every sequence the batch spans as stored.
    const copy = new MemoryLog({ foreign: kafkaRecords });
    const items = await readCopy(log, 1, 100, 1 << 20);
    assert.deepEqual(items.slice(0, 2).map((m) => (isForeign(m) ? "batch" : `${m.seq}:${m.key}`)), ["1:k0", "6:k5"]);
    await appendItems(copy, items, 1);
    assert.deepEqual((await copy.scan(1, { maxMessages: 2 })).map((m) => `${m.seq}:${m.key}`), ["1:k0", "6:k5"]);
    assert.equal(copy.has(3), false);
    await copy.close();
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("memory log: a Kafka batch with records deleted from inside it reads as a cut batch", async () => {
  const log = new MemoryLog({ foreign: kafkaRecords });
  try {
    assert.equal(await appendKafka(log, kafkaBatch("a", 6), 6), 1);
    for (const seq of [2, 4, 5]) assert.equal(await log.delete(seq), true);
    const [item] = await log.scanStored(3, { maxMessages: 10 });
    assert.ok(isForeign(item) && item.firstSeq === 1);
    assert.deepEqual((await described(item)).records, ["0:k0@1000", "2:k2@1002", "5:k5@1005"]);
    assert.deepEqual(
      (await log.scan(1, { maxMessages: 3 })).map((m) => `${m.seq}:${m.key}`),
      ["1:k0", "3:k2", "6:k5"],
    );
  } finally {
    await log.close();
  }
});

/** `plain` (a batch from kafkaBatch) with its records gzipped, as a producer with compression.type=gzip sends them. */
function gzipped(plain: Buffer): Buffer {
  const batch = Buffer.concat([plain.subarray(0, 61), gzipSync(plain.subarray(61))]);
  batch.writeInt32BE(batch.length - 12, 8);
  batch.writeInt16BE(1, 21);
  batch.writeUInt32BE(crc32c(batch, 21) >>> 0, 17);
  return batch;
}

test("memory log: a batch half gone is held cut to the records left (gzip if it was compressed), and reads the same", async () => {
  const n = 200;
  for (const compressed of [false, true]) {
    const log = new MemoryLog({ foreign: kafkaRecords });
    // What the log holds of the batch: its bytes, reached through any sequence of it still stored.
    const held = (): Buffer => [...(log as unknown as { held: Map<number, { bytes: Buffer }> }).held.values()][0].bytes;
    try {
      const batch = compressed ? gzipped(kafkaBatch("a", n)) : kafkaBatch("a", n);
      assert.equal(await appendKafka(log, batch, n), 1);
      // Under half gone, one by one: held whole.
      for (let seq = 2; seq <= n / 2; seq++) assert.equal(await log.delete(seq), true);
      await log.settled();
      assert.equal(held().length, batch.length, "under half gone: held whole");
      // Half gone: held cut.
      assert.equal(await log.delete(n / 2 + 2), true);
      await log.settled();
      assert.ok(held().length < batch.length * 0.6, `${held().length} bytes held of ${batch.length} (${compressed ? "gzip" : "plain"})`);
      assert.equal(held().readInt16BE(21) & 7, compressed ? 1 : 0, "its codec");
      const left = [1, n / 2 + 1, ...Array.from({ length: n / 2 - 2 }, (_, i) => n / 2 + 3 + i)];
      assert.deepEqual((await log.scan(1, { maxMessages: n })).map((m) => `${m.seq}:${m.key}`), left.map((s) => `${s}:k${s - 1}`));
      const [item] = await log.scanStored(1, { maxMessages: n });
      assert.ok(isForeign(item) && item.firstSeq === 1 && item.count === n);
      assert.deepEqual((await described(item)).records, left.map((s) => `${s - 1}:k${s - 1}@${999 + s}`));
      // Half of what is left goes: cut again.
      const before = held().length;
      for (const seq of left.slice(1, left.length / 2 + 1)) assert.equal(await log.delete(seq), true);
      await log.settled();
      assert.ok(held().length < before * 0.6, `cut again: ${held().length} of ${before}`);
      assert.deepEqual((await log.scan(1, { maxMessages: n })).map((m) => m.seq), [1, ...left.slice(left.length / 2 + 1)]);
    } finally {
      await log.close();
    }
  }
});

test("file log: deletes one by one out of many batches leave as few tombstone ranges as the dead runs once compaction has passed, wherever the deletes landed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-tombs-"));
  const open = (): Promise<FileLog> => FileLog.open({ dir, foreign: kafkaRecords, maxSegmentBytes: 64 * 1024 });
  let log = await open();
  const ranges = (l: FileLog): number => (l as unknown as { segments: Array<{ tombs: number[] }> }).segments.reduce((n, s) => n + s.tombs.length / 2, 0);
  try {
    // 40 batches of 50 records; every record but the first and the 25th of each goes, one delete at a time (each its own
    // round and tombstone), after the batches' segments were sealed: the tombstones land in later files.
    const firsts: number[] = [];
    for (let b = 0; b < 40; b++) firsts.push(await appendKafka(log, kafkaBatch(`b${b}.`, 50), 50));
    for (let i = 0; i < 4; i++) await appendAsync(log, { subject: "pad", data: Buffer.alloc(30_000, 0x61) });
    const live = new Set<number>();
    for (const f of firsts) {
      live.add(f);
      live.add(f + 24);
      for (let k = 1; k < 50; k++) if (k !== 24) assert.equal(await log.delete(f + k), true);
    }
    assert.ok(ranges(log) >= 40 * 48, `a range a delete: ${ranges(log)}`);
    for (let i = 0; i < 4; i++) await appendAsync(log, { subject: "pad", data: Buffer.alloc(30_000, 0x62) });
    await log.settle();
    assert.ok(log.io.compactions > 0, "compaction ran");
    // Two dead runs a batch at most (one between its two records, one after the second, which may join the next batch's).
    assert.ok(ranges(log) <= 40 * 2 + 8, `ranges left: ${ranges(log)}`);
    const check = async (what: string): Promise<void> => {
      const seqs = (await log.scan(1, { maxMessages: 1000, filter: "t" })).map((m) => m.seq);
      assert.deepEqual(seqs, [...live].sort((a, b) => a - b), what);
    };
    await check("compacted");
    await log.close();
    for (const n of readdirSync(dir).filter((n) => n.endsWith(".idx"))) rmSync(join(dir, n));
    log = await open();
    await check("reopened without index files");
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a segment compaction leaves as it was is not compacted again until a record in it goes", async () => {
  // One record left of a batch of 2,000: its share of the cut batch's bytes is 0, so the file looks all dead, and
  // maintenance rewrote it again and again (the same file each time), never reaching the files after it.
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-stable-"));
  const log = await FileLog.open({ dir, foreign: kafkaRecords, maxSegmentBytes: 64 * 1024 });
  try {
    assert.equal(await appendKafka(log, kafkaBatch("s", 2000), 2000), 1);
    for (let seq = 1; seq <= 2000; seq++) if (seq !== 1500) assert.equal(await log.delete(seq), true);
    for (let i = 0; i < 4; i++) await appendAsync(log, { subject: "pad", data: Buffer.alloc(30_000, 0x61) });
    // Bounded: with the defect, maintenance never ends.
    const settled = async (): Promise<void> => {
      const from = log.io.compactions;
      let ended = false;
      // The bound stops looking once settle wins: left polling, it kept the test process alive for its whole minute.
      const endless = waitUntil(() => ended || log.io.compactions > from + 50, "maintenance to end", 60_000).catch(() => undefined);
      await Promise.race([log.settle(), endless]);
      ended = true;
      await endless;
    };
    await settled();
    const rewrites = log.io.compactions;
    // Maintenance once more, nothing gone since: nothing to compact.
    await appendAsync(log, { subject: "pad", data: Buffer.alloc(10, 0x61) });
    await settled();
    assert.equal(log.io.compactions, rewrites, "nothing compacted again");
    assert.deepEqual((await log.scan(1, { maxMessages: 10, filter: "t" })).map((m) => `${m.seq}:${m.key}`), ["1500:k1499"]);
    // The files after it are compacted too: the pads' first segment once two of its records go.
    const files = (): number => readdirSync(dir).filter((n) => n.endsWith(".seg")).length;
    const before = files();
    for (const m of await log.scan(1, { maxMessages: 2, filter: "pad" })) assert.equal(await log.delete(m.seq), true);
    await appendAsync(log, { subject: "pad", data: Buffer.alloc(30_000, 0x62) });
    await log.settle();
    assert.ok(log.io.compactions > rewrites, "compacted again");
    assert.ok(files() <= before, `${files()} segment files, ${before} before`);
    // And the cut batch's file once its last record goes.
    assert.equal(await log.delete(1500), true);
    await appendAsync(log, { subject: "pad", data: Buffer.alloc(30_000, 0x63) });
    await log.settle();
    assert.deepEqual(await log.scan(1, { maxMessages: 10, filter: "t" }), []);
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file log: a compressed batch is kept cut compressed (gzip), never larger than it was, and reads the same", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-gzip-"));
  const open = (): Promise<FileLog> => FileLog.open({ dir, foreign: kafkaRecords, maxSegmentBytes: 256, compactBelow: 0.9 });
  let log = await open();
  try {
    // gzip, as a producer with compression.type=gzip sends it (values compress well).
    const batch = gzipped(kafkaBatch("z", 20));
    assert.equal(await appendKafka(log, batch, 20), 1);
    for (let seq = 2; seq <= 20; seq++) if (seq % 5 !== 0) assert.equal(await log.delete(seq), true);
    const expected = ["0:k0@1000", "4:k4@1004", "9:k9@1009", "14:k14@1014", "19:k19@1019"];
    const [before] = await log.scanStored(1, { maxMessages: 1 });
    assert.ok(isForeign(before));
    assert.deepEqual((await described(before)).records, expected, "cut on read");
    for (let i = 0; i < 3; i++) await appendAsync(log, { subject: "pad", data: Buffer.alloc(300, 0x61) });
    await log.settle();
    assert.ok(log.io.compactions > 0, "compaction ran");
    const [after] = await log.scanStored(1, { maxMessages: 1 });
    assert.ok(isForeign(after));
    assert.equal(after.bytes.readInt16BE(21) & 7, 1, "stored gzip");
    assert.ok(after.bytes.length <= batch.length, `${after.bytes.length} bytes, ${batch.length} before`);
    assert.deepEqual((await described(after)).records, expected, "kept cut");
    // Deletes that landed while it was cut (a race this test often loses) are cut by a later compaction, and then no more.
    const compactions = log.io.compactions;
    await appendAsync(log, { subject: "pad", data: Buffer.alloc(300, 0x61) });
    await log.settle();
    assert.equal(log.io.compactions, compactions, "not rewritten again");
    await log.close();
    log = await open();
    const [reopened] = await log.scanStored(1, { maxMessages: 1 });
    assert.ok(isForeign(reopened));
    assert.deepEqual((await described(reopened)).records, expected, "reopened");
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a copy of a Kafka batch with records gone holds it as stored, the sequences gone removed in the same write, in a file log (after reopening too) and a memory log", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-copy-"));
  const source = await FileLog.open({ dir: join(dir, "source"), foreign: kafkaRecords });
  const copies: MessageLog[] = [];
  try {
    assert.equal(await appendKafka(source, kafkaBatch("a", 6), 6), 1);
    assert.equal(await appendKafka(source, kafkaBatch("b", 3), 3), 7);
    // Its front (a log start moved inside it) and its middle gone.
    assert.equal(await source.purge({ upTo: 2 }), 1);
    for (const seq of [3, 5]) assert.equal(await source.delete(seq), true);
    const shown = async (log: MessageLog): Promise<Record<string, unknown>> => ({
      read: (await log.scanStored(1, { maxMessages: 10 })).map((it) => (isForeign(it) ? `${it.firstSeq}+${it.count}:${it.bytes.toString("hex")}` : `message ${it.seq}`)),
      stored: (await log.scanStored(1, { maxMessages: 10, asStored: true })).map((it) => (isForeign(it) ? `${it.firstSeq}+${it.count}:${it.bytes.toString("hex")}` : `message ${it.seq}`)),
      has: Array.from({ length: 10 }, (_, i) => log.has(i + 1)),
      state: (({ firstSeq, lastSeq, messages, deleted, bytes }) => ({ firstSeq, lastSeq, messages, deleted, bytes }))(log.state()),
    });
    const items = decodeCopy(encodeCopy(await readCopy(source, 1, 100, 1 << 20, true)));
    assert.deepEqual(
      items.map((it) => (isForeign(it) ? { firstSeq: it.firstSeq, gone: it.gone } : null)),
      [{ firstSeq: 1, gone: [1, 1, 3, 3, 5, 5] }, { firstSeq: 7, gone: undefined }],
    );
    assert.equal((items[0] as StoredForeign).bytes.equals(kafkaBatch("a", 6)), true, "the batch as stored, not cut");
    // Asked from inside the batch (the asker holds its start, as messages), its records from there on, as messages.
    assert.deepEqual(
      (await readCopy(source, 4, 100, 1 << 20, true)).map((it) => (isForeign(it) ? `batch ${it.firstSeq}` : `${it.seq}:${it.key}`)),
      ["4:k3", "6:k5", "batch 7"],
    );
    const want = await shown(source);
    const fileCopy = await FileLog.open({ dir: join(dir, "copy"), foreign: kafkaRecords });
    copies.push(fileCopy, new MemoryLog({ foreign: kafkaRecords }));
    for (const copy of copies) {
      assert.equal(await appendItems(copy, items, 1), 10);
      if (copy instanceof FileLog) assert.deepEqual(await shown(copy), want);
      else {
        // The memory log holds a batch half gone cut to the records left, as it does its own (the file log's compaction
        // does so on disk): its readers get the same.
        await (copy as MemoryLog).settled();
        assert.deepEqual({ ...(await shown(copy)), stored: null }, { ...want, stored: null });
      }
      assert.deepEqual((await described((await copy.scanStored(1, { maxMessages: 1 }))[0] as StoredForeign)).records, ["1:k1@1001", "3:k3@1003", "5:k5@1005"]);
    }
    // The tombstones were written with the batch: the sequences stay gone after a reopen.
    await fileCopy.close();
    copies[0] = await FileLog.open({ dir: join(dir, "copy"), foreign: kafkaRecords });
    assert.deepEqual(await shown(copies[0]), want);

    // Gone ranges that do not lie within the batch in order are refused, and nothing is stored.
    const bad = new MemoryLog({ foreign: kafkaRecords });
    copies.push(bad);
    const batch = items[0] as StoredForeign;
    for (const gone of [[0, 1], [5, 7], [3, 3, 2, 2], [2]]) {
      await assert.rejects(appendItems(bad, [{ ...batch, gone }], 1), /not ranges within it/);
    }
    assert.equal(bad.state().lastSeq, 0);
    // An answer naming more ranges than any copy sends is refused before anything is built from it.
    const many = Buffer.from(encodeCopy([{ ...batch, gone: [1, 1] }]));
    many.writeUInt32LE(MAX_GONE_RANGES + 1, many.length - 12);
    assert.throws(() => decodeCopy(many), /ranges gone/);
  } finally {
    for (const copy of copies) await copy.close();
    await source.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a copy of a Kafka batch with records gone, its process killed as it writes the round, never holds those records after recovery", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-cut-copy-kill-"));
  // The child stores the copy and is killed (kill -9) at the next write the log makes after the round's first: between
  // the batch's bytes and its tombstones when they are two writes. Its round is never acknowledged; what recovery finds
  // may be the batch or nothing, never the batch without its tombstones (the records its source no longer stores).
  const src = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
  const child = `
    import { FileLog } from ${JSON.stringify(join(src, "store", "file-log.js"))};
    import { FOREIGN_KAFKA } from ${JSON.stringify(join(src, "store", "log.js"))};
    import { Writer } from ${JSON.stringify(join(src, "protocols", "kafka", "codec.js"))};
    import { encodeBatch } from ${JSON.stringify(join(src, "protocols", "kafka", "records.js"))};
    import { kafkaRecords } from ${JSON.stringify(join(src, "protocols", "kafka", "stored-batches.js"))};
    const w = new Writer(256);
    encodeBatch(w, Array.from({ length: 6 }, (_, i) => ({ offset: i, timestamp: 1000 + i, key: Buffer.from("k" + i), value: Buffer.from("v" + i), headers: null })), 0, 7, 3, 40);
    let writes = -1;
    const log = await FileLog.open({ dir: process.argv[1], sync: "always", foreign: kafkaRecords, faults: { write: () => { if (writes >= 0 && ++writes === 2) process.kill(process.pid, "SIGKILL"); return null; } } });
    writes = 0;
    log.appendCopy(1, Date.now(), { format: FOREIGN_KAFKA, subject: "t", count: 6, bytes: Buffer.from(w.buf.subarray(0, w.pos)), gone: [1, 1, 3, 3] }, (err, seq) => {
      process.stdout.write(err === null ? "stored " + seq : "failed " + err.message);
      process.exit(0);
    });
  `;
  try {
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", child, dir], { encoding: "utf8" });
    assert.equal(r.stderr, "");
    const log = await FileLog.open({ dir, foreign: kafkaRecords });
    try {
      const has = Array.from({ length: 6 }, (_, i) => log.has(i + 1));
      // Stored with its tombstones (the child acknowledged it), or not at all.
      const whole = [false, true, false, true, true, true];
      assert.deepEqual(has, r.stdout === "stored 1" ? whole : has.some((h) => h) ? whole : has, `after ${r.signal ?? r.stdout}`);
    } finally {
      await log.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
