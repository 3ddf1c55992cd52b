/**
 * A transaction's group offsets when the transaction's coordinator and the
 * group's are two brokers of a cluster. Kafka clients send TxnOffsetCommit
 * to the group's coordinator, and the transaction holds the offsets until
 * it ends (transactions.ts): so the group's coordinator hands them to the
 * transaction's (TXN_OFFSETS), and on commit the transaction's hands them
 * to whichever broker coordinates the group by then (GROUP_COMMIT), which
 * stores them as any commit (an abort's call carries none and ends the
 * hold). A commit once decided asks the group's coordinator to hold its
 * offsets until then, past the transaction's timeout, for as long again as
 * a transaction may run at most (GROUP_HOLD). Each is
 * a call between nodes over the routes (JetStream.remoteCall), and each
 * side checks that it still coordinates its key. An answer that does not
 * come is retried: by the client for TxnOffsetCommit, by the transaction's
 * coordinator for its end and for GROUP_HOLD (in the background, until the
 * offsets are stored).
 */

import type { AccountDoor } from "./account-door.js";
import { coordinatorReady } from "./cluster.js";
import { CoordinatorMoved } from "./coordinator-topic.js";
import { ErrorCode } from "./errors.js";
import type { CommittedOffset } from "./groups.js";
import { KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION } from "./requests.js";
import { MAX_TRANSACTION_TIMEOUT_MS, type TxnRequest } from "./transactions.js";

const TXN_OFFSETS = "kafka.txn-offsets";
const GROUP_COMMIT = "kafka.group-commit";
const GROUP_HOLD = "kafka.group-hold";
const CALL_MS = 10_000;
/** Room kept in a call's body for what is not an entry. */
const BODY_ROOM = 1024;

type Entries = Array<[string, CommittedOffset]>;

interface TxnOffsetsCall extends TxnRequest {
  groupId: string;
  entries: Entries;
}

interface GroupCommitCall {
  groupId: string;
  entries: Entries;
  /** The transaction's producer, whose hold on the group's offsets ends (absent from older nodes). */
  producerId?: number;
}

interface GroupHoldCall {
  groupId: string;
  producerId: number;
  /** Until when (ms since the epoch) at the longest. */
  until: number;
}

/** The answer to either call: a Kafka error code; `final`: not worth trying again (why in `reason`); TXN_OFFSETS's transaction timeout. */
interface CallAnswer {
  error: number;
  final?: boolean;
  reason?: string;
  timeoutMs?: number;
}

/** Offers this account's two calls to the other nodes; the returned function withdraws them. */
export function offerCoordinatorCalls(door: AccountDoor): () => void {
  const services = door.js.nodeServices;
  services.set(TXN_OFFSETS, async (body) => answer(await serveTxnOffsets(door, body)));
  services.set(GROUP_COMMIT, async (body) => answer(await serveGroupCommit(door, body)));
  services.set(GROUP_HOLD, async (body) => answer(await serveGroupHold(door, body)));
  return () => {
    services.delete(TXN_OFFSETS);
    services.delete(GROUP_COMMIT);
    services.delete(GROUP_HOLD);
  };
}

/**
 * TxnOffsetCommit at the group's coordinator: hands the offsets to the
 * transaction's coordinator when that is another broker, and answers with
 * its error code and the transaction's timeout; null when the transaction
 * is coordinated here (or on a single node), to be held here.
 */
export async function txnOffsetsAway(door: AccountDoor, req: TxnRequest, groupId: string, entries: Entries): Promise<{ error: number; timeoutMs?: number } | null> {
  const cluster = door.door.cluster;
  if (cluster === null || door.txnState === null || door.transactions.holds(req.transactionalId)) return null;
  const c = door.txnState.coordinator(req.transactionalId);
  if ("error" in c) return { error: c.error };
  if (c.id === cluster.nodeId) {
    // Coordinated here, its state maybe still loading: waited for, rather than the id called unknown.
    const error = await coordinatorReady(door, KEY_TYPE_TRANSACTION, req.transactionalId);
    return error === ErrorCode.NONE ? null : { error: ErrorCode.COORDINATOR_NOT_AVAILABLE };
  }
  let timeoutMs: number | undefined;
  for (const part of chunks(door, entries)) {
    const a = await call(door, c.id, TXN_OFFSETS, { ...req, groupId, entries: part } satisfies TxnOffsetsCall);
    // The transaction's coordinator moving or loading is not the group's: the client is asked to try again here.
    if (a === null || a.error === ErrorCode.NOT_COORDINATOR) return { error: ErrorCode.COORDINATOR_NOT_AVAILABLE };
    if (a.error !== ErrorCode.NONE) return { error: a.error };
    timeoutMs = a.timeoutMs;
  }
  return { error: ErrorCode.NONE, timeoutMs };
}

