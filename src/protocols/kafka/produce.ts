/**
 * Produce v3–7 (v0–2 are refused: see api.ts): each partition's RecordBatch is checked whole (CRC, framing,
 * codec, sizes, header text) before any of it is stored, then its records are
 * appended in order and acknowledged once durable here. In a replicated
 * partition acks=-1 is answered once every in-sync replica has the batch
 * (the high watermark passed it) and refused NOT_ENOUGH_REPLICAS while the
 * ISR is below the topic's min.insync.replicas; acks=1 once the leader has
 * it, whatever the ISR (as Kafka: a failover may lose it). acks 0 gets no
 * response; a refused partition closes the connection, as Kafka's does.
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { BatchError, ErrorCode, isAccountLimit } from "./errors.js";
import { ATTR_CODEC_MASK, ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL, decodeProduceBatch, LOG_OVERHEAD, NO_TIMESTAMP, recordTimestamps, type DecodedBatch, type DecompressionGate } from "./records.js";
import { ZSTD } from "./compression.js";
import type { KafkaConnection } from "./connection.js";
import { decodeInitProducerId, decodeProduce, KEY_TYPE_TRANSACTION, type ProduceRequest } from "./requests.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, natsHeaderBlocks, sizeBlocks, SUBJECT_HEADER } from "./messages.js";
import { BATCH_CRC_FROM, batchCrc, PRODUCER_SCAN, scanProducers, leadingAttributes, stampTimestamp, type ProducerFound } from "./stored-batches.js";
import { isCompacted, minInsyncReplicas, timestampPolicy, type TimestampPolicy } from "./configs.js";
import { defaultSubject, isInternalTopic } from "./topics.js";
import { coordinatorError, ledPartition } from "./cluster.js";
import { NotStored } from "./producers.js";
import { LimitRefusedError, OutcomeUnknownError, TooFewReplicasError, type ApiError } from "../../streams/errors.js";
import { FOREIGN_KAFKA, payloadSizeAt, type RecordRun } from "../../store/log.js";
import type { ReplicaAck, Stream } from "../../streams/stream.js";
import { isValidPublishSubject } from "../../subjects/subject.js";
import type { PermissionCheck } from "../../core/auth.js";

interface PartitionResult {
  index: number;
  error: number;
  baseOffset: number;
  logStartOffset: number;
  /** The time the broker stamped the batch with (a LogAppendTime topic), or a duplicate's stored max timestamp, as Kafka; else -1. */
  logAppendTime: number;
  /** Why the batch was refused, when there is more to say than the code (v8+ error_message). */
  errorMessage?: string;
  /** The records that refused it, by index and why (v8+ record_errors). */
  recordErrors?: ReadonlyArray<[number, string]>;
}

export async function handleProduce(door: AccountDoor, { conn, version, r, w, releaseFrame }: RequestContext): Promise<boolean> {
  // timeout_ms: appends finish or fail on their own; it bounds only the wait for room to decompress.
  const { transactionalId, acks, timeoutMs, topics } = decodeProduce(r, version);
  // v0–2 carry message formats v0/v1: only RecordBatch v2 is stored (api.ts says why they are advertised).
  // Transactional records without a transactional id: Kafka refuses the whole request TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
  const refuse =
    version < 3
      ? ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
      : acks !== 0 && acks !== 1 && acks !== -1
        ? ErrorCode.INVALID_REQUIRED_ACKS
        : transactionalId === null && hasTransactionalBatch(topics)
          ? ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
          : ErrorCode.NONE;

  // Decoding (decompression) runs concurrently, but appends are issued in request order:
  // Kafka keeps the order of the requests of one connection.
  const turn = conn.takeProduceTurn();
  // The frame serves another request once nothing reads it: this handler has issued its appends, and the
  // log has written every batch kept whole, which it writes from the frame itself.
  const frame = new FrameHold(releaseFrame);
  let pending;
  try {
    pending = await prepareAndIssue(door, conn, version, topics, refuse, transactionalId, acks === -1 ? "all" : "leader", turn, decompressionGate(door, conn, timeoutMs), frame);
  } finally {
    frame.drop();
  }
  const results = await Promise.all(pending.map((ps, t) => Promise.all(ps).then((partitions) => ({ name: topics[t].name, partitions }))));
  if (acks === 0) {
    // No answer to tell the client its batch was refused: Kafka closes the connection, so that it refreshes its metadata and carries on.
    const refused = results.find((t) => t.partitions.some((p) => p.error !== ErrorCode.NONE));
    if (refused !== undefined) conn.endAfterResponses(`acks=0 produce to ${refused.name} refused`);
    return false;
  }
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      w.i32(p.index).i16(p.error).i64(p.baseOffset);
      if (version >= 2) w.i64(p.logAppendTime);
      if (version >= 5) w.i64(p.logStartOffset);
      // v8+: record_errors (the records that refused the batch; it is refused whole, as Kafka's) and error_message.
      if (version >= 8) {
        w.array(p.recordErrors ?? [], (w, [i, message]) => {
          w.i32(i).nullableString(message);
          w.taggedFields();
        });
        w.nullableString(p.errorMessage ?? null);
      }
      w.taggedFields();
    });
    w.taggedFields();
  });
  if (version >= 1) w.i32(0); // throttle_time_ms
  w.taggedFields();
  return true;
}

