/**
 * The streams of one account: their lifecycle, where they live on disk, the
 * subscriptions that capture published subjects, the consumers on them, and
 * the account's JetStream limits (limits.ts). Requests arrive through the
 * JetStream API (api.ts); this module owns the state those requests change.
 * jetstreams.ts gives each account its directory and locks the store.
 *
 * Layout under the account's directory:
 *   streams/<name>/meta.json          stream config, created time, partition count (only grows)
 *   streams/<name>/p<N>/              the partition's log segments
 *   streams/<name>/obs/<c>/meta.json  durable consumer config and created time
 *   streams/<name>/obs/<c>/state.json consumer delivery and ack state
 */

import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { access, readdir, rename } from "node:fs/promises";
import { CLUSTER_INTERNAL_PREFIX, type Account } from "../core/account.js";
import type { Producer } from "../core/broker.js";
import type { Logger } from "../util/log.js";
import { goDuration } from "../util/duration.js";
import { Message } from "../subjects/message.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { subjectMatches, subjectsIntersect } from "../subjects/subject.js";
import { PatternIndex } from "../subjects/pattern-index.js";
import { FileLog } from "../store/file-log.js";
import { MemoryLog } from "../store/memory-log.js";
import { LEADER_EPOCHS_FILE } from "../store/leader-epochs.js";
import type { AppendInput, ForeignRecords, MessageLog, StoredItem, SyncPolicy } from "../store/log.js";
import { Consumer, type DeliveryHost, type MovedState } from "./consumer.js";
import { Advisories } from "./advisories.js";
import { limitsOf, REFUSE_CONSUMER_COPIES, Stream, type StorageQuota } from "./stream.js";
import { ORDER_FILE, ORDER_MARK_FILE, ORDER_PAGES_FILE, StreamOrder } from "./stream-order.js";
import { ApiError, Errors, HandedOverError, LeaseLostError } from "./errors.js";
import type { ClusterStreams } from "./cluster-streams.js";
import { encodeHeaders, header, KEY_HEADER, parseHeaders } from "./headers.js";
import { partitionForKey } from "./partitioner.js";
import {
  consumerUpdateError,
  filtersOf,
  normalizeConsumerConfig,
  normalizeStreamConfig,
  sameJson,
  sealAdjusted,
  streamUpdateError,
  unsupportedStreamFeature,
  anyIntersecting,
  withOverlapBudget,
  type ConsumerConfig,
  type StreamConfig,
} from "./config.js";
import { appendCopy } from "./copy-batch.js";
import { isHashedName, moveDirDurably, nameOfStored, readJson, removeDir, removeDirAtomically, REMOVING_PREFIX, removeFileDurably, safeJoin, storedName, writeJsonDurably } from "../util/persist.js";
import { boundsStorage, consumerLimit, heldBytes, LimitErrors, reservationOf, streamLimitError, type AccountLimits, type Reserving } from "./limits.js";
import type { ServerJetStreamLimits } from "./server-limits.js";
import type { ApiRequestLimit } from "./api-limit.js";
import type { AnswerBudget } from "./replication.js";
import { Fifo } from "../util/fifo.js";
import { ThrottledLog } from "../util/throttled-log.js";
import { withinMs } from "../util/settle.js";

export interface JetStreamOptions {
  storeDir: string;
  maxPayload: number;
  /** The node's bound on replication answers in flight to each follower node (below a route's max_pending), shared by every account's leaders. */
  answerBudget?: AnswerBudget;
  sync?: SyncPolicy;
  syncIntervalMs?: number;
  log: Logger;
  /** Named in advisories (the server id). */
  serverId?: string;
  /**
   * The broker's producer slot. Read: the connection whose publish is being
   * routed, paused while a stream's ingest is busy. Set: to a consumer while
   * its deliveries are routed, so a receiver past its stall mark slows the
   * consumer down.
   */
  pacing?: { producer: Producer | null };
  /** Reads batches a door stored in its own record format (Kafka's) as messages; see MessageLog.appendBatch. */
  foreign?: ForeignRecords;
  /** The server's own limits over every account (`jetstream { max_mem, max_file }`), one object shared by every account's JetStream. */
  serverLimits?: ServerJetStreamLimits;
  /** The bound on API requests served at once (`jetstream { request_queue_limit }`), one object shared by every account's JetStream. */
  apiRequests?: ApiRequestLimit;
  /**
   * This node joins a cluster once its streams are open: the streams found
   * on disk hand out no new stream sequences until the cluster has settled
   * them (StreamOrder's `held`), when their replicated partitions are
   * capped at their high watermarks.
   */
  clustered?: boolean;
  /** How long close() waits for stream changes under way (default CLOSE_WAIT_MS). */
  closeWaitMs?: number;
  /** How long the server's stop waits for the store to close (default STOP_WAIT_MS in server.ts). */
  stopWaitMs?: number;
}

interface StreamMeta {
  config: StreamConfig;
  created: string;
  partitions: number;
  /** Stream.placed, when known. */
  placed?: string;
}

/** What meta.json holds for a stream. */
function streamMeta(config: StreamConfig, created: Date, partitions: number, placed: string | undefined): StreamMeta {
  return { config, created: created.toISOString(), partitions, ...(placed !== undefined ? { placed } : {}) };
}

/** What meta.json holds for `stream`, with `config` and `partitions` as given (or as they are). */
function metaOf(stream: Stream, config = stream.config, partitions = stream.partitions.length): StreamMeta {
  return streamMeta(config, stream.created, partitions, stream.placed);
}

interface ConsumerMeta {
  name: string;
  config: ConsumerConfig;
  created: string;
}

/** In an account's store: copies of streams moved out of the way of a stream placed under their name (reclaimSetAside). */
const SET_ASIDE_DIR = "set-aside";

/** How long a publish refused for a lost lease waits before it is answered (deferRefusal): the leader elsewhere answers first. */
export const LEASE_REFUSAL_DELAY_MS = 1500;
/** Publishes refused that way waiting at once; past it they are answered at once. */
const MAX_DEFERRED_REFUSALS = 10_000;

/** nats-server's answer to a request nothing subscribes to: a 503 status, no payload. */
const NO_RESPONDERS = encodeHeaders("503", []);
const EMPTY = Buffer.alloc(0);

/** Streams closed at once when the server stops. */
const CLOSE_CONCURRENCY = 32;

/**
 * The longest close() waits for the stream creates, updates, growths and
 * deletes under way. They take milliseconds; one stalled on the disk held
 * the stop for good. Past it the close goes on, and each of them, once the
 * disk answers, finds the JetStream closed: it closes what it opened and
 * fails (shuttingDown). Its files stay as a crash at that moment leaves them.
 */
const CLOSE_WAIT_MS = 10_000;

/** The refusal of a stream change that finds the JetStream closed. */
function shuttingDown(name: string): ApiError {
  return Errors.storeFailed(`JetStream is shutting down: stream ${name} was not changed`);
}

/**
 * A deleted consumer whose directory could not be removed (a read-only or
 * failing disk) is tried again after this, doubling to the maximum: left
 * there, the consumer came back at the next start.
 */
const REMOVAL_RETRY_MIN_MS = 1000;
const REMOVAL_RETRY_MAX_MS = 60_000;
/** Directories waiting for that at once; past it one more is not tried again (and says so). */
const MAX_UNREMOVED = 10_000;
/** At most one line about a consumer's failing disk work (its directory's removal, its state's writes) in this long (ThrottledLog). */
const CONSUMER_FAILURE_LOG_MS = 60_000;

const NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomName(): string {
  const b = randomBytes(8);
  let s = "";
  for (let i = 0; i < 8; i++) s += NAME_CHARS[b[i] % NAME_CHARS.length];
  return s;
}

/** How a stream is described in the log: what an operator checks first. */
function describeStream(c: StreamConfig, partitions: number): string {
  const parts = [`subjects ${c.subjects.join(", ")}`, `${c.storage} storage`, `${c.retention} retention`];
  if (partitions > 1) parts.push(`${partitions} partitions`);
  return parts.join(", ");
}

/** The refusal of a header block that names a reserved header, or null (a name found in a value is no match). */
function reservedIn(headers: Buffer, reserved: ReadonlyMap<string, string>): ApiError | null {
  for (const [name, owner] of reserved) {
    if (headers.indexOf(name) >= 0 && parseHeaders(headers, 0, headers.length).has(name)) return new ApiError(400, 10003, `header ${name} is reserved for ${owner}`);
  }
  return null;
}

/**
 * Publishes a stream holds while its node takes up a partition's leadership
 * (HELD_PUBLISHES, or their bytes HELD_PUBLISH_BYTES, at most; more are
 * dropped), each taken if the leadership is up within HELD_PUBLISH_MS (its
 * client may have given up and sent it again by then).
 */
const HELD_PUBLISHES = 1024;
const HELD_PUBLISH_BYTES = 8 * 1024 * 1024;
const HELD_PUBLISH_MS = 1000;

/** A publish's header block, copied: the publisher reuses its read buffer. */
function copiedHeaders(msg: Message): Buffer | null {
  return msg.hdrLen > 0 ? Buffer.from(msg.data.subarray(msg.start, msg.start + msg.hdrLen)) : null;
}

/** A publish's payload, copied. */
function copiedData(msg: Message): Buffer {
  return Buffer.from(msg.data.subarray(msg.start + msg.hdrLen, msg.end));
}

/** Captures a stream's subjects: copies each published message into the stream. */
class StreamReceiver implements Receiver {
  readonly echo = true;
  readonly subs: Subscription[] = [];
  /** In a cluster, a publish on any node must reach the node storing it: the capture is announced over the routes. */
  readonly routable: boolean;
  /** Publishes held for a leadership being taken up here (hold), and their bytes. */
  private held = 0;
  private heldBytes = 0;
  constructor(
    readonly stream: Stream,
    private readonly js: JetStream,
  ) {
    this.routable = js.cluster !== null;
  }

