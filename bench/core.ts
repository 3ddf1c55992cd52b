/**
 * Core NATS benchmark: nagare and nats-server side by side in one run, same
 * client load (the `nats` v2 client in this process), each server in its own
 * child process so that its CPU time and memory can be read from /proc.
 *
 *   npm run bench                       # full run, writes bench/results/core-<date>.json
 *   node dist/bench/core.js --quick     # smaller counts, for a smoke check
 *   node dist/bench/core.js --only=queue_group_4_16b --profile
 *                                       # one scenario; nagare writes a .cpuprofile to bench/profiles/
 *
 * Every scenario is closed-loop (the publisher keeps at most a window of
 * messages in flight), so neither server is measured dropping a slow consumer.
 */

import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "nats";
import { machineInfo, benchFlags, cpuSeconds, median, requireNatsServer, natsServerVersion, publish, pubSub, round, rssBytes, type Running, start, type Target, type Throughput } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const { quick, only, profile, repeats: REPEATS } = benchFlags();
const natsServer = requireNatsServer();

const targets: Target[] = [
  {
    name: "nagare",
    command: process.execPath,
    args: (port) => [
      ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${join(root, "bench", "profiles")}`] : []),
      join(root, "dist/src/cli/main.js"),
      "server",
      "-a",
      "127.0.0.1",
      "-p",
      String(port),
    ],
  },
  { name: "nats-server", command: natsServer, args: (port) => ["-a", "127.0.0.1", "-p", String(port)] },
];

// ---- load ----

interface Latency {
  requests: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  server_cpu_us_per_request: number;
}

async function requestReply(server: Running, total: number): Promise<Latency> {
  const responder = await connect({ servers: server.url });
  responder.subscribe("bench.rr", { callback: (_e, m) => m.respond(m.data) });
  await responder.flush();
  const requester = await connect({ servers: server.url });
  const payload = new Uint8Array(16);
  for (let i = 0; i < 500; i++) await requester.request("bench.rr", payload, { timeout: 5000 }); // warm up both sides
  const samples = new Float64Array(total);
  const cpu0 = cpuSeconds(server.pid);
  for (let i = 0; i < total; i++) {
    const t = process.hrtime.bigint();
    await requester.request("bench.rr", payload, { timeout: 5000 });
    samples[i] = Number(process.hrtime.bigint() - t) / 1e6;
  }
  const cpu = cpuSeconds(server.pid) - cpu0;
  samples.sort();
  await requester.close();
  await responder.close();
  const pct = (p: number): number => round(samples[Math.min(total - 1, Math.floor(total * p))], 4);
  return { requests: total, p50_ms: pct(0.5), p90_ms: pct(0.9), p99_ms: pct(0.99), server_cpu_us_per_request: round((cpu * 1e6) / total, 2) };
}

interface Memory {
  idle_rss_mib: number;
  subs_100k_rss_mib: number;
}

async function memory(target: Target): Promise<Memory> {
  const server = await start(target);
  try {
    // Idle: after one client has come and gone, as an operator would see it.
    const probe = await connect({ servers: server.url });
    await probe.flush();
    await probe.close();
    await settle();
    const idle = rssBytes(server.pid);
    const nc = await connect({ servers: server.url });
    for (let i = 0; i < 100_000; i++) {
      nc.subscribe(`bench.mem.${i}.x`, { callback: () => {} });
      if (i % 5000 === 4999) await nc.flush();
    }
    await nc.flush();
    await settle();
    const withSubs = rssBytes(server.pid);
    await nc.close();
    return { idle_rss_mib: round(idle / 2 ** 20, 1), subs_100k_rss_mib: round(withSubs / 2 ** 20, 1) };
  } finally {
    await server.stop();
  }
}

function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 500));
}

// ---- the run ----

interface Scenario {
  name: string;
  /** `scale` shrinks the counts, for the unmeasured warm-up pass. */
  run(server: Running, scale?: number): Promise<Throughput | Latency>;
  key: "msgs_per_sec" | "p50_ms";
}

const k = quick ? 0.1 : 1;
const n = (count: number, scale = 1): number => Math.max(1000, Math.round(count * k * scale));
const scenarios: Scenario[] = [
  { name: "pubsub_16b", key: "msgs_per_sec", run: (s, x) => pubSub(s, { size: 16, total: n(1_000_000, x), subs: 1, window: 50_000 }) },
  { name: "pubsub_1kib", key: "msgs_per_sec", run: (s, x) => pubSub(s, { size: 1024, total: n(200_000, x), subs: 1, window: 8_000 }) },
  { name: "fanout_1to10_16b", key: "msgs_per_sec", run: (s, x) => pubSub(s, { size: 16, total: n(100_000, x), subs: 10, window: 5_000 }) },
  { name: "queue_group_4_16b", key: "msgs_per_sec", run: (s, x) => pubSub(s, { size: 16, total: n(500_000, x), subs: 4, queue: "workers", window: 50_000 }) },
  { name: "request_reply_16b", key: "p50_ms", run: (s, x) => requestReply(s, n(20_000, x)) },
];
/** Both servers get the same unmeasured warm-up: a long-running server is measured, not a cold JIT. */
const WARMUP_SCALE = 0.2;

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const results: Record<string, Record<string, unknown>> = {};

  for (const sc of scenarios) {
    if (only !== undefined && sc.name !== only) continue;
    const runs: Record<string, Array<Throughput | Latency>> = { nagare: [], "nats-server": [] };
    // Alternate the servers so that drift in the machine's load hits both alike.
    for (let r = 0; r < REPEATS; r++) {
      for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
        const server = await start(t);
        try {
          await sc.run(server, WARMUP_SCALE);
          runs[t.name].push(await sc.run(server));
        } finally {
          await server.stop();
        }
      }
    }
    const pick = (name: string): Throughput | Latency => median(runs[name], (x) => (x as unknown as Record<string, number>)[sc.key]);
    const a = pick("nagare") as unknown as Record<string, number>;
    const b = pick("nats-server") as unknown as Record<string, number>;
    const cpuKey = sc.key === "p50_ms" ? "server_cpu_us_per_request" : "server_cpu_us_per_msg";
    results[sc.name] = {
      nagare: a,
      "nats-server": b,
      ratio: {
        [sc.key]: round(a[sc.key] / b[sc.key], 3),
        ...(sc.key === "p50_ms" ? { p99_ms: round(a.p99_ms / b.p99_ms, 3) } : {}),
        [cpuKey]: round(a[cpuKey] / b[cpuKey], 3),
      },
      runs,
    };
    console.error(`${sc.name}: ${JSON.stringify(results[sc.name].ratio)}`);
  }

  if (only !== undefined || profile) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  const mem: Record<string, Memory> = {};
  for (const t of targets) mem[t.name] = await memory(t);
  results.memory = {
    ...mem,
    ratio: {
      idle_rss: round(mem.nagare.idle_rss_mib / mem["nats-server"].idle_rss_mib, 3),
      subs_100k_rss: round(mem.nagare.subs_100k_rss_mib / mem["nats-server"].subs_100k_rss_mib, 3),
    },
  };
  console.error(`memory: ${JSON.stringify(results.memory)}`);

  const ratio = (s: string, key: string): number => (results[s].ratio as Record<string, number>)[key];
  const throughputScenarios = scenarios.filter((s) => s.key === "msgs_per_sec").map((s) => s.name);
  const targetsMet = {
    throughput_at_least_0_9x: Object.fromEntries(throughputScenarios.map((s) => [s, ratio(s, "msgs_per_sec") >= 0.9])),
    server_cpu_per_msg_at_most_2_5x: Object.fromEntries(throughputScenarios.map((s) => [s, ratio(s, "server_cpu_us_per_msg") <= 2.5])),
    request_reply_p50_at_most_1_3x: ratio("request_reply_16b", "p50_ms") <= 1.3,
  };

  const report = {
    benchmark: "core",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    machine: machineInfo(),
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "nats (v2) in the benchmark process" },
    notes: "Ratios are nagare / nats-server from the same run; median of the repeats by the headline metric. Server CPU from /proc/<pid>/stat (10 ms ticks).",
    results,
    targets_met: targetsMet,
  };
  publish(root, "core", report, !quick);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
