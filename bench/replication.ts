/**
 * Replication benchmark (issue 20, docs/CLUSTER.md "Replication"):
 *
 * 1. JetStream publish into a stream of 3 replicas: a 3-node nagare cluster
 *    (etcd started by the bench, fsync before every ack, its default)
 *    against a 3-node nats-server 2.9 JetStream cluster at R3 (its default
 *    sync, every 2 minutes), the same v3 client and load in one run: async
 *    publishes of 128 B with 64 and with 512 in flight, acknowledged msgs/s.
 *    nagare at R1 on the same three nodes as well, for the cost of the
 *    replicas alone, and nagare with `sync_interval: 2m` (nats-server's
 *    default) on every node, for equal durability (as bench/jetstream.ts).
 * 2. Failover: SIGKILL of the leader of an R3 stream (each node a real
 *    process) to the first acknowledged publish sent after the kill, with a
 *    publisher retrying through a surviving node; the killed node is
 *    restarted and back in the ISR before the next kill. With nagare's
 *    default etcd lease (`lease_ttl` 5 s) and with a 2 s lease.
 *
 *   npm run bench:replication                          # both, writes bench/results/replication-<date>.json
 *   node dist/bench/replication.js --quick             # small counts, 1 repeat, 3 kills, writes nothing
 *   node dist/bench/replication.js --repeats=5         # publish repeats (default 3), alternating the order
 *   node dist/bench/replication.js --kills=20          # kills per lease setting (default 20)
 *   node dist/bench/replication.js --warmup=3          # the unmeasured publishes before each measured pass, into its stream, as a fraction of it (default 1)
 *   node dist/bench/replication.js --only=failover     # or --only=publish, --only=kafka, --only=idle: writes bench/results/replication-<only>-<date>.json
 *   node dist/bench/replication.js --only=publish --profile
 *                                                      # each nagare node writes a .cpuprofile to bench/profiles/
 *
 * Pinning as in bench/cluster.ts: the three nodes of either cluster on core
 * 1, the client (and etcd) on core 0.
 *
 * 4. Idle cost (`--only=idle`, not in the default run): `--idle-streams=N`
 *    (default 200) R3 streams, each with one durable pull consumer, made
 *    through node 0 of each cluster; after 15 s at rest, each node's CPU
 *    over 30 s with nothing published (what replicas, consumer copies and
 *    leases cost a cluster that holds many quiet streams).
 *
 * 3. Kafka acks=all into replication factor 3 against factor 1 on the same
 *    3 nodes (target >= 0.6x): kcat -P (KCAT_PRODUCE_ARGS) of 1 KiB records
 *    into a 3-partition topic of each, alternating which goes first
 *    (`--only=kafka`; `--records=N`, default 200,000).
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager, type StreamInfo } from "@nats-io/jetstream";
import { startEtcd, type EtcdHarness } from "../test/helpers/etcd.js";
import { nodeConf, untilMeshSettles } from "./cluster-nodes.js";
import { cpuSeconds, freePorts, machineInfo, median, natsServerVersion, publish, requireNatsServer, round, start, waitForPort, type Running, type Target, windowed } from "./harness.js";
import { KCAT_PRODUCE_ARGS, RECORD, kcat, kcatInput, kcatVersion } from "./kcat.js";
import kafkajs from "kafkajs";

const { Kafka, logLevel } = kafkajs;
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const quick = process.argv.includes("--quick");
const profile = process.argv.includes("--profile");
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
const flag = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const REPEATS = Number(flag("repeats") ?? (quick || profile ? 1 : 3));
const KILLS = Number(flag("kills") ?? (quick ? 3 : 20));
const natsServer = requireNatsServer();
const NODES = 3;
const PAYLOAD = new Uint8Array(128).fill(120);
const nagareMain = join(root, "dist/src/cli/main.js");

// ---- clusters ----

/** A 3-node cluster with JetStream: its nodes by server name (n0, n1, n2), restartable one at a time. */
interface JsCluster {
  flavour: Flavour;
  nodes: Running[];
  /** Node i's server name is `n${i}`. */
  urls: string[];
  /** Each node's Kafka listener, host:port, when started with one. */
  kafkaBrokers: string[];
  /** Kills node i with SIGKILL; resolves once the process is gone. */
  kill(i: number): Promise<void>;
  /** Starts node i again on its ports, configuration and store. */
  restart(i: number): Promise<void>;
  stop(): Promise<void>;
}

