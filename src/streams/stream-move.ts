/**
 * Moving a stream partition to another node without losing a message (see
 * docs/CLUSTER.md, "Moving a stream"). The move is recorded in the
 * placement (`moving: { partition, to }`: by the leader for STREAM.UPDATE,
 * cluster-api.ts; by any broker for Kafka's AlterPartitionReassignments);
 * then:
 *
 * 1. the target creates a copy of the stream if it hosts none (it leads
 *    nothing of it yet: routed publishes are dropped) and pulls the
 *    partition's stored batches from its leader over the routes
 *    (`$NG.MOVE.COPY.<stream>`), appending each with `appendCopy` at its
 *    own sequence and time, a Kafka batch whole (the same bytes);
 * 2. caught up, it asks the leader to freeze the partition
 *    (`$NG.MOVE.FREEZE.<stream>`): the leader refuses every change to it
 *    from then on (JetStream's retryable 503, Kafka's
 *    NOT_LEADER_OR_FOLLOWER), waits until nothing is on its way to the
 *    partition's log, and answers its final state with the sequences
 *    deleted since; other partitions keep working. A stream of one
 *    partition freezes whole, and its consumers with it: they stop
 *    delivering, the acks and consumer changes that reach the leader are
 *    held (hold()), the freeze also waits for retention deletes and
 *    consumer changes in flight, takes the consumers' state and says how
 *    many there are;
 * 3. the target copies the tail, deletes what the leader deleted, checks
 *    its state equals the leader's, rebuilds what it derives from the log
 *    (the dedup window; Kafka's producer state, from the copied batches'
 *    headers, on first use), pulls every consumer's definition and state
 *    in bounded pages (`$NG.MOVE.CONSUMERS.<stream>`) and creates each at
 *    that state, and flips the placement (`leaders[partition] = target`,
 *    no `moving`) in one fenced, revision-compared change;
 * 4. the old leader sees the flip: a stream it no longer leads any
 *    partition of is deleted, without telling its clients the consumers
 *    are gone, once it has handed what waits on its consumers (pull
 *    requests, held acks and consumer changes) to the new leader, which
 *    serves them once it sees the flip itself; otherwise the partition
 *    stays frozen there (it is not led there, and its log is a prefix of
 *    the new leader's, so a move back copies only what it lacks).
 *
 * Nothing acknowledged is lost: every acknowledged write is in the leader's
 * log before the freeze answers, nothing is acknowledged while frozen, and
 * only the target stores after the flip. A move that fails is cancelled by
 * clearing `moving` (fenced): by the target when it fails (each step is
 * tried again a few times first: see `tried`), by the leader
 * when the freeze outlives FREEZE_MS. The leader unfreezes only once it
 * sees a placement naming it leader without a move, which the target's
 * flip (conditional on `moving`) can then never follow; if the flip won,
 * the leader's cancel fails on the revision.
 *
 * Consumers live with the stream's first partition's leader (the
 * JetStream API's `leaders[0]`). A stream of one partition moves with all
 * of them, ephemerals too (nats-server 2.9 moves them all with the
 * stream): an unacknowledged delivery keeps its delivery count and is
 * redelivered by the new leader when its ack wait runs out.
 *
 * Refused (the move is cancelled): a partition of a stream of several
 * whose leader holds consumers (they would stay behind, reading a
 * partition no longer led there; consumer creates are refused while such
 * a move is under way). A door's own record of the partition goes with
 * its copy: Kafka transactions are read from the log by every copy
 * (JetStream.copyListeners), and their markers reach the partition
 * wherever it is led (JetStream.appendAt).
 */

import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import { DEFAULTS, namedAnswerBytes, ROUTE_PAYLOAD_SLACK } from "../core/options.js";
import { settled } from "../util/settle.js";
import type { MessageLog } from "../store/log.js";
import { appendCopy, appendItems, decodeBatch, encodeBatch, readCopy } from "./copy-batch.js";
import { moveOf, sameMove, type ClusterStreams, type PlacedStream } from "./cluster-streams.js";
import type { JetStream } from "./jetstream.js";
import { limitsOf, type Stream } from "./stream.js";
import type { ConsumerConfig } from "./config.js";
import type { MovedState } from "./consumer.js";

