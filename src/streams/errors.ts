/**
 * JetStream API errors: HTTP-like code, JetStream error code and the exact
 * description nats-server sends (clients match on err_code, people on text).
 */

import { goDuration } from "../util/duration.js";
import { LimitError } from "../store/log.js";

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly errCode: number,
    description: string,
  ) {
    super(description);
  }

  toJSON(): { code: number; err_code: number; description: string } {
    return { code: this.code, err_code: this.errCode, description: this.message };
  }
}

/**
 * A write refused because fewer replicas are in sync than the partition's
 * minimum: JetStream's 503 10008 to a NATS client; a door tells it apart
 * (Kafka's NOT_ENOUGH_REPLICAS).
 */
export class TooFewReplicasError extends ApiError {
  constructor(
    inSync: number,
    needed: number,
    /** Stored, then the ISR fell below the minimum before every member had it (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND): it may or may not be kept. */
    readonly afterAppend = false,
  ) {
    super(503, 10008, `JetStream system temporarily unavailable: ${inSync} in-sync replicas, ${needed} needed${afterAppend ? "; the write may or may not be kept" : ""}`);
  }
}

/**
 * Stored by this leader, then not seen through to its replicas (the lease lost, the leadership ended, too many
 * writes waiting): it may or may not be kept. A Kafka producer must be told "possibly persisted" (REQUEST_TIMED_OUT),
 * not "not stored": librdkafka then retries the batch under its sequence, which the leader answers as a duplicate,
 * instead of bumping its epoch and sending it again as a new batch.
 */
export class OutcomeUnknownError extends ApiError {
  constructor(why: string) {
    super(503, 10008, `JetStream system temporarily unavailable: ${why}; the write may or may not be kept`);
  }
}

/**
 * A write refused, before it is stored, by a node that believes it leads the partition but does not hold its cluster
 * lease: another node may lead it by now and take the same publish (every replica's node captures the stream's
 * subjects), so a JetStream publish gets no answer from here, as from a follower, instead of a 503 that could race
 * that leader's acknowledgement to the client. Other doors answer it as any refusal (Kafka: NOT_LEADER_OR_FOLLOWER).
 */
export class LeaseLostError extends ApiError {
  constructor() {
    super(503, 10008, "JetStream system temporarily unavailable: this node does not hold its cluster lease");
  }
}

/**
 * A write refused by a leader that has handed the partition over (a step-down, a drain, an election) and not yet
 * settled the placement naming its successor, which may take the same publish: answered late, as LeaseLostError.
 */
export class HandedOverError extends ApiError {
  constructor(to: string) {
    super(503, 10008, `JetStream system temporarily unavailable: the partition's leadership is moving to another replica (${to})`);
  }
}

/**
 * A write refused by the stream's own limits under discard "new" (maximum messages, bytes, per subject): JetStream's
 * "store failed" with the limit (nats-server's 503 10077), told apart so that a door can say it is no passing fault
 * (Kafka: POLICY_VIOLATION, which clients do not retry, not KAFKA_STORAGE_ERROR, which they retry until they time out).
 */
export class LimitRefusedError extends ApiError {
  constructor(why: string) {
    super(503, 10077, why);
  }
}

/** A log's refusal as a write's error: the stream's limits (LimitRefusedError), or a storage failure. */
export function storeFailure(err: Error): ApiError {
  return err instanceof LimitError ? new LimitRefusedError(err.message) : Errors.storeFailed(err.message);
}

const e = (code: number, errCode: number, text: string) => (): ApiError => new ApiError(code, errCode, text);

