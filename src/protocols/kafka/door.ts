/**
 * The Kafka door: a listener speaking the Kafka protocol onto the same
 * streams the NATS door serves. This node is the whole cluster as Kafka
 * clients see it: broker, controller and group coordinator (node id 0).
 */

import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type SecureContextOptions } from "node:tls";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { JetStream } from "../../streams/jetstream.js";
import type { Logger } from "../../util/log.js";
import type { Broker } from "../../core/broker.js";
import type { Authenticator } from "../../core/auth.js";
import { handleSaslAuthenticate, handleSaslHandshake, type SaslMechanism } from "./sasl.js";
import { ByteBudget } from "./budget.js";
import { writeJsonDurably } from "../../util/persist.js";
import { KafkaConnection } from "./connection.js";
import { FramePool } from "./frame-pool.js";
import { ApiKey, type Handler } from "./api.js";
import { handleApiVersions, handleDescribeCluster, handleMetadata } from "./metadata.js";
import { handleCreatePartitions, handleCreateTopics, handleDeleteRecords, handleDeleteTopics } from "./admin.js";
import { handleAlterConfigs, handleDescribeConfigs, handleIncrementalAlterConfigs } from "./configs.js";
import { handleDeleteGroups, handleOffsetDelete } from "./group-admin.js";
import { handleProduce } from "./produce.js";
import { handleFetch, handleListOffsets } from "./fetch.js";
import { GroupCoordinator } from "./groups.js";
import { ProducerStates } from "./producers.js";
import { handleInitProducerId } from "./produce.js";
import { TransactionCoordinator } from "./transactions.js";
import { handleAddOffsetsToTxn, handleAddPartitionsToTxn, handleEndTxn, handleTxnOffsetCommit } from "./txn-api.js";
import {
  handleDescribeGroups,
  handleFindCoordinator,
  handleHeartbeat,
  handleJoinGroup,
  handleLeaveGroup,
  handleListGroups,
  handleOffsetCommit,
  handleOffsetFetch,
  handleSyncGroup,
} from "./group-api.js";

export interface KafkaOptions {
  host: string;
  port: number;
  /** Host given to clients in Metadata; default: the address each client connected to. */
  advertisedHost?: string;
  /** Create a topic when a client asks for one that does not exist (Kafka's auto.create.topics.enable). */
  autoCreateTopics: boolean;
  /** Partitions of a topic created without a count (Kafka's num.partitions). */
  defaultPartitions: number;
  /** Largest request frame accepted (Kafka's socket.request.max.bytes). */
  maxRequestBytes: number;
  /** How long a new group waits for more members before its first assignment (Kafka's group.initial.rebalance.delay.ms). */
  initialRebalanceDelayMs: number;
  /** Most record bytes in one fetch response, and held in unwritten responses per connection (Kafka's fetch.max.bytes). */
  fetchMaxBytes: number;
  /** A connection with nothing in flight and no traffic for this long is closed; 0: never (Kafka's connections.max.idle.ms). */
  connectionsMaxIdleMs: number;
  /** Decompressed produce batches held at once, across connections. */
  maxDecompressBytes: number;
  /** Responses built and not yet handed to the kernel, across connections. */
  maxResponseBytes: number;
  /** Request frames read and not yet answered, across connections (Kafka's queued.max.request.bytes); at least max_request_bytes. */
  maxQueuedRequestBytes: number;
  /** TLS from the first byte (Kafka has no upgrade), made at start from the `tls` files; null: plaintext. */
  tls: KafkaTls | null;
  /** Mechanisms SaslHandshake accepts (Kafka's sasl.enabled.mechanisms), when the server has authorization. */
  saslMechanisms: readonly SaslMechanism[];
}

export interface KafkaTls {
  /** Certificate, key, CA and minimum version, as read (and checked) at start: tls.Server makes its context from them. */
  files: SecureContextOptions;
  /** Require and verify a client certificate (mutual TLS). */
  verify: boolean;
  /** Milliseconds a client has to complete the handshake. */
  timeoutMs: number;
}

