/**
 * The Kafka ACL APIs (DescribeAcls, CreateAcls, DeleteAcls v0–3; v2+ flexible), answered
 * and always refused: nagare keeps no Kafka ACLs. What a Kafka user may
 * produce and fetch is its NATS permissions (publish and subscribe
 * subjects, from the configuration file or its user JWT; docs/SECURITY.md),
 * which are checked per subject of each record and of each topic's stream,
 * not per topic name: no list of Kafka ACLs would describe them truly, and
 * changing them belongs to the configuration.
 *
 * As a Kafka broker answers: without authorization, SECURITY_DISABLED (no
 * authorizer); with it, CLUSTER_AUTHORIZATION_FAILED (nobody holds the
 * cluster permission these APIs need), each with a message saying where
 * permissions come from.
 */

import type { RequestContext } from "./api.js";
import type { KafkaDoor } from "./door.js";
import { ErrorCode } from "./errors.js";
import { decodeCreateAcls, decodeDeleteAcls, decodeDescribeAcls } from "./requests.js";

function refusal(door: KafkaDoor): { code: number; message: string } {
  if (door.auth === null) return { code: ErrorCode.SECURITY_DISABLED, message: "Security features are disabled: this server has no authorization, so there are no ACLs" };
  return {
    code: ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
    message: "nagare keeps no Kafka ACLs: a user's publish and subscribe permissions, from the server's configuration or its user JWT, decide what it may produce and fetch",
  };
}

/** DescribeAcls: no bindings, the refusal. */
export function handleDescribeAcls(door: KafkaDoor, { version, r, w }: RequestContext): boolean {
  decodeDescribeAcls(r, version);
  const { code, message } = refusal(door);
  w.i32(0).i16(code).nullableString(message).arrayLength(0).taggedFields();
  return true;
}

/** CreateAcls: each creation refused. */
export function handleCreateAcls(door: KafkaDoor, { version, r, w }: RequestContext): boolean {
  const { creations } = decodeCreateAcls(r, version);
  const { code, message } = refusal(door);
  w.i32(0).array(creations, (w) => w.i16(code).nullableString(message).taggedFields());
  w.taggedFields();
  return true;
}

/** DeleteAcls: each filter refused, matching nothing. */
export function handleDeleteAcls(door: KafkaDoor, { version, r, w }: RequestContext): boolean {
  const { filters } = decodeDeleteAcls(r, version);
  const { code, message } = refusal(door);
  w.i32(0).array(filters, (w) => w.i16(code).nullableString(message).arrayLength(0).taggedFields());
  w.taggedFields();
  return true;
}
