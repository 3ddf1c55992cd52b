/** `/connz`: live connections, sorted and paged, in nats-server's shape; `acc` keeps one account's. */

import type { ConnectionInfo } from "../core/broker.js";
import { GLOBAL_ACCOUNT } from "../core/account.js";
import type { Subscription } from "../subjects/subscription.js";
import type { MonitorContext } from "./context.js";
import { boolParam, pageParams } from "./query.js";

const DEFAULT_LIMIT = 1024;
const MAX_LIMIT = 10_000;

type Sorter = (a: ConnectionInfo, b: ConnectionInfo) => number;

const SORTERS: Record<string, Sorter> = {
  cid: (a, b) => a.cid - b.cid,
  subs: (a, b) => b.subscriptions - a.subscriptions,
  pending: (a, b) => b.pending_bytes - a.pending_bytes,
  msgs_to: (a, b) => b.out_msgs - a.out_msgs,
  msgs_from: (a, b) => b.in_msgs - a.in_msgs,
  bytes_to: (a, b) => b.out_bytes - a.out_bytes,
  bytes_from: (a, b) => b.in_bytes - a.in_bytes,
};

/** nats-server's SubDetail as /connz shows it (no account: the connection says which). */
type SubDetail = Record<string, string | number>;

export function connz(ctx: MonitorContext, q: URLSearchParams): Record<string, unknown> {
  const broker = ctx.broker;
  const now = Date.now();
  // nats-server: `subs=detail` lists subscription details instead of subjects; otherwise `subs` is a boolean.
  const detail = q.get("subs") === "detail";
  const withSubs = !detail && boolParam(q, "subs");
  // As nats-server: who a connection authenticated as (and its certificates) is shown only when asked for.
  const withAuth = boolParam(q, "auth");
  const { offset, limit } = pageParams(q, DEFAULT_LIMIT, MAX_LIMIT);
  const sorter = SORTERS[q.get("sort") ?? "cid"] ?? SORTERS.cid;
  // nats-server's `acc`: one account's connections (what an account's own CONNZ request sees).
  const acc = q.get("acc") || null;
  let conns = [...broker.connections.values()];
  let infos = conns.map((c) => c.info(now, withSubs));
  if (acc !== null) {
    const keep = infos.map((i) => (i.account ?? GLOBAL_ACCOUNT) === acc);
    conns = conns.filter((_, i) => keep[i]);
    infos = infos.filter((_, i) => keep[i]);
  }
  const order = infos.map((_, i) => i).sort((a, b) => sorter(infos[a], infos[b]));
  const page = order.slice(offset, offset + limit);
  const details = detail ? subscriptionsByReceiver(ctx) : null;
  const connections = page.map((i) => {
    const info: ConnectionInfo & { subscriptions_list_detail?: SubDetail[] } = infos[i];
    if (!withAuth) {
      delete info.authorized_user;
      delete info.tls_peer_certs;
    }
    const subs = details?.get(conns[i]);
    // Omitted when empty, as nats-server does (a Kafka connection has no subscriptions).
    if (subs !== undefined) info.subscriptions_list_detail = subDetails(subs, info.cid);
    return info;
  });
  return {
    server_id: broker.serverId,
    now: new Date(now).toISOString(),
    num_connections: connections.length,
    total: infos.length,
    offset,
    limit,
    connections,
  };
}

/**
 * Every subscription grouped by the connection it delivers to, in one walk of
 * each account's trie: connections keep their subscriptions to themselves,
 * and the trie knows them all.
 */
function subscriptionsByReceiver(ctx: MonitorContext): Map<unknown, Subscription[]> {
  const byReceiver = new Map<unknown, Subscription[]>();
  for (const account of ctx.broker.accounts.values()) {
    for (const sub of account.sublist.all()) {
      const list = byReceiver.get(sub.receiver);
      if (list === undefined) byReceiver.set(sub.receiver, [sub]);
      else list.push(sub);
    }
  }
  return byReceiver;
}

function subDetails(subs: readonly Subscription[], cid: number): SubDetail[] {
  return subs.map((sub) => subDetail(sub, cid)).sort((a, b) => compareSids(a.sid as string, b.sid as string));
}

/** Keys in nats-server's order: account, subject, qgroup, sid, msgs, max, cid (account, qgroup and max only when set). */
export function subDetail(sub: Subscription, cid: number, account?: string): SubDetail {
  const d: SubDetail = account === undefined ? {} : { account };
  d.subject = sub.subject;
  if (sub.queue !== null) d.qgroup = sub.queue;
  d.sid = sidOf(sub);
  d.msgs = sub.delivered;
  if (sub.max > 0) d.max = sub.max;
  d.cid = cid;
  return d;
}

/**
 * The client's subscription id. The NATS door's subscriptions carry it as
 * `sid`; the core's Subscription has none, and a door without sids shows "".
 */
function sidOf(sub: Subscription): string {
  const sid = (sub as Subscription & { sid?: unknown }).sid;
  return typeof sid === "string" ? sid : "";
}

/** Numeric sids (what clients use) in numeric order, others after them by text. */
function compareSids(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  const aNum = a !== "" && Number.isFinite(na);
  const bNum = b !== "" && Number.isFinite(nb);
  if (aNum && bNum) return na - nb;
  if (aNum !== bNum) return aNum ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}
