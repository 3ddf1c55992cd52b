/**
 * One Kafka client connection: size-prefixed frames in, responses out in
 * request order (Kafka clients match responses by order as well as by
 * correlation id), however long each request takes.
 *
 * Requests are pipelined up to MAX_IN_FLIGHT; past that the socket is paused
 * until responses drain, so a client cannot grow our queues without bound.
 * A frame that cannot be a request (bad size, unknown API or version,
 * undecodable body) closes the connection, as a Kafka broker does.
 */

import type { Socket } from "node:net";
import { KafkaDecodeError, Reader, Writer } from "./codec.js";
import type { KafkaDoor } from "./door.js";
import { API_VERSIONS, ApiKey, isFlexible, type Handler } from "./api.js";

const MAX_IN_FLIGHT = 128;
const READ_INITIAL = 64 * 1024;

interface Slot {
  done: boolean;
  response: Buffer | null;
}

export class KafkaConnection {
  private buf = Buffer.allocUnsafe(READ_INITIAL);
  private len = 0;
  private readonly slots: Slot[] = [];
  private paused = false;
  closed = false;
  clientId: string | null = null;
  /** Resolves when the previous produce request of this connection has issued its appends. */
  private produceTail: Promise<void> = Promise.resolve();
  readonly remote: string;

  constructor(
    readonly door: KafkaDoor,
    readonly socket: Socket,
  ) {
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
  }

  /**
   * A place in this connection's produce order: `ready` resolves once every
   * earlier produce request has issued its appends; call `done` after issuing.
   */
  takeProduceTurn(): { ready: Promise<void>; done: () => void } {
    const ready = this.produceTail;
    let done!: () => void;
    this.produceTail = new Promise<void>((resolve) => (done = resolve));
    return { ready, done };
  }

  /** The address the client reached us on: what Metadata advertises when no host is configured. */
  get localHost(): string {
    return this.socket.localAddress ?? "127.0.0.1";
  }

  close(reason?: string): void {
    if (this.closed) return;
    this.closed = true;
    if (reason) this.door.log.debug(`kafka ${this.remote}: closing: ${reason}`);
    this.slots.length = 0;
    this.socket.destroy();
    this.door.connections.delete(this);
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.len + chunk.length > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + chunk.length));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    chunk.copy(this.buf, this.len);
    this.len += chunk.length;
    this.drain();
  }

  /** Handles the complete frames buffered, while fewer than MAX_IN_FLIGHT responses are owed. */
  private drain(): void {
    let at = 0;
    while (this.len - at >= 4 && this.slots.length < MAX_IN_FLIGHT) {
      const size = this.buf.readInt32BE(at);
      if (size < 8 || size > this.door.maxRequestBytes) {
        return this.close(`frame of ${size} bytes (limit ${this.door.maxRequestBytes})`);
      }
      if (this.len - at - 4 < size) break;
      // The handler may keep views of the frame past this call: give it its own copy.
      const frame = Buffer.from(this.buf.subarray(at + 4, at + 4 + size));
      at += 4 + size;
      this.request(frame);
      if (this.closed) return;
    }
    if (at > 0) {
      this.buf.copy(this.buf, 0, at, this.len);
      this.len -= at;
    }
    if (this.len === 0 && this.buf.length > READ_INITIAL) this.buf = Buffer.allocUnsafe(READ_INITIAL);
    if (this.slots.length >= MAX_IN_FLIGHT && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private request(frame: Buffer): void {
    const r = new Reader(frame);
    const apiKey = r.i16();
    const version = r.i16();
    const correlationId = r.i32();
    const range = API_VERSIONS.get(apiKey);
    const handler = this.door.handlers.get(apiKey);
    if (range === undefined || handler === undefined) return this.close(`unknown API key ${apiKey}`);
    const supported = version >= range[0] && version <= range[1];
    if (!supported && apiKey !== ApiKey.ApiVersions) return this.close(`API ${apiKey} version ${version} is not supported`);
    const flexible = supported && isFlexible(apiKey, version);
    const w = new Writer(128);
    const sizeAt = w.reserveI32();
    w.i32(correlationId);
    // ApiVersions answers with response header v0 whatever its version, so that any client can read it.
    if (flexible && apiKey !== ApiKey.ApiVersions) w.tags();
    let pending: Promise<boolean> | boolean;
    try {
      if (supported) {
        this.clientId = r.nullableString();
        if (flexible) r.tags();
      }
      pending = handler({ conn: this, version, supported, flexible, r, w });
    } catch (err) {
      if (err instanceof KafkaDecodeError) return this.close(`API ${apiKey} v${version}: ${err.message}`);
      throw err;
    }
    const slot: Slot = { done: false, response: null };
    this.slots.push(slot);
    const finish = (respond: boolean): void => {
      slot.done = true;
      if (respond) {
        w.patchI32(sizeAt, w.pos - 4);
        slot.response = w.result();
      }
      this.flush();
    };
    if (typeof pending === "boolean") finish(pending);
    else {
      pending.then(finish, (err: unknown) => {
        if (err instanceof KafkaDecodeError) this.close(`API ${apiKey} v${version}: ${err.message}`);
        else {
          this.door.log.error(`kafka API ${apiKey} v${version} failed: ${(err as Error).stack ?? err}`);
          this.close("internal error");
        }
      });
    }
  }

  private flush(): void {
    if (this.closed) return;
    let n = 0;
    while (n < this.slots.length && this.slots[n].done) {
      const res = this.slots[n].response;
      if (res !== null) this.socket.write(res);
      n++;
    }
    if (n > 0) this.slots.splice(0, n);
    if (this.paused && this.slots.length < MAX_IN_FLIGHT / 2) {
      this.paused = false;
      this.drain();
      if (!this.paused && !this.closed) this.socket.resume();
    }
  }
}

export type { Handler };
