/**
 * One route: a connection to another node of the cluster, speaking
 * nats-server 2.9's route protocol (INFO/CONNECT, PING/PONG, RS+/RS-,
 * RMSG/HMSG), so that a nagare node and a nats-server node can share a
 * cluster. The manager (routes.ts) owns the set of routes and decides what
 * crosses; this module frames, parses and keeps the peer's interest.
 *
 * What the peer is interested in lives in a sublist per account of
 * RemoteInterest entries (one per subject, or per subject and queue with
 * the peer's member count as weight), matched on every local publish.
 */

import type { Socket } from "node:net";
import type { Broker, Connection, ConnectionInfo } from "../../core/broker.js";
import type { Account, RoutedQueues } from "../../core/account.js";
import { Message } from "../../subjects/message.js";
import { Sublist, type MatchResult } from "../../subjects/sublist.js";
import { Subscription, type Receiver } from "../../subjects/subscription.js";
import { isValidQueueName, isValidSubscribeSubject } from "../../subjects/subject.js";
import { formatDuration } from "../../util/duration.js";
import { copyInto, RepeatedString, writeUint } from "../../util/bytes.js";
import { Outbound } from "../../util/outbound.js";
import { natsReads, readInto } from "../../util/socket-reads.js";
import { ROUTE_PAYLOAD_SLACK } from "../../core/options.js";

/** What the peer told us in its INFO. */
export interface RouteInfo {
  server_id: string;
  server_name?: string;
  host?: string;
  port?: number;
  cluster?: string;
  ip?: string;
  connect_urls?: string[];
}

/** What a route reports to the manager. */
export interface RouteEvents {
  /** The first INFO arrived: the peer is `info.server_id`; false closes the route. */
  identified(route: Route, info: RouteInfo): boolean;
  /** A later INFO: an update from the peer itself, or gossip of another node. */
  infoUpdate(route: Route, info: RouteInfo): void;
  /** The route's CONNECT named this cluster: false refuses it. */
  connectOk(route: Route, cluster: string | undefined): string | null;
  closed(route: Route, reason: string): void;
  /** The peer declared new interest (internal services on this node wake for a subscriber on another). */
  interestAdded(account: string, interest: RemoteInterest): void;
}

/** A peer's interest in a subject (and queue), with its weight: the number of queue members it has. */
export class RemoteInterest extends Subscription {
  weight = 1;
}

const PING = Buffer.from("PING\r\n");
/**
 * A message routed on one subject and shown with another (a JetStream
 * delivery to an inbox keeps its stored subject) crosses a route with the
 * subject it is shown with in this header, first after the version line;
 * the receiving node takes it out again. nagare's own: a nats-server node
 * would show it to its clients.
 */
const VERSION_LINE = Buffer.from("NATS/1.0\r\n");
const PRESENTED = Buffer.from("Nagare-Subject: ");
const MARK_LEN = VERSION_LINE.length + PRESENTED.length;
const PONG = Buffer.from("PONG\r\n");
/** RMSG/HMSG overhead besides the variable fields: verb, spaces, two sizes, CRLFs. */
const FRAME_OVERHEAD = 5 + 6 + 22 + 4;
/** Longest control line a route may send: RMSG lines carry a queue list, so more than a client's. */
const ROUTE_CONTROL_MAX = 64 * 1024;
/** RS+ entries a peer may hold here; past it the route is a protocol violation (bounds the remote sublists). */
export const REMOTE_INTEREST_MAX = 1_000_000;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;

/** The queue groups named on one RMSG: reused for every message. */
class QueueList implements RoutedQueues {
  names: string[] = [];
  count = 0;
  allows(queue: string): boolean {
    for (let i = 0; i < this.count; i++) if (this.names[i] === queue) return true;
    return false;
  }
}

