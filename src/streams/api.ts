/**
 * The JetStream API: request/reply on `$JS.API.>` with JSON bodies, plus the
 * ack (`$JS.ACK.>`) and flow-control (`$JS.FC.>`) subjects. Each request is
 * decoded, checked and turned into a call on the JetStream state; the answer
 * has nats-server's JSON shape and error codes, which the clients depend on.
 */

import type { Message } from "../subjects/message.js";
import type { Account } from "../core/account.js";
import { LimitErrors } from "./limits.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { ApiError, Errors } from "./errors.js";
import { appendHeaders, encodeHeaders, withKeyHeader } from "./headers.js";
import { isoTime, Stream } from "./stream.js";
import { apiOverlapError, createOnlyChecks, normalizeStreamConfig, ownOverlapError } from "./config.js";
import type { JetStream } from "./jetstream.js";
import { MAX_START_SEQ, purgeRefusal, type StoredMessage } from "../store/log.js";
import { ClusterApi, isAccountStreamMove, streamOfSubject, type Placed } from "./cluster-api.js";
import type { ClusterStreams } from "./cluster-streams.js";

const NAMES_LIMIT = 1024;
const LIST_LIMIT = 256;
const TYPE = "io.nats.jetstream.api.v1.";
const STREAM_OPS = new Set(["CREATE", "UPDATE", "INFO", "DELETE", "PURGE"]);
const TEMPLATE_OPS = new Set(["CREATE", "INFO", "DELETE"]);

type Json = Record<string, unknown>;

/** An API request being answered. */
interface Request {
  subject: string;
  body: Buffer;
  reply: string;
}

/** The text each request object was parsed from (parseBody): optNumber reads its number literals as nats-server's decoder does. */
const bodyText = new WeakMap<Json, string>();

/** A request body as nats-server decodes it into its Go request type: `null` leaves it zero (as an empty object does); another non-object is invalid JSON. */
function parseBody(body: Buffer): Json {
  if (body.length === 0) return {};
  let v: unknown;
  const text = body.toString("utf8");
  try {
    v = JSON.parse(text);
  } catch {
    throw Errors.invalidJson();
  }
  if (v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) throw Errors.invalidJson();
  if (tooDeep(text)) throw Errors.invalidJson();
  bodyText.set(v as Json, text);
  return v as Json;
}

/** Where the JSON string opening at `i` in `text` ends: the index after its closing quote, past escapes. */
function afterString(text: string, i: number): number {
  for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
  return i + 1;
}

/** Go's decoder refuses JSON nested more than 10000 deep (its maxNestingDepth); JSON.parse takes any depth. */
const MAX_NESTING = 10000;