export const Errors = {
  badRequest: e(400, 10003, "bad request"),
  // nats-server 2.9 and 2.10 give no detail: a value of the wrong type reads the same as broken JSON.
  invalidJson: e(400, 10025, "invalid JSON"),
  notEmptyRequest: e(400, 10038, "expected an empty request payload"),
  mirrorWithSubjects: e(400, 10034, "stream mirrors can not contain subjects"),
  notEnabled: e(503, 10076, "JetStream not enabled"),
  clusterRequired: e(503, 10010, "JetStream clustering support required"),
  // A cluster's: placement that finds no node, a stream whose node is gone, metadata etcd will not change now.
  clusterNoPeers: (why: string): ApiError => new ApiError(400, 10005, why),
  streamOffline: e(500, 10118, "stream is offline"),
  clusterNotAvailable: e(503, 10008, "JetStream system temporarily unavailable"),
  /** A stream frozen for the last step of its move to another node: try again in a moment. */
  /** nats-server's JSStreamMoveInProgressF. */
  streamMoveInProgress: e(400, 10124, "stream move already in progress"),
  clusterPeerNotMember: e(400, 10040, "peer not a member"),
  /** nats-server's JSPeerRemapErr: no node to take a removed peer's place. */
  peerRemap: e(503, 10075, "peer remap failed"),
  clusterServerNotMember: e(400, 10044, "server is not a member of the cluster"),
  streamMoving: e(503, 10008, "JetStream system temporarily unavailable: stream is moving to another node"),
  streamGeneral: (why: string): ApiError => new ApiError(500, 10051, why),
  streamNotFound: e(404, 10059, "stream not found"),
  consumerNotFound: e(404, 10014, "consumer not found"),
  noMessageFound: e(404, 10037, "no message found"),
  streamNameExists: e(400, 10058, "stream name already in use with a different configuration"),
  streamMismatch: e(400, 10056, "stream name in subject does not match request"),
  subjectOverlap: e(400, 10065, "subjects overlap with an existing stream"),
  streamConfig: (why: string): ApiError => new ApiError(500, 10052, why),
  streamCreate: (why: string): ApiError => new ApiError(500, 10049, why),
  replicasNegative: e(400, 10133, "replicas count cannot be negative"),
  streamNameSeparators: e(400, 10128, "Stream name can not contain path separators"),
  replicasNotSupported: e(500, 10074, "replicas > 1 not supported in non-clustered mode"),
  maxConsumers: e(400, 10026, "maximum consumers limit reached"),
  wrongLastSequence: (seq: number): ApiError => new ApiError(400, 10071, `wrong last sequence: ${seq}`),
  wrongLastMsgId: (id: string): ApiError => new ApiError(400, 10070, `wrong last msg ID: ${id}`),
  expectedStream: e(400, 10060, "expected stream does not match"),
  messageTooBig: e(400, 10054, "message size exceeds maximum allowed"),
  storeFailed: (why: string): ApiError => new ApiError(503, 10077, why),
  sealed: e(400, 10109, "invalid operation on sealed stream"),
  rollupFailed: (why: string): ApiError => new ApiError(500, 10111, why),
  msgDeleteFailed: (why: string): ApiError => new ApiError(500, 10057, why),
  purgeFailed: (why: string): ApiError => new ApiError(500, 10110, why),
  sequenceNotFound: (seq: number): ApiError => new ApiError(400, 10043, `sequence ${seq} not found`),
  ttlDisabled: e(400, 10166, "per-message TTL is disabled"),
  ttlInvalid: e(400, 10165, "invalid per-message TTL"),
  consumerExists: e(400, 10148, "consumer already exists"),
  consumerDoesNotExist: e(400, 10149, "consumer does not exist"),
  consumerNameExists: e(400, 10013, "consumer name already in use"),
  consumerConfigRequired: e(400, 10078, "consumer config required"),
  consumerFilterMismatch: e(400, 10131, "Consumer create request did not match filtered subject from create subject"),
  consumerDurableNameMismatch: e(400, 10132, "Consumer Durable and Name have to be equal if both are provided"),
  consumerDurableNotInSubject: e(400, 10016, "consumer expected to be durable but no durable name set in subject"),
  consumerDurableSubjectMismatch: e(400, 10017, "consumer name in subject does not match durable name in request"),
  consumerEphemeralWithDurable: e(400, 10019, "consumer expected to be ephemeral but detected a durable name set in subject"),
  consumerEphemeralWithDurableName: e(400, 10020, "consumer expected to be ephemeral but a durable name was set in request"),
  consumerDurableNameNotSet: e(400, 10018, "consumer expected to be durable but a durable name was not set"),
  consumerBadDurableName: e(400, 10103, "durable name can not contain '.', '*', '>'"),
  consumerNameSeparators: e(400, 10127, "Consumer name can not contain path separators"),
  consumerInvalidPolicy: (why: string): ApiError => new ApiError(400, 10094, why),
  consumerDeliverWildcards: e(400, 10079, "consumer deliver subject has wildcards"),
  consumerDeliverCycle: e(400, 10081, "consumer deliver subject forms a cycle"),
  consumerPushMaxWaiting: e(400, 10080, "consumer in push mode can not set max waiting"),
  consumerHbRequiresPush: e(400, 10088, "consumer idle heartbeat requires a push based consumer"),
  consumerFcRequiresPush: e(400, 10089, "consumer flow control requires a push based consumer"),
  consumerSmallHeartbeat: e(400, 10083, "consumer idle heartbeat needs to be >= 100ms"),
  consumerMaxWaitingNegative: e(400, 10087, "consumer max waiting needs to be positive"),
  consumerMaxPendingNeedsAck: e(400, 10082, "consumer requires ack policy for max ack pending"),
  consumerBackoff: e(400, 10116, "max deliver is required to be > length of backoff values"),
  consumerBackoffNegative: e(400, 10184, "consumer backoff needs to be positive"),
  consumerAckWaitNegative: e(400, 10183, "consumer ack wait needs to be positive"),
  consumerDuplicateFilters: e(400, 10136, "consumer cannot have both FilterSubject and FilterSubjects specified"),
  consumerOverlappingFilters: e(400, 10138, "consumer subject filters cannot overlap"),
  consumerEmptyFilter: e(400, 10139, "consumer filter in FilterSubjects cannot be empty"),
  consumerFilterNotSubset: e(400, 10093, "consumer filter subject is not a valid subset of the interest subjects"),
  consumerWqRequiresExplicitAck: e(400, 10098, "workqueue stream requires explicit ack"),
  consumerWqMultipleUnfiltered: e(400, 10099, "multiple non-filtered consumers not allowed on workqueue stream"),
  consumerWqNotUnique: e(400, 10100, "filtered consumer not unique on workqueue stream"),
  consumerWqNotDeliverAll: e(400, 10101, "consumer must be deliver all on workqueue stream"),
  consumerNameTooLong: (max: number): ApiError => new ApiError(400, 10102, `consumer name is too long, maximum allowed is ${max}`),
  consumerExistingActive: e(400, 10105, "consumer already exists and is still active"),
  consumerReplicasExceedStream: e(400, 10126, "consumer config replica count exceeds parent stream"),
  consumerMaxBatchNegative: e(400, 10114, "consumer max request batch needs to be > 0"),
  consumerMaxExpiresTooSmall: e(400, 10115, "consumer max request expires needs to be >= 1ms"),
  consumerPullRequiresAck: e(400, 10084, "consumer in pull mode requires ack policy"),
  consumerInvalidDeliverSubject: e(400, 10112, "invalid push consumer deliver subject"),
  consumerDescriptionTooLong: (max: number): ApiError => new ApiError(400, 10107, `consumer description is too long, maximum allowed is ${max}`),
  consumerMetadataTooLong: (limit: string): ApiError => new ApiError(400, 10135, `consumer metadata exceeds maximum size of ${limit}`),
  consumerPullWithRateLimit: e(400, 10086, "consumer in pull mode can not have rate limit set"),
  consumerInvalidSampling: (why: string): ApiError => new ApiError(400, 10095, `failed to parse consumer sampling configuration: ${why}`),
  consumerFcNeedsHeartbeats: e(400, 10108, "consumer with flow control also needs heartbeats"),
  consumerMaxAckPendingExcess: (limit: number): ApiError => new ApiError(400, 10121, `consumer max ack pending exceeds system limit of ${limit}`),
  consumerInactiveThresholdExcess: (limitNs: number): ApiError =>
    new ApiError(400, 10153, `consumer inactive threshold exceeds system limit of ${goDuration(limitNs)}`),
  consumerStoreFailed: (why: string): ApiError => new ApiError(500, 10104, `error creating store for consumer: ${why}`),
};
