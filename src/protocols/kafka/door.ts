/**
 * The Kafka door: a listener speaking the Kafka protocol onto the same
 * streams the NATS door serves. On a single node it is the whole cluster as
 * Kafka clients see it: broker, controller and group coordinator (node id
 * 0). In a cluster (`attachCluster`) it is one broker among the nodes, with
 * the id etcd gave its name, serving the partitions it leads and the groups
 * it coordinates (cluster.ts).
 */

import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type SecureContextOptions, type TLSSocket } from "node:tls";
import { peerCertificate } from "../../core/tls-names.js";
import { CertificateMap } from "../../core/tls-map.js";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { JetStreams } from "../../streams/jetstreams.js";
import { GLOBAL_ACCOUNT } from "../../core/account.js";
import { KAFKA_SESSION_TIMEOUT_BOUNDS } from "../../core/options.js";
import type { Logger } from "../../util/log.js";
import type { Broker } from "../../core/broker.js";
import type { Authenticator, ClientAuth, Identity, PasswordAuth } from "../../core/auth.js";
import { handleSaslAuthenticate, handleSaslHandshake, type SaslMechanism } from "./sasl.js";
import { ByteBudget } from "./budget.js";
import { readJson, writeJsonDurably } from "../../util/persist.js";
import { KafkaConnection } from "./connection.js";
import { BufferPool } from "../../util/buffer-pool.js";
import { ApiKey, type Handler } from "./api.js";
import { handleApiVersions, handleDescribeCluster, handleMetadata } from "./metadata.js";
import { handleAlterPartitionReassignments, handleListPartitionReassignments } from "./reassignments.js";
import { handleCreatePartitions, handleCreateTopics, handleDeleteRecords, handleDeleteTopics, handleDescribeLogDirs } from "./admin.js";
import { handleAlterConfigs, handleDescribeConfigs, handleIncrementalAlterConfigs } from "./configs.js";
import { handleDeleteGroups, handleOffsetDelete } from "./group-admin.js";
import { handleProduce } from "./produce.js";
import { handleFetch, handleListOffsets, handleOffsetForLeaderEpoch } from "./fetch.js";
import { handleInitProducerId } from "./produce.js";
import { AccountDoor } from "./account-door.js";
import type { KafkaCluster } from "./cluster.js";
import { handleCreateAcls, handleDeleteAcls, handleDescribeAcls } from "./acls.js";
import { handleDescribeClientQuotas } from "./quotas.js";
import { handleElectLeaders } from "./elect.js";
import { handleDescribeProducers } from "./describe-producers.js";
import { handleAddOffsetsToTxn, handleAddPartitionsToTxn, handleDescribeTransactions, handleEndTxn, handleListTransactions, handleTxnOffsetCommit } from "./txn-api.js";
import { LogCleaner } from "./log-cleaner.js";
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
  /** Copies of each partition of a topic created without a replication factor, or auto-created (Kafka's default.replication.factor). */
  defaultReplicationFactor: number;
  /** The min.insync.replicas a topic created without its own is given (Kafka's broker-wide min.insync.replicas). */
  minInsyncReplicas: number;
  /** Largest request frame accepted (Kafka's socket.request.max.bytes). */
  maxRequestBytes: number;
  /** How long a new group waits for more members before its first assignment (Kafka's group.initial.rebalance.delay.ms). */
  initialRebalanceDelayMs: number;
  /** The shortest and longest session timeout a group member may ask for (Kafka's group.min/max.session.timeout.ms). */
  minSessionTimeoutMs: number;
  maxSessionTimeoutMs: number;
  /** Most record bytes in one fetch response, and held in unwritten responses per connection (Kafka's fetch.max.bytes). */
  fetchMaxBytes: number;
  /** A connection with nothing in flight and no traffic for this long is closed; 0: never (Kafka's connections.max.idle.ms). */
  connectionsMaxIdleMs: number;
  /** How long an Empty group's committed offsets are kept, or a standalone commit (Kafka's offsets.retention.minutes, KIP-211). */
  offsetsRetentionMs: number;
  /** How often expired offsets are looked for (Kafka's offsets.retention.check.interval.ms). */
  offsetsRetentionCheckIntervalMs: number;
  /**
   * How long an OffsetCommit waits for its offsets to be stored before it is
   * answered REQUEST_TIMED_OUT (Kafka's offsets.commit.timeout.ms): the
   * connection's group requests behind it wait no longer than that. A
   * DeleteGroups or OffsetDelete not stored by then is answered
   * COORDINATOR_NOT_AVAILABLE (group-admin.ts), as Kafka's group coordinator.
   */
  offsetsCommitTimeoutMs: number;
  /** How often compacted topics are looked at (Kafka's log.cleaner.backoff.ms; log-cleaner.ts). */
  logCleanerBackoffMs: number;
  /** Decompressed produce batches held at once, across connections. */
  maxDecompressBytes: number;
  /** Responses built and not yet handed to the kernel, across connections. */
  maxResponseBytes: number;
  /** Request frames read and not yet answered, across connections (Kafka's queued.max.request.bytes); at least max_request_bytes. */
  maxQueuedRequestBytes: number;
  /** In a cluster, hand leadership moved off a partition's preferred replica back to it (Kafka's auto.leader.rebalance.enable; leader-rebalance.ts). */
  autoLeaderRebalance: boolean;
  /** How often a leader looks for partitions to hand back (Kafka's leader.imbalance.check.interval.seconds). */
  leaderImbalanceCheckIntervalMs: number;
  /** A broker's share, in percent, of the partitions it prefers but does not lead past which they are handed back (Kafka's leader.imbalance.per.broker.percentage). */
  leaderImbalancePerBrokerPercentage: number;
  /** TLS from the first byte (Kafka has no upgrade), made at start from the `tls` files; null: plaintext. */
  tls: KafkaTls | null;
  /** Mechanisms SaslHandshake accepts (Kafka's sasl.enabled.mechanisms), when the server has authorization. */
  saslMechanisms: readonly SaslMechanism[];
  /** Bound on the (producer, partition) sequence states kept in memory; past it the least recently used are dropped and read back from the log when needed (producers.ts). */
  maxProducerStates: number;
  /**
   * The node joins a cluster once the listener's address is known: until
   * `attachCluster`, connections are closed at once (a client told it is
   * broker 0 of a one-node cluster would cache a wrong picture).
   */
  clustered?: boolean;
}

