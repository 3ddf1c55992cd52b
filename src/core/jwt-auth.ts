/**
 * Decentralised authentication (nats-server's operator mode): the server
 * trusts an operator; accounts are JWTs the operator signed (from the
 * resolver: the configuration's preload, a directory, or updates sent on
 * `$SYS`); users are JWTs an account signed, presented in CONNECT (from a
 * creds file) with the nonce signed by the user's key. Every signature is
 * checked by node:crypto (keys read by @nats-io/nkeys); this module decides
 * whom to trust:
 *
 * - an account JWT must be issued by the operator or one of its signing
 *   keys, be unexpired, and ask for nothing nagare cannot honour;
 * - a user JWT must be issued by its account or one of the account's
 *   signing keys (then `issuer_account` names the account), be within its
 *   validity dates, not be revoked by the account, allow the connection's
 *   type if it lists any (STANDARD for NATS clients, KAFKA for the Kafka
 *   door), and its nonce signature must verify (a `bearer_token` user needs
 *   none, unless the account disallows bearer tokens); a door with no nonce
 *   (the Kafka door's SASL PLAIN) takes a bearer JWT as a password;
 * - the user's `pub`/`sub`/`resp` are its permissions (a scoped signing
 *   key's template replaces them; without any, the account's
 *   `default_permissions` apply), and `subs`/`payload` its limits.
 *
 * An account's JetStream limits (`limits`: mem_storage, disk_storage,
 * streams, consumer, ...) enable and bound its JetStream.
 *
 * What nagare cannot honour is refused, never ignored: an account JWT with
 * mappings, templated scopes or import features nagare
 * lacks (jwt-imports.ts) is not trusted; a user
 * with source-network or time-of-day limits, or only connection types
 * nagare does not serve, is not let in.
 *
 * The trusted accounts change while the server runs (`setAccount`,
 * `removeAccount`: see operator.ts); a connect sees the table as it is.
 */

import { randomBytes } from "node:crypto";
import { ed25519Key, PermissionCheck, verifyNonce, type ClientAuth, type Credentials, type Identity, type PasswordAuth, type Permissions } from "./auth.js";
import type { JetStreamLimits } from "./accounts.js";
import { decodedClaims, JwtConfigError, verifiedClaims, type Claims } from "./jwt.js";
import { parseExports, parseImports, type JwtExport, type JwtImport } from "./jwt-imports.js";

export { JwtConfigError, verifiedClaims, type Claims };
import { NO_LIMIT, type AccountLimits } from "./account.js";
import { isValidSubscribeSubject } from "../subjects/subject.js";

/** A directory resolver (nats-server's `resolver { type, dir, ... }`): account JWTs kept as `<key>.jwt` files. */
export interface DirResolverOptions {
  /** `full`: every account, and updates for new ones; `cache`: updates only for the accounts it holds. */
  type: "full" | "cache";
  dir: string;
  /** Accounts may be deleted by the operator (`$SYS.REQ.CLAIMS.DELETE`); their files are renamed `.jwt.deleted`. */
  allowDelete?: boolean;
  /** Most JWTs held; an update for another account past it is refused. Default: none (full), 1,000 (cache). */
  limit?: number;
}

export interface OperatorOptions {
  /** Operator JWTs (the contents, not file names). */
  operators: string[];
  /** Account JWTs given in the configuration (`resolver_preload`), by public key. */
  accounts: Record<string, string>;
  /** Where account JWTs are kept and updates persisted; without it (nats-server's MEMORY resolver) updates live in memory. */
  resolver?: DirResolverOptions;
}

/** A user signing key's scope (nats-server's UserScope): its template is the permissions and limits of every user it signs. */
interface UserScope {
  permissions: Permissions | null;
  limits: UserLimits;
}

/** Per-connection limits from JWTs; NO_LIMIT for none. */
export interface UserLimits {
  maxSubscriptions: number;
  maxPayload: number;
}

