/**
 * MessageLog.truncateFrom: what a replica that becomes a follower uses to cut
 * what it has beyond the log it shares with its leader. For seeded logs of
 * plain, multi-message and foreign batches, gaps, deletes, purges and
 * several segments, a log truncated at every sequence answers every query as
 * a log that only ever had what it keeps; appends go on at the returned
 * sequence; the file log says the same after reopening, with and without
 * index files; and a crash at any step of a truncation leaves, on reopen,
 * the log before it or the log after it.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { FileLog } from "../src/store/file-log.js";
import { MemoryLog } from "../src/store/memory-log.js";
import { isForeign, runOf, type AppendInput, type MessageLog, type StoredItem } from "../src/store/log.js";
import type { OpenMode, StoreFile, StoreFs } from "../src/util/fs.js";
import { SimFs } from "./helpers/sim-fs.js";
import { rng } from "./helpers/random.js";
import { TOY_FORMAT, toy } from "./helpers/toy-foreign.js";

const DIR = "/store/p0";
const SUBJECTS = ["s.0", "s.1", "s.2", "t"];


type Op =
  | { kind: "copy"; first: number; time: number; records: AppendInput[] }
  | { kind: "foreign"; first: number; time: number; values: string[] }
  | { kind: "delete"; seq: number }
  | { kind: "purge"; upTo: number };

function cb(resolve: (n: number) => void, reject: (e: Error) => void) {
  return (err: Error | null, seq: number) => (err ? reject(err) : resolve(seq));
}

function copyRun(log: MessageLog, first: number, time: number, records: AppendInput[]): Promise<number> {
  return new Promise((resolve, reject) => log.appendCopy(first, time, runOf(records), cb(resolve, reject)));
}

function copyForeign(log: MessageLog, first: number, time: number, values: string[]): Promise<number> {
  return new Promise((resolve, reject) =>
    log.appendCopy(first, time, { format: TOY_FORMAT, subject: "t", count: values.length, bytes: Buffer.from(JSON.stringify(values)) }, cb(resolve, reject)),
  );
}

/** A seeded history: batches at their sequences and times (some skipping ahead: gap batches), deletes and a purge. */
function script(seed: number): Op[] {
  const r = rng(seed);
  const ops: Op[] = [];
  const t0 = 1_700_000_000_000;
  let next = 1;
  let time = t0;
  const stored: number[] = [];
  for (let k = 0; k < 30; k++) {
    const x = r();
    time += Math.floor(r() * 3); // equal times too: batches of one time side by side
    if (r() < 0.15) next += 1 + Math.floor(r() * 3);
    if (x < 0.55) {
      const n = 1 + Math.floor(r() * 4);
      const records: AppendInput[] = [];
      for (let i = 0; i < n; i++) {
        const seq = next + i;
        records.push({
          subject: SUBJECTS[Math.floor(r() * 3)],
          data: Buffer.from(`m${seq}-${"x".repeat(Math.floor(r() * 40))}`),
          key: r() < 0.3 ? Buffer.from(`k${seq}`) : null,
          headers: r() < 0.2 ? Buffer.from(`NATS/1.0\r\nN: ${seq}\r\n\r\n`) : null,
        });
        stored.push(seq);
      }
      ops.push({ kind: "copy", first: next, time, records });
      next += n;
    } else if (x < 0.8) {
      const n = 1 + Math.floor(r() * 4);
      const values = Array.from({ length: n }, (_, i) => `f${next + i}`);
      for (let i = 0; i < n; i++) stored.push(next + i);
      ops.push({ kind: "foreign", first: next, time, values });
      next += n;
    } else if (x < 0.95 && stored.length > 0) {
      ops.push({ kind: "delete", seq: stored[Math.floor(r() * stored.length)] });
    } else if (stored.length > 0 && r() < 0.5) {
      ops.push({ kind: "purge", upTo: 1 + Math.floor(r() * Math.min(4, next)) });
    } else {
      // Everything, and the log moves on past its end (a tombstone batch names the next sequence).
      next += 1 + Math.floor(r() * 3);
      ops.push({ kind: "purge", upTo: next });
    }
  }
  return ops;
}

