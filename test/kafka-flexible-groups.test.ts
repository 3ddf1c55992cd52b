/**
 * The consumer-group APIs in their flexible versions (compact strings and
 * arrays, tagged fields after each structure), which clients written for
 * Kafka 3.5+ alone send: a whole group round on the wire with raw frames,
 * JoinGroup v9, SyncGroup v5, Heartbeat v4, OffsetCommit v8, OffsetFetch v8
 * (two groups in one request), DescribeGroups v5, ListGroups v4 (states
 * filter), LeaveGroup v5 and DeleteGroups v2, each response read to its
 * last byte. Field layouts: Kafka's message definitions
 * (clients/src/main/resources/common/message/*.json).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Writer, type Reader } from "../src/protocols/kafka/codec.js";
import { createTopic, startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { flexibleBody, flexibleFrame, frame, RawKafka, REQUEST_MS, topicPartitionErrors } from "./helpers/kafka-raw.js";

const NONE = 0;
const UNKNOWN_TOPIC_OR_PARTITION = 3;
const ILLEGAL_GENERATION = 22;
const INCONSISTENT_GROUP_PROTOCOL = 23;
const UNKNOWN_MEMBER_ID = 25;
const NON_EMPTY_GROUP = 68;
const GROUP_ID_NOT_FOUND = 69;
const MEMBER_ID_REQUIRED = 79;

/** One flexible request on a connection; its response body, read in flexible mode. */
async function call(k: RawKafka, apiKey: number, version: number, body: (w: Writer) => void): Promise<Reader> {
  const n = k.responses.length;
  k.send(flexibleFrame(apiKey, version, body, n));
  return flexibleBody(await k.response(n, REQUEST_MS));
}

/** Every byte of a response read: a tagged-field section missing or too many would leave bytes or run out. */
function end(r: Reader): void {
  r.taggedFields();
  assert.equal(r.remaining, 0, "the response read to its end");
}

/** ConsumerProtocolSubscription v0 of `topics`, as a consumer's JoinGroup metadata. */
function subscription(topics: string[]): Buffer {
  const w = new Writer();
  w.i16(0).array(topics, (w, t) => w.string(t)).nullableBytes(null);
  return Buffer.from(w.result());
}

interface JoinAnswer {
  error: number;
  generation: number;
  protocolType: string | null;
  protocolName: string | null;
  leader: string;
  skipAssignment: boolean;
  memberId: string;
  members: Array<{ memberId: string; instanceId: string | null; metadata: Buffer | null }>;
}

/** JoinGroup v9 of type "consumer" offering `protocols`, with a reason (v8+). */
async function joinV9(k: RawKafka, group: string, memberId: string, protocols: Array<[string, Buffer]>, reason: string | null): Promise<JoinAnswer> {
  const r = await call(k, 11, 9, (w) => {
    w.string(group).i32(10_000).i32(10_000).string(memberId).nullableString(null).string("consumer");
    w.array(protocols, (w, [name, metadata]) => w.string(name).nullableBytes(metadata).taggedFields());
    w.nullableString(reason).taggedFields();
  });
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const error = r.i16();
  const generation = r.i32();
  const protocolType = r.nullableString();
  const protocolName = r.nullableString();
  const leader = r.string();
  const skipAssignment = r.bool();
  const id = r.string();
  const members = r.array((r) => {
    const m = { memberId: r.string(), instanceId: r.nullableString(), metadata: r.nullableBytes() };
    r.taggedFields();
    return m;
  });
  end(r);
  return { error, generation, protocolType, protocolName, leader, skipAssignment, memberId: id, members };
}

/** SyncGroup v5 naming the protocol type and name it takes the group to have. */
async function syncV5(
  k: RawKafka,
  group: string,
  generation: number,
  memberId: string,
  protocolType: string | null,
  protocolName: string | null,
  assignments: Array<[string, Buffer]>,
): Promise<{ error: number; protocolType: string | null; protocolName: string | null; assignment: Buffer | null }> {
  const r = await call(k, 14, 5, (w) => {
    w.string(group).i32(generation).string(memberId).nullableString(null).nullableString(protocolType).nullableString(protocolName);
    w.array(assignments, (w, [id, a]) => w.string(id).nullableBytes(a).taggedFields());
    w.taggedFields();
  });
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = { error: r.i16(), protocolType: r.nullableString(), protocolName: r.nullableString(), assignment: r.nullableBytes() };
  end(r);
  return out;
}

async function heartbeatV4(k: RawKafka, group: string, generation: number, memberId: string): Promise<number> {
  const r = await call(k, 12, 4, (w) => w.string(group).i32(generation).string(memberId).nullableString(null).taggedFields());
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const error = r.i16();
  end(r);
  return error;
}

