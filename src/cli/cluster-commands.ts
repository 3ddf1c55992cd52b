/**
 * `nagare cluster ls`: the nodes of a cluster, their state and load, read
 * from etcd, where each node registers itself. etcd rather than a node's
 * monitoring endpoint: it is the membership's source of truth, it answers
 * for every node at once, and it answers when the node one would have asked
 * is the one that is down. The etcd endpoints come from `--etcd`, or from a
 * server's configuration file (`-c`, its `etcd {}` and `cluster { name }`).
 * Exit codes 0 ok, 1 failed, 2 usage, as the other commands.
 */

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { EtcdClient, type EtcdTls } from "../cluster/etcd-client.js";
import { clusterRoot } from "../cluster/node.js";
import type { NodeRecord } from "../cluster/membership.js";
import { underReplicated, type StreamPlacement } from "../cluster/placement.js";
import { DEFAULTS, clusterNameError, etcdEndpointError, type EtcdOptions } from "../core/options.js";
import { parseConf } from "../server/conf-parser.js";
import { optionsFromConf } from "../server/conf-options.js";
import { UsageError, lastFlag, parseArgs, reportFailure, timeoutFrom, tlsFrom, write, type ClientCommandIo, type FlagSpec } from "./client-commands.js";
import { bytes, table } from "./js-commands.js";

const FLAGS: FlagSpec[] = [
  { long: "etcd", value: true },
  { long: "cluster_name", value: true },
  { long: "prefix", value: true },
  { long: "config", short: "c", value: true },
  { long: "tlsca", value: true },
  { long: "tlscert", value: true },
  { long: "tlskey", value: true },
  { long: "timeout", value: true },
  { long: "json", value: false },
  { long: "help", short: "h", value: false },
];

export const CLUSTER_USAGE = `Usage: nagare cluster ls [options]

  ls   the nodes registered in etcd: name, state, load, partitions led, tags, addresses

Options:
  --etcd <url>[,<url>...]        etcd's client URLs (default: from -c, else http://127.0.0.1:2379)
  -c, --config <file>            a server's configuration file: its etcd {} and cluster { name }
  --cluster_name <name>          the cluster (default: from -c, else ${DEFAULTS.clusterName})
  --prefix <prefix>              etcd key prefix (default: from -c, else ${DEFAULTS.etcdPrefix})
  --tlsca, --tlscert, --tlskey <file>
                                 TLS for https:// endpoints (default: from -c)
  --json                         print JSON instead of a table
  --timeout <duration>           how long to wait for etcd, e.g. 500ms, 2s (default: 5s)
`;

const DEFAULT_ENDPOINT = "http://127.0.0.1:2379";

export async function runClusterCommand(argv: string[], io: ClientCommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }): Promise<number> {
  let client: EtcdClient | undefined;
  try {
    const args = parseArgs(argv, FLAGS);
    if (args.flags.has("help") || args.positionals.length === 0) {
      await write(args.flags.has("help") ? io.stdout : io.stderr, CLUSTER_USAGE);
      return args.flags.has("help") ? 0 : 2;
    }
    const [verb, ...rest] = args.positionals;
    if (verb !== "ls") throw new UsageError(`unknown subcommand "${verb}"`);
    if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"`);
    const timeout = timeoutFrom(args);
    const target = targetFrom(args);
    client = new EtcdClient({ endpoints: target.endpoints, tls: target.tls, dialTimeoutMs: timeout, requestTimeoutMs: timeout });
    const prefix = `${clusterRoot(target.prefix, target.cluster)}nodes/`;
    const r = await client.range(prefix, { prefix: true });
    // Partitions led, from the placements themselves (what the next placement counts), not from the nodes' reported load.
    const placed = await client.range(`${clusterRoot(target.prefix, target.cluster)}meta/streams/`, { prefix: true });
    const leads = new Map<string, number>();
    let under = 0;
    for (const kv of placed.kvs) {
      try {
        const p = JSON.parse(kv.value) as StreamPlacement;
        for (const l of p.leaders) leads.set(l, (leads.get(l) ?? 0) + 1);
        under += underReplicated(p);
      } catch {
        // not a placement: counted nowhere
      }
    }
    const nodes = r.kvs.map((kv) => {
      let record: Partial<NodeRecord> = {};
      try {
        record = JSON.parse(kv.value) as NodeRecord;
      } catch {
        // shown with what etcd says: a name and a lease
      }
      const name = kv.key.slice(prefix.length);
      return { ...record, name, lease: kv.lease, leads: leads.get(name) ?? 0 };
    });
    if (args.flags.has("json")) {
      await write(io.stdout, `${JSON.stringify(nodes, null, 2)}\n`);
      return 0;
    }
    if (nodes.length === 0) {
      await write(io.stdout, `no nodes registered in cluster ${target.cluster} (etcd ${target.endpoints.join(",")}, ${prefix})\n`);
      return 0;
    }
    const rows = nodes.map((n) => [
      n.name,
      n.state ?? "?",
      n.load?.connections ?? "",
      n.load?.subscriptions ?? "",
      n.load?.streams ?? "",
      n.load?.partitions ?? "",
      n.leads,
      n.load === undefined ? "" : bytes(n.load.bytes),
      (n.tags ?? []).join(","),
      (n.client_urls ?? []).join(","),
      n.kafka ?? "",
    ]);
    await write(io.stdout, table(["NAME", "STATE", "CONNECTIONS", "SUBSCRIPTIONS", "STREAMS", "PARTITIONS", "LEADS", "STORED", "TAGS", "CLIENTS", "KAFKA"], rows));
    // Replicated partitions with a replica out of sync (as /jsz's num_under_replicated), from the placements themselves.
    await write(io.stdout, `under-replicated partitions: ${under}\n`);
    return 0;
  } catch (err) {
    return await reportFailure("cluster", err, CLUSTER_USAGE, io.stderr);
  } finally {
    client?.close();
  }
}

interface Target {
  endpoints: string[];
  prefix: string;
  cluster: string;
  tls: EtcdTls | undefined;
}

/** Where to look: flags over the configuration file's etcd {} and cluster name, over the defaults. */
function targetFrom(args: ReturnType<typeof parseArgs>): Target {
  let fromConf: { etcd?: EtcdOptions; cluster?: string } = {};
  const file = lastFlag(args, "config");
  if (file !== undefined) {
    const path = resolve(file);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new Error(`cannot read configuration file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const o = optionsFromConf(parseConf(text, { baseDir: dirname(path), file }));
    fromConf = { etcd: o.etcd, cluster: o.cluster?.name };
  }
  const etcdFlag = lastFlag(args, "etcd");
  const endpoints = etcdFlag !== undefined ? etcdFlag.split(",").map((s) => s.trim()) : (fromConf.etcd?.endpoints ?? [DEFAULT_ENDPOINT]);
  for (const e of endpoints) {
    const why = etcdEndpointError(e);
    if (why !== null) throw new UsageError(`--etcd: ${why}`);
  }
  const cluster = lastFlag(args, "cluster_name") ?? fromConf.cluster ?? DEFAULTS.clusterName;
  const nameWhy = clusterNameError(cluster);
  if (nameWhy !== null) throw new UsageError(`--cluster_name ${nameWhy}`);
  const prefix = lastFlag(args, "prefix") ?? fromConf.etcd?.prefix ?? DEFAULTS.etcdPrefix;
  const files = tlsFrom(args) ?? fromConf.etcd?.tls;
  const read = (path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const tls = files === undefined ? undefined : { ca: read(files.caFile), cert: read(files.certFile), key: read(files.keyFile) };
  return { endpoints, prefix, cluster, tls };
}
