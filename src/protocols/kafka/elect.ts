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
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { partitionCount } from "./cluster.js";
import { decodeElectLeaders } from "./requests.js";
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

interface Outcome {
  error: number;
  message: string | null;
}

const NOT_NEEDED: Outcome = { error: ErrorCode.ELECTION_NOT_NEEDED, message: "Leader election not needed for topic partition." };
const done: Outcome = { error: ErrorCode.NONE, message: null };

/** A hand-over asked of a partition's leader: the epoch it was asked in, so that one already replaced is not handed over. */
interface ElectCall {
  stream: string;
  partition: number;
  epoch: number;
  to: string;
  ms: number;
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
  if (typeof c.stream !== "string" || typeof c.to !== "string" || !Number.isSafeInteger(c.partition) || !Number.isSafeInteger(c.epoch) || !Number.isSafeInteger(c.ms)) {
    return { error: ErrorCode.INVALID_REQUEST, message: "bad election call" };
  }
  return handOver(door, c as ElectCall);
}

async function handOver(door: AccountDoor, c: ElectCall): Promise<Outcome> {
  const cluster = door.door.cluster;
  const placed = cluster?.topic(door.account, c.stream);
  const hand = door.js.handOverHere;
  if (cluster === null || placed === undefined || hand === null) return { error: ErrorCode.NOT_LEADER_OR_FOLLOWER, message: "the partition is not led here" };
  if (cluster.nodeName(placed.leaders[c.partition]) === c.to) return NOT_NEEDED;
  if (!placed.local[c.partition] || placed.epochs[c.partition] !== c.epoch) return { error: ErrorCode.NOT_LEADER_OR_FOLLOWER, message: "the partition's leadership changed meanwhile" };
  try {
    await hand(c.stream, c.partition, c.to, c.ms);
    return done;
  } catch (err) {
    const message = (err as Error).message;
    return { error: /in time/.test(message) ? ErrorCode.REQUEST_TIMED_OUT : ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message };
  }
}

/** ElectLeaders: each partition's outcome once its election (if one is needed) is done. */
export async function handleElectLeaders(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { electionType, topics, timeoutMs } = decodeElectLeaders(r, version);
  const ms = Math.min(MAX_TIMEOUT_MS, Math.max(100, timeoutMs));
  // One result per topic and partition, however often asked (Kafka's request is a set of partitions).
  const asked = new Map<string, Set<number>>();
  for (const t of topics ?? everyPartition(door)) {
    const set = asked.get(t.name) ?? new Set<number>();
    for (const p of t.partitions) set.add(p);
    asked.set(t.name, set);
  }
  const results = [...asked].map(([topic, partitions]) => ({ topic, partitions: [...partitions].map((index) => ({ index, outcome: done })) }));
  const elections: Array<() => Promise<void>> = [];
  for (const t of results) {
    for (const p of t.partitions) {
      const decided = decide(door, conn.permissions, electionType, t.topic, p.index);
      if (decided !== null) {
        p.outcome = decided;
        continue;
      }
      elections.push(async () => {
        p.outcome = await elect(door, t.topic, p.index, ms);
      });
    }
  }
  for (let i = 0; i < elections.length; i += ELECTIONS_IN_FLIGHT) await Promise.all(elections.slice(i, i + ELECTIONS_IN_FLIGHT).map((e) => e()));
  w.i32(0); // throttle_time_ms
  if (version >= 1) w.i16(ErrorCode.NONE);
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
function decide(door: AccountDoor, perms: Parameters<typeof mayManageTopic>[0], type: number, topic: string, index: number): Outcome | null {
  const partitions = partitionCount(door, topic);
  if (partitions === undefined || index < 0 || index >= partitions) return { error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, message: "The request included a topic partition that is not known." };
  // Kafka asks for ALTER on the cluster; nagare's nearest is what altering the topic takes (its stream's update).
  if (!mayManageTopic(perms, "UPDATE", topic)) return { error: ErrorCode.TOPIC_AUTHORIZATION_FAILED, message: "Authorization failed." };
  if (type !== PREFERRED && type !== UNCLEAN) return { error: ErrorCode.INVALID_REQUEST, message: `Unknown election type ${type}` };
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
  if (preferred === undefined || preferred === placed.leaders[index]) return NOT_NEEDED;
  if (!placed.isr[index].includes(preferred) || placed.offline[index].includes(preferred)) {
    return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: `The preferred replica ${preferred} is not a live in-sync replica.` };
  }
  if (!placed.live[index]) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The leader is away: an in-sync replica takes over once its lease runs out." };
  return null;
}

/** Asks the partition's leader, here or over the routes, to hand over to the preferred replica. */
async function elect(door: AccountDoor, topic: string, index: number, ms: number): Promise<Outcome> {
  const cluster = door.door.cluster!;
  const stream = streamNameOf(topic);
  const placed = cluster.topic(door.account, stream);
  const to = placed === undefined ? undefined : cluster.nodeName(placed.replicas[index][0]);
  const leader = placed === undefined ? undefined : cluster.nodeName(placed.leaders[index]);
  if (placed === undefined || to === undefined || leader === undefined) return { error: ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message: "The partition's replicas are not known to this broker." };
  const call: ElectCall = { stream, partition: index, epoch: placed.epochs[index], to, ms };
  if (placed.local[index]) return handOver(door, call);
  const remote = door.js.remoteCall;
  const answer = remote === null ? null : await remote(leader, ELECT, Buffer.from(JSON.stringify(call)), ms + CALL_MARGIN_MS);
  if (answer === null) return { error: ErrorCode.REQUEST_TIMED_OUT, message: `The partition's leader (${leader}) did not answer in time.` };
  try {
    const a = JSON.parse(answer.toString("utf8")) as Partial<Outcome>;
    if (typeof a.error === "number") return { error: a.error, message: typeof a.message === "string" ? a.message : null };
  } catch {
    // answered below
  }
  return { error: ErrorCode.UNKNOWN_SERVER_ERROR, message: "The partition's leader answered what this broker cannot read." };
}
