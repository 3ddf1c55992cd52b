/** Kafka error codes nagare answers with (kafka.apache.org/protocol#protocol_error_codes). */
export const ErrorCode = {
  UNKNOWN_SERVER_ERROR: -1,
  NONE: 0,
  OFFSET_OUT_OF_RANGE: 1,
  CORRUPT_MESSAGE: 2,
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  LEADER_NOT_AVAILABLE: 5,
  NOT_LEADER_OR_FOLLOWER: 6,
  REQUEST_TIMED_OUT: 7,
  MESSAGE_TOO_LARGE: 10,
  OFFSET_METADATA_TOO_LARGE: 12,
  COORDINATOR_LOAD_IN_PROGRESS: 14,
  COORDINATOR_NOT_AVAILABLE: 15,
  NOT_COORDINATOR: 16,
  INVALID_TOPIC_EXCEPTION: 17,
  RECORD_LIST_TOO_LARGE: 18,
  NOT_ENOUGH_REPLICAS: 19,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: 20,
  INVALID_REQUIRED_ACKS: 21,
  ILLEGAL_GENERATION: 22,
  INCONSISTENT_GROUP_PROTOCOL: 23,
  INVALID_GROUP_ID: 24,
  UNKNOWN_MEMBER_ID: 25,
  INVALID_SESSION_TIMEOUT: 26,
  REBALANCE_IN_PROGRESS: 27,
  UNSUPPORTED_FOR_MESSAGE_FORMAT: 43,
  UNSUPPORTED_VERSION: 35,
  TOPIC_ALREADY_EXISTS: 36,
  INVALID_PARTITIONS: 37,
  INVALID_REPLICATION_FACTOR: 38,
  INVALID_REPLICA_ASSIGNMENT: 39,
  REASSIGNMENT_IN_PROGRESS: 60,
  NO_REASSIGNMENT_IN_PROGRESS: 85,
  INVALID_CONFIG: 40,
  INVALID_REQUEST: 42,
  POLICY_VIOLATION: 44,
  OUT_OF_ORDER_SEQUENCE_NUMBER: 45,
  DUPLICATE_SEQUENCE_NUMBER: 46,
  INVALID_PRODUCER_EPOCH: 47,
  INVALID_TXN_STATE: 48,
  INVALID_PRODUCER_ID_MAPPING: 49,
  INVALID_TRANSACTION_TIMEOUT: 50,
  CONCURRENT_TRANSACTIONS: 51,
  OPERATION_NOT_ATTEMPTED: 55,
  UNKNOWN_PRODUCER_ID: 59,
  FENCED_LEADER_EPOCH: 74,
  UNKNOWN_LEADER_EPOCH: 75,
  UNSUPPORTED_COMPRESSION_TYPE: 76,
  OFFSET_NOT_AVAILABLE: 78,
  INVALID_TIMESTAMP: 32,
  MEMBER_ID_REQUIRED: 79,
  GROUP_MAX_SIZE_REACHED: 81,
  FENCED_INSTANCE_ID: 82,
  GROUP_ID_NOT_FOUND: 69,
  NON_EMPTY_GROUP: 68,
  KAFKA_STORAGE_ERROR: 56,
  GROUP_SUBSCRIBED_TO_TOPIC: 86,
  INVALID_RECORD: 87,
  UNSTABLE_OFFSET_COMMIT: 88,
  /** A transaction request's epoch is not the producer's (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn v2+; INVALID_PRODUCER_EPOCH before). */
  PRODUCER_FENCED: 90,
  /** A topic named (Metadata v10+, Fetch v13+, DeleteTopics v6) by an id no topic has. */
  UNKNOWN_TOPIC_ID: 100,
  /** ElectLeaders: the preferred replica is not a live in-sync one (or the election could not be made). */
  PREFERRED_LEADER_NOT_AVAILABLE: 80,
  /** ElectLeaders, unclean: no replica may be elected (nagare elects only in-sync replicas). */
  ELIGIBLE_LEADERS_NOT_AVAILABLE: 83,
  /** ElectLeaders: the partition's leader is already the one asked for. */
  ELECTION_NOT_NEEDED: 84,
  /** DescribeTransactions: a transactional id this coordinator does not know. */
  TRANSACTIONAL_ID_NOT_FOUND: 105,
  TOPIC_AUTHORIZATION_FAILED: 29,
  CLUSTER_AUTHORIZATION_FAILED: 31,
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: 53,
  SECURITY_DISABLED: 54,
  UNSUPPORTED_SASL_MECHANISM: 33,
  ILLEGAL_SASL_STATE: 34,
  SASL_AUTHENTICATION_FAILED: 58,
} as const;

/**
 * JetStream's account-limit errors (streams/limits.ts: max streams, memory
 * and storage, consumers, max_bytes rules, and a message the account has no
 * room for): a Kafka client gets POLICY_VIOLATION with JetStream's text, an
 * error it does not retry, as the account's configured policy refuses it.
 */
const ACCOUNT_LIMIT_CODES = new Set([10002, 10026, 10027, 10028, 10047, 10113, 10122]);

export function isAccountLimit(err: { errCode: number }): boolean {
  return ACCOUNT_LIMIT_CODES.has(err.errCode);
}

/** A refusal of one partition's records, with the code its produce response carries. */
export class BatchError extends Error {
  constructor(
    readonly code: number,
    message: string,
    /** The records that refused the batch, by index, each with why (Produce v8+ record_errors), as Kafka's RecordValidationException lists them. */
    readonly recordErrors: ReadonlyArray<[index: number, message: string]> = [],
  ) {
    super(message);
  }
}
