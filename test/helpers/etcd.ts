/**
 * A real etcd (Debian's etcd-server, 3.4) for cluster tests: one member on
 * loopback (`startEtcd`), or three (`startEtcdCluster`, for fault tests that
 * kill etcd's leader), a temporary data directory, ports the OS picked. etcd must be
 * told its ports, so free ones are found by binding port 0 first; another
 * process may take one in between, so a start that fails to bind is tried
 * again on new ports. `kill()` and `stop()` wait for the process to exit;
 * `start()` brings it back on the same ports and data (an etcd restart, as
 * clients see it); `close()` stops it and removes the directory.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface EtcdTlsFiles {
  ca: string;
  /** The server certificate must allow clientAuth too when `clientCertAuth`: etcd 3.4's gateway presents it to etcd's own gRPC server. */
  cert: string;
  key: string;
  /** Require client certificates signed by `ca` (etcd's --client-cert-auth). */
  clientCertAuth?: boolean;
}

export interface EtcdHarness {
  /** `http://127.0.0.1:<port>` (https with TLS). */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly dataDir: string;
  readonly running: boolean;
  /** The etcd process's id while it runs. */
  readonly pid: number | undefined;
  /** SIGKILL, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM, a clean stop; resolves once the process is gone. */
  stop(): Promise<void>;
  /** Starts it again on the same ports and data. */
  start(): Promise<void>;
  /** Stops it and removes its data directory. */
  close(): Promise<void>;
}

const READY = /serving client traffic/;
/** etcd 3.4 is ready within a second on an idle machine; a loaded 2-core one may take several. */
const START_LIMIT_MS = 20_000;
const START_ATTEMPTS = 5;

/** etcd processes of this test process, killed if it exits without closing them. */
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

/** One etcd process: its arguments, and the wait until it serves clients. */
interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  proc: ChildProcess | undefined;
  exited: Promise<void>;
}

function memberArgs(m: Member, initialCluster: string, scheme: string, tls: EtcdTlsFiles | undefined): string[] {
  const client = `${scheme}://127.0.0.1:${m.clientPort}`;
  const peer = `http://127.0.0.1:${m.peerPort}`;
  const args = [
    "--name",
    m.name,
    "--data-dir",
    m.dataDir,
    "--listen-client-urls",
    client,
    "--advertise-client-urls",
    client,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    initialCluster,
    "--initial-cluster-token",
    "nagare-test",
    "--logger",
    "zap",
    "--log-outputs",
    "stderr",
  ];
  if (tls) {
    args.push("--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca);
    if (tls.clientCertAuth) args.push("--client-cert-auth");
  }
  return args;
}

/** Starts `m` and resolves once it serves clients (a member of several does so once the cluster has a leader). */
async function launchMember(m: Member, args: string[]): Promise<void> {
  const child = spawn("etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  m.exited = new Promise((resolve) => child.once("exit", () => {
    live.delete(child);
    resolve();
  }));
  await new Promise<void>((resolve, reject) => {
    let log = "";
    let ready = false;
    const timer = setTimeout(() => fail(new Error(`etcd ${m.name} not ready within ${START_LIMIT_MS} ms: ${log.slice(-2000)}`)), START_LIMIT_MS);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(err);
    };
    child.stderr!.on("data", (d: Buffer) => {
      if (ready) return; // drained from here on
      log += d.toString();
      if (READY.test(log)) {
        ready = true;
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code, signal) => {
      if (!ready) fail(Object.assign(new Error(`etcd ${m.name} exited (${code ?? signal}) before it was ready: ${log.slice(-2000)}`), { inUse: /address already in use/.test(log) }));
    });
    child.once("error", fail);
  });
  m.proc = child;
}

async function signalMember(m: Member, sig: NodeJS.Signals): Promise<void> {
  const p = m.proc;
  if (sig !== "SIGSTOP" && sig !== "SIGCONT") m.proc = undefined;
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
  p.kill(sig);
  if (sig !== "SIGSTOP" && sig !== "SIGCONT") await m.exited;
}

