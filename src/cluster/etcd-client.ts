/**
 * A client of etcd's v3 API through the JSON gateway every etcd 3.4 serves
 * on its client port (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`,
 * `/v3/watch`), over node:http or node:https: no dependency. Why this and
 * not a gRPC client is in docs/ARCHITECTURE.md ("Cluster"); in short, the
 * `etcd3` package's election helper is reported to elect two leaders after
 * an outage, `@grpc/grpc-js` would mean a dependency plus a hand-written
 * protobuf subset, and everything nagare needs (unary calls, lease
 * keep-alives, a streamed watch, TLS with client certificates) is served
 * by the gateway in JSON.
 *
 * What it guarantees its callers:
 * - every call ends within its time (`requestTimeoutMs`, connecting within
 *   `dialTimeoutMs`), with an `EtcdUnavailableError` when etcd could not
 *   be reached or did not answer, saying whether the request may have been
 *   applied anyway (`maybeApplied`: sent, no answer);
 * - at most `maxInFlight` requests are on the wire and `maxQueued` wait;
 *   past that a call is refused at once rather than queued without end;
 * - an answer larger than `maxResponseBytes`, or a watch message larger
 *   than `maxWatchBytes`, fails the call instead of growing memory;
 * - the client knows whether etcd answered its last request (`reachable`)
 *   and says so on changes ("down", "up"): watches drop a connection etcd
 *   may no longer be behind (a half-open socket sends no FIN) and come
 *   back when etcd does.
 *
 * Keys and values are UTF-8 strings (base64 on the wire, as the gateway
 * wants bytes); lease ids are decimal strings (int64, beyond a double's
 * exact range); revisions are numbers (they stay far below 2^53).
 */

import { EventEmitter } from "node:events";
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { request as httpsRequest, Agent as HttpsAgent } from "node:https";

export interface EtcdTls {
  /** CA certificates the server's certificate must chain to (PEM); default: the system's. */
  ca?: Buffer;
  /** Client certificate and key (PEM), for an etcd with `--client-cert-auth`. */
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdClientOptions {
  /** `http://host:port` or `https://host:port`, all of one scheme. */
  endpoints: string[];
  tls?: EtcdTls;
  /** Most time to open a connection (default 5 s). */
  dialTimeoutMs?: number;
  /** Most time for a whole call, queueing included (default 5 s). */
  requestTimeoutMs?: number;
  maxInFlight?: number;
  maxQueued?: number;
  maxResponseBytes?: number;
  maxWatchBytes?: number;
}

export const ETCD_CLIENT_DEFAULTS = {
  dialTimeoutMs: 5_000,
  requestTimeoutMs: 5_000,
  /** Membership and metadata send a few requests a second at most; 8 sockets leave room for bursts (a resync's pages). */
  maxInFlight: 8,
  maxQueued: 256,
  /** A page of a range is at most RANGE_PAGE keys; etcd's own request limit is 1.5 MiB a value. */
  maxResponseBytes: 32 * 1024 * 1024,
  /** A watch response is cut into fragments of etcd's request limit (1.5 MiB by default); whole, it may be larger. */
  maxWatchBytes: 64 * 1024 * 1024,
} as const;

/** An error etcd answered with (gRPC code and message), or a client-side refusal. */
export class EtcdError extends Error {
  constructor(
    message: string,
    /** The gRPC status code etcd answered with, when it did. */
    readonly code?: number,
  ) {
    super(message);
    this.name = "EtcdError";
  }
}

/**
 * etcd was not reached, did not answer in time, or answered that it cannot
 * serve now (no leader, timed out inside). `maybeApplied`: the request was
 * sent, so a write may have been applied although no answer came.
 */
export class EtcdUnavailableError extends EtcdError {
  constructor(
    message: string,
    readonly maybeApplied: boolean,
    code?: number,
  ) {
    super(message, code);
    this.name = "EtcdUnavailableError";
  }
}

/** gRPC status codes the gateway passes on. */
export const GRPC = { NOT_FOUND: 5, OUT_OF_RANGE: 11, DEADLINE_EXCEEDED: 4, UNAVAILABLE: 14 } as const;

export interface Kv {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** The lease the key is attached to, "0" for none. */
  lease: string;
}

export interface RangeResult {
  /** The store's revision the answer reflects. */
  revision: number;
  kvs: Kv[];
  /** More keys matched than `limit` returned. */
  more: boolean;
  count: number;
}

/** A condition of a transaction: the key's modification revision (0: the key is absent), or its lease. */
export type EtcdCompare = { key: string; modRevision: number } | { key: string; lease: string };

/** An operation of a transaction. */
export type EtcdOp = { put: string; value: string; lease?: string } | { delete: string; prefix?: boolean } | { range: string; prefix?: boolean };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** One per operation of the branch taken: the keys a range found. */
  responses: Array<{ kvs: Kv[] }>;
}

