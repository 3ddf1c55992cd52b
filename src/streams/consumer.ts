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
import { PatternIndex } from "../subjects/pattern-index.js";
import type { StoredMessage } from "../store/log.js";
import { encodeHeaders, appendHeaders, withKeyHeader } from "./headers.js";
import { filtersOf, isPush, NS_PER_MS, type ConsumerConfig } from "./config.js";
import { isoTime, type ConsumerCopyGate, type Stream } from "./stream.js";
import { readJson, writeJsonDurably } from "../util/persist.js";
import { join } from "node:path";
import type { Producer } from "../core/broker.js";
import { goDuration } from "../util/duration.js";

/** How a consumer reaches clients; provided by the server that owns the streams. */
export interface DeliveryHost {
  /**
   * Routes to subscribers of `to`, presenting the message under `subject`.
   * A receiver whose backlog passes its stall mark calls `producer.stall()`:
   * deliveries are paced to the receiving connections as core publishers are.
   */
  emit(to: string, subject: string, reply: string, headers: Buffer | null, data: Buffer, producer?: Producer): void;
  hasInterest(subject: string): boolean;
  /** Whether a push consumer's deliver subject has the interest nats-server counts for it (see JetStream.hasDeliveryInterest). */
  hasDeliveryInterest(subject: string, group: string | undefined): boolean;
  onConsumerGone(c: Consumer): void;
  /** A write of the consumer's state failed (`err`; tried again each SAVE_RETRY_MS), or succeeded after such failures (null). */
  stateSaveFailed?(c: Consumer, err: Error | null): void;
  /** Told of what JetStream publishes advisories and metrics about. */
  readonly events?: ConsumerEvents;
}

/** One delivery as advisories describe it. */
export type Delivery = Readonly<Pick<Pending, "seq" | "dseq" | "count" | "ts">>;

export interface ConsumerEvents {
  /** An acknowledgement of `d` (for the sampled ack metric). */
  acked(c: Consumer, d: Delivery, now: number): void;
  naked(c: Consumer, d: Delivery): void;
  terminated(c: Consumer, d: Delivery): void;
  /** `d` reached max_deliver and will not be delivered again. */
  maxDeliveries(c: Consumer, d: Delivery): void;
}

interface Pending {
  seq: number;
  dseq: number;
  /** Delivery time (ms), for the ack wait. */
  ts: number;
  /** When it is due for redelivery (ms); meaningful while it is in the deadline heap. */
  deadline: number;
  count: number;
  /** Position in the deadline heap, -1 when not in it (queued for redelivery, or restored as due). */
  heapAt: number;
}

interface PullRequest {
  reply: string;
  /** Messages to deliver: at least one (nats-server delivers one for a batch of 0 or less). */
  batch: number;
  /** The batch as asked, which the pending count of a 408 or 409 counts down from (nats-server's `n`). */
  asked: number;
  maxBytes: number;
  expiresAt: number;
  noWait: boolean;
  heartbeatMs: number;
  sent: number;
  bytes: number;
  lastSent: number;
  timer: NodeJS.Timeout | null;
}

interface NextRequest {
  batch: number;
  expiresNs: number;
  maxBytes: number;
  noWait: boolean;
  hbNs: number;
}

/** Go's description of a JSON value its decoder could not put into a field, as in its error texts. */
function jsonKind(v: unknown): string {
  if (typeof v === "number") return `number ${v}`;
  if (Array.isArray(v)) return "array";
  return v === null ? "null" : typeof v === "boolean" ? "bool" : typeof v;
}

const NEXT_FIELDS: Record<string, "int" | "time.Duration" | "bool"> = {
  batch: "int",
  expires: "time.Duration",
  max_bytes: "int",
  no_wait: "bool",
  idle_heartbeat: "time.Duration",
};

/**
 * A pull request body as nats-server reads it: empty (one message), a JSON
 * object, or anything else read as a batch size (one message if it is not a
 * number). A field of the wrong type gives the decoder's error text, which
 * nats-server sends back as `400 Bad Request - <text>`.
 */
function parseNextRequest(body: Buffer): NextRequest | string {
  const out: NextRequest = { batch: 1, expiresNs: 0, maxBytes: 0, noWait: false, hbNs: 0 };
  const text = body.toString("utf8").trim();
  if (text === "") return out;
  if (text[0] !== "{") {
    if (/^[-+]?\d+$/.test(text)) out.batch = Number(text);
    return out;
  }
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    return (err as Error).message;
  }
  for (const [key, type] of Object.entries(NEXT_FIELDS)) {
    const v = r[key];
    if (v === undefined || v === null) continue;
    const ok = type === "bool" ? typeof v === "boolean" : typeof v === "number" && Number.isInteger(v) && Math.abs(v) < 2 ** 63;
    if (!ok) return `json: cannot unmarshal ${jsonKind(v)} into Go struct field JSApiConsumerGetNextRequest.${key} of type ${type}`;
  }
  if (typeof r.batch === "number") out.batch = r.batch;
  if (typeof r.expires === "number") out.expiresNs = r.expires;
  if (typeof r.max_bytes === "number") out.maxBytes = r.max_bytes;
  out.noWait = r.no_wait === true;
  if (typeof r.idle_heartbeat === "number") out.hbNs = r.idle_heartbeat;
  if (out.hbNs > 0 && out.hbNs * 2 > out.expiresNs) return "heartbeat value too large";
  return out;
}

/** `sample_freq` ("50%" or "50") as a percentage; the config check has refused anything else. */
function sampleFrequencyOf(cfg: ConsumerConfig): number {
  const f = cfg.sample_freq;
  return f === undefined ? 0 : Math.min(100, Number(f.endsWith("%") ? f.slice(0, -1) : f) || 0);
}

/** One delivery, framed before it is committed (see `frame`). */
interface Framed {
  reply: string;
  headers: Buffer | null;
  data: Buffer;
  size: number;
  pendingAfter: number;
}

/** What a pull request still wanted when it ended: the headers of its 408 and 409 statuses. */
function pendingHeaders(req: PullRequest): Array<[string, string]> {
  return [
    ["Nats-Pending-Messages", String(req.asked - req.sent)],
    ["Nats-Pending-Bytes", String(req.maxBytes > 0 ? Math.max(0, req.maxBytes - req.bytes) : 0)],
  ];
}

interface SavedState {
  dseq: number;
  cursor: number;
  deliveredS: number;
  ackFloorS: number;
  ackFloorC: number;
  /**
   * Stream sequence, consumer sequence, delivery time (ms), delivery count,
   * and when it falls due (ms; 0: due now, queued for redelivery). The due
   * time is what a NAK's delay or a progress ack (+WPI) set; a state written
   * before it was kept has four.
   */
  pending: Array<[number, number, number, number] | [number, number, number, number, number]>;
  initial?: number[];
  /** Sequences let go at max_deliver and not acknowledged since (see Consumer.maxedOut). */
  maxedOut?: number[];
}

/**
 * A consumer's state as a stream move carries it to the new leader
 * (stream-move.ts): what SavedState keeps, plus when each pending delivery
 * falls due, so that the new leader redelivers after what is left of its
 * ack wait rather than at once (as after a restart).
 */
export interface MovedState {
  dseq: number;
  cursor: number;
  deliveredS: number;
  ackFloorS: number;
  ackFloorC: number;
  initial?: number[];
  maxedOut?: number[];
  /** Time of the last delivery (ms), 0 if none: consumer info's `delivered.last_active`. */
  lastDelivery: number;
  /** Stream sequence, consumer sequence, delivery time (ms), delivery count, due in (ms, 0: due now); ascending by stream sequence. */
  pending: Array<[number, number, number, number, number]>;
}

/** A waiting pull request as a MSG.NEXT body for what it still wants: how a move hands it to the new leader. */
export interface HandedOverRequest {
  reply: string;
  body: Buffer;
}

