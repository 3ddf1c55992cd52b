/**
 * Query parameters read the way nats-server reads them (Go's strconv): a
 * value that does not parse is a 400 with nats-server's text, not a guess.
 */

export class QueryError extends Error {}

const TRUE = new Set(["1", "t", "T", "TRUE", "true", "True"]);
const FALSE = new Set(["0", "f", "F", "FALSE", "false", "False"]);

/** Absent or empty is false. */
export function boolParam(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null || v === "" || FALSE.has(v)) return false;
  if (TRUE.has(v)) return true;
  throw new QueryError(`Error decoding boolean for '${name}': strconv.ParseBool: parsing ${JSON.stringify(v)}: invalid syntax`);
}

/** Absent or empty is 0. */
export function intParam(q: URLSearchParams, name: string): number {
  const v = q.get(name);
  if (v === null || v === "") return 0;
  if (!/^[+-]?\d+$/.test(v)) throw new QueryError(`Error decoding int for '${name}': strconv.Atoi: parsing ${JSON.stringify(v)}: invalid syntax`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new QueryError(`Error decoding int for '${name}': strconv.Atoi: parsing ${JSON.stringify(v)}: value out of range`);
  return n;
}

/** `offset` and `limit` of a paged list: a negative offset is 0, a limit of 0 or less is `defaultLimit`, at most `maxLimit`. */
export function pageParams(q: URLSearchParams, defaultLimit: number, maxLimit: number): { offset: number; limit: number } {
  const offset = Math.max(0, intParam(q, "offset"));
  const limit = intParam(q, "limit");
  return { offset, limit: limit <= 0 ? defaultLimit : Math.min(limit, maxLimit) };
}
