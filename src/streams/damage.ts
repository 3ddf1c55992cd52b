/**
 * What the store reports about damage, in JetStream's shapes: `lost`
 * (sequences destroyed, as nats-server renders them in stream state) and
 * nagare's `storage_error` (a partition that refuses appends until it is
 * reopened). Stream info and /jsz render it through here.
 */

import type { LogState, LostRange } from "../store/log.js";

/**
 * At most this many lost sequences are listed (the lowest ones): a damaged
 * segment can destroy millions, and nats-server's unbounded list would make
 * one answer as large as the damage. `num_lost` gives the whole count and
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
export function damageFields(st: LogState): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const lost = summarizeLost(st.lost);
  if (lost !== null) {
    out.lost = lost.lost;
    out.num_lost = lost.count;
  }
  if (st.error !== null) out.storage_error = st.error;
  return out;
}
