/**
 * Client-side terminal commands, in the spirit of the `nats` CLI:
 *
 *   nagare pub <subject> [body]       publish (body from stdin when absent and piped)
 *   nagare sub <subject>              print messages as they arrive
 *   nagare request <subject> [body]   send one request, print the reply
 *   nagare reply <subject> <body>     answer every request on a subject
 *
 * They talk to any NATS-protocol server (nagare or nats-server) through the
 * official client. Diagnostics go to stderr so stdout carries only message data.
 * Argument parsing is self-contained here on purpose.
 */

import { readFileSync } from "node:fs";
import {
  connect,
  credsAuthenticator,
  headers as newHeaders,
  NoRespondersError,
  RequestError,
  TimeoutError,
  type ConnectionOptions,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";

export type ClientCommand = "pub" | "sub" | "request" | "reply";

/** Streams the commands use; tests or embedders may substitute their own. */
export interface ClientCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
}

const DEFAULT_SERVER = "nats://127.0.0.1:4222";
/** How long a command waits for the server (to connect, and for a reply), unless --timeout says otherwise. */
export const DEFAULT_TIMEOUT_MS = 5000;

// ---------------------------------------------------------------------------
// Usage texts

const SERVER_HELP = `  -s, --server <url>     server URL(s), comma separated (default: $NATS_URL or ${DEFAULT_SERVER})
  --timeout <duration>   how long to wait for the server: milliseconds or a duration
                         such as 500ms, 2s, 1m (default 5s)
  --tlsca <file>         CA certificate(s) to trust for a server that requires TLS
  --tlscert <file>       client certificate, with --tlskey <file>, for one that verifies clients
  --user <name> --password <secret> | --token <secret> | --creds <file>
                         credentials, for a server that requires them
  -h, --help             show this help`;

const USAGE: Record<ClientCommand, string> = {
  pub: `Usage: nagare pub [options] <subject> [body]

Publishes a message. Without a body argument the body is read from stdin when
stdin is not a terminal (otherwise the message is empty). "{{Count}}" in the
body is replaced with the 1-based message number.

Options:
  --count <n>            publish n messages (default 1)
  -H, --header <K:V>     add a header (repeatable)
  --reply <subject>      reply subject to set on the messages
${SERVER_HELP}
`,
  sub: `Usage: nagare sub [options] <subject>

Subscribes to a subject (wildcards allowed) and prints every message received.
Prints 'Listening on "<subject>"' to stderr once the subscription is active.
Ctrl-C drains the subscription and exits.

Options:
  --queue <name>         join a queue group
  --count <n>            exit after n messages
  --raw                  print only message bodies, one per line
${SERVER_HELP}
`,
  request: `Usage: nagare request [options] <subject> [body]

Sends a request and prints the reply (headers, if any, then the body), waiting
for it as long as --timeout says.

Options:
  -H, --header <K:V>     add a header (repeatable)
${SERVER_HELP}
`,
  reply: `Usage: nagare reply [options] <subject> <body>

Answers every request received on a subject with the body and prints the
requests. In the body "{{Request}}" is replaced with the request payload and
"{{Count}}" with the 1-based request number.
Prints 'Listening on "<subject>"' to stderr once the subscription is active.
Ctrl-C drains the subscription and exits.

Options:
  --queue <name>         join a queue group
  --count <n>            exit after n requests
${SERVER_HELP}
`,
};

// ---------------------------------------------------------------------------
// Argument parsing

export class UsageError extends Error {}

export interface FlagSpec {
  long: string;
  short?: string;
  /** Whether the flag takes a value. */
  value: boolean;
  /** May be given several times (values accumulate). */
  multi?: boolean;
}

/** The flags every client command takes: where to connect, and as whom. */
export const COMMON_FLAGS: readonly FlagSpec[] = [
  { long: "server", short: "s", value: true },
  { long: "timeout", value: true },
  { long: "tlsca", value: true },
  { long: "tlscert", value: true },
  { long: "tlskey", value: true },
  { long: "user", value: true },
  { long: "password", value: true },
  { long: "token", value: true },
  { long: "creds", value: true },
  { long: "help", short: "h", value: false },
];

