/**
 * The smallest Kafka client the CLI needs: one TCP connection to one broker,
 * requests framed with request header v1 (v2, with its tagged fields, for
 * the few APIs that are flexible from their first version, such as the
 * partition reassignments), responses matched by correlation id. On connect it asks ApiVersions (v0, which every broker
 * answers), so that a version the broker lacks is reported by name instead
 * of the broker closing the connection on us.
 *
 * Everything goes to the bootstrap broker: nagare is a one-node cluster,
 * which is leader and group coordinator of everything. A multi-broker Kafka
 * would answer NOT_LEADER_OR_FOLLOWER or NOT_COORDINATOR, which the
 * commands report.
 */

import { connect as tcpConnect, type Socket } from "node:net";
import { Reader, Writer } from "../protocols/kafka/codec.js";
import { ApiKey, isFlexible } from "../protocols/kafka/api.js";

export const DEFAULT_BOOTSTRAP = "127.0.0.1:9092";
/** A response larger than this is refused rather than buffered (Kafka's default socket.request.max.bytes). */
export const MAX_RESPONSE_BYTES = 100 * 1024 * 1024;
/** For the TCP connect and then for the ApiVersions answer: a port that is not Kafka is found out within this. */
export const CONNECT_TIMEOUT_MS = 5_000;
/** Kafka's own request.timeout.ms default. */
export const REQUEST_TIMEOUT_MS = 30_000;
const CLIENT_ID = "nagare-cli";

/** A failure of the connection or of the protocol, as opposed to an error code the broker answered with. */
export class KafkaClientError extends Error {}

const API_NAMES = new Map<number, string>(Object.entries(ApiKey).map(([name, key]) => [key, name]));
const apiName = (key: number): string => API_NAMES.get(key) ?? `API ${key}`;

/** `host:port` or `[ipv6]:port`; null when it is neither. */
export function parseAddress(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: m[1] ?? m[2]!, port };
}

interface Pending {
  apiKey: number;
  version: number;
  resolve: (r: Reader) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface KafkaClientOptions {
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  maxResponseBytes?: number;
}

export class KafkaClient {
  private nextCorrelationId = 1;
  private readonly pending = new Map<number, Pending>();
  /** The size prefix of the next frame while fewer than its four bytes have arrived. */
  private head = Buffer.alloc(0);
  /** The frame being filled, allocated once its size is known so large responses are copied once. */
  private frame: Buffer | null = null;
  private filled = 0;
  private failure: Error | null = null;
  private versions = new Map<number, [number, number]>();
  /** The first bytes the broker sent, to show what answered when it was not Kafka. */
  private firstBytes: Buffer | null = null;

