/**
 * Byte-level parser for the NATS client protocol (client → server direction).
 *
 * Control lines are located with a native newline search and their arguments
 * are read in place; only the strings the router needs (subject, sid) are
 * decoded. A payload that arrives whole in one read is handed on as a slice of
 * the read buffer; only frames split across reads are copied.
 */

import { Message } from "../../subjects/message.js";
import { RepeatedString } from "../../util/bytes.js";

export const enum ProtoError {
  UnknownOp = 1,
  ControlLine = 2,
  MaxPayload = 3,
}

export interface ParserHandler {
  onPub(msg: Message): void;
  onSub(subject: string, queue: string | null, sid: string): void;
  onUnsub(sid: string, max: number): void;
  onPing(): void;
  onPong(): void;
  onConnect(json: string): void;
  /** The connection is unusable after this; the parser ignores further input. */
  onError(kind: ProtoError): void;
}

const CR = 13;
const LF = 10;
const SPACE = 32;
const TAB = 9;
const MAX_ARGS = 5;

export class NatsParser {
  private readonly msg = new Message();
  /** Holds a control line split across reads (and its args while its payload arrives). */
  private line: Buffer | null = null;
  private lineLen = 0;
  /** Payload being assembled across reads: size + CRLF bytes. */
  private payload: Buffer | null = null;
  private payloadHave = 0;
  private readonly argStart = new Int32Array(MAX_ARGS);
  private readonly argEnd = new Int32Array(MAX_ARGS);
  private failed = false;
  /** Set by the handler during a control line: feed stops after it (see suspend). */
  private suspended = false;
  /** PUB subjects: the last one's string is reused while it repeats. */
  private readonly subjects = new RepeatedString();

  constructor(
    private readonly handler: ParserHandler,
    private readonly maxControlLine: number,
    public maxPayload: number,
  ) {}

  /**
   * Consumes one read. Synchronous; handler callbacks run before it returns.
   * Returns -1 when the whole read was consumed, or, when the handler
   * suspended parsing, where the rest of the read begins: the caller feeds
   * it again later.
   */
  feed(buf: Buffer): number {
    if (this.failed) return -1;
    let i = 0;
    const n = buf.length;

    if (this.payload !== null) {
      i = this.continuePayload(buf);
      if (i < 0) return -1;
    }

    if (this.lineLen > 0) {
      const nl = buf.indexOf(LF, i);
      const take = (nl < 0 ? n : nl + 1) - i;
      if (this.lineLen + take > this.maxControlLine + 2) {
        this.fail(ProtoError.ControlLine);
        return -1;
      }
      buf.copy(this.line!, this.lineLen, i, i + take);
      this.lineLen += take;
      if (nl < 0) return -1;
      i = nl + 1;
      const line = this.line!;
      const len = this.lineLen;
      this.lineLen = 0;
      const need = this.controlLine(line, 0, len - 1);
      if (need < 0) return -1;
      if (this.suspended) {
        this.suspended = false;
        return i;
      }
      if (need > 0) {
        // The args live in `line`; the payload starts in this buffer.
        const rest = this.startPayload(line, buf, i, need);
        if (rest < 0) return -1;
        i = rest;
      }
    }

    while (i < n) {
      const nl = buf.indexOf(LF, i);
      if (nl < 0) {
        const rem = n - i;
        // A line may hold max_control_line bytes before its CRLF, however it is split across reads.
        if (rem > this.maxControlLine + 1) {
          this.fail(ProtoError.ControlLine);
          return -1;
        }
        this.line ??= Buffer.allocUnsafe(this.maxControlLine + 2);
        buf.copy(this.line, 0, i, n);
        this.lineLen = rem;
        return -1;
      }
      if (nl - i > this.maxControlLine + 1) {
        this.fail(ProtoError.ControlLine);
        return -1;
      }
      const need = this.controlLine(buf, i, nl);
      if (need < 0) return -1;
      i = nl + 1;
      if (this.suspended) {
        this.suspended = false;
        return i;
      }
      if (need > 0) {
        const end = i + need;
        if (end <= n) {
          if (buf[end - 2] !== CR || buf[end - 1] !== LF) {
            this.fail(ProtoError.UnknownOp);
            return -1;
          }
          const m = this.msg;
          m.data = buf;
          m.start = i;
          m.end = end - 2;
          this.handler.onPub(m);
          if (this.failed) return -1;
          i = end;
        } else {
          // Keep the args: copy the control line out of this buffer first.
          const lineStart = this.msg.subjectStart;
          const lineEnd = nl;
          this.line ??= Buffer.allocUnsafe(this.maxControlLine + 2);
          buf.copy(this.line, 0, lineStart, lineEnd);
          this.rebase(this.line, lineStart);
          const rest = this.startPayload(this.line, buf, i, need);
          if (rest < 0) return -1;
          i = rest;
        }
      }
    }
    return -1;
  }


