/**
 * Stream and consumer configurations in JetStream's JSON shape (snake_case,
 * durations in nanoseconds), checked and completed with nats-server's
 * defaults. The completed form is what is stored, echoed and compared: a
 * create with the same configuration is idempotent, and a client can send
 * back what it was given (ordered consumers do).
 */

import { isValidSubscribeSubject, subjectMatches, subjectsIntersect } from "../subjects/subject.js";
import { SubjectTransform, TransformError } from "../subjects/transform.js";
import { PatternIndex, WalkBudgetExceeded, type WalkBudget } from "../subjects/pattern-index.js";
import { ApiError, Errors } from "./errors.js";
import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import { MAX_START_SEQ } from "../store/log.js";

export const NS_PER_MS = 1_000_000;
const DEFAULT_DUPLICATE_WINDOW = 120_000 * NS_PER_MS;
export const DEFAULT_ACK_WAIT = 30_000 * NS_PER_MS;
export const DEFAULT_MAX_ACK_PENDING = 1000;
export const DEFAULT_MAX_WAITING = 512;
export const DEFAULT_INACTIVE_THRESHOLD = 5_000 * NS_PER_MS;
const MAX_NAME_LEN = 255;
const MAX_DESCRIPTION_LEN = 4096;
const MAX_METADATA_LEN = 128 * 1024;

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
  /** Applied to a published subject before anything else (nats-server 2.10). */
  subject_transform?: { src: string; dest: string };
  placement?: { cluster?: string; tags?: string[] };
  /** Published again, with stream headers, once stored. */
  republish?: { src: string; dest: string; headers_only?: boolean };
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
  if (name === "") return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 32 || c === 0x2e || c === 0x2a || c === 0x3e || c === 0x2f || c === 0x5c || c === 0x7f) return false;
  }
  return true;
}

/*
 * Readers for JSON fields. nats-server decodes a config into Go types, so a
 * value of the wrong type, a fraction, or a number outside the field's Go
 * type (int64 for counts and durations, int32 for max_msg_size, uint64 for
 * sequences) never reaches its checks: the request fails as "invalid JSON"
 * (10025). The readers do the same.
 */

const INT64 = 2 ** 63;
const INT32 = 2 ** 31;
const UINT64 = 2 ** 64;

function int(cfg: Json, key: string, range: "int64" | "int32" | "uint64" = "int64"): number | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) throw Errors.invalidJson();
  const [lo, hi] = range === "int64" ? [-INT64, INT64] : range === "int32" ? [-INT32, INT32] : [0, UINT64];
  if (v < lo || v >= hi) throw Errors.invalidJson();
  return v;
}

function bool(cfg: Json, key: string): boolean | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw Errors.invalidJson();
  return v;
}

function str(cfg: Json, key: string): string | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw Errors.invalidJson();
  return v;
}

function strings(cfg: Json, key: string): string[] | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) throw Errors.invalidJson();
  return v as string[];
}

function object(cfg: Json, key: string): Json | undefined {
  const v = cfg[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw Errors.invalidJson();
  return v;
}

/** An enumerated string; an unknown value is a decoding error in nats-server. */
function oneOf<T extends string>(cfg: Json, key: string, allowed: readonly T[], dflt: T): T {
  const v = str(cfg, key);
  if (v === undefined || v === "") return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw Errors.invalidJson();
  return v as T;
}

/** Metadata as nats-server bounds it: string values, at most 128 KiB of keys and values. */
function metadata(cfg: Json, tooLong: () => ApiError): Record<string, string> | undefined {
  const m = object(cfg, "metadata");
  if (m === undefined) return undefined;
  const out: Record<string, string> = {};
  let size = 0;
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== "string") throw Errors.invalidJson();
    out[k] = v;
    size += Buffer.byteLength(k) + Buffer.byteLength(v);
  }
  if (size > MAX_METADATA_LEN) throw tooLong();
  return Object.keys(out).length === 0 ? undefined : out;
}

