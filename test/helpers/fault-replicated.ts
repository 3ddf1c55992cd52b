/**
 * One fault-test run over replicated JetStream streams (issue 20): three
 * streams of `num_replicas: 3` on a fault cluster with a 2 s lease, load
 * from real clients recording a history, and a seeded schedule of the
 * faults replication must survive, each aimed at a stream's leader as it
 * is when the fault starts: kill -9 (restarted after up to 3 s), SIGSTOP
 * past the lease, a partition cutting it off from its peers and from
 * every etcd member past the lease, and the etcd leader killed. Then every
 * fault is healed, the run waits for every replica to be current (stream
 * info's `cluster.replicas`, lag 0), reads every stream through its leader,
 * stops the nodes and reads each node's copy from its disk: the checker's
 * checks (`checker.ts`), and every replica's log equal to the leader's.
 *
 * The load (`fault-scenario.ts`'s clients, through the client proxies):
 * two JetStream publishers, one publish in flight each, `Nats-Msg-Id` =
 * the value, retried with it until acknowledged; a reader of each stream's
 * next sequence (MSG.GET, which sees nothing past the high watermark); and
 * a durable pull consumer per stream, explicit ack, whose deliveries are
 * reads and whose confirmed acks (`ackAck`) make an ack floor that
 * consumer info must not show going back (`commit` / `committed` ops).
 *
 * Kafka too, on a topic of three partitions at replication factor 3: a
 * KafkaJS idempotent producer at acks=all (a send that fails is recorded
 * as failed and never sent again), a KafkaJS consumer group whose commits
 * must never be fetched going back, and kcat (librdkafka) for the final
 * read. Leader faults aim at a stream's leader or at a partition's, as
 * Metadata names it when the fault starts; a healed topic converges when
 * Metadata shows every partition with its three replicas in sync.
 */

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { jetstream, jetstreamManager, AckPolicy, type JetStreamManager } from "@nats-io/jetstream";
import kafkajs from "kafkajs";
import { FileLog } from "../../src/store/file-log.js";
import type { LostRange } from "../../src/store/log.js";
import { kafkaRecords } from "../../src/protocols/kafka/stored-batches.js";
import { History, type Op } from "./history.js";
import { checkHistory, type CheckResult, type FinalLogs, type Problem } from "./checker.js";
import { describeFault, DISK_KINDS, faultSchedule, FOLLOWER_KINDS, LEADER_KINDS, type Fault, type FaultKind } from "./fault-schedule.js";
import { canMountDisks, startFaultCluster, type FaultCluster } from "./fault-cluster.js";
import { applyFault, committedFetcher, healAll, jsPublisher, jsReader, kafkaGroupReader, kafkaProducer, kcatRead, natsClient, readStreams, retrying, sleep } from "./fault-scenario.js";
import { rng } from "./random.js";

const { Kafka, logLevel } = kafkajs;
type Admin = ReturnType<InstanceType<typeof Kafka>["admin"]>;

export const REPLICATED_KINDS: FaultKind[] = ["kill-leader", "pause-leader", "isolate-leader", "kill-etcd-leader", "disk-full-follower", "disk-full-leader"];
/** Each node's own disk, for the disk-full fault: ample for a run's streams. */
const DISK_MB = 256;

/** The lease of the replicated run: a failover takes about one lease plus a rank delay. */
export const REPLICATED_LEASE_MS = 2000;

export const REPLICATED_STREAMS = [0, 1, 2].map((i) => ({ name: `r${i}`, subject: `r.${i}` }));
/** The replicated Kafka topic: three partitions, replication factor 3. */
export const REPLICATED_TOPIC = "kr";
const TOPIC_PARTITIONS = 3;
const KAFKA_GROUP = "kreaders";
/** What leader and follower faults aim at: a stream (its partition 0) or a partition of the topic, `<topic>/<partition>`. */
const TARGETS = [...REPLICATED_STREAMS.map((s) => s.name), ...Array.from({ length: TOPIC_PARTITIONS }, (_, p) => `${REPLICATED_TOPIC}/${p}`)];
const CONSUMER = "reader";
/** How long one client may take to close. */
const CLOSE_MS = 10_000;
/** How long the load's workers may take to stop once told to: past it, a hang to report (a Kafka send retries for up to a minute). */
const WORKERS_MS = 90_000;
/** How long the healed cluster may take to bring every replica current: past it, a hang to report. */
const CONVERGE_MS = 60_000;

