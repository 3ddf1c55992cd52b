#!/usr/bin/env node
/**
 * The `nagare` command: `nagare server [flags]` (or just `nagare -p 4222 ...`,
 * as one would run nats-server), the client commands pub, sub, request and
 * reply, the JetStream commands and the Kafka commands.
 */

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseConf } from "../server/conf-parser.js";
import { confErrorForOption, optionsFromConf, pidFileFromConf } from "../server/conf-options.js";
import { checkOptions, OptionsError, type ServerOptions } from "../core/options.js";
import { mergeOptions, parseServerArgs, type ServerArgs } from "./server-args.js";

const USAGE = `Usage: nagare <command> [options]

Commands:
  server [flags]                     Run the broker (flags as nats-server's; also
                                     "nagare [flags]" when the first argument is a flag)
  pub [options] <subject> [body]     Publish a message
  sub [options] <subject>            Subscribe and print messages
  request [options] <subject> [body] Send a request and print the reply
  reply [options] <subject> <body>   Answer requests on a subject
  stream add|ls|info|rm|purge|get|move|stepdown|peer-remove
                                     Manage streams (JetStream)
  consumer add|ls|info|rm|next       Manage and read consumers
  kv get|put|del|watch               Use a key-value bucket
  topic create|ls|describe|producers|alter|move|moves|rm
                                     Manage Kafka topics (over the Kafka protocol)
  group ls|describe|rm|reset-offsets List, inspect, delete and rewind Kafka consumer groups
  cluster ls                         List a cluster's nodes (state, load), from etcd
  help                               Show this message
Run "nagare <client command> --help" for the client commands' options,
"nagare stream --help" (consumer, kv) for the JetStream commands' and
"nagare topic --help" (group) for the Kafka commands' and "nagare cluster --help".

Server flags:
  -a, --addr, --net <host>           Bind to host address (default: 0.0.0.0)
  -p, --port <port>                  Port for clients (default: 4222; -1 for a random port)
  -n, --name, --server_name <name>   Server name
  -P, --pid <file>                   File to store the process id
  -m, --http_port <port>             Port for HTTP monitoring (-1 for a random port)
  -ms, --https_port <port>           Port for HTTPS monitoring, with the TLS certificate
  -c, --config <file>                Configuration file (nats-server syntax)
  -t                                 Test the configuration (file and flags) and exit
      --ports_file_dir <dir>         Write <executable>_<pid>.ports in this directory
  -sl, --signal <signal>=<pid>       Send a signal to a running server: ldm, stop,
                                     quit, term or reload; <pid> may be a pid file
  -l, --log <file>                   File to write the log to
  -D, --debug                        Enable debugging output
  -V, --trace                        Trace the raw protocol
  -DV, -DVV                          Debug and trace
  -T, --logtime                      Timestamp log lines (default: true; -T=false for none)
      --max_traced_msg_len <len>     Payload bytes shown per traced message (default: all)
  -js, --jetstream                   Enable JetStream (streams, consumers, KV, object store)
  -sd, --store_dir <dir>             JetStream storage directory
      --tls                          Require TLS for clients (with --tlscert and --tlskey)
      --tlscert, --tlskey <file>     Server certificate and its private key (PEM)
      --tlscacert <file>             CA for client certificates; --tlsverify requires them
      --auth <token>                 Token clients must present
      --user <user>, --pass <pass>   User and password clients must present
      --kafka                        Enable the Kafka listener (port 9092; turns JetStream on)
      --kafka_port <port>            Kafka listener port (-1 for a random port; implies --kafka)
      --etcd <url>[,<url>...]        Join a cluster coordinated by etcd (needs a server name, -n)
      --cluster_name <name>          The cluster's name (default: nagare)
      --cluster <nats://host:port>, --routes <url,...>
                                     The route listener and the routes to dial (plaintext)
  -h, --help                         Show this message
  -v, --version                      Show the version

Flags override the configuration file. Flags may be written -flag, --flag,
--flag=value or --flag value. A configuration asking for what nagare cannot
honour (websocket {}, or TLS on the cluster's routes, for two) stops the
server with its file, line and column.

Signals: SIGINT/SIGTERM stop the server, SIGUSR2 enters lame duck mode,
SIGHUP reloads the TLS certificate files, users and permissions (a removed
user's clients are closed; other changes are refused whole and logged as an
error).
`;

const CLIENT_COMMANDS = new Set(["pub", "sub", "request", "reply"]);

