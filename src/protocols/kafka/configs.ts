/**
 * Configs as Kafka clients see them: DescribeConfigs, AlterConfigs and
 * IncrementalAlterConfigs. A topic's configs are settings of its stream
 * (docs/KAFKA.md, "Topic configs"); a config nagare cannot honour is refused
 * with INVALID_CONFIG, never accepted and ignored. The broker's configs are
 * nagare's own settings, from its configuration file: described, never
 * changed at run time.
 */

import { ThrottledLog } from "../../util/throttled-log.js";
import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode, isAccountLimit } from "./errors.js";
import { ApiError } from "../../streams/errors.js";
import { configLimitError } from "../../streams/limits.js";
import { NS_PER_MS, normalizeStreamConfig, streamUpdateError, type StreamConfig } from "../../streams/config.js";
import type { Stream } from "../../streams/stream.js";
import { DEFAULTS as SERVER_DEFAULTS } from "../../core/options.js";
import { KAFKA_DEFAULTS } from "./door.js";
import { MAX_MEMBERS_PER_GROUP } from "./groups.js";
import { MAX_TRANSACTION_TIMEOUT_MS } from "./transactions.js";
import { ConfigOp, decodeAlterConfigs, decodeDescribeConfigs, decodeIncrementalAlterConfigs, repeatedKeys, type AlterConfigsRequest } from "./requests.js";
import { findTopic, mayManageTopic, streamNameOf } from "./topics.js";
import { KafkaClusterError } from "./cluster.js";
import type { PermissionCheck } from "../../core/auth.js";
import { LOG_OVERHEAD } from "./records.js";

/** The storage engine's segment size: what segment.bytes reads as when a topic sets none. */
const SEGMENT_BYTES = 64 * 1024 * 1024;
/** Kafka's default segment.ms (log.roll.ms): 7 days. */
const SEGMENT_MS = 7 * 24 * 3_600_000;
/**
 * segment.bytes and segment.ms: in Kafka, how soon a segment rolls, and so
 * how soon its records may be deleted or compacted (never the active
 * segment's). Here records go one by one, never waiting for a segment to
 * roll: any value is honoured (Kafka Streams sets both on its repartition
 * topics), kept in the stream's metadata and shown as set.
 */
const SEGMENT_KEYS = new Map([
  ["segment.bytes", "nagare.kafka.segment.bytes"],
  ["segment.ms", "nagare.kafka.segment.ms"],
]);
const RESOURCE_TOPIC = 2;
const RESOURCE_BROKER = 4;
/** DescribeConfigs v1+ config_source. */
const SOURCE_DYNAMIC_TOPIC = 1;
const SOURCE_STATIC_BROKER = 4;
const SOURCE_DEFAULT = 5;

/** A stream's shortest max_age (streams/config.ts), in Kafka's unit. */
const MIN_RETENTION_MS = 100;
/** The longest max_age an int64 of nanoseconds holds, in milliseconds. */
const MAX_RETENTION_MS = Math.floor(Number(2n ** 63n - 1n) / NS_PER_MS);
const INT32_MAX = 2 ** 31 - 1;

export interface Outcome {
  error: number;
  message: string | null;
}

export const ok: Outcome = { error: ErrorCode.NONE, message: null };
export const fail = (error: number, message: string): Outcome => ({ error, message });

/** Stream metadata keys of the topic configs that are the Kafka door's alone (the producer's timestamps, min.insync.replicas). */
export const TIMESTAMP_TYPE_KEY = "nagare.kafka.message.timestamp.type";
export const TIMESTAMP_DIFFERENCE_KEY = "nagare.kafka.message.timestamp.difference.max.ms";
/** KIP-937's bounds, each way from the broker's clock (Kafka 3.6). */
const TIMESTAMP_BEFORE_KEY = "nagare.kafka.message.timestamp.before.max.ms";
const TIMESTAMP_AFTER_KEY = "nagare.kafka.message.timestamp.after.max.ms";
/** The Kafka topic configs bounding record timestamps, and the stream metadata keys that keep them. */
const TIMESTAMP_BOUND_KEYS = new Map([
  ["message.timestamp.difference.max.ms", TIMESTAMP_DIFFERENCE_KEY],
  ["message.timestamp.before.max.ms", TIMESTAMP_BEFORE_KEY],
  ["message.timestamp.after.max.ms", TIMESTAMP_AFTER_KEY],
]);
/** The compaction configs of a compacted topic (log-cleaner.ts), by Kafka name: the stream metadata keys that keep them. */
const COMPACTION_KEYS = new Map([
  ["delete.retention.ms", "nagare.kafka.delete.retention.ms"],
  ["min.compaction.lag.ms", "nagare.kafka.min.compaction.lag.ms"],
  ["max.compaction.lag.ms", "nagare.kafka.max.compaction.lag.ms"],
  ["min.cleanable.dirty.ratio", "nagare.kafka.min.cleanable.dirty.ratio"],
]);
/** Kafka's defaults: tombstones kept a day after compaction first passes them, nothing held back, cleaned once half is dirty. */
const COMPACTION_DEFAULTS = {
  "delete.retention.ms": "86400000",
  "min.compaction.lag.ms": "0",
  "max.compaction.lag.ms": "9223372036854775807",
  "min.cleanable.dirty.ratio": "0.5",
};
/** min.insync.replicas: the placement of a replicated topic carries it too, where its leaders read it (cluster.ts). */
export const MIN_INSYNC_REPLICAS_KEY = "nagare.kafka.min.insync.replicas";
/**
 * Configs kept as stream settings, whose default a stream cannot tell from
 * a value set to it (retention.ms=-1 is max_age 0 either way): the value a
 * config was set to, as Kafka shows it, is kept beside the setting, so that
 * it reads back as the topic's own (DYNAMIC_TOPIC_CONFIG), as in Kafka.
 */
const SET_VALUE_PREFIX = "nagare.kafka.set.";
const SET_VALUE_CONFIGS = ["cleanup.policy", "max.message.bytes", "retention.bytes", "retention.ms"];
const KAFKA_ONLY_KEYS = [
  TIMESTAMP_TYPE_KEY,
  ...TIMESTAMP_BOUND_KEYS.values(),
  MIN_INSYNC_REPLICAS_KEY,
  ...COMPACTION_KEYS.values(),
  ...SEGMENT_KEYS.values(),
  ...SET_VALUE_CONFIGS.map((n) => SET_VALUE_PREFIX + n),
];
/** Kafka's default min.insync.replicas: a write at acks=all needs the leader alone in sync. */
const DEFAULT_MIN_INSYNC_REPLICAS = 1;

/** A topic's min.insync.replicas: its own, from its stream's metadata, else the broker's (`kafka { min_insync_replicas }`). */
export function minInsyncReplicas(md: Record<string, string> | undefined, brokerDefault: number): number {
  const v = Number(md?.[MIN_INSYNC_REPLICAS_KEY]);
  return Number.isSafeInteger(v) && v >= 1 ? v : brokerDefault;
}
/** Kafka's defaults: the producer's timestamp, of any age. */
const DEFAULT_TIMESTAMP_TYPE = "CreateTime";
const DEFAULT_TIMESTAMP_DIFFERENCE = "9223372036854775807";

