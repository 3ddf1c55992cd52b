/**
 * Who may connect and what they may do, as nats-server's `authorization`
 * block says: one token, or users with passwords (plain, or bcrypt hashes
 * as nats-server's `nats server passwd` makes them), or NKey users proving
 * their key by signing the server's nonce; and per user, publish and
 * subscribe permissions. Doors ask this module; it knows no protocol.
 *
 * The cryptography is maintained libraries': bcryptjs for password hashes,
 * @nats-io/nkeys to read NKeys and Node's OpenSSL to check their signatures.
 */

import bcrypt from "bcryptjs";
import { Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { createHash, createHmac, createPublicKey, pbkdf2, randomBytes, timingSafeEqual, verify as verifySignature, type KeyObject } from "node:crypto";
import { isValidQueueName, isValidSubscribeSubject, subjectMatches, subjectsIntersect } from "../subjects/subject.js";
import { CertificateMap, type CertificateMatch } from "./tls-map.js";
import { Fifo } from "../util/fifo.js";
import type { JwtUser, UserLimits } from "./jwt-auth.js";

export interface SubjectRules {
  /**
   * Subjects, wildcards allowed. A subscribe entry may name a queue group
   * after a space (`"orders.* workers"`, the group a wildcard too), as
   * nats-server's: it then speaks of queue subscriptions in that group only.
   */
  allow?: string[];
  deny?: string[];
}

export interface Permissions {
  publish?: SubjectRules;
  subscribe?: SubjectRules;
  /**
   * nats-server's `allow_responses`: the user may answer requests delivered
   * to it even where `publish` refuses the reply subject. With it and no
   * publish allow list, the user may publish nothing else.
   */
  allowResponses?: boolean | ResponsePermissionOptions;
}

export interface ResponsePermissionOptions {
  /** Answers per request (default 1; negative: any number). */
  max?: number;
  /** Milliseconds after the request within which it may be answered (default 2 minutes; negative: no limit). */
  expires?: number;
}

/** nats-server's DEFAULT_ALLOW_RESPONSE_MAX_MSGS and DEFAULT_ALLOW_RESPONSE_EXPIRATION. */
export const RESPONSE_DEFAULTS = { max: 1, expiresMs: 120_000 } as const;

export interface UserOptions {
  user?: string;
  /** Plain text, or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`). */
  password?: string;
  /** An NKey user's public key (`U...`). */
  nkey?: string;
  permissions?: Permissions;
}

export interface AuthOptions {
  /** One shared secret (`--auth`); not with users. */
  token?: string;
  users?: UserOptions[];
  /** Connections that present no credentials are this user (it must be one of `users`). */
  noAuthUser?: string;
  /** The permissions of each of `users` that has none of its own (nats-server's `default_permissions`). */
  defaultPermissions?: Permissions;
}

/** What a client presented in CONNECT. */
export interface Credentials {
  /** A user JWT (operator mode). */
  jwt?: unknown;
  authToken?: unknown;
  user?: unknown;
  pass?: unknown;
  nkey?: unknown;
  sig?: unknown;
  /**
   * Set when the door maps client certificates to users (`verify_and_map`):
   * the verified certificate (DER), or null for a client that presented
   * none (a plain connection beside TLS). The certificate then says who the
   * client is; a name in CONNECT does not.
   */
  tlsMap?: { certificate: Buffer | null };
}

/** An authenticated client: its name (for logs and /connz), its account and what it may do. */
export interface Identity {
  name: string;
  account: string;
  permissions: PermissionCheck | null;
  /** For a certificate user: which of the certificate's names was the user's (for the debug log). */
  mappedBy?: string;
  /** Per-connection limits from JWTs (operator mode); the server's own apply without them. */
  limits?: UserLimits;
  /** Operator mode: the user JWT, re-checked when its account's claims change. */
  jwt?: JwtUser;
  /** The configured password (or bcrypt hash) the client's password matched: a reload that keeps it need not compare again. */
  passwordMatched?: string;
}

/**
 * One reload's password comparisons, shared by the clients it checks again
 * (clients of one user present the same password against the same hash).
 * Lives as long as the reload's checks: it holds presented passwords.
 */
export type PasswordMemo = Map<string, Promise<boolean>>;

/** The default account's name (nats-server's `$G`): users of the authorization block, and everyone without accounts. */
const DEFAULT_ACCOUNT = "$G";

const BCRYPT = /^\$2[aby]\$\d\d\$/;

/** What a door asks to let a client in: configured users (Authenticator) or operator mode (JwtAuthenticator). */
export interface ClientAuth {
  /** Whether INFO must carry a nonce for the client to sign. */
  readonly wantsNonce: boolean;
  nonce(): string;
  /** The identity the credentials prove, or null. `wanted`: whether the answer is still wanted (a client that left is not checked). */
  authenticate(c: Credentials, nonce: string | null, wanted?: () => boolean): Promise<Identity | null>;
}

/**
 * What a door whose clients prove themselves with a password alone asks
 * (the Kafka door's SASL PLAIN and SCRAM): configured users
 * (Authenticator), or in operator mode user JWTs (JwtAuthenticator).
 */
export interface PasswordAuth {
  /** The identity a user name and password prove, or null. `connectionType` names the door, for JWTs that allow only some. */
  authenticatePassword(user: string, pass: string, connectionType: string): Promise<Identity | null>;
  /** What a SCRAM exchange checks the user against, or null when the user cannot use SCRAM. */
  scramCredential(user: string, hash: ScramHash): Promise<ScramCredential | null>;
  /**
   * Operator mode: why a connection authenticated as `identity` may no
   * longer be served (its user revoked, its JWT or account expired or gone,
   * its bearer token or signing key no longer accepted), or null. A NATS
   * client is closed for these as the account's claims change; a Kafka
   * client asks before each request.
   */
  stillValid?(identity: Identity, now: number): string | null;
  /** verify_and_map on the Kafka listener: the user a verified certificate names. Absent where certificates name nobody (operator mode refuses verify_and_map at start). */
  certificateIdentity?(certificate: Buffer): Identity | null;
}

/** A connection's authenticator: none when the server needs no authentication. */
export class Authenticator implements ClientAuth, PasswordAuth {
  private readonly byName = new Map<string, UserOptions>();
  private readonly byNkey = new Map<string, UserOptions>();
  private readonly checks = new Map<UserOptions, PermissionCheck | null>();
  private readonly accountOf = new Map<UserOptions, string>();
  /** NKey users' keys, read once; null for one that does not decode (it can never sign in). */
  private readonly nkeyKeys = new Map<UserOptions, KeyObject | null>();
  private readonly token: Buffer | null;

  /** `accountUsers`: the users of each configured account, and the permissions of those without their own, by account name. */
  constructor(
    private readonly opts: AuthOptions,
    accountUsers: Record<string, { users?: UserOptions[]; defaultPermissions?: Permissions }> = {},
  ) {
    this.token = opts.token === undefined ? null : Buffer.from(opts.token);
    const add = (u: UserOptions, account: string, defaults: Permissions | undefined): void => {
      if (u.user !== undefined) this.byName.set(u.user, u);
      if (u.nkey !== undefined) {
        this.byNkey.set(u.nkey, u);
        this.nkeyKeys.set(u, ed25519Key(u.nkey));
      }
      const permissions = u.permissions ?? defaults;
      this.checks.set(u, permissions === undefined ? null : new PermissionCheck(permissions));
      this.accountOf.set(u, account);
    };
    for (const u of opts.users ?? []) add(u, DEFAULT_ACCOUNT, opts.defaultPermissions);
    for (const [account, a] of Object.entries(accountUsers)) for (const u of a.users ?? []) add(u, account, a.defaultPermissions);
  }

  /** NKey users sign a nonce the server sends in INFO. */
  get wantsNonce(): boolean {
    return this.byNkey.size > 0;
  }

  /** A fresh nonce for one connection's INFO. */
  nonce(): string {
    return randomBytes(16).toString("base64url");
  }

  /**
   * The identity the credentials prove, or null. Asynchronous: comparing a
   * bcrypt hash takes tens of milliseconds, which must not stop the server.
   */
  authenticate(c: Credentials, nonce: string | null, wanted?: () => boolean): Promise<Identity | null> {
    return this.check(c, nonce, undefined, null, wanted ?? null);
  }

  /**
   * After a configuration reload, the identity the credentials a client
   * presented before prove now, or null. `accepted`: the configured
   * password the client's matched when it was last checked (its identity's
   * passwordMatched); a user whose password is still that one is not
   * compared again, and comparisons are shared through `memo`: a bcrypt
   * comparison per connected client would take the server's CPU for
   * seconds.
   */
  reauthenticate(c: Credentials, nonce: string | null, accepted: string | undefined, memo: PasswordMemo): Promise<Identity | null> {
    return this.check(c, nonce, accepted, memo, null);
  }

  /**
   * Where a reload leaves the user the credentials name (nats-server's
   * clientHasMovedToDifferentAccount): the account of the user their NKey
   * or user name is now, null if there is no such user any more, undefined
   * for credentials that name no user (a token, none, a certificate).
   */
  accountNamed(c: Credentials): string | null | undefined {
    let u: UserOptions | undefined;
    if (typeof c.nkey === "string" && c.nkey !== "") u = this.byNkey.get(c.nkey);
    else if (typeof c.user === "string" && c.user !== "" && c.tlsMap === undefined) u = this.byName.get(c.user);
    else return undefined;
    return u === undefined ? null : (this.accountOf.get(u) ?? DEFAULT_ACCOUNT);
  }

  /**
   * After a reload, what a client let in without its credentials kept (the
   * Kafka door's SASL and certificate users) is now: its user, with the same
   * password or NKey as before the reload, under the current permissions
   * and account; null if the user is gone or its secret changed (the client
   * must prove it again). A token's client holds while the token is the same.
   */
  stillHolds(identity: Identity, previous: ClientAuth | null): Identity | null {
    const before = previous instanceof Authenticator ? previous : null;
    if (before === null) return null;
    if (this.token !== null) return before.token !== null && this.token.equals(before.token) ? { name: identity.name, account: DEFAULT_ACCOUNT, permissions: null } : null;
    const u = this.byName.get(identity.name);
    const was = before.byName.get(identity.name);
    if (u === undefined || was === undefined || u.password !== was.password || u.nkey !== was.nkey) return null;
    return { ...this.identity(u, identity.name), ...(identity.mappedBy !== undefined ? { mappedBy: identity.mappedBy } : {}) };
  }

  private async check(c: Credentials, nonce: string | null, accepted: string | undefined, memo: PasswordMemo | null, wanted: (() => boolean) | null): Promise<Identity | null> {
    if (c.tlsMap !== undefined && this.token === null && !(this.byNkey.size > 0 && typeof c.nkey === "string" && c.nkey !== "")) {
      return this.certificateUser(c.tlsMap.certificate, c.pass, memo, wanted);
    }
    if (this.token !== null) {
      return typeof c.authToken === "string" && sameSecret(Buffer.from(c.authToken), this.token) ? { name: "", account: DEFAULT_ACCOUNT, permissions: null } : null;
    }
    if (typeof c.nkey === "string" && c.nkey !== "") {
      const u = this.byNkey.get(c.nkey);
      if (u === undefined || nonce === null || typeof c.sig !== "string") return null;
      const key = this.nkeyKeys.get(u);
      if (key == null || !verifyNonce(key, nonce, c.sig)) return null;
      return this.identity(u, c.nkey);
    }
    if (typeof c.user === "string" && c.user !== "") {
      const u = this.byName.get(c.user);
      if (u === undefined) return null;
      // The no_auth_user may go without a password, as with nats-server: then it is named with none, or an empty one.
      if (u.password === undefined) return u.user === this.opts.noAuthUser && (c.pass === undefined || c.pass === "") ? this.identity(u, c.user) : null;
      if (typeof c.pass !== "string") return null;
      return (await passwordHolds(u.password, c.pass, accepted, memo, wanted)) ? { ...this.identity(u, c.user), passwordMatched: u.password } : null;
    }
    // no_auth_user is for clients that present nothing: wrong credentials are refused, as by nats-server.
    if (presentsAnything(c)) return null;
    const fallback = this.opts.noAuthUser === undefined ? undefined : this.byName.get(this.opts.noAuthUser);
    return fallback === undefined ? null : this.identity(fallback, fallback.user!);
  }

  /**
   * verify_and_map, as nats-server: the user the certificate names
   * (core/tls-map.ts), who must then present the user's password if it has
   * one, and none if it has none.
   */
  private async certificateUser(certificate: Buffer | null, pass: unknown, memo: PasswordMemo | null, wanted: (() => boolean) | null): Promise<Identity | null> {
    const found = certificate === null ? null : this.certificateMatch(certificate);
    if (found === null) return null;
    const { u, match } = found;
    const presented = typeof pass === "string" ? pass : "";
    const ok = u.password === undefined ? presented === "" : await passwordHolds(u.password, presented, undefined, memo, wanted);
    return ok ? { ...this.identity(u, match.user), mappedBy: match.how } : null;
  }

  private certificateMatch(certificate: Buffer): { u: UserOptions; match: CertificateMatch } | null {
    this.certificates ??= new CertificateMap([...this.byName.keys()], (name) => this.byName.has(name));
    const match = this.certificates.match(certificate);
    return match === null ? null : { u: this.byName.get(match.user)!, match };
  }
  /** Users by the names their certificates may carry; made on first use. */
  private certificates: CertificateMap | null = null;

  /**
   * The user a Kafka client's verified certificate names (verify_and_map on
   * the Kafka listener), as Kafka's SSL principal: there is no password to
   * present, so only a user without one; null otherwise. At once, so the
   * connection knows who it is before its first request.
   */
  certificateIdentity(certificate: Buffer): Identity | null {
    const found = this.token === null ? this.certificateMatch(certificate) : null;
    if (found === null || found.u.password !== undefined) return null;
    return { ...this.identity(found.u, found.match.user), mappedBy: found.match.how };
  }

  /**
   * A user name and password presented in one piece (SASL/PLAIN over
   * Kafka): as CONNECT's user and pass, or, with a token, the token as the
   * password. An empty name never falls back to `no_auth_user`.
   */
  async authenticatePassword(user: string, pass: string): Promise<Identity | null> {
    if (this.token !== null) return this.authenticate({ authToken: pass }, null);
    if (user === "") return null;
    return this.authenticate({ user, pass }, null);
  }

  /**
   * What a SCRAM exchange (RFC 5802) checks a user against: salt, iteration
   * count, StoredKey and ServerKey for `hash`, derived from the user's
   * password the first time they are asked for and kept. Null for a user
   * who cannot use SCRAM: unknown, an NKey user, or one whose password is a
   * bcrypt hash (it does not give back the password the keys derive from).
   */
  scramCredential(user: string, hash: ScramHash): Promise<ScramCredential | null> {
    const u = this.token === null ? this.byName.get(user) : undefined;
    if (u === undefined || u.password === undefined || BCRYPT.test(u.password)) return Promise.resolve(null);
    const key = `${hash}\u0000${user}`;
    let c = this.scram.get(key);
    if (c === undefined) {
      c = deriveScram(u.password, hash, this.identity(u, user));
      this.scram.set(key, c);
    }
    return c;
  }
  private readonly scram = new Map<string, Promise<ScramCredential | null>>();

  private identity(u: UserOptions, name: string): Identity {
    return { name, account: this.accountOf.get(u) ?? DEFAULT_ACCOUNT, permissions: this.checks.get(u) ?? null };
  }
}

/** Whether CONNECT carried any credential (a non-empty user, password, token, NKey or JWT). */
function presentsAnything(c: Credentials): boolean {
  return [c.user, c.pass, c.authToken, c.nkey, c.jwt].some((v) => v !== undefined && v !== null && v !== "");
}

/**
 * Whether `presented` matches the configured `password` (plain, or a bcrypt
 * hash). Taken as it is when the client's password matched this same one
 * before (`accepted`: a reload that kept it); shared through `memo` when
 * given.
 */
function passwordHolds(password: string, presented: string, accepted: string | undefined, memo: PasswordMemo | null, wanted: (() => boolean) | null): Promise<boolean> {
  if (accepted === password) return Promise.resolve(true);
  if (!BCRYPT.test(password)) return Promise.resolve(sameSecret(Buffer.from(presented), Buffer.from(password)));
  // A reload's (memo) comparisons are urgent, and shared: not skipped for one client that went.
  if (memo === null) return compareBcrypt(presented, password, wanted, false);
  const key = `${password}\u0000${presented}`;
  let compared = memo.get(key);
  if (compared === undefined) {
    compared = compareBcrypt(presented, password, null, true);
    memo.set(key, compared);
  }
  return compared;
}

/**
 * bcrypt comparisons run one at a time, each on a later turn of the event
 * loop: bcryptjs runs a comparison in chunks of up to 100 ms, and several
 * at once (a reload checking every client again, a burst of connects) run
 * their chunks back to back, which held every other client for as long as
 * all of them took (20 s for 300 clients at cost 10, in an outside test).
 * One queue per process: the CPU it guards is the process's.
 *
 * A reload's checks (`urgent`) go before connects: a changed password is
 * revoked within about two comparisons, however many connects wait. A
 * comparison whose requester is gone by its turn (`wanted`: a client that
 * hung up or timed out) is skipped, so that clients that send a wrong
 * password and leave cannot keep the queue long; past MAX_BCRYPT_QUEUED
 * waiting, a connect's comparison fails at once.
 */
interface BcryptJob {
  presented: string;
  hash: string;
  wanted: (() => boolean) | null;
  resolve: (ok: boolean) => void;
}
const MAX_BCRYPT_QUEUED = 10_000;
const urgentBcrypt = new Fifo<BcryptJob>();
const bcryptQueue = new Fifo<BcryptJob>();
let bcryptRunning = false;

function compareBcrypt(presented: string, hash: string, wanted: (() => boolean) | null, urgent: boolean): Promise<boolean> {
  if (!urgent && bcryptQueue.size >= MAX_BCRYPT_QUEUED) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    (urgent ? urgentBcrypt : bcryptQueue).push({ presented, hash, wanted, resolve });
    if (!bcryptRunning) {
      bcryptRunning = true;
      setImmediate(nextBcrypt);
    }
  });
}

