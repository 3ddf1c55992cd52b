/**
 * Operator mode and JetStream (issue 18): an account JWT's `limits`
 * (mem_storage, disk_storage, streams, consumer; -1 unlimited, both
 * storages 0 or absent: no JetStream) enable and bound the account's
 * JetStream, as nats-server 2.9 reads them; new limits from an updated
 * account JWT apply to the running account. Users connect with creds
 * files through the official clients; JWTs are made with @nats-io/jwt.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { decode, encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer } from "../src/index.js";
import { jetStreamLimitsOfClaims } from "../src/core/jwt-auth.js";
import { apiErrorCode } from "./helpers/js.js";

describe("operator mode: JetStream from account JWT limits", () => {
  let dir: string;
  let srv: NagareServer;
  let operator: KeyPair;
  const accounts: Record<string, KeyPair> = {};
  const jwts: Record<string, string> = {};
  const creds: Record<string, Uint8Array> = {};
  const conns: NatsConnection[] = [];
  const as = async (account: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: srv.url, authenticator: credsAuthenticator(creds[account]) });
    conns.push(nc);
    return nc;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-jwtjs-"));
    operator = createOperator();
    const limits: Record<string, Record<string, unknown>> = {
      FREE: { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 },
      OTHER: { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 },
      // nsc's defaults for an account without JetStream: both storages 0.
      NOJS: { mem_storage: 0, disk_storage: 0, streams: 0, consumer: 0 },
      SMALL: { mem_storage: 1024, disk_storage: 0, streams: 1, consumer: 1 },
      TIERED: { tiered_limits: { R1: { mem_storage: -1, disk_storage: 4096, streams: 3, consumer: -1 } } },
    };
    for (const [name, l] of Object.entries(limits)) {
      accounts[name] = createAccount();
      jwts[name] = await encodeAccount(name, accounts[name], { limits: l }, { signer: operator });
      const user = createUser();
      creds[name] = fmtCreds(await encodeUser(`${name.toLowerCase()}-user`, user, accounts[name]), user);
    }
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      operator: { operators: [await encodeOperator("OP", operator)], accounts: Object.fromEntries(Object.entries(accounts).map(([n, kp]) => [kp.getPublicKey(), jwts[n]])) },
    });
  });
  after(async () => {
    for (const nc of conns) await nc.close();
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("accounts with JetStream limits each have their own streams; an account without gets nats-server's error", async () => {
    const free = await as("FREE");
    const other = await as("OTHER");
    const kvF = await new Kvm(free).create("cfg");
    const kvO = await new Kvm(other).create("cfg");
    await kvF.put("k", "free");
    await kvO.put("k", "other");
    assert.equal((await kvF.get("k"))?.string(), "free");
    assert.equal((await kvO.get("k"))?.string(), "other");
    const info = await (await jetstreamManager(free)).getAccountInfo();
    assert.equal(info.limits.max_memory, -1);
    assert.equal(info.limits.max_streams, -1);
    const nojs = await as("NOJS");
    await assert.rejects(jetstreamManager(nojs), /JetStream not enabled for account/);
  });

  test("the JWT's limits apply with nats-server's errors: streams, consumers, memory, and a disk limit of 0", async () => {
    const small = await as("SMALL");
    const jsm = await jetstreamManager(small);
    const limits = (await jsm.getAccountInfo()).limits;
    assert.deepEqual([limits.max_memory, limits.max_storage, limits.max_streams, limits.max_consumers], [1024, 0, 1, 1]);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "F", subjects: ["f"], storage: StorageType.File })), 10047, "disk_storage 0: no file stream fits");
    await jsm.streams.add({ name: "M", subjects: ["m"], storage: StorageType.Memory });
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "M2", subjects: ["m2"], storage: StorageType.Memory })), 10027);
    await jsm.consumers.add("M", { durable_name: "c1" });
    assert.equal(await apiErrorCode(jsm.consumers.add("M", { durable_name: "c2" })), 10026);
    const js = jetstream(small);
    let code = 0;
    for (let i = 0; i < 20 && code === 0; i++) code = await js.publish("m", "y".repeat(200)).then(() => 0, (err: { code: number }) => err.code);
    assert.equal(code, 10002);
  });

  test("tiered limits: a single server applies R1's", async () => {
    const tiered = await as("TIERED");
    const jsm = await jetstreamManager(tiered);
    assert.equal((await jsm.getAccountInfo()).limits.max_storage, 4096);
    assert.equal(await apiErrorCode(jsm.streams.add({ name: "BIG", subjects: ["big"], max_bytes: 8192 })), 10047);
    await jsm.streams.add({ name: "OK", subjects: ["ok"], max_bytes: 4096 });
  });

  test("an updated account JWT's limits apply to the running account (jetStreamLimitsOfClaims + JetStreams.setLimits)", async () => {
    const small = await as("SMALL");
    const jsm = await jetstreamManager(small);
    const key = accounts.SMALL.getPublicKey();
    const apply = async (limits: Record<string, unknown>): Promise<void> => {
      const jwt = await encodeAccount("SMALL", accounts.SMALL, { limits }, { signer: operator });
      const claims = decode(jwt) as unknown as { nats: Record<string, unknown> };
      await srv.jetstreams!.setLimits(srv.broker.accounts.get(key)!, jetStreamLimitsOfClaims(claims.nats, `account ${key}`));
    };
    await apply({ mem_storage: -1, disk_storage: -1, streams: 5, consumer: -1 });
    assert.equal((await jsm.getAccountInfo()).limits.max_streams, 5);
    await jsm.streams.add({ name: "M2", subjects: ["m2"], storage: StorageType.Memory });
    await jsm.streams.add({ name: "F", subjects: ["f"] });
    // JetStream taken away: the account's streams close and its API says so; given back: they return.
    await apply({ mem_storage: 0, disk_storage: 0 });
    await assert.rejects(jsm.getAccountInfo(), /JetStream not enabled for account/);
    await apply({ mem_storage: -1, disk_storage: -1 });
    assert.ok((await jsm.streams.names().next()).includes("F"));
  });
});

test("operator mode refuses an account JWT whose JetStream limits it cannot apply: tiers without R1", async () => {
  const operator = createOperator();
  const account = createAccount();
  const jwt = await encodeAccount("R3ONLY", account, { limits: { tiered_limits: { R3: { mem_storage: -1, disk_storage: -1 } } } }, { signer: operator });
  await assert.rejects(
    startServer({ port: 0, jetstream: true, operator: { operators: [await encodeOperator("OP", operator)], accounts: { [account.getPublicKey()]: jwt } } }),
    /tiered JetStream limits without R1 are not supported/,
  );
});
