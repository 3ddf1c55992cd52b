/**
 * A replicated stream's consumers as its followers copy them from the
 * leader (stream-replicas.ts): which copy each follower holds, and the
 * confirmed acks (a double ack, AckSync) that wait until every in-sync
 * follower holds a copy taken after them. A follower that takes over
 * adopts its copy, so a confirmed ack survives the loss of the leader, as
 * it does in nats-server, where the ack goes through the consumer's Raft
 * group before the reply.
 *
 * Copies are versioned within one leadership (`run`): each snapshot a
 * follower is handed gets the next version, and so does an answer that its
 * copy is unchanged (it holds the state as it is now). An ack applied
 * before a version was given is in every copy of that version or later.
 */

/** Confirmed acks waiting for copies, at most: beyond, the ack is applied but not confirmed (the client's wait times out). */
export const MAX_CONFIRM_WAITERS = 10_000;

interface Waiter {
  /** The first version whose copies include the ack. */
  need: number;
  since: number;
  done: () => void;
  /** Told if the leadership ends first (an API request answers with an error; an ack is left unconfirmed). */
  failed: (() => void) | undefined;
}

export class ConsumerCopies {
  private version = 0;
  private readonly held = new Map<string, number>();
  /** In order of `need` (versions only grow). */
  private waiters: Waiter[] = [];
  /** Followers' requests held until something changes: each wakes its own. */
  private readonly parked = new Map<string, () => void>();
  /** Per follower, bumped when it starts over (a restart): a request held from before answers with an error, not a copy. */
  private readonly generations = new Map<string, number>();
  /** The newest version a confirmed ack needed: a follower joins the ISR only holding it. */
  private confirmed = 0;
  private closed = false;

  /**
   * @param run this leadership, told apart from any other
   * @param counted the followers (not the leader) whose copies a confirmation waits for: the ISR and those joining it
   */
  constructor(
    readonly run: string,
    private readonly counted: () => readonly string[],
  ) {}

  /** A copy is handed out (a snapshot, or "unchanged"): its version. */
  next(): number {
    return ++this.version;
  }

  /** What `follower` says it holds: a whole copy of `version` taken in leadership `run` (anything else: none of this leadership's). */
  holds(follower: string, run: unknown, version: unknown): void {
    const v = run === this.run && Number.isSafeInteger(version) && (version as number) > 0 ? Math.min(version as number, this.version) : 0;
    if (v === 0) this.held.delete(follower);
    else this.held.set(follower, Math.max(v, this.held.get(follower) ?? 0));
    this.release();
  }

  /** The follower holds a copy of this leadership, at least as new as every confirmed ack needed: it may join the ISR. */
  holdsConfirmed(follower: string): boolean {
    return (this.held.get(follower) ?? 0) >= Math.max(this.confirmed, 1);
  }

  /** A confirmation waits for a newer copy than the follower holds: its request is answered at once, not held. */
  wanted(follower: string): boolean {
    return this.waiters.length > 0 && (this.held.get(follower) ?? 0) < this.waiters[this.waiters.length - 1].need;
  }

  /** The follower starts over (its process restarted): it holds nothing, and what it asked before is not answered with a copy. */
  forget(follower: string): void {
    this.held.delete(follower);
    this.generations.set(follower, this.generation(follower) + 1);
    this.parked.get(follower)?.();
  }

  generation(follower: string): number {
    return this.generations.get(follower) ?? 0;
  }

  /**
   * Calls `done` once every counted follower holds a copy with what is
   * applied now (at once with none). False, and no call, when
   * MAX_CONFIRM_WAITERS wait or the leadership ended.
   */
  whenCopied(done: () => void, now: number, failed?: () => void): boolean {
    if (this.closed) return false;
    if (this.counted().length === 0) {
      // Confirmed on this node alone: a follower joins the ISR only with a copy taken after it, so one waiting is answered now.
      this.confirmed = Math.max(this.confirmed, this.version + 1);
      done();
      for (const wake of [...this.parked.values()]) wake();
      return true;
    }
    if (this.waiters.length >= MAX_CONFIRM_WAITERS) return false;
    this.waiters.push({ need: this.version + 1, since: now, done, failed });
    // Followers waiting for a change copy now.
    for (const wake of [...this.parked.values()]) wake();
    return true;
  }

  /** Holds a follower's request until `wake` is called (a confirmation starts waiting, the leadership ends) or the caller's timer. */
  park(follower: string, wake: () => void): void {
    this.parked.get(follower)?.();
    this.parked.set(follower, wake);
  }

  unpark(follower: string, wake: () => void): void {
    if (this.parked.get(follower) === wake) this.parked.delete(follower);
  }

  /** Calls the waiters that every counted follower's copy covers (after a copy, or a change of the ISR). */
  release(): void {
    if (this.waiters.length === 0) return;
    let low = Infinity;
    for (const n of this.counted()) low = Math.min(low, this.held.get(n) ?? 0);
    let i = 0;
    while (i < this.waiters.length && this.waiters[i].need <= low) i++;
    if (i === 0) return;
    const done = this.waiters.slice(0, i);
    this.waiters = this.waiters.slice(i);
    for (const w of done) {
      this.confirmed = Math.max(this.confirmed, w.need);
      w.done();
    }
  }

  /** Counted followers that have held up a confirmation for more than `ms`: to leave the ISR, as a follower behind on data does. */
  holdingUp(ms: number, now: number): string[] {
    if (this.waiters.length === 0 || now - this.waiters[0].since <= ms) return [];
    const need = this.waiters[0].need;
    return this.counted().filter((n) => (this.held.get(n) ?? 0) < need);
  }

  /** The leadership ends: waiting confirmations are never sent (the acks were applied; a client that waits times out; an API request is told), held requests are answered. */
  close(): void {
    this.closed = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.failed?.();
    for (const wake of [...this.parked.values()]) wake();
    this.parked.clear();
  }
}
