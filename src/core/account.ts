import { Sublist } from "../subjects/sublist.js";
import type { Message } from "../subjects/message.js";
import type { Receiver, Subscription } from "../subjects/subscription.js";

export const GLOBAL_ACCOUNT = "$G";

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

  constructor(readonly name: string) {}

  subscribe(sub: Subscription): void {
    this.sublist.insert(sub);
    for (let i = 0; i < this.subscribeListeners.length; i++) this.subscribeListeners[i](sub);
  }

  unsubscribe(sub: Subscription): void {
    sub.closed = true;
    this.sublist.remove(sub);
  }

  /**
   * Delivers to every matching plain subscription and to one member of each
   * matching queue group. Returns the number of deliveries, so the caller can
   * answer "no responders".
   */
  route(msg: Message, origin: Receiver | null): number {
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
    for (let g = 0; g < queues.length; g++) {
      const group = queues[g];
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
        break;
      }
    }
    return delivered;
  }
}
