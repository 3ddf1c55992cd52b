/**
 * The JetStream commands (`nagare stream|consumer|kv`) against an in-process
 * server: what they print for people and with --json, and their exit codes.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { runJsCommand, type JsGroup } from "../src/cli/js-commands.js";
import { startJs, type JsHarness } from "./helpers/js.js";
import { captured, type CommandRun } from "./helpers/cli.js";
import { makePki } from "./helpers/pki.js";
import { startServer, type NagareServer } from "../src/index.js";

describe("nagare stream, consumer and kv commands", () => {
  let h: JsHarness;
  const run = (group: JsGroup, ...argv: string[]): Promise<CommandRun> => captured((io) => runJsCommand(group, [...argv, "-s", h.srv.url], io));

  before(async () => {
    h = await startJs();
  });
  after(async () => h.close());

  test("stream add, ls, info, get, purge and rm", async () => {
    const add = await run("stream", "add", "ORDERS", "--subjects", "orders.>", "--max-msgs", "100", "--max-age", "1h");
    assert.equal(add.code, 0, add.err);
    assert.match(add.out, /Stream ORDERS created/);
    assert.match(add.out, /max msgs\s+100/);
    // A JetStream publish returns once the message is stored; a core publish plus flush does not.
    await jetstream(h.nc).publish("orders.new", "first");
    const ls = await run("stream", "ls");
    assert.match(ls.out, /^NAME\s+SUBJECTS\s+MESSAGES/m);
    assert.match(ls.out, /^ORDERS\s+orders\.>\s+1\s/m);
    const info = await run("stream", "info", "ORDERS", "--json");
    const parsed = JSON.parse(info.out) as { config: { max_age: number }; state: { messages: number } };
    assert.equal(parsed.config.max_age, 3600 * 1e9);
    assert.equal(parsed.state.messages, 1);
    const get = await run("stream", "get", "ORDERS", "--last-for", "orders.new");
    assert.match(get.out, /ORDERS#1 .* on subject orders\.new\n[\s\S]*first\n$/);
    const purge = await run("stream", "purge", "ORDERS");
    assert.match(purge.out, /Purged 1 messages/);
    assert.equal((await run("stream", "get", "ORDERS", "1")).code, 1);
    assert.equal((await run("stream", "rm", "ORDERS")).code, 0);
    const missing = await run("stream", "info", "ORDERS");
    assert.equal(missing.code, 1);
    assert.match(missing.err, /stream not found/);
  });

  test("consumer add, ls, info, next (acks) and rm", async () => {
    await run("stream", "add", "WORK", "--subjects", "work.*");
    for (let i = 1; i <= 3; i++) await jetstream(h.nc).publish("work.job", `job-${i}`);
    const add = await run("consumer", "add", "WORK", "W", "--filter", "work.job", "--ack-wait", "10s");
    assert.equal(add.code, 0, add.err);
    assert.match(add.out, /ack wait\s+10000ms/);
    const next = await run("consumer", "next", "WORK", "W", "--count", "2", "--json");
    const lines = next.out.trim().split("\n").map((l) => JSON.parse(l) as { seq: number; data: string });
    assert.deepEqual(lines.map((l) => [l.seq, l.data]), [
      [1, "job-1"],
      [2, "job-2"],
    ]);
    const info = JSON.parse((await run("consumer", "info", "WORK", "W", "--json")).out) as { ack_floor: { stream_seq: number }; num_pending: number };
    assert.equal(info.ack_floor.stream_seq, 2, "next acknowledged what it printed");
    assert.equal(info.num_pending, 1);
    assert.match((await run("consumer", "ls", "WORK")).out, /^W\s+pull\s+explicit\s+1\s+0\s+0$/m);
    assert.equal((await run("consumer", "rm", "WORK", "W")).code, 0);
    assert.equal((await run("consumer", "info", "WORK", "W")).code, 1);
  });

  test("kv put, get, watch, del; usage errors exit 2", async () => {
    const put = await run("kv", "put", "settings", "color", "teal");
    assert.equal(put.code, 0, put.err);
    assert.match(put.out, /settings > color revision 1/);
    assert.equal((await run("kv", "get", "settings", "color")).out, "teal\n");
    const watch = await run("kv", "watch", "settings", "--count", "1", "--json");
    assert.deepEqual(JSON.parse(watch.out), { key: "color", operation: "PUT", revision: 1, value: "teal" });
    assert.equal((await run("kv", "del", "settings", "color")).code, 0);
    const gone = await run("kv", "get", "settings", "color");
    assert.equal(gone.code, 1);
    assert.match(gone.err, /key not found/);
    assert.equal((await run("kv", "frobnicate", "settings")).code, 2);
    assert.equal((await run("stream", "add")).code, 2);
  });

  test("kv get, del and watch of a bucket that does not exist say so", async () => {
    for (const argv of [["get", "nobucket", "k"], ["del", "nobucket", "k"], ["watch", "nobucket", "--count", "1"]]) {
      const res = await run("kv", ...argv, "--timeout", "2s");
      assert.equal(res.code, 1, `kv ${argv.join(" ")}: ${res.err}`);
      assert.match(res.err, /^nagare kv: bucket nobucket not found\n$/, `kv ${argv.join(" ")}`);
    }
  });

  test("a value the help does not list is a usage error naming the flag, not the server's \"invalid JSON\"", async () => {
    const cases: Array<[JsGroup, string[], RegExp]> = [
      ["stream", ["add", "BAD", "--subjects", "bad.>", "--storage", "disk"], /--storage must be file or memory, got "disk"/],
      ["stream", ["add", "BAD", "--subjects", "bad.>", "--retention", "forever"], /--retention must be limits, interest or workqueue, got "forever"/],
      ["stream", ["add", "BAD", "--subjects", "bad.>", "--discard", "oldest"], /--discard must be old or new, got "oldest"/],
      ["consumer", ["add", "BAD", "C", "--ack", "sometimes"], /--ack must be explicit, all or none, got "sometimes"/],
      ["consumer", ["add", "BAD", "C", "--deliver", "first"], /--deliver must be all, last, new, last_per_subject or a start sequence, got "first"/],
    ];
    for (const [group, argv, why] of cases) {
      const res = await run(group, ...argv);
      assert.equal(res.code, 2, `${argv.join(" ")}: ${res.err}`);
      assert.match(res.err, why);
    }
    assert.equal((await run("stream", "info", "BAD")).code, 1, "nothing was created");
  });
});

describe("nagare stream, consumer and kv against a server with TLS and users", () => {
  test("they take --tlsca and --user/--password as pub and sub do, and --help lists them", async () => {
    const pki = makePki();
    const storeDir = mkdtempSync(join(tmpdir(), "nagare-cli-js-"));
    let srv: NagareServer | undefined;
    try {
      srv = await startServer({ port: 0, jetstream: true, storeDir, tls: { certFile: pki.serverCert, keyFile: pki.serverKey }, authorization: { users: [{ user: "app", password: "pw" }] } });
      const url = srv.url;
      const run = (group: JsGroup, ...argv: string[]): Promise<CommandRun> => captured((io) => runJsCommand(group, [...argv, "-s", url, "--tlsca", pki.ca, "--user", "app", "--password", "pw"], io));
      const add = await run("stream", "add", "SECURE", "--subjects", "secure.>");
      assert.equal(add.code, 0, add.err);
      assert.match((await run("stream", "ls")).out, /^SECURE\s/m);
      const cons = await run("consumer", "add", "SECURE", "C", "--ack", "explicit");
      assert.equal(cons.code, 0, cons.err);
      const put = await run("kv", "put", "cfg", "k", "v");
      assert.equal(put.code, 0, put.err);
      assert.equal((await run("kv", "get", "cfg", "k")).out, "v\n");
      const wrong = await captured((io) => runJsCommand("stream", ["ls", "-s", url, "--tlsca", pki.ca, "--user", "app", "--password", "nope"], io));
      assert.equal(wrong.code, 1);
      assert.match(wrong.err, /Authorization Violation/);
      for (const group of ["stream", "consumer", "kv"] as const) {
        const help = await captured((io) => runJsCommand(group, ["--help"], io));
        assert.match(help.out, /--tlsca <file>/, group);
        assert.match(help.out, /--user <name> --password <secret>/, group);
      }
    } finally {
      await srv?.close();
      rmSync(storeDir, { recursive: true, force: true });
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});
