/**
 * Kafka commands, a small kafka-topics.sh and kafka-consumer-groups.sh:
 *
 *   nagare topic create|ls|describe|producers|alter|move|moves|rm
 *   nagare group ls|describe|rm|reset-offsets
 *
 * They speak the Kafka protocol (kafka-client.ts), so they work against
 * nagare's Kafka listener or a Kafka broker. Tables for people, `--json`
 * for scripts; exit codes 0 ok, 1 failed, 2 usage, as the JetStream commands.
 */

import { UsageError, lastFlag, parseArgs, reportFailure, timeoutFrom, write, type ClientCommandIo, type FlagSpec, type ParsedArgs } from "./client-commands.js";
import { table } from "./js-commands.js";
import { CONNECT_TIMEOUT_MS, DEFAULT_BOOTSTRAP, KafkaClient, REQUEST_TIMEOUT_MS, parseAddress } from "./kafka-client.js";
import {
  EARLIEST,
  KafkaResponseError,
  LATEST,
  alterPartitionReassignment,
  alterTopicConfigs,
  listPartitionReassignments,
  commitOffsets,
  createPartitions,
  createTopic,
  decodeAssignment,
  deleteCommittedOffsets,
  deleteGroups,
  deleteTopic,
  describeGroups,
  describeProducers,
  describeTopicConfigs,
  errorName,
  fetchCommittedOffsets,
  listGroups,
  listOffsets,
  metadata,
  type ConfigChange,
  type PartitionOffset,
} from "./kafka-requests.js";
import { ErrorCode } from "../protocols/kafka/errors.js";

export type KafkaGroup = "topic" | "group";

const COMMON: FlagSpec[] = [
  { long: "bootstrap", short: "b", value: true },
  { long: "timeout", value: true },
  { long: "help", short: "h", value: false },
  { long: "json", value: false },
];

const FLAGS: Record<KafkaGroup, FlagSpec[]> = {
  topic: [
    { long: "partitions", value: true },
    { long: "replication-factor", value: true },
    { long: "config", value: true, multi: true },
    { long: "delete-config", value: true, multi: true },
    { long: "partition", value: true },
    { long: "to-broker", value: true },
    { long: "replicas", value: true },
    { long: "cancel", value: false },
  ],
  group: [
    { long: "topic", value: true, multi: true },
    { long: "all-topics", value: false },
    { long: "to-earliest", value: false },
    { long: "to-latest", value: false },
    { long: "to-datetime", value: true },
    { long: "to-offset", value: true },
    { long: "shift-by", value: true },
    { long: "dry-run", value: false },
    { long: "execute", value: false },
  ],
};

const OPTIONS = `Options:
  --json                       print JSON instead of a table
  -b, --bootstrap <host:port>  Kafka listener to talk to (default: ${DEFAULT_BOOTSTRAP})
  --timeout <duration>         how long to wait for the broker, e.g. 500ms, 2s (default:
                               ${CONNECT_TIMEOUT_MS / 1000}s to connect and learn its versions, ${REQUEST_TIMEOUT_MS / 1000}s per request)
`;

