/**
 * The Kafka commands (`nagare topic|group`) against an in-process broker's
 * Kafka listener, with kafkajs producing records and running a consumer
 * group: what they print for people and with --json, and their exit codes;
 * and the CLI's Kafka client against a scripted broker that misbehaves.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { runKafkaCommand, type KafkaGroup } from "../src/cli/kafka-commands.js";
import { KafkaClient, KafkaClientError } from "../src/cli/kafka-client.js";
import { Reader, Writer } from "../src/protocols/kafka/codec.js";
import { ApiKey } from "../src/protocols/kafka/api.js";
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
    const badConfig = await run("topic", "create", "compacted", "--config", "cleanup.policy=compact");
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.err, /cleanup\.policy compact is not supported/);
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
    assert.match(info.out, /^0\s+0\s+0\s+3\s+3$/m);
    assert.match(info.out, /^1\s+0\s+0\s+0\s+0$/m);
    assert.match(info.out, /^2\s+0\s+0\s+1\s+1$/m);
    assert.match(info.out, /^retention\.ms\s+3600000\s+topic$/m);
    assert.match(info.out, /^cleanup\.policy\s+delete\s+default$/m);
    const parsed = JSON.parse((await run("topic", "describe", "orders.eu", "--json")).out) as {
      partitions: Array<{ partition: number; leader: number; earliest: number; latest: number }>;
      configs: Array<{ name: string; value: string }>;
    };
    assert.deepEqual(parsed.partitions, [
      { partition: 0, leader: 0, earliest: 0, latest: 3 },
      { partition: 1, leader: 0, earliest: 0, latest: 0 },
      { partition: 2, leader: 0, earliest: 0, latest: 1 },
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
