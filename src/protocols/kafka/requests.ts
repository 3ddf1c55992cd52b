/**
 * Request decoders: the request header and each API's body, from bytes to
 * plain values, apart from what the handlers then do with them, so that
 * every decoder can be fuzzed on its own (test/kafka-fuzz.test.ts, with
 * frames captured from KafkaJS and librdkafka as golden bytes).
 *
 * A decoder reads through the bounded `Reader`: a frame that lies about a
 * length throws KafkaDecodeError, and no array is sized by a count before
 * the bytes for it are known to be there. Field names follow Kafka's
 * message definitions (clients/src/main/resources/common/message/*.json).
 */

import { KafkaDecodeError, Reader, ZERO_UUID } from "./codec.js";
import { API_VERSIONS, ApiKey, isFlexible } from "./api.js";

export interface RequestHeader {
  apiKey: number;
  version: number;
  correlationId: number;
  /** Null also when the version is unknown: the rest of the header is then not read. */
  clientId: string | null;
  /** False for a version (or an API) nagare does not answer. */
  supported: boolean;
  /** Positioned at the request body. */
  r: Reader;
}

/** Request header v1 (v2, with tagged fields, for flexible versions). */
export function decodeRequestHeader(frame: Buffer): RequestHeader {
  const r = new Reader(frame);
  const apiKey = r.i16();
  const version = r.i16();
  const correlationId = r.i32();
  const range = API_VERSIONS.get(apiKey);
  const supported = range !== undefined && version >= range[0] && version <= range[1];
  let clientId: string | null = null;
  if (supported) {
    clientId = r.nullableString();
    r.flexible = isFlexible(apiKey, version);
    r.taggedFields();
  }
  return { apiKey, version, correlationId, clientId, supported, r };
}

/** An array of strings where null (-1) means "all" (Metadata, DescribeConfigs keys, OffsetFetch); compact in a flexible version. */
function nullableStrings(r: Reader): string[] | null {
  const n = r.arrayLength();
  if (n < 0) return null;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r.string());
  return out;
}

/** A copy of bytes that may not be null, for what outlives the request. */
function ownedBytes(r: Reader): Buffer {
  return Buffer.from(r.bytes());
}

// ---- Produce (0) v0–9 (v0–2 carry message formats v0/v1, which are refused; v9 is flexible) ----

export interface ProduceRequest {
  transactionalId: string | null;
  acks: number;
  timeoutMs: number;
  /** Record sets are views of the frame. */
  topics: Array<{ name: string; partitions: Array<{ index: number; records: Buffer | null }> }>;
}

export function decodeProduce(r: Reader, version: number): ProduceRequest {
  const transactionalId = version >= 3 ? r.nullableString() : null;
  const acks = r.i16();
  const timeoutMs = r.i32();
  const topics = r.structs((r) => {
    const name = r.string();
    const partitions = r.structs((r) => ({ index: r.i32(), records: r.nullableBytes() }));
    return { name, partitions };
  });
  r.taggedFields();
  return { transactionalId, acks, timeoutMs, topics };
}

// ---- Fetch (1) v4–15 (v12 flexible; v13 names topics by id; v15 drops replica_id) ----

export interface FetchRequest {
  maxWaitMs: number;
  minBytes: number;
  maxBytes: number;
  isolationLevel: number;
  /**
   * `name` before v13, `id` (32 hex digits) from v13; `currentLeaderEpoch`
   * (v9+, KIP-320): the leader epoch the client knows, -1 when it knows none
   * (checked only when ≥ 0).
   */
  topics: Array<{ name: string; id: string | null; partitions: Array<{ index: number; currentLeaderEpoch: number; offset: number; maxBytes: number }> }>;
}

export function decodeFetch(r: Reader, version: number): FetchRequest {
  if (version < 15) r.i32(); // replica_id (consumers: -1)
  const maxWaitMs = r.i32();
  const minBytes = r.i32();
  const maxBytes = r.i32();
  const isolationLevel = r.i8();
  if (version >= 7) {
    r.i32(); // session_id: sessions are not kept, every fetch is a full one
    r.i32(); // session_epoch
  }
  const topics = r.structs((r) => {
    const id = version >= 13 ? r.uuid() : null;
    const name = version >= 13 ? "" : r.string();
    const partitions = r.structs((r) => {
      const index = r.i32();
      const currentLeaderEpoch = version >= 9 ? r.i32() : -1;
      const offset = r.i64();
      if (version >= 12) r.i32(); // last_fetched_epoch (followers' divergence check; consumers validate with OffsetForLeaderEpoch)
      if (version >= 5) r.i64(); // log_start_offset (followers only)
      const p = { index, currentLeaderEpoch, offset, maxBytes: r.i32() };
      return p;
    });
    return { name, id, partitions };
  });
  if (version >= 7)
    r.array((r) => {
      if (version >= 13) r.uuid();
      else r.string();
      r.array((r) => r.i32());
      r.taggedFields();
    }); // forgotten_topics_data
  if (version >= 11) r.string(); // rack_id
  r.taggedFields();
  return { maxWaitMs, minBytes, maxBytes, isolationLevel, topics };
}