/** -1 for unlimited, as nats-server stores it for an absent or 0 limit; other negatives are kept as given (and mean unlimited too). */
function limit(v: number | undefined): number {
  return v === undefined || v === 0 ? -1 : v;
}

/** A `{src, dest}` pair as JetStream's JSON has it (subject_transform, republish). */
function transformPair(raw: Json, key: string): { src: string; dest: string; headers_only?: boolean } | undefined {
  const o = object(raw, key);
  if (o === undefined) return undefined;
  const pair: { src: string; dest: string; headers_only?: boolean } = { src: str(o, "src") ?? "", dest: str(o, "dest") ?? "" };
  if (bool(o, "headers_only")) pair.headers_only = true;
  return pair;
}

export function normalizeStreamConfig(raw: unknown): StreamConfig {
  const bad = Errors.streamConfig;
  if (!isObject(raw)) throw bad("stream configuration invalid");
  const name = str(raw, "name") ?? "";
  if (/[/\\]/.test(name)) throw Errors.streamNameSeparators();
  if (!isValidName(name)) throw bad("stream name is required and can not contain '.', '*', '>'");
  // In bytes, as nats-server counts (and as a file name is bounded).
  if (Buffer.byteLength(name) > MAX_NAME_LEN) throw bad(`stream name is too long, maximum allowed is ${MAX_NAME_LEN}`);
  const description = str(raw, "description");
  if (description !== undefined && description.length > MAX_DESCRIPTION_LEN) {
    throw bad(`stream description is too long, maximum allowed is ${MAX_DESCRIPTION_LEN}`);
  }
  const md = metadata(raw, () => bad(`stream metadata exceeds maximum size of ${MAX_METADATA_LEN} bytes`));
  if (raw.mirror !== undefined && raw.mirror !== null) {
    // A configuration nats-server refuses whatever it supports gets its refusal, not "not supported".
    if (Array.isArray(raw.subjects) && raw.subjects.length > 0) throw Errors.mirrorWithSubjects();
    throw bad("stream mirrors are not supported");
  }
  if (Array.isArray(raw.sources) && raw.sources.length > 0) throw bad("stream sources are not supported");
  // Placement picks servers in a cluster: a single server accepts and keeps it, as nats-server does.
  const placementRaw = object(raw, "placement");
  let placement: StreamConfig["placement"];
  if (placementRaw !== undefined) {
    placement = {};
    const cluster = str(placementRaw, "cluster");
    const tags = strings(placementRaw, "tags");
    if (cluster) placement.cluster = cluster;
    if (tags && tags.length > 0) placement.tags = tags;
  }
  let subjects = strings(raw, "subjects") ?? [];
  if (subjects.length === 0) subjects = [name];
  const seen = new Set<string>();
  for (const s of subjects) {
    if (!isValidSubscribeSubject(s)) throw bad("invalid subject");
    if (seen.has(s)) throw bad("duplicate subjects detected");
    seen.add(s);
  }
  // In nats-server's order: the replica count first, then the durations.
  const replicas = int(raw, "num_replicas") ?? 0;
  if (replicas > 5) throw bad("maximum replicas is 5");
  if (replicas < 0) throw Errors.replicasNegative();
  const maxAge = int(raw, "max_age") ?? 0;
  let dup = int(raw, "duplicate_window") ?? 0;
  if (dup === 0) dup = maxAge !== 0 && maxAge < DEFAULT_DUPLICATE_WINDOW ? maxAge : DEFAULT_DUPLICATE_WINDOW;
  if (maxAge > 0 && maxAge < 100 * NS_PER_MS) throw bad("max age needs to be >= 100ms");
  if (dup < 0) throw bad("duplicates window can not be negative");
  if (maxAge !== 0 && dup > maxAge) throw bad("duplicates window can not be larger then max age");
  if (dup > 0 && dup < 100 * NS_PER_MS) throw bad("duplicates window needs to be >= 100ms");
  const retention = oneOf(raw, "retention", ["limits", "interest", "workqueue"] as const, "limits");
  const discard = oneOf(raw, "discard", ["old", "new"] as const, "old");
  const storage = oneOf(raw, "storage", ["file", "memory"] as const, "file");
  const compression = oneOf(raw, "compression", ["none", "s2"] as const, "none");
  const denyPurge = bool(raw, "deny_purge") ?? false;
  const allowRollup = bool(raw, "allow_rollup_hdrs") ?? false;
  if (denyPurge && allowRollup) throw bad("roll-ups require the purge permission");
  const maxPer = limit(int(raw, "max_msgs_per_subject"));
  const discardNewPer = bool(raw, "discard_new_per_subject");
  if (discardNewPer) {
    if (discard !== "new") throw bad("discard new per subject requires discard new policy to be set");
    if (maxPer <= 0) throw bad("discard new per subject requires max msgs per subject > 0");
  }
  const firstSeq = int(raw, "first_seq", "uint64");
  // nats-server starts a stream at any uint64; nagare's sequences are doubles, exact only so far.
  if (firstSeq !== undefined && firstSeq > MAX_START_SEQ) throw bad(`first sequence can not be larger than ${MAX_START_SEQ}`);
  const cl = object(raw, "consumer_limits");
  const consumerLimits: StreamConfig["consumer_limits"] = {};
  if (cl !== undefined) {
    const it = int(cl, "inactive_threshold");
    const map = int(cl, "max_ack_pending");
    if (it !== undefined && it !== 0) consumerLimits.inactive_threshold = it;
    if (map !== undefined && map !== 0) consumerLimits.max_ack_pending = map;
  }
  const transform = transformPair(raw, "subject_transform");
  if (transform !== undefined) {
    delete transform.headers_only;
    checkTransform(transform.src, transform.dest, (e) => Errors.streamCreate(`stream subject transform from '${transform.src}' to '${transform.dest}': ${e}`));
  }
  const republish = transformPair(raw, "republish");
  if (republish !== undefined) {
    if (republish.src === "") republish.src = ">";
    if (subjects.some((s) => subjectsIntersect(republish.dest, s))) throw bad("stream configuration for republish destination forms a cycle");
    if (republish.dest === "" || republish.dest.startsWith(CLUSTER_INTERNAL_PREFIX)) throw bad(`stream configuration for republish with transform from '${republish.src}' to '${republish.dest}' not valid`);
    checkTransform(republish.src, republish.dest, () => bad(`stream configuration for republish with transform from '${republish.src}' to '${republish.dest}' not valid`));
  }
  const cfg: StreamConfig = {
    name,
    subjects,
    retention,
    max_consumers: limit(int(raw, "max_consumers")),
    max_msgs: limit(int(raw, "max_msgs")),
    max_bytes: limit(int(raw, "max_bytes")),
    max_age: maxAge,
    max_msgs_per_subject: maxPer,
    max_msg_size: limit(int(raw, "max_msg_size", "int32")),
    discard,
    storage,
    num_replicas: Math.max(1, replicas),
    duplicate_window: dup,
    compression,
    sealed: bool(raw, "sealed") ?? false,
    deny_delete: bool(raw, "deny_delete") ?? false,
    deny_purge: denyPurge,
    allow_rollup_hdrs: allowRollup,
    allow_direct: bool(raw, "allow_direct") ?? false,
    mirror_direct: bool(raw, "mirror_direct") ?? false,
    consumer_limits: consumerLimits,
  };
  if (description !== undefined && description !== "") cfg.description = description;
  if (discardNewPer) cfg.discard_new_per_subject = true;
  if (bool(raw, "allow_msg_ttl")) cfg.allow_msg_ttl = true;
  if (bool(raw, "no_ack")) cfg.no_ack = true;
  if (firstSeq !== undefined && firstSeq > 0) cfg.first_seq = firstSeq;
  if (transform !== undefined && transform.dest !== "") cfg.subject_transform = transform;
  if (republish !== undefined) cfg.republish = republish;
  if (placement !== undefined) cfg.placement = placement;
  if (md) cfg.metadata = md;
  return cfg;
}

