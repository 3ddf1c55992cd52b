/**
 * The Kafka APIs nagare answers, with the version ranges it advertises in
 * ApiVersions. Ranges start low where librdkafka 2.0 looks for an old version
 * before it turns a feature on, and reach the flexible versions (compact
 * types, tagged fields: codec.ts) of Kafka 3.5 that clients which speak
 * nothing older (@platformatic/kafka) need; versions that would bring a
 * feature nagare does not have (KIP-848's group protocol, KIP-890's
 * transaction checks) are not advertised. docs/KAFKA.md lists them all.
 */

import type { Reader, Writer } from "./codec.js";
import type { KafkaConnection } from "./connection.js";

export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ListGroups: 16,
  SaslHandshake: 17,
  ApiVersions: 18,
  CreateTopics: 19,
  DeleteTopics: 20,
  DeleteRecords: 21,
  InitProducerId: 22,
  OffsetForLeaderEpoch: 23,
  AddPartitionsToTxn: 24,
  AddOffsetsToTxn: 25,
  EndTxn: 26,
  TxnOffsetCommit: 28,
  DescribeAcls: 29,
  CreateAcls: 30,
  DeleteAcls: 31,
  DescribeLogDirs: 35,
  SaslAuthenticate: 36,
  DescribeConfigs: 32,
  AlterConfigs: 33,
  CreatePartitions: 37,
  DeleteGroups: 42,
  ElectLeaders: 43,
  IncrementalAlterConfigs: 44,
  AlterPartitionReassignments: 45,
  ListPartitionReassignments: 46,
  OffsetDelete: 47,
  DescribeClientQuotas: 48,
  DescribeCluster: 60,
  DescribeProducers: 61,
  DescribeTransactions: 65,
  ListTransactions: 66,
} as const;

/** API key → [min, max] version supported. */
export const API_VERSIONS = new Map<number, [number, number]>([
  // Produce v3 and Fetch v4 are the first with RecordBatch v2, the only format stored. Produce
  // starts at v0 all the same: librdkafka 2.0 compresses with gzip, snappy or lz4 only when the
  // broker's Produce range includes v0 (else it sends those batches uncompressed); v0–2 requests
  // are answered UNSUPPORTED_FOR_MESSAGE_FORMAT.
  [ApiKey.Produce, [0, 9]],
  [ApiKey.Fetch, [4, 15]],
  [ApiKey.ListOffsets, [0, 7]],
  // Where a leader epoch ends (KIP-320): batches carry the epoch that wrote them (epoch-history.ts).
  [ApiKey.OffsetForLeaderEpoch, [0, 4]],
  [ApiKey.Metadata, [0, 12]],
  // The consumer-group APIs reach their flexible versions (which clients built for Kafka 3.5+ alone send, such as
  // @platformatic/kafka), up to the last before KIP-848's new group protocol (OffsetCommit v9, OffsetFetch v9).
  [ApiKey.OffsetCommit, [0, 8]],
  [ApiKey.OffsetFetch, [0, 8]],
  [ApiKey.FindCoordinator, [0, 4]],
  [ApiKey.JoinGroup, [0, 9]],
  [ApiKey.Heartbeat, [0, 4]],
  [ApiKey.LeaveGroup, [0, 5]],
  [ApiKey.SyncGroup, [0, 5]],
  [ApiKey.DescribeGroups, [0, 5]],
  [ApiKey.ListGroups, [0, 4]],
  [ApiKey.ApiVersions, [0, 3]],
  // Flexible from CreateTopics v5, DeleteTopics v4, DeleteRecords v2, CreatePartitions v2, DescribeConfigs v4,
  // AlterConfigs v2, IncrementalAlterConfigs v1. Topic ids (CreateTopics v7, DeleteTopics v6) as Metadata
  // gives them (topic-ids.ts).
  [ApiKey.CreateTopics, [0, 7]],
  [ApiKey.DeleteTopics, [0, 6]],
  [ApiKey.DeleteRecords, [0, 2]],
  [ApiKey.CreatePartitions, [0, 3]],
  [ApiKey.DescribeConfigs, [0, 4]],
  [ApiKey.AlterConfigs, [0, 2]],
  [ApiKey.IncrementalAlterConfigs, [0, 1]],
  [ApiKey.DeleteGroups, [0, 2]],
  [ApiKey.OffsetDelete, [0, 0]],
  // This broker's copies of the topics and their sizes, in one log directory: the account's store.
  [ApiKey.DescribeLogDirs, [0, 4]],
  // Flexible from their first versions, like the reassignment APIs below.
  [ApiKey.DescribeCluster, [0, 0]],
  // Moving a partition to another broker (its one replica); answered on a single node too.
  [ApiKey.AlterPartitionReassignments, [0, 0]],
  [ApiKey.ListPartitionReassignments, [0, 0]],
  // The preferred replica back in the lead (elect.ts); an unclean election is never made. v2 is flexible.
  [ApiKey.ElectLeaders, [0, 2]],
  [ApiKey.InitProducerId, [0, 4]],
  // v2 answers PRODUCER_FENCED where v0–1 answer INVALID_PRODUCER_EPOCH; v3 is flexible. AddPartitionsToTxn v4 and
  // EndTxn v4 (KIP-890: batched, broker-to-broker verification) are not advertised.
  [ApiKey.AddPartitionsToTxn, [0, 3]],
  [ApiKey.AddOffsetsToTxn, [0, 3]],
  [ApiKey.EndTxn, [0, 3]],
  [ApiKey.TxnOffsetCommit, [0, 3]],
  // The coordinators' transactional ids and the partitions' producers (KIP-664), what kafka-transactions.sh lists and
  // describes; flexible from v0.
  [ApiKey.DescribeProducers, [0, 0]],
  [ApiKey.DescribeTransactions, [0, 0]],
  [ApiKey.ListTransactions, [0, 1]],
  // librdkafka takes SASL as supported only when v0 is; after a v0 handshake the tokens travel as bare frames.
  [ApiKey.SaslHandshake, [0, 1]],
  // Flexible from v2, which librdkafka 2.x and the Java client send.
  [ApiKey.SaslAuthenticate, [0, 2]],
  // Answered, always with an error: permissions come from the configuration, not from Kafka clients (acls.ts).
  // v2 is flexible; v3 only allows the USER resource type, which changes nothing for a broker that refuses them all.
  [ApiKey.DescribeAcls, [0, 3]],
  [ApiKey.CreateAcls, [0, 3]],
  [ApiKey.DeleteAcls, [0, 3]],
  // Answered with no quotas (quotas.ts); AlterClientQuotas is not offered. v1 is flexible.
  [ApiKey.DescribeClientQuotas, [0, 1]],
]);