// ---- ListOffsets (2) v0–6 (v4 adds leader epochs, KIP-320; v6 is flexible) ----

export interface ListOffsetsRequest {
  isolationLevel: number;
  /** `currentLeaderEpoch` (v4+): the leader epoch the client knows, -1 when it knows none. */
  topics: Array<{ name: string; partitions: Array<{ index: number; currentLeaderEpoch: number; timestamp: number }> }>;
}

export function decodeListOffsets(r: Reader, version: number): ListOffsetsRequest {
  r.i32(); // replica_id
  const isolationLevel = version >= 2 ? r.i8() : 0;
  const topics = r.structs((r) => {
    const name = r.string();
    const partitions = r.structs((r) => {
      const index = r.i32();
      const currentLeaderEpoch = version >= 4 ? r.i32() : -1;
      const timestamp = r.i64();
      if (version === 0) r.i32(); // max_num_offsets
      return { index, currentLeaderEpoch, timestamp };
    });
    return { name, partitions };
  });
  r.taggedFields();
  return { isolationLevel, topics };
}

// ---- OffsetForLeaderEpoch (23) v0–4 (v2 adds the current leader epoch, v3 the replica id; v4 is flexible) ----

export interface OffsetForLeaderEpochRequest {
  /** `currentLeaderEpoch` (v2+): the leader epoch the client knows, -1 when it knows none; `leaderEpoch`: the one to look up. */
  topics: Array<{ name: string; partitions: Array<{ index: number; currentLeaderEpoch: number; leaderEpoch: number }> }>;
}

export function decodeOffsetForLeaderEpoch(r: Reader, version: number): OffsetForLeaderEpochRequest {
  if (version >= 3) r.i32(); // replica_id
  const topics = r.structs((r) => {
    const name = r.string();
    const partitions = r.structs((r) => {
      const index = r.i32();
      const currentLeaderEpoch = version >= 2 ? r.i32() : -1;
      const leaderEpoch = r.i32();
      return { index, currentLeaderEpoch, leaderEpoch };
    });
    return { name, partitions };
  });
  r.taggedFields();
  return { topics };
}

// ---- DescribeLogDirs (35) v0–4 (v2 is flexible; v3 and v4 add fields to the answer only) ----

export interface DescribeLogDirsRequest {
  /** null: every topic. */
  topics: Array<{ name: string; partitions: number[] }> | null;
}

export function decodeDescribeLogDirs(r: Reader): DescribeLogDirsRequest {
  const topics = nullableTopicPartitions(r);
  r.taggedFields();
  return { topics };
}

/** The partitions asked for by topic, a topic named twice getting those of both (DescribeLogDirs, ElectLeaders ask for sets). */
export function partitionsByTopic(topics: ReadonlyArray<{ name: string; partitions: readonly number[] }>): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const t of topics) {
    let set = out.get(t.name);
    if (set === undefined) out.set(t.name, (set = new Set()));
    for (const p of t.partitions) set.add(p);
  }
  return out;
}

/** The keys named more than once in a request (Kafka refuses or answers those once: CreateTopics, CreatePartitions, AlterConfigs). */
export function repeatedKeys(keys: Iterable<string>): Set<string> {
  const once = new Set<string>();
  const again = new Set<string>();
  for (const k of keys) (once.has(k) ? again : once).add(k);
  return again;
}

/** A nullable array of topics, each with its partition indexes (and its tagged fields): null names every topic. */
function nullableTopicPartitions(r: Reader): Array<{ name: string; partitions: number[] }> | null {
  const n = r.arrayLength();
  if (n < 0) return null;
  const topics = [];
  for (let i = 0; i < n; i++) {
    const name = r.string();
    const partitions = r.array((r) => r.i32());
    r.taggedFields();
    topics.push({ name, partitions });
  }
  return topics;
}

// ---- DescribeProducers (61) v0 (flexible) ----

export function decodeDescribeProducers(r: Reader): { topics: Array<{ name: string; partitions: number[] }> } {
  const topics = r.structs((r) => ({ name: r.string(), partitions: r.array((r) => r.i32()) }));
  r.taggedFields();
  return { topics };
}

// ---- DescribeTransactions (65) v0 and ListTransactions (66) v0–1 (flexible from v0; ListTransactions v1 adds a duration filter) ----

export function decodeDescribeTransactions(r: Reader): { transactionalIds: string[] } {
  const transactionalIds = r.array((r) => r.string());
  r.taggedFields();
  return { transactionalIds };
}

export interface ListTransactionsRequest {
  states: string[];
  producerIds: number[];
  /** Only transactions running longer than this (ms); -1: every one. */
  durationMs: number;
}

