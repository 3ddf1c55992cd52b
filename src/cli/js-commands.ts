/**
 * JetStream commands, in the spirit of the `nats` CLI:
 *
 *   nagare stream add|ls|info|rm|purge|get
 *   nagare consumer add|ls|info|rm|next
 *   nagare kv get|put|del|watch
 *
 * Tables for people, `--json` for scripts. They use the official JetStream
 * and KV clients, so they work against nats-server too.
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type ConsumerInfo, type StreamInfo, type StreamConfig, type ConsumerConfig } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import {
  COMMON_FLAGS,
  UsageError,
  drainOnSignal,
  errorText,
  finish,
  headerLines,
  lastFlag,
  open,
  parseArgs,
  parseDurationMs,
  serverFrom,
  timeoutFrom,
  connectionFrom,
  reportFailure,
  write,
  type ClientCommandIo,
  type FlagSpec,
  type ParsedArgs,
} from "./client-commands.js";

export type JsGroup = "stream" | "consumer" | "kv";

const NS_PER_MS = 1_000_000;

const COMMON: FlagSpec[] = [...COMMON_FLAGS, { long: "json", value: false }];

const STREAM_FLAGS: FlagSpec[] = [
  { long: "subjects", value: true, multi: true },
  { long: "storage", value: true },
  { long: "retention", value: true },
  { long: "max-msgs", value: true },
  { long: "max-bytes", value: true },
  { long: "max-age", value: true },
  { long: "max-msg-size", value: true },
  { long: "max-msgs-per-subject", value: true },
  { long: "discard", value: true },
  { long: "dupe-window", value: true },
  { long: "allow-direct", value: false },
  { long: "allow-rollup", value: false },
  { long: "replicas", value: true },
  { long: "preferred", value: true },
  { long: "subject", value: true },
  { long: "seq", value: true },
  { long: "keep", value: true },
  { long: "last-for", value: true },
  { long: "tag", value: true, multi: true },
  { long: "to", value: true },
  { long: "cancel", value: false },
  { long: "account", value: true },
];

const CONSUMER_FLAGS: FlagSpec[] = [
  { long: "filter", value: true, multi: true },
  { long: "ack", value: true },
  { long: "deliver", value: true },
  { long: "ack-wait", value: true },
  { long: "max-deliver", value: true },
  { long: "max-pending", value: true },
  { long: "push", value: true },
  { long: "count", value: true },
  { long: "no-ack", value: false },
];

const KV_FLAGS: FlagSpec[] = [
  { long: "history", value: true },
  { long: "ttl", value: true },
  { long: "count", value: true },
];

const COMMON_HELP = `  -s, --server <url>     server URL(s) (default: $NATS_URL or nats://127.0.0.1:4222)
  --timeout <duration>   how long to wait for the server, e.g. 500ms, 2s (default 5s;
                         for consumer next, also how long to wait for messages)
  --tlsca <file>         CA certificate(s) to trust for a server that requires TLS
  --tlscert <file>       client certificate, with --tlskey <file>, for one that verifies clients
  --user <name> --password <secret> | --token <secret> | --creds <file>
                         credentials, for a server that requires them
`;

const USAGE: Record<JsGroup, string> = {
  stream: `Usage: nagare stream <add|ls|info|rm|purge|get|move|stepdown|peer-remove> [options]

  add <name> [--subjects s1,s2] [--storage file|memory] [--retention limits|interest|workqueue]
      [--max-msgs n] [--max-bytes n] [--max-age dur] [--max-msg-size n]
      [--max-msgs-per-subject n] [--discard old|new] [--dupe-window dur]
      [--allow-direct] [--allow-rollup] [--replicas n]   (--replicas: copies on that many nodes of a cluster)
  stepdown <name> [--preferred node]   hand a replicated stream's leadership to an in-sync replica
  peer-remove <name> <node>   another node takes that replica's place: it copies the stream, then the
      removed one drops its copy ($JS.API.STREAM.PEER.REMOVE, as nats stream cluster peer-remove)
  ls
  info <name>
  rm <name>
  purge <name> [--subject filter] [--seq n] [--keep n]
  get <name> <seq> | get <name> --last-for <subject>
  move <name> --tag t [--tag t]...   move the stream to a node with these server_tags (a cluster's
      STREAM.UPDATE of placement.tags, as nats-server moves streams); the move runs on after this returns
  move <name> --to <node> [--account a]   move it to that node, its placement unchanged
      (nats-server's $JS.API.ACCOUNT.STREAM.MOVE; --account: the stream's account, default $G)
  move <name> --cancel [--account a]      withdraw a move under way

Options:
  --json                 print the server's JSON instead of a table
${COMMON_HELP}`,
  consumer: `Usage: nagare consumer <add|ls|info|rm|next> [options]

  add <stream> <name> [--filter subject]... [--ack explicit|all|none]
      [--deliver all|last|new|last_per_subject|<start seq>] [--ack-wait dur]
      [--max-deliver n] [--max-pending n] [--push <deliver subject>]
  ls <stream>
  info <stream> <name>
  rm <stream> <name>
  next <stream> <name> [--count n] [--no-ack] [--timeout dur]

Options:
  --json                 print the server's JSON instead of a table
${COMMON_HELP}`,
  kv: `Usage: nagare kv <get|put|del|watch> <bucket> [key] [value] [options]

  get <bucket> <key>
  put <bucket> <key> <value>   (creates the bucket when missing: --history n, --ttl dur)
  del <bucket> <key>
  watch <bucket> [key]         print updates until Ctrl-C (or --count n)

Options:
  --json                 print entries as JSON lines
${COMMON_HELP}`,
};

function int(args: ParsedArgs, name: string): number | undefined {
  const v = lastFlag(args, name);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${name} must be an integer, got "${v}"`);
  return Number(v);
}

function durationNs(args: ParsedArgs, name: string): number | undefined {
  const v = lastFlag(args, name);
  if (v === undefined) return undefined;
  const ms = parseDurationMs(v);
  if (ms === undefined) throw new UsageError(`--${name} must be a duration such as 500ms, 10s, 1h, got "${v}"`);
  return ms * NS_PER_MS;
}

/** A flag whose value must be one of `allowed` (the server would answer only "invalid JSON"). */
function oneOf(args: ParsedArgs, name: string, allowed: string[]): string | undefined {
  const v = lastFlag(args, name);
  if (v === undefined || allowed.includes(v)) return v;
  throw new UsageError(`--${name} must be ${allowed.slice(0, -1).join(", ")} or ${allowed[allowed.length - 1]}, got "${v}"`);
}