/** An account the server trusts: its verified claims, as much of them as nagare honours. */
export interface AccountClaims {
  key: string;
  /** The account JWT's name (nats-server's name tag). */
  name: string;
  jwt: string;
  /** The key that signed it: the operator or one of its signing keys. */
  issuer: string;
  /** Seconds since the epoch, as JWTs count. */
  issuedAt: number;
  /** Milliseconds since the epoch; 0: never. */
  expiresAt: number;
  /** Its own key and its signing keys (null: unscoped, else the scope). */
  signers: Map<string, UserScope | null>;
  /** User key (or `*`) → users issued at or before this second are revoked. */
  revocations: Record<string, number>;
  limits: AccountLimits;
  /** The JetStream limits its JWT gives it; null: no JetStream. */
  jetstream: Required<JetStreamLimits> | null;
  /** Its users may not present bearer tokens (limits.disallow_bearer). */
  disallowBearer: boolean;
  /** For users whose JWT gives no permissions. */
  defaultPermissions: Permissions | null;
  exports: JwtExport[];
  imports: JwtImport[];
  /** The decoded claims, for monitoring (`decoded_jwt`). */
  claims: Claims;
}

/** What the core keeps of a user who connected with a JWT: to re-check it when its account's claims change. */
export interface JwtUser {
  /** The user's public key. */
  key: string;
  /** The key that signed the user JWT: the account, or one of its signing keys. */
  issuer: string;
  /** Seconds since the epoch. */
  issuedAt: number;
  /** Milliseconds since the epoch; 0: never. */
  expiresAt: number;
  bearer: boolean;
  jwt: string;
  name: string;
  /** Its signing key's scope when it authenticated, as JSON ("null": unscoped): a changed scope is another user now. */
  scope?: string;
}

/** A scope as JSON, once per scope object (each account JWT's claims make their own). */
const scopeJson = new WeakMap<UserScope, string>();
function scopeText(scope: UserScope | null): string {
  if (scope === null) return "null";
  let t = scopeJson.get(scope);
  if (t === undefined) scopeJson.set(scope, (t = JSON.stringify(scope)));
  return t;
}

const expired = (c: Claims, now: number): boolean => c.exp !== undefined && c.exp > 0 && c.exp * 1000 <= now;
const notYet = (c: Claims, now: number): boolean => c.nbf !== undefined && c.nbf > 0 && c.nbf * 1000 > now;

/** The system account the (first) operator JWT names, as nats-server takes it when the configuration names none. */
export function operatorSystemAccount(operators: readonly string[]): string | undefined {
  const sys = operators.length === 0 ? undefined : decodedClaims(operators[0])?.nats?.system_account;
  return typeof sys === "string" && sys !== "" ? sys : undefined;
}

/** Signing keys as JWTs list them: strings, or scoped-key objects (`user_scope`, with a template). */
function signersOf(nats: Record<string, unknown>, what: string): Map<string, UserScope | null> {
  const keys = new Map<string, UserScope | null>();
  for (const k of (nats.signing_keys as unknown[] | undefined) ?? []) {
    if (typeof k === "string") {
      keys.set(k, null);
      continue;
    }
    const s = k as { kind?: unknown; key?: unknown; template?: unknown };
    if (s === null || typeof s !== "object" || s.kind !== "user_scope" || typeof s.key !== "string") throw new JwtConfigError(`${what}: a signing key is neither a key nor a user scope`);
    const template = (s.template ?? {}) as Record<string, unknown>;
    const problem = unenforceable(template);
    if (problem !== null) throw new JwtConfigError(`${what}: the scope of signing key ${s.key} ${problem}`);
    if (JSON.stringify(template).includes("{{")) throw new JwtConfigError(`${what}: the scope of signing key ${s.key} uses templates ({{...}}), which are not supported yet`);
    keys.set(s.key, { permissions: permissionsOf(template), limits: userLimitsOf(template) });
  }
  return keys;
}

