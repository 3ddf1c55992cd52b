/**
 * Replication of one stream partition, Kafka's way (docs/CLUSTER.md,
 * "Replication"): the leader appends, followers fetch from it, and the high
 * watermark marks what every in-sync replica (ISR) has durably stored.
 *
 * Transport-agnostic: requests and answers are bytes (`ReplicaLeader.serve`
 * answers one, `ReplicaTransport.request` sends one), so the routes'
 * internal requests (`ClusterApi.request`, `$NG.` subjects) carry them
 * later, and tests carry them in process. Not wired into streams yet.
 *
 * - A follower fetch `{ from, epoch }` is also its acknowledgement: it has
 *   everything below `from` on disk (it fetches again only once its
 *   appends' callbacks came, which under sync `always` means fsynced). The
 *   answer carries the move's copy items (copy-batch.ts: runs and Kafka
 *   batches whole, with sequences and times), the leader's high watermark
 *   and log start, and the leader-epoch entries covering what it sends.
 * - With nothing new the leader holds the fetch up to `maxWaitMs` and
 *   answers as soon as an append lands (`appended`), as Kafka's replica
 *   fetch does.
 * - A follower first asks where the last epoch it shares with the leader
 *   ends (`endOf`, Kafka's OffsetForLeaderEpoch, KIP-101/279) and truncates
 *   its log and epoch checkpoint there, so replicas never diverge: what it
 *   cuts was never acknowledged.
 * - The leader's callers wait for the high watermark with
 *   `whenReplicated(seq, cb)`: a queue ordered by sequence, no promise per
 *   message.
 *
 * Not built here: operations other than appends (deletes, purges, limits),
 * the ISR and epochs in etcd (the caller decides with `lagging` and
 * `readyToJoin` and applies with `setIsr`), and the lease check before
 * acknowledging.
 */

import { UNDEFINED_EPOCH, type EpochEntry, type LeaderEpochs } from "../store/leader-epochs.js";
import type { MessageLog, StoredItem } from "../store/log.js";
import { appendCopy, appendItems, decodeBatch, EMPTY_BATCH_BYTES, encodeBatch, encodedSize, itemEnd, readCopy } from "./copy-batch.js";

/** One fetch answer's records at most (at least one item is sent, a Kafka batch whole): below a route's default max payload, as a move's copy. */
export const FETCH_BYTES = 256 * 1024;
const FETCH_MESSAGES = 1024;
/** The longest a leader holds a fetch with nothing new. */
export const MAX_WAIT_MS = 5000;
/** Fetches held at once by one partition's leader: one per follower, and up to 5 replicas; more are answered at once. */
export const MAX_PARKED = 16;
/** Callers waiting for the high watermark: past it `whenReplicated` refuses (the caller refuses the write, retryably). */
export const MAX_WAITERS = 65_536;
/** What a follower adds to its wait for an answer beyond the leader's hold. */
const ANSWER_MARGIN_MS = 2000;
/** Room in an answer for its header (epochs, watermarks): the records get the rest of FETCH_BYTES. */
const HEADER_ROOM = 4096;
const ANSWER_MARK = 0x52;

/** Why a leader refused a request; the follower's reaction depends on it. */
export type ReplicaErrorCode =
  /** The follower's leader epoch is older than the leader's: it follows a stale placement. */
  | "fenced"
  /** The follower's epoch is newer: this leader is stale. */
  | "unknown_epoch"
  /** Not (or no longer) the leader. */
  | "not_leader"
  /** The follower is ahead of the leader's log: it must truncate first. */
  | "out_of_range"
  /** What the leader sent does not follow the follower's log: truncate again. */
  | "diverged"
  | "bad_request"
  | "storage";

