/**
 * The cluster's routes: the route listener, the routes this node dials
 * (configured, gossiped, or found in etcd), and the decisions of what
 * crosses them, as nats-server 2.9 makes them:
 *
 * - a full mesh, one hop: a message from a route is delivered here only;
 * - a message goes to a node only if that node declared interest (RS+);
 * - a queue group gets each message once in the whole cluster: a local
 *   member if there is one, else one node chosen by its member count;
 * - a new route is gossiped to the other routes (INFO with its URL), and
 *   the nodes that do not know it yet dial it (implicit routes);
 * - every route INFO carries the node's client URLs, which clients get as
 *   `connect_urls` so that they fail over to another node.
 *
 * The broker knows nothing of this module: it hooks into each account
 * (`Account.remote`) and into the broker's client URL list.
 */

import { createServer, connect, type Server, type Socket } from "node:net";
import { networkInterfaces } from "node:os";
import type { Broker } from "../../core/broker.js";
import { ADVERTISED_VERSION } from "../../core/broker.js";
import type { Account, RemoteDelivery } from "../../core/account.js";
import type { Message } from "../../subjects/message.js";
import type { MatchResult } from "../../subjects/sublist.js";
import type { Subscription } from "../../subjects/subscription.js";
import { Route, type RemoteInterest, type RouteEvents, type RouteInfo } from "./route.js";
import { formatDuration } from "../../util/duration.js";

export interface RoutesOptions {
  clusterName: string;
  /** The route listener; undefined: this node only dials. */
  host: string;
  port: number | undefined;
  /** Configured route URLs (`routes`, `--routes`). */
  routes: string[];
  /** `host:port` other nodes dial instead of the listener's address (`cluster { advertise }`). */
  advertise?: string;
}

/** Dial pacing for configured routes: nats-server retries every second; we back off to 5 s. */
const DIAL_MIN_MS = 250;
const DIAL_MAX_MS = 5000;
/**
 * A route that stayed up this long was a working one: once it drops, its
 * re-dials start again from DIAL_MIN_MS (nats-server starts each reconnect
 * afresh). One that drops sooner keeps backing off, so a peer that takes a
 * route and closes it at once is not dialled four times a second.
 */
const ROUTE_STABLE_MS = DIAL_MAX_MS;
/** Peers one node routes to: bounds the tables the network can grow through gossip. */
export const ROUTES_MAX = 256;

/** A route this node keeps dialling until it is connected (configured, or found in etcd). */
interface Dialled {
  url: string;
  /** The server it turned out to be (once known): while a route to it is up, no dialling. */
  serverId: string;
  /** It is this node itself: never dialled again. */
  self: boolean;
  timer: NodeJS.Timeout | undefined;
  attempts: number;
  connecting: boolean;
  configured: boolean;
}

/** /routez, in nats-server's shape. */
export interface RoutezView {
  server_id: string;
  server_name: string;
  now: string;
  num_routes: number;
  routes: Array<Record<string, unknown>>;
}

export class RouteManager implements RemoteDelivery, RouteEvents {
  private server: Server | null = null;
  /** The route listener's port (0 without one). */
  port = 0;
  /** Registered routes by peer server id. */
  private readonly byId = new Map<string, Route>();
  /** The same, as an array for the publish path. */
  private active: Route[] = [];
  private readonly all = new Set<Route>();
  private readonly dialled = new Map<string, Dialled>();
  /** Local interest, ref-counted: account → "subject" or "subject queue" → count. */
  private readonly local = new Map<string, Map<string, { subject: string; queue: string | null; count: number }>>();
  private readonly accountBytes = new Map<string, Buffer>();
  private lastAccountName: string | null = null;
  private lastAccountBytes: Buffer = Buffer.alloc(0);
  private closing = false;
  private ticker: NodeJS.Timeout | undefined;
  private readonly ownClientUrls: string[];
  // Reused on every publish: no allocation on the hot path.
  private matches: Array<MatchResult | null> = [];
  private queueNames: string[][] = [];
  private queueCounts: number[] = [];
  private decided: string[] = [];
  private readonly changeListeners: Array<() => void> = [];
  /** The dialling record each dialled route belongs to. */
  private readonly dialledFor = new WeakMap<Route, Dialled>();

