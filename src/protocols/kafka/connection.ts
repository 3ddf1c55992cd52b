/**
 * One Kafka client connection: size-prefixed frames in, responses out in
 * request order (Kafka clients match responses by order as well as by
 * correlation id), however long each request takes.
 *
 * Reading stops (the socket is paused) while MAX_IN_FLIGHT requests are
 * unanswered, while the socket does not take our writes (a client that
 * does not read its responses stops being read), or while the door's
 * request budget (`max_queued_request_bytes`: every request frame from when
 * its size is read until it is answered, across connections) is spent, so
 * clients cannot grow our queues without bound. Every response is counted
 * in the door's response budget from when it is built until the kernel has it.
 * A frame that cannot be a request (bad size, unknown API or version,
 * undecodable body) closes the connection, as a Kafka broker does.
 *
 * With `authorization`, a connection is let past ApiVersions and SASL only
 * once authenticated (sasl.ts); its identity's permissions then decide what
 * it may produce and fetch.
 *
 * The connection is one of the broker's: it counts against
 * `max_connections` with NATS clients, shows in /connz and /varz, and is
 * closed by the broker's ticker once idle for `connections_max_idle`.
 */

import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { tlsConnz, type TlsPeerCert } from "../../core/tls-names.js";
import { KafkaDecodeError, Writer } from "./codec.js";
import type { KafkaDoor } from "./door.js";
import type { AccountDoor } from "./account-door.js";
import { API_VERSIONS, ApiKey, isFlexible, type Handler, type RequestContext } from "./api.js";
import { decodeRequestHeader } from "./requests.js";
import type { Connection, ConnectionInfo } from "../../core/broker.js";
import { formatDuration } from "../../util/duration.js";
import { withStop } from "../../core/closed-connections.js";
import { GLOBAL_ACCOUNT, NO_LIMIT, type Account, type AccountMember } from "../../core/account.js";
import type { JwtUser } from "../../core/jwt-auth.js";
import type { Identity, PermissionCheck } from "../../core/auth.js";
import { rawSaslToken, SaslState } from "./sasl.js";
import { readInto } from "../../util/socket-reads.js";

/** Frames below this are allocated as they come: small requests are not worth a pooled buffer. */
const POOLED_FRAME_BYTES = 64 * 1024;

const MAX_IN_FLIGHT = 128;
/** Frames up to this size are read whatever the request budget holds. */
const SMALL_FRAME = 64 * 1024;
/**
 * A frame begun and not continued for this long closes the connection
 * (Kafka's request.timeout.ms): a client that sends a large size and then
 * nothing would otherwise hold the request budget.
 */
const FRAME_STALL_MS = 30_000;
/**
 * Kafka's sasl.server.max.receive.size: before authentication only
 * ApiVersions and the SASL exchange are allowed, and a larger frame closes
 * the connection, so a client without credentials cannot hold the request
 * budget with large frames.
 */
const MAX_PRE_AUTH_FRAME = 524_288;
/**
 * While others wait for the request budget, a frame past SMALL_FRAME that
 * has been arriving for longer than the grace below at less than this rate
 * (a 2 Mbit/s link) closes its connection: one that declares a large size
 * and trickles its bytes would otherwise hold the budget (and stop every
 * other client's large requests) for as long as it keeps the connection
 * alive. An attacker must now send at this rate, and its frames end.
 */
const CONTENDED_MIN_BYTES_PER_S = 256 * 1024;
const CONTENDED_GRACE_MS = 2_000;
const EMPTY = Buffer.alloc(0);

interface Slot {
  done: boolean;
  response: Buffer | null;
}

