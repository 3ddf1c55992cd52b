/**
 * JetStream's configuration and usage as nats-server reports them in /jsz and
 * in /varz's `jetstream` object. Everything here is read from memory (the
 * logs' in-memory state), so /varz and /metrics stay cheap with many streams.
 */

import type { JetStream } from "../streams/jetstream.js";
import type { JetStreams } from "../streams/jetstreams.js";
import { lostTotals } from "../streams/damage.js";

const MS_TO_NS = 1_000_000;

/**
 * A server without `jetstream { max_mem, max_file }` bounds nothing; -1 says
 * so (JetStream's "unlimited") rather than inventing a number nobody applies
 * (nats-server shows a default it computes from the machine).
 */
export const NO_LIMIT = -1;

/** The server's JetStream limits as configured: -1 for none. */
export function serverLimitsOf(jss: JetStreams): { maxMemory: number; maxStorage: number } {
  const l = jss.options.serverLimits;
  return { maxMemory: l?.maxMemory ?? NO_LIMIT, maxStorage: l?.maxStorage ?? NO_LIMIT };
}

/** nats-server's JetStreamConfig: 2.9's fields, with 2.10's sync_interval / sync_always. */
export function jetStreamConfig(jss: JetStreams): Record<string, unknown> {
  const o = jss.options;
  const limits = serverLimitsOf(jss);
  const config: Record<string, unknown> = { max_memory: limits.maxMemory, max_storage: limits.maxStorage, store_dir: o.storeDir };
  const sync = o.sync ?? "always";
  if (sync === "always") config.sync_always = true;
  else if (sync === "interval" && o.syncIntervalMs !== undefined) config.sync_interval = o.syncIntervalMs * MS_TO_NS;
  return config;
}

export interface JetStreamUsage {
  /** Stored bytes of memory streams and of file streams. */
  memory: number;
  storage: number;
  streams: number;
  consumers: number;
  messages: number;
  bytes: number;
  /** Sequences lost to damage, over every partition. */
  lost: number;
  /** Partitions that refuse appends after a storage error. */
  storageErrors: number;
}

/** Totals over every stream and every partition (a Kafka topic's partitions all count) of the accounts given. */
export function jetStreamUsage(accounts: readonly JetStream[]): JetStreamUsage {
  const u: JetStreamUsage = { memory: 0, storage: 0, streams: 0, consumers: 0, messages: 0, bytes: 0, lost: 0, storageErrors: 0 };
  for (const js of accounts) addUsage(u, js);
  return u;
}

function addUsage(u: JetStreamUsage, js: JetStream): void {
  u.streams += js.streams.size;
  for (const s of js.streams.values()) {
    u.consumers += s.consumers.size;
    for (const p of s.partitions) {
      const st = p.state();
      if (s.config.storage === "memory") u.memory += st.bytes;
      else u.storage += st.bytes;
      u.messages += st.messages;
      u.bytes += st.bytes;
      u.lost += lostTotals(st.lost).messages;
      if (st.error !== null) u.storageErrors++;
    }
  }
}

/** nats-server's JetStreamStats (the part /varz, /jsz and each account detail share), over the accounts given. */
export function jetStreamStats(accounts: readonly JetStream[], u: JetStreamUsage): Record<string, unknown> {
  let total = 0;
  let errors = 0;
  for (const js of accounts) {
    total += js.apiTotal;
    errors += js.apiErrors;
  }
  return {
    memory: u.memory,
    storage: u.storage,
    reserved_memory: 0,
    reserved_storage: 0,
    accounts: accounts.length,
    ha_assets: 0,
    api: { total, errors },
  };
}
