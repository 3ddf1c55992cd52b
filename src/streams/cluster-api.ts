/**
 * The JetStream API of an account in a cluster: any node answers, the
 * stream's leader (`leaders[0]` of its placement) does the work.
 *
 * Forwarding: a request for a stream led by another node (STREAM.INFO,
 * UPDATE, DELETE, PURGE, MSG.GET/DELETE, DIRECT.GET, every CONSUMER.*
 * including MSG.NEXT, acks on `$JS.ACK.<stream>.…`, flow control on
 * `$JS.FC.<stream>.…`) is published, body, headers and the client's reply
 * subject unchanged, on `$NG.JS.<leader>.<original subject>` in the same
 * account. Only the leader subscribes to its `$NG.JS.<node>.>`, and its
 * subscription is routable, so the request crosses one route to it; the
 * leader serves it as if its own client had sent it, never forwards it
 * again, and its answer (addressed to the client's inbox, whose
 * subscription is routable) flows straight back over the routes. A leader
 * that is not live is answered at once "stream is offline" (nats-server's
 * 10118); one that is live but that no route reaches yet (it just joined)
 * after up to 2 s unless a route comes; a pull request or a direct get
 * gets a 503 status, an ack nothing.
 *
 * STREAM.CREATE: subjects are checked against every placement of the
 * account, the stream is placed (placements.place, honouring the
 * config's `placement { cluster, tags }`), then created on the leader,
 * here or forwarded with the placement's metadata revision
 * (`Nagare-Placed: <revision> <created>`) so that the leader waits until
 * its copy of the metadata has it. STREAM.NAMES and LIST cover every
 * placed stream of the account; LIST asks each remote leader for its INFO
 * (on `$NG.R.<node>.<id>`) and names those that did not answer in time in
 * `missing`, as nats-server does.
 */

import { isDeepStrictEqual } from "node:util";
import { randomBytes } from "node:crypto";
import { Message } from "../subjects/message.js";
import { BufferPool } from "../util/buffer-pool.js";
import { CLUSTER_ANSWER_PREFIX, CLUSTER_INTERNAL_PREFIX } from "../core/account.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { subjectsIntersect } from "../subjects/subject.js";
import type { AppendInput } from "../store/log.js";
import { ApiError, Errors } from "./errors.js";
import { clusterLimitError, LimitErrors, placedCopies, placedReserving, reservationOf } from "./limits.js";
import { appendHeaders, header, parseHeaders } from "./headers.js";
import { anyIntersecting, normalizeStreamConfig, sealAdjusted, streamUpdateError, unsupportedStreamFeature, withOverlapBudget, type StreamConfig } from "./config.js";
import { moveOf, newMove, replicasOf, sameMove, withReassignment, type ClusterStreams, type PlacedStream } from "./cluster-streams.js";
import type { JetStream } from "./jetstream.js";
import type { Stream } from "./stream.js";
import { MOVE_PREFIX, StreamMover } from "./stream-move.js";
import { REPL_PREFIX, StreamReplicas } from "./stream-replicas.js";
import { USAGE_PREFIX, USAGE_SUBJECT, UsageExchange } from "./usage.js";

const FORWARD_PREFIX = `${CLUSTER_INTERNAL_PREFIX}JS.`;
export const PLACED_HEADER = "Nagare-Placed";
/**
 * On a forwarded request: serve it here, never forward it again. A node
 * that no longer leads a stream (it moved) forwards a request for it once
 * more, to the leader it knows, with this header; a move's old leader hands
 * over what waits on its consumers with it too (the new leader may not
 * have seen its own flip yet).
 */
const HOP_HEADER = "Nagare-Hop";
const HOP = appendHeaders(null, [[HOP_HEADER, "1"]]);
/** How long LIST waits for a remote leader's INFO, and a leader for a placement it is told of. */
const REMOTE_INFO_MS = 2000;
/** Appends sent to a partition's leader on another node (JetStream.appendAt). */
const APPEND_PREFIX = `${CLUSTER_INTERNAL_PREFIX}APPEND.`;
const STREAM_CREATE = "$JS.API.STREAM.CREATE.";
const STREAM_DELETE = "$JS.API.STREAM.DELETE.";
/** Calls of a door's node services (JetStream.remoteCall, nodeServices). */
const SERVICE_PREFIX = `${CLUSTER_INTERNAL_PREFIX}SVC.`;
/** How long a node waits for another to store an append it sent (replicas included). */
const APPEND_MS = 10_000;
/** How long a drain waits before it tries again a move that failed. */
const DRAIN_RETRY_MS = 250;
const PLACEMENT_WAIT_MS = 5000;
/** How long a request waits for this node to take up a leadership the placement gave it, and how often it looks. */
const ROLE_WAIT_MS = 3000;
const ROLE_CHECK_MS = 20;
const ROLE_WAITERS_MAX = 4096;
/** What the requests waiting for a leadership may hold (their bodies), as for those waiting for a route. */
const ROLE_WAIT_BYTES = 64 << 20;
/**
 * How long a request for a live node that no route reaches waits for one:
 * a node that just joined is live before its route, and the subscriptions
 * the route carries, reach this node.
 */
const ROUTE_WAIT_MS = 2000;
/** How long outOfReach trusts what it last saw of a node's route. */
const REACH_CHECK_MS = 100;
/** Nodes outOfReach remembers (names come from placements; a cluster has far fewer). */
const REACH_NODES_MAX = 1024;
const ROUTE_CHECK_MS = 100;
const ROUTE_WAITERS_MAX = 4096;
/** What the requests waiting for a route may hold, bodies and headers. */
const ROUTE_WAIT_BYTES = 64 << 20;
/** Internal requests waiting for an answer at once (LIST asks at most a page of 256). */
const PENDING_MAX = 4096;
/**
 * Answers of this size and more are copied out of the route's read into
 * pooled memory (a follower's fetch answers, given back once stored): a
 * fresh buffer per answer, external memory to V8, kept a follower of Kafka
 * batches in a mark-compact every few MB (docs/PERFORMANCE.md).
 */
const LEND_FROM = 64 * 1024;
/** The pool of lent answers, shared by the process's accounts; what it keeps unused at most. */
const ANSWERS = new BufferPool(8 * 1024 * 1024);

type Json = Record<string, unknown>;

/** A forwarded create: the placement revision the leader must see, and whether the placing node made it. */
export interface Placed {
  revision: number;
  created: boolean;
}

/** A node name as one subject token: names with other characters are hex-encoded. */
export function nodeToken(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : `x${Buffer.from(name).toString("hex")}`;
}

/** Whether `self` is the placed leader of a replicated stream that is not moving: its requests wait for its role (awaitLeadership). */
function replicatedHere(p: PlacedStream, self: string): boolean {
  return p.leaders[0] === self && (p.replicas?.[0]?.length ?? 1) > 1 && moveOf(p) === undefined;
}

/** Requests a replicated stream's leader serves only once it has taken its leadership up (awaitLeadership). */
function awaitsLeader(subject: string): boolean {
  return (
    // What the stream holds is the leader's to say: before the role, this copy may be empty (a memory stream's leader
    // restarted, waiting for a replica to take over) or hold a tail no follower has.
    subject.startsWith("$JS.API.STREAM.INFO.") ||
    subject.startsWith(STREAM_CREATE) ||
    // An update may rescale the stream around this copy (to one replica: this copy alone, the others' records dropped).
    subject.startsWith("$JS.API.STREAM.UPDATE.") ||
    subject.startsWith("$JS.API.STREAM.MSG.GET.") ||
    subject.startsWith("$JS.API.DIRECT.GET.") ||
    subject.startsWith("$JS.API.CONSUMER.") ||
    subject.startsWith("$JS.ACK.") ||
    subject.startsWith("$JS.FC.") ||
    subject.startsWith("$JS.API.STREAM.PURGE.") ||
    subject.startsWith("$JS.API.STREAM.MSG.DELETE.") ||
    // Only a leader with its role hands it over (a step-down just after another reaches the successor as it takes it up).
    subject.startsWith("$JS.API.STREAM.LEADER.STEPDOWN.")
  );
}

