/**
 * Kafka consumer groups, classic protocol: this node is the coordinator of
 * every group. A group moves Empty → PreparingRebalance (members (re)join)
 * → CompletingRebalance (the leader computes assignments, members sync) →
 * Stable; a join, leave or session expiry starts the next rebalance.
 * Members learn of it from Heartbeat's REBALANCE_IN_PROGRESS and rejoin.
 *
 * Committed offsets are written durably before a commit is acknowledged:
 * on a single node one JSON file per group; in a cluster, records in the
 * replicated `__consumer_offsets` topic (an OffsetsStore, offsets-log.ts).
 * In a cluster the group's generation and members are recorded there too
 * at the end of each rebalance, as Kafka's coordinator does: a broker that
 * takes the group over keeps its members, who go on heartbeating, instead
 * of starting it empty (the first member back would take every partition
 * while the others still work theirs). On a single node the same record
 * goes into the group's file, after the members have their assignments
 * (best effort: a crash before it is written makes them rejoin), so that a
 * restarted broker's groups go on without a rebalance, as Kafka's do.
 */

import { ThrottledLog } from "../../util/throttled-log.js";
import { randomUUID } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { readJson, removeFileDurably, storedName, writeJsonDurably } from "../../util/persist.js";
import { ErrorCode } from "./errors.js";
import { CoordinatorMoved } from "./coordinator-topic.js";

export type GroupState = "Empty" | "PreparingRebalance" | "CompletingRebalance" | "Stable" | "Dead";

export interface JoinResult {
  error: number;
  generation: number;
  protocol: string;
  leader: string;
  memberId: string;
  members: Array<{ memberId: string; instanceId: string | null; metadata: Buffer }>;
}

export interface Member {
  id: string;
  instanceId: string | null;
  clientId: string;
  host: string;
  sessionTimeoutMs: number;
  rebalanceTimeoutMs: number;
  protocolType: string;
  protocols: Array<[string, Buffer]>;
  assignment: Buffer;
  /** Set while the member waits for the rebalance to complete its JoinGroup. */
  joining: ((r: JoinResult) => void) | null;
  /** Set while the member waits for the leader's assignment. */
  syncing: ((r: { error: number; assignment: Buffer }) => void) | null;
  sessionTimer: NodeJS.Timeout | null;
}

export interface CommittedOffset {
  offset: number;
  metadata: string | null;
  /** The leader epoch of the record before the offset, as the consumer committed it (KIP-320); absent or -1: none. */
  leaderEpoch?: number;
  /** When it was committed (ms since the epoch): a standalone commit expires after offsets_retention from then (KIP-211). */
  committedAt?: number;
}

/** What a commit stores for a partition: its leader epoch only when the consumer named one. */
export function committedOffset(p: { offset: number; metadata: string | null; leaderEpoch: number }, committedAt = Date.now()): CommittedOffset {
  return p.leaderEpoch >= 0 ? { offset: p.offset, metadata: p.metadata, leaderEpoch: p.leaderEpoch, committedAt } : { offset: p.offset, metadata: p.metadata, committedAt };
}

/** Where a cluster keeps committed offsets instead of this node's files: `write` resolves once the changes (null: removed) are durable. */
export interface OffsetsStore {
  /** `endingHolds`: producers whose transaction hold (writeHold) ends in the same write. */
  write(group: Group, entries: Array<[string, CommittedOffset | null]>, endingHolds?: readonly number[]): Promise<void>;
  /**
   * Records what an open transaction of producer `producerId` holds, for the
   * next coordinator to hold it too, as Kafka's offsets log keeps a
   * transaction's offsets pending until its marker (the hold ends in
   * `write`'s `endingHolds`); resolves once every in-sync replica has it (at
   * once for a hold too large to record, which is then held here only).
   */
  writeHold(group: Group, producerId: number, hold: TxnHold): Promise<void>;
  /**
   * Records the group's generation and members (null: the group is deleted)
   * for the next coordinator to take over, as Kafka's coordinator stores
   * group metadata at the end of each rebalance; resolves once every
   * in-sync replica has it (at once for a group too large to record, which
   * keeps the record before).
   */
  writeMembers(group: Group, saved: SavedMembers | null): Promise<void>;
}

/** Whether a hold is over: its time is up and no write of its end is under way (until one is stored, its offsets are not). */
function ranOut(hold: TxnHold, now: number): boolean {
  return hold.until <= now && (hold.ending ?? 0) === 0;
}

/** Offsets an open transaction holds (KIP-447) until it ends or `until` (ms since the epoch; Infinity: a decided commit's, until stored). */
export interface TxnHold {
  keys: Set<string>;
  until: number;
  /** Writes of its end under way: held until one is stored, but no longer lengthened (extendTxnHold) nor added to (holdForTxn starts another). */
  ending?: number;
}

/** A group's generation and members as its coordinator records them at the end of a rebalance (Stable) or once it is Empty. */
export interface SavedMembers {
  state: "Stable" | "Empty";
  /** Empty: since when (ms since the epoch); its offsets expire offsets_retention later (absent in records before it was kept). */
  since?: number;
  generation: number;
  protocolType: string;
  protocol: string;
  leader: string;
  /** Each member as it joined, with its metadata for the group's protocol and its assignment (base64). */
  members: Array<Pick<Member, "id" | "instanceId" | "clientId" | "host" | "sessionTimeoutMs" | "rebalanceTimeoutMs"> & { metadata: string; assignment: string }>;
}

const EMPTY = Buffer.alloc(0);
/** Limits on what the network can grow here. */
export const MAX_MEMBERS_PER_GROUP = 1000;
export const MAX_GROUPS = 10_000;
/** Most partitions whose offsets one group may hold. */
export const MAX_OFFSETS_PER_GROUP = 100_000;
/** Longest metadata string stored with an offset: Kafka's offset.metadata.max.bytes (which counts characters). */
export const MAX_OFFSET_METADATA = 4096;
/** Most transactions whose held offsets one group remembers (holdForTxn). */
const MAX_TXN_HOLDS = 1024;
/**
 * A group's failed write (its offsets, its generation) is logged at most
 * once in this long per group and kind, with the count of those not
 * logged: clients answered NOT_COORDINATOR find the coordinator again and
 * retry at once, and a full disk made every retry a log line (over a
 * thousand a second from one consumer).
 */
export const FAILURE_LOG_MS = 10_000;

