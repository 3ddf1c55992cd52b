/**
 * ElectLeaders v0–2 (KIP-183, KIP-460): what kafka-leader-election.sh sends
 * to put a replicated partition's leadership back on its preferred replica,
 * the first of its replicas (the leader it was placed with), after a
 * failover or a restart moved it. The partition's current leader hands the
 * leadership over as a drain or a JetStream step-down does
 * (StreamReplicas.handOver: writes refused meanwhile, every in-sync replica
 * caught up, then one fenced write names the new leader in a new epoch), so
 * nothing acknowledged is lost. Any broker takes the request and asks each
 * partition's leader over the routes.
 *
 * An unclean election (type 1) is never made: nagare elects only in-sync
 * replicas, and one takes over by itself once a leader's lease runs out. It
 * is answered ELECTION_NOT_NEEDED while the leader is up, else
 * ELIGIBLE_LEADERS_NOT_AVAILABLE.
 */

import type { RequestContext } from "./api.js";
import type { PermissionCheck } from "../../core/auth.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { partitionCount } from "./cluster.js";
import { decodeElectLeaders, partitionsByTopic } from "./requests.js";
import { mayManageTopic, streamNameOf, topicOf } from "./topics.js";

const PREFERRED = 0;
const UNCLEAN = 1;
/** The service a partition's leader offers the other brokers (JetStream.nodeServices). */
const ELECT = "kafka.elect";
/** Hand-overs under way at once for one request: each waits for the partition's replicas to catch up. */
const ELECTIONS_IN_FLIGHT = 16;
/** The longest an election may take, whatever the request asks (Kafka's default timeout). */
const MAX_TIMEOUT_MS = 60_000;
/** What a call to another broker waits beyond the election's own time. */
const CALL_MARGIN_MS = 2_000;
/** How often a leader named a moment ago is looked at again until it has taken its role up. */
const ROLE_WAIT_STEP_MS = 50;

export interface Outcome {
  error: number;
  message: string | null;
}

const NOT_NEEDED: Outcome = { error: ErrorCode.ELECTION_NOT_NEEDED, message: "Leader election not needed for topic partition." };
const done: Outcome = { error: ErrorCode.NONE, message: null };

/** A hand-over asked of a partition's leader: to which replica, and within how long. */
export interface ElectCall {
  stream: string;
  partition: number;
  to: string;
  ms: number;
  /** Only if every in-sync replica has caught up within this long (the automatic rebalance's): else nothing is refused to writers. */
  caughtUpWithinMs?: number;
}

/** Offers this account's hand-overs to the other brokers; returns what withdraws them. */
export function offerElectCalls(door: AccountDoor): () => void {
  door.js.nodeServices.set(ELECT, async (body) => Buffer.from(JSON.stringify(await serveElect(door, body))));
  return () => door.js.nodeServices.delete(ELECT);
}

/** At the partition's leader: hands the leadership to the preferred replica, unless the placement moved on meanwhile. */
async function serveElect(door: AccountDoor, body: Buffer): Promise<Outcome> {
  let c: Partial<ElectCall>;
  try {
    c = JSON.parse(body.toString("utf8")) as Partial<ElectCall>;
  } catch {
    return { error: ErrorCode.INVALID_REQUEST, message: "bad election call" };
  }
  if (typeof c.stream !== "string" || typeof c.to !== "string" || !Number.isSafeInteger(c.partition) || !Number.isSafeInteger(c.ms)) {
    return { error: ErrorCode.INVALID_REQUEST, message: "bad election call" };
  }
  return handOver(door, c as ElectCall);
}

/** Elections under way, per account's door (one per node), by stream and partition: one at a time, as Kafka's controller makes them. */
const underWay = new WeakMap<AccountDoor, Map<string, Promise<Outcome>>>();

/**
 * At the partition's leader: one election at a time per partition (an
 * ElectLeaders request's or the automatic rebalance's, leader-rebalance.ts);
 * one that finds the preferred replica leading was not needed.
 */