/** nagare_sync_2m: nagare with `sync_interval: 2m`, nats-server's default, on every node (leader and followers): the equal-durability comparison, as bench/jetstream.ts. */
type Flavour = "nagare" | "nagare_sync_2m" | "nats-server";

let clusterSeq = 0;

/**
 * nagare: each node from its own file, `cluster { name }` without routes
 * (etcd names the members, as docs/CLUSTER.md starts them), `etcd {}`
 * (`leaseTtl` when given, else the default), `jetstream {}` in a temp dir.
 * nats-server: the same file with the three routes instead of etcd.
 */
async function startJsCluster(flavour: Flavour, etcd: EtcdHarness | null, leaseTtl?: string, withKafka = false): Promise<JsCluster> {
  const nagare = flavour !== "nats-server";
  const dir = mkdtempSync(join(tmpdir(), `nagare-bench-repl-${flavour}-`));
  const name = `repl${process.pid}x${++clusterSeq}`;
  const ports = await freePorts(NODES * 4);
  const [clientPorts, routePorts, httpPorts, kafkaPorts] = [0, 1, 2, 3].map((i) => ports.slice(i * NODES, (i + 1) * NODES));
  const routes = !nagare ? routePorts.map((p) => `nats-route://127.0.0.1:${p}`) : [];
  const targets: Target[] = [];
  const nodes: Running[] = [];
  for (let i = 0; i < NODES; i++) {
    const file = join(dir, `node${i}.conf`);
    const extra = [
      `server_name: n${i}`,
      `jetstream { store_dir: "${join(dir, `n${i}`)}"${flavour === "nagare_sync_2m" ? ', sync_interval: "2m"' : ""} }`,
      ...(nagare ? [`etcd { endpoints: "${etcd!.endpoint}", prefix: "/${name}"${leaseTtl !== undefined ? `, lease_ttl: ${leaseTtl}` : ""} }`] : []),
      ...(withKafka ? [`kafka { port: ${kafkaPorts[i]} }`] : []),
    ].join("\n");
    writeFileSync(file, nodeConf({ clientPort: clientPorts[i], routePort: routePorts[i], httpPort: httpPorts[i], routes, extra, name }));
    targets.push({
      name: flavour,
      command: nagare ? process.execPath : natsServer,
      args: () => (nagare ? [...(profile ? ["--cpu-prof", `--cpu-prof-dir=${join(root, "bench", "profiles")}`] : []), nagareMain, "server", "-c", file] : ["-c", file]),
    });
  }
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => (n.proc.exitCode === null && n.proc.signalCode === null ? n.stop() : undefined)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < NODES; i++) nodes.push(await start(targets[i], clientPorts[i]));
    if (withKafka) for (const p of kafkaPorts) await waitForPort(p, 20_000, "connect");
    await untilMeshSettles(httpPorts);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    flavour,
    nodes,
    urls: nodes.map((n) => n.url),
    kafkaBrokers: withKafka ? kafkaPorts.map((p) => `127.0.0.1:${p}`) : [],
    kill: (i) =>
      new Promise((res) => {
        nodes[i].proc.once("exit", () => res());
        nodes[i].proc.kill("SIGKILL");
      }),
    restart: async (i) => {
      nodes[i] = await start(targets[i], clientPorts[i]);
    },
    stop,
  };
}

