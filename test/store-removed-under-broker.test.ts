/**
 * A stream's files removed while the broker runs (rm -rf of the store, of a
 * stream's directory, of a segment). Writes and fdatasyncs to a removed file
 * still succeed: the broker went on acknowledging JetStream publishes and
 * Kafka produces into files gone with their last descriptor, and after a
 * restart all of it was missing without a word (nats-server 2.9.10 does the
 * same). Now the log notices (the open segment's link count after each
 * sync; its directory's identity at most a second apart), fails sticky with
 * a StorageError naming the path, and its reopen does not make a new, empty
 * log over what was lost.
 */

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { AckPolicy, jetstream, jetstreamManager, JetStreamApiError } from "@nats-io/jetstream";
import { FileLog } from "../src/store/file-log.js";
import { appendAsync } from "../src/store/log.js";
import { quarantine } from "../src/store/damage.js";
import { nodeFs } from "../src/util/fs.js";
import { startJs } from "./helpers/js.js";
import kafkajs from "kafkajs";
import { waitUntil, waitUntilAsync } from "./helpers/clients.js";

/** How long a removal may go unnoticed by a publisher: one sync (the link count), or the directory's once-a-second look. */
const NOTICED_MS = 10_000;

const { Kafka, logLevel } = kafkajs;

type Reopening = { reopenAttempts: number; io: { reopens: number }; dir: string };