export class Route implements Connection, Receiver {
  readonly cid: number;
  readonly echo = false;
  readonly routable = false;
  /** Set from the first INFO. */
  remoteId = "";
  remoteName = "";
  /** The peer's route URL (its INFO `ip`, or host and port), gossiped to the others. */
  remoteUrl = "";
  remoteConnectUrls: string[] = [];
  /** CONNECT (from a peer that dialled us) and INFO have both arrived; the manager has it in its table. */
  registered = false;
  gotConnect = false;
  closed = false;
  closeReason = "";
  /** Account name → the peer's interest in it. */
  private readonly interest = new Map<string, Sublist>();
  private readonly interestByKey = new Map<string, Map<string, RemoteInterest>>();
  /** `match`'s last account and its sublist (null: none); forgotten whenever `interest` gains or loses an account. */
  private lastInterestAccount: string | null = null;
  private lastInterest: Sublist | null = null;
  private interestCount = 0;

  private readonly out = new Outbound();
  private readonly msg = Object.assign(new Message(), { fromRoute: true });
  private msgAccount: Account | null = null;
  private readonly queues = new QueueList();
  private lastAccountName = "";
  private lastAccount: Account | null = null;

  private pingsOut = 0;
  private nextPingAt: number;
  private readonly handshakeDeadline: number;
  private lastRttStart = 0;
  rttMs = 0;
  readonly startedAt = Date.now();
  private lastActivity = Date.now();
  readonly ip: string;
  readonly port: number;
  inMsgs = 0;
  outMsgs = 0;
  inBytes = 0;
  outBytes = 0;

  constructor(
    private readonly broker: Broker,
    private readonly socket: Socket,
    /** True when this node dialled the peer. */
    readonly solicited: boolean,
    /** The configured URL this route was dialled for, if any. */
    readonly configuredUrl: string | null,
    private readonly events: RouteEvents,
  ) {
    this.cid = broker.allocateCid();
    this.ip = socket.remoteAddress ?? "";
    this.port = socket.remotePort ?? 0;
    const o = broker.options;
    this.nextPingAt = this.startedAt + o.pingInterval;
    this.handshakeDeadline = this.startedAt + Math.max(2000, o.authTimeout);
    socket.setNoDelay(true);
    // A fresh buffer per read, at a route's rate, kept the garbage collector busy for a third of a receiving node's time (docs/PERFORMANCE.md, "Cluster").
    if (!readInto(socket, natsReads, this.onData)) socket.on("data", this.onData);
    socket.on("error", () => this.close("Read Error"));
    socket.on("close", () => this.close("Closed by peer"));
  }

  /** Queues a control line (INFO, CONNECT, RS+, ...): not a hot path. */
  sendLine(line: string): void {
    this.queueBytes(Buffer.from(`${line}\r\n`));
  }

  // ---- interest the peer declared ----

  /** The peer's interest in `subject` within `account`, or null when none. */
  match(account: string, subject: string): MatchResult | null {
    // The account repeats from message to message: its sublist is looked up once while it does.
    let sl = this.lastInterest;
    if (account !== this.lastInterestAccount) {
      sl = this.interest.get(account) ?? null;
      this.lastInterestAccount = account;
      this.lastInterest = sl;
    }
    if (sl === null) return null;
    const r = sl.match(subject);
    return r.plain.length === 0 && r.queues.length === 0 ? null : r;
  }

  /**
   * Whether the peer declared interest in exactly `subject` (a wildcard does
   * not count): plain when `queue` is undefined or empty, else as a member of
   * that queue group. RS+ names the subject and the queue of each entry, so
   * the peer's sublist knows both; the match is the cached one `forward` uses.
   */
  hasExactInterest(account: string, subject: string, queue: string | undefined): boolean {
    const r = this.match(account, subject);
    if (r === null) return false;
    if (queue === undefined || queue === "") {
      const plain = r.plain;
      for (let i = 0; i < plain.length; i++) if (plain[i].subject === subject) return true;
      return false;
    }
    const groups = r.queues;
    for (let g = 0; g < groups.length; g++) {
      if (groups[g].name !== queue) continue;
      const members = groups[g].members;
      for (let k = 0; k < members.length; k++) if (members[k].subject === subject) return true;
    }
    return false;
  }

