/**
 * Reader for nats-server's configuration file syntax ("conf" format), producing
 * a plain object tree that `optionsFromConf` maps onto ServerOptions.
 *
 * Supported: `key = value`, `key: value`, `key value`; quoted keys; nested
 * blocks (`name { ... }`, `name = { ... }`); arrays separated by commas or
 * newlines; `#` and `//` comments; double-quoted strings with escapes
 * (`\xHH` is a byte, the bytes read as UTF-8), single-quoted raw strings (both
 * may span lines), block strings (`(` up to a line holding only `)`) and bare
 * strings (with escapes too, as nats-server's); integers with size suffixes;
 * floats; booleans (true/false/yes/no/on/off); `$VAR` references to an earlier
 * key in an enclosing block, or else to an environment variable (whose value
 * may name another), an unquoted bcrypt hash (`$2a$...`) being a string; and
 * `include <file>` (the keyword in any case).
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
    envDepth: 0,
    envValues: new Map(),
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
  /** Environment values being read inside one another (an environment value may name another variable). */
  envDepth: number;
  /**
   * Environment variables read so far in this parse, by name: an environment value naming others is read once,
   * else values naming the next one several times would take exponential time to read (a hang).
   */
  envValues: Map<string, unknown>;
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
  ) {
    // An included file's entries land in the block that includes it (the top scope now).
    if (depth > 0) this.floor = ctx.scopes.length - 1;
  }

  /**
   * For an included file: the scope its entries land in, and the keys of that scope it (or what it includes) set.
   * nats-server parses an included file alone: its variables are its own keys, else the environment's; the
   * including file's keys come only after both (where nats-server would find none and refuse the file).
   */
  private floor = -1;
  private readonly ownKeys = new Set<string>();

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
    // A keyword in any case, as nats-server's lexer reads it.
    if (!quoted && key.toLowerCase() === "include" && !sep) {
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
    if (this.floor >= 0 && map === this.ctx.scopes[this.floor]) this.ownKeys.add(key);
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
    if (c === "(") return this.parseBlockString();
    const pos = this.pos();
    const tok = this.readBare(true);
    if (tok === "") this.fail(`expected a value, got ${this.describe(c)}`);
    // nats-server's lexer reads escapes in unquoted strings too; with one, the token is a string (never a number,
    // a boolean or a variable).
    if (tok.includes("\\")) return this.unescapeBare(tok, pos);
    if (tok.startsWith("$")) return this.lookupVariable(tok.slice(1), pos);
    return bareValue(tok);
  }

  /**
   * An unquoted token: runs to whitespace, a separator, or the end of an array or block. `escapes`: a backslash
   * takes the next character with it (a value's escapes, read by unescapeBare).
   */
  private readBare(escapes = false): string {
    const start = this.i;
    while (!this.eof()) {
      const d = this.peek();
      if (isInlineSpace(d) || isNewline(d) || d === "," || d === ";" || d === "]" || d === "}") break;
      this.next();
      if (escapes && d === "\\" && !this.eof() && !isNewline(this.peek())) this.next();
    }
    return this.src.slice(start, this.i);
  }

  /** The escapes of an unquoted token read by readBare (one line), found at `pos`. */
  private unescapeBare(tok: string, pos: ConfPosition): string {
    const out = new Utf8Builder();
    for (let k = 0; k < tok.length; ) {
      const ch = tok[k];
      if (ch !== "\\") {
        const cp = tok.codePointAt(k)!;
        out.text(String.fromCodePoint(cp));
        k += cp > 0xffff ? 2 : 1;
        continue;
      }
      const escPos = { ...pos, column: pos.column + k };
      k = this.escape(tok, k + 1, escPos, out);
    }
    return out.finish(() => this.fail("the \\x escapes of this string are not UTF-8 text", pos));
  }

  /**
   * One escape of `text`, whose letter is at `at` (just past the backslash), appended to `out`; returns the index
   * past it. nats-server's escapes (\t \n \r \" \\ and \xHH, a byte) and JSON's (\b \f \/ \' \uHHHH \UHHHHHHHH).
   */
  private escape(text: string, at: number, pos: ConfPosition, out: Utf8Builder): number {
    if (at >= text.length) this.fail(text === this.src ? "unterminated string" : "'\\' at the end of a value: escape it as '\\\\'", pos);
    const e = text[at];
    if (e === "\n" || e === "\r") this.fail("'\\' at the end of a line: escape it as '\\\\'", pos);
    const simple: Record<string, string> = { n: "\n", t: "\t", r: "\r", b: "\b", f: "\f", '"': '"', "\\": "\\", "/": "/", "'": "'" };
    if (simple[e] !== undefined) {
      out.text(simple[e]);
      return at + 1;
    }
    const digits = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    if (digits === 0) this.fail(`invalid escape '\\${e}' in string`, pos);
    const hex = text.slice(at + 1, at + 1 + digits);
    if (hex.length !== digits || !/^[0-9a-fA-F]+$/.test(hex)) this.fail(`escape needs ${digits} hex digits`, pos);
    const n = parseInt(hex, 16);
    // \xHH is one byte, as in nats-server ("\xc3\xa9" is é); the others are code points.
    if (e === "x") out.byte(n);
    else {
      if (n > 0x10ffff) this.fail(`escape \\U${hex} is not a valid code point`, pos);
      out.text(String.fromCodePoint(n));
    }
    return at + 1 + digits;
  }

  /**
   * nats-server's block string: from just past '(' up to a ')' alone on its line (the new line before it is part
   * of the value), taken as written.
   */
  private parseBlockString(): string {
    const open = this.pos();
    this.next(); // (
    const start = this.i;
    for (;;) {
      if (this.eof()) this.fail("unterminated block string: missing ')' on a line of its own", open);
      const c = this.next();
      if (c !== "\n" || this.peek() !== ")") continue;
      const after = this.peek(1);
      if (after === "" || after === "\n" || (after === "\r" && this.peek(2) === "\n")) {
        const value = this.src.slice(start, this.i);
        this.next(); // )
        return value;
      }
    }
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
    // May span lines, as in nats-server.
    while (this.peek() !== "'") {
      if (this.eof()) this.fail("unterminated string", open);
      this.next();
    }
    const s = this.src.slice(start, this.i);
    this.next();
    return s;
  }

  /** A double-quoted string, with escapes; it may span lines, as in nats-server. */
  private parseDoubleQuoted(): string {
    const open = this.pos();
    this.next(); // "
    const out = new Utf8Builder();
    for (;;) {
      if (this.eof()) this.fail("unterminated string", open);
      const escPos = this.pos();
      const c = this.next();
      if (c === '"') return out.finish(() => this.fail("the \\x escapes of this string are not UTF-8 text", open));
      if (c !== "\\") {
        out.text(c);
        continue;
      }
      const at = this.i;
      const past = this.escape(this.src, at, escPos, out);
      while (this.i < past) this.next();
    }
  }

  /** A quoted include path: up to the closing quote, taken as written (nats-server reads no escapes in it). */
  private parseRawQuoted(): string {
    const open = this.pos();
    const quote = this.next();
    const start = this.i;
    while (this.peek() !== quote) {
      if (this.eof()) this.fail("unterminated string", open);
      this.next();
    }
    const s = this.src.slice(start, this.i);
    this.next();
    return s;
  }

  // ---- variables and includes -------------------------------------------

  private lookupVariable(name: string, pos: ConfPosition): unknown {
    if (name === "") this.fail("'$' must be followed by a variable name", pos);
    // As nats-server: an unquoted bcrypt hash ($2a$11$...) is the hash, not a variable.
    if (name.startsWith("2a$")) return `$${name}`;
    const scopes = this.ctx.scopes;
    const found = (m: ConfMap): boolean => {
      if (!Object.prototype.hasOwnProperty.call(m, name)) return false;
      m[META]!.usedVariables.add(name);
      return true;
    };
    // This file's scopes first (for an included file, the keys it set where it lands), then the environment.
    for (let s = scopes.length - 1; s > this.floor; s--) if (found(scopes[s])) return scopes[s][name];
    if (this.floor >= 0 && this.ownKeys.has(name) && found(scopes[this.floor])) return scopes[this.floor][name];
    const ev = this.ctx.env[name];
    // An included file naming a key of the file including it: nats-server would not find it; nagare does.
    if (ev === undefined && this.floor >= 0) for (let s = this.floor; s >= 0; s--) if (found(scopes[s])) return scopes[s][name];
    if (ev !== undefined) {
      if (this.ctx.envDepth >= MAX_ENV_DEPTH) this.fail(`environment variables refer to each other more than ${MAX_ENV_DEPTH} deep (do they refer to each other in a loop?)`, pos);
      try {
        if (this.ctx.envValues.has(name)) return this.ctx.envValues.get(name);
        const value = envValue(ev, this.ctx.env, this.ctx.envDepth + 1, this.ctx.envValues);
        this.ctx.envValues.set(name, value);
        return value;
      } catch (err) {
        // A variable an environment value names, missing or in a loop: said at the reference in the file.
        if (err instanceof EnvReferenceError) this.fail(err.message, pos);
        throw err;
      }
    }
    if (this.ctx.envDepth > 0) throw new EnvReferenceError(`variable reference for '${name}' can not be found (an environment value names it)`);
    this.fail(`variable reference for '${name}' can not be found`, pos);
  }

  private parseInclude(map: ConfMap, pos: ConfPosition): void {
    const c = this.peek();
    const target = c === '"' || c === "'" ? this.parseRawQuoted() : this.readBare();
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
    // The included entries land in the current block; its variables come after the included file's own and the environment's.
    const sub = new Parser(text, path, dirname(path), this.ctx, this.depth + 1);
    sub.parseEntries(map, "");
    // What it set is this file's key now, for the variables that follow (as in nats-server).
    if (this.floor >= 0 && map === this.ctx.scopes[this.floor]) for (const k of sub.ownKeys) this.ownKeys.add(k);
  }
}