/** Whether any partition's record set starts with a transactional batch. */
function hasTransactionalBatch(topics: TopicData): boolean {
  return topics.some((t) => t.partitions.some((p) => p.records !== null && ((leadingAttributes(p.records) ?? 0) & ATTR_TRANSACTIONAL) !== 0));
}

/** The request frame's readers: it goes back to the pool when the last lets go. */
class FrameHold {
  private holders = 1;
  constructor(private readonly release: (() => void) | null) {}

  /** One more reader; the function it returns lets go, once however often it is called. */
  take(): () => void {
    this.holders++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.drop();
    };
  }

  drop(): void {
    if (--this.holders === 0) this.release?.();
  }
}

/**
 * The door's decompression budget as one request sees it: a batch waits for
 * room at most the request's timeout_ms, and one whose connection went away
 * while it waited is not decompressed.
 */
function decompressionGate(door: AccountDoor, conn: KafkaConnection, timeoutMs: number): DecompressionGate {
  const budget = door.decompression;
  return {
    maxBytes: Math.min(door.maxRequestBytes, budget.limit),
    take(n) {
      const now = budget.take(n, Math.max(0, timeoutMs));
      if (now === true) return true;
      return now.then((ok) => {
        if (ok && conn.closed) budget.give(n);
        return ok && !conn.closed;
      });
    },
    give: (n) => budget.give(n),
  };
}

type TopicData = ProduceRequest["topics"];

/**
 * Decodes every partition's batch, then, in this connection's produce turn,
 * issues the appends. A function of its own so that nothing holds the
 * decoded batches once appended; their decompressed bytes go back to the
 * budget at that moment, or when anything fails.
 */
async function prepareAndIssue(
  door: AccountDoor,
  conn: KafkaConnection,
  version: number,
  topics: TopicData,
  refuse: number,
  transactionalId: string | null,
  ack: ReplicaAck,
  turn: { ready: Promise<void>; done: () => void },
  gate: DecompressionGate,
  frame: FrameHold,
): Promise<Array<Array<Promise<PartitionResult>>>> {
  const all: Array<Promise<Prepared | PartitionResult>> = [];
  for (const t of topics) {
    for (const p of t.partitions) all.push(refuse !== ErrorCode.NONE ? Promise.resolve(failed(p.index, refuse)) : prepare(door, conn.permissions, conn.payloadLimit(door.js.options.maxPayload), t.name, p.index, p.records, version, transactionalId, ack, gate));
  }
  // Settled, not all(): a failure must not leave other batches holding budget.
  const settled = await Promise.allSettled(all);
  const prepared = settled.map((s) => (s.status === "fulfilled" ? s.value : null));
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  const releaseAll = (): void => {
    for (const p of prepared) if (p !== null && "batch" in p) release(gate, p.batch);
  };
  if (failure !== undefined) {
    releaseAll();
    // Nothing to issue: pass the turn on once it comes, so later requests keep their order.
    void turn.ready.then(turn.done);
    throw failure.reason;
  }
  await turn.ready;
  try {
    let at = 0;
    return topics.map((t) =>
      t.partitions.map(() => {
        const p = prepared[at++]!;
        return "error" in p ? Promise.resolve(p) : issue(door, conn, t.name, p, transactionalId, ack, frame);
      }),
    );
  } finally {
    turn.done();
    releaseAll();
  }
}