/** OffsetCommit v8 of [partition, offset, metadata] of one topic; [partition, error] each. */
async function commitV8(k: RawKafka, group: string, generation: number, memberId: string, topic: string, offsets: Array<[number, number, string | null]>): Promise<Array<[number, number]>> {
  const r = await call(k, 8, 8, (w) => {
    w.string(group).i32(generation).string(memberId).nullableString(null);
    w.arrayLength(1).string(topic);
    w.array(offsets, (w, [p, offset, metadata]) => w.i32(p).i64(offset).i32(-1).nullableString(metadata).taggedFields());
    w.taggedFields(); // the topic
    w.taggedFields();
  });
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const topics = topicPartitionErrors(r);
  end(r);
  assert.deepEqual(
    topics.map((t) => t.name),
    [topic],
  );
  return topics[0].partitions;
}

interface FetchedGroup {
  groupId: string;
  /** topic → [partition, offset, metadata, error] each. */
  topics: Array<[string, Array<[number, number, string | null, number]>]>;
  error: number;
}

/** OffsetFetch v8 of several groups at once: each with its topics and partitions, or null for all it has. */
async function fetchV8(k: RawKafka, groups: Array<[string, Array<[string, number[]]> | null]>): Promise<FetchedGroup[]> {
  const r = await call(k, 9, 8, (w) => {
    w.array(groups, (w, [id, topics]) => {
      w.string(id);
      if (topics === null) w.arrayLength(-1);
      else
        w.array(topics, (w, [name, partitions]) => {
          w.string(name);
          w.array(partitions, (w, p) => w.i32(p));
          w.taggedFields();
        });
      w.taggedFields();
    });
    w.bool(false).taggedFields(); // require_stable
  });
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r): FetchedGroup => {
    const groupId = r.string();
    const topics = r.array((r): FetchedGroup["topics"][number] => {
      const name = r.string();
      const partitions = r.array((r): [number, number, string | null, number] => {
        const index = r.i32();
        const offset = r.i64();
        assert.equal(r.i32(), -1, "committed_leader_epoch");
        const p: [number, number, string | null, number] = [index, offset, r.nullableString(), r.i16()];
        r.taggedFields();
        return p;
      });
      r.taggedFields();
      return [name, partitions];
    });
    const error = r.i16();
    r.taggedFields();
    return { groupId, topics, error };
  });
  end(r);
  return out;
}

interface Described {
  error: number;
  groupId: string;
  state: string;
  protocolType: string;
  protocol: string;
  members: Array<{ memberId: string; instanceId: string | null; clientId: string; host: string; metadata: Buffer | null; assignment: Buffer | null }>;
  authorizedOperations: number;
}

async function describeV5(k: RawKafka, groups: string[]): Promise<Described[]> {
  const r = await call(k, 15, 5, (w) => w.array(groups, (w, g) => w.string(g)).bool(false).taggedFields());
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r): Described => {
    const error = r.i16();
    const groupId = r.string();
    const state = r.string();
    const protocolType = r.string();
    const protocol = r.string();
    const members = r.array((r) => {
      const m = { memberId: r.string(), instanceId: r.nullableString(), clientId: r.string(), host: r.string(), metadata: r.nullableBytes(), assignment: r.nullableBytes() };
      r.taggedFields();
      return m;
    });
    const authorizedOperations = r.i32();
    r.taggedFields();
    return { error, groupId, state, protocolType, protocol, members, authorizedOperations };
  });
  end(r);
  return out;
}

/** ListGroups v4 with a states filter: [group id, protocol type, state] each, sorted by id. */
async function listV4(k: RawKafka, states: string[]): Promise<Array<[string, string, string]>> {
  const r = await call(k, 16, 4, (w) => w.array(states, (w, s) => w.string(s)).taggedFields());
  assert.equal(r.i32(), 0, "throttle_time_ms");
  assert.equal(r.i16(), NONE);
  const groups = r.array((r): [string, string, string] => {
    const g: [string, string, string] = [r.string(), r.string(), r.string()];
    r.taggedFields();
    return g;
  });
  end(r);
  return groups.sort((a, b) => a[0].localeCompare(b[0]));
}

/** LeaveGroup v5 of members, each with a reason; the top-level error and [member id, instance id, error] each. */
async function leaveV5(k: RawKafka, group: string, members: string[]): Promise<{ error: number; members: Array<[string, string | null, number]> }> {
  const r = await call(k, 13, 5, (w) => {
    w.string(group);
    w.array(members, (w, m) => w.string(m).nullableString(null).nullableString(`test: ${m} is done`).taggedFields());
    w.taggedFields();
  });
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const error = r.i16();
  const out = r.array((r): [string, string | null, number] => {
    const m: [string, string | null, number] = [r.string(), r.nullableString(), r.i16()];
    r.taggedFields();
    return m;
  });
  end(r);
  return { error, members: out };
}

