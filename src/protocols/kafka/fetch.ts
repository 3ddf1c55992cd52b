/**
 * Fetch v4–15, ListOffsets v0–7 and OffsetForLeaderEpoch v0–4. A fetch answers at once when it has
 * `min_bytes`, else waits for an append to one of its partitions or for
 * `max_wait_ms`, never polling. What it reads is bounded by the broker's
 * `fetch_max_bytes` and by the door's response budget (see collectWithRoom). Records are framed from the log as
 * uncompressed v2 batches, one per run of equal append time and
 * transaction; a transaction marker is a control batch of its own.
 * read_committed fetches stop at the last stable offset and name the aborted
 * transactions in what they return, for the client to drop. In a
 * replicated partition consumers see nothing past the high watermark (what
 * every in-sync replica has): the high_watermark field, the records and
 * ListOffsets' latest stop there, and a fetch waiting for data wakes when it
 * moves on.
 */

import type { RequestContext } from "./api.js";
import { Writer } from "./codec.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { ATTR_CONTROL, ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL, encodeBatch, encodeEmptyBatch, type OutRecord } from "./records.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, isNullValue, readTxnMark, type TxnMark } from "./messages.js";
import { BATCH_BASE_OFFSET, BATCH_LEADER_EPOCH, firstRecordAtOrAfter, newestRecordIn } from "./stored-batches.js";
import { timestampPolicy } from "./configs.js";
import { findTopic, mayDescribeTopic, mayReadTopic } from "./topics.js";
import { leaderEpochOf, readablePartition } from "./cluster.js";
import type { PermissionCheck } from "../../core/auth.js";
import { decodeFetch, decodeListOffsets, decodeOffsetForLeaderEpoch, type FetchRequest } from "./requests.js";
import { topicById } from "./topic-ids.js";
import { EpochHistory } from "./epoch-history.js";
import type { Stream } from "../../streams/stream.js";
import { isForeign, type MessageLog, type StoredItem, type StoredMessage } from "../../store/log.js";

const EARLIEST = -2;
const LATEST = -1;
/** ListOffsets v7+ (KIP-734): the record with the highest timestamp. */
const MAX_TIMESTAMP = -3;
/** Messages read per partition per fetch, besides the byte limits. */
const MAX_MESSAGES_PER_PARTITION = 4096;

interface PartitionFetch {
  index: number;
  currentLeaderEpoch: number;
  offset: number;
  maxBytes: number;
}

interface TopicFetch {
  /** "" for a topic named (v13+) by an id no topic has. */
  name: string;
  /** v13+: the topic id it was named by. */
  id: string | null;
  partitions: PartitionFetch[];
}

interface PartitionOut {
  index: number;
  error: number;
  highWatermark: number;
  lastStable: number;
  logStart: number;
  /** Messages, and batches stored whole as produced. */
  messages: StoredItem[];
  /** read_committed only: aborted transactions with records among `messages`. */
  aborted: Array<{ producerId: number; first: number }> | null;
  /** Which leader epoch wrote which of `messages` (null: none read). */
  epochs: EpochHistory | null;
  /** With no messages: offsets passFrom..passTo (from the one fetched) hold nothing readable any more (writePassingRecords); else -1. */
  passFrom: number;
  passTo: number;
  /** Then the partition's first record, sent again in a batch that ends at passTo; null: an empty batch says it. */
  passWith: StoredMessage | null;
}

const READ_UNCOMMITTED = 0;
const READ_COMMITTED = 1;
const CONTROL_ABORT = 0;
const CONTROL_COMMIT = 1;

