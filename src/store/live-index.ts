/**
 * The memory log's index (the file log pages its own: paged-index.ts): per
 * sequence, the subject id, the stored size and a link to the next message
 * of the same subject; per subject, its first, last and count. This answers
 * liveness, per-subject questions, filtered "next" and pending counts,
 * purges and retention limits. 12 bytes per sequence, in chunks that are
 * dropped once dead.
 */

import { hasWildcard } from "../subjects/subject.js";
import type { CorruptRange, Limits, LogState, LostRange, PurgeOptions } from "./log.js";
import { DEAD, evictOverLimits, liveSubjectIds, SubjectTable, toRanges } from "./log-index.js";

/** Sequences per chunk: 4,096 x 12 bytes, so a stream with one message holds 48 KiB, not 768. */
const CHUNK = 1 << 12;
export { DEAD };

class Chunk {
  readonly sid = new Int32Array(CHUNK).fill(DEAD);
  readonly size = new Uint32Array(CHUNK);
  /** Distance to the next sequence of the same subject, 0 if none (yet). */
  readonly next = new Uint32Array(CHUNK);
  live = 0;
}

/**
 * How often messages older than `maxAgeMs` are looked for: a twentieth of
 * the age, within 10 ms .. 1 s. A message goes at most that long after its
 * age (nats-server times each expiry; a quarter of a 1 s age was up to
 * 250 ms late, and a KV get saw a value past its TTL: an outside test).
 */
export function agePeriodMs(maxAgeMs: number): number {
  return Math.min(1000, Math.max(10, Math.floor(maxAgeMs / 20)));
}

/** (Re)arms the timer that expires messages older than `maxAgeMs` (agePeriodMs). Returns null when there is no age limit. */
export function ageTimer(previous: NodeJS.Timeout | null, maxAgeMs: number | undefined, expire: () => void): NodeJS.Timeout | null {
  if (previous !== null) clearInterval(previous);
  if ((maxAgeMs ?? 0) <= 0) return null;
  const t = setInterval(expire, agePeriodMs(maxAgeMs!));
  t.unref();
  return t;
}

export class LiveIndex {
  messages = 0;
  bytes = 0;
  /** Highest sequence ever added. */
  high = 0;
  /** Messages removed so far (deleted, purged, evicted): lets readers tell that cached counts went stale. */
  removals = 0;
  /** Called for every message removed, so a log can keep per-file counters. */
  onRemove: ((seq: number, size: number) => void) | null = null;

  private chunks: Array<Chunk | undefined> = [];
  private chunkBase = 0;
  /** No live sequence is below this. */
  private low = 1;
  readonly table = new SubjectTable();

  private chunk(seq: number, create: boolean): Chunk | undefined {
    const c = Math.floor(seq / CHUNK) - this.chunkBase;
    if (c < 0) return undefined;
    let ch = this.chunks[c];
    if (ch === undefined && create) {
      while (this.chunks.length < c) this.chunks.push(undefined);
      ch = new Chunk();
      this.chunks[c] = ch;
    }
    return ch;
  }

  /** Records a stored message; `seq` is above every sequence added before. */
  add(seq: number, id: number, size: number): void {
    if (this.messages === 0) {
      // Empty (a purge may have moved the log far ahead): start the chunks at `seq`, not where they were.
      this.chunks = [];
      this.chunkBase = Math.floor(seq / CHUNK);
      this.low = seq;
    }
    const ch = this.chunk(seq, true)!;
    const i = seq % CHUNK;
    ch.sid[i] = id;
    ch.size[i] = size;
    ch.next[i] = 0;
    ch.live++;
    const prev = this.table.last[id];
    if (this.table.count[id]++ === 0) {
      this.table.first[id] = seq;
      this.table.live++;
    } else {
      this.chunk(prev, false)!.next[prev % CHUNK] = seq - prev;
    }
    this.table.last[id] = seq;
    this.messages++;
    this.bytes += size;
    if (seq > this.high) this.high = seq;
  }

  /** Subject id stored at `seq`, or DEAD. */
  sidAt(seq: number): number {
    const ch = this.chunk(seq, false);
    return ch === undefined ? DEAD : ch.sid[seq % CHUNK];
  }

  sizeAt(seq: number): number {
    const ch = this.chunk(seq, false);
    return ch === undefined || ch.sid[seq % CHUNK] === DEAD ? 0 : ch.size[seq % CHUNK];
  }

