/**
 * The Kafka door's view of the cluster (protocols/kafka/cluster.ts), over
 * the node's membership, placements and metadata in etcd. Here, in the
 * composition root, because the door may not import the cluster and the
 * cluster knows nothing of Kafka.
 *
 * - Broker ids come from etcd, one per node name, kept across restarts
 *   (cluster/brokers.ts).
 * - Brokers are the live members whose record has a Kafka listener
 *   (`kafka`: the advertised host:port). The controller Metadata names is
 *   the live broker with the lowest id: clients only use it for admin
 *   requests, which any broker here answers.
 * - A partition's leader is its placement's node; a node that is not live
 *   (its key gone from etcd) leads nothing clients can reach until it
 *   returns. A node keeps serving what it leads while it cannot reach etcd
 *   (its lease counted lost): placements are read from memory and nothing
 *   moves a partition to another node yet, so no two nodes can lead one.
 *   Moves and replication will have to fence it (DESIGN: "a node without
 *   its lease serves nothing it leads").
 * - Group and transaction coordinators are the door's own: the leaders of
 *   the replicated internal topics (coordinator-topic.ts).
 */

import { randomBytes } from "node:crypto";
import type { ClusterNode } from "../cluster/node.js";
import { BrokerIds } from "../cluster/brokers.js";
import type { StreamPlacement } from "../cluster/placement.js";
import { KafkaClusterError, type KafkaBroker, type KafkaCluster, type PlacedTopic } from "../protocols/kafka/cluster.js";
import { ErrorCode } from "../protocols/kafka/errors.js";
import { moveOf, newMove, reassignmentEnded, replicasOf, withReassignment } from "../streams/cluster-streams.js";
import { PRODUCER_ID_STRIDE } from "../protocols/kafka/producers.js";
import { TOPIC_METADATA_KEY } from "../protocols/kafka/topics.js";
import { subjectsIntersect } from "../subjects/subject.js";
import { normalizeStreamConfig, type StreamConfig } from "../streams/config.js";
import type { ApiError } from "../streams/errors.js";
import { clusterLimitError, placedCopies, placedReserving, reservationOf, type AccountLimits, type Reserving } from "../streams/limits.js";

/** The Kafka cluster id every node reports, made by the first broker. */
const CLUSTER_ID_KEY = "kafka/cluster-id";

export class EtcdKafkaCluster implements KafkaCluster {
  /**
   * Placed topics by account, then stream, rebuilt after any metadata or
   * member change. Only placed ones: names clients ask for that exist
   * nowhere are not kept (they would grow it without bound).
   */
  private readonly cache = new Map<string, Map<string, PlacedTopic>>();
  private brokerList: KafkaBroker[] | null = null;

  private constructor(
    private readonly node: ClusterNode,
    private readonly ids: BrokerIds,
    readonly nodeId: number,
    readonly clusterId: string,
  ) {
    const drop = (): void => this.invalidate();
    node.metadata.onChange(drop);
    node.membership.on("members", drop);
    node.membership.on("fenced", drop);
    node.membership.on("registered", drop);
  }

  /** Claims this node's broker id (and the cluster id, if no broker made one yet). */
  static async join(node: ClusterNode): Promise<EtcdKafkaCluster> {
    const ids = new BrokerIds(node.metadata, node.options.serverName);
    const nodeId = await ids.claim();
    if (nodeId >= PRODUCER_ID_STRIDE) throw new Error(`Kafka broker id ${nodeId}: at most ${PRODUCER_ID_STRIDE} brokers (producer ids are interleaved by broker id)`);
    return new EtcdKafkaCluster(node, ids, nodeId, await clusterIdOf(node));
  }

  private get self(): string {
    return this.node.options.serverName;
  }

  private invalidate(): void {
    this.cache.clear();
    this.brokerList = null;
  }

  brokers(): KafkaBroker[] {
    this.brokerList ??= this.liveBrokers();
    return this.brokerList;
  }