export async function startEtcd(o: { tls?: EtcdTlsFiles } = {}): Promise<EtcdHarness> {
  const dataDir = mkdtempSync(join(tmpdir(), "nagare-etcd-"));
  const scheme = o.tls ? "https" : "http";
  const m: Member = { name: "n0", clientPort: 0, peerPort: 0, dataDir: join(dataDir, "data"), proc: undefined, exited: Promise.resolve() };
  const launch = (): Promise<void> => launchMember(m, memberArgs(m, `n0=http://127.0.0.1:${m.peerPort}`, scheme, o.tls));

  for (let attempt = 1; ; attempt++) {
    [m.clientPort, m.peerPort] = await freePorts(2);
    try {
      await launch();
      break;
    } catch (err) {
      await m.exited;
      if (!(err as { inUse?: boolean }).inUse || attempt >= START_ATTEMPTS) {
        rmSync(dataDir, { recursive: true, force: true });
        throw err;
      }
      rmSync(m.dataDir, { recursive: true, force: true });
    }
  }

  return {
    endpoint: `${scheme}://127.0.0.1:${m.clientPort}`,
    clientPort: m.clientPort,
    dataDir,
    get running() {
      return m.proc !== undefined;
    },
    get pid() {
      return m.proc?.pid;
    },
    kill: () => signalMember(m, "SIGKILL"),
    stop: () => signalMember(m, "SIGTERM"),
    start: async () => {
      if (m.proc !== undefined) throw new Error("etcd is running");
      await launch();
    },
    close: async () => {
      await signalMember(m, "SIGTERM");
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** One member of an etcd cluster started by `startEtcdCluster`. */
export interface EtcdMember {
  readonly name: string;
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly running: boolean;
  readonly pid: number | undefined;
  /** SIGKILL, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data; resolves once it serves clients (the cluster must have a quorum). */
  start(): Promise<void>;
}

export interface EtcdClusterHarness {
  readonly members: readonly EtcdMember[];
  /** Every member's client URL: what nodes are configured with. */
  readonly endpoints: string[];
  /** The member the running members agree leads, or undefined while they do not (an election, no quorum). */
  leader(): Promise<EtcdMember | undefined>;
  /** Waits (within `ms`) for a leader every running member agrees on. */
  waitForLeader(ms?: number): Promise<EtcdMember>;
  /** Stops every member and removes the data. */
  close(): Promise<void>;
}

/**
 * Three etcd members (m0, m1, m2) on loopback forming one cluster, for
 * fault tests: kill the leader (`(await etcd.leader()).kill()`), restart it
 * (`start()`), and the other two elect a new one. The members start
 * together, as a cluster must (each waits for a quorum).
 */
export async function startEtcdCluster(size = 3): Promise<EtcdClusterHarness> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-etcd3-"));
  const members: Member[] = Array.from({ length: size }, (_, i) => ({ name: `m${i}`, clientPort: 0, peerPort: 0, dataDir: join(dir, `m${i}`), proc: undefined, exited: Promise.resolve() }));
  let initialCluster = "";
  const launch = (m: Member): Promise<void> => launchMember(m, memberArgs(m, initialCluster, "http", undefined));

  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(2 * size);
    members.forEach((m, i) => {
      m.clientPort = ports[2 * i];
      m.peerPort = ports[2 * i + 1];
    });
    initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(",");
    const started = await Promise.allSettled(members.map((m) => launch(m)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed === undefined) break;
    await Promise.all(members.map((m) => signalMember(m, "SIGKILL")));
    await Promise.all(members.map((m) => m.exited));
    for (const m of members) rmSync(m.dataDir, { recursive: true, force: true });
    const inUse = started.some((r) => r.status === "rejected" && (r.reason as { inUse?: boolean }).inUse);
    if (!inUse || attempt >= START_ATTEMPTS) {
      rmSync(dir, { recursive: true, force: true });
      throw failed.reason;
    }
  }

  const views: EtcdMember[] = members.map((m) => ({
    name: m.name,
    endpoint: `http://127.0.0.1:${m.clientPort}`,
    clientPort: m.clientPort,
    get running() {
      return m.proc !== undefined;
    },
    get pid() {
      return m.proc?.pid;
    },
    kill: () => signalMember(m, "SIGKILL"),
    start: async () => {
      if (m.proc !== undefined) throw new Error(`etcd ${m.name} is running`);
      await launch(m);
    },
  }));

  const leader = async (): Promise<EtcdMember | undefined> => {
    const running = views.filter((v) => v.running);
    const said = await Promise.all(running.map((v) => memberStatus(v.endpoint)));
    // The leader's member id as each running member reports it; the one whose own id it is.
    let leaderId: string | undefined;
    let leaderView: EtcdMember | undefined;
    for (let i = 0; i < running.length; i++) {
      const s = said[i];
      if (s === undefined || s.leader === "0") return undefined;
      if (leaderId !== undefined && s.leader !== leaderId) return undefined;
      leaderId = s.leader;
      if (s.memberId === s.leader) leaderView = running[i];
    }
    return leaderView;
  };

  return {
    members: views,
    endpoints: views.map((v) => v.endpoint),
    leader,
    waitForLeader: async (ms = 20_000) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const l = await leader();
        if (l !== undefined) return l;
        if (Date.now() > deadline) throw new Error(`etcd: no leader every running member agrees on within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    close: async () => {
      await Promise.all(members.map((m) => signalMember(m, "SIGKILL")));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A member's own id and the leader it knows (etcd's Maintenance.Status over the JSON gateway); undefined if it does not answer within a second. */
async function memberStatus(endpoint: string): Promise<{ memberId: string; leader: string } | undefined> {
  try {
    const res = await fetch(`${endpoint}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(1000) });
    if (!res.ok) return undefined;
    const j = (await res.json()) as { header?: { member_id?: string }; leader?: string };
    if (j.header?.member_id === undefined) return undefined;
    return { memberId: j.header.member_id, leader: j.leader ?? "0" };
  } catch {
    return undefined;
  }
}

/** Ports the OS hands out now (held together, so they differ); free again when this returns. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}
