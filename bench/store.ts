/**
 * Storage engine benchmark: this machine's disk limits measured with a plain
 * file, then the file log's append throughput at sync `always`, replay
 * throughput from the page cache, and recovery time with intact and with
 * deleted index files, in one run. Writes bench/results/store-<date>.json.
 *
 *   npm run bench:store            # full run
 *   node dist/bench/store.js --quick
 */

import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, unlinkSync, writeSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { FileLog } from "../src/store/file-log.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const quick = process.argv.includes("--quick");
// The benchmark's files go where the data would: the project's disk, not a tmpfs.
const base = process.env.NAGARE_BENCH_DIR ?? tmpdir();

function round(x: number, d: number): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function fdatasyncRate(dir: string, ms: number): number {
  const fd = openSync(join(dir, "sync-probe"), "w");
  const block = Buffer.alloc(4096, 1);
  let n = 0;
  const until = Date.now() + ms;
  while (Date.now() < until) {
    writeSync(fd, block, 0, block.length, 0);
    fdatasyncSync(fd);
    n++;
  }
  closeSync(fd);
  return n / (ms / 1000);
}

function sequentialWrite(dir: string, mib: number): number {
  const fd = openSync(join(dir, "seq-probe"), "w");
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < mib; i++) writeSync(fd, chunk);
  fsyncSync(fd);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  closeSync(fd);
  return mib / s;
}

/**
 * The ceiling for group commit at a given batch size: a plain file written
 * in rounds of `bytes`, each followed by fdatasync, with nothing else to do.
 */
function syncedRounds(dir: string, bytes: number, ms: number): number {
  const fd = openSync(join(dir, "round-probe"), "w");
  const block = Buffer.alloc(bytes, 3);
  let n = 0;
  const t0 = process.hrtime.bigint();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    writeSync(fd, block, 0, block.length, n * bytes);
    fdatasyncSync(fd);
    n++;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  closeSync(fd);
  return (n * bytes) / s / 1e6;
}

async function appendThroughput(dir: string, size: number, appenders: number, ms: number): Promise<Record<string, number>> {
  const log = await FileLog.open({ dir });
  const data = Buffer.alloc(size, 0x61);
  let acked = 0;
  let stop = false;
  const t0 = process.hrtime.bigint();
  await new Promise<void>((resolveAll) => {
    let running = appenders;
    const loop = (): void => {
      if (stop) {
        if (--running === 0) resolveAll();
        return;
      }
      log.append({ subject: "bench.store", data }, (err) => {
        if (err) throw err;
        acked++;
        loop();
      });
    };
    for (let i = 0; i < appenders; i++) loop();
    setTimeout(() => (stop = true), ms);
  });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const io = { ...log.io };
  await log.close();
  return {
    record_bytes: size,
    appenders,
    records_per_sec: Math.round(acked / s),
    mb_per_sec: round((acked * size) / s / 1e6, 1),
    records_per_sync: round(acked / Math.max(1, io.syncs), 1),
  };
}

/** Fills a log quickly (sync never: this measures reading, not writing). */
async function fill(dir: string, records: number, size: number): Promise<void> {
  const log = await FileLog.open({ dir, sync: "never" });
  const data = Buffer.alloc(size, 0x62);
  await new Promise<void>((res) => {
    let left = records;
    let inflight = 0;
    const pump = (): void => {
      while (inflight < 1024 && left > 0) {
        left--;
        inflight++;
        log.append({ subject: `bench.${left % 16}`, data }, () => {
          inflight--;
          if (left === 0 && inflight === 0) res();
          else pump();
        });
      }
    };
    pump();
  });
  await log.close();
}

