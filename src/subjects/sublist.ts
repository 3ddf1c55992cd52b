/**
 * Subscription interest: a trie over subject tokens with `*` and `>` branches,
 * fronted by a bounded cache of match results keyed by literal subject.
 *
 * A match result groups queue subscribers by queue name so that the router can
 * pick one member per group. Results are cached and shared, so callers must
 * treat them as read-only.
 */

import type { Subscription } from "./subscription.js";

export class QueueGroup {
  /** Round-robin cursor; starts at a random member so cache rebuilds don't bias the first. */
  next: number;
  constructor(
    readonly name: string,
    readonly members: Subscription[],
  ) {
    this.next = members.length > 1 ? Math.floor(Math.random() * members.length) : 0;
  }
}

export class MatchResult {
  constructor(
    readonly plain: Subscription[],
    readonly queues: QueueGroup[],
  ) {}
  get size(): number {
    let n = this.plain.length;
    for (const q of this.queues) n += q.members.length;
    return n;
  }
}

class Level {
  literal: Map<string, TrieNode> | null = null;
  star: TrieNode | null = null;
  full: TrieNode | null = null;

  isEmpty(): boolean {
    return (this.literal === null || this.literal.size === 0) && this.star === null && this.full === null;
  }
}

class TrieNode {
  next: Level | null = null;
  plain: Set<Subscription> | null = null;
  queues: Map<string, Set<Subscription>> | null = null;

  isEmpty(): boolean {
    return (this.next === null || this.next.isEmpty()) && (this.plain === null || this.plain.size === 0) && (this.queues === null || this.queues.size === 0);
  }
}

export interface SublistStats {
  num_subscriptions: number;
  num_cache: number;
  num_inserts: number;
  num_removes: number;
  num_matches: number;
  cache_hit_rate: number;
  max_fanout: number;
  avg_fanout: number;
}

export const CACHE_MAX = 1024;
const CACHE_SWEEP_TO = 256;

export class Sublist {
  private readonly root = new Level();
  private readonly cache = new Map<string, MatchResult>();
  private count = 0;
  private inserts = 0;
  private removes = 0;
  private matches = 0;
  private cacheHits = 0;
  /**
   * The last subject matched and its result, until the next insert or
   * remove: a publisher's messages mostly repeat one subject (the same
   * string: the parsers reuse it), matched again with no hashing.
   */
  private lastSubject: string | null = null;
  private lastResult: MatchResult | null = null;

  get size(): number {
    return this.count;
  }

