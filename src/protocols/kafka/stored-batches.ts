/**
 * Kafka batches as the store keeps them. A produced RecordBatch whose
 * records all go to the topic's subject is stored whole, as the producer
 * framed it (compressed if it was, its producer id, epoch, base sequence,
 * transactional flag and record timestamps intact): a fetch copies it back
 * with its base offset set, and a NATS reader gets its records through
 * `kafkaRecords`, the store's decoder for them (MessageLog.appendBatch).
 *
 * Offsets in a stored batch: bytes 0–7 hold the base offset the producer
 * sent (0) and 12–15 its partition leader epoch; neither is covered by the
 * batch's CRC, so a fetch writes the partition's own values over them.
 */

import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { crc32c } from "../../util/crc32c.js";
import { FOREIGN_KAFKA, isForeign, type ForeignRecords, type MessageLog, type StoredItem, type StoredMessage } from "../../store/log.js";
import { Reader } from "./codec.js";
import { BATCH_HEADER, batchMarkOf, CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, natsHeaderBlocks, readTxnMark, type TxnMark } from "./messages.js";
import { ATTR_CODEC_MASK, ATTR_LOG_APPEND_TIME, ATTR_TRANSACTIONAL, BATCH_MAGIC, BATCH_OVERHEAD, decodeProduceBatch, type DecompressionGate } from "./records.js";

/** Where the fields of a RecordBatch v2 are (bytes from its start). */
export const BATCH_BASE_OFFSET = 0;
export const BATCH_LEADER_EPOCH = 12;
const BATCH_LENGTH = 8;
const BATCH_LENGTH_END = 12;
const BATCH_CRC = 17;
/** Where the bytes under the batch's CRC-32C begin (its attributes); they run to the batch's end. */
export const BATCH_CRC_FROM = 21;
const BATCH_ATTRIBUTES = 21;
const BATCH_LAST_OFFSET_DELTA = 23;
const BATCH_BASE_TIMESTAMP = 27;
const BATCH_MAX_TIMESTAMP = 35;
const BATCH_PRODUCER_ID = 43;
const BATCH_PRODUCER_EPOCH = 51;
const BATCH_BASE_SEQUENCE = 53;
const BATCH_RECORD_COUNT = 57;

const gzipAsync = promisify(gzip);
const GZIP = 1;

/** The most a stored batch may decompress to when read back: the store's own batch limit. */
const MAX_DECOMPRESSED = 64 * 1024 * 1024;

/** Decompression of stored batches is not the produce budget's concern: what was accepted once is read back. */
const readGate: DecompressionGate = { maxBytes: MAX_DECOMPRESSED, take: () => true, give: () => {} };

/**
 * The store's decoder of Kafka batches: each record as the message a NATS
 * reader gets, under the batch's subject, with the log's append time: key
 * as the message key, headers as a NATS header block in order (a
 * transactional record also carries `Kafka-Txn`, a null value
 * `Kafka-Value: null`), the value as the payload.
 */
export const kafkaRecords: ForeignRecords = {
  async decode(format, bytes, firstSeq, time, subject) {
    if (format !== FOREIGN_KAFKA) throw new Error(`stored batch in unknown format ${format}`);
    const batch = await decodeProduceBatch(bytes, readGate, false, true);
    const txn = batch.transactional ? { producerId: batch.producerId, epoch: batch.producerEpoch } : null;
    const headers = batch.headerCount !== null || txn !== null || hasNull(batch.valueLen) ? natsHeaderBlocks(batch, txn, null, () => {}) : null;
    const body = batch.body;
    // A batch compaction cut (cutStoredBatch) has holes where its records went: each record at its offset delta.
    const deltas = batch.offsetDeltas;
    const out = new Array<StoredMessage>(batch.lastOffsetDelta + 1);
    for (let i = 0; i < batch.count; i++) {
      const keyLen = batch.keyLen[i];
      const valueLen = batch.valueLen[i];
      const delta = deltas === null ? i : deltas[i];
      out[delta] = {
        seq: firstSeq + delta,
        time,
        subject,
        key: keyLen < 0 ? null : body.subarray(batch.keyAt[i], batch.keyAt[i] + keyLen),
        headers: headers?.[i] ?? null,
        data: valueLen < 0 ? body.subarray(0, 0) : body.subarray(batch.valueAt[i], batch.valueAt[i] + valueLen),
      };
    }
    return out;
  },
  newestRecordTime(format, bytes) {
    return format === FOREIGN_KAFKA && bytes.length >= BATCH_MAX_TIMESTAMP + 8 ? batchMaxTimestamp(bytes) : null;
  },
  records(format, bytes) {
    return format === FOREIGN_KAFKA && bytes.length >= BATCH_OVERHEAD ? bytes.readInt32BE(BATCH_RECORD_COUNT) : -1;
  },
  cut(format, bytes, live, toStore) {
    if (format !== FOREIGN_KAFKA) return Promise.resolve(null);
    return cutStoredBatch(bytes, live, toStore === true);
  },
};