const FLAGS: Record<ClientCommand, FlagSpec[]> = {
  pub: [
    { long: "count", value: true },
    { long: "header", short: "H", value: true, multi: true },
    { long: "reply", value: true },
  ],
  sub: [
    { long: "queue", value: true },
    { long: "count", value: true },
    { long: "raw", value: false },
  ],
  request: [{ long: "header", short: "H", value: true, multi: true }],
  reply: [
    { long: "queue", value: true },
    { long: "count", value: true },
  ],
};

export interface ParsedArgs {
  /** Flag values by long name; boolean flags map to [""] */
  flags: Map<string, string[]>;
  positionals: string[];
}

export function parseArgs(argv: string[], specs: FlagSpec[]): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const byLong = new Map(specs.map((s) => [s.long, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));

  const record = (spec: FlagSpec, value: string): void => {
    const prev = flags.get(spec.long);
    if (spec.multi && prev) prev.push(value);
    else flags.set(spec.long, [value]);
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let spec: FlagSpec | undefined;
    let inline: string | undefined;
    let shown = arg;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (eq >= 0) inline = arg.slice(eq + 1);
      shown = `--${name}`;
      spec = byLong.get(name);
    } else if (arg.startsWith("-") && arg.length > 1) {
      shown = arg.slice(0, 2);
      spec = byShort.get(arg[1]!);
      if (arg.length > 2) inline = arg[2] === "=" ? arg.slice(3) : arg.slice(2);
    } else {
      positionals.push(arg);
      continue;
    }
    if (!spec) throw new UsageError(`unknown flag ${shown}`);
    if (!spec.value) {
      if (inline !== undefined) throw new UsageError(`flag ${shown} does not take a value`);
      record(spec, "");
      continue;
    }
    if (inline === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`flag ${shown} needs a value`);
      inline = argv[++i]!;
    }
    record(spec, inline);
  }
  return { flags, positionals };
}

export function lastFlag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return v ? v[v.length - 1] : undefined;
}

function parseCount(args: ParsedArgs): number | undefined {
  const raw = lastFlag(args, "count");
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || !Number.isSafeInteger(Number(raw))) {
    throw new UsageError(`--count must be a positive integer, got "${raw}"`);
  }
  return Number(raw);
}

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Milliseconds from "1500", "1500ms", "2s", "1.5s", "1m30s"; undefined when malformed. */
export function parseDurationMs(text: string): number | undefined {
  const s = text.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(s)) {
    ms = Number(s);
  } else {
    if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) return undefined;
    ms = 0;
    for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) {
      ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    }
  }
  if (!Number.isFinite(ms) || ms <= 0) return undefined;
  return Math.max(1, Math.ceil(ms));
}

function parseHeaders(args: ParsedArgs): MsgHdrs | undefined {
  const list = args.flags.get("header");
  if (!list || list.length === 0) return undefined;
  const h = newHeaders();
  for (const entry of list) {
    const colon = entry.indexOf(":");
    const key = colon < 0 ? "" : entry.slice(0, colon).trim();
    const value = colon < 0 ? "" : entry.slice(colon + 1).trim();
    if (colon < 0 || key === "" || /[\s:]/.test(key)) {
      throw new UsageError(`invalid header "${entry}", expected Key:Value`);
    }
    if (/[\r\n]/.test(value)) throw new UsageError(`header value for "${key}" must not contain line breaks`);
    h.append(key, value);
  }
  return h;
}

/** Light sanity checks so obvious mistakes are usage errors rather than protocol errors. */
function checkSubject(subject: string, what: string, allowWildcards: boolean): void {
  if (subject === "") throw new UsageError(`${what} must not be empty`);
  if (/\s/.test(subject)) throw new UsageError(`${what} "${subject}" must not contain whitespace`);
  const tokens = subject.split(".");
  tokens.forEach((t, i) => {
    if (t === "") throw new UsageError(`${what} "${subject}" has an empty token`);
    if (t === "*" || t === ">") {
      if (!allowWildcards) throw new UsageError(`${what} "${subject}" must not contain wildcards`);
      if (t === ">" && i !== tokens.length - 1) {
        throw new UsageError(`${what} "${subject}": ">" is only allowed as the last token`);
      }
    }
  });
}

function checkQueue(args: ParsedArgs): string | undefined {
  const q = lastFlag(args, "queue");
  if (q === undefined) return undefined;
  if (q === "" || /\s/.test(q)) throw new UsageError(`invalid queue group name "${q}"`);
  return q;
}

