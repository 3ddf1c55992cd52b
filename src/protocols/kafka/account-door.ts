/**
 * The Kafka door as the connections of one account see it: the listener's
 * settings and budgets, shared by every account (through the door), and
 * the account's own topics (its JetStream), consumer groups, idempotent
 * producers and transactions. Two accounts' topics, groups and
 * transactional ids of the same name never meet, as two accounts'
 * subjects never do over NATS.
 *
 * What an account's groups and transactions keep on disk lies under its
 * JetStream directory (`<dir>/kafka`): for the default account the
 * store's `kafka/`, as before accounts had JetStream.
 */

import { join } from "node:path";
import type { JetStream } from "../../streams/jetstream.js";
import type { KafkaDoor } from "./door.js";
import { partitionCount } from "./cluster.js";
import { groupCommitAway, groupHoldAway, offerCoordinatorCalls } from "./coordinator-calls.js";
import { offerElectCalls } from "./elect.js";
import { LeaderRebalancer } from "./leader-rebalance.js";
import { GroupCoordinator } from "./groups.js";
import { ReplicatedOffsets } from "./offsets-log.js";
import { ReplicatedTxnState } from "./txn-state-log.js";
import { ProducerStates } from "./producers.js";
import { PartitionProducers } from "./partition-producers.js";
import { TransactionCoordinator } from "./transactions.js";
import { TxnIndexes } from "./txn-index.js";
import { TopicIds } from "./topic-ids.js";
import { BATCH_HEADER, CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT } from "./messages.js";

export class AccountDoor {
  private constructor(
    readonly door: KafkaDoor,
    /** The account's streams: its topics. */
    readonly js: JetStream,
    readonly groups: GroupCoordinator,
    readonly producers: ProducerStates,
    readonly transactions: TransactionCoordinator,
    /** What each stream's logs say of transactions: the last stable offset, aborted ranges, what NATS readers see. */
    readonly txnIndexes: TxnIndexes,
  ) {
    this.partitionProducers = new PartitionProducers(js, door.options.maxProducerStates);
    this.topicIds = new TopicIds(js.account.name);
    this.offsets = inCluster(door) ? new ReplicatedOffsets(this) : null;
    groups.store = this.offsets;
    // Once the groups are loaded (a door that fails to open starts nothing to stop).
    groups.startExpiry();
    this.txnState = inCluster(door) ? new ReplicatedTxnState(this) : null;
    transactions.store = this.txnState;
    if (inCluster(door)) {
      const withdrawCoordinatorCalls = offerCoordinatorCalls(this);
      const withdrawElectCalls = offerElectCalls(this);
      this.rebalancer = new LeaderRebalancer(this);
      this.rebalancer.start();
      this.withdrawCalls = () => {
        withdrawCoordinatorCalls();
        withdrawElectCalls();
      };
      transactions.commitAway = (groupId, entries, producerId) => groupCommitAway(this, groupId, entries, producerId);
      transactions.holdAway = (groupId, producerId, until) => groupHoldAway(this, groupId, producerId, until);
    }
  }

  /** Each idempotent producer's last batches in each partition as this node's log received them (a takeover's recovery looks here too). */
  readonly partitionProducers: PartitionProducers;

  /** The account's topic ids (Metadata v10+, Fetch v13+), derived, not stored (topic-ids.ts). */
  readonly topicIds: TopicIds;

  /** In a cluster, what hands partitions back to their preferred replicas (Kafka's auto.leader.rebalance.enable); null on a single node. */
  readonly rebalancer: LeaderRebalancer | null = null;

  /** Withdraws the calls other brokers make of this one's coordinators (coordinator-calls.ts). */
  private readonly withdrawCalls: (() => void) | null = null;

  /** In a cluster, the replicated transaction coordinators' state, which also says which broker coordinates an id; null on a single node. */
  readonly txnState: ReplicatedTxnState | null;

  /** In a cluster, the replicated committed offsets, which also say which broker coordinates a group; null on a single node. */
  readonly offsets: ReplicatedOffsets | null;

