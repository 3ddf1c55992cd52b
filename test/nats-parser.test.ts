import { test } from "node:test";
import assert from "node:assert/strict";
import { NatsParser, ProtoError } from "../src/protocols/nats/parser.js";
import { recorder } from "./helpers/nats-recorder.js";

const stream = Buffer.from(
  'CONNECT {"verbose":false}\r\n' +
    "SUB foo.* 1\r\nsub bar q 2\r\n" +
    "PUB foo.a 5\r\nhello\r\n" +
    "pub foo.b _INBOX.1 0\r\n\r\n" +
    "HPUB foo.c 12 14\r\nNATS/1.0\r\n\r\nhi\r\n" +
    "PUB\tfoo.d   3\r\nabc\r\n" +
    "UNSUB 1 5\r\nunsub 2\r\nPING\r\nPONG\r\n",
);

const expected = [
  'connect {"verbose":false}',
  "sub foo.* - 1",
  "sub bar q 2",
  "pub foo.a - 0 hello",
  "pub foo.b _INBOX.1 0 ",
  "pub foo.c - 12 NATS/1.0\r\n\r\nhi",
  "pub foo.d - 0 abc",
  "unsub 1 5",
  "unsub 2 0",
  "ping",
  "pong",
];

test("parses a pipelined stream in one read", () => {
  const r = recorder();
  new NatsParser(r.handler, 4096, 1 << 20).feed(stream);
  assert.deepEqual(r.events, expected);
});

test("parses identically when split at every byte boundary", () => {
  for (let cut = 1; cut < stream.length; cut++) {
    const r = recorder();
    const p = new NatsParser(r.handler, 4096, 1 << 20);
    p.feed(stream.subarray(0, cut));
    p.feed(stream.subarray(cut));
    assert.deepEqual(r.events, expected, `split at ${cut}`);
  }
  const r = recorder();
  const p = new NatsParser(r.handler, 4096, 1 << 20);
  for (let i = 0; i < stream.length; i++) p.feed(stream.subarray(i, i + 1));
  assert.deepEqual(r.events, expected, "one byte at a time");
});

test("errors: unknown op, lying size, payload limit, control line limit", () => {
  const cases: Array<[string, number, number]> = [
    ["FOO bar\r\n", ProtoError.UnknownOp, 4096],
    ["PUB foo 5\r\nhelloEXTRA\r\n", ProtoError.UnknownOp, 4096],
    ["PUB foo x\r\n", ProtoError.UnknownOp, 4096],
    ["PUB foo\r\n", ProtoError.UnknownOp, 4096],
    ["HPUB foo 10 5\r\n", ProtoError.UnknownOp, 4096],
    ["PUB foo 99999999999\r\n", ProtoError.UnknownOp, 4096],
    ["PUB foo 2000\r\n", ProtoError.MaxPayload, 4096],
    ["SUB " + "a".repeat(200) + " 1\r\n", ProtoError.ControlLine, 64],
    ["SUB " + "a".repeat(200), ProtoError.ControlLine, 64],
  ];
  for (const [input, kind, mcl] of cases) {
    const r = recorder();
    const p = new NatsParser(r.handler, mcl, 1024);
    p.feed(Buffer.from(input));
    p.feed(Buffer.from("PING\r\n"));
    assert.deepEqual(r.events, [`error ${kind}`], JSON.stringify(input));
  }
});

test("max_control_line is the same limit whether a line arrives in one read or split (found by the fuzz test)", () => {
  const mcl = 64;
  for (const [length, ok] of [
    [mcl - 1, true],
    [mcl, true],
    [mcl + 1, false],
  ] as const) {
    // A line of `length` bytes before its CRLF.
    const input = Buffer.from(`SUB ${"a".repeat(length - 6)} 1\r\nPING\r\n`);
    for (let cut = 0; cut < input.length; cut++) {
      const r = recorder();
      const p = new NatsParser(r.handler, mcl, 1024);
      p.feed(input.subarray(0, cut));
      p.feed(input.subarray(cut));
      assert.deepEqual(r.events, ok ? [`sub ${"a".repeat(length - 6)} - 1`, "ping"] : [`error ${ProtoError.ControlLine}`], `${length} bytes, split at ${cut}`);
    }
  }
});

test("a control line split across reads is bounded too", () => {
  const r = recorder();
  const p = new NatsParser(r.handler, 64, 1024);
  for (let i = 0; i < 10 && r.events.length === 0; i++) p.feed(Buffer.from("SUB aaaaaaaaaa"));
  assert.deepEqual(r.events, [`error ${ProtoError.ControlLine}`]);
});

test("a payload split across many reads is assembled with its args intact", () => {
  const r = recorder();
  const p = new NatsParser(r.handler, 4096, 1 << 20);
  const body = "x".repeat(100_000);
  const frame = Buffer.from(`PUB big.subject reply.to ${body.length}\r\n${body}\r\nPING\r\n`);
  for (let i = 0; i < frame.length; i += 7000) p.feed(frame.subarray(i, i + 7000));
  assert.equal(r.events.length, 2);
  assert.equal(r.events[0], `pub big.subject reply.to 0 ${body}`);
  assert.equal(r.events[1], "ping");
});

test("a subject published to again is decoded once; any other subject, of any length, is its own", () => {
  const subjects: string[] = [];
  const p = new NatsParser({ ...recorder().handler, onPub: (m) => subjects.push(m.subject) }, 4096, 1 << 20);
  const long = `long.${"x".repeat(200)}`;
  const sent = ["orders.eu.new", "orders.eu.new", "orders.us.new", "orders.eu.new", "orders.eu.ne", long, long, "orders.eu.new", "ördérs.€", "ördérs.€"];
  for (const s of sent) p.feed(Buffer.from(`PUB ${s} 1\r\nx\r\n`));
  p.feed(Buffer.from(sent.map((s) => `PUB ${s} 1\r\nx\r\n`).join("")));
  // One read buffer used again for the next read, as a socket's pooled memory can be: what is remembered must be a copy.
  const reused = Buffer.from("PUB aaaa.b 1\r\nx\r\n");
  p.feed(reused);
  reused.write("PUB cccc.d 1\r\nx\r\n");
  p.feed(reused);
  assert.deepEqual(subjects, [...sent, ...sent, "aaaa.b", "cccc.d"]);
});
