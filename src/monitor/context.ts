/**
 * What every monitoring endpoint reads from, and what it hands back. The
 * endpoints only read: nothing here changes the broker or the streams.
 */

import type { Broker } from "../server/broker.js";
import type { CpuSampler } from "./varz.js";

export interface MonitorContext {
  readonly broker: Broker;
  /** Process CPU sampled between /varz requests, as nats-server's `cpu`. */
  readonly cpu: CpuSampler;
}

/** An endpoint's answer: JSON (nats-server's shapes) or text (Prometheus, query errors). */
export type Reply = { status: number; json: unknown } | { status: number; text: string; contentType: string };

export function json(body: unknown, status = 200): Reply {
  return { status, json: body };
}
