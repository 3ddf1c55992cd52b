/**
 * Operator mode while the server runs: where account JWTs come from (the
 * configuration's preload, and with a directory resolver the `<key>.jwt`
 * files of its directory), how they change (updates and deletions sent by
 * system account users, as nats-server and `nsc push` send them), and what
 * a change does to the clients already connected.
 *
 * Requests, in the system account (nats-server's subjects and answers):
 * - `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` (and, with a directory resolver,
 *   `$SYS.REQ.CLAIMS.UPDATE`): the body is a new account JWT. It must verify
 *   as the preload's do (signed by a trusted operator key, unexpired, for
 *   that key, nothing nagare cannot honour) and be no older than the JWT it
 *   replaces; it is written to the directory (durably) before it applies
 *   and before the answer says `jwt updated`.
 * - `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP`: the account's JWT, as is.
 * - `$SYS.REQ.CLAIMS.LIST` (directory resolver): the accounts' keys.
 * - `$SYS.REQ.CLAIMS.DELETE` (`allow_delete`): a JWT the operator signed,
 *   listing accounts in `accounts`; their files are renamed `.jwt.deleted`
 *   and their clients closed.
 *
 * `applyAccountClaims` is the one place where verified claims take effect.
 */

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { NO_LIMIT, type AccountMember } from "./account.js";
import type { Broker } from "./broker.js";
import { JwtConfigError, revoked, verifiedClaims, verifyAccountJwt, type AccountClaims, type DirResolverOptions, type JwtAuthenticator, type OperatorOptions } from "./jwt-auth.js";
import type { SystemAccount, SystemError } from "./system.js";
import { JwtImports } from "./jwt-imports.js";
import { removeFileDurably, writeFileDurably } from "../util/persist.js";

/** Close reasons and errors nats-server gives when an account's claims end a connection. */
export const Eviction = {
  revoked: { text: "User Authentication Revoked", reason: "Authentication Revoked" },
  accountExpired: { text: "Account Authentication Expired", reason: "Authentication Expired" },
  userExpired: { text: "User Authentication Expired", reason: "Authentication Expired" },
  tooManyConnections: { text: "maximum account active connections exceeded", reason: "Maximum Account Connections Exceeded" },
  bearerRefused: { text: "Authorization Violation", reason: "Authentication Failure" },
  /** A user whose signing key was removed or re-scoped: closed without an error, as nats-server does; it reconnects under the new claims. */
  signerChanged: { text: null, reason: "Authentication Failure" },
} as const;

/**
 * Claims requests waiting for the one before them (each holds its body, up
 * to max_payload): past this many a request is answered at once with an
 * error rather than queued without bound.
 */
const MAX_QUEUED_CLAIMS_REQUESTS = 64;

/** nats-server's default `limit` of a cache resolver. */
const CACHE_LIMIT = 1000;
const JWT_FILE = /^(A[A-Z2-7]{55})\.jwt$/;

/** An account JWT kept by the resolver, and whether it came from the directory. */
interface Held {
  claims: AccountClaims;
}

export class OperatorMode {
  private readonly held = new Map<string, Held>();
  private readonly stops: Array<() => void> = [];
  /** Updates are written and applied one at a time, in the order they came. */
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  /** The imports and exports the accounts' claims declare, wired between them. */
  private readonly imports: JwtImports;
  /** While the accounts are first read, imports are wired once at the end rather than after each. */
  private starting = true;
  /**
   * Told when an account's JetStream limits change after the start (null:
   * no JetStream), or a new account arrives. The server wires its streams
   * here; the core knows nothing of them. At the start the streams read
   * every account's limits themselves.
   */
  onJetStreamLimits: ((key: string, limits: AccountClaims["jetstream"]) => void) | null = null;

  private constructor(
    private readonly broker: Broker,
    readonly auth: JwtAuthenticator,
    private readonly resolver: DirResolverOptions | undefined,
  ) {
    this.imports = new JwtImports(broker.accounts, broker.log, () => this.trusted());
  }

  /** The claims trusted now. */
  private *trusted(): Iterable<AccountClaims> {
    for (const key of this.auth.accountKeys) yield this.auth.account(key)!;
  }

