/**
 * The transaction coordinator's state in a cluster, replicated as Kafka
 * replicates it: in the internal topic `__transaction_state`
 * (coordinator-topic.ts). A transactional id belongs to one partition, and
 * the broker that leads that partition is its coordinator. Each change of a
 * transactional id's state (its producer id and epoch, the partitions and
 * group offsets of its open transaction, a decision to commit or abort, the
 * end) is one record, the id's newest, acknowledged once every in-sync
 * replica has it. An in-sync follower that takes a partition over loads its
 * ids and, as after a restart, finishes each prepared commit or abort and
 * keeps each open transaction going, as Kafka's coordinators do.
 */

import type { StoredMessage } from "../../store/log.js";
import type { AccountDoor } from "./account-door.js";
import { CoordinatorTopic, partitionOfKey, token, untoken } from "./coordinator-topic.js";
import { TXN_STATE_TOPIC } from "./topics.js";
import type { SavedTxn } from "./transactions.js";

/** Kafka's transaction.state.log.num.partitions is 50; a few suffice to spread coordinators over a small cluster. */
const TXN_STATE_PARTITIONS = 6;
const SUBJECT_PREFIX = "$NG.KAFKA.TXN.STATE.";

export class ReplicatedTxnState extends CoordinatorTopic {
  constructor(door: AccountDoor) {
    super(door, TXN_STATE_TOPIC, TXN_STATE_PARTITIONS, SUBJECT_PREFIX, "transactional id");
  }

  protected adopt(p: number, records: StoredMessage[]): void {
    const found: Array<[string, SavedTxn]> = [];
    for (const m of records) {
      if (!m.subject.startsWith(SUBJECT_PREFIX)) continue;
      found.push([untoken(m.subject.slice(SUBJECT_PREFIX.length)), JSON.parse(m.data.toString()) as SavedTxn]);
    }
    this.door.transactions.adopt(found, `partition ${p} of ${TXN_STATE_TOPIC} came to this broker`);
  }

  protected drop(p: number, why: string): void {
    const count = this.partitionCount;
    const dropped = this.door.transactions.drop((id) => partitionOfKey(id, count) === p);
    this.door.log.debug(`kafka ${TXN_STATE_TOPIC} partition ${p}: ${dropped} transactional id(s) dropped: ${why}`);
  }

  /** Writes a transactional id's state; resolves once every in-sync replica has it. Throws CoordinatorMoved. */
  write(id: string, saved: SavedTxn): Promise<void> {
    return this.append(this.partitionOf(id), id, [[`${SUBJECT_PREFIX}${token(id)}`, Buffer.from(JSON.stringify(saved))]]);
  }
}
