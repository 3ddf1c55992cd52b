/**
 * A consumer: a cursor over a stream with acknowledgement state. It delivers
 * to a push subject or to waiting pull requests, tracks what is delivered but
 * not acknowledged, redelivers after the ack wait (or a NAK's delay, or a
 * backoff step), and keeps its state on disk when the stream does.
 *
 * State, in JetStream's terms: `delivered` is the last consumer sequence and
 * stream sequence handed out; `ack floor` is the point below which everything
 * is acknowledged; `pending` maps each unacknowledged stream sequence to its
 * delivery (consumer sequence, time, count).
 */

import { subjectMatches } from "../subjects/subject.js";
import type { StoredMessage } from "../store/log.js";
import { encodeHeaders, appendHeaders, withKeyHeader } from "./headers.js";
import { filtersOf, isPush, NS_PER_MS, type ConsumerConfig } from "./config.js";
import { isoTime, type Stream } from "./stream.js";
import { readJson, writeJsonDurably } from "./persist.js";
import { join } from "node:path";

/** How a consumer reaches clients; provided by the server that owns the streams. */
export interface DeliveryHost {
  /** Routes to subscribers of `to`, presenting the message under `subject`. */
  emit(to: string, subject: string, reply: string, headers: Buffer | null, data: Buffer): void;
  hasInterest(subject: string): boolean;
  onConsumerGone(c: Consumer): void;
}

interface Pending {
  dseq: number;
  /** Delivery time (ms), for the ack wait. */
  ts: number;
  deadline: number;
  count: number;
}

interface PullRequest {
  reply: string;
  batch: number;
  maxBytes: number;
  expiresAt: number;
  noWait: boolean;
  heartbeatMs: number;
  sent: number;
  bytes: number;
  lastSent: number;
  timer: NodeJS.Timeout | null;
}

interface SavedState {
  dseq: number;
  cursor: number;
  deliveredS: number;
  ackFloorS: number;
  ackFloorC: number;
  pending: Array<[number, number, number, number]>;
  initial?: number[];
}

/**
 * Push flow control is a window, as in nats-server: a request goes out once
 * half the window is unanswered, and delivery stops only when all of it is.
 * Stopping at every request instead drains the pipe once per round trip.
 */
const FLOW_CONTROL_WINDOW = 2 * 1024 * 1024;
/** Deliveries read per pass; bounds the memory one consumer holds. */
const READ_BATCH = 256;
const EMPTY = Buffer.alloc(0);
/** A pull request's expiry is honoured this early: its timer may fire a few ms before Date.now() reaches it. */
const TIMER_SLACK_MS = 5;

export class Consumer {
  private dseq = 0;
  /** Last stream sequence read from the log (the next read starts after it). */
  private cursor = 0;
  /** Highest stream sequence delivered. */
  private deliveredS = 0;
  private ackFloorS = 0;
  private ackFloorC = 0;
  private readonly pending = new Map<number, Pending>();
  /** Stream sequences due for redelivery, in the order they became due. */
  private readonly redeliverQueue: number[] = [];
  private readonly redeliverSet = new Set<number>();
  /** For last_per_subject: the sequences to deliver before continuing from the cursor. */
  private initial: number[] | null = null;
  private readonly waiting: PullRequest[] = [];
  private pumping = false;
  private again = false;
  private ackTimer: NodeJS.Timeout | null = null;
  private hbTimer: NodeJS.Timeout | null = null;
  private fcSubject: string | null = null;
  private fcCounter = 0;
  /** Push bytes delivered and not yet covered by an answered flow-control request. */
  private fcUnanswered = 0;
  /** The part of `fcUnanswered` the outstanding request covers. */
  private fcCovered = 0;
  private lastDeliveryAt = 0;
  private lastReplayTime = 0;
  lastActive = Date.now();
  private closed = false;
  private filters: string[];
  /** numPending() as last counted (-1: count again), and the log's removal count it was valid for. */
  private pendingCount = -1;
  private pendingRemovals = 0;
  /** The highest stream sequence the count accounts for. */
  private pendingHigh = 0;
  // Persistence: one write at a time, the next one carrying every change made meanwhile.
  private saving: Promise<void> | null = null;
  private dirty = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private readonly saveWaiters: Array<() => void> = [];

