/**
 * Between Kafka records and nagare's message model (docs/KAFKA.md, "Records
 * and messages"): the key is the message key; Kafka headers are NATS
 * headers, in order, repeated names kept; the value is the payload; the
 * timestamp is the log's append time. A message stored over NATS reaches a
 * Kafka consumer with its NATS headers as record headers.
 */

import { isUtf8 } from "node:buffer";
import { parseHeaders } from "../../streams/headers.js";
import { ErrorCode, BatchError } from "./errors.js";

const HEADER_NAME = /^[!-9;-~]+$/; // printable ASCII without ':' or space

/** A NATS header block for Kafka record headers, or null when there are none. */
export function natsHeadersOf(headers: ReadonlyArray<[string, Buffer | null]>): Buffer | null {
  if (headers.length === 0) return null;
  let s = "NATS/1.0\r\n";
  for (const [k, v] of headers) {
    if (!HEADER_NAME.test(k)) throw new BatchError(ErrorCode.INVALID_RECORD, `header name ${JSON.stringify(k)} cannot be a NATS header`);
    let value = "";
    if (v !== null) {
      if (!isUtf8(v)) throw new BatchError(ErrorCode.INVALID_RECORD, `header ${k}: value is not UTF-8 text`);
      value = v.toString("utf8");
      if (value.includes("\r") || value.includes("\n")) throw new BatchError(ErrorCode.INVALID_RECORD, `header ${k}: value holds a line break`);
    }
    s += `${k}: ${value}\r\n`;
  }
  return Buffer.from(s + "\r\n", "utf8");
}

/** Kafka record headers for a stored NATS header block. */
export function kafkaHeadersOf(block: Buffer | null): Array<[string, Buffer]> {
  if (block === null || block.length === 0) return [];
  const out: Array<[string, Buffer]> = [];
  for (const [k, values] of parseHeaders(block, 0, block.length)) for (const v of values) out.push([k, Buffer.from(v, "utf8")]);
  return out;
}
