/**
 * How Kafka topics map onto nagare's streams (docs/KAFKA.md, "Topics and
 * streams"):
 *
 * - A topic is a stream; its partitions are the stream's partitions, and a
 *   Kafka offset is the partition's sequence minus one.
 * - Stream names cannot hold dots, topic names can: the stream of topic
 *   `a.b` is `a_b`, and the topic name is kept in the stream's metadata. As
 *   in Kafka, two topics that differ only by `.` and `_` collide.
 * - A topic created over Kafka captures the subject equal to its name.
 *   Records produced over Kafka are stored under a subject the stream
 *   captures: the record's `Nats-Subject` header if it has one, else the
 *   stream's first literal subject, else its first subject with each
 *   wildcard token replaced by `kafka`.
 * - Every stream is visible as a topic, whoever created it.
 */

import type { JetStream } from "../../streams/jetstream.js";
import type { Stream } from "../../streams/stream.js";
import { isValidPublishSubject } from "../../subjects/subject.js";
import type { PermissionCheck } from "../../core/auth.js";

export const TOPIC_METADATA_KEY = "nagare.kafka.topic";
/** The internal topic a cluster keeps committed offsets in (offsets-log.ts). */
export const OFFSETS_TOPIC = "__consumer_offsets";
/** The internal topic a cluster keeps the transaction coordinators' state in (txn-state-log.ts). */
export const TXN_STATE_TOPIC = "__transaction_state";

/** Whether `topic` is one of the coordinators' own: clients may read it, as Kafka's, and never write, make or remove it. */
export function isInternalTopic(topic: string): boolean {
  return topic === OFFSETS_TOPIC || topic === TXN_STATE_TOPIC;
}
const TOPIC_NAME = /^[a-zA-Z0-9._-]{1,249}$/;

/** Why `name` cannot be a topic, or null. Kafka's rules, plus dots that make a valid subject. */
export function topicNameError(name: string): string | null {
  if (!TOPIC_NAME.test(name)) return "topic names are 1 to 249 of the characters a-z A-Z 0-9 . _ -";
  if (name === "." || name === "..") return "topic name cannot be '.' or '..'";
  if (name.startsWith(".") || name.endsWith(".") || name.includes("..")) return "nagare topic names cannot start or end with '.' or hold '..' (they are subjects)";
  return null;
}

export function streamNameOf(topic: string): string {
  return topic.replace(/\./g, "_");
}

export function topicOf(stream: Stream): string {
  return stream.config.metadata?.[TOPIC_METADATA_KEY] ?? stream.config.name;
}

/** The stream behind `topic`, or undefined. */
export function findTopic(js: JetStream, topic: string): Stream | undefined {
  const s = js.streams.get(streamNameOf(topic));
  return s !== undefined && topicOf(s) === topic ? s : undefined;
}

/** The subject records produced over Kafka are stored under when they name none. */
export function defaultSubject(stream: Stream): string {
  return subjectFor(stream.config.subjects, stream.config.name);
}

/** defaultSubject of a stream known by its subjects and name (placed on another node, say). */
export function subjectFor(subjects: readonly string[], name: string): string {
  for (const s of subjects) if (isValidPublishSubject(s)) return s;
  const first = subjects[0] ?? name;
  return first
    .split(".")
    .map((t) => (t === "*" || t === ">" ? "kafka" : t))
    .join(".");
}

/**
 * Whether a user with these permissions may read `stream` as a topic: its
 * subscribe permission must cover every subject the stream captures, so
 * that a Kafka consumer never reads a message a NATS subscriber with the
 * same permissions could not receive. Null permissions allow everything.
 */
export function mayReadTopic(perms: PermissionCheck | null, stream: Stream): boolean {
  if (perms === null) return true;
  const subjects = stream.config.subjects;
  // A subscribe deny that only overlaps a subject (`orders.secret` within `orders.>`) lets the NATS subscription be
  // made and filters what it is delivered; a Kafka reader gets every record, so such a topic is refused.
  const readable = (s: string): boolean => perms.maySubscribe(s) && !perms.filtersDelivery(s);
  if (subjects.length === 0) return readable(stream.config.name); // such a stream captures its name
  for (const s of subjects) if (!readable(s)) return false;
  return true;
}

/** Kafka's Describe, implied by Read or Write: offsets and watermarks of a topic the user may read or produce to. */
export function mayDescribeTopic(perms: PermissionCheck | null, stream: Stream): boolean {
  return perms === null || mayReadTopic(perms, stream) || perms.mayPublish(defaultSubject(stream));
}

/**
 * What managing a topic takes: the publish permission a NATS client needs
 * for the same JetStream API call (`$JS.API.STREAM.CREATE.<stream>`, …), so
 * that a user who may not delete a stream over NATS may not delete its
 * topic over Kafka either.
 */
export function mayManageTopic(perms: PermissionCheck | null, op: "CREATE" | "UPDATE" | "DELETE" | "PURGE", topic: string): boolean {
  // The coordinators' own topic is theirs alone (clients may read it, as Kafka's).
  if (isInternalTopic(topic)) return false;
  return perms === null || perms.mayPublish(`$JS.API.STREAM.${op}.${streamNameOf(topic)}`);
}