  /** Removes a live message; false if `seq` was not live. */
  remove(seq: number): boolean {
    const ch = this.chunk(seq, false);
    if (ch === undefined) return false;
    const i = seq % CHUNK;
    const id = ch.sid[i];
    if (id === DEAD) return false;
    const size = ch.size[i];
    ch.sid[i] = DEAD;
    ch.live--;
    this.messages--;
    this.bytes -= size;
    this.removals++;
    if (--this.table.count[id] === 0) {
      this.table.first[id] = 0;
      this.table.last[id] = 0;
      this.table.live--;
    } else {
      if (this.table.first[id] === seq) {
        // Follow the subject's chain; entries on it may be dead, the last one is live.
        let s = seq + ch.next[i];
        while (this.sidAt(s) !== id) {
          const step = this.chunk(s, false)?.next[s % CHUNK] ?? 0;
          s += step > 0 ? step : 1; // a broken link would be a bug; a linear step still ends at `last`
        }
        this.table.first[id] = s;
      }
      if (this.table.last[id] === seq) {
        let s = seq - 1;
        while (this.sidAt(s) !== id) s--;
        this.table.last[id] = s;
      }
    }
    this.onRemove?.(seq, size);
    return true;
  }

  /** Removes every live message in [from, to]; the removed sequences. */
  removeRange(from: number, to: number): number[] {
    const removed: number[] = [];
    for (let s = Math.max(from, this.low); s <= to && s <= this.high; s++) {
      const ch = this.chunk(s, false);
      if (ch === undefined || ch.live === 0) {
        s = (Math.floor(s / CHUNK) + 1) * CHUNK - 1;
        continue;
      }
      if (ch.sid[s % CHUNK] !== DEAD && this.remove(s)) removed.push(s);
    }
    this.firstLive();
    return removed;
  }

  /**
   * Forgets every sequence from `seq` on (a log truncated there): the live
   * ones are removed (newest first, so each subject's last moves down one
   * message at a time), and `seq` is the next one to be added.
   */
  truncateFrom(seq: number): void {
    for (let s = this.high; s >= seq && s >= this.low; s--) {
      const ch = this.chunk(s, false);
      if (ch === undefined || ch.live === 0) {
        s = Math.floor(s / CHUNK) * CHUNK; // the loop's s-- moves to the chunk before
        continue;
      }
      if (ch.sid[s % CHUNK] !== DEAD) this.remove(s);
    }
    if (seq - 1 < this.high) this.high = Math.max(0, seq - 1);
    if (this.low > seq) this.low = seq;
    // Chunks after the one holding `seq` hold nothing now (a subject's link into them is rewritten by its next add).
    const keep = Math.floor(seq / CHUNK) - this.chunkBase + 1;
    if (keep <= 0) this.chunks = [];
    else if (this.chunks.length > keep) this.chunks.length = keep;
  }

  /** Lowest live sequence, 0 if none. Drops chunks that died on the way. */
  firstLive(): number {
    let s = this.low;
    while (s <= this.high) {
      const ch = this.chunk(s, false);
      if (ch === undefined || ch.live === 0) {
        s = (Math.floor(s / CHUNK) + 1) * CHUNK;
        continue;
      }
      if (ch.sid[s % CHUNK] !== DEAD) break;
      s++;
    }
    // Never past the next sequence to be added: jumping a dead chunk can overshoot.
    if (s > this.high + 1) s = this.high + 1;
    this.low = s;
    // Chunks entirely below the first live sequence (and not the one being filled) are garbage.
    const dropTo = Math.min(Math.floor(s / CHUNK), Math.floor(this.high / CHUNK)) - this.chunkBase;
    if (dropTo > 0) {
      this.chunks.splice(0, dropTo);
      this.chunkBase += dropTo;
    }
    return s <= this.high ? s : 0;
  }

  /** The first live sequence after `after` whose subject matches `filter`, or 0. */
  nextMatch(after: number, filter?: string): number {
    if (filter !== undefined && filter !== ">" && !hasWildcard(filter)) {
      const id = this.table.idOf(filter);
      if (id === DEAD || this.table.count[id] === 0 || after >= this.table.last[id]) return 0;
      if (after < this.table.first[id]) return this.table.first[id];
      for (let s = after + 1; s <= this.table.last[id]; s++) if (this.sidAt(s) === id) return s;
      return 0;
    }
    const all = filter === undefined || filter === ">";
    for (let s = Math.max(after + 1, this.low); s <= this.high; s++) {
      const ch = this.chunk(s, false);
      if (ch === undefined || ch.live === 0) {
        s = (Math.floor(s / CHUNK) + 1) * CHUNK - 1;
        continue;
      }
      const id = ch.sid[s % CHUNK];
      if (id !== DEAD && (all || this.table.matchesId(filter!, id))) return s;
    }
    return 0;
  }