  private liveBrokers(): KafkaBroker[] {
    const out: KafkaBroker[] = [];
    for (const m of this.node.membership.members()) {
      const addr = m.record?.kafka;
      if (addr === undefined || addr === null) continue;
      const id = this.ids.idOf(m.name);
      const colon = addr.lastIndexOf(":");
      if (id === undefined || colon < 0) continue;
      out.push({ id, host: addr.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port: Number(addr.slice(colon + 1)) });
    }
    // The broker a client talks to is always among them, even while its own record is being rewritten.
    if (!out.some((b) => b.id === this.nodeId)) out.push({ id: this.nodeId, host: "", port: 0 });
    return out.sort((a, b) => a.id - b.id);
  }

  controllerId(): number {
    return this.brokers()[0].id;
  }

  private isLiveBroker(name: string): boolean {
    if (name === this.self) return true; // it is answering
    const id = this.ids.idOf(name);
    return id !== undefined && this.brokers().some((b) => b.id === id);
  }

  topic(account: string, stream: string): PlacedTopic | undefined {
    let topics = this.cache.get(account);
    if (topics === undefined) this.cache.set(account, (topics = new Map()));
    let t = topics.get(stream);
    if (t === undefined) {
      const p = this.node.placements.get(account, stream)?.placement;
      if (p === undefined) return undefined;
      t = this.placed(p);
      topics.set(stream, t);
    }
    return t;
  }

  topics(account: string): PlacedTopic[] {
    return this.node.placements.list(account).map((p) => this.topic(account, p.stream)!).filter((t) => t !== undefined);
  }

  private placed(p: StreamPlacement): PlacedTopic {
    const config = p.config as { metadata?: Record<string, string> } | null;
    const move = moveOf(p);
    const id = (n: string): number => this.ids.idOf(n) ?? -1;
    const replicas = p.leaders.map((_, i) => replicasOf(p, i));
    return {
      moving: move === undefined ? null : { partition: move.partition, to: this.ids.idOf(move.to) ?? -1 },
      reassigning: p.leaders.map((_, i) => {
        const r = p.reassigning?.[i] ?? null;
        if (r === null) return null;
        return { replicas: replicas[i].map(id), adding: r.target.filter((n) => !r.original.includes(n)).map(id), removing: r.original.filter((n) => !r.target.includes(n)).map(id) };
      }),
      stream: p.stream,
      origin: p.origin,
      topic: config?.metadata?.[TOPIC_METADATA_KEY] ?? p.stream,
      leaders: p.leaders.map((n) => this.ids.idOf(n) ?? -1),
      live: p.leaders.map((n) => this.isLiveBroker(n)),
      // Also without its lease (etcd away): nothing moves a partition to another node yet, so no
      // two nodes can both lead one, and the data plane keeps serving through an etcd outage.
      local: p.leaders.map((n) => n === this.self),
      replicas: replicas.map((set) => set.map(id)),
      // Unreplicated: the leader is the ISR while it is up.
      isr: replicas.map((set, i) => (p.isr?.[i] ?? set.filter((n) => this.isLiveBroker(n))).map(id)),
      offline: replicas.map((set) => set.filter((n) => !this.isLiveBroker(n)).map(id)),
      epochs: p.leaders.map((_, i) => p.epochs?.[i] ?? 0),
      subjects: p.subjects,
      config: p.config,
      created: p.created,
    };
  }

  /** Nodes that cannot lead a Kafka partition: members without a Kafka listener. */
  private withoutKafka(): Set<string> {
    const out = new Set<string>();
    for (const m of this.node.membership.members()) if (m.record !== undefined && (m.record.kafka === null || this.ids.idOf(m.name) === undefined)) out.add(m.name);
    return out;
  }

