/**
 * The protocol-independent heart of a server: accounts, the set of live
 * connections, counters, and the write-coalescing schedule shared by every
 * door. Doors import this; it imports no door.
 */

import { randomBytes } from "node:crypto";
import type { TlsPeerCert } from "./tls-names.js";
import { Account, GLOBAL_ACCOUNT } from "./account.js";
import { wireImports } from "./accounts.js";
import { SystemAccount } from "./system.js";
import type { ResolvedOptions } from "./options.js";
import { ClosedConnections } from "./closed-connections.js";
import type { Logger } from "../util/log.js";

/** What monitoring needs to know of any connection, whatever its door. */
export interface ConnectionInfo {
  cid: number;
  kind: string;
  /** The protocol, as nats-server names it ("nats", "mqtt", …; "kafka" for the Kafka door). */
  type: string;
  ip: string;
  port: number;
  start: string;
  last_activity: string;
  /** When a closed connection closed, and why (nats-server's reasons: "Client Closed", "Stale Connection", …): only in `state=closed`. */
  stop?: string;
  reason?: string;
  rtt?: string;
  uptime: string;
  idle: string;
  pending_bytes: number;
  in_msgs: number;
  out_msgs: number;
  in_bytes: number;
  out_bytes: number;
  subscriptions: number;
  name?: string;
  lang?: string;
  version?: string;
  /** The account the connection belongs to. */
  account?: string;
  /** The user the connection authenticated as (nats-server shows it with `?auth=1`). */
  authorized_user?: string;
  /** A TLS connection's version (`1.3`) and suite, by nats-server's names. */
  tls_version?: string;
  tls_cipher_suite?: string;
  /** The client's certificates (shown with `?auth=1`, as nats-server). */
  tls_peer_certs?: TlsPeerCert[];
  subscriptions_list?: string[];
  /** An MQTT client's id (nats-server's `mqtt_client`; nagare has no MQTT door yet, so no connection has one). */
  mqtt_client?: string;
}

export interface Connection {
  readonly cid: number;
  /** Writes whatever deliveries were queued since the last flush. */
  flushOutbound(): void;
  /** Periodic upkeep: pings, write deadlines. `now` in ms. */
  tick(now: number): void;
  info(now: number, withSubs: boolean): ConnectionInfo;
  /** The last measured round-trip time in nanoseconds (0: none yet), for `/connz?sort=rtt`. */
  rttNs?(): number;
  /** Tells the peer the server is going away (lame duck), if the protocol can. */
  notifyLameDuck(): void;
  /** The cluster's client URLs changed: a client that understands INFO updates is told. */
  infoChanged?(): void;
  close(reason: string): void;
}

/** A connection whose reads can be paused while a receiver it floods catches up. */
export interface Producer {
  stall(until: NodeJS.EventEmitter): void;
}

export interface BrokerStats {
  inMsgs: number;
  outMsgs: number;
  inBytes: number;
  outBytes: number;
  slowConsumers: number;
  totalConnections: number;
  staleConnections: number;
}

/**
 * The version we advertise. Clients pick features by it, so it promises
 * what nats-server 2.10 does: headers, no-responders, and the JetStream API
 * with named consumer creation, direct get, multiple consumer filters,
 * stream metadata, consumer limits, subject transforms and republish, all
 * of which nagare implements. The 2.10 stream settings it cannot honour
 * (s2 compression, and first_seq until the store can start a log past
 * sequence 1) are refused with an error, never accepted and ignored.
 */
export const ADVERTISED_VERSION = "2.10.0";

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** 56 characters of upper-case base32 starting with N, the shape of a nats-server id (an nkey). */
function newServerId(): string {
  const bytes = randomBytes(55);
  let id = "N";
  for (let i = 0; i < 55; i++) id += BASE32[bytes[i] & 31];
  return id;
}

export class Broker {
  readonly serverId: string;
  readonly serverName: string;
  readonly startedAt = new Date();
  readonly accounts = new Map<string, Account>();
  readonly globalAccount: Account;
  readonly connections = new Map<number, Connection>();
  /** The last closed client connections (`max_closed_clients` of them), for `/connz?state=closed`. */
  readonly closed: ClosedConnections;
  /** The system account, unless `no_system_account`: where status requests are answered and events announced. */
  readonly system: SystemAccount | null;
  /** Told of each account added while running (operator mode's resolver learns accounts from claim updates). */
  readonly accountListeners: Array<(account: Account) => void> = [];
  readonly stats: BrokerStats = {
    inMsgs: 0,
    outMsgs: 0,
    inBytes: 0,
    outBytes: 0,
    slowConsumers: 0,
    totalConnections: 0,
    staleConnections: 0,
  };
  lameDuck = false;
  /** Where clients reach us, once the client listener is up (advertised in INFO). */
  clientPort = 0;
  /** Every node's client URLs (host:port) when in a cluster: clients get them as INFO `connect_urls`. */
  clientConnectUrls: string[] = [];
  private nextCid = 1;
  private readonly dirty: Connection[] = [];
  private readonly dirtySet = new Set<Connection>();
  private flushScheduled = false;
  private readDepth = 0;
  private readonly ticker: NodeJS.Timeout;
  private readonly stopImports: () => void;