export class ReplicaError extends Error {
  constructor(
    readonly code: ReplicaErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface FetchRequest {
  op: "fetch";
  follower: string;
  /** The follower's next sequence: it has everything below durably. */
  from: number;
  /** The leader epoch the follower follows. */
  epoch: number;
  maxBytes: number;
  maxWaitMs: number;
}

export interface EndOfRequest {
  op: "endOf";
  follower: string;
  epoch: number;
  /** The epoch whose end is asked: the follower's latest. */
  of: number;
}

export interface FetchAnswer {
  /** The request's `from` and `epoch`, echoed: a late answer to an earlier request is recognised and dropped. */
  from: number;
  epoch: number;
  highWatermark: number;
  /** The leader's first stored sequence: the follower removes what it has below. */
  logStart: number;
  /** Where the follower's log continues after these items (past gaps at the leader's end). */
  next: number;
  /** The leader's epoch entries covering `from`..`next`. */
  epochs: EpochEntry[];
  items: StoredItem[];
}

export interface EndOfAnswer {
  epoch: number;
  end: number;
  logStart: number;
}

// ---- encoding: requests are JSON; a fetch answer is ANSWER_MARK, a u32 header length, the JSON header, then encodeBatch's items; an error is JSON { error, code } ----

export function encodeRequest(req: FetchRequest | EndOfRequest): Buffer {
  return Buffer.from(JSON.stringify(req));
}

function encodeError(code: ReplicaErrorCode, why: string): Buffer {
  return Buffer.from(JSON.stringify({ error: why, code }));
}

function encodeFetchAnswer(a: FetchAnswer): Buffer {
  const { items, ...header } = a;
  const head = Buffer.from(JSON.stringify(header));
  const body = encodeBatch(items);
  const out = Buffer.allocUnsafe(5 + head.length + body.length);
  out[0] = ANSWER_MARK;
  out.writeUInt32LE(head.length, 1);
  head.copy(out, 5);
  body.copy(out, 5 + head.length);
  return out;
}

/** A leader's answer to a fetch; an error answer throws its ReplicaError, a malformed one a ReplicaError "bad_request". */
export function decodeFetchAnswer(b: Buffer): FetchAnswer {
  if (b.length === 0 || b[0] !== ANSWER_MARK) throw errorOf(b);
  if (b.length < 5) throw new ReplicaError("bad_request", "short fetch answer");
  const n = b.readUInt32LE(1);
  if (5 + n > b.length) throw new ReplicaError("bad_request", "short fetch answer");
  let h: Partial<FetchAnswer>;
  let items: StoredItem[];
  try {
    h = JSON.parse(b.subarray(5, 5 + n).toString()) as Partial<FetchAnswer>;
    items = decodeBatch(b.subarray(5 + n));
  } catch (err) {
    throw new ReplicaError("bad_request", `bad fetch answer: ${(err as Error).message}`);
  }
  const nums = [h.from, h.epoch, h.highWatermark, h.logStart, h.next];
  if (!nums.every((x) => Number.isSafeInteger(x)) || !Array.isArray(h.epochs)) throw new ReplicaError("bad_request", "bad fetch answer");
  for (const e of h.epochs) if (!Number.isSafeInteger(e?.epoch) || !Number.isSafeInteger(e?.start)) throw new ReplicaError("bad_request", "bad epoch entry");
  return { ...(h as Omit<FetchAnswer, "items">), items };
}

export function decodeEndOfAnswer(b: Buffer): EndOfAnswer {
  let a: Partial<EndOfAnswer> & { error?: unknown };
  try {
    a = JSON.parse(b.toString()) as typeof a;
  } catch {
    throw new ReplicaError("bad_request", "bad endOf answer");
  }
  if (a.error !== undefined) throw errorOf(b);
  if (![a.epoch, a.end, a.logStart].every((x) => Number.isSafeInteger(x))) throw new ReplicaError("bad_request", "bad endOf answer");
  return a as EndOfAnswer;
}

const CODES = new Set<string>(["fenced", "unknown_epoch", "not_leader", "out_of_range", "diverged", "bad_request", "storage"]);

function errorOf(b: Buffer): ReplicaError {
  try {
    const e = JSON.parse(b.toString()) as { error?: unknown; code?: unknown };
    const code = typeof e.code === "string" && CODES.has(e.code) ? (e.code as ReplicaErrorCode) : "bad_request";
    return new ReplicaError(code, String(e.error ?? "bad answer"));
  } catch {
    return new ReplicaError("bad_request", "bad answer");
  }
}

// ---- the leader ----

export interface ReplicaLeaderOptions {
  /** This node. */
  self: string;
  log: MessageLog;
  epochs: LeaderEpochs;
  /** This leadership's epoch (from the placement): recorded at the log's end when it is newer than the checkpoint's latest. */
  epoch: number;
  /** The assigned replicas, this node included. */
  replicas: readonly string[];
  /** The in-sync replicas, this node included. */
  isr: readonly string[];
  /** The high watermark known so far (as a follower): it never goes back. Default: the log's first sequence. */
  highWatermark?: number;
  now?: () => number;
}

/** What the leader knows of one follower. */
interface FollowerView {
  /** Its next sequence as its last fetch said (it has everything below); 0: it has not fetched from this leader. */
  acked: number;
  /** The last time it was caught up (Kafka's lastCaughtUpTimeMs): lag is measured from it. */
  caughtUpAt: number;
  lastFetchAt: number;
  /** The leader's log end at its previous fetch. */
  lastFetchEnd: number;
  parked: Parked | null;
}

interface Parked {
  req: FetchRequest;
  answer: (b: Buffer) => void;
  timer: NodeJS.Timeout;
}

export interface ReplicaStatus {
  name: string;
  inSync: boolean;
  /** Its next sequence as the leader knows it (0: unknown). */
  acked: number;
  /** Sequences it lacks of the leader's log. */
  lag: number;
  /** Ms since it was last caught up. */
  behindMs: number;
}

export class ReplicaLeader {
  private readonly followers = new Map<string, FollowerView>();
  private isr: Set<string>;
  /** The leader's log end: the sequence after its last durable one (appended()). */
  private end: number;
  private hw: number;
  private parkedCount = 0;
  private closedWith: Error | null = null;
  /** Waiters for the high watermark, by sequence. */
  private readonly waiters = new WaitQueue();
  /** The ISR's followers (not the leader): what the high watermark is the lowest of, kept as an array so that an append allocates nothing. */
  private isrViews: FollowerView[] = [];
  private readonly now: () => number;

  private constructor(
    private readonly opts: ReplicaLeaderOptions,
    readonly epoch: number,
  ) {
    this.now = opts.now ?? Date.now;
    const st = opts.log.state();
    this.end = st.lastSeq + 1;
    this.hw = Math.min(this.end, Math.max(opts.highWatermark ?? st.firstSeq, 1));
    this.isr = new Set(opts.isr);
    const t = this.now();
    for (const r of opts.replicas) if (r !== opts.self) this.followers.set(r, { acked: 0, caughtUpAt: t, lastFetchAt: t, lastFetchEnd: 0, parked: null });
    this.setIsr(opts.isr);
  }

  /** Takes over: records the epoch at the log's end (before anything of it is written), then serves fetches. */
  static async create(opts: ReplicaLeaderOptions): Promise<ReplicaLeader> {
    if (!opts.isr.includes(opts.self) || !opts.replicas.includes(opts.self)) throw new Error(`${opts.self} leads but is not in its replicas and ISR`);
    if (opts.epoch > opts.epochs.latest()) await opts.epochs.assign(opts.epoch, opts.log.state().lastSeq + 1);
    else if (opts.epoch < opts.epochs.latest()) throw new Error(`leader epoch ${opts.epoch} is older than the log's ${opts.epochs.latest()}`);
    return new ReplicaLeader(opts, opts.epoch);
  }

  /** The first sequence not yet on every in-sync replica: everything below is acknowledged. */
  get highWatermark(): number {
    return this.hw;
  }

  get logEnd(): number {
    return this.end;
  }

  get inSync(): readonly string[] {
    return [...this.isr];
  }

  /** Answers one request from a follower (bytes in, bytes out, once). */
  serve(body: Buffer, answer: (b: Buffer) => void): void {
    let req: { op?: unknown; follower?: unknown; from?: number; epoch?: number; maxBytes?: number; maxWaitMs?: number; of?: number };
    try {
      req = JSON.parse(body.toString()) as typeof req;
    } catch {
      return answer(encodeError("bad_request", "bad request"));
    }
    if (req === null || typeof req !== "object") return answer(encodeError("bad_request", "bad request"));
    const refused = this.refusal(req as Partial<FetchRequest>);
    if (refused !== null) return answer(encodeError(refused.code, refused.message));
    if (req.op === "endOf") {
      if (!Number.isSafeInteger(req.of)) return answer(encodeError("bad_request", "bad epoch"));
      const e = this.opts.epochs.endOf(req.of!, this.end);
      return answer(Buffer.from(JSON.stringify({ epoch: e.epoch, end: e.end, logStart: this.opts.log.state().firstSeq } satisfies EndOfAnswer)));
    }
    if (req.op !== "fetch" || !Number.isSafeInteger(req.from) || req.from! < 1 || !Number.isSafeInteger(req.maxBytes) || !Number.isSafeInteger(req.maxWaitMs)) {
      return answer(encodeError("bad_request", "bad fetch"));
    }
    this.fetch(req as unknown as FetchRequest, answer);
  }

  /** The request's follower and epoch are not ones this leader serves, or null. */
  private refusal(req: Partial<FetchRequest>): ReplicaError | null {
    if (this.closedWith !== null) return new ReplicaError("not_leader", this.closedWith.message);
    if (typeof req.follower !== "string" || !this.followers.has(req.follower)) return new ReplicaError("bad_request", `${String(req.follower)} is not a replica`);
    if (!Number.isSafeInteger(req.epoch)) return new ReplicaError("bad_request", "bad epoch");
    if (req.epoch! < this.epoch) return new ReplicaError("fenced", `leader epoch ${req.epoch} is older than ${this.epoch}`);
    if (req.epoch! > this.epoch) return new ReplicaError("unknown_epoch", `leader epoch ${req.epoch} is newer than ${this.epoch}`);
    return null;
  }

  private fetch(req: FetchRequest, answer: (b: Buffer) => void): void {
    if (req.from > this.end) return answer(encodeError("out_of_range", `sequence ${req.from} is beyond the leader's end ${this.end}`));
    const f = this.followers.get(req.follower)!;
    this.acknowledge(f, req.from);
    // A follower has one fetch at a time: an older one still held was given up (or is a late copy).
    if (f.parked !== null) this.release(f);
    if (req.from < this.end || req.maxWaitMs <= 0 || this.parkedCount >= MAX_PARKED) return this.send(req, answer);
    const timer = setTimeout(() => this.release(f), Math.min(req.maxWaitMs, MAX_WAIT_MS));
    timer.unref();
    f.parked = { req, answer, timer };
    this.parkedCount++;
  }

  /** Answers a follower's held fetch now, with whatever there is. */
  private release(f: FollowerView): void {
    const p = f.parked;
    if (p === null) return;
    clearTimeout(p.timer);
    f.parked = null;
    this.parkedCount--;
    this.send(p.req, p.answer);
  }

  /** A fetch from `from`: the follower has everything below on disk. */
  private acknowledge(f: FollowerView, from: number): void {
    if (from < f.acked) return; // a late copy of an earlier fetch
    const t = this.now();
    if (from >= this.end) f.caughtUpAt = t;
    else if (from >= f.lastFetchEnd) f.caughtUpAt = Math.max(f.caughtUpAt, f.lastFetchAt);
    f.lastFetchEnd = this.end;
    f.lastFetchAt = t;
    f.acked = from;
    this.advance();
  }

  private send(req: FetchRequest, answer: (b: Buffer) => void): void {
    this.answerFetch(req).then(answer, (err: Error) => answer(encodeError(err instanceof ReplicaError ? err.code : "storage", err.message)));
  }

  private async answerFetch(req: FetchRequest): Promise<Buffer> {
    const { log } = this.opts;
    const end = this.end;
    const limit = Math.max(1, Math.min(req.maxBytes, FETCH_BYTES - HEADER_ROOM));
    let items = req.from < end ? await readCopy(log, req.from, FETCH_MESSAGES, limit) : [];
    if (this.closedWith !== null) throw new ReplicaError("not_leader", this.closedWith.message);
    // scanStored passes its byte bound by up to one item: the answer keeps whole items within it (at least one).
    let bytes = EMPTY_BATCH_BYTES;
    for (let i = 0; i < items.length; i++) {
      bytes += encodedSize(items[i]);
      if (i > 0 && bytes > limit) {
        items = items.slice(0, i);
        break;
      }
    }
    const covered = items.length > 0 ? itemEnd(items[items.length - 1]) : req.from;
    // Nothing stored between what is sent and the end (deleted at the leader's tail): the follower moves on to the end.
    const next = covered < end && log.pendingAfter(covered - 1) - log.pendingAfter(end - 1) === 0 ? end : Math.max(covered, req.from);
    return encodeFetchAnswer({
      from: req.from,
      epoch: this.epoch,
      highWatermark: this.hw,
      logStart: log.state().firstSeq,
      next,
      epochs: covering(this.opts.epochs.list(), req.from, next),
      items,
    });
  }

  /**
   * An append landed in the leader's log, durable as its sync policy says,
   * `lastSeq` its last sequence: held fetches are answered at once, and
   * with no follower in the ISR the high watermark follows.
   */
  appended(lastSeq: number): void {
    if (lastSeq < this.end) return;
    this.end = lastSeq + 1;
    this.advance();
    if (this.parkedCount > 0) for (const f of this.followers.values()) if (f.parked !== null && f.parked.req.from < this.end) this.release(f);
  }

  /**
   * Calls `cb(null)` once the high watermark passes `seq` (every in-sync
   * replica has it), in order of sequence; at once if it has. `cb(err)` if
   * this leadership ends first. False (and no call) when MAX_WAITERS wait:
   * the caller refuses the write. `ctx` is handed to `cb`: a caller passes
   * one function for all its writes and each write's own record, so no
   * closure is made per message.
   */
  whenReplicated<T>(seq: number, cb: (err: Error | null, ctx: T) => void, ctx?: T): boolean {
    if (this.closedWith !== null) {
      cb(this.closedWith, ctx as T);
      return true;
    }
    if (seq < this.hw) {
      cb(null, ctx as T);
      return true;
    }
    return this.waiters.add(seq, cb, ctx);
  }

  /** Recomputes the high watermark (the lowest next sequence over the ISR, never going back) and wakes its waiters. */
  private advance(): void {
    let low = this.end;
    for (let i = 0; i < this.isrViews.length; i++) low = Math.min(low, this.isrViews[i].acked);
    if (low <= this.hw) return;
    this.hw = low;
    this.waiters.release(low);
  }

  /** The ISR as now agreed (after the fenced write in etcd): the leader stays in it; the high watermark may move on. */
  setIsr(isr: readonly string[]): void {
    const next = new Set(isr.filter((n) => n === this.opts.self || this.followers.has(n)));
    next.add(this.opts.self);
    this.isr = next;
    this.isrViews = [...this.followers].filter(([n]) => next.has(n)).map(([, f]) => f);
    this.advance();
  }

  /** ISR followers not caught up for more than `maxLagMs` (Kafka's replica.lag.time.max.ms): to be removed from the ISR. */
  lagging(maxLagMs: number): string[] {
    const t = this.now();
    const out: string[] = [];
    // At the end now (a fetch held for the next append) is caught up, however long ago it last fetched.
    for (const [name, f] of this.followers) if (this.isr.has(name) && f.acked < this.end && t - f.caughtUpAt > maxLagMs) out.push(name);
    return out;
  }

  /** Followers out of the ISR that have caught up to the high watermark and into this epoch: to be added back. */
  readyToJoin(): string[] {
    const epochStart = this.opts.epochs.list().find((e) => e.epoch === this.epoch)?.start ?? this.end;
    const out: string[] = [];
    for (const [name, f] of this.followers) if (!this.isr.has(name) && f.acked >= this.hw && f.acked >= Math.min(epochStart, this.end)) out.push(name);
    return out;
  }

  /** Each replica's standing (stream info's `cluster.replicas`, Kafka's ISR). */
  status(): ReplicaStatus[] {
    const t = this.now();
    return [...this.followers].map(([name, f]) => ({
      name,
      inSync: this.isr.has(name),
      acked: f.acked,
      lag: Math.max(0, this.end - Math.max(f.acked, 1)),
      behindMs: f.acked >= this.end ? 0 : t - f.caughtUpAt,
    }));
  }

  /** This leadership ends (a new epoch, closing): waiters get `why`, held fetches are answered with not_leader. */
  close(why = "no longer the leader"): void {
    if (this.closedWith !== null) return;
    this.closedWith = new Error(why);
    for (const f of this.followers.values()) {
      const p = f.parked;
      if (p === null) continue;
      clearTimeout(p.timer);
      f.parked = null;
      this.parkedCount--;
      p.answer(encodeError("not_leader", why));
    }
    this.waiters.fail(this.closedWith);
  }
}

function noop(): void {}

type Waiter = (err: Error | null, ctx: never) => void;

/**
 * Callbacks waiting for a position (a sequence, a removal) to fall below a
 * watermark, kept ordered by position from `head`: at most MAX_WAITERS, no
 * promise or closure per waiter.
 */
class WaitQueue {
  private pos: number[] = [];
  private cb: Waiter[] = [];
  private ctx: unknown[] = [];
  private head = 0;

  /** Waits for `at` to fall below the watermark; false (and no call) when MAX_WAITERS wait. */
  add<T>(at: number, cb: (err: Error | null, ctx: T) => void, ctx: T | undefined): boolean {
    const n = this.pos.length;
    if (n - this.head >= MAX_WAITERS) return false;
    if (n === this.head || this.pos[n - 1] <= at) {
      this.pos.push(at);
      this.cb.push(cb as Waiter);
      this.ctx.push(ctx);
      return true;
    }
    // Out of order (rare: positions are handed out in order): inserted at its place, after equal ones.
    let lo = this.head;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.pos[mid] <= at) lo = mid + 1;
      else hi = mid;
    }
    this.pos.splice(lo, 0, at);
    this.cb.splice(lo, 0, cb as Waiter);
    this.ctx.splice(lo, 0, ctx);
    return true;
  }

