/**
 * Security benchmark (issue 18): nagare and nats-server side by side in one
 * run, on the same certificate and the same users, with the same client
 * load (the `nats` v2 client in this process), each server in its own child
 * process pinned as bench/core.ts pins them.
 *
 *   npm run bench:security                  # full run, writes bench/results/security-<date>.json
 *   node dist/bench/security.js --quick     # smaller counts, writes nothing
 *   node dist/bench/security.js --only=tls_nkey_connects --profile
 *                                           # one scenario; nagare writes a .cpuprofile to bench/profiles/
 *
 * Three questions:
 * - TLS pub→sub throughput (the sizes of core.ts's main figure), nagare / nats-server;
 * - TLS connections with NKey authentication per second (TCP and TLS
 *   handshake, INFO with nonce, CONNECT with the signed nonce, PING/PONG,
 *   close), a few at a time;
 * - what a 20-rule permission set costs on the hot path: the same pub→sub
 *   load by a user with those permissions and by one without, on the same
 *   server process, alternately.
 */

import { execFileSync } from "node:child_process";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadavg, tmpdir } from "node:os";
import { generateKeyPairSync, sign } from "node:crypto";
import { connect, type Authenticator, type ConnectionOptions } from "nats";
import { Prefix } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { machineInfo, benchFlags, cpuSeconds, median, requireNatsServer, natsServerVersion, publish, pubSub, round, type Running, start, type Target, type Throughput, windowed } from "./harness.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const { quick, only, profile, repeats: REPEATS } = benchFlags();
const natsServer = requireNatsServer();

// ---- what both servers are given ----

const dir = mkdtempSync(join(tmpdir(), "nagare-secbench-"));
const certFile = join(dir, "server.pem");
const keyFile = join(dir, "server.key");
// One self-signed P-256 certificate for 127.0.0.1 (and localhost, the name the client checks): the client trusts it as its own CA.
execFileSync(
  "openssl",
  ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", "/CN=nagare bench", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
  { stdio: "pipe" },
);

/**
 * The NKey user. The client signs each nonce with node:crypto through the
 * client's `authenticator` hook: the `nats` client's own nkeyAuthenticator
 * signs in pure JavaScript (~10 ms a signature), which would make this
 * process, not the servers, the limit on connects per second.
 */
const nkeyPair = generateKeyPairSync("ed25519");
const nkeyPublic = new TextDecoder().decode(Codec.encode(Prefix.User, nkeyPair.publicKey.export({ format: "der", type: "spki" }).subarray(12)));
const nkeyAuth: Authenticator = (nonce?: string) => ({ nkey: nkeyPublic, sig: sign(null, Buffer.from(nonce ?? ""), nkeyPair.privateKey).toString("base64url") });

/**
 * 20 rules, 10 on each side, wildcards in most: what a service user might
 * hold. The load's subject (`bench.pubsub`) is allowed both ways, and the
 * subscription (`bench.>`) overlaps a denied subject, so nagare checks each
 * delivered message against the subscribe deny list, as nats-server does.
 */
const PERMISSIONS = `{
      publish: {
        allow: ["bench.>", "orders.*.created", "metrics.>", "_INBOX.>", "svc.*.request"]
        deny: ["bench.secret.>", "orders.*.deleted", "metrics.internal.*", "admin.>", "$JS.API.STREAM.DELETE.>"]
      }
      subscribe: {
        allow: ["bench.>", "orders.>", "metrics.*.cpu", "_INBOX.>", "svc.>"]
        deny: ["bench.secret.>", "orders.*.deleted", "metrics.internal.*", "admin.>", "$SYS.>"]
      }
    }`;

/** The same file for both servers: nats-server's syntax is nagare's. */
function config(port: number, tls: boolean): string {
  const file = join(dir, `${tls ? "tls" : "plain"}-${port}.conf`);
  writeFileSync(
    file,
    `host: 127.0.0.1
port: ${port}
${tls ? `tls { cert_file: "${certFile}", key_file: "${keyFile}" }\n` : ""}authorization {
  users: [
    { user: open, password: open }
    { user: ruled, password: ruled, permissions: ${PERMISSIONS} }
    { nkey: ${nkeyPublic} }
  ]
}
`,
  );
  return file;
}

