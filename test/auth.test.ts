/**
 * Authentication and permissions for NATS clients (issue 18): token,
 * user/password (plain and the bcrypt hashes nats-server users have), NKey
 * users signing the nonce, no_auth_user; permission violations with
 * nats-server's exact errors, the connection kept open; JetStream API calls
 * under the same permissions; configurations that could let in the wrong
 * client refused. Checked with nats v2, @nats-io/transport-node v3 and a
 * raw client.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { createUser } from "@nats-io/nkeys";
import { connect as connectV2, nkeyAuthenticator as nkeyV2 } from "nats";
import { connect as connectV3, nkeyAuthenticator as nkeyV3 } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { startServer, type NagareServer } from "../src/index.js";
import { RawClient } from "./helpers/raw.js";
import { runNagare } from "./helpers/cli.js";
import { dec, enc } from "./helpers/clients.js";

/** The server's answer to a raw CONNECT with `connect` fields: the -ERR line, or PONG. */
async function rawConnect(port: number, connect: Record<string, unknown>): Promise<{ text: string; closed: boolean }> {
  const c = await RawClient.open(port);
  c.send(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, ...connect })}\r\nPING\r\n`);
  await c.waitFor(/PONG\r\n|-ERR [^\r]*\r\n/, "PONG or -ERR");
  const text = c.consume().replace(/^INFO [^\r]*\r\n/, "");
  if (text.includes("-ERR")) await c.waitClosed("after the -ERR");
  const closed = c.isClosed;
  c.destroy();
  return { text, closed };
}

describe("authentication", () => {
  test("token: the right one gets in; a wrong or missing one gets Authorization Violation and a close", async () => {
    const srv = await startServer({ port: 0, authorization: { token: "s3cret" } });
    try {
      const nc = await connectV2({ servers: srv.url, token: "s3cret" });
      assert.equal(nc.info?.auth_required, true);
      await nc.close();
      await assert.rejects(connectV3({ servers: srv.url, token: "wrong", reconnect: false }), /Authorization Violation/i);
      await assert.rejects(connectV3({ servers: srv.url, reconnect: false }), /Authorization Violation/i);
      const raw = await rawConnect(srv.port, { auth_token: "nope" });
      assert.equal(raw.text, "-ERR 'Authorization Violation'\r\n");
      assert.equal(raw.closed, true);
      // Nothing before CONNECT but PING.
      const early = await RawClient.open(srv.port);
      early.send("SUB x 1\r\n");
      await early.waitFor(/-ERR 'Authorization Violation'\r\n/, "the violation");
      await early.waitClosed("after a SUB before CONNECT");
    } finally {
      await srv.close();
    }
  });

  test("users with plain and bcrypt passwords ($2a$ as nats-server's tool writes them); what follows CONNECT in the same read waits for the answer", async () => {
    const hash = bcrypt.hashSync("hashed-pw", 4).replace(/^\$2b\$/, "$2a$");
    const srv = await startServer({
      port: 0,
      authorization: { users: [{ user: "plain", password: "plain-pw" }, { user: "hashed", password: hash }] },
    });
    try {
      for (const [user, pass] of [
        ["plain", "plain-pw"],
        ["hashed", "hashed-pw"],
      ]) {
        const nc = await connectV3({ servers: srv.url, user, pass });
        const sub = nc.subscribe("auth.x", { max: 1 });
        await nc.flush();
        nc.publish("auth.x", enc(user));
        for await (const m of sub) assert.equal(dec(m.data), user);
        await nc.close();
      }
      await assert.rejects(connectV2({ servers: srv.url, user: "hashed", pass: "wrong", reconnect: false }), /Authorization Violation/i);
      await assert.rejects(connectV2({ servers: srv.url, user: "nobody", pass: "plain-pw", reconnect: false }), /Authorization Violation/i);
      // A PUB right behind CONNECT, in one write: delivered only once the (slow) hash compare let the client in.
      const watcher = await connectV3({ servers: srv.url, user: "plain", pass: "plain-pw" });
      const seen = watcher.subscribe("auth.pipelined", { max: 1 });
      await watcher.flush();
      const raw = await RawClient.open(srv.port);
      raw.send(`CONNECT {"verbose":false,"pedantic":false,"user":"hashed","pass":"hashed-pw"}\r\nPUB auth.pipelined 2\r\nok\r\nPING\r\n`);
      await raw.waitFor(/PONG\r\n/, "PONG");
      for await (const m of seen) assert.equal(dec(m.data), "ok");
      raw.destroy();
      await watcher.close();
    } finally {
      await srv.close();
    }
  });

  test("NKey users sign the nonce from INFO (v2 and v3 clients); a wrong signature is refused", async () => {
    const kp = createUser();
    const other = createUser();
    const srv = await startServer({ port: 0, authorization: { users: [{ nkey: kp.getPublicKey() }] } });
    try {
      const v2 = await connectV2({ servers: srv.url, authenticator: nkeyV2(kp.getSeed()) });
      assert.equal(typeof v2.info?.nonce, "string");
      await v2.flush();
      await v2.close();
      const v3 = await connectV3({ servers: srv.url, authenticator: nkeyV3(kp.getSeed()) });
      await v3.flush();
      await v3.close();
      await assert.rejects(connectV3({ servers: srv.url, authenticator: nkeyV3(other.getSeed()), reconnect: false }), /Authorization Violation/i);
      const raw = await rawConnect(srv.port, { nkey: kp.getPublicKey(), sig: "AAAA" });
      assert.equal(raw.text, "-ERR 'Authorization Violation'\r\n");
    } finally {
      await srv.close();
    }
  });

  test("no_auth_user: a client without credentials is that user, with its permissions", async () => {
    const srv = await startServer({
      port: 0,
      authorization: { users: [{ user: "guest", password: "x", permissions: { publish: { allow: ["public.>"] } } }], noAuthUser: "guest" },
    });
    try {
      const raw = await RawClient.connected(srv.port);
      raw.send("PUB private.x 1\r\nx\r\nPING\r\n");
      await raw.waitFor(/-ERR 'Permissions Violation for Publish to "private\.x"'\r\nPONG\r\n/, "the violation, then PONG");
      raw.destroy();
    } finally {
      await srv.close();
    }
  });
});

describe("permissions", () => {
  let srv: NagareServer;
  let storeDir: string;
  before(async () => {
    storeDir = mkdtempSync(join(tmpdir(), "nagare-auth-"));
    srv = await startServer({
      port: 0,
      jetstream: true,
      storeDir,
      authorization: {
        users: [
          { user: "admin", password: "a" },
          {
            user: "app",
            password: "b",
            permissions: {
              publish: { allow: ["orders.>", "$JS.API.>"], deny: ["orders.secret", "$JS.API.STREAM.DELETE.>"] },
              subscribe: { allow: ["orders.>", "_INBOX.>"], deny: ["orders.hidden"] },
            },
          },
        ],
      },
    });
  });
  after(async () => {
    await srv.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  test("violations get nats-server's exact errors and the connection stays open", async () => {
    const raw = await RawClient.connected(srv.port, '{"verbose":false,"pedantic":false,"user":"app","pass":"b"}');
    raw.send("PUB billing.x 1\r\nx\r\nPING\r\n");
    await raw.waitFor(/^-ERR 'Permissions Violation for Publish to "billing\.x"'\r\nPONG\r\n$/, "publish violation");
    raw.consume();
    raw.send("PUB orders.secret 1\r\nx\r\nPING\r\n");
    await raw.waitFor(/^-ERR 'Permissions Violation for Publish to "orders\.secret"'\r\nPONG\r\n$/, "denied publish");
    raw.consume();
    raw.send("SUB billing.> 1\r\nSUB orders.hidden q 2\r\nSUB > 3\r\nPING\r\n");
    await raw.waitFor(
      /^-ERR 'Permissions Violation for Subscription to "billing\.>"'\r\n-ERR 'Permissions Violation for Subscription to "orders\.hidden" using queue "q"'\r\n-ERR 'Permissions Violation for Subscription to ">"'\r\nPONG\r\n$/,
      "subscribe violations",
    );
    await raw.roundTrip();
    raw.destroy();
  });

  test("a subscription overlapping a denied subject is made, and the denied messages are not delivered to it", async () => {
    const app = await connectV3({ servers: srv.url, user: "app", pass: "b" });
    const admin = await connectV3({ servers: srv.url, user: "admin", pass: "a" });
    try {
      const got: string[] = [];
      const sub = app.subscribe("orders.*", {
        callback: (_e, m) => {
          got.push(m.subject);
        },
      });
      await app.flush();
      admin.publish("orders.hidden", enc("1"));
      admin.publish("orders.visible", enc("2"));
      const done = app.subscribe("orders.end", { max: 1 });
      await app.flush();
      admin.publish("orders.end", enc("3"));
      for await (const _ of done) break;
      assert.deepEqual(got, ["orders.visible", "orders.end"]);
      sub.unsubscribe();
    } finally {
      await app.close();
      await admin.close();
    }
  });

  test("JetStream API calls obey the same permissions: a user without $JS.API.STREAM.DELETE cannot delete a stream", async () => {
    const app = await connectV3({ servers: srv.url, user: "app", pass: "b" });
    try {
      const jsm = await jetstreamManager(app, { timeout: 2000 });
      await jsm.streams.add({ name: "ORDERS", subjects: ["orders.js.>"] });
      await assert.rejects(jsm.streams.delete("ORDERS"));
      assert.equal((await jsm.streams.info("ORDERS")).config.name, "ORDERS", "the stream is still there");
    } finally {
      await app.close();
    }
  });
});

describe("configuration", () => {
  test("authorization from a configuration file, with users, bcrypt and permissions, and what it refuses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-authconf-"));
    try {
      const hash = bcrypt.hashSync("pw", 4).replace(/^\$2b\$/, "$2a$");
      const good = join(dir, "good.conf");
      writeFileSync(
        good,
        `port: -1
authorization {
  users: [
    { user: alice, password: "${hash}", permissions: { publish: "a.>", subscribe: { allow: ["a.>", "_INBOX.>"], deny: "a.b" } } }
    { user: bob, password: plain }
  ]
  timeout: 3
}
no_auth_user: bob
`,
      );
      const ok = await runNagare(["server", "-c", good, "-t"]);
      assert.equal(ok.code, 0, ok.stderr);
      const bad = join(dir, "bad.conf");
      writeFileSync(
        bad,
        `port: -1
authorization {
  token: t
  users: [ { user: x, password: y, passwd: z } ]
}
kafka { port: -1 }
`,
      );
      const r = await runNagare(["server", "-c", bad, "-t"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /bad\.conf:2:1: authorization: a token and users cannot be used together/);
      assert.match(r.stderr, /unknown field "authorization\.users\[0\]\.passwd"/);
      const flags = await runNagare(["server", "-p", "-1", "--user", "u"], { until: /Server is ready/ });
      assert.equal(flags.code, 1);
      assert.match(flags.stderr, /needs a password/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