export interface ReplicatedRun {
  seed: number;
  schedule: Fault[];
  history: History;
  final: FinalLogs;
  /** The checker's result, with `replica-diverged`, `false-loss`, `not-converged` and `ack-floor-lost` problems added (and its `commit-backwards` judged by `ackFloorRegressions`). */
  result: CheckResult;
  /** Each stream's and partition's (`<stream>/<partition>`) leader at the end, and each replica's record count read from its disk. */
  replicas: Array<{ stream: string; leader: string; counts: Record<string, number> }>;
  crashes: string[];
  /** Each node's log over all its runs. */
  nodeLogs: Record<string, string>;
  /** The wall clock (ms) at history time 0, to match history times with the nodes' log lines. */
  clockZero: number;
}

export async function runReplicatedScenario(o: { seed: number; durationMs: number; kinds?: FaultKind[]; log?: (line: string) => void }): Promise<ReplicatedRun> {
  const log = o.log ?? (() => {});
  // The disk fault needs a file system of each node's own (a tmpfs: root); without, the run says so and does without it.
  const disks = canMountDisks();
  const kinds = (o.kinds ?? REPLICATED_KINDS).filter((k) => disks || !DISK_KINDS.includes(k));
  const streams = REPLICATED_STREAMS;
  const schedule = faultSchedule(rng(o.seed), { durationMs: o.durationMs, kinds, nodes: ["a", "b", "c"], streams: TARGETS });
  log(`replicated fault scenario: seed ${o.seed}, ${o.durationMs} ms, ${schedule.length} faults (FAULT_SEED=${o.seed} replays it)${disks ? "" : "; no disk faults: this process may not mount a tmpfs"}`);
  const history = new History();
  const cluster = await startFaultCluster({ leaseMs: REPLICATED_LEASE_MS, ...(disks ? { diskMb: DISK_MB } : {}) });
  const closers: Array<() => Promise<unknown>> = [];
  try {
    const jsm = await jetstreamManager(await natsClient(cluster, closers));
    for (const s of streams) {
      const info = await retrying(`creating ${s.name}`, () => jsm.streams.add({ name: s.name, subjects: [s.subject], num_replicas: 3 }));
      await retrying(`consumer of ${s.name}`, () => jsm.consumers.add(s.name, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit, ack_wait: 2_000_000_000 }));
      log(`${s.name} led by ${info.cluster?.leader}, replicas ${(info.cluster?.replicas ?? []).map((r) => r.name).join(", ")}`);
    }
    const kafka = new Kafka({ clientId: "faults", brokers: cluster.nodes.map((n) => n.kafka), logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
    const admin = kafka.admin({ retry: { retries: 2, initialRetryTime: 100 } });
    await retrying("connecting the Kafka admin", () => admin.connect());
    closers.push(() => admin.disconnect());
    await retrying(`creating ${REPLICATED_TOPIC}`, () => admin.createTopics({ topics: [{ topic: REPLICATED_TOPIC, numPartitions: TOPIC_PARTITIONS, replicationFactor: 3 }], waitForLeaders: true }));
    const brokers = await brokerNames(admin, cluster);
    log(`${REPLICATED_TOPIC} partition leaders: ${(await topicPartitions(admin)).map((p) => `${p.partitionId}→${brokers.get(p.leader) ?? p.leader}`).join(", ")}`);
    let running = true;
    const workers: Array<[string, Promise<void>]> = [
      ["kafka producer", kafkaProducer(kafka, history, () => running, REPLICATED_TOPIC)],
      ["kafka group reader", kafkaGroupReader(cluster.nodes.map((n) => n.kafka), history, () => running, closers, REPLICATED_TOPIC, KAFKA_GROUP)],
      ["kafka committed-offsets fetcher", committedFetcher(kafka, history, () => running, REPLICATED_TOPIC, KAFKA_GROUP)],
      ...[0, 1].map((w): [string, Promise<void>] => [`jetstream publisher jp${w}`, jsPublisher(cluster, streams, history, `jp${w}`, () => running, closers)]),
      ["jetstream reader", jsReader(cluster, streams, history, () => running, closers)],
      ...streams.map((s): [string, Promise<void>] => [`consumer reader of ${s.name}`, consumerReader(cluster, s.name, history, () => running, closers)]),
      ["ack floor fetcher", ackFloorFetcher(jsm, streams, history, () => running)],
    ];
    const start = Date.now();
    for (const f of schedule) {
      const wait = start + f.at - Date.now();
      if (wait > 0) await sleep(wait);
      let aimed = f;
      if (LEADER_KINDS.includes(f.kind)) {
        const leader = await leaderOf(jsm, admin, brokers, f.stream!, 10_000);
        if (leader === undefined) {
          log(`${describeFault(f)}: skipped, ${f.stream} has no leader`);
          history.add({ type: "nemesis", what: `skipped ${describeFault(f)}: no leader` });
          continue;
        }
        aimed = { ...f, node: leader };
      } else if (FOLLOWER_KINDS.includes(f.kind)) {
        const follower = await followerOf(jsm, admin, brokers, f.stream!, f.node, 10_000);
        if (follower === undefined) {
          log(`${describeFault(f)}: skipped, ${f.stream} has no follower up`);
          history.add({ type: "nemesis", what: `skipped ${describeFault(f)}: no follower` });
          continue;
        }
        aimed = { ...f, node: follower };
      }
      log(`${describeFault(f)}${aimed.node !== f.node || aimed.stream !== undefined ? ` (${aimed.node})` : ""}`);
      const note = await applyFault(cluster, history, aimed);
      if (note !== undefined) log(`  ${note}`);
    }
    const rest = start + o.durationMs - Date.now();
    if (rest > 0) await sleep(rest);
    await healAll(cluster, history);
    // Each step after the schedule is bounded; the log says how far a run got, should one ever stall (a CI run once did, after its last fault).
    const healed = Date.now();
    const phase = (what: string): void => log(`  +${((Date.now() - healed) / 1000).toFixed(1)}s after healing: ${what}`);
    // A last stretch of load on the healed cluster: what was held in a partition arrives, retries finish.
    await sleep(2000);
    running = false;
    const extra: Problem[] = [];
    // Each worker finishes its operation in flight and stops; one that does not is a hang to report, not to wait for.
    const stuck = await unfinished(workers, WORKERS_MS);
    phase(`the load's workers stopped${stuck.length > 0 ? ` but for ${stuck.join(", ")}` : ""}`);
    if (stuck.length > 0) extra.push({ check: "not-converged", detail: `still running ${WORKERS_MS} ms after the load stopped: ${stuck.join(", ")}` });
    const leaders = new Map<string, string>();
    for (const s of streams) {
      const at = await converged(jsm, s.name);
      if (typeof at === "string") leaders.set(`${s.name}/0`, at);
      else extra.push({ check: "not-converged", detail: `${s.name}: replicas not all current ${CONVERGE_MS} ms after healing: ${JSON.stringify(at)}` });
    }
    phase("the streams' replicas converged");
    const topicAt = await topicConverged(admin, brokers, ackedEnds(history));
    phase("the topic's replicas converged");
    if (typeof topicAt === "string") for (let p = 0; p < TOPIC_PARTITIONS; p++) leaders.set(`${REPLICATED_TOPIC}/${p}`, topicAt.split(",")[p]);
    else extra.push({ check: "not-converged", detail: `${REPLICATED_TOPIC}: partitions not all in sync ${CONVERGE_MS} ms after healing: ${JSON.stringify(topicAt)}` });
    const final = await readStreams(cluster, streams);
    phase("the streams read");
    for (const [l, records] of await kcatRead(cluster.nodes.map((n) => n.kafka).join(","), REPLICATED_TOPIC, TOPIC_PARTITIONS)) final.set(l, records);
    phase("the topic read (kcat)");
    // The clients go while the nodes are up: a KafkaJS consumer leaving its group retries for long against brokers gone.
    await closeAll(closers);
    phase("the clients closed");
    // The copies on disk: every node stopped (acks were fsynced, so -9 keeps them), each copy read whole.
    for (const n of cluster.nodes) await n.kill();
    const replicas: ReplicatedRun["replicas"] = [];
    const copies = [...streams.map((s) => ({ log: `${s.name}/0`, dir: s.name, partition: 0, first: 1 })), ...Array.from({ length: TOPIC_PARTITIONS }, (_, p) => ({ log: `${REPLICATED_TOPIC}/${p}`, dir: REPLICATED_TOPIC, partition: p, first: 0 }))];
    for (const c of copies) {
      const counts: Record<string, number> = {};
      const theirs = (final.get(c.log) ?? []).map((r) => `${r.offset} ${r.value}`);
      for (const n of cluster.nodes) {
        // A Kafka offset is the stored sequence less one.
        const copy = await readCopy(n.storeDir, c.dir, c.partition);
        // No fault here damages stored bytes: a loss reported (a crash's cut taken for one, an end mark ahead of its log) is false.
        if (copy.lost.length > 0) extra.push({ check: "false-loss", detail: `${c.log} on ${n.name}: reports ${JSON.stringify(copy.lost)} lost` });
        const mine = copy.records.map((r) => `${r.offset - 1 + c.first} ${r.value}`);
        counts[n.name] = mine.length;
        const at = firstDifference(mine, theirs);
        if (at >= 0) extra.push({ check: "replica-diverged", detail: `${c.log} on ${n.name}: record ${at} is ${mine[at] ?? "missing"}, the leader's read has ${theirs[at] ?? "nothing"} (${mine.length} records against ${theirs.length})` });
      }
      replicas.push({ stream: c.log, leader: leaders.get(c.log) ?? "?", counts });
    }
    const checked = checkHistory(history.ops, final);
    // For the streams' consumers the checker's commit-backwards would also fail a fetch below an earlier fetch: an
    // unconfirmed ack may be lost (docs/CLUSTER.md), so only a floor below a confirmed ack is a problem there. A Kafka
    // group's committed offsets are held to the checker's rule.
    const floors = ackFloorRegressions(history.ops.filter((op) => !("log" in op) || !op.log.startsWith(`${REPLICATED_TOPIC}/`)));
    const problems = [...checked.problems.filter((p) => p.check !== "commit-backwards" || p.detail.startsWith(`${KAFKA_GROUP} `)), ...floors.problems, ...extra];
    const result: CheckResult = { ...checked, ok: problems.length === 0, problems };
    log(`consumer ack floors: ${floors.tolerated} fetches saw a floor taken back to the last copy, below no confirmed ack (at most ${floors.maxBack} sequences back)`);
    const nodeLogs = Object.fromEntries(cluster.nodes.map((n) => [n.name, n.logs()]));
    return { seed: o.seed, schedule, history, final, result, replicas, crashes: cluster.nodes.flatMap((n) => n.crashes), nodeLogs, clockZero: Date.now() - history.now() };
  } finally {
    await closeAll(closers);
    await cluster.close();
  }
}

/** The names of the workers still running after `ms`. */
async function unfinished(workers: ReadonlyArray<[string, Promise<void>]>, ms: number): Promise<string[]> {
  const done = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  const all = Promise.all(workers.map(([name, w]) => w.catch(() => undefined).then(() => void done.add(name))));
  await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  return workers.map(([name]) => name).filter((name) => !done.has(name));
}

/** Kafka broker ids by node name's broker: Metadata names brokers by id, the cluster's nodes by their Kafka address. */
async function brokerNames(admin: Admin, cluster: FaultCluster): Promise<Map<number, string>> {
  const { brokers } = await retrying("describing the Kafka cluster", () => admin.describeCluster());
  const names = new Map<number, string>();
  for (const b of brokers) {
    const n = cluster.nodes.find((x) => x.kafka === `${b.host}:${b.port}`);
    if (n !== undefined) names.set(b.nodeId, n.name);
  }
  if (names.size !== cluster.nodes.length) throw new Error(`Kafka brokers ${JSON.stringify(brokers)} do not name the cluster's nodes`);
  return names;
}

async function topicPartitions(admin: Admin): Promise<Array<{ partitionId: number; leader: number; replicas: number[]; isr: number[] }>> {
  const md = await admin.fetchTopicMetadata({ topics: [REPLICATED_TOPIC] });
  return [...md.topics[0].partitions].sort((a, b) => a.partitionId - b.partitionId);
}

/** A Kafka target's partition number, or undefined for a stream. */
function partitionOf(target: string): number | undefined {
  return target.startsWith(`${REPLICATED_TOPIC}/`) ? Number(target.slice(REPLICATED_TOPIC.length + 1)) : undefined;
}

/** The node leading a target (a stream or a topic partition), undefined if none is found within `ms`. */
/** Closes the run's clients, newest first, each given a bounded time (a client of a node gone may never finish closing). */
async function closeAll(closers: Array<() => Promise<unknown>>): Promise<void> {
  for (const c of closers.splice(0).reverse()) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([c().catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_MS)))]);
    clearTimeout(timer);
  }
}

