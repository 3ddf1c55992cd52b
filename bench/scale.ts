/**
 * Scale benchmark (issue 16, "Limits on everything"): nagare and nats-server
 * (Debian's package) side by side in one run, each in its own child process,
 * driven by the official v3 clients from this process.
 *
 * - streams: N file streams (one subject each) created one at a time through
 *   the JetStream API, then one message put in each; time per creation (first
 *   and last thousand), descriptors and resident memory; a clean stop and a
 *   restart timed from process start to `$JS.API.INFO` reporting all N
 *   streams, every stream's message read back; then the same restart with the
 *   descriptor limit at 1,024.
 * - messages: M messages of 50 bytes into one stream with async publishes (a
 *   closed loop of `--window` in flight); memory after the load, disk usage,
 *   and a restart timed from process start to the first successful
 *   `stream info`.
 *
 *   npm run bench:scale                                   # 10,000 streams and 1,000,000 messages: bench/results/scale-<date>.json
 *   node dist/bench/scale.js --only=messages --messages=10000000   # the 10M run: bench/results/scale-10000000msgs-<date>.json
 *   node dist/bench/scale.js --quick                      # 1,000 streams, 100,000 messages, nothing written
 *
 * Options: --streams=N, --messages=M[,M2...], --only=streams|messages,
 * --window=W (publishes in flight, default 512), --nofile=L (both servers'
 * descriptor limit, default 65,536), --no-pin. NAGARE_BENCH_DIR
 * picks the disk the stores go on (default: the temp dir). Durability
 * differs by default and is left so: nagare fsyncs before every ack,
 * nats-server 2.9 fsyncs every two minutes.
 */

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { machineInfo, fdLimit, freePort, natsServerPath, natsServerVersion, openFds, pin, publish, round, rssBytes, windowed } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const nagareMain = join(root, "dist/src/cli/main.js");

function arg(name: string): string | undefined {
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}
function count(text: string, what: string): number {
  const n = Number(text.replace(/_/g, ""));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${what}: not a positive integer: ${text}`);
  return n;
}

const quick = process.argv.includes("--quick");
const DEFAULT_STREAMS = 10_000;
const DEFAULT_MESSAGES = [1_000_000];
const STREAMS = count(arg("streams") ?? String(quick ? 1000 : DEFAULT_STREAMS), "streams");
const MESSAGES = (arg("messages") ?? String(quick ? 100_000 : DEFAULT_MESSAGES.join(","))).split(",").map((t) => count(t, "messages"));
const WINDOW = count(arg("window") ?? "512", "window");
const only = arg("only");
if (only !== undefined && only !== "streams" && only !== "messages") throw new Error(`--only: streams or messages, not ${only}`);
const runStreams = only !== "messages";
const runMessages = only !== "streams";
const LIMITED_NOFILE = 1024;
/**
 * Both servers run under one explicit descriptor limit, so the comparison does
 * not depend on the shell's: --nofile, or 65,536 where this process may raise
 * its hard limit that far (CAP_SYS_RESOURCE), else the hard limit it has.
 * nats-server 2.9 holds two files per stream it has written to, so 10,000
 * streams need more than 20,000.
 */
function defaultNofile(): number {
  const m = readFileSync("/proc/self/limits", "utf8").match(/^Max open files\s+\S+\s+(\d+|unlimited)/m);
  const hard = m === null || m[1] === "unlimited" ? Infinity : Number(m[1]);
  if (hard >= 65536) return 65536;
  try {
    execFileSync("prlimit", ["--nofile=65536:65536", "--", "true"], { stdio: "ignore" });
    return 65536;
  } catch {
    return hard;
  }
}
const NOFILE = count(arg("nofile") ?? String(defaultNofile()), "nofile");
const base = process.env.NAGARE_BENCH_DIR ?? tmpdir();
const PAYLOAD = new Uint8Array(50).fill(120);
const MiB = 1024 * 1024;

const natsServer = natsServerPath();
if (natsServer === null) {
  console.error("nats-server is not installed: sudo apt-get install -y nats-server");
  process.exit(2);
}

type Kind = "nagare" | "nats-server";
const KINDS: Kind[] = ["nagare", "nats-server"];

// ---- servers as child processes, always cleaned up ----

interface ServerProc {
  kind: Kind;
  proc: ChildProcess;
  pid: number;
  url: string;
  store: string;
  logFile: string;
  /** performance.now() just before the spawn. */
  t0: number;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  exited: Promise<void>;
}

const live = new Set<ServerProc>();
const tempDirs = new Set<string>();

function cleanup(): void {
  for (const s of live) s.proc.kill("SIGKILL");
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    console.error(`${sig}: killing the servers and removing the stores`);
    cleanup();
    process.exit(130);
  });
}

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(base, prefix));
  tempDirs.add(d);
  return d;
}

function removeDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

/** Starts a server on a fresh port, its output appended to `logFile`, with `nofile` as its descriptor limit (soft and hard). */
async function spawnServer(kind: Kind, store: string, logFile: string, nofile = NOFILE): Promise<ServerProc> {
  const port = await freePort();
  const server =
    kind === "nagare"
      ? [process.execPath, nagareMain, "server", "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store]
      : [natsServer!, "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store];
  // prlimit and taskset both exec the server: the child's pid is the server's.
  const argv = ["prlimit", `--nofile=${nofile}:${nofile}`, "--", ...(pin ? ["taskset", "-c", "1"] : []), ...server];
  const out = openSync(logFile, "a");
  const t0 = performance.now();
  let proc: ChildProcess;
  try {
    proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", out, out] });
  } finally {
    closeSync(out);
  }
  const s: ServerProc = { kind, proc, pid: proc.pid!, url: `nats://127.0.0.1:${port}`, store, logFile, t0, exit: null, exited: Promise.resolve() };
  s.exited = new Promise<void>((res) =>
    proc.once("exit", (code, signal) => {
      s.exit = { code, signal };
      live.delete(s);
      res();
    }),
  );
  live.add(s);
  if (proc.pid === undefined) throw new Error(`could not start ${argv[0]}`);
  return s;
}

