/**
 * One NATS client connection: handshake, operations, delivery framing and
 * the outbound buffer, with the limits nats-server enforces.
 *
 * Deliveries are framed straight into one growable buffer per connection and
 * written once per read (or event-loop turn) by the broker's flush schedule.
 * A flush hands that buffer to the socket and takes another from a pool the
 * written ones return to, so the steady state allocates no buffers.
 */

import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Broker, Connection, ConnectionInfo, Producer } from "../../core/broker.js";
import { CLUSTER_INTERNAL_PREFIX, DOLLAR, NO_LIMIT, type Account, type AccountMember } from "../../core/account.js";
import type { JwtUser } from "../../core/jwt-auth.js";
import { Eviction } from "../../core/operator.js";
import { Message } from "../../subjects/message.js";
import { Subscription, type Receiver } from "../../subjects/subscription.js";
import { isValidPublishSubject, isValidQueueName, isValidSubscribeSubject } from "../../subjects/subject.js";
import { NatsParser, ProtoError, type ParserHandler } from "./parser.js";
import { infoLine } from "./info.js";
import { serveTls, type NatsTls } from "./tls.js";
import { peerCertificate, tlsConnz, type TlsPeerCert } from "../../core/tls-names.js";
import { CertificateMap } from "../../core/tls-map.js";
import { ResponsePermits, type Authenticator, type ClientAuth, type Credentials, type Identity, type PasswordMemo, type PermissionCheck } from "../../core/auth.js";
import { formatDuration, goDuration } from "../../util/duration.js";
import { MAX_CLOSED_RECORD_SUBSCRIPTIONS, withStop, type ClosedConnection } from "../../core/closed-connections.js";
import { goQuote, goQuoteString, redactConnect } from "./trace.js";
import { Outbound } from "../../util/outbound.js";
import { copyInto, writeUint } from "../../util/bytes.js";
import { natsReads, readInto } from "../../util/socket-reads.js";

class NatsSubscription extends Subscription {
  readonly sidBytes: Buffer;
  /** Its subject overlaps the user's subscribe deny list: each message is checked before delivery. */
  denyFiltered = false;
  constructor(receiver: Receiver, subject: string, queue: string | null, readonly sid: string) {
    super(receiver, subject, queue);
    this.sidBytes = Buffer.from(sid);
  }
}

const PONG = Buffer.from("PONG\r\n");
const PING = Buffer.from("PING\r\n");
const OK = Buffer.from("+OK\r\n");
/** The fixed bytes a MSG/HMSG frame adds besides its variable fields: verb, spaces, two sizes, two CRLFs. */
const FRAME_OVERHEAD = 5 + 4 + 22 + 4;
/**
 * A client's reads: the first 64 KiB of the process's read buffer, Node's
 * usual read size and nats-server's largest. A read's messages are all
 * queued for their receivers before a flooded one can pause the publisher
 * (`stall`), so a larger read could put a receiver past max_pending at once.
 */
const clientReads = natsReads.subarray(0, 64 * 1024);
/** Longest a producer is paused for one flooded receiver before it is let go again. */
const STALL_MAX_MS = 100;

export const enum CloseReason {
  Client = "Client Closed",
  SlowPending = "Slow Consumer (Pending Bytes)",
  SlowDeadline = "Slow Consumer (Write Deadline)",
  Stale = "Stale Connection",
  Parse = "Parse Error",
  MaxPayload = "Maximum Message Payload Exceeded",
  ControlLine = "Maximum Control Line Exceeded",
  AuthTimeout = "Authentication Timeout",
  Protocol = "Protocol Violation",
  Shutdown = "Server Shutdown",
  MaxConnections = "Maximum Connections Exceeded",
  ReadError = "Read Error",
  WriteError = "Write Error",
  TlsHandshake = "TLS Handshake Error",
  AuthViolation = "Authentication Failure",
  MaxSubscriptions = "Maximum Subscriptions Exceeded",
  MaxAccountConnections = "Maximum Account Connections Exceeded",
}

export class NatsConnection implements Connection, Receiver, ParserHandler, Producer, AccountMember {
  readonly cid: number;
  echo = true;
  // Other nodes learn of its subscriptions over routes.
  readonly routable = true;
  private verbose = false;
  private pedantic = false;
  /** The last subject this client published to that passed the syntax check (which depends on `pedantic`). */
  private lastValidSubject: string | null = null;
  private headers = false;
  private noResponders = false;
  /** CONNECT said `protocol: 1`: the client takes INFO updates (cluster changes). */
  private infoUpdates = false;
  private connected = false;
  private name = "";
  private lang = "";
  private clientVersion = "";

  private readonly parser: NatsParser;
  private readonly subs = new Map<string, NatsSubscription>();
  private readonly out = new Outbound();
  private closed = false;
  private pingsOut = 0;
  private nextPingAt: number;
  /** When CONNECT must have been accepted by; Infinity while a TLS handshake (with its own timer) is under way. */
  private authDeadline = Infinity;
  /**
   * Fires at authDeadline while no CONNECT has been taken: the shared upkeep tick runs up to once a second, too
   * coarse for an authorization timeout of a fraction of one (nats-server keeps it to the millisecond). Cleared at
   * CONNECT, so idle clients hold no timer.
   */
  private authTimer: NodeJS.Timeout | null = null;
  /** When the socket last refused more data (write returned false); 0 when writable. */
  private blockedSince = 0;
  private readonly startedAt = Date.now();
  /**
   * Round-trip time, as nats-server measures it: first from the accept to
   * CONNECT, then from each PING the server sends to the PONG that answers
   * it (`pingSentAt`, 0 when none is out). Nanoseconds; 0: not measured.
   */
  private rtt = 0;
  private readonly acceptedAt = performance.now();
  private pingSentAt = 0;
  private lastActivity = Date.now();
  private readonly ip: string;
  private readonly port: number;
  /** Pending bytes past which whoever publishes to us is slowed down. */
  private readonly stallAt: number;
  private stalled = false;
  /**
   * Protocol trace (`-V`), read once: when off, every trace site costs this
   * one test and builds nothing. Lines look like nats-server's:
   * `127.0.0.1:51234 - cid:5 - <<- [PUB foo 5]`.
   */
  private readonly tracing: boolean;
  private readonly logPrefix: string;

