/**
 * Kafka's automatic preferred-leader election (auto.leader.rebalance.enable,
 * on by default): a failover, a step-down or a rolling restart leaves
 * partitions led by a replica other than their preferred one (the first of
 * their replicas, the leader each was placed with, so that leadership is
 * spread), and every leader.imbalance.check.interval the partitions of each
 * broker whose share of them passes leader.imbalance.per.broker.percentage
 * are handed back to it, as ElectLeaders would (elect.ts).
 *
 * Kafka's controller makes these elections for the whole cluster; nagare
 * has no controller. Every node reads the same placement, so each one
 * computes the same imbalance per broker and hands over only the
 * partitions it leads itself: one actor per partition, no call between
 * nodes. A hand-over is the drain's and the step-down's (writes refused
 * meanwhile, every in-sync replica caught up, then one fenced write names
 * the new leader in a new epoch): nothing acknowledged is lost. Only a
 * preferred replica that is up and in sync is handed a partition, only
 * while every in-sync replica keeps up (a slow one would hold writes
 * refused), and a partition being moved is left alone. The share is
 * counted per account (each account's topics are a cluster of their own
 * to its clients), over every partition of its Kafka topics, replicated or
 * not, as Kafka counts them. Streams made through JetStream are left where
 * they are led, as nats-server leaves them (a step-down naming a replica
 * stays done).
 *
 * Kafka elects every partition of a broker past the share in one check,
 * and its preferred-replica election refuses none for lag. The hand-overs
 * here may be refused "not now" (a replica behind, one timed out), and a
 * check that handed back some and was refused the rest could leave the
 * broker below the share, the rest never tried again. A refused partition
 * is owed: it stays a candidate at later checks, whatever the share, until
 * it is handed back or its leadership changes otherwise. So is one passed
 * over at a check past the share (its preferred replica not in sync or
 * away, the partition moving, or its leadership here not yet taken up).
 */

import type { AccountDoor } from "./account-door.js";
import { handOver } from "./elect.js";
import { ErrorCode } from "./errors.js";

/**
 * The longest one hand-over may take, writes to the partition refused
 * meanwhile (a step-down's bound): an in-sync replica slow to catch up
 * costs writers at most this, and the partition is tried again at the
 * next check.
 */
const HAND_OVER_MS = 5_000;
/**
 * A partition is handed back only while every in-sync replica has caught
 * up within this long: one slow to fetch would hold writes refused for the
 * whole of HAND_OVER_MS (Kafka's election refuses none). It is looked at
 * again at the next check.
 */
const CAUGHT_UP_MS = 1_000;

/** A partition this node leads that its preferred replica should lead again. */
interface Candidate {
  stream: string;
  topic: string;
  partition: number;
  preferred: number;
  /** The leader epoch it was found in. */
  epoch: number;
}

export class LeaderRebalancer {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private closed = false;
  /** Checks made since start (tests wait on it), and partitions handed back. */
  checks = 0;
  handedBack = 0;
  /** Partitions whose hand-back was refused "not now", by stream and partition: the leader epoch it was decided in. */
  private readonly owed = new Map<string, number>();

  constructor(private readonly door: AccountDoor) {}

