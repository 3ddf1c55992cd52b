/**
 * An in-memory copy of every key under a prefix in etcd, kept current by a
 * watch: what membership and the metadata store read from, so reads never
 * wait for etcd and the last known state is still served while etcd is
 * down.
 *
 * The copy is exact at `revision`: a full read at one revision, then the
 * watch's events from `revision + 1`, applied in order. When the watch
 * breaks (etcd restarted, a connection dropped, the client saw etcd stop
 * answering), it is opened again from `revision + 1`: no event is missed,
 * and events at or below `revision` are dropped, so none is seen twice.
 * When etcd has compacted past `revision` (it canceled the watch with its
 * compact revision), or its revision went back (restored from an older
 * backup), nothing can be replayed: a full read replaces the copy, and the
 * differences are reported as changes flagged `resync` (intermediate
 * versions of a key are then not seen, only the latest).
 *
 * The copy's size is bounded by what etcd holds under the prefix, which
 * etcd's own quota bounds (2 GiB by default), and by nagare's key layout.
 */

import type { Logger } from "../util/log.js";
import { Backoff } from "./backoff.js";
import { EtcdError, EtcdUnavailableError, GRPC, RANGE_PAGE, type EtcdClient, type EtcdWatch, type Kv, type WatchEvent } from "./etcd-client.js";

export interface MirrorChange {
  type: "put" | "delete";
  key: string;
  /** The key after a put. */
  kv: Kv | undefined;
  /** The key before the change, when the copy had it. */
  prev: Kv | undefined;
  /** The revision of the change; for a change found by a full read, that read's revision. */
  revision: number;
  /** Found by a full read (the first, or after a compaction), not seen as an event. */
  resync: boolean;
}

/** Retry pacing of the watch: quick after a blip, every 2 s at most while etcd stays away. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2_000;
/** A full read at a revision etcd compacts meanwhile is started over this many times before giving up for a while. */
const READ_ATTEMPTS = 3;

export class PrefixMirror {
  readonly entries = new Map<string, Kv>();
  /** The revision the copy is exact at. */
  revision = 0;
  /** A watch is open and following etcd. */
  live = false;
  /** Why the copy last stopped following etcd. */
  lastError: Error | undefined;
  /** Full reads done (the first one included): a count tests and monitoring read. */
  fullReads = 0;
  private readonly listeners: Array<(c: MirrorChange) => void> = [];
  private readonly waiters = new Set<{ revision: number; done: (reached: boolean) => void; timer: NodeJS.Timeout }>();
  private readonly backoff = new Backoff(RETRY_MIN_MS, RETRY_MAX_MS);
  private current: { watch: EtcdWatch; end: () => void } | undefined;
  private closed = false;
  private readonly onDown = (): void => this.current?.end();
  private readonly onUp = (): void => this.backoff.wake();

  constructor(
    private readonly client: EtcdClient,
    readonly prefix: string,
    private readonly log?: Logger,
  ) {
    // A watch on a connection etcd is no longer behind would wait forever: drop it when requests fail, retry when they pass.
    client.on("down", this.onDown);
    client.on("up", this.onUp);
  }

