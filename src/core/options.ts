import { didYouMean } from "../util/closest.js";
import { parsePermissionEntry, type AuthOptions, type Permissions, type ResponsePermissionOptions, type SubjectRules, type UserOptions } from "./auth.js";
import { operatorSystemAccount, type DirResolverOptions, type OperatorOptions } from "./jwt-auth.js";
import { DEFAULT_SYSTEM_ACCOUNT } from "./account.js";
import { cipherSuiteProblem, curveProblem } from "./tls-names.js";
import { dnKey, parseDn } from "./tls-map.js";
import { importError, type AccountOptions, type JetStreamLimits, type ServiceExport, type ServiceImport, type StreamExport, type StreamImport } from "./accounts.js";

/**
 * Server settings. Names follow nats-server's configuration keys (camelCased)
 * so that a nats-server config file maps onto them one to one.
 */
export interface ServerOptions {
  /** Client listener address. Embedded default 127.0.0.1, CLI default 0.0.0.0. */
  host?: string;
  /** Client port. 0 or -1 picks a free port (nats-server uses -1 for that). Default 4222. */
  port?: number;
  /** Monitoring HTTP listener; off unless a port is given. 0 or -1 picks a free port. */
  httpHost?: string;
  httpPort?: number;
  /**
   * Monitoring over HTTPS on this port (nats-server's `https_port`, `-ms`),
   * with the certificate of `tls`, which it requires; on `httpHost`. 0 or -1
   * picks a free port. May be given beside `httpPort`.
   */
  httpsPort?: number;
  serverName?: string;
  /** nats-server's `server_tags`: what JetStream's `placement.tags` (and Kafka topic placement) match, lower-cased. */
  serverTags?: string[];
  /** Largest payload (headers + body) a client may publish. */
  maxPayload?: number;
  /** Bytes queued to one client before it is cut off as a slow consumer. */
  maxPending?: number;
  maxControlLine?: number;
  maxConnections?: number;
  /** Per connection; 0 means unlimited, as in nats-server. */
  maxSubscriptions?: number;
  /** Closed client connections kept for `/connz?state=closed` (nats-server's `max_closed_clients`, default 10,000; 0 keeps none). */
  maxClosedClients?: number;
  /** Milliseconds between server pings. */
  pingInterval?: number;
  /** Unanswered pings before a connection is closed as stale. */
  maxPingsOut?: number;
  /**
   * Milliseconds a new connection has to send CONNECT, counted once its TLS
   * handshake is done. Default 2,000; with `tls`, its timeout plus one
   * second, as nats-server.
   */
  authTimeout?: number;
  /** Milliseconds a client write may stay blocked before the client is cut off. */
  writeDeadline?: number;
  /** Lame duck: total time to close clients, and the pause before the first close. */
  lameDuckDuration?: number;
  lameDuckGracePeriod?: number;
  /** Directory where `<exe>_<pid>.ports` is written once listeners are up. */
  portsFileDir?: string;
  /** Enables streams, consumers, KV and object store (the JetStream API). */
  jetstream?: boolean;
  /** Where streams are stored; default `<tmpdir>/nagare/jetstream`, as nats-server does. */
  storeDir?: string;
  /**
   * When stream data is fsynced: "always" (default: an ack means the message
   * is on disk) or every N ms (acks once written to the page cache; a power
   * loss can lose up to N ms of acknowledged messages, a process crash none).
   * nats-server's `sync_interval`.
   */
  syncInterval?: "always" | number;
  /**
   * The server's JetStream limits over every account, in bytes
   * (nats-server's `jetstream { max_memory_store, max_file_store }`):
   * stream reservations (`max_bytes`) and account limits must fit in them,
   * and publishes are refused once streams hold more. 0 or -1: none.
   */
  jetstreamMaxMemory?: number;
  jetstreamMaxStorage?: number;
  /**
   * The JetStream API requests served at once on this server, past which
   * more are dropped unanswered (nats-server's `jetstream {
   * request_queue_limit }`; default 10,000).
   */
  jetstreamRequestQueueLimit?: number;
  /** The Kafka door; off unless given. It serves the streams, so it turns JetStream on. */
  kafka?: KafkaListenerOptions;
  /** TLS for NATS client connections (nats-server's `tls {}`): every client must use it. */
  tls?: TlsOptions;
  /** Who may connect and what they may do (nats-server's `authorization {}`). */
  authorization?: AuthOptions;
  /** Accounts beside the default one, each with its users, exports and imports (nats-server's `accounts {}`). */
  accounts?: Record<string, AccountOptions>;
  /** Operator mode: trusted operators and the MEMORY resolver's account JWTs (nats-server's `operator`, `resolver_preload`). */
  operator?: OperatorOptions;
  /**
   * The account whose users may ask for the server's status and see its
   * events (nats-server's `system_account`): one of `accounts`, or in
   * operator mode an account's public key. Default `$SYS`, made if not
   * configured (in operator mode: the operator JWT's `system_account`).
   */
  systemAccount?: string;
  /** No system account at all (nats-server's `no_system_account`): no status requests, no events. */
  noSystemAccount?: boolean;
  /** Debug lines (`[DBG]`): connections opening and closing, and more. */
  debug?: boolean;
  /** Protocol trace (`[TRC]`), as nats-server's `-V`. */
  trace?: boolean;
  /** Silence all logging (embedded default, unless `logFile` is given). */
  noLog?: boolean;
  /** Append the log here instead of stderr. */
  logFile?: string;
  /** Time on every log line (default true), in local time unless `logtimeUtc`. */
  logtime?: boolean;
  logtimeUtc?: boolean;
  /** Payload bytes shown per traced message; 0 (default) shows all. */
  maxTracedMsgLen?: number;
  /**
   * nats-server's `cluster {}`: names the cluster (its keys in etcd), the
   * route listener and the routes to dial. A cluster needs a route listener,
   * routes or `etcd` (nodes found there).
   */
  cluster?: ClusterOptions;
  /** Where the cluster is coordinated: the node registers itself there at start (needs `serverName`). */
  etcd?: EtcdOptions;
}

export interface ClusterOptions {
  /** Default "nagare": nodes of one cluster share it, and its keys live under `<etcd prefix>/<name>/`. */
  name?: string;
  /** The route listener (nats-server's `listen`, `--cluster nats://host:port`); port -1 or 0 picks a free one. */
  host?: string;
  port?: number;
  /** Route URLs of other nodes (nats-server's `routes`, `--routes`), dialled until connected. */
  routes?: string[];
  /**
   * The `host:port` other nodes dial to reach this one (nats-server's
   * `cluster { advertise }`), when it is not the listener's own address:
   * behind NAT, a port mapping or a proxy. Published in etcd and gossiped.
   */
  advertise?: string;
}

