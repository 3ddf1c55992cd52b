/**
 * What NATS readers see of a stream that Kafka transactions write to (the
 * core's `Visibility`, src/streams/visibility.ts): nothing past a
 * partition's last stable offset (the first record of its earliest open
 * transaction), never a control marker, never a record of an aborted
 * transaction. All of it is decided by sequence, from what the transaction
 * coordinator knows (where each transactional batch was stored, where each
 * marker went), never from what the stored messages hold.
 *
 * The hidden sequences are kept per stream in `hidden/<stream>-<created>.log`
 * under the door's directory, one line `partition from to` (sequences,
 * inclusive) per range, appended and synced before the transaction they
 * belong to stops holding readers back. A start drops the ranges a purge
 * or retention has removed from the log.
 */

import { HiddenRanges, type Visibility } from "../../streams/visibility.js";
import type { Stream } from "../../streams/stream.js";

/**
 * Transactional batches not yet placed: runs stored in a partition while a
 * transaction is open there (first sequence → count), so that when the
 * coordinator hears a batch of its transaction was stored at an offset it
 * knows how many records the batch held. Entries at or below a placed batch
 * are dropped, and all of them once no transaction is open in the partition.
 */
const MAX_UNPLACED_RUNS = 65_536;

export class TxnVisibility implements Visibility {
  readonly ranges = new HiddenRanges();
  private readonly unplaced = new Map<number, Map<number, number>>();
  private readonly onRun = (partition: number, firstSeq: number, count: number): void => {
    if (this.heldFrom(partition) === Infinity) return;
    let runs = this.unplaced.get(partition);
    if (runs === undefined) this.unplaced.set(partition, (runs = new Map()));
    // A bound, not an expected case: a lost entry only widens what an abort hides to its records' whole span.
    if (runs.size >= MAX_UNPLACED_RUNS) runs.delete(runs.keys().next().value!);
    runs.set(firstSeq, count);
  };

  constructor(
    readonly stream: Stream,
    /** The offset of the first record of the partition's earliest open transaction (or marker being written), Infinity if none. */
    private readonly heldFrom: (partition: number) => number,
  ) {
    stream.runListeners.add(this.onRun);
  }

  /** How many records the run stored at `firstSeq` of `partition` held, if it was seen; forgets it and the runs before it. */
  placeRun(partition: number, firstSeq: number): number | undefined {
    const runs = this.unplaced.get(partition);
    if (runs === undefined) return undefined;
    const count = runs.get(firstSeq);
    for (const first of runs.keys()) {
      if (first > firstSeq) break;
      runs.delete(first);
    }
    return count;
  }

  /** No transaction is open in `partition` any more: nothing stored there is waiting to be placed. */
  settled(partition: number): void {
    if (this.heldFrom(partition) === Infinity) this.unplaced.delete(partition);
  }

  // An offset below the held one is readable: sequences up to and including that offset (sequence = offset + 1).
  stableSeq(partition: number): number {
    return this.heldFrom(partition);
  }

  hidden(partition: number, seq: number): boolean {
    return this.ranges.has(partition, seq);
  }

  hiddenIn(partition: number, after: number, upTo: number): Array<[number, number]> {
    const log = this.stream.partitions[partition];
    if (log !== undefined) this.ranges.dropBelow(partition, log.state().firstSeq);
    return this.ranges.within(partition, after, upTo);
  }
}

/** The lines of a hidden-ranges file. */
export function hiddenText(ranges: Iterable<[number, number, number]>): string {
  let text = "";
  for (const [partition, from, to] of ranges) text += `${partition} ${from} ${to}\n`;
  return text;
}

/** Reads a hidden-ranges file's text into `into`, skipping a torn last line and ranges below each partition's first sequence; the lines read. */
export function parseHidden(text: string, stream: Stream, into: HiddenRanges): number {
  let read = 0;
  for (const line of text.split("\n")) {
    const [partition, from, to] = line.split(" ").map(Number);
    if (line === "" || [partition, from, to].some((n) => !Number.isSafeInteger(n))) continue;
    read++;
    const log = stream.partitions[partition];
    if (log !== undefined && to >= log.state().firstSeq) into.add(partition, from, to);
  }
  return read;
}
