/**
 * RecordBatch v2 (magic 2), the only record format Produce v3+ and Fetch v4+
 * carry. Decoding checks what the broker must check before storing a batch
 * (see ../../../docs/KAFKA.md); encoding frames stored messages for Fetch.
 *
 * batch:  baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8
 *         | crc u32 (CRC-32C from attributes to the end) | attributes i16
 *         | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
 *         | producerId i64 | producerEpoch i16 | baseSequence i32 | count i32
 *         | records (compressed as a whole when the codec bits say so)
 * record: length varint | attributes i8 | timestampDelta varlong
 *         | offsetDelta varint | key (varint length, -1 null) | value
 *         | header count varint | (key string, value bytes) × count
 */

import { crc32c } from "../../util/crc32c.js";
import { KafkaDecodeError, Reader, Writer } from "./codec.js";
import { decompress, decompressedBound } from "./compression.js";
import { BatchError, ErrorCode } from "./errors.js";
import { writeRecordHeaders } from "./messages.js";

export const BATCH_OVERHEAD = 61;
/** A record's or batch's timestamp when it has none (Kafka's RecordBatch.NO_TIMESTAMP). */
export const NO_TIMESTAMP = -1;
/** Where a batch's magic byte is; and the shortest length field a batch may have (Kafka's LegacyRecord.RECORD_OVERHEAD_V0). */
export const BATCH_MAGIC = 16;
const MIN_BATCH_LENGTH = 14;
/** Where the batch's length field ends (Kafka's LOG_OVERHEAD): a set shorter holds no batch. */
const BATCH_LENGTH_END = 12;
/**
 * Kafka's per-batch log overhead (offset and length): a batch as produced counts it against max.message.bytes, whose
 * broker default message.max.bytes is here max_payload plus it (as Kafka's default is 1 MiB plus it, 1048588).
 */
export const LOG_OVERHEAD = BATCH_LENGTH_END;
/** The smallest record: length, attributes, timestamp and offset deltas, key and value lengths, header count (a byte each). */
const MIN_RECORD_BYTES = 7;
const CRC_FROM = 21;
export const ATTR_CODEC_MASK = 0x07;
export const ATTR_LOG_APPEND_TIME = 0x08;
export const ATTR_TRANSACTIONAL = 0x10;
export const ATTR_CONTROL = 0x20;

/**
 * One partition's batch, checked and decoded without an object per record:
 * record i's key and value are spans of `body` (length -1: null).
 */
export interface DecodedBatch {
  attributes: number;
  /** The producer's timestamps: the batch's base, and the lowest (NO_TIMESTAMP aside; MAX_SAFE_INTEGER when none) and highest of its records. */
  baseTimestamp: number;
  minTimestamp: number;
  maxTimestamp: number;
  /** Whether a record has no time (NO_TIMESTAMP). */
  untimed: boolean;
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
  transactional: boolean;
  count: number;
  /** The records' bytes: a view of the request frame, or what decompression produced. */
  body: Buffer;
  keyAt: Int32Array;
  keyLen: Int32Array;
  valueAt: Int32Array;
  valueLen: Int32Array;
  /**
   * Per record where its headers begin in `body` (after their count) and how
   * many it has (0: none); null when no record has any. Headers stay in the
   * batch's bytes, in the order sent: nothing is made per header.
   */
  headerAt: Int32Array | null;
  headerCount: Int32Array | null;
  /** The records' value bytes (a null value counts 0), and the largest value's. */
  valueBytes: number;
  largestValue: number;
  /** Bytes of the decompression budget this batch holds (its decompressed body): give them back once the records are stored or refused. */
  held: number;
  /** The batch's last offset delta: count - 1, unless compaction cut records out of it (a stored batch only). */
  lastOffsetDelta: number;
  /** Per record its offset delta, when compaction cut records out of the batch (its deltas have gaps); null when record i's is i. */
  offsetDeltas: Int32Array | null;
}

/** Where a batch's decompressed bytes are counted: the door's budget across connections (budget.ts). */
export interface DecompressionGate {
  /** The most one batch may decompress to. */
  readonly maxBytes: number;
  /** Takes n bytes of the budget, waiting in turn; false when they could not be had. */
  take(n: number): true | Promise<boolean>;
  give(n: number): void;
}

/**
 * Decodes the record set of one partition of a Produce request: exactly one
 * v2 batch, as Kafka requires. A compressed batch first takes, from `gate`,
 * as many bytes as its framing says it can expand to, and keeps holding what
 * it did expand to (`held`) after this returns; on a refusal it gives them
 * back itself.
 */
