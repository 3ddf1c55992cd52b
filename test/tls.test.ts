/**
 * TLS for NATS clients (issue 18): the official clients connect over TLS
 * after the plain INFO, with `handshake_first`, and with client
 * certificates; a client that does not speak TLS gets nothing through; a
 * configuration asking for TLS that cannot be served does not start.
 * Certificates are made here with openssl.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { request as httpsRequest } from "node:https";
import { connect as rawConnect } from "node:net";
import { join } from "node:path";
import { connect as connectV2 } from "nats";
import { connect as connectV3 } from "@nats-io/transport-node";
import { startServer, type NagareServer } from "../src/index.js";
import { MAIN, runNagare } from "./helpers/cli.js";
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

/** A GET over HTTPS to 127.0.0.1 that trusts only `ca` (and presents no client certificate). */
function httpsGet(port: number, path: string, ca: string): Promise<{ status: number; body: string; peerCert: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: "127.0.0.1", port, path, ca: readFileSync(ca), agent: false }, (res) => {
      const peerCert = (res.socket as import("node:tls").TLSSocket).getPeerCertificate().fingerprint256;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, peerCert }));
    });
    req.on("error", reject);
    req.end();
  });
}

const fingerprint = (certFile: string): string => new X509Certificate(readFileSync(certFile)).fingerprint256;

/** The certificate a new NATS connection is served: INFO in the clear, then the upgrade, as clients do it. */
function natsPeerCert(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const tcp = rawConnect(port, "127.0.0.1");
    tcp.on("error", reject);
    tcp.once("data", () => {
      const secure = tlsConnect({ socket: tcp, ca: readFileSync(ca), checkServerIdentity: () => undefined }, () => {
        resolve(secure.getPeerCertificate().fingerprint256);
        secure.destroy();
      });
      secure.on("error", reject);
    });
  });
}