  constructor(
    readonly stream: Stream,
    readonly name: string,
    public config: ConsumerConfig,
    readonly created: Date,
    private readonly host: DeliveryHost,
    /** Where definition and state live; null for memory-only. */
    readonly dir: string | null,
  ) {
    this.filters = filtersOf(config);
  }

  get durable(): boolean {
    return this.config.durable_name !== undefined;
  }

  get push(): boolean {
    return isPush(this.config);
  }

  /** Positions a new consumer according to its deliver policy. */
  async start(): Promise<void> {
    const log = this.stream.log;
    const st = log.state();
    const cfg = this.config;
    switch (cfg.deliver_policy) {
      case "all":
        this.cursor = st.firstSeq - 1;
        break;
      case "new":
        this.cursor = st.lastSeq;
        break;
      case "last":
        this.cursor = Math.max(st.firstSeq, this.lastMatching()) - 1;
        if (this.lastMatching() === 0) this.cursor = st.lastSeq;
        break;
      case "by_start_sequence":
        this.cursor = Math.max(cfg.opt_start_seq ?? 1, st.firstSeq) - 1;
        break;
      case "by_start_time": {
        const m = await log.firstAtOrAfter(Date.parse(cfg.opt_start_time!));
        this.cursor = m === null ? st.lastSeq : m.seq - 1;
        break;
      }
      case "last_per_subject": {
        const seqs = this.filters.length === 0 ? log.lastPerSubject() : this.filters.flatMap((f) => log.lastPerSubject(f)).sort((a, b) => a - b);
        this.initial = seqs.length > 0 ? seqs : null;
        this.cursor = st.lastSeq;
        break;
      }
    }
    this.deliveredS = this.cursor;
    this.ackFloorS = this.cursor;
    this.armHeartbeat();
  }

  private lastMatching(): number {
    const log = this.stream.log;
    if (this.filters.length === 0) return log.state().lastSeq;
    let best = 0;
    for (const f of this.filters) {
      const seqs = log.lastPerSubject(f);
      if (seqs.length > 0) best = Math.max(best, seqs[seqs.length - 1]);
    }
    return best;
  }

  wants(subject: string): boolean {
    if (this.filters.length === 0) return true;
    for (const f of this.filters) if (subjectMatches(f, subject)) return true;
    return false;
  }

  /** True when this consumer has nothing left to do with `seq` (for interest retention). */
  hasAcked(seq: number): boolean {
    if (this.config.ack_policy === "none") return seq <= this.deliveredS;
    return seq <= this.ackFloorS || (seq <= this.deliveredS && !this.pending.has(seq));
  }

  /**
   * Stored messages this consumer has yet to deliver for the first time.
   * Counting from the log costs a walk over what is left, so the count is
   * kept up to date as messages are stored and delivered, and counted again
   * only after the log removed something (a delete, purge or eviction).
   */
  numPending(): number {
    const log = this.stream.log;
    if (this.pendingCount >= 0 && this.pendingRemovals === log.removals) return this.pendingCount;
    let n = this.initial?.length ?? 0;
    if (this.filters.length === 0) n += log.pendingAfter(this.cursor);
    else for (const f of this.filters) n += log.pendingAfter(this.cursor, f);
    this.pendingCount = n;
    this.pendingRemovals = log.removals;
    this.pendingHigh = log.state().lastSeq;
    return n;
  }

  /** The stream stored message `seq`, which this consumer wants. */
  onStored(seq: number): void {
    // A count taken after the log indexed `seq` (but before this call) already includes it.
    if (this.pendingCount >= 0 && seq > this.pendingHigh) {
      this.pendingCount++;
      this.pendingHigh = seq;
    }
    this.notify();
  }

