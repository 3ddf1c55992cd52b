/**
 * A configuration reload that changes users and permissions, as
 * nats-server's reloadAuthorization: a client whose user is gone or moved
 * to another account is closed, one whose password changed gets
 * Authorization Violation, the others take the new permissions and lose
 * the subscriptions these refuse; new clients meet the new users. Over the
 * Kafka door too. Before, nagare refused such a reload whole (an outside
 * test removed a user, sent SIGHUP, and the user kept its access).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import kafkajs from "kafkajs";
import { connect as connectV3, PermissionViolationError } from "@nats-io/transport-node";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";
import type { UserOptions } from "../src/core/auth.js";
import { RawClient } from "./helpers/raw.js";
import { enc } from "./helpers/clients.js";

const { Kafka, logLevel } = kafkajs;

/** A raw client connected as `user` (PONG seen), its INFO consumed. */
async function rawUser(port: number, user: string, pass: string): Promise<RawClient> {
  const c = await RawClient.open(port);
  c.send(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, user, pass })}\r\nPING\r\n`);
  await c.waitFor(/PONG\r\n/, `${user} connected`);
  c.consume();
  return c;
}

/** The account each connected user is in, as the server holds it. */
function accountsOf(srv: NagareServer): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of srv.broker.connections.values()) {
    const i = c.info(Date.now(), false);
    if (i.authorized_user !== undefined) out.set(i.authorized_user, i.account ?? "");
  }
  return out;
}

test("reload: a removed or moved user is closed, a changed password is an Authorization Violation, narrowed permissions remove subscriptions; the rest stay", async () => {
  const base = (users: UserOptions[], otherUsers: UserOptions[]): ServerOptions => ({ port: 0, authorization: { users }, accounts: { OTHER: { users: otherUsers } } });
  const before = base(
    [
      { user: "keep", password: "k" },
      { user: "gone", password: "g" },
      { user: "changed", password: "c1" },
      { user: "narrowed", password: "n", permissions: { subscribe: { allow: ["a.>", "b.>"] } } },
      { user: "mover", password: "m" },
    ],
    [],
  );
  const srv = await startServer(before);
  const clients: RawClient[] = [];
  try {
    const keep = await rawUser(srv.port, "keep", "k");
    const gone = await rawUser(srv.port, "gone", "g");
    const changed = await rawUser(srv.port, "changed", "c1");
    const narrowed = await rawUser(srv.port, "narrowed", "n");
    const mover = await rawUser(srv.port, "mover", "m");
    clients.push(keep, gone, changed, narrowed, mover);
    narrowed.send("SUB a.1 1\r\nSUB b.1 2\r\nSUB b.2 q 3\r\n");
    await narrowed.roundTrip();
    narrowed.consume();

    srv.reload(
      base(
        [
          { user: "keep", password: "k" },
          { user: "changed", password: "c2" },
          { user: "narrowed", password: "n", permissions: { subscribe: { allow: ["a.>"] } } },
          { user: "fresh", password: "f" },
        ],
        [{ user: "mover", password: "m" }],
      ),
    );

    // nats-server closes a client whose user is gone or in another account without a word (it reconnects into the right one).
    await gone.waitClosed("the removed user's connection");
    assert.equal(gone.consume(), "");
    await mover.waitClosed("the moved user's connection");
    assert.equal(mover.consume(), "");
    await changed.waitFor(/-ERR 'Authorization Violation'\r\n/, "the changed password's violation");
    await changed.waitClosed("the changed password's connection");

    // Each subscription the new permissions refuse is removed and said, in nats-server 2.10's words; the connection stays.
    await narrowed.waitFor(/\(sid "3"\)'\r\n/, "both removals");
    assert.equal(
      narrowed.consume(),
      `-ERR 'Permissions Violation for Subscription to "b.1" (sid "2")'\r\n` + `-ERR 'Permissions Violation for Subscription to "b.2" using queue "q" (sid "3")'\r\n`,
    );
    keep.send("PUB b.1 2\r\nno\r\nPUB a.1 3\r\nyes\r\n");
    await keep.roundTrip();
    const got = await narrowed.waitFor(/MSG [^\r]*\r\n[^\r]*\r\n/, "a.1's message");
    assert.equal(got[0], "MSG a.1 1 3\r\nyes\r\n", "b.1's message, published first, was not delivered");
    await narrowed.roundTrip();
    await keep.roundTrip();

    // New clients meet the new users: the removed one is refused, the added one and the moved one (in its new account) get in.
    await assert.rejects(rawUser(srv.port, "gone", "g"));
    await assert.rejects(rawUser(srv.port, "changed", "c1"));
    clients.push(await rawUser(srv.port, "fresh", "f"), await rawUser(srv.port, "mover", "m"), await rawUser(srv.port, "changed", "c2"));
    const accounts = accountsOf(srv);
    assert.equal(accounts.get("mover"), "OTHER");
    assert.equal(accounts.get("keep"), "$G");
    assert.equal(accounts.has("gone"), false);
  } finally {
    for (const c of clients) c.destroy();
    await srv.close();
  }
});

test("reload: nats.js sees its subscription end with a PermissionViolationError and keeps its connection", async () => {
  const users = (allow: string[]): ServerOptions => ({ port: 0, authorization: { users: [{ user: "app", password: "pw", permissions: { subscribe: { allow } } }, { user: "pub", password: "pw" }] } });
  const srv = await startServer(users(["orders.>", "audit.>"]));
  try {
    const nc = await connectV3({ servers: srv.url, user: "app", pass: "pw", reconnect: false });
    const pub = await connectV3({ servers: srv.url, user: "pub", pass: "pw", reconnect: false });
    try {
      const audit = nc.subscribe("audit.>");
      const orders = nc.subscribe("orders.>", { max: 1 });
      await nc.flush();
      srv.reload(users(["orders.>"]));
      const ended = await audit.closed;
      assert.ok(ended instanceof PermissionViolationError, `audit's subscription ended with ${String(ended)}`);
      assert.equal(ended.operation, "subscription");
      assert.equal(ended.subject, "audit.>");
      pub.publish("orders.1", enc("still allowed"));
      for await (const m of orders) assert.equal(m.subject, "orders.1");
      assert.equal(nc.isClosed(), false);
    } finally {
      await nc.close();
      await pub.close();
    }
  } finally {
    await srv.close();
  }
});

