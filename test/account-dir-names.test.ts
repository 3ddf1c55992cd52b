/**
 * An account's store directory is its own whatever its name: accounts
 * named "." and ".." (names nats-server 2.9.10 accepts) were given
 * `<store>/accounts/.` and `<store>/accounts/..`, the latter the default
 * account's own directory, so that after a restart the ".." account's
 * users listed, read and could change the default account's streams.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";

describe("accounts named . and ..", () => {
  let dir: string;
  let srv: NagareServer | null = null;
  const options = (): ServerOptions => ({
    port: 0,
    jetstream: true,
    storeDir: dir,
    authorization: { users: [{ user: "g", password: "g" }] },
    accounts: {
      ".": { users: [{ user: "dot", password: "dot" }], jetstream: true },
      "..": { users: [{ user: "dotdot", password: "dotdot" }], jetstream: true },
      kafka: { users: [{ user: "k", password: "k" }], jetstream: true },
    },
  });
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nagare-accdirs-"));
  });
  after(async () => {
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const names = async (user: string): Promise<string[]> => {
    const nc = await connect({ servers: srv!.url, user, pass: user });
    try {
      return (await nc.request("$JS.API.STREAM.NAMES", "")).json<{ streams: string[] | null }>().streams ?? [];
    } finally {
      await nc.close();
    }
  };

  test("each keeps its own streams, across a restart", async () => {
    srv = await startServer(options());
    for (const user of ["g", "dot", "dotdot", "k"]) {
      const nc = await connect({ servers: srv.url, user, pass: user });
      const r = (await nc.request(`$JS.API.STREAM.CREATE.OF_${user}`, JSON.stringify({ name: `OF_${user}`, subjects: ["s"] }))).json<{ error?: unknown }>();
      assert.equal(r.error, undefined, `${user}: ${JSON.stringify(r.error)}`);
      await nc.close();
    }
    await srv.close();
    srv = await startServer(options());
    for (const user of ["g", "dot", "dotdot", "k"]) assert.deepEqual(await names(user), [`OF_${user}`], user);
  });
});