  inMsgs = 0;
  outMsgs = 0;
  inBytes = 0;
  outBytes = 0;

  /** The client's socket: the TCP socket, or TLS over it (once it is known, with allow_non_tls). */
  private socket: Socket;
  private readonly tls: NatsTls | null;
  /** A client that chose plain NATS where TLS was optional (allow_non_tls). */
  private plain = false;
  /** The client's certificates as /connz shows them, read the first time it asks. */
  private readonly tlsPeers: { peers: TlsPeerCert[] | null } = { peers: null };
  /**
   * Over TLS, Node hands one TCP read to us as several 'data' events of at
   * most 16 KiB (one per pass of its decrypt loop), one after another in the
   * same turn. Flushing after each made up to four writes per receiver per
   * TCP read, and every write queued behind one in progress is copied once
   * more when the TLS socket joins them: a TLS connection's reads flush once
   * the turn's reads are done instead (`Broker.endRead`).
   */
  private deferFlush = false;

  /** The nonce sent in INFO, for NKey users to sign; null when none is needed. */
  private readonly nonce: string | null;
  /** What the authenticated user may do; null: anything. */
  private permissions: PermissionCheck | null = null;
  /** Reply subjects of requests delivered here that the user may answer (`allow_responses`); null without it. */
  private responses: ResponsePermits | null = null;
  /** The authenticated user's name ("" for a token or no authentication). */
  private user = "";
  /** Who the client authenticated as; null without authentication (or before CONNECT). */
  private identity: Identity | null = null;
  /** What CONNECT presented: checked again when a reload changes who may connect (as nats-server keeps its options). */
  private creds: Credentials | null = null;
  /** Counts reloads of authorization: a check a later reload overtook is not applied. */
  private authGeneration = 0;
  /** Subscriptions allowed: the smallest of the server's, the user's and the account's limits (NO_LIMIT: none). */
  private maxSubscriptions: number;
  /** Reads land in the process's shared read buffer (see `attach`); otherwise each is a Buffer of Node's. */
  sharedReads = false;
  /** Reads that arrived while CONNECT was being authenticated, fed once it is done. */
  private held: Buffer[] | null = null;
  private heldBytes = 0;

  constructor(
    private readonly broker: Broker,
    private account: Account,
    tcp: Socket,
    tls: NatsTls | null = null,
    private auth: ClientAuth | null = null,
  ) {
    const opts = broker.options;
    this.cid = broker.allocateCid();
    this.ip = tcp.remoteAddress ?? "";
    this.port = tcp.remotePort ?? 0;
    this.parser = new NatsParser(this, opts.maxControlLine, opts.maxPayload);
    this.stallAt = Math.floor((opts.maxPending * 3) / 4);
    this.nextPingAt = this.startedAt + opts.pingInterval;
    this.maxSubscriptions = opts.maxSubscriptions > 0 ? opts.maxSubscriptions : NO_LIMIT;
    const log = broker.log;
    this.tracing = log.traceEnabled;
    this.logPrefix = log.debugEnabled || log.traceEnabled ? this.clientPrefix() : "";
    if (log.debugEnabled) log.debug(`${this.logPrefix}Client connection created`);
    tcp.setNoDelay(true);
    this.nonce = auth?.wantsNonce === true ? auth.nonce() : null;
    this.tls = tls;
    const info = infoLine(broker, this.cid, this.ip, false, this.nonce);
    this.socket = tcp;
    if (tls === null) {
      this.attach(tcp, true);
      this.startAuthClock();
    } else if (tls.handshakeFirst) {
      this.secure(tcp);
    } else {
      // Clients upgrade after reading INFO in the clear.
      tcp.write(info);
      if (tls.allowNonTls) this.sniff(tcp);
      else this.secure(tcp);
    }
    broker.register(this);
    if (tls === null || tls.handshakeFirst) this.socket.write(info);
  }

  /**
   * The socket's events go to this connection from now on. A plain TCP
   * socket read from its start (`shared`) reads into the process's one read
   * buffer (util/socket-reads.ts): a fresh buffer per read of a publisher
   * was external memory that only a major collection gave back, a quarter
   * of a sending node's CPU at 1 KiB (docs/PERFORMANCE.md, "Cluster"). A
   * read is then valid only while it is parsed: what outlives it is copied
   * (`hold`, and every receiver copies what it keeps).
   */
  private attach(socket: Socket, shared = false): void {
    this.socket = socket;
    this.sharedReads = shared && readInto(socket, clientReads, this.onData);
    if (!this.sharedReads) socket.on("data", this.onData);
    socket.on("error", () => this.close(CloseReason.ReadError));
    socket.on("close", () => this.close(CloseReason.Client));
    socket.on("drain", () => {
      this.blockedSince = 0;
    });
  }

