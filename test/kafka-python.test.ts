/**
 * The admin calls of Debian's Python clients: kafka-python 2.0.2 (its own
 * protocol code) and confluent-kafka 1.7 (librdkafka 2.0.2): growing topics,
 * altering and describing configs, deleting groups. What they change is
 * checked through other clients.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { kcat, python, startKafka, type KafkaHarness } from "./helpers/kafka.js";

/** Runs `body` with `admin` bound to the client's admin, printing one JSON line: what the script returns. */
async function py(body: string): Promise<unknown> {
  const r = await python(body);
  assert.equal(r.code, 0, `python failed:\n${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

describe("Kafka door with the Python clients", () => {
  let h: KafkaHarness;
  before(async () => {
    h = await startKafka();
  });
  after(async () => h.close());

  const kafkaPython = (lines: string): string => `
import json
from kafka.admin import KafkaAdminClient, NewTopic, NewPartitions, ConfigResource, ConfigResourceType
from kafka.errors import KafkaError
admin = KafkaAdminClient(bootstrap_servers="${h.broker}", client_id="nagare-test-py")
def error_of(call):
    try:
        call()
        return None
    except KafkaError as e:
        return [type(e).__name__, str(e)]
${lines}
admin.close()
`;

  const confluent = (lines: string): string => `
import json
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions, ConfigResource
admin = AdminClient({"bootstrap.servers": "${h.broker}"})
def outcome(futures):
    out = {}
    for key, f in futures.items():
        try:
            f.result()
            out[str(key)] = None
        except Exception as e:
            out[str(key)] = e.args[0].name() if hasattr(e.args[0], "name") else str(e)
    return out
${lines}
`;

  const partitionsOf = async (topic: string): Promise<number> => {
    const l = await kcat(["-b", h.broker, "-L", "-t", topic, "-J"]);
    assert.equal(l.code, 0, l.stderr);
    return (JSON.parse(l.stdout) as { topics: Array<{ partitions: unknown[] }> }).topics[0].partitions.length;
  };

  test("kafka-python: create_partitions grows a topic and is refused a smaller count; alter_configs and describe_configs for topic and broker", async () => {
    const out = (await py(
      kafkaPython(`
admin.create_topics([NewTopic("py.grow", 2, 1)])
grown = admin.create_partitions({"py.grow": NewPartitions(total_count=5)}).topic_errors
shrink = error_of(lambda: admin.create_partitions({"py.grow": NewPartitions(total_count=3)}))
altered = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py.grow", configs={"retention.ms": "7200000"})]).resources
bad = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py.grow", configs={"cleanup.policy": "archive"})]).resources
topic = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py.grow")])[0].resources[0][4]
broker = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")])[0].resources[0][4]
print(json.dumps({
  "grown": [e[1] for e in grown], "shrink": shrink,
  "altered": [r[0] for r in altered], "bad": [r[0] for r in bad],
  "topic": {e[0]: e[1] for e in topic}, "broker": {e[0]: e[1] for e in broker},
}))
`),
    )) as { grown: number[]; shrink: [string, string]; altered: number[]; bad: number[]; topic: Record<string, string>; broker: Record<string, string> };
    assert.deepEqual(out.grown, [0]);
    assert.equal(out.shrink[0], "InvalidPartitionsError");
    assert.match(out.shrink[1], /error_message='Topic currently has 5 partitions, which is higher than the requested 3\.'/);
    assert.deepEqual(out.altered, [0]);
    assert.deepEqual(out.bad, [40], "cleanup.policy=archive: INVALID_CONFIG");
    assert.equal(out.topic["retention.ms"], "7200000");
    assert.equal(out.broker["num.partitions"], "1");
    assert.equal(await partitionsOf("py.grow"), 5);
  });

  test("kafka-python: delete_consumer_groups removes an empty group and says GROUP_ID_NOT_FOUND for one that is not there", async () => {
    const topic = "py.groups";
    const producer = h.kafka().producer();
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ value: "x" }] });
    await producer.disconnect();
    const out = (await py(
      kafkaPython(`
from kafka import KafkaConsumer, TopicPartition, OffsetAndMetadata
c = KafkaConsumer(bootstrap_servers="${h.broker}", group_id="py-readers", enable_auto_commit=False)
c.commit({TopicPartition("${topic}", 0): OffsetAndMetadata(1, "")})
c.close()
before = [g[0] for g in admin.list_consumer_groups()]
deleted = admin.delete_consumer_groups(["py-readers", "py-nobody"])
after = [g[0] for g in admin.list_consumer_groups()]
print(json.dumps({"before": before, "deleted": [[g, e.__name__] for g, e in deleted], "after": after}))
`),
    )) as { before: string[]; deleted: Array<[string, string]>; after: string[] };
    assert.ok(out.before.includes("py-readers"), JSON.stringify(out));
    assert.deepEqual(out.deleted, [
      ["py-readers", "NoError"],
      ["py-nobody", "GroupIdNotFoundError"],
    ]);
    assert.ok(!out.after.includes("py-readers"));
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      assert.deepEqual((await admin.fetchOffsets({ groupId: "py-readers", topics: [topic] }))[0].partitions.map((p) => p.offset), ["-1"]);
    } finally {
      await admin.disconnect();
    }
  });

  test("confluent-kafka (librdkafka): create_partitions without waiting succeeds, a producer writes to the new partition and a consumer reads it", async () => {
    const out = (await py(
      confluent(`
for f in admin.create_topics([NewTopic("ck.grow", 1, 1)]).values(): f.result()
# operation_timeout 0: the broker answers REQUEST_TIMED_OUT, as Kafka does, and librdkafka takes it for success.
grown = outcome(admin.create_partitions([NewPartitions("ck.grow", 3)], operation_timeout=0))
shrink = outcome(admin.create_partitions([NewPartitions("ck.grow", 2)]))
validate = outcome(admin.create_partitions([NewPartitions("ck.grow", 7)], validate_only=True))
p = Producer({"bootstrap.servers": "${h.broker}", "topic.metadata.refresh.interval.ms": 100})
p.produce("ck.grow", value=b"new partition", partition=2)
left = p.flush(10)
c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "ck-check", "enable.auto.commit": False})
c.assign([TopicPartition("ck.grow", 2, 0)])
got = None
for _ in range(50):
    m = c.poll(0.2)
    if m is not None and m.error() is None:
        got = [m.partition(), m.offset(), m.value().decode()]
        break