/** Environment values naming other environment variables, inside one another: far past any real use, and a loop ends. */
const MAX_ENV_DEPTH = 10;

/** A variable an environment value names cannot be read; reported at the reference in the file. */
class EnvReferenceError extends Error {}

/**
 * Environment values are read as conf values, as nats-server does, so PORT=4222
 * gives a number and A=$B gives B's value; anything else that doesn't parse as
 * a single value stays a string.
 */
function envValue(raw: string, env: Record<string, string | undefined>, depth: number, envValues: Map<string, unknown>): unknown {
  if (raw.includes("\n")) return raw;
  try {
    const tree = newMap();
    const ctx: Context = { env, scopes: [tree], includes: false, envDepth: depth, envValues };
    new Parser(`v = ${raw}`, undefined, process.cwd(), ctx, 0).parseDocument(tree);
    const keys = Object.keys(tree);
    if (keys.length === 1 && keys[0] === "v") return tree.v;
  } catch (err) {
    if (err instanceof EnvReferenceError) throw err;
    if (err instanceof ConfError && /refer to each other/.test(err.message)) throw new EnvReferenceError(err.message.replace(/^line \d+, column \d+: /, ""));
    // fall through
  }
  return raw;
}

/** Text built from characters and single bytes (\\x escapes), read as UTF-8 at the end. */
class Utf8Builder {
  private parts: string[] = [];
  private bytes: number[] = [];
  private bad = false;

  text(s: string): void {
    if (this.bytes.length > 0) this.flush();
    this.parts.push(s);
  }

  byte(b: number): void {
    this.bytes.push(b);
  }

  private flush(): void {
    try {
      this.parts.push(new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(this.bytes)));
    } catch {
      this.bad = true;
    }
    this.bytes = [];
  }

  /** The text; `invalid` (which throws) when the bytes are not UTF-8. */
  finish(invalid: () => never): string {
    if (this.bytes.length > 0) this.flush();
    if (this.bad) invalid();
    return this.parts.join("");
  }
}