export interface WatchEvent {
  type: "put" | "delete";
  kv: Kv;
}

/**
 * What a watch reports. Exactly one of `canceled` and `ended` ends it,
 * unless the watch is closed first: then nothing more is called.
 */
export interface WatchHandler {
  /** etcd accepted the watch; `revision` is the store's revision then. */
  created(revision: number): void;
  /** Events in revision order; a revision's events always arrive together. */
  events(events: WatchEvent[]): void;
  /** etcd canceled the watch: `compactRevision` > 0 when the start revision was compacted away. */
  canceled(compactRevision: number, reason: string): void;
  /** The stream broke (etcd gone, a connection dropped, a message too large). */
  ended(err: Error): void;
}

export interface EtcdWatch {
  close(): void;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** A page of a full read: small enough to keep an answer well under `maxResponseBytes` with typical values. */
export const RANGE_PAGE = 512;

export class EtcdClient extends EventEmitter<{ down: [Error]; up: [] }> {
  readonly endpoints: readonly URL[];
  readonly dialTimeoutMs: number;
  readonly requestTimeoutMs: number;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  private readonly maxResponseBytes: number;
  private readonly maxWatchBytes: number;
  private readonly secure: boolean;
  private readonly tls: EtcdTls | undefined;
  private readonly agent: HttpAgent;
  private current = 0;
  private inFlight = 0;
  private readonly queue: Waiter[] = [];
  private readonly watches = new Set<ClientRequest>();
  private closed = false;
  /** Whether etcd answered the last request sent (true until one fails). */
  reachable = true;
  /** Why the last request that failed for want of etcd failed. */
  lastError: Error | undefined;
  /** Fragments of watch responses received (put together before delivery). */
  watchFragments = 0;

  constructor(o: EtcdClientOptions) {
    super();
    if (o.endpoints.length === 0) throw new Error("etcd: no endpoints");
    this.endpoints = o.endpoints.map((e) => new URL(e));
    const schemes = new Set(this.endpoints.map((u) => u.protocol));
    if (schemes.size !== 1 || !(schemes.has("http:") || schemes.has("https:"))) throw new Error("etcd: endpoints must all be http:// or all https://");
    this.secure = schemes.has("https:");
    this.tls = o.tls;
    this.dialTimeoutMs = o.dialTimeoutMs ?? ETCD_CLIENT_DEFAULTS.dialTimeoutMs;
    this.requestTimeoutMs = o.requestTimeoutMs ?? ETCD_CLIENT_DEFAULTS.requestTimeoutMs;
    this.maxInFlight = o.maxInFlight ?? ETCD_CLIENT_DEFAULTS.maxInFlight;
    this.maxQueued = o.maxQueued ?? ETCD_CLIENT_DEFAULTS.maxQueued;
    this.maxResponseBytes = o.maxResponseBytes ?? ETCD_CLIENT_DEFAULTS.maxResponseBytes;
    this.maxWatchBytes = o.maxWatchBytes ?? ETCD_CLIENT_DEFAULTS.maxWatchBytes;
    const agentOptions = { keepAlive: true, maxSockets: this.maxInFlight, ...(this.tls ?? {}) };
    this.agent = this.secure ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  }

  /** The endpoint requests go to now (the next one after a failure). */
  get endpoint(): string {
    return this.endpoints[this.current].origin;
  }

  // ---- KV --------------------------------------------------------------

  /**
   * The key, or with `prefix` every key starting with it; `prefix` may also
   * name the prefix whose keys to read from `key` on (the next page of a
   * paged read).
   */
  async range(key: string, o: { prefix?: boolean | string; revision?: number; limit?: number } = {}, timeoutMs?: number): Promise<RangeResult> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (o.prefix !== undefined && o.prefix !== false) body.range_end = prefixEnd(o.prefix === true ? key : o.prefix);
    if (o.revision !== undefined && o.revision > 0) body.revision = String(o.revision);
    if (o.limit !== undefined) body.limit = String(o.limit);
    const r = await this.call<RawRange>("/v3/kv/range", body, timeoutMs);
    return { revision: revisionOf(r), kvs: (r.kvs ?? []).map(kvOf), more: r.more === true, count: int(r.count) };
  }

