/**
 * Reader for nats-server's configuration file syntax ("conf" format), producing
 * a plain object tree that `optionsFromConf` maps onto ServerOptions.
 *
 * Supported: `key = value`, `key: value`, `key value`; quoted keys; nested
 * blocks (`name { ... }`, `name = { ... }`); arrays separated by commas or
 * newlines; `#` and `//` comments; double-quoted strings with escapes,
 * single-quoted raw strings and bare strings; integers with size suffixes;
 * floats; booleans (true/false/yes/no/on/off); `$VAR` references to an earlier
 * key in an enclosing block, or else to an environment variable; and
 * `include <file>`.
 *
 * Where nats-server's lexer is stricter we are lenient: two entries may share a
 * line without a separator (`{ store_dir: "/tmp/js" max_mem_store: 1GB }`).
 */

import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";

export interface ConfPosition {
  line: number;
  column: number;
  /** The included file the key came from; undefined for the top-level text. */
  file?: string;
}

/**
 * A configuration the server cannot honour. The message starts with where:
 * `file:line:column: ` as nats-server and compilers print it, or
 * `line L, column C: ` for text that came from no file.
 */
export class ConfError extends Error {
  readonly line: number | undefined;
  readonly column: number | undefined;
  readonly file: string | undefined;
  /** Every problem found, when several are reported at once (as nats-server does); else this one alone. */
  readonly problems: readonly ConfError[];

  constructor(message: string, pos?: ConfPosition, problems?: readonly ConfError[]) {
    // With `problems`, the message is theirs already positioned, one per line.
    super(pos && !problems ? `${describePosition(pos)}: ${message}` : message);
    this.name = "ConfError";
    this.line = pos?.line;
    this.column = pos?.column;
    this.file = pos?.file;
    this.problems = problems ?? [this];
  }

  /** One error for several problems, in file and line order; its position is the first one's. */
  static combine(problems: readonly ConfError[]): ConfError {
    if (problems.length === 1) return problems[0];
    // Files in the order their first problem was found, lines in order within each.
    const fileOrder = new Map<string | undefined, number>();
    for (const p of problems) if (!fileOrder.has(p.file)) fileOrder.set(p.file, fileOrder.size);
    const sorted = [...problems].sort(
      (a, b) => fileOrder.get(a.file)! - fileOrder.get(b.file)! || (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0),
    );
    const first = sorted[0];
    const pos = first.line === undefined ? undefined : { line: first.line, column: first.column ?? 0, file: first.file };
    return new ConfError(sorted.map((p) => p.message).join("\n"), pos, sorted);
  }
}

function describePosition(pos: ConfPosition): string {
  return pos.file ? `${pos.file}:${pos.line}:${pos.column}` : `line ${pos.line}, column ${pos.column}`;
}

export interface ParseConfOptions {
  /** Directory `include` paths are relative to (normally the config file's). Default: the working directory. */
  baseDir?: string;
  /** Where `$VAR` looks when no enclosing key matches. Default: process.env. */
  env?: Record<string, string | undefined>;
  /** Name used in error messages for the top-level text. */
  file?: string;
}

/** Deepest chain of nested includes accepted. */
export const MAX_INCLUDE_DEPTH = 10;
/** Blocks and arrays inside one another, per file: far past any real configuration, well inside the stack with every include. */
export const MAX_NESTING = 128;

interface MapMeta {
  positions: Map<string, ConfPosition>;
  usedVariables: Set<string>;
}

const META = Symbol("nagare.conf.meta");

type ConfMap = Record<string, unknown> & { [META]?: MapMeta };

function newMap(): ConfMap {
  const m: ConfMap = {};
  Object.defineProperty(m, META, {
    value: { positions: new Map(), usedVariables: new Set() } satisfies MapMeta,
    enumerable: false,
  });
  return m;
}

function metaOf(obj: unknown): MapMeta | undefined {
  if (obj === null || typeof obj !== "object") return undefined;
  return (obj as ConfMap)[META];
}

/** Where `key` was set in a block returned by parseConf (undefined for other objects). */
export function keyPosition(block: Record<string, unknown>, key: string): ConfPosition | undefined {
  return metaOf(block)?.positions.get(key);
}

/**
 * Whether `key` of a block returned by parseConf was referenced as a `$variable`.
 * nats-server does not complain about unknown keys that only serve as variables.
 */
