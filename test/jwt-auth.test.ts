/**
 * Operator mode (issue 18, decentralised auth): an operator, account JWTs
 * in the MEMORY resolver's preload, user JWTs in creds files as the official
 * clients read them. Users of one account share its subjects, not another
 * account's; JWT permissions apply; untrusted, expired, revoked and unsigned
 * users are refused. JWTs and keys are made in the test with @nats-io/jwt.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { connect as connectV2, credsAuthenticator as credsV2 } from "nats";
import { connect as connectV3, credsAuthenticator as credsV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { RawClient } from "./helpers/raw.js";
import { runNagare } from "./helpers/cli.js";
import { dec, enc } from "./helpers/clients.js";

describe("operator mode: accounts and users from JWTs", () => {
  let dir: string;
  let srv: NagareServer;
  let operatorJwt: string;
  let accountA: KeyPair;
  let signingA: KeyPair;
  let accountB: KeyPair;
  const revoked = createUser();
  const limitedKey = createUser();
  let limitedJwt = "";
  const creds: Record<string, Uint8Array> = {};

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nagare-jwt-"));
    const operator = createOperator();
    operatorJwt = await encodeOperator("OP", operator);
    accountA = createAccount();
    signingA = createAccount();
    accountB = createAccount();
    const accountAJwt = await encodeAccount("A", accountA, { signing_keys: [signingA.getPublicKey()], revocations: { [revoked.getPublicKey()]: Math.floor(Date.now() / 1000) + 60 } }, { signer: operator });
    const accountBJwt = await encodeAccount("B", accountB, {}, { signer: operator });
    const user = async (name: string, ukp: KeyPair, issuer: KeyPair, claims: Record<string, unknown> = {}, opts: Record<string, unknown> = {}): Promise<void> => {
      const jwt = await encodeUser(name, ukp, issuer, claims, opts);
      creds[name] = fmtCreds(jwt, ukp);
    };
    await user("a1", createUser(), accountA);
    // Signed by A's signing key: issuer_account names A.
    await user("a2", createUser(), signingA, { issuer_account: accountA.getPublicKey() }, { scopedUser: false });
    await user("b1", createUser(), accountB);
    await user("limited", limitedKey, accountA, { pub: { allow: ["allowed.>"] }, sub: { allow: ["allowed.>", "_INBOX.>"] } });
    limitedJwt = new TextDecoder().decode(creds.limited).split("\n")[1];
    await user("expired", createUser(), accountA, {}, { exp: Math.floor(Date.now() / 1000) - 10 });
    await user("revoked", revoked, accountA);
    // An account the server does not trust.
    await user("stranger", createUser(), createAccount());
    const conf = join(dir, "op.conf");
    writeFileSync(join(dir, "op.jwt"), operatorJwt);
    writeFileSync(
      conf,
      `port: -1\noperator: "${join(dir, "op.jwt")}"\nresolver: MEMORY\nresolver_preload: {\n  ${accountA.getPublicKey()}: "${accountAJwt}"\n  ${accountB.getPublicKey()}: "${accountBJwt}"\n}\n`,
    );
    const checked = await runNagare(["server", "-c", conf, "-t"]);
    assert.equal(checked.code, 0, checked.stderr);
    srv = await startServer({
      port: 0,
      operator: { operators: [operatorJwt], accounts: { [accountA.getPublicKey()]: accountAJwt, [accountB.getPublicKey()]: accountBJwt } },
    });
  });
  after(async () => {
    await srv?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("users of one account (signed by the account or its signing key) share subjects; another account's do not see them", async () => {
    const a1 = await connectV2({ servers: srv.url, authenticator: credsV2(creds.a1) });
    const a2 = await connectV3({ servers: srv.url, authenticator: credsV3(creds.a2) });
    const b1 = await connectV3({ servers: srv.url, authenticator: credsV3(creds.b1) });
    try {
      const inB: string[] = [];
      b1.subscribe("news", { callback: (_e, m) => void inB.push(dec(m.data)) });
      const sub = a2.subscribe("news", { max: 1 });
      await b1.flush();
      await a2.flush();
      a1.publish("news", enc("for A"));
      for await (const m of sub) assert.equal(dec(m.data), "for A");
      await b1.flush();
      assert.deepEqual(inB, []);
    } finally {
      await a1.close();
      await a2.close();
      await b1.close();
    }
  });

  test("JWT permissions apply with nats-server's errors", async () => {
    const nc = await connectV3({ servers: srv.url, authenticator: credsV3(creds.limited) });
    try {
      const sub = nc.subscribe("allowed.x", { max: 1 });
      await nc.flush();
      nc.publish("allowed.x", enc("ok"));
      for await (const m of sub) assert.equal(dec(m.data), "ok");
    } finally {
      await nc.close();
    }
    // The same user by hand: sign the nonce, then step outside the permissions.
    const raw = await RawClient.open(srv.port);
    const info = await raw.waitFor(/^INFO (\{.*\})\r\n/, "INFO");
    const nonce = (JSON.parse(info[1]) as { nonce: string }).nonce;
    const sig = Buffer.from(limitedKey.sign(new TextEncoder().encode(nonce))).toString("base64url");
    raw.consume();
    raw.send(`CONNECT {"verbose":false,"pedantic":false,"jwt":"${limitedJwt}","sig":"${sig}"}\r\nPUB other.x 1\r\nx\r\nSUB other.> 1\r\nPING\r\n`);
    await raw.waitFor(
      /^-ERR 'Permissions Violation for Publish to "other\.x"'\r\n-ERR 'Permissions Violation for Subscription to "other\.>"'\r\nPONG\r\n$/,
      "both violations, then PONG",
    );
    raw.destroy();
  });

  test("expired, revoked, untrusted and unsigned users are refused with Authorization Violation", async () => {
    for (const name of ["expired", "revoked", "stranger"]) {
      await assert.rejects(connectV3({ servers: srv.url, authenticator: credsV3(creds[name]), reconnect: false }), /Authorization Violation/i, name);
    }
    // A JWT whose claims were changed after signing: its signature no longer verifies.
    const good = new TextDecoder().decode(creds.limited).split("\n")[1];
    const [h64, p64, s64] = good.split(".");
    const claims = JSON.parse(Buffer.from(p64, "base64url").toString("utf8")) as { nats: Record<string, unknown> };
    delete claims.nats.pub;
    const forged = `${h64}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s64}`;
    const rawForged = await RawClient.open(srv.port);
    const info = await rawForged.waitFor(/^INFO (\{.*\})\r\n/, "INFO");
    const sig = Buffer.from(limitedKey.sign(new TextEncoder().encode((JSON.parse(info[1]) as { nonce: string }).nonce))).toString("base64url");
    rawForged.send(`CONNECT {"verbose":false,"pedantic":false,"jwt":"${forged}","sig":"${sig}"}\r\nPING\r\n`);
    await rawForged.waitFor(/-ERR 'Authorization Violation'\r\n/, "the forged JWT refused");
    await rawForged.waitClosed("after the forged JWT");
    // The JWT alone, without the nonce signature.
    const jwt = new TextDecoder().decode(creds.a1).split("\n")[1];
    const raw = await RawClient.open(srv.port);
    raw.send(`CONNECT {"verbose":false,"pedantic":false,"jwt":"${jwt}"}\r\nPING\r\n`);
    await raw.waitFor(/-ERR 'Authorization Violation'\r\n/, "the violation");
    await raw.waitClosed("after the violation");
  });
});

test("operator mode refuses what it cannot honour: an account JWT from an untrusted operator, the URL resolver", async () => {
  const operator = createOperator();
  const other = createOperator();
  const account = createAccount();
  const untrusted = await encodeAccount("X", account, {}, { signer: other });
  await assert.rejects(
    startServer({ port: 0, operator: { operators: [await encodeOperator("OP", operator)], accounts: { [account.getPublicKey()]: untrusted } } }),
    /not signed by a trusted operator/,
  );
  const dir = mkdtempSync(join(tmpdir(), "nagare-jwt-conf-"));
  try {
    const conf = join(dir, "dir.conf");
    writeFileSync(conf, `port: -1\noperator: "${await encodeOperator("OP", operator)}"\nresolver: URL("http://127.0.0.1:9/jwt/v1/accounts/")\n`);
    const r = await runNagare(["server", "-c", conf], { until: /Server is ready/ });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /dir\.conf:3:1: resolver: the URL resolver is not supported yet \(nagare will not start without it\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
