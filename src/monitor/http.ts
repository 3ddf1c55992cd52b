/**
 * HTTP monitoring endpoints in the shape of nats-server's (`/healthz`,
 * `/varz`, `/connz`, `/subsz`), so existing tooling and test harnesses that
 * poll them keep working.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { cpus } from "node:os";
import type { Broker } from "../server/broker.js";
import { ADVERTISED_VERSION } from "../server/broker.js";
import { formatDuration } from "../server/duration.js";
import { subjectMatches } from "../subjects/subject.js";

export interface Monitor {
  readonly port: number;
  close(): Promise<void>;
}

const MS_TO_NS = 1_000_000;

export async function startMonitor(broker: Broker, host: string, port: number): Promise<Monitor> {
  const cpu = new CpuSampler();
  const server = createServer((req, res) => {
    try {
      handle(broker, cpu, req, res);
    } catch (err) {
      send(res, 500, { error: String(err) });
    }
  });
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function handle(broker: Broker, cpu: CpuSampler, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://localhost");
  const q = url.searchParams;
  switch (url.pathname.replace(/\/+$/, "") || "/") {
    case "/":
      send(res, 200, { endpoints: ["/healthz", "/varz", "/connz", "/subsz"] });
      return;
    case "/healthz":
      send(res, 200, { status: "ok" });
      return;
    case "/varz":
      send(res, 200, varz(broker, cpu));
      return;
    case "/connz":
      send(res, 200, connz(broker, q));
      return;
    case "/subsz":
    case "/subscriptionsz":
      send(res, 200, subsz(broker, q));
      return;
    default:
      send(res, 404, { error: "not found" });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

export function varz(broker: Broker, cpu: CpuSampler): Record<string, unknown> {
  const o = broker.options;
  const now = new Date();
  const s = broker.stats;
  let subscriptions = 0;
  for (const a of broker.accounts.values()) subscriptions += a.sublist.size;
  return {
    server_id: broker.serverId,
    server_name: broker.serverName,
    version: ADVERTISED_VERSION,
    proto: 1,
    go: "nagare",
    node: process.version,
    host: o.host,
    port: broker.clientPort,
    max_connections: o.maxConnections,
    max_subscriptions: o.maxSubscriptions,
    ping_interval: o.pingInterval * MS_TO_NS,
    ping_max: o.maxPingsOut,
    http_host: o.httpHost,
    http_port: o.httpPort,
    auth_timeout: o.authTimeout / 1000,
    max_control_line: o.maxControlLine,
    max_payload: o.maxPayload,
    max_pending: o.maxPending,
    write_deadline: o.writeDeadline * MS_TO_NS,
    lame_duck_duration: o.lameDuckDuration * MS_TO_NS,
    lame_duck_grace_period: o.lameDuckGracePeriod * MS_TO_NS,
    lame_duck_mode: broker.lameDuck,
    jetstream: {},
    start: broker.startedAt.toISOString(),
    now: now.toISOString(),
    uptime: formatDuration(now.getTime() - broker.startedAt.getTime()),
    mem: process.memoryUsage.rss(),
    cores: cpus().length,
    cpu: cpu.percent(),
    connections: broker.connections.size,
    total_connections: s.totalConnections,
    routes: 0,
    remotes: 0,
    leafnodes: 0,
    in_msgs: s.inMsgs,
    out_msgs: s.outMsgs,
    in_bytes: s.inBytes,
    out_bytes: s.outBytes,
    slow_consumers: s.slowConsumers,
    stale_connections: s.staleConnections,
    subscriptions,
  };
}

function connz(broker: Broker, q: URLSearchParams): Record<string, unknown> {
  const now = Date.now();
  const withSubs = q.get("subs") === "1" || q.get("subs") === "true" || q.get("subs") === "detail";
  const offset = Math.max(0, Number(q.get("offset") ?? 0) || 0);
  const limit = Math.max(1, Math.min(10_000, Number(q.get("limit") ?? 1024) || 1024));
  const sortKey = q.get("sort") ?? "cid";
  const all = [...broker.connections.values()].map((c) => c.info(now, withSubs));
  const sorters: Record<string, (a: (typeof all)[0], b: (typeof all)[0]) => number> = {
    cid: (a, b) => a.cid - b.cid,
    subs: (a, b) => b.subscriptions - a.subscriptions,
    pending: (a, b) => b.pending_bytes - a.pending_bytes,
    msgs_to: (a, b) => b.out_msgs - a.out_msgs,
    msgs_from: (a, b) => b.in_msgs - a.in_msgs,
    bytes_to: (a, b) => b.out_bytes - a.out_bytes,
    bytes_from: (a, b) => b.in_bytes - a.in_bytes,
  };
  all.sort(sorters[sortKey] ?? sorters.cid);
  const page = all.slice(offset, offset + limit);
  return {
    server_id: broker.serverId,
    now: new Date(now).toISOString(),
    num_connections: page.length,
    total: all.length,
    offset,
    limit,
    connections: page,
  };
}

function subsz(broker: Broker, q: URLSearchParams): Record<string, unknown> {
  const account = broker.globalAccount;
  const stats = account.sublist.stats();
  const out: Record<string, unknown> = { server_id: broker.serverId, now: new Date().toISOString(), ...stats };
  if (q.get("subs") === "1" || q.get("subs") === "true") {
    const offset = Math.max(0, Number(q.get("offset") ?? 0) || 0);
    const limit = Math.max(1, Math.min(10_000, Number(q.get("limit") ?? 1024) || 1024));
    const filter = q.get("test");
    const list: Array<Record<string, unknown>> = [];
    let i = 0;
    for (const sub of account.sublist.all()) {
      if (filter !== null && !subjectMatches(sub.subject, filter)) continue;
      if (i++ < offset) continue;
      if (list.length >= limit) break;
      list.push({ account: account.name, subject: sub.subject, ...(sub.queue !== null ? { qgroup: sub.queue } : {}), msgs: sub.delivered, max: sub.max });
    }
    out.total = account.sublist.size;
    out.offset = offset;
    out.limit = limit;
    out.subscriptions_list = list;
  }
  return out;
}

/** CPU use of this process since the previous sample, in percent of one core. */
export class CpuSampler {
  private last = process.cpuUsage();
  private lastAt = process.hrtime.bigint();
  percent(): number {
    const now = process.hrtime.bigint();
    const usage = process.cpuUsage();
    const elapsedUs = Number(now - this.lastAt) / 1000;
    const usedUs = usage.user - this.last.user + usage.system - this.last.system;
    this.last = usage;
    this.lastAt = now;
    return elapsedUs <= 0 ? 0 : Math.round((usedUs / elapsedUs) * 1000) / 10;
  }
}