/** Reads the whole log back through scan(), as a consumer catching up would. */
async function replay(dir: string, records: number, size: number): Promise<Record<string, number>> {
  await fill(dir, records, size);
  const log = await FileLog.open({ dir });
  let n = 0;
  let bytes = 0;
  const pass = async (): Promise<number> => {
    const t0 = process.hrtime.bigint();
    n = 0;
    for (let from = 1; ; ) {
      const got = await log.scan(from, { maxMessages: 1000 });
      if (got.length === 0) break;
      n += got.length;
      for (const m of got) bytes += m.data.length;
      from = got[got.length - 1].seq + 1;
    }
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  await pass(); // warm: the page cache and the JIT
  const s = await pass();
  await log.close();
  if (n !== records || bytes === 0) throw new Error(`replay read ${n} of ${records}`);
  return { record_bytes: size, records: n, records_per_sec: Math.round(n / s), mb_per_sec: round((n * size) / s / 1e6, 1) };
}

async function timeOpen(dir: string): Promise<{ seconds: number; messages: number; scanned: number }> {
  const t0 = process.hrtime.bigint();
  const log = await FileLog.open({ dir });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const st = log.state();
  const scanned = log.io.segmentsScanned;
  await log.close();
  return { seconds, messages: st.messages, scanned };
}

async function recovery(dir: string, mib: number): Promise<Record<string, Record<string, number>>> {
  const records = Math.floor((mib * 1024 * 1024) / (1024 + 60));
  await fill(dir, records, 1024);
  await timeOpen(dir); // the first open after filling may still find the page cache cold for index files
  const intact = await timeOpen(dir);
  if (intact.messages !== records) throw new Error(`recovered ${intact.messages} of ${records}`);
  for (const n of readdirSync(dir)) if (n.endsWith(".idx")) unlinkSync(join(dir, n));
  const rebuilt = await timeOpen(dir);
  if (rebuilt.messages !== records) throw new Error(`recovered ${rebuilt.messages} of ${records} without indexes`);
  return {
    intact_indexes: { log_mib: mib, records, open_seconds: round(intact.seconds, 3), segments_scanned: intact.scanned },
    deleted_indexes: { log_mib: mib, records, open_seconds: round(rebuilt.seconds, 3), segments_scanned: rebuilt.scanned },
  };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(base, "nagare-store-bench-"));
  try {
    const ms = quick ? 500 : 3000;
    const machine = {
      fdatasync_per_sec: Math.round(fdatasyncRate(work, ms)),
      sequential_write_mb_per_sec: round(sequentialWrite(work, quick ? 64 : 512) * 1.048576, 1),
      // What 256 appenders x 1 KiB make one group-commit round: 256 records of 1,024 + 25 bytes, one batch header.
      synced_rounds_of_256_kib_mb_per_sec: round(syncedRounds(work, 256 * (1024 + 25) + 32, ms), 1),
    };
    console.error(`machine: ${JSON.stringify(machine)}`);
    const appends: Array<Record<string, number>> = [];
    for (const size of [128, 1024]) {
      for (const appenders of [1, 16, 256]) {
        const dir = join(work, `append-${size}-${appenders}`);
        const r = await appendThroughput(dir, size, appenders, ms);
        rmSync(dir, { recursive: true, force: true });
        appends.push(r);
        console.error(`append: ${JSON.stringify(r)}`);
      }
    }
    const rep = await replay(join(work, "replay"), quick ? 200_000 : 2_000_000, 128);
    rmSync(join(work, "replay"), { recursive: true, force: true });
    console.error(`replay: ${JSON.stringify(rep)}`);
    const rec = await recovery(join(work, "recovery"), quick ? 64 : 1024);
    console.error(`recovery: ${JSON.stringify(rec)}`);
    const at256 = appends.find((a) => a.record_bytes === 1024 && a.appenders === 256)!;
    const report = {
      benchmark: "store",
      date: new Date().toISOString(),
      quick,
      machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, ...machine },
      append_sync_always: appends,
      replay_page_cache: rep,
      recovery: rec,
      targets: {
        append_1kib_256_at_least_half_of_sequential_bandwidth: at256.mb_per_sec >= machine.sequential_write_mb_per_sec / 2,
        append_1kib_256_share_of_sequential: round(at256.mb_per_sec / machine.sequential_write_mb_per_sec, 3),
        append_1kib_256_share_of_synced_rounds: round(at256.mb_per_sec / machine.synced_rounds_of_256_kib_mb_per_sec, 3),
        replay_128b_at_least_1m_per_sec: rep.records_per_sec >= 1_000_000,
        recovery_1gib_intact_indexes_under_2s: quick ? null : rec.intact_indexes.open_seconds < 2,
      },
    };
    const text = JSON.stringify(report, null, 2);
    if (!quick) {
      mkdirSync(join(root, "bench", "results"), { recursive: true });
      writeFileSync(join(root, "bench", "results", `store-${report.date.slice(0, 10)}.json`), text + "\n");
    }
    console.log(text);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
