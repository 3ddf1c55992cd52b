/**
 * End-to-end tests of the client commands (`nagare pub|sub|request|reply`),
 * run as child processes against an in-process nagare server. Readiness is
 * observed through the `Listening on "<subject>"` line the long-running
 * commands print to stderr, never through sleeps.
 */

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer } from "../src/index.js";

const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
/** Upper bound for anything we wait on, so a broken build fails instead of hanging. */
const DEADLINE_MS = 15_000;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Cli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves once `pred` holds for the stream's output so far; rejects if the process ends first. */
  waitFor(stream: "stdout" | "stderr", pred: string | ((text: string) => boolean)): Promise<void>;
  /** Settles when the process has exited and its output is fully read. */
  exited: Promise<Exit>;
}

const running = new Set<ChildProcess>();

function killAll(): void {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  running.clear();
}

function cli(args: string[], opts: { stdin?: string } = {}): Cli {
  const env = { ...process.env };
  delete env["NATS_URL"];
  const child = spawn(process.execPath, [MAIN, ...args], {
    stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    env,
  });
  running.add(child);
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);

  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d));

  const exited = new Promise<Exit>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`nagare ${args.join(" ")} did not exit\nstdout: ${out.stdout}\nstderr: ${out.stderr}`));
    }, DEADLINE_MS);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, signal, ...out });
    });
  });
  // A test failing elsewhere must not turn a later rejection into an unhandled one.
  exited.catch(() => undefined);

  const waitFor = (stream: "stdout" | "stderr", pred: string | ((text: string) => boolean)): Promise<void> => {
    const ok = typeof pred === "string" ? (t: string) => t.includes(pred) : pred;
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (ok(out[stream])) done(undefined);
      };
      const onClose = (): void => {
        done(new Error(`nagare ${args.join(" ")} exited before the expected ${stream} output\nstdout: ${out.stdout}\nstderr: ${out.stderr}`));
      };
      const timer = setTimeout(
        () => done(new Error(`timed out waiting for ${stream} of nagare ${args.join(" ")}\nstdout: ${out.stdout}\nstderr: ${out.stderr}`)),
        DEADLINE_MS,
      );
      const done = (err: Error | undefined): void => {
        clearTimeout(timer);
        child[stream]!.off("data", check);
        child.off("close", onClose);
        if (err) reject(err);
        else resolve();
      };
      // Registered after the accumulating listener, so `out` is current here.
      child[stream]!.on("data", check);
      child.on("close", onClose);
      check();
    });
  };

  return { child, stdout: () => out.stdout, stderr: () => out.stderr, waitFor, exited };
}

let srv: NagareServer;

before(async () => {
  srv = await startServer({ port: 0 });
});

after(async () => {
  killAll();
  await srv?.close();
});

test("pub → sub round trip with headers and --count", async (t) => {
  t.after(killAll);
  const sub = cli(["sub", "--server", srv.url, "--count", "2", "rt.>"]);
  await sub.waitFor("stderr", 'Listening on "rt.>"');

  const pub = await cli([
    "pub", "-s", srv.url, "--count", "2", "-H", "X-Trace:abc", "--header", "X-Multi: one", "-H", "X-Multi:two",
    "rt.orders", "order {{Count}}",
  ]).exited;
  assert.equal(pub.code, 0, pub.stderr);
  assert.equal(pub.stdout, "", "pub keeps stdout clean");
  assert.match(pub.stderr, /Published 2 messages to "rt\.orders"/);

  const res = await sub.exited;
  assert.equal(res.code, 0, res.stderr);
  const block = (n: number) =>
    `[#${n}] Received on "rt.orders"\nX-Trace: abc\nX-Multi: one\nX-Multi: two\n\norder ${n}\n\n`;
  assert.equal(res.stdout, block(1) + block(2));
});

test("sub --raw prints bodies only; pub reads stdin and sets --reply", async (t) => {
  t.after(killAll);
  const raw = cli(["sub", "--raw", "--count", "2", "-s", srv.url, "raw.*"]);
  const full = cli(["sub", "--count", "2", "-s", srv.url, "raw.*"]);
  await Promise.all([raw.waitFor("stderr", 'Listening on "raw.*"'), full.waitFor("stderr", 'Listening on "raw.*"')]);

  const first = await cli(["pub", "-s", srv.url, "raw.a", "first"]).exited;
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /Published 1 message to "raw\.a"/);
  const second = await cli(["pub", "-s", srv.url, "--reply", "back.here", "raw.b"], { stdin: "from stdin" }).exited;
  assert.equal(second.code, 0, second.stderr);

  const r = await raw.exited;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "first\nfrom stdin\n");

  const f = await full.exited;
  assert.equal(f.code, 0, f.stderr);
  assert.equal(
    f.stdout,
    '[#1] Received on "raw.a"\nfirst\n\n[#2] Received on "raw.b" with reply "back.here"\nfrom stdin\n\n',
  );
});

