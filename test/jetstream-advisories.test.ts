/**
 * JetStream advisories and metrics (`$JS.EVENT.>`) with the official v3
 * client: the subjects and JSON shapes nats-server 2.9.10 publishes for
 * stream and consumer lifecycle, API calls, terminated, NAKed and
 * undeliverable messages, and sampled acks.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startJs, type JsHarness } from "./helpers/js.js";
import { waitUntil } from "./helpers/clients.js";

const MS = 1_000_000;

type Event = { subject: string; body: Record<string, unknown> };

describe("JetStream advisories", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let js: JetStreamClient;
  let watcher: NatsConnection;
  const events: Event[] = [];

  before(async () => {
    h = await startJs();
    watcher = await connect({ servers: h.srv.url });
    const sub = watcher.subscribe("$JS.EVENT.>");
    void (async () => {
      for await (const m of sub) events.push({ subject: m.subject, body: m.json() });
    })();
    await watcher.flush();
    jsm = await jetstreamManager(h.nc);
    js = jetstream(h.nc);
  });
  after(async () => {
    await watcher.close();
    await h.close();
  });

  const find = (subject: string): Event[] => events.filter((e) => e.subject === subject);
  async function waitFor(subject: string, n = 1): Promise<Event[]> {
    await waitUntil(() => find(subject).length >= n, `${n} event(s) on ${subject}`);
    return find(subject);
  }

  /** Every event carries nats-server's envelope: type, a NUID-length id, an RFC 3339 time. */
  function envelope(e: Event, type: string): void {
    assert.equal(e.body.type, type);
    assert.match(e.body.id as string, /^[0-9A-Za-z]{22}$/);
    assert.ok(!Number.isNaN(Date.parse(e.body.timestamp as string)));
  }

  test("stream and consumer lifecycle", async () => {
    await jsm.streams.add({ name: "ADV", subjects: ["adv.>"] });
    await jsm.streams.update("ADV", { subjects: ["adv.>"], max_msgs: 10 });
    await jsm.consumers.add("ADV", { durable_name: "C", ack_policy: AckPolicy.Explicit });
    await jsm.consumers.delete("ADV", "C");
    await jsm.streams.delete("ADV");
    const created = (await waitFor("$JS.EVENT.ADVISORY.STREAM.CREATED.ADV"))[0];
    envelope(created, "io.nats.jetstream.advisory.v1.stream_action");
    assert.deepEqual([created.body.stream, created.body.action], ["ADV", "create"]);
    assert.equal((await waitFor("$JS.EVENT.ADVISORY.STREAM.UPDATED.ADV"))[0].body.action, "modify");
    const cc = (await waitFor("$JS.EVENT.ADVISORY.CONSUMER.CREATED.ADV.C"))[0];
    envelope(cc, "io.nats.jetstream.advisory.v1.consumer_action");
    assert.deepEqual([cc.body.stream, cc.body.consumer, cc.body.action], ["ADV", "C", "create"]);
    assert.equal((await waitFor("$JS.EVENT.ADVISORY.CONSUMER.DELETED.ADV.C"))[0].body.action, "delete");
    assert.equal((await waitFor("$JS.EVENT.ADVISORY.STREAM.DELETED.ADV"))[0].body.action, "delete");
  });

  test("stream and consumer lifecycle is logged with names; ephemeral consumers at debug level only", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-log-"));
    const logFile = join(dir, "server.log");
    const l = await startJs({ server: { noLog: false, logFile } });
    try {
      const ljsm = await jetstreamManager(l.nc);
      await ljsm.streams.add({ name: "LOGGED", subjects: ["logged.>"] });
      await ljsm.streams.update("LOGGED", { subjects: ["logged.>"], max_msgs: 5 });
      await ljsm.consumers.add("LOGGED", { durable_name: "D", ack_policy: AckPolicy.Explicit });
      await ljsm.consumers.update("LOGGED", "D", { description: "changed" });
      await ljsm.consumers.add("LOGGED", { ack_policy: AckPolicy.None });
      await ljsm.consumers.delete("LOGGED", "D");
      await ljsm.streams.delete("LOGGED");
      // The logger writes off the event loop: closing the server flushes it.
      await l.srv.close();
      const lines = readFileSync(logFile, "utf8")
        .split("\n")
        .filter((line) => line.includes("LOGGED"))
        .map((line) => line.replace(/^\[\d+\] \S+ \S+ /, ""));
      assert.deepEqual(lines, [
        '[INF] Created stream "LOGGED" (subjects logged.>, file storage, limits retention)',
        '[INF] Updated stream "LOGGED" (subjects logged.>, file storage, limits retention)',
        '[INF] Created durable consumer "D" on stream "LOGGED"',
        '[INF] Updated durable consumer "D" on stream "LOGGED"',
        '[INF] Deleted durable consumer "D" on stream "LOGGED"',
        '[INF] Deleted stream "LOGGED"',
      ]);
    } finally {
      await l.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("every API call is audited with its request and response", async () => {
    await jsm.streams.add({ name: "AUD", subjects: ["aud.>"] });
    await jsm.streams.info("NOPE").catch(() => undefined);
    const audits = await waitFor("$JS.EVENT.ADVISORY.API", 2);
    const create = audits.find((e) => e.body.subject === "$JS.API.STREAM.CREATE.AUD")!;
    envelope(create, "io.nats.jetstream.advisory.v1.api_audit");
    assert.equal(create.body.server, h.srv.broker.serverId);
    assert.equal((create.body.client as { acc: string }).acc, "$G");
    assert.equal(JSON.parse(create.body.request as string).name, "AUD");
    assert.equal(JSON.parse(create.body.response as string).type, "io.nats.jetstream.api.v1.stream_create_response");
    await waitUntil(() => find("$JS.EVENT.ADVISORY.API").some((e) => e.body.subject === "$JS.API.STREAM.INFO.NOPE"), "the failed call's audit");
    const failed = find("$JS.EVENT.ADVISORY.API").find((e) => e.body.subject === "$JS.API.STREAM.INFO.NOPE")!;
    assert.equal(failed.body.request, undefined, "an empty request is left out");
    assert.equal(JSON.parse(failed.body.response as string).error.err_code, 10059);
  });

  test("terminated, NAKed and undeliverable messages, and sampled acks", async () => {
    await jsm.streams.add({ name: "DLV", subjects: ["dlv.>"] });
    for (let i = 0; i < 4; i++) await js.publish("dlv.a", `${i}`);
    await jsm.consumers.add("DLV", { durable_name: "C", ack_policy: AckPolicy.Explicit, max_deliver: 2, ack_wait: 200 * MS, sample_freq: "100%" });
    const c = await js.consumers.get("DLV", "C");
    const msgs: JsMsg[] = [];
    for await (const m of await c.fetch({ max_messages: 4, expires: 2000 })) msgs.push(m);
    msgs[0].term();
    msgs[1].nak();
    await msgs[2].ackAck();
    // msgs[3] is never acked: delivered again after 200 ms, then given up at max_deliver 2.
    const term = (await waitFor("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.DLV.C"))[0];
    envelope(term, "io.nats.jetstream.advisory.v1.terminated");
    assert.deepEqual(
      { ...term.body, type: undefined, id: undefined, timestamp: undefined },
      { type: undefined, id: undefined, timestamp: undefined, stream: "DLV", consumer: "C", consumer_seq: 1, stream_seq: 1, deliveries: 1 },
    );
    const nak = (await waitFor("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.DLV.C"))[0];
    envelope(nak, "io.nats.jetstream.advisory.v1.nak");
    assert.deepEqual([nak.body.consumer_seq, nak.body.stream_seq, nak.body.deliveries], [2, 2, 1]);
    const ack = (await waitFor("$JS.EVENT.METRIC.CONSUMER.ACK.DLV.C"))[0];
    envelope(ack, "io.nats.jetstream.metric.v1.consumer_ack");
    assert.deepEqual([ack.body.consumer_seq, ack.body.stream_seq, ack.body.deliveries], [3, 3, 1]);
    assert.ok((ack.body.ack_time as number) >= 0);
    // Keep pulling until the never-acked message has been delivered twice and given up.
    for (let round = 0; round < 5 && find("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DLV.C").length === 0; round++) {
      for await (const m of await c.fetch({ max_messages: 4, expires: 1000 })) if (m.seq !== 4) m.ack();
    }
    const max = (await waitFor("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DLV.C"))[0];
    envelope(max, "io.nats.jetstream.advisory.v1.max_deliver");
    assert.deepEqual([max.body.stream, max.body.consumer, max.body.stream_seq, max.body.deliveries], ["DLV", "C", 4, 2]);
  });
});