  constructor(
    private readonly broker: Broker,
    private readonly options: RoutesOptions,
  ) {
    this.ownClientUrls = clientUrls(broker.options.host, broker.clientPort);
    broker.clientConnectUrls = this.ownClientUrls.slice();
  }

  private readonly adoptAccount = (account: Account): void => {
    account.remote = this;
  };

  async start(): Promise<void> {
    for (const acc of this.broker.accounts.values()) acc.remote = this;
    // Accounts made later (operator mode: an account JWT arriving on $SYS) route too.
    this.broker.accountListeners.push(this.adoptAccount);
    // Routes are not among the broker's client connections: their pings and handshake deadlines run here.
    const o = this.broker.options;
    const period = Math.max(10, Math.min(1000, Math.floor(o.pingInterval / 4)));
    this.ticker = setInterval(() => {
      const now = Date.now();
      for (const r of [...this.all]) r.tick(now);
    }, period);
    this.ticker.unref();
    if (this.options.port !== undefined) {
      const server = createServer((socket) => this.accept(socket));
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(this.options.port! < 0 ? 0 : this.options.port, this.options.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      this.server = server;
      this.port = (server.address() as { port: number }).port;
      this.broker.log.info(`Listening for route connections on ${this.options.host}:${this.port}`);
    }
    for (const url of this.options.routes) this.addPeerUrl(url, true);
  }

  /** This node's route URL, as peers dial it and gossip it ("" without a listener). */
  get routeUrl(): string {
    if (this.server === null) return "";
    if (this.options.advertise !== undefined) return `nats-route://${this.options.advertise}/`;
    const h = this.options.host === "0.0.0.0" || this.options.host === "::" ? advertisedHost() : this.options.host;
    return `nats-route://${h.includes(":") ? `[${h}]` : h}:${this.port}/`;
  }

  /** Dials `url` until a route to it is up, and again whenever it drops (configured routes, etcd members). */
  addPeerUrl(url: string, configured: boolean): void {
    const key = normaliseUrl(url);
    if (key === normaliseUrl(this.routeUrl) || this.dialled.has(key) || this.closing) return;
    if (this.dialled.size >= ROUTES_MAX) return;
    const d: Dialled = { url: key, serverId: "", self: false, timer: undefined, attempts: 0, connecting: false, configured };
    this.dialled.set(key, d);
    this.dial(d, 0);
  }

  /** Stops dialling a URL found in etcd whose node left (a configured one stays). */
  removePeerUrl(url: string): void {
    const d = this.dialled.get(normaliseUrl(url));
    if (d === undefined || d.configured) return;
    clearTimeout(d.timer);
    this.dialled.delete(d.url);
  }

  private dial(d: Dialled, delayMs: number): void {
    clearTimeout(d.timer);
    if (this.closing || d.self || d.connecting || this.dialled.get(d.url) !== d) return;
    d.timer = setTimeout(() => {
      d.timer = undefined;
      if (this.closing || d.self || (d.serverId !== "" && this.byId.has(d.serverId))) return;
      d.connecting = true;
      d.attempts++;
      this.connectTo(d.url, d.configured ? d.url : null, d);
    }, delayMs);
    d.timer.unref();
  }

  private connectTo(url: string, configuredUrl: string | null, d: Dialled | null): void {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return;
    }
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const socket = connect({ host, port: Number(u.port) });
    const onFail = (): void => {
      if (d !== null) {
        d.connecting = false;
        this.dial(d, redialDelay(d));
      }
    };
    socket.once("error", onFail);
    socket.once("connect", () => {
      socket.off("error", onFail);
      if (this.closing) {
        socket.destroy();
        return;
      }
      const route = this.track(new Route(this.broker, socket, true, configuredUrl, this));
      if (d !== null) this.dialledFor.set(route, d);
      if (d !== null) d.connecting = false;
      // The dialler speaks first: CONNECT, then its INFO (nats-server's order).
      route.sendLine(`CONNECT ${JSON.stringify(this.connectJson())}`);
      route.sendLine(`INFO ${JSON.stringify(this.infoJson())}`);
    });
  }

