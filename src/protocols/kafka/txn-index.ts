/**
 * Kafka transactions as a partition's own log shows them (Kafka's producer
 * state and transaction index), on every replica alike: which producers
 * have a transaction open and from which offset, which transactions were
 * aborted (read_committed fetches drop their records), and which sequences
 * NATS readers never see (control markers, records of aborted
 * transactions). All of it is read back from the log as records are
 * appended there, by a leader or by a follower's copy, so a new leader
 * serves exactly what its predecessor did; nothing of it is kept anywhere
 * but in memory, and a start reads the log again.
 *
 * Nothing past what has been read is shown: the last stable offset and
 * what NATS readers may see stop at the first sequence not yet read, and at
 * the first record of the earliest open transaction. A replica cut back to
 * its leader's log (KIP-101) reads its log again from the start.
 *
 * What a log holds of a transaction (messages.ts): a record of one is in a
 * transactional Kafka batch kept whole, or a message with a `Kafka-Txn`
 * header; a marker is a message under `$KAFKA.TXN.COMMIT` or `.ABORT` with
 * that header. Which streams have them is kept per node as one empty file
 * per stream under `txn-streams/` (name and creation time, so a re-created
 * stream starts clean); a follower's copy that brings the first marker or
 * transactional batch adds its stream.
 */

import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { FOREIGN_KAFKA, isForeign, type AppendInput, type MessageLog, type StoredItem } from "../../store/log.js";
import type { JetStream } from "../../streams/jetstream.js";
import type { Stream } from "../../streams/stream.js";
import { itemEnd } from "../../streams/copy-batch.js";
import { HiddenRanges, type Visibility } from "../../streams/visibility.js";
import { storedName, writeFileDurably } from "../../util/persist.js";
import { AbortedRanges } from "./aborted-ranges.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, readTxnMark, type TxnMark } from "./messages.js";
import { transactionalProducer } from "./stored-batches.js";

/** Callers waiting for one partition to be read (EndTxn, DescribeProducers): past this they are answered at once. */
const MAX_READ_WAITERS = 10_000;

/** What one read of the log takes at most. */
const READ_MESSAGES = 1024;
const READ_BYTES = 1024 * 1024;
/**
 * Bounds on what the network can grow here: producers with a transaction
 * open in one partition (the coordinator remembers 10,000 transactional
 * ids), and the separate runs of one open transaction's records (they
 * interleave with other producers'). Past either, the partition's index is
 * failed: its readers stay where they are, and the server says why.
 */
const MAX_OPEN_PER_PARTITION = 20_000;
const MAX_RUNS_PER_TRANSACTION = 1_000_000;
/** Hidden ranges of a partition below which pruneHidden does not look for removed ones. */
const PRUNE_HIDDEN_FROM = 1024;
/** Producers whose newest marker epoch a partition remembers. */
const MAX_MARKER_EPOCHS = 100_000;

interface OpenTxn {
  /** Sequence of its first record here. */
  first: number;
  /** Its records' sequences, inclusive pairs, ascending. */
  runs: number[];
}

interface PartitionIndex {
  /** The next sequence to read (0: not read at all since a start or a cut). */
  next: number;
  /**
   * The first sequence that may hold what the index has not read and
   * readers must not pass (Infinity: none): everything after a start or a
   * cut; a transactional batch or a marker about to be appended here
   * (`expect`); a follower's copy. Plain appends of a leader do not hold
   * readers back: only a Kafka produce stores a transaction's records.
   */
  unreadFrom: number;
  /** Expected appends not landed yet (a log's group commit may land one a round later than another): none may be shown unread. */
  inFlight: number;
  open: Map<number, OpenTxn>;
  /** Per producer, the epoch of its newest marker here: a batch of an older epoch is a fenced producer's (a zombie). */
  markerEpochs: Map<number, number>;
  /** The earliest first sequence among `open` (Infinity: none), kept as they change. */
  earliest: number;
  reading: boolean;
  again: boolean;
  /** Who waits for the read to pass a sequence: [sequence, resolve]. */
  waiters: Array<[number, () => void]>;
  /** Bumped by a cut: a read under way that began before it is void. */
  generation: number;
  /** Why reading stopped (a read error, a bound), told once; cleared by the next read that gets through. */
  failed: string | null;
  /** Hidden ranges left by the last pruneHidden. */
  hiddenPruned: number;
}

