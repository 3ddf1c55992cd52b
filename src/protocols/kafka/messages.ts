/**
 * Between Kafka records and nagare's message model (docs/KAFKA.md, "Records
 * and messages"): the key is the message key; Kafka headers are NATS
 * headers, in order, repeated names kept; the value is the payload; the
 * timestamp is the log's append time. A message stored over NATS reaches a
 * Kafka consumer with its NATS headers as record headers.
 *
 * Transactions leave two traces in the stored messages: each record of a
 * transaction carries a `Kafka-Txn: <producer id> <epoch>` header, and the
 * commit or abort marker that closes it on a partition is a message under
 * the subject `$KAFKA.TXN.COMMIT` or `$KAFKA.TXN.ABORT` with the same header.
 * The first record of an idempotent producer's batch carries
 * `Kafka-Batch: <producer id> <epoch> <base sequence> <count>`, from which
 * the producer's sequence state is rebuilt after a restart.
 */

import { isUtf8 } from "node:buffer";
import { parseHeaders } from "../../streams/headers.js";
import { ErrorCode, BatchError } from "./errors.js";

const HEADER_NAME = /^[!-9;-~]+$/; // printable ASCII without ':' or space
export const TXN_HEADER = "Kafka-Txn";
export const BATCH_HEADER = "Kafka-Batch";
const RESERVED = new Set([TXN_HEADER.toLowerCase(), BATCH_HEADER.toLowerCase()]);
export const CONTROL_SUBJECT_COMMIT = "$KAFKA.TXN.COMMIT";
export const CONTROL_SUBJECT_ABORT = "$KAFKA.TXN.ABORT";

export interface TxnMark {
  producerId: number;
  epoch: number;
}

export interface BatchMark extends TxnMark {
  baseSequence: number;
  count: number;
}

/** A NATS header block for Kafka record headers, or null when there are none. */
export function natsHeadersOf(headers: ReadonlyArray<[string, Buffer | null]>, txn: TxnMark | null = null, batch: BatchMark | null = null): Buffer | null {
  if (headers.length === 0 && txn === null && batch === null) return null;
  let s = "NATS/1.0\r\n";
  for (const [k, v] of headers) {
    if (!HEADER_NAME.test(k)) throw new BatchError(ErrorCode.INVALID_RECORD, `header name ${JSON.stringify(k)} cannot be a NATS header`);
    if (RESERVED.has(k.toLowerCase())) throw new BatchError(ErrorCode.INVALID_RECORD, `header name ${k} is reserved for the Kafka door`);
    let value = "";
    if (v !== null) {
      if (!isUtf8(v)) throw new BatchError(ErrorCode.INVALID_RECORD, `header ${k}: value is not UTF-8 text`);
      value = v.toString("utf8");
      if (value.includes("\r") || value.includes("\n")) throw new BatchError(ErrorCode.INVALID_RECORD, `header ${k}: value holds a line break`);
    }
    s += `${k}: ${value}\r\n`;
  }
  if (txn !== null) s += `${TXN_HEADER}: ${txn.producerId} ${txn.epoch}\r\n`;
  if (batch !== null) s += `${BATCH_HEADER}: ${batch.producerId} ${batch.epoch} ${batch.baseSequence} ${batch.count}\r\n`;
  return Buffer.from(s + "\r\n", "utf8");
}

/** The header block of a transaction marker. */
export function txnHeaders(producerId: number, epoch: number): Buffer {
  return Buffer.from(`NATS/1.0\r\n${TXN_HEADER}: ${producerId} ${epoch}\r\n\r\n`, "utf8");
}

/** Kafka record headers for a stored NATS header block, and the transaction the record belongs to. */
export function kafkaHeadersOf(block: Buffer | null): { headers: Array<[string, Buffer]>; txn: TxnMark | null } {
  const headers: Array<[string, Buffer]> = [];
  if (block === null || block.length === 0) return { headers, txn: null };
  let txn: TxnMark | null = null;
  for (const [k, values] of parseHeaders(block, 0, block.length)) {
    if (k === TXN_HEADER) {
      const [producerId, epoch] = (values[0] ?? "").split(" ").map(Number);
      if (Number.isSafeInteger(producerId) && Number.isSafeInteger(epoch)) txn = { producerId, epoch };
      continue;
    }
    if (k === BATCH_HEADER) continue;
    for (const v of values) headers.push([k, Buffer.from(v, "utf8")]);
  }
  return { headers, txn };
}

/** The idempotent batch a stored message begins, if it begins one. */
export function batchMarkOf(block: Buffer): BatchMark | null {
  const value = parseHeaders(block, 0, block.length).get(BATCH_HEADER)?.[0];
  if (value === undefined) return null;
  const [producerId, epoch, baseSequence, count] = value.split(" ").map(Number);
  if (![producerId, epoch, baseSequence, count].every(Number.isSafeInteger)) return null;
  return { producerId, epoch, baseSequence, count };
}