  private rebase(line: Buffer, by: number): void {
    const m = this.msg;
    m.argBuf = line;
    m.subjectStart -= by;
    m.subjectEnd -= by;
    m.replyStart -= by;
    m.replyEnd -= by;
  }

  /** Begins assembling a payload of `need` bytes (incl. CRLF) starting at buf[i]. Returns the next index, or -1. */
  private startPayload(line: Buffer, buf: Buffer, i: number, need: number): number {
    const avail = buf.length - i;
    if (avail >= need) {
      if (buf[i + need - 2] !== CR || buf[i + need - 1] !== LF) {
        this.fail(ProtoError.UnknownOp);
        return -1;
      }
      const m = this.msg;
      m.argBuf = line;
      m.data = buf;
      m.start = i;
      m.end = i + need - 2;
      this.handler.onPub(m);
      return this.failed ? -1 : i + need;
    }
    this.msg.argBuf = line;
    this.payload = Buffer.allocUnsafe(need);
    buf.copy(this.payload, 0, i);
    this.payloadHave = avail;
    return buf.length;
  }

  private continuePayload(buf: Buffer): number {
    const p = this.payload!;
    const take = Math.min(p.length - this.payloadHave, buf.length);
    buf.copy(p, this.payloadHave, 0, take);
    this.payloadHave += take;
    if (this.payloadHave < p.length) return -1;
    this.payload = null;
    if (p[p.length - 2] !== CR || p[p.length - 1] !== LF) {
      this.fail(ProtoError.UnknownOp);
      return -1;
    }
    const m = this.msg;
    m.data = p;
    m.start = 0;
    m.end = p.length - 2;
    this.handler.onPub(m);
    return this.failed ? -1 : take;
  }

  /** Stops the read at hand after the control line being handled (a CONNECT waiting for authentication); feed returns where it stopped. */
  suspend(): void {
    this.suspended = true;
  }

  /** Ignores the rest of this read and all later ones: the handler has closed the connection. */
  stop(): void {
    this.failed = true;
    this.payload = null;
    this.lineLen = 0;
  }

  private fail(kind: ProtoError): void {
    this.failed = true;
    this.payload = null;
    this.lineLen = 0;
    this.handler.onError(kind);
  }

  /**
   * Handles one control line buf[s, lf) (lf is the index of '\n'). Returns the
   * number of payload bytes (including CRLF) that follow, 0 for none, or -1
   * after an error.
   */
  private controlLine(buf: Buffer, s: number, lf: number): number {
    let e = lf;
    if (e > s && buf[e - 1] === CR) e--;
    // Tolerate blank lines between operations.
    if (e === s) return 0;
    let opEnd = s;
    while (opEnd < e && buf[opEnd] !== SPACE && buf[opEnd] !== TAB) opEnd++;
    const opLen = opEnd - s;
    const c0 = buf[s] | 0x20;
    switch (opLen) {
      case 3:
        if (c0 === 0x70 && (buf[s + 1] | 0x20) === 0x75 && (buf[s + 2] | 0x20) === 0x62) return this.pub(buf, opEnd, e, false); // PUB
        if (c0 === 0x73 && (buf[s + 1] | 0x20) === 0x75 && (buf[s + 2] | 0x20) === 0x62) return this.sub(buf, opEnd, e); // SUB
        if (c0 === 0x2b && (buf[s + 1] | 0x20) === 0x6f && (buf[s + 2] | 0x20) === 0x6b) return 0; // +OK from a client: ignored
        break;
      case 4:
        if (c0 === 0x70 && (buf[s + 2] | 0x20) === 0x6e && (buf[s + 3] | 0x20) === 0x67) {
          const c1 = buf[s + 1] | 0x20;
          if (c1 === 0x69) {
            this.handler.onPing();
            return this.failed ? -1 : 0;
          }
          if (c1 === 0x6f) {
            this.handler.onPong();
            return 0;
          }
        }
        if (c0 === 0x68 && matchOp(buf, s, "hpub")) return this.pub(buf, opEnd, e, true);
        if (c0 === 0x69 && matchOp(buf, s, "info")) return 0; // a client's INFO carries nothing for us
        if (c0 === 0x2d && matchOp(buf, s, "-err")) return 0;
        break;
      case 5:
        if (c0 === 0x75 && matchOp(buf, s, "unsub")) return this.unsub(buf, opEnd, e);
        break;
      case 7:
        if (c0 === 0x63 && matchOp(buf, s, "connect")) {
          let a = opEnd;
          while (a < e && (buf[a] === SPACE || buf[a] === TAB)) a++;
          this.handler.onConnect(buf.toString("utf8", a, e));
          return this.failed ? -1 : 0;
        }
        break;
    }
    this.fail(ProtoError.UnknownOp);
    return -1;
  }