  /** TLS over `tcp`; the CONNECT deadline starts once the handshake is done (nats-server's order: the TLS timeout covers the handshake). */
  private secure(tcp: Socket): void {
    const tls = this.tls!;
    this.authDeadline = Infinity;
    this.clearAuthTimer();
    const secure = serveTls(tcp, tls, (why) => {
      if (this.broker.log.debugEnabled) this.broker.log.debug(`${this.logPrefix}${why}`);
      this.close(CloseReason.TlsHandshake);
    });
    secure.once("secure", () => this.startAuthClock());
    this.attach(secure);
    this.deferFlush = true;
  }

  /**
   * allow_non_tls: the client's first byte says which it speaks, as in
   * nats-server: a TLS handshake record (0x16) gets TLS, anything else plain
   * NATS. Until it speaks, it has the TLS timeout and the CONNECT deadline.
   */
  private sniff(tcp: Socket): void {
    this.authDeadline = this.startedAt + this.tls!.timeoutMs + this.broker.options.authTimeout;
    this.armAuthTimer();
    tcp.on("error", () => this.close(CloseReason.ReadError));
    tcp.on("close", () => this.close(CloseReason.Client));
    tcp.once("data", (first: Buffer) => {
      if (this.closed) return;
      if (first[0] === 0x16) {
        // Given back to the stream: the TLS socket reads what tcp has buffered first.
        tcp.pause();
        tcp.unshift(first);
        this.secure(tcp);
        return;
      }
      this.plain = true;
      this.attach(tcp);
      this.startAuthClock();
      this.onData(first);
    });
  }

  private startAuthClock(): void {
    this.authDeadline = Date.now() + this.broker.options.authTimeout;
    this.armAuthTimer();
  }

  private armAuthTimer(): void {
    this.clearAuthTimer();
    if (this.closed || this.connected || !Number.isFinite(this.authDeadline)) return;
    this.authTimer = setTimeout(() => {
      this.authTimer = null;
      if (!this.closed && !this.connected) this.protocolError("Authentication Timeout", CloseReason.AuthTimeout);
    }, Math.max(0, this.authDeadline - Date.now()));
    this.authTimer.unref();
  }

  private clearAuthTimer(): void {
    if (this.authTimer === null) return;
    clearTimeout(this.authTimer);
    this.authTimer = null;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastActivity = Date.now();
    if (this.held !== null) {
      // CONNECT is being authenticated: nothing after it runs before the answer.
      this.heldBytes += chunk.length;
      if (this.heldBytes > this.broker.options.maxPending) {
        this.protocolError("Authorization Violation", CloseReason.AuthViolation);
        return;
      }
      this.hold(chunk);
      return;
    }
    this.feed(chunk);
  };

  /** Keeps bytes read while CONNECT is being authenticated: a copy, since the read buffer is reused. */
  private hold(bytes: Buffer): void {
    this.held!.push(Buffer.from(bytes));
  }

  private feed(chunk: Buffer): void {
    this.broker.beginRead(this);
    try {
      const rest = this.parser.feed(chunk);
      if (rest >= 0 && rest < chunk.length) this.hold(chunk.subarray(rest));
    } finally {
      this.broker.endRead(this.deferFlush);
    }
  }

  /** CONNECT's credentials checked: the client is in (and what it sent after CONNECT is read now), or told and closed. */
  private authenticated(identity: Identity | null): void {
    if (this.closed) return;
    const held = this.held ?? [];
    this.held = null;
    this.heldBytes = 0;
    if (identity === null && this.auth !== null) {
      if (this.broker.log.debugEnabled) this.broker.log.debug(`${this.logPrefix}Authorization Violation${this.tls?.verifyAndMap === true ? ` (${this.plain ? "a plain connection has no certificate" : `certificate ${JSON.stringify(CertificateMap.subjectOf(peerCertificate(this.socket as TLSSocket)))} maps to no user`})` : ""}`);
      this.protocolError("Authorization Violation", CloseReason.AuthViolation);
      return;
    }
    if (identity?.mappedBy !== undefined && this.broker.log.debugEnabled) this.broker.log.debug(`${this.logPrefix}User ${JSON.stringify(identity.name)} by the certificate's ${identity.mappedBy}`);
    const account = identity === null ? this.broker.globalAccount : (this.broker.accounts.get(identity.account) ?? this.broker.globalAccount);
    // An account's claims may cap its connections (operator mode): past the cap the newcomer is refused, as by nats-server.
    const maxConnections = account.limits.maxConnections;
    if (maxConnections !== NO_LIMIT && account.members.size >= maxConnections) {
      this.protocolError(Eviction.tooManyConnections.text, CloseReason.MaxAccountConnections);
      return;
    }
    this.identity = identity;
    this.user = identity?.name ?? "";
    this.permissions = identity?.permissions ?? null;
    const r = identity?.permissions?.responses;
    if (r != null) this.responses = new ResponsePermits(r.max, r.expiresMs);
    this.account = account;
    this.applyLimits();
    this.join();
    this.sendOk();
    for (let i = 0; i < held.length; i++) {
      if (this.closed) return;
      const waiting = this.held as Buffer[] | null;
      if (waiting !== null) {
        // Another CONNECT in what was held: the rest waits again.
        waiting.push(...held.slice(i));
        return;
      }
      this.feed(held[i]);
    }
  }

  // ---- ParserHandler ----