async function leaderOf(jsm: JetStreamManager, admin: Admin, brokers: Map<number, string>, target: string, ms: number): Promise<string | undefined> {
  const partition = partitionOf(target);
  try {
    return await retrying(`${target}'s leader`, async () => {
      const leader = partition === undefined ? (await jsm.streams.info(target)).cluster?.leader : brokers.get((await topicPartitions(admin))[partition].leader);
      if (leader === undefined || leader === "") throw new Error("no leader");
      return leader;
    }, ms);
  } catch {
    return undefined;
  }
}

/** A replica of a target other than its leader, the scheduled `preferred` node if it is one; undefined if none is found. */
async function followerOf(jsm: JetStreamManager, admin: Admin, brokers: Map<number, string>, target: string, preferred: string, ms: number): Promise<string | undefined> {
  const partition = partitionOf(target);
  try {
    return await retrying(`${target}'s followers`, async () => {
      let followers: string[];
      if (partition === undefined) followers = ((await jsm.streams.info(target)).cluster?.replicas ?? []).map((r) => r.name);
      else {
        const p = (await topicPartitions(admin))[partition];
        followers = p.replicas.filter((r) => r !== p.leader).map((r) => brokers.get(r) ?? String(r));
      }
      if (followers.length === 0) throw new Error("no follower");
      return followers.includes(preferred) ? preferred : followers[0];
    }, ms);
  } catch {
    return undefined;
  }
}

