/**
 * A stream partition's stored items on the wire between nodes, and back
 * into a log at the same sequences and times: what a move's copy
 * (stream-move.ts) and a follower's fetch (replication.ts) carry. Read with
 * `readCopy` (scanStored: runs of messages, Kafka batches whole, with the
 * sequences gone from them named), sent with `encodeBatch`, and appended
 * on the other node with `appendItems` (`appendCopy`, one stored batch per
 * run of one time and per foreign batch), so the copy has the same
 * sequences, gaps, times and bytes.
 */

import { goneMisfit, isForeign, runOf, type MessageLog, type StoredItem, type StoredMessage } from "../store/log.js";

/**
 * The most ranges of sequences gone that one copied batch names (a batch
 * compaction cut record by record, every other one gone): past it the
 * batch goes as its records, as messages. Bounds what an answer makes the
 * receiver build (two numbers a range) and tombstone (16 bytes a range).
 */
export const MAX_GONE_RANGES = 4096;

/**
 * The stored items from `from`, at most `maxMessages` and about `maxBytes`
 * (scanStored's bound: at least one item). With `keepCut` (the asker takes
 * `gone`: nodes of the previous version name none), a foreign batch comes
 * as it is stored, whatever of it is gone, with the sequences it spans
 * that are not stored (compaction cut it, a log start moved inside it)
 * named in `gone`: the copy stores the same bytes and removes those, so
 * it holds what the source holds, record metadata (CreateTime, producer,
 * compression) included. Else, and for a batch that began before `from`
 * (the asker holds its start, as messages: the only way a copy holds part
 * of one) or that would name more than MAX_GONE_RANGES ranges, a batch
 * comes whole only when every sequence it spans is stored (a cut one would
 * have the copy take the sequences it spans as stored), else as its records
 * from `from` on, as messages with the batch's time.
 */
export async function readCopy(log: MessageLog, from: number, maxMessages: number, maxBytes: number, keepCut = false): Promise<StoredItem[]> {
  // Nor from a failed log (a segment whose detail it could not read stands in empty until its reopen), checked around the read.
  refuseFailed(log);
  // A copy must not skip what its source failed to read: it would have a hole where the source has records.
  const items = await log.scanStored(from, { maxMessages, maxBytes, stopAtReadError: true, asStored: keepCut });
  const out: StoredItem[] = [];
  for (const it of items) {
    if (!isForeign(it)) {
      out.push(it);
      continue;
    }
    // Read after the batch: a sequence removed since is named too (the copy drops it, as the source did); none comes back.
    const gone = it.firstSeq >= from ? goneOf(log, it.firstSeq, it.count) : null;
    if (gone !== null && gone.length === 0) out.push(it);
    else if (gone !== null && keepCut && gone.length <= 2 * MAX_GONE_RANGES) out.push({ ...it, gone });
    else {
      const start = Math.max(from, it.firstSeq);
      const end = it.firstSeq + it.count;
      for (const m of await log.scan(start, { maxMessages: end - start, stopAtReadError: true })) if (m.seq < end) out.push(m);
    }
  }
  refuseFailed(log);
  return out;
}

/** The sequences of firstSeq..firstSeq+count-1 not stored, as flat inclusive ranges (empty: every one is). */
function goneOf(log: MessageLog, firstSeq: number, count: number): number[] {
  const gone: number[] = [];
  for (let s = firstSeq; s < firstSeq + count; s++) {
    if (log.has(s)) continue;
    const n = gone.length;
    if (n > 0 && gone[n - 1] === s - 1) gone[n - 1] = s;
    else gone.push(s, s);
  }
  return gone;
}

function refuseFailed(log: MessageLog): void {
  const failed = log.state().error;
  if (failed !== null) throw new Error(`the source's log failed (${failed}); copied again once it has reopened`);
}

/** The sequence after `item`. */
export function itemEnd(item: StoredItem): number {
  return isForeign(item) ? item.firstSeq + item.count : item.seq + 1;
}

/**
 * Appends decoded items to `log` with `appendCopy`, all queued at once (the
 * log groups them), and resolves once every one is as durable as the log's
 * sync policy makes an append; the sequence after the last. One copied
 * batch per foreign batch, and per run of consecutive messages with one
 * time (the source's batches). Items must start at or after `from` and go
 * up, else nothing is appended and it throws.
 */