  async txn(compare: EtcdCompare[], success: EtcdOp[], failure: EtcdOp[] = [], timeoutMs?: number): Promise<TxnResult> {
    const r = await this.call<RawTxn>(
      "/v3/kv/txn",
      { compare: compare.map(compareOf), success: success.map(opOf), failure: failure.map(opOf) },
      timeoutMs,
    );
    return {
      succeeded: r.succeeded === true,
      revision: revisionOf(r),
      responses: (r.responses ?? []).map((x) => ({ kvs: (x.response_range?.kvs ?? []).map(kvOf) })),
    };
  }

  async put(key: string, value: string, lease?: string, timeoutMs?: number): Promise<number> {
    const r = await this.call<{ header?: RawHeader }>("/v3/kv/put", { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) }, timeoutMs);
    return revisionOf(r);
  }

  async delete(key: string, o: { prefix?: boolean } = {}, timeoutMs?: number): Promise<number> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (o.prefix) body.range_end = prefixEnd(key);
    const r = await this.call<{ header?: RawHeader }>("/v3/kv/deleterange", body, timeoutMs);
    return revisionOf(r);
  }

  /** Forgets history up to `revision`: watches that start before it are canceled (tests, operators). */
  async compact(revision: number, timeoutMs?: number): Promise<void> {
    await this.call("/v3/kv/compaction", { revision: String(revision), physical: true }, timeoutMs);
  }

  // ---- leases ----------------------------------------------------------

  /** A new lease; etcd may grant a longer TTL than asked (its minimum follows its election timeout). */
  async leaseGrant(ttlSeconds: number, timeoutMs?: number): Promise<{ id: string; ttl: number }> {
    const r = await this.call<{ ID?: string; TTL?: string; error?: string }>("/v3/lease/grant", { TTL: String(ttlSeconds) }, timeoutMs);
    if (r.error) throw new EtcdError(`etcd: lease grant: ${r.error}`);
    if (!r.ID) throw new EtcdError("etcd: lease grant answered without a lease");
    return { id: r.ID, ttl: int(r.TTL) };
  }

  /**
   * Renews a lease for its whole TTL, which it returns; 0 when etcd does
   * not know the lease (expired or revoked). The gateway's keep-alive is a
   * stream of one request and one answer per call.
   */
  async leaseKeepAlive(id: string, timeoutMs?: number): Promise<number> {
    const r = await this.call<{ result?: { TTL?: string }; error?: RawStreamError }>("/v3/lease/keepalive", { ID: id }, timeoutMs);
    if (r.error) throw streamError(r.error);
    return int(r.result?.TTL);
  }

  /** Revokes a lease, deleting its keys; false when etcd no longer knew it. */
  async leaseRevoke(id: string, timeoutMs?: number): Promise<boolean> {
    try {
      await this.call("/v3/lease/revoke", { ID: id }, timeoutMs);
      return true;
    } catch (err) {
      if (err instanceof EtcdError && err.code === GRPC.NOT_FOUND) return false;
      throw err;
    }
  }

  // ---- watch -----------------------------------------------------------

  /**
   * Watches `key` (or every key under it with `prefix`) from `startRevision`.
   * One HTTP request per watch: the gateway serves HTTP/1.1, where a request
   * body cannot be read while the answer streams, so a watch is created by
   * its one request and lives as long as its answer.
   */
  watch(o: { key: string; prefix?: boolean; startRevision: number }, handler: WatchHandler): EtcdWatch {
    const body = Buffer.from(
      JSON.stringify({
        create_request: {
          key: b64(o.key),
          ...(o.prefix ? { range_end: prefixEnd(o.key) } : {}),
          start_revision: String(o.startRevision),
          // etcd cuts a large response into fragments; they are put together here, so a revision's events stay together.
          fragment: true,
        },
      }),
    );
    let done = false;
    let created = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(createTimer);
      this.watches.delete(req);
      req.destroy();
      f();
    };
    const fail = (err: Error): void => finish(() => handler.ended(err));
    const endpoint = this.endpoints[this.current];
    const req = this.send(endpoint, "/v3/watch", body, false, (err) => {
      if (done) return; // closed or finished here: not etcd's failure
      this.failed(err);
      fail(err);
    });
    this.watches.add(req);
    // A watch etcd does not confirm in time is treated like a failed request.
    const createTimer = setTimeout(() => {
      const err = new EtcdUnavailableError(`etcd at ${endpoint.origin}: watch not confirmed within ${this.requestTimeoutMs} ms`, false);
      this.failed(err);
      fail(err);
    }, this.requestTimeoutMs);
    req.on("response", (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        readBody(res, this.maxResponseBytes, (err, text) => {
          const e = err ?? answerError(endpoint, res.statusCode ?? 0, text);
          if (!(e instanceof EtcdUnavailableError)) this.answered();
          else this.failed(e);
          fail(e);
        });
        return;
      }
      this.answered();
      let fragments: WatchEvent[] | null = null;
      let fragmentBytes = 0;
      const lines = new LineReader(this.maxWatchBytes);
      const onMessage = (line: Buffer): void => {
        let msg: { result?: RawWatchResult; error?: RawStreamError };
        try {
          msg = JSON.parse(line.toString("utf8")) as typeof msg;
        } catch {
          fail(new EtcdError(`etcd at ${endpoint.origin}: watch sent something that is not JSON`));
          return;
        }
        if (msg.error) {
          const e = streamError(msg.error);
          if (e instanceof EtcdUnavailableError) this.failed(e);
          fail(e);
          return;
        }
        const r = msg.result;
        if (r === undefined) return;
        if (r.created === true && !created) {
          created = true;
          clearTimeout(createTimer);
          handler.created(revisionOf(r));
        }
        if (r.canceled === true) {
          finish(() => handler.canceled(int(r.compact_revision), r.cancel_reason ?? ""));
          return;
        }
        if (r.events === undefined || r.events.length === 0) return;
        const events = r.events.map(eventOf);
        if (r.fragment === true) {
          this.watchFragments++;
          fragmentBytes += line.length;
          if (fragmentBytes > this.maxWatchBytes) {
            fail(new EtcdError(`etcd at ${endpoint.origin}: a watch response in fragments exceeds ${this.maxWatchBytes} bytes`));
            return;
          }
          (fragments ??= []).push(...events);
          return;
        }
        const whole = fragments === null ? events : [...fragments, ...events];
        fragments = null;
        fragmentBytes = 0;
        handler.events(whole);
      };
      res.on("data", (chunk: Buffer) => {
        if (done) return;
        const err = lines.push(chunk, onMessage);
        if (err !== null) fail(new EtcdError(`etcd at ${endpoint.origin}: ${err}`));
      });
      res.on("close", () => {
        const err = new EtcdUnavailableError(`etcd at ${endpoint.origin}: watch stream ended`, false);
        if (!done) this.failed(err);
        fail(err);
      });
      res.on("error", () => {}); // "close" follows and reports it
    });
    return {
      close: () => {
        if (done) return;
        done = true;
        clearTimeout(createTimer);
        this.watches.delete(req);
        req.destroy();
      },
    };
  }

  /** Ends every watch and idle connection; calls after this fail. */
  close(): void {
    this.closed = true;
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new EtcdError("etcd client closed"));
    }
    for (const req of [...this.watches]) req.destroy();
    this.watches.clear();
    this.agent.destroy();
  }

  // ---- requests ----------------------------------------------------------

  /** One unary call: waits for a slot (bounded), then sends, all within `timeoutMs`. */
  async call<T>(path: string, body: unknown, timeoutMs = this.requestTimeoutMs): Promise<T> {
    if (this.closed) throw new EtcdError("etcd client closed");
    const deadline = Date.now() + timeoutMs;
    await this.slot(deadline, path);
    try {
      return await this.unary<T>(path, Buffer.from(JSON.stringify(body)), deadline);
    } finally {
      this.release();
    }
  }

  private slot(deadline: number, path: string): Promise<void> {
    if (this.inFlight < this.maxInFlight) {
      this.inFlight++;
      return Promise.resolve();
    }
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(new EtcdError(`etcd client: ${this.queue.length} requests already wait for etcd; ${path} refused`));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new EtcdUnavailableError(`etcd at ${this.endpoint}: ${path} was still waiting behind ${this.maxInFlight} requests when its time ran out`, false));
        }, Math.max(0, deadline - Date.now())),
      };
      this.queue.push(w);
    });
  }

  private release(): void {
    const next = this.queue.shift();
    if (next === undefined) {
      this.inFlight--;
      return;
    }
    clearTimeout(next.timer);
    next.resolve(); // the slot passes on
  }

  private unary<T>(path: string, body: Buffer, deadline: number): Promise<T> {
    const endpoint = this.endpoints[this.current];
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null, value?: T): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== null) {
          req.destroy();
          reject(err);
        } else resolve(value as T);
      };
      const req = this.send(endpoint, path, body, true, (err) => {
        if (settled) return; // the request was ended here (a timeout), which the socket reports as an error too
        this.failed(err);
        settle(err);
      });
      const timer = setTimeout(() => {
        const err = new EtcdUnavailableError(`etcd at ${endpoint.origin}: no answer to ${path} in time`, true);
        this.failed(err);
        settle(err);
      }, Math.max(1, deadline - Date.now()));
      req.on("response", (res: IncomingMessage) => {
        readBody(res, this.maxResponseBytes, (err, text) => {
          if (err !== null) {
            settle(err);
            return;
          }
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            const e = answerError(endpoint, status, text);
            if (e instanceof EtcdUnavailableError) this.failed(e);
            else this.answered();
            settle(e);
            return;
          }
          this.answered();
          try {
            settle(null, JSON.parse(text) as T);
          } catch {
            settle(new EtcdError(`etcd at ${endpoint.origin}: ${path} answered something that is not JSON`));
          }
        });
      });
    });
  }

  /**
   * Sends a POST; `onError` gets connection failures as EtcdUnavailableErrors
   * (not applied when the connection never opened).
   */
  private send(endpoint: URL, path: string, body: Buffer, pooled: boolean, onError: (err: EtcdUnavailableError) => void): ClientRequest {
    const options: RequestOptions = {
      method: "POST",
      protocol: endpoint.protocol,
      hostname: endpoint.hostname.replace(/^\[|\]$/g, ""),
      port: endpoint.port,
      path,
      headers: { "content-type": "application/json", "content-length": body.length },
      // A watch has a connection of its own: it holds it as long as it lives.
      agent: pooled ? this.agent : false,
      ...(this.secure && !pooled ? (this.tls ?? {}) : {}),
    };
    const req = this.secure ? httpsRequest(options) : httpRequest(options);
    let connected = false;
    let dialTimer: NodeJS.Timeout | undefined;
    req.on("socket", (socket) => {
      const opened = (): void => {
        connected = true;
        clearTimeout(dialTimer);
      };
      if (!socket.connecting) {
        opened();
        return;
      }
      socket.setKeepAlive(true, 1000);
      dialTimer = setTimeout(() => req.destroy(new Error(`connect: no answer within ${this.dialTimeoutMs} ms`)), this.dialTimeoutMs);
      socket.once(this.secure ? "secureConnect" : "connect", opened);
    });
    req.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(dialTimer);
      onError(new EtcdUnavailableError(`etcd at ${endpoint.origin}: ${err.message}`, connected));
    });
    req.on("close", () => clearTimeout(dialTimer));
    req.end(body);
    return req;
  }

  private answered(): void {
    if (this.reachable) return;
    this.reachable = true;
    this.emit("up");
  }

  private failed(err: Error): void {
    this.lastError = err;
    if (this.endpoints.length > 1) this.current = (this.current + 1) % this.endpoints.length;
    if (!this.reachable) return;
    this.reachable = false;
    this.emit("down", err);
  }
}