/** Waits for every partition of the topic to have its three replicas in sync; the leaders' names, comma-separated, or the last Metadata if it never did. */
/** Per partition of the topic, the offset after the highest one acknowledged to a producer. */
function ackedEnds(history: History): number[] {
  const ends = new Array<number>(TOPIC_PARTITIONS).fill(0);
  for (const op of history.ops) {
    if (op.type !== "ack" || !("log" in op) || !op.log.startsWith(`${REPLICATED_TOPIC}/`)) continue;
    const p = Number(op.log.slice(REPLICATED_TOPIC.length + 1));
    ends[p] = Math.max(ends[p], (op as { offset: number }).offset + 1);
  }
  return ends;
}

/**
 * Waits for every partition of the topic to have a leader and three replicas
 * in sync, and a high watermark past what was acknowledged: a leader
 * restarted within its epoch (a disk fault on the node) serves its records
 * again only once its followers have fetched from it.
 */
async function topicConverged(admin: Admin, brokers: Map<number, string>, ackedEnd: number[]): Promise<string | unknown> {
  const deadline = Date.now() + CONVERGE_MS;
  let last: unknown;
  for (;;) {
    try {
      const ps = await topicPartitions(admin);
      last = ps;
      const highs = ps.length === TOPIC_PARTITIONS && ps.every((p) => p.leader >= 0 && p.isr.length === 3) ? await admin.fetchTopicOffsets(REPLICATED_TOPIC) : [];
      last = { partitions: ps, highs };
      if (highs.length === TOPIC_PARTITIONS && highs.every((h) => Number(h.high) >= ackedEnd[h.partition])) return ps.map((p) => brokers.get(p.leader) ?? String(p.leader)).join(",");
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) return { last };
    await sleep(250);
  }
}

