/**
 * Kafka commands, a small kafka-topics.sh and kafka-consumer-groups.sh:
 *
 *   nagare topic create|ls|describe|rm
 *   nagare group ls|describe
 *
 * They speak the Kafka protocol (kafka-client.ts), so they work against
 * nagare's Kafka listener or a Kafka broker. Tables for people, `--json`
 * for scripts; exit codes 0 ok, 1 failed, 2 usage, as the JetStream commands.
 */

import { UsageError, lastFlag, parseArgs, reportFailure, timeoutFrom, write, type ClientCommandIo, type FlagSpec, type ParsedArgs } from "./client-commands.js";
import { table } from "./js-commands.js";
import { CONNECT_TIMEOUT_MS, DEFAULT_BOOTSTRAP, KafkaClient, REQUEST_TIMEOUT_MS, parseAddress } from "./kafka-client.js";
import {
  EARLIEST,
  KafkaResponseError,
  LATEST,
  createTopic,
  decodeAssignment,
  deleteTopic,
  describeGroups,
  describeTopicConfigs,
  fetchCommittedOffsets,
  listGroups,
  listOffsets,
  metadata,
  type PartitionOffset,
} from "./kafka-requests.js";
import { ErrorCode } from "../protocols/kafka/errors.js";

export type KafkaGroup = "topic" | "group";

const COMMON: FlagSpec[] = [
  { long: "bootstrap", short: "b", value: true },
  { long: "timeout", value: true },
  { long: "help", short: "h", value: false },
  { long: "json", value: false },
];

const FLAGS: Record<KafkaGroup, FlagSpec[]> = {
  topic: [
    { long: "partitions", value: true },
    { long: "config", value: true, multi: true },
  ],
  group: [],
};

const OPTIONS = `Options:
  --json                       print JSON instead of a table
  -b, --bootstrap <host:port>  Kafka listener to talk to (default: ${DEFAULT_BOOTSTRAP})
  --timeout <duration>         how long to wait for the broker, e.g. 500ms, 2s (default:
                               ${CONNECT_TIMEOUT_MS / 1000}s to connect and learn its versions, ${REQUEST_TIMEOUT_MS / 1000}s per request)
`;

const USAGE: Record<KafkaGroup, string> = {
  topic: `Usage: nagare topic <create|ls|describe|rm> [options]

  create <name> [--partitions n] [--config key=value]...
                 partitions default to the broker's; configs nagare takes:
                 retention.ms, retention.bytes, max.message.bytes,
                 cleanup.policy=delete, message.timestamp.type=LogAppendTime
  ls             topics with their partition and message counts
  describe <name>  partitions (leader, earliest and latest offsets) and configs
  rm <name>

${OPTIONS}`,
  group: `Usage: nagare group <ls|describe> [options]

  ls             consumer groups with their state
  describe <id>  state, members and their partitions, and per partition the
                 committed offset, log end offset and lag

${OPTIONS}`,
};

/** A command whose arguments are checked, to run once connected. */
type Run = (c: KafkaClient, io: ClientCommandIo, asJson: boolean) => Promise<number>;

