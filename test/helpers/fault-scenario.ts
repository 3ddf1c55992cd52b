/**
 * One fault-test run: a fault cluster (`fault-cluster.ts`), load from real
 * clients recording a history (`history.ts`), the faults of a seeded
 * schedule (`fault-schedule.ts`) applied while the load runs, then every
 * fault healed, every log read in full, and the history checked
 * (`checker.ts`). The load:
 *
 * - JetStream publishers (`@nats-io/jetstream`, one publish in flight each)
 *   to three streams, one led by each node, every publish with
 *   `Nats-Msg-Id` = its value and retried with it until acknowledged
 *   (deduplicated by the stream), through the client proxies;
 * - a KafkaJS idempotent producer at acks=-1 to a topic of three
 *   partitions spread over the nodes (KafkaJS retries inside a send; a
 *   send that fails is recorded as failed, never sent again);
 * - readers: JetStream gets of every stream's next sequence, a KafkaJS
 *   consumer group (its commits recorded), and fetches of that group's
 *   committed offsets.
 *
 * Final reads use other clients: JetStream gets through the client
 * proxies, and kcat (librdkafka) for the Kafka topic.
 */

import { spawn } from "node:child_process";
import { Worker } from "node:worker_threads";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import kafkajs from "kafkajs";
import { History } from "./history.js";
import type { GroupReaderConfig, GroupReaderEvent } from "./kafka-group-worker.js";
import { checkHistory, type CheckResult, type FinalLogs } from "./checker.js";
import { describeFault, faultSchedule, type Fault, type FaultKind } from "./fault-schedule.js";
import { startFaultCluster, type FaultCluster } from "./fault-cluster.js";
import { rng } from "./random.js";

const { Kafka, logLevel } = kafkajs;

export const SAFE_WITHOUT_REPLICATION: FaultKind[] = ["pause", "cut-route", "partition-route", "delay-route", "kill-etcd-leader", "partition-etcd", "kill-node"];

export interface ScenarioOptions {
  seed: number;
  durationMs: number;
  kinds?: FaultKind[];
  log?: (line: string) => void;
}

export interface ScenarioRun {
  seed: number;
  schedule: Fault[];
  history: History;
  final: FinalLogs;
  result: CheckResult;
  /** Node processes that exited without being killed: each a bug to report. */
  crashes: string[];
}

const STREAMS = ["a", "b", "c"].map((n) => ({ name: `js-${n}`, subject: `f.${n}`, node: n }));
const TOPIC = "kt";
const GROUP = "readers";
/** How long a JetStream publisher retries one value before it records it as failed. */
const PUBLISH_GIVE_UP_MS = 20_000;
/** Every wait of the run's setup and final reads is bounded by this. */
const SETUP_LIMIT_MS = 30_000;

