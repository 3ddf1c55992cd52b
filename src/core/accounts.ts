/**
 * Accounts beyond the default one (nats-server's `accounts {}`): each an
 * isolated subject space with its own users, joined only where one account
 * exports a stream or a service and another imports it.
 *
 * - A stream import delivers what is published in the exporter on the
 *   imported subject to the importer's subscribers, under the same subject
 *   or with a prefix (`prefix.subject`), as nats-server does.
 * - A service import routes a request published in the importer on its
 *   local subject (`to`, else the export's subject) into the exporter, with
 *   a reply subject of the exporter's own (`_R_.<id>.<n>`) that routes the
 *   response back to the requester's reply subject in the importer. Pending
 *   responses are bounded in number and time; a `singleton` service answers
 *   once, a `stream` service until the response threshold passes.
 *
 * Routing across an import copies the message (its subject changes); a
 * message that already crossed an import does not cross another, so
 * imports cannot loop.
 */

import { randomBytes } from "node:crypto";
import { Account } from "./account.js";
import { Message } from "../subjects/message.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { subjectMatches } from "../subjects/subject.js";
import type { UserOptions } from "./auth.js";

export interface StreamExport {
  stream: string;
  /** Only these accounts may import it; every account when absent. */
  accounts?: string[];
}

export interface ServiceExport {
  service: string;
  accounts?: string[];
  /** How many responses a request may get: one (default), or any until the threshold. */
  responseType?: "singleton" | "stream";
  /** How long a request's responses are routed back (default 2 minutes, nats-server's). */
  responseThresholdMs?: number;
}

export interface StreamImport {
  stream: { account: string; subject: string };
  /** Delivered as `prefix.subject` in the importing account. */
  prefix?: string;
}

export interface ServiceImport {
  service: { account: string; subject: string };
  /** The subject the importing account publishes requests to (default: the export's). */
  to?: string;
}

export interface AccountOptions {
  users?: UserOptions[];
  exports?: Array<StreamExport | ServiceExport>;
  imports?: Array<StreamImport | ServiceImport>;
}

export function isStreamExport(e: StreamExport | ServiceExport): e is StreamExport {
  return (e as StreamExport).stream !== undefined;
}

export function isStreamImport(i: StreamImport | ServiceImport): i is StreamImport {
  return (i as StreamImport).stream !== undefined;
}

/** Why an import cannot be served (no such account, nothing exported there to this account), or null. */
export function importError(accounts: Record<string, AccountOptions>, importer: string, i: StreamImport | ServiceImport): string | null {
  const from = isStreamImport(i) ? i.stream : i.service;
  const exporter = accounts[from.account];
  if (exporter === undefined) return `account ${from.account} does not exist`;
  if (from.account === importer) return "an account cannot import from itself";
  const found = (exporter.exports ?? []).some((e) => {
    if (isStreamExport(e) !== isStreamImport(i)) return false;
    const subject = isStreamExport(e) ? e.stream : e.service;
    return subjectMatches(subject, from.subject) && (e.accounts === undefined || e.accounts.includes(importer));
  });
  return found ? null : `account ${from.account} exports no ${isStreamImport(i) ? "stream" : "service"} ${from.subject} to ${importer}`;
}

/** At most this many requests of one service import await their responses; the oldest is forgotten past it. */
const MAX_PENDING_RESPONSES = 10_000;
const DEFAULT_RESPONSE_THRESHOLD_MS = 120_000;

/** Marks messages that crossed an import, so that none crosses two. */
const crossed = new WeakSet<Message>();

