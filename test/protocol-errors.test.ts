/**
 * Bad input on the NATS door: each case gets the -ERR nats-server sends and,
 * where nats-server closes, a close, while a bystander on the same server
 * keeps working. Raw sockets, because official clients won't send garbage.
 */

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { RawClient } from "./helpers/raw.js";
import { dec, enc, waitUntil, clientSubscriptions } from "./helpers/clients.js";

describe("NATS protocol errors", () => {
  let srv: NagareServer;
  const raws: RawClient[] = [];
  const raw = async (connected = true): Promise<RawClient> => {
    const c = connected ? await RawClient.connected(srv.port, '{"verbose":false,"pedantic":false,"headers":true}') : await RawClient.open(srv.port);
    raws.push(c);
    return c;
  };

  before(async () => {
    srv = await startServer({ port: 0, maxPayload: 4096, maxControlLine: 1024, authTimeout: 300 });
  });
  afterEach(async () => {
    for (const r of raws.splice(0)) r.destroy();
    // The broker must be left serving: a real client still round-trips.
    const nc = await connect({ servers: srv.url });
    try {
      const got: string[] = [];
      nc.subscribe("bystander", { callback: (_e, m) => {
          got.push(dec(m.data));
        } });
      nc.publish("bystander", enc("still here"));
      await nc.flush();
      await waitUntil(() => got.length === 1, "bystander message");
      assert.deepEqual(got, ["still here"]);
    } finally {
      await nc.close();
    }
  });
  after(async () => {
    await srv.close();
  });

  test("garbage bytes: Unknown Protocol Operation, then close", async () => {
    const c = await raw();
    c.send(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a]));
    await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
    await c.waitClosed("garbage");
  });

  test("an unknown verb: Unknown Protocol Operation, then close", async () => {
    const c = await raw();
    c.send("FROB foo bar\r\n");
    await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
    await c.waitClosed("unknown verb");
  });

  test("HPUB from a client that did not announce headers in its CONNECT: Unknown Protocol Operation, then close, nothing delivered", async () => {
    // nats-server refuses it (ErrMsgHeadersNotSupported, a parse error); nagare took it (an outside test).
    const nc = await connect({ servers: srv.url });
    try {
      const got: string[] = [];
      nc.subscribe("hdr.none", { callback: (_e, m) => void got.push(m.string()) });
      await nc.flush();
      const c = await RawClient.connected(srv.port, '{"verbose":false,"pedantic":false}');
      raws.push(c);
      const block = "NATS/1.0\r\na: 1\r\n\r\n";
      c.send(`HPUB hdr.none ${block.length} ${block.length + 2}\r\n${block}hi\r\n`);
      await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
      await c.waitClosed("HPUB without headers");
      // The same from a client that did announce them is delivered.
      const ok = await raw();
      ok.send(`HPUB hdr.none ${block.length} ${block.length + 2}\r\n${block}ok\r\nPING\r\n`);
      await ok.waitFor(/PONG\r\n/, "PONG");
      await nc.flush();
      await waitUntil(() => got.length === 1, "the announced client's message");
      assert.deepEqual(got, ["ok"]);
    } finally {
      await nc.close();
    }
  });

  test("a verb-looking prefix of a real verb is still unknown", async () => {
    const c = await raw();
    c.send("PUBLISH foo 0\r\n\r\n");
    await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
    await c.waitClosed("PUBLISH");
  });

  test("a control line over the limit is refused before its end arrives", async () => {
    const c = await raw();
    // No CRLF: the server must not buffer without bound waiting for one.
    c.send("SUB " + "a".repeat(2000));
    await c.waitFor(/-ERR 'maximum control line exceeded/, "-ERR");
    await c.waitClosed("control line");
  });

  test("a payload shorter than its declared size: the parser loses step and says so", async () => {
    const c = await raw();
    const sub = await raw();
    sub.send("SUB lie 1\r\nPING\r\n");
    await sub.waitFor(/PONG\r\n/, "PONG");
    sub.consume();
    c.send("PUB lie 3\r\nhello\r\n");
    await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
    await c.waitClosed("lying size");
    // The truncated message must not have been delivered as if it were whole.
    await sub.roundTrip();
    assert.doesNotMatch(sub.text, /MSG lie/);
  });

  test("a payload arriving in pieces is held until complete, even when it looks like a command", async () => {
    const c = await raw();
    c.send("SUB more 1\r\nPUB more 10\r\nPING\r\n");
    c.send("abcd\r\nPING\r\n");
    await c.waitFor(/PONG\r\n/, "PONG");
    assert.equal(c.text, "MSG more 1 10\r\nPING\r\nabcd\r\nPONG\r\n");
  });

  test("a size that is not a number: Unknown Protocol Operation", async () => {
    const c = await raw();
    c.send("PUB foo twelve\r\n");
    await c.waitFor(/-ERR 'Unknown Protocol Operation'\r\n/, "-ERR");
    await c.waitClosed("bad size");
  });

  test("invalid subjects are refused, and the connection stays usable", async () => {
    const c = await raw();
    for (const bad of ["foo..bar", ".foo", "foo.", "foo.>.bar"]) {
      c.consume();
      c.send(`SUB ${bad} 1\r\n`);
      await c.waitFor(/-ERR 'Invalid Subject'\r\n/, `-ERR for SUB ${bad}`);
    }
    for (const bad of ["foo..bar", "foo.>.bar", ".x"]) {
      c.consume();
      c.send(`PUB ${bad} 2\r\nhi\r\n`);
      await c.waitFor(/-ERR 'Invalid Publish Subject'\r\n/, `-ERR for PUB ${bad}`);
    }
    await c.roundTrip();
    assert.equal(c.isClosed, false);
    assert.equal(clientSubscriptions(srv.broker.globalAccount), 0);
  });

  test("wildcard tokens in a published subject: refused only in pedantic mode, as nats-server does", async () => {
    const pedantic = await RawClient.connected(srv.port, '{"verbose":false,"pedantic":true}');
    raws.push(pedantic);
    for (const bad of ["foo.*", "foo.>", ">"]) {
      pedantic.consume();
      pedantic.send(`PUB ${bad} 2\r\nhi\r\n`);
      await pedantic.waitFor(/-ERR 'Invalid Publish Subject'\r\n/, `-ERR for PUB ${bad}`);
    }
    const lax = await raw();
    lax.send("SUB api.> 1\r\nPUB api.create.orders.> 2\r\nhi\r\n");
    await lax.waitFor(/MSG api\.create\.orders\.> 1 2\r\nhi\r\n/, "delivery of a subject ending in >");
    assert.doesNotMatch(lax.text, /-ERR/);
    // A subject accepted again and again is checked once; a new CONNECT turning pedantic on checks it anew.
    lax.consume();
    lax.send('PUB api.create.orders.> 2\r\nhi\r\nCONNECT {"verbose":false,"pedantic":true}\r\nPUB api.create.orders.> 2\r\nhi\r\nPING\r\n');
    await lax.waitFor(/PONG\r\n/, "PONG");
    assert.equal(lax.text.match(/MSG api\.create\.orders\.> 1 2\r\nhi\r\n/g)?.length, 1, lax.text);
    assert.match(lax.text, /-ERR 'Invalid Publish Subject'\r\n/);
  });

  test("a payload over max_payload: Maximum Payload Violation, then close", async () => {
    const c = await raw();
    c.send("PUB big 5000\r\n");
    await c.waitFor(/-ERR 'Maximum Payload Violation'\r\n/, "-ERR");
    await c.waitClosed("max payload");
  });

  test("HPUB whose header size exceeds the total size: Unknown Protocol Operation", async () => {
    const c = await raw();
    c.send("HPUB foo 20 10\r\n");
    await c.waitFor(/-ERR /, "-ERR");
    await c.waitClosed("bad HPUB sizes");
  });

  test("a connection that never sends CONNECT: Authentication Timeout, then close", async () => {
    const c = await raw(false);
    await c.waitFor(/-ERR 'Authentication Timeout'\r\n/, "-ERR", 3000);
    await c.waitClosed("auth timeout");
  });

  test("CONNECT that is not JSON: refused and closed", async () => {
    const c = await raw(false);
    c.send("CONNECT {nope\r\n");
    await c.waitFor(/-ERR /, "-ERR");
    await c.waitClosed("bad CONNECT");
  });

  test("commands after a fatal error in the same read are not executed", async () => {
    const c = await raw(false);
    c.send('CONNECT {"protocol":5}\r\nSUB after.fatal 1\r\nPUB after.fatal 1\r\nx\r\n');
    await c.waitFor(/-ERR 'invalid client protocol'\r\n/, "-ERR");
    await c.waitClosed("bad protocol");
    assert.doesNotMatch(c.text, /MSG/);
    assert.equal(clientSubscriptions(srv.broker.globalAccount), 0);
  });

  test("thousands of subscriptions on one connection are served and released on close", async () => {
    const c = await raw();
    const n = 5000;
    let batch = "";
    for (let i = 0; i < n; i++) batch += `SUB many.${i} ${i}\r\n`;
    c.send(batch);
    await c.roundTrip();
    assert.equal(clientSubscriptions(srv.broker.globalAccount), n);
    c.consume();
    c.send("PUB many.4321 2\r\nok\r\nPING\r\n");
    await c.waitFor(/MSG many\.4321 4321 2\r\nok\r\nPONG\r\n/, "the one matching message");
    c.destroy();
    await waitUntil(() => clientSubscriptions(srv.broker.globalAccount) === 0, "subscriptions removed on close");
  });

  test("pipelined commands written a byte at a time parse as if written at once", async () => {
    const c = await raw();
    const script = "SUB pipe 9\r\nPUB pipe 5\r\nhello\r\nHPUB pipe 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nabc\r\nPING\r\n";
    for (const ch of script) c.send(ch);
    await c.waitFor(/PONG\r\n/, "PONG");
    assert.equal(c.text, "MSG pipe 9 5\r\nhello\r\nHMSG pipe 9 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nabc\r\nPONG\r\n");
  });
});