interface Server {
  name: "nagare" | "nats-server";
  target(tls: boolean): Target;
}

const nagareMain = join(root, "dist/src/cli/main.js");
const servers: Server[] = [
  {
    name: "nagare",
    target: (tls) => ({
      name: "nagare",
      command: process.execPath,
      args: (port) => [...(profile ? ["--cpu-prof", `--cpu-prof-dir=${join(root, "bench", "profiles")}`] : []), nagareMain, "server", "-c", config(port, tls)],
    }),
  },
  { name: "nats-server", target: (tls) => ({ name: "nats-server", command: natsServer, args: (port) => ["-c", config(port, tls)] }) },
];

const tlsClient: Omit<ConnectionOptions, "servers"> = { tls: { caFile: certFile } };
const asOpen = { user: "open", pass: "open" };
const asRuled = { user: "ruled", pass: "ruled" };

// ---- what each server negotiates ----

interface Negotiated {
  protocol: string | null;
  cipher: string;
  key_exchange: string | undefined;
  /** NewSessionTicket messages the client got within 200 ms of the handshake (nats clients never resume with them). */
  session_tickets: number;
}

/** The TLS the benchmark's client gets from `server`: INFO in the clear, then the upgrade, as the nats client does it (with Node's TLS defaults). */
function negotiated(server: Running): Promise<Negotiated> {
  const port = Number(new URL(server.url).port);
  return new Promise((resolve, reject) => {
    const tcp = tcpConnect(port, "127.0.0.1");
    tcp.on("error", reject);
    let info = "";
    const onInfo = (d: Buffer): void => {
      info += d.toString("latin1");
      if (!info.includes("\r\n")) return;
      tcp.off("data", onInfo);
      const secure = tlsConnect({ socket: tcp, ca: readFileSync(certFile), servername: "localhost" });
      let tickets = 0;
      secure.on("session", () => tickets++);
      secure.on("error", reject);
      secure.on("data", () => {});
      secure.once("secureConnect", () => {
        const r = { protocol: secure.getProtocol(), cipher: secure.getCipher().name, key_exchange: (secure.getEphemeralKeyInfo() as { name?: string } | null)?.name };
        setTimeout(() => {
          secure.destroy();
          resolve({ ...r, session_tickets: tickets });
        }, 200);
      });
    };
    tcp.on("data", onInfo);
  });
}

// ---- load ----

interface Connects {
  connections: number;
  concurrency: number;
  seconds: number;
  connects_per_sec: number;
  server_cpu_us_per_connect: number;
}

