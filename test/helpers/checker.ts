/**
 * The checker of a fault test's history (`history.ts`), Jepsen-style: a
 * pure function of what the clients recorded and of the logs as read in
 * full at the end, once every fault was healed. It says what is wrong, each
 * problem naming its check and the values involved, so a failing seed can
 * be read without re-running it. The checks:
 *
 * - `acked-lost`: an acknowledged record is not in the final log.
 * - `acked-moved`: it is, but not at the log and offset its ack named.
 * - `duplicate`: a value is stored more than once (every producer here is
 *   idempotent, or deduplicated by `Nats-Msg-Id`, unless named in
 *   `atLeastOnce`).
 * - `phantom`: a stored value that no client sent.
 * - `order`: within a log, a record whose send began after another's ack
 *   was stored before it (the log is linearizable: acknowledged order is
 *   log order).
 * - `final-order`: the final read's offsets do not increase.
 * - `read-lost`: a record a reader saw is not at that offset at the end.
 * - `read-diverged`: two reads of one offset saw different records.
 * - `commit-backwards`: a committed offset fetched after a commit (or a
 *   fetch) completed is lower than that commit (or fetch). Kafka lets a
 *   client commit a lower offset; the test's clients never do, which the
 *   check verifies first (`commit-client-backwards`), so that the premise
 *   is explicit.
 */

import type { Op } from "./history.js";

export interface Problem {
  check: string;
  detail: string;
  value?: string;
}

export interface CheckResult {
  ok: boolean;
  problems: Problem[];
  counts: { sent: number; acked: number; failed: number; stored: number; reads: number; commits: number };
}

/** Every log read in full at the end: offset and value of each record, in log order. */
export type FinalLogs = ReadonlyMap<string, ReadonlyArray<{ offset: number; value: string }>>;

export function checkHistory(ops: readonly Op[], final: FinalLogs, o: { atLeastOnce?: ReadonlySet<string> } = {}): CheckResult {
  const problems: Problem[] = [];
  const sends = new Map<string, Extract<Op, { type: "send" }>>();
  const acks = new Map<string, Extract<Op, { type: "ack" }>>();
  let failed = 0;
  for (const op of ops) {
    if (op.type === "send") sends.set(op.value, op);
    else if (op.type === "ack") acks.set(op.value, op);
    else if (op.type === "fail") failed++;
  }

  // Where each value is at the end.
  const stored = new Map<string, Array<{ log: string; offset: number }>>();
  let storedCount = 0;
  for (const [log, records] of final) {
    let prev = -Infinity;
    for (const r of records) {
      storedCount++;
      if (r.offset <= prev) problems.push({ check: "final-order", detail: `${log}: offset ${r.offset} after ${prev}`, value: r.value });
      prev = r.offset;
      let at = stored.get(r.value);
      if (at === undefined) stored.set(r.value, (at = []));
      at.push({ log, offset: r.offset });
    }
  }

  for (const [value, where] of stored) {
    const send = sends.get(value);
    if (send === undefined) {
      problems.push({ check: "phantom", detail: `${value} stored at ${fmt(where)} but never sent`, value });
      continue;
    }
    if (where.length > 1 && !(o.atLeastOnce?.has(send.client) ?? false)) problems.push({ check: "duplicate", detail: `${value} (from ${send.client}) stored ${where.length} times: ${fmt(where)}`, value });
  }

  for (const [value, ack] of acks) {
    const where = stored.get(value);
    if (where === undefined) {
      problems.push({ check: "acked-lost", detail: `${value} acknowledged to ${ack.client} at ${ack.log}@${ack.offset} is not in the final logs`, value });
      continue;
    }
    if (!where.some((w) => w.log === ack.log && w.offset === ack.offset)) problems.push({ check: "acked-moved", detail: `${value} acknowledged at ${ack.log}@${ack.offset}, stored at ${fmt(where)}`, value });
  }

  checkOrder(sends, acks, problems);
  const reads = checkReads(ops, final, problems);
  const commits = checkCommits(ops, problems);
  return { ok: problems.length === 0, problems, counts: { sent: sends.size, acked: acks.size, failed, stored: storedCount, reads, commits } };
}

