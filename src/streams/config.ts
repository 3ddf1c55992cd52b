/**
 * Stream and consumer configurations in JetStream's JSON shape (snake_case,
 * durations in nanoseconds), checked and completed with nats-server's
 * defaults. The completed form is what is stored, echoed and compared: a
 * create with the same configuration is idempotent, and a client can send
 * back what it was given (ordered consumers do).
 */

import { isValidSubscribeSubject, subjectMatches } from "../subjects/subject.js";
import { ApiError, Errors } from "./errors.js";

export const NS_PER_MS = 1_000_000;
const DEFAULT_DUPLICATE_WINDOW = 120_000 * NS_PER_MS;
export const DEFAULT_ACK_WAIT = 30_000 * NS_PER_MS;
export const DEFAULT_MAX_ACK_PENDING = 1000;
export const DEFAULT_MAX_WAITING = 512;
export const DEFAULT_INACTIVE_THRESHOLD = 5_000 * NS_PER_MS;
const MAX_NAME_LEN = 255;
const MAX_DESCRIPTION_LEN = 4096;

export type Retention = "limits" | "interest" | "workqueue";

export interface StreamConfig {
  name: string;
  description?: string;
  subjects: string[];
  retention: Retention;
  max_consumers: number;
  max_msgs: number;
  max_bytes: number;
  max_age: number;
  max_msgs_per_subject: number;
  max_msg_size: number;
  discard: "old" | "new";
  discard_new_per_subject?: boolean;
  storage: "file" | "memory";
  num_replicas: number;
  duplicate_window: number;
  compression: "none" | "s2";
  sealed: boolean;
  deny_delete: boolean;
  deny_purge: boolean;
  allow_rollup_hdrs: boolean;
  allow_direct: boolean;
  mirror_direct: boolean;
  allow_msg_ttl?: boolean;
  no_ack?: boolean;
  first_seq?: number;
  metadata?: Record<string, string>;
  consumer_limits: { inactive_threshold?: number; max_ack_pending?: number };
}

export type DeliverPolicy = "all" | "last" | "new" | "by_start_sequence" | "by_start_time" | "last_per_subject";
export type AckPolicy = "none" | "all" | "explicit";

export interface ConsumerConfig {
  name?: string;
  durable_name?: string;
  description?: string;
  deliver_policy: DeliverPolicy;
  opt_start_seq?: number;
  opt_start_time?: string;
  ack_policy: AckPolicy;
  ack_wait: number;
  max_deliver: number;
  backoff?: number[];
  filter_subject?: string;
  filter_subjects?: string[];
  replay_policy: "instant" | "original";
  rate_limit_bps?: number;
  sample_freq?: string;
  max_waiting?: number;
  max_ack_pending: number;
  flow_control?: boolean;
  headers_only?: boolean;
  max_batch?: number;
  max_expires?: number;
  max_bytes?: number;
  deliver_subject?: string;
  deliver_group?: string;
  idle_heartbeat?: number;
  inactive_threshold?: number;
  num_replicas: number;
  mem_storage?: boolean;
  metadata?: Record<string, string>;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A name usable as a stream, consumer or bucket: no subject tokens, no path separators. */
export function isValidName(name: string): boolean {
  if (name === "" || name.length > MAX_NAME_LEN) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 32 || c === 0x2e || c === 0x2a || c === 0x3e || c === 0x2f || c === 0x5c || c === 0x7f) return false;
  }
  return true;
}

function num(cfg: Json, key: string, bad: (why: string) => ApiError): number | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || !Number.isInteger(v)) throw bad(`invalid ${key}`);
  return v;
}

function bool(cfg: Json, key: string, bad: (why: string) => ApiError): boolean | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw bad(`invalid ${key}`);
  return v;
}

function str(cfg: Json, key: string, bad: (why: string) => ApiError): string | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw bad(`invalid ${key}`);
  return v;
}

function oneOf<T extends string>(cfg: Json, key: string, allowed: readonly T[], dflt: T, bad: (why: string) => ApiError, what: string): T {
  const v = str(cfg, key, bad);
  if (v === undefined || v === "") return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw bad(what);
  return v as T;
}

function metadata(cfg: Json, bad: (why: string) => ApiError): Record<string, string> | undefined {
  const m = cfg.metadata;
  if (m === undefined || m === null) return undefined;
  if (!isObject(m)) throw bad("invalid metadata");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== "string") throw bad("invalid metadata");
    out[k] = v;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** -1 for unlimited, as nats-server stores it: absent, 0 and anything below -1 mean unlimited. */