function expectPositionals(args: ParsedArgs, min: number, max: number): void {
  const n = args.positionals.length;
  if (n < min) throw new UsageError(min === 1 ? "missing subject" : "missing arguments");
  if (n > max) throw new UsageError(`unexpected argument "${args.positionals[max]}"`);
}

// ---------------------------------------------------------------------------
// Helpers

const textEncoder = new TextEncoder();

/**
 * Replaces `{{Name}}` placeholders byte-exactly: the template and the values
 * are mapped to latin1 (one char per byte) so binary payloads survive.
 */
function render(template: Uint8Array, values: Record<string, Uint8Array | string>): Uint8Array {
  const t = Buffer.from(template.buffer, template.byteOffset, template.byteLength);
  if (!t.includes("{{")) return template;
  let out = t.toString("latin1");
  for (const [name, value] of Object.entries(values)) {
    const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value);
    out = out.split(`{{${name}}}`).join(bytes.toString("latin1"));
  }
  return Buffer.from(out, "latin1");
}

/** What a command group prints for a failure, and its exit code: 2 with the usage for a usage error, else 1. */
export async function reportFailure(group: string, err: unknown, usage: string, stderr: NodeJS.WritableStream): Promise<number> {
  if (err instanceof UsageError) {
    await write(stderr, `nagare ${group}: ${err.message}\n\n${usage}`);
    return 2;
  }
  await write(stderr, `nagare ${group}: ${errorText(err)}\n`);
  return 1;
}

export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error && err.cause.message && !err.message.includes(err.cause.message)
      ? ` (${err.cause.message})`
      : "";
    return (err.message || err.name) + cause;
  }
  return String(err);
}

function isNoResponders(err: unknown): boolean {
  if (err instanceof NoRespondersError) return true;
  if (err instanceof RequestError) return err.isNoResponders();
  return false;
}

/** Streams whose 'error' events we already absorb (write callbacks report them). */
const guarded = new WeakSet<NodeJS.WritableStream>();

