/**
 * The history of a fault test, Jepsen-style: every operation a client
 * invoked and how it ended, in the order this process saw them, with
 * monotonic times. Clients write it; `checker.ts` judges it. A log is one
 * partition (`<stream or topic>/<partition>`), an offset a position in it
 * (Kafka offset, JetStream sequence); values are unique strings the test
 * made, so that every record found can be traced to the send that made it.
 */

import { performance } from "node:perf_hooks";

export type Op =
  /** A producer asked to write `value` (the log is known only once acknowledged, for keyed Kafka sends). */
  | { type: "send"; t: number; client: string; value: string }
  /** The write was acknowledged at `log`/`offset`. */
  | { type: "ack"; t: number; client: string; value: string; log: string; offset: number }
  /** The write failed (refused or timed out): it may or may not have been stored. */
  | { type: "fail"; t: number; client: string; value: string; error: string }
  /** A reader saw `value` at `log`/`offset`. */
  | { type: "read"; t: number; client: string; log: string; offset: number; value: string }
  /** A consumer group's commit of `offset` (the next to read) on `log` was acknowledged; `t0` when it was asked. */
  | { type: "commit"; t: number; t0: number; client: string; group: string; log: string; offset: number }
  /** A client fetched `group`'s committed offset on `log` (-1: none); `t0` when it asked. */
  | { type: "committed"; t: number; t0: number; client: string; group: string; log: string; offset: number }
  /** A fault began or ended (for the reader of a failing history: what was going on). */
  | { type: "nemesis"; t: number; what: string };

/** Ops without their time: the recorder stamps it. */
export type Unstamped = Op extends infer O ? (O extends Op ? Omit<O, "t"> : never) : never;

export class History {
  readonly ops: Op[] = [];

  /** Monotonic milliseconds: what op times are in. */
  now(): number {
    return performance.now();
  }

  add(op: Unstamped): void {
    this.ops.push({ ...op, t: this.now() } as Op);
  }

  /** The ops, one JSON line each: what a failing run prints or writes for its reader. */
  toJsonLines(ops: readonly Op[] = this.ops): string {
    return ops.map((o) => JSON.stringify({ ...o, t: Math.round(o.t * 1000) / 1000 })).join("\n");
  }

  /** The ops that name `value`, and the nemesis events around them: the excerpt a report quotes. */
  about(value: string): Op[] {
    const mine = this.ops.filter((o) => "value" in o && o.value === value);
    if (mine.length === 0) return [];
    const from = mine[0].t;
    const to = mine[mine.length - 1].t;
    return this.ops.filter((o) => ("value" in o && o.value === value) || (o.type === "nemesis" && o.t >= from - 5000 && o.t <= to + 5000));
  }
}
