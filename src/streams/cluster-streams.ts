/**
 * Streams in a cluster: each node follows the cluster's placements and
 * keeps its local streams in step with them. A placement naming this node
 * among its partition leaders is created here from the placement's
 * configuration, with one partition per leader (a Kafka topic spread over
 * three nodes has a copy, with every partition, on each of them; each node
 * stores only what the partitions it leads receive). A placement removed
 * deletes the local copy.
 *
 * At start, the streams found on disk are matched with the placements: one
 * with no placement that was never placed is adopted (this node leads it: a
 * single node turned into a cluster keeps its streams); one placed on other
 * nodes only, or made for a placement that is gone (deleted while this node
 * was away), is not served here and its files are kept
 * (`JetStream.notServed`, shown in /jsz). A copy made for another placement
 * than the stream's (`Stream.placed`) is moved out of the way. A copy whose
 * placement's removal named this node as away (not live then: the delete
 * was served elsewhere) is deleted instead.
 *
 * This module knows placements only through `StreamDirectory`
 * (cluster/placement.ts is one): streams/ does not depend on etcd.
 */

import { randomBytes } from "node:crypto";
import type { Logger } from "../util/log.js";
import type { JetStream } from "./jetstream.js";
import { normalizeStreamConfig, sameJson } from "./config.js";
import type { JetStreams } from "./jetstreams.js";
import type { Stream } from "./stream.js";

/** Where a stream's partitions live, as the cluster records it (cluster/placement.ts's StreamPlacement). */
export interface PlacedStream {
  account: string;
  stream: string;
  /** The node leading each partition; `leaders[0]` answers the stream's JetStream API. */
  leaders: string[];
  tags: string[];
  cluster: string;
  subjects: string[];
  origin: "jetstream" | "kafka";
  /** The stream's configuration, from which each node leading a partition creates its copy. */
  config: unknown;
  /**
   * The partition being moved and the node it goes to (stream-move.ts),
   * which hosts a copy it does not lead until the move flips `leaders`; read
   * it with moveOf (a string: the first version's, partition 0).
   */
  moving?: PartitionMove | string;
  /** Per partition: the nodes holding a copy, the leader epoch and the in-sync replicas (absent: one replica; cluster/placement.ts). */
  replicas?: string[][];
  epochs?: number[];
  isr?: string[][];
  /** The fewest in-sync replicas a write waiting for them is taken with (a Kafka topic's min.insync.replicas); absent: a majority of the replicas. */
  minIsr?: number;
  /** Per partition, a reassignment of its replicas under way (null: none; cluster/placement.ts). */
  reassigning?: Array<{ original: string[]; target: string[] } | null>;
  /** When the placement was made (ISO 8601, the placing node's clock). */
  created?: string;
}

/**
 * The partitions a stream keeps taking publishes for while its replication
 * roles change: those led here before and still, and, if replicated, with
 * their gate in place. A replicated partition without one (just added, or
 * the node just started) would acknowledge a write stored only here.
 */
export function keptLeading(led: readonly boolean[], before: readonly boolean[] | null, gated: (p: number) => boolean): boolean[] {
  return led.map((l, p) => l && (before === null || before[p] === true) && gated(p));
}

/** Whether partition `p` of `stream` is replicated by `placed` but has no gate here yet (its role is being set up). */
function lacksGate(placed: PlacedStream, stream: Stream, p: number): boolean {
  return replicasOf(placed, p).length > 1 && stream.replicaGate(p) === undefined;
}

/** The nodes holding a copy of partition `p` (its leader alone when not replicated). */
export function replicasOf(placed: Pick<PlacedStream, "leaders" | "replicas">, p: number): readonly string[] {
  return placed.replicas?.[p] ?? [placed.leaders[p]];
}

/** Whether `node` holds a copy of some partition of the stream, led or followed. */
export function hosts(placed: Pick<PlacedStream, "leaders" | "replicas">, node: string): boolean {
  return placed.leaders.includes(node) || (placed.replicas?.some((set) => set.includes(node)) ?? false);
}