/**
 * A stored batch with only the records at the offset deltas `live` names
 * (1: kept), as Kafka's cleaner rewrites a batch it compacts: its base
 * offset, last offset delta, timestamps, producer id, epoch, base sequence
 * and attributes stay, so readers get each record left at its offset with
 * its own timestamp, the transaction index and producer recovery read the
 * same header, and clients step over the offsets that went. What is left
 * is uncompressed, unless `compress` and the batch was compressed: then
 * gzip (Kafka compresses it again with the batch's own codec; nagare has a
 * compressor for gzip only, which every client reads). Null when no record
 * is left.
 */
export async function cutStoredBatch(bytes: Buffer, live: Uint8Array, compress = false): Promise<Buffer | null> {
  const attributes = bytes.readInt16BE(BATCH_ATTRIBUTES);
  const codec = attributes & ATTR_CODEC_MASK;
  const body = codec === 0 ? bytes.subarray(BATCH_OVERHEAD) : (await decodeProduceBatch(bytes, readGate, false, true)).body;
  const r = new Reader(body);
  const keep: number[] = [];
  let kept = 0;
  let size = 0;
  while (r.pos < body.length) {
    const start = r.pos;
    const length = r.varint();
    const end = r.pos + length;
    r.i8(); // attributes
    r.varlong(); // timestamp delta
    const delta = r.varint();
    if (end > body.length) throw new Error("stored batch: a record passes its end");
    if (live[delta] === 1) {
      keep.push(start, end);
      kept++;
      size += end - start;
    }
    r.pos = end;
  }
  if (kept === 0) return null;
  let records = Buffer.allocUnsafe(size);
  let at = 0;
  for (let k = 0; k < keep.length; k += 2) at += body.copy(records, at, keep[k], keep[k + 1]);
  let codecNow = 0;
  if (compress && codec !== 0) {
    records = await gzipAsync(records);
    codecNow = GZIP;
  }
  const out = Buffer.allocUnsafe(BATCH_OVERHEAD + records.length);
  bytes.copy(out, 0, 0, BATCH_OVERHEAD);
  records.copy(out, BATCH_OVERHEAD);
  out.writeInt32BE(out.length - BATCH_LENGTH_END, BATCH_LENGTH);
  out.writeInt16BE((attributes & ~ATTR_CODEC_MASK) | codecNow, BATCH_ATTRIBUTES);
  out.writeInt32BE(kept, BATCH_RECORD_COUNT);
  out.writeUInt32BE(crc32c(out, BATCH_CRC_FROM) >>> 0, BATCH_CRC);
  return out;
}

function hasNull(lengths: Int32Array): boolean {
  for (let i = 0; i < lengths.length; i++) if (lengths[i] < 0) return true;
  return false;
}

/**
 * Makes a produced batch say the timestamp type of its topic, as a Kafka
 * broker does (LogValidator's setMaxTimestamp): under LogAppendTime the
 * attribute bit and the log's time as its max timestamp; under CreateTime
 * no bit and its records' newest time, whatever the producer wrote there.
 * Rewrites the CRC over them only when something changed.
 */
export function stampTimestamp(batch: Buffer, logAppendTime: boolean, maxTimestamp: number): void {
  const attributes = batch.readInt16BE(BATCH_ATTRIBUTES);
  const stamped = logAppendTime ? attributes | ATTR_LOG_APPEND_TIME : attributes & ~ATTR_LOG_APPEND_TIME;
  if (stamped === attributes && batchMaxTimestamp(batch) === maxTimestamp) return;
  batch.writeInt16BE(stamped, BATCH_ATTRIBUTES);
  batch.writeInt32BE(Math.floor(maxTimestamp / 2 ** 32), BATCH_MAX_TIMESTAMP);
  batch.writeUInt32BE(maxTimestamp >>> 0, BATCH_MAX_TIMESTAMP + 4);
  batch.writeUInt32BE(crc32c(batch, BATCH_CRC_FROM) >>> 0, BATCH_CRC);
}

