/**
 * JetStream's advisories and metrics (`$JS.EVENT.ADVISORY.>`,
 * `$JS.EVENT.METRIC.>`): JSON events about streams, consumers, deliveries
 * and API calls, in nats-server's shapes. Nothing is built unless someone
 * subscribes to the subject, so they cost nothing when unused.
 */

import { randomBytes } from "node:crypto";
import type { Consumer, ConsumerEvents, Delivery } from "./consumer.js";
import { NS_PER_MS } from "./config.js";

const ADVISORY = "$JS.EVENT.ADVISORY";
const TYPE = "io.nats.jetstream.advisory.v1.";

/** Where events go: the account's routing. */
export interface EventSink {
  hasInterest(subject: string): boolean;
  publish(subject: string, body: Buffer): void;
}

export type Action = "create" | "delete" | "modify";

const ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A 22-character random id, the length of the NUIDs nats-server stamps on events. */
function eventId(): string {
  const b = randomBytes(22);
  let s = "";
  for (let i = 0; i < 22; i++) s += ID_CHARS[b[i] % ID_CHARS.length];
  return s;
}

export class Advisories implements ConsumerEvents {
  constructor(
    private readonly sink: EventSink,
    private readonly serverId: string,
  ) {}

  private send(subject: string, type: string, fields: () => Record<string, unknown>): void {
    if (!this.sink.hasInterest(subject)) return;
    const event = { type, id: eventId(), timestamp: new Date().toISOString(), ...fields() };
    this.sink.publish(subject, Buffer.from(JSON.stringify(event)));
  }

  streamAction(stream: string, action: Action): void {
    const verb = action === "create" ? "CREATED" : action === "delete" ? "DELETED" : "UPDATED";
    this.send(`${ADVISORY}.STREAM.${verb}.${stream}`, `${TYPE}stream_action`, () => ({ stream, action }));
  }

  /** nats-server has no advisory for a consumer update: only create and delete. */
  consumerAction(stream: string, consumer: string, action: Exclude<Action, "modify">): void {
    const verb = action === "create" ? "CREATED" : "DELETED";
    this.send(`${ADVISORY}.CONSUMER.${verb}.${stream}.${consumer}`, `${TYPE}consumer_action`, () => ({ stream, consumer, action }));
  }

  /** One JetStream API call and its answer (`request` only when it had a body). */
  apiAudit(subject: string, request: Buffer, response: string): void {
    this.send(`${ADVISORY}.API`, `${TYPE}api_audit`, () => {
      const e: Record<string, unknown> = { server: this.serverId, client: { acc: "$G", server: this.serverId }, subject };
      if (request.length > 0) e.request = request.toString("utf8");
      e.response = response;
      return e;
    });
  }

  // ---- ConsumerEvents ----

  acked(c: Consumer, d: Delivery, now: number): void {
    const freq = c.sampleFrequency;
    if (freq <= 0 || (freq < 100 && Math.random() * 100 >= freq)) return;
    const subject = `$JS.EVENT.METRIC.CONSUMER.ACK.${c.stream.config.name}.${c.name}`;
    this.send(subject, "io.nats.jetstream.metric.v1.consumer_ack", () => ({
      stream: c.stream.config.name,
      consumer: c.name,
      consumer_seq: d.dseq,
      stream_seq: d.seq,
      ack_time: Math.max(0, now - d.ts) * NS_PER_MS,
      deliveries: d.count,
    }));
  }

  naked(c: Consumer, d: Delivery): void {
    this.delivery(c, d, "MSG_NAKED", "nak");
  }

  terminated(c: Consumer, d: Delivery): void {
    this.delivery(c, d, "MSG_TERMINATED", "terminated");
  }

  maxDeliveries(c: Consumer, d: Delivery): void {
    const stream = c.stream.config.name;
    this.send(`${ADVISORY}.CONSUMER.MAX_DELIVERIES.${stream}.${c.name}`, `${TYPE}max_deliver`, () => ({
      stream,
      consumer: c.name,
      stream_seq: d.seq,
      deliveries: d.count,
    }));
  }

  private delivery(c: Consumer, d: Delivery, verb: string, type: string): void {
    const stream = c.stream.config.name;
    this.send(`${ADVISORY}.CONSUMER.${verb}.${stream}.${c.name}`, TYPE + type, () => ({
      stream,
      consumer: c.name,
      consumer_seq: d.dseq,
      stream_seq: d.seq,
      deliveries: d.count,
    }));
  }
}