export const KAFKA_DEFAULTS = {
  port: 9092,
  autoCreateTopics: true,
  defaultPartitions: 1,
  maxRequestBytes: 100 * 1024 * 1024,
  initialRebalanceDelayMs: 3000,
  // Kafka's defaults: 55 MiB and 10 minutes.
  fetchMaxBytes: 55 * 1024 * 1024,
  connectionsMaxIdleMs: 10 * 60_000,
  // Room for two batches at the request limit being decompressed at once, and many small ones.
  maxDecompressBytes: 256 * 1024 * 1024,
  // Four fetches at fetch.max.bytes, or many smaller ones.
  maxResponseBytes: 256 * 1024 * 1024,
  // Two requests at max_request_bytes, and many small ones.
  maxQueuedRequestBytes: 256 * 1024 * 1024,
};

/** Upper bound on partitions per topic: each is a log with open files. */
export const MAX_PARTITIONS = 1024;

/**
 * The door's one read buffer, shared by its connections: a read is consumed
 * (cut into frames, copied out) before the next one lands. 256 KiB takes a
 * megabyte request in four reads where Node's own reads take sixteen.
 */
const READ_BUFFER_BYTES = 256 * 1024;

/** Unused produce frame buffers kept for reuse, across all connections. */
const FRAME_POOL_BYTES = 16 * 1024 * 1024;

export class KafkaDoor {
  readonly connections = new Set<KafkaConnection>();
  readonly frames = new FramePool(FRAME_POOL_BYTES);
  /** Where plaintext connections' socket reads land, one at a time (see util/socket-reads.ts). */
  readonly readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  readonly handlers = new Map<number, Handler>();
  readonly nodeId = 0;
  readonly producers: ProducerStates;
  /** Decompressed record bytes held by produce requests (records.ts: decodeProduceBatch). */
  readonly decompression: ByteBudget;
  /** Response bytes held by requests in progress and by responses not yet written (connection.ts). */
  readonly responses: ByteBudget;
  /** Request frames from when their size is read until they are answered (connection.ts). */
  readonly requests: ByteBudget;
  private server: Server | null = null;
  port = 0;
  /** The server's users: with them, every connection authenticates over SASL before anything else. */
  auth: Authenticator | null = null;

  private constructor(
    readonly broker: Broker,
    readonly js: JetStream,
    readonly options: KafkaOptions,
    readonly log: Logger,
    readonly clusterId: string,
    readonly groups: GroupCoordinator,
    producers: ProducerStates,
    readonly transactions: TransactionCoordinator,
  ) {
    this.producers = producers;
    this.decompression = new ByteBudget(options.maxDecompressBytes);
    this.responses = new ByteBudget(options.maxResponseBytes);
    this.requests = new ByteBudget(Math.max(options.maxQueuedRequestBytes, options.maxRequestBytes));
    const on = (key: number, h: (door: KafkaDoor, ...a: Parameters<Handler>) => ReturnType<Handler>): void => {
      this.handlers.set(key, (ctx) => h(this, ctx));
    };
    on(ApiKey.ApiVersions, handleApiVersions);
    on(ApiKey.Metadata, handleMetadata);
    on(ApiKey.CreateTopics, handleCreateTopics);
    on(ApiKey.DeleteTopics, handleDeleteTopics);
    on(ApiKey.DescribeConfigs, handleDescribeConfigs);
    on(ApiKey.AlterConfigs, handleAlterConfigs);
    on(ApiKey.IncrementalAlterConfigs, handleIncrementalAlterConfigs);
    on(ApiKey.CreatePartitions, handleCreatePartitions);
    on(ApiKey.DeleteRecords, handleDeleteRecords);
    on(ApiKey.DescribeCluster, handleDescribeCluster);
    on(ApiKey.DeleteGroups, handleDeleteGroups);
    on(ApiKey.OffsetDelete, handleOffsetDelete);
    on(ApiKey.Produce, handleProduce);
    on(ApiKey.Fetch, handleFetch);
    on(ApiKey.ListOffsets, handleListOffsets);
    on(ApiKey.FindCoordinator, handleFindCoordinator);
    on(ApiKey.JoinGroup, handleJoinGroup);
    on(ApiKey.SyncGroup, handleSyncGroup);
    on(ApiKey.Heartbeat, handleHeartbeat);
    on(ApiKey.LeaveGroup, handleLeaveGroup);
    on(ApiKey.OffsetCommit, handleOffsetCommit);
    on(ApiKey.OffsetFetch, handleOffsetFetch);
    on(ApiKey.ListGroups, handleListGroups);
    on(ApiKey.DescribeGroups, handleDescribeGroups);
    on(ApiKey.InitProducerId, handleInitProducerId);
    on(ApiKey.AddPartitionsToTxn, handleAddPartitionsToTxn);
    on(ApiKey.AddOffsetsToTxn, handleAddOffsetsToTxn);
    on(ApiKey.EndTxn, handleEndTxn);
    on(ApiKey.TxnOffsetCommit, handleTxnOffsetCommit);
    on(ApiKey.SaslHandshake, handleSaslHandshake);
    on(ApiKey.SaslAuthenticate, handleSaslAuthenticate);
  }

