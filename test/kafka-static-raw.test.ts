/**
 * Static membership (KIP-345) on the wire, judged against Apache Kafka's
 * GroupCoordinator (updateStaticMemberAndRebalance, doCurrentMemberJoinGroup)
 * and GroupMetadata.selectProtocol: twin instances, restarts during a
 * rebalance, the protocol chosen by the members' votes whatever their order,
 * a follower's needless rejoin, LeaveGroup by instance id. (From an outside
 * review; its confluent-kafka rolling restarts held and live in its report.)
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { RawKafka } from "./helpers/kafka-raw.js";
import { call, heartbeat, joinGroup, syncAssignment, type Joined } from "./helpers/kafka-group-requests.js";

const NONE = 0;
const UNKNOWN_MEMBER_ID = 25;
const REBALANCE_IN_PROGRESS = 27;
const FENCED_INSTANCE_ID = 82;

async function describe_(k: RawKafka, group: string): Promise<{ state: string; protocol: string; members: Array<{ id: string; instance: string | null }> }> {
  const r = await call(k, 15, 4, (w) => w.arrayLength(1).string(group).i8(0));
  r.i32();
  r.i32();
  r.i16();
  r.string();
  const state = r.string();
  r.string();
  const protocol = r.string();
  const members = r.array((r) => {
    const id = r.string();
    const instance = r.nullableString();
    r.string();
    r.string();
    r.nullableBytes();
    r.nullableBytes();
    return { id, instance };
  });
  return { state, protocol, members };
}

async function waitState(k: RawKafka, group: string, state: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = (await describe_(k, group)).state;
    if (s === state) return;
    if (Date.now() > deadline) throw new Error(`group ${group} not ${state} (is ${s})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("static membership (KIP-345) on the wire, against Kafka's coordinator", () => {
  let h: KafkaHarness;
  const open = (): Promise<RawKafka> => RawKafka.open(h.srv.kafkaPort!);
  before(async () => {
    h = await startKafka({ initialRebalanceDelayMs: 1000 });
  });
  after(async () => h.close());

  /** Static members joined and synced in one generation; leader assigns each its own id. */
  async function stableGroup(g: string, specs: Array<{ instance: string | null; protocols?: string[] }>): Promise<{ conns: RawKafka[]; joined: Joined[] }> {
    const conns = await Promise.all(specs.map(() => open()));
    const joined = await Promise.all(specs.map((s, i) => joinGroup(conns[i], g, "", s.instance, { protocols: s.protocols })));
    for (const j of joined) assert.equal(j.error, NONE);
    const gen = joined[0].generation;
    const syncs = joined.map((j, i) => syncAssignment(conns[i], g, gen, j.memberId, j.memberId === j.leader ? joined.map((x) => x.memberId) : [], specs[i].instance));
    for (const s of await Promise.all(syncs)) assert.equal(s.error, NONE);
    return { conns, joined };
  }

  test("two processes start with the same group.instance.id at once: the older is fenced, the group has one member", { timeout: 30_000 }, async () => {
    const g = "static.twin";
    const a = await open();
    const b = await open();
    const admin = await open();
    try {
      const [ja, jb] = await Promise.all([joinGroup(a, g, "", "twin"), joinGroup(b, g, "", "twin")]);
      const errors = [ja.error, jb.error].sort();
      assert.deepEqual(errors, [NONE, FENCED_INSTANCE_ID]);
      const d = await describe_(admin, g);
      assert.equal(d.members.length, 1);
    } finally {
      for (const k of [a, b, admin]) k.destroy();
    }
  });

  test("a static member restarts while the group is PreparingRebalance: the rebalance completes with its new id, without waiting for the old one", { timeout: 30_000 }, async () => {
    const g = "static.preparing";
    const { conns, joined } = await stableGroup(g, [{ instance: "p-a" }, { instance: "p-b" }]);
    const [a, b] = conns;
    const c = await open();
    const a2c = await open();
    const admin = await open();
    try {
      // A third (static) member joins: PreparingRebalance.
      const cJoin = joinGroup(c, g, "", "p-c");
      await waitState(admin, g, "PreparingRebalance");
      // b rejoins with its id; a restarts (new process) instead of rejoining.
      const bJoin = joinGroup(b, g, joined[1].memberId, "p-b");
      const t0 = Date.now();
      const a2 = await joinGroup(a2c, g, "", "p-a", { ms: 8000 });
      const [bj, cj] = await Promise.all([bJoin, cJoin]);
      assert.equal(a2.error, NONE);
      assert.ok(Date.now() - t0 < 3000, "completed as soon as everyone was in");
      assert.equal(a2.generation, bj.generation);
      assert.equal(cj.generation, bj.generation);
      assert.equal(await heartbeat(a, g, joined[0].generation, joined[0].memberId, "p-a"), FENCED_INSTANCE_ID);
      const d = await describe_(admin, g);
      assert.deepEqual(d.members.map((m) => m.instance).sort(), ["p-a", "p-b", "p-c"]);
    } finally {
      for (const k of [...conns, c, a2c, admin]) k.destroy();
    }
  });

  test("the restart of the first-joined static member with the same protocols does not rebalance a group whose members list protocols in different orders", { timeout: 30_000 }, async () => {
    const g = "static.order";
    const specs = [
      { instance: "o-a", protocols: ["range", "roundrobin"] },
      { instance: "o-b", protocols: ["roundrobin", "range"] },
      { instance: "o-c", protocols: ["roundrobin", "range"] },
    ];
    const { conns, joined } = await stableGroup(g, specs);
    const admin = await open();
    const a2c = await open();
    try {
      const protocolBefore = (await describe_(admin, g)).protocol;
      // The member that joined first restarts, with exactly the same protocols.
      const a = joined.find((j, i) => specs[i].instance === "o-a")!;
      // Kafka (selectProtocol, by the members' votes, whatever their order in the group) answers at once, same generation.
      const a2Join = joinGroup(a2c, g, "", "o-a", { protocols: specs[0].protocols });
      const a2 = await a2Join;
      const d = await describe_(admin, g);
      assert.equal(d.state, "Stable", `nothing changed, nothing to rebalance (protocol was ${protocolBefore})`);
      assert.equal(d.protocol, protocolBefore);
      assert.equal(a2.error, NONE);
      assert.equal(a2.generation, a.generation);
    } finally {
      for (const k of [...conns, admin, a2c]) k.destroy();
    }
  });

  test("a static member restarting with another protocol rebalances the group onto it; with only another subscription it does not", { timeout: 30_000 }, async () => {
    const g = "static.protocol-change";
    const specs = [
      { instance: "pc-a", protocols: ["range", "roundrobin"] },
      { instance: "pc-b", protocols: ["range", "roundrobin"] },
    ];
    const { conns, joined } = await stableGroup(g, specs);
    const admin = await open();
    const a2c = await open();
    const a3c = await open();
    try {
      assert.equal((await describe_(admin, g)).protocol, "range");
      // Same protocols (its subscription may differ): nothing rebalances, as Kafka before KIP-814.
      const a2 = await joinGroup(a2c, g, "", "pc-a", { protocols: ["range", "roundrobin"] });
      assert.deepEqual([a2.error, a2.generation], [NONE, joined[0].generation]);
      // Only roundrobin now: the group must move to it.
      const a3Join = joinGroup(a3c, g, "", "pc-a", { protocols: ["roundrobin"] });
      await waitState(admin, g, "PreparingRebalance");
      const b = joined[1];
      const bj = await joinGroup(conns[1], g, b.memberId, "pc-b", { protocols: specs[1].protocols });
      const a3 = await a3Join;
      assert.equal(a3.error, NONE);
      assert.equal(a3.protocol, "roundrobin");
      assert.equal(bj.generation, joined[0].generation + 1);
      assert.equal(await heartbeat(a2c, g, a2.generation, a2.memberId, "pc-a"), FENCED_INSTANCE_ID);
    } finally {
      for (const k of [...conns, admin, a2c, a3c]) k.destroy();
    }
  });

  test("a static follower rejoining with its own id and unchanged protocols in a Stable group is answered the current generation, no rebalance", { timeout: 30_000 }, async () => {
    // Kafka's doCurrentMemberJoinGroup, Stable: a follower whose metadata matches gets the current generation;
    // only the leader, or a changed metadata, rebalances. (librdkafka rejoins this way, e.g. after max.poll.interval.ms.)
    const g = "static.follower-rejoin";
    const { conns, joined } = await stableGroup(g, [{ instance: "f-a" }, { instance: "f-b" }]);
    const admin = await open();
    try {
      const i = joined[0].memberId === joined[0].leader ? 1 : 0;
      const f = joined[i];
      const again = joinGroup(conns[i], g, f.memberId, i === 0 ? "f-a" : "f-b");
      const r = await again;
      assert.equal((await describe_(admin, g)).state, "Stable");
      assert.deepEqual([r.error, r.generation], [NONE, f.generation]);
    } finally {
      for (const k of [...conns, admin]) k.destroy();
    }
  });

  test("LeaveGroup v3 naming the same static instance twice: removed once, then UNKNOWN_MEMBER_ID", { timeout: 30_000 }, async () => {
    const g = "static.leave";
    const { conns, joined } = await stableGroup(g, [{ instance: "l-a" }, { instance: "l-b" }]);
    const admin = await open();
    try {
      const r = await call(admin, 13, 3, (w) => w.string(g).arrayLength(2).string("").nullableString("l-a").string(joined[0].memberId).nullableString("l-a"));
      r.i32();
      assert.equal(r.i16(), NONE);
      const errs = r.array((r) => {
        r.string();
        r.nullableString();
        return r.i16();
      });
      assert.deepEqual(errs, [NONE, UNKNOWN_MEMBER_ID]);
      assert.equal(await heartbeat(conns[1], g, joined[1].generation, joined[1].memberId, "l-b"), REBALANCE_IN_PROGRESS);
    } finally {
      for (const k of [...conns, admin]) k.destroy();
    }
  });
});
