/** Small helpers for the cluster tests: bounded waits on promises and events, and a logger that keeps lines. */

import type { EventEmitter } from "node:events";
import type { Logger } from "../../src/util/log.js";
import { ClusterNode } from "../../src/cluster/node.js";
import type { NodeRecord } from "../../src/cluster/membership.js";

/** `p`, or a failure naming `what` after `ms`: every wait in a cluster test is bounded. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** The next `event` of `emitter` (its arguments), within `ms`. */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, ms: number): Promise<T> {
  return within(new Promise<T>((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args as T))), ms, `"${event}"`);
}

/** A logger that keeps its lines (tests look for what was said), printing nothing. */
export function memoryLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (msg: string) => void lines.push(`[${level}] ${msg}`);
  return { lines, info: keep("INF"), warn: keep("WRN"), error: keep("ERR"), debug: keep("DBG"), trace: () => {}, debugEnabled: true, traceEnabled: false };
}

let clusters = 0;

/** A cluster name no other test of this process uses: tests share one etcd and must not see each other's keys. */
export function uniqueCluster(tag: string): string {
  return `${tag}-${process.pid}-${++clusters}`;
}

/** The record a test node publishes; `load` may be changed by the test. */
export function testRecord(name: string, cluster: string, load = { connections: 0, subscriptions: 0, streams: 0, partitions: 0, bytes: 0 }): NodeRecord {
  return { id: `id-${name}`, name, cluster, started: new Date(0).toISOString(), client_urls: [`nats://127.0.0.1:${4000 + name.length}`], route_url: null, kafka: null, http: null, state: "serving", load };
}

export interface TestNode {
  node: ClusterNode;
  log: ReturnType<typeof memoryLog>;
  record: NodeRecord;
}

/** A cluster node in this process, as a server would start it: TTL 2 s (etcd's least), 1 s timeouts. */
export async function startTestNode(endpoint: string, cluster: string, name: string, o: { ttlS?: number; startLimitMs?: number } = {}): Promise<TestNode> {
  const log = memoryLog();
  const record = testRecord(name, cluster);
  const node = await ClusterNode.start({
    clusterName: cluster,
    serverName: name,
    etcd: { endpoints: [endpoint], prefix: "/nagare-test", dialTimeoutMs: 1000, requestTimeoutMs: 1000, leaseTtlS: o.ttlS ?? 2 },
    describe: () => record,
    log,
    ...(o.startLimitMs !== undefined ? { startTimeoutMs: o.startLimitMs } : {}),
  });
  return { node, log, record };
}