async function play(log: MessageLog, ops: readonly Op[]): Promise<void> {
  for (const op of ops) {
    if (op.kind === "copy") assert.equal(await copyRun(log, op.first, op.time, op.records), op.first);
    else if (op.kind === "foreign") assert.equal(await copyForeign(log, op.first, op.time, op.values), op.first);
    else if (op.kind === "delete") await log.delete(op.seq);
    else await log.purge({ upTo: op.upTo });
  }
}

/** Whether `seq` is removed by the history (a delete or a purge below it). */
function removedIn(ops: readonly Op[], seq: number): boolean {
  return ops.some((op) => (op.kind === "delete" && op.seq === seq) || (op.kind === "purge" && seq < op.upTo));
}

/**
 * The history of a log that only ever had what a truncation from `cut`
 * keeps, and the sequence the truncation reports: a foreign batch across
 * `cut` with a live record below it goes whole; one of the log's own
 * records keeps its records below the cut.
 */
function kept(ops: readonly Op[], cut: number, lastSeq: number): { ops: Op[]; next: number } {
  let next = Math.min(cut, lastSeq + 1);
  for (const op of ops) {
    if (op.kind !== "foreign" || op.first >= next || op.first + op.values.length <= next) continue;
    let live = false;
    for (let s = op.first; s < next; s++) if (!removedIn(ops, s)) live = true;
    if (live) next = op.first;
  }
  const out: Op[] = [];
  for (const op of ops) {
    if (op.kind === "copy" && op.first < next) out.push({ ...op, records: op.records.slice(0, next - op.first) });
    else if (op.kind === "foreign" && op.first + op.values.length <= next) out.push(op);
    else if (op.kind === "delete" && op.seq < next) out.push(op);
    else if (op.kind === "purge") out.push({ kind: "purge", upTo: Math.min(op.upTo, next) });
  }
  return { ops: out, next };
}

async function reference(log: MessageLog, ops: readonly Op[], next: number): Promise<void> {
  await play(log, ops);
  // A log whose last sequences are gone still ends where the truncated one does.
  if (log.state().lastSeq + 1 < next) await copyRun(log, next, 0, []);
}

const text = (m: StoredItem): string =>
  isForeign(m)
    ? `batch ${m.firstSeq}+${m.count} @${m.time} ${m.subject} ${m.bytes.toString()}`
    : `${m.seq} @${m.time} ${m.subject} k=${m.key?.toString() ?? "-"} h=${m.headers?.toString() ?? "-"} ${m.data.toString()}`;

/** Everything a reader can ask a log, from memory and from its files. */
async function picture(log: MessageLog): Promise<unknown> {
  const st = log.state();
  const upTo = st.lastSeq + 2;
  const per: Record<string, unknown> = {};
  for (const s of [...SUBJECTS, "s.*", ">"]) {
    per[s] = {
      count: log.subjectCount(s),
      lastSeq: log.lastSeqOf(s),
      last: s.includes("*") || s === ">" ? null : ((m) => (m === null ? null : text(m)))(await log.lastBySubject(s)),
      lastPer: log.lastPerSubject(s),
      counts: [...log.subjectCounts(s)].sort(),
      scan: (await log.scan(1, { filter: s, maxMessages: 10_000 })).map(text),
      next: (await Promise.all([0, 5, 11].map((a) => log.next(a, s)))).map((m) => m?.seq ?? 0),
      pending: [0, 3, 9, st.lastSeq].map((a) => log.pendingAfter(a, s)),
    };
  }
  const has: number[] = [];
  const gets: string[] = [];
  for (let s = 1; s <= upTo; s++) {
    if (log.has(s)) has.push(s);
    const m = await log.get(s);
    if (m !== null) gets.push(text(m));
  }
  const times: number[] = [];
  for (const m of await log.scan(1, { maxMessages: 10_000 })) times.push(m.time);
  return {
    state: { first: st.firstSeq, last: st.lastSeq, messages: st.messages, bytes: st.bytes, subjects: st.subjects, deleted: st.deleted, lost: st.lost, corrupt: st.corrupt, error: st.error },
    storedBytes: log.storedBytes,
    deleted: log.deletedSequences(10_000),
    items: (await log.scanStored(1, { maxMessages: 10_000 })).map(text),
    per,
    has,
    gets,
    atOrAfter: await Promise.all(times.map(async (t) => (await log.firstAtOrAfter(t))?.seq ?? 0)),
  };
}

