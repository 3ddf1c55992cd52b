/**
 * Between Kafka records and nagare's message model (docs/KAFKA.md, "Records
 * and messages"): the key is the message key; Kafka headers are NATS
 * headers, in order, repeated names kept; the value is the payload; the
 * timestamp is the log's append time. A message stored over NATS reaches a
 * Kafka consumer with its NATS headers as record headers.
 *
 * A header NATS cannot carry as it is (a binary value, a line break, a null
 * value, a name with a space) is a `Kafka-Header` line of base64 to NATS
 * readers, and a record header again to Kafka readers (ENCODED_HEADER).
 *
 * Transactions leave two traces in the stored messages: each record of a
 * transaction carries a `Kafka-Txn: <producer id> <epoch>` header, and the
 * commit or abort marker that closes it on a partition is a message under
 * the subject `$KAFKA.TXN.COMMIT` or `$KAFKA.TXN.ABORT` with the same header.
 * The first record of an idempotent producer's batch carries
 * `Kafka-Batch: <producer id> <epoch> <base sequence> <count>`, from which
 * the producer's sequence state is rebuilt after a restart.
 *
 * A record with a null value (a tombstone) is, to NATS readers, an empty
 * payload with the header `Kafka-Value: null`; an empty value has no such
 * header. A NATS publish with that header and an empty payload reaches Kafka
 * readers as a null value.
 *
 * Batches produced over Kafka are mostly stored as they came (see
 * stored-batches.ts); the header blocks here are what NATS readers see of
 * their records, and what is stored for records kept one by one.
 */

import { HeaderCursor, parseHeaders } from "../../streams/headers.js";
import { Reader, type Writer } from "./codec.js";
import type { DecodedBatch } from "./records.js";

export const TXN_HEADER = "Kafka-Txn";
export const BATCH_HEADER = "Kafka-Batch";
/** A record header naming the subject a record is stored under; not kept as a header. */
export const SUBJECT_HEADER = "Nats-Subject";
/** The header that marks a null value (its value is always `null`). */
export const NULL_VALUE_HEADER = "Kafka-Value";
/**
 * A record header the NATS header block cannot carry as it is (a name that is not a NATS header name or is one of the
 * door's own, a value that is null, not UTF-8 text, holds a line break or starts or ends with a blank), written as
 * `Kafka-Header: <base64 name>,<base64 value>` (no comma for a null value) in its place; read back as the header it
 * stands for.
 */
export const ENCODED_HEADER = "Kafka-Header";
export const CONTROL_SUBJECT_COMMIT = "$KAFKA.TXN.COMMIT";
export const CONTROL_SUBJECT_ABORT = "$KAFKA.TXN.ABORT";

const TXN_NAME = Buffer.from(TXN_HEADER, "latin1");
const BATCH_NAME = Buffer.from(BATCH_HEADER, "latin1");
const SUBJECT_NAME = Buffer.from(SUBJECT_HEADER, "latin1");
const NULL_NAME = Buffer.from(NULL_VALUE_HEADER, "latin1");
const ENCODED_NAME = Buffer.from(ENCODED_HEADER, "latin1");
const ENCODED_PREFIX = Buffer.from(`${ENCODED_HEADER}: `, "latin1");
const NULL_LINE = Buffer.from(`${NULL_VALUE_HEADER}: null\r\n`, "latin1");
const STATUS_LINE = Buffer.from("NATS/1.0\r\n", "latin1");
const CRLF = Buffer.from("\r\n", "latin1");
const COLON_SPACE = Buffer.from(": ", "latin1");

export interface TxnMark {
  producerId: number;
  epoch: number;
}

export interface BatchMark extends TxnMark {
  baseSequence: number;
  count: number;
}

// ---- produce: record headers → NATS header blocks ----

/**
 * The NATS header blocks of a produced batch's records, per record (null: no
 * headers at all), written byte for byte from the batch: each header in the
 * order sent, repeated names kept, then the door's marks (`txn` on every
 * record, `mark` on the first). `Nats-Subject` headers are not kept: the
 * first one's value goes to `onSubject`. A header a NATS header line cannot
 * carry as it is becomes an ENCODED_HEADER line in its place. The blocks
 * share one buffer, made once per batch; records without headers of their
 * own share one block.
 */
