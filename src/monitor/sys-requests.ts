/**
 * The monitoring endpoints over NATS, as nats-server serves them to the
 * system account: the same functions as the HTTP endpoints (one
 * implementation), answered in nats-server's envelope
 * `{"server": {...}, "data": {...}}` (or `"error"`).
 *
 * In the system account:
 * - `$SYS.REQ.SERVER.PING` and `$SYS.REQ.SERVER.PING.<what>` (every server
 *   answers; here the one), `$SYS.REQ.SERVER.<server id>.<what>`, for
 *   STATSZ, VARZ, CONNZ, SUBSZ, JSZ, ACCOUNTZ, HEALTHZ;
 * - `$SYS.REQ.ACCOUNT.<account>.<what>` for CONNZ, SUBSZ, JSZ, INFO,
 *   STATZ and CONNS, and `$SYS.REQ.ACCOUNT.PING.STATZ` for every account.
 * In every other account, as nats-server imports them from the system
 * account: `$SYS.REQ.SERVER.PING.CONNZ` and `$SYS.REQ.ACCOUNT.PING.CONNZ`
 * (that account's connections) and `$SYS.REQ.ACCOUNT.PING.STATZ` (its
 * statistics). Nothing else of the system account is reachable from them.
 *
 * A request's body may carry the endpoint's options as JSON (nats-server's
 * ConnzOptions, SubszOptions, ... field names), read by the endpoint as its
 * HTTP query parameters are; an option nagare does not have, given a value
 * other than its zero, gets a 400 error rather than an answer that ignores
 * it. The filter options (`server_name`, `host`, `cluster`, `tags`,
 * `domain`) say which servers should answer: one they do not match stays
 * silent, as nats-server does.
 *
 * Every `interval` (10 s) `$SYS.SERVER.<id>.STATSZ` is published, when
 * someone listens.
 */

import type { Account } from "../core/account.js";
import { eventId, type SystemAccount, type SystemError } from "../core/system.js";
import type { MonitorContext } from "./context.js";
import { accountInfo, NoSuchAccount, systemImports } from "./accountz.js";
import { accountStat, connectionsByAccount } from "./accstatz.js";
import { connz } from "./connz.js";
import { healthz } from "./healthz.js";
import { jsz } from "./jsz.js";
import { QueryError } from "./query.js";
import { subsz } from "./subsz.js";
import { jetstreamVarz, varz } from "./varz.js";

type Params = Record<string, unknown>;

/** A JSON option of a request: the HTTP parameter it becomes, or null when nagare has none (then only its zero value passes). */
type OptionMap = Record<string, string | null>;

const FILTERS = ["server_name", "cluster", "host", "tags", "domain"];

const CONNZ_OPTIONS: OptionMap = {
  sort: "sort",
  auth: "auth",
  subscriptions: "subs",
  subscriptions_detail: "subs-detail",
  offset: "offset",
  limit: "limit",
  acc: "acc",
  cid: "cid",
  mqtt_client: "mqtt_client",
  state: "state",
  user: "user",
  filter_subject: "filter_subject",
};

/** ConnzOptions' `state` is nats-server's ConnState number: open, closed, all. */
const CONN_STATES = ["open", "closed", "all"];
const SUBSZ_OPTIONS: OptionMap = { offset: "offset", limit: "limit", subscriptions: "subs", account: "acc", test: "test" };
const JSZ_OPTIONS: OptionMap = {
  account: "acc",
  accounts: "accounts",
  streams: "streams",
  consumer: "consumers",
  config: "config",
  leader_only: "leader-only",
  offset: "offset",
  limit: "limit",
  raft: "raft",
};
const HEALTHZ_OPTIONS: OptionMap = { "js-enabled-only": "js-enabled-only", "js-server-only": "js-server-only", "js-enabled": "js-enabled" };
const ACCOUNTZ_OPTIONS: OptionMap = { account: "acc" };
const STATZ_OPTIONS: OptionMap = { accounts: "accounts", include_unused: "include_unused" };
const NO_OPTIONS: OptionMap = {};

/** Why a request gets an error rather than data: nats-server's codes (400: its options, 500: the endpoint failed). */
class RequestError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** The request was for other servers (its filter options do not match this one): no answer at all. */
const NOT_FOR_US = Symbol("not for us");

export interface SystemRequests {
  close(): void;
}

