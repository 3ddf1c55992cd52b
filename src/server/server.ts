/**
 * Process-level composition: listeners, doors, monitoring, lifecycle. This is
 * the embedding API (`startServer`) and what the `nagare server` command runs.
 */

import { createServer, type Server, type Socket } from "node:net";
import { networkInterfaces } from "node:os";
import { basename, join } from "node:path";
import { readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { X509Certificate } from "node:crypto";
import { ADVERTISED_VERSION, Broker } from "../core/broker.js";
import { authRequired, DEFAULTS, KAFKA_SASL_MECHANISMS, resolveOptions, type KafkaTlsOptions, type ResolvedOptions, type ServerOptions, type TlsOptions } from "../core/options.js";
import { createLogger, type ServerLogger } from "../util/log.js";
import { NatsConnection } from "../protocols/nats/connection.js";
import type { NatsTls } from "../protocols/nats/tls.js";
import { Authenticator, type ClientAuth, type PasswordMemo } from "../core/auth.js";
import { JwtAuthenticator } from "../core/jwt-auth.js";
import { opensslCiphers, opensslCurves } from "../core/tls-names.js";
import { OperatorMode } from "../core/operator.js";
import { startSystemRequests, type SystemRequests } from "../monitor/sys-requests.js";
import { CpuSampler } from "../monitor/varz.js";
import { infoLine } from "../protocols/nats/info.js";
import { startMonitor, type Monitor } from "../monitor/http.js";
import { JetStream } from "../streams/jetstream.js";
import { KafkaDoor, KAFKA_DEFAULTS } from "../protocols/kafka/door.js";
import { reserveKafkaMarks } from "../protocols/kafka/account-door.js";
import { kafkaRecords } from "../protocols/kafka/stored-batches.js";
import { JetStreams } from "../streams/jetstreams.js";
import { ServerJetStreamLimits } from "../streams/server-limits.js";
import { API_LIMIT_REACHED_SUBJECT, ApiRequestLimit, limitReachedAdvisory } from "../streams/api-limit.js";
import { ClusterStreams } from "../streams/cluster-streams.js";
import { AnswerBudget, FETCH_BYTES } from "../streams/replication.js";
import type { AccountLimits } from "../streams/limits.js";
import { jetStreamLimitsOf, UNLIMITED_JETSTREAM, isStreamImport } from "../core/accounts.js";
import { GLOBAL_ACCOUNT } from "../core/account.js";
import { subjectMatches } from "../subjects/subject.js";
import { tmpdir } from "node:os";
import { isDeepStrictEqual } from "node:util";
import { ClusterNode } from "../cluster/node.js";
import { EtcdKafkaCluster } from "./kafka-cluster.js";
import { RouteManager } from "../protocols/route/routes.js";
import type { EtcdTls } from "../cluster/etcd-client.js";
import type { NodeRecord } from "../cluster/membership.js";

export interface NagareServer {
  /** Address the client listener is bound to. */
  readonly host: string;
  readonly port: number;
  /** `nats://host:port`, with 127.0.0.1 when bound to every interface. */
  readonly url: string;
  readonly httpPort: number | undefined;
  /** Port of HTTPS monitoring, when asked for. */
  readonly httpsPort: number | undefined;
  readonly broker: Broker;
  /** The default account's streams, when JetStream is enabled. */
  readonly jetstream: JetStream | undefined;
  /** Every account's JetStream, when JetStream is enabled: see JetStreams.setLimits for an account's limits changing while running. */
  readonly jetstreams: JetStreams | undefined;
  /** Port of the Kafka listener, when enabled. */
  readonly kafkaPort: number | undefined;
  /** The Kafka door, when enabled: its connections and memory budgets. */
  readonly kafka: KafkaDoor | undefined;
  /** This node's membership and the cluster's metadata, when `etcd` is configured. */
  readonly cluster: ClusterNode | undefined;
  /** The routes to the cluster's other nodes, when a route listener or routes are configured. */
  readonly routes: RouteManager | undefined;
  /** Stops listening and closes every connection. Safe to call twice. */
  close(): Promise<void>;
  /** Lame-duck mode: stop accepting, tell clients, close them gradually, then stop. */
  lameDuck(): Promise<void>;
  /**
   * nats-server's configuration reload, for what nagare can change while
   * running: the TLS certificate, key, CA and minimum version, read again
   * from their files (also when the paths are the same: a renewed
   * certificate). New connections, and HTTPS monitoring's, get them;
   * connections already open keep theirs. Any other option that differs
   * from the running server's throws, naming it, and nothing changes; so
   * does a file that cannot be used. Given a function, it reads the options
   * from it (a configuration file read again): what it throws is a failed
   * reload too. A failure is logged at error level (the log file included)
   * before it is thrown.
   */
  reload(options: ServerOptions | (() => ServerOptions)): void;
}

export async function startServer(options: ServerOptions = {}): Promise<NagareServer> {
  const opts = resolveOptions(options);
  const log = createLogger(opts);
  try {
    return await start(opts, log);
  } catch (err) {
    await log.close(); // what it said before failing is written before the caller reports the failure
    throw err;
  }
}

async function start(opts: ResolvedOptions, log: ServerLogger): Promise<NagareServer> {
  // Before anything is started: certificates that cannot be used stop the start with nothing to undo.
  const tlsFiles = opts.tls === undefined ? null : readTlsFiles(opts.tls);
  const natsTls = opts.tls === undefined ? null : loadNatsTls(opts.tls);
  const kafkaTls = opts.kafka?.tls === undefined ? null : { ...loadTls(opts.kafka.tls), verifyAndMap: opts.kafka.tls.verifyAndMap ?? false };
  const etcdTls = opts.etcd?.tls === undefined ? undefined : readEtcdTls(opts.etcd.tls);
  // Replaced by a reload that changes the users (reloadWith); operator mode's is for the server's life.
  let auth: Authenticator | JwtAuthenticator | null = opts.operator !== undefined ? new JwtAuthenticator(opts.operator.operators) : configuredUsers(opts);
  const broker = new Broker(opts, log);
  let operatorMode: OperatorMode | undefined;
  if (opts.operator !== undefined) {
    try {
      // The accounts (preload and resolver directory), trusted before anyone can connect.
      operatorMode = await OperatorMode.start(broker, auth as JwtAuthenticator, opts.operator);
    } catch (err) {
      broker.stop();
      throw err;
    }
  }

  let jetstreams: JetStreams | undefined;
  if (opts.jetstream) {
    // nats-server's default store is under the temp directory too.
    const storeDir = opts.storeDir ?? join(tmpdir(), "nagare", "jetstream");
    const sync = opts.syncInterval === "always" ? { sync: "always" as const } : { sync: "interval" as const, syncIntervalMs: opts.syncInterval };
    // Kafka batches stay in the store as produced; NATS readers get their records through this decoder, with or without the Kafka door.
    const serverLimits = new ServerJetStreamLimits(opts.jetstreamMaxMemory, opts.jetstreamMaxStorage);
    // A quarter of a route's max_pending for replication answers to one node: the rest for the core traffic beside them.
    const answerBudget = new AnswerBudget(Math.max(FETCH_BYTES, Math.floor(opts.maxPending / 4)));
    const apiRequests = new ApiRequestLimit(opts.jetstreamRequestQueueLimit, (dropped) => {
      log.warn(`JetStream API queue limit reached (${opts.jetstreamRequestQueueLimit} requests being served), dropped ${dropped} requests`);
      broker.system?.publish(API_LIMIT_REACHED_SUBJECT, limitReachedAdvisory(broker.serverName, dropped));
    });
    const jsOptions = { storeDir, maxPayload: opts.maxPayload, answerBudget, log, serverId: broker.serverId, pacing: broker, foreign: kafkaRecords, serverLimits, apiRequests, clustered: opts.etcd !== undefined, ...sync };
    // The system account has no JetStream, and answers no JetStream API (its subjects are the server's).
    const jsAccounts = [...broker.accounts.values()].filter((a) => a !== broker.system?.account);
    try {
      jetstreams = await JetStreams.start(jsOptions, jsAccounts, jetStreamAccounts(opts, auth), (account) => importsJetStreamApi(opts, account.name));
    } catch (err) {
      operatorMode?.close();
      broker.stop();
      throw err;
    }
  }
  const jetstream = jetstreams?.global;
  if (operatorMode !== undefined && jetstreams !== undefined) {
    const streams = jetstreams;
    // Account JWT updates on $SYS: an account's JetStream turned on, off, or its limits changed, while it runs.
    operatorMode.onJetStreamLimits = (key, limits) => {
      const account = broker.accounts.get(key);
      if (account === undefined) return;
      streams.setLimits(account, limits).catch((err: Error) => log.error(`account ${key}: applying its JetStream limits: ${err.message}`));
    };
  }
  // The monitoring endpoints over NATS, for the system account's users.
  const sysRequests: SystemRequests | undefined = broker.system === null ? undefined : startSystemRequests({ broker, jetstreams, cpu: new CpuSampler() }, broker.system);
  const stopCore = (): void => {
    sysRequests?.close();
    operatorMode?.close();
    broker.stop();
  };

  // The Kafka door's own header and marker subjects are refused on NATS publishes from the first one: the door opens after this
  // listener, and an account's door after its JetStream is turned on while running.
  if (opts.kafka !== undefined && jetstreams !== undefined) {
    for (const js of jetstreams.all()) reserveKafkaMarks(js);
    jetstreams.openListeners.add(reserveKafkaMarks);
  }
  const listener: Server = createServer({ noDelay: true }, (socket: Socket) => accept(broker, socket, natsTls, auth));
  listener.maxConnections = opts.maxConnections + 64; // beyond that the OS socket is dropped before we can say why
  try {
    await listen(listener, opts.port, opts.host);
  } catch (err) {
    await jetstreams?.close();
    stopCore();
    throw err;
  }
  const port = (listener.address() as { port: number }).port;
  broker.clientPort = port;
  const advertisedHost = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  const url = `nats://${advertisedHost}:${port}`;

  // Routes next: the client URLs they advertise are known now, and monitoring reads them.
  let routes: RouteManager | undefined;
  const cl = opts.cluster;
  if (cl !== undefined && (cl.port !== undefined || cl.routes !== undefined)) {
    routes = new RouteManager(broker, { clusterName: opts.clusterName, host: cl.host ?? opts.host, port: cl.port, routes: cl.routes ?? [], ...(cl.advertise !== undefined ? { advertise: cl.advertise } : {}) });
    try {
      await routes.start();
    } catch (err) {
      await routes.close();
      listener.close();
      await jetstreams?.close();
      stopCore();
      throw new Error(`route listener ${cl.host ?? opts.host}:${cl.port}: ${(err as Error).message}`);
    }
  }

  let monitor: Monitor | undefined;
  let secureMonitor: Monitor | undefined;
  let cluster: ClusterNode | undefined;
  let clusterStreams: ClusterStreams | undefined;
  /** In lame duck: the node's record says so, and placement chooses other nodes. */
  let draining = false;
  const clusterView = (): ReturnType<ClusterNode["view"]> | undefined => cluster?.view();
  if (opts.httpPort !== undefined || opts.httpsPort !== undefined) {
    try {
      if (opts.httpPort !== undefined) monitor = await startMonitor(broker, opts.httpHost, opts.httpPort, jetstreams, undefined, clusterView, routes);
      // resolveOptions made sure of the certificate: HTTPS without tls never starts.
      if (opts.httpsPort !== undefined) secureMonitor = await startMonitor(broker, opts.httpHost, opts.httpsPort, jetstreams, tlsFiles!, clusterView, routes);
    } catch (err) {
      listener.close();
      await routes?.close();
      await monitor?.close();
      await jetstreams?.close();
      stopCore();
      throw err;
    }
  }

  let kafka: KafkaDoor | undefined;
  if (opts.kafka !== undefined && jetstreams !== undefined) {
    const k = opts.kafka;
    const kafkaPort = k.port ?? KAFKA_DEFAULTS.port;
    try {
      kafka = await KafkaDoor.start(
        broker,
        jetstreams,
        {
          host: k.host ?? opts.host,
          port: kafkaPort < 0 ? 0 : kafkaPort,
          advertisedHost: k.advertise,
          autoCreateTopics: k.autoCreateTopics ?? KAFKA_DEFAULTS.autoCreateTopics,
          defaultPartitions: k.numPartitions ?? KAFKA_DEFAULTS.defaultPartitions,
          defaultReplicationFactor: k.defaultReplicationFactor ?? KAFKA_DEFAULTS.defaultReplicationFactor,
          minInsyncReplicas: k.minInsyncReplicas ?? KAFKA_DEFAULTS.minInsyncReplicas,
          maxRequestBytes: k.maxRequestBytes ?? KAFKA_DEFAULTS.maxRequestBytes,
          initialRebalanceDelayMs: k.initialRebalanceDelayMs ?? KAFKA_DEFAULTS.initialRebalanceDelayMs,
          minSessionTimeoutMs: k.minSessionTimeoutMs ?? KAFKA_DEFAULTS.minSessionTimeoutMs,
          maxSessionTimeoutMs: k.maxSessionTimeoutMs ?? KAFKA_DEFAULTS.maxSessionTimeoutMs,
          fetchMaxBytes: k.fetchMaxBytes ?? KAFKA_DEFAULTS.fetchMaxBytes,
          connectionsMaxIdleMs: k.connectionsMaxIdleMs ?? KAFKA_DEFAULTS.connectionsMaxIdleMs,
          offsetsRetentionMs: k.offsetsRetentionMs ?? KAFKA_DEFAULTS.offsetsRetentionMs,
          offsetsRetentionCheckIntervalMs: k.offsetsRetentionCheckIntervalMs ?? KAFKA_DEFAULTS.offsetsRetentionCheckIntervalMs,
          offsetsCommitTimeoutMs: k.offsetsCommitTimeoutMs ?? KAFKA_DEFAULTS.offsetsCommitTimeoutMs,
          logCleanerBackoffMs: k.logCleanerBackoffMs ?? KAFKA_DEFAULTS.logCleanerBackoffMs,
          maxDecompressBytes: k.maxDecompressBytes ?? KAFKA_DEFAULTS.maxDecompressBytes,
          maxResponseBytes: k.maxResponseBytes ?? KAFKA_DEFAULTS.maxResponseBytes,
          maxQueuedRequestBytes: k.maxQueuedRequestBytes ?? KAFKA_DEFAULTS.maxQueuedRequestBytes,
          maxProducerStates: k.maxProducerStates ?? KAFKA_DEFAULTS.maxProducerStates,
          autoLeaderRebalance: k.autoLeaderRebalance ?? KAFKA_DEFAULTS.autoLeaderRebalance,
          leaderImbalanceCheckIntervalMs: k.leaderImbalanceCheckIntervalMs ?? KAFKA_DEFAULTS.leaderImbalanceCheckIntervalMs,
          leaderImbalancePerBrokerPercentage: k.leaderImbalancePerBrokerPercentage ?? KAFKA_DEFAULTS.leaderImbalancePerBrokerPercentage,
          tls: kafkaTls,
          saslMechanisms: k.saslMechanisms ?? KAFKA_SASL_MECHANISMS,
          clustered: opts.etcd !== undefined,
        },
        log,
        auth,
      );
    } catch (err) {
      listener.close();
      await routes?.close();
      await monitor?.close();
      await secureMonitor?.close();
      await jetstreams?.close();
      stopCore();
      throw err;
    }
  }

  log.info(`Starting nagare (NATS protocol level ${ADVERTISED_VERSION}), server id ${broker.serverId}`);
  log.info(`Listening for client connections on ${opts.host}:${port}`);
  if (auth !== null) log.info(`Client connections require authentication${opts.authorization?.token !== undefined ? " (token)" : ""}`);
  if (natsTls !== null) log.info(`TLS required for client connections${natsTls.handshakeFirst ? " (handshake first)" : ""}${natsTls.verify ? ", client certificates verified" : ""}`);
  if (monitor) log.info(`Starting http monitor on ${opts.httpHost}:${monitor.port}`);
  if (secureMonitor) log.info(`Starting https monitor on ${opts.httpHost}:${secureMonitor.port}`);
  if (jetstream) log.info(`JetStream enabled, storing under ${jetstream.options.storeDir}`);
  if (kafka) {
    const security = `${kafkaTls !== null ? "TLS" : "plaintext"}${kafkaTls?.verify ? ", client certificates verified" : ""}${auth !== null ? `, SASL ${kafka.options.saslMechanisms.join(" ")}` : ""}`;
    log.info(`Listening for Kafka clients on ${kafka.options.host}:${kafka.port} (${security})`);
  }

  // Last, once every listener's address is known: the node's record in etcd carries them.
  if (opts.etcd !== undefined) {
    const e = opts.etcd;
    try {
      cluster = await ClusterNode.start({
        clusterName: opts.clusterName,
        serverName: opts.serverName,
        etcd: { endpoints: e.endpoints, prefix: e.prefix, tls: etcdTls, dialTimeoutMs: e.dialTimeout, requestTimeoutMs: e.requestTimeout, leaseTtlS: e.leaseTtl / 1000 },
        describe: () => nodeRecord(opts, broker, port, jetstream, kafka, monitor ?? secureMonitor, routes, draining),
        log,
      });
      if (routes !== undefined) followMembers(cluster, routes);
      // Streams follow the placements from now on: those placed here are created, those on disk matched.
      if (jetstreams !== undefined) clusterStreams = await ClusterStreams.start(jetstreams, cluster.placements, log);
      // A broker of the Kafka cluster once it has its id: until then the door turns clients away.
      if (kafka !== undefined) kafka.attachCluster(await EtcdKafkaCluster.join(cluster));
    } catch (err) {
      await cluster?.leave();
      listener.close();
      await routes?.close();
      await monitor?.close();
      await secureMonitor?.close();
      await kafka?.close();
      await jetstreams?.close();
      stopCore();
      throw new Error(`cluster ${opts.clusterName}: ${(err as Error).message}`);
    }
  }

  let portsFile: string | undefined;
  if (opts.portsFileDir) {
    portsFile = join(opts.portsFileDir, `${exeName()}_${process.pid}.ports`);
    const hosts = listHosts(opts.host);
    const ports: Record<string, string[]> = { nats: hosts.map((h) => `nats://${h}:${port}`) };
    const mh = listHosts(opts.httpHost);
    const monitoring = [...(monitor ? mh.map((h) => `http://${h}:${monitor!.port}`) : []), ...(secureMonitor ? mh.map((h) => `https://${h}:${secureMonitor!.port}`) : [])];
    if (monitoring.length > 0) ports.monitoring = monitoring;
    if (kafka) ports.kafka = listHosts(kafka.options.host).map((h) => `${h}:${kafka!.port}`);
    // Written whole under another name, then renamed: a harness polling for `*.ports` never reads half of it.
    writeFileSync(`${portsFile}.tmp`, JSON.stringify(ports));
    renameSync(`${portsFile}.tmp`, portsFile);
  }

  log.info("Server is ready");

  /**
   * Kafka's state, then the streams, closed within STOP_WAIT_MS (stopWaitMs):
   * a disk that stops answering a write or sync held the stop for good. Past
   * it the stop goes on and names what is not closed; what those had not
   * synced was never acknowledged. The store stays locked until they end.
   */
  const closeStore = async (): Promise<void> => {
    let kafkaClosed = kafka === undefined;
    const closed = (async () => {
      await kafka?.close();
      kafkaClosed = true;
      await jetstreams?.close();
    })();
    const waitMs = jetstreams?.options.stopWaitMs ?? STOP_WAIT_MS;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(resolve, waitMs, false)));
    // A failure before the bound fails the stop, as before; one after it is only logged.
    const ended = await Promise.race([closed.then(() => true), late]).finally(() => clearTimeout(timer));
    if (ended) return;
    void closed.catch((err: unknown) => log.error(`closing the store after the stop: ${(err as Error).message}`));
    const left = [...(kafkaClosed ? [] : ["the Kafka groups' and transactions' state"]), ...(jetstreams?.unclosed() ?? [])];
    log.warn(`store not closed within ${waitMs} ms (a disk that does not answer?); stopping without: ${left.length > 0 ? left.join(", ") : "the store's lock"}; what they had not synced was never acknowledged; the store stays locked until they close`);
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      broker.lameDuck = true;
      // Out of the cluster first: the others see the node go at once rather than when its lease expires.
      clusterStreams?.close();
      await cluster?.leave();
      await routes?.close();
      const listenerClosed = new Promise<void>((resolve) => listener.close(() => resolve()));
      for (const c of [...broker.connections.values()]) c.close("Server Shutdown");
      await listenerClosed;
      if (monitor) await monitor.close();
      if (secureMonitor) await secureMonitor.close();
      await closeStore();
      stopCore();
      if (portsFile) {
        try {
          unlinkSync(portsFile);
        } catch {
          // already gone
        }
      }
      log.info("Server Exiting..");
      await log.close();
    })();
    return closing;
  };

  const lameDuck = async (): Promise<void> => {
    if (closing) return closing;
    log.info("Entering lame duck mode, stop accepting new clients");
    const started = performance.now();
    broker.lameDuck = true;
    listener.close();
    if (cluster !== undefined) {
      // Placed on no more (its record says draining), it moves what it leads away while its clients still reach it,
      // within the duration less the grace period; what does not move in time is unavailable once it is gone.
      draining = true;
      await cluster.membership.refresh();
      if (jetstreams !== undefined) {
        const drained = await jetstreams.drain(started + Math.max(0, opts.lameDuckDuration - opts.lameDuckGracePeriod));
        if (drained.moved.length > 0) log.info(`cluster ${opts.clusterName}: lame duck moved ${drained.moved.length} stream(s) away: ${drained.moved.join(", ")}`);
        for (const x of drained.stayed) log.warn(`cluster ${opts.clusterName}: lame duck could not move stream ${x.stream} away (${x.why}): it is unavailable while this node is down`);
      }
      log.info(`cluster ${opts.clusterName}: leaving (lame duck)`);
      await cluster.leave();
    }
    for (const c of broker.connections.values()) c.notifyLameDuck();
    broker.flushDirty();
    const left = Math.max(0, opts.lameDuckDuration - (performance.now() - started));
    await delay(Math.min(opts.lameDuckGracePeriod, left));
    // Spread the remaining closes over what is left of the duration, so that
    // reconnecting clients don't stampede the other servers.
    const conns = [...broker.connections.values()];
    const spread = Math.max(0, left - opts.lameDuckGracePeriod);
    const batches = Math.min(conns.length, 10);
    for (let b = 0; b < batches; b++) {
      for (let i = b; i < conns.length; i += batches) conns[i].close("Server Shutdown");
      if (b < batches - 1 && spread > 0) await delay(spread / batches);
    }
    await close();
  };

  const reload = (options: ServerOptions | (() => ServerOptions)): void => {
    try {
      reloadWith(typeof options === "function" ? options() : options);
    } catch (err) {
      // Where the operator looks (the log file, if there is one): nothing changed, the file on disk says otherwise.
      log.error(`Failed to reload the configuration, the running one is kept: ${(err as Error).message}`);
      throw err;
    }
  };

  const reloadWith = (options: ServerOptions): void => {
    const next = resolveOptions(options);
    const fixed = notReloadable(opts, next);
    if (fixed !== null) throw new Error(`config reload not supported for ${fixed} (a running server can reload TLS certificates, users and permissions only: restart it to change this)`);
    // Everything that can fail is done before anything changes.
    const files = next.tls !== undefined && natsTls !== null ? readTlsFiles(next.tls) : null;
    const usersChanged = opts.operator === undefined && !(isDeepStrictEqual(opts.authorization, next.authorization) && isDeepStrictEqual(opts.accounts, next.accounts));
    const nextAuth = usersChanged ? configuredUsers(next) : null;
    if (files !== null && next.tls !== undefined && natsTls !== null) {
      // Each connection takes the context when it is accepted: those open keep the one they have.
      natsTls.context = createSecureContext(files);
      secureMonitor?.setSecureContext(files);
      opts.tls = next.tls;
      log.info(`Reloaded: TLS certificate ${next.tls.certFile}`);
    }
    if (opts.authTimeout !== next.authTimeout) {
      opts.authTimeout = next.authTimeout;
      log.info(`Reloaded: authorization timeout = ${next.authTimeout / 1000}`);
    }
    if (usersChanged) {
      const previous = auth;
      auth = nextAuth;
      // What INFO's auth_required, /varz and /accountz read.
      opts.authorization = next.authorization;
      opts.accounts = next.accounts;
      const clients = [...broker.connections.values()].filter((c): c is NatsConnection => c instanceof NatsConnection);
      const kafkaClients = kafka?.connections.size ?? 0;
      log.info(`Reloaded: authorization (users and permissions: ${clients.length} NATS connection${clients.length === 1 ? "" : "s"}${kafka !== undefined ? ` and ${kafkaClients} Kafka` : ""} to check again)`);
      // Shared by this reload's checks only: it holds the passwords presented.
      const memo: PasswordMemo = new Map();
      for (const c of clients) c.reauthorize(nextAuth, memo);
      kafka?.reauthorize(nextAuth, previous);
    }
    log.info("Reloaded server configuration");
  };

  return { host: opts.host, port, url, httpPort: monitor?.port, httpsPort: secureMonitor?.port, kafkaPort: kafka?.port, kafka, cluster, routes, broker, jetstream, jetstreams, close, lameDuck, reload };
}

