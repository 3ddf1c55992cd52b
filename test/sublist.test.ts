import { test } from "node:test";
import assert from "node:assert/strict";
import { Sublist, CACHE_MAX } from "../src/subjects/sublist.js";
import { Subscription, type Receiver } from "../src/subjects/subscription.js";
import { isValidPublishSubject, isValidSubscribeSubject, subjectMatches } from "../src/subjects/subject.js";
import { Account } from "../src/core/account.js";
import { Message } from "../src/subjects/message.js";

const receiver: Receiver = { echo: true, deliver: () => {} };
const sub = (subject: string, queue: string | null = null, r: Receiver = receiver) => new Subscription(r, subject, queue);

function matched(sl: Sublist, subject: string): string[] {
  const r = sl.match(subject);
  return [...r.plain.map((s) => s.subject), ...r.queues.flatMap((q) => q.members.map((s) => `${q.name}:${s.subject}`))].sort();
}

test("subject validation", () => {
  for (const s of ["foo", "foo.bar", "foo.*", "*.bar", "foo.>", ">", "a.*.c.>", "foo*bar", "$JS.API.>"]) assert.ok(isValidSubscribeSubject(s), s);
  for (const s of ["", ".", "foo.", ".foo", "foo..bar", "foo.>.bar", "foo bar", "foo\tbar", ">.foo"]) assert.ok(!isValidSubscribeSubject(s), s);
  for (const s of ["foo", "foo.bar", "foo*bar", "a.b.c"]) assert.ok(isValidPublishSubject(s), s);
  for (const s of ["", "foo.*", "*", ">", "foo.>", "foo..bar", "foo bar"]) assert.ok(!isValidPublishSubject(s), s);
});

test("wildcard matching in every position", () => {
  const sl = new Sublist();
  for (const s of ["a.b.c", "*.b.c", "a.*.c", "a.b.*", "a.>", ">", "a.*.>", "*.*.*", "a.b", "a.b.c.d"]) sl.insert(sub(s));
  assert.deepEqual(matched(sl, "a.b.c"), ["*.*.*", "*.b.c", ">", "a.*.>", "a.*.c", "a.>", "a.b.*", "a.b.c"].sort());
  assert.deepEqual(matched(sl, "a.b"), [">", "a.>", "a.b"].sort());
  assert.deepEqual(matched(sl, "a"), [">"]);
  assert.deepEqual(matched(sl, "x.b.c"), ["*.*.*", "*.b.c", ">"].sort());
  assert.deepEqual(matched(sl, "a.b.c.d"), [">", "a.*.>", "a.>", "a.b.c.d"].sort());
});

test("queue subscribers are grouped by queue name", () => {
  const sl = new Sublist();
  sl.insert(sub("q.*", "g1"));
  sl.insert(sub("q.a", "g1"));
  sl.insert(sub("q.>", "g2"));
  sl.insert(sub("q.a"));
  const r = sl.match("q.a");
  assert.equal(r.plain.length, 1);
  assert.deepEqual(r.queues.map((q) => [q.name, q.members.length]).sort(), [["g1", 2], ["g2", 1]]);
});

test("cache reflects inserts and removes, and stays bounded", () => {
  const sl = new Sublist();
  const a = sub("x.y");
  sl.insert(a);
  assert.equal(sl.match("x.y").plain.length, 1);
  const w = sub("x.*");
  sl.insert(w);
  assert.equal(sl.match("x.y").plain.length, 2, "wildcard insert invalidates cached literal results");
  assert.ok(sl.remove(a));
  assert.equal(sl.match("x.y").plain.length, 1);
  assert.ok(!sl.remove(a), "second remove reports absence");
  assert.ok(sl.remove(w));
  assert.equal(sl.match("x.y").size, 0);
  assert.equal(sl.size, 0);
  for (let i = 0; i < CACHE_MAX * 3; i++) sl.match(`n.${i}`);
  assert.ok(sl.stats().num_cache <= CACHE_MAX);
});

test("randomised: trie matches agree with a brute-force matcher", () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const tokens = ["a", "b", "c", "*"];
  const subs: Subscription[] = [];
  const sl = new Sublist();
  const randomFilter = () => {
    const len = 1 + rnd(4);
    const parts: string[] = [];
    for (let i = 0; i < len; i++) parts.push(tokens[rnd(tokens.length)]);
    if (rnd(4) === 0) parts.push(">");
    return parts.join(".");
  };
  for (let round = 0; round < 2000; round++) {
    if (subs.length > 0 && rnd(3) === 0) {
      const s = subs.splice(rnd(subs.length), 1)[0];
      assert.ok(sl.remove(s));
    } else {
      const s = sub(randomFilter(), rnd(3) === 0 ? "q" : null);
      subs.push(s);
      sl.insert(s);
    }
    const len = 1 + rnd(5);
    const literal = Array.from({ length: len }, () => "abc"[rnd(3)]).join(".");
    const got = sl.match(literal);
    const gotSet = new Set([...got.plain, ...got.queues.flatMap((q) => q.members)]);
    const want = subs.filter((s) => subjectMatches(s.subject, literal));
    assert.equal(gotSet.size, want.length, `round ${round} subject ${literal}`);
    for (const w of want) assert.ok(gotSet.has(w));
  }
  assert.equal(sl.size, subs.length);
});

test("route: plain subscribers all, one member per queue group, evenly, echo respected", () => {
  const acc = new Account("$G");
  const counts = new Map<Receiver, number>();
  const mk = (echo = true): Receiver => {
    const r: Receiver = {
      echo,
      deliver: () => {
        counts.set(r, (counts.get(r) ?? 0) + 1);
      },
    };
    return r;
  };
  const members = [mk(), mk(), mk(), mk()];
  for (const m of members) acc.subscribe(sub("work", "g", m));
  const plain = mk();
  acc.subscribe(sub("work", null, plain));
  const msg = Message.from("work", "", Buffer.from("x"));
  for (let i = 0; i < 4000; i++) assert.equal(acc.route(msg, null), 2);
  assert.equal(counts.get(plain), 4000);
  for (const m of members) assert.equal(counts.get(m), 1000, "round robin spreads evenly");

  const self = mk(false);
  acc.subscribe(sub("self", null, self));
  assert.equal(acc.route(Message.from("self", "", Buffer.alloc(0)), self), 0, "no echo to a publisher that turned it off");
});

test("a subject matched again after an insert or remove sees the change, literal or wildcard, other subjects' too", () => {
  const sl = new Sublist();
  const subject = "repeat.me";
  assert.deepEqual(matched(sl, subject), []);
  const literal = sub("repeat.me");
  sl.insert(literal);
  assert.deepEqual(matched(sl, subject), ["repeat.me"]);
  assert.deepEqual(matched(sl, subject), ["repeat.me"], "matched twice in a row");
  // A change on another subject, literal or wildcard, still counts for the one matched last.
  const wildcard = sub("repeat.*", "q");
  sl.insert(wildcard);
  assert.deepEqual(matched(sl, subject), ["q:repeat.*", "repeat.me"]);
  sl.insert(sub("other.subject"));
  assert.deepEqual(matched(sl, subject), ["q:repeat.*", "repeat.me"]);
  sl.remove(literal);
  assert.deepEqual(matched(sl, subject), ["q:repeat.*"]);
  sl.remove(wildcard);
  assert.deepEqual(matched(sl, subject), []);
  assert.deepEqual(matched(sl, "other.subject"), ["other.subject"]);
});
