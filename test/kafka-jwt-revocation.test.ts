/**
 * Operator mode: a Kafka client whose bearer user JWT its account revokes
 * is closed, as a NATS client of that user is (nats-server closes every
 * client of a revoked user, "User Authentication Revoked"), and so is one
 * of an account the operator deletes, or whose signing key is re-scoped
 * (NATS clients are closed for it to come back under the new template); a
 * client whose user JWT expires is
 * closed at its first request after. Before, the Kafka connection went on producing and
 * fetching with the revoked JWT's permissions until it disconnected.
 * Kafka clients also count against the account's `conn`, as every kind
 * of client does in nagare's NATS door and in nats-server, and a JWT's
 * payload limit bounds their records as it bounds NATS publishes. Raw Kafka
 * frames (a real client would reconnect and hide the close).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { encodeOperator, encodeUser, fmtCreds, newScopedSigner } from "@nats-io/jwt";
import { connect, credsAuthenticator, jwtAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import kafkajs from "kafkajs";
import { RawKafka, frame, fetchFrame, fetchResult, REQUEST_MS } from "./helpers/kafka-raw.js";

const { Kafka, logLevel } = kafkajs;

const b64 = (s: string): string => Buffer.from(s).toString("base64url");

function signJwt(claims: Record<string, unknown>, signer: KeyPair): string {
  const head = b64(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = b64(JSON.stringify({ jti: Math.random().toString(36).slice(2), iss: signer.getPublicKey(), ...claims }));
  return `${head}.${body}.${Buffer.from(signer.sign(new TextEncoder().encode(`${head}.${body}`))).toString("base64url")}`;
}

function accountJwt(name: string, account: KeyPair, operator: KeyPair, nats: Record<string, unknown> = {}, iat = Math.floor(Date.now() / 1000)): string {
  return signJwt(
    { name, sub: account.getPublicKey(), iat, nats: { type: "account", version: 2, limits: { subs: -1, conn: -1, payload: -1, data: -1, mem_storage: -1, disk_storage: -1 }, ...nats } },
    operator,
  );
}

/** A Kafka connection authenticated with SASL PLAIN (handshake v1, SaslAuthenticate v0) with `password`. */
async function saslConnection(port: number, password: string): Promise<RawKafka> {
  const k = await RawKafka.open(port, REQUEST_MS);
  k.send(frame(17, 1, (w) => w.string("PLAIN"), 1));
  assert.equal((await k.response(0, REQUEST_MS)).i16(), 0, "handshake");
  k.send(frame(36, 0, (w) => w.nullableBytes(Buffer.from(`\0jwt\0${password}`)), 2));
  assert.equal((await k.response(1, REQUEST_MS)).i16(), 0, "authenticated");
  return k;
}

/** Fetches partition 0 of `topic` on `k` (its `n`-th response): the partition's error, or "closed". */
async function fetchOn(k: RawKafka, n: number, topic: string): Promise<number | "closed"> {
  if (k.closed) return "closed";
  k.send(fetchFrame(topic, 0, 0));
  try {
    return fetchResult(await k.response(n, REQUEST_MS)).error;
  } catch {
    return "closed";
  }
}

