/** Small helpers for the cluster tests: bounded waits on promises and events, and a logger that keeps lines. */

import { spawn, type ChildProcess } from "node:child_process";
import { after, before } from "node:test";
import type { EventEmitter } from "node:events";
import { MAIN } from "./cli.js";
import type { Logger } from "../../src/util/log.js";
import { ClusterNode } from "../../src/cluster/node.js";
import { startServer, type NagareServer } from "../../src/server/server.js";
import { join } from "node:path";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { startEtcd, type EtcdHarness } from "./etcd.js";
import { waitUntil, waitUntilAsync } from "./clients.js";
import type { JetStreamManager, StreamConfig, StreamInfo } from "@nats-io/jetstream";
import type { NodeRecord } from "../../src/cluster/membership.js";
import type { KafkaListenerOptions } from "../../src/core/options.js";

/** `p`, or a failure naming `what` after `ms`: every wait in a cluster test is bounded. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** The next `event` of `emitter` (its arguments), within `ms`. */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, ms: number): Promise<T> {
  return within(new Promise<T>((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args as T))), ms, `"${event}"`);
}

/** A logger that keeps its lines (tests look for what was said), printing nothing. */
export function memoryLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (msg: string) => void lines.push(`[${level}] ${msg}`);
  return { lines, info: keep("INF"), warn: keep("WRN"), error: keep("ERR"), debug: keep("DBG"), trace: () => {}, debugEnabled: true, traceEnabled: false };
}

let clusters = 0;

/** A cluster name no other test of this process uses: tests share one etcd and must not see each other's keys. */
export function uniqueCluster(tag: string): string {
  return `${tag}-${process.pid}-${++clusters}`;
}

/** The record a test node publishes; `load` may be changed by the test. */
export function testRecord(name: string, cluster: string, load = { connections: 0, subscriptions: 0, streams: 0, partitions: 0, bytes: 0 }): NodeRecord {
  return { id: `id-${name}`, name, cluster, started: new Date(0).toISOString(), client_urls: [`nats://127.0.0.1:${4000 + name.length}`], route_url: null, kafka: null, http: null, state: "serving", load };
}

export interface TestNode {
  node: ClusterNode;
  log: ReturnType<typeof memoryLog>;
  record: NodeRecord;
}

/** A cluster node in this process, as a server would start it: TTL 2 s (etcd's least), 1 s timeouts. */
export async function startTestNode(endpoint: string, cluster: string, name: string, o: { ttlS?: number; startLimitMs?: number; tags?: string[]; routeUrl?: string } = {}): Promise<TestNode> {
  const log = memoryLog();
  const record = testRecord(name, cluster);
  if (o.tags !== undefined) record.tags = o.tags;
  if (o.routeUrl !== undefined) record.route_url = o.routeUrl;
  const node = await ClusterNode.start({
    clusterName: cluster,
    serverName: name,
    etcd: { endpoints: [endpoint], prefix: "/nagare-test", dialTimeoutMs: 1000, requestTimeoutMs: 1000, leaseTtlS: o.ttlS ?? 2 },
    describe: () => record,
    log,
    ...(o.startLimitMs !== undefined ? { startTimeoutMs: o.startLimitMs } : {}),
  });
  return { node, log, record };
}

export interface NodeProcess {
  child: ChildProcess;
  /** `nats://127.0.0.1:<port>` */
  url: string;
  /** `http://127.0.0.1:<port>` when monitoring is on. */
  httpUrl: string | undefined;
  /** stderr so far (the server's log). */
  output(): string;
  /** Resolves with the exit code once the process is gone. */
  exited: Promise<number | null>;
  /** Sends `signal` and waits for the exit (SIGKILL after `ms`). */
  stop(signal?: NodeJS.Signals, ms?: number): Promise<number | null>;
}