/** After a truncation, appends of every kind go on at the reported sequence. */
async function appendsAfter(log: MessageLog, next: number, time: number): Promise<void> {
  const one = await new Promise<number>((resolve, reject) => log.append({ subject: "a.1", data: Buffer.from("one") }, cb(resolve, reject)));
  assert.equal(one, next);
  const many = await new Promise<number>((resolve, reject) => log.appendMany(runOf([{ subject: "a.2", data: Buffer.from("two") }, { subject: "a.3", data: Buffer.from("three") }]), cb(resolve, reject)));
  assert.equal(many, next + 1);
  const batch = await new Promise<number>((resolve, reject) => log.appendBatch({ format: TOY_FORMAT, subject: "t", count: 2, bytes: Buffer.from(JSON.stringify(["b1", "b2"])) }, cb(resolve, reject)));
  assert.equal(batch, next + 3);
  assert.equal(await copyRun(log, next + 5, Math.max(time, Date.now()), [{ subject: "a.4", data: Buffer.from("four") }]), next + 5);
  assert.equal(log.state().lastSeq, next + 5);
  assert.deepEqual((await log.scan(next)).map((m) => `${m.seq} ${m.data}`), [`${next} one`, `${next + 1} two`, `${next + 2} three`, `${next + 3} b1`, `${next + 4} b2`, `${next + 5} four`]);
}

const SEEDS = [11, 12, 13, 14];

/** How often the cuts of the seeded histories meet each case: the tests below must meet them all. */
function coverage(ops: readonly Op[], cut: number, last: number, seen: Map<string, number>): void {
  const note = (k: string): void => void seen.set(k, (seen.get(k) ?? 0) + 1);
  const { next } = kept(ops, cut, last);
  if (next < Math.min(cut, last + 1)) note("foreign batch cut whole");
  for (const op of ops) {
    if (op.kind === "foreign" && op.first < cut && op.first + op.values.length > cut && next === cut) note("foreign batch across the cut, nothing live below");
    if (op.kind === "copy" && op.first < cut && op.first + op.records.length > cut) note("batch of several split");
    if (op.kind === "purge" && op.upTo > cut && op.upTo > 4) note("cut below a purge that moved the log on");
    if (op.kind === "delete" && op.seq < cut) note("delete kept");
  }
  if (cut > last + 1) note("cut past the end");
}

test("memory log: truncation at every sequence equals a log that only had what it keeps", async (t) => {
  const seen = new Map<string, number>();
  for (const seed of SEEDS) {
    const ops = script(seed);
    const probe = new MemoryLog({ foreign: toy });
    await play(probe, ops);
    const last = probe.state().lastSeq;
    for (let cut = 1; cut <= last + 2; cut++) {
      const log = new MemoryLog({ foreign: toy });
      await play(log, ops);
      const want = kept(ops, cut, last);
      coverage(ops, cut, last, seen);
      const removals = log.removals;
      const messages = log.state().messages;
      assert.equal(await log.truncateFrom(cut), want.next, `seed ${seed} cut ${cut}`);
      if (log.state().messages < messages) assert.ok(log.removals > removals, "removals tell that counts went stale");
      const ref = new MemoryLog({ foreign: toy });
      await reference(ref, want.ops, want.next);
      assert.deepEqual(await picture(log), await picture(ref), `seed ${seed} cut ${cut}`);
      await appendsAfter(log, want.next, ops.reduce((t, op) => ("time" in op ? Math.max(t, op.time) : t), 0));
    }
  }
  t.diagnostic(JSON.stringify(Object.fromEntries(seen)));
  assert.equal(seen.size, 6, `every case met: ${[...seen.keys()].join(", ")}`);
});

