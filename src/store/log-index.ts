/**
 * What both indexes share (the memory log's, live-index.ts, and the file
 * log's paged one): the subject table (an id per subject, and per id the
 * live count, the first and the last sequence; filters matched per id and
 * cached), the retention steps, and the queries a log answers from its
 * index without reading a message.
 */

import { hasWildcard, subjectMatches } from "../subjects/subject.js";
import type { Limits, LogState } from "./log.js";

export const DEAD = -1;

const MAX_CACHED_FILTERS = 256;

export class SubjectTable {
  private readonly names: string[] = [];
  private readonly ids = new Map<string, number>();
  private readonly freeIds: number[] = [];
  /** Per id: live messages, and the first and last live sequence (0 when none). */
  count: number[] = [];
  first: number[] = [];
  last: number[] = [];
  /** Subjects with at least one live message. */
  live = 0;
  private lastInterned = "";
  private lastId = -1;
  /** Per filter and subject id: 0 not known yet, 1 matches, 2 does not. */
  private readonly matchCache = new Map<string, Int8Array>();

  intern(subject: string): number {
    // Runs of one subject are the common case (a Kafka batch always is one).
    if (subject === this.lastInterned && this.lastId >= 0 && this.names[this.lastId] === subject) return this.lastId;
    let id = this.ids.get(subject);
    if (id === undefined) {
      id = this.freeIds.pop();
      if (id === undefined) {
        id = this.names.length;
        this.names.push(subject);
        this.count.push(0);
        this.first.push(0);
        this.last.push(0);
      } else {
        this.names[id] = subject;
        for (const cache of this.matchCache.values()) if (id < cache.length) cache[id] = 0;
      }
      this.ids.set(subject, id);
    }
    this.lastInterned = subject;
    this.lastId = id;
    return id;
  }

  /** A subject with no message left gives its id back, so a log whose subjects come and go keeps no name it no longer holds. */
  release(id: number): void {
    this.ids.delete(this.names[id]);
    this.names[id] = "";
    this.first[id] = 0;
    this.last[id] = 0;
    if (this.lastId === id) this.lastId = -1;
    this.freeIds.push(id);
  }

  /** Releases every id whose subject has no live message (after a load). */
  releaseDead(): void {
    for (let id = 0; id < this.names.length; id++) if (this.count[id] === 0 && this.names[id] !== "") this.release(id);
  }

  subjectOf(id: number): string {
    return this.names[id];
  }

  /** The id of a subject the table holds, or DEAD. */
  idOf(subject: string): number {
    return this.ids.get(subject) ?? DEAD;
  }

  /** Every id in use is below this. */
  get size(): number {
    return this.names.length;
  }

  countOf(subject: string): number {
    const id = this.ids.get(subject);
    return id === undefined ? 0 : this.count[id];
  }

  firstOf(subject: string): number {
    const id = this.ids.get(subject);
    return id === undefined ? 0 : this.first[id];
  }

  lastOf(subject: string): number {
    const id = this.ids.get(subject);
    return id === undefined ? 0 : this.last[id];
  }

  /** Whether subject `id` matches `filter`, cached per filter. */
  matchesId(filter: string, id: number): boolean {
    let cache = this.matchCache.get(filter);
    if (cache === undefined || cache.length <= id) {
      if (cache === undefined && this.matchCache.size >= MAX_CACHED_FILTERS) this.matchCache.clear();
      const grown = new Int8Array(Math.max(16, this.names.length * 2));
      if (cache !== undefined) grown.set(cache);
      cache = grown;
      this.matchCache.set(filter, cache);
    }
    let m = cache[id];
    if (m === 0) {
      m = subjectMatches(filter, this.names[id]) ? 1 : 2;
      cache[id] = m;
    }
    return m === 1;
  }

  /** -2: no live subject; -1: a wildcard or no filter; else the literal subject's id. */
  literalId(filter: string | undefined): number {
    if (filter === undefined || filter === ">" || hasWildcard(filter)) return -1;
    const id = this.ids.get(filter);
    return id === undefined || this.count[id] === 0 ? -2 : id;
  }

  /** Live messages of the subjects matching `filter` (undefined: all). */
  countMatching(filter: string | undefined, messages: number): number {
    if (filter === undefined || filter === ">") return messages;
    const literal = this.literalId(filter);
    if (literal !== -1) return literal < 0 ? 0 : this.count[literal];
    let n = 0;
    for (let id = 0; id < this.names.length; id++) if (this.count[id] > 0 && this.matchesId(filter, id)) n += this.count[id];
    return n;
  }