function limit(v: number | undefined): number {
  return v === undefined || v === 0 || v < -1 ? -1 : v;
}

export function normalizeStreamConfig(raw: unknown): StreamConfig {
  const bad = Errors.streamConfig;
  if (!isObject(raw)) throw bad("stream configuration invalid");
  const name = str(raw, "name", bad) ?? "";
  if (/[/\\]/.test(name)) throw Errors.streamNameSeparators();
  if (!isValidName(name)) throw bad("stream name is required and can not contain '.', '*', '>', '\\', '/'");
  const description = str(raw, "description", bad);
  if (description !== undefined && description.length > MAX_DESCRIPTION_LEN) {
    throw bad(`stream description is too long, maximum allowed is ${MAX_DESCRIPTION_LEN}`);
  }
  if (raw.mirror !== undefined && raw.mirror !== null) throw bad("stream mirrors are not supported");
  if (Array.isArray(raw.sources) && raw.sources.length > 0) throw bad("stream sources are not supported");
  let subjects: string[];
  const rs = raw.subjects;
  if (rs === undefined || rs === null || (Array.isArray(rs) && rs.length === 0)) subjects = [name];
  else if (Array.isArray(rs) && rs.every((s) => typeof s === "string")) subjects = rs as string[];
  else throw bad("invalid subjects");
  const seen = new Set<string>();
  for (const s of subjects) {
    if (!isValidSubscribeSubject(s)) throw bad(`invalid subject: ${s}`);
    if (s.startsWith("$JS.") || s.startsWith("$SYS.")) throw bad("subjects that overlap with jetstream api require no-ack to be true");
    if (seen.has(s)) throw bad("duplicate subjects detected");
    seen.add(s);
  }
  const replicas = num(raw, "num_replicas", bad) ?? 0;
  if (replicas < 0) throw new ApiError(400, 10133, "replicas count cannot be negative");
  if (replicas > 5) throw bad("maximum replicas is 5");
  const maxAge = num(raw, "max_age", bad) ?? 0;
  if (maxAge < 0) throw bad("max age can not be negative");
  if (maxAge !== 0 && maxAge < 100 * NS_PER_MS) throw bad("max age needs to be >= 100ms");
  let dup = num(raw, "duplicate_window", bad) ?? 0;
  if (dup < 0) throw bad("duplicates window can not be negative");
  if (dup === 0) dup = maxAge !== 0 && maxAge < DEFAULT_DUPLICATE_WINDOW ? maxAge : DEFAULT_DUPLICATE_WINDOW;
  if (maxAge !== 0 && dup > maxAge) throw bad("duplicates window can not be larger then max age");
  if (dup < 100 * NS_PER_MS) throw bad("duplicates window needs to be >= 100ms");
  const retention = oneOf(raw, "retention", ["limits", "interest", "workqueue"] as const, "limits", bad, "invalid retention");
  const discard = oneOf(raw, "discard", ["old", "new"] as const, "old", bad, "invalid discard policy");
  const storage = oneOf(raw, "storage", ["file", "memory"] as const, "file", bad, "invalid storage type");
  const compression = oneOf(raw, "compression", ["none", "s2"] as const, "none", bad, "invalid compression");
  const denyPurge = bool(raw, "deny_purge", bad) ?? false;
  const allowRollup = bool(raw, "allow_rollup_hdrs", bad) ?? false;
  if (denyPurge && allowRollup) throw bad("roll-ups require the purge permission");
  const maxPer = limit(num(raw, "max_msgs_per_subject", bad));
  const discardNewPer = bool(raw, "discard_new_per_subject", bad);
  if (discardNewPer) {
    if (discard !== "new") throw bad("discard new per subject requires discard new policy to be set");
    if (maxPer <= 0) throw bad("discard new per subject requires max msgs per subject > 0");
  }
  const firstSeq = num(raw, "first_seq", bad);
  if (firstSeq !== undefined && firstSeq < 0) throw bad("invalid first_seq");
  const cl = raw.consumer_limits;
  const consumerLimits: StreamConfig["consumer_limits"] = {};
  if (isObject(cl)) {
    const it = num(cl, "inactive_threshold", bad);
    const map = num(cl, "max_ack_pending", bad);
    if (it !== undefined && it !== 0) consumerLimits.inactive_threshold = it;
    if (map !== undefined && map !== 0) consumerLimits.max_ack_pending = map;
  }
  const cfg: StreamConfig = {
    name,
    subjects,
    retention,
    max_consumers: limit(num(raw, "max_consumers", bad)),
    max_msgs: limit(num(raw, "max_msgs", bad)),
    max_bytes: limit(num(raw, "max_bytes", bad)),
    max_age: maxAge,
    max_msgs_per_subject: maxPer,
    max_msg_size: limit(num(raw, "max_msg_size", bad)),
    discard,
    storage,
    num_replicas: Math.max(1, replicas),
    duplicate_window: dup,
    compression,
    sealed: bool(raw, "sealed", bad) ?? false,
    deny_delete: bool(raw, "deny_delete", bad) ?? false,
    deny_purge: denyPurge,
    allow_rollup_hdrs: allowRollup,
    allow_direct: bool(raw, "allow_direct", bad) ?? false,
    mirror_direct: bool(raw, "mirror_direct", bad) ?? false,
    consumer_limits: consumerLimits,
  };
  if (description !== undefined && description !== "") cfg.description = description;
  if (discardNewPer) cfg.discard_new_per_subject = true;
  if (bool(raw, "allow_msg_ttl", bad)) cfg.allow_msg_ttl = true;
  if (bool(raw, "no_ack", bad)) cfg.no_ack = true;
  if (firstSeq !== undefined && firstSeq > 0) cfg.first_seq = firstSeq;
  const md = metadata(raw, bad);
  if (md) cfg.metadata = md;
  return cfg;
}

