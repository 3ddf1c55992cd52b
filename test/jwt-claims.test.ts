/**
 * Operator mode while the server runs (issue 18): the system account named
 * by the configuration or the operator JWT, account JWT updates and
 * lookups on `$SYS`, the directory resolver (files, restarts, deletions),
 * and what a change of an account's claims does to its connected clients:
 * revoked users, lowered limits, removed or re-scoped signing keys, expired
 * and deleted accounts, as nats-server does. JWTs and keys are made in the
 * test with @nats-io/jwt and @nats-io/nkeys (and signed by hand where a
 * test needs its own `iat`).
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { encodeAccount, encodeGeneric, encodeOperator, encodeUser, fmtCreds, newScopedSigner } from "@nats-io/jwt";
import { connect as connectV2, createInbox, credsAuthenticator as credsV2, type NatsConnection as ConnV2 } from "nats";
import { connect as connectV3, credsAuthenticator as credsV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { RawClient } from "./helpers/raw.js";
import { runNagare } from "./helpers/cli.js";
import { dec, enc, waitUntil } from "./helpers/clients.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const b64 = (s: string): string => Buffer.from(s).toString("base64url");

/** A JWT signed by `signer` with exactly these claims (so a test chooses `iat`). */
function signJwt(claims: Record<string, unknown>, signer: KeyPair): string {
  const head = b64(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = b64(JSON.stringify({ jti: Math.random().toString(36).slice(2), iss: signer.getPublicKey(), ...claims }));
  return `${head}.${body}.${Buffer.from(signer.sign(new TextEncoder().encode(`${head}.${body}`))).toString("base64url")}`;
}

/** An account JWT signed by the operator, with its own `iat` (seconds). */
function accountJwt(name: string, account: KeyPair, operator: KeyPair, nats: Record<string, unknown> = {}, iat = Math.floor(Date.now() / 1000), extra: Record<string, unknown> = {}): string {
  return signJwt({ name, sub: account.getPublicKey(), iat, ...extra, nats: { type: "account", version: 2, limits: { subs: -1, conn: -1, payload: -1, data: -1 }, ...nats } }, operator);
}

interface User {
  key: KeyPair;
  jwt: string;
  creds: Uint8Array;
}

async function user(name: string, account: KeyPair, claims: Record<string, unknown> = {}, opts: Record<string, unknown> = {}): Promise<User> {
  const key = createUser();
  const jwt = await encodeUser(name, key, account, claims, opts);
  return { key, jwt, creds: fmtCreds(jwt, key) };
}

/** A raw connection as the user: CONNECT with the JWT and the signed nonce, then a PONG. */
async function rawAs(port: number, u: User): Promise<RawClient> {
  const raw = await RawClient.open(port);
  const nonce = (JSON.parse(raw.consume().slice(5)) as { nonce: string }).nonce;
  const sig = Buffer.from(u.key.sign(new TextEncoder().encode(nonce))).toString("base64url");
  raw.send(`CONNECT {"verbose":false,"pedantic":false,"jwt":"${u.jwt}","sig":"${sig}"}\r\nPING\r\n`);
  await raw.waitFor(/PONG\r\n/, "PONG after CONNECT");
  raw.consume();
  return raw;
}

async function ask(nc: ConnV2, subject: string, body: string | Uint8Array = ""): Promise<Json> {
  const m = await nc.request(subject, typeof body === "string" ? enc(body) : body, { timeout: 5000 });
  return JSON.parse(dec(m.data)) as Json;
}

describe("account JWT updates with a full directory resolver", () => {
  const operator = createOperator();
  const sysAccount = createAccount();
  const accountA = createAccount();
  const accountB = createAccount();
  let dir: string;
  let jwtDir: string;
  let srv: NagareServer;
  let sys: ConnV2;
  let sysUser: User;
  let conf: string;

  const start = async (): Promise<NagareServer> =>
    startServer({
      port: 0,
      systemAccount: sysAccount.getPublicKey(),
      operator: {
        operators: [await encodeOperator("OP", operator)],
        accounts: { [sysAccount.getPublicKey()]: accountJwt("SYS", sysAccount, operator), [accountA.getPublicKey()]: accountJwt("A", accountA, operator, {}, Math.floor(Date.now() / 1000) - 100) },
        resolver: { type: "full", dir: jwtDir, allowDelete: true },
      },
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-claims-"));
    jwtDir = join(dir, "jwt");
    srv = await start();
    sysUser = await user("sys", sysAccount);
    sys = await connectV2({ servers: srv.url, authenticator: credsV2(sysUser.creds) });
    // The same configuration as a file, the way nsc writes it, passes `-t`.
    conf = join(dir, "full.conf");
    writeFileSync(
      conf,
      `port: -1\noperator: "${await encodeOperator("OP", operator)}"\nsystem_account: ${sysAccount.getPublicKey()}\nresolver: { type: full, dir: "${jwtDir}", allow_delete: true, interval: "2m", timeout: "1.9s" }\nresolver_preload: { ${sysAccount.getPublicKey()}: "${accountJwt("SYS", sysAccount, operator)}" }\n`,
    );
  });
  after(async () => {
    await sys?.close();
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the preloaded accounts are written to the directory; LOOKUP and LIST answer from it", async () => {
    assert.deepEqual(readdirSync(jwtDir).sort(), [`${accountA.getPublicKey()}.jwt`, `${sysAccount.getPublicKey()}.jwt`].sort());
    const lookup = await sys.request(`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.LOOKUP`, new Uint8Array(), { timeout: 5000 });
    assert.equal(dec(lookup.data), readFileSync(join(jwtDir, `${accountA.getPublicKey()}.jwt`), "utf8"));
    const list = await ask(sys, "$SYS.REQ.CLAIMS.LIST");
    assert.deepEqual(list.data, [accountA.getPublicKey(), sysAccount.getPublicKey()].sort());
    const checked = await runNagare(["server", "-c", conf, "-t"]);
    assert.equal(checked.code, 0, checked.stderr);
  });

  test("$SYS.REQ.CLAIMS.UPDATE adds an account: on disk before the answer, its users in at once", async () => {
    const b1 = await user("b1", accountB);
    await assert.rejects(connectV3({ servers: srv.url, authenticator: credsV3(b1.creds), reconnect: false }), /Authorization Violation/i);
    const r = await ask(sys, "$SYS.REQ.CLAIMS.UPDATE", accountJwt("B", accountB, operator));
    assert.deepEqual(r.data, { account: accountB.getPublicKey(), code: 200, message: "jwt updated" });
    assert.deepEqual(Object.keys(r), ["data", "server"], "nats-server's order for claims answers");
    assert.ok(existsSync(join(jwtDir, `${accountB.getPublicKey()}.jwt`)));
    const nc = await connectV3({ servers: srv.url, authenticator: credsV3(b1.creds) });
    await nc.close();
  });

  test("updates that are not to be trusted change nothing and say why", async () => {
    const before = readFileSync(join(jwtDir, `${accountA.getPublicKey()}.jwt`), "utf8");
    const cases: Array<[string, string, RegExp]> = [
      [`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, createOperator()), /jwt update resulted in error - account .*: not signed by a trusted operator/],
      [`$SYS.REQ.ACCOUNT.${accountB.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator), /jwt update resulted in error - subject does not match jwt content/],
      [`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, {}, Math.floor(Date.now() / 1000) - 1000), /the server holds a newer JWT for this account/],
      [`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, {}, undefined, { exp: Math.floor(Date.now() / 1000) - 5 }), /expired/],
      [`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, { limits: { mem_storage: 1024 } }), /JetStream in an account other than the default one is not supported yet/],
      ["$SYS.REQ.CLAIMS.UPDATE", "not a jwt", /jwt update resulted in error - account JWT: not a JWT whose signature verifies/],
      ["$SYS.REQ.CLAIMS.UPDATE", "", /jwt update error - request body is empty/],
    ];
    for (const [subject, body, why] of cases) {
      const r = await ask(sys, subject, body);
      assert.equal(r.data, undefined, subject);
      assert.equal(r.error.code, 500);
      assert.match(r.error.description, why);
    }
    assert.equal(readFileSync(join(jwtDir, `${accountA.getPublicKey()}.jwt`), "utf8"), before);
  });

  test("a revocation closes the revoked user's connection with nats-server's error; the account's others stay", async () => {
    const revoked = await user("revoked", accountA);
    const kept = await user("kept", accountA);
    const raw = await rawAs(srv.port, revoked);
    const other = await rawAs(srv.port, kept);
    const nc = await connectV2({ servers: srv.url, authenticator: credsV2(revoked.creds), reconnect: false });
    const r = await ask(sys, `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, { revocations: { [revoked.key.getPublicKey()]: Math.floor(Date.now() / 1000) } }));
    assert.equal(r.data.message, "jwt updated");
    await raw.waitFor(/^-ERR 'User Authentication Revoked'\r\n$/, "the revocation's error");
    await raw.closed;
    const closed = await nc.closed();
    assert.ok(closed instanceof Error, "the client learns why");
    await other.roundTrip();
    assert.equal(other.isClosed, false);
    other.destroy();
    await assert.rejects(connectV3({ servers: srv.url, authenticator: credsV3(revoked.creds), reconnect: false }), /Authorization Violation/i);
  });

  test("lowered limits apply to connected clients: connections, subscriptions, payload", async () => {
    // The previous test's clients gone first: which connections are newest must be this test's.
    await waitUntil(() => srv.broker.accounts.get(accountA.getPublicKey())!.members.size === 0, "A without clients");
    const users = await Promise.all([user("l1", accountA), user("l2", accountA), user("l3", accountA)]);
    const oldest = await rawAs(srv.port, users[0]);
    oldest.send("SUB one 1\r\nSUB two 2\r\nPING\r\n");
    await oldest.waitFor(/PONG\r\n/, "subscribed");
    oldest.consume();
    const middle = await rawAs(srv.port, users[1]);
    const newest = await rawAs(srv.port, users[2]);
    await ask(sys, `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, { limits: { conn: 2, subs: 1, payload: 8, data: -1 } }));
    // The newest past the connection limit goes; the oldest holds two subscriptions where one is allowed.
    await newest.waitFor(/-ERR 'maximum account active connections exceeded'\r\n/, "the newest closed");
    await oldest.waitFor(/-ERR 'maximum subscriptions exceeded'\r\n/, "too many subscriptions");
    await newest.closed;
    await oldest.closed;
    middle.send("SUB s 1\r\nSUB t 2\r\nPING\r\n");
    await middle.waitFor(/-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n/, "a second subscription refused");
    middle.consume();
    middle.send("PUB s 8\r\n12345678\r\nPING\r\n");
    await middle.waitFor(/MSG s 1 8\r\n12345678\r\nPONG\r\n/, "8 bytes are within the limit");
    middle.consume();
    middle.send("PUB s 9\r\n123456789\r\n");
    await middle.waitFor(/-ERR 'Maximum Payload Violation'\r\n/, "9 are not");
    await middle.closed;
    // And newcomers meet the connection limit.
    const a = await rawAs(srv.port, users[0]);
    const b = await rawAs(srv.port, users[1]);
    const c = await RawClient.open(srv.port);
    const nonce = (JSON.parse(c.consume().slice(5)) as { nonce: string }).nonce;
    c.send(`CONNECT {"verbose":false,"jwt":"${users[2].jwt}","sig":"${Buffer.from(users[2].key.sign(enc(nonce))).toString("base64url")}"}\r\nPING\r\n`);
    await c.waitFor(/^-ERR 'maximum account active connections exceeded'\r\n$/, "the third refused");
    await c.closed;
    a.destroy();
    b.destroy();
    await ask(sys, `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, {}, Math.floor(Date.now() / 1000) + 1));
  });

  test("account events carry the JWT user's key, JWT and issuer", async () => {
    const u = await user("evented", accountA);
    const got = new Promise<Json>((resolve) => sys.subscribe(`$SYS.ACCOUNT.${accountA.getPublicKey()}.CONNECT`, { max: 1, callback: (_e, m) => resolve(JSON.parse(dec(m.data)) as Json) }));
    await sys.flush();
    const nc = await connectV3({ servers: srv.url, authenticator: credsV3(u.creds) });
    const e = await got;
    await nc.close();
    assert.equal(e.client.acc, accountA.getPublicKey());
    assert.equal(e.client.user, u.key.getPublicKey());
    assert.equal(e.client.jwt, u.jwt);
    assert.equal(e.client.issuer_key, accountA.getPublicKey());
    assert.equal(e.client.name_tag, "evented");
  });

  test("the directory survives a restart: accounts added by updates are served again", async () => {
    await sys.close();
    await srv.close();
    srv = await start();
    sys = await connectV2({ servers: srv.url, authenticator: credsV2(sysUser.creds) });
    const b2 = await user("b2", accountB);
    const nc = await connectV3({ servers: srv.url, authenticator: credsV3(b2.creds) });
    await nc.close();
  });

  test("$SYS.REQ.CLAIMS.DELETE (allow_delete): the operator deletes an account, its clients are closed, the system account cannot be deleted", async () => {
    const b3 = await user("b3", accountB);
    const raw = await rawAs(srv.port, b3);
    const notSelfSigned = await ask(sys, "$SYS.REQ.CLAIMS.DELETE", await encodeGeneric("del", createAccount(), "generic", { accounts: [accountB.getPublicKey()] }));
    assert.match(notSelfSigned.error.description, /not trusted/);
    const sysDelete = await ask(sys, "$SYS.REQ.CLAIMS.DELETE", await encodeGeneric("del", operator, "generic", { accounts: [sysAccount.getPublicKey()] }));
    assert.match(sysDelete.error.description, /not allowed to delete system account/);
    const r = await ask(sys, "$SYS.REQ.CLAIMS.DELETE", await encodeGeneric("del", operator, "generic", { accounts: [accountB.getPublicKey()] }));
    assert.deepEqual(r.data, { code: 200, message: "deleted 1 accounts" });
    await raw.waitFor(/^-ERR 'Account Authentication Expired'\r\n$/, "the deleted account's client told");
    await raw.closed;
    assert.ok(existsSync(join(jwtDir, `${accountB.getPublicKey()}.jwt.deleted`)));
    assert.equal(existsSync(join(jwtDir, `${accountB.getPublicKey()}.jwt`)), false);
    await assert.rejects(connectV3({ servers: srv.url, authenticator: credsV3(b3.creds), reconnect: false }), /Authorization Violation/i);
    const info = await ask(sys, `$SYS.REQ.ACCOUNT.${accountB.getPublicKey()}.INFO`);
    assert.equal(info.data.expired, true);
  });

  test("a flood of updates is bounded: past 64 waiting, requests are refused at once; every one is answered", async () => {
    const F = createAccount();
    const base = Math.floor(Date.now() / 1000);
    const inbox = createInbox();
    const answers: Json[] = [];
    sys.subscribe(inbox, { callback: (_e, m) => void answers.push(JSON.parse(dec(m.data)) as Json) });
    await sys.flush();
    for (let i = 0; i < 200; i++) sys.publish("$SYS.REQ.CLAIMS.UPDATE", enc(accountJwt("F", F, operator, {}, base + i)), { reply: inbox });
    await sys.flush();
    await waitUntil(() => answers.length === 200, "an answer to every request");
    const refused = answers.filter((a) => a.error?.code === 503);
    assert.ok(refused.length > 0, "some refused");
    assert.match(refused[0].error.description, /too many claims requests in progress \(64\)/);
    assert.ok(answers.filter((a) => a.data?.message === "jwt updated").length >= 64, "those queued applied");
  });

  test("users outside the system account cannot send claims requests", async () => {
    const a = await user("outsider", accountA);
    const nc = await connectV3({ servers: srv.url, authenticator: credsV3(a.creds) });
    try {
      for (const subject of ["$SYS.REQ.CLAIMS.UPDATE", `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, "$SYS.REQ.CLAIMS.LIST", "$SYS.REQ.CLAIMS.DELETE"]) {
        await assert.rejects(nc.request(subject, enc(accountJwt("A", accountA, operator)), { timeout: 5000 }), /503|no responders/i, subject);
      }
    } finally {
      await nc.close();
    }
  });
});

describe("account JWT updates with the MEMORY resolver; signing keys and expiry", () => {
  const operator = createOperator();
  const operatorSigning = createOperator();
  const sysAccount = createAccount();
  const accountA = createAccount();
  const scoped = createAccount();
  let srv: NagareServer;
  let sys: ConnV2;

  before(async () => {
    // The system account is the operator JWT's, as nsc writes it; accounts may be signed by the operator's signing key.
    const op = await encodeOperator("OP", operator, { system_account: sysAccount.getPublicKey(), signing_keys: [operatorSigning.getPublicKey()] });
    const scope = newScopedSigner(scoped, "readers", { pub: { allow: ["scoped.>"] }, sub: { allow: ["scoped.>", "_INBOX.>"] } });
    srv = await startServer({
      port: 0,
      operator: {
        operators: [op],
        accounts: {
          [sysAccount.getPublicKey()]: accountJwt("SYS", sysAccount, operatorSigning),
          [accountA.getPublicKey()]: accountJwt("A", accountA, operator, { signing_keys: [scope] }, Math.floor(Date.now() / 1000) - 10),
        },
      },
    });
    sys = await connectV2({ servers: srv.url, authenticator: credsV2((await user("sys", sysAccount)).creds) });
  });
  after(async () => {
    await sys?.close();
    await srv?.close();
  });

  test("the operator JWT's system_account is the system account; INFO says credentials are required", async () => {
    const r = await ask(sys, "$SYS.REQ.SERVER.PING.ACCOUNTZ");
    assert.equal(r.data.system_account, sysAccount.getPublicKey());
    assert.equal(sys.info?.auth_required, true);
  });

  test("an update for a held account applies in memory; one for an unknown account is skipped; the directory's subjects are not served", async () => {
    const r = await ask(sys, `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, { signing_keys: [newScopedSigner(scoped, "readers", { pub: { allow: ["scoped.>"] }, sub: { allow: ["scoped.>", "_INBOX.>"] } })] }, Math.floor(Date.now() / 1000) - 5));
    assert.equal(r.data.message, "jwt updated");
    const other = createAccount();
    const skipped = await ask(sys, `$SYS.REQ.ACCOUNT.${other.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("X", other, operator));
    assert.deepEqual(skipped.data, { account: other.getPublicKey(), code: 200, message: "jwt update skipped" });
    await assert.rejects(sys.request("$SYS.REQ.CLAIMS.UPDATE", enc(accountJwt("X", other, operator)), { timeout: 5000 }), /503|no responders/i);
    const lookup = await sys.request(`$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.LOOKUP`, new Uint8Array(), { timeout: 5000 });
    assert.match(dec(lookup.data), /^eyJ/);
  });

  test("a scoped signing key's template is the user's permissions; re-scoping it disconnects its users, who come back under the new scope", async () => {
    const u = await user("scoped-user", accountA, {}, { signer: scoped, scopedUser: true });
    const raw = await rawAs(srv.port, u);
    raw.send("PUB scoped.ok 1\r\nx\r\nPUB other 1\r\nx\r\nPING\r\n");
    await raw.waitFor(/^-ERR 'Permissions Violation for Publish to "other"'\r\nPONG\r\n$/, "the template's permissions");
    raw.consume();
    const wider = newScopedSigner(scoped, "readers", { pub: { allow: [">"] }, sub: { allow: [">"] } });
    const r = await ask(sys, `$SYS.REQ.ACCOUNT.${accountA.getPublicKey()}.CLAIMS.UPDATE`, accountJwt("A", accountA, operator, { signing_keys: [wider] }));
    assert.equal(r.data.message, "jwt updated");
    await raw.closed;
    assert.doesNotMatch(raw.text, /-ERR/, "closed without an error, as nats-server does");
    const again = await rawAs(srv.port, u);
    again.send("PUB other 1\r\nx\r\nPING\r\n");
    await again.waitFor(/^PONG\r\n$/, "the new scope's permissions");
    again.destroy();
  });

  test("a user JWT and an account JWT that expire while connected close their clients", async () => {
    const soon = Math.floor(Date.now() / 1000) + 3;
    const u = await user("short", accountA, {}, { exp: soon });
    const raw = await rawAs(srv.port, u);
    await raw.waitFor(/^-ERR 'User Authentication Expired'\r\n$/, "the user's expiry", 8000);
    await raw.closed;
    // An account whose JWT expires in two seconds, preloaded in a second server.
    const expiring = createAccount();
    const x = await user("x", expiring);
    const srv2 = await startServer({
      port: 0,
      operator: { operators: [await encodeOperator("OP", operator)], accounts: { [expiring.getPublicKey()]: accountJwt("E", expiring, operator, {}, undefined, { exp: Math.floor(Date.now() / 1000) + 3 }) } },
    });
    try {
      const r2 = await rawAs(srv2.port, x);
      await r2.waitFor(/^-ERR 'Account Authentication Expired'\r\n$/, "the account's expiry", 8000);
      await r2.closed;
      await assert.rejects(connectV3({ servers: srv2.url, authenticator: credsV3(x.creds), reconnect: false }), /Authorization Violation/i);
    } finally {
      await srv2.close();
    }
  });
});

test("operator mode stops the start when the system account has no JWT, and reads a directory written by nats-server's layout", async () => {
  const operator = createOperator();
  const sysAccount = createAccount();
  const A = createAccount();
  const op = await encodeOperator("OP", operator);
  await assert.rejects(
    startServer({ port: 0, systemAccount: sysAccount.getPublicKey(), operator: { operators: [op], accounts: { [A.getPublicKey()]: accountJwt("A", A, operator) } } }),
    new RegExp(`system account ${sysAccount.getPublicKey()}: the resolver has no JWT for it`),
  );
  // A directory holding <key>.jwt files (as nats-server's full resolver keeps them), one of them not to be trusted.
  const dir = mkdtempSync(join(tmpdir(), "nagare-jwtdir-"));
  try {
    writeFileSync(join(dir, `${sysAccount.getPublicKey()}.jwt`), accountJwt("SYS", sysAccount, operator));
    writeFileSync(join(dir, `${A.getPublicKey()}.jwt`), accountJwt("A", A, createOperator()));
    writeFileSync(join(dir, "README"), "not a JWT");
    const srv = await startServer({ port: 0, systemAccount: sysAccount.getPublicKey(), operator: { operators: [op], accounts: {}, resolver: { type: "full", dir } } });
    try {
      const sys = await connectV2({ servers: srv.url, authenticator: credsV2((await user("sys", sysAccount)).creds) });
      assert.deepEqual((await ask(sys, "$SYS.REQ.CLAIMS.LIST")).data, [sysAccount.getPublicKey()], "the untrusted file is left out");
      await sys.close();
      await assert.rejects(connectV3({ servers: srv.url, authenticator: credsV3((await user("a", A)).creds), reconnect: false }), /Authorization Violation/i);
    } finally {
      await srv.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
