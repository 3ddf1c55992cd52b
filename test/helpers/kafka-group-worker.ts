/**
 * The fault runs' KafkaJS group reader, in a worker thread of its own.
 *
 * KafkaJS 2.2.4 can spin for ever when a consumer is stopped while its
 * fetchers are being rebuilt for a change of partition leaders (its fetch
 * manager starts new fetchers after the stop, and each of their fetches
 * returns at once: a loop of microtasks, and nothing else in the thread
 * runs again, timers included). Leaders move all the time under the fault
 * schedule, and a run once hung that way on its closing disconnect. Here,
 * the thread that hangs is this one, and the test ends it (`terminate`).
 *
 * Reads and commits go to the parent as history ops, their times in
 * absolute milliseconds (`at`, `t0`): the parent puts them on its own clock.
 */

import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import kafkajs from "kafkajs";

const { Kafka, logLevel } = kafkajs;

export interface GroupReaderConfig {
  brokers: string[];
  topic: string;
  group: string;
}

/** What the worker sends: an op of the History (its time `at`, and a commit's `t0`, absolute). */
export type GroupReaderEvent =
  | { at: number; op: { type: "read"; client: string; log: string; offset: number; value: string } }
  | { at: number; op: { type: "commit"; t0: number; client: string; group: string; log: string; offset: number } };

// `node --test dist/test/` loads every file under test/ as a test: there, with no parent, it does nothing.
if (parentPort !== null) await readGroup(workerData as GroupReaderConfig, parentPort);

async function readGroup({ brokers, topic, group }: GroupReaderConfig, port: MessagePort): Promise<void> {
  const abs = (): number => performance.timeOrigin + performance.now();
  const send = (e: GroupReaderEvent): void => port.postMessage(e);
  const kafka = new Kafka({ clientId: "faults", brokers, logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500, retry: { retries: 20, initialRetryTime: 100, maxRetryTime: 1000 } });
  consumer.on(consumer.events.COMMIT_OFFSETS, (e) => {
    for (const t of e.payload.topics) {
      for (const p of t.partitions) send({ at: abs(), op: { type: "commit", t0: abs(), client: "kg", group, log: `${t.topic}/${p.partition}`, offset: Number(p.offset) } });
    }
  });
  port.on("message", () => {
    void consumer
      .disconnect()
      .catch(() => undefined)
      .then(() => process.exit(0));
  });
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommitInterval: 300,
      eachMessage: async ({ partition, message }) => {
        send({ at: abs(), op: { type: "read", client: "kg", log: `${topic}/${partition}`, offset: Number(message.offset), value: message.value?.toString() ?? "" } });
      },
    });
  } catch {
    // The group could not start (its coordinator down at the wrong moment): the other readers still read.
  }
}
