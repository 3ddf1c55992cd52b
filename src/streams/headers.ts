/**
 * The NATS/1.0 header block, read and written off the hot path: JetStream
 * looks at headers only when a message carries them.
 */

const PREFIX = "NATS/1.0";

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