/** What a stream update may not change. */
export function streamUpdateError(old: StreamConfig, next: StreamConfig): ApiError | null {
  const bad = Errors.streamConfig;
  if (old.storage !== next.storage) return bad("stream configuration update can not change storage type");
  if (old.retention !== next.retention) return bad("stream configuration update can not change retention policy");
  if (old.sealed && !next.sealed) return bad("stream configuration update can not unseal a sealed stream");
  if (old.deny_delete && !next.deny_delete) return bad("stream configuration update can not cancel deny message deletes");
  if (old.deny_purge && !next.deny_purge) return bad("stream configuration update can not cancel deny purge");
  return null;
}

export function isPush(cfg: ConsumerConfig): boolean {
  return cfg.deliver_subject !== undefined && cfg.deliver_subject !== "";
}

/** The consumer's filters (empty: everything the stream holds). */
export function filtersOf(cfg: ConsumerConfig): string[] {
  if (cfg.filter_subjects && cfg.filter_subjects.length > 0) return cfg.filter_subjects;
  if (cfg.filter_subject) return [cfg.filter_subject];
  return [];
}

export function normalizeConsumerConfig(raw: unknown, stream: StreamConfig): ConsumerConfig {
  const bad = Errors.consumerInvalidPolicy;
  if (!isObject(raw)) throw Errors.consumerConfigRequired();
  const durable = str(raw, "durable_name", bad);
  const name = str(raw, "name", bad);
  if (durable && name && durable !== name) throw Errors.consumerDurableNameMismatch();
  for (const n of [durable, name]) {
    if (n === undefined || n === "") continue;
    if (/[/\\]/.test(n)) throw Errors.consumerNameSeparators();
    if (!isValidName(n)) throw Errors.consumerBadDurableName();
    if (n.length > MAX_NAME_LEN) throw Errors.consumerNameTooLong(MAX_NAME_LEN);
  }
  const deliverSubject = str(raw, "deliver_subject", bad);
  const push = deliverSubject !== undefined && deliverSubject !== "";
  if (push) {
    if (!isValidSubscribeSubject(deliverSubject!)) throw new ApiError(400, 10112, "invalid push consumer deliver subject");
    if (deliverSubject!.includes("*") || deliverSubject!.includes(">")) throw Errors.consumerDeliverWildcards();
    for (const s of stream.subjects) if (subjectMatches(s, deliverSubject!)) throw Errors.consumerDeliverCycle();
  }
  const deliverPolicy = oneOf(
    raw,
    "deliver_policy",
    ["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"] as const,
    "all",
    bad,
    "deliver policy invalid",
  );
  const optSeq = num(raw, "opt_start_seq", bad);
  const optTime = str(raw, "opt_start_time", bad);
  if (deliverPolicy === "by_start_sequence") {
    if (!optSeq || optSeq <= 0) throw bad("consumer delivery policy is deliver by start sequence, but optional start sequence is not set");
    if (optTime) throw bad("consumer delivery policy is deliver by start sequence, but optional start time is also set");
  } else if (deliverPolicy === "by_start_time") {
    if (!optTime || Number.isNaN(Date.parse(optTime))) throw bad("consumer delivery policy is deliver by start time, but optional start time is not set");
    if (optSeq) throw bad("consumer delivery policy is deliver by start time, but optional start sequence is also set");
  } else if (optSeq || optTime) {
    throw bad(`consumer delivery policy is deliver ${deliverPolicy.replace(/_/g, " ")}, but optional start sequence or time is also set`);
  }
  const ackPolicy = oneOf(raw, "ack_policy", ["none", "all", "explicit"] as const, "none", bad, "consumer ack policy invalid");
  const replay = oneOf(raw, "replay_policy", ["instant", "original"] as const, "instant", bad, "consumer replay policy invalid");
  const filter = str(raw, "filter_subject", bad);
  const rf = raw.filter_subjects;
  let filters: string[] | undefined;
  if (rf !== undefined && rf !== null) {
    if (!Array.isArray(rf) || !rf.every((s) => typeof s === "string")) throw bad("invalid filter_subjects");
    filters = rf as string[];
    if (filters.length === 0) filters = undefined;
  }
  if (filter && filters) throw Errors.consumerDuplicateFilters();
  for (const f of filters ?? (filter ? [filter] : [])) {
    if (f === "") throw Errors.consumerEmptyFilter();
    if (!isValidSubscribeSubject(f)) throw bad("consumer filter subject is not a valid subject");
    if (!stream.subjects.some((s) => subjectsIntersect(s, f))) throw Errors.consumerFilterNotSubset();
  }
  if (filters) {
    for (let i = 0; i < filters.length; i++) {
      for (let j = i + 1; j < filters.length; j++) if (subjectsIntersect(filters[i], filters[j])) throw Errors.consumerOverlappingFilters();
    }
  }
  let ackWait = num(raw, "ack_wait", bad) ?? 0;
  if (ackWait < 0) throw bad("consumer ack wait needs to be positive");
  let backoff: number[] | undefined;
  if (Array.isArray(raw.backoff) && raw.backoff.length > 0) {
    if (!raw.backoff.every((b) => typeof b === "number" && Number.isInteger(b))) throw bad("invalid backoff");
    backoff = raw.backoff as number[];
    if (backoff.some((b) => b <= 0)) throw Errors.consumerBackoffNegative();
  }
  let maxDeliver = num(raw, "max_deliver", bad) ?? 0;
  if (maxDeliver === 0 || maxDeliver < -1) maxDeliver = -1;
  if (backoff && maxDeliver !== -1 && maxDeliver <= backoff.length) throw Errors.consumerBackoff();
  if (ackWait === 0) ackWait = backoff ? backoff[0] : DEFAULT_ACK_WAIT;
  let maxAckPending = num(raw, "max_ack_pending", bad) ?? 0;
  if (maxAckPending === 0) maxAckPending = ackPolicy === "none" ? -1 : stream.consumer_limits.max_ack_pending ?? DEFAULT_MAX_ACK_PENDING;
  if (maxAckPending < -1) maxAckPending = -1;
  const fc = bool(raw, "flow_control", bad);
  const hb = num(raw, "idle_heartbeat", bad);
  let maxWaiting = num(raw, "max_waiting", bad);
  if (push) {
    if (maxWaiting) throw Errors.consumerPushMaxWaiting();
  } else {
    if (hb) throw Errors.consumerHbRequiresPush();
    if (fc) throw Errors.consumerFcRequiresPush();
    if (maxWaiting !== undefined && maxWaiting < 0) throw Errors.consumerMaxWaitingNegative();
    if (!maxWaiting) maxWaiting = DEFAULT_MAX_WAITING;
  }
  if (hb !== undefined && hb !== 0 && hb < 100 * NS_PER_MS) throw Errors.consumerSmallHeartbeat();
  const maxBatch = num(raw, "max_batch", bad);
  if (maxBatch !== undefined && maxBatch < 0) throw Errors.consumerMaxBatchNegative();
  const maxExpires = num(raw, "max_expires", bad);
  if (maxExpires !== undefined && maxExpires !== 0 && maxExpires < NS_PER_MS) throw Errors.consumerMaxExpiresTooSmall();
  const maxBytes = num(raw, "max_bytes", bad);
  let inactive = num(raw, "inactive_threshold", bad);
  if (inactive !== undefined && inactive < 0) throw bad("consumer inactive threshold must be positive");
  if (!durable && !inactive) inactive = stream.consumer_limits.inactive_threshold ?? DEFAULT_INACTIVE_THRESHOLD;
  const replicas = num(raw, "num_replicas", bad) ?? 0;
  if (replicas < 0) throw new ApiError(400, 10133, "replicas count cannot be negative");
  if (replicas > stream.num_replicas) throw Errors.consumerReplicasExceedStream();
  if (stream.retention === "workqueue") {
    if (ackPolicy !== "explicit") throw Errors.consumerWqRequiresExplicitAck();
    if (deliverPolicy !== "all") throw Errors.consumerWqNotDeliverAll();
  }

  const cfg: ConsumerConfig = {
    deliver_policy: deliverPolicy,
    ack_policy: ackPolicy,
    ack_wait: ackWait,
    max_deliver: maxDeliver,
    replay_policy: replay,
    max_ack_pending: maxAckPending,
    num_replicas: replicas,
  };
  if (durable) cfg.durable_name = durable;
  if (name || durable) cfg.name = name || durable;
  const description = str(raw, "description", bad);
  if (description) cfg.description = description;
  if (optSeq) cfg.opt_start_seq = optSeq;
  if (optTime) cfg.opt_start_time = optTime;
  if (backoff) cfg.backoff = backoff;
  if (filter) cfg.filter_subject = filter;
  if (filters) cfg.filter_subjects = filters;
  if (maxWaiting) cfg.max_waiting = maxWaiting;
  if (fc) cfg.flow_control = true;
  if (bool(raw, "headers_only", bad)) cfg.headers_only = true;
  if (maxBatch) cfg.max_batch = maxBatch;
  if (maxExpires) cfg.max_expires = maxExpires;
  if (maxBytes) cfg.max_bytes = maxBytes;
  if (push) cfg.deliver_subject = deliverSubject;
  const group = str(raw, "deliver_group", bad);
  if (group) cfg.deliver_group = group;
  if (hb) cfg.idle_heartbeat = hb;
  if (inactive) cfg.inactive_threshold = inactive;
  if (bool(raw, "mem_storage", bad)) cfg.mem_storage = true;
  const rate = num(raw, "rate_limit_bps", bad);
  if (rate) cfg.rate_limit_bps = rate;
  const sample = str(raw, "sample_freq", bad);
  if (sample) cfg.sample_freq = sample;
  const md = metadata(raw, bad);
  if (md) cfg.metadata = md;
  return cfg;
}