  info(): Record<string, unknown> {
    const info: Record<string, unknown> = {
      stream_name: this.stream.config.name,
      name: this.name,
      created: this.created.toISOString(),
      config: this.config,
      delivered: { consumer_seq: this.dseq, stream_seq: this.deliveredS, last_active: this.lastDeliveryAt ? isoTime(this.lastDeliveryAt) : undefined },
      ack_floor: { consumer_seq: this.ackFloorC, stream_seq: this.ackFloorS },
      num_ack_pending: this.pending.size,
      num_redelivered: this.countRedelivered(),
      num_waiting: this.waiting.length,
      num_pending: this.numPending(),
      ts: new Date().toISOString(),
    };
    if (this.push) info.push_bound = this.host.hasInterest(this.config.deliver_subject!) || undefined;
    return info;
  }

  private countRedelivered(): number {
    let n = 0;
    for (const p of this.pending.values()) if (p.count > 1) n++;
    return n;
  }

  updateConfig(next: ConsumerConfig): void {
    this.config = next;
    this.filters = filtersOf(next);
    this.pendingCount = -1;
    this.armHeartbeat();
    this.notify();
  }

  // ---- delivery ----

  /** Something changed that may let delivery proceed: a new message, a pull request, an ack, interest. */
  notify(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    void this.pump();
  }

  private canDeliver(): boolean {
    if (this.push) return this.fcUnanswered < FLOW_CONTROL_WINDOW && this.host.hasInterest(this.config.deliver_subject!);
    this.dropGoneRequests();
    return this.waiting.length > 0;
  }