  get subscriptionCount(): number {
    return this.interestCount;
  }

  subscriptionsList(): string[] {
    const list: string[] = [];
    for (const [acc, m] of this.interestByKey) for (const k of m.keys()) list.push(`${acc} ${k}`);
    return list;
  }

  private addInterest(account: string, subject: string, queue: string | null, weight: number): boolean {
    let byKey = this.interestByKey.get(account);
    let sl = this.interest.get(account);
    if (byKey === undefined || sl === undefined) {
      byKey = new Map();
      sl = new Sublist();
      this.interestByKey.set(account, byKey);
      this.interest.set(account, sl);
      this.lastInterestAccount = null;
    }
    const key = queue === null ? subject : `${subject} ${queue}`;
    const existing = byKey.get(key);
    if (existing !== undefined) {
      existing.weight = weight;
      return true;
    }
    if (this.interestCount >= REMOTE_INTEREST_MAX) return false;
    const ri = new RemoteInterest(this, subject, queue);
    ri.weight = weight;
    byKey.set(key, ri);
    sl.insert(ri);
    this.interestCount++;
    this.events.interestAdded(account, ri);
    return true;
  }

  private removeInterest(account: string, subject: string, queue: string | null): void {
    const byKey = this.interestByKey.get(account);
    const key = queue === null ? subject : `${subject} ${queue}`;
    const ri = byKey?.get(key);
    if (ri === undefined) return;
    byKey!.delete(key);
    this.interest.get(account)!.remove(ri);
    this.interestCount--;
  }

  // ---- outbound ----

  /**
   * Frames one message for the peer: `RMSG <account> <subject> [+ <reply> <queues>|| <queues>|<reply>] <size>`
   * (HMSG adds the header size), nats-server 2.9's form. Copies bytes only.
   */
  sendMsg(accountName: Buffer, msg: Message, queues: readonly string[], queueCount: number): void {
    if (this.closed) return;
    // A client's own header that looks like ours is carried behind ours, so that the next node cannot mistake it.
    if (msg.presented || (msg.hdrLen > MARK_LEN && startsWithAt(msg.data, msg.start, VERSION_LINE) && startsWithAt(msg.data, msg.start + VERSION_LINE.length, PRESENTED))) {
      this.frame(accountName, withPresentedSubject(msg), queues, queueCount);
      return;
    }
    this.frame(accountName, msg, queues, queueCount);
  }

  private frame(accountName: Buffer, msg: Message, queues: readonly string[], queueCount: number): void {
    const subjLen = msg.subjectEnd - msg.subjectStart;
    const replyLen = msg.replyEnd - msg.replyStart;
    const size = msg.end - msg.start;
    let queueBytes = 0;
    for (let i = 0; i < queueCount; i++) queueBytes += queues[i].length * 3 + 1;
    const need = FRAME_OVERHEAD + accountName.length + subjLen + replyLen + queueBytes + size;
    if (!this.reserve(need)) return;
    const out = this.out.buf;
    const from = this.out.len;
    let p = from;
    const headers = msg.hdrLen > 0;
    if (headers) out[p++] = 0x48; // H
    else out[p++] = 0x52; // R
    out[p++] = 0x4d; // M
    out[p++] = 0x53; // S
    out[p++] = 0x47; // G
    out[p++] = SP;
    p = copyInto(accountName, 0, accountName.length, out, p);
    out[p++] = SP;
    p = copyInto(msg.argBuf, msg.subjectStart, msg.subjectEnd, out, p);
    out[p++] = SP;
    if (queueCount > 0) {
      out[p++] = replyLen > 0 ? 0x2b : 0x7c; // + or |
      out[p++] = SP;
      if (replyLen > 0) {
        p = copyInto(msg.argBuf, msg.replyStart, msg.replyEnd, out, p);
        out[p++] = SP;
      }
      for (let i = 0; i < queueCount; i++) {
        p += out.write(queues[i], p, "utf8");
        out[p++] = SP;
      }
    } else if (replyLen > 0) {
      p = copyInto(msg.argBuf, msg.replyStart, msg.replyEnd, out, p);
      out[p++] = SP;
    }
    if (headers) {
      p = writeUint(out, p, msg.hdrLen);
      out[p++] = SP;
    }
    p = writeUint(out, p, size);
    out[p++] = CR;
    out[p++] = LF;
    if (size > 0) p = copyInto(msg.data, msg.start, msg.end, out, p);
    out[p++] = CR;
    out[p++] = LF;
    this.out.len = p;
    this.outMsgs++;
    this.outBytes += size;
    // Queued bytes were marked when the first of them was: once per flush, not a set lookup per message.
    if (from === 0) this.broker.markDirty(this);
  }

