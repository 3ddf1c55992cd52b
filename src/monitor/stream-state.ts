/**
 * A stream's state as nats-server renders it in /jsz (and stream info), with
 * what the store reports about damage: `lost` (sequences destroyed, in
 * nats-server's shape) and nagare's `storage_error` (a partition that refuses
 * appends until it is reopened).
 */

import { isoTime, type Stream } from "../streams/stream.js";
import type { LogState, LostRange } from "../store/log.js";

/**
 * At most this many lost sequences are listed (the lowest ones): a damaged
 * segment can destroy millions, and nats-server's unbounded list would make
 * one /jsz answer as large as the damage. `num_lost` gives the whole count and
 * `lost.bytes` covers every lost sequence, listed or not.
 */
export const LOST_LIST_MAX = 1000;

export interface LostSummary {
  /** nats-server's `lost`: `{ msgs: [seq...], bytes }`. */
  lost: { msgs: number[]; bytes: number };
  count: number;
}

/** Sequences and bytes over every lost range. */
export function lostTotals(ranges: readonly LostRange[]): { messages: number; bytes: number } {
  let messages = 0;
  let bytes = 0;
  for (const r of ranges) {
    messages += r.to - r.from + 1;
    bytes += r.bytes;
  }
  return { messages, bytes };
}

export function summarizeLost(ranges: readonly LostRange[]): LostSummary | null {
  if (ranges.length === 0) return null;
  const msgs: number[] = [];
  for (const r of [...ranges].sort((a, b) => a.from - b.from)) {
    for (let seq = r.from; seq <= r.to && msgs.length < LOST_LIST_MAX; seq++) msgs.push(seq);
  }
  const totals = lostTotals(ranges);
  return { lost: { msgs, bytes: totals.bytes }, count: totals.messages };
}

/** The damage fields of one partition's state, in render order; empty when there is none. */
function damage(st: LogState): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const lost = summarizeLost(st.lost);
  if (lost !== null) {
    out.lost = lost.lost;
    out.num_lost = lost.count;
  }
  if (st.error !== null) out.storage_error = st.error;
  return out;
}

/**
 * nats-server's StreamState for partition 0 (the sequence space JetStream
 * clients address), read from memory except the first and last message times.
 */
export async function streamState(stream: Stream): Promise<Record<string, unknown>> {
  const st = await stream.state();
  const state: Record<string, unknown> = {
    messages: st.messages,
    bytes: st.bytes,
    first_seq: st.firstSeq,
    first_ts: isoTime(st.firstTime),
    last_seq: st.lastSeq,
    last_ts: isoTime(st.lastTime),
  };
  if (st.subjects > 0) state.num_subjects = st.subjects;
  if (st.deleted > 0) state.num_deleted = st.deleted;
  Object.assign(state, damage(st));
  state.consumer_count = stream.consumers.size;
  return state;
}

/** Every partition's counts and damage, for streams with more than one (Kafka topics); null otherwise. */
export function partitionStates(stream: Stream): Array<Record<string, unknown>> | null {
  if (stream.partitions.length < 2) return null;
  return stream.partitions.map((p, partition) => {
    const st = p.state();
    const out: Record<string, unknown> = { partition, messages: st.messages, bytes: st.bytes, first_seq: st.firstSeq, last_seq: st.lastSeq };
    if (st.deleted > 0) out.num_deleted = st.deleted;
    return Object.assign(out, damage(st));
  });
}