/** The CRC-32C field of a batch: of its bytes from BATCH_CRC_FROM to its end. */
export function batchCrc(batch: Buffer): number {
  return batch.readUInt32BE(BATCH_CRC);
}

/** The idempotence fields of a stored batch, read without decoding it. */
export function batchProducer(batch: Buffer): { producerId: number; epoch: number; baseSequence: number; transactional: boolean } {
  const r = new Reader(batch);
  r.pos = BATCH_PRODUCER_ID;
  const producerId = r.i64();
  r.pos = BATCH_PRODUCER_EPOCH;
  const epoch = r.i16();
  r.pos = BATCH_BASE_SEQUENCE;
  const baseSequence = r.i32();
  return { producerId, epoch, baseSequence, transactional: (batch.readInt16BE(BATCH_ATTRIBUTES) & ATTR_TRANSACTIONAL) !== 0 };
}

/** A stored batch's max timestamp (its records' newest, or the log's append time under LogAppendTime). */
export function batchMaxTimestamp(batch: Buffer): number {
  // Two halves, not a BigInt: read for every batch appended (the store's index of record times).
  return batch.readInt32BE(BATCH_MAX_TIMESTAMP) * 2 ** 32 + batch.readUInt32BE(BATCH_MAX_TIMESTAMP + 4);
}

/** The attributes of a produced record set's first batch, read without decoding it (as Kafka's request checks read them); null unless a v2 batch header is there. */
export function leadingAttributes(set: Buffer): number | null {
  return set.length >= BATCH_OVERHEAD && set[BATCH_MAGIC] === 2 ? set.readInt16BE(BATCH_ATTRIBUTES) : null;
}

/** The producer id of a stored transactional batch, read without decoding it; -1 for any other batch. */
export function transactionalProducer(batch: Buffer): number {
  if (batch.length < BATCH_BASE_SEQUENCE || (batch.readInt16BE(BATCH_ATTRIBUTES) & ATTR_TRANSACTIONAL) === 0) return -1;
  return Number(batch.readBigInt64BE(BATCH_PRODUCER_ID));
}

/**
 * Visits the records of a stored batch, in order, with each one's offset
 * delta and timestamp (under LogAppendTime, the batch's max timestamp)
 * until `visit` returns true.
 */
async function visitTimestamps(batch: Buffer, visit: (delta: number, timestamp: number) => boolean): Promise<void> {
  const records = batch.readInt32BE(BATCH_RECORD_COUNT);
  if ((batch.readInt16BE(BATCH_ATTRIBUTES) & ATTR_LOG_APPEND_TIME) !== 0 && batch.readInt32BE(BATCH_LAST_OFFSET_DELTA) === records - 1) {
    // Every record has the batch's time and its index as its delta (no record cut out): nothing to decode (or decompress).
    const max = batchMaxTimestamp(batch);
    for (let i = 0; i < records; i++) if (visit(i, max)) return;
    return;
  }
  const logAppendTime = (batch.readInt16BE(BATCH_ATTRIBUTES) & ATTR_LOG_APPEND_TIME) !== 0;
  const { body, count } = await decodeProduceBatch(batch, readGate, false, true);
  const base = logAppendTime ? batchMaxTimestamp(batch) : batch.readInt32BE(BATCH_BASE_TIMESTAMP) * 2 ** 32 + batch.readUInt32BE(BATCH_BASE_TIMESTAMP + 4);
  const r = new Reader(body);
  for (let i = 0; i < count; i++) {
    const length = r.varint();
    const end = r.pos + length;
    r.i8(); // attributes
    const timestamp = base + (logAppendTime ? (r.varlong(), 0) : r.varlong());
    if (visit(r.varint(), timestamp)) return;
    r.pos = end;
  }
}

/**
 * The first record of a stored batch, from offset delta `fromIndex` on,
 * whose timestamp is at or after `target` (ListOffsets by time on a
 * CreateTime topic), with its offset delta (`index`), or null. The batch's
 * max timestamp rules most batches out without decoding them.
 */
export async function firstRecordAtOrAfter(batch: Buffer, target: number, fromIndex = 0): Promise<{ index: number; timestamp: number } | null> {
  if (batchMaxTimestamp(batch) < target) return null;
  let found: { index: number; timestamp: number } | null = null;
  await visitTimestamps(batch, (index, timestamp) => {
    if (index < fromIndex || timestamp < target) return false;
    found = { index, timestamp };
    return true;
  });
  return found;
}

/**
 * The record of a stored batch, from offset delta `fromIndex` on, with the
 * highest timestamp (the first of equals), with its offset delta
 * (`index`), or null if it has none there (ListOffsets for the max
 * timestamp).
 */