/**
 * The accounts with JetStream and their limits: the default account
 * whenever the server has JetStream (nats-server gives `$G` none once
 * other accounts are configured; nagare keeps serving it, as before
 * accounts had JetStream), configured accounts with `jetstream`, and in
 * operator mode the accounts whose JWT gives them JetStream limits.
 */
function jetStreamAccounts(opts: ResolvedOptions, auth: ClientAuth | null): Map<string, AccountLimits> {
  const out = new Map<string, AccountLimits>([[GLOBAL_ACCOUNT, { ...UNLIMITED_JETSTREAM }]]);
  for (const [name, a] of Object.entries(opts.accounts ?? {})) {
    const limits = jetStreamLimitsOf(a.jetstream);
    if (limits !== null) out.set(name, limits);
  }
  if (auth instanceof JwtAuthenticator) for (const [key, limits] of auth.jetStreamLimits()) out.set(key, limits);
  return out;
}

/** Whether an account imports a service on `$JS.API.INFO`: another account's JetStream answers it there, not "not enabled". */
function importsJetStreamApi(opts: ResolvedOptions, account: string): boolean {
  return (opts.accounts?.[account]?.imports ?? []).some((i) => !isStreamImport(i) && subjectMatches(i.to ?? i.service.subject, "$JS.API.INFO"));
}

