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
 * Listens on `host:port`; with `tls`, over HTTPS with that certificate. As
 * in nats-server, monitoring asks no client certificate even where client
 * connections must show one.
 */
export async function startMonitor(broker: Broker, host: string, port: number, jetstreams?: JetStreams, tls?: SecureContextOptions, cluster?: () => ClusterView | undefined, routes?: RoutesMonitor): Promise<Monitor> {
  const ctx: MonitorContext = { broker, jetstreams, cpu: new CpuSampler(), cluster, routes };
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => void handle(ctx, req, res);
  const secure = tls === undefined ? null : createHttpsServer({ ...tls, requestCert: false }, onRequest);
  const server = secure ?? createServer(onRequest);
  server.keepAliveTimeout = 5000;
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
