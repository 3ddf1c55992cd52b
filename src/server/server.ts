/**
 * Process-level composition: listeners, doors, monitoring, lifecycle. This is
 * the embedding API (`startServer`) and what the `nagare server` command runs.
 */

import { createServer, type Server, type Socket } from "node:net";
import { networkInterfaces } from "node:os";
import { basename, join } from "node:path";
import { readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { createSecureContext, DEFAULT_CIPHERS, type SecureContext, type SecureContextOptions } from "node:tls";
import { ADVERTISED_VERSION, Broker } from "../core/broker.js";
import { authRequired, DEFAULTS, KAFKA_SASL_MECHANISMS, resolveOptions, type KafkaTlsOptions, type ResolvedOptions, type ServerOptions, type TlsOptions } from "../core/options.js";
import { createLogger, type ServerLogger } from "../util/log.js";
import { NatsConnection } from "../protocols/nats/connection.js";
import type { NatsTls } from "../protocols/nats/tls.js";
import { Authenticator, type ClientAuth } from "../core/auth.js";
import { JwtAuthenticator } from "../core/jwt-auth.js";
import { infoLine } from "../protocols/nats/info.js";
import { startMonitor, type Monitor } from "../monitor/http.js";
import { JetStream } from "../streams/jetstream.js";
import { KafkaDoor, KAFKA_DEFAULTS } from "../protocols/kafka/door.js";
import { kafkaRecords } from "../protocols/kafka/stored-batches.js";
import { JetStreamApi } from "../streams/api.js";
import { tmpdir } from "node:os";
import { isDeepStrictEqual } from "node:util";

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
  /** The streams, when JetStream is enabled. */
  readonly jetstream: JetStream | undefined;
  /** Port of the Kafka listener, when enabled. */
  readonly kafkaPort: number | undefined;
  /** The Kafka door, when enabled: its connections and memory budgets. */
  readonly kafka: KafkaDoor | undefined;
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
   * does a file that cannot be used.
   */
  reload(options: ServerOptions): void;
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
  const kafkaTls = opts.kafka?.tls === undefined ? null : loadTls(opts.kafka.tls);
  const auth = opts.operator !== undefined ? new JwtAuthenticator(opts.operator) : authRequired(opts) ? new Authenticator(opts.authorization ?? {}, Object.fromEntries(Object.entries(opts.accounts ?? {}).map(([name, a]) => [name, a.users ?? []]))) : null;
  const broker = new Broker(opts, log);

  let jetstream: JetStream | undefined;
  let jsApi: JetStreamApi | undefined;
  if (opts.jetstream) {
    // nats-server's default store is under the temp directory too.
    const storeDir = opts.storeDir ?? join(tmpdir(), "nagare", "jetstream");
    const sync = opts.syncInterval === "always" ? { sync: "always" as const } : { sync: "interval" as const, syncIntervalMs: opts.syncInterval };
    // Kafka batches stay in the store as produced; NATS readers get their records through this decoder, with or without the Kafka door.
    jetstream = await JetStream.start(broker.globalAccount, { storeDir, maxPayload: opts.maxPayload, log, serverId: broker.serverId, pacing: broker, foreign: kafkaRecords, ...sync });
    jsApi = new JetStreamApi(jetstream);
  }

  const listener: Server = createServer({ noDelay: true }, (socket: Socket) => accept(broker, socket, natsTls, auth));
  listener.maxConnections = opts.maxConnections + 64; // beyond that the OS socket is dropped before we can say why
  try {
    await listen(listener, opts.port, opts.host);
  } catch (err) {
    jsApi?.close();
    await jetstream?.close();
    broker.stop();
    throw err;
  }
  const port = (listener.address() as { port: number }).port;
  broker.clientPort = port;
  const advertisedHost = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  const url = `nats://${advertisedHost}:${port}`;

  let monitor: Monitor | undefined;
  let secureMonitor: Monitor | undefined;
  if (opts.httpPort !== undefined || opts.httpsPort !== undefined) {
    try {
      if (opts.httpPort !== undefined) monitor = await startMonitor(broker, opts.httpHost, opts.httpPort, jetstream);
      // resolveOptions made sure of the certificate: HTTPS without tls never starts.
      if (opts.httpsPort !== undefined) secureMonitor = await startMonitor(broker, opts.httpHost, opts.httpsPort, jetstream, tlsFiles!);
    } catch (err) {
      listener.close();
      await monitor?.close();
      jsApi?.close();
      await jetstream?.close();
      broker.stop();
      throw err;
    }
  }

  let kafka: KafkaDoor | undefined;
  if (opts.kafka !== undefined && jetstream !== undefined) {
    const k = opts.kafka;
    const kafkaPort = k.port ?? KAFKA_DEFAULTS.port;
    try {
      kafka = await KafkaDoor.start(
        broker,
        jetstream,
        {
          host: k.host ?? opts.host,
          port: kafkaPort < 0 ? 0 : kafkaPort,
          advertisedHost: k.advertise,
          autoCreateTopics: k.autoCreateTopics ?? KAFKA_DEFAULTS.autoCreateTopics,
          defaultPartitions: k.numPartitions ?? KAFKA_DEFAULTS.defaultPartitions,
          maxRequestBytes: k.maxRequestBytes ?? KAFKA_DEFAULTS.maxRequestBytes,
          initialRebalanceDelayMs: k.initialRebalanceDelayMs ?? KAFKA_DEFAULTS.initialRebalanceDelayMs,
          fetchMaxBytes: k.fetchMaxBytes ?? KAFKA_DEFAULTS.fetchMaxBytes,
          connectionsMaxIdleMs: k.connectionsMaxIdleMs ?? KAFKA_DEFAULTS.connectionsMaxIdleMs,
          maxDecompressBytes: k.maxDecompressBytes ?? KAFKA_DEFAULTS.maxDecompressBytes,
          maxResponseBytes: k.maxResponseBytes ?? KAFKA_DEFAULTS.maxResponseBytes,
          maxQueuedRequestBytes: k.maxQueuedRequestBytes ?? KAFKA_DEFAULTS.maxQueuedRequestBytes,
          tls: kafkaTls,
          saslMechanisms: k.saslMechanisms ?? KAFKA_SASL_MECHANISMS,
        },
        log,
        kafkaAuth(auth),
      );
    } catch (err) {
      listener.close();
      await monitor?.close();
      await secureMonitor?.close();
      jsApi?.close();
      await jetstream.close();
      broker.stop();
      throw err;
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
  log.info("Server is ready");

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      broker.lameDuck = true;
      const listenerClosed = new Promise<void>((resolve) => listener.close(() => resolve()));
      for (const c of [...broker.connections.values()]) c.close("Server Shutdown");
      await listenerClosed;
      if (monitor) await monitor.close();
      if (secureMonitor) await secureMonitor.close();
      await kafka?.close();
      jsApi?.close();
      await jetstream?.close();
      broker.stop();
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
    broker.lameDuck = true;
    listener.close();
    for (const c of broker.connections.values()) c.notifyLameDuck();
    broker.flushDirty();
    await delay(Math.min(opts.lameDuckGracePeriod, opts.lameDuckDuration));
    // Spread the remaining closes over what is left of the duration, so that
    // reconnecting clients don't stampede the other servers.
    const conns = [...broker.connections.values()];
    const spread = Math.max(0, opts.lameDuckDuration - opts.lameDuckGracePeriod);
    const batches = Math.min(conns.length, 10);
    for (let b = 0; b < batches; b++) {
      for (let i = b; i < conns.length; i += batches) conns[i].close("Server Shutdown");
      if (b < batches - 1 && spread > 0) await delay(spread / batches);
    }
    await close();
  };

  const reload = (options: ServerOptions): void => {
    const next = resolveOptions(options);
    const fixed = notReloadable(opts, next);
    if (fixed !== null) throw new Error(`config reload not supported for ${fixed}`);
    if (next.tls !== undefined && natsTls !== null) {
      const files = readTlsFiles(next.tls);
      // Each connection takes the context when it is accepted: those open keep the one they have.
      natsTls.context = createSecureContext(files);
      secureMonitor?.setSecureContext(files);
      opts.tls = next.tls;
      log.info(`Reloaded: TLS certificate ${next.tls.certFile}`);
    }
    log.info("Reloaded server configuration");
  };

  return { host: opts.host, port, url, httpPort: monitor?.port, httpsPort: secureMonitor?.port, kafkaPort: kafka?.port, kafka, broker, jetstream, close, lameDuck, reload };
}

/** The certificate, key and CA of `tls`, read and checked: what reloads and HTTPS monitoring are served with. */
function readTlsFiles(t: TlsOptions): SecureContextOptions {
  return loadTls(t).files;
}

/** TLS for NATS clients: the context, and when the handshake comes. */
function loadNatsTls(t: TlsOptions): NatsTls {
  const { context, verify, timeoutMs } = loadTls(t);
  return { context, verify, timeoutMs, handshakeFirst: t.handshakeFirst ?? false };
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
  const files: SecureContextOptions = { cert, key, ca, minVersion: t.minVersion ?? "TLSv1.2", ciphers: SERVER_CIPHERS, honorCipherOrder: true };
  let context: SecureContext;
  try {
    context = createSecureContext(files);
  } catch (err) {
    throw new Error(`TLS certificate ${t.certFile} and key ${t.keyFile}: ${(err as Error).message}`);
  }
  return { context, files, verify: t.verify ?? false, timeoutMs: t.timeoutMs ?? DEFAULTS.tlsTimeout };
}

/**
 * The server picks the cipher, as nats-server (Go) does: AES-128-GCM first
 * (Node's default order, which the server would otherwise take from the
 * client, puts AES-256-GCM first: 14 AES rounds per block instead of 10, on
 * every byte both sides send), then Node's own list.
 */
const SERVER_CIPHERS = ["TLS_AES_128_GCM_SHA256", ...DEFAULT_CIPHERS.split(":").filter((c) => c !== "TLS_AES_128_GCM_SHA256")].join(":");

/** TLS options a reload may change: all of them go into the secure context. */
const RELOADABLE_TLS = new Set<keyof TlsOptions>(["certFile", "keyFile", "caFile", "minVersion"]);

/** The first option (by its name in ServerOptions) that differs and a running server cannot change; null if none. */
function notReloadable(now: ResolvedOptions, next: ResolvedOptions): string | null {
  for (const key of Object.keys(now) as Array<keyof ResolvedOptions>) {
    if (key === "tls") continue;
    if (!isDeepStrictEqual(now[key], next[key])) return key;
  }
  if ((now.tls === undefined) !== (next.tls === undefined)) return "tls";
  if (now.tls !== undefined && next.tls !== undefined) {
    const keys = new Set([...Object.keys(now.tls), ...Object.keys(next.tls)] as Array<keyof TlsOptions>);
    for (const k of keys) if (!RELOADABLE_TLS.has(k) && !isDeepStrictEqual(now.tls[k], next.tls[k])) return `tls.${k}`;
  }
  return null;
}

/** The Kafka door's SASL users: the configured ones. Operator mode has none to offer, and never gets this far (checkOptions refuses the pair). */
function kafkaAuth(auth: ClientAuth | null): Authenticator | null {
  if (auth === null || auth instanceof Authenticator) return auth;
  throw new Error("the Kafka listener cannot authenticate operator-mode users");
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
