/** CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords and DescribeLogDirs: topics as streams (see topics.ts). */

import { statfs } from "node:fs/promises";
import { resolve } from "node:path";
import type { RequestContext } from "./api.js";
import { MAX_PARTITIONS } from "./door.js";
import type { AccountDoor } from "./account-door.js";
import { ErrorCode, isAccountLimit } from "./errors.js";
import { ApiError } from "../../streams/errors.js";
import { normalizeStreamConfig } from "../../streams/config.js";
import { subjectsIntersect } from "../../subjects/subject.js";
import { deletesRecords, describeTopicConfigs, fail, limitsFrom, minInsyncReplicas, ok, storageFailure, topicConfigs, type ConfigEntry, type Outcome } from "./configs.js";
import { decodeCreatePartitions, decodeCreateTopics, decodeDeleteRecords, decodeDeleteTopics, decodeDescribeLogDirs, partitionsByTopic, repeatedKeys } from "./requests.js";
import { ZERO_UUID } from "./codec.js";
import { topicById, topicIdOf } from "./topic-ids.js";
import { findTopic, isInternalTopic, mayDescribeTopic, mayManageTopic, streamNameOf, topicNameError, topicOf, TOPIC_METADATA_KEY } from "./topics.js";
import { KafkaClusterError, ledPartition, partitionCount } from "./cluster.js";

/** Kafka's message for a TopicAuthorizationException in admin responses. */
export const AUTHORIZATION_FAILED = "Authorization failed.";

/** The most copies of a partition nagare keeps (issue 20: replication.factor 1 to 5). */
export const MAX_REPLICATION_FACTOR = 5;

/**
 * Creates `topic` with `partitions` partitions of `replicas` copies each
 * (more than one: in a cluster only); the Kafka outcome.
 */
