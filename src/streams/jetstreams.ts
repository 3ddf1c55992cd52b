/**
 * JetStream per account, as nats-server serves it: each account with
 * JetStream has its own streams, its own `$JS.API.>` in its own subject
 * space, its own limits and its own directory; an account without it is
 * answered "JetStream not enabled for account". One store directory,
 * checked and locked once, holds them all:
 *
 *   <store>/streams/...                     the default account ($G), as before accounts had JetStream
 *   <store>/accounts/<account>/streams/...  every other account (its name URI-encoded)
 *
 * so a store written by a single-account server opens unchanged as `$G`'s.
 * An account whose JetStream is turned off keeps its files; turning it on
 * again serves them.
 */

import { join } from "node:path";
import type { Account } from "../core/account.js";
import { GLOBAL_ACCOUNT } from "../core/account.js";
import { Message } from "../subjects/message.js";
import { safeJoin } from "../util/persist.js";
import { checkStoreDir, lockStoreDir, type StoreLock } from "../store/store-dir.js";
import { DisabledApi, JetStreamApi } from "./api.js";
import { JetStream, type JetStreamOptions } from "./jetstream.js";
import type { AccountLimits } from "./limits.js";
import type { ClusterStreams } from "./cluster-streams.js";

interface Served {
  js: JetStream;
  api: JetStreamApi;
}

/** The directory of an account's streams under the store directory. */
export function accountStoreDir(storeDir: string, account: string): string {
  return account === GLOBAL_ACCOUNT ? storeDir : safeJoin(join(storeDir, "accounts"), account);
}

/** Whether an account answers `$JS.API.INFO` through a service import: then it needs no "not enabled" answer of its own. */
export type ImportsJetStream = (account: Account) => boolean;

export class JetStreams {
  private readonly served = new Map<string, Served>();
  private readonly disabled = new Map<string, DisabledApi>();
  /** Enables and disables of one account, one after another. */
  private readonly pending = new Map<string, Promise<void>>();
  private closed = false;
  /** Told the name of an account whose JetStream was turned on or off (a door that holds its streams lets go of them). */
  readonly changeListeners = new Set<(account: string) => void>();
  /** Given each JetStream opened from now on, before its streams load and capture anything (a door reserving its own names in it). */
  readonly openListeners = new Set<(js: JetStream) => void>();
  /** The cluster's streams, once the server joined a cluster (null: a single node, as before clustering). */
  cluster: ClusterStreams | null = null;

  private constructor(
    readonly options: JetStreamOptions,
    private readonly lock: StoreLock,
    private readonly importsJetStream: ImportsJetStream,
  ) {}

  /**
   * Checks and locks the store directory (a bad one stops the start), then
   * opens the JetStream of every account in `enabled` and answers the
   * others' API requests as nats-server does.
   */
  static async start(options: JetStreamOptions, accounts: Iterable<Account>, enabled: Map<string, AccountLimits>, importsJetStream: ImportsJetStream = () => false): Promise<JetStreams> {
    await checkStoreDir(options.storeDir);
    const lock = await lockStoreDir(options.storeDir);
    const all = new JetStreams(options, lock, importsJetStream);
    try {
      for (const account of accounts) await all.setLimits(account, enabled.get(account.name) ?? null);
    } catch (err) {
      await all.close();
      throw err;
    }
    return all;
  }

  /** The JetStream of an account, when it has one. */
  get(account: string): JetStream | undefined {
    return this.served.get(account)?.js;
  }

  /** The default account's ($G): what a single-account server serves. */
  get global(): JetStream | undefined {
    return this.get(GLOBAL_ACCOUNT);
  }

  /** Joins the cluster: every account's JetStream (and any turned on later) follows the cluster's placements from now on. */
  attachCluster(cluster: ClusterStreams): void {
    this.cluster = cluster;
    for (const s of this.served.values()) {
      s.js.joinCluster(cluster);
      s.api.joinCluster(cluster);
    }
  }

