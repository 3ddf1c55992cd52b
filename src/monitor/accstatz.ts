/**
 * Accounts' message counts in nats-server's shape (AccountStat): `/accstatz`
 * over HTTP and `$SYS.REQ.ACCOUNT.*.STATZ` (sys-requests.ts) answer with it.
 */

import type { Account } from "../core/account.js";
import type { MonitorContext } from "./context.js";
import { boolParam } from "./query.js";

export interface AccountStat {
  acc: string;
  conns: number;
  leafnodes: number;
  total_conns: number;
  sent: { msgs: number; bytes: number };
  received: { msgs: number; bytes: number };
  slow_consumers: number;
}

/** Connections per account name, in one pass over the connections. */
export function connectionsByAccount(ctx: MonitorContext): Map<string, number> {
  const now = Date.now();
  const counts = new Map<string, number>();
  for (const c of ctx.broker.connections.values()) {
    const name = c.info(now, false).account ?? "$G";
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

/** nats-server's AccountStat. `sent` is what the account's subscribers were sent, `received` what was published in it. */
export function accountStat(ctx: MonitorContext, account: Account, counts = connectionsByAccount(ctx)): AccountStat {
  const conns = counts.get(account.name) ?? 0;
  return {
    acc: account.name,
    conns,
    leafnodes: 0,
    total_conns: conns,
    sent: { msgs: account.outMsgs, bytes: account.outBytes },
    received: { msgs: account.inMsgs, bytes: account.inBytes },
    slow_consumers: 0,
  };
}

/** `/accstatz`: the accounts with connections, every account with `unused=1` (nats-server 2.9's options). */
export function accstatz(ctx: MonitorContext, q: URLSearchParams): unknown {
  const unused = boolParam(q, "unused");
  const stats: AccountStat[] = [];
  const counts = connectionsByAccount(ctx);
  for (const account of ctx.broker.accounts.values()) {
    const stat = accountStat(ctx, account, counts);
    if (stat.conns > 0 || unused) stats.push(stat);
  }
  return { server_id: ctx.broker.serverId, now: new Date().toISOString(), account_statz: stats };
}