test("reload: authentication turned on closes clients that presented nothing; turned off, those that named a user are closed (their user is gone) and the rest stay", async () => {
  const open: ServerOptions = { port: 0 };
  const secured: ServerOptions = { port: 0, authorization: { users: [{ user: "u", password: "pw", permissions: { publish: { allow: ["only"] } } }] } };
  const srv = await startServer(open);
  const clients: RawClient[] = [];
  try {
    const anonymous = await RawClient.connected(srv.port);
    const withCreds = await rawUser(srv.port, "u", "pw");
    clients.push(anonymous, withCreds);
    srv.reload(secured);
    await anonymous.waitFor(/-ERR 'Authorization Violation'\r\n/, "the anonymous client's violation");
    await anonymous.waitClosed("the anonymous client");
    // Its credentials, ignored while none were asked, hold now: it stays, under u's permissions.
    withCreds.send("PUB other 1\r\nx\r\n");
    await withCreds.waitFor(/-ERR 'Permissions Violation for Publish to "other"'\r\n/, "u's publish permission");
    const late = await RawClient.open(srv.port);
    clients.push(late);
    assert.match((await late.waitFor(/^INFO ([^\r]*)\r\n/, "INFO"))[1], /"auth_required":true/);

    const laterAnonymous = await RawClient.open(srv.port);
    clients.push(laterAnonymous);
    srv.reload(open);
    // As nats-server: u is no user any more. It reconnects, and its credentials are ignored.
    await withCreds.waitClosed("u's connection once its user is gone");
    clients.push(await rawUser(srv.port, "u", "pw"), await RawClient.connected(srv.port));
    // One that connected while authentication was asked, and sends CONNECT now, is let in without.
    laterAnonymous.send('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n');
    await laterAnonymous.waitFor(/PONG\r\n/, "the later anonymous client let in");
  } finally {
    for (const c of clients) c.destroy();
    await srv.close();
  }
});