/** Per log: sweeping sends in time order, every ack that completed before a send began must be at a lower offset. */
function checkOrder(sends: Map<string, Extract<Op, { type: "send" }>>, acks: Map<string, Extract<Op, { type: "ack" }>>, problems: Problem[]): void {
  const byLog = new Map<string, Array<{ send: number; ack: number; offset: number; value: string }>>();
  for (const [value, ack] of acks) {
    const send = sends.get(value);
    if (send === undefined) continue;
    let list = byLog.get(ack.log);
    if (list === undefined) byLog.set(ack.log, (list = []));
    list.push({ send: send.t, ack: ack.t, offset: ack.offset, value });
  }
  for (const [log, list] of byLog) {
    const bySend = [...list].sort((a, b) => a.send - b.send);
    const byAck = [...list].sort((a, b) => a.ack - b.ack);
    let i = 0;
    let highest: (typeof list)[number] | undefined;
    for (const w of bySend) {
      while (i < byAck.length && byAck[i].ack < w.send) {
        if (highest === undefined || byAck[i].offset > highest.offset) highest = byAck[i];
        i++;
      }
      if (highest !== undefined && w.offset <= highest.offset) {
        problems.push({ check: "order", detail: `${log}: ${w.value} sent after ${highest.value} was acknowledged at offset ${highest.offset}, but acknowledged at ${w.offset}`, value: w.value });
      }
    }
  }
}

function checkReads(ops: readonly Op[], final: FinalLogs, problems: Problem[]): number {
  const finalAt = new Map<string, string>();
  for (const [log, records] of final) for (const r of records) finalAt.set(`${log}@${r.offset}`, r.value);
  const seen = new Map<string, string>();
  let reads = 0;
  for (const op of ops) {
    if (op.type !== "read") continue;
    reads++;
    const at = `${op.log}@${op.offset}`;
    const before = seen.get(at);
    if (before !== undefined && before !== op.value) problems.push({ check: "read-diverged", detail: `${at}: ${op.client} read ${op.value}, an earlier read saw ${before}`, value: op.value });
    else if (before === undefined) {
      seen.set(at, op.value);
      const now = finalAt.get(at);
      if (now !== op.value) problems.push({ check: "read-lost", detail: `${at}: ${op.client} read ${op.value}; at the end ${now === undefined ? "nothing is there" : `it holds ${now}`}`, value: op.value });
    }
  }
  return reads;
}

function checkCommits(ops: readonly Op[], problems: Problem[]): number {
  type C = Extract<Op, { type: "commit" | "committed" }>;
  const byKey = new Map<string, C[]>();
  let commits = 0;
  for (const op of ops) {
    if (op.type !== "commit" && op.type !== "committed") continue;
    if (op.type === "commit") commits++;
    const k = `${op.group} ${op.log}`;
    let list = byKey.get(k);
    if (list === undefined) byKey.set(k, (list = []));
    list.push(op);
  }
  for (const [k, list] of byKey) {
    // The premise: the test's clients commit in order.
    const asked = list.filter((c) => c.type === "commit").sort((a, b) => a.t0 - b.t0);
    for (let i = 1; i < asked.length; i++) {
      if (asked[i].offset < asked[i - 1].offset) problems.push({ check: "commit-client-backwards", detail: `${k}: ${asked[i].client} committed ${asked[i].offset} after ${asked[i - 1].offset}: the test's clients must commit in order` });
    }
    // Each fetch must see at least what completed before it began: acknowledged commits and earlier fetches.
    const byEnd = [...list].sort((a, b) => a.t - b.t);
    const fetches = list.filter((c) => c.type === "committed").sort((a, b) => a.t0 - b.t0);
    let i = 0;
    let floor: C | undefined;
    for (const f of fetches) {
      while (i < byEnd.length && byEnd[i].t < f.t0) {
        if (floor === undefined || byEnd[i].offset > floor.offset) floor = byEnd[i];
        i++;
      }
      if (floor !== undefined && f.offset < floor.offset) {
        problems.push({ check: "commit-backwards", detail: `${k}: ${f.client} fetched committed offset ${f.offset}, but ${floor.type === "commit" ? "a commit" : "a fetch"} of ${floor.offset} by ${floor.client} had completed before` });
      }
    }
  }
  return commits;
}

function fmt(where: Array<{ log: string; offset: number }>): string {
  return where.map((w) => `${w.log}@${w.offset}`).join(", ");
}

/** A result for people: counts, then the first problems of each check. */
export function describeResult(r: CheckResult, perCheck = 5): string {
  const lines = [`sent ${r.counts.sent}, acknowledged ${r.counts.acked}, failed ${r.counts.failed}, stored ${r.counts.stored}, reads ${r.counts.reads}, commits ${r.counts.commits}: ${r.ok ? "ok" : `${r.problems.length} problems`}`];
  const shown = new Map<string, number>();
  for (const p of r.problems) {
    const n = shown.get(p.check) ?? 0;
    shown.set(p.check, n + 1);
    if (n < perCheck) lines.push(`  ${p.check}: ${p.detail}`);
    else if (n === perCheck) lines.push(`  ${p.check}: ... (${r.problems.filter((x) => x.check === p.check).length} in all)`);
  }
  return lines.join("\n");
}
