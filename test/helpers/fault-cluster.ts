/**
 * The cluster of a fault test: a three-member etcd (`startEtcdCluster`) and
 * nagare nodes as child processes (`nagare server -c <file>`, through
 * `spawnNode`), each with its own store, with a fault-injecting network
 * (`FaultNet`) in front of everything a node talks to or is reached on:
 *
 * - its route listener: peers dial a proxy, because the node advertises the
 *   proxy's address (`cluster { advertise }`), and the proxy tells the
 *   dialling peers apart by their route INFO;
 * - its etcd: the node's endpoints are proxies of its own, one per member,
 *   so a node can be cut off from etcd while the others are not;
 * - its NATS clients: a test connects to `natsUrl` (a proxy), with the
 *   client's cluster updates off, so that clients stay behind the proxies.
 *
 * Kafka clients reach the Kafka listeners directly: Metadata advertises a
 * broker's own port (the Kafka door's `advertise` is a host only), so a
 * proxy could carry only the bootstrap. Ports are chosen once and kept
 * across restarts, so a restarted node is where its proxies and its Kafka
 * clients expect it.
 */

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts, startEtcdCluster, type EtcdClusterHarness } from "./etcd.js";
import { FaultNet, type FaultProxy } from "./tcp-proxy.js";
import { respawnNode, type NodeProcess } from "./cluster.js";

/** The node's lease: etcd's least is 2 s; 3 s leaves a paused node (fenced at 4/5 of it) margin on a loaded machine. */
export const LEASE_MS = 3000;

export interface FaultNode {
  readonly name: string;
  /** The client proxy: what NATS clients connect to. */
  readonly natsUrl: string;
  /** host:port of the Kafka listener (direct). */
  readonly kafka: string;
  readonly running: boolean;
  readonly paused: boolean;
  /** The process's log so far (this run of it). */
  output(): string;
  /** Every run's log, oldest first, each headed by when it started: what a failing run's report quotes. */
  logs(): string;
  /** kill -9; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same configuration and data; resolves once it says it is ready. */
  start(): Promise<void>;
  /** Its JetStream store directory (removed by the cluster's close). */
  readonly storeDir: string;
  /** Exits nobody asked for (a crash is a bug the run must report): the code and the log's tail. */
  readonly crashes: string[];
  /** SIGSTOP / SIGCONT. */
  /** Takes every free byte of the node's own disk (startFaultCluster's diskMb): its writes fail with ENOSPC until freeDisk. */
  fillDisk(): void;
  freeDisk(): void;
  pause(): void;
  resume(): void;
}

export interface FaultCluster {
  readonly etcd: EtcdClusterHarness;
  readonly net: FaultNet;
  readonly nodes: readonly FaultNode[];
  readonly name: string;
  node(name: string): FaultNode;
  close(): Promise<void>;
}

/**
 * Whether this process may mount a tmpfs (root, or CAP_SYS_ADMIN), which
 * the disk-full fault needs: each node's store on its own small file
 * system, filled to the last byte to fail the node's writes with the
 * kernel's own ENOSPC, with no fault switch in the server.
 */
