/**
 * JetStream benchmark: nagare and nats-server (Debian's package) side by side
 * in one run, the same v3 client load against each server in its own child
 * process. Async publish with 1, 64 and 512 in flight, consume+ack with pull
 * and push consumers, KV put and get.
 *
 *   npm run bench:js                        # full run, writes bench/results/jetstream-<date>.json
 *   node dist/bench/jetstream.js --quick    # smaller counts, for a smoke check
 *   node dist/bench/jetstream.js --quick --only=consume_ack_pull_128b
 *
 * Durability differs by default: nagare fsyncs before every ack, nats-server
 * fsyncs every two minutes. Debian's nats-server (2.9) has no `sync_interval`
 * setting to make it fsync before acking, so the equal-durability comparison
 * is made the other way round: nagare is also run with `sync_interval: 2m`
 * (nats-server's default), and both ratios are reported.
 * NAGARE_BENCH_DIR picks the disk the stores go on (default: the temp dir).
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, type JetStreamClient } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { machineInfo, cpuSeconds, median, natsServerPath, natsServerVersion, publish, round, type Running, start, type Target, windowed } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const quick = process.argv.includes("--quick");
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
const REPEATS = quick ? 1 : 3;
const base = process.env.NAGARE_BENCH_DIR ?? tmpdir();
const natsServer = natsServerPath();
if (natsServer === null) {
  console.error("nats-server is not installed: sudo apt-get install -y nats-server");
  process.exit(2);
}

const stores: string[] = [];
function store(): string {
  const d = mkdtempSync(join(base, "nagare-jsbench-"));
  stores.push(d);
  return d;
}

const nagareMain = join(root, "dist/src/cli/main.js");
const targets: Target[] = [
  { name: "nagare", command: process.execPath, args: (port) => [nagareMain, "server", "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store()] },
  {
    name: "nagare_sync_2m",
    command: process.execPath,
    args: (port) => {
      const dir = store();
      const conf = join(dir, "nagare.conf");
      writeFileSync(conf, `host: 127.0.0.1\nport: ${port}\njetstream { store_dir: "${join(dir, "js")}", sync_interval: "2m" }\n`);
      return [nagareMain, "server", "-c", conf];
    },
  },
  { name: "nats-server", command: natsServer, args: (port) => ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store()] },
];

interface Result {
  count: number;
  seconds: number;
  per_sec: number;
  server_cpu_us_per_op: number;
}

async function measure(server: Running, count: number, work: () => Promise<void>): Promise<Result> {
  const cpu0 = cpuSeconds(server.pid);
  const t0 = process.hrtime.bigint();
  await work();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(server.pid) - cpu0;
  return { count, seconds: round(seconds, 3), per_sec: Math.round(count / seconds), server_cpu_us_per_op: round((cpu * 1e6) / count, 2) };
}

const PAYLOAD = new Uint8Array(128).fill(120);

async function withStream(server: Running, fn: (nc: NatsConnection, js: JetStreamClient, name: string) => Promise<Result>): Promise<Result> {
  const nc = await connect({ servers: server.url });
  try {
    const jsm = await jetstreamManager(nc);
    const name = `B${Math.floor(Math.random() * 1e9)}`;
    await jsm.streams.add({ name, subjects: [`${name}.>`] });
    const r = await fn(nc, jetstream(nc), name);
    await jsm.streams.delete(name);
    return r;
  } finally {
    await nc.close();
  }
}

function publishScenario(window: number, count: number) {
  return (server: Running, scale: number): Promise<Result> =>
    withStream(server, (_nc, js, name) => {
      const n = Math.max(200, Math.round(count * scale));
      return measure(server, n, () => windowed(n, window, () => js.publish(`${name}.x`, PAYLOAD)));
    });
}

async function fill(js: JetStreamClient, subject: string, n: number): Promise<void> {
  await windowed(n, 512, () => js.publish(subject, PAYLOAD));
}

function pullScenario(count: number) {
  return (server: Running, scale: number): Promise<Result> =>
    withStream(server, async (nc, js, name) => {
      const n = Math.max(500, Math.round(count * scale));
      await fill(js, `${name}.x`, n);
      const jsm = await jetstreamManager(nc);
      await jsm.consumers.add(name, { durable_name: "c", ack_policy: AckPolicy.Explicit });
      const c = await js.consumers.get(name, "c");
      return measure(server, n, async () => {
        let got = 0;
        const iter = await c.consume({ max_messages: 1000 });
        for await (const m of iter) {
          m.ack();
          if (++got === n) break;
        }
        await nc.flush();
      });
    });
}

function pushScenario(count: number) {
  return (server: Running, scale: number): Promise<Result> =>
    withStream(server, async (nc, js, name) => {
      const n = Math.max(500, Math.round(count * scale));
      await fill(js, `${name}.x`, n);
      const jsm = await jetstreamManager(nc);
      await jsm.consumers.add(name, { durable_name: "p", ack_policy: AckPolicy.Explicit, deliver_subject: createInbox(), flow_control: true, idle_heartbeat: 5_000_000_000 });
      const pc = await js.consumers.getPushConsumer(name, "p");
      return measure(server, n, async () => {
        let got = 0;
        const iter = await pc.consume();
        for await (const m of iter) {
          m.ack();
          if (++got === n) break;
        }
        await nc.flush();
      });
    });
}

function kvScenario(kind: "put" | "get", count: number) {
  return async (server: Running, scale: number): Promise<Result> => {
    const nc = await connect({ servers: server.url });
    try {
      const bucket = `b${Math.floor(Math.random() * 1e9)}`;
      const kv = await new Kvm(nc).create(bucket);
      const keys = 1000;
      const n = Math.max(500, Math.round(count * scale));
      if (kind === "get") await windowed(keys, 64, (i) => kv.put(`k${i}`, PAYLOAD));
      const r = await measure(server, n, () => windowed(n, 64, (i) => (kind === "put" ? kv.put(`k${i % keys}`, PAYLOAD) : kv.get(`k${i % keys}`))));
      await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`);
      return r;
    } finally {
      await nc.close();
    }
  };
}

const k = quick ? 0.1 : 1;
const scenarios: Array<{ name: string; run: (s: Running, scale: number) => Promise<Result> }> = [
  { name: "publish_async_1_128b", run: publishScenario(1, 3000 * k) },
  { name: "publish_async_64_128b", run: publishScenario(64, 40_000 * k) },
  { name: "publish_async_512_128b", run: publishScenario(512, 80_000 * k) },
  { name: "consume_ack_pull_128b", run: pullScenario(50_000 * k) },
  { name: "consume_ack_push_128b", run: pushScenario(50_000 * k) },
  { name: "kv_put_64", run: kvScenario("put", 20_000 * k) },
  { name: "kv_get_64", run: kvScenario("get", 40_000 * k) },
];

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer!);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const results: Record<string, unknown> = {};
  try {
    for (const sc of scenarios) {
      if (only !== undefined && sc.name !== only) continue;
      const runs: Record<string, Result[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
      for (let r = 0; r < REPEATS; r++) {
        for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
          const server = await start(t);
          try {
            await sc.run(server, 0.1); // warm-up, unmeasured
            runs[t.name].push(await sc.run(server, 1));
          } finally {
            await server.stop();
          }
        }
      }
      const pick = (name: string): Result => median(runs[name], (x) => x.per_sec);
      const a = pick("nagare");
      const a2 = pick("nagare_sync_2m");
      const b = pick("nats-server");
      results[sc.name] = {
        nagare: a,
        nagare_sync_2m: a2,
        "nats-server": b,
        ratio: {
          nagare_fsync_vs_nats_default: round(a.per_sec / b.per_sec, 3),
          nagare_2m_vs_nats_default: round(a2.per_sec / b.per_sec, 3),
          server_cpu_per_op: round(a.server_cpu_us_per_op / b.server_cpu_us_per_op, 3),
        },
        runs,
      };
      console.error(`${sc.name}: ${JSON.stringify((results[sc.name] as { ratio: unknown }).ratio)}`);
    }
  } finally {
    for (const d of stores) rmSync(d, { recursive: true, force: true });
  }
  const report = {
    benchmark: "jetstream",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    machine: { ...machineInfo(), store_dir: base },
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "@nats-io/jetstream v3 in the benchmark process" },
    notes:
      "per_sec is operations per second (publishes acked, messages consumed and acked, KV ops). nagare fsyncs before acking; nagare_sync_2m and nats-server (default) fsync every 2 minutes. Debian's nats-server 2.9 cannot be told to fsync before acking (no sync_interval), so equal durability is nagare_2m_vs_nats_default. Median of the repeats.",
    results,
  };
  publish(root, "jetstream", report, !quick && only === undefined);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