export class Group {
  state: GroupState = "Empty";
  generation = 0;
  protocolType = "";
  protocol = "";
  leader = "";
  readonly members = new Map<string, Member>();
  /** Member ids handed out by a KIP-394 MEMBER_ID_REQUIRED answer, not yet joined; with their expiry. */
  readonly pending = new Map<string, NodeJS.Timeout>();
  readonly offsets = new Map<string, CommittedOffset>();
  /** Since when the group has been Empty (ms since the epoch): a consumer group's offsets expire offsets_retention later (KIP-211). */
  emptySince = Date.now();
  /** When it was read back from storage (load, or a takeover in a cluster); 0: made here. Its members get time to come back before any expiry. */
  restoredAt = 0;
  /** Keys with a commit being written to the replicated store, and how many (commit). */
  private readonly pendingKeys = new Map<string, number>();
  /** Single node: commits whose write has not landed, oldest first (offsetsToWrite). */
  private readonly unsaved: Array<[string, CommittedOffset]> = [];
  /** Single node: commits in flight whose keys were forgotten meanwhile: not applied once written. */
  private readonly cancelled = new WeakSet<[string, CommittedOffset]>();
  /**
   * Offsets that open transactions hold (KIP-447), by producer id, until
   * the transaction ends or `until` (ms since the epoch; a transaction is
   * aborted by then) passes: OffsetFetch's require_stable.
   */
  private readonly txnHolds = new Map<number, TxnHold>();
  private rebalanceTimer: NodeJS.Timeout | null = null;
  /** The generation whose leader's assignments came in (SyncGroup): only its first are taken. */
  private assignedGeneration = -1;
  /** A new group's join phase does not end before this time (the initial rebalance delay). */
  private holdUntil = 0;
  /**
   * While a new group waits out its initial delay (Kafka's InitialDelayedJoin):
   * whether a member joined during the current wait, which then waits once
   * more, and how much of the rebalance timeout is left for such waits.
   */
  private newMemberAdded = false;
  private initialDelayLeft = 0;
  /**
   * Members given this generation that have not asked for their assignment
   * (SyncGroup) yet; those still here after the rebalance timeout are put
   * out of the group, which rebalances (Kafka's pending sync): a member that
   * never syncs would otherwise hold the group in CompletingRebalance, or
   * keep partitions nobody reads.
   */
  private readonly pendingSync = new Set<string>();
  private syncTimer: NodeJS.Timeout | null = null;
  /** On a single node: the generation and members as last recorded, written with the group's file (persist). */
  recordedMembers: SavedMembers | null = null;

  constructor(
    readonly id: string,
    private readonly coordinator: GroupCoordinator,
  ) {}

  // ---- membership ----