  deliver(_sub: Subscription, msg: Message): void {
    // A partition led by another node: that node stores and answers it; this one drops it before any check or reply.
    const led = this.stream.ledHere;
    if (led !== null) {
      const p = partitionOfMessage(msg, led.length);
      if (led[p] !== true) {
        // Named its leader (a step-down's successor, a failover's), this node is still taking the partition up: the publish
        // waits for it, as no other node takes it either (the old leader gave the partition up, the others follow).
        if (this.hold(msg, p)) return;
        // Unless the publisher is this node's client and no route reaches the leader (it died, or is cut off): then no node
        // takes it, and the publisher hears "no responders" (as from nats-server with no leader; its client may retry), not a
        // timeout. Deferred as a lost lease's refusal: a new leader this node has not heard of yet may take it and answer first.
        if (!msg.fromRoute && msg.hasReply && !this.stream.config.no_ack && this.js.leaderOutOfReach?.(this.stream, p) === true) this.js.deferRefusal(msg.reply, NO_RESPONDERS, EMPTY);
        return;
      }
    }
    this.take(msg.subject, msg.hasReply ? msg.reply : "", copiedHeaders(msg), copiedData(msg));
    // A publisher outrunning the disk is paused until the stream's backlog drains.
    if (this.stream.ingestBusy()) this.js.options.pacing?.producer?.stall(this.stream.ingestDrain);
  }

  /**
   * Holds a publish to partition `p`, not led here, while this node takes
   * its leadership up (ClusterStreams.takingUp); false when it is not, or
   * too much is held already.
   */
  private hold(msg: Message, p: number): boolean {
    const taking = this.js.cluster?.takingUp(this.js.account.name, this.stream.config.name, p) ?? null;
    const size = msg.end - msg.start;
    if (taking === null || this.held >= HELD_PUBLISHES || this.heldBytes + size > HELD_PUBLISH_BYTES) return false;
    this.held++;
    this.heldBytes += size;
    const subject = msg.subject;
    const reply = msg.hasReply ? msg.reply : "";
    const headers = copiedHeaders(msg);
    const data = copiedData(msg);
    const since = performance.now();
    void taking.then(() => {
      this.held--;
      this.heldBytes -= size;
      // Dropped as any publish not led here if the settle did not make this node the leader (it handed the partition on, or
      // failed and is retried), or if it took too long.
      const led = this.stream.ledHere;
      if ((led !== null && led[p] !== true) || this.js.streams.get(this.stream.config.name) !== this.stream || performance.now() - since > HELD_PUBLISH_MS) return;
      this.take(subject, reply, headers, data);
    });
    return true;
  }

  /** Stores a publish led here (its headers and data copied), or refuses it; the publisher hears which at `reply`. */
  private take(subject: string, reply: string, headers: Buffer | null, data: Buffer): void {
    const name = this.stream.config.name;
    if (this.js.reservedSubjects.size > 0) {
      // Checked as stored: a subject transform could make a reserved subject of another.
      const stored = this.stream.storedSubject(subject);
      const owner = this.js.reservedSubjects.get(stored);
      if (owner !== undefined) {
        this.refuse(reply, new ApiError(400, 10003, `subject ${stored} is reserved for ${owner}`));
        return;
      }
    }
    if (headers !== null && this.js.reservedHeaders.size > 0) {
      const refused = reservedIn(headers, this.js.reservedHeaders);
      if (refused !== null) {
        this.refuse(reply, refused);
        return;
      }
    }
    this.stream.publish(subject, headers, data, (err, seq, duplicate) => {
      if (reply === "" || this.stream.config.no_ack) return;
      const body = err !== null ? { error: err.toJSON(), stream: name, seq: 0 } : duplicate ? { stream: name, seq, duplicate: true } : { stream: name, seq };
      // Refused for a lost lease, or by a leader that handed the partition over: another node may lead now and answer this
      // publish (every replica's node takes the stream's subjects), so the refusal goes later, after that leader's
      // acknowledgement, which the client takes first.
      if (err instanceof LeaseLostError || err instanceof HandedOverError) this.js.deferRefusal(reply, null, Buffer.from(JSON.stringify(body)));
      else this.js.emit(reply, reply, "", null, Buffer.from(JSON.stringify(body)));
    });
  }

  /** A publish not stored: its publisher is told why, as JetStream answers a publish. */
  private refuse(reply: string, err: ApiError): void {
    if (reply !== "" && !this.stream.config.no_ack) this.js.emit(reply, reply, "", null, Buffer.from(JSON.stringify({ error: err.toJSON(), stream: this.stream.config.name, seq: 0 })));
  }
}

/** The partition a published message goes to, as Stream.publish chooses it: its Nats-Key's, else 0. */
function partitionOfMessage(msg: Message, partitions: number): number {
  if (msg.hdrLen === 0 || partitions <= 1) return 0;
  const key = header(parseHeaders(msg.data, msg.start, msg.start + msg.hdrLen), KEY_HEADER);
  return key === undefined ? 0 : partitionForKey(Buffer.from(key, "utf8"), partitions);
}

/**
 * An open stream's definition is rewritten only where its directory still is: made again (removed under the
 * running server), it would hold a meta.json and no messages, and the next start would serve the stream empty.
 */
const EXISTING_DIR = { createDir: false };

export class JetStream implements DeliveryHost, StorageQuota {
  readonly streams = new Map<string, Stream>();
  private readonly receivers = new Map<Stream, StreamReceiver>();
  /** Every stream's subjects, to find overlaps without comparing with each stream. */
  private readonly subjectIndex = new PatternIndex<Stream>();
  private readonly sweeper: NodeJS.Timeout;
  /** Consumer creates under way, per stream and name (oneAtATime): the last one's end. */
  private readonly consumerWork = new WeakMap<Stream, Map<string, Promise<void>>>();
  /** Consumers of each stream being made (started, files written) and not yet among its consumers, by name. */
  private readonly consumersMaking = new WeakMap<Stream, Map<string, ConsumerConfig>>();
  private readonly onSubscribe = (sub: Subscription): void => {
    for (const s of this.streams.values()) {
      for (const c of s.consumers.values()) {
        if (c.push && subjectMatches(sub.subject, c.config.deliver_subject!)) c.notify();
      }
    }
  };
  apiTotal = 0;
  apiErrors = 0;
  private closed = false;
  /** Deleted consumers' directories whose removal failed, by path: tried again until removed (retryRemovals). */
  private readonly unremoved = new Map<string, { stream: Stream; name: string }>();
  private removalTimer: NodeJS.Timeout | undefined;
  private removalDelayMs = REMOVAL_RETRY_MIN_MS;
  /** The round of removals being tried now, which close() waits for: it works in the store. */
  private removalRound: Promise<void> | null = null;
  private readonly removalFailuresTold = new ThrottledLog(CONSUMER_FAILURE_LOG_MS, 1);
  /** Consumers whose state writes fail (a full disk): a line each per minute at most, and one once saved again. */
  private readonly stateFailuresTold = new ThrottledLog(CONSUMER_FAILURE_LOG_MS, 4096);
  /** Publishes refused for a lost lease, answered when due (deferRefusal), oldest first. */
  private readonly deferredRefusals = new Fifo<{ reply: string; headers: Buffer | null; body: Buffer; due: number }>();
  private refusalTimer: NodeJS.Timeout | null = null;
  readonly events: Advisories;
  /**
   * Told of what a replica copied into a partition from elsewhere (its
   * leader, or the source of a move), once appended: a door that derives
   * state from a log (Kafka transactions) reads it from there too. A
   * promise returned is waited for before the copy goes on (and so before
   * a follower acknowledges what it copied).
   */
  readonly copyListeners = new Set<(stream: Stream, partition: number, items: readonly StoredItem[]) => void | Promise<void>>();
  /**
   * Message headers a door writes into stored messages and reads back as its
   * own (the Kafka door's `Kafka-Batch`, which rebuilds an idempotent
   * producer's state), by name, with who reserved them: a NATS publish that
   * carries one is refused, so that it cannot pass for the door's record.
   */
  readonly reservedHeaders = new Map<string, string>();
  /**
   * Subjects a door writes messages on that it reads back as its own (the
   * Kafka door's transaction markers, which commit or abort a producer's
   * records), by subject, with who reserved them: a NATS publish on one is
   * refused, whatever stream would capture it.
   */
  readonly reservedSubjects = new Map<string, string>();
  /** Told when a replica cuts a partition's log back to its leader's, from `fromSeq` on: what was derived from those messages is void. */
  readonly cutListeners = new Set<(stream: Stream, partition: number, fromSeq: number) => void>();
  /** Streams found on disk that could not be opened, by name, and why: their directories are left alone. */
  readonly unloadable = new Map<string, string>();
  /** Their directories: a name stored under its hash may not be known (its meta.json unreadable), its directory is. */
  private readonly unloadableDirs = new Set<string>();
  /** Streams on disk this node does not serve, by name, and why (in a cluster: placed on other nodes); their files stay. */
  readonly notServed = new Map<string, string>();
  /** Of those, the placements their copies were made for (Stream.placed), where recorded (reclaimSetAside). */
  private readonly setAsidePlaced = new Map<string, string>();
  /**
   * Stream creates, updates and growths under way, by stream name: what each
   * holds until it ends (an update or growth: the larger of before and
   * after). The invariant: every check of a stream's name, subjects, the
   * stream count and the storage reservations (the account's, and every
   * account's through ServerJetStreamLimits) counts the streams made and
   * these. A change checks and reserves in one synchronous step, before its
   * first await, so no other check runs in between; its disk work then runs
   * in no queue (a stalled disk holds no other stream's change); it releases
   * its reservation once it is the stream (or changed it), or has failed.
   * Changes of one name still wait for each other (exclusive()).
   */
  private readonly changing = new Map<string, Reserving>();
  /** The subjects the creates and updates in `changing` take, by stream name (checkOverlap). */
  private readonly changingSubjects = new PatternIndex<string>();
  /** The last create, update, growth or delete of each stream still running (see exclusive()). */
  private readonly streamOps = new Map<string, Promise<void>>();
  /** The cluster this node is part of (null: a single node). */
  cluster: ClusterStreams | null = null;
  /** The account's limits (limits.ts); changed while running by setLimits. */
  private accountLimits: AccountLimits;

