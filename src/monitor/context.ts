/**
 * What every monitoring endpoint reads from, and what it hands back. The
 * endpoints only read: nothing here changes the broker or the streams.
 */

import type { Broker } from "../core/broker.js";
import type { ClusterView } from "../cluster/node.js";
import type { JetStreams } from "../streams/jetstreams.js";
import type { CpuSampler } from "./varz.js";

export interface MonitorContext {
  readonly broker: Broker;
  /** Every account's streams, when JetStream is enabled. */
  readonly jetstreams: JetStreams | undefined;
  /** Process CPU sampled between /varz requests, as nats-server's `cpu`. */
  readonly cpu: CpuSampler;
  /** The cluster as this node sees it, when it is a node of one (read from memory, never from etcd). */
  readonly cluster?: () => ClusterView | undefined;
}

/** An endpoint's answer: JSON (nats-server's shapes) or text (Prometheus, query errors). */
export type Reply = { status: number; json: unknown; compact?: boolean } | { status: number; text: string; contentType: string };

/** Indented, as nats-server writes its endpoints; `compact` as it writes /healthz (probes grep for `"status":"ok"`). */
export function json(body: unknown, status = 200, compact = false): Reply {
  return { status, json: body, compact };
}
