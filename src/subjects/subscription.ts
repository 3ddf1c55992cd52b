import type { Message } from "./message.js";

/** Something that receives routed messages: a protocol connection, or an internal service. */
export interface Receiver {
  /**
   * Called synchronously by the router. `msg` is reused by the publisher after
   * this returns: copy what you keep. `false` (a plain subscription's internal
   * service only): nothing behind the subject took it, so it does not count as
   * delivered and a request may hear "no responders", as where nats-server
   * has no subscription for it.
   */
  deliver(sub: Subscription, msg: Message): void | false;
  /** True when messages this receiver publishes may come back to it. */
  readonly echo: boolean;
  /**
   * True when other nodes should learn of this receiver's subscriptions
   * (client connections). Internal services (JetStream, imports) run on
   * every node and stay node-local.
   */
  readonly routable?: boolean;
  /**
   * True for the cluster's own services (streams/cluster-api.ts): only they
   * receive its internal `$NG.` traffic. A client's `>`, a stream or an
   * import capturing `>` never see it, nor count as someone to deliver it to.
   */
  readonly clusterInternal?: boolean;
}

/**
 * One interest registration. Protocol doors extend it with what they need to
 * frame deliveries (the NATS door caches the sid bytes, for instance).
 */
export class Subscription {
  /** Deliveries so far, for auto-unsubscribe. */
  delivered = 0;
  /** 0 = unlimited; otherwise unsubscribe after this many deliveries. */
  max = 0;
  closed = false;

  constructor(
    readonly receiver: Receiver,
    readonly subject: string,
    readonly queue: string | null,
  ) {}
}