export async function handleFetch(door: AccountDoor, ctx: RequestContext): Promise<boolean> {
  const { conn, version, r, w } = ctx;
  const req = decodeFetch(r, version);
  const topics = req.topics;
  // v13+ names topics by id.
  for (const t of topics) if (t.id !== null) t.name = topicById(door, t.id) ?? "";
  if (req.isolationLevel !== READ_UNCOMMITTED && req.isolationLevel !== READ_COMMITTED) {
    writeFetchRefused(w, version, topics, ErrorCode.UNKNOWN_SERVER_ERROR);
    return true;
  }
  const readCommitted = req.isolationLevel === READ_COMMITTED;
  // The broker's fetch.max.bytes caps what a client may ask; at least one byte, so that a first record always comes back.
  const want = Math.max(1, Math.min(req.maxBytes, door.options.fetchMaxBytes));
  const deadline = Date.now() + Math.max(0, req.maxWaitMs);
  // Counted before each read: news that comes while it reads (a transaction's marker read by its index, moving the last
  // stable offset on) is not waited past.
  let seen = readerWakes(door, topics);
  let out = await collectWithRoom(door, ctx, topics, want, readCommitted, deadline);
  // Short of memory, answer with what fits rather than wait for more to arrive. A partition in error, led elsewhere or
  // read up to its count limit is answered at once too, as Kafka answers errors without waiting; so is a fetch of no
  // partition at all (Kafka: a fetch that needs no data), which nothing could ever satisfy.
  const asksForData = topics.some((t) => t.partitions.length > 0);
  while (asksForData && out.bytes < req.minBytes && !out.limited && !out.misled && !out.failed && !out.capped && Date.now() < deadline && !conn.closed) {
    conn.adjustResponseRoom(ctx, -ctx.held);
    if (readerWakes(door, topics) === seen) await appendOrTimeout(door, topics, deadline);
    seen = readerWakes(door, topics);
    out = await collectWithRoom(door, ctx, topics, want, readCommitted, deadline);
  }

  let records = 0;
  for (const ps of out.results) for (const p of ps) for (const m of p.messages) records += isForeign(m) ? m.count : 1;
  conn.countOut(records, out.bytes);
  w.grow(out.bytes + 64 * (topics.length + records));
  w.i32(0); // throttle_time_ms
  if (version >= 7) w.i16(ErrorCode.NONE).i32(0); // error_code, session_id
  w.arrayLength(topics.length);
  for (let t = 0; t < topics.length; t++) {
    const { name, id } = topics[t];
    if (id !== null) w.uuid(id);
    else w.string(name);
    // An id no topic has: UNKNOWN_TOPIC_ID in each of its partitions, as Kafka answers it.
    const unknownId = id !== null && name === "";
    w.array(out.results[t], (w, p) => {
      w.i32(p.index).i16(unknownId ? ErrorCode.UNKNOWN_TOPIC_ID : p.error).i64(p.highWatermark).i64(p.lastStable);
      if (version >= 5) w.i64(p.logStart);
      if (p.aborted === null) w.arrayLength(-1);
      else w.array(p.aborted, (w, a) => w.i64(a.producerId).i64(a.first).taggedFields());
      if (version >= 11) w.i32(-1); // preferred_read_replica
      if (p.passTo >= 0) writePassingRecords(w, p.passFrom, p.passTo, p.passWith, p.epochs!);
      else writeRecords(w, p.messages, p.epochs);
      w.taggedFields();
    });
    w.taggedFields();
  }
  w.taggedFields();
  return true;
}

interface Collected {
  results: PartitionOut[][];
  /** Record bytes read (payload, headers, key and a per-record allowance for framing). */
  bytes: number;
  /** Memory, not the request, limited what could be read. */
  limited: boolean;
  /** A partition is led by another broker (or its leader is away): answered at once, as Kafka does, so the client goes to the leader. */
  misled: boolean;
  /** A partition is answered with an error (out of range, unknown, not allowed): answered at once, as Kafka does. */
  failed: boolean;
  /** A partition was read up to MAX_MESSAGES_PER_PARTITION with more to read: waiting for min_bytes would only delay it. */
  capped: boolean;
}

/** How often the fetched topics' readers were told of news (Stream.readerWakes), summed. */
function readerWakes(door: AccountDoor, topics: TopicFetch[]): number {
  let n = 0;
  for (const t of topics) n += findTopic(door.js, t.name)?.readerWakes ?? 0;
  return n;
}

/**
 * Reads the partitions into the response room this connection can get: up
 * to `want`, less what its other responses hold (fetch_max_bytes per
 * connection) and what the door's response budget has free. With no room at
 * all it waits for some until the deadline, then answers without records:
 * a slow reader's unread responses, or the door's, bound what is built.
 */
