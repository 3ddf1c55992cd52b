/**
 * The rest of nats-server's client TLS settings (issue 18): `allow_non_tls`
 * (TLS offered, not required), `auth_timeout` counted from the end of the
 * handshake (default: the TLS timeout plus a second), `timeout`,
 * `cipher_suites` and `curve_preferences` by nats-server's names, and what
 * /connz and /varz say about TLS. The INFO, /varz and defaults expected
 * here were read from Debian's nats-server 2.9.10 with the same settings.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { connect as rawConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
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

/** A raw NATS client: TCP, INFO in the clear (returned), then TLS with `tls` options; resolves once the handshake is done. */
async function rawTlsClient(port: number, tls: ConnectionOptions): Promise<{ info: Record<string, unknown>; secure: TLSSocket }> {
  const tcp = rawConnect(port, "127.0.0.1");
  tcp.on("error", () => {});
  const line = await readUntil(tcp, /\r\n/);
  const info = JSON.parse(line.slice(5, line.indexOf("\r\n"))) as Record<string, unknown>;
  const secure = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ socket: tcp, checkServerIdentity: () => undefined, ...tls }, () => resolve(s));
    s.once("error", reject);
  });
  return { info, secure };
}

const closed = (s: Socket): Promise<void> => new Promise((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve())));

async function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as Record<string, unknown>;
}

type Conns = Array<Record<string, unknown>>;

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
        // Before the client has said which it speaks, /connz shows it without TLS fields.
        assert.deepEqual(((await getJson(srv.httpPort!, "/connz")).connections as Conns).map((c) => c.tls_version), [undefined]);
        tcp.write('CONNECT {"verbose":true}\r\nPING\r\n');
        assert.equal(await readUntil(tcp, /PONG\r\n/), "+OK\r\nPONG\r\n");
      } finally {
        tcp.destroy();
      }
      const varz = await getJson(srv.httpPort!, "/varz");
      assert.equal(varz.tls_required, undefined);
      assert.equal(varz.tls_verify, true);
    });

    test("nats v2 and v3 with tls: null stay plain, with TLS options they upgrade; both reach each other; /connz tells them apart", async () => {
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
        const conns = (await getJson(srv.httpPort!, "/connz")).connections as Conns;
        assert.deepEqual(conns.map((c) => c.tls_version ?? "plain").sort(), ["1.3", "plain", "plain"]);
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

  describe("cipher_suites and curve_preferences", () => {
    let srv: NagareServer;
    before(async () => {
      srv = await startServer({
        port: 0,
        httpPort: 0,
        tls: { certFile: pki.serverCert, keyFile: pki.serverKey, cipherSuites: ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"], curvePreferences: ["CurveP384", "CurveP521"] },
      });
    });
    after(async () => {
      await srv.close();
    });

    const client = (o: ConnectionOptions): Promise<{ info: Record<string, unknown>; secure: TLSSocket }> => rawTlsClient(srv.port, { ca: readFileSync(pki.ca), ...o });

    test("TLS 1.2 gets only the suite named; /connz names it and the version as nats-server does", async () => {
      const { secure } = await client({ maxVersion: "TLSv1.2" });
      try {
        assert.equal(secure.getCipher().name, "ECDHE-ECDSA-CHACHA20-POLY1305");
        secure.write("CONNECT {}\r\nPING\r\n");
        await readUntil(secure, /PONG\r\n/);
        const conns = (await getJson(srv.httpPort!, "/connz")).connections as Conns;
        assert.deepEqual(
          conns.map((c) => [c.tls_version, c.tls_cipher_suite]),
          [["1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"]],
        );
        assert.equal(conns[0].tls_peer_certs, undefined, "peer certificates only with auth");
      } finally {
        secure.destroy();
      }
      await assert.rejects(client({ maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" }));
    });

    test("TLS 1.3 keeps its suites (Go cannot restrict them); the curves named are the only ones", async () => {
      const { secure } = await client({ ecdhCurve: "P-521" });
      assert.equal(secure.getProtocol(), "TLSv1.3");
      secure.destroy();
      await assert.rejects(client({ ecdhCurve: "X25519" }));
    });

    test("by default TLS 1.2 offers nats-server's six ECDHE AEAD suites: no CBC, no RSA key exchange", async () => {
      const s = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
      try {
        const ok = await rawTlsClient(s.port, { ca: readFileSync(pki.ca), maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384" });
        assert.equal(ok.secure.getCipher().name, "ECDHE-ECDSA-AES256-GCM-SHA384");
        ok.secure.destroy();
        await assert.rejects(rawTlsClient(s.port, { ca: readFileSync(pki.ca), maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-SHA256" }));
      } finally {
        await s.close();
      }
    });

    test("names nagare cannot serve stop the start: at their key's line and column in a file", async () => {
      const conf = (body: string): string => `tls {\n  cert_file: "${pki.serverCert}"\n  key_file: "${pki.serverKey}"\n${body}}\n`;
      const problem = (text: string): string => {
        try {
          optionsFromConf(parseConf(text));
        } catch (err) {
          return (err as Error).message;
        }
        return "accepted";
      };
      assert.equal(problem(conf("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_BOGUS]\n")), "line 4, column 3: tls.cipher_suites: unrecognized cipher TLS_BOGUS");
      assert.equal(problem(conf("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n")), "line 4, column 3: tls.cipher_suites: cipher TLS_RSA_WITH_RC4_128_SHA is not available in Node's OpenSSL");
      assert.equal(problem(conf("  cipher_suites: []\n")), "line 4, column 3: tls.cipher_suites: cannot be empty");
      assert.equal(problem(conf("  curve_preferences: [CurveP256, P256]\n")), "line 4, column 3: tls.curve_preferences: unrecognized curve preference P256");
      const o = optionsFromConf(parseConf(conf("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  curve_preferences: X25519\n")));
      assert.deepEqual([o.tls?.cipherSuites, o.tls?.curvePreferences], [["TLS_AES_128_GCM_SHA256"], ["X25519"]]);
      await assert.rejects(startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, cipherSuites: ["RC4-SHA"] } }), /option tls\.cipherSuites: unrecognized cipher RC4-SHA/);
      await assert.rejects(startServer({ port: 0, kafka: { port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, curvePreferences: [] } } }), /option kafka\.tls\.curvePreferences must be a non-empty array/);
    });

    test("only TLS 1.3 suites named: TLS 1.2 is refused, as Go has no TLS 1.2 suite left", async () => {
      const s = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, cipherSuites: ["TLS_AES_128_GCM_SHA256"] } });
      try {
        const { secure } = await rawTlsClient(s.port, { ca: readFileSync(pki.ca) });
        assert.equal(secure.getCipher().name, "TLS_AES_128_GCM_SHA256");
        secure.destroy();
        await assert.rejects(rawTlsClient(s.port, { ca: readFileSync(pki.ca), maxVersion: "TLSv1.2" }));
      } finally {
        await s.close();
      }
    });
  });
});
