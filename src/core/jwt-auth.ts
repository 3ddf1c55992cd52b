/**
 * Decentralised authentication (nats-server's operator mode): the server
 * trusts an operator; accounts are JWTs the operator signed (here from the
 * MEMORY resolver's preload); users are JWTs an account signed, presented in
 * CONNECT (from a creds file) with the nonce signed by the user's key.
 * Signatures are checked by @nats-io/jwt and @nats-io/nkeys; this module
 * decides whom to trust:
 *
 * - an account JWT must be issued by the operator or one of its signing
 *   keys, and unexpired;
 * - a user JWT must be issued by its account or one of the account's
 *   signing keys (then `issuer_account` names the account), be within its
 *   validity dates, not be revoked by the account, allow the connection's
 *   type if it lists any (STANDARD for NATS clients, KAFKA for the Kafka
 *   door), and its nonce signature must verify (a `bearer_token` user needs
 *   none, unless its account disallows bearer tokens); a door with no nonce
 *   (the Kafka door's SASL PLAIN) takes a bearer JWT as a password;
 * - the user's `pub`/`sub` permissions apply as configured ones do.
 *
 * An account's JetStream limits (`limits`: mem_storage, disk_storage,
 * streams, consumer, ...) enable and bound its JetStream.
 *
 * What nagare cannot honour is refused, never ignored: an account JWT with
 * imports or exports stops the start; a user with
 * source-network or time-of-day limits is not let in. `resp` is
 * allow_responses.
 */

import { decode } from "@nats-io/jwt";
import { randomBytes, verify as verifySignature } from "node:crypto";
import type { JetStreamLimits } from "./accounts.js";
import { ed25519Key, PermissionCheck, prefixOf, verifyNonce, type ClientAuth, type Credentials, type Identity, type PasswordAuth, type Permissions } from "./auth.js";

export interface OperatorOptions {
  /** Operator JWTs (the contents, not file names). */
  operators: string[];
  /** The MEMORY resolver's accounts: public key → account JWT. */
  accounts: Record<string, string>;
}

interface Claims {
  sub: string;
  iss: string;
  name?: string;
  exp?: number;
  nbf?: number;
  iat?: number;
  nats?: Record<string, unknown>;
}

interface TrustedAccount {
  key: string;
  signingKeys: Set<string>;
  revocations: Record<string, number>;
  /** The JetStream limits its JWT gives it; null: no JetStream. */
  jetstream: Required<JetStreamLimits> | null;
  /** Its users may not present bearer tokens (limits.disallow_bearer). */
  disallowBearer: boolean;
}

/** Why an operator or account JWT cannot be used, as startup errors. */
export class JwtConfigError extends Error {}

function claimsOf(jwt: string, what: string): Claims {
  try {
    return decode(jwt.trim()) as unknown as Claims;
  } catch (err) {
    throw new JwtConfigError(`${what}: ${(err as Error).message}`);
  }
}

/** Signing keys as JWTs list them: strings, or scoped-key objects (which nagare does not support). */
function signingKeys(nats: Record<string, unknown> | undefined, what: string): Set<string> {
  const keys = new Set<string>();
  for (const k of (nats?.signing_keys as unknown[] | undefined) ?? []) {
    if (typeof k !== "string") throw new JwtConfigError(`${what}: scoped signing keys are not supported yet`);
    keys.add(k);
  }
  return keys;
}

const expired = (c: Claims, now: number): boolean => c.exp !== undefined && c.exp > 0 && c.exp * 1000 <= now;
const notYet = (c: Claims, now: number): boolean => c.nbf !== undefined && c.nbf > 0 && c.nbf * 1000 > now;

export class JwtAuthenticator implements ClientAuth, PasswordAuth {
  readonly wantsNonce = true;
  private readonly accounts = new Map<string, TrustedAccount>();