  private accept(socket: Socket): void {
    if (this.closing || this.all.size >= ROUTES_MAX * 2) {
      socket.destroy();
      return;
    }
    const route = this.track(new Route(this.broker, socket, false, null, this));
    route.sendLine(`INFO ${JSON.stringify(this.infoJson())}`);
  }

  private track(route: Route): Route {
    this.all.add(route);
    return route;
  }

  private connectJson(): Record<string, unknown> {
    return { echo: false, verbose: false, pedantic: false, tls_required: false, headers: true, name: this.broker.serverId, cluster: this.options.clusterName, dynamic: false, lnoc: true };
  }

  private infoJson(): Record<string, unknown> {
    const o = this.broker.options;
    const info: Record<string, unknown> = {
      server_id: this.broker.serverId,
      server_name: this.broker.serverName,
      version: ADVERTISED_VERSION,
      proto: 1,
      go: "nagare",
      host: this.options.host,
      port: this.port,
      headers: true,
      max_payload: o.maxPayload,
      cluster: this.options.clusterName,
      connect_urls: this.ownClientUrls,
      lnoc: true,
    };
    const ip = this.routeUrl;
    if (ip !== "") info.ip = ip;
    return info;
  }

  // ---- RouteEvents ----

  connectOk(_route: Route, cluster: string | undefined): string | null {
    if (cluster !== undefined && cluster !== "" && cluster !== this.options.clusterName) return `Cluster name mismatch: ${cluster} is not ${this.options.clusterName}`;
    return null;
  }

  identified(route: Route, info: RouteInfo): boolean {
    const id = route.remoteId;
    const dialled = this.dialledFor.get(route);
    if (id === this.broker.serverId) {
      // A configured route to ourselves (one configuration for every node): never again.
      if (dialled !== undefined) dialled.self = true;
      route.close("Route to self");
      return false;
    }
    if (info.cluster !== undefined && info.cluster !== "" && info.cluster !== this.options.clusterName) {
      route.sendLine(`-ERR 'Cluster name mismatch'`);
      route.close("Cluster name mismatch");
      return false;
    }
    if (dialled !== undefined) dialled.serverId = id;
    const existing = this.byId.get(id);
    if (existing !== undefined) {
      // Both nodes dialled each other. Both keep the route dialled by the
      // node with the smaller server id, so they agree without talking.
      const keepNew = this.preferred(route, existing);
      const drop = keepNew ? existing : route;
      this.unregisterRoute(drop);
      drop.close("Duplicate Route");
      if (!keepNew) return false;
    }
    if (this.byId.size >= ROUTES_MAX) {
      route.close("Too many routes");
      return false;
    }
    this.register(route);
    return true;
  }

  /** Whether `a` is the route to keep over `b` (same peer): the one dialled by the smaller server id. */
  private preferred(a: Route, b: Route): boolean {
    const dialler = (r: Route): string => (r.solicited ? this.broker.serverId : r.remoteId);
    return dialler(a) < dialler(b);
  }

  private register(route: Route): void {
    route.registered = true;
    this.byId.set(route.remoteId, route);
    this.rebuildActive();
    this.broker.log.info(`route to ${route.describe()} registered (${route.solicited ? "dialled" : "accepted"})`);
    // Everything this node is interested in, so the peer knows what to send.
    for (const [acc, entries] of this.local) {
      for (const e of entries.values()) route.sendLine(e.queue === null ? `RS+ ${acc} ${e.subject}` : `RS+ ${acc} ${e.subject} ${e.queue} ${e.count}`);
    }
    route.pingNow();
    // A peer that dialled in at a URL this node dials itself (a configured route whose first dial
    // failed before the peer listened): that URL is connected now. Dialling it again would make a
    // duplicate that can replace this route once it carries traffic, losing what is in flight on it.
    const dialledAt = route.remoteUrl === "" ? undefined : this.dialled.get(normaliseUrl(route.remoteUrl));
    if (dialledAt !== undefined && !dialledAt.self) {
      dialledAt.serverId = route.remoteId;
      if (!dialledAt.connecting) {
        clearTimeout(dialledAt.timer);
        dialledAt.timer = undefined;
      }
    }
    // Gossip: the other routes learn of the new peer and dial it if they do not know it.
    if (route.remoteUrl !== "") {
      const gossip = `INFO ${JSON.stringify({ server_id: route.remoteId, server_name: route.remoteName, ip: route.remoteUrl, cluster: this.options.clusterName, connect_urls: route.remoteConnectUrls })}`;
      for (const r of this.active) if (r !== route) r.sendLine(gossip);
    }
    this.clientUrlsChanged();
    this.notify();
  }

