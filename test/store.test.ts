/**
 * The storage engine: model-based random operations against both stores,
 * group commit, and acknowledged appends and deletes surviving kill -9 of the
 * writing process (also while it compacts). Corruption and failures are in
 * store-faults.test.ts, limits and compaction in store-retention.test.ts.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { FileLog } from "../src/store/file-log.js";
import { detailCache } from "../src/store/paged-index.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, runOf, type AppendInput, type MessageLog, type StoredMessage } from "../src/store/log.js";
import { crc32c, crc32cCombine, crc32cTables } from "../src/util/crc32c.js";
import { subjectMatches } from "../src/subjects/subject.js";
import { mismatch } from "./helpers/store-model.js";
import { rng } from "./helpers/random.js";

const here = dirname(fileURLToPath(import.meta.url));

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-store-"));
}

function segments(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith(".seg"))
    .sort();
}

test("crc32c matches the published check values", () => {
  assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  // Continuing from a prefix gives the same answer as one pass.
  const b = Buffer.from("The quick brown fox jumps over the lazy dog");
  assert.equal(crc32c(b, 10, b.length, crc32c(b, 0, 10)), crc32c(b));
  // Large ranges take the hardware path (when present), small ones the tables: both must agree everywhere.
  const r = rng(5);
  const big = Buffer.alloc(70_000);
  for (let i = 0; i < big.length; i++) big[i] = Math.floor(r() * 256);
  for (let k = 0; k < 50; k++) {
    const start = Math.floor(r() * 1000);
    const end = start + Math.floor(r() * (big.length - start));
    const mid = start + Math.floor((end - start) / 2);
    assert.equal(crc32c(big, start, end), crc32cTables(big, start, end), `[${start}, ${end})`);
    assert.equal(crc32c(big, mid, end, crc32c(big, start, mid)), crc32cTables(big, start, end));
  }
  assert.equal(crc32c(new Uint8Array(big), 3, 9000), crc32cTables(big, 3, 9000));
});

test("crc32cCombine gives the CRC-32C of two ranges joined, from theirs and the second's length", () => {
  const r = rng(7);
  const big = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = Math.floor(r() * 256);
  for (const [start, mid, end] of [
    [0, 0, 0],
    [0, 0, 10],
    [0, 10, 10],
    [5, 6, 7],
    [0, 61, 4096],
    [100, 200, big.length],
    [0, 1, big.length],
  ]) {
    assert.equal(crc32cCombine(crc32c(big, start, mid), crc32c(big, mid, end), end - mid), crc32c(big, start, end), `[${start}, ${mid}, ${end})`);
  }
  for (let i = 0; i < 50; i++) {
    const start = Math.floor(r() * 1000);
    const end = start + Math.floor(r() * (big.length - start));
    const mid = start + Math.floor(r() * (end - start));
    assert.equal(crc32cCombine(crc32c(big, start, mid), crc32c(big, mid, end), end - mid), crc32c(big, start, end), `[${start}, ${mid}, ${end})`);
  }
});

describe("model-based: random operations compared with a plain array", () => {
  const SUBJECTS = ["a.b", "a.c", "x.y.z", "orders.1", "orders.2"];
  const FILTERS = ["a.*", "orders.>", "x.y.z", ">", "nope"];

  async function run(makeLog: () => Promise<MessageLog>, reopen: ((log: MessageLog) => Promise<MessageLog>) | null, seed: number): Promise<void> {
    const r = rng(seed);
    // model[seq - 1]: what seq holds, or null once deleted.
    const model: Array<AppendInput | null> = [];
    const live = (seq: number): boolean => seq >= 1 && seq <= model.length && model[seq - 1] !== null;
    const matching = (filter: string | undefined): number[] => {
      const out: number[] = [];
      model.forEach((m, i) => {
        if (m !== null && (filter === undefined || subjectMatches(filter, m.subject))) out.push(i + 1);
      });
      return out;
    };
    let log = await makeLog();
    const check = (seq: number, m: StoredMessage | null, what: string): void => {
      const e = model[seq - 1];
      assert.ok(e !== null && e !== undefined, `${what}: seq ${seq} is not in the model (seed ${seed})`);
      assert.ok(m !== null, `${what}: seq ${seq} missing (seed ${seed})`);
      assert.equal(m.seq, seq, what);
      assert.equal(m.subject, e.subject, what);
      assert.ok(Buffer.from(e.data).equals(m.data), `${what}: payload of ${seq}`);
      assert.deepEqual(m.headers === null ? null : [...m.headers], e.headers ? [...e.headers] : null, `${what}: headers of ${seq}`);
      assert.deepEqual(m.key === null ? null : [...m.key], e.key ? [...e.key] : null, `${what}: key of ${seq}`);
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
    try {
      for (let op = 0; op < 500; op++) {
        const x = r();
        if (x < 0.4) {
          // A burst of concurrent appends: acks must come back in order with dense seqs.
          const n = 1 + Math.floor(r() * 20);
          const inputs: AppendInput[] = [];
          for (let i = 0; i < n; i++) {
            const size = Math.floor(r() * (r() < 0.1 ? 20_000 : 200));
            inputs.push({
              subject: pick(SUBJECTS),
              data: Buffer.alloc(size, Math.floor(r() * 256)),
              headers: r() < 0.3 ? Buffer.from("NATS/1.0\r\nA: b\r\n\r\n") : null,
              key: r() < 0.3 ? Buffer.from(`key-${op}`) : null,
            });
          }
          if (r() < 0.5) {
            const seqs = await Promise.all(inputs.map((i) => appendAsync(log, i)));
            assert.deepEqual(seqs, inputs.map((_, i) => model.length + 1 + i));
            model.push(...inputs);
          } else {
            // One run with one callback; the log copies the run's bytes at once, so the caller may reuse them.
            const run = runOf(inputs);
            const first = new Promise<number>((resolve, reject) => log.appendMany(run, (err, seq) => (err ? reject(err) : resolve(seq))));
            model.push(...inputs);
            run.source.fill(0xee);
            assert.equal(await first, model.length - n + 1, `appendMany of ${n} (seed ${seed})`);
          }
        } else if (x < 0.5 && model.length > 0) {
          const seq = 1 + Math.floor(r() * model.length);
          if (live(seq)) check(seq, await log.get(seq), "get");
          else assert.equal(await log.get(seq), null, `get of deleted ${seq}`);
        } else if (x < 0.58) {
          const after = Math.floor(r() * (model.length + 1));
          const filter = pick(FILTERS);
          const want = matching(filter).find((s) => s > after);
          const got = await log.next(after, filter);
          if (want === undefined) assert.equal(got, null, `next(${after}, ${filter})`);
          else check(want, got, `next(${after}, ${filter})`);
          assert.equal(log.pendingAfter(after, filter), matching(filter).filter((s) => s > after).length, `pendingAfter(${after}, ${filter})`);
        } else if (x < 0.66) {
          const from = 1 + Math.floor(r() * (model.length + 1));
          const filter = r() < 0.3 ? undefined : pick(FILTERS);
          const max = 1 + Math.floor(r() * 60);
          const want = matching(filter)
            .filter((s) => s >= from)
            .slice(0, max);
          const got = await log.scan(from, { filter, maxMessages: max });
          assert.deepEqual(
            got.map((m) => m.seq),
            want,
            `scan(${from}, ${filter}, ${max}) (seed ${seed})`,
          );
          for (const m of got) check(m.seq, m, "scan");
        } else if (x < 0.72) {
          const subject = pick(SUBJECTS);
          const seqs = matching(subject);
          const got = await log.lastBySubject(subject);
          if (seqs.length === 0) assert.equal(got, null);
          else check(seqs[seqs.length - 1], got, `lastBySubject(${subject})`);
          assert.equal(log.subjectCount(subject), seqs.length);
        } else if (x < 0.8 && model.length > 0) {
          const seq = 1 + Math.floor(r() * (model.length + 2));
          const was = live(seq);
          assert.equal(await log.delete(seq), was, `delete(${seq})`);
          if (was) model[seq - 1] = null;
        } else if (x < 0.83) {
          const filter = r() < 0.4 ? undefined : pick(FILTERS);
          const form = r();
          // upTo may lie past the end: an unfiltered purge then moves the log on to it.
          const opts = form < 0.33 ? { filter, upTo: 1 + Math.floor(r() * (model.length + 8)) } : form < 0.66 ? { filter, keep: Math.floor(r() * 30) } : { filter };
          let victims = matching(filter);
          if ("keep" in opts && opts.keep! > 0) victims = victims.length < opts.keep! ? [] : victims.slice(0, victims.length - opts.keep!);
          if ("upTo" in opts) victims = victims.filter((s) => s < opts.upTo!);
          assert.equal(await log.purge(opts), victims.length, `purge(${JSON.stringify(opts)}) (seed ${seed})`);
          for (const s of victims) model[s - 1] = null;
          if (filter === undefined && "upTo" in opts) while (model.length < opts.upTo! - 1) model.push(null);
        } else if (x < 0.88 && reopen !== null) {
          log = await reopen(log);
        } else {
          const st = log.state();
          const alive = matching(undefined);
          assert.equal(st.lastSeq, model.length);
          assert.equal(st.messages, alive.length);
          assert.equal(st.firstSeq, alive[0] ?? model.length + 1);
          assert.equal(st.subjects, new Set(alive.map((s) => model[s - 1]!.subject)).size);
          assert.equal(st.deleted, alive.length === 0 ? 0 : model.length - alive[0] + 1 - alive.length);
          const gone: number[] = [];
          for (let q = alive[0] ?? 1; alive.length > 0 && q <= model.length; q++) if (model[q - 1] === null) gone.push(q);
          assert.deepEqual(log.deletedSequences(1_000_000), gone, `deletedSequences (seed ${seed})`);
          assert.equal(await log.get(model.length + 1), null);
          assert.equal(await log.get(0), null);
        }
      }
      for (let seq = 1; seq <= model.length; seq++) {
        if (live(seq)) check(seq, await log.get(seq), "final sweep");
        else assert.equal(await log.get(seq), null, `final sweep: ${seq} was deleted`);
      }
    } finally {
      await log.close();
    }
  }

  test("file log, small segments, compaction and reopening along the way", async () => {
    const dir = tempDir();
    let compactions = 0;
    try {
      const open = (): Promise<MessageLog> => FileLog.open({ dir, maxSegmentBytes: 16 * 1024 });
      await run(open, async (log) => {
        const f = log as FileLog;
        // Let background compaction finish first; the next test closes in the middle of it.
        await f.settle();
        compactions += f.io.compactions;
        await log.close();
        return open();
      }, 20261123);
      assert.ok(segments(dir).length > 3, "several segments were rolled");
      assert.ok(compactions > 0, "compaction ran");
      assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".tmp")), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("file log, reopened without settling", async () => {
    const dir = tempDir();
    try {
      // Small batches: runs of appends split across them.
      const open = (): Promise<MessageLog> => FileLog.open({ dir, maxSegmentBytes: 8 * 1024, maxBatchBytes: 24 * 1024 });
      await run(open, async (log) => {
        await log.close();
        return open();
      }, 99);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("file log with every segment detail paged out as soon as it can be", async () => {
    const dir = tempDir();
    const budget = detailCache.budget;
    detailCache.budget = 0;
    try {
      let loads = 0;
      const open = (): Promise<MessageLog> => FileLog.open({ dir, maxSegmentBytes: 8 * 1024 });
      await run(open, async (log) => {
        loads += (log as FileLog).io.detailsLoaded;
        await log.close();
        return open();
      }, 4242);
      assert.ok(loads > 10, `details were read back from index files (${loads})`);
    } finally {
      detailCache.budget = budget;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("memory log", async () => {
    await run(async () => new MemoryLog(), null, 7);
  });
});

test("appendMany under discard new is refused as a whole, or stored at consecutive sequences", async () => {
  const dir = tempDir();
  try {
    for (const log of [await FileLog.open({ dir, limits: { maxMsgs: 5, discard: "new" } }), new MemoryLog({ limits: { maxMsgs: 5, discard: "new" } })] as MessageLog[]) {
      const many = (n: number): Promise<number> =>
        new Promise((resolve, reject) =>
          log.appendMany(
            runOf(Array.from({ length: n }, (_, i) => ({ subject: `s.${i}`, data: Buffer.from(`m${i}`) }))),
            (err, seq) => (err ? reject(err) : resolve(seq)),
          ),
        );
      assert.equal(await many(3), 1);
      await assert.rejects(many(3), /maximum messages exceeded/);
      assert.equal(log.state().messages, 3, "no part of a refused run is stored");
      assert.equal(await many(2), 4);
      assert.equal((await log.get(5))?.data.toString(), "m1");
      await log.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("file log", () => {
  test("group commit: concurrent appends share writes and syncs, acks in order", async () => {
    const dir = tempDir();
    const log = await FileLog.open({ dir });
    try {
      const seqs = await Promise.all(Array.from({ length: 2000 }, (_, i) => appendAsync(log, { subject: "g", data: Buffer.from(String(i)) })));
      assert.deepEqual(seqs, Array.from({ length: 2000 }, (_, i) => i + 1));
      assert.ok(log.io.syncs < 50, `2000 appends took ${log.io.syncs} fdatasyncs`);
      assert.ok(log.io.syncs <= log.io.batches, "one sync covers one or more batches");
      assert.equal((await log.get(1234))?.data.toString(), "1233");
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("time lookups find the first message at or after a time", async () => {
    const dir = tempDir();
    const log = await FileLog.open({ dir });
    try {
      await appendAsync(log, { subject: "t", data: Buffer.from("early") });
      const mark = (await log.get(1))!.time + 1;
      // Poll until the clock has moved past the first batch's time.
      while (Date.now() < mark) await new Promise((r) => setImmediate(r));
      await appendAsync(log, { subject: "t", data: Buffer.from("late") });
      assert.equal((await log.firstAtOrAfter(0))?.seq, 1);
      assert.equal((await log.firstAtOrAfter(mark))?.data.toString(), "late");
      assert.equal(await log.firstAtOrAfter(Date.now() + 60_000), null);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a record over the limit is refused and nothing else is affected", async () => {
    const dir = tempDir();
    const log = await FileLog.open({ dir, maxRecordBytes: 1024 });
    try {
      await assert.rejects(appendAsync(log, { subject: "big", data: Buffer.alloc(2000) }), /exceeds the limit/);
      assert.equal(await appendAsync(log, { subject: "small", data: Buffer.alloc(10) }), 1);
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  async function crashRounds(mode: "append" | "churn", rounds: number, seed: number, diag: (s: string) => void): Promise<void> {
    const dir = tempDir();
    const child = join(here, "helpers", "store-child.js");
    const r = rng(seed);
    let acked = 0;
    const deleted = new Set<number>();
    let compactions = 0;
    try {
      for (let round = 0; round < rounds; round++) {
        const proc = spawn(process.execPath, [child, dir, mode], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NAGARE_STORE_CHILD: "1" } });
        let out = "";
        let err = "";
        let ready = -1;
        let roundAcks = 0;
        proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
        const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
        // Kill after a random number of acks (0 .. ~2000), at whatever point the writer (or a compaction) is.
        const killAfter = Math.floor(r() * 2000);
        await new Promise<void>((resolve) => {
          proc.stdout.on("data", (d: Buffer) => {
            out += d.toString();
            let nl: number;
            while ((nl = out.indexOf("\n")) >= 0) {
              const line = out.slice(0, nl);
              out = out.slice(nl + 1);
              if (line.startsWith("ready ")) {
                ready = Number(line.slice(6));
                assert.ok(ready >= acked, `round ${round}: recovered to ${ready}, but ${acked} were acknowledged`);
              } else if (line.startsWith("ack ")) {
                acked = Math.max(acked, Number(line.slice(4)));
                roundAcks++;
              } else if (line.startsWith("del ")) deleted.add(Number(line.slice(4)));
              else if (line.startsWith("compactions ")) compactions += 1;
            }
            if (roundAcks >= killAfter) resolve();
          });
          void exited.then(() => resolve());
        });
        proc.kill("SIGKILL");
        await exited;
        assert.equal(err, "", `round ${round}: the writer complained`);
        assert.ok(ready >= 0, `round ${round}: the writer never became ready`);
      }
      const log = await FileLog.open({ dir });
      try {
        const st = log.state();
        diag(`${mode}: ${acked} acknowledged, ${deleted.size} deletes acknowledged, ${st.lastSeq} recovered, compactions seen in ${compactions} reports, over ${rounds} kills`);
        if (mode === "churn") assert.ok(compactions > 0, "the writer compacted segments while it was being killed");
        assert.ok(st.lastSeq >= acked, `lastSeq ${st.lastSeq} < acknowledged ${acked}`);
        assert.deepEqual(st.corrupt, []);
        for (let seq = 1; seq <= st.lastSeq; seq++) {
          const m = await log.get(seq);
          if (deleted.has(seq)) assert.equal(m, null, `seq ${seq} was deleted (acknowledged) but came back`);
          else if (mode === "append" || seq % 3 === 0 || seq > acked) {
            // Every acknowledged record that was not deleted is there, intact.
            const why = m === null && seq > acked ? null : mismatch(seq, m);
            assert.equal(why, null, why ?? "");
          } else if (m !== null) assert.equal(mismatch(seq, m), null);
        }
      } finally {
        await log.close();
      }
      assert.ok(acked > 0, "some appends were acknowledged");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test("acknowledged appends survive kill -9 of the writer, every time", async (t) => {
    await crashRounds("append", 12, Number(process.env.NAGARE_CRASH_SEED ?? 42), (s) => t.diagnostic(s));
  });

  test("kill -9 during deletes and compaction: acknowledged deletes stay deleted, the rest intact", async (t) => {
    await crashRounds("churn", 12, Number(process.env.NAGARE_CRASH_SEED ?? 43), (s) => t.diagnostic(s));
  });
});
