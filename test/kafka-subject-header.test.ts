/**
 * A record's Nats-Subject header must be a subject a NATS client could
 * publish to: a wildcard (`orders.*`, `orders.>`) or an empty token was
 * stored as the message's subject, where nats-server refuses such a
 * publish ("Invalid Publish Subject") and no stream holds one. KafkaJS.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import kafkajs from "kafkajs";
import { connect } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";

const { Kafka, logLevel } = kafkajs;

describe("Nats-Subject of a produced record", () => {
  let dir: string;
  let srv: NagareServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-ksubj-"));
    srv = await startServer({ port: 0, jetstream: true, storeDir: dir, kafka: { port: 0 } });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a wildcard or an empty token is refused INVALID_RECORD; a literal subject of the topic is stored", async () => {
    const nc = await connect({ servers: srv.url });
    try {
      const made = (await nc.request("$JS.API.STREAM.CREATE.ORDERS", JSON.stringify({ name: "ORDERS", subjects: ["orders.>"] }))).json<{ error?: unknown }>();
      assert.equal(made.error, undefined);
      const producer = new Kafka({ clientId: "ksubj", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
      await producer.connect();
      try {
        for (const subject of ["orders.*", "orders.>", "orders..x", "orders.a.*"]) {
          await assert.rejects(producer.send({ topic: "ORDERS", messages: [{ value: "x", headers: { "Nats-Subject": subject } }] }), (err: Error & { type?: string }) => {
            assert.equal(err.type, "INVALID_RECORD", `${subject}: ${err.message}`);
            return true;
          });
        }
        await producer.send({ topic: "ORDERS", messages: [{ value: "ok", headers: { "Nats-Subject": "orders.a" } }] });
      } finally {
        await producer.disconnect();
      }
      const info = (await nc.request("$JS.API.STREAM.INFO.ORDERS", JSON.stringify({ subjects_filter: ">" }))).json<{ state: { messages: number; subjects: Record<string, number> } }>();
      assert.deepEqual(info.state.subjects, { "orders.a": 1 });
    } finally {
      await nc.close();
    }
  });
});