/**
 * How a topic treats the producer's timestamps: replaced by the append
 * time, or kept if no more than `beforeMaxMs` behind the broker's clock and
 * `afterMaxMs` ahead of it (each by the name of the bound that set it).
 */
export interface TimestampPolicy {
  logAppendTime: boolean;
  beforeMaxMs: number;
  afterMaxMs: number;
  beforeName: string;
  afterName: string;
}

export function timestampPolicy(stream: Stream): TimestampPolicy {
  const md = stream.config.metadata;
  if (md === undefined) return DEFAULT_POLICY;
  const type = md[TIMESTAMP_TYPE_KEY];
  if (type === undefined && md[TIMESTAMP_DIFFERENCE_KEY] === undefined && md[TIMESTAMP_BEFORE_KEY] === undefined && md[TIMESTAMP_AFTER_KEY] === undefined) return DEFAULT_POLICY;
  const ms = (key: string): number => {
    const v = md[key] === undefined ? Infinity : Number(md[key]);
    return Number.isSafeInteger(v) ? v : Infinity;
  };
  // As Kafka's LogConfig: a before/after bound left at its default (no limit) is message.timestamp.difference.max.ms.
  const before = ms(TIMESTAMP_BEFORE_KEY);
  const after = ms(TIMESTAMP_AFTER_KEY);
  return {
    logAppendTime: type === "LogAppendTime",
    beforeMaxMs: before !== Infinity ? before : ms(TIMESTAMP_DIFFERENCE_KEY),
    afterMaxMs: after !== Infinity ? after : ms(TIMESTAMP_DIFFERENCE_KEY),
    beforeName: before !== Infinity ? "message.timestamp.before.max.ms" : "message.timestamp.difference.max.ms",
    afterName: after !== Infinity ? "message.timestamp.after.max.ms" : "message.timestamp.difference.max.ms",
  };
}

const DEFAULT_POLICY: TimestampPolicy = { logAppendTime: false, beforeMaxMs: Infinity, afterMaxMs: Infinity, beforeName: "", afterName: "" };

/** How a compacted topic (cleanup.policy with `compact`) is compacted: its configs of that name, in milliseconds and a ratio. */
export interface CompactionPolicy {
  deleteRetentionMs: number;
  minLagMs: number;
  /** Infinity: no bound (Kafka's default, Long.MAX_VALUE). */
  maxLagMs: number;
  minDirtyRatio: number;
}

const CLEANUP_POLICY_KEY = SET_VALUE_PREFIX + "cleanup.policy";

/** Whether the topic's cleanup.policy says `compact` (read per produce: no parse; the value was checked when set). */
export function isCompacted(md: Record<string, string> | undefined): boolean {
  return md?.[CLEANUP_POLICY_KEY]?.includes("compact") === true;
}

/** Whether the topic's cleanup.policy says `delete` (its default): without it Kafka refuses DeleteRecords. */
export function deletesRecords(md: Record<string, string> | undefined): boolean {
  const policy = md?.[CLEANUP_POLICY_KEY];
  return policy === undefined || cleanupPolicies(policy).includes("delete");
}

/** The topic's compaction, or null when its cleanup.policy does not say `compact`. */
export function compactionPolicy(md: Record<string, string> | undefined): CompactionPolicy | null {
  if (md === undefined || !isCompacted(md)) return null;
  const value = (name: keyof typeof COMPACTION_DEFAULTS): number => {
    const v = Number(md[COMPACTION_KEYS.get(name)!] ?? COMPACTION_DEFAULTS[name]);
    return v > Number.MAX_SAFE_INTEGER ? Infinity : v;
  };
  return { deleteRetentionMs: value("delete.retention.ms"), minLagMs: value("min.compaction.lag.ms"), maxLagMs: value("max.compaction.lag.ms"), minDirtyRatio: value("min.cleanable.dirty.ratio") };
}

/** A cleanup.policy LIST: comma-separated, blanks around the commas dropped; empty, nothing is ever cleaned up. */
function cleanupPolicies(value: string): string[] {
  const trimmed = value.trim();
  return trimmed === "" ? [] : trimmed.split(/\s*,\s*/);
}

/** A stream's metadata without the keys of Kafka-only topic configs (they go back to their defaults). */
function withoutKafkaConfigs(md: Record<string, string> | undefined): Record<string, string> {
  const out = { ...md };
  for (const k of KAFKA_ONLY_KEYS) delete out[k];
  return out;
}

/**
 * Stream settings from Kafka topic configs; an Outcome when one cannot be
 * honoured. Configs of the Kafka door alone come back as `metadata` entries
 * to merge into the stream's.
 */
