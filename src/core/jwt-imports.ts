/**
 * Imports and exports declared in account JWTs (operator mode), mapped onto
 * the accounts machinery that configured accounts use (accounts.ts): a JWT
 * export is an export, a JWT import an import, and a token-required export
 * is open to the accounts whose import carries a valid activation token.
 *
 * - `parseExports`/`parseImports` read the claims, refusing what nagare
 *   cannot honour (latency tracking, account token positions, stream
 *   imports remapped with `local_subject`, shared imports): the account
 *   JWT is then not trusted, rather than served without them.
 * - `JwtImports.rewire` wires every trusted account's imports anew when
 *   any account's claims change what is imported or exported. An import
 *   whose exporter is unknown, exports nothing matching to it, or whose
 *   token does not verify (signature, importer, subject, expiry,
 *   revocation) is not wired and is logged, as nats-server marks it
 *   invalid; it is wired once an update makes it valid. A token that
 *   expires unwires its import then.
 */

import { importError, isStreamImport, wireImports, type AccountOptions, type ServiceExport, type ServiceImport, type StreamExport, type StreamImport } from "./accounts.js";
import { covers } from "./auth.js";
import type { Account } from "./account.js";
import { JwtConfigError, verifiedClaims } from "./jwt.js";
import type { AccountClaims } from "./jwt-auth.js";
import { isValidSubscribeSubject } from "../subjects/subject.js";
import type { Logger } from "../util/log.js";

/** An export as the claims give it: who may import it is decided when imports are wired. */
export interface JwtExport {
  export: StreamExport | ServiceExport;
  /** Importers need an activation token signed by this account. */
  tokenRequired: boolean;
  /** Activation tokens (by importer key, or `*`) issued at or before this second are revoked. */
  revocations: Record<string, number>;
}

export interface JwtImport {
  import: StreamImport | ServiceImport;
  /** An activation token (a JWT) from the exporter. */
  token?: string;
}

const NS_PER_MS = 1e6;

/** Timers wait at most this long; a later expiry is looked at again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function subjectOf(v: unknown, what: string): string {
  if (typeof v !== "string" || !isValidSubscribeSubject(v)) throw new JwtConfigError(`${what}: ${JSON.stringify(v)} is not a subject`);
  return v;
}

/** An account JWT's `exports`. */
export function parseExports(list: unknown, what: string): JwtExport[] {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new JwtConfigError(`${what}: exports is not a list`);
  return list.map((x, i) => {
    const e = (x ?? {}) as Record<string, unknown>;
    const at = `${what}: export ${i + 1}`;
    if (e.service_latency !== undefined && e.service_latency !== null) throw new JwtConfigError(`${at}: service latency tracking is not supported yet`);
    if (typeof e.account_token_position === "number" && e.account_token_position !== 0) throw new JwtConfigError(`${at}: account_token_position is not supported yet`);
    const subject = subjectOf(e.subject, at);
    const revocations = (e.revocations ?? {}) as Record<string, number>;
    const tokenRequired = e.token_req === true;
    if (e.type === "stream") return { export: { stream: subject }, tokenRequired, revocations };
    if (e.type !== "service") throw new JwtConfigError(`${at}: type must be stream or service`);
    const rt = e.response_type ?? "Singleton";
    if (rt !== "Singleton" && rt !== "Stream" && rt !== "Chunked") throw new JwtConfigError(`${at}: response_type must be Singleton, Stream or Chunked`);
    const threshold = typeof e.response_threshold === "number" && e.response_threshold > 0 ? Math.max(1, Math.round(e.response_threshold / NS_PER_MS)) : undefined;
    const svc: ServiceExport = { service: subject, responseType: rt === "Singleton" ? "singleton" : "stream", ...(threshold !== undefined ? { responseThresholdMs: threshold } : {}) };
    return { export: svc, tokenRequired, revocations };
  });
}