export interface EtcdOptions {
  /** etcd's client URLs, `http://host:port` or `https://host:port`, all of one scheme. */
  endpoints: string[];
  /** Keys live under `<prefix>/<cluster name>/` (default "/nagare"). */
  prefix?: string;
  /** For `https://` endpoints: the CA to trust (default the system's), and a client certificate for an etcd that asks for one. */
  tls?: EtcdTlsOptions;
  /** Milliseconds to connect to etcd (default 5,000). */
  dialTimeout?: number;
  /** Milliseconds for one call to etcd (default 5,000). */
  requestTimeout?: number;
  /**
   * The node's lease TTL in milliseconds, whole seconds (default 10,000; etcd
   * grants at least its own minimum, 2 s with its default election timeout).
   * A node that loses etcd stops counting on its lease within this.
   */
  leaseTtl?: number;
}

export interface EtcdTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** TLS for client connections. Files are read once, at start; one that cannot be read stops the start. */
export interface TlsOptions {
  /** The server's certificate chain and private key (PEM). */
  certFile: string;
  keyFile: string;
  /** CAs that client certificates must chain to (PEM); default: the system's. */
  caFile?: string;
  /** Require and verify a client certificate (mutual TLS). */
  verify?: boolean;
  /**
   * nats-server's `verify_and_map`: require a client certificate (as
   * `verify`) and take the user it names as the client's identity, by its
   * email addresses, DNS names, URIs or subject (core/tls-map.ts). Needs
   * users; they may go without a password.
   */
  verifyAndMap?: boolean;
  /** Milliseconds a client has to complete the handshake (default 2,000). */
  timeoutMs?: number;
  /** Handshake before anything else (nats-server 2.10's `handshake_first`); else after the plain INFO, as NATS clients upgrade. */
  handshakeFirst?: boolean;
  /**
   * nats-server's `allow_non_tls`: clients may also speak plain NATS (INFO
   * says `tls_available` instead of `tls_required`); one that starts a
   * handshake after INFO gets TLS. Not with `handshakeFirst`.
   */
  allowNonTls?: boolean;
  minVersion?: "TLSv1.2" | "TLSv1.3";
  /**
   * TLS 1.2 cipher suites by nats-server's (Go's) names, e.g.
   * `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`; default nats-server's six
   * ECDHE AEAD suites. TLS 1.3 suites named here restrict TLS 1.3 too
   * (Go ignores them; without any, TLS 1.3 keeps all three).
   */
  cipherSuites?: string[];
  /** Key exchange groups by nats-server's names (`X25519`, `CurveP256`, `CurveP384`, `CurveP521`), preferred first. */
  curvePreferences?: string[];
}

export interface KafkaListenerOptions {
  /** Default: the client listener's host. */
  host?: string;
  /** Default 9092; 0 or -1 picks a free port. */
  port?: number;
  /** Host named in Metadata; default: the address each client connected to. */
  advertise?: string;
  /** Kafka's auto.create.topics.enable (default true). */
  autoCreateTopics?: boolean;
  /** Kafka's num.partitions: partitions of a topic created without a count (default 1). */
  numPartitions?: number;
  /** Kafka's default.replication.factor: copies of each partition of a topic created without a factor (-1) or auto-created (default 1, at most 5). */
  defaultReplicationFactor?: number;
  /** Kafka's min.insync.replicas: the in-sync replicas an acks=all produce needs, for a topic created without its own (default 1). */
  minInsyncReplicas?: number;
  /** Kafka's socket.request.max.bytes (default 100 MiB). */
  maxRequestBytes?: number;
  /** Kafka's group.initial.rebalance.delay.ms (default 3000). */
  initialRebalanceDelayMs?: number;
  /** Kafka's group.min.session.timeout.ms: the shortest session a group member may ask for (default 6000). */
  minSessionTimeoutMs?: number;
  /** Kafka's group.max.session.timeout.ms: the longest (default 30 minutes). */
  maxSessionTimeoutMs?: number;
  /** Kafka's fetch.max.bytes: most record bytes in one fetch response, and in one connection's unwritten responses (default 55 MiB). */
  fetchMaxBytes?: number;
  /** Kafka's connections.max.idle.ms: an idle connection is closed after this (default 10 minutes; 0: never). */
  connectionsMaxIdleMs?: number;
  /** Kafka's offsets.retention.minutes, in milliseconds: how long an Empty group's offsets, or a standalone commit, are kept (default 7 days). */
  offsetsRetentionMs?: number;
  /** Kafka's offsets.retention.check.interval.ms (default 10 minutes). */
  offsetsRetentionCheckIntervalMs?: number;
  /** Kafka's offsets.commit.timeout.ms: an OffsetCommit not stored within this is answered REQUEST_TIMED_OUT (default 5 s). */
  offsetsCommitTimeoutMs?: number;
  /** Kafka's log.cleaner.backoff.ms: how often compacted topics are looked at for compaction (default 15 s). */
  logCleanerBackoffMs?: number;
  /** Decompressed produce batches held at once, across all connections (default 256 MiB); also caps one batch's expansion. */
  maxDecompressBytes?: number;
  /** Fetch room and responses not yet written, across all connections (default 256 MiB). */
  maxResponseBytes?: number;
  /** Kafka's queued.max.request.bytes: request frames read and not yet answered, across connections (default 256 MiB). */
  maxQueuedRequestBytes?: number;
  /** (Producer, partition) sequence states kept in memory for idempotent producers (default 100,000); past it the least recently used are read back from the log when needed. */
  maxProducerStates?: number;
  /** Kafka's auto.leader.rebalance.enable: in a cluster, leadership moved off a partition's preferred replica goes back to it (default true). */
  autoLeaderRebalance?: boolean;
  /** Kafka's leader.imbalance.check.interval.seconds, in milliseconds (default 5 minutes). */
  leaderImbalanceCheckIntervalMs?: number;
  /** Kafka's leader.imbalance.per.broker.percentage: a broker's share of partitions it prefers but does not lead past which they go back (default 10). */
  leaderImbalancePerBrokerPercentage?: number;
  /**
   * TLS on the Kafka listener (a listener Kafka clients call SSL or
   * SASL_SSL): from the first byte, as Kafka has no upgrade; the same keys
   * as the client `tls`, but for `handshakeFirst`, which is always so here.
   */
  tls?: KafkaTlsOptions;
  /**
   * Kafka's sasl.enabled.mechanisms: what SaslHandshake accepts when the
   * server has `authorization` (default all three). SCRAM needs users whose
   * password is given in plain text; a bcrypt hash serves PLAIN only.
   */
  saslMechanisms?: KafkaSaslMechanism[];
}