export function limitsFrom(configs: Map<string, string | null>, maxPayload = Infinity): (Record<string, unknown> & { metadata?: Record<string, string> }) | Outcome {
  const out: Record<string, unknown> & { metadata?: Record<string, string> } = {};
  let noRetention = false;
  for (const [name, value] of configs) {
    // Kafka trims a config's value before it parses it.
    const trimmed = value?.trim() ?? null;
    /** Java's parseLong (parseInt for 32 bits): a sign allowed; past the type's range, not a number of it. */
    const int = (bits: 32 | 64 = 64): number | null => {
      if (trimmed === null || !/^[+-]?\d+$/.test(trimmed)) return null;
      const v = BigInt(trimmed);
      const max = (1n << BigInt(bits - 1)) - 1n;
      return v > max || v < -max - 1n ? null : Number(v);
    };
    switch (name) {
      case "retention.ms": {
        const v = int();
        if (v === null || v < -1) return fail(ErrorCode.INVALID_CONFIG, `retention.ms: ${value} is not -1 or a number of milliseconds`);
        // Kafka deletes what is older than 0 ms; a stream's shortest max_age is 100 ms, and 0 there means no limit at all.
        if (v >= 0 && v < MIN_RETENTION_MS) return fail(ErrorCode.INVALID_CONFIG, `retention.ms: ${value} is below the shortest retention nagare keeps, ${MIN_RETENTION_MS} ms (-1: no limit)`);
        // Past what a stream's max_age (int64 nanoseconds) holds, some 292 years: what such a value means, no limit.
        out.max_age = v === -1 || v > MAX_RETENTION_MS ? 0 : v * NS_PER_MS;
        // As Kafka shows it: a long, past what a JavaScript number holds exactly too.
        (out.metadata ??= {})[SET_VALUE_PREFIX + name] = BigInt(trimmed!).toString();
        break;
      }
      case "retention.bytes": {
        const v = int();
        if (v === null) return fail(ErrorCode.INVALID_CONFIG, `retention.bytes: ${value} is not a byte count (negative: no limit)`);
        // Kafka keeps only the active segment at 0; a stream's max_bytes cannot say that (0 there means no limit).
        if (v === 0) return fail(ErrorCode.INVALID_CONFIG, "retention.bytes: 0 cannot be kept by nagare, which keeps no segments apart (a positive byte count, or negative: no limit)");
        out.max_bytes = v < 0 || v > Number.MAX_SAFE_INTEGER ? -1 : v;
        (out.metadata ??= {})[SET_VALUE_PREFIX + name] = BigInt(trimmed!).toString();
        break;
      }
      case "max.message.bytes": {
        const v = int(32);
        // An INT in Kafka.
        if (v === null || v <= 0 || v > INT32_MAX) return fail(ErrorCode.INVALID_CONFIG, `max.message.bytes: ${value} is not a positive byte count of at most ${INT32_MAX}`);
        // Past the server's own bound it would be shown and not applied: the server's max_payload is raised instead.
        if (v > maxPayload + LOG_OVERHEAD) {
          return fail(ErrorCode.INVALID_CONFIG, `max.message.bytes: ${v} is past what this server takes (message.max.bytes ${maxPayload + LOG_OVERHEAD}: its max_payload ${maxPayload} and Kafka's 12 bytes of log overhead)`);
        }
        out.max_msg_size = v;
        (out.metadata ??= {})[SET_VALUE_PREFIX + name] = String(v);
        break;
      }
      case "cleanup.policy": {
        // Empty, nothing is ever cleaned up (Kafka 3.x applies no retention then, and 4.x says so); without `delete`, the
        // retention configs stay set and apply again once it is back.
        const policies = cleanupPolicies(trimmed ?? "");
        // As Kafka's ValidList: the first value not among them is named.
        const unknown = policies.find((p) => p !== "delete" && p !== "compact");
        if (unknown !== undefined) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${unknown} for configuration cleanup.policy: String must be one of: compact, delete`);
        if (!policies.includes("delete")) noRetention = true;
        (out.metadata ??= {})[SET_VALUE_PREFIX + name] = policies.join(",");
        break;
      }
      case "delete.retention.ms":
      case "min.compaction.lag.ms":
      case "max.compaction.lag.ms": {
        const least = name === "max.compaction.lag.ms" ? 1 : 0;
        const v = int();
        if (v === null) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Not a number of type LONG`);
        if (v < least) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Value must be at least ${least}`);
        (out.metadata ??= {})[COMPACTION_KEYS.get(name)!] = BigInt(trimmed!).toString();
        break;
      }
      case "min.cleanable.dirty.ratio": {
        // Java's parseDouble, as Kafka reads a DOUBLE.
        const v = trimmed !== null && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[dDfF]?$/.test(trimmed) ? Number(trimmed.replace(/[dDfF]$/, "")) : NaN;
        if (Number.isNaN(v)) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Not a number of type DOUBLE`);
        if (v < 0 || v > 1) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Value must be ${v < 0 ? "at least 0" : "no more than 1"}`);
        (out.metadata ??= {})[COMPACTION_KEYS.get(name)!] = String(v);
        break;
      }
      case "message.timestamp.type":
        if (trimmed !== "CreateTime" && trimmed !== "LogAppendTime") {
          return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration message.timestamp.type: String must be one of: CreateTime, LogAppendTime`);
        }
        (out.metadata ??= {})[TIMESTAMP_TYPE_KEY] = trimmed;
        break;
      case "message.timestamp.difference.max.ms":
      case "message.timestamp.before.max.ms":
      case "message.timestamp.after.max.ms":
        if (trimmed === null || !/^\+?\d{1,19}$/.test(trimmed) || BigInt(trimmed) > BigInt(DEFAULT_TIMESTAMP_DIFFERENCE)) {
          return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Value must be at least 0`);
        }
        (out.metadata ??= {})[TIMESTAMP_BOUND_KEYS.get(name)!] = String(BigInt(trimmed));
        break;
      case "min.insync.replicas": {
        // Kafka's check; a minimum above the replication factor is taken, as Kafka does, and refuses every acks=all write.
        const v = int(32);
        if (v === null || v < 1) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration min.insync.replicas: Value must be at least 1`);
        (out.metadata ??= {})[MIN_INSYNC_REPLICAS_KEY] = String(v);
        break;
      }
      case "segment.bytes":
      case "segment.ms": {
        // Kafka's bounds: an INT of at least a record's overhead (14 bytes), a LONG of at least 1 ms.
        const least = name === "segment.bytes" ? 14 : 1;
        const v = int(name === "segment.bytes" ? 32 : 64);
        if (v === null) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Not a number of type ${name === "segment.bytes" ? "INT" : "LONG"}`);
        if (v < least) return fail(ErrorCode.INVALID_CONFIG, `Invalid value ${value} for configuration ${name}: Value must be at least ${least}`);
        (out.metadata ??= {})[SEGMENT_KEYS.get(name)!] = BigInt(trimmed!).toString();
        break;
      }
      // Configs nagare cannot change, taken at the value it has (tools set what they read back, and Kafka's defaults):
      // batches kept as the producer compressed them; no unclean leader election.
      case "compression.type":
        if (trimmed !== "producer") return fail(ErrorCode.INVALID_CONFIG, `compression.type ${value} is not supported: batches are kept as the producer compressed them (producer)`);
        break;
      case "unclean.leader.election.enable":
        if (trimmed?.toLowerCase() !== "false") return fail(ErrorCode.INVALID_CONFIG, `unclean.leader.election.enable ${value} is not supported: only an in-sync replica is ever elected (false)`);
        break;
      default:
        return fail(ErrorCode.INVALID_CONFIG, `unknown or unsupported topic config ${name}`);
    }
  }
  // As Kafka's LogConfig: a topic may not be held back from compaction longer than it must be compacted by.
  const lag = (name: string): bigint => BigInt(out.metadata?.[COMPACTION_KEYS.get(name)!] ?? (COMPACTION_DEFAULTS as Record<string, string>)[name]);
  if (lag("min.compaction.lag.ms") > lag("max.compaction.lag.ms")) {
    return fail(ErrorCode.INVALID_CONFIG, `conflict topic config setting min.compaction.lag.ms (${lag("min.compaction.lag.ms")}) > max.compaction.lag.ms (${lag("max.compaction.lag.ms")})`);
  }
  // Without `delete` the retention configs stay set but nothing is deleted by them.
  if (noRetention) {
    out.max_age = 0;
    out.max_bytes = -1;
  }
  return out;
}

export interface ConfigEntry {
  name: string;
  value: string | null;
  readOnly: boolean;
  source: number;
}

/** What the configs of a topic are read from: its stream here, or its placed configuration (cluster.ts). */
type Configured = Pick<Stream, "config">;

/**
 * A topic's configuration: its stream's when this node has it, else (in a
 * cluster) the one its placement carries; undefined when it exists nowhere.
 */
function configuredTopic(door: AccountDoor, name: string): { local: Stream | undefined; placed: boolean; current: Configured } | undefined {
  const local = findTopic(door.js, name);
  const p = door.door.cluster?.topic(door.account, streamNameOf(name));
  const placed = p !== undefined && p.topic === name;
  if (local !== undefined) return { local, placed, current: local };
  if (!placed) return undefined;
  try {
    return { local, placed, current: { config: normalizeStreamConfig(p.config) } };
  } catch {
    return undefined; // a placement whose configuration no longer reads as a stream's: nothing to describe
  }
}

/** The Kafka view of a stream's settings. */
export function topicConfigs(door: AccountDoor, s: Configured): ConfigEntry[] {
  const c = s.config;
  const source = (set: boolean): number => (set ? SOURCE_DYNAMIC_TOPIC : SOURCE_DEFAULT);
  /** A config kept as a stream setting: the value it was set to while the setting still says so, else what the setting says. */
  const asSet = valuesAsSet(c);
  const setting = (name: string, value: string, set: boolean): ConfigEntry => {
    const v = asSet?.get(name);
    return v !== undefined ? { name, value: v, readOnly: false, source: SOURCE_DYNAMIC_TOPIC } : { name, value, readOnly: false, source: source(set) };
  };
  const compacted = isCompacted(c.metadata);
  const compactionConfig = (name: keyof typeof COMPACTION_DEFAULTS): ConfigEntry => {
    const value = c.metadata?.[COMPACTION_KEYS.get(name)!];
    return { name, value: value ?? COMPACTION_DEFAULTS[name], readOnly: false, source: source(value !== undefined) };
  };
  return [
    // A compacted topic whose retention a JetStream update changed since: the stream's settings apply, and `delete` with them.
    setting("cleanup.policy", compacted ? "compact,delete" : "delete", compacted),
    { name: "compression.type", value: "producer", readOnly: true, source: SOURCE_DEFAULT },
    compactionConfig("delete.retention.ms"),
    compactionConfig("max.compaction.lag.ms"),
    setting("max.message.bytes", String(c.max_msg_size > 0 ? c.max_msg_size : door.js.options.maxPayload + LOG_OVERHEAD), c.max_msg_size > 0),
    ...["message.timestamp.after.max.ms", "message.timestamp.before.max.ms", "message.timestamp.difference.max.ms"].map((name): ConfigEntry => {
      const value = c.metadata?.[TIMESTAMP_BOUND_KEYS.get(name)!];
      return { name, value: value ?? DEFAULT_TIMESTAMP_DIFFERENCE, readOnly: false, source: source(value !== undefined) };
    }),
    { name: "message.timestamp.type", value: c.metadata?.[TIMESTAMP_TYPE_KEY] ?? DEFAULT_TIMESTAMP_TYPE, readOnly: false, source: source(c.metadata?.[TIMESTAMP_TYPE_KEY] !== undefined) },
    compactionConfig("min.cleanable.dirty.ratio"),
    compactionConfig("min.compaction.lag.ms"),
    {
      name: "min.insync.replicas",
      value: String(minInsyncReplicas(c.metadata, door.options.minInsyncReplicas)),
      readOnly: false,
      source: c.metadata?.[MIN_INSYNC_REPLICAS_KEY] !== undefined ? SOURCE_DYNAMIC_TOPIC : door.options.minInsyncReplicas !== DEFAULT_MIN_INSYNC_REPLICAS ? SOURCE_STATIC_BROKER : SOURCE_DEFAULT,
    },
    setting("retention.bytes", String(c.max_bytes > 0 ? c.max_bytes : -1), c.max_bytes > 0),
    setting("retention.ms", String(c.max_age > 0 ? Math.round(c.max_age / NS_PER_MS) : -1), c.max_age > 0),
    ...(["segment.bytes", "segment.ms"] as const).map((name): ConfigEntry => {
      const value = c.metadata?.[SEGMENT_KEYS.get(name)!];
      return { name, value: value ?? String(name === "segment.bytes" ? SEGMENT_BYTES : SEGMENT_MS), readOnly: false, source: source(value !== undefined) };
    }),
    { name: "unclean.leader.election.enable", value: "false", readOnly: true, source: SOURCE_DEFAULT },
  ];
}

/**
 * The values a topic's stream-backed configs were set to, while they still
 * say together what the stream's settings do (an empty cleanup.policy turns
 * the retention configs off, say); null once a JetStream update has changed
 * a setting since: then the settings are shown.
 */
function valuesAsSet(c: StreamConfig): Map<string, string> | null {
  const values = new Map<string, string>();
  for (const name of SET_VALUE_CONFIGS) {
    const v = c.metadata?.[SET_VALUE_PREFIX + name];
    if (v !== undefined) values.set(name, v);
  }
  if (values.size === 0) return null;
  const limits = limitsFrom(values);
  if ("error" in limits) return null;
  const agrees =
    (limits.max_age ?? 0) === c.max_age && ((limits.max_bytes as number | undefined) ?? -1) === (c.max_bytes > 0 ? c.max_bytes : -1) && ((limits.max_msg_size as number | undefined) ?? -1) === (c.max_msg_size > 0 ? c.max_msg_size : -1);
  return agrees ? values : null;
}

/**
 * The broker's settings under Kafka's names, for DescribeConfigs of broker
 * `0`: the Kafka listener's, the ones shared with the NATS side, and the
 * defaults a topic gets (`log.*`). All read-only: they come from the
 * configuration file.
 */
export function brokerConfigs(door: AccountDoor): ConfigEntry[] {
  const o = door.options;
  const entry = (name: string, value: string | number | boolean | null, dflt: string | number | boolean | null): ConfigEntry => ({
    name,
    value: value === null ? null : String(value),
    readOnly: true,
    source: value === dflt ? SOURCE_DEFAULT : SOURCE_STATIC_BROKER,
  });
  const listener = `PLAINTEXT://${o.host}:${door.port}`;
  const entries = [
    entry("advertised.listeners", o.advertisedHost === undefined ? null : `PLAINTEXT://${o.advertisedHost}:${door.port}`, null),
    entry("auto.create.topics.enable", o.autoCreateTopics, KAFKA_DEFAULTS.autoCreateTopics),
    entry("auto.leader.rebalance.enable", o.autoLeaderRebalance, KAFKA_DEFAULTS.autoLeaderRebalance),
    entry("broker.id", door.nodeId, door.nodeId),
    entry("connections.max.idle.ms", o.connectionsMaxIdleMs, KAFKA_DEFAULTS.connectionsMaxIdleMs),
    // CreateTopics' replication_factor -1, and auto-created topics.
    entry("default.replication.factor", o.defaultReplicationFactor, KAFKA_DEFAULTS.defaultReplicationFactor),
    entry("fetch.max.bytes", o.fetchMaxBytes, KAFKA_DEFAULTS.fetchMaxBytes),
    entry("group.initial.rebalance.delay.ms", o.initialRebalanceDelayMs, KAFKA_DEFAULTS.initialRebalanceDelayMs),
    entry("group.max.session.timeout.ms", o.maxSessionTimeoutMs, KAFKA_DEFAULTS.maxSessionTimeoutMs),
    entry("group.max.size", MAX_MEMBERS_PER_GROUP, MAX_MEMBERS_PER_GROUP),
    entry("group.min.session.timeout.ms", o.minSessionTimeoutMs, KAFKA_DEFAULTS.minSessionTimeoutMs),
    // Whole seconds, as Kafka's LONG: an interval below one second (tests use them) reads as 1.
    entry("leader.imbalance.check.interval.seconds", Math.ceil(o.leaderImbalanceCheckIntervalMs / 1000), KAFKA_DEFAULTS.leaderImbalanceCheckIntervalMs / 1000),
    entry("leader.imbalance.per.broker.percentage", o.leaderImbalancePerBrokerPercentage, KAFKA_DEFAULTS.leaderImbalancePerBrokerPercentage),
    entry("listeners", listener, null),
    entry("max.connections", door.broker.options.maxConnections, SERVER_DEFAULTS.maxConnections),
    entry("message.max.bytes", door.js.options.maxPayload + LOG_OVERHEAD, SERVER_DEFAULTS.maxPayload + LOG_OVERHEAD),
    entry("min.insync.replicas", o.minInsyncReplicas, DEFAULT_MIN_INSYNC_REPLICAS),
    entry("num.partitions", o.defaultPartitions, KAFKA_DEFAULTS.defaultPartitions),
    // Whole minutes and milliseconds, as Kafka's: a retention below a minute (tests use them) reads as 1.
    entry("offsets.commit.timeout.ms", o.offsetsCommitTimeoutMs, KAFKA_DEFAULTS.offsetsCommitTimeoutMs),
    entry("offsets.retention.check.interval.ms", o.offsetsRetentionCheckIntervalMs, KAFKA_DEFAULTS.offsetsRetentionCheckIntervalMs),
    entry("offsets.retention.minutes", Math.ceil(o.offsetsRetentionMs / 60_000), KAFKA_DEFAULTS.offsetsRetentionMs / 60_000),
    entry("queued.max.request.bytes", o.maxQueuedRequestBytes, KAFKA_DEFAULTS.maxQueuedRequestBytes),
    entry("socket.request.max.bytes", o.maxRequestBytes, KAFKA_DEFAULTS.maxRequestBytes),
    entry("transaction.max.timeout.ms", MAX_TRANSACTION_TIMEOUT_MS, MAX_TRANSACTION_TIMEOUT_MS),
    // What a topic gets when it sets none of its own (topicConfigs).
    entry("log.cleaner.backoff.ms", o.logCleanerBackoffMs, KAFKA_DEFAULTS.logCleanerBackoffMs),
    entry("log.cleaner.delete.retention.ms", COMPACTION_DEFAULTS["delete.retention.ms"], COMPACTION_DEFAULTS["delete.retention.ms"]),
    entry("log.cleaner.enable", true, true),
    entry("log.cleaner.max.compaction.lag.ms", COMPACTION_DEFAULTS["max.compaction.lag.ms"], COMPACTION_DEFAULTS["max.compaction.lag.ms"]),
    entry("log.cleaner.min.cleanable.ratio", COMPACTION_DEFAULTS["min.cleanable.dirty.ratio"], COMPACTION_DEFAULTS["min.cleanable.dirty.ratio"]),
    entry("log.cleaner.min.compaction.lag.ms", COMPACTION_DEFAULTS["min.compaction.lag.ms"], COMPACTION_DEFAULTS["min.compaction.lag.ms"]),
    entry("log.cleanup.policy", "delete", "delete"),
    entry("log.message.timestamp.after.max.ms", DEFAULT_TIMESTAMP_DIFFERENCE, DEFAULT_TIMESTAMP_DIFFERENCE),
    entry("log.message.timestamp.before.max.ms", DEFAULT_TIMESTAMP_DIFFERENCE, DEFAULT_TIMESTAMP_DIFFERENCE),
    entry("log.message.timestamp.difference.max.ms", DEFAULT_TIMESTAMP_DIFFERENCE, DEFAULT_TIMESTAMP_DIFFERENCE),
    entry("log.message.timestamp.type", DEFAULT_TIMESTAMP_TYPE, DEFAULT_TIMESTAMP_TYPE),
    entry("log.retention.bytes", -1, -1),
    entry("log.retention.ms", -1, -1),
    entry("log.roll.ms", SEGMENT_MS, SEGMENT_MS),
    entry("log.segment.bytes", SEGMENT_BYTES, SEGMENT_BYTES),
  ];
  return entries.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The configs of topic `name` as DescribeConfigs gives them (CreateTopics v5+ answers them too); undefined when it exists nowhere. */
export function describeTopicConfigs(door: AccountDoor, name: string): ConfigEntry[] | undefined {
  const found = configuredTopic(door, name);
  return found === undefined ? undefined : topicConfigs(door, found.current);
}

/** Kafka's ConfigType (DescribeConfigs v3+): how a config's value reads. */
export const ConfigType = { UNKNOWN: 0, BOOLEAN: 1, STRING: 2, INT: 3, SHORT: 4, LONG: 5, DOUBLE: 6, LIST: 7, CLASS: 8, PASSWORD: 9 } as const;

const { BOOLEAN, STRING, INT, LONG, DOUBLE, LIST } = ConfigType;

/**
 * Each config nagare describes: its type as Kafka defines it, and what it
 * does here (DescribeConfigs v3+ `include_documentation`). Broker configs
 * say which setting of the configuration file they are (docs/KAFKA.md,
 * "Broker configs").
 */
const CONFIG_INFO = new Map<string, [type: number, doc: string]>([
  // A topic's, kept in its stream (docs/KAFKA.md, "Topic configs").
  ["cleanup.policy", [LIST, "delete: records go when retention.ms or retention.bytes says so; compact: a record goes once a later one has its key, a null value (a tombstone) delete.retention.ms after compaction first passed it."]],
  ["delete.retention.ms", [LONG, "How long a tombstone of a compacted topic is kept after compaction first passed it, for consumers to see it."]],
  ["max.compaction.lag.ms", [LONG, "A compacted topic's records are compacted within this long of being appended, however little is dirty."]],
  ["min.cleanable.dirty.ratio", [DOUBLE, "A compacted topic is compacted once this share of its records came since it last was."]],
  ["min.compaction.lag.ms", [LONG, "A compacted topic's records stay at least this long after they were appended, however many newer ones share their key."]],
  ["max.message.bytes", [INT, "The largest record batch the topic takes, as produced (its stream's max_msg_size, also applied to each record)."]],
  ["message.timestamp.after.max.ms", [LONG, "With CreateTime, a batch with a timestamp further than this ahead of the broker's clock is refused (INVALID_TIMESTAMP); left at no limit, message.timestamp.difference.max.ms bounds it."]],
  ["message.timestamp.before.max.ms", [LONG, "With CreateTime, a batch with a timestamp further than this behind the broker's clock is refused (INVALID_TIMESTAMP); left at no limit, message.timestamp.difference.max.ms bounds it."]],
  ["message.timestamp.difference.max.ms", [LONG, "With CreateTime, a batch whose timestamps are further than this from the broker's clock is refused (INVALID_TIMESTAMP); deprecated for the two above, as in Kafka."]],
  ["message.timestamp.type", [STRING, "CreateTime keeps the producer's timestamps; LogAppendTime replaces them with the broker's time."]],
  ["min.insync.replicas", [INT, "The replicas that must be in sync for an acks=all produce to be taken (NOT_ENOUGH_REPLICAS otherwise)."]],
  ["retention.bytes", [LONG, "The bytes each partition keeps before its oldest records go (its stream's max_bytes); -1: no limit."]],
  ["retention.ms", [LONG, "How long records are kept (its stream's max_age); -1: no limit."]],
  ["segment.bytes", [INT, "Kafka's segment size, which bounds when retention and compaction may remove records; here they remove records one by one, so any value is honoured (the storage engine's segments are 64 MiB)."]],
  ["segment.ms", [LONG, "Kafka's segment age, which bounds when retention and compaction may remove records; here they remove records one by one, so any value is honoured."]],
  ["compression.type", [STRING, "producer: batches are kept and served as the producer compressed them; fixed (set to it, taken)."]],
  ["unclean.leader.election.enable", [BOOLEAN, "false: only an in-sync replica is ever elected leader; fixed (set to it, taken)."]],
  // The broker's, from nagare's configuration file.
  ["advertised.listeners", [STRING, "The address clients are told to connect to: kafka { advertise }; null unless set."]],
  ["auto.create.topics.enable", [BOOLEAN, "Whether Metadata creates a topic it is asked about: kafka { auto_create_topics }."]],
  ["auto.leader.rebalance.enable", [BOOLEAN, "In a cluster, partitions led away from their preferred replica are handed back to it: kafka { auto_leader_rebalance }."]],
  ["broker.id", [INT, "This broker's id."]],
  ["connections.max.idle.ms", [LONG, "How long an idle connection is kept: kafka { connections_max_idle }."]],
  ["default.replication.factor", [INT, "The replicas of a topic created with replication factor -1."]],
  ["fetch.max.bytes", [INT, "The most bytes one fetch answer carries: kafka { fetch_max_bytes }."]],
  ["group.initial.rebalance.delay.ms", [INT, "How long a new group waits for more members before its first rebalance: kafka { group_initial_rebalance_delay }."]],
  ["group.max.session.timeout.ms", [INT, "The longest session timeout a group member may ask for: kafka { group_max_session_timeout }."]],
  ["group.max.size", [INT, "The most members a consumer group takes."]],
  ["group.min.session.timeout.ms", [INT, "The shortest session timeout a group member may ask for: kafka { group_min_session_timeout }."]],
  ["leader.imbalance.check.interval.seconds", [LONG, "How often each leader looks for partitions to hand back to their preferred replicas: kafka { leader_imbalance_check_interval }."]],
  ["leader.imbalance.per.broker.percentage", [INT, "A broker's share of the partitions it prefers but does not lead past which they are handed back: kafka { leader_imbalance_per_broker_percentage }."]],
  ["listeners", [STRING, "The address the Kafka listener is bound to: kafka { host, port }."]],
  ["max.connections", [INT, "The server's max_connections, shared with NATS clients."]],
  ["message.max.bytes", [INT, "The server's max_payload and Kafka's 12 bytes of log overhead: the largest record batch, the default and the most of a topic's max.message.bytes."]],
  ["num.partitions", [INT, "The partitions of a topic created without a count: kafka { num_partitions }."]],
  ["offsets.commit.timeout.ms", [INT, "How long an offset commit waits to be stored before it is answered REQUEST_TIMED_OUT (a group's or its offsets' deletion: COORDINATOR_NOT_AVAILABLE): kafka { offsets_commit_timeout }."]],
  ["offsets.retention.check.interval.ms", [LONG, "How often committed offsets past their retention are looked for: kafka { offsets_retention_check_interval }."]],
  ["offsets.retention.minutes", [INT, "How long an Empty group's committed offsets are kept (a standalone commit: from when it was made); then they and the group go: kafka { offsets_retention }."]],
  ["queued.max.request.bytes", [LONG, "The bytes of requests read and not yet answered, across connections: kafka { max_queued_request_bytes }."]],
  ["socket.request.max.bytes", [INT, "The largest request frame: kafka { max_request_bytes }."]],
  ["transaction.max.timeout.ms", [INT, "The longest transaction timeout InitProducerId takes."]],
  ["log.cleaner.backoff.ms", [LONG, "How often compacted topics are looked at for compaction: kafka { log_cleaner_backoff }."]],
  ["log.cleaner.delete.retention.ms", [LONG, "The delete.retention.ms of a topic that sets none."]],
  ["log.cleaner.enable", [BOOLEAN, "Compacted topics are compacted: always true."]],
  ["log.cleaner.max.compaction.lag.ms", [LONG, "The max.compaction.lag.ms of a topic that sets none."]],
  ["log.cleaner.min.cleanable.ratio", [DOUBLE, "The min.cleanable.dirty.ratio of a topic that sets none."]],
  ["log.cleaner.min.compaction.lag.ms", [LONG, "The min.compaction.lag.ms of a topic that sets none."]],
  ["log.cleanup.policy", [LIST, "The cleanup.policy of a topic that sets none."]],
  ["log.message.timestamp.after.max.ms", [LONG, "The message.timestamp.after.max.ms of a topic that sets none."]],
  ["log.message.timestamp.before.max.ms", [LONG, "The message.timestamp.before.max.ms of a topic that sets none."]],
  ["log.message.timestamp.difference.max.ms", [LONG, "The message.timestamp.difference.max.ms of a topic that sets none."]],
  ["log.message.timestamp.type", [STRING, "The message.timestamp.type of a topic that sets none."]],
  ["log.retention.bytes", [LONG, "The retention.bytes of a topic that sets none."]],
  ["log.retention.ms", [LONG, "The retention.ms of a topic that sets none."]],
  ["log.roll.ms", [LONG, "The segment.ms of a topic that sets none."]],
  ["log.segment.bytes", [INT, "The segment.bytes of a topic that sets none: the storage engine's segment size."]],
]);

/** A config's Kafka type (UNKNOWN for a name nagare does not describe). */
export function configType(name: string): number {
  return CONFIG_INFO.get(name)?.[0] ?? ConfigType.UNKNOWN;
}

function configDoc(name: string): string | null {
  return CONFIG_INFO.get(name)?.[1] ?? null;
}

/** Configs a topic has set, by name: what AlterConfigs replaces and IncrementalAlterConfigs changes. */
function setTopicConfigs(door: AccountDoor, s: Configured): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of topicConfigs(door, s)) if (e.source === SOURCE_DYNAMIC_TOPIC && e.value !== null) out.set(e.name, e.value);
  return out;
}

