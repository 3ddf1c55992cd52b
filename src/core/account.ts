import { Sublist } from "../subjects/sublist.js";
import type { Message } from "../subjects/message.js";
import type { Receiver, Subscription } from "../subjects/subscription.js";
import type { AccountClaims, JwtUser } from "./jwt-auth.js";

export const GLOBAL_ACCOUNT = "$G";

/** nats-server's name for the system account it creates unless told otherwise. */
export const DEFAULT_SYSTEM_ACCOUNT = "$SYS";

/** -1: no limit, as in JWTs. */
export const NO_LIMIT = -1;

/**
 * Limits an account's claims set for its clients (operator mode): how many
 * may be connected at once, and per connection how many subscriptions and
 * how large a payload. Each connection takes the smallest of these, its
 * user's and the server's.
 */
export interface AccountLimits {
  maxConnections: number;
  maxSubscriptions: number;
  maxPayload: number;
}

/** What the core needs of a client connection in an account: to enforce a change of the account's claims on it. */
export interface AccountMember {
  /** Milliseconds since the epoch when it connected (the newest go first when a connection limit shrinks). */
  readonly connectedAt: number;
  /** Operator mode: the user JWT it connected with, checked against the account's new claims. */
  readonly jwtUser: JwtUser | null;
  /** Takes new per-connection limits; past them the connection ends, as nats-server's does. */
  applyLimits(): void;
  /** Ends the connection with the protocol's error text (null: closed without one). */
  evict(text: string | null, reason: string): void;
}

/**
 * What the cluster's routes hook into (set by the route module; the core
 * imports no door). `interest` hears every routable subscription come and
 * go; `forward` sends a locally published message to the nodes with interest,
 * given the queue groups already served here (local members are preferred).
 */
export interface RemoteDelivery {
  interest(account: Account, sub: Subscription, added: boolean): void;
  /** Returns how many nodes the message was sent to. */
  forward(account: Account, msg: Message, servedQueues: readonly string[], servedCount: number): number;
  /** Whether another node has any subscriber matching `subject`, a wildcard one too (a pull request's inbox, a node's forwarding subject). */
  hasInterest(account: Account, subject: string): boolean;
  /**
   * Whether another node has the interest a push consumer counts, as the local
   * check does (JetStream.hasDeliveryInterest): a subscription on exactly
   * `subject`, plain when `queue` is undefined or empty, else a member of that
   * queue group. Asked on the delivery path: allocates nothing.
   */
  hasDeliveryInterest(account: Account, subject: string, queue: string | undefined): boolean;
}

/**
 * Subjects the nodes of a cluster talk to each other on (JetStream requests
 * forwarded to a stream's leader): clients may not publish on them, or a
 * forwarded request could carry what their permissions refuse on `$JS.API`;
 * and they never receive them (`Receiver.clusterInternal`), even with `>`.
 */
export const CLUSTER_INTERNAL_PREFIX = "$NG.";
/**
 * Where nodes answer each other's requests: `$NG.R.<node>.<id>`, with an id
 * no one can guess (cluster-api.ts), so an answer sent there by anyone but
 * the node asked matches no request.
 */
export const CLUSTER_ANSWER_PREFIX = `${CLUSTER_INTERNAL_PREFIX}R.`;
/** The first byte of every cluster-internal subject, checked before the prefix where a string would have to be made. */
export const DOLLAR = 0x24;

/** For a message that came from another node: the queue groups that node chose this node to serve. */
export interface RoutedQueues {
  allows(queue: string): boolean;
}

/**
 * An isolated subject space. Every connection belongs to exactly one account
 * and only sees messages published within it: the default `$G`, one of the
 * configured accounts, one of operator mode's, or the system account.
 */
