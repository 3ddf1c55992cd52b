/**
 * Storage engine benchmark: this machine's disk limits measured with a plain
 * file, then the file log's append throughput at sync `always` and its
 * recovery time, in one run. Writes bench/results/store-<date>.json.
 *
 *   npm run bench:store            # full run
 *   node dist/bench/store.js --quick
 */

import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync, writeFileSync } from "node:fs";
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

async function recovery(dir: string, mib: number): Promise<Record<string, number>> {
  const log = await FileLog.open({ dir, sync: "never" });
  const data = Buffer.alloc(1024, 0x62);
  const records = Math.floor((mib * 1024 * 1024) / (1024 + 60));
  await new Promise<void>((res) => {
    let left = records;
    let inflight = 0;
    const pump = (): void => {
      while (inflight < 512 && left > 0) {
        left--;
        inflight++;
        log.append({ subject: "bench.recover", data }, () => {
          inflight--;
          if (left === 0 && inflight === 0) res();
          else pump();
        });
      }
    };
    pump();
  });
  await log.close();
  const t0 = process.hrtime.bigint();
  const reopened = await FileLog.open({ dir });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const st = reopened.state();
  await reopened.close();
  return { log_mib: mib, records: st.messages, open_seconds: round(s, 3) };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(base, "nagare-store-bench-"));
  try {
    const ms = quick ? 500 : 3000;
    const machine = {
      fdatasync_per_sec: Math.round(fdatasyncRate(work, ms)),
      sequential_write_mb_per_sec: round(sequentialWrite(work, quick ? 64 : 512) * 1.048576, 1),
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
    const rec = await recovery(join(work, "recovery"), quick ? 64 : 1024);
    console.error(`recovery: ${JSON.stringify(rec)}`);
    const at256 = appends.find((a) => a.record_bytes === 1024 && a.appenders === 256)!;
    const report = {
      benchmark: "store",
      date: new Date().toISOString(),
      quick,
      machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, ...machine },
      append_sync_always: appends,
      recovery_intact_indexes: rec,
      targets: {
        append_1kib_256_at_least_half_of_sequential_bandwidth: at256.mb_per_sec >= machine.sequential_write_mb_per_sec / 2,
        recovery_1gib_under_2s: quick ? null : rec.open_seconds < 2,
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