export async function createTopic(door: AccountDoor, topic: string, partitions: number, configs: Map<string, string | null>, validateOnly = false, replicas = 1): Promise<Outcome & { configs?: ConfigEntry[] }> {
  const nameError = topicNameError(topic);
  if (nameError !== null) return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, nameError);
  if (isInternalTopic(topic)) return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, `${topic} is internal: the coordinators make it`);
  if (partitions < 1 || partitions > MAX_PARTITIONS) return fail(ErrorCode.INVALID_PARTITIONS, `partitions must be 1 to ${MAX_PARTITIONS}`);
  const existing = door.js.streams.get(streamNameOf(topic));
  if (existing !== undefined) {
    if (topicOf(existing) === topic) return fail(ErrorCode.TOPIC_ALREADY_EXISTS, `Topic '${topic}' already exists.`);
    return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, `Topic '${topic}' collides with existing topic '${topicOf(existing)}'.`);
  }
  const placed = door.door.cluster?.topic(door.account, streamNameOf(topic));
  if (placed !== undefined) {
    if (placed.topic === topic) return fail(ErrorCode.TOPIC_ALREADY_EXISTS, `Topic '${topic}' already exists.`);
    return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, `Topic '${topic}' collides with existing topic '${placed.topic}'.`);
  }
  const limits = limitsFrom(configs, door.js.options.maxPayload);
  if ("error" in limits) return limits as Outcome;
  const config = { name: streamNameOf(topic), subjects: [topic], storage: "file", retention: "limits", discard: "old", ...limits, metadata: { ...limits.metadata, [TOPIC_METADATA_KEY]: topic } };
  const cluster = door.door.cluster;
  if (replicas > 1) {
    // Kafka's words (InvalidReplicationFactorException); the placement counts the live brokers again as it places.
    const brokers = cluster === null ? 1 : cluster.brokers().length;
    if (replicas > brokers) return fail(ErrorCode.INVALID_REPLICATION_FACTOR, `Replication factor: ${replicas} larger than available brokers: ${brokers}.`);
  }
  if (validateOnly) {
    // What the stream would refuse is refused here too, as Kafka applies its create policy to a validation: the account's
    // stream limit and overlapping subjects (POLICY_VIOLATION, as the create answers), the config (INVALID_CONFIG). The
    // configs it would have are CreateTopics v5+'s answer.
    try {
      const normalized = normalizeStreamConfig(config);
      if (cluster !== null) {
        // The account's streams in the whole cluster, as the placement's admit judges them (this node holds only a part).
        const placed = cluster.topics(door.account);
        const max = door.js.limits.maxStreams;
        if (max > 0 && placed.length >= max) return fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: maximum number of streams reached`);
        if (placed.some((p) => p.subjects.some((s) => subjectsIntersect(s, topic)))) return fail(ErrorCode.POLICY_VIOLATION, `subject ${topic} is already captured by another stream`);
        const over = cluster.limitError(door.account, normalized, partitions * replicas, door.js.limits);
        if (over !== null) throw over;
      } else door.js.validateCreate(normalized, partitions); // in a cluster the leader's limits apply, judged as it makes its copy
      return { ...ok, configs: topicConfigs(door, { config: normalized }) };
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.errCode === 10065) return fail(ErrorCode.POLICY_VIOLATION, `subject ${topic} is already captured by another stream`);
      if (isAccountLimit(err)) return fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: ${err.message}`);
      return fail(ErrorCode.INVALID_CONFIG, err.message);
    }
  }
  if (cluster !== null) return placeTopic(door, topic, partitions, config, replicas);
  try {
    await door.js.createStream(config, partitions);
  } catch (err) {
    if (!(err instanceof ApiError)) return storageFailure(door, "creating", topic, err);
    if (err.errCode === 10065) return fail(ErrorCode.POLICY_VIOLATION, `subject ${topic} is already captured by another stream`);
    if (isAccountLimit(err)) return fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: ${err.message}`);
    return fail(ErrorCode.INVALID_CONFIG, err.message);
  }
  door.log.info(`kafka: created topic ${topic} with ${partitions} partition(s)`);
  return ok;
}

/**
 * In a cluster a topic is created by placing it: its partitions spread over
 * the live nodes (cluster.ts), each of which creates its copy of the stream
 * from the placed configuration. The answer comes once the placement is
 * recorded; a produce that reaches a leader before its copy exists gets
 * LEADER_NOT_AVAILABLE, which clients retry; this node's own copy is made
 * before the answer.
 */
async function placeTopic(door: AccountDoor, topic: string, partitions: number, config: { name: string; subjects: string[]; metadata: Record<string, string> }, replicas: number): Promise<Outcome> {
  // What each leader would refuse when it makes its copy is refused here, before anything is placed.
  try {
    normalizeStreamConfig(config);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    return fail(ErrorCode.INVALID_CONFIG, err.message);
  }
  for (const p of door.door.cluster!.topics(door.account)) {
    if (p.subjects.some((s) => subjectsIntersect(s, topic))) return fail(ErrorCode.POLICY_VIOLATION, `subject ${topic} is already captured by another stream`);
  }
  try {
    const created = await door.door.cluster!.place(door.account, config.name, partitions, config, config.subjects, replicas, minInsyncReplicas(config.metadata, door.options.minInsyncReplicas), door.js.limits, true);
    if (!created) return fail(ErrorCode.TOPIC_ALREADY_EXISTS, `Topic '${topic}' already exists.`);
  } catch (err) {
    return clusterFailure(err);
  }
  // This node's copy, if it leads a partition, exists when the answer goes (the other leaders make theirs as they hear of it).
  await door.js.cluster?.settle(door.account, config.name).catch(() => undefined);
  door.log.info(`kafka: placed topic ${topic} with ${partitions} partition(s)${replicas > 1 ? ` of ${replicas} replicas` : ""}`);
  return ok;
}

/** A cluster change that failed, as Kafka says it: retriable (etcd away, no live node) or refused. */
function clusterFailure(err: unknown): Outcome {
  if (!(err instanceof KafkaClusterError)) throw err;
  if (err.code !== null) return fail(err.code, err.message);
  return fail(err.retriable ? ErrorCode.REQUEST_TIMED_OUT : ErrorCode.POLICY_VIOLATION, err.message);
}

/** A created topic as CreateTopics v5+ answers it: its partitions, replicas and configs (-1, -1 and none on an error, Kafka's defaults). */
interface CreatedTopic extends Outcome {
  name: string;
  /** v7+: the topic id (the all-zero uuid when none was made). */
  topicId: string;
  partitions: number;
  replicas: number;
  configs: ConfigEntry[];
}

/**
 * CreateTopics v0–7: v5 (flexible) answers each created topic's partition
 * count, replication factor and configs, as DescribeConfigs gives them; v7
 * its topic id, as Metadata gives it (the all-zero uuid for a topic not
 * made, validate_only's too).
 */
export async function handleCreateTopics(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { topics: requests, validateOnly } = decodeCreateTopics(r, version);
  const repeated = repeatedKeys(requests.map((t) => t.name));
  const answered = new Set<string>();
  const results: CreatedTopic[] = [];
  for (const t of requests) {
    // As Kafka: a topic named more than once is answered once (clients refuse an answer naming it twice), and not made.
    if (answered.has(t.name)) continue;
    answered.add(t.name);
    let outcome: Outcome & { configs?: ConfigEntry[] };
    let count = -1;
    const replicas = t.replication === -1 ? door.options.defaultReplicationFactor : t.replication;
    if (repeated.has(t.name)) outcome = fail(ErrorCode.INVALID_REQUEST, "Found multiple entries for this topic.");
    else if (!mayManageTopic(conn.permissions, "CREATE", t.name)) outcome = fail(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED);
    // Kafka refuses a manual assignment beside a partition count or replication factor (-1 both when assignments are given).
    else if (t.assignments.length > 0 && (t.partitions !== -1 || t.replication !== -1)) {
      outcome = fail(ErrorCode.INVALID_REQUEST, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.");
    }
    // -1 is the broker's default (kafka { default_replication_factor }).
    else if (t.replication === 0 || t.replication < -1) outcome = fail(ErrorCode.INVALID_REPLICATION_FACTOR, "Replication factor must be larger than 0.");
    else if (t.replication > MAX_REPLICATION_FACTOR) outcome = fail(ErrorCode.INVALID_REPLICATION_FACTOR, `Replication factor: ${t.replication} is more than nagare keeps (at most ${MAX_REPLICATION_FACTOR}).`);
    else if (t.assignments.length > 0 && door.door.cluster !== null) outcome = fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "assignments are not taken in a cluster: nagare spreads the partitions over the live nodes");
    else if (t.assignments.length > 0 && t.assignments.some((a, i) => a.partition !== i || a.brokers.some((b) => b !== door.nodeId))) {
      outcome = fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `assignments may name only broker ${door.nodeId}, partitions 0..n-1`);
    } else {
      count = t.assignments.length > 0 ? t.assignments.length : t.partitions === -1 ? door.options.defaultPartitions : t.partitions;
      outcome = await createTopic(door, t.name, count, t.configs, validateOnly, replicas);
    }
    const created = outcome.error === ErrorCode.NONE;
    // Described once made (validate_only: as it would be made); a topic deleted meanwhile has none to describe.
    const configs = !created || version < 5 ? [] : (outcome.configs ?? describeTopicConfigs(door, t.name) ?? []);
    const topicId = created && !validateOnly ? (topicIdOf(door, t.name) ?? ZERO_UUID) : ZERO_UUID;
    results.push({ name: t.name, topicId, error: outcome.error, message: outcome.message, partitions: created ? count : -1, replicas: created ? replicas : -1, configs });
  }
  if (version >= 2) w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.string(t.name);
    if (version >= 7) w.uuid(t.topicId);
    w.i16(t.error);
    if (version >= 1) w.nullableString(t.message);
    if (version >= 5) {
      // topic_config_error_code (tagged) is left out: the configs are always given.
      w.i32(t.partitions).i16(t.replicas);
      w.array(t.configs, (w, c) => w.string(c.name).nullableString(c.value).bool(c.readOnly).i8(c.source).bool(false).taggedFields());
    }
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

/**
 * DeleteTopics v0–6: v4 is flexible, v5 answers an error message, v6 names
 * each topic by name or by id (topic-ids.ts), and is answered with both: an
 * id no topic has is UNKNOWN_TOPIC_ID, a topic named both ways
 * INVALID_REQUEST (as Kafka).
 */
export async function handleDeleteTopics(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { topics } = decodeDeleteTopics(r, version);
  const results: Array<{ name: string | null; topicId: string } & Outcome> = [];
  const cluster = door.door.cluster;
  for (const asked of topics) {
    if (asked.name !== null && asked.topicId !== ZERO_UUID) {
      results.push({ ...asked, error: ErrorCode.INVALID_REQUEST, message: "You may not specify both topic name and topic id." });
      continue;
    }
    const name = asked.name ?? topicById(door, asked.topicId);
    if (name === undefined) {
      results.push({ ...asked, error: ErrorCode.UNKNOWN_TOPIC_ID, message: `No topic has the id ${asked.topicId}.` });
      continue;
    }
    // Answered with the topic's id (and, asked by id, its name), as it was before the delete.
    const topicId = topicIdOf(door, name) ?? ZERO_UUID;
    const result = (error: number, message: string | null): void => void results.push({ name, topicId, error, message });
    const stream = findTopic(door.js, name);
    const placed = cluster?.topic(door.account, streamNameOf(name));
    const isPlaced = placed !== undefined && placed.topic === name;
    if (stream === undefined && !isPlaced) {
      result(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `The topic '${name}' does not exist.`);
      continue;
    }
    if (!mayManageTopic(conn.permissions, "DELETE", name)) {
      result(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED);
      continue;
    }
    if (isPlaced) {
      // The nodes that lead it delete their copies when its placement goes.
      try {
        await cluster!.remove(door.account, streamNameOf(name));
        await door.js.cluster?.settle(door.account, streamNameOf(name)).catch(() => undefined);
      } catch (err) {
        const failed = clusterFailure(err);
        result(failed.error, failed.message);
        continue;
      }
    } else await door.js.deleteStream(stream!.config.name);
    await door.groups.forgetTopic(name);
    door.producers.forgetTopic(name);
    door.log.info(`kafka: deleted topic ${name}`);
    result(ErrorCode.NONE, null);
  }
  if (version >= 1) w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.nullableString(t.name);
    if (version >= 6) w.uuid(t.topicId);
    w.i16(t.error);
    if (version >= 5) w.nullableString(t.message);
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

/** Why `stream` cannot grow to `count` partitions with these assignments, or null. */
function growthError(door: AccountDoor, name: string, count: number, assignments: number[][] | null): Outcome | null {
  const current = partitionCount(door, name);
  if (current === undefined) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `The topic '${name}' does not exist.`);
  // Kafka's own words for a count that does not grow the topic.
  if (count < current) return fail(ErrorCode.INVALID_PARTITIONS, `Topic currently has ${current} partitions, which is higher than the requested ${count}.`);
  if (count === current) return fail(ErrorCode.INVALID_PARTITIONS, `Topic already has ${current} partitions.`);
  if (count > MAX_PARTITIONS) return fail(ErrorCode.INVALID_PARTITIONS, `partitions must be 1 to ${MAX_PARTITIONS}`);
  if (assignments !== null) {
    if (assignments.length !== count - current) {
      return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `Increasing the number of partitions by ${count - current} but ${assignments.length} assignments provided.`);
    }
    // In a cluster the partitions are placed by nagare, spread over the live nodes: an assignment is not honoured, so it is refused.
    if (door.door.cluster !== null) return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, "assignments are not taken in a cluster: nagare spreads new partitions over the live nodes");
    if (assignments.some((brokers) => brokers.length !== 1 || brokers[0] !== door.nodeId)) {
      return fail(ErrorCode.INVALID_REPLICA_ASSIGNMENT, `assignments may name only broker ${door.nodeId}, once per partition (replication factor 1)`);
    }
  }
  if (findTopic(door.js, name)?.config.sealed === true) return fail(ErrorCode.POLICY_VIOLATION, `the stream of topic ${name} is sealed`);
  return null;
}

/** What growTopic would be refused for under the account's limits, judged without growing the topic (validate_only), or null. */
function growthLimitError(door: AccountDoor, name: string, count: number): Outcome | null {
  const cluster = door.door.cluster;
  const placed = cluster?.topic(door.account, streamNameOf(name));
  let over: ApiError | null;
  if (placed !== undefined && placed.topic === name) over = cluster!.changeLimitError(door.account, placed.stream, { count }, door.js.limits);
  else {
    const stream = findTopic(door.js, name);
    over = stream === undefined ? null : door.js.growthLimitError(stream.config.name, count);
  }
  return over === null ? null : fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: ${over.message}`);
}

