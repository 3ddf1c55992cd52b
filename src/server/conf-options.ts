/**
 * Maps a parsed nats-server configuration tree (see conf-parser.ts) onto
 * ServerOptions, failing closed: a key nagare does not honour, at the top or
 * inside a block, is an error with its file, line and column, and so is a
 * value it cannot honour. Every problem is reported at once, as nats-server
 * does. Keys are matched case-insensitively, as nats-server does, and keys
 * that only serve as `$variables` are not keys of the configuration.
 *
 * What counts as honoured is what the mapping reads: every `lookup` marks
 * the keys it finds, and whatever is left unread afterwards is refused. A
 * new option therefore needs nothing more than its lookup.
 *
 * As in nats-server, a zero for a limit or a time means "use the default".
 */

import { readFileSync } from "node:fs";
import { didYouMean } from "../util/closest.js";
import { isValidSubscribeSubject } from "../subjects/subject.js";
import { parsePermissionEntry } from "../core/auth.js";
import { ConfError, keyPosition, usedAsVariable, type ConfPosition } from "./conf-parser.js";
import { cipherSuiteProblem, curveProblem } from "../core/tls-names.js";
import { certificateUsersProblem, clusterNameError, DEFAULTS, etcdEndpointError, KAFKA_SASL_MECHANISMS, KAFKA_SESSION_TIMEOUT_BOUNDS, mapsCertificates, ROUTES_NOT_BUILT, routeUrlError, type ClusterOptions, type EtcdOptions, type KafkaSaslMechanism, type ServerOptions } from "../core/options.js";

type Tree = Record<string, unknown>;

/**
 * nats-server features nagare lacks. A configuration asking for one is
 * refused: running without authorization or TLS that was asked for would be
 * worse than not running.
 */
const NOT_SUPPORTED: Record<string, string> = {
  trusted: "trusted keys without an operator JWT are not supported yet",
  trusted_keys: "trusted keys without an operator JWT are not supported yet",
  resolver_pinned_accounts: "pinning accounts is not supported yet",
  resolver_tls: "the URL resolver is not supported yet",
  ocsp: "TLS is not supported yet",
  gateway: "gateways are not supported yet",
  leafnodes: "leaf nodes are not supported yet",
  leaf: "leaf nodes are not supported yet",
  client_advertise: "clustering is not supported yet",
  websocket: "the WebSocket door is not supported yet",
  ws: "the WebSocket door is not supported yet",
  mqtt: "the MQTT door is not supported yet",
  syslog: "logging to syslog is not supported",
  remote_syslog: "logging to syslog is not supported",
  logfile_size_limit: "log file rotation is not supported yet",
  log_size_limit: "log file rotation is not supported yet",
  http_base_path: "a monitoring base path is not supported yet",
  prof_port: "the profiling listener is not supported",
  no_header_support: "turning message headers off is not supported",
  mappings: "subject mappings are not supported yet",
  maps: "subject mappings are not supported yet",
  max_sub_tokens: "limiting the tokens of subscription subjects is not supported yet",
  max_subscription_tokens: "limiting the tokens of subscription subjects is not supported yet",
  default_js_domain: "JetStream domains are not supported yet",
};

/** The same inside `jetstream { }`: limits and features its streams would silently lack. */
const JETSTREAM_NOT_SUPPORTED: Record<string, string> = {
  limits: "server-wide JetStream API limits are not supported yet",
  domain: "JetStream domains are not supported yet",
  key: "encryption at rest is not supported yet",
  ek: "encryption at rest is not supported yet",
  encryption_key: "encryption at rest is not supported yet",
  cipher: "encryption at rest is not supported yet",
  unique_tag: "clustering is not supported yet",
  max_outstanding_catchup: "clustering is not supported yet",
  extension_hint: "JetStream extension hints are not supported",
};

/** Per block (lower-case name), its keys for features nagare lacks. */
/** The same inside `tls { }`. */
const TLS_NOT_SUPPORTED: Record<string, string> = {
  verify_cert_and_check_known_urls: "checking client certificates against known URLs is not supported",
  insecure: "insecure TLS is not supported",
  pinned_certs: "pinned certificates are not supported yet",
  cert_store: "the Windows certificate store is not supported",
  cert_match: "the Windows certificate store is not supported",
  cert_match_by: "the Windows certificate store is not supported",
  ca_certs_match: "the Windows certificate store is not supported",
  ocsp_peer: "OCSP is not supported yet",
  certs: "several certificates (SNI) are not supported yet",
  connection_rate_limit: "limiting the rate of TLS connections is not supported yet",
};

/** The same inside `authorization { }`. */
const AUTHORIZATION_NOT_SUPPORTED: Record<string, string> = {
  auth_callout: "auth callout is not supported yet",
  nkeys: "an nkeys list outside users is not supported yet",
};

/** The same inside `kafka { tls { } }`. */
const KAFKA_TLS_NOT_SUPPORTED: Record<string, string> = {
  ...TLS_NOT_SUPPORTED,
  handshake_first: "the Kafka listener is TLS from the first byte (Kafka clients do not upgrade): handshake_first does not apply",
  first: "the Kafka listener is TLS from the first byte (Kafka clients do not upgrade): handshake_first does not apply",
};

/** The same inside `cluster { }`: nats-server's route settings nagare does not implement (TLS and authorization among them: refused, never ignored). */
const CLUSTER_NOT_SUPPORTED: Record<string, string> = Object.fromEntries(
  ["net", "authorization", "tls", "no_advertise", "connect_retries", "permissions", "accounts", "pool_size", "compression", "ping_interval", "ping_max", "write_deadline"].map((k) => [k, ROUTES_NOT_BUILT]),
);

/** The same for a user (of authorization or of an account). */
const USER_NOT_SUPPORTED: Record<string, string> = Object.fromEntries(
  ["allowed_connection_types", "connection_types", "clients"].map((k) => [k, "restricting a user to some connection types is not supported yet"]),
);

/** Keyed by blockShape: lower case, array indexes as [], account names as *. */
const BLOCK_NOT_SUPPORTED: Record<string, Record<string, string>> = {
  "accounts.*": {
    limits: "an account's connection and subscription limits are not supported yet",
    nkey: "an account's nkey outside operator mode is not supported yet",
  },
  "authorization.users[]": USER_NOT_SUPPORTED,
  "accounts.*.users[]": USER_NOT_SUPPORTED,
  jetstream: JETSTREAM_NOT_SUPPORTED,
  cluster: CLUSTER_NOT_SUPPORTED,
  tls: TLS_NOT_SUPPORTED,
  "kafka.tls": KAFKA_TLS_NOT_SUPPORTED,
  authorization: AUTHORIZATION_NOT_SUPPORTED,
};

/**
 * Keys accepted and deliberately ignored, each because ignoring it changes
 * nothing the configuration asks for. Keep this list short and justified.
 */
const IGNORED = {
  /**
   * They pace the logging of failed route, gateway and leaf node connects;
   * nagare makes none (the blocks that would ask for them are refused).
   */
  connect_error_reports: "integer",
  reconnect_error_reports: "integer",
  /**
   * They turn off nats-server's cache of subscription matches, which only saves work: what is delivered is the
   * same with or without it.
   */
  disable_sublist_cache: "boolean",
  no_sublist_cache: "boolean",
} as const;

/** `pid_file` from the config: the CLI writes it, so it is not a ServerOptions field. */
export function pidFileFromConf(tree: Tree): string | undefined {
  const e = lookup(tree, "pid_file") ?? lookup(tree, "pidfile");
  return e ? nonEmptyStr(e) : undefined;
}