function release(gate: DecompressionGate, batch: DecodedBatch): void {
  gate.give(batch.held);
  batch.held = 0;
}

function failed(index: number, error: number, errorMessage?: string): PartitionResult {
  return { index, error, baseOffset: -1, logStartOffset: -1, logAppendTime: -1, errorMessage };
}

interface Prepared {
  stream: Stream;
  index: number;
  /** The batch as produced, when it is stored whole (every record under the topic's subject); else null. */
  whole: Buffer | null;
  /** The records one by one, when the batch is not stored whole. */
  run: RecordRun | null;
  batch: DecodedBatch;
  /** Payload bytes of the records, as NATS counts them, and the largest record's. */
  bytes: number;
  largest: number;
  logAppendTime: boolean;
}

/**
 * Decodes and checks one partition's batch; nothing is stored yet. With
 * `perms`, every record needs publish permission on the subject it would be
 * stored under, as a NATS client publishing it would: else the partition is
 * refused TOPIC_AUTHORIZATION_FAILED, whole.
 */
async function prepare(
  door: AccountDoor,
  perms: PermissionCheck | null,
  maxPayload: number,
  topic: string,
  index: number,
  set: Buffer | null,
  version: number,
  transactionalId: string | null,
  ack: ReplicaAck,
  gate: DecompressionGate,
): Promise<Prepared | PartitionResult> {
  // Kafka's words for it: "Cannot append to internal topic" (only the group coordinators write it), wherever it is led.
  if (isInternalTopic(topic)) return failed(index, ErrorCode.INVALID_TOPIC_EXCEPTION);
  // A partition this broker does not lead: NOT_LEADER_OR_FOLLOWER sends the client to its metadata, then to the leader.
  const stream = ledPartition(door, topic, index);
  if (typeof stream === "number") return failed(index, stream);
  if (set === null) return failed(index, ErrorCode.CORRUPT_MESSAGE);
  // zstd came with Produce v7 (KIP-110): Kafka refuses it in older requests, whose clients may not read it back.
  if (version < 7 && ((leadingAttributes(set) ?? 0) & ATTR_CODEC_MASK) === ZSTD) {
    return failed(index, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, `Produce v${version} may not carry zstd batches (v7 and later may)`);
  }
  // A partition of one replica has an ISR of one, always: Kafka refuses acks=all to it when min.insync.replicas asks for more.
  // A replicated partition (it has a replica gate: its leader checks its ISR as it appends, stream-replicas.ts) is not
  // told by its stream config, which says one replica for a topic whatever its replication factor.
  if (ack === "all" && stream.replicaGate(index) === undefined && minInsyncReplicas(stream.config.metadata, door.options.minInsyncReplicas) > 1) return failed(index, ErrorCode.NOT_ENOUGH_REPLICAS);
  // Kafka bounds a record batch as produced (compressed, its 12 bytes of log overhead counted) by the topic's max.message.bytes,
  // whose broker default message.max.bytes is here max_payload (plus that overhead, as Kafka's default 1048588 is). A batch kept
  // whole is one item on the wire to a follower, which its route refuses past its max_payload.
  const topicMax = stream.config.max_msg_size > 0 ? stream.config.max_msg_size : Infinity;
  const batchMax = Math.min(topicMax, door.js.options.maxPayload + LOG_OVERHEAD);
  if (set.length > batchMax) {
    const why = `a record batch of ${set.length} bytes, past max.message.bytes (${batchMax})`;
    door.log.debug(`kafka produce to ${topic}/${index} refused: ${why}`);
    return failed(index, ErrorCode.MESSAGE_TOO_LARGE, why);
  }
  let batch: DecodedBatch | null = null;
  let run: RecordRun | null = null;
  let bytes = 0;
  let largest = 0;
  const policy = timestampPolicy(stream);
  try {
    batch = await decodeProduceBatch(set, gate);
    // A transactional batch belongs to the transaction the request names; a plain one to none.
    // (handleProduce refuses the whole request first, as Kafka does; a plain batch in a transactional request is taken as plain.)
    if (batch.transactional && transactionalId === null) throw new BatchError(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional batch without a transactional id");
    // Kafka's LogValidator: a producer may not say LogAppendTime, but for records with a time on a CreateTime topic (rewritten then).
    if ((batch.attributes & ATTR_LOG_APPEND_TIME) !== 0 && (policy.logAppendTime || batch.untimed)) {
      throw new BatchError(ErrorCode.INVALID_TIMESTAMP, "a producer may not set the batch's timestamp type to LogAppendTime");
    }
    // Stored in the batch's header as it is read (stampTimestamp), which an int64 past 2^53 would not survive exactly.
    if (!policy.logAppendTime && (!Number.isSafeInteger(batch.maxTimestamp) || !Number.isSafeInteger(batch.minTimestamp))) {
      throw new BatchError(ErrorCode.INVALID_TIMESTAMP, "a record's timestamp is past what the broker keeps exactly (2^53 ms)");
    }
    if (!policy.logAppendTime && (policy.beforeMaxMs !== Infinity || policy.afterMaxMs !== Infinity)) checkTimestamps(batch, policy);
    if (isCompacted(stream.config.metadata)) checkKeyed(batch, `${topic}-${index}`);
    const idempotent = batch.producerId >= 0;
    if (idempotent && door.producers.mayNeedRecovery(batch.producerId, topic, index, stream.arrivals[index] ?? 0, stream.partitions[index])) await recoverProducer(door, stream, topic, index, batch.producerId);
    // Stored whole unless a record names a subject of its own (then each is stored under its subject).
    // Only records with headers can name one, and only their headers need checking as NATS headers.
    let named = false;
    if (batch.headerCount !== null) sizeBlocks(batch, null, null, null, () => (named = true));
    if (named) run = recordRun(stream, batch);
    if (batch.transactional) await checkTransactional(door, stream, run);
    if (perms !== null) checkPublish(perms, stream, run);
    if (run === null) {
      // Kept whole, a record's NATS size is its value's: its headers stay in the batch.
      bytes = batch.valueBytes;
      largest = batch.largestValue;
    } else {
      for (let i = 0; i < batch.count; i++) {
        const size = payloadSizeAt(run, i);
        bytes += size;
        if (size > largest) largest = size;
      }
    }
    // The server's max_payload, or less where the user's or account's JWT says so (as for the user's NATS publishes).
    const max = stream.config.max_msg_size > 0 ? Math.min(stream.config.max_msg_size, maxPayload) : maxPayload;
    if (largest > max) throw new BatchError(ErrorCode.MESSAGE_TOO_LARGE, `record larger than ${max} bytes`);
  } catch (err) {
    if (batch !== null) release(gate, batch);
    if (!(err instanceof BatchError)) throw err;
    door.log.debug(`kafka produce to ${topic}/${index} refused: ${err.message}`);
    if (err.recordErrors.length === 0) return failed(index, err.code, err.message);
    // As Kafka answers a record validation error: with the partition's log start and the records named.
    return { ...failed(index, err.code, err.message), logStartOffset: stream.partitions[index].state().firstSeq - 1, recordErrors: err.recordErrors };
  }
  // What was decompressed served the checks only: the batch is stored as it came.
  if (run === null) release(gate, batch);
  return { stream, index, whole: run === null ? set : null, run, batch, bytes, largest, logAppendTime: policy.logAppendTime };
}

/**
 * Refuses a batch with a record timestamp out of the topic's bounds
 * (INVALID_TIMESTAMP), naming each such record as Kafka's LogValidator does
 * (record_errors); the min and max rule most batches in without a walk.
 */
function checkTimestamps(batch: DecodedBatch, policy: TimestampPolicy): void {
  const now = Date.now();
  const behind = now - batch.minTimestamp > policy.beforeMaxMs;
  const ahead = batch.maxTimestamp - now > policy.afterMaxMs;
  if (!behind && !ahead) return;
  const [from, to] = [now - policy.beforeMaxMs, now + policy.afterMaxMs];
  const records: Array<[number, string]> = [];
  recordTimestamps(batch, (i, timestamp) => {
    if (timestamp !== NO_TIMESTAMP && (timestamp < from || timestamp > to)) records.push([i, `Timestamp ${timestamp} of message with offset ${i} is out of range. The timestamp should be within [${from}, ${to}]`]);
  });
  const why = behind ? `a record's timestamp is more than ${policy.beforeName} (${policy.beforeMaxMs}) behind the broker's time` : `a record's timestamp is more than ${policy.afterName} (${policy.afterMaxMs}) ahead of the broker's time`;
  throw new BatchError(ErrorCode.INVALID_TIMESTAMP, why, records);
}

/** Refuses a batch with a record without a key, as Kafka's LogValidator does for a compacted topic (INVALID_RECORD). */
function checkKeyed(batch: DecodedBatch, partition: string): void {
  const why = `Compacted topic cannot accept message without key in topic partition ${partition}.`;
  const records: Array<[number, string]> = [];
  for (let i = 0; i < batch.count; i++) if (batch.keyLen[i] < 0) records.push([i, why]);
  if (records.length > 0) throw new BatchError(ErrorCode.INVALID_RECORD, why, records);
}

/**
 * What a transactional batch needs of its partition, as every replica reads
 * its transactions from its own log (txn-index.ts): the batch kept whole
 * (its records naming no subjects of their own: a NATS publish could forge
 * a message), and a stream that removes messages only from its front
 * (limits retention, no per-subject limit; compaction keeps markers), so
 * its markers stay as long as the records they decide. Readers then follow
 * the stream's transactions from before this first one (once per stream).
 * Throws INVALID_RECORD.
 */
async function checkTransactional(door: AccountDoor, stream: Stream, run: RecordRun | null): Promise<void> {
  if (run !== null) throw new BatchError(ErrorCode.INVALID_RECORD, `a transactional record may not name its subject (${SUBJECT_HEADER})`);
  const c = stream.config;
  if (c.retention !== "limits" || c.max_msgs_per_subject > 0) {
    throw new BatchError(ErrorCode.INVALID_RECORD, `stream ${c.name} removes messages from inside its log (retention ${c.retention}, max_msgs_per_subject ${c.max_msgs_per_subject}): transactions need one that removes them only from its front`);
  }
  await door.txnIndexes.add(stream);
}

/** Throws TOPIC_AUTHORIZATION_FAILED unless `perms` may publish every subject the records go to. */
function checkPublish(perms: PermissionCheck, stream: Stream, run: RecordRun | null): void {
  const fallback = defaultSubject(stream);
  const named = run?.subjects ?? null;
  if (named === null) {
    if (!perms.mayPublish(fallback)) throw new BatchError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, `no permission to publish to ${fallback}`);
    return;
  }
  for (const subject of named) {
    if (!perms.mayPublish(subject)) throw new BatchError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, `no permission to publish to ${subject}`);
  }
}