  /** Called for each change, in revision order; a listener that throws is logged and does not stop the others. */
  onChange(listener: (c: MirrorChange) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Reads everything under the prefix (retrying while etcd is unreachable,
   * up to `timeoutMs`), then follows it until `close()`. Rejects with the
   * last error if no full read succeeded in time.
   */
  async start(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.fullRead();
        break;
      } catch (err) {
        if (this.closed) throw err;
        this.lastError = err as Error;
        if (!(err instanceof EtcdUnavailableError) || Date.now() + RETRY_MAX_MS / 4 > deadline) throw err;
        await this.backoff.wait();
      }
    }
    this.backoff.reset();
    void this.follow();
  }

  /** Resolves true once the copy reaches `revision` (a write of one's own, say), false after `timeoutMs`. */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.revision >= revision) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w = {
        revision,
        done: (reached: boolean) => {
          clearTimeout(w.timer);
          this.waiters.delete(w);
          resolve(reached);
        },
        timer: setTimeout(() => w.done(false), timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.live = false;
    this.client.off("down", this.onDown);
    this.client.off("up", this.onUp);
    this.current?.end();
    this.backoff.wake();
    for (const w of [...this.waiters]) w.done(false);
  }

  private async follow(): Promise<void> {
    let resync = false;
    while (!this.closed) {
      if (resync) {
        try {
          await this.fullRead();
          resync = false;
        } catch (err) {
          this.lastError = err as Error;
          if (this.closed) break;
          await this.backoff.wait();
          continue;
        }
      }
      const outcome = await this.watchOnce();
      if (this.closed) break;
      if (outcome === "resync") resync = true;
      else await this.backoff.wait();
    }
  }

  /** One watch from `revision + 1`, until etcd cancels it ("resync") or it breaks ("ended"). */
  private watchOnce(): Promise<"resync" | "ended"> {
    return new Promise((resolve) => {
      let settled = false;
      const end = (outcome: "resync" | "ended"): void => {
        if (settled) return;
        settled = true;
        this.live = false;
        watch.close();
        this.current = undefined;
        resolve(outcome);
      };
      const watch = this.client.watch(
        { key: this.prefix, prefix: true, startRevision: this.revision + 1 },
        {
          created: (revision) => {
            if (revision < this.revision) {
              this.log?.warn(`etcd: revision ${revision} is below the ${this.revision} already seen under ${this.prefix} (etcd restored from an older backup?): reading everything again`);
              end("resync");
              return;
            }
            this.live = true;
            this.backoff.reset();
          },
          events: (events) => this.apply(events),
          canceled: (compactRevision, reason) => {
            if (compactRevision > 0) this.log?.info(`etcd: history under ${this.prefix} compacted up to ${compactRevision}, past the ${this.revision} seen: reading everything again`);
            else this.log?.warn(`etcd: watch of ${this.prefix} canceled (${reason || "no reason given"}): reading everything again`);
            end("resync");
          },
          ended: (err) => {
            this.lastError = err;
            end("ended");
          },
        },
      );
      this.current = { watch, end: () => end("ended") };
    });
  }

  private apply(events: WatchEvent[]): void {
    // A response holds whole revisions: those at or below the copy's revision were applied before a reconnection.
    const base = this.revision;
    for (const e of events) {
      const rev = e.kv.modRevision;
      if (rev <= base) continue;
      const key = e.kv.key;
      const prev = this.entries.get(key);
      if (e.type === "put") this.entries.set(key, e.kv);
      else this.entries.delete(key);
      if (rev > this.revision) this.revision = rev;
      this.emit({ type: e.type, key, kv: e.type === "put" ? e.kv : undefined, prev, revision: rev, resync: false });
    }
    this.wakeWaiters();
  }

  /** Reads every key at one revision, page by page, and replaces the copy with it, reporting the differences. */
  private async fullRead(): Promise<void> {
    let read: { revision: number; kvs: Map<string, Kv> } | undefined;
    for (let attempt = 1; read === undefined; attempt++) {
      try {
        read = await this.readAll();
      } catch (err) {
        // The revision of the first page was compacted before the last was read: start over at a newer one.
        if (err instanceof EtcdError && err.code === GRPC.OUT_OF_RANGE && attempt < READ_ATTEMPTS) continue;
        throw err;
      }
    }
    this.fullReads++;
    const { revision, kvs } = read;
    for (const [key, prev] of [...this.entries]) {
      if (kvs.has(key)) continue;
      this.entries.delete(key);
      this.emit({ type: "delete", key, kv: undefined, prev, revision, resync: true });
    }
    for (const [key, kv] of kvs) {
      const prev = this.entries.get(key);
      if (prev !== undefined && prev.modRevision === kv.modRevision) continue;
      this.entries.set(key, kv);
      this.emit({ type: "put", key, kv, prev, revision, resync: true });
    }
    this.revision = revision;
    this.wakeWaiters();
  }

  private async readAll(): Promise<{ revision: number; kvs: Map<string, Kv> }> {
    const kvs = new Map<string, Kv>();
    let revision = 0;
    let from = this.prefix;
    for (;;) {
      const r = await this.client.range(from, { prefix: this.prefix, revision: revision || undefined, limit: RANGE_PAGE });
      if (revision === 0) revision = r.revision;
      for (const kv of r.kvs) kvs.set(kv.key, kv);
      if (!r.more || r.kvs.length === 0) return { revision, kvs };
      from = `${r.kvs[r.kvs.length - 1].key}\0`;
    }
  }

  private emit(c: MirrorChange): void {
    for (const l of this.listeners) {
      try {
        l(c);
      } catch (err) {
        this.log?.error(`etcd: a listener of ${this.prefix} failed on ${c.key}: ${(err as Error).stack ?? String(err)}`);
      }
    }
  }

  private wakeWaiters(): void {
    for (const w of [...this.waiters]) if (this.revision >= w.revision) w.done(true);
  }
}
