/**
 * Cluster benchmark: core NATS pub/sub across the nodes of a three-node
 * cluster, nagare against nats-server 2.9 under the same load in one run;
 * and Kafka produce to a 12-partition topic on a three-node nagare cluster
 * against a one-node one (etcd started by the bench, kcat as in
 * bench/kafka.ts).
 * Each cluster is a full mesh of routes configured the way an operator
 * would (`cluster { name, host, port, routes }` in each node's file, every
 * node listing all three routes, its own included); the publisher is on
 * node A, one subscriber each on B and C, so every message crosses two
 * routes and is delivered twice.
 *
 *   npm run bench:cluster                       # full run, writes bench/results/cluster-<date>.json
 *   node dist/bench/cluster.js --quick          # smaller counts, one repeat, writes nothing
 *   node dist/bench/cluster.js --repeats=4      # repeats (default 5), alternating the order each time
 *   node dist/bench/cluster.js --warmup=0.2     # the unmeasured pass at a fifth of the size (default: whole)
 *   node dist/bench/cluster.js --only=pubsub_a_to_bc_16b --profile
 *                                               # one scenario; each nagare node writes a .cpuprofile to bench/profiles/
 *   npm run bench:cluster:kafka                 # the Kafka scenario alone (--kafka), writes bench/results/cluster-kafka-<date>.json
 *   node dist/bench/cluster.js --only=kcat_produce_12p_3n_vs_1n --profile
 *                                               # the Kafka scenario, writing nothing; with --profile each node a .cpuprofile
 *   node dist/bench/cluster.js --only=kcat_produce_12p_3n_vs_1n --strace --repeats=1
 *                                               # system call counts per node (fdatasync, reads, writes, accepts); slows the run
 *   node dist/bench/cluster.js --against=/path/to/other/checkout
 *                                               # that build's nagare as a third cluster, alternating with
 *                                               # the other two (before/after figures from one run;
 *                                               # written to bench/results/cluster-vs-<commit>-<date>.json)
 *
 * All three nodes run on core 1 and the client load on core 0 (harness.ts's
 * pinning), for both servers alike: the figure is what one core of server
 * does for a cluster, and the summed server CPU per message is the steadier
 * comparison of the work each does. Closed loop, as bench/core.ts.
 *
 * A scenario gets the whole cluster (`Cluster`); the Kafka scenario starts
 * its own (`startKafkaCluster`: etcd, JetStream and Kafka blocks in
 * `NodeConf.extra`). `--against` applies to the NATS scenarios only.
 */

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import kafkajs from "kafkajs";
import { startEtcd, type EtcdHarness } from "../test/helpers/etcd.js";
import { nodeConf, untilMeshSettles } from "./cluster-nodes.js";
import { KCAT_PRODUCE_ARGS, RECORD, kcat, kcatInput, kcatVersion } from "./kcat.js";
import {
  benchFlags,
  freePorts,
  machineInfo,
  median,
  natsServerVersion,
  publish,
  pubSub,
  requireNatsServer,
  round,
  type Deployment,
  type Running,
  start,
  type Target,
  type Throughput,
  waitForPort,
  cpuSeconds,
} from "./harness.js";

const { Kafka, logLevel } = kafkajs;

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const { quick, only, profile, repeats: defaultRepeats } = benchFlags();
const repeatsArg = process.argv.find((a) => a.startsWith("--repeats="))?.slice("--repeats=".length);
const REPEATS = repeatsArg !== undefined ? Number(repeatsArg) : defaultRepeats;
const against = process.argv.find((a) => a.startsWith("--against="))?.slice("--against=".length);
const natsServer = requireNatsServer();
const NODES = 3;
const CLUSTER_NAME = "bench";

/** A server that can form a cluster: how to start one node from its configuration file. */
interface Flavour {
  name: string;
  command: string;
  args(confFile: string): string[];
}

function nagareFlavour(name: string, checkout: string): Flavour {
  return {
    name,
    command: process.execPath,
    args: (conf) => [...(profile ? ["--cpu-prof", `--cpu-prof-dir=${join(root, "bench", "profiles")}`] : []), join(checkout, "dist/src/cli/main.js"), "server", "-c", conf],
  };
}

