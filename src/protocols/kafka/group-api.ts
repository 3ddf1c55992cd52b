/** The consumer-group APIs over groups.ts: coordinator lookup, membership, offsets, listings. */

import type { RequestContext } from "./api.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode } from "./errors.js";
import { committedOffset, MAX_OFFSET_METADATA, MAX_OFFSETS_PER_GROUP, offsetKey, type CommittedOffset } from "./groups.js";
import { coordinatorError, coordinatorReady, partitionCount } from "./cluster.js";
import { CoordinatorMoved } from "./coordinator-topic.js";
import {
  decodeDescribeGroups,
  decodeFindCoordinator,
  decodeHeartbeat,
  decodeJoinGroup,
  decodeLeaveGroup,
  decodeListGroups,
  decodeOffsetCommit,
  decodeOffsetFetch,
  decodeSyncGroup,
  KEY_TYPE_GROUP,
  KEY_TYPE_TRANSACTION,
  type OffsetFetchGroup,
} from "./requests.js";

const EMPTY = Buffer.alloc(0);

/** A reason a client gives for joining or leaving (KIP-800), fit for one log line. */
function reasonText(reason: string): string {
  return JSON.stringify(reason.length > 200 ? `${reason.slice(0, 200)}…` : reason);
}

export function handleFindCoordinator(door: AccountDoor, { conn, version, r, w }: RequestContext): boolean {
  const { keys, keyType } = decodeFindCoordinator(r, version);
  if (version >= 1) w.i32(0); // throttle_time_ms
  const self = door.options.advertisedHost ?? conn.localHost;
  const answer = (key: string): { error: number; message: string | null; id: number; host: string; port: number } => {
    if (keyType !== KEY_TYPE_GROUP && keyType !== KEY_TYPE_TRANSACTION) return { error: ErrorCode.INVALID_REQUEST, message: `unknown coordinator key type ${keyType}`, id: -1, host: "", port: -1 };
    // In a cluster: the leader of the key's partition of the offsets topic (offsets-log.ts) or the transaction state topic (txn-state-log.ts).
    const store = keyType === KEY_TYPE_GROUP ? door.offsets : door.txnState;
    const found = store !== null ? store.coordinator(key) : null;
    if (found !== null && "error" in found) return { error: found.error, message: found.reason, id: -1, host: "", port: -1 };
    if (found === null || found.id === door.nodeId) return { error: ErrorCode.NONE, message: null, id: door.nodeId, host: self, port: door.port };
    return { error: ErrorCode.NONE, message: null, id: found.broker.id, host: found.broker.host, port: found.broker.port };
  };
  if (version < 4) {
    const a = answer(keys[0]);
    w.i16(a.error);
    if (version >= 1) w.nullableString(a.message);
    w.i32(a.id).string(a.host).i32(a.port);
  } else {
    w.array(keys, (w, key) => {
      const a = answer(key);
      w.string(key).i32(a.id).string(a.host).i32(a.port).i16(a.error).nullableString(a.message);
      w.taggedFields();
    });
  }
  w.taggedFields();
  return true;
}

/** A member's host as Kafka's DescribeGroups gives it: Java's InetAddress.toString of an address not looked up, "/127.0.0.1". */
function clientHost(address: string | undefined): string {
  return address === undefined ? "" : `/${address}`;
}