// ---- wire shapes -----------------------------------------------------------

interface RawHeader {
  revision?: string;
}
interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}
interface RawRange {
  header?: RawHeader;
  kvs?: RawKv[];
  more?: boolean;
  count?: string;
}
interface RawTxn {
  header?: RawHeader;
  succeeded?: boolean;
  responses?: Array<{ response_range?: { kvs?: RawKv[] } }>;
}
interface RawWatchResult {
  header?: RawHeader;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  fragment?: boolean;
  events?: Array<{ type?: string; kv?: RawKv }>;
}
interface RawStreamError {
  grpc_code?: number;
  http_code?: number;
  message?: string;
}

function b64(s: string): string {
  return Buffer.from(s, "utf8").toString("base64");
}

function unb64(s: string | undefined): string {
  return s === undefined ? "" : Buffer.from(s, "base64").toString("utf8");
}

function int(s: string | number | undefined): number {
  if (s === undefined) return 0;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : 0;
}

function revisionOf(r: { header?: RawHeader }): number {
  return int(r.header?.revision);
}

function kvOf(k: RawKv): Kv {
  return { key: unb64(k.key), value: unb64(k.value), createRevision: int(k.create_revision), modRevision: int(k.mod_revision), version: int(k.version), lease: k.lease ?? "0" };
}

