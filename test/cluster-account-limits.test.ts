/**
 * An account's JetStream stream limit holds in the whole cluster, as in
 * nats-server: each node holds only the streams it leads or copies, so a
 * limit counted there let an account make `max_streams` streams on every
 * node. Streams and Kafka topics, created through different nodes, count
 * together.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { AckPolicy, jetstream, jetstreamManager, JetStreamApiError, StorageType } from "@nats-io/jetstream";
import { jetStreamClusterPerFile } from "./helpers/cluster.js";
import { v3Clients, waitUntil, waitUntilAsync } from "./helpers/clients.js";
import { RawKafka, frame, REQUEST_MS } from "./helpers/kafka-raw.js";
import { admitGuardKey } from "../src/cluster/placement.js";
import { streamNameOf } from "../src/protocols/kafka/topics.js";
import type { AccountLimits } from "../src/streams/limits.js";

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("acclimits", { kafka: true }, () => clients.closeAll());

test("the last stream under max_streams is made where the node holds all the others", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 2 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  // Three replicas on three nodes: every node holds both, the second at the limit.
  await jsm.streams.add({ name: "R1", subjects: ["r1"], num_replicas: 3 });
  await jsm.streams.add({ name: "R2", subjects: ["r2"], num_replicas: 3 });
  assert.deepEqual((await jsm.streams.names().next()).sort(), ["R1", "R2"]);
  await assert.rejects(jsm.streams.add({ name: "R3", subjects: ["r3"] }), (err: JetStreamApiError) => err.code === 10027);
  for (const name of ["R1", "R2"]) await jsm.streams.delete(name);
});

test("max_streams counts the account's streams and topics on every node, whichever node a create reaches", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 3 });
  // Each on its own node (R1, placed where the request arrives or wherever is least loaded): 3 in all.
  const managers = await Promise.all(nodes.map(async (n) => jetstreamManager(await clients.open(n.url))));
  await managers[0].streams.add({ name: "L1", subjects: ["l1"] });
  await managers[1].streams.add({ name: "L2", subjects: ["l2"], num_replicas: 3 });
  await assert.rejects(managers[1].streams.add({ name: "L2", subjects: ["l2.other"] }), /stream name already in use/);
  await managers[2].streams.add({ name: "L3", subjects: ["l3"] });
  for (const [i, jsm] of managers.entries()) {
    await assert.rejects(jsm.streams.add({ name: `L4_${i}`, subjects: [`l4.${i}`] }), (err: JetStreamApiError) => err.code === 10027, `a fourth stream through node ${i}`);
  }
  // An identical create of an existing stream is still answered with it.
  assert.equal((await managers[2].streams.add({ name: "L1", subjects: ["l1"] })).config.name, "L1");
  const kafka = new kafkajs.Kafka({ clientId: "acclimits", brokers: [`127.0.0.1:${nodes[1].kafkaPort}`], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await assert.rejects(admin.createTopics({ topics: [{ topic: "t4", numPartitions: 3 }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
    // One that only validates is refused as the create is: the account's streams on every node count (Kafka applies its
    // create policy to a validation); so is one whose subject a stream captures.
    await assert.rejects(admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: "t4", numPartitions: 3 }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
    for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
    await assert.rejects(admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: "l1" }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
    assert.equal(await admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [{ topic: "t5" }] }), true);
    assert.ok(!(await admin.listTopics()).includes("t5"), "a validation creates nothing");
    for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 3 });
    // One stream fewer: a topic fits, then nothing more does.
    await managers[0].streams.delete("L3");
    assert.equal(await admin.createTopics({ topics: [{ topic: "t4", numPartitions: 3 }] }), true);
    await assert.rejects(managers[2].streams.add({ name: "L5", subjects: ["l5"] }), (err: JetStreamApiError) => err.code === 10027);
  } finally {
    await admin.disconnect();
  }
});

test("creates sent at once to one node place no more than max_streams, nor two streams of overlapping subjects", async () => {
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const existing = (await jsm.streams.names().next()).length;
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: existing + 3 });
  // Each from its own connection: the requests of one connection may be answered one after another.
  const managers = await Promise.all(Array.from({ length: 12 }, async () => jetstreamManager(await clients.open(nodes[0].url))));
  const many = await Promise.allSettled(managers.map((m, i) => m.streams.add({ name: `M${i}`, subjects: [`many.${i}`] })));
  assert.equal(many.filter((r) => r.status === "fulfilled").length, 3, `creates placed at once past max_streams: ${existing} ${JSON.stringify(many.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")))}`);
  for (const r of many) if (r.status === "rejected") assert.equal((r.reason as JetStreamApiError).code, 10027);
  for (let i = 0; i < 12; i++) await jsm.streams.delete(`M${i}`).catch(() => undefined);
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const overlapping = await Promise.allSettled(managers.slice(0, 8).map((m, i) => m.streams.add({ name: `O${i}`, subjects: [i % 2 === 0 ? "over.>" : `over.${i}`] })));
  assert.equal(overlapping.filter((r) => r.status === "fulfilled").length, 1, "streams of overlapping subjects placed at once");
});

test("a topic and a stream capturing its subject, created at once through one node, are not both placed", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-overlap", brokers: [`127.0.0.1:${nodes[0].kafkaPort}`], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.listTopics(); // connected and its metadata read: the create goes out at once
    const pairs = 8;
    const streams = Array.from({ length: pairs }, (_, i) => jsm.streams.add({ name: `CAP${i}`, subjects: [`cap${i}.>`] }));
    const topics = Array.from({ length: pairs }, (_, i) => admin.createTopics({ topics: [{ topic: `cap${i}.t` }] }));
    const [s, t] = await Promise.all([Promise.allSettled(streams), Promise.allSettled(topics)]);
    const both = [...Array(pairs).keys()].filter((i) => s[i].status === "fulfilled" && t[i].status === "fulfilled" && (t[i] as PromiseFulfilledResult<boolean>).value);
    assert.deepEqual(both, [], "a stream and a topic of overlapping subjects both placed");
    // And each pair got one of the two: neither was refused for the other's sake alone.
    const neither = [...Array(pairs).keys()].filter((i) => s[i].status === "rejected" && t[i].status === "rejected");
    assert.deepEqual(neither, []);
  } finally {
    await admin.disconnect();
  }
});

test("creates sent at once through every node place no more than max_streams", async () => {
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const existing = (await jsm.streams.names().next()).length;
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: existing + 2 });
  // Four connections to each node: each node's mirror of etcd lags behind what the others place.
  const managers = await Promise.all(Array.from({ length: 12 }, async (_, i) => jetstreamManager(await clients.open(nodes[i % nodes.length].url))));
  const many = await Promise.allSettled(managers.map((m, i) => m.streams.add({ name: `X${i}`, subjects: [`across.${i}`] })));
  const why = JSON.stringify(many.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")));
  assert.equal(many.filter((r) => r.status === "fulfilled").length, 2, `creates placed at once through every node past max_streams: ${why}`);
  for (const r of many) if (r.status === "rejected") assert.equal((r.reason as JetStreamApiError).code, 10027, why);
  assert.equal((await jsm.streams.names().next()).length, existing + 2);
  for (let i = 0; i < 12; i++) await jsm.streams.delete(`X${i}`).catch(() => undefined);
});

test("streams of overlapping subjects created at once through different nodes are not both placed", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const managers = await Promise.all(Array.from({ length: 12 }, async (_, i) => jetstreamManager(await clients.open(nodes[i % nodes.length].url))));
  // Four groups of three (xover.0 to xover.3), each group's subjects overlapping each other, each sent through every node
  // and placed there (its tag): the leader's own check of overlapping subjects sees only its own streams.
  const tag = (i: number): string => `node:${["a", "b", "c"][i % 3]}`;
  const overlapping = await Promise.allSettled(
    managers.map((m, i) => m.streams.add({ name: `XO${i}`, subjects: [`xover.${i % 4}.${i % 3 === 0 ? ">" : "*"}`], placement: { cluster: "", tags: [tag(i)] } })),
  );
  const placed = overlapping.flatMap((r, i) => (r.status === "fulfilled" ? [`XO${i}`] : []));
  assert.equal(placed.length, 4, `streams of overlapping subjects placed at once through different nodes: ${placed.join(", ")} ${JSON.stringify(overlapping.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")))}`);
  for (const r of overlapping) if (r.status === "rejected") assert.equal((r.reason as JetStreamApiError).code, 10065, String(r.reason));
  for (const name of placed) await jsm.streams.delete(name);
});

test("creates of one account sent at once through every node all land when there is room", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const managers = await Promise.all(Array.from({ length: 30 }, async (_, i) => jetstreamManager(await clients.open(nodes[i % nodes.length].url))));
  const all = await Promise.allSettled(managers.map((m, i) => m.streams.add({ name: `ROOM${i}`, subjects: [`room.${i}`], placement: { cluster: "", tags: [`node:${["a", "b", "c"][i % 3]}`] } })));
  assert.deepEqual(all.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : [])), [], "creates judged one at a time in the cluster, none refused for the others' sake");
  for (let i = 0; i < 30; i++) await jsm.streams.delete(`ROOM${i}`);
});

test("topics created at once through every node's Kafka listener place no more than max_streams", async () => {
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const existing = (await jsm.streams.names().next()).length;
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: existing + 2 });
  // CreateTopics v0 straight to each node (KafkaJS sends every CreateTopics to the controller): four per node.
  const conns = await Promise.all(Array.from({ length: 12 }, (_, i) => RawKafka.open(nodes[i % nodes.length].kafkaPort!)));
  try {
    for (const [i, k] of conns.entries()) k.send(frame(19, 0, (w) => w.arrayLength(1).string(`kx${i}`).i32(1).i16(-1).arrayLength(0).arrayLength(0).i32(10_000)));
    const errors = await Promise.all(
      conns.map(async (k) => {
        const r = await k.response(0, REQUEST_MS);
        r.i32();
        r.string();
        return r.i16();
      }),
    );
    assert.equal(errors.filter((e) => e === 0).length, 2, `topics placed at once through every node past max_streams: ${errors.join(",")}`);
    assert.deepEqual(errors.filter((e) => e !== 0 && e !== 44), [], "each refused one refused with POLICY_VIOLATION");
  } finally {
    for (const k of conns) k.destroy();
    for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  }
  for (let i = 0; i < 12; i++) await jsm.streams.delete(`kx${i}`).catch(() => undefined);
});

test("updates adding overlapping subjects, sent at once through different nodes, are not both made", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  // Each request straight to its stream's leader (pinned by its tag): the leaders judge at once, each from its own copy.
  const [ncA, ncB] = await Promise.all([clients.open(nodes[0].url), clients.open(nodes[1].url)]);
  const answer = async (nc: typeof ncA, subject: string, config: object): Promise<string> => {
    const r = (await nc.request(subject, JSON.stringify(config), { timeout: 10_000 })).json<{ error?: { err_code: number } }>();
    return r.error === undefined ? "ok" : String(r.error.err_code);
  };
  const onNode = (n: string): { placement: { cluster: string; tags: string[] } } => ({ placement: { cluster: "", tags: [`node:${n}`] } });
  const outcomes: string[][] = [];
  for (let t = 0; t < 6; t++) {
    const a = (await jsm.streams.add({ name: `UA${t}`, subjects: [`ua${t}.>`], ...onNode("a") })).config;
    const b = (await jsm.streams.add({ name: `UB${t}`, subjects: [`ub${t}.>`], ...onNode("b") })).config;
    // Two updates taking overlapping subjects, then an update and a create.
    outcomes.push(
      await Promise.all([
        answer(ncA, `$JS.API.STREAM.UPDATE.UA${t}`, { ...a, subjects: [`ua${t}.>`, `uc${t}.>`] }),
        answer(ncB, `$JS.API.STREAM.UPDATE.UB${t}`, { ...b, subjects: [`ub${t}.>`, `uc${t}.*`] }),
      ]),
      await Promise.all([
        answer(ncA, `$JS.API.STREAM.UPDATE.UA${t}`, { ...a, subjects: [`ua${t}.>`, `ud${t}.>`] }),
        answer(ncB, `$JS.API.STREAM.CREATE.UD${t}`, { name: `UD${t}`, subjects: [`ud${t}.x`], ...onNode("b") }),
      ]),
    );
  }
  // nats-server's meta leader takes one and refuses the other: subjects overlap with an existing stream (10065).
  assert.deepEqual(
    outcomes.filter((o) => [...o].sort().join() !== "10065,ok"),
    [],
    `two streams of overlapping subjects: ${JSON.stringify(outcomes)}`,
  );
  // The account's guard is bumped in the transaction of a change of subjects, and left alone by any other change.
  const cluster = nodes[1].cluster!;
  const account = cluster.placements.list().find((p) => p.stream === "UB0")!.account;
  const b = (await jsm.streams.info("UB0")).config;
  const guardAfter = async (config: object): Promise<{ guard: number; placed: number }> => {
    assert.equal(await answer(ncB, "$JS.API.STREAM.UPDATE.UB0", config), "ok");
    const placed = cluster.placements.get(account, "UB0")!.revision;
    assert.ok(await cluster.placements.waitForRevision(placed, 10_000));
    return { guard: cluster.metadata.get(admitGuardKey(account))!.revision, placed };
  };
  const subjects = await guardAfter({ ...b, subjects: ["ub0.>", "ue0"] });
  assert.equal(subjects.guard, subjects.placed, "a change of subjects bumps the guard");
  const other = await guardAfter({ ...b, subjects: ["ub0.>", "ue0"], max_msgs: 100 });
  assert.ok(other.placed > subjects.placed && other.guard === subjects.guard, `a change of max_msgs only left the guard alone: ${JSON.stringify({ subjects, other })}`);
  for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
});

test("an update of subjects racing a delete of its stream is made or answered stream not found", async () => {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, maxStreams: 0 });
  const onA = { placement: { cluster: "", tags: ["node:a"] } };
  const jsmB = await jetstreamManager(await clients.open(nodes[1].url));
  // Through node a, the stream's leader: creates there keep its rounds busy, so the update waits for one while the
  // delete (through b) lands.
  const viaA = await Promise.all(Array.from({ length: 5 }, async () => jetstreamManager(await clients.open(nodes[0].url))));
  const updates: string[] = [];
  for (let k = 0; k < 6; k++) {
    const info = await viaA[0].streams.add({ name: `RU${k}`, subjects: [`ru.${k}`], ...onA });
    const [update] = await Promise.all([
      viaA[0].streams.update(`RU${k}`, { ...info.config, subjects: [`ru.${k}.new`] }).then(
        () => "ok",
        (err: JetStreamApiError) => `${err.code} ${err.message}`,
      ),
      jsmB.streams.delete(`RU${k}`),
      ...viaA.slice(1).map((m, j) => m.streams.add({ name: `RUC${k}_${j}`, subjects: [`ruc.${k}.${j}`] })),
    ]);
    updates.push(update);
  }
  // nats-server answers an update of a stream deleted meanwhile 10059, as it answers one of a stream never made.
  assert.deepEqual(updates.filter((u) => u !== "ok" && !u.startsWith("10059 ")), [], JSON.stringify(updates));
  for (const name of await jsmB.streams.names().next()) await jsmB.streams.delete(name);
});

/** Every node's limits for the account, as one configuration gives them (each node holds its own copy). */
function setAccountLimits(limits: Partial<AccountLimits>): void {
  for (const n of nodes) n.jetstream!.setLimits({ ...n.jetstream!.limits, ...limits });
}
const on = (n: string): { placement: { cluster: string; tags: string[] } } => ({ placement: { cluster: "", tags: [`node:${n}`] } });