/** Serves the requests in the system account and in every other account (those there now and those made later). */
export function startSystemRequests(ctx: MonitorContext, sys: SystemAccount, statszIntervalMs = 10_000): SystemRequests {
  const broker = ctx.broker;
  const stops: Array<() => void> = [];
  const id = broker.serverId;

  const serve = (subject: string, account: Account, answer: (subject: string, body: Params) => unknown | Promise<unknown>): void => {
    stops.push(
      sys.subscribe(
        subject,
        (subj, reply, body) => {
          if (reply === "") return;
          void respond(sys, account, reply, body, (p) => answer(subj, p));
        },
        account,
      ),
    );
  };

  const server: Record<string, [OptionMap, (p: Params) => unknown | Promise<unknown>]> = {
    VARZ: [NO_OPTIONS, () => varz(ctx)],
    CONNZ: [CONNZ_OPTIONS, (p) => connz(ctx, query(p, CONNZ_OPTIONS))],
    SUBSZ: [SUBSZ_OPTIONS, (p) => subsz(ctx, query(p, SUBSZ_OPTIONS))],
    JSZ: [JSZ_OPTIONS, (p) => jsz(ctx, query(p, JSZ_OPTIONS))],
    ACCOUNTZ: [ACCOUNTZ_OPTIONS, (p) => accountz(ctx, query(p, ACCOUNTZ_OPTIONS))],
    HEALTHZ: [HEALTHZ_OPTIONS, (p) => healthzData(ctx, query(p, HEALTHZ_OPTIONS))],
  };
  const home = sys.account;
  for (const [what, [options, endpoint]] of Object.entries(server)) {
    for (const subject of [`$SYS.REQ.SERVER.PING.${what}`, `$SYS.REQ.SERVER.${id}.${what}`]) serve(subject, home, (_s, p) => endpoint(checked(ctx, p, options)));
  }
  // STATSZ is not enveloped in `data` but in `statsz`, and the bare PING asks for it too.
  for (const subject of ["$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.STATSZ", `$SYS.REQ.SERVER.${id}.STATSZ`]) {
    stops.push(
      sys.subscribe(subject, (_subj, reply, body) => {
        // As nats-server: without a reply subject the answer goes out as the periodic one does.
        const to = reply === "" ? `$SYS.SERVER.${id}.STATSZ` : reply;
        try {
          checked(ctx, parse(body), NO_OPTIONS);
        } catch (err) {
          if (err === NOT_FOR_US) return;
          sys.respond(to, { error: errorOf(err) });
          return;
        }
        sys.publish(to, JSON.stringify({ server: sys.serverInfo(), statsz: statsz(ctx) }));
      }),
    );
  }

  const byAccount: Record<string, (name: string, p: Params) => unknown | Promise<unknown>> = {
    CONNZ: (name, p) => connz(ctx, query({ ...checked(ctx, p, CONNZ_OPTIONS), acc: name }, CONNZ_OPTIONS)),
    SUBSZ: (name, p) => subsz(ctx, query({ ...checked(ctx, p, SUBSZ_OPTIONS), account: name, subscriptions: true }, SUBSZ_OPTIONS)),
    JSZ: (name, p) => accountJsz(ctx, name, checked(ctx, p, JSZ_OPTIONS)),
    INFO: (name, p) => {
      checked(ctx, p, NO_OPTIONS);
      try {
        return accountInfo(ctx, name);
      } catch (err) {
        if (err instanceof NoSuchAccount) throw new RequestError(500, err.message);
        throw err;
      }
    },
    STATZ: (name, p) => {
      checked(ctx, p, STATZ_OPTIONS);
      const account = broker.accounts.get(name);
      // As nats-server: an account with no connections (or none at all) is not reported, and nothing is answered, unless include_unused.
      const stat = account === undefined ? null : accountStat(ctx, account);
      if (stat === null || (stat.conns === 0 && p.include_unused !== true)) throw NOT_FOR_US;
      return { server_id: id, now: new Date().toISOString(), account_statz: [stat] };
    },
  };
  for (const [what, endpoint] of Object.entries(byAccount)) {
    serve(`$SYS.REQ.ACCOUNT.*.${what}`, home, (subject, p) => {
      const name = subject.split(".")[3];
      // `$SYS.REQ.ACCOUNT.PING.STATZ` asks about every account.
      if (what === "STATZ" && name === "PING") return allStatz(ctx, p);
      return endpoint(name, p);
    });
  }
  // CONNS: the account's connection count, as the event nats-server sends when it changes (no envelope).
  stops.push(
    sys.subscribe("$SYS.REQ.ACCOUNT.*.CONNS", (subject, reply) => {
      const account = broker.accounts.get(subject.split(".")[3]);
      if (reply === "" || account === undefined) return;
      const stat = accountStat(ctx, account);
      if (stat.conns === 0) return;
      sys.publish(reply, JSON.stringify({ type: "io.nats.server.advisory.v1.account_connections", id: eventId(), timestamp: new Date().toISOString(), server: sys.serverInfo(), ...stat }));
    }),
  );

  // What every other account may ask about itself, as nats-server's system imports give it.
  const importInto = (account: Account): void => {
    if (account === home) return;
    for (const { subject, to } of systemImports(account.name)) {
      const what = to.split(".").pop()!;
      serve(subject, account, (_s, p) => byAccount[what](account.name, p));
    }
  };
  for (const account of broker.accounts.values()) importInto(account);
  broker.accountListeners.push(importInto);

  const timer = setInterval(() => {
    const subject = `$SYS.SERVER.${id}.STATSZ`;
    if (sys.hasInterest(subject)) sys.publish(subject, JSON.stringify({ server: sys.serverInfo(), statsz: statsz(ctx) }));
  }, statszIntervalMs);
  timer.unref();

  return {
    close: () => {
      clearInterval(timer);
      for (const s of stops) s();
      const i = broker.accountListeners.indexOf(importInto);
      if (i >= 0) broker.accountListeners.splice(i, 1);
    },
  };
}