export class KafkaConnection implements Connection, AccountMember {
  /** The frame being filled from chunks, and how much of it has arrived. */
  private frame: Buffer | null = null;
  private filled = 0;
  /** When the frame being filled had its size read. */
  private frameStartedAt = 0;
  /** A size prefix split across chunks. */
  private readonly sizeBytes = Buffer.alloc(4);
  private sizeLen = 0;
  private readonly backlog: Buffer[] = [];
  /** The size of the next frame, read while the request budget had no room for it. */
  private deferredSize = -1;
  /** Request budget held for the frame being filled. */
  private frameCharge = 0;
  /** A wake-up is armed for when the request budget frees. */
  private waitingForBudget = false;
  private readonly slots: Slot[] = [];
  /**
   * A Fetch not yet answered: nothing more is read until it is, as a Kafka
   * broker reads no request from a connection while one is unanswered. A
   * fetch may wait (max_wait_ms) and any request behind it is answered
   * after it anyway; read ahead, a connection could park up to the
   * pipelining limit of waiting fetches, whose memory no budget counts.
   */
  private fetchInFlight: Slot | null = null;
  private paused = false;
  /** The socket refused more (write returned false) and has not drained yet. */
  private writeBlocked = false;
  /** Bytes queued for the kernel when the ticker last looked (-1: none then), and since when that has not changed. */
  private queuedSeen = -1;
  private queuedSince = 0;
  closed = false;
  clientId: string | null = null;
  /** From ApiVersions v3+: the client library's name and version. */
  clientSoftware: { name: string; version: string } | null = null;
  /** Resolves when the previous produce request of this connection has issued its appends. */
  private produceTail: Promise<void> = Promise.resolve();
  /** This connection's OffsetCommits not yet answered, and a promise of the last one's end (groupTurn). */
  private commitsInFlight = 0;
  private commitTail: Promise<void> = Promise.resolve();
  readonly remote: string;
  readonly cid: number;
  private readonly startedAt = Date.now();
  private lastActivity = this.startedAt;
  /**
   * Bytes of the door's response budget held for this connection: room taken
   * by its fetches in progress and its responses not yet handed to the kernel.
   */
  private responseBytes = 0;
  /** The client's certificates as /connz shows them, read the first time it asks. */
  private readonly tlsPeers: { peers: TlsPeerCert[] | null } = { peers: null };
  /** Who the client proved to be over SASL (or its certificate, with verify_and_map); null before (and always, without authorization). */
  identity: Identity | null = null;
  private readonly ip: string;
  private readonly port: number;
  /** The account it serves (its topics, groups, transactions): the default one without authorization, else its user's, once authenticated. */
  account: AccountDoor | null;
  readonly sasl = new SaslState();
  /** Set once a response that ends the connection is queued: nothing more is read. */
  private ending: string | null = null;
  private ended = false;
  inMsgs = 0;
  outMsgs = 0;
  inBytes = 0;
  outBytes = 0;
  /**
   * Reads land in the door's read buffer (util/socket-reads.ts), which the
   * next read overwrites: what outlives a chunk is copied. Otherwise each
   * read is a Buffer of its own, and frames are views of it.
   */
  readonly sharedReads: boolean;

  constructor(
    readonly door: KafkaDoor,
    readonly socket: Socket,
  ) {
    this.cid = door.broker.allocateCid();
    this.account = door.auth === null ? door.defaultDoor : null;
    // Kept: a socket that is gone has no address any more, and the closed connection's record still shows it.
    this.ip = socket.remoteAddress ?? "";
    this.port = socket.remotePort ?? 0;
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    this.sharedReads = readInto(
      socket,
      door.readBuffer,
      (chunk) => this.onData(chunk),
      () => this.readTarget(),
    );
    if (!this.sharedReads) socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
    socket.on("drain", () => {
      this.writeBlocked = false;
      this.resumeReading();
    });
    door.broker.register(this);
  }

  /** Records stored from this connection's produce requests (NATS's "in" messages). */
  countIn(msgs: number, bytes: number): void {
    this.inMsgs += msgs;
    this.inBytes += bytes;
    const stats = this.door.broker.stats;
    stats.inMsgs += msgs;
    stats.inBytes += bytes;
  }

  /** Records sent in fetch responses. */
  countOut(msgs: number, bytes: number): void {
    this.outMsgs += msgs;
    this.outBytes += bytes;
    const stats = this.door.broker.stats;
    stats.outMsgs += msgs;
    stats.outBytes += bytes;
  }

  /**
   * Takes room for a response of up to `want` bytes without waiting: what
   * this connection may still hold (`fetch_max_bytes`, less what its other
   * responses hold) and the door's response budget has free. The request
   * holds it (`ctx.held`) until its response is written.
   */
  takeResponseRoom(ctx: RequestContext, want: number): number {
    const share = this.door.options.fetchMaxBytes - this.responseBytes;
    const got = this.door.responses.takeUpTo(Math.min(want, share));
    ctx.held += got;
    this.responseBytes += got;
    return got;
  }