  /** Splits buf[s, e) on spaces and tabs into argStart/argEnd. Returns the count, or -1 if too many. */
  private splitArgs(buf: Buffer, s: number, e: number): number {
    let count = 0;
    let i = s;
    while (i < e) {
      while (i < e && (buf[i] === SPACE || buf[i] === TAB)) i++;
      if (i >= e) break;
      if (count === MAX_ARGS) return -1;
      this.argStart[count] = i;
      while (i < e && buf[i] !== SPACE && buf[i] !== TAB) i++;
      this.argEnd[count] = i;
      count++;
    }
    return count;
  }

  private pub(buf: Buffer, s: number, e: number, withHeaders: boolean): number {
    const argc = this.splitArgs(buf, s, e);
    const base = withHeaders ? 3 : 2;
    if (argc !== base && argc !== base + 1) {
      this.fail(ProtoError.UnknownOp);
      return -1;
    }
    const hasReply = argc === base + 1;
    const total = parseSize(buf, this.argStart[argc - 1], this.argEnd[argc - 1]);
    let hdr = 0;
    if (withHeaders) {
      hdr = parseSize(buf, this.argStart[argc - 2], this.argEnd[argc - 2]);
      if (hdr < 0 || hdr > total) {
        this.fail(ProtoError.UnknownOp);
        return -1;
      }
    }
    if (total < 0) {
      this.fail(ProtoError.UnknownOp);
      return -1;
    }
    if (total > this.maxPayload) {
      this.fail(ProtoError.MaxPayload);
      return -1;
    }
    const m = this.msg;
    m.argBuf = buf;
    m.subjectStart = this.argStart[0];
    m.subjectEnd = this.argEnd[0];
    m.subject = this.subjects.of(buf, m.subjectStart, m.subjectEnd);
    if (hasReply) {
      m.replyStart = this.argStart[1];
      m.replyEnd = this.argEnd[1];
    } else {
      m.replyStart = m.replyEnd = 0;
    }
    m.hdrLen = hdr;
    return total + 2;
  }

  private sub(buf: Buffer, s: number, e: number): number {
    const argc = this.splitArgs(buf, s, e);
    if (argc !== 2 && argc !== 3) {
      this.fail(ProtoError.UnknownOp);
      return -1;
    }
    const subject = buf.toString("utf8", this.argStart[0], this.argEnd[0]);
    const queue = argc === 3 ? buf.toString("utf8", this.argStart[1], this.argEnd[1]) : null;
    const sid = buf.toString("utf8", this.argStart[argc - 1], this.argEnd[argc - 1]);
    this.handler.onSub(subject, queue, sid);
    return this.failed ? -1 : 0;
  }

  private unsub(buf: Buffer, s: number, e: number): number {
    const argc = this.splitArgs(buf, s, e);
    if (argc !== 1 && argc !== 2) {
      this.fail(ProtoError.UnknownOp);
      return -1;
    }
    let max = 0;
    if (argc === 2) {
      max = parseSize(buf, this.argStart[1], this.argEnd[1]);
      if (max < 0) {
        this.fail(ProtoError.UnknownOp);
        return -1;
      }
    }
    this.handler.onUnsub(buf.toString("utf8", this.argStart[0], this.argEnd[0]), max);
    return this.failed ? -1 : 0;
  }
}

function matchOp(buf: Buffer, s: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    if ((buf[s + k] | 0x20) !== lower.charCodeAt(k)) return false;
  }
  return true;
}

/** Decimal digits only; -1 for anything else or a value past 2^31. */
export function parseSize(buf: Buffer, s: number, e: number): number {
  if (e <= s || e - s > 10) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i] - 48;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v > 0x7fffffff ? -1 : v;
}