/** Why user claims (or a scope's template) ask for what nagare cannot enforce, or null. */
function unenforceable(nats: Record<string, unknown>): string | null {
  if (Array.isArray(nats.src) ? nats.src.length > 0 : typeof nats.src === "string" && nats.src !== "") return "limits the source network (src), which is not supported yet";
  if (Array.isArray(nats.times) && nats.times.length > 0) return "limits the time of day (times), which is not supported yet";
  return null;
}

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : NO_LIMIT);
/** JWT limits: a negative number is none; 0 is 0 (nothing allowed), as nats-server reads them. */
const limit = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : NO_LIMIT);

function userLimitsOf(nats: Record<string, unknown>): UserLimits {
  return { maxSubscriptions: limit(nats.subs), maxPayload: limit(nats.payload) };
}

/**
 * An account JWT's claims as the server would trust them, or a
 * JwtConfigError saying why not: the signature, a trusted issuer, the key it
 * is for (when known), its dates, and what nagare can honour.
 */
export function verifyAccountJwt(jwt: string, trusted: ReadonlySet<string>, now: number, key?: string): AccountClaims {
  const text = jwt.trim();
  const what = `account ${key ?? decodedClaims(text)?.sub ?? "JWT"}`;
  const a = verifiedClaims(text);
  if (a === null) throw new JwtConfigError(`${what}: not a JWT whose signature verifies`);
  const nats = a.nats ?? {};
  if (nats.type !== "account") throw new JwtConfigError(`${what}: not an account JWT`);
  if (key !== undefined && a.sub !== key) throw new JwtConfigError(`${what}: the JWT is for ${a.sub}`);
  if (!/^A[A-Z2-7]{55}$/.test(a.sub)) throw new JwtConfigError(`${what}: its subject is not an account public key`);
  if (!trusted.has(a.iss)) throw new JwtConfigError(`${what}: not signed by a trusted operator`);
  if (expired(a, now)) throw new JwtConfigError(`${what}: expired`);
  const exports = parseExports(nats.exports, what);
  const imports = parseImports(nats.imports, a.sub, what);
  // As nats-server's validation: limits on how many there may be, and wildcards in exports only if allowed.
  const maxOf = (v: unknown): number => (typeof v === "number" && v >= 0 ? v : Infinity);
  const limitsIn = (nats.limits ?? {}) as Record<string, unknown>;
  if (exports.length > maxOf(limitsIn.exports)) throw new JwtConfigError(`${what}: more exports than its limit`);
  if (imports.length > maxOf(limitsIn.imports)) throw new JwtConfigError(`${what}: more imports than its limit`);
  if (limitsIn.wildcards === false && exports.some((e) => /(^|\.)[*>](\.|$)/.test("stream" in e.export ? e.export.stream : e.export.service))) {
    throw new JwtConfigError(`${what}: exports wildcards its limits forbid`);
  }
  if (nats.mappings !== undefined && nats.mappings !== null && Object.keys(nats.mappings as object).length > 0) throw new JwtConfigError(`${what}: subject mappings are not supported yet`);
  const limits = (nats.limits ?? {}) as Record<string, unknown>;
  const jetstream = jetStreamLimitsOfClaims(nats, what);
  const perms = nats.default_permissions as Record<string, unknown> | undefined;
  const defaultPermissions = perms === undefined || perms === null ? null : permissionsOf(perms);
  if (defaultPermissions !== null) checkSubjects(defaultPermissions, what);
  const signers = signersOf(nats, what);
  signers.set(a.sub, null);
  return {
    key: a.sub,
    name: a.name ?? a.sub,
    jwt: text,
    issuer: a.iss,
    issuedAt: num(a.iat) > 0 ? num(a.iat) : 0,
    expiresAt: a.exp !== undefined && a.exp > 0 ? a.exp * 1000 : 0,
    signers,
    revocations: (nats.revocations as Record<string, number> | undefined) ?? {},
    limits: { maxConnections: limit(limits.conn), maxSubscriptions: limit(limits.subs), maxPayload: limit(limits.payload) },
    jetstream,
    disallowBearer: limits.disallow_bearer === true,
    defaultPermissions,
    exports,
    imports,
    claims: a,
  };
}

