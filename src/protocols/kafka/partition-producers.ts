/**
 * Each idempotent producer's last batches in each partition as this node's
 * log received them since the process began: appended here as its leader,
 * or copied here as a follower (or a move's target), less what a cut took
 * back. Kafka's followers keep the same state as they copy (KIP-98): a
 * follower that takes a partition over then knows a producer's retry of a
 * batch it copied, however many records other producers wrote after it.
 * A takeover's recovery (produce.ts) reads the log's last PRODUCER_SCAN
 * messages; a producer not found there is looked up here. Memory only: a
 * restarted node knows what its scan finds.
 */

import type { StoredItem } from "../../store/log.js";
import type { JetStream } from "../../streams/jetstream.js";
import type { Stream } from "../../streams/stream.js";
import { ProducerScan, type ProducerFound } from "./stored-batches.js";

/** A batch as the producer's state remembers it: offset o is the partition's sequence o + 1. */
export interface SeenBatch {
  epoch: number;
  firstSeq: number;
  count: number;
  offset: number;
  timestamp: number;
}

/** Batches kept per producer and partition, as ProducerStates keeps (Kafka's five in flight). */
const KEPT_BATCHES = 5;

export class PartitionProducers {
  /** Per stream, per partition, per producer id: its newest batches of its newest epoch, oldest first; with the stream's entries. */
  private readonly byStream = new Map<Stream, { parts: Array<Map<number, SeenBatch[]> | undefined>; entries: number }>();
  private entries = 0;
  private readonly scan = new ProducerScan((f) => this.noteFound(f));
  private scanning: { stream: Stream; partition: number } | null = null;
  private readonly onCopied = (stream: Stream, partition: number, items: readonly StoredItem[]): void => {
    this.scanning = { stream, partition };
    for (const m of items) this.scan.item(m);
    this.scanning = null;
  };
  private readonly onCut = (stream: Stream, partition: number, fromSeq: number): void => this.cut(stream, partition, fromSeq);

  /** `maxEntries` bounds the (producer, partition) entries kept; past it a partition's oldest goes (its producers are then found by the scan only). */
  constructor(
    private readonly js: JetStream,
    private readonly maxEntries: number,
  ) {
    js.copyListeners.add(this.onCopied);
    js.cutListeners.add(this.onCut);
  }

  close(): void {
    this.js.copyListeners.delete(this.onCopied);
    this.js.cutListeners.delete(this.onCut);
  }

  private noteFound(f: ProducerFound): void {
    if (f.marker || this.scanning === null) return;
    this.note(this.scanning.stream, this.scanning.partition, f.producerId, f.epoch, f.baseSequence, f.count, f.offset, f.timestamp);
  }

  /** A producer's batch stored at `offset` of the partition (appended or copied), in log order. */
  note(stream: Stream, partition: number, producerId: number, epoch: number, firstSeq: number, count: number, offset: number, timestamp: number): void {
    let held = this.byStream.get(stream);
    if (held === undefined) {
      this.dropGone();
      this.byStream.set(stream, (held = { parts: [], entries: 0 }));
    }
    const parts = held.parts;
    let producers = parts[partition];
    if (producers === undefined) parts[partition] = producers = new Map();
    let batches = producers.get(producerId);
    if (batches !== undefined) {
      // Most recently written last: the oldest entries go first when the bound is reached.
      producers.delete(producerId);
      const newest = batches[batches.length - 1];
      // A batch of an older epoch after a newer one (a fenced producer's) does not change what the producer is now.
      if (epoch < newest.epoch) {
        producers.set(producerId, batches);
        return;
      }
      if (epoch > newest.epoch) batches.length = 0;
      // The same batch again (copied once more after a cut, or appended and then copied): kept once.
      if (batches.length > 0 && batches[batches.length - 1].offset >= offset) {
        for (let i = batches.length - 1; i >= 0 && batches[i].offset >= offset; i--) batches.pop();
      }
    } else {
      if (this.entries >= this.maxEntries) {
        const oldest = producers.keys().next();
        if (oldest.done === true) return;
        producers.delete(oldest.value);
        this.entries--;
        held.entries--;
      }
      batches = [];
      this.entries++;
      held.entries++;
    }
    batches.push({ epoch, firstSeq, count, offset, timestamp });
    if (batches.length > KEPT_BATCHES) batches.shift();
    producers.set(producerId, batches);
  }

  /** The partition's log is cut from sequence `fromSeq` on: the batches it took (any of their records) are forgotten. */
  cut(stream: Stream, partition: number, fromSeq: number): void {
    const held = this.byStream.get(stream);
    const producers = held?.parts[partition];
    if (held === undefined || producers === undefined) return;
    for (const [id, batches] of producers) {
      // Offset o is sequence o + 1: a batch's last record is at sequence o + count.
      while (batches.length > 0 && batches[batches.length - 1].offset + batches[batches.length - 1].count >= fromSeq) batches.pop();
      if (batches.length === 0) {
        producers.delete(id);
        this.entries--;
        held.entries--;
      }
    }
  }

  /** What this node's log received of `producerId` in the partition, oldest first; empty when nothing (or it was evicted). */
  batchesOf(stream: Stream, partition: number, producerId: number): readonly SeenBatch[] {
    return this.byStream.get(stream)?.parts[partition]?.get(producerId) ?? [];
  }

  /** Forgets streams no longer served here (deleted, moved away, set aside): looked at as a new one comes. */
  private dropGone(): void {
    for (const [stream, held] of this.byStream) {
      if (!stream.deleted && this.js.streams.get(stream.config.name) === stream) continue;
      this.byStream.delete(stream);
      this.entries -= held.entries;
    }
  }
}