export interface PartitionMove {
  partition: number;
  to: string;
  /** Which move: absent in moves recorded before ids (cluster/placement.ts). */
  id?: string;
}

/** A new move of `partition` to `to`, with an id of its own. */
export function newMove(partition: number, to: string): PartitionMove {
  return { partition, to, id: randomBytes(6).toString("hex") };
}

/** Whether `m` is the move `id` names (a move without id, or an ask without one, matches by partition and target alone). */
export function sameMove(m: PartitionMove | undefined, partition: number, to: string, id: string | undefined): boolean {
  return m !== undefined && m.partition === partition && m.to === to && (id === undefined || m.id === undefined || m.id === id);
}

/**
 * Partition `p` of a replicated placement starts going to replicas `target`
 * (preferred leader first), as Kafka reassigns: the target's new nodes
 * join its replicas in a new epoch (they copy it and enter the ISR once
 * caught up), listed first as Kafka lists them (the preferred leader is
 * then the target's), and `reassigning` records where it goes, for its
 * leader to end it (reassignmentEnded) once every target node is in sync.
 * A reassignment that replaces one under way drops at once the nodes only
 * the earlier one added (not its leader).
 */
export function withReassignment<T extends PlacedStream>(pl: T, p: number, target: readonly string[]): T {
  const original = pl.reassigning?.[p]?.original ?? [...replicasOf(pl, p)];
  const leader = pl.leaders[p];
  const kept = replicasOf(pl, p).filter((n) => original.includes(n) || target.includes(n) || n === leader);
  return withReplicas(pl, p, [...target, ...kept.filter((n) => !target.includes(n))], true, { original, target: [...target] });
}

/** Partition `p` of a replicated placement with replicas `replicas` and no reassignment (the ISR kept to them; `bump`: in a new epoch). */
export function reassignmentEnded<T extends PlacedStream>(pl: T, p: number, replicas: readonly string[], bump: boolean): T {
  const next = withReplicas(pl, p, [...replicas], bump, null);
  if (next.reassigning!.every((r) => r === null)) delete next.reassigning;
  return next;
}

/** Partition `p` with replicas `replicas` (its ISR kept to them), `bump`: in a new epoch, and `reassigning` its reassignment. */
function withReplicas<T extends PlacedStream>(pl: T, p: number, replicas: string[], bump: boolean, reassigning: { original: string[]; target: string[] } | null): T {
  return {
    ...pl,
    replicas: pl.leaders.map((_, i) => (i === p ? replicas : [...replicasOf(pl, i)])),
    isr: (pl.isr ?? pl.leaders.map((_, i) => [...replicasOf(pl, i)])).map((set, i) => (i === p ? set.filter((n) => replicas.includes(n)) : set)),
    epochs: (pl.epochs ?? pl.leaders.map(() => 1)).map((e, i) => (i === p && bump ? e + 1 : e)),
    reassigning: (pl.reassigning ?? pl.leaders.map(() => null)).map((r, i) => (i === p ? reassigning : r)),
  };
}

/** The move a placement records, if any. */
export function moveOf(p: Pick<PlacedStream, "moving">): PartitionMove | undefined {
  const m = p.moving;
  if (m === undefined) return undefined;
  return typeof m === "string" ? { partition: 0, to: m } : m;
}

export interface PlaceRequest {
  partitions: number;
  tags?: string[];
  cluster?: string;
  spread: boolean;
  subjects: string[];
  origin: PlacedStream["origin"];
  config: unknown;
  /** Copies of each partition (num_replicas); 1 when absent. */
  replicas?: number;
  /** The minimum ISR to record (see PlacedStream.minIsr); absent: a majority. */
  minIsr?: number;
  /** Judges the account's other placed streams before each attempt to record this one: throws to refuse (a limit, an overlap). */
  admit?: (others: readonly PlacedStream[]) => void;
}

/**
 * The cluster's placements as streams/ needs them. Reads come from memory;
 * changes may throw NoSuitablePeersError, FencedError or
 * MetadataUnavailableError (told apart by `name`: see errors in
 * cluster-api.ts).
 */
