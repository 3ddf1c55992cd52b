/**
 * Subject patterns (with `*` and `>`) indexed by token, to find the ones a
 * pattern intersects without comparing it with every one: what keeps
 * creating the ten-thousandth stream as quick as the first (each create
 * checks that its subjects overlap no other stream's).
 */

class Node<T> {
  readonly children = new Map<string, Node<T>>();
  /** Values of patterns that end at this node, and how many times each was added. */
  readonly ends = new Map<T, number>();
}

/** Nodes a walk may still visit (intersecting's `budget`): past none, it throws WalkBudgetExceeded. */
export interface WalkBudget {
  nodes: number;
}

export class WalkBudgetExceeded extends Error {}

export class PatternIndex<T> {
  private readonly root = new Node<T>();

  add(pattern: string, value: T): void {
    let node = this.root;
    for (const t of pattern.split(".")) {
      let next = node.children.get(t);
      if (next === undefined) node.children.set(t, (next = new Node<T>()));
      node = next;
    }
    node.ends.set(value, (node.ends.get(value) ?? 0) + 1);
  }

  remove(pattern: string, value: T): void {
    const path: Array<[Node<T>, string]> = [];
    let node = this.root;
    for (const t of pattern.split(".")) {
      const next = node.children.get(t);
      if (next === undefined) return;
      path.push([node, t]);
      node = next;
    }
    const n = node.ends.get(value);
    if (n === undefined) return;
    if (n > 1) node.ends.set(value, n - 1);
    else node.ends.delete(value);
    // Prune what no pattern uses any more.
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, t] = path[i];
      const child = parent.children.get(t)!;
      if (child.ends.size > 0 || child.children.size > 0) break;
      parent.children.delete(t);
    }
  }

  /**
   * Values of the patterns that some subject matches together with
   * `pattern` (the same rule as subjectsIntersect). `budget` bounds the
   * nodes visited (patterns built so that a `*` meets many literals visit
   * each of them): a caller checking a request's thousands of patterns
   * shares one over all of them.
   */
  intersecting(pattern: string, budget?: WalkBudget): Set<T> {
    const out = new Set<T>();
    this.walk(this.root, pattern.split("."), 0, out, budget);
    return out;
  }

  private walk(node: Node<T>, tokens: string[], i: number, out: Set<T>, budget: WalkBudget | undefined): void {
    if (budget !== undefined && --budget.nodes < 0) throw new WalkBudgetExceeded("too many patterns visited");
    if (i === tokens.length) {
      for (const v of node.ends.keys()) out.add(v);
      return;
    }
    const t = tokens[i];
    // A stored `>` here takes whatever is left of the pattern (at least one token, which there is).
    const gt = node.children.get(">");
    if (gt !== undefined) for (const v of gt.ends.keys()) out.add(v);
    if (t === ">") {
      for (const [k, child] of node.children) if (k !== ">") this.collect(child, out, budget);
      return;
    }
    if (t === "*") {
      for (const [k, child] of node.children) if (k !== ">") this.walk(child, tokens, i + 1, out, budget);
      return;
    }
    const exact = node.children.get(t);
    if (exact !== undefined) this.walk(exact, tokens, i + 1, out, budget);
    const star = node.children.get("*");
    if (star !== undefined) this.walk(star, tokens, i + 1, out, budget);
  }

  /**
   * Whether some pattern matches `subject` as subjectMatches has it, every
   * token of `subject` taken literally: a stored subject's `*` or `>` (a
   * client may publish on one) is matched by a pattern's wildcard, or by
   * the same token, never taken as a wildcard itself (intersecting would).
   */
  matches(subject: string): boolean {
    return this.matchFrom(this.root, subject.split("."), 0);
  }

  private matchFrom(node: Node<T>, tokens: string[], i: number): boolean {
    if (i === tokens.length) return node.ends.size > 0;
    const gt = node.children.get(">");
    if (gt !== undefined && gt.ends.size > 0) return true;
    const t = tokens[i];
    const exact = node.children.get(t);
    if (exact !== undefined && this.matchFrom(exact, tokens, i + 1)) return true;
    // A pattern's `*` takes any token (the exact child above was it when the token is `*`).
    const star = t === "*" ? undefined : node.children.get("*");
    return star !== undefined && this.matchFrom(star, tokens, i + 1);
  }

  private collect(node: Node<T>, out: Set<T>, budget: WalkBudget | undefined): void {
    if (budget !== undefined && --budget.nodes < 0) throw new WalkBudgetExceeded("too many patterns visited");
    for (const v of node.ends.keys()) out.add(v);
    for (const child of node.children.values()) this.collect(child, out, budget);
  }
}
