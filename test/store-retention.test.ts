/**
 * Deletes, purges, retention limits and compaction: which sequences survive,
 * exactly, in both logs, and across reopening the file log.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileLog, segmentName, type FileLogOptions } from "../src/store/file-log.js";
import { encodeTombstones } from "../src/store/format.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { agePeriodMs } from "../src/store/live-index.js";
import { appendAsync, type Limits, type MessageLog } from "../src/store/log.js";

async function survivors(log: MessageLog): Promise<number[]> {
  const out: number[] = [];
  for (let from = 1; ; ) {
    const got = await log.scan(from, { maxMessages: 1000 });
    if (got.length === 0) return out;
    for (const m of got) out.push(m.seq);
    from = got[got.length - 1].seq + 1;
  }
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Kind {
  name: string;
  /** Opens a log with the given limits; `reopen` closes and opens the same log again (the file log only). */
  open(limits?: Limits, extra?: Partial<FileLogOptions>): Promise<MessageLog>;
  reopen(log: MessageLog, limits?: Limits): Promise<MessageLog>;
  cleanup(): void;
}

function fileKind(): Kind {
  const dir = mkdtempSync(join(tmpdir(), "nagare-retention-"));
  let extraOpts: Partial<FileLogOptions> = {};
  return {
    name: "file",
    open: (limits, extra = {}) => {
      extraOpts = extra;
      return FileLog.open({ dir, limits, ...extra });
    },
    reopen: async (log, limits) => {
      await log.close();
      return FileLog.open({ dir, limits, ...extraOpts });
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

function memoryKind(): Kind {
  return {
    name: "memory",
    open: async (limits) => new MemoryLog({ limits }),
    reopen: async (log) => log,
    cleanup: () => {},
  };
}

const payload = (n: number): Buffer => Buffer.alloc(n, 0x61);

for (const [name, make] of [["file", fileKind], ["memory", memoryKind]] as const) {
  describe(`retention and deletes: ${name} log`, () => {
    test("max messages keeps exactly the newest N", async () => {
      const k = make();
      let log = await k.open({ maxMsgs: 5 });
      try {
        for (let i = 0; i < 12; i++) await appendAsync(log, { subject: `s.${i % 3}`, data: payload(10) });
        assert.deepEqual(await survivors(log), range(8, 12));
        assert.equal(log.state().firstSeq, 8);
        log = await k.reopen(log, { maxMsgs: 5 });
        assert.deepEqual(await survivors(log), range(8, 12));
        assert.equal(await appendAsync(log, { subject: "s.0", data: payload(10) }), 13);
        assert.deepEqual(await survivors(log), range(9, 13));
      } finally {
        await log.close();
        k.cleanup();
      }
    });

    test("max bytes drops the oldest until the rest fits", async () => {
      const k = make();
      let log = await k.open();
      try {
        // Each record is 14 header bytes + 1 subject byte + 85 payload bytes = 100.
        for (let i = 0; i < 10; i++) await appendAsync(log, { subject: "b", data: payload(85) });
        assert.equal(log.state().bytes, 1000);
        log.setLimits({ maxBytes: 350 });
        assert.deepEqual(await survivors(log), range(8, 10));
        await appendAsync(log, { subject: "b", data: payload(185) }); // 200 bytes
        assert.deepEqual(await survivors(log), [10, 11]);
        assert.equal(log.state().bytes, 300);
        log = await k.reopen(log, { maxBytes: 350 });
        assert.deepEqual(await survivors(log), [10, 11]);
      } finally {
        await log.close();
        k.cleanup();
      }
    });

    test("max messages per subject keeps each subject's newest (KV history)", async () => {
      const k = make();
      let log = await k.open({ maxMsgsPerSubject: 2 });
      try {
        const subjects = ["kv.a", "kv.b", "kv.a", "kv.c", "kv.a", "kv.b", "kv.b", "kv.a"];
        for (const s of subjects) await appendAsync(log, { subject: s, data: payload(5) });
        // a: 1,3,5,8 -> 5,8; b: 2,6,7 -> 6,7; c: 4.
        assert.deepEqual(await survivors(log), [4, 5, 6, 7, 8]);
        assert.equal(log.subjectCount("kv.a"), 2);
        assert.equal((await log.lastBySubject("kv.b"))?.seq, 7);
        log = await k.reopen(log, { maxMsgsPerSubject: 2 });
        assert.deepEqual(await survivors(log), [4, 5, 6, 7, 8]);
        log.setLimits({ maxMsgsPerSubject: 1 });
        assert.deepEqual(await survivors(log), [4, 7, 8]);
      } finally {
        await log.close();
        k.cleanup();
      }
    });

    test("discard new refuses with JetStream's errors and stores nothing of it", async () => {
      const k = make();
      const log = await k.open({ maxMsgs: 3, maxBytes: 10_000, maxMsgsPerSubject: 2, discard: "new", discardNewPerSubject: true });
      try {
        // Concurrent appends: the refusal counts what is queued, not only what is stored.
        const results = await Promise.allSettled([
          appendAsync(log, { subject: "x", data: payload(5) }),
          appendAsync(log, { subject: "x", data: payload(5) }),
          appendAsync(log, { subject: "x", data: payload(5) }),
          appendAsync(log, { subject: "y", data: payload(5) }),
          appendAsync(log, { subject: "z", data: payload(5) }),
        ]);
        assert.deepEqual(
          results.map((r) => (r.status === "fulfilled" ? r.value : (r.reason as Error).message)),
          [1, 2, "maximum messages per subject exceeded", 3, "maximum messages exceeded"],
        );
        assert.deepEqual(await survivors(log), [1, 2, 3]);
        await log.delete(1);
        assert.equal(await appendAsync(log, { subject: "z", data: payload(5) }), 4);
        log.setLimits({ maxBytes: 100, discard: "new" });
        await assert.rejects(appendAsync(log, { subject: "w", data: payload(200) }), /maximum bytes exceeded/);
      } finally {
        await log.close();
        k.cleanup();
      }
    });

    test("max age expires what is older", async () => {
      const k = make();
      const log = await k.open({ maxAgeMs: 300 });
      try {
        for (let i = 0; i < 3; i++) await appendAsync(log, { subject: "old", data: payload(5) });
        await until("the old messages to expire", () => log.state().messages === 0);
        assert.equal(await log.get(1), null);
        assert.equal(await appendAsync(log, { subject: "new", data: payload(5) }), 4);
        const st = log.state();
        assert.equal(st.firstSeq, 4);
        assert.equal(st.messages, 1);
      } finally {
        await log.close();
        k.cleanup();
      }
    });

    test("delete and every form of purge remove exactly their messages, durably", async () => {
      const k = make();
      let log = await k.open();
      try {
        for (let i = 1; i <= 30; i++) await appendAsync(log, { subject: i % 2 === 0 ? "even" : `odd.${i % 3}`, data: payload(i) });
        assert.equal(await log.delete(4), true);
        assert.equal(await log.delete(4), false);
        assert.equal(await log.delete(99), false);
        assert.equal(await log.purge({ upTo: 6 }), 4); // 1,2,3,5
        assert.equal(await log.purge({ filter: "odd.*", upTo: 12 }), 3); // 7,9,11
        assert.equal(await log.purge({ filter: "even", keep: 3 }), 10); // 6..24 even; 26, 28, 30 stay
        assert.deepEqual(await survivors(log), [13, 15, 17, 19, 21, 23, 25, 26, 27, 28, 29, 30]);
        log = await k.reopen(log);
        assert.deepEqual(await survivors(log), [13, 15, 17, 19, 21, 23, 25, 26, 27, 28, 29, 30]);
        assert.equal(await log.purge({ keep: 2 }), 10);
        assert.deepEqual(await survivors(log), [29, 30]);
        assert.equal(await log.purge(), 2);
        log = await k.reopen(log);
        const st = log.state();
        assert.deepEqual([st.firstSeq, st.lastSeq, st.messages], [31, 30, 0], "an empty log keeps counting where it was");
        assert.equal(await appendAsync(log, { subject: "after", data: payload(1) }), 31);
      } finally {
        await log.close();
        k.cleanup();
      }
    });
  });
}

describe("compaction", () => {
  test("mostly-dead sealed segments are rewritten, dead ones removed, reads unchanged", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-compact-"));
    const segs = (): string[] => readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
    const bytesOnDisk = (): number => segs().reduce((a, n) => a + statSync(join(dir, n)).size, 0);
    let log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
    try {
      for (let i = 1; i <= 300; i++) await appendAsync(log, { subject: `c.${i % 4}`, data: Buffer.from(`record ${i} `.repeat(8)) });
      const before = segs().length;
      const sizeBefore = bytesOnDisk();
      assert.ok(before >= 8, `${before} segments`);
      // Everything below 151 goes: whole segments die; keep 1 in 10 of the rest so others are mostly dead.
      await log.purge({ upTo: 151 });
      for (let s = 151; s <= 300; s++) if (s % 10 !== 0 && s < 280) await log.delete(s);
      await log.settle();
      const want = [160, 170, 180, 190, 200, 210, 220, 230, 240, 250, 260, 270, ...range(280, 300)];
      assert.deepEqual(await survivors(log), want);
      assert.ok(log.io.compactions > 0, "compaction ran");
      assert.ok(segs().length < before, `segments ${before} -> ${segs().length}`);
      assert.ok(bytesOnDisk() < sizeBefore / 2, `bytes ${sizeBefore} -> ${bytesOnDisk()}`);
      for (const s of want) assert.equal((await log.get(s))?.data.toString(), `record ${s} `.repeat(8));
      assert.equal((await log.next(200, "c.2"))?.seq, 210);
      assert.equal(await appendAsync(log, { subject: "c.0", data: Buffer.from("more") }), 301);
      log = await reopened(log, dir);
      assert.deepEqual(await survivors(log), [...want, 301]);
      assert.equal(log.state().lastSeq, 301);
      assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".tmp")), []);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("appends and reads go on while a compaction runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-compact-"));
    const log = await FileLog.open({ dir, maxSegmentBytes: 8192 });
    try {
      for (let i = 1; i <= 400; i++) await appendAsync(log, { subject: "w", data: Buffer.alloc(100, i & 0xff) });
      const purged = log.purge({ upTo: 390 });
      // Appends and scans issued while compaction is under way.
      const appends = Promise.all(Array.from({ length: 200 }, () => appendAsync(log, { subject: "w", data: Buffer.alloc(100, 7) })));
      const scans: Promise<number>[] = [];
      for (let i = 0; i < 20; i++) scans.push(log.scan(390, { maxMessages: 5 }).then((ms) => ms.length));
      assert.equal(await purged, 389);
      assert.deepEqual(await appends, range(401, 600));
      for (const n of await Promise.all(scans)) assert.equal(n, 5);
      await log.settle();
      assert.deepEqual(await survivors(log), range(390, 600));
      for (const m of await log.scan(401, { maxMessages: 200 })) assert.ok(m.data.equals(Buffer.alloc(100, 7)));
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("segments whose records and tombstones are all gone leave no file behind", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-compact-"));
    const segs = (): string[] => readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
    // A KV bucket's churn: one value per key, and deletes, whose tombstones name the next sequence.
    let log = await FileLog.open({ dir, maxSegmentBytes: 4096, limits: { maxMsgsPerSubject: 1 } });
    try {
      for (let i = 1; i <= 600; i++) {
        await appendAsync(log, { subject: `kv.${i % 5}`, data: Buffer.alloc(200, i & 0xff) });
        if (i % 7 === 0) await log.delete(i - 3);
      }
      await log.settle();
      const want = await survivors(log);
      assert.ok(want.length <= 5 && want.includes(600), `survivors ${want}`);
      const names = segs();
      // Every file but the newest holds a live record or a tombstone something still needs.
      const holders = new Set(want.map((s) => names.filter((n) => Number(n.slice(0, 20)) <= s).pop()));
      const idle = names.slice(0, -1).filter((n) => !holders.has(n) && statSync(join(dir, n)).size <= 32);
      assert.deepEqual(idle, [], `of ${names.length} segments`);
      assert.ok(names.length <= 12, `${names.length} segments`);

      // A file an older version left with nothing but a next sequence (a 32-byte tombstone batch
      // without ranges), before the others: removed by the next maintenance, the next sequence kept.
      await log.close();
      const first = Number(segs()[0].slice(0, 20));
      assert.ok(first > 2, `the first segment starts at ${first}`);
      const name = segmentName(first - 2);
      writeFileSync(join(dir, name), encodeTombstones([], first - 1, Date.now()));
      log = await FileLog.open({ dir, maxSegmentBytes: 4096, limits: { maxMsgsPerSubject: 1 } });
      await log.settle();
      assert.ok(!segs().includes(name), "the file of a next sequence alone was removed");
      assert.deepEqual(await survivors(log), want);
      assert.equal(await appendAsync(log, { subject: "kv.9", data: Buffer.from("next") }), 601);
      log = await FileLog.open({ dir, maxSegmentBytes: 4096 }).finally(() => log.close());
      assert.equal(log.state().lastSeq, 601);
      assert.deepEqual(await survivors(log), [...want, 601]);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function reopened(log: FileLog, dir: string): Promise<FileLog> {
  await log.close();
  return FileLog.open({ dir, maxSegmentBytes: 4096 });
}

test("messages past max_age are looked for every twentieth of it (10 ms to 1 s): a 1 s age is at most 50 ms late", () => {
  // An outside test: a quarter of the age made messages of a 1 s max_age live up to 250 ms longer, where nats-server
  // removes each when it is due (a KV get saw a value past its TTL).
  assert.deepEqual([100, 1000, 5000, 60_000, 3_600_000].map(agePeriodMs), [10, 50, 250, 1000, 1000]);
});

test("memory log: a message that stays while later ones come and go holds memory for the live ones only, and time lookups step over the gone", async () => {
  // A KV bucket's key written once and never again, or a compacted topic's first record: what came after it and went
  // kept a slot per sequence, memory growing with every message ever stored.
  const log = new MemoryLog({ limits: { maxMsgsPerSubject: 1 } });
  try {
    await appendAsync(log, { subject: "kv.once", data: Buffer.from("stays") });
    for (let i = 0; i < 20_000; i++) await appendAsync(log, { subject: "kv.churn", data: Buffer.from(`v${i}`) });
    const inner = log as unknown as { msgs: Map<number, unknown>; held: Map<number, unknown> };
    assert.equal(inner.msgs.size + inner.held.size, 2, "entries for the live messages only");
    assert.deepEqual(
      (await log.scan(1, { maxMessages: 10 })).map((m) => m.seq),
      [1, 20_001],
    );
    // Times: the first live at or after a time between the two is the second.
    const [first, last] = [(await log.get(1))!.time, (await log.get(20_001))!.time];
    assert.equal((await log.firstAtOrAfter(first))!.seq, 1);
    assert.equal((await log.firstAtOrAfter(last))!.seq, first === last ? 1 : 20_001);
    assert.equal(await log.firstAtOrAfter(last + 1), null);
    assert.equal(log.firstStampedAtOrAfter(last + 1, 1), 20_002);
    assert.deepEqual(log.newestStamped(), { seq: first === last ? 1 : 20_001, time: last });
  } finally {
    await log.close();
  }
});
