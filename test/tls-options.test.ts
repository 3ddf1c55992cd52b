/**
 * The rest of nats-server's client TLS settings (issue 18): `auth_timeout`
 * counted from the end of the handshake (default: the TLS timeout plus a
 * second) and `timeout`. The defaults expected here were read from Debian's nats-server 2.9.10 with the same settings.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { connect as rawConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { startServer, type ServerOptions } from "../src/index.js";
import { makePki, type Pki } from "./helpers/pki.js";

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