/** An account JWT's `imports`. */
export function parseImports(list: unknown, self: string, what: string): JwtImport[] {
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new JwtConfigError(`${what}: imports is not a list`);
  return list.map((x, i) => {
    const m = (x ?? {}) as Record<string, unknown>;
    const at = `${what}: import ${i + 1}`;
    if (m.share === true) throw new JwtConfigError(`${at}: share (latency tracking) is not supported yet`);
    if (typeof m.account !== "string" || !/^A[A-Z2-7]{55}$/.test(m.account)) throw new JwtConfigError(`${at}: account is not an account public key`);
    if (m.account === self) throw new JwtConfigError(`${at}: an account cannot import from itself`);
    const subject = subjectOf(m.subject, at);
    const token = typeof m.token === "string" && m.token !== "" ? m.token : undefined;
    const from = { account: m.account, subject };
    const local = typeof m.local_subject === "string" && m.local_subject !== "" ? subjectOf(m.local_subject, at) : undefined;
    const to = typeof m.to === "string" && m.to !== "" ? subjectOf(m.to, at) : undefined;
    if (m.type === "stream") {
      if (local !== undefined) throw new JwtConfigError(`${at}: a stream import remapped with local_subject is not supported yet`);
      // A stream import's `to` is a prefix, as nats-server reads it.
      return { import: { stream: from, ...(to !== undefined ? { prefix: to } : {}) }, ...(token ? { token } : {}) };
    }
    if (m.type !== "service") throw new JwtConfigError(`${at}: type must be stream or service`);
    if (local !== undefined && to !== undefined) throw new JwtConfigError(`${at}: local_subject replaces to`);
    // As the JWT library defines them: a service import's `subject` is what the importer publishes and `to`
    // the exporter's subject; with `local_subject`, `subject` is the exporter's and `local_subject` the importer's.
    const [remote, mine] = local !== undefined ? [subject, local] : to !== undefined ? [to, subject] : [subject, subject];
    if (remote !== mine && /(^|\.)[*>](\.|$)/.test(remote + "." + mine)) throw new JwtConfigError(`${at}: a wildcard service import under another subject is not supported yet`);
    if (local !== undefined) return { import: { service: from, to: local }, ...(token ? { token } : {}) };
    if (to !== undefined) return { import: { service: { account: m.account, subject: to }, to: subject }, ...(token ? { token } : {}) };
    return { import: { service: from }, ...(token ? { token } : {}) };
  });
}

/** Why an activation token does not open `exp` to `importer` for `imp`, or null; with when the token expires (ms, 0: never). */
function tokenProblem(token: string, exporter: AccountClaims, importer: string, exp: JwtExport, imp: StreamImport | ServiceImport, now: number): { why: string | null; expiresAt: number } {
  const c = verifiedClaims(token.trim());
  if (c === null) return { why: "its activation token's signature does not verify", expiresAt: 0 };
  const nats = c.nats ?? {};
  if (nats.type !== "activation") return { why: "its token is not an activation JWT", expiresAt: 0 };
  const issuerAccount = typeof nats.issuer_account === "string" && nats.issuer_account !== "" ? nats.issuer_account : c.iss;
  if (issuerAccount !== exporter.key || !exporter.signers.has(c.iss)) return { why: "its token is not signed by the exporting account", expiresAt: 0 };
  if (c.sub !== importer) return { why: "its token is for another account", expiresAt: 0 };
  const kind = nats.kind ?? nats.import_type;
  if (kind !== undefined && kind !== (isStreamImport(imp) ? "stream" : "service")) return { why: "its token is for another kind of import", expiresAt: 0 };
  const subject = typeof nats.subject === "string" ? nats.subject : typeof nats.import_subject === "string" ? nats.import_subject : "";
  const wanted = isStreamImport(imp) ? imp.stream.subject : imp.service.subject;
  if (subject === "" || !covers(subject, wanted)) return { why: "its token is for another subject", expiresAt: 0 };
  const expiresAt = c.exp !== undefined && c.exp > 0 ? c.exp * 1000 : 0;
  if (expiresAt > 0 && expiresAt <= now) return { why: "its token has expired", expiresAt: 0 };
  const revokedAt = exp.revocations[importer] ?? exp.revocations["*"];
  if (revokedAt !== undefined && (c.iat ?? 0) <= revokedAt) return { why: "its token is revoked", expiresAt: 0 };
  return { why: null, expiresAt };
}