async function collectWithRoom(door: AccountDoor, ctx: RequestContext, topics: TopicFetch[], want: number, readCommitted: boolean, deadline: number): Promise<Collected> {
  for (;;) {
    const room = ctx.conn.takeResponseRoom(ctx, want);
    if (room > 0) {
      const out = await collect(door, ctx.conn.permissions, topics, room, readCommitted);
      // Held: what was read (Kafka's first-batch rule may pass the room by one record); settled against the real response when it is written.
      ctx.conn.adjustResponseRoom(ctx, out.bytes - room);
      out.limited = room < want;
      return out;
    }
    if (Date.now() >= deadline || ctx.conn.closed) {
      door.responses.shortfalls++;
      return collect(door, ctx.conn.permissions, topics, 0, readCommitted);
    }
    await door.responses.released(deadline - Date.now());
  }
}

/**
 * Reads every partition, `maxBytes` in all (0: offsets and watermarks only,
 * no records). A topic `perms` may not read is answered
 * TOPIC_AUTHORIZATION_FAILED in each of its partitions, and nothing of it is read.
 */
async function collect(door: AccountDoor, perms: PermissionCheck | null, topics: TopicFetch[], maxBytes: number, readCommitted: boolean): Promise<Collected> {
  let bytes = 0;
  const results: PartitionOut[][] = [];
  let misled = false;
  let failed = false;
  let capped = false;
  for (const t of topics) {
    const local = findTopic(door.js, t.name);
    const outs: PartitionOut[] = [];
    const denied = local !== undefined && !mayReadTopic(perms, local);
    for (const p of t.partitions) {
      if (denied) {
        failed = true;
        outs.push({ index: p.index, error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, highWatermark: -1, lastStable: -1, logStart: -1, messages: [], aborted: null, epochs: null, passFrom: -1, passTo: -1, passWith: null });
        continue;
      }
      const led = readablePartition(door, t.name, p.index, p.currentLeaderEpoch);
      if (typeof led === "number") {
        if (led !== ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) misled = true;
        else failed = true;
        outs.push({ index: p.index, error: led, highWatermark: -1, lastStable: -1, logStart: -1, messages: [], aborted: null, epochs: null, passFrom: -1, passTo: -1, passWith: null });
        continue;
      }
      const stream = led;
      // A replicated partition whose leadership here is not yet (or no longer) the one Metadata shows: its records' epochs
      // are not this node's to tell.
      const epochs = EpochHistory.of(stream, p.index, leaderEpochOf(door, t.name, p.index));
      if (epochs === null) {
        misled = true;
        outs.push({ index: p.index, error: ErrorCode.LEADER_NOT_AVAILABLE, highWatermark: -1, lastStable: -1, logStart: -1, messages: [], aborted: null, epochs: null, passFrom: -1, passTo: -1, passWith: null });
        continue;
      }
      const log = stream.partitions[p.index];
      const st = log.state();
      const hwm = stream.replicatedSeq(p.index);
      const logStart = st.firstSeq - 1;
      const lastStable = door.txnIndexes.lastStableOffset(stream, p.index, hwm);
      // Past the high watermark but within the log is not out of range (Kafka's rule): nothing to read yet.
      if (p.offset < logStart || p.offset > st.lastSeq) {
        failed = true;
        // As Kafka answers any partition read that failed: no offsets (-1); the client asks ListOffsets where to go.
        outs.push({ index: p.index, error: ErrorCode.OFFSET_OUT_OF_RANGE, highWatermark: -1, lastStable: -1, logStart: -1, messages: [], aborted: null, epochs: null, passFrom: -1, passTo: -1, passWith: null });
        continue;
      }
      // read_committed sees nothing of a transaction still open.
      const end = readCommitted ? lastStable : hwm;
      let messages: StoredItem[] = [];
      let passTo = -1;
      let passWith: StoredMessage | null = null;
      // Within the partition's and the request's byte limits, except that the first batch of the answer goes whole however
      // large (KIP-74), so a large record cannot stall a consumer; nothing past them otherwise, as Kafka.
      const room = Math.min(p.maxBytes, maxBytes - bytes);
      if (maxBytes > 0 && p.offset < end && (room > 0 || bytes === 0)) {
        const limit = Math.min(MAX_MESSAGES_PER_PARTITION, end - p.offset);
        messages = await log.scanStored(p.offset + 1, { maxMessages: limit, maxBytes: Math.max(1, room) });
        // Nothing read below the end: perhaps nothing stored there any more (below).
        const noneBelowEnd = messages.length === 0 || firstOffsetOf(messages[0]) >= end;
        let visible = messages.length;
        while (visible > 0 && firstOffsetOf(messages[visible - 1]) >= end) visible--;
        let taken = 0;
        for (let i = 0; i < visible; i++) {
          const size = itemBytes(messages[i]);
          if (taken + size > room && (i > 0 || bytes > 0)) {
            visible = i;
            break;
          }
          taken += size;
        }
        if (visible < messages.length) messages = messages.slice(0, visible);
        else if (messages.length >= limit && limit === MAX_MESSAGES_PER_PARTITION) capped = true;
        bytes += taken;
        // Deleted up to where readers may read (a JetStream MSG.DELETE of the newest records): the client is told to read on
        // past them, or it would wait at its offset for ever. Only when the index says nothing is stored there: a batch
        // skipped for a failed read is not passed over.
        if (noneBelowEnd && log.pendingAfter(p.offset) === log.pendingAfter(end)) {
          passTo = end - 1;
          passWith = await firstStoredBefore(log, p.offset, end);
          // Answered at once (not after max_wait_ms) when the batch has a record: KafkaJS moves on one offset per such answer.
          if (passWith !== null) bytes += itemBytes(passWith);
        }
      }
      const aborted = !readCommitted ? null : messages.length === 0 ? [] : door.txnIndexes.abortedIn(stream, p.index, p.offset, lastOffsetOf(messages[messages.length - 1]), logStart);
      outs.push({ index: p.index, error: ErrorCode.NONE, highWatermark: hwm, lastStable, logStart, messages, aborted, epochs, passFrom: p.offset, passTo, passWith });
    }
    results.push(outs);
  }
  return { results, bytes, limited: false, misled, failed, capped };
}

