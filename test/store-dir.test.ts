/**
 * The store directory, checked before anything is stored: one server per
 * directory (a second one, in this process or another, refuses to start; a
 * lock left by kill -9 is taken over), and a directory that is a file,
 * unwritable or full stops startup with a clear message. Damage confined to
 * one stream or one consumer does not stop the server.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, RetentionPolicy } from "@nats-io/jetstream";
import { startServer } from "../src/index.js";
import { Account } from "../src/core/account.js";
import { UNLIMITED_JETSTREAM } from "../src/core/accounts.js";
import { JetStreams } from "../src/streams/jetstreams.js";
import { memoryLog } from "./helpers/cluster.js";
import { waitUntil } from "./helpers/clients.js";
import { apiErrorCode, refusedServer, spawnServer, startJs, type JsHarness } from "./helpers/js.js";

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-storedir-"));
}

const root = process.getuid?.() === 0;

/** A tmpfs of `size` at a new directory (root only), unmounted and removed by the returned function. */
function tmpfs(options: string): { dir: string; done: () => void } {
  const dir = tempDir();
  execFileSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", dir]);
  return {
    dir,
    done: () => {
      execFileSync("umount", [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("one server per store directory", () => {
  test("a second embedded server on the same directory is refused; after the first stops, it starts", async () => {
    const storeDir = tempDir();
    try {
      const first = await startServer({ port: 0, jetstream: true, storeDir });
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir }), /store directory .* is in use by another nagare server/);
      await first.close();
      const again = await startServer({ port: 0, jetstream: true, storeDir });
      await again.close();
    } finally {
      rmSync(storeDir, { recursive: true, force: true });
    }
  });

  test("a stop waits for a stream delete still running: the stream's directory is gone before the store is let go", async () => {
    const storeDir = tempDir();
    try {
      const account = new Account("$G");
      const js = await JetStreams.start({ storeDir, maxPayload: 1 << 20, log: memoryLog() }, [account], new Map([["$G", { ...UNLIMITED_JETSTREAM }]]));
      const { stream } = await js.global!.createStream({ name: "s", subjects: ["s.>"], storage: "file" });
      for (let i = 0; i < 100; i++) await new Promise<void>((resolve) => stream.publish(`s.${i}`, null, Buffer.from("x"), () => resolve()));
      // Not awaited, as a cluster's removal is not by the stop that follows it: the stream is out of the list at once.
      const deleting = js.global!.deleteStream("s");
      assert.equal(js.global!.streams.has("s"), false);
      await js.close();
      assert.equal(existsSync(stream.dir!), false, "the deleted stream's directory is removed before the stop returns");
      await deleting;
    } finally {
      rmSync(storeDir, { recursive: true, force: true });
    }
  });

  test("a second process exits with a clear error; after kill -9 of the first, its lock is taken over", async () => {
    const storeDir = tempDir();
    let first: Awaited<ReturnType<typeof spawnServer>> | undefined;
    let third: Awaited<ReturnType<typeof spawnServer>> | undefined;
    try {
      first = await spawnServer(storeDir);
      const nc = await connect({ servers: first.url });
      await (await jetstreamManager(nc)).streams.add({ name: "L", subjects: ["l.>"] });
      await jetstream(nc).publish("l.x", "kept");
      await nc.close();
      const second = await refusedServer(storeDir);
      assert.notEqual(second.code, 0);
      assert.match(second.output, new RegExp(`in use by another nagare server \\(pid ${first.child.pid}`));
      first.child.kill("SIGKILL");
      await new Promise((r) => first!.child.once("exit", r));
      third = await spawnServer(storeDir);
      const nc3 = await connect({ servers: third.url });
      assert.equal((await (await jetstreamManager(nc3)).streams.getMessage("L", { seq: 1 }))?.string(), "kept");
      await nc3.close();
    } finally {
      first?.child.kill("SIGKILL");
      third?.child.kill("SIGKILL");
      rmSync(storeDir, { recursive: true, force: true });
    }
  });
});

describe("a lock held by a process killed and not yet reaped", () => {
  test("a zombie holds no file: a server started right after kill -9, before the parent reaped it, takes the lock", async () => {
    const storeDir = tempDir();
    // The forked child exits at once and stays a zombie: its parent never waits for it. (A shell's `sleep 0 &` before `exec`
    // could be reaped by the shell itself when the child exits first.)
    const parent = spawn("python3", ["-c", "import os, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(5)"], { stdio: ["ignore", "pipe", "ignore"] });
    try {
      const pid = Number(await new Promise<string>((resolve) => parent.stdout.once("data", (d: Buffer) => resolve(d.toString().trim()))));
      const stat = (): string => readFileSync(`/proc/${pid}/stat`, "utf8");
      await waitUntil(() => stat().slice(stat().lastIndexOf(")") + 2).startsWith("Z"), "the child a zombie");
      const start = stat().slice(stat().lastIndexOf(")") + 2).split(" ")[19];
      writeFileSync(join(storeDir, "nagare.lock"), JSON.stringify({ pid, start, host: hostname() }));
      const srv = await startServer({ port: 0, jetstream: true, storeDir });
      await srv.close();
    } finally {
      parent.kill("SIGKILL");
      rmSync(storeDir, { recursive: true, force: true });
    }
  });
});

describe("a store directory that cannot hold a store stops startup", () => {
  test("a file where the directory should be", async () => {
    const dir = tempDir();
    try {
      const file = join(dir, "store");
      writeFileSync(file, "not a directory");
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: file }), /store directory .*store: a file is in the way/);
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: join(file, "below") }), /store directory .*: a file is in the way/);
      const cli = await refusedServer(file);
      assert.equal(cli.code, 1);
      assert.match(cli.output, /cannot start: store directory .* a file is in the way/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a directory holding nats-server's JetStream store: refused, not started without its streams", async () => {
    // nats-server keeps <store_dir>/jetstream/<account>/streams/<stream>; nagare cannot read it. Started on it, nagare
    // answered with no streams at all: a configuration taken over from nats-server lost them without a word.
    const dir = tempDir();
    try {
      const stream = join(dir, "jetstream", "$G", "streams", "ORDERS");
      mkdirSync(stream, { recursive: true });
      writeFileSync(join(stream, "meta.inf"), "{}");
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: dir }), /store directory .*: holds nats-server's JetStream store/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a directory the file system will not make (under /proc): refused at once, with mkdir's reason", { timeout: 30_000, skip: existsSync("/proc/self") ? false : "needs /proc" }, async () => {
    // Node's recursive mkdir spins for ever where mkdir answers ENOENT under a parent that exists: the server hung at
    // start, deaf to SIGTERM (an outside test); nats-server says it cannot create the directory.
    await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: "/proc/nagare-store/js" }), /store directory \/proc\/nagare-store\/js: cannot be created \(ENOENT/);
    const cli = await refusedServer("/proc/nagare-store");
    assert.equal(cli.code, 1);
    assert.match(cli.output, /cannot start: store directory \/proc\/nagare-store: cannot be created/);
  });

  test("an unwritable directory", { skip: root ? false : "needs root to mount a read-only file system" }, async () => {
    const ro = tmpfs("size=4m,ro");
    try {
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: ro.dir }), /store directory .*: not writable \(EROFS/);
    } finally {
      ro.done();
    }
  });

  test("a full disk", { skip: root ? false : "needs root to mount a small file system" }, async () => {
    const small = tmpfs("size=2m");
    try {
      // Fill it, as a disk that ran full would be.
      try {
        writeFileSync(join(small.dir, "filler"), Buffer.alloc(2 * 1024 * 1024));
      } catch {
        // ENOSPC: full, as wanted
      }
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: join(small.dir, "js") }), /store directory .*: the disk is full/);
      rmSync(join(small.dir, "filler"));
      writeFileSync(join(small.dir, "filler"), Buffer.alloc(1024 * 1024 + 512 * 1024));
      await assert.rejects(startServer({ port: 0, jetstream: true, storeDir: join(small.dir, "js") }), /store directory .*: the disk is full \(\d+ bytes free\)/);
      rmSync(join(small.dir, "filler"));
      const ok = await startServer({ port: 0, jetstream: true, storeDir: join(small.dir, "js") });
      await ok.close();
    } finally {
      small.done();
    }
  });
});