  /**
   * Reads the accounts (preload, then the directory), trusts those that
   * verify, and serves claim requests in the system account. A preloaded
   * JWT that does not verify stops the start; so does a system account with
   * no JWT. A file in the directory that does not verify is left out, and
   * said so: its users cannot connect.
   */
  static async start(broker: Broker, auth: JwtAuthenticator, opts: OperatorOptions): Promise<OperatorMode> {
    const mode = new OperatorMode(broker, auth, opts.resolver);
    const now = Date.now();
    const preloaded: AccountClaims[] = [];
    for (const [key, jwt] of Object.entries(opts.accounts)) preloaded.push(verifyAccountJwt(jwt, auth.trusted, now, key));
    const stored = opts.resolver === undefined ? [] : await mode.readDirectory(opts.resolver.dir, now);
    for (const c of stored) mode.hold(c);
    for (const c of preloaded) {
      const had = mode.held.get(c.key);
      if (had !== undefined && had.claims.issuedAt > c.issuedAt) continue; // the directory has a newer one
      if (opts.resolver !== undefined && had?.claims.jwt !== c.jwt) await writeFileDurably(mode.pathOf(c.key), c.jwt);
      mode.hold(c);
    }
    const sys = broker.system;
    if (sys !== null && broker.options.systemAccount !== undefined && /^A[A-Z2-7]{55}$/.test(sys.name) && !mode.held.has(sys.name)) {
      throw new JwtConfigError(`system account ${sys.name}: the resolver has no JWT for it`);
    }
    for (const { claims } of mode.held.values()) mode.applyAccountClaims(claims);
    mode.starting = false;
    mode.imports.rewire(mode.trusted());
    if (sys !== null) mode.serve(sys);
    return mode;
  }

  close(): void {
    for (const s of this.stops) s();
    this.imports.close();
  }

  /**
   * Makes verified claims take effect: the account exists (made if new),
   * connects are checked against them from now on, and the clients already
   * in the account get them too, as nats-server does: a revoked user, a
   * bearer token the account now refuses, a user whose signing key was
   * removed or re-scoped, and the newest connections past a lowered
   * connection limit are closed; the others take the new subscription and
   * payload limits. Imports and exports are wired anew when they changed.
   * JetStream limits that changed go to onJetStreamLimits.
   */
  applyAccountClaims(claims: AccountClaims): void {
    const account = this.broker.account(claims.key);
    const previous = this.auth.account(claims.key);
    this.auth.setAccount(claims);
    account.limits = claims.limits;
    account.expiresAt = claims.expiresAt;
    account.claims = claims;
    account.updatedAt = new Date();
    const max = claims.limits.maxConnections;
    if (max !== NO_LIMIT && account.members.size > max) {
      const newestFirst = [...account.members].sort((a, b) => b.connectedAt - a.connectedAt);
      for (const m of newestFirst.slice(0, account.members.size - max)) evict(m, Eviction.tooManyConnections);
    }
    for (const m of [...account.members]) {
      const u = m.jwtUser;
      if (u !== null) {
        if (revoked(claims, u.key, u.issuedAt)) {
          evict(m, Eviction.revoked);
          continue;
        }
        if (u.bearer && claims.disallowBearer) {
          evict(m, Eviction.bearerRefused);
          continue;
        }
        if (!claims.signers.has(u.issuer) || (previous !== undefined && JSON.stringify(previous.signers.get(u.issuer)) !== JSON.stringify(claims.signers.get(u.issuer)))) {
          evict(m, Eviction.signerChanged);
          continue;
        }
      }
      m.applyLimits();
    }
    // What the account imports and exports may have changed, for it and for those importing from it.
    if (!this.starting) this.imports.rewire(this.trusted());
    if (!this.starting && (previous === undefined || JSON.stringify(previous.jetstream) !== JSON.stringify(claims.jetstream))) this.onJetStreamLimits?.(claims.key, claims.jetstream);
  }

