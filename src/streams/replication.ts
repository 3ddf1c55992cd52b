/**
 * Replication of one stream partition, Kafka's way (docs/CLUSTER.md,
 * "Replication"): the leader appends, followers fetch from it, and the high
 * watermark marks what every in-sync replica (ISR) has durably stored.
 *
 * Transport-agnostic: requests and answers are bytes (`ReplicaLeader.serve`
 * answers one, `ReplicaTransport.request` sends one), so the routes'
 * internal requests (`ClusterApi.request`, `$NG.REPL.` subjects) carry them
 * (stream-replicas.ts wires it into streams), and tests carry them in process.
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
 * - Removals inside the log (deletes, purges with a filter or `keep`,
 *   work-queue and interest acks, per-subject limits) are told to the
 *   leader once applied (`removed(seqs)`): each gets a removal position in
 *   this leadership (`run`). A fetch also says how many the follower has
 *   applied (`ops`, acknowledged like `from`); the answer ships the next
 *   ones below the follower's `from` (those at or above it are skipped by
 *   the copy, those below the log start by the purge the log start makes),
 *   and the follower deletes them durably before it fetches again. The
 *   removal watermark is the lowest applied position over the ISR;
 *   `whenRemovalReplicated(op, cb)` waits for it. Front purges travel as
 *   the log start (`removedBelow` only gives them a position to wait on).
 * - The leader keeps at most MAX_REMOVALS removals for followers behind.
 *   A follower new to a leadership (a new epoch, a restart on either
 *   side), one the leader no longer keeps removals for, and every follower
 *   after `removedUnlisted` reconciles: it asks, page by page (`gaps`),
 *   which sequences of the range it holds are gone at the leader, deletes
 *   those, and where the leader has what it lacks (an earlier leader's
 *   unacknowledged removal) truncates there to fetch it again.
 *
 * Left to the caller (stream-replicas.ts): the ISR and epochs in etcd (it
 * decides with `lagging` and `readyToJoin` and applies with `setIsr`), and
 * the lease check before acknowledging.
 */

import { randomBytes } from "node:crypto";
import { namedAnswerBytes, ROUTE_PAYLOAD_SLACK } from "../core/options.js";
import { UNDEFINED_EPOCH, type EpochEntry, type LeaderEpochs } from "../store/leader-epochs.js";
import type { MessageLog, StoredItem } from "../store/log.js";
import { appendCopy, appendItems, decodeBatch, EMPTY_BATCH_BYTES, encodeBatch, encodedSize, itemEnd, readCopy } from "./copy-batch.js";

/**
 * One fetch answer's bytes at most (at least one item is sent, a Kafka
 * batch whole): below a route's default max payload, as a move's copy. A
 * follower asks for less when its node's max_payload is smaller (its route
 * refuses a larger answer).
 */
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
/** The least a fetch waiting for room waits before it is answered empty (one asking not to wait would come back at once). */
const DEFERRED_MIN_MS = 100;
/** How long an answer counts in the answer budget without its follower's next fetch: by then the follower has fetched again or given it up. */
const ANSWER_HELD_MS = MAX_WAIT_MS + ANSWER_MARGIN_MS;
/** Room in an answer for its header (epochs, watermarks): the records get the rest of FETCH_BYTES. */
const HEADER_ROOM = 4096;
const ANSWER_MARK = 0x52;
/**
 * Removals a leader keeps for followers that have not applied them yet (a
 * number each: half a MiB when full, and only while a follower is behind).
 * A follower left further behind reconciles instead (`gaps`).
 */
export const MAX_REMOVALS = 65_536;
/** Log starts moved by the limits a leader keeps for followers without their causes yet (more are thinned out). */
const MAX_FRONTS = 256;
/** Removals one fetch answer covers at most (those shipped are numbers in its header). */
export const REMOVALS_PER_ANSWER = 4096;
/** Sequences one reconciliation page examines at most. */
export const RECONCILE_SPAN = 65_536;
/** Deleted ranges one reconciliation page lists at most: two numbers each, so its answer stays far below FETCH_BYTES. */
export const MAX_GAP_RANGES = 4096;
/** Room a shipped removal takes in an answer's header at most (a safe integer and a comma). */
const REMOVAL_ROOM = 17;
/** Deletes a follower has under way at once (the log groups them). */
const DELETE_CHUNK = 1024;

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
  /** The follower's removal position is not one this leader knows (another leadership, or fallen past MAX_REMOVALS): reconcile. */
  | "reconcile"
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
  /** The leadership (`ReplicaLeader.run`) whose removals `ops` counts: the one the follower reconciled with. */
  run: string;
  /** Removals of that leadership the follower has applied durably (an acknowledgement, as `from` is). */
  ops: number;
  /** The answer's size at most (its records' within it, at least one item): the follower's route refuses more than its max_payload. */
  maxBytes: number;
  /** The follower's max_payload (older followers name none): a single item past what its route takes is refused, not sent. */
  maxPayload?: number;
  /**
   * The follower takes a Kafka batch with records gone whole, with the
   * sequences gone named (readCopy's `keepCut`); older followers name none
   * and get its records as messages, which is all they can read.
   */
  keepsCut?: boolean;
  maxWaitMs: number;
}

/**
 * A reconciliation page: which of `from`..`to` - 1 are gone at the leader.
 * `run` and `ops` are null on a reconciliation's first page, then the
 * leadership and the lowest removal position its pages were answered at.
 */
export interface GapsRequest {
  op: "gaps";
  follower: string;
  epoch: number;
  from: number;
  to: number;
  run: string | null;
  ops: number | null;
  /** The answer's size at most, as a fetch's (older nodes name none: MAX_GAP_RANGES ranges). */
  maxBytes?: number;
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
  /** The leadership and removal position of the request, echoed. */
  run: string;
  ops: number;
  /** The removal position once the follower applied `removals`: its next fetch's `ops`. */
  opsTo: number;
  /** Sequences below `from` (and at or above `logStart`) the leader removed in ops..opsTo, in its order: the follower deletes those it has. */
  removals: number[];
  items: StoredItem[];
}

export interface GapsAnswer {
  run: string;
  /** The leader's removal position when it answered: every removal before it is reflected in `gaps`. */
  ops: number;
  logStart: number;
  /** The request's `from` and `to`, echoed. */
  from: number;
  to: number;
  /** Where the page ends: `gaps` lists what is gone at the leader in max(from, logStart)..next - 1. */
  next: number;
  /** Inclusive ranges, ascending, flat: [a0, b0, a1, b1, ...]. */
  gaps: number[];
  /** The leader's log end when it answered (absent from older leaders): what caused the removals `gaps` shows lies below it. */
  end?: number;
}

export interface EndOfAnswer {
  epoch: number;
  end: number;
  logStart: number;
}

// ---- encoding: requests are JSON; a fetch answer is ANSWER_MARK, a u32 header length, the JSON header, then encodeBatch's items; an error is JSON { error, code } ----

export function encodeRequest(req: FetchRequest | EndOfRequest | GapsRequest): Buffer {
  return Buffer.from(JSON.stringify(req));
}

/** A replication request's error answer, as the follower's transport decodes it into a ReplicaError. */
export function encodeError(code: ReplicaErrorCode, why: string): Buffer {
  return Buffer.from(JSON.stringify({ error: why, code }));
}

/** The error answer for a failure: its own code if it is a ReplicaError, else "storage" (a read that failed). */
export function encodeFailure(err: Error): Buffer {
  return encodeError(err instanceof ReplicaError ? err.code : "storage", err.message);
}

/** A fetch answer ready to encode: its header's bytes, its items, and the size it encodes to. */
interface PreparedAnswer {
  head: Buffer;
  items: StoredItem[];
  size: number;
}

function prepareFetchAnswer(a: FetchAnswer): PreparedAnswer {
  const { items, ...header } = a;
  const head = Buffer.from(JSON.stringify(header));
  let size = 5 + head.length + EMPTY_BATCH_BYTES;
  for (let i = 0; i < items.length; i++) size += encodedSize(items[i]);
  return { head, items, size };
}

/**
 * Where lent answers are encoded (ReplicaLeaderOptions.lendAnswers): one
 * buffer for the process, reused answer after answer, since an answer is
 * encoded and handed on in one synchronous step. Fresh buffers for every
 * answer, counted as external memory by V8, kept a leader at acks=all
 * running a full mark-compact every few MB replicated (docs/PERFORMANCE.md).
 * An answer larger than this (a Kafka batch near a large max_payload) gets
 * a buffer of its own.
 */
