/**
 * The NATS parser in process, on golden bytes: what the nats v2 and
 * @nats-io v3 clients sent on a connection (fixtures/nats-frames.json,
 * captured by fixtures/capture-frames.ts), which must parse to the
 * operations they were asked for, in one read or split anywhere; then on
 * seeded mutations of them (bit flips, truncation, sizes set to extremes,
 * random bytes). A mutated stream must parse to operations or end in the
 * parser's own error, never a throw; the same however it is split across
 * reads; and nothing may be allocated past the control-line and payload
 * limits. test/fuzz.test.ts throws such bytes at a live server instead.
 *
 * NAGARE_FUZZ_SEED=<n> replays a failure (the seed is in its message);
 * NAGARE_FUZZ_MS sets how long the fuzz loop runs (default 700 ms).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { NatsParser } from "../src/protocols/nats/parser.js";
import { recorder } from "./helpers/nats-recorder.js";
import { rng } from "./helpers/random.js";
import { below, mutate, pick, watchAllocations, type Rand } from "./helpers/mutate.js";

const SEED = Number(process.env.NAGARE_FUZZ_SEED ?? Date.now() % 2 ** 31);
const FUZZ_MS = Number(process.env.NAGARE_FUZZ_MS ?? 700);
const MAX_CONTROL_LINE = 256;
const MAX_PAYLOAD = 4096;

const fixtures = JSON.parse(readFileSync(new URL("../../test/fixtures/nats-frames.json", import.meta.url), "utf8")) as Array<{ client: string; hex: string }>;
const streams = fixtures.map((f) => ({ client: f.client, bytes: Buffer.from(f.hex, "hex") }));

/** Inboxes are random per run: one name for all of them. */
const sameInboxes = (events: string[]): string[] => events.map((e) => e.replace(/_INBOX(\.[A-Z0-9]+)+/g, "_INBOX.X"));

const EXPECTED: Record<string, string[]> = {
  "nats.js 2 (nats)": [
    "ping",
    "sub golden.> q 1",
    "unsub 1 2",
    "pub golden.a golden.reply 0 hello",
    "pub golden.b - 27 NATS/1.0\r\nX-Golden: yes\r\n\r\nwith headers",
    "unsub 1 0",
    "unsub 1 0",
    "sub golden.svc - 2",
    "sub _INBOX.X.* - 3",
    "pub golden.svc _INBOX.X 0 ping",
    "pub _INBOX.X - 0 ping",
    "unsub 2 0",
    "ping",
  ],
  "nats.js 3 (@nats-io/transport-node)": [
    "ping",
    "sub golden.* - 1",
    "unsub 1 1",
    "pub golden.c - 44 NATS/1.0\r\nX-Golden: yes\r\nX-Golden: twice\r\n\r\nv3 payload",
    "unsub 1 0",
    "unsub 1 0",
    "ping",
  ],
};

function parse(input: Buffer, cuts: number[] = []): string[] {
  const r = recorder();
  const p = new NatsParser(r.handler, MAX_CONTROL_LINE, MAX_PAYLOAD);
  let at = 0;
  for (const cut of [...cuts, input.length]) {
    p.feed(input.subarray(at, cut));
    at = cut;
  }
  return r.events;
}

function randomCuts(r: Rand, length: number): number[] {
  const n = below(r, 6);
  return Array.from({ length: n }, () => below(r, length + 1)).sort((a, b) => a - b);
}

/** Sets a number in a control line (a size, a sid, a max) to an extreme, or removes it. */
function extremeNumber(r: Rand, input: Buffer): Buffer {
  const text = input.toString("latin1");
  const numbers = [...text.matchAll(/\d+/g)];
  if (numbers.length === 0) return input;
  const m = pick(r, numbers);
  const replacement = pick(r, ["0", "-1", "99999999999", "4294967296", String(MAX_PAYLOAD + 1), String(MAX_PAYLOAD), "1e3", "", "00000000000000000001"]);
  return Buffer.from(text.slice(0, m.index) + replacement + text.slice(m.index! + m[0].length), "latin1");
}