  insert(sub: Subscription): void {
    const tokens = sub.subject.split(".");
    let level = this.root;
    let node: TrieNode | null = null;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (t === "*") {
        node = level.star ??= new TrieNode();
      } else if (t === ">" && i === tokens.length - 1) {
        node = level.full ??= new TrieNode();
      } else {
        level.literal ??= new Map();
        node = level.literal.get(t) ?? null;
        if (node === null) {
          node = new TrieNode();
          level.literal.set(t, node);
        }
      }
      if (i < tokens.length - 1) level = node.next ??= new Level();
    }
    const n = node as TrieNode;
    if (sub.queue === null) {
      (n.plain ??= new Set()).add(sub);
    } else {
      n.queues ??= new Map();
      let members = n.queues.get(sub.queue);
      if (members === undefined) {
        members = new Set();
        n.queues.set(sub.queue, members);
      }
      members.add(sub);
    }
    this.count++;
    this.inserts++;
    this.invalidate(sub.subject);
  }

  /** Returns false when the subscription was not present. */
  remove(sub: Subscription): boolean {
    const tokens = sub.subject.split(".");
    const path: Array<{ level: Level; token: string; node: TrieNode }> = [];
    let level: Level | null = this.root;
    let node: TrieNode | null = null;
    for (let i = 0; i < tokens.length; i++) {
      if (level === null) return false;
      const t = tokens[i];
      if (t === "*") node = level.star;
      else if (t === ">" && i === tokens.length - 1) node = level.full;
      else node = level.literal?.get(t) ?? null;
      if (node === null) return false;
      path.push({ level, token: t, node });
      level = node.next;
    }
    const n = node as TrieNode;
    let removed = false;
    if (sub.queue === null) {
      removed = n.plain?.delete(sub) ?? false;
    } else {
      const members = n.queues?.get(sub.queue);
      if (members !== undefined) {
        removed = members.delete(sub);
        if (members.size === 0) n.queues!.delete(sub.queue);
      }
    }
    if (!removed) return false;
    // Prune empty nodes bottom-up so churn does not leak trie memory.
    for (let i = path.length - 1; i >= 0; i--) {
      const p = path[i];
      if (!p.node.isEmpty()) break;
      if (p.token === "*" && p.level.star === p.node) p.level.star = null;
      else if (p.token === ">" && p.level.full === p.node && i === path.length - 1) p.level.full = null;
      else p.level.literal?.delete(p.token);
    }
    this.count--;
    this.removes++;
    this.invalidate(sub.subject);
    return true;
  }

  match(subject: string): MatchResult {
    this.matches++;
    if (subject === this.lastSubject) {
      this.cacheHits++;
      return this.lastResult!;
    }
    const cached = this.cache.get(subject);
    if (cached !== undefined) {
      this.cacheHits++;
      this.lastSubject = subject;
      this.lastResult = cached;
      return cached;
    }
    // A miss is mostly a subject seen once (a request's unique reply subject, matched here and for every route): nothing is
    // allocated for what does not match, and a token is cut from the subject only where a level has literal children.
    const found: Found = { plain: null, queues: null };
    matchLevel(this.root, subject, 0, found);
    let result = EMPTY_RESULT;
    if (found.plain !== null || found.queues !== null) {
      const queues: QueueGroup[] = [];
      if (found.queues !== null) for (const [name, members] of found.queues) queues.push(new QueueGroup(name, members));
      result = new MatchResult(found.plain ?? [], queues);
    }
    if (this.cache.size >= CACHE_MAX) this.sweepCache();
    this.cache.set(subject, result);
    this.lastSubject = subject;
    this.lastResult = result;
    return result;
  }

  /** Whether anything at all is interested in a literal subject. */
  hasInterest(subject: string): boolean {
    return this.match(subject).size > 0;
  }

  stats(): SublistStats {
    let max = 0;
    let total = 0;
    for (const r of this.cache.values()) {
      const n = r.size;
      total += n;
      if (n > max) max = n;
    }
    return {
      num_subscriptions: this.count,
      num_cache: this.cache.size,
      num_inserts: this.inserts,
      num_removes: this.removes,
      num_matches: this.matches,
      cache_hit_rate: this.matches === 0 ? 0 : this.cacheHits / this.matches,
      max_fanout: max,
      avg_fanout: this.cache.size === 0 ? 0 : total / this.cache.size,
    };
  }

  /** All subscriptions, for monitoring. */
  *all(): IterableIterator<Subscription> {
    yield* walkLevel(this.root);
  }

  private sweepCache(): void {
    // Map iterates in insertion order: drop the oldest entries.
    let excess = this.cache.size - CACHE_SWEEP_TO;
    for (const key of this.cache.keys()) {
      if (excess-- <= 0) break;
      this.cache.delete(key);
    }
  }

  private invalidate(changed: string): void {
    this.lastSubject = null;
    this.lastResult = null;
    if (this.cache.size === 0) return;
    // A literal subscription can only affect the one cached subject equal to
    // it; wildcard changes drop the cache (rare: wildcards are set up once).
    if (changed.indexOf("*") < 0 && changed.indexOf(">") < 0) {
      this.cache.delete(changed);
    } else {
      this.cache.clear();
    }
  }
}

/** What a match found so far: nothing is allocated until something is. */
interface Found {
  plain: Subscription[] | null;
  queues: Map<string, Subscription[]> | null;
}

/** The result of a match that finds nothing, shared (results are read-only). */
const EMPTY_RESULT = new MatchResult([], []);

function collect(node: TrieNode, found: Found): void {
  if (node.plain !== null && node.plain.size > 0) {
    const plain = (found.plain ??= []);
    for (const s of node.plain) plain.push(s);
  }
  if (node.queues !== null && node.queues.size > 0) {
    const queues = (found.queues ??= new Map());
    for (const [name, members] of node.queues) {
      let list = queues.get(name);
      if (list === undefined) {
        list = [];
        queues.set(name, list);
      }
      for (const s of members) list.push(s);
    }
  }
}

/** Matches the token of `subject` that begins at `start` (and the rest after it) against `level`. */
function matchLevel(level: Level, subject: string, start: number, found: Found): void {
  const dot = subject.indexOf(".", start);
  const last = dot < 0;
  if (level.full !== null) collect(level.full, found);
  if (level.star !== null) {
    if (last) collect(level.star, found);
    else if (level.star.next !== null) matchLevel(level.star.next, subject, dot + 1, found);
  }
  if (level.literal !== null && level.literal.size > 0) {
    const node = level.literal.get(last ? (start === 0 ? subject : subject.slice(start)) : subject.slice(start, dot));
    if (node !== undefined) {
      if (last) collect(node, found);
      else if (node.next !== null) matchLevel(node.next, subject, dot + 1, found);
    }
  }
}

function* walkLevel(level: Level): IterableIterator<Subscription> {
  const nodes: TrieNode[] = [];
  if (level.literal !== null) nodes.push(...level.literal.values());
  if (level.star !== null) nodes.push(level.star);
  if (level.full !== null) nodes.push(level.full);
  for (const n of nodes) {
    if (n.plain !== null) yield* n.plain;
    if (n.queues !== null) for (const m of n.queues.values()) yield* m;
    if (n.next !== null) yield* walkLevel(n.next);
  }
}
