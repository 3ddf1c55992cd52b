/**
 * The Kafka commands (`nagare topic|group`) against an in-process broker's
 * Kafka listener, with kafkajs producing records and running a consumer
 * group: what they print for people and with --json, and their exit codes;
 * and the CLI's Kafka client against a scripted broker that misbehaves.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer } from "../src/index.js";
import { runKafkaCommand, type KafkaGroup } from "../src/cli/kafka-commands.js";
import { KafkaClient, KafkaClientError } from "../src/cli/kafka-client.js";
import { Reader, Writer } from "../src/protocols/kafka/codec.js";
import { ApiKey } from "../src/protocols/kafka/api.js";
import { TOPIC_CONFIG_NAMES } from "../src/protocols/kafka/configs.js";
import { startKafka, type KafkaHarness } from "./helpers/kafka.js";
import { waitUntil } from "./helpers/clients.js";
import { captured, type CommandRun } from "./helpers/cli.js";

async function runAt(bootstrap: string | null, group: KafkaGroup, argv: string[]): Promise<CommandRun> {
  return captured((io) => runKafkaCommand(group, bootstrap === null ? argv : [...argv, "-b", bootstrap], io));
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

describe("nagare topic and group commands", () => {
  let h: KafkaHarness;
  const run = (group: KafkaGroup, ...argv: string[]): Promise<CommandRun> => runAt(h.broker, group, argv);

  before(async () => {
    // Topic auto-creation stays on: describe must not create the topic it asks about.
    h = await startKafka();
  });
  after(async () => h.close());

  test("topic create, ls, describe (offsets and configs) and rm", async () => {
    const create = await run("topic", "create", "orders.eu", "--partitions", "3", "--config", "retention.ms=3600000");
    assert.equal(create.code, 0, create.err);
    assert.equal(create.out, "Topic orders.eu created with 3 partitions\n");
    const again = await run("topic", "create", "orders.eu");
    assert.equal(again.code, 1);
    assert.match(again.err, /already exists.*TOPIC_ALREADY_EXISTS/);
    const badConfig = await run("topic", "create", "archived", "--config", "cleanup.policy=archive");
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.err, /Invalid value archive for configuration cleanup\.policy: String must be one of: compact, delete/);
    const byDefault = await run("topic", "create", "plain");
    assert.equal(byDefault.out, "Topic plain created with 1 partition\n", "the broker's default count, learnt from Metadata");

    const producer = h.kafka().producer();
    await producer.connect();
    try {
      await producer.send({ topic: "orders.eu", acks: -1, messages: [0, 0, 0, 2].map((partition, i) => ({ partition, value: `o${i}` })) });
    } finally {
      await producer.disconnect();
    }

    const ls = await run("topic", "ls");
    assert.equal(ls.code, 0, ls.err);
    assert.equal(ls.out, "TOPIC      PARTITIONS  MESSAGES\norders.eu  3           4\nplain      1           0\n");
    assert.deepEqual(JSON.parse((await run("topic", "ls", "--json")).out), [
      { topic: "orders.eu", partitions: 3, messages: 4 },
      { topic: "plain", partitions: 1, messages: 0 },
    ]);

    const info = await run("topic", "describe", "orders.eu");
    assert.equal(info.code, 0, info.err);
    assert.match(info.out, /^Topic orders\.eu: 3 partitions$/m);
    // Partition, leader, replicas, in-sync replicas (broker 0 alone: one node), earliest, latest, messages.
    assert.match(info.out, /^0\s+0\s+0\s+0\s+0\s+3\s+3$/m);
    assert.match(info.out, /^1\s+0\s+0\s+0\s+0\s+0\s+0$/m);
    assert.match(info.out, /^2\s+0\s+0\s+0\s+0\s+1\s+1$/m);
    assert.match(info.out, /^retention\.ms\s+3600000\s+topic$/m);
    assert.match(info.out, /^cleanup\.policy\s+delete\s+default$/m);
    const parsed = JSON.parse((await run("topic", "describe", "orders.eu", "--json")).out) as {
      partitions: Array<{ partition: number; leader: number; earliest: number; latest: number }>;
      configs: Array<{ name: string; value: string }>;
    };
    assert.deepEqual(parsed.partitions, [
      { partition: 0, leader: 0, replicas: [0], isr: [0], earliest: 0, latest: 3 },
      { partition: 1, leader: 0, replicas: [0], isr: [0], earliest: 0, latest: 0 },
      { partition: 2, leader: 0, replicas: [0], isr: [0], earliest: 0, latest: 1 },
    ]);
    assert.equal(parsed.configs.find((c) => c.name === "retention.ms")?.value, "3600000");

    const rm = await run("topic", "rm", "orders.eu");
    assert.equal(rm.code, 0, rm.err);
    assert.equal(rm.out, "Topic orders.eu deleted\n");
    const gone = await run("topic", "describe", "orders.eu");
    assert.equal(gone.code, 1);
    assert.equal(gone.err, "nagare topic: topic orders.eu not found\n");
    assert.equal((await run("topic", "rm", "orders.eu")).code, 1);
    assert.doesNotMatch((await run("topic", "ls")).out, /orders/);
  });

  test("topic producers: each partition's idempotent and transactional producers, an open transaction's start, as kafka-transactions.sh describe-producers", async () => {
    assert.equal((await run("topic", "create", "ledger", "--partitions", "2")).code, 0);
    const none = await run("topic", "producers", "ledger");
    assert.deepEqual([none.code, none.out], [0, "No producers of ledger\n"]);
    const kafka = h.kafka();
    const idempotent = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    const txnal = kafka.producer({ idempotent: true, maxInFlightRequests: 1, transactionalId: "cli-ledger" });
    await Promise.all([idempotent.connect(), txnal.connect()]);
    try {
      await idempotent.send({ topic: "ledger", acks: -1, messages: [{ partition: 0, value: "a" }, { partition: 0, value: "b" }] });
      const tx = await txnal.transaction();
      await tx.send({ topic: "ledger", messages: [{ partition: 1, value: "open" }] });
      const all = await run("topic", "producers", "ledger", "--json");
      assert.equal(all.code, 0, all.err);
      const rows = (JSON.parse(all.out) as Array<{ partition: number; lastSequence: number; coordinatorEpoch: number; txnStartOffset: number }>).map((r) => [r.partition, r.lastSequence, r.coordinatorEpoch, r.txnStartOffset]);
      assert.deepEqual(rows, [
        [0, 1, -1, -1],
        [1, 0, -1, 0],
      ]);
      const one = await run("topic", "producers", "ledger", "--partition", "1");
      assert.equal(one.code, 0, one.err);
      const lines = one.out.trim().split("\n");
      assert.match(lines[0], /^PARTITION\s+PRODUCER-ID\s+EPOCH\s+LAST-SEQUENCE\s+LAST-TIMESTAMP\s+COORDINATOR-EPOCH\s+TXN-START-OFFSET$/);
      assert.equal(lines.length, 2);
      assert.match(lines[1], /^1\s+\d+\s+0\s+0\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+-1\s+0$/);
      await tx.abort();
    } finally {
      await Promise.all([idempotent.disconnect(), txnal.disconnect()]);
    }
    const missing = await run("topic", "producers", "nobody");
    assert.equal(missing.code, 1);
    assert.match(missing.err, /topic nobody not found/);
    const badPartition = await run("topic", "producers", "ledger", "--partition", "9");
    assert.equal(badPartition.code, 1);
    assert.match(badPartition.err, /topic ledger has no partition 9/);
  });

  test("group ls and describe: members, assignments, committed offsets and lag", async () => {
    const topic = "cli.lag";
    assert.equal((await run("topic", "create", topic, "--partitions", "2")).code, 0);
    const producer = h.kafka().producer();
    await producer.connect();
    const produce = (partition: number, n: number): Promise<unknown> =>
      producer.send({ topic, acks: -1, messages: Array.from({ length: n }, (_, i) => ({ partition, value: `p${partition}-${i}` })) });
    await produce(0, 4);
    await produce(1, 2);

    // A short fetch wait: disconnect waits for the fetch in flight, 5 s by default.
    const consumer = h.kafka().consumer({ groupId: "cli-readers", sessionTimeout: 10_000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    let seen = 0;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ autoCommit: false, eachMessage: async () => void seen++ });
      await waitUntil(() => seen === 6, "the group to read all six records", 20_000);

      // A member holds both partitions; nothing is committed yet.
      const live = await run("group", "describe", "cli-readers");
      assert.equal(live.code, 0, live.err);
      assert.match(live.out, /^state\s+Stable$/m);
      assert.match(live.out, /^protocol type\s+consumer$/m);
      const member = /^(nagare-test-\S+)\s+nagare-test\s+\S+\s+cli\.lag:0,1$/m.exec(live.out);
      assert.ok(member, `one member holding both partitions:\n${live.out}`);
      assert.match(live.out, new RegExp(`^cli\\.lag\\s+0\\s+-\\s+4\\s+-\\s+${member[1]}$`, "m"));
      assert.match(live.out, new RegExp(`^cli\\.lag\\s+1\\s+-\\s+2\\s+-\\s+${member[1]}$`, "m"));

      await consumer.commitOffsets([
        { topic, partition: 0, offset: "3" },
        { topic, partition: 1, offset: "2" },
      ]);
    } finally {
      await consumer.disconnect();
    }
    await produce(1, 3);
    await producer.disconnect();

    const ls = await run("group", "ls");
    assert.equal(ls.code, 0, ls.err);
    assert.match(ls.out, /^GROUP\s+STATE\s+PROTOCOL-TYPE$/m);
    assert.match(ls.out, /^cli-readers\s+Empty\s+consumer$/m);

    const idle = await run("group", "describe", "cli-readers");
    assert.equal(idle.code, 0, idle.err);
    assert.match(idle.out, /^No active members$/m);
    assert.match(idle.out, /^cli\.lag\s+0\s+3\s+4\s+1\s+-$/m);
    assert.match(idle.out, /^cli\.lag\s+1\s+2\s+5\s+3\s+-$/m);
    const parsed = JSON.parse((await run("group", "describe", "cli-readers", "--json")).out) as { state: string; members: unknown[]; partitions: unknown[] };
    assert.equal(parsed.state, "Empty");
    assert.deepEqual(parsed.members, []);
    assert.deepEqual(parsed.partitions, [
      { topic, partition: 0, committed: 3, logEnd: 4, lag: 1, owner: null },
      { topic, partition: 1, committed: 2, logEnd: 5, lag: 3, owner: null },
    ]);

    const unknown = await run("group", "describe", "no-such-group");
    assert.equal(unknown.code, 1);
    assert.equal(unknown.err, "nagare group: group no-such-group not found\n");
  });

  test("topic alter adds partitions and sets or resets configs, leaving the others; a smaller count is refused", async () => {
    const topic = "cli.alter";
    assert.equal((await run("topic", "create", topic, "--config", "retention.bytes=1048576")).code, 0);
    const grown = await run("topic", "alter", topic, "--partitions", "3", "--config", "retention.ms=60000");
    assert.equal(grown.code, 0, grown.err);
    assert.equal(grown.out, "Topic cli.alter configs altered: retention.ms=60000\nTopic cli.alter now has 3 partitions\n");
    let info = await run("topic", "describe", topic);
    assert.match(info.out, /^Topic cli\.alter: 3 partitions$/m);
    assert.match(info.out, /^retention\.ms\s+60000\s+topic$/m);
    assert.match(info.out, /^retention\.bytes\s+1048576\s+topic$/m, "a config not named stays as it was");

    const reset = await run("topic", "alter", topic, "--delete-config", "retention.bytes", "--json");
    assert.equal(reset.code, 0, reset.err);
    assert.deepEqual(JSON.parse(reset.out), { topic, configs: { "retention.bytes": null } });
    info = await run("topic", "describe", topic);
    assert.match(info.out, /^retention\.bytes\s+-1\s+default$/m);
    assert.match(info.out, /^retention\.ms\s+60000\s+topic$/m);

    const shrink = await run("topic", "alter", topic, "--partitions", "2");
    assert.equal(shrink.code, 1);
    assert.equal(shrink.err, "nagare topic: Topic currently has 3 partitions, which is higher than the requested 2. (INVALID_PARTITIONS)\n");
    const archive = await run("topic", "alter", topic, "--config", "cleanup.policy=archive");
    assert.equal(archive.code, 1);
    assert.match(archive.err, /Invalid value archive for configuration cleanup\.policy.*INVALID_CONFIG/);
    // A refused config stops the partitions given with it: those could not be taken back.
    const half = await run("topic", "alter", topic, "--partitions", "6", "--config", "retention.ms=-5");
    assert.equal(half.code, 1);
    assert.match(half.err, /retention\.ms: -5 .*INVALID_CONFIG/);
    const nowhere = await run("topic", "alter", "cli.nowhere", "--partitions", "2");
    assert.deepEqual([nowhere.code, nowhere.err], [1, "nagare topic: topic cli.nowhere not found\n"]);
    assert.match((await run("topic", "describe", topic)).out, /^Topic cli\.alter: 3 partitions$/m, "refusals changed nothing");
  });

  test("group reset-offsets and rm, as kafka-consumer-groups.sh: refused while members are in, a plan unless --execute", async () => {
    const topic = "cli.reset";
    const groupId = "cli-resetters";
    assert.equal((await run("topic", "create", topic, "--partitions", "2")).code, 0);
    const producer = h.kafka().producer();
    await producer.connect();
    const produce = (partition: number, n: number): Promise<unknown> =>
      producer.send({ topic, acks: -1, messages: Array.from({ length: n }, (_, i) => ({ partition, value: `p${partition}-${i}` })) });
    await produce(0, 5);
    await produce(1, 3);
    // A time after those records: --to-datetime finds the first record at or after it.
    const between = Date.now() + 1;
    await waitUntil(() => Date.now() > between, "the clock to pass the boundary", 1000);
    await produce(0, 2);
    await producer.disconnect();

    const consumer = h.kafka().consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 300, maxWaitTimeInMs: 100 });
    let seen = 0;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ autoCommit: false, eachMessage: async () => void seen++ });
      await waitUntil(() => seen === 10, "the group to read every record", 20_000);
      await consumer.commitOffsets([
        { topic, partition: 0, offset: "6" },
        { topic, partition: 1, offset: "3" },
      ]);
      const busy = await run("group", "reset-offsets", groupId, "--all-topics", "--to-earliest", "--execute");
      assert.equal(busy.code, 1);
      assert.equal(busy.err, `nagare group: Assignments can only be reset if the group '${groupId}' is inactive, but the current state is Stable.\n`);
      const rm = await run("group", "rm", groupId);
      assert.equal(rm.code, 1);
      assert.match(rm.err, /has members: stop them first \(NON_EMPTY_GROUP\)/);
      const rmOffsets = await run("group", "rm", groupId, "--topic", topic);
      assert.equal(rmOffsets.code, 1);
      assert.match(rmOffsets.out, /^cli\.reset\s+0\s+GROUP_SUBSCRIBED_TO_TOPIC$/m);
      assert.match(rmOffsets.err, /2 partitions kept their offsets/);
    } finally {
      await consumer.disconnect();
    }

    const committed = async (): Promise<string> => {
      const d = JSON.parse((await run("group", "describe", groupId, "--json")).out) as { partitions: Array<{ partition: number; committed: number | null }> };
      return d.partitions.map((p) => `${p.partition}=${p.committed ?? "-"}`).join(" ");
    };
    assert.equal(await committed(), "0=6 1=3");

    const plan = await run("group", "reset-offsets", groupId, "--all-topics", "--to-earliest");
    assert.equal(plan.code, 0, plan.err);
    assert.equal(plan.out, "TOPIC      PARTITION  CURRENT-OFFSET  NEW-OFFSET\ncli.reset  0          6               0\ncli.reset  1          3               0\n");
    assert.equal(plan.err, "nagare group: a plan only, nothing changed (--execute applies it)\n");
    const dry = await run("group", "reset-offsets", groupId, "--all-topics", "--to-earliest", "--dry-run");
    assert.deepEqual([dry.out, dry.err], [plan.out, ""]);
    assert.equal(await committed(), "0=6 1=3", "a plan changes nothing");

    const reset = async (...argv: string[]): Promise<string> => {
      const r = await run("group", "reset-offsets", groupId, ...argv, "--execute", "--json");
      assert.equal(r.code, 0, r.err);
      assert.equal((JSON.parse(r.out) as { executed: boolean }).executed, true);
      return committed();
    };
    assert.equal(await reset("--all-topics", "--to-earliest"), "0=0 1=0");
    assert.equal(await reset("--topic", `${topic}:0`, "--shift-by", "2"), "0=2 1=0");
    assert.equal(await reset("--topic", `${topic}:0`, "--shift-by", "-5"), "0=0 1=0", "kept at the earliest offset");
    assert.equal(await reset("--topic", topic, "--to-offset", "100"), "0=7 1=3", "kept at each partition's latest offset");
    assert.equal(await reset("--topic", topic, "--to-datetime", new Date(between).toISOString()), "0=5 1=3", "p1 has nothing that recent: its latest");
    assert.equal(await reset("--topic", `${topic}:1`, "--to-earliest"), "0=5 1=0");
    assert.equal(await reset("--all-topics", "--to-latest"), "0=7 1=3");

    const rmOne = await run("group", "rm", groupId, "--topic", `${topic}:1`);
    assert.equal(rmOne.code, 0, rmOne.err);
    assert.equal(rmOne.out, "TOPIC      PARTITION  STATUS\ncli.reset  1          deleted\n");
    assert.equal(await committed(), "0=7");
    const shiftNone = await run("group", "reset-offsets", groupId, "--topic", `${topic}:1`, "--shift-by", "1");
    assert.deepEqual([shiftNone.code, shiftNone.err], [1, "nagare group: cannot shift the offset of cli.reset:1: the group has committed none there\n"]);

    // A group nobody has used yet: its offsets can be set before it starts, as Kafka allows.
    const fresh = await run("group", "reset-offsets", "cli-fresh", "--topic", topic, "--to-latest", "--execute");
    assert.equal(fresh.code, 0, fresh.err);
    assert.match((await run("group", "describe", "cli-fresh")).out, /^cli\.reset\s+1\s+3\s+3\s+0\s+-$/m);

    const gone = await run("group", "rm", groupId);
    assert.deepEqual([gone.code, gone.out], [0, "Group cli-resetters deleted\n"]);
    assert.equal((await run("group", "describe", groupId)).err, `nagare group: group ${groupId} not found\n`);
    const again = await run("group", "rm", groupId);
    assert.deepEqual([again.code, again.err], [1, `nagare group: group ${groupId} not found\n`]);
  });

  test("usage errors exit 2 without connecting; --help exits 0", async () => {
    const port = await closedPort();
    const nowhere = `127.0.0.1:${port}`;
    for (const [group, ...argv] of [
      ["topic"],
      ["topic", "frobnicate"],
      ["topic", "create"],
      ["topic", "create", "t", "--partitions", "zero"],
      ["topic", "create", "t", "--config", "retention.ms"],
      ["topic", "describe", "a", "b"],
      ["group", "describe"],
      ["group", "ls", "--partitions", "2"],
      ["group", "ls", "--execute"],
      ["topic", "ls", "--partitions", "2"],
      ["topic", "alter", "t"],
      ["topic", "alter", "t", "--partitions", "0"],
      ["group", "reset-offsets", "g", "--to-earliest"],
      ["group", "reset-offsets", "g", "--all-topics"],
      ["group", "reset-offsets", "g", "--all-topics", "--topic", "t", "--to-earliest"],
      ["group", "reset-offsets", "g", "--all-topics", "--to-earliest", "--to-latest"],
      ["group", "reset-offsets", "g", "--all-topics", "--shift-by", "two"],
      ["group", "reset-offsets", "g", "--all-topics", "--to-offset", "-1"],
      ["group", "reset-offsets", "g", "--all-topics", "--to-datetime", "yesterday"],
      ["group", "reset-offsets", "g", "--all-topics", "--to-earliest", "--dry-run", "--execute"],
      ["group", "rm", "g", "--topic", "t:x"],
    ] as Array<[KafkaGroup, ...string[]]>) {
      const r = await runAt(nowhere, group, argv);
      assert.equal(r.code, 2, `${group} ${argv.join(" ")}: ${r.err}`);
      assert.match(r.err, new RegExp(`Usage: nagare ${group}`));
    }
    const bad = await runAt("no-port", "topic", ["ls"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--bootstrap must be host:port/);
    for (const group of ["topic", "group"] as const) {
      const help = await runAt(null, group, ["--help"]);
      assert.equal(help.code, 0);
      assert.match(help.out, /-b, --bootstrap <host:port>/);
    }
    // "configs nagare takes" names every topic config the broker takes, compaction's too.
    const topicHelp = (await runAt(null, "topic", ["--help"])).out;
    const missing = [...TOPIC_CONFIG_NAMES].filter((name) => !new RegExp(`(?<![\\w.])${name.replaceAll(".", "\\.")}(?![\\w.])`).test(topicHelp));
    assert.deepEqual(missing, [], "topic configs missing from nagare topic --help");
    assert.match(topicHelp, /cleanup\.policy=delete\|compact/);
  });

  test("a listener that requires SASL: the error says the commands speak neither TLS nor SASL", async () => {
    const storeDir = mkdtempSync(join(tmpdir(), "nagare-cli-kafka-sasl-"));
    const srv = await startServer({ port: 0, jetstream: true, storeDir, kafka: { port: 0 }, authorization: { users: [{ user: "app", password: "pw" }] } });
    try {
      for (const group of ["topic", "group"] as const) {
        const r = await runAt(`127.0.0.1:${srv.kafkaPort}`, group, ["ls"]);
        assert.equal(r.code, 1, r.err);
        assert.match(r.err, /closed the connection while answering \w+ v\d+ \(.*TLS or SASL.*\)/, r.err);
      }
    } finally {
      await srv.close();
      rmSync(storeDir, { recursive: true, force: true });
    }
  });

  test("an unreachable bootstrap fails at once with exit 1 and says why", async () => {
    const port = await closedPort();
    const started = Date.now();
    const r = await runAt(`127.0.0.1:${port}`, "topic", ["ls"]);
    assert.equal(r.code, 1);
    assert.equal(r.err, `nagare topic: cannot reach Kafka listener at 127.0.0.1:${port}: ECONNREFUSED\n`);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });
});

describe("the CLI's Kafka client", () => {
  /** A listener answering each request frame with `answer`; stopped by the returned close. */
  async function fakeBroker(answer: (socket: Socket, frame: Reader) => void): Promise<{ address: string; close: () => Promise<void> }> {
    const sockets = new Set<Socket>();
    const srv = createServer((s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
      // Requests here are small and sent one at a time: a chunk is a whole frame.
      s.on("data", (d: Buffer) => answer(s, new Reader(d, 4)));
    });
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const { port } = srv.address() as { port: number };
    return {
      address: `127.0.0.1:${port}`,
      close: () => {
        for (const s of sockets) s.destroy();
        return new Promise((resolve) => srv.close(() => resolve()));
      },
    };
  }

  /** An ApiVersions v0 answer advertising Metadata v0 to v3 only. */
  function oldBroker(s: Socket, r: Reader): void {
    const apiKey = r.i16();
    r.i16();
    const correlationId = r.i32();
    if (apiKey !== ApiKey.ApiVersions) return void s.destroy();
    const w = new Writer();
    const at = w.reserveI32();
    w.i32(correlationId).i16(0).array([[ApiKey.Metadata, 0, 3]], (w, [k, min, max]) => w.i16(k).i16(min).i16(max));
    w.patchI32(at, w.pos - 4);
    s.write(w.result());
  }

  const cases: Array<[string, (s: Socket, r: Reader) => void, RegExp]> = [
    ["a response over the size limit", (s) => s.write(Buffer.from([0x7f, 0xff, 0xff, 0xff])), /response of 2147483647 bytes from .* \(limit 104857600\)/],
    ["a broker that never answers", () => undefined, /no answer from .* to ApiVersions within 300 ms/],
    ["a broker that closes the connection", (s) => s.destroy(), /closed the connection while answering ApiVersions v0/],
    ["a broker without the version needed", oldBroker, /does not support Metadata v6 \(it supports it v0 to v3\)/],
  ];
  for (const [what, answer, message] of cases) {
    test(`${what} fails the request with a clear error`, async () => {
      const b = await fakeBroker(answer);
      try {
        const client = KafkaClient.connect(b.address, { connectTimeoutMs: 300, requestTimeoutMs: 300 }).then(async (c) => {
          try {
            return await c.request(ApiKey.Metadata, 6, (w) => w.arrayLength(-1).bool(false));
          } finally {
            c.close();
          }
        });
        await assert.rejects(client, (err: Error) => err instanceof KafkaClientError && message.test(err.message));
      } finally {
        await b.close();
      }
    });
  }
});