export function decodeListTransactions(r: Reader, version: number): ListTransactionsRequest {
  const states = r.array((r) => r.string());
  const producerIds = r.array((r) => r.i64());
  const durationMs = version >= 1 ? r.i64() : -1;
  r.taggedFields();
  return { states, producerIds, durationMs };
}

// ---- DescribeClientQuotas (48) v0–1 (v1 is flexible) ----

export interface DescribeClientQuotasRequest {
  /** match_type: 0 exact (match names the entity), 1 the default entity, 2 any entity named (match null for both). */
  components: Array<{ entityType: string; matchType: number; match: string | null }>;
  strict: boolean;
}

export function decodeDescribeClientQuotas(r: Reader): DescribeClientQuotasRequest {
  const components = r.structs((r) => ({ entityType: r.string(), matchType: r.i8(), match: r.nullableString() }));
  const strict = r.bool();
  r.taggedFields();
  return { components, strict };
}

// ---- ElectLeaders (43) v0–2 (v1 adds the election type, KIP-460; v2 is flexible) ----

export interface ElectLeadersRequest {
  /** 0: the preferred replica; 1: unclean (v0: preferred). */
  electionType: number;
  /** null: every partition. */
  topics: Array<{ name: string; partitions: number[] }> | null;
  timeoutMs: number;
}

export function decodeElectLeaders(r: Reader, version: number): ElectLeadersRequest {
  const electionType = version >= 1 ? r.i8() : 0;
  const topics = nullableTopicPartitions(r);
  const timeoutMs = r.i32();
  r.taggedFields();
  return { electionType, topics, timeoutMs };
}

// ---- Metadata (3) v0–12 (v7 asks as v4–6 do; its answer adds each partition's leader epoch; v9 is flexible; v10 adds topic ids) ----

export interface MetadataRequest {
  /** Null: every topic (v0 says so with an empty list). */
  topics: string[] | null;
  /** v12+: topics asked for by id alone (their name null), as 32 hex digits. */
  topicIds: string[];
  /** v10–11: topics asked for by id, which Kafka refuses in those versions (their names, "" for none). */
  refused: string[];
  allowAutoTopicCreation: boolean;
}

export function decodeMetadata(r: Reader, version: number): MetadataRequest {
  const n = r.arrayLength();
  if (n < 0 && version < 1) throw new KafkaDecodeError("Metadata v0: a null topic list (all topics is the empty one)");
  let topics: string[] | null = null;
  const topicIds: string[] = [];
  const refused: string[] = [];
  if (n >= 0) {
    topics = [];
    for (let i = 0; i < n; i++) {
      const id = version >= 10 ? r.uuid() : ZERO_UUID;
      const name = version >= 10 ? r.nullableString() : r.string();
      r.taggedFields();
      // "Topic IDs are not supported for versions 10 and 11" (Kafka): their answers cannot carry a null name.
      if (version < 12 && (name === null || id !== ZERO_UUID)) refused.push(name ?? "");
      else if (name !== null) topics.push(name);
      else topicIds.push(id);
    }
  }
  if (version === 0 && topics !== null && topics.length === 0) topics = null;
  const allowAutoTopicCreation = version < 4 || r.bool();
  if (version >= 8 && version <= 10) r.bool(); // include_cluster_authorized_operations: not computed
  if (version >= 8) r.bool(); // include_topic_authorized_operations: not computed
  r.taggedFields();
  return { topics, topicIds, refused, allowAutoTopicCreation };
}

// ---- OffsetCommit (8) v0–8 (v8 flexible) ----

export interface OffsetCommitRequest {
  groupId: string;
  generation: number;
  memberId: string;
  instanceId: string | null;
  topics: Array<{ name: string; partitions: Array<{ index: number; offset: number; leaderEpoch: number; metadata: string | null }> }>;
}

export function decodeOffsetCommit(r: Reader, version: number): OffsetCommitRequest {
  const groupId = r.string();
  const generation = version >= 1 ? r.i32() : -1;
  const memberId = version >= 1 ? r.string() : "";
  const instanceId = version >= 7 ? r.nullableString() : null;
  if (version >= 2 && version <= 4) r.i64(); // retention_time_ms: committed offsets are kept until the group or topic goes
  const topics = r.structs((r) => {
    const name = r.string();
    const partitions = r.structs((r) => {
      const index = r.i32();
      const offset = r.i64();
      const leaderEpoch = version >= 6 ? r.i32() : -1; // committed_leader_epoch
      if (version === 1) r.i64(); // commit_timestamp
      const metadata = r.nullableString();
      return { index, offset, leaderEpoch, metadata };
    });
    return { name, partitions };
  });
  r.taggedFields();
  return { groupId, generation, memberId, instanceId, topics };
}

// ---- OffsetFetch (9) v0–8 (v6+ flexible; v8 asks for several groups at once) ----

/** The partitions asked of one group; topics null (v2+): every committed offset of the group. */
export interface OffsetFetchGroup {
  groupId: string;
  topics: Array<{ name: string; partitions: number[] }> | null;
}