export const MOVE_PREFIX = `${CLUSTER_INTERNAL_PREFIX}MOVE.`;
const COPY = "COPY.";
const FREEZE = "FREEZE.";
const CONSUMERS = "CONSUMERS.";
/** One copy answer's records (at least one item is sent, a Kafka batch whole): below a route's default max payload; less if the target's max_payload is. */
export const BATCH_BYTES = 256 * 1024;
const BATCH_MESSAGES = 1024;
/** How long the target waits for one answer of the leader. */
const REQUEST_MS = 5000;
/** How long a leader stays frozen for a target that does not flip: then it cancels the move. */
export const FREEZE_MS = 10_000;
/** How long a freezing leader waits for appends in flight to reach its log. */
const QUIET_MS = 5000;
/** Tries of each step of a target's copy, PULL_RETRY_MS more apart each time (see StreamMover.tried). */
const PULL_TRIES = 3;
const PULL_RETRY_MS = 500;
/** How long a leader waits for its copy of the metadata to show a move its target has seen before it answers. */
const SEE_MOVE_MS = 2000;
/** Sequences deleted since the copy began that a freeze answer lists (each is deleted on the target, one by one). */
const MAX_GAPS = 100_000;
/** Entries per part of a consumers answer (pending deliveries of about 50 bytes, sequences of the other lists less): well below BATCH_BYTES. */
const ENTRIES_PART = 4096;
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

/** A target's request to the leader: COPY from `from`, FREEZE for `to`, CONSUMERS at a cursor; `rev`: the placement's revision the target has. */
interface MoveRequest {
  from?: unknown;
  to?: unknown;
  partition?: unknown;
  consumer?: unknown;
  pending?: unknown;
  maxBytes?: unknown;
  /** The asker reads a consumer's `initial` and `maxedOut` in parts too (consumersAnswer); absent (a node of an earlier version): they come whole. */
  lists?: unknown;
  /** A copy's asker takes Kafka batches with records gone whole (readCopy's `keepCut`); older nodes name none. */
  keepsCut?: unknown;
  id?: unknown;
  rev?: unknown;
}

interface FrozenState {
  first: number;
  last: number;
  messages: number;
  deleted: number[];
  /** How many consumers the target is to fetch (CONSUMERS); absent (a node of an earlier version): none. */
  consumers?: number;
}

/** A consumer as the frozen leader took it. */
export interface ConsumerCopy {
  name: string;
  config: ConsumerConfig;
  created: string;
  state: MovedState;
}

/**
 * One part of a consumers answer: a consumer's first part carries its
 * definition and state (with how many entries each list has), the next
 * ones more entries of its lists, in the order pending deliveries,
 * `initial`, `maxedOut`. Each list can be long (a last_per_subject
 * consumer's `initial` names a sequence per subject), so none travels
 * whole. To an asker of an earlier version, which reads only `pending` in
 * parts, `initial` and `maxedOut` come whole in the state.
 */
interface ConsumerPart {
  name: string;
  config?: ConsumerConfig;
  created?: string;
  state?: Omit<MovedState, "pending"> & { pendingCount: number; initialCount?: number; maxedOutCount?: number };
  pending: MovedState["pending"];
  initial?: number[];
  maxedOut?: number[];
}

/** Where the next consumers answer starts: a consumer (by index, in name order) and an offset into its lists (pending deliveries, then `initial`, then `maxedOut`: see ConsumerPart). */
export interface ConsumersCursor {
  consumer: number;
  pending: number;
}

/** A client's request that reached a frozen stream, kept until the move ends. */
interface Held {
  subject: string;
  body: Buffer;
  reply: string;
}

/** Why a partition of a stream of several does not move (see the module's comment). */
const PARTITION_WITH_CONSUMERS = "the stream has consumers, which move only with a stream of one partition: a partition of a stream of several cannot move while its leader holds consumers";

/** A request to the leader that went unanswered (its time ran out, or no route reached it). */
class Unanswered extends Error {}

const unanswered = (err: unknown): boolean => err instanceof Unanswered;
const anyFailure = (): boolean => true;

/** A stream's partition frozen here (its key), with the timer that cancels a move that does not flip. */
const keyOf = (name: string, partition: number): string => `${name}/${partition}`;

export class StreamMover {
  /** Partitions this node is copying to itself. */
  private readonly copying = new Set<string>();
  /** Partitions frozen here for a move, with the timer that cancels a move that does not flip, and the move it was armed for. */
  private readonly freezes = new Map<string, { timer: NodeJS.Timeout; id: string | undefined }>();
  /** Moves this process recorded as leader (see placed()). */
  private readonly recordedHere = new Set<string>();
  /** Streams whose placement this process has seen settled: a move found at the first sight may predate a restart. */
  private readonly seen = new Set<string>();
  /** The consumers of streams frozen here, as taken when the freeze was answered (they cannot change until it ends). */
  private readonly taken = new Map<string, ConsumerCopy[]>();
  /** Streams this mover froze here and has not seen end their move: acks need no look-up while it is empty. */
  private readonly frozenHere = new Set<string>();
  /** Acks and consumer changes for streams frozen here, in arrival order (see hold()). */
  private readonly held = new Map<string, { stream: Stream; items: Held[]; bytes: number }>();
  private closed = false;
  private readonly listener = (account: string, name: string, placed: PlacedStream): void => this.placed(account, name, placed);
  /** Moves of partitions led here whose target left, being cancelled (see targetsGone()). */
  private readonly abandoning = new Set<string>();
  private readonly stopMembers: () => void;

