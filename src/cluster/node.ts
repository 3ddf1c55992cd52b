/**
 * A server's place in the cluster: the etcd client, its membership and the
 * metadata store, started together and stopped together, and what
 * monitoring shows of them. The composition root (server/server.ts) starts
 * one when `etcd` is configured; nothing here knows the broker.
 *
 * etcd key layout (docs/ARCHITECTURE.md, "Cluster"):
 *
 *   <prefix>/<cluster>/nodes/<server name>   a NodeRecord (JSON), under the node's lease
 *   <prefix>/<cluster>/meta/...              metadata: no lease, changed by fenced revision-compared transactions
 */

import type { Logger } from "../util/log.js";
import { EtcdClient, type EtcdTls } from "./etcd-client.js";
import { Membership, type MembershipState, type NodeLoad, type NodeRecord } from "./membership.js";
import { MetadataStore, REGISTERED_PREFIX } from "./metadata.js";
import { Placements } from "./placement.js";

export interface ClusterNodeOptions {
  clusterName: string;
  serverName: string;
  etcd: {
    endpoints: string[];
    /** Keys live under `<prefix>/<cluster>/`. */
    prefix: string;
    tls?: EtcdTls;
    dialTimeoutMs: number;
    requestTimeoutMs: number;
    /** Asked of etcd, in seconds. */
    leaseTtlS: number;
  };
  describe: () => NodeRecord;
  refreshMs?: number;
  /** How long `start` may wait to register; default the dial and request timeouts plus one lease TTL. */
  startTimeoutMs?: number;
  log: Logger;
}

/** The cluster as this node sees it: /varz's `cluster`. */
export interface ClusterView {
  name: string;
  etcd: { endpoints: string[]; prefix: string; reachable: boolean; last_error?: string; metadata_revision: number; metadata_live: boolean };
  node: { name: string; state: MembershipState; lease: string | null; lease_ttl: number; lease_remaining_ms: number; registrations: number };
  nodes: Array<{
    name: string;
    id: string | null;
    state: string | null;
    client_urls: string[];
    route_url: string | null;
    kafka: string | null;
    http: string | null;
    tags: string[];
    load: NodeLoad | null;
    lease: string;
    self: boolean;
    error?: string;
  }>;
}

/** Where a cluster's keys live: `<prefix>/<cluster>/`. */
export function clusterRoot(prefix: string, clusterName: string): string {
  return `${prefix.replace(/\/+$/, "")}/${clusterName}/`;
}

export class ClusterNode {
  /** Where streams and partitions live (placement.ts). */
  readonly placements: Placements;

  private constructor(
    readonly options: ClusterNodeOptions,
    readonly client: EtcdClient,
    readonly membership: Membership,
    readonly metadata: MetadataStore,
  ) {
    this.placements = new Placements(metadata, membership, options.serverName, options.clusterName);
  }

  /**
   * Connects, reads the members and the metadata, and registers. Waits at
   * most the dial and request timeouts for etcd, plus one lease TTL for a
   * name still held by a node that stopped without leaving; then fails
   * with why, having started nothing.
   */
  static async start(o: ClusterNodeOptions): Promise<ClusterNode> {
    const client = new EtcdClient({ endpoints: o.etcd.endpoints, tls: o.etcd.tls, dialTimeoutMs: o.etcd.dialTimeoutMs, requestTimeoutMs: o.etcd.requestTimeoutMs });
    const root = clusterRoot(o.etcd.prefix, o.clusterName);
    const membership = new Membership({
      client,
      nodesPrefix: `${root}nodes/`,
      markerKey: `${root}meta/${REGISTERED_PREFIX}${o.serverName}`,
      name: o.serverName,
      leaseTtlS: o.etcd.leaseTtlS,
      describe: o.describe,
      refreshMs: o.refreshMs,
      log: o.log,
    });
    const metadata = new MetadataStore({ client, metaPrefix: `${root}meta/`, membership, log: o.log });
    const reach = o.etcd.dialTimeoutMs + o.etcd.requestTimeoutMs;
    try {
      await membership.start(o.startTimeoutMs ?? reach + o.etcd.leaseTtlS * 1000, reach);
      await metadata.start(reach);
    } catch (err) {
      membership.stop();
      metadata.close();
      client.close();
      throw err;
    }
    const node = new ClusterNode(o, client, membership, metadata);
    const members = membership.members().map((m) => (m.self ? `${m.name} (this one)` : `${m.name}${m.record !== undefined ? ` (${m.record.client_urls.join(", ")})` : ""}`));
    o.log.info(`cluster ${o.clusterName}: ${members.length} node${members.length === 1 ? "" : "s"}: ${members.join(", ")}`);
    node.logChanges();
    return node;
  }

  view(): ClusterView {
    const m = this.membership;
    const c = this.client;
    return {
      name: this.options.clusterName,
      etcd: {
        endpoints: c.endpoints.map((u) => u.origin),
        prefix: clusterRoot(this.options.etcd.prefix, this.options.clusterName),
        reachable: c.reachable,
        ...(c.reachable || c.lastError === undefined ? {} : { last_error: c.lastError.message }),
        metadata_revision: this.metadata.revision,
        metadata_live: this.metadata.live,
      },
      node: { name: this.options.serverName, state: m.state, lease: m.leaseId ?? null, lease_ttl: m.ttlS, lease_remaining_ms: m.leaseRemainingMs(), registrations: m.registrations },
      nodes: m.members().map((x) => ({
        name: x.name,
        id: x.record?.id ?? null,
        state: x.record?.state ?? null,
        client_urls: x.record?.client_urls ?? [],
        route_url: x.record?.route_url ?? null,
        kafka: x.record?.kafka ?? null,
        http: x.record?.http ?? null,
        tags: x.record?.tags ?? [],
        load: x.record?.load ?? null,
        lease: x.lease,
        self: x.self,
        ...(x.error !== undefined ? { error: x.error } : {}),
      })),
    };
  }

  /** Leaves the cluster (revokes the lease: the node's key goes at once) and stops. Safe to call twice. */
  async leave(): Promise<void> {
    await this.membership.leave();
    this.metadata.close();
    this.client.close();
  }

  private logChanges(): void {
    const log = this.options.log;
    this.membership.on("members", (c) => {
      const name = c.key.slice(this.membership.mirror.prefix.length);
      if (name === this.options.serverName) return; // its own registration is logged by membership
      if (c.type === "delete") log.info(`cluster: node ${name} left`);
      else if (c.prev === undefined || c.prev.lease !== c.kv?.lease) {
        let where = "";
        try {
          where = ` (${(JSON.parse(c.kv?.value ?? "") as NodeRecord).client_urls.join(", ")})`;
        } catch {
          // not a record: named without an address
        }
        log.info(`cluster: node ${name} joined${where}`);
      }
    });
  }
}