export function write(stream: NodeJS.WritableStream, data: string | Uint8Array): Promise<void> {
  if (!guarded.has(stream)) {
    // Without a listener an EPIPE (reader went away, e.g. `| head`) would crash
    // the process; the failure still reaches us through the write callback.
    guarded.add(stream);
    stream.on("error", () => undefined);
  }
  return new Promise((resolve, reject) => {
    stream.write(data, (err?: Error | null) => (err ? reject(err) : resolve()));
  });
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(typeof chunk === "string" ? Buffer.from(chunk, "utf8") : Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

export function headerLines(h: MsgHdrs | undefined): string {
  if (!h) return "";
  let out = "";
  for (const [key, values] of h) {
    for (const v of values) out += `${key}: ${v}\n`;
  }
  return out;
}

/** `[#n] Received on "subj" with reply "r"`, headers, blank line, body, blank line. */
function formatMessage(n: number, m: Msg): Uint8Array {
  let head = `[#${n}] Received on "${m.subject}"`;
  if (m.reply) head += ` with reply "${m.reply}"`;
  head += "\n";
  const hl = headerLines(m.headers);
  if (hl) head += hl + "\n";
  const body = m.data;
  const endsWithNewline = body.length > 0 && body[body.length - 1] === 0x0a;
  return Buffer.concat([Buffer.from(head, "utf8"), body, Buffer.from(endsWithNewline ? "\n" : "\n\n")]);
}

/** `--timeout` in milliseconds, or the default. */
export function timeoutFrom(args: ParsedArgs): number {
  const raw = lastFlag(args, "timeout");
  if (raw === undefined) return DEFAULT_TIMEOUT_MS;
  const t = parseDurationMs(raw);
  if (t === undefined) throw new UsageError(`invalid --timeout "${raw}", use e.g. 500ms, 2s or 1500`);
  return t;
}

export function serverFrom(args: ParsedArgs): string {
  const s = lastFlag(args, "server") ?? process.env["NATS_URL"] ?? DEFAULT_SERVER;
  if (s.trim() === "") throw new UsageError("--server must not be empty");
  return s;
}

/**
 * Connects, or says why not and resolves to undefined. A port that is not
 * NATS (an HTTP server, a socket that accepts and says nothing) ends in a
 * timeout or an unexpected greeting; both are named as such. The client
 * leaves the socket of a connect that timed out before INFO open, so the
 * command's process must exit rather than wait for its event loop to empty
 * (main.ts does).
 */
/** TLS for the connection, from `--tlsca`, `--tlscert` and `--tlskey` (the nats CLI's names); undefined when none is given. */
export function tlsFrom(args: ParsedArgs): { caFile?: string; certFile?: string; keyFile?: string } | undefined {
  const caFile = lastFlag(args, "tlsca");
  const certFile = lastFlag(args, "tlscert");
  const keyFile = lastFlag(args, "tlskey");
  if (caFile === undefined && certFile === undefined && keyFile === undefined) return undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError("--tlscert and --tlskey go together");
  return { caFile, certFile, keyFile };
}

/**
 * How to connect beyond the server URL: TLS (tlsFrom) and credentials,
 * from `--user`/`--password`, `--token` or `--creds <file>` (the nats CLI's
 * names); a creds file that cannot be read is a usage error.
 */
export function connectionFrom(args: ParsedArgs): Partial<ConnectionOptions> {
  const out: Partial<ConnectionOptions> = {};
  const tls = tlsFrom(args);
  if (tls !== undefined) out.tls = tls;
  const user = lastFlag(args, "user");
  const password = lastFlag(args, "password");
  const token = lastFlag(args, "token");
  const creds = lastFlag(args, "creds");
  if ((user === undefined) !== (password === undefined)) throw new UsageError("--user and --password go together");
  if ([user, token, creds].filter((x) => x !== undefined).length > 1) throw new UsageError("give one of --user/--password, --token or --creds");
  if (user !== undefined) {
    out.user = user;
    out.pass = password;
  }
  if (token !== undefined) out.token = token;
  if (creds !== undefined) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(creds);
    } catch (err) {
      throw new UsageError(`cannot read --creds ${creds}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    out.authenticator = credsAuthenticator(bytes);
  }
  return out;
}

export async function open(server: string, io: ClientCommandIo, timeoutMs = DEFAULT_TIMEOUT_MS, extra: Partial<ConnectionOptions> = {}): Promise<NatsConnection | undefined> {
  const servers = server
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  try {
    return await connect({ ...extra, servers, name: "nagare-cli", timeout: timeoutMs });
  } catch (err) {
    let why = errorText(err);
    if (err instanceof TimeoutError || why === "timeout") why = `no NATS greeting within ${timeoutMs} ms: is it a NATS server?`;
    else if (/unexpected response/.test(why)) why = "it is not a NATS server (it did not greet with INFO)";
    await write(io.stderr, `nagare: could not connect to ${server}: ${why}\n`);
    return undefined;
  }
}

/** Reports connection trouble on stderr while a long-running command is active. */
function watchStatus(nc: NatsConnection, io: ClientCommandIo): void {
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          io.stderr.write(`nagare: disconnected from ${s.server}\n`);
          break;
        case "reconnect":
          io.stderr.write(`nagare: reconnected to ${s.server}\n`);
          break;
        case "ldm":
          io.stderr.write(`nagare: server entered lame duck mode\n`);
          break;
        case "error":
          io.stderr.write(`nagare: server error: ${errorText(s.error)}\n`);
          break;
        default:
          break;
      }
    }
  })().catch(() => undefined);
}

/**
 * Drains on SIGINT/SIGTERM (once each: a second Ctrl-C falls back to the
 * default and kills the process). Returns a function removing the handlers.
 */
export function drainOnSignal(nc: NatsConnection, onStop: () => void): () => void {
  const stop = (): void => {
    onStop();
    nc.drain().catch(() => undefined);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return () => {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  };
}

/**
 * Resolves with the promise's value, or with `fallback` after `ms`. Keeps the
 * event loop alive meanwhile: client promises that never settle (a flush on a
 * connection that is going away) must not leave the command hanging unsettled.
 */
async function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const expiry = new Promise<F>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  try {
    return await Promise.race([p, expiry]);
  } finally {
    clearTimeout(timer);
  }
}

/** A flush (a PING answered) that gives up after `ms`: a server that stops answering must not hang the command. */
export async function flushWithin(nc: NatsConnection, ms: number): Promise<void> {
  const answered = await within(nc.flush().then(() => true), ms, false);
  if (!answered) throw new Error(`no answer from the server within ${ms} ms`);
}

/** Errors the server reported while a command runs (a permissions violation, say: the connection stays open). */
function serverErrors(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") seen.push(errorText(s.error));
  })();
  return seen;
}

/** Closes the connection after making sure the server saw what we published. */
export async function finish(nc: NatsConnection): Promise<void> {
  if (nc.isClosed()) return;
  try {
    if (!nc.isDraining()) await within(nc.flush(), DEFAULT_TIMEOUT_MS, undefined);
  } catch {
    // the connection may already be going away; closing is all that is left
  }
  await within(nc.close(), DEFAULT_TIMEOUT_MS, undefined).catch(() => undefined);
}

// ---------------------------------------------------------------------------
// Commands

async function pub(args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  expectPositionals(args, 1, 2);
  const subject = args.positionals[0]!;
  checkSubject(subject, "subject", false);
  const count = parseCount(args) ?? 1;
  const hdrs = parseHeaders(args);
  const reply = lastFlag(args, "reply");
  if (reply !== undefined) checkSubject(reply, "reply subject", false);
  const server = serverFrom(args);
  const timeout = timeoutFrom(args);

  let body: Uint8Array;
  if (args.positionals.length > 1) body = textEncoder.encode(args.positionals[1]!);
  else if (!io.stdin.isTTY) body = await readAll(io.stdin);
  else body = new Uint8Array(0);

  const nc = await open(server, io, timeout, connectionFrom(args));
  if (!nc) return 1;
  const refused = serverErrors(nc);
  try {
    for (let i = 1; i <= count; i++) {
      nc.publish(subject, render(body, { Count: String(i) }), { headers: hdrs, reply });
    }
    await flushWithin(nc, timeout);
    // The server's -ERR came before the flush's PONG; its status is handed over a turn later.
    await new Promise((r) => setImmediate(r));
    if (refused.length > 0) throw new Error(refused[0]);
  } catch (err) {
    await write(io.stderr, `nagare: publish failed: ${errorText(err)}\n`);
    await finish(nc);
    return 1;
  }
  await finish(nc);
  await write(io.stderr, `Published ${count} message${count === 1 ? "" : "s"} to "${subject}"\n`);
  return 0;
}

async function sub(args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  expectPositionals(args, 1, 1);
  const subject = args.positionals[0]!;
  checkSubject(subject, "subject", true);
  const queue = checkQueue(args);
  const count = parseCount(args);
  const raw = args.flags.has("raw");
  const server = serverFrom(args);
  const timeout = timeoutFrom(args);

  const nc = await open(server, io, timeout, connectionFrom(args));
  if (!nc) return 1;
  return listen(nc, io, subject, queue, count, timeout, async (n, m) => {
    if (raw) {
      await write(io.stdout, Buffer.concat([m.data, Buffer.from("\n")]));
    } else {
      await write(io.stdout, formatMessage(n, m));
    }
  });
}

async function reply(args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  expectPositionals(args, 2, 2);
  const subject = args.positionals[0]!;
  checkSubject(subject, "subject", true);
  const template = textEncoder.encode(args.positionals[1]!);
  const queue = checkQueue(args);
  const count = parseCount(args);
  const server = serverFrom(args);
  const timeout = timeoutFrom(args);

  const nc = await open(server, io, timeout, connectionFrom(args));
  if (!nc) return 1;
  return listen(nc, io, subject, queue, count, timeout, async (n, m) => {
    await write(io.stdout, formatMessage(n, m));
    if (!m.reply) {
      await write(io.stderr, `nagare: message #${n} on "${m.subject}" has no reply subject; not answering\n`);
      return;
    }
    m.respond(render(template, { Request: m.data, Count: String(n) }));
  });
}