/** What the node publishes about itself in etcd: its addresses and its load, read from memory. */
function nodeRecord(opts: ResolvedOptions, broker: Broker, port: number, jetstream: JetStream | undefined, kafka: KafkaDoor | undefined, monitor: Monitor | undefined, routes: RouteManager | undefined, draining: boolean): NodeRecord {
  let subscriptions = 0;
  for (const a of broker.accounts.values()) subscriptions += a.sublist.size;
  let partitions = 0;
  let bytes = 0;
  for (const s of jetstream?.streams.values() ?? []) {
    for (const p of s.partitions) {
      partitions++;
      bytes += p.state().bytes;
    }
  }
  const kafkaHost = kafka === undefined ? "" : (kafka.options.advertisedHost ?? listHosts(kafka.options.host)[0]);
  const scheme = monitor?.secure ? "https" : "http";
  return {
    id: broker.serverId,
    name: opts.serverName,
    cluster: opts.clusterName,
    started: broker.startedAt.toISOString(),
    client_urls: listHosts(opts.host).map((h) => `nats://${h}:${port}`),
    route_url: routes === undefined || routes.routeUrl === "" ? null : routes.routeUrl,
    kafka: kafka === undefined ? null : `${kafkaHost}:${kafka.port}`,
    http: monitor === undefined ? null : `${scheme}://${listHosts(opts.httpHost)[0]}:${monitor.port}`,
    tags: opts.serverTags,
    state: draining ? "draining" : "serving",
    load: { connections: broker.connections.size, subscriptions, streams: jetstream?.streams.size ?? 0, partitions, bytes },
  };
}

