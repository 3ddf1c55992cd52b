/** A server with the Kafka door on a free port, and runners for the Kafka clients the tests use. */

import { spawn } from "node:child_process";
import kafkajs from "kafkajs";
import { startJs, type JsHarness } from "./js.js";
import type { KafkaListenerOptions } from "../../src/core/options.js";

const { Kafka, logLevel } = kafkajs;

export interface KafkaHarness extends JsHarness {
  /** host:port of the Kafka listener. */
  readonly broker: string;
  kafka(): InstanceType<typeof Kafka>;
}

export async function startKafka(opts: Pick<KafkaListenerOptions, "autoCreateTopics" | "numPartitions" | "initialRebalanceDelayMs" | "minSessionTimeoutMs" | "maxSessionTimeoutMs" | "maxProducerStates" | "offsetsRetentionMs" | "offsetsRetentionCheckIntervalMs" | "logCleanerBackoffMs"> = {}): Promise<KafkaHarness> {
  // A short initial rebalance delay: groups in tests form in well under Kafka's 3 s.
  const js = await startJs({ server: { kafka: { port: 0, initialRebalanceDelayMs: 200, ...opts } } });
  // A getter, not a copied value: the port changes when the harness restarts the server.
  const broker = (): string => `127.0.0.1:${js.srv.kafkaPort}`;
  return Object.defineProperties(js, {
    broker: { get: broker },
    kafka: { value: () => new Kafka({ clientId: "nagare-test", brokers: [broker()], logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100 } }) },
  }) as KafkaHarness;
}

/** Creates a topic through KafkaJS's admin client, as a user would (one partition unless told). */
export async function createTopic(h: KafkaHarness, topic: string, numPartitions = 1, configEntries: Array<{ name: string; value: string }> = []): Promise<void> {
  const admin = h.kafka().admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions, configEntries }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command` with `args`, feeding `input`; kills it after `timeoutMs`. */
function run(command: string, args: string[], input: string, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** Runs kcat (librdkafka) with `args`, feeding `input`; kills it after `timeoutMs`. */
export function kcat(args: string[], input = "", timeoutMs = 20_000): Promise<Run> {
  return run("kcat", args, input, timeoutMs);
}

/**
 * Runs a script with Debian's Python (/usr/bin/python3, where
 * python3-kafka and python3-confluent-kafka install; another python3 on the
 * PATH would not see them); kills it after `timeoutMs`.
 */
export function python(script: string, timeoutMs = 30_000): Promise<Run> {
  return run("/usr/bin/python3", ["-c", script], "", timeoutMs);
}