/** Adds the partitions; the Kafka outcome of the stream's answer. */
async function growTopic(door: AccountDoor, name: string, count: number): Promise<Outcome> {
  const cluster = door.door.cluster;
  const placed = cluster?.topic(door.account, streamNameOf(name));
  if (placed !== undefined && placed.topic === name) {
    try {
      await cluster!.grow(door.account, placed.stream, count, door.js.limits);
    } catch (err) {
      return clusterFailure(err);
    }
    await door.js.cluster?.settle(door.account, placed.stream).catch(() => undefined);
    door.log.info(`kafka: topic ${name} now placed with ${count} partitions`);
    return ok;
  }
  const stream = findTopic(door.js, name);
  if (stream === undefined) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `The topic '${name}' does not exist.`);
  try {
    await door.js.addPartitions(stream.config.name, count);
  } catch (err) {
    // Another request grew or deleted the topic meanwhile; anything else is the disk's doing.
    if (err instanceof ApiError && err.errCode === 10059) return fail(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `The topic '${name}' does not exist.`);
    // Grown by another request since this one was checked: Kafka's words for the count it has now.
    if (err instanceof ApiError && err.errCode === 10051) return growthError(door, name, count, null) ?? fail(ErrorCode.INVALID_PARTITIONS, err.message);
    if (err instanceof ApiError && isAccountLimit(err)) return fail(ErrorCode.POLICY_VIOLATION, `account ${door.account}: ${err.message}`);
    door.log.error(`kafka: adding partitions to topic ${name} failed: ${(err as Error).message}`);
    return fail(ErrorCode.KAFKA_STORAGE_ERROR, `adding partitions failed: ${(err as Error).message}`);
  }
  door.log.info(`kafka: topic ${name} now has ${count} partitions`);
  return ok;
}

