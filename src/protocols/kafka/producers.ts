/**
 * Idempotent producers: per (producer id, topic, partition), the epoch, the
 * next expected sequence and the last five batches, so that a retried batch
 * is answered with its original offset instead of being stored twice, and a
 * gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER).
 *
 * The state lives in memory. The log keeps enough to rebuild it: the first
 * record of each idempotent batch names its producer, epoch, base sequence
 * and count, so when a producer id from before a restart shows up, the
 * partition's recent records are scanned for its batches (produce.ts).
 * The same holds for a partition that a move brought here from another
 * node (its log copied with the producers' batches, `Stream.arrivals`):
 * entries from before it arrived are stale, and any producer may be
 * unknown here, so each is recovered from the log on its first batch.
 * Entries are bounded by count; once one of a partition's is evicted, any
 * producer unknown there may be that one, so it too is recovered from the
 * log, until the partition has moved past what a recovery reads (Kafka
 * keeps every producer for producer.id.expiration.ms instead).
 */

import { ErrorCode } from "./errors.js";
import { PRODUCER_SCAN } from "./stored-batches.js";

const REMEMBERED_BATCHES = 5;
/** How many of the least recently used entries eviction looks through for one without a batch in flight. */
const EVICTION_LOOKAHEAD = 64;

interface Batch {
  firstSeq: number;
  count: number;
  /** The base offset it was stored at here, or the append in flight that will give it (replicated or not: see produce.ts). */
  offset: number | Promise<number>;
  /** Its max timestamp as stored (the log's time under LogAppendTime): what Kafka answers a duplicate's log_append_time with. */
  timestamp: number;
}

interface Entry {
  /** The partition's arrival count (Stream.arrivals) when this was recorded: another count means stale. */
  arrival: number;
  epoch: number;
  nextSeq: number;
  batches: Batch[];
  /**
   * A batch refused for a passing reason (no lease, too few replicas) before it was stored, which took nextSeq back
   * to its first sequence, and the error it got; null when none. The producer's batches behind it, in flight when it
   * was refused, are refused the same way instead of OUT_OF_ORDER_SEQUENCE_NUMBER (see check()).
   */
  refused: { at: number; error: number } | null;
}

/**
 * What an idempotent batch's offset promise (check()'s `offset`) is rejected with when the batch was not stored:
 * `retriable` with the error a client retries (the partition's leadership or replicas, for now), which the batch's
 * successors in flight are then answered with.
 */
export class NotStored extends Error {
  constructor(readonly retriable: number | null) {
    super("not stored");
  }
}

export type SequenceVerdict = { kind: "append" } | { kind: "duplicate"; offset: number | Promise<number>; timestamp: number } | { kind: "refuse"; error: number };

/** Broker ids below this interleave their producer ids (see clustered()). */
export const PRODUCER_ID_STRIDE = 1024;

export class ProducerStates {
  private readonly entries = new Map<string, Entry>();
  /**
   * Partitions ("topic/partition") that have lost an entry to the bound, with
   * the sequence after the newest record an evicted entry stored there: an
   * unknown producer there may have batches in the log up to it.
   */
  private readonly evictedFrom = new Map<string, number>();
  /** Per partition, the evicted entries' batches still in flight: until they settle, how far they go is not known. */
  private readonly evictedInFlight = new Map<string, { count: number }>();
  private nextId: number;
  private stride = 1;
  /** Ids below this were handed out before this process started. */
  private readonly firstIdOfRun: number;

  /** `maxEntries` bounds the (producer, partition) entries; the least recently used go first. */
  constructor(private readonly maxEntries: number) {
    // Ids from the clock: unique across restarts without a file, below 2^53.
    this.nextId = Date.now() * 1000;
    this.firstIdOfRun = this.nextId;
  }

  /** Whether this producer may have batches in the partition (its log `log`) that this process has not seen. */
  mayNeedRecovery(producerId: number, topic: string, partition: number, arrival: number, log: { state(): { lastSeq: number } }): boolean {
    const e = this.entries.get(`${producerId}/${topic}/${partition}`);
    if (e !== undefined && e.arrival === arrival) return false;
    if (producerId < this.firstIdOfRun || arrival > 0) return true;
    const part = `${topic}/${partition}`;
    if (this.evictedInFlight.has(part)) return true;
    const evictedUpTo = this.evictedFrom.get(part);
    if (evictedUpTo === undefined) return false;
    // A recovery reads the last PRODUCER_SCAN messages: once what was evicted is all below them, it could find nothing.
    if (log.state().lastSeq - evictedUpTo < PRODUCER_SCAN) return true;
    this.evictedFrom.delete(part);
    return false;
  }