async function main(argv: string[]): Promise<void> {
  const cmd = argv[2];
  if (cmd === undefined) {
    process.stderr.write(USAGE);
    process.exitCode = 2;
    return;
  }
  if (cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(USAGE);
    return;
  }
  if (cmd === "server") {
    await runServer(argv.slice(3));
    return;
  }
  if (cmd.startsWith("-")) {
    await runServer(argv.slice(2));
    return;
  }
  if (CLIENT_COMMANDS.has(cmd)) {
    const { runClientCommand } = await import("./client-commands.js");
    await exitWith(await runClientCommand(cmd as "pub" | "sub" | "request" | "reply", argv.slice(3)));
  }
  if (cmd === "stream" || cmd === "consumer" || cmd === "kv") {
    const { runJsCommand } = await import("./js-commands.js");
    await exitWith(await runJsCommand(cmd, argv.slice(3)));
  }
  if (cmd === "cluster") {
    const { runClusterCommand } = await import("./cluster-commands.js");
    await exitWith(await runClusterCommand(argv.slice(3)));
  }
  if (cmd === "topic" || cmd === "group") {
    const { runKafkaCommand } = await import("./kafka-commands.js");
    await exitWith(await runKafkaCommand(cmd, argv.slice(3)));
  }
  process.stderr.write(`nagare: unknown command "${cmd}"\n\n${USAGE}`);
  process.exitCode = 2;
}

/**
 * Ends a client command once its output is written. It does not wait for
 * the event loop to empty: a client library may keep a socket open after
 * giving up (the NATS client does after a connect that timed out before the
 * server's INFO), and a command that has said it failed must not hang.
 */
async function exitWith(code: number): Promise<never> {
  const written = (s: NodeJS.WriteStream): Promise<void> => new Promise((resolve) => s.write("", () => resolve()));
  await Promise.all([written(process.stdout), written(process.stderr)]);
  process.exit(code);
}

