/**
 * An account's JetStream limits at work (nats-server's
 * JetStreamAccountLimits, single-server semantics of 2.9):
 *
 * - streams: at most `maxStreams` (0 and -1: no limit), checked on every
 *   create before the stream is looked up, as nats-server checks it;
 * - memory and storage: a stream's `max_bytes` (times its partitions) is
 *   reserved at create and update, and the reservations of a storage type
 *   plus the new one must fit in `maxMemory` / `maxStorage` (a stream
 *   without `max_bytes` reserves 1 byte, so a limit of 0 refuses it); each
 *   message stored must also fit: what the account's streams of that type
 *   hold (stored, and on its way to the log) plus the message;
 * - consumers: per stream, the lower of the stream's `max_consumers` and
 *   the account's, as nats-server applies the account's `max_consumers`;
 * - `max_bytes_required`, the largest `max_bytes` per storage type, and
 *   `max_ack_pending` (a consumer's default and ceiling).
 *
 * In a cluster the reservations are the account's in the whole cluster, as
 * nats-server's meta leader counts its stream assignments
 * (tieredStreamAndReservationCount): every placed stream's `max_bytes` for
 * each copy of each partition (`placedReserving`), judged when a stream is
 * placed or its reservation grows (cluster-api.ts, kafka-cluster.ts). A
 * node still judges its own streams too, a part of those. What the streams
 * hold is the account's in the whole cluster too: a publish counts what
 * the other nodes last told they hold (usage.ts, JetStream.remoteHeld).
 *
 * Errors are nats-server's codes and texts.
 */

import type { JetStreamLimits } from "../core/accounts.js";
import type { PlacedStream } from "./cluster-streams.js";
import { ApiError, Errors } from "./errors.js";
import type { StreamConfig } from "./config.js";

export type AccountLimits = Required<JetStreamLimits>;

export const LimitErrors = {
  maxStreams: (): ApiError => new ApiError(400, 10027, "maximum number of streams reached"),
  memory: (): ApiError => new ApiError(500, 10028, "insufficient memory resources available"),
  storage: (): ApiError => new ApiError(500, 10047, "insufficient storage resources available"),
  accountResources: (): ApiError => new ApiError(400, 10002, "resource limits exceeded for account"),
  maxBytesRequired: (): ApiError => new ApiError(400, 10113, "account requires a stream config to have max bytes set"),
  maxStreamBytes: (): ApiError => new ApiError(400, 10122, "stream max bytes exceeds account limit max stream bytes"),
  notEnabledForAccount: (): ApiError => new ApiError(503, 10039, "JetStream not enabled for account"),
};

/** What a stream holds against its account's memory or storage: max_bytes of each partition, or 1 byte when unbounded (nats-server's). */
export function reservationOf(config: Pick<StreamConfig, "max_bytes">, partitions: number): number {
  return config.max_bytes > 0 ? config.max_bytes * partitions : 1;
}

/** What a stream's reservation is made of (a stream, or one being made or changed). */
export interface Reserving {
  readonly config: Pick<StreamConfig, "storage" | "max_bytes">;
  readonly partitions: { length: number };
}

/** The `max_bytes` reservations of the streams of one storage type (those without `max_bytes` reserve none here). */
export function reservedBytes(streams: Iterable<Reserving>, storage: StreamConfig["storage"]): number {
  let reserved = 0;
  for (const s of streams) if (s.config.storage === storage && s.config.max_bytes > 0) reserved += s.config.max_bytes * s.partitions.length;
  return reserved;
}

/** The copies a placement keeps of its partitions, all together: each partition's replicas (a reassignment's target while one runs), one without replication. */
export function placedCopies(p: Pick<PlacedStream, "leaders" | "replicas" | "reassigning">): number {
  let n = 0;
  for (let i = 0; i < p.leaders.length; i++) n += p.reassigning?.[i]?.target.length ?? p.replicas?.[i]?.length ?? 1;
  return n;
}

