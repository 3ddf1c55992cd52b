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

/** nats-server's AccountStat. `sent` is what the account's subscribers were sent, `received` what was published in it. */
export function accountStat(ctx: MonitorContext, account: Account): AccountStat {
  const now = Date.now();
  let conns = 0;
  for (const c of ctx.broker.connections.values()) if ((c.info(now, false).account ?? "$G") === account.name) conns++;
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
  for (const account of ctx.broker.accounts.values()) {
    const stat = accountStat(ctx, account);
    if (stat.conns > 0 || unused) stats.push(stat);
  }
  return { server_id: ctx.broker.serverId, now: new Date().toISOString(), account_statz: stats };
}