describe("the Kafka door in operator mode: revoked, deleted and expired users", () => {
  const operator = createOperator();
  const sysAccount = createAccount();
  const app = createAccount();
  let dir: string;
  let srv: NagareServer;
  let sys: NatsConnection;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-kjwtrev-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: join(dir, "js"),
      systemAccount: sysAccount.getPublicKey(),
      operator: {
        operators: [await encodeOperator("OP", operator)],
        accounts: { [sysAccount.getPublicKey()]: accountJwt("SYS", sysAccount, operator), [app.getPublicKey()]: accountJwt("APP", app, operator, {}, Math.floor(Date.now() / 1000) - 100) },
        resolver: { type: "full", dir: join(dir, "jwt"), allowDelete: true },
      },
      kafka: { port: 0 },
    });
    const sysKey = createUser();
    sys = await connect({ servers: srv.url, authenticator: credsAuthenticator(fmtCreds(await encodeUser("sys", sysKey, sysAccount), sysKey)) });
    const adminKey = createUser();
    const admin = await connect({ servers: srv.url, authenticator: credsAuthenticator(fmtCreds(await encodeUser("admin", adminKey, app), adminKey)) });
    const made = (await admin.request("$JS.API.STREAM.CREATE.events", JSON.stringify({ name: "events", subjects: ["events"] }))).json<{ error?: unknown }>();
    assert.equal(made.error, undefined);
    await admin.request("events", "e1");
    await admin.close();
  });
  after(async () => {
    await sys?.close();
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a revocation closes the user's Kafka connection; the account's other Kafka users stay", async () => {
    const revokedKey = createUser();
    const revoked = await encodeUser("revoked", revokedKey, app, { bearer_token: true });
    const kept = await encodeUser("kept", createUser(), app, { bearer_token: true });
    const kr = await saslConnection(srv.kafkaPort!, revoked);
    const kk = await saslConnection(srv.kafkaPort!, kept);
    assert.equal(await fetchOn(kr, 2, "events"), 0, "fetches before the revocation");
    const update = await sys.request(
      `$SYS.REQ.ACCOUNT.${app.getPublicKey()}.CLAIMS.UPDATE`,
      accountJwt("APP", app, operator, { revocations: { [revokedKey.getPublicKey()]: Math.floor(Date.now() / 1000) } }),
    );
    assert.match(update.string(), /jwt updated/);
    assert.equal(await fetchOn(kr, 3, "events"), "closed", "the revoked user's connection is closed");
    assert.equal(await fetchOn(kk, 2, "events"), 0, "another user of the account goes on");
    kk.destroy();
  });

  test("re-scoping the signing key a user was signed with closes its Kafka connection; an update leaving the scope keeps it", async () => {
    const scoped = createAccount();
    const template = (allow: string[]) => newScopedSigner(scoped, "apps", { pub: { allow }, sub: { allow } });
    const apply = async (allow: string[]): Promise<void> => {
      const r = await sys.request(`$SYS.REQ.ACCOUNT.${app.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("APP", app, operator, { signing_keys: [template(allow)] }));
      assert.match(r.string(), /jwt updated/);
    };
    await apply(["events", "_INBOX.>"]);
    const jwt = await encodeUser("scoped", createUser(), app, { bearer_token: true }, { signer: scoped, scopedUser: true });
    const k = await saslConnection(srv.kafkaPort!, jwt);
    assert.equal(await fetchOn(k, 2, "events"), 0);
    await apply(["events", "_INBOX.>"]);
    assert.equal(await fetchOn(k, 3, "events"), 0, "the same scope: served on");
    await apply(["other"]);
    assert.equal(await fetchOn(k, 4, "events"), "closed", "its permissions came from a scope that is gone");
  });

  test("a user JWT that expires closes its Kafka connection", async () => {
    const expiring = await encodeUser("expiring", createUser(), app, { bearer_token: true }, { exp: Math.floor(Date.now() / 1000) + 2 });
    const k = await saslConnection(srv.kafkaPort!, expiring);
    assert.equal(await fetchOn(k, 2, "events"), 0);
    // Asked again until the JWT's second has passed: the first request after it closes the connection.
    const deadline = Date.now() + 10_000;
    let n = 3;
    let last: number | "closed" = 0;
    while (last !== "closed" && Date.now() < deadline) {
      last = await fetchOn(k, n++, "events");
      if (last !== "closed") await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(last, "closed", "served past its JWT's expiry");
  });

  test("an account the operator deletes has its Kafka connections closed", async () => {
    const k = await saslConnection(srv.kafkaPort!, await encodeUser("doomed", createUser(), app, { bearer_token: true }));
    const del = signJwt({ sub: operator.getPublicKey(), iat: Math.floor(Date.now() / 1000), nats: { type: "generic", version: 2, accounts: [app.getPublicKey()] } }, operator);
    const r = await sys.request("$SYS.REQ.CLAIMS.DELETE", del);
    assert.doesNotMatch(r.string(), /error/, r.string());
    assert.equal(await fetchOn(k, 2, "events"), "closed");
  });
});

describe("the Kafka door in operator mode: the account's connection limit", () => {
  const operator = createOperator();
  const app = createAccount();
  let dir: string;
  let srv: NagareServer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-kjwtconn-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir: dir,
      operator: { operators: [await encodeOperator("OP", operator)], accounts: { [app.getPublicKey()]: accountJwt("APP", app, operator, { limits: { subs: -1, conn: 2, payload: -1, data: -1, mem_storage: -1, disk_storage: -1 } }) } },
      kafka: { port: 0 },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a user JWT's payload limit bounds its Kafka records as it bounds its NATS publishes", async () => {
    const jwt = await encodeUser("small", createUser(), app, { bearer_token: true, payload: 100, subs: -1, data: -1 });
    const kafka = new Kafka({ clientId: "payload", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, sasl: { mechanism: "plain", username: "small", password: jwt }, retry: { retries: 0 } });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "small" }] });
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({ topic: "small", messages: [{ value: "x".repeat(50) }] });
      await assert.rejects(producer.send({ topic: "small", messages: [{ value: "x".repeat(200) }] }), (err: Error & { type?: string }) => {
        assert.equal(err.type, "MESSAGE_TOO_LARGE", err.message);
        return true;
      });
    } finally {
      await producer.disconnect();
    }
  });

  test("Kafka and NATS clients count together against `conn`: past it SASL fails, a NATS connect is refused; a close frees a place", async () => {
    const jwt = await encodeUser("u", createUser(), app, { bearer_token: true });
    const first = await saslConnection(srv.kafkaPort!, jwt);
    const nc = await connect({ servers: srv.url, authenticator: jwtAuthenticator(jwt), reconnect: false });
    try {
      const k = await RawKafka.open(srv.kafkaPort!, REQUEST_MS);
      k.send(frame(17, 1, (w) => w.string("PLAIN"), 1));
      assert.equal((await k.response(0, REQUEST_MS)).i16(), 0);
      k.send(frame(36, 0, (w) => w.nullableBytes(Buffer.from(`\0jwt\0${jwt}`)), 2));
      const r = await k.response(1, REQUEST_MS);
      assert.equal(r.i16(), 58, "SASL_AUTHENTICATION_FAILED");
      assert.match(r.nullableString() ?? "", /maximum account active connections exceeded/);
      k.destroy();
      await assert.rejects(connect({ servers: srv.url, authenticator: jwtAuthenticator(jwt), reconnect: false }), /maximum account active connections exceeded/);
      first.destroy();
      await first.whenClosed();
      // The server sees the close after the client does: the place is free once it has.
      let again: RawKafka | null = null;
      for (let i = 0; again === null && i < 50; i++) {
        again = await saslConnection(srv.kafkaPort!, jwt).catch(() => null);
        if (again === null) await new Promise((res) => setTimeout(res, 100));
      }
      assert.notEqual(again, null, "a place freed by the close");
      again!.destroy();
    } finally {
      await nc.close();
    }
  });
});
