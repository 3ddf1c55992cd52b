/**
 * The two generations of the official NATS client behind one small surface,
 * so every integration scenario runs against both unchanged.
 */

import * as v2 from "nats";
import * as v3 from "@nats-io/transport-node";

export interface Headers {
  set(k: string, v: string): void;
  append(k: string, v: string): void;
  get(k: string): string;
  values(k: string): string[];
}

export interface Msg {
  subject: string;
  data: Uint8Array;
  reply?: string;
  headers?: Headers;
  respond(data?: Uint8Array, opts?: { headers?: Headers }): boolean;
}

export interface Sub {
  unsubscribe(max?: number): void;
  getReceived(): number;
}

export interface Conn {
  publish(subject: string, data?: Uint8Array, opts?: { headers?: Headers; reply?: string }): void;
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: Msg) => void; queue?: string; max?: number }): Sub;
  request(subject: string, data?: Uint8Array, opts?: { timeout: number; headers?: Headers }): Promise<Msg>;
  flush(): Promise<void>;
  drain(): Promise<void>;
  close(): Promise<void>;
  closed(): Promise<void | Error>;
  isClosed(): boolean;
  status(): AsyncIterable<{ type: string }>;
}

export interface ConnectOptions {
  servers: string;
  noEcho?: boolean;
  reconnectTimeWait?: number;
  maxReconnectAttempts?: number;
  name?: string;
}

export interface ClientGeneration {
  name: "v2" | "v3";
  connect(opts: ConnectOptions): Promise<Conn>;
  headers(): Headers;
  isNoResponders(err: unknown): boolean;
  isMaxPayload(err: unknown): boolean;
}

export const generations: ClientGeneration[] = [
  {
    name: "v2",
    connect: async (opts) => (await v2.connect(opts)) as unknown as Conn,
    headers: () => v2.headers() as unknown as Headers,
    isNoResponders: (err) => (err as { code?: string }).code === v2.ErrorCode.NoResponders,
    isMaxPayload: (err) => (err as { code?: string }).code === v2.ErrorCode.MaxPayloadExceeded,
  },
  {
    name: "v3",
    connect: async (opts) => (await v3.connect(opts)) as unknown as Conn,
    headers: () => v3.headers() as unknown as Headers,
    isNoResponders: (err) =>
      err instanceof v3.errors.NoRespondersError ||
      (err instanceof v3.errors.RequestError && err.isNoResponders()),
    isMaxPayload: (err) => err instanceof Error && /max_payload/.test(err.message),
  },
];

/** Polls `check` until it is true, or fails with `what` after `ms`. */
export async function waitUntil(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Fails if `check` turns true within `ms`: what must not happen (a partition holds, a held delivery stays held) holds that long. */
export async function staysFalse(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) throw new Error(`${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  if (check()) throw new Error(what);
}

/** waitUntil for checks that must ask a server (a client call each time), polled without overlap. */
export async function waitUntilAsync(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Publishes `data` to a JetStream stream until acknowledged, with `data` as
 * its message id (a retry after a lost ack is stored once), for up to `ms`
 * of a change of leader: the sequence its ack names.
 */
export async function publishRetrying(js: { publish(subject: string, data: string, opts: { msgID: string; timeout: number }): Promise<{ seq: number }> }, subject: string, data: string, ms = 60_000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return (await js.publish(subject, data, { msgID: data, timeout: 2000 })).seq;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
  }
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * Subscriptions of clients in an account's trie, leaving out the server's
 * own (the system account's answers in every account, the JetStream API):
 * what a leak check counts.
 */
export function clientSubscriptions(account: { sublist: { all(): Iterable<{ receiver: unknown }> } }): number {
  let n = 0;
  for (const s of account.sublist.all()) if (typeof (s.receiver as { cid?: unknown }).cid === "number") n++;
  return n;
}

/** v3 connections a test file opens as it goes, all closed by `closeAll` in its `after`. */
export function v3Clients(): { open(url: string, opts?: v3.ConnectionOptions): Promise<v3.NatsConnection>; closeAll(): Promise<void> } {
  const conns: v3.NatsConnection[] = [];
  return {
    async open(url, opts = {}) {
      const nc = await v3.connect({ ...opts, servers: url });
      conns.push(nc);
      return nc;
    },
    async closeAll() {
      for (const nc of conns.splice(0)) await nc.close().catch(() => undefined);
    },
  };
}

/** The lines a logger's `level` method is called with from now on (each still logged), until `restore()`. */
export function captureLog(log: object, level: "warn" | "error" = "warn"): { lines: string[]; restore(): void } {
  const target = log as Record<string, (line: string) => void>;
  const original = target[level];
  const lines: string[] = [];
  target[level] = (line: string) => {
    lines.push(line);
    original.call(log, line);
  };
  return { lines, restore: () => void (target[level] = original) };
}