/** `nagare server <args>` in its own process, once it says it is ready (within `limitMs`, else killed and rejected). */
export async function spawnNode(args: string[], limitMs = 20_000): Promise<NodeProcess> {
  const child = spawn(process.execPath, [MAIN, "server", "-a", "127.0.0.1", "-p", "-1", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`nagare server ${args.join(" ")} not ready within ${limitMs} ms: ${log}`));
    }, limitMs);
    const check = (): void => {
      if (!/Server is ready/.test(log)) return;
      clearTimeout(timer);
      resolve();
    };
    child.stderr!.on("data", check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`nagare server exited with ${code} before it was ready: ${log}`));
    });
  });
  await ready;
  const port = /Listening for client connections on [\d.]+:(\d+)/.exec(log)![1];
  const http = /Starting http monitor on [\d.]+:(\d+)/.exec(log);
  return {
    child,
    url: `nats://127.0.0.1:${port}`,
    httpUrl: http ? `http://127.0.0.1:${http[1]}` : undefined,
    output: () => log,
    exited,
    stop: async (signal = "SIGTERM", ms = 10_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), ms);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * `spawnNode` for a node restarted right after a kill -9: its name is held
 * by its old lease until etcd expires it. The server waits for that (etcd's
 * timeouts plus one lease) and then refuses to start, as a Kafka broker does
 * while its old registration lives; a loaded machine's etcd may take longer,
 * so this starts it again, as a supervisor would, a few times; so too when
 * etcd could not be reached (a fault test may have killed its leader).
 */
export async function respawnNode(args: string[], limitMs?: number): Promise<NodeProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnNode(args, limitMs);
    } catch (err) {
      if (attempt >= 3 || !/is registered in etcd by|cannot (register in|read the cluster's members from) etcd/.test((err as Error).message)) throw err;
    }
  }
}

/**
 * Node "k" of a cluster of embedded nodes, as a real process (to be
 * killed or paused): tagged `node:k`, its store under `<dir>/k`, a 2 s
 * lease. `jetstreamExtra` goes inside its `jetstream {}` block.
 */
export function spawnNodeK(o: { etcd: string; dir: string; cluster: string }, jetstreamExtra = ""): Promise<NodeProcess> {
  const conf = join(o.dir, "k.conf");
  writeFileSync(
    conf,
    `server_name: k
server_tags: ["node:k"]
jetstream { store_dir: "${join(o.dir, "k")}" ${jetstreamExtra} }
cluster { name: ${o.cluster} }
etcd { endpoints: "${o.etcd}", dial_timeout: 1s, request_timeout: 1s, lease_ttl: 2s }
`,
  );
  return respawnNode(["-c", conf, "--cluster", "nats://127.0.0.1:-1"]);
}

/** Where a test's JetStream nodes live: its etcd, a directory for their stores, the cluster's name. */
export interface JetStreamClusterSite {
  etcd: string;
  dir: string;
  cluster: string;
}

/**
 * A test node's etcd timings (ms), in place of the 2 s lease and 1 s timeouts that make failovers quick: a test that
 * takes no node away can use the product's defaults (5 s each), which a loaded machine's etcd and event loop ride out.
 */
export interface EtcdTimings {
  leaseTtl?: number;
  dialTimeout?: number;
  requestTimeout?: number;
}

/** The product's defaults (src/core/options.ts), for tests that kill no node and need no quick failover. */
export const DEFAULT_ETCD_TIMINGS: EtcdTimings = { leaseTtl: 5000, dialTimeout: 5000, requestTimeout: 5000 };

/**
 * A JetStream node of a test cluster, embedded: store `<dir>/<name>`, tagged
 * `node:<name>` (so tests place streams by tag), a route listener on a free
 * port, etcd with a 2 s lease and 1 s timeouts. A start that failed
 * because etcd answered late (a loaded machine's etcd may take over the 1 s)
 * is tried again, as a supervisor would, a few times: the failed start
 * undid itself (listeners closed, store unlocked, lease revoked).
 */
export async function startJetStreamNode(
  site: JetStreamClusterSite,
  name: string,
  o: Parameters<typeof startJetStreamNodeOnce>[2] = {},
): Promise<NagareServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startJetStreamNodeOnce(site, name, o);
    } catch (err) {
      if (attempt >= 3 || !ETCD_LATE.test((err as Error).message)) throw err;
    }
  }
}

