/**
 * Stream and KV bucket creates sent all at once to one nagare node: how long
 * until every one is answered. Measures how much one create waits on the
 * others' disk work (fresh server and store per run, file storage).
 *
 *   node dist/bench/concurrent-creates.js                 # 200 of each, 3 runs
 *   node dist/bench/concurrent-creates.js --count=50 --runs=1
 *
 * NAGARE_BENCH_DIR picks the disk the stores go on (default: the temp dir).
 */

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { freePort, waitForPort } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const main = resolve(here, "..", "src", "cli", "main.js");
const flag = (name: string, fallback: number): number => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const count = flag("count", 200);
const runs = flag("runs", 3);

async function timed(op: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await op();
  return Math.round(performance.now() - t0);
}

async function once(): Promise<{ streams_ms: number; kv_ms: number }> {
  const dir = mkdtempSync(join(process.env.NAGARE_BENCH_DIR ?? tmpdir(), "nagare-bench-creates-"));
  const port = await freePort();
  const proc = spawn(process.execPath, [main, "server", "-a", "127.0.0.1", "-p", String(port), "-m", "-1", "-js", "-sd", dir, "--kafka_port", "-1"], { stdio: "ignore" });
  try {
    await waitForPort(port);
    const nc = await connect({ servers: `127.0.0.1:${port}` });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 30_000 });
      const kvm = new Kvm(jetstream(nc, { timeout: 30_000 }));
      const streams_ms = await timed(() => Promise.all(Array.from({ length: count }, (_, i) => jsm.streams.add({ name: `S${i}`, subjects: [`s${i}.>`] }))));
      const kv_ms = await timed(() => Promise.all(Array.from({ length: count }, (_, i) => kvm.create(`B${i}`))));
      return { streams_ms, kv_ms };
    } finally {
      await nc.close();
    }
  } finally {
    await new Promise<void>((res) => {
      proc.once("exit", () => res());
      proc.kill("SIGTERM");
    });
    rmSync(dir, { recursive: true, force: true });
  }
}

const results = [];
for (let r = 0; r < runs; r++) results.push(await once());
console.log(JSON.stringify({ count, runs: results }));
