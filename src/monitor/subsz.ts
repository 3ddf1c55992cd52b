/**
 * `/subsz`: the subscription tries' statistics, summed over every account
 * as nats-server sums them (or one account's, with `acc`), and on request
 * the subscriptions themselves.
 */

import type { Account } from "../core/account.js";
import type { SublistStats } from "../subjects/sublist.js";
import { isValidPublishSubject, subjectMatches } from "../subjects/subject.js";
import type { MonitorContext } from "./context.js";
import { boolParam, pageParams, QueryError } from "./query.js";
import { subDetail } from "./connz.js";

export function subsz(ctx: MonitorContext, q: URLSearchParams): Record<string, unknown> {
  const broker = ctx.broker;
  const acc = q.get("acc") || null;
  const accounts = [...broker.accounts.values()].filter((a) => acc === null || a.name === acc);
  const filter = q.get("test") || null;
  if (filter !== null && !isValidPublishSubject(filter)) throw new QueryError(`invalid test subject, must be valid publish subject: ${filter}`);
  const { offset, limit } = pageParams(q, 1024, 10_000);
  // As nats-server: total, offset and limit are there whether or not the list is.
  const out: Record<string, unknown> = { server_id: broker.serverId, now: new Date().toISOString(), ...sumStats(accounts), total: 0, offset, limit };
  if (boolParam(q, "subs")) {
    const list: Array<Record<string, unknown>> = [];
    let i = 0;
    for (const account of accounts) {
      for (const sub of account.sublist.all()) {
        if (filter !== null && !subjectMatches(sub.subject, filter)) continue;
        if (i++ < offset) continue;
        if (list.length >= limit) break;
        // An internal subscription (the server's own) has no client: cid 0.
        const cid = (sub.receiver as { cid?: unknown }).cid;
        list.push(subDetail(sub, typeof cid === "number" ? cid : 0, account.name));
      }
    }
    // As nats-server: `total` counts the subscriptions listed.
    out.total = list.length;
    out.subscriptions_list = list;
  }
  return out;
}

/** Several tries' statistics as one: counts added, rates and averages over the sums (nats-server's SublistStats.add). */
export function sumStats(accounts: readonly Account[]): SublistStats {
  const total: SublistStats = { num_subscriptions: 0, num_cache: 0, num_inserts: 0, num_removes: 0, num_matches: 0, cache_hit_rate: 0, max_fanout: 0, avg_fanout: 0 };
  let hits = 0;
  let fanout = 0;
  for (const a of accounts) {
    const s = a.sublist.stats();
    total.num_subscriptions += s.num_subscriptions;
    total.num_cache += s.num_cache;
    total.num_inserts += s.num_inserts;
    total.num_removes += s.num_removes;
    total.num_matches += s.num_matches;
    hits += s.cache_hit_rate * s.num_matches;
    fanout += s.avg_fanout * s.num_cache;
    total.max_fanout = Math.max(total.max_fanout, s.max_fanout);
  }
  total.cache_hit_rate = total.num_matches === 0 ? 0 : hits / total.num_matches;
  total.avg_fanout = total.num_cache === 0 ? 0 : fanout / total.num_cache;
  return total;
}