export interface KafkaTls {
  /** Certificate, key, CA and minimum version, as read (and checked) at start: tls.Server makes its context from them. */
  files: SecureContextOptions;
  /** Require and verify a client certificate (mutual TLS). */
  verify: boolean;
  /**
   * verify_and_map: the certificate is the client's identity, as Kafka's
   * SSL principal is, and it needs no SASL; one that names no user (or a
   * user with a password, which only SASL could prove) is closed at once.
   */
  verifyAndMap: boolean;
  /** Milliseconds a client has to complete the handshake. */
  timeoutMs: number;
}

export const KAFKA_DEFAULTS = {
  port: 9092,
  autoCreateTopics: true,
  defaultPartitions: 1,
  defaultReplicationFactor: 1,
  minInsyncReplicas: 1,
  maxRequestBytes: 100 * 1024 * 1024,
  initialRebalanceDelayMs: 3000,
  minSessionTimeoutMs: KAFKA_SESSION_TIMEOUT_BOUNDS.min,
  maxSessionTimeoutMs: KAFKA_SESSION_TIMEOUT_BOUNDS.max,
  // Room for many producers writing to many partitions; past it the log tells a returning one's state.
  maxProducerStates: 100_000,
  // Kafka's defaults: 55 MiB and 10 minutes.
  fetchMaxBytes: 55 * 1024 * 1024,
  connectionsMaxIdleMs: 10 * 60_000,
  // Kafka's defaults: 7 days, looked at every 10 minutes.
  offsetsRetentionMs: 7 * 24 * 3_600_000,
  offsetsRetentionCheckIntervalMs: 10 * 60_000,
  // Kafka's default: 5 s.
  offsetsCommitTimeoutMs: 5000,
  // Kafka's default: 15 s.
  logCleanerBackoffMs: 15_000,
  // Room for two batches at the request limit being decompressed at once, and many small ones.
  maxDecompressBytes: 256 * 1024 * 1024,
  // Four fetches at fetch.max.bytes, or many smaller ones.
  maxResponseBytes: 256 * 1024 * 1024,
  // Two requests at max_request_bytes, and many small ones.
  maxQueuedRequestBytes: 256 * 1024 * 1024,
  // Kafka's defaults: on, every 300 s, past 10 %.
  autoLeaderRebalance: true,
  leaderImbalanceCheckIntervalMs: 300_000,
  leaderImbalancePerBrokerPercentage: 10,
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
  readonly frames = new BufferPool(FRAME_POOL_BYTES);
  /** Where plaintext connections' socket reads land, one at a time (see util/socket-reads.ts). */
  readonly readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  readonly handlers = new Map<number, Handler>();
  /** The other brokers, partition leaders and coordinators; null on a single node. */
  cluster: KafkaCluster | null = null;
  /** Compacts the compacted topics' partitions led here (log-cleaner.ts). */
  readonly cleaner: LogCleaner;
  /** Decompressed record bytes held by produce requests (records.ts: decodeProduceBatch). */
  readonly decompression: ByteBudget;
  /** Response bytes held by requests in progress and by responses not yet written (connection.ts). */
  readonly responses: ByteBudget;
  /** Request frames from when their size is read until they are answered (connection.ts). */
  readonly requests: ByteBudget;
  private server: Server | null = null;
  port = 0;
  /** The server's users: with them, every connection authenticates over SASL before anything else. */
  auth: PasswordAuth | null = null;
  /** The door of each account with JetStream that a client has used (every one at start), by account name. */
  private readonly accounts = new Map<string, Promise<AccountDoor>>();
  private readonly ready = new Map<string, AccountDoor>();
  private closed = false;

  private constructor(
    readonly broker: Broker,
    readonly jetstreams: JetStreams,
    readonly options: KafkaOptions,
    readonly log: Logger,
    readonly clusterId: string,
  ) {
    this.decompression = new ByteBudget(options.maxDecompressBytes);
    this.responses = new ByteBudget(options.maxResponseBytes);
    this.requests = new ByteBudget(Math.max(options.maxQueuedRequestBytes, options.maxRequestBytes));
    this.cleaner = new LogCleaner(() => this.ready.values(), options.logCleanerBackoffMs, (line) => log.warn(line), (line) => log.debug(line));
    // What needs no account: versions, SASL and the ACL APIs (refused whoever asks).
    const open = (key: number, h: (door: KafkaDoor, ...a: Parameters<Handler>) => ReturnType<Handler>): void => {
      this.handlers.set(key, (ctx) => h(this, ctx));
    };
    open(ApiKey.ApiVersions, handleApiVersions);
    open(ApiKey.SaslHandshake, handleSaslHandshake);
    open(ApiKey.SaslAuthenticate, handleSaslAuthenticate);
    open(ApiKey.DescribeAcls, handleDescribeAcls);
    open(ApiKey.CreateAcls, handleCreateAcls);
    open(ApiKey.DeleteAcls, handleDeleteAcls);
    open(ApiKey.DescribeClientQuotas, handleDescribeClientQuotas);
    // Everything else serves the connection's account (connection.ts lets nothing else through before it has one).
    const on = (key: number, h: (door: AccountDoor, ...a: Parameters<Handler>) => ReturnType<Handler>): void => {
      this.handlers.set(key, (ctx) => h(ctx.conn.account!, ctx));
    };
    on(ApiKey.Metadata, handleMetadata);
    on(ApiKey.CreateTopics, handleCreateTopics);
    on(ApiKey.DeleteTopics, handleDeleteTopics);
    on(ApiKey.DescribeConfigs, handleDescribeConfigs);
    on(ApiKey.AlterConfigs, handleAlterConfigs);
    on(ApiKey.IncrementalAlterConfigs, handleIncrementalAlterConfigs);
    on(ApiKey.CreatePartitions, handleCreatePartitions);
    on(ApiKey.DeleteRecords, handleDeleteRecords);
    on(ApiKey.DescribeLogDirs, handleDescribeLogDirs);
    on(ApiKey.DescribeCluster, handleDescribeCluster);
    on(ApiKey.AlterPartitionReassignments, handleAlterPartitionReassignments);
    on(ApiKey.ListPartitionReassignments, handleListPartitionReassignments);
    on(ApiKey.ElectLeaders, handleElectLeaders);
    on(ApiKey.DeleteGroups, handleDeleteGroups);
    on(ApiKey.OffsetDelete, handleOffsetDelete);
    on(ApiKey.Produce, handleProduce);
    on(ApiKey.Fetch, handleFetch);
    on(ApiKey.ListOffsets, handleListOffsets);
    on(ApiKey.OffsetForLeaderEpoch, handleOffsetForLeaderEpoch);
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
    on(ApiKey.DescribeProducers, handleDescribeProducers);
    on(ApiKey.DescribeTransactions, handleDescribeTransactions);
    on(ApiKey.ListTransactions, handleListTransactions);
  }

  /**
   * The door of an account, opened on first use (its groups loaded, the
   * transactions a crash left open finished); null when the account has no
   * JetStream, whose streams are the Kafka door's topics.
   */
  accountDoor(account: string): Promise<AccountDoor | null> {
    const js = this.jetstreams.get(account);
    if (js === undefined || this.closed) return Promise.resolve(null);
    let opening = this.accounts.get(account);
    if (opening === undefined) {
      const p = AccountDoor.open(this, js);
      this.accounts.set(account, p);
      p.then(
        (d) => this.ready.set(account, d),
        () => {
          if (this.accounts.get(account) === p) this.accounts.delete(account);
        },
      );
      opening = p;
    }
    const p = opening;
    return p.then((d) => {
      if (d.js === js) return d;
      // The account's JetStream was turned off and on again since its door opened.
      this.retire(account, p, d);
      return this.accountDoor(account);
    });
  }

  /** The default account's door, open from the start: what connections use when the server authenticates nobody. */
  get defaultDoor(): AccountDoor | null {
    return this.ready.get(GLOBAL_ACCOUNT) ?? null;
  }

  /**
   * An account's JetStream changed (jetstreams.ts): a door holding streams
   * that were closed is retired, and its connections with it (Kafka clients
   * reconnect, and authenticate against what the account has now).
   */
  private readonly onAccountChange = (account: string): void => {
    const p = this.accounts.get(account);
    // An account given JetStream opens its door now, as every account's does at start: its streams may be copied here
    // (a follower) before a client of it comes, and the door reads what they bring (txn-index.ts).
    const open = (): void => {
      if (this.jetstreams.get(account) !== undefined) this.accountDoor(account).catch((err: Error) => this.log.warn(`kafka: account ${account}: ${err.message}`));
    };
    if (p === undefined) return open();
    p.then(
      (d) => {
        if (this.jetstreams.get(account) === d.js) return;
        this.retire(account, p, d);
        open();
      },
      () => undefined,
    );
  };

  private retire(account: string, p: Promise<AccountDoor>, d: AccountDoor): void {
    if (this.accounts.get(account) !== p) return;
    this.accounts.delete(account);
    this.ready.delete(account);
    for (const c of [...this.connections]) if (c.account === d) c.close(`account ${account} no longer has JetStream`);
    void d.close().catch((err: Error) => this.log.warn(`kafka: closing account ${account}: ${err.message}`));
  }

  get maxRequestBytes(): number {
    return this.options.maxRequestBytes;
  }

  private lastReclaim = 0;

  /**
   * `waiter` cannot read its next frame for want of request budget: closes
   * the connections whose frames hold budget while arriving too slowly to
   * be meant (KafkaConnection.tricklingFrame). Looked at most 4 times a second.
   */
  reclaimTrickledFrames(waiter: KafkaConnection): void {
    const now = Date.now();
    if (now - this.lastReclaim < 250) return;
    this.lastReclaim = now;
    for (const c of [...this.connections]) if (c !== waiter && c.tricklingFrame(now)) c.close("request frame arriving too slowly while others wait for the request budget");
  }

  /** This broker's id: 0 on a single node, the cluster's for this node's name in a cluster. */
  get nodeId(): number {
    return this.cluster?.nodeId ?? 0;
  }

  /** The node joined its cluster: from now on the door answers as one of its brokers. */
  attachCluster(cluster: KafkaCluster): void {
    this.cluster = cluster;
    for (const d of this.ready.values()) d.producers.clustered(cluster.nodeId);
  }

  static async start(broker: Broker, jetstreams: JetStreams, options: KafkaOptions, log: Logger, auth: PasswordAuth | null = null): Promise<KafkaDoor> {
    const storeDir = jetstreams.options.storeDir;
    const door = new KafkaDoor(broker, jetstreams, options, log, await clusterIdOf(storeDir));
    door.auth = auth;
    try {
      // Before the listener opens: every account's transactions a crash left open are finished or aborted first.
      for (const js of jetstreams.all()) await door.accountDoor(js.account.name);
      jetstreams.changeListeners.add(door.onAccountChange);
      await door.listen();
      door.cleaner.start();
    } catch (err) {
      await door.close();
      throw err;
    }
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
    const joining = this.options.clustered === true && this.cluster === null;
    if (broker.lameDuck || joining || broker.connections.size >= broker.options.maxConnections) {
      this.log.debug(`kafka ${socket.remoteAddress}:${socket.remotePort}: refused: ${broker.lameDuck ? "lame duck" : joining ? "not in the cluster yet" : "maximum connections exceeded"}`);
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    if (this.options.tls?.verifyAndMap === true) this.acceptMapped(socket as TLSSocket);
    else this.connections.add(new KafkaConnection(this, socket));
  }

  /**
   * verify_and_map: who the client's certificate says it is, and its
   * account's door, before its first request is read (a socket nobody
   * listens to yet buffers what the client sends).
   */
  private acceptMapped(socket: TLSSocket): void {
    const certificate = peerCertificate(socket);
    const auth = this.auth;
    const identity = certificate === null || auth?.certificateIdentity === undefined ? null : auth.certificateIdentity(certificate);
    const admit = (account: AccountDoor | null, refusal: string): void => {
      const conn = new KafkaConnection(this, socket);
      this.connections.add(conn);
      if (identity === null || account === null) {
        conn.close(refusal);
        return;
      }
      conn.identity = identity;
      conn.account = account;
      this.log.debug(`kafka ${conn.remote}: authenticated as ${identity.name} (account ${identity.account}) by the certificate's ${identity.mappedBy}`);
    };
    if (identity === null) return admit(null, `certificate ${JSON.stringify(CertificateMap.subjectOf(certificate))} maps to no user without a password`);
    const noJetStream = `user ${identity.name}: account ${identity.account} has no JetStream, whose streams are the Kafka topics`;
    socket.on("error", () => {});
    this.accountDoor(identity.account).then(
      (account) => {
        if (socket.destroyed) return;
        if (this.closed) socket.destroy();
        // A reload while the account's door opened (it is not among the connections reauthorize sees yet): mapped again.
        else if (this.auth !== auth) this.acceptMapped(socket);
        else admit(account, noJetStream);
      },
      (err: Error) => {
        if (!socket.destroyed) admit(null, `account ${identity.account}: ${err.message}`);
      },
    );
  }

  /**
   * A configuration reload changed who may connect (nats-server's
   * reloadAuthorization, as the NATS door applies it): new clients are
   * checked by `next`. A client let in before keeps its connection while it
   * is the same user with the same password, NKey or certificate, in the
   * same account, and is its user's permissions now; any other is closed (a
   * Kafka client connects again and authenticates to the new users), and so
   * is one let in without authentication once authentication is asked.
   */
  reauthorize(next: Authenticator | null, previous: ClientAuth | null): void {
    this.auth = next;
    for (const conn of [...this.connections]) {
      const was = conn.identity;
      if (was === null) {
        // In without authentication, or not yet authenticated (a SASL exchange under way is checked in sasl.ts).
        if ((conn.account !== null) !== (next === null)) conn.close(next === null ? "authorization reloaded: none asked now" : "authorization reloaded: the client must authenticate");
        continue;
      }
      let now: Identity | null;
      if (next === null) now = { name: was.name, account: GLOBAL_ACCOUNT, permissions: null };
      else if (was.mappedBy !== undefined) {
        const certificate = peerCertificate(conn.socket as TLSSocket);
        now = certificate === null ? null : next.certificateIdentity(certificate);
      } else now = next.stillHolds(was, previous);
      if (now === null || now.account !== was.account) {
        conn.close(`authorization reloaded: user ${JSON.stringify(was.name)} ${now === null ? "is gone or its credentials changed" : `is in account ${now.account} now`}`);
        continue;
      }
      // A certificate names whom it maps to now; a SASL client stays the name it authenticated with.
      conn.identity = was.mappedBy !== undefined ? now : { ...now, name: was.name };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.jetstreams.changeListeners.delete(this.onAccountChange);
    const server = this.server;
    this.server = null;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    for (const c of [...this.connections]) c.close("Server Shutdown");
    await this.cleaner.close();
    for (const opening of this.accounts.values()) await opening.then((d) => d.close(), () => undefined);
    this.accounts.clear();
    this.ready.clear();
    await closed;
  }
}

/** Kafka clients expect a cluster id that stays the same across restarts: kept beside the streams, one for every account. */
async function clusterIdOf(storeDir: string): Promise<string> {
  const file = join(storeDir, "kafka", "cluster.json");
  // Absent at the first start; damaged, it stops the start (readJson says so) rather than change the id under clients.
  const saved = (await readJson(file)) as { clusterId?: unknown } | undefined;
  if (saved !== undefined && typeof saved.clusterId === "string" && saved.clusterId !== "") return saved.clusterId;
  const clusterId = randomBytes(16).toString("base64url");
  await writeJsonDurably(file, { clusterId });
  return clusterId;
}
