/**
 * Which leader epoch wrote which offsets of a partition, as Kafka clients
 * see it (KIP-101, KIP-320): the `partitionLeaderEpoch` of every fetched
 * batch, the epoch ListOffsets v4+ gives with an offset, and
 * OffsetForLeaderEpoch's answer, which a client uses to check that its
 * position survived a change of leader.
 *
 * A replicated partition's leader keeps the history (store/leader-epochs.ts,
 * the checkpoint its followers truncate by). It is read as Kafka's
 * leader-epoch cache stands after the log start moved (truncateFromStart):
 * the epoch covering the log start begins there and older ones are gone,
 * so that a leader and a follower that trimmed its copy answer alike.
 * Records written before the stream was first replicated are epoch 0, as a
 * partition's first leader writes them in Kafka.
 *
 * A partition not replicated now has no history here: its records read as
 * written in the epoch Metadata shows (0 unless it was replicated once and
 * scaled down, which keeps its last), and every epoch up to that one ends
 * at the log's end. No client can be told of a truncation that way, and
 * none happened: one copy is never cut back.
 */

import type { EpochEntry } from "../../store/leader-epochs.js";
import type { Stream } from "../../streams/stream.js";

/** Kafka's undefined leader epoch (and offset) in OffsetForLeaderEpoch. */
const UNDEFINED = -1;

export class EpochHistory {
  /** The position of `at` in `entries`: asked in increasing order (a fetch's batches), it searches nothing. */
  private i = 0;

  private constructor(
    /** Oldest first; the first starts at or below the log start. */
    private readonly entries: readonly EpochEntry[],
    /** One epoch stands for every one up to it (a partition without a history). */
    private readonly flat: boolean,
  ) {}

  /**
   * The history of `stream`'s partition `index` led here; `metadataEpoch`:
   * the epoch Metadata shows for it. Null for a replicated partition whose
   * leadership here is not (or no longer) the one Metadata shows: its
   * history is not this node's to tell yet (LEADER_NOT_AVAILABLE).
   */
  static of(stream: Stream, index: number, metadataEpoch: number): EpochHistory | null {
    const gate = stream.replicaGate(index);
    if (gate === undefined) return EpochHistory.flat(metadataEpoch);
    const entries = gate.epochEntries;
    if (entries === undefined || entries.length === 0 || entries[entries.length - 1].epoch !== metadataEpoch) return null;
    const st = stream.partitions[index].state();
    return EpochHistory.trimmed(entries, st.messages > 0 ? st.firstSeq : st.lastSeq + 1);
  }

  /** The flat histories by Metadata's epoch: shared, so a fetch allocates none (one, for 0, unless partitions were scaled down). */
  private static readonly flats = new Map<number, EpochHistory>();

  private static flat(metadataEpoch: number): EpochHistory {
    const epoch = Math.max(0, metadataEpoch);
    let h = EpochHistory.flats.get(epoch);
    if (h === undefined) {
      if (EpochHistory.flats.size >= 64) EpochHistory.flats.clear();
      EpochHistory.flats.set(epoch, (h = new EpochHistory([{ epoch, start: 1 }], true)));
    }
    return h;
  }

  /** The last history read from each checkpoint's entries (replaced whole when they change), with the log start it was trimmed at. */
  private static readonly read = new WeakMap<readonly EpochEntry[], { first: number; history: EpochHistory }>();

  /** `entries` as they stand with the log starting at `first` (Kafka's truncateFromStart), and epoch 0 below them where records predate them. */
  private static trimmed(entries: readonly EpochEntry[], first: number): EpochHistory {
    const known = EpochHistory.read.get(entries);
    if (known !== undefined && known.first === first) return known.history;
    let i = -1;
    while (i + 1 < entries.length && entries[i + 1].start <= first) i++;
    let view: readonly EpochEntry[];
    if (i < 0) view = entries[0].epoch > 0 ? [{ epoch: 0, start: first }, ...entries] : entries;
    else if (i === 0 && entries[0].start === first) view = entries;
    else view = [{ epoch: entries[i].epoch, start: first }, ...entries.slice(i + 1)];
    const history = new EpochHistory(view, false);
    EpochHistory.read.set(entries, { first, history });
    return history;
  }

  /** The epoch that wrote `seq`; cheapest when asked in increasing order. */
  at(seq: number): number {
    const e = this.entries;
    if (e[this.i].start > seq) this.i = 0;
    while (this.i + 1 < e.length && e[this.i + 1].start <= seq) this.i++;
    return e[this.i].epoch;
  }

  /**
   * OffsetForLeaderEpoch, as Kafka's leader-epoch cache answers it: for the
   * latest epoch, the log end; for an older one, the largest epoch at most
   * it and the offset where the next one began; for one older than every
   * epoch, itself and where the first began; -1 and -1 for the undefined
   * epoch (-1) or one never reached. `logEnd`: the log's next offset
   * (Kafka's log end offset, not the high watermark: Kafka answers
   * consumers so too).
   */
  endOffsetFor(requested: number, logEnd: number): { epoch: number; endOffset: number } {
    const e = this.entries;
    const latest = e[e.length - 1].epoch;
    if (requested === UNDEFINED || requested > latest) return { epoch: UNDEFINED, endOffset: UNDEFINED };
    // Without a history every epoch up to the one shown ends at the log end (an epoch below -1 is older than any, as in Kafka).
    if (requested === latest || (this.flat && requested >= 0)) return { epoch: requested, endOffset: logEnd };
    let higher = 0;
    while (e[higher].epoch <= requested) higher++;
    const endOffset = e[higher].start - 1;
    return { epoch: higher === 0 ? requested : e[higher - 1].epoch, endOffset };
  }
}