/** List-valued topic configs (APPEND and SUBTRACT apply to them only), with their default. */
const LIST_CONFIGS = new Map([["cleanup.policy", "delete"]]);
/** The topic configs CreateTopics and the AlterConfigs requests take (nagare topic --help lists them). */
export const TOPIC_CONFIG_NAMES: ReadonlySet<string> = new Set([
  "cleanup.policy",
  "compression.type",
  "delete.retention.ms",
  "max.compaction.lag.ms",
  "max.message.bytes",
  "message.timestamp.after.max.ms",
  "message.timestamp.before.max.ms",
  "message.timestamp.difference.max.ms",
  "message.timestamp.type",
  "min.cleanable.dirty.ratio",
  "min.compaction.lag.ms",
  "min.insync.replicas",
  "retention.bytes",
  "retention.ms",
  "segment.bytes",
  "segment.ms",
  "unclean.leader.election.enable",
]);

type AlterResource = AlterConfigsRequest["resources"][number];

/**
 * The stream configuration a topic would have after `res`'s changes: all of
 * its configs replaced (AlterConfigs) or the named ones changed
 * (IncrementalAlterConfigs); an Outcome when they cannot be honoured.
 */
function alteredConfig(door: AccountDoor, stream: Configured, res: AlterResource, incremental: boolean): StreamConfig | Outcome {
  const names = new Set<string>();
  const nulls: string[] = [];
  for (const c of res.configs) {
    if (names.has(c.name)) return fail(ErrorCode.INVALID_REQUEST, `config ${c.name} is named twice`);
    names.add(c.name);
    if (c.value === null && c.op !== ConfigOp.DELETE) nulls.push(c.name);
  }
  // As Kafka: a null value other than for a delete is a malformed request, not a bad config.
  if (nulls.length > 0) return fail(ErrorCode.INVALID_REQUEST, `Null value not supported for : ${nulls.join(", ")}`);
  const next = incremental ? setTopicConfigs(door, stream) : new Map<string, string>();
  for (const c of res.configs) {
    // Deleting a config that is not set changes nothing, whatever its name, as in Kafka.
    if (c.op === ConfigOp.DELETE && !next.has(c.name)) continue;
    if (!TOPIC_CONFIG_NAMES.has(c.name)) return fail(ErrorCode.INVALID_CONFIG, `unknown or unsupported topic config ${c.name}`);
    switch (c.op) {
      case ConfigOp.SET:
        next.set(c.name, c.value!);
        break;
      case ConfigOp.DELETE:
        next.delete(c.name);
        break;
      case ConfigOp.APPEND:
      case ConfigOp.SUBTRACT: {
        const dflt = LIST_CONFIGS.get(c.name);
        if (dflt === undefined) return fail(ErrorCode.INVALID_CONFIG, `Config value ${c.op === ConfigOp.APPEND ? "append" : "subtract"} is not allowed for config key: ${c.name}`);
        const list = (next.get(c.name) ?? dflt).split(",").filter((v) => v !== "");
        const values = c.value!.split(",").map((v) => v.trim());
        const result = c.op === ConfigOp.APPEND ? [...list, ...values.filter((v) => !list.includes(v))] : list.filter((v) => !values.includes(v));
        next.set(c.name, result.join(","));
        break;
      }
      default:
        return fail(ErrorCode.INVALID_REQUEST, `unknown config operation ${c.op}`);
    }
  }
  const limits = limitsFrom(next, door.js.options.maxPayload);
  if ("error" in limits) return limits as Outcome;
  // What is not named goes back to its default (AlterConfigs), or was kept in `next` (incremental).
  const config: StreamConfig = {
    ...stream.config,
    max_age: 0,
    max_bytes: -1,
    max_msg_size: -1,
    ...limits,
    metadata: { ...withoutKafkaConfigs(stream.config.metadata), ...limits.metadata },
  };
  // JetStream's de-duplication window may not outlast the messages: a shorter retention shortens it, as at creation.
  if (config.max_age > 0 && config.duplicate_window > config.max_age) config.duplicate_window = config.max_age;
  return config;
}

