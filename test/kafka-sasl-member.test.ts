/**
 * A Kafka client counts in its account's connections from its SASL success
 * until it closes (connection.ts joinAccount). One that hangs up while its
 * password is still being checked (a bcrypt hash takes a while) must not be
 * counted when the check ends: nothing would take it out again, and in
 * operator mode each such count holds a place of the account's `conn` for
 * good. Raw Kafka frames over a real socket.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { startServer, type NagareServer } from "../src/index.js";
import { RawKafka, frame, REQUEST_MS } from "./helpers/kafka-raw.js";

describe("the Kafka door: accounts' members", () => {
  let dir: string;
  let srv: NagareServer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-ksaslmember-"));
    // Cost 12: a comparison takes bcryptjs long enough (hundreds of ms) for a hang-up to be seen before it ends.
    srv = await startServer({ port: 0, jetstream: true, storeDir: dir, authorization: { users: [{ user: "slow", password: bcrypt.hashSync("slow-pw", 12) }] }, kafka: { port: 0 } });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a client that hangs up while its bcrypt password is checked is not left counted in its account", async () => {
    const members = (): number => srv.broker.accounts.get("$G")!.members.size;
    const plain = (k: RawKafka, n: number): void => {
      k.send(frame(17, 1, (w) => w.string("PLAIN"), n));
      k.send(frame(36, 0, (w) => w.nullableBytes(Buffer.from("\0slow\0slow-pw")), n + 1));
    };
    const gone = await RawKafka.open(srv.kafkaPort!, REQUEST_MS);
    plain(gone, 1);
    assert.equal((await gone.response(0, REQUEST_MS)).i16(), 0, "handshake");
    gone.destroy();
    await gone.whenClosed();
    // Comparisons run one at a time, in order: once the next client is in, the gone one's check has ended.
    const next = await RawKafka.open(srv.kafkaPort!, REQUEST_MS);
    plain(next, 1);
    assert.equal((await next.response(0, REQUEST_MS)).i16(), 0, "handshake");
    assert.equal((await next.response(1, 30_000)).i16(), 0, "authenticated");
    assert.equal(members(), 1, "only the client still connected counts");
    next.destroy();
    await next.whenClosed();
  });
});