function positional(args: ParsedArgs, i: number, what: string): string {
  const v = args.positionals[i];
  if (v === undefined || v === "") throw new UsageError(`missing ${what}`);
  return v;
}

/** Left-aligned columns separated by two spaces. */
export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? "").length)));
  return cells.map((r) => r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(widths[c]))).join("  ")).join("\n") + "\n";
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

function streamTable(si: StreamInfo): string {
  const c = si.config;
  const s = si.state;
  const lim = (v: number): string => (v < 0 ? "unlimited" : String(v));
  return table(
    ["FIELD", "VALUE"],
    [
      ["name", c.name],
      ["subjects", (c.subjects ?? []).join(", ")],
      ["storage", c.storage],
      ["retention", c.retention],
      ["max msgs", lim(c.max_msgs)],
      ["max bytes", lim(c.max_bytes)],
      ["max age", c.max_age > 0 ? `${c.max_age / NS_PER_MS}ms` : "unlimited"],
      ["discard", c.discard],
      ["messages", s.messages],
      ["bytes", bytes(s.bytes)],
      ["first seq", s.first_seq],
      ["last seq", s.last_seq],
      ["subjects stored", s.num_subjects ?? 0],
      ["consumers", s.consumer_count],
      // In a cluster: the node leading it (what `stream move` changes).
      ...(si.cluster?.leader !== undefined ? [["cluster leader", `${si.cluster.leader}${si.cluster.name ? ` (cluster ${si.cluster.name})` : ""}`] as [string, string]] : []),
      // A replicated stream: each follower, in sync or how far behind.
      ...(si.cluster?.replicas !== undefined && si.cluster.replicas.length > 0
        ? [["replicas", si.cluster.replicas.map((r) => `${r.name} (${r.current ? "current" : r.offline ? "offline" : `${r.lag ?? "?"} behind`})`).join(", ")] as [string, string]]
        : []),
    ],
  );
}

