/**
 * Moving a JetStream stream to another node without losing a message (see
 * docs/CLUSTER.md, "Moving a stream"). The leader records the move in the
 * placement (`moving: <target>`, cluster-api.ts's UPDATE); then:
 *
 * 1. the target creates a copy it does not lead (routed publishes reach it
 *    and are dropped) and pulls the leader's messages in batches over the
 *    routes (`$NG.MOVE.COPY.<stream>`), appending each at its own sequence:
 *    a leading gap by a purge up to the first sequence, an interior gap by
 *    a placeholder appended and deleted, so every sequence is the leader's;
 * 2. caught up, it asks the leader to freeze (`$NG.MOVE.FREEZE.<stream>`):
 *    the leader refuses every change from then on (a retryable 503), stops
 *    its consumers delivering and holds the acks and consumer changes that
 *    reach it (hold()), waits until nothing is on its way to the log (nor
 *    a retention delete), takes its consumers' state, and answers its
 *    final state with the sequences deleted since and how many consumers;
 * 3. the target copies the tail, deletes what the leader deleted, checks
 *    its state equals the leader's, rebuilds its dedup window from the
 *    copied `Nats-Msg-Id`s, pulls every consumer's definition and state in
 *    bounded pages (`$NG.MOVE.CONSUMERS.<stream>`) and creates each at that
 *    state, and flips the placement (`leaders = [target]`, no `moving`) in
 *    one fenced, revision-compared change;
 * 4. the old leader, frozen, sees the flip, hands what waits on its
 *    consumers (pull requests, held acks and consumer changes) to the new
 *    leader, and deletes its copy without telling its clients the
 *    consumers are gone; the new leader serves what it was handed once it
 *    sees the flip itself.
 *
 * Nothing acknowledged is lost: every acknowledged write is in the leader's
 * log before the freeze answers, nothing is acknowledged while frozen, and
 * only the target stores after the flip. A move that fails is cancelled by
 * clearing `moving` (fenced): by the target when it fails, by the leader
 * when the freeze outlives FREEZE_MS. The leader unfreezes only once it
 * sees a placement naming it leader without a move, which the target's
 * flip (conditional on `moving`) can then never follow; if the flip won,
 * the leader's cancel fails on the revision and it drops its copy.
 *
 * Every consumer moves, ephemerals too (nats-server 2.9 moves them all
 * with the stream): an unacknowledged delivery keeps its delivery count
 * and is redelivered by the new leader when its ack wait runs out.
 *
 * Limits of this first version (refused when asked): one partition,
 * JetStream origin. Times are the copy's (the log assigns them), so
 * max_age counts from the move on the new leader.
 */

import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import type { AppendInput, MessageLog, StoredMessage } from "../store/log.js";
import type { ClusterStreams, PlacedStream } from "./cluster-streams.js";
import type { JetStream } from "./jetstream.js";
import { limitsOf, type Stream } from "./stream.js";
import type { ConsumerConfig } from "./config.js";
import type { MovedState } from "./consumer.js";

export const MOVE_PREFIX = `${CLUSTER_INTERNAL_PREFIX}MOVE.`;
const COPY = "COPY.";
const FREEZE = "FREEZE.";
const CONSUMERS = "CONSUMERS.";
/** One copy answer's records (at least one message is sent): below a route's default max payload. */
export const BATCH_BYTES = 256 * 1024;
const BATCH_MESSAGES = 1024;
/** How long the target waits for one answer of the leader. */
const REQUEST_MS = 5000;
/** How long a leader stays frozen for a target that does not flip: then it cancels the move. */
export const FREEZE_MS = 10_000;
/** How long a freezing leader waits for appends in flight to reach its log. */
const QUIET_MS = 5000;
/** Gaps listed in a freeze answer, and the largest interior gap copied with placeholders. */
const MAX_GAPS = 100_000;
const GAP_SUBJECT = `${MOVE_PREFIX}GAP`;
/** Pending deliveries per part of a consumers answer: entries of about 50 bytes, well below BATCH_BYTES. */
const PENDING_PART = 4096;
/** Acks and consumer changes held for one frozen stream, and their bytes: past either, the API refuses and an ack is dropped (it is redelivered). */
const HELD_MAX = 16_384;
const HELD_BYTES = 16 * 1024 * 1024;
/** Consumers the target writes to disk at once. */
const ADOPT_CONCURRENCY = 32;