/** A start refused only because etcd was slow: no answer within the request timeout, or the name still held by the lease of the attempt before. */
const ETCD_LATE = /no answer to \S+ in time|is registered in etcd by|cannot (register in|read the cluster's members from) etcd/;

function startJetStreamNodeOnce(
  site: JetStreamClusterSite,
  name: string,
  o: { routes?: string[]; advertise?: string; monitoring?: boolean; storeDir?: string; kafka?: boolean; lameDuck?: { duration: number; grace: number }; maxPayload?: number; maxPending?: number; log?: boolean; kafkaOptions?: KafkaListenerOptions; etcdTimings?: EtcdTimings } = {},
): Promise<NagareServer> {
  const routes = o.routes ?? [];
  return startServer({
    host: "127.0.0.1",
    port: -1,
    // `log`: the node's log in `<dir>/<name>.log`, UTC times (nodeLog reads it).
    ...(o.log ? { noLog: false, logFile: join(site.dir, `${name}.log`), logtimeUtc: true } : {}),
    ...(o.monitoring ? { httpPort: -1 } : {}),
    ...(o.lameDuck ? { lameDuckDuration: o.lameDuck.duration, lameDuckGracePeriod: o.lameDuck.grace } : {}),
    ...(o.kafka ? { kafka: { host: "127.0.0.1", port: -1, initialRebalanceDelayMs: 100, ...o.kafkaOptions } } : {}),
    ...(o.maxPayload !== undefined ? { maxPayload: o.maxPayload } : {}),
    ...(o.maxPending !== undefined ? { maxPending: o.maxPending } : {}),
    jetstream: true,
    storeDir: o.storeDir ?? join(site.dir, name),
    serverName: name,
    serverTags: [`node:${name}`],
    cluster: { name: site.cluster, host: "127.0.0.1", port: -1, ...(routes.length > 0 ? { routes } : {}), ...(o.advertise !== undefined ? { advertise: o.advertise } : {}) },
    etcd: { endpoints: [site.etcd], leaseTtl: 2000, dialTimeout: 1000, requestTimeout: 1000, ...o.etcdTimings },
  });
}

/** The lines a node started with `log` wrote, each with its time (ms since the epoch). */
export function nodeLog(site: JetStreamClusterSite, name: string): Array<{ at: number; line: string }> {
  return readFileSync(join(site.dir, `${name}.log`), "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      const t = /(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})/.exec(line);
      return { at: t === null ? NaN : Date.UTC(+t[1], +t[2] - 1, +t[3], +t[4], +t[5], +t[6], +t[7]), line };
    });
}

/** Nodes a, b and c (b and c dial a's route), once each sees the three in etcd. */
export async function startJetStreamCluster(site: JetStreamClusterSite, o: { monitoring?: boolean; kafka?: boolean; lameDuck?: { duration: number; grace: number }; maxPayload?: number; maxPending?: number; log?: boolean; kafkaOptions?: KafkaListenerOptions; etcdTimings?: EtcdTimings } = {}): Promise<NagareServer[]> {
  const nodes: NagareServer[] = [];
  try {
    const a = await startJetStreamNode(site, "a", o);
    nodes.push(a);
    const seed = [`nats://127.0.0.1:${a.routes!.port}`];
    nodes.push(await startJetStreamNode(site, "b", { ...o, routes: seed }));
    nodes.push(await startJetStreamNode(site, "c", { ...o, routes: seed }));
    await waitUntil(() => nodes.every((n) => n.cluster!.membership.members().length === nodes.length), "every node to see the others");
    return nodes;
  } catch (err) {
    // A node that did start would keep its listeners, its etcd client and so the test process alive for good (a loaded
    // CI run hung so when etcd did not answer node b's start in time): the caller never gets it to close.
    await Promise.all(nodes.map((n) => n.close().catch(() => undefined)));
    throw err;
  }
}

/**
 * A test file's three-node JetStream cluster on an etcd of its own, started
 * before its tests and stopped (clients given first) after them: `nodes`
 * fills once started; `site` names where a node restarted by a test goes,
 * `etcd` the etcd (a test may stop and start it).
 */
export function jetStreamClusterPerFile(tag: string, o: Parameters<typeof startJetStreamCluster>[1] = {}, closeClients: () => Promise<void> = async () => {}): { nodes: NagareServer[]; site: () => JetStreamClusterSite; etcd: () => EtcdHarness } {
  let etcd: EtcdHarness;
  let site: JetStreamClusterSite;
  const nodes: NagareServer[] = [];
  before(async () => {
    etcd = await startEtcd();
    site = { etcd: etcd.endpoint, dir: mkdtempSync(join(tmpdir(), `nagare-${tag}-`)), cluster: uniqueCluster(tag) };
    nodes.push(...(await startJetStreamCluster(site, o)));
  });
  after(async () => {
    await closeClients();
    await Promise.all(nodes.map((n) => n.close()));
    await etcd.close();
    rmSync(site.dir, { recursive: true, force: true });
  });
  return { nodes, site: () => site, etcd: () => etcd };
}

/**
 * Three in-process nodes with Kafka listeners on one etcd, for tests that
 * close nodes under running clients: which nodes are still up, and each
 * one's Kafka address and broker id.
 */