/** A transaction open in a partition, as DescribeProducers shows it. */
export interface OpenTransaction {
  producerId: number;
  /** Sequences of its first and last record here. */
  first: number;
  last: number;
}

/** Where readTxnMark puts a message's transaction (one for every index: applying never awaits). */
const mark: TxnMark = { producerId: -1, epoch: -1 };

/** One stream's index: the NATS readers' visibility of it, and what read_committed fetches ask. */
export class TxnIndex implements Visibility {
  private readonly parts: PartitionIndex[] = [];
  private readonly hiddenRanges = new HiddenRanges();
  private readonly aborted = new AbortedRanges();
  private readonly onAppend = (partition: number): void => this.read(partition);
  private closed = false;

  constructor(
    readonly stream: Stream,
    private readonly warn: (line: string) => void,
    /** Told once the index closes (its stream deleted, or the door closing). */
    private readonly onClosed: (index: TxnIndex) => void = () => {},
  ) {}

  /** Starts reading every partition and shows NATS readers only what has been read. */
  start(): void {
    this.stream.appendListeners.add(this.onAppend);
    this.stream.setVisibility(this);
    for (let p = 0; p < this.stream.partitions.length; p++) this.read(p);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed(this);
    this.stream.appendListeners.delete(this.onAppend);
    for (const part of this.parts) for (const [, resolve] of part.waiters.splice(0)) resolve();
  }

  /** Resolves once the partition's log has been read past `seq` (or the index closes). */
  whenRead(partition: number, seq: number): Promise<void> {
    const part = this.part(partition);
    // Past the bound (an index stopped by one, asked again and again), a caller goes on with what is read.
    if (this.closed || part.next > seq || this.stream.deleted || part.waiters.length >= MAX_READ_WAITERS) return Promise.resolve();
    return new Promise((resolve) => {
      part.waiters.push([seq, resolve]);
      this.read(partition);
    });
  }

  /** The partition's log lost its messages from `fromSeq` on (a replica cut back to its leader's): what was read of them is void. */
  cut(partition: number, fromSeq: number): void {
    const part = this.part(partition);
    if (part.next !== 0 && fromSeq >= part.next) return;
    this.reset(partition, part);
    this.read(partition);
  }

  /** Forgets what was read of the partition: it is read again from its first message. */
  private reset(partition: number, part: PartitionIndex): void {
    part.next = 0;
    part.unreadFrom = 0;
    part.open.clear();
    part.markerEpochs.clear();
    part.earliest = Infinity;
    part.generation++;
    part.hiddenPruned = 0;
    this.hiddenRanges.clearPartition(partition);
    this.aborted.clearPartition(partition);
  }

  /** Forgets the records of open transactions below `firstSeq` (gone from the log), and the transactions left with none. */
  private dropBelow(part: PartitionIndex, firstSeq: number): void {
    part.earliest = Infinity;
    for (const [producerId, txn] of part.open) {
      let keep = 0;
      while (keep < txn.runs.length && txn.runs[keep + 1] < firstSeq) keep += 2;
      if (keep > 0) txn.runs.splice(0, keep);
      if (txn.runs.length === 0) {
        part.open.delete(producerId);
        continue;
      }
      txn.first = Math.max(txn.runs[0], firstSeq);
      if (txn.first < part.earliest) part.earliest = txn.first;
    }
  }

  /** Reads what the partition's log holds past what was read, then lets readers on. */
  read(partition: number): void {
    if (this.closed) return;
    const part = this.part(partition);
    if (part.reading) {
      part.again = true;
      return;
    }
    part.reading = true;
    part.again = false;
    void this.readOn(partition, part).finally(() => {
      part.reading = false;
      if (part.again) this.read(partition);
    });
  }