/** Whether valid JSON `text` nests objects and arrays more than MAX_NESTING deep. */
function tooDeep(text: string): boolean {
  // An opening and a closing character per level: shorter text cannot.
  if (text.length <= 2 * MAX_NESTING) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) i = afterString(text, i) - 1;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_NESTING) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * The raw values of the top-level members of the JSON object `text` (valid
 * JSON: JSON.parse took it) whose key is `key` to Go's decoder, which
 * matches a field's name without regard to case; every one of them, as Go
 * decodes each in turn (a duplicate key's earlier value fails it too).
 */
function memberLiterals(text: string, key: string): string[] {
  const out: string[] = [];
  // Go folds a key's case as Unicode does: the Kelvin sign is a 'k' (toLowerCase makes it one), the long s 'ſ' an 's'.
  const fold = (k: string): string => k.toLowerCase().replace(/\u017f/g, "s");
  const want = fold(key);
  let i = 0;
  const ws = (): void => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const skipString = (): void => {
    i = afterString(text, i);
  };
  ws();
  if (text[i] !== "{") return out;
  i++;
  for (;;) {
    ws();
    if (i >= text.length || text[i] !== '"') return out;
    const keyStart = i;
    skipString();
    const k = JSON.parse(text.slice(keyStart, i)) as string;
    ws();
    i++; // ':'
    ws();
    const start = i;
    if (text[i] === '"') skipString();
    else if (text[i] === "{" || text[i] === "[") {
      let depth = 0;
      for (; i < text.length; i++) {
        const c = text[i];
        if (c === '"') {
          skipString();
          i--;
        } else if (c === "{" || c === "[") depth++;
        else if (c === "}" || c === "]") {
          if (--depth === 0) {
            i++;
            break;
          }
        }
      }
    } else while (i < text.length && !",} \t\n\r".includes(text[i])) i++;
    if (fold(k) === want) out.push(text.slice(start, i));
    ws();
    if (text[i] !== ",") return out;
    i++;
  }
}

const UINT64_MAX = 2n ** 64n - 1n;

/**
 * nats-server's answer to a delete of a sequence that is not stored. Its
 * file store refuses one outside first..last with an internal error
 * (`500 10057` and the store's text: "stream store EOF" past the end, "no
 * message found" below the start or 0); a gap inside the range, and
 * anything in its memory store, is `400 10043`.
 */
function deleteMiss(s: Stream, seq: number): ApiError {
  if (s.config.storage === "file") {
    const st = s.log.state();
    if (seq > st.lastSeq) return Errors.msgDeleteFailed("stream store EOF");
    if (seq < st.firstSeq || seq === 0) return Errors.msgDeleteFailed("no message found");
  }
  return Errors.sequenceNotFound(seq);
}

/**
 * Whether a request that takes no body has none, as nats-server's
 * isEmptyRequest asks: nothing, or a JSON object without fields. A delete
 * with anything else in it (a typo, a client sending the wrong request) is
 * refused, not carried out.
 */
function isEmptyRequest(body: Buffer): boolean {
  if (body.length === 0) return true;
  try {
    const v: unknown = JSON.parse(body.toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
  } catch {
    return false;
  }
}

/** A page's first item: the request's `offset`, at most `total` (nats-server answers an offset past the end with the end). */
function offsetOf(req: Json, total: number): number {
  const o = req.offset;
  return typeof o === "number" && Number.isInteger(o) && o > 0 ? Math.min(o, total) : 0;
}

/** At most this many subjects in one stream info answer (nats-server's JSMaxSubjectDetails); clients page past it with `offset`. */
export const SUBJECT_DETAILS_MAX = 100_000;

/**
 * Stream info's `subjects` as nats-server pages them: `total` every subject
 * the filter matched, `limit` the page size, and from `offset` at most a
 * page of them, in sorted order; no subjects matched is all zeros, as there.
 * (Sorted by UTF-16 code units, Go's by bytes: the same order but for
 * characters past U+FFFF against U+E000 to U+FFFF.)
 */
function pageSubjects(state: Json, req: Json): { total: number; offset: number; limit: number } {
  const subjects = state.subjects as Record<string, number> | undefined;
  const total = subjects === undefined ? 0 : Object.keys(subjects).length;
  if (subjects === undefined || total === 0) return { total: 0, offset: 0, limit: 0 };
  const asked = req.offset;
  // nats-server echoes the offset asked (a negative one panics its handler: taken as 0 here).
  const offset = typeof asked === "number" && Number.isInteger(asked) && asked > 0 ? asked : 0;
  // Sorted whole, as Go's encoding/json writes a map.
  const start = Math.min(offset, total);
  const page = Object.keys(subjects).sort().slice(start, start + SUBJECT_DETAILS_MAX);
  if (page.length === 0) delete state.subjects;
  else state.subjects = Object.fromEntries(page.map((k) => [k, subjects[k]]));
  return { total, offset, limit: SUBJECT_DETAILS_MAX };
}

/**
 * A request's sequence or count, a uint64 to nats-server's decoder: an
 * integer literal of at most 2^64-1, or null; anything else (a string, a
 * negative, a fraction or an exponent such as 2.0 or 1e3, which JSON.parse
 * would take as integers) is invalid JSON, as there.
 */
function optNumber(req: Json, key: string): number | undefined {
  const text = bodyText.get(req);
  if (text !== undefined) {
    // Taken as Go's decoder takes the field: each member whose key names it (in any case) in turn, a null leaving it as it
    // was, the last other one its value. JSON.parse's object knows only the last member of the exact key, a null too.
    let value: number | undefined;
    for (const lit of memberLiterals(text, key)) {
      if (lit === "null") continue;
      if (!/^(0|[1-9][0-9]*)$/.test(lit) || BigInt(lit) > UINT64_MAX) throw Errors.invalidJson();
      value = Number(lit);
    }
    return value;
  }
  const v = req[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= 2 ** 64) throw Errors.invalidJson();
  return v;
}

function optString(req: Json, key: string): string | undefined {
  const v = req[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw Errors.invalidJson();
  return v;
}

const SYSTEM_RESPONSE = "system_response";
/** Served outside the bound on requests being served, as nats-server serves them outside its API queue. */
const DIRECT_GET = "$JS.API.DIRECT.GET.";
const NEXT_REQUEST = "$JS.API.CONSUMER.MSG.NEXT.";

/** Requests only the system account may make: nats-server leaves them to it and says nothing. */
function systemOnly(t: string[]): boolean {
  const [kind, verb] = [t[2], t[3]];
  return (kind === "ACCOUNT" && !isAccountStreamMove(t)) || (kind === "META" && verb === "LEADER") || (kind === "SERVER" && verb === "REMOVE");
}


/** A pull request (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`). */
function isNextRequest(t: string[]): boolean {
  return t[2] === "CONSUMER" && t[3] === "MSG" && t[4] === "NEXT" && t.length === 7;
}

/**
 * The response type (without `io.nats.jetstream.api.v1.`) of the API that
 * lives on a subject split into tokens, or undefined when none does: the
 * JetStream API's grammar, in one place for every account.
 */
export function apiResponseType(t: string[]): string | undefined {
  const n = t.length;
  const [kind, verb] = [t[2], t[3]];
  if (kind === "INFO" && n === 3) return "account_info_response";
  if (isAccountStreamMove(t)) return "stream_update_response";
  if (kind === "STREAM") {
    if ((verb === "NAMES" || verb === "LIST") && n === 4) return `stream_${verb.toLowerCase()}_response`;
    if (verb === "MSG" && (t[4] === "GET" || t[4] === "DELETE") && n === 6) return `stream_msg_${t[4].toLowerCase()}_response`;
    if ((STREAM_OPS.has(verb) || verb === "SNAPSHOT" || verb === "RESTORE") && n === 5) return `stream_${verb.toLowerCase()}_response`;
    if (verb === "TEMPLATE" && ((t[4] === "NAMES" && n === 5) || (TEMPLATE_OPS.has(t[4]) && n === 6))) return `stream_template_${t[4].toLowerCase()}_response`;
    if (verb === "LEADER" && t[4] === "STEPDOWN" && n === 6) return "stream_leader_stepdown_response";
    if (verb === "PEER" && t[4] === "REMOVE" && n === 6) return "stream_remove_peer_response";
  }
  if (kind === "CONSUMER") {
    if (verb === "CREATE" && n >= 5) return "consumer_create_response";
    if (verb === "DURABLE" && t[4] === "CREATE" && n === 7) return "consumer_create_response";
    if ((verb === "NAMES" || verb === "LIST") && n === 5) return `consumer_${verb.toLowerCase()}_response`;
    if ((verb === "INFO" || verb === "DELETE") && n === 6) return `consumer_${verb.toLowerCase()}_response`;
    if (verb === "LEADER" && t[4] === "STEPDOWN" && n === 7) return "consumer_leader_stepdown_response";
  }
  return undefined;
}

/**
 * The empty listing fields nats-server sends beside an error (its response
 * types' fields are not omitted when empty), per response type: beside "JetStream
 * not enabled for account" as beside any other.
 */
const ERROR_FIELDS: Record<string, Json> = {
  stream_names_response: { total: 0, offset: 0, limit: 0, streams: null },
  stream_list_response: { total: 0, offset: 0, limit: 0, streams: [] },
  stream_info_response: { total: 0, offset: 0, limit: 0 },
  stream_purge_response: { purged: 0 },
  stream_template_names_response: { total: 0, offset: 0, limit: 0, streams: null },
  consumer_names_response: { total: 0, offset: 0, limit: 0, consumers: [] },
  consumer_list_response: { total: 0, offset: 0, limit: 0, consumers: [] },
};

/**
 * The JetStream API of an account without JetStream on a server with it:
 * every API request is answered `503 10039 JetStream not enabled for
 * account` (cluster requests: clustering required), as nats-server 2.9
 * answers; pull requests, direct gets and acks get nothing (no consumer or
 * stream exists to answer them). An account that imports another's API
 * onto `$JS.API.INFO` has none of this (jetstreams.ts): the import answers.
 */
export class DisabledApi implements Receiver {
  readonly echo = true;
  private readonly sub: Subscription;

  constructor(
    private readonly account: Account,
    private readonly emit: (reply: string, body: Buffer) => void,
  ) {
    this.sub = new Subscription(this, "$JS.API.>", null);
    account.subscribe(this.sub);
  }

  close(): void {
    this.account.unsubscribe(this.sub);
  }

  deliver(_sub: Subscription, msg: Message): void {
    // The publisher's own node answers (see JetStreamApi.deliver).
    if (!msg.hasReply || msg.fromRoute) return;
    const t = msg.subject.split(".");
    if (systemOnly(t) || isNextRequest(t) || (t[2] === "DIRECT" && t[3] === "GET")) return;
    const type = apiResponseType(t);
    const error = type === undefined ? Errors.badRequest() : type.includes("stepdown") || type === "stream_remove_peer_response" ? Errors.clusterRequired() : LimitErrors.notEnabledForAccount();
    const body = { type: TYPE + (type ?? SYSTEM_RESPONSE), error: error.toJSON(), ...(type !== undefined ? ERROR_FIELDS[type] : undefined) };
    this.emit(msg.reply, Buffer.from(JSON.stringify(body)));
  }
}

export class JetStreamApi implements Receiver {
  readonly echo = true;
  private readonly subs: Subscription[] = [];
  /** In a cluster: forwards what other nodes lead, and answers for the whole cluster (null: a single node). */
  private clusterApi: ClusterApi | null = null;

  constructor(private readonly js: JetStream) {
    for (const subject of ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"]) {
      const sub = new Subscription(this, subject, null);
      this.subs.push(sub);
      js.account.subscribe(sub);
    }
  }

  /** Joins a cluster: requests for streams led elsewhere are forwarded from now on, and this node serves those forwarded to it. */
  joinCluster(cluster: ClusterStreams): void {
    if (this.clusterApi !== null) return;
    this.clusterApi = new ClusterApi(this.js, cluster, (subject, body, reply, placed) => this.serve(subject, body, reply, placed), (subject, reply) => this.offline(subject, reply));
  }

  /** Lame duck: moves the streams this node leads away (cluster-api.ts); nothing to do on a single node. */
  async drain(deadline: number): Promise<{ moved: string[]; stayed: Array<{ stream: string; why: string }> }> {
    return this.clusterApi === null ? { moved: [], stayed: [] } : await this.clusterApi.drain(deadline);
  }

  close(): void {
    for (const s of this.subs) this.js.account.unsubscribe(s);
    this.clusterApi?.close();
  }

  deliver(_sub: Subscription, msg: Message): void | false {
    // A request reaches other nodes only for a subscriber there that its subject matches (a client's '>'): the
    // requester's own node serves it, forwarding it to the stream's leader (cluster-api.ts), as nats-server serves the API
    // where the client is. Served again there, a pull request was taken twice, an ack or delete applied twice.
    if (msg.fromRoute) return;
    if (this.clusterApi !== null && this.clusterApi.intercept(msg.subject, msg)) return;
    const body = Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end));
    return this.serve(msg.subject, body, msg.hasReply ? msg.reply : "", null);
  }

  /** Serves a request here: a local client's, or one another node forwarded (`placed`: a create it placed); false: not taken. */
  private serve(subject: string, body: Buffer, reply: string, placed: Placed | null): void | false {
    if (this.clusterApi !== null) {
      // A stream frozen for a move: its consumers' acks and changes wait until the move ends (stream-move.ts).
      const held = this.clusterApi.hold(subject, body, reply);
      if (held === "held") return;
      if (held === "full") {
        // Too many wait: a change is refused (retryable), an ack dropped (the message is redelivered).
        if (reply !== "" && subject.startsWith("$JS.API.")) this.respond({ subject, body, reply }, apiResponseType(subject.split(".")) ?? SYSTEM_RESPONSE, { error: Errors.streamMoving().toJSON() });
        return;
      }
    }
    if (subject.startsWith("$JS.ACK.")) {
      // nats-server subscribes each consumer's own ack subject: an ack that no consumer takes (deleted, never made, a
      // subject of another shape) reaches no one, and a double ack hears "no responders" at once (if its client asked
      // for that) rather than nothing until its timeout. In a cluster the consumer may live on another node: what is not
      // forwarded there is left unanswered.
      if (!this.js.onAck(subject, body, reply) && this.clusterApi === null) return false;
      return;
    }
    if (subject.startsWith("$JS.FC.")) return this.js.onFlowControl(subject);
    if (reply === "" || !subject.startsWith("$JS.API.")) return;
    this.handle(subject, body, reply, placed).catch((err: Error) => this.js.options.log.error(`JetStream API ${subject}: ${err.message}`));
  }

  /** The stream's leader is not live, or no route reaches it: nats-server's "stream is offline", at once. */
  private offline(subject: string, reply: string): void {
    if (reply === "") return;
    const t = subject.split(".");
    if (t[1] !== "API") return; // an ack or a flow-control answer: nothing to say
    if (isNextRequest(t) || (t[2] === "DIRECT" && t[3] === "GET")) {
      this.js.emit(reply, reply, "", encodeHeaders("503", []), Buffer.alloc(0));
      return;
    }
    this.respond({ subject, body: Buffer.alloc(0), reply }, apiResponseType(t) ?? SYSTEM_RESPONSE, { error: Errors.streamOffline().toJSON() });
  }

  /**
   * Sends an API answer, counts it (as nats-server does, once the answer is
   * built: INFO does not count itself) and audits it on `$JS.EVENT.ADVISORY.API`.
   */
  private respond(req: Request, type: string, body: Json): void {
    this.js.apiTotal++;
    if (body.error !== undefined) this.js.apiErrors++;
    const text = JSON.stringify({ type: TYPE + type, ...body, ...(body.error !== undefined ? ERROR_FIELDS[type] : undefined) });
    this.js.emit(req.reply, req.reply, "", null, Buffer.from(text));
    this.js.events.apiAudit(req.subject, req.body, text);
  }

  /**
   * Serves a request, counted in the server's bound on requests being
   * served (api-limit.ts) unless it is a pull request or a direct get;
   * dropped unanswered when that bound is reached.
   */
  private handle(subject: string, body: Buffer, reply: string, placed: Placed | null): Promise<void> {
    const limit = this.js.options.apiRequests;
    // Not async itself: a pull request (the most frequent) costs no promise more than before the bound.
    if (limit === undefined || subject.startsWith(DIRECT_GET) || subject.startsWith(NEXT_REQUEST)) return this.handleRequest(subject, body, reply, placed);
    if (!limit.admit()) return Promise.resolve();
    return this.handleRequest(subject, body, reply, placed).finally(() => limit.release());
  }

  private async handleRequest(subject: string, body: Buffer, reply: string, placed: Placed | null): Promise<void> {
    const t = subject.split(".");
    const n = t.length;
    const [kind, verb] = [t[2], t[3]];
    if (systemOnly(t)) return;
    if (this.clusterApi !== null) {
      // Placed here a moment ago: the local copy is being created.
      const name = streamOfSubject(t);
      if (name !== undefined && !this.js.streams.has(name) && this.clusterApi.leadsPlaced(name)) await this.clusterApi.cluster.settle(this.js.account.name, name).catch(() => undefined);
    }
    // Served by the stream and the consumer themselves in nats-server: not counted as API requests.
    if (kind === "DIRECT" && verb === "GET" && n >= 5) return await this.directGet(t, body, reply);
    if (isNextRequest(t)) {
      const c = this.js.streams.get(t[5])?.consumers.get(t[6]);
      if (c === undefined) {
        this.js.emit(reply, reply, "", encodeHeaders("503", []), Buffer.alloc(0));
        return;
      }
      c.onNextRequest(reply, body);
      return;
    }
    const req: Request = { subject, body, reply };
    const type = apiResponseType(t);
    try {
      // No API lives on this subject: nats-server 2.10 answers "bad request" rather than leave the client to time out.
      if (type === undefined) throw Errors.badRequest();
      const answer = await this.answer(type, t, body, reply, placed);
      // null: another node was sent the request and answers it.
      if (answer !== null) this.respond(req, type, answer);
      return;
    } catch (err) {
      const e = err instanceof ApiError ? err : Errors.streamGeneral((err as Error).message);
      this.respond(req, type ?? SYSTEM_RESPONSE, { error: e.toJSON() });
    }
  }

  /** The answer to a request on an API subject (`type`: its response type, from apiResponseType). */
  private async answer(type: string, t: string[], body: Buffer, reply: string, placed: Placed | null): Promise<Json | null> {
    const n = t.length;
    if (isAccountStreamMove(t)) return await this.accountStreamMove(t[4] === "CANCEL_MOVE", t[5], t[6], body);
    switch (type) {
      case "account_info_response":
        return this.accountInfo();
      case "stream_names_response":
        return this.streamNames(parseBody(body));
      case "stream_list_response":
        return await this.streamList(parseBody(body));
      case "stream_msg_get_response":
        return await this.msgGet(this.js.stream(t[5]), parseBody(body));
      case "stream_msg_delete_response":
        return await this.msgDelete(this.js.stream(t[5]), body);
      case "stream_create_response":
      case "stream_update_response":
      case "stream_info_response":
      case "stream_delete_response":
      case "stream_purge_response":
        return await this.streamOp(t[3], t[4], body, reply, placed);
      case "stream_snapshot_response":
      case "stream_restore_response":
        throw Errors.streamGeneral(`stream ${t[3].toLowerCase()}s are not supported`);
      case "stream_template_names_response":
      case "stream_template_create_response":
      case "stream_template_info_response":
      case "stream_template_delete_response":
        throw Errors.streamGeneral("stream templates are not supported");
      case "stream_leader_stepdown_response": {
        if (this.clusterApi === null) throw Errors.clusterRequired();
        const req = parseBody(body);
        const preferred = typeof req.placement === "object" && req.placement !== null ? optString(req.placement as Json, "preferred") : undefined;
        await this.clusterApi.stepDown(t[5], preferred === "" ? undefined : preferred);
        return { success: true };
      }
      case "stream_remove_peer_response": {
        if (this.clusterApi === null) throw Errors.clusterRequired();
        const peer = optString(parseBody(body), "peer");
        if (peer === undefined || peer === "") throw Errors.badRequest();
        await this.clusterApi.removePeer(t[5], peer);
        return { success: true };
      }
      case "consumer_leader_stepdown_response":
        throw Errors.clusterRequired();
      case "consumer_create_response":
        if (t[3] === "DURABLE") return await this.consumerCreate(t[5], body, t[6], undefined, true);
        return await this.consumerCreate(t[4], body, n >= 6 ? t[5] : undefined, n >= 7 ? t.slice(6).join(".") : undefined, false);
      case "consumer_names_response":
      case "consumer_list_response":
        return await this.consumerList(t[4], t[3] === "NAMES", parseBody(body));
      case "consumer_info_response":
        if (!isEmptyRequest(body)) throw Errors.notEmptyRequest();
        return this.js.consumer(this.js.stream(t[4]), t[5]).info();
      case "consumer_delete_response": {
        if (!isEmptyRequest(body)) throw Errors.notEmptyRequest();
        const s = this.js.stream(t[4]);
        const gate = s.consumerCopyGate;
        await this.js.deleteConsumer(s, t[5]);
        await s.consumersReplicated(gate);
        return { success: true };
      }
      default:
        throw Errors.badRequest();
    }
  }

  private accountInfo(): Json {
    // In a cluster, as nats-server's: what the account holds and the API requests answered on every node (as each last
    // told), its streams as placed (each once, whatever its replicas), its consumers where their streams are led.
    const u = this.js.accountUsage();
    const l = this.js.limits;
    return {
      memory: u.memory,
      storage: u.storage,
      reserved_memory: 0,
      reserved_storage: 0,
      streams: this.clusterApi !== null ? this.clusterApi.names(undefined).length : this.js.streams.size,
      consumers: u.consumers,
      limits: {
        max_memory: l.maxMemory,
        max_storage: l.maxStorage,
        max_streams: l.maxStreams,
        max_consumers: l.maxConsumers,
        max_ack_pending: l.maxAckPending,
        memory_max_stream_bytes: l.memoryMaxStreamBytes,
        storage_max_stream_bytes: l.storageMaxStreamBytes,
        max_bytes_required: l.maxBytesRequired,
      },
      api: { total: u.apiTotal, errors: u.apiErrors },
    };
  }

  /**
   * ACCOUNT.STREAM.MOVE: moves a stream off its leader (`server`, when
   * given, must be it: nats-server's "the peer to evacuate") to the least
   * loaded node with the placement's tags plus `tags` (for this move
   * only), or, a nagare addition, to the node named `to`. CANCEL_MOVE
   * withdraws a move under way (refused once it has flipped). Both answer
   * the stream's info; the move runs on after the answer.
   */
  private async accountStreamMove(cancel: boolean, account: string, name: string, body: Buffer): Promise<Json | null> {
    // Another account's stream: nats-server's own-account check drops the request unanswered.
    if (account !== this.js.account.name) return null;
    const cluster = this.clusterApi;
    if (cluster === null) throw Errors.clusterRequired();
    if (cancel) await cluster.cancelMove(name);
    else {
      const req = parseBody(body);
      const server = optString(req, "server");
      const to = optString(req, "to");
      const tags = req.tags === undefined ? [] : req.tags;
      if (!Array.isArray(tags) || tags.some((x) => typeof x !== "string")) throw Errors.badRequest();
      if (server !== undefined && server !== "") {
        if (!cluster.isMember(server)) throw Errors.clusterServerNotMember();
        if (cluster.placement(name)?.leaders[0] !== server) throw Errors.clusterPeerNotMember();
      }
      await cluster.moveAway(name, { to: to === "" ? undefined : to, tags: tags as string[] });
    }
    return cluster.clustered(name, await this.js.stream(name).info(), false);
  }

  private async streamOp(verb: string, name: string, body: Buffer, reply: string, placed: Placed | null): Promise<Json | null> {
    const cluster = this.clusterApi;
    switch (verb) {
      case "CREATE":
      case "UPDATE": {
        // nats-server decodes the config whatever it holds: an empty request is not JSON.
        if (body.length === 0) throw Errors.invalidJson();
        const req = parseBody(body);
        // As nats-server: an update is checked as a config first (a missing name: "stream name is required"), a create is not.
        if (verb === "UPDATE" && (req.name === undefined || req.name === "")) normalizeStreamConfig(req);
        if (req.name !== name) throw Errors.streamMismatch();
        if (verb === "CREATE") createOnlyChecks(req);
        const checked = normalizeStreamConfig(req);
        const overlap = apiOverlapError(checked) ?? ownOverlapError(checked);
        if (overlap !== null) throw overlap;
        if (cluster !== null) return verb === "CREATE" ? await cluster.create(name, req, body, reply, placed) : await cluster.update(name, req);
        if (verb === "CREATE") {
          const { stream, created } = await this.js.createStream(req);
          return { ...(await stream.info()), did_create: created || undefined };
        }
        return await (await this.js.updateStream(req)).info();
      }
      case "INFO": {
        const req = parseBody(body);
        const s = this.js.stream(name);
        const filter = optString(req, "subjects_filter");
        const info = await s.info({ subjectsFilter: filter, deletedDetails: req.deleted_details === true });
        const paged = pageSubjects(info.state as Json, req);
        return { ...(cluster !== null ? cluster.clustered(name, info) : info), ...paged };
      }
      case "DELETE":
        if (!isEmptyRequest(body)) throw Errors.notEmptyRequest();
        if (cluster !== null && (await cluster.delete(name))) return { success: true };
        await this.js.deleteStream(name);
        return { success: true };
      case "PURGE": {
        const s = this.js.stream(name);
        if (s.config.sealed) throw Errors.sealed();
        if (s.config.deny_purge) throw Errors.purgeFailed("stream purge not permitted");
        const req = parseBody(body);
        const filter = optString(req, "filter");
        const seq = optNumber(req, "seq");
        const keep = optNumber(req, "keep");
        // Both only when both are set (nats-server's check): a zero is no sequence, no keep.
        if ((seq ?? 0) > 0 && (keep ?? 0) > 0) throw Errors.badRequest();
        // nats-server moves the stream on to any uint64; nagare's sequences are doubles, exact only so far (a purge within
        // what a stream past MAX_START_SEQ has reached moves nothing on).
        if (seq !== undefined && s.partitions.every((p) => purgeRefusal({ upTo: seq }, p.state().lastSeq) !== null)) throw new ApiError(400, 10003, `purge sequence ${seq} is past ${MAX_START_SEQ}, the furthest a stream can start`);
        const purged = await s.purge({ filter: filter || undefined, upTo: seq || undefined, keep: keep || undefined });
        return { success: true, purged };
      }
      default:
        throw Errors.badRequest();
    }
  }

  /** Every stream of the account: in a cluster, every placed one too. */
  private allStreamNames(subject: string | undefined): string[] {
    return this.clusterApi !== null ? this.clusterApi.names(subject) : this.js.streamNames(subject);
  }

  private streamNames(req: Json): Json {
    const names = this.allStreamNames(optString(req, "subject"));
    const offset = offsetOf(req, names.length);
    const page = names.slice(offset, offset + NAMES_LIMIT);
    // nats-server 2.9 says null for an empty page of stream names (an empty LIST page, and consumers, are `[]`).
    return { total: names.length, offset, limit: NAMES_LIMIT, streams: page.length > 0 ? page : null };
  }

  private async streamList(req: Json): Promise<Json> {
    const names = this.allStreamNames(optString(req, "subject"));
    const offset = offsetOf(req, names.length);
    const page = names.slice(offset, offset + LIST_LIMIT);
    if (this.clusterApi !== null) {
      const { streams, missing } = await this.clusterApi.infos(page);
      return { total: names.length, offset, limit: LIST_LIMIT, streams, ...(missing.length > 0 ? { missing } : {}) };
    }
    const streams: Json[] = [];
    for (const n of page) {
      const s = this.js.streams.get(n);
      if (s) streams.push(await s.info());
    }
    return { total: names.length, offset, limit: LIST_LIMIT, streams };
  }

  /**
   * MSG.GET's and DIRECT.GET's lookup, as nats-server reads the request: a
   * zero `seq` is no `seq` (Go's zero value), `seq` with `last_by_subj`,
   * `last_by_subj` with `next_by_subj`, or nothing at all is a bad request.
   */
  private async findMessage(s: Stream, req: Json): Promise<StoredMessage> {
    const seq = optNumber(req, "seq") ?? 0;
    const last = optString(req, "last_by_subj") ?? "";
    const next = optString(req, "next_by_subj") ?? "";
    if ((seq > 0 && last !== "") || (seq === 0 && last === "" && next === "") || (last !== "" && next !== "")) throw Errors.badRequest();
    let m: StoredMessage | null;
    if (next !== "") m = await s.readerNext(Math.max(0, seq - 1), next);
    // A sequence readers may not see (a door's control record, an uncommitted one) is answered as a missing one.
    else if (seq > 0) m = await s.readerGet(seq);
    else m = await s.readerLast(last);
    if (m === null) throw Errors.noMessageFound();
    return m;
  }

  private async msgGet(s: Stream, req: Json): Promise<Json> {
    return { message: Stream.renderMessage(await this.findMessage(s, req)) };
  }

  private async msgDelete(s: Stream, body: Buffer): Promise<Json> {
    // As nats-server: no request at all is a bad one; one without a sequence (JSON null, other fields) asks for 0.
    if (isEmptyRequest(body)) throw Errors.badRequest();
    const req = parseBody(body);
    if (s.config.sealed) throw Errors.sealed();
    // A partition moving out from here is frozen: a delete now would not reach its new leader (retryable).
    if (s.frozen || s.movingOut()) throw Errors.streamMoving();
    if (s.config.deny_delete) throw Errors.msgDeleteFailed("message delete not permitted");
    const seq = optNumber(req, "seq") ?? 0;
    if (seq === 0 || seq > Number.MAX_SAFE_INTEGER) throw deleteMiss(s, seq);
    // What readers never see is not there for them to delete either (a door's control message: Kafka's markers decide its records).
    if (s.readerVisibility?.hidden(0, seq) === true) throw Errors.sequenceNotFound(seq);
    if (!(await s.deleteMessage(seq))) throw deleteMiss(s, seq);
    for (const c of s.consumers.values()) c.notify(); // a pending delivery of it ends now
    return { success: true };
  }

  private async directGet(t: string[], body: Buffer, reply: string): Promise<void> {
    const s = this.js.streams.get(t[4]);
    const miss = (code: string): void => this.js.emit(reply, reply, "", encodeHeaders(code, []), Buffer.alloc(0));
    // nats-server has no direct-get responder for a stream that is gone or does not allow it: its client errs (times out),
    // it is never told "not found", which a KV client reads as a key without a value. 503 is that error, without the wait.
    if (s === undefined || !s.config.allow_direct) return miss("503");
    let m: StoredMessage;
    try {
      if (t.length > 5) {
        if (body.length > 0) return miss("408 Bad Request");
        const last = await s.readerLast(t.slice(5).join("."));
        if (last === null) return miss("404 Message Not Found");
        m = last;
      } else {
        // nats-server's statuses for a request that asks for nothing, or is not JSON.
        if (body.length === 0) return miss("408 Empty Request");
        let req: Json;
        try {
          req = parseBody(body);
        } catch {
          return miss("408 Malformed Request");
        }
        if (!req.seq && !req.last_by_subj && !req.next_by_subj) return miss("408 Empty Request");
        m = await this.findMessage(s, req);
      }
    } catch (err) {
      return miss(err instanceof ApiError && err.code === 404 ? "404 Message Not Found" : "408 Bad Request");
    }
    const headers = appendHeaders(withKeyHeader(m.headers, m.key), [
      ["Nats-Stream", s.config.name],
      ["Nats-Subject", m.subject],
      ["Nats-Sequence", String(m.seq)],
      ["Nats-Time-Stamp", isoTime(m.time)],
    ]);
    this.js.emit(reply, reply, "", headers, m.data);
  }

  private async consumerCreate(streamName: string, body: Buffer, name: string | undefined, filter: string | undefined, legacy: boolean): Promise<Json> {
    // In nats-server's order: the request decoded (an empty one is not JSON), its names checked against the subject, then the stream looked up.
    if (body.length === 0) throw Errors.invalidJson();
    const req = parseBody(body);
    if (req.stream_name !== streamName) throw Errors.streamMismatch();
    // No config is Go's zero config: a consumer with every default.
    const config = req.config === undefined || req.config === null ? {} : req.config;
    if (typeof config !== "object" || Array.isArray(config)) throw Errors.invalidJson();
    const durable = (config as Json).durable_name;
    const hasDurable = typeof durable === "string" && durable !== "";
    if (legacy) {
      if (!hasDurable) throw Errors.consumerDurableNameNotSet();
      if (durable !== name) throw Errors.consumerDurableSubjectMismatch();
    } else if (name === undefined && hasDurable) {
      // $JS.API.CONSUMER.CREATE.<stream> makes ephemerals only; a durable is named in the subject.
      throw Errors.consumerEphemeralWithDurableName();
    }
    const s = this.js.stream(streamName);
    // A partition of a stream of several moves without the consumers (stream-move.ts): one made now would stay behind.
    if (s.partitions.length > 1 && s.movingOut()) throw Errors.streamMoving();
    const action = typeof req.action === "string" ? req.action : "";
    // Replicated, it exists once the followers that may take over have it (nats-server: once its Raft group does).
    const gate = s.consumerCopyGate;
    const c = await this.js.createConsumer(s, config, action, name, filter, legacy);
    await s.consumersReplicated(gate);
    return c.info();
  }

  private async consumerList(streamName: string, namesOnly: boolean, req: Json): Promise<Json> {
    const s = this.js.stream(streamName);
    const names = [...s.consumers.keys()].sort();
    const offset = offsetOf(req, names.length);
    const limit = namesOnly ? NAMES_LIMIT : LIST_LIMIT;
    const page = names.slice(offset, offset + limit);
    const consumers = namesOnly ? page : page.map((n) => s.consumers.get(n)!.info());
    return { total: names.length, offset, limit, consumers };
  }
}