/**
 * Push flow control is a window, as in nats-server: a request goes out once
 * half the window is unanswered, and delivery stops only when all of it is.
 * Stopping at every request instead drains the pipe once per round trip.
 */
const FLOW_CONTROL_WINDOW = 2 * 1024 * 1024;
/** Deliveries read per pass, and their bytes (at least one message is read): bounds the memory one consumer holds. */
const READ_BATCH = 256;
const READ_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);
/** A pull request's expiry is honoured this early: its timer may fire a few ms before Date.now() reaches it. */
const TIMER_SLACK_MS = 5;
/** How often a consumer whose delivery is held (Stream.consumersHeld) looks again. */
const HELD_RECHECK_MS = 500;
/**
 * Longest any of a consumer's timers is set for at once (pull expiries, ack
 * deadlines, heartbeats): Node runs a timer of more than 2^31-1 ms after 1 ms
 * instead, so a far deadline (an ack_wait, backoff or NAK delay of years, an
 * idle_heartbeat of as long) is reached by re-arming.
 */
const MAX_TIMER_MS = 60_000;
/** Up to this many filters, wants() tries each; past it, it asks an index of them. */
const FILTERS_TRIED_EACH = 16;

function expired(req: PullRequest, now: number): boolean {
  return req.expiresAt > 0 && now >= req.expiresAt - TIMER_SLACK_MS;
}

/**
 * Most sequences a consumer remembers as let go at max_deliver (for
 * num_redelivered); past it the oldest is forgotten. nats-server's map has
 * no bound; this one keeps a poisoned stream from growing a consumer's
 * memory and state file without end.
 */
const MAX_MAXED_OUT = 10_000;

/** Messages a deliver_policy last consumer starting over from a lost state reads back for its last one (beforeLastMatching). */
const LAST_MATCH_SCAN = 10_000;

/** How long after a failed write of a consumer's state it is tried again (a full disk would otherwise be retried at every change). */
const SAVE_RETRY_MS = 1000;

export class Consumer {
  private dseq = 0;
  /** Last stream sequence read from the log (the next read starts after it). */
  private cursor = 0;
  /** Highest stream sequence delivered. */
  private deliveredS = 0;
  private ackFloorS = 0;
  private ackFloorC = 0;
  private readonly pending = new Map<number, Pending>();
  /**
   * Stream sequences let go at max_deliver, not acknowledged since and still
   * stored: nats-server keeps them in its redelivery counts, so they count in
   * num_redelivered until a late ack (or ack all past them) or their removal
   * from the stream. In the order they were let go.
   */
  private readonly maxedOut = new Set<number>();
  /** The log's removal count when `pending` was last checked for messages gone from the stream. */
  private removalsSeen = -1;
  /** Stream sequences due for redelivery, in the order they became due. */
  private readonly redeliverQueue: number[] = [];
  private readonly redeliverSet = new Set<number>();
  /** For last_per_subject: the sequences to deliver before continuing from the cursor. */
  private initial: number[] | null = null;
  /** The last of `initial` delivered (0: none since this object was made), for info only. */
  private initialDelivered = 0;
  private readonly waiting: PullRequest[] = [];
  private pumping = false;
  private again = false;
  /** Set while a receiving connection's backlog is past its stall mark; cleared when it drains. */
  private stalled = false;
  /** Looks again whether delivery is still held (recheckHeld). */
  private heldTimer: NodeJS.Timeout | null = null;
  /** Unacknowledged deliveries by deadline (a binary min-heap): one timer, armed for the earliest. */
  private readonly deadlines: Pending[] = [];
  private ackTimer: NodeJS.Timeout | null = null;
  /** When `ackTimer` fires (ms). */
  private ackTimerAt = 0;
  private readonly pacer: Producer = { stall: (until) => this.stall(until) };
  /** The delivery being framed: one object, reused (framing and delivering happen in one synchronous step). */
  private readonly framed: Framed = { reply: "", headers: null, data: EMPTY, size: 0, pendingAfter: 0 };
  private hbTimer: NodeJS.Timeout | null = null;
  private fcSubject: string | null = null;
  private fcCounter = 0;
  /** Push bytes delivered and not yet covered by an answered flow-control request. */
  private fcUnanswered = 0;
  /** The part of `fcUnanswered` the outstanding request covers. */
  private fcCovered = 0;
  private lastDeliveryAt = 0;
  /** rate_limit_bps as a token bucket of bytes (push only): what may go now, and when it was last topped up. Null: no limit. */
  private rate: { bytesPerMs: number; burst: number; tokens: number; at: number } | null = null;
  /** When the push idle heartbeat last went (or was armed): the next one is due `idle_heartbeat` after it or the last delivery. */
  private lastHeartbeatAt = 0;
  private lastReplayTime = 0;
  lastActive = Date.now();
  private closed = false;
  private filters: string[] = [];
  /** The filters indexed by token when there are many: wants() asks it instead of trying each filter (see setFilters). */
  private filterIndex: PatternIndex<number> | null = null;
  /** The percentage of acks reported as ack metrics (`sample_freq`), 0 when off. */
  sampleFrequency: number;
  /** numPending() as last counted (-1: count again), and the log's removal count it was valid for. */
  private pendingCount = -1;
  private pendingRemovals = 0;
  /** The highest stream sequence the count accounts for. */
  private pendingHigh = 0;
  // Persistence: one write at a time, the next one carrying every change made meanwhile.
  private saving: Promise<boolean> | null = null;
  private dirty = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private readonly saveWaiters: Array<(written: boolean) => void> = [];
  /** Its state file was written (or read back): the directory exists, and a later write must find it there. */
  private stateWritten = false;

  constructor(
    readonly stream: Stream,
    readonly name: string,
    public config: ConsumerConfig,
    readonly created: Date,
    private readonly host: DeliveryHost,
    /** Where definition and state live; null for memory-only. */
    readonly dir: string | null,
  ) {
    this.setFilters(config);
    this.sampleFrequency = sampleFrequencyOf(config);
    this.setRate(config);
  }

  /**
   * A push consumer's rate_limit_bps, as nats-server applies it: a token
   * bucket of bytes filling at the rate, holding at most the stream's
   * max_msg_size (else the server's max_payload), that each delivery draws
   * its size from, waiting when it runs short.
   */
  private setRate(config: ConsumerConfig): void {
    const bps = config.rate_limit_bps ?? 0;
    if (bps <= 0 || !isPush(config)) {
      this.rate = null;
      return;
    }
    const max = this.stream.config.max_msg_size ?? 0;
    const burst = max > 0 ? max : this.stream.maxPayload;
    const bytesPerMs = bps / 8 / 1000;
    if (this.rate !== null && this.rate.bytesPerMs === bytesPerMs && this.rate.burst === burst) return;
    this.rate = { bytesPerMs, burst, tokens: burst, at: Date.now() };
  }

  /** Draws `size` bytes from the rate limit: how long (ms) to wait before the delivery goes, 0 for none. */
  private rateDelay(size: number): number {
    const r = this.rate;
    if (r === null) return 0;
    const now = Date.now();
    r.tokens = Math.min(r.burst, r.tokens + (now - r.at) * r.bytesPerMs);
    r.at = now;
    r.tokens -= size;
    return r.tokens >= 0 ? 0 : Math.ceil(-r.tokens / r.bytesPerMs);
  }

  /** Waits out the rate limit for a delivery of `m`; false if delivery may no longer go on after the wait. */
  private async ratePause(m: StoredMessage): Promise<boolean> {
    const wait = this.rateDelay(Buffer.byteLength(m.subject) + (m.headers?.length ?? 0) + m.data.length);
    if (wait <= 0) return true;
    await new Promise((r) => setTimeout(r, Math.min(wait, MAX_TIMER_MS)));
    return !this.closed && this.canDeliver();
  }

