/**
 * A coordinator partition (`__consumer_offsets`) whose log failed on this
 * node (a full or failing disk: storage errors are sticky until the log is
 * reopened) cannot be loaded, and each load fails at once. Every request
 * waiting for the partition, and the sweep, started the next load at once:
 * a soak with a full disk logged 32,902 failed loads in a second and a
 * half. A failed load is tried again only after a pause.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntilAsync } from "./helpers/clients.js";
import { ask, findCoordinator, frame } from "./helpers/kafka-raw.js";
import { partitionOfKey } from "../src/protocols/kafka/coordinator-topic.js";

let cluster: KafkaTestCluster;
before(async () => (cluster = await startKafkaTestCluster("coordload")));
after(() => cluster.stop());

/** JoinGroup v0 of a new member of `group` at node `n`: its error code. */
function join(n: NagareServer, group: string): Promise<number> {
  const request = frame(11, 0, (w) => w.string(group).i32(30_000).string("").string("consumer").arrayLength(1).string("range").nullableBytes(Buffer.from("s")));
  return ask(n.kafkaPort!, request, (r) => r.i16());
}

test("a coordinator partition whose log failed is not loaded again at once, however many requests wait for it", async () => {
  const group = "g-failed-log";
  let node: NagareServer | undefined;
  await waitUntilAsync(async () => {
    const live = cluster.live();
    const answers = await Promise.all(live.map((n) => findCoordinator(n.kafkaPort!, group, 0)));
    node = live.find((n) => cluster.brokerId(n) === answers[0].id);
    return node !== undefined && answers.every((a) => a.error === 0 && a.id === answers[0].id);
  }, "the brokers to agree on the group's coordinator", 30_000);
  const coordinator = node!;
  const door = coordinator.kafka!.defaultDoor!;
  const placed = coordinator.kafka!.cluster!.topic(door.account, "__consumer_offsets")!;
  const p = partitionOfKey(group, placed.leaders.length);
  // Served: the partition is loaded.
  await waitUntilAsync(async () => (await join(coordinator, group)) === 0, "the group served by its coordinator", 30_000);

  // The partition's log fails (as a full disk fails it), and its state is given up: the next request loads it again.
  const log = coordinator.jetstream!.streams.get("__consumer_offsets")!.partitions[p] as unknown as { stick(e: Error): void; lastPerSubject(...a: unknown[]): number[] };
  log.stick(new Error("injected: the disk failed"));
  let loads = 0;
  const lastPerSubject = log.lastPerSubject.bind(log);
  log.lastPerSubject = (...a: unknown[]) => {
    loads++;
    return lastPerSubject(...a);
  };
  (door.offsets as unknown as { unload(p: number, why: string): void }).unload(p, "the test");

  // Requests wait for the load (up to 5 s each): answered that it is loading, or served once the store has reopened the
  // log (as it does by itself once it can: here at once, the failure being only injected).
  const answers = await Promise.all(Array.from({ length: 4 }, () => join(coordinator, group)));
  for (const error of answers) assert.ok([0, 14, 15].includes(error), `served, or a retriable refusal (${error})`);
  // A load at the first request, and one after each pause (0.5 s, then doubling): not one after another (before, 115,378
  // loads in these 5 s).
  assert.ok(loads >= 1 && loads <= 8, `${loads} loads of the failed partition`);
});