  join(m: Omit<Member, "joining" | "syncing" | "sessionTimer" | "assignment">, version: number): Promise<JoinResult> {
    const fail = (error: number, memberId = m.id): JoinResult => ({ error, generation: -1, protocol: "", leader: "", memberId, members: [] });
    if (!this.hasRoomFor(m.id)) {
      // As Kafka: a member of a rebalance that has not rejoined while the group filled up is put out of it.
      const known = this.members.get(m.id);
      if (known !== undefined) this.remove(known, true);
      return Promise.resolve(fail(ErrorCode.GROUP_MAX_SIZE_REACHED, ""));
    }
    if (this.members.size > 0 && (m.protocolType !== this.protocolType || !this.sharesProtocol(m.protocols))) {
      return Promise.resolve(fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL));
    }
    let id = m.id;
    if (id === "") {
      id = `${m.clientId || "member"}-${randomUUID()}`;
      // KIP-345: a static member coming back (a restart) takes its instance's place at once; it never gets MEMBER_ID_REQUIRED.
      const previous = m.instanceId === null ? undefined : this.members.get(this.staticMemberId(m.instanceId) ?? "");
      if (previous !== undefined) return this.replaceStaticMember(previous, { ...m, id });
      if (version >= 4 && m.instanceId === null) {
        // KIP-394: the client must come back with this id; until then it holds no place in the group.
        // Ids handed out and not yet used are bounded too (they expire after a session); the client asks again.
        if (this.pending.size >= MAX_MEMBERS_PER_GROUP) return Promise.resolve(fail(ErrorCode.REBALANCE_IN_PROGRESS, ""));
        this.pending.set(
          id,
          setTimeout(() => {
            this.pending.delete(id);
            this.maybeCompleteJoin();
            this.coordinator.forgetIfUnused(this);
          }, m.sessionTimeoutMs).unref(),
        );
        return Promise.resolve(fail(ErrorCode.MEMBER_ID_REQUIRED, id));
      }
    } else if (m.instanceId !== null) {
      const refused = this.memberCheck(id, m.instanceId);
      if (refused !== ErrorCode.NONE) return Promise.resolve(fail(refused));
    } else if (!this.members.has(id) && !this.pending.has(id)) {
      return Promise.resolve(fail(ErrorCode.UNKNOWN_MEMBER_ID));
    }
    const pendingTimer = this.pending.get(id);
    if (pendingTimer !== undefined) {
      clearTimeout(pendingTimer);
      this.pending.delete(id);
    }
    let member = this.members.get(id);
    if (member === undefined) {
      member = { ...m, id, assignment: EMPTY, joining: null, syncing: null, sessionTimer: null };
      this.members.set(id, member);
      // A new group's initial delay waits once more for each newcomer (Kafka: only before its first generation).
      if (this.state === "PreparingRebalance" && this.generation === 0) this.newMemberAdded = true;
      if (this.members.size === 1) this.protocolType = m.protocolType;
    } else {
      // As Kafka's doCurrentMemberJoinGroup: a follower of a Stable group, or any member after the join phase, that joins
      // again with the same metadata (a lost JoinGroup answer, a needless rejoin) is told the current generation; only
      // the leader, or changed metadata, starts a rebalance.
      const unchanged = sameProtocols(member.protocols, m.protocols);
      if (unchanged && member.joining === null && ((this.state === "Stable" && id !== this.leader) || this.state === "CompletingRebalance")) {
        member.sessionTimeoutMs = m.sessionTimeoutMs;
        member.rebalanceTimeoutMs = m.rebalanceTimeoutMs;
        this.armSession(member);
        return Promise.resolve({ error: ErrorCode.NONE, generation: this.generation, protocol: this.protocol, leader: this.leader, memberId: id, members: id === this.leader ? this.roster() : [] });
      }
      member.protocols = m.protocols;
      member.sessionTimeoutMs = m.sessionTimeoutMs;
      member.rebalanceTimeoutMs = m.rebalanceTimeoutMs;
      // A rejoin replaces any join still waiting from the same member.
      member.joining?.(fail(ErrorCode.UNKNOWN_MEMBER_ID));
    }
    this.clearSession(member);
    const joined = new Promise<JoinResult>((resolve) => (member!.joining = resolve));
    if (this.state !== "PreparingRebalance") this.prepareRebalance();
    else this.maybeCompleteJoin();
    return joined;
  }

  /**
   * A static member joined again without its member id (it restarted): as
   * Kafka's coordinator (updateStaticMemberAndRebalance), the new id takes
   * the old member's place and assignment and the old id is fenced. In a
   * Stable group whose protocol it does not change nothing rebalances: the
   * member gets the current generation (with the leader as it was, so that a
   * restarted leader does not assign again) once the group is recorded, and
   * SyncGroup hands it its assignment. Otherwise it joins the rebalance.
   */
  private replaceStaticMember(previous: Member, m: Omit<Member, "joining" | "syncing" | "sessionTimer" | "assignment">): Promise<JoinResult> {
    const fenced: JoinResult = { error: ErrorCode.FENCED_INSTANCE_ID, generation: -1, protocol: "", leader: "", memberId: previous.id, members: [] };
    previous.joining?.(fenced);
    previous.syncing?.({ error: ErrorCode.FENCED_INSTANCE_ID, assignment: EMPTY });
    this.clearSession(previous);
    const member: Member = { ...m, assignment: previous.assignment, joining: null, syncing: null, sessionTimer: null };
    // In the old member's place: the order of members breaks ties between protocols (selectProtocol).
    const order = [...this.members.values()];
    this.members.clear();
    for (const each of order) this.members.set(each === previous ? member.id : each.id, each === previous ? member : each);
    const leaderBefore = this.leader;
    if (this.leader === previous.id) this.leader = member.id;
    if (this.pendingSync.delete(previous.id)) this.pendingSync.add(member.id);
    const joined = new Promise<JoinResult>((resolve) => (member.joining = resolve));
    // The member's join counts in the rebalance under way, or starts one.
    const joinRebalance = (): void => (this.state === "PreparingRebalance" ? this.maybeCompleteJoin() : this.prepareRebalance());
    if (this.state !== "Stable" || this.selectProtocol() !== this.protocol) {
      joinRebalance();
      return joined;
    }
    const generation = this.generation;
    const answer = (recorded: boolean): void => {
      if (this.members.get(member.id) !== member || member.joining === null) return; // replaced again, or answered by a rebalance
      if (!recorded || this.state !== "Stable" || this.generation !== generation) return joinRebalance();
      const resolve = member.joining;
      member.joining = null;
      this.armSession(member);
      resolve({ error: ErrorCode.NONE, generation, protocol: this.protocol, leader: leaderBefore, memberId: member.id, members: [] });
    };
    const store = this.coordinator.store;
    if (store === null) {
      answer(true);
      this.recordLocally();
    } else {
      // Recorded first, as every change of members in a cluster: the next coordinator must know the new id.
      this.membersRecorded(store).then(
        () => answer(true),
        (err: unknown) => {
          this.coordinator.warnFailure(this.id, "members", `group ${this.id}: static member ${m.instanceId} not recorded: ${(err as Error).message}`);
          answer(false);
        },
      );
    }
    return joined;
  }

  private sharesProtocol(protocols: Array<[string, Buffer]>): boolean {
    const names = new Set(protocols.map(([n]) => n));
    for (const name of this.candidateProtocols()) if (names.has(name)) return true;
    return false;
  }

  /**
   * The group's protocol as Kafka's coordinator selects it: of those every
   * member supports, the one most members prefer (each votes for the first
   * of them in its own order); a tie goes to the earliest member's preference.
   */
  private selectProtocol(): string {
    const candidates = this.candidateProtocols();
    if (candidates.length <= 1) return candidates[0] ?? "";
    const votes = new Map<string, number>();
    for (const m of this.members.values()) {
      const choice = m.protocols.find(([n]) => candidates.includes(n))?.[0];
      if (choice !== undefined) votes.set(choice, (votes.get(choice) ?? 0) + 1);
    }
    let best = candidates[0];
    for (const c of candidates) if ((votes.get(c) ?? 0) > (votes.get(best) ?? 0)) best = c;
    return best;
  }

  /** Protocols every current member supports, in the first member's order of preference. */
  private candidateProtocols(): string[] {
    const all = [...this.members.values()];
    if (all.length === 0) return [];
    return all[0].protocols.map(([n]) => n).filter((n) => all.every((mm) => mm.protocols.some(([x]) => x === n)));
  }

  private prepareRebalance(): void {
    const wasEmpty = this.state === "Empty";
    this.state = "PreparingRebalance";
    this.clearPendingSync();
    // Anyone waiting for an assignment of the old generation must rejoin.
    for (const m of this.members.values()) this.answerSync(m, ErrorCode.REBALANCE_IN_PROGRESS);
    const timeout = this.rebalanceTimeoutMs();
    if (this.rebalanceTimer !== null) clearTimeout(this.rebalanceTimer);
    if (wasEmpty) {
      // A new group waits a moment for more members to arrive (KIP-134) before it settles, and a moment more after each
      // newcomer, within the rebalance timeout (endInitialDelay).
      const delay = Math.min(this.coordinator.initialRebalanceDelayMs, timeout);
      this.newMemberAdded = false;
      this.initialDelayLeft = timeout - delay;
      this.holdUntil = Date.now() + delay;
      this.rebalanceTimer = setTimeout(() => this.endInitialDelay(), delay);
    } else {
      // The rebalance ends when every member has rejoined, or at the timeout without the laggards.
      this.holdUntil = 0;
      this.rebalanceTimer = setTimeout(() => this.completeJoin(), timeout);
    }
    this.rebalanceTimer.unref();
    this.maybeCompleteJoin();
  }

  /** The longest rebalance timeout of the members: how long the group waits for them to rejoin, and to sync. */
  private rebalanceTimeoutMs(): number {
    let timeout = 0;
    for (const m of this.members.values()) timeout = Math.max(timeout, m.rebalanceTimeoutMs);
    return timeout;
  }

  /** A new group's initial delay is over: it waits once more if a member joined meanwhile and time is left, as Kafka's InitialDelayedJoin. */
  private endInitialDelay(): void {
    if (this.state !== "PreparingRebalance") return;
    const delay = Math.min(this.coordinator.initialRebalanceDelayMs, this.initialDelayLeft);
    if (this.newMemberAdded && delay > 0) {
      this.newMemberAdded = false;
      this.initialDelayLeft -= delay;
      this.holdUntil = Date.now() + delay;
      this.rebalanceTimer = setTimeout(() => this.endInitialDelay(), delay);
      this.rebalanceTimer.unref();
      return;
    }
    this.holdUntil = 0;
    this.completeJoin();
  }

  /** As Kafka's hasAllMembersJoined: every member has rejoined, and those handed a member id (KIP-394) have joined with it. */
  private maybeCompleteJoin(): void {
    if (this.state !== "PreparingRebalance" || Date.now() < this.holdUntil || this.pending.size > 0) return;
    for (const m of this.members.values()) if (m.joining === null) return;
    this.completeJoin();
  }

  private completeJoin(): void {
    if (this.state !== "PreparingRebalance") return;
    if (this.rebalanceTimer !== null) clearTimeout(this.rebalanceTimer);
    this.rebalanceTimer = null;
    // Members that did not rejoin in time are out.
    for (const m of [...this.members.values()]) if (m.joining === null) this.remove(m, false);
    if (this.members.size === 0) {
      this.becomeEmpty();
      return;
    }
    this.generation++;
    this.protocol = this.selectProtocol();
    if (!this.members.has(this.leader)) this.leader = this.members.keys().next().value!;
    this.state = "CompletingRebalance";
    const roster = this.roster();
    for (const m of this.members.values()) {
      const resolve = m.joining!;
      m.joining = null;
      m.assignment = EMPTY;
      this.armSession(m);
      this.pendingSync.add(m.id);
      resolve({ error: ErrorCode.NONE, generation: this.generation, protocol: this.protocol, leader: this.leader, memberId: m.id, members: m.id === this.leader ? roster : [] });
    }
    const generation = this.generation;
    this.syncTimer = setTimeout(() => this.expirePendingSync(generation), this.rebalanceTimeoutMs());
    this.syncTimer.unref();
  }

  /** The rebalance timeout passed since the generation began: members that have not synced are out, and the others rebalance. */
  private expirePendingSync(generation: number): void {
    this.syncTimer = null;
    if (generation !== this.generation || (this.state !== "CompletingRebalance" && this.state !== "Stable") || this.pendingSync.size === 0) return;
    const late = [...this.pendingSync];
    this.pendingSync.clear();
    this.coordinator.log(`group ${this.id}: ${late.join(", ")} did not sync within the rebalance timeout`);
    for (const id of late) {
      const m = this.members.get(id);
      if (m !== undefined) this.remove(m, false);
    }
    this.prepareRebalance();
  }

  /** A member asked for its assignment, or left: the group no longer waits for it to sync. */
  private synced(memberId: string): void {
    if (this.pendingSync.delete(memberId) && this.pendingSync.size === 0) this.clearPendingSync();
  }

  private clearPendingSync(): void {
    this.pendingSync.clear();
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
  }

  /**
   * Answers a member waiting in SyncGroup. Its session runs from now: Kafka
   * does not expire a member while it waits for the leader's assignment
   * (clients do not heartbeat then), only after.
   */
  private answerSync(m: Member, error: number, assignment: Buffer = EMPTY): void {
    const resolve = m.syncing;
    if (resolve === null) return;
    m.syncing = null;
    this.armSession(m);
    resolve({ error, assignment });
  }

  /** The members as the leader's JoinGroup answer lists them, each with its metadata for the group's protocol. */
  private roster(): JoinResult["members"] {
    return [...this.members.values()].map((m) => ({ memberId: m.id, instanceId: m.instanceId, metadata: m.protocols.find(([n]) => n === this.protocol)?.[1] ?? EMPTY }));
  }

  /**
   * `protocolType` and `protocolName` (SyncGroup v5+, KIP-559) are what the
   * member took from its JoinGroup answer, null when not given: as Kafka's
   * validateSyncGroup, after who the member is and its generation, one that
   * differs from the group's is INCONSISTENT_GROUP_PROTOCOL.
   */
  sync(
    memberId: string,
    instanceId: string | null,
    generation: number,
    assignments: Array<[string, Buffer]>,
    protocolType: string | null = null,
    protocolName: string | null = null,
  ): Promise<{ error: number; assignment: Buffer }> {
    const refused = this.memberCheck(memberId, instanceId);
    if (refused !== ErrorCode.NONE) return Promise.resolve({ error: refused, assignment: EMPTY });
    const m = this.members.get(memberId)!;
    if (generation !== this.generation) return Promise.resolve({ error: ErrorCode.ILLEGAL_GENERATION, assignment: EMPTY });
    if ((protocolType !== null && protocolType !== this.protocolType) || (protocolName !== null && protocolName !== this.protocol)) {
      return Promise.resolve({ error: ErrorCode.INCONSISTENT_GROUP_PROTOCOL, assignment: EMPTY });
    }
    this.touch(m);
    if (this.state === "PreparingRebalance") return Promise.resolve({ error: ErrorCode.REBALANCE_IN_PROGRESS, assignment: EMPTY });
    this.synced(memberId);
    if (this.state === "Stable") return Promise.resolve({ error: ErrorCode.NONE, assignment: m.assignment });
    const waiting = new Promise<{ error: number; assignment: Buffer }>((resolve) => (m.syncing = resolve));
    // The leader's assignments, once per generation (a repeat while they are being recorded only waits with the others).
    if (memberId === this.leader && this.assignedGeneration !== this.generation) {
      this.assignedGeneration = this.generation;
      for (const [id, a] of assignments) {
        const target = this.members.get(id);
        if (target) target.assignment = a;
      }
      const store = this.coordinator.store;
      if (store === null) {
        this.completeSync();
        this.recordLocally();
      } else {
        // As Kafka's coordinator: the members get their assignments once the generation is recorded for the next
        // coordinator, so that a member with an assignment is known there; a failed record starts the rebalance again.
        const generation = this.generation;
        const current = (): boolean => this.generation === generation && this.state === "CompletingRebalance";
        this.membersRecorded(store).then(
          () => {
            this.coordinator.failureOver(this.id, "members");
            if (current()) this.completeSync();
          },
          (err: unknown) => {
            this.coordinator.warnFailure(this.id, "members", `group ${this.id}: generation ${generation} not recorded: ${(err as Error).message}`);
            if (current()) this.failSync(err instanceof CoordinatorMoved ? ErrorCode.NOT_COORDINATOR : ErrorCode.COORDINATOR_NOT_AVAILABLE);
          },
        );
      }
    }
    return waiting;
  }

  /** Kafka's order: who the member is, then its generation, then the group's state. */
  heartbeat(memberId: string, instanceId: string | null, generation: number): number {
    if (this.state === "Dead") return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    const refused = this.memberCheck(memberId, instanceId);
    if (refused !== ErrorCode.NONE) return refused;
    if (generation !== this.generation) return ErrorCode.ILLEGAL_GENERATION;
    this.touch(this.members.get(memberId)!);
    // While the leader's assignment is awaited (CompletingRebalance), a member of the new generation is fine.
    return this.state === "PreparingRebalance" ? ErrorCode.REBALANCE_IN_PROGRESS : ErrorCode.NONE;
  }

  /**
   * Whether a request comes from a current member (Kafka's validateCurrentMember):
   * with a group.instance.id, the instance must be in the group under this
   * member id (an older id of a static member that joined again is fenced).
   */
  private memberCheck(memberId: string, instanceId: string | null): number {
    if (instanceId !== null) {
      const current = this.staticMemberId(instanceId);
      if (current === null) return ErrorCode.UNKNOWN_MEMBER_ID;
      if (current !== memberId) return ErrorCode.FENCED_INSTANCE_ID;
    }
    return this.members.has(memberId) ? ErrorCode.NONE : ErrorCode.UNKNOWN_MEMBER_ID;
  }

  /** The member id an instance id holds now (a static member that joins again takes its old id's place). */
  private staticMemberId(instanceId: string): string | null {
    let current: string | null = null;
    for (const m of this.members.values()) if (m.instanceId === instanceId) current = m.id;
    return current;
  }

  /**
   * Kafka's acceptJoiningMember (`group.max.size`): an Empty group takes
   * anyone; during the join phase a member that has rejoined, or anyone
   * while fewer than the most have; otherwise a member, or anyone while the
   * group has room. A static member coming back without its member id is
   * new here, as in Kafka. This bounds the members: past the join phase
   * those that did not rejoin are gone.
   */
  private hasRoomFor(memberId: string): boolean {
    if (this.state === "Empty" || this.state === "Dead") return true;
    if (this.state !== "PreparingRebalance") return this.members.has(memberId) || this.members.size < MAX_MEMBERS_PER_GROUP;
    if (this.members.get(memberId)?.joining) return true;
    let rejoined = 0;
    for (const m of this.members.values()) if (m.joining !== null) rejoined++;
    return rejoined < MAX_MEMBERS_PER_GROUP;
  }

  /** LeaveGroup v3 names a member by member id, instance id or both (an admin removing a static member knows only its instance). */
  leave(memberId: string, instanceId: string | null = null): number {
    if (instanceId !== null) {
      const current = this.staticMemberId(instanceId);
      if (current === null) return ErrorCode.UNKNOWN_MEMBER_ID;
      if (memberId !== "" && memberId !== current) return ErrorCode.FENCED_INSTANCE_ID;
      memberId = current;
    }
    const m = this.members.get(memberId);
    if (m === undefined) {
      // As Kafka: one handed a member id that leaves before joining with it is no longer waited for.
      const pendingTimer = this.pending.get(memberId);
      if (pendingTimer === undefined) return ErrorCode.UNKNOWN_MEMBER_ID;
      clearTimeout(pendingTimer);
      this.pending.delete(memberId);
      this.maybeCompleteJoin();
      this.coordinator.forgetIfUnused(this);
      return ErrorCode.NONE;
    }
    this.remove(m, true);
    return ErrorCode.NONE;
  }

  private remove(m: Member, rebalance: boolean): void {
    this.clearSession(m);
    this.members.delete(m.id);
    this.synced(m.id);
    m.joining?.({ error: ErrorCode.UNKNOWN_MEMBER_ID, generation: -1, protocol: "", leader: "", memberId: m.id, members: [] });
    m.syncing?.({ error: ErrorCode.UNKNOWN_MEMBER_ID, assignment: EMPTY });
    m.joining = null;
    m.syncing = null;
    if (!rebalance) return;
    if (this.members.size === 0) {
      if (this.rebalanceTimer !== null) clearTimeout(this.rebalanceTimer);
      this.rebalanceTimer = null;
      this.becomeEmpty();
    } else if (this.state === "PreparingRebalance") this.maybeCompleteJoin();
    else this.prepareRebalance();
  }

  private touch(m: Member): void {
    if (m.joining === null) this.armSession(m);
  }

  private armSession(m: Member): void {
    this.clearSession(m);
    m.sessionTimer = setTimeout(() => {
      m.sessionTimer = null;
      // A member waiting in JoinGroup or SyncGroup is not expected to heartbeat; its session starts again with the answer.
      if (this.members.get(m.id) === m && m.joining === null && m.syncing === null) {
        this.coordinator.log(`group ${this.id}: member ${m.id} session expired`);
        this.remove(m, true);
      }
    }, m.sessionTimeoutMs);
    m.sessionTimer.unref();
  }

  private clearSession(m: Member): void {
    if (m.sessionTimer !== null) clearTimeout(m.sessionTimer);
    m.sessionTimer = null;
  }

  /** The leader's assignments are in (and recorded, in a cluster): the group is Stable, and every member waiting gets its own. */
  private completeSync(): void {
    this.state = "Stable";
    for (const m of this.members.values()) this.answerSync(m, ErrorCode.NONE, m.assignment);
  }

  /** The generation could not be recorded: the members waiting are told `error`, and the group rebalances. */
  private failSync(error: number): void {
    for (const m of this.members.values()) {
      m.assignment = EMPTY;
      this.answerSync(m, error);
    }
    this.prepareRebalance();
  }

  /** The last member is gone: the group is Empty in a generation of its own, recorded (in a cluster) for the next coordinator, best effort: no member waits on it. */
  private becomeEmpty(): void {
    this.state = "Empty";
    this.emptySince = Date.now();
    this.generation++;
    this.protocol = "";
    this.leader = "";
    if (this.coordinator.store === null) this.recordLocally();
    else
      this.coordinator.store.writeMembers(this, this.savedMembers()).then(
        () => this.coordinator.failureOver(this.id, "members"),
        (err: unknown) => this.coordinator.warnFailure(this.id, "members", `group ${this.id}: its emptying not recorded: ${(err as Error).message}`),
      );
    this.coordinator.forgetIfUnused(this);
  }

  /** On a single node: records the generation and members in the group's file, best effort (no member waits on it). */
  private recordLocally(): void {
    this.recordedMembers = this.savedMembers();
    const generation = this.generation;
    this.save().then(
      () => this.coordinator.failureOver(this.id, "members"),
      (err: unknown) => this.coordinator.warnFailure(this.id, "members", `group ${this.id}: generation ${generation} not recorded: ${(err as Error).message}`),
    );
  }

  /**
   * Nothing to keep: no member, no member id handed out and not yet used, no
   * offset (committed or being written), no offsets a transaction holds
   * (forgotten, they would read as stable to require_stable readers).
   */
  get unused(): boolean {
    return this.state === "Empty" && this.members.size === 0 && this.pending.size === 0 && this.offsets.size === 0 && this.pendingKeys.size === 0 && !this.holdsForTxns();
  }

  /** Whether a transaction's hold is still running here (those run out are dropped). */
  holdsForTxns(now = Date.now()): boolean {
    for (const [producerId, hold] of this.txnHolds) if (ranOut(hold, now)) this.txnHolds.delete(producerId);
    return this.txnHolds.size > 0;
  }

  /**
   * Records the generation and members (a cluster) for the members waiting
   * on it, failed once offsets_commit_timeout passes, as Kafka bounds the
   * store of a group by offsets.commit.timeout.ms: a stalled disk or replica
   * held the SyncGroup answers (and a static member's JoinGroup) without
   * end. The write goes on; the group rebalances and records again.
   */
  private membersRecorded(store: OffsetsStore): Promise<void> {
    const ms = this.coordinator.timing.offsetsCommitTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`not stored within ${ms} ms (offsets_commit_timeout)`)), ms)));
    return Promise.race([store.writeMembers(this, this.savedMembers()), late]).finally(() => clearTimeout(timer));
  }

  /** The generation and members as OffsetsStore.writeMembers records them. */
  private savedMembers(): SavedMembers {
    return {
      state: this.state === "Empty" ? "Empty" : "Stable",
      ...(this.state === "Empty" ? { since: this.emptySince } : {}),
      generation: this.generation,
      protocolType: this.protocolType,
      protocol: this.protocol,
      leader: this.leader,
      members: [...this.members.values()].map((m) => ({
        id: m.id,
        instanceId: m.instanceId,
        clientId: m.clientId,
        host: m.host,
        sessionTimeoutMs: m.sessionTimeoutMs,
        rebalanceTimeoutMs: m.rebalanceTimeoutMs,
        metadata: (m.protocols.find(([n]) => n === this.protocol)?.[1] ?? EMPTY).toString("base64"),
        assignment: m.assignment.toString("base64"),
      })),
    };
  }

  /**
   * Takes over the generation and members another coordinator recorded:
   * the members are Stable with their assignments, each with a full session
   * from now to heartbeat this coordinator (one that does not is removed,
   * and the others rebalance).
   */
  restoreMembers(saved: SavedMembers): void {
    this.generation = saved.generation;
    this.protocolType = saved.protocolType;
    if (saved.state === "Empty" && Number.isFinite(saved.since)) this.emptySince = saved.since!;
    if (saved.state !== "Stable" || saved.members.length === 0) return;
    this.protocol = saved.protocol;
    this.leader = saved.leader;
    for (const m of saved.members.slice(0, MAX_MEMBERS_PER_GROUP)) {
      const member: Member = {
        id: m.id,
        instanceId: m.instanceId,
        clientId: m.clientId,
        host: m.host,
        sessionTimeoutMs: Math.min(Math.max(m.sessionTimeoutMs, this.coordinator.timing.minSessionTimeoutMs), this.coordinator.timing.maxSessionTimeoutMs),
        rebalanceTimeoutMs: m.rebalanceTimeoutMs,
        protocolType: saved.protocolType,
        protocols: [[saved.protocol, Buffer.from(m.metadata, "base64")]],
        assignment: Buffer.from(m.assignment, "base64"),
        joining: null,
        syncing: null,
        sessionTimer: null,
      };
      this.members.set(member.id, member);
      this.armSession(member);
    }
    if (!this.members.has(this.leader)) this.leader = this.members.keys().next().value!;
    this.state = "Stable";
  }

  // ---- offsets ----

  /**
   * Whether an OffsetCommit is accepted; a Kafka error code. As Kafka's
   * GroupCoordinator (validateOffsetCommit, doCommitOffsets): generation -1
   * is a consumer that assigns its own partitions (or an admin tool) and may
   * commit while the group is Empty; otherwise the member must be current and
   * of this generation. Members commit in Stable and in PreparingRebalance:
   * KafkaJS and librdkafka commit what they processed when they learn of a
   * rebalance, right before they rejoin, and refusing that commit makes the
   * partition's next owner process the same records again. Only in
   * CompletingRebalance, between the JoinGroup answers and the leader's
   * assignment, is a current member told to wait for the rebalance.
   */
  commitCheck(memberId: string, instanceId: string | null, generation: number): number {
    if (this.state === "Dead") return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    if (generation < 0 && this.state === "Empty") return ErrorCode.NONE;
    if (generation >= 0 || memberId !== "" || instanceId !== null) {
      const refused = this.memberCheck(memberId, instanceId);
      if (refused !== ErrorCode.NONE) return refused;
      if (generation !== this.generation) return ErrorCode.ILLEGAL_GENERATION;
    } else return ErrorCode.UNKNOWN_MEMBER_ID; // generation -1 and no member: only an Empty group (above) takes it
    if (this.state === "CompletingRebalance") return ErrorCode.REBALANCE_IN_PROGRESS;
    // A commit is a sign of life, as a heartbeat is.
    const m = this.members.get(memberId);
    if (m !== undefined) this.touch(m);
    return ErrorCode.NONE;
  }

  /**
   * Whether a TxnOffsetCommit that names its consumer (v3+, KIP-447) is
   * accepted, as Kafka's validateOffsetCommit for a transaction: the member
   * must be current and of this generation, so that a consumer the group
   * has moved on from (a zombie) cannot commit offsets of partitions
   * another member owns now. One that names nobody (v0–2, or generation -1
   * without a member) is not checked, as in Kafka. No REBALANCE_IN_PROGRESS:
   * the transaction's commit is what counts.
   */
  txnCommitCheck(memberId: string, instanceId: string | null, generation: number): number {
    if (this.state === "Dead") return ErrorCode.COORDINATOR_NOT_AVAILABLE;
    if (generation < 0 && memberId === "" && instanceId === null) return ErrorCode.NONE;
    const refused = this.memberCheck(memberId, instanceId);
    if (refused !== ErrorCode.NONE) return refused;
    return generation !== this.generation ? ErrorCode.ILLEGAL_GENERATION : ErrorCode.NONE;
  }

  /**
   * Records offsets and resolves once they are on disk. Replicated, they
   * are shown (OffsetFetch) only once every in-sync replica has them, as
   * Kafka keeps a commit pending until then: a fetch never sees an offset
   * that a failover could take back.
   */
  async commit(entries: Array<[string, CommittedOffset]>, endingHoldOf?: number): Promise<void> {
    const store = this.coordinator.store;
    if (store === null) {
      // Written with the group's offsets, applied (seen by OffsetFetch) only once written: a commit answered with an
      // error must not count, as Kafka's cache takes an offset only once its append succeeds.
      for (const e of entries) this.unsaved.push(e);
      this.countPending(entries, 1);
      try {
        if (entries.length > 0) await this.save();
        // Not those forgotten meanwhile (OffsetDelete, a deleted topic): as Kafka drops a commit whose pending entry went.
        for (const e of entries) if (!this.cancelled.has(e)) this.offsets.set(e[0], e[1]);
        if (endingHoldOf !== undefined) this.txnHolds.delete(endingHoldOf);
      } finally {
        for (const e of entries) {
          const at = this.unsaved.indexOf(e);
          if (at >= 0) this.unsaved.splice(at, 1);
        }
        this.countPending(entries, -1);
      }
      return;
    }
    // A hold ends in the write that stores its offsets: no coordinator after this one sees one without the other. Its end
    // is written even when this one does not hold it (run out, evicted, the group deleted, held by a coordinator before
    // this one): the log may still have it, and a record left there would be held again by the next coordinator.
    const ending = endingHoldOf === undefined ? undefined : this.txnHolds.get(endingHoldOf);
    if (ending !== undefined) ending.ending = (ending.ending ?? 0) + 1;
    this.countPending(entries, 1);
    try {
      await store.write(this, entries, endingHoldOf === undefined ? [] : [endingHoldOf]);
      for (const [k, v] of entries) this.offsets.set(k, v);
      if (ending !== undefined && this.txnHolds.get(endingHoldOf!) === ending) this.txnHolds.delete(endingHoldOf!);
    } finally {
      if (ending !== undefined) ending.ending! -= 1;
      this.countPending(entries, -1);
    }
  }

  private countPending(entries: Array<[string, CommittedOffset]>, delta: 1 | -1): void {
    for (const [k] of entries) {
      const n = (this.pendingKeys.get(k) ?? 0) + delta;
      if (n === 0) this.pendingKeys.delete(k);
      else this.pendingKeys.set(k, n);
    }
  }

  /** What the group's file holds of its offsets: those committed and those being written (single node). */
  offsetsToWrite(): Record<string, CommittedOffset> {
    const out = Object.fromEntries(this.offsets);
    for (const [k, v] of this.unsaved) out[k] = v;
    return out;
  }

  /**
   * A transaction of producer `producerId` holds offsets `keys` until it
   * ends (commit with `endingHoldOf`) or `until` passes. At most
   * MAX_TXN_HOLDS producers are remembered: past that the one that runs out
   * first is forgotten (its offsets read as stable, as before KIP-447). In a
   * cluster recordHold writes it down for the next coordinator.
   */
  holdForTxn(producerId: number, keys: readonly string[], until: number): void {
    let hold = this.txnHolds.get(producerId);
    // One whose end is being written is the last transaction's: the write ends it, not this one's; one run out is over.
    if (hold !== undefined && ((hold.ending ?? 0) > 0 || hold.until <= Date.now())) {
      this.txnHolds.delete(producerId);
      hold = undefined;
    }
    if (hold === undefined) {
      if (this.txnHolds.size >= MAX_TXN_HOLDS) {
        this.holdsForTxns(); // drops those run out first
        if (this.txnHolds.size >= MAX_TXN_HOLDS) this.txnHolds.delete(this.soonestHold());
      }
      hold = { keys: new Set(), until };
      this.txnHolds.set(producerId, hold);
    }
    hold.until = until;
    for (const k of keys) hold.keys.add(k);
  }

  /** In a cluster: writes producer `producerId`'s hold as it is now (OffsetsStore.writeHold); resolves at once on a single node. */
  recordHold(producerId: number): Promise<void> {
    const store = this.coordinator.store;
    const hold = this.txnHolds.get(producerId);
    return store === null || hold === undefined ? Promise.resolve() : store.writeHold(this, producerId, hold);
  }

  /**
   * A transaction of producer `producerId` decided to commit: its hold, if
   * still running, lasts until its offsets are stored, however long its
   * markers take (Kafka keeps them pending until the marker), or `until`.
   * Never starts a hold: one that ended (or is ending) stays ended, whatever
   * the order this and the commit arrive in.
   */
  extendTxnHold(producerId: number, until: number): Promise<void> {
    const hold = this.txnHolds.get(producerId);
    if (hold === undefined || (hold.ending ?? 0) > 0 || hold.until <= Date.now() || hold.until >= until) return Promise.resolve();
    hold.until = until;
    return this.recordHold(producerId);
  }

  /** The producer whose hold runs out first (of equals, the oldest): a decided commit's, the longest, goes last. */
  private soonestHold(): number {
    let soonest = -1;
    let until = Infinity;
    for (const [producerId, hold] of this.txnHolds) {
      if (soonest === -1 || hold.until < until) {
        soonest = producerId;
        until = hold.until;
      }
    }
    return soonest;
  }

  /** The holds as a coordinator's record of them says (ReplicatedOffsets.adopt); those run out are not taken. */
  restoreHold(producerId: number, keys: readonly string[], until: number): void {
    if (until > Date.now()) this.holdForTxn(producerId, keys, until);
  }

  /** Whether an open transaction holds the offset of `key` (UNSTABLE_OFFSET_COMMIT). */
  heldByTxn(key: string, now = Date.now()): boolean {
    for (const [producerId, hold] of this.txnHolds) {
      if (ranOut(hold, now)) this.txnHolds.delete(producerId);
      else if (hold.keys.has(key)) return true;
    }
    return false;
  }

  /**
   * Keys that have an offset, or a commit being written (not shown yet):
   * what a removal of the group or of a topic must write over, and what
   * counts against MAX_OFFSETS_PER_GROUP.
   */
  keys(): Set<string> {
    const out = new Set(this.offsets.keys());
    for (const k of this.pendingKeys.keys()) out.add(k);
    return out;
  }

  holdsKey(k: string): boolean {
    return this.offsets.has(k) || this.pendingKeys.has(k);
  }

  /** keys().size, without building it: the commits in flight are few. */
  keyCount(): number {
    let n = this.offsets.size;
    for (const k of this.pendingKeys.keys()) if (!this.offsets.has(k)) n++;
    return n;
  }

  /** The committed offsets past their retention at `now` (GroupCoordinator.expireOffsets); none held by a transaction. */
  expiredKeys(now: number, retentionMs: number): string[] {
    const held = new Set<string>();
    for (const hold of this.txnHolds.values()) for (const k of hold.keys) held.add(k);
    const out: string[] = [];
    const consumerGroup = this.protocolType !== "";
    if (consumerGroup && now - this.emptySince < retentionMs) return out;
    for (const [k, v] of this.offsets) {
      if (held.has(k) || this.pendingKeys.has(k)) continue;
      if (consumerGroup || now - (v.committedAt ?? now) >= retentionMs) out.push(k);
    }
    return out;
  }

  /** Forgets committed offsets (OffsetDelete) and resolves once that is on disk. */
  async forget(keys: string[]): Promise<void> {
    const store = this.coordinator.store;
    if (store === null) {
      for (const k of keys) this.offsets.delete(k);
      // Commits of these keys still being written are not written (or applied) after all.
      const gone = new Set(keys);
      for (let i = this.unsaved.length - 1; i >= 0; i--) {
        if (!gone.has(this.unsaved[i][0])) continue;
        this.cancelled.add(this.unsaved[i]);
        this.unsaved.splice(i, 1);
      }
      return this.save();
    }
    await store.write(this, keys.map((k) => [k, null]));
    for (const k of keys) this.offsets.delete(k);
  }

  /** Writes the group's file: the saves asked for while one is written are made by the next write together (persist). */
  private save(): Promise<void> {
    return this.coordinator.persist(this);
  }

  stop(): void {
    if (this.rebalanceTimer !== null) clearTimeout(this.rebalanceTimer);
    this.clearPendingSync();
    for (const t of this.pending.values()) clearTimeout(t);
    for (const m of this.members.values()) this.clearSession(m);
  }

  /** Stops the group for good, answering `error` to the members waiting on a join or sync (this node no longer coordinates it). */
  abandon(error: number): void {
    this.stop();
    this.state = "Dead";
    for (const m of this.members.values()) {
      m.joining?.({ error, generation: -1, protocol: "", leader: "", memberId: m.id, members: [] });
      m.syncing?.({ error, assignment: EMPTY });
      m.joining = null;
      m.syncing = null;
    }
  }
}

