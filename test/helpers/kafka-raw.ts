/** A raw Kafka protocol client for tests that must send what no real client would: frames built by hand, read back one by one. */

import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { Reader, Writer } from "../../src/protocols/kafka/codec.js";
import { crc32c } from "../../src/util/crc32c.js";

/** A request frame: size, header v1 (api key, version, correlation id, client id), then the body. */
export function frame(apiKey: number, version: number, body: (w: Writer) => void, correlationId = 7): Buffer {
  const w = new Writer();
  const at = w.reserveI32();
  w.i16(apiKey).i16(version).i32(correlationId).nullableString("raw");
  body(w);
  w.patchI32(at, w.pos - 4);
  return Buffer.from(w.result());
}

/**
 * A request frame of a flexible version: header v2 (client id still an
 * INT16 string, then an empty tagged-field section), then the body, written
 * with the Writer in flexible mode (compact strings, bytes and arrays;
 * `taggedFields()` writes each structure's empty section).
 */
export function flexibleFrame(apiKey: number, version: number, body: (w: Writer) => void, correlationId = 7): Buffer {
  const w = new Writer();
  const at = w.reserveI32();
  w.i16(apiKey).i16(version).i32(correlationId).nullableString("raw").tags();
  w.flexible = true;
  body(w);
  w.patchI32(at, w.pos - 4);
  return Buffer.from(w.result());
}

/** A flexible version's response past its header v1 (the correlation id read already: RawKafka): its body, read in flexible mode. */
export function flexibleBody(r: Reader): Reader {
  r.tags();
  r.flexible = true;
  return r;
}

/** The answer shape of many APIs: topics, each with [partition, error] (and each structure's tagged fields, in a flexible version). */
export function topicPartitionErrors(r: Reader): Array<{ name: string; partitions: Array<[number, number]> }> {
  return r.array((r) => {
    const name = r.string();
    const partitions = r.array((r): [number, number] => {
      const p: [number, number] = [r.i32(), r.i16()];
      r.taggedFields();
      return p;
    });
    r.taggedFields();
    return { name, partitions };
  });
}

/** A flexible Metadata answer (v10+), after its header: each topic's error, name, id and partition count. */
export function metadataTopics(r: Reader): Array<{ error: number; name: string | null; id: string; partitions: number }> {
  r.flexible = true;
  r.taggedFields(); // response header v1
  r.i32(); // throttle
  r.array((r) => (r.i32(), r.string(), r.i32(), r.nullableString(), r.taggedFields()));
  r.nullableString(); // cluster id
  r.i32(); // controller
  return r.array((r) => {
    const t = { error: r.i16(), name: r.nullableString(), id: r.uuid() };
    r.bool(); // is_internal
    const partitions = r.array((r) => {
      r.i16(); // error
      r.i32(); // index
      r.i32(); // leader
      r.i32(); // leader epoch
      r.array((r) => r.i32()); // replicas
      r.array((r) => r.i32()); // isr
      r.array((r) => r.i32()); // offline
      r.taggedFields();
    }).length;
    r.i32(); // topic_authorized_operations
    r.taggedFields();
    return { ...t, partitions };
  });
}

/** A v2 record batch around records already encoded (and compressed, for a codec other than 0). */
export function batchAround(records: Buffer, count: number, codec: number): Buffer {
  const w = new Writer();
  w.i64(0);
  const lengthAt = w.reserveI32();
  w.i32(0).i8(2);
  const crcAt = w.reserveI32();
  const crcFrom = w.pos;
  w.i16(codec).i32(count - 1).i64(Date.now()).i64(Date.now()).i64(-1).i16(-1).i32(-1).i32(count).raw(records);
  w.patchI32(lengthAt, w.pos - 12);
  w.buf.writeUInt32BE(crc32c(w.buf, crcFrom, w.pos) >>> 0, crcAt);
  return Buffer.from(w.result());
}

/** Produce v3, acks -1, one partition. */
export function produceFrame(topic: string, partition: number, records: Buffer, correlationId = 7): Buffer {
  return frame(0, 3, (w) => w.nullableString(null).i16(-1).i32(30_000).arrayLength(1).string(topic).arrayLength(1).i32(partition).nullableBytes(records), correlationId);
}