  deliver(): void {
    // Remote interest is matched by the manager, never delivered through a sublist of an account.
  }

  private reserve(need: number): boolean {
    if (!this.out.fits(need, this.socket, this.broker.options.maxPending)) {
      // nats-server's treatment of a route that cannot keep up: a slow consumer, closed.
      this.broker.stats.slowConsumers++;
      this.broker.log.warn(`route ${this.describe()} slow consumer detected: Slow Consumer (Pending Bytes)`);
      this.out.discard();
      this.close("Slow Consumer (Pending Bytes)");
      return false;
    }
    this.out.reserve(need);
    return true;
  }

  private queueBytes(b: Buffer): void {
    if (this.closed || !this.reserve(b.length)) return;
    this.out.append(b);
    this.broker.markDirty(this);
  }

  flushOutbound(): void {
    if (this.out.len === 0 || this.socket.destroyed) return;
    this.out.flushTo(this.socket);
  }

  // ---- inbound ----

  /** One read: a view of `natsReads` (or Node's own buffer), valid until this returns (what outlives it is carried). */
  private readonly onData = (chunk: Buffer): void => {
    if (this.closed) return;
    this.lastActivity = Date.now();
    this.broker.beginRead(null);
    try {
      // A line or message that started in an earlier read is completed and parsed alone, then the rest of this read.
      const from = this.carryLen > 0 ? this.completeCarry(chunk) : 0;
      if (from >= 0 && from < chunk.length) this.parse(chunk, from, chunk.length);
    } catch (err) {
      this.protocolError(`Protocol Error: ${(err as Error).message}`);
    } finally {
      this.broker.endRead();
    }
  };

  private parse(buf: Buffer, from: number, n: number): void {
    let pos = from;
    while (pos < n && !this.closed) {
      const lf = buf.indexOf(LF, pos);
      if (lf < 0 || lf >= n) {
        if (n - pos > ROUTE_CONTROL_MAX) throw new Error("maximum control line exceeded");
        break;
      }
      const lineEnd = lf > pos && buf[lf - 1] === CR ? lf - 1 : lf;
      if (lineEnd - pos > ROUTE_CONTROL_MAX) throw new Error("maximum control line exceeded");
      const size = this.messageSize(buf, pos, lineEnd);
      if (size >= 0) {
        // RMSG / HMSG: the payload follows the line.
        const payloadEnd = lf + 1 + size;
        if (payloadEnd + 2 > n) {
          // Not all here: carry it from the line's start, and parse it again once it is.
          this.carryNeed = payloadEnd + 2 - pos;
          break;
        }
        if (buf[payloadEnd] !== CR || buf[payloadEnd + 1] !== LF) throw new Error("message payload not followed by CRLF");
        this.deliverInbound(buf, lf + 1, payloadEnd);
        pos = payloadEnd + 2;
        continue;
      }
      this.controlLine(buf, pos, lineEnd);
      pos = lf + 1;
    }
    if (pos < n && !this.closed) this.carryAppend(buf, pos, n);
  }

