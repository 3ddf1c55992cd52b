/**
 * Cluster metadata in etcd, under `<prefix>/<cluster>/meta/`: where the
 * placement of streams and partitions and cluster-wide settings will live.
 *
 * Reads come from an in-memory copy (a `PrefixMirror`), so they never wait
 * for etcd and go on serving the last known state while etcd is down.
 * Every change is one etcd transaction that
 * - compares each key's modification revision with the revision the
 *   caller read (0: the key must not exist; null: none, the key is
 *   written whatever it holds), so of two writers who read
 *   the same revision only one wins; the other gets a
 *   `ConcurrentChangeError` naming the key and both revisions, re-reads
 *   and decides again;
 * - is fenced by this node's lease: the node must hold it locally
 *   (`Membership.holdsLease()`), and the transaction also compares that
 *   the node's key still carries it, so a node whose lease etcd has
 *   expired cannot change anything, however late its request arrives.
 * While etcd does not answer, changes are refused at once with a
 * `MetadataUnavailableError` (no waiting on a request doomed to time out).
 */

import type { Logger } from "../util/log.js";
import { EtcdUnavailableError, type EtcdClient, type EtcdCompare, type EtcdOp, type Kv } from "./etcd-client.js";
import type { Membership } from "./membership.js";
import { PrefixMirror, type MirrorChange } from "./prefix-mirror.js";

/** Below the metadata prefix: each node's registration marker (`Membership`'s `markerKey`), under its lease. */
export const REGISTERED_PREFIX = "registered/";

export interface MetaEntry {
  /** The key below the metadata prefix. */
  key: string;
  value: string;
  /** etcd's modification revision: what a change must name to replace it. */
  revision: number;
  /** Changes since the key was created (1 for a new key). */
  version: number;
}

/** Puts `value` at `key`, or deletes it, if its revision is still `expect` (0: it must not exist; null: whatever it is). */
export type MetaOp = { key: string; expect: number | null; put: string } | { key: string; expect: number | null; delete: true };

export interface MetaChange {
  type: "put" | "delete";
  key: string;
  entry: MetaEntry | undefined;
  revision: number;
  /** Found by a full read after etcd compacted the history, not seen as it happened. */
  resync: boolean;
}

/** Another change reached the key first: re-read and decide again. */
export class ConcurrentChangeError extends Error {
  constructor(
    readonly key: string,
    readonly expected: number,
    readonly found: number,
  ) {
    super(`metadata ${JSON.stringify(key)} changed concurrently: expected it at revision ${expected === 0 ? "0 (absent)" : expected}, found ${found === 0 ? "it absent" : `revision ${found}`}`);
    this.name = "ConcurrentChangeError";
  }
}

/** This node does not hold its lease: it may change nothing (another node may already lead what it led). */
export class FencedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FencedError";
  }
}

/** etcd does not answer. `maybeApplied`: the change was sent and may have been applied; re-read to know. */
export class MetadataUnavailableError extends Error {
  constructor(
    message: string,
    readonly maybeApplied: boolean,
  ) {
    super(message);
    this.name = "MetadataUnavailableError";
  }
}

/** etcd's default `--max-txn-ops` is 128; one comparison goes to the fence. */
export const MAX_OPS_PER_CHANGE = 127;

export interface MetadataStoreOptions {
  client: EtcdClient;
  /** `<prefix>/<cluster>/meta/` */
  metaPrefix: string;
  /** Fences every change with this node's lease; without it (tools, tests) changes are compared by revision only. */
  membership?: Membership;
  log?: Logger;
}

export class MetadataStore {
  private readonly client: EtcdClient;
  private readonly prefix: string;
  private readonly membership: Membership | undefined;
  readonly mirror: PrefixMirror;

  constructor(o: MetadataStoreOptions) {
    this.client = o.client;
    this.prefix = o.metaPrefix;
    this.membership = o.membership;
    this.mirror = new PrefixMirror(o.client, o.metaPrefix, o.log);
  }

  /** Reads everything, then follows etcd; rejects if the first read failed within `timeoutMs`. */
  start(timeoutMs: number): Promise<void> {
    return this.mirror.start(timeoutMs);
  }

  close(): void {
    this.mirror.close();
  }

  /** The revision the copy is exact at. */
  get revision(): number {
    return this.mirror.revision;
  }

  /** How long one etcd request may take. */
  get requestTimeoutMs(): number {
    return this.client.requestTimeoutMs;
  }

  /** Whether the copy follows etcd now (false while etcd is away: reads are the last known state). */
  get live(): boolean {
    return this.mirror.live;
  }

  get(key: string): MetaEntry | undefined {
    const kv = this.mirror.entries.get(this.prefix + key);
    return kv === undefined ? undefined : this.entry(kv);
  }