export async function appendItems(log: MessageLog, items: readonly StoredItem[], from: number): Promise<number> {
  let next = from;
  for (const it of items) {
    const at = isForeign(it) ? it.firstSeq : it.seq;
    if (!Number.isSafeInteger(at) || at < next) throw new Error(`sequence ${at} out of order`);
    next = itemEnd(it);
  }
  const appends: Array<Promise<void>> = [];
  let run: StoredMessage[] = [];
  const flush = (): void => {
    if (run.length > 0) appends.push(appendCopy(log, run[0].seq, run[0].time, run));
    run = [];
  };
  next = from;
  for (const it of items) {
    if (isForeign(it)) {
      flush();
      appends.push(appendCopy(log, it.firstSeq, it.time, it));
    } else {
      if (run.length > 0 && (it.seq !== next || it.time !== run[0].time)) flush();
      run.push(it);
    }
    next = itemEnd(it);
  }
  flush();
  await Promise.all(appends);
  return next;
}

/** appendCopy as a promise, for messages (a run of one time) or a foreign batch whole; none: the log moves on to `firstSeq`. */
export function appendCopy(log: MessageLog, firstSeq: number, time: number, what: StoredMessage[] | Exclude<StoredItem, StoredMessage>): Promise<void> {
  const data = Array.isArray(what) ? runOf(what) : { format: what.format, subject: what.subject, count: what.count, bytes: what.bytes, ...(what.gone !== undefined ? { gone: what.gone } : {}) };
  return new Promise((resolve, reject) =>
    log.appendCopy(firstSeq, time, data, (err, seq) => {
      if (err !== null) reject(err);
      else if (seq !== firstSeq) reject(new Error(`copied sequence ${firstSeq} was stored at ${seq}`));
      else resolve();
    }),
  );
}

// ---- the copy answer: "B", a count, then per item its kind (0: a message, 1: a foreign batch, 2: one with sequences gone) and fields ----
// message: seq, time (f64), then subject, headers, key, data with their lengths (i32, -1: absent)
// foreign batch: first seq, time (f64), count (u32), format (u8), then subject and the batch's bytes with their lengths (i32)
// with sequences gone (only to an asker that said it takes them: an older node would read kind 2 as a message): the foreign
// batch's fields, then how many ranges (u32) and each range's first and last sequence, less the batch's first (u32 each)

const MSG_HEAD = 1 + 8 + 8 + 4 * 4;
const FOREIGN_HEAD = 1 + 8 + 8 + 4 + 1 + 4 + 4;
const GONE_HEAD = 4;
const GONE_RANGE = 8;
const BATCH_MARK = 0x42;

/** The bytes `item` takes in encodeBatch's answer . */
export function encodedSize(item: StoredItem): number {
  return isForeign(item)
    ? FOREIGN_HEAD + Buffer.byteLength(item.subject) + item.bytes.length + goneSize(item.gone)
    : MSG_HEAD + Buffer.byteLength(item.subject) + (item.headers?.length ?? 0) + (item.key?.length ?? 0) + item.data.length;
}

function goneSize(gone: readonly number[] | undefined): number {
  return gone === undefined || gone.length === 0 ? 0 : GONE_HEAD + (gone.length / 2) * GONE_RANGE;
}

/** The bytes of an encodeBatch answer with no items. */
export const EMPTY_BATCH_BYTES = 5;

/**
 * Encodes scanStored's items for a copy, after `headRoom` bytes left for the
 * caller (its answer's header, written there without copying the batch
 * again): into the start of `into` when it is large enough, else a new buffer.
 */
export function encodeBatch(items: readonly StoredItem[], headRoom = 0, into?: Buffer): Buffer {
  const subjects = items.map((m) => Buffer.from(m.subject));
  let size = headRoom + 5;
  for (let i = 0; i < items.length; i++) {
    const m = items[i];
    size += isForeign(m) ? FOREIGN_HEAD + subjects[i].length + m.bytes.length + goneSize(m.gone) : MSG_HEAD + subjects[i].length + (m.headers?.length ?? 0) + (m.key?.length ?? 0) + m.data.length;
  }
  const b = into !== undefined && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(size);
  b[headRoom] = BATCH_MARK;
  b.writeUInt32LE(items.length, headRoom + 1);
  let at = headRoom + 5;
  for (let i = 0; i < items.length; i++) {
    const m = items[i];
    if (isForeign(m)) {
      const gone = m.gone !== undefined && m.gone.length > 0 ? m.gone : null;
      b[at] = gone === null ? 1 : 2;
      b.writeDoubleLE(m.firstSeq, at + 1);
      b.writeDoubleLE(m.time, at + 9);
      b.writeUInt32LE(m.count, at + 17);
      b[at + 21] = m.format;
      b.writeInt32LE(subjects[i].length, at + 22);
      b.writeInt32LE(m.bytes.length, at + 26);
      at += FOREIGN_HEAD;
      at += subjects[i].copy(b, at);
      at += m.bytes.copy(b, at);
      if (gone !== null) {
        b.writeUInt32LE(gone.length / 2, at);
        at += GONE_HEAD;
        for (let k = 0; k < gone.length; k++, at += 4) b.writeUInt32LE(gone[k] - m.firstSeq, at);
      }
      continue;
    }
    b[at] = 0;
    b.writeDoubleLE(m.seq, at + 1);
    b.writeDoubleLE(m.time, at + 9);
    b.writeInt32LE(subjects[i].length, at + 17);
    b.writeInt32LE(m.headers === null ? -1 : m.headers.length, at + 21);
    b.writeInt32LE(m.key === null ? -1 : m.key.length, at + 25);
    b.writeInt32LE(m.data.length, at + 29);
    at += MSG_HEAD;
    at += subjects[i].copy(b, at);
    if (m.headers !== null) at += m.headers.copy(b, at);
    if (m.key !== null) at += m.key.copy(b, at);
    at += m.data.copy(b, at);
  }
  return b;
}