function checkSubjects(p: Permissions, what: string): void {
  for (const r of [p.publish, p.subscribe]) {
    for (const s of [...(r?.allow ?? []), ...(r?.deny ?? [])]) if (!isValidSubscribeSubject(s)) throw new JwtConfigError(`${what}: ${JSON.stringify(s)} in its permissions is not a subject`);
  }
}

/** The operators' keys and signing keys, from operator JWTs (each must be signed by itself or one of its signing keys). */
export function trustedOperatorKeys(operators: readonly string[]): Set<string> {
  const trusted = new Set<string>();
  for (const [i, jwt] of operators.entries()) {
    const op = verifiedClaims(jwt.trim());
    if (op === null) throw new JwtConfigError(`operator ${i + 1}: not a JWT whose signature verifies`);
    if (op.nats?.type !== "operator") throw new JwtConfigError(`operator ${i + 1}: not an operator JWT`);
    const keys = ((op.nats.signing_keys as unknown[] | undefined) ?? []).filter((k): k is string => typeof k === "string");
    if (op.iss !== op.sub && !keys.includes(op.iss)) throw new JwtConfigError(`operator ${op.name ?? op.sub}: not signed by itself`);
    trusted.add(op.sub);
    for (const k of keys) trusted.add(k);
  }
  return trusted;
}

export class JwtAuthenticator implements ClientAuth, PasswordAuth {
  readonly wantsNonce = true;
  /** The operators' keys and signing keys: who may sign accounts. */
  readonly trusted: ReadonlySet<string>;
  private readonly accounts = new Map<string, AccountClaims>();

  /** Throws a JwtConfigError for an operator JWT that cannot be trusted. Accounts come with setAccount. */
  constructor(operators: readonly string[]) {
    this.trusted = trustedOperatorKeys(operators);
  }

  /** The accounts trusted now, by public key. */
  get accountKeys(): string[] {
    return [...this.accounts.keys()];
  }

  /** The accounts whose JWT gives them JetStream, with their limits. */
  jetStreamLimits(): Map<string, Required<JetStreamLimits>> {
    const out = new Map<string, Required<JetStreamLimits>>();
    for (const a of this.accounts.values()) if (a.jetstream !== null) out.set(a.key, a.jetstream);
    return out;
  }

  account(key: string): AccountClaims | undefined {
    return this.accounts.get(key);
  }

  /** Trusts `claims` (verified by verifyAccountJwt) from now on, in place of what the account had. */
  setAccount(claims: AccountClaims): void {
    this.accounts.set(claims.key, claims);
  }

  /** The account is no longer trusted: its users cannot connect. */
  removeAccount(key: string): void {
    this.accounts.delete(key);
  }

  nonce(): string {
    return randomBytes(16).toString("base64url");
  }

  async authenticate(c: Credentials, nonce: string | null): Promise<Identity | null> {
    if (typeof c.jwt !== "string") return null;
    return this.userIdentity(c.jwt, nonce, c.sig, "STANDARD");
  }

  /**
   * A password alone (the Kafka door's SASL PLAIN): the password is a user
   * JWT, as nats-server takes an MQTT client's password. With no nonce to
   * sign, only a bearer JWT (`bearer_token`) can prove anything: any other
   * is refused, as it would be from a NATS client that signs nothing. The
   * user name is not checked (Kafka clients insist on one).
   */
  authenticatePassword(_user: string, pass: string, connectionType: string): Promise<Identity | null> {
    return Promise.resolve(this.userIdentity(pass, null, undefined, connectionType));
  }