/**
 * CreatePartitions v0–3 (v2 flexible, v3 the same). As Kafka, a request that may not wait
 * (timeout_ms <= 0) starts the change and answers REQUEST_TIMED_OUT for it
 * (librdkafka, whose default is not to wait, reads that as success), and one
 * whose change outlasts timeout_ms gets REQUEST_TIMED_OUT while the change
 * goes on. Partitions are only ever added.
 */
export async function handleCreatePartitions(door: AccountDoor, { conn, r, w }: RequestContext): Promise<boolean> {
  const { topics, timeoutMs, validateOnly } = decodeCreatePartitions(r);
  const deadline = Date.now() + timeoutMs;
  const repeated = repeatedKeys(topics.map((t) => t.name));
  const results: Array<{ name: string } & Outcome> = [];
  for (const t of topics) {
    let outcome =
      repeated.has(t.name)
        ? fail(ErrorCode.INVALID_REQUEST, "Duplicate topic in request.")
        : !mayManageTopic(conn.permissions, "UPDATE", t.name)
          ? fail(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED)
          : growthError(door, t.name, t.count, t.assignments);
    // Refused as the growth would be for the account's limits (Kafka applies its policies to a validation).
    if (outcome === null && validateOnly) outcome = growthLimitError(door, t.name, t.count);
    if (outcome === null && !validateOnly) {
      const growth = growTopic(door, t.name, t.count);
      if (timeoutMs <= 0) {
        const done = await growth;
        outcome = done.error !== ErrorCode.NONE ? done : fail(ErrorCode.REQUEST_TIMED_OUT, "timeout_ms is 0: the partitions are added without waiting");
      } else {
        outcome = await raceDeadline(growth, deadline, fail(ErrorCode.REQUEST_TIMED_OUT, `the partitions were not added within ${timeoutMs} ms; they still are being added`));
      }
    }
    results.push({ name: t.name, ...(outcome ?? ok) });
  }
  w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => w.string(t.name).i16(t.error).nullableString(t.message).taggedFields());
  w.taggedFields();
  return true;
}