/** Adds a stream, retrying while the cluster is not ready for it (nats-server elects its meta leader after the routes are up). */
async function addStream(jsm: JetStreamManager, name: string, replicas: number): Promise<StreamInfo> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await jsm.streams.add({ name, subjects: [`${name}.>`], num_replicas: replicas });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Polls the stream's info (through `jsm`) until `ok` holds. */
async function untilInfo(jsm: JetStreamManager, stream: string, ok: (i: StreamInfo) => boolean, what: string, deadlineMs = 60_000): Promise<StreamInfo> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const info = await jsm.streams.info(stream).catch(() => null);
    if (info !== null && ok(info)) return info;
    if (Date.now() > deadline) throw new Error(`${stream}: ${what}: ${JSON.stringify(info?.cluster)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const allCurrent = (replicas: number) => (i: StreamInfo): boolean =>
  replicas === 1 || (i.cluster?.leader !== undefined && i.cluster.leader !== "" && (i.cluster.replicas?.length ?? 0) === replicas - 1 && i.cluster.replicas!.every((r) => r.current));

// ---- 1. publish throughput ----

interface PublishResult {
  count: number;
  seconds: number;
  acked_per_sec: number;
  /** Summed over the three nodes, per acknowledged publish. */
  server_cpu_us_per_msg: number;
  server_cpu_s_by_node: number[];
  /** The longest time without an ack during the pass, ms: a stall shows here, not in the rate. */
  max_ack_gap_ms: number;
  /** Server name of the stream's leader (the client is connected to it). */
  leader: string;
}

let streamSeq = 0;

/**
 * A fresh stream of `replicas`, created through node 0; the client then
 * connects to the node that leads it (the same for both servers: no
 * publish crosses a route to reach its leader, every replica's copy does),
 * waits until every replica is current, publishes `warmup` messages
 * unmeasured, then measures `count` messages of 128 B with `window` in
 * flight. The warm-up goes to the same stream: its leader is the node
 * measured (a warm-up on a stream of its own could be led by another node,
 * leaving the measured leader's code cold).
 */
async function publishRun(c: JsCluster, replicas: number, window: number, count: number, warmup: number): Promise<PublishResult> {
  const admin = await connect({ servers: c.urls[0] });
  let nc: NatsConnection | undefined;
  try {
    const jsm = await jetstreamManager(admin);
    const name = `R${replicas}W${window}N${++streamSeq}`;
    const info = await addStream(jsm, name, replicas);
    const leader = info.cluster?.leader ?? "n0";
    await untilInfo(jsm, name, allCurrent(replicas), "every replica current");
    nc = await connect({ servers: c.urls[Number(leader.slice(1))] });
    const js = jetstream(nc);
    await windowed(warmup, window, () => js.publish(`${name}.x`, PAYLOAD));
    const pids = c.nodes.map((n) => n.pid);
    const cpu0 = pids.map(cpuSeconds);
    let lastAck = performance.now();
    let maxGap = 0;
    const acked = (): void => {
      const t = performance.now();
      if (t - lastAck > maxGap) maxGap = t - lastAck;
      lastAck = t;
    };
    const t0 = process.hrtime.bigint();
    await windowed(count, window, () => js.publish(`${name}.x`, PAYLOAD).then(acked));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const byNode = pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]);
    const cpu = byNode.reduce((a, b) => a + b, 0);
    const stored = (await jsm.streams.info(name)).state.messages;
    if (stored !== warmup + count) throw new Error(`${c.flavour} ${name}: ${warmup + count} acknowledged, ${stored} stored`);
    await jsm.streams.delete(name);
    return {
      count,
      seconds: round(seconds, 3),
      acked_per_sec: Math.round(count / seconds),
      server_cpu_us_per_msg: round((cpu * 1e6) / count, 1),
      server_cpu_s_by_node: byNode.map((x) => round(x, 2)),
      max_ack_gap_ms: Math.round(maxGap),
      leader,
    };
  } finally {
    await nc?.close();
    await admin.close();
  }
}

const k = quick ? 0.1 : 1;
const WINDOWS: Array<{ window: number; count: number }> = [
  { window: 64, count: Math.round(20_000 * k) },
  { window: 512, count: Math.round(40_000 * k) },
];
/**
 * The unmeasured publishes before each measured pass, into the same
 * stream, as a fraction of it (`--warmup=`; default a whole pass, as the
 * other benchmarks). A quarter
 * left the leader's V8 compiling (TurboFan) for 30 % of its CPU in the
 * measured pass at 64 in flight: per-round code runs ~100 times a second,
 * and in-process runs got faster until ~30,000 messages had gone through.
 */
const WARMUP = Number(flag("warmup") ?? 1);

async function publishBench(etcd: EtcdHarness): Promise<Record<string, unknown>> {
  const runs: Record<string, PublishResult[]> = {};
  const record = (key: string, r: PublishResult): void => {
    (runs[key] ??= []).push(r);
    console.error(`  ${key}: ${r.acked_per_sec} acked/s, ${r.server_cpu_us_per_msg} µs server CPU/msg (by node ${r.server_cpu_s_by_node.join("/")} s, leader ${r.leader}), longest without an ack ${r.max_ack_gap_ms} ms, load ${loadavg()[0].toFixed(2)}`);
  };
  const flavours: Flavour[] = ["nagare", "nats-server", "nagare_sync_2m"];
  for (let r = 0; r < REPEATS; r++) {
    // Alternate the order so that drift in the machine's load falls on both.
    for (const f of r % 2 === 0 ? flavours : [...flavours].reverse()) {
      const c = await startJsCluster(f, f === "nats-server" ? null : etcd);
      try {
        for (const { window, count } of WINDOWS) {
          const levels = f === "nagare" ? [3, 1] : [3];
          for (const replicas of r % 2 === 0 ? levels : [...levels].reverse()) {
            record(`${f}_r${replicas}_${window}`, await publishRun(c, replicas, window, count, Math.max(200, Math.round(count * WARMUP))));
          }
        }
      } finally {
        await c.stop();
      }
    }
  }
  const results: Record<string, unknown> = {};
  for (const { window } of WINDOWS) {
    const key = (f: string, rep: number): string => `${f}_r${rep}_${window}`;
    const pick = (f: string, rep: number): PublishResult => median(runs[key(f, rep)], (x) => x.acked_per_sec);
    const a = pick("nagare", 3);
    const b = pick("nats-server", 3);
    const a1 = pick("nagare", 1);
    const a2 = pick("nagare_sync_2m", 3);
    // Each repeat's nagare run against the nats-server run beside it.
    const paired = runs[key("nagare", 3)].map((x, i) => x.acked_per_sec / runs[key("nats-server", 3)][i].acked_per_sec);
    const pairedR1 = runs[key("nagare", 3)].map((x, i) => x.acked_per_sec / runs[key("nagare", 1)][i].acked_per_sec);
    results[`publish_async_${window}_128b_r3`] = {
      nagare_r3: a,
      "nats-server_r3": b,
      nagare_r1: a1,
      nagare_sync_2m_r3: a2,
      ratio: {
        nagare_r3_vs_nats_r3: round(a.acked_per_sec / b.acked_per_sec, 3),
        nagare_r3_vs_nats_r3_median_of_paired: round(median(paired, (x) => x), 3),
        server_cpu_per_msg_nagare_vs_nats: round(a.server_cpu_us_per_msg / b.server_cpu_us_per_msg, 3),
        nagare_r3_vs_nagare_r1: round(a.acked_per_sec / a1.acked_per_sec, 3),
        nagare_r3_vs_r1_median_of_paired: round(median(pairedR1, (x) => x), 3),
        nagare_sync_2m_r3_vs_nats_r3: round(a2.acked_per_sec / b.acked_per_sec, 3),
        nagare_r3_vs_nagare_sync_2m_r3: round(a.acked_per_sec / a2.acked_per_sec, 3),
      },
      target_met: a.acked_per_sec / b.acked_per_sec >= 1.0,
      runs: { nagare_r3: runs[key("nagare", 3)], "nats-server_r3": runs[key("nats-server", 3)], nagare_r1: runs[key("nagare", 1)], nagare_sync_2m_r3: runs[key("nagare_sync_2m", 3)] },
    };
    console.error(`publish_async_${window}_128b_r3: ${JSON.stringify((results[`publish_async_${window}_128b_r3`] as { ratio: unknown }).ratio)}`);
  }
  return results;
}

// ---- 2. failover ----

interface FailoverResult {
  kills: number;
  lease_ttl: string;
  /** Kill to first acknowledged publish sent after it, ms. */
  p50_ms: number;
  p90_ms: number;
  min_ms: number;
  max_ms: number;
  /** Every kill's figure, in order. */
  failover_ms: number[];
  /** Kill to the new leader in the stream's info (polled every 100 ms from a surviving node), ms. */
  leader_seen_ms: number[];
  /** Which node was killed each time (its server name). */
  killed: string[];
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/** After the kill, a new attempt of the same publish this often, whatever became of the earlier ones: the resolution of the figure. */
const RETRY_MS = 25;
/** How long an attempt waits for its ack (attempts overlap: this bounds how many are in flight, 80). */
const PUBLISH_TIMEOUT_MS = 2000;

/**
 * One cluster, one R3 stream, `kills` times: wait until every replica is
 * current, publish one message at a time through a node that does not lead
 * the stream, SIGKILL the leader's process, and send one more message
 * (its own msgID, so however many attempts it takes it is stored once), a
 * new attempt every RETRY_MS, until an attempt is acknowledged. Then the
 * killed node is restarted on its store.
 */
async function failoverBench(etcd: EtcdHarness, leaseTtl: string | undefined): Promise<FailoverResult> {
  const c = await startJsCluster("nagare", etcd, leaseTtl);
  const conns: NatsConnection[] = [];
  const failover: number[] = [];
  const leaderSeen: number[] = [];
  const killed: string[] = [];
  try {
    for (const url of c.urls) conns.push(await connect({ servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1 }));
    const name = "FAILOVER";
    await addStream(await jetstreamManager(conns[0]), name, 3);
    let msg = 0;
    for (let kill = 0; kill < KILLS; kill++) {
      const anyJsm = await jetstreamManager(conns[killed.length === 0 ? 0 : (Number(killed[killed.length - 1].slice(1)) + 1) % NODES]);
      const info = await untilInfo(anyJsm, name, allCurrent(3), "every replica current before the kill", 120_000);
      const leader = Number(info.cluster!.leader!.slice(1));
      const via = (leader + 1) % NODES;
      const js = jetstream(conns[via], { timeout: PUBLISH_TIMEOUT_MS });
      // A short timeout: an info request the dead leader was to answer must not hide the new one for 5 s.
      const jsm = await jetstreamManager(conns[via], { timeout: 500 });
      // A few publishes before the kill: the leader is answering a publisher when it dies.
      for (let i = 0; i < 20; i++) await js.publish(`${name}.x`, PAYLOAD, { msgID: `m${++msg}` });
      let newLeaderAt = 0;
      const t0 = performance.now();
      const gone = c.kill(leader);
      const watch = (async () => {
        await untilInfo(jsm, name, (i) => i.cluster?.leader !== undefined && i.cluster.leader !== `n${leader}` && i.cluster.leader !== "", "a new leader", 120_000);
        newLeaderAt = performance.now();
      })();
      // One msgID until acknowledged: one message however often it is sent. A new attempt every RETRY_MS while
      // earlier ones wait for their answer, so that the figure's resolution is RETRY_MS, not a publish timeout.
      const id = `m${++msg}`;
      const t1 = await new Promise<number>((resolve, reject) => {
        let done = false;
        const attempt = (): void => {
          if (done) return;
          if (performance.now() - t0 > 120_000) {
            done = true;
            clearInterval(timer);
            reject(new Error("no acknowledged publish within 120 s of the kill"));
            return;
          }
          js.publish(`${name}.x`, PAYLOAD, { msgID: id }).then(
            () => {
              if (done) return;
              done = true;
              clearInterval(timer);
              resolve(performance.now());
            },
            () => undefined,
          );
        };
        const timer = setInterval(attempt, RETRY_MS);
        attempt();
      });
      await watch;
      await gone;
      failover.push(Math.round(t1 - t0));
      leaderSeen.push(Math.round(newLeaderAt - t0));
      killed.push(`n${leader}`);
      console.error(`  failover lease ${leaseTtl ?? "default"} #${kill + 1}: killed n${leader}, first ack after ${Math.round(t1 - t0)} ms (new leader seen after ${Math.round(newLeaderAt - t0)} ms), load ${loadavg()[0].toFixed(2)}`);
      await c.restart(leader);
    }
  } finally {
    for (const nc of conns) await nc.close().catch(() => undefined);
    await c.stop();
  }
  const sorted = [...failover].sort((a, b) => a - b);
  return {
    kills: failover.length,
    lease_ttl: leaseTtl ?? "5s (default)",
    p50_ms: quantile(sorted, 0.5),
    p90_ms: quantile(sorted, 0.9),
    min_ms: sorted[0],
    max_ms: sorted[sorted.length - 1],
    failover_ms: failover,
    leader_seen_ms: leaderSeen,
    killed,
  };
}