/** What an item counts against a fetch's byte limits: a batch's bytes, a message's payload, headers and key and a framing allowance. */
function itemBytes(m: StoredItem): number {
  return isForeign(m) ? m.bytes.length : m.data.length + (m.headers?.length ?? 0) + (m.key?.length ?? 0) + 32;
}

/** Resolves on the first append to a fetched partition, or at the deadline. */
function appendOrTimeout(door: AccountDoor, topics: TopicFetch[], deadline: number): Promise<void> {
  const watched: Array<[Stream, (partition: number) => void]> = [];
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | null = null;
    const done = (): void => {
      if (timer !== null) clearTimeout(timer);
      for (const [s, l] of watched) s.appendListeners.delete(l);
      resolve();
    };
    for (const t of topics) {
      const stream = findTopic(door.js, t.name);
      if (stream === undefined) continue;
      const wanted = new Set(t.partitions.map((p) => p.index));
      const listener = (partition: number): void => {
        if (wanted.has(partition)) done();
      };
      stream.appendListeners.add(listener);
      watched.push([stream, listener]);
    }
    timer = setTimeout(done, Math.max(0, deadline - Date.now()));
  });
}

/** Where readTxnMark puts the transaction of the message at hand (one for every fetch: writeRecords never awaits). */
const txn: TxnMark = { producerId: -1, epoch: -1 };

function firstOffsetOf(m: StoredItem): number {
  return (isForeign(m) ? m.firstSeq : m.seq) - 1;
}

function lastOffsetOf(m: StoredItem): number {
  return isForeign(m) ? m.firstSeq + m.count - 2 : m.seq - 1;
}

/**
 * The partition's record set: batches stored as produced, copied with the
 * partition's offsets written in; other messages framed as batches of
 * records sharing an append time and transaction; markers as control batches.
 */
function writeRecords(w: Writer, messages: StoredItem[], epochs: EpochHistory | null): void {
  if (messages.length === 0 || epochs === null) {
    w.bytesLength(0);
    return;
  }
  if (w.flexible) return writeCompactRecords(w, messages, epochs);
  const lengthAt = w.reserveI32();
  const start = w.pos;
  writeBatches(w, messages, epochs);
  w.patchI32(lengthAt, w.pos - start);
}

