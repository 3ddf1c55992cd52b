/**
 * Durability against a disk that forgets: a seeded model test of the file
 * log on a simulated disk (test/helpers/sim-fs.ts) that, at each simulated
 * power loss, keeps only what was synced plus a random, possibly torn,
 * selection of the rest. kill -9 keeps the page cache and cannot catch a
 * missing fsync; this can. After every crash the log is reopened and checked:
 *
 * - every acknowledged append is there, intact, at its sequence, unless an
 *   acknowledged delete or purge removed it; nothing removed comes back;
 * - nothing is there that was not appended, no append is there twice, and
 *   appends keep their order;
 * - no sequence that was acknowledged or seen is handed out again;
 * - a crash alone never loses an acknowledged message (nothing in `lost`
 *   may be acknowledged);
 * - a truncation (truncateFrom) removes every sequence from its cut and
 *   hands them out again; one a crash interrupts happened wholly or not at
 *   all.
 *
 * NAGARE_SIM_SEED replays one seed; NAGARE_SIM_SEEDS runs more of them.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { FileLog } from "../src/store/file-log.js";
import { detailCache } from "../src/store/paged-index.js";
import type { AppendInput, MessageLog, StoredMessage } from "../src/store/log.js";
import { runOf } from "../src/store/log.js";
import { SimFs } from "./helpers/sim-fs.js";
import { rng } from "./helpers/random.js";

const DIR = "/store/p0";

/** Append number `id`: its content names it, so that whatever is read back says which append it was. */
function input(id: number, r: () => number): AppendInput {
  const size = 8 + Math.floor(r() * (r() < 0.1 ? 3000 : 120));
  const data = Buffer.alloc(size, id & 0xff);
  data.writeUInt32LE(id, 0);
  data.writeUInt32LE(size, 4);
  return { subject: `sim.${id % 3}`, data, headers: id % 4 === 0 ? Buffer.from(`NATS/1.0\r\nId: ${id}\r\n\r\n`) : null, key: id % 5 === 0 ? Buffer.from(`k${id}`) : null };
}

function idOf(m: StoredMessage): number {
  return m.data.readUInt32LE(0);
}

function same(a: AppendInput, m: StoredMessage): boolean {
  return (
    a.subject === m.subject &&
    Buffer.from(a.data).equals(m.data) &&
    (a.headers ? m.headers !== null && Buffer.from(a.headers).equals(m.headers) : m.headers === null) &&
    (a.key ? m.key !== null && Buffer.from(a.key).equals(m.key) : m.key === null)
  );
}

async function readAll(log: MessageLog): Promise<StoredMessage[]> {
  const out: StoredMessage[] = [];
  for (let from = 1; ; ) {
    const got = await log.scan(from, { maxMessages: 500 });
    if (got.length === 0) return out;
    out.push(...got);
    from = got[got.length - 1].seq + 1;
  }
}