test("an account's storage reservations count its streams on every node, each replica too", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 3000, maxMemory: 2000 });
  const managers = await Promise.all(nodes.map(async (n) => jetstreamManager(await clients.open(n.url))));
  try {
    // One on each node, each through another node: 3000 reserved in the cluster, 1000 on each node.
    await managers[1].streams.add({ name: "ST1", subjects: ["st1"], max_bytes: 1000, ...on("a") });
    await managers[2].streams.add({ name: "ST2", subjects: ["st2"], max_bytes: 1000, ...on("b") });
    await managers[0].streams.add({ name: "ST3", subjects: ["st3"], max_bytes: 1000, ...on("c") });
    // nats-server's meta leader judges the reservations of every stream assignment: 10047, whichever node is asked.
    for (const [i, jsm] of managers.entries()) {
      await assert.rejects(jsm.streams.add({ name: `ST4_${i}`, subjects: [`st4.${i}`], max_bytes: 1, ...on(["a", "b", "c"][i]) }), (err: JetStreamApiError) => err.code === 10047 && /insufficient storage resources available/.test(err.message), `a fourth through node ${i}`);
      // A stream without max_bytes reserves one byte, as nats-server's.
      await assert.rejects(jsm.streams.add({ name: `ST5_${i}`, subjects: [`st5.${i}`] }), (err: JetStreamApiError) => err.code === 10047);
    }
    // An update that grows a reservation is judged the same way; one that does not grow it is made.
    const st1 = (await managers[0].streams.info("ST1")).config;
    await assert.rejects(managers[2].streams.update("ST1", { ...st1, max_bytes: 1001 }), (err: JetStreamApiError) => err.code === 10047);
    await managers[2].streams.update("ST1", { ...st1, max_bytes: 500 });
    assert.equal((await managers[0].streams.info("ST1")).config.max_bytes, 500);
    await managers[1].streams.update("ST1", { ...st1, max_bytes: 1000 });
    await managers[2].streams.delete("ST2");
    await managers[2].streams.delete("ST3");
    // A replicated stream reserves max_bytes on each replica, as nats-server counts it (max_bytes x replicas).
    await assert.rejects(managers[1].streams.add({ name: "SR", subjects: ["sr"], max_bytes: 700, num_replicas: 3 }), (err: JetStreamApiError) => err.code === 10047);
    await managers[1].streams.add({ name: "SR", subjects: ["sr"], max_bytes: 600, num_replicas: 3 });
    await assert.rejects(managers[2].streams.add({ name: "ST6", subjects: ["st6"], max_bytes: 201, ...on("c") }), (err: JetStreamApiError) => err.code === 10047);
    await managers[2].streams.add({ name: "ST6", subjects: ["st6"], max_bytes: 200, ...on("c") });
    // Memory has its own limit (10028); file streams do not count against it.
    await managers[0].streams.add({ name: "SM1", subjects: ["sm1"], storage: StorageType.Memory, max_bytes: 1500, ...on("a") });
    await assert.rejects(managers[1].streams.add({ name: "SM2", subjects: ["sm2"], storage: StorageType.Memory, max_bytes: 501, ...on("b") }), (err: JetStreamApiError) => err.code === 10028 && /insufficient memory resources available/.test(err.message));
    await managers[1].streams.add({ name: "SM2", subjects: ["sm2"], storage: StorageType.Memory, max_bytes: 500, ...on("b") });
  } finally {
    setAccountLimits({ maxStorage: -1, maxMemory: -1 });
    for (const name of await managers[0].streams.names().next()) await managers[0].streams.delete(name);
  }
});