export async function decodeProduceBatch(set: Buffer, gate: DecompressionGate, checkCrc = true, stored = false): Promise<DecodedBatch> {
  // Kafka's codes, in its order (ByteBufferLogInputStream, ProduceRequest.validateRecords): a set holding no whole
  // batch, or one that is not v2, is an invalid record; a length or magic no batch can have is a corrupt message.
  if (set.length < BATCH_LENGTH_END) throw new BatchError(ErrorCode.INVALID_RECORD, "no record batch for the partition");
  const r = new Reader(set);
  r.i64(); // baseOffset: the broker assigns offsets
  const batchLength = r.i32();
  if (batchLength < MIN_BATCH_LENGTH) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, `record batch length ${batchLength}`);
  if (set.length < BATCH_MAGIC + 1) throw new BatchError(ErrorCode.INVALID_RECORD, "no record batch for the partition");
  r.i32(); // partitionLeaderEpoch
  const magic = r.i8();
  if (magic < 0 || magic > 2) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, `record batch magic ${magic}`);
  if (batchLength + 12 > set.length) throw new BatchError(ErrorCode.INVALID_RECORD, "no whole record batch for the partition: its length passes the record set");
  if (magic !== 2) throw new BatchError(ErrorCode.INVALID_RECORD, `record batch magic ${magic}; only v2 is accepted`);
  if (batchLength + 12 < set.length) throw new BatchError(ErrorCode.INVALID_RECORD, "more than one record batch for the partition");
  if (set.length < BATCH_OVERHEAD) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, "record batch shorter than its header");
  const crc = r.u32();
  if (checkCrc && crc32c(set, CRC_FROM) >>> 0 !== crc) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, "record batch CRC mismatch");
  const attributes = r.i16();
  const lastOffsetDelta = r.i32();
  const baseTimestamp = r.i64();
  r.i64(); // maxTimestamp: the records say
  const producerId = r.i64();
  const producerEpoch = r.i16();
  const baseSequence = r.i32();
  const count = r.i32();
  if (attributes & ATTR_CONTROL) throw new BatchError(ErrorCode.INVALID_RECORD, "clients may not send control batches");
  const transactional = (attributes & ATTR_TRANSACTIONAL) !== 0;
  if (transactional && producerId < 0) throw new BatchError(ErrorCode.INVALID_PRODUCER_ID_MAPPING, "transactional batch without a producer id");
  // A stored batch that compaction cut (cutStoredBatch) holds fewer records than its offsets span.
  if (count <= 0 || (stored ? count > lastOffsetDelta + 1 : lastOffsetDelta !== count - 1)) throw new BatchError(ErrorCode.INVALID_RECORD, "record count does not match the last offset delta");
  if (producerId >= 0 && baseSequence < 0) throw new BatchError(ErrorCode.INVALID_RECORD, `invalid sequence number ${baseSequence} in a batch with producer id ${producerId}`);
  const codec = attributes & ATTR_CODEC_MASK;
  let body = set.subarray(r.pos);
  let held = 0;
  if (codec !== 0) {
    const bound = decompressedBound(codec, body, gate.maxBytes);
    const granted = gate.take(bound);
    if (granted !== true && !(await granted)) throw new BatchError(ErrorCode.REQUEST_TIMED_OUT, "no room to decompress the batch in time");
    try {
      body = await decompress(codec, body, bound);
    } catch (err) {
      gate.give(bound);
      throw err;
    }
    // Hold what was produced, not what might have been.
    gate.give(bound - body.length);
    held = body.length;
  }
  try {
    const batch = readRecords(body, count, producerId, producerEpoch, baseSequence, transactional, held, baseTimestamp, lastOffsetDelta);
    batch.attributes = attributes;
    return batch;
  } catch (err) {
    gate.give(held);
    throw err;
  }
}