  private constructor(
    readonly account: Account,
    readonly options: JetStreamOptions,
    limits: AccountLimits,
  ) {
    this.accountLimits = { ...limits };
    options.serverLimits?.join(this);
    this.events = new Advisories({ hasInterest: (s) => this.hasInterest(s), publish: (s, b) => this.emit(s, s, "", null, b) }, options.serverId ?? "");
    this.account.subscribeListeners.push(this.onSubscribe);
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
  }

  /**
   * Opens every stream under `options.storeDir` (created on the first
   * write), for a caller that checked and locked the store directory it
   * lies in (jetstreams.ts: one lock for every account's JetStream).
   * `prepare` is given the JetStream before its streams load and capture
   * anything.
   */
  static async open(account: Account, options: JetStreamOptions, limits: AccountLimits, prepare?: (js: JetStream) => void): Promise<JetStream> {
    const js = new JetStream(account, options, limits);
    try {
      prepare?.(js);
      await js.load();
    } catch (err) {
      await js.close();
      throw err;
    }
    return js;
  }

  /**
   * Joins a cluster: the stream capture subscriptions become routable, so
   * that a publish on any node reaches the node storing it.
   */
  joinCluster(cluster: ClusterStreams): void {
    this.cluster = cluster;
    // A receiver is routable or not for its whole life (the routes count its subscriptions): new ones replace the old.
    for (const s of this.streams.values()) {
      this.unbind(s);
      this.bindSubjects(s);
      this.refuseConfirmsUntilPlaced(s);
    }
  }

  /**
   * In a cluster, sends an append to a partition's leader on another node
   * (cluster-api.ts); null on a single node, or a node that leads it.
   */
  remoteAppend: ((name: string, partition: number, input: AppendInput) => Promise<number> | null) | null = null;

  /**
   * In a cluster, asks service `service` of node `node` (one a door offers in
   * `nodeServices` there) with `body`, over the routes; resolves with its
   * answer, or null when none came within `ms` (node down, not routed, body
   * past what a route carries). Null on a single node.
   */
  remoteCall: ((node: string, service: string, body: Buffer, ms: number) => Promise<Buffer | null>) | null = null;

  /**
   * In a cluster, hands the leadership of partition `partition` of a
   * replicated stream led here to in-sync replica `to` (stream-replicas.ts,
   * StreamReplicas.handOver: writes refused meanwhile, nothing acknowledged
   * lost); resolves once the new leader is recorded, rejects when it cannot
   * be within `ms` (`to` not a live in-sync replica, writes in flight not
   * replicated in time, the placement changed). Null on a single node.
   */
  handOverHere: ((name: string, partition: number, to: string, ms: number, caughtUpWithinMs?: number) => Promise<void>) | null = null;

  /**
   * In a cluster, whether no route reaches the node leading partition `partition` of `stream` (led elsewhere): a publish
   * this node's client sent it was carried to no node that could store it. Called for each such publish: cached, cheap.
   */
  leaderOutOfReach: ((stream: Stream, partition: number) => boolean) | null = null;

  /**
   * In a cluster, what the account's streams hold on the other nodes, by
   * storage type, as they last told it (usage.ts: each node sends its own
   * at a bounded rate, as nats-server's `$JSC.ARU` updates). A publish is
   * judged against this plus what the streams here hold: read, never
   * computed, on its way. 0 on a single node.
   */
  readonly remoteHeld = { file: 0, memory: 0 };

  /** In a cluster, the consumers the other nodes lead and the API requests they answered, as they last told it (usage.ts). */
  readonly remoteCounts = { consumers: 0, apiTotal: 0, apiErrors: 0 };

  /** In a cluster, the consumers of the account's streams led here (a follower's copies are its leader's); null: all of them. */
  consumersLed: (() => number) | null = null;

  /** In a cluster, told when the account's limits change (usage.ts sends what it holds at once; its refresh period follows them). */
  limitsChanged: (() => void) | null = null;

  /** What other nodes may ask of this one by name (remoteCall): a door's requests between its brokers, answered with a body. */
  readonly nodeServices = new Map<string, (body: Buffer) => Promise<Buffer>>();

  /**
   * Appends a message to partition `partition` of stream `name` wherever it
   * is led: here, or in a cluster at its leader (a door's control message,
   * such as a Kafka transaction marker, which must reach a partition
   * wherever it is). Resolves with the sequence once stored as any write
   * (on the in-sync replicas of a replicated partition); rejects with an
   * ApiError, `streamNotFound` when no such stream is placed or held.
   */
  appendAt(name: string, partition: number, input: AppendInput): Promise<{ seq: number; here: boolean }> {
    const remote = this.remoteAppend?.(name, partition, input) ?? null;
    if (remote !== null) return remote.then((seq) => ({ seq, here: false }));
    const stream = this.streams.get(name);
    if (stream === undefined) return Promise.reject(Errors.streamNotFound());
    return this.appendHere(stream, partition, input).then((seq) => ({ seq, here: true }));
  }