/** Throws a ConfError listing every problem (its `problems`) when the configuration cannot be honoured. */
export function optionsFromConf(tree: Tree): ServerOptions {
  const o: ServerOptions = {};
  const c = new Collector();

  // `listen` first so that explicit `host`/`port` win over it.
  c.attempt(() => {
    const listen = lookup(tree, "listen");
    if (listen) {
      const hp = hostPort(listen);
      if (hp.host !== undefined) o.host = hp.host;
      o.port = portOrDefault(hp.port);
    }
  });
  for (const k of ["host", "net"]) {
    c.attempt(() => {
      const e = lookup(tree, k);
      if (e) o.host = nonEmptyStr(e);
    });
  }
  c.attempt(() => {
    const port = lookup(tree, "port");
    if (port) o.port = portOrDefault(portNumber(port));
  });

  c.attempt(() => {
    const http = lookup(tree, "http");
    if (http) {
      const hp = hostPort(http);
      if (hp.host !== undefined) o.httpHost = hp.host;
      o.httpPort = portOrDefault(hp.port);
    }
  });
  for (const k of ["http_port", "monitor_port"]) {
    c.attempt(() => {
      const e = lookup(tree, k);
      if (e) o.httpPort = portOrDefault(portNumber(e));
    });
  }
  // Monitoring over HTTPS, as nats-server's `https` and `https_port`; it needs the tls block (checked below, once that is read).
  let https: Entry | undefined;
  c.attempt(() => {
    const e = lookup(tree, "https");
    if (e) {
      const hp = hostPort(e);
      if (hp.host !== undefined) o.httpHost = hp.host;
      o.httpsPort = portOrDefault(hp.port);
      if (o.httpsPort !== undefined) https = e;
    }
  });
  c.attempt(() => {
    const e = lookup(tree, "https_port");
    if (e) {
      o.httpsPort = portOrDefault(portNumber(e));
      if (o.httpsPort !== undefined) https = e;
    }
  });
  c.attempt(() => {
    const httpHost = lookup(tree, "http_host");
    if (httpHost) o.httpHost = nonEmptyStr(httpHost);
  });

  c.attempt(() => {
    const serverName = lookup(tree, "server_name");
    if (serverName) o.serverName = str(serverName);
  });
  c.attempt(() => {
    // nats-server: a list of strings (or one), each "key:value" or a bare word; compared without case.
    const tags = lookup(tree, "server_tags");
    if (tags) o.serverTags = nameList(tags, (t) => (typeof t === "string" && t.trim() !== "" ? null : `expected tags (non-empty strings), got ${describe(t)}`)).map((t) => t.trim().toLowerCase());
  });

  c.attempt(() => setLimit(o, "maxPayload", lookup(tree, "max_payload"), INT32_MAX));
  c.attempt(() => setLimit(o, "maxPending", lookup(tree, "max_pending")));
  c.attempt(() => setLimit(o, "maxControlLine", lookup(tree, "max_control_line"), INT32_MAX));
  c.attempt(() => setLimit(o, "maxConnections", lookup(tree, "max_connections") ?? lookup(tree, "max_conn")));
  c.attempt(() => {
    const maxSubs = lookup(tree, "max_subscriptions") ?? lookup(tree, "max_subs");
    if (maxSubs) o.maxSubscriptions = nonNegativeInt(maxSubs); // 0 is "unlimited", the default
  });
  c.attempt(() => setLimit(o, "maxPingsOut", lookup(tree, "ping_max") ?? lookup(tree, "max_pings_out")));
  // nats-server 2.11's key: how many closed connections /connz keeps (0: the default, 10,000).
  c.attempt(() => setLimit(o, "maxClosedClients", lookup(tree, "max_closed_clients"), MAX_CLOSED_CLIENTS));

  c.attempt(() => setTime(o, "pingInterval", lookup(tree, "ping_interval")));
  c.attempt(() => setTime(o, "authTimeout", lookup(tree, "auth_timeout")));
  c.attempt(() => setTime(o, "writeDeadline", lookup(tree, "write_deadline")));
  c.attempt(() => setTime(o, "lameDuckDuration", lookup(tree, "lame_duck_duration")));
  c.attempt(() => setTime(o, "lameDuckGracePeriod", lookup(tree, "lame_duck_grace_period")));

  c.attempt(() => {
    const portsFileDir = lookup(tree, "ports_file_dir");
    if (portsFileDir) o.portsFileDir = nonEmptyStr(portsFileDir);
  });
  c.attempt(() => pidFileFromConf(tree));

  c.attempt(() => {
    const storeDir = lookup(tree, "store_dir") ?? lookup(tree, "storedir");
    if (storeDir) o.storeDir = nonEmptyStr(storeDir);
  });
  c.attempt(() => {
    const js = lookup(tree, "jetstream");
    if (js) jetstream(o, js, c);
  });
  c.attempt(() => {
    const kafkaBlock = lookup(tree, "kafka");
    if (kafkaBlock) kafka(o, kafkaBlock, c);
  });
  c.attempt(() => {
    const tlsBlock = lookup(tree, "tls");
    if (tlsBlock) tls(o, tlsBlock, c);
  });
  c.attempt(() => {
    // nats-server's allow_non_tls is a top-level key about the client listener's tls block.
    const allow = lookup(tree, "allow_non_tls");
    if (allow === undefined) return;
    const on = bool(allow);
    if (o.tls === undefined) {
      if (lookup(tree, "tls") === undefined) fail(allow, "needs a tls block: without TLS every client is plain already");
      return; // the tls block's own error is reported
    }
    if (on && o.tls.handshakeFirst === true) fail(allow, "cannot be used with tls.handshake_first: with it every client starts with a TLS handshake");
    o.tls.allowNonTls = on;
  });
  c.attempt(() => {
    // nats-server refuses it too ("TLS cert and key required for HTTPS"): there is no certificate to serve it with.
    if (https !== undefined && lookup(tree, "tls") === undefined) fail(https, "monitoring over HTTPS needs a tls block: it is served with that certificate");
  });
  c.attempt(() => {
    const auth = lookup(tree, "authorization");
    if (auth) authorization(o, auth, c, noAuthUserOf(tree));
  });
  c.attempt(() => {
    // nats-server's spellings, all of them.
    const operator = ["operator", "operators", "roots", "root", "root_operators", "root_operator"].map((k) => lookup(tree, k)).find((x) => x !== undefined);
    const resolver = lookup(tree, "resolver") ?? lookup(tree, "account_resolver") ?? lookup(tree, "accounts_resolver");
    const preload = lookup(tree, "resolver_preload");
    if (operator === undefined) {
      const stray = resolver ?? preload;
      if (stray) fail(stray, "needs an operator (operator mode)");
      return;
    }
    operatorMode(o, operator, resolver, preload, c);
  });
  c.attempt(() => {
    const accounts = lookup(tree, "accounts");
    if (accounts) accountsBlock(o, accounts, c, noAuthUserOf(tree));
  });
  c.attempt(() => systemAccount(o, tree));
  c.attempt(() => {
    const noAuthUser = lookup(tree, "no_auth_user");
    if (noAuthUser) {
      const name = nonEmptyStr(noAuthUser);
      const users = [...(o.authorization?.users ?? []), ...Object.values(o.accounts ?? {}).flatMap((a) => a.users ?? [])];
      if (!users.some((u) => u.user === name)) fail(noAuthUser, `${name} is not one of the users`);
      o.authorization = { ...o.authorization, noAuthUser: name };
    }
  });
  c.attempt(() => {
    // What verify_and_map needs (users to map to, nothing else deciding who they are), reported at the key that asked for it.
    const problem = mapsCertificates(o) ? certificateUsersProblem(o) : null;
    if (problem === null) return;
    const kafkaBlock = lookup(tree, "kafka");
    const block = o.tls?.verifyAndMap === true ? lookup(tree, "tls") : kafkaBlock && isBlock(kafkaBlock.value) ? inBlock(kafkaBlock.value, kafkaBlock, "tls") : undefined;
    fail((block && isBlock(block.value) ? inBlock(block.value, block, "verify_and_map") : undefined) ?? block!, problem);
  });

  c.attempt(() => {
    const cluster = lookup(tree, "cluster");
    if (cluster) clusterBlock(o, cluster, c);
  });
  c.attempt(() => {
    const etcd = lookup(tree, "etcd");
    if (etcd) etcdBlock(o, etcd, c);
  });

  c.attempt(() => {
    const debug = lookup(tree, "debug");
    if (debug) o.debug = bool(debug);
  });
  c.attempt(() => {
    const trace = lookup(tree, "trace");
    if (trace) o.trace = bool(trace);
  });
  c.attempt(() => {
    // nats-server's verbose trace adds the system account's internal traffic; nagare traces no internal traffic, so it is plain trace.
    const traceVerbose = lookup(tree, "trace_verbose");
    if (traceVerbose && bool(traceVerbose)) o.trace = true;
  });
  c.attempt(() => {
    const logtime = lookup(tree, "logtime");
    if (logtime) o.logtime = bool(logtime);
  });
  c.attempt(() => {
    const utc = lookup(tree, "logtime_utc");
    if (utc) o.logtimeUtc = bool(utc);
  });
  c.attempt(() => {
    const maxTraced = lookup(tree, "max_traced_msg_len");
    if (maxTraced) o.maxTracedMsgLen = nonNegativeInt(maxTraced, INT32_MAX);
  });
  c.attempt(() => {
    const logFile = lookup(tree, "log_file") ?? lookup(tree, "logfile");
    if (logFile) o.logFile = nonEmptyStr(logFile);
  });

  for (const [name, type] of Object.entries(IGNORED)) {
    c.attempt(() => {
      const e = lookup(tree, name);
      if (e && type === "boolean") bool(e);
      else if (e) nonNegativeInt(e);
    });
  }

  c.attempt(() => payloadFitsPending(tree, o));

  c.unread(tree, "");
  c.throwIfAny();
  return o;
}

/** As nats-server: a message a client may publish must fit in what a subscriber may have pending. */
function payloadFitsPending(tree: Tree, o: ServerOptions): void {
  const maxPayload = o.maxPayload ?? DEFAULTS.maxPayload;
  const maxPending = o.maxPending ?? DEFAULTS.maxPending;
  if (maxPayload <= maxPending) return;
  const e = (o.maxPayload !== undefined ? lookup(tree, "max_payload") : undefined) ?? lookup(tree, "max_pending");
  if (e) fail(e, `max_payload (${maxPayload}) must not exceed max_pending (${maxPending}): no subscriber could receive such a message`);
}