/** A durable D of stream S that acked three of five messages, the server stopped: its state file's path. */
async function durableStoppedWithThreeAcked(h: JsHarness, deliver: DeliverPolicy = DeliverPolicy.All): Promise<string> {
  const jsm = await jetstreamManager(h.nc);
  await jsm.streams.add({ name: "S", subjects: ["s.>"] });
  await jsm.consumers.add("S", { durable_name: "D", ack_policy: AckPolicy.Explicit, deliver_policy: deliver });
  for (let i = 1; i <= 5; i++) await jetstream(h.nc).publish("s.x", `${i}`);
  const c = await jetstream(h.nc).consumers.get("S", "D");
  for await (const m of await c.fetch({ max_messages: 3, expires: 2000 })) await m.ackAck();
  await h.srv.close();
  await h.nc.close().catch(() => undefined);
  return join(h.storeDir, "streams", "S", "obs", "D", "state.json");
}

describe("damage confined to one stream or consumer", () => {
  for (const [what, content] of [
    ["empty", ""],
    ["garbage", "{\"config\": {\"name\": "],
    ["valid JSON but no configuration", "[1,2,3]"],
  ] as const) {
    test(`a stream whose meta.json is ${what} is skipped with an error; the others are served, and its name is not reused over its files`, async () => {
      const h = await startJs();
      try {
        const jsm = await jetstreamManager(h.nc);
        await jsm.streams.add({ name: "GOOD", subjects: ["good.>"] });
        await jsm.streams.add({ name: "BAD", subjects: ["bad.>"] });
        await jetstream(h.nc).publish("good.x", "1");
        await jetstream(h.nc).publish("bad.x", "1");
        await h.srv.close();
        await h.nc.close().catch(() => undefined);
        writeFileSync(join(h.storeDir, "streams", "BAD", "meta.json"), content);
        await h.restart();
        const jsm2 = await jetstreamManager(h.nc);
        assert.equal((await jsm2.streams.info("GOOD")).state.messages, 1);
        assert.equal((await jetstream(h.nc).publish("good.x", "2")).seq, 2);
        assert.equal(await apiErrorCode(jsm2.streams.info("BAD")), 10059);
        assert.equal(await apiErrorCode(jsm2.streams.add({ name: "BAD", subjects: ["bad.>"] })), 10077);
        assert.ok(existsSync(join(h.storeDir, "streams", "BAD", "p0")), "its data is left alone");
        assert.equal(h.srv.jetstream!.unloadable.size, 1);
      } finally {
        await h.close();
      }
    });
  }

  test("one flipped bit in a durable's state file that still parses (an ack floor's digit) is found by its checksum, not read as the value", async () => {
    const h = await startJs();
    try {
      const state = await durableStoppedWithThreeAcked(h);
      const text = readFileSync(state, "utf8");
      // '3' (0x33) to '1' (0x31): the ack floor two messages back, redelivering them, were it read.
      assert.match(text, /"ackFloorS":3/);
      const flipped = text.replace('"ackFloorS":3', '"ackFloorS":1');
      writeFileSync(state, flipped);
      await h.restart();
      const ci = await (await jetstreamManager(h.nc)).consumers.info("S", "D");
      assert.equal(ci.num_pending, 5, "reported damaged: the durable starts over, as for any damaged state");
      assert.equal(readFileSync(`${state}.damaged`, "utf8"), flipped, "the damaged file kept aside");
    } finally {
      await h.close();
    }
  });

  test("a durable whose state file is damaged is kept, starts over, and the damaged file is kept aside", async () => {
    const h = await startJs();
    try {
      const state = await durableStoppedWithThreeAcked(h);
      writeFileSync(state, "{\"dseq\": 3, \"cursor\":");
      await h.restart();
      const jsm2 = await jetstreamManager(h.nc);
      const ci = await jsm2.consumers.info("S", "D");
      assert.equal(ci.config.durable_name, "D", "the durable is still there");
      assert.equal(ci.num_pending, 5, "and delivers again from its start");
      assert.equal(readFileSync(`${state}.damaged`, "utf8"), "{\"dseq\": 3, \"cursor\":");
    } finally {
      await h.close();
    }
  });

  test("a durable whose state file is gone is reported and starts over; one that delivers new messages skips none stored since it was made", async () => {
    const logFile = join(mkdtempSync(join(tmpdir(), "nagare-log-")), "server.log");
    const h = await startJs({ server: { noLog: false, logFile } });
    try {
      // The stream holds one message from before the durable: deliver_policy new never gives it.
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "S", subjects: ["s.>"] });
      await jetstream(h.nc).publish("s.x", "before");
      await h.nc.close();
      await h.restart();
      const state = await durableStoppedWithThreeAcked(h, DeliverPolicy.New);
      rmSync(state);
      await h.restart();
      const ci = await (await jetstreamManager(h.nc)).consumers.info("S", "D");
      assert.equal(ci.num_pending, 5, "the five stored since it was made, delivered again; not positioned as new");
      assert.match(readFileSync(logFile, "utf8"), /\[ERR\] Consumer D of stream S: its state file is gone/);
    } finally {
      await h.close();
      rmSync(join(logFile, ".."), { recursive: true, force: true });
    }
  });

  test("a durable whose state file is gone starts over within its deliver policy: the last message when made (last) is not skipped, none below opt_start_seq is given", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      const js = jetstream(h.nc);
      await jsm.streams.add({ name: "S", subjects: ["s.>"] });
      await js.publish("s.x", "1");
      await js.publish("s.x", "2");
      await new Promise((r) => setTimeout(r, 20));
      // LAST starts at 2, the last message when it is made; AHEAD at 4, past the stream's end when it is made.
      await jsm.consumers.add("S", { durable_name: "LAST", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.Last });
      await jsm.consumers.add("S", { durable_name: "AHEAD", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 4 });
      await new Promise((r) => setTimeout(r, 20));
      for (const d of ["3", "4", "5"]) await js.publish("s.x", d);
      const obs = join(h.storeDir, "streams", "S", "obs");
      // Neither delivered anything; their states are lost.
      await h.restart({ whileStopped: () => ["LAST", "AHEAD"].forEach((c) => rmSync(join(obs, c, "state.json"))) });
      const got = async (name: string): Promise<string[]> => {
        const out: string[] = [];
        const c = await jetstream(h.nc).consumers.get("S", name);
        for await (const m of await c.fetch({ max_messages: 10, expires: 1000 })) {
          out.push(m.string());
          m.ack();
        }
        return out;
      };
      assert.deepEqual(await got("LAST"), ["2", "3", "4", "5"], "the last message when it was made, never delivered, is not skipped");
      assert.deepEqual(await got("AHEAD"), ["4", "5"], "nothing below its start sequence");
    } finally {
      await h.close();
    }
  });

  test("on an interest stream, a durable whose state file is gone keeps what it starts over with: another consumer's acks do not remove it", async () => {
    const h = await startJs();
    try {
      const jsm = await jetstreamManager(h.nc);
      await jsm.streams.add({ name: "S", subjects: ["s.>"], retention: RetentionPolicy.Interest });
      await jsm.consumers.add("S", { durable_name: "N", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New });
      await jsm.consumers.add("S", { durable_name: "A", ack_policy: AckPolicy.Explicit });
      await new Promise((r) => setTimeout(r, 20));
      for (const d of ["1", "2", "3"]) await jetstream(h.nc).publish("s.x", d);
      await h.restart({ whileStopped: () => rmSync(join(h.storeDir, "streams", "S", "obs", "N", "state.json")) });
      const read = async (name: string): Promise<string[]> => {
        const out: string[] = [];
        const c = await jetstream(h.nc).consumers.get("S", name);
        for await (const m of await c.fetch({ max_messages: 10, expires: 1000 })) {
          out.push(m.string());
          await m.ackAck();
        }
        return out;
      };
      assert.deepEqual(await read("A"), ["1", "2", "3"]);
      const ci = await (await jetstreamManager(h.nc)).consumers.info("S", "N");
      assert.deepEqual(await read("N"), ["1", "2", "3"], "N still gets what it started over with");
      assert.equal(ci.ack_floor.stream_seq, 0, "N acknowledged nothing");
    } finally {
      await h.close();
    }
  });

  test("a consumer directory with a state but no configuration, nothing delivered, is a create that did not finish: removed; one that delivered is reported", async () => {
    const logFile = join(mkdtempSync(join(tmpdir(), "nagare-log-")), "server.log");
    const h = await startJs({ server: { noLog: false, logFile } });
    try {
      const state = await durableStoppedWithThreeAcked(h);
      const obs = join(h.storeDir, "streams", "S", "obs");
      // As a create leaves it when it stops between its two files: the state (nothing delivered), no meta.json.
      const text = readFileSync(state, "utf8");
      mkdirSync(join(obs, "HALF"));
      writeFileSync(join(obs, "HALF", "state.json"), readFileSync(state, "utf8").replace(/"dseq":\d+/, '"dseq":0').replace(/"pending":\[[^\]]*\]/, '"pending":[]').replace(/\n#crc32c .*\n$/, ""));
      // D's configuration gone after it delivered: that is damage, left as it is and reported.
      rmSync(join(obs, "D", "meta.json"));
      assert.match(text, /"dseq":3/);
      await h.restart();
      assert.equal(existsSync(join(obs, "HALF")), false, "the unfinished create is gone");
      assert.equal(existsSync(join(obs, "D", "state.json")), true, "the damaged one's files are left");
      const log = readFileSync(logFile, "utf8");
      assert.match(log, /\[ERR\] Could not restore consumer D of stream S: its meta.json is gone/);
      assert.match(log, /\[WRN\] Consumer HALF of stream S: a create that did not finish/);
      assert.deepEqual((await (await jetstreamManager(h.nc)).consumers.list("S").next()).map((c) => c.name), []);
    } finally {
      await h.close();
      rmSync(join(logFile, ".."), { recursive: true, force: true });
    }
  });
});