  /** The last live sequence of every subject matching `filter`, ascending. */
  lastPerSubject(filter?: string): number[] {
    const all = filter === undefined || filter === ">";
    const out: number[] = [];
    for (let id = 0; id < this.names.length; id++) {
      if (this.count[id] > 0 && (all || this.matchesId(filter!, id))) out.push(this.last[id]);
    }
    return out.sort((a, b) => a - b);
  }

  /** Live message counts of the subjects matching `filter`. */
  subjectCounts(filter?: string): Map<string, number> {
    const all = filter === undefined || filter === ">";
    const out = new Map<string, number>();
    for (let id = 0; id < this.names.length; id++) {
      if (this.count[id] > 0 && (all || this.matchesId(filter!, id))) out.set(this.names[id], this.count[id]);
    }
    return out;
  }

  /** Zeroes every count, first and last (before counting again on open). */
  resetCounts(): void {
    this.count.fill(0);
    this.first.fill(0);
    this.last.fill(0);
    this.live = 0;
  }
}

/** What the retention steps need of an index. */
export interface Evictable {
  readonly table: SubjectTable;
  readonly messages: number;
  readonly bytes: number;
  remove(seq: number): boolean;
  firstLive(): number;
}

/**
 * Removes what the limits no longer allow, oldest first, after messages of
 * the subjects `touched` were added; the removed sequences, ascending. Age
 * is the caller's, who knows the times.
 */
export function evictOverLimits(index: Evictable, limits: Limits, touched: Iterable<number>): number[] {
  const removed: number[] = [];
  const perSubject = limits.maxMsgsPerSubject ?? 0;
  const t = index.table;
  if (perSubject > 0) {
    for (const id of touched) {
      while (t.count[id] > perSubject) {
        const s = t.first[id];
        index.remove(s);
        removed.push(s);
      }
    }
  }
  if (limits.discard !== "new") {
    const maxMsgs = limits.maxMsgs ?? 0;
    const maxBytes = limits.maxBytes ?? 0;
    while ((maxMsgs > 0 && index.messages > maxMsgs) || (maxBytes > 0 && index.bytes > maxBytes)) {
      const s = index.firstLive();
      if (s === 0) break;
      index.remove(s);
      removed.push(s);
    }
  }
  if (removed.length > 1) removed.sort((a, b) => a - b);
  return removed;
}

/** Every subject id with live messages: what applying a per-subject limit to everything stored touches. */
export function liveSubjectIds(t: SubjectTable): number[] {
  const ids: number[] = [];
  for (let id = 0; id < t.size; id++) if (t.count[id] > 0) ids.push(id);
  return ids;
}

/** Sorted sequences to inclusive ranges [a0, b0, a1, b1, ...], merging across dead sequences. */
export function toRanges(seqs: readonly number[], sidAt: (seq: number) => number): number[] {
  const out: number[] = [];
  for (const s of seqs) {
    const n = out.length;
    if (n > 0) {
      const end = out[n - 1];
      let joinable = s > end;
      for (let x = end + 1; joinable && x < s; x++) if (sidAt(x) !== DEAD) joinable = false;
      if (joinable) {
        out[n - 1] = s;
        continue;
      }
    }
    out.push(s, s);
  }
  return out;
}

/** What a log's index answers from memory. */
export interface LogIndex extends Evictable {
  readonly removals: number;
  sidAt(seq: number): number;
  countAfter(after: number, filter?: string): number;
  deadBetween(from: number, to: number, max: number): number[];
}

/** The queries every log answers from its index alone, without reading a message. */
export abstract class IndexedLog<I extends LogIndex> {
  protected abstract index: I;

  get removals(): number {
    return this.index.removals;
  }

  get storedBytes(): number {
    return this.index.bytes;
  }

  has(seq: number): boolean {
    return this.index.sidAt(seq) !== DEAD;
  }

  lastSeqOf(subject: string): number {
    return this.index.table.lastOf(subject);
  }

  lastPerSubject(filter?: string): number[] {
    return this.index.table.lastPerSubject(filter);
  }

  subjectCounts(filter?: string): Map<string, number> {
    return this.index.table.subjectCounts(filter);
  }

  subjectCount(subject: string): number {
    return this.index.table.countOf(subject);
  }

  pendingAfter(after: number, filter?: string): number {
    return this.index.countAfter(after, filter);
  }

  deletedSequences(max: number): number[] {
    const st = this.state();
    return st.messages === 0 ? [] : this.index.deadBetween(st.firstSeq, st.lastSeq, max);
  }

  abstract state(): LogState;
}