/** What the mover needs of the account's cluster API: internal requests to a node, answers, and serving or handing over a client's request. */
export interface MoveHost {
  readonly js: JetStream;
  readonly cluster: ClusterStreams;
  request(node: string, subject: string, body: Uint8Array, ms: number): Promise<Buffer | null>;
  answer(reply: string, body: Buffer): void;
  /** Serves a client's request here, as if it had just arrived. */
  serveLocal(subject: string, body: Buffer, reply: string): void;
  /** Sends a client's request to `node` to serve (and never forward again). */
  handOver(node: string, subject: string, reply: string, body: Buffer): void;
}

interface FrozenState {
  first: number;
  last: number;
  messages: number;
  deleted: number[];
  /** How many consumers the target is to fetch (CONSUMERS). */
  consumers: number;
}

/** A consumer as the frozen leader took it. */
export interface ConsumerCopy {
  name: string;
  config: ConsumerConfig;
  created: string;
  state: MovedState;
}

/** One part of a consumers answer: a consumer's first part carries its definition and state, the next ones more of its pending deliveries. */
interface ConsumerPart {
  name: string;
  config?: ConsumerConfig;
  created?: string;
  state?: Omit<MovedState, "pending"> & { pendingCount: number };
  pending: MovedState["pending"];
}

/** Where the next consumers answer starts: a consumer (by index, in name order) and an offset into its pending deliveries. */
interface ConsumersCursor {
  consumer: number;
  pending: number;
}

/** A client's request that reached a frozen stream, kept until the move ends. */
interface Held {
  subject: string;
  body: Buffer;
  reply: string;
}

export class StreamMover {
  /** Streams this node is copying to itself. */
  private readonly copying = new Set<string>();
  /** Streams frozen here for a move, with the timer that cancels a move that does not flip. */
  private readonly freezes = new Map<string, NodeJS.Timeout>();
  /** Moves this process recorded as leader (see placed()). */
  private readonly recordedHere = new Set<string>();
  /** The consumers of streams frozen here, as taken when the freeze was answered (they cannot change until it ends). */
  private readonly taken = new Map<string, ConsumerCopy[]>();
  /** Streams this mover froze here and has not seen end their move: acks need no look-up while it is empty. */
  private readonly frozenHere = new Set<string>();
  /** Acks and consumer changes for streams frozen here, in arrival order (see hold()). */
  private readonly held = new Map<string, { stream: Stream; items: Held[]; bytes: number }>();
  private closed = false;
  private readonly listener = (account: string, name: string, placed: PlacedStream): void => this.placed(account, name, placed);

  constructor(private readonly host: MoveHost) {
    host.cluster.moveListeners.add(this.listener);
  }

  close(): void {
    this.closed = true;
    this.host.cluster.moveListeners.delete(this.listener);
    for (const t of this.freezes.values()) clearTimeout(t);
    this.freezes.clear();
    this.taken.clear();
    this.held.clear();
    this.frozenHere.clear();
  }

  /** Whether some stream may be frozen here: else no request need be looked at by hold(). */
  get freezing(): boolean {
    return this.frozenHere.size > 0;
  }

  /**
   * A client's ack or consumer change (create, delete) for `stream`: while
   * the stream is frozen here the consumers' state must not change (it is
   * being copied, or is the copy), so the request waits, in order, until
   * the move ends: served here if it was cancelled (or, on the new leader,
   * once it sees the flip), handed to the new leader if it flipped. A
   * double ack is answered by whoever finally applies it. "full": past the
   * bound, the caller refuses (or drops an ack, which is then redelivered).
   */
  hold(stream: string, subject: string, body: Buffer, reply: string): "held" | "full" | "no" {
    if (!this.frozenHere.has(stream)) return "no";
    const s = this.host.js.streams.get(stream);
    if (s === undefined || !s.frozen) {
      if (s === undefined) this.frozenHere.delete(stream);
      return "no";
    }
    let h = this.held.get(stream);
    if (h === undefined || h.stream !== s) {
      h = { stream: s, items: [], bytes: 0 };
      this.held.set(stream, h);
    }
    if (h.items.length >= HELD_MAX || h.bytes + body.length > HELD_BYTES) return "full";
    h.items.push({ subject, body, reply });
    h.bytes += body.length;
    return "held";
  }