const LENT = Buffer.allocUnsafeSlow(2 * 1024 * 1024);

function encodeFetchAnswer(p: PreparedAnswer, lend = false): Buffer {
  const out = encodeBatch(p.items, 5 + p.head.length, lend ? LENT : undefined);
  out[0] = ANSWER_MARK;
  out.writeUInt32LE(p.head.length, 1);
  p.head.copy(out, 5);
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
  const nums = [h.from, h.epoch, h.highWatermark, h.logStart, h.next, h.ops, h.opsTo];
  if (!nums.every((x) => Number.isSafeInteger(x)) || !Array.isArray(h.epochs) || typeof h.run !== "string" || h.opsTo! < h.ops!) throw new ReplicaError("bad_request", "bad fetch answer");
  for (const e of h.epochs) if (!Number.isSafeInteger(e?.epoch) || !Number.isSafeInteger(e?.start)) throw new ReplicaError("bad_request", "bad epoch entry");
  if (!Array.isArray(h.removals) || !h.removals.every((x) => Number.isSafeInteger(x) && x > 0)) throw new ReplicaError("bad_request", "bad removals");
  return { ...(h as Omit<FetchAnswer, "items">), items };
}

export function decodeGapsAnswer(b: Buffer): GapsAnswer {
  let a: Partial<GapsAnswer> & { error?: unknown };
  try {
    a = JSON.parse(b.toString()) as typeof a;
  } catch {
    throw new ReplicaError("bad_request", "bad gaps answer");
  }
  if (a === null || typeof a !== "object") throw new ReplicaError("bad_request", "bad gaps answer");
  if (a.error !== undefined) throw errorOf(b);
  const g = a.gaps;
  const ok =
    typeof a.run === "string" &&
    [a.ops, a.logStart, a.from, a.to, a.next].every((x) => Number.isSafeInteger(x)) &&
    (a.end === undefined || Number.isSafeInteger(a.end)) &&
    Array.isArray(g) &&
    g.length % 2 === 0 &&
    g.length <= 2 * MAX_GAP_RANGES &&
    g.every((x, i) => Number.isSafeInteger(x) && (i === 0 || x >= g[i - 1] + (i % 2 === 0 ? 2 : 0)));
  if (!ok) throw new ReplicaError("bad_request", "bad gaps answer");
  return a as GapsAnswer;
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

const CODES = new Set<string>(["fenced", "unknown_epoch", "not_leader", "out_of_range", "diverged", "reconcile", "bad_request", "storage"]);

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
  /** Called each time the high watermark moves on: readers waiting for it read again. */
  onAdvance?: () => void;
  /** A follower starts over with this leadership (a restart): what else is known of it (its copy of the consumers) no longer holds. */
  onStartOver?: (follower: string) => void;
  /** The node's bound on answers in flight to each follower node, shared by its leaders (none: unbounded). */
  answerBudget?: AnswerBudget;
  /**
   * Fetch answers are lent: the buffer given to `serve`'s answer callback is
   * valid only during the call (the callback copies what it keeps; a route
   * frames it into its outbound at once). Saves a buffer per answer.
   */
  lendAnswers?: boolean;
  now?: () => number;
}

/**
 * The bytes a node's leaders have sent each follower node in fetch answers
 * that the follower has not fetched past yet: about what the route to that
 * node still carries. Each partition has one answer in flight per
 * follower, so a node following hundreds of partitions that all have data
 * at once (it is back from a restart, a burst of writes) would be sent
 * hundreds of answers at once, past the route's max_pending: the route is
 * then closed as a slow consumer, and with it every partition's fetch and
 * the core traffic it carried, again at each reconnect. An answer is read
 * for the room left (reserved while it is read) and counted as it is sent:
 * past `maxBytes` a fetch waits until an earlier answer is fetched past. An
 * item is whole, so an answer may pass the room it was read for: then it
 * waits too, unless nothing else is counted.
 */
export class AnswerBudget {
  /** Bytes sent to each node and not yet fetched past. */
  private readonly sent = new Map<string, number>();
  /** Bytes being read for each node: reserved, so that concurrent reads share the room instead of each reading all of it. */
  private readonly reading = new Map<string, number>();
  /** Fetches waiting for room, per follower node, in order: the first goes once the room is what it needs. */
  private readonly waiting = new Map<string, BudgetWaiter[]>();

  constructor(readonly maxBytes: number) {}

  /** Bytes `node` may be sent or read for now. */
  room(node: string): number {
    return this.maxBytes - (this.sent.get(node) ?? 0) - (this.reading.get(node) ?? 0);
  }

  /** Bytes sent to `node` and not yet fetched past. */
  inFlight(node: string): number {
    return this.sent.get(node) ?? 0;
  }

  /** Bytes being read for `node`. */
  reserved(node: string): number {
    return this.reading.get(node) ?? 0;
  }

  reserve(node: string, bytes: number): void {
    this.reading.set(node, (this.reading.get(node) ?? 0) + bytes);
  }

  /** A read for `node` is over: its reservation goes, and `sentBytes` of it are counted (0: not sent). */
  settle(node: string, reservedBytes: number, sentBytes: number): void {
    add(this.reading, node, -reservedBytes);
    add(this.sent, node, sentBytes);
    this.wake(node);
  }

  /** Bytes `node` has fetched past: waiting fetches go on while there is room. */
  give(node: string, bytes: number): void {
    add(this.sent, node, -bytes);
    this.wake(node);
  }

  /** Fetches to `node` waiting for room (a leader's follower view at most once). */
  waitingFor(node: string): number {
    return this.waiting.get(node)?.length ?? 0;
  }

  /** Queues `w` behind the others waiting for `node` (a leader queues one per follower view). */
  wait(node: string, w: BudgetWaiter): void {
    const q = this.waiting.get(node);
    if (q === undefined) this.waiting.set(node, [w]);
    else q.push(w);
  }

  /**
   * In order: the first waiter goes once the room is what it needs, or
   * nothing is counted (an item larger than the budget goes alone); those
   * behind wait for it, so a large answer is not passed for good by small
   * ones. A waiter reserves what it reads before its retry returns.
   */
  private wake(node: string): void {
    const q = this.waiting.get(node);
    if (q === undefined) return;
    while (q.length > 0) {
      const room = this.room(node);
      if (room < q[0].need && (room <= 0 || this.sent.has(node) || this.reading.has(node))) break;
      q.shift()!.retry();
    }
    if (q.length === 0) this.waiting.delete(node);
  }
}

/** A fetch waiting in the answer budget: the room it needs (its answer's size, or 1 before it was read). */
interface BudgetWaiter {
  need: number;
  retry(): void;
}

function add(m: Map<string, number>, key: string, n: number): void {
  const v = (m.get(key) ?? 0) + n;
  if (v > 0) m.set(key, v);
  else m.delete(key);
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
  /** Removals it has applied, as its last fetch said (this leadership's positions). */
  ackedOps: number;
  /** The lowest removal position it may still ask for (its fetches', or the one its reconciliation started at); -1: none in this leadership, so it reconciles before it fetches and needs nothing kept. */
  opsFrom: number;
  parked: Parked | null;
  /** A fetch waiting for room in the answer budget (a newer fetch of the follower replaces it). */
  deferred: Deferred | null;
  /** Its place in the budget's queue, if it has one (at most one, whatever it fetches meanwhile). */
  queued: BudgetWaiter | null;
  /** Its newest fetch: an older one it gave up is not queued again. */
  latest: FetchRequest | null;
  /** Bytes answered to it since its last fetch: what its next fetch gives back to the answer budget. */
  answered: number;
  answeredAt: number;
}