  private async readOn(partition: number, part: PartitionIndex): Promise<void> {
    const log = this.stream.partitions[partition];
    if (log === undefined) return;
    const began = part.next;
    try {
      for (;;) {
        if (this.closed) return;
        if (this.stream.deleted) return this.close();
        const { firstSeq, lastSeq } = log.state();
        // A log that ends before what was read lost its newest messages (a cut no one told): read it again.
        if (part.next > lastSeq + 1) this.reset(partition, part);
        // What retention or a purge removed is decided for readers: its records wait for nothing.
        if (part.earliest < firstSeq) this.dropBelow(part, firstSeq);
        if (part.next < firstSeq) part.next = firstSeq;
        if (part.next > lastSeq) break;
        const generation = part.generation;
        const from = part.next;
        const items = await log.scanStored(from, { maxMessages: READ_MESSAGES, maxBytes: READ_BYTES, stopAtReadError: true });
        if (generation !== part.generation) continue;
        // Nothing stored from `next` to the end as it was: all of it removed.
        if (items.length === 0) {
          if (!this.passable(partition, part, log, lastSeq + 1)) return;
          part.next = lastSeq + 1;
        }
        for (const item of items) {
          if (!this.passable(partition, part, log, isForeign(item) ? item.firstSeq : item.seq)) return;
          if (!this.apply(partition, part, item)) return;
          part.next = Math.max(part.next, itemEnd(item));
        }
        if (part.next === from) throw new Error(`the log read back nothing past sequence ${from}`);
      }
      part.failed = null;
      this.pruneHidden(partition, part, log);
      // Read to the end: what was expected and has landed is read. One still in flight lands at or past `next`.
      if (part.inFlight === 0) {
        if (part.unreadFrom <= part.next) part.unreadFrom = Infinity;
      } else if (part.unreadFrom < part.next) part.unreadFrom = part.next;
    } catch (err) {
      this.fail(partition, part, `read: ${(err as Error).message}`);
    } finally {
      // Readers waiting at the stable offset read again (a Kafka fetch, NATS consumers).
      if (part.next !== began) {
        this.stream.readersMayAdvance(partition);
        if (part.waiters.length > 0) {
          const waiting = part.waiters;
          part.waiters = [];
          for (const w of waiting) {
            if (part.next > w[0]) w[1]();
            else part.waiters.push(w);
          }
        }
      }
    }
  }

  /**
   * Forgets hidden ranges with nothing stored left (markers a compacted
   * topic's cleaner removed: one per transaction under exactly-once), once
   * their number has doubled since the last time, so that memory follows
   * what the log holds and the cost is a pass per doubling.
   */
  private pruneHidden(partition: number, part: PartitionIndex, log: MessageLog): void {
    if (this.hiddenRanges.count(partition) < Math.max(PRUNE_HIDDEN_FROM, 2 * part.hiddenPruned)) return;
    part.hiddenPruned = this.hiddenRanges.retain(partition, (from, to) => {
      for (let seq = from; seq <= to; seq++) if (log.has(seq)) return true;
      return false;
    });
  }

  /**
   * Takes in one stored item; false when a bound stops the index here. A
   * transaction's records are transactional batches kept whole, which only
   * a Kafka produce stores (produce.ts refuses a transactional batch whose
   * records would be stored one by one): a NATS publish with a `Kafka-Txn`
   * header opens nothing. Its markers are the door's messages.
   */
  private apply(partition: number, part: PartitionIndex, item: StoredItem): boolean {
    if (isForeign(item)) {
      if (itemEnd(item) <= part.next || item.format !== FOREIGN_KAFKA) return true;
      const producerId = transactionalProducer(item.bytes);
      return producerId < 0 || this.records(partition, part, producerId, Math.max(item.firstSeq, part.next), itemEnd(item) - Math.max(item.firstSeq, part.next));
    }
    if (item.seq < part.next) return true;
    const commit = item.subject === CONTROL_SUBJECT_COMMIT;
    if ((commit || item.subject === CONTROL_SUBJECT_ABORT) && item.headers !== null && readTxnMark(item.headers, mark)) {
      const known = part.markerEpochs.get(mark.producerId);
      // A marker of an older epoch than one already here (a late retry of a fenced coordinator's) decides nothing: hidden only.
      if (known !== undefined && mark.epoch < known) this.hiddenRanges.add(partition, item.seq, item.seq);
      else this.marker(partition, part, mark.producerId, item.seq, commit);
      if (known === undefined || mark.epoch > known) {
        part.markerEpochs.delete(mark.producerId);
        // A bound: the oldest producer forgotten lets its zombie through, as before it had a marker here.
        if (part.markerEpochs.size >= MAX_MARKER_EPOCHS) part.markerEpochs.delete(part.markerEpochs.keys().next().value!);
        part.markerEpochs.set(mark.producerId, mark.epoch);
      }
    }
    return true;
  }