/** Waits for every replica of `stream` to be current with lag 0; the leader's name, or the last info's cluster if it never was. */
async function converged(jsm: JetStreamManager, stream: string): Promise<string | unknown> {
  const deadline = Date.now() + CONVERGE_MS;
  let last: unknown;
  for (;;) {
    try {
      const c = (await jsm.streams.info(stream)).cluster;
      last = c;
      const replicas = c?.replicas ?? [];
      if (c?.leader !== undefined && replicas.length === 2 && replicas.every((r) => r.current && (r as { lag?: number }).lag === 0)) return c.leader;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) return { last };
    await sleep(250);
  }
}

/** A node's copy of a stream's partition, read from its disk (the node stopped); Kafka's stored batches read record by record. */
async function readCopy(storeDir: string, stream: string, partition: number): Promise<{ records: Array<{ offset: number; value: string }>; lost: LostRange[] }> {
  const where = readdirSync(storeDir, { recursive: true })
    .map(String)
    .find((p) => p.endsWith(join(stream, `p${partition}`)));
  if (where === undefined) return { records: [], lost: [] };
  const copy = await FileLog.open({ dir: join(storeDir, where), limits: {}, foreign: kafkaRecords });
  try {
    const out: Array<{ offset: number; value: string }> = [];
    for (let from = 1; ; ) {
      const page = await copy.scan(from, { maxMessages: 4096 });
      if (page.length === 0) return { records: out, lost: copy.state().lost };
      for (const m of page) out.push({ offset: m.seq, value: m.data.toString() });
      from = page[page.length - 1].seq + 1;
    }
  } finally {
    await copy.close();
  }
}