  /** The account is no longer trusted (deleted): its clients are closed as for an expired account, and it stays expired. */
  removeAccount(key: string): void {
    this.auth.removeAccount(key);
    this.held.delete(key);
    const account = this.broker.accounts.get(key);
    if (account === undefined) return;
    account.expiresAt = Date.now();
    account.updatedAt = new Date();
    for (const m of [...account.members]) evict(m, Eviction.accountExpired);
    this.imports.rewire(this.trusted());
    this.onJetStreamLimits?.(key, null);
  }

  private hold(claims: AccountClaims): void {
    this.held.set(claims.key, { claims });
  }

  private pathOf(key: string): string {
    return join(this.resolver!.dir, `${key}.jwt`);
  }

  /** The directory's `<key>.jwt` files that verify (others are logged and left out). A directory not there yet is empty. */
  private async readDirectory(dir: string, now: number): Promise<AccountClaims[]> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new JwtConfigError(`resolver dir ${dir}: ${(err as Error).message}`);
    }
    const out: AccountClaims[] = [];
    for (const name of names.sort()) {
      const m = JWT_FILE.exec(name);
      if (m === null) continue;
      const path = join(dir, name);
      try {
        out.push(verifyAccountJwt(await readFile(path, "utf8"), this.auth.trusted, now, m[1]));
      } catch (err) {
        this.broker.log.warn(`resolver: ${path} is not used: ${(err as Error).message}`);
      }
    }
    return out;
  }

  private serve(sys: SystemAccount): void {
    const kind = this.resolver?.type;
    const verb = kind === "cache" ? "jwt update cache" : "jwt update";
    const update = (key: string | null, reply: string, body: Buffer): void => {
      this.enqueue(sys, reply, () => this.update(sys, key, reply, body.toString("utf8"), verb));
    };
    this.stops.push(
      sys.subscribe("$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", (subject, reply, body) => update(subject.split(".")[3], reply, body)),
      sys.subscribe("$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP", (subject, reply) => {
        // As nats-server: an account it does not hold gets no answer.
        const held = this.held.get(subject.split(".")[3]);
        if (held !== undefined && reply !== "") sys.publish(reply, held.claims.jwt);
      }),
    );
    if (kind === undefined) return;
    this.stops.push(
      sys.subscribe("$SYS.REQ.CLAIMS.UPDATE", (_subject, reply, body) => update(null, reply, body)),
      sys.subscribe("$SYS.REQ.CLAIMS.LIST", (_subject, reply) => answerClaims(sys, reply, { data: [...this.held.keys()].sort() })),
      sys.subscribe("$SYS.REQ.CLAIMS.DELETE", (_subject, reply, body) => {
        this.enqueue(sys, reply, () => this.delete(sys, reply, body.toString("utf8")));
      }),
    );
  }

  /** Runs `work` after the requests before it, or refuses it when too many wait. */
  private enqueue(sys: SystemAccount, reply: string, work: () => Promise<void>): void {
    if (this.queued >= MAX_QUEUED_CLAIMS_REQUESTS) {
      answerClaims(sys, reply, { error: { code: 503, description: `too many claims requests in progress (${MAX_QUEUED_CLAIMS_REQUESTS}): try again` } });
      return;
    }
    this.queued++;
    this.queue = this.queue.then(work).then(
      () => void this.queued--,
      (err: Error) => {
        this.queued--;
        this.broker.log.error(`claims request failed: ${err.message}`);
      },
    );
  }

  /** One update request, answered as nats-server answers (`jwt updated`, or why not). */
  private async update(sys: SystemAccount, key: string | null, reply: string, jwt: string, verb: string): Promise<void> {
    const answer = (account: string, message: string, err: string | null): void => {
      if (err === null) {
        this.broker.log.debug(`${message} - ${account}`);
        answerClaims(sys, reply, { data: { account, code: 200, message } });
      } else {
        this.broker.log.error(`${message} - ${account} - ${err}`);
        answerClaims(sys, reply, { error: { account, code: 500, description: `${message} - ${err}` } });
      }
    };
    const subject = jwt.trim() === "" ? undefined : verifiedClaims(jwt.trim())?.sub;
    const account = key ?? subject ?? "n/a";
    if (jwt.trim() === "") return answer(account, `${verb} error`, "request body is empty");
    let claims: AccountClaims;
    try {
      claims = verifyAccountJwt(jwt, this.auth.trusted, Date.now());
    } catch (err) {
      return answer(account, `${verb} resulted in error`, (err as Error).message);
    }
    if (key !== null && claims.key !== key) return answer(account, `${verb} resulted in error`, "subject does not match jwt content");
    const had = this.held.get(claims.key);
    // Only a directory resolver of type full learns accounts from updates; the others update what they hold.
    if (had === undefined && this.resolver?.type !== "full") return answer(claims.key, `${verb} skipped`, null);
    if (had !== undefined && had.claims.jwt === claims.jwt) return answer(claims.key, verb === "jwt update" ? "jwt updated" : "jwt updated cache", null);
    // An older JWT (replayed, say, without the revocations that came since) never replaces a newer one.
    if (had !== undefined && claims.issuedAt < had.claims.issuedAt) return answer(claims.key, `${verb} resulted in error`, "the server holds a newer JWT for this account");
    if (this.resolver !== undefined) {
      const limit = this.resolver.limit ?? (this.resolver.type === "cache" ? CACHE_LIMIT : NO_LIMIT);
      if (had === undefined && limit !== NO_LIMIT && this.held.size >= limit) return answer(claims.key, `${verb} resulted in error`, "jwt store is full");
      try {
        await writeFileDurably(this.pathOf(claims.key), claims.jwt);
      } catch (err) {
        return answer(claims.key, `${verb} resulted in error`, (err as Error).message);
      }
    }
    this.hold(claims);
    this.applyAccountClaims(claims);
    answer(claims.key, verb === "jwt update" ? "jwt updated" : "jwt updated cache", null);
  }

  /** `$SYS.REQ.CLAIMS.DELETE`: a generic JWT the operator signed (itself as subject) listing accounts. */
  private async delete(sys: SystemAccount, reply: string, jwt: string): Promise<void> {
    const fail = (by: string, why: string): void => {
      this.broker.log.error(`delete accounts request by ${by} failed - ${why}`);
      answerClaims(sys, reply, { error: { code: 500, description: `delete accounts request by ${by} failed - ${why}` } });
    };
    const g = verifiedClaims(jwt.trim());
    if (g === null) return fail("", "not a JWT whose signature verifies");
    if (this.resolver?.allowDelete !== true) return fail(g.sub, "delete must be enabled in server config");
    if (g.sub !== g.iss) return fail(g.sub, "not self signed");
    if (!this.auth.trusted.has(g.iss)) return fail(g.sub, "not trusted");
    const list = g.nats?.accounts;
    if (!Array.isArray(list) || list.some((k) => typeof k !== "string" || !/^A[A-Z2-7]{55}$/.test(k))) return fail(g.sub, "malformed request");
    if (list.includes(this.broker.system?.name)) return fail(g.sub, "not allowed to delete system account");
    let deleted = 0;
    for (const key of list as string[]) {
      const held = this.held.get(key);
      if (held === undefined) continue;
      try {
        // Kept beside the directory's accounts under another name, as nats-server keeps it, then gone from them.
        await writeFileDurably(`${this.pathOf(key)}.deleted`, held.claims.jwt);
        await removeFileDurably(this.pathOf(key));
      } catch (err) {
        return fail(g.sub, `deleted ${deleted} accounts, then ${key}: ${(err as Error).message}`);
      }
      this.removeAccount(key);
      deleted++;
    }
    this.broker.log.debug(`deleted ${deleted} accounts`);
    answerClaims(sys, reply, { data: { code: 200, message: `deleted ${deleted} accounts` } });
  }
}

/**
 * A claims request's answer: nats-server builds these from a map, so its
 * keys come sorted (`data` or `error`, then `server`), unlike the status
 * requests' envelope.
 */
function answerClaims(sys: SystemAccount, reply: string, answer: { data: unknown } | { error: SystemError }): void {
  if (reply === "") return;
  sys.publish(reply, JSON.stringify({ ...answer, server: sys.serverInfo() }));
}

function evict(m: AccountMember, e: { text: string | null; reason: string }): void {
  m.evict(e.text, e.reason);
}