  private roomForNew(): number {
    const max = this.config.max_ack_pending;
    if (this.config.ack_policy === "none" || max <= 0) return READ_BATCH;
    return Math.min(READ_BATCH, max - this.pending.size);
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      do {
        this.again = false;
        while (!this.closed && this.canDeliver()) {
          if (this.redeliverQueue.length > 0) {
            const seq = this.redeliverQueue.shift()!;
            this.redeliverSet.delete(seq);
            const p = this.pending.get(seq);
            if (p === undefined) continue;
            const m = await this.stream.log.get(seq);
            if (m === null) {
              this.pending.delete(seq);
              this.advanceFloor();
              continue;
            }
            if (!this.canDeliver()) {
              this.requeue(seq);
              break;
            }
            this.deliver(m, p);
            continue;
          }
          const room = this.roomForNew();
          if (room <= 0) break;
          const batch = await this.readNew(room);
          if (batch.length === 0) break;
          for (let i = 0; i < batch.length && !this.closed; i++) {
            if (!this.canDeliver() || this.roomForNew() <= 0) break;
            if (this.config.replay_policy === "original") await this.replayPause(batch[i]);
            this.consume(batch[i]);
            this.deliver(batch[i], null);
          }
        }
        this.finishNoWaitRequests();
      } while (this.again && !this.closed);
    } finally {
      this.pumping = false;
    }
  }

  /**
   * The next messages to deliver for the first time, without consuming them:
   * `consume()` does that as each one is delivered, so what is read but not
   * delivered is simply read again.
   */
  private async readNew(room: number): Promise<StoredMessage[]> {
    const log = this.stream.log;
    while (this.initial !== null) {
      const out: StoredMessage[] = [];
      for (let i = 0; i < this.initial.length && out.length < room; i++) {
        const m = await log.get(this.initial[i]);
        if (m !== null) out.push(m);
      }
      if (out.length > 0) return out;
      this.initial = null;
    }
    const single = this.filters.length === 1 ? this.filters[0] : undefined;
    const maxBytes = this.push ? FLOW_CONTROL_WINDOW / 2 : undefined;
    for (;;) {
      const batch = await log.scan(this.cursor + 1, { filter: single, maxMessages: room, maxBytes });
      if (batch.length <= 0 || this.filters.length <= 1) return batch;
      const mine = batch.filter((m) => this.wants(m.subject));
      if (mine.length > 0) return mine;
      this.cursor = batch[batch.length - 1].seq;
    }
  }

  /** Marks `m` as taken from the initial list or the cursor, before its delivery is framed. */
  private consume(m: StoredMessage): void {
    if (this.pendingCount > 0) this.pendingCount--;
    if (this.initial !== null) {
      let i = 0;
      while (i < this.initial.length && this.initial[i] <= m.seq) i++;
      this.initial.splice(0, i);
      if (this.initial.length === 0) this.initial = null;
      return;
    }
    this.cursor = m.seq;
  }

  private async replayPause(m: StoredMessage): Promise<void> {
    if (this.lastReplayTime > 0 && m.time > this.lastReplayTime) {
      const wait = Math.min(m.time - this.lastReplayTime, 60_000);
      await new Promise((r) => setTimeout(r, wait));
    }
    this.lastReplayTime = m.time;
  }

  private deliver(m: StoredMessage, redelivery: Pending | null): void {
    const cfg = this.config;
    const now = Date.now();
    let count = 1;
    let dseq: number;
    if (redelivery !== null) {
      redelivery.count++;
      count = redelivery.count;
      dseq = ++this.dseq;
      redelivery.dseq = dseq;
      redelivery.ts = now;
      redelivery.deadline = now + this.ackWaitFor(count);
    } else {
      dseq = ++this.dseq;
      if (cfg.ack_policy !== "none") {
        this.pending.set(m.seq, { dseq, ts: now, deadline: now + this.ackWaitFor(1), count: 1 });
        this.armAckTimer();
      }
    }
    if (m.seq > this.deliveredS) this.deliveredS = m.seq;
    if (cfg.ack_policy === "none") {
      this.ackFloorS = this.deliveredS;
      this.ackFloorC = this.dseq;
    }
    this.lastDeliveryAt = now;
    const pendingAfter = this.numPending();
    const reply = `$JS.ACK.${this.stream.config.name}.${this.name}.${count}.${m.seq}.${dseq}.${m.time}000000.${pendingAfter}`;
    let headers = m.key === null ? m.headers : withKeyHeader(m.headers, m.key);
    let data = m.data;
    if (cfg.headers_only) {
      headers = appendHeaders(headers, [["Nats-Msg-Size", String(m.data.length)]]);
      data = EMPTY;
    }
    const size = (headers?.length ?? 0) + data.length + m.subject.length;
    if (this.push) {
      this.host.emit(cfg.deliver_subject!, m.subject, reply, headers, data);
      if (cfg.flow_control) {
        this.fcUnanswered += size;
        if (this.fcSubject === null && (this.fcUnanswered >= FLOW_CONTROL_WINDOW / 2 || pendingAfter === 0)) this.requestFlowControl();
      }
    } else {
      const req = this.waiting[0];
      this.host.emit(req.reply, m.subject, reply, headers, data);
      req.sent++;
      req.bytes += size;
      req.lastSent = now;
      if (req.sent >= req.batch || (req.maxBytes > 0 && req.bytes >= req.maxBytes)) this.finishRequest(0, null);
    }
    this.markDirty();
  }

  private ackWaitFor(count: number): number {
    const b = this.config.backoff;
    if (b && b.length > 0) return b[Math.min(count - 1, b.length - 1)] / NS_PER_MS;
    return this.config.ack_wait / NS_PER_MS;
  }

  private requeue(seq: number): void {
    if (this.redeliverSet.has(seq)) return;
    this.redeliverSet.add(seq);
    this.redeliverQueue.push(seq);
  }

  // ---- push: flow control and heartbeats ----

  private requestFlowControl(): void {
    this.fcCovered = this.fcUnanswered;
    this.fcSubject = `$JS.FC.${this.stream.config.name}.${this.name}.${++this.fcCounter}`;
    this.host.emit(this.config.deliver_subject!, this.config.deliver_subject!, this.fcSubject, encodeHeaders("100 FlowControl Request", []), EMPTY);
  }

  onFlowControlReply(subject: string): void {
    if (subject !== this.fcSubject) return;
    this.fcSubject = null;
    this.fcUnanswered = Math.max(0, this.fcUnanswered - this.fcCovered);
    this.fcCovered = 0;
    this.lastActive = Date.now();
    this.notify();
  }

  private armHeartbeat(): void {
    if (this.hbTimer !== null) clearInterval(this.hbTimer);
    this.hbTimer = null;
    const hb = this.config.idle_heartbeat;
    if (!this.push || !hb) return;
    const ms = Math.max(100, hb / NS_PER_MS);
    this.hbTimer = setInterval(() => {
      if (this.closed || !this.host.hasInterest(this.config.deliver_subject!)) return;
      if (Date.now() - this.lastDeliveryAt < ms) return;
      this.sendHeartbeat(this.config.deliver_subject!);
    }, ms);
    this.hbTimer.unref();
  }

  private sendHeartbeat(to: string): void {
    const pairs: Array<[string, string]> = [
      ["Nats-Last-Consumer", String(this.dseq)],
      ["Nats-Last-Stream", String(this.deliveredS)],
    ];
    if (this.fcSubject !== null) pairs.push(["Nats-Consumer-Stalled", this.fcSubject]);
    this.host.emit(to, to, "", encodeHeaders("100 Idle Heartbeat", pairs), EMPTY);
  }

  // ---- pull requests ----

  /** A MSG.NEXT request (or +NXT): `body` as JetStream defines it. */
  onNextRequest(reply: string, body: Buffer): void {
    if (this.closed) return;
    this.lastActive = Date.now();
    const status = (code: number, text: string): void => this.host.emit(reply, reply, "", encodeHeaders(`${code} ${text}`, []), EMPTY);
    if (this.push) return status(409, "Consumer is push based");
    let batch = 1;
    let expiresNs = 0;
    let maxBytes = 0;
    let noWait = false;
    let hbNs = 0;
    const text = body.toString("utf8").trim();
    if (text !== "") {
      if (/^\d+$/.test(text)) batch = Number(text);
      else {
        let r: Record<string, unknown>;
        try {
          r = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return status(400, "Bad Request");
        }
        if (typeof r !== "object" || r === null) return status(400, "Bad Request");
        const n = (k: string): number => (typeof r[k] === "number" ? (r[k] as number) : 0);
        batch = n("batch") || 1;
        expiresNs = n("expires");
        maxBytes = n("max_bytes");
        noWait = r.no_wait === true;
        hbNs = n("idle_heartbeat");
      }
    }
    const cfg = this.config;
    if (batch < 1) return status(400, "Bad Request");
    if (cfg.max_batch && batch > cfg.max_batch) return status(409, `Exceeded MaxRequestBatch of ${cfg.max_batch}`);
    if (cfg.max_expires && expiresNs > cfg.max_expires) return status(409, `Exceeded MaxRequestExpires of ${cfg.max_expires / NS_PER_MS}ms`);
    if (cfg.max_bytes && maxBytes > cfg.max_bytes) return status(409, `Exceeded MaxRequestMaxBytes of ${cfg.max_bytes}`);
    if (hbNs > 0 && expiresNs > 0 && hbNs * 2 > expiresNs) return status(400, "Bad Request - heartbeat value too large");
    if (noWait && expiresNs === 0 && this.numPending() + this.redeliverQueue.length === 0) return status(404, "No Messages");
    this.dropGoneRequests();
    if (this.waiting.length >= (cfg.max_waiting ?? 512)) return status(409, "Exceeded MaxWaiting");
    const now = Date.now();
    const req: PullRequest = {
      reply,
      batch,
      maxBytes,
      expiresAt: expiresNs > 0 ? now + expiresNs / NS_PER_MS : 0,
      noWait,
      heartbeatMs: hbNs / NS_PER_MS,
      sent: 0,
      bytes: 0,
      lastSent: now,
      timer: null,
    };
    if (req.expiresAt > 0 || req.heartbeatMs > 0) {
      // Ticks at half the heartbeat interval: a timer counts from the event loop's cached time, which
      // lags Date.now() on a busy loop, so a tick at the full interval could find it not yet due and
      // leave a gap of two intervals, which clients take for a dead server (two missed heartbeats).
      const period = Math.max(10, Math.min(req.heartbeatMs > 0 ? req.heartbeatMs / 2 : Infinity, req.expiresAt > 0 ? req.expiresAt - now : Infinity));
      req.timer = setInterval(() => this.tickRequest(req), Math.min(period, 1000));
      req.timer.unref();
    }
    this.waiting.push(req);
    this.notify();
  }

  private tickRequest(req: PullRequest): void {
    const now = Date.now();
    const i = this.waiting.indexOf(req);
    if (i < 0) {
      if (req.timer) clearInterval(req.timer);
      return;
    }
    if (req.expiresAt > 0 && now >= req.expiresAt - TIMER_SLACK_MS) {
      this.waiting.splice(i, 1);
      if (req.timer) clearInterval(req.timer);
      this.sendTimeout(req);
      return;
    }
    if (req.heartbeatMs > 0 && now - req.lastSent >= req.heartbeatMs / 2) {
      req.lastSent = now;
      this.host.emit(req.reply, req.reply, "", encodeHeaders("100 Idle Heartbeat", []), EMPTY);
    }
  }

  private sendTimeout(req: PullRequest): void {
    this.host.emit(
      req.reply,
      req.reply,
      "",
      encodeHeaders("408 Request Timeout", [
        ["Nats-Pending-Messages", String(req.batch - req.sent)],
        ["Nats-Pending-Bytes", String(req.maxBytes > 0 ? Math.max(0, req.maxBytes - req.bytes) : 0)],
      ]),
      EMPTY,
    );
  }

  /** Ends the head request; `status` is sent if given. */
  private finishRequest(code: number, text: string | null): void {
    const req = this.waiting.shift();
    if (req === undefined) return;
    if (req.timer) clearInterval(req.timer);
    if (text !== null) this.host.emit(req.reply, req.reply, "", encodeHeaders(`${code} ${text}`, []), EMPTY);
  }

  /** no_wait requests end when there is nothing more to give. */
  private finishNoWaitRequests(): void {
    if (this.push || this.closed) return;
    const available = this.numPending() + this.redeliverQueue.length;
    const blocked = this.roomForNew() <= 0 && this.redeliverQueue.length === 0;
    if (available > 0 && !blocked) return;
    for (let i = 0; i < this.waiting.length; ) {
      const req = this.waiting[i];
      if (req.noWait && (req.expiresAt === 0 || req.sent > 0)) {
        this.waiting.splice(i, 1);
        if (req.timer) clearInterval(req.timer);
        this.host.emit(req.reply, req.reply, "", encodeHeaders("404 No Messages", []), EMPTY);
      } else i++;
    }
  }

  private dropGoneRequests(): void {
    while (this.waiting.length > 0 && !this.host.hasInterest(this.waiting[0].reply)) {
      const req = this.waiting.shift()!;
      if (req.timer) clearInterval(req.timer);
    }
  }

  // ---- acknowledgements ----

  /**
   * An ack for the delivery `(sseq, dseq)`. Returns a promise when the caller
   * asked for confirmation (double ack): it settles once the ack is durable.
   */
  onAck(sseq: number, dseq: number, body: Buffer, reply: string): void {
    if (this.closed) return;
    this.lastActive = Date.now();
    const kind = body.length === 0 ? "+ACK" : body.toString("latin1", 0, Math.min(body.length, 5)).trimEnd();
    const p = this.pending.get(sseq);
    switch (kind) {
      case "+ACK":
      case "+NXT": {
        for (const seq of this.ackUpTo(sseq)) this.stream.acked(this, seq);
        if (kind === "+NXT" && reply !== "") {
          this.onNextRequest(reply, body.subarray(4));
          reply = "";
        }
        break;
      }
      case "-NAK": {
        if (p === undefined || p.dseq !== dseq) break;
        let delayMs = 0;
        const rest = body.toString("utf8", 4).trim();
        if (rest.startsWith("{")) {
          try {
            const d = (JSON.parse(rest) as { delay?: number }).delay;
            if (typeof d === "number" && d > 0) delayMs = d / NS_PER_MS;
          } catch {
            // a malformed delay is an immediate NAK
          }
        }
        if (delayMs > 0) {
          p.deadline = Date.now() + delayMs;
          this.armAckTimer();
        } else {
          this.requeue(sseq);
        }
        break;
      }
      case "+WPI":
        if (p !== undefined && p.dseq === dseq) {
          p.deadline = Date.now() + this.ackWaitFor(p.count);
          this.armAckTimer();
        }
        break;
      case "+TERM": {
        if (p !== undefined && p.dseq === dseq) {
          this.pending.delete(sseq);
          this.advanceFloor();
          this.stream.acked(this, sseq);
        }
        break;
      }
      default:
        return;
    }
    this.markDirty();
    if (reply !== "") {
      void this.flushState().then(() => this.host.emit(reply, reply, "", null, EMPTY));
    }
    this.notify();
  }

  /** Acknowledges one delivery (or, under ack all, everything up to it); the sequences acknowledged. */
  private ackUpTo(sseq: number): number[] {
    const done: number[] = [];
    if (this.config.ack_policy === "all") {
      for (const [seq] of this.pending) {
        if (seq > sseq) break;
        this.pending.delete(seq);
        done.push(seq);
      }
    } else if (this.pending.delete(sseq)) {
      done.push(sseq);
    }
    if (done.length > 0) this.advanceFloor();
    return done;
  }

  private advanceFloor(): void {
    const first = this.pending.keys().next();
    if (first.done) {
      this.ackFloorS = this.deliveredS;
      this.ackFloorC = this.dseq;
    } else {
      const p = this.pending.get(first.value)!;
      this.ackFloorS = first.value - 1;
      this.ackFloorC = p.dseq - 1;
    }
  }

  private armAckTimer(): void {
    if (this.ackTimer !== null || this.closed) return;
    const period = Math.max(10, Math.min(1000, this.ackWaitFor(1) / 4));
    this.ackTimer = setInterval(() => this.checkAckDeadlines(), period);
    this.ackTimer.unref();
  }

  private checkAckDeadlines(): void {
    if (this.pending.size === 0) {
      if (this.ackTimer) clearInterval(this.ackTimer);
      this.ackTimer = null;
      return;
    }
    const now = Date.now();
    const maxDeliver = this.config.max_deliver;
    let changed = false;
    for (const [seq, p] of this.pending) {
      if (p.deadline > now || this.redeliverSet.has(seq)) continue;
      if (maxDeliver > 0 && p.count >= maxDeliver) {
        this.pending.delete(seq);
        changed = true;
        continue;
      }
      this.requeue(seq);
    }
    if (changed) {
      this.advanceFloor();
      this.markDirty();
    }
    if (this.redeliverQueue.length > 0 || changed) this.notify();
  }

  /** The stream was purged: forget pending messages below its new first sequence. */
  purged(firstSeq: number): void {
    this.pendingCount = -1;
    if (firstSeq > 0) {
      for (const seq of [...this.pending.keys()]) if (seq < firstSeq) this.pending.delete(seq);
      if (this.cursor < firstSeq - 1) this.cursor = firstSeq - 1;
      if (this.deliveredS < firstSeq - 1) this.deliveredS = firstSeq - 1;
      if (this.initial !== null) {
        this.initial = this.initial.filter((s) => s >= firstSeq);
        if (this.initial.length === 0) this.initial = null;
      }
      this.advanceFloor();
    }
    this.markDirty();
    this.notify();
  }

  // ---- persistence ----

  private markDirty(): void {
    if (this.dir === null) return;
    this.dirty = true;
    if (this.saveTimer === null && this.saving === null) {
      this.saveTimer = setTimeout(() => {
        this.saveTimer = null;
        void this.save();
      }, 50);
      this.saveTimer.unref();
    }
  }

  /** Resolves once every state change made before the call is on disk. */
  flushState(): Promise<void> {
    if (this.dir === null) return Promise.resolve();
    return new Promise((resolve) => {
      this.saveWaiters.push(resolve);
      this.dirty = true;
      if (this.saveTimer !== null) {
        clearTimeout(this.saveTimer);
        this.saveTimer = null;
      }
      if (this.saving === null) void this.save();
    });
  }

  private async save(): Promise<void> {
    if (this.dir === null || this.saving !== null) return;
    while (this.dirty && !this.closed) {
      this.dirty = false;
      const waiters = this.saveWaiters.splice(0);
      const state: SavedState = {
        dseq: this.dseq,
        cursor: this.cursor,
        deliveredS: this.deliveredS,
        ackFloorS: this.ackFloorS,
        ackFloorC: this.ackFloorC,
        pending: [...this.pending].map(([s, p]) => [s, p.dseq, p.ts, p.count]),
      };
      if (this.initial !== null) state.initial = this.initial;
      this.saving = writeJsonDurably(join(this.dir, "state.json"), state).catch(() => undefined);
      await this.saving;
      this.saving = null;
      for (const w of waiters) w();
    }
    for (const w of this.saveWaiters.splice(0)) w();
  }

  async restore(): Promise<void> {
    this.armHeartbeat();
    if (this.dir === null) return;
    const s = (await readJson(join(this.dir, "state.json"))) as SavedState | undefined;
    if (s === undefined) return;
    this.dseq = s.dseq;
    this.cursor = s.cursor;
    this.deliveredS = s.deliveredS;
    this.ackFloorS = s.ackFloorS;
    this.ackFloorC = s.ackFloorC;
    const now = Date.now();
    for (const [seq, dseq, ts, count] of s.pending) {
      // Whatever was in flight when the server stopped is due again now.
      this.pending.set(seq, { dseq, ts, deadline: now, count });
    }
    if (s.initial) this.initial = s.initial;
    if (this.pending.size > 0) {
      for (const seq of this.pending.keys()) this.requeue(seq);
      this.armAckTimer();
    }
  }

  /** Stops timers and waiting requests; state already on disk stays. */
  async stop(): Promise<void> {
    if (this.dirty && this.dir !== null && !this.closed) await this.flushState();
    this.closed = true;
    if (this.ackTimer) clearInterval(this.ackTimer);
    if (this.hbTimer) clearInterval(this.hbTimer);
    if (this.saveTimer) clearTimeout(this.saveTimer);
    for (const r of this.waiting) if (r.timer) clearInterval(r.timer);
    this.waiting.length = 0;
    if (this.saving) await this.saving;
  }

  /** Tells waiting pull clients that the consumer is gone. */
  notifyDeleted(): void {
    for (const r of this.waiting) this.host.emit(r.reply, r.reply, "", encodeHeaders("409 Consumer Deleted", []), EMPTY);
  }

  /** Whether an ephemeral (or thresholded) consumer has been idle long enough to go. */
  isInactive(now: number): boolean {
    const t = this.config.inactive_threshold;
    if (!t) return false;
    if (this.push) {
      if (this.host.hasInterest(this.config.deliver_subject!)) {
        this.lastActive = now;
        return false;
      }
    } else if (this.waiting.length > 0) {
      this.lastActive = now;
      return false;
    }
    return now - this.lastActive > t / NS_PER_MS;
  }
}
