import { Sublist } from "../subjects/sublist.js";
import type { Message } from "../subjects/message.js";
import type { Receiver, Subscription } from "../subjects/subscription.js";

export const GLOBAL_ACCOUNT = "$G";

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
}

/** For a message that came from another node: the queue groups that node chose this node to serve. */
export interface RoutedQueues {
  allows(queue: string): boolean;
}

/**
 * An isolated subject space. Every connection belongs to exactly one account
 * and only sees messages published within it. A single default account exists
 * until multi-tenancy arrives; nothing else needs to change for that.
 */
export class Account {
  readonly sublist = new Sublist();
  inMsgs = 0;
  inBytes = 0;
  /** Told of every new subscription; internal services use it to wake when interest appears. */
  readonly subscribeListeners: Array<(sub: Subscription) => void> = [];

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
    this.inMsgs++;
    this.inBytes += msg.end - msg.start;
    const result = this.sublist.match(msg.subject);
    let delivered = 0;
    const plain = result.plain;
    for (let i = 0; i < plain.length; i++) {
      const sub = plain[i];
      if (sub.closed || (sub.receiver === origin && !origin.echo)) continue;
      sub.delivered++;
      sub.receiver.deliver(sub, msg);
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
        if (sub.closed || (sub.receiver === origin && !origin.echo)) continue;
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
    if (this.remote !== null && routed === null) delivered += this.remote.forward(this, msg, this.servedQueues, served);
    return delivered;
  }
}