  private records(partition: number, part: PartitionIndex, producerId: number, from: number, count: number): boolean {
    let txn = part.open.get(producerId);
    if (txn === undefined) {
      if (part.open.size >= MAX_OPEN_PER_PARTITION) return this.fail(partition, part, `more than ${MAX_OPEN_PER_PARTITION} transactions open`);
      part.open.set(producerId, (txn = { first: from, runs: [] }));
      if (from < part.earliest) part.earliest = from;
    }
    const to = from + count - 1;
    const n = txn.runs.length;
    if (n > 0 && txn.runs[n - 1] + 1 === from) txn.runs[n - 1] = to;
    else if (n >= 2 * MAX_RUNS_PER_TRANSACTION) return this.fail(partition, part, `a transaction of producer ${producerId} in more than ${MAX_RUNS_PER_TRANSACTION} pieces`);
    else txn.runs.push(from, to);
    return true;
  }

  /** A commit or abort marker of `producerId` at `seq`: it is hidden, and on abort so are its transaction's records here. */
  private marker(partition: number, part: PartitionIndex, producerId: number, seq: number, commit: boolean): void {
    this.hiddenRanges.add(partition, seq, seq);
    const txn = part.open.get(producerId);
    if (txn === undefined) return; // nothing of it written here (or its records are gone)
    part.open.delete(producerId);
    if (!commit) {
      // Offsets are sequences less one.
      this.aborted.add({ partition, producerId, first: txn.first - 1, last: seq - 1 });
      for (let i = 0; i < txn.runs.length; i += 2) this.hiddenRanges.add(partition, txn.runs[i], txn.runs[i + 1]);
    }
    if (txn.first === part.earliest) {
      part.earliest = Infinity;
      for (const t of part.open.values()) if (t.first < part.earliest) part.earliest = t.first;
    }
  }

  /**
   * Whether the read may go from `next` on to `to` (the next stored item): not over sequences lost to damage while a
   * transaction is open here, whose marker they may have held. Going on would end it with the next marker its producer
   * wrote (an abort's records shown as committed, a commit's hidden as aborted); the index stops there instead, and its
   * readers wait, as Kafka's last stable offset waits on a transaction whose end it has not seen.
   */
  private passable(partition: number, part: PartitionIndex, log: MessageLog, to: number): boolean {
    if (to <= part.next || part.open.size === 0) return true;
    for (const r of log.state().lost) {
      if (r.to >= part.next && r.from < to) return this.fail(partition, part, `sequences ${r.from}..${r.to} were lost to damage while ${part.open.size} transaction(s) were open here: how they ended is not known`);
    }
    return true;
  }

  private fail(partition: number, part: PartitionIndex, why: string): false {
    if (part.failed !== why) this.warn(`kafka: transactions of partition ${partition} of stream "${this.stream.config.name}" not read past sequence ${part.next}: ${why}; its readers wait there`);
    part.failed = why;
    return false;
  }

  private part(partition: number): PartitionIndex {
    while (this.parts.length <= partition) this.parts.push({ next: 0, unreadFrom: 0, inFlight: 0, open: new Map(), markerEpochs: new Map(), earliest: Infinity, reading: false, again: false, waiters: [], generation: 0, failed: null, hiddenPruned: 0 });
    return this.parts[partition];
  }

  // ---- what readers ask ----

  /** The offset below which every record of the partition is decided (Kafka's last stable offset), at most `highWatermark`. */
  lastStableOffset(partition: number, highWatermark: number): number {
    // Offset = sequence - 1: the first sequence not read, and the earliest open transaction's first record. Never below the
    // log start, as Kafka's (an open transaction's first records deleted, until the next read moves it up): a
    // read_committed reader told an offset below it would be out of range, and reset to it again.
    const stable = this.stableSeq(partition);
    if (stable >= highWatermark) return highWatermark;
    const logStart = (this.stream.partitions[partition]?.state().firstSeq ?? 1) - 1;
    return Math.min(highWatermark, Math.max(stable, logStart));
  }

  /** The epoch of the producer's newest marker read here (-1: none): its batches of an older epoch are refused. */
  markerEpoch(partition: number, producerId: number): number {
    return this.part(partition).markerEpochs.get(producerId) ?? -1;
  }

  /** Aborted transactions with records in offsets [from, to], for a read_committed fetch; `logStart` is the partition's first offset. */
  abortedIn(partition: number, from: number, to: number, logStart: number): Array<{ producerId: number; first: number }> {
    return this.aborted.within(partition, from, to, logStart);
  }

  /** The transactions open in the partition as read so far: each producer's first and last record here (sequences). */
  openTransactions(partition: number): OpenTransaction[] {
    const out: OpenTransaction[] = [];
    for (const [producerId, t] of this.part(partition).open) out.push({ producerId, first: t.first, last: t.runs.length > 0 ? t.runs[t.runs.length - 1] : t.first });
    return out;
  }

