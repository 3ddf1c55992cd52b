/** `/connz`: live connections, sorted and paged, in nats-server's shape. */

import type { MonitorContext } from "./context.js";

export function connz(ctx: MonitorContext, q: URLSearchParams): Record<string, unknown> {
  const broker = ctx.broker;
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