/** The exports `imp` could be served by (same kind, subject within the export's). */
function matchingExports(exporter: AccountClaims, imp: StreamImport | ServiceImport): JwtExport[] {
  const stream = isStreamImport(imp);
  const subject = stream ? imp.stream.subject : imp.service.subject;
  return exporter.exports.filter((e) => ("stream" in e.export) === stream && covers("stream" in e.export ? e.export.stream : e.export.service, subject));
}

export class JwtImports {
  private stop: () => void = () => {};
  private wired = "";
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly accounts: Map<string, Account>,
    private readonly log: Logger,
    /** The trusted claims now, for a rewire when a token expires. */
    private readonly current: () => Iterable<AccountClaims>,
  ) {}

  /** Wires the imports of every account in `all` (the trusted claims), replacing what was wired if anything changed. */
  rewire(all: Iterable<AccountClaims>): void {
    const claims = new Map<string, AccountClaims>();
    for (const c of all) claims.set(c.key, c);
    const now = Date.now();
    let nextExpiry = 0;
    // Each account's exports, open to everyone unless a token is required; then to the importers whose token verifies.
    const config: Record<string, AccountOptions> = {};
    const approved = new Map<JwtExport, string[]>();
    const invalid = new Map<string, Set<object>>();
    const leaveOut = (key: string, i: StreamImport | ServiceImport, why: string): void => {
      const from = isStreamImport(i) ? i.stream : i.service;
      this.log.warn(`account ${key}: import of ${from.subject} from ${from.account} is not wired: ${why}`);
      invalid.get(key)!.add(i);
    };
    for (const c of claims.values()) {
      config[c.key] = { exports: [], imports: [] };
      invalid.set(c.key, new Set());
    }
    for (const c of claims.values()) {
      for (const i of c.imports) {
        const from = isStreamImport(i.import) ? i.import.stream : i.import.service;
        const exporter = claims.get(from.account);
        if (exporter === undefined) {
          leaveOut(c.key, i.import, "no such account");
          continue;
        }
        const candidates = matchingExports(exporter, i.import);
        const open = candidates.some((e) => !e.tokenRequired);
        if (!open && candidates.length > 0) {
          if (i.token === undefined) {
            leaveOut(c.key, i.import, "the export needs an activation token");
            continue;
          }
          let why: string | null = "no export matches";
          for (const e of candidates) {
            const t = tokenProblem(i.token, exporter, c.key, e, i.import, now);
            why = t.why;
            if (why === null) {
              approved.set(e, [...(approved.get(e) ?? []), c.key]);
              if (t.expiresAt > 0 && (nextExpiry === 0 || t.expiresAt < nextExpiry)) nextExpiry = t.expiresAt;
              break;
            }
          }
          if (why !== null) {
            leaveOut(c.key, i.import, why);
            continue;
          }
        }
        config[c.key].imports!.push(i.import);
      }
    }
    for (const c of claims.values()) {
      for (const e of c.exports) config[c.key].exports!.push(e.tokenRequired ? { ...e.export, accounts: approved.get(e) ?? [] } : e.export);
    }
    // Imports that nothing exports (to them) are left out.
    for (const [key, a] of Object.entries(config)) {
      a.imports = a.imports!.filter((i) => {
        const why = importError(config, key, i);
        if (why !== null) leaveOut(key, i, why);
        return why === null;
      });
    }
    for (const [key, set] of invalid) {
      const account = this.accounts.get(key);
      if (account !== undefined) account.invalidImports = set;
    }
    this.scheduleExpiry(nextExpiry, now);
    const signature = JSON.stringify(config);
    if (signature === this.wired) return;
    this.stop();
    this.wired = signature;
    this.stop = wireImports(config, this.accounts);
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.stop();
  }

  /** The earliest token expiry rewires, which leaves the expired import out. */
  private scheduleExpiry(at: number, now: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (at === 0) return;
    this.timer = setTimeout(() => this.rewire(this.current()), Math.min(MAX_TIMER_MS, Math.max(0, at - now) + 1));
    this.timer.unref();
  }
}