  // Visibility (the last sequence NATS readers may see is the one before either).
  stableSeq(partition: number): number {
    const part = this.part(partition);
    return Math.max(0, Math.min(part.unreadFrom - 1, part.earliest - 1));
  }

  /**
   * An append about to be made to the partition may be a transaction's
   * (a transactional batch, a marker): readers see nothing past the log's
   * end until it has landed and been read. Call the function returned once
   * it has landed, or failed.
   */
  expect(partition: number): () => void {
    const part = this.part(partition);
    const end = (this.stream.partitions[partition]?.state().lastSeq ?? 0) + 1;
    if (end < part.unreadFrom) part.unreadFrom = end;
    part.inFlight++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      part.inFlight--;
      this.read(partition);
    };
  }

  /** What was copied into the partition from `fromSeq` on (landed already) may be a transaction's: readers wait until it is read. */
  unread(partition: number, fromSeq: number): void {
    const part = this.part(partition);
    if (fromSeq < part.unreadFrom) part.unreadFrom = fromSeq;
  }

  hidden(partition: number, seq: number): boolean {
    return this.hiddenRanges.has(partition, seq);
  }

  hiddenIn(partition: number, after: number, upTo: number): Array<[number, number]> {
    const log = this.stream.partitions[partition];
    if (log !== undefined) this.hiddenRanges.dropBelow(partition, log.state().firstSeq);
    return this.hiddenRanges.within(partition, after, upTo);
  }
}

/**
 * The indexes of one account's streams that hold transactions, and the
 * per-node record of which those are.
 */
export class TxnIndexes {
  private readonly byStream = new WeakMap<Stream, TxnIndex>();
  private readonly live = new Set<TxnIndex>();
  private readonly dir: string;
  /** Each indexed stream's record on disk, written once. */
  private readonly recorded = new WeakMap<Stream, Promise<void>>();
  private readonly onCopied = (stream: Stream, partition: number, items: readonly StoredItem[]): Promise<void> | undefined => {
    const index = this.byStream.get(stream);
    if (index !== undefined) {
      const first = items[0];
      index.unread(partition, isForeign(first) ? first.firstSeq : first.seq);
      return void index.read(partition);
    }
    if (!items.some(isTransactional)) return undefined;
    // Indexed at once, before readers see what the copy brought; recorded for the next start before the copy goes on.
    return this.add(stream).then(
      () => undefined,
      (err: Error) => this.warn(`kafka: stream "${stream.config.name}" copied transactions this node could not record: ${err.message}`),
    );
  };
  private readonly onCut = (stream: Stream, partition: number, fromSeq: number): void => {
    this.byStream.get(stream)?.cut(partition, fromSeq);
  };
  /** A marker about to be appended at this node (JetStream.appendAt): its stream is indexed first, so no reader ever sees it. */
  private readonly beforeAppendAt = async (stream: Stream, partition: number, input: AppendInput): Promise<(() => void) | undefined> => {
    if (input.subject !== CONTROL_SUBJECT_COMMIT && input.subject !== CONTROL_SUBJECT_ABORT) return undefined;
    return (await this.add(stream)).expect(partition);
  };

  constructor(
    private readonly js: JetStream,
    kafkaDir: string,
    private readonly warn: (line: string) => void,
  ) {
    this.dir = join(kafkaDir, "txn-streams");
  }

  /**
   * Indexes the streams recorded here, and listens for copies that bring
   * transactions to others. `legacy`: the per-stream files of the
   * coordinator's earlier records (aborted and hidden ranges, now read from
   * the log), which name streams with transactions too; they go.
   */
  async load(legacy: string[]): Promise<void> {
    const live = new Map<string, Stream>();
    for (const s of this.js.streams.values()) live.set(fileKeyOf(s), s);
    const recorded = new Set(await filesIn(this.dir));
    const known = new Set(recorded);
    for (const dir of legacy) for (const f of await filesIn(dir)) known.add(f.endsWith(".log") ? f.slice(0, -4) : f);
    for (const key of known) {
      const stream = live.get(key);
      if (stream === undefined) {
        if (recorded.has(key)) await rm(join(this.dir, key), { force: true });
      } else if (recorded.has(key)) {
        this.recorded.set(stream, Promise.resolve());
        this.indexOf(stream);
      } else await this.add(stream);
    }
    for (const dir of legacy) await rm(dir, { recursive: true, force: true });
    // A stream that holds transaction markers which no record names (its record lost or removed): unindexed, its aborted
    // records would reach read_committed consumers and its markers NATS readers. Indexed again, and said so. (The subject
    // index answers without a read; a first transaction still open, with no marker yet, is not found this way.)
    for (const [key, stream] of live) {
      if (known.has(key) || !stream.partitions.some((p) => p.subjectCount(CONTROL_SUBJECT_COMMIT) + p.subjectCount(CONTROL_SUBJECT_ABORT) > 0)) continue;
      this.warn(`kafka: stream "${stream.config.name}" holds transaction markers, but its record (${join(this.dir, key)}) is gone: indexed and recorded again`);
      await this.add(stream);
    }
    this.js.copyListeners.add(this.onCopied);
    this.js.cutListeners.add(this.onCut);
    this.js.appendAtHooks.add(this.beforeAppendAt);
  }

