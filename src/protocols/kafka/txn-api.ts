/**
 * The transaction APIs: AddPartitionsToTxn v0–1, AddOffsetsToTxn v0–1,
 * EndTxn v0–1 and TxnOffsetCommit v0–2. Their state lives in the
 * TransactionCoordinator (transactions.ts); this module is the wire format.
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { findTopic } from "./topics.js";
import { offsetKey, type CommittedOffset } from "./groups.js";
import { decodeAddOffsetsToTxn, decodeAddPartitionsToTxn, decodeEndTxn, decodeTxnOffsetCommit } from "./requests.js";

/** Bound on the partitions named in one request, before anything is looked up. */
const MAX_PARTITIONS_PER_REQUEST = 10_000;

export async function handleAddPartitionsToTxn(door: AccountDoor, { r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, topics } = decodeAddPartitionsToTxn(r);
  let count = 0;
  for (const t of topics) count += t.partitions.length;
  const results =
    count > MAX_PARTITIONS_PER_REQUEST
      ? topics.map((t) => ({ name: t.name, partitions: t.partitions.map((index) => ({ index, error: ErrorCode.INVALID_REQUEST })) }))
      : await door.transactions.addPartitions({ transactionalId, producerId, epoch }, topics);
  w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.i32(p.index).i16(p.error));
  });
  return true;
}

export async function handleAddOffsetsToTxn(door: AccountDoor, { r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, groupId } = decodeAddOffsetsToTxn(r);
  const error = groupId === "" ? ErrorCode.INVALID_GROUP_ID : await door.transactions.addOffsets({ transactionalId, producerId, epoch }, groupId);
  w.i32(0).i16(error);
  return true;
}

export async function handleEndTxn(door: AccountDoor, { r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, commit } = decodeEndTxn(r);
  const error = await door.transactions.endTxn({ transactionalId, producerId, epoch }, commit);
  w.i32(0).i16(error);
  return true;
}

export function handleTxnOffsetCommit(door: AccountDoor, { version, r, w }: RequestContext): boolean {
  const { transactionalId, groupId, producerId, epoch, topics } = decodeTxnOffsetCommit(r, version);
  const results = topics.map((t) => {
    const stream = findTopic(door.js, t.name);
    return { name: t.name, partitions: t.partitions.map((p) => ({ ...p, error: (stream === undefined || p.index < 0 || p.index >= stream.partitions.length ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION : ErrorCode.NONE) as number })) };
  });
  const entries: Array<[string, CommittedOffset]> = [];
  for (const t of results) for (const p of t.partitions) if (p.error === ErrorCode.NONE) entries.push([offsetKey(t.name, p.index), { offset: p.offset, metadata: p.metadata }]);
  const error = groupId === "" ? ErrorCode.INVALID_GROUP_ID : door.transactions.commitOffsets({ transactionalId, producerId, epoch }, groupId, entries);
  if (error !== ErrorCode.NONE) for (const t of results) for (const p of t.partitions) p.error = error;
  w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.i32(p.index).i16(p.error));
  });
  return true;
}