export function natsHeaderBlocks(
  batch: DecodedBatch,
  txn: TxnMark | null,
  mark: BatchMark | null,
  onSubject: (index: number, subject: string) => void,
): Array<Buffer | null> {
  const n = batch.count;
  const txnLine = txn === null ? null : Buffer.from(`${TXN_HEADER}: ${txn.producerId} ${txn.epoch}\r\n`, "latin1");
  const markLine = mark === null ? null : Buffer.from(`${BATCH_HEADER}: ${mark.producerId} ${mark.epoch} ${mark.baseSequence} ${mark.count}\r\n`, "latin1");
  const plain = txnLine === null ? null : Buffer.concat([STATUS_LINE, txnLine, CRLF]);
  // Pass 1: check every header and size each record's own block (0: it has none).
  const sizes = new Int32Array(n);
  const total = sizeBlocks(batch, txnLine, markLine, sizes, onSubject);
  const r = new Reader(batch.body);
  // Pass 2: write the blocks.
  const blocks = new Array<Buffer | null>(n);
  const out = total > 0 ? Buffer.allocUnsafe(total) : null;
  let at = 0;
  for (let i = 0; i < n; i++) {
    if (sizes[i] === 0) {
      blocks[i] = plain;
      continue;
    }
    const start = at;
    at += STATUS_LINE.copy(out!, at);
    const count = batch.headerCount?.[i] ?? 0;
    if (count > 0) r.pos = batch.headerAt![i];
    for (let h = 0; h < count; h++) {
      const nameLen = r.varint();
      const nameAt = r.skip(nameLen);
      const valueLen = r.varint();
      const valueAt = valueLen > 0 ? r.skip(valueLen) : 0;
      if (equalsAt(batch.body, nameAt, nameLen, SUBJECT_NAME)) continue;
      if (!carriedAsIs(batch.body, nameAt, nameLen, valueAt, valueLen)) {
        at += ENCODED_PREFIX.copy(out!, at);
        at += out!.write(batch.body.toString("base64", nameAt, nameAt + nameLen), at, "latin1");
        if (valueLen >= 0) {
          out![at++] = 0x2c; // ','
          if (valueLen > 0) at += out!.write(batch.body.toString("base64", valueAt, valueAt + valueLen), at, "latin1");
        }
        at += CRLF.copy(out!, at);
        continue;
      }
      at += batch.body.copy(out!, at, nameAt, nameAt + nameLen);
      at += COLON_SPACE.copy(out!, at);
      if (valueLen > 0) at += batch.body.copy(out!, at, valueAt, valueAt + valueLen);
      at += CRLF.copy(out!, at);
    }
    if (batch.valueLen[i] < 0) at += NULL_LINE.copy(out!, at);
    if (txnLine !== null) at += txnLine.copy(out!, at);
    if (i === 0 && markLine !== null) at += markLine.copy(out!, at);
    at += CRLF.copy(out!, at);
    blocks[i] = out!.subarray(start, at);
  }
  return blocks;
}

/**
 * Hands `onSubject` the first `Nats-Subject` of each record
 * that has one, and, given `sizes`, sizes each record's header block with
 * the marks (0: it needs none); returns the blocks' total size.
 */
export function sizeBlocks(
  batch: DecodedBatch,
  txnLine: Buffer | null,
  markLine: Buffer | null,
  sizes: Int32Array | null,
  onSubject: (index: number, subject: string) => void,
): number {
  const n = batch.count;
  const r = new Reader(batch.body);
  let total = 0;
  for (let i = 0; i < n; i++) {
    let size = 0;
    let own = 0;
    let named = false;
    const count = batch.headerCount?.[i] ?? 0;
    if (count > 0) r.pos = batch.headerAt![i];
    for (let h = 0; h < count; h++) {
      const nameLen = r.varint();
      const nameAt = r.skip(nameLen);
      const valueLen = r.varint();
      const valueAt = valueLen > 0 ? r.skip(valueLen) : 0;
      if (equalsAt(batch.body, nameAt, nameLen, SUBJECT_NAME)) {
        // The first names the subject; none is kept as a header.
        if (!named) onSubject(i, valueLen > 0 ? batch.body.toString("utf8", valueAt, valueAt + valueLen) : "");
        named = true;
        continue;
      }
      own++;
      // Asked only for the subjects (sizes null): no header is looked at.
      if (sizes === null) continue;
      if (carriedAsIs(batch.body, nameAt, nameLen, valueAt, valueLen)) size += nameLen + 2 + Math.max(0, valueLen) + 2;
      else size += ENCODED_PREFIX.length + base64Length(nameLen) + (valueLen >= 0 ? 1 + base64Length(valueLen) : 0) + 2;
    }
    const first = i === 0 && markLine !== null;
    const isNull = batch.valueLen[i] < 0;
    if (own > 0 || first || isNull) {
      size += STATUS_LINE.length + (txnLine?.length ?? 0) + (first ? markLine!.length : 0) + (isNull ? NULL_LINE.length : 0) + CRLF.length;
      if (sizes !== null) sizes[i] = size;
      total += size;
    }
  }
  return total;
}

