/**
 * What an account's streams hold on each node, told to the others, so that
 * a publish is judged against the account's storage limits in the whole
 * cluster (nats-server 2.9: every server publishes its account usage on
 * `$JSC.ARU.<account>.<server>` when it changes, at most every 250 ms, and
 * every 1.5 s regardless; each keeps the others' last and adds them up,
 * jsAccount.remoteUpdateUsage / sendClusterUsageUpdate / limitsExceeded).
 *
 * Each node counts the copies it holds, a leader's and a follower's alike,
 * so a replicated stream counts once for each replica, as nats-server's.
 *
 * Over the routes, not etcd: what streams hold changes with every publish,
 * and each change in etcd would be a write in its log, on every member's
 * disk; the routes carry it to every node in one message, and it needs no
 * more than nats-server's eventual consistency. Sent only for an account
 * that bounds its storage or memory: 16 bytes at most every USAGE_CHECK_MS
 * when it changed, every USAGE_REFRESH_MS regardless (a node that just
 * joined, or a route that just formed, learns it so). A report is taken
 * only from a live member, and a member's is forgotten once it is not: the
 * reports kept are at most the cluster's nodes.
 *
 * The publish path reads `JetStream.remoteHeld` alone (jetstream.ts's
 * refusal): the sum is made here when a report comes.
 */

import { Message } from "../subjects/message.js";
import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import { boundsStorage } from "./limits.js";
import type { JetStream } from "./jetstream.js";
import type { StreamDirectory } from "./cluster-streams.js";

/** `$NG.USAGE.<node token>`: every node subscribes to `USAGE_PREFIX>` in each account, over the routes. */
export const USAGE_PREFIX = `${CLUSTER_INTERNAL_PREFIX}USAGE.`;
/** How often a node looks whether what it holds changed (nats-server sends a change at most every 250 ms). */
export const USAGE_CHECK_MS = 250;
/** How often a node sends what it holds though it did not change (nats-server's usageTick). */
export const USAGE_REFRESH_MS = 1500;
/** A report: file bytes, memory bytes, as float64 (exact up to 2^53). */
const REPORT_BYTES = 16;

export class UsageExchange {
  private timer: NodeJS.Timeout | null = null;
  private sentFile = -1;
  private sentMemory = -1;
  private sentAt = -Infinity;
  /** The last report of each other live node, by its subject token. */
  private readonly reports = new Map<string, { node: string; file: number; memory: number }>();
  private readonly subject: string;
  private readonly body = Buffer.alloc(REPORT_BYTES);
  private readonly stopMembers: () => void;

  constructor(
    private readonly js: JetStream,
    private readonly directory: StreamDirectory,
    selfToken: string,
    private readonly nodeToken: (name: string) => string,
  ) {
    this.subject = `${USAGE_PREFIX}${selfToken}`;
    js.limitsChanged = () => this.limitsChanged();
    // A node gone forgets its report: its streams are not counted until it is back and tells them again.
    this.stopMembers = directory.onMembers(() => this.forgetGone());
    this.limitsChanged();
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.stopMembers();
    if (this.js.limitsChanged !== null) this.js.limitsChanged = null;
    this.reports.clear();
    this.sum();
  }

  /** A report from the node of subject token `token` (USAGE_PREFIX stripped), routed here. */
  receive(token: string, data: Buffer, start: number, end: number): void {
    if (end - start !== REPORT_BYTES) return;
    const file = data.readDoubleLE(start);
    const memory = data.readDoubleLE(start + 8);
    if (!(file >= 0 && memory >= 0 && Number.isFinite(file) && Number.isFinite(memory))) return;
    let r = this.reports.get(token);
    if (r === undefined) {
      const node = this.directory.nodes().find((n) => this.nodeToken(n.name) === token)?.name;
      // Not (yet) a live member here: its next report, once this node sees it registered, is taken.
      if (node === undefined || node === this.directory.self) return;
      r = { node, file, memory };
      this.reports.set(token, r);
    }
    r.file = file;
    r.memory = memory;
    this.sum();
  }

  private limitsChanged(): void {
    const bounded = boundsStorage(this.js.limits);
    if (bounded && this.timer === null) {
      this.timer = setInterval(() => this.tick(), USAGE_CHECK_MS);
      this.timer.unref();
      this.sentAt = -Infinity;
      this.tick();
    } else if (!bounded && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private tick(): void {
    const file = this.js.heldHere("file");
    const memory = this.js.heldHere("memory");
    const now = performance.now();
    if (file === this.sentFile && memory === this.sentMemory && now - this.sentAt < USAGE_REFRESH_MS) return;
    this.body.writeDoubleLE(file, 0);
    this.body.writeDoubleLE(memory, 8);
    const m = Message.from(this.subject, "", this.body);
    m.clusterMade = true;
    // Carried by the routes at once (framed into their outbound); this node's own subscription drops it (not routed).
    this.js.account.route(m, null);
    this.sentFile = file;
    this.sentMemory = memory;
    this.sentAt = now;
  }

  private forgetGone(): void {
    let gone = false;
    for (const [token, r] of this.reports) {
      if (!this.directory.isLive(r.node)) {
        this.reports.delete(token);
        gone = true;
      }
    }
    if (gone) this.sum();
  }

  private sum(): void {
    let file = 0;
    let memory = 0;
    for (const r of this.reports.values()) {
      file += r.file;
      memory += r.memory;
    }
    this.js.remoteHeld.file = file;
    this.js.remoteHeld.memory = memory;
  }
}