/** What nagare cannot honour of a valid stream configuration: refused, never ignored. */
export function unsupportedStreamFeature(cfg: StreamConfig, clustered = false): ApiError | null {
  // nats-server's single-server check, made before anything else is looked at; a cluster replicates (stream-replicas.ts).
  if (cfg.num_replicas > 1 && !clustered) return Errors.replicasNotSupported();
  if (cfg.compression !== "none") return Errors.streamConfig("stream compression is not supported");
  if (cfg.allow_msg_ttl) return Errors.streamConfig("per-message TTL is not supported yet");
  return null;
}

function checkTransform(src: string, dest: string, error: (why: string) => ApiError): void {
  try {
    SubjectTransform.parse(src, dest);
  } catch (e) {
    if (e instanceof TransformError) throw error(e.message);
    throw e;
  }
}

/**
 * Subjects of one stream that overlap, as nats-server refuses them on a
 * create or update (a message on two of them would be stored once for
 * each). Checked on requests only: a stream an earlier version accepted
 * is still loaded.
 */
export function ownOverlapError(cfg: StreamConfig): ApiError | null {
  const pair = firstOverlap(cfg.subjects, overlapBudget());
  return pair === null ? null : Errors.streamConfig(`subject "${cfg.subjects[pair[0]]}" overlaps with "${cfg.subjects[pair[1]]}"`);
}

