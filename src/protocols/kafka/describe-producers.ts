/**
 * DescribeProducers v0 (KIP-664): the idempotent and transactional
 * producers of a partition, as its leader knows them: what
 * `kafka-transactions.sh describe-producers` prints and `find-hanging`
 * looks through for transactions left open. Kafka keeps this per partition
 * as its producer state; nagare reads it from the log when asked: every
 * producer with a batch or a marker among the partition's last
 * PRODUCER_SCAN records, and every producer with a transaction open there,
 * however long ago it began (the transaction index knows those).
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { ledPartition } from "./cluster.js";
import { decodeDescribeProducers } from "./requests.js";
import { PRODUCER_SCAN, scanProducers, type ProducerFound } from "./stored-batches.js";
import { findTopic, mayReadTopic } from "./topics.js";
import type { Stream } from "../../streams/stream.js";

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
  // A partition named twice is read once.
  const read = new Map<string, Promise<PartitionAnswer>>();
  const answers: Array<{ name: string; partitions: PartitionAnswer[] }> = [];
  for (const t of topics) {
    const local = findTopic(door.js, t.name);
    const denied = local !== undefined && !mayReadTopic(conn.permissions, local);
    const partitions: PartitionAnswer[] = [];
    for (const index of t.partitions) {
      if (denied) {
        partitions.push({ index, error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, message: "Authorization failed.", producers: [] });
        continue;
      }
      const led = ledPartition(door, t.name, index);
      if (typeof led === "number") {
        partitions.push({ index, error: led, message: led === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION ? `This server does not host this topic-partition.` : null, producers: [] });
        continue;
      }
      const key = `${index} ${t.name}`;
      let answer = read.get(key);
      if (answer === undefined) read.set(key, (answer = describePartition(door, led, index)));
      partitions.push(await answer);
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

async function describePartition(door: AccountDoor, stream: Stream, index: number): Promise<PartitionAnswer> {
  const log = stream.partitions[index];
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
    await scanProducers(log, lastSeq - PRODUCER_SCAN + 1, lastSeq, visit);
    for (const open of door.txnIndexes.openTransactions(stream, index)) {
      // Open since before the records read above: its newest batch tells its epoch and sequence.
      if (!byId.has(open.producerId)) await scanProducers(log, open.last, open.last, visit);
      const a = byId.get(open.producerId);
      if (a !== undefined) a.txnStart = open.first - 1;
    }
  } catch (err) {
    return { index, error: ErrorCode.KAFKA_STORAGE_ERROR, message: (err as Error).message, producers: [] };
  }
  return { index, error: ErrorCode.NONE, message: null, producers: [...byId.values()] };
}
