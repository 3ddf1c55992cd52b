/**
 * Fetch v4–11 and ListOffsets v0–3. A fetch answers at once when it has
 * `min_bytes`, else waits for an append to one of its partitions or for
 * `max_wait_ms`, never polling. Records are framed from the log as
 * uncompressed v2 batches, one per run of equal append time.
 */

import type { RequestContext } from "./api.js";
import type { Writer } from "./codec.js";
import type { KafkaDoor } from "./door.js";
import { ErrorCode } from "./errors.js";
import { encodeBatch, type OutRecord } from "./records.js";
import { kafkaHeadersOf } from "./messages.js";
import { findTopic } from "./topics.js";
import type { Stream } from "../../streams/stream.js";
import type { StoredMessage } from "../../store/log.js";

const EARLIEST = -2;
const LATEST = -1;
/** Messages read per partition per fetch, besides the byte limits. */
const MAX_MESSAGES_PER_PARTITION = 4096;

interface PartitionFetch {
  index: number;
  offset: number;
  maxBytes: number;
}

interface TopicFetch {
  name: string;
  partitions: PartitionFetch[];
}

interface PartitionOut {
  index: number;
  error: number;
  highWatermark: number;
  logStart: number;
  messages: StoredMessage[];
}

export async function handleFetch(door: KafkaDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  r.i32(); // replica_id
  const maxWait = Math.max(0, r.i32());
  const minBytes = r.i32();
  const maxBytes = r.i32();
  r.i8(); // isolation_level: with no transactions yet, every stored record is committed
  if (version >= 7) {
    r.i32(); // session_id: sessions are not kept, every fetch is a full one
    r.i32(); // session_epoch
  }
  const topics: TopicFetch[] = r.array((r) => ({
    name: r.string(),
    partitions: r.array((r) => {
      const index = r.i32();
      if (version >= 9) r.i32(); // current_leader_epoch
      const offset = r.i64();
      if (version >= 5) r.i64(); // log_start_offset (followers only)
      return { index, offset, maxBytes: r.i32() };
    }),
  }));
  if (version >= 7) r.array((r) => (r.string(), r.array((r) => r.i32()))); // forgotten_topics_data
  if (version >= 11) r.string(); // rack_id

  const deadline = Date.now() + maxWait;
  let out = await collect(door, topics, maxBytes);
  while (out.bytes < minBytes && Date.now() < deadline && !conn.closed) {
    await appendOrTimeout(door, topics, deadline);
    out = await collect(door, topics, maxBytes);
  }

  w.i32(0); // throttle_time_ms
  if (version >= 7) w.i16(ErrorCode.NONE).i32(0); // error_code, session_id
  w.arrayLength(topics.length);
  for (let t = 0; t < topics.length; t++) {
    w.string(topics[t].name);
    w.array(out.results[t], (w, p) => {
      w.i32(p.index).i16(p.error).i64(p.highWatermark).i64(p.highWatermark); // last_stable_offset = HWM: no open transactions
      if (version >= 5) w.i64(p.logStart);
      w.arrayLength(-1); // aborted_transactions: none
      if (version >= 11) w.i32(-1); // preferred_read_replica
      writeRecords(w, p.messages);
    });
  }
  return true;
}

async function collect(door: KafkaDoor, topics: TopicFetch[], maxBytes: number): Promise<{ results: PartitionOut[][]; bytes: number }> {
  let bytes = 0;
  const results: PartitionOut[][] = [];
  for (const t of topics) {
    const stream = findTopic(door.js, t.name);
    const outs: PartitionOut[] = [];
    for (const p of t.partitions) {
      const log = stream?.partitions[p.index];
      if (stream === undefined || log === undefined) {
        outs.push({ index: p.index, error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, highWatermark: -1, logStart: -1, messages: [] });
        continue;
      }
      const st = log.state();
      const hwm = st.lastSeq;
      const logStart = st.firstSeq - 1;
      if (p.offset < logStart || p.offset > hwm) {
        outs.push({ index: p.index, error: ErrorCode.OFFSET_OUT_OF_RANGE, highWatermark: hwm, logStart, messages: [] });
        continue;
      }
      let messages: StoredMessage[] = [];
      // Kafka returns at least one batch even past max_bytes, so a large record cannot stall a consumer.
      const room = Math.min(p.maxBytes, maxBytes - bytes);
      if (p.offset < hwm && (room > 0 || bytes === 0)) {
        messages = await log.scan(p.offset + 1, { maxMessages: MAX_MESSAGES_PER_PARTITION, maxBytes: Math.max(1, room) });
        for (const m of messages) bytes += m.data.length + (m.headers?.length ?? 0) + (m.key?.length ?? 0) + 32;
      }
      outs.push({ index: p.index, error: ErrorCode.NONE, highWatermark: hwm, logStart, messages });
    }
    results.push(outs);
  }
  return { results, bytes };
}