export interface KafkaTestCluster {
  readonly nodes: readonly NagareServer[];
  /** The nodes not closed by `close`. */
  live(): NagareServer[];
  address(n: NagareServer): string;
  brokerId(n: NagareServer): number;
  /** Closes one node (its lease revoked): what a test does to take a broker away. */
  close(n: NagareServer): Promise<void>;
  /** Closes the nodes still up, etcd, and removes their stores. */
  stop(): Promise<void>;
  /** The nodes' etcd (kill and start it to take every node's lease away). */
  readonly etcd: EtcdHarness;
}

export async function startKafkaTestCluster(tag: string, kafkaOptions?: KafkaListenerOptions): Promise<KafkaTestCluster> {
  const etcd = await startEtcd();
  const dir = mkdtempSync(join(tmpdir(), `nagare-${tag}-`));
  let nodes: NagareServer[];
  try {
    nodes = await startJetStreamCluster({ etcd: etcd.endpoint, dir, cluster: uniqueCluster(tag) }, { kafka: true, kafkaOptions });
  } catch (err) {
    // etcd's child process would keep the test process alive.
    await etcd.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const closed = new Set<NagareServer>();
  const live = (): NagareServer[] => nodes.filter((n) => !closed.has(n));
  return {
    nodes,
    live,
    etcd,
    address: (n) => `127.0.0.1:${n.kafkaPort!}`,
    brokerId: (n) => n.kafka!.cluster!.nodeId,
    close: async (n) => {
      closed.add(n);
      await n.close();
    },
    stop: async () => {
      await Promise.all(live().map((n) => n.close()));
      await etcd.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Etcd, two embedded nodes a and b and the child-process node k (spawnNodeK) in a full mesh: what a test kills k in. */
export interface TwoNodesAndK {
  etcd: EtcdHarness;
  site: JetStreamClusterSite;
  a: NagareServer;
  b: NagareServer;
  k: NodeProcess;
}

export async function startTwoNodesAndK(tag: string): Promise<TwoNodesAndK> {
  const etcd = await startEtcd();
  const site: JetStreamClusterSite = { etcd: etcd.endpoint, dir: mkdtempSync(join(tmpdir(), `nagare-${tag}-`)), cluster: uniqueCluster(tag) };
  const a = await startJetStreamNode(site, "a");
  const b = await startJetStreamNode(site, "b");
  const k = await spawnNodeK(site);
  // Routes come from the members' records in etcd: wait for the full mesh.
  await waitUntil(() => a.routes!.peers().length === 2 && b.routes!.peers().length === 2, "a full mesh of three");
  return { etcd, site, a, b, k };
}

/** Stops what startTwoNodesAndK started: the test's clients, `k` as the test left it (woken if paused), a and b, etcd; removes the stores. */
export async function stopTwoNodesAndK(c: TwoNodesAndK | undefined, k: NodeProcess | undefined, clients: ReadonlyArray<{ close(): Promise<void> }>): Promise<void> {
  for (const nc of clients) await nc.close().catch(() => undefined);
  if (k !== undefined) {
    k.child.kill("SIGCONT");
    await k.stop("SIGKILL");
  }
  if (c === undefined) return;
  await Promise.all([c.a.close(), c.b.close()]);
  await c.etcd.close();
  rmSync(c.site.dir, { recursive: true, force: true });
}

/**
 * A stream of three replicas led by k (spawnNodeK) in a cluster of a, b and
 * k: a stream of one replica on a and one on b first, so that k, leading
 * nothing, leads the next stream placed.
 */
export async function addStreamLedByK(jsm: JetStreamManager, name: string, subjects: string[], config: Partial<StreamConfig> = {}): Promise<StreamInfo> {
  for (const n of ["a", "b"]) await jsm.streams.add({ name: `${name}_on_${n}`, subjects: [`${name}.on.${n}`], placement: { cluster: "", tags: [`node:${n}`] } });
  const info = await jsm.streams.add({ ...config, name, subjects, num_replicas: 3 });
  if (info.cluster?.leader !== "k") throw new Error(`stream ${name} is led by ${info.cluster?.leader}, not k`);
  return info;
}

/** The ack floor of a consumer as the server `jsm` talks to serves it, once it serves the consumer; -1 if it does not within `ms`. */
export async function servedAckFloor(jsm: JetStreamManager, stream: string, consumer: string, ms = 20_000): Promise<number> {
  let floor = -1;
  await waitUntilAsync(
    async () => {
      const c = await jsm.consumers.info(stream, consumer).catch(() => null);
      if (c !== null) floor = c.ack_floor.stream_seq;
      return c !== null;
    },
    `consumer ${consumer} served`,
    ms,
  ).catch(() => undefined);
  return floor;
}