export interface OffsetFetchRequest {
  /** One group before v8. */
  groups: OffsetFetchGroup[];
  /** v7 (KIP-447): a partition whose offset an open transaction holds is answered UNSTABLE_OFFSET_COMMIT. */
  requireStable: boolean;
}

function offsetFetchTopics(r: Reader, version: number): OffsetFetchGroup["topics"] {
  const n = r.arrayLength();
  if (n < 0 && version < 2) throw new KafkaDecodeError(`OffsetFetch v${version}: a null topic list (all topics came in v2)`);
  if (n < 0) return null;
  const topics: NonNullable<OffsetFetchGroup["topics"]> = [];
  for (let i = 0; i < n; i++) {
    const name = r.string();
    topics.push({ name, partitions: r.array((r) => r.i32()) });
    r.taggedFields();
  }
  return topics;
}

export function decodeOffsetFetch(r: Reader, version: number): OffsetFetchRequest {
  const groups =
    version >= 8
      ? r.structs((r): OffsetFetchGroup => {
          const groupId = r.string();
          const topics = offsetFetchTopics(r, version);
          return { groupId, topics };
        })
      : [{ groupId: r.string(), topics: offsetFetchTopics(r, version) }];
  const requireStable = version >= 7 && r.bool();
  r.taggedFields();
  return { groups, requireStable };
}

// ---- FindCoordinator (10) v0–4 (v3 is flexible; v4 asks for many keys) ----

export const KEY_TYPE_GROUP = 0;
export const KEY_TYPE_TRANSACTION = 1;

export interface FindCoordinatorRequest {
  /** One key before v4; v4 asks for several of one type at once. */
  keys: string[];
  keyType: number;
}

export function decodeFindCoordinator(r: Reader, version: number): FindCoordinatorRequest {
  const key = version < 4 ? r.string() : null;
  const keyType = version >= 1 ? r.i8() : KEY_TYPE_GROUP;
  const keys = key !== null ? [key] : r.array((r) => r.string());
  r.taggedFields();
  return { keys, keyType };
}

// ---- JoinGroup (11) v0–9, SyncGroup (14) v0–5, Heartbeat (12) v0–4, LeaveGroup (13) v0–5 (flexible from v6, v4, v4, v4) ----

export interface JoinGroupRequest {
  groupId: string;
  sessionTimeoutMs: number;
  rebalanceTimeoutMs: number;
  memberId: string;
  instanceId: string | null;
  protocolType: string;
  /** [name, metadata]; metadata copied, as the group keeps it. */
  protocols: Array<[string, Buffer]>;
  /** v8+ (KIP-800): why the member (re)joins, for the log. */
  reason: string | null;
}

export function decodeJoinGroup(r: Reader, version: number): JoinGroupRequest {
  const groupId = r.string();
  const sessionTimeoutMs = r.i32();
  const rebalanceTimeoutMs = version >= 1 ? r.i32() : sessionTimeoutMs;
  const memberId = r.string();
  const instanceId = version >= 5 ? r.nullableString() : null;
  const protocolType = r.string();
  const protocols = r.structs((r): [string, Buffer] => [r.string(), ownedBytes(r)]);
  const reason = version >= 8 ? r.nullableString() : null;
  r.taggedFields();
  return { groupId, sessionTimeoutMs, rebalanceTimeoutMs, memberId, instanceId, protocolType, protocols, reason };
}

export interface SyncGroupRequest {
  groupId: string;
  generation: number;
  memberId: string;
  instanceId: string | null;
  /** v5+ (KIP-559): the group's protocol type and name as the member knows them; null when not given (and before v5). */
  protocolType: string | null;
  protocolName: string | null;
  /** [member id, assignment]; assignments copied. */
  assignments: Array<[string, Buffer]>;
}

export function decodeSyncGroup(r: Reader, version: number): SyncGroupRequest {
  const groupId = r.string();
  const generation = r.i32();
  const memberId = r.string();
  const instanceId = version >= 3 ? r.nullableString() : null;
  const protocolType = version >= 5 ? r.nullableString() : null;
  const protocolName = version >= 5 ? r.nullableString() : null;
  const assignments = r.structs((r): [string, Buffer] => [r.string(), ownedBytes(r)]);
  r.taggedFields();
  return { groupId, generation, memberId, instanceId, protocolType, protocolName, assignments };
}

export interface HeartbeatRequest {
  groupId: string;
  generation: number;
  memberId: string;
  instanceId: string | null;
}

export function decodeHeartbeat(r: Reader, version: number): HeartbeatRequest {
  const groupId = r.string();
  const generation = r.i32();
  const memberId = r.string();
  const instanceId = version >= 3 ? r.nullableString() : null;
  r.taggedFields();
  return { groupId, generation, memberId, instanceId };
}

export interface LeaveGroupRequest {
  groupId: string;
  /** `reason` (v5+, KIP-800): why the member leaves, for the log. */
  members: Array<{ memberId: string; instanceId: string | null; reason: string | null }>;
}