export interface StreamDirectory {
  readonly self: string;
  readonly clusterName: string;
  get(account: string, stream: string): { placement: PlacedStream; revision: number } | undefined;
  list(account?: string): PlacedStream[];
  isLive(node: string): boolean;
  /** Hears every change of the live members and of this node's lease; returns what stops it. */
  onMembers(listener: () => void): () => void;
  /** The live nodes with their `server_tags`. */
  nodes(): Array<{ name: string; tags: string[]; draining?: boolean; kafka?: boolean }>;
  /** `count` live nodes with `tags` for more replicas of a partition, none in `exclude`, least loaded first (NoSuitablePeersError when too few fit). */
  moreReplicas(count: number, tags: readonly string[], exclude: ReadonlySet<string>): string[];
  /** Leaders for a placement among the live nodes not excluded, least loaded first (NoSuitablePeersError when none fits). */
  choose(r: { partitions: number; tags?: string[]; cluster?: string; spread: boolean }, exclude?: ReadonlySet<string>): string[];
  place(account: string, stream: string, r: PlaceRequest): Promise<{ placement: PlacedStream; created: boolean; revision: number }>;
  adopt(account: string, stream: string, partitions: number, subjects: string[], origin: PlacedStream["origin"], config: unknown): Promise<PlacedStream>;
  /**
   * Removes the placement, whether or not its nodes are live; those that are not are named under `deleted/` (see
   * deletedAway) in the same change.
   */
  remove(account: string, stream: string): Promise<void>;
  /** Whether this node, without its lease, still takes writes for the streams of one replica it leads (a grace: see Membership). */
  writesInGrace?(): boolean;
  /** The nodes that were not live when the placement of `stream` made at `created` was removed: each deletes its copy when back. */
  deletedAway?(account: string, stream: string, created: string): string[];
  /** This node deleted its copy of that stream: it is no longer named. */
  forgetDeleted?(account: string, stream: string, created: string): Promise<void>;
  /** The removals naming `node` among the nodes away (see deletedAway). */
  deletedNaming?(node: string): Array<{ account: string; stream: string; created: string }>;
  /**
   * `unregistered`: nodes whose registration in etcd must be absent when the change is applied (ConcurrentChangeError if
   * not). A change of subjects, or one `judged` (its storage reservation grows), is judged by `admit` against the
   * account's other streams in the cluster's one order of its creates and such updates (throws to refuse), as `place`'s
   * admit is.
   */
  update(account: string, stream: string, change: (p: PlacedStream) => PlacedStream, unregistered?: readonly string[], admit?: (others: readonly PlacedStream[]) => void, judged?: boolean): Promise<unknown>;
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean>;
  /** `resync`: the change was found by a full read (etcd compacted, or restored from an older backup), not seen as it happened. */
  onChange(listener: (account: string, stream: string, placement: PlacedStream | undefined, resync: boolean) => void): void;
}

/**
 * Why a stream is settled: found at start, its placement changed, its
 * placement was removed, or found missing by a full read of the metadata
 * (then the local copy is set aside, not deleted: an etcd restored from an
 * older backup must not delete streams).
 */
type Cause = "start" | "changed" | "removed" | "vanished";

/** A failed settle is tried again after this, doubling up to RETRY_MAX_MS. */
const RETRY_MS = 500;
const RETRY_MAX_MS = 30_000;

export class ClusterStreams {
  /** The last settle of each `<account>/<stream>` still running: one at a time per stream. */
  private readonly ops = new Map<string, Promise<void>>();
  /**
   * A settle to try again, by `<account>/<stream>`: its timer (null while
   * it is being tried), the failures in a row (its back-off) and the failed
   * settle's cause.
   */
  private readonly retries = new Map<string, { timer: NodeJS.Timeout | null; failures: number; cause: Cause }>();
  private closed = false;
  /** When this instance started: a stream placed before it with no copy here had its files removed (or its disk replaced). */
  private readonly startedAt = Date.now();

  private constructor(
    readonly jetstreams: JetStreams,
    readonly directory: StreamDirectory,
    private readonly log: Logger,
  ) {}