  /** The payload size an RMSG/HMSG line announces (its arguments read into `msg`), or -1 for any other line. */
  private messageSize(buf: Buffer, pos: number, lineEnd: number): number {
    const c0 = buf[pos] | 0x20;
    if ((c0 !== 0x72 && c0 !== 0x68) || (buf[pos + 1] | 0x20) !== 0x6d) return -1;
    if (!this.registered) throw new Error("message before the route handshake");
    return this.msgArgs(buf, pos, lineEnd, c0 === 0x68);
  }

  /**
   * A line or message split across reads, copied into a buffer of the
   * route's own (reused: what a message is delivered from is copied by its
   * receivers before they return), so that the read that completes it is
   * not joined whole to the tail of the one before: that join copied every
   * byte a route received a second time.
   */
  private carry: Buffer = Buffer.alloc(0);
  private carryLen = 0;
  /** Bytes the carried message needs in all; 0 while it is a line still waiting for its LF. */
  private carryNeed = 0;

  private carryAppend(buf: Buffer, s: number, e: number): void {
    const want = this.carryLen + e - s;
    if (want > this.carry.length) {
      const bigger = Buffer.allocUnsafe(Math.max(want, this.carryNeed, 2 * this.carry.length, 4096));
      this.carry.copy(bigger, 0, 0, this.carryLen);
      this.carry = bigger;
    }
    buf.copy(this.carry, this.carryLen, s, e);
    this.carryLen = want;
  }

  /** Adds `chunk`'s first bytes to what is carried; once that is whole, parses it. Returns where the rest of `chunk` starts, or -1 when all of it was carried. */
  private completeCarry(chunk: Buffer): number {
    let from = 0;
    if (this.carryNeed === 0) {
      const lf = chunk.indexOf(LF);
      const end = lf < 0 ? chunk.length : lf + 1;
      if (this.carryLen + end > ROUTE_CONTROL_MAX + 2) throw new Error("maximum control line exceeded");
      this.carryAppend(chunk, 0, end);
      if (lf < 0) return -1;
      from = end;
      const c = this.carry;
      const lineLast = this.carryLen - 1; // the LF
      const lineEnd = lineLast > 0 && c[lineLast - 1] === CR ? lineLast - 1 : lineLast;
      const size = this.messageSize(c, 0, lineEnd);
      if (size < 0) {
        this.carryLen = 0;
        this.controlLine(c, 0, lineEnd);
        return from;
      }
      this.carryNeed = this.carryLen + size + 2;
    }
    const take = Math.min(this.carryNeed - this.carryLen, chunk.length - from);
    this.carryAppend(chunk, from, from + take);
    from += take;
    if (this.carryLen < this.carryNeed) return -1;
    const len = this.carryLen;
    this.carryLen = 0;
    this.carryNeed = 0;
    this.parse(this.carry, 0, len);
    return from;
  }

  private controlLine(buf: Buffer, s: number, e: number): void {
    const line = buf.toString("utf8", s, e);
    const sp = line.search(/[ \t]/);
    const op = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const rest = sp < 0 ? "" : line.slice(sp + 1).trim();
    switch (op) {
      case "PING":
        this.queueBytes(PONG);
        return;
      case "PONG":
        this.pingsOut = 0;
        if (this.lastRttStart > 0) {
          this.rttMs = Date.now() - this.lastRttStart;
          this.lastRttStart = 0;
        }
        return;
      case "INFO":
        return this.onInfo(rest);
      case "CONNECT":
        return this.onConnect(rest);
      case "RS+":
      case "RS-":
        if (!this.registered) throw new Error(`${op} before the route handshake`);
        return this.onInterest(op === "RS+", rest);
      case "+OK":
        return;
      case "-ERR":
        this.broker.log.warn(`route ${this.describe()}: peer says ${rest}`);
        return;
      case "LS+":
      case "LS-":
        // Leafnode interest is never sent on a route; nothing here to honour.
        return;
      default:
        throw new Error(`unknown route operation ${JSON.stringify(op.slice(0, 16))}`);
    }
  }