  /** Calls, in order, every waiter whose position is below `watermark`. */
  release(watermark: number): void {
    while (this.head < this.pos.length && this.pos[this.head] < watermark) {
      const cb = this.cb[this.head];
      const ctx = this.ctx[this.head] as never;
      this.cb[this.head] = noop;
      this.ctx[this.head] = undefined;
      this.head++;
      cb(null, ctx);
    }
    if (this.head === this.pos.length) this.clear();
    else if (this.head > 1024 && this.head * 2 > this.pos.length) {
      this.pos = this.pos.slice(this.head);
      this.cb = this.cb.slice(this.head);
      this.ctx = this.ctx.slice(this.head);
      this.head = 0;
    }
  }

  /** Calls every waiter with `err` (the leadership ended). */
  fail(err: Error): void {
    const cbs = this.cb.slice(this.head);
    const ctxs = this.ctx.slice(this.head);
    this.clear();
    for (let i = 0; i < cbs.length; i++) cbs[i](err, ctxs[i] as never);
  }

  private clear(): void {
    this.pos = [];
    this.cb = [];
    this.ctx = [];
    this.head = 0;
  }
}


/** The entries of `entries` whose epochs wrote some of `from`..`next` - 1. */
function covering(entries: readonly EpochEntry[], from: number, next: number): EpochEntry[] {
  const out: EpochEntry[] = [];
  for (let i = 0; i < entries.length; i++) {
    const endOfEntry = i + 1 < entries.length ? entries[i + 1].start : Infinity;
    if (entries[i].start < next && endOfEntry > from) out.push({ epoch: entries[i].epoch, start: entries[i].start });
  }
  return out;
}