  /**
   * Matches every account's local streams with the placements, then
   * follows placement changes and accounts whose JetStream is turned on
   * later. Resolves once the streams found at start are settled.
   */
  static async start(jetstreams: JetStreams, directory: StreamDirectory, log: Logger): Promise<ClusterStreams> {
    const cs = new ClusterStreams(jetstreams, directory, log);
    directory.onChange((account, stream, placement, resync) => {
      // A copy whose placement went (or was replaced by another stream's of its name) takes no more writes from now:
      // the settle that deletes it comes later, and this node may hold its lease again meanwhile (back from a fence).
      const local = jetstreams.get(account)?.streams.get(stream);
      if (local !== undefined && local.leaseHeld !== null && (placement === undefined || (placement.created !== undefined && local.placed !== undefined && placement.created !== local.placed))) local.unplaced = true;
      void cs.settle(account, stream, placement !== undefined ? "changed" : resync ? "vanished" : "removed").catch(() => undefined);
      for (const l of cs.placementListeners) l(account, stream, placement);
    });
    jetstreams.changeListeners.add((account) => {
      if (jetstreams.get(account) !== undefined) void cs.settleAccount(account);
    });
    jetstreams.attachCluster(cs);
    await Promise.all(jetstreams.all().map((js) => cs.settleAccount(js.account.name)));
    // In the background: a start waits for no etcd write of this.
    void cs.forgetCopiesNotHere();
    return cs;
  }

  /**
   * At start, once the copies found here are settled: a removal naming this node away whose copy is not here (its disk
   * lost or replaced, its directory removed by hand) would else be named for ever, one more key in etcd per such
   * delete. Only for an account whose streams this node has read: a copy of another may still be on its disk.
   */
  private async forgetCopiesNotHere(): Promise<void> {
    for (const d of this.directory.deletedNaming?.(this.self) ?? []) {
      const js = this.jetstreams.get(d.account);
      if (js === undefined) continue;
      const local = js.streams.get(d.stream);
      if ((local !== undefined && local.placed === d.created) || js.notServed.has(d.stream) || js.unloadable.has(d.stream)) continue;
      await this.forget(d.account, d.stream, d.created);
    }
  }

  close(): void {
    this.closed = true;
  }

  get self(): string {
    return this.directory.self;
  }

  /**
   * Settles a stream now (after any settle of it still running): resolves
   * once the local copy matches its placement, as far as it can. A caller
   * that placed a stream awaits this before it answers.
   */
  settle(account: string, stream: string, cause: Cause = "changed"): Promise<void> {
    const key = `${account}/${stream}`;
    const prev = this.ops.get(key) ?? Promise.resolve();
    const run = prev.then(() => this.apply(account, stream, cause));
    const tail = run.then(
      () => this.settled(account, stream, cause),
      (err: Error) => {
        this.log.error(`cluster: stream ${stream} of account ${account}: ${err.message}`);
        this.retry(account, stream, cause);
      },
    );
    this.ops.set(key, tail);
    void tail.then(() => {
      if (this.ops.get(key) === tail) this.ops.delete(key);
    });
    return run;
  }