async function runSeed(seed: number, steps: number): Promise<{ crashes: number; acked: number; truncations: number }> {
  const r = rng(seed);
  let fs = new SimFs();
  await fs.mkdirp(DIR);
  const warnings: string[] = [];
  const open = (): Promise<FileLog> =>
    FileLog.open({ dir: DIR, fs, maxSegmentBytes: 8 * 1024, maxBatchBytes: 4 * 1024, compactBelow: 0.5, onWarning: (w) => warnings.push(w) });
  let log = await open();
  let epoch = 0; // callbacks from before a crash are ignored: that log is gone

  const inputs = new Map<number, AppendInput>();
  /** seq → append id, for appends acknowledged or seen after a crash (durable either way). */
  const durable = new Map<number, number>();
  /** Sequences whose removal was acknowledged. */
  const removed = new Set<number>();
  /** Sequences whose removal may have happened (in flight at a crash). */
  const maybeRemoved = new Set<number>();
  /** Append ids that will never appear: not there after a crash. */
  const vanished = new Set<number>();
  let nextId = 1;
  let highestSeq = 0;
  let inflight = 0;
  let crashes = 0;
  let truncations = 0;
  const fail = (msg: string): never => assert.fail(`seed ${seed}: ${msg}${process.env.NAGARE_SIM_DEBUG ? "\n" + warnings.join("\n") : ""}`);

  const append = (): void => {
    const id = nextId++;
    const inp = input(id, r);
    inputs.set(id, inp);
    const e = epoch;
    inflight++;
    log.append(inp, (err, seq) => {
      if (e !== epoch) return;
      inflight--;
      if (err !== null) return fail(`append ${id} failed: ${err.message}`);
      durable.set(seq, id);
      highestSeq = Math.max(highestSeq, seq);
    });
  };
  const appendRun = (): void => {
    const n = 1 + Math.floor(r() * 6);
    const ids: number[] = [];
    const inps: AppendInput[] = [];
    for (let i = 0; i < n; i++) {
      const id = nextId++;
      const inp = input(id, r);
      inputs.set(id, inp);
      ids.push(id);
      inps.push(inp);
    }
    const e = epoch;
    inflight++;
    log.appendMany(runOf(inps), (err, first) => {
      if (e !== epoch) return;
      inflight--;
      if (err !== null) return fail(`run failed: ${err.message}`);
      ids.forEach((id, i) => durable.set(first + i, id));
      highestSeq = Math.max(highestSeq, first + n - 1);
    });
  };
  const quiesce = async (): Promise<void> => {
    for (let i = 0; inflight > 0; i++) {
      if (i > 100_000) fail("operations never completed");
      await new Promise((res) => setImmediate(res));
    }
  };

  const remove = async (): Promise<void> => {
    const seqs = [...durable.keys()].filter((s) => !removed.has(s));
    if (seqs.length === 0) return;
    const e = epoch;
    if (r() < 0.8) {
      const seq = seqs[Math.floor(r() * seqs.length)];
      maybeRemoved.add(seq);
      inflight++;
      log.delete(seq).then(
        () => {
          if (e !== epoch) return;
          inflight--;
          removed.add(seq);
        },
        (err: Error) => (e === epoch ? fail(`delete ${seq}: ${err.message}`) : undefined),
      );
    } else {
      // Everything below upTo was sequenced before the purge was asked for; past the end, the log moves on
      // to it, and appends still in flight would fall below it: those wait first.
      let upTo = 1 + Math.floor(r() * (highestSeq + 6));
      if (upTo > highestSeq + 1) {
        await quiesce();
        upTo = Math.max(upTo, highestSeq + 2);
      }
      const below = [...durable.keys()].filter((s) => s < upTo);
      for (const s of below) maybeRemoved.add(s);
      inflight++;
      log.purge({ upTo }).then(
        () => {
          if (e !== epoch) return;
          inflight--;
          for (const s of below) removed.add(s);
          highestSeq = Math.max(highestSeq, upTo - 1);
        },
        (err: Error) => (e === epoch ? fail(`purge: ${err.message}`) : undefined),
      );
    }
  };
  /** The log was truncated to `next`: what it held from there is gone for good, and those sequences come again. */
  const truncated = (next: number): void => {
    for (const [seq, id] of durable) {
      if (seq < next) continue;
      durable.delete(seq);
      vanished.add(id);
    }
    for (const s of [...removed, ...maybeRemoved]) {
      if (s < next) continue;
      removed.delete(s);
      maybeRemoved.delete(s);
    }
    highestSeq = Math.min(highestSeq, next - 1);
  };
  const crash = async (): Promise<void> => {
    // Let some I/O happen first, so that crashes land in every phase of the write loop.
    const turns = Math.floor(r() * 20);
    for (let i = 0; i < turns; i++) await new Promise((res) => setImmediate(res));
    fs = fs.crash(r);
    epoch++;
    inflight = 0;
    crashes++;
    log = await open();
  };
  const verify = async (): Promise<void> => {
    const st = log.state();
    const all = await readAll(log);
    const seen = new Map<number, number>();
    let lastId = 0;
    for (const m of all) {
      const id = idOf(m);
      const inp = inputs.get(id);
      if (inp === undefined || !same(inp, m)) fail(`seq ${m.seq} holds something never appended`);
      if (vanished.has(id)) fail(`append ${id} came back at ${m.seq} after it had vanished`);
      if (id <= lastId) fail(`append ${id} at seq ${m.seq} is out of order (after ${lastId})`);
      lastId = id;
      const want = durable.get(m.seq);
      if (want !== undefined && want !== id) fail(`seq ${m.seq} holds append ${id}, but ${want} was acknowledged there: a sequence was reused`);
      if (removed.has(m.seq)) fail(`seq ${m.seq} was removed and came back`);
      seen.set(m.seq, id);
    }
    for (const [seq, id] of durable) {
      if (removed.has(seq) || maybeRemoved.has(seq)) continue;
      if (seen.get(seq) !== id) fail(`acknowledged seq ${seq} (append ${id}) is missing after crash ${crashes}`);
    }
    for (const l of st.lost) {
      for (const [seq] of durable) if (seq >= l.from && seq <= l.to && !removed.has(seq) && !maybeRemoved.has(seq)) fail(`acknowledged seq ${seq} reported lost`);
    }
    if (st.lastSeq < highestSeq) fail(`lastSeq ${st.lastSeq} below ${highestSeq}, a sequence already handed out`);
    // Files go only by compaction, roll and truncation here: none of them may read as a segment gone.
    const gone = warnings.find((w) => w.includes(" is gone"));
    if (gone !== undefined) fail(`a segment was taken for gone: ${gone}`);
    // What survived is durable now; what did not will never appear.
    for (const [seq, id] of seen) durable.set(seq, id);
    const present = new Set(seen.values());
    for (const id of inputs.keys()) if (!present.has(id) && ![...durable.values()].includes(id)) vanished.add(id);
    for (const s of maybeRemoved) if (!seen.has(s)) removed.add(s);
    maybeRemoved.clear();
    for (const seq of seen.keys()) highestSeq = Math.max(highestSeq, seq);
    highestSeq = Math.max(highestSeq, st.lastSeq);
  };

  for (let step = 0; step < steps; step++) {
    const x = r();
    if (x < 0.45) append();
    else if (x < 0.55) appendRun();
    else if (x < 0.65) await remove();
    else if (x < 0.75) await new Promise((res) => setImmediate(res));
    else if (x < 0.8) {
      await quiesce();
      await log.settle();
    } else if (x < 0.83) {
      await quiesce();
      await log.close();
      log = await open();
      await verify();
    } else if (x < 0.88) {
      await crash();
      await verify();
    } else if (x < 0.91) {
      // Nothing else in flight: a delete queued behind a truncation could name a sequence it hands out again.
      await quiesce();
      const cut = 1 + Math.floor(r() * (highestSeq + 2));
      const e = epoch;
      let done = false;
      const run = log.truncateFrom(cut).then(
        (next) => {
          if (e !== epoch) return;
          done = true;
          truncations++;
          truncated(next);
        },
        (err: Error) => (e === epoch ? fail(`truncate from ${cut}: ${err.message}`) : undefined),
      );
      if (r() < 0.5) await run;
      else {
        await crash();
        // Interrupted: it happened wholly (the log ends before the cut) or not at all.
        if (!done && cut <= highestSeq && log.state().lastSeq === cut - 1) {
          truncations++;
          truncated(cut);
        }
        await verify();
      }
    }
  }
  await quiesce();
  await log.close();
  log = await open();
  await verify();
  await log.close();
  return { crashes, acked: durable.size, truncations };
}

test("seeded power-loss model: acknowledged writes survive, nothing returns, no sequence is reused", async (t) => {
  const one = process.env.NAGARE_SIM_SEED;
  const seeds = one !== undefined ? [Number(one)] : Array.from({ length: Number(process.env.NAGARE_SIM_SEEDS ?? 12) }, (_, i) => 1000 + i);
  let crashes = 0;
  let acked = 0;
  let truncations = 0;
  const budget = detailCache.budget;
  try {
    for (const seed of seeds) {
      // Every other seed with no memory for segment details: each query reads them back from index files.
      detailCache.budget = seed % 2 === 0 ? 0 : budget;
      const res = await runSeed(seed, Number(process.env.NAGARE_SIM_STEPS ?? 600));
      crashes += res.crashes;
      acked += res.acked;
      truncations += res.truncations;
    }
  } finally {
    detailCache.budget = budget;
  }
  t.diagnostic(`${seeds.length} seeds, ${crashes} crashes, ${truncations} truncations, ${acked} acknowledged messages checked`);
  assert.ok(crashes > seeds.length, "crashes happened");
  assert.ok(truncations > seeds.length, "truncations happened");
});
