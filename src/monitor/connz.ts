/**
 * `/connz`: client connections, open and recently closed, filtered, sorted
 * and paged in nats-server's shape. Every option nats-server 2.10 reads is
 * read here, with its meaning and its 400s; none is ignored.
 */

import type { Connection, ConnectionInfo } from "../core/broker.js";
import { GLOBAL_ACCOUNT } from "../core/account.js";
import type { ClosedConnection } from "../core/closed-connections.js";
import type { Subscription } from "../subjects/subscription.js";
import { subjectsIntersect } from "../subjects/subject.js";
import type { MonitorContext } from "./context.js";
import { boolParam, pageParams, QueryError } from "./query.js";

const DEFAULT_LIMIT = 1024;
const MAX_LIMIT = 10_000;
const UINT64_MAX = 2n ** 64n - 1n;

/** One connection as the sorters and filters see it, open or closed. */
interface Row {
  readonly info: ConnectionInfo;
  readonly open: Connection | null;
  readonly closed: ClosedConnection | null;
  readonly account: string;
  readonly rttNs: number;
}

type Sorter = (a: Row, b: Row, now: number) => number;

const ms = (iso: string | undefined): number => (iso === undefined ? 0 : Date.parse(iso));
const uptime = (r: Row, now: number): number => (r.closed?.stopMs ?? now) - ms(r.info.start);

/** nats-server's sort options: by cid (and start) and uptime ascending, reason by text, the rest descending. */
const SORTERS: Record<string, Sorter> = {
  cid: () => 0,
  start: () => 0,
  subs: (a, b) => b.info.subscriptions - a.info.subscriptions,
  pending: (a, b) => b.info.pending_bytes - a.info.pending_bytes,
  msgs_to: (a, b) => b.info.out_msgs - a.info.out_msgs,
  msgs_from: (a, b) => b.info.in_msgs - a.info.in_msgs,
  bytes_to: (a, b) => b.info.out_bytes - a.info.out_bytes,
  bytes_from: (a, b) => b.info.in_bytes - a.info.in_bytes,
  last: (a, b) => ms(b.info.last_activity) - ms(a.info.last_activity),
  idle: (a, b) => ms(a.info.last_activity) - ms(b.info.last_activity),
  uptime: (a, b, now) => uptime(a, now) - uptime(b, now),
  stop: (a, b) => (b.closed?.stopMs ?? 0) - (a.closed?.stopMs ?? 0),
  reason: (a, b) => ((a.info.reason ?? "") < (b.info.reason ?? "") ? -1 : (a.info.reason ?? "") > (b.info.reason ?? "") ? 1 : 0),
  rtt: (a, b) => b.rttNs - a.rttNs,
};

type State = "open" | "closed" | "all";

/** The options, read as nats-server's HandleConnz and Connz read them. */
export interface ConnzOptions {
  sort: string;
  auth: boolean;
  subs: boolean;
  detail: boolean;
  offset: number;
  limit: number;
  /** 0: any. */
  cid: bigint;
  state: State;
  user: string | null;
  acc: string | null;
  mqttClient: string | null;
  filterSubject: string | null;
}

export function connzOptions(q: URLSearchParams): ConnzOptions {
  const sort = q.get("sort") || "cid";
  if (!Object.hasOwn(SORTERS, sort)) throw new QueryError(`invalid sorting option: ${sort}`);
  // nats-server: `subs=detail` lists subscription details instead of subjects; otherwise `subs` is a boolean.
  const detail = (q.get("subs") ?? "").toLowerCase() === "detail";
  const subs = !detail && boolParam(q, "subs");
  // As nats-server: who a connection authenticated as (and its certificates) is shown only when asked for.
  const auth = boolParam(q, "auth");
  let { offset, limit } = pageParams(q, DEFAULT_LIMIT, MAX_LIMIT);
  const cid = uint64Param(q, "cid");
  const state = stateParam(q);
  if ((sort === "stop" || sort === "reason") && state !== "closed") throw new QueryError(`sort by ${sort} only valid on closed connections`);
  // As nats-server: one connection asked for by id is one at most.
  if (cid > 0n) limit = 1;
  const acc = q.get("acc") || null;
  let filterSubject = q.get("filter_subject") || null;
  if (filterSubject === ">") filterSubject = null;
  if (filterSubject !== null && acc === null) throw new QueryError("filter by subject only valid with account filtering");
  return { sort, auth, subs, detail, offset, limit, cid, state, user: q.get("user") || null, acc, mqttClient: q.get("mqtt_client") || null, filterSubject };
}

