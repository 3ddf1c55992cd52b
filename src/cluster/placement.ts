/**
 * Where each stream's partitions live: one metadata key per stream
 * (`streams/<account>/<stream>`, a JSON `StreamPlacement`) naming the node
 * that leads each partition. Every node reads the same placements from its
 * metadata copy, so any node can tell where a request must go without
 * asking etcd; changes are revision-compared, lease-fenced transactions
 * (metadata.ts), so two nodes placing the same stream at once cannot both win.
 *
 * Placement picks among the live members (those with a node key under a
 * lease) that carry every requested tag (`server_tags`) and belong to the
 * requested cluster. Load is counted as partitions led, from the placements
 * themselves (exact and current, unlike the load a node reports every few
 * seconds), then bytes stored as reported, then the name, so that two nodes
 * placing from the same metadata choose alike.
 *
 * An account's creates are judged (its stream limit, storage reservations,
 * overlapping subjects) in one order in the whole cluster, as nats-server's
 * meta leader judges them: placements are committed with a comparison of
 * the account's guard key (`admit/<account>`), whose revision is read from
 * the copy with the placements judged, and bump it in the same
 * transaction. Creates judged meanwhile through another node then fail
 * that comparison and are judged again once the copy has what won. Creates
 * through one node are judged and committed together, a round at a time
 * (ROUND_CREATES), so they never lose to each other. An update that
 * changes a stream's subjects or grows its reservation is judged
 * (overlaps, storage) and committed in the same rounds. The guard costs no
 * etcd request of its own: one comparison and one put more in the
 * placement's transaction.
 *
 * A JetStream stream keeps its partitions together on one node (a JetStream
 * consumer reads every partition of its stream); a Kafka topic spreads its
 * partitions over the nodes, as Kafka brokers do.
 */

import type { Membership } from "./membership.js";
import { ConcurrentChangeError, MetadataUnavailableError, type MetadataStore, type MetaChange, type MetaOp } from "./metadata.js";

export interface StreamPlacement {
  account: string;
  stream: string;
  /** The node leading each partition, by partition index. */
  leaders: string[];
  /** What placement was asked for: kept so that moves and growth honour it. */
  tags: string[];
  cluster: string;
  /** The stream's captured subjects, to refuse overlaps across nodes. */
  subjects: string[];
  /** Which door created it: "kafka" topics spread their partitions. */
  origin: "jetstream" | "kafka";
  /** The stream's configuration (JSON), from which every node leading a partition creates its copy. */
  config: unknown;
  created: string;
  /**
   * The partition being moved and the node it goes to
   * (streams/stream-move.ts): the target copies the partition from its
   * leader, then sets `leaders[partition]` to itself and clears this in one
   * fenced change. One move per stream at a time; absent: no move. `id`
   * tells one move from a later one of the same partition to the same
   * node, so that a cancelled move's copy cannot flip its successor
   * (absent in moves recorded before ids). (A string, written by the
   * first version, names the target of partition 0.)
   */
  moving?: { partition: number; to: string; id?: string } | string;
  /**
   * Replication (streams/stream-replicas.ts), absent for a stream of one
   * replica: per partition, the nodes holding a copy (its leader first when
   * placed), the leader epoch (bumped at every change of leader) and the
   * in-sync replicas (the leader included). Changed only by fenced,
   * revision-compared writes of this key, so a leader, its epoch and its
   * ISR change together. A stream scaled down to one replica keeps its
   * epochs (the next replication starts past them).
   */
  replicas?: string[][];
  epochs?: number[];
  isr?: string[][];
  /** The fewest in-sync replicas with which a write waiting for them is taken (Kafka's min.insync.replicas); absent: a majority of the replicas. */
  minIsr?: number;
  /**
   * Per partition (absent, or null: none), a reassignment of a replicated
   * partition under way (AlterPartitionReassignments): `replicas` holds
   * `original` and `target` together until every target node is in the ISR;
   * then the leader (one of the target, handed over to first) makes
   * `replicas` the target in a new epoch and clears this.
   */
  reassigning?: Array<ReplicaReassignment | null>;
}

/**
 * Partitions of a replicated stream whose in-sync replicas are fewer than
 * their replicas (Kafka's under-replicated partitions); while one is
 * reassigned, fewer than its original replicas, as Kafka counts it (the
 * replicas being added are not missing).
 */