/** Lengthens one line to within a few bytes of max_control_line, where limits are off by one or not. */
function stretchLine(r: Rand, input: Buffer): Buffer {
  const text = input.toString("latin1");
  const ends = [...text.matchAll(/\r\n/g)].map((m) => m.index!);
  if (ends.length === 0) return input;
  const end = pick(r, ends);
  const start = text.lastIndexOf("\n", end - 1) + 1;
  const pad = Math.max(0, MAX_CONTROL_LINE - (end - start) + below(r, 7) - 3);
  // Inside the subject or the CONNECT JSON, whichever the line has: after its first space.
  const at = text.indexOf(" ", start) < end && text.indexOf(" ", start) >= 0 ? text.indexOf(" ", start) + 2 : end;
  return Buffer.from(text.slice(0, at) + "a".repeat(pad) + text.slice(at), "latin1");
}

test("golden bytes: what the nats v2 and v3 clients send parses to the operations they were asked for, however split", () => {
  assert.deepEqual(Object.keys(EXPECTED).sort(), streams.map((s) => s.client).sort());
  for (const s of streams) {
    const events = sameInboxes(parse(s.bytes));
    const connect = JSON.parse(events[0].slice("connect ".length)) as Record<string, unknown>;
    assert.deepEqual([connect.lang, connect.headers, connect.protocol, connect.verbose], ["nats.js", true, 1, false], s.client);
    assert.match(String(connect.name), /^golden-v[23]$/);
    assert.deepEqual(events.slice(1), EXPECTED[s.client], s.client);
    for (let cut = 1; cut < s.bytes.length; cut++) assert.deepEqual(parse(s.bytes, [cut]), parse(s.bytes), `${s.client} split at ${cut}`);
  }
});

test("fuzz: mutated client streams parse to operations or the parser's error, the same however split, within the limits", { timeout: 120_000 }, (t) => {
  const r = rng(SEED);
  const allocations = watchAllocations();
  let cases = 0;
  let errors = 0;
  try {
    for (const until = Date.now() + FUZZ_MS; Date.now() < until; cases++) {
      const base = pick(r, streams).bytes;
      const kind = r();
      const input = kind < 0.25 ? extremeNumber(r, base) : kind < 0.35 ? stretchLine(r, base) : mutate(r, base);
      const cuts = randomCuts(r, input.length);
      allocations.reset();
      let whole: string[];
      let split: string[];
      try {
        whole = parse(input);
        split = parse(input, cuts);
      } catch (err) {
        throw new Error(`the parser threw (NAGARE_FUZZ_SEED=${SEED}) on ${JSON.stringify(input.toString("latin1"))}: ${(err as Error).stack}`);
      }
      const where = `(NAGARE_FUZZ_SEED=${SEED}) ${JSON.stringify(input.toString("latin1"))} cut at ${cuts}`;
      assert.deepEqual(split, whole, `the same operations whatever the reads ${where}`);
      const failed = whole.findIndex((e) => e.startsWith("error "));
      if (failed >= 0) {
        errors++;
        assert.equal(failed, whole.length - 1, `nothing after the parser's error ${where}`);
      }
      for (const e of whole) if (e.startsWith("pub ")) assert.ok(Buffer.byteLength(e, "latin1") < MAX_PAYLOAD + MAX_CONTROL_LINE, `a payload within max_payload ${where}`);
      assert.ok(allocations.largest <= Math.max(MAX_CONTROL_LINE, MAX_PAYLOAD) + 2, `allocated ${allocations.largest} bytes ${where}`);
    }
  } finally {
    allocations.restore();
  }
  t.diagnostic(`seed ${SEED}: ${cases} mutated streams, ${errors} ended in a protocol error`);
  assert.ok(cases > 0);
});
