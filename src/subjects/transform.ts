/**
 * Subject transforms, as nats-server's subject mapping defines them: a source
 * pattern and a destination built from the source's wildcard tokens, either
 * `$N` or a mapping function in braces: `{{wildcard(N)}}`,
 * `{{partition(count, N, ...)}}`, `{{split(N, sep)}}`,
 * `{{splitFromLeft(N, pos)}}`, `{{splitFromRight(N, pos)}}`,
 * `{{sliceFromLeft(N, size)}}`, `{{sliceFromRight(N, size)}}`,
 * `{{left(N, len)}}`, `{{right(N, len)}}`. N counts the source's `*` tokens
 * from 1. A `>` in the source must be matched by a `>` in the destination,
 * which carries the tokens it covered. Streams use this for
 * `subject_transform` (before storing) and `republish` (after).
 *
 * Error texts are nats-server's, since clients show them as they are.
 */

import { subjectMatches } from "./subject.js";

export class TransformError extends Error {}

const enum Fn {
  Literal,
  Wildcard,
  Partition,
  Split,
  SplitFromLeft,
  SplitFromRight,
  SliceFromLeft,
  SliceFromRight,
  Left,
  Right,
}

interface Step {
  fn: Fn;
  /** The literal token (Literal), or the source token positions the function reads. */
  text: string;
  at: number[];
  /** Partition count, split position, slice size or length. */
  n: number;
}

const FUNCTIONS: Record<string, Fn> = {
  wildcard: Fn.Wildcard,
  partition: Fn.Partition,
  split: Fn.Split,
  splitfromleft: Fn.SplitFromLeft,
  splitfromright: Fn.SplitFromRight,
  slicefromleft: Fn.SliceFromLeft,
  slicefromright: Fn.SliceFromRight,
  left: Fn.Left,
  right: Fn.Right,
};

const destErr = (what: string, token: string): TransformError => new TransformError(`invalid mapping destination: ${what} in ${token}`);

/** Tokens of a subject usable in a transform, or null: no empty token, nothing after `>`. */
function tokensOf(subject: string): { tokens: string[]; stars: number; tail: boolean } | null {
  if (subject === "") return null;
  const tokens = subject.split(".");
  let stars = 0;
  let tail = false;
  for (const t of tokens) {
    if (t === "" || tail) return null;
    if (t === ">") tail = true;
    else if (t === "*") stars++;
  }
  return { tokens, stars, tail };
}

function integer(s: string): number {
  const t = s.trim();
  return /^[-+]?\d+$/.test(t) ? Number(t) : NaN;
}

/** One destination token: a literal, `$N`, or `{{fn(args)}}`. */
function parseToken(token: string): { fn: Fn; indexes: number[]; n: number; text: string } {
  const literal = { fn: Fn.Literal, indexes: [], n: 0, text: token };
  if (token.length > 1 && token[0] === "$") {
    const i = integer(token.slice(1));
    // Anything else starting with `$` is a literal token (`$KV`, say), as in nats-server.
    return Number.isNaN(i) || token.slice(1).trim() !== token.slice(1) ? literal : { fn: Fn.Wildcard, indexes: [i], n: 0, text: "" };
  }
  if (!(token.length > 4 && token.startsWith("{{") && token.endsWith("}}"))) return literal;
  const m = /^\{\{\s*([A-Za-z]+)\s*\((.*)\)\s*\}\}$/.exec(token);
  const fn = m === null ? undefined : FUNCTIONS[m[1].toLowerCase()];
  if (m === null || fn === undefined) throw destErr("unknown function", token);
  const args = m[2].split(/,\s*/);
  if (fn === Fn.Wildcard) {
    if (args.length === 1 && args[0] === "") throw destErr("not enough arguments passed to the function", token);
    if (args.length > 1) throw destErr("too many arguments passed to the function", token);
    const i = integer(args[0]);
    if (Number.isNaN(i)) throw destErr("function argument is invalid or in the wrong format", token);
    return { fn, indexes: [i], n: 0, text: "" };
  }
  if (fn === Fn.Partition) {
    if (args.length < 2) throw destErr("not enough arguments passed to the function", token);
    const nums = args.map(integer);
    if (nums.some(Number.isNaN)) throw destErr("function argument is invalid or in the wrong format", token);
    return { fn, indexes: nums.slice(1), n: nums[0], text: "" };
  }
  if (args.length < 2) throw destErr("not enough arguments passed to the function", token);
  if (args.length > 2) throw destErr("too many arguments passed to the function", token);
  const i = integer(args[0]);
  if (Number.isNaN(i)) throw destErr("function argument is invalid or in the wrong format", token);
  if (fn === Fn.Split) {
    if (args[1].includes(" ") || args[1].includes(".")) throw destErr("function argument is invalid or in the wrong format", token);
    return { fn, indexes: [i], n: 0, text: args[1] };
  }
  const n = integer(args[1]);
  if (Number.isNaN(n)) throw destErr("function argument is invalid or in the wrong format", token);
  return { fn, indexes: [i], n, text: "" };
}