/**
 * The records of a batch as the log takes them: spans of the batch's bytes,
 * each under the topic's subject unless a Nats-Subject header names another,
 * with its other headers as a NATS header block. A transactional batch marks
 * every record with its producer, an idempotent one its first record with
 * the batch's sequence (see messages.ts).
 */
function recordRun(stream: Stream, batch: DecodedBatch): RecordRun {
  const n = batch.count;
  const txn = batch.transactional ? { producerId: batch.producerId, epoch: batch.producerEpoch } : null;
  const mark = batch.producerId >= 0 ? { producerId: batch.producerId, epoch: batch.producerEpoch, baseSequence: batch.baseSequence, count: n } : null;
  let subjects: string[] | null = null;
  let headers: Array<Buffer | null> | null = null;
  if (batch.headerCount !== null || txn !== null || mark !== null) {
    headers = natsHeaderBlocks(batch, txn, mark, (i, subject) => {
      // As a NATS publish: a wildcard, or an empty token, is no subject a message can be stored under.
      if (!isValidPublishSubject(subject)) throw new BatchError(ErrorCode.INVALID_RECORD, `${SUBJECT_HEADER} ${JSON.stringify(subject)} is not a valid publish subject`);
      if (!stream.captures(subject)) throw new BatchError(ErrorCode.INVALID_RECORD, `${SUBJECT_HEADER} ${subject} is not a subject of this topic`);
      // A marker's subject is the door's own: a record there would be skipped where producers' batches are looked for.
      if (subject === CONTROL_SUBJECT_COMMIT || subject === CONTROL_SUBJECT_ABORT) throw new BatchError(ErrorCode.INVALID_RECORD, `${SUBJECT_HEADER} ${subject} is reserved for transaction markers`);
      subjects ??= new Array<string>(n).fill(defaultSubject(stream));
      subjects[i] = subject;
    });
  }
  return {
    count: n,
    source: batch.body,
    subject: defaultSubject(stream),
    subjects,
    keyAt: batch.keyAt,
    keyLen: batch.keyLen,
    valueAt: batch.valueAt,
    valueLen: batch.valueLen,
    headers,
  };
}