  /** The stream serves again here: what was held is served, in order, and its consumers deliver. */
  private release(name: string, s: Stream): void {
    this.frozenHere.delete(name);
    this.taken.delete(name);
    const h = this.held.get(name);
    this.held.delete(name);
    if (h !== undefined && h.stream === s) for (const r of h.items) this.host.serveLocal(r.subject, r.body, r.reply);
    for (const c of s.consumers.values()) c.notify();
  }

  /** The move flipped away from this node: what waits on its consumers goes to the new leader before the copy here is deleted. */
  private handOver(name: string, s: Stream, to: string): void {
    clearTimeout(this.freezes.get(name));
    this.freezes.delete(name);
    this.frozenHere.delete(name);
    this.taken.delete(name);
    const h = this.held.get(name);
    this.held.delete(name);
    const now = Date.now();
    // Pull requests waiting here were sent before anything held: they go first.
    for (const c of s.consumers.values()) {
      for (const r of c.handOverWaiting(now)) this.host.handOver(to, `$JS.API.CONSUMER.MSG.NEXT.${name}.${c.name}`, r.reply, r.body);
    }
    if (h !== undefined && h.stream === s) for (const r of h.items) this.host.handOver(to, r.subject, r.reply, r.body);
  }

  private get account(): string {
    return this.host.js.account.name;
  }

  private get self(): string {
    return this.host.cluster.self;
  }

  /** A stream hosted here was settled against its placement: start copying, or unfreeze after a cancelled move or a flip. */
  private placed(account: string, name: string, placed: PlacedStream): void {
    if (account !== this.account || this.closed) return;
    const self = this.self;
    if (placed.moving === self && !placed.leaders.includes(self)) {
      if (this.copying.has(name)) return;
      this.copying.add(name);
      void this.copy(name, placed.leaders[0]).finally(() => this.copying.delete(name));
      return;
    }
    const s = this.host.js.streams.get(name);
    if (s === undefined) return;
    // A move's copy no longer placed here (the old leader's after the flip, a cancelled target's): about to be deleted.
    if (placed.leaders[0] !== self) {
      if (s.movedOut && placed.moving !== self) this.handOver(name, s, placed.leaders[0]);
      return;
    }
    // Led here with no move: the move was cancelled (old leader) or has flipped (new leader).
    if (placed.moving === undefined) {
      this.recordedHere.delete(name);
      if (s.frozen) {
        clearTimeout(this.freezes.get(name));
        this.freezes.delete(name);
        s.frozen = false;
        s.movedOut = false;
        this.release(name, s);
      }
      return;
    }
    // A move this process did not record: recorded before a restart, whose freeze (in memory) is gone. Writes are
    // refused again and the move is cancelled at once, since the target may have been told a final state already.
    if (!this.recordedHere.has(name) && !s.frozen) {
      s.frozen = true;
      this.frozenHere.add(name);
      this.armCancel(name, placed.moving, 0);
    }
  }

  /** The leader is about to record a move of `name` (cluster-api.ts's UPDATE): a move it knows of, not one from before a restart. */
  recording(name: string): void {
    this.recordedHere.add(name);
  }

  // ---- the target ----