// ---- 3. Kafka acks=all: replication factor 3 against 1 ----

const KAFKA_RECORDS = Number(flag("records") ?? (quick ? 5_000 : 200_000));
/** One partition led by each node (placement spreads the leaders). */
const KAFKA_PARTITIONS = 3;

interface KafkaRun {
  replication_factor: number;
  records: number;
  seconds: number;
  mb_per_sec: number;
  server_cpu_s_by_node: number[];
  kcat_cpu_s: number;
}

let topicSeq = 0;

/** A fresh topic of `rf` replicas, every replica in sync, then kcat -P at acks=all of every record in `input`, timed. */
async function kafkaRun(c: JsCluster, admin: ReturnType<InstanceType<typeof Kafka>["admin"]>, rf: number, input: string): Promise<KafkaRun> {
  const topic = `rf${rf}-${++topicSeq}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: KAFKA_PARTITIONS, replicationFactor: rf }], waitForLeaders: true });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    if (meta.topics[0].partitions.length === KAFKA_PARTITIONS && meta.topics[0].partitions.every((p) => p.isr.length === rf && p.leader >= 0)) break;
    if (Date.now() > deadline) throw new Error(`${topic}: replicas not in sync: ${JSON.stringify(meta.topics[0].partitions)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const pids = c.nodes.map((n) => n.pid);
  const cpu0 = pids.map(cpuSeconds);
  const t0 = performance.now();
  const exit = await kcat(["-b", c.kafkaBrokers.join(","), "-P", "-t", topic, ...KCAT_PRODUCE_ARGS], input);
  const seconds = (performance.now() - t0) / 1000;
  const byNode = pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]);
  if (exit.code !== 0 || exit.stderr.trim() !== "") throw new Error(`kcat -P exited ${exit.code}: ${exit.stderr}`);
  const stored = (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  if (stored !== KAFKA_RECORDS) throw new Error(`kcat produced ${KAFKA_RECORDS} records but ${topic} holds ${stored}`);
  return {
    replication_factor: rf,
    records: KAFKA_RECORDS,
    seconds: round(seconds, 3),
    mb_per_sec: round((KAFKA_RECORDS * RECORD) / 1e6 / seconds, 1),
    server_cpu_s_by_node: byNode.map((x) => round(x, 2)),
    kcat_cpu_s: round(exit.cpu, 2),
  };
}