/**
 * Shared body of `sub` and `reply`: subscribe, announce readiness once the
 * server has the subscription, hand every message to `onMsg`, stop after
 * `count` messages, on a signal (draining) or when the connection is lost.
 */
async function listen(
  nc: NatsConnection,
  io: ClientCommandIo,
  subject: string,
  queue: string | undefined,
  count: number | undefined,
  timeoutMs: number,
  onMsg: (n: number, m: Msg) => Promise<void>,
): Promise<number> {
  let stopped = false;
  const removeHandlers = drainOnSignal(nc, () => {
    stopped = true;
  });
  let sub: Subscription;
  try {
    // With `max` the server itself stops delivering after `count` messages,
    // so queue-group peers get the rest instead of this process dropping them.
    sub = nc.subscribe(subject, { queue, max: count });
    await flushWithin(nc, timeoutMs);
  } catch (err) {
    removeHandlers();
    await write(io.stderr, `nagare: subscribe failed: ${errorText(err)}\n`);
    await finish(nc);
    return 1;
  }
  watchStatus(nc, io);
  await write(
    io.stderr,
    `Listening on "${subject}"${queue === undefined ? "" : ` with queue "${queue}"`}\n`,
  );

  let n = 0;
  let failure: string | undefined;
  try {
    for await (const m of sub) {
      n++;
      try {
        await onMsg(n, m);
      } catch (err) {
        // Typically EPIPE: whoever reads our output has gone away.
        if ((err as NodeJS.ErrnoException).code === "EPIPE") stopped = true;
        else failure = `nagare: ${errorText(err)}`;
        break;
      }
      if (count !== undefined && n >= count) break;
    }
  } catch (err) {
    failure = `nagare: subscription failed: ${errorText(err)}`;
  } finally {
    removeHandlers();
  }

  const done = stopped || (count !== undefined && n >= count);
  if (!done && failure === undefined) {
    // Nobody asked us to stop: the client gave up on the connection (it
    // closes the subscriptions just before settling `closed()`).
    const why = await within(nc.closed(), DEFAULT_TIMEOUT_MS, undefined);
    failure = `nagare: connection closed${why instanceof Error ? `: ${errorText(why)}` : ""}`;
  }
  if (nc.isDraining()) await within(nc.closed(), DEFAULT_TIMEOUT_MS, undefined);
  await finish(nc);
  if (failure !== undefined) {
    await write(io.stderr, failure + "\n").catch(() => undefined);
    return 1;
  }
  return 0;
}