// ---- the follower ----

/** Sends a request to the leader; null when no answer came within `ms`. */
export interface ReplicaTransport {
  request(body: Buffer, ms: number): Promise<Buffer | null>;
}

/**
 * What a follower needs beyond a message log: cutting it back (KIP-101).
 * After `truncateFrom(seq)` the log holds nothing from `seq` on; the store's
 * logs answer their new next sequence, lower than `seq` when a Kafka batch
 * across it had to go whole.
 */
export interface Truncatable {
  truncateFrom(seq: number): Promise<number | void>;
}

export type FollowerLog = MessageLog & Truncatable;

export interface ReplicaFollowerOptions {
  self: string;
  log: FollowerLog;
  epochs: LeaderEpochs;
  /** The leader epoch it follows (the placement's). */
  epoch: number;
  transport: ReplicaTransport;
  maxBytes?: number;
  maxWaitMs?: number;
  /** Back-off after a failed round, doubling from `min` to `max`. */
  backoffMs?: { min: number; max: number };
  /** A failed round (the loop goes on after its back-off). */
  onError?: (err: Error) => void;
  /** A round applied: the follower's next sequence. */
  onFetched?: (next: number) => void;
}

/**
 * Follows one leader in one epoch: truncates to where its log and the
 * leader's agree, then fetches and appends until closed. A leader change is
 * a new ReplicaFollower (close this one first).
 */
