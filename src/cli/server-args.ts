/**
 * Command-line flags of `nagare server`, following nats-server's: Go-style
 * flags, so `-port` and `--port` are the same flag, values may follow as the
 * next argument or after `=`, and boolean flags take an optional `=false`.
 */

import { DEFAULTS, type ServerOptions } from "../core/options.js";

export interface ServerArgs {
  options: ServerOptions;
  configFile?: string;
  /** `-P/--pid <file>`: where to write the process id. */
  pidFile?: string;
  help?: boolean;
  version?: boolean;
  /** `-sl/--signal <signal>[=<pid or pid file>]`: signal a running server instead of starting one. */
  signal?: string;
  /** `-t`: check the configuration (file and flags) and exit. */
  testConfig?: boolean;
  /** Options a flag turned off (`-m 0`: no monitoring), over the configuration file's. */
  off?: Set<"httpPort" | "httpsPort">;
}

type Apply = (r: ServerArgs, v: string, flag: string) => void;
type BoolApply = (r: ServerArgs, v: boolean) => void;

interface ValueFlag {
  kind: "value";
  apply: Apply;
}
interface BoolFlag {
  kind: "bool";
  apply: BoolApply;
}

const FLAGS = new Map<string, ValueFlag | BoolFlag>();

function value(names: string[], apply: Apply): void {
  for (const n of names) FLAGS.set(n, { kind: "value", apply });
}
function bool(names: string[], apply: BoolApply): void {
  for (const n of names) FLAGS.set(n, { kind: "bool", apply });
}

value(["a", "addr", "net"], (r, v, f) => {
  if (v === "") throw new Error(`flag ${f} needs a host address`);
  r.options.host = v;
});
// As nats-server's flags: 0 is the default (4222 for clients, no monitoring listener); -1 a random port.
value(["p", "port"], (r, v, f) => (r.options.port = parsePort(v, f) || DEFAULTS.port));
value(["n", "name", "server_name"], (r, v) => (r.options.serverName = v));
value(["P", "pid"], (r, v, f) => (r.pidFile = nonEmpty(v, f, "a file name")));
value(["m", "http_port"], (r, v, f) => monitorPort(r, "httpPort", parsePort(v, f)));
value(["ms", "https_port"], (r, v, f) => monitorPort(r, "httpsPort", parsePort(v, f)));

function monitorPort(r: ServerArgs, key: "httpPort" | "httpsPort", port: number): void {
  r.options[key] = port === 0 ? undefined : port;
  if (port === 0) (r.off ??= new Set()).add(key);
  else r.off?.delete(key);
}
value(["c", "config"], (r, v, f) => (r.configFile = nonEmpty(v, f, "a file name")));
value(["sl", "signal"], (r, v) => (r.signal = v));
value(["ports_file_dir"], (r, v, f) => (r.options.portsFileDir = nonEmpty(v, f, "a directory")));
value(["l", "log"], (r, v, f) => (r.options.logFile = nonEmpty(v, f, "a file name")));
value(["sd", "store_dir"], (r, v, f) => (r.options.storeDir = nonEmpty(v, f, "a directory")));
bool(["js", "jetstream"], (r, v) => (r.options.jetstream = v));
bool(["kafka"], (r, v) => (r.options.kafka = v ? { ...r.options.kafka } : undefined));
value(["kafka_port"], (r, v, f) => (r.options.kafka = { ...r.options.kafka, port: parsePort(v, f) }));
bool(["D", "debug"], (r, v) => (r.options.debug = v));
bool(["V", "trace", "VV"], (r, v) => (r.options.trace = v));
bool(["DV", "DVV"], (r, v) => {
  r.options.debug = v;
  r.options.trace = v;
});
bool(["h", "help"], (r, v) => (r.help = v));
bool(["v", "version"], (r, v) => (r.version = v));
bool(["t"], (r, v) => (r.testConfig = v));
bool(["T", "logtime"], (r, v) => (r.options.logtime = v));
/** Any TLS flag asks for TLS: one that is incomplete stops the start (the options check wants a certificate and key), never a plain listener. */
function tlsFlag(r: ServerArgs, set: Partial<NonNullable<ServerOptions["tls"]>>): void {
  r.options.tls = { ...(r.options.tls as NonNullable<ServerOptions["tls"]>), ...set };
}
bool(["tls"], (r, v) => {
  if (v) tlsFlag(r, {});
  else r.options.tls = undefined;
});
bool(["tlsverify"], (r, v) => tlsFlag(r, { verify: v }));
value(["tlscert"], (r, v, f) => tlsFlag(r, { certFile: nonEmpty(v, f, "a certificate file") }));
value(["tlskey"], (r, v, f) => tlsFlag(r, { keyFile: nonEmpty(v, f, "a key file") }));
value(["tlscacert"], (r, v, f) => tlsFlag(r, { caFile: nonEmpty(v, f, "a CA certificate file") }));
/** `--auth <token>`, or `--user` and `--pass`: one credential for every client, as nats-server's flags. */
value(["auth"], (r, v, f) => {
  // Both kinds at once is no credential nagare can honour (nats-server takes the token and ignores the user): refused.
  if (r.options.authorization?.users !== undefined) throw new Error("--auth cannot be used with --user/--pass");
  r.options.authorization = { token: nonEmpty(v, f, "a token") };
});
function flagUser(r: ServerArgs, set: { user?: string; password?: string }): void {
  if (r.options.authorization?.token !== undefined) throw new Error("--user/--pass cannot be used with --auth");
  const prev = r.options.authorization?.users?.[0] ?? {};
  r.options.authorization = { users: [{ ...prev, ...set }] };
}
value(["user"], (r, v, f) => flagUser(r, { user: nonEmpty(v, f, "a user name") }));
value(["pass"], (r, v, f) => flagUser(r, { password: nonEmpty(v, f, "a password") }));
value(["max_traced_msg_len"], (r, v, f) => {
  if (!/^\d+$/.test(v) || Number(v) > 2 ** 31 - 1) throw new Error(`flag ${f}: expected a length in bytes (0 for no limit), got ${JSON.stringify(v)}`);
  r.options.maxTracedMsgLen = Number(v);
});