export function decodeLeaveGroup(r: Reader, version: number): LeaveGroupRequest {
  const groupId = r.string();
  const members =
    version >= 3
      ? r.structs((r) => {
          const memberId = r.string();
          const instanceId = r.nullableString();
          const reason = version >= 5 ? r.nullableString() : null;
          return { memberId, instanceId, reason };
        })
      : [{ memberId: r.string(), instanceId: null, reason: null }];
  r.taggedFields();
  return { groupId, members };
}

// ---- DescribeGroups (15) v0–5 (v5 flexible), ListGroups (16) v0–4 (v3 flexible) ----

export interface DescribeGroupsRequest {
  groupIds: string[];
  includeAuthorizedOperations: boolean;
}

export function decodeDescribeGroups(r: Reader, version: number): DescribeGroupsRequest {
  const groupIds = r.array((r) => r.string());
  const includeAuthorizedOperations = version >= 3 && r.bool();
  r.taggedFields();
  return { groupIds, includeAuthorizedOperations };
}

export interface ListGroupsRequest {
  /** v4+ (KIP-518): the group states to list (empty: every group); none before v4. */
  statesFilter: string[];
}

export function decodeListGroups(r: Reader, version: number): ListGroupsRequest {
  const statesFilter = version >= 4 ? r.array((r) => r.string()) : [];
  r.taggedFields();
  return { statesFilter };
}

// ---- ApiVersions (18) v0–3 ----

export interface ApiVersionsRequest {
  clientSoftwareName: string | null;
  clientSoftwareVersion: string | null;
}

export function decodeApiVersions(r: Reader, version: number): ApiVersionsRequest {
  if (version < 3) return { clientSoftwareName: null, clientSoftwareVersion: null };
  const clientSoftwareName = r.compactString();
  const clientSoftwareVersion = r.compactString();
  r.tags();
  return { clientSoftwareName, clientSoftwareVersion };
}

// ---- CreateTopics (19) v0–7, DeleteTopics (20) v0–6, DescribeConfigs (32) v0–4 (flexible from v5, v4, v4) ----

export interface CreateTopicsRequest {
  topics: Array<{
    name: string;
    partitions: number;
    replication: number;
    assignments: Array<{ partition: number; brokers: number[] }>;
    configs: Map<string, string | null>;
  }>;
  timeoutMs: number;
  validateOnly: boolean;
}

/** v5–7 are flexible; v6 and v7 ask as v5 does (they differ in the answer). */
export function decodeCreateTopics(r: Reader, version: number): CreateTopicsRequest {
  const topics = r.array((r) => {
    const name = r.string();
    const partitions = r.i32();
    const replication = r.i16();
    const assignments = r.structs((r) => {
      const partition = r.i32();
      const brokers = r.array((r) => r.i32());
      return { partition, brokers };
    });
    const configs = new Map<string, string | null>();
    r.array((r) => {
      configs.set(r.string(), r.nullableString());
      r.taggedFields();
    });
    r.taggedFields();
    return { name, partitions, replication, assignments, configs };
  });
  const timeoutMs = r.i32();
  const validateOnly = version >= 1 && r.bool();
  r.taggedFields();
  return { topics, timeoutMs, validateOnly };
}

export interface DeleteTopicsRequest {
  /** By name, or (v6) by topic id with a null name; the id is all zeros when the request names none. */
  topics: Array<{ name: string | null; topicId: string }>;
  timeoutMs: number;
}

/** v4+ flexible; v6 names each topic by name or by id. */
export function decodeDeleteTopics(r: Reader, version: number): DeleteTopicsRequest {
  const topics =
    version >= 6
      ? r.structs((r) => {
          const name = r.nullableString();
          const topicId = r.uuid();
          return { name, topicId };
        })
      : r.array((r) => ({ name: r.string() as string | null, topicId: ZERO_UUID }));
  const timeoutMs = r.i32();
  r.taggedFields();
  return { topics, timeoutMs };
}

export interface DescribeConfigsRequest {
  /** keys null: every config of the resource. */
  resources: Array<{ type: number; name: string; keys: string[] | null }>;
  includeSynonyms: boolean;
  /** v3+: each config's documentation is asked for. */
  includeDocumentation: boolean;
}

export function decodeDescribeConfigs(r: Reader, version: number): DescribeConfigsRequest {
  const resources = r.structs((r) => ({ type: r.i8(), name: r.string(), keys: nullableStrings(r) }));
  const includeSynonyms = version >= 1 && r.bool();
  const includeDocumentation = version >= 3 && r.bool();
  r.taggedFields();
  return { resources, includeSynonyms, includeDocumentation };
}

// ---- DeleteRecords (21) v0–2, CreatePartitions (37) v0–3 (flexible from v2 both) ----

export interface DeleteRecordsRequest {
  topics: Array<{ name: string; partitions: Array<{ index: number; offset: number }> }>;
  timeoutMs: number;
}