function nextBcrypt(): void {
  let job = urgentBcrypt.shift() ?? bcryptQueue.shift();
  while (job !== undefined && job.wanted !== null && !job.wanted()) {
    job.resolve(false);
    job = urgentBcrypt.shift() ?? bcryptQueue.shift();
  }
  if (job === undefined) {
    bcryptRunning = false;
    return;
  }
  const { presented, hash, resolve } = job;
  bcrypt.compare(presented, hash).then(resolve, () => resolve(false)).finally(() => setImmediate(nextBcrypt));
}

export type ScramHash = "sha256" | "sha512";

export interface ScramCredential {
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
  identity: Identity;
}

/** Kafka's default and its minimum for both SCRAM mechanisms. */
export const SCRAM_ITERATIONS = 4096;

/** SaltedPassword = PBKDF2(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey). */
function deriveScram(password: string, hash: ScramHash, identity: Identity): Promise<ScramCredential | null> {
  const salt = randomBytes(16);
  const length = hash === "sha256" ? 32 : 64;
  return new Promise((resolve, reject) => {
    // Asynchronous: thousands of iterations must not stop the server.
    pbkdf2(Buffer.from(password, "utf8"), salt, SCRAM_ITERATIONS, length, hash, (err, salted) => {
      if (err) return reject(err);
      const clientKey = createHmac(hash, salted).update("Client Key").digest();
      const storedKey = createHash(hash).update(clientKey).digest();
      const serverKey = createHmac(hash, salted).update("Server Key").digest();
      resolve({ salt, iterations: SCRAM_ITERATIONS, storedKey, serverKey, identity });
    });
  });
}

/** DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow it. */
const ED25519_SPKI = Buffer.from("302a300506032b6570032100", "hex");

/**
 * An NKey user's public key as an Ed25519 key for node:crypto, or null if it
 * does not decode (@nats-io/nkeys checks its prefix and checksum). Signatures
 * are checked by OpenSSL in tens of microseconds: @nats-io/nkeys's own
 * `verify` is pure JavaScript (tweetnacl) and holds the event loop ~12 ms per
 * connect, capping NKey connects near 80/s and stalling every other client.
 */
export function ed25519Key(nkey: string, prefix: Prefix = Prefix.User): KeyObject | null {
  try {
    const raw = Codec.decode(prefix, new TextEncoder().encode(nkey));
    return createPublicKey({ key: Buffer.concat([ED25519_SPKI, raw]), format: "der", type: "spki" });
  } catch {
    return null;
  }
}

/** The public-key prefix an nkey's first letter names, for ed25519Key. */
export function prefixOf(nkey: string): Prefix {
  switch (nkey[0]) {
    case "U":
      return Prefix.User;
    case "A":
      return Prefix.Account;
    case "O":
      return Prefix.Operator;
    default:
      return Prefix.Unknown;
  }
}

/** Whether `sig` (base64url, as clients send it in CONNECT) is the key's signature of the nonce. */
export function verifyNonce(key: KeyObject, nonce: string, sig: string): boolean {
  try {
    return verifySignature(null, Buffer.from(nonce), key, Buffer.from(sig, "base64url"));
  } catch {
    return false;
  }
}