export type KafkaTlsOptions = Omit<TlsOptions, "handshakeFirst" | "allowNonTls">;
export type KafkaSaslMechanism = "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512";
export const KAFKA_SASL_MECHANISMS: readonly KafkaSaslMechanism[] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

export interface ResolvedOptions {
  host: string;
  port: number;
  httpHost: string;
  httpPort: number | undefined;
  httpsPort: number | undefined;
  serverName: string;
  serverTags: string[];
  maxPayload: number;
  maxPending: number;
  maxControlLine: number;
  maxConnections: number;
  maxSubscriptions: number;
  maxClosedClients: number;
  pingInterval: number;
  maxPingsOut: number;
  authTimeout: number;
  writeDeadline: number;
  lameDuckDuration: number;
  lameDuckGracePeriod: number;
  portsFileDir: string | undefined;
  jetstream: boolean;
  storeDir: string | undefined;
  syncInterval: "always" | number;
  jetstreamMaxMemory: number;
  jetstreamMaxStorage: number;
  jetstreamRequestQueueLimit: number;
  kafka: KafkaListenerOptions | undefined;
  tls: TlsOptions | undefined;
  authorization: AuthOptions | undefined;
  accounts: Record<string, AccountOptions> | undefined;
  operator: OperatorOptions | undefined;
  /** The system account's name; undefined with noSystemAccount. */
  systemAccount: string | undefined;
  debug: boolean;
  trace: boolean;
  noLog: boolean;
  logFile: string | undefined;
  logtime: boolean;
  logtimeUtc: boolean;
  maxTracedMsgLen: number;
  cluster: ClusterOptions | undefined;
  /** With its defaults filled in, when configured. */
  etcd: Required<Omit<EtcdOptions, "tls">> & Pick<EtcdOptions, "tls"> | undefined;
  /** The cluster's name (`cluster.name`, default "nagare"). */
  clusterName: string;
}

/** What a route takes past max_payload (an RMSG's size): room for what a node adds to a message it passes on or answers with. */
export const ROUTE_PAYLOAD_SLACK = 64 * 1024;

/**
 * The answer size a node's request names (`maxBytes`: what its route takes),
 * or `otherwise` when it names none or nonsense (an older node's request).
 */
export function namedAnswerBytes(maxBytes: unknown, otherwise: number): number {
  return typeof maxBytes === "number" && Number.isSafeInteger(maxBytes) && maxBytes > 0 ? maxBytes : otherwise;
}

/** Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms defaults: the bounds of a group member's session. */
export const KAFKA_SESSION_TIMEOUT_BOUNDS = { min: 6000, max: 30 * 60_000 };

export const DEFAULTS = {
  port: 4222,
  maxPayload: 1024 * 1024,
  maxPending: 64 * 1024 * 1024,
  maxControlLine: 4096,
  maxConnections: 64 * 1024,
  maxSubscriptions: 0,
  maxClosedClients: 10_000,
  /** nats-server's JSDefaultRequestQueueLimit. */
  jetstreamRequestQueueLimit: 10_000,
  pingInterval: 120_000,
  maxPingsOut: 2,
  authTimeout: 2_000,
  /** nats-server's TLS handshake timeout. */
  tlsTimeout: 2_000,
  writeDeadline: 10_000,
  lameDuckDuration: 120_000,
  lameDuckGracePeriod: 10_000,
  clusterName: "nagare",
  etcdPrefix: "/nagare",
  etcdDialTimeout: 5_000,
  etcdRequestTimeout: 5_000,
  /**
   * A replicated partition fails over about one lease after its leader dies
   * (issue 20 asks for a few seconds), and a node cut off from etcd is
   * fenced after four fifths of it: 5 s rides out a slow keep-alive or two
   * (one goes every third) and an etcd leader election (about a second).
   * Kafka's KRaft broker session timeout is 9 s.
   */
  leaseTtl: 5_000,
} as const;

function pick<T>(v: T | undefined, d: T): T {
  return v === undefined ? d : v;
}

/**
 * Fills in the defaults. Throws an OptionsError for an option that does not
 * exist or a value nagare cannot honour: JavaScript callers have no type
 * check, and a misspelt `{ prot: 4333 }` must not start a server on 4222.
 */