describe("files removed under a running broker", () => {
  test("JetStream: rm -rf of the stream's directory refuses publishes with a storage error naming it; /healthz says why; no reopen over the loss", async () => {
    const h = await startJs({ server: { httpPort: 0 } });
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "S", subjects: ["s.>"] });
      const js = jetstream(h.nc);
      assert.equal((await js.publish("s.x", "kept")).seq, 1);
      await jsm.consumers.add("S", { durable_name: "C", ack_policy: AckPolicy.Explicit });
      const m = await (await js.consumers.get("S", "C")).next({ expires: 5000 });
      assert.ok(m !== null);
      const log = h.srv.jetstream!.streams.get("S")!.partitions[0] as unknown as Reopening;
      const streamDir = dirname(log.dir);
      rmSync(streamDir, { recursive: true, force: true });
      // The consumer's state file would make its directories again: its ack is not confirmed instead.
      assert.equal(await m!.ackAck({ timeout: 1500 }).catch(() => false), false, "a double ack is not confirmed");
      const started = Date.now();
      await assert.rejects(js.publish("s.x", "after rm"), (err: Error) => {
        assert.ok(err instanceof JetStreamApiError, String(err));
        assert.equal(err.code, 10077, err.message);
        assert.match(err.message, /storage failed .*streams\/S\/p0\/00000000000000000001\.seg was removed while open/);
        return true;
      });
      assert.ok(Date.now() - started < NOTICED_MS);
      const health = await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`);
      assert.equal(health.status, 503);
      assert.match(((await health.json()) as { error: string }).error, /'\$G > S' partition 0 refuses appends after a storage error: .*was removed while open/);
      // The reopen (after 1 s) finds the directory gone and stays failed: it neither makes it again nor takes writes.
      await waitUntil(() => log.reopenAttempts >= 1 && !existsSync(streamDir), "a reopen attempt", 15_000);
      await assert.rejects(js.publish("s.x", "after the reopen"), /storage failed/);
      assert.equal(log.io.reopens, 0);
      assert.ok(!existsSync(join(streamDir, "p0")), "no new, empty log over the lost one");
      // Nor a new definition: a meta.json alone would make the next start serve the stream empty, without a word.
      await assert.rejects(jsm.streams.update("S", { description: "edited after the rm" }));
      assert.ok(!existsSync(streamDir), "the stream's directory is not made again");
    } finally {
      await h.close();
    }
  });

  test("Kafka: a produce after rm -rf of the topic's directory is refused (KAFKA_STORAGE_ERROR), not acknowledged; /healthz says why", async () => {
    const h = await startJs({ server: { httpPort: 0, kafka: { port: 0 } } });
    const kafka = new Kafka({ clientId: "removed", brokers: [`127.0.0.1:${h.srv.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 50 } });
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    try {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: "t", numPartitions: 1 }], waitForLeaders: true });
      await admin.disconnect();
      await producer.connect();
      await producer.send({ topic: "t", acks: -1, messages: [{ value: "kept" }] });
      const log = h.srv.jetstream!.streams.get("t")!.partitions[0] as unknown as Reopening;
      rmSync(dirname(log.dir), { recursive: true, force: true });
      const started = Date.now();
      await assert.rejects(producer.send({ topic: "t", acks: -1, messages: [{ value: "after rm" }] }), (err: Error & { type?: string; cause?: { type?: string } }) => {
        assert.equal(err.type ?? err.cause?.type, "KAFKA_STORAGE_ERROR", `${err.name}: ${err.message}`);
        return true;
      });
      assert.ok(Date.now() - started < NOTICED_MS);
      const health = await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`);
      assert.equal(health.status, 503);
      assert.match(((await health.json()) as { error: string }).error, /'\$G > t' partition 0 refuses appends after a storage error: .*was removed while open/);
      assert.match(String(h.srv.jetstream!.streams.get("t")!.partitions[0].state().error), /00000000000000000001\.seg was removed while open/);
    } finally {
      await producer.disconnect();
      await h.close();
    }
  });

  test("a stream's order.map removed: the next publish is refused naming it, and the order is not written again over the loss", async () => {
    const h = await startJs({ server: { httpPort: 0, kafka: { port: 0 } } });
    const kafka = new Kafka({ clientId: "removed", brokers: [`127.0.0.1:${h.srv.kafkaPort}`], logLevel: logLevel.NOTHING });
    try {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: "ordered", numPartitions: 2 }], waitForLeaders: true });
      await admin.disconnect();
      const js = jetstream(h.nc);
      assert.equal((await js.publish("ordered", "a")).seq, 1);
      const order = join(dirname((h.srv.jetstream!.streams.get("ordered")!.partitions[0] as unknown as Reopening).dir), "order.map");
      rmSync(order);
      await assert.rejects(js.publish("ordered", "b"), /order\.map was removed while open/);
      await assert.rejects(js.publish("ordered", "c"), /order\.map was removed while open/, "sticky");
      const health = await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`);
      assert.equal(health.status, 503);
      assert.match(((await health.json()) as { error: string }).error, /order\.map was removed while open/);
      assert.ok(!existsSync(order), "not made again");
    } finally {
      await h.close();
    }
  });

  test("rm -rf of the whole store: publishes, double acks and Kafka offset commits are refused, nothing is made again, /healthz names the store", async () => {
    const h = await startJs({ server: { httpPort: 0, kafka: { port: 0 } } });
    const kafka = new Kafka({ clientId: "removed", brokers: [`127.0.0.1:${h.srv.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 50 } });
    const admin = kafka.admin();
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "S", subjects: ["s.>"] });
      await jsm.consumers.add("S", { durable_name: "C", ack_policy: AckPolicy.Explicit });
      const js = jetstream(h.nc);
      await js.publish("s.x", "one");
      const m = await (await js.consumers.get("S", "C")).next({ expires: 5000 });
      assert.ok(m !== null);
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: "t", numPartitions: 1 }], waitForLeaders: true });
      await producer.connect();
      await producer.send({ topic: "t", acks: -1, messages: [{ value: "a" }, { value: "b" }] });
      await admin.setOffsets({ groupId: "g", topic: "t", partitions: [{ partition: 0, offset: "1" }] });

      rmSync(h.storeDir, { recursive: true, force: true });
      await assert.rejects(js.publish("s.x", "two"), /storage failed .*was removed while open/);
      // Confirmed only once the consumer's state is durable: it was, in a directory made anew, before.
      const confirmed = await m!.ackAck({ timeout: 1500 }).catch(() => false);
      assert.equal(confirmed, false, "a double ack is not confirmed");
      // OffsetCommit answered with an error per partition (KafkaJS's setOffsets does not throw on those): not taken.
      await admin.setOffsets({ groupId: "g", topic: "t", partitions: [{ partition: 0, offset: "2" }] }).catch(() => undefined);
      assert.deepEqual((await admin.fetchOffsets({ groupId: "g", topics: ["t"] }))[0].partitions.map((p) => p.offset), ["1"]);
      const health = await fetch(`http://127.0.0.1:${h.srv.httpPort}/healthz`);
      assert.equal(health.status, 503);
      assert.match(((await health.json()) as { error: string }).error, /store directory .* was removed while the server ran/);
      assert.ok(!existsSync(h.storeDir), "nothing made the store directory again");
    } finally {
      await producer.disconnect();
      await admin.disconnect();
      await h.close();
    }
  });
});