/**
 * Index nodes one request's overlap checks may visit (some 0.3 s of
 * the event loop, which every client shares): literal subjects visit a
 * few each, so 80,000 of them take a fraction of it; a list built so that
 * a `*` meets many literals at the same token visits every one of them
 * for each such pattern, and is refused past it.
 */
const OVERLAP_CHECK_NODES = 8_000_000;

function overlapBudget(): WalkBudget {
  return { nodes: OVERLAP_CHECK_NODES };
}

/**
 * Runs a request's overlap checks (each walk given `budget`) within one
 * budget of index work (OVERLAP_CHECK_NODES): past it, the request is
 * refused with 10052 rather than hold the broker.
 */
export function withOverlapBudget<R>(check: (budget: WalkBudget) => R): R {
  const budget = overlapBudget();
  return withinBudget(() => check(budget));
}

/** Whether any of `subjects` intersects any of `others`, through an index of `others` (a walk within `budget`). */
export function anyIntersecting(subjects: readonly string[], others: Iterable<string>, budget: WalkBudget): boolean {
  const index = new PatternIndex<true>();
  for (const o of others) index.add(o, true);
  return subjects.some((s) => index.intersecting(s, budget).size > 0);
}

/** Runs an overlap check within its budget: past it, the request is refused rather than hold the broker. */
function withinBudget<R>(check: () => R): R {
  try {
    return check();
  } catch (err) {
    if (err instanceof WalkBudgetExceeded) throw Errors.streamConfig("subjects too many or too alike to check for overlaps: name fewer, or fewer with wildcards");
    throw err;
  }
}

/**
 * The first pair (i, j), i < j, of `subjects` that intersect, in the order
 * comparing every pair would find it, calling `visit(i)` before subject i
 * is looked at; null when none do. Indexed by token (PatternIndex), not
 * every pair compared: one request's list fills a megabyte (80,000
 * subjects), and comparing every pair held the event loop, and the
 * broker, for minutes.
 */