  /** Throws a JwtConfigError for an operator or account JWT that cannot be trusted or honoured. */
  constructor(opts: OperatorOptions) {
    const trusted = new Set<string>();
    for (const [i, jwt] of opts.operators.entries()) {
      const op = claimsOf(jwt, `operator ${i + 1}`);
      if (op.nats?.type !== "operator") throw new JwtConfigError(`operator ${i + 1}: not an operator JWT`);
      if (op.iss !== op.sub && !signingKeys(op.nats, "operator").has(op.iss)) throw new JwtConfigError(`operator ${op.name ?? op.sub}: not signed by itself`);
      trusted.add(op.sub);
      for (const k of signingKeys(op.nats, `operator ${op.name ?? op.sub}`)) trusted.add(k);
    }
    const now = Date.now();
    for (const [key, jwt] of Object.entries(opts.accounts)) {
      const what = `account ${key}`;
      const a = claimsOf(jwt, what);
      if (a.nats?.type !== "account") throw new JwtConfigError(`${what}: not an account JWT`);
      if (a.sub !== key) throw new JwtConfigError(`${what}: the JWT is for ${a.sub}`);
      if (!trusted.has(a.iss)) throw new JwtConfigError(`${what}: not signed by a trusted operator`);
      if (expired(a, now)) throw new JwtConfigError(`${what}: expired`);
      const nats = a.nats;
      for (const k of ["imports", "exports"]) {
        if (Array.isArray(nats[k]) && (nats[k] as unknown[]).length > 0) throw new JwtConfigError(`${what}: ${k} in account JWTs are not supported yet`);
      }
      const jetstream = jetStreamLimitsOfClaims(nats, what);
      const disallowBearer = (nats.limits as Record<string, unknown> | undefined)?.disallow_bearer === true;
      this.accounts.set(key, { key, signingKeys: signingKeys(nats, what), revocations: (nats.revocations as Record<string, number> | undefined) ?? {}, jetstream, disallowBearer });
    }
  }

  /** The accounts whose JWT gives them JetStream, with their limits. */
  jetStreamLimits(): Map<string, Required<JetStreamLimits>> {
    const out = new Map<string, Required<JetStreamLimits>>();
    for (const a of this.accounts.values()) if (a.jetstream !== null) out.set(a.key, a.jetstream);
    return out;
  }

  /** The accounts the resolver holds, by public key: each is an isolated subject space. */
  get accountKeys(): string[] {
    return [...this.accounts.keys()];
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
    if (account === undefined) return null;
    if (u.iss !== account.key && !account.signingKeys.has(u.iss)) return null;
    const revoked = account.revocations[u.sub] ?? account.revocations["*"];
    if (revoked !== undefined && (u.iat ?? 0) <= revoked) return null;
    const types = nats.allowed_connection_types;
    if (Array.isArray(types) && types.length > 0 && !types.includes(connectionType)) return null;
    if (nats.bearer_token === true) {
      if (account.disallowBearer) return null;
    } else {
      if (nonce === null || typeof sig !== "string") return null;
      // node:crypto, not @nats-io/nkeys's pure-JavaScript Ed25519, which would hold the event loop per connect.
      const key = ed25519Key(u.sub);
      if (key === null || !verifyNonce(key, nonce, sig)) return null;
    }
    // What the user's claims ask for and nagare cannot enforce keeps the user out.
    if (Array.isArray(nats.src) && nats.src.length > 0) return null;
    if (Array.isArray(nats.times) && nats.times.length > 0) return null;
    const permissions = permissionsOf(nats);
    return { name: u.name ?? u.sub, account: account.key, permissions: permissions === null ? null : new PermissionCheck(permissions) };
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

/**
 * The claims of a JWT whose signature by its issuer (`iss`) verifies, or
 * null: the rules of @nats-io/jwt's decode (typ JWT; alg ed25519-nkey signs
 * header.payload, ed25519 the payload alone), with the signature checked by
 * node:crypto. Per connect: @nats-io/jwt checks it in pure JavaScript, which
 * holds the event loop about 10 ms, so a flood of connects would stall
 * every client.
 */
function verifiedClaims(jwt: string): Claims | null {
  const parts = jwt.split(".");
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8")) as { typ?: unknown; alg?: unknown };
    if ((header.typ !== "JWT" && header.typ !== "jwt") || (header.alg !== "ed25519-nkey" && header.alg !== "ed25519")) return null;
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8")) as Claims;
    if (typeof claims.iss !== "string" || typeof claims.sub !== "string") return null;
    const key = ed25519Key(claims.iss, prefixOf(claims.iss));
    if (key === null) return null;
    const signed = header.alg === "ed25519-nkey" ? `${parts[0]}.${parts[1]}` : parts[1];
    return verifySignature(null, Buffer.from(signed), key, Buffer.from(parts[2], "base64url")) ? claims : null;
  } catch {
    return null;
  }
}

/** A user JWT's `pub` and `sub` as permissions; null when it limits nothing. */
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
