/**
 * Kafka door benchmark: produce throughput of 1 KiB records at acks=-1 from
 * kcat (librdkafka) and from KafkaJS, consume throughput with both, and
 * produce→consume latency, beside this machine's sequential write bandwidth
 * measured in the same run on the same filesystem as the store.
 *
 *   npm run bench:kafka                     # full run, writes bench/results/kafka-<date>.json
 *   node dist/bench/kafka.js --quick        # smaller counts, one repeat, for a smoke check
 *   node dist/bench/kafka.js --only=kcat_produce_1p,kcat_produce_4p  # some scenarios, no results file
 *   node dist/bench/kafka.js --only=kcat_produce_1p --profile
 *                                           # nagare writes a .cpuprofile to bench/profiles/
 *   node dist/bench/kafka.js --against=/path/to/other/checkout --repeats=6
 *                                           # the same scenarios on another build (its dist/ built),
 *                                           # alternating with this one repeat by repeat
 *   node dist/bench/kafka.js --warmup=0.1   # the unmeasured pass at a tenth of the size (default: whole)
 *
 * There is no Kafka broker on this machine to compare with: the reference is
 * the disk. Each repeat starts a fresh nagare (its own child process, pinned
 * to core 1, store in a fresh temp dir), runs every scenario once unmeasured
 * (warm-up), probes the disk next to that store, and runs them again measured.
 * NAGARE_BENCH_DIR picks the filesystem (default: the OS temp dir).
 */

import { execFileSync } from "node:child_process";
import { closeSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import kafkajs from "kafkajs";
import { KCAT_PRODUCE_ARGS, RECORD, kcat, kcatInput, kcatVersion } from "./kcat.js";
import { machineInfo, cpuSeconds, freePort, median, publish, round, type Running, start, type Target, waitForPort } from "./harness.js";

const { Kafka, logLevel } = kafkajs;
type KafkaClient = InstanceType<typeof Kafka>;

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const quick = process.argv.includes("--quick");
const profile = process.argv.includes("--profile");
const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const only = arg("only");
/** Another checkout whose build runs the same scenarios, alternating with this one (ABBA...), for before/after figures from one session. */
const against = arg("against");
const REPEATS = arg("repeats") !== undefined ? Number(arg("repeats")) : quick || profile ? 1 : 5;
const base = process.env.NAGARE_BENCH_DIR ?? tmpdir();

/** A nagare build to run: a checkout with its dist/ built. */
interface Build {
  label: string;
  root: string;
  commit: string;
}

function build(label: string, dir: string): Build {
  const at = resolve(dir);
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["-C", at, "describe", "--always", "--dirty"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    // not a git checkout: the label says enough
  }
  return { label, root: at, commit };
}

const MB = 1e6;
const k = quick ? 0.1 : 1;
const COUNTS = {
  kcat_produce: Math.round(300_000 * k),
  kafkajs_produce: Math.round(100_000 * k),
  latency: Math.round(2_000 * k),
  latency_rate: Math.round(50_000 * k),
};
const DISK_PROBE_MIB = quick ? 256 : 1024;
/** Longer than the 2 s after which Linux reports freed pages back to the hypervisor. */
const SETTLE_MS = 3000;
/**
 * The unmeasured pass before the measured one, as a share of each
 * scenario's size: a whole pass by default, so that what is measured is the
 * server in steady state. V8 optimizes a function only after it has run a
 * while (thousands of calls for one that runs once per produce request), so
 * a short warm-up leaves part of the measured pass in unoptimized code and
 * its CPU spent compiling (a tenth of a pass did, until 2026-12-01).
 */
const WARMUP = arg("warmup") !== undefined ? Number(arg("warmup")) : 1;

/**
 * librdkafka learns it is at the end of a partition (-e) from an empty fetch,
 * which the broker holds for fetch.wait.max.ms (500 ms by default, as Kafka
 * does): 10 ms keeps that wait out of the figure. It changes nothing while
 * records are there to fetch.
 */
const KCAT_CONSUME_ARGS = ["-X", "fetch.wait.max.ms=10"];
const KAFKAJS_PRODUCE = { messages_per_send: 1000, sends_in_flight: 4 };
const KAFKAJS_CONSUME = { maxBytesPerPartition: 4 * 1024 * 1024, maxBytes: 16 * 1024 * 1024, maxWaitTimeInMs: 500 };
const LATENCY = { gap_ms: 1, consumer_max_wait_ms: 500 };
/**
 * Produce→consume at a fixed rate: every tick the producer sends, in one
 * send() (acks=-1, not awaited), the records due by then; each carries the
 * time it was due, so a producer that falls behind shows in the figures
 * instead of slowing the schedule down.
 */
const LATENCY_RATE = { records_per_sec: 10_000, tick_ms: 1, max_sends_in_flight: 256, max_records_per_send: 1000, consumer_max_wait_ms: 500 };

// ---- the disk ----

/**
 * Sequential write of `mib` MiB in 1 MiB blocks, one fdatasync at the end, as
 * `dd bs=1M conv=fdatasync`. The file stays until the repeat ends and its
 * directory goes: on a filesystem mounted with `discard` (as this machine's
 * is), deleting 1 GiB queues a discard that the next journal commit waits
 * for, and that commit would be the first fdatasync of the measured produce.
 */
function sequentialWrite(dir: string, mib: number): { mib: number; seconds: number; mb_per_sec: number } {
  const file = join(dir, "seq-probe");
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 131 + 7) & 0xff; // not zeros, in case anything below compresses
  const fd = openSync(file, "w");
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < mib; i++) writeSync(fd, block);
  fdatasyncSync(fd);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  closeSync(fd);
  return { mib, seconds: round(seconds, 3), mb_per_sec: round((mib * 1024 * 1024) / seconds / MB, 1) };
}