/** SIGTERM, then SIGKILL if it has not exited within `deadlineMs`; seconds to exit and whether it had to be killed. */
async function stopServer(s: ServerProc, deadlineMs = 120_000): Promise<{ stop_s: number; killed: boolean }> {
  const t = performance.now();
  if (s.exit !== null) return { stop_s: 0, killed: false };
  s.proc.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const inTime = await Promise.race([s.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), deadlineMs)))]);
  clearTimeout(timer);
  if (!inTime) {
    s.proc.kill("SIGKILL");
    await s.exited;
  }
  return { stop_s: round((performance.now() - t) / 1000, 3), killed: !inTime };
}

function logTail(s: ServerProc, bytes = 1500): string {
  try {
    const text = readFileSync(s.logFile, "utf8");
    return text.slice(-bytes);
  } catch {
    return "";
  }
}

class NotReady extends Error {}

/** The error of a scenario whose server misbehaved, with how the server ended (call it before stopping it) and the end of its log. */
async function failed(s: ServerProc, err: unknown): Promise<Error> {
  // A dropped connection often comes just before the exit it announces.
  await Promise.race([s.exited, sleep(500)]);
  const e = err instanceof Error ? err : new Error(String(err));
  const how = s.exit === null ? "" : ` (server exited: code ${s.exit.code}, signal ${s.exit.signal})`;
  return Object.assign(new Error(e.message + how), { logTail: logTail(s) });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls until `ready` holds on a connection to the server: seconds from the
 * spawn. Fails as soon as the process exits, or at the deadline.
 */
async function waitReady(s: ServerProc, ready: (nc: NatsConnection) => Promise<boolean>, deadlineMs: number): Promise<number> {
  const deadline = performance.now() + deadlineMs;
  let nc: NatsConnection | null = null;
  try {
    for (;;) {
      if (s.exit !== null) throw new NotReady(`${s.kind} exited (code ${s.exit.code}, signal ${s.exit.signal}) ${round((performance.now() - s.t0) / 1000, 2)} s after start`);
      if (performance.now() > deadline) throw new NotReady(`${s.kind} not ready ${deadlineMs / 1000} s after start`);
      if (nc === null || nc.isClosed()) nc = await connect({ servers: s.url, reconnect: false, timeout: 2000 }).catch(() => null);
      if (nc !== null && (await ready(nc).catch(() => false))) return (performance.now() - s.t0) / 1000;
      await sleep(10);
    }
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

async function manager(nc: NatsConnection, timeout = 30_000): Promise<JetStreamManager> {
  return jetstreamManager(nc, { timeout, checkAPI: false });
}

// ---- measurement ----

function statusKb(pid: number, field: string): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  return m ? Number(m[1]) : NaN;
}

interface ProcFigures {
  rss_mib: number;
  peak_rss_mib: number;
  fds: number;
  /** Of them, files under the store directory. */
  fds_in_store: number;
  fd_limit: number;
}

function figures(s: ServerProc): ProcFigures {
  let inStore = 0;
  for (const fd of readdirSync(`/proc/${s.pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${s.pid}/fd/${fd}`).startsWith(s.store)) inStore++;
    } catch {
      // closed between the listing and the look
    }
  }
  return {
    rss_mib: round(rssBytes(s.pid) / MiB, 1),
    peak_rss_mib: round(statusKb(s.pid, "VmHWM") / 1024, 1),
    fds: openFds(s.pid),
    fds_in_store: inStore,
    fd_limit: fdLimit(s.pid),
  };
}

