/**
 * Committed offsets in a cluster, replicated as Kafka replicates them: in the
 * internal topic `__consumer_offsets` (coordinator-topic.ts). A group
 * belongs to one partition, and the broker that leads that partition is the
 * group's coordinator. A commit is one record per (group, topic, partition)
 * key, appended to the group's partition and acknowledged once every
 * in-sync replica has it; a removed key is an empty record. An open
 * transaction's hold on a group's offsets (KIP-447) is a record too, one per
 * (group, producer id), emptied in the write that stores the transaction's
 * offsets, as Kafka keeps a transaction's offsets in this log pending until
 * its marker. An in-sync follower that takes the partition over loads the
 * groups, their offsets and holds from its copy.
 */

import type { StoredMessage } from "../../store/log.js";
import type { AccountDoor } from "./account-door.js";
import { CoordinatorTopic, partitionOfKey, token, untoken } from "./coordinator-topic.js";
import { ErrorCode } from "./errors.js";
import type { CommittedOffset, Group, OffsetsStore, SavedMembers, TxnHold } from "./groups.js";
import { OFFSETS_TOPIC } from "./topics.js";

/** Kafka's offsets.topic.num.partitions is 50; a few suffice to spread coordinators over a small cluster. */
export const OFFSETS_PARTITIONS = 6;
const SUBJECT_PREFIX = "$NG.KAFKA.OFFSETS.";

/** The partition of the offsets topic a group lives in. */
export function offsetsPartitionOf(group: string, partitions: number): number {
  return partitionOfKey(group, partitions);
}

/** The key of one committed offset: its subject. */
export function offsetSubject(group: string, offsetKey: string): string {
  const at = offsetKey.lastIndexOf("/");
  return `${SUBJECT_PREFIX}${token(group)}.${token(offsetKey.slice(0, at))}.${offsetKey.slice(at + 1)}`;
}

/** The key of a group's generation and members (writeMembers): one token after the prefix, which offset keys never are. */
function membersSubject(group: string): string {
  return `${SUBJECT_PREFIX}${token(group)}`;
}

/**
 * The key of a transaction's hold on a group's offsets: two tokens after the
 * prefix, the second `P` and the producer id (an offset key has three, a
 * group's members one; versions before holds were recorded skip it).
 */
function holdSubject(group: string, producerId: number): string {
  return `${SUBJECT_PREFIX}${token(group)}.P${producerId}`;
}

/** The group and producer a hold's subject names; null for any other subject. */
function parseHoldSubject(subject: string): { group: string; producerId: number } | null {
  if (!subject.startsWith(SUBJECT_PREFIX)) return null;
  const parts = subject.slice(SUBJECT_PREFIX.length).split(".");
  return parts.length === 2 && /^P\d+$/.test(parts[1]) ? { group: untoken(parts[0]), producerId: Number(parts[1].slice(1)) } : null;
}

/** A hold as recorded: `until` null is without end (read, never written: a decided commit's hold is bounded in a cluster). */
interface StoredHold {
  keys: string[];
  until: number | null;
}

/** The group whose members a subject records; null for any other subject. */
function parseMembersSubject(subject: string): string | null {
  const rest = subject.slice(SUBJECT_PREFIX.length);
  return subject.startsWith(SUBJECT_PREFIX) && rest.length > 0 && !rest.includes(".") ? untoken(rest) : null;
}

/** The group and offset key a subject names; null for one this version does not know. */
function parseSubject(subject: string): { group: string; key: string } | null {
  const parts = subject.slice(SUBJECT_PREFIX.length).split(".");
  if (!subject.startsWith(SUBJECT_PREFIX) || parts.length !== 3 || !/^\d+$/.test(parts[2])) return null;
  return { group: untoken(parts[0]), key: `${untoken(parts[1])}/${parts[2]}` };
}

interface StoredOffset {
  offset: number;
  metadata: string | null;
  /** Absent when the consumer committed none (and in records written before it was kept). */
  leaderEpoch?: number;
  protocolType: string;
}

export class ReplicatedOffsets extends CoordinatorTopic implements OffsetsStore {
  constructor(door: AccountDoor) {
    super(door, OFFSETS_TOPIC, OFFSETS_PARTITIONS, SUBJECT_PREFIX, "group");
  }

