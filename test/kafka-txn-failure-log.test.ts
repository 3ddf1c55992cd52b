/**
 * A transaction's state that cannot be saved (a full disk) is answered
 * NOT_COORDINATOR, which producers retry at once. Each failed InitProducerId
 * logged "its new epoch not saved": a producer retrying fast flooded the
 * log. A transactional id's failed saves are logged once per
 * FAILURE_LOG_MS, with the count of those not logged.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { findFile } from "./helpers/damage.js";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { ask, flexibleBody, flexibleFrame, RawKafka, REQUEST_MS } from "./helpers/kafka-raw.js";
import { captureLog, waitUntil } from "./helpers/clients.js";

let h: KafkaHarness;
before(async () => (h = await startKafka()));
after(() => h.close());

/** InitProducerId v4 of `id`, naming the producer it was (-1, -1: a new one). */
const initFrame = (id: string, producerId: number, epoch: number, correlationId = 0): Buffer =>
  flexibleFrame(22, 4, (w) => w.nullableString(id).i32(60_000).i64(producerId).i16(epoch).taggedFields(), correlationId);

test("an epoch the disk refuses to save is answered NOT_COORDINATOR on every retry, and logged once, not once per retry", async () => {
  const id = "tx-full-disk";
  const port = h.srv.kafkaPort!;
  const first = await ask(port, initFrame(id, -1, -1), (r) => {
    flexibleBody(r);
    r.i32();
    return { error: r.i16(), producerId: r.i64(), epoch: r.i16() };
  });
  assert.equal(first.error, 0);
  const file = findFile(h.storeDir, "transactions.json");
  assert.ok(file !== undefined, "transactions.json");

  const { lines, restore } = captureLog(h.srv.kafka!.defaultDoor!.log);
  const c = await RawKafka.open(port, REQUEST_MS);
  let n = 0;
  /** The error of one InitProducerId on `c` naming the first producer (a retry of its bump). */
  const bump = async (): Promise<number> => {
    c.send(initFrame(id, first.producerId, first.epoch, n));
    const r = await c.response(n++, REQUEST_MS);
    flexibleBody(r);
    r.i32();
    return r.i16();
  };
  try {
    // The file is replaced through `transactions.json.tmp`: a directory there fails every save, as a full disk would.
    mkdirSync(join(`${file}.tmp`, "in-the-way"), { recursive: true });
    // A producer retrying at once on one connection: each retry answered, the retriable NOT_COORDINATOR.
    for (let i = 0; i < 300; i++) assert.equal(await bump(), 16, `retry ${i}: NOT_COORDINATOR while the epoch cannot be saved`);
    const failed = lines.filter((l) => l.includes(`transaction ${id}: its new epoch not saved`));
    assert.ok(failed.length >= 1, "the failure is logged");
    // Before: 300 lines, one per retry.
    assert.ok(failed.length <= 2, `${failed.length} lines for 300 failed retries`);

    // KafkaJS retries NOT_COORDINATOR too, until the disk takes the epoch.
    const producer = h.kafka().producer({ transactionalId: "tx-kafkajs-full-disk", idempotent: true, maxInFlightRequests: 1, retry: { retries: 1000, initialRetryTime: 50, maxRetryTime: 200 } });
    await producer.connect();
    try {
      const began = producer.transaction();
      await waitUntil(() => lines.some((l) => l.includes("transaction tx-kafkajs-full-disk: its new epoch not saved")), "KafkaJS's first InitProducerId refused");
      rmSync(`${file}.tmp`, { recursive: true });
      const txn = await began;
      await txn.abort();
    } finally {
      await producer.disconnect();
    }

    assert.equal(await bump(), 0, "the bump is saved once the disk takes it");
    assert.ok(lines.some((l) => l.includes(`transaction ${id}: its new epoch saved, after`)), "the failures not logged are told once it is saved");
  } finally {
    restore();
    c.destroy();
  }
});