const flavours: Flavour[] = [nagareFlavour("nagare", root), { name: "nats-server", command: natsServer, args: (conf) => ["-c", conf] }];
let againstLabel: string | undefined;
if (against !== undefined) {
  againstLabel = `nagare@${describeCheckout(against)}`;
  flavours.push(nagareFlavour(againstLabel, resolve(against)));
}

function describeCheckout(dir: string): string {
  try {
    return execFileSync("git", ["-C", dir, "describe", "--always", "--dirty"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return resolve(dir);
  }
}

interface Cluster extends Deployment {
  nodes: Running[];
  stop(): Promise<void>;
}

async function startCluster(f: Flavour, extra = ""): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-bench-cluster-"));
  // Every port of the cluster picked at once: a port picked for a node not yet started must not be another's.
  const ports = await freePorts(NODES * 3);
  const clientPorts = ports.slice(0, NODES);
  const routePorts = ports.slice(NODES, 2 * NODES);
  const httpPorts = ports.slice(2 * NODES);
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const nodes: Running[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < NODES; i++) {
      const file = join(dir, `node${i}.conf`);
      const node: Target = {
        name: f.name,
        command: f.command,
        args: (clientPort) => {
          writeFileSync(file, nodeConf({ clientPort, routePort: routePorts[i], httpPort: httpPorts[i], routes, extra, name: CLUSTER_NAME }));
          return f.args(file);
        },
      };
      nodes.push(await start(node, clientPorts[i]));
    }
    await untilMeshSettles(httpPorts);
  } catch (err) {
    await stop();
    throw err;
  }
  // pubSub waits, besides, until the subscribers' interest has crossed the routes.
  return { nodes, pubUrl: nodes[0].url, subUrls: nodes.slice(1).map((n) => n.url), pids: nodes.map((n) => n.pid), stop };
}

// ---- the run ----

interface Scenario {
  name: string;
  /** `scale` shrinks the counts, for the unmeasured warm-up pass. */
  run(cluster: Cluster, scale?: number): Promise<Throughput>;
}

const k = quick ? 0.1 : 1;
const n = (count: number, scale = 1): number => Math.max(1000, Math.round(count * k * scale));
const scenarios: Scenario[] = [
  { name: "pubsub_a_to_bc_16b", run: (c, x) => pubSub(c, { size: 16, total: n(500_000, x), subs: 2, window: 50_000 }) },
  { name: "pubsub_a_to_bc_1kib", run: (c, x) => pubSub(c, { size: 1024, total: n(100_000, x), subs: 2, window: 8_000 }) },
];
/**
 * Every cluster gets the same unmeasured warm-up: a long-running server is
 * measured, not a cold JIT. By default as long as the measured pass (as
 * bench/kafka.ts): after a fifth of it, a nagare sending node still spent
 * about 40 % more CPU in the first measured 100,000 x 1 KiB than in the
 * next ones (0.57 s, then 0.41, 0.39, 0.37 s), which nats-server does not.
 */
const warmupArg = process.argv.find((a) => a.startsWith("--warmup="))?.slice("--warmup=".length);
const WARMUP_SCALE = warmupArg !== undefined ? Number(warmupArg) : 1;

// ---- Kafka: produce to a 12-partition topic, three nodes against one ----

/** The Kafka scenario's name, for `--only=`. */
const KAFKA_SCENARIO = "kcat_produce_12p_3n_vs_1n";
const KAFKA_PARTITIONS = 12;
const KAFKA_RECORDS = Math.round(300_000 * k);
/** `--kafka`: the Kafka scenario alone, written to bench/results/cluster-kafka-<date>.json. */
const kafkaOnly = process.argv.includes("--kafka");
const KAFKA_TOPOLOGY =
  "nagare, 3 nodes against 1, each node with JetStream and a Kafka listener, finding each other through one etcd (Debian's, on loopback, started by the bench); a fresh cluster per run; topic of 12 partitions created through node 0 (KafkaJS admin), spread by nagare's placement; kcat -P bootstrapping from node 0, acks=all";