test("creates and updates sent at once through every node reserve no more than the account's storage", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 3000 });
  const managers = await Promise.all(Array.from({ length: 12 }, async (_, i) => jetstreamManager(await clients.open(nodes[i % nodes.length].url))));
  try {
    // Each placed where it is asked (its tag): every leader's own check sees only what it holds.
    const many = await Promise.allSettled(managers.map((m, i) => m.streams.add({ name: `SX${i}`, subjects: [`sx.${i}`], max_bytes: 1000, ...on(["a", "b", "c"][i % 3]) })));
    const why = JSON.stringify(many.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")));
    assert.equal(many.filter((r) => r.status === "fulfilled").length, 3, `creates placed at once past the account's storage: ${why}`);
    for (const r of many) if (r.status === "rejected") assert.equal((r.reason as JetStreamApiError).code, 10047, why);
    // Room for 600 more: updates growing each of the three by 300 at once, each through its own leader: two fit.
    const made = many.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
    await managers[made[0]].streams.update(`SX${made[0]}`, { ...(await managers[0].streams.info(`SX${made[0]}`)).config, max_bytes: 400 });
    const configs = await Promise.all(made.map(async (i) => (await managers[0].streams.info(`SX${i}`)).config));
    const grown = await Promise.allSettled(made.map((i, k) => managers[i].streams.update(`SX${i}`, { ...configs[k], max_bytes: configs[k].max_bytes + 300 })));
    const why2 = JSON.stringify(grown.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")));
    assert.equal(grown.filter((r) => r.status === "fulfilled").length, 2, `updates made at once past the account's storage: ${why2}`);
    for (const r of grown) if (r.status === "rejected") assert.equal((r.reason as JetStreamApiError).code, 10047, why2);
  } finally {
    setAccountLimits({ maxStorage: -1 });
    for (const name of await managers[0].streams.names().next()) await managers[0].streams.delete(name);
  }
});