  infoUpdate(route: Route, info: RouteInfo): void {
    if (info.server_id === route.remoteId) {
      if (Array.isArray(info.connect_urls)) {
        route.remoteConnectUrls = info.connect_urls.slice(0, 64);
        this.clientUrlsChanged();
      }
      return;
    }
    // Gossip of another node: dial it once if no route to it exists (nats-server's implicit route).
    const id = info.server_id;
    if (id === this.broker.serverId || this.byId.has(id) || typeof info.ip !== "string" || info.ip === "") return;
    if (this.all.size >= ROUTES_MAX * 2) return;
    for (const r of this.all) if (!r.closed && r.remoteId === id) return;
    this.connectTo(info.ip, null, null);
  }

  closed(route: Route, reason: string): void {
    this.all.delete(route);
    // Without this, the attempts of every earlier outage added up, and a route dropped after hours up waited the
    // longest back-off before its first re-dial.
    const wasStable = route.registered && Date.now() - route.startedAt >= ROUTE_STABLE_MS;
    if (route.registered) {
      this.broker.log.info(`route to ${route.describe()} closed: ${reason}`);
      this.unregisterRoute(route);
      this.clientUrlsChanged();
      this.notify();
    }
    const dialled = this.dialledFor.get(route);
    // Dial again what we keep dialling, unless it was ourselves or a duplicate of a live route.
    for (const d of this.dialled.values()) {
      if (d === dialled || (d.serverId !== "" && d.serverId === route.remoteId)) {
        if (wasStable) d.attempts = 0;
        if (!d.self && !(d.serverId !== "" && this.byId.has(d.serverId))) this.dial(d, redialDelay(d));
      }
    }
  }

  private unregisterRoute(route: Route): void {
    if (route.registered && this.byId.get(route.remoteId) === route) {
      this.byId.delete(route.remoteId);
      this.rebuildActive();
    }
    route.registered = false;
  }

  private rebuildActive(): void {
    this.active = [...this.byId.values()];
    const n = this.active.length;
    this.matches = new Array<MatchResult | null>(n).fill(null);
    this.queueCounts = new Array<number>(n).fill(0);
    while (this.queueNames.length < n) this.queueNames.push([]);
  }

  /** Clients learn every node's client URLs (INFO `connect_urls`), and of changes when they speak protocol 1. */
  private clientUrlsChanged(): void {
    // A node shutting down keeps telling its clients of the others: they are where the clients go next.
    if (this.closing) return;
    const urls = this.ownClientUrls.slice();
    for (const r of this.active) for (const u of r.remoteConnectUrls) if (!urls.includes(u)) urls.push(u);
    const before = this.broker.clientConnectUrls;
    if (before.length === urls.length && before.every((u, i) => u === urls[i])) return;
    this.broker.clientConnectUrls = urls;
    this.broker.clientInfoChanged();
  }

  /** Test and embedding hook: called whenever the set of registered routes changes. */
  onChange(listener: () => void): () => void {
    this.changeListeners.push(listener);
    return () => {
      const i = this.changeListeners.indexOf(listener);
      if (i >= 0) this.changeListeners.splice(i, 1);
    };
  }

  private notify(): void {
    for (const l of this.changeListeners.slice()) l();
  }

  get routeCount(): number {
    return this.byId.size;
  }

  /** Route connections open now, registered or not (a duplicate not yet resolved counts twice). */
  get openRouteCount(): number {
    return this.all.size;
  }

  /** Test hook: the URLs this node keeps dialling, whether a dial is due or under way, and the server each turned out to be. */
  dialling(): Array<{ url: string; serverId: string; attempts: number; due: boolean; connecting: boolean }> {
    return [...this.dialled.values()].map((d) => ({ url: d.url, serverId: d.serverId, attempts: d.attempts, due: d.timer !== undefined, connecting: d.connecting }));
  }