  stillValid(identity: Identity, now: number): string | null {
    const u = identity.jwt;
    if (u === undefined) return null;
    if (u.expiresAt > 0 && now >= u.expiresAt) return "user authentication expired";
    const account = this.accounts.get(identity.account);
    if (account === undefined || (account.expiresAt > 0 && account.expiresAt <= now)) return "account authentication expired";
    if (revoked(account, u.key, u.issuedAt)) return "user authentication revoked";
    if (u.bearer && account.disallowBearer) return "bearer tokens are no longer allowed by the account";
    if (!account.signers.has(u.issuer)) return "the user's signing key was removed from the account";
    // Re-scoped: its NATS clients are closed to come back under the new template's permissions (applyAccountClaims).
    if (u.scope !== undefined && scopeText(account.signers.get(u.issuer) ?? null) !== u.scope) return "the user's signing key was re-scoped";
    return null;
  }

  /** SCRAM needs a secret the server knows: a JWT user has none. */
  scramCredential(): Promise<null> {
    return Promise.resolve(null);
  }

  /**
   * The identity a user JWT proves for a client of `connectionType`
   * (nats-server's names: STANDARD for NATS clients; KAFKA for the Kafka
   * door): signed by its account, within its dates, not revoked, allowing
   * that connection type if it lists any, and either signing the nonce or
   * a bearer token its account allows.
   */
  private userIdentity(jwt: string, nonce: string | null, sig: unknown, connectionType: string): Identity | null {
    const u = verifiedClaims(jwt);
    if (u === null) return null;
    const nats = u.nats ?? {};
    if (nats.type !== "user") return null;
    const now = Date.now();
    if (expired(u, now) || notYet(u, now)) return null;
    const accountKey = typeof nats.issuer_account === "string" && nats.issuer_account !== "" ? nats.issuer_account : u.iss;
    const account = this.accounts.get(accountKey);
    if (account === undefined || (account.expiresAt > 0 && account.expiresAt <= now)) return null;
    if (!account.signers.has(u.iss)) return null;
    if (revoked(account, u.sub, u.iat ?? 0)) return null;
    const types = nats.allowed_connection_types;
    if (Array.isArray(types) && types.length > 0 && !types.includes(connectionType)) return null;
    const bearer = nats.bearer_token === true;
    if (bearer && account.disallowBearer) return null;
    if (!bearer) {
      if (nonce === null || typeof sig !== "string") return null;
      // node:crypto, not @nats-io/nkeys's pure-JavaScript Ed25519, which would hold the event loop per connect.
      const key = ed25519Key(u.sub);
      if (key === null || !verifyNonce(key, nonce, sig)) return null;
    }
    // What the user's claims ask for and nagare cannot enforce keeps the user out.
    if (unenforceable(nats) !== null) return null;
    // A scoped signing key's template replaces the user's own permissions and limits (nats-server's rule).
    const scope = account.signers.get(u.iss) ?? null;
    const permissions = scope !== null ? scope.permissions : (permissionsOf(nats) ?? account.defaultPermissions);
    const jwtUser: JwtUser = {
      key: u.sub,
      issuer: u.iss,
      issuedAt: u.iat ?? 0,
      expiresAt: u.exp !== undefined && u.exp > 0 ? u.exp * 1000 : 0,
      bearer,
      jwt,
      name: u.name ?? "",
      scope: scopeText(scope),
    };
    return {
      name: u.name ?? u.sub,
      account: account.key,
      permissions: permissions === null ? null : new PermissionCheck(permissions),
      limits: scope !== null ? scope.limits : userLimitsOf(nats),
      jwt: jwtUser,
    };
  }
}