function eventOf(e: { type?: string; kv?: RawKv }): WatchEvent {
  return { type: e.type === "DELETE" ? "delete" : "put", kv: kvOf(e.kv ?? {}) };
}

function compareOf(c: EtcdCompare): Record<string, unknown> {
  if ("lease" in c) return { key: b64(c.key), target: "LEASE", result: "EQUAL", lease: c.lease };
  return { key: b64(c.key), target: "MOD", result: "EQUAL", mod_revision: String(c.modRevision) };
}

function opOf(op: EtcdOp): Record<string, unknown> {
  if ("put" in op) return { request_put: { key: b64(op.put), value: b64(op.value), ...(op.lease ? { lease: op.lease } : {}) } };
  if ("delete" in op) return { request_delete_range: { key: b64(op.delete), ...(op.prefix ? { range_end: prefixEnd(op.delete) } : {}) } };
  return { request_range: { key: b64(op.range), ...(op.prefix ? { range_end: prefixEnd(op.range) } : {}) } };
}

/**
 * The end of the range of keys starting with `prefix`, base64 as the
 * gateway wants it: the prefix up to its last byte below 0xff, that byte
 * plus one (etcd's rule; bytes, since the result need not be UTF-8).
 */
function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = bytes.subarray(0, i + 1);
      end[i]++;
      return end.toString("base64");
    }
  }
  return Buffer.from([0]).toString("base64"); // every key
}