export function connz(ctx: MonitorContext, q: URLSearchParams): Record<string, unknown> {
  const o = connzOptions(q);
  const broker = ctx.broker;
  const now = Date.now();
  const withSubjects = o.subs || o.filterSubject !== null;
  let rows: Row[] = [];
  if (o.state !== "closed") {
    for (const c of broker.connections.values()) {
      const info = c.info(now, withSubjects);
      const account = info.account ?? GLOBAL_ACCOUNT;
      // nats-server's `acc`: one account's connections (what an account's own CONNZ request sees).
      if (o.acc !== null && account !== o.acc) continue;
      rows.push({ info, open: c, closed: null, account, rttNs: c.rttNs?.() ?? 0 });
    }
  }
  if (o.state !== "open") {
    for (const c of broker.closed.list()) {
      if (o.acc !== null && c.account !== o.acc) continue;
      rows.push({ info: { ...c.info }, open: null, closed: c, account: c.account, rttNs: c.rttNs });
    }
  }
  // As nats-server: `total` counts the connections in that state (and account) before the other filters.
  const total = rows.length;
  rows = rows.filter((r) => matches(r, o));
  const sorter = SORTERS[o.sort];
  rows.sort((a, b) => sorter(a, b, now) || a.info.cid - b.info.cid);
  const page = rows.slice(o.offset, o.offset + o.limit);
  const details = o.detail && page.some((r) => r.open !== null) ? subscriptionsByReceiver(ctx) : null;
  const connections = page.map((r) => entry(r, o, details));
  return {
    server_id: broker.serverId,
    now: new Date(now).toISOString(),
    num_connections: connections.length,
    total,
    offset: o.offset,
    limit: o.limit,
    connections,
  };
}

/** The filters by id, user, MQTT client and subject interest. */
function matches(r: Row, o: ConnzOptions): boolean {
  if (o.cid > 0n && BigInt(r.info.cid) !== o.cid) return false;
  if (o.user !== null && r.info.authorized_user !== o.user) return false;
  if (o.mqttClient !== null && r.info.mqtt_client !== o.mqttClient) return false;
  if (o.filterSubject !== null) {
    const subjects = r.closed !== null ? r.closed.subscriptions.map((s) => s.subject) : (r.info.subscriptions_list ?? []);
    if (!subjects.some((s) => subjectsIntersect(o.filterSubject!, s))) return false;
  }
  return true;
}

/** One /connz entry: what was asked for of its subscriptions and identity. */
function entry(r: Row, o: ConnzOptions, details: Map<unknown, Subscription[]> | null): ConnectionInfo & { subscriptions_list_detail?: SubDetail[] } {
  const info: ConnectionInfo & { subscriptions_list_detail?: SubDetail[] } = r.info;
  if (!o.auth) {
    delete info.authorized_user;
    delete info.tls_peer_certs;
  }
  if (!o.subs) delete info.subscriptions_list;
  if (r.closed !== null) {
    const subs = r.closed.subscriptions;
    // As nats-server: a closed connection's subscriptions, when it had some; details with the account.
    if (subs.length > 0 && o.detail) info.subscriptions_list_detail = subs.map((s) => closedSubDetail(s, r.account, info.cid)).sort((a, b) => compareSids(a.sid as string, b.sid as string));
    else if (subs.length > 0 && o.subs) info.subscriptions_list = subs.map((s) => s.subject);
    return info;
  }
  const subs = details?.get(r.open);
  // Omitted when empty, as nats-server does (a Kafka connection has no subscriptions).
  if (subs !== undefined) info.subscriptions_list_detail = subDetails(subs, info.cid);
  return info;
}

/** nats-server's ParseUint for a query parameter: absent or empty is 0. */
function uint64Param(q: URLSearchParams, name: string): bigint {
  const v = q.get(name);
  if (v === null || v === "") return 0n;
  if (!/^\d+$/.test(v)) throw new QueryError(`Error decoding uint64 for '${name}': strconv.ParseUint: parsing ${JSON.stringify(v)}: invalid syntax`);
  const n = BigInt(v);
  if (n > UINT64_MAX) throw new QueryError(`Error decoding uint64 for '${name}': strconv.ParseUint: parsing ${JSON.stringify(v)}: value out of range`);
  return n;
}

/** `state`: open (the default), closed, or all (also `any`), in any case. */
function stateParam(q: URLSearchParams): State {
  const v = q.get("state");
  if (v === null || v === "") return "open";
  switch (v.toLowerCase()) {
    case "open":
      return "open";
    case "closed":
      return "closed";
    case "any":
    case "all":
      return "all";
  }
  throw new QueryError(`Error decoding state for ${v}`);
}

/** nats-server's SubDetail as /connz shows it (no account: the connection says which). */
type SubDetail = Record<string, string | number>;

/** A closed connection's subscription as nats-server shows it: with its account, as its closed entries keep them. */
function closedSubDetail(s: ClosedConnection["subscriptions"][number], account: string, cid: number): SubDetail {
  const d: SubDetail = { account, subject: s.subject };
  if (s.queue !== null) d.qgroup = s.queue;
  d.sid = s.sid;
  d.msgs = s.msgs;
  if (s.max > 0) d.max = s.max;
  d.cid = cid;
  return d;
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