/**
 * Whether a record header reads back the same as a NATS header line: a name
 * of printable ASCII without ':', not one of the door's own; a value that is
 * not null, UTF-8 text without line breaks, with no blank at either end
 * (NATS readers trim them). Any other is written as ENCODED_HEADER.
 */
function carriedAsIs(b: Buffer, nameAt: number, nameLen: number, valueAt: number, valueLen: number): boolean {
  if (nameLen === 0 || valueLen < 0) return false;
  for (let i = nameAt; i < nameAt + nameLen; i++) {
    const c = b[i];
    if (c < 0x21 || c > 0x7e || c === 0x3a) return false;
  }
  if (
    equalsAt(b, nameAt, nameLen, TXN_NAME, true) ||
    equalsAt(b, nameAt, nameLen, BATCH_NAME, true) ||
    equalsAt(b, nameAt, nameLen, NULL_NAME, true) ||
    equalsAt(b, nameAt, nameLen, ENCODED_NAME, true)
  ) {
    return false;
  }
  if (valueLen === 0) return true;
  const first = b[valueAt];
  const last = b[valueAt + valueLen - 1];
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return false;
  for (let i = valueAt; i < valueAt + valueLen; i++) if (b[i] === 0x0d || b[i] === 0x0a) return false;
  return isUtf8Span(b, valueAt, valueAt + valueLen);
}

/** The length of `n` bytes in base64, padded. */
function base64Length(n: number): number {
  return 4 * Math.ceil(n / 3);
}

/** Whether b[at, at+len) is `ascii`, optionally ignoring ASCII case. */
function equalsAt(b: Uint8Array, at: number, len: number, ascii: Uint8Array, anyCase = false): boolean {
  if (len !== ascii.length) return false;
  for (let i = 0; i < len; i++) {
    let c = b[at + i];
    let d = ascii[i];
    if (anyCase) {
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
      if (d >= 0x41 && d <= 0x5a) d += 0x20;
    }
    if (c !== d) return false;
  }
  return true;
}

/** Whether b[at, end) is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), as Node's isUtf8 judges a whole buffer. */
export function isUtf8Span(b: Uint8Array, at: number, end: number): boolean {
  while (at < end) {
    const c = b[at];
    if (c < 0x80) {
      at++;
      continue;
    }
    if (c < 0xc2 || c > 0xf4) return false;
    const more = c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (at + more >= end) return false;
    const c1 = b[at + 1];
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    if (c1 < lo || c1 > hi) return false;
    for (let k = 2; k <= more; k++) if ((b[at + k] & 0xc0) !== 0x80) return false;
    at += more + 1;
  }
  return true;
}

/** The header block of a transaction marker. */
export function txnHeaders(producerId: number, epoch: number): Buffer {
  return Buffer.from(`NATS/1.0\r\n${TXN_HEADER}: ${producerId} ${epoch}\r\n\r\n`, "utf8");
}

// ---- fetch: stored NATS header blocks → record headers ----

/** One cursor for every fetch: the door runs on one thread, and a walk never awaits. */
const cursor = new HeaderCursor();

/**
 * Writes a stored message's NATS headers as a Kafka record's header count
 * and headers, in the block's order with repeated names kept, leaving out
 * the door's own (`Kafka-Txn`, `Kafka-Batch`), and decoding ENCODED_HEADER
 * lines. Bytes are copied from the block: nothing is made per header or per
 * record, but for an encoded header (decoded into a buffer of its own).
 */