  /**
   * Settles a stream again after a settle failed (etcd or the disk refusing
   * for a moment), sooner the first times: left as it is, a stream found on
   * disk would take no publish until its placement next changed.
   */
  private retry(account: string, stream: string, cause: Cause): void {
    if (this.closed) return;
    const key = `${account}/${stream}`;
    const prev = this.retries.get(key);
    // One retry per stream, of its latest failure: an older one's cause may no longer hold (a "start" adoption of a
    // stream deleted since would place it again).
    if (prev !== undefined && prev.timer !== null) clearTimeout(prev.timer);
    const failures = (prev?.failures ?? 0) + 1;
    const timer = setTimeout(() => {
      const entry = this.retries.get(key);
      if (entry?.timer !== timer) return;
      // Kept (without a timer) while the retry runs: its failure counts on from here. Deleted, every retry was the
      // first, and a settle that kept failing was tried and logged every RETRY_MS for as long as it failed.
      entry.timer = null;
      if (!this.closed) void this.settle(account, stream, cause).catch(() => undefined);
    }, Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** Math.min(failures - 1, 10)));
    timer.unref();
    this.retries.set(key, { timer, failures, cause });
  }

  /**
   * A settle succeeded: a retry waiting is no longer needed once the stream
   * is placed (any settle follows the placement), or when it was for this
   * very cause; one for another cause of an unplaced stream (a removal
   * after a start) still is.
   */
  private settled(account: string, stream: string, cause: Cause): void {
    const key = `${account}/${stream}`;
    const waiting = this.retries.get(key);
    if (waiting === undefined) return;
    if (waiting.cause !== cause && this.directory.get(account, stream) === undefined) return;
    if (waiting.timer !== null) clearTimeout(waiting.timer);
    this.retries.delete(key);
  }

  /**
   * Whether partition `p` of `stream` is replicated by its placement but
   * has no gate here yet (its role is being set up): a write taken now
   * would be acknowledged on this node alone.
   */
  awaitsGate(account: string, stream: Stream, p: number): boolean {
    const placed = this.directory.get(account, stream.config.name)?.placement;
    return placed !== undefined && lacksGate(placed, stream, p);
  }

  /**
   * The settles of `stream` under way when the placement names this node
   * leader of partition `p` (null otherwise): the last of them takes the
   * partition up here, or finds it handed on. A publish to it waits for
   * them rather than be dropped: the old leader gave the partition up, and
   * the other replicas follow.
   */
  takingUp(account: string, name: string, p: number): Promise<void> | null {
    if (this.ops.size === 0) return null;
    const pending = this.ops.get(`${account}/${name}`);
    if (pending === undefined) return null;
    return this.directory.get(account, name)?.placement.leaders[p] === this.self ? pending : null;
  }

  /** An account's local streams and placements, all settled. */
  private async settleAccount(account: string): Promise<void> {
    const js = this.jetstreams.get(account);
    if (js === undefined) return;
    const names = new Set<string>([...js.streams.keys(), ...this.directory.list(account).map((p) => p.stream)]);
    await Promise.all([...names].map((n) => this.settle(account, n, "start").catch(() => undefined)));
  }

  private async apply(account: string, name: string, cause: Cause): Promise<void> {
    const js = this.jetstreams.get(account);
    if (js === undefined || this.closed) return;
    const placed = this.directory.get(account, name)?.placement;
    const local = js.streams.get(name);
    if (placed === undefined) {
      if (local === undefined) return;
      await this.replicaRoles(account, name, undefined, undefined);
      if (cause === "removed") {
        this.log.info(`cluster: stream "${name}" of account ${account} was removed from the cluster; deleting the local copy`);
        const placed = local.placed;
        await js.deleteStream(name);
        // Removed while this node was not live (paused, cut off), seen once it was back: named among the nodes away.
        if (placed !== undefined && this.deletedWhileAway(account, name, placed)) await this.forget(account, name, placed);
      } else if (cause === "vanished") {
        await js.setAside(name, "its placement is gone from the cluster's metadata, found by a full read (etcd compacted or restored from an older backup); remove its directory, or place it again");
      } else if (cause === "start" && local.placed !== undefined && this.deletedWhileAway(account, name, local.placed)) {
        await this.deleteAway(js, name, local.placed);
      } else if (cause === "start" && local.placed !== undefined) {
        // Made for a placement that is gone: deleted in the cluster while this node was away (or etcd restored from an
        // older backup). Not adopted: that would bring a deleted stream back.
        await js.setAside(name, `the cluster no longer has the stream it was placed as (${local.placed}): it was deleted while this node was away, or etcd was restored from an older backup; remove its directory, or place it again`);
      } else if (cause === "start") await this.adopt(js, name);
      return;
    }
    const self = this.directory.self;
    const move = moveOf(placed);
    // A move's target hosts a copy (of every partition: the moving one is filled by the move) before it leads any.
    const target = move !== undefined && move.to === self && placed.leaders[move.partition] !== self;
    if (!hosts(placed, self) && !target) {
      if (local === undefined) return;
      await this.replicaRoles(account, name, undefined, placed);
      // A move's copy: the old leader's after the flip (the new leader has every message), or a cancelled move's target.
      if (local.followerCopy) {
        // A replica no longer assigned here (the stream's replicas were reduced): its leader and the others keep every message.
        this.log.info(`cluster: stream "${name}" of account ${account} no longer has a replica here; deleting the local copy`);
        await js.deleteStream(name, "moved");
      } else if (local.movedOut) {
        this.log.info(`cluster: stream "${name}" of account ${account} is placed on ${placed.leaders[0]} after a move; deleting the local copy`);
        // The old leader first hands what waits on its consumers to the new one (stream-move.ts).
        for (const l of this.moveListeners) l(account, name, placed);
        await js.deleteStream(name, "moved");
      } else if (local.placed !== undefined && local.placed !== placed.created && this.deletedWhileAway(account, name, local.placed)) {
        // Deleted while this node was away, and made again on other nodes.
        await this.deleteAway(js, name, local.placed);
      } else await js.setAside(name, `the cluster placed it on ${[...new Set(placed.leaders)].join(", ")}`);
      return;
    }
    const partitions = placed.leaders.length;
    let stream = local;
    if (stream !== undefined && stream.placed !== undefined && placed.created !== undefined && stream.placed !== placed.created) {
      // Made for another stream of its name (deleted and made again while this node was away, or etcd restored from an older
      // backup): its records are not this stream's. Set aside, and moved out of the way below; deleted only when the removal
      // of its own placement named this node as away (then nothing else can have been meant).
      await this.replicaRoles(account, name, undefined, placed);
      if (this.deletedWhileAway(account, name, stream.placed)) await this.deleteAway(js, name, stream.placed);
      else await js.setAside(name, `it was made for another stream of its name (placed ${stream.placed}; the cluster's was placed ${placed.created})`);
      stream = undefined;
    }
    // A copy set aside here: served again if made for this placement, else moved out of the way of the new stream's.
    if (stream === undefined && js.notServed.has(name) && (await js.reclaimSetAside(name, placed.created)) === "reopened") stream = js.streams.get(name);
    if (stream === undefined) {
      if (js.notServed.has(name) || js.unloadable.has(name)) {
        this.log.warn(`cluster: stream "${name}" of account ${account} is placed here but its files here are not served (${js.notServed.get(name) ?? js.unloadable.get(name)})`);
        return;
      }
      stream = (await js.createStream(placed.config, partitions, placed.created)).stream;
      // Placed before this node started and with no copy here: a replica new here (it fetches from its leader), or one whose
      // files were gone at the start. A stream kept only here lost what it held, and says so.
      const single = placed.leaders.every((_, p) => replicasOf(placed, p).length <= 1);
      if (single && !target && !(Date.parse(placed.created ?? "") >= this.startedAt)) {
        this.log.error(`cluster: stream "${name}" of account ${account} is placed here only (since ${placed.created ?? "an unknown time"}) but had no files here: made again empty, what it held is gone (its files removed, or its disk replaced)`);
      }
    } else {
      // Recorded once (a copy made before clustering, adopted; or by an older version).
      if (placed.created !== undefined && stream.placed === undefined) await js.recordPlaced(stream, placed.created);
      // Held: its partition roles (and so the caps of the replicated ones) come below; the release follows them.
      if (stream.partitions.length < partitions) stream = await js.addPartitions(name, partitions, true);
      // Changed through its leader (STREAM.UPDATE): every node hosting a partition follows.
      if (!sameJson(stream.config, normalizeStreamConfig(placed.config))) stream = await js.updateStream(placed.config);
    }
    if (stream.leaseHeld === null) {
      const copy = stream;
      copy.leaseHeld = () => !copy.unplaced && (this.directory.isLive(self) || this.directory.writesInGrace?.() === true);
    }
    // A move's target does not lead the moving partition, nor a follower the ones it replicates: publishes routed to them are
    // dropped. Partitions given up stop taking publishes before their replication changes; new ones take them once it is set up.
    const led = placed.leaders.map((l) => l === self);
    stream.leaderNodes = placed.leaders;
    const gated = (p: number): boolean => !lacksGate(placed, stream, p);
    const kept = keptLeading(led, stream.ledHere, gated);
    stream.ledHere = kept.every((l) => l) ? null : kept;
    try {
      await this.replicaRoles(account, name, stream, placed);
      // Its replicated partitions are capped at their high watermarks now: what it stores gets stream sequences from here on.
      stream.order?.release();
    } finally {
      // Even when a role failed to set up (the settle is retried): a partition is led here with its gate, or not at all;
      // and none while the order is still held (a publish would be stored and wait, unanswered, for a number).
      const leading = stream.order?.isHeld === true ? led.map(() => false) : keptLeading(led, null, gated);
      stream.ledHere = leading.every((l) => l) ? null : leading;
      // Limits an update brought while nothing was taken as led here (a start) reach the partitions led here now.
      stream.applyLimits();
    }
    // Consumers (on the first partition's leader) taken over in a failover deliver from now on.
    if (led[0] && !kept[0]) for (const c of stream.consumers.values()) c.notify();
    for (const l of this.moveListeners) l(account, name, placed);
  }

  /**
   * Sets up, changes or ends what this node does for the stream's
   * replicated partitions (stream-replicas.ts) before the stream takes
   * publishes for the partitions it now leads; `local` undefined: the copy
   * here is going (or not served).
   */
  private async replicaRoles(account: string, name: string, local: Stream | undefined, placed: PlacedStream | undefined): Promise<void> {
    for (const h of this.replicaHooks) await h(account, name, local, placed);
  }

  /** Told, in order per stream, of each placement settled here (see replicaRoles). */
  readonly replicaHooks = new Set<(account: string, stream: string, local: Stream | undefined, placed: PlacedStream | undefined) => Promise<void>>();

  /** Told of every placement change in the cluster, hosted here or not, as it is seen (a drain waits on these). */
  readonly placementListeners = new Set<(account: string, stream: string, placed: PlacedStream | undefined) => void>();

  /**
   * Told of every settled placement of a stream hosted here, and of one a
   * move took away just before its copy here is deleted (stream-move.ts
   * starts, finishes or cancels moves, and hands over what waits).
   */
  readonly moveListeners = new Set<(account: string, stream: string, placed: PlacedStream) => void>();

  /** Whether the placement of `name` made at `placed` was removed while this node was away, which named it to delete its copy. */
  private deletedWhileAway(account: string, name: string, placed: string): boolean {
    return this.directory.deletedAway?.(account, name, placed).includes(this.self) ?? false;
  }

  /** Deletes a copy of a stream deleted in the cluster while this node was away, and says it did. */
  private async deleteAway(js: JetStream, name: string, placed: string): Promise<void> {
    const account = js.account.name;
    this.log.info(`cluster: stream "${name}" of account ${account} (placed ${placed}) was deleted while this node was away; deleting the local copy`);
    await js.deleteStream(name);
    await this.forget(account, name, placed);
  }

  /** Takes this node out of the nodes named away at a removal; a failure (etcd away) leaves the name, which harms nothing. */
  private async forget(account: string, name: string, placed: string): Promise<void> {
    await this.directory.forgetDeleted?.(account, name, placed).catch((err: Error) => this.log.warn(`cluster: stream "${name}" of account ${account}: could not record that its copy here is deleted: ${err.message}`));
  }

  /** A stream on disk that the cluster does not know: this node leads it from now on. */
  private async adopt(js: JetStream, name: string): Promise<void> {
    const s = js.streams.get(name);
    if (s === undefined) return;
    const account = js.account.name;
    try {
      await this.directory.adopt(account, name, s.partitions.length, s.config.subjects, "jetstream", s.config);
      this.log.info(`cluster: stream "${name}" of account ${account}, found on disk, is now placed on this node`);
    } catch (err) {
      // Placed meanwhile by another node: settle against that placement.
      if ((err as Error).name === "ConcurrentChangeError") return this.apply(account, name, "changed");
      throw new Error(`could not record the stream found on disk in the cluster: ${(err as Error).message}`);
    }
  }
}