/** `total` connections, `concurrency` at a time: each connects (TLS, NKey), gets its first PONG and closes. */
async function nkeyConnects(server: Running, total: number, concurrency: number): Promise<Connects> {
  const cpu0 = cpuSeconds(server.pid);
  const t0 = process.hrtime.bigint();
  await windowed(total, concurrency, async () => {
    // connect() resolves after the server's PONG to the client's first PING.
    const nc = await connect({ ...tlsClient, servers: server.url, authenticator: nkeyAuth, reconnect: false });
    await nc.close();
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(server.pid) - cpu0;
  return {
    connections: total,
    concurrency,
    seconds: round(seconds, 3),
    connects_per_sec: Math.round(total / seconds),
    server_cpu_us_per_connect: round((cpu * 1e6) / total, 1),
  };
}

// ---- the run ----

type Measured = (Throughput | Connects) & { load_1m: number };

interface Scenario {
  name: string;
  tls: boolean;
  key: "msgs_per_sec" | "connects_per_sec";
  cpuKey: "server_cpu_us_per_msg" | "server_cpu_us_per_connect";
  run(server: Running, scale: number): Promise<Throughput | Connects>;
}

const k = quick ? 0.1 : 1;
const n = (count: number, scale: number, min = 1000): number => Math.max(min, Math.round(count * k * scale));
const tlsScenarios: Scenario[] = [
  {
    name: "tls_pubsub_16b",
    tls: true,
    key: "msgs_per_sec",
    cpuKey: "server_cpu_us_per_msg",
    run: (s, x) => pubSub(s, { size: 16, total: n(1_000_000, x), subs: 1, window: 50_000, client: { ...tlsClient, ...asOpen } }),
  },
  {
    name: "tls_pubsub_1kib",
    tls: true,
    key: "msgs_per_sec",
    cpuKey: "server_cpu_us_per_msg",
    run: (s, x) => pubSub(s, { size: 1024, total: n(200_000, x), subs: 1, window: 8_000, client: { ...tlsClient, ...asOpen } }),
  },
  { name: "tls_nkey_connects", tls: true, key: "connects_per_sec", cpuKey: "server_cpu_us_per_connect", run: (s, x) => nkeyConnects(s, n(1_000, x, 20), 4) },
];
/** Permissions: the same load by both users on one server process, alternately; plain TCP so that TLS does not hide the cost. */
const permissionLoad = (client: Omit<ConnectionOptions, "servers">) => (s: Running, x: number) =>
  pubSub(s, { size: 16, total: n(1_000_000, x), subs: 1, window: 50_000, filter: "bench.>", client });
const permScenarios: Scenario[] = [
  { name: "pubsub_16b_no_permissions", tls: false, key: "msgs_per_sec", cpuKey: "server_cpu_us_per_msg", run: permissionLoad(asOpen) },
  { name: "pubsub_16b_20_permissions", tls: false, key: "msgs_per_sec", cpuKey: "server_cpu_us_per_msg", run: permissionLoad(asRuled) },
];
/** The same unmeasured warm-up for both servers: a long-running server is measured, not a cold JIT. */
const WARMUP_SCALE = 0.2;

async function measure(sc: Scenario, server: Running): Promise<Measured> {
  const r = await sc.run(server, 1);
  return { ...r, load_1m: round(loadavg()[0], 2) };
}

function pairedMedian(none: Measured[], ruled: Measured[]): number {
  const ratios = none.map((x, i) => (ruled[i] as Throughput).server_cpu_us_per_msg / (x as Throughput).server_cpu_us_per_msg);
  return round(median(ratios, (r) => r), 3);
}

async function main(): Promise<void> {
  const natsVersion = await natsServerVersion(natsServer);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const wanted = (sc: Scenario): boolean => only === undefined || sc.name === only || (only === "permissions" && !sc.tls);
  const all = [...tlsScenarios, ...permScenarios];
  const runs: Record<string, Record<string, Measured[]>> = Object.fromEntries(all.map((sc) => [sc.name, { nagare: [], "nats-server": [] }]));
  const tls: Record<string, Negotiated> = {};

  for (let r = 0; r < REPEATS; r++) {
    // Alternate the servers so that drift in the machine's load hits both alike.
    for (const srv of r % 2 === 0 ? servers : [...servers].reverse()) {
      for (const group of [tlsScenarios, permScenarios]) {
        const todo = group.filter(wanted);
        if (todo.length === 0) continue;
        const server = await start(srv.target(todo[0].tls));
        try {
          if (todo[0].tls && tls[srv.name] === undefined) {
            tls[srv.name] = await negotiated(server);
            console.error(`${srv.name} negotiates ${JSON.stringify(tls[srv.name])}`);
          }
          for (const sc of todo) await sc.run(server, WARMUP_SCALE);
          // The permission pair alternates which user goes first, too.
          const order = group === permScenarios && r % 2 === 1 ? [...todo].reverse() : todo;
          for (const sc of order) {
            const m = await measure(sc, server);
            runs[sc.name][srv.name].push(m);
            console.error(`repeat ${r + 1}/${REPEATS} ${srv.name} ${sc.name}: ${sc.key} ${(m as unknown as Record<string, number>)[sc.key]}, ${sc.cpuKey} ${(m as unknown as Record<string, number>)[sc.cpuKey]}, load ${m.load_1m}`);
          }
        } finally {
          await server.stop();
        }
      }
    }
  }

  const results: Record<string, unknown> = {};
  const medianOf = (sc: Scenario, who: string, key: string): Record<string, number> =>
    median(runs[sc.name][who], (x) => (x as unknown as Record<string, number>)[key]) as unknown as Record<string, number>;
  for (const sc of all.filter(wanted)) {
    const a = medianOf(sc, "nagare", sc.key);
    const b = medianOf(sc, "nats-server", sc.key);
    results[sc.name] = {
      nagare: a,
      "nats-server": b,
      ratio: { [sc.key]: round(a[sc.key] / b[sc.key], 3), [sc.cpuKey]: round(a[sc.cpuKey] / b[sc.cpuKey], 3) },
      runs: runs[sc.name],
    };
    console.error(`${sc.name}: ${JSON.stringify((results[sc.name] as { ratio: unknown }).ratio)}`);
  }
  const permissionCost: Record<string, Record<string, number>> = {};
  if (permScenarios.every(wanted)) {
    for (const srv of servers) {
      // Median of each user's runs by CPU per message, the measure the target is in; throughput beside it.
      const none = medianOf(permScenarios[0], srv.name, "server_cpu_us_per_msg");
      const ruled = medianOf(permScenarios[1], srv.name, "server_cpu_us_per_msg");
      const noneTp = medianOf(permScenarios[0], srv.name, "msgs_per_sec");
      const ruledTp = medianOf(permScenarios[1], srv.name, "msgs_per_sec");
      permissionCost[srv.name] = {
        server_cpu_us_per_msg_none: none.server_cpu_us_per_msg,
        server_cpu_us_per_msg_20_rules: ruled.server_cpu_us_per_msg,
        cpu_ratio: round(ruled.server_cpu_us_per_msg / none.server_cpu_us_per_msg, 3),
        // The two users ran back to back on one server in each repeat: the median of those pairs' ratios drifts least with the load.
        paired_cpu_ratio_median: pairedMedian(runs[permScenarios[0].name][srv.name], runs[permScenarios[1].name][srv.name]),
        msgs_per_sec_ratio: round(ruledTp.msgs_per_sec / noneTp.msgs_per_sec, 3),
      };
    }
    results.permission_cost = permissionCost;
    console.error(`permission cost: ${JSON.stringify(permissionCost)}`);
  }

  if (only !== undefined || profile) {
    console.log(JSON.stringify({ tls, ...results }, null, 2));
    return;
  }
  const ratio = (s: string, key: string): number => ((results[s] as { ratio: Record<string, number> }).ratio)[key];
  const report = {
    benchmark: "security",
    date: new Date().toISOString(),
    quick,
    repeats: REPEATS,
    machine: {
      ...machineInfo(),
      note: "2 cores shared with other work: load_1m (os.loadavg) is recorded after each measured run",
    },
    versions: { nagare: pkg.version, "nats-server": natsVersion, client: "nats (v2) in the benchmark process" },
    setup: {
      certificate: "self-signed EC P-256 for 127.0.0.1 and localhost, made with openssl in the run's temp dir, the same file for both servers",
      users: "one config file for both servers: `open` (password, no permissions), `ruled` (password, 20 rules), one NKey user",
      permissions: PERMISSIONS.replace(/\s+/g, " "),
      connects: "each connection: TCP, INFO with nonce, TLS upgrade, CONNECT with the signed nonce (signed with node:crypto through the client's authenticator hook), PING/PONG, close; 4 at a time",
      tls_negotiated: tls,
    },
    notes:
      "Ratios are nagare / nats-server from the same run; median of the repeats by the headline metric. Server CPU from /proc/<pid>/stat (10 ms ticks). Permission cost: the same server process, the two users alternately.",
    results,
    targets_met: {
      tls_pubsub_at_least_0_9x: { tls_pubsub_16b: ratio("tls_pubsub_16b", "msgs_per_sec") >= 0.9, tls_pubsub_1kib: ratio("tls_pubsub_1kib", "msgs_per_sec") >= 0.9 },
      tls_nkey_connects_at_least_0_8x: ratio("tls_nkey_connects", "connects_per_sec") >= 0.8,
      nagare_permissions_cpu_at_most_1_1x: permissionCost.nagare.cpu_ratio <= 1.1,
    },
  };
  publish(root, "security", report, !quick);
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