/**
 * Lets the disk and memory come to rest before the probe: `sync` commits what
 * earlier deletes queued (their discards), and the pause lets the VM hand
 * back the memory they freed. On this machine a page touched for the first
 * time since it was handed back costs about 5x more to write to (1.6 s per
 * GiB of page cache against 0.3 s), so without the pause the probe and the
 * produce would each find a different mix of both kinds of page.
 */
async function settle(): Promise<void> {
  execFileSync("sync");
  await sleep(SETTLE_MS);
}

// ---- the server ----

interface Nagare {
  server: Running;
  broker: string;
  kafka: KafkaClient;
  admin: ReturnType<KafkaClient["admin"]>;
  dir: string;
}

/**
 * nagare with JetStream and the Kafka door, from a config file only so that
 * a new consumer group forms in 100 ms rather than Kafka's default 3 s (the
 * consume scenarios time from the group join, so this only saves wall time).
 */
async function startNagare(b: Build): Promise<Nagare> {
  const dir = mkdtempSync(join(base, "nagare-kafkabench-"));
  const kafkaPort = await freePort();
  const target: Target = {
    name: "nagare",
    command: process.execPath,
    args: (port) => {
      const conf = join(dir, "nagare.conf");
      writeFileSync(
        conf,
        `host: 127.0.0.1\nport: ${port}\njetstream { store_dir: "${join(dir, "js")}" }\nkafka { port: ${kafkaPort}, group_initial_rebalance_delay: "100ms" }\n`,
      );
      return [...(profile ? ["--cpu-prof", `--cpu-prof-dir=${join(root, "bench", "profiles")}`] : []), join(b.root, "dist/src/cli/main.js"), "server", "-c", conf];
    },
  };
  const server = await start(target);
  await waitForPort(kafkaPort, 10_000, "connect");
  const broker = `127.0.0.1:${kafkaPort}`;
  const kafka = new Kafka({ clientId: "nagare-bench", brokers: [broker], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  return { server, broker, kafka, admin, dir };
}

async function stopNagare(n: Nagare): Promise<void> {
  await n.admin.disconnect();
  await n.server.stop();
  rmSync(n.dir, { recursive: true, force: true });
}

let topicSeq = 0;
async function createTopic(n: Nagare, prefix: string, partitions: number): Promise<string> {
  const topic = `${prefix}-${++topicSeq}`;
  const created = await n.admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
  if (!created) throw new Error(`topic ${topic} was not created`);
  return topic;
}

async function highWatermark(n: Nagare, topic: string): Promise<number> {
  const offsets = await n.admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high), 0);
}