export function usedAsVariable(block: Record<string, unknown>, key: string): boolean {
  return metaOf(block)?.usedVariables.has(key) ?? false;
}

export function parseConf(text: string, opts: ParseConfOptions = {}): Record<string, unknown> {
  const root = newMap();
  const ctx: Context = {
    env: opts.env ?? process.env,
    scopes: [root],
    includes: true,
  };
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // byte order mark
  const p = new Parser(text, opts.file, opts.baseDir ?? process.cwd(), ctx, 0);
  p.parseDocument(root);
  return root;
}

interface Context {
  env: Record<string, string | undefined>;
  /** Enclosing blocks, outermost first: where `$VAR` looks for earlier keys. */
  scopes: ConfMap[];
  /** Off while reading an environment value as a conf value. */
  includes: boolean;
}

const BOOL_RE = /^(true|false|yes|no|on|off)$/i;
const INT_RE = /^-?\d+$/;
const SIZE_RE = /^(-?\d+)([kmgtpe])(i?b?)$/i;
const FLOAT_RE = /^-?\d+\.\d+$/;
const SIZE_POWERS: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

/** Classifies an unquoted token as nats-server's lexer would. */
function bareValue(tok: string): unknown {
  if (BOOL_RE.test(tok)) {
    const l = tok.toLowerCase();
    return l === "true" || l === "yes" || l === "on";
  }
  if (INT_RE.test(tok)) return Number(tok);
  const size = SIZE_RE.exec(tok);
  if (size) {
    const n = Number(size[1]);
    const pow = SIZE_POWERS[size[2].toLowerCase()];
    // `k` is decimal (1000); `kb`, `ki`, `kib` are binary (1024).
    const base = size[3] === "" ? 1000 : 1024;
    return n * base ** pow;
  }
  if (FLOAT_RE.test(tok)) return Number(tok);
  return tok;
}

const isInlineSpace = (c: string): boolean => c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v";
const isNewline = (c: string): boolean => c === "\n";

class Parser {
  private i = 0;
  private line = 1;
  private col = 1;
  /** Blocks and arrays open around the value being parsed (MAX_NESTING). */
  private nesting = 0;

  constructor(
    private readonly src: string,
    private readonly file: string | undefined,
    private readonly baseDir: string,
    private readonly ctx: Context,
    private readonly depth: number,
  ) {}

  // ---- character level -------------------------------------------------

  private peek(off = 0): string {
    return this.src.charAt(this.i + off);
  }

  private eof(): boolean {
    return this.i >= this.src.length;
  }

  private next(): string {
    const c = this.src.charAt(this.i++);
    if (c === "\n") {
      this.line++;
      this.col = 1;
    } else {
      this.col++;
    }
    return c;
  }

  private pos(): ConfPosition {
    return { line: this.line, column: this.col, file: this.file };
  }

  private fail(msg: string, pos: ConfPosition = this.pos()): never {
    throw new ConfError(msg, pos);
  }

  private atComment(): boolean {
    const c = this.peek();
    return c === "#" || (c === "/" && this.peek(1) === "/");
  }

  private skipComment(): void {
    while (!this.eof() && !isNewline(this.peek())) this.next();
  }

  /** Spaces, tabs and comments, but not newlines. */
  private skipInline(): void {
    for (;;) {
      const c = this.peek();
      if (c !== "" && isInlineSpace(c)) this.next();
      else if (this.atComment()) this.skipComment();
      else return;
    }
  }

  /** Spaces, newlines and comments. */
  private skipAll(): void {
    for (;;) {
      this.skipInline();
      if (isNewline(this.peek())) this.next();
      else return;
    }
  }

  private describe(c: string): string {
    if (c === "") return "end of input";
    if (c === "\n") return "end of line";
    return `'${c}'`;
  }

  // ---- structure ---------------------------------------------------------

  parseDocument(root: ConfMap): void {
    this.skipAll();
    if (this.peek() === "{") {
      // nats-server accepts a whole file wrapped in braces.
      const open = this.pos();
      this.next();
      this.parseEntries(root, "}", open);
      this.skipAll();
      if (!this.eof()) this.fail(`unexpected ${this.describe(this.peek())} after the closing '}'`);
      return;
    }
    this.parseEntries(root, "");
  }