/** The partition's first record, if it lies before offset `offset` and a batch from it may reach offset `end` - 1 (offset deltas are 32-bit); else null. */
async function firstStoredBefore(log: MessageLog, offset: number, end: number): Promise<StoredMessage | null> {
  const first = log.state().firstSeq;
  return first <= offset && end - first <= 0x7fffffff ? log.get(first) : null;
}

/**
 * A record set that moves a reader past offsets that hold nothing any more,
 * `first`..`last`. Kafka never leaves such a stretch at a partition's end (its
 * cleaner keeps the newest batch); here a MSG.DELETE can. Each client reads
 * past it differently: librdkafka and Java's consumer go on after a batch's
 * last offset; kafka-python does too, but fails on a batch with no record;
 * KafkaJS reads only records and moves one offset past the fetched one when
 * every record it got lies before it. So the partition's first record (which
 * the client skips, as it lies before what it asked for) goes again, in a
 * batch whose last offset is `last`; with none, an empty batch.
 */
function writePassingRecords(w: Writer, first: number, last: number, record: StoredMessage | null, epochs: EpochHistory): void {
  const lengthAt = w.flexible ? -1 : w.reserveI32();
  const scratch = w.flexible ? new Writer(256) : w;
  const start = scratch.pos;
  if (record === null) encodeEmptyBatch(scratch, first, last, epochs.at(last + 1));
  else {
    const out = { offset: record.seq - 1, timestamp: record.time, key: record.key, value: isNullValue(record.headers, record.data) ? null : record.data, headers: null };
    // Stamped with the epoch of its last offset: a client takes the batch's epoch as its position's, which it validates
    // after a change of leader (an older one could send it back to where that epoch ended).
    encodeBatch(scratch, [out], ATTR_LOG_APPEND_TIME, -1, -1, -1, epochs.at(last + 1), last);
  }
  if (lengthAt >= 0) w.patchI32(lengthAt, w.pos - start);
  else {
    w.bytesLength(scratch.pos);
    w.raw(scratch.buf.subarray(0, scratch.pos));
  }
}

/**
 * A flexible version's record set: its length is a varint ahead of it. When
 * every item is a batch stored whole (what Kafka producers wrote) the length
 * is known first; else the batches are framed after room for the longest
 * varint and moved back over what the length did not need.
 */
function writeCompactRecords(w: Writer, messages: StoredItem[], epochs: EpochHistory): void {
  let whole = 0;
  for (const m of messages) {
    if (!isForeign(m)) {
      whole = -1;
      break;
    }
    whole += m.bytes.length;
  }
  if (whole >= 0) {
    w.bytesLength(whole);
    writeBatches(w, messages, epochs);
    return;
  }
  const lengthAt = w.pos;
  w.grow(MAX_VARINT32);
  w.pos += MAX_VARINT32;
  const start = w.pos;
  writeBatches(w, messages, epochs);
  const length = w.pos - start;
  w.pos = lengthAt;
  w.bytesLength(length);
  w.buf.copy(w.buf, w.pos, start, start + length);
  w.pos += length;
}

/** The longest unsigned varint of a 32-bit length. */
const MAX_VARINT32 = 5;

