/**
 * A partition's leader epochs: which leader epoch wrote which sequences, as
 * Kafka's leader-epoch checkpoint (KIP-101, KIP-279). Each entry is an epoch
 * and the first sequence written in it; an epoch ends where the next one
 * starts. A replica that becomes a follower asks its leader where the last
 * epoch they share ends (`endOf`) and truncates its log there before it
 * fetches, so replicas never diverge (docs/CLUSTER.md, "Replication").
 *
 * An entry must be on disk before any sequence it covers is: a leader
 * records its new epoch at its log end when it takes over, a follower
 * records the leader's entries before it appends what they cover. The file
 * is replaced whole (a crash leaves the old or the new one); one written
 * badly (epochs or sequences going back) is damage, reported, not repaired.
 */

import { DamagedStateFile, readJson, writeJsonDurably } from "../util/persist.js";

export interface EpochEntry {
  epoch: number;
  /** The first sequence written in this epoch. */
  start: number;
}

/** `endOf`'s answer for an epoch older than every entry: nothing is shared. */
export const UNDEFINED_EPOCH = -1;

/** A replicated partition's checkpoint, in its directory: only a partition replicated on this node has one. */
export const LEADER_EPOCHS_FILE = "leader-epochs.json";

export class LeaderEpochs {
  private entries: EpochEntry[];

  private constructor(
    private readonly path: string | null,
    entries: EpochEntry[],
  ) {
    this.entries = entries;
  }

  /** In memory only (a memory stream, tests). */
  static inMemory(entries: EpochEntry[] = []): LeaderEpochs {
    check(entries, "entries");
    return new LeaderEpochs(null, entries.map((e) => ({ ...e })));
  }

  /** Reads the file at `path` (none: no epochs yet); one that is not a valid checkpoint throws, naming the file. */
  static async open(path: string): Promise<LeaderEpochs> {
    let raw: unknown;
    try {
      raw = await readJson(path);
    } catch (err) {
      if (err instanceof DamagedStateFile) throw new Error(`${path}: damaged leader epoch checkpoint (${err.why})`);
      throw err;
    }
    if (raw === undefined) return new LeaderEpochs(path, []);
    const entries = (raw as { entries?: unknown }).entries;
    if (!Array.isArray(entries)) throw new Error(`${path}: damaged leader epoch checkpoint (no entries)`);
    const parsed = entries.map((e) => ({ epoch: (e as EpochEntry).epoch, start: (e as EpochEntry).start }));
    check(parsed, path);
    return new LeaderEpochs(path, parsed);
  }

  /** The entries, oldest first. */
  list(): readonly EpochEntry[] {
    return this.entries;
  }

  /** The latest epoch, or UNDEFINED_EPOCH with none. */
  latest(): number {
    return this.entries.length === 0 ? UNDEFINED_EPOCH : this.entries[this.entries.length - 1].epoch;
  }

  /**
   * Records that `epoch` writes from sequence `start` on. The same latest
   * epoch again is nothing to record; an older epoch, or a start before the
   * latest entry's, is refused: the log must be truncated first
   * (`truncateFrom`), which is what keeps the entries ordered.
   */
  async assign(epoch: number, start: number): Promise<void> {
    if (!Number.isSafeInteger(epoch) || epoch < 0 || !Number.isSafeInteger(start) || start < 1) throw new Error(`bad leader epoch entry ${epoch} at ${start}`);
    const last = this.entries[this.entries.length - 1];
    let keep = this.entries;
    if (last !== undefined) {
      if (epoch === last.epoch) return;
      if (epoch < last.epoch) throw new Error(`leader epoch ${epoch} is older than the latest, ${last.epoch}`);
      if (start < last.start) throw new Error(`leader epoch ${epoch} starts at ${start}, before epoch ${last.epoch} (${last.start}): truncate first`);
      // An epoch that wrote nothing ends where it began: the new one replaces it.
      if (start === last.start) keep = keep.slice(0, -1);
    }
    await this.save([...keep, { epoch, start }]);
  }

  /**
   * Where `epoch` ends as this log knows it, Kafka's OffsetForLeaderEpoch:
   * the largest epoch at most `epoch` that this log has, and the first
   * sequence after it (the next epoch's start, or `next`, the log's next
   * sequence, when it is the latest). An epoch older than every entry
   * shares nothing: UNDEFINED_EPOCH.
   */
  endOf(epoch: number, next: number): { epoch: number; end: number } {
    let i = this.entries.length - 1;
    while (i >= 0 && this.entries[i].epoch > epoch) i--;
    if (i < 0) return { epoch: UNDEFINED_EPOCH, end: UNDEFINED_EPOCH };
    return { epoch: this.entries[i].epoch, end: i + 1 < this.entries.length ? this.entries[i + 1].start : next };
  }

  /** The log was truncated so that `seq` is its next sequence: epochs that began at or after it go. */
  async truncateFrom(seq: number): Promise<void> {
    const keep = this.entries.filter((e) => e.start < seq);
    if (keep.length === this.entries.length) return;
    await this.save(keep);
  }

  /** Everything below `first` was removed (purge, limits): the epoch covering it now starts there, older ones go. */
  async trimBelow(first: number): Promise<void> {
    let i = 0;
    while (i + 1 < this.entries.length && this.entries[i + 1].start <= first) i++;
    if (i === 0 && (this.entries.length === 0 || this.entries[0].start >= first)) return;
    await this.save([{ epoch: this.entries[i].epoch, start: Math.max(first, this.entries[i].start) }, ...this.entries.slice(i + 1)]);
  }

  /** Memory follows the file: a failed write (a full disk) leaves both as they were, so the caller's retry writes the entry again. */
  private async save(entries: EpochEntry[]): Promise<void> {
    if (this.path !== null) await writeJsonDurably(this.path, { version: 1, entries });
    this.entries = entries;
  }
}

/** Entries must grow in both epoch and start: anything else was not written by this module. */
function check(entries: EpochEntry[], where: string): void {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const ok = Number.isSafeInteger(e.epoch) && e.epoch >= 0 && Number.isSafeInteger(e.start) && e.start >= 1;
    const ordered = i === 0 || (e.epoch > entries[i - 1].epoch && e.start > entries[i - 1].start);
    if (!ok || !ordered) throw new Error(`${where}: damaged leader epoch checkpoint (entry ${i}: epoch ${String(e.epoch)} at ${String(e.start)})`);
  }
}