  /** Entries up to `closer` ("}" for a block, "" for end of input), which is consumed. */
  private parseEntries(map: ConfMap, closer: "}" | "", open: ConfPosition = this.pos()): void {
    for (;;) {
      this.skipAll();
      while (this.peek() === "," || this.peek() === ";") {
        this.next();
        this.skipAll();
      }
      const c = this.peek();
      if (c === "") {
        if (closer === "}") this.fail("unterminated block: missing '}'", open);
        return;
      }
      if (c === "}") {
        if (closer !== "}") this.fail("unexpected '}' with no block open");
        this.next();
        return;
      }
      this.parseEntry(map);
      // After a value: a separator, a comment, the end of the block, or (leniently) another key.
      this.skipInline();
      const after = this.peek();
      if (after === "," || after === ";" || isNewline(after)) this.next();
    }
  }

  private parseEntry(map: ConfMap): void {
    const keyPos = this.pos();
    const quoted = this.peek() === '"' || this.peek() === "'";
    const key = this.parseKey();
    const hadSpace = isInlineSpace(this.peek());
    this.skipInline();
    let sep = false;
    if (this.peek() === "=" || this.peek() === ":") {
      this.next();
      sep = true;
      this.skipInline();
    }
    if (!quoted && key === "include" && !sep) {
      this.parseInclude(map, keyPos);
      return;
    }
    const c = this.peek();
    if (c === "" || isNewline(c) || c === "}" || c === "," || c === ";") {
      this.fail(`key '${key}' has no value`, keyPos);
    }
    if (!sep && !hadSpace && c !== "{" && c !== "[") {
      this.fail(`expected '=', ':' or a space after key '${key}', got ${this.describe(c)}`);
    }
    const value = this.parseValue();
    map[key] = value;
    const meta = map[META]!;
    meta.positions.set(key, keyPos);
  }

  private parseKey(): string {
    const c = this.peek();
    if (c === '"') return this.parseDoubleQuoted();
    if (c === "'") return this.parseSingleQuoted();
    const start = this.i;
    while (!this.eof()) {
      const d = this.peek();
      if (
        isInlineSpace(d) ||
        isNewline(d) ||
        d === "=" ||
        d === ":" ||
        d === "{" ||
        d === "[" ||
        d === "}" ||
        d === "]" ||
        d === "," ||
        d === ";" ||
        d === '"' ||
        d === "'" ||
        this.atComment()
      ) {
        break;
      }
      this.next();
    }
    if (this.i === start) this.fail(`expected a key, got ${this.describe(c)}`);
    return this.src.slice(start, this.i);
  }

  private parseValue(): unknown {
    const c = this.peek();
    if (c === "{" || c === "[") {
      // Blocks and arrays parse by recursion: past a bound, a refusal with its place rather than a stack overflow.
      if (this.nesting >= MAX_NESTING) this.fail(`blocks and arrays nested more than ${MAX_NESTING} deep`);
      this.nesting++;
      try {
        if (c === "[") return this.parseArray();
        const open = this.pos();
        this.next();
        const m = newMap();
        this.ctx.scopes.push(m);
        try {
          this.parseEntries(m, "}", open);
        } finally {
          this.ctx.scopes.pop();
        }
        return m;
      } finally {
        this.nesting--;
      }
    }
    if (c === '"') return this.parseDoubleQuoted();
    if (c === "'") return this.parseSingleQuoted();
    const pos = this.pos();
    const tok = this.readBare();
    if (tok === "") this.fail(`expected a value, got ${this.describe(c)}`);
    if (tok.startsWith("$")) return this.lookupVariable(tok.slice(1), pos);
    return bareValue(tok);
  }

  /** An unquoted token: runs to whitespace, a separator, or the end of an array or block. */
  private readBare(): string {
    const start = this.i;
    while (!this.eof()) {
      const d = this.peek();
      if (isInlineSpace(d) || isNewline(d) || d === "," || d === ";" || d === "]" || d === "}") break;
      this.next();
    }
    return this.src.slice(start, this.i);
  }

  private parseArray(): unknown[] {
    const open = this.pos();
    this.next(); // [
    const out: unknown[] = [];
    for (;;) {
      this.skipAll();
      const c = this.peek();
      if (c === "") this.fail("unterminated array: missing ']'", open);
      if (c === "]") {
        this.next();
        return out;
      }
      if (c === ",") this.fail("expected an array element, got ','");
      out.push(this.parseValue());
      this.skipInline();
      const after = this.peek();
      if (after === "," || isNewline(after)) this.next();
      else if (after !== "]" && after !== "") {
        this.fail(`expected ',', a new line or ']' after an array element, got ${this.describe(after)}`);
      }
    }
  }