function firstDifference(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * A durable pull consumer of one stream: every delivery is a read; an ack
 * confirmed by the server (`ackAck`) raises this reader's ack floor (every
 * sequence up to it acknowledged), recorded as a commit when it rises.
 */
async function consumerReader(cluster: FaultCluster, stream: string, h: History, running: () => boolean, closers: Array<() => Promise<unknown>>): Promise<void> {
  const js = jetstream(await natsClient(cluster, closers));
  const acked = new Set<number>();
  let floor = 0;
  while (running()) {
    try {
      const c = await js.consumers.get(stream, CONSUMER);
      while (running()) {
        const m = await c.next({ expires: 1000 });
        // A next() or ack that fails at once (a closed connection, a consumer being taken over) must not turn this into
        // a loop of promises alone: timers would never run again, and with them the end of the run (a CI run hung so).
        if (m === null) {
          await sleep(100);
          continue;
        }
        h.add({ type: "read", client: `cr-${stream}`, log: `${stream}/0`, offset: m.seq, value: m.string() });
        const t0 = h.now();
        // A confirmation waits for the followers' copies; one not in time (a failover) is asked for again, as the ack
        // may have been applied: else its sequence would stay a hole below this reader's floor for the rest of the run.
        let confirmed = false;
        for (let tries = 0; tries < 5 && running() && !confirmed; tries++) confirmed = await m.ackAck({ timeout: 2000 }).catch(() => false);
        if (!confirmed) {
          await sleep(100);
          continue;
        }
        if (m.seq > floor) acked.add(m.seq);
        let next = floor;
        while (acked.has(next + 1)) acked.delete(++next);
        if (next > floor) {
          floor = next;
          h.ops.push({ type: "commit", t: h.now(), t0, client: `cr-${stream}`, group: CONSUMER, log: `${stream}/0`, offset: floor });
        }
      }
    } catch {
      await sleep(200);
    }
  }
}

/** Consumer info's ack floor of each stream's reader, fetched over and over: it must never go back. */
async function ackFloorFetcher(jsm: JetStreamManager, streams: ReadonlyArray<{ name: string }>, h: History, running: () => boolean): Promise<void> {
  while (running()) {
    for (const s of streams) {
      const t0 = h.now();
      try {
        const info = await jsm.consumers.info(s.name, CONSUMER);
        h.ops.push({ type: "committed", t: h.now(), t0, client: "af", group: CONSUMER, log: `${s.name}/0`, offset: info.ack_floor.stream_seq });
      } catch {
        // The leader unreachable: try again.
      }
    }
    await sleep(300);
  }
}

/**
 * Consumer ack floors over the history. A fetch of a floor lower than an
 * ack confirmed (`ackAck`) before the fetch began is `ack-floor-lost`: a
 * confirmation waits until every in-sync follower's copy of the consumers
 * has the ack (consumer-copies.ts), and whoever takes over adopts its
 * copy. A fetch lower than an earlier fetch but not below a confirmed ack
 * is allowed, and counted: acks applied on the leader and not yet copied
 * (unconfirmed) may be lost by a failover; their messages come again.
 */
export function ackFloorRegressions(ops: readonly Op[]): { problems: Problem[]; tolerated: number; maxBack: number } {
  const problems: Problem[] = [];
  let tolerated = 0;
  let maxBack = 0;
  const byLog = new Map<string, Array<Extract<Op, { type: "commit" | "committed" }>>>();
  for (const o of ops) {
    if (o.type !== "commit" && o.type !== "committed") continue;
    let list = byLog.get(o.log);
    if (list === undefined) byLog.set(o.log, (list = []));
    list.push(o);
  }
  for (const [log, list] of byLog) {
    const commits = list.filter((c) => c.type === "commit").sort((a, b) => a.t - b.t);
    let seen = 0;
    for (const f of [...list].filter((o) => o.type === "committed").sort((a, b) => a.t0 - b.t0)) {
      const lost = commits.find((c) => c.t < f.t0 && c.offset > f.offset);
      if (lost !== undefined) {
        problems.push({ check: "ack-floor-lost", detail: `${log}: ${f.client} fetched ack floor ${f.offset} at ${Math.round(f.t0)} ms, but ${lost.offset} was confirmed at ${Math.round(lost.t)} ms` });
      } else if (f.offset < seen) {
        tolerated++;
        maxBack = Math.max(maxBack, seen - f.offset);
      }
      seen = Math.max(seen, f.offset);
    }
  }
  return { problems, tolerated, maxBack };
}