/** The stream a request names: an ack's or flow control's, or a stream-scoped API's (streamOfSubject). */
function streamOfRequest(subject: string): string | undefined {
  return subject.startsWith("$JS.ACK.") || subject.startsWith("$JS.FC.") ? ackStream(subject) : streamOfSubject(subject.split("."));
}

/**
 * nats-server's `$JS.API.ACCOUNT.STREAM.MOVE.<account>.<stream>` and
 * `CANCEL_MOVE`: a system-account API there, which also serves the
 * stream's own account; here only the own account's (each account's API
 * answers for itself).
 */
export function isAccountStreamMove(t: string[]): boolean {
  return t[2] === "ACCOUNT" && t[3] === "STREAM" && (t[4] === "MOVE" || t[4] === "CANCEL_MOVE") && t.length === 7;
}

/** The stream a stream-scoped API, ack or flow-control subject names; undefined for the others (CREATE, NAMES, LIST, INFO). */
export function streamOfSubject(t: string[]): string | undefined {
  const n = t.length;
  if (t[0] !== "$JS") return undefined;
  if ((t[1] === "ACK" || t[1] === "FC") && n >= 4) return t[2];
  if (t[1] !== "API") return undefined;
  const [kind, verb] = [t[2], t[3]];
  if (kind === "STREAM") {
    if ((verb === "UPDATE" || verb === "INFO" || verb === "DELETE" || verb === "PURGE") && n === 5) return t[4];
    if (verb === "MSG" && (t[4] === "GET" || t[4] === "DELETE") && n === 6) return t[5];
    if (verb === "LEADER" && t[4] === "STEPDOWN" && n === 6) return t[5];
    if (verb === "PEER" && t[4] === "REMOVE" && n === 6) return t[5];
    return undefined;
  }
  if (kind === "DIRECT" && verb === "GET" && n >= 5) return t[4];
  if (isAccountStreamMove(t)) return t[6];
  if (kind === "CONSUMER") {
    if (verb === "CREATE" && n >= 5) return t[4];
    if (verb === "DURABLE" && t[4] === "CREATE" && n === 7) return t[5];
    if ((verb === "NAMES" || verb === "LIST") && n === 5) return t[4];
    if ((verb === "INFO" || verb === "DELETE") && n === 6) return t[4];
    if (verb === "MSG" && t[4] === "NEXT" && n === 7) return t[5];
  }
  return undefined;
}

/** The stream of an ack or flow-control subject (`$JS.ACK.<stream>.…`), without splitting it: acks come once per message. */
function ackStream(subject: string): string | undefined {
  const from = subject.indexOf(".", 4) + 1;
  const to = subject.indexOf(".", from);
  return to > from ? subject.slice(from, to) : undefined;
}

/**
 * A metadata change refused (etcd away, lease lost) or a placement
 * impossible, as a JetStream error. No peers reads as nats-server 2.9 words
 * it: with the tags asked for when there were some (`tags` of the request).
 */
export function clusterError(err: unknown, tags: readonly string[] = []): ApiError | unknown {
  const name = (err as Error | undefined)?.name;
  if (name === "NoSuitablePeersError") {
    const why = /tags/.test((err as Error).message) && tags.length > 0 ? `, tags not matched [${tags.map((t) => `'${t}'`).join(", ")}]` : "";
    return Errors.clusterNoPeers(`no suitable peers for placement${why}`);
  }
  // A stream deleted (through another node) while its update waited for the account's round: nats-server's answer.
  if (name === "StreamNotPlacedError") return Errors.streamNotFound();
  // A delete of a stream whose only node left too recently (it may still take writes): offline, as before, saying until when.
  if (name === "NodeJustGoneError") return new ApiError(500, 10118, `stream is offline: ${(err as Error).message}`);
  // A change that lost to other nodes' changes as often as it was tried (creates of the account through every node at once): try again.
  if (name === "MetadataUnavailableError" || name === "FencedError" || name === "ConcurrentChangeError") {
    return new ApiError(503, 10008, `JetStream system temporarily unavailable: ${(err as Error).message}`);
  }
  return err;
}

/** What the API needs to serve a request locally: the same path a local client's request takes. */
export type Serve = (subject: string, body: Buffer, reply: string, placed: Placed | null) => void;

/** The random part of an answer id: 96 bits. */
const NONCE_BYTES = 12;
let noncePool = Buffer.alloc(0);
let nonceAt = 0;

/** Drawn from a block of random bytes: `randomBytes` for each request took 3 % of a follower's round. */
function answerNonce(): string {
  if (nonceAt + NONCE_BYTES > noncePool.length) {
    noncePool = randomBytes(NONCE_BYTES * 256);
    nonceAt = 0;
  }
  nonceAt += NONCE_BYTES;
  return noncePool.toString("base64url", nonceAt - NONCE_BYTES, nonceAt);
}

export class ClusterApi implements Receiver {
  readonly echo = true;
  readonly clusterInternal = true;
  /** Other nodes forward requests here and answer internal requests here: both are announced over the routes. */
  readonly routable = true;
  private readonly forwardSub: Subscription;
  private readonly replySub: Subscription;
  /** Every node's report of what the account's streams hold there (usage.ts). */
  private readonly usageSub: Subscription;
  private readonly usage: UsageExchange;
  private readonly forwardPrefix: string;
  private readonly replyPrefix: string;
  private readonly pending = new Map<string, (body: Buffer | null) => void>();
  /** Answers handed out over pooled memory and not given back: only these go back to the pool (releaseAnswer). */
  private readonly lentAnswers = new WeakSet<Buffer>();
  private nextId = 0;
  private readonly mover: StreamMover;
  private readonly replicas: StreamReplicas;
  /** Requests waiting for this node to take up a leadership the placement gave it (awaitLeadership). */
  private roleWaiters: Array<{ name: string; subject: string; body: Buffer; reply: string; until: number }> = [];
  private roleWaitBytes = 0;
  private roleTimer: NodeJS.Timeout | null = null;
  /** Whether each leader node is out of reach, as last seen (outOfReach). */
  private readonly reach = new Map<string, { probe: string; at: number; outOfReach: boolean }>();
  /** Requests for a live node no route reaches yet (forwardOrWait), in the order they came. */
  private routeWaiters: Array<{ node: string; subject: string; reply: string; body: Buffer; headers: Buffer | undefined; until: number; done: (forwarded: boolean) => void }> = [];
  private routeTimer: NodeJS.Timeout | null = null;
  private routeWaitBytes = 0;
  /** A node's forwarding subscription reaching this one: the requests waiting for a route go now. */
  private readonly onSubscribe = (sub: Subscription): void => {
    if (this.routeWaiters.length > 0 && sub.subject.startsWith(FORWARD_PREFIX)) queueMicrotask(() => this.retryRouteWaiters());
  };

