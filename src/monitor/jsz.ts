/**
 * `/jsz`: JetStream's configuration, usage and, on request, per-account,
 * per-stream and per-consumer detail, read as nats-server 2.9 reads its
 * parameters: `accounts`, `streams` (implies accounts), `consumers` (implies
 * streams), `config`, `acc=<name>` (that account, whatever else is asked),
 * `offset`/`limit` (over accounts, as nats-server pages them), `leader-only`
 * and `raft` (a single node leads everything and has no raft groups).
 */

import type { JetStream } from "../streams/jetstream.js";
import type { JetStreams } from "../streams/jetstreams.js";
import type { Stream } from "../streams/stream.js";
import type { MonitorContext } from "./context.js";
import { jetStreamConfig, jetStreamStats, jetStreamUsage } from "./js-usage.js";
import { boolParam, pageParams } from "./query.js";
import { partitionStates, streamState } from "./stream-state.js";
import { underReplicated } from "../cluster/placement.js";

const ACCOUNTS_LIMIT = 1024;

interface DetailOptions {
  streams: boolean;
  consumers: boolean;
  config: boolean;
}

/** Replicated partitions with a replica out of sync, over the whole cluster (every node reads the same placements); 0 outside one. */
export function underReplicatedPartitions(jss: JetStreams): number {
  let under = 0;
  for (const p of jss.cluster?.directory.list() ?? []) under += underReplicated(p);
  return under;
}

export async function jsz(ctx: MonitorContext, q: URLSearchParams): Promise<Record<string, unknown>> {
  const consumers = boolParam(q, "consumers");
  const streams = consumers || boolParam(q, "streams");
  const accounts = streams || boolParam(q, "accounts");
  const config = boolParam(q, "config");
  boolParam(q, "leader-only");
  boolParam(q, "raft");
  const page = pageParams(q, ACCOUNTS_LIMIT, ACCOUNTS_LIMIT);
  const head = { server_id: ctx.broker.serverId, now: new Date().toISOString() };
  const jss = ctx.jetstreams;
  if (jss === undefined) return { ...head, disabled: true, ...disabledBody() };

  const all = jss.all();
  const usage = jetStreamUsage(all);
  const out: Record<string, unknown> = {
    ...head,
    config: jetStreamConfig(jss),
    ...jetStreamStats(all, usage),
    streams: usage.streams,
    consumers: usage.consumers,
    messages: usage.messages,
    bytes: usage.bytes,
  };
  // In a cluster: nats-server's meta_cluster (no meta leader: etcd holds the metadata), and the streams on disk this node does not serve.
  const cs = jss.cluster;
  if (cs !== null) {
    out.meta_cluster = { name: cs.directory.clusterName, cluster_size: ctx.cluster?.()?.nodes.length ?? 0 };
    let notServed = 0;
    for (const js of all) notServed += js.notServed.size;
    if (notServed > 0) out.num_not_served = notServed;
    out.num_under_replicated = underReplicatedPartitions(jss);
  }
  // nagare's own: damage and refused appends are visible without asking for every stream.
  if (usage.lost > 0) out.num_lost = usage.lost;
  if (usage.storageErrors > 0) out.storage_errors = usage.storageErrors;

  // nats-server's selection: one account by name, or a page of every JetStream account.
  const names = all.map((js) => js.account.name).sort();
  const acc = q.get("acc");
  const selected = acc !== null && names.includes(acc) ? [acc] : accounts ? names.slice(page.offset, page.offset + page.limit) : [];
  const details: Array<Record<string, unknown>> = [];
  for (const name of selected) {
    const js = jss.get(name);
    if (js !== undefined) details.push(await accountDetail(ctx, js, { streams, consumers, config }));
  }
  if (details.length > 0) out.account_details = details;
  return out;
}

function disabledBody(): Record<string, unknown> {
  return {
    config: { max_memory: 0, max_storage: 0 },
    memory: 0,
    storage: 0,
    reserved_memory: 0,
    reserved_storage: 0,
    accounts: 0,
    ha_assets: 0,
    api: { total: 0, errors: 0 },
    streams: 0,
    consumers: 0,
    messages: 0,
    bytes: 0,
  };
}

async function accountDetail(ctx: MonitorContext, js: JetStream, opts: DetailOptions): Promise<Record<string, unknown>> {
  // nats-server shows reserved_* as its "no reservation" sentinel (2^64-1) here; nagare reserves nothing: 0.
  const usage = jetStreamUsage([js]);
  // As nats-server's accountDetail (storageTotals, the account's API counts): in a cluster the account's on every node, as
  // its account info tells them; the streams listed are this node's.
  const totals = js.accountUsage();
  const detail: Record<string, unknown> = {
    name: js.account.name,
    id: js.account.name,
    ...jetStreamStats([js], usage),
    memory: totals.memory,
    storage: totals.storage,
    api: { total: totals.apiTotal, errors: totals.apiErrors },
    accounts: 0,
  };
  if (js.notServed.size > 0) detail.not_served = [...js.notServed].sort(([x], [y]) => (x < y ? -1 : 1)).map(([name, reason]) => ({ name, reason }));
  if (!opts.streams) return detail;
  const list: Array<Record<string, unknown>> = [];
  for (const name of [...js.streams.keys()].sort()) {
    const stream = js.streams.get(name);
    if (stream === undefined || stream.deleted) continue;
    try {
      list.push(await streamDetail(ctx, stream, opts, js.account.name));
    } catch (err) {
      // A stream deleted while it was being read (its log closed under us) is left out, not a failed answer.
      if (!stream.deleted) throw err;
    }
  }
  if (list.length > 0) detail.stream_detail = list;
  return detail;
}

async function streamDetail(ctx: MonitorContext, stream: Stream, opts: DetailOptions, account: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {
    name: stream.config.name,
    created: stream.created.toISOString(),
    cluster: clusterOf(ctx, stream, account),
  };
  if (opts.config) out.config = stream.config;
  out.state = await streamState(stream);
  const partitions = partitionStates(stream);
  if (partitions !== null) out.partitions = partitions;
  if (opts.consumers && stream.consumers.size > 0) {
    out.consumer_detail = [...stream.consumers.keys()].sort().map((name) => {
      const info = stream.consumers.get(name)!.info();
      if (!opts.config) delete info.config;
      return info;
    });
  }
  return out;
}

/** A stream's `cluster`: this node alone, or in a cluster its name and the leader recorded in the placement. */
function clusterOf(ctx: MonitorContext, stream: Stream, account: string): Record<string, unknown> {
  const cs = ctx.jetstreams?.cluster;
  if (cs === null || cs === undefined) return { leader: ctx.broker.serverName };
  const p = cs.directory.get(account, stream.config.name)?.placement;
  const out: Record<string, unknown> = { name: cs.directory.clusterName, leader: p?.leaders[0] ?? ctx.broker.serverName };
  // Replicas as the placement records them (nats-server's form; lag and activity are the leader's to tell, in stream info).
  const set = p?.replicas?.[0];
  if (set !== undefined) {
    const isr = p!.isr?.[0] ?? set;
    out.replicas = set.filter((n) => n !== p!.leaders[0]).map((name) => ({ name, current: isr.includes(name), ...(cs.directory.isLive(name) ? {} : { offline: true }) }));
  }
  return out;
}
