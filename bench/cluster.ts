/**
 * Cluster benchmark: core NATS pub/sub across the nodes of a three-node
 * cluster, nagare against nats-server 2.9 under the same load in one run.
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
 * A scenario gets the whole cluster (`Cluster`), so scenarios with other
 * doors (Kafka over three nodes against one) can be added with their own
 * node configuration (`NodeConf.extra`).
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
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
} from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const { quick, only, profile, repeats: defaultRepeats } = benchFlags();
const repeatsArg = process.argv.find((a) => a.startsWith("--repeats="))?.slice("--repeats=".length);
const REPEATS = repeatsArg !== undefined ? Number(repeatsArg) : defaultRepeats;
const against = process.argv.find((a) => a.startsWith("--against="))?.slice("--against=".length);
const natsServer = requireNatsServer();
const NODES = 3;
const CLUSTER_NAME = "bench";

/** What one node's configuration file says besides the cluster block (a scenario's other doors). */
interface NodeConf {
  clientPort: number;
  routePort: number;
  httpPort: number;
  /** Every node's route URL, this node's own included (one list for the whole cluster, as operators write it). */
  routes: string[];
  extra: string;
}

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

/** The same file for nagare and nats-server: both read nats-server's configuration format. */
function nodeConf(c: NodeConf): string {
  return [
    "host: 127.0.0.1",
    `port: ${c.clientPort}`,
    `http_port: ${c.httpPort}`,
    "cluster {",
    `  name: ${CLUSTER_NAME}`,
    "  host: 127.0.0.1",
    `  port: ${c.routePort}`,
    `  routes: [${c.routes.map((r) => JSON.stringify(r)).join(", ")}]`,
    "}",
    c.extra,
    "",
  ].join("\n");
}

interface Cluster extends Deployment {
  nodes: Running[];
  stop(): Promise<void>;
}

interface Routez {
  num_routes: number;
  routes: Array<{ rid: number; remote_id: string }>;
}

/** How long the routes must stay as they are before the cluster is measured. */
const SETTLE_MS = 2000;

/**
 * Waits until every node routes to every other one and the routes have not
 * changed for SETTLE_MS. Nodes started one after the other dial each other
 * both ways and drop the duplicates as their retries come in (nagare and
 * nats-server alike); a route dropped while messages cross it loses them,
 * and a closed-loop run then waits for them for ever.
 */
async function untilMeshSettles(httpPorts: number[], deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last = "";
  let since = Date.now();
  for (;;) {
    let sig = "";
    let complete = true;
    for (const port of httpPorts) {
      try {
        const z = (await (await fetch(`http://127.0.0.1:${port}/routez`)).json()) as Routez;
        if (z.num_routes !== httpPorts.length - 1) complete = false;
        sig += `${port}:${z.routes.map((r) => `${r.remote_id}/${r.rid}`).sort().join(",")};`;
      } catch {
        complete = false;
      }
    }
    if (sig !== last || !complete) {
      last = sig;
      since = Date.now();
    } else if (Date.now() - since >= SETTLE_MS) return;
    if (Date.now() > deadline) throw new Error(`the cluster's routes did not settle: ${sig}`);
    await new Promise((r) => setTimeout(r, 100));
  }
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
          writeFileSync(file, nodeConf({ clientPort, routePort: routePorts[i], httpPort: httpPorts[i], routes, extra }));
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

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const results: Record<string, Record<string, unknown>> = {};

  for (const sc of scenarios) {
    if (only !== undefined && !only.split(",").includes(sc.name)) continue;
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

  if (only !== undefined || profile) {
    console.log(JSON.stringify(results, null, 2));
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
    results,
    targets_met: { throughput_at_least_0_9x: Object.fromEntries(Object.keys(results).map((s) => [s, ratio(s, "msgs_per_sec") >= 0.9])) },
  };
  // A before/after run is kept apart from the plain one: bench/results/cluster-vs-<commit>-<date>.json.
  const name = againstLabel === undefined ? "cluster" : `cluster-vs-${againstLabel.slice("nagare@".length).replace(/[^A-Za-z0-9._-]/g, "_")}`;
  publish(root, name, report, !quick);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