test("reload: a CONNECT whose password is being checked when the users change is checked again by the new ones", async () => {
  // bcrypt at cost 12 takes bcryptjs a few hundred milliseconds: the reload lands while the old users check it.
  const hash = bcrypt.hashSync("slow-pw", 12);
  // A long authorization timeout: on a loaded machine the check outlasted the default 2 s, and the timeout answered first.
  const srv = await startServer({ port: 0, authTimeout: 60_000, authorization: { users: [{ user: "slow", password: hash }, { user: "other", password: "o" }] } });
  try {
    const c = await RawClient.open(srv.port);
    try {
      c.send(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, user: "slow", pass: "slow-pw" })}\r\nPING\r\n`);
      // The server has read the CONNECT once the connection holds the credentials it is checking.
      const conn = [...srv.broker.connections.values()].at(-1) as unknown as { creds: unknown };
      for (let i = 0; conn.creds === null; i++) {
        assert.ok(i < 500, "the server never read the CONNECT");
        await new Promise((r) => setImmediate(r));
      }
      srv.reload({ port: 0, authTimeout: 60_000, authorization: { users: [{ user: "other", password: "o" }] } });
      const answer = await c.waitFor(/PONG\r\n|-ERR [^\r]*\r\n/, "the CONNECT's answer", 60_000);
      assert.equal(answer[0], "-ERR 'Authorization Violation'\r\n");
    } finally {
      c.destroy();
    }
  } finally {
    await srv.close();
  }
});

test("reload: two reloads in a row do not let a client whose password changed keep its access", async () => {
  // An outside attack: the first reload's bcrypt comparison (the new hash) was overtaken by the second reload, which
  // took the password as unchanged because the previous configuration held the same hash: the client with the old
  // password kept alice's access for good. A password is now taken as unchanged only against the one it last matched.
  const hash = bcrypt.hashSync("new", 12);
  const users = (zed: string): ServerOptions => ({ port: 0, authorization: { users: [{ user: "alice", password: hash }, { user: "zed", password: zed }] } });
  const srv = await startServer({ port: 0, authorization: { users: [{ user: "alice", password: "old" }, { user: "zed", password: "z" }] } });
  try {
    const stale = await rawUser(srv.port, "alice", "old");
    try {
      srv.reload(users("z"));
      srv.reload(users("z2"));
      await stale.waitFor(/-ERR 'Authorization Violation'\r\n/, "the stale password's violation", 20_000);
      await stale.waitClosed("the stale password's connection");
    } finally {
      stale.destroy();
    }
  } finally {
    await srv.close();
  }
});

test("reload: a changed password is checked before the connects waiting for bcrypt, so that they cannot put off its revocation", async () => {
  // A review: every bcrypt comparison waited in one queue, so a flood of connects with wrong passwords put off, by as
  // long as they took, the check that revokes a changed password; the client kept its access meanwhile.
  // Cost 13: a comparison takes bcryptjs most of a second, so the first one still runs when every CONNECT has been read.
  const hash = (pw: string): string => bcrypt.hashSync(pw, 13);
  // A minute to authenticate: on a loaded machine six comparisons at cost 13 outlast the default 2 s, and a connect closed
  // for its timeout is not one compared.
  const users = (alice: string): ServerOptions => ({ port: 0, authTimeout: 60_000, authorization: { users: [{ user: "alice", password: alice }] } });
  const srv = await startServer(users(hash("leaked")));
  const flood: RawClient[] = [];
  try {
    const alice = await rawUser(srv.port, "alice", "leaked");
    flood.push(alice);
    for (let i = 0; i < 6; i++) {
      const c = await RawClient.open(srv.port);
      c.send(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, user: "alice", pass: `wrong${i}` })}\r\nPING\r\n`);
      flood.push(c);
    }
    // Each CONNECT read before the reload: its comparison is queued (its connection holds the credentials), or done.
    const answered = (): number => flood.slice(1).filter((c) => c.text.includes("-ERR 'Authorization Violation'")).length;
    const waiting = (): number => ([...srv.broker.connections.values()] as unknown as Array<{ creds: unknown }>).filter((c) => c.creds !== null).length - 1;
    for (let i = 0; answered() + waiting() < 6; i++) {
      assert.ok(i < 100_000, "the server never read the CONNECTs");
      await new Promise((r) => setImmediate(r));
    }
    const before = answered();
    assert.ok(before <= 4, `${before} of the 6 connects were compared before the reload: too few left waiting to tell`);
    srv.reload(users(hash("rotated")));
    await alice.waitFor(/-ERR 'Authorization Violation'\r\n/, "alice's revocation", 30_000);
    const overtaken = answered() - before;
    assert.ok(overtaken <= 1, `alice was revoked after ${overtaken} more of the waiting connects were compared (at most the one running)`);
  } finally {
    for (const c of flood) c.destroy();
    await srv.close();
  }
});