/**
 * Decodes a copy answer; an error answer (JSON) or a malformed one throws.
 * The items' bytes are views of `b`, not copies: every byte replicated
 * passes here, and a copy into fresh memory costs a page fault per page on
 * top of the copy. `b` must be the caller's own and left unchanged; the
 * logs copy what they keep (a file log writes a batch from the view, then
 * lets it go).
 */
export function decodeBatch(b: Buffer): StoredItem[] {
  if (b.length > 0 && b[0] !== BATCH_MARK) {
    let why = "bad answer";
    try {
      why = String((JSON.parse(b.toString()) as { error?: unknown }).error ?? why);
    } catch {
      // not JSON after all
    }
    throw new Error(why);
  }
  if (b.length < 5 || b[0] !== BATCH_MARK) throw new Error("bad copy answer");
  const n = b.readUInt32LE(1);
  const out: StoredItem[] = [];
  let at = 5;
  const part = (len: number): Buffer | null => {
    if (len < 0) return null;
    if (at + len > b.length) throw new Error("short copy answer");
    const v = b.subarray(at, at + len);
    at += len;
    return v;
  };
  for (let i = 0; i < n; i++) {
    if (at + 1 > b.length) throw new Error("short copy answer");
    if (b[at] === 1 || b[at] === 2) {
      const kind = b[at];
      if (at + FOREIGN_HEAD > b.length) throw new Error("short copy answer");
      const firstSeq = b.readDoubleLE(at + 1);
      const time = b.readDoubleLE(at + 9);
      const count = b.readUInt32LE(at + 17);
      const format = b[at + 21];
      const [sl, bl] = [b.readInt32LE(at + 22), b.readInt32LE(at + 26)];
      at += FOREIGN_HEAD;
      const subject = (part(sl) ?? Buffer.alloc(0)).toString();
      const bytes = part(bl) ?? Buffer.alloc(0);
      if (kind === 1) {
        out.push({ format, firstSeq, count, time, subject, bytes });
        continue;
      }
      if (at + GONE_HEAD > b.length) throw new Error("short copy answer");
      const ranges = b.readUInt32LE(at);
      at += GONE_HEAD;
      // Bounded before anything is built from it (readCopy names no more).
      if (ranges === 0 || ranges > MAX_GONE_RANGES) throw new Error(`bad copy answer: ${ranges} ranges gone from a batch`);
      if (at + ranges * GONE_RANGE > b.length) throw new Error("short copy answer");
      const gone: number[] = [];
      for (let k = 0; k < 2 * ranges; k++, at += 4) gone.push(firstSeq + b.readUInt32LE(at));
      const misfit = goneMisfit(gone, firstSeq, count);
      if (misfit !== null) throw new Error(`bad copy answer: ${misfit}`);
      out.push({ format, firstSeq, count, time, subject, bytes, gone });
      continue;
    }
    if (at + MSG_HEAD > b.length) throw new Error("short copy answer");
    const seq = b.readDoubleLE(at + 1);
    const time = b.readDoubleLE(at + 9);
    const [sl, hl, kl, dl] = [b.readInt32LE(at + 17), b.readInt32LE(at + 21), b.readInt32LE(at + 25), b.readInt32LE(at + 29)];
    at += MSG_HEAD;
    const subject = (part(sl) ?? Buffer.alloc(0)).toString();
    out.push({ seq, time, subject, headers: part(hl), key: part(kl), data: part(dl) ?? Buffer.alloc(0) });
  }
  return out;
}