/**
 * Routes to the nodes registered in etcd: each member's `route_url` is
 * dialled (until it leaves), as a configured route would be. Routes need
 * no etcd once up: this only finds the peers.
 */
function followMembers(cluster: ClusterNode, routes: RouteManager): void {
  const known = new Set<string>();
  const sync = (): void => {
    const now = new Set<string>();
    for (const m of cluster.membership.members()) {
      const url = m.record?.route_url;
      if (m.self || typeof url !== "string" || url === "") continue;
      now.add(url);
      if (!known.has(url)) routes.addPeerUrl(url, false);
    }
    for (const url of known) if (!now.has(url)) routes.removePeerUrl(url);
    known.clear();
    for (const u of now) known.add(u);
  };
  sync();
  cluster.membership.on("members", sync);
}

/**
 * Loads every certificate and key the options name (NATS, Kafka, etcd), as a start would, and throws what would stop
 * it: `nagare server -t` checks them, as nats-server's does, rather than call valid a file that cannot start.
 */
export function checkTlsFiles(options: ServerOptions): void {
  const opts = resolveOptions(options);
  const check = (block: TlsFilesError["block"], load: () => unknown): void => {
    try {
      load();
    } catch (err) {
      throw new TlsFilesError(block, (err as Error).message);
    }
  };
  if (opts.tls !== undefined) check("tls", () => loadNatsTls(opts.tls!));
  if (opts.kafka?.tls !== undefined) check("kafka.tls", () => loadTls(opts.kafka!.tls!));
  if (opts.etcd?.tls !== undefined) check("etcd.tls", () => readEtcdTls(opts.etcd!.tls!));
}