/** Per repeat a fresh 3-node cluster with Kafka listeners; RF 1 and RF 3 topics produced to in alternating order. */
async function kafkaBench(etcd: EtcdHarness): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "nagare-bench-repl-kafka-"));
  const input = kcatInput(dir, KAFKA_RECORDS);
  const runs: Record<"rf1" | "rf3", KafkaRun[]> = { rf1: [], rf3: [] };
  try {
    for (let r = 0; r < REPEATS; r++) {
      const c = await startJsCluster("nagare", etcd, undefined, true);
      const admin = new Kafka({ clientId: "nagare-bench", brokers: c.kafkaBrokers, logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 1000 } }).admin();
      try {
        await admin.connect();
        const deadline = Date.now() + 20_000;
        while ((await admin.describeCluster()).brokers.length < NODES) {
          if (Date.now() > deadline) throw new Error(`the Kafka cluster did not reach ${NODES} brokers`);
          await new Promise((res) => setTimeout(res, 100));
        }
        for (const rf of r % 2 === 0 ? [1, 3] : [3, 1]) {
          const run = await kafkaRun(c, admin, rf, input);
          runs[rf === 1 ? "rf1" : "rf3"].push(run);
          console.error(`  kafka acks=all RF${rf} #${r + 1}: ${run.mb_per_sec} MB/s (${run.seconds} s), load ${loadavg()[0].toFixed(2)}`);
        }
      } finally {
        await admin.disconnect().catch(() => undefined);
        await c.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rf1 = median(runs.rf1, (x) => x.mb_per_sec);
  const rf3 = median(runs.rf3, (x) => x.mb_per_sec);
  const paired = runs.rf3.map((x, i) => x.mb_per_sec / runs.rf1[i].mb_per_sec).sort((a, b) => a - b);
  const ratio = round(rf3.mb_per_sec / rf1.mb_per_sec, 3);
  console.error(`kafka acks=all: RF3 ${rf3.mb_per_sec} MB/s / RF1 ${rf1.mb_per_sec} MB/s = ${ratio}x (target >= 0.6x)`);
  return {
    kafka_acks_all: {
      settings: { partitions: KAFKA_PARTITIONS, records: KAFKA_RECORDS, record_value_bytes: RECORD, kcat_produce: KCAT_PRODUCE_ARGS.join(" "), kcat: await kcatVersion(), bootstrap: "all three brokers" },
      rf1: runs.rf1,
      rf3: runs.rf3,
      ratio_rf3_over_rf1: ratio,
      ratio_median_of_paired: round(paired[Math.floor(paired.length / 2)], 3),
    },
  };
}

const IDLE_STREAMS = Number(flag("idle-streams") ?? (quick ? 20 : 200));
const IDLE_SETTLE_MS = quick ? 3000 : 15_000;
const IDLE_MEASURE_MS = quick ? 5000 : 30_000;

/** The idle cost of IDLE_STREAMS R3 streams with a consumer each, on both clusters (see the header). */
async function idleBench(etcd: EtcdHarness): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const f of ["nagare", "nats-server"] as const) {
    const c = await startJsCluster(f, f === "nats-server" ? null : etcd);
    const admin = await connect({ servers: c.urls[0] });
    try {
      const jsm = await jetstreamManager(admin, { timeout: 30_000 });
      const t0 = performance.now();
      for (let i = 0; i < IDLE_STREAMS; i++) {
        const name = `IDLE${i}`;
        await addStream(jsm, name, 3);
        await jsm.consumers.add(name, { durable_name: "c", ack_policy: AckPolicy.Explicit });
      }
      const createMs = performance.now() - t0;
      await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
      const pids = c.nodes.map((n) => n.pid);
      const cpu0 = pids.map(cpuSeconds);
      const m0 = performance.now();
      await new Promise((r) => setTimeout(r, IDLE_MEASURE_MS));
      const seconds = (performance.now() - m0) / 1000;
      const byNode = pids.map((pid, i) => round(((cpuSeconds(pid) - cpu0[i]) / seconds) * 100, 2));
      out[f] = { streams: IDLE_STREAMS, create_ms_per_stream_and_consumer: round(createMs / IDLE_STREAMS, 1), idle_cpu_percent_by_node: byNode, measured_s: round(seconds, 1) };
      console.error(`idle ${f}: ${IDLE_STREAMS} R3 streams with a consumer each, CPU % by node ${byNode.join("/")}, ${round(createMs / IDLE_STREAMS, 1)} ms a create, load ${loadavg()[0].toFixed(2)}`);
    } finally {
      await admin.close();
      await c.stop();
    }
  }
  return { idle_r3_streams: out };
}

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const etcd = await startEtcd();
  const results: Record<string, unknown> = {};
  try {
    if (only === undefined || only === "publish") Object.assign(results, await publishBench(etcd));
    if (only === undefined || only === "kafka") Object.assign(results, await kafkaBench(etcd));
    if (only === "idle") Object.assign(results, await idleBench(etcd));
    if (only === undefined || only === "failover") {
      for (const lease of [undefined, "2s"]) {
        const r = await failoverBench(etcd, lease);
        results[`failover_lease_${lease ?? "default_5s"}`] = r;
        console.error(`failover lease ${r.lease_ttl}: p50 ${r.p50_ms} ms, max ${r.max_ms} ms over ${r.kills} kills`);
      }
    }
  } finally {
    await etcd.close();
  }
  const report = {
    benchmark: "replication",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    kills: KILLS,
    machine: { ...machineInfo("client and etcd on core 0, the three nodes of each cluster on core 1"), load_average_at_end: loadavg().map((x) => round(x, 2)) },
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "@nats-io/jetstream v3 in the benchmark process", etcd: "Debian's etcd-server, one member on loopback" },
    topology:
      "3 nodes each. nagare: cluster { name } and etcd { endpoints, prefix } (etcd names the members), jetstream { store_dir } in a temp dir, sync always (fsync before every ack, its default). nats-server: cluster { routes } (all three), jetstream { store_dir }, its default sync (every 2 minutes). A fresh cluster per flavour per repeat; a fresh stream per pass, created through node 0, the client connected to the stream's leader, the warm-up's publishes then the measured ones into it.",
    notes:
      "acked_per_sec: publishes of 128 B acknowledged per second (async, `window` in flight). nagare_sync_2m: nagare with jetstream { sync_interval: 2m } on every node, nats-server's default, for equal durability (nagare's replicas then acknowledge what they wrote, not fsynced). Ratios nagare / nats-server, medians of the repeats by acked/s; *_median_of_paired pairs each repeat's runs. server_cpu_us_per_msg sums the three nodes. Failover: from sending SIGKILL to the leader's process to the first ack of a publish sent after it (publisher on a surviving node, one publish at a time before the kill; after it one message, a new attempt every 25 ms with the same msgID, whatever became of the earlier attempts, until one is acknowledged); the killed node is restarted and every replica current before the next kill. etcd's lease of the dead node must expire before anyone takes over, so the lease TTL bounds the figure from below (minus the time since its last keep-alive).",
    kafka: "kafka_acks_all: kcat -P (librdkafka) at acks=all into a topic of 3 partitions (one led by each node) with replication factor 1 and 3 on the same three nodes (a fresh cluster per repeat, the two in alternating order), MB/s of 1 KiB records; ratio RF3 / RF1 of the medians.",
    results,
  };
  // --only=failover (or publish) alone goes to replication-failover-<date>.json.
  publish(root, only === undefined ? "replication" : `replication-${only}`, report, !quick && !profile);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
