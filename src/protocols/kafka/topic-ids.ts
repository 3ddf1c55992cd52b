/**
 * Kafka topic ids (KIP-516), which Metadata v10+ answers and Fetch v13+
 * names topics by. nagare stores none: a topic's id is derived from what
 * names it for good, its account, its stream and the time that stream was
 * made (in a cluster, the time it was placed, which every node reads from
 * etcd), so every broker gives the same id without a write, and a topic
 * deleted and made again under its name gets a new id, as in Kafka.
 */

import { createHash } from "node:crypto";
import type { AccountDoor } from "./account-door.js";
import { findTopic, streamNameOf, topicOf } from "./topics.js";

/**
 * Ids of one account's topics, both ways. Ids already worked out are kept
 * by stream and creation time; the way back from an id is rebuilt from the
 * account's topics when an id is not found, so it holds topics that exist
 * (or existed at the last rebuild) and no more.
 */
export class TopicIds {
  private readonly ids = new Map<string, string>();
  private names = new Map<string, string>();

  constructor(private readonly account: string) {}

  /** The id of the topic `topic` of stream `stream`, made at `created` (an ISO time). */
  idOf(stream: string, created: string, topic: string): string {
    const key = `${stream}\0${created}`;
    let id = this.ids.get(key);
    if (id === undefined) {
      // Bounded: topics deleted long ago are worked out again if ever asked for.
      if (this.ids.size >= MAX_KEPT) this.ids.clear();
      id = createHash("sha256").update(`${this.account}\0${stream}\0${created}`).digest("hex").slice(0, 32);
      // Never Kafka's reserved ids (all zeros, and zeros ending in 1): a 2^-127 chance, but cheap to rule out.
      if (/^0{31}[01]$/.test(id)) id = `1${id.slice(1)}`;
      this.ids.set(key, id);
    }
    if (this.names.size >= MAX_KEPT) this.names.clear();
    this.names.set(id, topic);
    return id;
  }

  /**
   * The name the topic with id `id` had when last seen; with `rebuild`
   * (or when none is known), the way back is first made again from
   * `topics` (each [stream, created, topic]). Undefined when none has it.
   */
  nameOf(id: string, topics: () => Iterable<[string, string, string]>, rebuild = false): string | undefined {
    if (!rebuild) {
      const known = this.names.get(id);
      if (known !== undefined) return known;
    }
    this.names = new Map();
    for (const [stream, created, topic] of topics()) this.idOf(stream, created, topic);
    return this.names.get(id);
  }
}

/** Ids (and names) kept per account at most. */
const MAX_KEPT = 65_536;

/** Every topic of the door's account as [stream, creation time, topic]: placed in the cluster, and this node's streams. */
export function* accountTopics(door: AccountDoor): Iterable<[string, string, string]> {
  const seen = new Set<string>();
  for (const p of door.door.cluster?.topics(door.account) ?? []) {
    seen.add(p.stream);
    yield [p.stream, p.created, p.topic];
  }
  for (const s of door.js.streams.values()) if (!seen.has(s.config.name)) yield [s.config.name, creationOf(s), topicOf(s)];
}

/** A stream's creation time as its topic id takes it: the placement's in a cluster (the same on every node), else its own. */
export function creationOf(s: { placed: string | undefined; created: Date }): string {
  return s.placed ?? s.created.toISOString();
}

/** The id of the account's topic `topic` now: the placed topic's in a cluster, else this node's stream's; undefined when there is none. */
export function topicIdOf(door: AccountDoor, topic: string): string | undefined {
  const placed = door.door.cluster?.topic(door.account, streamNameOf(topic));
  if (placed !== undefined && placed.topic === topic) return door.topicIds.idOf(placed.stream, placed.created, topic);
  const s = findTopic(door.js, topic);
  return s === undefined ? undefined : door.topicIds.idOf(s.config.name, creationOf(s), topic);
}

/** The account's topic with id `id`, if it has one. A stale name (the topic deleted, or made again) is found out and looked up afresh. */
export function topicById(door: AccountDoor, id: string): string | undefined {
  const all = (): Iterable<[string, string, string]> => accountTopics(door);
  let name = door.topicIds.nameOf(id, all);
  if (name !== undefined && topicIdOf(door, name) !== id) name = door.topicIds.nameOf(id, all, true);
  return name;
}