  /** appendAt's append at this node, the partition's leader: the doors' hooks first, then the append as any write. */
  async appendHere(stream: Stream, partition: number, input: AppendInput): Promise<number> {
    // A replicated partition whose role is not set up yet has no gate: the append would be acknowledged on this node alone.
    if (this.cluster?.awaitsGate(this.account.name, stream, partition) === true) throw Errors.storeFailed(`the replication of partition ${partition} of stream ${stream.config.name} is being set up`);
    const after: Array<() => void> = [];
    for (const hook of this.appendAtHooks) {
      const then = await hook(stream, partition, input);
      if (then !== undefined) after.push(then);
    }
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, seq: number): void => {
        for (const then of after) then();
        if (err === null) resolve(seq);
        else reject(err);
      };
      try {
        stream.append(partition, input, done);
      } catch (err) {
        done(err as Error, 0);
      }
    });
  }

  /**
   * Run before appendAt appends here: a door readies the stream for what is
   * appended (Kafka's index before a marker); a function it gives back is
   * called once the append has landed or failed.
   */
  readonly appendAtHooks = new Set<(stream: Stream, partition: number, input: AppendInput) => Promise<(() => void) | undefined>>();

  /** In a cluster, a replicated stream's consumers (its config says so, or it was replicated here: a Kafka topic's config says 1) confirm nothing until its placement says whether this node leads it (stream-replicas.ts). */
  private refuseConfirmsUntilPlaced(s: Stream): void {
    if (this.cluster !== null && ((s.config.num_replicas ?? 1) > 1 || s.replicatedBefore)) s.consumerCopyGate = REFUSE_CONSUMER_COPIES;
  }

  get limits(): Readonly<AccountLimits> {
    return this.accountLimits;
  }

  /**
   * New limits for a running account (an account JWT updated): they apply
   * to what is created and stored from now on; what already exists beyond
   * them stays, as in nats-server.
   */
  setLimits(limits: AccountLimits): void {
    this.accountLimits = { ...limits };
    const quota = this.boundsStorage() ? this : null;
    for (const s of this.streams.values()) s.quota = quota;
    this.limitsChanged?.();
  }

  /** Whether the account or the server bounds what streams hold: then every publish is checked (refusal). */
  private boundsStorage(): boolean {
    return boundsStorage(this.accountLimits) || this.options.serverLimits?.bounded === true;
  }

  /** Why a stream's configuration fits neither its account's limits nor the server's (null: it fits); see streamLimitError. */
  private limitError(config: StreamConfig, partitions: number, previous = 0): ApiError | null {
    return (
      streamLimitError(this.accountLimits, config, partitions, this.reservations(config.name), previous) ??
      this.options.serverLimits?.reservationError({ account: this, name: config.name }, config, partitions, previous) ??
      null
    );
  }

  /** What the account's streams reserve, those being made or changed as they will be (`changing`), but for stream `except`. */
  reservations(except: string | null): Reserving[] {
    const out: Reserving[] = [];
    for (const [name, s] of this.streams) if (name !== except && !this.changing.has(name)) out.push(s);
    for (const [name, r] of this.changing) if (name !== except) out.push(r);
    return out;
  }

  /** The account's streams, those being created counted. */
  private streamCount(): number {
    let n = this.streams.size;
    for (const name of this.changing.keys()) if (!this.streams.has(name)) n++;
    return n;
  }

  /** Reserves what a change of stream `name` takes (see `changing`): call it in the same synchronous step as the checks; the function returned releases it. */
  private reserve(name: string, subjects: readonly string[], holds: Reserving): () => void {
    this.changing.set(name, holds);
    for (const s of subjects) this.changingSubjects.add(s, name);
    return () => {
      this.changing.delete(name);
      for (const s of subjects) this.changingSubjects.remove(s, name);
    };
  }

  /**
   * StorageQuota: the account's streams of a storage type hold too much for `bytes` more, on this node and (in a cluster)
   * on the others as they last told it. Sums this node's per call: only accounts with a byte limit ask.
   */
  refusal(storage: StreamConfig["storage"], bytes: number): ApiError | null {
    const max = storage === "memory" ? this.accountLimits.maxMemory : this.accountLimits.maxStorage;
    if (max >= 0 && heldBytes(this.streams.values(), storage) + this.remoteHeld[storage] + bytes > max) return LimitErrors.accountResources();
    return this.options.serverLimits?.refusal(storage) ?? null;
  }

  /**
   * The account's usage as its account info tells it (`$JS.API.INFO`, /jsz's account detail): in a cluster the
   * account's in the whole cluster, as nats-server's (storageTotals: every node's copies, a replicated stream's bytes
   * once for each replica; its consumers once; the API requests every node answered), eventually consistent.
   */
  accountUsage(): { memory: number; storage: number; consumers: number; apiTotal: number; apiErrors: number } {
    let consumers = 0;
    if (this.consumersLed !== null) consumers = this.consumersLed();
    else for (const s of this.streams.values()) consumers += s.consumers.size;
    const r = this.remoteCounts;
    return {
      memory: this.heldHere("memory") + this.remoteHeld.memory,
      storage: this.heldHere("file") + this.remoteHeld.file,
      consumers: consumers + r.consumers,
      apiTotal: this.apiTotal + r.apiTotal,
      apiErrors: this.apiErrors + r.apiErrors,
    };
  }

  /** What the account's streams of a storage type hold on this node (each copy here: a leader's, a follower's). */
  heldHere(storage: StreamConfig["storage"]): number {
    return heldBytes(this.streams.values(), storage);
  }

  private get streamsDir(): string {
    return join(this.options.storeDir, "streams");
  }

  // ---- DeliveryHost ----

  emit(to: string, subject: string, reply: string, headers: Buffer | null, data: Buffer, producer?: Producer): void {
    if (this.closed) return;
    const m = Message.from(subject, reply, data, headers ?? undefined);
    // Match on the target, present the stored subject: deliveries keep their original subject.
    m.subject = to;
    m.presented = to !== subject;
    const slot = this.options.pacing;
    if (producer === undefined || slot === undefined) {
      this.account.route(m, null);
      return;
    }
    const outer = slot.producer;
    slot.producer = producer;
    try {
      this.account.route(m, null);
    } finally {
      slot.producer = outer;
    }
  }

  hasInterest(subject: string): boolean {
    const r = this.account.sublist.match(subject);
    for (const s of r.plain) if (!s.closed) return true;
    if (r.queues.length > 0) return true;
    // A subscriber on another node (a client of the cluster consuming a stream led here).
    return this.account.remote !== null && this.account.remote.hasInterest(this.account, subject);
  }

  /**
   * A push consumer's interest as nats-server counts it (its sublist's
   * registerNotification): a subscription on exactly the deliver subject (a
   * wildcard one does not count), plain when the consumer has no
   * deliver_group, else a member of that queue group; on this node or on
   * another (the same kinds: nats-server keeps its routes' subscriptions in
   * the account's sublist, so its check counts them alike). Deliveries are
   * routed as any message is, so once there is such interest every matching
   * subscriber gets them.
   */
  hasDeliveryInterest(subject: string, group: string | undefined): boolean {
    const r = this.account.sublist.match(subject);
    if (group === undefined || group === "") {
      for (const s of r.plain) if (!s.closed && s.subject === subject) return true;
    } else {
      for (const q of r.queues) {
        if (q.name !== group) continue;
        for (const s of q.members) if (!s.closed && s.subject === subject) return true;
      }
    }
    return this.account.remote !== null && this.account.remote.hasDeliveryInterest(this.account, subject, group);
  }

  stateSaveFailed(c: Consumer, err: Error | null): void {
    const key = `${c.stream.config.name}\0${c.name}`;
    if (err === null) {
      const heldBack = this.stateFailuresTold.over(key);
      this.options.log.warn(`Consumer ${c.name} of stream ${c.stream.config.name}: its state is saved again${heldBack > 0 ? ` after ${heldBack} more failure(s) not logged` : ""}`);
      return;
    }
    const told = this.stateFailuresTold.failed(key);
    if (told === null) return;
    const line = `Consumer ${c.name} of stream ${c.stream.config.name}: its state could not be saved (${err.message}); trying again each second, acks since its last save are lost if the server stops now`;
    this.options.log.error(told.heldBack > 0 ? `${line} (and ${told.heldBack} more such failure(s) in the last ${Math.round(told.sinceMs / 1000)} s)` : line);
  }

  onConsumerGone(c: Consumer): void {
    const idle = c.config.inactive_threshold ?? 0;
    void this.deleteConsumer(c.stream, c.name, ` (inactive for ${goDuration(idle)})`).catch(() => undefined);
  }

  // ---- loading ----

  private async load(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.streamsDir);
    } catch {
      return;
    }
    for (const dirName of names) {
      const dir = join(this.streamsDir, dirName);
      // A deletion a crash interrupted: finished now.
      if (dirName.startsWith(REMOVING_PREFIX)) {
        await removeDir(dir);
        continue;
      }
      // One stream's damage (a torn or garbage meta.json, say) must not keep the others from being served.
      try {
        await this.loadStream(dir);
      } catch (err) {
        // A hashed directory name (storedName) says nothing: the stream's own name, if its meta.json still tells it.
        const meta = isHashedName(dirName) ? ((await readJson(join(dir, "meta.json")).catch(() => undefined)) as Partial<StreamMeta> | undefined) : undefined;
        const name = typeof meta?.config?.name === "string" ? meta.config.name : nameOfStored(dirName);
        const why = (err as Error).message;
        this.unloadable.set(name, why);
        this.unloadableDirs.add(dir);
        this.options.log.error(`Could not restore stream ${name} from ${dir}: ${why}; it is not served, and its files are left as they are`);
      }
    }
  }

  /** Opens the stream kept in `dir` with its consumers; undefined when `dir` holds none (no meta.json, and nothing else). */
  private async loadStream(dir: string): Promise<Stream | undefined> {
    const meta = (await readJson(join(dir, "meta.json"))) as StreamMeta | undefined;
    // Deletes rename the directory first, and a create writes meta.json before anything else: messages without it mean it was lost.
    if (meta === undefined && (await holdsAny(dir, ["p0", "obs", "order.map"]))) throw new Error("its meta.json is gone (the stream's configuration is not known)");
    if (meta === undefined) return undefined;
    if (typeof meta !== "object" || meta === null || typeof meta.config !== "object") throw new Error("meta.json holds no stream configuration");
    const config = normalizeStreamConfig(meta.config);
    const stream = await this.openStream(config, new Date(meta.created), dir, meta.partitions ?? 1, this.options.clustered === true);
    if (typeof meta.placed === "string") stream.placed = meta.placed;
    await this.loadConsumers(stream);
    // In a cluster a replica's log is set by its leader's (a follower may cut an unacknowledged tail that its consumers'
    // copies name); on a single node a log below what a consumer delivered lost its tail.
    if (this.options.clustered !== true && stream.partitions.length === 1) await this.goOnPastDelivered(stream);
    return stream;
  }

  /**
   * A stream whose log ends below what one of its consumers delivered, or
   * below the last sequence its clean close recorded, lost its tail (damage
   * without an index to say so is cut at open as a torn tail): it goes on
   * past that, so that no sequence a client was given (a PubAck, a
   * delivery) names another message, and the loss is logged.
   */
  private async goOnPastDelivered(stream: Stream): Promise<void> {
    let seen = stream.savedLastSeq;
    let by = "its clean close recorded";
    for (const c of stream.consumers.values()) {
      if (c.lastDelivered > seen) [seen, by] = [c.lastDelivered, `its consumer ${c.name} delivered`];
    }
    const log = stream.partitions[0];
    const last = log.state().lastSeq;
    if (seen <= last) return;
    this.options.log.error(`Stream ${stream.config.name}: its log ends at ${last}, below the ${seen} ${by}: ${last + 1}..${seen} are lost; it goes on at ${seen + 1}`);
    // Recorded first: reported in the stream's info from now on, and past them whatever happens next.
    await log.noteLost(last + 1, seen);
    await appendCopy(log, seen + 1, 0, []);
  }

  private async loadConsumers(stream: Stream): Promise<void> {
    const obs = join(stream.dir!, "obs");
    let names: string[];
    try {
      names = await readdir(obs);
    } catch {
      return;
    }
    for (const dirName of names) {
      const dir = join(obs, dirName);
      if (dirName.startsWith(REMOVING_PREFIX)) {
        await removeDir(dir);
        continue;
      }
      let meta: ConsumerMeta | undefined;
      try {
        meta = (await readJson(join(dir, "meta.json"))) as ConsumerMeta | undefined;
        if (meta === undefined && (await holdsAny(dir, ["state.json"]))) {
          // A create writes the state first: one that stopped before its configuration was never answered, and went nowhere.
          if (await untouchedState(join(dir, "state.json"))) {
            this.options.log.warn(`Consumer ${nameOfStored(dirName)} of stream ${stream.config.name}: a create that did not finish (a state, no configuration, nothing delivered); removed`);
            await removeDir(dir);
            continue;
          }
          throw new Error("its meta.json is gone (the consumer's configuration is not known)");
        }
        if (meta !== undefined && (typeof meta !== "object" || meta === null || typeof meta.name !== "string" || typeof meta.config !== "object")) {
          throw new Error("meta.json holds no consumer configuration");
        }
      } catch (err) {
        this.options.log.error(`Could not restore consumer ${nameOfStored(dirName)} of stream ${stream.config.name}: ${(err as Error).message}; its files are left as they are`);
        continue;
      }
      if (meta === undefined) continue;
      await this.checkConsumerState(stream, meta.name, dir);
      const c = new Consumer(stream, meta.name, meta.config, new Date(meta.created), this, dir);
      await c.restore();
      stream.consumers.set(meta.name, c);
      c.notify();
    }
  }

  /**
   * A durable whose state file is damaged or gone is kept, not dropped: its
   * state starts over (Consumer.restore: at least once rather than never),
   * the damaged file is kept beside it, and the loss is logged. A create
   * writes the state before the configuration, so a configuration without
   * a state is never what a crash leaves.
   */
  private async checkConsumerState(stream: Stream, name: string, dir: string): Promise<void> {
    const path = join(dir, "state.json");
    let why: string | null = null;
    try {
      const st = (await readJson(path)) as Record<string, unknown> | undefined;
      if (st === undefined) {
        this.options.log.error(`Consumer ${name} of stream ${stream.config.name}: its state file is gone; the consumer starts over from its start`);
        return;
      }
      const numbers = ["dseq", "cursor", "deliveredS", "ackFloorS", "ackFloorC"];
      if (typeof st !== "object" || st === null || numbers.some((k) => !Number.isSafeInteger(st[k])) || !Array.isArray(st.pending)) why = "not a consumer state";
    } catch (err) {
      why = (err as Error).message;
    }
    if (why === null) return;
    await rename(path, `${path}.damaged`);
    this.options.log.error(
      `Consumer ${name} of stream ${stream.config.name}: its state file is damaged (${why}); kept as ${path}.damaged, and the consumer starts over from its start`,
    );
  }

  /** The stream sequence of a stream with several partitions (stream-order.ts), in its directory unless in memory. */
  private openOrder(stream: Stream, held = false): Promise<StreamOrder> {
    return StreamOrder.open(
      stream.dir,
      stream.partitions,
      () => stream.visibility,
      () => stream.orderAdvanced(),
      (err) => this.options.log.error(`stream ${stream.config.name}: ${err.message}`),
      (text) => this.options.log.warn(`stream ${stream.config.name}: ${text}`),
      held,
    );
  }

  /** Opens partitions `from` to `to` - 1 of a stream; on failure, closes those it opened and throws. */
  private async openPartitions(config: StreamConfig, dir: string | null, from: number, to: number): Promise<MessageLog[]> {
    const partitions: MessageLog[] = [];
    const limits = limitsOf(config);
    try {
      for (let p = from; p < to; p++) {
        if (config.storage === "memory" || dir === null) {
          partitions.push(new MemoryLog({ limits, maxRecordBytes: this.options.maxPayload + 64 * 1024, foreign: this.options.foreign }));
        } else {
          partitions.push(
            await FileLog.open({
              dir: join(dir, `p${p}`),
              limits,
              sync: this.options.sync ?? "always",
              syncIntervalMs: this.options.syncIntervalMs,
              maxRecordBytes: this.options.maxPayload + 64 * 1024,
              onWarning: (text) => this.options.log.warn(`stream ${config.name}: ${text}`),
              foreign: this.options.foreign,
            }),
          );
        }
      }
    } catch (err) {
      for (const p of partitions) await p.close().catch(() => undefined);
      throw err;
    }
    return partitions;
  }

  /** `held`: its order hands out no new stream sequences until released (JetStreamOptions.clustered). */
  private async openStream(config: StreamConfig, created: Date, dir: string | null, partitionCount: number, held = false): Promise<Stream> {
    const partitions = await this.openPartitions(config, dir, 0, partitionCount);
    const stream = new Stream(config, created, partitions, config.storage === "file" ? dir : null, this.options.maxPayload);
    // Looked at only where it can matter (no start-up I/O per stream on a single node). A file that cannot be looked at
    // counts as there: the consumers wait for the placement rather than confirm alone.
    if (stream.dir !== null && this.options.clustered === true) stream.replicatedBefore = await access(join(stream.dir, "p0", LEADER_EPOCHS_FILE)).then(() => true, (err: NodeJS.ErrnoException) => err.code !== "ENOENT");
    this.refuseConfirmsUntilPlaced(stream);
    // A destination made from a stored subject's tokens could spell the cluster's own subjects: not sent there.
    stream.republishTo = (subject, headers, data) => {
      if (!subject.startsWith(CLUSTER_INTERNAL_PREFIX)) this.emit(subject, subject, "", headers, data);
    };
    try {
      if (partitionCount > 1) stream.useOrder(await this.openOrder(stream, held));
      // One partition: no order (its sequences are the stream's); a file left by a growth that a crash interrupted goes.
      else if (stream.dir !== null && ((await fileThere(join(stream.dir, ORDER_FILE))) || (await fileThere(join(stream.dir, ORDER_MARK_FILE))))) {
        // Its summary and end mark first: either without its order.map reads as a lost order at the next growth (stream-order.ts).
        // (A mark alone: what a removal in another order would leave.)
        await removeFileDurably(join(stream.dir, ORDER_PAGES_FILE));
        await removeFileDurably(join(stream.dir, ORDER_MARK_FILE));
        await removeFileDurably(join(stream.dir, ORDER_FILE));
      }
      // Found on disk by a clustered node: which partitions it leads, and whether their replication is set up, is known once
      // the cluster settles the stream (cluster-streams.ts sets ledHere). A publish taken before (the client listener opens
      // before the node joins the cluster) would be acknowledged on this node alone.
      if (held) stream.ledHere = stream.partitions.map(() => false);
    } catch (err) {
      for (const p of partitions) await p.close().catch(() => undefined);
      throw err;
    }
    await stream.recover();
    if (this.closed) {
      // Opened after close() closed the streams: nobody else would close these files and timers, or unbind it.
      await stream.order?.close().catch(() => undefined);
      for (const p of partitions) await p.close().catch(() => undefined);
      throw shuttingDown(config.name);
    }
    if (this.boundsStorage()) stream.quota = this;
    this.streams.set(config.name, stream);
    this.bindSubjects(stream);
    return stream;
  }

  private bindSubjects(stream: Stream): void {
    let r = this.receivers.get(stream);
    if (r === undefined) {
      r = new StreamReceiver(stream, this);
      this.receivers.set(stream, r);
    }
    for (const s of r.subs) {
      this.account.unsubscribe(s);
      this.subjectIndex.remove(s.subject, stream);
    }
    r.subs.length = 0;
    for (const subject of stream.config.subjects) {
      const sub = new Subscription(r, subject, null);
      r.subs.push(sub);
      this.account.subscribe(sub);
      this.subjectIndex.add(subject, stream);
    }
  }

  private unbind(stream: Stream): void {
    const r = this.receivers.get(stream);
    if (r === undefined) return;
    for (const s of r.subs) {
      this.account.unsubscribe(s);
      this.subjectIndex.remove(s.subject, stream);
    }
    this.receivers.delete(stream);
  }

  // ---- streams ----

  stream(name: string): Stream {
    const s = this.streams.get(name);
    if (s === undefined) throw Errors.streamNotFound();
    return s;
  }

  private checkOverlap(config: StreamConfig, except: Stream | null): void {
    withOverlapBudget((budget) => {
      for (const subject of config.subjects) {
        for (const other of this.subjectIndex.intersecting(subject, budget)) if (other !== except) throw Errors.subjectOverlap();
        for (const other of this.changingSubjects.intersecting(subject, budget)) if (other !== config.name) throw Errors.subjectOverlap();
      }
    });
  }

  /**
   * Runs `op` after any earlier update, growth or delete of the same stream
   * has finished: each of them writes meta.json (or removes it), and one
   * that read the stream before another wrote it must not write last (an
   * update that wrote the partition count it saw before a growth would
   * shrink the stream at the next start). Starts at once when none is
   * running.
   */
  private exclusive<T>(name: string, op: () => Promise<T>): Promise<T> {
    const prev = this.streamOps.get(name);
    const run = prev === undefined ? op() : prev.then(op, op);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.streamOps.set(name, tail);
    void tail.then(() => {
      if (this.streamOps.get(name) === tail) this.streamOps.delete(name);
    });
    return run;
  }

  /**
   * Grows a stream to `count` partitions (Kafka's CreatePartitions); a
   * stream never shrinks. The new logs are opened first, then meta.json
   * records the count (durably), and only then are they served: a crash
   * before the write leaves the old count, and the directories it left are
   * cleared by the next growth (nothing could have written to them).
   * `held`: a new order names nothing until released (the cluster grows a
   * stream before it has capped its replicated partitions; StreamOrder).
   */
  addPartitions(name: string, count: number, held = false): Promise<Stream> {
    return this.exclusive(name, async () => {
      const stream = this.stream(name);
      const from = stream.partitions.length;
      if (count <= from) throw Errors.streamGeneral(`stream ${name} has ${from} partitions; a stream cannot shrink`);
      const over = this.limitError(stream.config, count, reservationOf(stream.config, from));
      if (over !== null) throw over;
      const release = this.reserve(name, [], { config: stream.config, partitions: { length: count } });
      return this.grow(stream, from, count, held).finally(release);
    });
  }

  /** Opens partitions `from` to `count` - 1 of `stream` (checked and reserved), and serves them once its meta.json names them. */
  private async grow(stream: Stream, from: number, count: number, held: boolean): Promise<Stream> {
    if (stream.dir !== null) for (let p = from; p < count; p++) await removeDir(join(stream.dir, `p${p}`));
    const added = await this.openPartitions(stream.config, stream.dir, from, count);
    let order: StreamOrder | null = null;
    try {
      if (this.closed) throw shuttingDown(stream.config.name);
      // From one partition to several: the order (partition 0's sequences kept as they are) is durable before the count is.
      if (stream.order === null) order = await this.openOrder(stream, held);
      if (stream.dir !== null) {
        await writeJsonDurably(join(stream.dir, "meta.json"), metaOf(stream, stream.config, count), EXISTING_DIR);
      }
      // close() has closed the stream meanwhile: these would stay open.
      if (this.closed) throw shuttingDown(stream.config.name);
    } catch (err) {
      await order?.close().catch(() => undefined);
      for (const p of added) await p.close().catch(() => undefined);
      throw err;
    }
    stream.addPartitions(added);
    if (order !== null) stream.useOrder(order);
    else stream.order!.landed();
    this.options.log.info(`Stream "${stream.config.name}" grown from ${from} to ${count} partitions`);
    return stream;
  }

  /**
   * Creates a stream, or returns the existing one if its configuration is
   * the same. `placed`: in a cluster, the creation time of the placement the
   * stream is made for (Stream.placed).
   */
  async createStream(raw: unknown, partitions = 1, placed?: string): Promise<{ stream: Stream; created: boolean }> {
    const config = normalizeStreamConfig(raw);
    // Creates of one name wait for each other (and for an update, growth or delete of it): two at once wrote the same files.
    return this.exclusive(config.name, () => this.createStreamNow(config, partitions, placed));
  }

  /**
   * What a create of a new stream would be refused for on this node alone
   * (max_streams, the account's limits, overlapping subjects), thrown as
   * the create would: for a create that only validates (Kafka's
   * validate_only). Single node only: in a cluster this node holds a part
   * of the account's streams.
   */
  validateCreate(config: StreamConfig, partitions: number): void {
    const max = this.accountLimits.maxStreams;
    if (max > 0 && this.streamCount() >= max) throw LimitErrors.maxStreams();
    const over = this.limitError(config, partitions);
    if (over !== null) throw over;
    this.checkOverlap(config, null);
  }

  /**
   * What updateStream would refuse an update of a stream to `raw` for on
   * this node before it writes anything (the change itself, an unsupported
   * feature, the account's and the server's limits, overlapping subjects),
   * or null; null for a stream not here. For an update that only validates
   * (Kafka's validate_only), and for one judged before the cluster's
   * placement changes (a refusal after it would leave the cluster changed).
   */
  updateRefusal(raw: unknown): ApiError | null {
    const asked = normalizeStreamConfig(raw);
    const stream = this.streams.get(asked.name);
    return stream === undefined ? null : this.updateError(stream, asked);
  }

  /** Why an update of `stream` to `asked` is refused before anything is written, or null: update's checks, in its order. */
  private updateError(stream: Stream, asked: StreamConfig): ApiError | null {
    // Checked as asked, then sealed (nats-server's order): an update of a sealed stream must still ask for its denies.
    const err = streamUpdateError(stream.config, asked);
    if (err !== null) return err;
    const config = sealAdjusted(asked);
    const refused = unsupportedStreamFeature(config, this.cluster !== null) ?? this.limitError(config, stream.partitions.length, reservationOf(stream.config, stream.partitions.length));
    if (refused !== null) return refused;
    try {
      this.checkOverlap(config, stream);
    } catch (err) {
      if (err instanceof ApiError) return err;
      throw err;
    }
    return null;
  }

  /** What the limits would refuse stream `name`'s growth to `count` partitions for on this node (addPartitions), or null. */
  growthLimitError(name: string, count: number): ApiError | null {
    const stream = this.streams.get(name);
    if (stream === undefined || count <= stream.partitions.length) return null;
    return this.limitError(stream.config, count, reservationOf(stream.config, stream.partitions.length));
  }

  private async createStreamNow(config: StreamConfig, partitions: number, placed: string | undefined): Promise<{ stream: Stream; created: boolean }> {
    if (this.closed) throw shuttingDown(config.name);
    const unsupported = unsupportedStreamFeature(config, this.cluster !== null);
    if (unsupported !== null) throw unsupported;
    // nats-server checks the account's limits before it looks for the stream: at max_streams even an identical create is refused.
    // In a cluster, the limit is the account's streams in the whole cluster, judged when a stream is placed: a node holds a
    // part of them, and its own count refused the stream placed at the limit (made here as it settled, then asked again).
    const max = this.accountLimits.maxStreams;
    if (max > 0 && this.cluster === null && this.streamCount() >= max) throw LimitErrors.maxStreams();
    const over = this.limitError(config, partitions);
    if (over !== null) throw over;
    const existing = this.streams.get(config.name);
    if (existing !== undefined) {
      if (sameJson(existing.config, config) && existing.partitions.length === partitions) return { stream: existing, created: false };
      throw Errors.streamNameExists();
    }
    const dir = config.storage === "file" ? safeJoin(this.streamsDir, config.name) : null;
    const unloadable = this.unloadable.get(config.name) ?? this.notServed.get(config.name) ?? (dir !== null && this.unloadableDirs.has(dir) ? "its directory could not be read back" : undefined);
    if (unloadable !== undefined) {
      // Its files are still there: a new stream must not adopt (or overwrite) them.
      throw Errors.storeFailed(`stream ${config.name} exists on disk but could not be restored (${unloadable}); repair or remove its directory first`);
    }
    this.checkOverlap(config, null);
    const release = this.reserve(config.name, config.subjects, { config, partitions: { length: partitions } });
    try {
      const created = new Date();
      if (dir !== null) await writeJsonDurably(join(dir, "meta.json"), streamMeta(config, created, partitions, placed));
      // Closed while the write stalled: nothing is opened (openStream refuses too, once it has opened the files).
      if (this.closed) throw shuttingDown(config.name);
      const stream = await this.openStream(config, created, dir, partitions);
      stream.placed = placed;
      if (config.first_seq !== undefined && config.first_seq > 1) await this.startAt(stream, config.first_seq);
      this.options.log.info(`Created stream "${config.name}" (${describeStream(config, partitions)})`);
      this.events.streamAction(config.name, "create");
      return { stream, created: true };
    } finally {
      release();
    }
  }

  /**
   * first_seq: the stream's first message gets this sequence. nats-server
   * purges the new store up to it; so does nagare, and a log that cannot
   * move its first sequence that way fails the create rather than ignore it.
   */
  private async startAt(stream: Stream, firstSeq: number): Promise<void> {
    for (const p of stream.partitions) await p.purge({ upTo: firstSeq });
    if (stream.log.state().firstSeq === firstSeq) return;
    // Not deleteStream: the create runs in exclusive() already.
    await this.delete(stream.config.name, "quiet");
    throw Errors.streamCreate(`first sequence ${firstSeq} could not be set: the store cannot start a log there`);
  }

  async updateStream(raw: unknown): Promise<Stream> {
    const asked = normalizeStreamConfig(raw);
    return this.exclusive(asked.name, () => this.update(asked));
  }

  private async update(asked: StreamConfig): Promise<Stream> {
    const stream = this.stream(asked.name);
    const refused = this.updateError(stream, asked);
    if (refused !== null) throw refused;
    const config = sealAdjusted(asked);
    // Reserved as it is or as it will be, the larger (the write can fail), with the subjects it takes.
    const grows = config.max_bytes > Math.max(stream.config.max_bytes, 0);
    const release = this.reserve(config.name, config.subjects, grows ? { config, partitions: stream.partitions } : stream);
    try {
      if (stream.dir !== null) await writeJsonDurably(join(stream.dir, "meta.json"), metaOf(stream, config), EXISTING_DIR);
    } finally {
      release();
    }
    // Closed meanwhile: binding its subjects again would route messages to a closed stream.
    if (this.closed) throw shuttingDown(config.name);
    const subjectsChanged = !sameJson(stream.config.subjects, config.subjects);
    const changed = !sameJson(stream.config, config);
    stream.updateConfig(config);
    if (subjectsChanged) this.bindSubjects(stream);
    if (changed) {
      this.options.log.info(`Updated stream "${config.name}" (${describeStream(config, stream.partitions.length)})`);
      this.events.streamAction(config.name, "modify");
    }
    return stream;
  }

  /**
   * `quiet`: a create that failed half way, undone without telling anyone
   * the stream existed. `moved`: a move's copy that is not served here (the
   * stream and its consumers live on in the cluster): quiet too, and its
   * pull clients are not told the consumer is gone.
   */
  deleteStream(name: string, how: "deleted" | "quiet" | "moved" = "deleted"): Promise<void> {
    return this.exclusive(name, () => this.delete(name, how));
  }

  private async delete(name: string, how: "deleted" | "quiet" | "moved"): Promise<void> {
    const quiet = how !== "deleted";
    const stream = this.stream(name);
    stream.deleted = true;
    this.streams.delete(name);
    this.unbind(stream);
    for (const c of stream.consumers.values()) {
      if (how !== "moved") c.notifyDeleted();
      await c.stop();
      if (!quiet) this.events.consumerAction(name, c.name, "delete");
    }
    stream.consumers.clear();
    await stream.order?.close().catch(() => undefined);
    for (const p of stream.partitions) await p.close();
    if (stream.dir !== null) await removeDirAtomically(stream.dir);
    if (quiet) return;
    this.options.log.info(`Deleted stream "${name}"`);
    this.events.streamAction(name, "delete");
  }

  /** Records the placement `stream` is kept for (Stream.placed), durably before it is taken as recorded. */
  recordPlaced(stream: Stream, placed: string): Promise<void> {
    return this.exclusive(stream.config.name, async () => {
      if (stream.placed === placed || stream.deleted) return;
      const before = stream.placed;
      stream.placed = placed;
      try {
        if (stream.dir !== null) await writeJsonDurably(join(stream.dir, "meta.json"), metaOf(stream), EXISTING_DIR);
      } catch (err) {
        stream.placed = before;
        throw err;
      }
    });
  }

  /**
   * A stream set aside here (`notServed`) is placed here again, by the
   * placement made at `placed`: its copy is served again when it was made
   * for that very placement (a replica dropped and chosen again); any other
   * (an earlier stream of the name, one set aside after an etcd restore, one
   * whose placement was never recorded) is moved out of the way, kept on
   * disk under `set-aside/`, so that the stream can be made afresh here.
   * Nothing is deleted: which copy holds what matters is the operator's to
   * judge. Memory streams leave nothing to keep.
   */
  reclaimSetAside(name: string, placed: string | undefined): Promise<"reopened" | "cleared"> {
    return this.exclusive(name, async () => {
      if (!this.notServed.has(name)) return "cleared";
      const recorded = this.setAsidePlaced.get(name);
      const dir = safeJoin(this.streamsDir, name);
      const kept = (await readJson(join(dir, "meta.json")).catch(() => null)) !== undefined;
      if (kept && recorded !== undefined && recorded === placed) {
        this.notServed.delete(name);
        this.setAsidePlaced.delete(name);
        await this.loadStream(dir);
        this.options.log.info(`Stream "${name}" is served here again: placed here again as the stream its copy was made for (${placed})`);
        return "reopened";
      }
      if (kept) {
        const stamp = new Date().toISOString().replace(/[:.]/g, "-");
        const to = join(this.options.storeDir, SET_ASIDE_DIR, `${storedName(name, stamp.length + 1)}.${stamp}`);
        await moveDirDurably(dir, to);
        this.options.log.warn(`Stream "${name}" is placed here as a stream made at ${placed ?? "an unknown time"}; the files of the copy set aside here (made for ${recorded ?? "an unrecorded placement"}) are moved to ${to}, not served; remove them once they are not needed`);
      }
      this.notServed.delete(name);
      this.setAsidePlaced.delete(name);
      return "cleared";
    });
  }

  /**
   * Stops serving a stream and keeps its files (a cluster placed it on
   * other nodes): it is closed as at shutdown, listed in `notServed`, and a
   * create of the same name is refused until its directory is dealt with.
   */
  setAside(name: string, why: string): Promise<void> {
    return this.exclusive(name, async () => {
      const stream = this.streams.get(name);
      if (stream === undefined) return;
      this.streams.delete(name);
      this.unbind(stream);
      for (const c of stream.consumers.values()) await c.stop();
      await stream.order?.close().catch(() => undefined);
      for (const p of stream.partitions) await p.close();
      await stream.saveDedup().catch(() => undefined);
      this.notServed.set(name, why);
      if (stream.placed !== undefined) this.setAsidePlaced.set(name, stream.placed);
      this.options.log.warn(`Stream "${name}" is not served here: ${why}; its files are kept in ${stream.dir ?? "memory"}`);
    });
  }

  /** Streams whose subjects could carry `subject` (wildcards allowed), sorted by name. */
  streamNames(subject?: string): string[] {
    const out: string[] = [];
    for (const s of this.streams.values()) {
      if (subject === undefined || subject === "" || s.config.subjects.some((x) => subjectsIntersect(x, subject))) out.push(s.config.name);
    }
    return out.sort();
  }

  // ---- consumers ----

  /** Creates or updates a consumer; counted while under way (a freeze for a move waits for it: Stream.consumerChanges). */
  async createConsumer(
    stream: Stream,
    raw: unknown,
    action: string,
    subjectName: string | undefined,
    subjectFilter: string | undefined,
    legacyDurable: boolean,
  ): Promise<Consumer> {
    stream.consumerChanges++;
    try {
      return await this.makeConsumer(stream, raw, action, subjectName, subjectFilter, legacyDurable);
    } finally {
      stream.consumerChanges--;
    }
  }

  private async makeConsumer(
    stream: Stream,
    raw: unknown,
    action: string,
    subjectName: string | undefined,
    subjectFilter: string | undefined,
    legacyDurable: boolean,
  ): Promise<Consumer> {
    const config = normalizeConsumerConfig(raw, stream.config, this.accountLimits.maxAckPending);
    if (legacyDurable) {
      if (config.durable_name === undefined) throw Errors.consumerDurableNameNotSet();
      if (config.durable_name !== subjectName) throw Errors.consumerDurableSubjectMismatch();
    } else if (subjectName !== undefined) {
      if (config.name !== undefined && config.name !== subjectName) throw Errors.consumerDurableSubjectMismatch();
      config.name = subjectName;
      if (subjectFilter !== undefined) {
        const filters = filtersOf(config);
        if (filters.length !== 1 || filters[0] !== subjectFilter) throw Errors.consumerFilterMismatch();
      }
    }
    const name = config.name ?? randomName();
    if (config.name === undefined) config.name = name;
    // Creates (and updates) of one name wait for each other: two at once both found none, wrote the same
    // files side by side (one failed, renaming a .tmp the other had renamed) and each made its own consumer.
    return this.oneAtATime(stream, name, () => this.makeNamedConsumer(stream, config, action, name));
  }

  /** Runs `work` after every earlier call for the same consumer of `stream` has ended. */
  private async oneAtATime<T>(stream: Stream, name: string, work: () => Promise<T>): Promise<T> {
    let names = this.consumerWork.get(stream);
    if (names === undefined) this.consumerWork.set(stream, (names = new Map()));
    const run = (names.get(name) ?? Promise.resolve()).then(work);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    names.set(name, tail);
    try {
      return await run;
    } finally {
      if (names.get(name) === tail) names.delete(name);
    }
  }

  private async makeNamedConsumer(stream: Stream, config: ConsumerConfig, action: string, name: string): Promise<Consumer> {
    const existing = stream.consumers.get(name);
    if (existing !== undefined) {
      if (sameJson(existing.config, config)) return existing;
      if (action === "create") throw Errors.consumerExists();
      const err = consumerUpdateError(existing.config, config);
      if (err !== null) throw err;
      if (existing.dir !== null) await this.saveConsumerMeta(existing.dir, name, config, existing.created);
      existing.updateConfig(config);
      this.logConsumer(existing, "Updated");
      return existing;
    }
    if (action === "update") throw Errors.consumerDoesNotExist();
    // Consumers of other names being made count as made: creates side by side each found room for one more
    // (ten past max_consumers of 2), and two work queue consumers of overlapping filters each found the other absent.
    let making = this.consumersMaking.get(stream);
    if (making === undefined) this.consumersMaking.set(stream, (making = new Map()));
    const max = consumerLimit(this.accountLimits, stream.config);
    if (max > 0 && stream.consumers.size + making.size >= max) throw Errors.maxConsumers();
    if (stream.config.retention === "workqueue") this.checkWorkQueue(stream, config, making.values());
    making.set(name, config);
    try {
      return await this.makeNewConsumer(stream, config, name);
    } finally {
      making.delete(name);
    }
  }

  private async makeNewConsumer(stream: Stream, config: ConsumerConfig, name: string): Promise<Consumer> {
    const created = new Date();
    // Ephemeral consumers of a file stream are kept on disk too, as nats-server keeps them: a client
    // that reconnects after a restart (a KV watcher, an ordered consumer) finds its consumer where it was.
    const persistent = stream.dir !== null && !config.mem_storage;
    const dir = persistent ? safeJoin(join(stream.dir!, "obs"), name) : null;
    const c = new Consumer(stream, name, config, created, this, dir);
    await c.start();
    // Where the deliver policy put it, on disk before the create is answered: a restart must not move it.
    await this.writeNewConsumer(c, config, created);
    stream.consumers.set(name, c);
    this.logConsumer(c, "Created");
    this.events.consumerAction(stream.config.name, name, "create");
    c.notify();
    return c;
  }

  /**
   * A consumer a move brought here (stream-move.ts), at the state its old
   * leader had: on disk as createConsumer keeps it, before the move flips.
   * Its stream is frozen until then, so it does not deliver yet.
   */
  async adoptMovedConsumer(stream: Stream, name: string, config: ConsumerConfig, created: Date, state: MovedState): Promise<Consumer> {
    if (stream.consumers.has(name)) throw new Error(`consumer ${name} already exists here`);
    const persistent = stream.dir !== null && !config.mem_storage;
    const dir = persistent ? safeJoin(join(stream.dir!, "obs"), name) : null;
    const c = new Consumer(stream, name, config, created, this, dir);
    c.adoptMovedState(state, Date.now());
    await this.writeNewConsumer(c, config, created);
    stream.consumers.set(name, c);
    this.logConsumer(c, "Moved in");
    return c;
  }

  /**
   * Durable consumers are logged at info level; ephemeral ones (an ordered
   * consumer per fetch, a KV watcher per watch) come and go too often for
   * that and are logged at debug level.
   */
  private logConsumer(c: Consumer, what: string, why = ""): void {
    const line = `${what} ${c.durable ? "durable" : "ephemeral"} consumer "${c.name}" on stream "${c.stream.config.name}"${why}`;
    if (c.durable) this.options.log.info(line);
    else this.options.log.debug(line);
  }

  private checkWorkQueue(stream: Stream, config: ConsumerConfig, making: Iterable<ConsumerConfig>): void {
    const mine = filtersOf(config);
    const others = [...[...stream.consumers.values()].map((c) => c.config), ...making];
    // As nats-server: a new consumer without a filter is the "multiple non-filtered" one; a filtered one that
    // meets an existing consumer without a filter, or with one it overlaps, is "not unique".
    if (mine.length === 0 && others.length > 0) throw Errors.consumerWqMultipleUnfiltered();
    const taken: string[] = [];
    for (const other of others) {
      const theirs = filtersOf(other);
      if (theirs.length === 0) throw Errors.consumerWqNotUnique();
      for (const f of theirs) taken.push(f);
    }
    // Through an index, within a budget of work: every pair compared, two consumers of 40,000 filters held the broker.
    if (taken.length > 0 && withOverlapBudget((budget) => anyIntersecting(mine, taken, budget))) throw Errors.consumerWqNotUnique();
  }

  /**
   * A new consumer's files: its state before its configuration, so that a
   * configuration without its state is lost state, never an interrupted
   * create (restoreConsumers). Stopped, and thrown, if either fails.
   */
  private async writeNewConsumer(c: Consumer, config: ConsumerConfig, created: Date): Promise<void> {
    if (!(await c.flushState())) {
      await c.stop();
      throw new Error(`consumer ${c.name}: its state could not be written`);
    }
    if (c.dir !== null) {
      await this.saveConsumerMeta(c.dir, c.name, config, created).catch(async (err) => {
        await c.stop();
        throw err;
      });
    }
  }

  private async saveConsumerMeta(dir: string, name: string, config: ConsumerConfig, created: Date): Promise<void> {
    await writeJsonDurably(join(dir, "meta.json"), { name, config, created: created.toISOString() } satisfies ConsumerMeta);
  }

  consumer(stream: Stream, name: string): Consumer {
    const c = stream.consumers.get(name);
    if (c === undefined) throw Errors.consumerNotFound();
    return c;
  }

  async deleteConsumer(stream: Stream, name: string, why = ""): Promise<void> {
    const c = this.consumer(stream, name);
    stream.consumers.delete(name);
    await this.removeConsumer(stream, c, why);
  }

  /** Deletes a consumer already taken out of its stream's map: told, stopped, its files gone. */
  async removeConsumer(stream: Stream, c: Consumer, why = ""): Promise<void> {
    const name = c.name;
    c.notifyDeleted();
    await c.stop();
    if (c.dir !== null) {
      try {
        await removeDirAtomically(c.dir);
      } catch (err) {
        // Out of its stream already: its files are removed later (else it would come back at the next start); the
        // request that deleted it is still told.
        this.removalFailed(stream, name, c.dir, err);
        throw err;
      }
    }
    this.logConsumer(c, "Deleted", why);
    this.events.consumerAction(stream.config.name, name, "delete");
    // Under interest retention, what only this consumer still had to see is no longer kept.
    void stream.interestChanged().catch((err) => this.options.log.warn(`stream ${stream.config.name}: interest after deleting consumer ${name}: ${(err as Error).message}`));
  }

  /** Consumer `name` of `stream` is gone but its directory is not: tried again (retryRemovals). */
  private removalFailed(stream: Stream, name: string, dir: string, err: unknown): void {
    if (this.closed) return;
    const message = (err as Error).message ?? String(err);
    if (this.unremoved.size >= MAX_UNREMOVED && !this.unremoved.has(dir)) {
      this.options.log.error(`Consumer ${name} of stream ${stream.config.name}: its files could not be removed (${message}) and too many others wait for that: it comes back at the next start`);
      return;
    }
    this.unremoved.set(dir, { stream, name });
    this.tellRemovalFailure(`Consumer ${name} of stream ${stream.config.name} deleted, but its files could not be removed: ${message}; trying again`);
    this.scheduleRemovals();
  }

  private tellRemovalFailure(line: string): void {
    const told = this.removalFailuresTold.failed("");
    if (told !== null) this.options.log.warn(told.heldBack > 0 ? `${line} (and ${told.heldBack} more such failure(s) in the last ${Math.round(told.sinceMs / 1000)} s)` : line);
  }

  private scheduleRemovals(): void {
    if (this.closed || this.removalTimer !== undefined || this.removalRound !== null) return;
    const delay = this.removalDelayMs;
    this.removalDelayMs = Math.min(REMOVAL_RETRY_MAX_MS, delay * 2);
    this.removalTimer = setTimeout(() => {
      this.removalTimer = undefined;
      this.removalRound = this.retryRemovals().finally(() => {
        this.removalRound = null;
        if (this.unremoved.size > 0) this.scheduleRemovals();
      });
    }, delay);
    this.removalTimer.unref();
  }

  /** Tries again to remove each deleted consumer's directory left behind: one line for those still failing. */
  private async retryRemovals(): Promise<void> {
    let failed = 0;
    let removed = 0;
    let last = "";
    for (const [dir, { stream, name }] of [...this.unremoved]) {
      if (this.closed) return;
      // In turn with creates of that name: a consumer made again under it owns the directory (its files are written
      // anew), and a stream deleted or replaced since took it with its own.
      await this.oneAtATime(stream, name, async () => {
        if (stream.deleted || this.streams.get(stream.config.name) !== stream || stream.consumers.has(name) || this.consumersMaking.get(stream)?.has(name) === true) {
          this.unremoved.delete(dir);
          return;
        }
        try {
          await removeDirAtomically(dir);
          this.unremoved.delete(dir);
          removed++;
        } catch (err) {
          failed++;
          last = `consumer ${name} of stream ${stream.config.name}: ${(err as Error).message ?? String(err)}`;
        }
      });
    }
    if (failed > 0) {
      this.tellRemovalFailure(`Files of ${failed} deleted consumer(s) still cannot be removed (${last}); trying again in ${Math.round(this.removalDelayMs / 1000)} s`);
      return;
    }
    this.removalDelayMs = REMOVAL_RETRY_MIN_MS;
    const heldBack = this.removalFailuresTold.over("");
    if (removed > 0) this.options.log.warn(`The files of ${removed} deleted consumer(s) are removed now${heldBack > 0 ? `, after ${heldBack} more failure(s) not logged` : ""}`);
  }

  /** Ephemeral consumers (and those with an inactive threshold) go once nobody uses them. */
  private sweep(): void {
    const now = Date.now();
    for (const s of this.streams.values()) {
      // A stream frozen for a move keeps its consumers as copied: the new leader counts their inactivity afresh.
      if (s.frozen) continue;
      for (const c of s.consumers.values()) if (c.isInactive(now)) this.onConsumerGone(c);
    }
  }

  /** Routes an ack (`$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>`); false if no consumer of this node takes it. */
  onAck(subject: string, body: Buffer, reply: string): boolean {
    const t = subject.split(".");
    if (t.length !== 9) return false;
    const c = this.streams.get(t[2])?.consumers.get(t[3]);
    if (c === undefined) return false;
    c.onAck(Number(t[5]), Number(t[6]), body, reply);
    return true;
  }

  /** A flow-control answer (`$JS.FC.<stream>.<consumer>.<n>`). */
  onFlowControl(subject: string): void {
    const t = subject.split(".");
    if (t.length < 5) return;
    this.streams.get(t[2])?.consumers.get(t[3])?.onFlowControlReply(subject);
  }

  /**
   * Answers a publish refused for a lost lease (or sent to a leader out of reach) LEASE_REFUSAL_DELAY_MS from now: the
   * leader elected meanwhile stores and acknowledges the same publish, and the client takes that first answer; with no
   * leader the refusal still comes, instead of a timeout. At most MAX_DEFERRED_REFUSALS wait (one timer for all); past
   * that, refused at once.
   */
  deferRefusal(reply: string, headers: Buffer | null, body: Buffer): void {
    if (this.deferredRefusals.size >= MAX_DEFERRED_REFUSALS || this.closed) return this.emit(reply, reply, "", headers, body);
    this.deferredRefusals.push({ reply, headers, body, due: performance.now() + LEASE_REFUSAL_DELAY_MS });
    if (this.refusalTimer === null) this.armRefusals();
  }

  private armRefusals(): void {
    const first = this.deferredRefusals.peek()!;
    this.refusalTimer = setTimeout(() => {
      this.refusalTimer = null;
      const now = performance.now();
      const q = this.deferredRefusals;
      while (q.size > 0 && q.peek()!.due <= now) {
        const { reply, headers, body } = q.shift()!;
        this.emit(reply, reply, "", headers, body);
      }
      if (q.size > 0) this.armRefusals();
    }, Math.max(0, first.due - performance.now()));
    this.refusalTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const name of this.streams.keys()) this.closing.set(name, "not begun");
    this.options.serverLimits?.leave(this);
    clearInterval(this.sweeper);
    if (this.refusalTimer !== null) clearTimeout(this.refusalTimer);
    clearTimeout(this.removalTimer);
    await this.removalRound;
    // A delete or set-aside still running has taken its stream out of `streams` but may still be closing its
    // files or removing its directory: a close that returned before it would release the store with them open.
    // Waited for CLOSE_WAIT_MS at most: one stalled on the disk would hold the stop for good (see CLOSE_WAIT_MS).
    const running = this.streamOps.size;
    if (running > 0) {
      let ended = false;
      const waitMs = this.options.closeWaitMs ?? CLOSE_WAIT_MS;
      await withinMs(Promise.all(this.streamOps.values()).then(() => (ended = true)), waitMs);
      if (!ended) this.options.log.warn(`JetStream of account ${this.account.name}: ${running} stream change(s) still under way after ${waitMs} ms (a stalled disk?); closing without them, and each fails once it ends`);
    }
    const i = this.account.subscribeListeners.indexOf(this.onSubscribe);
    if (i >= 0) this.account.subscribeListeners.splice(i, 1);
    for (const s of this.streams.values()) this.unbind(s);
    // Streams close side by side, a few dozen at a time: each close syncs files, and with thousands of
    // streams one after another a clean stop took tens of seconds.
    const all = [...this.streams.values()];
    // A delete that ended meanwhile took its stream with it.
    for (const name of [...this.closing.keys()]) if (!this.streams.has(name)) this.closing.delete(name);
    for (let i = 0; i < all.length; i += CLOSE_CONCURRENCY) {
      await Promise.all(
        all.slice(i, i + CLOSE_CONCURRENCY).map(async (s) => {
          const name = s.config.name;
          this.closing.set(name, "its consumers");
          for (const c of s.consumers.values()) await c.stop();
          this.closing.set(name, "its order file");
          await s.order?.close().catch((err) => this.options.log.warn(`stream ${name}: ${(err as Error).message}`));
          for (let p = 0; p < s.partitions.length; p++) {
            this.closing.set(name, s.partitions.length === 1 ? "its log" : `the log of partition ${p}`);
            await s.partitions[p].close();
          }
          this.closing.set(name, "its dedup state");
          await s.saveDedup().catch((err) => this.options.log.warn(`stream ${name}: ${(err as Error).message}`));
          this.closing.delete(name);
        }),
      );
    }
    this.streams.clear();
  }

  /** Per stream whose close() has not ended, what it is closing: the server's stop names them when it stops waiting (server.ts). */
  private readonly closing = new Map<string, string>();

  /** The streams not closed, each with where its close is: every one before close(), empty once it ended. */
  unclosed(): string[] {
    if (!this.closed) return [...this.streams.keys()].map((name) => `stream ${name} (not begun)`);
    return [...this.closing].map(([name, what]) => `stream ${name} (${what})`);
  }
}

export { ApiError };

/** Whether `dir` holds any of `names`. */
/** Whether the consumer state at `path` is as a create leaves it: nothing delivered, nothing pending (false if unreadable). */
async function untouchedState(path: string): Promise<boolean> {
  const st = (await readJson(path).catch(() => undefined)) as { dseq?: unknown; pending?: unknown } | undefined;
  return st !== undefined && st.dseq === 0 && Array.isArray(st.pending) && st.pending.length === 0;
}

async function holdsAny(dir: string, names: string[]): Promise<boolean> {
  const there = await readdir(dir).catch(() => [] as string[]);
  return names.some((n) => there.includes(n));
}

function fileThere(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
