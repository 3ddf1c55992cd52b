/**
 * ElectLeaders (kafka-leader-election.sh) on a three-node cluster: a
 * replicated partition whose leadership moved off its preferred replica
 * (here by a JetStream step-down) is given back to it, asked of a broker
 * that does not lead it, with every acknowledged record kept; where no
 * election is needed, or none may be made, Kafka's errors.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import kafkajs from "kafkajs";
import { connect } from "@nats-io/transport-node";
import type { NagareServer } from "../src/server/server.js";
import { startKafkaTestCluster, type KafkaTestCluster } from "./helpers/cluster.js";
import { waitUntilAsync } from "./helpers/clients.js";
import { kcat } from "./helpers/kafka.js";
import { ask, electLeadersFrame as electFrame, electLeadersResult as electResult } from "./helpers/kafka-raw.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

const { Kafka, logLevel } = kafkajs;

let cluster: KafkaTestCluster;
before(async () => {
  cluster = await startKafkaTestCluster("kafkaelect");
});
after(() => cluster.stop());

const address = (n: NagareServer): string => cluster.address(n);
const brokerId = (n: NagareServer): number => cluster.brokerId(n);

const errors = (m: Map<string, Map<number, [number, string | null]>>): Array<[string, number, number]> =>
  [...m].flatMap(([topic, ps]) => [...ps].map(([p, [error]]): [string, number, number] => [topic, p, error]));

test("ElectLeaders puts a partition's leadership back on its preferred replica with nothing lost; ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE's cousins and unknown partitions as Kafka answers them", async () => {
  const nodes = cluster.nodes;
  let preferredLeader = -1;
  const kafka = new Kafka({ clientId: "elect-test", brokers: nodes.map(address), logLevel: logLevel.NOTHING, retry: { retries: 12, initialRetryTime: 200, maxRetryTime: 2000 } });
  const admin = kafka.admin();
  await admin.connect();
  const partitionsOf = async (topic: string) =>
    (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.sort((a, b) => a.partitionId - b.partitionId);
  try {
    await admin.createTopics({ topics: [{ topic: "elect.me", numPartitions: 2, replicationFactor: 3 }, { topic: "elect.one", numPartitions: 1 }], waitForLeaders: true });
    await waitUntilAsync(async () => (await partitionsOf("elect.me")).every((p) => p.isr.length === 3), "every replica in sync", 30_000);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    // Each partition's records in a send of their own: KafkaJS drops, silently, the records of a partition whose leader moved
    // when another partition of the same send() was answered (docs/KAFKA.md, "In a cluster").
    const send = async (prefix: string) => {
      for (let i = 0; i < 5; i++) for (const partition of [0, 1]) await producer.send({ topic: "elect.me", acks: -1, messages: [{ partition, value: `${prefix}-${partition}-${i}` }] });
    };
    await send("before");

    const placed = await partitionsOf("elect.me");
    assert.deepEqual(placed.map((p) => p.leader), placed.map((p) => p.replicas[0]), "each placed with its preferred replica leading");
    // Nothing to elect yet; an unknown topic and partition; an unclean election while the leader is up; an unknown type.
    const port = nodes[0].kafkaPort!;
    // A topic named twice is answered once, its partitions together.
    assert.deepEqual(errors(await ask(port, electFrame(1, 0, [["elect.me", [0, 1]], ["elect.one", [0]], ["elect.none", [0]], ["elect.me", [7, 1]]]), (r) => electResult(r, 1))), [
      ["elect.me", 0, ErrorCode.ELECTION_NOT_NEEDED],
      ["elect.me", 1, ErrorCode.ELECTION_NOT_NEEDED],
      ["elect.me", 7, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
      ["elect.one", 0, ErrorCode.ELECTION_NOT_NEEDED],
      ["elect.none", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
    ]);
    assert.deepEqual(errors(await ask(port, electFrame(1, 1, [["elect.me", [0]]]), (r) => electResult(r, 1))), [["elect.me", 0, ErrorCode.ELECTION_NOT_NEEDED]]);
    // An unknown election type refuses the whole request, and each partition asked for.
    assert.deepEqual(errors(await ask(port, electFrame(1, 5, [["elect.me", [0]], ["elect.none", [0]]]), (r) => electResult(r, 1, ErrorCode.INVALID_REQUEST))), [
      ["elect.me", 0, ErrorCode.INVALID_REQUEST],
      ["elect.none", 0, ErrorCode.INVALID_REQUEST],
    ]);

    // Partition 0's leadership moves off its preferred replica (a JetStream step-down hands it to another in-sync replica).
    const preferred = placed[0].replicas[0];
    preferredLeader = preferred;
    // Each node's view of the placement: an election is asked only once every broker knows who leads (each reads etcd).
    const views = () => nodes.map((n) => n.cluster!.placements.get("$G", "elect_me")!.placement);
    const stepDown = async (): Promise<void> => {
      const epoch = Math.max(...views().map((p) => p.epochs![0]));
      const nc = await connect({ servers: `127.0.0.1:${nodes[0].port}` });
      try {
        const answer = JSON.parse(new TextDecoder().decode((await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.elect_me", "", { timeout: 10_000 })).data)) as { success?: boolean };
        assert.equal(answer.success, true, JSON.stringify(answer));
      } finally {
        await nc.close();
      }
      await waitUntilAsync(async () => {
        const [p0] = await partitionsOf("elect.me");
        return p0.leader !== preferred && p0.isr.length === 3 && views().every((p) => p.epochs![0] > epoch && p.isr![0].length === 3);
      }, "another replica leads partition 0 as every broker sees it, every replica in sync", 30_000);
    };
    await stepDown();
    await send("moved");

    // Asked of a broker that leads neither: partition 0 goes back to its preferred replica; partition 1 needs nothing.
    const moved = (await partitionsOf("elect.me"))[0].leader;
    const asked = nodes.find((n) => brokerId(n) !== moved && brokerId(n) !== preferred)!;
    assert.deepEqual(errors(await ask(asked.kafkaPort!, electFrame(2, 0, [["elect.me", [0, 1]]]), (r) => electResult(r, 2))), [
      ["elect.me", 0, ErrorCode.NONE],
      ["elect.me", 1, ErrorCode.ELECTION_NOT_NEEDED],
    ]);
    await waitUntilAsync(async () => (await partitionsOf("elect.me"))[0].leader === preferred, "the preferred replica leads partition 0 again", 30_000);
    await send("after");

    // Moved off once more, then every broker asked at once, right after the step-down: one elects, the others find it
    // elected (ELECTION_NOT_NEEDED), none fails, as Kafka's controller takes elections one at a time.
    await stepDown();
    const raced = await Promise.all(nodes.map((n) => ask(n.kafkaPort!, electFrame(2, 0, [["elect.me", [0]]]), (r) => electResult(r, 2))));
    const outcomes = raced.map((m) => m.get("elect.me")!.get(0)!);
    assert.ok(
      outcomes.every(([error]) => error === ErrorCode.NONE || error === ErrorCode.ELECTION_NOT_NEEDED),
      JSON.stringify(outcomes),
    );
    assert.ok(outcomes.some(([error]) => error === ErrorCode.NONE), JSON.stringify(outcomes));
    await waitUntilAsync(async () => (await partitionsOf("elect.me"))[0].leader === preferred, "the preferred replica leads partition 0 again", 30_000);
    await send("last");
    await producer.disconnect();
    // Every partition of every topic (null, v0): only those it tried to elect are answered, and none needed it.
    const all = errors(await ask(port, electFrame(0, 0, null), (r) => electResult(r, 0)));
    assert.deepEqual(all.filter(([t]) => t.startsWith("elect.")), []);
  } finally {
    await admin.disconnect();
  }

  // Every acknowledged record of partition 0, once, in order, read from its leader.
  const leader = cluster.nodes.find((n) => brokerId(n) === preferredLeader)!;
  const read = await kcat(["-b", address(leader), "-C", "-t", "elect.me", "-p", "0", "-o", "beginning", "-e", "-q", "-f", "%s\n"], "", 30_000);
  assert.equal(read.code, 0, read.stderr);
  assert.deepEqual(
    read.stdout.trim().split("\n"),
    ["before", "moved", "after", "last"].flatMap((prefix) => Array.from({ length: 5 }, (_, i) => `${prefix}-0-${i}`)),
  );
});