/** Certificate files that cannot serve, with the block that names them (where a configuration file set it). */
export class TlsFilesError extends Error {
  constructor(
    readonly block: "tls" | "kafka.tls" | "etcd.tls",
    message: string,
  ) {
    super(message);
    this.name = "TlsFilesError";
  }
}

/** The CA and client certificate for etcd, read before anything starts: a file that cannot be read stops the start. */
function readEtcdTls(t: NonNullable<NonNullable<ResolvedOptions["etcd"]>["tls"]>): EtcdTls {
  const read = (what: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`etcd TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  return { ca: read("CA certificate", t.caFile), cert: read("certificate", t.certFile), key: read("key", t.keyFile) };
}

/** The certificate, key and CA of `tls`, read and checked: what reloads and HTTPS monitoring are served with. */
function readTlsFiles(t: TlsOptions): SecureContextOptions {
  return loadTls(t).files;
}

/** TLS for NATS clients: the context, and when the handshake comes. */
function loadNatsTls(t: TlsOptions): NatsTls {
  const { context, verify, timeoutMs } = loadTls(t);
  return { context, verify, verifyAndMap: t.verifyAndMap ?? false, timeoutMs, handshakeFirst: t.handshakeFirst ?? false, allowNonTls: t.allowNonTls ?? false };
}

/**
 * A TLS context from the certificate files, for either door; a file that
 * cannot be read, or certificates that make no context, stop the start: a
 * server asked for TLS never serves without it.
 */
function loadTls(t: KafkaTlsOptions): { context: SecureContext; files: SecureContextOptions; verify: boolean; timeoutMs: number } {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const cert = read("certificate", t.certFile);
  const key = read("key", t.keyFile);
  const ca = t.caFile === undefined ? undefined : read("CA certificate", t.caFile);
  // As nats-server ("failed to parse root ca certificate"): a CA file without one certificate that parses (empty, a
  // key) stops the start; OpenSSL took it and the server started, asking for client certificates it could verify none of.
  if (ca !== undefined && !holdsCertificate(ca)) throw new Error(`TLS CA certificate ${t.caFile}: no PEM certificate in it parses (failed to parse root ca certificate)`);
  // The server picks the suite from its own order, as nats-server (Go) does; see opensslCiphers.
  const files: SecureContextOptions = { cert, key, ca, minVersion: t.minVersion ?? "TLSv1.2", ciphers: opensslCiphers(t.cipherSuites), honorCipherOrder: true, ecdhCurve: opensslCurves(t.curvePreferences) };
  let context: SecureContext;
  try {
    context = createSecureContext(files);
  } catch (err) {
    throw new Error(`TLS certificate ${t.certFile} and key ${t.keyFile}: ${(err as Error).message}`);
  }
  // verify_and_map needs a verified certificate to map, as in nats-server.
  return { context, files, verify: t.verify === true || t.verifyAndMap === true, timeoutMs: t.timeoutMs ?? DEFAULTS.tlsTimeout };
}

/** Whether a PEM file holds at least one certificate that parses (Go's AppendCertsFromPEM, which skips other blocks). */
function holdsCertificate(pem: Buffer): boolean {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  for (const b of blocks) {
    try {
      new X509Certificate(b);
      return true;
    } catch {
      // not one: the next
    }
  }
  return false;
}

/**
 * The longest a stop waits for the store to close: the 10 s JetStream.close
 * gives stream changes under way (CLOSE_WAIT_MS), and as long again to
 * close the streams' files after them; within Kubernetes' 30 s grace.
 */
const STOP_WAIT_MS = 20_000;

/** TLS options a reload may change: all of them go into the secure context. */
const RELOADABLE_TLS = new Set<keyof TlsOptions>(["certFile", "keyFile", "caFile", "minVersion", "cipherSuites", "curvePreferences"]);

/** The first option (by its name in ServerOptions) that differs and a running server cannot change; null if none. */
function notReloadable(now: ResolvedOptions, next: ResolvedOptions): string | null {
  for (const key of Object.keys(now) as Array<keyof ResolvedOptions>) {
    if (key === "tls") continue;
    // Users and permissions, not the accounts themselves (their exports, imports and JetStream): outside operator mode.
    if (key === "authorization" && now.operator === undefined) continue;
    // authorization { timeout }: read by each connection as it starts.
    if (key === "authTimeout") continue;
    if (key === "accounts" && now.operator === undefined) {
      if (!isDeepStrictEqual(withoutUsers(now.accounts), withoutUsers(next.accounts))) return "accounts (other than their users)";
      continue;
    }
    if (!isDeepStrictEqual(now[key], next[key])) return key;
  }
  if ((now.tls === undefined) !== (next.tls === undefined)) return "tls";
  if (now.tls !== undefined && next.tls !== undefined) {
    const keys = new Set([...Object.keys(now.tls), ...Object.keys(next.tls)] as Array<keyof TlsOptions>);
    for (const k of keys) if (!RELOADABLE_TLS.has(k) && !isDeepStrictEqual(now.tls[k], next.tls[k])) return `tls.${k}`;
  }
  return null;
}

/** The configured users (authorization and accounts), or null when clients need not authenticate. */
function configuredUsers(o: ResolvedOptions): Authenticator | null {
  if (!authRequired(o)) return null;
  return new Authenticator(o.authorization ?? {}, o.accounts ?? {});
}

/** The accounts less what a reload may change (their users and those users' default permissions). */
function withoutUsers(accounts: ResolvedOptions["accounts"]): Record<string, unknown> | undefined {
  if (accounts === undefined) return undefined;
  return Object.fromEntries(Object.entries(accounts).map(([name, { users: _users, defaultPermissions: _defaults, ...rest }]) => [name, rest]));
}

function accept(broker: Broker, socket: Socket, tls: NatsTls | null, auth: ClientAuth | null): void {
  if (broker.lameDuck) {
    socket.destroy();
    return;
  }
  if (broker.connections.size >= broker.options.maxConnections) {
    socket.on("error", () => socket.destroy());
    socket.write(infoLine(broker, 0, socket.remoteAddress ?? "", false));
    socket.end("-ERR 'maximum connections exceeded'\r\n");
    // end() lets the -ERR reach the client; one that never closes its side (nats.js does not) would hold the socket, and close(), forever.
    setTimeout(() => socket.destroy(), 1000).unref();
    return;
  }
  new NatsConnection(broker, broker.globalAccount, socket, tls, auth);
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The name the ports file is written under: nats-server uses the basename of its executable. */
function exeName(): string {
  const argv0 = basename(process.argv0);
  if (argv0 !== "node" && argv0 !== "nodejs" && argv0 !== "") return argv0;
  const script = basename(process.argv[1] ?? "nagare").replace(/\.[cm]?js$/, "");
  return script === "main" || script === "" ? "nagare" : script;
}

function listHosts(host: string): string[] {
  if (host !== "0.0.0.0" && host !== "::") return [host];
  const out = ["127.0.0.1"];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) out.push(a.address);
  }
  return out;
}