  /** Restores a producer's recent batches in a partition, oldest first, as found in the log. */
  seed(producerId: number, topic: string, partition: number, arrival: number, found: ReadonlyArray<{ epoch: number; firstSeq: number; count: number; offset: number; timestamp: number }>): void {
    const key = `${producerId}/${topic}/${partition}`;
    const known = this.entries.get(key);
    if (known !== undefined && known.arrival === arrival) return;
    this.entries.delete(key);
    if (found.length === 0) return;
    const last = found[found.length - 1];
    const batches = found.filter((b) => b.epoch === last.epoch).slice(-REMEMBERED_BATCHES).map((b) => ({ firstSeq: b.firstSeq, count: b.count, offset: b.offset, timestamp: b.timestamp }));
    this.makeRoom();
    this.entries.set(key, { arrival, epoch: last.epoch, nextSeq: (last.firstSeq + last.count) % 0x80000000, batches, refused: null });
  }

  /** Evicts the least recently used entry when the bound is reached, noting its partition and how far its batches went. */
  private makeRoom(): void {
    if (this.entries.size < this.maxEntries) return;
    // Not one with a batch in flight, if one of the oldest few has none: a batch still queued for its partition is not
    // in the log yet, so a recovery could not find it, and the producer's retry would be stored twice.
    let victim: [string, Entry] | undefined;
    let looked = 0;
    for (const kv of this.entries) {
      if (!kv[1].batches.some((b) => typeof b.offset !== "number")) {
        victim = kv;
        break;
      }
      if (++looked >= EVICTION_LOOKAHEAD) break;
    }
    const [key, evicted] = victim ?? this.entries.entries().next().value!;
    this.entries.delete(key);
    const part = key.slice(key.indexOf("/") + 1);
    this.noteEvicted(part, 0);
    // Offset o is sequence o + 1, so a batch ends at sequence o + count. One still in flight is noted once stored,
    // and its partition is recovered from meanwhile: its producer's retry may come before it is stored.
    for (const b of evicted.batches) {
      if (typeof b.offset === "number") {
        this.noteEvicted(part, b.offset + b.count);
        continue;
      }
      let inFlight = this.evictedInFlight.get(part);
      if (inFlight === undefined) this.evictedInFlight.set(part, (inFlight = { count: 0 }));
      inFlight.count++;
      const counted = inFlight;
      const settled = (o: number | null): void => {
        // Its topic deleted meanwhile (and maybe made again): nothing of it counts any more.
        if (this.evictedInFlight.get(part) !== counted) return;
        if (--counted.count === 0) this.evictedInFlight.delete(part);
        if (o !== null) this.noteEvicted(part, o + b.count);
      };
      b.offset.then(settled, () => settled(null));
    }
  }

  private noteEvicted(part: string, endSeq: number): void {
    this.evictedFrom.set(part, Math.max(endSeq, this.evictedFrom.get(part) ?? 0));
  }

  allocate(): number {
    const id = this.nextId;
    this.nextId += this.stride;
    return id;
  }

  /**
   * In a cluster, producer ids from different brokers must never meet in a
   * partition: broker `nodeId` hands out only ids equal to it modulo
   * PRODUCER_ID_STRIDE. Still from the clock (about one id per millisecond
   * of uptime before ids could repeat after a restart, instead of one per
   * microsecond: a producer id is taken once per producer session).
   */
  clustered(nodeId: number): void {
    if (nodeId < 0 || nodeId >= PRODUCER_ID_STRIDE) throw new Error(`broker id ${nodeId}: producer ids are interleaved for broker ids below ${PRODUCER_ID_STRIDE}`);
    this.stride = PRODUCER_ID_STRIDE;
    this.nextId = Math.ceil(this.nextId / PRODUCER_ID_STRIDE) * PRODUCER_ID_STRIDE + nodeId;
  }