interface Deferred {
  req: FetchRequest;
  answer: (b: Buffer) => void;
  /** At the fetch's wait it is answered empty, as a held fetch is: its follower asks again at once, keeping its place. */
  timer: NodeJS.Timeout;
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
  /** This leadership, told apart from any other (a restart in the same epoch included): removal positions count within it. */
  readonly run = randomBytes(8).toString("hex");
  private readonly followers = new Map<string, FollowerView>();
  /** The followers' views, as an array: what a removal or a fetch walks without allocating. */
  private readonly views: FollowerView[] = [];
  private isr: Set<string>;
  /** The leader's log end: the sequence after its last durable one (appended()). */
  private end: number;
  private hw: number;
  /** The log's end when this leadership began (Kafka's leader epoch start offset): until the high watermark reaches it, it may be below one shown before. */
  private readonly startEnd: number;
  private parkedCount = 0;
  private closedWith: Error | null = null;
  /** Waiters for the high watermark, by sequence. */
  private readonly waiters = new WaitQueue();
  /**
   * This leadership's removals that a follower may still need, from
   * `rHead`: rOps[rHead] is removal position `opBase`. A number is a
   * sequence deleted; 0 holds the position of one that needs no shipping
   * (a front purge, which the log start carries).
   */
  private rOps: number[] = [];
  /**
   * Beside each of rOps, the log's last sequence when the removal was made
   * by its limits (an eviction under a per-subject or size limit: caused by
   * the records up to it), or 0. A follower is sent such a removal only
   * with everything up to its cause, so that it never holds a key's old
   * value deleted without the new one that replaced it (a failover then
   * would lose both).
   */
  private rCause: number[] = [];
  /** The cause of the newest removal kept: rCause never decreases (a removal without a cause waits behind those before it anyway). */
  private lastCause = 0;
  /**
   * Causes raised since recorded, flat pairs [position, cause], both
   * increasing: every removal from that position on waits at least for
   * that cause. A record that caused evictions can be evicted in turn (a
   * key written three times), and is then skipped by the copy: what those
   * evictions wait for is the record that evicted it.
   */
  private raises: number[] = [];
  private rHead = 0;
  /**
   * The limits' evictions from the log's front whose cause some follower
   * may not have yet (`frontMoved`): flat pairs [cause, lowest sequence
   * evicted], oldest first. An answer not reaching a pair's cause carries a
   * log start no higher than its lowest sequence.
   */
  private fronts: number[] = [];
  private opBase = 0;
  /** Removals recorded in this leadership: the position the next one gets. */
  private opEnd = 0;
  /** The removal watermark: every ISR member has applied every removal before it. */
  private opHw = 0;
  private readonly removalWaiters = new WaitQueue();
  /** The ISR's followers (not the leader) and those joining it: what the high watermark is the lowest of, kept as an array so that an append allocates nothing. */
  private isrViews: FollowerView[] = [];
  /** Followers whose joining the ISR is proposed and not yet agreed or given up: they count for the watermarks meanwhile (`joining`). */
  private readonly joiners = new Set<string>();
  private countedNames: string[] = [];
  private readonly now: () => number;