function readRecords(body: Buffer, count: number, producerId: number, producerEpoch: number, baseSequence: number, transactional: boolean, held: number, baseTimestamp: number, lastOffsetDelta: number): DecodedBatch {
  // Before the per-record arrays are sized by the count the batch claims.
  if (count > body.length / MIN_RECORD_BYTES) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, "more records than bytes");
  const batch: DecodedBatch = {
    attributes: 0,
    baseTimestamp,
    minTimestamp: Number.MAX_SAFE_INTEGER,
    maxTimestamp: Number.MIN_SAFE_INTEGER,
    untimed: false,
    producerId,
    producerEpoch,
    baseSequence,
    transactional,
    count,
    body,
    keyAt: new Int32Array(count),
    keyLen: new Int32Array(count),
    valueAt: new Int32Array(count),
    valueLen: new Int32Array(count),
    headerAt: null,
    headerCount: null,
    valueBytes: 0,
    largestValue: 0,
    held,
    lastOffsetDelta,
    offsetDeltas: lastOffsetDelta === count - 1 ? null : new Int32Array(count),
  };
  let i = 0;
  try {
    at = 0;
    for (; i < count; i++) readRecord(body, i, batch);
  } catch (err) {
    if (err instanceof KafkaDecodeError) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, `record ${i}: ${err.message}`);
    throw err;
  }
  if (at !== body.length) throw new BatchError(ErrorCode.CORRUPT_MESSAGE, "bytes after the last record");
  return batch;
}

/**
 * Where the record walk is in the batch's bytes. One walk at a time: it
 * never yields, so a module variable does, and the walk's reads compile to
 * plain loads rather than calls on a reader object (they run per field of
 * every record produced).
 */
let at = 0;

/** A zigzag varint of at most `maxBytes` bytes at `at`, none of them at or past `limit`. */
function zigzag(buf: Buffer, limit: number, maxBytes: number): number {
  if (at < limit) {
    const b = buf[at];
    if (b < 0x80) {
      at++;
      return b & 1 ? -((b + 1) >>> 1) : b >>> 1;
    }
  }
  let u = 0;
  let mul = 1;
  for (let k = 0; k < maxBytes; k++) {
    if (at >= limit) throw new KafkaDecodeError("a field passes the end of its record");
    const b = buf[at++];
    u += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
    mul *= 128;
  }
  throw new KafkaDecodeError(`varint longer than ${maxBytes} bytes`);
}

/** Moves past `n` bytes that must end by `limit`; returns where they begin. */
function skip(n: number, limit: number): number {
  const from = at;
  if (n > limit - from) throw new KafkaDecodeError("a field passes the end of its record");
  at = from + n;
  return from;
}

function readRecord(buf: Buffer, index: number, out: DecodedBatch): void {
  const length = zigzag(buf, buf.length, 5);
  const end = at + length;
  if (length < 0 || end > buf.length) throw new KafkaDecodeError("record length passes the batch");
  skip(1, end); // attributes: unused
  const timestamp = out.baseTimestamp + zigzag(buf, end, 10);
  // NO_TIMESTAMP (-1) is no time to check against the broker's clock (Kafka's LogValidator skips it too).
  if (timestamp === NO_TIMESTAMP) out.untimed = true;
  else if (timestamp < out.minTimestamp) out.minTimestamp = timestamp;
  if (timestamp > out.maxTimestamp) out.maxTimestamp = timestamp;
  const offsetDelta = zigzag(buf, end, 5);
  const deltas = out.offsetDeltas;
  if (deltas === null) {
    if (offsetDelta !== index) throw new KafkaDecodeError(`offset delta ${offsetDelta} where ${index} was due`);
  } else {
    // A cut batch: its records' deltas rise, within the batch's span.
    if (offsetDelta > out.lastOffsetDelta || offsetDelta < (index === 0 ? 0 : deltas[index - 1] + 1)) throw new KafkaDecodeError(`offset delta ${offsetDelta} out of order`);
    deltas[index] = offsetDelta;
  }
  const keyLen = zigzag(buf, end, 5);
  out.keyLen[index] = keyLen < 0 ? -1 : keyLen;
  if (keyLen >= 0) out.keyAt[index] = skip(keyLen, end);
  const valueLen = zigzag(buf, end, 5);
  out.valueLen[index] = valueLen < 0 ? -1 : valueLen;
  if (valueLen >= 0) {
    out.valueAt[index] = skip(valueLen, end);
    out.valueBytes += valueLen;
    if (valueLen > out.largestValue) out.largestValue = valueLen;
  }
  const n = zigzag(buf, end, 5);
  if (n < 0 || n > end - at) throw new KafkaDecodeError("bad header count");
  if (n > 0) {
    out.headerAt ??= new Int32Array(out.count);
    out.headerCount ??= new Int32Array(out.count);
    out.headerAt[index] = at;
    out.headerCount[index] = n;
    for (let h = 0; h < n; h++) {
      const kl = zigzag(buf, end, 5);
      if (kl < 0) throw new KafkaDecodeError("null header key");
      skip(kl, end);
      const vl = zigzag(buf, end, 5);
      if (vl > 0) skip(vl, end);
    }
  }
  if (at !== end) throw new KafkaDecodeError("record length does not match its fields");
}

