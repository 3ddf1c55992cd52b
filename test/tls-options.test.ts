/**
 * The rest of nats-server's client TLS settings (issue 18): `allow_non_tls`
 * (TLS offered, not required), `auth_timeout` counted from the end of the
 * handshake (default: the TLS timeout plus a second), `timeout`, and what
 * /varz says about TLS. The INFO, /varz and defaults expected
 * here were read from Debian's nats-server 2.9.10 with the same settings.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { connect as rawConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { connect as connectV2 } from "nats";
import { connect as connectV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer, type ServerOptions } from "../src/index.js";
import { parseConf } from "../src/server/conf-parser.js";
import { optionsFromConf } from "../src/server/conf-options.js";
import { clientCertificate, makePki, type Pki } from "./helpers/pki.js";
import { dec, enc } from "./helpers/clients.js";

/** Reads from `s` until `pattern` matches what arrived (or the socket ends, or `ms` pass): all that arrived. */
function readUntil(s: Socket, pattern: RegExp, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    const done = (err?: Error): void => {
      clearTimeout(timer);
      s.off("data", onData);
      s.off("close", onClose);
      if (err) reject(err);
      else resolve(got);
    };
    const onData = (d: Buffer): void => {
      got += d.toString("latin1");
      if (pattern.test(got)) done();
    };
    const onClose = (): void => done(pattern.test(got) ? undefined : new Error(`closed before ${pattern}: ${JSON.stringify(got)}`));
    const timer = setTimeout(() => done(new Error(`no ${pattern} within ${ms} ms: ${JSON.stringify(got)}`)), ms);
    s.on("data", onData);
    s.on("close", onClose);
  });
}

const closed = (s: Socket): Promise<void> => new Promise((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve())));

async function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as Record<string, unknown>;
}

