/**
 * A follower's de-duplication window (Stream.rememberCopies, forgetFrom,
 * recover with keepRemoved): the ids of the messages it copied stay
 * remembered once their messages are removed, so that a retry after it takes
 * over is a duplicate; the ids of what a truncation took go, so that a retry
 * of a write its leader never acknowledged is stored, not answered with the
 * sequence another message now has.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryLog } from "../src/store/memory-log.js";
import type { StoredMessage } from "../src/store/log.js";
import { appendItems } from "../src/streams/copy-batch.js";
import { normalizeStreamConfig } from "../src/streams/config.js";
import { encodeHeaders } from "../src/streams/headers.js";
import { Stream } from "../src/streams/stream.js";

function copied(seq: number, id: string, time: number): StoredMessage {
  // An id written with blanks around its name (`Nats-Msg-Id :`): the leader trims the name and honours it, so must a copy.
  const headers = id.startsWith(" ") ? Buffer.from(`NATS/1.0\r\n Nats-Msg-Id\t: ${id.trim()}\r\n\r\n`) : encodeHeaders("", [["Nats-Msg-Id", id]]);
  return { seq, time, subject: "s.x", headers, key: null, data: Buffer.from(id) };
}

function follower(): { stream: Stream; log: MemoryLog } {
  const log = new MemoryLog();
  const stream = new Stream(normalizeStreamConfig({ name: "S", subjects: ["s.>"], storage: "memory", duplicate_window: 60_000_000_000 }), new Date(), [log], null, 1 << 20);
  return { stream, log };
}

/** Copies messages with these ids from sequence `from` on, as a follower applies a fetch: appended, then remembered. */
async function copy(stream: Stream, log: MemoryLog, from: number, ids: string[]): Promise<void> {
  const now = Date.now();
  const items = ids.map((id, i) => copied(from + i, id, now - ids.length + i));
  await appendItems(log, items, from);
  stream.rememberCopies(items);
}

/** Each id published again once the copy leads, as its PubAck says. */
async function retried(stream: Stream, ids: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const id of ids) out.push(await publish(stream, [["Nats-Msg-Id", id]]));
  return out;
}

/** A publish with these headers, as its PubAck would say it: `<seq>`, `<seq> duplicate`, or the error. */
function publish(stream: Stream, headers: Array<[string, string]>): Promise<string> {
  return new Promise((resolve) =>
    stream.publish("s.x", encodeHeaders("", headers), Buffer.from("retry"), (err, seq, duplicate) => resolve(err !== null ? err.message : `${seq}${duplicate ? " duplicate" : ""}`)),
  );
}

test("ids of copied messages removed since stay in the window once the copy leads, and the last id with them", async () => {
  const { stream, log } = follower();
  await copy(stream, log, 1, ["a", "b", "c", " d"]);
  // The leader removed 1 (acked off a work queue), 3 (deleted) and 4; this copy applied it.
  assert.equal(await log.delete(1), true);
  assert.equal(await log.delete(3), true);
  assert.equal(await log.delete(4), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.deepEqual(await retried(stream, ["a", "b", "c", "d"]), ["1 duplicate", "2 duplicate", "3 duplicate", "4 duplicate"]);
  // The last id the stream stored is still d's, though its message is gone.
  assert.equal(await publish(stream, [["Nats-Expected-Last-Msg-Id", "d"]]), "5");
});

test("the last id once the copy leads is that of the last message copied, empty when it had none", async () => {
  const { stream, log } = follower();
  await copy(stream, log, 1, ["a"]);
  const now = Date.now();
  const plain: StoredMessage = { seq: 2, time: now, subject: "s.x", headers: null, key: null, data: Buffer.from("no id") };
  await appendItems(log, [plain], 2);
  stream.rememberCopies([plain]);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.equal(await publish(stream, [["Nats-Expected-Last-Msg-Id", "a"]]), "wrong last msg ID: ");
  assert.equal(await publish(stream, [["Nats-Expected-Last-Msg-Id", ""]]), "3");
});

test("ids of messages a truncation took are forgotten: a retry is stored again", async () => {
  const { stream, log } = follower();
  await copy(stream, log, 1, ["a", "b"]);
  // Another leader never had b: this copy is cut back to 2 and gets that leader's message there, removed since.
  stream.forgetFrom(2);
  assert.equal(await log.truncateFrom(2), 2);
  await copy(stream, log, 2, ["d"]);
  assert.equal(await log.delete(2), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.deepEqual(await retried(stream, ["b", "d", "a"]), ["3", "2 duplicate", "1 duplicate"]);
});

test("an id whose sequence now holds another message is not kept, even if the cut that took its own was never told", async () => {
  const { stream, log } = follower();
  await copy(stream, log, 1, ["a", "b"]);
  // Cut and refilled by another leader's message, the cut unseen (a truncation a reopen finished).
  assert.equal(await log.truncateFrom(2), 2);
  await appendItems(log, [copied(2, "d", Date.now())], 2);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.deepEqual(await retried(stream, ["b", "d"]), ["3", "2 duplicate"]);
});

test("a cut from 0 (nothing known to be shared with the leader) forgets every id", async () => {
  const { stream, log } = follower();
  await copy(stream, log, 1, ["a", "b"]);
  stream.forgetFrom(0);
  assert.equal(await log.delete(1), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.deepEqual(await retried(stream, ["a", "b"]), ["3", "2 duplicate"]);
});
