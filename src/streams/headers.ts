/**
 * The NATS/1.0 header block, read and written off the hot path: JetStream
 * looks at headers only when a message carries them. `HeaderCursor` is the
 * exception, for paths that read every message's headers (Kafka fetches).
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

const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
const NO_BYTES = new Uint8Array(0);

function isBlank(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/**
 * Walks the fields of a header block in the order they were written,
 * repeated names included, without allocating: a reused cursor whose name
 * and value are spans of the block, trimmed of spaces and tabs as
 * parseHeaders trims them. What parseHeaders skips (lines without a name
 * or a colon), this skips too. For the paths that handle every message.
 */
export class HeaderCursor {
  block: Uint8Array = NO_BYTES;
  nameAt = 0;
  nameEnd = 0;
  valueAt = 0;
  valueEnd = 0;
  private at = 0;

  /** Starts before the first field of `block` (past the NATS/1.0 line). */
  reset(block: Uint8Array): this {
    this.block = block;
    this.at = lineEnd(block, 0) + 2;
    return this;
  }

  /** Moves to the next field; false past the last. */
  next(): boolean {
    const b = this.block;
    while (this.at < b.length) {
      const start = this.at;
      const end = lineEnd(b, start);
      this.at = end + 2;
      let colon = start;
      while (colon < end && b[colon] !== COLON) colon++;
      if (colon === end) continue;
      let nameAt = start;
      let nameEnd = colon;
      while (nameAt < nameEnd && isBlank(b[nameAt])) nameAt++;
      while (nameEnd > nameAt && isBlank(b[nameEnd - 1])) nameEnd--;
      if (nameAt === nameEnd) continue;
      let valueAt = colon + 1;
      let valueEnd = end;
      while (valueAt < valueEnd && isBlank(b[valueAt])) valueAt++;
      while (valueEnd > valueAt && isBlank(b[valueEnd - 1])) valueEnd--;
      this.nameAt = nameAt;
      this.nameEnd = nameEnd;
      this.valueAt = valueAt;
      this.valueEnd = valueEnd;
      return true;
    }
    return false;
  }

  /** Whether the field's name is `name` (ASCII bytes), as NATS compares names: exactly. */
  nameIs(name: Uint8Array): boolean {
    const n = this.nameEnd - this.nameAt;
    if (n !== name.length) return false;
    for (let i = 0; i < n; i++) if (this.block[this.nameAt + i] !== name[i]) return false;
    return true;
  }
}

/** Where the line starting at `from` ends (its CR LF, or the end of the block). */
function lineEnd(b: Uint8Array, from: number): number {
  for (let i = from; i + 1 < b.length; i++) if (b[i] === CR && b[i + 1] === LF) return i;
  return b.length;
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