  constructor(private readonly host: MoveHost) {
    host.cluster.moveListeners.add(this.listener);
    this.stopMembers = host.cluster.directory.onMembers(() => this.targetsGone());
  }

  close(): void {
    this.closed = true;
    this.host.cluster.moveListeners.delete(this.listener);
    this.stopMembers();
    for (const f of this.freezes.values()) clearTimeout(f.timer);
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

  /** Freezes partition `p` of `s` here; a stream of one partition freezes whole, and hold() then keeps its consumers' requests. */
  private freezeHere(name: string, s: Stream, p: number): void {
    freeze(s, p);
    if (s.frozen) this.frozenHere.add(name);
  }

  /** The move flipped away from this node: what waits on its consumers goes to the new leader before the copy here is deleted. */
  private handOver(name: string, s: Stream, to: string): void {
    for (let p = 0; p < s.partitions.length; p++) {
      clearTimeout(this.freezes.get(keyOf(name, p))?.timer);
      this.freezes.delete(keyOf(name, p));
    }
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
    const first = !this.seen.has(name);
    this.seen.add(name);
    const move = moveOf(placed);
    if (move !== undefined && move.to === self && placed.leaders[move.partition] !== self) {
      const key = keyOf(name, move.partition);
      if (this.copying.has(key)) return;
      this.copying.add(key);
      void this.copy(name, move.partition, placed.leaders[move.partition], !placed.leaders.includes(self), move.id).finally(() => {
        this.copying.delete(key);
        // A later move here recorded while this one's copy ran (this one cancelled, the partition asked for again) is served now.
        const now = this.host.cluster.directory.get(this.account, name)?.placement;
        const next = now === undefined ? undefined : moveOf(now);
        if (!this.closed && next !== undefined && next.to === self && next.id !== move.id) this.placed(this.account, name, now!);
      });
      return;
    }
    const s = this.host.js.streams.get(name);
    if (s === undefined) return;
    // A move's copy no longer placed here (the old leader's after the flip, a cancelled target's): about to be deleted.
    if (!placed.leaders.includes(self)) {
      if (s.movedOut) this.handOver(name, s, placed.leaders[0]);
      return;
    }
    for (let p = 0; p < placed.leaders.length && p < s.partitions.length; p++) {
      if (placed.leaders[p] !== self) continue;
      if (move === undefined || move.partition !== p) {
        // Led here with no move of it: a move was cancelled (old leader) or has flipped (new leader).
        if (isFrozen(s, p)) {
          clearTimeout(this.freezes.get(keyOf(name, p))?.timer);
          this.freezes.delete(keyOf(name, p));
          thaw(s, p);
          if (move === undefined) s.movedOut = false;
          this.release(name, s);
        }
        continue;
      }
      // A move found when this process first saw the stream, and not recorded by it: recorded before a restart,
      // whose freeze (in memory) is gone. Writes are refused again and the move is cancelled at once, since the
      // target may have been told a final state already.
      if (first && !this.recordedHere.has(name) && !isFrozen(s, p)) {
        this.freezeHere(name, s, p);
        this.armCancel(name, p, move.id, 0);
      }
    }
    if (move === undefined) this.recordedHere.delete(name);
  }

  /**
   * Cancels the moves of partitions led here whose target is no longer a
   * live member (shut down, or its lease expired): only the target copies
   * and flips, so such a move would stand until that node came back,
   * refusing every other move of the stream (10124) and holding up a
   * drain; an operator removing the node would have had to find it and
   * cancel it. A target that returns finds no move and its partial copy is
   * not served. A frozen partition has its own deadline (armCancel).
   */
  private targetsGone(): void {
    if (this.closed) return;
    const { directory } = this.host.cluster;
    const self = this.self;
    if (!directory.isLive(self)) return; // fenced: no change could be made, and the view of the members may be stale
    for (const pl of directory.list(this.account)) {
      const move = moveOf(pl);
      if (move === undefined || pl.leaders[move.partition] !== self || directory.isLive(move.to)) continue;
      const key = `${keyOf(pl.stream, move.partition)}/${move.id ?? move.to}`;
      if (this.abandoning.has(key)) continue;
      this.abandoning.add(key);
      this.host.js.options.log.warn(`cluster: the target ${move.to} of the move of partition ${move.partition} of stream "${pl.stream}" of account ${this.account} left the cluster; cancelling the move`);
      this.cancel(pl.stream, move.partition, move.to, move.id)
        .catch(() => undefined)
        .finally(() => this.abandoning.delete(key));
    }
  }

  /** The leader is about to record a move of `name` (cluster-api.ts's UPDATE): a move it knows of, not one from before a restart. */
  recording(name: string): void {
    this.recordedHere.add(name);
  }

  // ---- the target ----

  /** Copies partition `p` of `name` from `leader` for move `id` and flips the placement; `fresh`: this node hosted nothing of the stream before. */
  private async copy(name: string, p: number, leader: string, fresh: boolean, id: string | undefined): Promise<void> {
    const { js, cluster } = this.host;
    const log = js.options.log;
    try {
      await cluster.settle(this.account, name);
      const s = js.streams.get(name);
      if (s === undefined || p >= s.partitions.length) throw new Error("no local copy to fill");
      // Refuses writes through the stream; the copy writes to its log. A cancelled move then deletes a copy made for it (cluster-streams.ts).
      this.freezeHere(name, s, p);
      if (fresh) s.movedOut = true;
      const part = s.partitions[p];
      // The leader's limits already shaped what it sends: nothing is evicted meanwhile.
      part.setLimits({});
      await this.tried(name, p, leader, id, "copying", () => this.pull(name, p, leader, part), anyFailure);
      const frozen = await this.tried(name, p, leader, id, "freezing", () => this.askFreeze(name, p, leader, id), unanswered);
      await this.tried(name, p, leader, id, "copying the tail", () => this.pull(name, p, leader, part), unanswered);
      for (const seq of frozen.deleted) if (part.has(seq)) await part.delete(seq);
      if (part.state().firstSeq < frozen.first) await part.purge({ upTo: frozen.first });
      // The leader's last sequences may be gone: the copy moves on past them.
      if (part.state().lastSeq < frozen.last) await appendCopy(part, frozen.last + 1, 0, []);
      const st = part.state();
      if (st.firstSeq !== frozen.first || st.lastSeq !== frozen.last || st.messages !== frozen.messages) {
        throw new Error(`copy differs from the leader's: first ${st.firstSeq}/${frozen.first}, last ${st.lastSeq}/${frozen.last}, messages ${st.messages}/${frozen.messages}`);
      }
      part.setLimits(limitsOf(s.config));
      if (s.partitions.length === 1) await s.recover();
      // Doors rebuild what they keep per partition (Kafka's idempotent producers) from the copied log.
      s.arrivals[p] = (s.arrivals[p] ?? 0) + 1;
      // Only a stream of one partition brings consumers (the leader refuses to move a partition of several with them).
      const consumers = await this.tried(name, p, leader, id, "copying the consumers", () => this.pullConsumers(name, leader, frozen.consumers ?? 0, id), unanswered);
      // At the leader's state, before the flip; the stream is frozen here until then, so they do not deliver yet.
      // Each is a few durable writes: side by side, a few dozen at a time, to fit many consumers in the freeze's deadline.
      for (let i = 0; i < consumers.length; i += ADOPT_CONCURRENCY) {
        await Promise.all(consumers.slice(i, i + ADOPT_CONCURRENCY).map((c) => js.adoptMovedConsumer(s, c.name, c.config, new Date(c.created), c.state)));
      }
      const self = this.self;
      await cluster.directory.update(this.account, name, (pl) => {
        if (!sameMove(moveOf(pl), p, self, id) || pl.leaders[p] !== leader) throw new Error("the move was cancelled");
        const next = { ...pl, leaders: pl.leaders.map((l, i) => (i === p ? self : l)) };
        delete next.moving;
        return next;
      });
      s.order?.landed();
      log.info(`cluster: partition ${p} of stream "${name}" of account ${this.account} moved here from ${leader} (${st.messages} messages, sequences ${st.firstSeq}..${st.lastSeq}, ${consumers.length} consumers)`);
    } catch (err) {
      log.warn(`cluster: moving partition ${p} of stream "${name}" of account ${this.account} here from ${leader} failed: ${(err as Error).message}; cancelling the move`);
      await this.cancel(name, p, this.self, id).catch(() => undefined);
    }
  }

  /**
   * One step of the target's work, tried again (from where it got to: each
   * step can be repeated) PULL_TRIES times while move `id` stands, rather
   * than cancelling a move Kafka's reassignment would go on with. Before
   * the freeze nothing is refused at the leader, so any failure is tried
   * again (a loaded leader slow to answer); from the freeze on, only a
   * request the leader left unanswered, and the leader's FREEZE_MS bounds
   * the whole: past it the leader cancels the move, which ends the tries.
   */
  private async tried<T>(name: string, p: number, leader: string, id: string | undefined, what: string, step: () => Promise<T>, retried: (err: unknown) => boolean): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (err) {
        const pl = this.host.cluster.directory.get(this.account, name)?.placement;
        if (attempt >= PULL_TRIES || !retried(err) || this.closed || pl === undefined || !sameMove(moveOf(pl), p, this.self, id) || pl.leaders[p] !== leader) throw err;
        this.host.js.options.log.warn(`cluster: ${what} partition ${p} of stream "${name}" of account ${this.account} from ${leader}: ${(err as Error).message}; trying again`);
        await new Promise((resolve) => setTimeout(resolve, PULL_RETRY_MS * attempt));
      }
    }
  }

  /** Copies the leader's stored batches after this copy's last sequence until the leader has no more. */
  private async pull(name: string, p: number, leader: string, part: MessageLog): Promise<void> {
    for (;;) {
      const from = part.state().lastSeq + 1;
      // The answer comes over this node's route, which refuses a message past its max_payload.
      const maxBytes = Math.min(BATCH_BYTES, this.host.js.options.maxPayload);
      const b = await this.host.request(leader, `${MOVE_PREFIX}${COPY}${name}`, Buffer.from(JSON.stringify({ from, partition: p, maxBytes, keepsCut: true, rev: this.revisionOf(name) })), REQUEST_MS);
      if (b === null) throw new Unanswered(`${leader} did not answer`);
      const items = decodeBatch(b);
      if (items.length === 0) return;
      await appendItems(part, items, from);
      const stream = this.host.js.streams.get(name);
      if (stream !== undefined) for (const l of this.host.js.copyListeners) await l(stream, p, items);
    }
  }

  /** Fetches the frozen leader's consumers (readConsumers) and checks that as many came as it said. */
  private async pullConsumers(name: string, leader: string, expected: number, id: string | undefined): Promise<ConsumerCopy[]> {
    if (expected === 0) return [];
    const out = await readConsumers(async (cursor) => {
      // The answer comes over this node's route, which refuses a message past its max_payload.
      const maxBytes = Math.min(BATCH_BYTES, this.host.js.options.maxPayload);
      const b = await this.host.request(leader, `${MOVE_PREFIX}${CONSUMERS}${name}`, Buffer.from(JSON.stringify({ ...cursor, maxBytes, lists: true, id, rev: this.revisionOf(name) })), REQUEST_MS);
      if (b === null) throw new Unanswered(`${leader} did not answer for the consumers`);
      return b;
    });
    if (out.length !== expected) throw new Error(`the leader sent ${out.length} consumers of ${expected}`);
    return out;
  }

  private async askFreeze(name: string, p: number, leader: string, id: string | undefined): Promise<FrozenState> {
    // The answer lists the deleted sequences: it must fit this node's max_payload (its route refuses more, and closes).
    const body = { to: this.self, partition: p, maxBytes: this.host.js.options.maxPayload, id, rev: this.revisionOf(name) };
    const b = await this.host.request(leader, `${MOVE_PREFIX}${FREEZE}${name}`, Buffer.from(JSON.stringify(body)), REQUEST_MS + SEE_MOVE_MS + QUIET_MS);
    if (b === null) throw new Unanswered(`${leader} did not answer the freeze`);
    const r = JSON.parse(b.toString()) as FrozenState & { error?: string };
    if (r.error !== undefined) throw new Error(r.error);
    return r;
  }

  /** The revision of the placement of `name` as this node has it: the leader answers a request once its copy has it too. */
  private revisionOf(name: string): number {
    return this.host.cluster.directory.get(this.account, name)?.revision ?? 0;
  }

  /** Clears move `id` of partition `p` to `target` from the placement, fenced: fails if the placement changed meanwhile (a flip, another move). */
  private async cancel(name: string, p: number, target: string, id: string | undefined): Promise<void> {
    await this.host.cluster.directory.update(this.account, name, (pl) => {
      if (!sameMove(moveOf(pl), p, target, id)) throw new Error("no such move");
      const next = { ...pl };
      delete next.moving;
      return next;
    });
  }

  // ---- the leader ----

  /** Answers a target's internal request (`subject` after MOVE_PREFIX). */
  serve(subject: string, body: Buffer, reply: string): void {
    if (reply === "") return;
    const answerError = (why: string): void => this.refuse(reply, why);
    const op = subject.startsWith(COPY) ? COPY : subject.startsWith(FREEZE) ? FREEZE : subject.startsWith(CONSUMERS) ? CONSUMERS : null;
    if (op === null) return;
    const name = subject.slice(op.length);
    let req: MoveRequest;
    try {
      req = JSON.parse(body.toString()) as MoveRequest;
    } catch {
      return answerError("bad request");
    }
    if (req === null || typeof req !== "object") return answerError("bad request");
    // The target saw the move at revision `rev` of the metadata; this node's copy may not have it yet (the move recorded
    // through the target, or this node's watch behind): refused now, the move would be cancelled for nothing.
    const rev = Number.isSafeInteger(req.rev) ? (req.rev as number) : 0;
    const directory = this.host.cluster.directory;
    if (rev > this.revisionOf(name)) {
      void directory
        .waitForRevision(rev, SEE_MOVE_MS)
        .then(() => this.respond(op, name, req, reply))
        .catch((err: Error) => answerError(err.message));
      return;
    }
    this.respond(op, name, req, reply);
  }

  /** A target's request refused, in the form its decoders read as an error. */
  private refuse(reply: string, why: string): void {
    this.host.answer(reply, Buffer.from(JSON.stringify({ error: why })));
  }

  private respond(op: string, name: string, req: MoveRequest, reply: string): void {
    if (this.closed) return;
    const answerError = (why: string): void => this.refuse(reply, why);
    const partition = req.partition === undefined ? 0 : Number(req.partition);
    const s = this.host.js.streams.get(name);
    const pl = this.host.cluster.directory.get(this.account, name)?.placement;
    const move = pl === undefined ? undefined : moveOf(pl);
    if (s === undefined || pl === undefined || move?.partition !== partition || pl.leaders[partition] !== this.self || partition >= s.partitions.length) {
      return answerError(`partition ${partition} of stream ${name} is not being moved from ${this.self}`);
    }
    // A cancelled move's target still at work asks for the freeze or consumers of its successor: refused.
    const id = typeof req.id === "string" ? req.id : undefined;
    if (op !== COPY && !sameMove(move, partition, move.to, id)) return answerError(`move ${id} of partition ${partition} of stream ${name} was cancelled`);
    if (op === CONSUMERS) {
      const taken = this.taken.get(name);
      if (taken === undefined || !s.frozen) return answerError(`stream ${name} is not frozen here`);
      const at = { consumer: Number(req.consumer), pending: Number(req.pending) };
      if (!Number.isSafeInteger(at.consumer) || !Number.isSafeInteger(at.pending) || at.consumer < 0 || at.pending < 0) return answerError("bad cursor");
      return this.host.answer(reply, Buffer.from(JSON.stringify(consumersAnswer(taken, at, answerLimit(req.maxBytes), req.lists === true))));
    }
    const run = op === COPY ? this.copyAnswer(s, partition, Number(req.from), answerLimit(req.maxBytes), req.keepsCut === true) : this.freezeAnswer(s, name, partition, String(req.to), id, req.maxBytes);
    run.then(
      (b) => this.host.answer(reply, b),
      (err: Error) => answerError(err.message),
    );
  }

  /** `keepsCut`: the target takes a batch with records gone whole, with those named (readCopy); older targets say nothing. */
  private async copyAnswer(s: Stream, p: number, from: number, maxBytes: number, keepsCut: boolean): Promise<Buffer> {
    if (!Number.isSafeInteger(from) || from < 1) throw new Error("bad sequence");
    return encodeBatch(await readCopy(s.partitions[p], from, BATCH_MESSAGES, maxBytes, keepsCut));
  }

  private async freezeAnswer(s: Stream, name: string, p: number, to: string, id: string | undefined, maxBytes: unknown): Promise<Buffer> {
    const pl = this.host.cluster.directory.get(this.account, name)?.placement;
    const move = pl === undefined ? undefined : moveOf(pl);
    if (!sameMove(move, p, to, id)) throw new Error(`partition ${p} of stream ${name} is not being moved to ${to}`);
    const whole = s.partitions.length === 1;
    if (!whole && s.consumers.size > 0) throw new Error(PARTITION_WITH_CONSUMERS);
    // From here on (a stream of one partition) the consumers deliver nothing and acks and consumer changes are held (hold()).
    if (!isFrozen(s, p)) this.freezeHere(name, s, p);
    // Armed for this move: a cancelled one's timer (this node may not have seen the placement without a move between
    // the two) is armed again for this one.
    const armed = this.freezes.get(keyOf(name, p));
    if (armed === undefined || armed.id !== move!.id) this.armCancel(name, p, move!.id);
    // A consumer change that began before the freeze ends first: the consumers taken below are then final.
    if (!(await settled(() => (whole ? s.quiet() : s.partitionQuiet(p)) && s.consumerChanges === 0, Date.now() + QUIET_MS, 5))) throw new Error("appends in flight did not settle");
    if (!whole && s.consumers.size > 0) throw new Error(PARTITION_WITH_CONSUMERS);
    const part = s.partitions[p];
    const st = part.state();
    const deleted = part.deletedSequences(MAX_GAPS + 1);
    if (deleted.length > MAX_GAPS) throw new Error(`more than ${MAX_GAPS} deleted sequences are too many to move`);
    // Quiet and frozen: the consumers' state is final until the move flips or is cancelled. (A stream of several has none: see above.)
    const taken = takeConsumers(s, Date.now());
    this.taken.set(name, taken);
    const state: FrozenState = { first: st.firstSeq, last: st.lastSeq, messages: st.messages, deleted, consumers: taken.length };
    const answer = Buffer.from(JSON.stringify(state));
    // What the target's route takes (older targets name no max_payload: the default's).
    const fits = namedAnswerBytes(maxBytes, DEFAULTS.maxPayload) + ROUTE_PAYLOAD_SLACK;
    if (answer.length > fits) throw new Error(`${deleted.length} deleted sequences are too many to move to a node whose route takes ${fits} bytes`);
    // From now on the target may flip: then this copy goes (only now: writes taken before a restart's refreeze must not).
    s.movedOut = true;
    return answer;
  }

  /**
   * A target that does not flip within FREEZE_MS of move `id`'s freeze:
   * the move of the partition then under way is cancelled (fenced) and,
   * once that shows, the partition unfreezes. That is `id`, or a successor
   * that never asked for its freeze (its target gone): either leaves the
   * partition frozen here until cancelled.
   */
  private armCancel(name: string, p: number, id: string | undefined, ms = FREEZE_MS): void {
    const key = keyOf(name, p);
    clearTimeout(this.freezes.get(key)?.timer);
    const timer = setTimeout(() => {
      this.freezes.delete(key);
      const s = this.host.js.streams.get(name);
      if (this.closed || s === undefined || !isFrozen(s, p)) return;
      const pl = this.host.cluster.directory.get(this.account, name)?.placement;
      if (pl === undefined || pl.leaders[p] !== this.self) return; // flipped: the copy here is deleted or not led
      const current = moveOf(pl);
      if (current === undefined || current.partition !== p) return; // cancelled: the partition unfreezes as this node sees it (placed())
      this.cancel(name, p, current.to, current.id).catch(() => {
        // etcd away or a concurrent change: look again in a moment (a flip takes the partition away, a cancel unfreezes it).
        if (this.host.js.streams.get(name)?.partitionFrozen(p) === true) this.armCancel(name, p, current.id, 1000);
      });
    }, ms);
    timer.unref();
    this.freezes.set(key, { timer, id });
  }
}