  private async copy(name: string, leader: string): Promise<void> {
    const { js, cluster } = this.host;
    const log = js.options.log;
    try {
      await cluster.settle(this.account, name);
      const s = js.streams.get(name);
      if (s === undefined || s.partitions.length !== 1) throw new Error("no local copy to fill");
      // Refuses writes through the stream; the copy writes to its log. A cancelled move then deletes it (cluster-streams.ts).
      s.frozen = true;
      s.movedOut = true;
      this.frozenHere.add(name);
      const part = s.partitions[0];
      // The leader's limits already shaped what it sends; placeholders must not evict anything meanwhile.
      part.setLimits({});
      await this.pull(name, leader, part);
      const frozen = await this.freeze(name, leader);
      await this.pull(name, leader, part);
      for (const seq of frozen.deleted) if (part.has(seq)) await part.delete(seq);
      if (part.state().firstSeq < frozen.first) await part.purge({ upTo: frozen.first });
      await this.advance(part, frozen.last + 1);
      const st = part.state();
      if (st.firstSeq !== frozen.first || st.lastSeq !== frozen.last || st.messages !== frozen.messages) {
        throw new Error(`copy differs from the leader's: first ${st.firstSeq}/${frozen.first}, last ${st.lastSeq}/${frozen.last}, messages ${st.messages}/${frozen.messages}`);
      }
      part.setLimits(limitsOf(s.config));
      await s.recover();
      const consumers = await this.pullConsumers(name, leader, frozen.consumers);
      // At the leader's state, before the flip; the stream is frozen here until then, so they do not deliver yet.
      // Each is a few durable writes: side by side, a few dozen at a time, to fit many consumers in the freeze's deadline.
      for (let i = 0; i < consumers.length; i += ADOPT_CONCURRENCY) {
        await Promise.all(consumers.slice(i, i + ADOPT_CONCURRENCY).map((c) => js.adoptMovedConsumer(s, c.name, c.config, new Date(c.created), c.state)));
      }
      const self = this.self;
      await cluster.directory.update(this.account, name, (p) => {
        if (p.moving !== self || p.leaders[0] !== leader) throw new Error("the move was cancelled");
        const next = { ...p, leaders: [self] };
        delete next.moving;
        return next;
      });
      log.info(`cluster: stream "${name}" of account ${this.account} moved here from ${leader} (${st.messages} messages, sequences ${st.firstSeq}..${st.lastSeq}, ${consumers.length} consumers)`);
    } catch (err) {
      log.warn(`cluster: moving stream "${name}" of account ${this.account} here from ${leader} failed: ${(err as Error).message}; cancelling the move`);
      await this.cancel(name, this.self).catch(() => undefined);
    }
  }

  /** Copies the leader's messages after this copy's last sequence until the leader has no more. */
  private async pull(name: string, leader: string, part: MessageLog): Promise<void> {
    for (;;) {
      const from = part.state().lastSeq + 1;
      const b = await this.host.request(leader, `${MOVE_PREFIX}${COPY}${name}`, Buffer.from(JSON.stringify({ from })), REQUEST_MS);
      if (b === null) throw new Error(`${leader} did not answer`);
      const msgs = decodeBatch(b);
      if (msgs.length === 0) return;
      await this.advance(part, msgs[0].seq);
      let next = msgs[0].seq;
      const gaps: number[] = [];
      const appends: Array<Promise<void>> = [];
      for (const m of msgs) {
        if (m.seq < next) throw new Error(`the leader sent sequence ${m.seq} out of order`);
        if (m.seq - next > MAX_GAPS) throw new Error(`a gap of ${m.seq - next} sequences is too large to copy`);
        for (; next < m.seq; next++) {
          gaps.push(next);
          appends.push(appendAt(part, { subject: GAP_SUBJECT, data: Buffer.alloc(0) }, next));
        }
        appends.push(appendAt(part, m, next++));
      }
      await Promise.all(appends);
      for (const seq of gaps) await part.delete(seq);
    }
  }