  /** Entries whose key starts with `prefix`, in key order. */
  list(prefix = ""): MetaEntry[] {
    const full = this.prefix + prefix;
    const out: MetaEntry[] = [];
    for (const kv of this.mirror.entries.values()) if (kv.key.startsWith(full)) out.push(this.entry(kv));
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  onChange(listener: (c: MetaChange) => void): void {
    this.mirror.onChange((c: MirrorChange) =>
      listener({ type: c.type, key: c.key.slice(this.prefix.length), entry: c.kv === undefined ? undefined : this.entry(c.kv), revision: c.revision, resync: c.resync }),
    );
  }

  /** Resolves true once the copy has the change made at `revision` (from `commit`), false after `timeoutMs`. */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    return this.mirror.waitForRevision(revision, timeoutMs);
  }

  /**
   * Applies every operation, or none: throws `ConcurrentChangeError` if a
   * key is no longer at the revision expected, `FencedError` if this node
   * does not hold its lease, `MetadataUnavailableError` if etcd does not
   * answer. Resolves with the revision of the change, once `get` reads it
   * (or after the request timeout if the watch is down meanwhile).
   * `absent`: whole etcd keys, outside the metadata, that must not exist
   * either (a node's registration, for a change that counts on its
   * absence): one found is a `ConcurrentChangeError` too.
   */
  async commit(ops: MetaOp[], absent: readonly string[] = []): Promise<number> {
    if (ops.length === 0) throw new Error("a metadata change needs at least one operation");
    if (ops.length > MAX_OPS_PER_CHANGE) throw new Error(`a metadata change holds at most ${MAX_OPS_PER_CHANGE} operations (etcd's transaction limit), got ${ops.length}`);
    for (const op of ops) if (op.key === "") throw new Error("a metadata key must not be empty");
    const m = this.membership;
    const lease = m?.leaseId;
    if (m !== undefined && (lease === undefined || !m.holdsLease())) {
      throw new FencedError(`metadata change refused: this node does not hold its etcd lease (${m.state}): it may lead nothing until it registers again`);
    }
    if (!this.client.reachable) {
      throw new MetadataUnavailableError(
        `metadata change refused: etcd does not answer (${this.client.lastError?.message ?? "unreachable"}); the last known metadata (revision ${this.revision}) is still served`,
        false,
      );
    }
    const compare: EtcdCompare[] = [];
    for (const op of ops) if (op.expect !== null) compare.push({ key: this.prefix + op.key, modRevision: op.expect });
    const success: EtcdOp[] = ops.map((op) => ("put" in op ? { put: this.prefix + op.key, value: op.put } : { delete: this.prefix + op.key }));
    const failure: EtcdOp[] = ops.map((op) => ({ range: this.prefix + op.key }));
    if (m !== undefined && lease !== undefined) {
      compare.push({ key: m.key, lease });
      failure.push({ range: m.key });
    }
    // A missing key's modification revision is 0.
    for (const key of absent) {
      compare.push({ key, modRevision: 0 });
      failure.push({ range: key });
    }
    const absentAt = failure.length - absent.length;
    let r;
    try {
      r = await this.client.txn(compare, success, failure);
    } catch (err) {
      if (err instanceof EtcdUnavailableError) {
        throw new MetadataUnavailableError(
          err.maybeApplied ? `metadata change sent but not confirmed (${err.message}): it may or may not have been applied` : `metadata change refused: ${err.message}`,
          err.maybeApplied,
        );
      }
      throw err;
    }
    if (r.succeeded) {
      // Read your writes: the copy has the change when commit resolves (unless the watch is down: the change stands anyway).
      await this.mirror.waitForRevision(r.revision, this.client.requestTimeoutMs);
      return r.revision;
    }
    if (m !== undefined && lease !== undefined) {
      const own = r.responses[ops.length]?.kvs[0];
      if (own === undefined || own.lease !== lease) {
        m.fence(`a metadata change found its key ${m.key} ${own === undefined ? "gone" : `held by lease ${own.lease}`}`, lease);
        throw new FencedError(`metadata change refused: this node's lease ${lease} no longer holds its key in etcd`);
      }
    }
    for (let i = 0; i < ops.length; i++) {
      const found = r.responses[i]?.kvs[0]?.modRevision ?? 0;
      const expect = ops[i].expect;
      if (expect === null || found === expect) continue;
      // The caller re-reads the copy and decides again: it must hold the change that won by then (the key's own
      // revision: etcd's may be of keys the copy never sees). Else a caller that retries (placing a stream another node
      // placed first) sent one losing change after another, as fast as etcd answered, until the copy caught up.
      if (found > 0) await this.mirror.waitForRevision(found, this.client.requestTimeoutMs);
      throw new ConcurrentChangeError(ops[i].key, expect, found);
    }
    for (let i = 0; i < absent.length; i++) {
      const found = r.responses[absentAt + i]?.kvs[0]?.modRevision ?? 0;
      if (found !== 0) throw new ConcurrentChangeError(absent[i], 0, found);
    }
    throw new Error("etcd refused the metadata change without a failed comparison");
  }

  private entry(kv: Kv): MetaEntry {
    return { key: kv.key.slice(this.prefix.length), value: kv.value, revision: kv.modRevision, version: kv.version };
  }
}