/** What `du` counts (allocated blocks) and the files' apparent size. */
function diskUsage(dir: string): { disk_mib: number; apparent_mib: number; files: number } {
  let blocks = 0;
  let bytes = 0;
  let files = 0;
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      blocks += st.blocks;
      if (st.isDirectory()) walk(p);
      else {
        bytes += st.size;
        files++;
      }
    }
  };
  walk(dir);
  return { disk_mib: round((blocks * 512) / MiB, 1), apparent_mib: round(bytes / MiB, 1), files };
}

function mean(xs: Float64Array): number {
  let t = 0;
  for (const x of xs) t += x;
  return xs.length > 0 ? t / xs.length : NaN;
}

function percentile(xs: Float64Array, p: number): number {
  const sorted = Float64Array.from(xs).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const streamName = (i: number): string => `S${i}`;
const streamSubject = (i: number): string => `s.${i}`;

/** Reads message 1 of every stream back; how many came back intact, and the first failure. */
async function readAll(url: string, n: number): Promise<{ ok: number; first_error: string | null; seconds: number }> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 5000 });
  const t = performance.now();
  let ok = 0;
  let firstError: string | null = null;
  try {
    const jsm = await manager(nc, 10_000);
    await windowed(n, 64, async (i) => {
      try {
        const m = await jsm.streams.getMessage(streamName(i), { seq: 1 });
        if (m !== null && m.subject === streamSubject(i) && m.data.length === PAYLOAD.length) ok++;
        else firstError ??= `${streamName(i)}: message 1 ${m === null ? "missing" : "differs"}`;
      } catch (err) {
        firstError ??= `${streamName(i)}: ${(err as Error).message}`;
      }
    });
  } finally {
    await nc.close().catch(() => undefined);
  }
  return { ok, first_error: firstError, seconds: round((performance.now() - t) / 1000, 2) };
}

// ---- scenario: many streams ----

async function restartWithStreams(kind: Kind, store: string, logFile: string, n: number, deadlineMs: number, nofile?: number): Promise<Record<string, unknown>> {
  const s = await spawnServer(kind, store, logFile, nofile);
  let lastSeen = -1;
  try {
    const ready_s = await waitReady(
      s,
      async (nc) => {
        const info = await (await manager(nc, 5000)).getAccountInfo();
        lastSeen = info.streams;
        return info.streams === n;
      },
      deadlineMs,
    );
    const after = figures(s);
    const read = await readAll(s.url, n);
    const afterRead = figures(s);
    return { started: true, ready_s: round(ready_s, 3), after_start: after, read_back: read, after_read_back: afterRead, ...(await stopServer(s)) };
  } catch (err) {
    if (!(err instanceof NotReady)) throw err;
    const stop = await stopServer(s);
    return { started: false, reason: err.message, streams_seen: lastSeen, ...stop, log_tail: logTail(s) };
  } finally {
    if (s.exit === null) await stopServer(s);
  }
}

