/**
 * KIP-447: TxnOffsetCommit v3 names the consumer whose offsets a
 * transaction commits (generation, member id, group.instance.id), and the
 * group's coordinator refuses a consumer the group has moved on from, as
 * Kafka's does: a zombie that lost its partitions in a rebalance cannot
 * commit their offsets in its transaction. librdkafka sends v3 once the
 * broker offers it (`send_offsets_to_transaction` with the consumer's
 * group metadata).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { python, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { RawKafka } from "./helpers/kafka-raw.js";
import { call, joinGroup, offsetFetch, syncAssignment, type Joined, type OffsetFetched } from "./helpers/kafka-group-requests.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

describe("TxnOffsetCommit v3 (KIP-447)", () => {
  let h: KafkaHarness;
  const conns: RawKafka[] = [];
  before(async () => {
    h = await startKafka();
  });
  after(async () => {
    for (const k of conns) k.socket.destroy();
    await h.close();
  });

  /** The start of a confluent-kafka script: topics `input` and `output` of one partition, `records` records in `input` (v0, v1, ...). */
  const prelude = (input: string, output: string, records: number): string => `
import json
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = "${h.broker}"
admin = AdminClient({"bootstrap.servers": b})
for f in admin.create_topics([NewTopic("${input}", 1, 1), NewTopic("${output}", 1, 1)]).values(): f.result()
src = Producer({"bootstrap.servers": b})
for i in range(${records}): src.produce("${input}", value=b"v%d" % i)
src.flush(10)`;

  async function createTopic(topic: string, numPartitions: number): Promise<void> {
    const admin = h.kafka().admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions }] });
    } finally {
      await admin.disconnect();
    }
  }

  /** `k` joins `group` as its only (dynamic) member, and syncs: its join answer. */
  async function soleMember(k: RawKafka, group: string): Promise<Joined> {
    const ja = await joinGroup(k, group, "", null);
    const joined = await joinGroup(k, group, ja.memberId, null);
    assert.equal(joined.error, ErrorCode.NONE);
    await syncAssignment(k, group, joined.generation, joined.memberId, [joined.memberId]);
    return joined;
  }

  /** InitProducerId v1 of transactional id `id`. */
  async function initTxn(k: RawKafka, id: string) {
    const init = await call(k, 22, 1, (w) => w.nullableString(id).i32(60_000));
    init.i32();
    assert.equal(init.i16(), ErrorCode.NONE);
    return { producerId: init.i64(), epoch: init.i16() };
  }

  async function open(): Promise<RawKafka> {
    const k = await RawKafka.open(h.srv.kafkaPort!);
    conns.push(k);
    return k;
  }

  test("a consumer's transactional commit is taken while it is the group's, refused once the group moved on, and unchecked when it names no consumer", async () => {
    const admin = h.kafka().admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "kip447.in", numPartitions: 2 }] });
    await admin.disconnect();
    const [a, b, tx] = [await open(), await open(), await open()];
    const group = "kip447";
    // A group of a dynamic member and a static one, Stable at generation 1.
    const ja = await joinGroup(a, group, "", null);
    assert.equal(ja.error, ErrorCode.MEMBER_ID_REQUIRED);
    const [ja2, jb2] = await Promise.all([joinGroup(a, group, ja.memberId, null), joinGroup(b, group, "", "static-b")]);
    const joined = [ja2, jb2];
    assert.ok(joined.every((j) => j.error === ErrorCode.NONE));
    const leader = joined.find((j) => j.memberId === j.leader)!;
    await Promise.all(joined.map((j, i) => syncAssignment(i === 0 ? a : b, group, j.generation, j.memberId, j === leader ? joined.map((x) => x.memberId) : [], i === 0 ? null : "static-b")));
    const generation = ja2.generation;

    // A transactional producer with the group's offsets in its transaction.
    const init = await call(tx, 22, 1, (w) => w.nullableString("kip447-tx").i32(60_000));
    init.i32();
    assert.equal(init.i16(), ErrorCode.NONE);
    const producerId = init.i64();
    const epoch = init.i16();
    const added = await call(tx, 25, 1, (w) => w.string("kip447-tx").i64(producerId).i16(epoch).string(group));
    added.i32();
    assert.equal(added.i16(), ErrorCode.NONE);

    /** TxnOffsetCommit v3 (flexible: header and body) of partition 0's offset 5; its one partition's error. */
    const commit = async (gen: number, member: string, instance: string | null): Promise<number> => {
      const r = await call(tx, 28, 3, (w) => {
        w.tags(); // request header v2
        w.compactString("kip447-tx").compactString(group).i64(producerId).i16(epoch).i32(gen).compactString(member).compactNullableString(instance);
        w.arrayLength(1, true).compactString("kip447.in");
        w.arrayLength(1, true).i32(0).i64(5).i32(-1).compactNullableString(null).tags();
        w.tags().tags();
      });
      r.tags(); // response header v1
      r.i32(); // throttle
      const topics = r.array((r) => {
        const name = r.compactString();
        const partitions = r.array((r) => {
          const index = r.i32();
          const error = r.i16();
          r.tags();
          return { index, error };
        }, true);
        r.tags();
        return { name, partitions };
      }, true);
      r.tags();
      assert.deepEqual(topics.map((t) => [t.name, t.partitions.map((p) => p.index)]), [["kip447.in", [0]]]);
      return topics[0].partitions[0].error;
    };

    assert.equal(await commit(generation, ja2.memberId, null), ErrorCode.NONE, "a current member");
    assert.equal(await commit(generation, jb2.memberId, "static-b"), ErrorCode.NONE, "a current static member");
    assert.equal(await commit(generation - 1, ja2.memberId, null), ErrorCode.ILLEGAL_GENERATION, "an older generation");
    assert.equal(await commit(generation, "gone-member", null), ErrorCode.UNKNOWN_MEMBER_ID, "not a member");
    assert.equal(await commit(generation, ja2.memberId, "static-b"), ErrorCode.FENCED_INSTANCE_ID, "another member's instance id");
    assert.equal(await commit(-1, "", null), ErrorCode.NONE, "no consumer named: unchecked, as v0–2");
  });

  test("OffsetFetch v7's require_stable answers UNSTABLE_OFFSET_COMMIT for an offset an open transaction holds, until it commits or aborts", async () => {
    await createTopic("kip447.held", 2);
    const [a, tx] = [await open(), await open()];
    const group = "kip447-held";
    await soleMember(a, group);
    const { producerId, epoch } = await initTxn(tx, "kip447-held-tx");

    /** AddOffsetsToTxn, then TxnOffsetCommit (v2) of partition 0's `offset`. */
    const holdOffset = async (offset: number): Promise<void> => {
      const added = await call(tx, 25, 1, (w) => w.string("kip447-held-tx").i64(producerId).i16(epoch).string(group));
      added.i32();
      assert.equal(added.i16(), ErrorCode.NONE);
      const r = await call(tx, 28, 2, (w) => {
        w.string("kip447-held-tx").string(group).i64(producerId).i16(epoch);
        w.i32(1).string("kip447.held").i32(1).i32(0).i64(offset).i32(-1).nullableString(null);
      });
      r.i32();
      assert.deepEqual(r.array((r) => [r.string(), r.array((r) => [r.i32(), r.i16()])]), [["kip447.held", [[0, ErrorCode.NONE]]]]);
    };
    const endTxn = async (commit: boolean): Promise<void> => {
      const r = await call(tx, 26, 1, (w) => w.string("kip447-held-tx").i64(producerId).i16(epoch).bool(commit));
      r.i32();
      assert.equal(r.i16(), ErrorCode.NONE);
    };
    const fetch = (version: 6 | 7, requireStable: boolean): Promise<OffsetFetched> => offsetFetch(a, group, "kip447.held", [0, 1], version, requireStable);

    await holdOffset(5);
    const none = { partitions: [[0, -1, ErrorCode.NONE], [1, -1, ErrorCode.NONE]], error: ErrorCode.NONE };
    assert.deepEqual(await fetch(7, true), { partitions: [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT], [1, -1, ErrorCode.NONE]], error: ErrorCode.NONE }, "held by the open transaction");
    assert.deepEqual(await fetch(7, false), none, "not asked to be stable: what is committed");
    assert.deepEqual(await fetch(6, false), none, "v6");
    await endTxn(false);
    assert.deepEqual(await fetch(7, true), none, "aborted: the offset is dropped, and stable");
    await holdOffset(7);
    assert.equal((await fetch(7, true)).partitions[0][2], ErrorCode.UNSTABLE_OFFSET_COMMIT, "held again");
    await endTxn(true);
    assert.deepEqual(await fetch(7, true), { partitions: [[0, 7, ErrorCode.NONE], [1, -1, ErrorCode.NONE]], error: ErrorCode.NONE }, "committed with the transaction");
  });

  test("a group whose only state is offsets an open transaction holds is kept when its last member leaves: they still read as unstable", async () => {
    await createTopic("kip447.kept", 1);
    const [a, tx] = [await open(), await open()];
    const group = "kip447-kept";
    const id = "kip447-kept-tx";
    const joined = await soleMember(a, group);
    const { producerId, epoch } = await initTxn(tx, id);
    const added = await call(tx, 25, 1, (w) => w.string(id).i64(producerId).i16(epoch).string(group));
    added.i32();
    assert.equal(added.i16(), ErrorCode.NONE);
    const r = await call(tx, 28, 2, (w) => {
      w.string(id).string(group).i64(producerId).i16(epoch);
      w.i32(1).string("kip447.kept").i32(1).i32(0).i64(3).i32(-1).nullableString(null);
    });
    r.i32();
    assert.deepEqual(r.array((r) => [r.string(), r.array((r) => [r.i32(), r.i16()])]), [["kip447.kept", [[0, ErrorCode.NONE]]]]);
    // The only member leaves: the group is Empty, with no committed offset of its own.
    const left = await call(a, 13, 0, (w) => w.string(group).string(joined.memberId));
    assert.equal(left.i16(), ErrorCode.NONE); // v0: the error alone
    const fetched = await offsetFetch(a, group, "kip447.kept", [0], 7, true);
    assert.deepEqual(fetched, { partitions: [[0, -1, ErrorCode.UNSTABLE_OFFSET_COMMIT]], error: ErrorCode.NONE }, "still held by the open transaction");
    const ended = await call(tx, 26, 1, (w) => w.string(id).i64(producerId).i16(epoch).bool(true));
    ended.i32();
    assert.equal(ended.i16(), ErrorCode.NONE);
    assert.deepEqual(await offsetFetch(a, group, "kip447.kept", [0], 7, true), { partitions: [[0, 3, ErrorCode.NONE]], error: ErrorCode.NONE }, "committed with it");
  });

  test("librdkafka's consume-transform-produce sends v3 with its consumer's group metadata, and the offsets commit with the transaction", async () => {
    const r = await python(`${prelude("kip447.src", "kip447.dst", 3)}
c = Consumer({"bootstrap.servers": b, "group.id": "kip447-etl", "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
c.subscribe(["kip447.src"])
got = []
for _ in range(100):
    m = c.poll(0.2)
    if m is not None and m.error() is None: got.append(m)
    if len(got) == 3: break
p = Producer({"bootstrap.servers": b, "transactional.id": "kip447-etl-tx", "debug": "protocol"})
p.init_transactions(10)
p.begin_transaction()
for m in got: p.produce("kip447.dst", value=m.value().upper())
p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
p.commit_transaction(10)
committed = [t.offset for t in c.committed([TopicPartition("kip447.src", 0)], 10)]
c.close()
print(json.dumps({"got": len(got), "committed": committed}))
`);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { got: 3, committed: [3] });
    assert.match(r.stderr, /Sent TxnOffsetCommitRequest \(v3/, "librdkafka sent v3");
  });

  test("a read_committed consumer taking partitions over waits for a transaction holding their offsets, then starts at its offsets (OffsetFetch v7)", async () => {
    const r = await python(`${prelude("kip447s.in", "kip447s.out", 10)}
import logging
conf = {"bootstrap.servers": b, "group.id": "kip447s", "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
first = Consumer(conf)
first.subscribe(["kip447s.in"])
for _ in range(100):
    m = first.poll(0.2)
    if m is not None and m.error() is None: break
first.commit(offsets=[TopicPartition("kip447s.in", 0, 2)], asynchronous=False)
# The first consumer's transaction takes offset 5; it leaves the group before the transaction ends.
p = Producer({"bootstrap.servers": b, "transactional.id": "kip447s-tx"})
p.init_transactions(10)
p.begin_transaction()
p.produce("kip447s.out", value=b"out")
p.send_offsets_to_transaction([TopicPartition("kip447s.in", 0, 5)], first.consumer_group_metadata(), 10)
first.close()
class Seen(logging.Handler):
    unstable = False
    def emit(self, record):
        if "UNSTABLE_OFFSET_COMMIT" in record.getMessage() or "nstable offset commit" in record.getMessage(): Seen.unstable = True
lg = logging.getLogger("rdkafka")
lg.addHandler(Seen())
lg.setLevel(logging.DEBUG)
second = Consumer({**conf, "debug": "cgrp,topic,protocol", "logger": lg})
second.subscribe(["kip447s.in"])
committed = False
start = None
for _ in range(300):
    m = second.poll(0.1)
    if m is not None and m.error() is None:
        start = m.offset()
        break
    # Told the offsets are held: the transaction commits now.
    if Seen.unstable and not committed:
        p.commit_transaction(10)
        committed = True
second.close()
print(json.dumps({"unstable": Seen.unstable, "committedFirst": committed, "start": start}))
`);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").pop()!), { unstable: true, committedFirst: true, start: 5 });
  });
});