function firstOverlap(subjects: readonly string[], budget: WalkBudget, visit?: (i: number) => void): [number, number] | null {
  const index = new PatternIndex<number>();
  subjects.forEach((s, i) => index.add(s, i));
  return withinBudget(() => {
    for (let i = 0; i < subjects.length; i++) {
      visit?.(i);
      // A subject before i that intersects this one would have been found with it already.
      let j = Infinity;
      for (const k of index.intersecting(subjects[i], budget)) if (k > i && k < j) j = k;
      if (j !== Infinity) return [i, j];
    }
    return null;
  });
}

/** Subject spaces of JetStream's own traffic (API, acks, flow control), as nats-server names them. */
const JETSTREAM_SPACES = ["$JS.>", "$JSC.>", "$NRG.>"];

/**
 * A stream subject nats-server 2.10 refuses on a create or update: one that
 * captures JetStream's or the system's own traffic must not acknowledge
 * what it stores (its acks would be captured in turn), except advisories
 * (`$JS.EVENT.>`, the usual way to keep MAX_DELIVERIES events) and account
 * events (`$SYS.ACCOUNT.>`); a leading wildcard overlaps `$JS.>` too;
 * capturing everything also needs one replica. Checked on requests only:
 * a stream an earlier version accepted is still loaded. (The cluster's own
 * `$NG.` traffic never reaches a stream, whatever it captures.)
 */
export function apiOverlapError(cfg: StreamConfig): ApiError | null {
  const bad = Errors.streamConfig;
  const noAck = cfg.no_ack === true;
  for (const subject of cfg.subjects) {
    if (subject === ">") {
      if (!noAck) return bad("capturing all subjects requires no-ack to be true");
      if (cfg.num_replicas > 1) return bad("capturing all subjects requires replicas of 1");
    }
    if (noAck) continue;
    if (JETSTREAM_SPACES.some((space) => subjectsIntersect(subject, space)) && !subjectMatches("$JS.EVENT.>", subject)) {
      return bad("subjects that overlap with jetstream api require no-ack to be true");
    }
    if (subjectsIntersect(subject, "$SYS.>") && !subjectMatches("$SYS.ACCOUNT.>", subject)) return bad("subjects that overlap with system api require no-ack to be true");
  }
  return null;
}

/** What nats-server refuses on a create only (an update may seal a stream). */
export function createOnlyChecks(raw: Json): void {
  if (raw.sealed === true) throw Errors.streamConfig("stream configuration for create can not be sealed");
  if (raw.mirror_direct === true && (raw.mirror === undefined || raw.mirror === null)) throw Errors.streamConfig("stream has no mirror but does have mirror direct");
}