export async function runFaultScenario(o: ScenarioOptions): Promise<ScenarioRun> {
  const log = o.log ?? (() => {});
  const kinds = o.kinds ?? SAFE_WITHOUT_REPLICATION;
  const schedule = faultSchedule(rng(o.seed), { durationMs: o.durationMs, kinds, nodes: ["a", "b", "c"] });
  log(`fault scenario: seed ${o.seed}, ${o.durationMs} ms, ${schedule.length} faults (FAULT_SEED=${o.seed} replays it)`);
  const history = new History();
  const cluster = await startFaultCluster();
  const closers: Array<() => Promise<unknown>> = [];
  try {
    log(await setUp(cluster));
    let running = true;
    const kafka = new Kafka({ clientId: "faults", brokers: cluster.nodes.map((n) => n.kafka), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
    const workers = [
      ...[0, 1].map((w) => jsPublisher(cluster, STREAMS, history, `jp${w}`, () => running, closers)),
      kafkaProducer(kafka, history, () => running),
      jsReader(cluster, STREAMS, history, () => running, closers),
      kafkaGroupReader(cluster.nodes.map((n) => n.kafka), history, () => running, closers),
      committedFetcher(kafka, history, () => running),
    ];
    const start = Date.now();
    for (const f of schedule) {
      const wait = start + f.at - Date.now();
      if (wait > 0) await sleep(wait);
      log(describeFault(f));
      await applyFault(cluster, history, f);
    }
    const rest = start + o.durationMs - Date.now();
    if (rest > 0) await sleep(rest);
    await healAll(cluster, history);
    // A last stretch of load on the healed cluster: what was held in a partition arrives, retries finish.
    await sleep(2000);
    running = false;
    await Promise.all(workers);
    const final = await readFinal(cluster);
    const result = checkHistory(history.ops, final);
    return { seed: o.seed, schedule, history, final, result, crashes: cluster.nodes.flatMap((n) => n.crashes) };
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await cluster.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Retries `f` until it succeeds or `ms` have passed (a cluster still forming answers "no suitable peers" for a while). */
export async function retrying<T>(what: string, f: () => Promise<T>, ms = SETUP_LIMIT_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`);
      await sleep(200);
    }
  }
}

export async function natsClient(cluster: FaultCluster, closers: Array<() => Promise<unknown>>, servers = cluster.nodes.map((n) => n.natsUrl)): Promise<NatsConnection> {
  // Cluster updates off: the client stays behind the proxies instead of learning the nodes' own addresses.
  const nc = await connect({ servers, ignoreClusterUpdates: true, reconnectTimeWait: 100, maxReconnectAttempts: -1, timeout: 2000, pingInterval: 1000, maxPingOut: 2 });
  closers.push(() => nc.close());
  return nc;
}

async function setUp(cluster: FaultCluster): Promise<string> {
  const closers: Array<() => Promise<unknown>> = [];
  try {
    const jsm = await jetstreamManager(await natsClient(cluster, closers, [cluster.node("a").natsUrl]));
    for (const s of STREAMS) {
      const info = await retrying(`placing ${s.name}`, () => jsm.streams.add({ name: s.name, subjects: [s.subject], placement: { cluster: "", tags: [`node:${s.node}`] } }));
      if (info.cluster?.leader !== s.node) throw new Error(`${s.name} placed on ${info.cluster?.leader}, not ${s.node}`);
    }
    const kafka = new Kafka({ clientId: "faults-setup", brokers: cluster.nodes.map((n) => n.kafka), logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    closers.push(() => admin.disconnect());
    await retrying("creating the Kafka topic", () => admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 3 }], waitForLeaders: true }));
    const md = await admin.fetchTopicMetadata({ topics: [TOPIC] });
    return `${TOPIC} partition leaders (broker ids): ${md.topics[0].partitions.map((p) => `${p.partitionId}→${p.leader}`).join(", ")}`;
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}

export async function jsPublisher(cluster: FaultCluster, streams: ReadonlyArray<{ name: string; subject: string }>, h: History, name: string, running: () => boolean, closers: Array<() => Promise<unknown>>): Promise<void> {
  const js = jetstream(await natsClient(cluster, closers));
  for (let i = 0; running(); i++) {
    const s = streams[i % streams.length];
    const value = `${name}-${i}`;
    h.add({ type: "send", client: name, value });
    const giveUp = Date.now() + PUBLISH_GIVE_UP_MS;
    for (;;) {
      try {
        const ack = await js.publish(s.subject, value, { msgID: value, timeout: 2000 });
        h.add({ type: "ack", client: name, value, log: `${ack.stream}/0`, offset: ack.seq });
        break;
      } catch (err) {
        if (Date.now() > giveUp) {
          h.add({ type: "fail", client: name, value, error: (err as Error).message });
          break;
        }
        await sleep(100);
      }
    }
  }
}

export async function kafkaProducer(kafka: InstanceType<typeof Kafka>, h: History, running: () => boolean, topic = TOPIC): Promise<void> {
  const make = async () => {
    const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 1000 } });
    await p.connect();
    return p;
  };
  let producer: Awaited<ReturnType<typeof make>> | undefined;
  for (let i = 0; running(); i++) {
    const value = `kp-${i}`;
    try {
      producer ??= await make();
    } catch {
      await sleep(200);
      continue;
    }
    h.add({ type: "send", client: "kp", value });
    try {
      const [r] = await producer.send({ topic, acks: -1, timeout: 5000, messages: [{ key: value, value }] });
      h.add({ type: "ack", client: "kp", value, log: `${topic}/${r.partition}`, offset: Number(r.baseOffset) });
    } catch (err) {
      h.add({ type: "fail", client: "kp", value, error: (err as Error).message });
      // A failed idempotent producer's sequences may be out of step with the broker's: start a new one.
      await producer.disconnect().catch(() => undefined);
      producer = undefined;
      await sleep(200);
    }
  }
  await producer?.disconnect().catch(() => undefined);
}

export async function jsReader(cluster: FaultCluster, streams: ReadonlyArray<{ name: string }>, h: History, running: () => boolean, closers: Array<() => Promise<unknown>>): Promise<void> {
  const jsm = await jetstreamManager(await natsClient(cluster, closers));
  const next = new Map(streams.map((s) => [s.name, 1]));
  while (running()) {
    let progressed = false;
    for (const s of streams) {
      const seq = next.get(s.name)!;
      try {
        const m = await jsm.streams.getMessage(s.name, { seq });
        if (m === null) continue;
        h.add({ type: "read", client: "jr", log: `${s.name}/0`, offset: m.seq, value: m.string() });
        next.set(s.name, seq + 1);
        progressed = true;
      } catch {
        // Not there yet, or the leader is unreachable: try again later.
      }
    }
    if (!progressed) await sleep(50);
  }
}

/** How long the group reader's worker gets to leave its group before it is ended. */
const GROUP_READER_CLOSE_MS = 8_000;

/**
 * A KafkaJS consumer in `group` reading `topic` from the beginning, in a
 * worker thread (kafka-group-worker.ts says why), its reads and commits in
 * `h`. Its closer asks it to leave the group and ends the thread if it has
 * not within GROUP_READER_CLOSE_MS.
 */
export async function kafkaGroupReader(brokers: string[], h: History, running: () => boolean, closers: Array<() => Promise<unknown>>, topic = TOPIC, group = GROUP): Promise<void> {
  const worker = new Worker(new URL("./kafka-group-worker.js", import.meta.url), { workerData: { brokers, topic, group } satisfies GroupReaderConfig });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  worker.on("error", () => undefined);
  worker.on("message", (e: GroupReaderEvent) => {
    const t = e.at - performance.timeOrigin;
    h.ops.push(e.op.type === "commit" ? { ...e.op, t, t0: e.op.t0 - performance.timeOrigin } : { ...e.op, t });
  });
  closers.push(async () => {
    worker.postMessage("close");
    const timer = setTimeout(() => void worker.terminate(), GROUP_READER_CLOSE_MS);
    await exited;
    clearTimeout(timer);
  });
  while (running()) await sleep(100);
}

export async function committedFetcher(kafka: InstanceType<typeof Kafka>, h: History, running: () => boolean, topic = TOPIC, group = GROUP): Promise<void> {
  const admin = kafka.admin({ retry: { retries: 2, initialRetryTime: 100 } });
  try {
    await admin.connect();
  } catch {
    return;
  }
  while (running()) {
    const t0 = h.now();
    try {
      const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      const t1 = h.now();
      for (const p of t.partitions) h.ops.push({ type: "committed", t: t1, t0, client: "kf", group, log: `${topic}/${p.partition}`, offset: Number(p.offset) });
    } catch {
      // Coordinator unavailable: try again.
    }
    await sleep(300);
  }
  await admin.disconnect().catch(() => undefined);
}

/** Lines of a node's log that name a failed write for want of space (the disk-full fault's evidence). */
function storageErrors(log: string): number {
  return (log.match(/ENOSPC|no space left/gi) ?? []).length;
}

/** Applies one fault and heals it; a line on what it did, for the run's log, when there is more to say than the fault itself. */
export async function applyFault(cluster: FaultCluster, h: History, f: Fault): Promise<string | undefined> {
  const node = cluster.node(f.node);
  let note: string | undefined;
  const what = describeFault(f);
  h.add({ type: "nemesis", what: `start ${what}` });
  switch (f.kind) {
    case "pause":
      node.pause();
      await sleep(f.holdMs);
      node.resume();
      break;
    case "cut-route":
      cluster.net.cut(f.node, f.peer!);
      break;
    case "partition-route":
      cluster.net.partition(f.node, f.peer!);
      await sleep(f.holdMs);
      cluster.net.heal(f.node, f.peer!);
      break;
    case "delay-route":
      cluster.net.delay(f.node, f.peer!, f.delayMs!);
      await sleep(f.holdMs);
      cluster.net.heal(f.node, f.peer!);
      break;
    case "kill-etcd-leader": {
      const leader = await cluster.etcd.waitForLeader(SETUP_LIMIT_MS);
      h.add({ type: "nemesis", what: `etcd leader is ${leader.name}` });
      await leader.kill();
      await sleep(f.holdMs);
      await leader.start();
      break;
    }
    case "partition-etcd":
      cluster.net.isolate(f.node, cluster.etcd.members.map((m) => m.name));
      await sleep(f.holdMs);
      for (const m of cluster.etcd.members) cluster.net.heal(f.node, m.name);
      break;
    case "pause-leader":
      node.pause();
      await sleep(f.holdMs);
      node.resume();
      break;
    case "isolate-leader": {
      const others = [...cluster.nodes.map((n) => n.name).filter((n) => n !== f.node), ...cluster.etcd.members.map((m) => m.name)];
      cluster.net.isolate(f.node, others);
      await sleep(f.holdMs);
      for (const o of others) cluster.net.heal(f.node, o);
      break;
    }
    case "disk-full-follower":
    case "disk-full-leader": {
      const before = storageErrors(node.output());
      node.fillDisk();
      await sleep(f.holdMs);
      node.freeDisk();
      note = `${f.node}'s log shows ${storageErrors(node.output()) - before} storage error(s) while its disk was full`;
      h.add({ type: "nemesis", what: note });
      // A follower is restarted (the operator's cure for sticky storage errors), after which it catches up; a leader is
      // not: it hands its partitions over, and its failed logs reopen by themselves once the disk takes writes.
      if (f.kind === "disk-full-follower") {
        await node.kill();
        await node.start();
      }
      break;
    }
    case "kill-leader":
    case "kill-node":
      await node.kill();
      await sleep(f.holdMs);
      await node.start();
      break;
  }
  h.add({ type: "nemesis", what: `end ${what}` });
  return note;
}

export async function healAll(cluster: FaultCluster, h: History): Promise<void> {
  cluster.net.heal();
  for (const m of cluster.etcd.members) if (!m.running) await m.start();
  for (const n of cluster.nodes) {
    if (n.paused) n.resume();
    if (!n.running) await n.start();
  }
  await cluster.etcd.waitForLeader(SETUP_LIMIT_MS);
  h.add({ type: "nemesis", what: "healed" });
}

async function readFinal(cluster: FaultCluster): Promise<FinalLogs> {
  const final = await readStreams(cluster, STREAMS);
  for (const [log, records] of await kcatRead(cluster.nodes.map((n) => n.kafka).join(","), TOPIC)) final.set(log, records);
  return final;
}

/** Every stream read in full through its leader (MSG.GET), as `<stream>/0`. */
export async function readStreams(cluster: FaultCluster, streams: ReadonlyArray<{ name: string }>): Promise<Map<string, Array<{ offset: number; value: string }>>> {
  const final = new Map<string, Array<{ offset: number; value: string }>>();
  const closers: Array<() => Promise<unknown>> = [];
  try {
    const jsm: JetStreamManager = await jetstreamManager(await natsClient(cluster, closers));
    for (const s of streams) {
      const info = await retrying(`reading ${s.name}'s state`, () => jsm.streams.info(s.name));
      const records: Array<{ offset: number; value: string }> = [];
      const seqs: number[] = [];
      for (let q = info.state.first_seq; q <= info.state.last_seq && info.state.messages > 0; q++) seqs.push(q);
      // A bounded number of gets in flight.
      for (let i = 0; i < seqs.length; i += 32) {
        const got = await Promise.all(seqs.slice(i, i + 32).map((seq) => retrying(`${s.name} seq ${seq}`, () => jsm.streams.getMessage(s.name, { seq }))));
        for (const m of got) if (m !== null) records.push({ offset: m.seq, value: m.string() });
      }
      final.set(`${s.name}/0`, records);
    }
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
  return final;
}

/** The whole topic of `partitions` partitions through librdkafka: `kcat -C -e` reads every partition to its end. */
export function kcatRead(brokers: string, topic: string, partitions = 3): Promise<Map<string, Array<{ offset: number; value: string }>>> {
  return new Promise((resolve, reject) => {
    const child = spawn("kcat", ["-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\\n"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), SETUP_LIMIT_MS);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`kcat exited with ${code}: ${err}`));
      const logs = new Map<string, Array<{ offset: number; value: string }>>();
      for (let p = 0; p < partitions; p++) logs.set(`${topic}/${p}`, []);
      for (const line of out.split("\n")) {
        const m = /^(\d+) (\d+) (.*)$/.exec(line);
        if (m === null) continue;
        logs.get(`${topic}/${m[1]}`)!.push({ offset: Number(m[2]), value: m[3] });
      }
      resolve(logs);
    });
  });
}