export function handOver(door: AccountDoor, c: ElectCall): Promise<Outcome> {
  let running = underWay.get(door);
  if (running === undefined) underWay.set(door, (running = new Map()));
  const key = `${c.stream}/${c.partition}`;
  const deadline = Date.now() + c.ms;
  const run = (running.get(key) ?? Promise.resolve(done)).then(() => handOverNow(door, c, deadline));
  running.set(key, run);
  void run.finally(() => {
    if (running.get(key) === run) running.delete(key);
  });
  return run;
}

async function handOverNow(door: AccountDoor, c: ElectCall, deadline: number): Promise<Outcome> {
  const cluster = door.door.cluster;
  const hand = door.js.handOverHere;
  for (;;) {
    const placed = cluster?.topic(door.account, c.stream);
    if (cluster === null || placed === undefined || hand === null) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The partition is not led by the broker asked." };
    if (cluster.nodeName(placed.leaders[c.partition]) === c.to) return NOT_NEEDED;
    if (!placed.local[c.partition]) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The partition's leader changed meanwhile." };
    try {
      await hand(c.stream, c.partition, c.to, Math.max(0, deadline - Date.now()), c.caughtUpWithinMs);
      return done;
    } catch (err) {
      const message = (err as Error).message;
      // Named leader a moment ago (a step-down, a failover), its role not taken up yet: it is, shortly.
      if (/not led here/.test(message) && Date.now() + ROLE_WAIT_STEP_MS < deadline) {
        await new Promise((resolve) => setTimeout(resolve, ROLE_WAIT_STEP_MS));
        continue;
      }
      if (/in time/.test(message)) return { error: ErrorCode.REQUEST_TIMED_OUT, message };
      // Another election or a step-down may have named the preferred replica meanwhile.
      const now = cluster.topic(door.account, c.stream);
      if (now !== undefined && cluster.nodeName(now.leaders[c.partition]) === c.to) return NOT_NEEDED;
      return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message };
    }
  }
}

