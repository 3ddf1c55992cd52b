/**
 * TLS for NATS clients (issue 18): the official clients connect over TLS
 * after the plain INFO, with `handshake_first`, and with client
 * certificates; a client that does not speak TLS gets nothing through; a
 * configuration asking for TLS that cannot be served does not start.
 * Certificates are made here with openssl.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { connect as rawConnect } from "node:net";
import { join } from "node:path";
import { connect as connectV2 } from "nats";
import { connect as connectV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { runNagare } from "./helpers/cli.js";
import { dec, enc } from "./helpers/clients.js";
import { makePki, type Pki } from "./helpers/pki.js";

/** What a client that does not speak TLS gets: every byte the server sends until it closes (or `ms` pass). */
function plainClient(port: number, send: string, ms = 5000): Promise<{ received: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = rawConnect(port, "127.0.0.1");
    let received = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ received, closed: false });
    }, ms);
    s.on("data", (d) => {
      received += d.toString("latin1");
      if (received.includes("\r\n") && send !== "") {
        s.write(send);
        send = "";
      }
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve({ received, closed: true });
    });
  });
}

describe("TLS for NATS clients", () => {
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(() => {
    rmSync(pki.dir, { recursive: true, force: true });
  });

  describe("upgraded after INFO", () => {
    let srv: NagareServer;
    before(async () => {
      srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    });
    after(async () => {
      await srv.close();
    });

    test("nats v2 and @nats-io/transport-node v3 connect over TLS and exchange messages", async () => {
      const v2 = await connectV2({ servers: srv.url, tls: { caFile: pki.ca } });
      const v3 = await connectV3({ servers: srv.url, tls: { caFile: pki.ca } });
      try {
        assert.equal(v2.info?.tls_required, true);
        const sub = v3.subscribe("tls.x", { max: 1 });
        await v3.flush();
        v2.publish("tls.x", enc("over tls"));
        for await (const m of sub) assert.equal(dec(m.data), "over tls");
        const reply = v2.subscribe("tls.req", { callback: (_e, m) => m.respond(enc("pong")) });
        await v2.flush();
        assert.equal(dec((await v3.request("tls.req", enc("ping"), { timeout: 5000 })).data), "pong");
        reply.unsubscribe();
      } finally {
        await v2.close();
        await v3.close();
      }
    });

    test("nagare pub and sub take --tlsca; without it they say why they cannot connect", async () => {
      const nc = await connectV3({ servers: srv.url, tls: { caFile: pki.ca } });
      try {
        const sub = nc.subscribe("tls.cli", { max: 1 });
        await nc.flush();
        const ok = await runNagare(["pub", "tls.cli", "from the cli", "-s", srv.url, "--tlsca", pki.ca]);
        assert.equal(ok.code, 0, ok.stderr);
        for await (const m of sub) assert.equal(dec(m.data), "from the cli");
      } finally {
        await nc.close();
      }
      const refused = await runNagare(["pub", "tls.cli", "x", "-s", srv.url, "--timeout", "3s"]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /could not connect/);
    });

    test("a client that does not trust the server's CA is refused by its own check", async () => {
      await assert.rejects(connectV3({ servers: srv.url, tls: {}, reconnect: false, timeout: 5000 }));
    });

    test("a client speaking plain NATS after INFO gets no answer and is closed", async () => {
      const r = await plainClient(srv.port, "CONNECT {}\r\nPING\r\n");
      assert.match(r.received, /^INFO \{.*"tls_required":true/);
      assert.doesNotMatch(r.received, /PONG/);
      assert.equal(r.closed, true);
    });
  });

  test("handshake_first: the handshake comes before INFO", async () => {
    const srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, handshakeFirst: true, timeoutMs: 500 } });
    try {
      const nc = await connectV3({ servers: srv.url, tls: { caFile: pki.ca, handshakeFirst: true } });
      try {
        assert.equal(nc.info?.tls_required, true);
        await nc.flush();
      } finally {
        await nc.close();
      }
      // A plain client reads nothing in the clear, and is closed when the handshake times out.
      const plain = await plainClient(srv.port, "");
      assert.equal(plain.received, "");
      assert.equal(plain.closed, true);
    } finally {
      await srv.close();
    }
  });

  test("verify: a client certificate signed by ca_file is required", async () => {
    const srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verify: true } });
    try {
      const nc = await connectV2({ servers: srv.url, tls: { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey } });
      try {
        assert.equal(nc.info?.tls_verify, true);
        await nc.flush();
      } finally {
        await nc.close();
      }
      await assert.rejects(connectV2({ servers: srv.url, tls: { caFile: pki.ca }, reconnect: false, timeout: 5000 }).then((c) => c.flush().finally(() => c.close())));
    } finally {
      await srv.close();
    }
  });

  test("TLS that cannot be served stops the start: unreadable files, a key that is not the certificate's, incomplete flags", async () => {
    await assert.rejects(startServer({ port: 0, tls: { certFile: join(pki.dir, "missing.pem"), keyFile: pki.serverKey } }), /TLS certificate .*missing\.pem: ENOENT/);
    await assert.rejects(startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.clientKey } }), /TLS certificate .* and key .*: .*key values mismatch/);
    await assert.rejects(startServer({ port: 0, tls: { certFile: pki.serverCert } as never }), /option tls needs certFile and keyFile/);
    const flags = await runNagare(["server", "-p", "-1", "--tls", "--tlscert", pki.serverCert], { until: /Server is ready/ });
    assert.equal(flags.code, 1);
    assert.match(flags.stderr, /tls needs certFile and keyFile/);
    const conf = join(pki.dir, "tls.conf");
    writeFileSync(conf, `port: -1\ntls {\n  cert_file: "${pki.serverCert}"\n  key_file: "${join(pki.dir, "nope.key")}"\n  cipher_suites: [x]\n}\n`);
    const r = await runNagare(["server", "-c", conf], { until: /Server is ready/ });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `nagare server: ${conf}:4:3: tls.key_file: cannot read "${join(pki.dir, "nope.key")}": ENOENT\n` +
        `nagare server: ${conf}:5:3: tls.cipher_suites: choosing cipher suites is not supported yet (nagare will not start without it)\n`,
    );
  });

  test("flags: --tls with --tlscert and --tlskey serve TLS", async () => {
    const r = runNagare(["server", "-p", "-1", "--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey], { until: /Server is ready/, limitMs: 20_000 });
    const done = await r;
    assert.match(done.stderr, /Server is ready/);
  });
});