async function streamsScenario(kind: Kind, n: number): Promise<Record<string, unknown>> {
  const work = tempDir(`nagare-scale-${kind}-`);
  const store = join(work, "store");
  const logFile = join(work, "server.log");
  try {
    const s = await spawnServer(kind, store, logFile);
    let created: Record<string, unknown>;
    try {
      await waitReady(s, async (nc) => (await (await manager(nc, 5000)).getAccountInfo()) !== undefined, 60_000);
      const idle = figures(s);
      const nc = await connect({ servers: s.url, reconnect: false, timeout: 5000 });
      try {
        const jsm = await manager(nc);
        const lat = new Float64Array(n);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const t = performance.now();
          await jsm.streams.add({ name: streamName(i), subjects: [streamSubject(i)], storage: StorageType.File }).catch((err: Error) => {
            throw new Error(`creating stream ${i + 1} of ${n}: ${err.message}`);
          });
          lat[i] = performance.now() - t;
          if ((i + 1) % 1000 === 0) console.error(`  ${kind}: ${i + 1} streams, last 1000 at ${mean(lat.subarray(i - 999, i + 1)).toFixed(2)} ms each`);
        }
        const createS = (performance.now() - t0) / 1000;
        const afterCreate = figures(s);
        const js = jetstream(nc, { timeout: 30_000 });
        const t1 = performance.now();
        await windowed(n, 64, (i) => js.publish(streamSubject(i), PAYLOAD));
        const publishS = (performance.now() - t1) / 1000;
        const afterPublish = figures(s);
        const k = Math.min(1000, Math.floor(n / 2));
        created = {
          idle,
          create: {
            total_s: round(createS, 2),
            first_k: k,
            first_k_mean_ms: round(mean(lat.subarray(0, k)), 3),
            last_k_mean_ms: round(mean(lat.subarray(n - k)), 3),
            p50_ms: round(percentile(lat, 50), 3),
            p99_ms: round(percentile(lat, 99), 3),
            max_ms: round(percentile(lat, 100), 3),
          },
          after_create: afterCreate,
          publish_one_each_s: round(publishS, 2),
          after_publish: afterPublish,
          rss_kib_per_empty_stream: round(((afterCreate.rss_mib - idle.rss_mib) * 1024) / n, 1),
          rss_kib_per_first_message: round(((afterPublish.rss_mib - afterCreate.rss_mib) * 1024) / n, 1),
        };
      } finally {
        await nc.close().catch(() => undefined);
      }
      Object.assign(created, await stopServer(s));
    } catch (err) {
      const e = await failed(s, err);
      await stopServer(s);
      throw e;
    }
    created.disk = diskUsage(store);
    console.error(`  ${kind}: restarting`);
    const restart = await restartWithStreams(kind, store, logFile, n, 600_000);
    const restartS = typeof restart.ready_s === "number" ? restart.ready_s : 120;
    console.error(`  ${kind}: restarting with the descriptor limit at ${LIMITED_NOFILE}`);
    const limited = await restartWithStreams(kind, store, logFile, n, Math.max(60_000, restartS * 5_000), LIMITED_NOFILE);
    return { ...created, restart, [`restart_nofile_${LIMITED_NOFILE}`]: limited };
  } finally {
    removeDir(work);
  }
}

// ---- scenario: many messages in one stream ----

async function messagesScenario(kind: Kind, m: number): Promise<Record<string, unknown>> {
  const work = tempDir(`nagare-scale-${kind}-`);
  const store = join(work, "store");
  const logFile = join(work, "server.log");
  const out: Record<string, unknown> = {};
  try {
    const s = await spawnServer(kind, store, logFile);
    try {
      await waitReady(s, async (nc) => (await (await manager(nc, 5000)).getAccountInfo()) !== undefined, 60_000);
      out.idle = figures(s);
      const nc = await connect({ servers: s.url, reconnect: false, timeout: 5000 });
      try {
        const jsm = await manager(nc);
        await jsm.streams.add({ name: "BIG", subjects: ["big"], storage: StorageType.File });
        const js = jetstream(nc, { timeout: 60_000 });
        const t = performance.now();
        let reported = 0;
        await windowed(m, WINDOW, async (i) => {
          await js.publish("big", PAYLOAD);
          if (i - reported >= 1_000_000) {
            reported = i;
            console.error(`  ${kind}: ${i} published`);
          }
        });
        const publishS = (performance.now() - t) / 1000;
        out.publish = { seconds: round(publishS, 2), per_sec: Math.round(m / publishS) };
        out.after_load = figures(s);
        const info = await jsm.streams.info("BIG");
        out.stored = { messages: info.state.messages, bytes: info.state.bytes };
        if (info.state.messages !== m) throw new Error(`${kind} holds ${info.state.messages} messages, ${m} were acknowledged`);
      } finally {
        await nc.close().catch(() => undefined);
      }
      Object.assign(out, await stopServer(s));
    } catch (err) {
      const e = await failed(s, err);
      await stopServer(s);
      throw e;
    }
    out.disk = diskUsage(store);
    console.error(`  ${kind}: restarting`);
    const r = await spawnServer(kind, store, logFile);
    try {
      let messages = -1;
      const ready = await waitReady(
        r,
        async (nc) => {
          messages = (await (await manager(nc, 5000)).streams.info("BIG")).state.messages;
          return true;
        },
        600_000,
      );
      const after = figures(r);
      const nc = await connect({ servers: r.url, reconnect: false, timeout: 5000 });
      let lastIntact = false;
      try {
        const last = await (await manager(nc)).streams.getMessage("BIG", { seq: m });
        lastIntact = last !== null && last.data.length === PAYLOAD.length;
      } finally {
        await nc.close().catch(() => undefined);
      }
      out.restart = { ready_s: round(ready, 3), messages_at_first_info: messages, last_message_read: lastIntact, after_start: after, ...(await stopServer(r)) };
    } catch (err) {
      const e = await failed(r, err);
      await stopServer(r);
      throw e;
    }
    return out;
  } finally {
    removeDir(work);
  }
}