/** FNV-1a, 32 bits: the hash nats-server's partition function uses, so both put a subject in the same partition. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  const bytes = Buffer.from(s, "utf8");
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export class SubjectTransform {
  private readonly identity: boolean;

  private constructor(
    readonly src: string,
    readonly dest: string,
    private readonly srcTokens: string[],
    private readonly steps: Step[],
  ) {
    this.identity = src === ">" && dest === ">";
  }

  /** Checks and compiles a transform; throws TransformError with nats-server's text. */
  static parse(src: string, dest: string): SubjectTransform {
    if (src === "") src = ">";
    const s = tokensOf(src);
    const d = tokensOf(dest);
    if (s === null || d === null || d.stars > 0 || s.tail !== d.tail) throw new TransformError("invalid subject");
    // Source position of each `*`, by its 1-based number.
    const starAt: number[] = [];
    s.tokens.forEach((t, i) => {
      if (t === "*") starAt.push(i);
    });
    const steps: Step[] = [];
    for (const token of d.tokens) {
      const p = parseToken(token);
      if (p.fn === Fn.Literal) {
        steps.push({ fn: Fn.Literal, text: token, at: [], n: 0 });
        continue;
      }
      const at: number[] = [];
      for (const i of p.indexes) {
        if (i < 1 || i > s.stars) throw destErr(`wildcard index out of range`, s.stars === 0 ? token : `${token}: [${i}]`);
        at.push(starAt[i - 1]);
      }
      steps.push({ fn: p.fn, text: p.text, at, n: p.n });
    }
    return new SubjectTransform(src, dest, s.tokens, steps);
  }

  /** The transformed subject, or null when `subject` (a literal) is not matched by the source. */
  match(subject: string): string | null {
    if (this.identity) return subject;
    if (this.src !== ">" && !subjectMatches(this.src, subject)) return null;
    return this.apply(subject.split("."));
  }

  private apply(tokens: string[]): string {
    const out: string[] = [];
    for (const step of this.steps) {
      if (step.fn === Fn.Literal) {
        if (step.text === ">") {
          for (let i = this.srcTokens.length - 1; i < tokens.length; i++) out.push(tokens[i]);
          break;
        }
        out.push(step.text);
        continue;
      }
      const t = tokens[step.at[0]] ?? "";
      out.push(this.call(step, t, tokens));
    }
    return out.join(".");
  }

  private call(step: Step, t: string, tokens: string[]): string {
    const n = step.n;
    switch (step.fn) {
      case Fn.Wildcard:
        return t;
      case Fn.Partition: {
        let key = "";
        for (const i of step.at) key += tokens[i];
        return String(fnv1a(key) % n);
      }
      case Fn.SplitFromLeft:
        return n > 0 && n < t.length ? `${t.slice(0, n)}.${t.slice(n)}` : t;
      case Fn.SplitFromRight:
        return n > 0 && n < t.length ? `${t.slice(0, t.length - n)}.${t.slice(t.length - n)}` : t;
      case Fn.SliceFromLeft: {
        if (!(n > 0 && n < t.length)) return t;
        const parts: string[] = [];
        for (let i = 0; i < t.length; i += n) parts.push(t.slice(i, i + n));
        return parts.join(".");
      }
      case Fn.SliceFromRight: {
        if (!(n > 0 && n < t.length)) return t;
        const parts: string[] = [];
        const r = t.length % n;
        if (r > 0) parts.push(t.slice(0, r));
        for (let i = r; i < t.length; i += n) parts.push(t.slice(i, i + n));
        return parts.join(".");
      }
      case Fn.Split:
        return t
          .split(step.text)
          .filter((p) => p !== "")
          .join(".");
      case Fn.Left:
        return n > 0 && n < t.length ? t.slice(0, n) : t;
      case Fn.Right:
        return n > 0 && n < t.length ? t.slice(t.length - n) : t;
      default:
        return t;
    }
  }
}