async function request(args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  expectPositionals(args, 1, 2);
  const subject = args.positionals[0]!;
  checkSubject(subject, "subject", false);
  const hdrs = parseHeaders(args);
  const timeout = timeoutFrom(args);
  const body = args.positionals.length > 1 ? textEncoder.encode(args.positionals[1]!) : new Uint8Array(0);
  const server = serverFrom(args);

  const nc = await open(server, io, timeout, connectionFrom(args));
  if (!nc) return 1;
  try {
    const m = await nc.request(subject, body, { timeout, headers: hdrs });
    const hl = headerLines(m.headers);
    const endsWithNewline = m.data.length > 0 && m.data[m.data.length - 1] === 0x0a;
    await write(
      io.stdout,
      Buffer.concat([Buffer.from(hl ? hl + "\n" : "", "utf8"), m.data, Buffer.from(endsWithNewline ? "" : "\n")]),
    );
    return 0;
  } catch (err) {
    let text: string;
    if (isNoResponders(err)) text = "nats: no responders available for request";
    else if (err instanceof TimeoutError) text = `nats: timeout: no reply on "${subject}" within ${timeout}ms`;
    else text = `nagare: request failed: ${errorText(err)}`;
    await write(io.stderr, text + "\n");
    return 1;
  } finally {
    await finish(nc);
  }
}

const COMMANDS: Record<ClientCommand, (args: ParsedArgs, io: ClientCommandIo) => Promise<number>> = {
  pub,
  sub,
  request,
  reply,
};

/**
 * Runs one client command with the arguments that follow its name and
 * resolves to the process exit code: 0 on success, 1 on runtime failure
 * (connection, no responders, timeout), 2 on bad usage.
 */
export async function runClientCommand(
  cmd: ClientCommand,
  argv: string[],
  io: ClientCommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
): Promise<number> {
  const specs = [...COMMON_FLAGS, ...FLAGS[cmd]];
  try {
    const args = parseArgs(argv, specs);
    if (args.flags.has("help")) {
      await write(io.stdout, USAGE[cmd]);
      return 0;
    }
    return await COMMANDS[cmd](args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      await write(io.stderr, `nagare ${cmd}: ${err.message}\n\n${USAGE[cmd]}`);
      return 2;
    }
    await write(io.stderr, `nagare ${cmd}: ${errorText(err)}\n`);
    return 1;
  }
}