// ---- measuring ----

interface Throughput {
  records: number;
  seconds: number;
  records_per_sec: number;
  mb_per_sec: number;
  /** The whole server process: main thread, V8's helper threads (GC), libuv's pool (writes, fdatasync). */
  server_cpu_s: number;
  server_main_thread_cpu_s: number;
  server_cpu_us_per_record: number;
  server_cpu_ms_per_mb: number;
  /** Of that, user time: nagare's own code, V8 and the native CRC, without the kernel's copies into the page cache and sockets. */
  server_user_cpu_ms_per_mb: number;
  /** kcat's own CPU for the kcat scenarios, this process's for the KafkaJS ones. */
  client_cpu_s: number;
  /** Busy CPU on the machine outside the server and the client: kernel writeback, and anything else running. */
  others_cpu_s: number;
}

const TICKS_PER_SEC = 100;

/** A process's user CPU seconds (all its threads), from /proc/<pid>/stat. */
function userCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[11]) / TICKS_PER_SEC;
}

function threadCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SEC;
}

/** Busy CPU seconds of the whole machine (user, nice, system, irq, softirq), from /proc/stat. */
function machineBusySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  return (f[1] + f[2] + f[3] + f[6] + f[7]) / TICKS_PER_SEC;
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Times `work`, which may return the CPU seconds of a client process it ran (kcat). */
async function measure(n: Nagare, records: number, work: () => Promise<number | void>): Promise<Throughput> {
  const cpu0 = cpuSeconds(n.server.pid);
  const user0 = userCpuSeconds(n.server.pid);
  const main0 = threadCpuSeconds(n.server.pid);
  const busy0 = machineBusySeconds();
  const self0 = selfCpuSeconds();
  const t0 = process.hrtime.bigint();
  const child = await work();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(n.server.pid) - cpu0;
  const user = userCpuSeconds(n.server.pid) - user0;
  const main = threadCpuSeconds(n.server.pid) - main0;
  const self = selfCpuSeconds() - self0;
  const busy = machineBusySeconds() - busy0;
  const client = typeof child === "number" ? child : self;
  const mb = (records * RECORD) / MB;
  return {
    records,
    seconds: round(seconds, 3),
    records_per_sec: Math.round(records / seconds),
    mb_per_sec: round(mb / seconds, 1),
    server_cpu_s: round(cpu, 2),
    server_main_thread_cpu_s: round(main, 2),
    server_cpu_us_per_record: round((cpu * 1e6) / records, 2),
    server_cpu_ms_per_mb: round((cpu * 1e3) / mb, 2),
    server_user_cpu_ms_per_mb: round((user * 1e3) / mb, 2),
    client_cpu_s: round(client, 2),
    others_cpu_s: round(Math.max(0, busy - cpu - self - (typeof child === "number" ? child : 0)), 2),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- scenarios ----

async function kcatProduce(n: Nagare, partitions: number, count: number, inputDir: string): Promise<{ topic: string; result: Throughput }> {
  const topic = await createTopic(n, `kcat${partitions}p`, partitions);
  const input = kcatInput(inputDir, count);
  const r = await measure(n, count, async () => {
    const exit = await kcat(["-b", n.broker, "-P", "-t", topic, ...KCAT_PRODUCE_ARGS], input);
    if (exit.code !== 0 || exit.stderr.trim() !== "") throw new Error(`kcat -P exited ${exit.code}: ${exit.stderr}`);
    return exit.cpu;
  });
  const stored = await highWatermark(n, topic);
  if (stored !== count) throw new Error(`kcat produced ${count} records but ${topic} holds ${stored}`);
  return { topic, result: r };
}

async function kafkajsProduce(n: Nagare, count: number): Promise<Throughput> {
  const topic = await createTopic(n, "kjs", 1);
  const producer = n.kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const value = Buffer.alloc(RECORD, 0x6b);
  const per = KAFKAJS_PRODUCE.messages_per_send;
  const messages = Array.from({ length: per }, () => ({ value }));
  const sends = Math.ceil(count / per);
  try {
    const r = await measure(n, sends * per, async () => {
      let next = 0;
      const lane = async (): Promise<void> => {
        while (next < sends) {
          next++;
          await producer.send({ topic, acks: -1, messages });
        }
      };
      await Promise.all(Array.from({ length: KAFKAJS_PRODUCE.sends_in_flight }, lane));
    });
    const stored = await highWatermark(n, topic);
    if (stored !== sends * per) throw new Error(`kafkajs produced ${sends * per} records but ${topic} holds ${stored}`);
    return r;
  } finally {
    await producer.disconnect();
  }
}

/**
 * kcat -C from offset 0 to the end of the topic (-e), values to /dev/null.
 * `-o 0` rather than `-o beginning`: librdkafka 2.0 sometimes asks for the
 * logical offset before the partition has joined its broker thread, finds
 * "no current leader" and retries 500 ms later (seen in 1 run in 4, with
 * `-d topic`); an absolute offset needs no query. The topic starts at 0.
 */
async function kcatConsume(n: Nagare, topic: string, count: number): Promise<Throughput> {
  return measure(n, count, async () => {
    const exit = await kcat(["-b", n.broker, "-C", "-t", topic, "-o", "0", "-e", ...KCAT_CONSUME_ARGS], null);
    const end = /Reached end of topic \S+ \[0\] at offset (\d+)/.exec(exit.stderr);
    if (exit.code !== 0 || end === null || Number(end[1]) !== count) throw new Error(`kcat -C exited ${exit.code}, expected to end at ${count}: ${exit.stderr}`);
    return exit.cpu;
  });
}

/** A KafkaJS consumer in a new group reading `count` records from the beginning, timed from its group join. */
async function kafkajsConsume(n: Nagare, topic: string, count: number): Promise<Throughput> {
  const consumer = n.kafka.consumer({ groupId: `bench-${++topicSeq}`, ...KAFKAJS_CONSUME });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    let joined!: () => void;
    const join = new Promise<void>((r) => (joined = r));
    consumer.on(consumer.events.GROUP_JOIN, () => joined());
    let got = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    await consumer.run({
      eachBatch: async ({ batch }) => {
        got += batch.messages.length;
        if (got >= count) done();
      },
    });
    await join;
    return await measure(n, count, () => all);
  } finally {
    await consumer.disconnect();
  }
}

interface Latency {
  records: number;
  e2e_p50_ms: number;
  e2e_p99_ms: number;
  e2e_max_ms: number;
  ack_p50_ms: number;
  ack_p99_ms: number;
  ack_max_ms: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

/**
 * One record at a time (acks=-1, awaited, then LATENCY.gap_ms of quiet), each
 * carrying its send time; a KafkaJS consumer in this process long-polls the
 * topic. Produce→consume is send to eachMessage; ack is send to send()'s answer.
 */
/**
 * A one-partition topic with a producer and a consumer (a fresh group,
 * subscribed from the beginning), both connected, and a promise of the
 * consumer's group join.
 */
async function producerAndConsumer(n: Nagare, name: string, maxWaitMs: number) {
  const topic = await createTopic(n, name, 1);
  const producer = n.kafka.producer({ allowAutoTopicCreation: false });
  const consumer = n.kafka.consumer({ groupId: `bench-${++topicSeq}`, maxWaitTimeInMs: maxWaitMs });
  await Promise.all([producer.connect(), consumer.connect()]);
  const join = new Promise<void>((r) => consumer.on(consumer.events.GROUP_JOIN, () => r()));
  return { topic, producer, consumer, join };
}

async function latency(n: Nagare, count: number): Promise<Latency> {
  const { topic, producer, consumer, join } = await producerAndConsumer(n, "lat", LATENCY.consumer_max_wait_ms);
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    const e2e: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    await consumer.run({
      eachMessage: async ({ message }) => {
        const now = process.hrtime.bigint();
        e2e.push(Number(now - message.value!.readBigInt64BE(0)) / 1e6);
        if (e2e.length === count) done();
      },
    });
    await join;
    await sleep(200); // let the consumer's first fetch reach the server and wait there
    const ack: number[] = [];
    for (let i = 0; i < count; i++) {
      const value = Buffer.alloc(RECORD, 0x6c);
      const t0 = process.hrtime.bigint();
      value.writeBigInt64BE(t0, 0);
      await producer.send({ topic, acks: -1, messages: [{ value }] });
      ack.push(Number(process.hrtime.bigint() - t0) / 1e6);
      await sleep(LATENCY.gap_ms);
    }
    await Promise.race([all, sleep(10_000).then(() => Promise.reject(new Error(`latency: ${e2e.length} of ${count} records consumed`)))]);
    e2e.sort((a, b) => a - b);
    ack.sort((a, b) => a - b);
    return {
      records: count,
      e2e_p50_ms: round(percentile(e2e, 0.5), 3),
      e2e_p99_ms: round(percentile(e2e, 0.99), 3),
      e2e_max_ms: round(e2e[e2e.length - 1], 3),
      ack_p50_ms: round(percentile(ack, 0.5), 3),
      ack_p99_ms: round(percentile(ack, 0.99), 3),
      ack_max_ms: round(ack[ack.length - 1], 3),
    };
  } finally {
    await Promise.all([producer.disconnect(), consumer.disconnect()]);
  }
}

interface RateLatency extends Latency {
  records_per_sec_asked: number;
  records_per_sec_sent: number;
  /** The server over the whole run: at this rate, batches are small and every one is fsynced. */
  server_cpu_s: number;
  server_cpu_ms_per_mb: number;
}

/**
 * LATENCY_RATE.records_per_sec records of RECORD bytes for `count` records,
 * from a KafkaJS producer to a KafkaJS consumer (eachBatch) in this process.
 * Produce→consume is from the time a record was due (not when the client got
 * round to it) to the consumer's batch that holds it; ack is from a send() to
 * its answer.
 */
async function latencyAtRate(n: Nagare, count: number): Promise<RateLatency> {
  const { topic, producer, consumer, join } = await producerAndConsumer(n, "rate", LATENCY_RATE.consumer_max_wait_ms);
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    const e2e = new Float64Array(count);
    let got = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    await consumer.run({
      eachBatch: async ({ batch }) => {
        const now = process.hrtime.bigint();
        for (const m of batch.messages) if (got < count) e2e[got++] = Number(now - m.value!.readBigInt64BE(0)) / 1e6;
        if (got >= count) done();
      },
    });
    await join;
    await sleep(200); // let the consumer's first fetch reach the server and wait there
    const ack: number[] = [];
    const perNs = 1e9 / LATENCY_RATE.records_per_sec;
    let inFlight = 0;
    let failure: unknown = null;
    let drained: (() => void) | null = null;
    const cpu0 = cpuSeconds(n.server.pid);
    const t0 = process.hrtime.bigint();
    let sent = 0;
    while (sent < count && failure === null) {
      const elapsed = Number(process.hrtime.bigint() - t0);
      const due = Math.min(count, Math.floor(elapsed / perNs) + 1);
      // A producer behind schedule sends its backlog in sends of at most max_records_per_send, as a real
      // producer's batch size caps a request: KafkaJS blocks its event loop for a time that grows faster than
      // a send's size (20,000 records 4 s, 40,000 records 23 s here), and one late tick used to spiral.
      while (due > sent && inFlight < LATENCY_RATE.max_sends_in_flight) {
        const upTo = Math.min(due, sent + LATENCY_RATE.max_records_per_send);
        const messages = [];
        for (let i = sent; i < upTo; i++) {
          const value = Buffer.alloc(RECORD, 0x72);
          value.writeBigInt64BE(t0 + BigInt(Math.round(i * perNs)), 0);
          messages.push({ value });
        }
        sent = upTo;
        inFlight++;
        const s0 = process.hrtime.bigint();
        producer.send({ topic, acks: -1, messages }).then(
          () => {
            ack.push(Number(process.hrtime.bigint() - s0) / 1e6);
            if (--inFlight === 0) drained?.();
          },
          (err: unknown) => {
            failure = err;
            if (--inFlight === 0) drained?.();
          },
        );
      }
      await sleep(LATENCY_RATE.tick_ms);
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (inFlight > 0) await new Promise<void>((r) => (drained = r));
    if (failure !== null) throw failure;
    await Promise.race([all, sleep(10_000).then(() => Promise.reject(new Error(`latency at rate: ${got} of ${count} records consumed`)))]);
    const cpu = cpuSeconds(n.server.pid) - cpu0;
    const sorted = Array.from(e2e).sort((a, b) => a - b);
    ack.sort((a, b) => a - b);
    return {
      records: count,
      records_per_sec_asked: LATENCY_RATE.records_per_sec,
      records_per_sec_sent: Math.round(count / seconds),
      e2e_p50_ms: round(percentile(sorted, 0.5), 3),
      e2e_p99_ms: round(percentile(sorted, 0.99), 3),
      e2e_max_ms: round(sorted[sorted.length - 1], 3),
      ack_p50_ms: round(percentile(ack, 0.5), 3),
      ack_p99_ms: round(percentile(ack, 0.99), 3),
      ack_max_ms: round(ack[ack.length - 1], 3),
      server_cpu_s: round(cpu, 2),
      server_cpu_ms_per_mb: round((cpu * 1e3) / ((count * RECORD) / MB), 2),
    };
  } finally {
    await Promise.all([producer.disconnect(), consumer.disconnect()]);
  }
}

// ---- a repeat ----

interface Pass {
  kcat_produce_1p?: Throughput;
  kcat_produce_4p?: Throughput;
  kafkajs_produce_1p?: Throughput;
  kcat_consume_1p?: Throughput;
  kafkajs_consume_1p?: Throughput;
  latency_1p?: Latency;
  latency_rate_1p?: RateLatency;
}

const want = (name: string): boolean => only === undefined || only.split(",").includes(name);

async function pass(n: Nagare, scale: number, inputDir: string): Promise<Pass> {
  const out: Pass = {};
  const kc = Math.max(1000, Math.round(COUNTS.kcat_produce * scale));
  let topic: string | null = null;
  if (want("kcat_produce_1p") || want("kcat_consume_1p") || want("kafkajs_consume_1p")) {
    const r = await kcatProduce(n, 1, kc, inputDir);
    topic = r.topic;
    if (want("kcat_produce_1p")) out.kcat_produce_1p = r.result;
  }
  if (want("kcat_produce_4p")) out.kcat_produce_4p = (await kcatProduce(n, 4, kc, inputDir)).result;
  if (want("kafkajs_produce_1p")) out.kafkajs_produce_1p = await kafkajsProduce(n, Math.max(1000, Math.round(COUNTS.kafkajs_produce * scale)));
  if (topic !== null && want("kcat_consume_1p")) out.kcat_consume_1p = await kcatConsume(n, topic, kc);
  if (topic !== null && want("kafkajs_consume_1p")) out.kafkajs_consume_1p = await kafkajsConsume(n, topic, kc);
  if (want("latency_1p")) out.latency_1p = await latency(n, Math.max(100, Math.round(COUNTS.latency * scale)));
  if (want("latency_rate_1p")) out.latency_rate_1p = await latencyAtRate(n, Math.max(1000, Math.round(COUNTS.latency_rate * scale)));
  return out;
}

function nagareVersion(): string {
  return (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
}

/** One repeat on one build: a fresh server, a warm-up pass, the disk probe, the measured pass. */
async function repeatOn(b: Build, inputDir: string): Promise<{ disk: ReturnType<typeof sequentialWrite>; pass: Pass }> {
  const n = await startNagare(b);
  try {
    // The disk probe goes in the store's own directory, just before the measured produce.
    await pass(n, WARMUP, inputDir);
    await settle();
    const disk = sequentialWrite(n.dir, DISK_PROBE_MIB);
    return { disk, pass: await pass(n, 1, inputDir) };
  } finally {
    await stopNagare(n);
  }
}

const THROUGHPUTS = ["kcat_produce_1p", "kcat_produce_4p", "kafkajs_produce_1p", "kcat_consume_1p", "kafkajs_consume_1p"] as const;

/** Medians of one build's repeats (every run kept), with each produce paired with its own repeat's disk probe. */
function summarise(disk: Array<ReturnType<typeof sequentialWrite>>, runs: Pass[]): Record<string, unknown> {
  const results: Record<string, unknown> = {};
  const diskMedian = median(disk, (d) => d.mb_per_sec);
  results.disk_sequential_write = { ...diskMedian, runs: disk };
  for (const key of THROUGHPUTS) {
    const all = runs.map((p) => p[key]).filter((x): x is Throughput => x !== undefined);
    if (all.length === 0) continue;
    const m = median(all, (x) => x.mb_per_sec);
    const entry: Record<string, unknown> = {
      ...m,
      median_server_cpu_ms_per_mb: median(all, (x) => x.server_cpu_ms_per_mb).server_cpu_ms_per_mb,
      median_server_user_cpu_ms_per_mb: median(all, (x) => x.server_user_cpu_ms_per_mb).server_user_cpu_ms_per_mb,
    };
    if (key.includes("produce")) {
      // Each run against the disk probe of its own repeat (the disk varies from run to run), and medians against medians.
      const paired = runs.map((p, i) => (p[key] === undefined ? NaN : p[key]!.mb_per_sec / disk[i].mb_per_sec)).filter((x) => !Number.isNaN(x));
      entry.vs_disk = {
        median_of_paired_ratios: round(median(paired, (x) => x), 3),
        paired_ratios: paired.map((x) => round(x, 3)),
        ratio_of_medians: round(m.mb_per_sec / diskMedian.mb_per_sec, 3),
      };
    }
    entry.runs = all;
    results[key] = entry;
  }
  const lat = runs.map((p) => p.latency_1p).filter((x): x is Latency => x !== undefined);
  if (lat.length > 0) results.latency_1p = { ...median(lat, (x) => x.e2e_p50_ms), runs: lat };
  const rate = runs.map((p) => p.latency_rate_1p).filter((x): x is RateLatency => x !== undefined);
  if (rate.length > 0) results.latency_rate_1p = { ...median(rate, (x) => x.e2e_p50_ms), median_e2e_p99_ms: median(rate, (x) => x.e2e_p99_ms).e2e_p99_ms, runs: rate };
  return results;
}

/** Median over the repeats of this build's server CPU per MB over the other's, each repeat paired with the other build's run next to it. */
function pairedCpuRatios(mine: Pass[], theirs: Pass[]): Record<string, { median: number; ratios: number[] }> {
  const out: Record<string, { median: number; ratios: number[] }> = {};
  for (const key of THROUGHPUTS) {
    const ratios = mine.map((p, i) => (p[key] === undefined || theirs[i]?.[key] === undefined ? NaN : p[key]!.server_cpu_ms_per_mb / theirs[i][key]!.server_cpu_ms_per_mb)).filter((x) => !Number.isNaN(x));
    if (ratios.length > 0) out[key] = { median: round(median(ratios, (x) => x), 3), ratios: ratios.map((x) => round(x, 3)) };
  }
  return out;
}

async function main(): Promise<void> {
  const builds = [build("this", root), ...(against !== undefined ? [build("against", against)] : [])];
  const inputDir = mkdtempSync(join(base, "nagare-kafkabench-input-"));
  const disk = builds.map(() => [] as Array<ReturnType<typeof sequentialWrite>>);
  const runs = builds.map(() => [] as Pass[]);
  const loads: number[][] = [];
  try {
    for (let r = 0; r < REPEATS; r++) {
      // Alternate which build goes first, so that a drift of the machine over the session falls on both.
      const order = builds.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const i of order) {
        const one = await repeatOn(builds[i], inputDir);
        disk[i].push(one.disk);
        runs[i].push(one.pass);
        const load = loadavg();
        loads.push(load);
        console.error(`repeat ${r + 1}/${REPEATS} ${builds[i].label} (${builds[i].commit}): disk ${one.disk.mb_per_sec} MB/s ${JSON.stringify(summaryLine(one.pass))} load ${load.map((x) => x.toFixed(2)).join(" ")}`);
      }
    }
  } finally {
    rmSync(inputDir, { recursive: true, force: true });
  }

  const results = summarise(disk[0], runs[0]);
  const cpuOf = (key: string): number | undefined => (results[key] as { median_server_cpu_ms_per_mb?: number } | undefined)?.median_server_cpu_ms_per_mb;
  const targets: Record<string, boolean> = {};
  if (cpuOf("kcat_produce_1p") !== undefined) targets.kcat_produce_server_cpu_at_most_2_5_ms_per_mb = cpuOf("kcat_produce_1p")! <= 2.5;
  let comparison: Record<string, unknown> | undefined;
  if (builds.length > 1) {
    const ratios = pairedCpuRatios(runs[0], runs[1]);
    comparison = { build: builds[1], results: summarise(disk[1], runs[1]), server_cpu_per_mb_this_over_against: ratios };
    for (const key of ["kcat_consume_1p", "kafkajs_consume_1p"]) if (ratios[key] !== undefined) targets[`${key}_server_cpu_at_most_half_of_against`] = ratios[key].median <= 0.5;
  }
  const report = {
    benchmark: "kafka",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    machine: {
      ...machineInfo("clients (this process, kcat) on core 0, server on core 1"),
      store_dir: base,
      load_average_after_each_run: loads.map((l) => l.map((x) => round(x, 2))),
    },
    versions: { nagare: nagareVersion(), build: builds[0], kcat: await kcatVersion(), kafkajs: kafkajsVersion() },
    settings: {
      record_value_bytes: RECORD,
      counts: COUNTS,
      warmup_scale: WARMUP,
      disk_probe: `${DISK_PROBE_MIB} MiB in 1 MiB writes, one fdatasync at the end, in the store's directory; after a sync and a ${SETTLE_MS} ms pause; the measured pass follows it at once, and the probe file is deleted after the pass`,
      kcat_produce: KCAT_PRODUCE_ARGS.join(" "),
      kcat_consume: `-o 0 -e ${KCAT_CONSUME_ARGS.join(" ")}, values to /dev/null`,
      kafkajs_produce: { ...KAFKAJS_PRODUCE, acks: -1, compression: "none" },
      kafkajs_consume: KAFKAJS_CONSUME,
      latency: LATENCY,
      latency_rate: LATENCY_RATE,
      server: "nagare server -c <conf>: jetstream store_dir in a fresh temp dir, kafka { group_initial_rebalance_delay: 100ms }",
      only: only ?? "all",
    },
    notes:
      "MB = 10^6 bytes of record values (1,024 B each; framing not counted). Produce at acks=-1: nagare answers once the records are fdatasynced. Server CPU is the server process's utime + stime (all threads). No Kafka broker on this machine: the reference is the disk's sequential write bandwidth, probed in each repeat next to the store; vs_disk pairs each run with its own repeat's probe. Consume reads what kcat_produce_1p just wrote, so from the page cache. Median of the repeats (by MB/s, and median_server_cpu_ms_per_mb by CPU; latency by e2e p50); every run is kept. With --against, the other build ran the same scenarios in the same session, alternating with this one (ABBA), and the ratios pair each repeat's runs.",
    targets_met: targets,
    results,
    ...(comparison !== undefined ? { against: comparison } : {}),
  };
  publish(root, "kafka", report, !quick && !profile && only === undefined && against === undefined);
}

function summaryLine(p: Pass): Record<string, number> {
  const s: Record<string, number> = {};
  for (const [key, v] of Object.entries(p)) {
    if (v === undefined) continue;
    if ("mb_per_sec" in v) s[`${key}_ms_per_mb`] = (v as Throughput).server_cpu_ms_per_mb;
    else if ("records_per_sec_asked" in v) {
      s[`${key}_p50`] = (v as RateLatency).e2e_p50_ms;
      s[`${key}_p99`] = (v as RateLatency).e2e_p99_ms;
    } else s[`${key}_p50`] = (v as Latency).e2e_p50_ms;
  }
  return s;
}

function kafkajsVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(root, "node_modules", "kafkajs", "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