/** Fetch v4 of one partition from `offset` (isolation level 0, read_uncommitted, unless told). */
export function fetchFrame(
  topic: string,
  partition: number,
  offset: number,
  opts: { maxWaitMs?: number; minBytes?: number; maxBytes?: number; partitionMaxBytes?: number; isolationLevel?: 0 | 1 } = {},
): Buffer {
  const { maxWaitMs = 0, minBytes = 1, maxBytes = 2 ** 31 - 1, partitionMaxBytes = 2 ** 31 - 1, isolationLevel = 0 } = opts;
  return frame(1, 4, (w) =>
    w.i32(-1).i32(maxWaitMs).i32(minBytes).i32(maxBytes).i8(isolationLevel).arrayLength(1).string(topic).arrayLength(1).i32(partition).i64(offset).i32(partitionMaxBytes),
  );
}

/** Fetch v11 of one partition from `offset`, naming the leader epoch the client knows (KIP-320; -1: none). */
export function fetchV11Frame(topic: string, partition: number, offset: number, currentLeaderEpoch: number): Buffer {
  return frame(1, 11, (w) =>
    w
      .i32(-1) // replica_id
      .i32(0) // max_wait_ms
      .i32(1) // min_bytes
      .i32(2 ** 31 - 1)
      .i8(0) // isolation_level
      .i32(0) // session_id
      .i32(-1) // session_epoch: a full fetch, no session
      .arrayLength(1)
      .string(topic)
      .arrayLength(1)
      .i32(partition)
      .i32(currentLeaderEpoch)
      .i64(offset)
      .i64(-1) // log_start_offset
      .i32(2 ** 31 - 1)
      .arrayLength(0) // forgotten_topics_data
      .string(""), // rack_id
  );
}

/**
 * A connection whose response frames are cut as they arrive (without
 * concatenating everything received: responses may be large), each kept as
 * a Reader positioned after the correlation id.
 */
export class RawKafka {
  readonly responses: Reader[] = [];
  /** Response frame sizes, in order. */
  readonly sizes: number[] = [];
  private head = Buffer.alloc(0);
  private body: Buffer | null = null;
  private filled = 0;
  private readonly waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Connects to `port`; with `ms`, rejects (and drops the socket) if the connection is not made within it. */
  static open(port: number, ms?: number): Promise<RawKafka> {
    return new Promise((resolve, reject) => {
      const timer = ms === undefined ? undefined : setTimeout(() => {
        s.destroy();
        reject(new Error(`no connection to port ${port} within ${ms} ms`));
      }, ms);
      const s = connect(port, "127.0.0.1", () => {
        clearTimeout(timer);
        s.off("error", failed);
        resolve(new RawKafka(s));
      });
      const failed = (err: Error): void => {
        clearTimeout(timer);
        reject(err);
      };
      s.once("error", failed);
    });
  }

  send(b: Buffer): void {
    this.socket.write(b);
  }