export function resolveOptions(o: ServerOptions): ResolvedOptions {
  checkOptions(o);
  const port = pick(o.port, DEFAULTS.port);
  const httpPort = o.httpPort === undefined ? undefined : o.httpPort < 0 ? 0 : o.httpPort;
  return {
    host: pick(o.host, "127.0.0.1"),
    port: port < 0 ? 0 : port,
    httpHost: pick(o.httpHost, pick(o.host, "127.0.0.1")),
    httpPort,
    httpsPort: o.httpsPort === undefined ? undefined : o.httpsPort < 0 ? 0 : o.httpsPort,
    serverName: pick(o.serverName, ""),
    serverTags: o.serverTags ?? [],
    maxPayload: pick(o.maxPayload, DEFAULTS.maxPayload),
    maxPending: pick(o.maxPending, DEFAULTS.maxPending),
    maxControlLine: pick(o.maxControlLine, DEFAULTS.maxControlLine),
    maxConnections: pick(o.maxConnections, DEFAULTS.maxConnections),
    maxSubscriptions: pick(o.maxSubscriptions, DEFAULTS.maxSubscriptions),
    maxClosedClients: o.maxClosedClients ?? DEFAULTS.maxClosedClients,
    pingInterval: pick(o.pingInterval, DEFAULTS.pingInterval),
    maxPingsOut: pick(o.maxPingsOut, DEFAULTS.maxPingsOut),
    // As nats-server: with TLS, a client has the TLS timeout and one second more to send CONNECT.
    authTimeout: pick(o.authTimeout, o.tls === undefined ? DEFAULTS.authTimeout : (o.tls.timeoutMs ?? DEFAULTS.tlsTimeout) + 1000),
    writeDeadline: pick(o.writeDeadline, DEFAULTS.writeDeadline),
    lameDuckDuration: pick(o.lameDuckDuration, DEFAULTS.lameDuckDuration),
    lameDuckGracePeriod: pick(o.lameDuckGracePeriod, DEFAULTS.lameDuckGracePeriod),
    portsFileDir: o.portsFileDir,
    jetstream: pick(o.jetstream, false) || o.kafka !== undefined,
    storeDir: o.storeDir,
    syncInterval: pick(o.syncInterval, "always"),
    jetstreamMaxMemory: pick(o.jetstreamMaxMemory, -1),
    jetstreamMaxStorage: pick(o.jetstreamMaxStorage, -1),
    jetstreamRequestQueueLimit: pick(o.jetstreamRequestQueueLimit, DEFAULTS.jetstreamRequestQueueLimit),
    kafka: o.kafka,
    authorization: o.authorization,
    accounts: o.accounts,
    operator: o.operator,
    systemAccount: o.noSystemAccount === true ? undefined : (o.systemAccount ?? (o.operator === undefined ? undefined : operatorSystemAccount(o.operator.operators)) ?? DEFAULT_SYSTEM_ACCOUNT),
    tls: o.tls === undefined ? undefined : { verify: false, timeoutMs: DEFAULTS.tlsTimeout, handshakeFirst: false, ...o.tls },
    debug: pick(o.debug, false),
    trace: pick(o.trace, false),
    // Silent by default when embedded, unless a log file is asked for: a logFile that nothing is written to is an option not honoured.
    noLog: pick(o.noLog, o.logFile === undefined),
    logFile: o.logFile,
    logtime: pick(o.logtime, true),
    logtimeUtc: pick(o.logtimeUtc, false),
    maxTracedMsgLen: pick(o.maxTracedMsgLen, 0),
    cluster: o.cluster,
    etcd:
      o.etcd === undefined
        ? undefined
        : {
            endpoints: o.etcd.endpoints,
            prefix: pick(o.etcd.prefix, DEFAULTS.etcdPrefix),
            tls: o.etcd.tls,
            dialTimeout: pick(o.etcd.dialTimeout, DEFAULTS.etcdDialTimeout),
            requestTimeout: pick(o.etcd.requestTimeout, DEFAULTS.etcdRequestTimeout),
            leaseTtl: pick(o.etcd.leaseTtl, DEFAULTS.leaseTtl),
          },
    clusterName: pick(o.cluster?.name, DEFAULTS.clusterName),
  };
}

/** Why a route setting nagare does not implement is refused: the one text for the file and the flags. */
export const ROUTES_NOT_BUILT = "not supported on routes yet: routes are plaintext, unauthenticated and dialled as configured";

/** What is wrong with a route URL, or null: `nats://host:port` or `nats-route://host:port`. */
export function routeUrlError(x: string): string | null {
  let u: URL;
  try {
    u = new URL(x);
  } catch {
    return `${JSON.stringify(x)} is not a URL (expected nats://host:port)`;
  }
  if ((u.protocol !== "nats:" && u.protocol !== "nats-route:") || u.hostname === "" || u.port === "") return `${JSON.stringify(x)}: expected nats://host:port or nats-route://host:port`;
  if (u.username !== "" || u.password !== "") return `${JSON.stringify(x)}: route credentials are not supported yet (routes are unauthenticated)`;
  return null;
}

/** What is wrong with an etcd endpoint, or null: `http://host:port` or `https://host:port`, nothing more. */
export function etcdEndpointError(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `${JSON.stringify(s)} is not a URL (expected http://host:port or https://host:port)`;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return `${JSON.stringify(s)}: etcd is reached over http:// or https://`;
  if (u.hostname === "" || u.port === "") return `${JSON.stringify(s)} needs a host and a port`;
  if ((u.pathname !== "/" && u.pathname !== "") || u.search !== "" || u.hash !== "" || u.username !== "" || u.password !== "") return `${JSON.stringify(s)}: only scheme, host and port are allowed`;
  return null;
}

/** What is wrong with a cluster name, or null: it is a segment of etcd keys and of nats-server's INFO. */
export function clusterNameError(s: string): string | null {
  if (s === "") return "must not be empty";
  if (/[\s/]/.test(s)) return `${JSON.stringify(s)} must not contain spaces or "/"`;
  return null;
}

/** An option startServer cannot honour: unknown, of the wrong type or out of range. */
export class OptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OptionsError";
  }
}

type Check = (v: unknown, name: string) => void;

const INT32_MAX = 2 ** 31 - 1;

function fail(name: string, v: unknown, expected: string): never {
  const got = typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? "an array" : String(v);
  throw new OptionsError(`option ${name} must be ${expected}, got ${got}`);
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);

const port: Check = (v, n) => {
  if (!isInt(v) || v < -1 || v > 65535) fail(n, v, "a port number (0-65535, or -1 for a random port)");
};
const text: Check = (v, n) => {
  if (typeof v !== "string" || v === "") fail(n, v, "a non-empty string");
};
const anyText: Check = (v, n) => {
  if (typeof v !== "string") fail(n, v, "a string");
};
const flag: Check = (v, n) => {
  if (typeof v !== "boolean") fail(n, v, "true or false");
};
const atLeast =
  (min: number, max = Number.MAX_SAFE_INTEGER): Check =>
  (v, n) => {
    if (!isInt(v) || v < min || v > max) fail(n, v, `an integer from ${min} to ${max}`);
  };
/** Milliseconds, as every time in ServerOptions; Node's timers wait at most 2^31-1 ms. */
const millis: Check = (v, n) => {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > INT32_MAX) fail(n, v, `a time in milliseconds, above 0 and at most ${INT32_MAX}`);
};

/** The accounts' configured JetStream limits must fit in the server's, or one of them would run without JetStream (nats-server's sufficientResources). */
function checkServerJetStreamLimits(o: ServerOptions): void {
  for (const [field, server, name] of [
    ["maxMemory", o.jetstreamMaxMemory ?? -1, "jetstreamMaxMemory (max_mem)"],
    ["maxStorage", o.jetstreamMaxStorage ?? -1, "jetstreamMaxStorage (max_file)"],
  ] as const) {
    if (server <= 0) continue;
    let sum = 0;
    for (const a of Object.values(o.accounts ?? {})) if (typeof a.jetstream === "object") sum += Math.max(0, a.jetstream[field] ?? 0);
    if (sum > server) throw new OptionsError(`option ${name}: the accounts' JetStream ${field} limits add up to ${sum} bytes, more than the server's ${server}`);
  }
}

