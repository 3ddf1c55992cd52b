/**
 * `/accountz`: the accounts, as nats-server lists them; with `?acc=<name>`,
 * one account's detail: its connections and subscriptions.
 */

import type { MonitorContext, Reply } from "./context.js";
import { json } from "./context.js";

export function accountz(ctx: MonitorContext, q: URLSearchParams): Reply {
  const broker = ctx.broker;
  const base = { server_id: broker.serverId, now: new Date().toISOString(), system_account: "" };
  const name = q.get("acc");
  if (name === null || name === "") return json({ ...base, accounts: [...broker.accounts.keys()] });
  const account = broker.accounts.get(name);
  if (account === undefined) return json({ error: { code: 400, description: `Account ${name} does not exist` } }, 400);
  const now = Date.now();
  let connections = 0;
  for (const c of broker.connections.values()) {
    const of = c.info(now, false).account ?? "$G";
    if (of === name) connections++;
  }
  return json({
    ...base,
    account_detail: {
      account_name: account.name,
      update_time: base.now,
      is_system: false,
      expired: false,
      complete: true,
      jetstream_enabled: ctx.jetstreams?.get(account.name) !== undefined,
      leafnode_connections: 0,
      client_connections: connections,
      subscriptions: account.sublist.size,
    },
  });
}