  /** Nodes that cannot hold a copy of a replicated partition: followers fetch over the routes, so a node without them is left out. */
  private withoutRoutes(): Set<string> {
    const out = this.withoutKafka();
    for (const m of this.node.membership.members()) if (m.record !== undefined && m.record.route_url === null) out.add(m.name);
    if (this.node.membership.members().find((m) => m.name === this.self)?.record?.route_url == null) out.add(this.self);
    return out;
  }

  routed(id: number): boolean {
    const name = this.nameOf(id);
    if (name === this.self) return true;
    const exclude = this.withoutRoutes();
    return name !== undefined && !exclude.has(name) && !exclude.has(this.self);
  }

  replicableBrokers(): number {
    const exclude = this.withoutRoutes();
    return this.node.placements.nodes().filter((n) => !exclude.has(n.name)).length;
  }

  async place(account: string, stream: string, partitions: number, config: unknown, subjects: string[], replicas: number, minIsr: number, limits?: Readonly<AccountLimits>, ownSubjects = false): Promise<boolean> {
    const maxStreams = limits?.maxStreams ?? 0;
    // Each partition's copies reserve its max_bytes (retention.bytes), as JetStream's streams do in the cluster.
    const normalized = limits === undefined ? undefined : normalizeStreamConfig(config);
    const exclude = replicas > 1 ? this.withoutRoutes() : this.withoutKafka();
    const live = this.node.placements.nodes().filter((n) => !exclude.has(n.name)).length;
    // Kafka's own words (InvalidReplicationFactorException), which clients show as they are; replicas need routes between their nodes.
    if (replicas > live) {
      const routeless = replicas > 1 && live < this.node.placements.nodes().filter((n) => !this.withoutKafka().has(n.name)).length ? " that route to each other (cluster { port } on every node)" : "";
      throw new KafkaClusterError(`Replication factor: ${replicas} larger than available brokers${routeless}: ${live}.`, false, ErrorCode.INVALID_REPLICATION_FACTOR);
    }
    try {
      const r = await this.node.placements.place(account, stream, {
        partitions,
        spread: true,
        subjects,
        origin: "kafka",
        config,
        exclude,
        // min.insync.replicas is recorded with one replica too: a topic scaled up later (STREAM.UPDATE's num_replicas)
        // keeps it, rather than falling back to JetStream's majority while DescribeConfigs shows the topic's own.
        ...(replicas > 1 ? { replicas } : {}),
        minIsr,
        // The account's streams in the whole cluster (each node holds only its own): JetStream's words, as on one node.
        admit: (others) => {
          if (maxStreams > 0 && others.length >= maxStreams) throw new KafkaClusterError(`account ${account}: maximum number of streams reached`, false, ErrorCode.POLICY_VIOLATION);
          // Judged again here, with the placements being made through this node (the caller's check saw only those made):
          // a stream capturing the topic's subject, placed at the same moment, was placed beside it.
          if (ownSubjects) for (const subject of subjects) {
            if (others.some((p) => p.subjects.some((s) => subjectsIntersect(s, subject)))) throw new KafkaClusterError(`subject ${subject} is already captured by another stream`, false, ErrorCode.POLICY_VIOLATION);
          }
          const over = normalized === undefined ? null : clusterLimitError(limits!, normalized, partitions * replicas, others);
          if (over !== null) throw new KafkaClusterError(`account ${account}: ${over.message}`, false, ErrorCode.POLICY_VIOLATION);
        },
      });
      return r.created;
    } catch (err) {
      throw kafkaError(err);
    }
  }

  limitError(account: string, config: StreamConfig, copies: number, limits: Readonly<AccountLimits>): ApiError | null {
    return clusterLimitError(limits, config, copies, this.node.placements.list(account).filter((p) => p.stream !== config.name));
  }

