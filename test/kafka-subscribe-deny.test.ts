/**
 * A subscribe deny list that only overlaps a topic's subjects: a NATS
 * subscription to `orders.>` under deny `orders.secret` is made and is not
 * delivered `orders.secret` (as nats-server 2.9.10 filters it), so a Kafka
 * reader with those permissions, which would get every record of the
 * topic, is refused it (TOPIC_AUTHORIZATION_FAILED) rather than handed
 * the denied records. KafkaJS over SASL PLAIN, a NATS client beside it.
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

describe("Kafka fetch under a subscribe deny list", () => {
  let dir: string;
  let srv: NagareServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-kdeny-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      authorization: {
        users: [
          { user: "admin", password: "admin" },
          { user: "r", password: "r", permissions: { publish: { allow: ["orders.>", "$JS.API.>"] }, subscribe: { allow: ["orders.>", "public.>", "_INBOX.>"], deny: ["orders.secret"] } } },
        ],
      },
      kafka: { port: 0, initialRebalanceDelayMs: 0 },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const kafka = (user: string) =>
    new Kafka({ clientId: "kdeny", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, sasl: { mechanism: "plain", username: user, password: user }, retry: { retries: 0 } });

  test("the denied subject's records are not fetched; a topic the deny does not touch is", async () => {
    const nc = await connect({ servers: srv.url, user: "admin", pass: "admin" });
    try {
      for (const [name, subjects] of [["ORDERS", ["orders.>"]], ["PUBLIC", ["public.>"]]] as const) {
        const r = (await nc.request(`$JS.API.STREAM.CREATE.${name}`, JSON.stringify({ name, subjects }))).json<{ error?: unknown }>();
        assert.equal(r.error, undefined);
      }
      for (const [subject, body] of [["orders.secret", "TOPSECRET"], ["orders.public", "hello"], ["public.x", "open"]]) await nc.request(subject, body);
    } finally {
      await nc.close();
    }
    // Over NATS, r's subscription to orders.> is made and not delivered orders.secret.
    const rn = await connect({ servers: srv.url, user: "r", pass: "r" });
    try {
      const sub = rn.subscribe("orders.>");
      await rn.flush();
      const admin = await connect({ servers: srv.url, user: "admin", pass: "admin" });
      admin.publish("orders.secret", "live secret");
      admin.publish("orders.public", "live public");
      await admin.flush();
      await admin.close();
      for await (const m of sub) {
        assert.equal(m.subject, "orders.public");
        break;
      }
    } finally {
      await rn.close();
    }

    const admin = kafka("r").admin();
    await admin.connect();
    try {
      const fetchOffsets = async (topic: string) => admin.fetchTopicOffsets(topic);
      await assert.rejects(fetchOffsets("ORDERS").then(async () => consumeFirst("ORDERS")), (err: Error & { type?: string }) => {
        assert.match(`${err.type ?? ""} ${err.message}`, /TOPIC_AUTHORIZATION_FAILED|Not authorized/);
        return true;
      });
      assert.equal(await consumeFirst("PUBLIC"), "open");
    } finally {
      await admin.disconnect();
    }

    async function consumeFirst(topic: string): Promise<string> {
      const consumer = kafka("r").consumer({ groupId: `g-${topic}`, sessionTimeout: 10_000, heartbeatInterval: 500 });
      await consumer.connect();
      try {
        await consumer.subscribe({ topic, fromBeginning: true });
        return await new Promise<string>((resolve, reject) => {
          consumer.on(consumer.events.CRASH, (e) => reject(e.payload.error));
          void consumer.run({ eachMessage: async ({ message }) => resolve(message.value?.toString() ?? "") }).catch(reject);
        });
      } finally {
        await consumer.disconnect();
      }
    }
  });
});