/**
 * The consumers answer from `at`: whole parts until `maxBytes` (at most
 * BATCH_BYTES: the asking node's max_payload, whose route refuses more) is
 * reached, at least one part, and where the next one starts. A part's
 * entries are halved until it fits (at least one). `lists`: the asker
 * reads `initial` and `maxedOut` in parts (else they go whole in the
 * state, as nodes of an earlier version read them).
 */
export function consumersAnswer(taken: readonly ConsumerCopy[], at: ConsumersCursor, maxBytes = BATCH_BYTES, lists = false): { parts: ConsumerPart[]; next: ConsumersCursor | null } {
  const limit = Math.min(maxBytes, BATCH_BYTES);
  const parts: ConsumerPart[] = [];
  let bytes = 0;
  let cur: ConsumersCursor | null = at.consumer < taken.length ? at : null;
  while (cur !== null && (parts.length === 0 || bytes < limit)) {
    const c = taken[cur.consumer];
    const { pending, initial = [], maxedOut = [], ...rest } = c.state;
    const inParts = lists ? [initial, maxedOut] : [[], []];
    const entries = pending.length + inParts[0].length + inParts[1].length;
    let n = ENTRIES_PART;
    let part: ConsumerPart;
    let size: number;
    for (;;) {
      part = partOf(c.name, cur.pending, n, pending, inParts[0], inParts[1]);
      if (cur.pending === 0) {
        const state: NonNullable<ConsumerPart["state"]> = { ...rest, pendingCount: pending.length };
        if (lists) {
          if (initial.length > 0) state.initialCount = initial.length;
          if (maxedOut.length > 0) state.maxedOutCount = maxedOut.length;
        } else {
          if (c.state.initial !== undefined) state.initial = c.state.initial;
          if (c.state.maxedOut !== undefined) state.maxedOut = c.state.maxedOut;
        }
        Object.assign(part, { config: c.config, created: c.created, state });
      }
      size = Buffer.byteLength(JSON.stringify(part));
      if (size <= limit || n === 1) break;
      n = Math.max(1, n >> 1);
    }
    if (parts.length > 0 && bytes + size > limit) break;
    parts.push(part);
    bytes += size;
    const end = cur.pending + n;
    cur = end < entries ? { consumer: cur.consumer, pending: end } : cur.consumer + 1 < taken.length ? { consumer: cur.consumer + 1, pending: 0 } : null;
  }
  return { parts, next: cur };
}