  constructor(
    readonly options: ResolvedOptions,
    readonly log: Logger,
  ) {
    this.serverId = newServerId();
    this.serverName = options.serverName || this.serverId;
    this.closed = new ClosedConnections(options.maxClosedClients);
    this.globalAccount = new Account(GLOBAL_ACCOUNT);
    this.accounts.set(GLOBAL_ACCOUNT, this.globalAccount);
    for (const name of Object.keys(options.accounts ?? {})) this.accounts.set(name, new Account(name));
    // Operator mode's accounts are made as their claims are applied (core/operator.ts).
    if (options.systemAccount === undefined) {
      this.system = null;
    } else {
      // `$SYS` is made when no configured account is the system account, as nats-server does.
      const account = this.accounts.get(options.systemAccount) ?? new Account(options.systemAccount);
      this.accounts.set(account.name, account);
      const identity = { id: this.serverId, name: this.serverName, host: options.host, version: ADVERTISED_VERSION, jetstream: options.jetstream };
      this.system = new SystemAccount(account, identity);
    }
    this.stopImports = options.accounts === undefined ? () => {} : wireImports(options.accounts, this.accounts);
    // One timer for every connection's upkeep; per-connection timers would
    // cost a closure and a timer each for 100k idle clients.
    const period = Math.max(10, Math.min(1000, Math.floor(options.pingInterval / 4), Math.floor(options.writeDeadline / 4)));
    this.ticker = setInterval(() => this.tick(), period);
    this.ticker.unref();
  }

  /** The account named `name`, made (and announced to `accountListeners`) if there is none yet. */
  account(name: string): Account {
    let a = this.accounts.get(name);
    if (a === undefined) {
      a = new Account(name);
      this.accounts.set(name, a);
      for (const l of this.accountListeners) l(a);
    }
    return a;
  }

  allocateCid(): number {
    return this.nextCid++;
  }

  register(conn: Connection): void {
    this.connections.set(conn.cid, conn);
    this.stats.totalConnections++;
  }

  unregister(conn: Connection): void {
    this.connections.delete(conn.cid);
    this.dirtySet.delete(conn);
  }

  /** The connection whose read is being processed, if it can be stalled. */
  producer: Producer | null = null;

  /** Doors call this around the processing of one read, so that writes coalesce. */
  beginRead(producer: Producer | null): void {
    this.readDepth++;
    this.producer = producer;
  }

  /**
   * Ends one read: what it queued is written now, or with `deferFlush` once
   * this turn's reads are all done (before the event loop waits again), so
   * that several reads in one turn make one write per receiver.
   */
  endRead(deferFlush = false): void {
    this.producer = null;
    if (--this.readDepth !== 0) return;
    if (!deferFlush) this.flushDirty();
    else if (this.dirty.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushDirtyFromTimer);
    }
  }

  /** Queues a connection for flushing at the end of the current read, or on the next turn. */
  markDirty(conn: Connection): void {
    if (this.dirtySet.has(conn)) return;
    this.dirtySet.add(conn);
    this.dirty.push(conn);
    if (this.readDepth === 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushDirtyFromTimer);
    }
  }

  private readonly flushDirtyFromTimer = (): void => {
    this.flushScheduled = false;
    this.flushDirty();
  };

  flushDirty(): void {
    const list = this.dirty;
    // Flushing can close a connection, which can mark others; loop until quiet.
    for (let i = 0; i < list.length; i++) {
      const c = list[i];
      if (this.dirtySet.delete(c)) c.flushOutbound();
    }
    list.length = 0;
  }

  private tick(): void {
    const now = Date.now();
    for (const c of this.connections.values()) c.tick(now);
    if (this.dirty.length > 0) this.flushDirty();
  }

  /** Tells the connected clients that `clientConnectUrls` changed. */
  clientInfoChanged(): void {
    for (const c of this.connections.values()) c.infoChanged?.();
  }

  stop(): void {
    clearInterval(this.ticker);
    this.stopImports();
  }
}