  private constructor(
    private readonly opts: ReplicaLeaderOptions,
    readonly epoch: number,
  ) {
    this.now = opts.now ?? Date.now;
    const st = opts.log.state();
    this.end = st.lastSeq + 1;
    this.hw = Math.min(this.end, Math.max(opts.highWatermark ?? st.firstSeq, 1));
    this.startEnd = this.end;
    this.isr = new Set(opts.isr);
    const t = this.now();
    for (const r of opts.replicas) {
      if (r === opts.self || this.followers.has(r)) continue;
      const view: FollowerView = { acked: 0, caughtUpAt: t, lastFetchAt: t, lastFetchEnd: 0, ackedOps: 0, opsFrom: -1, parked: null, deferred: null, queued: null, latest: null, answered: 0, answeredAt: 0 };
      this.followers.set(r, view);
      this.views.push(view);
    }
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

  /** Which leader epoch wrote which sequences of this log (the checkpoint, this leadership's epoch last). */
  get epochEntries(): readonly EpochEntry[] {
    return this.opts.epochs.list();
  }

  /** Whether the high watermark has reached the log's end as this leadership found it: before, readers may see it lower than a leader before showed. */
  get highWatermarkCurrent(): boolean {
    return this.hw >= this.startEnd;
  }

  get inSync(): readonly string[] {
    return [...this.isr];
  }

  /** The position the next removal gets: what `removed` returns. */
  get removalEnd(): number {
    return this.opEnd;
  }

  /** Every ISR member has applied every removal before this position. */
  get removalWatermark(): number {
    return this.opHw;
  }

  /** Removals kept for followers (at most MAX_REMOVALS). */
  get heldRemovals(): number {
    return this.opEnd - this.opBase;
  }

  /** Answers one request from a follower (bytes in, bytes out, once). */
  serve(body: Buffer, answer: (b: Buffer) => void): void {
    let req: { op?: unknown; follower?: unknown; from?: number; to?: number; epoch?: number; run?: unknown; ops?: unknown; maxBytes?: number; maxWaitMs?: number; of?: number };
    try {
      req = JSON.parse(body.toString()) as typeof req;
    } catch {
      return answer(encodeError("bad_request", "bad request"));
    }
    if (req === null || typeof req !== "object") return answer(encodeError("bad_request", "bad request"));
    const refused = this.refusal(req as Partial<FetchRequest>);
    if (refused !== null) return answer(encodeError(refused.code, refused.message));
    // A fetch still tells where its follower is (below, before the log is asked): that it keeps up is the follower's doing.
    const failed = req.op === "fetch" ? null : this.logFailed();
    if (failed !== null) return answer(encodeError(failed.code, failed.message));
    if (req.op === "endOf") {
      if (!Number.isSafeInteger(req.of)) return answer(encodeError("bad_request", "bad epoch"));
      this.startsOver(req.follower as string, this.followers.get(req.follower as string)!);
      const e = this.opts.epochs.endOf(req.of!, this.end);
      return answer(Buffer.from(JSON.stringify({ epoch: e.epoch, end: e.end, logStart: this.opts.log.state().firstSeq } satisfies EndOfAnswer)));
    }
    if (req.op === "gaps") return answer(this.gaps(req as unknown as GapsRequest));
    if (
      req.op !== "fetch" ||
      !Number.isSafeInteger(req.from) ||
      req.from! < 1 ||
      typeof req.run !== "string" ||
      !Number.isSafeInteger(req.ops) ||
      !Number.isSafeInteger(req.maxBytes) ||
      !Number.isSafeInteger(req.maxWaitMs)
    ) {
      return answer(encodeError("bad_request", "bad fetch"));
    }
    this.fetch(req as unknown as FetchRequest, answer);
  }

  /** Whether `ops` is a removal position of this leadership the leader still holds removals from. */
  private knows(run: string, ops: number): boolean {
    return run === this.run && ops >= this.opBase && ops <= this.opEnd;
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

  /**
   * A failed log's memory may not say what is on disk (a segment it could
   * not read stands in empty until the reopen reads it all again): answered
   * from it, a follower would delete or skip what the leader still has.
   * Followers wait for the reopen.
   */
  private logFailed(): ReplicaError | null {
    const error = this.opts.log.state().error;
    return error === null ? null : new ReplicaError("storage", `the leader's log failed (${error}); it answers again once reopened`);
  }

  private fetch(req: FetchRequest, answer: (b: Buffer) => void): void {
    const f = this.followers.get(req.follower)!;
    // One fetch at a time: one still waiting for room was given up (cleared first: the room given back below is not for it),
    // and its place in the queue asks for no room (it holds up nobody behind it), unless this one asks for the same.
    if (f.queued !== null && f.deferred?.req.from !== req.from) f.queued.need = 1;
    this.dropDeferred(f);
    f.latest = req;
    // A fetch says the follower has what it was sent before (or gave it up): the route no longer carries it.
    if (f.answered > 0) {
      this.opts.answerBudget?.give(req.follower, f.answered);
      f.answered = 0;
    }
    if (req.from > this.end) return answer(encodeError("out_of_range", `sequence ${req.from} is beyond the leader's end ${this.end}`));
    if (!this.knows(req.run, req.ops)) return answer(encodeError("reconcile", `removal position ${req.ops} of ${req.run} is not one this leadership holds`));
    this.acknowledge(req.follower, f, req.from, req.ops);
    // A follower that keeps asking while this log is failed is not lagging: it could fetch nothing. Its lag runs again after.
    const failed = this.logFailed();
    if (failed !== null) {
      f.caughtUpAt = this.now();
      return answer(encodeError(failed.code, failed.message));
    }
    // A follower has one fetch at a time: an older one still held was given up (or is a late copy).
    if (f.parked !== null) this.release(f);
    if (req.from < this.end || this.removalsFor(req.ops) || req.maxWaitMs <= 0 || this.parkedCount >= MAX_PARKED) return this.send(req, answer);
    const timer = setTimeout(() => this.release(f), Math.min(req.maxWaitMs, MAX_WAIT_MS));
    timer.unref();
    f.parked = { req, answer, timer };
    this.parkedCount++;
  }

  /** Whether a follower at the log's end that applied the removals before `ops` has one to be sent (its cause appended), or must reconcile. */
  private removalsFor(ops: number): boolean {
    if (ops >= this.opEnd) return false;
    if (ops < this.opBase) return true; // no longer held (removedUnlisted, MAX_REMOVALS): answered at once, to reconcile
    return this.causeAt(ops) < this.end;
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

  /** A fetch from `from` at removal position `ops`: the follower has everything below `from`, and has applied the removals before `ops`, on disk. */
  private acknowledge(name: string, f: FollowerView, from: number, ops: number): void {
    if (ops > f.opsFrom) f.opsFrom = ops;
    if (ops > f.ackedOps) {
      f.ackedOps = ops;
      this.trimRemovals();
      this.advanceRemovals();
    }
    if (from < f.acked) return; // a late copy of an earlier fetch
    const t = this.now();
    if (from >= this.end) f.caughtUpAt = t;
    else if (from >= f.lastFetchEnd) f.caughtUpAt = Math.max(f.caughtUpAt, f.lastFetchAt);
    f.lastFetchEnd = this.end;
    f.lastFetchAt = t;
    f.acked = from;
    // At the high watermark now: counted for it from this moment, so it stays there (readyToJoin, looked at every
    // check, then finds it ready). Seen only at a check, a follower of a leader alone in its ISR under steady writes
    // was almost never at it: the watermark is the log's end after every append, and moves on between fetches.
    if (!this.isr.has(name) && !this.joiners.has(name) && this.atWatermark(f)) {
      this.joiners.add(name);
      this.countViews();
      return;
    }
    this.advance();
  }

  /** Whether a follower out of the ISR has all the high watermark covers, in this epoch, and the removals the ISR applied. */
  private atWatermark(f: FollowerView): boolean {
    if (f.acked < this.hw || f.ackedOps < this.opHw) return false;
    const epochStart = this.opts.epochs.list().find((e) => e.epoch === this.epoch)?.start ?? this.end;
    return f.acked >= Math.min(epochStart, this.end);
  }

  /** Answers a fetch now, or queues it in the answer budget; `need`: the room it was let go for from the queue. */
  private send(req: FetchRequest, answer: (b: Buffer) => void, need = 0): void {
    const budget = this.opts.answerBudget;
    // Nothing to read (removals only, or an empty answer): a few bytes, never held back.
    if (budget === undefined || req.from >= this.end) {
      this.answerWhenRead(this.answerFetch(req, req.maxBytes), answer);
      return;
    }
    const f = this.followers.get(req.follower)!;
    const node = req.follower;
    const room = budget.room(node);
    // Behind others waiting (unless it is the one let go), or no room: it waits its turn. Strictly in order, so that the
    // first, however large its answer, goes once the answers in flight to that node are fetched past: a small answer may
    // wait behind it about one round.
    if (room <= 0 || (need === 0 && budget.waitingFor(node) > 0)) return this.defer(f, req, answer, 1);
    // Read for the room left. Reserved while it is read: about what there is to send (a follower at the end fetching one
    // new message takes no room from the others), or the room it was let go for (those behind it cannot take that).
    const cap = Math.min(req.maxBytes, room);
    const held = Math.max(1, Math.min(cap, this.estimate(req.from)), Math.min(need, room));
    budget.reserve(node, held);
    this.answerFetch(req, cap).then(
      (p) => {
        // A leadership that ended meanwhile counts nothing more (close gave its answers back).
        if (this.closedWith !== null) {
          budget.settle(node, held, 0);
          return answer(this.encodeAnswer(p));
        }
        // An answer is whole items, at least one, so it may pass what it was reserved for: then it waits for that much
        // room while anything else is counted (its reservation given back after it queued, so it is not let go by it).
        if (p.size > budget.room(node) + held && budget.inFlight(node) + budget.reserved(node) > held) {
          // A fetch the follower gave up for a newer one waits no more: the newer one is answered.
          if (f.latest === req) this.defer(f, req, answer, p.size);
          budget.settle(node, held, 0);
          return;
        }
        f.answered += p.size;
        f.answeredAt = this.now();
        budget.settle(node, held, p.size);
        answer(this.encodeAnswer(p));
      },
      (err: Error) => {
        budget.settle(node, held, 0);
        answer(encodeFailure(err));
      },
    );
  }

  /** About the bytes of an answer from `from`: the log's mean record size, and an item's framing, per sequence left. */
  private estimate(from: number): number {
    const st = this.opts.log.state();
    const mean = st.messages > 0 ? st.bytes / st.messages : 1024;
    return HEADER_ROOM + Math.ceil((this.end - from) * (mean + 64));
  }

  /** A fetch waits for `need` bytes of room in the answer budget: one place in its queue per follower view, whatever it fetches meanwhile. */
  private defer(f: FollowerView, req: FetchRequest, answer: (b: Buffer) => void, need: number): void {
    this.dropDeferred(f);
    const d: Deferred = {
      req,
      answer,
      // Not past the follower's own wait for an answer (it would give up, warn and back off): answered empty before it.
      timer: setTimeout(() => {
        if (f.deferred !== d) return;
        f.deferred = null;
        this.answerWhenRead(this.answerFetch(req, 0, false), answer);
      }, Math.max(DEFERRED_MIN_MS, Math.min(req.maxWaitMs, MAX_WAIT_MS))),
    };
    d.timer.unref();
    f.deferred = d;
    if (f.queued !== null) {
      f.queued.need = need;
      return;
    }
    const w: BudgetWaiter = {
      need,
      retry: () => {
        f.queued = null;
        const d = f.deferred;
        if (d === null || this.closedWith !== null) return;
        this.dropDeferred(f);
        this.send(d.req, d.answer, Math.max(1, w.need));
      },
    };
    f.queued = w;
    this.opts.answerBudget!.wait(req.follower, w);
  }

  private dropDeferred(f: FollowerView): void {
    if (f.deferred === null) return;
    clearTimeout(f.deferred.timer);
    f.deferred = null;
  }

  /** Encodes an answer for the callback it is handed to at once: lent (LENT) when the options say so. */
  private encodeAnswer(p: PreparedAnswer): Buffer {
    return encodeFetchAnswer(p, this.opts.lendAnswers === true);
  }

  /** Answers with what `read` resolves, encoded at once, or with its failure. */
  private answerWhenRead(read: Promise<PreparedAnswer>, answer: (b: Buffer) => void): void {
    read.then(
      (p) => answer(this.encodeAnswer(p)),
      (err: Error) => answer(encodeFailure(err)),
    );
  }

  /** A fetch's answer of at most `maxBytes` (whole items, at least one), or with none (`read` false: removals and positions only). */
  private async answerFetch(req: FetchRequest, maxBytes: number, read = true): Promise<PreparedAnswer> {
    const { log } = this.opts;
    const end = this.end;
    // Held, the fetch may have fallen behind what MAX_REMOVALS keeps.
    if (!this.knows(req.run, req.ops)) throw new ReplicaError("reconcile", `removal position ${req.ops} is no longer held`);
    const logStart = log.state().firstSeq;
    // Every removal recorded so far is applied in the log read below (the stream tells `removed` after applying it): the copy
    // skips what they removed at or above `from`; below `from` the follower deletes them, but below the log start it purges anyway.
    let opsTo = Math.min(this.opEnd, req.ops + REMOVALS_PER_ANSWER);
    let room = 0;
    for (let i = this.rHead + req.ops - this.opBase, to = this.rHead + opsTo - this.opBase; i < to; i++) if (this.rOps[i] < req.from) room++;
    const limit = Math.max(1, Math.min(maxBytes, FETCH_BYTES) - HEADER_ROOM - REMOVAL_ROOM * room);
    let items = read && req.from < end ? await readCopy(log, req.from, FETCH_MESSAGES, limit, req.keepsCut === true) : [];
    if (this.closedWith !== null) throw new ReplicaError("not_leader", this.closedWith.message);
    // The removals are read after the log: a cause evicted while it was read is raised by now (and was skipped by the copy).
    if (!this.knows(req.run, req.ops)) throw new ReplicaError("reconcile", `removal position ${req.ops} is no longer held`);
    opsTo = Math.min(opsTo, this.opEnd);
    // scanStored passes its byte bound by up to one item: the answer keeps whole items within it (at least one), and
    // counts only those (the one left out may be a whole Kafka batch near max_payload: counted, it failed the check below).
    let bytes = EMPTY_BATCH_BYTES;
    for (let i = 0; i < items.length; i++) {
      const size = encodedSize(items[i]);
      if (i > 0 && bytes + size > limit) {
        items = items.slice(0, i);
        break;
      }
      bytes += size;
    }
    // An item the follower's route would refuse (its max_payload below this node's): sent, it would close the route, and
    // again at every retry. The follower is told instead, and stays behind, out of the ISR, until its max_payload is raised.
    if (items.length === 1 && Number.isSafeInteger(req.maxPayload) && bytes + HEADER_ROOM > req.maxPayload! + ROUTE_PAYLOAD_SLACK) {
      throw new ReplicaError("storage", `sequence ${req.from}'s ${bytes} bytes do not fit the follower's max_payload (${req.maxPayload}); give every node the same max_payload`);
    }
    const covered = items.length > 0 ? itemEnd(items[items.length - 1]) : req.from;
    // Nothing stored between what is sent and the end (deleted at the leader's tail): the follower moves on to the end.
    const next = covered < end && log.pendingAfter(covered - 1) - log.pendingAfter(end - 1) === 0 ? end : Math.max(covered, req.from);
    // readCopy refuses a failed log; pendingAfter may still read a segment's detail and fail it.
    const failed = this.logFailed();
    if (failed !== null) throw failed;
    // Removals by the limits go with their causes: the first whose cause this answer does not carry waits, and those after it.
    // Below the log start the answer carries, the follower purges: nothing there is shipped one by one.
    const start = this.startFor(next, logStart);
    const removals: number[] = [];
    let j = 0; // the raise in force at position p: the last one at or below it
    for (let p = req.ops; p < opsTo; p++) {
      while (j + 2 < this.raises.length && this.raises[j + 2] <= p) j += 2;
      const i = this.rHead + p - this.opBase;
      const cause = j < this.raises.length && this.raises[j] <= p ? Math.max(this.rCause[i], this.raises[j + 1]) : this.rCause[i];
      if (cause >= next) {
        opsTo = p;
        break;
      }
      const seq = this.rOps[i];
      if (seq >= start && seq < req.from) removals.push(seq);
    }
    return prepareFetchAnswer({
      from: req.from,
      epoch: this.epoch,
      highWatermark: this.hw,
      logStart: start,
      next,
      epochs: covering(this.opts.epochs.list(), req.from, next),
      run: this.run,
      ops: req.ops,
      opsTo,
      removals,
      items,
    });
  }

  /**
   * A reconciliation page (the follower's first request to this leadership,
   * and after it fell past MAX_REMOVALS): which of from..to - 1 are gone
   * here, at most RECONCILE_SPAN sequences looked at and MAX_GAP_RANGES
   * ranges listed, so the answer stays far below FETCH_BYTES.
   */
  private gaps(req: GapsRequest): Buffer {
    const { from, to, run, ops } = req;
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 1 || to < from || (run !== null && typeof run !== "string") || (ops !== null && !Number.isSafeInteger(ops))) {
      return encodeError("bad_request", "bad gaps request");
    }
    if (to > this.end) return encodeError("out_of_range", `sequence ${to} is beyond the leader's end ${this.end}`);
    if (run !== null && (ops === null || !this.knows(run, ops))) return encodeError("reconcile", `removal position ${ops} of ${run} is not one this leadership holds`);
    const f = this.followers.get(req.follower)!;
    if (run === null) this.startsOver(req.follower, f);
    // From here the follower will ask for removals from the position it adopts: keep them.
    f.opsFrom = ops ?? this.opEnd;
    const { log } = this.opts;
    const logStart = log.state().firstSeq;
    const gaps: number[] = [];
    // Two numbers a range, each a safe integer and a comma at most; the rest of the answer is a few hundred bytes.
    const named = namedAnswerBytes(req.maxBytes, 0);
    const maxRanges = named > 0 ? Math.max(1, Math.min(MAX_GAP_RANGES, Math.floor((named - 512) / (2 * REMOVAL_ROOM)))) : MAX_GAP_RANGES;
    let seq = Math.max(from, logStart);
    for (const stop = Math.min(to, seq + RECONCILE_SPAN); seq < stop; seq++) {
      if (log.has(seq)) continue;
      const n = gaps.length;
      if (n > 0 && gaps[n - 1] === seq - 1) gaps[n - 1] = seq;
      else if (n < 2 * maxRanges) gaps.push(seq, seq);
      else break;
    }
    // has() may have read a segment's detail and failed the log on the way: what it said since is not to be trusted.
    const failed = this.logFailed();
    if (failed !== null) return encodeError(failed.code, failed.message);
    return Buffer.from(JSON.stringify({ run: this.run, ops: this.opEnd, logStart, from, to, next: seq, gaps, end: this.end } satisfies GapsAnswer));
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
   * Removals from the leader's log (a message deleted, a purge with a
   * filter or `keep`, an acked message of a work-queue or interest stream,
   * an eviction under a per-subject limit), told once the log applied them
   * (its delete or purge resolved): followers delete them in this order.
   * Cheap (a number kept per sequence, no promise); the answer is the
   * removal position to hand `whenRemovalReplicated`. More than
   * MAX_REMOVALS at once are not kept: every follower reconciles instead.
   */
  removed(seqs: ArrayLike<number>, cause = 0): number {
    if (this.closedWith !== null) return this.opEnd;
    if (seqs.length > MAX_REMOVALS) return this.removedUnlisted();
    if (cause > 0) {
      let lowest = Infinity;
      for (let i = 0; i < seqs.length; i++) lowest = Math.min(lowest, seqs[i]);
      this.raiseCauses(lowest, cause);
    }
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i];
      if (!Number.isSafeInteger(seq) || seq < 1) continue;
      this.rOps.push(seq);
      if (cause > this.lastCause) this.lastCause = cause;
      this.rCause.push(this.lastCause);
      this.opEnd++;
    }
    this.afterRemoval();
    return this.opEnd;
  }