/** Visits each record's timestamp of a decoded batch, in order (what the producer gave: the batch's type aside). */
export function recordTimestamps(batch: DecodedBatch, visit: (index: number, timestamp: number) => void): void {
  const r = new Reader(batch.body);
  for (let i = 0; i < batch.count; i++) {
    const length = r.varint();
    const end = r.pos + length;
    r.i8(); // attributes
    visit(i, batch.baseTimestamp + r.varlong());
    r.pos = end;
  }
}

/** A record's headers as sent, one array per header: for tests and diagnostics, not for paths that handle every record. */
export function headersOf(batch: DecodedBatch, index: number): Array<[string, Buffer | null]> {
  const n = batch.headerCount?.[index] ?? 0;
  const out: Array<[string, Buffer | null]> = [];
  if (n === 0) return out;
  const r = new Reader(batch.body);
  r.pos = batch.headerAt![index];
  for (let i = 0; i < n; i++) {
    const k = r.raw(r.varint()).toString("utf8");
    const vl = r.varint();
    out.push([k, vl < 0 ? null : r.raw(vl)]);
  }
  return out;
}

export interface OutRecord {
  offset: number;
  timestamp: number;
  key: Buffer | null;
  /** null: a null value (a tombstone). */
  value: Buffer | null;
  /** The stored NATS header block (null: none); it becomes the record's headers (messages.ts). */
  headers: Buffer | null;
}

/**
 * Frames records into one uncompressed batch. Offsets may have gaps (deleted
 * messages); every record carries the batch's one timestamp, flagged as log
 * append time, since that is what the log keeps.
 */
/**
 * A batch of no records spanning offsets `base`..`last`: what Kafka's log
 * cleaner leaves where every record of a batch went (MemoryRecords'
 * writeEmptyHeader). Clients read past it to `last` + 1, so a fetch answers
 * it where nothing is stored below the high watermark any more.
 */
export function encodeEmptyBatch(w: Writer, base: number, last: number, leaderEpoch: number): void {
  const start = w.pos;
  w.i64(base);
  const lengthAt = w.reserveI32();
  w.i32(leaderEpoch);
  w.i8(2);
  const crcAt = w.reserveI32();
  const crcFrom = w.pos;
  w.i16(0); // attributes: CreateTime, uncompressed
  w.i32(last - base);
  w.i64(NO_TIMESTAMP).i64(NO_TIMESTAMP);
  w.i64(-1).i16(-1).i32(-1); // no producer
  w.i32(0);
  w.patchI32(lengthAt, w.pos - start - 12);
  w.buf.writeUInt32BE(crc32c(w.buf, crcFrom, w.pos) >>> 0, crcAt);
}

export function encodeBatch(w: Writer, records: readonly OutRecord[], attributes = ATTR_LOG_APPEND_TIME, producerId = -1, producerEpoch = -1, baseSequence = -1, leaderEpoch = 0, lastOffset = -1): void {
  const base = records[0].offset;
  // A last offset past the last record's: the offsets between hold nothing any more, and the client reads on after it.
  const last = Math.max(lastOffset, records[records.length - 1].offset);
  let maxTs = records[0].timestamp;
  for (const rec of records) if (rec.timestamp > maxTs) maxTs = rec.timestamp;
  const start = w.pos;
  w.i64(base);
  const lengthAt = w.reserveI32();
  w.i32(leaderEpoch); // partitionLeaderEpoch
  w.i8(2);
  const crcAt = w.reserveI32();
  const crcFrom = w.pos;
  w.i16(attributes);
  w.i32(last - base);
  w.i64(records[0].timestamp);
  w.i64(maxTs);
  w.i64(producerId);
  w.i16(producerEpoch);
  w.i32(baseSequence);
  w.i32(records.length);
  const scratch = new Writer(64);
  for (const rec of records) {
    scratch.pos = 0;
    scratch.i8(0);
    scratch.varint(rec.timestamp - records[0].timestamp);
    scratch.varint(rec.offset - base);
    if (rec.key === null) scratch.varint(-1);
    else scratch.varint(rec.key.length).raw(rec.key);
    if (rec.value === null) scratch.varint(-1);
    else scratch.varint(rec.value.length).raw(rec.value);
    writeRecordHeaders(scratch, rec.headers);
    w.varint(scratch.pos);
    w.raw(scratch.buf.subarray(0, scratch.pos));
  }
  w.patchI32(lengthAt, w.pos - start - 12);
  w.buf.writeUInt32BE(crc32c(w.buf, crcFrom, w.pos) >>> 0, crcAt);
}