/** First flexible version of each API (compact types, tagged fields). */
const FIRST_FLEXIBLE = new Map<number, number>([
  [ApiKey.Produce, 9],
  [ApiKey.Fetch, 12],
  [ApiKey.ListOffsets, 6],
  [ApiKey.OffsetForLeaderEpoch, 4],
  [ApiKey.Metadata, 9],
  [ApiKey.OffsetCommit, 8],
  [ApiKey.OffsetFetch, 6],
  [ApiKey.FindCoordinator, 3],
  [ApiKey.JoinGroup, 6],
  [ApiKey.Heartbeat, 4],
  [ApiKey.LeaveGroup, 4],
  [ApiKey.SyncGroup, 4],
  [ApiKey.DescribeGroups, 5],
  [ApiKey.ListGroups, 3],
  [ApiKey.ApiVersions, 3],
  [ApiKey.CreateTopics, 5],
  [ApiKey.DeleteTopics, 4],
  [ApiKey.DeleteRecords, 2],
  [ApiKey.CreatePartitions, 2],
  [ApiKey.DescribeConfigs, 4],
  [ApiKey.AlterConfigs, 2],
  [ApiKey.IncrementalAlterConfigs, 1],
  [ApiKey.DeleteGroups, 2],
  [ApiKey.DescribeLogDirs, 2],
  [ApiKey.DescribeClientQuotas, 1],
  [ApiKey.ElectLeaders, 2],
  [ApiKey.DescribeProducers, 0],
  [ApiKey.DescribeTransactions, 0],
  [ApiKey.ListTransactions, 0],
  // OffsetDelete has no flexible version.
  [ApiKey.DescribeCluster, 0],
  [ApiKey.AlterPartitionReassignments, 0],
  [ApiKey.ListPartitionReassignments, 0],
  [ApiKey.InitProducerId, 2],
  [ApiKey.AddPartitionsToTxn, 3],
  [ApiKey.AddOffsetsToTxn, 3],
  [ApiKey.EndTxn, 3],
  [ApiKey.TxnOffsetCommit, 3],
  // SaslHandshake has no flexible version.
  [ApiKey.SaslAuthenticate, 2],
  [ApiKey.DescribeAcls, 2],
  [ApiKey.CreateAcls, 2],
  [ApiKey.DeleteAcls, 2],
]);

export function isFlexible(apiKey: number, version: number): boolean {
  return version >= (FIRST_FLEXIBLE.get(apiKey) ?? Infinity);
}

export interface RequestContext {
  conn: KafkaConnection;
  version: number;
  /** False only for an ApiVersions request of a version we do not know. */
  supported: boolean;
  flexible: boolean;
  /** Positioned at the request body. */
  r: Reader;
  /** Holds the response header; the handler writes the body. */
  w: Writer;
  /**
   * Hands the request's frame back for reuse: call once nothing will read it
   * again (nor any view of it). Null when the frame is not reusable.
   */
  releaseFrame: (() => void) | null;
  /**
   * Bytes of the door's response budget this request holds (a fetch takes
   * room before it reads records: `conn.takeResponseRoom`). The connection
   * settles it against the response it writes, or gives it back.
   */
  held: number;
}

/** Writes the response body; resolves to false when no response is due (produce with acks=0). */
export type Handler = (ctx: RequestContext) => boolean | Promise<boolean>;