/** `--cluster_name`, `--cluster nats://host:port` and `--routes` as nats-server's. */
value(["cluster_name"], (r, v, f) => (r.options.cluster = { ...r.options.cluster, name: nonEmpty(v, f, "a cluster name") }));
value(["cluster", "cluster_listen"], (r, v, f) => {
  const m = /^(?:nats|nats-route):\/\/(?:\[([^\]]*)\]|([^:/]*)):(-?\d+)$/.exec(v);
  if (m === null) throw new Error(`flag ${f}: expected nats://host:port, got ${JSON.stringify(v)}`);
  const host = m[1] ?? m[2];
  r.options.cluster = { ...r.options.cluster, ...(host !== "" ? { host } : {}), port: parsePort(m[3], f) };
});
value(["routes"], (r, v, f) => (r.options.cluster = { ...r.options.cluster, routes: nonEmpty(v, f, "route URLs").split(",").map((x) => x.trim()) }));
/** `--etcd http://host:port[,...]`: the etcd endpoints (nagare's own flag); the rest of `etcd {}` comes from the file. */
value(["etcd"], (r, v, f) => (r.options.etcd = { ...r.options.etcd, endpoints: nonEmpty(v, f, "etcd URLs").split(",").map((x) => x.trim()) }));

/** nats-server flags for features nagare does not have yet, with the reason. */
const UNSUPPORTED: Record<string, string> = {
  help_tls: "TLS is not supported yet",
  cluster_advertise: "advertising a route address is not supported yet",
  no_advertise: "not advertising client URLs to the cluster is not supported yet",
  connect_retries: "configured routes are dialled until connected; a retry limit is not supported yet",
  client_advertise: "advertising client URLs to other nodes is not supported yet",
  s: "syslog is not supported",
  syslog: "syslog is not supported",
  r: "syslog is not supported",
  remote_syslog: "syslog is not supported",
  log_size_limit: "log file rotation is not supported yet",
  profile: "profiling is not supported",
};

export function parseServerArgs(argv: string[]): ServerArgs {
  const r: ServerArgs = { options: {} };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      if (i + 1 < argv.length) throw new Error(`unexpected argument: ${argv[i + 1]}`);
      break;
    }
    if (!arg.startsWith("-") || arg === "-") throw new Error(`unexpected argument: ${arg}`);
    const body = arg.startsWith("--") ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf("=");
    const name = eq < 0 ? body : body.slice(0, eq);
    const flag = arg.slice(0, arg.length - body.length) + name;
    const spec = FLAGS.get(name);
    if (!spec) {
      const why = UNSUPPORTED[name];
      if (why) throw new Error(`flag ${flag}: ${why}`);
      throw new Error(`unknown flag: ${flag}`);
    }
    if (spec.kind === "bool") {
      spec.apply(r, eq < 0 ? true : parseBool(body.slice(eq + 1), flag));
      continue;
    }
    let v: string;
    if (eq >= 0) v = body.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new Error(`flag ${flag} needs a value`);
      v = argv[++i];
    }
    spec.apply(r, v, flag);
  }
  return r;
}

/**
 * Flags win over the configuration file, as in nats-server: every option the
 * command line set replaces the file's.
 */
export function mergeOptions(fromConf: ServerOptions, fromFlags: ServerOptions, off?: ReadonlySet<"httpPort" | "httpsPort">): ServerOptions {
  const out: ServerOptions = { ...fromConf };
  for (const [k, v] of Object.entries(fromFlags)) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  for (const k of off ?? []) delete out[k];
  // A flag replaces one key of these blocks, not the whole block: `--etcd` keeps the file's etcd TLS and prefix.
  if (fromConf.cluster !== undefined && fromFlags.cluster !== undefined) out.cluster = { ...fromConf.cluster, ...fromFlags.cluster };
  if (fromConf.etcd !== undefined && fromFlags.etcd !== undefined) out.etcd = { ...fromConf.etcd, ...fromFlags.etcd };
  return out;
}

function nonEmpty(v: string, flag: string, what: string): string {
  if (v === "") throw new Error(`flag ${flag} needs ${what}`);
  return v;
}

function parsePort(v: string, flag: string): number {
  if (!/^-?\d+$/.test(v)) throw new Error(`flag ${flag}: invalid port ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < -1 || n > 65535) throw new Error(`flag ${flag}: port ${n} is out of range (0-65535, or -1 for a random port)`);
  return n;
}

/** Go's strconv.ParseBool. */
function parseBool(v: string, flag: string): boolean {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(v)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(v)) return false;
  throw new Error(`flag ${flag}: invalid boolean ${JSON.stringify(v)}`);
}