// ---- report ----

type Rec = Record<string, unknown>;
const get = (o: unknown, path: string): number | undefined => {
  let v: unknown = o;
  for (const k of path.split(".")) v = v !== null && typeof v === "object" ? (v as Rec)[k] : undefined;
  return typeof v === "number" ? v : undefined;
};

function ratios(pair: Record<Kind, unknown>, paths: string[]): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const p of paths) {
    const a = get(pair.nagare, p);
    const b = get(pair["nats-server"], p);
    out[p] = a !== undefined && b !== undefined && b !== 0 ? round(a / b, 2) : null;
  }
  return out;
}

const STREAM_RATIOS = [
  "create.first_k_mean_ms",
  "create.last_k_mean_ms",
  "after_publish.rss_mib",
  "after_publish.fds",
  "restart.ready_s",
  "restart.after_start.rss_mib",
  "restart.after_start.fds",
  "disk.disk_mib",
];
const MESSAGE_RATIOS = ["publish.per_sec", "after_load.rss_mib", "restart.ready_s", "restart.after_start.rss_mib", "disk.disk_mib"];

async function runBoth(label: string, fn: (kind: Kind) => Promise<Rec>): Promise<Record<Kind, Rec>> {
  const pair = {} as Record<Kind, Rec>;
  for (const kind of KINDS) {
    console.error(`${label}: ${kind}`);
    try {
      pair[kind] = await fn(kind);
    } catch (err) {
      // One server failing is a finding; the other is still measured.
      const e = err as Error & { logTail?: string };
      console.error(`${label}: ${kind} failed: ${e.message}`);
      pair[kind] = { error: e.message, log_tail: e.logTail ?? "" };
    }
  }
  return pair;
}

