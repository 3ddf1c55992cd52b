/**
 * Accounts (issue 18): the same subject in two accounts never crosses; a
 * stream export/import delivers across (with a prefix); a service import
 * answers requests across accounts, once for a singleton service; what
 * cannot be served stops the start. With the official v3 client and a
 * configuration file through the CLI.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { runNagare } from "./helpers/cli.js";
import { parseConf } from "../src/server/conf-parser.js";
import { optionsFromConf } from "../src/server/conf-options.js";
import { dec, enc } from "./helpers/clients.js";
import { Account } from "../src/core/account.js";
import { wireImports } from "../src/core/accounts.js";
import { Message } from "../src/subjects/message.js";
import { Subscription } from "../src/subjects/subscription.js";

describe("accounts", () => {
  let srv: NagareServer;
  let a: NatsConnection;
  let a2: NatsConnection;
  let b: NatsConnection;
  before(async () => {
    srv = await startServer({
      port: 0,
      httpPort: 0,
      accounts: {
        A: {
          users: [
            { user: "a", password: "a" },
            { user: "a2", password: "a2" },
          ],
          exports: [{ stream: "news.>" }, { service: "svc.>" }, { stream: "private.>", accounts: ["C"] }],
        },
        B: {
          users: [{ user: "b", password: "b" }],
          imports: [
            { stream: { account: "A", subject: "news.>" }, prefix: "from_a" },
            { service: { account: "A", subject: "svc.echo" }, to: "echo" },
          ],
        },
      },
    });
    a = await connect({ servers: srv.url, user: "a", pass: "a" });
    a2 = await connect({ servers: srv.url, user: "a2", pass: "a2" });
    b = await connect({ servers: srv.url, user: "b", pass: "b" });
  });
  after(async () => {
    await a.close();
    await a2.close();
    await b.close();
    await srv.close();
  });

  test("the same subject in two accounts never crosses; users of one account share it", async () => {
    const inB: string[] = [];
    const sb = b.subscribe("shared", { callback: (_e, m) => void inB.push(dec(m.data)) });
    const sa = a2.subscribe("shared", { max: 1 });
    await b.flush();
    await a2.flush();
    a.publish("shared", enc("from A"));
    for await (const m of sa) assert.equal(dec(m.data), "from A");
    // A round trip through B's own account: had A's message crossed, it would have arrived first.
    const done = b.subscribe("shared.done", { max: 1 });
    await b.flush();
    b.publish("shared.done", enc(""));
    for await (const _ of done) break;
    assert.deepEqual(inB, []);
    sb.unsubscribe();
  });

  test("a stream import delivers the exporter's messages with the import's prefix, and only those", async () => {
    const sub = b.subscribe("from_a.news.>", { max: 1 });
    const plain = b.subscribe("news.>", { max: 1 });
    await b.flush();
    a.publish("news.sports", enc("goal"));
    for await (const m of sub) {
      assert.equal(m.subject, "from_a.news.sports");
      assert.equal(dec(m.data), "goal");
    }
    b.publish("news.local", enc("B's own"));
    for await (const m of plain) assert.equal(dec(m.data), "B's own", "B's news.> is its own subject space");
  });

  test("a service import answers B's requests from A's responder, once (singleton)", async () => {
    const responder = a.subscribe("svc.echo", {
      callback: (_e, m) => {
        m.respond(enc(`echo: ${dec(m.data)}`));
        // A second answer to a singleton request does not reach the requester.
        if (m.reply) a.publish(m.reply, enc("second"));
      },
    });
    await a.flush();
    const reply = await b.request("echo", enc("hi"), { timeout: 5000 });
    assert.equal(dec(reply.data), "echo: hi");
    // Several answers awaited on a plain inbox: only the first comes through.
    const inbox = createInbox();
    const got: string[] = [];
    const s = b.subscribe(inbox, { callback: (_e, m) => void got.push(dec(m.data)) });
    await b.flush();
    b.publish("echo", enc("again"), { reply: inbox });
    const check = await b.request("echo", enc("marker"), { timeout: 5000 });
    assert.equal(dec(check.data), "echo: marker");
    await a.flush();
    await b.flush();
    assert.deepEqual(got, ["echo: again"]);
    s.unsubscribe();
    responder.unsubscribe();
    // Not imported: A's other services are not reachable from B.
    await assert.rejects(b.request("svc.other", enc("x"), { timeout: 1000 }));
  });

  test("/connz shows each connection's account; /accountz lists the accounts", async () => {
    const res = await fetch(`http://127.0.0.1:${srv.httpPort}/connz?auth=true`);
    const body = (await res.json()) as { connections: Array<{ account?: string; authorized_user?: string }> };
    const byUser = new Map(body.connections.map((c) => [c.authorized_user, c.account]));
    assert.equal(byUser.get("a"), "A");
    assert.equal(a.info?.auth_required, true, "account users need credentials, and INFO says so");
    assert.equal(byUser.get("b"), "B");
    const list = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/accountz`)).json()) as { accounts: string[]; system_account: string };
    // As nats-server: the system account `$SYS` is made when none is configured.
    assert.deepEqual([...list.accounts].sort(), ["$G", "$SYS", "A", "B"]);
    assert.equal(list.system_account, "$SYS");
    const detail = (await (await fetch(`http://127.0.0.1:${srv.httpPort}/accountz?acc=A`)).json()) as { account_detail: { account_name: string; client_connections: number } };
    assert.equal(detail.account_detail.account_name, "A");
    assert.equal(detail.account_detail.client_connections, 2);
    assert.equal((await fetch(`http://127.0.0.1:${srv.httpPort}/accountz?acc=NOPE`)).status, 400);
  });
});

describe("accounts configuration", () => {
  test("a file with accounts, exports and imports starts; what cannot be served does not", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nagare-accounts-"));
    try {
      const good = join(dir, "good.conf");
      writeFileSync(
        good,
        `port: -1
accounts {
  A: {
    users: [ { user: a, password: a } ]
    exports: [ { stream: "news.>" }, { service: "svc.>", response_type: stream } ]
  }
  B: {
    users: [ { user: b, password: b } ]
    imports: [
      { stream: { account: A, subject: "news.>" }, prefix: from_a }
      { service: { account: A, subject: "svc.echo" }, to: echo }
    ]
  }
}
`,
      );
      const ok = await runNagare(["server", "-c", good, "-t"]);
      assert.equal(ok.code, 0, ok.stderr);
      const bad = join(dir, "bad.conf");
      writeFileSync(
        bad,
        `port: -1
accounts {
  A: { users: [ { user: a, password: a } ], mappings: { "a.>": "b.>" } }
  B: { users: [ { user: b, password: b } ], imports: [ { stream: { account: A, subject: "secret.>" } } ] }
}
`,
      );
      const r = await runNagare(["server", "-c", bad], { until: /Server is ready/ });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /bad\.conf:3:\d+: accounts\.A\.mappings: subject mappings are not supported yet/);
      const unexported = join(dir, "unexported.conf");
      writeFileSync(
        unexported,
        `port: -1
accounts {
  A: { users: [ { user: a, password: a } ] }
  B: { users: [ { user: b, password: b } ], imports: [ { stream: { account: A, subject: "secret.>" } } ] }
}
`,
      );
      const u = await runNagare(["server", "-c", unexported], { until: /Server is ready/ });
      assert.equal(u.code, 1);
      assert.match(u.stderr, /account A exports no stream secret\.> to B/);
      // An export to an account that does not exist stops the start, with its place, as nats-server's (an outside test
      // found it taken).
      const nope = `accounts {\n  A: { exports: [\n    { stream: "x.>", accounts: [B, NOPE] }\n    { service: "y", accounts: [GONE] }\n  ] }\n  B: {}\n}\n`;
      assert.throws(() => optionsFromConf(parseConf(nope)), /line 3, column \d+: accounts\.A\.exports\[0\]\.accounts: "NOPE" account not defined for stream export/);
      assert.throws(() => optionsFromConf(parseConf(nope.replace(", NOPE", ""))), /line 4, column \d+: accounts\.A\.exports\[1\]\.accounts: "GONE" account not defined for service export/);
      optionsFromConf(parseConf(nope.replace(", NOPE", "").replace("GONE", "B")));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("a wildcard service import and the cluster's own subjects", () => {
  test("a request mapped onto a $NG. subject of the exporter is dropped: the cluster's services (served from routes) stay out of an importer's reach", () => {
    const config = {
      A: { exports: [{ service: ">" }] },
      B: { imports: [{ service: { account: "A", subject: ">" }, to: "svc.>" }] },
    };
    const a = new Account("A");
    const b = new Account("B");
    const stop = wireImports(config, new Map([["A", a], ["B", b]]));
    try {
      const seen: string[] = [];
      // As a route's interest in the exporter: it takes the cluster's internal subjects too.
      const internal = { echo: true, clusterInternal: true, deliver: (_s: Subscription, m: Message) => void seen.push(m.subject) };
      a.subscribe(new Subscription(internal as never, ">", null));
      b.route(Message.from("svc.orders.new", "_INBOX.1", Buffer.from("x")), null);
      b.route(Message.from("svc.$NG.JS.b.$NG.SVC.kafka.group-commit", "_INBOX.2", Buffer.from("{}")), null);
      assert.deepEqual(seen, ["orders.new"]);
      // Nor is a response sent back to a requester's reply subject there.
      const inB: string[] = [];
      b.subscribe(new Subscription({ ...internal, deliver: (_s: Subscription, m: Message) => void inB.push(m.subject) } as never, ">", null));
      const request = { echo: true, deliver: (_s: Subscription, m: Message) => a.route(Message.from(m.reply, "", Buffer.from("answer")), null) };
      a.subscribe(new Subscription(request as never, "ask", null));
      b.route(Message.from("svc.ask", "$NG.JS.a.$NG.SVC.kafka.txn-offsets", Buffer.from("{}")), null);
      assert.equal(inB.filter((s) => s.startsWith("$NG.")).length, 0, inB.join(", "));
    } finally {
      stop();
    }
  });
});

describe("the cluster's own subjects leave a node only as the cluster's requests", () => {
  test("a message on $NG. made by anything but the cluster's code is neither delivered nor sent to another node; answers and what came from a peer are", () => {
    const account = new Account("A");
    const forwarded: string[] = [];
    account.remote = { interest: () => {}, forward: (_a, m) => (forwarded.push(m.subject), 1), hasInterest: () => true, hasDeliveryInterest: () => true };
    const seen: string[] = [];
    account.subscribe(new Subscription({ echo: true, clusterInternal: true, deliver: (_s: Subscription, m: Message) => void seen.push(m.subject) } as never, "$NG.>", null));
    // What a consumer's deliver subject, a republish or an answer to a client's reply subject would make.
    assert.equal(account.route(Message.from("$NG.JS.n2.$NG.APPEND.orders.0", "", Buffer.from("{}")), null), 0);
    assert.deepEqual([seen, forwarded], [[], []]);
    const request = Message.from("$NG.JS.n2.$NG.REPL.orders.0", "$NG.R.n1.7-abc", Buffer.from("{}"));
    request.clusterMade = true;
    assert.equal(account.route(request, null), 2);
    const answer = Message.from("$NG.R.n2.9-def", "", Buffer.from("{}"));
    assert.equal(account.route(answer, null), 2);
    // One from a peer (its node let it out) reaches the cluster's services here, and goes no further.
    assert.equal(account.route(Message.from("$NG.JS.n1.$NG.APPEND.orders.0", "", Buffer.from("{}")), null, { allows: () => true }), 1);
    assert.deepEqual(forwarded, ["$NG.JS.n2.$NG.REPL.orders.0", "$NG.R.n2.9-def"]);
    assert.deepEqual(seen, ["$NG.JS.n2.$NG.REPL.orders.0", "$NG.R.n2.9-def", "$NG.JS.n1.$NG.APPEND.orders.0"]);
  });
});
