/** A server with the Kafka door on a free port, and runners for the Kafka clients the tests use. */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import kafkajs from "kafkajs";

const { Kafka, logLevel } = kafkajs;
import { startServer, type NagareServer } from "../../src/index.js";

export interface KafkaHarness {
  srv: NagareServer;
  nc: NatsConnection;
  storeDir: string;
  /** host:port of the Kafka listener. */
  readonly broker: string;
  kafka(): InstanceType<typeof Kafka>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startKafka(opts: { autoCreateTopics?: boolean; numPartitions?: number; initialRebalanceDelayMs?: number } = {}): Promise<KafkaHarness> {
  const storeDir = mkdtempSync(join(tmpdir(), "nagare-kafka-"));
  // A short initial rebalance delay: groups in tests form in well under Kafka's 3 s.
  const options = { port: 0, storeDir, kafka: { port: 0, initialRebalanceDelayMs: 200, ...opts } };
  const h: KafkaHarness = {
    srv: await startServer(options),
    nc: undefined as unknown as NatsConnection,
    storeDir,
    get broker() {
      return `127.0.0.1:${h.srv.kafkaPort}`;
    },
    kafka() {
      return new Kafka({ clientId: "nagare-test", brokers: [h.broker], logLevel: logLevel.NOTHING, retry: { retries: 3, initialRetryTime: 100 } });
    },
    async restart() {
      await h.nc.close();
      await h.srv.close();
      h.srv = await startServer(options);
      h.nc = await connect({ servers: h.srv.url });
    },
    async close() {
      await h.nc.close();
      await h.srv.close();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
  h.nc = await connect({ servers: h.srv.url });
  return h;
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs kcat (librdkafka) with `args`, feeding `input`; kills it after `timeoutMs`. */
export function kcat(args: string[], input = "", timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn("kcat", args, { stdio: ["pipe", "pipe", "pipe"] });
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