export function decodeDeleteRecords(r: Reader): DeleteRecordsRequest {
  const topics = r.structs((r) => {
    const name = r.string();
    const partitions = r.structs((r) => ({ index: r.i32(), offset: r.i64() }));
    return { name, partitions };
  });
  const timeoutMs = r.i32();
  r.taggedFields();
  return { topics, timeoutMs };
}

export interface CreatePartitionsRequest {
  /** assignments: the brokers of each new partition, or null to let the broker place them. */
  topics: Array<{ name: string; count: number; assignments: number[][] | null }>;
  timeoutMs: number;
  validateOnly: boolean;
}

export function decodeCreatePartitions(r: Reader): CreatePartitionsRequest {
  const topics = r.structs((r) => {
    const name = r.string();
    const count = r.i32();
    const n = r.arrayLength();
    let assignments: number[][] | null = null;
    if (n >= 0) {
      assignments = [];
      for (let i = 0; i < n; i++) {
        assignments.push(r.array((r) => r.i32()));
        r.taggedFields();
      }
    }
    return { name, count, assignments };
  });
  const timeoutMs = r.i32();
  const validateOnly = r.bool();
  r.taggedFields();
  return { topics, timeoutMs, validateOnly };
}

// ---- AlterConfigs (33) v0–2, IncrementalAlterConfigs (44) v0–1 (flexible from v2, v1) ----

/** IncrementalAlterConfigs' operations; AlterConfigs sets every config it names. */
export const ConfigOp = { SET: 0, DELETE: 1, APPEND: 2, SUBTRACT: 3 } as const;

export interface AlterConfigsRequest {
  /** Configs in request order, repeats kept (a repeated name is refused). */
  resources: Array<{ type: number; name: string; configs: Array<{ name: string; op: number; value: string | null }> }>;
  validateOnly: boolean;
}

function decodeAlter(r: Reader, incremental: boolean): AlterConfigsRequest {
  const resources = r.structs((r) => {
    const type = r.i8();
    const name = r.string();
    const configs = r.structs((r) => ({ name: r.string(), op: incremental ? r.i8() : ConfigOp.SET, value: r.nullableString() }));
    return { type, name, configs };
  });
  const validateOnly = r.bool();
  r.taggedFields();
  return { resources, validateOnly };
}

export function decodeAlterConfigs(r: Reader): AlterConfigsRequest {
  return decodeAlter(r, false);
}

export function decodeIncrementalAlterConfigs(r: Reader): AlterConfigsRequest {
  return decodeAlter(r, true);
}

// ---- DeleteGroups (42) v0–2 (v2 flexible), OffsetDelete (47) v0 ----

export interface DeleteGroupsRequest {
  groupIds: string[];
}

export function decodeDeleteGroups(r: Reader): DeleteGroupsRequest {
  const groupIds = r.array((r) => r.string());
  r.taggedFields();
  return { groupIds };
}

export interface OffsetDeleteRequest {
  groupId: string;
  topics: Array<{ name: string; partitions: number[] }>;
}

export function decodeOffsetDelete(r: Reader): OffsetDeleteRequest {
  const groupId = r.string();
  return { groupId, topics: r.array((r) => ({ name: r.string(), partitions: r.array((r) => r.i32()) })) };
}

// ---- DescribeCluster (60) v0, flexible ----

export interface DescribeClusterRequest {
  includeClusterAuthorizedOperations: boolean;
}

export function decodeDescribeCluster(r: Reader): DescribeClusterRequest {
  const includeClusterAuthorizedOperations = r.bool();
  r.tags();
  return { includeClusterAuthorizedOperations };
}

// ---- InitProducerId (22) v0–4 (v2 is flexible; v3 names the producer, KIP-360) and the transaction APIs (24, 25, 26 v0–3, flexible from v3; 28) ----

export interface InitProducerIdRequest {
  transactionalId: string | null;
  transactionTimeoutMs: number;
  /** v3+: the producer's current id and epoch, -1 when it has none. */
  producerId: number;
  epoch: number;
}

export function decodeInitProducerId(r: Reader, version: number): InitProducerIdRequest {
  const transactionalId = r.nullableString();
  const transactionTimeoutMs = r.i32();
  // v3+ (KIP-360): the producer's own id and epoch when it has them (-1, -1 when new).
  const producerId = version >= 3 ? r.i64() : -1;
  const epoch = version >= 3 ? r.i16() : -1;
  r.taggedFields();
  return { transactionalId, transactionTimeoutMs, producerId, epoch };
}

/** The producer a transaction request speaks for. */
export interface TxnProducer {
  transactionalId: string;
  producerId: number;
  epoch: number;
}

function txnProducer(r: Reader): TxnProducer {
  const transactionalId = r.string();
  const producerId = r.i64();
  const epoch = r.i16();
  return { transactionalId, producerId, epoch };
}

export interface AddPartitionsToTxnRequest extends TxnProducer {
  topics: Array<{ name: string; partitions: number[] }>;
}