const KAFKA_CHECKS: Record<keyof KafkaListenerOptions, Check> = {
  host: text,
  port,
  advertise: text,
  autoCreateTopics: flag,
  numPartitions: atLeast(1, 1024),
  defaultReplicationFactor: atLeast(1, 5),
  minInsyncReplicas: atLeast(1, 5),
  maxRequestBytes: atLeast(1, 1024 * 1024 * 1024),
  initialRebalanceDelayMs: atLeast(0, INT32_MAX),
  minSessionTimeoutMs: atLeast(1, INT32_MAX),
  maxSessionTimeoutMs: atLeast(1, INT32_MAX),
  fetchMaxBytes: atLeast(1, INT32_MAX),
  connectionsMaxIdleMs: atLeast(0, INT32_MAX),
  offsetsRetentionMs: atLeast(1),
  offsetsRetentionCheckIntervalMs: atLeast(100, INT32_MAX),
  offsetsCommitTimeoutMs: atLeast(1, INT32_MAX),
  logCleanerBackoffMs: atLeast(100, INT32_MAX),
  maxDecompressBytes: atLeast(1),
  maxResponseBytes: atLeast(1),
  maxQueuedRequestBytes: atLeast(1),
  maxProducerStates: atLeast(1),
  autoLeaderRebalance: flag,
  leaderImbalanceCheckIntervalMs: atLeast(100, INT32_MAX),
  leaderImbalancePerBrokerPercentage: atLeast(0, 100),
  tls: (v, n) => checkTls(v, n, KAFKA_TLS_CHECKS),
  saslMechanisms: (v, n) => {
    if (!Array.isArray(v) || v.length === 0 || v.some((m) => !KAFKA_SASL_MECHANISMS.includes(m as KafkaSaslMechanism))) fail(n, v, `a non-empty array of ${KAFKA_SASL_MECHANISMS.join(", ")}`);
  },
};

const TLS_CHECKS: Record<keyof TlsOptions, Check> = {
  certFile: text,
  keyFile: text,
  caFile: text,
  verify: flag,
  timeoutMs: millis,
  verifyAndMap: flag,
  handshakeFirst: flag,
  allowNonTls: flag,
  minVersion: (v, n) => {
    if (v !== "TLSv1.2" && v !== "TLSv1.3") fail(n, v, '"TLSv1.2" or "TLSv1.3"');
  },
  cipherSuites: (v, n) => {
    if (!Array.isArray(v) || v.length === 0) fail(n, v, "a non-empty array of cipher suite names");
    for (const name of v) {
      const why = cipherSuiteProblem(name);
      if (why !== null) throw new OptionsError(`option ${n}: ${why}`);
    }
  },
  curvePreferences: (v, n) => {
    if (!Array.isArray(v) || v.length === 0) fail(n, v, "a non-empty array of curve names");
    for (const name of v) {
      const why = curveProblem(name);
      if (why !== null) throw new OptionsError(`option ${n}: ${why}`);
    }
  },
};

const { handshakeFirst: _notOnKafka, allowNonTls: _noUpgradeOnKafka, ...KAFKA_TLS_CHECKS } = TLS_CHECKS;

const CLUSTER_CHECKS: Record<keyof ClusterOptions, Check> = {
  name: (v, n) => {
    if (typeof v !== "string") fail(n, v, "a string");
    const why = clusterNameError(v);
    if (why !== null) throw new OptionsError(`option ${n}: ${why}`);
  },
  host: text,
  port,
  routes: (v, n) => {
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || x === "")) fail(n, v, "an array of route URLs");
  },
  advertise: (v, n) => {
    if (typeof v !== "string" || !/^(?:\[[^\]]+\]|[^:\[\]/]+):\d{1,5}$/.test(v) || Number(v.slice(v.lastIndexOf(":") + 1)) > 65535) fail(n, v, '"host:port"');
  },
};

const ETCD_TLS_CHECKS: Record<keyof EtcdTlsOptions, Check> = { caFile: text, certFile: text, keyFile: text };

const ETCD_CHECKS: Record<keyof EtcdOptions, Check> = {
  endpoints: (v, n) => {
    if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== "string")) fail(n, v, "a non-empty array of etcd URLs");
    for (const x of v as string[]) {
      const why = etcdEndpointError(x);
      if (why !== null) throw new OptionsError(`option ${n}: ${why}`);
    }
    if (new Set((v as string[]).map((x) => new URL(x).protocol)).size > 1) throw new OptionsError(`option ${n}: all http:// or all https://`);
  },
  prefix: text,
  tls: (v, n) => checkObject(v, n, ETCD_TLS_CHECKS),
  dialTimeout: millis,
  requestTimeout: millis,
  leaseTtl: (v, n) => {
    if (!isInt(v) || v < 1000 || v % 1000 !== 0 || v > INT32_MAX) fail(n, v, "a whole number of seconds in milliseconds, at least 1000 (etcd's leases count seconds)");
  },
};

/**
 * A cluster needs a route listener, routes or etcd to find its peers;
 * etcd needs a server name; route URLs carry no credentials (routes are
 * unauthenticated).
 */
function checkCluster(o: ServerOptions): void {
  const c = o.cluster;
  if (c !== undefined) {
    if (o.etcd === undefined && c.port === undefined && c.routes === undefined) throw new OptionsError("option cluster needs a route listener (cluster.port), routes or etcd: nodes find each other through one of them");
    if (c.routes !== undefined) {
      for (const r of c.routes) {
        const why = routeUrlError(r);
        if (why !== null) throw new OptionsError(`option cluster.routes: ${why}`);
      }
    }
  }
  const e = o.etcd;
  // Another copy needs another node: a single node could never make a topic created without a factor (nor an auto-created one).
  const factor = o.kafka?.defaultReplicationFactor ?? 1;
  if (e === undefined && factor > 1) throw new OptionsError(`option kafka.defaultReplicationFactor (default_replication_factor) ${factor} needs a cluster (etcd, --etcd): a single node keeps one copy of each partition`);
  if (e === undefined) return;
  if (o.serverName === undefined || o.serverName === "") throw new OptionsError("option etcd needs serverName (server_name, -n): a node is registered in etcd under its name");
  if (o.serverName.includes("/")) throw new OptionsError(`option serverName: ${JSON.stringify(o.serverName)} must not contain "/" in a cluster: it names the node's key in etcd`);
  const https = e.endpoints.every((x) => x.startsWith("https:"));
  if (e.tls !== undefined && !https) throw new OptionsError("option etcd.tls needs https:// endpoints");
  if (e.tls !== undefined && (e.tls.certFile === undefined) !== (e.tls.keyFile === undefined)) throw new OptionsError("option etcd.tls: certFile and keyFile go together (a client certificate and its key)");
}