/** Entries `at`..`at + n` of a consumer's lists (pending, then initial, then maxedOut) as a part; a list with none there is left out. */
function partOf(name: string, at: number, n: number, pending: MovedState["pending"], initial: number[], maxedOut: number[]): ConsumerPart {
  const part: ConsumerPart = { name, pending: pending.slice(at, at + n) };
  const fromInitial = at - pending.length;
  const ofInitial = initial.slice(Math.max(0, fromInitial), Math.max(0, fromInitial + n));
  if (ofInitial.length > 0) part.initial = ofInitial;
  const fromMaxedOut = fromInitial - initial.length;
  const ofMaxedOut = maxedOut.slice(Math.max(0, fromMaxedOut), Math.max(0, fromMaxedOut + n));
  if (ofMaxedOut.length > 0) part.maxedOut = ofMaxedOut;
  return part;
}

/** The bound an answer's asker named (its max_payload), at most BATCH_BYTES; older nodes name none: BATCH_BYTES. */
export function answerLimit(maxBytes: unknown): number {
  return Math.min(namedAnswerBytes(maxBytes, BATCH_BYTES), BATCH_BYTES);
}

/**
 * Reads a leader's consumers page by page (`ask` sends one cursor and
 * returns the answer, consumersAnswer's form: each below a route's max
 * payload however many consumers and entries), and checks that every one
 * came whole. An answerer of an earlier version sends `initial` and
 * `maxedOut` whole in the state.
 */