/** Fields a consumer update may change; the rest must stay as they are. */
const UPDATABLE = new Set([
  "description",
  "ack_wait",
  "max_deliver",
  "backoff",
  "max_ack_pending",
  "max_waiting",
  "headers_only",
  "max_batch",
  "max_expires",
  "max_bytes",
  "inactive_threshold",
  "filter_subject",
  "filter_subjects",
  "metadata",
  "sample_freq",
  "rate_limit_bps",
  "deliver_subject",
  "idle_heartbeat",
  "flow_control",
]);

export function consumerUpdateError(old: ConsumerConfig, next: ConsumerConfig): ApiError | null {
  const keys = new Set([...Object.keys(old), ...Object.keys(next)]);
  for (const k of keys) {
    if (UPDATABLE.has(k)) continue;
    const a = (old as unknown as Json)[k];
    const b = (next as unknown as Json)[k];
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      return new ApiError(500, 10012, `consumer ${k.replace(/_/g, " ")} can not be updated`);
    }
  }
  if (isPush(old) !== isPush(next)) return new ApiError(500, 10012, "can not update push consumer to pull based");
  return null;
}

/** Whether some subject could match both patterns. */
export function subjectsIntersect(a: string, b: string): boolean {
  const ta = a.split(".");
  const tb = b.split(".");
  const n = Math.min(ta.length, tb.length);
  for (let i = 0; i < n; i++) {
    if (ta[i] === ">" || tb[i] === ">") return true;
    if (ta[i] === "*" || tb[i] === "*") continue;
    if (ta[i] !== tb[i]) return false;
  }
  return ta.length === tb.length;
}

export function sameJson(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObject(v)) {
    const keys = Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}