  get maxRequestBytes(): number {
    return this.options.maxRequestBytes;
  }

  static async start(broker: Broker, js: JetStream, options: KafkaOptions, log: Logger, auth: Authenticator | null = null): Promise<KafkaDoor> {
    const groups = new GroupCoordinator(join(js.options.storeDir, "kafka", "groups"), options.initialRebalanceDelayMs, (line) => log.debug(`kafka ${line}`));
    await groups.load();
    const producers = new ProducerStates();
    const transactions = new TransactionCoordinator(js, groups, join(js.options.storeDir, "kafka"), () => producers.allocate(), (line) => log.debug(`kafka ${line}`));
    // Before the listener opens: transactions a crash left open are finished or aborted first.
    await transactions.load();
    const door = new KafkaDoor(broker, js, options, log, await clusterIdOf(js.options.storeDir), groups, producers, transactions);
    door.auth = auth;
    await door.listen();
    return door;
  }

  private listen(): Promise<void> {
    const tls = this.options.tls;
    let server: Server;
    if (tls === null) server = createServer({ noDelay: true }, (socket: Socket) => this.accept(socket));
    else {
      // A connection counts as a client once its handshake is done; a failed or slow handshake only closes the socket.
      server = createTlsServer(
        { ...tls.files, requestCert: tls.verify, rejectUnauthorized: tls.verify, handshakeTimeout: tls.timeoutMs, noDelay: true },
        (socket) => this.accept(socket),
      );
      server.on("tlsClientError", (err, socket) => {
        this.log.debug(`kafka ${socket.remoteAddress}:${socket.remotePort}: TLS handshake failed: ${err.message}`);
        socket.destroy();
      });
    }
    // As the NATS listener: past this the OS socket is dropped before we see it.
    server.maxConnections = this.broker.options.maxConnections + 64;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off("error", reject);
        this.port = (server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  /**
   * Kafka clients share `max_connections` with NATS clients: one kind cannot
   * take every descriptor from the other. Kafka has no way to say why, so a
   * connection past the limit is closed at once, as a Kafka broker does.
   */
  private accept(socket: Socket): void {
    const broker = this.broker;
    if (broker.lameDuck || broker.connections.size >= broker.options.maxConnections) {
      this.log.debug(`kafka ${socket.remoteAddress}:${socket.remotePort}: refused: ${broker.lameDuck ? "lame duck" : "maximum connections exceeded"}`);
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    this.connections.add(new KafkaConnection(this, socket));
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const c of [...this.connections]) c.close();
    this.groups.close();
    this.transactions.close();
    await closed;
  }
}

/** Kafka clients expect a cluster id that stays the same across restarts: kept beside the streams. */
async function clusterIdOf(storeDir: string): Promise<string> {
  const file = join(storeDir, "kafka", "cluster.json");
  try {
    const { clusterId } = JSON.parse(await readFile(file, "utf8")) as { clusterId?: unknown };
    if (typeof clusterId === "string" && clusterId !== "") return clusterId;
  } catch {
    // first start
  }
  const clusterId = randomBytes(16).toString("base64url");
  await writeJsonDurably(file, { clusterId });
  return clusterId;
}