/** A block's path ("accounts.A.users[0].") as BLOCK_NOT_SUPPORTED keys it ("accounts.*.users[]"). */
function blockShape(path: string): string {
  return path
    .slice(0, -1)
    .replace(/^accounts\.[^.[]+/i, "accounts.*")
    .toLowerCase()
    .replace(/\[\d+\]/g, "[]");
}

/** Problems found so far; a problem in one key does not hide those in others. */
class Collector {
  private readonly problems: ConfError[] = [];

  attempt(map: () => void): void {
    try {
      map();
    } catch (err) {
      if (!(err instanceof ConfError)) throw err;
      this.problems.push(...err.problems);
    }
  }

  /**
   * Refuses every key of `block` the mapping did not read, and the keys of
   * the blocks inside it that it read from. `path` prefixes nested names.
   */
  unread(block: Tree, path: string): void {
    const read = consumed.get(block);
    const asked = askedNames.get(block) ?? new Set<string>();
    const notSupported = path === "" ? NOT_SUPPORTED : (BLOCK_NOT_SUPPORTED[blockShape(path)] ?? {});
    for (const key of Object.keys(block)) {
      const pos = keyPosition(block, key);
      if (read?.has(key)) {
        // Into the blocks the mapping looked inside (a block given where a value belongs is already an error).
        const v = block[key];
        if (isBlock(v) && askedNames.has(v)) this.unread(v, `${path}${key}.`);
        continue;
      }
      if (usedAsVariable(block, key)) continue; // as nats-server: a variable is not a setting
      const why = notSupported[key.toLowerCase()];
      if (why !== undefined) this.problems.push(new ConfError(`${path}${key}: ${why} (nagare will not start without it)`, pos));
      else this.problems.push(new ConfError(`unknown field "${path}${key}"${didYouMean(key, asked)}`, pos));
    }
  }

  throwIfAny(): void {
    if (this.problems.length > 0) throw ConfError.combine(this.problems);
  }
}

// ---- durations ------------------------------------------------------------

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "\u00b5s": 1e-3, // micro sign
  "\u03bcs": 1e-3, // Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const DURATION_PART = /(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/y;

/**
 * Milliseconds for a Go duration string ("1h2m3s", "500ms", "1.5s", "-2m",
 * "0"), or for a bare number, which counts seconds (nats-server's legacy form).
 * The result may be fractional ("1us" is 0.001).
 */
export function parseDuration(v: unknown): number {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new ConfError(`invalid duration ${v}`);
    return v * 1000;
  }
  if (typeof v !== "string") throw new ConfError(`expected a duration such as "2m" or "500ms", got ${describe(v)}`);
  let s = v.trim();
  const orig = s;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw new ConfError(`invalid duration "${orig}"`);
  let total = 0;
  let at = 0;
  while (at < s.length) {
    DURATION_PART.lastIndex = at;
    const m = DURATION_PART.exec(s);
    if (!m || (m[1] === "" && (m[2] ?? "") === "")) {
      const rest = s.slice(at);
      const why = /^[\d.]+$/.test(rest) ? "missing unit" : "unknown unit or malformed number";
      throw new ConfError(`invalid duration "${orig}": ${why} (use ns, us, ms, s, m or h)`);
    }
    const n = Number(`${m[1] || "0"}.${m[2] || "0"}`);
    total += n * UNIT_MS[m[3]];
    at = DURATION_PART.lastIndex;
  }
  return sign * total;
}

// ---- helpers -------------------------------------------------------------

interface Entry {
  key: string;
  value: unknown;
  pos: ConfPosition | undefined;
}

/**
 * Case-insensitive lookup of a key; the last spelling set wins, except that a
 * spelling only used as a `$variable` (`PORT = 4333` for `http_port: $PORT`)
 * yields to one that isn't.
 */
/** Keys (as spelled) the mapping has read, per block: what is honoured. */
const consumed = new WeakMap<object, Set<string>>();
/** Names the mapping looked for, per block, found or not: the suggestions for a misspelt key. */
const askedNames = new WeakMap<object, Set<string>>();

function lookup(tree: Tree, name: string): Entry | undefined {
  let asked = askedNames.get(tree);
  if (asked === undefined) askedNames.set(tree, (asked = new Set()));
  asked.add(name);
  let found: Entry | undefined;
  let foundVariable: Entry | undefined;
  for (const key of Object.keys(tree)) {
    if (key.toLowerCase() !== name) continue;
    let read = consumed.get(tree);
    if (read === undefined) consumed.set(tree, (read = new Set()));
    read.add(key);
    const e = { key, value: tree[key], pos: keyPosition(tree, key) };
    if (usedAsVariable(tree, key)) foundVariable = e;
    else found = e;
  }
  return found ?? foundVariable;
}