  constructor(
    private readonly js: JetStream,
    readonly cluster: ClusterStreams,
    private readonly serve: Serve,
    private readonly offline: (subject: string, reply: string) => void,
  ) {
    const self = nodeToken(cluster.self);
    this.forwardPrefix = `${FORWARD_PREFIX}${self}.`;
    this.replyPrefix = `${CLUSTER_ANSWER_PREFIX}${self}.`;
    this.forwardSub = new Subscription(this, `${this.forwardPrefix}>`, null);
    this.replySub = new Subscription(this, `${this.replyPrefix}>`, null);
    this.usageSub = new Subscription(this, USAGE_SUBJECT, null);
    js.account.subscribe(this.forwardSub);
    js.account.subscribe(this.replySub);
    js.account.subscribe(this.usageSub);
    js.account.subscribeListeners.push(this.onSubscribe);
    this.mover = new StreamMover({
      js,
      cluster,
      request: (node, subject, body, ms) => this.request(node, subject, body, ms),
      answer: (reply, body) => js.emit(reply, reply, "", null, body),
      serveLocal: (subject, body, reply) => this.serve(subject, body, reply, null),
      handOver: (node, subject, reply, body) => void this.forward(node, subject, reply, body, HOP),
    });
    this.replicas = new StreamReplicas({
      js,
      cluster,
      request: (node, subject, body, ms) => this.request(node, subject, body, ms),
      // The body may be lent (ReplicaHost.answer). Account.route gives `$NG.` messages only to the cluster's own receivers and
      // the routes, which frame it into their outbound at once; of those receivers only this node's answer subscription
      // keeps a payload (an answer to a request of its own). Any other reply (not another node's answer) gets a copy.
      answer: (reply, body) => js.emit(reply, reply, "", null, reply.startsWith(CLUSTER_ANSWER_PREFIX) && !reply.startsWith(this.replyPrefix) ? body : Buffer.from(body)),
      releaseAnswer: (b) => {
        if (this.lentAnswers.delete(b)) ANSWERS.give(b);
      },
      holdsLease: () => this.directory.isLive(cluster.self),
      handOver: (node, subject, reply, body) => void this.forward(node, subject, reply, body, HOP),
    });
    js.remoteAppend = (name, partition, input) => this.appendAtLeader(name, partition, input);
    // A body past what a route carries would close the route (and every stream's traffic on it): not sent.
    js.remoteCall = (node, service, body, ms) => (body.length > js.options.maxPayload ? Promise.resolve(null) : this.request(node, `${SERVICE_PREFIX}${service}`, body, ms));
    js.handOverHere = async (name, partition, to, ms, caughtUpWithinMs) => {
      await this.replicas.handOver(name, partition, performance.now() + ms, to, caughtUpWithinMs);
    };
    js.leaderOutOfReach = (stream, partition) => this.outOfReach(stream, partition);
    // Last: its first report counts the consumers led here, which asks the replicas what this node leads.
    js.consumersLed = () => this.consumersLed();
    this.usage = new UsageExchange(js, cluster.directory, self, nodeToken, () => this.consumersLed());
  }

  /**
   * Whether no route reaches the node leading `partition` of `stream`: its forwarding subscription (every node has one,
   * carried by its route) reaches this node over none. Asked once per REACH_CHECK_MS per node at most: a publish's
   * answer may come that much late or early, while the routes' close is what it tells.
   */
  private outOfReach(stream: Stream, partition: number): boolean {
    const node = stream.leaderNodes?.[partition];
    if (node === undefined || node === this.cluster.self) return false;
    let r = this.reach.get(node);
    if (r === undefined) {
      if (this.reach.size >= REACH_NODES_MAX) this.reach.clear();
      r = { probe: `${FORWARD_PREFIX}${nodeToken(node)}.reach`, at: -Infinity, outOfReach: false };
      this.reach.set(node, r);
    }
    const now = performance.now();
    if (now - r.at >= REACH_CHECK_MS) {
      r.at = now;
      r.outOfReach = this.js.account.remote?.hasInterest(this.js.account, r.probe) !== true;
    }
    return r.outOfReach;
  }

  close(): void {
    if (this.roleTimer !== null) clearInterval(this.roleTimer);
    this.roleTimer = null;
    this.roleWaiters = [];
    this.roleWaitBytes = 0;
    const i = this.js.account.subscribeListeners.indexOf(this.onSubscribe);
    if (i >= 0) this.js.account.subscribeListeners.splice(i, 1);
    if (this.routeTimer !== null) clearInterval(this.routeTimer);
    this.routeTimer = null;
    for (const w of this.routeWaiters.splice(0)) w.done(false);
    if (this.js.remoteAppend !== null) this.js.remoteAppend = null;
    this.js.remoteCall = null;
    this.js.handOverHere = null;
    this.js.leaderOutOfReach = null;
    this.js.consumersLed = null;
    this.mover.close();
    void this.replicas.close();
    this.js.account.unsubscribe(this.forwardSub);
    this.js.account.unsubscribe(this.replySub);
    this.js.account.unsubscribe(this.usageSub);
    this.usage.close();
    for (const done of this.pending.values()) done(null);
    this.pending.clear();
  }

  private get account(): string {
    return this.js.account.name;
  }

  private get directory(): ClusterStreams["directory"] {
    return this.cluster.directory;
  }

  placement(stream: string): PlacedStream | undefined {
    return this.directory.get(this.account, stream)?.placement;
  }

  /** Whether this node leads a stream the cluster placed (and so must have it before serving it). */
  leadsPlaced(stream: string): boolean {
    return this.placement(stream)?.leaders[0] === this.cluster.self;
  }

  // ---- requests from this node's clients ----

  /**
   * Takes a request that another node must serve: forwards it to the
   * stream's leader, or answers that the leader is offline. False: this
   * node serves it.
   */
  intercept(subject: string, msg: Message): boolean {
    const name = streamOfRequest(subject);
    if (name === undefined) return false;
    const p = this.placement(name);
    if (p === undefined) return false;
    const leader = p.leaders[0];
    // Served here (awaitLeadership decides when, for a replicated stream).
    if (leader === this.cluster.self) return false;
    // A delete of a stream whose leader is not live is served here, as nats-server's meta leader serves it: else a stream
    // of one replica on a node down (for good, maybe) could never be deleted, its name and subjects taken. A stream of one
    // replica is removed only once its leader, if merely paused or cut off, takes no more writes (placement.ts, remove;
    // stream.ts, leaseHeld); back, the leader deletes its copy.
    if (subject.startsWith(STREAM_DELETE) && !this.directory.isLive(leader)) return false;
    const reply = msg.hasReply ? msg.reply : "";
    const headers = msg.hdrLen > 0 ? msg.data.subarray(msg.start, msg.start + msg.hdrLen) : undefined;
    const body = msg.data.subarray(msg.start + msg.hdrLen, msg.end);
    if (this.forward(leader, subject, reply, body, headers)) return true;
    void this.waitForRoute(leader, subject, reply, body, headers).then((forwarded) => {
      if (!forwarded) this.offline(subject, reply);
    });
    return true;
  }

  /**
   * Whether a request for a stream frozen here for a move waits for the
   * move to end (stream-move.ts's hold): acks and consumer creates and
   * deletes do, since the consumers' state is being copied; "full" when
   * too many already wait.
   */
  hold(subject: string, body: Buffer, reply: string): "held" | "full" | "no" {
    if (this.awaitLeadership(subject, body, reply)) return "held";
    if (!this.mover.freezing) return "no";
    let name: string | undefined;
    if (subject.startsWith("$JS.ACK.")) name = ackStream(subject);
    else if (subject.startsWith("$JS.API.CONSUMER.")) {
      const t = subject.split(".");
      const changes = t[3] === "CREATE" || t[3] === "DELETE" || (t[3] === "DURABLE" && t[4] === "CREATE");
      if (changes) name = streamOfSubject(t);
    }
    return name === undefined ? "no" : this.mover.hold(name, subject, body, reply);
  }

  /**
   * A consumer request (or ack), purge, message delete, stream info,
   * update or message get, or a create-or-get, for a replicated stream the
   * placement says this node leads, before it has taken the
   * leadership up (a takeover adopting the consumers copied from the old
   * leader, a stream just created, a node just started): served once it
   * has, within ROLE_WAIT_MS, else answered offline. Any request but a
   * delete while this node holds no lease (cut off from etcd, or paused
   * past it: it may have been replaced) is answered offline at once.
   * Served at once, a consumer request would be answered from a state that
   * is not the stream's (a consumer not found, an ack floor behind a
   * confirmed ack), and a removal would not reach the followers. An
   * unreplicated stream's only copy is served as before. True when taken
   * care of here.
   */
  private awaitLeadership(subject: string, body: Buffer, reply: string): boolean {
    // A create of a stream already placed is a create-or-get: answered with the stream's info.
    const name = subject.startsWith(STREAM_CREATE) ? subject.slice(STREAM_CREATE.length) : streamOfRequest(subject);
    if (name === undefined) return false;
    const p = this.placement(name);
    if (p === undefined || !replicatedHere(p, this.cluster.self)) return false;
    // Deleting a stream needs no leader in place, and is how an operator clears one that cannot take its leadership up.
    if (subject.startsWith(STREAM_DELETE)) return false;
    if (!this.directory.isLive(this.cluster.self)) {
      this.offline(subject, reply);
      return true;
    }
    // What waits: what the consumers answer (their state comes with the leadership), the stream's removals (a purge or a
    // delete done before the leader's gate is up would be done on this copy alone), and what the stream holds (info, gets).
    if (this.replicas.leads(name) || !awaitsLeader(subject)) return false;
    // Another node's STREAM.LIST asking (infos): it counts a stream not answered at once as missing, and waits 2 s at most.
    if (reply.startsWith(CLUSTER_ANSWER_PREFIX) || this.roleWaiters.length >= ROLE_WAITERS_MAX || this.roleWaitBytes + body.length > ROLE_WAIT_BYTES) {
      this.offline(subject, reply);
      return true;
    }
    // A copy: the body may be a view of a connection's read buffer.
    this.roleWaiters.push({ name, subject, body: Buffer.from(body), reply, until: Date.now() + ROLE_WAIT_MS });
    this.roleWaitBytes += body.length;
    if (this.roleTimer === null) {
      this.roleTimer = setInterval(() => this.checkRoleWaiters(), ROLE_CHECK_MS);
      this.roleTimer.unref();
    }
    return true;
  }