  protected adopt(p: number, records: StoredMessage[]): void {
    const found = new Map<string, Map<string, StoredOffset & { committedAt: number }>>();
    const members = new Map<string, SavedMembers>();
    const holds = new Map<string, Array<[number, StoredHold]>>();
    for (const m of records) {
      const held = parseHoldSubject(m.subject);
      if (held !== null) {
        const list = holds.get(held.group) ?? [];
        list.push([held.producerId, JSON.parse(m.data.toString()) as StoredHold]);
        holds.set(held.group, list);
        continue;
      }
      const owner = parseMembersSubject(m.subject);
      if (owner !== null) {
        const saved = JSON.parse(m.data.toString()) as SavedMembers;
        // An Empty record written before its time was kept: the group emptied when it was stored.
        if (saved.state === "Empty" && !Number.isFinite(saved.since)) saved.since = m.time;
        members.set(owner, saved);
        continue;
      }
      const at = parseSubject(m.subject);
      if (at === null) continue;
      // Committed when it was stored: a standalone group's offsets expire offsets_retention from then.
      const value = { ...(JSON.parse(m.data.toString()) as StoredOffset), committedAt: m.time };
      let g = found.get(at.group);
      if (g === undefined) found.set(at.group, (g = new Map()));
      g.set(at.key, value);
    }
    // An empty group with no offsets left is not brought back: nothing would ever remove it, and such groups would build up.
    const stable = [...members].filter(([, m]) => m.state === "Stable").map(([id]) => id);
    const now = Date.now();
    const holding = [...holds].filter(([, list]) => list.some(([, h]) => h.until === null || h.until > now)).map(([id]) => id);
    for (const id of new Set([...found.keys(), ...stable, ...holding])) {
      const g = this.door.groups.group(id, true);
      if (g === null) {
        this.door.log.warn(`kafka: ${OFFSETS_TOPIC} partition ${p}: group ${id} not loaded, too many groups`);
        continue;
      }
      let lastCommit = 0;
      for (const [k, v] of found.get(id) ?? []) {
        g.offsets.set(k, v.leaderEpoch !== undefined && v.leaderEpoch >= 0 ? { offset: v.offset, metadata: v.metadata, leaderEpoch: v.leaderEpoch, committedAt: v.committedAt } : { offset: v.offset, metadata: v.metadata, committedAt: v.committedAt });
        if (v.protocolType !== "" && g.members.size === 0) g.protocolType = v.protocolType;
        lastCommit = Math.max(lastCommit, v.committedAt);
      }
      // Without a record of its members, Empty since its last commit at the latest.
      if (lastCommit > 0) g.emptySince = lastCommit;
      g.restoredAt = Date.now();
      const saved = members.get(id);
      if (saved !== undefined) g.restoreMembers(saved);
      for (const [producerId, h] of holds.get(id) ?? []) g.restoreHold(producerId, h.keys, h.until ?? Infinity);
    }
  }

  /** Forgets partition `p`'s groups here; their members waiting on a join or sync are sent to the new coordinator. */
  protected drop(p: number, why: string): void {
    const count = this.partitionCount;
    let dropped = 0;
    for (const g of [...this.door.groups.groups.values()]) {
      if (offsetsPartitionOf(g.id, count) !== p) continue;
      this.door.groups.drop(g, ErrorCode.NOT_COORDINATOR);
      dropped++;
    }
    this.door.log.debug(`kafka ${OFFSETS_TOPIC} partition ${p}: ${dropped} group(s) dropped: ${why}`);
  }

  /**
   * Appends one record per key (null: removed) to the group's partition and
   * resolves once every in-sync replica has them; throws CoordinatorMoved,
   * after dropping the partition's groups here, when this broker cannot
   * write it any more.
   */
  writeMembers(group: Group, saved: SavedMembers | null): Promise<void> {
    const data = saved === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(saved));
    // A group too large to record in one message keeps the last one recorded; its members rejoin after a takeover.
    if (data.length > this.door.js.options.maxPayload) {
      this.door.log.warn(`kafka: group ${group.id}: its ${saved?.members.length} members are too many to record for another coordinator (${data.length} bytes)`);
      return Promise.resolve();
    }
    return this.append(this.partitionOf(group.id), group.id, [[membersSubject(group.id), data]]);
  }

  write(group: Group, entries: Array<[string, CommittedOffset | null]>, endingHolds: readonly number[] = []): Promise<void> {
    const records = entries.map(([key, value]): [string, Buffer] => [
      offsetSubject(group.id, key),
      value === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify({ offset: value.offset, metadata: value.metadata, leaderEpoch: value.leaderEpoch, protocolType: group.protocolType } satisfies StoredOffset)),
    ]);
    // After the offsets: records of one append are stored in order, so no copy holds the hold's end without them.
    for (const producerId of endingHolds) records.push([holdSubject(group.id, producerId), Buffer.alloc(0)]);
    return this.append(this.partitionOf(group.id), group.id, records);
  }

  writeHold(group: Group, producerId: number, hold: TxnHold): Promise<void> {
    const data = Buffer.from(JSON.stringify({ keys: [...hold.keys], until: hold.until === Infinity ? null : hold.until } satisfies StoredHold));
    // Held here only, as a group too large to record keeps its last record of members: its offsets read as stable after a takeover.
    if (data.length > this.door.js.options.maxPayload) {
      this.door.log.warn(`kafka: group ${group.id}: the ${hold.keys.size} offsets a transaction holds are too many to record for another coordinator (${data.length} bytes)`);
      return Promise.resolve();
    }
    return this.append(this.partitionOf(group.id), group.id, [[holdSubject(group.id, producerId), data]]);
  }
}