/** Rebuilds a producer's sequence state in a partition from the batches it left in the log. */
async function recoverProducer(door: AccountDoor, stream: Stream, topic: string, index: number, producerId: number): Promise<void> {
  const { lastSeq } = stream.partitions[index].state();
  const found: Array<{ epoch: number; firstSeq: number; count: number; offset: number; timestamp: number }> = [];
  const visit = (f: ProducerFound): void => {
    if (!f.marker) found.push({ epoch: f.epoch, firstSeq: f.baseSequence, count: f.count, offset: f.offset, timestamp: f.timestamp });
  };
  await scanProducers(stream.partitions[index], lastSeq - PRODUCER_SCAN + 1, lastSeq, visit, producerId);
  // Not among the last messages: what this node's log got of it, appended or copied, however far back (a follower that took
  // the partition over knows the batch a retry repeats, as Kafka's followers do).
  if (found.length === 0) found.push(...door.partitionProducers.batchesOf(stream, index, producerId));
  door.producers.seed(producerId, topic, index, stream.arrivals[index] ?? 0, found);
}

/** Appends a prepared batch (synchronously, so it gets consecutive offsets); resolves once durable here, and on the ISR for `ack` "all". */
function issue(door: AccountDoor, conn: KafkaConnection, topic: string, p: Prepared, requestTransactionalId: string | null, ack: ReplicaAck, frame: FrameHold): Promise<PartitionResult> {
  const { stream, index, run, batch } = p;
  // A plain batch in a transactional request is no part of the transaction (Kafka takes it so too).
  const transactionalId = batch.transactional ? requestTransactionalId : null;
  if (stream.deleted) return Promise.resolve(failed(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION));
  // Checked by the coordinator when it is this node; a partition led elsewhere takes the batch as Kafka's leaders do
  // (before KIP-890): the producer's epoch fences it, and the coordinator's markers end what it wrote.
  if (transactionalId !== null && door.transactions.coordinates(transactionalId)) {
    // Before the sequence check, which records the batch as sent.
    const refused = door.transactions.checkProduce({ transactionalId, producerId: batch.producerId, epoch: batch.producerEpoch }, topic, index);
    if (refused !== ErrorCode.NONE) return Promise.resolve(failed(index, refused));
  } else if (transactionalId !== null && batch.producerEpoch < door.txnIndexes.markerEpoch(stream, index, batch.producerId)) {
    // A marker of a newer epoch is here: its coordinator fenced this producer (Kafka's leaders refuse it the same way).
    return Promise.resolve(failed(index, ErrorCode.INVALID_PRODUCER_EPOCH));
  }
  let settle!: (offset: number | ApiError) => void;
  const stored = new Promise<number | ApiError>((resolve) => (settle = resolve));
  // A LogAppendTime topic's batch carries the broker's time, which the answer gives back (log_append_time_ms), as Kafka's.
  const appendTime = p.logAppendTime ? Date.now() : -1;
  // The producer's state follows this log, as Kafka's does: a batch stored here is recorded with its offset even
  // when its replication then fails (a lost lease, too few replicas after the append), so that the client's retry
  // is answered as a duplicate, once replicated, instead of being stored twice. Only a batch not stored is forgotten.
  let storedHere: ((offset: number | null, why?: NotStored) => void) | null = null;
  if (batch.producerId >= 0) {
    const offset = new Promise<number>((resolve, reject) => (storedHere = (o, why) => (o === null ? reject(why ?? new NotStored(null)) : resolve(o))));
    offset.catch(() => undefined);
    const verdict = door.producers.check(batch.producerId, batch.producerEpoch, topic, index, stream.arrivals[index] ?? 0, batch.baseSequence, batch.count, offset, p.logAppendTime ? appendTime : batch.maxTimestamp);
    if (verdict.kind === "refuse") return Promise.resolve(failed(index, verdict.error));
    if (verdict.kind === "duplicate") return duplicate(stream, index, batch.count, verdict.offset, verdict.timestamp, ack);
  }
  // Readers (read_committed, NATS) see nothing from here on until the stream's index has read the batch.
  const landed = transactionalId !== null ? door.txnIndexes.expect(stream, index) : null;
  const stored_ = (err: ApiError | null, first: number): void => {
    landed?.();
    // In this log (even if its replication then failed): the partition's record of its producers has it too.
    if (first > 0 && batch.producerId >= 0) door.partitionProducers.note(stream, index, batch.producerId, batch.producerEpoch, batch.baseSequence, batch.count, first - 1, p.logAppendTime ? appendTime : batch.maxTimestamp);
    (storedHere as ((offset: number | null, why?: NotStored) => void) | null)?.(first > 0 ? first - 1 : null, err === null ? undefined : notStored(err));
    settle(err ?? first - 1);
  };
  try {
    if (p.whole !== null) {
      stampTimestamp(p.whole, p.logAppendTime, p.logAppendTime ? appendTime : batch.maxTimestamp);
      // The batch's CRC was checked in prepare() (or just recomputed): the log derives its own checksum from it.
      const tailCrc = { from: BATCH_CRC_FROM, crc: batchCrc(p.whole) };
      // The log writes the batch from the frame: it lets go once written, or refused before that.
      const bytesDone = frame.take();
      const whole = { format: FOREIGN_KAFKA, subject: defaultSubject(stream), count: batch.count, bytes: p.whole, tailCrc, bytesDone };
      stream.appendBatch(
        index,
        whole,
        p.largest,
        (err, first) => {
          bytesDone();
          stored_(err, first);
        },
        ack,
      );
    } else stream.appendMany(index, run!, stored_, ack);
  } catch (err) {
    // Nothing appended: the index's wait for it ends, and the producer's state forgets the batch (else its retry would
    // wait on it for ever, and the producer's next batches be out of order).
    landed?.();
    (storedHere as ((offset: number | null, why?: NotStored) => void) | null)?.(null);
    throw err;
  }
  conn.countIn(batch.count, p.bytes);
  return stored.then((o) => {
    if (typeof o !== "number") return failed(index, produceErrorOf(o));
    return { index, error: ErrorCode.NONE, baseOffset: o, logStartOffset: stream.partitions[index].state().firstSeq - 1, logAppendTime: appendTime };
  });
}