function isBlock(v: unknown): v is Tree {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function fail(e: Entry, msg: string): never {
  throw new ConfError(`${e.key}: ${msg}`, e.pos);
}

function describe(v: unknown): string {
  if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
  if (Array.isArray(v)) return "an array";
  if (v !== null && typeof v === "object") return "a block";
  return `${typeof v} ${String(v)}`;
}

const INT32_MAX = 2 ** 31 - 1;

function str(e: Entry): string {
  if (typeof e.value !== "string") fail(e, `expected a string, got ${describe(e.value)}`);
  return e.value;
}

function nonEmptyStr(e: Entry): string {
  const s = str(e);
  if (s === "") fail(e, "must not be empty");
  return s;
}

function bool(e: Entry): boolean {
  if (typeof e.value !== "boolean") fail(e, `expected true or false, got ${describe(e.value)}`);
  return e.value;
}

function nonNegativeInt(e: Entry, max = Number.MAX_SAFE_INTEGER): number {
  const v = e.value;
  if (typeof v !== "number" || !Number.isInteger(v)) fail(e, `expected an integer, got ${describe(v)}`);
  if (v < 0) fail(e, `must not be negative (got ${v})`);
  if (v > max) fail(e, `must not exceed ${max} (got ${v})`);
  return v;
}

function portNumber(e: Entry): number {
  const v = e.value;
  if (typeof v !== "number" || !Number.isInteger(v)) fail(e, `expected a port number, got ${describe(v)}`);
  return checkPort(e, v);
}

/**
 * A port of nats-server's file: 0 is its default, as every zero (the client port 4222; no monitoring listener; no
 * route listener), never an OS-chosen port (-1 asks for that). Undefined: the default.
 */
function portOrDefault(v: number): number | undefined {
  return v === 0 ? undefined : v;
}

function checkPort(e: Entry, v: number): number {
  if (v < -1 || v > 65535) fail(e, `port ${v} is out of range (0-65535, or -1 for a random port)`);
  return v;
}

/** `4222`, `"host:port"`, `":port"` or `"[::1]:port"`, as nats-server's `listen` and `http`. */
function hostPort(e: Entry): { host?: string; port: number } {
  const v = e.value;
  if (typeof v === "number") {
    if (!Number.isInteger(v)) fail(e, `expected a port or "host:port", got ${describe(v)}`);
    return { port: checkPort(e, v) };
  }
  if (typeof v !== "string") fail(e, `expected a port or "host:port", got ${describe(v)}`);
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(-?\d+)$/.exec(v);
  if (!m) fail(e, `expected "host:port", got ${JSON.stringify(v)}`);
  const host = m[1] ?? m[2];
  return { host: host === "" ? undefined : host, port: checkPort(e, Number(m[3])) };
}

type LimitKey = "maxPayload" | "maxPending" | "maxControlLine" | "maxConnections" | "maxPingsOut" | "maxClosedClients";

/** Most closed connections kept: each holds its last /connz entry and subscriptions, so a ring past this is memory for history nobody pages through. */
const MAX_CLOSED_CLIENTS = 1_000_000;

function setLimit(o: ServerOptions, field: LimitKey, e: Entry | undefined, max?: number): void {
  if (!e) return;
  const n = nonNegativeInt(e, max);
  if (n > 0) o[field] = n;
}

type TimeKey = "pingInterval" | "authTimeout" | "writeDeadline" | "lameDuckDuration" | "lameDuckGracePeriod";

function setTime(o: ServerOptions, field: TimeKey, e: Entry | undefined): void {
  if (!e) return;
  const ms = durationMs(e);
  if (ms > 0) o[field] = ms;
}

/** Longest time accepted: Node's timers cannot wait longer (about 24.8 days). */
const MAX_TIMER_MS = INT32_MAX;

/** A duration (string, or seconds as a number) in whole milliseconds, 0 included. */
function durationMs(e: Entry): number {
  let ms: number;
  try {
    ms = parseDuration(e.value);
  } catch (err) {
    fail(e, (err as Error).message);
  }
  if (ms < 0) fail(e, `must not be negative (got ${JSON.stringify(e.value)})`);
  if (ms > MAX_TIMER_MS) fail(e, `must not exceed ${MAX_TIMER_MS} ms, about 24 days (got ${JSON.stringify(e.value)})`);
  return ms > 0 && ms < 1 ? 1 : Math.round(ms); // "100us" asks for something short, not for the default
}

/** durationMs, and more than zero. */
function positiveDurationMs(e: Entry): number {
  const ms = durationMs(e);
  if (ms === 0) fail(e, `must be more than zero (got ${JSON.stringify(e.value)})`);
  return ms;
}

/**
 * The entry of `block` spelt exactly `key` (a name the user chose, such as an account's: nats-server tells `A` from
 * `a` there), read as lookup reads, naming it `parent.key` in errors.
 */
function exactEntry(block: Tree, parent: Entry, key: string): Entry {
  let asked = askedNames.get(block);
  if (asked === undefined) askedNames.set(block, (asked = new Set()));
  asked.add(key.toLowerCase());
  let read = consumed.get(block);
  if (read === undefined) consumed.set(block, (read = new Set()));
  read.add(key);
  return { key: `${parent.key}.${key}`, value: block[key], pos: keyPosition(block, key) };
}

/** Looks `name` up in a block, naming it `block.key` in errors. */
function inBlock(block: Tree, parent: Entry, name: string): Entry | undefined {
  const x = lookup(block, name);
  return x ? { ...x, key: `${parent.key}.${x.key}` } : undefined;
}

/**
 * `authorization { token }`, `{ user, password }` or `{ users: [ { user,
 * password | nkey, permissions } ] }`, and `timeout` (the auth timeout).
 * Passwords may be bcrypt hashes. What could let in someone it should not
 * (a token beside users, a user twice) stops the start.
 */
function authorization(o: ServerOptions, e: Entry, c: Collector, noAuthUser: string | undefined): void {
  if (!isBlock(e.value)) fail(e, `expected a block, got ${describe(e.value)}`);
  const block = e.value;
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  const a: NonNullable<ServerOptions["authorization"]> = {};
  c.attempt(() => {
    const token = sub("token");
    if (token) a.token = nonEmptyStr(token);
  });
  c.attempt(() => {
    const user = sub("user") ?? sub("username");
    const password = sub("password") ?? sub("pass");
    if (user === undefined && password === undefined) return;
    if (user === undefined || password === undefined) fail(user ?? password!, "user and password go together");
    a.users = [{ user: nonEmptyStr(user), password: nonEmptyStr(password) }];
  });
  c.attempt(() => {
    const users = sub("users");
    if (users === undefined) return;
    if (a.users !== undefined) fail(users, "cannot be used with user and password in the same block");
    if (!Array.isArray(users.value)) fail(users, `expected an array of users, got ${describe(users.value)}`);
    a.users = users.value.map((u, i) => userEntry(u, users, i, c, mapsCertificates(o), noAuthUser));
  });
  c.attempt(() => {
    const timeout = sub("timeout");
    if (timeout) {
      const ms = durationMs(timeout);
      if (ms > 0) o.authTimeout = ms;
    }
  });
  // nats-server reads `permissions` here as default_permissions too (the last given wins there: two are refused here).
  const spellings = ["default_permissions", "default_permission", "permissions"].map((k) => sub(k)).filter((x): x is Entry => x !== undefined);
  const defaults = spellings[0];
  c.attempt(() => {
    if (defaults === undefined) return;
    if (spellings.length > 1) fail(spellings[1], `the default permissions are given twice (also as ${defaults.key}): give them once`);
    if (a.users === undefined) fail(defaults, "default permissions are for the users of this block, and it has none");
    a.defaultPermissions = permissions(defaults, c);
  });
  if (a.token !== undefined && a.users !== undefined) fail(e, "a token and users cannot be used together");
  if (a.token === undefined && a.users === undefined) {
    // Only a timeout (beside accounts' users, say): clients need not authenticate for it, as with nats-server. A token or
    // users given and refused have their own error.
    const given = ["token", "user", "username", "password", "pass", "users"].some((k) => sub(k) !== undefined);
    if (!given && sub("timeout") === undefined) fail(e, "needs a token, a user and password, or users");
    return;
  }
  o.authorization = a;
}

/**
 * Operator mode: `operator` (a JWT, or the file holding one; or a list),
 * a resolver, and `resolver_preload { <account public key>: <account JWT> }`.
 * The resolver is `MEMORY` (the preload, updated in memory) or a directory
 * (`{ type: full | cache, dir, allow_delete, limit, interval, timeout }`);
 * the URL resolver is refused. The JWTs are checked when the server starts.
 */
function operatorMode(o: ServerOptions, operator: Entry, resolver: Entry | undefined, preload: Entry | undefined, c: Collector): void {
  const jwtOrFile = (e: Entry, v: unknown): string => {
    if (typeof v !== "string" || v.trim() === "") fail(e, `expected an operator JWT or the file holding one, got ${describe(v)}`);
    if (v.trim().startsWith("eyJ")) return v.trim();
    try {
      return readFileSync(v, "utf8").trim();
    } catch (err) {
      fail(e, `cannot read ${JSON.stringify(v)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const operators = (Array.isArray(operator.value) ? operator.value : [operator.value]).map((v) => jwtOrFile(operator, v));
  if (resolver === undefined) fail(operator, "operator mode needs a resolver: MEMORY (with resolver_preload) or a directory ({ type: full, dir: ... })");
  const dir = resolverOf(resolver, c);
  if (dir === undefined && preload === undefined) fail(resolver, "the MEMORY resolver needs resolver_preload");
  const accounts: Record<string, string> = {};
  if (preload !== undefined) {
    if (!isBlock(preload.value)) fail(preload, `expected a block of account JWTs by public key, got ${describe(preload.value)}`);
    for (const key of Object.keys(preload.value)) {
      const e = exactEntry(preload.value, preload, key);
      if (!/^A[A-Z2-7]{55}$/.test(key)) fail(e, "is not an account public key");
      if (typeof e.value !== "string" || e.value === "") fail(e, `expected an account JWT, got ${describe(e.value)}`);
      accounts[key] = e.value;
    }
  }
  o.operator = { operators, accounts, ...(dir !== undefined ? { resolver: dir } : {}) };
}

/**
 * The resolver: `MEMORY` (undefined here), or a directory resolver's block.
 * A URL resolver is refused: nagare would not know the accounts it serves.
 */
function resolverOf(e: Entry, c: Collector): NonNullable<NonNullable<ServerOptions["operator"]>["resolver"]> | undefined {
  if (typeof e.value === "string") {
    const v = e.value.trim().toUpperCase();
    if (v === "MEMORY" || v === "MEM") return undefined;
    if (v.startsWith("URL")) fail(e, "the URL resolver is not supported yet (nagare will not start without it): use MEMORY or a directory ({ type: full, dir: ... })");
    fail(e, `expected MEMORY or a directory resolver block, got ${describe(e.value)}`);
  }
  if (!isBlock(e.value)) fail(e, `expected MEMORY or a directory resolver block, got ${describe(e.value)}`);
  const block = e.value;
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  const type = sub("type");
  const dirEntry = sub("dir");
  if (type === undefined) fail(e, "needs type: full or cache");
  const t = nonEmptyStr(type).toLowerCase();
  if (t !== "full" && t !== "cache") fail(type, `must be full or cache, got ${JSON.stringify(type.value)}`);
  if (dirEntry === undefined) fail(e, "needs dir: the directory holding the account JWTs");
  const r: NonNullable<NonNullable<ServerOptions["operator"]>["resolver"]> = { type: t, dir: nonEmptyStr(dirEntry) };
  c.attempt(() => {
    const del = sub("allow_delete");
    if (!del) return;
    if (t === "cache") fail(del, "a cache resolver does not accept allow_delete");
    r.allowDelete = bool(del);
  });
  c.attempt(() => {
    const limit = sub("limit");
    if (!limit) return;
    const n = nonNegativeInt(limit);
    if (n > 0) r.limit = n; // 0: the default, as nats-server reads it
  });
  // Checked, and honoured by what they mean on one server: `interval` (full) paces syncing the
  // directory with other servers', `timeout` bounds asking other servers for an account: nagare has no other servers.
  c.attempt(() => {
    const interval = sub("interval");
    if (!interval) return;
    if (t === "cache") fail(interval, "a cache resolver does not accept interval");
    durationMs(interval);
  });
  c.attempt(() => {
    const timeout = sub("timeout");
    if (timeout) durationMs(timeout);
  });
  c.attempt(() => {
    const ttl = sub("ttl");
    if (!ttl) return;
    if (t === "full") fail(ttl, "a full resolver does not accept ttl");
    // Evicting an account after ttl means fetching it again from other servers: nagare has none to fetch from.
    if (durationMs(ttl) > 0) fail(ttl, "a cache resolver's ttl is not supported yet (nagare will not start without it)");
  });
  return r;
}

/**
 * `system_account` (or `system`): the account whose users may ask for the
 * server's status (one of `accounts`, `$SYS`, or in operator mode an account
 * key); `no_system_account` (or `no_system`, `no_sys_acc`): none at all.
 */
function systemAccount(o: ServerOptions, tree: Tree): void {
  const e = lookup(tree, "system_account") ?? lookup(tree, "system");
  const none = lookup(tree, "no_system_account") ?? lookup(tree, "no_system") ?? lookup(tree, "no_sys_acc");
  if (none !== undefined && bool(none)) {
    if (e !== undefined) fail(none, "cannot be used with system_account");
    o.noSystemAccount = true;
  }
  if (e === undefined) return;
  const name = nonEmptyStr(e);
  if (o.operator !== undefined) {
    if (!/^A[A-Z2-7]{55}$/.test(name)) fail(e, "in operator mode the system account is an account public key");
  } else if (name !== "$SYS" && o.accounts?.[name] === undefined) {
    fail(e, `${name} is not one of the accounts`);
  }
  o.systemAccount = name;
}

/**
 * `accounts { NAME: { users: [...], exports: [...], imports: [...] } }`:
 * exports `{ stream | service, accounts, response_type, response_threshold }`,
 * imports `{ stream: { account, subject }, prefix }` and `{ service: { account,
 * subject }, to }`, and `jetstream` (see accountJetStream). What nagare
 * cannot serve in an account (mappings) stops the start.
 */
function accountsBlock(o: ServerOptions, e: Entry, c: Collector, noAuthUser: string | undefined): void {
  if (!isBlock(e.value)) fail(e, `expected a block of accounts, got ${describe(e.value)}`);
  const out: NonNullable<ServerOptions["accounts"]> = {};
  // What an export may name: the accounts defined here (and the system account, which exists without being defined).
  const defined = new Set([...Object.keys(e.value), "$SYS"]);
  for (const name of Object.keys(e.value)) {
    const acc = exactEntry(e.value, e, name);
    c.attempt(() => {
      if (!isBlock(acc.value)) fail(acc, `expected an account block, got ${describe(acc.value)}`);
      const block = acc.value;
      const sub = (k: string): Entry | undefined => inBlock(block, acc, k);
      const a: NonNullable<ServerOptions["accounts"]>[string] = {};
      c.attempt(() => {
        const users = sub("users");
        if (users === undefined) return;
        if (!Array.isArray(users.value)) fail(users, `expected an array of users, got ${describe(users.value)}`);
        a.users = users.value.map((u, i) => userEntry(u, users, i, c, mapsCertificates(o), noAuthUser));
      });
      c.attempt(() => {
        const exports = sub("exports");
        if (exports === undefined) return;
        if (!Array.isArray(exports.value)) fail(exports, `expected an array of exports, got ${describe(exports.value)}`);
        a.exports = exports.value.map((x, i) => exportEntry(x, { ...exports, key: `${exports.key}[${i}]` }, c, defined));
      });
      c.attempt(() => {
        const imports = sub("imports");
        if (imports === undefined) return;
        if (!Array.isArray(imports.value)) fail(imports, `expected an array of imports, got ${describe(imports.value)}`);
        a.imports = imports.value.map((x, i) => importEntry(x, { ...imports, key: `${imports.key}[${i}]` }, c));
      });
      c.attempt(() => {
        const js = sub("jetstream");
        if (js) a.jetstream = accountJetStream(js, c);
      });
      c.attempt(() => {
        const defaults = sub("default_permissions");
        if (defaults === undefined) return;
        if (a.users === undefined || a.users.length === 0) fail(defaults, "default permissions are for the users of this account, and it has none");
        a.defaultPermissions = permissions(defaults, c);
      });
      const mappings = sub("mappings");
      if (mappings) fail(mappings, "subject mappings are not supported yet (nagare will not start without it)");
      out[name] = a;
    });
  }
  o.accounts = out;
}

/**
 * An account's `jetstream`, read as nats-server 2.9 reads it: `true`/`false`,
 * `enabled`/`disabled`, or a block of limits under nats-server's names and
 * aliases, each unlimited (-1) unless given.
 */
function accountJetStream(e: Entry, c: Collector): NonNullable<NonNullable<ServerOptions["accounts"]>[string]["jetstream"]> {
  const v = e.value;
  if (typeof v === "boolean") return v;
  if (typeof v === "string") {
    const s = v.toLowerCase();
    if (s === "enabled" || s === "enable") return true;
    if (s === "disabled" || s === "disable") return false;
    fail(e, `expected enabled or disabled, got ${describe(v)}`);
  }
  if (!isBlock(v)) fail(e, `expected true, false, enabled, disabled or a block of limits, got ${describe(v)}`);
  const limits: Exclude<ReturnType<typeof accountJetStream>, boolean> = {};
  const size = (x: Entry): number => {
    if (typeof x.value !== "number" || !Number.isInteger(x.value)) fail(x, `expected a size, got ${describe(x.value)}`);
    if (x.value < -1) fail(x, `must be -1 (unlimited) or more, got ${x.value}`);
    return x.value;
  };
  const keys: Array<[keyof typeof limits, string[]]> = [
    ["maxMemory", ["max_memory", "max_mem", "mem", "memory"]],
    ["maxStorage", ["max_store", "max_file", "max_disk", "store", "disk"]],
    ["maxStreams", ["max_streams", "streams"]],
    ["maxConsumers", ["max_consumers", "consumers"]],
    ["maxAckPending", ["max_ack_pending"]],
    ["memoryMaxStreamBytes", ["mem_max_stream_bytes", "memory_max_stream_bytes"]],
    ["storageMaxStreamBytes", ["disk_max_stream_bytes", "store_max_stream_bytes"]],
  ];
  for (const [field, names] of keys) {
    c.attempt(() => {
      let x: Entry | undefined;
      for (const n of names) x = inBlock(v, e, n) ?? x;
      if (x) (limits as Record<string, number>)[field] = size(x);
    });
  }
  c.attempt(() => {
    let x: Entry | undefined;
    for (const n of ["max_bytes_required", "max_stream_bytes", "max_bytes"]) x = inBlock(v, e, n) ?? x;
    if (x) limits.maxBytesRequired = bool(x);
  });
  return limits;
}

function exportEntry(v: unknown, at: Entry, c: Collector, defined: ReadonlySet<string>): NonNullable<NonNullable<ServerOptions["accounts"]>[string]["exports"]>[number] {
  if (!isBlock(v)) fail(at, `expected an export block, got ${describe(v)}`);
  const sub = (k: string): Entry | undefined => inBlock(v, at, k);
  const stream = sub("stream");
  const service = sub("service");
  if ((stream === undefined) === (service === undefined)) fail(at, "needs a stream or a service");
  const accounts = sub("accounts");
  const names = accounts === undefined ? undefined : (Array.isArray(accounts.value) ? accounts.value : [accounts.value]).map((x) => {
    if (typeof x !== "string" || x === "") fail(accounts, `expected account names, got ${describe(x)}`);
    // As nats-server: an export to an account that does not exist is a mistake, not an export to no one.
    if (!defined.has(x)) fail(accounts, `"${x}" account not defined for ${stream !== undefined ? "stream" : "service"} export`);
    return x;
  });
  let out: ReturnType<typeof exportEntry>;
  if (stream !== undefined) out = { stream: subjectValue(stream), ...(names ? { accounts: names } : {}) };
  else {
    const svc: ReturnType<typeof exportEntry> & { service: string } = { service: subjectValue(service!), ...(names ? { accounts: names } : {}) };
    const type = sub("response_type") ?? sub("response");
    if (type) {
      const t = nonEmptyStr(type).toLowerCase();
      if (t === "chunked") svc.responseType = "stream";
      else if (t === "singleton" || t === "stream") svc.responseType = t;
      else fail(type, `must be singleton, stream or chunked, got ${JSON.stringify(t)}`);
    }
    const threshold = sub("response_threshold") ?? sub("threshold");
    if (threshold) {
      const ms = durationMs(threshold);
      if (ms > 0) svc.responseThresholdMs = ms;
    }
    out = svc;
  }
  c.unread(v, `${at.key}.`);
  return out;
}

function importEntry(v: unknown, at: Entry, c: Collector): NonNullable<NonNullable<ServerOptions["accounts"]>[string]["imports"]>[number] {
  if (!isBlock(v)) fail(at, `expected an import block, got ${describe(v)}`);
  const sub = (k: string): Entry | undefined => inBlock(v, at, k);
  const stream = sub("stream");
  const service = sub("service");
  if ((stream === undefined) === (service === undefined)) fail(at, "needs a stream or a service");
  const from = (x: Entry): { account: string; subject: string } => {
    if (!isBlock(x.value)) fail(x, `expected { account, subject }, got ${describe(x.value)}`);
    const account = inBlock(x.value, x, "account");
    const subject = inBlock(x.value, x, "subject");
    if (account === undefined || subject === undefined) fail(x, "needs account and subject");
    return { account: nonEmptyStr(account), subject: subjectValue(subject) };
  };
  let out: ReturnType<typeof importEntry>;
  if (stream !== undefined) {
    const prefix = sub("prefix");
    out = { stream: from(stream), ...(prefix ? { prefix: nonEmptyStr(prefix) } : {}) };
  } else {
    const to = sub("to");
    out = { service: from(service!), ...(to ? { to: subjectValue(to) } : {}) };
  }
  c.unread(v, `${at.key}.`);
  return out;
}

function subjectValue(e: Entry): string {
  const s = nonEmptyStr(e);
  if (!isValidSubscribeSubject(s)) fail(e, `${JSON.stringify(s)} is not a valid subject`);
  return s;
}

/**
 * One entry of `authorization { users: [...] }` (or an account's); `certificateUsers`: verify_and_map is on, and users
 * may have no password; `noAuthUser`: the user clients without credentials are, who may have none either (nats-server's
 * usual anonymous user).
 */
function userEntry(v: unknown, parent: Entry, i: number, c: Collector, certificateUsers: boolean, noAuthUser: string | undefined): NonNullable<NonNullable<ServerOptions["authorization"]>["users"]>[number] {
  const at: Entry = { ...parent, key: `${parent.key}[${i}]` };
  if (!isBlock(v)) fail(at, `expected a user block, got ${describe(v)}`);
  const sub = (name: string): Entry | undefined => inBlock(v, at, name);
  const u: NonNullable<NonNullable<ServerOptions["authorization"]>["users"]>[number] = {};
  c.attempt(() => {
    const user = sub("user") ?? sub("username");
    if (user) u.user = nonEmptyStr(user);
  });
  c.attempt(() => {
    const password = sub("password") ?? sub("pass");
    if (!password) return;
    // nats-server's anonymous user is often written with an empty password: the same as none.
    if (password.value === "" && u.user !== undefined && u.user === noAuthUser) return;
    u.password = nonEmptyStr(password);
  });
  c.attempt(() => {
    const nkey = sub("nkey");
    if (nkey) {
      u.nkey = nonEmptyStr(nkey);
      if (!/^U[A-Z2-7]{55}$/.test(u.nkey)) fail(nkey, "is not an NKey user's public key (U followed by 55 base32 characters)");
    }
  });
  c.attempt(() => {
    // nats-server 2.9 reads permission and authorization here too.
    const given = ["permissions", "permission", "authorization"].map((k) => sub(k)).filter((x): x is Entry => x !== undefined);
    if (given.length > 1) fail(given[1], `the user's permissions are given twice (also as ${given[0].key}): give them once`);
    if (given.length === 1) u.permissions = permissions(given[0], c);
  });
  c.unread(v, `${at.key}.`);
  if ((u.user === undefined) === (u.nkey === undefined)) fail(at, "needs a user name or an nkey");
  if (u.user !== undefined && u.password === undefined && !certificateUsers && u.user !== noAuthUser) {
    fail(at, `user ${u.user} needs a password (only the no_auth_user, and users that client certificates name, with tls { verify_and_map: true }, may go without)`);
  }
  return u;
}

/** The top level's `no_auth_user`, if it is a name (what else it is gets its error where it is read). */
function noAuthUserOf(tree: Tree): string | undefined {
  const v = lookup(tree, "no_auth_user")?.value;
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** `permissions { publish, subscribe }`, each a subject, a list of them, or `{ allow, deny }`. */
function permissions(e: Entry, c: Collector): NonNullable<NonNullable<NonNullable<ServerOptions["authorization"]>["users"]>[number]["permissions"]> {
  if (!isBlock(e.value)) fail(e, `expected a block, got ${describe(e.value)}`);
  const block = e.value;
  const out: ReturnType<typeof permissions> = {};
  // nats-server 2.9's spellings: pub and import, sub and export.
  const spellings = { publish: ["publish", "pub", "import"], subscribe: ["subscribe", "sub", "export"] } as const;
  for (const kind of ["publish", "subscribe"] as const) {
    c.attempt(() => {
      const given = spellings[kind].map((k) => inBlock(block, e, k)).filter((x): x is Entry => x !== undefined);
      if (given.length > 1) fail(given[1], `the ${kind} permissions are given twice (also as ${given[0].key}): give them once`);
      if (given.length === 1) out[kind] = subjectRules(given[0], kind === "subscribe");
    });
  }
  c.attempt(() => {
    const responses = inBlock(block, e, "allow_responses") ?? inBlock(block, e, "publish_allow_responses");
    if (responses) out.allowResponses = allowResponses(responses, c);
  });
  return out;
}

/**
 * `allow_responses: true` or `{ max, expires }`, as nats-server reads it: 0
 * (or leaving a key out) is the default, 1 answer within 2 minutes; a
 * negative number is no limit.
 */
function allowResponses(e: Entry, c: Collector): boolean | { max?: number; expires?: number } {
  if (typeof e.value === "boolean") return e.value;
  if (!isBlock(e.value)) fail(e, `expected true, false or a block with max and expires, got ${describe(e.value)}`);
  const block = e.value;
  const out: { max?: number; expires?: number } = {};
  c.attempt(() => {
    const max = inBlock(block, e, "max") ?? inBlock(block, e, "max_msgs") ?? inBlock(block, e, "max_messages") ?? inBlock(block, e, "max_responses");
    if (!max) return;
    const v = max.value;
    if (typeof v !== "number" || !Number.isInteger(v)) fail(max, `expected an integer, got ${describe(v)}`);
    if (Math.abs(v) > INT32_MAX) fail(max, `must not exceed ${INT32_MAX} (got ${v})`);
    out.max = v;
  });
  c.attempt(() => {
    const expires = inBlock(block, e, "expires") ?? inBlock(block, e, "expiration") ?? inBlock(block, e, "ttl");
    if (!expires) return;
    let ms: number;
    try {
      ms = parseDuration(expires.value);
    } catch (err) {
      fail(expires, (err as Error).message);
    }
    if (Math.abs(ms) > MAX_TIMER_MS) fail(expires, `must not exceed ${MAX_TIMER_MS} ms, about 24 days (got ${JSON.stringify(expires.value)})`);
    out.expires = ms > 0 && ms < 1 ? 1 : Math.round(ms);
  });
  return out;
}

/** Subjects allowed and denied; for `subscribe` (`queues`) an entry may name a queue group after a space, as nats-server's. */
function subjectRules(e: Entry, queues: boolean): { allow?: string[]; deny?: string[] } {
  const list = (x: Entry): string[] => {
    const v = x.value;
    const items = Array.isArray(v) ? v : [v];
    return items.map((s) => {
      const parsed = typeof s === "string" ? parsePermissionEntry(s, queues) : null;
      if (parsed === null) fail(x, `expected subjects${queues ? ' (each may name a queue group after a space: "orders.* workers")' : ""}, got ${describe(s)}`);
      return parsed.queue === null ? parsed.subject : `${parsed.subject} ${parsed.queue}`;
    });
  };
  if (!isBlock(e.value)) return { allow: list(e) };
  const block = e.value;
  const out: { allow?: string[]; deny?: string[] } = {};
  const allow = inBlock(block, e, "allow");
  if (allow) out.allow = list(allow);
  const deny = inBlock(block, e, "deny");
  if (deny) out.deny = list(deny);
  return out;
}

/** A file path that can be read now (a certificate or key): one that cannot is an error at its place in the file. */
function readableFile(e: Entry): string {
  const path = nonEmptyStr(e);
  try {
    readFileSync(path);
  } catch (err) {
    fail(e, `cannot read ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return path;
}

/**
 * `tls { cert_file, key_file, ca_file, verify, verify_and_map, timeout,
 * handshake_first, min_version, cipher_suites, curve_preferences }` for
 * client connections (`allow_non_tls` is a top-level key). Certificate and key are required:
 * a `tls` block nagare could not serve stops the start (the files are read
 * at start, with their own errors).
 */
function tls(o: ServerOptions, e: Entry, c: Collector): void {
  const t = tlsBlock(e, c, true);
  if (t !== undefined) o.tls = t;
}

/**
 * The keys of a `tls` block, the client listener's or the Kafka listener's
 * (which has no `handshake_first`: it is TLS from the first byte); undefined
 * when certificate or key is missing (already reported).
 */
function tlsBlock(e: Entry, c: Collector, upgrade: boolean): NonNullable<ServerOptions["tls"]> | undefined {
  if (!isBlock(e.value)) fail(e, `expected a block, got ${describe(e.value)}`);
  const block = e.value;
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  const t: Partial<NonNullable<ServerOptions["tls"]>> = {};
  c.attempt(() => {
    const cert = sub("cert_file");
    if (cert) t.certFile = readableFile(cert);
    else fail(e, "needs cert_file: the server's certificate");
  });
  c.attempt(() => {
    const key = sub("key_file");
    if (key) t.keyFile = readableFile(key);
    else fail(e, "needs key_file: the private key of cert_file");
  });
  c.attempt(() => {
    const ca = sub("ca_file");
    if (ca) t.caFile = readableFile(ca);
  });
  c.attempt(() => {
    const verify = sub("verify");
    if (verify) t.verify = bool(verify);
  });
  c.attempt(() => {
    // As nats-server: true implies verify; false leaves verify as it is.
    const map = sub("verify_and_map");
    if (map) t.verifyAndMap = bool(map);
  });
  c.attempt(() => {
    const suites = sub("cipher_suites");
    if (suites) t.cipherSuites = nameList(suites, cipherSuiteProblem);
  });
  c.attempt(() => {
    const curves = sub("curve_preferences");
    if (curves) t.curvePreferences = nameList(curves, curveProblem);
  });
  c.attempt(() => {
    const timeout = sub("timeout");
    if (timeout) {
      const ms = durationMs(timeout);
      if (ms > 0) t.timeoutMs = ms;
    }
  });
  if (upgrade) {
    c.attempt(() => {
      const first = sub("handshake_first") ?? sub("first");
      if (first) {
        if (typeof first.value !== "boolean") fail(first, `must be true or false (a fallback delay is not supported yet), got ${describe(first.value)}`);
        t.handshakeFirst = first.value;
      }
    });
  }
  c.attempt(() => {
    const min = sub("min_version");
    if (min) {
      const v = nonEmptyStr(min);
      if (v !== "1.2" && v !== "1.3") fail(min, `must be "1.2" or "1.3", got ${JSON.stringify(v)}`);
      t.minVersion = v === "1.2" ? "TLSv1.2" : "TLSv1.3";
    }
  });
  return t.certFile !== undefined && t.keyFile !== undefined ? { ...t, certFile: t.certFile, keyFile: t.keyFile } : undefined;
}

/** A non-empty list of names (cipher suites, curves) that `problem` finds nothing wrong with. */
function nameList(e: Entry, problem: (name: unknown) => string | null): string[] {
  const items = Array.isArray(e.value) ? e.value : [e.value];
  if (items.length === 0) fail(e, "cannot be empty");
  for (const item of items) {
    const why = problem(item);
    if (why !== null) fail(e, why);
  }
  return items as string[];
}

/**
 * `kafka { port, host, advertise, auto_create_topics, num_partitions, default_replication_factor, min_insync_replicas,
 * max_request_bytes, group_initial_rebalance_delay,
 * group_min_session_timeout, group_max_session_timeout,
 * fetch_max_bytes, connections_max_idle, offsets_retention, offsets_retention_check_interval, offsets_commit_timeout, log_cleaner_backoff,
 * max_decompress_bytes, max_response_bytes, max_queued_request_bytes,
 * auto_leader_rebalance, leader_imbalance_check_interval, leader_imbalance_per_broker_percentage, tls { ... },
 * sasl_mechanisms }`, or `kafka: true`.
 */
function kafka(o: ServerOptions, e: Entry, c: Collector): void {
  if (typeof e.value === "boolean" || typeof e.value === "string") {
    o.kafka = bool(e) ? {} : undefined;
    return;
  }
  if (!isBlock(e.value)) fail(e, `expected a block or a boolean, got ${describe(e.value)}`);
  const block = e.value;
  const k: NonNullable<ServerOptions["kafka"]> = {};
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  c.attempt(() => {
    const port = sub("port") ?? sub("listen_port");
    if (port) k.port = portNumber(port);
  });
  c.attempt(() => {
    const host = sub("host");
    if (host) k.host = nonEmptyStr(host);
  });
  c.attempt(() => {
    const advertise = sub("advertise");
    if (advertise) k.advertise = nonEmptyStr(advertise);
  });
  c.attempt(() => {
    const auto = sub("auto_create_topics");
    if (auto) k.autoCreateTopics = bool(auto);
  });
  c.attempt(() => {
    const partitions = sub("num_partitions");
    if (partitions) {
      k.numPartitions = nonNegativeInt(partitions, 1024);
      if (k.numPartitions === 0) fail(partitions, "must be at least 1");
    }
  });
  c.attempt(() => {
    const factor = sub("default_replication_factor");
    if (factor) {
      k.defaultReplicationFactor = nonNegativeInt(factor, 5);
      if (k.defaultReplicationFactor === 0) fail(factor, "must be at least 1");
    }
  });
  c.attempt(() => {
    const min = sub("min_insync_replicas");
    if (min) {
      k.minInsyncReplicas = nonNegativeInt(min, 5);
      if (k.minInsyncReplicas === 0) fail(min, "must be at least 1");
    }
  });
  c.attempt(() => {
    const delay = sub("group_initial_rebalance_delay");
    if (delay) k.initialRebalanceDelayMs = durationMs(delay);
  });
  c.attempt(() => {
    const min = sub("group_min_session_timeout");
    const max = sub("group_max_session_timeout");
    if (min) k.minSessionTimeoutMs = positiveDurationMs(min);
    if (max) k.maxSessionTimeoutMs = positiveDurationMs(max);
    const lo = k.minSessionTimeoutMs ?? KAFKA_SESSION_TIMEOUT_BOUNDS.min;
    const hi = k.maxSessionTimeoutMs ?? KAFKA_SESSION_TIMEOUT_BOUNDS.max;
    if (lo > hi) fail((min ?? max)!, `group_min_session_timeout (${lo}ms) is longer than group_max_session_timeout (${hi}ms)`);
  });
  c.attempt(() => {
    const maxReq = sub("max_request_bytes");
    if (maxReq) k.maxRequestBytes = nonNegativeInt(maxReq, 1024 * 1024 * 1024);
  });
  c.attempt(() => {
    const fetchMax = sub("fetch_max_bytes");
    if (fetchMax) k.fetchMaxBytes = nonNegativeInt(fetchMax, INT32_MAX) || undefined;
  });
  c.attempt(() => {
    const maxDecompress = sub("max_decompress_bytes");
    if (maxDecompress) k.maxDecompressBytes = nonNegativeInt(maxDecompress) || undefined;
  });
  c.attempt(() => {
    const maxResponse = sub("max_response_bytes");
    if (maxResponse) k.maxResponseBytes = nonNegativeInt(maxResponse) || undefined;
  });
  c.attempt(() => {
    const maxQueued = sub("max_queued_request_bytes");
    if (maxQueued) k.maxQueuedRequestBytes = nonNegativeInt(maxQueued) || undefined;
  });
  c.attempt(() => {
    const rebalance = sub("auto_leader_rebalance");
    if (rebalance) k.autoLeaderRebalance = bool(rebalance);
  });
  c.attempt(() => {
    const interval = sub("leader_imbalance_check_interval");
    if (!interval) return;
    k.leaderImbalanceCheckIntervalMs = durationMs(interval);
    // Kafka's least is 1 s; tests look more often.
    if (k.leaderImbalanceCheckIntervalMs < 100) fail(interval, `must be at least 100ms (got ${JSON.stringify(interval.value)})`);
  });
  c.attempt(() => {
    const percentage = sub("leader_imbalance_per_broker_percentage");
    if (percentage) k.leaderImbalancePerBrokerPercentage = nonNegativeInt(percentage, 100);
  });
  c.attempt(() => {
    const idle = sub("connections_max_idle");
    if (idle) k.connectionsMaxIdleMs = durationMs(idle); // 0: never
  });
  c.attempt(() => {
    const retention = sub("offsets_retention");
    if (!retention) return;
    k.offsetsRetentionMs = durationMs(retention);
    if (k.offsetsRetentionMs < 1) fail(retention, `must be a positive duration (got ${JSON.stringify(retention.value)})`);
  });
  c.attempt(() => {
    const interval = sub("offsets_retention_check_interval");
    if (!interval) return;
    k.offsetsRetentionCheckIntervalMs = durationMs(interval);
    // Kafka's least is 1 ms; tests look often, and a ticker faster than this would only cost.
    if (k.offsetsRetentionCheckIntervalMs < 100) fail(interval, `must be at least 100ms (got ${JSON.stringify(interval.value)})`);
  });
  c.attempt(() => {
    const timeout = sub("offsets_commit_timeout");
    if (!timeout) return;
    k.offsetsCommitTimeoutMs = positiveDurationMs(timeout);
  });
  c.attempt(() => {
    const backoff = sub("log_cleaner_backoff");
    if (!backoff) return;
    k.logCleanerBackoffMs = durationMs(backoff);
    // Kafka's least is 0; a ticker faster than this would only cost.
    if (k.logCleanerBackoffMs < 100) fail(backoff, `must be at least 100ms (got ${JSON.stringify(backoff.value)})`);
  });
  c.attempt(() => {
    const t = sub("tls");
    if (!t) return;
    const parsed = tlsBlock(t, c, false);
    if (parsed !== undefined) k.tls = parsed;
  });
  c.attempt(() => {
    const mechanisms = sub("sasl_mechanisms") ?? sub("sasl_enabled_mechanisms");
    if (!mechanisms) return;
    const items = Array.isArray(mechanisms.value) ? mechanisms.value : [mechanisms.value];
    if (items.length === 0) fail(mechanisms, `needs at least one of ${KAFKA_SASL_MECHANISMS.join(", ")}`);
    k.saslMechanisms = items.map((m) => {
      const name = typeof m === "string" ? m.toUpperCase() : m;
      if (!KAFKA_SASL_MECHANISMS.includes(name as KafkaSaslMechanism)) fail(mechanisms, `expected mechanisms among ${KAFKA_SASL_MECHANISMS.join(", ")}, got ${describe(m)}`);
      return name as KafkaSaslMechanism;
    });
  });
  let enabled = true;
  c.attempt(() => {
    const en = sub("enabled") ?? sub("enable");
    if (en) enabled = bool(en);
  });
  o.kafka = enabled ? k : undefined;
}

function jetstream(o: ServerOptions, e: Entry, c: Collector): void {
  const v = e.value;
  if (typeof v === "boolean") {
    o.jetstream = v;
    return;
  }
  if (typeof v === "string") {
    const s = v.toLowerCase();
    if (["enabled", "enable", "true", "yes", "on"].includes(s)) o.jetstream = true;
    else if (["disabled", "disable", "false", "no", "off"].includes(s)) o.jetstream = false;
    else fail(e, `expected enabled, disabled or a block, got ${describe(v)}`);
    return;
  }
  if (!isBlock(v)) fail(e, `expected true, false, enabled, disabled or a block, got ${describe(v)}`);
  const sub = (name: string): Entry | undefined => inBlock(v, e, name);
  let enabled = true;
  c.attempt(() => {
    const en = sub("enabled") ?? sub("enable");
    if (en) enabled = bool(en);
  });
  o.jetstream = enabled;
  c.attempt(() => {
    const dir = sub("store_dir") ?? sub("storedir") ?? sub("store"); // nats-server's three spellings
    if (dir) o.storeDir = nonEmptyStr(dir);
  });
  // nats-server's server-wide limits; sizes as everywhere (1G, 512MB, or bytes).
  for (const [field, names] of [
    ["jetstreamMaxMemory", ["max_memory_store", "max_mem_store", "max_mem"]],
    ["jetstreamMaxStorage", ["max_file_store", "max_file"]],
  ] as const) {
    c.attempt(() => {
      let x: Entry | undefined;
      for (const n of names) x = sub(n) ?? x;
      if (x === undefined) return;
      if (typeof x.value !== "number" || !Number.isInteger(x.value)) fail(x, `expected a size, got ${describe(x.value)}`);
      if (x.value < -1) fail(x, `must be -1 (no limit) or more, got ${x.value}`);
      // nats-server 2.9 reads an explicit 0 as zero bytes (every stream of that storage refused); nagare's 0 is no limit.
      if (x.value === 0) fail(x, "0 is no storage of this kind at all in nats-server; nagare cannot keep a zero limit yet (nagare will not start without it): give a size, or -1 for no limit");
      o[field] = x.value;
    });
  }
  c.attempt(() => {
    const limit = sub("request_queue_limit");
    if (!limit) return;
    const v = nonNegativeInt(limit);
    if (v === 0) fail(limit, "must be at least 1");
    o.jetstreamRequestQueueLimit = v;
  });
  c.attempt(() => {
    const sync = sub("sync_interval") ?? sub("sync");
    if (!sync) return;
    if (typeof sync.value === "string" && sync.value.toLowerCase() === "always") {
      o.syncInterval = "always";
      return;
    }
    const ms = durationMs(sync);
    if (ms <= 0) fail(sync, `must be "always" or a positive duration`);
    o.syncInterval = ms;
  });
}

/**
 * `cluster { name, listen, host, port, routes, ... }`, as nats-server reads
 * it: the cluster's name (also its keys in etcd), the route listener and
 * the routes to dial, the address other nodes dial (`advertise`).
 * nats-server's other route settings (tls, authorization, ...) are refused where they stand
 * (CLUSTER_NOT_SUPPORTED): a route nagare cannot secure as asked must not
 * start in plaintext.
 */
function clusterBlock(o: ServerOptions, e: Entry, c: Collector): void {
  if (!isBlock(e.value)) fail(e, `expected a block, got ${describe(e.value)}`);
  const block = e.value;
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  const cl: ClusterOptions = {};
  c.attempt(() => {
    const name = sub("name");
    if (!name) return;
    const v = str(name);
    const why = clusterNameError(v);
    if (why !== null) fail(name, why);
    cl.name = v;
  });
  c.attempt(() => {
    const listen = sub("listen");
    if (!listen) return;
    const hp = hostPort(listen);
    if (hp.host !== undefined) cl.host = hp.host;
    cl.port = portOrDefault(hp.port);
  });
  c.attempt(() => {
    const host = sub("host");
    if (!host) return;
    cl.host = nonEmptyStr(host);
  });
  c.attempt(() => {
    const port = sub("port");
    if (!port) return;
    cl.port = portOrDefault(portNumber(port));
  });
  c.attempt(() => {
    const routes = sub("routes");
    if (!routes) return;
    cl.routes = routeUrls(routes);
  });
  c.attempt(() => {
    // nats-server takes either name in the cluster block.
    const advertise = sub("advertise") ?? sub("cluster_advertise");
    if (!advertise) return;
    const hp = hostPort(advertise);
    if (hp.host === undefined || hp.port <= 0) fail(advertise, `expected "host:port" with a port other nodes can dial, got ${describe(advertise.value)}`);
    cl.advertise = hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
  });
  o.cluster = cl;
}

/** nats-server's route URLs: `nats://host:port` or `nats-route://host:port`, with optional user:password. */
function routeUrls(e: Entry): string[] {
  const items = Array.isArray(e.value) ? e.value : typeof e.value === "string" ? e.value.split(",").map((x) => x.trim()) : [e.value];
  return items.map((x) => {
    if (typeof x !== "string") fail(e, `expected route URLs, got ${describe(x)}`);
    const why = routeUrlError(x);
    if (why !== null) fail(e, why);
    return x;
  });
}

/**
 * `etcd { endpoints, prefix, tls { ca_file, cert_file, key_file },
 * dial_timeout, request_timeout, lease_ttl }`: where the cluster is
 * coordinated (nagare's own block; nats-server has none). Endpoints are a
 * list or one comma-separated string, as etcdctl takes them.
 */
function etcdBlock(o: ServerOptions, e: Entry, c: Collector): void {
  if (!isBlock(e.value)) fail(e, `expected a block, got ${describe(e.value)}`);
  const block = e.value;
  const sub = (name: string): Entry | undefined => inBlock(block, e, name);
  const x: Partial<EtcdOptions> = {};
  c.attempt(() => {
    const endpoints = sub("endpoints") ?? sub("endpoint");
    if (!endpoints) fail(e, 'needs endpoints: etcd\'s client URLs, such as "http://127.0.0.1:2379"');
    const items = Array.isArray(endpoints.value) ? endpoints.value : typeof endpoints.value === "string" ? endpoints.value.split(",").map((s) => s.trim()) : [endpoints.value];
    if (items.length === 0) fail(endpoints, "needs at least one etcd URL");
    x.endpoints = items.map((v) => {
      if (typeof v !== "string") fail(endpoints, `expected etcd URLs, got ${describe(v)}`);
      const why = etcdEndpointError(v);
      if (why !== null) fail(endpoints, why);
      return v;
    });
    if (new Set(x.endpoints.map((v) => new URL(v).protocol)).size > 1) fail(endpoints, "all http:// or all https://");
  });
  c.attempt(() => {
    const prefix = sub("prefix");
    if (prefix) x.prefix = nonEmptyStr(prefix);
  });
  let tlsEntry: Entry | undefined;
  c.attempt(() => {
    const t = sub("tls");
    if (!t) return;
    tlsEntry = t;
    if (!isBlock(t.value)) fail(t, `expected a block, got ${describe(t.value)}`);
    const tb = t.value;
    const tsub = (name: string): Entry | undefined => inBlock(tb, t, name);
    const out: NonNullable<EtcdOptions["tls"]> = {};
    c.attempt(() => {
      const ca = tsub("ca_file");
      if (ca) out.caFile = readableFile(ca);
    });
    c.attempt(() => {
      const cert = tsub("cert_file");
      if (cert) out.certFile = readableFile(cert);
    });
    c.attempt(() => {
      const key = tsub("key_file");
      if (key) out.keyFile = readableFile(key);
    });
    if ((tsub("cert_file") === undefined) !== (tsub("key_file") === undefined)) fail(t, "cert_file and key_file go together (a client certificate and its key)");
    x.tls = out;
  });
  c.attempt(() => {
    if (tlsEntry !== undefined && x.endpoints !== undefined && !x.endpoints.every((v) => v.startsWith("https:"))) fail(tlsEntry, "needs https:// endpoints");
  });
  for (const [key, field] of [
    ["dial_timeout", "dialTimeout"],
    ["request_timeout", "requestTimeout"],
  ] as const) {
    c.attempt(() => {
      const t = sub(key);
      if (!t) return;
      const ms = durationMs(t);
      if (ms > 0) x[field] = ms;
    });
  }
  c.attempt(() => {
    const ttl = sub("lease_ttl") ?? sub("ttl");
    if (!ttl) return;
    const ms = durationMs(ttl);
    if (ms === 0) return; // the default, as every zero time
    if (ms < 1000) fail(ttl, `must be at least 1s (etcd's leases count whole seconds), got ${JSON.stringify(ttl.value)}`);
    x.leaseTtl = Math.ceil(ms / 1000) * 1000;
  });
  if (x.endpoints !== undefined) o.etcd = { ...x, endpoints: x.endpoints };
}

/** Option names whose configuration keys are not their snake_case spelling, or that sit elsewhere in the file. */
const OPTION_KEYS: Record<string, string[]> = {
  systemAccount: ["system_account", "system"],
  noSystemAccount: ["no_system_account", "no_system", "no_sys_acc"],
  httpsPort: ["https_port", "https"],
  httpPort: ["http_port", "monitor_port", "http"],
  httpHost: ["http_host", "http"],
  maxConnections: ["max_connections", "max_conn"],
  maxSubscriptions: ["max_subscriptions", "max_subs"],
  maxPingsOut: ["ping_max", "max_pings_out"],
  operator: ["operator", "operators"],
  noAuthUser: ["no_auth_user"],
  storeDir: ["store_dir", "storedir"],
  jetstreamMaxMemory: ["max_memory_store", "max_mem_store", "max_mem"],
  jetstreamMaxStorage: ["max_file_store", "max_file"],
};

/**
 * The options error `message` ("option accounts.A.users: user x is given twice", "httpsPort needs tls ...") at the
 * place in the configuration file where the option it names was set: what is found wrong only once the file's
 * options are put together still says where. Undefined when the file does not set that option.
 */
export function confErrorForOption(tree: Tree, message: string): ConfError | undefined {
  const m = /^(?:option )?([A-Za-z][A-Za-z0-9_]*(?:\.[^\s.:()[\]]+)*)/.exec(message);
  if (m === null) return undefined;
  const norm = (s: string): string => s.toLowerCase().replace(/_/g, "");
  let block: unknown = tree;
  let pos: ConfPosition | undefined;
  let segments = m[1].split(".");
  // The no_auth_user is a top-level key, an option of authorization.
  if (segments[0] === "authorization" && segments[1] === "noAuthUser") segments = ["noAuthUser"];
  for (const seg of segments) {
    if (!isBlock(block)) break;
    const b: Tree = block;
    const names = OPTION_KEYS[seg] ?? [];
    const key = Object.keys(b).find((k) => k === seg) ?? Object.keys(b).find((k) => names.includes(k.toLowerCase()) || norm(k) === norm(seg));
    if (key === undefined) break;
    pos = keyPosition(b, key) ?? pos;
    block = b[key];
  }
  return pos === undefined ? undefined : new ConfError(message, pos);
}
