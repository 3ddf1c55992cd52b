/**
 * The transaction coordinator (KIP-98). A transactional producer's records
 * are appended to the log at once, marked with its producer id; EndTxn then
 * writes a control marker (commit or abort) to every partition the
 * transaction touched. read_committed consumers see nothing past a
 * partition's last stable offset (the first offset of its earliest open
 * transaction) and are told which ranges were aborted, so they can drop them.
 *
 * What must survive a crash is written before it is relied upon:
 * - `transactions.json`: each transactional id's producer id and epoch, and
 *   the partitions of its open transaction with the offset each was added at
 *   (a floor below every record of the transaction). A decision to commit
 *   is written, with its group offsets, before the first marker; on restart
 *   a prepared commit is finished and any other open transaction aborted.
 * - `aborted/<stream>-<created>.log`: per stream, the aborted ranges
 *   (partition, producer id, first offset, marker offset), appended before
 *   the transaction is reported done.
 * - `hidden/<stream>-<created>.log`: per stream, the sequences NATS readers
 *   never see (markers, records of aborted transactions; txn-visibility.ts),
 *   appended before the transaction stops holding them back.
 */

import { mkdir, open, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { JetStream } from "../../streams/jetstream.js";
import type { Stream } from "../../streams/stream.js";
import { readJson, syncDir, writeFileDurably, writeJsonDurably } from "../../util/persist.js";
import { AbortedRanges, type AbortedRange } from "./aborted-ranges.js";
import { ErrorCode } from "./errors.js";
import type { CommittedOffset, GroupCoordinator } from "./groups.js";
import { offsetKey } from "./groups.js";
import { findTopic } from "./topics.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, txnHeaders } from "./messages.js";
import { hiddenText, parseHidden, TxnVisibility } from "./txn-visibility.js";

/** Kafka's transaction.max.timeout.ms default. */
export const MAX_TRANSACTION_TIMEOUT_MS = 15 * 60 * 1000;
/** Transactional ids remembered; beyond this the least recently used idle ones are forgotten. */
const MAX_TRANSACTIONAL_IDS = 10_000;
/** Partitions (and, separately, group offsets) one transaction may touch. */
const MAX_TXN_PARTITIONS = 10_000;
/** Epochs are int16; past this a producer gets a new id, as in Kafka. */
const MAX_EPOCH = 32_767;
/** A marker that could not be stored is tried again after this, doubling up to the maximum. */
const MARKER_RETRY_MIN_MS = 100;
const MARKER_RETRY_MAX_MS = 5_000;

type TxnState = "Empty" | "Ongoing" | "PrepareCommit" | "PrepareAbort";

interface TxnPartition {
  topic: string;
  index: number;
  /** The partition's next offset when it joined the transaction: no record of the transaction is below it. */
  floor: number;
  /** Offset of the transaction's first record here, once stored. */
  first: number | null;
  /** Whether a record of the transaction was sent here (until then it does not hold back the stable offset). */
  written: boolean;
  stream: Stream | null;
  /** The offsets (inclusive pairs) of the transaction's records here, as batches were stored: what an abort hides from NATS readers. */
  runs: Array<[number, number]>;
  /** Some records' place is not known (a batch not seen stored, or the part restored after a restart): an abort hides the whole span. */
  spanUnknown: boolean;
  /** Its marker is being written: NATS readers wait before it, even if no record was sent here. */
  markerPending: boolean;
}

interface Txn {
  id: string;
  producerId: number;
  epoch: number;
  timeoutMs: number;
  state: TxnState;
  partitions: Map<string, TxnPartition>;
  /** Group → offsets committed in the transaction, applied on commit. */
  offsets: Map<string, Map<string, CommittedOffset>>;
  timer: NodeJS.Timeout | null;
  lastUsed: number;
  /** How the last transaction of this epoch ended (saved), so that a retried EndTxn is answered as the first was. */
  ended: "commit" | "abort" | null;
  /** Operations on one transaction run one at a time. */
  queue: Promise<unknown>;
}

interface SavedTxn {
  producerId: number;
  epoch: number;
  timeoutMs: number;
  state: TxnState;
  partitions: Array<[string, number, number]>;
  offsets?: Array<[string, Array<[string, CommittedOffset]>]>;
  ended?: "commit" | "abort";
}

export type TxnRequest = { transactionalId: string; producerId: number; epoch: number };

export class TransactionCoordinator {
  private readonly txns = new Map<string, Txn>();
  /** Open transactional parts per stream and partition, for the last stable offset. */
  private readonly open = new WeakMap<Stream, Map<number, Set<TxnPartition>>>();
  /** Aborted ranges per stream file key (name and creation time, so a re-created stream starts clean). */
  private readonly aborted = new Map<string, AbortedRanges>();
  /** Appends to the aborted and hidden files, one at a time per file. */
  private readonly fileWrites = new Map<string, Promise<void>>();
  /** Per stream, what NATS readers may see (installed on the stream when a transaction first touches it). */
  private readonly visibility = new WeakMap<Stream, TxnVisibility>();
  /** Saves run one after another, each writing the state as it is when it starts. */
  private saves: Promise<void> = Promise.resolve();
  private readonly knownFiles = new Set<string>();
  private closed = false;

  constructor(
    private readonly js: JetStream,
    private readonly groups: GroupCoordinator,
    private readonly dir: string,
    private readonly allocateId: () => number,
    private readonly log: (line: string) => void,
  ) {}

  // ---- startup ----

  /** Reads what was saved, then finishes or aborts the transactions a crash left open. */
  async load(): Promise<void> {
    await this.loadAborted();
    await this.loadHidden();
    const saved = (await readJson(join(this.dir, "transactions.json"))) as Record<string, SavedTxn> | undefined;
    if (saved === undefined) return;
    const unfinished: Txn[] = [];
    for (const [id, s] of Object.entries(saved)) {
      const txn = this.newTxn(id, s.producerId, s.epoch, s.timeoutMs);
      txn.state = s.state;
      txn.ended = s.ended ?? null;
      for (const [topic, index, floor] of s.partitions) {
        const stream = findTopic(this.js, topic) ?? null;
        txn.partitions.set(offsetKey(topic, index), { topic, index, floor, first: null, written: true, stream, runs: [], spanUnknown: true, markerPending: false });
      }
      for (const [group, entries] of s.offsets ?? []) txn.offsets.set(group, new Map(entries));
      this.txns.set(id, txn);
      if (txn.state !== "Empty") unfinished.push(txn);
    }
    for (const txn of unfinished) {
      this.log(`transaction ${txn.id}: ${txn.state === "PrepareCommit" ? "finishing its commit" : "aborting it"} after a restart`);
      for (const p of txn.partitions.values()) if (p.stream !== null) this.openSet(p.stream, p.index).add(p);
      // The epoch moves on, so a producer that lived through the restart is fenced, as after a timeout.
      await this.complete(txn, txn.state === "PrepareCommit", true);
    }
  }

  /**
   * Calls `each` with the text of every per-stream file in `sub` whose
   * stream still exists; files of streams deleted (or re-created) since are
   * removed, their contents meaning nothing now.
   */
  private async forEachStreamFile(sub: string, each: (stream: Stream, path: string, key: string, text: string) => Promise<void>): Promise<void> {
    const dir = join(this.dir, sub);
    let files: string[];
    try {
      files = await readdir(dir);
    } catch {
      return;
    }
    const live = new Map<string, Stream>();
    for (const s of this.js.streams.values()) live.set(`${fileKeyOf(s)}.log`, s);
    for (const f of files) {
      const stream = live.get(f);
      if (stream === undefined) {
        await rm(join(dir, f), { force: true });
        continue;
      }
      const fh = await open(join(dir, f), "r");
      const text = (await fh.readFile()).toString("utf8");
      await fh.close();
      this.knownFiles.add(join(dir, f));
      await each(stream, join(dir, f), f.slice(0, -4), text);
    }
  }

  private async loadAborted(): Promise<void> {
    await this.forEachStreamFile("aborted", async (stream, path, key, text) => {
      const ranges = new AbortedRanges();
      const logStarts: number[] = [];
      let read = 0;
      for (const line of text.split("\n")) {
        const [partition, producerId, first, last] = line.split(" ").map(Number);
        if (line === "" || [partition, producerId, first, last].some((n) => !Number.isSafeInteger(n))) continue; // a torn last line
        read++;
        // Ranges whose marker retention has removed can match no fetch again.
        if (last >= (logStarts[partition] ??= logStartOf(stream, partition))) ranges.add({ partition, producerId, first, last });
      }
      this.aborted.set(key, ranges);
      // The file only grows while the server runs; each start leaves it with the live ranges only.
      if (ranges.size < read) await writeFileDurably(path, rangesText(ranges.all()));
    });
  }

  /** Each stream's hidden sequences, installed as its visibility for NATS readers. */
  private async loadHidden(): Promise<void> {
    await this.forEachStreamFile("hidden", async (stream, path, _key, text) => {
      const v = this.visibilityOf(stream);
      const read = parseHidden(text, stream, v.ranges);
      if (v.ranges.size < read) await writeFileDurably(path, hiddenText(v.ranges.all()));
      stream.visibilityChanged();
    });
  }


  /** The stream's visibility for NATS readers, installed on first use. */
  private visibilityOf(stream: Stream): TxnVisibility {
    let v = this.visibility.get(stream);
    if (v === undefined) {
      v = new TxnVisibility(stream, (index) => this.heldFrom(stream, index));
      this.visibility.set(stream, v);
      stream.setVisibility(v);
    }
    return v;
  }

  /**
   * NATS readers' last stable offset: the first offset of the partition's
   * earliest open transaction, or of a marker being written (Infinity: none).
   */
  private heldFrom(stream: Stream, index: number): number {
    let held = Infinity;
    const parts = this.open.get(stream)?.get(index);
    if (parts !== undefined) for (const p of parts) if (p.written || p.markerPending) held = Math.min(held, p.first ?? p.floor);
    return held;
  }

  close(): void {
    this.closed = true;
    for (const t of this.txns.values()) if (t.timer !== null) clearTimeout(t.timer);
  }

  // ---- the API ----

  /** InitProducerId with a transactional id: fences the previous producer and aborts its open transaction. */
  initProducerId(transactionalId: string, timeoutMs: number): Promise<{ error: number; producerId: number; epoch: number }> {
    if (timeoutMs <= 0 || timeoutMs > MAX_TRANSACTION_TIMEOUT_MS) return Promise.resolve({ error: ErrorCode.INVALID_TRANSACTION_TIMEOUT, producerId: -1, epoch: -1 });
    let txn = this.txns.get(transactionalId);
    if (txn === undefined) {
      if (!this.makeRoom()) return Promise.resolve({ error: ErrorCode.COORDINATOR_NOT_AVAILABLE, producerId: -1, epoch: -1 });
      txn = this.newTxn(transactionalId, this.allocateId(), -1, timeoutMs);
      this.txns.set(transactionalId, txn);
    }
    const t = txn;
    return this.serialise(t, async () => {
      if (t.state !== "Empty") await this.complete(t, t.state === "PrepareCommit", false);
      this.bumpEpoch(t);
      t.ended = null;
      t.timeoutMs = timeoutMs;
      await this.save();
      return { error: ErrorCode.NONE, producerId: t.producerId, epoch: t.epoch };
    });
  }

  addPartitions(req: TxnRequest, topics: Array<{ name: string; partitions: number[] }>): Promise<Array<{ name: string; partitions: Array<{ index: number; error: number }> }>> {
    const answer = (error: (topic: string, index: number) => number): Array<{ name: string; partitions: Array<{ index: number; error: number }> }> =>
      topics.map((t) => ({ name: t.name, partitions: t.partitions.map((index) => ({ index, error: error(t.name, index) })) }));
    return this.guarded(req, (error) => answer(() => error), async (t) => {
      // Unknown partitions fail the whole request, as in Kafka: the others are "not attempted".
      const unknown = new Set<string>();
      for (const tp of topics) {
        const stream = findTopic(this.js, tp.name);
        for (const i of tp.partitions) if (stream === undefined || i < 0 || i >= stream.partitions.length) unknown.add(offsetKey(tp.name, i));
      }
      if (unknown.size > 0) return answer((n, i) => (unknown.has(offsetKey(n, i)) ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION : ErrorCode.OPERATION_NOT_ATTEMPTED));
      let added = 0;
      for (const tp of topics) for (const i of tp.partitions) if (!t.partitions.has(offsetKey(tp.name, i))) added++;
      if (t.partitions.size + added > MAX_TXN_PARTITIONS) return answer(() => ErrorCode.INVALID_REQUEST);
      for (const tp of topics) {
        const stream = findTopic(this.js, tp.name)!;
        for (const index of tp.partitions) {
          const key = offsetKey(tp.name, index);
          if (t.partitions.has(key)) continue;
          const part: TxnPartition = {
            topic: tp.name,
            index,
            floor: stream.partitions[index].state().lastSeq,
            first: null,
            written: false,
            stream,
            runs: [],
            spanUnknown: false,
            markerPending: false,
          };
          this.visibilityOf(stream);
          t.partitions.set(key, part);
          this.openSet(stream, index).add(part);
        }
      }
      this.begin(t);
      // Saved before any record is produced, so a restart knows where to write the abort markers.
      if (added > 0) await this.save();
      return answer(() => ErrorCode.NONE);
    });
  }

  addOffsets(req: TxnRequest, groupId: string): Promise<number> {
    return this.guarded(req, (error) => error, async (t) => {
      if (!t.offsets.has(groupId)) {
        if (t.offsets.size >= MAX_TXN_PARTITIONS) return ErrorCode.INVALID_REQUEST;
        t.offsets.set(groupId, new Map());
      }
      this.begin(t);
      return ErrorCode.NONE;
    });
  }

  /** TxnOffsetCommit: offsets held in the transaction until it commits; dropped if it aborts. */
  commitOffsets(req: TxnRequest, groupId: string, entries: Array<[string, CommittedOffset]>): number {
    const txn = this.txns.get(req.transactionalId);
    const refused = this.check(txn, req);
    if (refused !== ErrorCode.NONE) return refused;
    const pending = txn!.offsets.get(groupId);
    if (pending === undefined) return ErrorCode.INVALID_TXN_STATE; // AddOffsetsToTxn comes first
    for (const [k, v] of entries) {
      if (!pending.has(k) && pending.size >= MAX_TXN_PARTITIONS) return ErrorCode.INVALID_REQUEST;
      pending.set(k, v);
    }
    return ErrorCode.NONE;
  }

  endTxn(req: TxnRequest, commit: boolean): Promise<number> {
    return this.guarded(req, (error) => error, async (t) => {
      // A retry of an EndTxn whose answer was lost gets that answer again, as in Kafka; nothing was open otherwise.
      if (t.state !== "Ongoing") return t.state === "Empty" && t.ended === (commit ? "commit" : "abort") ? ErrorCode.NONE : ErrorCode.INVALID_TXN_STATE;
      await this.complete(t, commit, false);
      return ErrorCode.NONE;
    });
  }

  // ---- the produce and fetch paths ----

  /** Whether a transactional batch may be appended now; a Kafka error code. Synchronous: called at the append turn. */
  checkProduce(req: TxnRequest, topic: string, index: number): number {
    const txn = this.txns.get(req.transactionalId);
    const refused = this.check(txn, req);
    if (refused !== ErrorCode.NONE) return refused;
    if (txn!.state !== "Ongoing") return ErrorCode.INVALID_TXN_STATE;
    const part = txn!.partitions.get(offsetKey(topic, index));
    if (part === undefined) return ErrorCode.INVALID_TXN_STATE; // AddPartitionsToTxn comes first
    part.written = true;
    return ErrorCode.NONE;
  }

  /** A transactional batch is stored at `offset`. */
  stored(transactionalId: string, topic: string, index: number, offset: number): void {
    const part = this.txns.get(transactionalId)?.partitions.get(offsetKey(topic, index));
    if (part === undefined) return;
    if (part.first === null || offset < part.first) part.first = offset;
    // How many records the batch held: the stream told the visibility of the run when it was stored, just before.
    const count = part.stream === null ? undefined : this.visibility.get(part.stream)?.placeRun(index, offset + 1);
    if (count === undefined) {
      part.spanUnknown = true;
      return;
    }
    const last = part.runs[part.runs.length - 1];
    if (last !== undefined && last[1] + 1 === offset) last[1] = offset + count - 1;
    else part.runs.push([offset, offset + count - 1]);
  }

  /** The offset below which every transaction on the partition is decided. */
  lastStableOffset(stream: Stream, index: number, highWatermark: number): number {
    let lso = highWatermark;
    const parts = this.open.get(stream)?.get(index);
    if (parts !== undefined) for (const p of parts) if (p.written) lso = Math.min(lso, p.first ?? p.floor);
    return lso;
  }

  /** Aborted transactions with records in [from, to], for read_committed fetches; `logStart` is the partition's first offset. */
  abortedIn(stream: Stream, index: number, from: number, to: number, logStart: number): Array<{ producerId: number; first: number }> {
    return this.aborted.get(fileKeyOf(stream))?.within(index, from, to, logStart) ?? [];
  }

  // ---- inside ----

  private newTxn(id: string, producerId: number, epoch: number, timeoutMs: number): Txn {
    return { id, producerId, epoch, timeoutMs, state: "Empty", partitions: new Map(), offsets: new Map(), timer: null, lastUsed: Date.now(), ended: null, queue: Promise.resolve() };
  }

  private check(txn: Txn | undefined, req: TxnRequest): number {
    if (txn === undefined || txn.producerId !== req.producerId) return ErrorCode.INVALID_PRODUCER_ID_MAPPING;
    if (req.epoch !== txn.epoch) return ErrorCode.INVALID_PRODUCER_EPOCH;
    if (txn.state === "PrepareCommit" || txn.state === "PrepareAbort") return ErrorCode.CONCURRENT_TRANSACTIONS;
    txn.lastUsed = Date.now();
    return ErrorCode.NONE;
  }

  /**
   * Runs `op` on the request's transaction in turn, once the producer id and
   * epoch check out (checked again in turn: an earlier operation may have
   * fenced the producer); `refused` answers a failed check.
   */
  private guarded<T>(req: TxnRequest, refused: (error: number) => T, op: (txn: Txn) => Promise<T>): Promise<T> {
    const txn = this.txns.get(req.transactionalId);
    const error = this.check(txn, req);
    if (error !== ErrorCode.NONE) return Promise.resolve(refused(error));
    return this.serialise(txn!, () => {
      const again = this.check(txn, req);
      return again !== ErrorCode.NONE ? Promise.resolve(refused(again)) : op(txn!);
    });
  }

  private serialise<T>(txn: Txn, op: () => Promise<T>): Promise<T> {
    const run = txn.queue.then(op, op);
    txn.queue = run.catch(() => undefined);
    return run;
  }

  private bumpEpoch(txn: Txn): void {
    if (txn.epoch >= MAX_EPOCH) {
      txn.producerId = this.allocateId();
      txn.epoch = 0;
    } else txn.epoch++;
  }

  /** The transaction starts (on its first partition or group): its timeout runs from here. */
  private begin(txn: Txn): void {
    if (txn.state === "Ongoing") return;
    txn.state = "Ongoing";
    txn.ended = null;
    const epoch = txn.epoch;
    txn.timer = setTimeout(() => {
      txn.timer = null;
      void this.serialise(txn, async () => {
        if (this.closed || txn.state !== "Ongoing" || txn.epoch !== epoch) return;
        this.log(`transaction ${txn.id} timed out after ${txn.timeoutMs} ms: aborting it`);
        await this.complete(txn, false, true);
      }).catch((err: Error) => this.log(`transaction ${txn.id}: abort after timeout failed: ${err.message}`));
    }, txn.timeoutMs);
    txn.timer.unref();
  }

  /**
   * Writes the decision, then a marker to every partition, then the aborted
   * ranges or the group offsets, then forgets the transaction. `fence` bumps
   * the epoch, so the producer cannot go on with a transaction decided for it.
   */
  private async complete(txn: Txn, commit: boolean, fence: boolean): Promise<void> {
    if (txn.timer !== null) clearTimeout(txn.timer);
    txn.timer = null;
    txn.state = commit ? "PrepareCommit" : "PrepareAbort";
    if (fence) this.bumpEpoch(txn);
    if (commit) await this.save();
    const markers: Array<Promise<{ part: TxnPartition; offset: number } | null>> = [];
    for (const part of txn.partitions.values()) markers.push(this.writeMarkerUntilStored(txn, part, commit));
    const written = await Promise.all(markers);
    await this.hideFromReaders(written, commit);
    if (commit) {
      for (const [groupId, entries] of txn.offsets) {
        const group = this.groups.group(groupId, true);
        if (group !== null && entries.size > 0) await group.commit([...entries]);
      }
    } else {
      const byStream = new Map<Stream, AbortedRange[]>();
      for (const w of written) {
        if (w === null || w.part.stream === null || !w.part.written) continue;
        const list = byStream.get(w.part.stream) ?? [];
        list.push({ partition: w.part.index, producerId: txn.producerId, first: w.part.first ?? w.part.floor, last: w.offset });
        byStream.set(w.part.stream, list);
      }
      for (const [stream, ranges] of byStream) await this.recordAborted(stream, ranges);
    }
    const touched = new Set<Stream>();
    for (const part of txn.partitions.values()) {
      if (part.stream === null) continue;
      this.open.get(part.stream)?.get(part.index)?.delete(part);
      this.visibility.get(part.stream)?.settled(part.index);
      touched.add(part.stream);
    }
    // What the transaction held back is readable now (less what hideFromReaders hid).
    for (const stream of touched) stream.visibilityChanged();
    txn.partitions.clear();
    txn.offsets.clear();
    txn.state = "Empty";
    txn.ended = commit ? "commit" : "abort";
    await this.save();
  }

  /**
   * A decided transaction must reach every partition, as Kafka's coordinator
   * sees to: a failed marker (a disk error) is retried until it is stored,
   * the partition is deleted, or the server stops (a restart then finishes
   * the transaction). Meanwhile the transaction stays prepared: its producer
   * gets CONCURRENT_TRANSACTIONS, read_committed readers wait at its start.
   */
  private async writeMarkerUntilStored(txn: Txn, part: TxnPartition, commit: boolean): Promise<{ part: TxnPartition; offset: number } | null> {
    for (let delay = MARKER_RETRY_MIN_MS; ; delay = Math.min(2 * delay, MARKER_RETRY_MAX_MS)) {
      try {
        return await this.writeMarker(txn, part, commit);
      } catch (err) {
        if (this.closed) throw err;
        this.log(`transaction ${txn.id}: ${(err as Error).message}; trying again in ${delay} ms`);
        await new Promise<void>((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  private writeMarker(txn: Txn, part: TxnPartition, commit: boolean): Promise<{ part: TxnPartition; offset: number } | null> {
    const stream = part.stream;
    if (stream === null || stream.deleted) return Promise.resolve(null);
    // NATS readers wait before the marker until hideFromReaders has hidden it.
    part.markerPending = true;
    return new Promise((resolve, reject) => {
      const input = { subject: commit ? CONTROL_SUBJECT_COMMIT : CONTROL_SUBJECT_ABORT, headers: txnHeaders(txn.producerId, txn.epoch), data: Buffer.alloc(0) };
      stream.append(part.index, input, (err, seq) => {
        if (err === null) resolve({ part, offset: seq - 1 });
        else if (stream.deleted) resolve(null);
        else reject(new Error(`transaction marker for ${part.topic}/${part.index}: ${err.message}`));
      });
    });
  }

  private recordAborted(stream: Stream, ranges: AbortedRange[]): Promise<void> {
    const key = fileKeyOf(stream);
    let list = this.aborted.get(key);
    if (list === undefined) this.aborted.set(key, (list = new AbortedRanges()));
    return this.appendLines("aborted", key, rangesText(ranges), () => {
      for (const r of ranges) list.add(r);
    });
  }

  /**
   * Hides from NATS readers what they must never see of a decided
   * transaction: its markers, and on abort its records (the runs its
   * batches were stored at; the whole span from its first record to the
   * marker where they are not known). Durable before the transaction stops
   * holding readers back, so no reader sees them in between, nor after a restart.
   */
  private async hideFromReaders(written: Array<{ part: TxnPartition; offset: number } | null>, commit: boolean): Promise<void> {
    const byStream = new Map<Stream, Array<[number, number, number]>>();
    for (const w of written) {
      if (w === null || w.part.stream === null) continue;
      const { part, offset } = w;
      const list = byStream.get(part.stream!) ?? [];
      byStream.set(part.stream!, list);
      // Sequence = offset + 1.
      if (!commit && part.written && part.spanUnknown) {
        list.push([part.index, (part.first ?? part.floor) + 1, offset + 1]);
        continue;
      }
      if (!commit) for (const [from, to] of part.runs) list.push([part.index, from + 1, to + 1]);
      list.push([part.index, offset + 1, offset + 1]);
    }
    for (const [stream, ranges] of byStream) {
      const v = this.visibilityOf(stream);
      await this.appendLines("hidden", fileKeyOf(stream), hiddenText(ranges), () => {
        for (const [partition, from, to] of ranges) v.ranges.add(partition, from, to);
      });
    }
  }

  /** Appends `text` to `<sub>/<key>.log` and syncs it (one write at a time per file), then runs `then`. */
  private appendLines(sub: string, key: string, text: string, then: () => void): Promise<void> {
    const dir = join(this.dir, sub);
    const file = join(dir, `${key}.log`);
    const write = async (): Promise<void> => {
      await mkdir(dir, { recursive: true });
      const fh = await open(file, "a");
      try {
        await fh.writeFile(text);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      // A new file is durable only once its directory entry is.
      if (!this.knownFiles.has(file)) {
        await syncDir(dir);
        this.knownFiles.add(file);
      }
      then();
    };
    const prev = this.fileWrites.get(file) ?? Promise.resolve();
    const run = prev.then(write, write);
    this.fileWrites.set(file, run.catch(() => undefined));
    return run;
  }

  private openSet(stream: Stream, index: number): Set<TxnPartition> {
    let byPartition = this.open.get(stream);
    if (byPartition === undefined) this.open.set(stream, (byPartition = new Map()));
    let set = byPartition.get(index);
    if (set === undefined) byPartition.set(index, (set = new Set()));
    return set;
  }

  /** Forgets the least recently used idle transactional id when the table is full. */
  private makeRoom(): boolean {
    if (this.txns.size < MAX_TRANSACTIONAL_IDS) return true;
    let oldest: Txn | null = null;
    for (const t of this.txns.values()) if (t.state === "Empty" && (oldest === null || t.lastUsed < oldest.lastUsed)) oldest = t;
    if (oldest === null) return false;
    this.txns.delete(oldest.id);
    return true;
  }

  private save(): Promise<void> {
    const write = (): Promise<void> => {
      const snapshot: Record<string, SavedTxn> = {};
      for (const t of this.txns.values()) {
        snapshot[t.id] = {
          producerId: t.producerId,
          epoch: t.epoch,
          timeoutMs: t.timeoutMs,
          state: t.state,
          partitions: [...t.partitions.values()].map((p) => [p.topic, p.index, p.floor]),
          ...(t.state === "PrepareCommit" ? { offsets: [...t.offsets].map(([g, m]) => [g, [...m]]) } : {}),
          ...(t.ended !== null ? { ended: t.ended } : {}),
        };
      }
      return writeJsonDurably(join(this.dir, "transactions.json"), snapshot);
    };
    const run = this.saves.then(write, write);
    this.saves = run.catch(() => undefined);
    return run;
  }
}

function fileKeyOf(stream: Stream): string {
  return `${encodeURIComponent(stream.config.name)}-${stream.created.getTime()}`;
}

/** A partition's first offset; past every offset when the partition does not exist. */
function logStartOf(stream: Stream, partition: number): number {
  const log = stream.partitions[partition];
  return log === undefined ? Infinity : log.state().firstSeq - 1;
}

function rangesText(ranges: Iterable<AbortedRange>): string {
  let text = "";
  for (const r of ranges) text += `${r.partition} ${r.producerId} ${r.first} ${r.last}\n`;
  return text;
}
