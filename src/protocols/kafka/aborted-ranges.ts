/**
 * The aborted transactions of one stream, per partition, for read_committed
 * fetches: each range runs from a transaction's first record in the
 * partition to its abort marker. Kept sorted by marker offset, so a fetch
 * looks at the ranges that can reach its window rather than at every abort
 * since the stream began, and ranges whose marker retention has removed are
 * dropped as fetches pass them.
 */

export interface AbortedRange {
  partition: number;
  producerId: number;
  first: number;
  last: number;
}

interface PartitionRanges {
  /** Sorted by `last`; entries before `start` are dropped. */
  ranges: AbortedRange[];
  start: number;
  /** The longest range (last - first): nothing whose marker lies past `to + span` can start at or before `to`. */
  span: number;
}

export class AbortedRanges {
  private readonly byPartition = new Map<number, PartitionRanges>();

  add(r: AbortedRange): void {
    let p = this.byPartition.get(r.partition);
    if (p === undefined) this.byPartition.set(r.partition, (p = { ranges: [], start: 0, span: 0 }));
    // Markers of transactions aborted together may be recorded out of order: insert in place.
    let at = p.ranges.length;
    while (at > p.start && p.ranges[at - 1].last > r.last) at--;
    p.ranges.splice(at, 0, r);
    p.span = Math.max(p.span, r.last - r.first);
  }

  /** Ranges of `partition` with records in [from, to], by first offset; those wholly before `logStart` (gone from the log) are dropped. */
  within(partition: number, from: number, to: number, logStart: number): Array<{ producerId: number; first: number }> {
    const out: Array<{ producerId: number; first: number }> = [];
    const p = this.byPartition.get(partition);
    if (p === undefined) return out;
    const { ranges } = p;
    while (p.start < ranges.length && ranges[p.start].last < logStart) p.start++;
    if (p.start > 1024 && p.start * 2 > ranges.length) {
      ranges.splice(0, p.start);
      p.start = 0;
    }
    // The first range whose marker is at or after `from`.
    let lo = p.start;
    let hi = ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ranges[mid].last < from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < ranges.length && ranges[i].last <= to + p.span; i++) {
      if (ranges[i].first <= to) out.push({ producerId: ranges[i].producerId, first: ranges[i].first });
    }
    // Answered by first offset, not in marker order as Kafka's index lists them: KafkaJS steps through the list in
    // order as it reads, so a transaction that began earlier but aborted later would show it that one's records.
    // (librdkafka and the Java client sort the list themselves.)
    if (out.length > 1) out.sort((a, b) => a.first - b.first);
    return out;
  }

  /** Forgets every range of `partition`. */
  clearPartition(partition: number): void {
    this.byPartition.delete(partition);
  }

  /** Live ranges, in marker order per partition. */
  *all(): IterableIterator<AbortedRange> {
    for (const p of this.byPartition.values()) for (let i = p.start; i < p.ranges.length; i++) yield p.ranges[i];
  }

  get size(): number {
    let n = 0;
    for (const p of this.byPartition.values()) n += p.ranges.length - p.start;
    return n;
  }
}
