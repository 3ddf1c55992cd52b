/**
 * The Kafka door's limits across connections, each shown with the raw
 * protocol against the server's own accounting (and RSS where that is what
 * was once seen growing):
 * - decompression: 32 pipelined gzip "bombs" once took the server to 3.2 GiB.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { startJs, type JsHarness } from "./helpers/js.js";
import { RawKafka, batchAround, frame, produceFrame, produceResult } from "./helpers/kafka-raw.js";
import type { KafkaListenerOptions, ServerOptions } from "../src/server/options.js";

const MiB = 1024 * 1024;
const CORRUPT_MESSAGE = 2;

async function start(kafka: KafkaListenerOptions, server: ServerOptions = {}): Promise<JsHarness> {
  return startJs({ server: { ...server, kafka: { port: 0, initialRebalanceDelayMs: 0, ...kafka } } });
}

/** Creates a topic through Metadata v1 (auto-creation). */
async function createTopic(port: number, topic: string): Promise<void> {
  const c = await RawKafka.open(port);
  c.send(frame(3, 1, (w) => w.arrayLength(1).string(topic)));
  await c.response(0);
  c.destroy();
}

/** Samples this process's RSS (the server runs in it) until stopped; returns the peak. */
function rssSampler(): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss());
    },
  };
}

test("32 pipelined gzip bombs are decompressed within the door's budget, not all at once", async (t) => {
  // Scaled down from what was seen (100 MB each): 24 MiB each, 768 MiB if all were held together.
  const bombBytes = 24 * MiB;
  const budget = 2 * bombBytes + 4 * MiB;
  const h = await start({ maxRequestBytes: bombBytes + MiB, maxDecompressBytes: budget });
  try {
    const door = h.srv.kafka!;
    await createTopic(h.srv.kafkaPort!, "bombs");
    const bomb = produceFrame("bombs", 0, batchAround(gzipSync(Buffer.alloc(bombBytes), { level: 9 }), 1, 1));
    assert.ok(bomb.length < 100 * 1024, "a bomb is small on the wire");
    const conns = await Promise.all([0, 1, 2, 3].map(() => RawKafka.open(h.srv.kafkaPort!)));
    const rssBefore = process.memoryUsage.rss();
    const rss = rssSampler();
    for (const c of conns) c.send(Buffer.concat(Array.from({ length: 8 }, () => bomb)));
    const answers = await Promise.all(conns.map((c) => Promise.all(Array.from({ length: 8 }, (_, i) => c.response(i).then(produceResult)))));
    const rssPeak = rss.stop();
    t.diagnostic(`decompression budget peak ${(door.decompression.peak / MiB).toFixed(1)} MiB of ${budget / MiB}; RSS ${(rssBefore / MiB).toFixed(0)} → peak ${(rssPeak / MiB).toFixed(0)} MiB`);
    for (const a of answers.flat()) assert.equal(a.error, CORRUPT_MESSAGE, "zeros are not records: every bomb is refused after decompression");
    assert.ok(door.decompression.peak >= bombBytes, "the bombs were decompressed");
    assert.ok(door.decompression.peak <= budget, `decompressed bytes held at once (${door.decompression.peak}) stay within the budget (${budget})`);
    assert.equal(door.decompression.used, 0, "every byte given back");
    // All 32 held together would be 768 MiB.
    assert.ok(rssPeak - rssBefore < 400 * MiB, `RSS grew by ${((rssPeak - rssBefore) / MiB).toFixed(0)} MiB`);
    for (const c of conns) c.destroy();
  } finally {
    await h.close();
  }
});

test("a batch whose framing declares more than the limit is refused before it is decompressed", async () => {
  const h = await start({ maxRequestBytes: 4 * MiB });
  try {
    const door = h.srv.kafka!;
    await createTopic(h.srv.kafkaPort!, "declared");
    const c = await RawKafka.open(h.srv.kafkaPort!);
    c.send(produceFrame("declared", 0, batchAround(gzipSync(Buffer.alloc(8 * MiB)), 1, 1)));
    assert.equal(produceResult(await c.response(0)).error, 10, "MESSAGE_TOO_LARGE");
    assert.equal(door.decompression.peak, 0, "nothing was reserved, nothing decompressed");
    c.destroy();
  } finally {
    await h.close();
  }
});