export function writeRecordHeaders(w: Writer, block: Buffer | null): void {
  if (block === null || block.length === 0) {
    w.varint(0);
    return;
  }
  let count = 0;
  cursor.reset(block);
  while (cursor.next()) if (!doorHeader()) count++;
  w.varint(count);
  if (count === 0) return;
  cursor.reset(block);
  while (cursor.next()) {
    if (doorHeader()) continue;
    if (cursor.nameIs(ENCODED_NAME) && writeEncodedHeader(w, block, cursor.valueAt, cursor.valueEnd)) continue;
    w.varint(cursor.nameEnd - cursor.nameAt).span(block, cursor.nameAt, cursor.nameEnd);
    w.varint(cursor.valueEnd - cursor.valueAt).span(block, cursor.valueAt, cursor.valueEnd);
  }
}

/**
 * Writes the record header an ENCODED_HEADER value stands for; false, and nothing written, when the value is not
 * `<base64>` or `<base64>,<base64>` (a NATS publisher's own header of that name: passed on as it is).
 */
function writeEncodedHeader(w: Writer, block: Buffer, at: number, end: number): boolean {
  let comma = -1;
  for (let i = at; i < end; i++) {
    const c = block[i];
    if (c === 0x2c && comma < 0) comma = i;
    else if (!isBase64Char(c)) return false;
  }
  const nameEnd = comma < 0 ? end : comma;
  if ((nameEnd - at) % 4 !== 0 || (comma >= 0 && (end - comma - 1) % 4 !== 0)) return false;
  const name = Buffer.from(block.toString("latin1", at, nameEnd), "base64");
  w.varint(name.length).span(name, 0, name.length);
  if (comma < 0) {
    w.varint(-1);
    return true;
  }
  const value = Buffer.from(block.toString("latin1", comma + 1, end), "base64");
  w.varint(value.length).span(value, 0, value.length);
  return true;
}

function isBase64Char(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f || c === 0x3d;
}

/** Whether the cursor's header is one of the door's own, which Kafka readers do not see as headers. */
function doorHeader(): boolean {
  return cursor.nameIs(TXN_NAME) || cursor.nameIs(BATCH_NAME) || cursor.nameIs(NULL_NAME);
}

/** Whether a stored message with an empty payload stands for a null value (its `Kafka-Value: null` header). */
export function isNullValue(block: Buffer | null, data: Buffer): boolean {
  if (data.length !== 0 || block === null || block.length === 0) return false;
  cursor.reset(block);
  while (cursor.next()) {
    if (cursor.nameIs(NULL_NAME)) return cursor.valueEnd - cursor.valueAt === 4 && block.toString("latin1", cursor.valueAt, cursor.valueEnd) === "null";
  }
  return false;
}

/** The transaction a stored message belongs to (its `Kafka-Txn: <producer id> <epoch>` header), read into `into`; false when it has none. */
export function readTxnMark(block: Buffer | null, into: TxnMark): boolean {
  if (block === null || block.length === 0) return false;
  cursor.reset(block);
  while (cursor.next()) {
    if (!cursor.nameIs(TXN_NAME)) continue;
    // Two decimal numbers separated by a space.
    let i = cursor.valueAt;
    const end = cursor.valueEnd;
    let producerId = 0;
    let epoch = 0;
    let digits = 0;
    for (; i < end && block[i] >= 0x30 && block[i] <= 0x39; i++, digits++) producerId = producerId * 10 + (block[i] - 0x30);
    if (digits === 0 || i >= end || block[i] !== 0x20) return false;
    i++;
    digits = 0;
    for (; i < end && block[i] >= 0x30 && block[i] <= 0x39; i++, digits++) epoch = epoch * 10 + (block[i] - 0x30);
    if (digits === 0 || i !== end || !Number.isSafeInteger(producerId)) return false;
    into.producerId = producerId;
    into.epoch = epoch;
    return true;
  }
  return false;
}

/** The idempotent batch a stored message begins, if it begins one. */
export function batchMarkOf(block: Buffer): BatchMark | null {
  const value = parseHeaders(block, 0, block.length).get(BATCH_HEADER)?.[0];
  if (value === undefined) return null;
  const [producerId, epoch, baseSequence, count] = value.split(" ").map(Number);
  if (![producerId, epoch, baseSequence, count].every(Number.isSafeInteger)) return null;
  return { producerId, epoch, baseSequence, count };
}
