/**
 * Text helpers for the protocol trace (`-V`), so that nagare's trace reads
 * like nats-server's (2.9.10 was the reference). Only called when tracing.
 */

/**
 * The bytes `data[start, end)` quoted as Go's `%q` quotes them (what
 * nats-server prints for MSG_PAYLOAD): `\"`, `\\`, `\a \b \f \n \r \t \v`,
 * other control bytes and invalid UTF-8 as `\xNN`, printable UTF-8 as is.
 * With `max` > 0 and more bytes than that, nats-server quotes the first
 * `max` bytes and keeps `max` characters of the quoted text, then `...`.
 */
export function goQuote(data: Uint8Array, start: number, end: number, max = 0): string {
  if (max > 0 && end - start > max) return `"${quoteBytes(data, start, start + max).slice(0, max)}..."`;
  return `"${quoteBytes(data, start, end)}"`;
}

/** A string as Go's %q writes it (nats-server's error texts quote subjects so). */
export function goQuoteString(s: string): string {
  const b = Buffer.from(s);
  return goQuote(b, 0, b.length);
}

const SIMPLE_ESCAPES: Record<number, string> = {
  0x07: "\\a",
  0x08: "\\b",
  0x09: "\\t",
  0x0a: "\\n",
  0x0b: "\\v",
  0x0c: "\\f",
  0x0d: "\\r",
  0x22: '\\"',
  0x5c: "\\\\",
};

function hex(b: number): string {
  return `\\x${b.toString(16).padStart(2, "0")}`;
}

function quoteBytes(data: Uint8Array, start: number, end: number): string {
  let out = "";
  let i = start;
  while (i < end) {
    const b = data[i];
    if (b < 0x80) {
      const esc = SIMPLE_ESCAPES[b];
      if (esc !== undefined) out += esc;
      else if (b < 0x20 || b === 0x7f) out += hex(b);
      else out += String.fromCharCode(b);
      i++;
      continue;
    }
    const n = utf8Length(data, i, end);
    if (n === 0) {
      out += hex(b);
      i++;
      continue;
    }
    const cp = Buffer.from(data.buffer, data.byteOffset + i, n).toString("utf8").codePointAt(0)!;
    // C1 controls are not printable: Go writes them as \u0080.
    out += cp >= 0x80 && cp <= 0x9f ? `\\u${cp.toString(16).padStart(4, "0")}` : String.fromCodePoint(cp);
    i += n;
  }
  return out;
}

/** Length of the valid UTF-8 sequence at `i` (lead byte >= 0x80), or 0 if it is not one. */
function utf8Length(d: Uint8Array, i: number, end: number): number {
  const b = d[i];
  let n: number;
  let min: number;
  if (b >= 0xc2 && b <= 0xdf) [n, min] = [2, 0x80];
  else if (b >= 0xe0 && b <= 0xef) [n, min] = [3, 0x800];
  else if (b >= 0xf0 && b <= 0xf4) [n, min] = [4, 0x10000];
  else return 0;
  if (i + n > end) return 0;
  let cp = b & (0xff >> (n + 1));
  for (let k = 1; k < n; k++) {
    const c = d[i + k];
    if ((c & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (c & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/** A CONNECT's JSON with the password hidden, as nats-server traces it. */
export function redactConnect(json: string): string {
  return json.replace(/("pass"\s*:\s*")((?:[^"\\]|\\.)*)"/, '$1[REDACTED]"');
}
