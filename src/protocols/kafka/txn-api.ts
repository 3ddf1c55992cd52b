/**
 * The transaction APIs: AddPartitionsToTxn v0–3, AddOffsetsToTxn v0–3,
 * EndTxn v0–3 and TxnOffsetCommit v0–3 (each flexible from v3), and the
 * admin's view of the coordinators (KIP-664): DescribeTransactions v0 and
 * ListTransactions v0–1. Their state lives in the TransactionCoordinator
 * (transactions.ts); this module is the wire format.
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { coordinatorError, coordinatorReady, partitionCount } from "./cluster.js";
import { defaultSubject, findTopic, streamNameOf, subjectFor } from "./topics.js";
import { committedOffset, MAX_OFFSET_METADATA, offsetKey, type CommittedOffset } from "./groups.js";
import { txnOffsetsAway } from "./coordinator-calls.js";
import { CoordinatorMoved } from "./coordinator-topic.js";
import { MAX_TRANSACTION_TIMEOUT_MS, type TxnRequest } from "./transactions.js";
import { withinCommitTimeout } from "./group-api.js";
import { decodeAddOffsetsToTxn, decodeAddPartitionsToTxn, decodeDescribeTransactions, decodeEndTxn, decodeListTransactions, decodeTxnOffsetCommit, KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION } from "./requests.js";

/** Bound on the partitions named in one request, before anything is looked up. */
const MAX_PARTITIONS_PER_REQUEST = 10_000;

/**
 * A request whose epoch is not its producer's is fenced: from v2 of
 * AddPartitionsToTxn, AddOffsetsToTxn and EndTxn Kafka names it
 * PRODUCER_FENCED (KIP-588), before INVALID_PRODUCER_EPOCH, which the
 * coordinator answers (transactions.ts).
 */
function fencedAs(version: number, error: number): number {
  return version >= 2 && error === ErrorCode.INVALID_PRODUCER_EPOCH ? ErrorCode.PRODUCER_FENCED : error;
}

export async function handleAddPartitionsToTxn(door: AccountDoor, { conn, version, flexible, r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, topics } = decodeAddPartitionsToTxn(r);
  let count = 0;
  for (const t of topics) count += t.partitions.length;
  const refused = coordinatorError(door, KEY_TYPE_TRANSACTION, transactionalId);
  const all = (error: number) => topics.map((t) => ({ name: t.name, partitions: t.partitions.map((index) => ({ index, error })) }));
  // Partitions led anywhere may join: the coordinator writes each marker at its partition's leader (JetStream.appendAt),
  // which needs a route between the two nodes.
  const unreached = refused !== ErrorCode.NONE || count > MAX_PARTITIONS_PER_REQUEST ? null : unreachable(door, topics);
  // Its markers are written there: the producer must be allowed to publish to the topic, as for its records.
  const perms = conn.permissions;
  const denied = perms === null ? [] : topics.filter((t) => !perms.mayPublish(publishSubjectOf(door, t.name))).map((t) => t.name);
  const results =
    refused !== ErrorCode.NONE
      ? all(refused)
      : count > MAX_PARTITIONS_PER_REQUEST
        ? all(ErrorCode.INVALID_REQUEST)
        : denied.length > 0
          ? topics.map((t) => ({ name: t.name, partitions: t.partitions.map((index) => ({ index, error: denied.includes(t.name) ? ErrorCode.TOPIC_AUTHORIZATION_FAILED : ErrorCode.OPERATION_NOT_ATTEMPTED })) }))
          : unreached !== null
            ? unreached
            : await door.transactions.addPartitions({ transactionalId, producerId, epoch }, topics);
  w.i32(0); // throttle_time_ms
  w.topicPartitions(results, flexible, (w, p) => w.i32(p.index).i16(fencedAs(version, p.error)));
  w.taggedFields();
  return true;
}

export async function handleAddOffsetsToTxn(door: AccountDoor, { version, r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, groupId } = decodeAddOffsetsToTxn(r);
  const refused = coordinatorError(door, KEY_TYPE_TRANSACTION, transactionalId);
  const error = refused !== ErrorCode.NONE ? refused : groupId === "" ? ErrorCode.INVALID_GROUP_ID : await door.transactions.addOffsets({ transactionalId, producerId, epoch }, groupId);
  w.i32(0).i16(fencedAs(version, error)).taggedFields();
  return true;
}

export async function handleEndTxn(door: AccountDoor, { version, r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, producerId, epoch, commit } = decodeEndTxn(r);
  const refused = coordinatorError(door, KEY_TYPE_TRANSACTION, transactionalId);
  const error = refused !== ErrorCode.NONE ? refused : await door.transactions.endTxn({ transactionalId, producerId, epoch }, commit);
  w.i32(0).i16(fencedAs(version, error)).taggedFields();
  return true;
}