const KAFKA_NOTES =
  "MB = 10^6 bytes of record values (1,024 B each). Every nagare node is pinned to the same core (core 1) and kcat to the other: the 3-node figure is three nodes sharing one core, so the ratio shows what spreading partitions costs or saves on the same CPU (more connections and requests, separate fdatasyncs that can overlap), not what three machines would do. server_cpu_ms_per_mb sums the nodes' CPU; server_cpu_s_by_node and partitions_by_node are in node order (node 0 is the bootstrap broker). Ratios pair each repeat's 3-node run with its 1-node run (alternating which goes first); 3n and 1n are the median runs by MB/s.";

/** A nagare cluster of `size` nodes with JetStream and a Kafka listener each, finding each other through etcd. */
interface KafkaCluster {
  nodes: Running[];
  /** Each node's Kafka host:port, in node order. */
  brokers: string[];
  admin: ReturnType<InstanceType<typeof Kafka>["admin"]>;
  storeDirs: string[];
  stop(): Promise<void>;
}

let clusterSeq = 0;

/**
 * Each node from its own file: `cluster { name }` without routes (etcd names
 * the members, as docs/CLUSTER.md starts them), `etcd {}`, `jetstream {}` in
 * a fresh temp dir, `kafka { port }`. A one-node "cluster" is the same
 * configuration with one node, so that both sides run the same code (etcd
 * placement, broker ids) and differ only in the number of nodes.
 */