/** The batches of a record set, as writeRecords describes them, each stamped with the leader epoch that wrote it. */
function writeBatches(w: Writer, messages: StoredItem[], epochs: EpochHistory): void {
  let run: OutRecord[] = [];
  // The transaction of the records in `run` (producer id -1: none), and of the message at hand; the leader epoch of `run`.
  let runProducer = -1;
  let runEpoch = -1;
  let runLeaderEpoch = 0;
  const flush = (): void => {
    if (run.length === 0) return;
    if (runProducer < 0) encodeBatch(w, run, ATTR_LOG_APPEND_TIME, -1, -1, -1, runLeaderEpoch);
    else encodeBatch(w, run, ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL, runProducer, runEpoch, -1, runLeaderEpoch);
    run = [];
  };
  for (const m of messages) {
    if (isForeign(m)) {
      flush();
      const at = w.pos;
      w.raw(m.bytes);
      // Neither field is under the batch's CRC: the broker sets both.
      const offset = m.firstSeq - 1;
      w.buf.writeUInt32BE(Math.floor(offset / 0x100000000), at + BATCH_BASE_OFFSET);
      w.buf.writeUInt32BE(offset >>> 0, at + BATCH_BASE_OFFSET + 4);
      w.buf.writeInt32BE(epochs.at(m.firstSeq), at + BATCH_LEADER_EPOCH);
      continue;
    }
    const leaderEpoch = epochs.at(m.seq);
    const inTxn = readTxnMark(m.headers, txn);
    const producer = inTxn ? txn.producerId : -1;
    const epoch = inTxn ? txn.epoch : -1;
    const control = m.subject === CONTROL_SUBJECT_COMMIT ? CONTROL_COMMIT : m.subject === CONTROL_SUBJECT_ABORT ? CONTROL_ABORT : -1;
    if (control >= 0 && inTxn) {
      flush();
      const marker = { offset: m.seq - 1, timestamp: m.time, key: controlKey(control), value: CONTROL_VALUE, headers: null };
      encodeBatch(w, [marker], ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL, producer, epoch, -1, leaderEpoch);
      continue;
    }
    if (run.length > 0 && (run[0].timestamp !== m.time || runProducer !== producer || runEpoch !== epoch || runLeaderEpoch !== leaderEpoch)) flush();
    if (run.length === 0) {
      runProducer = producer;
      runEpoch = epoch;
      runLeaderEpoch = leaderEpoch;
    }
    // The stored header block is written as record headers by encodeBatch (messages.ts), in order.
    run.push({ offset: m.seq - 1, timestamp: m.time, key: m.key, value: isNullValue(m.headers, m.data) ? null : m.data, headers: m.headers });
  }
  flush();
}

/** A control record's key: version 0, then the marker type (0 abort, 1 commit). */
function controlKey(type: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt16BE(type, 2);
  return b;
}

/** A marker's value: version 0 and the coordinator epoch (always 0 here: one coordinator). */
const CONTROL_VALUE = Buffer.alloc(6);

/**
 * The first offset whose timestamp is at or after `target`, with that
 * timestamp, as Kafka's time index finds it. Under LogAppendTime that is the
 * log's own time. Under CreateTime it is the producer's: the log's index of
 * each batch's newest record time (a Kafka batch's max timestamp) skips the
 * batches that cannot hold one, and the first candidate's records are read
 * for the first stamped at or after it. Deleted records are not found.
 */
async function offsetForTime(log: MessageLog, target: number, logAppendTime: boolean): Promise<{ offset: number; timestamp: number } | null> {
  if (logAppendTime) {
    const m = await log.firstAtOrAfter(target);
    return m === null ? null : { offset: m.seq - 1, timestamp: m.time };
  }
  for (let from = log.state().firstSeq; ; ) {
    const seq = log.firstStampedAtOrAfter(target, from);
    const items = await log.scanStored(seq, { maxMessages: 256 });
    if (items.length === 0) return null;
    for (const m of items) {
      if (isForeign(m)) {
        // A batch that began before `seq`: only its records from `seq` on count (those before may be gone).
        const hit = await firstRecordAtOrAfter(m.bytes, target, Math.max(0, seq - m.firstSeq));
        if (hit !== null) return { offset: m.firstSeq + hit.index - 1, timestamp: hit.timestamp };
        from = m.firstSeq + m.count;
      } else {
        if (m.time >= target) return { offset: m.seq - 1, timestamp: m.time };
        from = m.seq + 1;
      }
    }
  }
}

/** How many batches ListOffsets for the max timestamp reads at most (each one whose newest record was deleted sends it to the next). */
const MAX_TIMESTAMP_BATCHES = 1000;

/**
 * The record with the highest timestamp, the first of them if several, as
 * Kafka's ListOffsets v7 finds it, among the records still stored. The
 * log's index names the batch with the newest time as appended; its records
 * are read, and if the one that carried that time was deleted, the best
 * left in it stands against the next batch the index names.
 */
