/**
 * The storage engine: model-based random operations against both stores,
 * group commit, torn tails, corruption in sealed segments, and acknowledged
 * appends surviving kill -9 of the writing process.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readdirSync, statSync, openSync, writeSync, readSync, closeSync, truncateSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { FileLog } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, type AppendInput, type MessageLog, type StoredMessage } from "../src/store/log.js";
import { crc32c } from "../src/store/crc32c.js";
import { subjectMatches } from "../src/subjects/subject.js";
import { expectedRecord, mismatch } from "./helpers/store-model.js";
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
});

describe("model-based: random operations compared with a plain array", () => {
  const SUBJECTS = ["a.b", "a.c", "x.y.z", "orders.1", "orders.2"];
  const FILTERS = ["a.*", "orders.>", "x.y.z", ">", "nope"];

  async function run(makeLog: () => Promise<MessageLog>, reopen: ((log: MessageLog) => Promise<MessageLog>) | null, seed: number): Promise<void> {
    const r = rng(seed);
    const model: AppendInput[] = [];
    let log = await makeLog();
    const check = (seq: number, m: StoredMessage | null, what: string): void => {
      const e = model[seq - 1];
      assert.ok(m !== null, `${what}: seq ${seq} missing (seed ${seed})`);
      assert.equal(m.seq, seq, what);
      assert.equal(m.subject, e.subject, what);
      assert.ok(Buffer.from(e.data).equals(m.data), `${what}: payload of ${seq}`);
      assert.deepEqual(m.headers === null ? null : [...m.headers], e.headers ? [...e.headers] : null, `${what}: headers of ${seq}`);
      assert.deepEqual(m.key === null ? null : [...m.key], e.key ? [...e.key] : null, `${what}: key of ${seq}`);
    };
    try {
      for (let op = 0; op < 400; op++) {
        const x = r();
        if (x < 0.5) {
          // A burst of concurrent appends: acks must come back in order with dense seqs.
          const n = 1 + Math.floor(r() * 20);
          const inputs: AppendInput[] = [];
          for (let i = 0; i < n; i++) {
            const size = Math.floor(r() * (r() < 0.1 ? 20_000 : 200));
            inputs.push({
              subject: SUBJECTS[Math.floor(r() * SUBJECTS.length)],
              data: Buffer.alloc(size, Math.floor(r() * 256)),
              headers: r() < 0.3 ? Buffer.from("NATS/1.0\r\nA: b\r\n\r\n") : null,
              key: r() < 0.3 ? Buffer.from(`key-${op}`) : null,
            });
          }
          const seqs = await Promise.all(inputs.map((i) => appendAsync(log, i)));
          assert.deepEqual(seqs, inputs.map((_, i) => model.length + 1 + i));
          model.push(...inputs);
        } else if (x < 0.7 && model.length > 0) {
          const seq = 1 + Math.floor(r() * model.length);
          check(seq, await log.get(seq), "get");
        } else if (x < 0.8) {
          const after = Math.floor(r() * (model.length + 1));
          const filter = FILTERS[Math.floor(r() * FILTERS.length)];
          const want = model.findIndex((m, i) => i + 1 > after && subjectMatches(filter, m.subject));
          const got = await log.next(after, filter);
          if (want < 0) assert.equal(got, null, `next(${after}, ${filter})`);
          else check(want + 1, got, `next(${after}, ${filter})`);
        } else if (x < 0.9) {
          const subject = SUBJECTS[Math.floor(r() * SUBJECTS.length)];
          let last = -1;
          let count = 0;
          model.forEach((m, i) => {
            if (m.subject === subject) {
              last = i;
              count++;
            }
          });
          const got = await log.lastBySubject(subject);
          if (last < 0) assert.equal(got, null);
          else check(last + 1, got, `lastBySubject(${subject})`);
          assert.equal(log.subjectCount(subject), count);
        } else if (x < 0.95 && reopen !== null) {
          log = await reopen(log);
        } else {
          assert.equal(log.state().lastSeq, model.length);
          assert.equal(log.state().messages, model.length);
          assert.equal(await log.get(model.length + 1), null);
          assert.equal(await log.get(0), null);
        }
      }
      for (let seq = 1; seq <= model.length; seq++) check(seq, await log.get(seq), "final sweep");
    } finally {
      await log.close();
    }
  }

  test("file log, small segments, reopened along the way", async () => {
    const dir = tempDir();
    try {
      const open = (): Promise<MessageLog> => FileLog.open({ dir, maxSegmentBytes: 16 * 1024 });
      await run(open, async (log) => {
        await log.close();
        return open();
      }, 20261123);
      assert.ok(segments(dir).length > 3, "several segments were rolled");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("memory log", async () => {
    await run(async () => new MemoryLog(), null, 7);
  });
});

describe("file log", () => {
  test("group commit: concurrent appends share writes and syncs, acks in order", async () => {
    const dir = tempDir();
    const log = await FileLog.open({ dir });
    try {
      const seqs = await Promise.all(Array.from({ length: 2000 }, (_, i) => appendAsync(log, { subject: "g", data: Buffer.from(String(i)) })));
      assert.deepEqual(seqs, Array.from({ length: 2000 }, (_, i) => i + 1));
      assert.ok(log.io.syncs < 50, `2000 appends took ${log.io.syncs} fdatasyncs`);
      assert.equal(log.io.syncs, log.io.batches);
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

  test("a torn tail is cut on recovery, and appends continue after it", async () => {
    const dir = tempDir();
    try {
      let log = await FileLog.open({ dir });
      for (let seq = 1; seq <= 50; seq++) await appendAsync(log, expectedRecord(seq));
      await log.close();
      const seg = join(dir, segments(dir)[0]);
      const size = statSync(seg).size;
      // Half a batch at the end, as a crash between write and sync can leave.
      const tail = Buffer.alloc(100, 0xab);
      tail.writeUInt32LE(500, 0);
      appendFileSync(seg, tail);
      const warnings: string[] = [];
      log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      assert.equal(log.state().lastSeq, 50);
      assert.equal(statSync(seg).size, size);
      assert.match(warnings.join("\n"), /torn tail/);
      for (let seq = 1; seq <= 50; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
      assert.equal(await appendAsync(log, expectedRecord(51)), 51);
      await log.close();

      // A tail cut in the middle of the last batch loses only that unacknowledged batch.
      truncateSync(seg, statSync(seg).size - 3);
      log = await FileLog.open({ dir });
      assert.equal(log.state().lastSeq, 50);
      await log.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a flipped bit in a sealed segment is reported, the rest is served", async () => {
    const dir = tempDir();
    try {
      let log = await FileLog.open({ dir, maxSegmentBytes: 4096 });
      for (let seq = 1; seq <= 200; seq++) await appendAsync(log, expectedRecord(seq));
      await log.close();
      const names = segments(dir);
      assert.ok(names.length >= 4);
      const victim = join(dir, names[1]);
      const firstOfVictim = Number(names[1].slice(0, 20));
      const firstOfNext = Number(names[2].slice(0, 20));
      // Flip one bit inside the victim's first batch.
      const fd = openSync(victim, "r+");
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, 40);
      b[0] ^= 0x10;
      writeSync(fd, b, 0, 1, 40);
      closeSync(fd);

      const warnings: string[] = [];
      log = await FileLog.open({ dir, onWarning: (w) => warnings.push(w) });
      try {
        const st = log.state();
        assert.equal(st.corrupt.length, 1);
        assert.equal(st.corrupt[0].segment, names[1]);
        assert.match(st.corrupt[0].reason, /checksum/);
        assert.ok(warnings.length >= 1);
        assert.equal(st.lastSeq, 200);
        assert.equal(await log.get(firstOfVictim), null, "the corrupt record is not served");
        for (let seq = 1; seq < firstOfVictim; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        for (let seq = firstOfNext; seq <= 200; seq++) assert.equal(mismatch(seq, await log.get(seq)), null);
        // A scan steps over the quarantined range.
        assert.equal((await log.next(firstOfVictim - 1))?.seq, firstOfNext);
        assert.equal(await appendAsync(log, expectedRecord(201)), 201);
      } finally {
        await log.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("acknowledged appends survive kill -9 of the writer, every time", async (t) => {
    const dir = tempDir();
    const child = join(here, "helpers", "store-child.js");
    const r = rng(Number(process.env.NAGARE_CRASH_SEED ?? 42));
    let acked = 0;
    try {
      for (let round = 0; round < 12; round++) {
        const proc = spawn(process.execPath, [child, dir], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NAGARE_STORE_CHILD: "1" } });
        let out = "";
        let err = "";
        let ready = -1;
        let roundAcks = 0;
        proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
        const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
        // Kill after a random number of acks (0 .. ~2000), at whatever point the writer is.
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
                const seq = Number(line.slice(4));
                acked = Math.max(acked, seq);
                roundAcks++;
              }
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
        t.diagnostic(`${acked} acknowledged, ${st.lastSeq} recovered, over 12 kills`);
        assert.ok(st.lastSeq >= acked, `lastSeq ${st.lastSeq} < acknowledged ${acked}`);
        assert.deepEqual(st.corrupt, []);
        for (let seq = 1; seq <= st.lastSeq; seq++) {
          const why = mismatch(seq, await log.get(seq));
          assert.equal(why, null, why ?? "");
        }
      } finally {
        await log.close();
      }
      assert.ok(acked > 0, "some appends were acknowledged");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