  /** The peers' server ids, as routed to now. */
  peers(): string[] {
    return [...this.byId.keys()];
  }

  // ---- RemoteDelivery ----

  interest(account: Account, sub: Subscription, added: boolean): void {
    let entries = this.local.get(account.name);
    if (entries === undefined) {
      entries = new Map();
      this.local.set(account.name, entries);
    }
    const key = sub.queue === null ? sub.subject : `${sub.subject} ${sub.queue}`;
    let e = entries.get(key);
    if (added) {
      if (e === undefined) {
        e = { subject: sub.subject, queue: sub.queue, count: 0 };
        entries.set(key, e);
      }
      e.count++;
      // Plain interest is news only when it first appears; a queue's weight changes with every member.
      if (e.queue === null && e.count > 1) return;
      this.broadcast(e.queue === null ? `RS+ ${account.name} ${e.subject}` : `RS+ ${account.name} ${e.subject} ${e.queue} ${e.count}`);
      return;
    }
    if (e === undefined) return;
    e.count--;
    if (e.count > 0) {
      if (e.queue !== null) this.broadcast(`RS+ ${account.name} ${e.subject} ${e.queue} ${e.count}`);
      return;
    }
    entries.delete(key);
    this.broadcast(e.queue === null ? `RS- ${account.name} ${e.subject}` : `RS- ${account.name} ${e.subject} ${e.queue}`);
  }

  hasInterest(account: Account, subject: string): boolean {
    const routes = this.active;
    for (let i = 0; i < routes.length; i++) if (routes[i].match(account.name, subject) !== null) return true;
    return false;
  }

  hasDeliveryInterest(account: Account, subject: string, queue: string | undefined): boolean {
    const routes = this.active;
    for (let i = 0; i < routes.length; i++) if (routes[i].hasExactInterest(account.name, subject, queue)) return true;
    return false;
  }

  interestAdded(account: string, interest: RemoteInterest): void {
    const acc = this.broker.accounts.get(account);
    if (acc === undefined) return;
    for (let i = 0; i < acc.subscribeListeners.length; i++) acc.subscribeListeners[i](interest);
  }

  private broadcast(line: string): void {
    const routes = this.active;
    for (let i = 0; i < routes.length; i++) routes[i].sendLine(line);
  }

  forward(account: Account, msg: Message, served: readonly string[], servedCount: number): number {
    const routes = this.active;
    const n = routes.length;
    if (n === 0) return 0;
    const matches = this.matches;
    const counts = this.queueCounts;
    let any = false;
    for (let i = 0; i < n; i++) {
      const m = routes[i].match(account.name, msg.subject);
      matches[i] = m;
      counts[i] = 0;
      if (m !== null) any = true;
    }
    if (!any) return 0;
    // Each queue group not served here goes to one node, chosen by its members' count.
    let decidedCount = 0;
    const decided = this.decided;
    for (let i = 0; i < n; i++) {
      const m = matches[i];
      if (m === null) continue;
      const groups = m.queues;
      for (let g = 0; g < groups.length; g++) {
        const name = groups[g].name;
        if (contains(served, servedCount, name) || contains(decided, decidedCount, name)) continue;
        if (decidedCount < decided.length) decided[decidedCount] = name;
        else decided.push(name);
        decidedCount++;
        const target = this.pickRoute(i, name);
        const list = this.queueNames[target];
        if (counts[target] < list.length) list[counts[target]] = name;
        else list.push(name);
        counts[target]++;
      }
    }
    let sent = 0;
    // The account repeats from message to message: its bytes are looked up once while it does.
    let accBytes = this.lastAccountBytes;
    if (account.name !== this.lastAccountName) {
      let bytes = this.accountBytes.get(account.name);
      if (bytes === undefined) {
        bytes = Buffer.from(account.name);
        this.accountBytes.set(account.name, bytes);
      }
      this.lastAccountName = account.name;
      this.lastAccountBytes = accBytes = bytes;
    }
    for (let i = 0; i < n; i++) {
      const m = matches[i];
      if (m === null || (m.plain.length === 0 && counts[i] === 0)) continue;
      routes[i].sendMsg(accBytes, msg, this.queueNames[i], counts[i]);
      sent++;
    }
    return sent;
  }