/** Resolves on the first append to a fetched partition, or at the deadline. */
function appendOrTimeout(door: KafkaDoor, topics: TopicFetch[], deadline: number): Promise<void> {
  const watched: Array<[Stream, (partition: number) => void]> = [];
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | null = null;
    const done = (): void => {
      if (timer !== null) clearTimeout(timer);
      for (const [s, l] of watched) s.appendListeners.delete(l);
      resolve();
    };
    for (const t of topics) {
      const stream = findTopic(door.js, t.name);
      if (stream === undefined) continue;
      const wanted = new Set(t.partitions.map((p) => p.index));
      const listener = (partition: number): void => {
        if (wanted.has(partition)) done();
      };
      stream.appendListeners.add(listener);
      watched.push([stream, listener]);
    }
    timer = setTimeout(done, Math.max(0, deadline - Date.now()));
  });
}

/** The partition's record set: batches of messages sharing an append time. */
function writeRecords(w: Writer, messages: StoredMessage[]): void {
  if (messages.length === 0) {
    w.i32(0);
    return;
  }
  const lengthAt = w.reserveI32();
  const start = w.pos;
  let run: OutRecord[] = [];
  for (const m of messages) {
    if (run.length > 0 && run[0].timestamp !== m.time) {
      encodeBatch(w, run);
      run = [];
    }
    run.push({ offset: m.seq - 1, timestamp: m.time, key: m.key, value: m.data, headers: kafkaHeadersOf(m.headers) });
  }
  encodeBatch(w, run);
  w.patchI32(lengthAt, w.pos - start);
}

export function handleListOffsets(door: KafkaDoor, { version, r, w }: RequestContext): Promise<boolean> {
  r.i32(); // replica_id
  if (version >= 2) r.i8(); // isolation_level
  const topics = r.array((r) => ({
    name: r.string(),
    partitions: r.array((r) => {
      const index = r.i32();
      const timestamp = r.i64();
      if (version === 0) r.i32(); // max_num_offsets
      return { index, timestamp };
    }),
  }));
  return (async () => {
    const results = [];
    for (const t of topics) {
      const stream = findTopic(door.js, t.name);
      const parts = [];
      for (const p of t.partitions) {
        const log = stream?.partitions[p.index];
        if (log === undefined) {
          parts.push({ index: p.index, error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, timestamp: -1, offset: -1 });
          continue;
        }
        const st = log.state();
        let offset: number;
        let timestamp = -1;
        if (p.timestamp === LATEST) offset = st.lastSeq;
        else if (p.timestamp === EARLIEST) offset = st.firstSeq - 1;
        else {
          const m = await log.firstAtOrAfter(p.timestamp);
          offset = m === null ? -1 : m.seq - 1;
          if (m !== null) timestamp = m.time;
        }
        parts.push({ index: p.index, error: ErrorCode.NONE, timestamp, offset });
      }
      results.push({ name: t.name, parts });
    }
    if (version >= 2) w.i32(0); // throttle_time_ms
    w.array(results, (w, t) => {
      w.string(t.name);
      w.array(t.parts, (w, p) => {
        w.i32(p.index).i16(p.error);
        if (version === 0) {
          if (p.offset >= 0) w.arrayLength(1).i64(p.offset);
          else w.arrayLength(0);
        } else w.i64(p.timestamp).i64(p.offset);
      });
    });
    return true;
  })();
}