function cell(v: number | undefined, digits = 1): string {
  return v === undefined ? "—" : v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

function summary(results: Rec): string {
  const lines: string[] = [];
  const row = (label: string, pair: Record<Kind, unknown>, path: string, digits = 1): void => {
    const a = get(pair.nagare, path);
    const b = get(pair["nats-server"], path);
    const r = a !== undefined && b !== undefined && b !== 0 ? (a / b).toFixed(2) : "—";
    lines.push(`  ${label.padEnd(44)} ${cell(a, digits).padStart(12)} ${cell(b, digits).padStart(12)} ${r.padStart(7)}`);
  };
  const head = (title: string): void => {
    lines.push(title);
    lines.push(`  ${"".padEnd(44)} ${"nagare".padStart(12)} ${"nats-server".padStart(12)} ${"ratio".padStart(7)}`);
  };
  const streams = results.streams as Record<Kind, Rec> | undefined;
  if (streams !== undefined) {
    head(`${STREAMS.toLocaleString("en-US")} streams (descriptor limit ${NOFILE})`);
    const k = Math.min(1000, Math.floor(STREAMS / 2));
    row(`create, first ${k}, ms each`, streams, "create.first_k_mean_ms", 2);
    row(`create, last ${k}, ms each`, streams, "create.last_k_mean_ms", 2);
    row("create, all, s", streams, "create.total_s", 1);
    row("RSS idle, MiB", streams, "idle.rss_mib");
    row("RSS after create, MiB", streams, "after_create.rss_mib");
    row("RSS after one message each, MiB", streams, "after_publish.rss_mib");
    row("fds after one message each", streams, "after_publish.fds", 0);
    row("disk, MiB", streams, "disk.disk_mib");
    row("restart to INFO with all streams, s", streams, "restart.ready_s", 3);
    row("RSS after restart, MiB", streams, "restart.after_start.rss_mib");
    row("fds after restart", streams, "restart.after_start.fds", 0);
    row("RSS after reading every stream, MiB", streams, "restart.after_read_back.rss_mib");
    row("fds after reading every stream", streams, "restart.after_read_back.fds", 0);
    for (const kind of KINDS) {
      const l = streams[kind]?.[`restart_nofile_${LIMITED_NOFILE}`] as Rec | undefined;
      const e = streams[kind]?.error;
      if (e !== undefined) lines.push(`  ${kind}: FAILED: ${String(e)}`);
      else if (l !== undefined) {
        const read = l.read_back as Rec | undefined;
        lines.push(
          `  ${kind}, restart at nofile ${LIMITED_NOFILE}: ` +
            (l.started === true ? `ready in ${String(l.ready_s)} s, ${String(read?.ok)} of ${STREAMS} streams read back${read?.first_error ? ` (first error: ${String(read.first_error)})` : ""}` : `did not serve: ${String(l.reason)}`),
        );
      }
    }
  }
  for (const m of MESSAGES) {
    const pair = results[`messages_${m}`] as Record<Kind, Rec> | undefined;
    if (pair === undefined) continue;
    head(`${m.toLocaleString("en-US")} messages of ${PAYLOAD.length} B in one stream`);
    row("publish, msgs/s", pair, "publish.per_sec", 0);
    row("RSS idle, MiB", pair, "idle.rss_mib");
    row("RSS after the load, MiB", pair, "after_load.rss_mib");
    row("disk, MiB", pair, "disk.disk_mib");
    row("restart to first stream info, s", pair, "restart.ready_s", 3);
    row("RSS after restart, MiB", pair, "restart.after_start.rss_mib");
    for (const kind of KINDS) if (pair[kind]?.error !== undefined) lines.push(`  ${kind}: FAILED: ${String(pair[kind].error)}`);
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer!);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const results: Rec = {};
  const started = performance.now();
  if (runStreams) {
    const pair = await runBoth(`${STREAMS} streams`, (kind) => streamsScenario(kind, STREAMS));
    results.streams = { ...pair, ratio: ratios(pair, STREAM_RATIOS) };
  }
  if (runMessages) {
    for (const m of MESSAGES) {
      const pair = await runBoth(`${m} messages`, (kind) => messagesScenario(kind, m));
      results[`messages_${m}`] = { ...pair, ratio: ratios(pair, MESSAGE_RATIOS) };
    }
  }
  const defaults = STREAMS === DEFAULT_STREAMS && MESSAGES.join() === DEFAULT_MESSAGES.join() && only === undefined;
  const name = defaults ? "scale" : ["scale", ...(runStreams ? [`${STREAMS}streams`] : []), ...(runMessages ? MESSAGES.map((m) => `${m}msgs`) : [])].join("-");
  const report = {
    benchmark: "scale",
    date: new Date().toISOString(),
    quick,
    params: { streams: runStreams ? STREAMS : null, messages: runMessages ? MESSAGES : null, payload_bytes: PAYLOAD.length, publish_window: WINDOW, nofile: NOFILE, limited_nofile: LIMITED_NOFILE },
    wall_s: round((performance.now() - started) / 1000, 1),
    machine: { ...machineInfo(), store_dir: base },
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "@nats-io/jetstream v3 in the benchmark process" },
    notes:
      `Each server in its own process under prlimit --nofile=${NOFILE}:${NOFILE}, file storage, started with \`-js -sd <dir>\` and nothing else. ` +
      "Sync policy: nagare's default (fsync before every ack); nats-server 2.9's default (fsync every 2 minutes, not configurable in 2.9). " +
      "RSS is VmRSS, peak_rss is VmHWM, fds counts /proc/<pid>/fd. Restarts follow a clean stop (SIGTERM). ready_s is from the spawn to the first answer that shows everything: $JS.API.INFO with every stream (streams), or a successful stream info (messages). " +
      `restart_nofile_${LIMITED_NOFILE} runs the server under prlimit --nofile=${LIMITED_NOFILE}:${LIMITED_NOFILE}. Ratios are nagare / nats-server.`,
    results,
  };
  publish(root, name, report, !quick, quick);
  console.log(summary(results));
}

main().catch((err) => {
  console.error(err);
  cleanup();
  process.exit(1);
});