/** Answers one request: the endpoint's result as `data`, or why not as `error`; silence when it was not for this server. */
async function respond(sys: SystemAccount, account: Account, reply: string, body: Buffer, answer: (p: Params) => unknown | Promise<unknown>): Promise<void> {
  let p: Params;
  try {
    p = parse(body);
  } catch (err) {
    sys.respond(reply, { error: errorOf(err) }, account);
    return;
  }
  let data: unknown;
  try {
    data = await answer(p);
  } catch (err) {
    if (err === NOT_FOR_US) return;
    const error = errorOf(err);
    // As nats-server: an endpoint that failed answers `"data": null`; options it could not read, no data.
    sys.respond(reply, error.code === 400 ? { error } : { data: null, error }, account);
    return;
  }
  sys.respond(reply, { data }, account);
}

function errorOf(err: unknown): SystemError {
  if (err instanceof RequestError) return { code: err.code, description: err.message };
  if (err instanceof QueryError) return { code: 400, description: err.message };
  return { code: 500, description: (err as Error).message };
}

/** The request's JSON options (an empty body: none). */
function parse(body: Buffer): Params {
  if (body.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new RequestError(400, (err as Error).message);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new RequestError(400, "the request options must be a JSON object");
  return v as Params;
}

/**
 * The options, once the filters say the request is for this server: an
 * option nagare has not (with a value other than its zero) is an error.
 * Unknown keys are ignored, as Go's JSON decoding ignores them.
 */
function checked(ctx: MonitorContext, p: Params, options: OptionMap): Params {
  if (!forThisServer(ctx, p)) throw NOT_FOR_US;
  for (const [key, param] of Object.entries(options)) {
    const v = p[key];
    if (param === null && v !== undefined && v !== null && v !== 0 && v !== "" && v !== false && !(Array.isArray(v) && v.length === 0)) {
      throw new RequestError(400, `option ${key} is not supported`);
    }
  }
  return p;
}

/** nats-server's filterRequest: a name or host the server's does not contain, any cluster, tag or domain (it has none) is for others. */
function forThisServer(ctx: MonitorContext, p: Params): boolean {
  for (const key of FILTERS) {
    const v = p[key];
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0)) continue;
    if (key === "server_name" && typeof v === "string" && ctx.broker.serverName.includes(v)) continue;
    if (key === "host" && typeof v === "string" && ctx.broker.options.host.includes(v)) continue;
    return false;
  }
  return true;
}