/** Wires the configured imports between `accounts` (by name); returns what stops them. */
export function wireImports(config: Record<string, AccountOptions>, accounts: Map<string, Account>): () => void {
  const stops: Array<() => void> = [];
  for (const [name, opts] of Object.entries(config)) {
    const importer = accounts.get(name)!;
    for (const i of opts.imports ?? []) {
      if (isStreamImport(i)) {
        const exporter = accounts.get(i.stream.account)!;
        const sub = new Subscription(new StreamForwarder(importer, i.prefix), i.stream.subject, null);
        exporter.subscribe(sub);
        stops.push(() => exporter.unsubscribe(sub));
      } else {
        const exporter = accounts.get(i.service.account)!;
        const exp = (config[i.service.account].exports ?? []).find(
          (e): e is ServiceExport => !isStreamExport(e) && subjectMatches(e.service, i.service.subject),
        )!;
        // Without a rename, the exporter gets the subject requested (a wildcard import covers many); with one, the import's subject.
        const renamed = i.to !== undefined && i.to !== i.service.subject;
        const forwarder = new ServiceForwarder(importer, exporter, renamed ? i.service.subject : null, exp);
        const sub = new Subscription(forwarder, i.to ?? i.service.subject, null);
        importer.subscribe(sub);
        const responses = new Subscription(forwarder.responder, `${forwarder.replyPrefix}.>`, null);
        exporter.subscribe(responses);
        stops.push(() => {
          importer.unsubscribe(sub);
          exporter.unsubscribe(responses);
          forwarder.stop();
        });
      }
    }
  }
  return () => {
    for (const s of stops) s();
  };
}

/** A copy of `msg` under another subject and reply, marked as having crossed an import. */
function copyAs(msg: Message, subject: string, reply: string): Message {
  const m = Message.from(subject, reply, msg.data.subarray(msg.start + msg.hdrLen, msg.end), msg.hdrLen > 0 ? msg.data.subarray(msg.start, msg.start + msg.hdrLen) : undefined);
  crossed.add(m);
  return m;
}

class StreamForwarder implements Receiver {
  readonly echo = true;
  constructor(
    private readonly importer: Account,
    private readonly prefix: string | undefined,
  ) {}

  deliver(_sub: Subscription, msg: Message): void {
    if (crossed.has(msg)) return;
    this.importer.route(copyAs(msg, this.prefix === undefined ? msg.subject : `${this.prefix}.${msg.subject}`, msg.reply), null);
  }
}

interface Pending {
  reply: string;
  expires: number;
}

class ServiceForwarder implements Receiver {
  readonly echo = true;
  /** Reply subjects in the exporter are `<replyPrefix>.<n>`. */
  readonly replyPrefix = `_R_.${randomBytes(6).toString("base64url").replace(/[-_]/g, "x")}`;
  private readonly pending = new Map<string, Pending>();
  private next = 0;
  private readonly thresholdMs: number;
  private readonly singleton: boolean;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly importer: Account,
    private readonly exporter: Account,
    /** The exporter's subject requests go to; null: the subject they were published on. */
    private readonly subject: string | null,
    exp: ServiceExport,
  ) {
    this.thresholdMs = exp.responseThresholdMs ?? DEFAULT_RESPONSE_THRESHOLD_MS;
    this.singleton = (exp.responseType ?? "singleton") === "singleton";
  }

  /** A request published in the importer: into the exporter, with a reply that comes back. */
  deliver(_sub: Subscription, msg: Message): void {
    if (crossed.has(msg)) return;
    let reply = "";
    if (msg.hasReply) {
      reply = `${this.replyPrefix}.${this.next++}`;
      if (this.pending.size >= MAX_PENDING_RESPONSES) this.pending.delete(this.pending.keys().next().value!);
      this.pending.set(reply, { reply: msg.reply, expires: Date.now() + this.thresholdMs });
      this.sweepLater();
    }
    this.exporter.route(copyAs(msg, this.subject ?? msg.subject, reply), null);
  }

  /** Responses published in the exporter on this import's reply subjects, back to the requester. */
  readonly responder: Receiver = {
    echo: true,
    deliver: (_sub, msg) => {
      const p = this.pending.get(msg.subject);
      if (p === undefined) return;
      if (p.expires < Date.now()) {
        this.pending.delete(msg.subject);
        return;
      }
      if (this.singleton) this.pending.delete(msg.subject);
      this.importer.route(copyAs(msg, p.reply, ""), null);
    },
  };

  /** Expired entries go within a threshold of expiring, whether or not responses come. */
  private sweepLater(): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const now = Date.now();
      for (const [k, p] of this.pending) if (p.expires < now) this.pending.delete(k);
      if (this.pending.size > 0) this.sweepLater();
    }, Math.min(this.thresholdMs, 60_000));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.pending.clear();
  }
}