/** `work`'s outcome, or `late` if the deadline passes first (the work goes on). */
function raceDeadline(work: Promise<Outcome>, deadline: number, late: Outcome): Promise<Outcome> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(late), Math.max(0, deadline - Date.now()));
    void work.then((outcome) => {
      clearTimeout(timer);
      resolve(outcome);
    });
  });
}

/**
 * DeleteRecords v0–2 (v2 flexible): each partition's records below the offset are purged
 * (offset -1: the high watermark), and the answer carries the new low
 * watermark. An offset past the high watermark is OFFSET_OUT_OF_RANGE, as in
 * Kafka. One replica holds the records, so the purge is done when the
 * answer goes: timeout_ms has nothing to wait for.
 */
export async function handleDeleteRecords(door: AccountDoor, { conn, r, w }: RequestContext): Promise<boolean> {
  const { topics } = decodeDeleteRecords(r);
  const results: Array<{ name: string; partitions: Array<{ index: number; low: number; error: number }> }> = [];
  for (const t of topics) {
    const partitions = [];
    for (const p of t.partitions) {
      const led = ledPartition(door, t.name, p.index);
      const stream = typeof led === "number" ? undefined : led;
      const log = stream?.partitions[p.index];
      let error: number = ErrorCode.NONE;
      let low = -1;
      if (typeof led === "number") error = led;
      else if (stream === undefined || log === undefined) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      else if (!mayManageTopic(conn.permissions, "PURGE", t.name)) error = ErrorCode.TOPIC_AUTHORIZATION_FAILED;
      // As Kafka's Partition.deleteRecordsOnLeader: records are deleted only under a policy that deletes (a compacted
      // topic's log start never moves).
      else if (!deletesRecords(stream.config.metadata)) error = ErrorCode.POLICY_VIOLATION;
      else {
        const hwm = stream.replicatedSeq(p.index);
        const offset = p.offset === -1 ? hwm : p.offset;
        if (offset < 0 || offset > hwm) error = ErrorCode.OFFSET_OUT_OF_RANGE;
        else if (stream.config.sealed || stream.config.deny_purge) error = ErrorCode.POLICY_VIOLATION;
        else {
          try {
            // Offsets below `offset` are the sequences below offset + 1.
            if (offset > log.state().firstSeq - 1) await stream.purgePartition(p.index, offset + 1);
            low = log.state().firstSeq - 1;
          } catch (err) {
            door.log.error(`kafka: deleting records of ${t.name}/${p.index} failed: ${(err as Error).message}`);
            error = ErrorCode.KAFKA_STORAGE_ERROR;
          }
        }
      }
      partitions.push({ index: p.index, low, error });
    }
    results.push({ name: t.name, partitions });
  }
  w.i32(0); // throttle_time_ms
  w.array(results, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => w.i32(p.index).i64(p.low).i16(p.error).taggedFields());
    w.taggedFields();
  });
  w.taggedFields();
  return true;
}