/** The protocol and cipher a new NATS connection negotiates with a Node client limited to `maxVersion`. */
function natsCipher(port: number, ca: string, maxVersion: "TLSv1.2" | "TLSv1.3"): Promise<{ protocol: string | null; cipher: string }> {
  return new Promise((resolve, reject) => {
    const tcp = rawConnect(port, "127.0.0.1");
    tcp.on("error", reject);
    tcp.once("data", () => {
      const secure = tlsConnect({ socket: tcp, ca: readFileSync(ca), maxVersion, checkServerIdentity: () => undefined }, () => {
        resolve({ protocol: secure.getProtocol(), cipher: secure.getCipher().name });
        secure.destroy();
      });
      secure.on("error", reject);
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

    test("the server picks the cipher, AES-128-GCM first as nats-server does, though Node's clients list AES-256 first", async () => {
      assert.deepEqual(await natsCipher(srv.port, pki.ca, "TLSv1.3"), { protocol: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256" });
      assert.deepEqual(await natsCipher(srv.port, pki.ca, "TLSv1.2"), { protocol: "TLSv1.2", cipher: "ECDHE-ECDSA-AES128-GCM-SHA256" });
      // Go orders configured suites itself; so does nagare.
      const listed = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, cipherSuites: ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] } });
      try {
        assert.deepEqual(await natsCipher(listed.port, pki.ca, "TLSv1.2"), { protocol: "TLSv1.2", cipher: "ECDHE-ECDSA-AES128-GCM-SHA256" });
      } finally {
        await listed.close();
      }
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
    assert.match(flags.stderr, /--tlscert needs --tlskey/);
    const conf = join(pki.dir, "tls.conf");
    writeFileSync(conf, `port: -1\ntls {\n  cert_file: "${pki.serverCert}"\n  key_file: "${join(pki.dir, "nope.key")}"\n  pinned_certs: []\n}\n`);
    const r = await runNagare(["server", "-c", conf], { until: /Server is ready/ });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `nagare server: ${conf}:4:3: tls.key_file: cannot read "${join(pki.dir, "nope.key")}": ENOENT\n` +
        `nagare server: ${conf}:5:3: tls.pinned_certs: pinned certificates are not supported yet (nagare will not start without it)\n`,
    );
  });

  test("a CA file without a certificate (a key, an empty file) stops the start, for either listener, as nats-server's 'failed to parse root ca certificate'", async () => {
    const empty = join(pki.dir, "empty-ca.pem");
    writeFileSync(empty, "");
    for (const ca of [pki.clientKey, empty]) {
      await assert.rejects(startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: ca, verify: true } }), /TLS CA certificate .*: no PEM certificate in it parses/);
      await assert.rejects(
        startServer({ port: 0, jetstream: true, storeDir: join(pki.dir, "js"), kafka: { port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: ca, verify: true } } }),
        /TLS CA certificate .*: no PEM certificate in it parses/,
      );
    }
    const conf = join(pki.dir, "bad-ca.conf");
    writeFileSync(conf, `port: -1\ntls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.clientKey}", verify: true }\n`);
    const r = await runNagare(["server", "-c", conf, "-t"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no PEM certificate in it parses/);
    // A bundle with a key before its certificate is one (Go skips the other blocks).
    const bundle = join(pki.dir, "bundle-ca.pem");
    writeFileSync(bundle, readFileSync(pki.clientKey, "utf8") + readFileSync(pki.ca, "utf8"));
    const srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: bundle, verify: true } });
    await srv.close();
  });

  test("HTTPS monitoring: /varz and /healthz over TLS with the tls certificate, beside plain HTTP; no client certificate asked", async () => {
    const srv = await startServer({ port: 0, httpPort: 0, httpsPort: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verify: true } });
    try {
      assert.notEqual(srv.httpsPort, undefined);
      assert.notEqual(srv.httpsPort, srv.httpPort);
      const varz = await httpsGet(srv.httpsPort!, "/varz", pki.ca);
      assert.equal(varz.status, 200);
      const v = JSON.parse(varz.body) as Record<string, unknown>;
      assert.equal(v.https_port, 0, "the port asked for, as http_port");
      assert.equal(v.tls_required, true);
      const health = await httpsGet(srv.httpsPort!, "/healthz", pki.ca);
      assert.equal(health.status, 200);
      assert.match(health.body, /"status":"ok"/);
      // The same endpoints stay on plain HTTP, and the HTTPS port speaks no plain HTTP.
      assert.equal((await fetch(`http://127.0.0.1:${srv.httpPort}/healthz`)).status, 200);
      await assert.rejects(fetch(`http://127.0.0.1:${srv.httpsPort}/healthz`));
      // A client that does not trust the CA is refused by its own check.
      await assert.rejects(httpsGet(srv.httpsPort!, "/varz", pki.clientCert), /self.signed|unable to verify|certificate/i);
    } finally {
      await srv.close();
    }
  });

  test("HTTPS monitoring without tls does not start: options, configuration file (file:line:column) and -ms", async () => {
    await assert.rejects(startServer({ port: 0, httpsPort: 0 }), /httpsPort needs tls/);
    const conf = join(pki.dir, "https.conf");
    writeFileSync(conf, `port: -1\nhttp_port: -1\nhttps_port: -1\n`);
    const r = await runNagare(["server", "-c", conf, "-t"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `nagare server: ${conf}:3:1: https_port: monitoring over HTTPS needs a tls block: it is served with that certificate\n`);
    const good = join(pki.dir, "https-good.conf");
    writeFileSync(good, `port: -1\nhttps: "127.0.0.1:-1"\ntls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}" }\n`);
    const ok = await runNagare(["server", "-c", good, "-t"]);
    assert.equal(ok.code, 0, ok.stderr);
    // -t loads the certificates as a start would: a key that is not the certificate's is not "valid" (an outside test).
    const mismatched = join(pki.dir, "mismatched.conf");
    writeFileSync(mismatched, `port: -1\ntls { cert_file: "${pki.serverCert}", key_file: "${pki.server2Key}" }\n`);
    const refused = await runNagare(["server", "-c", mismatched, "-t"]);
    assert.equal(refused.code, 1);
    assert.ok(refused.stderr.startsWith(`nagare server: ${mismatched}:2:1: tls: TLS certificate `), refused.stderr);
    assert.match(refused.stderr, /key values mismatch/);
    const flag = await runNagare(["server", "-p", "-1", "-ms", "-1"], { until: /Server is ready/ });
    assert.equal(flag.code, 1);
    assert.match(flag.stderr, /httpsPort needs tls/);
  });

  test("flags: -ms with --tls serves monitoring over HTTPS", async () => {
    const r = await runNagare(["server", "-p", "-1", "-ms", "-1", "--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey], { until: /Server is ready/, limitMs: 20_000 });
    assert.match(r.stderr, /Starting https monitor on 0\.0\.0\.0:\d+/);
  });

  test("reload: new connections and HTTPS monitoring get the new certificate, open connections keep going; what cannot be reloaded changes nothing", async () => {
    const certFile = join(pki.dir, "live.pem");
    const keyFile = join(pki.dir, "live.key");
    copyFileSync(pki.serverCert, certFile);
    copyFileSync(pki.serverKey, keyFile);
    const options = { port: 0, httpsPort: 0, tls: { certFile, keyFile } };
    const srv = await startServer(options);
    const open = await connectV3({ servers: srv.url, tls: { caFile: pki.ca } });
    try {
      const before = fingerprint(pki.serverCert);
      const after = fingerprint(pki.server2Cert);
      assert.equal(await natsPeerCert(srv.port, pki.ca), before);
      assert.equal((await httpsGet(srv.httpsPort!, "/healthz", pki.ca)).peerCert, before);
      const clientId = open.info!.client_id;
      const sub = open.subscribe("reload.x", { max: 1 });
      await open.flush();

      // Renewed in place: same paths, new files.
      copyFileSync(pki.server2Cert, certFile);
      copyFileSync(pki.server2Key, keyFile);
      srv.reload(options);
      assert.equal(await natsPeerCert(srv.port, pki.ca), after);
      assert.equal((await httpsGet(srv.httpsPort!, "/healthz", pki.ca)).peerCert, after);
      open.publish("reload.x", enc("still here"));
      for await (const m of sub) assert.equal(dec(m.data), "still here");
      assert.equal(open.info!.client_id, clientId, "the open connection was not dropped");

      // A key that does not load, or an option a running server cannot change: refused, and the certificate stays.
      writeFileSync(keyFile, "not a key");
      assert.throws(() => srv.reload(options), /TLS certificate .*live\.pem and key .*live\.key/);
      copyFileSync(pki.server2Key, keyFile);
      assert.throws(() => srv.reload({ ...options, tls: { certFile: pki.serverCert, keyFile: pki.serverKey }, maxPayload: 1000 }), /config reload not supported for maxPayload/);
      assert.throws(() => srv.reload({ ...options, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, verify: true } }), /config reload not supported for tls\.verify/);
      assert.equal(await natsPeerCert(srv.port, pki.ca), after);
    } finally {
      await open.close();
      await srv.close();
    }
  });

  test("SIGHUP (nagare server --signal reload=<pid>) reloads the certificate files of the configuration; other changes are refused and logged", async () => {
    const certFile = join(pki.dir, "hup.pem");
    const keyFile = join(pki.dir, "hup.key");
    copyFileSync(pki.serverCert, certFile);
    copyFileSync(pki.serverKey, keyFile);
    const conf = join(pki.dir, "hup.conf");
    const text = `listen: "127.0.0.1:-1"\ntls { cert_file: "${certFile}", key_file: "${keyFile}" }\n`;
    writeFileSync(conf, text);
    const child = spawn(process.execPath, [MAIN, "server", "-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    const waiters: Array<() => void> = [];
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      for (const w of waiters.splice(0)) w();
    });
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
    const waitFor = async (re: RegExp): Promise<RegExpExecArray> => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const m = re.exec(stderr);
        if (m) return m;
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no ${re} in: ${stderr}`);
        await Promise.race([new Promise<void>((r) => waiters.push(r)), exited, new Promise((r) => setTimeout(r, 500).unref())]);
      }
    };
    try {
      const port = Number((await waitFor(/Listening for client connections on 127\.0\.0\.1:(\d+)/))[1]);
      await waitFor(/Server is ready/);
      assert.equal(await natsPeerCert(port, pki.ca), fingerprint(pki.serverCert));
      copyFileSync(pki.server2Cert, certFile);
      copyFileSync(pki.server2Key, keyFile);
      const sig = await runNagare(["server", "--signal", `reload=${child.pid}`]);
      assert.equal(sig.code, 0, sig.stderr);
      await waitFor(/Reloaded server configuration/);
      assert.equal(await natsPeerCert(port, pki.ca), fingerprint(pki.server2Cert));
      writeFileSync(conf, `${text}max_payload: 1000\n`);
      child.kill("SIGHUP");
      // Logged as an error, once (the log is stderr here).
      await waitFor(/\[ERR\] Failed to reload the configuration, the running one is kept: config reload not supported for maxPayload/);
      assert.equal(await natsPeerCert(port, pki.ca), fingerprint(pki.server2Cert));
      assert.equal(stderr.match(/config reload not supported/g)?.length, 1);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });

  test("flags: --tls with --tlscert and --tlskey serve TLS", async () => {
    const r = runNagare(["server", "-p", "-1", "--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey], { until: /Server is ready/, limitMs: 20_000 });
    const done = await r;
    assert.match(done.stderr, /Server is ready/);
  });
});

test("garbage instead of a TLS handshake closes that connection, and TLS clients go on", async () => {
  const pki = makePki();
  const srv = await startServer({ port: 0, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
  try {
    const nc = await connectV3({ servers: srv.url, tls: { caFile: pki.ca } });
    try {
      for (const garbage of [Buffer.alloc(4096, 0xff), Buffer.from("CONNECT {}\r\n".repeat(200)), Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01])]) {
        const s = rawConnect(srv.port, "127.0.0.1");
        s.on("error", () => {});
        await new Promise<void>((resolve) => {
          s.once("data", () => s.write(garbage));
          s.once("close", () => resolve());
        });
      }
      await nc.flush();
      assert.equal(srv.broker.connections.size, 1);
    } finally {
      await nc.close();
    }
  } finally {
    await srv.close();
    rmSync(pki.dir, { recursive: true, force: true });
  }
});