/** The broker's group settings (Kafka's group.initial.rebalance.delay.ms, group.min/max.session.timeout.ms, offsets.retention.minutes, offsets.retention.check.interval.ms). */
export interface GroupTiming {
  initialRebalanceDelayMs: number;
  /** Kafka's offsets.commit.timeout.ms: in a cluster, a record of the members not stored by then fails (membersRecorded). */
  offsetsCommitTimeoutMs: number;
  minSessionTimeoutMs: number;
  maxSessionTimeoutMs: number;
  offsetsRetentionMs: number;
  offsetsRetentionCheckIntervalMs: number;
}

export class GroupCoordinator {
  readonly groups = new Map<string, Group>();
  private readonly fileOps = new Map<string, Promise<void>>();
  /** Per group (the object: a group made again under its id writes for itself), its file write not yet begun. */
  private readonly queuedWrites = new WeakMap<Group, Promise<void>>();

  /** The cluster's replicated offsets, once set; null: this node's files. */
  store: OffsetsStore | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private closing = false;
  private expiring: Promise<void> | null = null;
  /** When a full broker's refusal of a new group was last logged. */
  private fullLoggedAt = -Infinity;
  /** Per group and kind of write, a failure being told (see FAILURE_LOG_MS). */
  private readonly failuresTold = new ThrottledLog(FAILURE_LOG_MS, MAX_GROUPS * 2);