  changeLimitError(account: string, stream: string, change: { config?: unknown; count?: number }, limits: Readonly<AccountLimits>): ApiError | null {
    const before = this.node.placements.get(account, stream)?.placement;
    if (before === undefined) return null;
    const was = placedReserving(before);
    if ((was.config.storage === "memory" ? limits.maxMemory : limits.maxStorage) < 0) return null;
    const config = normalizeStreamConfig(change.config ?? before.config);
    let copies = placedCopies(before);
    // New partitions get as many replicas as the first has (grown()).
    const more = change.count === undefined ? 0 : change.count - before.leaders.length;
    if (more > 0) copies += more * (before.replicas === undefined ? 1 : (before.reassigning?.[0]?.target.length ?? before.replicas[0].length));
    const previous = reservationOf(was.config, was.partitions.length);
    // A change that does not grow the reservation is not judged (storageJudge).
    if (reservationOf(config, copies) <= previous) return null;
    return clusterLimitError(limits, config, copies, this.node.placements.list(account).filter((p) => p.stream !== stream), previous);
  }

  async grow(account: string, stream: string, count: number, limits?: Readonly<AccountLimits>): Promise<void> {
    // The placement grown, for the judgement of what its new partitions reserve (made before it, in the same round).
    let grown: StreamPlacement | undefined;
    await this.update(account, stream, (p) => (grown = this.grown(p, count)), this.storageJudge(account, stream, limits, () => grown, (was) => was.config.max_bytes > 0));
  }

  private grown(p: StreamPlacement, count: number): StreamPlacement {
    const more = count - p.leaders.length;
    if (more <= 0) throw new KafkaClusterError(`topic already has ${p.leaders.length} partitions`, false);
    const exclude = p.replicas !== undefined ? this.withoutRoutes() : this.withoutKafka();
    const leaders = this.node.placements.choose({ partitions: more, spread: true, tags: p.tags, cluster: p.cluster }, exclude);
    if (p.replicas === undefined) return { ...p, leaders: [...p.leaders, ...leaders] };
    // As many replicas as the topic's first partition has (a reassignment's target, while one runs), as Kafka adds them;
    // new and empty, every replica is in sync from the start.
    const factor = p.reassigning?.[0]?.target.length ?? p.replicas[0].length;
    // Too few live brokers for the factor is refused for good, in Kafka's words (InvalidReplicationFactorException), not
    // retried: clients retry REQUEST_TIMED_OUT until they give up.
    const brokers = this.replicableBrokers();
    if (factor > brokers) throw new KafkaClusterError(`Replication factor: ${factor} larger than available brokers: ${brokers}.`, false, ErrorCode.INVALID_REPLICATION_FACTOR);
    const sets = leaders.map((leader) => [leader, ...this.node.placements.moreReplicas(factor - 1, p.tags, new Set([leader, ...exclude]))]);
    return {
      ...p,
      leaders: [...p.leaders, ...leaders],
      replicas: [...p.replicas, ...sets],
      epochs: [...(p.epochs ?? p.leaders.map(() => 1)), ...sets.map(() => 1)],
      isr: [...(p.isr ?? p.replicas.map((set) => [...set])), ...sets.map((set) => [...set])],
      ...(p.reassigning !== undefined ? { reassigning: [...p.reassigning, ...sets.map(() => null)] } : {}),
    };
  }

  async reconfigure(account: string, stream: string, config: unknown, minIsr: number, limits?: Readonly<AccountLimits>): Promise<void> {
    // A stream JetStream made keeps its majority: min.insync.replicas is a Kafka topic's.
    let changed: StreamPlacement | undefined;
    await this.update(account, stream, (p) => (changed = { ...p, config, ...(p.origin === "kafka" ? { minIsr } : {}) }), this.storageJudge(account, stream, limits, () => changed, (was, before) => {
      const will = placedReserving({ ...before, config });
      return reservationOf(will.config, will.partitions.length) > reservationOf(was.config, was.partitions.length);
    }));
  }