  /** Among the routes from `first` on with members of `queue`, one picked at random by weight. */
  private pickRoute(first: number, queue: string): number {
    const matches = this.matches;
    let total = 0;
    for (let j = first; j < matches.length; j++) total += groupWeight(matches[j], queue);
    let r = Math.random() * total;
    for (let j = first; j < matches.length; j++) {
      r -= groupWeight(matches[j], queue);
      if (r < 0) return j;
    }
    return first;
  }

  // ---- monitoring ----

  routez(withSubs: boolean): RoutezView {
    const now = Date.now();
    const routes = [...this.byId.values()].map((r) => {
      const i = r.info(now);
      const o: Record<string, unknown> = {
        rid: r.cid,
        remote_id: r.remoteId,
        remote_name: r.remoteName,
        did_solicit: r.solicited,
        is_configured: r.configuredUrl !== null,
        ip: r.ip,
        port: r.port,
        start: i.start,
        last_activity: i.last_activity,
        rtt: formatDuration(r.rttMs),
        uptime: i.uptime,
        idle: i.idle,
        pending_size: r.pendingBytes,
        in_msgs: r.inMsgs,
        out_msgs: r.outMsgs,
        in_bytes: r.inBytes,
        out_bytes: r.outBytes,
        subscriptions: r.subscriptionCount,
      };
      if (withSubs) o.subscriptions_list = r.subscriptionsList();
      return o;
    });
    return { server_id: this.broker.serverId, server_name: this.broker.serverName, now: new Date(now).toISOString(), num_routes: routes.length, routes };
  }

  /** /varz's `cluster` fields, as nats-server fills them. */
  varz(): Record<string, unknown> {
    return {
      name: this.options.clusterName,
      addr: this.options.host,
      cluster_port: this.port,
      auth_timeout: Math.max(2000, this.broker.options.authTimeout) / 1000,
      urls: this.options.routes.map((u) => new URL(u).host),
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.ticker);
    for (const d of this.dialled.values()) clearTimeout(d.timer);
    const listeners = this.broker.accountListeners;
    const at = listeners.indexOf(this.adoptAccount);
    if (at >= 0) listeners.splice(at, 1);
    for (const acc of this.broker.accounts.values()) if (acc.remote === this) acc.remote = null;
    for (const r of [...this.all]) r.close("Server Shutdown");
    const server = this.server;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function groupWeight(m: MatchResult | null, queue: string): number {
  if (m === null) return 0;
  const groups = m.queues;
  for (let g = 0; g < groups.length; g++) {
    if (groups[g].name !== queue) continue;
    let w = 0;
    const members = groups[g].members;
    for (let k = 0; k < members.length; k++) w += (members[k] as RemoteInterest).weight;
    return w;
  }
  return 0;
}

function contains(list: readonly string[], count: number, name: string): boolean {
  for (let i = 0; i < count; i++) if (list[i] === name) return true;
  return false;
}

/** The wait before the next dial of `d`: doubling with its attempts since it was last up for a while, to DIAL_MAX_MS. */
function redialDelay(d: Dialled): number {
  return Math.min(DIAL_MAX_MS, DIAL_MIN_MS * 2 ** Math.min(5, d.attempts));
}

/** `nats-route://h:p/`, `nats://h:p` → one form, so a URL heard twice is dialled once. */
function normaliseUrl(url: string): string {
  if (url === "") return "";
  try {
    const u = new URL(url);
    return `nats-route://${u.host}/`;
  } catch {
    return url;
  }
}

/** The address other nodes and clients reach us at when we listen on every interface. */
function advertisedHost(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/** The client URLs this node advertises (host:port, as nats-server's `connect_urls`). */
function clientUrls(host: string, port: number): string[] {
  if (host !== "0.0.0.0" && host !== "::") return [`${host.includes(":") ? `[${host}]` : host}:${port}`];
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) out.push(`${a.address}:${port}`);
  }
  return out.length > 0 ? out : [`127.0.0.1:${port}`];
}