export class ReplicaFollower {
  private closed = false;
  private truncated = false;
  private hw = 0;
  private loop: Promise<void> | null = null;
  /** A write to the log under way: close() waits for it, and none starts after. */
  private writing: Promise<unknown> | null = null;
  private wake: (() => void) | null = null;
  private pauseTimer: NodeJS.Timeout | null = null;
  /** Rounds applied. */
  rounds = 0;

  constructor(private readonly opts: ReplicaFollowerOptions) {}

  /** The leader's high watermark as last heard, capped at this log's end. */
  get highWatermark(): number {
    return this.hw;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops; resolves once nothing more will be written to the log (a request in flight is left to expire, its answer ignored). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pauseTimer !== null) clearTimeout(this.pauseTimer);
    this.wake?.();
    while (this.writing !== null) await this.writing.catch(() => undefined);
  }

  private async run(): Promise<void> {
    const { min, max } = this.opts.backoffMs ?? { min: 100, max: 5000 };
    let backoff = min;
    while (!this.closed) {
      try {
        if (!this.truncated) {
          await this.truncate();
          this.truncated = true;
        }
        await this.fetchOnce();
        backoff = min;
      } catch (err) {
        if (this.closed) break;
        if (err instanceof ReplicaError && (err.code === "out_of_range" || err.code === "diverged")) this.truncated = false;
        this.opts.onError?.(err as Error);
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, max);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
      this.pauseTimer = setTimeout(resolve, ms);
    }).finally(() => {
      this.wake = null;
      this.pauseTimer = null;
    });
  }

  /** Runs a change of the log unless closed; close() waits for it. */
  private async write<T>(f: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error("closed");
    const p = f();
    this.writing = p;
    try {
      return await p;
    } finally {
      if (this.writing === p) this.writing = null;
    }
  }

  private async ask(req: FetchRequest | EndOfRequest, ms: number): Promise<Buffer> {
    const b = await this.opts.transport.request(encodeRequest(req), ms);
    if (b === null) throw new Error("the leader did not answer");
    return b;
  }

  /** KIP-101/279: cut the log back to where the last epoch it shares with the leader ends. */
  private async truncate(): Promise<void> {
    const { log, epochs } = this.opts;
    const latest = epochs.latest();
    const next = log.state().lastSeq + 1;
    if (latest === UNDEFINED_EPOCH && next === 1) return; // an empty log shares nothing and needs no cut
    let of = latest;
    let cut: number;
    for (;;) {
      const a = decodeEndOfAnswer(await this.ask({ op: "endOf", follower: this.opts.self, epoch: this.opts.epoch, of }, ANSWER_MARGIN_MS));
      if (this.closed) return;
      const own = a.epoch === UNDEFINED_EPOCH ? null : epochs.endOf(a.epoch, next);
      if (own === null || own.epoch === UNDEFINED_EPOCH) {
        // Nothing shared for sure: keep only what the leader no longer has (below its log start), which the first fetch purges.
        cut = Math.min(next, a.logStart);
        break;
      }
      if (own.epoch === a.epoch) {
        cut = Math.min(a.end, own.end, next);
        break;
      }
      // This log never saw the leader's epoch a.epoch: where do they agree on the older one it has (KIP-279)? `of` only goes down.
      of = own.epoch;
    }
    await this.write(async () => {
      const end = cut < next ? ((await log.truncateFrom(cut)) ?? cut) : cut;
      await epochs.truncateFrom(end);
    });
  }

  private async fetchOnce(): Promise<void> {
    const { log, epochs } = this.opts;
    const st = log.state();
    const from = st.lastSeq + 1;
    const maxWaitMs = Math.min(this.opts.maxWaitMs ?? MAX_WAIT_MS, MAX_WAIT_MS);
    const req: FetchRequest = { op: "fetch", follower: this.opts.self, from, epoch: this.opts.epoch, maxBytes: this.opts.maxBytes ?? FETCH_BYTES, maxWaitMs };
    const a = decodeFetchAnswer(await this.ask(req, maxWaitMs + ANSWER_MARGIN_MS));
    if (this.closed) return;
    if (a.from !== from || a.epoch !== this.opts.epoch) throw new Error(`a late answer (from ${a.from}, epoch ${a.epoch}) to an earlier fetch`);
    await this.write(async () => {
      if (st.messages > 0 && st.firstSeq < a.logStart) {
        await log.purge({ upTo: a.logStart });
        await epochs.trimBelow(a.logStart);
      }
      // An epoch is on disk before what it wrote is (leader-epochs.ts).
      for (const e of a.epochs) {
        if (e.epoch <= epochs.latest()) continue;
        if (e.start < from) throw new ReplicaError("diverged", `the leader's epoch ${e.epoch} starts at ${e.start}, inside this log (next ${from})`);
        await epochs.assign(e.epoch, e.start);
      }
      const after = await appendItems(log, a.items, from);
      if (a.next > after) await appendCopy(log, a.next, 0, []);
    });
    this.hw = Math.min(a.highWatermark, Math.max(a.next, from));
    this.rounds++;
    this.opts.onFetched?.(a.next);
  }
}
