/** CreateTopics, DeleteTopics and DescribeConfigs: topics as streams (see topics.ts). */

import type { RequestContext } from "./api.js";
import { MAX_PARTITIONS, type KafkaDoor } from "./door.js";
import { ErrorCode } from "./errors.js";
import { ApiError } from "../../streams/errors.js";
import { NS_PER_MS } from "../../streams/config.js";
import type { Stream } from "../../streams/stream.js";
import { decodeCreateTopics, decodeDeleteTopics, decodeDescribeConfigs } from "./requests.js";
import { findTopic, streamNameOf, topicNameError, topicOf, TOPIC_METADATA_KEY } from "./topics.js";

const SEGMENT_BYTES = 64 * 1024 * 1024;
const RESOURCE_TOPIC = 2;
const RESOURCE_BROKER = 4;
const SOURCE_TOPIC = 1;
const SOURCE_DEFAULT = 5;

export interface Outcome {
  error: number;
  message: string | null;
}

const ok: Outcome = { error: ErrorCode.NONE, message: null };
const fail = (error: number, message: string): Outcome => ({ error, message });

/** Stream limits from Kafka topic configs; an Outcome when one cannot be honoured. */
function limitsFrom(configs: Map<string, string | null>): Record<string, unknown> | Outcome {
  const out: Record<string, unknown> = {};
  for (const [name, value] of configs) {
    const int = (): number | null => (value !== null && /^-?\d+$/.test(value) ? Number(value) : null);
    switch (name) {
      case "retention.ms": {
        const v = int();
        if (v === null || v < -1) return fail(ErrorCode.INVALID_CONFIG, `retention.ms: ${value} is not -1 or a number of milliseconds`);
        out.max_age = v <= 0 ? 0 : v * NS_PER_MS;
        break;
      }
      case "retention.bytes": {
        const v = int();
        if (v === null || v < -1) return fail(ErrorCode.INVALID_CONFIG, `retention.bytes: ${value} is not -1 or a byte count`);
        out.max_bytes = v <= 0 ? -1 : v;
        break;
      }
      case "max.message.bytes": {
        const v = int();
        if (v === null || v <= 0) return fail(ErrorCode.INVALID_CONFIG, `max.message.bytes: ${value} is not a positive byte count`);
        out.max_msg_size = v;
        break;
      }
      case "cleanup.policy":
        if (value !== "delete") return fail(ErrorCode.INVALID_CONFIG, `cleanup.policy ${value} is not supported (only delete)`);
        break;
      case "message.timestamp.type":
        if (value !== "LogAppendTime") return fail(ErrorCode.INVALID_CONFIG, "nagare records keep the log append time (message.timestamp.type LogAppendTime)");
        break;
      case "segment.bytes":
        return fail(ErrorCode.INVALID_CONFIG, "segment.bytes is fixed by the storage engine");
      default:
        return fail(ErrorCode.INVALID_CONFIG, `unknown or unsupported topic config ${name}`);
    }
  }
  return out;
}

/** Creates `topic` with `partitions` partitions; the Kafka outcome. */
export async function createTopic(door: KafkaDoor, topic: string, partitions: number, configs: Map<string, string | null>, validateOnly = false): Promise<Outcome> {
  const nameError = topicNameError(topic);
  if (nameError !== null) return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, nameError);
  if (partitions < 1 || partitions > MAX_PARTITIONS) return fail(ErrorCode.INVALID_PARTITIONS, `partitions must be 1 to ${MAX_PARTITIONS}`);
  const existing = door.js.streams.get(streamNameOf(topic));
  if (existing !== undefined) {
    if (topicOf(existing) === topic) return fail(ErrorCode.TOPIC_ALREADY_EXISTS, `Topic '${topic}' already exists.`);
    return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, `Topic '${topic}' collides with existing topic '${topicOf(existing)}'.`);
  }
  const limits = limitsFrom(configs);
  if ("error" in limits) return limits as Outcome;
  const config = { name: streamNameOf(topic), subjects: [topic], storage: "file", retention: "limits", discard: "old", ...limits, metadata: { [TOPIC_METADATA_KEY]: topic } };
  if (validateOnly) return ok;
  try {
    await door.js.createStream(config, partitions);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    if (err.errCode === 10065) return fail(ErrorCode.POLICY_VIOLATION, `subject ${topic} is already captured by another stream`);
    return fail(ErrorCode.INVALID_CONFIG, err.message);
  }
  door.log.info(`kafka: created topic ${topic} with ${partitions} partition(s)`);
  return ok;
}