function openSim(fs: StoreFs, dir = DIR, sync: "always" | "never" = "always"): Promise<FileLog> {
  return FileLog.open({ dir, fs, foreign: toy, maxSegmentBytes: 400, sync });
}

test("file log: truncation at every sequence equals a log that only had what it keeps, also reopened with and without index files", async (t) => {
  let compactions = 0;
  for (const seed of SEEDS) {
    const ops = script(seed);
    let fs = new SimFs();
    await fs.mkdirp(DIR);
    const probe = await openSim(fs);
    await play(probe, ops);
    const last = probe.state().lastSeq;
    await probe.close();
    for (let cut = 1; cut <= last + 2; cut++) {
      fs = new SimFs();
      await fs.mkdirp(DIR);
      // A third of the time without syncs: what the cut keeps is made durable by the truncation itself.
      const sync = cut % 3 === 0 ? "never" : "always";
      let log = await openSim(fs, DIR, sync);
      await play(log, ops);
      if (cut === 1) assert.ok(fs.list(DIR).filter((n) => n.endsWith(".seg")).length > 2, "several segments");
      // Half the time with index files written, so that the cut segment and later ones have some.
      if (cut % 2 === 0) await log.settle();
      compactions += log.io.compactions;
      const want = kept(ops, cut, last);
      assert.equal(await log.truncateFrom(cut), want.next, `seed ${seed} cut ${cut}`);
      const ref = await openSim(fs, "/store/ref");
      await reference(ref, want.ops, want.next);
      const expected = await picture(ref);
      await ref.close();
      assert.deepEqual(await picture(log), expected, `seed ${seed} cut ${cut}`);
      await log.close();
      log = await openSim(fs, DIR, sync);
      assert.deepEqual(await picture(log), expected, `seed ${seed} cut ${cut}, reopened`);
      await log.close();
      for (const n of fs.list(DIR)) if (n.endsWith(".idx")) await fs.remove(`${DIR}/${n}`);
      log = await openSim(fs, DIR, sync);
      assert.deepEqual(await picture(log), expected, `seed ${seed} cut ${cut}, reopened without index files`);
      await appendsAfter(log, want.next, Date.now());
      await log.close();
    }
  }
  t.diagnostic(`${compactions} compactions before the cuts`);
  assert.ok(compactions > 0, "some cuts meet compacted segments");
});

test("file log: an append queued when a truncation starts is written after it, at the new end", async () => {
  const fs = new SimFs();
  await fs.mkdirp(DIR);
  const log = await openSim(fs);
  for (let i = 1; i <= 10; i++) await new Promise<number>((resolve, reject) => log.append({ subject: "s.0", data: Buffer.from(`m${i}`) }, cb(resolve, reject)));
  await log.settle(); // the writer idle: the append below is queued, not under way, when the truncation starts
  const queued = new Promise<number>((resolve, reject) => log.append({ subject: "s.1", data: Buffer.from("late") }, cb(resolve, reject)));
  assert.equal(await log.truncateFrom(5), 5);
  assert.equal(await queued, 5);
  assert.deepEqual((await log.scan(1)).map((m) => m.data.toString()), ["m1", "m2", "m3", "m4", "late"]);
  assert.equal(log.subjectCount("s.0"), 4);
  await log.close();
  await assert.rejects(log.truncateFrom(2), /closed/);
});

