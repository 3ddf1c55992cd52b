/**
 * DescribeProducers v0 (KIP-664): the idempotent and transactional
 * producers of a partition, as a replica of it knows them (its leader, or
 * a follower asked directly): what `kafka-transactions.sh
 * describe-producers` prints and `find-hanging` looks through for
 * transactions left open. Kafka keeps this per partition as its producer
 * state; nagare reads it from the replica's log when asked: every producer
 * with a batch or a marker among the partition's last PRODUCER_SCAN
 * sequences, and every producer with a transaction open there, however
 * long ago it began (the transaction index knows those).
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { hostsReplica, ledPartition } from "./cluster.js";
import { readTxnMark, type TxnMark } from "./messages.js";
import { decodeDescribeProducers } from "./requests.js";
import { PRODUCER_SCAN, scanProducers, type ProducerFound } from "./stored-batches.js";
import { findTopic, mayReadTopic } from "./topics.js";
import type { Stream } from "../../streams/stream.js";
import { withinMs } from "../../util/settle.js";

/** How long an answer waits for the transaction index to read what was appended before it. */
const INDEX_WAIT_MS = 5_000;

/** Partitions one request may name (each scans up to PRODUCER_SCAN sequences); past it, each is INVALID_REQUEST. */
const MAX_PARTITIONS = 10_000;
/** Producers one answer lists (about 40 bytes each): the partitions past it are INVALID_REQUEST, so the answer stays bounded. */
const MAX_LISTED = 100_000;

interface ActiveProducer {
  producerId: number;
  epoch: number;
  /** The last sequence of its newest batch in its epoch; -1 when a marker of a newer epoch came after it. */
  lastSequence: number;
  lastTimestamp: number;
  /** The coordinator epoch of its newest marker here; -1 before any. nagare's coordinators write 0 (fetch.ts). */
  coordinatorEpoch: number;
  /** The offset of its open transaction's first record, or -1. */
  txnStart: number;
}

interface PartitionAnswer {
  index: number;
  error: number;
  message: string | null;
  producers: ActiveProducer[];
}

export async function handleDescribeProducers(door: AccountDoor, { conn, r, w }: RequestContext): Promise<boolean> {
  const { topics } = decodeDescribeProducers(r);
  let named = 0;
  for (const t of topics) named += t.partitions.length;
  // A partition named twice is read once.
  const read = new Map<string, Promise<PartitionAnswer>>();
  const answers: Array<{ name: string; partitions: PartitionAnswer[] }> = [];
  let listed = 0;
  for (const t of topics) {
    const local = findTopic(door.js, t.name);
    const denied = local !== undefined && !mayReadTopic(conn.permissions, local);
    const partitions: PartitionAnswer[] = [];
    for (const index of t.partitions) {
      if (named > MAX_PARTITIONS) {
        partitions.push(refused(index, `a request may name at most ${MAX_PARTITIONS} partitions`));
        continue;
      }
      if (denied) {
        partitions.push({ index, error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, message: "Authorization failed.", producers: [] });
        continue;
      }
      const replica = replicaHere(door, t.name, index);
      if (typeof replica === "number") {
        partitions.push({ index, error: replica, message: replica === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION ? "This server does not host this topic-partition." : null, producers: [] });
        continue;
      }
      const key = `${index} ${t.name}`;
      let answer = read.get(key);
      if (answer === undefined) read.set(key, (answer = describePartition(door, replica, index)));
      const a = await answer;
      listed += a.producers.length;
      partitions.push(listed > MAX_LISTED ? refused(index, `an answer lists at most ${MAX_LISTED} producers: ask for fewer partitions`) : a);
    }
    answers.push({ name: t.name, partitions });
  }
  w.i32(0); // throttle_time_ms
  w.array(answers, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      w.i32(p.index).i16(p.error).nullableString(p.message);
      w.array(p.producers, (w, a) => {
        w.i64(a.producerId).i32(a.epoch).i32(a.lastSequence).i64(a.lastTimestamp).i32(a.coordinatorEpoch).i64(a.txnStart);
        w.taggedFields();
      });
      w.taggedFields();
    });
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

function refused(index: number, why: string): PartitionAnswer {
  return { index, error: ErrorCode.INVALID_REQUEST, message: why, producers: [] };
}

/**
 * The stream holding a replica of the partition here, or the error: its
 * leader, and (in a cluster) a follower with a copy, which answers from it
 * as Kafka's followers do (`describe-producers --broker-id`).
 */
function replicaHere(door: AccountDoor, topic: string, index: number): Stream | number {
  const led = ledPartition(door, topic, index);
  if (led !== ErrorCode.NOT_LEADER_OR_FOLLOWER || !hostsReplica(door, topic, index)) return led;
  const local = findTopic(door.js, topic);
  return local !== undefined && index < local.partitions.length ? local : led;
}

async function describePartition(door: AccountDoor, stream: Stream, index: number): Promise<PartitionAnswer> {
  const log = stream.partitions[index];
  const mark: TxnMark = { producerId: -1, epoch: -1 };
  const byId = new Map<number, ActiveProducer>();
  const visit = (f: ProducerFound): void => {
    let a = byId.get(f.producerId);
    if (a === undefined) byId.set(f.producerId, (a = { producerId: f.producerId, epoch: f.epoch, lastSequence: -1, lastTimestamp: -1, coordinatorEpoch: -1, txnStart: -1 }));
    if (f.marker) {
      // A marker of a newer epoch (a coordinator that fenced the producer) leaves no batch in that epoch: Kafka's entry loses its sequence.
      if (f.epoch > a.epoch) a.lastSequence = -1;
      a.coordinatorEpoch = 0;
    } else {
      // Sequences wrap at 2^31, as Kafka's do.
      a.lastSequence = (f.baseSequence + f.count - 1) % 0x80000000;
    }
    if (f.epoch > a.epoch || !f.marker) a.epoch = f.epoch;
    a.lastTimestamp = f.timestamp;
  };
  try {
    const { lastSeq } = log.state();
    // Kafka's producer state moves with each append; the transaction index reads the log after it: what was appended before
    // this request is read first (the index stopped by a bound answers from where it stopped).
    await withinMs(door.txnIndexes.whenRead(stream, index, lastSeq), INDEX_WAIT_MS);
    await scanProducers(log, lastSeq - PRODUCER_SCAN + 1, lastSeq, visit);
    for (const open of door.txnIndexes.openTransactions(stream, index)) {
      // Open since before the records read above: its newest batch tells its epoch and sequence.
      if (!byId.has(open.producerId)) await scanProducers(log, open.last, open.last, visit, open.producerId);
      let a = byId.get(open.producerId);
      if (a === undefined) {
        // Its batch no longer whole (records of it deleted): its records still name the producer's epoch (`Kafka-Txn`).
        const m = await log.get(open.last);
        const epoch = m !== null && readTxnMark(m.headers, mark) ? mark.epoch : -1;
        byId.set(open.producerId, (a = { producerId: open.producerId, epoch, lastSequence: -1, lastTimestamp: m?.time ?? -1, coordinatorEpoch: -1, txnStart: -1 }));
      }
      a.txnStart = open.first - 1;
    }
  } catch (err) {
    return { index, error: ErrorCode.KAFKA_STORAGE_ERROR, message: (err as Error).message, producers: [] };
  }
  return { index, error: ErrorCode.NONE, message: null, producers: [...byId.values()] };
}