export async function handleTxnOffsetCommit(door: AccountDoor, { version, flexible, r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, groupId, producerId, epoch, generation, memberId, instanceId, topics } = decodeTxnOffsetCommit(r, version);
  // Waits for a load of the group's partition under way: KafkaJS does not retry TxnOffsetCommit on COORDINATOR_LOAD_IN_PROGRESS.
  const refused = await coordinatorReady(door, KEY_TYPE_GROUP, groupId);
  const results = topics.map((t) => {
    const count = partitionCount(door, t.name);
    return {
      name: t.name,
      partitions: t.partitions.map((p) => ({
        ...p,
        error: (refused !== ErrorCode.NONE
          ? refused
          : count === undefined || p.index < 0 || p.index >= count
            ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            : p.metadata !== null && p.metadata.length > MAX_OFFSET_METADATA
              ? ErrorCode.OFFSET_METADATA_TOO_LARGE
              : ErrorCode.NONE) as number,
      })),
    };
  });
  const entries: Array<[string, CommittedOffset]> = [];
  for (const t of results) for (const p of t.partitions) if (p.error === ErrorCode.NONE) entries.push([offsetKey(t.name, p.index), committedOffset(p)]);
  const req = { transactionalId, producerId, epoch };
  let error = refused !== ErrorCode.NONE ? refused : groupId === "" ? ErrorCode.INVALID_GROUP_ID : consumerCheck(door, groupId, generation, memberId, instanceId);
  if (error === ErrorCode.NONE) {
    // Bounded as an OffsetCommit (Kafka stores both through its offsets log, within offsets.commit.timeout.ms): a
    // stalled save held this answer, and every later one of the connection (answered in order), without end.
    const tell = (line: string): void => door.log.warn(line);
    error = await withinCommitTimeout(door, groupId, storeTxnOffsets(door, req, groupId, entries), tell);
  }
  if (error !== ErrorCode.NONE) for (const t of results) for (const p of t.partitions) if (p.error === ErrorCode.NONE) p.error = error;
  w.i32(0); // throttle_time_ms
  w.topicPartitions(results, flexible, (w, p) => w.i32(p.index).i16(p.error));
  if (flexible) w.tags();
  return true;
}

/**
 * Saves a TxnOffsetCommit's offsets in its transaction, then holds them in
 * the group; a Kafka error code. Goes on when its answer timed out: the
 * save stays in turn with the transaction's other requests, so whatever an
 * EndTxn behind it finds is saved.
 */
async function storeTxnOffsets(door: AccountDoor, req: TxnRequest, groupId: string, entries: Array<[string, CommittedOffset]>): Promise<number> {
  // The transaction may be coordinated by another broker: it holds the offsets (coordinator-calls.ts).
  const away = await txnOffsetsAway(door, req, groupId, entries);
  const error = away?.error ?? (await door.transactions.commitOffsets(req, groupId, entries));
  const timeoutMs = away === null ? door.transactions.timeoutOf(req.transactionalId) : away.timeoutMs;
  // Held by the group until the transaction ends, or is aborted at the latest (OffsetFetch's require_stable, KIP-447);
  // in a cluster recorded before it is acknowledged, so that a new coordinator of the group holds it too.
  const group = error === ErrorCode.NONE && entries.length > 0 ? door.groups.group(groupId, true) : null;
  if (group === null) return error;
  group.holdForTxn(req.producerId, entries.map(([k]) => k), Date.now() + (timeoutMs ?? MAX_TRANSACTION_TIMEOUT_MS));
  return group.recordHold(req.producerId).then(
    () => ErrorCode.NONE,
    (err: unknown) => (err instanceof CoordinatorMoved ? ErrorCode.NOT_COORDINATOR : ErrorCode.COORDINATOR_NOT_AVAILABLE),
  );
}

/**
 * v3+ (KIP-447): the consumer the offsets come from must still be the
 * group's (Group.txnCommitCheck). A group this broker does not know has no
 * members, as Kafka's empty group.
 */
function consumerCheck(door: AccountDoor, groupId: string, generation: number, memberId: string, instanceId: string | null): number {
  const group = door.groups.group(groupId, false);
  if (group !== null) return group.txnCommitCheck(memberId, instanceId, generation);
  return generation >= 0 || memberId !== "" || instanceId !== null ? ErrorCode.UNKNOWN_MEMBER_ID : ErrorCode.NONE;
}