function positionals(args: ParsedArgs, names: string[]): string[] {
  const [, ...rest] = args.positionals;
  if (rest.length > names.length) throw new UsageError(`unexpected argument "${rest[names.length]}"`);
  return names.map((what, i) => {
    const v = rest[i];
    if (v === undefined || v === "") throw new UsageError(`missing ${what}`);
    return v;
  });
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

const dash = (v: string | number | null): string | number => (v === null || v === "" ? "-" : v);

/** Looks up offsets of a ListOffsets answer; null for a partition answered with an error. */
function offsetsOf(list: PartitionOffset[]): (topic: string, partition: number) => number | null {
  const byTopic = new Map<string, Map<number, number | null>>();
  for (const p of list) {
    const m = byTopic.get(p.topic) ?? new Map<number, number | null>();
    m.set(p.partition, p.error === ErrorCode.NONE ? p.offset : null);
    byTopic.set(p.topic, m);
  }
  return (topic, partition) => byTopic.get(topic)?.get(partition) ?? null;
}

// ---- topic ----

function parseTopicCreate(args: ParsedArgs): { partitions: number; configs: Array<[string, string]> } {
  const raw = lastFlag(args, "partitions");
  let partitions = -1; // the broker's num.partitions
  if (raw !== undefined) {
    partitions = Number(raw);
    if (!/^\d+$/.test(raw) || partitions < 1 || partitions > 0x7fffffff) throw new UsageError(`--partitions must be a positive integer, got "${raw}"`);
  }
  const configs = (args.flags.get("config") ?? []).map((kv): [string, string] => {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--config must be key=value, got "${kv}"`);
    return [kv.slice(0, eq), kv.slice(eq + 1)];
  });
  return { partitions, configs };
}

function prepareTopic(args: ParsedArgs): Run {
  const verb = args.positionals[0];
  switch (verb) {
    case "create": {
      const [name] = positionals(args, ["topic name"]);
      const { partitions, configs } = parseTopicCreate(args);
      return async (c, io, asJson) => {
        const r = await createTopic(c, name, partitions, configs);
        if (r.error !== ErrorCode.NONE) throw new KafkaResponseError(r.error, r.message);
        // Created with the broker's default count: ask how many that was.
        const count = partitions > 0 ? partitions : ((await metadata(c, [name]))[0]?.partitions.length ?? 0);
        await write(io.stdout, asJson ? json({ topic: name, partitions: count }) : `Topic ${name} created with ${count} partition${count === 1 ? "" : "s"}\n`);
        return 0;
      };
    }
    case "ls":
      positionals(args, []);
      return async (c, io, asJson) => {
        const topics = (await metadata(c, null)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        const parts = topics.flatMap((t) => t.partitions.map((p) => ({ topic: t.name, partition: p.partition })));
        const [first, end] = await Promise.all([listOffsets(c, EARLIEST, parts), listOffsets(c, LATEST, parts)]).then(([a, b]) => [offsetsOf(a), offsetsOf(b)]);
        const rows = topics.map((t) => {
          let messages: number | null = 0;
          for (const p of t.partitions) {
            const from = first(t.name, p.partition);
            const to = end(t.name, p.partition);
            messages = messages === null || from === null || to === null ? null : messages + (to - from);
          }
          return { topic: t.name, partitions: t.partitions.length, messages };
        });
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, "No topics\n");
        else await write(io.stdout, table(["TOPIC", "PARTITIONS", "MESSAGES"], rows.map((r) => [r.topic, r.partitions, dash(r.messages)])));
        return 0;
      };
    case "describe": {
      const [name] = positionals(args, ["topic name"]);
      return async (c, io, asJson) => {
        const [t] = await metadata(c, [name]);
        if (t === undefined || t.error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
        if (t.error !== ErrorCode.NONE) throw new KafkaResponseError(t.error, `topic ${name}`);
        const parts = t.partitions.map((p) => ({ topic: name, partition: p.partition }));
        const [first, end, configs] = await Promise.all([listOffsets(c, EARLIEST, parts).then(offsetsOf), listOffsets(c, LATEST, parts).then(offsetsOf), describeTopicConfigs(c, name)]);
        if (configs.error !== ErrorCode.NONE) throw new KafkaResponseError(configs.error, configs.message);
        const partitions = t.partitions.map((p) => ({ partition: p.partition, leader: p.leader, earliest: first(name, p.partition), latest: end(name, p.partition) }));
        if (asJson) {
          const cfg = configs.entries.map((e) => ({ name: e.name, value: e.sensitive ? null : e.value, source: e.source, readOnly: e.readOnly }));
          await write(io.stdout, json({ topic: name, partitions, configs: cfg }));
          return 0;
        }
        const partRows = partitions.map((p) => [p.partition, p.leader < 0 ? "none" : p.leader, dash(p.earliest), dash(p.latest), p.earliest === null || p.latest === null ? "-" : p.latest - p.earliest]);
        const cfgRows = configs.entries.map((e) => [e.name, e.sensitive ? "(sensitive)" : dash(e.value), e.source]);
        await write(
          io.stdout,
          `Topic ${name}: ${partitions.length} partition${partitions.length === 1 ? "" : "s"}\n\n` +
            table(["PARTITION", "LEADER", "EARLIEST", "LATEST", "MESSAGES"], partRows) +
            "\n" +
            table(["CONFIG", "VALUE", "SOURCE"], cfgRows),
        );
        return 0;
      };
    }
    case "rm": {
      const [name] = positionals(args, ["topic name"]);
      return async (c, io, asJson) => {
        const error = await deleteTopic(c, name);
        if (error === ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) throw new Error(`topic ${name} not found`);
        if (error !== ErrorCode.NONE) throw new KafkaResponseError(error, `deleting topic ${name} failed`);
        await write(io.stdout, asJson ? json({ topic: name, deleted: true }) : `Topic ${name} deleted\n`);
        return 0;
      };
    }
    default:
      throw new UsageError(`unknown topic subcommand "${verb}"`);
  }
}

// ---- group ----

interface PartitionLag {
  topic: string;
  partition: number;
  committed: number | null;
  logEnd: number | null;
  lag: number | null;
  owner: string | null;
}

function prepareGroup(args: ParsedArgs): Run {
  const verb = args.positionals[0];
  switch (verb) {
    case "ls":
      positionals(args, []);
      return async (c, io, asJson) => {
        const listed = await listGroups(c);
        const states = new Map((await describeGroups(c, listed.map((g) => g.group))).map((d) => [d.group, d.state]));
        const rows = listed
          .map((g) => ({ group: g.group, state: states.get(g.group) ?? "Unknown", protocolType: g.protocolType }))
          .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
        if (asJson) await write(io.stdout, json(rows));
        else if (rows.length === 0) await write(io.stdout, "No groups\n");
        else await write(io.stdout, table(["GROUP", "STATE", "PROTOCOL-TYPE"], rows.map((r) => [r.group, r.state, dash(r.protocolType)])));
        return 0;
      };
    case "describe": {
      const [id] = positionals(args, ["group id"]);
      return async (c, io, asJson) => {
        const [d] = await describeGroups(c, [id]);
        if (d === undefined) throw new Error(`the broker did not describe group ${id}`);
        if (d.error !== ErrorCode.NONE) throw new KafkaResponseError(d.error, `describing group ${id} failed`);
        // Kafka describes a group it does not know as Dead rather than with an error.
        if (d.state === "Dead") throw new Error(`group ${id} not found`);
        const committed = await fetchCommittedOffsets(c, id);

        // Assignment bytes mean partitions only under the consumer protocol (Connect, say, has its own format).
        const members = d.members.map((m) => ({ ...m, partitions: d.protocolType === "consumer" ? decodeAssignment(m.assignment) : null }));
        const rows = new Map<string, PartitionLag>();
        const row = (topic: string, partition: number): PartitionLag => {
          const k = `${topic}\0${partition}`;
          let r = rows.get(k);
          if (r === undefined) rows.set(k, (r = { topic, partition, committed: null, logEnd: null, lag: null, owner: null }));
          return r;
        };
        for (const o of committed) row(o.topic, o.partition).committed = o.offset;
        for (const m of members) for (const a of m.partitions ?? []) for (const p of a.partitions) row(a.topic, p).owner = m.memberId;
        const partitions = [...rows.values()].sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition));
        const end = offsetsOf(await listOffsets(c, LATEST, partitions));
        for (const p of partitions) {
          p.logEnd = end(p.topic, p.partition);
          if (p.committed !== null && p.logEnd !== null) p.lag = p.logEnd - p.committed;
        }

        if (asJson) {
          const ms = members.map((m) => ({ memberId: m.memberId, instanceId: m.instanceId, clientId: m.clientId, host: m.host, assignment: m.partitions }));
          await write(io.stdout, json({ group: id, state: d.state, protocolType: d.protocolType, protocol: d.protocol, members: ms, partitions }));
          return 0;
        }
        const assigned = (m: (typeof members)[number]): string => {
          if (m.partitions === null) return d.protocolType === "consumer" ? `(${m.assignment.length} undecodable bytes)` : "-";
          return m.partitions.map((a) => `${a.topic}:${a.partitions.join(",")}`).join(" ") || "-";
        };
        let text = table(
          ["FIELD", "VALUE"],
          [
            ["group", id],
            ["state", d.state],
            ["protocol type", dash(d.protocolType)],
            ["protocol", dash(d.protocol)],
            ["members", members.length],
          ],
        );
        text += "\n";
        text += members.length === 0 ? "No active members\n" : table(["MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"], members.map((m) => [m.memberId, dash(m.clientId), dash(m.host), assigned(m)]));
        text += "\n";
        text +=
          partitions.length === 0
            ? "No committed offsets or assigned partitions\n"
            : table(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER"], partitions.map((p) => [p.topic, p.partition, dash(p.committed), dash(p.logEnd), dash(p.lag), dash(p.owner)]));
        await write(io.stdout, text);
        return 0;
      };
    }
    default:
      throw new UsageError(`unknown group subcommand "${verb}"`);
  }
}

const PREPARE: Record<KafkaGroup, (args: ParsedArgs) => Run> = { topic: prepareTopic, group: prepareGroup };

/** Runs `nagare topic|group ...`; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runKafkaCommand(
  group: KafkaGroup,
  argv: string[],
  io: ClientCommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
): Promise<number> {
  let client: KafkaClient | undefined;
  try {
    const args = parseArgs(argv, [...COMMON, ...FLAGS[group]]);
    if (args.flags.has("help") || args.positionals.length === 0) {
      await write(args.flags.has("help") ? io.stdout : io.stderr, USAGE[group]);
      return args.flags.has("help") ? 0 : 2;
    }
    const bootstrap = lastFlag(args, "bootstrap") ?? DEFAULT_BOOTSTRAP;
    if (parseAddress(bootstrap) === null) throw new UsageError(`--bootstrap must be host:port, got "${bootstrap}"`);
    // Every usage error is found before connecting: a typo never waits on the network.
    const timeout = lastFlag(args, "timeout") === undefined ? undefined : timeoutFrom(args);
    const run = PREPARE[group](args);
    client = await KafkaClient.connect(bootstrap, { connectTimeoutMs: timeout, requestTimeoutMs: timeout });
    return await run(client, io, args.flags.has("json"));
  } catch (err) {
    return await reportFailure(group, err, USAGE[group], io.stderr);
  } finally {
    client?.close();
  }
}