describe("the file log, its files removed", () => {
  const tmp = (): string => mkdtempSync(join(tmpdir(), "nagare-removed-"));

  test("sync interval (acked per round): a directory removed and made anew refuses the next append, and the reopen stays failed", async () => {
    const root = tmp();
    const dir = join(root, "log");
    const warnings: string[] = [];
    const log = await FileLog.open({ dir, sync: "interval", reopenDelayMs: 5, onWarning: (w) => warnings.push(w) });
    try {
      for (let i = 0; i < 3; i++) await appendAsync(log, { subject: "a", data: Buffer.from(`m${i}`) });
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      await assert.rejects(appendAsync(log, { subject: "a", data: Buffer.from("lost") }), /00000000000000000001\.seg was removed while open/);
      // A reopen that made a new log would count in io.reopens (and start the attempts over).
      await waitUntil(() => (log as unknown as Reopening).reopenAttempts >= 3 || (log as unknown as Reopening).io.reopens > 0, "reopen attempts");
      assert.match(warnings.join("\n"), /reopening .* failed: .*another directory than the one opened/);
      assert.equal((log as unknown as Reopening).io.reopens, 0);
      assert.equal(log.state().lastSeq, 3, "no new log reusing sequences 1 to 3");
      await assert.rejects(appendAsync(log, { subject: "a", data: Buffer.from("refused") }), /storage failed/);
    } finally {
      await log.close().finally(() => rmSync(root, { recursive: true, force: true }));
    }
  });

  test("a directory moved away (its files still linked) is noticed within about a second, and a move back lets the reopen take writes again", async () => {
    const root = tmp();
    const dir = join(root, "log");
    const aside = join(root, "aside");
    const log = await FileLog.open({ dir, reopenDelayMs: 5 });
    try {
      await appendAsync(log, { subject: "a", data: Buffer.from("first") });
      renameSync(dir, aside);
      const started = Date.now();
      let refused: Error | null = null;
      while (refused === null && Date.now() - started < NOTICED_MS) {
        await appendAsync(log, { subject: "a", data: Buffer.from("x") }).catch((err: Error) => (refused = err));
      }
      assert.match(String(refused), /log was removed while the log was open/);
      await waitUntil(() => (log as unknown as Reopening).reopenAttempts >= 2, "reopen attempts");
      assert.equal((log as unknown as Reopening).io.reopens, 0);
      renameSync(aside, dir);
      await waitUntil(() => (log as unknown as Reopening).io.reopens === 1, "the reopen once the files are back");
      const last = log.state().lastSeq;
      assert.equal(await appendAsync(log, { subject: "a", data: Buffer.from("again") }), last + 1);
    } finally {
      await log.close().finally(() => rmSync(root, { recursive: true, force: true }));
    }
  });

  test("an append is acknowledged only after a sync whose file still has a name (sync always, rm of the segment alone)", async () => {
    const root = tmp();
    const dir = join(root, "log");
    const log = await FileLog.open({ dir, reopenDelayMs: 5 });
    try {
      await appendAsync(log, { subject: "a", data: Buffer.from("first") });
      rmSync(join(dir, "00000000000000000001.seg"));
      await assert.rejects(appendAsync(log, { subject: "a", data: Buffer.from("lost") }), /00000000000000000001\.seg was removed while open/);
      await waitUntilAsync(async () => (log as unknown as Reopening).reopenAttempts >= 2, "reopen attempts");
      assert.equal((log as unknown as Reopening).io.reopens, 0);
      assert.equal(log.state().lastSeq, 1);
    } finally {
      await log.close().finally(() => rmSync(root, { recursive: true, force: true }));
    }
  });
});

test("damage found in a log whose directory was removed is not quarantined there: the directory and the store around it are not made again", async () => {
  // Seen in CI: after rm -rf of the store, a read of a released segment failed, and its quarantine made the whole path anew.
  const root = mkdtempSync(join(tmpdir(), "nagare-removed-"));
  try {
    const dir = join(root, "store", "streams", "S", "p0");
    rmSync(join(root, "store"), { recursive: true, force: true });
    await assert.rejects(quarantine(nodeFs, dir, "00000000000000000001.seg@0", Buffer.from("bad")), /is gone/);
    assert.ok(!existsSync(join(root, "store")), "the removed store made again");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