test("memory log: truncation below the first sequence leaves an empty log that goes on there", async () => {
  const log = new MemoryLog({ foreign: toy });
  for (let i = 1; i <= 10; i++) await new Promise<number>((resolve, reject) => log.append({ subject: "s.0", data: Buffer.from(`m${i}`) }, cb(resolve, reject)));
  await log.purge({ upTo: 8 });
  assert.equal(await log.truncateFrom(3), 3);
  const st = log.state();
  assert.deepEqual([st.firstSeq, st.lastSeq, st.messages, st.bytes, st.subjects], [3, 2, 0, 0, 0]);
  await appendsAfter(log, 3, 0);
  await assert.rejects(log.truncateFrom(0), /cannot truncate/);
});

/**
 * A disk that loses power at its `at`-th change (a write, truncate, sync,
 * open, rename or removal) once armed: what survives is the simulated disk's
 * crash image (synced state plus a seeded, possibly torn, part of the rest).
 * With `failOnly`, that change fails instead and the disk goes on working.
 */
class CrashingFs implements StoreFs {
  armed = false;
  count = 0;
  survivor: SimFs | null = null;
  /** The change fails with EIO once and the disk goes on working (no power loss). */
  failOnly = false;
  private failed = false;

  constructor(
    private readonly inner: SimFs,
    private readonly at: number,
    private readonly random: () => number,
  ) {}

  step(): void {
    if (!this.armed || this.survivor !== null || this.failed) return;
    if (++this.count === this.at && this.failOnly) {
      this.failed = true;
      throw Object.assign(new Error("EIO: simulated failure"), { code: "EIO" });
    }
    if (this.count === this.at) {
      this.survivor = this.inner.crash(this.random);
      throw Object.assign(new Error("EIO: simulated crash"), { code: "EIO" });
    }
  }

  async open(path: string, mode: OpenMode): Promise<StoreFile> {
    this.step();
    const f = await this.inner.open(path, mode);
    const step = (): void => this.step();
    return {
      read: (b, o, l, p) => f.read(b, o, l, p),
      write: async (b, o, l, p) => (step(), f.write(b, o, l, p)),
      writev: async (bs, p) => (step(), f.writev(bs, p)),
      truncate: async (n) => (step(), f.truncate(n)),
      datasync: async () => (step(), f.datasync()),
      size: () => f.size(),
      close: () => f.close(),
    };
  }
  readdir = (d: string) => this.inner.readdir(d);
  mkdirp = (d: string) => this.inner.mkdirp(d);
  rename = async (a: string, b: string) => (this.step(), this.inner.rename(a, b));
  remove = async (p: string) => (this.step(), this.inner.remove(p));
  syncDir = async (d: string) => (this.step(), this.inner.syncDir(d));
  readFile = (p: string) => this.inner.readFile(p);
  mtime = (p: string) => this.inner.mtime(p);
  readSync = (p: string, pos: number, len: number) => this.inner.readSync(p, pos, len);
}