async function deleteGroupsV2(k: RawKafka, groups: string[]): Promise<Array<[string, number]>> {
  const r = await call(k, 42, 2, (w) => w.array(groups, (w, g) => w.string(g)).taggedFields());
  assert.equal(r.i32(), 0, "throttle_time_ms");
  const out = r.array((r): [string, number] => {
    const g: [string, number] = [r.string(), r.i16()];
    r.taggedFields();
    return g;
  });
  end(r);
  return out;
}

describe("Kafka consumer-group APIs in their flexible versions, on the wire", () => {
  let h: KafkaHarness;
  before(async () => {
    h = await startKafka({ initialRebalanceDelayMs: 0 });
  });
  after(async () => h.close());

  test("ApiVersions advertises the group APIs up to their last versions before KIP-848", { timeout: 30_000 }, async () => {
    const k = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
    try {
      k.send(frame(18, 0, () => {}));
      const r = await k.response(0, REQUEST_MS);
      assert.equal(r.i16(), NONE);
      const ranges = new Map(r.array((r): [number, [number, number]] => [r.i16(), [r.i16(), r.i16()]]));
      const want: Array<[number, number]> = [
        [8, 8], // OffsetCommit
        [9, 8], // OffsetFetch
        [11, 9], // JoinGroup
        [12, 4], // Heartbeat
        [13, 5], // LeaveGroup
        [14, 5], // SyncGroup
        [15, 5], // DescribeGroups
        [16, 4], // ListGroups
        [42, 2], // DeleteGroups
      ];
      for (const [key, max] of want) assert.deepEqual(ranges.get(key), [0, max], `API ${key}`);
    } finally {
      k.destroy();
    }
  });

  test("a whole group round: join, sync, heartbeat, commit, fetch, describe, list, leave, delete", { timeout: 60_000 }, async () => {
    const topic = "flex.topic";
    const g1 = "flex.g1";
    const g2 = "flex.g2";
    await createTopic(h, topic, 2);
    const member = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
    const admin = await RawKafka.open(h.srv.kafkaPort!, REQUEST_MS);
    try {
      const metadata = subscription([topic]);
      const protocols: Array<[string, Buffer]> = [
        ["range", metadata],
        ["roundrobin", metadata],
      ];

      // JoinGroup v9 without a member id: KIP-394's MEMBER_ID_REQUIRED, with the id to come back with; no protocol (null in v7+).
      const first = await joinV9(member, g1, "", protocols, "test: first start");
      assert.equal(first.error, MEMBER_ID_REQUIRED);
      assert.match(first.memberId, /^raw-/);
      assert.deepEqual(
        [first.generation, first.protocolType, first.protocolName, first.leader, first.skipAssignment, first.members],
        [-1, null, null, "", false, []],
      );

      // Back with that id: generation 1, this member the leader, the group's protocol type (v7+) and name, SkipAssignment false.
      const joined = await joinV9(member, g1, first.memberId, protocols, null);
      assert.deepEqual(
        [joined.error, joined.generation, joined.protocolType, joined.protocolName, joined.leader, joined.skipAssignment, joined.memberId],
        [NONE, 1, "consumer", "range", first.memberId, false, first.memberId],
      );
      assert.deepEqual(joined.members, [{ memberId: first.memberId, instanceId: null, metadata }]);
      const memberId = joined.memberId;

      // SyncGroup v5 naming another protocol name, or type, than the group's: INCONSISTENT_GROUP_PROTOCOL, and no protocol echoed.
      const assignment = Buffer.from("the leader's assignment");
      for (const [type, name] of [
        ["consumer", "roundrobin"],
        ["connect", "range"],
      ]) {
        assert.deepEqual(await syncV5(member, g1, 1, memberId, type, name, [[memberId, assignment]]), {
          error: INCONSISTENT_GROUP_PROTOCOL,
          protocolType: null,
          protocolName: null,
          assignment: Buffer.alloc(0),
        });
      }
      // The group's own (and a wrong generation is judged before them).
      assert.equal((await syncV5(member, g1, 2, memberId, "consumer", "roundrobin", [])).error, ILLEGAL_GENERATION);
      assert.deepEqual(await syncV5(member, g1, 1, memberId, "consumer", "range", [[memberId, assignment]]), {
        error: NONE,
        protocolType: "consumer",
        protocolName: "range",
        assignment,
      });

      // Heartbeat v4: fine in generation 1, ILLEGAL_GENERATION in another.
      assert.equal(await heartbeatV4(member, g1, 1, memberId), NONE);
      assert.equal(await heartbeatV4(member, g1, 7, memberId), ILLEGAL_GENERATION);

      // OffsetCommit v8, by the member; a partition the topic does not have is named as such.
      assert.deepEqual(
        await commitV8(member, g1, 1, memberId, topic, [
          [0, 5, "m0"],
          [1, 7, null],
          [9, 1, null],
        ]),
        [
          [0, NONE],
          [1, NONE],
          [9, UNKNOWN_TOPIC_OR_PARTITION],
        ],
      );
      // And by a simple consumer (generation -1) into a second group, which that makes.
      assert.deepEqual(await commitV8(admin, g2, -1, "", topic, [[1, 11, "two"]]), [[1, NONE]]);

      // OffsetFetch v8: both groups in one request, the first for named partitions, the second for all it has.
      assert.deepEqual(
        await fetchV8(admin, [
          [g1, [[topic, [0, 1, 9]]]],
          [g2, null],
        ]),
        [
          {
            groupId: g1,
            topics: [
              [
                topic,
                [
                  [0, 5, "m0", NONE],
                  [1, 7, "", NONE],
                  [9, -1, "", NONE],
                ],
              ],
            ],
            error: NONE,
          },
          { groupId: g2, topics: [[topic, [[1, 11, "two", NONE]]]], error: NONE },
        ],
      );

      // DescribeGroups v5: the member as it joined, with its metadata and assignment; an unknown group is Dead.
      const [d1, d2, d3] = await describeV5(admin, [g1, g2, "flex.none"]);
      assert.deepEqual([d1.error, d1.groupId, d1.state, d1.protocolType, d1.protocol, d1.authorizedOperations], [NONE, g1, "Stable", "consumer", "range", -2147483648]);
      assert.equal(d1.members.length, 1);
      const m = d1.members[0];
      assert.deepEqual([m.memberId, m.instanceId, m.clientId, m.metadata, m.assignment], [memberId, null, "raw", metadata, assignment]);
      assert.match(m.host, /127\.0\.0\.1$/);
      assert.deepEqual([d2.error, d2.groupId, d2.state, d2.members], [NONE, g2, "Empty", []]);
      assert.deepEqual([d3.error, d3.groupId, d3.state, d3.members], [NONE, "flex.none", "Dead", []]);

      // ListGroups v4: the states filter honoured (Kafka's state names, any case), each group with its state; none: all.
      assert.deepEqual(await listV4(admin, ["Stable"]), [[g1, "consumer", "Stable"]]);
      assert.deepEqual(await listV4(admin, ["empty"]), [[g2, "", "Empty"]]);
      assert.deepEqual(await listV4(admin, ["PreparingRebalance", "Dead"]), []);
      assert.deepEqual(await listV4(admin, []), [
        [g1, "consumer", "Stable"],
        [g2, "", "Empty"],
      ]);

      // DeleteGroups v2 of a group with a member: NON_EMPTY_GROUP; an unknown one: GROUP_ID_NOT_FOUND.
      assert.deepEqual(await deleteGroupsV2(admin, [g1, "flex.none"]), [
        [g1, NON_EMPTY_GROUP],
        ["flex.none", GROUP_ID_NOT_FOUND],
      ]);

      // LeaveGroup v5 (a reason per member): the member leaves; one the group never had is UNKNOWN_MEMBER_ID.
      assert.deepEqual(await leaveV5(member, g1, [memberId, "flex-stranger"]), {
        error: NONE,
        members: [
          [memberId, null, NONE],
          ["flex-stranger", null, UNKNOWN_MEMBER_ID],
        ],
      });
      assert.equal((await describeV5(admin, [g1]))[0].state, "Empty");
      assert.equal(await heartbeatV4(member, g1, 1, memberId), UNKNOWN_MEMBER_ID);

      // DeleteGroups v2 of both, now empty: deleted, their offsets with them.
      assert.deepEqual(await deleteGroupsV2(admin, [g1, g2]), [
        [g1, NONE],
        [g2, NONE],
      ]);
      assert.deepEqual(await listV4(admin, []), []);
      assert.deepEqual(
        await fetchV8(admin, [
          [g1, null],
          [g2, [[topic, [1]]]],
        ]),
        [
          { groupId: g1, topics: [], error: NONE },
          { groupId: g2, topics: [[topic, [[1, -1, "", NONE]]]], error: NONE },
        ],
      );
    } finally {
      member.destroy();
      admin.destroy();
    }
  });
});