/**
 * Partitions of the request led by a broker this node has no route to
 * (its markers could not reach them), named NOT_LEADER_OR_FOLLOWER and the
 * others OPERATION_NOT_ATTEMPTED (Kafka's way to fail a request for some
 * of its partitions); null when every partition can be reached.
 */
function unreachable(door: AccountDoor, topics: Array<{ name: string; partitions: number[] }>): Array<{ name: string; partitions: Array<{ index: number; error: number }> }> | null {
  const cluster = door.door.cluster;
  if (cluster === null) return null;
  let any = false;
  const results = topics.map((t) => {
    const placed = cluster.topic(door.account, streamNameOf(t.name));
    return {
      name: t.name,
      partitions: t.partitions.map((index) => {
        const leader = placed?.topic === t.name ? placed.leaders[index] : undefined;
        if (leader === undefined || leader < 0 || cluster.routed(leader)) return { index, error: ErrorCode.OPERATION_NOT_ATTEMPTED };
        any = true;
        return { index, error: ErrorCode.NOT_LEADER_OR_FOLLOWER };
      }),
    };
  });
  if (any) door.log.warn(`kafka: a transaction of account ${door.account} names partitions led by brokers this node has no route to (cluster { port } on every node): refused`);
  return any ? results : null;
}

/** The subject a topic's records go to when they name none: here from its stream, else from its placement. */
function publishSubjectOf(door: AccountDoor, topic: string): string {
  const local = findTopic(door.js, topic);
  if (local !== undefined) return defaultSubject(local);
  const placed = door.door.cluster?.topic(door.account, streamNameOf(topic));
  return subjectFor(placed?.subjects ?? [], streamNameOf(topic));
}

/** Every state Kafka's coordinator names; a filter naming another is answered in `unknown_state_filters`. */
const TXN_STATES = new Set(["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"]);

/**
 * ListTransactions: the transactional ids this broker coordinates (each
 * broker answers for its own; the admin client asks every one), filtered by
 * state, producer id and (v1) how long the transaction has run, as Kafka's
 * coordinator filters them: a filter left empty lets everything through.
 */
export function handleListTransactions(door: AccountDoor, { version, r, w }: RequestContext): boolean {
  const { states, producerIds, durationMs } = decodeListTransactions(r, version);
  const unknown = states.filter((s) => !TXN_STATES.has(s));
  const wantedStates = new Set(states);
  const wantedIds = new Set(producerIds);
  const now = Date.now();
  const listed = door.transactions.list().filter(
    (t) => (wantedStates.size === 0 || wantedStates.has(t.state)) && (wantedIds.size === 0 || wantedIds.has(t.producerId)) && (durationMs < 0 || now - t.startedAt > durationMs),
  );
  w.i32(0).i16(ErrorCode.NONE); // throttle_time_ms, error_code
  w.array(unknown, (w, s) => w.string(s));
  w.array(listed, (w, t) => w.string(t.transactionalId).i64(t.producerId).string(t.state).taggedFields());
  w.taggedFields();
  return true;
}

/**
 * DescribeTransactions: each transactional id's state, producer, timeout,
 * start and partitions, from its coordinator: NOT_COORDINATOR (or the
 * coordinator's state's other errors) from another broker,
 * TRANSACTIONAL_ID_NOT_FOUND for an id it does not know. Fields an error
 * leaves unset are Kafka's defaults (empty, 0).
 */
export function handleDescribeTransactions(door: AccountDoor, { r, w }: RequestContext): boolean {
  const { transactionalIds } = decodeDescribeTransactions(r);
  w.i32(0); // throttle_time_ms
  w.array(transactionalIds, (w, id) => {
    // An empty id names no transaction: Kafka's INVALID_REQUEST.
    let error = id === "" ? ErrorCode.INVALID_REQUEST : coordinatorError(door, KEY_TYPE_TRANSACTION, id);
    const t = error === ErrorCode.NONE ? door.transactions.describe(id) : undefined;
    if (error === ErrorCode.NONE && t === undefined) error = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND;
    w.i16(error).string(id);
    if (t === undefined) w.string("").i32(0).i64(0).i64(0).i16(0).arrayLength(0);
    else {
      w.string(t.state).i32(t.timeoutMs).i64(t.startedAt).i64(t.producerId).i16(t.epoch);
      const byTopic = new Map<string, number[]>();
      for (const [topic, index] of t.partitions) {
        const list = byTopic.get(topic);
        if (list === undefined) byTopic.set(topic, [index]);
        else list.push(index);
      }
      w.array([...byTopic], (w, [topic, indexes]) => w.string(topic).array(indexes, (w, i) => w.i32(i)).taggedFields());
    }
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}
