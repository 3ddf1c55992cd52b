/**
 * Which leader epoch wrote which offsets of a partition, as Kafka clients
 * see it (KIP-101, KIP-320): the `partitionLeaderEpoch` of every fetched
 * batch, the epoch ListOffsets v4+ gives with an offset, and
 * OffsetForLeaderEpoch's answer, which a client uses to check that its
 * position survived a change of leader.
 *
 * A replicated partition's leader keeps the history (store/leader-epochs.ts,
 * the checkpoint its followers truncate by); records written before the
 * stream was first replicated are epoch 0, as a partition's first leader
 * has in Kafka. A partition not replicated now has no history here: its
 * records read as written in the epoch Metadata shows (0 unless it was
 * replicated once and scaled down, which keeps its last), and every epoch
 * up to that one ends at the log's end. No client can be told of a
 * truncation that way, and none happened: one copy is never cut back.
 */

import type { EpochEntry } from "../../store/leader-epochs.js";
import type { Stream } from "../../streams/stream.js";

export class EpochHistory {
  private constructor(
    /** Oldest first; the first starts at sequence 1. */
    private readonly entries: readonly EpochEntry[],
    /** One epoch stands for every one up to it (a partition without a history). */
    private readonly flat: boolean,
  ) {}

  /** The history of `stream`'s partition `index` led here; `metadataEpoch`: the epoch Metadata shows for it. */
  static of(stream: Stream, index: number, metadataEpoch: number): EpochHistory {
    const entries = stream.replicaGate(index)?.epochEntries;
    if (entries === undefined || entries.length === 0) return new EpochHistory([{ epoch: Math.max(0, metadataEpoch), start: 1 }], true);
    return new EpochHistory(entries[0].start > 1 && entries[0].epoch > 0 ? [{ epoch: 0, start: 1 }, ...entries] : entries, false);
  }

  /** The epoch that wrote `seq`. */
  at(seq: number): number {
    return this.cursor().at(seq);
  }

  /** For sequences asked in increasing order (a fetch's batches): no search per batch. */
  cursor(): EpochCursor {
    return new EpochCursor(this.entries);
  }

  /**
   * OffsetForLeaderEpoch, as Kafka's leader-epoch cache answers it: for the
   * latest epoch, the log end; for an older one, the largest epoch at most
   * it and the offset where the next one began; for one older than every
   * epoch, itself and where the first began; -1 and -1 for an undefined
   * (-1) or an unknown newer epoch. `logEnd`: the log's next offset (Kafka's
   * log end offset, not the high watermark, as Kafka answers consumers too).
   */
  endOffsetFor(requested: number, logEnd: number): { epoch: number; endOffset: number } {
    const e = this.entries;
    const latest = e[e.length - 1].epoch;
    if (requested < 0 || requested > latest) return { epoch: -1, endOffset: -1 };
    if (requested === latest || this.flat) return { epoch: requested, endOffset: logEnd };
    let higher = 0;
    while (e[higher].epoch <= requested) higher++;
    const endOffset = e[higher].start - 1;
    return { epoch: higher === 0 ? requested : e[higher - 1].epoch, endOffset };
  }
}

export class EpochCursor {
  private i = 0;

  constructor(private readonly entries: readonly EpochEntry[]) {}

  at(seq: number): number {
    const e = this.entries;
    if (e[this.i].start > seq) this.i = 0;
    while (this.i + 1 < e.length && e[this.i + 1].start <= seq) this.i++;
    return e[this.i].epoch;
  }
}