const USAGE: Record<KafkaGroup, string> = {
  topic: `Usage: nagare topic <create|ls|describe|producers|alter|move|moves|rm> [options]

  create <name> [--partitions n] [--replication-factor n] [--config key=value]...
                 partitions and replicas default to the broker's (replicas
                 2 to 5 in a cluster of as many brokers); configs nagare takes:
                 retention.ms, retention.bytes, max.message.bytes,
                 cleanup.policy=delete|compact (or both), delete.retention.ms,
                 min.compaction.lag.ms, max.compaction.lag.ms, min.cleanable.dirty.ratio,
                 segment.bytes, segment.ms, message.timestamp.type=CreateTime|LogAppendTime,
                 message.timestamp.difference.max.ms, message.timestamp.before.max.ms,
                 message.timestamp.after.max.ms, min.insync.replicas,
                 compression.type=producer, unclean.leader.election.enable=false
                 (docs/KAFKA.md, "Topic configs")
  ls             topics with their partition and message counts
  describe <name>  partitions (leader, replicas, in-sync replicas, earliest and
                 latest offsets) and configs
  producers <name> [--partition n]
                 the idempotent and transactional producers of each partition
                 (or one), with any transaction they left open
                 (DescribeProducers, as kafka-transactions.sh describe-producers)
  alter <name> [--partitions n] [--config key=value]... [--delete-config key]...
                 adds partitions (a topic never shrinks); sets configs, or
                 puts them back to their defaults; the others stay as they are
  move <name> --partition n (--to-broker id | --replicas id,id... | --cancel)
                 moves a partition to another broker, which copies it and
                 takes it over (AlterPartitionReassignments; one partition of
                 a topic at a time); --replicas gives a replicated partition
                 these replicas (preferred leader first): the new ones copy
                 it, then the others are dropped; --cancel stops either
  moves          partition moves and reassignments under way
                 (ListPartitionReassignments)
  rm <name>

${OPTIONS}`,
  group: `Usage: nagare group <ls|describe|rm|reset-offsets> [options]

  ls             consumer groups with their state
  describe <id>  state, members and their partitions, and per partition the
                 committed offset, log end offset and lag
  rm <id> [--topic topic[:p,...]]...
                 deletes a group that has no members, with its committed
                 offsets; with --topic only the offsets of those partitions
                 (all of the topic's without a list)
  reset-offsets <id> (--topic topic[:p,...]... | --all-topics)
                 (--to-earliest | --to-latest | --to-datetime <time> |
                  --to-offset <n> | --shift-by <n>) [--dry-run | --execute]
                 moves a group's committed offsets, only while it has no
                 members; --all-topics: the partitions it has committed;
                 <time>: ISO 8601, e.g. 2024-05-01T12:00:00Z (local time
                 without a zone). Shows the plan and changes nothing unless
                 --execute is given

${OPTIONS}`,
};

/** A command whose arguments are checked, to run once connected. */
type Run = (c: KafkaClient, io: ClientCommandIo, asJson: boolean) => Promise<number>;

function positionals(args: ParsedArgs, names: string[]): string[] {
  const [, ...rest] = args.positionals;
  if (rest.length > names.length) throw new UsageError(`unexpected argument "${rest[names.length]}"`);
  return names.map((what, i) => {
    const v = rest[i];
    if (v === undefined || v === "") throw new UsageError(`missing ${what}`);
    return v;
  });
}