  /**
   * The judgement of a change that may grow a placed stream's storage
   * reservation (its max_bytes on each copy of each partition), against
   * the account's other streams in the whole cluster, as a create's is: in
   * the account's rounds, under its guard. `after`: the placement as the
   * change makes it (called before the judgement); `grows`: whether the
   * change grows the reservation `was` of placement `before`. Undefined
   * (nothing to judge: the change is not held up by the account's creates)
   * when it does not, or the account bounds no storage of its type.
   */
  private storageJudge(
    account: string,
    stream: string,
    limits: Readonly<AccountLimits> | undefined,
    after: () => StreamPlacement | undefined,
    grows: (was: Reserving, before: StreamPlacement) => boolean,
  ): ((others: readonly StreamPlacement[]) => void) | undefined {
    const before = this.node.placements.get(account, stream)?.placement;
    if (limits === undefined || before === undefined) return undefined;
    const was = placedReserving(before);
    if ((was.config.storage === "memory" ? limits.maxMemory : limits.maxStorage) < 0 || !grows(was, before)) return undefined;
    const previous = reservationOf(was.config, was.partitions.length);
    return (others) => {
      const next = after();
      if (next === undefined) return;
      const over = clusterLimitError(limits, normalizeStreamConfig(next.config), placedCopies(next), others, previous);
      if (over !== null) throw new KafkaClusterError(`account ${account}: ${over.message}`, false, ErrorCode.POLICY_VIOLATION);
    };
  }

  async remove(account: string, stream: string): Promise<void> {
    try {
      await this.node.placements.remove(account, stream);
    } catch (err) {
      throw kafkaError(err);
    }
  }

  async reassign(account: string, stream: string, partition: number, to: number[] | null, limits?: Readonly<AccountLimits>): Promise<void> {
    // A replicated partition given more replicas than it keeps reserves its max_bytes on each one added.
    const copies = (p: StreamPlacement): number => p.reassigning?.[partition]?.target.length ?? p.replicas?.[partition]?.length ?? 1;
    let changed: StreamPlacement | undefined;
    const judge = this.storageJudge(account, stream, limits, () => changed, (was, before) => to !== null && before.replicas !== undefined && was.config.max_bytes > 0 && to.length > copies(before));
    await this.update(account, stream, (p) => (changed = this.reassigned(p, stream, partition, to)), judge);
  }

  private reassigned(p: StreamPlacement, stream: string, partition: number, to: number[] | null): StreamPlacement {
    if (partition < 0 || partition >= p.leaders.length) throw new KafkaClusterError(`Unable to find partition ${partition} of ${stream}.`, false, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION);
    if (p.replicas !== undefined) return this.reassignReplicas(p, partition, to);
    if (to !== null && to.length > 1) {
      throw new KafkaClusterError(
        `The manual partition assignment includes ${to.length} replicas: a partition of one replica moves to one broker (the replication factor is chosen when the topic is created).`,
        false,
        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
      );
    }
    const one = to === null ? null : to[0];
    const move = moveOf(p);
    const ours = move !== undefined && move.partition === partition;
    if (one === null || p.leaders[partition] === this.nameOf(one)) {
      // Back to where it is (Kafka reverts to the original replicas the same way): the move under way, if any, is cancelled.
      if (!ours && one === null) throw new KafkaClusterError("No partition reassignment is in progress.", false, ErrorCode.NO_REASSIGNMENT_IN_PROGRESS);
      if (ours) delete p.moving;
      return p;
    }
    const target = this.liveTarget(one);
    if (ours && move.to === target) return p; // asked again: under way
    if (move !== undefined) {
      throw new KafkaClusterError(
        `A partition reassignment is in progress (partition ${move.partition} to ${move.to}): one move per topic at a time.`,
        false,
        ErrorCode.REASSIGNMENT_IN_PROGRESS,
      );
    }
    return { ...p, moving: newMove(partition, target) };
  }