export function canMountDisks(): boolean {
  if (process.platform !== "linux") return false;
  const probe = mkdtempSync(join(tmpdir(), "nagare-mount-probe-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], { stdio: "ignore" });
    execFileSync("umount", [probe], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

const BALLAST = "ballast";

/** Unmounts what startFaultCluster mounted (lazily: a node killed a moment ago may still hold a file open). */
function unmountAll(mounts: string[]): void {
  for (const m of mounts) {
    try {
      execFileSync("umount", ["-l", m], { stdio: "ignore" });
    } catch {
      // not mounted
    }
  }
}

/**
 * `diskMb`: each node's store on a tmpfs of that size (needs canMountDisks()),
 * so that fillDisk can make its writes fail.
 */
export async function startFaultCluster(o: { names?: string[]; cluster?: string; leaseMs?: number; diskMb?: number } = {}): Promise<FaultCluster> {
  // The ports the OS handed out (freePorts) are free again until a node binds them; a test running beside this one may
  // take one first. Such a start is given up whole (startOnce cleans up) and made again on new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(o);
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(o: { names?: string[]; cluster?: string; leaseMs?: number; diskMb?: number }): Promise<FaultCluster> {
  const leaseMs = o.leaseMs ?? LEASE_MS;
  const names = o.names ?? ["a", "b", "c"];
  const clusterName = o.cluster ?? `faults-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), "nagare-faults-"));
  const mounts: string[] = [];
  const etcd = await startEtcdCluster(3);
  const net = new FaultNet();
  const nodes: FaultNode[] = [];
  try {
    for (const name of names) {
      let storeDir = join(dir, name);
      let disk: string | null = null;
      if (o.diskMb !== undefined) {
        disk = join(dir, `${name}-disk`);
        mkdirSync(disk);
        execFileSync("mount", ["-t", "tmpfs", "-o", `size=${o.diskMb}m`, "tmpfs", disk], { stdio: "ignore" });
        mounts.push(disk);
        storeDir = join(disk, "store");
      }
      const [client, route, kafka] = await freePorts(3);
      const routeProxy = await net.proxy(name, route, { identify: "nats-route" });
      const clientProxy = await net.proxy(name, client, { from: "client" });
      const etcdProxies: FaultProxy[] = [];
      for (const m of etcd.members) etcdProxies.push(await net.proxy(m.name, m.clientPort, { from: name }));
      const conf = join(dir, `${name}.conf`);
      // Leaders hand partitions back to their preferred replicas every 5 s (Kafka's auto leader rebalance, 5 minutes by
      // default): failovers are followed by hand-overs, under the same faults.
      writeFileSync(
        conf,
        `server_name: ${name}
server_tags: ["node:${name}"]
listen: 127.0.0.1:${client}
jetstream { store_dir: "${storeDir}", sync_interval: always }
kafka { host: 127.0.0.1, port: ${kafka}, group_initial_rebalance_delay: 200ms, leader_imbalance_check_interval: "5s" }
cluster { name: ${clusterName}, listen: 127.0.0.1:${route}, advertise: "127.0.0.1:${routeProxy.port}" }
etcd {
  endpoints: [${etcdProxies.map((p) => `"http://127.0.0.1:${p.port}"`).join(", ")}]
  dial_timeout: 1s
  request_timeout: 1s
  lease_ttl: ${leaseMs / 1000}s
}
`,
      );
      nodes.push(faultNode(name, conf, storeDir, disk, client, `nats://127.0.0.1:${clientProxy.port}`, `127.0.0.1:${kafka}`));
    }
    for (const n of nodes) await n.start();
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill()));
    await net.close();
    await etcd.close();
    unmountAll(mounts);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    etcd,
    net,
    nodes,
    name: clusterName,
    node: (n) => nodes.find((x) => x.name === n) ?? assertNever(n),
    close: async () => {
      await Promise.all(nodes.map((n) => n.kill()));
      await net.close();
      await etcd.close();
      unmountAll(mounts);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function assertNever(name: string): never {
  throw new Error(`no node ${name}`);
}

/** Node processes of this test process, killed if it exits without closing them (a timed-out test, a crash). */
const live = new Set<NodeProcess>();
process.on("exit", () => {
  for (const p of live) p.child.kill("SIGKILL");
});

function faultNode(name: string, conf: string, storeDir: string, disk: string | null, clientPort: number, natsUrl: string, kafka: string): FaultNode {
  let proc: NodeProcess | undefined;
  let paused = false;
  const earlier: string[] = [];
  let startedAt = "";
  const crashes: string[] = [];
  return {
    name,
    storeDir,
    crashes,
    natsUrl,
    kafka,
    get running() {
      return proc !== undefined;
    },
    get paused() {
      return paused;
    },
    output: () => proc?.output() ?? "",
    logs: () => [...earlier, ...(proc === undefined ? [] : [`=== ${name} started ${startedAt}\n${proc.output()}`])].join("\n"),
    kill: async () => {
      const p = proc;
      proc = undefined;
      paused = false;
      if (p === undefined) return;
      earlier.push(`=== ${name} started ${startedAt}\n${p.output()}=== killed ${new Date().toISOString()}`);
      await p.stop("SIGKILL");
      live.delete(p);
    },
    start: async () => {
      if (proc !== undefined) throw new Error(`node ${name} is running`);
      startedAt = new Date().toISOString();
      proc = await respawnNode(["-c", conf, "-p", String(clientPort)], 30_000);
      live.add(proc);
      const p = proc;
      void p.exited.then((code) => {
        if (proc !== p) return; // killed by the test
        proc = undefined;
        live.delete(p);
        earlier.push(`=== ${name} started ${startedAt}\n${p.output()}=== exited by itself (${code})`);
        crashes.push(`node ${name} exited by itself (${code}): ${p.output().slice(-3000)}`);
      });
    },
    fillDisk: () => {
      if (disk === null) throw new Error(`node ${name} has no disk of its own (startFaultCluster's diskMb)`);
      // Every free byte: each write of the node's from now on fails with ENOSPC. The node writes on
      // meanwhile, so a file of what was free a moment ago may no longer fit: then again with what is free now.
      for (let i = 0; i < 20; i++) {
        const { bavail, bsize } = statfsSync(disk);
        if (bavail === 0) return;
        try {
          execFileSync("fallocate", ["-l", String(bavail * bsize), join(disk, `${BALLAST}-${i}`)], { stdio: "ignore" });
        } catch {
          rmSync(join(disk, `${BALLAST}-${i}`), { force: true });
        }
      }
    },
    freeDisk: () => {
      if (disk === null) return;
      for (const f of readdirSync(disk)) if (f.startsWith(BALLAST)) rmSync(join(disk, f), { force: true });
    },
    pause: () => {
      if (proc === undefined) return;
      proc.child.kill("SIGSTOP");
      paused = true;
    },
    resume: () => {
      if (proc === undefined) return;
      proc.child.kill("SIGCONT");
      paused = false;
    },
  };
}
