/**
 * DeleteGroups and OffsetDelete: what kafka-consumer-groups.sh --delete and
 * --delete-offsets send. As in Kafka, a group with members is not deleted
 * (NON_EMPTY_GROUP), and the committed offset of a topic its members
 * subscribe to stays (GROUP_SUBSCRIBED_TO_TOPIC): they would commit it again.
 */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { Reader } from "./codec.js";
import { offsetKey, type Group } from "./groups.js";
import { decodeDeleteGroups, decodeOffsetDelete, KEY_TYPE_GROUP, partitionsByTopic } from "./requests.js";
import { coordinatorError, partitionCount } from "./cluster.js";
import { CoordinatorMoved } from "./coordinator-topic.js";

export async function handleDeleteGroups(door: AccountDoor, { r, w }: RequestContext): Promise<boolean> {
  const { groupIds } = decodeDeleteGroups(r);
  const results: Array<[string, number]> = [];
  // Each group once, as Kafka (groupsNames.distinct): named twice, the second would read "not found" for a group just deleted.
  for (const id of new Set(groupIds)) {
    const refused = coordinatorError(door, KEY_TYPE_GROUP, id);
    if (refused !== ErrorCode.NONE) {
      results.push([id, refused]);
      continue;
    }
    const g = door.groups.group(id, false);
    let error: number = ErrorCode.NONE;
    if (g === null) error = ErrorCode.GROUP_ID_NOT_FOUND;
    else if (g.state !== "Empty" || g.members.size > 0) error = ErrorCode.NON_EMPTY_GROUP;
    else {
      error = await storedWithinTimeout(door, id, "deletion", door.groups.remove(g));
      if (error === ErrorCode.NONE) door.log.info(`kafka: deleted group ${id}`);
    }
    results.push([id, error]);
  }
  w.i32(0); // throttle_time_ms
  w.array(results, (w, [id, error]) => w.string(id).i16(error).taggedFields());
  w.taggedFields();
  return true;
}

/**
 * The topics a group's members subscribe to, from their `consumer` protocol
 * metadata; null when that cannot be known (another protocol type, no
 * protocol chosen yet, metadata that does not parse), which Kafka takes as
 * "every topic", to be safe.
 */
export function subscribedTopics(g: Group): Set<string> | null {
  if (g.protocolType !== "consumer" || g.protocol === "") return null;
  const topics = new Set<string>();
  for (const m of g.members.values()) {
    const metadata = m.protocols.find(([name]) => name === g.protocol)?.[1];
    if (metadata === undefined) return null;
    try {
      // ConsumerProtocolSubscription: version, then the topics (user data and the rest follow).
      const r = new Reader(metadata);
      if (r.i16() < 0) return null;
      for (const t of r.array((r) => r.string())) topics.add(t);
    } catch {
      return null;
    }
  }
  return topics;
}

export async function handleOffsetDelete(door: AccountDoor, { r, w }: RequestContext): Promise<boolean> {
  const { groupId, topics } = decodeOffsetDelete(r);
  const refused = groupId === "" ? ErrorCode.NONE : coordinatorError(door, KEY_TYPE_GROUP, groupId);
  const g = groupId === "" || refused !== ErrorCode.NONE ? null : door.groups.group(groupId, false);
  let error: number = ErrorCode.NONE;
  if (groupId === "") error = ErrorCode.INVALID_GROUP_ID;
  else if (refused !== ErrorCode.NONE) error = refused;
  else if (g === null) error = ErrorCode.GROUP_ID_NOT_FOUND;
  else if (g.members.size > 0 && g.protocolType !== "consumer") error = ErrorCode.NON_EMPTY_GROUP;
  const subscribed = g !== null && g.members.size > 0 ? subscribedTopics(g) : new Set<string>();
  const forget: string[] = [];
  // Answered per topic and partition, each once, as Kafka's keyed response collections do (a topic named twice is merged).
  const results = [...partitionsByTopic(topics)].map(([name, indexes]) => {
    const count = partitionCount(door, name);
    return {
      name,
      partitions: [...indexes].map((index) => {
        let e: number = ErrorCode.NONE;
        if (count === undefined || index < 0 || index >= count) e = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        else if (subscribed === null || subscribed.has(name)) e = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC;
        else forget.push(offsetKey(name, index));
        return { index, error: e };
      }),
    };
  });
  if (error === ErrorCode.NONE && forget.length > 0) {
    error = await storedWithinTimeout(door, groupId, "deletion of offsets", g!.forget(forget));
    if (error === ErrorCode.NONE) door.log.info(`kafka: group ${groupId}: deleted the committed offsets of ${forget.join(", ")}`);
  }
  w.i16(error).i32(0); // error_code, throttle_time_ms
  // As Kafka: a group-level error comes with no topics.
  w.array(error === ErrorCode.NONE ? results : [], (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.i32(p.index).i16(p.error));
  });
  return true;
}

/**
 * NONE once a deletion is stored; NOT_COORDINATOR when the group's
 * partition of __consumer_offsets moved (a cluster); COORDINATOR_NOT_AVAILABLE
 * once offsets_commit_timeout passes first. Kafka's group coordinator bounds
 * these writes by offsets.commit.timeout.ms (GroupCoordinatorService's
 * "delete-groups" and "delete-offsets" write operations) and answers a
 * REQUEST_TIMED_OUT so (CoordinatorOperationExceptionHelper), which the
 * admin client retries: a stalled disk held the answer, and every later
 * answer of the connection, without end. The deletion goes on: the group
 * (or its offsets) is gone from memory at once, and its file's writes and
 * removal stay in order (GroupCoordinator.fileOp), so a retry finds it
 * deleted.
 */
async function storedWithinTimeout(door: AccountDoor, groupId: string, what: string, stored: Promise<void>): Promise<number> {
  const ms = door.options.offsetsCommitTimeoutMs;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<number>((resolve) => (timer = setTimeout(resolve, ms, ErrorCode.COORDINATOR_NOT_AVAILABLE)));
  const done = stored.then(
    () => ErrorCode.NONE as number,
    (err: unknown) => {
      if (err instanceof CoordinatorMoved) return ErrorCode.NOT_COORDINATOR as number;
      throw err;
    },
  );
  try {
    const error = await Promise.race([done, late]);
    if (error === ErrorCode.COORDINATOR_NOT_AVAILABLE) {
      door.groups.warnFailure(groupId, "deletion", `kafka: group ${groupId}: ${what} not stored within ${ms} ms (offsets_commit_timeout): answered COORDINATOR_NOT_AVAILABLE; it goes on`, (line) => door.log.warn(line));
    }
    return error;
  } finally {
    clearTimeout(timer);
  }
}