  /** Dead sequences in [from, to], ascending, at most `max`. */
  deadBetween(from: number, to: number, max: number): number[] {
    const out: number[] = [];
    for (let s = from; s <= to && out.length < max; s++) if (this.sidAt(s) === DEAD) out.push(s);
    return out;
  }

  /** Live messages after `after` matching `filter`. */
  countAfter(after: number, filter?: string): number {
    const all = filter === undefined || filter === ">";
    if (after < this.low) return this.table.countMatching(filter, this.messages);
    let n = 0;
    for (let s = after + 1; s <= this.high; s++) {
      const ch = this.chunk(s, false);
      if (ch === undefined || ch.live === 0) {
        s = (Math.floor(s / CHUNK) + 1) * CHUNK - 1;
        continue;
      }
      const id = ch.sid[s % CHUNK];
      if (id !== DEAD && (all || this.table.matchesId(filter!, id))) n++;
    }
    return n;
  }

  /**
   * The sequences a purge removes, as inclusive ranges [a0, b0, a1, b1, ...].
   * A range may span dead sequences, never a live one that stays.
   */
  planPurge(opts: PurgeOptions): number[] {
    const filter = opts.filter === ">" ? undefined : opts.filter;
    const upTo = opts.upTo !== undefined && opts.upTo > 0 ? opts.upTo : Infinity; // exclusive
    const keep = opts.keep !== undefined && opts.keep > 0 ? opts.keep : 0;
    const lo = this.firstLive();
    if (lo === 0) return [];
    if (filter === undefined) {
      let to = Math.min(this.high, upTo - 1);
      if (keep > 0) {
        let kept = 0;
        let s = this.high;
        for (; s >= lo && kept < keep; s--) if (this.sidAt(s) !== DEAD) kept++;
        to = Math.min(to, s);
      }
      return to >= lo ? [lo, to] : [];
    }
    // The newest `keep` matching messages stay, whatever `upTo` says.
    let keepFrom = Infinity;
    if (keep > 0) {
      let kept = 0;
      for (let s = this.high; s >= lo && kept < keep; s--) {
        const id = this.sidAt(s);
        if (id !== DEAD && this.table.matchesId(filter, id) && ++kept === keep) keepFrom = s;
      }
      if (kept < keep) return [];
    }
    const bound = Math.min(upTo, keepFrom);
    const seqs: number[] = [];
    for (let s = this.nextMatch(lo - 1, filter); s !== 0 && s < bound; s = this.nextMatch(s, filter)) seqs.push(s);
    return this.toRanges(seqs);
  }

  /** Sorted sequences to inclusive ranges, merging across dead sequences. */
  toRanges(seqs: readonly number[]): number[] {
    return toRanges(seqs, (seq) => this.sidAt(seq));
  }

  /** Removes what the limits no longer allow (oldest first) after messages of the subjects `touched` were added; the removed sequences. */
  evict(limits: Limits, touched: Iterable<number>): number[] {
    return evictOverLimits(this, limits, touched);
  }

  /** Removes every live message below `cutoff` (the first sequence young enough to stay); the removed sequences. */
  expireBefore(cutoff: number): number[] {
    const first = this.firstLive();
    return first === 0 || cutoff <= first ? [] : this.removeRange(first, cutoff - 1);
  }

  /** Applies `limits` to everything stored (on open and when limits change); the removed sequences. */
  enforce(limits: Limits): number[] {
    return this.evict(limits, (limits.maxMsgsPerSubject ?? 0) > 0 ? liveSubjectIds(this.table) : []);
  }

  /** The log's state as both logs report it. */
  state(lastSeq: number, corrupt: readonly CorruptRange[], lost: readonly LostRange[], error: string | null): LogState {
    const first = this.firstLive();
    const firstSeq = first === 0 ? lastSeq + 1 : first;
    return {
      firstSeq,
      lastSeq,
      messages: this.messages,
      bytes: this.bytes,
      subjects: this.table.live,
      deleted: first === 0 ? 0 : lastSeq - firstSeq + 1 - this.messages,
      corrupt: [...corrupt],
      lost: [...lost],
      error,
    };
  }
}