export async function handleCreateTopics(door: KafkaDoor, { version, r, w }: RequestContext): Promise<boolean> {
  const { topics: requests, validateOnly } = decodeCreateTopics(r, version);
  const seen = new Set<string>();
  const results: Array<{ name: string } & Outcome> = [];
  for (const t of requests) {
    let outcome: Outcome;
    if (seen.has(t.name)) outcome = fail(ErrorCode.INVALID_REQUEST, "topic named twice in one request");
    else if (t.replication !== -1 && t.replication !== 1) outcome = fail(ErrorCode.INVALID_REPLICATION_FACTOR, "Replication factor: larger than available brokers: 1.");
    else if (t.assignments.length > 0 && (t.partitions !== -1 || t.assignments.some((a, i) => a.partition !== i || a.brokers.some((b) => b !== door.nodeId)))) {
      outcome = fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `assignments may name only broker ${door.nodeId}, partitions 0..n-1`);
    } else {
      const count = t.assignments.length > 0 ? t.assignments.length : t.partitions === -1 ? door.options.defaultPartitions : t.partitions;
      outcome = await createTopic(door, t.name, count, t.configs, validateOnly);
    }
    seen.add(t.name);
    results.push({ name: t.name, ...outcome });
  }
  if (version >= 2) w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.string(t.name).i16(t.error);
    if (version >= 1) w.nullableString(t.message);
  });
  return true;
}

export async function handleDeleteTopics(door: KafkaDoor, { version, r, w }: RequestContext): Promise<boolean> {
  const { names } = decodeDeleteTopics(r);
  const results: Array<[string, number]> = [];
  for (const name of names) {
    const stream = findTopic(door.js, name);
    if (stream === undefined) {
      results.push([name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]);
      continue;
    }
    await door.js.deleteStream(stream.config.name);
    await door.groups.forgetTopic(name);
    door.producers.forgetTopic(name);
    door.log.info(`kafka: deleted topic ${name}`);
    results.push([name, ErrorCode.NONE]);
  }
  if (version >= 1) w.i32(0);
  w.array(results, (w, [name, error]) => w.string(name).i16(error));
  return true;
}

interface ConfigEntry {
  name: string;
  value: string;
  readOnly: boolean;
  isDefault: boolean;
}

/** The Kafka view of a stream's settings. */
export function topicConfigs(door: KafkaDoor, s: Stream): ConfigEntry[] {
  const c = s.config;
  return [
    { name: "cleanup.policy", value: "delete", readOnly: true, isDefault: true },
    { name: "max.message.bytes", value: String(c.max_msg_size > 0 ? c.max_msg_size : door.js.options.maxPayload), readOnly: false, isDefault: !(c.max_msg_size > 0) },
    { name: "message.timestamp.type", value: "LogAppendTime", readOnly: true, isDefault: true },
    { name: "retention.bytes", value: String(c.max_bytes > 0 ? c.max_bytes : -1), readOnly: false, isDefault: !(c.max_bytes > 0) },
    { name: "retention.ms", value: String(c.max_age > 0 ? Math.round(c.max_age / NS_PER_MS) : -1), readOnly: false, isDefault: !(c.max_age > 0) },
    { name: "segment.bytes", value: String(SEGMENT_BYTES), readOnly: true, isDefault: true },
  ];
}

export function handleDescribeConfigs(door: KafkaDoor, { version, r, w }: RequestContext): boolean {
  const { resources } = decodeDescribeConfigs(r, version); // include_synonyms: we have none
  w.i32(0); // throttle_time_ms
  w.array(resources, (w, res) => {
    let error: number = ErrorCode.NONE;
    let message: string | null = null;
    let entries: ConfigEntry[] = [];
    if (res.type === RESOURCE_TOPIC) {
      const stream = findTopic(door.js, res.name);
      if (stream === undefined) {
        error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        message = `topic ${res.name} does not exist`;
      } else entries = topicConfigs(door, stream);
    } else if (res.type !== RESOURCE_BROKER) {
      error = ErrorCode.INVALID_REQUEST;
      message = `resource type ${res.type} is not supported`;
    }
    if (res.keys !== null) entries = entries.filter((e) => res.keys!.includes(e.name));
    w.i16(error).nullableString(message).i8(res.type).string(res.name);
    w.array(entries, (w, e) => {
      w.string(e.name).nullableString(e.value).bool(e.readOnly);
      if (version === 0) w.bool(e.isDefault);
      else w.i8(e.isDefault ? SOURCE_DEFAULT : SOURCE_TOPIC);
      w.bool(false); // is_sensitive
      if (version >= 1) w.arrayLength(0); // synonyms
    });
  });
  return true;
}