/** A stream sealed by an update keeps what it holds, as nats-server makes sure: no ageing out, no deletes, purges, roll-ups or new messages. */
export function sealAdjusted(cfg: StreamConfig): StreamConfig {
  if (!cfg.sealed) return cfg;
  return { ...cfg, max_age: 0, discard: "new", deny_delete: true, deny_purge: true, allow_rollup_hdrs: false };
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

/** `accountMaxAckPending`: the account's max_ack_pending limit (-1: none), a consumer's default when lower and its ceiling. */
export function normalizeConsumerConfig(raw: unknown, stream: StreamConfig, accountMaxAckPending = -1): ConsumerConfig {
  const bad = Errors.consumerInvalidPolicy;
  if (!isObject(raw)) throw Errors.consumerConfigRequired();
  const durable = str(raw, "durable_name");
  const name = str(raw, "name");
  if (durable && name && durable !== name) throw Errors.consumerDurableNameMismatch();
  for (const n of [durable, name]) {
    if (n === undefined || n === "") continue;
    if (/[/\\]/.test(n)) throw Errors.consumerNameSeparators();
    if (Buffer.byteLength(n) > MAX_NAME_LEN) throw Errors.consumerNameTooLong(MAX_NAME_LEN);
    if (!isValidName(n)) throw Errors.consumerBadDurableName();
  }
  // A single server has one replica to give (checked before anything else, as nats-server does).
  const replicas = int(raw, "num_replicas") ?? 0;
  if (replicas > 1) throw Errors.replicasNotSupported();
  if (replicas < 0) throw Errors.replicasNegative();
  const description = str(raw, "description");
  if (description !== undefined && description.length > MAX_DESCRIPTION_LEN) throw Errors.consumerDescriptionTooLong(MAX_DESCRIPTION_LEN);
  const deliverSubject = str(raw, "deliver_subject");
  const push = deliverSubject !== undefined && deliverSubject !== "";
  if (push) {
    if (deliverSubject!.includes("*") || deliverSubject!.includes(">")) throw Errors.consumerDeliverWildcards();
    // The cluster's own subjects: deliveries there would reach another node's internal requests.
    if (!isValidSubscribeSubject(deliverSubject!) || deliverSubject!.startsWith(CLUSTER_INTERNAL_PREFIX)) throw Errors.consumerInvalidDeliverSubject();
    for (const s of stream.subjects) if (subjectMatches(s, deliverSubject!)) throw Errors.consumerDeliverCycle();
  }
  const deliverPolicy = oneOf(raw, "deliver_policy", ["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"] as const, "all");
  const optSeq = int(raw, "opt_start_seq", "uint64");
  const optTime = str(raw, "opt_start_time");
  // A start time is a Go time.Time: anything that is not RFC 3339 does not decode.
  if (optTime !== undefined && (!RFC3339.test(optTime) || Number.isNaN(Date.parse(optTime)))) throw Errors.invalidJson();
  const ackPolicy = oneOf(raw, "ack_policy", ["none", "all", "explicit"] as const, "none");
  const replay = oneOf(raw, "replay_policy", ["instant", "original"] as const, "instant");
  const filter = str(raw, "filter_subject");
  let filters = strings(raw, "filter_subjects");
  if (filters !== undefined && filters.length === 0) filters = undefined;
  let ackWait = int(raw, "ack_wait") ?? 0;
  let backoff = (raw.backoff === undefined || raw.backoff === null ? undefined : (int64s(raw.backoff) as number[] | undefined)) ?? undefined;
  if (backoff !== undefined && backoff.length === 0) backoff = undefined;
  let maxDeliver = int(raw, "max_deliver") ?? 0;
  if (maxDeliver === 0) maxDeliver = -1;
  const fc = bool(raw, "flow_control");
  const hb = int(raw, "idle_heartbeat");
  let maxWaiting = int(raw, "max_waiting");
  const maxBatch = int(raw, "max_batch");
  const maxExpires = int(raw, "max_expires");
  const maxBytes = int(raw, "max_bytes");
  let inactive = int(raw, "inactive_threshold");
  const rate = int(raw, "rate_limit_bps", "uint64");
  const sample = str(raw, "sample_freq");
  const md = metadata(raw, () => Errors.consumerMetadataTooLong(`${MAX_METADATA_LEN / 1024}KB`));

  // Defaults, then checks, in nats-server's order (the first failing check names the error).
  if (backoff) ackWait = backoff[0];
  if (ackWait === 0) ackWait = DEFAULT_ACK_WAIT;
  let maxAckPending = int(raw, "max_ack_pending") ?? 0;
  if (maxAckPending === 0) maxAckPending = stream.consumer_limits.max_ack_pending ?? 0;
  if (!inactive) inactive = stream.consumer_limits.inactive_threshold;
  if (maxAckPending === 0) maxAckPending = ackPolicy === "none" ? -1 : accountMaxAckPending > 0 ? Math.min(DEFAULT_MAX_ACK_PENDING, accountMaxAckPending) : DEFAULT_MAX_ACK_PENDING;
  if (!push && !maxWaiting) maxWaiting = DEFAULT_MAX_WAITING;
  if (backoff && maxDeliver !== -1 && backoff.length >= maxDeliver) throw Errors.consumerBackoff();
  if (push) {
    if (maxWaiting) throw Errors.consumerPushMaxWaiting();
    if (ackPolicy === "none" && (int(raw, "max_ack_pending") ?? 0) > 0) throw Errors.consumerMaxPendingNeedsAck();
    if (hb !== undefined && hb > 0 && hb < 100 * NS_PER_MS) throw Errors.consumerSmallHeartbeat();
  } else {
    if (ackPolicy === "none" && stream.retention === "workqueue") throw Errors.consumerPullRequiresAck();
    if (rate !== undefined && rate > 0) throw Errors.consumerPullWithRateLimit();
    if (maxWaiting !== undefined && maxWaiting < 0) throw Errors.consumerMaxWaitingNegative();
    if (hb !== undefined && hb > 0) throw Errors.consumerHbRequiresPush();
    if (fc) throw Errors.consumerFcRequiresPush();
    if (maxBatch !== undefined && maxBatch < 0) throw Errors.consumerMaxBatchNegative();
    if (maxExpires !== undefined && maxExpires !== 0 && maxExpires < NS_PER_MS) throw Errors.consumerMaxExpiresTooSmall();
  }
  const limits = stream.consumer_limits;
  if (limits.max_ack_pending !== undefined && limits.max_ack_pending > 0 && maxAckPending > limits.max_ack_pending) {
    throw Errors.consumerMaxAckPendingExcess(limits.max_ack_pending);
  }
  if (accountMaxAckPending > 0 && maxAckPending > accountMaxAckPending) throw Errors.consumerMaxAckPendingExcess(accountMaxAckPending);
  if (limits.inactive_threshold !== undefined && limits.inactive_threshold > 0 && inactive !== undefined && inactive > limits.inactive_threshold) {
    throw Errors.consumerInactiveThresholdExcess(limits.inactive_threshold);
  }
  if (filter && filters) throw Errors.consumerDuplicateFilters();
  for (const f of filters ?? []) if (f === "") throw Errors.consumerEmptyFilter();
  const all = filters ?? (filter ? [filter] : []);
  const checkValid = (i: number): void => {
    if (!isValidSubscribeSubject(all[i])) throw Errors.streamConfig("invalid subject");
  };
  const budget = overlapBudget();
  if (firstOverlap(all, budget, checkValid) !== null) throw Errors.consumerOverlappingFilters();
  const startError = startPolicyError(deliverPolicy, optSeq ?? 0, optTime, all.length > 0);
  if (startError !== null) throw bad(startError);
  if (sample !== undefined && sample !== "") {
    const digits = sample.endsWith("%") ? sample.slice(0, -1) : sample;
    if (!/^[-+]?\d+$/.test(digits)) throw Errors.consumerInvalidSampling(`strconv.Atoi: parsing ${JSON.stringify(digits)}: invalid syntax`);
    if (Number(digits) < 0) throw Errors.consumerInvalidSampling("<nil>");
  }
  if (fc && !hb) throw Errors.consumerFcNeedsHeartbeats();
  // Checks nats-server makes against the stream once the configuration is valid on its own.
  if (all.length > 0) {
    const captured = new PatternIndex<number>();
    stream.subjects.forEach((s, i) => captured.add(s, i));
    const outside = withinBudget(() => all.some((f) => captured.intersecting(f, budget).size === 0));
    if (outside) throw Errors.consumerFilterNotSubset();
  }
  if (stream.retention === "workqueue") {
    if (ackPolicy !== "explicit") throw Errors.consumerWqRequiresExplicitAck();
    if (deliverPolicy !== "all") throw Errors.consumerWqNotDeliverAll();
  }
  // Beyond nats-server: values that cannot mean anything are refused rather than kept.
  if (ackWait < 0) throw Errors.consumerAckWaitNegative();
  if (backoff && backoff.some((b) => b <= 0)) throw Errors.consumerBackoffNegative();
  if (inactive !== undefined && inactive < 0) throw bad("consumer inactive threshold must be positive");
  if (!durable && !inactive) inactive = DEFAULT_INACTIVE_THRESHOLD;
  if (maxDeliver < -1) maxDeliver = -1;
  if (maxAckPending < -1) maxAckPending = -1;

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
  if (description) cfg.description = description;
  if (optSeq) cfg.opt_start_seq = optSeq;
  if (optTime) cfg.opt_start_time = optTime;
  if (backoff) cfg.backoff = backoff;
  if (filter) cfg.filter_subject = filter;
  if (filters) cfg.filter_subjects = filters;
  if (maxWaiting) cfg.max_waiting = maxWaiting;
  if (fc) cfg.flow_control = true;
  if (bool(raw, "headers_only")) cfg.headers_only = true;
  if (maxBatch) cfg.max_batch = maxBatch;
  if (maxExpires) cfg.max_expires = maxExpires;
  if (maxBytes) cfg.max_bytes = maxBytes;
  if (push) cfg.deliver_subject = deliverSubject;
  const group = str(raw, "deliver_group");
  if (group) cfg.deliver_group = group;
  if (hb) cfg.idle_heartbeat = hb;
  if (inactive) cfg.inactive_threshold = inactive;
  if (bool(raw, "mem_storage")) cfg.mem_storage = true;
  if (rate) cfg.rate_limit_bps = rate;
  if (sample) cfg.sample_freq = sample;
  if (md) cfg.metadata = md;
  return cfg;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** A list of Go durations (int64 nanoseconds), or invalid JSON. */
function int64s(v: unknown): number[] {
  if (!Array.isArray(v)) throw Errors.invalidJson();
  return v.map((x, i) => int({ [i]: x }, String(i))!);
}

/** nats-server's checks of the deliver policy against the start options. */
function startPolicyError(policy: DeliverPolicy, optSeq: number, optTime: string | undefined, filtered: boolean): string | null {
  const words = policy === "by_start_sequence" ? "by start sequence" : policy === "by_start_time" ? "by start time" : policy.replace(/_/g, " ");
  const alsoSet = (what: string): string => `consumer delivery policy is deliver ${words}, but optional start ${what} is also set`;
  const notSet = (what: string): string => `consumer delivery policy is deliver ${words}, but optional ${what} is not set`;
  switch (policy) {
    case "by_start_sequence":
      if (optSeq === 0) return notSet("start sequence");
      if (optTime !== undefined) return alsoSet("time");
      return null;
    case "by_start_time":
      if (optTime === undefined) return notSet("start time");
      if (optSeq !== 0) return alsoSet("sequence");
      return null;
    default:
      if (optSeq > 0) return alsoSet("sequence");
      if (optTime !== undefined) return alsoSet("time");
      if (policy === "last_per_subject" && !filtered) return notSet("filter subject");
      return null;
  }
}

/** Fields a consumer update may change; the rest must stay as they are. */
const UPDATABLE = new Set([
  "description",
  "ack_wait",
  "max_deliver",
  "backoff",
  "max_ack_pending",
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
]);

/** The fields nats-server checks first on a consumer update, in its order, with its texts. */
const FIXED_AS_NATS: ReadonlyArray<[string, string]> = [
  ["deliver_policy", "deliver policy"],
  ["opt_start_seq", "start sequence"],
  ["opt_start_time", "start time"],
  ["ack_policy", "ack policy"],
  ["replay_policy", "replay policy"],
  ["idle_heartbeat", "heart beats"],
  ["flow_control", "flow control"],
  ["max_waiting", "max waiting"],
];

export function consumerUpdateError(old: ConsumerConfig, next: ConsumerConfig): ApiError | null {
  for (const [k, text] of FIXED_AS_NATS) {
    if (JSON.stringify((old as unknown as Json)[k]) !== JSON.stringify((next as unknown as Json)[k])) {
      return new ApiError(500, 10012, `${text} can not be updated`);
    }
  }
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