  private checkRoleWaiters(): void {
    const now = Date.now();
    const waiting = this.roleWaiters;
    this.roleWaiters = [];
    this.roleWaitBytes = 0;
    for (const w of waiting) {
      const p = this.placement(w.name);
      // Led here now, or no longer placed here (served again: forwarded, or refused, as a new request is).
      if (p !== undefined && p.leaders[0] !== this.cluster.self) {
        if (!this.forward(p.leaders[0], w.subject, w.reply, w.body, HOP)) this.offline(w.subject, w.reply);
      } else if (this.replicas.leads(w.name) || p === undefined || (p.replicas?.[0]?.length ?? 1) <= 1 || moveOf(p) !== undefined) this.serve(w.subject, w.body, w.reply, null);
      else if (now >= w.until || !this.directory.isLive(this.cluster.self)) this.offline(w.subject, w.reply);
      else {
        this.roleWaiters.push(w);
        this.roleWaitBytes += w.body.length;
      }
    }
    if (this.roleWaiters.length === 0 && this.roleTimer !== null) {
      clearInterval(this.roleTimer);
      this.roleTimer = null;
    }
  }

  /** Sends a request to `node` for it to serve; false when the node is not live or no route reaches it. */
  forward(node: string, subject: string, reply: string, body: Uint8Array, headers?: Uint8Array): boolean {
    if (!this.directory.isLive(node)) return false;
    const m = Message.from(`${FORWARD_PREFIX}${nodeToken(node)}.${subject}`, reply, body, headers);
    m.clusterMade = true;
    return this.js.account.route(m, null) > 0;
  }

  /** forward, or, when the node is live but no route carries the request to it yet, forwardOrWait's wait. */
  private forwardOrWait(node: string, subject: string, reply: string, body: Uint8Array, headers?: Uint8Array): Promise<boolean> {
    return this.forward(node, subject, reply, body, headers) ? Promise.resolve(true) : this.waitForRoute(node, subject, reply, body, headers);
  }

  /**
   * A request forward could not send: when its node is live, it waits (a
   * copy, in order with the others) up to ROUTE_WAIT_MS for a route to
   * carry it, and resolves whether one did. A node that just joined is
   * answered this way rather than "offline" while its route forms.
   */
  private waitForRoute(node: string, subject: string, reply: string, body: Uint8Array, headers?: Uint8Array): Promise<boolean> {
    const bytes = body.length + (headers?.length ?? 0);
    if (!this.directory.isLive(node) || this.routeWaiters.length >= ROUTE_WAITERS_MAX || this.routeWaitBytes + bytes > ROUTE_WAIT_BYTES) return Promise.resolve(false);
    this.routeWaitBytes += bytes;
    return new Promise((resolve) => {
      const done = (forwarded: boolean): void => {
        this.routeWaitBytes -= bytes;
        resolve(forwarded);
      };
      const copy = { node, subject, reply, body: Buffer.from(body), headers: headers === undefined ? undefined : Buffer.from(headers), until: Date.now() + ROUTE_WAIT_MS, done };
      this.routeWaiters.push(copy);
      if (this.routeTimer === null) {
        this.routeTimer = setInterval(() => this.retryRouteWaiters(), ROUTE_CHECK_MS);
        this.routeTimer.unref();
      }
    });
  }

  private retryRouteWaiters(): void {
    const now = Date.now();
    const waiting = this.routeWaiters;
    this.routeWaiters = [];
    for (const w of waiting) {
      if (this.forward(w.node, w.subject, w.reply, w.body, w.headers)) w.done(true);
      else if (now >= w.until || !this.directory.isLive(w.node)) w.done(false);
      else this.routeWaiters.push(w);
    }
    if (this.routeWaiters.length === 0 && this.routeTimer !== null) {
      clearInterval(this.routeTimer);
      this.routeTimer = null;
    }
  }

