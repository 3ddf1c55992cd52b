/**
 * /routez: the node's routes in nats-server's shape (`subs=1` lists each
 * route's interest as "account subject [queue]"). Without routes it answers
 * as nats-server does without a cluster: no routes.
 */

import type { MonitorContext } from "./context.js";

export function routez(ctx: MonitorContext, q: URLSearchParams): unknown {
  const subs = q.get("subs");
  const withSubs = subs === "1" || subs === "true" || subs === "detail";
  const b = ctx.broker;
  return ctx.routes?.routez(withSubs) ?? { server_id: b.serverId, server_name: b.serverName, now: new Date().toISOString(), num_routes: 0, routes: [] };
}