/**
 * A committed transaction's offsets of `groupId` (none for an aborted one),
 * given to the group's coordinator when that is another broker, which then
 * no longer holds the group's offsets for `producerId`: resolves once
 * stored there (null) or given up for good (why); rejects to be tried
 * again. Null when the group is coordinated here, to be committed here.
 */
export function groupCommitAway(door: AccountDoor, groupId: string, entries: Entries, producerId: number): Promise<string | null> | null {
  const cluster = door.door.cluster;
  if (cluster === null || door.offsets === null) return null;
  const c = door.offsets.coordinator(groupId);
  if ("error" in c) return Promise.reject(new Error(c.reason));
  if (c.id === cluster.nodeId) return null;
  return (async () => {
    // The hold ends with the last part: no part shows the transaction's offsets stable before all are stored.
    const parts = chunks(door, entries);
    for (let i = 0; i < Math.max(1, parts.length); i++) {
      const last = i >= parts.length - 1;
      const a = await call(door, c.id, GROUP_COMMIT, { groupId, entries: parts[i] ?? [], ...(last ? { producerId } : {}) } satisfies GroupCommitCall);
      if (a === null) throw new Error(`broker ${c.id}, which coordinates group ${groupId}, did not answer`);
      if (a.final === true) return a.reason ?? `error ${a.error}`;
      if (a.error !== ErrorCode.NONE) throw new Error(`broker ${c.id} did not store the offsets of group ${groupId}: ${a.reason ?? `error ${a.error}`}`);
    }
    return null;
  })();
}

/**
 * A decided commit's offsets of `groupId` held until stored (Group.extendTxnHold),
 * at the group's coordinator when that is another broker: resolves once
 * that broker answered (or why it did not), rejects never. Null when the
 * group is coordinated here.
 */
export function groupHoldAway(door: AccountDoor, groupId: string, producerId: number, until: number): Promise<string | null> | null {
  const cluster = door.door.cluster;
  if (cluster === null || door.offsets === null) return null;
  const c = door.offsets.coordinator(groupId);
  if ("error" in c) return Promise.resolve(c.reason);
  if (c.id === cluster.nodeId) return null;
  return call(door, c.id, GROUP_HOLD, { groupId, producerId, until } satisfies GroupHoldCall).then(
    (a) => (a === null ? `broker ${c.id}, which coordinates group ${groupId}, did not answer` : a.error === ErrorCode.NONE ? null : (a.reason ?? `error ${a.error}`)),
    (err: Error) => err.message,
  );
}

async function serveTxnOffsets(door: AccountDoor, body: Buffer): Promise<CallAnswer> {
  const a = parse(body) as Partial<TxnOffsetsCall> | null;
  if (a === null || typeof a.transactionalId !== "string" || typeof a.producerId !== "number" || typeof a.epoch !== "number" || typeof a.groupId !== "string" || !validEntries(a.entries)) {
    return { error: ErrorCode.INVALID_REQUEST };
  }
  const refused = await coordinatorReady(door, KEY_TYPE_TRANSACTION, a.transactionalId);
  if (refused !== ErrorCode.NONE) return { error: refused };
  const error = await door.transactions.commitOffsets({ transactionalId: a.transactionalId, producerId: a.producerId, epoch: a.epoch }, a.groupId, a.entries);
  return { error, timeoutMs: door.transactions.timeoutOf(a.transactionalId) };
}