  /** Asks `node` to serve a request and resolves with its answer's body, or null when none came within `ms`. */
  request(node: string, subject: string, body: Uint8Array, ms = REMOTE_INFO_MS): Promise<Buffer | null> {
    if (this.pending.size >= PENDING_MAX) return Promise.resolve(null);
    // Unguessable: an answer anyone else makes the server send here (Account.route lets answers out) matches nothing.
    const id = `${++this.nextId}-${answerNonce()}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), ms);
      const finish = (b: Buffer | null): void => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(b);
      };
      this.pending.set(id, finish);
      if (!this.forward(node, subject, `${this.replyPrefix}${id}`, body)) finish(null);
    });
  }

  // ---- appends to a partition wherever it is led (JetStream.appendAt) ----

  /**
   * Sends an append to the partition's leader when another node leads it;
   * null when this node does (or the stream is not placed: served from
   * what this node holds, if anything). A placed partition this node leads
   * but holds no copy of yet is refused, retryably: never "not found".
   */
  private appendAtLeader(name: string, partition: number, input: AppendInput): Promise<number> | null {
    const placed = this.placement(name);
    if (placed === undefined) return null;
    const leader = placed.leaders[partition];
    if (leader === undefined) return Promise.reject(Errors.storeFailed(`stream ${name} has no partition ${partition}`));
    if (leader === this.cluster.self) return this.js.streams.has(name) ? null : Promise.reject(Errors.clusterNotAvailable());
    const body = Buffer.from(JSON.stringify({ subject: input.subject, headers: input.headers ? Buffer.from(input.headers).toString("base64") : null, data: Buffer.from(input.data).toString("base64") }));
    return this.request(leader, `${APPEND_PREFIX}${name}.${partition}`, body, APPEND_MS).then((b) => {
      if (b === null) throw Errors.storeFailed(`${leader}, which leads partition ${partition} of stream ${name}, did not answer`);
      const a = JSON.parse(b.toString("utf8")) as { seq?: number; error?: { code: number; err_code: number; description: string } };
      if (typeof a.seq === "number") return a.seq;
      throw new ApiError(a.error?.code ?? 500, a.error?.err_code ?? 10077, a.error?.description ?? "append failed");
    });
  }

  /** Another node's append to a partition this node should lead: stored as any write, answered with its sequence or the error. */
  private serveAppend(rest: string, body: Buffer, reply: string): void {
    const answer = (a: { seq: number } | { error: ApiError }): void => {
      if (reply !== "") this.js.emit(reply, reply, "", null, Buffer.from(JSON.stringify("seq" in a ? a : { error: a.error.toJSON() })));
    };
    const dot = rest.lastIndexOf(".");
    const name = rest.slice(0, dot);
    const partition = Number(rest.slice(dot + 1));
    let input: AppendInput;
    try {
      const a = JSON.parse(body.toString("utf8")) as { subject: unknown; headers: unknown; data: unknown };
      if (typeof a.subject !== "string" || typeof a.data !== "string" || (a.headers !== null && typeof a.headers !== "string")) throw new Error("bad append");
      input = { subject: a.subject, headers: a.headers === null ? null : Buffer.from(a.headers, "base64"), data: Buffer.from(a.data, "base64") };
    } catch {
      return answer({ error: Errors.storeFailed("a malformed append") });
    }
    const placed = this.placement(name);
    if (placed === undefined) return answer({ error: Errors.streamNotFound() });
    if (placed.leaders[partition] !== this.cluster.self) return answer({ error: Errors.storeFailed(`${this.cluster.self} does not lead partition ${partition} of stream ${name}`) });
    const stream = this.js.streams.get(name);
    if (stream === undefined) return answer({ error: Errors.clusterNotAvailable() });
    this.js.appendHere(stream, partition, input).then(
      (seq) => answer({ seq }),
      (err: unknown) => answer({ error: err instanceof ApiError ? err : Errors.storeFailed((err as Error).message) }),
    );
  }

  /** Another node's call of a service a door offers here (JetStream.nodeServices); one not offered, or failing, is not answered. */
  private serveCall(service: string, body: Buffer, reply: string): void {
    const serve = this.js.nodeServices.get(service);
    if (serve === undefined || reply === "") return;
    serve(body).then(
      (answer) => this.js.emit(reply, reply, "", null, answer),
      (err: unknown) => this.js.options.log.warn(`cluster: service ${service} failed: ${(err as Error).message}`),
    );
  }

  // ---- from other nodes ----

  deliver(sub: Subscription, msg: Message): void {
    // Only another node may forward or answer here: a client publishing on these subjects would bypass its permissions on $JS.API.
    if (!msg.fromRoute) return;
    const subject = msg.subject;
    if (sub === this.usageSub) return this.usage.receive(subject.slice(USAGE_PREFIX.length), msg.data, msg.start + msg.hdrLen, msg.end);
    if (sub === this.replySub) {
      const answered = this.pending.get(subject.slice(this.replyPrefix.length));
      if (answered === undefined) return;
      // Copied out of the route's read (reused): a large answer into pooled memory, which a follower gives back once stored.
      const from = msg.start + msg.hdrLen;
      const size = msg.end - from;
      if (size < LEND_FROM) return answered(Buffer.from(msg.data.subarray(from, msg.end)));
      const b = ANSWERS.take(size);
      msg.data.copy(b, 0, from, msg.end);
      this.lentAnswers.add(b);
      answered(b);
      return;
    }
    const original = subject.slice(this.forwardPrefix.length);
    if (original.startsWith(REPL_PREFIX)) {
      this.replicas.serve(original.slice(REPL_PREFIX.length), Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end)), msg.hasReply ? msg.reply : "");
      return;
    }
    if (original.startsWith(MOVE_PREFIX)) {
      this.mover.serve(original.slice(MOVE_PREFIX.length), Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end)), msg.hasReply ? msg.reply : "");
      return;
    }
    if (original.startsWith(SERVICE_PREFIX)) {
      this.serveCall(original.slice(SERVICE_PREFIX.length), Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end)), msg.hasReply ? msg.reply : "");
      return;
    }
    if (original.startsWith(APPEND_PREFIX)) {
      this.serveAppend(original.slice(APPEND_PREFIX.length), Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end)), msg.hasReply ? msg.reply : "");
      return;
    }
    let placed: Placed | null = null;
    let hopped = false;
    if (msg.hdrLen > 0) {
      const h = parseHeaders(msg.data, msg.start, msg.start + msg.hdrLen);
      const v = header(h, PLACED_HEADER);
      const m = v === undefined ? null : /^(\d+) (true|false)$/.exec(v);
      if (m !== null) placed = { revision: Number(m[1]), created: m[2] === "true" };
      hopped = header(h, HOP_HEADER) !== undefined;
    }
    const body = Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end));
    const reply = msg.hasReply ? msg.reply : "";
    // Sent by a node that has not seen a move yet: once more, to the leader this node knows (an ack or pull request is not lost).
    if (!hopped && placed === null) {
      const name = streamOfRequest(original);
      const p = name === undefined ? undefined : this.placement(name);
      const self = this.cluster.self;
      // A move's target of the first partition serves it: it leads it once it sees the flip (what it holds waits till then).
      const m = p === undefined ? undefined : moveOf(p);
      if (p !== undefined && p.leaders[0] !== self && !(m?.to === self && m.partition === 0)) {
        if (!this.forward(p.leaders[0], original, reply, body, HOP)) this.offline(original, reply);
        return;
      }
    }
    this.serve(original, body, reply, placed);
  }

  // ---- the requests only a cluster answers differently ----

  /**
   * STREAM.CREATE: places the stream (unless placed) and creates it on its
   * leader. Resolves with the answer when this node leads it, null when
   * the leader was sent the request (it answers the client itself).
   */
  async create(name: string, req: Json, body: Buffer, reply: string, placed: Placed | null): Promise<Json | null> {
    const config = normalizeStreamConfig(req);
    const unsupported = unsupportedStreamFeature(config, true);
    if (unsupported !== null) throw unsupported;
    let placement: PlacedStream;
    let created: boolean;
    if (placed !== null) {
      await this.directory.waitForRevision(placed.revision, PLACEMENT_WAIT_MS);
      const p = this.placement(name);
      if (p === undefined) throw Errors.streamCreate("the stream's placement was not found on its leader");
      placement = p;
      created = placed.created;
    } else {
      const existing = this.directory.get(this.account, name);
      let revision: number;
      if (existing !== undefined) {
        placement = existing.placement;
        revision = existing.revision;
        created = false;
      } else {
        const where = config.placement ?? {};
        try {
          const r = await this.directory.place(this.account, name, {
            admit: (others) => {
              // The account's streams in the whole cluster, as nats-server counts them (each node holds only its own).
              const max = this.js.limits.maxStreams;
              if (max > 0 && others.length >= max) throw LimitErrors.maxStreams();
              this.checkOverlapWith(config, others);
              // Its storage too: every placed stream's max_bytes on each of its copies, as nats-server's meta leader counts them.
              const over = clusterLimitError(this.js.limits, config, Math.max(1, config.num_replicas), others);
              if (over !== null) throw over;
            },
            partitions: 1,
            tags: where.tags,
            cluster: where.cluster,
            spread: false,
            subjects: config.subjects,
            origin: "jetstream",
            config,
            replicas: config.num_replicas,
          });
          placement = r.placement;
          revision = r.revision;
          created = r.created;
        } catch (err) {
          throw clusterError(err, where.tags ?? []);
        }
      }
      const leader = placement.leaders[0];
      if (leader !== this.cluster.self) {
        const headers = appendHeaders(null, [[PLACED_HEADER, `${revision} ${created}`]]);
        if (await this.forwardOrWait(leader, `$JS.API.STREAM.CREATE.${name}`, reply, body, headers)) return null;
        // Placed on a node this one cannot reach now: a stream placed by this request must not stay placed.
        if (created) await this.directory.remove(this.account, name).catch(() => undefined);
        throw Errors.streamOffline();
      }
    }
    await this.cluster.settle(this.account, name);
    try {
      // An existing stream asked for again with the replicas its info shows (a Kafka topic's, whose stored config says 1) is the same stream.
      const local = created ? undefined : this.js.streams.get(name);
      const asked = local !== undefined && config.num_replicas === copiesOf(placement) ? { ...req, num_replicas: local.config.num_replicas } : req;
      const { stream } = await this.js.createStream(asked, placement.leaders.length);
      return { ...this.clustered(name, await stream.info()), did_create: created || undefined };
    } catch (err) {
      // A stream this request placed but could not create must not stay placed.
      if (created) await this.directory.remove(this.account, name).catch(() => undefined);
      throw err;
    }
  }

  /** STREAM.UPDATE on the leader: the placement's subjects and config change first (refused while etcd is away), then the stream. */
  async update(name: string, req: Json): Promise<Json> {
    const asked = normalizeStreamConfig(req);
    const config = sealAdjusted(asked);
    const before = this.directory.get(this.account, name);
    if (before === undefined) return await (await this.js.updateStream(req)).info();
    // Refused before the placement changes: every node hosting it follows the placement's config. Checked as asked, then
    // sealed, as nats-server checks.
    const invalid = streamUpdateError(this.js.stream(name).config, asked) ?? unsupportedStreamFeature(config, true);
    if (invalid !== null) throw invalid;
    // Checked here, so a rescale that cannot be made is refused before anything changes; made below on the placement etcd has.
    // Only for a number that is neither the stored config's nor the placement's: a Kafka topic's stream config says 1
    // whatever its replication factor, and stream info the copies the placement has (clustered). Writing back either
    // (an edit of what info showed, an update that leaves num_replicas out) changes no replica.
    const stored = this.js.stream(name).config.num_replicas;
    const rescale = config.num_replicas !== stored && config.num_replicas !== copiesOf(before.placement) ? this.rescaled(before.placement, config) : undefined;
    this.checkOverlap(config, name);
    // The stream's reservation in the cluster (max_bytes on each copy), before and after: one that grows is judged against
    // the account's other streams on every node, in the rounds of its creates (a node's own check sees only its part).
    const copies = rescale !== undefined ? Math.max(1, config.num_replicas) : placedCopies(before.placement);
    const previous = reservationOf(placedReserving(before.placement).config, placedCopies(before.placement));
    const bound = config.storage === "memory" ? this.js.limits.maxMemory : this.js.limits.maxStorage;
    const grows = bound >= 0 && reservationOf(config, copies) > previous;
    // A placement the leader no longer satisfies moves the stream (nats-server moves streams this way): stream-move.ts does it.
    const target = this.moveTarget(name, config, before.placement);
    const move = target === undefined ? undefined : newMove(0, target);
    if (target !== undefined) this.mover.recording(name);
    try {
      // New subjects are judged again (admit) in the cluster's one order of the account's creates and such updates: the
      // check above saw this node's copy only, and an update or a create sent at once through another node may take them.
      await this.directory.update(this.account, name, (p) => {
        if (target !== undefined && p.moving !== undefined) throw Errors.streamMoveInProgress();
        if (rescale !== undefined && (p.epochs?.[0] ?? 1) !== (before.placement.epochs?.[0] ?? 1)) throw Errors.clusterNotAvailable(); // a failover meanwhile: the client tries again
        const next: PlacedStream = { ...p, subjects: config.subjects, config, ...(move !== undefined ? { tags: config.placement?.tags ?? [], moving: move } : {}) };
        if (rescale === undefined) return next;
        delete next.replicas;
        delete next.epochs;
        delete next.isr;
        // Decided on the placement as etcd has it: this may run again after another change (the leader's ISR change in
        // this epoch), and an ISR read before it must not be written back.
        return { ...next, ...this.rescaled(p, config) };
      }, [], (others) => {
        this.checkOverlapWith(config, others);
        const over = clusterLimitError(this.js.limits, config, copies, others, previous);
        if (over !== null) throw over;
      }, grows);
    } catch (err) {
      throw clusterError(err);
    }
    try {
      return this.clustered(name, await (await this.js.updateStream(req)).info());
    } catch (err) {
      await this.directory
        .update(this.account, name, (p) => {
          const back = { ...p, subjects: before.placement.subjects, config: before.placement.config, tags: before.placement.tags };
          // A move recorded by this update is withdrawn with it (nothing was copied yet that the leader would give away).
          if (move !== undefined && sameMove(moveOf(p), 0, move.to, move.id) && p.leaders[0] === this.cluster.self) delete back.moving;
          return back;
        })
        .catch(() => undefined);
      throw err;
    }
  }

  /**
   * The replication fields of a stream whose `num_replicas` changes (as
   * nats-server scales a stream): added replicas are the least loaded live
   * nodes with its tags, out of the ISR until they catch up; removed ones
   * go out of sync first, the leader never. A new leader epoch, so that
   * the leader and its followers start again on the new set; back to one
   * replica, no replication at all, but the epoch still counted: the leader
   * keeps its leader-epoch file, and replicated again it must lead in an
   * epoch past every one that file names.
   */
  private rescaled(p: PlacedStream, config: StreamConfig): Pick<PlacedStream, "replicas" | "epochs" | "isr"> {
    if (p.leaders.length !== 1 || p.moving !== undefined) throw Errors.streamGeneral("the replicas of a stream of several partitions, or of one moving, cannot change");
    if ((p.reassigning?.[0] ?? null) !== null) throw Errors.streamMoveInProgress(); // a peer's removal under way
    const leader = p.leaders[0];
    const set = p.replicas?.[0] ?? [leader];
    const isr = p.isr?.[0] ?? set;
    const want = Math.max(1, config.num_replicas);
    if (want === 1) return { epochs: [(p.epochs?.[0] ?? 0) + 1] };
    let next: string[];
    if (want > set.length) {
      try {
        next = [...set, ...this.directory.moreReplicas(want - set.length, p.tags, new Set(set))];
      } catch (err) {
        throw clusterError(err, p.tags);
      }
    } else {
      // Keep the leader, then those in sync, then the others, in their order.
      const rank = (n: string): number => (n === leader ? 0 : isr.includes(n) ? 1 : 2);
      const keep = new Set([...set].sort((a, b) => rank(a) - rank(b)).slice(0, want));
      next = set.filter((n) => keep.has(n));
    }
    return { replicas: [next], epochs: [(p.epochs?.[0] ?? 0) + 1], isr: [isr.filter((n) => next.includes(n))] };
  }

  /** The node to move a stream to when its new placement does not fit this node (its leader), or undefined. */
  private moveTarget(name: string, config: StreamConfig, p: PlacedStream): string | undefined {
    const tags = config.placement?.tags ?? [];
    const cluster = config.placement?.cluster;
    const self = this.cluster.self;
    const mine = this.directory.nodes().find((n) => n.name === self)?.tags ?? [];
    if (tags.every((t) => mine.includes(t)) && (cluster === undefined || cluster === this.directory.clusterName)) return undefined;
    this.checkMovable(p);
    try {
      return this.directory.choose({ partitions: 1, tags, cluster, spread: false }, new Set([self]))[0];
    } catch (err) {
      throw clusterError(err, tags);
    }
  }

  /** Refuses (with the API's error) a move stream-move.ts cannot make of this placement. */
  private checkMovable(p: PlacedStream): void {
    if (p.moving !== undefined) throw Errors.streamMoveInProgress();
    if (p.replicas !== undefined) throw Errors.streamGeneral("stream move refused: a replicated stream cannot move yet");
    if (p.origin !== "jetstream" || p.leaders.length !== 1) throw Errors.streamGeneral("stream move refused: only a JetStream stream with one partition can move yet");
  }

  /**
   * Starts moving a stream this node leads to another node: `to` by name,
   * or the least loaded live node with the placement's tags plus `tags`
   * (for this move only, as nats-server's ACCOUNT.STREAM.MOVE takes them),
   * never a draining one. Records `moving` in one fenced change and
   * returns the target; stream-move.ts does the rest.
   */
  async moveAway(name: string, opts: { to?: string; tags?: readonly string[] } = {}): Promise<string> {
    const p = this.placement(name);
    if (p === undefined || !this.js.streams.has(name)) throw Errors.streamNotFound();
    this.checkMovable(p);
    const target = this.moveTargetFor(p, 0, opts);
    await this.recordMove(name, 0, target);
    return target;
  }

  /**
   * STREAM.PEER.REMOVE on the leader (`nats stream cluster peer-remove`):
   * another live node with the stream's tags takes `peer`'s place among the
   * replicas, as nats-server remaps a removed peer. A reassignment
   * (cluster-streams.ts withReassignment): the new node copies the stream
   * and joins the ISR, then `peer` is dropped and deletes its copy, the
   * leadership handed over first if `peer` leads. Answered once recorded.
   */
  async removePeer(name: string, peer: string): Promise<void> {
    const p = this.placement(name);
    if (p === undefined || p.leaders[0] !== this.cluster.self) throw Errors.streamNotFound();
    const current = p.replicas?.[0] ?? [p.leaders[0]];
    if (!current.includes(peer)) throw Errors.clusterPeerNotMember();
    if (p.replicas === undefined || p.leaders.length !== 1) throw Errors.peerRemap(); // one copy: a move (ACCOUNT.STREAM.MOVE) takes it elsewhere
    if (p.moving !== undefined) throw Errors.streamMoveInProgress();
    // A removal under way: refused, unless `peer` is the node it is adding and that node is not in sync yet (gone
    // mid-copy, say): another takes its place in the same reassignment, as nats-server lets an offline peer be removed.
    // Else a replacement whose node never returns would leave the stream refusing every peer removal and rescale.
    const under = p.reassigning?.[0] ?? null;
    if (under !== null && (!under.target.includes(peer) || under.original.includes(peer) || (p.isr?.[0] ?? current).includes(peer))) throw Errors.streamMoveInProgress();
    let replacement: string;
    try {
      [replacement] = this.directory.moreReplicas(1, p.tags, new Set([...current, ...(under?.original ?? [])]));
    } catch {
      throw Errors.peerRemap();
    }
    const target = (under?.target ?? current).map((n) => (n === peer ? replacement : n));
    try {
      await this.directory.update(this.account, name, (pl) => {
        if ((pl.epochs?.[0] ?? 1) !== (p.epochs?.[0] ?? 1) || !isDeepStrictEqual(pl.reassigning?.[0] ?? null, under)) throw Errors.clusterNotAvailable(); // changed meanwhile: the client tries again
        return withReassignment(pl, 0, target);
      });
    } catch (err) {
      throw clusterError(err);
    }
    this.js.options.log.info(`cluster: stream "${name}": peer ${peer} removed, ${replacement} takes its place once it has caught up`);
  }

  /**
   * STREAM.LEADER.STEPDOWN on the leader: an in-sync replica takes the
   * leadership over (`placement.preferred` names which, as nats-server
   * 2.11 allows), with nothing acknowledged lost (StreamReplicas.handOver).
   */
  async stepDown(name: string, preferred: string | undefined): Promise<void> {
    const p = this.placement(name);
    if (p === undefined || p.leaders[0] !== this.cluster.self) throw Errors.streamNotFound();
    if (p.replicas === undefined) throw Errors.streamGeneral("stream has one replica: there is no other to step down to");
    try {
      await this.replicas.handOver(name, 0, performance.now() + PLACEMENT_WAIT_MS, preferred);
    } catch (err) {
      const e = clusterError(err);
      throw e instanceof ApiError ? e : new ApiError(503, 10008, `JetStream system temporarily unavailable: ${(err as Error).message}`);
    }
  }

  /**
   * The node a partition led here moves to: `to` (checked: live, not this
   * node, not draining, with the tags, a Kafka listener for a Kafka topic),
   * or the least loaded such node. Throws the API's errors.
   */
  private moveTargetFor(p: PlacedStream, partition: number, opts: { to?: string; tags?: readonly string[] }): string {
    const self = this.cluster.self;
    const tags = [...new Set([...p.tags, ...(opts.tags ?? [])])];
    // A Kafka topic's partitions go only to nodes with a Kafka listener (its clients must reach the leader).
    const unfit = (n: { kafka?: boolean }): boolean => p.origin === "kafka" && n.kafka === false;
    const nodes = this.directory.nodes();
    if (opts.to !== undefined) {
      const node = nodes.find((n) => n.name === opts.to);
      if (node === undefined) throw Errors.clusterServerNotMember();
      if (node.name === self) throw Errors.streamGeneral(`stream move refused: ${self} leads it already`);
      if (node.draining === true) throw Errors.clusterNoPeers(`no suitable peers for placement, ${node.name} is draining`);
      if (unfit(node)) throw Errors.clusterNoPeers(`no suitable peers for placement, ${node.name} has no Kafka listener`);
      const missing = tags.filter((t) => !node.tags.includes(t));
      if (missing.length > 0) throw Errors.clusterNoPeers(`no suitable peers for placement, tags not matched [${missing.map((t) => `'${t}'`).join(", ")}]`);
      return node.name;
    }
    // A JetStream stream keeps its partitions together: a partition goes where another already moved.
    if (p.origin === "jetstream") {
      const there = p.leaders.find((l, i) => i !== partition && l !== self);
      if (there !== undefined && this.directory.isLive(there)) return there;
    }
    try {
      const exclude = new Set([self, ...nodes.filter(unfit).map((n) => n.name)]);
      return this.directory.choose({ partitions: 1, tags, cluster: p.cluster, spread: false }, exclude)[0];
    } catch (err) {
      throw clusterError(err, tags);
    }
  }

  /** Records a move of a partition led here (fenced, one move per stream at a time); stream-move.ts does the rest. */
  private async recordMove(name: string, partition: number, target: string): Promise<void> {
    const self = this.cluster.self;
    this.mover.recording(name);
    try {
      await this.directory.update(this.account, name, (q) => {
        if (q.moving !== undefined) throw Errors.streamMoveInProgress();
        if (q.replicas !== undefined) throw Errors.streamGeneral("stream move refused: a replicated stream cannot move yet");
        if (q.leaders[partition] !== self) throw Errors.streamGeneral(`stream move refused: ${q.leaders[partition]} leads partition ${partition} now`);
        return { ...q, moving: newMove(partition, target) };
      });
    } catch (err) {
      throw clusterError(err);
    }
  }

  /** Withdraws a move under way of a stream led here, fenced: refused once the target flipped it (or none is under way). */
  async cancelMove(name: string): Promise<void> {
    const self = this.cluster.self;
    if (this.placement(name) === undefined || !this.js.streams.has(name)) throw Errors.streamNotFound();
    try {
      await this.directory.update(this.account, name, (q) => {
        if (q.moving === undefined || q.leaders[0] !== self) throw Errors.streamGeneral("no stream move in progress");
        const next = { ...q };
        delete next.moving;
        return next;
      });
    } catch (err) {
      throw clusterError(err);
    }
  }

  /** Whether a node is a live member of the cluster. */
  isMember(node: string): boolean {
    return this.directory.nodes().some((n) => n.name === node);
  }

  /**
   * Lame duck: moves every partition this node leads away, one at a time,
   * each to the least loaded node that satisfies its placement (a
   * JetStream stream's partitions to one node, a Kafka topic's to nodes
   * with a Kafka listener), until `deadline` (performance.now()). Returns
   * what moved and what stays (with why): what stays is unavailable while
   * this node is down.
   */
  async drain(deadline: number): Promise<{ moved: string[]; stayed: Array<{ stream: string; why: string }> }> {
    const self = this.cluster.self;
    const moved: string[] = [];
    const stayed: Array<{ stream: string; why: string }> = [];
    // Passes until nothing led here is left untried: a stream placed here by a node that had not yet seen this
    // node draining is found by the next pass. A move that failed (etcd slow to answer, the target's copy refused, the
    // move cancelled) is tried again in the next pass, 250 ms on, so that one stream failing again and again does not
    // take the others' time.
    const settled = new Set<string>();
    const failed = new Map<string, { name: string; partition: number; why: string }>();
    for (let pass = 0; ; pass++) {
      const todo: Array<{ name: string; partition: number; what: string }> = [];
      for (const p of this.directory.list(this.account)) {
        p.leaders.forEach((l, partition) => {
          const what = p.leaders.length === 1 ? p.stream : `${p.stream} partition ${partition}`;
          if (l === self && !settled.has(what)) todo.push({ name: p.stream, partition, what });
        });
      }
      if (todo.length === 0) break;
      // A pass that tries again what failed waits first; one with only newly found streams does not.
      if (pass > 0 && todo.some((t) => failed.has(t.what))) {
        if (deadline - performance.now() <= DRAIN_RETRY_MS) break;
        await new Promise((resolve) => setTimeout(resolve, DRAIN_RETRY_MS));
      }
      todo.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : x.partition - y.partition));
      for (const { name, partition, what } of todo) {
        try {
          const r = await this.drainPartition(name, partition, what, deadline);
          if (r.failed !== undefined) {
            if (!failed.has(what)) this.js.options.log.info(`cluster: lame duck: moving ${what} failed (${r.failed}); trying again`);
            failed.set(what, { name, partition, why: r.failed });
            continue;
          }
          if (r.went !== undefined) moved.push(r.went);
        } catch (err) {
          stayed.push({ stream: what, why: (err as Error).message });
        }
        failed.delete(what);
        settled.add(what);
      }
    }
    for (const [what, { name, partition, why }] of failed) {
      if (this.placement(name)?.leaders[partition] === self) stayed.push({ stream: what, why });
    }
    return { moved, stayed };
  }

  /**
   * One try at moving a partition led here away for a drain: what it
   * moved (nothing if it went meanwhile) or why the try `failed` (tried
   * again in the next pass); throws why it stays: no node to take it
   * (tags, Kafka listeners, no other live in-sync replica).
   */
  private async drainPartition(name: string, partition: number, what: string, deadline: number): Promise<{ went?: string; failed?: string }> {
    const self = this.cluster.self;
    for (;;) {
      const p = this.placement(name);
      if (p === undefined || p.leaders[partition] !== self) return {};
      // A move under way, of this partition or another (a client's, a Kafka reassignment, a cancelled one's target
      // clearing it): its end first.
      const under = moveOf(p);
      if (under !== undefined) {
        const ended = (q: PlacedStream | undefined): "ended" | undefined => (q === undefined || !sameMove(moveOf(q), under.partition, under.to, under.id) ? "ended" : undefined);
        this.js.options.log.info(`cluster: lame duck: ${what} waits for the move of partition ${under.partition} of stream ${name} to ${under.to} under way`);
        if ((await this.untilPlaced(name, ended, deadline - performance.now())) === "timeout") return { failed: "lame_duck_duration ran out waiting for a move under way" };
        continue;
      }
      if (deadline - performance.now() <= 0) return { failed: "lame_duck_duration ran out" };
      // A replicated partition needs no copy: an in-sync replica takes the leadership over.
      const replicated = p.replicas !== undefined;
      const target = replicated ? this.replicas.handOverTarget(name, partition) : this.moveTargetFor(p, partition, {});
      try {
        if (replicated) return { went: `${what} (leadership to ${await this.replicas.handOver(name, partition, deadline, target)})` };
        await this.recordMove(name, partition, target);
        const outcome = await this.moveOutcome(name, partition, deadline - performance.now());
        if (outcome === "moved") return { went: what };
        return { failed: outcome === "cancelled" ? `the move to ${target} was cancelled` : "lame_duck_duration ran out during its move" };
      } catch (err) {
        return { failed: `moving to ${target}: ${(err as Error).message}` };
      }
    }
  }

  /** Waits until a move of a partition led here flips (moved), is cancelled, or `ms` pass. */
  private moveOutcome(name: string, partition: number, ms: number): Promise<"moved" | "cancelled" | "timeout"> {
    const self = this.cluster.self;
    return this.untilPlaced(name, (p) => (p === undefined || p.leaders[partition] !== self ? "moved" : moveOf(p)?.partition === partition ? undefined : "cancelled"), ms);
  }

  /** What `judge` says of the stream's placement, once it says something (it is asked at every change), or "timeout" after `ms`. */
  private untilPlaced<T extends string>(name: string, judge: (p: PlacedStream | undefined) => T | undefined, ms: number): Promise<T | "timeout"> {
    const now = judge(this.placement(name));
    if (now !== undefined) return Promise.resolve(now);
    if (ms <= 0) return Promise.resolve("timeout");
    return new Promise((resolve) => {
      const listeners = this.cluster.placementListeners;
      const listener = (account: string, stream: string, placed: PlacedStream | undefined): void => {
        if (account !== this.account || stream !== name) return;
        const outcome = judge(placed);
        if (outcome !== undefined) finish(outcome);
      };
      const timer = setTimeout(() => finish("timeout"), ms);
      const finish = (outcome: T | "timeout"): void => {
        clearTimeout(timer);
        listeners.delete(listener);
        resolve(outcome);
      };
      listeners.add(listener);
    });
  }

  /**
   * STREAM.DELETE on the leader of a placed stream, or on any node when the leader is not live: its placement goes, and
   * with it every node's copy (a node not live deletes its copy once back).
   */
  async delete(name: string): Promise<boolean> {
    const p = this.placement(name);
    if (p === undefined) return false;
    // The leader has its copy; a node serving the delete for a leader not live may have none.
    if (p.leaders[0] === this.cluster.self) this.js.stream(name);
    try {
      await this.directory.remove(this.account, name);
    } catch (err) {
      throw clusterError(err);
    }
    await this.cluster.settle(this.account, name, "removed");
    return true;
  }

  /**
   * The consumers of the account's streams this node leads: a stream's consumers live on its leader, a follower holds
   * copies (and a former leader may hold its own until it adopts the copies as it leads again), so each counts once.
   */
  private consumersLed(): number {
    let n = 0;
    const self = this.cluster.self;
    for (const [name, s] of this.js.streams) {
      if (s.consumers.size === 0) continue;
      const p = this.placement(name);
      if (p === undefined || (p.leaders[0] === self && (!replicatedHere(p, self) || this.replicas.leads(name)))) n += s.consumers.size;
    }
    return n;
  }

  /** Every stream of the account in the cluster (placed, or local and not placed), sorted; `subject` as STREAM.NAMES filters. */
  names(subject: string | undefined): string[] {
    const out = new Set<string>(this.js.streamNames(subject));
    for (const p of this.directory.list(this.account)) {
      if (subject === undefined || subject === "" || p.subjects.some((s) => subjectsIntersect(s, subject))) out.add(p.stream);
    }
    return [...out].sort();
  }

  /** STREAM.LIST's infos: local ones read here, remote ones asked of their leaders; those that did not answer are `missing`. */
  async infos(names: string[]): Promise<{ streams: Json[]; missing: string[] }> {
    const missing: string[] = [];
    const infos = await Promise.all(
      names.map(async (n): Promise<Json | null> => {
        const local = this.js.streams.get(n);
        const p = this.placement(n);
        if (local !== undefined && (p === undefined || p.leaders[0] === this.cluster.self)) {
          // Led here by the placement, its role not taken up yet: this copy may not be the stream's (awaitLeadership).
          if (p !== undefined && replicatedHere(p, this.cluster.self) && !this.replicas.leads(n)) {
            missing.push(n);
            return null;
          }
          return this.clustered(n, await local.info());
        }
        if (p === undefined) return null;
        const b = await this.request(p.leaders[0], `$JS.API.STREAM.INFO.${n}`, Buffer.alloc(0));
        let info: Json | null = null;
        try {
          info = b === null ? null : (JSON.parse(b.toString()) as Json);
        } catch {
          // not an answer: counted as missing
        }
        if (info === null || info.error !== undefined) {
          missing.push(n);
          return null;
        }
        delete info.type;
        delete info.total;
        delete info.offset;
        delete info.limit;
        return info;
      }),
    );
    return { streams: infos.filter((i): i is Json => i !== null), missing: missing.sort() };
  }

  /**
   * A stream's info as a cluster answers it: with its `cluster` (clusterInfo;
   * `replicasListed` false leaves the replicas out), and `config.num_replicas`
   * as its placement has it: a Kafka topic's stream config says 1 whatever
   * its replication factor (the placement holds it), and a client that shows
   * or edits the config (`nats stream info`, `stream edit`) must see the
   * copies there are.
   */
  clustered(name: string, info: Json, replicasListed = true): Json {
    const cluster = this.clusterInfo(replicasListed ? name : undefined);
    const placed = this.directory.get(this.account, name)?.placement;
    const config = info.config as Json | undefined;
    if (placed === undefined || config === undefined || config.num_replicas === copiesOf(placed)) return { ...info, cluster };
    return { ...info, config: { ...config, num_replicas: copiesOf(placed) }, cluster };
  }

  /** Stream info's `cluster` (nats-server's form): the cluster's name, this node as the leader (the leader answers); with `stream`, its replicas too when it has some. */
  private clusterInfo(stream?: string): Json {
    const replicas = stream === undefined ? undefined : this.replicas.replicaInfo(stream);
    return { name: this.directory.clusterName, leader: this.cluster.self, ...(replicas !== undefined ? { replicas } : {}) };
  }

  /** Subjects already captured by another placed stream of the account: nats-server's overlap error. */
  private checkOverlap(config: StreamConfig, name: string): void {
    this.checkOverlapWith(config, this.directory.list(this.account).filter((p) => p.stream !== name));
  }

  private checkOverlapWith(config: StreamConfig, others: ReadonlyArray<{ subjects: string[] }>): void {
    // Through an index, within a budget of work: every pair compared, 40,000 subjects against as many placed held the broker.
    const placed = others.flatMap((p) => p.subjects);
    if (withOverlapBudget((budget) => anyIntersecting(config.subjects, placed, budget))) throw Errors.subjectOverlap();
  }
}

/** The copies a placement keeps of a stream's first partition: a reassignment's target while one runs (its union is passing). */
function copiesOf(placed: PlacedStream): number {
  return placed.reassigning?.[0]?.target.length ?? replicasOf(placed, 0).length;
}
