/**
 * Maps a parsed nats-server configuration tree (see conf-parser.ts) onto
 * ServerOptions. Top-level keys are matched case-insensitively, as nats-server
 * does. Keys nagare does not implement are left alone and listed by
 * `unsupportedKeys` so the caller can warn about them.
 *
 * As in nats-server, a zero for a limit or a time means "use the default".
 */

import { ConfError, keyPosition, usedAsVariable, type ConfPosition } from "./conf-parser.js";
import type { ServerOptions } from "./options.js";

type Tree = Record<string, unknown>;

/** Keys read by optionsFromConf (lower case). */
const MAPPED = new Set([
  "listen",
  "host",
  "net",
  "port",
  "http",
  "http_port",
  "monitor_port",
  "http_host",
  "server_name",
  "max_payload",
  "max_pending",
  "max_control_line",
  "max_connections",
  "max_conn",
  "max_subscriptions",
  "max_subs",
  "ping_interval",
  "ping_max",
  "max_pings_out",
  "auth_timeout",
  "write_deadline",
  "lame_duck_duration",
  "lame_duck_grace_period",
  "ports_file_dir",
  "jetstream",
  "kafka",
  "store_dir",
  "storedir",
  "debug",
  "trace",
  "trace_verbose",
  "log_file",
  "logfile",
]);

/** Keys understood but with nothing to do: cosmetic, or handled by the CLI (pid_file). */
const ACCEPTED = new Set(["logtime", "logtime_utc", "pid_file"]);

/**
 * Top-level keys (as spelled in the file) that nagare does not implement, such
 * as authorization, tls, cluster, websocket, leafnodes or accounts. Keys that
 * only serve as `$variables` are not listed, as nats-server doesn't flag them.
 */
export function unsupportedKeys(tree: Tree): string[] {
  const out: string[] = [];
  for (const key of Object.keys(tree)) {
    const k = key.toLowerCase();
    if (MAPPED.has(k) || ACCEPTED.has(k)) continue;
    if (usedAsVariable(tree, key)) continue;
    out.push(key);
  }
  return out;
}

/** `pid_file` from the config: the CLI writes it, so it is not a ServerOptions field. */
export function pidFileFromConf(tree: Tree): string | undefined {
  const e = lookup(tree, "pid_file");
  return e ? str(e) : undefined;
}

