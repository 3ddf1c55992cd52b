/**
 * The transaction index of one partition (src/protocols/kafka/txn-index.ts)
 * over a memory log, with transactional Kafka batches and markers as the
 * door stores them: what it hides and holds back, and that it follows the
 * log when the log loses messages (a purge, a replica's cut, a delete at its
 * end). The real clients' view of the same is in kafka-txn*.test.ts and
 * cluster-kafka-txn.test.ts.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryLog } from "../src/store/memory-log.js";
import { appendAsync, FOREIGN_KAFKA, type AppendCallback } from "../src/store/log.js";
import type { Stream } from "../src/streams/stream.js";
import { TxnIndex } from "../src/protocols/kafka/txn-index.js";
import { CONTROL_SUBJECT_ABORT, CONTROL_SUBJECT_COMMIT, txnHeaders } from "../src/protocols/kafka/messages.js";
import { ATTR_TRANSACTIONAL } from "../src/protocols/kafka/records.js";
import { waitUntil } from "./helpers/clients.js";

/** What the index asks of its stream: its partitions, append listeners, and a call when readers may move on. */
function streamOf(log: MemoryLog): Stream & { advanced: number } {
  const s = {
    partitions: [log],
    deleted: false,
    config: { name: "t" },
    appendListeners: new Set<(p: number, seq: number) => void>(),
    advanced: 0,
    setVisibility() {},
    readersMayAdvance() {
      s.advanced++;
    },
  };
  return s as unknown as Stream & { advanced: number };
}

/** The head of a RecordBatch v2 as the index reads it: attributes and producer id (no records: the index never decodes them). */
function batchBytes(producerId: number, transactional: boolean): Buffer {
  const b = Buffer.alloc(61);
  b.writeInt16BE(transactional ? ATTR_TRANSACTIONAL : 0, 21);
  b.writeBigInt64BE(BigInt(producerId), 43);
  return b;
}

function appendBatch(log: MemoryLog, producerId: number, count: number, transactional = true): Promise<number> {
  return new Promise((resolve, reject) => {
    const done: AppendCallback = (err, seq) => (err ? reject(err) : resolve(seq));
    log.appendBatch({ format: FOREIGN_KAFKA, subject: "t", count, bytes: batchBytes(producerId, transactional) }, done);
  });
}

const marker = (log: MemoryLog, producerId: number, commit: boolean): Promise<number> =>
  appendAsync(log, { subject: commit ? CONTROL_SUBJECT_COMMIT : CONTROL_SUBJECT_ABORT, headers: txnHeaders(producerId, 0), data: Buffer.alloc(0) });

/** Tells the index of an append, as the stream does, and waits until it has read the whole log. */
async function readAll(index: TxnIndex, log: MemoryLog): Promise<void> {
  for (const l of index.stream.appendListeners) l(0, log.state().lastSeq);
  await index.whenRead(0, log.state().lastSeq);
}

function started(log: MemoryLog): { index: TxnIndex; warnings: string[] } {
  const warnings: string[] = [];
  const index = new TxnIndex(streamOf(log), (line) => warnings.push(line));
  index.start();
  return { index, warnings };
}

test("an abort hides its producer's records and its marker, a commit its marker; an open transaction holds readers at its first record", async () => {
  const log = new MemoryLog();
  const { index, warnings } = started(log);
  await appendBatch(log, 7, 2); // 1-2: producer 7, aborted below
  await appendBatch(log, 8, 1); // 3: producer 8, committed below
  await appendBatch(log, 9, 1, false); // 4: a plain batch among them
  await appendBatch(log, 7, 1); // 5: producer 7 again
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 0, "readers wait at producer 7's first record");
  assert.equal(index.lastStableOffset(0, 5), 0);
  await marker(log, 7, false); // 6
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 2, "then at producer 8's");
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((seq) => index.hidden(0, seq)), [true, true, false, false, true, true]);
  assert.deepEqual(index.abortedIn(0, 0, 10, 0), [{ producerId: 7, first: 0 }]);
  await marker(log, 8, true); // 7
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity, "nothing open: nothing waits");
  assert.equal(index.lastStableOffset(0, 7), 7);
  assert.equal(index.hidden(0, 3), false);
  assert.equal(index.hidden(0, 7), true);
  assert.deepEqual(index.hiddenIn(0, 0, 7), [
    [1, 2],
    [5, 7],
  ]);
  assert.deepEqual(warnings, []);
});

test("a NATS message carrying a Kafka-Txn header opens no transaction: readers are not held by it", async () => {
  const log = new MemoryLog();
  const { index } = started(log);
  await appendAsync(log, { subject: "t", headers: txnHeaders(999, 0), data: Buffer.from("forged") });
  await appendAsync(log, { subject: "t", headers: null, data: Buffer.from("after") });
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
  assert.equal(index.hidden(0, 1), false);
});

test("an expected append holds readers at the log's end until it has landed and been read, whatever lands before it", async () => {
  const log = new MemoryLog();
  const { index } = started(log);
  await appendBatch(log, 9, 2, false); // 1-2
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
  const plainLanded = index.expect(0); // a marker, say, that will land first
  const txnLanded = index.expect(0); // a transactional batch staged after it
  assert.equal(index.stableSeq(0), 2, "what is stored stays readable");
  await appendBatch(log, 9, 1, false); // 3: the first lands
  plainLanded();
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 3, "read up to 3, and one expected append still in flight: held past it");
  await appendBatch(log, 7, 1); // 4: the transactional batch, a round later
  assert.equal(index.stableSeq(0), 3, "landed, not yet read: held");
  txnLanded();
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 3, "read: held by its open transaction");
  await marker(log, 7, true); // 5
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
});