c.close()
altered = outcome(admin.alter_configs([ConfigResource("topic", "ck.grow", set_config={"retention.ms": "3600000"})]))
bad = outcome(admin.alter_configs([ConfigResource("topic", "ck.grow", set_config={"segment.bytes": "10"})]))
broker = {}
for f in admin.describe_configs([ConfigResource("broker", "0")]).values():
    broker = {k: v.value for k, v in f.result().items()}
print(json.dumps({"grown": grown, "shrink": shrink, "validate": validate, "left": left, "got": got, "altered": altered, "bad": bad, "broker": broker}))
`),
    )) as Record<string, unknown> & { broker: Record<string, string> };
    assert.deepEqual(out.grown, { "ck.grow": null });
    assert.deepEqual(out.shrink, { "ck.grow": "INVALID_PARTITIONS" });
    assert.deepEqual(out.validate, { "ck.grow": null });
    assert.equal(out.left, 0, "every produced message delivered");
    assert.deepEqual(out.got, [2, 0, "new partition"]);
    assert.deepEqual(out.altered, { "ConfigResource(Type.TOPIC,ck.grow)": null });
    assert.deepEqual(out.bad, { "ConfigResource(Type.TOPIC,ck.grow)": "INVALID_CONFIG" });
    assert.equal(out.broker["broker.id"], "0");
    assert.equal(await partitionsOf("ck.grow"), 3, "grown to 3, not to the validate-only 7");
  });

  test("confluent-kafka: offsets_for_times under read_committed finds nothing at or past an open transaction (the last stable offset), as Kafka", async () => {
    const out = (await py(
      confluent(`
import time
for f in admin.create_topics([NewTopic("ck.lso", 1, 1)]).values(): f.result()
now = int(time.time() * 1000)
plain = Producer({"bootstrap.servers": "${h.broker}"})
plain.produce("ck.lso", b"old", timestamp=now - 600000)
plain.flush(10)
tx = Producer({"bootstrap.servers": "${h.broker}", "transactional.id": "ck-lso-tx"})
tx.init_transactions(10)
tx.begin_transaction()
tx.produce("ck.lso", b"open", timestamp=now)
tx.flush(10)
plain.produce("ck.lso", b"after", timestamp=now)
plain.flush(10)
found = {}
for iso in ["read_committed", "read_uncommitted"]:
    c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "ck-lso", "isolation.level": iso})
    found[iso] = c.offsets_for_times([TopicPartition("ck.lso", 0, now - 300000)], timeout=10)[0].offset
    c.close()
tx.commit_transaction(10)
c = Consumer({"bootstrap.servers": "${h.broker}", "group.id": "ck-lso", "isolation.level": "read_committed"})
found["committed"] = c.offsets_for_times([TopicPartition("ck.lso", 0, now - 300000)], timeout=10)[0].offset
c.close()
print(json.dumps(found))
`),
    )) as Record<string, number>;
    // Offset 1 (the open transaction's record) is the first at or after the time; the last stable offset is 1 until it commits.
    assert.deepEqual(out, { read_committed: -1, read_uncommitted: 1, committed: 1 });
  });
});