async function startKafkaCluster(size: number, etcd: EtcdHarness): Promise<KafkaCluster> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-bench-kcluster-"));
  const name = `kbench${process.pid}x${++clusterSeq}`;
  const ports = await freePorts(size * 4);
  const [clientPorts, routePorts, httpPorts, kafkaPorts] = [0, 1, 2, 3].map((i) => ports.slice(i * size, (i + 1) * size));
  const nodes: Running[] = [];
  const storeDirs = Array.from({ length: size }, (_, i) => join(dir, `n${i}`));
  let admin: KafkaCluster["admin"] | undefined;
  const stop = async (): Promise<void> => {
    await admin?.disconnect();
    await Promise.all(nodes.map((n) => n.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < size; i++) {
      const file = join(dir, `node${i}.conf`);
      const extra = [
        `server_name: n${i}`,
        `etcd { endpoints: "${etcd.endpoint}", prefix: "/${name}" }`,
        `jetstream { store_dir: "${storeDirs[i]}" }`,
        `kafka { port: ${kafkaPorts[i]} }`,
      ].join("\n");
      const node: Target = {
        name: `nagare-${size}n`,
        command: process.execPath,
        args: (clientPort) => {
          writeFileSync(file, nodeConf({ clientPort, routePort: routePorts[i], httpPort: httpPorts[i], routes: [], extra, name }));
          return nagareFlavour("nagare", root).args(file);
        },
      };
      nodes.push(await start(node, clientPorts[i]));
    }
    for (const p of kafkaPorts) await waitForPort(p, 20_000, "connect");
    await untilMeshSettles(httpPorts);
    const brokers = kafkaPorts.map((p) => `127.0.0.1:${p}`);
    const kafka = new Kafka({ clientId: "nagare-bench", brokers: [brokers[0]], logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 1000 } });
    admin = kafka.admin();
    await admin.connect();
    // Every node a broker in the Metadata before anything is placed: placement spreads over the brokers it knows.
    const deadline = Date.now() + 20_000;
    while ((await admin.describeCluster()).brokers.length < size) {
      if (Date.now() > deadline) throw new Error(`the Kafka cluster did not reach ${size} brokers`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return { nodes, brokers, admin, storeDirs, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

interface KafkaProduce {
  nodes: number;
  records: number;
  seconds: number;
  mb_per_sec: number;
  /** Summed over the nodes. */
  server_cpu_s: number;
  server_cpu_ms_per_mb: number;
  /** Each node's CPU seconds and its share of the partitions, in node order (node 0 is the bootstrap broker). */
  server_cpu_s_by_node: number[];
  partitions_by_node: number[];
  kcat_cpu_s: number;
  /** Busy CPU on the machine outside the nodes and kcat (etcd, kernel writeback, the other helpers' work). */
  others_cpu_s: number;
  /** With --strace: system call counts per node over the measured pass. */
  syscalls_by_node?: Array<Record<string, number>>;
}

/** Busy CPU seconds of the whole machine (user, nice, system, irq, softirq), from /proc/stat. */
function machineBusySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  return (f[1] + f[2] + f[3] + f[6] + f[7]) / 100;
}

/**
 * `--strace`: the measured pass of the Kafka scenario runs with `strace -c -f`
 * on every node, and each node's counts of the system calls that say where
 * the time goes (fdatasync per batch, socket reads and writes, accepted
 * connections) are added to its result. ptrace slows every system call: a
 * run with it is for the counts, never for the throughput.
 */
const straceCalls = process.argv.includes("--strace");
const STRACE_KEPT = ["fdatasync", "fsync", "openat", "accept4", "read", "write", "writev", "pwrite64", "pwritev", "epoll_wait", "futex"];

function traceNodes(pids: number[], dir: string): () => Promise<Array<Record<string, number>>> {
  const traces = pids.map((pid, i) => {
    const out = join(dir, `strace-${pid}-${i}.txt`);
    const proc = spawn("strace", ["-c", "-f", "-o", out, "-p", String(pid)], { stdio: "ignore" });
    return { proc, out };
  });
  return async () =>
    Promise.all(
      traces.map(
        (t) =>
          new Promise<Record<string, number>>((res) => {
            t.proc.once("exit", () => {
              const counts: Record<string, number> = {};
              // strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall
              for (const line of readFileSync(t.out, "utf8").split("\n")) {
                const f = line.trim().split(/\s+/);
                const name = f[f.length - 1];
                if (f.length >= 5 && STRACE_KEPT.includes(name)) counts[name] = Number(f[3]);
              }
              res(counts);
            });
            t.proc.kill("SIGINT");
          }),
      ),
    );
}

let topicSeq = 0;

/** A fresh 12-partition topic, created through the bootstrap broker, and kcat producing `count` records to it from that broker. */
async function kcatProduceTo(c: KafkaCluster, count: number, inputDir: string, trace = false): Promise<KafkaProduce> {
  const topic = `k12p-${++topicSeq}`;
  if (!(await c.admin.createTopics({ topics: [{ topic, numPartitions: KAFKA_PARTITIONS }], waitForLeaders: true }))) throw new Error(`topic ${topic} was not created`);
  const meta = await c.admin.fetchTopicMetadata({ topics: [topic] });
  const brokerIds = (await c.admin.describeCluster()).brokers;
  const nodeOfBroker = new Map(brokerIds.map((b) => [b.nodeId, c.brokers.indexOf(`${b.host}:${b.port}`)]));
  const partitionsByNode = c.nodes.map(() => 0);
  for (const p of meta.topics[0].partitions) partitionsByNode[nodeOfBroker.get(p.leader) ?? -1]++;
  const input = kcatInput(inputDir, count);
  const pids = c.nodes.map((n) => n.pid);
  let traced: (() => Promise<Array<Record<string, number>>>) | undefined;
  if (trace) {
    traced = traceNodes(pids, inputDir);
    await new Promise((r) => setTimeout(r, 500)); // strace attaches to every thread
  }
  const cpu0 = pids.map(cpuSeconds);
  const busy0 = machineBusySeconds();
  const t0 = process.hrtime.bigint();
  const exit = await kcat(["-b", c.brokers[0], "-P", "-t", topic, ...KCAT_PRODUCE_ARGS], input);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const byNode = pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]);
  const busy = machineBusySeconds() - busy0;
  const syscalls = traced === undefined ? undefined : await traced();
  if (exit.code !== 0 || exit.stderr.trim() !== "") throw new Error(`kcat -P exited ${exit.code}: ${exit.stderr}`);
  const stored = (await c.admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  if (stored !== count) throw new Error(`kcat produced ${count} records but ${topic} holds ${stored}`);
  const cpu = byNode.reduce((a, b) => a + b, 0);
  const mb = (count * RECORD) / 1e6;
  return {
    nodes: c.nodes.length,
    records: count,
    seconds: round(seconds, 3),
    mb_per_sec: round(mb / seconds, 1),
    server_cpu_s: round(cpu, 2),
    server_cpu_ms_per_mb: round((cpu * 1e3) / mb, 2),
    server_cpu_s_by_node: byNode.map((x) => round(x, 2)),
    partitions_by_node: partitionsByNode,
    kcat_cpu_s: round(exit.cpu, 2),
    others_cpu_s: round(Math.max(0, busy - cpu - exit.cpu), 2),
    ...(syscalls !== undefined ? { syscalls_by_node: syscalls } : {}),
  };
}

/**
 * Three nodes against one, alternating which goes first, each a fresh
 * cluster (fresh stores) on one etcd: a warm-up pass on its own topic, then
 * the measured pass on a fresh one.
 */
async function kafkaScenario(): Promise<Record<string, unknown>> {
  const etcd = await startEtcd();
  const inputDir = mkdtempSync(join(tmpdir(), "nagare-bench-kinput-"));
  const runs: Record<string, KafkaProduce[]> = { "3n": [], "1n": [] };
  try {
    for (let r = 0; r < REPEATS; r++) {
      for (const size of r % 2 === 0 ? [3, 1] : [1, 3]) {
        const c = await startKafkaCluster(size, etcd);
        try {
          await kcatProduceTo(c, Math.max(1000, Math.round(KAFKA_RECORDS * WARMUP_SCALE)), inputDir);
          execFileSync("sync");
          const t = await kcatProduceTo(c, KAFKA_RECORDS, inputDir, straceCalls);
          runs[`${size}n`].push(t);
          console.error(`  ${KAFKA_SCENARIO} ${size}n: ${t.mb_per_sec} MB/s, ${t.server_cpu_ms_per_mb} ms server CPU/MB, by node ${t.server_cpu_s_by_node.join("/")} s, partitions ${t.partitions_by_node.join("/")}, kcat ${t.kcat_cpu_s} s, load ${loadavg()[0].toFixed(2)}${t.syscalls_by_node !== undefined ? `, syscalls ${JSON.stringify(t.syscalls_by_node)}` : ""}`);
        } finally {
          await c.stop();
        }
      }
    }
  } finally {
    rmSync(inputDir, { recursive: true, force: true });
    await etcd.close();
  }
  const three = median(runs["3n"], (x) => x.mb_per_sec);
  const one = median(runs["1n"], (x) => x.mb_per_sec);
  // Each repeat's 3-node run against the 1-node run beside it: drift in the machine's load falls on both.
  const paired = runs["3n"].map((t, i) => t.mb_per_sec / runs["1n"][i].mb_per_sec);
  const pairedCpu = runs["3n"].map((t, i) => t.server_cpu_ms_per_mb / runs["1n"][i].server_cpu_ms_per_mb);
  const entry = {
    "3n": { ...three, median_server_cpu_ms_per_mb: median(runs["3n"], (x) => x.server_cpu_ms_per_mb).server_cpu_ms_per_mb },
    "1n": { ...one, median_server_cpu_ms_per_mb: median(runs["1n"], (x) => x.server_cpu_ms_per_mb).server_cpu_ms_per_mb },
    ratio_3n_over_1n: {
      mb_per_sec: round(three.mb_per_sec / one.mb_per_sec, 3),
      mb_per_sec_median_of_paired: round(median(paired, (x) => x), 3),
      server_cpu_ms_per_mb_median_of_paired: round(median(pairedCpu, (x) => x), 3),
      paired_mb_per_sec: paired.map((x) => round(x, 3)),
    },
    settings: { partitions: KAFKA_PARTITIONS, records: KAFKA_RECORDS, record_value_bytes: RECORD, kcat_produce: KCAT_PRODUCE_ARGS.join(" "), kcat: await kcatVersion(), bootstrap: "node 0's Kafka listener" },
    runs,
  };
  console.error(`${KAFKA_SCENARIO}: ${JSON.stringify(entry.ratio_3n_over_1n)}`);
  return entry;
}

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const results: Record<string, Record<string, unknown>> = {};

  for (const sc of scenarios) {
    if (kafkaOnly || (only !== undefined && !only.split(",").includes(sc.name))) continue;
    const runs: Record<string, Throughput[]> = Object.fromEntries(flavours.map((f) => [f.name, []]));
    // Alternate the order (A B, B A, ...) so that drift in the machine's load hits every cluster alike.
    for (let r = 0; r < REPEATS; r++) {
      for (const f of r % 2 === 0 ? flavours : [...flavours].reverse()) {
        const cluster = await startCluster(f);
        try {
          await sc.run(cluster, WARMUP_SCALE);
          const t = await sc.run(cluster);
          runs[f.name].push(t);
          console.error(`  ${sc.name} ${f.name}: ${t.msgs_per_sec} deliveries/s, ${t.server_cpu_us_per_msg} µs server CPU/delivery`);
        } finally {
          await cluster.stop();
        }
      }
    }
    const pick = (name: string): Throughput => median(runs[name], (x) => x.msgs_per_sec);
    const a = pick("nagare");
    const b = pick("nats-server");
    const entry: Record<string, unknown> = {
      nagare: a,
      "nats-server": b,
      ratio: { msgs_per_sec: round(a.msgs_per_sec / b.msgs_per_sec, 3), server_cpu_us_per_msg: round(a.server_cpu_us_per_msg / b.server_cpu_us_per_msg, 3) },
    };
    if (againstLabel !== undefined) {
      const c = pick(againstLabel);
      entry[againstLabel] = c;
      entry[`ratio_${againstLabel}`] = { msgs_per_sec: round(c.msgs_per_sec / b.msgs_per_sec, 3), server_cpu_us_per_msg: round(c.server_cpu_us_per_msg / b.server_cpu_us_per_msg, 3) };
      entry.ratio_nagare_vs_against = { msgs_per_sec: round(a.msgs_per_sec / c.msgs_per_sec, 3), server_cpu_us_per_msg: round(a.server_cpu_us_per_msg / c.server_cpu_us_per_msg, 3) };
    }
    entry.runs = runs;
    results[sc.name] = entry;
    console.error(`${sc.name}: ${JSON.stringify(entry.ratio)}${againstLabel !== undefined ? ` vs ${againstLabel}: ${JSON.stringify(entry.ratio_nagare_vs_against)}` : ""}`);
  }

  const kafkaEntry = kafkaOnly || only === undefined || only.split(",").includes(KAFKA_SCENARIO) ? await kafkaScenario() : undefined;
  if (kafkaEntry !== undefined) results[KAFKA_SCENARIO] = kafkaEntry;

  if (only !== undefined || profile) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  if (kafkaOnly) {
    const report = {
      benchmark: "cluster-kafka",
      date: new Date().toISOString(),
      quick,
      repeats: REPEATS,
      warmup_scale: WARMUP_SCALE,
      machine: { ...machineInfo("kcat, etcd and this process on core 0, every nagare node on core 1"), load_average_at_end: loadavg().map((x) => round(x, 2)) },
      versions: { nagare: pkg.version },
      topology: KAFKA_TOPOLOGY,
      notes: KAFKA_NOTES,
      results,
    };
    publish(root, "cluster-kafka", report, !quick && !straceCalls);
    return;
  }
  const ratio = (s: string, key: string): number => ((results[s]?.ratio ?? {}) as Record<string, number>)[key];
  const report = {
    benchmark: "cluster",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    warmup_scale: WARMUP_SCALE,
    machine: machineInfo("client on core 0, all three nodes of each cluster on core 1"),
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "nats (v2) in the benchmark process", ...(againstLabel !== undefined ? { against: againstLabel } : {}) },
    topology: "3 nodes, full mesh of routes from cluster { port, routes } (every node lists all three); publisher on node A, one subscriber each on B and C",
    notes:
      "msgs_per_sec counts deliveries (two per published message); server_cpu_us_per_msg is the CPU of all three nodes per delivery (server_cpu_s_by_node: A, B, C). Ratios are nagare / nats-server from the same run; median of the repeats by deliveries/s. Server CPU from /proc/<pid>/stat (10 ms ticks).",
    ...(kafkaEntry !== undefined ? { kafka_topology: KAFKA_TOPOLOGY, kafka_notes: KAFKA_NOTES } : {}),
    results,
    targets_met: { throughput_at_least_0_9x: Object.fromEntries(scenarios.filter((sc) => results[sc.name] !== undefined).map((sc) => [sc.name, ratio(sc.name, "msgs_per_sec") >= 0.9])) },
  };
  // A before/after run is kept apart from the plain one: bench/results/cluster-vs-<commit>-<date>.json.
  const name = againstLabel === undefined ? "cluster" : `cluster-vs-${againstLabel.slice("nagare@".length).replace(/[^A-Za-z0-9._-]/g, "_")}`;
  publish(root, name, report, !quick);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