  constructor(
    private readonly dir: string,
    readonly timing: GroupTiming,
    readonly log: (line: string) => void,
    /** For what an operator should see: a write that failed. */
    readonly warn: (line: string) => void = log,
  ) {}

  /**
   * Logs `line`, a failed write of `kind` for group `id`, unless one was
   * logged less than FAILURE_LOG_MS ago (counted, and told with the next).
   */
  warnFailure(id: string, kind: string, line: string, warn: (line: string) => void = this.warn): void {
    const told = this.failuresTold.failed(`${kind}\0${id}`);
    if (told === null) return;
    warn(told.heldBack > 0 ? `${line} (and ${told.heldBack} more such failure(s) in the last ${Math.round(told.sinceMs / 1000)} s)` : line);
  }

  /** A write of `kind` for group `id` succeeded: a failure after it is logged at once (and this one told, after failures not logged). */
  failureOver(id: string, kind: string, warn: (line: string) => void = this.warn): void {
    const heldBack = this.failuresTold.over(`${kind}\0${id}`);
    if (heldBack > 0) warn(`group ${id}: written again, after ${heldBack} more failure(s) not logged`);
  }

  /** Starts looking for expired offsets (expireOffsets) every offsets_retention_check_interval, until close(). */
  startExpiry(): void {
    if (this.expiryTimer !== null || this.closing) return;
    this.expiryTimer = setInterval(() => void this.expireOffsets(), this.timing.offsetsRetentionCheckIntervalMs);
    this.expiryTimer.unref();
  }

