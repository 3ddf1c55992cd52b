/**
 * What the benchmarks share: starting a server in its own child process
 * (pinned to its own core when the machine has two), reading its CPU time and
 * memory from /proc, summarising repeated runs, and the pub→sub load that
 * the NATS benchmarks share.
 */

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createServer, connect as netConnect } from "node:net";
import { cpus } from "node:os";
import { connect as natsConnect, type ConnectionOptions, type NatsConnection } from "nats";

const TICKS_PER_SEC = 100; // Linux USER_HZ for /proc/<pid>/stat

export interface Target {
  name: string;
  command: string;
  args(port: number): string[];
}

export function natsServerPath(): string | null {
  for (const p of ["/usr/sbin/nats-server", "/usr/bin/nats-server"]) if (existsSync(p)) return p;
  return null;
}

// ---- process measurement ----

/** The flags every benchmark takes: `--quick` (small, writes nothing), `--only=<names>`, `--profile` (one repeat). */
export function benchFlags(): { quick: boolean; only: string | undefined; profile: boolean; repeats: number } {
  const quick = process.argv.includes("--quick");
  const profile = process.argv.includes("--profile");
  const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
  return { quick, only, profile, repeats: quick || profile ? 1 : 5 };
}

/** The machine a result was measured on, for every report: cores, CPU, Node, and how processes were pinned. */
export function machineInfo(pinned = "client on core 0, server on core 1"): { cores: number; cpu: string | undefined; node: string; pinned: string } {
  return { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, pinned: pin ? pinned : "no" };
}

/** Debian's nats-server, or the benchmark exits saying how to install it. */
export function requireNatsServer(): string {
  const path = natsServerPath();
  if (path === null) {
    console.error("nats-server is not installed: sudo apt-get install -y nats-server");
    process.exit(2);
  }
  return path;
}

export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / TICKS_PER_SEC;
}