/**
 * The answer to a batch this log already holds: its offset once replicated as `ack` asks, or the refusal a new append
 * would get. Its log_append_time is the stored batch's max timestamp, whatever the topic's timestamp type, as Kafka's
 * (UnifiedLog.append answers a duplicate with its BatchMetadata's timestamp).
 */
function duplicate(stream: Stream, index: number, count: number, offset: number | Promise<number>, timestamp: number, ack: ReplicaAck): Promise<PartitionResult> {
  return Promise.resolve(offset).then(
    (o) =>
      new Promise<PartitionResult>((resolve) =>
        // Offset o is sequence o + 1: the batch's last record is at o + count.
        stream.whenStored(index, o + count, (err) => resolve(err === null ? { index, error: ErrorCode.NONE, baseOffset: o, logStartOffset: stream.partitions[index].state().firstSeq - 1, logAppendTime: timestamp } : failed(index, duplicateErrorOf(err))), ack),
      ),
    () => failed(index, ErrorCode.KAFKA_STORAGE_ERROR),
  );
}

/** Why a batch was refused before it was stored, for its producer's state: a refusal clients retry (the leadership, the replicas) or not. */
function notStored(err: ApiError): NotStored {
  const code = produceErrorOf(err);
  return new NotStored(code === ErrorCode.NOT_LEADER_OR_FOLLOWER || code === ErrorCode.NOT_ENOUGH_REPLICAS ? code : null);
}