  /**
   * Fetches the frozen leader's consumers, page by page (each answer below
   * a route's max payload, however many consumers and pending acks), and
   * checks that every one came whole.
   */
  private async pullConsumers(name: string, leader: string, expected: number): Promise<ConsumerCopy[]> {
    const out: ConsumerCopy[] = [];
    if (expected === 0) return out;
    const counts: number[] = [];
    let cursor: ConsumersCursor | null = { consumer: 0, pending: 0 };
    while (cursor !== null) {
      const b = await this.host.request(leader, `${MOVE_PREFIX}${CONSUMERS}${name}`, Buffer.from(JSON.stringify(cursor)), REQUEST_MS);
      if (b === null) throw new Error(`${leader} did not answer for the consumers`);
      const r = JSON.parse(b.toString()) as { parts?: ConsumerPart[]; next?: ConsumersCursor | null; error?: string };
      if (r.error !== undefined) throw new Error(r.error);
      if (!Array.isArray(r.parts) || (r.parts.length === 0 && r.next !== null)) throw new Error("bad consumers answer");
      for (const part of r.parts) {
        if (typeof part.name !== "string" || !Array.isArray(part.pending)) throw new Error("bad consumers answer");
        if (part.state !== undefined) {
          if (typeof part.config !== "object" || part.config === null || typeof part.created !== "string") throw new Error(`bad consumer ${part.name}`);
          const { pendingCount, ...state } = part.state;
          out.push({ name: part.name, config: part.config, created: part.created, state: { ...state, pending: [...part.pending] } });
          counts.push(pendingCount);
        } else {
          const last = out[out.length - 1];
          if (last?.name !== part.name) throw new Error(`pending deliveries of consumer ${part.name} out of order`);
          for (const e of part.pending) last.state.pending.push(e);
        }
      }
      cursor = r.next ?? null;
    }
    if (out.length !== expected) throw new Error(`the leader sent ${out.length} consumers of ${expected}`);
    out.forEach((c, i) => {
      if (c.state.pending.length !== counts[i]) throw new Error(`consumer ${c.name}: ${c.state.pending.length} pending deliveries of ${counts[i]} came`);
    });
    return out;
  }

  /**
   * Moves the copy on so that its next sequence is `to`: an empty copy by a
   * purge (nothing to keep), one with messages by placeholders appended and
   * deleted (the leader's last sequences were deleted).
   */
  private async advance(part: MessageLog, to: number): Promise<void> {
    const st = part.state();
    const next = st.lastSeq + 1;
    if (to <= next) return;
    if (st.messages === 0) {
      await part.purge({ upTo: to });
      return;
    }
    if (to - next > MAX_GAPS) throw new Error(`a gap of ${to - next} sequences is too large to copy`);
    const seqs: number[] = [];
    for (let seq = next; seq < to; seq++) seqs.push(seq);
    await Promise.all(seqs.map((seq) => appendAt(part, { subject: GAP_SUBJECT, data: Buffer.alloc(0) }, seq)));
    for (const seq of seqs) await part.delete(seq);
  }

  private async freeze(name: string, leader: string): Promise<FrozenState> {
    const b = await this.host.request(leader, `${MOVE_PREFIX}${FREEZE}${name}`, Buffer.from(JSON.stringify({ to: this.self })), REQUEST_MS + QUIET_MS);
    if (b === null) throw new Error(`${leader} did not answer the freeze`);
    const r = JSON.parse(b.toString()) as FrozenState & { error?: string };
    if (r.error !== undefined) throw new Error(r.error);
    return r;
  }

  /** Clears a move to `target` from the placement, fenced: fails if the placement changed meanwhile (a flip, another move). */
  private async cancel(name: string, target: string): Promise<void> {
    await this.host.cluster.directory.update(this.account, name, (p) => {
      if (p.moving !== target) throw new Error("no such move");
      const next = { ...p };
      delete next.moving;
      return next;
    });
  }

  // ---- the leader ----

  /** Answers a target's internal request (`subject` after MOVE_PREFIX). */
  serve(subject: string, body: Buffer, reply: string): void {
    if (reply === "") return;
    const answerError = (why: string): void => this.host.answer(reply, Buffer.from(JSON.stringify({ error: why })));
    const op = subject.startsWith(COPY) ? COPY : subject.startsWith(FREEZE) ? FREEZE : subject.startsWith(CONSUMERS) ? CONSUMERS : null;
    if (op === null) return;
    const name = subject.slice(op.length);
    const s = this.host.js.streams.get(name);
    const p = this.host.cluster.directory.get(this.account, name)?.placement;
    if (s === undefined || p === undefined || p.leaders[0] !== this.self || p.moving === undefined) return answerError(`stream ${name} is not being moved from ${this.self}`);
    let req: { from?: unknown; to?: unknown; consumer?: unknown; pending?: unknown };
    try {
      req = JSON.parse(body.toString()) as typeof req;
    } catch {
      return answerError("bad request");
    }
    if (op === CONSUMERS) {
      const taken = this.taken.get(name);
      if (taken === undefined || !s.frozen) return answerError(`stream ${name} is not frozen here`);
      const at = { consumer: Number(req.consumer), pending: Number(req.pending) };
      if (!Number.isSafeInteger(at.consumer) || !Number.isSafeInteger(at.pending) || at.consumer < 0 || at.pending < 0) return answerError("bad cursor");
      return this.host.answer(reply, Buffer.from(JSON.stringify(consumersAnswer(taken, at))));
    }
    const run = op === COPY ? this.copyAnswer(s, Number(req.from)) : this.freezeAnswer(s, name, String(req.to));
    run.then(
      (b) => this.host.answer(reply, b),
      (err: Error) => answerError(err.message),
    );
  }