  private onInfo(json: string): void {
    let info: RouteInfo;
    try {
      info = JSON.parse(json) as RouteInfo;
    } catch {
      throw new Error("INFO is not JSON");
    }
    if (typeof info !== "object" || info === null || typeof info.server_id !== "string" || info.server_id === "") throw new Error("INFO without server_id");
    if (Array.isArray(info.connect_urls) && info.connect_urls.some((u) => typeof u !== "string")) throw new Error("INFO connect_urls must be strings");
    if (this.remoteId !== "") {
      this.events.infoUpdate(this, info);
      return;
    }
    if (!this.solicited && !this.gotConnect) throw new Error("INFO before CONNECT");
    this.remoteId = info.server_id;
    this.remoteName = typeof info.server_name === "string" ? info.server_name : "";
    this.remoteConnectUrls = Array.isArray(info.connect_urls) ? info.connect_urls.slice(0, 64) : [];
    this.remoteUrl = routeUrlOf(info, this.ip);
    this.events.identified(this, info);
  }

  private onConnect(json: string): void {
    if (this.gotConnect) return;
    let c: { cluster?: unknown };
    try {
      c = JSON.parse(json) as { cluster?: unknown };
    } catch {
      throw new Error("CONNECT is not JSON");
    }
    const why = this.events.connectOk(this, typeof c.cluster === "string" ? c.cluster : undefined);
    if (why !== null) {
      this.protocolError(why);
      return;
    }
    this.gotConnect = true;
  }

  private onInterest(add: boolean, rest: string): void {
    const a = rest.split(/[ \t]+/);
    if (a.length < 2 || a.length > 4) throw new Error(`malformed ${add ? "RS+" : "RS-"}`);
    const [account, subject] = a;
    const queue = a.length >= 3 ? a[2] : null;
    if (!isValidSubscribeSubject(subject) || (queue !== null && !isValidQueueName(queue))) throw new Error(`invalid subject in ${add ? "RS+" : "RS-"}`);
    if (!add) {
      this.removeInterest(account, subject, queue);
      return;
    }
    let weight = 1;
    if (a.length === 4) {
      weight = Number(a[3]);
      if (!Number.isSafeInteger(weight) || weight < 1) weight = 1;
    }
    if (!this.addInterest(account, subject, queue, weight)) throw new Error("too many subscriptions from one route");
  }

