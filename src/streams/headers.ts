/**
 * The NATS/1.0 header block, read and written off the hot path: JetStream
 * looks at headers only when a message carries them.
 */

import { isUtf8 } from "node:buffer";

const PREFIX = "NATS/1.0";
/**
 * A message's key (what Kafka calls the record key) as NATS clients see it:
 * published in this header, it becomes the stored key (and picks the
 * partition of a partitioned stream); delivered, a text key is given back in it.
 */
export const KEY_HEADER = "Nats-Key";

/** Header names as sent (NATS headers are case-sensitive on the wire) to their values. */
export type HeaderMap = Map<string, string[]>;

export function parseHeaders(buf: Uint8Array, start: number, end: number): HeaderMap {
  const map: HeaderMap = new Map();
  if (end <= start) return map;
  const text = Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString("utf8");
  const lines = text.split("\r\n");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  }
  return map;
}

export function header(map: HeaderMap | null, key: string): string | undefined {
  return map?.get(key)?.[0];
}

/** A header block with an optional status line and the given headers; `[]` pairs allowed. */
export function encodeHeaders(status: string, pairs: Array<[string, string]>): Buffer {
  let s = status === "" ? PREFIX : `${PREFIX} ${status}`;
  s += "\r\n";
  for (const [k, v] of pairs) s += `${k}: ${v}\r\n`;
  s += "\r\n";
  return Buffer.from(s, "utf8");
}

/** Adds headers to an existing block (or makes one), keeping what was there. */
export function appendHeaders(block: Uint8Array | null, pairs: Array<[string, string]>): Buffer {
  if (block === null || block.length === 0) return encodeHeaders("", pairs);
  const text = Buffer.from(block.buffer, block.byteOffset, block.length).toString("utf8");
  const body = text.endsWith("\r\n\r\n") ? text.slice(0, -2) : text;
  let s = body;
  for (const [k, v] of pairs) s += `${k}: ${v}\r\n`;
  return Buffer.from(s + "\r\n", "utf8");
}

/** The block with the message's key added as a Nats-Key header, when the key is one line of text. */
export function withKeyHeader(block: Buffer | null, key: Buffer | null): Buffer | null {
  if (key === null || !isUtf8(key)) return block;
  const text = key.toString("utf8");
  if (text.includes("\r") || text.includes("\n")) return block;
  return appendHeaders(block, [[KEY_HEADER, text]]);
}

/** The block without the headers named `name`, or null when nothing is left of it. */
export function withoutHeader(block: Buffer, name: string): Buffer | null {
  const lines = block.toString("utf8").split("\r\n");
  const kept = lines.filter((line, i) => i === 0 || line === "" || line.slice(0, line.indexOf(":")).trim() !== name);
  const status = kept[0].slice(PREFIX.length).trim();
  if (status === "" && kept.every((l, i) => i === 0 || l === "")) return null;
  return Buffer.from(kept.join("\r\n"), "utf8");
}