  private constructor(
    private readonly socket: Socket,
    readonly address: string,
    private readonly requestTimeoutMs: number,
    private readonly maxResponseBytes: number,
  ) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) => this.fail(new KafkaClientError(`connection to ${address} failed: ${err.code ?? err.message}`)));
    socket.on("close", () => this.fail(null));
  }

  /** Connects to `address` (host:port) and learns the broker's API versions. */
  static async connect(address: string, opts: KafkaClientOptions = {}): Promise<KafkaClient> {
    const target = parseAddress(address);
    if (target === null) throw new KafkaClientError(`bad broker address "${address}" (want host:port)`);
    const timeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = tcpConnect(target);
      const unreachable = (why: string): void => {
        clearTimeout(timer);
        s.destroy();
        reject(new KafkaClientError(`cannot reach Kafka listener at ${address}: ${why}`));
      };
      const timer = setTimeout(() => unreachable(`no connection within ${timeoutMs} ms`), timeoutMs);
      s.once("error", (err: NodeJS.ErrnoException) => unreachable(err.code ?? err.message));
      s.once("connect", () => {
        clearTimeout(timer);
        s.removeAllListeners("error");
        resolve(s);
      });
    });
    const client = new KafkaClient(socket, address, opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, opts.maxResponseBytes ?? MAX_RESPONSE_BYTES);
    try {
      await client.learnVersions(timeoutMs);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  private async learnVersions(timeoutMs: number): Promise<void> {
    const r = await this.send(ApiKey.ApiVersions, 0, () => undefined, timeoutMs, ": is it a Kafka listener?");
    const error = r.i16();
    const ranges = r.array((r): [number, [number, number]] => [r.i16(), [r.i16(), r.i16()]]);
    if (error !== 0) throw new KafkaClientError(`${this.address} refused ApiVersions (error ${error}): is it a Kafka listener?`);
    this.versions = new Map(ranges);
  }

  /**
   * Sends one request and resolves to a reader positioned at the response
   * body. `body` writes the request fields after the header.
   */
  request(apiKey: number, version: number, body: (w: Writer) => void): Promise<Reader> {
    const range = this.versions.get(apiKey);
    if (range === undefined || version < range[0] || version > range[1]) {
      const has = range === undefined ? "not at all" : `v${range[0]} to v${range[1]}`;
      return Promise.reject(new KafkaClientError(`the broker at ${this.address} does not support ${apiName(apiKey)} v${version} (it supports it ${has})`));
    }
    return this.send(apiKey, version, body);
  }

  private send(apiKey: number, version: number, body: (w: Writer) => void, timeoutMs = this.requestTimeoutMs, hint = ""): Promise<Reader> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.nextCorrelationId++;
    const w = new Writer();
    const sizeAt = w.reserveI32();
    w.i16(apiKey).i16(version).i32(id).nullableString(CLIENT_ID);
    if (isFlexible(apiKey, version)) w.tags(); // request header v2
    body(w);
    w.patchI32(sizeAt, w.pos - 4);
    return new Promise<Reader>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new KafkaClientError(`no answer from ${this.address} to ${apiName(apiKey)} within ${timeoutMs} ms${hint}`)), timeoutMs);
      this.pending.set(id, { apiKey, version, resolve, reject, timer });
      this.socket.write(w.result());
    });
  }

  private onData(chunk: Buffer): void {
    this.firstBytes ??= chunk.subarray(0, 64);
    let at = 0;
    while (at < chunk.length && this.failure === null) {
      if (this.frame === null) {
        const take = Math.min(4 - this.head.length, chunk.length - at);
        this.head = Buffer.concat([this.head, chunk.subarray(at, at + take)]);
        at += take;
        if (this.head.length < 4) return;
        const size = this.head.readInt32BE(0);
        this.head = Buffer.alloc(0);
        if (size < 4 || size > this.maxResponseBytes) {
          // Text protocols land here: a NATS port's "INFO" or an HTTP port's "HTTP" read as a size are over 1 GB.
          return this.fail(new KafkaClientError(this.notKafka(size)));
        }
        this.frame = Buffer.allocUnsafe(size);
        this.filled = 0;
      }
      const n = Math.min(this.frame.length - this.filled, chunk.length - at);
      chunk.copy(this.frame, this.filled, at, at + n);
      this.filled += n;
      at += n;
      if (this.filled === this.frame.length) {
        const frame = this.frame;
        this.frame = null;
        this.deliver(frame);
      }
    }
  }

  /** What to say about a response whose size cannot be: what answered, if it reads as text. */
  private notKafka(size: number): string {
    const text = (this.firstBytes ?? Buffer.alloc(0)).toString("latin1");
    const line = text.split(/\r?\n/)[0];
    if (/^[\x20-\x7e]{4,}$/.test(line)) return `${this.address} is not a Kafka listener: it answered ${JSON.stringify(line)}`;
    return `response of ${size} bytes from ${this.address} (limit ${this.maxResponseBytes}): is it a Kafka listener?`;
  }

  private deliver(frame: Buffer): void {
    const r = new Reader(frame);
    const id = r.i32(); // response header v0: the correlation id alone
    const p = this.pending.get(id);
    if (p === undefined) return this.fail(new KafkaClientError(`${this.address} answered a request never sent (correlation id ${id})`));
    this.pending.delete(id);
    clearTimeout(p.timer);
    // Response header v1 (tagged fields) for flexible versions; ApiVersions keeps v0 so any client can read it.
    if (p.apiKey !== ApiKey.ApiVersions && isFlexible(p.apiKey, p.version)) {
      try {
        r.tags();
      } catch {
        return this.fail(new KafkaClientError(`${this.address} answered ${apiName(p.apiKey)} with a malformed header`));
      }
    }
    p.resolve(r);
  }

  /** Fails every pending request and closes; `null` means the broker closed the connection. */
  private fail(err: Error | null): void {
    if (this.failure !== null) return;
    this.failure = err ?? new KafkaClientError(`${this.address} closed the connection`);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      // A broker closes the connection on a request it cannot parse: say which one. A listener that requires TLS or SASL
      // closes it too (on the first request, or the first after ApiVersions), and these commands speak neither.
      p.reject(err ?? new KafkaClientError(`${this.address} closed the connection while answering ${apiName(p.apiKey)} v${p.version} (a listener that requires TLS or SASL does so: nagare topic and group speak plaintext Kafka only)`));
    }
    this.pending.clear();
    this.socket.destroy();
  }

  close(): void {
    this.fail(new KafkaClientError("connection closed"));
  }
}