  /** Decides a batch (its max timestamp as it will be stored) at the moment it would be appended; records it when the verdict is "append". */
  check(producerId: number, epoch: number, topic: string, partition: number, arrival: number, firstSeq: number, count: number, offset: Promise<number>, timestamp: number): SequenceVerdict {
    const key = `${producerId}/${topic}/${partition}`;
    let e = this.entries.get(key);
    // Recorded before the partition last arrived here by a move: what the log says (seed) counts, not this.
    if (e !== undefined && e.arrival !== arrival) {
      this.entries.delete(key);
      // It arrived since this batch's recovery was decided (prepare): the log was not read for the producer, and a batch
      // past its first may be the retry of one stored there. Refused for now; the retry recovers it from the log.
      if (firstSeq !== 0) return { kind: "refuse", error: ErrorCode.NOT_LEADER_OR_FOLLOWER };
      e = undefined;
    }
    if (e !== undefined) {
      this.entries.delete(key); // re-inserted below: most recently used last
      if (epoch < e.epoch) {
        this.entries.set(key, e);
        return { kind: "refuse", error: ErrorCode.INVALID_PRODUCER_EPOCH };
      }
      if (epoch === e.epoch) {
        const dup = e.batches.find((b) => b.firstSeq === firstSeq && b.count === count);
        if (dup !== undefined) {
          this.entries.set(key, e);
          return { kind: "duplicate", offset: dup.offset, timestamp: dup.timestamp };
        }
        if (firstSeq !== e.nextSeq) {
          this.entries.set(key, e);
          // A batch sent behind one refused for a passing reason: it gets that refusal too. OUT_OF_ORDER would tell
          // librdkafka its sequence broke after a batch it was told was not stored; it then bumps its epoch and sends
          // every batch it has not had acknowledged again as new, including batches of other partitions that were
          // answered "possibly stored" (stored twice). Refused alike, they are retried in order under the same epoch.
          return { kind: "refuse", error: e.refused !== null && e.refused.at === e.nextSeq ? e.refused.error : ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER };
        }
      } else if (firstSeq !== 0) {
        this.entries.set(key, e);
        return { kind: "refuse", error: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER };
      } else e = { arrival, epoch, nextSeq: 0, batches: [], refused: null };
    } else {
      // No state for the producer here (never sent here, or its batches are past what a recovery reads): any
      // sequence starts it, as Kafka accepts one when the partition has no epoch for it (KIP-360). Refusing
      // with UNKNOWN_PRODUCER_ID failed KafkaJS's send outright (it does not retry it).
      e = { arrival, epoch, nextSeq: firstSeq, batches: [], refused: null };
      this.makeRoom();
    }
    this.entries.set(key, e);
    const batch: Batch = { firstSeq, count, offset, timestamp };
    e.refused = null;
    e.batches.push(batch);
    if (e.batches.length > REMEMBERED_BATCHES) e.batches.shift();
    // Sequences wrap at 2^31, as Kafka's do.
    e.nextSeq = (firstSeq + count) % 0x80000000;
    offset.then(
      (o) => (batch.offset = o),
      (why: unknown) => {
        // Not stored here (refused, or the store failed): not a batch a retry may be told was stored; forget it and rewind.
        const i = e!.batches.indexOf(batch);
        if (i >= 0) e!.batches.splice(i, 1);
        if (e!.nextSeq === (firstSeq + count) % 0x80000000) {
          e!.nextSeq = firstSeq;
          e!.refused = why instanceof NotStored && why.retriable !== null ? { at: firstSeq, error: why.retriable } : null;
        }
      },
    );
    return { kind: "append" };
  }

  /** Forgets every partition of a deleted topic. */
  forgetTopic(topic: string): void {
    for (const k of [...this.entries.keys()]) {
      const rest = k.slice(k.indexOf("/") + 1);
      if (rest.slice(0, rest.lastIndexOf("/")) === topic) this.entries.delete(k);
    }
    for (const p of [...this.evictedFrom.keys()]) if (p.slice(0, p.lastIndexOf("/")) === topic) this.evictedFrom.delete(p);
    for (const p of [...this.evictedInFlight.keys()]) if (p.slice(0, p.lastIndexOf("/")) === topic) this.evictedInFlight.delete(p);
  }
}
