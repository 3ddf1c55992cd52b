/**
 * A coordinator topic (`__transaction_state`) is placed in the cluster by
 * the first request that needs it. With etcd refusing the placement, every
 * request tried it again at once, and logged it: clients retry
 * COORDINATOR_NOT_AVAILABLE at once, so one client made a placement and a
 * log line per retry. A failed placement is tried again only after a pause.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { findCoordinator } from "./helpers/kafka-raw.js";
import { captureLog } from "./helpers/clients.js";

let cluster: KafkaTestCluster;
before(async () => (cluster = await startKafkaTestCluster("placeretry")));
after(() => cluster.stop());

test("a coordinator topic whose placement etcd refuses is not placed again at every request, nor logged at each", async () => {
  const node = cluster.live()[0];
  const kafkaCluster = node.kafka!.cluster!;
  const door = node.kafka!.defaultDoor!;
  assert.equal(kafkaCluster.topic(door.account, "__transaction_state"), undefined, "not placed before a transactional id is asked for");

  let placements = 0;
  const place = kafkaCluster.place;
  kafkaCluster.place = async (...args) => {
    if (args[1] !== "__transaction_state") return place.apply(kafkaCluster, args);
    placements++;
    throw new Error("injected: etcd unavailable");
  };
  const { lines, restore } = captureLog(door.log);
  try {
    // A client asking again at once, as clients do after COORDINATOR_NOT_AVAILABLE.
    for (let i = 0; i < 200; i++) assert.equal((await findCoordinator(node.kafkaPort!, "tx-place", 1)).error, 15, "COORDINATOR_NOT_AVAILABLE while the topic cannot be placed");
    // Before: 200 placements, 200 lines.
    assert.ok(placements >= 1 && placements <= 10, `${placements} placements for 200 requests`);
    const told = lines.filter((l) => l.includes("could not place __transaction_state"));
    assert.ok(told.length >= 1 && told.length <= 10, `${told.length} lines for 200 requests`);
  } finally {
    kafkaCluster.place = place;
    restore();
  }
});