/** Refuses flags of the command group that `verb` does not take (`topic ls --partitions 3` is a mistake, not a no-op). */
function onlyFlags(args: ParsedArgs, verb: string, allowed: string[]): void {
  for (const name of args.flags.keys()) {
    if (!COMMON.some((f) => f.long === name) && !allowed.includes(name)) throw new UsageError(`${verb} does not take --${name}`);
  }
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

const dash = (v: string | number | null): string | number => (v === null || v === "" ? "-" : v);

/** A Kafka timestamp (ms) as ISO 8601; -1 as "-"; one a Date cannot hold (a producer's own CreateTime) as the number. */
function timestampText(ms: number): string {
  if (ms < 0) return "-";
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}

/** Looks up offsets of a ListOffsets answer; null for a partition answered with an error. */
function offsetsOf(list: PartitionOffset[]): (topic: string, partition: number) => number | null {
  const byTopic = new Map<string, Map<number, number | null>>();
  for (const p of list) {
    const m = byTopic.get(p.topic) ?? new Map<number, number | null>();
    m.set(p.partition, p.error === ErrorCode.NONE ? p.offset : null);
    byTopic.set(p.topic, m);
  }
  return (topic, partition) => byTopic.get(topic)?.get(partition) ?? null;
}

// ---- topic ----

/** --partitions, or -1 when not given. */
function parsePartitions(args: ParsedArgs): number {
  const raw = lastFlag(args, "partitions");
  if (raw === undefined) return -1;
  const partitions = Number(raw);
  if (!/^\d+$/.test(raw) || partitions < 1 || partitions > 0x7fffffff) throw new UsageError(`--partitions must be a positive integer, got "${raw}"`);
  return partitions;
}

/** A required non-negative integer flag (a partition index, a broker id). */
function parseId(args: ParsedArgs, flag: string): number {
  const raw = lastFlag(args, flag);
  if (raw === undefined) throw new UsageError(`missing --${flag}`);
  if (!/^\d+$/.test(raw) || Number(raw) > 0x7fffffff) throw new UsageError(`--${flag} must be a non-negative integer, got "${raw}"`);
  return Number(raw);
}

/** A comma-separated list of broker ids (at most 16: no replication factor goes higher). */
function parseIdList(args: ParsedArgs, flag: string): number[] {
  const raw = lastFlag(args, flag);
  if (raw === undefined) throw new UsageError(`missing --${flag}`);
  const parts = raw.split(",");
  if (parts.length > 16 || parts.some((id) => !/^\d+$/.test(id) || Number(id) > 0x7fffffff)) throw new UsageError(`--${flag} must be broker ids separated by commas, got "${raw}"`);
  return parts.map(Number);
}

function parseConfigs(args: ParsedArgs): Array<[string, string]> {
  return (args.flags.get("config") ?? []).map((kv): [string, string] => {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--config must be key=value, got "${kv}"`);
    return [kv.slice(0, eq), kv.slice(eq + 1)];
  });
}

function parseTopicCreate(args: ParsedArgs): { partitions: number; replicas: number; configs: Array<[string, string]> } {
  // Without --partitions: the broker's num.partitions; without --replication-factor, its default.replication.factor.
  const raw = lastFlag(args, "replication-factor");
  if (raw !== undefined && (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 0x7fff)) throw new UsageError(`--replication-factor must be a positive integer, got "${raw}"`);
  return { partitions: parsePartitions(args), replicas: raw === undefined ? -1 : Number(raw), configs: parseConfigs(args) };
}

function parseTopicAlter(args: ParsedArgs): { partitions: number; changes: ConfigChange[] } {
  const partitions = parsePartitions(args);
  const changes: ConfigChange[] = [...parseConfigs(args), ...(args.flags.get("delete-config") ?? []).map((k): ConfigChange => [k, null])];
  if (partitions < 0 && changes.length === 0) throw new UsageError("nothing to alter: give --partitions, --config or --delete-config");
  return { partitions, changes };
}

/** Fails with the broker's answer; a topic it does not know is "not found". */
function checkTopicOutcome(name: string, r: { error: number; message: string | null }): void {
  if (r.error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
  if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, r.message);
}

function prepareTopic(args: ParsedArgs): Run {
  const verb = args.positionals[0];
  switch (verb) {
    case "create": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, ["partitions", "replication-factor", "config"]);
      const { partitions, replicas, configs } = parseTopicCreate(args);
      return async (c, io, asJson) => {
        const r = await createTopic(c, name, partitions, configs, replicas);
        if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, r.message);
        // Created with the broker's default count: ask how many that was.
        const count = partitions > 0 ? partitions : ((await metadata(c, [name]))[0]?.partitions.length ?? 0);
        await write(io.stdout, asJson ? json({ topic: name, partitions: count }) : `Topic ${name} created with ${count} partition${count === 1 ? "" : "s"}\n`);
        return 0;
      };
    }
    case "ls":
      positionals(args, []);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const topics = (await metadata(c, null)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        const parts = topics.flatMap((t) => t.partitions.map((p) => ({ topic: t.name, partition: p.partition })));
        const [first, end] = await Promise.all([listOffsets(c, EARLIEST, parts), listOffsets(c, LATEST, parts)]).then(([a, b]) => [offsetsOf(a), offsetsOf(b)]);
        const rows = topics.map((t) => {
          let messages: number | null = 0;
          for (const p of t.partitions) {
            const from = first(t.name, p.partition);
            const to = end(t.name, p.partition);
            messages = messages === null || from === null || to === null ? null : messages + (to - from);
          }
          return { topic: t.name, partitions: t.partitions.length, messages };
        });
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, "No topics\n");
        else await write(io.stdout, table(["TOPIC", "PARTITIONS", "MESSAGES"], rows.map((r) => [r.topic, r.partitions, dash(r.messages)])));
        return 0;
      };
    case "describe": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const [t] = await metadata(c, [name]);
        if (t === undefined || t.error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
        if (t.error !== ErrorCode.NONE) throw new KafkaResponseError(t.error, `topic ${name}`);
        const parts = t.partitions.map((p) => ({ topic: name, partition: p.partition }));
        const [first, end, configs] = await Promise.all([listOffsets(c, EARLIEST, parts).then(offsetsOf), listOffsets(c, LATEST, parts).then(offsetsOf), describeTopicConfigs(c, name)]);
        if (configs.error !== ErrorCode.NONE) throw new KafkaResponseError(configs.error, configs.message);
        const partitions = t.partitions.map((p) => ({ partition: p.partition, leader: p.leader, replicas: p.replicas, isr: p.isr, earliest: first(name, p.partition), latest: end(name, p.partition) }));
        if (asJson) {
          const cfg = configs.entries.map((e) => ({ name: e.name, value: e.sensitive ? null : e.value, source: e.source, readOnly: e.readOnly }));
          await write(io.stdout, json({ topic: name, partitions, configs: cfg }));
          return 0;
        }
        const ids = (list: number[]): string => (list.length === 0 ? "-" : list.join(","));
        const partRows = partitions.map((p) => [
          p.partition,
          p.leader < 0 ? "none" : p.leader,
          ids(p.replicas),
          ids(p.isr),
          dash(p.earliest),
          dash(p.latest),
          p.earliest === null || p.latest === null ? "-" : p.latest - p.earliest,
        ]);
        const cfgRows = configs.entries.map((e) => [e.name, e.sensitive ? "(sensitive)" : dash(e.value), e.source]);
        await write(
          io.stdout,
          `Topic ${name}: ${partitions.length} partition${partitions.length === 1 ? "" : "s"}\n\n` +
            table(["PARTITION", "LEADER", "REPLICAS", "ISR", "EARLIEST", "LATEST", "MESSAGES"], partRows) +
            "\n" +
            table(["CONFIG", "VALUE", "SOURCE"], cfgRows),
        );
        return 0;
      };
    }
    case "producers": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, ["partition"]);
      const only = args.flags.has("partition") ? parseId(args, "partition") : null;
      return async (c, io, asJson) => {
        const [t] = await metadata(c, [name]);
        if (t === undefined || t.error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
        if (t.error !== ErrorCode.NONE) throw new KafkaResponseError(t.error, `topic ${name}`);
        const all = t.partitions.map((p) => p.partition);
        if (only !== null && !all.includes(only)) throw new Error(`topic ${name} has no partition ${only}`);
        const answered = await describeProducers(c, name, only === null ? all : [only]);
        const rows = answered.flatMap((p) => p.producers);
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, `No producers of ${name}\n`);
        else {
          const cells = rows.map((a) => [a.partition, a.producerId, a.epoch, a.lastSequence, timestampText(a.lastTimestamp), a.coordinatorEpoch, a.txnStartOffset < 0 ? "-" : a.txnStartOffset]);
          await write(io.stdout, table(["PARTITION", "PRODUCER-ID", "EPOCH", "LAST-SEQUENCE", "LAST-TIMESTAMP", "COORDINATOR-EPOCH", "TXN-START-OFFSET"], cells));
        }
        // What a broker could not answer (in a cluster, a partition it has no replica of) is said, and fails the command.
        const failed = answered.filter((p) => p.error !== ErrorCode.NONE);
        for (const p of failed) await write(io.stderr, `partition ${p.partition} of ${name}: ${p.message ?? errorName(p.error)} (${errorName(p.error)})\n`);
        return failed.length === 0 ? 0 : 1;
      };
    }
    case "alter": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, ["partitions", "config", "delete-config"]);
      const { partitions, changes } = parseTopicAlter(args);
      return async (c, io, asJson) => {
        const done: { topic: string; partitions?: number; configs?: Record<string, string | null> } = { topic: name };
        let text = "";
        // Both checked before either is made: partitions added cannot be taken back, so a refused config must stop them.
        if (partitions > 0 && changes.length > 0) {
          checkTopicOutcome(name, await createPartitions(c, name, partitions, true));
          checkTopicOutcome(name, await alterTopicConfigs(c, name, changes, true));
        }
        if (changes.length > 0) {
          checkTopicOutcome(name, await alterTopicConfigs(c, name, changes));
          done.configs = Object.fromEntries(changes);
          text += `Topic ${name} configs altered: ${changes.map(([k, v]) => (v === null ? `${k} (default)` : `${k}=${v}`)).join(", ")}\n`;
        }
        if (partitions > 0) {
          checkTopicOutcome(name, await createPartitions(c, name, partitions));
          done.partitions = partitions;
          text += `Topic ${name} now has ${partitions} partition${partitions === 1 ? "" : "s"}\n`;
        }
        await write(io.stdout, asJson ? json(done) : text);
        return 0;
      };
    }
    case "move": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, ["partition", "to-broker", "replicas", "cancel"]);
      const partition = parseId(args, "partition");
      const cancel = args.flags.has("cancel");
      const to = args.flags.has("to-broker") ? parseId(args, "to-broker") : null;
      const replicas = args.flags.has("replicas") ? parseIdList(args, "replicas") : null;
      if ([cancel, to !== null, replicas !== null].filter(Boolean).length !== 1) throw new UsageError("give --to-broker <id>, --replicas <id,id...> or --cancel");
      return async (c, io, asJson) => {
        checkTopicOutcome(name, await alterPartitionReassignment(c, name, partition, replicas ?? to));
        const done = { topic: name, partition, ...(cancel ? { cancelled: true } : replicas !== null ? { replicas } : { toBroker: to }) };
        const text = cancel
          ? `Move of ${name}-${partition} cancelled\n`
          : replicas !== null
            ? `Reassigning ${name}-${partition} to brokers ${replicas.join(",")}: follow it with "nagare topic moves"\n`
            : `Moving ${name}-${partition} to broker ${to}: follow it with "nagare topic moves"\n`;
        await write(io.stdout, asJson ? json(done) : text);
        return 0;
      };
    }
    case "moves":
      positionals(args, []);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const r = await listPartitionReassignments(c);
        if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, r.message ?? "listing partition moves failed");
        const rows = r.reassignments.map((m) => ({ topic: m.topic, partition: m.partition, from: m.removing, to: m.adding }));
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, "No partition moves under way\n");
        else await write(io.stdout, table(["TOPIC", "PARTITION", "FROM BROKER", "TO BROKER"], rows.map((m) => [m.topic, m.partition, m.from.join(","), m.to.join(",")])));
        return 0;
      };
    case "rm": {
      const [name] = positionals(args, ["topic name"]);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const error = await deleteTopic(c, name);
        if (error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
        if (error !== ErrorCode.NONE) throw new KafkaResponseError(error, `deleting topic ${name} failed`);
        await write(io.stdout, asJson ? json({ topic: name, deleted: true }) : `Topic ${name} deleted\n`);
        return 0;
      };
    }
    default:
      throw new UsageError(`unknown topic subcommand "${verb}"`);
  }
}

// ---- group ----

/** A --topic value: `topic`, or `topic:0,2` for some of its partitions. */
interface TopicScope {
  topic: string;
  partitions: number[] | null;
}

function parseTopicScopes(args: ParsedArgs): TopicScope[] {
  return (args.flags.get("topic") ?? []).map((v): TopicScope => {
    const colon = v.indexOf(":");
    const topic = colon < 0 ? v : v.slice(0, colon);
    if (topic === "") throw new UsageError(`--topic needs a topic name, got "${v}"`);
    if (colon < 0) return { topic, partitions: null };
    const list = v.slice(colon + 1).split(",");
    if (list.some((p) => !/^\d+$/.test(p))) throw new UsageError(`--topic partitions must be numbers separated by commas, got "${v}"`);
    return { topic, partitions: list.map(Number) };
  });
}

/** The partitions the scopes name, checked against the broker's metadata (a scope without a list: every partition). */
async function resolveScopes(c: KafkaClient, scopes: TopicScope[]): Promise<Array<{ topic: string; partition: number }>> {
  const topics = [...new Set(scopes.map((s) => s.topic))];
  const known = new Map((await metadata(c, topics)).map((t) => [t.name, t]));
  const out: Array<{ topic: string; partition: number }> = [];
  const seen = new Set<string>();
  for (const s of scopes) {
    const t = known.get(s.topic);
    if (t === undefined || t.error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${s.topic} not found`);
    if (t.error !== ErrorCode.NONE) throw new KafkaResponseError(t.error, `topic ${s.topic}`);
    const have = t.partitions.map((p) => p.partition);
    for (const partition of s.partitions ?? have) {
      if (!have.includes(partition)) throw new Error(`topic ${s.topic} has no partition ${partition}`);
      const k = `${s.topic}\0${partition}`;
      if (!seen.has(k)) out.push({ topic: s.topic, partition });
      seen.add(k);
    }
  }
  return out;
}

type ResetTarget = { to: "earliest" | "latest" } | { to: "time"; ms: number } | { to: "offset"; offset: number } | { to: "shift"; by: number };

/** The one --to-* or --shift-by flag of reset-offsets. */
function parseResetTarget(args: ParsedArgs): ResetTarget {
  const given = ["to-earliest", "to-latest", "to-datetime", "to-offset", "shift-by"].filter((f) => args.flags.has(f));
  if (given.length !== 1) throw new UsageError("give one of --to-earliest, --to-latest, --to-datetime, --to-offset, --shift-by");
  const value = lastFlag(args, given[0])!;
  const integer = (min: number): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${given[0]} must be an integer${min === 0 ? " of 0 or more" : ""}, got "${value}"`);
    return n;
  };
  switch (given[0]) {
    case "to-earliest":
      return { to: "earliest" };
    case "to-latest":
      return { to: "latest" };
    case "to-datetime": {
      const ms = /^\d{4}-\d{2}-\d{2}T/.test(value) ? Date.parse(value) : NaN;
      if (Number.isNaN(ms)) throw new UsageError(`--to-datetime must be an ISO 8601 time such as 2024-05-01T12:00:00Z, got "${value}"`);
      return { to: "time", ms };
    }
    case "to-offset":
      return { to: "offset", offset: integer(0) };
    default:
      return { to: "shift", by: integer(-Number.MAX_SAFE_INTEGER) };
  }
}

interface OffsetReset {
  topic: string;
  partition: number;
  current: number | null;
  next: number;
}

/**
 * Where each partition's committed offset goes, as kafka-consumer-groups.sh
 * computes it: an offset or a shift is kept within the partition's earliest
 * and latest offsets; a time with no record that recent means the latest.
 */
async function planReset(c: KafkaClient, target: ResetTarget, partitions: Array<{ topic: string; partition: number; current: number | null }>): Promise<OffsetReset[]> {
  const [earliest, latest] = await Promise.all([listOffsets(c, EARLIEST, partitions).then(offsetsOf), listOffsets(c, LATEST, partitions).then(offsetsOf)]);
  const byTime = target.to === "time" ? offsetsOf(await listOffsets(c, target.ms, partitions)) : null;
  return partitions.map((p) => {
    const low = earliest(p.topic, p.partition);
    const high = latest(p.topic, p.partition);
    if (low === null || high === null) throw new Error(`the broker gave no offsets for ${p.topic}:${p.partition}`);
    const clamp = (n: number): number => Math.min(high, Math.max(low, n));
    let next: number;
    switch (target.to) {
      case "earliest":
        next = low;
        break;
      case "latest":
        next = high;
        break;
      case "time": {
        const at = byTime!(p.topic, p.partition);
        next = at === null || at < 0 ? high : at;
        break;
      }
      case "offset":
        next = clamp(target.offset);
        break;
      case "shift":
        if (p.current === null) throw new Error(`cannot shift the offset of ${p.topic}:${p.partition}: the group has committed none there`);
        next = clamp(p.current + target.by);
        break;
    }
    return { topic: p.topic, partition: p.partition, current: p.current, next };
  });
}

const byPartition = (a: { topic: string; partition: number }, b: { topic: string; partition: number }): number => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition);

interface PartitionLag {
  topic: string;
  partition: number;
  committed: number | null;
  logEnd: number | null;
  lag: number | null;
  owner: string | null;
}

function prepareGroup(args: ParsedArgs): Run {
  const verb = args.positionals[0];
  switch (verb) {
    case "ls":
      positionals(args, []);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const listed = await listGroups(c);
        const states = new Map((await describeGroups(c, listed.map((g) => g.group))).map((d) => [d.group, d.state]));
        const rows = listed
          .map((g) => ({ group: g.group, state: states.get(g.group) ?? "Unknown", protocolType: g.protocolType }))
          .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, "No groups\n");
        else await write(io.stdout, table(["GROUP", "STATE", "PROTOCOL-TYPE"], rows.map((r) => [r.group, r.state, dash(r.protocolType)])));
        return 0;
      };
    case "describe": {
      const [id] = positionals(args, ["group id"]);
      onlyFlags(args, verb, []);
      return async (c, io, asJson) => {
        const [d] = await describeGroups(c, [id]);
        if (d === undefined) throw new Error(`the broker did not describe group ${id}`);
        if (d.error !== ErrorCode.NONE) throw new KafkaResponseError(d.error, `describing group ${id} failed`);
        // Kafka describes a group it does not know as Dead rather than with an error.
        if (d.state === "Dead") throw new Error(`group ${id} not found`);
        const committed = await fetchCommittedOffsets(c, id);

        // Assignment bytes mean partitions only under the consumer protocol (Connect, say, has its own format).
        const members = d.members.map((m) => ({ ...m, partitions: d.protocolType === "consumer" ? decodeAssignment(m.assignment) : null }));
        const rows = new Map<string, PartitionLag>();
        const row = (topic: string, partition: number): PartitionLag => {
          const k = `${topic}\0${partition}`;
          let r = rows.get(k);
          if (r === undefined) rows.set(k, (r = { topic, partition, committed: null, logEnd: null, lag: null, owner: null }));
          return r;
        };
        for (const o of committed) row(o.topic, o.partition).committed = o.offset;
        for (const m of members) for (const a of m.partitions ?? []) for (const p of a.partitions) row(a.topic, p).owner = m.memberId;
        const partitions = [...rows.values()].sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
        const end = offsetsOf(await listOffsets(c, LATEST, partitions));
        for (const p of partitions) {
          p.logEnd = end(p.topic, p.partition);
          if (p.committed !== null && p.logEnd !== null) p.lag = p.logEnd - p.committed;
        }

        if (asJson) {
          const ms = members.map((m) => ({ memberId: m.memberId, instanceId: m.instanceId, clientId: m.clientId, host: m.host, assignment: m.partitions }));
          await write(io.stdout, json({ group: id, state: d.state, protocolType: d.protocolType, protocol: d.protocol, members: ms, partitions }));
          return 0;
        }
        const assigned = (m: (typeof members)[number]): string => {
          if (m.partitions === null) return d.protocolType === "consumer" ? `(${m.assignment.length} undecodable bytes)` : "-";
          return m.partitions.map((a) => `${a.topic}:${a.partitions.join(",")}`).join(" ") || "-";
        };
        let text = table(
          ["FIELD", "VALUE"],
          [
            ["group", id],
            ["state", d.state],
            ["protocol type", dash(d.protocolType)],
            ["protocol", dash(d.protocol)],
            ["members", members.length],
          ],
        );
        text += "\n";
        text += members.length === 0 ? "No active members\n" : table(["MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"], members.map((m) => [m.memberId, dash(m.clientId), dash(m.host), assigned(m)]));
        text += "\n";
        text +=
          partitions.length === 0
            ? "No committed offsets or assigned partitions\n"
            : table(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER"], partitions.map((p) => [p.topic, p.partition, dash(p.committed), dash(p.logEnd), dash(p.lag), dash(p.owner)]));
        await write(io.stdout, text);
        return 0;
      };
    }
    case "rm": {
      const [id] = positionals(args, ["group id"]);
      onlyFlags(args, verb, ["topic"]);
      const scopes = parseTopicScopes(args);
      return async (c, io, asJson) => {
        if (scopes.length === 0) {
          const [r] = await deleteGroups(c, [id]);
          if (r === undefined) throw new Error(`the broker did not answer for group ${id}`);
          if (r.error === ErrorCode.GROUP_ID_NOT_FOUND) throw new Error(`group ${id} not found`);
          if (r.error === ErrorCode.NON_EMPTY_GROUP) throw new KafkaResponseError(r.error, `group ${id} has members: stop them first`);
          if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, `deleting group ${id} failed`);
          await write(io.stdout, asJson ? json({ group: id, deleted: true }) : `Group ${id} deleted\n`);
          return 0;
        }
        const r = await deleteCommittedOffsets(c, id, await resolveScopes(c, scopes));
        if (r.error === ErrorCode.GROUP_ID_NOT_FOUND) throw new Error(`group ${id} not found`);
        if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, `deleting offsets of group ${id} failed`);
        const rows = r.partitions.sort(byPartition).map((p) => ({ topic: p.topic, partition: p.partition, deleted: p.error === ErrorCode.NONE, error: p.error === ErrorCode.NONE ? null : errorName(p.error) }));
        if (asJson) await write(io.stdout, json({ group: id, partitions: rows }));
        else await write(io.stdout, table(["TOPIC", "PARTITION", "STATUS"], rows.map((p) => [p.topic, p.partition, p.error ?? "deleted"])));
        const failed = rows.filter((p) => p.error !== null);
        if (failed.length === 0) return 0;
        // A topic the group's members subscribe to keeps its offsets: they would commit them again.
        await write(io.stderr, `nagare group: ${failed.length} partition${failed.length === 1 ? "" : "s"} kept ${failed.length === 1 ? "its offset" : "their offsets"}: ${failed.map((p) => `${p.topic}:${p.partition} (${p.error})`).join(", ")}\n`);
        return 1;
      };
    }
    case "reset-offsets": {
      const [id] = positionals(args, ["group id"]);
      onlyFlags(args, verb, ["topic", "all-topics", "to-earliest", "to-latest", "to-datetime", "to-offset", "shift-by", "dry-run", "execute"]);
      const scopes = parseTopicScopes(args);
      const all = args.flags.has("all-topics");
      if (scopes.length === 0 && !all) throw new UsageError("name the partitions: --topic <topic>[:p,...] or --all-topics");
      if (scopes.length > 0 && all) throw new UsageError("--topic and --all-topics cannot be combined");
      const target = parseResetTarget(args);
      if (args.flags.has("dry-run") && args.flags.has("execute")) throw new UsageError("--dry-run and --execute cannot be combined");
      const execute = args.flags.has("execute");
      return async (c, io, asJson) => {
        const [d] = await describeGroups(c, [id]);
        if (d === undefined) throw new Error(`the broker did not describe group ${id}`);
        if (d.error !== ErrorCode.NONE) throw new KafkaResponseError(d.error, `describing group ${id} failed`);
        // kafka-consumer-groups.sh's rule and words: members would overwrite the offsets (and the broker refuses the commit).
        if (d.state !== "Empty" && d.state !== "Dead") throw new Error(`Assignments can only be reset if the group '${id}' is inactive, but the current state is ${d.state}.`);
        const committed = d.state === "Dead" ? [] : await fetchCommittedOffsets(c, id);
        const current = (topic: string, partition: number): number | null => committed.find((o) => o.topic === topic && o.partition === partition)?.offset ?? null;
        const partitions = all ? committed.map((o) => ({ topic: o.topic, partition: o.partition })) : await resolveScopes(c, scopes);
        if (partitions.length === 0) throw new Error(`group ${id} has no committed offsets to reset`);
        const plan = (await planReset(c, target, partitions.map((p) => ({ ...p, current: current(p.topic, p.partition) })))).sort(byPartition);
        if (execute) {
          const refused = (await commitOffsets(c, id, plan.map((p) => ({ topic: p.topic, partition: p.partition, offset: p.next })))).filter((r) => r.error !== ErrorCode.NONE);
          if (refused.length > 0) throw new KafkaResponseError(refused[0].error, `the broker refused the offsets of group ${id} (${refused.map((r) => `${r.topic}:${r.partition}`).join(", ")})`);
        } else if (!args.flags.has("dry-run")) {
          await write(io.stderr, "nagare group: a plan only, nothing changed (--execute applies it)\n");
        }
        if (asJson) await write(io.stdout, json({ group: id, executed: execute, partitions: plan }));
        else await write(io.stdout, table(["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"], plan.map((p) => [p.topic, p.partition, dash(p.current), p.next])));
        return 0;
      };
    }
    default:
      throw new UsageError(`unknown group subcommand "${verb}"`);
  }
}

const PREPARE: Record<KafkaGroup, (args: ParsedArgs) => Run> = { topic: prepareTopic, group: prepareGroup };

/** Runs `nagare topic|group ...`; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runKafkaCommand(
  group: KafkaGroup,
  argv: string[],
  io: ClientCommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
): Promise<number> {
  let client: KafkaClient | undefined;
  try {
    const args = parseArgs(argv, [...COMMON, ...FLAGS[group]]);
    if (args.flags.has("help") || args.positionals.length === 0) {
      await write(args.flags.has("help") ? io.stdout : io.stderr, USAGE[group]);
      return args.flags.has("help") ? 0 : 2;
    }
    const bootstrap = lastFlag(args, "bootstrap") ?? DEFAULT_BOOTSTRAP;
    if (parseAddress(bootstrap) === null) throw new UsageError(`--bootstrap must be host:port, got "${bootstrap}"`);
    // Every usage error is found before connecting: a typo never waits on the network.
    const timeout = lastFlag(args, "timeout") === undefined ? undefined : timeoutFrom(args);
    const run = PREPARE[group](args);
    client = await KafkaClient.connect(bootstrap, { connectTimeoutMs: timeout, requestTimeoutMs: timeout });
    return await run(client, io, args.flags.has("json"));
  } catch (err) {
    return await reportFailure(group, err, USAGE[group], io.stderr);
  } finally {
    client?.close();
  }
}