export function optionsFromConf(tree: Tree): ServerOptions {
  const o: ServerOptions = {};

  // `listen` first so that explicit `host`/`port` win over it.
  const listen = lookup(tree, "listen");
  if (listen) {
    const hp = hostPort(listen);
    if (hp.host !== undefined) o.host = hp.host;
    o.port = hp.port;
  }
  for (const k of ["host", "net"]) {
    const e = lookup(tree, k);
    if (e) o.host = nonEmptyStr(e);
  }
  const port = lookup(tree, "port");
  if (port) o.port = portNumber(port);

  const http = lookup(tree, "http");
  if (http) {
    const hp = hostPort(http);
    if (hp.host !== undefined) o.httpHost = hp.host;
    o.httpPort = hp.port;
  }
  for (const k of ["http_port", "monitor_port"]) {
    const e = lookup(tree, k);
    if (e) o.httpPort = portNumber(e);
  }
  const httpHost = lookup(tree, "http_host");
  if (httpHost) o.httpHost = nonEmptyStr(httpHost);

  const serverName = lookup(tree, "server_name");
  if (serverName) o.serverName = str(serverName);

  setLimit(o, "maxPayload", lookup(tree, "max_payload"), INT32_MAX);
  setLimit(o, "maxPending", lookup(tree, "max_pending"));
  setLimit(o, "maxControlLine", lookup(tree, "max_control_line"), INT32_MAX);
  setLimit(o, "maxConnections", lookup(tree, "max_connections") ?? lookup(tree, "max_conn"));
  const maxSubs = lookup(tree, "max_subscriptions") ?? lookup(tree, "max_subs");
  if (maxSubs) o.maxSubscriptions = nonNegativeInt(maxSubs); // 0 is "unlimited", the default
  setLimit(o, "maxPingsOut", lookup(tree, "ping_max") ?? lookup(tree, "max_pings_out"));

  setTime(o, "pingInterval", lookup(tree, "ping_interval"));
  setTime(o, "authTimeout", lookup(tree, "auth_timeout"));
  setTime(o, "writeDeadline", lookup(tree, "write_deadline"));
  setTime(o, "lameDuckDuration", lookup(tree, "lame_duck_duration"));
  setTime(o, "lameDuckGracePeriod", lookup(tree, "lame_duck_grace_period"));

  const portsFileDir = lookup(tree, "ports_file_dir");
  if (portsFileDir) o.portsFileDir = nonEmptyStr(portsFileDir);

  const storeDir = lookup(tree, "store_dir") ?? lookup(tree, "storedir");
  if (storeDir) o.storeDir = nonEmptyStr(storeDir);
  const js = lookup(tree, "jetstream");
  if (js) jetstream(o, js);
  const kafkaBlock = lookup(tree, "kafka");
  if (kafkaBlock) kafka(o, kafkaBlock);

  const debug = lookup(tree, "debug");
  if (debug) o.debug = bool(debug);
  const trace = lookup(tree, "trace");
  if (trace) o.trace = bool(trace);
  const traceVerbose = lookup(tree, "trace_verbose");
  if (traceVerbose && bool(traceVerbose)) o.trace = true;

  const logFile = lookup(tree, "log_file") ?? lookup(tree, "logfile");
  if (logFile) o.logFile = nonEmptyStr(logFile);

  return o;
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
function lookup(tree: Tree, name: string): Entry | undefined {
  let found: Entry | undefined;
  let foundVariable: Entry | undefined;
  for (const key of Object.keys(tree)) {
    if (key.toLowerCase() !== name) continue;
    const e = { key, value: tree[key], pos: keyPosition(tree, key) };
    if (usedAsVariable(tree, key)) foundVariable = e;
    else found = e;
  }
  return found ?? foundVariable;
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

type LimitKey = "maxPayload" | "maxPending" | "maxControlLine" | "maxConnections" | "maxPingsOut";

function setLimit(o: ServerOptions, field: LimitKey, e: Entry | undefined, max?: number): void {
  if (!e) return;
  const n = nonNegativeInt(e, max);
  if (n > 0) o[field] = n;
}

type TimeKey = "pingInterval" | "authTimeout" | "writeDeadline" | "lameDuckDuration" | "lameDuckGracePeriod";

function setTime(o: ServerOptions, field: TimeKey, e: Entry | undefined): void {
  if (!e) return;
  let ms: number;
  try {
    ms = parseDuration(e.value);
  } catch (err) {
    fail(e, (err as Error).message);
  }
  if (ms < 0) fail(e, `must not be negative (got ${JSON.stringify(e.value)})`);
  ms = Math.round(ms);
  if (ms > 0) o[field] = ms;
}

/**
 * `kafka { port, host, advertise, auto_create_topics, num_partitions, max_request_bytes, group_initial_rebalance_delay,
 * fetch_max_bytes, connections_max_idle, max_decompress_bytes, max_response_bytes }`, or `kafka: true`.
 */
function kafka(o: ServerOptions, e: Entry): void {
  if (typeof e.value === "boolean" || typeof e.value === "string") {
    o.kafka = bool(e) ? {} : undefined;
    return;
  }
  if (e.value === null || typeof e.value !== "object" || Array.isArray(e.value)) fail(e, `expected a block or a boolean, got ${describe(e.value)}`);
  const block = e.value as Tree;
  const k: NonNullable<ServerOptions["kafka"]> = {};
  const sub = (name: string): Entry | undefined => {
    const x = lookup(block, name);
    return x ? { ...x, key: `${e.key}.${x.key}` } : undefined;
  };
  const port = sub("port") ?? sub("listen_port");
  if (port) k.port = portNumber(port);
  const host = sub("host");
  if (host) k.host = nonEmptyStr(host);
  const advertise = sub("advertise");
  if (advertise) k.advertise = nonEmptyStr(advertise);
  const auto = sub("auto_create_topics");
  if (auto) k.autoCreateTopics = bool(auto);
  const partitions = sub("num_partitions");
  if (partitions) {
    k.numPartitions = nonNegativeInt(partitions, 1024);
    if (k.numPartitions === 0) fail(partitions, "must be at least 1");
  }
  const delay = sub("group_initial_rebalance_delay");
  if (delay) {
    let ms: number;
    try {
      ms = parseDuration(delay.value);
    } catch (err) {
      fail(delay, (err as Error).message);
    }
    if (ms < 0) fail(delay, "must not be negative");
    k.initialRebalanceDelayMs = Math.round(ms);
  }
  const maxReq = sub("max_request_bytes");
  if (maxReq) k.maxRequestBytes = nonNegativeInt(maxReq, 1024 * 1024 * 1024);
  const fetchMax = sub("fetch_max_bytes");
  if (fetchMax) k.fetchMaxBytes = nonNegativeInt(fetchMax, INT32_MAX) || undefined;
  const maxDecompress = sub("max_decompress_bytes");
  if (maxDecompress) k.maxDecompressBytes = nonNegativeInt(maxDecompress) || undefined;
  const maxResponse = sub("max_response_bytes");
  if (maxResponse) k.maxResponseBytes = nonNegativeInt(maxResponse) || undefined;
  const idle = sub("connections_max_idle");
  if (idle) {
    let ms: number;
    try {
      ms = parseDuration(idle.value);
    } catch (err) {
      fail(idle, (err as Error).message);
    }
    if (ms < 0) fail(idle, "must not be negative");
    k.connectionsMaxIdleMs = Math.round(ms); // 0: never
  }
  let enabled = true;
  const en = sub("enabled") ?? sub("enable");
  if (en) enabled = bool(en);
  o.kafka = enabled ? k : undefined;
}

function jetstream(o: ServerOptions, e: Entry): void {
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
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const block = v as Tree;
    let enabled = true;
    const en = lookup(block, "enabled") ?? lookup(block, "enable");
    if (en) enabled = bool({ ...en, key: `${e.key}.${en.key}` });
    o.jetstream = enabled;
    const dir = lookup(block, "store_dir") ?? lookup(block, "storedir");
    if (dir) o.storeDir = nonEmptyStr({ ...dir, key: `${e.key}.${dir.key}` });
    const sync = lookup(block, "sync_interval") ?? lookup(block, "sync");
    if (sync) {
      if (typeof sync.value === "string" && sync.value.toLowerCase() === "always") o.syncInterval = "always";
      else {
        let ms: number;
        try {
          ms = parseDuration(sync.value);
        } catch (err) {
          fail({ ...sync, key: `${e.key}.${sync.key}` }, (err as Error).message);
        }
        if (ms <= 0) fail({ ...sync, key: `${e.key}.${sync.key}` }, `must be "always" or a positive duration`);
        o.syncInterval = Math.max(1, Math.round(ms));
      }
    }
    return;
  }
  fail(e, `expected true, false, enabled, disabled or a block, got ${describe(v)}`);
}