  close(): void {
    this.js.copyListeners.delete(this.onCopied);
    this.js.cutListeners.delete(this.onCut);
    this.js.appendAtHooks.delete(this.beforeAppendAt);
    for (const index of [...this.live]) index.close();
  }

  /**
   * The stream's index, made now (readers see only what it has read from
   * here on), and recorded on disk so that a start makes it again: the
   * coordinator waits for that before a transaction writes to the stream.
   */
  add(stream: Stream): Promise<TxnIndex> {
    const index = this.indexOf(stream);
    let recorded = this.recorded.get(stream);
    if (recorded === undefined) {
      recorded = writeFileDurably(join(this.dir, fileKeyOf(stream)), "");
      this.recorded.set(stream, recorded);
      recorded.catch(() => this.recorded.delete(stream));
    }
    return recorded.then(() => index);
  }

  private indexOf(stream: Stream): TxnIndex {
    let index = this.byStream.get(stream);
    if (index === undefined) {
      index = new TxnIndex(stream, this.warn, (i) => this.live.delete(i));
      this.byStream.set(stream, index);
      this.live.add(index);
      index.start();
    }
    return index;
  }

  lastStableOffset(stream: Stream, partition: number, highWatermark: number): number {
    return this.byStream.get(stream)?.lastStableOffset(partition, highWatermark) ?? highWatermark;
  }

  abortedIn(stream: Stream, partition: number, from: number, to: number, logStart: number): Array<{ producerId: number; first: number }> {
    return this.byStream.get(stream)?.abortedIn(partition, from, to, logStart) ?? [];
  }

  /** The sequences of `partition` in (after, upTo] no reader sees (markers, aborted records), as Visibility.hiddenIn; none where the stream never had a transaction. */
  hiddenIn(stream: Stream, partition: number, after: number, upTo: number): Array<[number, number]> {
    return this.byStream.get(stream)?.hiddenIn(partition, after, upTo) ?? [];
  }

  /** A transactional batch is about to be appended to the partition (its stream indexed already: produce.ts); call the function returned once it landed or failed. */
  expect(stream: Stream, partition: number): () => void {
    return this.byStream.get(stream)?.expect(partition) ?? noop;
  }

  markerEpoch(stream: Stream, partition: number, producerId: number): number {
    return this.byStream.get(stream)?.markerEpoch(partition, producerId) ?? -1;
  }

  /** The transactions open in the partition (none where the stream never had one). */
  openTransactions(stream: Stream, partition: number): OpenTransaction[] {
    return this.byStream.get(stream)?.openTransactions(partition) ?? [];
  }

  /** Resolves once the stream's index has read its partition past `seq`. */
  whenRead(stream: Stream, partition: number, seq: number): Promise<void> {
    return this.byStream.get(stream)?.whenRead(partition, seq) ?? Promise.resolve();
  }
}

async function filesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Whether a copied item is a transaction's: a transactional batch, or a marker. */
function isTransactional(item: StoredItem): boolean {
  if (isForeign(item)) return item.format === FOREIGN_KAFKA && transactionalProducer(item.bytes) >= 0;
  return item.subject === CONTROL_SUBJECT_COMMIT || item.subject === CONTROL_SUBJECT_ABORT;
}

export function fileKeyOf(stream: Stream): string {
  const created = `-${stream.created.getTime()}`;
  // Room for the suffix and the write's `.tmp`.
  return `${storedName(stream.config.name, created.length + ".tmp".length)}${created}`;
}

function noop(): void {}
