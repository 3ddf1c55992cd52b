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
  serverName?: string;
  /** Largest payload (headers + body) a client may publish. */
  maxPayload?: number;
  /** Bytes queued to one client before it is cut off as a slow consumer. */
  maxPending?: number;
  maxControlLine?: number;
  maxConnections?: number;
  /** Per connection; 0 means unlimited, as in nats-server. */
  maxSubscriptions?: number;
  /** Milliseconds between server pings. */
  pingInterval?: number;
  /** Unanswered pings before a connection is closed as stale. */
  maxPingsOut?: number;
  /** Milliseconds a new connection has to send CONNECT. */
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
  /** The Kafka door; off unless given. It serves the streams, so it turns JetStream on. */
  kafka?: KafkaListenerOptions;
  debug?: boolean;
  trace?: boolean;
  /** Silence all logging (embedded default). */
  noLog?: boolean;
  logFile?: string;
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
  /** Kafka's socket.request.max.bytes (default 100 MiB). */
  maxRequestBytes?: number;
  /** Kafka's group.initial.rebalance.delay.ms (default 3000). */
  initialRebalanceDelayMs?: number;
  /** Kafka's fetch.max.bytes: most record bytes in one fetch response, and in one connection's unwritten responses (default 55 MiB). */
  fetchMaxBytes?: number;
  /** Kafka's connections.max.idle.ms: an idle connection is closed after this (default 10 minutes; 0: never). */
  connectionsMaxIdleMs?: number;
  /** Decompressed produce batches held at once, across all connections (default 256 MiB); also caps one batch's expansion. */
  maxDecompressBytes?: number;
  /** Fetch room and responses not yet written, across all connections (default 256 MiB). */
  maxResponseBytes?: number;
}

export interface ResolvedOptions {
  host: string;
  port: number;
  httpHost: string;
  httpPort: number | undefined;
  serverName: string;
  maxPayload: number;
  maxPending: number;
  maxControlLine: number;
  maxConnections: number;
  maxSubscriptions: number;
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
  kafka: KafkaListenerOptions | undefined;
  debug: boolean;
  trace: boolean;
  noLog: boolean;
  logFile: string | undefined;
}

export const DEFAULTS = {
  port: 4222,
  maxPayload: 1024 * 1024,
  maxPending: 64 * 1024 * 1024,
  maxControlLine: 4096,
  maxConnections: 64 * 1024,
  maxSubscriptions: 0,
  pingInterval: 120_000,
  maxPingsOut: 2,
  authTimeout: 2_000,
  writeDeadline: 10_000,
  lameDuckDuration: 120_000,
  lameDuckGracePeriod: 10_000,
} as const;

function pick<T>(v: T | undefined, d: T): T {
  return v === undefined ? d : v;
}

export function resolveOptions(o: ServerOptions): ResolvedOptions {
  const port = pick(o.port, DEFAULTS.port);
  const httpPort = o.httpPort === undefined ? undefined : o.httpPort < 0 ? 0 : o.httpPort;
  return {
    host: pick(o.host, "127.0.0.1"),
    port: port < 0 ? 0 : port,
    httpHost: pick(o.httpHost, pick(o.host, "127.0.0.1")),
    httpPort,
    serverName: pick(o.serverName, ""),
    maxPayload: pick(o.maxPayload, DEFAULTS.maxPayload),
    maxPending: pick(o.maxPending, DEFAULTS.maxPending),
    maxControlLine: pick(o.maxControlLine, DEFAULTS.maxControlLine),
    maxConnections: pick(o.maxConnections, DEFAULTS.maxConnections),
    maxSubscriptions: pick(o.maxSubscriptions, DEFAULTS.maxSubscriptions),
    pingInterval: pick(o.pingInterval, DEFAULTS.pingInterval),
    maxPingsOut: pick(o.maxPingsOut, DEFAULTS.maxPingsOut),
    authTimeout: pick(o.authTimeout, DEFAULTS.authTimeout),
    writeDeadline: pick(o.writeDeadline, DEFAULTS.writeDeadline),
    lameDuckDuration: pick(o.lameDuckDuration, DEFAULTS.lameDuckDuration),
    lameDuckGracePeriod: pick(o.lameDuckGracePeriod, DEFAULTS.lameDuckGracePeriod),
    portsFileDir: o.portsFileDir,
    jetstream: pick(o.jetstream, false) || o.kafka !== undefined,
    storeDir: o.storeDir,
    syncInterval: pick(o.syncInterval, "always"),
    kafka: o.kafka,
    debug: pick(o.debug, false),
    trace: pick(o.trace, false),
    noLog: pick(o.noLog, true),
    logFile: o.logFile,
  };
}
