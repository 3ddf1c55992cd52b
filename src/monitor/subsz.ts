/** `/subsz`: the subscription trie's statistics and, on request, its subscriptions. */

import { subjectMatches } from "../subjects/subject.js";
import type { MonitorContext } from "./context.js";
import { boolParam, pageParams } from "./query.js";

export function subsz(ctx: MonitorContext, q: URLSearchParams): Record<string, unknown> {
  const broker = ctx.broker;
  const account = broker.globalAccount;
  const stats = account.sublist.stats();
  const out: Record<string, unknown> = { server_id: broker.serverId, now: new Date().toISOString(), ...stats };
  if (boolParam(q, "subs")) {
    const { offset, limit } = pageParams(q, 1024, 10_000);
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