test("records of an open transaction that a purge removed hold no reader back", async () => {
  const log = new MemoryLog();
  const { index } = started(log);
  await appendBatch(log, 7, 2); // 1-2
  await appendBatch(log, 9, 1, false); // 3
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 0);
  await log.purge({ upTo: 3 });
  await appendBatch(log, 9, 1, false); // 4
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity, "the purged records decide nothing now");
  // Its marker, when it comes, closes nothing and is hidden.
  await marker(log, 7, false); // 5
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
  assert.equal(index.hidden(0, 5), true);
  assert.deepEqual(index.abortedIn(0, 0, 10, 2), []);
});

test("a cut takes back what was read past it: the log read again, a transaction whose marker went is open again", async () => {
  const log = new MemoryLog();
  const { index, warnings } = started(log);
  await appendBatch(log, 7, 1); // 1
  await marker(log, 7, false); // 2
  await readAll(index, log);
  assert.equal(index.hidden(0, 1), true);
  await log.truncateFrom(2);
  index.cut(0, 2);
  await readAll(index, log);
  assert.equal(index.hidden(0, 1), false, "the abort is gone with its marker");
  assert.equal(index.stableSeq(0), 0, "and its transaction open again");
  // A leader's log that goes on differently: a commit this time.
  await marker(log, 7, true); // 2
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
  assert.equal(index.hidden(0, 1), false);
  assert.equal(index.hidden(0, 2), true);
  assert.deepEqual(index.abortedIn(0, 0, 10, 0), []);
  // A cut nobody told is found on the next read, when the log ends before what was read.
  await log.truncateFrom(2);
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 0, "open again");
  await marker(log, 7, false); // 2 again: an abort
  await readAll(index, log);
  assert.equal(index.hidden(0, 1), true);
  assert.deepEqual(index.abortedIn(0, 0, 10, 0), [{ producerId: 7, first: 0 }]);
  assert.deepEqual(warnings, []);
});

test("the newest messages deleted leave nothing to read, and no warning", async () => {
  const log = new MemoryLog();
  const { index, warnings } = started(log);
  await appendBatch(log, 9, 1, false); // 1
  await appendAsync(log, { subject: "t", headers: null, data: Buffer.from("x") }); // 2
  await log.delete(2);
  await readAll(index, log);
  assert.equal(index.stableSeq(0), Infinity);
  assert.deepEqual(warnings, []);
});

test("a marker of an older epoch than one already read (a fenced coordinator's late retry) decides nothing and is hidden", async () => {
  const log = new MemoryLog();
  const { index } = started(log);
  await appendBatch(log, 7, 1); // 1: epoch 0's transaction
  await appendAsync(log, { subject: CONTROL_SUBJECT_ABORT, headers: txnHeaders(7, 1), data: Buffer.alloc(0) }); // 2: fenced abort, epoch 1
  await appendBatch(log, 7, 1); // 3: the producer's next transaction
  await appendAsync(log, { subject: CONTROL_SUBJECT_COMMIT, headers: txnHeaders(7, 0), data: Buffer.alloc(0) }); // 4: late, epoch 0
  await readAll(index, log);
  assert.equal(index.stableSeq(0), 2, "the new transaction is still open");
  assert.equal(index.hidden(0, 4), true);
  assert.equal(index.markerEpoch(0, 7), 1);
});

test("sequences lost to damage while a transaction is open stop the index there: the next marker does not end what the lost one did", async () => {
  // An outside test damaged an abort marker in a stopped server's log: reported lost, it was read over, and the aborted
  // records were taken into the producer's next transaction, committed, and served to read_committed consumers.
  const log = new MemoryLog();
  const lost: Array<{ from: number; to: number; bytes: number }> = [];
  const state = log.state.bind(log);
  log.state = () => ({ ...state(), lost });
  await appendBatch(log, 7, 2); // 1-2: producer 7, aborted by 3
  const abort = await marker(log, 7, false); // 3
  await appendBatch(log, 7, 1); // 4: producer 7's next transaction
  await marker(log, 7, true); // 5
  assert.equal(await log.delete(abort), true);
  lost.push({ from: abort, to: abort, bytes: 100 });
  const { index, warnings } = started(log);
  // Stopped, it is never read past the lost sequence: its waiters wait (EndTxn's for 5 s at most); the warning says why.
  await waitUntil(() => warnings.length > 0, "the index to stop at the lost sequence");
  assert.equal(index.stableSeq(0), 0, "readers wait at the open transaction's first record, before the lost sequence");
  assert.equal(index.hidden(0, 1), false, "its records are not taken for aborted");
  assert.equal(index.hidden(0, 4), false);
  assert.deepEqual(index.abortedIn(0, 0, 10, 0), [], "nor counted in an aborted range");
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /sequences 3\.\.3 were lost to damage while 1 transaction\(s\) were open here/);

  // A gap that is a delete (nothing lost) with a transaction open is read over as before.
  const plain = new MemoryLog();
  await appendBatch(plain, 7, 1); // 1
  const gone = await appendBatch(plain, 9, 1, false); // 2: a plain batch, deleted
  await marker(plain, 7, true); // 3
  assert.equal(await plain.delete(gone), true);
  const read = started(plain);
  await readAll(read.index, plain);
  assert.equal(read.index.stableSeq(0), Infinity, "read to the end: nothing open holds readers");
  assert.equal(read.index.hidden(0, 1), false, "its record committed");
  assert.deepEqual(read.warnings, []);
});