  private async copyAnswer(s: Stream, from: number): Promise<Buffer> {
    if (!Number.isSafeInteger(from) || from < 1) throw new Error("bad sequence");
    return encodeBatch(await s.partitions[0].scan(from, { maxMessages: BATCH_MESSAGES, maxBytes: BATCH_BYTES }));
  }

  private async freezeAnswer(s: Stream, name: string, to: string): Promise<Buffer> {
    const p = this.host.cluster.directory.get(this.account, name)?.placement;
    if (p?.moving !== to) throw new Error(`stream ${name} is not being moved to ${to}`);
    // From here on the consumers deliver nothing and acks and consumer changes are held (hold()).
    s.frozen = true;
    this.frozenHere.add(name);
    if (!this.freezes.has(name)) this.armCancel(name, to);
    const deadline = Date.now() + QUIET_MS;
    while (!s.quiet()) {
      if (Date.now() > deadline) throw new Error("appends in flight did not settle");
      await new Promise((r) => setTimeout(r, 5));
    }
    const part = s.partitions[0];
    const st = part.state();
    if (st.deleted > MAX_GAPS) throw new Error(`${st.deleted} deleted sequences are too many to move`);
    // Quiet and frozen: the consumers' state is final until the move flips or is cancelled.
    const now = Date.now();
    const taken = [...s.consumers.values()]
      .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
      .map((c): ConsumerCopy => ({ name: c.name, config: c.config, created: c.created.toISOString(), state: c.movedState(now) }));
    this.taken.set(name, taken);
    const state: FrozenState = { first: st.firstSeq, last: st.lastSeq, messages: st.messages, deleted: part.deletedSequences(MAX_GAPS), consumers: taken.length };
    // From now on the target may flip: then this copy goes (only now: writes taken before a restart's refreeze must not).
    s.movedOut = true;
    return Buffer.from(JSON.stringify(state));
  }

  /** A target that does not flip within FREEZE_MS: the move is cancelled (fenced) and, once that shows, the stream unfreezes. */
  private armCancel(name: string, to: string, ms = FREEZE_MS): void {
    clearTimeout(this.freezes.get(name));
    const t = setTimeout(() => {
      this.freezes.delete(name);
      const s = this.host.js.streams.get(name);
      if (this.closed || s === undefined || !s.frozen) return;
      const p = this.host.cluster.directory.get(this.account, name)?.placement;
      if (p === undefined || p.leaders[0] !== this.self) return; // flipped: the copy here is deleted
      this.cancel(name, to).catch(() => {
        // etcd away or a concurrent change: look again in a moment (a flip deletes the stream, a cancel unfreezes it).
        if (this.host.js.streams.get(name)?.frozen === true) this.armCancel(name, to, 1000);
      });
    }, ms);
    t.unref();
    this.freezes.set(name, t);
  }
}