  /**
   * A purge from the front applied (everything below the log's first
   * sequence is gone: a purge without filter, limits evicting the oldest):
   * it ships as the log start every answer carries, so telling it is needed
   * only to wait for it; the removal position.
   */
  removedBelow(): number {
    if (this.closedWith !== null) return this.opEnd;
    // A purge past the end moved the log on (nats-server's purge with `seq`): its end moves with it, or the log start
    // the answers carry would lie past the end they name, and a follower purging to it would be beyond the leader.
    this.appended(this.opts.log.state().lastSeq);
    // A purge asked for: its log start goes to every follower at once (it takes whatever the limits took from the front before it).
    this.fronts = [];
    this.rOps.push(0);
    this.rCause.push(this.lastCause);
    this.opEnd++;
    this.afterRemoval();
    return this.opEnd;
  }

  /**
   * Removals applied that the caller cannot list (or too many to): every
   * follower reconciles before it fetches again, and the removal position
   * returned is passed once it has. For rare removals only: a
   * reconciliation reads the follower's whole log range in pages.
   */
  removedUnlisted(): number {
    if (this.closedWith !== null) return this.opEnd;
    this.opEnd++;
    this.dropRemovalsBelow(this.opEnd);
    this.afterRemoval();
    return this.opEnd;
  }

  /**
   * The limits took the log's front from `lowest` (evicting the oldest for
   * a size limit, a key's oldest value for a per-subject one) because of
   * the records up to `cause`: followers are sent a log start above
   * `lowest` only with everything up to `cause` (see rCause).
   */
  frontMoved(lowest: number, cause: number): void {
    if (this.closedWith !== null) return;
    // Forgotten once every follower has fetched past its cause (and so has the record that caused it).
    let low = Infinity;
    for (let i = 0; i < this.views.length; i++) low = Math.min(low, this.views[i].acked);
    let k = 0;
    while (k < this.fronts.length && this.fronts[k] < low) k += 2;
    if (k > 0) this.fronts = this.fronts.slice(k);
    if (cause < low) return;
    this.fronts.push(cause, lowest);
    if (this.fronts.length <= 2 * MAX_FRONTS) return;
    // Bounded: two neighbours merged hold back as much as both did (the later cause, the lower start), only longer.
    const merged: number[] = [];
    for (let i = 0; i < this.fronts.length; i += 4) {
      if (i + 2 >= this.fronts.length) merged.push(this.fronts[i], this.fronts[i + 1]);
      else merged.push(this.fronts[i + 2], Math.min(this.fronts[i + 1], this.fronts[i + 3]));
    }
    this.fronts = merged;
  }