describe("NATS connection limits", () => {
  test("max_connections: the connection past the limit gets -ERR and a close", async () => {
    const srv = await startServer({ port: 0, maxConnections: 2 });
    const ok: RawClient[] = [];
    try {
      ok.push(await RawClient.connected(srv.port), await RawClient.connected(srv.port));
      const extra = await RawClient.open(srv.port);
      ok.push(extra);
      await extra.waitFor(/-ERR 'maximum connections exceeded'\r\n/, "-ERR");
      await extra.waitClosed("over max connections");
      await ok[0].roundTrip();
    } finally {
      for (const c of ok) c.destroy();
      await srv.close();
    }
  });

  test("max_subscriptions: the subscription past the limit is refused, the connection kept", async () => {
    const srv = await startServer({ port: 0, maxSubscriptions: 100 });
    const c = await RawClient.connected(srv.port);
    try {
      let batch = "";
      for (let i = 0; i < 100; i++) batch += `SUB s.${i} ${i}\r\n`;
      c.send(batch + "SUB s.100 100\r\nPING\r\n");
      await c.waitFor(/-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n/, "-ERR then PONG");
      assert.equal(clientSubscriptions(srv.broker.globalAccount), 100);
      await c.roundTrip();
    } finally {
      c.destroy();
      await srv.close();
    }
  });

  test("a client that stops answering PINGs is closed as stale", async () => {
    const srv = await startServer({ port: 0, pingInterval: 100, maxPingsOut: 2 });
    const c = await RawClient.connected(srv.port);
    try {
      await c.waitFor(/PING\r\n[\s\S]*PING\r\n/, "two PINGs");
      await c.waitFor(/-ERR 'Stale Connection'\r\n/, "-ERR");
      await c.waitClosed("stale");
      assert.equal(srv.broker.stats.staleConnections, 1);
    } finally {
      c.destroy();
      await srv.close();
    }
  });

  test("a client that answers PINGs stays", async () => {
    const srv = await startServer({ port: 0, pingInterval: 100, maxPingsOut: 2 });
    const c = await RawClient.connected(srv.port);
    try {
      for (let i = 0; i < 5; i++) {
        await c.waitFor(/PING\r\n/, `PING ${i}`);
        c.consume();
        c.send("PONG\r\n");
      }
      assert.equal(c.isClosed, false);
      assert.equal(srv.broker.stats.staleConnections, 0);
    } finally {
      c.destroy();
      await srv.close();
    }
  });

  test("lame duck: clients are told, new ones refused, all closed within the duration", async () => {
    const srv = await startServer({ port: 0, lameDuckDuration: 600, lameDuckGracePeriod: 200 });
    const a = await RawClient.connected(srv.port);
    const b = await RawClient.connected(srv.port);
    try {
      const done = srv.lameDuck();
      await a.waitFor(/INFO \{[^\r]*"ldm":true[^\r]*\}\r\n/, "INFO with ldm");
      await b.waitFor(/INFO \{[^\r]*"ldm":true[^\r]*\}\r\n/, "INFO with ldm");
      await assert.rejects(RawClient.open(srv.port));
      await Promise.all([a.waitClosed("lame duck a", 3000), b.waitClosed("lame duck b", 3000)]);
      await done;
    } finally {
      a.destroy();
      b.destroy();
      await srv.close();
    }
  });

  test("the authorization timeout is kept to the millisecond scale, not the upkeep tick's second", async () => {
    // nats-server closes a client that sends no CONNECT when `authorization { timeout }` runs out; with 0.1 s
    // nagare closed it at its next upkeep tick (once a second with the default ping interval): up to 1.1 s.
    const srv = await startServer({ port: 0, authTimeout: 100 });
    const c = await RawClient.open(srv.port);
    try {
      const t0 = Date.now();
      await c.waitFor(/-ERR 'Authentication Timeout'\r\n/, "-ERR", 3000);
      const ms = Date.now() - t0;
      assert.ok(ms < 600, `closed ${ms} ms after INFO, with a 100 ms authorization timeout`);
    } finally {
      c.destroy();
      await srv.close();
    }
  });
});
