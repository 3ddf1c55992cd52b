/**
 * The automatic preferred-leader election's choices (leader-rebalance.ts),
 * on a fake door: which partitions a check hands back, and that one whose
 * hand-back was refused "not now" is tried again at the next checks though
 * its broker is no longer past the share, until its leadership changes.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { LeaderRebalancer } from "../src/protocols/kafka/leader-rebalance.js";
import type { AccountDoor } from "../src/protocols/kafka/account-door.js";
import type { PlacedTopic } from "../src/protocols/kafka/cluster.js";

/** One topic of four partitions on brokers 1 and 2, every one preferring broker 1, led here by broker 2 where `off`. */
function fakeDoor(off: number[]) {
  const partitions = 4;
  const topic = {
    topic: "t",
    stream: "KAFKA_t",
    origin: "kafka",
    leaders: Array.from({ length: partitions }, (_, i) => (off.includes(i) ? 2 : 1)),
    local: Array.from({ length: partitions }, (_, i) => off.includes(i)),
    replicas: Array.from({ length: partitions }, () => [1, 2]),
    isr: Array.from({ length: partitions }, () => [1, 2]),
    offline: Array.from({ length: partitions }, () => []),
    epochs: Array.from({ length: partitions }, () => 3),
    moving: null,
    reassigning: Array.from({ length: partitions }, () => null),
  } as unknown as PlacedTopic;
  /** Hand-overs asked, in order, and those to refuse (by partition) as a replica behind would have them refused. */
  const asked: number[] = [];
  const refuse = new Set<number>();
  /** Partitions whose replica gate still refuses (a leadership taken over, its lease not yet held here). */
  const gated = new Set<number>();
  const cluster = {
    nodeName: (id: number) => `n${id}`,
    topics: () => [topic],
    topic: () => topic,
  };
  const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
  const door = {
    account: "$G",
    options: { autoLeaderRebalance: true, leaderImbalanceCheckIntervalMs: 1_000, leaderImbalancePerBrokerPercentage: 40 },
    log: quiet,
    door: { cluster },
    js: {
      streams: { get: () => ({ replicaGate: (p: number) => ({ refusal: () => (gated.has(p) ? { code: 503, description: "not led here yet" } : null) }) }) },
      handOverHere: async (_stream: string, p: number) => {
        asked.push(p);
        if (refuse.has(p)) throw new Error("in-sync replica n1 has not caught up within 1000 ms");
        topic.leaders[p] = 1;
        topic.local[p] = false;
        topic.epochs[p]++;
      },
    },
  } as unknown as AccountDoor;
  return { door, topic, asked, refuse, gated };
}

test("a broker at or under the share keeps its partitions off; past it, every one is handed back in one check", async () => {
  const under = fakeDoor([0]);
  const r1 = new LeaderRebalancer(under.door);
  await r1.check();
  assert.deepEqual(under.asked, [], "one of four off (25 %) is not past 40 %");

  const past = fakeDoor([0, 2]);
  const r2 = new LeaderRebalancer(past.door);
  await r2.check();
  assert.deepEqual(past.asked, [0, 2]);
  assert.equal(r2.handedBack, 2);
  assert.deepEqual(past.topic.leaders, [1, 1, 1, 1]);
});

test("a partition refused 'not now' while its broker was past the share is handed back at a later check, below the share", async () => {
  const { door, topic, asked, refuse } = fakeDoor([0, 2]);
  const r = new LeaderRebalancer(door);
  refuse.add(2);
  await r.check();
  assert.deepEqual(asked, [0, 2], "both tried, the second refused");
  assert.deepEqual(topic.leaders, [1, 1, 2, 1]);
  // One of four off now (25 %): Kafka's share alone would leave it off for good.
  await r.check();
  assert.deepEqual(asked, [0, 2, 2], "tried again, still refused");
  refuse.clear();
  await r.check();
  assert.deepEqual(asked, [0, 2, 2, 2]);
  assert.deepEqual(topic.leaders, [1, 1, 1, 1]);
  assert.equal(r.handedBack, 2);
});

test("an owed hand-back is forgotten once the partition's leadership changes otherwise", async () => {
  const { door, topic, asked, refuse } = fakeDoor([0, 2]);
  const r = new LeaderRebalancer(door);
  refuse.add(2);
  await r.check();
  assert.deepEqual(asked, [0, 2]);
  // A step-down elsewhere, and back here in a new epoch: a new leadership, judged by the share again (25 %).
  topic.epochs[2] += 2;
  refuse.clear();
  await r.check();
  assert.deepEqual(asked, [0, 2], "not tried: the refusal was of an older epoch");
  assert.deepEqual(topic.leaders, [1, 1, 2, 1]);
});

test("a partition passed over while its broker was past the share (not led here yet, or its preferred replica not in sync) is handed back at a later check, below the share", async () => {
  // As cluster-kafka-rebalance saw under load: partition 2 had just been moved here and its lease was not yet held when a
  // check found broker 1 past the share; partition 0 went back, the share fell to 25 %, and partition 2 stayed off for good.
  const { door, topic, asked, gated } = fakeDoor([0, 2]);
  const r = new LeaderRebalancer(door);
  gated.add(2);
  await r.check();
  assert.deepEqual(asked, [0]);
  assert.deepEqual(topic.leaders, [1, 1, 2, 1]);
  gated.clear();
  await r.check();
  assert.deepEqual(asked, [0, 2], "handed back once led here, below the share");
  assert.deepEqual(topic.leaders, [1, 1, 1, 1]);

  // The preferred replica out of sync at the check past the share, back in sync later.
  const lagging = fakeDoor([1, 3]);
  const r2 = new LeaderRebalancer(lagging.door);
  lagging.topic.isr[3] = [2];
  await r2.check();
  assert.deepEqual(lagging.asked, [1]);
  await r2.check();
  assert.deepEqual(lagging.asked, [1], "not while out of sync");
  lagging.topic.isr[3] = [2, 1];
  await r2.check();
  assert.deepEqual(lagging.asked, [1, 3]);
  assert.deepEqual(lagging.topic.leaders, [1, 1, 1, 1]);
});
