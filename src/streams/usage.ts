/**
 * What an account's streams hold and its API served on each node, told to
 * the others, so that a publish is judged against the account's storage
 * limits in the whole cluster and account info (`$JS.API.INFO`, /jsz's
 * account detail) tells the account's totals, as nats-server 2.9 does:
 * every server publishes its account usage (memory, storage, API requests
 * and errors) on `$JSC.ARU.<account>.<server>` when it changes, at most
 * every 250 ms, and every 1.5 s regardless; each keeps the others' last and
 * adds them up (jsAccount.remoteUpdateUsage / sendClusterUsageUpdate /
 * storageTotals / limitsExceeded).
 *
 * Each node counts the copies it holds, a leader's and a follower's alike,
 * so a replicated stream counts once for each replica, as nats-server's.
 * Consumers are counted where their stream is led (its consumers live
 * there; the followers' copies are not counted), so each once, as
 * nats-server's account info counts the meta layer's consumer assignments.
 *
 * Over the routes, not etcd: what streams hold changes with every publish,
 * and each change in etcd would be a write in its log, on every member's
 * disk; the routes carry it to every node in one message, and it needs no
 * more than nats-server's eventual consistency.
 *
 * The cost with many accounts: one report (REPORT_BYTES, ~90 bytes framed
 * on a route) per account. nats-server sends every account's every 1.5 s;
 * with 10,000 idle accounts that is 6,700 messages a second on every route
 * and to every node, for nothing. Here one timer looks at every account
 * every USAGE_CHECK_MS and sends a report when it changed; unchanged, an
 * account that bounds its storage sends it every USAGE_REFRESH_MS (the
 * publish check leans on it, as nats-server's), the others every
 * USAGE_IDLE_REFRESH_MS. What would leave another node without a report
 * sends it at the next check instead: another node's subscription to the
 * reports appearing over a route (a route formed again, a node started,
 * its account's JetStream turned on), a change of the members (a node that
 * returns was forgotten), a change of the account's limits. A report is
 * taken only from a live member, and a member's is forgotten once it is
 * not: the reports kept are at most the cluster's nodes.
 *
 * The publish path reads `JetStream.remoteHeld` alone (jetstream.ts's
 * refusal): the sums are made here when a report comes.
 */

