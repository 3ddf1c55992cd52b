import { didYouMean } from "../util/closest.js";
import type { AuthOptions, Permissions, ResponsePermissionOptions, SubjectRules, UserOptions } from "./auth.js";
import { operatorSystemAccount, type DirResolverOptions, type OperatorOptions } from "./jwt-auth.js";
import { DEFAULT_SYSTEM_ACCOUNT } from "./account.js";
import { importError, type AccountOptions, type ServiceExport, type ServiceImport, type StreamExport, type StreamImport } from "./accounts.js";

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
  /** Silence all logging (embedded default). */
  noLog?: boolean;
  /** Append the log here instead of stderr. */
  logFile?: string;
  /** Time on every log line (default true), in local time unless `logtimeUtc`. */
  logtime?: boolean;
  logtimeUtc?: boolean;
  /** Payload bytes shown per traced message; 0 (default) shows all. */
  maxTracedMsgLen?: number;
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
  /** Milliseconds a client has to complete the handshake (default 2,000). */
  timeoutMs?: number;
  /** Handshake before anything else (nats-server 2.10's `handshake_first`); else after the plain INFO, as NATS clients upgrade. */
  handshakeFirst?: boolean;
  minVersion?: "TLSv1.2" | "TLSv1.3";
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
  /** Kafka's queued.max.request.bytes: request frames read and not yet answered, across connections (default 256 MiB). */
  maxQueuedRequestBytes?: number;
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

export type KafkaTlsOptions = Omit<TlsOptions, "handshakeFirst">;
export type KafkaSaslMechanism = "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512";
export const KAFKA_SASL_MECHANISMS: readonly KafkaSaslMechanism[] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

export interface ResolvedOptions {
  host: string;
  port: number;
  httpHost: string;
  httpPort: number | undefined;
  httpsPort: number | undefined;
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
  /** nats-server's TLS handshake timeout. */
  tlsTimeout: 2_000,
  writeDeadline: 10_000,
  lameDuckDuration: 120_000,
  lameDuckGracePeriod: 10_000,
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
    authorization: o.authorization,
    accounts: o.accounts,
    operator: o.operator,
    systemAccount: o.noSystemAccount === true ? undefined : (o.systemAccount ?? (o.operator === undefined ? undefined : operatorSystemAccount(o.operator.operators)) ?? DEFAULT_SYSTEM_ACCOUNT),
    tls: o.tls === undefined ? undefined : { verify: false, timeoutMs: DEFAULTS.tlsTimeout, handshakeFirst: false, ...o.tls },
    debug: pick(o.debug, false),
    trace: pick(o.trace, false),
    noLog: pick(o.noLog, true),
    logFile: o.logFile,
    logtime: pick(o.logtime, true),
    logtimeUtc: pick(o.logtimeUtc, false),
    maxTracedMsgLen: pick(o.maxTracedMsgLen, 0),
  };
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

const KAFKA_CHECKS: Record<keyof KafkaListenerOptions, Check> = {
  host: text,
  port,
  advertise: text,
  autoCreateTopics: flag,
  numPartitions: atLeast(1, 1024),
  maxRequestBytes: atLeast(1, 1024 * 1024 * 1024),
  initialRebalanceDelayMs: atLeast(0, INT32_MAX),
  fetchMaxBytes: atLeast(1, INT32_MAX),
  connectionsMaxIdleMs: atLeast(0, INT32_MAX),
  maxDecompressBytes: atLeast(1),
  maxResponseBytes: atLeast(1),
  maxQueuedRequestBytes: atLeast(1),
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
  handshakeFirst: flag,
  minVersion: (v, n) => {
    if (v !== "TLSv1.2" && v !== "TLSv1.3") fail(n, v, '"TLSv1.2" or "TLSv1.3"');
  },
};

const { handshakeFirst: _notOnKafka, ...KAFKA_TLS_CHECKS } = TLS_CHECKS;

function checkTls(v: unknown, n: string, checks: Record<string, Check>): void {
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object");
  checkKeys(v as Record<string, unknown>, checks, `${n}.`);
  const t = v as Partial<TlsOptions>;
  // Without a certificate and its key there is no TLS to give: refused, never run in the clear.
  if (t.certFile === undefined || t.keyFile === undefined) throw new OptionsError(`option ${n} needs certFile and keyFile`);
}

const subjects = (v: unknown, n: string): void => {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || x === "")) fail(n, v, "an array of subjects");
};
const RULES_CHECKS: Record<keyof SubjectRules, Check> = { allow: subjects, deny: subjects };
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
  publish: (v, n) => checkObject(v, n, RULES_CHECKS),
  subscribe: (v, n) => checkObject(v, n, RULES_CHECKS),
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
const ACCOUNT_CHECKS: Record<keyof AccountOptions, Check> = {
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
  const names = new Set<string>();
  for (const [i, { u, where }] of all.entries()) {
    const at = `option ${where}`;
    if ((u.user === undefined) === (u.nkey === undefined)) throw new OptionsError(`${at} (user ${i + 1}) needs a user name or an nkey, not both`);
    if (u.user !== undefined && u.password === undefined) throw new OptionsError(`${at} (${u.user}) needs a password`);
    if (u.nkey !== undefined && u.password !== undefined) throw new OptionsError(`${at}: an nkey user has no password`);
    const key = u.user ?? u.nkey!;
    if (names.has(key)) throw new OptionsError(`${at}: user ${key} is given twice`);
    names.add(key);
  }
  if (a?.noAuthUser !== undefined && !all.some(({ u }) => u.user === a.noAuthUser)) throw new OptionsError(`option authorization.noAuthUser: ${a.noAuthUser} is not one of the users`);
  for (const [name, acc] of Object.entries(o.accounts ?? {})) {
    for (const i of acc.imports ?? []) {
      const why = importError(o.accounts!, name, i);
      if (why !== null) throw new OptionsError(`option accounts.${name}.imports: ${why}`);
    }
  }
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
  maxPayload: atLeast(1, INT32_MAX),
  maxPending: atLeast(1),
  maxControlLine: atLeast(1, INT32_MAX),
  maxConnections: atLeast(1),
  maxSubscriptions: atLeast(0),
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
  kafka: (v, n) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) fail(n, v, "an object");
    checkKeys(v as Record<string, unknown>, KAFKA_CHECKS, `${n}.`);
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
  // As nats-server: operator mode replaces configured users and accounts.
  if (o.operator !== undefined && (o.authorization !== undefined || o.accounts !== undefined)) {
    throw new OptionsError("operator mode cannot be used with authorization or accounts: users and accounts come from JWTs");
  }
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
  // The Kafka door serves the default account and authenticates the authorization block's users (SASL):
  // users of other accounts, or of operator mode, would reach streams outside their account, or no one could log in.
  if (o.kafka !== undefined && (o.operator !== undefined || Object.values(o.accounts ?? {}).some((a) => (a.users ?? []).length > 0))) {
    throw new OptionsError("the Kafka listener serves the default account only: it cannot be used with account users or operator mode yet");
  }
  // As nats-server: a message that may be published must fit in what a subscriber may have pending.
  if (maxPayload > maxPending) {
    throw new OptionsError(`maxPayload (${maxPayload}) must not exceed maxPending (${maxPending}): no subscriber could receive such a message`);
  }
}