  /**
   * Loads the account's groups and its transactions, finishing or aborting
   * those a crash left open, before any of its clients is served.
   */
  static async open(door: KafkaDoor, js: JetStream): Promise<AccountDoor> {
    const dir = join(js.options.storeDir, "kafka");
    const debug = (line: string): void => door.log.debug(`kafka ${line}`);
    const warn = (line: string): void => door.log.warn(`kafka ${line}`);
    const groups = new GroupCoordinator(join(dir, "groups"), door.options, debug, warn);
    // In a cluster, groups live in the replicated offsets topic and are loaded as this node comes to lead its partitions.
    if (!inCluster(door)) await groups.load().catch(async (err: unknown) => {
      await groups.close();
      throw err;
    });
    const producers = new ProducerStates(door.options.maxProducerStates);
    if (door.cluster !== null) producers.clustered(door.cluster.nodeId);
    const txnIndexes = new TxnIndexes(js, dir, (line) => door.log.warn(line));
    const partitionsOf = (topic: string): number | undefined => partitionCount({ door, js, account: js.account.name }, topic);
    const transactions = new TransactionCoordinator(js, groups, txnIndexes, partitionsOf, dir, () => producers.allocate(), debug, warn);
    try {
      // The coordinator's records of aborted and hidden ranges before the indexes (read from the logs now) name their streams.
      await txnIndexes.load([join(dir, "aborted"), join(dir, "hidden")]);
      // In a cluster, transactions live in the replicated __transaction_state and are loaded as this node comes to lead its partitions.
      if (!inCluster(door)) await transactions.load();
    } catch (err) {
      await groups.close();
      txnIndexes.close();
      throw err;
    }
    reserveKafkaMarks(js);
    return new AccountDoor(door, js, groups, producers, transactions, txnIndexes);
  }

  get account(): string {
    return this.js.account.name;
  }

  // The listener's, the same for every account.
  get broker(): KafkaDoor["broker"] {
    return this.door.broker;
  }
  get options(): KafkaDoor["options"] {
    return this.door.options;
  }
  get log(): KafkaDoor["log"] {
    return this.door.log;
  }
  get nodeId(): number {
    return this.door.nodeId;
  }
  get port(): number {
    return this.door.port;
  }
  get clusterId(): string {
    return this.door.cluster?.clusterId ?? this.door.clusterId;
  }
  get maxRequestBytes(): number {
    return this.door.maxRequestBytes;
  }
  get decompression(): KafkaDoor["decompression"] {
    return this.door.decompression;
  }
  get responses(): KafkaDoor["responses"] {
    return this.door.responses;
  }

  async close(): Promise<void> {
    this.rebalancer?.close();
    this.withdrawCalls?.();
    const groups = this.groups.close();
    this.offsets?.close();
    this.txnState?.close();
    this.transactions.close();
    this.txnIndexes.close();
    this.partitionProducers.close();
    this.js.reservedHeaders.delete(BATCH_HEADER);
    this.js.reservedSubjects.delete(CONTROL_SUBJECT_COMMIT);
    this.js.reservedSubjects.delete(CONTROL_SUBJECT_ABORT);
    await groups;
  }
}

/**
 * A producer's batches are found again by `Kafka-Batch` (produce.ts
 * recoverProducer), and a transaction is ended by a message on
 * `$KAFKA.TXN.COMMIT` or `.ABORT` (txn-index.ts): a NATS publish may forge
 * neither. Reserved by the server before its NATS listener opens, and by
 * each account door.
 */
export function reserveKafkaMarks(js: JetStream): void {
  js.reservedHeaders.set(BATCH_HEADER, "the Kafka door, which marks an idempotent producer's batches with it");
  const markers = "the Kafka door, which ends a producer's transactions with its markers";
  js.reservedSubjects.set(CONTROL_SUBJECT_COMMIT, markers);
  js.reservedSubjects.set(CONTROL_SUBJECT_ABORT, markers);
}

/** Whether the door is, or is about to be (its accounts open before the node joins), one broker of a cluster. */
function inCluster(door: KafkaDoor): boolean {
  return door.cluster !== null || door.options.clustered === true;
}