export function decodeAddPartitionsToTxn(r: Reader): AddPartitionsToTxnRequest {
  const producer = txnProducer(r);
  const topics = r.structs((r) => ({ name: r.string(), partitions: r.array((r) => r.i32()) }));
  r.taggedFields();
  return { ...producer, topics };
}

export interface AddOffsetsToTxnRequest extends TxnProducer {
  groupId: string;
}

export function decodeAddOffsetsToTxn(r: Reader): AddOffsetsToTxnRequest {
  const producer = txnProducer(r);
  const groupId = r.string();
  r.taggedFields();
  return { ...producer, groupId };
}

export interface EndTxnRequest extends TxnProducer {
  commit: boolean;
}

export function decodeEndTxn(r: Reader): EndTxnRequest {
  const producer = txnProducer(r);
  const commit = r.bool();
  r.taggedFields();
  return { ...producer, commit };
}

export interface TxnOffsetCommitRequest extends TxnProducer {
  groupId: string;
  /** v3+ (KIP-447): the consumer whose offsets these are; -1, "" and null before. */
  generation: number;
  memberId: string;
  instanceId: string | null;
  topics: Array<{ name: string; partitions: Array<{ index: number; offset: number; leaderEpoch: number; metadata: string | null }> }>;
}

/** v0–3; v3 is flexible and names the consumer (KIP-447). */
export function decodeTxnOffsetCommit(r: Reader, version: number): TxnOffsetCommitRequest {
  const flexible = version >= 3;
  const text = (r: Reader): string => (flexible ? r.compactString() : r.string());
  const transactionalId = text(r);
  const groupId = text(r);
  const producerId = r.i64();
  const epoch = r.i16();
  let generation = -1;
  let memberId = "";
  let instanceId: string | null = null;
  if (version >= 3) {
    generation = r.i32();
    memberId = r.compactString();
    instanceId = r.compactNullableString();
  }
  const topics = r.array((r) => {
    const name = text(r);
    const partitions = r.array((r) => {
      const index = r.i32();
      const offset = r.i64();
      const leaderEpoch = version >= 2 ? r.i32() : -1; // committed_leader_epoch
      const metadata = flexible ? r.compactNullableString() : r.nullableString();
      if (flexible) r.tags();
      return { index, offset, leaderEpoch, metadata };
    }, flexible);
    if (flexible) r.tags();
    return { name, partitions };
  }, flexible);
  if (flexible) r.tags();
  return { transactionalId, groupId, producerId, epoch, generation, memberId, instanceId, topics };
}

// ---- SaslHandshake (17) v1 and SaslAuthenticate (36) v0–2 ----

export function decodeSaslHandshake(r: Reader): { mechanism: string } {
  return { mechanism: r.string() };
}

/** auth_bytes is a view of the frame. */
export function decodeSaslAuthenticate(r: Reader, version: number): { authBytes: Buffer } {
  if (version >= 2) {
    const authBytes = r.compactNullableBytes();
    if (authBytes === null) throw new KafkaDecodeError("null where bytes are required");
    r.tags();
    return { authBytes };
  }
  return { authBytes: r.bytes() };
}

/** Every API's body decoder, by API key: what the fuzz test walks. */
/** An ACL binding or filter as the ACL APIs carry it (v0–3): v1 adds the resource pattern type, v2 is flexible, v3 allows the USER resource type. */
export interface AclEntry {
  resourceType: number;
  resourceName: string | null;
  /** LITERAL (3) in v0, which has no pattern types. */
  patternType: number;
  principal: string | null;
  host: string | null;
  operation: number;
  permissionType: number;
}

const LITERAL_PATTERN = 3;

function decodeAclEntry(r: Reader, version: number): AclEntry {
  const resourceType = r.i8();
  const resourceName = r.nullableString();
  const patternType = version >= 1 ? r.i8() : LITERAL_PATTERN;
  const entry = { resourceType, resourceName, patternType, principal: r.nullableString(), host: r.nullableString(), operation: r.i8(), permissionType: r.i8() };
  r.taggedFields();
  return entry;
}

/** DescribeAcls v0–3: one filter (its fields are the request's, so its tagged fields end the request). */
export function decodeDescribeAcls(r: Reader, version: number): { filter: AclEntry } {
  return { filter: decodeAclEntry(r, version) };
}

/** CreateAcls v0–3: the bindings to create. */
export function decodeCreateAcls(r: Reader, version: number): { creations: AclEntry[] } {
  const creations = r.array((r) => decodeAclEntry(r, version));
  r.taggedFields();
  return { creations };
}

/** DeleteAcls v0–3: the filters whose matches to delete. */
export function decodeDeleteAcls(r: Reader, version: number): { filters: AclEntry[] } {
  const filters = r.array((r) => decodeAclEntry(r, version));
  r.taggedFields();
  return { filters };
}

// ---- AlterPartitionReassignments (45) and ListPartitionReassignments (46) v0: flexible ----