/**
 * The error for a retried batch this log holds that cannot be confirmed now (no lease, too few in-sync replicas, the
 * partition moving): it is stored, so never "not stored". NOT_LEADER_OR_FOLLOWER would make librdkafka take its
 * sequence for broken, bump its epoch and send the batch again as new.
 */
function duplicateErrorOf(o: ApiError): number {
  if (o instanceof TooFewReplicasError) return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND;
  const code = produceErrorOf(o);
  return code === ErrorCode.NOT_LEADER_OR_FOLLOWER ? ErrorCode.REQUEST_TIMED_OUT : code;
}

/** InitProducerId v0–1: a fresh id for an idempotent producer; for a transactional one, the coordinator's. */
export async function handleInitProducerId(door: AccountDoor, { version, r, w }: RequestContext): Promise<boolean> {
  const { transactionalId, transactionTimeoutMs: timeoutMs, producerId, epoch } = decodeInitProducerId(r, version);
  w.i32(0); // throttle_time_ms
  const answer = (error: number, id: number, e: number): boolean => {
    // PRODUCER_FENCED is v4's (KIP-588); earlier versions are told INVALID_PRODUCER_EPOCH, as Kafka tells them.
    w.i16(error === ErrorCode.PRODUCER_FENCED && version < 4 ? ErrorCode.INVALID_PRODUCER_EPOCH : error).i64(id).i16(e);
    w.taggedFields();
    return true;
  };
  // Without a transactional id a new producer id every time, as Kafka's coordinator gives one (the id and epoch a v3+ producer names are not checked).
  if (transactionalId === null) return answer(ErrorCode.NONE, door.producers.allocate(), 0);
  // An empty transactional id is no id: Kafka's coordinator answers INVALID_REQUEST before it looks for one.
  if (transactionalId === "") return answer(ErrorCode.INVALID_REQUEST, -1, -1);
  const refused = coordinatorError(door, KEY_TYPE_TRANSACTION, transactionalId);
  if (refused !== ErrorCode.NONE) return answer(refused, -1, -1);
  const got = await door.transactions.initProducerId(transactionalId, timeoutMs, producerId >= 0 ? { producerId, epoch } : null);
  return answer(got.error, got.producerId, got.epoch);
}