function version(): string {
  // Compiled to dist/src/cli/main.js: package.json is three levels up.
  for (const rel of ["../../../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "nagare" && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return "unknown";
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function runServer(args: string[]): Promise<void> {
  let parsed: ServerArgs;
  try {
    parsed = parseServerArgs(args);
  } catch (err) {
    process.stderr.write(`nagare server: ${errorText(err)}\nRun "nagare --help" for the flags.\n`);
    process.exitCode = 2;
    return;
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (parsed.version) {
    process.stdout.write(`nagare ${version()}\n`);
    return;
  }
  if (parsed.signal !== undefined) {
    process.exitCode = sendSignal(parsed.signal);
    return;
  }

  if (parsed.testConfig && parsed.configFile === undefined) {
    process.stderr.write("nagare server: -t tests a configuration file: give it with -c <file>\n");
    process.exitCode = 2;
    return;
  }
  let options: ServerOptions;
  let pidFile: string | undefined;
  let tree: Record<string, unknown> | undefined;
  try {
    ({ options, pidFile, tree } = serverOptions(parsed));
  } catch (err) {
    // One line per problem, each with its file, line and column.
    process.stderr.write(errorText(err).split("\n").map((line) => `nagare server: ${line}\n`).join(""));
    process.exitCode = 1;
    return;
  }
  const { startServer, checkTlsFiles, TlsFilesError } = await import("../server/server.js");
  // Certificates that cannot serve stop -t and the start alike, said at the block of the file that names them (as nats-server).
  try {
    checkTlsFiles(options);
  } catch (err) {
    const placed = err instanceof TlsFilesError && tree !== undefined ? confErrorForOption(tree, `${err.block}: ${err.message}`) : undefined;
    process.stderr.write(`nagare server: ${errorText(placed ?? err)}\n`);
    process.exitCode = 1;
    return;
  }
  if (parsed.testConfig) {
    process.stderr.write(`nagare server: configuration file ${parsed.configFile} is valid\n`);
    return;
  }

  type Server = Awaited<ReturnType<typeof startServer>>;
  let srv: Server | undefined;

  // Handlers go in before the server starts: it reports "Server is ready" as
  // soon as it listens, and a harness may signal right after that line.
  let stopping = false;
  let pending: ((s: Server) => Promise<void>) | undefined;
  const stop = (how: (s: Server) => Promise<void>): void => {
    if (!srv) {
      pending ??= how;
      return;
    }
    const s = srv;
    if (stopping) {
      // A second signal while shutting down (e.g. during lame duck): stop now.
      void s.close().then(() => process.exit(0));
      return;
    }
    stopping = true;
    how(s).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`nagare server: error while stopping: ${errorText(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop((s) => s.close()));
  process.on("SIGTERM", () => stop((s) => s.close()));
  process.on("SIGUSR2", () => stop((s) => s.lameDuck()));
  // nats-server reloads its configuration on SIGHUP (`--signal reload`): the file and flags are read again,
  // and what a running server can change (the TLS certificate) is changed; anything else that differs is refused.
  process.on("SIGHUP", () => {
    if (!srv || stopping) return;
    try {
      srv.reload(() => serverOptions(parsed).options);
    } catch (err) {
      // Logged by the server too (its log file, if it has one); said here where the operator sent the signal from a shell.
      if (options.logFile !== undefined || options.noLog === true) process.stderr.write(errorText(err).split("\n").map((line) => `nagare server: failed to reload the configuration: ${line}\n`).join(""));
    }
  });

  try {
    srv = await startServer(options);
  } catch (err) {
    process.stderr.write(`nagare server: cannot start: ${errorText(err)}\n`);
    process.exit(1);
  }

  if (pidFile !== undefined) {
    try {
      writeFileSync(pidFile, String(process.pid));
    } catch (err) {
      process.stderr.write(`nagare server: cannot write pid file: ${errorText(err)}\n`);
      await srv.close();
      process.exit(1);
    }
  }

  if (pending) stop(pending);
}

/**
 * The options of `nagare server`: the configuration file's, then the flags'
 * over them, checked. Throws with one line per problem (file, line and
 * column for the file's).
 */
function serverOptions(parsed: ServerArgs): { options: ServerOptions; pidFile: string | undefined; tree: Record<string, unknown> | undefined } {
  let fromConf: ServerOptions = {};
  let tree: Record<string, unknown> | undefined;
  let pidFile = parsed.pidFile;
  if (parsed.configFile !== undefined) {
    const file = resolve(parsed.configFile);
    try {
      tree = parseConf(readFileSync(file, "utf8"), { baseDir: dirname(file), file: parsed.configFile });
      fromConf = optionsFromConf(tree);
      pidFile ??= pidFileFromConf(tree);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new Error(`configuration file ${parsed.configFile} not found`);
      if (code !== undefined) throw new Error(`cannot read configuration file ${parsed.configFile}: ${code}`);
      throw err;
    }
  }
  const options = mergeOptions(fromConf, parsed.options, parsed.off);
  // Flags that ask for something incomplete are named as the user wrote them (the options check below would say
  // "option tls needs certFile and keyFile", the embedded API's words).
  if (parsed.options.tls !== undefined && (options.tls?.certFile === undefined || options.tls?.keyFile === undefined)) {
    if (options.tls?.certFile !== undefined) throw new Error("--tlscert needs --tlskey");
    if (options.tls?.keyFile !== undefined) throw new Error("--tlskey needs --tlscert");
    throw new Error("--tls, --tlsverify and --tlscacert need --tlscert and --tlskey (TLS flags replace the configuration file's tls block, as nats-server's do)");
  }
  // Flags replace the file's authorization block; a file that has one asks for credentials the flags would drop
  // (nats-server keeps the file's users and ignores the flag one): neither is what was asked, so neither starts.
  const fileAuth = fromConf.authorization;
  if (parsed.options.authorization !== undefined && fileAuth !== undefined && (fileAuth.token !== undefined || (fileAuth.users?.length ?? 0) > 0)) {
    throw new Error(`--auth, --user and --pass cannot be used with the authorization block of ${parsed.configFile}`);
  }
  const flagUser = parsed.options.authorization?.users?.[0];
  if (flagUser !== undefined && flagUser.nkey === undefined && (flagUser.user === undefined) !== (flagUser.password === undefined)) {
    throw new Error(flagUser.user === undefined ? "--pass needs --user" : "--user needs --pass");
  }
  options.host ??= "0.0.0.0";
  options.noLog = false;
  try {
    checkOptions(options);
  } catch (err) {
    // A problem of the file's options found only once they are put together is still said at its place in the file.
    if (err instanceof OptionsError && tree !== undefined) throw confErrorForOption(tree, err.message) ?? err;
    throw err;
  }
  return { options, pidFile, tree };
}

const SIGNALS: Record<string, NodeJS.Signals> = {
  ldm: "SIGUSR2",
  reload: "SIGHUP",
  stop: "SIGKILL",
  quit: "SIGINT",
  term: "SIGTERM",
};

/** `--signal <name>=<pid or pid file>`, as nats-server's (which can also find the process by name; we can't). */
function sendSignal(spec: string): number {
  const eq = spec.indexOf("=");
  const name = (eq < 0 ? spec : spec.slice(0, eq)).toLowerCase();
  const target = eq < 0 ? "" : spec.slice(eq + 1);
  const sig = SIGNALS[name];
  if (!sig) {
    const why = name === "reopen" ? `signal "${name}" is not supported yet` : `unknown signal "${name}"`;
    process.stderr.write(`nagare server: ${why} (use ldm, stop, quit, term or reload)\n`);
    return 2;
  }
  if (target === "") {
    process.stderr.write(`nagare server: --signal needs a process: --signal ${name}=<pid or pid file>\n`);
    return 2;
  }
  let pidText = target;
  if (!/^\d+$/.test(target)) {
    try {
      pidText = readFileSync(target, "utf8").trim();
    } catch (err) {
      process.stderr.write(`nagare server: cannot read pid file ${target}: ${errorText(err)}\n`);
      return 1;
    }
  }
  const pid = Number(pidText);
  if (!/^\d+$/.test(pidText) || pid <= 0) {
    process.stderr.write(`nagare server: invalid pid ${JSON.stringify(pidText)}\n`);
    return 1;
  }
  try {
    process.kill(pid, sig);
  } catch (err) {
    process.stderr.write(`nagare server: cannot signal process ${pid}: ${errorText(err)}\n`);
    return 1;
  }
  return 0;
}

main(process.argv).catch((err: unknown) => {
  process.stderr.write(`nagare: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
