/**
 * The system account (nats-server's `$SYS`, or the account `system_account`
 * names): where the server answers status requests and announces events.
 * This module is the server's voice in it: the `server` block every system
 * message carries, publishing as the server, and the account events
 * (`$SYS.ACCOUNT.<account>.CONNECT` and `.DISCONNECT`).
 *
 * Nothing here runs per published message. Events are built only when a
 * subscription in the system account would receive them: a connect costs
 * one trie lookup when nobody listens.
 */

import { Message } from "../subjects/message.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import type { Account } from "./account.js";
import type { ConnectionInfo } from "./broker.js";

/** nats-server's ServerInfo: who sent a system message, and its sequence. */
export interface ServerInfo {
  name: string;
  host: string;
  id: string;
  ver: string;
  seq: number;
  jetstream: boolean;
  time: string;
}

/** An error in a system answer, as nats-server's ApiError. */
export interface SystemError {
  code: number;
  description: string;
  /** The account a claims request was about. */
  account?: string;
}

/** What an account event says of the user, beyond its connection's monitoring info. */
export interface ClientAuthInfo {
  /** The user's public key (NKey and JWT users) or name. */
  user?: string;
  /** The user JWT (operator mode) and the key that signed it. */
  jwt?: string;
  issuerKey?: string;
  /** The user JWT's name. */
  nameTag?: string;
}

const CONNECT_TYPE = "io.nats.server.advisory.v1.client_connect";
const DISCONNECT_TYPE = "io.nats.server.advisory.v1.client_disconnect";

export class SystemAccount {
  private seq = 0;

  constructor(
    readonly account: Account,
    private readonly identity: { id: string; name: string; host: string; version: string; jetstream: boolean },
  ) {}

  get name(): string {
    return this.account.name;
  }

  /** The `server` block of the next system message (its sequence counts every one sent). */
  serverInfo(): ServerInfo {
    const i = this.identity;
    return { name: i.name, host: i.host, id: i.id, ver: i.version, seq: ++this.seq, jetstream: i.jetstream, time: new Date().toISOString() };
  }

  /** Whether a message on `subject` in `account` would reach anyone. */
  hasInterest(subject: string, account: Account = this.account): boolean {
    const r = account.sublist.match(subject);
    return r.plain.length > 0 || r.queues.length > 0;
  }

  /** Publishes `body` on `subject` in `account` (the system account unless given), as the server. */
  publish(subject: string, body: string | Uint8Array, account: Account = this.account): void {
    account.route(Message.from(subject, "", typeof body === "string" ? Buffer.from(body) : body), null);
  }

  /**
   * Serves requests on `subject` in `account` (the system account unless
   * given): `handle` gets the subject, the reply subject ("" if none) and a
   * copy of the payload. Returns what stops it.
   */
  subscribe(subject: string, handle: (subject: string, reply: string, body: Buffer) => void, account: Account = this.account): () => void {
    const receiver: Receiver = {
      echo: true,
      deliver: (_sub, msg) => handle(msg.subject, msg.reply, Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end))),
    };
    const sub = new Subscription(receiver, subject, null);
    account.subscribe(sub);
    return () => account.unsubscribe(sub);
  }

  /** nats-server's answer envelope: `{"server": ..., "data": ...}`, or `"error"` (with `"data": null` where nats-server gives it). */
  respond(reply: string, answer: { data: unknown; error?: SystemError } | { error: SystemError }, account: Account = this.account): void {
    if (reply === "") return;
    this.publish(reply, JSON.stringify({ server: this.serverInfo(), ...answer }), account);
  }

  /** `$SYS.ACCOUNT.<account>.CONNECT`, when someone listens; the default account's clients are not announced (nats-server's rule). */
  clientConnected(account: Account, info: () => ConnectionInfo, auth: ClientAuthInfo): void {
    if (!announced(account)) return;
    const subject = `$SYS.ACCOUNT.${account.name}.CONNECT`;
    if (!this.hasInterest(subject)) return;
    const now = new Date().toISOString();
    this.publish(subject, JSON.stringify({ type: CONNECT_TYPE, id: eventId(), timestamp: now, server: this.serverInfo(), client: clientInfo(info(), account, auth, null) }));
  }

  /** `$SYS.ACCOUNT.<account>.DISCONNECT` with the connection's traffic and why it closed, when someone listens. */
  clientDisconnected(account: Account, info: () => ConnectionInfo, auth: ClientAuthInfo, reason: string): void {
    if (!announced(account)) return;
    const subject = `$SYS.ACCOUNT.${account.name}.DISCONNECT`;
    if (!this.hasInterest(subject)) return;
    const now = new Date().toISOString();
    const i = info();
    this.publish(
      subject,
      JSON.stringify({
        type: DISCONNECT_TYPE,
        id: eventId(),
        timestamp: now,
        server: this.serverInfo(),
        client: clientInfo(i, account, auth, now),
        // As nats-server: `sent` is what the client sent (its in_msgs), `received` what it was sent.
        sent: { msgs: i.in_msgs, bytes: i.in_bytes },
        received: { msgs: i.out_msgs, bytes: i.out_bytes },
        reason,
      }),
    );
  }
}

/**
 * The default account's clients are not announced (nats-server's rule), nor
 * those of an account whose name is no single subject token (`a.b` would
 * announce them as another account's).
 */
function announced(account: Account): boolean {
  return account.name !== "$G" && /^[^.*>\s]+$/.test(account.name);
}

/** nats-server's ClientInfo, in its key order, without what is empty. */
function clientInfo(i: ConnectionInfo, account: Account, auth: ClientAuthInfo, stop: string | null): Record<string, unknown> {
  const c: Record<string, unknown> = { start: i.start, host: i.ip, id: i.cid, acc: account.name };
  if (auth.user) c.user = auth.user;
  if (i.name) c.name = i.name;
  if (i.lang) c.lang = i.lang;
  if (i.version) c.ver = i.version;
  if (stop !== null) c.stop = stop;
  if (auth.jwt) c.jwt = auth.jwt;
  if (auth.issuerKey) c.issuer_key = auth.issuerKey;
  if (auth.nameTag) c.name_tag = auth.nameTag;
  c.kind = i.kind;
  c.client_type = i.type;
  return c;
}

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
let eventCounter = 0;
const eventPrefix = Array.from({ length: 12 }, () => ALPHABET[Math.floor(Math.random() * 62)]).join("");

/** A unique event id of nats-server's length (22 characters of base 62). */
export function eventId(): string {
  let n = ++eventCounter;
  let tail = "";
  for (let k = 0; k < 10; k++) {
    tail = ALPHABET[n % 62] + tail;
    n = Math.floor(n / 62);
  }
  return eventPrefix + tail;
}