  /**
   * Takes the filters of `config`, indexed when there are more than a few: every
   * message stored and read is matched against them, and trying each of
   * 40,000 filter_subjects (one request's worth) made each publish to the
   * stream hold the event loop for 14 ms.
   */
  private setFilters(config: ConsumerConfig): void {
    this.filters = filtersOf(config);
    this.filterIndex = null;
    if (this.filters.length > FILTERS_TRIED_EACH) {
      const index = new PatternIndex<number>();
      this.filters.forEach((f, i) => index.add(f, i));
      this.filterIndex = index;
    }
  }

  get durable(): boolean {
    return this.config.durable_name !== undefined;
  }

  get push(): boolean {
    return isPush(this.config);
  }

  /**
   * Positions a consumer whose state was lost: by its deliver policy, but no
   * later than the first message stored since it was created, so that
   * nothing it may not have had is skipped (a deliver policy of new would
   * otherwise skip everything stored before the restart); what it had
   * already is delivered again, at least once rather than never.
   */
  private async startOver(): Promise<void> {
    await this.start();
    const policy = this.config.deliver_policy;
    // A start named by the stream (all, a sequence, a time) is where start() puts it whenever it runs: lowered, it would
    // give what the consumer never was to have (below its opt_start_seq).
    if (policy !== "new" && policy !== "last" && policy !== "last_per_subject") return;
    const log = this.stream.log;
    const since = await log.firstAtOrAfter(this.created.getTime());
    let at = since === null ? log.state().lastSeq : since.seq - 1;
    // Made with deliver_policy last, it started with the last message (of its filters) stored then.
    if (policy === "last") at = await this.beforeLastMatching(at);
    if (at >= this.cursor) return;
    // Delivered and acknowledged no further either: start() set both at its own, later, start. Left there, an ack floor
    // past the cursor says the messages in between were acknowledged, and on an interest or work queue stream the other
    // consumers' acks remove them before they come again.
    this.cursor = at;
    this.deliveredS = at;
    this.ackFloorS = at;
  }

  /**
   * The sequence before the last message at or below `at` this consumer
   * wants; `at` when there is none among the LAST_MATCH_SCAN before it (a
   * start that reads a whole large stream back would hold the consumer's
   * restart for minutes, for one message its first delivery most likely gave).
   */
  private async beforeLastMatching(at: number): Promise<number> {
    const log = this.stream.log;
    const first = Math.max(log.state().firstSeq, at - LAST_MATCH_SCAN + 1);
    // Read back one message at a time: only a consumer whose state was lost, once, at its start.
    for (let seq = at; seq >= first && seq > 0; seq--) {
      const m = await log.get(seq);
      if (m !== null && this.wants(m.subject)) return seq - 1;
    }
    return at;
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
        this.cursor = this.visibleEnd(st.lastSeq);
        break;
      case "last": {
        const last = this.stream.readerVisibility === null ? this.lastMatching() : await this.lastVisibleMatching();
        this.cursor = last === 0 ? this.visibleEnd(st.lastSeq) : Math.max(st.firstSeq, last) - 1;
        break;
      }
      case "by_start_sequence":
        this.cursor = Math.max(cfg.opt_start_seq ?? 1, st.firstSeq) - 1;
        break;
      case "by_start_time": {
        const m = await log.firstAtOrAfter(Date.parse(cfg.opt_start_time!));
        this.cursor = m === null ? st.lastSeq : m.seq - 1;
        break;
      }
      case "last_per_subject": {
        let seqs = this.filters.length === 0 ? log.lastPerSubject() : this.filters.flatMap((f) => log.lastPerSubject(f)).sort((a, b) => a - b);
        if (this.stream.readerVisibility !== null) seqs = await this.lastVisiblePerSubject(seqs);
        this.initial = seqs.length > 0 ? seqs : null;
        this.initialDelivered = 0;
        this.cursor = this.visibleEnd(st.lastSeq);
        break;
      }
    }
    this.deliveredS = this.cursor;
    this.ackFloorS = this.doneWithBelow();
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

  /** The last sequence readers may see, at most `lastSeq`: where a consumer starting at the end starts. */
  private visibleEnd(lastSeq: number): number {
    return Math.min(lastSeq, this.stream.readerStableSeq());
  }

  /** lastMatching() counting only what readers may see. */
  private async lastVisibleMatching(): Promise<number> {
    let best = 0;
    for (const f of this.filters.length === 0 ? [">"] : this.filters) {
      const m = await this.stream.lastVisible(0, f);
      if (m !== null) best = Math.max(best, m.seq);
    }
    return best;
  }

  /** Each subject's last sequence replaced by its last visible one (none if it has none), ascending. */
  private async lastVisiblePerSubject(seqs: number[]): Promise<number[]> {
    const out = new Set<number>();
    for (const seq of seqs) {
      if (this.stream.visible(0, seq)) {
        out.add(seq);
        continue;
      }
      const m = await this.stream.partitions[0].get(seq);
      const last = m === null ? null : await this.stream.lastVisible(0, m.subject);
      if (last !== null) out.add(last.seq);
    }
    return [...out].sort((a, b) => a - b);
  }

  wants(subject: string): boolean {
    if (this.filters.length === 0) return true;
    // Matched literally: a stored subject may hold a '*' or '>' token (published so), which intersecting would take for a wildcard.
    if (this.filterIndex !== null) return this.filterIndex.matches(subject);
    for (const f of this.filters) if (subjectMatches(f, subject)) return true;
    return false;
  }

  /** True when this consumer has nothing left to do with `seq` (for interest retention). */
  hasAcked(seq: number): boolean {
    // Still to be delivered from the start list of last_per_subject: below the cursor, and not done with at all.
    if (this.initial !== null && this.inInitial(seq)) return false;
    if (this.config.ack_policy === "none") return seq <= this.deliveredS;
    return seq <= this.ackFloorS || (seq <= this.deliveredS && !this.pending.has(seq));
  }

