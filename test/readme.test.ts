/**
 * The README's walkthrough, run as written: every command of the shell
 * blocks under "Use it", in order, against a server this test starts on
 * free ports. Only ports and paths are rewritten: the server's ports become
 * -1 (free ones, read back from its ports file), the client commands get
 * those ports (NATS_URL, `-b` for the Kafka commands), `./nagare` is this
 * checkout's. A command that fails, or prints something else than its
 * comment says it prints, fails the test.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitUntil } from "./helpers/clients.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const README = readFileSync(join(ROOT, "README.md"), "utf8");
const WRAPPER = join(ROOT, "nagare");

/** The text of a `## heading` section. */
function section(heading: string): string {
  const start = README.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has a "## ${heading}" section`);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

/** The ```sh blocks of a section, each as its commands (a here-document stays with its command). */
function shellBlocks(text: string): string[][] {
  const blocks: string[][] = [];
  for (const m of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const commands: string[] = [];
    const lines = m[1].split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (line.trim() === "" || line.trim().startsWith("#")) continue;
      const heredoc = /<<-?\s*'?(\w+)'?\s*$/.exec(line.replace(/\s+#\s.*$/, "")); // not <<<, a here-string
      if (heredoc) {
        const body = [line];
        while (++i < lines.length && lines[i] !== heredoc[1]) body.push(lines[i]);
        body.push(heredoc[1]);
        commands.push(body.join("\n"));
      } else {
        commands.push(line);
      }
    }
    blocks.push(commands);
  }
  return blocks;
}

/** A command without its trailing `# comment`, and what that comment says it prints. */
function parse(command: string): { shell: string; background: boolean; prints?: string } {
  const [first, ...rest] = command.split("\n");
  const comment = /\s+#\s(.*)$/.exec(first);
  let shell = comment ? first.slice(0, comment.index) : first;
  const background = /\s&$/.test(shell);
  if (background) shell = shell.replace(/\s&$/, "");
  const prints = comment ? /prints: (.*)$/.exec(comment[1])?.[1] : undefined;
  return { shell: [shell, ...rest].join("\n"), background, prints };
}

interface Ports {
  nats: number;
  monitoring: number;
  kafka: number;
}

function rewrite(shell: string, ports: Ports): string {
  return shell
    .replaceAll("./nagare ", `${WRAPPER} `)
    .replace(/\b4222\b/g, String(ports.nats))
    .replace(/\b8222\b/g, String(ports.monitoring))
    .replace(/\b9092\b/g, String(ports.kafka))
    .replace(/(nagare (?:topic|group))\b/g, `$1 -b 127.0.0.1:${ports.kafka}`);
}

interface Job {
  command: string;
  child: ChildProcess;
  out: string;
  code: number | null | undefined;
  exited: Promise<number | null>;
}

function startJob(command: string, cwd: string, env: NodeJS.ProcessEnv): Job {
  const child = spawn("bash", ["-c", command], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  const job: Job = { command, child, out: "", code: undefined, exited: undefined as unknown as Promise<number | null> };
  child.stdout!.on("data", (d: Buffer) => (job.out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (job.out += d.toString()));
  job.exited = new Promise((resolve) =>
    child.on("close", (code) => {
      job.code = code;
      resolve(code);
    }),
  );
  return job;
}

async function finished(job: Job, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  const r = await Promise.race([job.exited, limit]);
  clearTimeout(timer);
  if (r === "timeout") {
    job.child.kill("SIGKILL");
    assert.fail(`still running after ${ms} ms: ${job.command}\n${job.out}`);
  }
  return r;
}

/** Starts the README's server line on free ports; resolves once its ports file is written. */
async function startReadmeServer(line: string, cwd: string, portsDir: string, env: NodeJS.ProcessEnv): Promise<{ job: Job; ports: Ports }> {
  const shell = line
    .replaceAll("./nagare ", `exec ${WRAPPER} `)
    .replace(/\b(4222|8222|9092)\b/g, "-1");
  const job = startJob(`${shell} --ports_file_dir ${portsDir}`, cwd, env);
  try {
    const portsFile = (): string | undefined => readdirSync(portsDir).find((f) => f.endsWith(".ports"));
    await waitUntil(() => portsFile() !== undefined || job.code !== undefined, "the server's ports file", 30_000);
    assert.equal(job.code, undefined, `the server exited: ${job.out}`);
    const p = JSON.parse(readFileSync(join(portsDir, portsFile()!), "utf8")) as Record<string, string[]>;
    const port = (url: string): number => Number(/:(\d+)$/.exec(url)![1]);
    return { job, ports: { nats: port(p.nats[0]), monitoring: port(p.monitoring[0]), kafka: port(p.kafka[0]) } };
  } catch (err) {
    job.child.kill("SIGKILL");
    throw err;
  }
}

/** Output some commands must show, beyond exit status 0 (and "prints:" comments). */
const EXPECTED: Array<[RegExp, RegExp]> = [
  [/nagare sub 'orders\.>'/, /Received on "orders\.new"\n\{"id":1\}/],
  [/nagare consumer next ORDERS billing/, /\{"id":2\}/],
  [/nagare kv put config color teal && .*kv get config color/, /revision 1\nteal\n/],
  [/nagare kv watch config/, /PUT config > color: teal/],
  [/nagare topic ls && .*topic describe clicks/, /clicks\s+6\s+0[\s\S]*retention\.ms\s+86400000\s+topic/],
  [/kcat .* -G analytics/, /^\{"page":"\/"\}\n$/],
  [/nagare group describe analytics/, /clicks\s+\d+\s+1\s+1\s+0/],
  [/nagare group reset-offsets analytics/, /clicks\s+\d+\s+1\s+0\n/],
  [/nagare topic alter clicks/, /^Topic clicks now has 8 partitions\n$/],
  [/nagare server -c nats\.conf -t/, /configuration file nats\.conf is valid/],
];

test("the README's walkthrough runs top to bottom as written", async () => {
  const blocks = shellBlocks(section("Use it"));
  assert.ok(blocks.length >= 4, `found ${blocks.length} shell blocks`);
  const [[serverLine, ...rest], ...clientBlocks] = blocks;
  assert.equal(rest.length, 0, "the first block starts the server and nothing else");
  assert.match(serverLine, /^\.\/nagare server /);

  const cwd = mkdtempSync(join(tmpdir(), "nagare-readme-"));
  const portsDir = mkdtempSync(join(tmpdir(), "nagare-readme-ports-"));
  const baseEnv = { ...process.env };
  delete baseEnv.NATS_URL;
  const server = await startReadmeServer(parse(serverLine).shell, cwd, portsDir, baseEnv);
  const env = { ...baseEnv, NATS_URL: `nats://127.0.0.1:${server.ports.nats}` };
  const seen = new Set<RegExp>();
  try {
    for (const block of clientBlocks) {
      const background: Job[] = [];
      for (const command of block) {
        const { shell, background: inBackground, prints } = parse(command);
        const job = startJob(rewrite(shell, server.ports), cwd, env);
        if (inBackground) {
          // What a person typing the next line would have waited for anyway.
          await waitUntil(() => /Listening on|Watching/.test(job.out) || job.code !== undefined, `"${shell}" ready`, 30_000);
          background.push(job);
          continue;
        }
        const code = await finished(job, 60_000);
        assert.equal(code, 0, `${shell}\n${job.out}`);
        if (prints !== undefined) assert.ok(job.out.includes(prints), `"${shell}" should print "${prints}", printed:\n${job.out}`);
        for (const [cmd, out] of EXPECTED) {
          if (!cmd.test(shell)) continue;
          seen.add(cmd);
          assert.match(job.out, out, shell);
        }
      }
      // Background commands end by themselves (they take --count): each must have succeeded.
      for (const job of background) {
        const code = await finished(job, 30_000);
        assert.equal(code, 0, `${job.command}\n${job.out}`);
        for (const [cmd, out] of EXPECTED) {
          if (!cmd.test(job.command)) continue;
          seen.add(cmd);
          assert.match(job.out, out, job.command);
        }
      }
    }
    assert.deepEqual(
      EXPECTED.filter(([cmd]) => !seen.has(cmd)).map(([cmd]) => String(cmd)),
      [],
      "every command this test checks the output of is still in the README",
    );
  } finally {
    server.job.child.kill("SIGTERM");
    const code = await finished(server.job, 30_000);
    rmSync(cwd, { recursive: true, force: true });
    rmSync(portsDir, { recursive: true, force: true });
    assert.equal(code, 0, server.job.out);
    assert.match(server.job.out, /\[INF\] Server Exiting\.\.\n$/);
  }
});

test("two servers from the README's line at once, each with its ports and store, and clients started together", async () => {
  const [[serverLine]] = shellBlocks(section("Use it"));
  const dirs = [0, 1].map(() => ({ cwd: mkdtempSync(join(tmpdir(), "nagare-readme-")), ports: mkdtempSync(join(tmpdir(), "nagare-readme-ports-")) }));
  const started = await Promise.allSettled(dirs.map((d) => startReadmeServer(parse(serverLine).shell, d.cwd, d.ports, process.env)));
  const servers = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  try {
    for (const r of started) if (r.status === "rejected") throw r.reason;
    assert.notEqual(servers[0].ports.nats, servers[1].ports.nats);
    const pubs = servers.flatMap((s, i) =>
      [0, 1].map((k) => startJob(`${WRAPPER} pub twice.${i} "${k}" -s nats://127.0.0.1:${s.ports.nats}`, dirs[i].cwd, process.env)),
    );
    for (const job of pubs) {
      assert.equal(await finished(job, 30_000), 0, job.out);
      assert.match(job.out, /Published 1 message/);
    }
  } finally {
    for (const s of servers) s.job.child.kill("SIGTERM");
    for (const s of servers) assert.equal(await finished(s.job, 30_000), 0, s.job.out);
    for (const d of dirs) {
      rmSync(d.cwd, { recursive: true, force: true });
      rmSync(d.ports, { recursive: true, force: true });
    }
  }
});

test("the quick start is two commands with no sudo; the repository carries its licence", () => {
  const [quick] = shellBlocks(section("Quick start"));
  assert.equal(quick.length, 2, quick.join("\n"));
  for (const command of quick) assert.doesNotMatch(parse(command).shell, /\bsudo\b/, "a root user may have no sudo to run");
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { license: string; bin: Record<string, string>; files: string[] };
  assert.equal(pkg.license, "Apache-2.0");
  assert.match(readFileSync(join(ROOT, "LICENSE"), "utf8"), /^\s*Apache License\s+Version 2\.0, January 2004/);
  assert.ok(pkg.files.includes("LICENSE"));
  // ./nagare and `npx nagare` run the same file.
  assert.match(readFileSync(WRAPPER, "utf8"), new RegExp(pkg.bin.nagare.replace(/^\.\//, "").replace(/\./g, "\\.")));
});