import { Message } from "../subjects/message.js";
import { CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import type { Subscription } from "../subjects/subscription.js";
import { boundsStorage } from "./limits.js";
import type { JetStream } from "./jetstream.js";
import type { StreamDirectory } from "./cluster-streams.js";

/** `$NG.USAGE.<node token>`: every node subscribes to `USAGE_PREFIX*` in each account, over the routes. */
export const USAGE_PREFIX = `${CLUSTER_INTERNAL_PREFIX}USAGE.`;
/** The subject of that subscription: another node's, appearing over a route, is told what this one holds. */
export const USAGE_SUBJECT = `${USAGE_PREFIX}*`;
/** How often a node looks whether what it holds changed (nats-server sends a change at most every 250 ms). */
export const USAGE_CHECK_MS = 250;
/** How often a node sends what an account with a storage limit holds though it did not change (nats-server's usageTick). */
export const USAGE_REFRESH_MS = 1500;
/** The same for an account without one: only account info reads it, and what would leave a node without it sends it at once. */
export const USAGE_IDLE_REFRESH_MS = 30_000;
/** Reports kept from nodes not (yet) seen as live members, at most: taken once they are (a node joining reports first). */
const UNKNOWN_REPORTS_MAX = 16;
/** A report: file bytes, memory bytes, consumers led, API requests answered, API errors, as float64 (exact up to 2^53). */
const REPORT_BYTES = 40;

/** What a node tells of an account. */
interface Usage {
  file: number;
  memory: number;
  consumers: number;
  apiTotal: number;
  apiErrors: number;
}

/** Every exchange of this process, looked at by one timer: a timer for each account cost a wake-up per account. */
const exchanges = new Set<UsageExchange>();
let checkTimer: NodeJS.Timeout | null = null;

function checkAll(): void {
  const now = performance.now();
  for (const x of exchanges) x.check(now);
}

export class UsageExchange {
  private readonly sent: Usage = { file: -1, memory: -1, consumers: -1, apiTotal: -1, apiErrors: -1 };
  private sentAt = -Infinity;
  /** Sent at the next check whatever changed. */
  private due = true;
  /** Spreads the accounts' refreshes over time, so that many started together do not send together ever after. */
  private readonly jitter = 1 + Math.random() * 0.2;
  /** The last report of each other live node, by its subject token. */
  private readonly reports = new Map<string, Usage & { node: string }>();
  /**
   * The last report of nodes not live members here yet, by token: a node that joins may report (once, if idle) before
   * this one sees it registered; taken when it is.
   */
  private readonly unknown = new Map<string, Usage>();
  private readonly subject: string;
  private readonly body = Buffer.alloc(REPORT_BYTES);
  private readonly stopMembers: () => void;
  private closed = false;

  /**
   * @param consumersLed the consumers of the account's streams led here (ClusterApi knows what this node leads)
   */
  constructor(
    private readonly js: JetStream,
    private readonly directory: StreamDirectory,
    selfToken: string,
    private readonly nodeToken: (name: string) => string,
    private readonly consumersLed: () => number,
  ) {
    this.subject = `${USAGE_PREFIX}${selfToken}`;
    js.limitsChanged = () => {
      this.due = true;
    };
    js.account.subscribeListeners.push(this.onSubscribe);
    // A node gone forgets its report: its streams are not counted until it is back and tells them again; a node back (or
    // new) is told this one's, which it forgot.
    this.stopMembers = directory.onMembers(() => {
      this.forgetGone();
      this.takeKnown();
      this.due = true;
    });
    exchanges.add(this);
    if (checkTimer === null) {
      checkTimer = setInterval(checkAll, USAGE_CHECK_MS);
      checkTimer.unref();
    }
    this.check(performance.now());
  }

  /** Another node's subscription to the reports appeared over a route: it holds none of this node's (yet). */
  private readonly onSubscribe = (sub: Subscription): void => {
    if (sub.subject === USAGE_SUBJECT) this.due = true;
  };

  close(): void {
    if (this.closed) return;
    this.closed = true;
    exchanges.delete(this);
    if (exchanges.size === 0 && checkTimer !== null) {
      clearInterval(checkTimer);
      checkTimer = null;
    }
    this.stopMembers();
    const i = this.js.account.subscribeListeners.indexOf(this.onSubscribe);
    if (i >= 0) this.js.account.subscribeListeners.splice(i, 1);
    this.js.limitsChanged = null;
    this.reports.clear();
    this.unknown.clear();
    this.sum();
  }

  /** A report from the node of subject token `token` (USAGE_PREFIX stripped), routed here. */
  receive(token: string, data: Buffer, start: number, end: number): void {
    if (end - start !== REPORT_BYTES) return;
    const file = data.readDoubleLE(start);
    const memory = data.readDoubleLE(start + 8);
    const consumers = data.readDoubleLE(start + 16);
    const apiTotal = data.readDoubleLE(start + 24);
    const apiErrors = data.readDoubleLE(start + 32);
    if (!(countable(file) && countable(memory) && countable(consumers) && countable(apiTotal) && countable(apiErrors))) return;
    let r = this.reports.get(token);
    if (r === undefined) {
      const node = this.liveNode(token);
      if (node === null) {
        // Not (yet) a live member here: kept aside, taken once this node sees it registered.
        if (!this.unknown.has(token) && this.unknown.size >= UNKNOWN_REPORTS_MAX) this.unknown.clear();
        this.unknown.set(token, { file, memory, consumers, apiTotal, apiErrors });
        return;
      }
      r = { node, file, memory, consumers, apiTotal, apiErrors };
      this.reports.set(token, r);
    }
    r.file = file;
    r.memory = memory;
    r.consumers = consumers;
    r.apiTotal = apiTotal;
    r.apiErrors = apiErrors;
    this.sum();
  }

  /** Sends this node's report if it changed, is due, or has not been sent for its refresh period. */
  check(now: number): void {
    const js = this.js;
    const file = js.heldHere("file");
    const memory = js.heldHere("memory");
    const consumers = this.consumersLed();
    const s = this.sent;
    const same = file === s.file && memory === s.memory && consumers === s.consumers && js.apiTotal === s.apiTotal && js.apiErrors === s.apiErrors;
    const refresh = (boundsStorage(js.limits) ? USAGE_REFRESH_MS : USAGE_IDLE_REFRESH_MS) * this.jitter;
    if (same && !this.due && now - this.sentAt < refresh) return;
    const b = this.body;
    b.writeDoubleLE(file, 0);
    b.writeDoubleLE(memory, 8);
    b.writeDoubleLE(consumers, 16);
    b.writeDoubleLE(js.apiTotal, 24);
    b.writeDoubleLE(js.apiErrors, 32);
    const m = Message.from(this.subject, "", b);
    m.clusterMade = true;
    // Carried by the routes at once (framed into their outbound); this node's own subscription drops it (not routed).
    js.account.route(m, null);
    s.file = file;
    s.memory = memory;
    s.consumers = consumers;
    s.apiTotal = js.apiTotal;
    s.apiErrors = js.apiErrors;
    this.sentAt = now;
    this.due = false;
  }

  /** The live member (not this node) whose subject token is `token`, or null. */
  private liveNode(token: string): string | null {
    const node = this.directory.nodes().find((n) => this.nodeToken(n.name) === token)?.name;
    return node === undefined || node === this.directory.self || !this.directory.isLive(node) ? null : node;
  }

  private takeKnown(): void {
    let taken = false;
    for (const [token, u] of this.unknown) {
      const node = this.liveNode(token);
      if (node === null) continue;
      this.unknown.delete(token);
      if (!this.reports.has(token)) {
        this.reports.set(token, { node, ...u });
        taken = true;
      }
    }
    if (taken) this.sum();
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
    let consumers = 0;
    let apiTotal = 0;
    let apiErrors = 0;
    for (const r of this.reports.values()) {
      file += r.file;
      memory += r.memory;
      consumers += r.consumers;
      apiTotal += r.apiTotal;
      apiErrors += r.apiErrors;
    }
    this.js.remoteHeld.file = file;
    this.js.remoteHeld.memory = memory;
    const c = this.js.remoteCounts;
    c.consumers = consumers;
    c.apiTotal = apiTotal;
    c.apiErrors = apiErrors;
  }
}

function countable(n: number): boolean {
  return n >= 0 && Number.isFinite(n);
}
