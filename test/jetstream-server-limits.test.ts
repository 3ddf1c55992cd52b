/**
 * The server's own JetStream limits (nats-server's `jetstream {
 * max_mem, max_file }`), over every account, judged by the official v3
 * client and KafkaJS: stream reservations across accounts are refused with
 * 10028/10047, a publish once the streams hold more than the limit gets
 * `503 10023 insufficient resources` (a Kafka produce
 * KAFKA_STORAGE_ERROR) until space is freed, account limits that do not
 * fit stop the start, and /varz shows the limits.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { v3Clients } from "./helpers/clients.js";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { Kafka, logLevel } from "kafkajs";
import { startServer, type NagareServer } from "../src/index.js";
import { OptionsError } from "../src/core/options.js";
import { apiErrorCode } from "./helpers/js.js";
import { runNagare } from "./helpers/cli.js";

const MAX_FILE = 64 * 1024;
const MAX_MEM = 16 * 1024;
let dir: string;
let srv: NagareServer;
const clients = v3Clients();
const as = (user: string): Promise<NatsConnection> => clients.open(srv.url, { user, pass: user });

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "nagare-jslimits-"));
  srv = await startServer({
    port: 0,
    httpPort: 0,
    jetstream: true,
    storeDir: dir,
    jetstreamMaxMemory: MAX_MEM,
    jetstreamMaxStorage: MAX_FILE,
    kafka: { host: "127.0.0.1", port: 0 },
    authorization: { users: [{ user: "g", password: "g" }] },
    accounts: { A: { users: [{ user: "a", password: "a" }], jetstream: true }, B: { users: [{ user: "b", password: "b" }], jetstream: true } },
  });
});

after(async () => {
  await clients.closeAll();
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

test("max_bytes reservations of every account share the server's limit: what does not fit is refused with 10047 / 10028", async () => {
  const jsmA = await jetstreamManager(await as("a"));
  const jsmB = await jetstreamManager(await as("b"));
  assert.equal(await apiErrorCode(jsmA.streams.add({ name: "huge", subjects: ["huge"], max_bytes: MAX_FILE + 1 })), 10047);
  await jsmA.streams.add({ name: "half", subjects: ["half"], max_bytes: MAX_FILE / 2 });
  // Another account's reservation counts against the same server.
  assert.equal(await apiErrorCode(jsmB.streams.add({ name: "more", subjects: ["more"], max_bytes: MAX_FILE / 2 + 1 })), 10047);
  await jsmB.streams.add({ name: "rest", subjects: ["rest"], max_bytes: MAX_FILE / 2 });
  // An update that grows a reservation past the limit is refused; one that keeps it is not.
  const info = await jsmA.streams.info("half");
  assert.equal(await apiErrorCode(jsmA.streams.update("half", { ...info.config, max_bytes: MAX_FILE / 2 + 1 })), 10047);
  await jsmA.streams.update("half", { ...info.config, max_msgs: 1000 });
  // Memory streams against max_mem.
  assert.equal(await apiErrorCode(jsmB.streams.add({ name: "mem", subjects: ["mem"], storage: StorageType.Memory, max_bytes: MAX_MEM + 1 })), 10028);
  for (const [jsm, name] of [[jsmA, "half"], [jsmB, "rest"]] as const) await jsm.streams.delete(name);
});

test("a publish once the streams hold more than max_file gets 503 10023 until space is freed; a Kafka produce KAFKA_STORAGE_ERROR", async () => {
  const ncA = await as("a");
  const jsmA = await jetstreamManager(ncA);
  const jsA = jetstream(ncA);
  const jsmB = await jetstreamManager(await as("b"));
  const jsB = jetstream(await as("b"));
  await jsmA.streams.add({ name: "fill", subjects: ["fill"] });
  await jsmB.streams.add({ name: "other", subjects: ["other"] });
  const payload = new Uint8Array(4096);
  let stored = 0;
  let refused: unknown = null;
  // The limit counts every account: A fills it, and it is A's publish past it that is refused.
  for (let i = 0; i < 64 && refused === null; i++) {
    try {
      await jsA.publish("fill", payload);
      stored++;
    } catch (err) {
      refused = err;
    }
  }
  assert.ok(refused !== null, "refused before 64 publishes of 4 KiB");
  assert.ok(stored * 4096 >= MAX_FILE, `refused only once the streams held more than the limit (${stored} stored)`);
  assert.equal(await apiErrorCode(Promise.reject(refused)), 10023);
  assert.match(String((refused as Error).message), /insufficient resources/);
  // B's stream, on the same server, is refused too.
  assert.equal(await apiErrorCode(jsB.publish("other", payload)), 10023);

  // The Kafka door serves $G's streams: the limit is the server's, so a produce to $G's topic is refused too.
  const kafka = new Kafka({ clientId: "limits", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 0 }, sasl: { mechanism: "plain", username: "g", password: "g" } });
  const producer = kafka.producer({ allowAutoTopicCreation: true, retry: { retries: 0 } });
  await producer.connect();
  try {
    // KafkaJS's words for KAFKA_STORAGE_ERROR (retriable: as a Kafka broker with a full disk answers).
    await assert.rejects(producer.send({ topic: "full", acks: -1, messages: [{ value: "x" }] }), (err: Error & { originalError?: { type?: string } }) => err.originalError?.type === "KAFKA_STORAGE_ERROR" || /Disk error when trying to access log file/.test(err.message));
  } finally {
    await producer.disconnect();
  }

  // Space freed: publishes are taken again.
  await jsmA.streams.purge("fill");
  assert.equal((await jsB.publish("other", payload)).seq, 1);
  const varz = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/varz`)).json()) as { jetstream: { config: { max_memory: number; max_storage: number } } };
  assert.deepEqual([varz.jetstream.config.max_memory, varz.jetstream.config.max_storage], [MAX_MEM, MAX_FILE]);
});

test("accounts whose JetStream limits do not fit in the server's stop the start; the configuration file's keys are nats-server's", async () => {
  await assert.rejects(
    startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      jetstreamMaxStorage: 1000,
      accounts: { A: { users: [{ user: "a", password: "a" }], jetstream: { maxStorage: 600 } }, B: { users: [{ user: "b", password: "b" }], jetstream: { maxStorage: 600 } } },
    }),
    (err: Error) => err instanceof OptionsError && /add up to 1200 bytes, more than the server's 1000/.test(err.message),
  );
  const conf = join(dir, "limits.conf");
  writeFileSync(conf, `port: -1\njetstream { store_dir: "${join(dir, "conf-store")}", max_mem: 1M, max_file: 10MB }\n`);
  const ok = await runNagare(["server", "-c", conf, "-t"]);
  assert.equal(ok.code, 0, ok.stderr);
  writeFileSync(conf, `port: -1\njetstream { store_dir: "${join(dir, "conf-store")}", max_file: 1K }\naccounts {\n  A: { users: [ { user: a, password: a } ], jetstream: { max_file: 2K } }\n}\n`);
  const bad = await runNagare(["server", "-c", conf, "-t"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /add up to 2000 bytes, more than the server's 1000/);
});