describe("client TLS settings", () => {
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  describe("allow_non_tls", () => {
    let srv: NagareServer;
    before(async () => {
      srv = await startServer({ port: 0, httpPort: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verify: true, allowNonTls: true } });
    });
    after(async () => {
      await srv.close();
    });

    test("INFO offers TLS (tls_available) without requiring it, as nats-server; a plain client speaks NATS in the clear, without a certificate", async () => {
      const tcp = rawConnect(srv.port, "127.0.0.1");
      try {
        const info = JSON.parse((await readUntil(tcp, /\r\n/)).slice(5)) as Record<string, unknown>;
        assert.equal(info.tls_available, true);
        assert.equal(info.tls_verify, true);
        assert.equal(info.tls_required, undefined);
        tcp.write('CONNECT {"verbose":true}\r\nPING\r\n');
        assert.equal(await readUntil(tcp, /PONG\r\n/), "+OK\r\nPONG\r\n");
      } finally {
        tcp.destroy();
      }
      const varz = await getJson(srv.httpPort!, "/varz");
      assert.equal(varz.tls_required, undefined);
      assert.equal(varz.tls_verify, true);
    });

    test("nats v2 and v3 with tls: null stay plain, with TLS options they upgrade; both reach each other", async () => {
      const plainV2 = await connectV2({ servers: srv.url, tls: null });
      const plainV3 = await connectV3({ servers: srv.url, tls: null });
      const secure = await connectV2({ servers: srv.url, tls: { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey } });
      try {
        const sub = plainV3.subscribe("mixed", { max: 2 });
        await plainV3.flush();
        secure.publish("mixed", enc("from tls"));
        plainV2.publish("mixed", enc("from plain"));
        const got: string[] = [];
        for await (const m of sub) got.push(dec(m.data));
        assert.deepEqual(got.sort(), ["from plain", "from tls"]);
      } finally {
        await plainV2.close();
        await plainV3.close();
        await secure.close();
      }
    });

    test("with verify_and_map a plain client has no certificate to map: Authorization Violation", async () => {
      const mapped = clientCertificate(pki, "nontls-user", "/O=nagare/CN=app");
      const s = await startServer({
        port: 0,
        tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verifyAndMap: true, allowNonTls: true },
        authorization: { users: [{ user: "CN=app,O=nagare" }] },
      });
      try {
        await assert.rejects(connectV2({ servers: s.url, tls: null, reconnect: false }), /Authorization Violation/);
        const nc = await connectV3({ servers: s.url, tls: { caFile: pki.ca, certFile: mapped.cert, keyFile: mapped.key } });
        await nc.flush();
        await nc.close();
      } finally {
        await s.close();
      }
    });

    test("configuration: a top-level key beside the tls block; without one, or with handshake_first, it stops the start", () => {
      const tlsBlock = `tls {\n  cert_file: "${pki.serverCert}"\n  key_file: "${pki.serverKey}"\n}\n`;
      assert.equal(optionsFromConf(parseConf(`allow_non_tls: true\n${tlsBlock}`)).tls?.allowNonTls, true);
      assert.throws(() => optionsFromConf(parseConf(`port: 4222\nallow_non_tls: true\n`)), /^ConfError: line 2, column 1: allow_non_tls: needs a tls block/);
      assert.throws(
        () => optionsFromConf(parseConf(`allow_non_tls: true\n${tlsBlock.replace("}", "  handshake_first: true\n}")}`)),
        /line 1, column 1: allow_non_tls: cannot be used with tls.handshake_first/,
      );
      return assert.rejects(startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, allowNonTls: true, handshakeFirst: true } }), /allowNonTls cannot be used with handshakeFirst/);
    });
  });

  describe("timeouts", () => {
    test("auth_timeout defaults to the TLS timeout plus one second, as nats-server's /varz shows", async () => {
      const tls = { certFile: pki.serverCert, keyFile: pki.serverKey };
      const expect: Array<[ServerOptions, number]> = [
        [{}, 2],
        [{ tls }, 3],
        [{ tls: { ...tls, timeoutMs: 500 } }, 1.5],
        [{ tls, authTimeout: 700 }, 0.7],
      ];
      for (const [o, seconds] of expect) {
        const srv = await startServer({ port: 0, httpPort: 0, ...o });
        try {
          assert.equal((await getJson(srv.httpPort!, "/varz")).auth_timeout, seconds);
        } finally {
          await srv.close();
        }
      }
    });

    test("the CONNECT deadline starts when the handshake ends: a slow handshake is not cut short, a silent client after it is", async () => {
      const srv = await startServer({ port: 0, authTimeout: 600, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, timeoutMs: 10_000 }, authorization: { users: [{ user: "u", password: "p" }] } });
      try {
        // The client reads INFO and waits past auth_timeout before its handshake (a slow client, not a synchronisation).
        const tcp = rawConnect(srv.port, "127.0.0.1");
        tcp.on("error", () => {});
        await readUntil(tcp, /\r\n/);
        await new Promise((r) => setTimeout(r, 1500));
        const secure = await new Promise<TLSSocket>((resolve, reject) => {
          const s = tlsConnect({ socket: tcp, ca: readFileSync(pki.ca), checkServerIdentity: () => undefined }, () => resolve(s));
          s.once("error", reject);
        });
        const handshaken = Date.now();
        assert.equal(await readUntil(secure, /\r\n/), "-ERR 'Authentication Timeout'\r\n");
        assert.ok(Date.now() - handshaken >= 590, `closed ${Date.now() - handshaken} ms after the handshake, before auth_timeout`);
        await closed(secure);
      } finally {
        await srv.close();
      }
    });

    test("tls timeout: a client that never starts its handshake is closed, not before the timeout", async () => {
      const srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, timeoutMs: 400 } });
      try {
        const started = Date.now();
        const tcp = rawConnect(srv.port, "127.0.0.1");
        tcp.on("error", () => {});
        assert.match(await readUntil(tcp, /\r\n/), /^INFO /);
        await closed(tcp);
        assert.ok(Date.now() - started >= 390, `closed after ${Date.now() - started} ms`);
      } finally {
        await srv.close();
      }
    });
  });


});