/** How often one storage failure of an account's topic changes (per kind and topic) is logged: clients retry them at once. */
export const STORAGE_FAILURE_LOG_MS = 10_000;
const storageFailuresTold = new WeakMap<AccountDoor, ThrottledLog>();

/**
 * A topic's creation or change failed in the store (a full or read-only
 * disk), not by a refusal the request can be told of: answered
 * KAFKA_STORAGE_ERROR, which clients retry, as Kafka answers a write its log
 * dir refused. It was thrown, and each request retried (a producer's
 * Metadata auto-creating its topic, a few a second) logged a stack trace
 * and closed the client's connection. Logged once per STORAGE_FAILURE_LOG_MS.
 */
export function storageFailure(door: AccountDoor, what: string, topic: string, err: unknown): Outcome {
  const message = (err as Error).message ?? String(err);
  let told = storageFailuresTold.get(door);
  if (told === undefined) storageFailuresTold.set(door, (told = new ThrottledLog(STORAGE_FAILURE_LOG_MS, 1024)));
  if (told.failed(`${what}\0${topic}`) !== null) door.log.error(`kafka: ${what} topic ${topic} failed: ${message}`);
  return fail(ErrorCode.KAFKA_STORAGE_ERROR, `${what} topic ${topic} failed: ${message}`);
}