  /** The cause removal position `pos` (held) waits for: its own, or a raise's. */
  private causeAt(pos: number): number {
    const own = this.rCause[this.rHead + pos - this.opBase];
    for (let j = this.raises.length - 2; j >= 0; j -= 2) if (this.raises[j] <= pos) return Math.max(own, this.raises[j + 1]);
    return own;
  }

  /**
   * The limits evicted sequences inside the log from `lowest` on because of
   * the records up to `cause`: a held removal or front move waiting for a
   * cause at or above `lowest` may wait for an evicted record, which no
   * answer carries any more; it waits for `cause` now. Causes grow with
   * positions, so those are a suffix: found by bisection, raised by one
   * pair. Evictions from the front raise nothing (they come with every
   * append to a full stream): the oldest record is a key's newest only when
   * the leader's limits took the key away altogether.
   */
  private raiseCauses(lowest: number, cause: number): void {
    for (let i = this.fronts.length - 2; i >= 0 && this.fronts[i] >= lowest; i -= 2) this.fronts[i] = Math.max(this.fronts[i], cause);
    let lo = this.opBase;
    let hi = this.opEnd;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.causeAt(mid) >= lowest) hi = mid;
      else lo = mid + 1;
    }
    if (lo >= this.opEnd) return;
    while (this.raises.length > 0 && this.raises[this.raises.length - 2] >= lo) this.raises.length -= 2;
    this.raises.push(lo, cause);
    if (cause > this.lastCause) this.lastCause = cause;
  }

  /** The log start an answer covering the log up to `next` may carry: never one moved by records past it. */
  private startFor(next: number, logStart: number): number {
    let start = logStart;
    for (let i = 0; i < this.fronts.length; i += 2) if (this.fronts[i] >= next && this.fronts[i + 1] < start) start = this.fronts[i + 1];
    return start;
  }

  /**
   * Calls `cb(null)` once every in-sync replica has applied every removal
   * before `op` (a position `removed` and its kin returned), in order; at
   * once if they have. Otherwise as `whenReplicated`: `cb(err)` if this
   * leadership ends first, false (and no call) when MAX_WAITERS wait.
   */
  whenRemovalReplicated<T>(op: number, cb: (err: Error | null, ctx: T) => void, ctx?: T): boolean {
    if (this.closedWith !== null) {
      cb(this.closedWith, ctx as T);
      return true;
    }
    if (op <= this.opHw) {
      cb(null, ctx as T);
      return true;
    }
    return this.removalWaiters.add(op - 1, cb, ctx);
  }

  private afterRemoval(): void {
    this.trimRemovals();
    this.advanceRemovals();
    // A held fetch is at the end with every earlier removal applied: answered now, with the new ones (once their causes are appended).
    if (this.parkedCount > 0) for (let i = 0; i < this.views.length; i++) if (this.views[i].parked !== null && this.removalsFor(this.views[i].parked!.req.ops)) this.release(this.views[i]);
  }

  /** Forgets removals every follower has passed, and past MAX_REMOVALS the oldest (who still needs them reconciles). */
  private trimRemovals(): void {
    let low = this.opEnd;
    for (let i = 0; i < this.views.length; i++) {
      const from = this.views[i].opsFrom;
      if (from >= 0 && from < low) low = from;
    }
    this.dropRemovalsBelow(Math.max(low, this.opEnd - MAX_REMOVALS));
  }

  private dropRemovalsBelow(low: number): void {
    if (low <= this.opBase) return;
    this.rHead += low - this.opBase;
    this.opBase = low;
    // Raises below the new base: the last of them holds from the base on.
    let k = 0;
    while (k + 2 < this.raises.length && this.raises[k + 2] <= low) k += 2;
    if (k > 0) this.raises = this.raises.slice(k);
    if (this.raises.length > 0 && this.raises[0] < low) this.raises[0] = low;
    if (this.rHead >= this.rOps.length) {
      this.rOps = [];
      this.rCause = [];
      this.raises = [];
      this.rHead = 0;
    } else if (this.rHead > 1024 && this.rHead * 2 > this.rOps.length) {
      this.rOps = this.rOps.slice(this.rHead);
      this.rCause = this.rCause.slice(this.rHead);
      this.rHead = 0;
    }
  }

  /** Recomputes the removal watermark (the lowest applied position over the ISR, never going back) and wakes its waiters. */
  private advanceRemovals(): void {
    let low = this.opEnd;
    for (let i = 0; i < this.isrViews.length; i++) low = Math.min(low, this.isrViews[i].ackedOps);
    if (low <= this.opHw) return;
    this.opHw = low;
    this.removalWaiters.release(low);
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
    this.opts.onAdvance?.();
  }

  /** The ISR as now agreed (after the fenced write in etcd): the leader stays in it; the high watermark may move on. */
  setIsr(isr: readonly string[]): void {
    const next = new Set(isr.filter((n) => n === this.opts.self || this.followers.has(n)));
    next.add(this.opts.self);
    this.isr = next;
    for (const n of next) this.joiners.delete(n);
    this.countViews();
  }

  /**
   * The followers proposed for the ISR (they were `readyToJoin`), all of
   * them: until `setIsr` has them they count for the high watermark as
   * members do, KIP-497's "maximal ISR". Else the watermark could pass what
   * a joiner lacks while the change is on its way to etcd, and the joiner,
   * in the ISR once it is agreed, could lead without it. Those no longer
   * proposed stop counting (a refused or undecided change is looked at
   * again at the next check, with the ISR as etcd then says).
   */
  joining(names: readonly string[]): void {
    const next = names.filter((n) => this.followers.has(n) && !this.isr.has(n));
    if (next.length === this.joiners.size && next.every((n) => this.joiners.has(n))) return;
    this.joiners.clear();
    for (const n of next) this.joiners.add(n);
    this.countViews();
  }

  /** Whether `name` is one of this partition's followers. */
  hasFollower(name: string): boolean {
    return this.followers.has(name);
  }

  /** The followers the high watermark waits for: the ISR's, and those joining it. */
  get counted(): readonly string[] {
    return this.countedNames;
  }

  private countViews(): void {
    const counted = [...this.followers].filter(([n]) => this.isr.has(n) || this.joiners.has(n));
    this.countedNames = counted.map(([n]) => n);
    this.isrViews = counted.map(([, f]) => f);
    this.advance();
    this.advanceRemovals();
  }

  /**
   * A follower starts over with this leadership (its first request: it may
   * have restarted, and may cut its log before it fetches): what it said
   * before no longer holds, so it counts as having nothing until it fetches.
   * Else a replica back from a restart would look as far along as its last
   * incarnation was, and could join the ISR without what it lacks.
   */
  private startsOver(name: string, f: FollowerView): void {
    f.acked = 0;
    f.ackedOps = 0;
    f.lastFetchEnd = 0;
    this.opts.onStartOver?.(name);
  }

  /**
   * Gives back to the answer budget what followers were sent over
   * ANSWER_HELD_MS ago and have not fetched past: no longer in the route,
   * so a follower stuck on its log holds no room from the others.
   */
  forgetStaleAnswers(): void {
    const budget = this.opts.answerBudget;
    if (budget === undefined) return;
    const t = this.now();
    for (const [name, f] of this.followers) {
      if (f.answered === 0 || t - f.answeredAt <= ANSWER_HELD_MS) continue;
      budget.give(name, f.answered);
      f.answered = 0;
    }
  }

  /** ISR followers (and joiners) not caught up for more than `maxLagMs` (Kafka's replica.lag.time.max.ms): to be removed from the ISR. */
  lagging(maxLagMs: number): string[] {
    const t = this.now();
    const out: string[] = [];
    // At the end now (a fetch held for the next append) is caught up, however long ago it last fetched.
    for (const [name, f] of this.followers) if ((this.isr.has(name) || this.joiners.has(name)) && f.acked < this.end && t - f.caughtUpAt > maxLagMs) out.push(name);
    return out;
  }

  /**
   * Followers out of the ISR that have caught up to the high watermark and
   * into this epoch, applied the removals the ISR has, and are not lagging
   * (`maxLagMs`, as `lagging`: a joiner counted holds the watermarks down
   * itself, so being at them is not enough): to be added back.
   */
  readyToJoin(maxLagMs = Infinity): string[] {
    const t = this.now();
    const out: string[] = [];
    for (const [name, f] of this.followers) {
      if (this.isr.has(name) || !this.atWatermark(f)) continue;
      if (f.acked < this.end && t - f.caughtUpAt > maxLagMs) continue;
      out.push(name);
    }
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
    for (const [name, f] of this.followers) {
      // Answers of this leadership are no longer counted (what the route still holds of them drains on its own).
      if (f.answered > 0) this.opts.answerBudget?.give(name, f.answered);
      f.answered = 0;
      const d = f.deferred;
      this.dropDeferred(f);
      if (f.queued !== null) f.queued.need = 1;
      d?.answer(encodeError("not_leader", why));
      const p = f.parked;
      if (p === null) continue;
      clearTimeout(p.timer);
      f.parked = null;
      this.parkedCount--;
      p.answer(encodeError("not_leader", why));
    }
    this.waiters.fail(this.closedWith);
    this.removalWaiters.fail(this.closedWith);
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
  /**
   * Takes back a fetch answer `request` gave, once the follower has stored
   * it and nothing reads it any more (its log copied what it keeps: a file
   * log stages the records it copies and reads a foreign batch until its
   * append is done). Not called for an answer that failed anywhere.
   */
  release?(answer: Buffer): void;
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

/** Messages a follower removed from its copy (ReplicaFollowerOptions.onRemoved). */
export interface Removed {
  how: "truncated" | "purged" | "deleted";
  /** The sequences looked at (inclusive). */
  from: number;
  to: number;
  messages: number;
  why: string;
  fetched: boolean;
}

export interface ReplicaFollowerOptions {
  self: string;
  log: FollowerLog;
  epochs: LeaderEpochs;
  /** The leader epoch it follows (the placement's). */
  epoch: number;
  transport: ReplicaTransport;
  /** Each answer's size at most (FETCH_BYTES if less or unset). */
  maxBytes?: number;
  /** This node's max_payload, which its route enforces: named in each fetch. */
  maxPayload?: number;
  maxWaitMs?: number;
  /** Back-off after a failed round, doubling from `min` to `max`. */
  backoffMs?: { min: number; max: number };
  /** A failed round (the loop goes on after its back-off). */
  onError?: (err: Error) => void;
  /**
   * The leader's log loses its front only by a purge (no limits evict it):
   * a prefix this copy lacks, held at the leader, is fetched again rather
   * than left for the limits to drop, so a copy with a hole (damage, a bug)
   * neither leads with it nor spreads it to the others.
   */
  wholeLog?: boolean;
  /** A round applied: the follower's next sequence. */
  onFetched?: (next: number) => void;
  /** Items copied from the leader, once appended; the next fetch (which acknowledges them) waits for a promise returned. */
  onCopied?: (items: readonly StoredItem[]) => void | Promise<void>;
  /** The log was cut back from `fromSeq` on (KIP-101), whether or not messages went (sequences may have been empty). */
  onCut?: (fromSeq: number) => void;
  /**
   * The log is about to be cut from `fromSeq` on (0: nothing in it is known
   * to be the leader's): told before the cut, so that a cut that fails part
   * way (and is finished by a reopen, after which no cut is seen) still
   * forgets what was to go.
   */
  onCutting?: (fromSeq: number) => void | Promise<void>;
  /**
   * Stored messages this copy gave up to agree with its leader: a truncation
   * (what an older epoch wrote), a purge below the leader's log start, or
   * deletes of what the leader removed. Told so that no message leaves a
   * replica unseen in its node's log. `fetched`: a purge that came with a
   * fetch answer, which the leader's limits make all the time.
   */
  onRemoved?: (r: Removed) => void;
  /**
   * Where the bar on leading (`mayLead`) outlives this follower: the bar an
   * earlier copy of this partition left (`initial`, whatever its leadership:
   * a cut tail is not seen again by a later reconciliation, which looks only
   * at what the copy holds), and `save`, which must have made a changed bar
   * durable when it resolves: it is called before what raised it is
   * removed. Without, a copy restarted, or following a new leader, after a
   * reconciliation cut acknowledged records could lead without them. Each
   * reconciliation page lowers the bar to its leader's end, which holds
   * everything acknowledged.
   */
  bar?: { initial: number; save(bar: number): Promise<void> };
}

/**
 * Follows one leader in one epoch: truncates to where its log and the
 * leader's agree, reconciles what both have (deletes what the leader
 * removed), then fetches, applies the leader's removals and appends until
 * closed. A leader change is a new ReplicaFollower (close this one first).
 */
export class ReplicaFollower {
  private closed = false;
  private truncated = false;
  private reconciled = false;
  /** The leadership reconciled with, and the removals of it applied: what each fetch says. */
  private leaderRun: string | null = null;
  private ops = 0;
  private hw = 0;
  private loop: Promise<void> | null = null;
  /** A write to the log under way: close() waits for it, and none starts after. */
  private writing: Promise<unknown> | null = null;
  private wake: (() => void) | null = null;
  private pauseTimer: NodeJS.Timeout | null = null;
  /** Rounds applied. */
  rounds = 0;
  /** Reconciliations done (one at start, more when the leader asked for one). */
  reconciliations = 0;
  /**
   * The leader's log end as its reconciliation pages said, when they made
   * this log delete or purge anything: it may lead only once it reaches it
   * (`mayLead`). A reconciliation deletes what the leader's limits evicted
   * because of records this log may not have yet (a key's old value, whose
   * new one it has still to fetch): until it has them, leading would lose
   * the key. One that deleted nothing is as it was under its last leader.
   */
  private mustReach: number;

  constructor(private readonly opts: ReplicaFollowerOptions) {
    this.mustReach = opts.bar?.initial ?? 0;
  }

  /** The leader's high watermark as last heard, capped at this log's end. */
  get highWatermark(): number {
    return this.hw;
  }

  /** The removal position applied (of the leadership reconciled with). */
  get removalsApplied(): number {
    return this.ops;
  }

  /**
   * Whether this copy may take over: caught up to the leader's end as its
   * reconciliation saw it, and holding everything from the leader's log
   * start as last heard. A copy whose log begins above it lacks records the
   * leader holds (a front removal the leader has not made yet, or a hole):
   * leading, it would have the others purge them.
   */
  /** The bar on leading as it stands (what this copy must reach first; 0: none). */
  get bar(): number {
    return this.mustReach;
  }

  get mayLead(): boolean {
    const st = this.opts.log.state();
    const first = st.messages > 0 ? st.firstSeq : st.lastSeq + 1;
    return st.lastSeq + 1 >= this.mustReach && (this.leaderLogStart === 0 || first <= this.leaderLogStart);
  }

  /**
   * The highest log start the leader's answers named (0: none yet). An
   * answer may name a lower one than an earlier did (a fetch answer holds
   * its start back while the records that moved the front are still to
   * come), but the leader's own first sequence never goes down within a
   * leadership: the highest heard is the closest lower bound of it.
   */
  private leaderLogStart = 0;

  private heardLogStart(logStart: number): void {
    if (logStart > this.leaderLogStart) this.leaderLogStart = logStart;
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
      // A failed log takes nothing until reopened. Fetching meanwhile would tell the leader this copy is where its memory
      // says: counted in sync again, it would hold the high watermark (every acknowledgement) until it fell behind.
      if (this.opts.log.state().error !== null) {
        await this.pause(min);
        continue;
      }
      try {
        if (!this.truncated) {
          await this.truncate();
          this.truncated = true;
          this.reconciled = false;
        }
        if (!this.reconciled) {
          await this.reconcile();
          if (this.closed) break;
          this.reconciled = true;
        }
        await this.fetchOnce();
        backoff = min;
      } catch (err) {
        if (this.closed) break;
        if (err instanceof ReplicaError && (err.code === "out_of_range" || err.code === "diverged")) this.truncated = false;
        if (err instanceof ReplicaError && err.code === "reconcile") this.reconciled = false;
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

  private async ask(req: FetchRequest | EndOfRequest | GapsRequest, ms: number): Promise<Buffer> {
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
      this.heardLogStart(a.logStart);
      const own = a.epoch === UNDEFINED_EPOCH ? null : epochs.endOf(a.epoch, next);
      if (own === null || own.epoch === UNDEFINED_EPOCH) {
        // Nothing shared for sure: keep only what the leader no longer has (below its log start), which the first fetch purges.
        cut = Math.min(next, a.logStart);
        // None of it is known to be the leader's, the part kept below its log start included.
        await this.opts.onCutting?.(0);
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
      const before = log.state().messages;
      if (cut < next) await this.opts.onCutting?.(cut);
      const end = cut < next ? ((await log.truncateFrom(cut)) ?? cut) : cut;
      if (end < next) this.opts.onCut?.(end);
      await epochs.truncateFrom(end);
      this.told("truncated", end, next - 1, before - log.state().messages, "to where this copy's leader epochs agree with the leader's");
    });
  }

  private told(how: Removed["how"], from: number, to: number, messages: number, why: string, fetched = false): void {
    if (messages > 0) this.opts.onRemoved?.({ how, from, to, messages, why, fetched });
  }

  /**
   * Compares, page by page, the sequences this log has (from its first to
   * its end) with the leader's: deletes what the leader removed, purges
   * below the leader's log start, and where the leader has what this log
   * lacks (a removal this log applied that the leader never did: an earlier
   * leader's, unacknowledged) truncates there, to fetch it again. Then
   * adopts the leadership's removal position the pages reflect: the lowest
   * they were answered at. A prefix this log lacks below its own first
   * sequence is left as it is (the leader's limits drop it in time), unless
   * `wholeLog`: then the pages start at the leader's log start, and the
   * first sequence the leader holds and this log lacks is where it cuts.
   */
  private async reconcile(): Promise<void> {
    const { log, epochs } = this.opts;
    const st = log.state();
    const end = st.lastSeq + 1;
    let from = this.opts.wholeLog === true ? 1 : st.messages > 0 ? st.firstSeq : end;
    let run: string | null = null;
    let ops: number | null = null;
    for (;;) {
      const req: GapsRequest = { op: "gaps", follower: this.opts.self, epoch: this.opts.epoch, from, to: end, run, ops, maxBytes: this.opts.maxBytes ?? FETCH_BYTES };
      const a = decodeGapsAnswer(await this.ask(req, ANSWER_MARGIN_MS));
      if (this.closed) return;
      this.heardLogStart(a.logStart);
      if (a.from !== from || a.to !== end || (run !== null && a.run !== run)) throw new Error(`a late answer (from ${a.from}) to an earlier reconciliation page`);
      const lo = Math.max(from, a.logStart);
      if (a.next < lo || (a.next === lo && lo < end) || a.next > Math.max(lo, Math.min(end, lo + RECONCILE_SPAN))) throw new ReplicaError("bad_request", "bad gaps answer");
      run = a.run;
      ops = ops === null ? a.ops : Math.min(ops, a.ops);
      const lacking: number[] = [];
      let cut = 0;
      for (let seq = lo, g = 0; seq < a.next; seq++) {
        while (g < a.gaps.length && a.gaps[g + 1] < seq) g += 2;
        if (g < a.gaps.length && a.gaps[g] <= seq) {
          if (log.has(seq)) lacking.push(seq);
        } else if (!log.has(seq)) {
          cut = seq;
          break;
        }
      }
      await this.write(async () => {
        const upTo = Math.min(a.logStart, end);
        const now = log.state();
        // Before anything goes: a failure halfway leaves the bar up (raised only, never lowered within this follower).
        // A cut too: what it removes may be acknowledged (a hole refilled), and this copy may still be in the ISR.
        // The bar: the leader's end when this page makes the copy give anything up; else lowered to it, since this
        // leader was in sync and holds everything acknowledged (a bar not known, or of an earlier leadership past what
        // any copy holds now, would keep this one from ever leading). Within a leadership the end only grows.
        const removes = (now.messages > 0 && now.firstSeq < upTo) || lacking.length > 0 || cut > 0;
        const bar = a.end === undefined ? this.mustReach : removes ? a.end : Math.min(this.mustReach, a.end);
        if (bar < this.mustReach) {
          // Lowered: at once (a higher bar on disk only bars longer).
          this.mustReach = bar;
          await this.opts.bar?.save(bar);
        } else if (bar > this.mustReach) {
          // Raised: durable first, so a save that fails fails the round before anything goes, and the next one saves again.
          await this.opts.bar?.save(bar);
          this.mustReach = bar;
        }
        if (now.messages > 0 && now.firstSeq < upTo) {
          this.told("purged", now.firstSeq, upTo - 1, await log.purge({ upTo }), `below the leader's log start ${a.logStart} (reconciling)`);
          await epochs.trimBelow(upTo);
        }
        const kept = log.state().messages;
        await deleteStored(log, lacking, end);
        this.told("deleted", lacking[0] ?? 0, lacking[lacking.length - 1] ?? 0, kept - log.state().messages, "removed at the leader (reconciling)");
        if (cut > 0) {
          const before = log.state().messages;
          await this.opts.onCutting?.(cut);
          const from = (await log.truncateFrom(cut)) ?? cut;
          this.opts.onCut?.(from);
          await epochs.truncateFrom(from);
          // From where the log was cut: lower than `cut` when a Kafka batch across it went whole.
          this.told("truncated", from, end - 1, before - log.state().messages, "the leader has a message this copy lacks there (reconciling)");
        }
      });
      if (cut > 0 || a.next >= end) break;
      from = a.next;
    }
    this.leaderRun = run;
    this.ops = ops;
    this.reconciliations++;
  }

  private async fetchOnce(): Promise<void> {
    const { log, epochs } = this.opts;
    const st = log.state();
    const from = st.lastSeq + 1;
    const maxWaitMs = Math.min(this.opts.maxWaitMs ?? MAX_WAIT_MS, MAX_WAIT_MS);
    const run = this.leaderRun!;
    const ops = this.ops;
    const req: FetchRequest = { op: "fetch", follower: this.opts.self, from, epoch: this.opts.epoch, run, ops, maxBytes: this.opts.maxBytes ?? FETCH_BYTES, maxWaitMs, keepsCut: true, ...(this.opts.maxPayload !== undefined ? { maxPayload: this.opts.maxPayload } : {}) };
    const raw = await this.ask(req, maxWaitMs + ANSWER_MARGIN_MS);
    const a = decodeFetchAnswer(raw);
    if (this.closed) return;
    if (a.from !== from || a.epoch !== this.opts.epoch || a.run !== run || a.ops !== ops) {
      throw new Error(`a late answer (from ${a.from}, epoch ${a.epoch}, removals from ${a.ops}) to an earlier fetch`);
    }
    // Before the purge below raises this log's first sequence to it.
    this.heardLogStart(a.logStart);
    await this.write(async () => {
      // An epoch is on disk before what it wrote is (leader-epochs.ts).
      for (const e of a.epochs) {
        if (e.epoch <= epochs.latest()) continue;
        if (e.start < from) throw new ReplicaError("diverged", `the leader's epoch ${e.epoch} starts at ${e.start}, inside this log (next ${from})`);
        await epochs.assign(e.epoch, e.start);
      }
      const after = await appendItems(log, a.items, from);
      if (a.items.length > 0) await this.opts.onCopied?.(a.items);
      if (a.next > after) await appendCopy(log, a.next, 0, []);
      // Then the leader's log start and removals below `from`, durable before the next fetch acknowledges them (its `ops`):
      // after the records that caused them (a key's new value), so that an append that fails (a full disk) leaves the old.
      const now = log.state();
      if (now.messages > 0 && now.firstSeq < a.logStart) {
        this.told("purged", now.firstSeq, a.logStart - 1, await log.purge({ upTo: a.logStart }), `below the leader's log start ${a.logStart}`, true);
        await epochs.trimBelow(a.logStart);
      }
      await deleteStored(log, a.removals, from);
    });
    // Every append resolved: the log holds its own copy of what it keeps.
    this.opts.transport.release?.(raw);
    this.ops = a.opsTo;
    this.hw = Math.min(a.highWatermark, Math.max(a.next, from));
    this.rounds++;
    this.opts.onFetched?.(a.next);
  }
}

/** Deletes those of `seqs` below `below` that `log` has, DELETE_CHUNK under way at once; resolves once all are durable. */
async function deleteStored(log: MessageLog, seqs: readonly number[], below: number): Promise<void> {
  let batch: Array<Promise<boolean>> = [];
  for (const seq of seqs) {
    if (seq >= below || !log.has(seq)) continue;
    batch.push(log.delete(seq));
    if (batch.length >= DELETE_CHUNK) {
      await Promise.all(batch);
      batch = [];
    }
  }
  await Promise.all(batch);
}