async function newestRecord(log: MessageLog): Promise<{ offset: number; timestamp: number } | null> {
  const passed = new Set<number>();
  let best: { seq: number; timestamp: number } | null = null;
  for (let i = 0; i < MAX_TIMESTAMP_BATCHES; i++) {
    const next = log.newestStamped(passed);
    if (next === null || (best !== null && (next.time < best.timestamp || (next.time === best.timestamp && next.seq > best.seq)))) break;
    passed.add(next.seq);
    const [m] = await log.scanStored(next.seq, { maxMessages: 1 });
    if (m === undefined) continue;
    let found: { seq: number; timestamp: number };
    if (isForeign(m)) {
      const hit = await newestRecordIn(m.bytes, Math.max(0, next.seq - m.firstSeq));
      if (hit === null) continue;
      found = { seq: m.firstSeq + hit.index, timestamp: hit.timestamp };
    } else {
      // The log's own records, and those of a batch with a record gone from its middle, carry the time they were stored.
      found = { seq: m.seq, timestamp: m.time };
    }
    if (found.timestamp === next.time) return { offset: found.seq - 1, timestamp: found.timestamp };
    if (best === null || found.timestamp > best.timestamp || (found.timestamp === best.timestamp && found.seq < best.seq)) best = found;
  }
  return best === null ? null : { offset: best.seq - 1, timestamp: best.timestamp };
}

export function handleListOffsets(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { isolationLevel, topics } = decodeListOffsets(r, version);
  const readCommitted = isolationLevel === READ_COMMITTED;
  // Kafka refuses an isolation level it does not know in every partition (IsolationLevel.forId throws).
  const unknownIsolation = isolationLevel !== READ_UNCOMMITTED && isolationLevel !== READ_COMMITTED;
  // v1+: a partition named twice is INVALID_REQUEST wherever it is named, as Kafka answers it (duplicatePartitions).
  const duplicates = new Set<string>();
  if (version >= 1) {
    const seen = new Set<string>();
    for (const t of topics) for (const p of t.partitions) (seen.has(`${t.name}\0${p.index}`) ? duplicates : seen).add(`${t.name}\0${p.index}`);
  }
  return (async () => {
    const results = [];
    for (const t of topics) {
      const stream = findTopic(door.js, t.name);
      const denied = stream !== undefined && !mayDescribeTopic(conn.permissions, stream);
      const parts = [];
      for (const p of t.partitions) {
        if (unknownIsolation) {
          parts.push({ index: p.index, error: ErrorCode.UNKNOWN_SERVER_ERROR, timestamp: -1, offset: -1, epoch: -1 });
          continue;
        }
        if (duplicates.size > 0 && duplicates.has(`${t.name}\0${p.index}`)) {
          parts.push({ index: p.index, error: ErrorCode.INVALID_REQUEST, timestamp: -1, offset: -1, epoch: -1 });
          continue;
        }
        if (denied) {
          parts.push({ index: p.index, error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, timestamp: -1, offset: -1, epoch: -1 });
          continue;
        }
        const led = readablePartition(door, t.name, p.index, p.currentLeaderEpoch);
        if (typeof led === "number") {
          parts.push({ index: p.index, error: led, timestamp: -1, offset: -1, epoch: -1 });
          continue;
        }
        // v4+ gives each offset's leader epoch: a replicated partition's leadership here must be the one Metadata shows.
        const current = version >= 4 ? leaderEpochOf(door, t.name, p.index) : -1;
        const epochs = version >= 4 ? EpochHistory.of(led, p.index, current) : null;
        if (version >= 4 && epochs === null) {
          parts.push({ index: p.index, error: ErrorCode.LEADER_NOT_AVAILABLE, timestamp: -1, offset: -1, epoch: -1 });
          continue;
        }
        const log = led.partitions[p.index];
        const st = log.state();
        let offset: number;
        let timestamp = -1;
        const hwm = led.replicatedSeq(p.index);
        // KIP-207: a new leader's high watermark may be below the one its predecessor showed until its followers fetch;
        // "latest", or a time not found below it, is OFFSET_NOT_AVAILABLE meanwhile (retried by clients), as Kafka answers v1+.
        const settling = version >= 1 && !led.replicatedSeqCurrent(p.index);
        let error: number = ErrorCode.NONE;
        if (p.timestamp === LATEST) {
          if (settling) error = ErrorCode.OFFSET_NOT_AVAILABLE;
          offset = settling ? -1 : readCommitted && stream !== undefined ? door.txnIndexes.lastStableOffset(stream, p.index, hwm) : hwm;
        } else if (p.timestamp === EARLIEST) offset = st.firstSeq - 1;
        else {
          const found =
            p.timestamp === MAX_TIMESTAMP && version >= 7 ? await newestRecord(log) : await offsetForTime(log, p.timestamp, stream !== undefined && timestampPolicy(stream).logAppendTime);
          // Only what consumers may read: a record past the high watermark is not found yet, nor, read_committed, one at or
          // past the last stable offset (Kafka's Partition.fetchOffsetForTimestamp).
          const readable = readCommitted && stream !== undefined ? door.txnIndexes.lastStableOffset(stream, p.index, hwm) : hwm;
          const visible = found !== null && found.offset < readable;
          offset = visible ? found.offset : -1;
          if (visible) timestamp = found.timestamp;
          else if (settling) error = ErrorCode.OFFSET_NOT_AVAILABLE;
        }
        // v4+: the leader epoch of the offset found, as Kafka answers it: for "latest" the leader's current one, else the one
        // that wrote the record there (the log start's, for "earliest").
        const epoch = offset < 0 || epochs === null ? -1 : p.timestamp === LATEST ? current : epochs.at(offset + 1);
        parts.push({ index: p.index, error, timestamp, offset, epoch });
      }
      results.push({ name: t.name, parts });
    }
    if (version >= 2) w.i32(0); // throttle_time_ms
    w.array(results, (w, t) => {
      w.string(t.name);
      w.array(t.parts, (w, p) => {
        w.i32(p.index).i16(p.error);
        if (version === 0) {
          if (p.offset >= 0) w.arrayLength(1).i64(p.offset);
          else w.arrayLength(0);
        } else w.i64(p.timestamp).i64(p.offset);
        if (version >= 4) w.i32(p.epoch);
        w.taggedFields();
      });
      w.taggedFields();
    });
    w.taggedFields();
    return true;
  })();
}