  /**
   * Removes committed offsets past their retention, as Kafka does (KIP-211):
   * a consumer group's (one with a protocol type) once it has been Empty for
   * offsets_retention, all at once; a standalone group's (commits without
   * membership) each offsets_retention after it was committed. A group left
   * with nothing is removed, file and all. Offsets a transaction holds stay.
   * In a cluster each coordinator looks at the groups it coordinates.
   */
  expireOffsets(now = Date.now()): Promise<void> {
    if (this.expiring !== null) return this.expiring;
    this.expiring = this.expireNow(now).finally(() => (this.expiring = null));
    return this.expiring;
  }

  private async expireNow(now: number): Promise<void> {
    const retention = this.timing.offsetsRetentionMs;
    // A group read back from storage gives its members time to come back (a takeover restores a group as its last record
    // says, which may be Empty while members are on their way to rejoin).
    const grace = Math.min(this.timing.maxSessionTimeoutMs, retention);
    for (const g of [...this.groups.values()]) {
      if (this.closing) return;
      if (g.state !== "Empty" || g.members.size > 0 || g.pending.size > 0 || this.groups.get(g.id) !== g) continue;
      if (g.restoredAt > 0 && now - g.restoredAt < grace) continue;
      const expired = g.expiredKeys(now, retention);
      if (expired.length === 0) {
        // Nothing left to keep (its last offsets went while a transaction held others, say): gone, as Kafka's cleanup
        // removes such groups; in a cluster through the offsets store.
        if (g.unused) {
          if (this.store === null) this.forgetIfUnused(g);
          else await this.remove(g).catch((err: unknown) => this.warn(`group ${g.id}: not removed: ${(err as Error).message}`));
        }
        continue;
      }
      try {
        if (expired.length === g.keyCount() && !g.holdsForTxns()) {
          this.log(`group ${g.id}: Empty since ${new Date(g.emptySince).toISOString()}, its ${expired.length} committed offsets expired (offsets_retention): removed`);
          await this.remove(g);
        } else {
          this.log(`group ${g.id}: ${expired.length} committed offsets expired (offsets_retention)`);
          await g.forget(expired);
        }
      } catch (err) {
        this.warn(`group ${g.id}: expired offsets not removed: ${(err as Error).message}`);
      }
    }
  }