/**
 * A placed stream's reservation as the cluster counts it: its configuration's
 * max_bytes for every copy of every partition (nats-server: max_bytes x
 * replicas). Read from the placement's config (a normalized StreamConfig, or
 * a Kafka topic's, which leaves defaults out).
 */
export function placedReserving(p: Pick<PlacedStream, "config" | "leaders" | "replicas" | "reassigning">): Reserving {
  const c = (typeof p.config === "object" && p.config !== null ? p.config : {}) as { storage?: unknown; max_bytes?: unknown };
  const maxBytes = typeof c.max_bytes === "number" && Number.isFinite(c.max_bytes) ? c.max_bytes : -1;
  return { config: { storage: c.storage === "memory" ? "memory" : "file", max_bytes: maxBytes }, partitions: { length: placedCopies(p) } };
}

/**
 * Why a stream of `copies` copies of its partitions in all does not fit the
 * account in the cluster, beside its other placed streams `others`, or
 * null (streamLimitError over the cluster's reservations). `previous`: the
 * cluster reservation of the stream before an update.
 */
export function clusterLimitError(limits: AccountLimits, config: StreamConfig, copies: number, others: readonly Pick<PlacedStream, "config" | "leaders" | "replicas" | "reassigning">[], previous = 0): ApiError | null {
  // Read only when the account bounds the stream's storage type.
  return streamLimitError(limits, config, copies, placedReservings(others), previous);
}

function* placedReservings(placed: Iterable<Pick<PlacedStream, "config" | "leaders" | "replicas" | "reassigning">>): Generator<Reserving> {
  for (const p of placed) yield placedReserving(p);
}

/** What the streams of one storage type hold (stored, and on the way to their logs). */
export function heldBytes(streams: Iterable<{ readonly config: StreamConfig; readonly heldBytes: number }>, storage: StreamConfig["storage"]): number {
  let held = 0;
  for (const s of streams) if (s.config.storage === storage) held += s.heldBytes;
  return held;
}

/**
 * Why a stream configuration does not fit the account, or null. `others`:
 * the account's other streams (the one being updated left out); `previous`:
 * its reservation before an update (0 for a create): a stream whose
 * reservation does not grow always fits.
 */
export function streamLimitError(limits: AccountLimits, config: StreamConfig, partitions: number, others: Iterable<Reserving>, previous = 0): ApiError | null {
  const refused = configLimitError(limits, config);
  if (refused !== null) return refused;
  const memory = config.storage === "memory";
  const max = memory ? limits.maxMemory : limits.maxStorage;
  const wanted = reservationOf(config, partitions);
  if (max < 0 || wanted <= previous) return null;
  if (reservedBytes(others, config.storage) + wanted > max) return memory ? LimitErrors.memory() : LimitErrors.storage();
  return null;
}

/**
 * Why the account's limits refuse a stream configuration in itself, whatever
 * the other streams and wherever its copies are (every node judges a copy so:
 * a change in a cluster is judged here before its placement changes), or null.
 */
export function configLimitError(limits: AccountLimits, config: StreamConfig): ApiError | null {
  const maxStreamBytes = config.storage === "memory" ? limits.memoryMaxStreamBytes : limits.storageMaxStreamBytes;
  if (limits.maxBytesRequired && config.max_bytes <= 0) return LimitErrors.maxBytesRequired();
  if (maxStreamBytes > 0 && config.max_bytes > maxStreamBytes) return LimitErrors.maxStreamBytes();
  if (config.max_consumers > 0 && limits.maxConsumers > 0 && config.max_consumers > limits.maxConsumers) return Errors.maxConsumers();
  return null;
}

/** The most consumers a stream may have under its account's limits (0: no limit). */
export function consumerLimit(limits: AccountLimits, config: StreamConfig): number {
  let max = config.max_consumers;
  if (max <= 0 || (limits.maxConsumers > 0 && limits.maxConsumers < max)) max = limits.maxConsumers;
  return max > 0 ? max : 0;
}

/** Whether the account bounds what its streams of some storage type hold: then every publish is checked. */
export function boundsStorage(limits: AccountLimits): boolean {
  return limits.maxMemory >= 0 || limits.maxStorage >= 0;
}