  /** Looks every interval, the first one interval from now (a cluster starting up settles first). */
  start(): void {
    const o = this.door.options;
    if (!o.autoLeaderRebalance || this.timer !== null || this.closed) return;
    this.timer = setInterval(() => void this.check(), o.leaderImbalanceCheckIntervalMs);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One check: the partitions this node leads whose preferred brokers are past the share, handed back one at a time. */
  async check(): Promise<void> {
    // A check still handing over (each waits for the replicas to catch up) is not overtaken by the next.
    if (this.running || this.closed) return;
    this.running = true;
    try {
      for (const c of this.candidates()) {
        if (this.closed) return;
        const to = this.door.door.cluster?.nodeName(c.preferred);
        if (to === undefined) continue;
        const outcome = await handOver(this.door, { stream: c.stream, partition: c.partition, to, ms: HAND_OVER_MS, caughtUpWithinMs: CAUGHT_UP_MS });
        const key = `${c.stream}/${c.partition}`;
        if (outcome.error === ErrorCode.NONE || outcome.error === ErrorCode.ELECTION_NOT_NEEDED) this.owed.delete(key);
        else this.owed.set(key, c.epoch);
        const what = `kafka: partition ${c.partition} of topic "${c.topic}" of account ${this.door.account}`;
        if (outcome.error === ErrorCode.NONE) {
          this.handedBack++;
          this.door.log.info(`${what} handed back to its preferred replica, broker ${c.preferred} (auto leader rebalance)`);
        } else if (outcome.error === ErrorCode.REQUEST_TIMED_OUT) {
          // Writes were refused for HAND_OVER_MS: worth an operator's eye.
          this.door.log.warn(`${what} was not handed back to broker ${c.preferred}: ${outcome.message ?? "timed out"}`);
        } else if (outcome.error !== ErrorCode.ELECTION_NOT_NEEDED) {
          // Not now (a replica behind, draining or away, the leadership moved meanwhile): the next check looks again.
          this.door.log.debug(`${what} was not handed back to broker ${c.preferred}: ${outcome.message ?? `error ${outcome.error}`}`);
        }
      }
    } finally {
      this.checks++;
      this.running = false;
    }
  }

  /** Kafka's KafkaController.checkAndTriggerAutoLeaderRebalance, for what this node leads. */
  private candidates(): Candidate[] {
    const cluster = this.door.door.cluster;
    if (cluster === null) return [];
    // Per preferred broker: the partitions it prefers, and those led elsewhere.
    const preferredBy = new Map<number, number>();
    const offBy = new Map<number, number>();
    // Kafka's topics only: a JetStream stream's leader stays where a step-down or a failover put it, as in nats-server.
    const placed = cluster.topics(this.door.account).filter((t) => t.origin === "kafka");
    for (const t of placed) {
      for (let i = 0; i < t.leaders.length; i++) {
        const preferred = t.replicas[i]?.[0];
        if (preferred === undefined) continue;
        preferredBy.set(preferred, (preferredBy.get(preferred) ?? 0) + 1);
        if (t.leaders[i] !== preferred) offBy.set(preferred, (offBy.get(preferred) ?? 0) + 1);
      }
    }
    const share = this.door.options.leaderImbalancePerBrokerPercentage / 100;
    const out: Candidate[] = [];
    // Owed partitions stay owed only while led here in the epoch their hand-back was decided in.
    const owed = new Map(this.owed);
    this.owed.clear();
    for (const t of placed) {
      for (let i = 0; i < t.leaders.length; i++) {
        const preferred = t.replicas[i]?.[0];
        if (preferred === undefined || t.leaders[i] === preferred || !t.local[i]) continue;
        const key = `${t.stream}/${i}`;
        const epoch = t.epochs[i] ?? 1;
        if (owed.get(key) === epoch) this.owed.set(key, epoch);
        else if ((offBy.get(preferred) ?? 0) / preferredBy.get(preferred)! <= share) continue;
        // Passed over for now, though its broker is past the share (or it was owed already): owed, as a refused hand-back
        // is. Else the others handed back in this check could take the broker below the share, and this one would stay
        // off for good (a partition just moved here whose lease is not yet held, a preferred replica still catching up).
        const notNow = (): void => void this.owed.set(key, epoch);
        // Kafka elects a preferred replica only when it is alive and in sync, and never a partition under reassignment.
        if (!t.isr[i].includes(preferred) || t.offline[i].includes(preferred) || t.moving?.partition === i || t.reassigning[i] !== null) {
          notNow();
          continue;
        }
        // Led here without a lease, or already being handed over: nothing to do (a hand-over would only refuse writes).
        if ((this.door.js.streams.get(t.stream)?.replicaGate(i)?.refusal(true) ?? null) !== null) {
          notNow();
          continue;
        }
        out.push({ stream: t.stream, topic: t.topic, partition: i, preferred, epoch });
      }
    }
    return out;
  }
}