/** JSON options as the endpoint's query parameters. */
function query(p: Params, options: OptionMap): URLSearchParams {
  const q = new URLSearchParams();
  for (const [key, param] of Object.entries(options)) {
    const v = p[key];
    if (param === null || v === undefined || v === null || v === "") continue;
    if (typeof v === "object") throw new RequestError(400, `option ${key} must be a string, a number or a boolean`);
    if (param === "subs-detail") {
      if (v === true) q.set("subs", "detail");
      continue;
    }
    if (param === "subs" && q.get("subs") === "detail") continue;
    if (param === "state") {
      if (typeof v !== "number" || CONN_STATES[v] === undefined) throw new RequestError(400, `option state must be 0 (open), 1 (closed) or 2 (all), got ${JSON.stringify(v)}`);
      q.set("state", CONN_STATES[v]);
      continue;
    }
    q.set(param, String(v));
  }
  return q;
}

function accountz(ctx: MonitorContext, q: URLSearchParams): unknown {
  const name = q.get("acc");
  const broker = ctx.broker;
  const base = { server_id: broker.serverId, now: new Date().toISOString(), ...(broker.system !== null ? { system_account: broker.system.name } : {}) };
  if (name === null) return { ...base, accounts: [...broker.accounts.keys()] };
  try {
    return { ...base, account_detail: accountInfo(ctx, name) };
  } catch (err) {
    if (err instanceof NoSuchAccount) throw new RequestError(500, err.message);
    throw err;
  }
}

/** /healthz's answer as data (an unhealthy server answers too, with its status). */
function healthzData(ctx: MonitorContext, q: URLSearchParams): unknown {
  const r = healthz(ctx, q);
  return "json" in r ? r.json : r.text;
}

/** nats-server's JszAccount: one account's JetStream detail. */
async function accountJsz(ctx: MonitorContext, name: string, p: Params): Promise<unknown> {
  if (ctx.jetstreams === undefined) throw new RequestError(500, "jetstream not enabled");
  if (!ctx.broker.accounts.has(name)) throw new RequestError(500, `account ${JSON.stringify(name)} not found`);
  const out = await jsz(ctx, query({ ...p, account: name, accounts: true }, JSZ_OPTIONS));
  const detail = (out.account_details as Array<Record<string, unknown>> | undefined)?.find((d) => d.name === name);
  if (detail === undefined) throw new RequestError(500, `account ${JSON.stringify(name)} not jetstream enabled`);
  return detail;
}

/** nats-server's ServerStats: what STATSZ reports. */
function statsz(ctx: MonitorContext): Record<string, unknown> {
  const broker = ctx.broker;
  const s = broker.stats;
  const v = varz(ctx);
  const active = new Set<string>();
  const now = Date.now();
  for (const c of broker.connections.values()) active.add(c.info(now, false).account ?? "$G");
  const out: Record<string, unknown> = {
    start: broker.startedAt.toISOString(),
    mem: v.mem,
    cores: v.cores,
    cpu: v.cpu,
    connections: broker.connections.size,
    total_connections: s.totalConnections,
    active_accounts: active.size,
    subscriptions: v.subscriptions,
    sent: { msgs: s.outMsgs, bytes: s.outBytes },
    received: { msgs: s.inMsgs, bytes: s.inBytes },
    slow_consumers: s.slowConsumers,
    active_servers: 1,
  };
  if (ctx.jetstreams !== undefined) {
    const js = jetstreamVarz(ctx.jetstreams);
    delete (js.config as Record<string, unknown>).store_dir; // as nats-server: not where the store is
    out.jetstream = js;
  }
  return out;
}

/** `$SYS.REQ.ACCOUNT.PING.STATZ`: every account with connections (`accounts` picks some; `include_unused` those without). */
function allStatz(ctx: MonitorContext, p: Params): unknown {
  if (!forThisServer(ctx, p)) throw NOT_FOR_US;
  const wanted = p.accounts;
  if (wanted !== undefined && wanted !== null && (!Array.isArray(wanted) || wanted.some((a) => typeof a !== "string"))) throw new RequestError(400, "option accounts must be a list of account names");
  const names = Array.isArray(wanted) && wanted.length > 0 ? new Set(wanted as string[]) : null;
  const stats = [];
  const counts = connectionsByAccount(ctx);
  for (const account of ctx.broker.accounts.values()) {
    if (names !== null && !names.has(account.name)) continue;
    const stat = accountStat(ctx, account, counts);
    if (stat.conns > 0 || p.include_unused === true) stats.push(stat);
  }
  if (stats.length === 0) throw NOT_FOR_US;
  return { server_id: ctx.broker.serverId, now: new Date().toISOString(), account_statz: stats };
}