function consumerTable(ci: ConsumerInfo): string {
  const c = ci.config;
  return table(
    ["FIELD", "VALUE"],
    [
      ["stream", ci.stream_name],
      ["name", ci.name],
      ["durable", c.durable_name ? "yes" : "no"],
      ["mode", c.deliver_subject ? `push to ${c.deliver_subject}` : "pull"],
      ["filter", (c.filter_subjects ?? (c.filter_subject ? [c.filter_subject] : [])).join(", ") || "(all)"],
      ["deliver policy", c.deliver_policy],
      ["ack policy", c.ack_policy],
      ["ack wait", `${(c.ack_wait ?? 0) / NS_PER_MS}ms`],
      ["delivered", `consumer ${ci.delivered.consumer_seq}, stream ${ci.delivered.stream_seq}`],
      ["ack floor", `consumer ${ci.ack_floor.consumer_seq}, stream ${ci.ack_floor.stream_seq}`],
      ["ack pending", ci.num_ack_pending],
      ["redelivered", ci.num_redelivered],
      ["pending", ci.num_pending],
      ["waiting pulls", ci.num_waiting],
    ],
  );
}

async function streamCmd(nc: NatsConnection, args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  const jsm = await jetstreamManager(nc, { timeout: timeoutFrom(args) });
  const asJson = args.flags.has("json");
  const verb = positional(args, 0, "subcommand (add, ls, info, rm, purge, get, move, stepdown, peer-remove)");
  switch (verb) {
    case "add": {
      const name = positional(args, 1, "stream name");
      const cfg: Partial<StreamConfig> & { name: string } = { name };
      const subjects = (args.flags.get("subjects") ?? []).flatMap((s) => s.split(",")).filter((s) => s !== "");
      if (subjects.length > 0) cfg.subjects = subjects;
      const set = (k: string, v: unknown): void => {
        if (v !== undefined) (cfg as Record<string, unknown>)[k] = v;
      };
      set("storage", oneOf(args, "storage", ["file", "memory"]));
      set("retention", oneOf(args, "retention", ["limits", "interest", "workqueue"]));
      set("max_msgs", int(args, "max-msgs"));
      set("max_bytes", int(args, "max-bytes"));
      set("max_age", durationNs(args, "max-age"));
      set("max_msg_size", int(args, "max-msg-size"));
      set("max_msgs_per_subject", int(args, "max-msgs-per-subject"));
      set("discard", oneOf(args, "discard", ["old", "new"]));
      set("duplicate_window", durationNs(args, "dupe-window"));
      set("num_replicas", int(args, "replicas"));
      if (args.flags.has("allow-direct")) cfg.allow_direct = true;
      if (args.flags.has("allow-rollup")) cfg.allow_rollup_hdrs = true;
      const si = await jsm.streams.add(cfg);
      await write(io.stdout, asJson ? json(si) : `Stream ${name} created\n` + streamTable(si));
      return 0;
    }
    case "ls": {
      const rows: Array<Array<string | number>> = [];
      const all: StreamInfo[] = [];
      for await (const si of jsm.streams.list()) {
        all.push(si);
        rows.push([si.config.name, (si.config.subjects ?? []).join(","), si.state.messages, bytes(si.state.bytes), si.state.consumer_count, si.state.last_ts]);
      }
      if (asJson) await write(io.stdout, json(all));
      else if (rows.length === 0) await write(io.stdout, "No streams defined\n");
      else await write(io.stdout, table(["NAME", "SUBJECTS", "MESSAGES", "BYTES", "CONSUMERS", "LAST MESSAGE"], rows));
      return 0;
    }
    case "stepdown": {
      const name = positional(args, 1, "stream name");
      const preferred = lastFlag(args, "preferred");
      const body = preferred === undefined ? {} : { placement: { preferred } };
      const timeout = timeoutFrom(args);
      const was = (await jsm.streams.info(name)).cluster?.leader;
      const r = JSON.parse(new TextDecoder().decode((await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${name}`, JSON.stringify(body), { timeout })).data)) as { success?: boolean; error?: { description?: string } };
      if (r.error !== undefined) throw new Error(r.error.description ?? "step-down refused");
      // Asked at once, a node whose copy of the placement is a moment old still names the old leader (as the nats CLI,
      // ask until another is named, within the timeout).
      let si = await jsm.streams.info(name);
      for (const until = Date.now() + timeout; si.cluster?.leader === was && Date.now() < until; si = await jsm.streams.info(name)) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await write(io.stdout, asJson ? json(si) : `Stream ${name}: leadership handed over, now led by ${si.cluster?.leader ?? "?"}\n`);
      return 0;
    }
    case "peer-remove": {
      const name = positional(args, 1, "stream name");
      const peer = positional(args, 2, "node name");
      const r = JSON.parse(new TextDecoder().decode((await nc.request(`$JS.API.STREAM.PEER.REMOVE.${name}`, JSON.stringify({ peer }), { timeout: timeoutFrom(args) })).data)) as { success?: boolean; error?: { description?: string } };
      if (r.error !== undefined) throw new Error(r.error.description ?? "peer removal refused");
      await write(io.stdout, asJson ? json({ stream: name, removed: peer }) : `Stream ${name}: ${peer} is being replaced; nagare stream info ${name} shows the replicas\n`);
      return 0;
    }
    case "info": {
      const si = await jsm.streams.info(positional(args, 1, "stream name"));
      await write(io.stdout, asJson ? json(si) : streamTable(si));
      return 0;
    }
    case "rm": {
      const name = positional(args, 1, "stream name");
      await jsm.streams.delete(name);
      await write(io.stdout, asJson ? json({ success: true }) : `Stream ${name} deleted\n`);
      return 0;
    }
    case "move": {
      const name = positional(args, 1, "stream name");
      const tags = (args.flags.get("tag") ?? []).flatMap((t) => t.split(",")).filter((t) => t !== "");
      const to = lastFlag(args, "to");
      const cancel = args.flags.has("cancel");
      if ([tags.length > 0, to !== undefined, cancel].filter(Boolean).length !== 1) throw new UsageError("stream move needs one of --tag, --to or --cancel");
      if (to !== undefined || cancel) {
        const account = lastFlag(args, "account") ?? "$G";
        const subject = `$JS.API.ACCOUNT.STREAM.${cancel ? "CANCEL_MOVE" : "MOVE"}.${account}.${name}`;
        const reply = await nc.request(subject, JSON.stringify(cancel ? {} : { to }), { timeout: timeoutFrom(args) });
        const up = JSON.parse(new TextDecoder().decode(reply.data)) as StreamInfo & { error?: { code: number; err_code: number; description: string } };
        if (up.error !== undefined) throw new Error(`${up.error.description} (${up.error.code} ${up.error.err_code})`);
        await write(io.stdout, asJson ? json(up) : cancel ? `Stream ${name}: move withdrawn, led by ${up.cluster?.leader ?? "?"}\n` : `Stream ${name} is moving from ${up.cluster?.leader ?? "?"} to ${to}; nagare stream info ${name} shows the leader\n`);
        return 0;
      }
      const si = await jsm.streams.info(name);
      const up = await jsm.streams.update(name, { ...si.config, placement: { cluster: si.config.placement?.cluster ?? "", tags } });
      await write(io.stdout, asJson ? json(up) : `Stream ${name} placed on nodes tagged ${tags.join(", ")}: led by ${up.cluster?.leader ?? "?"}, it moves unless that node has them; nagare stream info ${name} shows the leader\n`);
      return 0;
    }
    case "purge": {
      const name = positional(args, 1, "stream name");
      const opts: Record<string, unknown> = {};
      if (lastFlag(args, "subject") !== undefined) opts.filter = lastFlag(args, "subject");
      if (int(args, "seq") !== undefined) opts.seq = int(args, "seq");
      if (int(args, "keep") !== undefined) opts.keep = int(args, "keep");
      const r = await jsm.streams.purge(name, opts as never);
      await write(io.stdout, asJson ? json(r) : `Purged ${r.purged} messages from ${name}\n`);
      return 0;
    }
    case "get": {
      const name = positional(args, 1, "stream name");
      const last = lastFlag(args, "last-for");
      const query = last !== undefined ? { last_by_subj: last } : { seq: Number(positional(args, 2, "sequence (or --last-for <subject>)")) };
      const m = await jsm.streams.getMessage(name, query);
      if (m === null) {
        await write(io.stderr, "nagare stream get: no message found\n");
        return 1;
      }
      if (asJson) {
        await write(io.stdout, json({ subject: m.subject, seq: m.seq, time: m.time.toISOString(), headers: m.header ? Object.fromEntries([...m.header].map(([k, v]) => [k, v])) : {}, data: m.string() }));
      } else {
        await write(io.stdout, `Item: ${name}#${m.seq} received ${m.time.toISOString()} on subject ${m.subject}\n${headerLines(m.header)}\n${m.string()}\n`);
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown stream subcommand "${verb}"`);
  }
}

async function consumerCmd(nc: NatsConnection, args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  const jsm = await jetstreamManager(nc, { timeout: timeoutFrom(args) });
  const asJson = args.flags.has("json");
  const verb = positional(args, 0, "subcommand (add, ls, info, rm, next)");
  const stream = positional(args, 1, "stream name");
  switch (verb) {
    case "add": {
      const name = positional(args, 2, "consumer name");
      const cfg: Partial<ConsumerConfig> = { durable_name: name, ack_policy: (oneOf(args, "ack", ["explicit", "all", "none"]) ?? "explicit") as ConsumerConfig["ack_policy"] };
      const filters = args.flags.get("filter") ?? [];
      if (filters.length === 1) cfg.filter_subject = filters[0];
      else if (filters.length > 1) cfg.filter_subjects = filters;
      const deliver = lastFlag(args, "deliver");
      if (deliver !== undefined) {
        if (/^\d+$/.test(deliver)) {
          cfg.deliver_policy = "by_start_sequence" as ConsumerConfig["deliver_policy"];
          cfg.opt_start_seq = Number(deliver);
        } else if (["all", "last", "new", "last_per_subject"].includes(deliver)) cfg.deliver_policy = deliver as ConsumerConfig["deliver_policy"];
        else throw new UsageError(`--deliver must be all, last, new, last_per_subject or a start sequence, got "${deliver}"`);
      }
      const ackWait = durationNs(args, "ack-wait");
      if (ackWait !== undefined) cfg.ack_wait = ackWait;
      const md = int(args, "max-deliver");
      if (md !== undefined) cfg.max_deliver = md;
      const mp = int(args, "max-pending");
      if (mp !== undefined) cfg.max_ack_pending = mp;
      const push = lastFlag(args, "push");
      if (push !== undefined) cfg.deliver_subject = push;
      const ci = await jsm.consumers.add(stream, cfg);
      await write(io.stdout, asJson ? json(ci) : `Consumer ${stream} > ${name} created\n` + consumerTable(ci));
      return 0;
    }
    case "ls": {
      const all: ConsumerInfo[] = [];
      for await (const ci of jsm.consumers.list(stream)) all.push(ci);
      if (asJson) await write(io.stdout, json(all));
      else if (all.length === 0) await write(io.stdout, `No consumers on ${stream}\n`);
      else {
        const rows = all.map((ci) => [ci.name, ci.config.deliver_subject ? "push" : "pull", ci.config.ack_policy, ci.num_pending, ci.num_ack_pending, ci.num_redelivered]);
        await write(io.stdout, table(["NAME", "MODE", "ACK", "PENDING", "ACK PENDING", "REDELIVERED"], rows));
      }
      return 0;
    }
    case "info": {
      const ci = await jsm.consumers.info(stream, positional(args, 2, "consumer name"));
      await write(io.stdout, asJson ? json(ci) : consumerTable(ci));
      return 0;
    }
    case "rm": {
      const name = positional(args, 2, "consumer name");
      await jsm.consumers.delete(stream, name);
      await write(io.stdout, asJson ? json({ success: true }) : `Consumer ${stream} > ${name} deleted\n`);
      return 0;
    }
    case "next": {
      const name = positional(args, 2, "consumer name");
      const count = int(args, "count") ?? 1;
      if (count < 1) throw new UsageError("--count must be at least 1");
      const timeoutMs = (durationNs(args, "timeout") ?? 5000 * NS_PER_MS) / NS_PER_MS;
      const c = await jetstream(nc, { timeout: timeoutFrom(args) }).consumers.get(stream, name);
      let got = 0;
      for await (const m of await c.fetch({ max_messages: count, expires: Math.max(1000, timeoutMs) })) {
        got++;
        if (asJson) {
          await write(io.stdout, JSON.stringify({ subject: m.subject, seq: m.seq, delivered: m.info.deliveryCount, pending: m.info.pending, data: m.string() }) + "\n");
        } else {
          await write(io.stdout, `[#${got}] ${m.subject} seq ${m.seq} (delivery ${m.info.deliveryCount}, ${m.info.pending} pending)\n${headerLines(m.headers)}${m.string()}\n`);
        }
        if (!args.flags.has("no-ack")) await m.ackAck();
      }
      if (got === 0) {
        await write(io.stderr, "nagare consumer next: no messages\n");
        return 1;
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown consumer subcommand "${verb}"`);
  }
}

/**
 * The bucket, checked to exist: the KV client's open() does not look, so a
 * get or watch of a missing bucket failed with "stream not found" and a
 * delete with "jetstream is not enabled" (its publish found no stream).
 */
async function openBucket(kvm: Kvm, bucket: string): Promise<Awaited<ReturnType<Kvm["open"]>>> {
  const kv = await kvm.open(bucket);
  try {
    await kv.status();
  } catch (err) {
    if (/stream not found/i.test(errorText(err))) throw new Error(`bucket ${bucket} not found`);
    throw err;
  }
  return kv;
}

async function kvCmd(nc: NatsConnection, args: ParsedArgs, io: ClientCommandIo): Promise<number> {
  const asJson = args.flags.has("json");
  const verb = positional(args, 0, "subcommand (get, put, del, watch)");
  const bucket = positional(args, 1, "bucket");
  const kvm = new Kvm(jetstream(nc, { timeout: timeoutFrom(args) }));
  switch (verb) {
    case "get": {
      const key = positional(args, 2, "key");
      const e = await (await openBucket(kvm, bucket)).get(key);
      if (e === null || e.operation !== "PUT") {
        await write(io.stderr, `nagare kv get: ${bucket} > ${key}: key not found\n`);
        return 1;
      }
      await write(io.stdout, asJson ? JSON.stringify({ key, revision: e.revision, created: e.created.toISOString(), value: e.string() }) + "\n" : `${e.string()}\n`);
      return 0;
    }
    case "put": {
      const key = positional(args, 2, "key");
      const value = positional(args, 3, "value");
      const history = int(args, "history");
      const ttl = durationNs(args, "ttl");
      const kv = await kvm.create(bucket, { history, ttl: ttl === undefined ? undefined : ttl / NS_PER_MS });
      const rev = await kv.put(key, value);
      await write(io.stdout, asJson ? JSON.stringify({ key, revision: rev }) + "\n" : `${bucket} > ${key} revision ${rev}\n`);
      return 0;
    }
    case "del": {
      const key = positional(args, 2, "key");
      await (await openBucket(kvm, bucket)).delete(key);
      await write(io.stdout, asJson ? JSON.stringify({ key, deleted: true }) + "\n" : `${bucket} > ${key} deleted\n`);
      return 0;
    }
    case "watch": {
      const key = args.positionals[2];
      const max = int(args, "count");
      const kv = await openBucket(kvm, bucket);
      const w = await kv.watch(key === undefined ? {} : { key });
      const undo = drainOnSignal(nc, () => w.stop());
      await write(io.stderr, `Watching ${bucket} > ${key ?? ">"}\n`);
      let n = 0;
      try {
        for await (const e of w) {
          n++;
          const text = asJson
            ? JSON.stringify({ key: e.key, operation: e.operation, revision: e.revision, value: e.string() }) + "\n"
            : `[${e.created.toISOString()}] ${e.operation} ${bucket} > ${e.key}${e.operation === "PUT" ? `: ${e.string()}` : ""}\n`;
          await write(io.stdout, text);
          if (max !== undefined && n >= max) break;
        }
      } finally {
        undo();
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown kv subcommand "${verb}"`);
  }
}

const GROUPS: Record<JsGroup, { flags: FlagSpec[]; run: (nc: NatsConnection, args: ParsedArgs, io: ClientCommandIo) => Promise<number> }> = {
  stream: { flags: STREAM_FLAGS, run: streamCmd },
  consumer: { flags: CONSUMER_FLAGS, run: consumerCmd },
  kv: { flags: KV_FLAGS, run: kvCmd },
};

/** Runs `nagare <group> ...`; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runJsCommand(
  group: JsGroup,
  argv: string[],
  io: ClientCommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
): Promise<number> {
  let nc: NatsConnection | undefined;
  try {
    const args = parseArgs(argv, [...COMMON, ...GROUPS[group].flags]);
    if (args.flags.has("help") || args.positionals.length === 0) {
      await write(args.flags.has("help") ? io.stdout : io.stderr, USAGE[group]);
      return args.flags.has("help") ? 0 : 2;
    }
    nc = await open(serverFrom(args), io, timeoutFrom(args), connectionFrom(args));
    if (nc === undefined) return 1;
    return await GROUPS[group].run(nc, args, io);
  } catch (err) {
    return await reportFailure(group, err, USAGE[group], io.stderr);
  } finally {
    if (nc !== undefined) await finish(nc);
  }
}