export interface AlterPartitionReassignmentsRequest {
  timeoutMs: number;
  /** Per topic, per partition, the replicas asked for (broker ids), or null to cancel its reassignment. */
  topics: Array<{ name: string; partitions: Array<{ index: number; replicas: number[] | null }> }>;
}

export function decodeAlterPartitionReassignments(r: Reader): AlterPartitionReassignmentsRequest {
  const timeoutMs = r.i32();
  const topics = r.array((r) => {
    const name = r.compactString();
    const partitions = r.array((r) => {
      const index = r.i32();
      const n = r.arrayLength(true);
      let replicas: number[] | null = null;
      if (n >= 0) {
        replicas = [];
        for (let i = 0; i < n; i++) replicas.push(r.i32());
      }
      r.tags();
      return { index, replicas };
    }, true);
    r.tags();
    return { name, partitions };
  }, true);
  r.tags();
  return { timeoutMs, topics };
}

export interface ListPartitionReassignmentsRequest {
  timeoutMs: number;
  /** The partitions asked about by topic, or null: every reassignment under way. */
  topics: Array<{ name: string; partitions: number[] }> | null;
}

export function decodeListPartitionReassignments(r: Reader): ListPartitionReassignmentsRequest {
  const timeoutMs = r.i32();
  const n = r.arrayLength(true);
  let topics: ListPartitionReassignmentsRequest["topics"] = null;
  if (n >= 0) {
    topics = [];
    for (let i = 0; i < n; i++) {
      const name = r.compactString();
      const partitions = r.array((r) => r.i32(), true);
      r.tags();
      topics.push({ name, partitions });
    }
  }
  r.tags();
  return { timeoutMs, topics };
}

export const REQUEST_DECODERS: ReadonlyMap<number, (r: Reader, version: number) => unknown> = new Map<number, (r: Reader, version: number) => unknown>([
  [ApiKey.Produce, decodeProduce],
  [ApiKey.Fetch, decodeFetch],
  [ApiKey.ListOffsets, decodeListOffsets],
  [ApiKey.OffsetForLeaderEpoch, decodeOffsetForLeaderEpoch],
  [ApiKey.DescribeLogDirs, decodeDescribeLogDirs],
  [ApiKey.DescribeClientQuotas, decodeDescribeClientQuotas],
  [ApiKey.ElectLeaders, decodeElectLeaders],
  [ApiKey.DescribeProducers, decodeDescribeProducers],
  [ApiKey.DescribeTransactions, decodeDescribeTransactions],
  [ApiKey.ListTransactions, decodeListTransactions],
  [ApiKey.Metadata, decodeMetadata],
  [ApiKey.OffsetCommit, decodeOffsetCommit],
  [ApiKey.OffsetFetch, decodeOffsetFetch],
  [ApiKey.FindCoordinator, decodeFindCoordinator],
  [ApiKey.JoinGroup, decodeJoinGroup],
  [ApiKey.Heartbeat, decodeHeartbeat],
  [ApiKey.LeaveGroup, decodeLeaveGroup],
  [ApiKey.SyncGroup, decodeSyncGroup],
  [ApiKey.DescribeGroups, decodeDescribeGroups],
  [ApiKey.ListGroups, decodeListGroups],
  [ApiKey.ApiVersions, decodeApiVersions],
  [ApiKey.CreateTopics, decodeCreateTopics],
  [ApiKey.DeleteTopics, decodeDeleteTopics],
  [ApiKey.DescribeConfigs, decodeDescribeConfigs],
  [ApiKey.DeleteRecords, decodeDeleteRecords],
  [ApiKey.CreatePartitions, decodeCreatePartitions],
  [ApiKey.AlterConfigs, decodeAlterConfigs],
  [ApiKey.IncrementalAlterConfigs, decodeIncrementalAlterConfigs],
  [ApiKey.DeleteGroups, decodeDeleteGroups],
  [ApiKey.OffsetDelete, decodeOffsetDelete],
  [ApiKey.DescribeCluster, decodeDescribeCluster],
  [ApiKey.AlterPartitionReassignments, decodeAlterPartitionReassignments],
  [ApiKey.ListPartitionReassignments, decodeListPartitionReassignments],
  [ApiKey.InitProducerId, decodeInitProducerId],
  [ApiKey.AddPartitionsToTxn, decodeAddPartitionsToTxn],
  [ApiKey.AddOffsetsToTxn, decodeAddOffsetsToTxn],
  [ApiKey.EndTxn, decodeEndTxn],
  [ApiKey.TxnOffsetCommit, decodeTxnOffsetCommit],
  [ApiKey.SaslHandshake, decodeSaslHandshake],
  [ApiKey.SaslAuthenticate, decodeSaslAuthenticate],
  [ApiKey.DescribeAcls, decodeDescribeAcls],
  [ApiKey.CreateAcls, decodeCreateAcls],
  [ApiKey.DeleteAcls, decodeDeleteAcls],
]);