  /**
   * The n-th response (0-based), once it has arrived; rejects if the
   * connection closes first, or with `ms`, if it has not come within it (a
   * broker must answer every request: a test fails rather than hangs).
   */
  async response(n: number, ms?: number): Promise<Reader> {
    const deadline = ms === undefined ? Infinity : Date.now() + ms;
    while (this.responses.length <= n) {
      if (this.closed) throw new Error(`connection closed before response ${n}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response ${n} within ${ms} ms`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        if (left !== Infinity) timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
    return this.responses[n];
  }

  /** Resolves when the server has closed the connection. */
  whenClosed(): Promise<void> {
    return new Promise((resolve) => (this.closed ? resolve() : this.socket.once("close", () => resolve())));
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    let at = 0;
    while (at < d.length) {
      if (this.body === null) {
        const take = Math.min(4 - this.head.length, d.length - at);
        this.head = Buffer.concat([this.head, d.subarray(at, at + take)]);
        at += take;
        if (this.head.length < 4) return;
        this.body = Buffer.allocUnsafe(this.head.readInt32BE(0));
        this.filled = 0;
        this.head = Buffer.alloc(0);
      }
      const n = d.copy(this.body, this.filled, at);
      at += n;
      this.filled += n;
      if (this.filled === this.body.length) {
        const r = new Reader(this.body);
        r.i32(); // correlation id
        this.responses.push(r);
        this.sizes.push(this.body.length);
        this.body = null;
        for (const w of this.waiters.splice(0)) w();
      }
    }
  }
}

/**
 * Longest a test's raw request waits to connect and for its answer. A
 * broker answers every request, if only with an error: silence fails the
 * test instead of hanging it.
 */
export const REQUEST_MS = 10_000;

/** One request to the broker at `port` on a connection of its own, its answer read by `read`. */
export async function ask<T>(port: number, request: Buffer, read: (r: Reader) => T): Promise<T> {
  const k = await RawKafka.open(port, REQUEST_MS);
  try {
    k.send(request);
    return read(await k.response(0, REQUEST_MS));
  } finally {
    k.destroy();
  }
}

/** FindCoordinator v1 asked of the broker at `port`: key type 0 a group, 1 a transactional id; the error and the coordinator's id. */
export function findCoordinator(port: number, key: string, keyType: 0 | 1): Promise<{ error: number; id: number }> {
  return ask(port, frame(10, 1, (w) => w.string(key).i8(keyType)), (r) => {
    r.i32(); // throttle
    const error = r.i16();
    r.nullableString();
    return { error, id: r.i32() };
  });
}

/** The error code and base offset of a one-partition produce response. */
export function produceResult(r: Reader): { error: number; baseOffset: number } {
  r.i32(); // topics
  r.string();
  r.i32(); // partitions
  r.i32(); // index
  const error = r.i16();
  return { error, baseOffset: r.i64() };
}

/** Error code, high watermark and record-set bytes of a one-partition fetch response, v4 or (`version` 11) v11. */
export function fetchResult(r: Reader, version: 4 | 11 = 4): { error: number; highWatermark: number; recordBytes: number } {
  r.i32(); // throttle_time_ms
  if (version === 11) {
    assert.equal(r.i16(), 0, "the fetch's top-level error");
    r.i32(); // session_id
  }
  r.i32(); // topics
  r.string();
  r.i32(); // partitions
  r.i32(); // index
  const error = r.i16();
  const highWatermark = r.i64();
  r.i64(); // last stable offset
  if (version === 11) r.i64(); // log start offset
  const aborted = r.i32();
  for (let i = 0; i < aborted; i++) r.raw(16);
  if (version === 11) r.i32(); // preferred_read_replica
  return { error, highWatermark, recordBytes: r.i32() };
}

/** A record batch's header, as a Fetch returns it. */
export interface FetchedBatch {
  baseOffset: number;
  /** The leader epoch that wrote it (KIP-101): the broker sets it. */
  leaderEpoch: number;
  attributes: number;
  lastOffsetDelta: number;
  maxTimestamp: number;
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
  count: number;
}

/** The batches of a record set of `recordBytes` at `r`'s position, read past. */
export function recordBatches(r: Reader, recordBytes: number): FetchedBatch[] {
  const end = r.pos + recordBytes;
  const out: FetchedBatch[] = [];
  while (r.pos < end) {
    const baseOffset = r.i64();
    const length = r.i32();
    const next = r.pos + length;
    const leaderEpoch = r.i32();
    assert.equal(r.i8(), 2, "magic");
    r.u32(); // crc
    const attributes = r.i16();
    const lastOffsetDelta = r.i32();
    r.i64(); // base timestamp
    const maxTimestamp = r.i64();
    const producerId = r.i64();
    const producerEpoch = r.i16();
    const baseSequence = r.i32();
    const count = r.i32();
    out.push({ baseOffset, leaderEpoch, attributes, lastOffsetDelta, maxTimestamp, producerId, producerEpoch, baseSequence, count });
    r.pos = next;
  }
  return out;
}

/** OffsetForLeaderEpoch (23) of one topic's partitions, at `version` (v2+ name the current epoch, v3+ a replica id, v4 is flexible). */
export function offsetForLeaderEpochFrame(version: number, topic: string, partitions: Array<{ index: number; currentLeaderEpoch: number; leaderEpoch: number }>): Buffer {
  const body = (w: Writer): void => {
    if (version >= 3) w.i32(-1); // replica_id: a consumer
    w.arrayLength(1).string(topic).arrayLength(partitions.length);
    for (const p of partitions) {
      w.i32(p.index);
      if (version >= 2) w.i32(p.currentLeaderEpoch);
      w.i32(p.leaderEpoch).taggedFields();
    }
    w.taggedFields().taggedFields();
  };
  return version >= 4 ? flexibleFrame(23, version, body) : frame(23, version, body);
}

/** An OffsetForLeaderEpoch answer of one topic (after its correlation id), read to its last byte: each partition's error, epoch and end offset. */
export function offsetForLeaderEpochResult(r: Reader, version: number): Array<{ error: number; partition: number; epoch: number; endOffset: number }> {
  if (version >= 4) flexibleBody(r);
  if (version >= 2) assert.equal(r.i32(), 0, "throttle_time_ms");
  const [topic] = r.array((r) => {
    r.string();
    const partitions = r.array((r) => {
      const p = { error: r.i16(), partition: r.i32(), epoch: version >= 1 ? r.i32() : -1, endOffset: r.i64() };
      r.taggedFields();
      return p;
    });
    r.taggedFields();
    return partitions;
  });
  r.taggedFields();
  assert.equal(r.remaining, 0, "every byte of the answer read");
  return topic;
}

/** DescribeLogDirs (35) of the topics and partitions named (null: every topic), at `version` (v2+ flexible). */
export function describeLogDirsFrame(version: number, topics: Array<[string, number[]]> | null): Buffer {
  const body = (w: Writer): void => {
    if (topics === null) w.arrayLength(-1);
    else w.array(topics, (w, [name, partitions]) => w.string(name).array(partitions, (w, p) => w.i32(p)).taggedFields());
    w.taggedFields();
  };
  return version >= 2 ? flexibleFrame(35, version, body) : frame(35, version, body);
}

/** A DescribeLogDirs answer (after its correlation id), read to its last byte: each directory's error, path, topics and (v4) sizes. */
export function describeLogDirsResult(r: Reader, version: number) {
  if (version >= 2) flexibleBody(r);
  assert.equal(r.i32(), 0, "throttle_time_ms");
  if (version >= 3) assert.equal(r.i16(), 0, "error_code");
  const results = r.array((r) => {
    const error = r.i16();
    const dir = r.string();
    const topics = r.array((r) => {
      const name = r.string();
      const partitions = r.array((r) => {
        const p = { index: r.i32(), size: r.i64(), lag: r.i64(), future: r.bool() };
        r.taggedFields();
        return p;
      });
      r.taggedFields();
      return { name, partitions };
    });
    const total = version >= 4 ? r.i64() : -1;
    const usable = version >= 4 ? r.i64() : -1;
    r.taggedFields();
    return { error, dir, topics, total, usable };
  });
  r.taggedFields();
  assert.equal(r.remaining, 0, "every byte of the answer read");
  return results;
}

/** ElectLeaders of `version` (v0: preferred, no type; v2 flexible); null topics: every partition. */
export function electLeadersFrame(version: number, type: number, topics: Array<[string, number[]]> | null): Buffer {
  const body = (w: Writer): void => {
    if (version >= 1) w.i8(type);
    if (topics === null) w.arrayLength(-1);
    else w.array(topics, (w, [topic, partitions]) => w.string(topic).array(partitions, (w, p) => w.i32(p)).taggedFields());
    w.i32(30_000).taggedFields();
  };
  return version >= 2 ? flexibleFrame(43, version, body) : frame(43, version, body);
}

/** An ElectLeaders answer read to its last byte (its top-level error, v1+, checked): topic → partition → [error, message]. */
export function electLeadersResult(r: Reader, version: number, topLevelError = 0): Map<string, Map<number, [number, string | null]>> {
  if (version >= 2) flexibleBody(r);
  r.i32(); // throttle
  if (version >= 1) assert.equal(r.i16(), topLevelError, "top-level error");
  const out = new Map<string, Map<number, [number, string | null]>>();
  r.array((r) => {
    const topic = r.string();
    const partitions = new Map<number, [number, string | null]>();
    r.array((r) => {
      partitions.set(r.i32(), [r.i16(), r.nullableString()]);
      r.taggedFields();
    });
    r.taggedFields();
    out.set(topic, partitions);
  });
  r.taggedFields();
  assert.equal(r.remaining, 0, "every byte of the answer read");
  return out;
}