/** Puts a placed stream's configuration back as it was before a change this node's copy failed to take; logged if it cannot. */
async function undoReconfigure(door: AccountDoor, cluster: NonNullable<AccountDoor["door"]["cluster"]>, name: string, config: unknown): Promise<void> {
  try {
    const before = normalizeStreamConfig(config);
    await cluster.reconfigure(door.account, name, config, minInsyncReplicas(before.metadata, door.options.minInsyncReplicas));
  } catch (err) {
    door.log.error(`kafka: the configs of stream ${name} could not be put back in the cluster after this node failed to take them: ${(err as Error).message}`);
  }
}

/** Applies one resource's changes (or checks them, `validateOnly`). */
async function alterResource(door: AccountDoor, perms: PermissionCheck | null, res: AlterResource, incremental: boolean, validateOnly: boolean): Promise<Outcome> {
  if (res.type === RESOURCE_BROKER) {
    if (res.configs.length === 0) return ok;
    return fail(ErrorCode.INVALID_CONFIG, `nagare's broker settings come from its configuration file and cannot be changed at run time (${res.configs.map((c) => c.name).join(", ")})`);
  }
  if (res.type !== RESOURCE_TOPIC) return fail(ErrorCode.INVALID_REQUEST, `resource type ${res.type} is not supported`);
  const found = configuredTopic(door, res.name);
  if (found === undefined) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `topic ${res.name} does not exist`);
  const stream = found.current;
  if (!mayManageTopic(perms, "UPDATE", res.name)) return fail(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.");
  if (stream.config.sealed) return fail(ErrorCode.POLICY_VIOLATION, `the stream of topic ${res.name} is sealed: its settings cannot change`);
  const next = alteredConfig(door, stream, res, incremental);
  if ("error" in next) return next;
  try {
    // What the stream itself would refuse (a retention under 100 ms, say) is refused under validate_only too.
    const checked = normalizeStreamConfig(next);
    const refused = streamUpdateError(stream.config, checked);
    if (refused !== null) throw refused;
    // Everything that would refuse the change is judged before anything changes (and so for validate_only, as Kafka applies
    // its alter policy to a validation): what the account's limits refuse in any copy (max_bytes required, the account's
    // max bytes of a stream), the account's storage in the cluster as reconfigure judges it, and this node's copy as
    // updateStream does. A refusal of this node's copy after the placement changed was answered as an error while every
    // other copy took the change.
    const over =
      configLimitError(door.js.limits, checked) ??
      (found.placed ? door.door.cluster!.changeLimitError(door.account, stream.config.name, { config: checked }, door.js.limits) : null) ??
      (found.local !== undefined ? door.js.updateRefusal(next) : null);
    if (over !== null) throw over;
    if (validateOnly) return ok;
    // In a cluster the placement carries the configuration every copy is made from (the nodes leading it apply it); this node's copy changes at once.
    const cluster = found.placed ? door.door.cluster! : null;
    const placedBefore = cluster?.topic(door.account, stream.config.name)?.config;
    if (cluster !== null) await cluster.reconfigure(door.account, stream.config.name, checked, minInsyncReplicas(checked.metadata, door.options.minInsyncReplicas), door.js.limits);
    if (found.local !== undefined) {
      try {
        await door.js.updateStream(next);
      } catch (err) {
        // What this node's copy could not take though nothing refused it (its disk failed): the placement goes back, so that
        // the error answered changed nothing in the cluster either (the JetStream API's update undoes it alike).
        if (cluster !== null && placedBefore !== undefined) await undoReconfigure(door, cluster, stream.config.name, placedBefore);
        throw err;
      }
    }
  } catch (err) {
    if (err instanceof KafkaClusterError) return fail(err.retriable ? ErrorCode.REQUEST_TIMED_OUT : ErrorCode.POLICY_VIOLATION, err.message);
    if (!(err instanceof ApiError)) return storageFailure(door, "altering the configs of", res.name, err);
    if (isAccountLimit(err)) return fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: ${err.message}`);
    return fail(ErrorCode.INVALID_CONFIG, err.message);
  }
  door.log.info(`kafka: altered configs of topic ${res.name}: ${res.configs.map((c) => `${c.name}${c.op === ConfigOp.DELETE ? " (default)" : `=${c.value}`}`).join(", ") || "all to their defaults"}`);
  return ok;
}

/** AlterConfigs v0–2 and IncrementalAlterConfigs v0–1: the same answer, flexible from v2 and v1. */
async function handleAlter(door: AccountDoor, { conn, r, w }: RequestContext, incremental: boolean): Promise<boolean> {
  const { resources, validateOnly } = incremental ? decodeIncrementalAlterConfigs(r) : decodeAlterConfigs(r);
  const keyOf = (res: { type: number; name: string }): string => `${res.type}\0${res.name}`;
  const repeated = repeatedKeys(resources.map(keyOf));
  // As Kafka (ConfigAdminManager): a resource named more than once is answered once, refused, and none of its entries applied.
  const answered = new Set<string>();
  const results: Array<Outcome & { type: number; name: string }> = [];
  for (const res of resources) {
    const key = keyOf(res);
    if (answered.has(key)) continue;
    answered.add(key);
    const outcome = repeated.has(key) ? fail(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.") : await alterResource(door, conn.permissions, res, incremental, validateOnly);
    results.push({ ...outcome, type: res.type, name: res.name });
  }
  w.i32(0); // throttle_time_ms
  w.array(results, (w, res) => w.i16(res.error).nullableString(res.message).i8(res.type).string(res.name).taggedFields());
  w.taggedFields();
  return true;
}

export function handleAlterConfigs(door: AccountDoor, ctx: RequestContext): Promise<boolean> {
  return handleAlter(door, ctx, false);
}

export function handleIncrementalAlterConfigs(door: AccountDoor, ctx: RequestContext): Promise<boolean> {
  return handleAlter(door, ctx, true);
}

/** The configs of one DescribeConfigs resource, or why not. */
function describeResource(door: AccountDoor, type: number, name: string): Outcome & { entries: ConfigEntry[] } {
  if (type === RESOURCE_TOPIC) {
    const found = configuredTopic(door, name);
    if (found === undefined) return { ...fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `topic ${name} does not exist`), entries: [] };
    return { ...ok, entries: topicConfigs(door, found.current) };
  }
  if (type === RESOURCE_BROKER) {
    // As Kafka: "" is the cluster-wide dynamic defaults, of which nagare has none.
    if (name === "") return { ...ok, entries: [] };
    if (name !== String(door.nodeId)) return { ...fail(ErrorCode.INVALID_REQUEST, `Unexpected broker id, expected ${door.nodeId} or empty string, but received ${name}`), entries: [] };
    return { ...ok, entries: brokerConfigs(door) };
  }
  return { ...fail(ErrorCode.INVALID_REQUEST, `resource type ${type} is not supported`), entries: [] };
}

/** The broker setting a topic config falls back to, as Kafka names it (its synonym). */
const BROKER_SYNONYM = new Map([
  ["cleanup.policy", "log.cleanup.policy"],
  ["delete.retention.ms", "log.cleaner.delete.retention.ms"],
  ["max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"],
  ["min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio"],
  ["min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"],
  ["max.message.bytes", "message.max.bytes"],
  ["message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms"],
  ["message.timestamp.before.max.ms", "log.message.timestamp.before.max.ms"],
  ["message.timestamp.difference.max.ms", "log.message.timestamp.difference.max.ms"],
  ["message.timestamp.type", "log.message.timestamp.type"],
  ["min.insync.replicas", "min.insync.replicas"],
  ["retention.bytes", "log.retention.bytes"],
  ["retention.ms", "log.retention.ms"],
  ["segment.bytes", "log.segment.bytes"],
  ["segment.ms", "log.roll.ms"],
]);

/**
 * A config's synonyms as Kafka lists them (include_synonyms): where its value
 * could come from, highest precedence first. A topic's own value, then the
 * broker setting it falls back to; a broker setting is its own only synonym.
 */
function synonymsOf(type: number, e: ConfigEntry, broker: ConfigEntry[] | null): ConfigEntry[] {
  if (type !== RESOURCE_TOPIC) return e.value === null ? [] : [e];
  const out = e.source === SOURCE_DYNAMIC_TOPIC ? [e] : [];
  const fallback = broker?.find((b) => b.name === BROKER_SYNONYM.get(e.name));
  if (fallback !== undefined && fallback.value !== null) out.push(fallback);
  return out;
}

/**
 * DescribeConfigs v0–4: v1 adds sources and synonyms, v3 each config's type
 * and (when asked) documentation, v4 is flexible.
 */
export function handleDescribeConfigs(door: AccountDoor, { version, r, w }: RequestContext): boolean {
  const { resources, includeSynonyms, includeDocumentation } = decodeDescribeConfigs(r, version);
  const broker = includeSynonyms ? brokerConfigs(door) : null;
  w.i32(0); // throttle_time_ms
  w.array(resources, (w, res) => {
    const d = describeResource(door, res.type, res.name);
    const entries = res.keys === null ? d.entries : d.entries.filter((e) => res.keys!.includes(e.name));
    w.i16(d.error).nullableString(d.message).i8(res.type).string(res.name);
    w.array(entries, (w, e) => {
      w.string(e.name).nullableString(e.value).bool(e.readOnly);
      if (version === 0) w.bool(e.source === SOURCE_DEFAULT);
      else w.i8(e.source);
      w.bool(false); // is_sensitive
      if (version >= 1) w.array(broker === null ? [] : synonymsOf(res.type, e, broker), (w, s) => w.string(s.name).nullableString(s.value).i8(s.source).taggedFields());
      if (version >= 3) w.i8(configType(e.name)).nullableString(includeDocumentation ? configDoc(e.name) : null);
      w.taggedFields();
    });
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}
