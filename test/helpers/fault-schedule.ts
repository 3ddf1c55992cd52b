/**
 * A random schedule of faults drawn from a seeded generator (`random.ts`):
 * the same seed gives the same faults at the same offsets from the start,
 * so a failing run is replayed from the seed it printed. Faults follow one
 * another (one at a time, each healed before the next), with a quiet gap
 * between them in which the load runs on a healthy cluster.
 */

export type FaultKind =
  /** SIGSTOP a node, SIGCONT it after `holdMs` (kept shorter than its lease). */
  | "pause"
  /** Reset the route between two nodes (they dial again at once). */
  | "cut-route"
  /** Nothing passes between two nodes for `holdMs`. */
  | "partition-route"
  /** Every byte between two nodes held 20–200 ms, for `holdMs`. */
  | "delay-route"
  /** kill -9 the etcd leader, restart it after `holdMs`. */
  | "kill-etcd-leader"
  /** A node cut off from every etcd member for `holdMs` (shorter than its lease). */
  | "partition-etcd"
  /** kill -9 a node, restart it after `holdMs`, on the same data. */
  | "kill-node"
  /** kill -9 the node leading `stream` (found when the fault starts), restart it after `holdMs`. */
  | "kill-leader"
  /** SIGSTOP the node leading `stream` for `holdMs`, longer than its lease, then SIGCONT. */
  | "pause-leader"
  /** Cut the node leading `stream` off from its peers' routes and from every etcd member for `holdMs`, longer than its lease (its clients still reach it). */
  | "isolate-leader"
  /** Fill the disk of a node that follows `stream` (ENOSPC on every write) for `holdMs`, then free it and restart the node (storage errors are sticky). */
  | "disk-full-follower"
  /** Fill the disk of the node leading `stream` for `holdMs`, then free it; the node is not restarted: its failed logs reopen by themselves. */
  | "disk-full-leader";

/** The kinds aimed at a stream's leader: `node` is whichever node leads `stream` when the fault starts. */
export const LEADER_KINDS: readonly FaultKind[] = ["kill-leader", "pause-leader", "isolate-leader", "disk-full-leader"];
/** The kinds aimed at a follower of a stream: `node` is one of its replicas that does not lead it when the fault starts. */
export const FOLLOWER_KINDS: readonly FaultKind[] = ["disk-full-follower"];
/** The kinds that fill a node's disk: they need a file system of each node's own. */
export const DISK_KINDS: readonly FaultKind[] = ["disk-full-follower", "disk-full-leader"];

export interface Fault {
  /** Milliseconds from the start of the run. */
  at: number;
  kind: FaultKind;
  node: string;
  /** The stream whose leader a leader fault aims at. */
  stream?: string;
  /** The other node, for route faults. */
  peer?: string;
  holdMs: number;
  /** For delay-route. */
  delayMs?: number;
}

/**
 * How long each kind holds, [min, max) milliseconds. Pauses and etcd
 * partitions stay well under a 3 s lease (fenced at 4/5 of it); a leader's
 * pause or isolation outlasts a 2 s lease (the replicated scenario's), some
 * ending before a follower has taken over (lease plus rank delay), most after.
 */
const HOLD: Record<FaultKind, [number, number]> = {
  pause: [200, 1200],
  "cut-route": [0, 1],
  "partition-route": [500, 3000],
  "delay-route": [500, 3000],
  "kill-etcd-leader": [500, 3000],
  "partition-etcd": [200, 1200],
  "kill-node": [0, 2000],
  "kill-leader": [0, 3000],
  "pause-leader": [2500, 5000],
  "isolate-leader": [2500, 6000],
  "disk-full-follower": [1000, 5000],
  // Some end before the leader hands over (its failed log reopened), most after.
  "disk-full-leader": [1000, 6000],
};

/** The quiet time between two faults, [min, max) milliseconds. */
const GAP: [number, number] = [500, 2000];

export function faultSchedule(random: () => number, o: { durationMs: number; kinds: FaultKind[]; nodes: string[]; streams?: string[] }): Fault[] {
  const between = (r: [number, number]): number => Math.floor(r[0] + random() * (r[1] - r[0]));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
  const out: Fault[] = [];
  let t = between(GAP);
  for (;;) {
    const kind = pick(o.kinds);
    const node = pick(o.nodes);
    const others = o.nodes.filter((n) => n !== node);
    const f: Fault = { at: t, kind, node, holdMs: between(HOLD[kind]) };
    if (kind === "cut-route" || kind === "partition-route" || kind === "delay-route") f.peer = pick(others);
    if (kind === "delay-route") f.delayMs = between([20, 200]);
    if (LEADER_KINDS.includes(kind) || FOLLOWER_KINDS.includes(kind)) {
      if (o.streams === undefined || o.streams.length === 0) throw new Error(`${kind} needs streams to aim at`);
      f.stream = pick(o.streams);
    }
    if (f.at + f.holdMs > o.durationMs) break;
    out.push(f);
    t = f.at + f.holdMs + between(GAP);
  }
  return out;
}

/** One line per fault, for the log of a run. */
export function describeFault(f: Fault): string {
  const who = f.kind === "kill-etcd-leader" ? "" : f.stream !== undefined ? `${FOLLOWER_KINDS.includes(f.kind) ? "a follower" : "leader"} of ${f.stream}` : f.peer === undefined ? f.node : `${f.node}<->${f.peer}`;
  return `+${(f.at / 1000).toFixed(1)}s ${f.kind}${who === "" ? "" : ` ${who}`}${f.holdMs > 0 ? ` for ${f.holdMs} ms` : ""}${f.delayMs !== undefined ? ` (delay ${f.delayMs} ms)` : ""}`;
}