export function underReplicated(placed: Pick<StreamPlacement, "replicas" | "isr" | "reassigning">): number {
  let n = 0;
  placed.replicas?.forEach((set, p) => {
    const wanted = placed.reassigning?.[p]?.original.length ?? set.length;
    if ((placed.isr?.[p]?.length ?? set.length) < wanted) n++;
  });
  return n;
}

/** A replicated partition's replicas going from `original` to `target` (preferred leader first). */
export interface ReplicaReassignment {
  original: string[];
  target: string[];
}

export interface PlacementRequest {
  partitions: number;
  /** Every tag must be among the node's `server_tags`. */
  tags?: string[];
  /** The cluster the stream must live in (JetStream's placement.cluster); this cluster's name or none. */
  cluster?: string;
  /** Spread the partitions over the nodes (Kafka) or keep them on one (JetStream). */
  spread: boolean;
  subjects: string[];
  origin: StreamPlacement["origin"];
  config: unknown;
  /** Nodes not to place on (Kafka topics: nodes without a Kafka listener). */
  exclude?: ReadonlySet<string>;
  /** Copies of each partition, on distinct nodes (JetStream's num_replicas); 1 when absent. */
  replicas?: number;
  /** The minimum ISR to record (StreamPlacement.minIsr); absent: a majority. */
  minIsr?: number;
  /**
   * Judges the account's other placed streams before each attempt to record
   * this one (the account's stream and storage limits, overlapping
   * subjects): throws to refuse. Each node holds only its own streams, so
   * a limit checked there would hold per node, not in the cluster.
   */
  admit?: (others: readonly StreamPlacement[]) => void;
}

/** No live node satisfies the placement: nats-server's "no suitable peers for placement". */
export class NoSuitablePeersError extends Error {
  constructor(readonly why: string) {
    super(`no suitable peers for placement: ${why}`);
    this.name = "NoSuitablePeersError";
  }
}

/** A change of a stream whose placement is gone (deleted meanwhile, through any node). */
export class StreamNotPlacedError extends Error {
  constructor(account: string, stream: string) {
    super(`stream ${stream} of account ${account} is not placed`);
    this.name = "StreamNotPlacedError";
  }
}

/**
 * A removal of a stream led, unreplicated, by a node whose key went less than its grace ago (Membership.graceMs): that
 * node, paused or cut off from etcd, may still take writes for it. Tried again later, it is done.
 */
export class NodeJustGoneError extends Error {
  constructor(node: string, goneMs: number, graceMs: number) {
    super(`node ${node}, which leads it alone, left ${(goneMs / 1000).toFixed(1)} s ago; it may still take writes until it has been gone ${graceMs / 1000} s`);
    this.name = "NodeJustGoneError";
  }
}

const PREFIX = "streams/";
const GUARD_PREFIX = "admit/";
/**
 * `deleted/<account>/<stream>/<created>`: the nodes holding a copy of a stream that was deleted while they were not
 * live, by the placement's creation time (a copy's `placed`). Each deletes its copy when back, and takes its name out.
 */
const DELETED_PREFIX = "deleted/";
/** A placement changed by another node between this node's read and its write is decided again this many times in all. */
const UPDATE_ATTEMPTS = 5;
/**
 * Creates of one account through one node are placed in rounds: every
 * create that arrived while the last round was committed is judged, each
 * counting the ones before it, and all are committed in one transaction
 * (at most ROUND_CREATES, ROUND_BYTES of placements: etcd takes 128
 * operations and 1.5 MiB a request). A round that finds the account's
 * guard bumped by another node is judged again, at once (its commit waited
 * for the copy to have the winner), ROUND_ATTEMPTS times in all. A round
 * loses only to another node's round, so with every node's creates in one
 * round a burst takes about as many rounds as there are nodes. (Committed
 * one by one, 30 creates sent at once through three nodes each lost up to
 * 20 times in a row on a loaded machine: the node that won went on
 * winning.)
 */
const ROUND_CREATES = 64;
const ROUND_BYTES = 512 * 1024;
const ROUND_ATTEMPTS = 16;

export function placementKey(account: string, stream: string): string {
  return `${PREFIX}${account}/${stream}`;
}

/** The key naming the nodes away when the placement of `stream` made at `created` was removed. */
export function deletedKey(account: string, stream: string, created: string): string {
  return `${DELETED_PREFIX}${account}/${stream}/${created}`;
}