export class Account {
  readonly sublist = new Sublist();
  inMsgs = 0;
  inBytes = 0;
  /** Messages and bytes delivered to subscribers in this account (nats-server's account `sent`). */
  outMsgs = 0;
  outBytes = 0;
  /** Told of every new subscription, and of another node's new interest (routes); internal services use it to wake when interest appears. */
  readonly subscribeListeners: Array<(sub: Subscription) => void> = [];
  /** The client connections in this account, for its limits, its revocations and its monitoring. */
  readonly members = new Set<AccountMember>();
  /** Set by the account's claims (operator mode); none for configured accounts. */
  limits: AccountLimits = { maxConnections: NO_LIMIT, maxSubscriptions: NO_LIMIT, maxPayload: NO_LIMIT };
  /** When its claims expire (ms since the epoch), or 0; a deleted account is expired. Clients are closed then. */
  expiresAt = 0;
  /** Operator mode: the claims it was last given (for monitoring). */
  claims: AccountClaims | null = null;
  /** Imports its claims declare that are not wired (no such exporter, no matching export, a bad token): nats-server's `invalid`. */
  invalidImports: ReadonlySet<object> = new Set();
  /** When it was made or its claims last changed. */
  updatedAt = new Date();

  /** The cluster's routes, when this node has any configured. */
  remote: RemoteDelivery | null = null;
  /** Names of the queue groups served locally by the message being routed (reused: no allocation per message). */
  private readonly servedQueues: string[] = [];

  constructor(readonly name: string) {}

  subscribe(sub: Subscription): void {
    this.sublist.insert(sub);
    for (let i = 0; i < this.subscribeListeners.length; i++) this.subscribeListeners[i](sub);
    if (this.remote !== null && sub.receiver.routable === true) this.remote.interest(this, sub, true);
  }

  unsubscribe(sub: Subscription): void {
    sub.closed = true;
    if (this.sublist.remove(sub) && this.remote !== null && sub.receiver.routable === true) this.remote.interest(this, sub, false);
  }

  /**
   * Delivers to every matching plain subscription and to one member of each
   * matching queue group. Returns the number of deliveries, so the caller can
   * answer "no responders". A message from another node (`routed` set) is
   * delivered here only, to the queue groups that node chose, and never
   * forwarded again (one hop); any other goes on to the nodes with interest.
   */
  route(msg: Message, origin: Receiver | null, routed: RoutedQueues | null = null): number {
    // The cluster's internal traffic reaches only the cluster's services (one character compared for everything else).
    const internal = msg.subject.charCodeAt(0) === DOLLAR && msg.subject.startsWith(CLUSTER_INTERNAL_PREFIX);
    // A node takes what comes over a route on these subjects as its peer's own request. Only the cluster's code makes one
    // here: anything else on them (a destination a client named, reached some way the edges do not refuse) goes nowhere.
    // Answers go out as they are; their ids are not guessable.
    if (internal && routed === null && !msg.clusterMade && !msg.subject.startsWith(CLUSTER_ANSWER_PREFIX)) return 0;
    this.inMsgs++;
    this.inBytes += msg.end - msg.start;
    const result = this.sublist.match(msg.subject);
    let delivered = 0;
    const plain = result.plain;
    for (let i = 0; i < plain.length; i++) {
      const sub = plain[i];
      if (sub.closed || (sub.receiver === origin && !origin.echo) || (internal && sub.receiver.clusterInternal !== true)) continue;
      sub.delivered++;
      if (sub.receiver.deliver(sub, msg) === false) {
        sub.delivered--;
        continue;
      }
      delivered++;
    }
    const queues = result.queues;
    let served = 0;
    for (let g = 0; g < queues.length; g++) {
      const group = queues[g];
      if (routed !== null && !routed.allows(group.name)) continue;
      const members = group.members;
      const n = members.length;
      for (let k = 0; k < n; k++) {
        const idx = (group.next + k) % n;
        const sub = members[idx];
        if (sub.closed || (sub.receiver === origin && !origin.echo) || (internal && sub.receiver.clusterInternal !== true)) continue;
        group.next = idx + 1 === n ? 0 : idx + 1;
        sub.delivered++;
        sub.receiver.deliver(sub, msg);
        delivered++;
        if (served < this.servedQueues.length) this.servedQueues[served] = group.name;
        else this.servedQueues.push(group.name);
        served++;
        break;
      }
    }
    this.outMsgs += delivered;
    this.outBytes += delivered * (msg.end - msg.start);
    if (this.remote !== null && routed === null) delivered += this.remote.forward(this, msg, this.servedQueues, served);
    return delivered;
  }
}