  /**
   * Reads an RMSG/HMSG control line without building strings but the
   * subject (the sublist needs it) and the queue names it lists.
   */
  private msgArgs(buf: Buffer, s: number, e: number, headers: boolean): number {
    // Token boundaries, in a reused array: at most account, subject, +/|, reply, queues..., hdr, size.
    const t = this.tokens;
    let count = 0;
    let p = s + 4;
    while (p < e) {
      while (p < e && (buf[p] === SP || buf[p] === TAB)) p++;
      if (p >= e) break;
      const start = p;
      while (p < e && buf[p] !== SP && buf[p] !== TAB) p++;
      if (count * 2 + 1 >= t.length) t.push(0, 0);
      t[count * 2] = start;
      t[count * 2 + 1] = p;
      count++;
    }
    const fixed = headers ? 4 : 3;
    if (count < fixed) throw new Error(`malformed ${headers ? "HMSG" : "RMSG"}`);
    const size = parseUint(buf, t[(count - 1) * 2], t[(count - 1) * 2 + 1]);
    const hdr = headers ? parseUint(buf, t[(count - 2) * 2], t[(count - 2) * 2 + 1]) : 0;
    if (size < 0 || hdr < 0 || hdr > size) throw new Error("bad message size");
    if (size > this.broker.options.maxPayload + ROUTE_PAYLOAD_SLACK) throw new Error("maximum payload exceeded");
    const m = this.msg;
    this.msgAccount = this.accountFor(buf, t[0], t[1]);
    m.argBuf = buf;
    m.subjectStart = t[2];
    m.subjectEnd = t[3];
    // UTF-8, as the NATS door and RS+ decode subjects: a subject with other than ASCII must match the same interest.
    m.subject = this.subjects.of(buf, t[2], t[3]);
    m.replyStart = 0;
    m.replyEnd = 0;
    m.hdrLen = hdr;
    const middle = count - fixed; // tokens between the subject and the size(s)
    this.queues.count = 0;
    if (middle === 1) {
      m.replyStart = t[4];
      m.replyEnd = t[5];
    } else if (middle > 1) {
      const marker = buf[t[4]];
      let q = 3;
      if (marker === 0x2b) {
        m.replyStart = t[6];
        m.replyEnd = t[7];
        q = 4;
      } else if (marker !== 0x7c) throw new Error("malformed RMSG queue list");
      const qEnd = count - (headers ? 2 : 1);
      for (let i = q; i < qEnd; i++) {
        const name = buf.toString("utf8", t[i * 2], t[i * 2 + 1]);
        if (this.queues.count < this.queues.names.length) this.queues.names[this.queues.count] = name;
        else this.queues.names.push(name);
        this.queues.count++;
      }
    }
    return size;
  }

  private readonly tokens: number[] = new Array<number>(32).fill(0);
  private readonly subjects = new RepeatedString();
  private readonly accountNames = new RepeatedString();

  private accountFor(buf: Buffer, s: number, e: number): Account | null {
    const name = this.accountNames.of(buf, s, e);
    if (name !== this.lastAccountName || this.lastAccount === null) {
      this.lastAccountName = name;
      this.lastAccount = this.broker.accounts.get(name) ?? null;
    }
    return this.lastAccount;
  }

  private deliverInbound(buf: Buffer, s: number, e: number): void {
    let m = this.msg;
    m.data = buf;
    m.start = s;
    m.end = e;
    const size = e - s;
    this.inMsgs++;
    this.inBytes += size;
    const stats = this.broker.stats;
    stats.inMsgs++;
    stats.inBytes += size;
    if (m.hdrLen > MARK_LEN && startsWithAt(buf, s, VERSION_LINE) && startsWithAt(buf, s + VERSION_LINE.length, PRESENTED)) m = presentedMessage(m);
    const acc = this.msgAccount;
    // An account this node does not have has no subscribers here.
    if (acc !== null) acc.route(m, this, this.queues);
  }

  // ---- upkeep ----

  tick(now: number): void {
    if (this.closed) return;
    if (!this.registered && now > this.handshakeDeadline) {
      this.close("Route handshake timeout");
      return;
    }
    if (now >= this.nextPingAt) {
      const o = this.broker.options;
      if (this.pingsOut >= o.maxPingsOut) {
        this.close("Stale Connection");
        return;
      }
      this.pingsOut++;
      this.nextPingAt = now + o.pingInterval;
      this.lastRttStart = now;
      this.queueBytes(PING);
    }
  }

  /** Sends a PING now (once registered), so the RTT is known early. */
  pingNow(): void {
    this.lastRttStart = Date.now();
    this.pingsOut++;
    this.queueBytes(PING);
  }

