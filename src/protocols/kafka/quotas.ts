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

/** Kafka's checks of a filter's components, its message for the first that fails, or null. */
function filterError(components: ReadonlyArray<{ entityType: string; matchType: number; match: string | null }>): string | null {
  const seen = new Set<string>();
  for (const c of components) {
    if (seen.has(c.entityType)) return `Duplicate entity type ${c.entityType}`;
    seen.add(c.entityType);
    if (c.matchType < MATCH_EXACT || c.matchType > 2) return `Unexpected match type: ${c.matchType}`;
    if (c.matchType === MATCH_EXACT && c.match === null) return "Unexpected null match for an exact match";
    if (c.matchType !== MATCH_EXACT && c.match !== null) return `Unexpected match ${c.match} for match type ${c.matchType}`;
  }
  return null;
}

/** DescribeClientQuotas: a well-formed filter matches nothing (an empty list of entries); a malformed one is INVALID_REQUEST. */
export function handleDescribeClientQuotas(_door: KafkaDoor, { r, w }: RequestContext): boolean {
  const { components } = decodeDescribeClientQuotas(r);
  const error = filterError(components);
  w.i32(0); // throttle_time_ms
  if (error !== null) w.i16(ErrorCode.INVALID_REQUEST).nullableString(error).arrayLength(-1);
  else w.i16(ErrorCode.NONE).nullableString(null).arrayLength(0);
  w.taggedFields();
  return true;
}