export async function handleJoinGroup(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { groupId, sessionTimeoutMs, rebalanceTimeoutMs, memberId, instanceId, protocolType, protocols, reason } = decodeJoinGroup(r, version);
  if (reason !== null && door.log.debugEnabled) door.log.debug(`kafka: group ${groupId}: ${memberId === "" ? "a new member" : `member ${memberId}`} joins: ${reasonText(reason)}`);
  const earlier = conn.earlierCommits();
  if (earlier !== null) await earlier;
  const coordinator = groupId === "" ? ErrorCode.NONE : await coordinatorReady(door, KEY_TYPE_GROUP, groupId);
  // As Kafka's GroupCoordinator: a session timeout out of bounds is refused before any group is made, and only a member
  // without an id makes one (an id named to a group that does not exist is UNKNOWN_MEMBER_ID).
  const badSession = door.groups.badSessionTimeout(sessionTimeoutMs);
  const refused = groupId === "" ? ErrorCode.NONE : coordinator !== ErrorCode.NONE ? coordinator : badSession ? ErrorCode.INVALID_SESSION_TIMEOUT : ErrorCode.NONE;
  const group = groupId === "" || refused !== ErrorCode.NONE ? null : door.groups.group(groupId, memberId === "");
  let error: number = refused;
  if (error === ErrorCode.NONE && groupId === "") error = ErrorCode.INVALID_GROUP_ID;
  else if (error === ErrorCode.NONE && group === null) error = memberId !== "" ? ErrorCode.UNKNOWN_MEMBER_ID : ErrorCode.COORDINATOR_NOT_AVAILABLE;
  // Kafka's supportsProtocols: a member must name a protocol type and at least one protocol.
  else if (error === ErrorCode.NONE && (protocols.length === 0 || protocolType === "")) error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL;
  const result =
    group === null || error !== ErrorCode.NONE
      ? { error, generation: -1, protocol: "", leader: "", memberId, members: [] }
      : await group.join(
          { id: memberId, instanceId, clientId: conn.clientId ?? "", host: clientHost(conn.socket.remoteAddress), sessionTimeoutMs, rebalanceTimeoutMs, protocolType, protocols },
          version,
        );
  // v7+ (KIP-559): the group's protocol type and name, null with an error (as Kafka answers).
  const joined = result.error === ErrorCode.NONE && group !== null;
  if (version >= 2) w.i32(0); // throttle_time_ms
  w.i16(result.error).i32(result.generation);
  if (version >= 7) w.nullableString(joined ? group.protocolType : null).nullableString(joined ? result.protocol : null);
  else w.string(result.protocol);
  w.string(result.leader);
  // v9 (KIP-814): true only for a static leader that rejoins a Stable group and must not assign again; nagare answers such a
  // member with the old leader's id instead (Group.replaceStaticMember), as Kafka did before KIP-814, so it acts as a follower.
  if (version >= 9) w.bool(false);
  w.string(result.memberId);
  w.array(result.members, (w, m) => {
    w.string(m.memberId);
    if (version >= 5) w.nullableString(m.instanceId);
    w.nullableBytes(m.metadata);
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

export async function handleSyncGroup(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { groupId, generation, memberId, instanceId, protocolType, protocolName, assignments } = decodeSyncGroup(r, version);
  const earlier = conn.earlierCommits();
  if (earlier !== null) await earlier;
  const refused = groupIdError(door, groupId);
  const group = refused !== ErrorCode.NONE ? null : door.groups.group(groupId, false);
  const result =
    group === null
      ? { error: refused !== ErrorCode.NONE ? refused : ErrorCode.UNKNOWN_MEMBER_ID, assignment: Buffer.alloc(0) }
      : await group.sync(memberId, instanceId, generation, assignments, protocolType, protocolName);
  if (version >= 1) w.i32(0);
  w.i16(result.error);
  if (version >= 5) {
    // KIP-559: the group's protocol type and name, null with an error (as Kafka answers).
    const synced = result.error === ErrorCode.NONE && group !== null;
    w.nullableString(synced ? group.protocolType : null).nullableString(synced ? group.protocol : null);
  }
  w.nullableBytes(result.assignment);
  w.taggedFields();
  return true;
}

/** What refuses a request naming a group before the group is looked at: an empty id first (INVALID_GROUP_ID, as Kafka's coordinator checks it), then this broker not coordinating it. */
function groupIdError(door: AccountDoor, groupId: string): number {
  return groupId === "" ? ErrorCode.INVALID_GROUP_ID : coordinatorError(door, KEY_TYPE_GROUP, groupId);
}

export function handleHeartbeat(door: AccountDoor, { conn, version, r, w }: RequestContext): boolean | Promise<boolean> {
  const { groupId, generation, memberId, instanceId } = decodeHeartbeat(r, version);
  const earlier = conn.earlierCommits();
  if (earlier !== null) return earlier.then(() => answerHeartbeat(door, version, w, groupId, generation, memberId, instanceId));
  return answerHeartbeat(door, version, w, groupId, generation, memberId, instanceId);
}

function answerHeartbeat(door: AccountDoor, version: number, w: RequestContext["w"], groupId: string, generation: number, memberId: string, instanceId: string | null): boolean {
  const refused = groupIdError(door, groupId);
  const group = refused !== ErrorCode.NONE ? null : door.groups.group(groupId, false);
  if (version >= 1) w.i32(0);
  w.i16(refused !== ErrorCode.NONE ? refused : group === null ? ErrorCode.UNKNOWN_MEMBER_ID : group.heartbeat(memberId, instanceId, generation));
  w.taggedFields();
  return true;
}

export function handleLeaveGroup(door: AccountDoor, { conn, version, r, w }: RequestContext): boolean | Promise<boolean> {
  const { groupId, members: leaving } = decodeLeaveGroup(r, version);
  const earlier = conn.earlierCommits();
  if (earlier !== null) return earlier.then(() => answerLeaveGroup(door, version, w, groupId, leaving));
  return answerLeaveGroup(door, version, w, groupId, leaving);
}

function answerLeaveGroup(door: AccountDoor, version: number, w: RequestContext["w"], groupId: string, leaving: ReturnType<typeof decodeLeaveGroup>["members"]): boolean {
  if (door.log.debugEnabled) for (const m of leaving) if (m.reason !== null) door.log.debug(`kafka: group ${groupId}: member ${m.memberId || m.instanceId} leaves: ${reasonText(m.reason)}`);
  const refused = groupIdError(door, groupId);
  if (refused !== ErrorCode.NONE) {
    if (version >= 1) w.i32(0);
    w.i16(refused);
    if (version >= 3) w.arrayLength(0);
    w.taggedFields();
    return true;
  }
  const group = door.groups.group(groupId, false);
  const errors = leaving.map((m) => (group === null ? ErrorCode.UNKNOWN_MEMBER_ID : group.leave(m.memberId, m.instanceId)));
  if (version >= 1) w.i32(0);
  if (version < 3) {
    w.i16(errors[0]);
    return true;
  }
  w.i16(ErrorCode.NONE);
  w.arrayLength(leaving.length);
  leaving.forEach((m, i) => w.string(m.memberId).nullableString(m.instanceId).i16(errors[i]).taggedFields());
  w.taggedFields();
  return true;
}

export async function handleOffsetCommit(door: AccountDoor, ctx: RequestContext): Promise<boolean> {
  const { groupId, generation, memberId, instanceId, topics } = decodeOffsetCommit(ctx.r, ctx.version);
  // In the connection's order: after its earlier commits, before anything it sent next (KafkaConnection.earlierCommits).
  const turn = ctx.conn.takeCommitTurn();
  try {
    if (turn.ready !== null) await turn.ready;
    return await commitOffsets(door, ctx, groupId, generation, memberId, instanceId, topics);
  } finally {
    turn.done();
  }
}

async function commitOffsets(
  door: AccountDoor,
  { version, w }: RequestContext,
  groupId: string,
  generation: number,
  memberId: string,
  instanceId: string | null,
  topics: ReturnType<typeof decodeOffsetCommit>["topics"],
): Promise<boolean> {
  const tell = (line: string): void => door.log.warn(line.startsWith("kafka") ? line : `kafka ${line}`);
  const refused = await coordinatorReady(door, KEY_TYPE_GROUP, groupId);
  // As in Kafka: an unknown partition is named as such whatever the group's state; the group judges the rest.
  const results = topics.map((t) => {
    const count = partitionCount(door, t.name);
    return {
      name: t.name,
      partitions: t.partitions.map((p) => {
        const error: number = refused !== ErrorCode.NONE ? refused : count === undefined || p.index < 0 || p.index >= count ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION : ErrorCode.NONE;
        return { ...p, error };
      }),
    };
  });
  const known = results.flatMap((t) => t.partitions.filter((p) => p.error === ErrorCode.NONE));
  if (known.length > 0) {
    // Only a simple consumer's commit (generation -1) makes a group; any other names a generation of a group that is gone.
    // (Kafka accepts the empty group id here, for old clients; JoinGroup refuses it.)
    const group = door.groups.group(groupId, generation < 0);
    const check = group !== null ? group.commitCheck(memberId, instanceId, generation) : generation < 0 ? ErrorCode.COORDINATOR_NOT_AVAILABLE : ErrorCode.ILLEGAL_GENERATION;
    for (const p of known) {
      if (check !== ErrorCode.NONE) p.error = check;
      // Kafka's offset.metadata.max.bytes, which counts characters.
      else if (p.metadata !== null && p.metadata.length > MAX_OFFSET_METADATA) p.error = ErrorCode.OFFSET_METADATA_TOO_LARGE;
    }
    const entries: Array<[string, CommittedOffset]> = [];
    for (const t of results) for (const p of t.partitions) if (p.error === ErrorCode.NONE) entries.push([offsetKey(t.name, p.index), committedOffset(p)]);
    if (group !== null && entries.length > 0) {
      let added = 0;
      for (const [k] of entries) if (!group.holdsKey(k)) added++;
      if (group.keyCount() + added > MAX_OFFSETS_PER_GROUP) {
        for (const p of known) if (p.error === ErrorCode.NONE) p.error = ErrorCode.RECORD_LIST_TOO_LARGE;
      } else {
        const stored = group.commit(entries).then(
          () => {
            door.groups.failureOver(groupId, "offsets", tell);
            return ErrorCode.NONE;
          },
          (err: unknown) => {
            // In a cluster: the group's partition of the offsets topic moved before every replica had the commit. On a
            // single node: the group's file could not be written (a full disk). Kafka answers a failed write of its offsets
            // log NOT_COORDINATOR either way; clients find the coordinator again and retry.
            // Logged once per FAILURE_LOG_MS per group: the clients retry at once, and each retry fails alike.
            if (!(err instanceof CoordinatorMoved)) door.groups.warnFailure(groupId, "offsets", `kafka: offsets of group ${groupId} not committed: ${(err as Error).message}`, tell);
            return ErrorCode.NOT_COORDINATOR;
          },
        );
        const error = await withinCommitTimeout(door, groupId, stored, tell);
        if (error !== ErrorCode.NONE) for (const p of known) if (p.error === ErrorCode.NONE) p.error = error;
      }
    }
  }
  if (version >= 3) w.i32(0);
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.i32(p.index).i16(p.error).taggedFields());
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

/**
 * The commit's outcome, or REQUEST_TIMED_OUT once offsets_commit_timeout
 * passes first, as Kafka bounds a commit by offsets.commit.timeout.ms: a
 * stalled disk (or replica) must not hold the connection's later group
 * requests (earlierCommits) without end. The write goes on and may still
 * land, as in Kafka, where a timed-out commit may be appended all the same.
 * A TxnOffsetCommit's too (txn-api.ts), as Kafka's goes the same way.
 */
export async function withinCommitTimeout(door: AccountDoor, groupId: string, stored: Promise<number>, tell: (line: string) => void): Promise<number> {
  const ms = door.options.offsetsCommitTimeoutMs;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<number>((resolve) => (timer = setTimeout(resolve, ms, ErrorCode.REQUEST_TIMED_OUT)));
  try {
    const error = await Promise.race([stored, late]);
    if (error === ErrorCode.REQUEST_TIMED_OUT) door.groups.warnFailure(groupId, "offsets", `kafka: offsets of group ${groupId} not stored within ${ms} ms (offsets_commit_timeout): answered REQUEST_TIMED_OUT`, tell);
    return error;
  } finally {
    clearTimeout(timer);
  }
}

interface FetchedOffsets {
  groupId: string;
  /** The group-level error (the coordinator's), also each partition's. */
  error: number;
  topics: Array<{ name: string; partitions: Array<{ index: number; offset: number; leaderEpoch: number; metadata: string; error: number }> }>;
}

/** One group's committed offsets of the partitions asked (topics null: of every partition it has one for). */
async function fetchOffsets(door: AccountDoor, { groupId, topics: asked }: OffsetFetchGroup, requireStable: boolean): Promise<FetchedOffsets> {
  let topics = asked;
  const refused = await coordinatorReady(door, KEY_TYPE_GROUP, groupId);
  const group = refused !== ErrorCode.NONE ? null : door.groups.group(groupId, false);
  if (topics === null) {
    // Every committed offset of the group (v2+).
    const byTopic = new Map<string, number[]>();
    for (const k of group?.offsets.keys() ?? []) {
      const at = k.lastIndexOf("/");
      const list = byTopic.get(k.slice(0, at)) ?? [];
      list.push(Number(k.slice(at + 1)));
      byTopic.set(k.slice(0, at), list);
    }
    topics = [...byTopic].map(([name, partitions]) => ({ name, partitions }));
  }
  return {
    groupId,
    error: refused,
    topics: topics.map((t) => ({
      name: t.name,
      partitions: t.partitions.map((index) => {
        const key = offsetKey(t.name, index);
        // KIP-447: an offset an open transaction holds is not answered yet; the consumer asks again.
        const unstable = requireStable && refused === ErrorCode.NONE && group !== null && group.heldByTxn(key);
        const c = unstable ? undefined : group?.offsets.get(key);
        return { index, offset: c?.offset ?? -1, leaderEpoch: c?.leaderEpoch ?? -1, metadata: c?.metadata ?? "", error: unstable ? ErrorCode.UNSTABLE_OFFSET_COMMIT : refused };
      }),
    })),
  };
}

export async function handleOffsetFetch(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { groups, requireStable } = decodeOffsetFetch(r, version);
  const earlier = conn.earlierCommits();
  if (earlier !== null) await earlier;
  const results = await Promise.all(groups.map((g) => fetchOffsets(door, g, requireStable)));
  const writeTopics = (topics: FetchedOffsets["topics"]): void => {
    w.array(topics, (w, t) => {
      w.string(t.name);
      w.array(t.partitions, (w, p) => {
        w.i32(p.index).i64(p.offset);
        if (version >= 5) w.i32(p.leaderEpoch); // committed_leader_epoch
        w.nullableString(p.metadata).i16(p.error).taggedFields();
      });
      w.taggedFields();
    });
  };
  if (version >= 3) w.i32(0);
  if (version >= 8) {
    // Each group with its own error; as Kafka, a group-level error comes with no topics.
    w.array(results, (w, g) => {
      w.string(g.groupId);
      writeTopics(g.error === ErrorCode.NONE ? g.topics : []);
      w.i16(g.error).taggedFields();
    });
  } else {
    writeTopics(results[0].topics);
    if (version >= 2) w.i16(results[0].error);
  }
  w.taggedFields();
  return true;
}

export function handleListGroups(door: AccountDoor, { version, r, w }: RequestContext): boolean {
  const { statesFilter } = decodeListGroups(r, version);
  // v4 (KIP-518): only the groups in one of the states named (matched as Kafka's state names, whatever their case), each with its state.
  const wanted = new Set(statesFilter.map((s) => s.toLowerCase()));
  const groups = [...door.groups.groups.values()].filter((g) => wanted.size === 0 || wanted.has(g.state.toLowerCase()));
  if (version >= 1) w.i32(0);
  w.i16(ErrorCode.NONE);
  w.array(groups, (w, g) => {
    w.string(g.id).string(g.protocolType);
    if (version >= 4) w.string(g.state);
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

export function handleDescribeGroups(door: AccountDoor, { version, r, w }: RequestContext): boolean {
  const { groupIds: ids } = decodeDescribeGroups(r, version); // include_authorized_operations: not computed
  if (version >= 1) w.i32(0);
  w.array(ids, (w, id) => {
    const refused = coordinatorError(door, KEY_TYPE_GROUP, id);
    const g = refused !== ErrorCode.NONE ? null : door.groups.group(id, false);
    const state = g === null ? "Dead" : g.state;
    // As Kafka's GroupMetadata.summary: the protocol and each member's metadata and assignment only once the group is
    // Stable; during a rebalance they are not settled (empty).
    const stable = state === "Stable";
    w.i16(refused).string(id).string(state).string(g?.protocolType ?? "").string(stable ? g!.protocol : "");
    const members = g === null ? [] : [...g.members.values()];
    w.array(members, (w, m) => {
      w.string(m.id);
      if (version >= 4) w.nullableString(m.instanceId);
      w.string(m.clientId).string(m.host);
      w.nullableBytes(stable ? (m.protocols.find(([n]) => n === g!.protocol)?.[1] ?? EMPTY) : EMPTY);
      w.nullableBytes(stable ? m.assignment : EMPTY);
      w.taggedFields();
    });
    if (version >= 3) w.i32(-2147483648); // authorized_operations: not computed
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}