/** ElectLeaders: each partition's outcome once its election (if one is needed) is done, all within the request's timeout. */
export async function handleElectLeaders(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { electionType, topics, timeoutMs } = decodeElectLeaders(r, version);
  const deadline = Date.now() + Math.min(MAX_TIMEOUT_MS, Math.max(100, timeoutMs));
  // One result per topic and partition, however often asked (Kafka's request is a set of partitions).
  const asked = partitionsByTopic(topics ?? everyPartition(door));
  let results = [...asked].map(([topic, partitions]) => ({ topic, partitions: [...partitions].map((index) => ({ index, outcome: done })) }));
  // An election type Kafka does not know refuses the whole request, each partition asked for with it.
  const refused = electionType !== PREFERRED && electionType !== UNCLEAN;
  const elections: Array<() => Promise<void>> = [];
  for (const t of results) {
    for (const p of t.partitions) {
      const decided = refused ? { error: ErrorCode.INVALID_REQUEST, message: `Unknown election type ${electionType}` } : decide(door, conn.permissions, electionType, t.topic, p.index);
      if (decided !== null) {
        p.outcome = decided;
        continue;
      }
      elections.push(async () => {
        p.outcome = await elect(door, t.topic, p.index, deadline);
      });
    }
  }
  for (let i = 0; i < elections.length; i += ELECTIONS_IN_FLIGHT) await Promise.all(elections.slice(i, i + ELECTIONS_IN_FLIGHT).map((e) => e()));
  // Asked for every partition, Kafka answers only those it tried to elect.
  if (topics === null) results = results.map((t) => ({ ...t, partitions: t.partitions.filter((p) => p.outcome.error !== ErrorCode.ELECTION_NOT_NEEDED) })).filter((t) => t.partitions.length > 0);
  w.i32(0); // throttle_time_ms
  if (version >= 1) w.i16(refused ? ErrorCode.INVALID_REQUEST : ErrorCode.NONE);
  w.array(results, (w, t) => {
    w.string(t.topic);
    w.array(t.partitions, (w, p) => w.i32(p.index).i16(p.outcome.error).nullableString(p.outcome.message).taggedFields());
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

/** Null topic partitions: every partition of every topic of the account, placed or held here. */
function everyPartition(door: AccountDoor): Array<{ name: string; partitions: number[] }> {
  const out = new Map<string, number>();
  for (const p of door.door.cluster?.topics(door.account) ?? []) out.set(p.topic, p.leaders.length);
  for (const s of door.js.streams.values()) if (!out.has(topicOf(s))) out.set(topicOf(s), s.partitions.length);
  return [...out].map(([name, n]) => ({ name, partitions: Array.from({ length: n }, (_, i) => i) }));
}

/** A partition's outcome when no election is to be made; null when its leader must hand over to its preferred replica. */
function decide(door: AccountDoor, perms: PermissionCheck | null, type: number, topic: string, index: number): Outcome | null {
  // Kafka asks for ALTER on the cluster; nagare's nearest is what altering the topic takes (its stream's update).
  if (!mayManageTopic(perms, "UPDATE", topic)) return { error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, message: "Authorization failed." };
  const partitions = partitionCount(door, topic);
  if (partitions === undefined || index < 0 || index >= partitions) return { error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, message: "The partition does not exist." };
  const cluster = door.door.cluster;
  const placed = cluster?.topic(door.account, streamNameOf(topic));
  // One broker, or a topic this node holds unplaced: its only replica leads.
  if (cluster === null || placed === undefined || placed.topic !== topic) return NOT_NEEDED;
  const replicas = placed.replicas[index] ?? [];
  if (type === UNCLEAN) {
    if (placed.live[index]) return NOT_NEEDED;
    return { error: ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE, message: "nagare elects only in-sync replicas: one takes over by itself once the leader's lease runs out" };
  }
  const preferred = replicas[0];
  if (preferred === undefined || replicas.length === 1) return NOT_NEEDED;
  if (preferred === placed.leaders[index]) {
    if (placed.live[index]) return NOT_NEEDED;
    return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: `The preferred replica ${preferred} is away.` };
  }
  if (!placed.isr[index].includes(preferred) || placed.offline[index].includes(preferred)) {
    return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: `The preferred replica ${preferred} is not a live in-sync replica.` };
  }
  if (!placed.live[index]) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The leader is away: an in-sync replica takes over once its lease runs out." };
  return null;
}

/** Asks the partition's leader, here or over the routes, to hand over to the preferred replica. */
async function elect(door: AccountDoor, topic: string, index: number, deadline: number): Promise<Outcome> {
  const cluster = door.door.cluster!;
  const stream = streamNameOf(topic);
  const placed = cluster.topic(door.account, stream);
  const to = placed === undefined ? undefined : cluster.nodeName(placed.replicas[index][0]);
  const leader = placed === undefined ? undefined : cluster.nodeName(placed.leaders[index]);
  if (placed === undefined || to === undefined || leader === undefined) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The partition's replicas are not known to this broker." };
  const ms = Math.max(0, deadline - Date.now());
  const call: ElectCall = { stream, partition: index, to, ms };
  const outcome = placed.local[index] ? await handOver(door, call) : await callLeader(door, leader, call);
  if (outcome.error === ErrorCode.NONE || outcome.error === ErrorCode.ELECTION_NOT_NEEDED) return outcome;
  // Elected meanwhile by another request (another broker's, a step-down): the preferred replica leads, as asked.
  const now = cluster.topic(door.account, stream);
  return now !== undefined && cluster.nodeName(now.leaders[index]) === to ? NOT_NEEDED : outcome;
}

async function callLeader(door: AccountDoor, leader: string, call: ElectCall): Promise<Outcome> {
  const remote = door.js.remoteCall;
  const answer = remote === null ? null : await remote(leader, ELECT, Buffer.from(JSON.stringify(call)), call.ms + CALL_MARGIN_MS);
  if (answer === null) return { error: ErrorCode.REQUEST_TIMED_OUT, message: `The partition's leader (${leader}) did not answer in time.` };
  try {
    const a = JSON.parse(answer.toString("utf8")) as Partial<Outcome>;
    if (typeof a.error === "number") return { error: a.error, message: typeof a.message === "string" ? a.message : null };
  } catch {
    // answered below
  }
  return { error: ErrorCode.UNKNOWN_SERVER_ERROR, message: "The partition's leader answered what this broker cannot read." };
}