  onConnect(json: string): void {
    if (this.tracing) this.traceIn(`[CONNECT ${redactConnect(json)}]`);
    let c: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(json);
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      c = parsed as Record<string, unknown>;
    } catch {
      this.protocolError("Unknown Protocol Operation", CloseReason.Parse);
      return;
    }
    // nats-server defaults verbose, pedantic and echo to true when absent.
    this.verbose = c.verbose === undefined ? true : c.verbose === true;
    this.pedantic = c.pedantic === undefined ? true : c.pedantic === true;
    this.lastValidSubject = null;
    this.echo = c.echo === undefined ? true : c.echo === true;
    this.headers = c.headers === true;
    this.noResponders = c.no_responders === true;
    this.name = typeof c.name === "string" ? c.name : "";
    this.lang = typeof c.lang === "string" ? c.lang : "";
    this.clientVersion = typeof c.version === "string" ? c.version : "";
    if (this.rtt === 0) this.rtt = elapsedNs(this.acceptedAt);
    const proto = c.protocol === undefined ? 0 : c.protocol;
    if (typeof proto !== "number" || proto < 0 || proto > 1) {
      this.protocolError("invalid client protocol", CloseReason.Protocol);
      return;
    }
    this.infoUpdates = proto >= 1;
    if (this.noResponders && !this.headers) {
      this.protocolError("no responders requires headers support", CloseReason.Protocol);
      return;
    }
    const creds: Credentials = { jwt: c.jwt, authToken: c.auth_token, user: c.user, pass: c.pass, nkey: c.nkey, sig: c.sig };
    if (this.tls?.verifyAndMap === true) creds.tlsMap = { certificate: this.plain ? null : peerCertificate(this.socket as TLSSocket) };
    this.creds = creds;
    if (this.auth !== null) {
      // The rest of this read, and later reads, wait for the answer.
      this.held = [];
      this.parser.suspend();
      this.checkCredentials(this.auth);
      return;
    }
    this.join();
    this.sendOk();
  }

  /** CONNECT's credentials checked by `auth`; by the current authenticator again if a reload replaced it meanwhile. */
  private checkCredentials(auth: ClientAuth): void {
    const settle = (identity: Identity | null): void => {
      if (auth === this.auth || this.closed) this.authenticated(identity);
      else if (this.auth === null) this.authenticated(null);
      else this.checkCredentials(this.auth);
    };
    // A client that leaves (or times out) before its turn is not checked: it cannot keep others' checks waiting.
    auth.authenticate(this.creds!, this.nonce, () => !this.closed).then(settle, () => settle(null));
  }

  /**
   * A configuration reload changed who may connect, as nats-server's
   * reloadAuthorization: a client whose user is gone, or is now in another
   * account, is closed (it reconnects into the right one); one whose
   * credentials no longer hold gets Authorization Violation; the others take
   * the new permissions, and each subscription these refuse is removed with
   * a Permissions Violation. With authorization gone, a client that named a
   * user is closed too (its user is gone), as by nats-server. Clients that
   * have not connected yet are checked by the new authenticator. `memo`
   * shares the reload's password comparisons among its clients.
   */
  reauthorize(next: Authenticator | null, memo: PasswordMemo): void {
    this.auth = next;
    if (!this.connected || this.closed) return;
    const generation = ++this.authGeneration;
    const creds = this.creds ?? {};
    if (next === null) return this.namesUser() ? this.closeByReload() : this.authorizeAs(null);
    const named = next.accountNamed(creds);
    if (named === null || (named !== undefined && named !== this.account.name)) return this.closeByReload();
    // The password last found to match (not the previous configuration's): a check a later reload overtook proved nothing.
    next.reauthenticate(creds, this.nonce, this.identity?.passwordMatched, memo).then(
      (identity) => {
        if (this.closed || generation !== this.authGeneration) return;
        if (identity === null) this.revokedByReload();
        else this.authorizeAs(identity);
      },
      () => {
        if (!this.closed && generation === this.authGeneration) this.revokedByReload();
      },
    );
  }

  /** Whether CONNECT named a user (by name or NKey), as nats-server's clientHasMovedToDifferentAccount asks. */
  private namesUser(): boolean {
    const c = this.creds;
    return c !== null && ((typeof c.nkey === "string" && c.nkey !== "") || (typeof c.user === "string" && c.user !== ""));
  }

  /** nats-server's name for the client's user in its log lines. */
  private authUser(): string {
    const c = this.creds;
    if (c !== null && typeof c.nkey === "string" && c.nkey !== "") return `Nkey ${JSON.stringify(c.nkey)}`;
    return this.user !== "" ? `User ${JSON.stringify(this.user)}` : typeof c?.user === "string" && c.user !== "" ? `User ${JSON.stringify(c.user)}` : "a client without a user";
  }

  /** The start of a log line about this client, as nats-server's: kept as `logPrefix` when debug or trace logs; a reload's lines build it whatever the level. */
  private clientPrefix(): string {
    return `${this.ip.includes(":") ? `[${this.ip}]` : this.ip}:${this.port} - cid:${this.cid} - `;
  }

  /** Its user is gone or in another account now: closed without a word, as by nats-server (it reconnects into the right one). */
  private closeByReload(): void {
    this.broker.log.info(`${this.clientPrefix()}Closed by a reload: ${this.authUser()} is gone or in another account now`);
    this.close(CloseReason.Client);
  }

  private revokedByReload(): void {
    this.broker.log.error(`${this.clientPrefix()}authentication error after a reload - ${this.authUser()}`);
    this.protocolError("Authorization Violation", CloseReason.AuthViolation);
  }

  private authorizeAs(identity: Identity | null): void {
    if ((identity?.account ?? this.broker.globalAccount.name) !== this.account.name) return this.closeByReload();
    this.identity = identity;
    this.user = identity?.name ?? "";
    const permissions = identity?.permissions ?? null;
    this.permissions = permissions;
    // As nats-server: the replies the client could answer are forgotten with the permissions that opened them.
    const r = permissions?.responses;
    this.responses = r == null ? null : new ResponsePermits(r.max, r.expiresMs);
    for (const sub of [...this.subs.values()]) {
      if (permissions === null || permissions.maySubscribe(sub.subject, sub.queue)) {
        sub.denyFiltered = permissions !== null && permissions.filtersDelivery(sub.subject);
        continue;
      }
      this.removeSub(sub);
      const queue = sub.queue === null ? "" : ` using queue ${goQuoteString(sub.queue)}`;
      this.sendErr(`Permissions Violation for Subscription to ${goQuoteString(sub.subject)}${queue} (sid ${goQuoteString(sub.sid)})`);
      this.broker.log.info(`${this.clientPrefix()}Removed sub ${goQuoteString(sub.subject)}${queue} (sid ${goQuoteString(sub.sid)}) for ${this.authUser()} - not authorized`);
    }
  }

  /** CONNECT accepted: the client is a member of its account, and announced to the system account's listeners. */
  private join(): void {
    this.connected = true;
    this.clearAuthTimer();
    this.account.members.add(this);
    this.broker.system?.clientConnected(this.account, () => this.info(Date.now(), false), this.authInfo());
  }

  private authInfo(): { user?: string; jwt?: string; issuerKey?: string; nameTag?: string } {
    const u = this.identity?.jwt;
    if (u === undefined) return this.user === "" ? {} : { user: this.user };
    return { user: u.key, jwt: u.jwt, issuerKey: u.issuer, ...(u.name !== "" ? { nameTag: u.name } : {}) };
  }

  // ---- AccountMember ----

  get connectedAt(): number {
    return this.startedAt;
  }

  get jwtUser(): JwtUser | null {
    return this.identity?.jwt ?? null;
  }

  /**
   * The smallest of the server's, the user's and the account's limits, as
   * nats-server's applyAccountLimits: the payload limit applies to what the
   * client publishes next (INFO keeps the server's), and a client already
   * holding more subscriptions than allowed is closed.
   */
  applyLimits(): void {
    const o = this.broker.options;
    const account = this.account.limits;
    const user = this.identity?.limits;
    this.parser.maxPayload = smallest(o.maxPayload, user?.maxPayload ?? NO_LIMIT, account.maxPayload);
    this.maxSubscriptions = smallest(o.maxSubscriptions > 0 ? o.maxSubscriptions : NO_LIMIT, user?.maxSubscriptions ?? NO_LIMIT, account.maxSubscriptions);
    if (this.maxSubscriptions !== NO_LIMIT && this.subs.size > this.maxSubscriptions) this.protocolError("maximum subscriptions exceeded", CloseReason.MaxSubscriptions);
  }

  evict(text: string | null, reason: string): void {
    if (this.closed) return;
    if (text !== null) this.sendErr(text);
    this.close(reason);
  }

  /**
   * Before an authenticated CONNECT, nothing else (a PING neither): an Authorization Violation, as nats-server's parser
   * answers anything but CONNECT while it waits for authentication (an unauthenticated client is not kept talking until
   * its auth timeout).
   */
  private unauthenticated(): boolean {
    if (this.auth === null || this.connected) return false;
    this.protocolError("Authorization Violation", CloseReason.AuthViolation);
    return true;
  }

  onPub(msg: Message): void {
    if (this.tracing) this.tracePub(msg);
    if (this.unauthenticated()) return;
    // HPUB from a client whose CONNECT did not announce headers: nats-server's parser refuses it (ErrMsgHeadersNotSupported).
    if (msg.hdrLen > 0 && !this.headers) {
      this.protocolError("Unknown Protocol Operation", CloseReason.Parse);
      return;
    }
    const size = msg.end - msg.start;
    this.inMsgs++;
    this.inBytes += size;
    const stats = this.broker.stats;
    stats.inMsgs++;
    stats.inBytes += size;
    // Like nats-server, wildcard tokens in a published subject are refused only
    // in pedantic mode: JetStream API subjects carry consumer filters such as `orders.>`.
    // The parser gives the same string for the same subject again: checked once while it repeats.
    if (msg.subject !== this.lastValidSubject) {
      if (!isValidPublishSubject(msg.subject) && (this.pedantic || !isValidSubscribeSubject(msg.subject))) {
        this.sendErr("Invalid Publish Subject");
        // A request reaches nobody: its client hears so at once, as from nats-server, rather than at its timeout.
        if (msg.replyEnd > msg.replyStart && this.noResponders) this.sendNoResponders(msg);
        return;
      }
      if (msg.subject.startsWith(CLUSTER_INTERNAL_PREFIX)) {
        this.sendErr(`Permissions Violation for Publish to ${goQuoteString(msg.subject)}`);
        return;
      }
      this.lastValidSubject = msg.subject;
    }
    // Nor its reply subject: the server answers there (JetStream API, pulls, acks), which would reach another node's internal
    // requests with whatever the answer holds.
    if (msg.replyEnd > msg.replyStart && msg.argBuf[msg.replyStart] === DOLLAR && msg.reply.startsWith(CLUSTER_INTERNAL_PREFIX)) {
      this.sendErr(`Permissions Violation for Publish with Reply of ${goQuoteString(msg.reply)}`);
      return;
    }
    if (this.permissions !== null && !this.permissions.mayPublish(msg.subject) && !(this.responses !== null && this.responses.take(msg.subject, Date.now()))) {
      this.sendErr(`Permissions Violation for Publish to ${goQuoteString(msg.subject)}`);
      return;
    }
    this.sendOk();
    const delivered = this.account.route(msg, this);
    if (delivered === 0 && msg.replyEnd > msg.replyStart && this.noResponders) this.sendNoResponders(msg);
  }

  onSub(subject: string, queue: string | null, sid: string): void {
    if (this.tracing) this.traceIn(`[SUB ${subject}${queue === null ? "" : ` ${queue}`} ${sid}]`);
    if (this.unauthenticated()) return;
    if (!isValidSubscribeSubject(subject) || (queue !== null && !isValidQueueName(queue))) {
      this.sendErr("Invalid Subject");
      return;
    }
    if (this.permissions !== null && !this.permissions.maySubscribe(subject, queue)) {
      this.sendErr(`Permissions Violation for Subscription to ${goQuoteString(subject)}${queue === null ? "" : ` using queue ${goQuoteString(queue)}`}`);
      return;
    }
    if (this.subs.has(sid)) {
      this.sendOk();
      return;
    }
    const max = this.maxSubscriptions;
    if (max !== NO_LIMIT && this.subs.size >= max) {
      this.sendErr("maximum subscriptions exceeded");
      return;
    }
    const sub = new NatsSubscription(this, subject, queue, sid);
    if (this.permissions !== null) sub.denyFiltered = this.permissions.filtersDelivery(subject);
    this.subs.set(sid, sub);
    this.account.subscribe(sub);
    this.sendOk();
  }

  onUnsub(sid: string, max: number): void {
    if (this.tracing) this.traceIn(`[UNSUB ${sid}${max > 0 ? ` ${max}` : ""}]`);
    const sub = this.subs.get(sid);
    if (sub !== undefined) {
      if (max > 0 && sub.delivered < max) sub.max = max;
      else this.removeSub(sub);
    }
    this.sendOk();
  }

  onPing(): void {
    if (this.unauthenticated()) return;
    if (this.tracing) {
      this.traceIn("[PING]");
      this.traceOut("[PONG]");
    }
    this.queueBytes(PONG);
  }

  onPong(): void {
    if (this.unauthenticated()) return;
    if (this.tracing) this.traceIn("[PONG]");
    this.pingsOut = 0;
    if (this.pingSentAt !== 0) {
      this.rtt = elapsedNs(this.pingSentAt);
      this.pingSentAt = 0;
    }
  }

  onError(kind: ProtoError): void {
    switch (kind) {
      case ProtoError.ControlLine:
        this.protocolError("maximum control line exceeded", CloseReason.ControlLine);
        break;
      case ProtoError.MaxPayload:
        this.protocolError("Maximum Payload Violation", CloseReason.MaxPayload);
        break;
      default:
        this.protocolError("Unknown Protocol Operation", CloseReason.Parse);
    }
  }

  // ---- Receiver ----

  deliver(sub: Subscription, msg: Message): void {
    if (this.closed) return;
    const s = sub as NatsSubscription;
    if (s.denyFiltered && !this.permissions!.mayReceive(msg.subject)) return;
    const sid = s.sidBytes;
    const argBuf = msg.argBuf;
    const subjLen = msg.subjectEnd - msg.subjectStart;
    const replyLen = msg.replyEnd - msg.replyStart;
    // A client that did not ask for headers gets the payload alone, as nats-server does.
    const withHeaders = msg.hdrLen > 0 && this.headers;
    const dataStart = withHeaders ? msg.start : msg.start + msg.hdrLen;
    const size = msg.end - dataStart;
    const need = FRAME_OVERHEAD + subjLen + sid.length + replyLen + size;
    if (!this.reserve(need)) return;
    const out = this.out.buf;
    const from = this.out.len;
    let p = from;
    if (withHeaders) {
      out[p++] = 0x48; // H
    }
    out[p++] = 0x4d; // M
    out[p++] = 0x53; // S
    out[p++] = 0x47; // G
    out[p++] = 0x20;
    p = copyInto(argBuf, msg.subjectStart, msg.subjectEnd, out, p);
    out[p++] = 0x20;
    p = copyInto(sid, 0, sid.length, out, p);
    out[p++] = 0x20;
    if (replyLen > 0) {
      p = copyInto(argBuf, msg.replyStart, msg.replyEnd, out, p);
      out[p++] = 0x20;
    }
    if (withHeaders) {
      p = writeUint(out, p, msg.hdrLen);
      out[p++] = 0x20;
    }
    p = writeUint(out, p, size);
    out[p++] = 0x0d;
    out[p++] = 0x0a;
    if (size > 0) p = copyInto(msg.data, dataStart, msg.end, out, p);
    out[p++] = 0x0d;
    out[p++] = 0x0a;
    this.out.len = p;
    if (this.responses !== null && replyLen > 0) this.responses.grant(msg.reply, Date.now());
    if (this.tracing) this.traceDelivery(msg, s, withHeaders, size);
    this.outMsgs++;
    this.outBytes += size;
    const stats = this.broker.stats;
    stats.outMsgs++;
    stats.outBytes += size;
    // Queued bytes were marked when the first of them was: once per flush, not a set lookup per message.
    if (from === 0) this.broker.markDirty(this);
    if (p + this.socket.writableLength > this.stallAt) {
      const producer = this.broker.producer;
      if (producer !== null && producer !== this) producer.stall(this.socket);
    }
    if (s.max > 0 && s.delivered >= s.max) this.removeSub(s);
  }

  /**
   * Stops reading from this client until a receiver it is flooding drains (or
   * STALL_MAX_MS passes): a fast producer is slowed instead of the receiver
   * being cut off as a slow consumer, as nats-server does.
   */
  stall(until: NodeJS.EventEmitter): void {
    if (this.stalled || this.closed) return;
    this.stalled = true;
    this.socket.pause();
    const resume = (): void => {
      clearTimeout(timer);
      until.off("drain", resume);
      until.off("close", resume);
      this.stalled = false;
      if (!this.closed) this.socket.resume();
    };
    const timer = setTimeout(resume, STALL_MAX_MS);
    until.once("drain", resume);
    until.once("close", resume);
  }

  // ---- Connection ----

  flushOutbound(): void {
    if (this.out.len === 0 || this.closed) return;
    if (!this.out.flushTo(this.socket) && this.blockedSince === 0) this.blockedSince = Date.now();
  }

  tick(now: number): void {
    if (this.closed) return;
    const opts = this.broker.options;
    if (!this.connected && now >= this.authDeadline) {
      this.protocolError("Authentication Timeout", CloseReason.AuthTimeout);
      return;
    }
    // JWTs expire while their clients are connected: nats-server closes them then (here within a tick).
    const accountExpires = this.account.expiresAt;
    if (accountExpires > 0 && now >= accountExpires && this.connected) {
      this.evict(Eviction.accountExpired.text, Eviction.accountExpired.reason);
      return;
    }
    const userExpires = this.identity?.jwt?.expiresAt ?? 0;
    if (userExpires > 0 && now >= userExpires) {
      this.evict(Eviction.userExpired.text, Eviction.userExpired.reason);
      return;
    }
    if (this.blockedSince !== 0 && now - this.blockedSince > opts.writeDeadline) {
      this.slowConsumer(CloseReason.SlowDeadline);
      return;
    }
    if (now >= this.nextPingAt) {
      this.nextPingAt = now + opts.pingInterval;
      if (this.pingsOut + 1 > opts.maxPingsOut) {
        this.broker.stats.staleConnections++;
        this.protocolError("Stale Connection", CloseReason.Stale);
        return;
      }
      this.pingsOut++;
      if (this.pingSentAt === 0) this.pingSentAt = performance.now();
      if (this.tracing) this.traceOut("[PING]");
      this.queueBytes(PING);
    }
  }

  info(now: number, withSubs: boolean): ConnectionInfo {
    const i: ConnectionInfo = {
      cid: this.cid,
      kind: "Client",
      type: "nats",
      ip: this.ip,
      port: this.port,
      start: new Date(this.startedAt).toISOString(),
      last_activity: new Date(this.lastActivity).toISOString(),
      ...(this.rtt > 0 ? { rtt: rttString(this.rtt) } : {}),
      uptime: formatDuration(now - this.startedAt),
      idle: formatDuration(now - this.lastActivity),
      pending_bytes: this.out.len + this.socket.writableLength,
      in_msgs: this.inMsgs,
      out_msgs: this.outMsgs,
      in_bytes: this.inBytes,
      out_bytes: this.outBytes,
      subscriptions: this.subs.size,
    };
    if (this.name) i.name = this.name;
    if (this.lang) i.lang = this.lang;
    if (this.clientVersion) i.version = this.clientVersion;
    if (this.user) i.authorized_user = this.user;
    else if (!this.connected) {
      // Not in (yet, or refused): the user or NKey it claimed, as nats-server lists a failed login; no account.
      const c = this.creds;
      const claimed = typeof c?.nkey === "string" && c.nkey !== "" ? c.nkey : typeof c?.user === "string" ? c.user : "";
      if (claimed !== "") i.authorized_user = claimed;
    }
    if (this.auth !== null && this.connected) i.account = this.account.name;
    if (this.tls !== null) Object.assign(i, tlsConnz(this.socket as TLSSocket, this.tlsPeers));
    if (withSubs) i.subscriptions_list = [...this.subs.values()].map((s) => s.subject);
    return i;
  }

  rttNs(): number {
    return this.rtt;
  }

  /** What /connz keeps of this connection once closed: read before its subscriptions go. */
  private closedRecord(reason: string): ClosedConnection {
    const now = Date.now();
    const info = this.info(now, false);
    // As nats-server's closed entries: no certificates (and nothing queued is pending any more once discarded).
    delete info.tls_peer_certs;
    const subscriptions = [];
    // Bounded per record, as the ring is bounded: a client with a million subscriptions does not leave a million behind.
    for (const s of this.subs.values()) {
      if (subscriptions.length === MAX_CLOSED_RECORD_SUBSCRIPTIONS) break;
      subscriptions.push({ subject: s.subject, queue: s.queue, sid: s.sid, msgs: s.delivered, max: s.max });
    }
    return { info: withStop(info, new Date(now).toISOString(), reason), account: this.account.name, subscriptions, rttNs: this.rtt, stopMs: now };
  }

  infoChanged(): void {
    if (this.closed || !this.infoUpdates) return;
    this.queueBytes(infoLine(this.broker, this.cid, this.ip, false));
  }

  notifyLameDuck(): void {
    if (this.closed) return;
    this.queueBytes(infoLine(this.broker, this.cid, this.ip, true));
  }

  close(reason: string): void {
    if (this.closed) return;
    // Write what is queued (an -ERR, say) before the socket goes.
    if (this.out.len > 0 && !this.socket.destroyed) this.flushOutbound();
    this.closed = true;
    this.clearAuthTimer();
    // Ends this read's parse (the close may come from inside a handler) and every later one (after end() the peer may still send).
    this.parser.stop();
    const log = this.broker.log;
    if (log.debugEnabled) log.debug(`${this.logPrefix}Client connection closed: ${reason}`);
    if (this.broker.closed.capacity > 0) {
      // Monitoring's record must not stop the close (its subscriptions must still go).
      try {
        this.broker.closed.add(this.closedRecord(reason));
      } catch (err) {
        log.warn(`${this.logPrefix}closed connection not recorded for /connz: ${(err as Error).message}`);
      }
    }
    for (const sub of this.subs.values()) {
      if (this.tracing) this.traceDelsub(sub.sid);
      this.account.unsubscribe(sub);
    }
    this.subs.clear();
    this.broker.unregister(this);
    if (this.connected && this.account.members.delete(this)) {
      this.broker.system?.clientDisconnected(this.account, () => this.info(Date.now(), false), this.authInfo(), reason);
    }
    // Nothing is written to it again (deliveries and replies stop at `closed`).
    this.out.release();
    if (reason === CloseReason.Client || reason === CloseReason.ReadError) {
      this.socket.destroy();
    } else {
      // end() lets the -ERR reach the client; destroy if it will not drain.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
  }

  // ---- helpers ----

  private removeSub(sub: NatsSubscription): void {
    if (this.tracing) this.traceDelsub(sub.sid);
    if (this.subs.get(sub.sid) === sub) this.subs.delete(sub.sid);
    this.account.unsubscribe(sub);
  }

  // ---- trace (only ever called when `tracing`) ----

  private traceIn(op: string): void {
    this.broker.log.trace(`${this.logPrefix}<<- ${op}`);
  }

  private traceOut(op: string): void {
    this.broker.log.trace(`${this.logPrefix}->> ${op}`);
  }

  private traceDelsub(sid: string): void {
    this.broker.log.trace(`${this.logPrefix}<-> [DELSUB ${sid}]`);
  }

  /** `<<- [PUB subject [reply] size]` (or HPUB with the header size), then the payload as nats-server quotes it. */
  private tracePub(msg: Message): void {
    const reply = msg.hasReply ? ` ${msg.reply}` : "";
    const size = msg.end - msg.start;
    this.traceIn(msg.hdrLen > 0 ? `[HPUB ${msg.subject}${reply} ${msg.hdrLen} ${size}]` : `[PUB ${msg.subject}${reply} ${size}]`);
    this.broker.log.trace(`${this.logPrefix}<<- MSG_PAYLOAD: [${goQuote(msg.data, msg.start, msg.end, this.broker.options.maxTracedMsgLen)}]`);
  }

  private traceDelivery(msg: Message, sub: NatsSubscription, withHeaders: boolean, size: number): void {
    const subject = msg.argBuf.toString("utf8", msg.subjectStart, msg.subjectEnd);
    const reply = msg.hasReply ? ` ${msg.reply}` : "";
    this.traceOut(withHeaders ? `[HMSG ${subject} ${sub.sid}${reply} ${msg.hdrLen} ${size}]` : `[MSG ${subject} ${sub.sid}${reply} ${size}]`);
  }

  private sendNoResponders(msg: Message): void {
    const reply = msg.reply;
    const match = this.account.sublist.match(reply);
    let target: Subscription | undefined = match.plain.find((s) => s.receiver === this);
    if (target === undefined) {
      for (const g of match.queues) {
        target = g.members.find((s) => s.receiver === this);
        if (target !== undefined) break;
      }
    }
    if (target === undefined) return;
    const status = Message.from(reply, "", Buffer.alloc(0), Buffer.from(`NATS/1.0 503\r\nNats-Subject: ${msg.subject}\r\n\r\n`));
    target.delivered++;
    this.deliver(target, status);
  }

  /** Makes room for `need` more bytes; false (after closing) when the client is too far behind. */
  private reserve(need: number): boolean {
    if (!this.out.fits(need, this.socket, this.broker.options.maxPending)) {
      this.slowConsumer(CloseReason.SlowPending);
      return false;
    }
    this.out.reserve(need);
    return true;
  }

  private queueBytes(b: Buffer): void {
    if (this.closed || !this.reserve(b.length)) return;
    this.out.append(b);
    this.broker.markDirty(this);
  }

  private sendOk(): void {
    if (!this.verbose) return;
    if (this.tracing) this.traceOut("[OK]");
    this.queueBytes(OK);
  }

  private sendErr(text: string): void {
    if (this.tracing) this.traceOut(`[-ERR ${text}]`);
    this.queueBytes(Buffer.from(`-ERR '${text}'\r\n`));
  }

  private protocolError(text: string, reason: CloseReason): void {
    this.sendErr(text);
    this.close(reason);
  }

  private slowConsumer(reason: CloseReason): void {
    this.broker.stats.slowConsumers++;
    this.broker.log.warn(`cid ${this.cid} slow consumer detected: ${reason}`);
    // Nothing more can be queued for it: drop what is pending rather than grow further.
    this.out.discard();
    this.close(reason);
    this.socket.destroy();
  }
}

/** The smallest limit that is set; NO_LIMIT if none is. */
function smallest(...limits: number[]): number {
  let min = NO_LIMIT;
  for (const l of limits) if (l !== NO_LIMIT && (min === NO_LIMIT || l < min)) min = l;
  return min;
}

/** Nanoseconds since `from` (a performance.now() reading), at least 1 so that a measurement is never read as none. */
function elapsedNs(from: number): number {
  return Math.max(1, Math.round((performance.now() - from) * 1e6));
}

/** As nats-server prints a client's RTT: Go's duration, truncated to microseconds between 1µs and 1ms. */
function rttString(ns: number): string {
  return goDuration(ns > 1_000 && ns < 1_000_000 ? ns - (ns % 1_000) : ns);
}