/**
 * A fetch refused whole, as Kafka's getErrorResponse answers one it could
 * not handle (an isolation level it does not know): the error at the top
 * (v7+) and, before v13, in every partition asked, with nothing read.
 */
function writeFetchRefused(w: Writer, version: number, topics: FetchRequest["topics"], error: number): void {
  w.i32(0); // throttle_time_ms
  if (version >= 7) w.i16(error).i32(0); // error_code, session_id
  w.array(version >= 13 ? [] : topics, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      w.i32(p.index).i16(error).i64(-1).i64(-1); // high watermark, last stable offset
      if (version >= 5) w.i64(-1); // log start offset
      w.arrayLength(-1); // aborted transactions
      if (version >= 11) w.i32(-1); // preferred_read_replica
      w.nullableBytes(null);
      w.taggedFields();
    });
    w.taggedFields();
  });
  w.taggedFields();
}

/**
 * OffsetForLeaderEpoch: where a leader epoch ends in a partition (epoch-history.ts),
 * which a client asks after a change of leader to check that the records it
 * read are still there (KIP-320), answered by the partition's leader with
 * Fetch's checks (leader, current leader epoch) and ListOffsets' permission
 * (describe the topic).
 */
export function handleOffsetForLeaderEpoch(door: AccountDoor, { conn, version, r, w }: RequestContext): boolean {
  const { topics } = decodeOffsetForLeaderEpoch(r, version);
  if (version >= 2) w.i32(0); // throttle_time_ms
  w.array(topics, (w, t) => {
    const stream = findTopic(door.js, t.name);
    const denied = stream !== undefined && !mayDescribeTopic(conn.permissions, stream);
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      let error: number = ErrorCode.NONE;
      let found = { epoch: -1, endOffset: -1 };
      if (denied) error = ErrorCode.TOPIC_AUTHORIZATION_FAILED;
      else {
        const led = readablePartition(door, t.name, p.index, p.currentLeaderEpoch);
        if (typeof led === "number") error = led;
        else {
          const history = EpochHistory.of(led, p.index, leaderEpochOf(door, t.name, p.index));
          if (history === null) error = ErrorCode.LEADER_NOT_AVAILABLE;
          else found = history.endOffsetFor(p.leaderEpoch, led.partitions[p.index].state().lastSeq);
        }
      }
      w.i16(error).i32(p.index);
      if (version >= 1) w.i32(found.epoch);
      w.i64(found.endOffset);
      w.taggedFields();
    });
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}