  get initialRebalanceDelayMs(): number {
    return this.timing.initialRebalanceDelayMs;
  }

  /** Whether a member's session timeout is out of the broker's bounds (INVALID_SESSION_TIMEOUT). */
  badSessionTimeout(ms: number): boolean {
    return ms < this.timing.minSessionTimeoutMs || ms > this.timing.maxSessionTimeoutMs;
  }

  async load(): Promise<void> {
    if (this.store !== null) return; // the store loads each partition's groups as this node comes to lead it
    let files: string[];
    try {
      files = await readdir(this.dir);
    } catch {
      return;
    }
    for (const f of files) {
      if (!f.endsWith(".json")) continue;
      const saved = (await readJson(join(this.dir, f))) as { group?: string; protocolType?: string; offsets?: Record<string, CommittedOffset>; members?: SavedMembers } | undefined;
      if (saved?.group === undefined) continue;
      const offsets = Object.entries(saved.offsets ?? {});
      const members = saved.members?.state === "Stable" && saved.members.members.length > 0 ? saved.members : null;
      // A group with no offset and no member has nothing to keep (forgetIfUnused).
      if (offsets.length === 0 && members === null) {
        // Its file too (left by a group whose last offsets went while a transaction held others, say).
        await removeFileDurably(join(this.dir, f)).catch((err: unknown) => this.warn(`group ${saved.group}: its file not removed: ${(err as Error).message}`));
        continue;
      }
      const g = new Group(saved.group, this);
      // What ListGroups and DescribeGroups report for the group until members join again ("consumer", usually).
      g.protocolType = saved.protocolType ?? "";
      // Stamps written before they were kept: the file's last write, when the group last committed or emptied.
      const written = (await stat(join(this.dir, f)).catch(() => null))?.mtimeMs ?? Date.now();
      for (const [k, v] of offsets) g.offsets.set(k, Number.isFinite(v.committedAt) ? v : { ...v, committedAt: written });
      g.emptySince = written;
      g.restoredAt = Date.now();
      // The members go on heartbeating without a rebalance, each with a full session from now; an Empty group keeps its generation.
      if (saved.members !== undefined) {
        g.restoreMembers(saved.members);
        g.recordedMembers = saved.members;
      }
      this.groups.set(g.id, g);
    }
  }

