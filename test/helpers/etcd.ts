/**
 * A real etcd (Debian's etcd-server, 3.4) for cluster tests: one member on
 * loopback, a temporary data directory, ports the OS picked. etcd must be
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

export async function startEtcd(o: { tls?: EtcdTlsFiles } = {}): Promise<EtcdHarness> {
  const dataDir = mkdtempSync(join(tmpdir(), "nagare-etcd-"));
  const scheme = o.tls ? "https" : "http";
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let clientPort = 0;
  let peerPort = 0;

  const launch = async (): Promise<void> => {
    const client = `${scheme}://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const args = [
      "--name",
      "n0",
      "--data-dir",
      join(dataDir, "data"),
      "--listen-client-urls",
      client,
      "--advertise-client-urls",
      client,
      "--listen-peer-urls",
      peer,
      "--initial-advertise-peer-urls",
      peer,
      "--initial-cluster",
      `n0=${peer}`,
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
    ];
    if (o.tls) {
      args.push("--cert-file", o.tls.cert, "--key-file", o.tls.key, "--trusted-ca-file", o.tls.ca);
      if (o.tls.clientCertAuth) args.push("--client-cert-auth");
    }
    const child = spawn("etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
    live.add(child);
    exited = new Promise((resolve) => child.once("exit", () => {
      live.delete(child);
      resolve();
    }));
    await new Promise<void>((resolve, reject) => {
      let log = "";
      let ready = false;
      const timer = setTimeout(() => fail(new Error(`etcd not ready within ${START_LIMIT_MS} ms: ${log.slice(-2000)}`)), START_LIMIT_MS);
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
        if (!ready) fail(Object.assign(new Error(`etcd exited (${code ?? signal}) before it was ready: ${log.slice(-2000)}`), { inUse: /address already in use/.test(log) }));
      });
      child.once("error", fail);
    });
    proc = child;
  };

  for (let attempt = 1; ; attempt++) {
    [clientPort, peerPort] = await freePorts(2);
    try {
      await launch();
      break;
    } catch (err) {
      await exited;
      if (!(err as { inUse?: boolean }).inUse || attempt >= START_ATTEMPTS) {
        rmSync(dataDir, { recursive: true, force: true });
        throw err;
      }
      rmSync(join(dataDir, "data"), { recursive: true, force: true });
    }
  }

  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const p = proc;
    proc = undefined;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(sig);
    await exited;
  };

  return {
    endpoint: `${scheme}://127.0.0.1:${clientPort}`,
    clientPort,
    dataDir,
    get running() {
      return proc !== undefined;
    },
    get pid() {
      return proc?.pid;
    },
    kill: () => signal("SIGKILL"),
    stop: () => signal("SIGTERM"),
    start: async () => {
      if (proc !== undefined) throw new Error("etcd is running");
      await launch();
    },
    close: async () => {
      await signal("SIGTERM");
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Ports the OS hands out now (held together, so they differ); free again when this returns. */
async function freePorts(n: number): Promise<number[]> {
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