test("a Kafka topic's retention.bytes counts against the account's storage in the whole cluster", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 4000 });
  const jsm = await jetstreamManager(await clients.open(nodes[2].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-storage", brokers: [`127.0.0.1:${nodes[1].kafkaPort}`], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await jsm.streams.add({ name: "KS", subjects: ["ks"], max_bytes: 1000, ...on("a") });
    // Three partitions of 1000 bytes each: 3000, and 1000 more makes the limit, not past it.
    const topic = (name: string, bytes: number, replicationFactor = 1): { topics: kafkajs.ITopicConfig[] } => ({ topics: [{ topic: name, numPartitions: 3, replicationFactor, configEntries: [{ name: "retention.bytes", value: String(bytes) }] }] });
    // KafkaJS shows Kafka's own words for the code, not the broker's message.
    const policy = (err: Error & { errors?: Array<{ type: string }> }): boolean => err.errors?.[0]?.type === "POLICY_VIOLATION";
    await assert.rejects(admin.createTopics({ ...topic("kt1", 1001), validateOnly: true, waitForLeaders: false }), policy);
    await assert.rejects(admin.createTopics(topic("kt1", 1001)), policy);
    await assert.rejects(admin.createTopics(topic("kt1", 400, 3)), policy, "replicas count");
    assert.equal(await admin.createTopics(topic("kt1", 1000)), true);
    await assert.rejects(jsm.streams.add({ name: "KS2", subjects: ["ks2"], max_bytes: 1, ...on("c") }), (err: JetStreamApiError) => err.code === 10047);
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("max_consumers of a replicated stream counts its consumers made through every node", async () => {
  setAccountLimits({ maxStreams: 0, maxConsumers: 2 });
  const managers = await Promise.all(nodes.map(async (n) => jetstreamManager(await clients.open(n.url))));
  try {
    await managers[0].streams.add({ name: "CN", subjects: ["cn"], num_replicas: 3 });
    await managers[1].consumers.add("CN", { durable_name: "c1", ack_policy: AckPolicy.Explicit });
    await managers[2].consumers.add("CN", { durable_name: "c2", ack_policy: AckPolicy.Explicit });
    // nats-server counts the stream's consumer assignments in the meta layer: 10026, whichever node is asked.
    for (const [i, jsm] of managers.entries()) {
      await assert.rejects(jsm.consumers.add("CN", { durable_name: `c3_${i}`, ack_policy: AckPolicy.Explicit }), (err: JetStreamApiError) => err.code === 10026, `a third through node ${i}`);
    }
    // Sent at once through every node: no more than the limit are made.
    await managers[0].consumers.delete("CN", "c2");
    const conns = await Promise.all(Array.from({ length: 9 }, async (_, i) => jetstreamManager(await clients.open(nodes[i % 3].url))));
    const made = await Promise.allSettled(conns.map((m, i) => m.consumers.add("CN", { durable_name: `cx${i}`, ack_policy: AckPolicy.Explicit })));
    assert.equal(made.filter((r) => r.status === "fulfilled").length, 1, JSON.stringify(made.map((r) => (r.status === "rejected" ? String(r.reason) : "ok"))));
    assert.equal((await managers[2].consumers.list("CN").next()).length, 2);
  } finally {
    setAccountLimits({ maxConsumers: -1 });
    await managers[0].streams.delete("CN");
  }
});

test("Kafka AlterConfigs and CreatePartitions that grow a topic's reservation are judged in the whole cluster", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 4000 });
  const jsm = await jetstreamManager(await clients.open(nodes[2].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-grow", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  const policy = (err: Error & { type?: string; errors?: Array<{ type: string }> }): boolean => (err.type ?? err.errors?.[0]?.type) === "POLICY_VIOLATION";
  const retention = (topic: string, bytes: number): Promise<unknown> =>
    admin.alterConfigs({ validateOnly: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "retention.bytes", value: String(bytes) }] }] });
  try {
    await jsm.streams.add({ name: "KG", subjects: ["kg"], max_bytes: 1000, ...on("a") });
    // One partition on three replicas: 3000 in the cluster, 1000 on each node.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kt", numPartitions: 1, replicationFactor: 3, configEntries: [{ name: "retention.bytes", value: "1000" }] }] }), true);
    await assert.rejects(retention("kt", 1001), policy);
    await retention("kt", 900);
    // 3700 reserved: a topic of 100 bytes a partition grows to three partitions, not to four.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kp", numPartitions: 1, configEntries: [{ name: "retention.bytes", value: "100" }] }] }), true);
    await admin.createPartitions({ topicPartitions: [{ topic: "kp", count: 3 }] });
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic: "kp", count: 4 }] }), policy);
    await assert.rejects(jsm.streams.add({ name: "KG2", subjects: ["kg2"], max_bytes: 1, ...on("b") }), (err: JetStreamApiError) => err.code === 10047);
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("Kafka AlterConfigs and CreatePartitions with validate_only are refused for the account's storage in the whole cluster", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 4000 });
  const jsm = await jetstreamManager(await clients.open(nodes[2].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-validate", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  const policy = (err: Error & { type?: string; errors?: Array<{ type: string }> }): boolean => (err.type ?? err.errors?.[0]?.type) === "POLICY_VIOLATION";
  const retention = (topic: string, bytes: number): Promise<unknown> =>
    admin.alterConfigs({ validateOnly: true, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: "retention.bytes", value: String(bytes) }] }] });
  try {
    await jsm.streams.add({ name: "KV", subjects: ["kv"], max_bytes: 1000, ...on("a") });
    // One partition on three replicas: 3000 in the cluster, 1000 on each node; the stream on a makes 4000.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kvt", numPartitions: 1, replicationFactor: 3, configEntries: [{ name: "retention.bytes", value: "1000" }] }] }), true);
    // As the real request (refused: the test above), a validation past the limit is refused, one that does not grow passes.
    await assert.rejects(retention("kvt", 1001), policy);
    await retention("kvt", 900);
    await assert.rejects(admin.createPartitions({ validateOnly: true, topicPartitions: [{ topic: "kvt", count: 2 }] }), policy);
    await jsm.streams.delete("KV");
    // 1000 free: a second partition of three replicas of 1000 is still too much; 333 more on each replica fits, 334 not.
    await assert.rejects(admin.createPartitions({ validateOnly: true, topicPartitions: [{ topic: "kvt", count: 2 }] }), policy);
    await retention("kvt", 1333);
    await assert.rejects(retention("kvt", 1334), policy);
    assert.equal((await admin.fetchTopicMetadata({ topics: ["kvt"] })).topics[0].partitions.length, 1, "validate_only changes nothing");
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a Kafka topic without retention.bytes is refused in a cluster when the account requires max_bytes", async () => {
  setAccountLimits({ maxStreams: 0, maxBytesRequired: true });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-required", brokers: [`127.0.0.1:${nodes[1].kafkaPort}`], logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    // As on one node (10113 "account requires a stream config to have max bytes set"): refused, not placed.
    await assert.rejects(admin.createTopics({ topics: [{ topic: "kr", numPartitions: 3 }] }), (err: Error & { errors?: Array<{ type: string }> }) => err.errors?.[0]?.type === "POLICY_VIOLATION");
    assert.ok(!(await admin.listTopics()).includes("kr"));
    assert.equal(await admin.createTopics({ topics: [{ topic: "kr", numPartitions: 3, configEntries: [{ name: "retention.bytes", value: "1000" }] }] }), true);
    await assert.rejects(jsm.streams.add({ name: "KR", subjects: ["kr.js"] }), (err: JetStreamApiError) => err.code === 10113);
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxBytesRequired: false });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a Kafka reassignment that adds replicas is judged against the account's storage in the whole cluster", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: 2500 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-reassign", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  try {
    // One partition on two replicas of 1000 bytes: 2000 reserved, room for no third replica.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kra", numPartitions: 1, replicationFactor: 2, configEntries: [{ name: "retention.bytes", value: "1000" }] }] }), true);
    const brokers = (await admin.describeCluster()).brokers.map((b) => b.nodeId).sort((x, y) => x - y);
    assert.equal(brokers.length, 3);
    const replicas = (await admin.fetchTopicMetadata({ topics: ["kra"] })).topics[0].partitions[0].replicas;
    const other = brokers.find((b) => !replicas.includes(b))!;
    await assert.rejects(
      admin.alterPartitionReassignments({ topics: [{ topic: "kra", partitionAssignment: [{ partition: 0, replicas: [...replicas, other] }] }] }),
      (err: Error & { type?: string; errors?: Array<{ type?: string }> }) => [err.type, ...(err.errors ?? []).map((e) => e.type)].includes("POLICY_VIOLATION"),
    );
    // As many replicas elsewhere reserve no more: made.
    await admin.alterPartitionReassignments({ topics: [{ topic: "kra", partitionAssignment: [{ partition: 0, replicas: [replicas[0], other] }] }] });
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