function checkTls(v: unknown, n: string, checks: Record<string, Check>): void {
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object");
  checkKeys(v as Record<string, unknown>, checks, `${n}.`);
  const t = v as Partial<TlsOptions>;
  // Without a certificate and its key there is no TLS to give: refused, never run in the clear.
  if (t.certFile === undefined || t.keyFile === undefined) throw new OptionsError(`option ${n} needs certFile and keyFile`);
  // nats-server 2.10 lets handshake_first win and ignores allow_non_tls: asked for both, nagare cannot honour both.
  if (t.allowNonTls === true && t.handshakeFirst === true) throw new OptionsError(`option ${n}: allowNonTls cannot be used with handshakeFirst (with it, every client starts with a TLS handshake)`);
}

/** Whether a listener maps client certificates to users (`verify_and_map`). */
export function mapsCertificates(o: ServerOptions): boolean {
  return o.tls?.verifyAndMap === true || o.kafka?.tls?.verifyAndMap === true;
}

/** Subjects (wildcards allowed); with `queues`, an entry may name a queue group after a space, as a configuration file's may. */
const subjects =
  (queues: boolean): Check =>
  (v, n) => {
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string" && parsePermissionEntry(x, queues) !== null)) fail(n, v, queues ? 'an array of subjects, each may name a queue group after a space ("orders.* workers")' : "an array of subjects");
  };
const PUBLISH_RULES_CHECKS: Record<keyof SubjectRules, Check> = { allow: subjects(false), deny: subjects(false) };
const SUBSCRIBE_RULES_CHECKS: Record<keyof SubjectRules, Check> = { allow: subjects(true), deny: subjects(true) };
/** As nats-server: 0 is the default, a negative number no limit. */
const RESPONSES_CHECKS: Record<keyof ResponsePermissionOptions, Check> = {
  max: (v, n) => {
    if (!isInt(v) || Math.abs(v) > INT32_MAX) fail(n, v, "an integer (0: the default, 1; negative: no limit)");
  },
  expires: (v, n) => {
    if (typeof v !== "number" || !Number.isFinite(v) || Math.abs(v) > INT32_MAX) fail(n, v, `a time in milliseconds, at most ${INT32_MAX} (0: the default, 2 minutes; negative: no limit)`);
  },
};
const PERMISSIONS_CHECKS: Record<keyof Permissions, Check> = {
  publish: (v, n) => checkObject(v, n, PUBLISH_RULES_CHECKS),
  subscribe: (v, n) => checkObject(v, n, SUBSCRIBE_RULES_CHECKS),
  allowResponses: (v, n) => {
    if (typeof v !== "boolean") checkObject(v, n, RESPONSES_CHECKS);
  },
};
const USER_CHECKS: Record<keyof UserOptions, Check> = {
  user: text,
  password: text,
  nkey: (v, n) => {
    if (typeof v !== "string" || !/^U[A-Z2-7]{55}$/.test(v)) fail(n, v, "an NKey user's public key (U followed by 55 base32 characters)");
  },
  permissions: (v, n) => checkObject(v, n, PERMISSIONS_CHECKS),
};
const AUTH_CHECKS: Record<keyof AuthOptions, Check> = {
  token: text,
  users: (v, n) => {
    if (!Array.isArray(v)) fail(n, v, "an array of users");
    v.forEach((u, i) => checkObject(u, `${n}[${i}]`, USER_CHECKS));
  },
  noAuthUser: text,
  defaultPermissions: (v, n) => checkObject(v, n, PERMISSIONS_CHECKS),
};

function checkObject(v: unknown, n: string, checks: Record<string, Check>): void {
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object");
  checkKeys(v as Record<string, unknown>, checks, `${n}.`);
}

const EXPORT_CHECKS: Record<keyof StreamExport | keyof ServiceExport, Check> = {
  stream: text,
  service: text,
  accounts: (v, n) => {
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || x === "")) fail(n, v, "an array of account names");
  },
  responseType: (v, n) => {
    if (v !== "singleton" && v !== "stream") fail(n, v, '"singleton" or "stream"');
  },
  responseThresholdMs: millis,
};
const FROM_CHECKS: Record<"account" | "subject", Check> = { account: text, subject: text };
const IMPORT_CHECKS: Record<keyof StreamImport | keyof ServiceImport, Check> = {
  stream: (v, n) => checkObject(v, n, FROM_CHECKS),
  service: (v, n) => checkObject(v, n, FROM_CHECKS),
  prefix: text,
  to: text,
};
/** A byte or count limit: -1 (unlimited) or more. */
const limit: Check = (v, n) => {
  if (!isInt(v) || v < -1) fail(n, v, "an integer, -1 for unlimited");
};
const JETSTREAM_LIMIT_CHECKS: Record<keyof JetStreamLimits, Check> = {
  maxMemory: limit,
  maxStorage: limit,
  maxStreams: limit,
  maxConsumers: limit,
  maxAckPending: limit,
  memoryMaxStreamBytes: limit,
  storageMaxStreamBytes: limit,
  maxBytesRequired: flag,
};
const ACCOUNT_CHECKS: Record<keyof AccountOptions, Check> = {
  defaultPermissions: (v, n) => checkObject(v, n, PERMISSIONS_CHECKS),
  jetstream: (v, n) => {
    if (typeof v !== "boolean") checkObject(v, n, JETSTREAM_LIMIT_CHECKS);
  },
  users: (v, n) => {
    if (!Array.isArray(v)) fail(n, v, "an array of users");
    v.forEach((u, i) => checkObject(u, `${n}[${i}]`, USER_CHECKS));
  },
  exports: (v, n) => {
    if (!Array.isArray(v)) fail(n, v, "an array of exports");
    v.forEach((e, i) => {
      checkObject(e, `${n}[${i}]`, EXPORT_CHECKS);
      const x = e as Record<string, unknown>;
      if ((x.stream === undefined) === (x.service === undefined)) throw new OptionsError(`option ${n}[${i}] needs a stream or a service`);
    });
  },
  imports: (v, n) => {
    if (!Array.isArray(v)) fail(n, v, "an array of imports");
    v.forEach((e, i) => {
      checkObject(e, `${n}[${i}]`, IMPORT_CHECKS);
      const x = e as Record<string, unknown>;
      if ((x.stream === undefined) === (x.service === undefined)) throw new OptionsError(`option ${n}[${i}] needs a stream or a service`);
    });
  },
};

