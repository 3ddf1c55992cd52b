/**
 * A topic that cannot be created because the store refuses the write (a
 * full or read-only disk) is answered KAFKA_STORAGE_ERROR, which clients
 * retry. It was thrown: each request logged a stack trace and closed the
 * client's connection, and a producer auto-creating its topic asks again
 * every retry backoff (a KafkaJS producer on a full disk: 9 lines a
 * second, one connection a request). The failure is logged once per
 * STORAGE_FAILURE_LOG_MS.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { frame, RawKafka, REQUEST_MS } from "./helpers/kafka-raw.js";
import type { Reader } from "../src/protocols/kafka/codec.js";
import { captureLog } from "./helpers/clients.js";

let h: KafkaHarness;
before(async () => (h = await startKafka({ autoCreateTopics: true })));
after(() => h.close());

/** Metadata v4 (allow_auto_topic_creation) answer: the first topic's error. */
function metadataError(r: Reader): number {
  r.i32(); // throttle
  r.array((r) => (r.i32(), r.string(), r.i32(), r.nullableString())); // brokers
  r.nullableString(); // cluster id
  r.i32(); // controller
  const errors = r.array((r) => {
    const error = r.i16();
    r.string();
    r.bool();
    r.array((r) => (r.i16(), r.i32(), r.i32(), r.array((r) => r.i32()), r.array((r) => r.i32())));
    return error;
  });
  return errors[0];
}

test("a topic the store cannot create is answered KAFKA_STORAGE_ERROR, logged once, the connection kept", async () => {
  const door = h.srv.kafka!.defaultDoor!;
  const { lines, restore } = captureLog(door.log, "error");
  // The streams' directory is a file now: a new stream's files cannot be made, as on a full or read-only disk.
  const streams = join(h.storeDir, "streams");
  rmSync(streams, { recursive: true, force: true });
  writeFileSync(streams, "");
  const c = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  try {
    // A producer's Metadata for its topic, auto-created, asked again at each retry.
    for (let i = 0; i < 50; i++) {
      c.send(frame(3, 4, (w) => w.arrayLength(1).string("auto-made").bool(true), i));
      assert.equal(metadataError(await c.response(i, REQUEST_MS)), 56, "KAFKA_STORAGE_ERROR, retriable");
    }
    // CreateTopics v0 alike.
    c.send(frame(19, 0, (w) => w.arrayLength(1).string("made").i32(1).i16(1).arrayLength(0).arrayLength(0).i32(10_000), 50));
    const created = (await c.response(50, REQUEST_MS)).array((r) => [r.string(), r.i16()]);
    assert.deepEqual(created, [["made", 56]]);
    assert.equal(c.closed, false, "the connection is kept");
    const failed = lines.filter((l) => l.includes("auto-made"));
    // Before: the connection closed at the first request, with a stack trace logged.
    assert.equal(failed.length, 1, `${failed.length} lines for 50 failed creations: ${failed.join("\n")}`);
  } finally {
    restore();
    c.destroy();
    rmSync(streams, { force: true });
  }
});
