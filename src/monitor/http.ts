/**
 * The HTTP monitoring listener: routes each path to its endpoint module, in
 * the shape of nats-server's (`/healthz`, `/varz`, `/connz`, `/subsz`, `/routez`,
 * `/jsz`) and Prometheus's (`/metrics`), so
 * existing tooling and test harnesses that poll them keep working.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { SecureContextOptions } from "node:tls";
import type { Broker } from "../core/broker.js";
import type { JetStreams } from "../streams/jetstreams.js";
import type { ClusterView } from "../cluster/node.js";
import { json, type MonitorContext, type Reply, type RoutesMonitor } from "./context.js";
import { connz } from "./connz.js";
import { accountz } from "./accountz.js";
import { healthz } from "./healthz.js";
import { jsz } from "./jsz.js";
import { metrics } from "./metrics.js";
import { QueryError } from "./query.js";
import { subsz } from "./subsz.js";
import { routez } from "./routez.js";
import { gatewayz, leafz } from "./gateways-leafs.js";
import { accstatz } from "./accstatz.js";
import { CpuSampler, varz } from "./varz.js";

export interface Monitor {
  readonly port: number;
  /** Serves over TLS (nats-server's `https_port`). */
  readonly secure: boolean;
  /** New connections get this certificate; those open keep theirs. Only for a secure monitor. */
  setSecureContext(tls: SecureContextOptions): void;
  close(): Promise<void>;
}

type Endpoint = (ctx: MonitorContext, q: URLSearchParams) => Reply | Promise<Reply>;

const ENDPOINTS = new Map<string, Endpoint>([
  ["/healthz", healthz],
  ["/varz", (ctx) => json(varz(ctx))],
  ["/connz", (ctx, q) => json(connz(ctx, q))],
  ["/subsz", (ctx, q) => json(subsz(ctx, q))],
  ["/subscriptionsz", (ctx, q) => json(subsz(ctx, q))],
  ["/accountz", accountz],
  ["/routez", (ctx, q) => json(routez(ctx, q))],
  ["/gatewayz", (ctx, q) => json(gatewayz(ctx, q))],
  ["/leafz", (ctx, q) => json(leafz(ctx, q))],
  ["/accstatz", (ctx, q) => json(accstatz(ctx, q))],
  ["/jsz", async (ctx, q) => json(await jsz(ctx, q))],
  ["/metrics", (ctx) => metrics(ctx)],
]);

/**
 * What the network can hold on the monitor port. nats-server bounds only the
 * wait for a request's headers (ReadHeaderTimeout 5 s, headers up to 1 MiB);
 * Node's defaults take any number of connections and close one that never
 * sends a request only after 60 to 90 s, so a flood of idle sockets grew
 * without bound. Its users are a few scrapers (Prometheus keeps one
 * connection per target), dashboards (a browser opens up to six) and curl:
 * none of them comes near these.
 */
export const MONITOR_LIMITS = {
  /** Connections at once; past it a new one is closed at once (Node's maxConnections). Descriptors stay for clients and the store. */
  maxConnections: 256,
  /** The request line and headers must arrive within this of the connection's start, or of the request's: nats-server's ReadHeaderTimeout. */
  headersTimeoutMs: 5000,
  /** The whole request (a monitor GET has no body). */
  requestTimeoutMs: 10_000,
  /** How long an idle keep-alive connection waits for its next request (Node's and Go's usual 5 s). */
  keepAliveTimeoutMs: 5000,
  /**
   * A connection that neither reads nor writes this long is closed: a client
   * that never reads its answer holds it (and the answer's memory) no longer.
   * Far past any answer's making, which writes nothing until it is whole.
   */
  idleTimeoutMs: 60_000,
  /** How often Node looks for requests past their headers or request timeout (its default, 30 s, would let one linger 35 s). */
  checkIntervalMs: 1000,
};

/**
 * Listens on `host:port`; with `tls`, over HTTPS with that certificate. As
 * in nats-server, monitoring asks no client certificate even where client
 * connections must show one.
 */
export async function startMonitor(broker: Broker, host: string, port: number, jetstreams?: JetStreams, tls?: SecureContextOptions, cluster?: () => ClusterView | undefined, routes?: RoutesMonitor): Promise<Monitor> {
  const ctx: MonitorContext = { broker, jetstreams, cpu: new CpuSampler(), cluster, routes };
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => void handle(ctx, req, res);
  const limits = {
    headersTimeout: MONITOR_LIMITS.headersTimeoutMs,
    requestTimeout: MONITOR_LIMITS.requestTimeoutMs,
    keepAliveTimeout: MONITOR_LIMITS.keepAliveTimeoutMs,
    connectionsCheckingInterval: MONITOR_LIMITS.checkIntervalMs,
  };
  // The TLS handshake within the headers' time, as Go bounds it by ReadHeaderTimeout (Node's default: 120 s).
  const secure = tls === undefined ? null : createHttpsServer({ ...tls, requestCert: false, handshakeTimeout: MONITOR_LIMITS.headersTimeoutMs, ...limits }, onRequest);
  const server = secure ?? createServer(limits, onRequest);
  server.maxConnections = MONITOR_LIMITS.maxConnections;
  server.timeout = MONITOR_LIMITS.idleTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const actual = (server.address() as { port: number }).port;
  return {
    port: actual,
    secure: secure !== null,
    setSecureContext: (t) => {
      if (secure === null) throw new Error("the monitor does not serve HTTPS");
      secure.setSecureContext(t);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(ctx: MonitorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let reply: Reply;
  try {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const endpoint = ENDPOINTS.get(path);
    if (path === "/") reply = json({ endpoints: [...ENDPOINTS.keys()].filter((p) => p !== "/subscriptionsz") });
    else if (endpoint === undefined) reply = json({ error: "not found" }, 404);
    else reply = await endpoint(ctx, url.searchParams);
  } catch (err) {
    // A parameter that does not parse gets nats-server's 400 and its text.
    if (err instanceof QueryError) reply = { status: 400, text: err.message, contentType: "text/plain; charset=utf-8" };
    else reply = json({ error: String(err) }, 500);
  }
  send(res, reply);
}

function send(res: ServerResponse, reply: Reply): void {
  const [body, contentType] = "json" in reply ? [JSON.stringify(reply.json, null, reply.compact ? 0 : 2), "application/json"] : [reply.text, reply.contentType];
  if (res.destroyed) return; // the client went away while an answer was being gathered
  res.writeHead(reply.status, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
  res.end(body);
}