/** A non-200 answer: the gateway's `{ error, code, message }`, or whatever a proxy in front of etcd said. */
function answerError(endpoint: URL, status: number, text: string): EtcdError {
  let code: number | undefined;
  let message = text.trim().slice(0, 200);
  try {
    const j = JSON.parse(text) as { code?: number; message?: string; error?: string };
    code = j.code;
    message = j.message ?? j.error ?? message;
  } catch {
    // not the gateway's JSON: keep the text
  }
  const text2 = `etcd at ${endpoint.origin}: ${message || `HTTP ${status}`}`;
  if (code === GRPC.UNAVAILABLE || code === GRPC.DEADLINE_EXCEEDED || (code === undefined && (status === 503 || status === 504 || status === 502))) {
    return new EtcdUnavailableError(text2, true, code);
  }
  return new EtcdError(text2, code);
}

/** An error inside a streamed answer (watch, keep-alive). */
function streamError(e: RawStreamError): EtcdError {
  const message = `etcd: ${e.message ?? "stream error"}`;
  if (e.grpc_code === GRPC.UNAVAILABLE || e.grpc_code === GRPC.DEADLINE_EXCEEDED) return new EtcdUnavailableError(message, true, e.grpc_code);
  return new EtcdError(message, e.grpc_code);
}

/** Reads a whole answer, failing past `max` bytes. */
function readBody(res: IncomingMessage, max: number, done: (err: Error | null, text: string) => void): void {
  const parts: Buffer[] = [];
  let size = 0;
  let finished = false;
  res.on("data", (chunk: Buffer) => {
    if (finished) return;
    size += chunk.length;
    if (size > max) {
      finished = true;
      res.destroy();
      done(new EtcdError(`etcd: an answer exceeds ${max} bytes`), "");
      return;
    }
    parts.push(chunk);
  });
  res.on("end", () => {
    if (finished) return;
    finished = true;
    done(null, Buffer.concat(parts, size).toString("utf8"));
  });
  res.on("close", () => {
    if (finished) return;
    finished = true;
    done(new EtcdUnavailableError("etcd: the answer was cut off", true), "");
  });
  res.on("error", () => {}); // "close" follows
}

/** Newline-delimited messages from a stream, each at most `max` bytes. */
class LineReader {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(private readonly max: number) {}

  /** Calls `onLine` for each complete line; returns an error text when a line is too long. */
  push(chunk: Buffer, onLine: (line: Buffer) => void): string | null {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      let line: Buffer;
      if (this.size === 0) line = piece;
      else {
        this.parts.push(piece);
        line = Buffer.concat(this.parts, this.size + piece.length);
        this.parts = [];
        this.size = 0;
      }
      if (line.length > this.max) return `a watch message exceeds ${this.max} bytes`;
      if (line.length > 0) onLine(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.size += rest.length;
      if (this.size > this.max) return `a watch message exceeds ${this.max} bytes`;
      this.parts.push(Buffer.from(rest)); // the chunk's memory is not kept beyond this copy
    }
    return null;
  }
}
