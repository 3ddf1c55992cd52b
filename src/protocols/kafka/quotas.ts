/**
 * DescribeClientQuotas (v0–1; v1 flexible), answered with no quotas: nagare
 * keeps no Kafka client quotas (byte rates, request percentages). What
 * bounds a client is the server's configuration (an account's limits,
 * `max_payload`, the Kafka door's request and response budgets), which no
 * quota entry would describe truly. AlterClientQuotas is not offered, so a
 * client that would set one is told the broker does not support it.
 */

import type { RequestContext } from "./api.js";
import type { KafkaDoor } from "./door.js";
import { ErrorCode } from "./errors.js";
import { decodeDescribeClientQuotas } from "./requests.js";

const MATCH_EXACT = 0;
const MATCH_DEFAULT = 1;
const MATCH_ANY = 2;
/** The entity types Kafka's quotas know. */
const ENTITY_TYPES = new Set(["user", "client-id", "ip"]);

/** Kafka's (KRaft's) checks of a filter's components: the error and its words for the first that fails, or null. */
function filterError(components: ReadonlyArray<{ entityType: string; matchType: number; match: string | null }>): { code: number; message: string } | null {
  const seen = new Set<string>();
  for (const c of components) {
    if (c.entityType === "") return { code: ErrorCode.INVALID_REQUEST, message: "Invalid empty entity type." };
    if (seen.has(c.entityType)) return { code: ErrorCode.INVALID_REQUEST, message: `Entity type ${c.entityType} cannot appear more than once in the filter.` };
    seen.add(c.entityType);
    if (!ENTITY_TYPES.has(c.entityType)) return { code: ErrorCode.UNSUPPORTED_VERSION, message: `Custom entity type ${c.entityType} not supported` };
    if (c.matchType !== MATCH_EXACT && c.matchType !== MATCH_DEFAULT && c.matchType !== MATCH_ANY) return { code: ErrorCode.INVALID_REQUEST, message: `Unknown match type ${c.matchType}` };
    if (c.matchType === MATCH_EXACT && c.match === null) return { code: ErrorCode.INVALID_REQUEST, message: "Request specified MATCH_TYPE_EXACT, but set match string to null." };
    if (c.matchType !== MATCH_EXACT && c.match !== null) return { code: ErrorCode.INVALID_REQUEST, message: `Request specified match type ${c.matchType}, but set match string to ${c.match}.` };
  }
  if (seen.has("ip") && (seen.has("user") || seen.has("client-id"))) return { code: ErrorCode.INVALID_REQUEST, message: "Invalid entity filter component combination, IP filter component should not be used with user or clientId filter component." };
  return null;
}

/** DescribeClientQuotas: a well-formed filter matches nothing (an empty list of entries); a malformed one is refused with Kafka's error. */
export function handleDescribeClientQuotas(_door: KafkaDoor, { r, w }: RequestContext): boolean {
  const { components } = decodeDescribeClientQuotas(r);
  const error = filterError(components);
  w.i32(0); // throttle_time_ms
  if (error !== null) w.i16(error.code).nullableString(error.message).arrayLength(-1);
  else w.i16(ErrorCode.NONE).nullableString(null).arrayLength(0);
  w.taggedFields();
  return true;
}