test("sub --queue shares messages across the group; SIGINT drains and exits 0", async (t) => {
  t.after(killAll);
  const total = 20;
  const members = [
    cli(["sub", "--raw", "--queue", "workers", "-s", srv.url, "jobs"]),
    cli(["sub", "--raw", "--queue", "workers", "-s", srv.url, "jobs"]),
  ];
  // A plain subscriber sees every message: proof that the queue members are not plain.
  const watcher = cli(["sub", "--raw", "--count", String(total), "-s", srv.url, "jobs"]);
  await Promise.all([...members, watcher].map((c) => c.waitFor("stderr", 'Listening on "jobs"')));
  for (const m of members) assert.match(m.stderr(), /Listening on "jobs" with queue "workers"/);

  const pub = await cli(["pub", "-s", srv.url, "--count", String(total), "jobs", "job-{{Count}}"]).exited;
  assert.equal(pub.code, 0, pub.stderr);

  const lines = (s: string) => s.split("\n").filter((l) => l !== "");
  const received = () => members.reduce((n, m) => n + lines(m.stdout()).length, 0);
  // Every message goes to exactly one member: wait until all of them arrived between the two.
  await Promise.race(members.map((m) => m.waitFor("stdout", () => received() >= total)));

  for (const m of members) m.child.kill("SIGINT");
  const exits = await Promise.all(members.map((m) => m.exited));
  for (const e of exits) assert.equal(e.code, 0, e.stderr);

  const all = exits.flatMap((e) => lines(e.stdout)).sort();
  const expected = Array.from({ length: total }, (_, i) => `job-${i + 1}`).sort();
  assert.deepEqual(all, expected, "each message delivered to exactly one queue member");

  const w = await watcher.exited;
  assert.equal(w.code, 0, w.stderr);
  assert.equal(lines(w.stdout).length, total);
});