  info(now: number): ConnectionInfo {
    return {
      cid: this.cid,
      kind: "Router",
      type: "nats",
      ip: this.ip,
      port: this.port,
      start: new Date(this.startedAt).toISOString(),
      last_activity: new Date(this.lastActivity).toISOString(),
      rtt: formatDuration(this.rttMs),
      uptime: formatDuration(now - this.startedAt),
      idle: formatDuration(now - this.lastActivity),
      pending_bytes: this.out.len + this.socket.writableLength,
      in_msgs: this.inMsgs,
      out_msgs: this.outMsgs,
      in_bytes: this.inBytes,
      out_bytes: this.outBytes,
      subscriptions: this.interestCount,
    };
  }

  get pendingBytes(): number {
    return this.out.len + this.socket.writableLength;
  }

  get lastActivityAt(): number {
    return this.lastActivity;
  }

  notifyLameDuck(): void {}

  describe(): string {
    return `${this.ip}:${this.port}${this.remoteName !== "" ? ` (${this.remoteName})` : this.remoteId !== "" ? ` (${this.remoteId.slice(0, 8)})` : ""}`;
  }

  private protocolError(text: string): void {
    this.sendLine(`-ERR '${text.replace(/'/g, "")}'`);
    this.close(text);
  }

  close(reason: string): void {
    if (this.closed) return;
    if (this.out.len > 0 && !this.socket.destroyed) this.flushOutbound();
    this.out.release();
    this.closed = true;
    this.closeReason = reason;
    this.interest.clear();
    this.interestByKey.clear();
    this.lastInterestAccount = null;
    this.lastInterest = null;
    this.interestCount = 0;
    this.broker.unregister(this);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.events.closed(this, reason);
  }
}

/** A peer's route URL: its INFO `ip` (nats-server's advertised route URL), else its host and port. */
function routeUrlOf(info: RouteInfo, socketIp: string): string {
  if (typeof info.ip === "string" && info.ip !== "") return info.ip;
  const host = typeof info.host === "string" && info.host !== "" && info.host !== "0.0.0.0" && info.host !== "::" ? info.host : socketIp;
  if (typeof info.port !== "number") return "";
  return `nats-route://${host.includes(":") ? `[${host}]` : host}:${info.port}/`;
}

function parseUint(buf: Buffer, s: number, e: number): number {
  if (e <= s || e - s > 12) return -1;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i] - 48;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

function startsWithAt(buf: Buffer, at: number, prefix: Buffer): boolean {
  if (at + prefix.length > buf.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[at + i] !== prefix[i]) return false;
  return true;
}

/** The message to send for one routed on a subject other than the one it shows: the shown subject goes in a header. */
function withPresentedSubject(msg: Message): Message {
  const shown = msg.argBuf.subarray(msg.subjectStart, msg.subjectEnd);
  const block = msg.data.subarray(msg.start, msg.start + msg.hdrLen);
  // Only a plain version line is followed by the shown subject (status lines are never presented deliveries).
  const rest = msg.hdrLen > 0 && startsWithAt(block, 0, VERSION_LINE) ? block.subarray(VERSION_LINE.length) : Buffer.from("\r\n");
  const headers = Buffer.concat([VERSION_LINE, PRESENTED, shown, Buffer.from("\r\n"), rest]);
  return Message.from(msg.subject, msg.reply, msg.data.subarray(msg.start + msg.hdrLen, msg.end), headers);
}

/** The inverse, on the receiving node: routed on `m.subject`, shown with the header's subject, the header gone. */
function presentedMessage(m: Message): Message {
  const block = m.data.subarray(m.start, m.start + m.hdrLen);
  const from = VERSION_LINE.length + PRESENTED.length;
  const eol = block.indexOf("\r\n", from);
  const shown = block.toString("latin1", from, eol);
  const rest = block.subarray(eol + 2);
  const payload = m.data.subarray(m.start + m.hdrLen, m.end);
  // Only the version line and the blank line left: the message had no headers.
  const headers = rest.length === 2 ? undefined : Buffer.concat([VERSION_LINE, rest]);
  const out = Message.from(shown, m.reply, payload, headers);
  out.subject = m.subject;
  out.fromRoute = true;
  return out;
}
