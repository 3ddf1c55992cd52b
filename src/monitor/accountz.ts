/**
 * `/accountz`: the accounts, as nats-server lists them; with `?acc=<name>`,
 * one account's detail (nats-server's AccountInfo, also the answer to
 * `$SYS.REQ.ACCOUNT.<name>.INFO`): its connections, subscriptions, imports
 * and exports, and in operator mode its JWT and what it decodes to.
 */

import type { Account } from "../core/account.js";
import { isStreamExport, isStreamImport } from "../core/accounts.js";
import type { Broker } from "../core/broker.js";
import type { MonitorContext, Reply } from "./context.js";
import { json } from "./context.js";

/** The account does not exist: nats-server's text for it. */
export class NoSuchAccount extends Error {
  constructor(name: string) {
    super(`Account ${name} does not exist`);
  }
}

export function accountz(ctx: MonitorContext, q: URLSearchParams): Reply {
  const broker = ctx.broker;
  const base = { server_id: broker.serverId, now: new Date().toISOString(), ...(broker.system !== null ? { system_account: broker.system.name } : {}) };
  const name = q.get("acc");
  if (name === null || name === "") return json({ ...base, accounts: [...broker.accounts.keys()] });
  try {
    return json({ ...base, account_detail: accountInfo(ctx, name) });
  } catch (err) {
    if (err instanceof NoSuchAccount) return json({ error: { code: 400, description: err.message } }, 400);
    throw err;
  }
}

/** nats-server's AccountInfo for one account; throws NoSuchAccount. */
export function accountInfo(ctx: MonitorContext, name: string): Record<string, unknown> {
  const broker = ctx.broker;
  const account = broker.accounts.get(name);
  if (account === undefined) throw new NoSuchAccount(name);
  const now = Date.now();
  let connections = 0;
  for (const c of broker.connections.values()) {
    const of = c.info(now, false).account ?? "$G";
    if (of === name) connections++;
  }
  const stats = account.sublist.stats();
  const info: Record<string, unknown> = {
    account_name: account.name,
    update_time: account.updatedAt.toISOString(),
  };
  if (account === broker.system?.account) info.is_system = true;
  info.expired = account.expiresAt > 0 && account.expiresAt <= now;
  info.complete = true;
  info.jetstream_enabled = ctx.jetstreams?.get(account.name) !== undefined;
  info.leafnode_connections = 0;
  info.client_connections = connections;
  info.subscriptions = stats.num_subscriptions;
  const exports = exportsOf(broker, account);
  if (exports.length > 0) info.exports = exports;
  const imports = importsOf(broker, account);
  if (imports.length > 0) info.imports = imports;
  const c = account.claims;
  if (c !== null) {
    info.jwt = c.jwt;
    info.issuer_key = c.issuer;
    info.name_tag = c.name;
    info.decoded_jwt = c.claims;
    const revoked = Object.entries(c.revocations);
    if (revoked.length > 0) info.revoked_user = Object.fromEntries(revoked.map(([k, t]) => [k, new Date(t * 1000).toISOString()]));
  }
  info.sublist_stats = stats;
  return info;
}

/** Subjects the system answers in every other account (nats-server imports them from the system account). */
export function systemImports(account: string): Array<{ subject: string; to: string }> {
  return [
    { subject: "$SYS.REQ.SERVER.PING.CONNZ", to: `$SYS.REQ.ACCOUNT.${account}.CONNZ` },
    { subject: "$SYS.REQ.ACCOUNT.PING.CONNZ", to: `$SYS.REQ.ACCOUNT.${account}.CONNZ` },
    { subject: "$SYS.REQ.ACCOUNT.PING.STATZ", to: `$SYS.REQ.ACCOUNT.${account}.STATZ` },
  ];
}

function exportsOf(broker: Broker, account: Account): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  if (account === broker.system?.account) {
    for (const subject of ["$SYS.REQ.ACCOUNT.*.CONNZ", "$SYS.REQ.ACCOUNT.*.STATZ"]) out.push({ subject, type: "service", response_type: "Streamed" });
  }
  // A JWT account's exports are its claims'; token-required ones say so.
  const declared = account.claims?.exports.map((e) => ({ ...e.export, ...(e.tokenRequired ? { tokenRequired: true } : {}) })) ?? broker.options.accounts?.[account.name]?.exports ?? [];
  for (const e of declared) {
    const token = (e as { tokenRequired?: boolean }).tokenRequired === true ? { token_req: true } : {};
    const approved = e.accounts === undefined ? {} : { approved_accounts: e.accounts };
    if (isStreamExport(e)) out.push({ subject: e.stream, type: "stream", ...token, ...approved });
    else out.push({ subject: e.service, type: "service", ...token, response_type: e.responseType === "stream" ? "Stream" : "Singleton", ...approved });
  }
  return out;
}

function importsOf(broker: Broker, account: Account): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  const sys = broker.system;
  if (sys !== null && account !== sys.account) {
    for (const i of systemImports(account.name)) out.push({ subject: i.subject, account: sys.name, to: i.to, type: "service", invalid: false, share: false, tracking: false });
  }
  for (const i of account.claims?.imports.map((x) => x.import) ?? broker.options.accounts?.[account.name]?.imports ?? []) {
    const invalid = account.invalidImports.has(i);
    if (isStreamImport(i)) out.push({ subject: i.stream.subject, account: i.stream.account, ...(i.prefix !== undefined ? { local_subject: `${i.prefix}.${i.stream.subject}` } : {}), type: "stream", invalid, share: false, tracking: false });
    // As nats-server: `subject` is where the importer sends requests, `to` the exporter's subject.
    else out.push({ subject: i.to ?? i.service.subject, account: i.service.account, to: i.service.subject, type: "service", invalid, share: false, tracking: false });
  }
  return out;
}
