/** `/varz`: the server's identity, limits and counters, in nats-server's shape. */

import { cpus } from "node:os";
import { ADVERTISED_VERSION } from "../core/broker.js";
import { authRequired, DEFAULTS } from "../core/options.js";
import { formatDuration } from "../util/duration.js";
import type { JetStreams } from "../streams/jetstreams.js";
import { underReplicatedPartitions } from "./jsz.js";
import type { MonitorContext } from "./context.js";
import { jetStreamConfig, jetStreamStats, jetStreamUsage } from "./js-usage.js";

const MS_TO_NS = 1_000_000;

export function varz(ctx: MonitorContext): Record<string, unknown> {
  const broker = ctx.broker;
  const o = broker.options;
  const now = new Date();
  const s = broker.stats;
  let subscriptions = 0;
  for (const a of broker.accounts.values()) subscriptions += a.sublist.size;
  return {
    server_id: broker.serverId,
    server_name: broker.serverName,
    version: ADVERTISED_VERSION,
    proto: 1,
    go: "nagare",
    node: process.version,
    host: o.host,
    port: broker.clientPort,
    max_connections: o.maxConnections,
    max_subscriptions: o.maxSubscriptions,
    ping_interval: o.pingInterval * MS_TO_NS,
    ping_max: o.maxPingsOut,
    http_host: o.httpHost,
    http_port: o.httpPort,
    https_port: o.httpsPort,
    auth_timeout: o.authTimeout / 1000,
    tls_timeout: (o.tls?.timeoutMs ?? DEFAULTS.tlsTimeout) / 1000,
    // As nats-server (omitempty): auth_required when clients must authenticate.
    ...(authRequired(o) ? { auth_required: true } : {}),
    // As nats-server (omitempty): tls_required only when TLS is (not with allow_non_tls), tls_verify only when certificates are.
    ...(o.tls !== undefined && o.tls.allowNonTls !== true ? { tls_required: true } : {}),
    ...(o.tls !== undefined && (o.tls.verify === true || o.tls.verifyAndMap === true) ? { tls_verify: true } : {}),
    max_control_line: o.maxControlLine,
    max_payload: o.maxPayload,
    max_pending: o.maxPending,
    write_deadline: o.writeDeadline * MS_TO_NS,
    lame_duck_duration: o.lameDuckDuration * MS_TO_NS,
    lame_duck_grace_period: o.lameDuckGracePeriod * MS_TO_NS,
    lame_duck_mode: broker.lameDuck,
    jetstream: jetstreamVarz(ctx.jetstreams),
    // nats-server's `cluster` describes its route listener (empty without one); nagare's adds the etcd membership.
    cluster: {
      ...(ctx.routes?.varz() ?? {}),
      ...(ctx.cluster?.() ?? {}),
      // nagare's: replicated partitions of the whole cluster with a replica out of sync (as /jsz's num_under_replicated).
      ...((ctx.jetstreams?.cluster ?? null) !== null ? { num_under_replicated: underReplicatedPartitions(ctx.jetstreams!) } : {}),
    },
    start: broker.startedAt.toISOString(),
    now: now.toISOString(),
    uptime: formatDuration(now.getTime() - broker.startedAt.getTime()),
    mem: process.memoryUsage.rss(),
    cores: cpus().length,
    cpu: ctx.cpu.percent(),
    connections: broker.connections.size,
    total_connections: s.totalConnections,
    routes: ctx.routes?.routeCount ?? 0,
    remotes: 0,
    leafnodes: 0,
    in_msgs: s.inMsgs,
    out_msgs: s.outMsgs,
    in_bytes: s.inBytes,
    out_bytes: s.outBytes,
    slow_consumers: s.slowConsumers,
    stale_connections: s.staleConnections,
    subscriptions,
    // As nats-server: `server_tags`, lower-cased, when there are some.
    ...(o.serverTags.length > 0 ? { tags: o.serverTags.map((t) => t.toLowerCase()) } : {}),
    // As nats-server: which account answers status requests, when there is one.
    ...(broker.system !== null ? { system_account: broker.system.name } : {}),
  };
}

/** nats-server's `jetstream` object: empty when JetStream is off. */
export function jetstreamVarz(jss: JetStreams | undefined): Record<string, unknown> {
  if (jss === undefined) return {};
  const all = jss.all();
  return { config: jetStreamConfig(jss), stats: jetStreamStats(all, jetStreamUsage(all)) };
}

/** CPU use of this process since the previous sample, in percent of one core. */
export class CpuSampler {
  private last = process.cpuUsage();
  private lastAt = process.hrtime.bigint();
  percent(): number {
    const now = process.hrtime.bigint();
    const usage = process.cpuUsage();
    const elapsedUs = Number(now - this.lastAt) / 1000;
    const usedUs = usage.user - this.last.user + usage.system - this.last.system;
    this.last = usage;
    this.lastAt = now;
    return elapsedUs <= 0 ? 0 : Math.round((usedUs / elapsedUs) * 1000) / 10;
  }
}
