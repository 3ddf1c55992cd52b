/**
 * What NATS readers (consumers, MSG.GET, direct get, and so KV and object
 * store) may see of a stream partition, when a door stores data that is not
 * readable yet or never will be: Kafka transactions store their records at
 * once, and the commit or abort marker after them. The door installs a
 * `Visibility` on the stream (`Stream.setVisibility`); the core asks it
 * by sequence only, never by what a message holds, and knows nothing of
 * transactions. A stream without one shows everything it stores.
 */

export interface Visibility {
  /**
   * The last sequence of `partition` readers may see now: what is stored
   * after it waits (records of a transaction still open, and whatever was
   * stored after its first record). Infinity when nothing waits.
   */
  stableSeq(partition: number): number;
  /** Whether `seq` of `partition` is never shown (a control marker, a record of an aborted transaction). */
  hidden(partition: number, seq: number): boolean;
  /**
   * The hidden sequences of `partition` in (after, upTo], as inclusive
   * [from, to] pairs clipped to that window, ascending and disjoint.
   */
  hiddenIn(partition: number, after: number, upTo: number): Array<[number, number]>;
}

/**
 * A door's rules (or none) with nothing shown past a cap per partition:
 * a replicated partition's high watermark (stream-replicas.ts), so that no
 * reader sees a write a failover could lose.
 */
export class CappedVisibility implements Visibility {
  constructor(
    private readonly inner: Visibility | null,
    /** The last sequence of a partition readers may see (Infinity: no cap). */
    private readonly cap: (partition: number) => number,
  ) {}

  stableSeq(partition: number): number {
    const cap = this.cap(partition);
    return this.inner === null ? cap : Math.min(cap, this.inner.stableSeq(partition));
  }

  hidden(partition: number, seq: number): boolean {
    return this.inner !== null && this.inner.hidden(partition, seq);
  }

  hiddenIn(partition: number, after: number, upTo: number): Array<[number, number]> {
    return this.inner === null ? [] : this.inner.hiddenIn(partition, after, upTo);
  }
}

/**
 * Sorted, disjoint ranges of hidden sequences, per partition: the store a
 * door's Visibility can keep its hidden sequences in. Ranges entirely below
 * a partition's first stored sequence are dropped as readers pass them.
 */
export class HiddenRanges {
  private readonly byPartition = new Map<number, { from: number[]; to: number[] }>();

  /** Hides from..to (inclusive) of `partition`; a range touching a neighbour is merged with it. */
  add(partition: number, from: number, to: number): void {
    let p = this.byPartition.get(partition);
    if (p === undefined) this.byPartition.set(partition, (p = { from: [], to: [] }));
    // Ranges arrive nearly in order (markers as transactions end): insert from the end.
    let at = p.from.length;
    while (at > 0 && p.from[at - 1] > from) at--;
    p.from.splice(at, 0, from);
    p.to.splice(at, 0, to);
    // Merge with an overlapping or adjacent neighbour on either side.
    let i = at;
    if (i > 0 && p.from[i] <= p.to[i - 1] + 1) {
      p.to[i - 1] = Math.max(p.to[i - 1], p.to[i]);
      p.from.splice(i, 1);
      p.to.splice(i, 1);
      i--;
    }
    while (i + 1 < p.from.length && p.from[i + 1] <= p.to[i] + 1) {
      p.to[i] = Math.max(p.to[i], p.to[i + 1]);
      p.from.splice(i + 1, 1);
      p.to.splice(i + 1, 1);
    }
  }

  /** The first range index of `partition` whose end is at or after `seq`. */
  private firstEndingAtOrAfter(r: { to: number[] }, seq: number): number {
    let lo = 0;
    let hi = r.to.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (r.to[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  has(partition: number, seq: number): boolean {
    const p = this.byPartition.get(partition);
    if (p === undefined) return false;
    const i = this.firstEndingAtOrAfter(p, seq);
    return i < p.from.length && p.from[i] <= seq;
  }

  within(partition: number, after: number, upTo: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    const p = this.byPartition.get(partition);
    if (p === undefined || upTo <= after) return out;
    for (let i = this.firstEndingAtOrAfter(p, after + 1); i < p.from.length && p.from[i] <= upTo; i++) {
      out.push([Math.max(p.from[i], after + 1), Math.min(p.to[i], upTo)]);
    }
    return out;
  }

  /** Forgets the ranges of `partition` wholly below `firstSeq` (removed from the log). */
  dropBelow(partition: number, firstSeq: number): void {
    const p = this.byPartition.get(partition);
    if (p === undefined) return;
    const n = this.firstEndingAtOrAfter(p, firstSeq);
    if (n === 0) return;
    p.from.splice(0, n);
    p.to.splice(0, n);
  }

  /** Keeps only the ranges of `partition` for which `kept` holds, in one pass; how many are left. */
  retain(partition: number, kept: (from: number, to: number) => boolean): number {
    const p = this.byPartition.get(partition);
    if (p === undefined) return 0;
    let n = 0;
    for (let i = 0; i < p.from.length; i++) {
      if (!kept(p.from[i], p.to[i])) continue;
      p.from[n] = p.from[i];
      p.to[n] = p.to[i];
      n++;
    }
    p.from.length = n;
    p.to.length = n;
    return n;
  }

  /** The ranges of `partition`. */
  count(partition: number): number {
    return this.byPartition.get(partition)?.from.length ?? 0;
  }

  /** Forgets every range of `partition`. */
  clearPartition(partition: number): void {
    this.byPartition.delete(partition);
  }

  /** Every range as [partition, from, to], per partition in order. */
  *all(): IterableIterator<[number, number, number]> {
    for (const [partition, p] of this.byPartition) for (let i = 0; i < p.from.length; i++) yield [partition, p.from[i], p.to[i]];
  }

  get size(): number {
    let n = 0;
    for (const p of this.byPartition.values()) n += p.from.length;
    return n;
  }
}