test("request ↔ reply, with headers and {{Request}}", async (t) => {
  t.after(killAll);
  const rep = cli(["reply", "-s", srv.url, "--count", "1", "svc.echo", "echo: {{Request}}"]);
  await rep.waitFor("stderr", 'Listening on "svc.echo"');

  const req = await cli(["request", "-s", srv.url, "-H", "Who:tester", "--timeout", "5s", "svc.echo", "hello"]).exited;
  assert.equal(req.code, 0, req.stderr);
  assert.equal(req.stdout, "echo: hello\n");

  const r = await rep.exited;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\[#1\] Received on "svc\.echo" with reply "[^"]+"\nWho: tester\n\nhello\n\n$/);
});

test("reply --queue: each group member answers one request", async (t) => {
  t.after(killAll);
  const members = [
    cli(["reply", "--queue", "svc", "--count", "1", "-s", srv.url, "svc.q", "answer {{Request}}"]),
    cli(["reply", "--queue", "svc", "--count", "1", "-s", srv.url, "svc.q", "answer {{Request}}"]),
  ];
  await Promise.all(members.map((m) => m.waitFor("stderr", 'Listening on "svc.q" with queue "svc"')));

  // Sequential: the member that answered the first has unsubscribed (--count 1),
  // so the second request can only reach the other one.
  for (const body of ["one", "two"]) {
    const req = await cli(["request", "-s", srv.url, "svc.q", body]).exited;
    assert.equal(req.code, 0, req.stderr);
    assert.equal(req.stdout, `answer ${body}\n`);
  }
  const exits = await Promise.all(members.map((m) => m.exited));
  for (const e of exits) {
    assert.equal(e.code, 0, e.stderr);
    assert.equal((e.stdout.match(/Received on "svc\.q"/g) ?? []).length, 1);
  }
});

test("request without responders exits 1 with the nats message", async () => {
  const res = await cli(["request", "-s", srv.url, "--timeout", "3s", "nobody.home", "ping"]).exited;
  assert.equal(res.code, 1);
  assert.equal(res.stdout, "");
  assert.match(res.stderr, /nats: no responders available for request/);
});

test("request that nobody answers times out with exit 1", async (t) => {
  t.after(killAll);
  // A plain subscriber receives the request but never replies.
  const silent = cli(["sub", "--count", "1", "-s", srv.url, "svc.silent"]);
  await silent.waitFor("stderr", 'Listening on "svc.silent"');
  const res = await cli(["request", "-s", srv.url, "--timeout", "300ms", "svc.silent", "anyone?"]).exited;
  assert.equal(res.code, 1);
  assert.match(res.stderr, /timeout/);
  assert.equal((await silent.exited).code, 0);
});

test("help, bad usage and connection failure exit codes", async (t) => {
  const confDir = mkdtempSync(join(tmpdir(), "nagare-cli-"));
  const usersConf = join(confDir, "users.conf");
  writeFileSync(usersConf, "authorization { users: [ { user: a, password: b } ] }\n");
  t.after(() => rmSync(confDir, { recursive: true, force: true }));
  // The server's help says what SIGHUP reloads as the server does it: certificates, users and permissions.
  const top = await cli(["--help"]).exited;
  assert.equal(top.code, 0);
  assert.match(top.stdout, /SIGHUP reloads[^.]*TLS certificate files, users and permissions/);
  assert.doesNotMatch(top.stdout, /users and\s+permissions included, are refused/);
  // An incomplete set of server flags is named in the flags' words, not the embedded options' (certFile, ...).
  for (const [args, why] of [
    [["--tls"], /^nagare server: --tls, --tlsverify and --tlscacert need --tlscert and --tlskey/],
    [["--tlsverify", "--tlskey", "server-key.pem"], /^nagare server: --tlskey needs --tlscert\n/],
    [["--user", "app"], /^nagare server: --user needs --pass\n/],
    [["--pass", "secret"], /^nagare server: --pass needs --user\n/],
    // Flags over a file's users (or token) would drop one or the other silently: refused.
    [["-c", usersConf, "--user", "app", "--pass", "pw"], /^nagare server: --auth, --user and --pass cannot be used with the authorization block of .*users\.conf\n/],
    [["-c", usersConf, "--auth", "tok"], /^nagare server: --auth, --user and --pass cannot be used with the authorization block of /],
  ] as Array<[string[], RegExp]>) {
    const res = await cli(["server", "-a", "127.0.0.1", "-p", "-1", ...args]).exited;
    assert.equal(res.code, 1, `server ${args.join(" ")}: ${res.stderr}`);
    assert.match(res.stderr, why, `server ${args.join(" ")}`);
  }
  // Two credentials at once in the flags: a usage error, as other bad flags.
  for (const [args, why] of [
    [["--auth", "tok", "--user", "app", "--pass", "pw"], /^nagare server: --user\/--pass cannot be used with --auth\n/],
    [["--user", "app", "--pass", "pw", "--auth", "tok"], /^nagare server: --auth cannot be used with --user\/--pass\n/],
  ] as Array<[string[], RegExp]>) {
    const res = await cli(["server", "-a", "127.0.0.1", "-p", "-1", ...args]).exited;
    assert.equal(res.code, 2, `server ${args.join(" ")}: ${res.stderr}`);
    assert.match(res.stderr, why, `server ${args.join(" ")}`);
  }
  for (const cmd of ["pub", "sub", "request", "reply"]) {
    const help = await cli([cmd, "--help"]).exited;
    assert.equal(help.code, 0, `${cmd} --help`);
    assert.match(help.stdout, new RegExp(`^Usage: nagare ${cmd}`));
  }
  const bad: string[][] = [
    ["pub"],
    ["sub", "--bogus", "x"],
    ["sub", "a", "b"],
    ["reply", "only.subject"],
    ["request", "--timeout", "soon", "x"],
    ["pub", "--count", "0", "x"],
    ["pub", "-H", "no-colon", "x"],
    ["pub", "wild.*", "x"],
  ];
  for (const args of bad) {
    const res = await cli(args).exited;
    assert.equal(res.code, 2, `${args.join(" ")}: ${res.stderr}`);
    assert.match(res.stderr, /Usage: nagare/);
  }

  // A port that was just released: nothing listens there.
  const gone = await startServer({ port: 0 });
  const url = gone.url;
  await gone.close();
  const res = await cli(["pub", "-s", url, "x", "y"]).exited;
  assert.equal(res.code, 1);
  assert.match(res.stderr, /could not connect/);
});