/** Compares secrets in time independent of where they differ. */
export function sameSecret(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Results remembered per subject; past this many the memory starts over (nats-server keeps a similar cache). */
const MAX_CACHED = 4096;

/**
 * One user's permissions, answering by subject with a bounded cache: a
 * subject may be published if some allow pattern (all, if none) matches it
 * and no deny pattern does. A subscription may be made if its subject lies
 * within an allow pattern and within no deny pattern; one that only
 * overlaps a deny pattern is made, and the denied messages are not
 * delivered to it (`filtersDelivery`), as nats-server does.
 */
export class PermissionCheck {
  private readonly pubCache = new Map<string, boolean>();
  private readonly subCache = new Map<string, boolean>();
  /** mayReceive's answers: asked for every message delivered to a subscription that filtersDelivery. */
  private readonly receiveCache = new Map<string, boolean>();
  private readonly publish: SubjectRules | undefined;
  /** The subscribe rules' entries without a queue group (undefined allow: no allow list) and those with one. */
  private readonly subAllow: string[] | undefined;
  private readonly subDeny: string[];
  private readonly queueAllow: QueueRule[];
  private readonly queueDeny: QueueRule[];
  /** How requests delivered to the user may be answered beyond `publish`; null without allow_responses. */
  readonly responses: { max: number; expiresMs: number } | null;

  constructor(readonly rules: Permissions) {
    const allow = splitQueueRules(rules.subscribe?.allow ?? []);
    const deny = splitQueueRules(rules.subscribe?.deny ?? []);
    this.subAllow = rules.subscribe?.allow === undefined ? undefined : allow.plain;
    this.queueAllow = allow.queued;
    this.subDeny = deny.plain;
    this.queueDeny = deny.queued;
    const r = rules.allowResponses;
    if (r === undefined || r === false) {
      this.responses = null;
      this.publish = rules.publish;
    } else {
      const o = r === true ? {} : r;
      // 0 is the default, as in nats-server's configuration.
      this.responses = { max: o.max || RESPONSE_DEFAULTS.max, expiresMs: o.expires || RESPONSE_DEFAULTS.expiresMs };
      // As nats-server: answering is allowed, publishing anything else only if an allow list says so.
      this.publish = { ...rules.publish, allow: rules.publish?.allow ?? [] };
    }
  }

  mayPublish(subject: string): boolean {
    const r = this.publish;
    if (r === undefined) return true;
    const ok = this.pubCache.get(subject);
    return ok !== undefined ? ok : remember(this.pubCache, subject, allows(r, subject));
  }

  /**
   * Whether the user may subscribe to `subject`, in `queue` (null: not a
   * queue subscription), as nats-server's canSubscribe: an allow list
   * allows what one of its plain entries covers, and a queue subscription
   * the entries naming a queue group decide if any names the subject; a
   * deny list refuses what a plain entry matches, and for a queue
   * subscription the entries naming a queue group decide if any names the
   * subject.
   */
  maySubscribe(subject: string, queue: string | null = null): boolean {
    if (this.rules.subscribe === undefined) return true;
    const key = queue === null ? subject : `${subject} ${queue}`;
    const ok = this.subCache.get(key);
    if (ok !== undefined) return ok;
    let allowed = true;
    if (this.subAllow !== undefined) {
      const plainCovers = this.subAllow.some((a) => covers(a, subject));
      allowed = plainCovers;
      if (queue !== null) {
        // As nats-server's allow sublist matches the subscription's subject, its wildcards read as tokens (`orders.*`
        // names `orders.>` so): an outside test found a queue entry it names ignored. Unlike nats-server, an entry
        // lets in only what lies within it or a plain entry (`orders.* workers` not `orders.>`, whose deeper
        // subjects nothing would filter), as plain subscriptions are let in.
        const named = this.queueAllow.filter((q) => covers(q.subject, subject) || subjectMatches(q.subject, subject));
        if (named.length > 0) allowed = named.some((q) => queueMatches(q.queue, queue) && (plainCovers || covers(q.subject, subject)));
      }
    }
    if (allowed) {
      // A deny also refuses a wildcard subscription it matches token for token (`q.*` matches `q.>`, its `>` read as a
      // token), as nats-server's deny sublist matches the subscription's subject; one it only overlaps is filtered instead.
      allowed = !this.subDeny.some((d) => covers(d, subject) || subjectMatches(d, subject));
      if (queue !== null) {
        const named = this.queueDeny.filter((q) => covers(q.subject, subject) || subjectMatches(q.subject, subject));
        if (named.length > 0) allowed = !named.some((q) => queueMatches(q.queue, queue));
      }
    }
    return remember(this.subCache, key, allowed);
  }

  /** Whether messages delivered to a subscription on `subject` must each be checked against the subscribe deny list (its plain entries). */
  filtersDelivery(subject: string): boolean {
    return this.subDeny.some((d) => subjectsIntersect(d, subject));
  }

  /** A message on `subject` may reach a subscription that filtersDelivery. */
  mayReceive(subject: string): boolean {
    const deny = this.subDeny;
    if (deny.length === 0) return true;
    // Cached like mayPublish: matching splits both subjects, which per message cost 4x the CPU of the delivery itself.
    const ok = this.receiveCache.get(subject);
    return ok !== undefined ? ok : remember(this.receiveCache, subject, !deny.some((d) => subjectMatches(d, subject)));
  }
}

interface QueueRule {
  subject: string;
  queue: string;
}

/**
 * A permission entry: a subject (wildcards allowed) or, where `queues` (subscribe rules), a subject and a queue group
 * after a space (null queue: none); null when it is neither. What configuration files and the embedded API accept.
 */
export function parsePermissionEntry(entry: string, queues: boolean): { subject: string; queue: string | null } | null {
  if (isValidSubscribeSubject(entry)) return { subject: entry, queue: null };
  if (!queues) return null;
  const parts = entry.trim().split(/\s+/);
  return parts.length === 2 && isValidSubscribeSubject(parts[0]) && isValidQueueName(parts[1]) ? { subject: parts[0], queue: parts[1] } : null;
}

/**
 * A subscribe rule's entries: plain subjects, and `subject queue` pairs. An entry neither (only a JWT's can be: the
 * options are checked) stays a plain one, matched as it is written: a deny must not be dropped.
 */
function splitQueueRules(entries: string[]): { plain: string[]; queued: QueueRule[] } {
  const plain: string[] = [];
  const queued: QueueRule[] = [];
  for (const e of entries) {
    const parsed = parsePermissionEntry(e, true);
    if (parsed === null || parsed.queue === null) plain.push(e);
    else queued.push({ subject: parsed.subject, queue: parsed.queue });
  }
  return { plain, queued };
}

/** nats-server's queueMatches: the group named, or one a wildcard group name (read as a subject) covers. */
function queueMatches(pattern: string, queue: string): boolean {
  return pattern === queue || ((pattern.includes("*") || pattern.includes(">")) && covers(pattern, queue));
}

/** Stores an answer in a bounded cache (emptied when full) and returns it. */
function remember(cache: Map<string, boolean>, subject: string, ok: boolean): boolean {
  if (cache.size >= MAX_CACHED) cache.clear();
  cache.set(subject, ok);
  return ok;
}

function allows(r: SubjectRules, subject: string): boolean {
  if (r.allow !== undefined && !r.allow.some((a) => subjectMatches(a, subject))) return false;
  return !(r.deny ?? []).some((d) => subjectMatches(d, subject));
}

/** Whether every subject `sub` (a subscription's, wildcards allowed) can match also matches `pattern`. */
export function covers(pattern: string, sub: string): boolean {
  const p = pattern.split(".");
  const s = sub.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (s[i] === ">") return false;
    if (p[i] !== "*" && (s[i] === "*" || p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

/** Reply subjects one connection holds at most; past it the oldest are forgotten (and may not be answered). */
export const MAX_OPEN_REPLIES = 16_384;
/** How often expired replies are swept when fewer than MAX_OPEN_REPLIES are held. */
const PRUNE_EVERY_MS = 1000;

interface OpenReply {
  grantedAt: number;
  sent: number;
}

/**
 * The reply subjects one connection may still publish to under
 * `allow_responses`: each request delivered to it opens its reply subject
 * for `max` messages within `expiresMs`. Held in delivery order, so expired
 * ones are at the front and are swept from there; never more than
 * MAX_OPEN_REPLIES (nats-server sweeps used and expired ones too, but sets
 * no bound).
 */
export class ResponsePermits {
  private readonly open = new Map<string, OpenReply>();
  private lastPrune = 0;

  constructor(
    private readonly max: number,
    private readonly expiresMs: number,
  ) {}

  get size(): number {
    return this.open.size;
  }

  /** A request with this reply subject was delivered at `now`: it may be answered. */
  grant(reply: string, now: number): void {
    const open = this.open;
    const had = open.get(reply);
    if (had !== undefined) open.delete(reply); // to the back: delivery order stays grant order
    open.set(reply, { grantedAt: now, sent: 0 });
    if (open.size > MAX_OPEN_REPLIES || now - this.lastPrune >= PRUNE_EVERY_MS) this.prune(now);
  }

  /** Whether a message may be published to `reply` now; counts it if so. */
  take(reply: string, now: number): boolean {
    const r = this.open.get(reply);
    if (r === undefined) return false;
    if (this.expiresMs > 0 && now - r.grantedAt > this.expiresMs) {
      this.open.delete(reply);
      return false;
    }
    r.sent++;
    if (this.max > 0 && r.sent >= this.max) this.open.delete(reply);
    return true;
  }

  private prune(now: number): void {
    this.lastPrune = now;
    const open = this.open;
    if (this.expiresMs > 0) {
      for (const [reply, r] of open) {
        if (now - r.grantedAt <= this.expiresMs) break;
        open.delete(reply);
      }
    }
    for (const reply of open.keys()) {
      if (open.size <= MAX_OPEN_REPLIES) break;
      open.delete(reply);
    }
  }
}