/**
 * The produce error for a refused append: a partition frozen for its move to
 * another broker (or the cluster briefly unable to take it: a leader without
 * its lease) is NOT_LEADER_OR_FOLLOWER, on which clients refresh their
 * metadata and retry at the partition's leader, as after a leader change in
 * Kafka; it tells librdkafka the batch was not stored. A batch stored here
 * whose replication could not be seen through (the lease or the leadership
 * lost while it waited) is REQUEST_TIMED_OUT: possibly stored, so clients
 * retry it under the same sequence (librdkafka would otherwise bump its
 * epoch and send it again as new, stored twice once this log keeps it).
 * Too few in-sync replicas for acks=all: NOT_ENOUGH_REPLICAS, or, when the
 * ISR shrank below the minimum while the batch waited,
 * NOT_ENOUGH_REPLICAS_AFTER_APPEND (stored here, maybe kept); clients
 * retry both.
 */
/** JetStream's "invalid operation on sealed stream". */
const SEALED = 10109;

export function produceErrorOf(o: ApiError): number {
  if (o instanceof TooFewReplicasError) return o.afterAppend ? ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND : ErrorCode.NOT_ENOUGH_REPLICAS;
  if (o instanceof OutcomeUnknownError) return ErrorCode.REQUEST_TIMED_OUT;
  if (o.errCode === 10054) return ErrorCode.MESSAGE_TOO_LARGE;
  // The stream's own limits under discard "new", or a sealed stream: no retry gets it in.
  if (o instanceof LimitRefusedError || o.errCode === SEALED) return ErrorCode.POLICY_VIOLATION;
  if (o.errCode === 10008) return ErrorCode.NOT_LEADER_OR_FOLLOWER;
  return isAccountLimit(o) ? ErrorCode.POLICY_VIOLATION : ErrorCode.KAFKA_STORAGE_ERROR;
}
