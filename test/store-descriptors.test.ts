/**
 * Many streams within a small descriptor limit: segment files are opened on
 * use from a pool that keeps a quarter of the process's limit, so a server
 * with more streams than descriptors starts, serves and takes writes.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { startServer } from "../src/index.js";
import { spawnServer } from "./helpers/js.js";

const STREAMS = 400;
const NOFILE = 128;

test(`${STREAMS} streams, each with messages, restart and serve under a descriptor limit of ${NOFILE}`, async () => {
  const storeDir = mkdtempSync(join(tmpdir(), "nagare-fds-"));
  let child: Awaited<ReturnType<typeof spawnServer>>["child"] | undefined;
  try {
    const srv = await startServer({ port: 0, jetstream: true, storeDir });
    const nc = await connect({ servers: srv.url });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    for (let i = 0; i < STREAMS; i++) {
      await jsm.streams.add({ name: `S${i}`, subjects: [`s.${i}`] });
      await js.publish(`s.${i}`, `first ${i}`);
    }
    await nc.close();
    await srv.close();

    const started = await spawnServer(storeDir, [], NOFILE);
    child = started.child;
    const fds = readdirSync(`/proc/${child.pid}/fd`).length;
    // The pool keeps a quarter of the limit for segment files; the rest is sockets and Node itself.
    assert.ok(fds <= NOFILE / 2, `${fds} descriptors open after the restart`);
    const nc2 = await connect({ servers: started.url });
    const jsm2 = await jetstreamManager(nc2);
    const js2 = jetstream(nc2);
    let listed = 0;
    for await (const _ of jsm2.streams.names()) listed++;
    assert.equal(listed, STREAMS);
    // Every stream reads its old message and takes a new one, touching every segment file in turn.
    for (let i = 0; i < STREAMS; i++) {
      assert.equal((await jsm2.streams.getMessage(`S${i}`, { seq: 1 }))?.string(), `first ${i}`);
      assert.equal((await js2.publish(`s.${i}`, `second ${i}`)).seq, 2);
    }
    const after = readdirSync(`/proc/${child.pid}/fd`).length;
    assert.ok(after <= NOFILE / 2, `${after} descriptors open after touching every stream`);
    await nc2.close();
  } finally {
    child?.kill("SIGKILL");
    rmSync(storeDir, { recursive: true, force: true });
  }
});