export async function newestRecordIn(batch: Buffer, fromIndex: number): Promise<{ index: number; timestamp: number } | null> {
  let best: { index: number; timestamp: number } | null = null;
  await visitTimestamps(batch, (index, timestamp) => {
    if (index >= fromIndex && (best === null || timestamp > best.timestamp)) best = { index, timestamp };
    return false;
  });
  return best;
}

/** How far back (in messages) a partition is searched for its producers' batches: a producer's recovery, DescribeProducers. */
export const PRODUCER_SCAN = 10_000;

/** One producer's batch or transaction marker found in a log (scanProducers reuses one for every call of its visitor). */
export interface ProducerFound {
  producerId: number;
  epoch: number;
  /** A marker's: -1. */
  baseSequence: number;
  count: number;
  /** The offset of its first record. */
  offset: number;
  /** The batch's max timestamp (a message's, the log's time). */
  timestamp: number;
  marker: boolean;
}

/** What one read of a producer scan takes at most: its payloads are read with it, and a request may ask for the scan. */
const SCAN_BYTES = 1024 * 1024;

/**
 * Visits, oldest first, every idempotent batch (kept whole, or begun by a
 * message with a `Kafka-Batch` header) and every transaction marker in
 * `log` from sequence `from` to `to`; only `producerId`'s when given.
 * Batches of producers without an id (not idempotent) are not visited.
 */
export async function scanProducers(log: MessageLog, from: number, to: number, visit: (found: ProducerFound) => void, producerId?: number): Promise<void> {
  const scan = new ProducerScan(visit, producerId);
  for (let seq = Math.max(from, log.state().firstSeq); seq <= to; ) {
    const items = await log.scanStored(seq, { maxMessages: 1024, maxBytes: SCAN_BYTES });
    if (items.length === 0) return;
    let last = seq;
    for (const m of items) {
      // Items come in order: the rest were appended after the scan began.
      const first = isForeign(m) ? m.firstSeq : m.seq;
      if (first > to) return;
      last = isForeign(m) ? m.firstSeq + m.count - 1 : m.seq;
      scan.item(m);
    }
    seq = last + 1;
  }
}

/** Visits the idempotent batches and transaction markers among stored items, as scanProducers finds them in a log. */
export class ProducerScan {
  private readonly found: ProducerFound = { producerId: -1, epoch: -1, baseSequence: -1, count: 0, offset: -1, timestamp: -1, marker: false };
  private readonly mark: TxnMark = { producerId: -1, epoch: -1 };
  /** A message beginning one of the producer's batches names it first: most others are skipped without parsing their headers. */
  private readonly needle: Buffer;

  constructor(
    private readonly visit: (found: ProducerFound) => void,
    private readonly producerId?: number,
  ) {
    this.needle = Buffer.from(producerId === undefined ? `${BATCH_HEADER}: ` : `${BATCH_HEADER}: ${producerId} `);
  }

  item(m: StoredItem): void {
    const found = this.found;
    const producerId = this.producerId;
    if (isForeign(m)) {
      if (m.format !== FOREIGN_KAFKA) return;
      const p = batchProducer(m.bytes);
      if (p.producerId < 0 || (producerId !== undefined && p.producerId !== producerId)) return;
      found.producerId = p.producerId;
      found.epoch = p.epoch;
      found.baseSequence = p.baseSequence;
      found.count = m.count;
      found.offset = m.firstSeq - 1;
      found.timestamp = batchMaxTimestamp(m.bytes);
      found.marker = false;
      this.visit(found);
      return;
    }
    if (m.headers === null) return;
    if (m.subject === CONTROL_SUBJECT_COMMIT || m.subject === CONTROL_SUBJECT_ABORT) {
      if (!readTxnMark(m.headers, this.mark) || (producerId !== undefined && this.mark.producerId !== producerId)) return;
      found.producerId = this.mark.producerId;
      found.epoch = this.mark.epoch;
      found.baseSequence = -1;
      found.count = 0;
      found.marker = true;
    } else {
      const b = m.headers.indexOf(this.needle) < 0 ? null : batchMarkOf(m.headers);
      if (b === null || (producerId !== undefined && b.producerId !== producerId)) return;
      found.producerId = b.producerId;
      found.epoch = b.epoch;
      found.baseSequence = b.baseSequence;
      found.count = b.count;
      found.marker = false;
    }
    found.offset = m.seq - 1;
    found.timestamp = m.time;
    this.visit(found);
  }
}