  /**
   * Forgets an Empty group with nothing to keep (Kafka's cleanupGroupMetadata
   * removes such groups), so that groups whose members came and went without
   * committing, or asked for a member id and never came back, do not fill
   * MAX_GROUPS. On one node only: in a cluster the group's record is the
   * offsets store's, which keeps it.
   */
  forgetIfUnused(g: Group): void {
    if (this.store !== null || !g.unused || this.groups.get(g.id) !== g) return;
    this.groups.delete(g.id);
    // Its file, if its members were recorded there, goes too (after any write already queued).
    this.fileOp(g.id, () => removeFileDurably(this.fileOf(g.id))).catch((err: unknown) => this.warn(`group ${g.id}: its file not removed: ${(err as Error).message}`));
  }

  /** The group, created if `create` (null when absent, or when too many groups exist). */
  group(id: string, create: boolean): Group | null {
    let g = this.groups.get(id);
    if (g === undefined && create) {
      if (this.groups.size < MAX_GROUPS) {
        g = new Group(id, this);
        this.groups.set(id, g);
      } else if (performance.now() - this.fullLoggedAt >= 60_000) {
        // Clients are told COORDINATOR_NOT_AVAILABLE and retry: the operator must hear why.
        this.fullLoggedAt = performance.now();
        this.warn(`kafka: group ${id} refused: ${MAX_GROUPS} groups exist (offsets of Empty groups expire after offsets_retention; nagare group rm removes one)`);
      }
    }
    return g ?? null;
  }

  /**
   * Writes the group's file; the writes asked for while one is under way are
   * made by the next one together (it writes the group as it is then).
   */
  persist(g: Group): Promise<void> {
    const queued = this.queuedWrites.get(g);
    if (queued !== undefined) return queued;
    const write = this.fileOp(g.id, () => {
      this.queuedWrites.delete(g);
      // A group deleted meanwhile is not written back.
      if (this.groups.get(g.id) !== g) return Promise.resolve();
      return writeJsonDurably(this.fileOf(g.id), { group: g.id, protocolType: g.protocolType, offsets: g.offsetsToWrite(), members: g.recordedMembers ?? undefined });
    });
    this.queuedWrites.set(g, write);
    return write;
  }

  /** Deletes a group and its committed offsets (DeleteGroups): gone at once, and from disk when this resolves. */
  async remove(g: Group): Promise<void> {
    g.stop();
    if (this.groups.get(g.id) === g) this.groups.delete(g.id);
    if (this.store !== null) {
      // Both appended before anything is waited for: what a group made again under this id writes lands after them.
      await Promise.all([this.store.write(g, [...g.keys()].map((k) => [k, null])), this.store.writeMembers(g, null)]);
    } else await this.fileOp(g.id, () => removeFileDurably(this.fileOf(g.id)));
  }

  /** Forgets a group here without touching what is stored (another node coordinates it now). */
  drop(g: Group, error: number): void {
    g.abandon(error);
    if (this.groups.get(g.id) === g) this.groups.delete(g.id);
  }

  /** Runs file writes and removals of one group in order, so that a write begun before a delete cannot land after it. */
  private fileOp(id: string, op: () => Promise<void>): Promise<void> {
    const run = (this.fileOps.get(id) ?? Promise.resolve()).then(op);
    const tail = run.catch(() => undefined);
    this.fileOps.set(id, tail);
    void tail.then(() => {
      if (this.fileOps.get(id) === tail) this.fileOps.delete(id);
    });
    return run;
  }

  private fileOf(id: string): string {
    // Room for `.json.tmp` (the write's): a long id's file is named by its hash, the id is inside.
    return join(this.dir, `${storedName(id, ".json.tmp".length)}.json`);
  }

  /** Forgets offsets of a deleted topic's partitions in every group. */
  async forgetTopic(topic: string): Promise<void> {
    for (const g of this.groups.values()) {
      const gone = [...g.keys()].filter((k) => k.slice(0, k.lastIndexOf("/")) === topic);
      if (gone.length === 0) continue;
      if (this.store !== null) {
        // Best effort, as Kafka's cleanup: a group whose coordinator moved meanwhile keeps them until it is next here.
        await g.forget(gone).catch((err: unknown) => this.warn(`group ${g.id}: offsets of deleted topic ${topic} not forgotten: ${(err as Error).message}`));
      } else await g.forget(gone);
    }
  }

  /** Stops the groups; resolves once the file writes under way have landed (none lands after: the store may be gone then). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.expiryTimer !== null) clearInterval(this.expiryTimer);
    await this.expiring;
    for (const g of this.groups.values()) g.stop();
    await Promise.all([...this.fileOps.values()]);
  }
}

export function offsetKey(topic: string, partition: number): string {
  return `${topic}/${partition}`;
}

/** Whether two JoinGroup protocol lists are the same, names, metadata and order (Kafka's MemberMetadata.matches). */
function sameProtocols(a: Array<[string, Buffer]>, b: Array<[string, Buffer]>): boolean {
  return a.length === b.length && a.every(([name, meta], i) => name === b[i][0] && meta.equals(b[i][1]));
}
