/**
 * `/gatewayz` and `/leafz` as nats-server answers them on a server without
 * gateways or leaf nodes, which nagare does not build: monitoring that polls
 * every endpoint (prometheus-nats-exporter, nats-surveyor) gets what it
 * parses rather than a 404. Their options are read, and a bad one is a 400.
 */

import type { MonitorContext } from "./context.js";
import { boolParam } from "./query.js";

export function gatewayz(ctx: MonitorContext, q: URLSearchParams): unknown {
  boolParam(q, "accs");
  return { server_id: ctx.broker.serverId, now: new Date().toISOString(), outbound_gateways: {}, inbound_gateways: {} };
}

export function leafz(ctx: MonitorContext, q: URLSearchParams): unknown {
  boolParam(q, "subs");
  return { server_id: ctx.broker.serverId, now: new Date().toISOString(), leafnodes: 0, leafs: null };
}