export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = status.match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Open file descriptors of a process (entries of /proc/<pid>/fd). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The process's soft limit on open files ("Max open files" in /proc/<pid>/limits). */
export function fdLimit(pid: number): number {
  const m = readFileSync(`/proc/${pid}/limits`, "utf8").match(/^Max open files\s+(\d+|unlimited)/m);
  return m === null || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** `n` distinct free ports: all held open at once while they are picked, so none is handed out twice. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import("node:net").Server>((res, rej) => {
          const s = createServer();
          s.once("error", rej);
          s.listen(0, "127.0.0.1", () => res(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Waits until the port accepts connections and, by default, speaks first (a NATS INFO); `until: "connect"` for listeners that wait for the client (Kafka). */
export async function waitForPort(port: number, deadlineMs = 10_000, until: "data" | "connect" = "data"): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = netConnect(port, "127.0.0.1");
      s.once(until, () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`server on ${port} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Running {
  target: Target;
  proc: ChildProcess;
  pid: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * On a machine with two or more cores the client load runs on core 0 and the
 * server on core 1, so that neither is measured while the scheduler moves the
 * other onto its core: run-to-run spread drops, and both servers get the same
 * single core (which is all a 2-core box leaves a server next to its load).
 */
export const pin = cpus().length >= 2 && existsSync("/usr/bin/taskset") && !process.argv.includes("--no-pin");
if (pin) execFileSync("taskset", ["-a", "-cp", "0", String(process.pid)], { stdio: "ignore" });

/** Starts `target` on `port` (default: a free one). */
export async function start(target: Target, port?: number): Promise<Running> {
  port ??= await freePort();
  const proc = pin
    ? spawn("taskset", ["-c", "1", target.command, ...target.args(port)], { stdio: "ignore" })
    : spawn(target.command, target.args(port), { stdio: "ignore" });
  await waitForPort(port);
  return {
    target,
    proc,
    pid: proc.pid!,
    url: `nats://127.0.0.1:${port}`,
    stop: () =>
      new Promise((res) => {
        proc.once("exit", () => res());
        proc.kill("SIGTERM");
      }),
  };
}

/** Keeps `window` operations in flight until `count` are done. */
export async function windowed(count: number, window: number, op: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) await op(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, count) }, lane));
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function median<T>(runs: T[], key: (t: T) => number): T {
  const sorted = [...runs].sort((a, b) => key(a) - key(b));
  return sorted[Math.floor(sorted.length / 2)];
}

/** `nats-server --version`, for the report. */
export function natsServerVersion(path: string): Promise<string> {
  return new Promise<string>((res) => {
    const p = spawn(path, ["--version"]);
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.on("exit", () => res(out.trim()));
  });
}

/** Prints the report (unless `echo` is false); a full run also writes it to bench/results/<name>-<date>.json. */
export function publish(root: string, name: string, report: { date: string }, save: boolean, echo = true): void {
  const text = JSON.stringify(report, null, 2);
  if (save) {
    const dir = join(root, "bench", "results");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${name}-${report.date.slice(0, 10)}.json`);
    writeFileSync(file, text + "\n");
    console.error(`wrote ${file}`);
  }
  if (echo) console.log(text);
}

// ---- core NATS load (the `nats` v2 client in this process) ----

/** Resolves once `count()` reaches `target`; the subscriber callbacks call `check()`. */
class Progress {
  private want = Infinity;
  private wake: (() => void) | null = null;
  constructor(private readonly count: () => number) {}
  check(): void {
    if (this.wake !== null && this.count() >= this.want) {
      const w = this.wake;
      this.wake = null;
      this.want = Infinity;
      w();
    }
  }
  until(n: number): Promise<void> {
    if (this.count() >= n) return Promise.resolve();
    return new Promise((r) => {
      this.want = n;
      this.wake = r;
    });
  }
}

export interface Throughput {
  published: number;
  delivered: number;
  seconds: number;
  msgs_per_sec: number; // delivered per second
  server_cpu_us_per_msg: number; // server CPU per delivered message (summed over the nodes of a cluster)
  server_cpu_s_by_node?: number[]; // a cluster's nodes, in Deployment.pids order
}

export interface PubSubOptions {
  size: number;
  total: number;
  subs: number;
  queue?: string;
  window: number;
  /** What the subscribers subscribe to (default: the published subject, `bench.pubsub`). */
  filter?: string;
  /** Client options for every connection besides the server's URL (TLS, credentials). */
  client?: Omit<ConnectionOptions, "servers">;
}

/**
 * Where the load connects and whose CPU is counted: one server, or the nodes
 * of a cluster (publisher on one node, subscribers spread over others, CPU
 * summed over every node).
 */
export interface Deployment {
  pubUrl: string;
  /** Subscriber i connects to `subUrls[i % subUrls.length]`. */
  subUrls: string[];
  pids: number[];
}

function deploymentOf(s: Running | Deployment): Deployment {
  return "pubUrl" in s ? s : { pubUrl: s.url, subUrls: [s.url], pids: [s.pid] };
}

/** Subject of the readiness probe in a cluster: outside `bench.>`, so no filter counts it. */
const PROBE_SUBJECT = "_bench.ready";

/**
 * In a cluster a subscription is known on the publisher's node only once its
 * interest has crossed the route: each subscriber subscribes a probe after
 * its real subscription (interest travels in order), and the publisher
 * publishes probes until every subscriber has had one.
 */
async function untilInterestCrossed(pub: NatsConnection, subs: NatsConnection[], deadlineMs = 20_000): Promise<void> {
  const seen = new Array<boolean>(subs.length).fill(false);
  const probes = subs.map((nc, i) => nc.subscribe(PROBE_SUBJECT, { callback: () => (seen[i] = true) }));
  for (const nc of subs) await nc.flush();
  const deadline = Date.now() + deadlineMs;
  while (!seen.every(Boolean)) {
    if (Date.now() > deadline) throw new Error("subscriptions did not reach the publisher's node");
    pub.publish(PROBE_SUBJECT);
    await pub.flush();
    await Promise.all(subs.map((nc) => nc.flush()));
    if (!seen.every(Boolean)) await new Promise((r) => setTimeout(r, 20));
  }
  for (const p of probes) p.unsubscribe();
  for (const nc of subs) await nc.flush();
}

/**
 * One publisher, `subs` subscriber connections (a queue group when `queue`),
 * `total` messages of `size` bytes, at most `window` published-but-undelivered.
 */
export async function pubSub(server: Running | Deployment, opts: PubSubOptions): Promise<Throughput> {
  const at = deploymentOf(server);
  const subject = "bench.pubsub";
  const subConns: NatsConnection[] = [];
  let delivered = 0;
  const fanout = opts.queue ? 1 : opts.subs;
  const progress = new Progress(() => delivered);
  for (let i = 0; i < opts.subs; i++) {
    const nc = await natsConnect({ ...opts.client, servers: at.subUrls[i % at.subUrls.length], noEcho: true });
    nc.subscribe(opts.filter ?? subject, {
      queue: opts.queue,
      callback: () => {
        delivered++;
        if ((delivered & 1023) === 0 || delivered === opts.total * fanout) progress.check();
      },
    });
    await nc.flush();
    subConns.push(nc);
  }
  const pub = await natsConnect({ ...opts.client, servers: at.pubUrl });
  if (at.pids.length > 1) await untilInterestCrossed(pub, subConns);
  const payload = new Uint8Array(opts.size).fill(0x61);
  const batch = Math.min(1000, opts.window);

  const cpu0 = at.pids.map(cpuSeconds);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  while (sent < opts.total) {
    const n = Math.min(batch, opts.total - sent);
    for (let i = 0; i < n; i++) pub.publish(subject, payload);
    sent += n;
    // Keep the window: wait until the subscribers are within `window` of the publisher.
    const behind = sent - opts.window;
    if (behind > 0) await progress.until(behind * fanout);
  }
  await progress.until(opts.total * fanout);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const byNode = at.pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]);
  const cpu = byNode.reduce((a, b) => a + b, 0);

  await pub.close();
  await Promise.all(subConns.map((c) => c.close()));
  return {
    published: opts.total,
    delivered,
    seconds: round(seconds, 3),
    msgs_per_sec: Math.round(delivered / seconds),
    server_cpu_us_per_msg: round((cpu * 1e6) / delivered, 3),
    ...(byNode.length > 1 ? { server_cpu_s_by_node: byNode.map((x) => round(x, 2)) } : {}),
  };
}