  /** Whether `seq` is in the start list still to deliver (ascending: searched by halves, it may hold a sequence per subject). */
  private inInitial(seq: number): boolean {
    const list = this.initial!;
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid] === seq) return true;
      if (list[mid] < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
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
    if (this.stream.readerVisibility !== null) n += this.visiblePendingAfter(this.cursor);
    else if (this.filters.length === 0) n += log.pendingAfter(this.cursor);
    else for (const f of this.filters) n += log.pendingAfter(this.cursor, f);
    this.pendingCount = n;
    this.pendingRemovals = log.removals;
    this.pendingHigh = log.state().lastSeq;
    return n;
  }

  /**
   * Stored messages after `after` that this consumer wants and readers may
   * see: the log's count up to the stable sequence, less the hidden ranges
   * in between (one count per range: counted again only when visibility
   * changes, see recount()).
   */
  private visiblePendingAfter(after: number): number {
    const log = this.stream.log;
    const v = this.stream.readerVisibility!;
    const upTo = Math.min(v.stableSeq(0), log.state().lastSeq);
    if (upTo <= after) return 0;
    const hidden = v.hiddenIn(0, after, upTo);
    let n = 0;
    for (const f of this.filters.length === 0 ? [undefined] : this.filters) {
      n += log.pendingAfter(after, f) - log.pendingAfter(upTo, f);
      for (const [from, to] of hidden) n -= log.pendingAfter(from - 1, f) - log.pendingAfter(to, f);
    }
    return n;
  }

  /** What readers may see of the stream changed: count pending again, and deliver what became visible. */
  recount(): void {
    this.pendingCount = -1;
    this.notify();
  }

  /** The stream stored message `seq`, which this consumer wants. */
  onStored(seq: number): void {
    // A count taken after the log indexed `seq` (but before this call) already includes it; one not visible yet is counted once it is.
    // One at or before the cursor (a start sequence still ahead of the stream) is not pending.
    if (this.pendingCount >= 0 && seq > this.pendingHigh && seq > this.cursor && (this.stream.readerVisibility === null || this.stream.visible(0, seq))) {
      this.pendingCount++;
      this.pendingHigh = seq;
    }
    this.notify();
  }

  info(): Record<string, unknown> {
    // A last_per_subject consumer keeps its cursor at the end while it delivers its start list; nats-server's cursor walks
    // the list, so it reports as delivered the last sequence it took from there (before any, the first's minus one).
    const deliveredS = this.initial !== null ? this.doneWithBelow() : this.deliveredS;
    const info: Record<string, unknown> = {
      stream_name: this.stream.config.name,
      name: this.name,
      created: this.created.toISOString(),
      config: this.config,
      delivered: { consumer_seq: this.dseq, stream_seq: deliveredS, last_active: this.lastDeliveryAt ? isoTime(this.lastDeliveryAt) : undefined },
      ack_floor: { consumer_seq: this.ackFloorC, stream_seq: this.ackFloorS },
      num_ack_pending: (this.dropRemovedPending(), this.pending.size),
      num_redelivered: this.countRedelivered(),
      num_waiting: (this.dropAllGoneRequests(), this.waiting.length),
      num_pending: this.numPending(),
      ts: new Date().toISOString(),
    };
    if (this.push) info.push_bound = this.deliveryInterest() || undefined;
    return info;
  }

  /** A push consumer delivers only while its deliver subject has the interest nats-server counts (a deliver_group's members, else plain subscribers). */
  private deliveryInterest(): boolean {
    return this.host.hasDeliveryInterest(this.config.deliver_subject!, this.config.deliver_group);
  }

  private countRedelivered(): number {
    let n = 0;
    for (const p of this.pending.values()) if (p.count > 1) n++;
    if (this.maxedOut.size > 0) {
      const log = this.stream.log;
      for (const seq of this.maxedOut) if (!log.has(seq)) this.maxedOut.delete(seq);
    }
    return n + this.maxedOut.size;
  }

  /** An ack (or termination) of `sseq`, or under ack all of everything up to it, ends its place among those let go at max_deliver. */
  private ackMaxedOut(sseq: number): void {
    if (this.maxedOut.size === 0) return;
    if (this.config.ack_policy !== "all") this.maxedOut.delete(sseq);
    else for (const seq of this.maxedOut) if (seq <= sseq) this.maxedOut.delete(seq);
  }

  updateConfig(next: ConsumerConfig): void {
    const prev = this.config;
    this.config = next;
    if (prev.ack_wait !== next.ack_wait || JSON.stringify(prev.backoff ?? []) !== JSON.stringify(next.backoff ?? [])) this.rescheduleAckWaits(prev);
    this.setFilters(next);
    this.sampleFrequency = sampleFrequencyOf(next);
    this.setRate(next);
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
    // Frozen for a move (stream-move.ts): the state copied to the new leader must not change, and the target's copy must not deliver.
    if (this.stalled || this.stream.frozen) return false;
    // Not led here, or led without the lease (a replicated stream): nothing goes out; looked at again later.
    if (this.stream.consumersHeld()) {
      this.recheckHeld();
      return false;
    }
    if (this.push) return this.fcUnanswered < FLOW_CONTROL_WINDOW && this.deliveryInterest();
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
        this.dropRemovedPending();
        while (!this.closed && this.canDeliver()) {
          if (this.redeliverQueue.length > 0) {
            const seq = this.redeliverQueue.shift()!;
            this.redeliverSet.delete(seq);
            const p = this.pending.get(seq);
            if (p === undefined) continue;
            const max = this.config.max_deliver;
            if (max > 0 && p.count >= max) {
              this.dropPending(p);
              continue;
            }
            const m = await this.stream.log.get(seq);
            if (m === null) {
              this.forget(p);
              continue;
            }
            if (!this.canDeliver() || (this.rate !== null && !(await this.ratePause(m)))) {
              if (this.pending.get(seq) === p && p.heapAt < 0) this.requeue(seq);
              break;
            }
            // The rate limit's wait let acks in: acked or terminated (gone from pending, and from a work queue), NAKed
            // (queued again, or due later) or gone from the stream meanwhile, it is not sent as it was read.
            if (this.rate !== null && (this.pending.get(seq) !== p || p.heapAt >= 0 || this.redeliverSet.has(seq) || !this.stream.log.has(seq))) continue;
            const out = this.frame(m, p.count + 1, this.numPending());
            if (!this.claim(out.size)) {
              this.requeue(seq);
              break;
            }
            this.deliver(m, p, out);
            continue;
          }
          const room = this.roomForNew();
          if (room <= 0) break;
          const batch = await this.readNew(room);
          if (batch.length === 0) break;
          for (let i = 0; i < batch.length && !this.closed; i++) {
            if (!this.canDeliver() || this.roomForNew() <= 0) break;
            if (this.config.replay_policy === "original") {
              await this.replayPause(batch[i]);
              if (!this.canDeliver()) break;
            }
            if (this.rate !== null) {
              if (!(await this.ratePause(batch[i]))) break;
              // The batch was read before the wait: a message purged or deleted meanwhile is not sent from it (nor the rest
              // of the batch); read again from the cursor, which skips what is gone.
              if (!this.stream.log.has(batch[i].seq)) break;
            }
            // Framed before it is taken: a message no waiting request has room for stays for the next one.
            const out = this.frame(batch[i], 1, Math.max(0, this.numPending() - 1));
            if (!this.claim(out.size)) break;
            this.consume(batch[i]);
            this.deliver(batch[i], null, out);
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
    if (this.stream.readerVisibility !== null) return this.readVisible(single, room);
    for (;;) {
      const batch = await log.scan(this.cursor + 1, { filter: single, maxMessages: room, maxBytes: READ_BYTES });
      if (batch.length <= 0 || this.filters.length <= 1) return batch;
      const mine = batch.filter((m) => this.wants(m.subject));
      if (mine.length > 0) return mine;
      this.cursor = batch[batch.length - 1].seq;
    }
  }

  /**
   * readNew() on a stream with visibility rules: nothing past the stable
   * sequence, no hidden sequence. A read that finds only hidden (or
   * unwanted) messages moves the cursor past them and reads on.
   */
  private async readVisible(single: string | undefined, room: number): Promise<StoredMessage[]> {
    const v = this.stream.readerVisibility!;
    for (;;) {
      const stable = v.stableSeq(0);
      if (this.cursor >= stable) return [];
      const batch = await this.stream.log.scan(this.cursor + 1, { filter: single, maxMessages: room, maxBytes: READ_BYTES });
      let end = batch.length;
      while (end > 0 && batch[end - 1].seq > stable) end--;
      if (end === 0) return [];
      const hidden = v.hiddenIn(0, this.cursor, batch[end - 1].seq);
      const mine: StoredMessage[] = [];
      for (let i = 0, h = 0; i < end; i++) {
        const seq = batch[i].seq;
        while (h < hidden.length && hidden[h][1] < seq) h++;
        if (h < hidden.length && hidden[h][0] <= seq) continue;
        if (this.filters.length > 1 && !this.wants(batch[i].subject)) continue;
        mine.push(batch[i]);
      }
      if (mine.length > 0) return mine;
      this.cursor = batch[end - 1].seq;
    }
  }

  /** Marks `m` as taken from the initial list or the cursor, before its delivery is framed. */
  private consume(m: StoredMessage): void {
    if (this.pendingCount > 0) this.pendingCount--;
    if (this.initial !== null) {
      let i = 0;
      while (i < this.initial.length && this.initial[i] <= m.seq) i++;
      this.initial.splice(0, i);
      this.initialDelivered = m.seq;
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

  /**
   * What the delivery of `m` (its `count`-th) will carry: ack subject, headers,
   * payload, and the size a pull request's max_bytes counts, which is
   * nats-server's: subject + ack subject + headers + payload.
   */
  private frame(m: StoredMessage, count: number, pendingAfter: number): Framed {
    const out = this.framed;
    out.reply = `$JS.ACK.${this.stream.config.name}.${this.name}.${count}.${m.seq}.${this.dseq + 1}.${m.time}000000.${pendingAfter}`;
    out.headers = m.key === null ? m.headers : withKeyHeader(m.headers, m.key);
    out.data = m.data;
    if (this.config.headers_only) {
      out.headers = appendHeaders(out.headers, [["Nats-Msg-Size", String(m.data.length)]]);
      out.data = EMPTY;
    }
    out.size = Buffer.byteLength(m.subject) + out.reply.length + (out.headers?.length ?? 0) + out.data.length;
    out.pendingAfter = pendingAfter;
    return out;
  }

  /**
   * For pull: whether the head waiting request has room for a delivery of
   * `size` bytes. A request whose max_bytes it would overrun ends, as in
   * nats-server, with `409 Message Size Exceeds MaxBytes` and the message
   * goes to the next request.
   */
  private claim(size: number): boolean {
    if (this.push) return true;
    for (;;) {
      this.dropGoneRequests();
      const req = this.waiting[0];
      if (req === undefined) return false;
      // Expired while its timer waits for a busy loop: it gets its timeout, not the message.
      if (expired(req, Date.now())) {
        this.waiting.shift();
        if (req.timer) clearTimeout(req.timer);
        this.sendTimeout(req);
        continue;
      }
      if (req.maxBytes <= 0 || size <= req.maxBytes - req.bytes) return true;
      this.waiting.shift();
      if (req.timer) clearTimeout(req.timer);
      this.host.emit(req.reply, req.reply, "", encodeHeaders("409 Message Size Exceeds MaxBytes", pendingHeaders(req)), EMPTY);
    }
  }

  private deliver(m: StoredMessage, redelivery: Pending | null, out: Framed): void {
    const cfg = this.config;
    const now = Date.now();
    const dseq = ++this.dseq;
    if (redelivery !== null) {
      redelivery.count++;
      redelivery.dseq = dseq;
      redelivery.ts = now;
      this.schedule(redelivery, now + this.ackWaitFor(redelivery.count));
    } else if (cfg.ack_policy !== "none") {
      const p: Pending = { seq: m.seq, dseq, ts: now, deadline: 0, count: 1, heapAt: -1 };
      this.pending.set(m.seq, p);
      this.schedule(p, now + this.ackWaitFor(1));
    }
    if (m.seq > this.deliveredS) this.deliveredS = m.seq;
    if (cfg.ack_policy === "none") {
      this.ackFloorS = this.doneWithBelow();
      this.ackFloorC = this.dseq;
    }
    this.lastDeliveryAt = now;
    // Delivered is done with, without an ack: under interest retention the stream drops it once every consumer is (no ack
    // would ever tell it so, and the stream would keep all it stores).
    if (cfg.ack_policy === "none") this.stream.acked(this, m.seq);
    if (this.push) {
      this.host.emit(cfg.deliver_subject!, m.subject, out.reply, out.headers, out.data, this.pacer);
      if (cfg.flow_control) {
        this.fcUnanswered += out.size;
        // Asked once half the window is unanswered, as nats-server asks: asking at every catch-up cost a live feed a round
        // trip per message.
        if (this.fcSubject === null && this.fcUnanswered >= FLOW_CONTROL_WINDOW / 2) this.requestFlowControl();
      }
    } else {
      const req = this.waiting[0];
      this.host.emit(req.reply, m.subject, out.reply, out.headers, out.data, this.pacer);
      req.sent++;
      req.bytes += out.size;
      req.lastSent = now;
      if (req.sent >= req.batch || (req.maxBytes > 0 && req.bytes >= req.maxBytes)) this.finishRequest(0, null);
      // Waiting requests take turns, a message each, as nats-server cycles its wait queue: filling the first one's batch
      // before the next gets anything would leave the other clients idle while one has a backlog.
      else if (this.waiting.length > 1) this.waiting.push(this.waiting.shift()!);
    }
    this.markDirty();
  }

  /**
   * A receiving connection is past its stall mark: deliver nothing more until
   * it drains (or closes). nats-server paces a consumer to its client the
   * same way, so a pull of more than max_pending bytes arrives whole instead
   * of cutting the client as a slow consumer.
   */
  private stall(until: NodeJS.EventEmitter): void {
    if (this.stalled || this.closed) return;
    this.stalled = true;
    const resume = (): void => {
      until.off("drain", resume);
      until.off("close", resume);
      this.stalled = false;
      this.notify();
    };
    until.once("drain", resume);
    until.once("close", resume);
  }

  private ackWaitFor(count: number, config: ConsumerConfig = this.config): number {
    const b = config.backoff;
    if (b && b.length > 0) return b[Math.min(count - 1, b.length - 1)] / NS_PER_MS;
    return config.ack_wait / NS_PER_MS;
  }

  /**
   * The ack wait (or backoff) changed: every pending delivery falls due by
   * the new one, as nats-server reckons a deadline from the delivery (or
   * what a NAK's delay or a progress ack made of it) plus the ack wait in
   * force. A lowered ack wait thus redelivers what is stuck now, not after
   * the wait it was given.
   */
  private rescheduleAckWaits(prev: ConsumerConfig): void {
    for (const p of [...this.deadlines]) this.schedule(p, p.deadline - this.ackWaitFor(p.count, prev) + this.ackWaitFor(p.count));
    this.armAckTimer();
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

  /**
   * A push consumer's idle heartbeat goes `idle_heartbeat` after the last
   * delivery or heartbeat, as nats-server resets its heartbeat timer on each
   * delivery: a fixed ticker that skips a tick too soon after a delivery
   * leaves gaps of up to twice the interval, which clients watching for
   * missed heartbeats take for a stalled consumer.
   */
  private armHeartbeat(): void {
    if (this.hbTimer !== null) clearTimeout(this.hbTimer);
    this.hbTimer = null;
    const hb = this.config.idle_heartbeat;
    if (!this.push || !hb) return;
    const ms = Math.max(100, hb / NS_PER_MS);
    this.lastHeartbeatAt = Date.now();
    const arm = (delay: number): void => {
      // Capped at MAX_TIMER_MS: a tick before the heartbeat is due only arms again.
      this.hbTimer = setTimeout(tick, Math.min(Math.max(1, delay), MAX_TIMER_MS));
      this.hbTimer.unref();
    };
    const tick = (): void => {
      this.hbTimer = null;
      if (this.closed) return;
      const now = Date.now();
      const due = Math.max(this.lastDeliveryAt, this.lastHeartbeatAt) + ms;
      // A timer may fire a few ms before Date.now() reaches its time.
      if (now < due - TIMER_SLACK_MS) return arm(due - now);
      this.lastHeartbeatAt = now;
      arm(ms);
      if (!this.deliveryInterest()) return;
      // A move's target holds a copy it does not lead yet: only the leader speaks to the client.
      if (this.stream.ledHere !== null && this.stream.ledHere[0] !== true) return;
      this.sendHeartbeat(this.config.deliver_subject!);
    };
    arm(ms);
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

  /** The last stream sequence this consumer delivered. */
  get lastDelivered(): number {
    return this.deliveredS;
  }

  /** A MSG.NEXT request (or +NXT): `body` as JetStream defines it. */
  onNextRequest(reply: string, body: Buffer): void {
    if (this.closed) return;
    this.lastActive = Date.now();
    const status = (code: number, text: string): void => this.host.emit(reply, reply, "", encodeHeaders(`${code} ${text}`, []), EMPTY);
    if (this.push) return status(409, "Consumer is push based");
    const parsed = parseNextRequest(body);
    if (typeof parsed === "string") return status(400, `Bad Request - ${parsed}`);
    const { batch, expiresNs, maxBytes, noWait, hbNs } = parsed;
    const cfg = this.config;
    if (cfg.max_batch && batch > cfg.max_batch) return status(409, `Exceeded MaxRequestBatch of ${cfg.max_batch}`);
    if (cfg.max_expires && expiresNs > cfg.max_expires) return status(409, `Exceeded MaxRequestExpires of ${goDuration(cfg.max_expires)}`);
    if (cfg.max_bytes && maxBytes > cfg.max_bytes) return status(409, `Exceeded MaxRequestMaxBytes of ${cfg.max_bytes}`);
    const now = Date.now();
    const req: PullRequest = {
      reply,
      // A batch of 0 or less is not refused: nats-server's waiting request delivers one message and ends.
      batch: Math.max(1, batch),
      asked: batch,
      maxBytes: Math.max(0, maxBytes),
      expiresAt: expiresNs !== 0 ? now + expiresNs / NS_PER_MS : 0,
      noWait,
      heartbeatMs: hbNs > 0 ? hbNs / NS_PER_MS : 0,
      sent: 0,
      bytes: 0,
      lastSent: now,
      timer: null,
    };
    // Already expired (a negative expires): nats-server ends it with a timeout before delivering anything.
    if (expiresNs < 0) return this.sendTimeout(req);
    if (noWait && expiresNs === 0 && this.numPending() + this.redeliverQueue.length === 0) return status(404, "No Messages");
    this.dropGoneRequests();
    // Full: first let go of every request whose client stopped listening, not only one at the head (nats-server's processWaiting).
    if (this.waiting.length >= (cfg.max_waiting ?? 512)) this.dropAllGoneRequests();
    if (this.waiting.length >= (cfg.max_waiting ?? 512)) return status(409, "Exceeded MaxWaiting");
    this.waiting.push(req);
    this.armRequest(req, now);
    this.notify();
  }

  /**
   * Arms the request's one timer for what is due next: its expiry, to the
   * millisecond (nats-server times a pull out when it expires; a late one
   * would hand messages to a client that stopped listening), or its next
   * heartbeat. Heartbeats go at half the interval: a timer counts from the
   * event loop's cached time, which lags Date.now() on a busy loop, so one at
   * the full interval could leave a gap of two, which clients take for a dead
   * server.
   */
  private armRequest(req: PullRequest, now: number): void {
    if (req.expiresAt === 0 && req.heartbeatMs === 0) return;
    let due = req.expiresAt > 0 ? req.expiresAt : Infinity;
    if (req.heartbeatMs > 0) due = Math.min(due, req.lastSent + Math.max(10, req.heartbeatMs / 2));
    // Capped: Node runs a timer of more than 2^31-1 ms at once; a far expiry is reached by re-arming.
    req.timer = setTimeout(() => this.tickRequest(req), Math.min(Math.max(1, due - now), MAX_TIMER_MS));
    req.timer.unref();
  }

  private tickRequest(req: PullRequest): void {
    req.timer = null;
    const i = this.waiting.indexOf(req);
    if (i < 0) return;
    const now = Date.now();
    if (expired(req, now)) {
      this.waiting.splice(i, 1);
      this.sendTimeout(req);
      return;
    }
    if (req.heartbeatMs > 0 && now - req.lastSent >= req.heartbeatMs / 2) {
      req.lastSent = now;
      this.sendHeartbeat(req.reply);
    }
    this.armRequest(req, now);
  }

  private sendTimeout(req: PullRequest): void {
    this.host.emit(req.reply, req.reply, "", encodeHeaders("408 Request Timeout", pendingHeaders(req)), EMPTY);
  }

  /** Ends the head request; `status` is sent if given. */
  private finishRequest(code: number, text: string | null): void {
    const req = this.waiting.shift();
    if (req === undefined) return;
    if (req.timer) clearTimeout(req.timer);
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
        if (req.timer) clearTimeout(req.timer);
        this.host.emit(req.reply, req.reply, "", encodeHeaders("404 No Messages", []), EMPTY);
      } else i++;
    }
  }

  /**
   * Drops every waiting request whose reply subject has no interest left,
   * wherever it waits. Delivery looks only at the head (dropGoneRequests): a
   * gone request behind a live one would otherwise hold a max_waiting slot,
   * count in num_waiting and keep an ephemeral consumer alive for ever.
   */
  private dropAllGoneRequests(): void {
    for (let i = 0; i < this.waiting.length; ) {
      const req = this.waiting[i];
      if (this.host.hasInterest(req.reply)) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      if (req.timer) clearTimeout(req.timer);
    }
  }

  private dropGoneRequests(): void {
    while (this.waiting.length > 0 && !this.host.hasInterest(this.waiting[0].reply)) {
      const req = this.waiting.shift()!;
      if (req.timer) clearTimeout(req.timer);
    }
  }

  // ---- acknowledgements ----

  /**
   * An ack for the delivery `(sseq, dseq)`. When the caller asked for
   * confirmation (double ack), the reply goes out once the ack is durable.
   */
  onAck(sseq: number, dseq: number, body: Buffer, reply: string): void {
    if (this.closed) return;
    this.lastActive = Date.now();
    const kind = body.length === 0 ? "+ACK" : body.toString("latin1", 0, Math.min(body.length, 5)).trimEnd();
    // An ack of a delivery this consumer never made: another leader's, made after the copy of the consumers this node took
    // over with, whose message this consumer delivers again. Not applied (acking past what was delivered would skip
    // messages) and, above all, not confirmed: a confirmation would promise an ack the consumer's state does not hold.
    // nats-server drops such an ack without a reply too (a termination of one is not confirmed either: it comes again).
    if ((kind === "+ACK" || kind === "+NXT" || kind === "+TERM") && !(sseq <= this.deliveredS)) {
      if (kind === "+NXT" && reply !== "") this.onNextRequest(reply, body.subarray(4));
      return;
    }
    const p = this.pending.get(sseq);
    const current = p !== undefined && p.dseq === dseq;
    switch (kind) {
      case "+ACK":
      case "+NXT": {
        if (current) this.host.events?.acked(this, p!, Date.now());
        for (const seq of this.ackUpTo(sseq)) this.stream.acked(this, seq);
        this.ackMaxedOut(sseq);
        if (kind === "+NXT" && reply !== "") {
          this.onNextRequest(reply, body.subarray(4));
          reply = "";
        }
        break;
      }
      case "-NAK": {
        if (p === undefined || !current) break;
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
        this.host.events?.naked(this, p);
        if (delayMs > 0) this.schedule(p, Date.now() + delayMs);
        else {
          this.unschedule(p);
          this.requeue(sseq);
        }
        break;
      }
      case "+WPI":
        if (p !== undefined && current && p.heapAt >= 0) this.schedule(p, Date.now() + this.ackWaitFor(p.count));
        break;
      case "+TERM": {
        if (p !== undefined && current) this.host.events?.terminated(this, p);
        if (this.config.ack_policy === "all") {
          // nats-server takes a termination as an ack: under ack all, of everything up to it too.
          for (const seq of this.ackUpTo(sseq)) this.stream.acked(this, seq);
        } else if (p !== undefined && current) {
          this.forget(p);
          this.stream.acked(this, sseq);
        }
        this.ackMaxedOut(sseq);
        break;
      }
      default:
        // A body nats-server does not know changes nothing, but a double ack of it is answered there all the same.
        if (reply !== "") this.host.emit(reply, reply, "", null, EMPTY);
        return;
    }
    this.markDirty();
    if (reply !== "") {
      // Read now: if the leadership ends while the state is written, the ack is not confirmed as unreplicated.
      const gate = this.stream.consumerCopyGate;
      // Not written (the disk refused it): not confirmed, as nats-server confirms nothing its consumer's store refused. A
      // leader that restarts reads its own state back: an ack confirmed without it would be lost there.
      void this.flushState().then((written) => {
        if (written) this.confirmAck(reply, gate);
      });
    }
    this.notify();
  }

  /** Replies to a double ack once it is durable here and, on a replicated stream, in the in-sync followers' copies. */
  private confirmAck(reply: string, gate: ConsumerCopyGate | null): void {
    if (gate === null) this.host.emit(reply, reply, "", null, EMPTY);
    else gate(() => this.host.emit(reply, reply, "", null, EMPTY));
  }

  /** Acknowledges one delivery (or, under ack all, everything up to it); the sequences acknowledged. */
  private ackUpTo(sseq: number): number[] {
    const done: number[] = [];
    if (this.config.ack_policy === "all") {
      for (const [seq, p] of this.pending) {
        if (seq > sseq) break;
        this.pending.delete(seq);
        this.unschedule(p);
        done.push(seq);
      }
    } else {
      const p = this.pending.get(sseq);
      if (p !== undefined) {
        this.pending.delete(sseq);
        this.unschedule(p);
        done.push(sseq);
      }
    }
    if (done.length > 0) this.advanceFloor();
    return done;
  }

  /** Drops a pending delivery that will never be acknowledged (gone from the stream, terminated). */
  private forget(p: Pending): void {
    this.pending.delete(p.seq);
    this.unschedule(p);
    this.advanceFloor();
    this.markDirty();
  }

  /**
   * A pending delivery whose message left the stream (deleted, purged,
   * evicted by a limit) can never be acknowledged: nats-server ends it as a
   * TERM (with the advisory), so it no longer counts in num_ack_pending nor
   * against max_ack_pending, and the ack floor moves past it. Looked for
   * only when the log has removed something since the last look.
   */
  private dropRemovedPending(): void {
    const log = this.stream.log;
    if (this.removalsSeen === log.removals || this.pending.size === 0) return;
    this.removalsSeen = log.removals;
    let dropped = false;
    for (const p of this.pending.values()) {
      if (log.has(p.seq)) continue;
      this.pending.delete(p.seq);
      this.unschedule(p);
      this.host.events?.terminated(this, p);
      dropped = true;
    }
    if (!dropped) return;
    this.advanceFloor();
    this.markDirty();
  }

  /** A delivery reached max_deliver: it is let go, and the advisory says so. */
  private dropPending(p: Pending): void {
    this.forget(p);
    if (this.maxedOut.size >= MAX_MAXED_OUT) this.maxedOut.delete(this.maxedOut.values().next().value!);
    this.maxedOut.add(p.seq);
    this.host.events?.maxDeliveries(this, p);
  }

  private advanceFloor(): void {
    const first = this.pending.keys().next();
    if (first.done) {
      this.ackFloorS = this.doneWithBelow();
      this.ackFloorC = this.dseq;
    } else {
      const p = this.pending.get(first.value)!;
      this.ackFloorS = first.value - 1;
      this.ackFloorC = p.dseq - 1;
    }
  }

  /**
   * How far the ack floor may go with nothing pending: the delivered end, but
   * while a last_per_subject start list is delivered only to the last taken
   * from it (before any, below its first). The cursor waits at the end
   * meanwhile: a floor there said the list's deliveries not yet acknowledged
   * were, and on an interest stream another consumer's ack removed them.
   */
  private doneWithBelow(): number {
    if (this.initial === null) return this.deliveredS;
    return Math.min(this.deliveredS, this.initialDelivered || this.initial[0] - 1);
  }

  // ---- redelivery deadlines: a min-heap of pending deliveries and one timer for the earliest ----

  /** (Re)places `p` in the heap with a new deadline and arms the timer if it is now the earliest. */
  private schedule(p: Pending, deadline: number): void {
    p.deadline = deadline;
    const h = this.deadlines;
    if (p.heapAt < 0) {
      p.heapAt = h.length;
      h.push(p);
    }
    this.siftUp(p.heapAt);
    this.siftDown(p.heapAt);
    if (h[0] === p) this.armAckTimer();
  }

  private unschedule(p: Pending): void {
    const i = p.heapAt;
    if (i < 0) return;
    const h = this.deadlines;
    const last = h.pop()!;
    p.heapAt = -1;
    if (last !== p) {
      h[i] = last;
      last.heapAt = i;
      this.siftUp(i);
      this.siftDown(last.heapAt);
    }
  }

  private siftUp(i: number): void {
    const h = this.deadlines;
    const p = h[i];
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (h[up].deadline <= p.deadline) break;
      h[i] = h[up];
      h[i].heapAt = i;
      i = up;
    }
    h[i] = p;
    p.heapAt = i;
  }

  private siftDown(i: number): void {
    const h = this.deadlines;
    const p = h[i];
    const n = h.length;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1].deadline < h[c].deadline) c++;
      if (h[c].deadline >= p.deadline) break;
      h[i] = h[c];
      h[i].heapAt = i;
      i = c;
    }
    h[i] = p;
    p.heapAt = i;
  }

  /** Arms the timer for the earliest deadline, unless it is already armed for it or sooner. */
  private armAckTimer(): void {
    if (this.closed || this.deadlines.length === 0) return;
    const at = this.deadlines[0].deadline;
    if (this.ackTimer !== null) {
      if (this.ackTimerAt <= at) return;
      clearTimeout(this.ackTimer);
    }
    this.ackTimerAt = at;
    // Capped (MAX_TIMER_MS): onAckTimer re-arms for a deadline it has not reached.
    this.ackTimer = setTimeout(this.onAckTimer, Math.min(Math.max(1, at - Date.now()), MAX_TIMER_MS));
    this.ackTimer.unref();
  }

  private readonly onAckTimer = (): void => {
    this.ackTimer = null;
    // Held (see canDeliver): nothing falls due here, no delivery count grows; the deadlines wait for the hold to end.
    if (this.stream.consumersHeld()) return this.recheckHeld();
    const now = Date.now();
    const max = this.config.max_deliver;
    const h = this.deadlines;
    const due: Pending[] = [];
    // A timer may fire a little before Date.now() reaches its time (it counts from the loop's cached clock): re-armed then.
    while (h.length > 0 && h[0].deadline <= now) {
      const p = h[0];
      this.unschedule(p);
      due.push(p);
    }
    // What fell due together goes out in stream order, as nats-server sorts its expired deliveries.
    due.sort((a, b) => a.seq - b.seq);
    // Frozen for a move: nothing is let go (the state is being copied); delivery, once it resumes, drops what reached max_deliver.
    const frozen = this.stream.frozen;
    for (const p of due) {
      if (max > 0 && p.count >= max && !frozen) this.dropPending(p);
      else this.requeue(p.seq);
    }
    this.armAckTimer();
    if (due.length > 0) this.notify();
  };

  /** The stream was purged: forget pending messages below its new first sequence. */
  purged(firstSeq: number): void {
    this.pendingCount = -1;
    if (firstSeq > 0) {
      for (const [seq, p] of [...this.pending]) {
        if (seq >= firstSeq) continue;
        this.pending.delete(seq);
        this.unschedule(p);
      }
      for (const seq of this.maxedOut) if (seq < firstSeq) this.maxedOut.delete(seq);
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

  /** State changes so far (deliveries, acks, moves of the floor): a replicated stream's followers copy consumers only when it moved. */
  changes = 0;

  private markDirty(): void {
    this.changes++;
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

  /**
   * Resolves true once every state change made before the call is on disk;
   * false if the write failed (the change is written again later, with the
   * next change or SAVE_RETRY_MS on).
   */
  flushState(): Promise<boolean> {
    if (this.dir === null) return Promise.resolve(true);
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

  /** The last write of the state failed (stateSaveFailed told). */
  private saveFailing = false;

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
        pending: [...this.pending].map(([s, p]) => [s, p.dseq, p.ts, p.count, p.heapAt >= 0 ? p.deadline : 0]),
      };
      if (this.initial !== null) state.initial = this.initial;
      if (this.maxedOut.size > 0) state.maxedOut = [...this.maxedOut];
      let failure: Error | null = null;
      // Its directory is made by the first write (a new consumer's); made again later, it would hide that it was removed.
      this.saving = writeJsonDurably(join(this.dir, "state.json"), state, { createDir: !this.stateWritten }).then(
        () => true,
        (err: Error) => ((failure = err), false),
      );
      const written = await this.saving;
      this.saving = null;
      if (written) this.stateWritten = true;
      for (const w of waiters) w(written);
      // Told, so a disk that keeps refusing the consumer's state is seen (its acks would be lost to a restart).
      if (failure !== null) {
        this.saveFailing = true;
        this.host.stateSaveFailed?.(this, failure);
      } else if (this.saveFailing) {
        this.saveFailing = false;
        this.host.stateSaveFailed?.(this, null);
      }
      if (!written) {
        // Still to be written: again in a while, not at once (a full disk would keep it spinning). Later waiters wait for it.
        this.dirty = true;
        if (!this.closed && this.saveTimer === null) {
          this.saveTimer = setTimeout(() => {
            this.saveTimer = null;
            void this.save();
          }, SAVE_RETRY_MS);
          this.saveTimer.unref();
        }
        return;
      }
    }
    for (const w of this.saveWaiters.splice(0)) w(!this.dirty);
  }

  async restore(): Promise<void> {
    this.armHeartbeat();
    if (this.dir === null) return;
    const s = (await readJson(join(this.dir, "state.json"))) as SavedState | undefined;
    this.stateWritten = true; // restored from its directory, which holds its meta.json at least
    // Written at creation, before the configuration: absent, it was lost (or set aside damaged: JetStream.checkConsumerState).
    if (s === undefined) return this.startOver();
    this.dseq = s.dseq;
    this.cursor = s.cursor;
    this.deliveredS = s.deliveredS;
    this.ackFloorS = s.ackFloorS;
    this.ackFloorC = s.ackFloorC;
    const now = Date.now();
    for (const [seq, dseq, ts, count, saved] of s.pending) {
      // Due when it was due before the restart (its ack wait, or what a NAK's delay or a progress ack made of it), as
      // nats-server keeps the time a NAK's delay or +WPI set: its client may still be working on it and ack it once
      // reconnected. At most that long from now, whatever the clock did meanwhile.
      const wait = this.ackWaitFor(count);
      const due = saved === undefined ? Math.min(ts + wait, now + wait) : Math.min(saved, now + Math.max(wait, saved - ts));
      const p: Pending = { seq, dseq, ts, deadline: now, count, heapAt: -1 };
      this.pending.set(seq, p);
      if (due > now) this.schedule(p, due);
      else this.requeue(seq);
    }
    if (s.initial) this.initial = s.initial;
    if (s.maxedOut) for (const seq of s.maxedOut) this.maxedOut.add(seq);
  }

  /** The state a move carries to the new leader; taken while the stream is frozen, so it does not change after. */
  movedState(now: number): MovedState {
    const pending: MovedState["pending"] = [];
    // A delivery out of the deadline heap is queued for redelivery: due now.
    for (const [seq, p] of this.pending) pending.push([seq, p.dseq, p.ts, p.count, p.heapAt >= 0 ? Math.max(0, p.deadline - now) : 0]);
    const out: MovedState = {
      dseq: this.dseq,
      cursor: this.cursor,
      deliveredS: this.deliveredS,
      ackFloorS: this.ackFloorS,
      ackFloorC: this.ackFloorC,
      lastDelivery: this.lastDeliveryAt,
      pending,
    };
    if (this.initial !== null) out.initial = [...this.initial];
    if (this.maxedOut.size > 0) out.maxedOut = [...this.maxedOut];
    return out;
  }

  /** Takes the state a move carried (instead of start()): pending deliveries fall due when they would have on the old leader. */
  adoptMovedState(s: MovedState, now: number): void {
    this.dseq = s.dseq;
    this.cursor = s.cursor;
    this.deliveredS = s.deliveredS;
    this.ackFloorS = s.ackFloorS;
    this.ackFloorC = s.ackFloorC;
    this.lastDeliveryAt = s.lastDelivery;
    if (s.initial !== undefined && s.initial.length > 0) this.initial = [...s.initial];
    if (s.maxedOut !== undefined) for (const seq of s.maxedOut) this.maxedOut.add(seq);
    for (const [seq, dseq, ts, count, dueIn] of s.pending) {
      const p: Pending = { seq, dseq, ts, deadline: now, count, heapAt: -1 };
      this.pending.set(seq, p);
      if (dueIn > 0) this.schedule(p, now + dueIn);
      else this.requeue(seq);
    }
    this.armHeartbeat();
    this.markDirty();
  }

  /**
   * The waiting pull requests, taken from this consumer (its stream moved
   * away): each as the MSG.NEXT request that asks the new leader for what
   * it still wants, its expiry counted from now. One already expired gets
   * its timeout here instead.
   */
  handOverWaiting(now: number): HandedOverRequest[] {
    const out: HandedOverRequest[] = [];
    for (const r of this.waiting.splice(0)) {
      if (r.timer) clearTimeout(r.timer);
      const left = r.expiresAt > 0 ? r.expiresAt - now : 0;
      if (r.expiresAt > 0 && left <= TIMER_SLACK_MS) {
        this.sendTimeout(r);
        continue;
      }
      const next: Record<string, unknown> = { batch: r.batch - r.sent };
      if (r.maxBytes > 0) next.max_bytes = Math.max(1, r.maxBytes - r.bytes);
      if (left > 0) next.expires = Math.round(left * NS_PER_MS);
      if (r.noWait) next.no_wait = true;
      if (r.heartbeatMs > 0) next.idle_heartbeat = Math.min(Math.round(r.heartbeatMs * NS_PER_MS), left > 0 ? Math.floor((left * NS_PER_MS) / 2) : Infinity);
      out.push({ reply: r.reply, body: Buffer.from(JSON.stringify(next)) });
    }
    return out;
  }

  /** While delivery is held, one timer looks again every HELD_RECHECK_MS; once released, due redeliveries and what waits go out. */
  private recheckHeld(): void {
    if (this.heldTimer !== null || this.closed) return;
    this.heldTimer = setTimeout(() => {
      this.heldTimer = null;
      if (this.closed) return;
      if (this.stream.consumersHeld()) return this.recheckHeld();
      this.armAckTimer();
      this.notify();
    }, HELD_RECHECK_MS);
    this.heldTimer.unref();
  }

  /** Stops timers and waiting requests; state already on disk stays. */
  async stop(): Promise<void> {
    if (this.dirty && this.dir !== null && !this.closed) await this.flushState();
    this.closed = true;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.heldTimer) clearTimeout(this.heldTimer);
    if (this.hbTimer) clearTimeout(this.hbTimer);
    if (this.saveTimer) clearTimeout(this.saveTimer);
    for (const r of this.waiting) if (r.timer) clearTimeout(r.timer);
    this.waiting.length = 0;
    if (this.saving) await this.saving;
    // Nothing is written after the stop: whoever still waits for a write is told it was not made.
    for (const w of this.saveWaiters.splice(0)) w(false);
  }

  /**
   * Ends every waiting pull request with its 408 and what it still wanted
   * (Nats-Pending-Messages/Bytes): this node stopped leading the stream, and
   * its clients ask again, of the new leader, as after an expiry.
   */
  endWaiting(): void {
    for (const r of this.waiting.splice(0)) {
      if (r.timer) clearTimeout(r.timer);
      this.sendTimeout(r);
    }
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
      if (this.deliveryInterest()) {
        this.lastActive = now;
        return false;
      }
    } else if ((this.dropAllGoneRequests(), this.waiting.length > 0)) {
      this.lastActive = now;
      return false;
    }
    return now - this.lastActive > t / NS_PER_MS;
  }
}