const RESOLVER_CHECKS: Record<keyof DirResolverOptions, Check> = {
  type: (v, n) => {
    if (v !== "full" && v !== "cache") fail(n, v, '"full" or "cache"');
  },
  dir: text,
  allowDelete: flag,
  limit: atLeast(1),
};

/**
 * Authentication that could let in someone it should not is refused:
 * ambiguous users (a name twice, in one account or two), a token beside
 * users, a no_auth_user nobody is, an import of what nobody exports.
 */
function checkIdentities(o: ServerOptions): void {
  const a = o.authorization;
  const accountUsers = Object.entries(o.accounts ?? {}).flatMap(([acc, x]) => (x.users ?? []).map((u) => ({ u, where: `accounts.${acc}.users` })));
  const all = [...(a?.users ?? []).map((u) => ({ u, where: "authorization.users" })), ...accountUsers];
  if (a !== undefined) {
    if (a.token !== undefined && all.length > 0) throw new OptionsError("option authorization: a token and users cannot be used together");
    if (a.token === undefined && all.length === 0 && a.noAuthUser === undefined) throw new OptionsError("option authorization needs a token or users");
  }
  const maps = mapsCertificates(o);
  const names = new Set<string>();
  for (const [i, { u, where }] of all.entries()) {
    const at = `option ${where}`;
    if ((u.user === undefined) === (u.nkey === undefined)) throw new OptionsError(`${at} (user ${i + 1}) needs a user name or an nkey, not both`);
    // A user without a password is one a client certificate names (verify_and_map): without mapping no one could be it, or anyone.
    if (u.user !== undefined && u.password === undefined && !maps && u.user !== a?.noAuthUser) throw new OptionsError(`${at} (${u.user}) needs a password (only the noAuthUser and users of verify_and_map may go without)`);
    if (u.nkey !== undefined && u.password !== undefined) throw new OptionsError(`${at}: an nkey user has no password`);
    const key = u.user ?? u.nkey!;
    if (names.has(key)) throw new OptionsError(`${at}: user ${key} is given twice`);
    names.add(key);
  }
  if (a?.noAuthUser !== undefined && !all.some(({ u }) => u.user === a.noAuthUser)) throw new OptionsError(`option authorization.noAuthUser: ${a.noAuthUser} is not one of the users`);
  // Default permissions with nobody to apply to would leave clients an operator meant to restrict without any.
  if (a?.defaultPermissions !== undefined && (a.users ?? []).length === 0) throw new OptionsError("option authorization.defaultPermissions: it is for the users of authorization, and there are none");
  for (const [name, acc] of Object.entries(o.accounts ?? {})) {
    if (acc.defaultPermissions !== undefined && (acc.users ?? []).length === 0) throw new OptionsError(`option accounts.${name}.defaultPermissions: it is for the users of the account, and there are none`);
  }
  const mapProblem = maps ? certificateUsersProblem(o) : null;
  if (mapProblem !== null) throw new OptionsError(`option ${o.tls?.verifyAndMap === true ? "tls" : "kafka.tls"}.verifyAndMap ${mapProblem}`);
  for (const [name, acc] of Object.entries(o.accounts ?? {})) {
    for (const i of acc.imports ?? []) {
      const why = importError(o.accounts!, name, i);
      if (why !== null) throw new OptionsError(`option accounts.${name}.imports: ${why}`);
    }
  }
}

/**
 * verify_and_map needs users for certificates to name (nats-server lets
 * every verified client in when there are none), no other authority over
 * them (a token, operator mode, no_auth_user), and an unambiguous answer:
 * two users that are the same distinguished name, written differently, are
 * refused. Returns what is wrong, or null.
 */
export function certificateUsersProblem(o: ServerOptions): string | null {
  const users = [...(o.authorization?.users ?? []), ...Object.values(o.accounts ?? {}).flatMap((a) => a.users ?? [])].map((u) => u.user).filter((n): n is string => n !== undefined);
  if (o.operator !== undefined) return "cannot be used in operator mode: users come from JWTs there";
  if (o.authorization?.token !== undefined) return "cannot be used with a token: it maps certificates to users";
  if (users.length === 0) return "needs users (in authorization or accounts) for certificates to map to";
  // nats-server skips no_auth_user when it maps certificates: a client without one is refused, whatever no_auth_user says.
  if (o.tls?.verifyAndMap === true && o.authorization?.noAuthUser !== undefined) return "cannot be used with no_auth_user: every client is the user its certificate names";
  const seen = new Map<string, string>();
  for (const user of users) {
    const dn = parseDn(user);
    if (dn === null || dn.length === 0) continue;
    const key = dnKey(dn);
    const other = seen.get(key);
    if (other !== undefined) return `users ${JSON.stringify(other)} and ${JSON.stringify(user)} are the same distinguished name`;
    seen.set(key, user);
  }
  return null;
}

/** Whether clients must authenticate: an authorization block, or users in accounts. */
export function authRequired(o: ServerOptions): boolean {
  return o.authorization !== undefined || o.operator !== undefined || Object.values(o.accounts ?? {}).some((a) => (a.users ?? []).length > 0);
}