  private parseSingleQuoted(): string {
    const open = this.pos();
    this.next(); // '
    const start = this.i;
    while (this.peek() !== "'") {
      if (this.eof() || isNewline(this.peek())) this.fail("unterminated string", open);
      this.next();
    }
    const s = this.src.slice(start, this.i);
    this.next();
    return s;
  }

  private parseDoubleQuoted(): string {
    const open = this.pos();
    this.next(); // "
    let out = "";
    for (;;) {
      if (this.eof() || isNewline(this.peek())) this.fail("unterminated string", open);
      const escPos = this.pos();
      const c = this.next();
      if (c === '"') return out;
      if (c !== "\\") {
        out += c;
        continue;
      }
      if (this.eof() || isNewline(this.peek())) this.fail("unterminated string", open);
      const e = this.next();
      switch (e) {
        case "n":
          out += "\n";
          break;
        case "t":
          out += "\t";
          break;
        case "r":
          out += "\r";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case '"':
        case "\\":
        case "/":
        case "'":
          out += e;
          break;
        case "x":
          out += this.hexEscape(2, escPos);
          break;
        case "u":
          out += this.hexEscape(4, escPos);
          break;
        case "U":
          out += this.hexEscape(8, escPos);
          break;
        default:
          this.fail(`invalid escape '\\${e}' in string`, escPos);
      }
    }
  }

  private hexEscape(digits: number, pos: ConfPosition): string {
    const hex = this.src.slice(this.i, this.i + digits);
    if (hex.length !== digits || !/^[0-9a-fA-F]+$/.test(hex)) {
      this.fail(`escape needs ${digits} hex digits`, pos);
    }
    for (let k = 0; k < digits; k++) this.next();
    const cp = parseInt(hex, 16);
    if (cp > 0x10ffff) this.fail(`escape \\U${hex} is not a valid code point`, pos);
    return String.fromCodePoint(cp);
  }

  // ---- variables and includes -------------------------------------------

  private lookupVariable(name: string, pos: ConfPosition): unknown {
    if (name === "") this.fail("'$' must be followed by a variable name", pos);
    const scopes = this.ctx.scopes;
    for (let s = scopes.length - 1; s >= 0; s--) {
      const m = scopes[s];
      if (Object.prototype.hasOwnProperty.call(m, name)) {
        m[META]!.usedVariables.add(name);
        return m[name];
      }
    }
    const ev = this.ctx.env[name];
    if (ev !== undefined) return envValue(ev);
    this.fail(`variable reference for '${name}' can not be found`, pos);
  }

  private parseInclude(map: ConfMap, pos: ConfPosition): void {
    const c = this.peek();
    let target: string;
    if (c === '"') target = this.parseDoubleQuoted();
    else if (c === "'") target = this.parseSingleQuoted();
    else target = this.readBare();
    if (target === "") this.fail("include needs a file name", pos);
    if (!this.ctx.includes) this.fail("include is not allowed here", pos);
    if (this.depth + 1 > MAX_INCLUDE_DEPTH) {
      this.fail(`includes nested deeper than ${MAX_INCLUDE_DEPTH} levels (is a file including itself?)`, pos);
    }
    const path = isAbsolute(target) ? target : resolve(this.baseDir, target);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      this.fail(`cannot read include file '${target}' (${code})`, pos);
    }
    // The included entries land in the current block, and see its variables.
    const sub = new Parser(text, path, dirname(path), this.ctx, this.depth + 1);
    sub.parseEntries(map, "");
  }
}

/**
 * Environment values are read as conf values, as nats-server does, so PORT=4222
 * gives a number; anything that doesn't parse as a single value stays a string.
 */
function envValue(raw: string): unknown {
  if (raw.includes("\n")) return raw;
  try {
    const tree = newMap();
    const ctx: Context = { env: {}, scopes: [tree], includes: false };
    new Parser(`v = ${raw}`, undefined, process.cwd(), ctx, 0).parseDocument(tree);
    const keys = Object.keys(tree);
    if (keys.length === 1 && keys[0] === "v") return tree.v;
  } catch {
    // fall through
  }
  return raw;
}
