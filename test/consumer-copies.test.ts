/**
 * consumer-copies.ts: a confirmed ack waits until every counted follower
 * holds a copy of the consumers taken after it; copies of another
 * leadership count for nothing; a follower that holds confirmations up is
 * named; the waiters are bounded and dropped when the leadership ends.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { ConsumerCopies, MAX_CONFIRM_WAITERS } from "../src/streams/consumer-copies.js";

test("a confirmation waits for a copy taken after it on every counted follower, in order", () => {
  let counted = ["b", "c"];
  const copies = new ConsumerCopies("run1", () => counted);
  const before = copies.next(); // a snapshot handed out before the ack
  const done: string[] = [];
  assert.equal(copies.whenCopied(() => void done.push("ack1"), 0), true);
  copies.holds("b", "run1", before);
  copies.holds("c", "run1", before);
  assert.equal(done.length, 0, "a copy from before the ack does not have it");
  const after = copies.next();
  copies.whenCopied(() => void done.push("ack2"), 0);
  copies.holds("b", "run1", after);
  assert.equal(done.length, 0, "c has no copy with it yet");
  copies.holds("c", "other-leadership", after);
  assert.equal(done.length, 0, "a copy of another leadership is none of this one's");
  assert.equal(copies.holdsConfirmed("c"), false, "no copy of this leadership");
  copies.holds("c", "run1", after);
  assert.deepEqual(done, ["ack1"], "ack2 came after that copy was handed out");
  assert.equal(copies.holdsConfirmed("c"), true);
  const later = copies.next();
  copies.holds("b", "run1", later);
  // c leaves the ISR: the confirmation no longer waits for it.
  counted = ["b"];
  copies.release();
  assert.deepEqual(done, ["ack1", "ack2"]);
  assert.equal(copies.holdsConfirmed("c"), false, "c's copy lacks ack2: it may not rejoin with it");
  assert.equal(copies.holdsConfirmed("b"), true);
});

test("with no follower counted a confirmation goes at once; one held up too long names the followers behind", () => {
  let counted: string[] = [];
  const copies = new ConsumerCopies("r", () => counted);
  let n = 0;
  // A follower waiting to join holds its round: told at once that it lacks the confirmed ack, it copies again.
  let woken = 0;
  copies.park("b", () => woken++);
  copies.whenCopied(() => n++, 0);
  assert.equal(n, 1);
  assert.equal(woken, 1, "a held round is answered when a confirmation goes at once");
  counted = ["b", "c"];
  copies.holds("b", "r", copies.next());
  copies.whenCopied(() => n++, 1_000);
  assert.deepEqual(copies.holdingUp(10_000, 5_000), []);
  assert.deepEqual(copies.holdingUp(10_000, 11_001), ["b", "c"]);
  copies.holds("b", "r", copies.next());
  assert.deepEqual(copies.holdingUp(10_000, 11_001), ["c"]);
});

test("held rounds wake when a confirmation starts waiting; waiters are bounded; the end of the leadership fails them", () => {
  const copies = new ConsumerCopies("r", () => ["b"]);
  let woken = 0;
  const wake = (): void => {
    woken++;
    copies.unpark("b", wake);
  };
  copies.park("b", wake);
  assert.equal(copies.wanted("b"), false);
  let confirmed = 0;
  let failed = 0;
  copies.whenCopied(() => confirmed++, 0, () => failed++);
  assert.equal(woken, 1);
  assert.equal(copies.wanted("b"), true, "b's copy lacks the ack");
  for (let i = 1; i < MAX_CONFIRM_WAITERS; i++) assert.equal(copies.whenCopied(() => confirmed++, 0), true);
  assert.equal(copies.whenCopied(() => confirmed++, 0), false, "one past the bound is not taken");
  copies.park("b", wake);
  copies.close();
  assert.equal(woken, 2, "a held round is answered at the end");
  assert.equal(failed, 1, "an API request waiting is told");
  copies.holds("b", "r", copies.next());
  assert.equal(confirmed, 0, "nothing waiting is confirmed after the end");
  assert.equal(copies.whenCopied(() => confirmed++, 0), false);
});

test("a follower that starts over holds nothing, its held request is told so, and it may join only once it copied again", () => {
  let counted: string[] = [];
  const copies = new ConsumerCopies("r", () => counted);
  assert.equal(copies.holdsConfirmed("b"), false, "no copy of this leadership: not even with nothing confirmed");
  // Confirmed with no follower counted (the ISR is the leader alone): a joiner needs a copy taken after it.
  copies.holds("b", "r", copies.next());
  let n = 0;
  copies.whenCopied(() => n++, 0);
  assert.equal(n, 1);
  assert.equal(copies.holdsConfirmed("b"), false);
  copies.holds("b", "r", copies.next());
  assert.equal(copies.holdsConfirmed("b"), true);
  counted = ["b"];
  const before = copies.generation("b");
  let woken = 0;
  const wake = (): void => {
    woken++;
    copies.unpark("b", wake);
  };
  copies.park("b", wake);
  copies.forget("b");
  assert.equal(woken, 1);
  assert.notEqual(copies.generation("b"), before, "the held request sees it started over");
  assert.equal(copies.holdsConfirmed("b"), false);
  copies.whenCopied(() => n++, 0);
  assert.equal(n, 1, "b, counted, has no copy with it");
  copies.holds("b", "r", copies.next());
  assert.equal(n, 2);
});