test("reload: requests an allow_responses user could answer are forgotten with the permissions that opened them, as by nats-server", async () => {
  const opts = (other: string): ServerOptions => ({
    port: 0,
    authorization: { users: [{ user: "svc", password: "s", permissions: { subscribe: { allow: ["svc"] }, allowResponses: true } }, { user: "other", password: other }] },
  });
  const srv = await startServer(opts("o"));
  try {
    const svc = await rawUser(srv.port, "svc", "s");
    const caller = await rawUser(srv.port, "other", "o");
    try {
      svc.send("SUB svc 1\r\n");
      await svc.roundTrip();
      svc.consume();
      caller.send("PUB svc reply.1 1\r\nq\r\n");
      await svc.waitFor(/MSG svc 1 reply\.1 1\r\nq\r\n/, "the request");
      svc.consume();
      // Another user's password changes (and the authorization timeout, which a reload takes too).
      srv.reload({ ...opts("o2"), authTimeout: 5000 });
      assert.equal(srv.broker.options.authTimeout, 5000);
      svc.send("PUB reply.1 1\r\na\r\n");
      await svc.roundTrip();
      assert.equal(svc.consume(), `-ERR 'Permissions Violation for Publish to "reply.1"'\r\nPONG\r\n`);
    } finally {
      svc.destroy();
      caller.destroy();
    }
  } finally {
    await srv.close();
  }
});

test("reload: what is not users or permissions is still refused whole, accounts' exports included", async () => {
  const opts: ServerOptions = { port: 0, accounts: { A: { users: [{ user: "a", password: "a" }], exports: [{ stream: "x.>" }] }, B: { users: [{ user: "b", password: "b" }] } } };
  const srv = await startServer(opts);
  try {
    const a = await rawUser(srv.port, "a", "a");
    try {
      assert.throws(() => srv.reload({ ...opts, accounts: { ...opts.accounts, A: { users: [{ user: "a", password: "other" }], exports: [{ stream: "y.>" }] } } }), /config reload not supported for accounts \(other than their users\)/);
      assert.throws(() => srv.reload({ ...opts, maxPayload: 1000 }), /config reload not supported for maxPayload/);
      // Nothing changed: a's password is still "a".
      await a.roundTrip();
      (await rawUser(srv.port, "a", "a")).destroy();
    } finally {
      a.destroy();
    }
  } finally {
    await srv.close();
  }
});

test("reload over the Kafka door: narrowed permissions refuse the next produce, a removed user's client is closed and cannot come back", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nagare-kreload-"));
  const opts = (aliceAllows: string[], bob: boolean): ServerOptions => ({
    port: 0,
    storeDir: dir,
    authorization: {
      users: [
        { user: "admin", password: "admin-pw" },
        { user: "alice", password: "alice-pw", permissions: { publish: { allow: aliceAllows } } },
        ...(bob ? [{ user: "bob", password: "bob-pw" }] : []),
      ],
    },
    kafka: { port: 0 },
  });
  const srv = await startServer(opts(["orders", "audit"], true));
  const client = (username: string, password: string): InstanceType<typeof Kafka> =>
    new Kafka({ clientId: "reload", brokers: [`127.0.0.1:${srv.kafkaPort}`], logLevel: logLevel.NOTHING, sasl: { mechanism: "scram-sha-256", username, password }, retry: { retries: 0 } });
  try {
    const admin = client("admin", "admin-pw").admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "orders" }, { topic: "audit" }] });
    await admin.disconnect();
    const alice = client("alice", "alice-pw").producer();
    const bob = client("bob", "bob-pw").producer();
    await alice.connect();
    await bob.connect();
    try {
      await alice.send({ topic: "audit", messages: [{ value: "before" }] });
      await bob.send({ topic: "orders", messages: [{ value: "before" }] });
      srv.reload(opts(["orders"], false));
      await assert.rejects(alice.send({ topic: "audit", messages: [{ value: "after" }] }), (err: Error & { type?: string }) => {
        assert.equal(err.type, "TOPIC_AUTHORIZATION_FAILED", err.message);
        return true;
      });
      await alice.send({ topic: "orders", messages: [{ value: "after" }] });
      // bob's connection was closed (KafkaJS, with no retries, fails the send on it), and SCRAM finds no such user now.
      await assert.rejects(bob.send({ topic: "orders", messages: [{ value: "after" }] }), /Closed connection/);
      await assert.rejects(client("bob", "bob-pw").producer().connect(), /SASL SCRAM SHA256 authentication failed/);
    } finally {
      await alice.disconnect();
      await bob.disconnect();
    }
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
