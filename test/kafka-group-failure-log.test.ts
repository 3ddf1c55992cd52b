/**
 * A group's offsets that cannot be written (a full disk) are refused with
 * NOT_COORDINATOR, as Kafka does; clients find the coordinator again and
 * retry at once. Each failed commit was a log line: one KafkaJS consumer on
 * a full disk made over a thousand a second. A group's failed writes are
 * logged once per FAILURE_LOG_MS, with the count of those not logged.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { frame, RawKafka, REQUEST_MS } from "./helpers/kafka-raw.js";
import { captureLog } from "./helpers/clients.js";

let h: KafkaHarness;
before(async () => (h = await startKafka()));
after(() => h.close());

/** OffsetCommit v2 of a simple consumer (no generation, no member): offset `offset` of partition 0 of `topic`. */
function commitFrame(group: string, topic: string, offset: number, correlationId: number): Buffer {
  return frame(8, 2, (w) => w.string(group).i32(-1).string("").i64(-1).arrayLength(1).string(topic).arrayLength(1).i32(0).i64(offset).nullableString(null), correlationId);
}

test("a group whose offsets cannot be written logs its failure once, not once per commit retried", async () => {
  const topic = "failing-commits";
  const group = "g-failing";
  await createTopic(h, topic);
  const c = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
  let n = 0;
  const commit = async (offset: number): Promise<number> => {
    c.send(commitFrame(group, topic, offset, n));
    const r = await c.response(n++, REQUEST_MS);
    r.arrayLength(); // topics
    r.string();
    r.arrayLength(); // partitions
    r.i32();
    return r.i16();
  };
  assert.equal(await commit(1), 0, "committed while the disk takes writes");

  const door = h.srv.kafka!.defaultDoor!;
  const { lines, restore } = captureLog(door.log);
  try {
    // The groups' directory is a file now: every write of a group's file fails at once, as on a full disk.
    const groups = join(h.storeDir, "kafka", "groups");
    rmSync(groups, { recursive: true, force: true });
    writeFileSync(groups, "");
    // A client retrying at once, as KafkaJS's consumer does after NOT_COORDINATOR.
    for (let i = 0; i < 300; i++) assert.equal(await commit(2 + i), 16, "NOT_COORDINATOR while the group cannot be written");
    const failed = lines.filter((l) => l.includes(`offsets of group ${group} not committed`));
    assert.ok(failed.length >= 1, "the failure is logged");
    // Before: 300 lines, one per commit.
    assert.ok(failed.length <= 2, `${failed.length} lines for 300 failed commits`);

    rmSync(groups, { force: true });
    assert.equal(await commit(1000), 0, "committed again once the disk takes writes");
    assert.ok(lines.some((l) => l.includes(`group ${group}: written again, after`)), "the failures not logged are told once it writes again");
  } finally {
    restore();
    c.destroy();
  }
});