/** The key every placement of an account bumps, so that creates judged at once through different nodes cannot all pass. */
export function admitGuardKey(account: string): string {
  return `${GUARD_PREFIX}${account}`;
}

function parse(value: string): StreamPlacement | undefined {
  try {
    const v = JSON.parse(value) as StreamPlacement;
    return Array.isArray(v.leaders) && typeof v.stream === "string" && typeof v.account === "string" ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Every node holding a copy of some partition (its leaders, the replicas of a replicated one, a move's target). */
function hostsOf(p: StreamPlacement): string[] {
  const target = p.moving === undefined ? [] : [typeof p.moving === "string" ? p.moving : p.moving.to];
  return [...new Set([...p.leaders, ...(p.replicas ?? []).flat(), ...target])];
}

/** The nodes a `deleted/` value names (none when it cannot be read). */
function parseNodes(value: string): string[] {
  try {
    const v = JSON.parse(value) as { nodes?: unknown };
    return Array.isArray(v.nodes) ? v.nodes.filter((n): n is string => typeof n === "string") : [];
  } catch {
    return [];
  }
}

type Placed = { placement: StreamPlacement; created: boolean; revision: number };

/** A create waiting for its round (Placements.place). */
interface PendingCreate {
  stream: string;
  r: PlacementRequest;
  /** Roughly the bytes its placement takes in the round's transaction. */
  size: number;
  resolve: (placed: Placed) => void;
  reject: (err: unknown) => void;
}

/** An update changing a stream's subjects, waiting for its round (Placements.update): judged with the account's creates. */
interface PendingUpdate {
  stream: string;
  change: (p: StreamPlacement) => StreamPlacement;
  admit: ((others: readonly StreamPlacement[]) => void) | undefined;
  size: number;
  resolve: (placement: StreamPlacement) => void;
  reject: (err: unknown) => void;
}

type Pending = PendingCreate | PendingUpdate;

/** Whether two lists of subjects capture the same (order and repeats aside). */
function sameSubjects(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  const set = new Set(a);
  return b.every((s) => set.has(s)) && new Set(b).size === set.size;
}

interface Candidate {
  name: string;
  led: number;
  bytes: number;
}

export class Placements {
  /** Parsed placements by key, kept while the key's revision holds: requests and acks look a stream up on every call. */
  private readonly parsed = new Map<string, { revision: number; placement: StreamPlacement | undefined }>();
  /** Per account, the creates (and updates of subjects) waiting for the next round through this node (see ROUND_CREATES). */
  private readonly waiting = new Map<string, Pending[]>();

  constructor(
    private readonly metadata: MetadataStore,
    private readonly membership: Membership,
    readonly self: string,
    readonly clusterName: string,
  ) {
    metadata.onChange((c) => {
      if (c.entry === undefined) this.parsed.delete(c.key);
    });
  }

  /** A stream's placement (shared: not to be changed by the caller), read from memory. */
  get(account: string, stream: string): { placement: StreamPlacement; revision: number } | undefined {
    const key = placementKey(account, stream);
    const e = this.metadata.get(key);
    if (e === undefined) {
      this.parsed.delete(key);
      return undefined;
    }
    let cached = this.parsed.get(key);
    if (cached === undefined || cached.revision !== e.revision) {
      cached = { revision: e.revision, placement: parse(e.value) };
      this.parsed.set(key, cached);
    }
    return cached.placement === undefined ? undefined : { placement: cached.placement, revision: e.revision };
  }

  /** Every placement of an account (every account's, without one), in name order. */
  list(account?: string): StreamPlacement[] {
    const out: StreamPlacement[] = [];
    for (const e of this.metadata.list(account === undefined ? PREFIX : `${PREFIX}${account}/`)) {
      const p = parse(e.value);
      if (p !== undefined) out.push(p);
    }
    return out;
  }

  /** The node leading a partition, or undefined when the stream is not placed. */
  leaderOf(account: string, stream: string, partition = 0): string | undefined {
    return this.get(account, stream)?.placement.leaders[partition];
  }

  /**
   * Whether a node holds its lease now (its key is in etcd, as last seen).
   * This node, once its copy of the metadata has every change made before
   * it registered too: back after a fence, it may have been replaced as
   * the leader of what it led, and must not serve as that leader until its
   * copy says so (its marker, put with the registration, brings the copy
   * there).
   */
  isLive(node: string): boolean {
    if (node === this.self) return this.membership.holdsLease() && this.metadata.revision >= this.membership.registeredAt;
    return this.membership.members().some((m) => m.name === node && m.record !== undefined);
  }

  /**
   * Hears every change of the members and of this node's lease (fenced;
   * registered again, told once its copy of the metadata caught up with the
   * registration, or after a request timeout); returns what stops it.
   */
  onMembers(listener: () => void): () => void {
    const m = this.membership;
    const registered = (): void => void this.metadata.waitForRevision(m.registeredAt, this.metadata.requestTimeoutMs).then(listener);
    m.on("members", listener);
    m.on("fenced", listener);
    m.on("registered", registered);
    return () => {
      m.off("members", listener);
      m.off("fenced", listener);
      m.off("registered", registered);
    };
  }

  /** The live nodes, each with its `server_tags`, the partitions it leads, and whether it is draining (lame duck). */
  nodes(others: readonly StreamPlacement[] = []): Array<{ name: string; tags: string[]; led: number; bytes: number; draining: boolean; kafka: boolean }> {
    const led = this.ledCounts(others);
    return this.membership
      .members()
      .filter((m) => m.record !== undefined)
      .map((m) => ({ name: m.name, tags: m.record!.tags ?? [], led: led.get(m.name) ?? 0, bytes: m.record!.load.bytes, draining: m.record!.state === "draining", kafka: m.record!.kafka !== null }));
  }

  /**
   * Chooses a leader for each of `count` partitions, from the live nodes
   * that satisfy the request, least loaded first; throws
   * NoSuitablePeersError when none does.
   */
  choose(r: Pick<PlacementRequest, "partitions" | "tags" | "cluster" | "spread">, exclude: ReadonlySet<string> = new Set(), others: readonly StreamPlacement[] = []): string[] {
    if (r.cluster !== undefined && r.cluster !== "" && r.cluster !== this.clusterName) throw new NoSuitablePeersError(`cluster ${JSON.stringify(r.cluster)} is not this cluster (${this.clusterName})`);
    const tags = r.tags ?? [];
    const candidates: Candidate[] = this.nodes(others)
      // A draining node is moving what it leads away: nothing new goes to it.
      .filter((n) => !exclude.has(n.name) && !n.draining && tags.every((t) => n.tags.includes(t)))
      .map((n) => ({ name: n.name, led: n.led, bytes: n.bytes }));
    if (candidates.length === 0) throw new NoSuitablePeersError(tags.length > 0 ? `no live node has the tags ${tags.join(", ")}` : "no live node");
    const order = (a: Candidate, b: Candidate): number => a.led - b.led || a.bytes - b.bytes || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    if (!r.spread) {
      candidates.sort(order);
      return new Array<string>(r.partitions).fill(candidates[0].name);
    }
    const leaders: string[] = [];
    for (let i = 0; i < r.partitions; i++) {
      candidates.sort(order);
      leaders.push(candidates[0].name);
      candidates[0].led++;
    }
    return leaders;
  }

  /**
   * Places a new stream: chooses its leaders and records them, unless the
   * stream is placed already (then the existing placement is returned, as
   * a create that finds its stream does). Throws the metadata store's
   * errors (fenced, etcd unavailable; MetadataUnavailableError too when
   * another node's change wins and this node's copy does not follow etcd
   * to learn it), ConcurrentChangeError when other nodes' creates of the
   * account keep winning, and NoSuitablePeersError.
   */
  place(account: string, stream: string, r: PlacementRequest): Promise<Placed> {
    return new Promise((resolve, reject) => {
      const size = JSON.stringify(r.config ?? null).length + JSON.stringify(r.subjects).length;
      this.enqueue(account, { stream, r, size, resolve, reject });
    });
  }

  /** Adds a create or an update of subjects to its account's next round, starting the rounds if none runs. */
  private enqueue(account: string, pending: Pending): void {
    const queue = this.waiting.get(account);
    if (queue !== undefined) return void queue.push(pending);
    const started: Pending[] = [pending];
    this.waiting.set(account, started);
    void this.rounds(account, started);
  }

  /** Places an account's waiting creates (and makes its updates of subjects), a round at a time, until none waits. */
  private async rounds(account: string, queue: Pending[]): Promise<void> {
    while (queue.length > 0) {
      const round: Pending[] = [];
      let bytes = 0;
      while (queue.length > 0 && round.length < ROUND_CREATES) {
        // A placement holds its config and subjects: one too large for etcd alone must not take others down with it.
        const size = queue[0].size;
        if (round.length > 0 && bytes + size > ROUND_BYTES) break;
        round.push(queue.shift()!);
        bytes += size;
      }
      try {
        queue.unshift(...(await this.round(account, round)));
      } catch (err) {
        // Not expected (round() settles each create); the account's later creates must not wait behind it for ever.
        for (const create of round) create.reject(err);
      }
    }
    this.waiting.delete(account);
  }

  /**
   * One round: settles every create and update of `round`, but for those
   * returned (a second create or update of a stream in the round: it is
   * judged on the first's outcome in the next; etcd takes a key once a
   * transaction).
   */
  private async round(account: string, round: Pending[]): Promise<Pending[]> {
    const guardKey = admitGuardKey(account);
    let pending = round;
    for (let attempt = 1; ; attempt++) {
      // Read with the placements judged, in the same synchronous step: the copy is exact at one revision.
      const guard = this.metadata.get(guardKey)?.revision ?? 0;
      // The account's streams as they will be once the round is made: each create or update judged counts those before it.
      const judged = new Map<string, StreamPlacement>();
      for (const p of this.list(account)) judged.set(p.stream, p);
      const others = (stream: string): StreamPlacement[] => [...judged.values()].filter((p) => p.stream !== stream);
      const made: Array<{ pending: Pending; placement: StreamPlacement; expect: number }> = [];
      const later: Pending[] = [];
      let admitted = false;
      for (const x of pending) {
        if (made.some((m) => m.pending.stream === x.stream)) {
          later.push(x);
          continue;
        }
        try {
          if ("r" in x) {
            const existing = this.get(account, x.stream);
            if (existing !== undefined) {
              x.resolve({ placement: existing.placement, created: false, revision: existing.revision });
              continue;
            }
            x.r.admit?.(others(x.stream));
            const creates = made.flatMap((m) => ("r" in m.pending ? [m.placement] : []));
            const placement = this.decide(account, x.stream, x.r, creates);
            made.push({ pending: x, placement, expect: 0 });
            judged.set(x.stream, placement);
            admitted ||= x.r.admit !== undefined;
          } else {
            const e = this.get(account, x.stream);
            if (e === undefined) throw new StreamNotPlacedError(account, x.stream);
            const placement = x.change(structuredClone(e.placement));
            x.admit?.(others(x.stream));
            made.push({ pending: x, placement, expect: e.revision });
            judged.set(x.stream, placement);
            admitted ||= x.admit !== undefined;
          }
        } catch (err) {
          x.reject(err);
        }
      }
      if (made.length === 0) return later;
      try {
        const revision = await this.metadata.commit([
          ...made.map((m) => ({ key: placementKey(account, m.pending.stream), expect: m.expect, put: JSON.stringify(m.placement) })),
          // Without an admit nothing was judged: the guard is only bumped, for the creates judged meanwhile elsewhere.
          { key: guardKey, expect: admitted ? guard : null, put: made[made.length - 1].pending.stream },
        ]);
        for (const m of made) {
          if ("r" in m.pending) m.pending.resolve({ placement: m.placement, created: true, revision });
          else m.pending.resolve(m.placement);
        }
        return later;
      } catch (err) {
        let failed = err;
        if (err instanceof ConcurrentChangeError && err.found === 0) {
          // etcd says a stream being updated is gone (deleted through another node): that update fails, the rest of the
          // round is committed again. Retried as it was, it lost again as fast as etcd answered while the copy still had
          // the stream, and took the round's creates down with it.
          const gone = made.find((m) => m.expect > 0 && placementKey(account, m.pending.stream) === err.key);
          if (gone !== undefined) {
            gone.pending.reject(new StreamNotPlacedError(account, gone.pending.stream));
            pending = [...made.filter((m) => m !== gone).map((m) => m.pending), ...later];
            if (attempt < ROUND_ATTEMPTS) continue;
            for (const m of made) if (m !== gone) m.pending.reject(failed);
            return later;
          }
        }
        if (err instanceof ConcurrentChangeError) {
          // Another node placed one of these streams first (that placement stands), or changed one being updated, or
          // placed or changed another stream of the account (judged again with it): either way the copy must have that
          // change first. Without it (the watch down) the same change would lose again, each attempt after a request
          // timeout spent waiting for the copy in vain.
          if (this.metadata.revision < err.found) {
            failed = new MetadataUnavailableError(
              `account ${account}: streams not placed or changed: another node's change (revision ${err.found}) won, and this node's copy of the metadata does not follow etcd to learn it (at revision ${this.metadata.revision})`,
              false,
            );
          } else if (attempt < ROUND_ATTEMPTS) {
            pending = [...made.map((m) => m.pending), ...later];
            continue;
          }
        }
        for (const m of made) m.pending.reject(failed);
        return later;
      }
    }
  }

  /** The placement of a new stream, chosen from the copy and `others` (placements about to be made with it). */
  private decide(account: string, stream: string, r: PlacementRequest, others: readonly StreamPlacement[]): StreamPlacement {
    const replicated = (r.replicas ?? 1) > 1;
    const routeless = replicated ? this.routeless() : [];
    const within = routeless.length === 0 ? r : { ...r, exclude: new Set([...(r.exclude ?? []), ...routeless]) };
    let leaders: string[];
    try {
      leaders = this.choose(within, within.exclude, others);
    } catch (err) {
      throw withoutRoutes(err, routeless);
    }
    const replicas = replicated ? leaders.map((leader, i) => [leader, ...this.followersFor(leader, r.replicas!, r, i, others)]) : undefined;
    return {
      account,
      stream,
      leaders,
      ...(replicas !== undefined ? { replicas, epochs: leaders.map(() => 1), isr: replicas.map((set) => [...set]) } : {}),
      ...(r.minIsr !== undefined ? { minIsr: r.minIsr } : {}),
      tags: r.tags ?? [],
      cluster: this.clusterName,
      subjects: r.subjects,
      origin: r.origin,
      config: r.config,
      created: new Date().toISOString(),
    };
  }

  /**
   * The other `count` - 1 replicas of a partition led by `leader`: live
   * nodes with the requested tags, least loaded first (copies held count
   * as load); partition `index` rotates among equals, so a spread topic's
   * followers spread too.
   */
  private followersFor(leader: string, count: number, r: Pick<PlacementRequest, "tags" | "exclude">, index: number, others: readonly StreamPlacement[] = []): string[] {
    const tags = r.tags ?? [];
    const held = this.heldCounts(others);
    // Followers fetch over the routes: copies go only to nodes the others route to.
    const routeless = this.routeless();
    const names = this.nodes()
      .filter((n) => n.name !== leader && !(r.exclude?.has(n.name) ?? false) && !routeless.includes(n.name) && !n.draining && tags.every((t) => n.tags.includes(t)))
      .map((n) => n.name)
      .sort();
    if (names.length < count - 1) throw withoutRoutes(new NoSuitablePeersError(`${count} replicas need ${count} nodes, and ${names.length + 1} are live${tags.length > 0 ? ` with the tags ${tags.join(", ")}` : ""}`), routeless);
    const rotated = names.map((_, i) => names[(i + index) % names.length]);
    // A stable sort keeps the rotation among nodes holding as many copies.
    rotated.sort((a, b) => (held.get(a) ?? 0) - (held.get(b) ?? 0));
    return rotated.slice(0, count - 1);
  }

  /** Records a placement for a stream this node already has (found on disk, created before clustering). */
  async adopt(account: string, stream: string, partitions: number, subjects: string[], origin: StreamPlacement["origin"], config: unknown): Promise<StreamPlacement> {
    const placement: StreamPlacement = { account, stream, leaders: new Array<string>(partitions).fill(this.self), tags: [], cluster: this.clusterName, subjects, origin, config, created: new Date().toISOString() };
    // The guard is bumped as by any placement: a create judged meanwhile without this stream is judged again.
    await this.metadata.commit([
      { key: placementKey(account, stream), expect: 0, put: JSON.stringify(placement) },
      { key: admitGuardKey(account), expect: null, put: stream },
    ]);
    return placement;
  }

  /**
   * Changes a placement if it is still at the revision read. This node's
   * copy may lag behind a change another node made (an ISR change right
   * after a create): that change is waited for and `change` decided again
   * on it, up to UPDATE_ATTEMPTS times; then ConcurrentChangeError.
   * `unregistered`: nodes that must not be registered in etcd when the
   * change is made (a takeover from a leader seen gone: this node's view
   * of the members may lag behind a registration, and the leader
   * registered again leads on); one found registered is refused at once.
   * A change of subjects, or one `judged` (its storage reservation grows),
   * goes to the account's rounds instead, judged by `admit` against the
   * account's other streams (throws to refuse) with its creates, up to
   * ROUND_ATTEMPTS times.
   */
  async update(
    account: string,
    stream: string,
    change: (p: StreamPlacement) => StreamPlacement,
    unregistered: readonly string[] = [],
    admit?: (others: readonly StreamPlacement[]) => void,
    judged = false,
  ): Promise<StreamPlacement> {
    const key = placementKey(account, stream);
    for (let attempt = 1; ; attempt++) {
      const e = this.get(account, stream);
      if (e === undefined) throw new StreamNotPlacedError(account, stream);
      const next = change(structuredClone(e.placement));
      // New subjects, and a reservation that grows, are judged in the account's rounds, under its guard, as creates are;
      // other changes (moves, ISR, leaders) neither compare nor bump it, so they never wait for or lose to the creates.
      if (unregistered.length === 0 && (judged || !sameSubjects(e.placement.subjects, next.subjects))) {
        return new Promise((resolve, reject) => this.enqueue(account, { stream, change, admit, size: JSON.stringify(next).length, resolve, reject }));
      }
      try {
        await this.metadata.commit(
          [{ key, expect: e.revision, put: JSON.stringify(next) }],
          unregistered.map((n) => this.membership.keyOf(n)),
        );
        return next;
      } catch (err) {
        const raced = err instanceof ConcurrentChangeError && err.key === key && err.found > e.revision;
        if (!raced || attempt >= UPDATE_ATTEMPTS || !(await this.metadata.waitForRevision(err.found, this.metadata.requestTimeoutMs))) throw err;
      }
    }
  }

  /**
   * Removes a placement (the stream was deleted); nothing if it is gone
   * already, or made again since (another stream of the name). One changed
   * meanwhile (a failover, an ISR change: this node's copy may lag behind
   * it) is removed at its new revision: before, the remove did nothing and
   * STREAM.DELETE answered success for a stream that went on being served.
   *
   * Nodes holding a copy that are not live (down, paused past their lease, cut off from etcd) are named in the same
   * transaction under `deleted/`, which also compares that their keys are absent: each holds no lease then (every write
   * to a copy it leads needs it, stream.ts's lease check), and, back, deletes its copy for certain rather than set it
   * aside as one whose placement vanished for a reason it cannot know (etcd restored from an older backup). One that
   * registered again meanwhile is live: the change is decided again with it told through the watch.
   */
  async remove(account: string, stream: string): Promise<void> {
    const key = placementKey(account, stream);
    const created = this.get(account, stream)?.placement.created;
    for (let attempt = 1; ; attempt++) {
      const e = this.get(account, stream);
      if (e === undefined || e.placement.created !== created) return;
      const away = created === undefined ? [] : hostsOf(e.placement).filter((n) => n !== this.self && !this.isLive(n));
      // A node away that leads a partition of one replica takes its writes through its grace (no gate asks its lease).
      const grace = this.membership.graceMs();
      for (const n of away) {
        const gone = this.membership.absentForMs(n);
        if (gone < grace && e.placement.leaders.some((l, p) => l === n && (e.placement.replicas?.[p]?.length ?? 1) <= 1)) throw new NodeJustGoneError(n, gone, grace);
      }
      const ops: MetaOp[] = [{ key, expect: e.revision, delete: true }];
      if (away.length > 0) {
        const dk = deletedKey(account, stream, created!);
        const before = this.metadata.get(dk);
        const nodes = [...new Set([...(before === undefined ? [] : parseNodes(before.value)), ...away])].sort();
        ops.push({ key: dk, expect: before?.revision ?? 0, put: JSON.stringify({ nodes }) });
      }
      try {
        await this.metadata.commit(ops, away.map((n) => this.membership.keyOf(n)));
        return;
      } catch (err) {
        if (!(err instanceof ConcurrentChangeError)) throw err;
        if (err.key === key && err.found === 0) return; // removed meanwhile
        if (attempt >= UPDATE_ATTEMPTS || !(await this.metadata.waitForRevision(err.found, this.metadata.requestTimeoutMs))) throw err;
      }
    }
  }

  /** Whether this node, without its lease, still takes writes for streams of one replica it leads (Membership.writesInGrace). */
  writesInGrace(): boolean {
    return this.membership.writesInGrace();
  }

  /** The nodes named away at the removal of the placement of `stream` made at `created` (deleted/): empty when none. */
  deletedAway(account: string, stream: string, created: string): string[] {
    const e = this.metadata.get(deletedKey(account, stream, created));
    return e === undefined ? [] : parseNodes(e.value);
  }

  /** The removals naming `node` among the nodes away (deleted/), by account, stream and the placement's creation time. */
  deletedNaming(node: string): Array<{ account: string; stream: string; created: string }> {
    const out: Array<{ account: string; stream: string; created: string }> = [];
    for (const e of this.metadata.list(DELETED_PREFIX)) {
      if (!parseNodes(e.value).includes(node)) continue;
      // <account>/<stream>/<created>: a stream's name and a time hold no "/", an account's name might.
      const parts = e.key.slice(DELETED_PREFIX.length).split("/");
      if (parts.length < 3) continue;
      const created = parts.pop()!;
      const stream = parts.pop()!;
      out.push({ account: parts.join("/"), stream, created });
    }
    return out;
  }

  /** Takes this node out of the nodes away at that removal (it deleted its copy); the key goes with the last of them. */
  async forgetDeleted(account: string, stream: string, created: string): Promise<void> {
    const dk = deletedKey(account, stream, created);
    for (let attempt = 1; ; attempt++) {
      const e = this.metadata.get(dk);
      if (e === undefined) return;
      const nodes = parseNodes(e.value).filter((n) => n !== this.self);
      try {
        await this.metadata.commit([nodes.length === 0 ? { key: dk, expect: e.revision, delete: true } : { key: dk, expect: e.revision, put: JSON.stringify({ nodes }) }]);
        return;
      } catch (err) {
        if (!(err instanceof ConcurrentChangeError) || err.found === 0) throw err;
        if (attempt >= UPDATE_ATTEMPTS || !(await this.metadata.waitForRevision(err.found, this.metadata.requestTimeoutMs))) throw err;
      }
    }
  }

  /** Resolves true once this node's copy of the metadata has the change made at `revision` (false after `timeoutMs`). */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    return this.metadata.waitForRevision(revision, timeoutMs);
  }

  /**
   * Hears every placement change (from any node), with the placement after
   * it (undefined: removed); `resync`: found by a full read after etcd
   * compacted or went back, not seen as it happened.
   */
  onChange(listener: (account: string, stream: string, placement: StreamPlacement | undefined, resync: boolean) => void): void {
    this.metadata.onChange((c: MetaChange) => {
      if (!c.key.startsWith(PREFIX)) return;
      const rest = c.key.slice(PREFIX.length);
      const slash = rest.indexOf("/");
      if (slash < 0) return;
      listener(rest.slice(0, slash), rest.slice(slash + 1), c.entry === undefined ? undefined : parse(c.entry.value), c.resync);
    });
  }

  /** `count` more replicas for a partition: live nodes with `tags`, none in `exclude` (its present replicas), least loaded first. */
  moreReplicas(count: number, tags: readonly string[], exclude: ReadonlySet<string>): string[] {
    if (count <= 0) return [];
    const [leader, ...rest] = [...exclude];
    return this.followersFor(leader ?? "", count + 1, { tags: [...tags], exclude: new Set(rest) }, 0);
  }

  /** Members registered without a route URL (no `cluster { port }`): they cannot hold a replicated stream's copies. */
  private routeless(): string[] {
    return this.membership.members().filter((m) => m.record !== undefined && m.record.route_url === null).map((m) => m.name);
  }

  /** Partition copies each node holds as a follower. */
  private heldCounts(others: readonly StreamPlacement[]): Map<string, number> {
    const held = new Map<string, number>();
    for (const p of [...this.list(), ...others]) for (const set of p.replicas ?? []) for (const n of set.slice(1)) held.set(n, (held.get(n) ?? 0) + 1);
    return held;
  }

  private ledCounts(others: readonly StreamPlacement[]): Map<string, number> {
    const led = new Map<string, number>();
    for (const p of [...this.list(), ...others]) for (const l of p.leaders) led.set(l, (led.get(l) ?? 0) + 1);
    return led;
  }
}

/** A placement refused for want of nodes says which nodes have no routes, if any: adding them is the cure. */
function withoutRoutes(err: unknown, routeless: readonly string[]): unknown {
  if (!(err instanceof NoSuitablePeersError) || routeless.length === 0) return err;
  return new NoSuitablePeersError(`${err.why}; without routes (cluster { port }), ${routeless.join(", ")} cannot hold copies`);
}