/** One check per option: adding a field to ServerOptions without one here does not compile. */
const CHECKS: Record<keyof ServerOptions, Check> = {
  host: text,
  port,
  httpHost: text,
  httpPort: port,
  httpsPort: port,
  serverName: anyText,
  serverTags: (v, n) => {
    if (!Array.isArray(v) || v.some((t) => typeof t !== "string" || t === "")) fail(n, v, "a list of non-empty strings");
  },
  maxPayload: atLeast(1, INT32_MAX),
  maxPending: atLeast(1),
  maxControlLine: atLeast(1, INT32_MAX),
  maxConnections: atLeast(1),
  maxSubscriptions: atLeast(0),
  maxClosedClients: atLeast(0, 1_000_000),
  pingInterval: millis,
  maxPingsOut: atLeast(1),
  authTimeout: millis,
  writeDeadline: millis,
  lameDuckDuration: millis,
  lameDuckGracePeriod: (v, n) => {
    if (v !== 0) millis(v, n);
  },
  portsFileDir: text,
  jetstream: flag,
  storeDir: text,
  syncInterval: (v, n) => {
    if (v !== "always") millis(v, n);
  },
  jetstreamMaxMemory: (v, n) => limit(v, n),
  jetstreamMaxStorage: (v, n) => limit(v, n),
  jetstreamRequestQueueLimit: atLeast(1),
  kafka: (v, n) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object");
    checkKeys(v as Record<string, unknown>, KAFKA_CHECKS, `${n}.`);
    const k = v as KafkaListenerOptions;
    const min = k.minSessionTimeoutMs ?? KAFKA_SESSION_TIMEOUT_BOUNDS.min;
    const max = k.maxSessionTimeoutMs ?? KAFKA_SESSION_TIMEOUT_BOUNDS.max;
    if (min > max) throw new OptionsError(`option ${n}.minSessionTimeoutMs (${min}) is longer than ${n}.maxSessionTimeoutMs (${max})`);
  },
  tls: (v, n) => checkTls(v, n, TLS_CHECKS),
  authorization: (v, n) => checkObject(v, n, AUTH_CHECKS),
  operator: (v, n) => {
    checkObject(v, n, {
      operators: (x, m) => {
        if (!Array.isArray(x) || x.length === 0 || x.some((j) => typeof j !== "string" || j === "")) fail(m, x, "an array of operator JWTs");
      },
      accounts: (x, m) => {
        if (x === null || typeof x !== "object" || Array.isArray(x) || Object.values(x).some((j) => typeof j !== "string" || j === "")) fail(m, x, "an object of account JWTs by public key");
      },
      resolver: (x, m) => {
        checkObject(x, m, RESOLVER_CHECKS);
        const r = x as Partial<DirResolverOptions>;
        if (r.type === undefined || r.dir === undefined) throw new OptionsError(`option ${m} needs type and dir`);
        if (r.type === "cache" && r.allowDelete === true) throw new OptionsError(`option ${m}.allowDelete: a cache resolver does not delete accounts`);
      },
    });
    const op = v as Partial<OperatorOptions>;
    if (op.operators === undefined || op.accounts === undefined) throw new OptionsError(`option ${n} needs operators and accounts`);
  },
  accounts: (v, n) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object of accounts by name");
    for (const [name, a] of Object.entries(v as Record<string, unknown>)) {
      if (name === "" || name === "$G" || /\s/.test(name)) throw new OptionsError(`option ${n}: ${JSON.stringify(name)} cannot be an account name`);
      checkObject(a, `${n}.${name}`, ACCOUNT_CHECKS);
    }
  },
  systemAccount: text,
  noSystemAccount: flag,
  debug: flag,
  trace: flag,
  noLog: flag,
  logFile: text,
  logtime: flag,
  logtimeUtc: flag,
  maxTracedMsgLen: atLeast(0, INT32_MAX),
  cluster: (v, n) => checkObject(v, n, CLUSTER_CHECKS),
  etcd: (v, n) => {
    checkObject(v, n, ETCD_CHECKS);
    if ((v as Partial<EtcdOptions>).endpoints === undefined) throw new OptionsError(`option ${n} needs endpoints: etcd's client URLs`);
  },
};

function checkKeys(o: Record<string, unknown>, checks: Record<string, Check>, prefix: string): void {
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue; // `{ port: undefined }` means "the default", as spreading options produces
    const check = Object.prototype.hasOwnProperty.call(checks, k) ? checks[k] : undefined;
    if (check === undefined) throw new OptionsError(`unknown option "${prefix}${k}"${didYouMean(k, Object.keys(checks))}`);
    check(v, prefix + k);
  }
}

/** Throws an OptionsError for the first option nagare cannot honour. */
export function checkOptions(o: ServerOptions): void {
  if (o === null || typeof o !== "object" || Array.isArray(o)) throw new OptionsError("the options must be an object");
  checkKeys(o as Record<string, unknown>, CHECKS, "");
  const maxPayload = o.maxPayload ?? DEFAULTS.maxPayload;
  const maxPending = o.maxPending ?? DEFAULTS.maxPending;
  checkIdentities(o);
  checkCluster(o);
  // As nats-server: operator mode replaces configured users and accounts.
  if (o.operator !== undefined && (o.authorization !== undefined || o.accounts !== undefined)) {
    throw new OptionsError("operator mode cannot be used with authorization or accounts: users and accounts come from JWTs");
  }
  // nats-server lets an account ask for JetStream on a server without it, and then serves it none: asked for, and not honoured.
  const jsAccount = Object.entries(o.accounts ?? {}).find(([, a]) => a.jetstream !== undefined && a.jetstream !== false);
  if (jsAccount !== undefined && o.jetstream !== true && o.kafka === undefined) {
    throw new OptionsError(`option accounts.${jsAccount[0]}.jetstream needs JetStream on the server (jetstream: true)`);
  }
  checkServerJetStreamLimits(o);
  if (o.noLog === true && o.logFile !== undefined) throw new OptionsError("noLog and logFile cannot be used together: noLog silences the log logFile asks for");
  if (o.systemAccount !== undefined && o.noSystemAccount === true) throw new OptionsError("systemAccount and noSystemAccount cannot be used together");
  // Outside operator mode the system account is a configured one, or `$SYS` (made when not configured).
  // In operator mode it is one of the resolver's accounts, checked when they are read at start.
  if (o.operator === undefined && o.systemAccount !== undefined && o.systemAccount !== DEFAULT_SYSTEM_ACCOUNT && o.accounts?.[o.systemAccount] === undefined) {
    throw new OptionsError(`option systemAccount: ${o.systemAccount} is not one of the accounts`);
  }
  // As nats-server: monitoring over HTTPS is served with the client TLS certificate, and without one there is none.
  if (o.httpsPort !== undefined && o.tls === undefined) {
    throw new OptionsError("httpsPort needs tls: monitoring over HTTPS is served with the certificate of tls (certFile and keyFile)");
  }
  // As nats-server: a message that may be published must fit in what a subscriber may have pending.
  if (maxPayload > maxPending) {
    throw new OptionsError(`maxPayload (${maxPayload}) must not exceed maxPending (${maxPending}): no subscriber could receive such a message`);
  }
}