/**
 * DescribeLogDirs: the copies of topics this broker holds (led here or
 * followed), each partition's stored bytes, in one log directory, the
 * account's store (v4: with its file system's size and free space). Kafka
 * asks for DESCRIBE on the cluster, which nagare's permissions have no
 * resource for: a topic the client may not describe is left out, as are
 * partitions not held here and topics unknown, as Kafka leaves them out
 * (from 3.8, KAFKA-16807: 3.5 also lists every topic held that was not
 * asked for, with no partitions).
 * The offset lag, Kafka's max(0, high watermark - log end) for a current
 * log, is 0 here as there (no copy here is ahead of what it has).
 */
export async function handleDescribeLogDirs(door: AccountDoor, { conn, version, r, w }: RequestContext): Promise<boolean> {
  const { topics: asked } = decodeDescribeLogDirs(r);
  const cluster = door.door.cluster;
  const wanted = asked === null ? null : partitionsByTopic(asked);
  const topics: Array<{ name: string; partitions: Array<{ index: number; bytes: number }> }> = [];
  for (const stream of door.js.streams.values()) {
    const name = topicOf(stream);
    const only = wanted === null ? undefined : wanted.get(name);
    if (wanted !== null && only === undefined) continue;
    if (!mayDescribeTopic(conn.permissions, stream)) continue;
    const placed = cluster?.topic(door.account, stream.config.name);
    const partitions = [];
    for (let i = 0; i < stream.partitions.length; i++) {
      if (only !== undefined && !only.has(i)) continue;
      // In a cluster a node holds the partitions it leads or follows; a stream it holds unplaced (adopted at start) is all here.
      if (placed !== undefined && placed.topic === name && !(placed.local[i] || (placed.replicas[i]?.includes(cluster!.nodeId) ?? false))) continue;
      partitions.push({ index: i, bytes: stream.partitions[i].state().bytes });
    }
    if (partitions.length > 0) topics.push({ name, partitions });
  }
  topics.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const dir = resolve(door.js.options.storeDir);
  let totalBytes = -1;
  let usableBytes = -1;
  if (version >= 4) {
    try {
      const st = await statfs(dir);
      totalBytes = st.blocks * st.bsize;
      usableBytes = st.bavail * st.bsize;
    } catch {
      // Unknown: Kafka's -1.
    }
  }
  w.i32(0); // throttle_time_ms
  if (version >= 3) w.i16(ErrorCode.NONE);
  w.arrayLength(1);
  w.i16(ErrorCode.NONE).string(dir);
  w.array(topics, (w, t) => {
    w.string(t.name);
    w.array(t.partitions, (w, p) => {
      w.i32(p.index).i64(p.bytes).i64(0).bool(false); // offset_lag, is_future_key
      w.taggedFields();
    });
    w.taggedFields();
  });
  if (version >= 4) w.i64(totalBytes).i64(usableBytes);
  w.taggedFields();
  w.taggedFields();
  return true;
}