  /**
   * A replicated partition's new replicas, as Kafka reassigns them: the
   * target's new brokers are added to the replicas (in a new epoch: they
   * copy the log and join the ISR once caught up), and once every target
   * broker is in sync the leader drops the others (stream-replicas.ts,
   * `reassigning`). Null cancels one under way: back to the original
   * replicas, unless the leadership already went to one outside them.
   */
  private reassignReplicas(p: StreamPlacement, partition: number, to: number[] | null): StreamPlacement {
    const current = p.replicas![partition];
    const under = p.reassigning?.[partition] ?? null;
    if (to === null) {
      if (under === null) throw new KafkaClusterError("No partition reassignment is in progress.", false, ErrorCode.NO_REASSIGNMENT_IN_PROGRESS);
      const leader = p.leaders[partition];
      if (!under.original.includes(leader)) {
        throw new KafkaClusterError(`The partition is led by ${leader}, not one of its original replicas, by now: reassign it to them instead.`, false, ErrorCode.INVALID_REPLICA_ASSIGNMENT);
      }
      return reassignmentEnded(p, partition, under.original, true);
    }
    if (to.length < 2) {
      throw new KafkaClusterError("The manual partition assignment names one replica for a replicated partition: the replication factor cannot be lowered to one by a reassignment.", false, ErrorCode.INVALID_REPLICA_ASSIGNMENT);
    }
    const target = to.map((id) => this.liveTarget(id, true));
    // The same brokers: only the preferred leader's place changes (and a reassignment under way has nothing left to drop).
    if (target.length === current.length && target.every((n) => current.includes(n))) return reassignmentEnded(p, partition, target, false);
    return withReassignment(p, partition, target);
  }

  /** The node of broker `id`, if it is live with a Kafka listener (and routes, to hold a `replicated` partition's copy); else Kafka's refusal. */
  private liveTarget(id: number, replicated = false): string {
    const name = this.nameOf(id);
    if (name === undefined || !this.isLiveBroker(name) || (replicated ? this.withoutRoutes() : this.withoutKafka()).has(name)) {
      throw new KafkaClusterError(`The manual partition assignment includes broker ${id}, but no such broker is registered.`, false, ErrorCode.INVALID_REPLICA_ASSIGNMENT);
    }
    return name;
  }

  /** The node that claimed broker id `id`, if any. */
  nodeName(id: number): string | undefined {
    return this.nameOf(id);
  }

  private nameOf(id: number): string | undefined {
    for (const [name, claimed] of this.ids.all()) if (claimed === id) return name;
    return undefined;
  }

  /** `admit`: judged in the account's rounds (Placements.update's `judged`). */
  private async update(account: string, stream: string, change: (p: StreamPlacement) => StreamPlacement, admit?: (others: readonly StreamPlacement[]) => void): Promise<void> {
    try {
      await this.node.placements.update(account, stream, change, [], admit, admit !== undefined);
    } catch (err) {
      throw kafkaError(err);
    }
  }
}

/** The cluster's errors as the door takes them: retriable unless the change itself is refused. */
function kafkaError(err: unknown): KafkaClusterError {
  if (err instanceof KafkaClusterError) return err;
  const e = err as Error;
  switch (e.name) {
    case "MetadataUnavailableError":
    case "FencedError":
    case "ConcurrentChangeError":
    case "NoSuitablePeersError":
    case "NodeJustGoneError":
      return new KafkaClusterError(e.message, true);
    default:
      return new KafkaClusterError(e.message, false);
  }
}

async function clusterIdOf(node: ClusterNode): Promise<string> {
  for (;;) {
    const e = node.metadata.get(CLUSTER_ID_KEY);
    if (e !== undefined && e.value !== "") return e.value;
    try {
      await node.metadata.commit([{ key: CLUSTER_ID_KEY, expect: 0, put: randomBytes(16).toString("base64url") }]);
    } catch (err) {
      if ((err as Error).name !== "ConcurrentChangeError") throw err; // another broker made it first: read it
    }
  }
}