/**
 * The JetStream limits an account JWT's `limits` give (nats-server 2.9's
 * reading): JetStream is on when `mem_storage` or `disk_storage` is not 0
 * (-1 is unlimited, 0 then means no memory, or no disk), or when tiered
 * limits are given; `streams` and `consumer` of 0 or -1 are no limit;
 * `mem_max_stream_bytes`, `disk_max_stream_bytes` and `max_ack_pending` of
 * 0 are none. Of tiered limits a single server uses R1 (every stream has
 * one replica); without R1 its streams could have no limits, which nagare
 * refuses rather than guess. Throws a JwtConfigError for what it cannot
 * read. Exported for account updates (claims arriving while running).
 */
export function jetStreamLimitsOfClaims(nats: Record<string, unknown>, what: string): Required<JetStreamLimits> | null {
  const limits = nats.limits as Record<string, unknown> | undefined;
  if (limits === undefined || limits === null || typeof limits !== "object") return null;
  const tiered = limits.tiered_limits as Record<string, Record<string, unknown>> | undefined;
  let l: Record<string, unknown> = limits;
  const num = (k: string): number => {
    const v = l[k];
    if (v === undefined || v === null) return 0;
    if (typeof v !== "number" || !Number.isInteger(v)) throw new JwtConfigError(`${what}: limits.${k} is not an integer`);
    return v;
  };
  if (num("mem_storage") === 0 && num("disk_storage") === 0) {
    if (tiered === undefined || tiered === null || typeof tiered !== "object" || Object.keys(tiered).length === 0) return null;
    if (typeof tiered.R1 !== "object" || tiered.R1 === null) throw new JwtConfigError(`${what}: tiered JetStream limits without R1 are not supported (every stream of a single server has one replica)`);
    l = tiered.R1;
  }
  const positive = (k: string): number => {
    const v = num(k);
    return v > 0 ? v : -1;
  };
  return {
    maxMemory: num("mem_storage"),
    maxStorage: num("disk_storage"),
    maxStreams: num("streams"),
    maxConsumers: num("consumer"),
    maxAckPending: positive("max_ack_pending"),
    memoryMaxStreamBytes: positive("mem_max_stream_bytes"),
    storageMaxStreamBytes: positive("disk_max_stream_bytes"),
    maxBytesRequired: l.max_bytes_required === true,
  };
}

/** Whether the account's revocations cover a user issued at `issuedAt` (seconds): its own entry, or `*` for every user. */
export function revoked(account: AccountClaims, user: string, issuedAt: number): boolean {
  const at = account.revocations[user] ?? account.revocations["*"];
  return at !== undefined && issuedAt <= at;
}

/** A JWT's `pub` and `sub` as permissions (`resp` as allow_responses); null when it limits nothing. */
function permissionsOf(nats: Record<string, unknown>): Permissions | null {
  const rules = (x: unknown): { allow?: string[]; deny?: string[] } | undefined => {
    if (x === null || typeof x !== "object") return undefined;
    const r = x as { allow?: unknown; deny?: unknown };
    const list = (v: unknown): string[] | undefined => (Array.isArray(v) && v.length > 0 ? v.filter((s): s is string => typeof s === "string") : undefined);
    const allow = list(r.allow);
    const deny = list(r.deny);
    return allow === undefined && deny === undefined ? undefined : { ...(allow ? { allow } : {}), ...(deny ? { deny } : {}) };
  };
  const publish = rules(nats.pub);
  const subscribe = rules(nats.sub);
  // `resp` is allow_responses: `max` answers within `ttl` (nanoseconds).
  const resp = nats.resp as { max?: unknown; ttl?: unknown } | null | undefined;
  const allowResponses =
    resp === undefined || resp === null ? undefined : { max: typeof resp.max === "number" ? resp.max : 0, expires: typeof resp.ttl === "number" ? Math.ceil(resp.ttl / 1e6) : 0 };
  if (publish === undefined && subscribe === undefined && allowResponses === undefined) return null;
  return { ...(publish ? { publish } : {}), ...(subscribe ? { subscribe } : {}), ...(allowResponses ? { allowResponses } : {}) };
}
