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
  return { seq, time, subject: "s.x", headers: encodeHeaders("", [["Nats-Msg-Id", id]]), key: null, data: Buffer.from(id) };
}

function follower(): { stream: Stream; log: MemoryLog } {
  const log = new MemoryLog();
  const stream = new Stream(normalizeStreamConfig({ name: "S", subjects: ["s.>"], storage: "memory", duplicate_window: 60_000_000_000 }), new Date(), [log], null, 1 << 20);
  return { stream, log };
}

/** A publish with these headers, as its PubAck would say it: `<seq>`, `<seq> duplicate`, or the error. */
function publish(stream: Stream, headers: Array<[string, string]>): Promise<string> {
  return new Promise((resolve) =>
    stream.publish("s.x", encodeHeaders("", headers), Buffer.from("retry"), (err, seq, duplicate) => resolve(err !== null ? err.message : `${seq}${duplicate ? " duplicate" : ""}`)),
  );
}

test("ids of copied messages removed since stay in the window once the copy leads, and the last id with them", async () => {
  const { stream, log } = follower();
  const now = Date.now();
  const items = [copied(1, "a", now - 3), copied(2, "b", now - 2), copied(3, "c", now - 1)];
  await appendItems(log, items, 1);
  stream.rememberCopies(items);
  // The leader removed 1 (acked off a work queue) and 3 (deleted); this copy applied it.
  assert.equal(await log.delete(1), true);
  assert.equal(await log.delete(3), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.equal(await publish(stream, [["Nats-Msg-Id", "a"]]), "1 duplicate");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "b"]]), "2 duplicate");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "c"]]), "3 duplicate");
  // The last id the stream stored is still c's, though its message is gone.
  assert.equal(await publish(stream, [["Nats-Expected-Last-Msg-Id", "c"]]), "4");
});

test("ids of messages a truncation took are forgotten: a retry is stored again", async () => {
  const { stream, log } = follower();
  const now = Date.now();
  const items = [copied(1, "a", now - 3), copied(2, "b", now - 2)];
  await appendItems(log, items, 1);
  stream.rememberCopies(items);
  // Another leader never had b: this copy is cut back to 2 and gets that leader's message there.
  assert.equal(await log.truncateFrom(2), 2);
  stream.forgetFrom(2);
  const other = [copied(2, "d", now - 1)];
  await appendItems(log, other, 2);
  stream.rememberCopies(other);
  assert.equal(await log.delete(2), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.equal(await publish(stream, [["Nats-Msg-Id", "b"]]), "3");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "d"]]), "2 duplicate");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "a"]]), "1 duplicate");
});

test("an id whose sequence now holds another message is not kept, even if the cut that took its own was never told", async () => {
  const { stream, log } = follower();
  const now = Date.now();
  const items = [copied(1, "a", now - 3), copied(2, "b", now - 2)];
  await appendItems(log, items, 1);
  stream.rememberCopies(items);
  // Cut and refilled by another leader's message, the cut unseen (a truncation a reopen finished).
  assert.equal(await log.truncateFrom(2), 2);
  await appendItems(log, [copied(2, "d", now - 1)], 2);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.equal(await publish(stream, [["Nats-Msg-Id", "b"]]), "3");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "d"]]), "2 duplicate");
});

test("a cut from 0 (nothing known to be shared with the leader) forgets every id", async () => {
  const { stream, log } = follower();
  const now = Date.now();
  const items = [copied(1, "a", now - 2), copied(2, "b", now - 1)];
  await appendItems(log, items, 1);
  stream.rememberCopies(items);
  stream.forgetFrom(0);
  assert.equal(await log.delete(1), true);
  await stream.recover({ logOnly: true, keepRemoved: true });
  assert.equal(await publish(stream, [["Nats-Msg-Id", "a"]]), "3");
  assert.equal(await publish(stream, [["Nats-Msg-Id", "b"]]), "2 duplicate");
});