  /** Adjusts the room a request holds by `delta` bytes (more is counted whatever the budget says: it is built already). */
  adjustResponseRoom(ctx: RequestContext, delta: number): void {
    if (delta > 0) this.door.responses.charge(delta);
    else this.door.responses.give(-delta);
    ctx.held += delta;
    this.responseBytes += delta;
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

  /**
   * Kafka reads a connection's next request only once the last is answered,
   * and clients count on it: a commit sent right before a LeaveGroup, a
   * JoinGroup or an OffsetFetch is judged, stored and seen before them. Here
   * requests run side by side, so a group request first waits for this: the
   * end of the connection's OffsetCommits not yet answered, null when none is.
   * Bounded: a commit not stored within offsets_commit_timeout is answered
   * REQUEST_TIMED_OUT (group-api.ts), as Kafka's offsets.commit.timeout.ms.
   */
  earlierCommits(): Promise<void> | null {
    return this.commitsInFlight > 0 ? this.commitTail : null;
  }

  /** An OffsetCommit's place in that order: `ready` is earlierCommits(); call `done` once it is answered. */
  takeCommitTurn(): { ready: Promise<void> | null; done: () => void } {
    const ready = this.earlierCommits();
    this.commitsInFlight++;
    let resolve!: () => void;
    this.commitTail = new Promise<void>((r) => (resolve = r));
    return {
      ready,
      done: () => {
        this.commitsInFlight--;
        resolve();
      },
    };
  }

  /** What this connection's user may do: null when everything (no authorization, or a user without permissions). */
  get permissions(): PermissionCheck | null {
    return this.identity?.permissions ?? null;
  }

  /**
   * Closes the connection once the responses queued so far are written, and
   * reads nothing more meanwhile: a Kafka broker answers a failed SASL step,
   * then closes.
   */
  endAfterResponses(reason: string): void {
    if (this.ending !== null || this.closed) return;
    this.ending = reason;
    this.paused = true;
    this.socket.pause();
    this.backlog.length = 0;
  }

  /** The address the client reached us on: what Metadata advertises when no host is configured. */
  get localHost(): string {
    return this.socket.localAddress ?? "127.0.0.1";
  }

  // ---- AccountMember: an authenticated client counts in its account, as nats-server counts every kind of client ----

  /** The account it counts in once authenticated (joinAccount), until it closes. */
  private member: Account | null = null;

  /**
   * Counts the connection in account `name`'s connections, unless that
   * takes them past the account's limit (a JWT's `conn`): false then. A
   * NATS client past the limit is refused; before, Kafka clients were never
   * counted, so an account of `conn: 1` opened as many as it liked (and
   * revocations and account removals did not reach them).
   */
  joinAccount(name: string): boolean {
    const account = this.door.broker.account(name);
    const max = account.limits.maxConnections;
    if (max !== NO_LIMIT && account.members.size >= max) return false;
    account.members.add(this);
    this.member = account;
    return true;
  }

  get connectedAt(): number {
    return this.startedAt;
  }

  get jwtUser(): JwtUser | null {
    return this.identity?.jwt ?? null;
  }

  /** Limits are read where they apply (payloadLimit at each produce); a Kafka client has no subscriptions. */
  applyLimits(): void {}

  /**
   * The largest record it may produce: the server's `max_payload`, or less
   * where its user's or account's JWT says so, as for a NATS client's
   * publishes (nats-server applies them to every kind of client).
   */
  payloadLimit(server: number): number {
    const user = this.identity?.limits?.maxPayload ?? NO_LIMIT;
    const account = this.member?.limits.maxPayload ?? NO_LIMIT;
    let max = server;
    if (user !== NO_LIMIT && user < max) max = user;
    if (account !== NO_LIMIT && account < max) max = account;
    return max;
  }

  evict(_text: string | null, reason: string): void {
    this.close(reason);
  }

  /** Closes the connection; no reason: the client closed it (or its socket failed). */
  close(reason?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.member?.members.delete(this);
    this.member = null;
    if (reason) this.door.log.debug(`kafka ${this.remote}: closing: ${reason}`);
    const ring = this.door.broker.closed;
    if (ring.capacity > 0) {
      // Monitoring's record must not stop the close.
      try {
        const now = Date.now();
        const info = this.info(now);
        delete info.tls_peer_certs;
        ring.add({ info: withStop(info, new Date(now).toISOString(), reason ?? "Client Closed"), account: this.identity?.account ?? GLOBAL_ACCOUNT, subscriptions: [], rttNs: 0, stopMs: now });
      } catch (err) {
        this.door.log.warn(`kafka ${this.remote}: closed connection not recorded for /connz: ${(err as Error).message}`);
      }
    }
    this.slots.length = 0;
    this.backlog.length = 0;
    this.frame = null;
    this.door.requests.give(this.frameCharge);
    this.frameCharge = 0;
    this.deferredSize = -1;
    this.socket.destroy();
    // Unwritten responses die with the socket; requests still running give their room back as they end.
    this.door.responses.give(this.unwritten);
    this.responseBytes -= this.unwritten;
    this.unwritten = 0;
    this.door.connections.delete(this);
    this.door.broker.unregister(this);
  }

  /** Bytes of built responses not yet handed to the kernel. */
  private unwritten = 0;

  /** Whether the frame being filled holds request budget while arriving slower than a client that means to send it would. */
  tricklingFrame(now: number): boolean {
    if (this.frame === null || this.frameCharge <= SMALL_FRAME) return false;
    const elapsed = now - this.frameStartedAt;
    return elapsed > CONTENDED_GRACE_MS && (this.filled * 1000) / elapsed < CONTENDED_MIN_BYTES_PER_S;
  }

  // ---- Connection (the broker's view) ----

  /** Responses are written as they complete, not on the broker's flush schedule. */
  flushOutbound(): void {}

  /**
   * Kafka's connections.max.idle.ms: no request in flight and nothing read or written for that long. And the server's
   * write_deadline, while the door's response budget is contended (a fetch waits for room, or got less than it asked
   * within the deadline): responses of which the kernel has taken not a byte for that long end the connection. Its unwritten responses hold room in that budget, which every
   * consumer shares: a few connections that stop reading would otherwise keep it full, and every other consumer's fetch
   * answered empty, for as long as they stay (an outside test). Kafka sends from the page cache and holds no such
   * memory, so it never closes a client that stops reading for a while (a Java consumer under backpressure, say): nor
   * does nagare while nobody needs the room. Progress is what the kernel takes, and it takes more only once about a third
   * of its send buffer has drained (Linux's write wakeup; over TLS, whole responses): a client reading slower than that
   * per write_deadline cannot be told from one that stopped (an outside test: 16 KB/s against a 4 MB buffer).
   */
  tick(now: number): void {
    if (this.frame !== null && now - this.lastActivity >= FRAME_STALL_MS) return this.close(`request frame stalled for ${now - this.lastActivity} ms`);
    // Handed to the socket and not yet to the kernel: the stream's queue, and libuv's (which shrinks as the kernel takes a
    // large response piece by piece). A response still waiting for an earlier request's is not the client's to take.
    const queued = this.socket.writableLength + ((this.socket as Socket & { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0);
    if (queued > 0) {
      if (queued !== this.queuedSeen) {
        this.queuedSeen = queued;
        this.queuedSince = now;
      } else if (now - this.queuedSince >= this.door.broker.options.writeDeadline && this.door.responses.contended(now, this.door.broker.options.writeDeadline)) {
        return this.close(`write deadline: the client took none of its ${this.unwritten} bytes of responses for ${now - this.queuedSince} ms`);
      }
    } else this.queuedSeen = -1;
    const idle = this.door.options.connectionsMaxIdleMs;
    if (idle > 0 && this.slots.length === 0 && now - this.lastActivity >= idle) this.close(`idle for ${now - this.lastActivity} ms`);
  }

  info(now: number): ConnectionInfo {
    const i: ConnectionInfo = {
      cid: this.cid,
      kind: "Client",
      type: "kafka",
      ip: this.ip,
      port: this.port,
      start: new Date(this.startedAt).toISOString(),
      last_activity: new Date(this.lastActivity).toISOString(),
      uptime: formatDuration(now - this.startedAt),
      idle: formatDuration(now - this.lastActivity),
      pending_bytes: this.unwritten,
      in_msgs: this.inMsgs,
      out_msgs: this.outMsgs,
      in_bytes: this.inBytes,
      out_bytes: this.outBytes,
      subscriptions: 0,
    };
    if (this.clientId) i.name = this.clientId;
    if (this.identity !== null && this.identity.name !== "") i.authorized_user = this.identity.name;
    // As a NATS client's entry: the account, where clients authenticate.
    if (this.door.auth !== null && this.identity !== null) i.account = this.identity.account;
    if (this.clientSoftware) {
      i.lang = this.clientSoftware.name;
      i.version = this.clientSoftware.version;
    }
    if (this.door.options.tls !== null) Object.assign(i, tlsConnz(this.socket as TLSSocket, this.tlsPeers));
    return i;
  }

  /** Kafka has no way to tell a client the broker is going: it reconnects when closed. */
  notifyLameDuck(): void {}

  /**
   * Frames are cut from the socket's chunks with at most one copy: a frame
   * across chunks is copied once into a buffer of its exact size, from the
   * door's pool when it is produce-sized; a frame inside one chunk is a view
   * of it when every read has a buffer of its own, else copied likewise.
   * Handlers may keep views of a frame past their call unless they release it.
   */
  private onData(chunk: Buffer): void {
    if (this.closed || this.ending !== null) return;
    this.lastActivity = Date.now();
    if (this.paused) this.backlog.push(this.kept(chunk));
    else this.consume(chunk);
  }

  /**
   * Where the next read lands: the rest of the frame being filled, so that
   * a large request is read into its frame rather than copied there, else
   * the door's read buffer. A frame so targeted is dropped, never pooled,
   * if the connection closes before it is full.
   */
  private readTarget(): Buffer {
    const f = this.frame;
    return f !== null && this.filled < f.length ? f.subarray(this.filled) : this.door.readBuffer;
  }

  /** `bytes` in a buffer of their own if the chunk they are in will be overwritten. */
  private kept(bytes: Buffer): Buffer {
    return this.sharedReads ? Buffer.from(bytes) : bytes;
  }

  /** Cuts frames from `chunk`; keeps what follows in the backlog once reading must stop. */
  private consume(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length || this.deferredSize >= 0) {
      if (this.frame === null) {
        let size: number;
        if (this.deferredSize >= 0) {
          size = this.deferredSize;
          this.deferredSize = -1;
        } else if (this.sizeLen === 0 && chunk.length - at >= 4) {
          size = chunk.readInt32BE(at);
          at += 4;
        } else {
          while (this.sizeLen < 4 && at < chunk.length) this.sizeBytes[this.sizeLen++] = chunk[at++];
          if (this.sizeLen < 4) return;
          this.sizeLen = 0;
          size = this.sizeBytes.readInt32BE(0);
        }
        // A bare SASL token (after a v0 handshake) may be shorter than any request header.
        if (size < (this.sasl.raw ? 1 : 8) || size > this.door.maxRequestBytes) {
          return this.close(`frame of ${size} bytes (limit ${this.door.maxRequestBytes})`);
        }
        if (this.account === null && size > MAX_PRE_AUTH_FRAME) {
          return this.close(`frame of ${size} bytes before authentication (limit ${MAX_PRE_AUTH_FRAME})`);
        }
        // A frame is counted from now until it is answered; with no room, reading waits (one frame always
        // fits). Small frames do not wait: a budget held by large ones must not stop a Metadata or a commit.
        const budget = this.door.requests;
        if (size > SMALL_FRAME && budget.used > 0 && budget.used + size > budget.limit) {
          this.deferredSize = size;
          this.stopReading(chunk, at);
          return;
        }
        budget.charge(size);
        if (chunk.length - at >= size) {
          if (!this.sharedReads) this.request(chunk.subarray(at, at + size), false, size);
          else if (size >= POOLED_FRAME_BYTES) {
            const frame = this.door.frames.take(size);
            chunk.copy(frame, 0, at, at + size);
            this.request(frame, true, size);
          } else this.request(Buffer.from(chunk.subarray(at, at + size)), false, size);
          at += size;
        } else {
          this.frame = size >= POOLED_FRAME_BYTES ? this.door.frames.take(size) : Buffer.allocUnsafe(size);
          this.frameCharge = size;
          this.frameStartedAt = Date.now();
          this.filled = chunk.copy(this.frame, 0, at);
          return;
        }
      } else {
        // Read straight into the frame (readTarget): nothing to copy.
        const inPlace = chunk.buffer === this.frame.buffer && chunk.byteOffset + at === this.frame.byteOffset + this.filled;
        const n = inPlace ? Math.min(chunk.length - at, this.frame.length - this.filled) : chunk.copy(this.frame, this.filled, at);
        at += n;
        this.filled += n;
        if (this.filled < this.frame.length) return;
        const frame = this.frame;
        this.frame = null;
        this.frameCharge = 0;
        this.request(frame, frame.length >= POOLED_FRAME_BYTES, frame.length);
      }
      if (this.closed || this.ending !== null) return;
      if (this.slots.length >= MAX_IN_FLIGHT || this.writeBlocked || this.fetchInFlight !== null) {
        this.stopReading(chunk, at);
        return;
      }
    }
  }

  /** Pauses the socket, keeping the rest of `chunk` for when reading resumes. */
  private stopReading(chunk: Buffer, at: number): void {
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    if (at < chunk.length) this.backlog.unshift(this.kept(chunk.subarray(at)));
    if (this.deferredSize >= 0) this.awaitBudget();
  }

  private awaitBudget(): void {
    this.door.reclaimTrickledFrames(this);
    if (this.waitingForBudget) return;
    this.waitingForBudget = true;
    void this.door.requests.released(1000).then(() => {
      this.waitingForBudget = false;
      this.resumeReading();
    });
  }

  /** Reads again once responses have drained to half the pipelining limit, the socket takes writes, and a deferred frame fits the budget. */
  private resumeReading(): void {
    if (!this.paused || this.closed || this.ending !== null || this.writeBlocked || this.fetchInFlight !== null || this.slots.length >= MAX_IN_FLIGHT / 2) return;
    const budget = this.door.requests;
    if (this.deferredSize >= 0 && budget.used > 0 && budget.used + this.deferredSize > budget.limit) return this.awaitBudget();
    this.paused = false;
    if (this.deferredSize >= 0) this.consume(EMPTY);
    // Chunks read before the pause took hold; the socket's own buffer bounds them.
    while (this.backlog.length > 0 && !this.paused && !this.closed) this.consume(this.backlog.shift()!);
    if (!this.paused && !this.closed) this.socket.resume();
  }

  /** `pooled`: the frame came from the door's pool, and the handler may give it back. */
  /** `charged`: the request budget it holds, given back when it is answered (or dropped). */
  private request(frame: Buffer, pooled: boolean, charged: number): void {
    let given = false;
    const giveBack = (): void => {
      if (given) return;
      given = true;
      this.door.requests.give(charged);
    };
    try {
      this.handle(frame, pooled, giveBack);
    } catch (err) {
      giveBack();
      throw err;
    }
  }

  private handle(frame: Buffer, pooled: boolean, giveBack: () => void): void {
    if (this.sasl.raw) return this.rawToken(frame, pooled, giveBack);
    let header;
    try {
      header = decodeRequestHeader(frame);
    } catch (err) {
      giveBack();
      if (err instanceof KafkaDecodeError) return this.close(`request header: ${err.message}`);
      throw err;
    }
    const { apiKey, version, correlationId, supported, r } = header;
    const handler = this.door.handlers.get(apiKey);
    if (!API_VERSIONS.has(apiKey) || handler === undefined) {
      giveBack();
      return this.close(`unknown API key ${apiKey}`);
    }
    if (!supported && apiKey !== ApiKey.ApiVersions) {
      giveBack();
      return this.close(`API ${apiKey} version ${version} is not supported`);
    }
    // Kafka's SASL listener: before authentication, only ApiVersions and the SASL exchange; after it, the user's account.
    if (this.account === null && apiKey !== ApiKey.ApiVersions && apiKey !== ApiKey.SaslHandshake && apiKey !== ApiKey.SaslAuthenticate) {
      giveBack();
      return this.close(this.door.auth !== null ? `API ${apiKey} before SASL authentication` : `API ${apiKey}: the default account has no JetStream`);
    }
    // Operator mode: a user revoked, expired or of an account gone since SASL is served nothing more (nats-server closes
    // such NATS clients when the claims change; before, a Kafka client went on with the revoked JWT's permissions).
    const jwtUser = this.identity?.jwt;
    if (jwtUser !== undefined && this.door.auth?.stillValid !== undefined && this.identity !== null) {
      const why = this.door.auth.stillValid(this.identity, Date.now());
      if (why !== null) {
        giveBack();
        return this.close(why);
      }
    }
    if (supported) this.clientId = header.clientId;
    const flexible = supported && isFlexible(apiKey, version);
    const w = new Writer(128);
    const sizeAt = w.reserveI32();
    w.i32(correlationId);
    // ApiVersions answers with response header v0 whatever its version, so that any client can read it.
    if (flexible && apiKey !== ApiKey.ApiVersions) w.tags();
    w.flexible = flexible;
    let given = false;
    // Once only: a frame given back twice would serve two requests at once.
    const releaseFrame = pooled
      ? () => {
          if (given) return;
          given = true;
          this.door.frames.give(frame);
        }
      : null;
    const ctx: RequestContext = { conn: this, version, supported, flexible, r, w, releaseFrame, held: 0 };
    let pending: Promise<boolean> | boolean;
    try {
      pending = handler(ctx);
    } catch (err) {
      this.adjustResponseRoom(ctx, -ctx.held);
      giveBack();
      if (err instanceof KafkaDecodeError) return this.close(`API ${apiKey} v${version}: ${err.message}`);
      throw err;
    }
    const slot: Slot = { done: false, response: null };
    this.slots.push(slot);
    if (apiKey === ApiKey.Fetch && typeof pending !== "boolean") this.fetchInFlight = slot;
    const finish = (respond: boolean): void => {
      slot.done = true;
      giveBack();
      if (this.closed || !respond) {
        this.adjustResponseRoom(ctx, -ctx.held);
      } else {
        w.patchI32(sizeAt, w.pos - 4);
        const response = w.result();
        slot.response = response;
        // From here the response itself is what holds the room.
        this.adjustResponseRoom(ctx, response.length - ctx.held);
        this.unwritten += response.length;
      }
      // Without a response to wait for, the next request may be read now.
      if (this.fetchInFlight === slot && slot.response === null) this.fetchInFlight = null;
      this.flush();
    };
    if (typeof pending === "boolean") finish(pending);
    else {
      pending.then(finish, (err: unknown) => {
        giveBack();
        this.adjustResponseRoom(ctx, -ctx.held);
        if (err instanceof KafkaDecodeError) this.close(`API ${apiKey} v${version}: ${err.message}`);
        else {
          this.door.log.error(`kafka API ${apiKey} v${version} failed: ${(err as Error).stack ?? err}`);
          this.close("internal error");
        }
      });
    }
  }

  /** A bare SASL token: answered with a bare frame in its turn; a failed exchange closes the connection. */
  private rawToken(frame: Buffer, pooled: boolean, giveBack: () => void): void {
    const token = Buffer.from(frame);
    if (pooled) this.door.frames.give(frame);
    const slot: Slot = { done: false, response: null };
    this.slots.push(slot);
    rawSaslToken(this.door, this, token).then(
      (reply) => {
        giveBack();
        if (this.closed) return;
        if (reply === null) return this.close("SASL authentication failed");
        const response = Buffer.allocUnsafe(4 + reply.length);
        response.writeInt32BE(reply.length, 0);
        reply.copy(response, 4);
        slot.done = true;
        slot.response = response;
        this.door.responses.charge(response.length);
        this.responseBytes += response.length;
        this.unwritten += response.length;
        this.flush();
      },
      (err: unknown) => {
        giveBack();
        this.door.log.error(`kafka SASL token failed: ${(err as Error).stack ?? err}`);
        this.close("internal error");
      },
    );
  }

  private flush(): void {
    if (this.closed) return;
    let n = 0;
    while (n < this.slots.length && this.slots[n].done) {
      const res = this.slots[n].response;
      if (res !== null) {
        const size = res.length;
        // A fetch's next request is read once its answer is sent, as Kafka unmutes a connection: read any sooner, a
        // fetch finds the room its predecessor's answer still holds and is answered at once instead of waiting.
        const onWritten = this.slots[n] === this.fetchInFlight ? () => this.fetchSent(size) : () => this.written(size);
        if (!this.socket.write(res, onWritten)) this.writeBlocked = true;
      }
      n++;
    }
    if (n > 0) this.slots.splice(0, n);
    if (this.ending !== null && this.slots.length === 0 && !this.ended) {
      this.ended = true;
      const reason = this.ending;
      // Once the kernel has the last response; a client that never reads it does not hold the socket.
      this.socket.end(() => this.close(reason));
      setTimeout(() => this.close(reason), 1000).unref();
      return;
    }
    this.resumeReading();
  }

  private fetchSent(size: number): void {
    this.written(size);
    this.fetchInFlight = null;
    this.resumeReading();
  }

  /** The kernel has a response: its room goes back to the door. */
  private written(size: number): void {
    if (this.closed) return; // close() gave back everything unwritten
    this.lastActivity = Date.now();
    this.unwritten -= size;
    this.responseBytes -= size;
    this.door.responses.give(size);
  }
}

export type { Handler };