/** The consumers answer from `at`: whole parts until BATCH_BYTES is reached (at least one part), and where the next one starts. */
export function consumersAnswer(taken: readonly ConsumerCopy[], at: ConsumersCursor): { parts: ConsumerPart[]; next: ConsumersCursor | null } {
  const parts: ConsumerPart[] = [];
  let bytes = 0;
  let cur: ConsumersCursor | null = at.consumer < taken.length ? at : null;
  while (cur !== null && (parts.length === 0 || bytes < BATCH_BYTES)) {
    const c = taken[cur.consumer];
    const pending = c.state.pending.slice(cur.pending, cur.pending + PENDING_PART);
    const part: ConsumerPart = { name: c.name, pending };
    if (cur.pending === 0) {
      const { pending: all, ...rest } = c.state;
      Object.assign(part, { config: c.config, created: c.created, state: { ...rest, pendingCount: all.length } });
    }
    const size = JSON.stringify(part).length;
    if (parts.length > 0 && bytes + size > BATCH_BYTES) break;
    parts.push(part);
    bytes += size;
    const end = cur.pending + PENDING_PART;
    cur = end < c.state.pending.length ? { consumer: cur.consumer, pending: end } : cur.consumer + 1 < taken.length ? { consumer: cur.consumer + 1, pending: 0 } : null;
  }
  return { parts, next: cur };
}

function appendAt(log: MessageLog, input: AppendInput, expect: number): Promise<void> {
  return new Promise((resolve, reject) =>
    log.append(input, (err, seq) => {
      if (err !== null) reject(err);
      else if (seq !== expect) reject(new Error(`copied sequence ${expect} was stored at ${seq}`));
      else resolve();
    }),
  );
}

// ---- the copy answer: "B", a count, then per message seq, time, and subject, headers, key, data with their lengths (-1: absent) ----

const MSG_HEAD = 8 + 8 + 4 * 4;
const BATCH_MARK = 0x42;

export function encodeBatch(msgs: readonly StoredMessage[]): Buffer {
  let size = 5;
  const subjects = msgs.map((m) => Buffer.from(m.subject));
  for (let i = 0; i < msgs.length; i++) size += MSG_HEAD + subjects[i].length + (msgs[i].headers?.length ?? 0) + (msgs[i].key?.length ?? 0) + msgs[i].data.length;
  const b = Buffer.allocUnsafe(size);
  b[0] = BATCH_MARK;
  b.writeUInt32LE(msgs.length, 1);
  let at = 5;
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    b.writeDoubleLE(m.seq, at);
    b.writeDoubleLE(m.time, at + 8);
    b.writeInt32LE(subjects[i].length, at + 16);
    b.writeInt32LE(m.headers === null ? -1 : m.headers.length, at + 20);
    b.writeInt32LE(m.key === null ? -1 : m.key.length, at + 24);
    b.writeInt32LE(m.data.length, at + 28);
    at += MSG_HEAD;
    at += subjects[i].copy(b, at);
    if (m.headers !== null) at += m.headers.copy(b, at);
    if (m.key !== null) at += m.key.copy(b, at);
    at += m.data.copy(b, at);
  }
  return b;
}

/** Decodes a copy answer; an error answer (JSON) or a malformed one throws. */
export function decodeBatch(b: Buffer): StoredMessage[] {
  if (b.length > 0 && b[0] !== BATCH_MARK) {
    let why = "bad answer";
    try {
      why = String((JSON.parse(b.toString()) as { error?: unknown }).error ?? why);
    } catch {
      // not JSON after all
    }
    throw new Error(why);
  }
  if (b.length < 5 || b[0] !== BATCH_MARK) throw new Error("bad copy answer");
  const n = b.readUInt32LE(1);
  const out: StoredMessage[] = [];
  let at = 5;
  const part = (len: number): Buffer | null => {
    if (len < 0) return null;
    if (at + len > b.length) throw new Error("short copy answer");
    const v = Buffer.from(b.subarray(at, at + len));
    at += len;
    return v;
  };
  for (let i = 0; i < n; i++) {
    if (at + MSG_HEAD > b.length) throw new Error("short copy answer");
    const seq = b.readDoubleLE(at);
    const time = b.readDoubleLE(at + 8);
    const [sl, hl, kl, dl] = [b.readInt32LE(at + 16), b.readInt32LE(at + 20), b.readInt32LE(at + 24), b.readInt32LE(at + 28)];
    at += MSG_HEAD;
    const subject = part(sl)!.toString();
    out.push({ seq, time, subject, headers: part(hl), key: part(kl), data: part(dl) ?? Buffer.alloc(0) });
  }
  return out;
}