/** Publishes to `subject` until one is refused (its error) or `ms` pass; `accepted` undoes each one stored, so what the account holds stays as it was. */
async function refusedWithin(js: ReturnType<typeof jetstream>, subject: string, accepted: (seq: number) => Promise<unknown>, ms: number): Promise<JetStreamApiError> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const ack = await js.publish(subject, "x".repeat(200));
      await accepted(ack.seq);
    } catch (err) {
      if (err instanceof JetStreamApiError) return err;
      throw err;
    }
    if (Date.now() > deadline) throw new Error(`no publish on ${subject} refused within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("a publish is refused once the account's streams on every node hold its max_file, and taken again once a purge frees room", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: -1 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const js = jetstream(await clients.open(nodes[1].url));
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-held", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  const producer = kafka.producer({ retry: { retries: 0 } });
  await admin.connect();
  await producer.connect();
  try {
    // One stream on each node, R1: each node holds only its own.
    for (const n of ["a", "b", "c"]) await jsm.streams.add({ name: `U${n}`, subjects: [`u.${n}`], ...on(n) });
    assert.equal(await admin.createTopics({ topics: [{ topic: "uk" }] }), true);
    for (const n of ["a", "b"]) while ((await jsm.streams.info(`U${n}`)).state.bytes < 1600) await js.publish(`u.${n}`, "x".repeat(200));
    // 3200 stored in the cluster, 1600 on a and on b: past 3000, though neither node alone is.
    setAccountLimits({ maxStorage: 3000 });
    // c holds nothing (each message taken is purged): only what a and b hold refuses it, once c has heard it.
    const refused = await refusedWithin(js, "u.c", () => jsm.streams.purge("Uc"), 10_000);
    assert.equal(refused.code, 10002);
    assert.equal(refused.message, "resource limits exceeded for account");
    // a, which holds 1600 of it, too.
    assert.equal((await refusedWithin(js, "u.a", (seq) => jsm.streams.deleteMessage("Ua", seq, false), 10_000)).code, 10002);
    // And a Kafka producer, whichever node leads its topic (each record taken is purged): POLICY_VIOLATION.
    const deadline = Date.now() + 10_000;
    for (let refused = false; !refused; ) {
      try {
        await producer.send({ topic: "uk", acks: -1, messages: [{ value: "x".repeat(200) }] });
        await jsm.streams.purge("uk");
      } catch (err) {
        const e = err as { type?: string; cause?: { type?: string } };
        assert.equal(e.type ?? e.cause?.type, "POLICY_VIOLATION", String(err));
        refused = true;
      }
      if (!refused && Date.now() > deadline) throw new Error("no Kafka produce refused within 10000 ms");
      if (!refused) await new Promise((r) => setTimeout(r, 50));
    }
    // A purge of a's stream frees 1600: c takes publishes again once it has heard of it.
    await jsm.streams.purge("Ua");
    await waitUntilAsync(async () => {
      try {
        await js.publish("u.c", "x".repeat(200));
        return true;
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10002) return false;
        throw err;
      }
    }, "a publish taken after the purge", 10_000);
  } finally {
    await producer.disconnect();
    await admin.disconnect();
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a replicated stream's messages count once for each replica against max_file, as nats-server counts them", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: -1 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const js = jetstream(await clients.open(nodes[2].url));
  try {
    await jsm.streams.add({ name: "UR", subjects: ["ur"], num_replicas: 3 });
    while ((await jsm.streams.info("UR")).state.bytes < 1100) await js.publish("ur", "x".repeat(200));
    // 1100 on each of three nodes: 3300 in the cluster. The leader's own copy alone is far from 3000.
    setAccountLimits({ maxStorage: 3000 });
    const refused = await refusedWithin(js, "ur", (seq) => jsm.streams.deleteMessage("UR", seq, false), 10_000);
    assert.equal(refused.code, 10002);
  } finally {
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a Kafka AlterConfigs that the topic's copies would refuse (max_bytes required, the account's max stream bytes) changes nothing in the cluster", async () => {
  setAccountLimits({ maxStreams: 0, maxBytesRequired: true, storageMaxStreamBytes: 1000 });
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-alter", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  const policy = (err: Error & { type?: string; errors?: Array<{ type: string }> }): boolean => (err.type ?? err.errors?.[0]?.type) === "POLICY_VIOLATION";
  const alter = (topic: string, configEntries: Array<{ name: string; value: string }>): Promise<unknown> => admin.alterConfigs({ validateOnly: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configEntries }] });
  // What every node's copy of the placement says the topic's max_bytes is.
  const placed = (topic: string): Array<number | undefined> => nodes.map((n) => (n.cluster!.placements.get("$G", streamNameOf(topic))?.placement.config as { max_bytes?: number } | undefined)?.max_bytes);
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  try {
    // Three replicas: every node holds a copy, whichever node the request reaches.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kal", numPartitions: 1, replicationFactor: 3, configEntries: [{ name: "retention.bytes", value: "500" }] }] }), true);
    await waitUntil(() => placed("kal").every((b) => b === 500), "the topic placed on every node's copy");
    // Past the account's max bytes of a stream (10122), and without retention.bytes (AlterConfigs sets what it does not name
    // back to its default: no max_bytes, 10113): refused, and so changed nowhere.
    await assert.rejects(alter("kal", [{ name: "retention.bytes", value: "2000" }]), policy);
    await assert.rejects(alter("kal", [{ name: "retention.ms", value: "600000" }]), policy);
    // A placement made after them reaches every node after any change they made.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kal2", configEntries: [{ name: "retention.bytes", value: "100" }] }] }), true);
    await waitUntil(() => placed("kal2").every((b) => b === 100), "a later placement on every node's copy");
    assert.deepEqual(placed("kal"), [500, 500, 500], "the refused AlterConfigs changed the topic's placement");
    const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: "kal", configNames: ["retention.bytes"] }] });
    assert.deepEqual(Object.fromEntries(described.resources[0].configEntries.map((e) => [e.configName, e.configValue])), { "retention.bytes": "500" });
    // One every copy takes is applied.
    await alter("kal", [{ name: "retention.bytes", value: "900" }]);
    await waitUntil(() => placed("kal").every((b) => b === 900), "the change on every node's copy");
  } finally {
    await admin.disconnect();
    setAccountLimits({ maxBytesRequired: false, storageMaxStreamBytes: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a Kafka AlterConfigs that the store of the node asked fails is undone in the cluster", async () => {
  const kafka = new kafkajs.Kafka({ clientId: "acclimits-alter-disk", brokers: nodes.map((n) => `127.0.0.1:${n.kafkaPort}`), logLevel: kafkajs.logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  const alter = (bytes: number): Promise<unknown> => admin.alterConfigs({ validateOnly: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: "kad", configEntries: [{ name: "retention.bytes", value: String(bytes) }] }] });
  const placed = (topic: string): Array<number | undefined> => nodes.map((n) => (n.cluster!.placements.get("$G", streamNameOf(topic))?.placement.config as { max_bytes?: number } | undefined)?.max_bytes);
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  let blocker: string | undefined;
  try {
    assert.equal(await admin.createTopics({ topics: [{ topic: "kad", numPartitions: 1, replicationFactor: 3, configEntries: [{ name: "retention.bytes", value: "500" }] }] }), true);
    await waitUntil(() => placed("kad").every((b) => b === 500) && nodes.every((n) => n.jetstream!.streams.get(streamNameOf("kad"))?.dir != null), "the topic on every node");
    // KafkaJS sends AlterConfigs to the controller: its copy's meta.json cannot be written there (a directory where the
    // write's temporary file goes, as a failing disk).
    const controller = (await admin.describeCluster()).controller;
    const asked = nodes.find((n) => n.kafka!.cluster!.nodeId === controller)!;
    blocker = join(asked.jetstream!.streams.get(streamNameOf("kad"))!.dir!, "meta.json.tmp");
    mkdirSync(blocker);
    await assert.rejects(alter(2000), (err: Error & { type?: string; errors?: Array<{ type: string }> }) => (err.type ?? err.errors?.[0]?.type) === "KAFKA_STORAGE_ERROR");
    // Answered with an error: the cluster's placement is as it was once every node's copy has heard of a later one.
    assert.equal(await admin.createTopics({ topics: [{ topic: "kad2" }] }), true);
    await waitUntil(() => nodes.every((n) => n.cluster!.placements.get("$G", streamNameOf("kad2")) !== undefined), "a later placement on every node's copy");
    assert.deepEqual(placed("kad"), [500, 500, 500], "the failed AlterConfigs changed the topic's placement");
    rmSync(blocker, { recursive: true });
    blocker = undefined;
    await alter(900);
    await waitUntil(() => placed("kad").every((b) => b === 900), "the change on every node's copy");
  } finally {
    if (blocker !== undefined) rmSync(blocker, { recursive: true, force: true });
    await admin.disconnect();
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});

test("a node that stops telling what it holds (its limits lifted there) is not counted for ever at what it last told", async () => {
  setAccountLimits({ maxStreams: 0, maxStorage: -1 });
  const jsm = await jetstreamManager(await clients.open(nodes[0].url));
  const js = jetstream(await clients.open(nodes[2].url));
  try {
    for (const n of ["a", "c"]) await jsm.streams.add({ name: `S${n}`, subjects: [`s.${n}`], ...on(n) });
    while ((await jsm.streams.info("Sa")).state.bytes < 2900) await js.publish("s.a", "x".repeat(200));
    setAccountLimits({ maxStorage: 3000 });
    // c refuses once it has heard what a holds.
    assert.equal((await refusedWithin(js, "s.c", () => jsm.streams.purge("Sc"), 10_000)).code, 10002);
    // a's limit lifted (a config reload there first, say): a stops telling. Then a's stream is emptied.
    nodes[0].jetstream!.setLimits({ ...nodes[0].jetstream!.limits, maxStorage: -1 });
    await jsm.streams.purge("Sa");
    await waitUntilAsync(async () => {
      try {
        await js.publish("s.c", "x".repeat(200));
        return true;
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10002) return false;
        throw err;
      }
    }, "c to take a publish again, no longer counting a's last report", 15_000);
  } finally {
    setAccountLimits({ maxStorage: -1 });
    for (const name of await jsm.streams.names().next()) await jsm.streams.delete(name);
  }
});