async function serveGroupCommit(door: AccountDoor, body: Buffer): Promise<CallAnswer> {
  const a = parse(body) as Partial<GroupCommitCall> | null;
  if (a === null || typeof a.groupId !== "string" || !validEntries(a.entries)) return { error: ErrorCode.INVALID_REQUEST, final: true, reason: "a malformed call" };
  const refused = await coordinatorReady(door, KEY_TYPE_GROUP, a.groupId);
  if (refused !== ErrorCode.NONE) return { error: refused, reason: `this broker does not coordinate group ${a.groupId} now` };
  // Also to end a hold only: its record may be in the log though the group is not here (deleted, or never loaded).
  const group = door.groups.group(a.groupId, a.entries.length > 0 || typeof a.producerId === "number");
  if (group === null) return a.entries.length > 0 ? { error: ErrorCode.COORDINATOR_NOT_AVAILABLE, final: true, reason: "too many groups" } : { error: ErrorCode.NONE };
  try {
    await group.commit(a.entries, typeof a.producerId === "number" ? a.producerId : undefined);
    return { error: ErrorCode.NONE };
  } catch (err) {
    return { error: err instanceof CoordinatorMoved ? ErrorCode.NOT_COORDINATOR : ErrorCode.UNKNOWN_SERVER_ERROR, reason: (err as Error).message };
  }
}

async function serveGroupHold(door: AccountDoor, body: Buffer): Promise<CallAnswer> {
  const a = parse(body) as Partial<GroupHoldCall> | null;
  if (a === null || typeof a.groupId !== "string" || typeof a.producerId !== "number" || typeof a.until !== "number") return { error: ErrorCode.INVALID_REQUEST, reason: "a malformed call" };
  const refused = await coordinatorReady(door, KEY_TYPE_GROUP, a.groupId);
  if (refused !== ErrorCode.NONE) return { error: refused, reason: `this broker does not coordinate group ${a.groupId} now` };
  try {
    // Never longer than a transaction may run: a hold whose end is never told must still end.
    await door.groups.group(a.groupId, false)?.extendTxnHold(a.producerId, Math.min(a.until, Date.now() + MAX_TRANSACTION_TIMEOUT_MS));
    return { error: ErrorCode.NONE };
  } catch (err) {
    return { error: err instanceof CoordinatorMoved ? ErrorCode.NOT_COORDINATOR : ErrorCode.UNKNOWN_SERVER_ERROR, reason: (err as Error).message };
  }
}

async function call(door: AccountDoor, broker: number, service: string, body: object): Promise<CallAnswer | null> {
  const node = door.door.cluster?.nodeName(broker);
  const remote = door.js.remoteCall;
  if (node === undefined || remote === null) return null;
  const answer = await remote(node, service, Buffer.from(JSON.stringify(body)), CALL_MS);
  const a = answer === null ? null : (parse(answer) as Partial<CallAnswer> | null);
  return a !== null && typeof a.error === "number" ? (a as CallAnswer) : null;
}

/** The entries in parts whose calls fit what a route carries. */
function chunks(door: AccountDoor, entries: Entries): Entries[] {
  const room = door.js.options.maxPayload - BODY_ROOM;
  const out: Entries[] = [];
  let part: Entries = [];
  let size = 0;
  for (const e of entries) {
    // JSON of a string may take up to 6 bytes per character (\u escapes).
    const bytes = 64 + 6 * (e[0].length + (e[1].metadata?.length ?? 0));
    if (part.length > 0 && size + bytes > room) {
      out.push(part);
      part = [];
      size = 0;
    }
    part.push(e);
    size += bytes;
  }
  if (part.length > 0) out.push(part);
  return out;
}

function validEntries(entries: unknown): entries is Entries {
  return (
    Array.isArray(entries) &&
    entries.every((e) => Array.isArray(e) && typeof e[0] === "string" && typeof e[1]?.offset === "number" && (e[1].metadata === null || typeof e[1].metadata === "string"))
  );
}

function parse(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return null;
  }
}

function answer(a: CallAnswer): Buffer {
  return Buffer.from(JSON.stringify(a));
}