  /**
   * Lame duck in a cluster: moves every stream this node leads, account by
   * account and one at a time, until `deadline` (performance.now()).
   */
  async drain(deadline: number): Promise<{ moved: string[]; stayed: Array<{ stream: string; why: string }> }> {
    const out = { moved: [] as string[], stayed: [] as Array<{ stream: string; why: string }> };
    for (const [account, s] of this.served) {
      const r = await s.api.drain(deadline);
      const named = (n: string): string => (account === GLOBAL_ACCOUNT ? n : `${account}/${n}`);
      out.moved.push(...r.moved.map(named));
      out.stayed.push(...r.stayed.map((x) => ({ stream: named(x.stream), why: x.why })));
    }
    return out;
  }

  /** Why the store directory is no longer the one locked at the start (removed or replaced while running), or null. */
  storeDirGone(): string | null {
    return this.lock.gone();
  }

  /** Every account's JetStream, by account name. */
  all(): JetStream[] {
    return [...this.served.values()].map((s) => s.js);
  }

  /**
   * Applies an account's JetStream limits while running, as an account JWT
   * update does in nats-server: `null` turns its JetStream off (its streams
   * close, their files stay; its API answers "JetStream not enabled for
   * account"), limits turn it on (its streams open from its directory) or
   * change the limits of the running one (they apply to what is created
   * and stored from then on). Resolves once done; calls for one account run
   * in order.
   */
  setLimits(account: Account, limits: AccountLimits | null): Promise<void> {
    const prev = this.pending.get(account.name) ?? Promise.resolve();
    const run = prev.then(() => this.apply(account, limits));
    const tail = run.catch(() => undefined);
    this.pending.set(account.name, tail);
    void tail.then(() => {
      if (this.pending.get(account.name) === tail) this.pending.delete(account.name);
    });
    return run;
  }

  private async apply(account: Account, limits: AccountLimits | null): Promise<void> {
    if (this.closed) return;
    const name = account.name;
    const running = this.served.get(name);
    if (limits !== null && running !== undefined) {
      const tooMuch = this.options.serverLimits?.accountError(running.js, limits) ?? null;
      if (tooMuch !== null) throw new Error(`JetStream for account ${name}: ${tooMuch.message}: its new limits and the other accounts' exceed the server's jetstream max_mem/max_file`);
      running.js.setLimits(limits);
      return;
    }
    if (limits === null) {
      if (running !== undefined) {
        this.served.delete(name);
        running.api.close();
        await running.js.close();
        this.options.log.info(`JetStream disabled for account ${name}`);
        for (const l of this.changeListeners) l(name);
      }
      if (!this.disabled.has(name) && !this.importsJetStream(account)) {
        this.disabled.set(name, new DisabledApi(account, (reply, body) => account.route(Message.from(reply, "", body), null)));
      }
      return;
    }
    // nats-server's sufficientResources: an account's limits that the server's cannot honour leave it without JetStream.
    const tooMuch = this.options.serverLimits?.accountError(null, limits) ?? null;
    if (tooMuch !== null) throw new Error(`JetStream for account ${name}: ${tooMuch.message}: its limits and the other accounts' exceed the server's jetstream max_mem/max_file`);
    const js = await JetStream.open(account, { ...this.options, storeDir: accountStoreDir(this.options.storeDir, name) }, limits, (opened) => {
      for (const l of this.openListeners) l(opened);
    });
    if (this.closed) {
      await js.close();
      return;
    }
    if (this.cluster !== null) js.joinCluster(this.cluster);
    this.disabled.get(name)?.close();
    this.disabled.delete(name);
    const api = new JetStreamApi(js);
    if (this.cluster !== null) api.joinCluster(this.cluster);
    this.served.set(name, { js, api });
    for (const l of this.changeListeners) l(name);
    if (name !== GLOBAL_ACCOUNT) this.options.log.info(`JetStream enabled for account ${name}, storing under ${js.options.storeDir}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.pending.values()]);
    for (const d of this.disabled.values()) d.close();
    this.disabled.clear();
    for (const s of this.served.values()) s.api.close();
    this.options.apiRequests?.close();
    for (const s of this.served.values()) await s.js.close();
    this.served.clear();
    // Only once every file is closed: a server that stopped waiting (server.ts) keeps the store locked until they are.
    await this.lock.release();
  }

  /** The streams close() has not finished closing, named with their account's when not the default one. */
  unclosed(): string[] {
    const out: string[] = [];
    for (const [account, s] of this.served) for (const what of s.js.unclosed()) out.push(account === GLOBAL_ACCOUNT ? what : `${what} of account ${account}`);
    return out;
  }
}
