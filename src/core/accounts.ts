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
import { Account, CLUSTER_INTERNAL_PREFIX } from "./account.js";
import { Message } from "../subjects/message.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { subjectMatches } from "../subjects/subject.js";
import { SubjectTransform } from "../subjects/transform.js";
import type { Permissions, UserOptions } from "./auth.js";

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
  /** The permissions of each of `users` that has none of its own (nats-server's account `default_permissions`). */
  defaultPermissions?: Permissions;
  exports?: Array<StreamExport | ServiceExport>;
  imports?: Array<StreamImport | ServiceImport>;
  /**
   * JetStream for this account (nats-server's account `jetstream`): `true`
   * for no limits, or limits (missing ones unlimited). Absent or false: the
   * account has none, and its JetStream API requests are answered
   * "JetStream not enabled for account".
   */
  jetstream?: boolean | JetStreamLimits;
}

/**
 * An account's JetStream limits, as nats-server names them in an account's
 * `jetstream {}` block, in `$JS.API.INFO` and in an account JWT's `limits`.
 * -1 (or absent) is unlimited. Bytes are what the account's streams store
 * (nagare's stored size of each message: its record in the log).
 */
export interface JetStreamLimits {
  /** Bytes of memory streams (max_memory, max_mem). */
  maxMemory?: number;
  /** Bytes of file streams (max_store, max_file, max_disk). */
  maxStorage?: number;
  /** Streams (max_streams); 0 is unlimited too, as in nats-server. */
  maxStreams?: number;
  /** Consumers per stream (max_consumers), as nats-server applies it; 0 is unlimited too. */
  maxConsumers?: number;
  /** A consumer's max_ack_pending: its default when lower than 1,000, and its ceiling. */
  maxAckPending?: number;
  /** The largest max_bytes a memory stream, or a file stream, may have. */
  memoryMaxStreamBytes?: number;
  storageMaxStreamBytes?: number;
  /** Every stream must set max_bytes. */
  maxBytesRequired?: boolean;
}

/** The limits of an account whose JetStream is just enabled (`jetstream: enabled`): none. */
export const UNLIMITED_JETSTREAM: Required<JetStreamLimits> = {
  maxMemory: -1,
  maxStorage: -1,
  maxStreams: -1,
  maxConsumers: -1,
  maxAckPending: -1,
  memoryMaxStreamBytes: -1,
  storageMaxStreamBytes: -1,
  maxBytesRequired: false,
};

/** An account's JetStream setting as limits with every field; null when the account has no JetStream. */
export function jetStreamLimitsOf(setting: boolean | JetStreamLimits | undefined): Required<JetStreamLimits> | null {
  if (setting === undefined || setting === false) return null;
  if (setting === true) return { ...UNLIMITED_JETSTREAM };
  const out = { ...UNLIMITED_JETSTREAM };
  for (const [k, v] of Object.entries(setting) as Array<[keyof JetStreamLimits, number | boolean | undefined]>) {
    if (v !== undefined) (out as Record<string, number | boolean>)[k] = v;
  }
  return out;
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
  if (!found) return `account ${from.account} exports no ${isStreamImport(i) ? "stream" : "service"} ${from.subject} to ${importer}`;
  if (!isStreamImport(i) && i.to !== undefined && i.to !== i.service.subject) {
    try {
      importTransform(i.to, i.service.subject);
    } catch {
      return `a service import's to (${i.to}) must have the wildcards of its subject (${i.service.subject})`;
    }
  }
  return null;
}

/**
 * How a request published on an import's local subject (`to`) becomes the
 * exporter's subject: the local subject's wildcards fill the export's in
 * order (`to: "a.api.>"` for `$JS.API.>` maps `a.api.INFO` to `$JS.API.INFO`),
 * as nats-server maps a service import. Throws when they do not pair up.
 */
function importTransform(local: string, remote: string): SubjectTransform {
  const l = local.split(".");
  const r = remote.split(".");
  const stars = (t: string[]): number => t.filter((x) => x === "*").length;
  if (stars(l) !== stars(r) || (l[l.length - 1] === ">") !== (r[r.length - 1] === ">")) throw new Error("wildcards differ");
  let n = 0;
  return SubjectTransform.parse(local, r.map((x) => (x === "*" ? `$${++n}` : x)).join("."));
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
        const local = i.to ?? i.service.subject;
        const mapping = local === i.service.subject ? null : importTransform(local, i.service.subject);
        const forwarder = new ServiceForwarder(importer, exporter, (subject) => (mapping === null ? subject : (mapping.match(subject) ?? subject)), exp);
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

/**
 * Routes into `to` a message crossing an import, unless it would land on the
 * cluster's own subjects (`$NG.`): an import may map a client's subject, a
 * stream's prefix or a requester's reply there, and a node serves those from
 * another node's route as its peer's. False when dropped.
 */
function crossInto(to: Account, m: Message): boolean {
  if (m.subject.startsWith(CLUSTER_INTERNAL_PREFIX)) return false;
  to.route(m, null);
  return true;
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
    crossInto(this.importer, copyAs(msg, this.prefix === undefined ? msg.subject : `${this.prefix}.${msg.subject}`, msg.reply));
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
    /** The exporter's subject for a request published on the import's local subject. */
    private readonly subjectFor: (local: string) => string,
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
    if (!crossInto(this.exporter, copyAs(msg, this.subjectFor(msg.subject), reply)) && reply !== "") this.pending.delete(reply);
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
      // A response keeps its reply subject and, when it was routed to the reply under a subject of its own
      // (a JetStream delivery: the stored subject), that subject too, as in nats-server.
      const presented = msg.argBuf.toString("utf8", msg.subjectStart, msg.subjectEnd);
      const m = copyAs(msg, presented === msg.subject ? p.reply : presented, msg.hasReply ? msg.reply : "");
      m.subject = p.reply;
      crossInto(this.importer, m);
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