test("file log: a crash at any step of a truncation leaves the log before it or the log after it", async () => {
  let before = 0;
  let after = 0;
  for (const seed of [21, 22]) {
    const ops = script(seed);
    // Written, closed (index files, a marker batch) and reopened: nothing happens in the background.
    const setup = async (fs: StoreFs): Promise<FileLog> => {
      await openSim(fs).then(async (log) => {
        await play(log, ops);
        await log.close();
      });
      return openSim(fs);
    };
    const newDisk = async (): Promise<SimFs> => {
      const fs = new SimFs();
      await fs.mkdirp(DIR);
      return fs;
    };
    const probe = await setup(await newDisk());
    const last = probe.state().lastSeq;
    await probe.close();
    for (const cut of [Math.max(1, last - 6), Math.floor(last / 2), 2]) {
      // The log before and after, and how many changes the truncation makes to the disk.
      const counting = new CrashingFs(await newDisk(), Infinity, Math.random);
      const ref = await setup(counting);
      const wantBefore = await picture(ref);
      counting.armed = true;
      await ref.truncateFrom(cut);
      const steps = counting.count;
      const wantAfter = await picture(ref);
      await ref.close();
      assert.ok(steps > 5, `the truncation makes changes (${steps})`);
      for (let at = 1; at <= steps; at++) {
        for (let variant = 0; variant < 3; variant++) {
          const crashing = new CrashingFs(await newDisk(), at, rng(seed * 1000 + at * 10 + variant));
          const log = await setup(crashing);
          crashing.armed = true;
          await log.truncateFrom(cut).then(
            () => assert.fail(`seed ${seed} cut ${cut}: the crash at change ${at} of ${steps} did not happen`),
            () => {},
          );
          assert.ok(crashing.survivor !== null);
          const reopened = await openSim(crashing.survivor);
          const got = await picture(reopened);
          if (isDeepStrictEqual(got, wantAfter)) after++;
          else {
            assert.deepEqual(got, wantBefore, `seed ${seed} cut ${cut}: a crash at change ${at} of ${steps} left neither the log before nor the one after`);
            before++;
          }
          // Whatever it left, the log takes appends at its end.
          const next = reopened.state().lastSeq + 1;
          assert.equal(await new Promise<number>((resolve, reject) => reopened.append({ subject: "z", data: Buffer.from("z") }, cb(resolve, reject))), next);
          await reopened.close();
        }
      }
    }
  }
  assert.ok(before > 0 && after > 0, `crashes left both outcomes (${before} before, ${after} after)`);
});

test("file log: a storage error at any step of a truncation is sticky, and the reopen leaves the log before or after", async () => {
  const ops = script(23);
  let before = 0;
  let after = 0;
  const open = (fs: StoreFs): Promise<FileLog> => FileLog.open({ dir: DIR, fs, foreign: toy, maxSegmentBytes: 400, reopenDelayMs: 5 });
  const setup = async (fs: StoreFs): Promise<FileLog> => {
    const first = await open(fs);
    await play(first, ops);
    await first.close();
    return open(fs);
  };
  const newDisk = async (): Promise<SimFs> => {
    const fs = new SimFs();
    await fs.mkdirp(DIR);
    return fs;
  };
  const cut = 9;
  const counting = new CrashingFs(await newDisk(), Infinity, Math.random);
  const ref = await setup(counting);
  const wantBefore = await picture(ref);
  counting.armed = true;
  await ref.truncateFrom(cut);
  const steps = counting.count;
  const wantAfter = await picture(ref);
  await ref.close();
  for (let at = 1; at <= steps; at++) {
    const failing = new CrashingFs(await newDisk(), at, Math.random);
    failing.failOnly = true;
    const log = await setup(failing);
    failing.armed = true;
    await assert.rejects(log.truncateFrom(cut), /storage failed/);
    assert.match(log.state().error ?? "", /EIO/);
    await assert.rejects(new Promise((resolve, reject) => log.append({ subject: "z", data: Buffer.from("z") }, cb(resolve, reject))), /storage failed/);
    // The log reopens itself from the disk (which works again): the truncation done, or not begun.
    const deadline = Date.now() + 10_000;
    while (log.state().error !== null) {
      if (Date.now() > deadline) assert.fail(`change ${at} of ${steps}: the log never reopened`);
      await new Promise((r) => setImmediate(r));
    }
    const got = await picture(log);
    if (isDeepStrictEqual(got, wantAfter)) after++;
    else {
      assert.deepEqual(got, wantBefore, `a failure at change ${at} of ${steps} left neither the log before nor the one after`);
      before++;
    }
    await log.close();
  }
  assert.ok(before > 0 && after > 0, `failures left both outcomes (${before} before, ${after} after)`);
});