export async function readConsumers(ask: (cursor: ConsumersCursor) => Promise<Buffer>): Promise<ConsumerCopy[]> {
  const out: ConsumerCopy[] = [];
  const counts: Array<{ pending: number; initial?: number; maxedOut?: number }> = [];
  let cursor: ConsumersCursor | null = { consumer: 0, pending: 0 };
  while (cursor !== null) {
    const r = JSON.parse((await ask(cursor)).toString()) as { parts?: ConsumerPart[]; next?: ConsumersCursor | null; error?: string };
    if (r.error !== undefined) throw new Error(r.error);
    if (!Array.isArray(r.parts) || (r.parts.length === 0 && r.next !== null)) throw new Error("bad consumers answer");
    for (const part of r.parts) {
      if (typeof part.name !== "string" || !Array.isArray(part.pending) || !optionalArray(part.initial) || !optionalArray(part.maxedOut)) throw new Error("bad consumers answer");
      if (part.state !== undefined) {
        if (typeof part.config !== "object" || part.config === null || typeof part.created !== "string") throw new Error(`bad consumer ${part.name}`);
        const { pendingCount, initialCount, maxedOutCount, ...state } = part.state;
        const copy: ConsumerCopy = { name: part.name, config: part.config, created: part.created, state: { ...state, pending: [] } };
        if (initialCount !== undefined) copy.state.initial = [];
        if (maxedOutCount !== undefined) copy.state.maxedOut = [];
        out.push(copy);
        counts.push({ pending: pendingCount, initial: initialCount, maxedOut: maxedOutCount });
      }
      const last = out[out.length - 1];
      if (last?.name !== part.name) throw new Error(`entries of consumer ${part.name} out of order`);
      const count = counts[counts.length - 1];
      // Entries of a list the first part did not count (or a state that came whole) would be taken twice.
      if ((part.initial !== undefined && count.initial === undefined) || (part.maxedOut !== undefined && count.maxedOut === undefined)) throw new Error(`consumer ${part.name}: entries of a list it did not count`);
      for (const e of part.pending) last.state.pending.push(e);
      if (part.initial !== undefined) for (const seq of part.initial) last.state.initial!.push(seq);
      if (part.maxedOut !== undefined) for (const seq of part.maxedOut) last.state.maxedOut!.push(seq);
    }
    cursor = r.next ?? null;
  }
  out.forEach((c, i) => {
    const { pending, initial, maxedOut } = counts[i];
    if (c.state.pending.length !== pending) throw new Error(`consumer ${c.name}: ${c.state.pending.length} pending deliveries of ${pending} came`);
    if (initial !== undefined && c.state.initial!.length !== initial) throw new Error(`consumer ${c.name}: ${c.state.initial!.length} initial sequences of ${initial} came`);
    if (maxedOut !== undefined && c.state.maxedOut!.length !== maxedOut) throw new Error(`consumer ${c.name}: ${c.state.maxedOut!.length} sequences let go at max_deliver of ${maxedOut} came`);
  });
  return out;
}

const optionalArray = (v: unknown): boolean => v === undefined || Array.isArray(v);

/** The consumers of a stream as a leader has them now, in name order (a move's freeze takes them this way). */
export function takeConsumers(s: Stream, now: number): ConsumerCopy[] {
  return [...s.consumers.values()]
    .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
    .map((c): ConsumerCopy => ({ name: c.name, config: c.config, created: c.created.toISOString(), state: c.movedState(now) }));
}

/** A stream with one partition freezes whole (JetStream: purges, deletes and consumers wait too); with several, the partition alone. */
function freeze(s: Stream, p: number): void {
  if (s.partitions.length === 1) s.frozen = true;
  else s.freezePartition(p, true);
}

function thaw(s: Stream, p: number): void {
  if (s.partitions.length === 1) s.frozen = false;
  else s.freezePartition(p, false);
}

function isFrozen(s: Stream, p: number): boolean {
  return s.partitions.length === 1 ? s.frozen : s.partitionFrozen(p);
}
